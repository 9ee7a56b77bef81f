"""The LevelDB handle (plyvel) and atomic write batches.

Everything a height changes goes into one `WriteBatch` that `Database.write` applies with
`sync=True`: after any crash the database holds either all of it or none of it. A write that
LevelDB refuses (a full disk, an I/O error) raises `StorageWriteError`, and so does every write
after it: the node stops there (LevelDB itself refuses writes after such an error), and the
database holds the last batch that landed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel

from primitives.files import NO_SPACE, remedy
from storage import schema


class StorageError(RuntimeError):
    """The database cannot be opened or used; the message says why and where."""


class StorageWriteError(StorageError):
    """A batch was not written (LevelDB's error: a full disk, an I/O error); the message names
    the database, the error and what to do."""


def _reason(error: plyvel.Error) -> str:
    """LevelDB's message (plyvel gives it as bytes)."""
    raw = error.args[0] if error.args else b""
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


class WriteBatch:
    """Puts and deletes collected in order, applied atomically by `Database.write`."""

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[tuple[bytes, bytes | None]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self._ops.append((key, value))

    def delete(self, key: bytes) -> None:
        self._ops.append((key, None))

    def __len__(self) -> int:
        return len(self._ops)

    @property
    def ops(self) -> list[tuple[bytes, bytes | None]]:
        return self._ops


class Database:
    """One LevelDB directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        try:
            self._db = plyvel.DB(str(path), create_if_missing=True, paranoid_checks=True)
        except plyvel.IOError as exc:
            advice = "free space and restart" if NO_SPACE in _reason(exc) else "is another derivd running?"
            raise StorageError(f"cannot open the database at {path}: {_reason(exc)} ({advice})") from exc
        except plyvel.CorruptionError as exc:
            raise StorageError(f"the database at {path} is corrupt: {_reason(exc)}") from exc
        self._failure: str | None = None

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._db.get(key)
        return value

    def iterate(
        self, prefix: bytes, *, start: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs whose key starts with `prefix` and is >= `start` (if given), in
        ascending order, or descending with `reverse` (from the last such key down)."""
        lower = prefix if start is None else max(start, prefix)
        upper = _prefix_end(prefix)
        if not reverse:
            with self._db.iterator(start=lower, stop=upper) as it:
                yield from it
            return
        # plyvel 1.5.1's reverse iterator skips a key equal to its `start` bound, so bound the
        # reverse scan from above only and stop by hand.
        with self._db.iterator(stop=upper, reverse=True) as it:
            for key, value in it:
                if key < lower:
                    break
                yield key, value

    def write(self, batch: WriteBatch, *, sync: bool = True) -> None:
        """Apply `batch` atomically; with sync (the default) it is on disk when this returns.
        StorageWriteError if LevelDB refuses it, or refused an earlier one: nothing of it is
        applied."""
        if self._failure is not None:
            raise StorageWriteError(self._failure)
        try:
            with self._db.write_batch(sync=sync, transaction=True) as wb:
                for key, value in batch.ops:
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
        except plyvel.Error as exc:
            self._failure = f"cannot write the database at {self.path}: {_reason(exc)}; {remedy(exc)}"
            raise StorageWriteError(self._failure) from exc

    def compact(self, prefix: bytes) -> None:
        """Rewrite the files that hold keys under `prefix`, dropping what was deleted or
        overwritten. Safe beside reads and writes from other threads (LevelDB runs it without the
        GIL). Bounds must be given: plyvel's `compact_range()` without them compacts level 0 only."""
        self._db.compact_range(start=prefix, stop=_prefix_end(prefix))

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()


def check_format(db: Database, *, stamp: bool) -> None:
    """Refuse a database of another layout than `schema.FORMAT` (StorageError saying what to do);
    with `stamp`, an empty one gets the stamp."""
    raw = db.get(schema.FORMAT_KEY)
    if raw is None:
        if next(db.iterate(b""), None) is None:
            if stamp:
                batch = WriteBatch()
                batch.put(schema.FORMAT_KEY, str(schema.FORMAT).encode())
                db.write(batch)
            return
        found = "1 (no stamp)"
    elif raw == str(schema.FORMAT).encode():
        return
    else:
        found = raw.decode(errors="replace")
    raise StorageError(
        f"the database at {db.path} has layout {found}; this derivd reads layout {schema.FORMAT}: "
        "reset it (`derivd unsafe-reset-all`) and sync again, or use the derivd that wrote it"
    )


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with `prefix`."""
    raw = bytearray(prefix)
    while raw and raw[-1] == 0xFF:
        raw.pop()
    if not raw:
        return None
    raw[-1] += 1
    return bytes(raw)
