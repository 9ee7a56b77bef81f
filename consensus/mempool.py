"""The mempool: transactions admitted by the application's check_tx, waiting for a block.

In CometBFT's manner: a cache of recently seen transaction hashes (LRU) turns away duplicates
before the application sees them; size limits bound the count, the total bytes and each
transaction's bytes; admitted transactions keep their arrival order; after each commit the
included ones are removed and the rest rechecked against the new state (those that fail go).
Several txs that arrive together (an RPC batch, a gossip message) first get the application's
shared admission work (`Application.admission_work`: one signature batch), then are checked one
by one (`admission_work`, `check_txs`). Once a height, when it first holds transactions for the
next block (one is admitted, or some are left after a commit), it calls `on_txs_available` with
that block's height (CometBFT's TxsAvailable; consensus waits for it when empty blocks are off).
`broadcast` in its config says whether the gossip reactor sends admitted transactions to peers.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from consensus.app import CheckTxKind, CheckTxResult
from primitives.hashing import sha256

log = logging.getLogger("derivd.mempool")

CheckTx = Callable[[bytes, CheckTxKind], CheckTxResult]
AdmissionWork = Callable[[Sequence[bytes]], Callable[[], object]]


class MempoolError(ValueError):
    """A transaction the mempool turns away before or instead of the application."""


class TxInCache(MempoolError):
    def __init__(self) -> None:
        super().__init__("tx already exists in cache")


class TxTooLarge(MempoolError):
    pass


class MempoolFull(MempoolError):
    pass


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    size: int = 5000
    max_txs_bytes: int = 1_073_741_824
    max_tx_bytes: int = 1_048_576
    cache_size: int = 10_000
    keep_invalid_txs_in_cache: bool = False
    recheck: bool = True
    broadcast: bool = True
    """gossip admitted transactions to peers (`consensus.mempool_reactor`)"""


@dataclass(slots=True)
class MempoolStats:
    failed_txs: int = 0
    rejected_txs: int = 0
    evicted_txs: int = 0
    recheck_times: int = 0
    added_txs: int = 0


class _LRUCache:
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, None] = OrderedDict()

    def push(self, key: bytes) -> bool:
        """Add `key`; False if it was already there (it becomes the most recent)."""
        if key in self._items:
            self._items.move_to_end(key)
            return False
        self._items[key] = None
        if len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True

    def remove(self, key: bytes) -> None:
        self._items.pop(key, None)

    def __contains__(self, key: bytes) -> bool:
        return key in self._items


class Mempool:
    """Ordered pending transactions keyed by SHA-256."""

    def __init__(
        self, config: MempoolConfig, check_tx: CheckTx, admission_work: AdmissionWork | None = None
    ) -> None:
        self.config = config
        self._check_tx = check_tx
        self._admission_work = admission_work
        self._txs: OrderedDict[bytes, bytes] = OrderedDict()
        self._cache = _LRUCache(config.cache_size)
        self.size_bytes = 0
        self.stats = MempoolStats()
        self.height = 0
        """the last block height `update` was called for (set it at start)"""
        self.listeners: list[Callable[[bytes, bytes, str], None]] = []
        """called with (tx, hash, source peer id or "") for each admitted transaction"""
        self.on_txs_available: Callable[[int], None] | None = None
        """called with the next block's height, once a height, when the pool first holds txs"""
        self._notified = False

    def __len__(self) -> int:
        return len(self._txs)

    def __contains__(self, tx_hash: bytes) -> bool:
        return tx_hash in self._txs

    def get(self, tx_hash: bytes) -> bytes | None:
        """The pending transaction whose sha256 is `tx_hash`, if there is one."""
        return self._txs.get(tx_hash)

    def check_tx(self, tx: bytes, source: str = "") -> CheckTxResult:
        """Admit `tx` if the application accepts it; MempoolError if it never reaches it.
        `source` is the peer it came from ("" for a local client)."""
        if len(tx) > self.config.max_tx_bytes:
            self.stats.rejected_txs += 1
            raise TxTooLarge(f"tx too large: {len(tx)} bytes, max {self.config.max_tx_bytes}")
        if len(self._txs) >= self.config.size or self.size_bytes + len(tx) > self.config.max_txs_bytes:
            self.stats.rejected_txs += 1
            raise MempoolFull(
                f"mempool is full: number of txs {len(self._txs)} (max: {self.config.size}), "
                f"total txs bytes {self.size_bytes} (max: {self.config.max_txs_bytes})"
            )
        key = sha256(tx)
        if key in self._txs:  # pending, though the cache may have forgotten it
            self._cache.push(key)
            raise TxInCache()
        if not self._cache.push(key):
            raise TxInCache()
        result = self._check_tx(tx, CheckTxKind.NEW)
        if result.ok:
            self._txs[key] = tx
            self.size_bytes += len(tx)
            self.stats.added_txs += 1
            for listener in self.listeners:
                listener(tx, key, source)
            self._notify_txs_available()
        else:
            self.stats.failed_txs += 1
            if not self.config.keep_invalid_txs_in_cache:
                self._cache.remove(key)
        return result

    def admission_work(self, txs: Sequence[bytes]) -> Callable[[], object] | None:
        """The application's shared admission work for those of `txs` the mempool would pass on
        to check_tx (not too large, not seen); it may run on another thread. None if there is
        none (no such txs, or no `admission_work` given)."""
        if self._admission_work is None:
            return None
        limit, pending, cache = self.config.max_tx_bytes, self._txs, self._cache
        fresh = [
            tx for tx in txs if len(tx) <= limit and (key := sha256(tx)) not in pending and key not in cache
        ]
        return self._admission_work(fresh) if len(fresh) > 1 else None

    def check_txs(self, txs: Sequence[bytes], source: str = "") -> list[CheckTxResult | MempoolError]:
        """`check_tx` of each of `txs` in order (an error in place of a result), after their
        shared admission work, run here."""
        work = self.admission_work(txs)
        if work is not None:
            work()
        results: list[CheckTxResult | MempoolError] = []
        for tx in txs:
            try:
                results.append(self.check_tx(tx, source))
            except MempoolError as exc:
                results.append(exc)
        return results

    def reap(self, max_bytes: int, max_count: int = -1) -> list[bytes]:
        """Transactions in arrival order, up to `max_bytes` in total (and `max_count`)."""
        out: list[bytes] = []
        total = 0
        for tx in self._txs.values():
            if 0 <= max_count <= len(out):
                break
            if total + len(tx) > max_bytes:
                break
            out.append(tx)
            total += len(tx)
        return out

    def update(self, height: int, committed: Sequence[bytes]) -> None:
        """After a commit: drop the block's transactions, remember them, recheck the rest."""
        self.height = height
        self._notified = False
        for tx in committed:
            key = sha256(tx)
            self._cache.push(key)
            dropped = self._txs.pop(key, None)
            if dropped is not None:
                self.size_bytes -= len(dropped)
        if self.config.recheck and self._txs:
            self.stats.recheck_times += 1
            evicted: list[tuple[bytes, str]] = []
            for key, tx in list(self._txs.items()):
                result = self._check_tx(tx, CheckTxKind.RECHECK)
                if not result.ok:
                    del self._txs[key]
                    self.size_bytes -= len(tx)
                    self.stats.evicted_txs += 1
                    evicted.append((key, result.log))
                    if not self.config.keep_invalid_txs_in_cache:
                        self._cache.remove(key)
            if evicted:
                first, why = evicted[0]
                log.info(
                    "recheck after height %d evicted %d txs (first %s: %s)",
                    height,
                    len(evicted),
                    first.hex().upper(),
                    why,
                )
        if self._txs:
            self._notify_txs_available()

    def _notify_txs_available(self) -> None:
        if self.on_txs_available is not None and not self._notified:
            self._notified = True
            self.on_txs_available(self.height + 1)

    def pending(self) -> list[tuple[bytes, bytes]]:
        """(hash, tx) of every pending transaction, in order."""
        return list(self._txs.items())

    def txs(self, limit: int = -1) -> list[bytes]:
        """Pending transactions in order (all, or the first `limit`)."""
        values = list(self._txs.values())
        return values if limit < 0 else values[:limit]

    def flush(self) -> None:
        self._txs.clear()
        self.size_bytes = 0
