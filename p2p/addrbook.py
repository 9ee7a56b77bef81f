"""The address book: peers we have heard of and may dial, persisted as JSON.

Each entry is an `id@host:port` address with where we heard it, how many dials in a row have
failed and whether we were ever connected. Entries that keep failing without ever having worked
are forgotten; a failed address is retried only after a back-off that doubles per failure.
The file is replaced atomically (`primitives.files.atomic_write`); a missing file is an empty
book and unreadable entries are skipped with a warning. Times are trio's clock and are not
persisted.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from p2p.address import NetAddress
from primitives.files import atomic_write

log = logging.getLogger("derivd.p2p")

MAX_BOOK_SIZE = 1000
MAX_FAILED_ATTEMPTS = 10
FILE_VERSION = 1


@dataclass(slots=True)
class KnownAddress:
    address: NetAddress
    source: str
    """node id of the peer that told us, or "seed", "peer" (learned from a connection)"""
    attempts: int = 0
    """dials in a row that failed"""
    ever_connected: bool = False
    last_attempt: float | None = None
    """trio time of the last dial (not persisted)"""

    def retry_after(self, base: float, cap: float) -> float:
        """Earliest trio time at which to dial again."""
        if self.last_attempt is None or self.attempts == 0:
            return float("-inf") if self.last_attempt is None else self.last_attempt + base
        return self.last_attempt + min(cap, base * 2.0 ** min(self.attempts, 20))


class AddressBook:
    """Known peer addresses by node id."""

    def __init__(
        self,
        path: Path | None,
        own_id: str,
        *,
        private_ids: Iterable[str] = (),
        max_size: int = MAX_BOOK_SIZE,
    ) -> None:
        self.path = path
        self.own_id = own_id
        self.private_ids = frozenset(private_ids)
        self.max_size = max_size
        self._entries: dict[str, KnownAddress] = {}
        self.dirty = False

    # -- persistence -----------------------------------------------------------------------------

    @classmethod
    def load(
        cls, path: Path | None, own_id: str, *, private_ids: Iterable[str] = (), max_size: int = MAX_BOOK_SIZE
    ) -> AddressBook:
        """The book saved at `path` (empty if there is none; None keeps it in memory only)."""
        book = cls(path, own_id, private_ids=private_ids, max_size=max_size)
        if path is None or not path.exists():
            return book
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            entries = document["addresses"]
            if not isinstance(entries, list):
                raise TypeError("addresses is not a list")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("address book %s is unreadable, starting empty: %s", path, exc)
            return book
        for entry in entries:
            try:
                known = KnownAddress(
                    address=NetAddress.parse(entry["address"]),
                    source=str(entry.get("source", "")),
                    attempts=int(entry.get("attempts", 0)),
                    ever_connected=bool(entry.get("ever_connected", False)),
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                log.warning("address book %s: skipping entry %r: %s", path, entry, exc)
                continue
            if book._acceptable(known.address) and len(book._entries) < max_size:
                book._entries[known.address.node_id] = known
        return book

    def to_json(self) -> bytes:
        """The book's file content (entries sorted by node id)."""
        document = {
            "version": FILE_VERSION,
            "node_id": self.own_id,
            "addresses": [
                {
                    "address": str(known.address),
                    "source": known.source,
                    "attempts": known.attempts,
                    "ever_connected": known.ever_connected,
                }
                for _, known in sorted(self._entries.items())
            ],
        }
        return (json.dumps(document, indent=2) + "\n").encode("utf-8")

    def save(self) -> None:
        """Write the book to its file now (blocking; the PEX reactor calls it in a thread)."""
        self.write(self.to_json())

    def write(self, data: bytes) -> None:
        if self.path is not None:
            atomic_write(self.path, data)
        self.dirty = False

    # -- contents --------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._entries

    def get(self, node_id: str) -> KnownAddress | None:
        return self._entries.get(node_id)

    def addresses(self) -> list[NetAddress]:
        return [known.address for _, known in sorted(self._entries.items())]

    def _acceptable(self, address: NetAddress) -> bool:
        return address.node_id != self.own_id and address.node_id not in self.private_ids

    def add(self, address: NetAddress, source: str) -> bool:
        """Remember `address` (a new one, or a new host/port for a known id). False if it is ours,
        private, already known as is, or the book is full."""
        if not self._acceptable(address):
            return False
        known = self._entries.get(address.node_id)
        if known is not None:
            if known.address == address:
                return False
            known.address = address
            known.attempts = 0
            self.dirty = True
            return True
        if len(self._entries) >= self.max_size:
            return False
        self._entries[address.node_id] = KnownAddress(address, source)
        self.dirty = True
        return True

    def remove(self, node_id: str) -> None:
        if self._entries.pop(node_id, None) is not None:
            self.dirty = True

    def mark_attempt(self, node_id: str, now: float) -> None:
        known = self._entries.get(node_id)
        if known is not None:
            known.last_attempt = now

    def mark_good(self, address: NetAddress) -> None:
        """We are connected to `address`'s node: remember it as working."""
        known = self._entries.get(address.node_id)
        if known is None:
            if not self.add(address, "peer"):
                return
            known = self._entries[address.node_id]
        if known.attempts or not known.ever_connected:
            known.attempts = 0
            known.ever_connected = True
            self.dirty = True

    def mark_failed(self, node_id: str) -> None:
        """A dial failed; forget an address that fails too often without ever having worked."""
        known = self._entries.get(node_id)
        if known is None:
            return
        known.attempts += 1
        self.dirty = True
        if known.attempts >= MAX_FAILED_ATTEMPTS and not known.ever_connected:
            del self._entries[node_id]

    # -- choosing --------------------------------------------------------------------------------

    def pick_to_dial(
        self,
        rng: random.Random,
        now: float,
        *,
        exclude: Callable[[str], bool],
        retry_base: float,
        retry_cap: float,
    ) -> NetAddress | None:
        """A random address worth dialing now (not excluded, not in back-off), favouring ones
        that worked and failed less."""
        candidates = [
            known
            for _, known in sorted(self._entries.items())
            if not exclude(known.address.node_id) and known.retry_after(retry_base, retry_cap) <= now
        ]
        if not candidates:
            return None
        weights = [(2.0 if k.ever_connected else 1.0) / (1 + k.attempts) for k in candidates]
        return rng.choices(candidates, weights)[0].address

    def sample(self, count: int, rng: random.Random, *, exclude: Callable[[str], bool]) -> list[NetAddress]:
        """Up to `count` random addresses to hand to a peer."""
        candidates = [k.address for _, k in sorted(self._entries.items()) if not exclude(k.address.node_id)]
        return rng.sample(candidates, min(count, len(candidates)))
