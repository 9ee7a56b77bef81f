"""The state view: every read and write of application state goes through one.

A `StateView` sits on a parent (another view, or the `CommittedState` adapter over LevelDB),
buffers its own puts and deletes, and records which keys it read from its parent (`read_set`),
which it wrote (`write_set`) and which prefixes it scanned (`prefix_reads`): the parallel scheduler
(`execution.scheduler`) finds conflicts with them. `iterate(prefix, start=None)` lists a key range
through the parents with this view's writes applied, sorted by key, from `start` if given (the
whole prefix counts as read). A `CountingView` also counts the operations run on it: a
deterministic measure of work that a block may budget. `changes()` lists the buffered writes
sorted by key (the one deterministic order), and `apply_to` merges them into another view. Views
stack: a block view over committed state, a tx view over the block view, an action view over the
tx view; dropping a view rolls its writes back.

`CommittedState` reads LevelDB plus the changes of the last commit, which the node writes in its
atomic batch after `commit` returns (the node writes that batch before the next block starts).
Values are canonical bytes (`primitives.codec`); a deleted or absent key reads as None.

Decoded records (the hot path). Besides bytes, a view reads and writes decoded records (a
`Record`: a frozen value with `encode() -> bytes`, such as a position or an account):
`get_record(key, decode)` is `get` followed by `decode`, and `put_record(key, record)` is
`put(key, record.encode())`, with the same read and write sets, but neither repeats work: a
record put is kept as the object and encoded only when its bytes are needed (`get`, `iterate`,
`changes`), once, however many times it was overwritten before; and the bytes a view or the
committed state holds are decoded once (the decoded record is kept beside them). Each key is
always read with the one decoder of its record type, and a record put must be one its decoder
accepts (the writers build them through the record's own checked constructors).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Protocol, TypeVar, cast

Change = tuple[bytes, bytes | None]
"""(key, new value), None for a delete"""


class Record(Protocol):
    """A decoded state value that knows its canonical bytes."""

    def encode(self) -> bytes: ...


R = TypeVar("R", bound=Record)

_ABSENT = object()
_FAMILY = 4
"""Length of the key prefix `StateView` groups its writes by (`a:ov` holds the oracle votes...)."""


class StateReader(Protocol):
    """Anything a view can read through."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix` (and is >= `start`, if given), sorted
        by key (deleted keys omitted)."""
        ...


def read_record(state: StateReader, key: bytes, decode: Callable[[bytes], R]) -> R | None:
    """The record at `key` decoded with `decode` (None if absent), through the decoded-record
    cache of `state` when it has one (`StateView`, `CommittedState`)."""
    if isinstance(state, (StateView, CommittedState)):
        return state.get_record(key, decode)
    raw = state.get(key)
    return None if raw is None else decode(raw)


def _overlay(
    base: list[tuple[bytes, bytes]], writes: dict[bytes, bytes | None], prefix: bytes
) -> list[tuple[bytes, bytes]]:
    """`base` (pairs under `prefix`) with `writes` (already only those under `prefix`) applied,
    sorted by key."""
    if not writes:
        return base
    merged = dict(base)
    for key, value in writes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return sorted(merged.items(), key=lambda item: item[0])


def _add_to_family(families: dict[bytes, set[bytes]], key: bytes) -> None:
    family = families.get(key[:_FAMILY])
    if family is None:
        families[key[:_FAMILY]] = {key}
    else:
        family.add(key)


class StateView:
    """Buffered writes over a parent, with the read and write sets of what ran on it."""

    __slots__ = ("_cached_parent", "_decoded", "_families", "_parent", "_prefix_reads", "_reads", "_writes")

    def __init__(self, parent: StateReader) -> None:
        self._parent = parent
        # the parent again when it has a decoded-record cache of its own, else None
        self._cached_parent = parent if isinstance(parent, (StateView, CommittedState)) else None
        # key -> bytes, None (deleted) or a Record put and not yet encoded
        self._writes: dict[bytes, bytes | Record | None] = {}
        # key -> the record that this view's written bytes decode to (see the module docstring)
        self._decoded: dict[bytes, Record] = {}
        self._reads: set[bytes] = set()
        self._prefix_reads: set[bytes] = set()
        # the written keys by their first `_FAMILY` bytes, so that `iterate` does not test every
        # key written here (a block view holds tens of thousands); unordered, sorted on use.
        # Built by the first `iterate` and kept from then on: most views never iterate.
        self._families: dict[bytes, set[bytes]] | None = None

    def _family_index(self) -> dict[bytes, set[bytes]]:
        families = self._families
        if families is None:
            families = self._families = {}
            for key in self._writes:
                _add_to_family(families, key)
        return families

    def get(self, key: bytes) -> bytes | None:
        """The value of `key` as this view sees it; reads that reach the parent are recorded."""
        value = self._writes.get(key, _ABSENT)
        if value is _ABSENT:
            self._reads.add(key)
            return self._parent.get(key)
        if value is None or type(value) is bytes:
            return value
        return self._encode(key, cast(Record, value))

    def get_record(self, key: bytes, decode: Callable[[bytes], R]) -> R | None:
        """`decode(get(key))` (None if absent), recording the same read, without decoding bytes
        twice or encoding a record put here."""
        value = self._writes.get(key, _ABSENT)
        if value is _ABSENT:
            self._reads.add(key)
            parent = self._cached_parent
            if parent is not None:
                return parent.get_record(key, decode)
            raw = self._parent.get(key)
            return None if raw is None else decode(raw)
        if value is None:
            return None
        if type(value) is bytes:
            record = self._decoded.get(key)
            if record is None:
                record = self._decoded[key] = decode(value)
            return cast(R, record)
        return cast(R, value)

    def _encode(self, key: bytes, record: Record) -> bytes:
        """Replace the record put at `key` with its bytes (keeping it decoded) and return them."""
        raw = record.encode()
        self._writes[key] = raw
        self._decoded[key] = record
        return raw

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) under `prefix` (and >= `start`, if given) as this view sees it,
        sorted by key. The prefix is recorded in `prefix_reads` (the whole prefix, whatever
        `start`) and the keys that came from the parent in `read_set`."""
        self._prefix_reads.add(prefix)
        from_parent = self._parent.iterate(prefix, start=start)
        writes = self._writes
        self._reads.update(key for key, _ in from_parent if key not in writes)
        candidates = self._family_index().get(prefix[:_FAMILY], ()) if len(prefix) >= _FAMILY else writes
        low = prefix if start is None else start
        mine = {
            key: self.get(key) for key in [key for key in candidates if key.startswith(prefix) and key >= low]
        }
        return _overlay(from_parent, mine, prefix)

    def note_prefix_read(self, prefix: bytes) -> None:
        """Record that what ran here depends on every key under `prefix` without listing them (a
        read of a cache of those keys, such as an order book), here and in the parent views."""
        self._prefix_reads.add(prefix)
        if isinstance(self._parent, StateView):
            self._parent.note_prefix_read(prefix)

    def discard_prefix(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Take this view's writes under `prefix` out of it, as if they had never been made, and
        return the puts among them sorted by key (for keys that only live within a block)."""
        taken = sorted(key for key in self._writes if key.startswith(prefix))
        out: list[tuple[bytes, bytes]] = []
        for key in taken:
            value = self._writes.pop(key)
            self._decoded.pop(key, None)
            if self._families is not None:
                self._families[key[:_FAMILY]].discard(key)
            if value is not None:
                out.append((key, value if type(value) is bytes else cast(Record, value).encode()))
        return out

    def put(self, key: bytes, value: bytes) -> None:
        self._writes[key] = value
        self._decoded.pop(key, None)
        if self._families is not None:
            _add_to_family(self._families, key)

    def put_record(self, key: bytes, record: Record) -> None:
        """`put(key, record.encode())`, the encoding deferred until the bytes are needed."""
        self._writes[key] = record
        self._decoded.pop(key, None)
        if self._families is not None:
            _add_to_family(self._families, key)

    def delete(self, key: bytes) -> None:
        self._writes[key] = None
        self._decoded.pop(key, None)
        if self._families is not None:
            _add_to_family(self._families, key)

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
        """This view's writes, sorted by key (records put are encoded now, once)."""
        writes = self._writes
        out: list[Change] = []
        for key in sorted(writes):
            value = writes[key]
            if value is not None and type(value) is not bytes:  # a record put: `get` encodes it
                value = self._encode(key, cast(Record, value))
            out.append((key, value))
        return out

    def apply_to(self, target: StateView) -> None:
        """Write this view's changes into `target` (normally its parent), as `put` and `delete`
        of each would; records not yet encoded travel as records."""
        decoded = target._decoded
        if decoded:
            for key in self._writes:
                decoded.pop(key, None)
        target._writes.update(self._writes)
        families = target._families
        if families is not None:
            for key in self._writes:
                _add_to_family(families, key)
        decoded.update(self._decoded)


class CountingView(StateView):
    """A view that counts the state operations run on it (`ops`): each get, put or delete is one,
    a scan one plus one per key it lists. Deterministic: the same code on the same state counts
    the same, so a block may budget its work in these units (the liquidation pass does). It also
    keeps the keys written, in order (`written`), for caches of what was read through it."""

    __slots__ = ("ops", "written")

    def __init__(self, parent: StateReader) -> None:
        super().__init__(parent)
        self.ops = 0
        self.written: list[bytes] = []
        """every key put or deleted here, in the order of the writes (repeats included)"""

    def get(self, key: bytes) -> bytes | None:
        self.ops += 1
        return super().get(key)

    def get_record(self, key: bytes, decode: Callable[[bytes], R]) -> R | None:
        self.ops += 1
        return super().get_record(key, decode)

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        found = super().iterate(prefix, start=start)
        self.ops += 1 + len(found)
        return found

    def put(self, key: bytes, value: bytes) -> None:
        self.ops += 1
        self.written.append(key)
        super().put(key, value)

    def put_record(self, key: bytes, record: Record) -> None:
        self.ops += 1
        self.written.append(key)
        super().put_record(key, record)

    def delete(self, key: bytes) -> None:
        self.ops += 1
        self.written.append(key)
        super().delete(key)


def reads_any(view: StateView, keys: Collection[bytes]) -> bool:
    """Whether what ran on `view` read any of `keys` from its parent: a key of its read set, or a
    key under a prefix it scanned or noted. A tx that did must run after the tx that wrote them."""
    reads = view._reads
    if not reads.isdisjoint(keys):
        return True
    prefixes = view._prefix_reads
    return any(key.startswith(prefix) for prefix in prefixes for key in keys)


class Store(Protocol):
    """What committed state reads: LevelDB (`storage.db.Database`), or a worker's in-memory
    replica (`execution.workers`)."""

    def get(self, key: bytes) -> bytes | None: ...

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) whose key starts with `prefix` (and is >= `start`, if given), in
        ascending key order."""
        ...


DECODED_LIMIT = 1 << 17
"""The decoded records a `CommittedState` keeps before it starts afresh (a bound on memory)."""


class CommittedState:
    """Committed application state: LevelDB plus the last commit's changes (until the node has
    written them, they exist only here). Decoded records are kept across commits, each dropped when
    a commit changes its key (`forget`); a pure cache: records are immutable and a key's record is
    always the decoding of its current bytes."""

    __slots__ = ("_db", "_decoded", "_unwritten", "_unwritten_keys")

    def __init__(self, db: Store) -> None:
        self._db = db
        self._unwritten: dict[bytes, bytes | None] = {}
        self._unwritten_keys: list[bytes] = []  # the keys of `_unwritten`, sorted
        self._decoded: dict[bytes, Record | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._unwritten:
            return self._unwritten[key]
        return self._db.get(key)

    def get_record(self, key: bytes, decode: Callable[[bytes], R]) -> R | None:
        """`decode(get(key))` (None if absent), each key decoded once per commit."""
        record = self._decoded.get(key, _ABSENT)
        if record is _ABSENT:
            raw = self.get(key)
            record = self._decoded[key] = None if raw is None else decode(raw)
        return cast("R | None", record)  # a string: `R | None` would build a Union on every call

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) under `prefix` (and >= `start`, if given), sorted by key."""
        # the unwritten keys under `prefix` are one run of the sorted keys: found by bisection,
        # not by testing every key of the last commit
        if start is None:
            return _overlay(list(self._db.iterate(prefix)), self.last_changes_under(prefix), prefix)
        changes = {key: value for key, value in self.last_changes_under(prefix).items() if key >= start}
        return _overlay(list(self._db.iterate(prefix, start=start)), changes, prefix)

    def last_changes(self) -> Mapping[bytes, bytes | None]:
        """The last commit's changes (key -> new value, None: deleted), read-only."""
        return MappingProxyType(self._unwritten)

    def last_changes_under(self, prefix: bytes) -> dict[bytes, bytes | None]:
        """The last commit's changes of keys under `prefix`, in key order."""
        keys = self._unwritten_keys
        start = bisect_left(keys, prefix)
        end = start
        while end < len(keys) and keys[end].startswith(prefix):
            end += 1
        return {key: self._unwritten[key] for key in keys[start:end]}

    def advance(self, changes: Sequence[Change]) -> None:
        """Make `changes` (one commit's) the committed state; the previous commit's batch is on disk."""
        self._unwritten = dict(changes)
        self._unwritten_keys = sorted(self._unwritten)
        self.forget(self._unwritten)

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop the decoded records of `keys`, whose values have changed in the store (all of them
        once `DECODED_LIMIT` are kept)."""
        decoded = self._decoded
        if len(decoded) > DECODED_LIMIT:
            decoded.clear()
            return
        for key in keys:
            decoded.pop(key, None)
