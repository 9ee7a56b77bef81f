"""The state view: every read and write of application state goes through one.

A `StateView` sits on a parent (another view, or the `CommittedState` adapter over LevelDB),
buffers its own puts and deletes, and records which keys it read from its parent (`read_set`),
which it wrote (`write_set`) and which prefixes it scanned (`prefix_reads`): the parallel scheduler
of a later issue finds conflicts with them. `iterate(prefix)` lists a key range through the
parents with this view's writes applied, sorted by key. `changes()` lists the buffered writes
sorted by key (the one deterministic order), and `apply_to` merges them into another view. Views
stack: a block view over committed state, a tx view over the block view, an action view over the
tx view; dropping a view rolls its writes back.

`CommittedState` reads LevelDB plus the changes of the last commit, which the node writes in its
atomic batch after `commit` returns (the node writes that batch before the next block starts).
Values are canonical bytes (`primitives.codec`); a deleted or absent key reads as None.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from storage.db import Database

Change = tuple[bytes, bytes | None]
"""(key, new value), None for a delete"""


class StateReader(Protocol):
    """Anything a view can read through."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix`, sorted by key (deleted keys omitted)."""
        ...


def _overlay(
    base: list[tuple[bytes, bytes]], writes: dict[bytes, bytes | None], prefix: bytes
) -> list[tuple[bytes, bytes]]:
    """`base` (pairs under `prefix`) with the writes under `prefix` applied, sorted by key."""
    merged = dict(base)
    for key, value in writes.items():
        if not key.startswith(prefix):
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return sorted(merged.items(), key=lambda item: item[0])


class StateView:
    """Buffered writes over a parent, with the read and write sets of what ran on it."""

    __slots__ = ("_parent", "_prefix_reads", "_reads", "_writes")

    def __init__(self, parent: StateReader) -> None:
        self._parent = parent
        self._writes: dict[bytes, bytes | None] = {}
        self._reads: set[bytes] = set()
        self._prefix_reads: set[bytes] = set()

    def get(self, key: bytes) -> bytes | None:
        """The value of `key` as this view sees it; reads that reach the parent are recorded."""
        if key in self._writes:
            return self._writes[key]
        self._reads.add(key)
        return self._parent.get(key)

    def iterate(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) under `prefix` as this view sees it, sorted by key. The prefix is
        recorded in `prefix_reads` and the keys that came from the parent in `read_set`."""
        self._prefix_reads.add(prefix)
        from_parent = self._parent.iterate(prefix)
        self._reads.update(key for key, _ in from_parent if key not in self._writes)
        return _overlay(from_parent, self._writes, prefix)

    def put(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value

    def delete(self, key: bytes) -> None:
        self._writes[key] = None

    @property
    def read_set(self) -> frozenset[bytes]:
        """Keys read from the parent (reads of this view's own writes are not included)."""
        return frozenset(self._reads)

    @property
    def prefix_reads(self) -> frozenset[bytes]:
        """Prefixes scanned with `iterate` (a key written under one later is a conflict)."""
        return frozenset(self._prefix_reads)

    @property
    def write_set(self) -> frozenset[bytes]:
        """Keys put or deleted in this view."""
        return frozenset(self._writes)

    def changes(self) -> list[Change]:
        """This view's writes, sorted by key."""
        return sorted(self._writes.items(), key=lambda item: item[0])

    def apply_to(self, target: StateView) -> None:
        """Write this view's changes into `target` (normally its parent), in key order."""
        for key, value in self.changes():
            if value is None:
                target.delete(key)
            else:
                target.put(key, value)


class CommittedState:
    """Committed application state: LevelDB plus the last commit's changes (until the node has
    written them, they exist only here)."""

    __slots__ = ("_db", "_unwritten")

    def __init__(self, db: Database) -> None:
        self._db = db
        self._unwritten: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._unwritten:
            return self._unwritten[key]
        return self._db.get(key)

    def iterate(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) under `prefix`, sorted by key."""
        return _overlay(list(self._db.iterate(prefix)), self._unwritten, prefix)

    def advance(self, changes: Sequence[Change]) -> None:
        """Make `changes` (one commit's) the committed state; the previous commit's batch is on disk."""
        self._unwritten = dict(changes)
