"""A write LevelDB refuses (a full disk): `Database.write` raises one `StorageWriteError` naming the
database, LevelDB's error and what to do, applies nothing of the batch, refuses every later write,
and the database reopens holding the last batch that landed."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any

import plyvel
import pytest

from storage.db import Database, StorageError, StorageWriteError, WriteBatch


class FailingBatch:
    """A plyvel write batch that LevelDB refuses when it is written, as on a full disk."""

    def __init__(self, real: Any, error: plyvel.Error) -> None:
        self.real, self.error = real, error

    def __enter__(self) -> Any:
        return self.real.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.real.__exit__(RuntimeError, RuntimeError("discard"), None)  # transaction: nothing written
        raise self.error


class FlakyLevelDB:
    """A real plyvel DB whose write batches fail while `error` is set (reads go through)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.error: plyvel.Error | None = None
        self.write_attempts = 0

    def write_batch(self, **options: Any) -> Any:
        self.write_attempts += 1
        batch = self.real.write_batch(**options)
        return batch if self.error is None else FailingBatch(batch, self.error)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


def no_space(path: Path) -> plyvel.IOError:
    return plyvel.IOError(f"IO error: {path}/000003.log: No space left on device".encode())


def batch_of(**items: bytes) -> WriteBatch:
    batch = WriteBatch()
    for key, value in items.items():
        batch.put(key.encode(), value)
    return batch


def flaky(path: Path) -> tuple[Database, FlakyLevelDB]:
    db = Database(path)
    leveldb = FlakyLevelDB(db._db)
    db._db = leveldb
    return db, leveldb


def test_a_refused_write_is_one_error_naming_the_database_the_cause_and_the_remedy(tmp_path: Path) -> None:
    db, leveldb = flaky(tmp_path / "db")
    db.write(batch_of(height=b"1", block=b"block-1"))
    leveldb.error = no_space(db.path)
    with pytest.raises(StorageWriteError) as caught:
        db.write(batch_of(height=b"2", block=b"block-2", state=b"state-2"))
    message = str(caught.value)
    assert message == (
        f"cannot write the database at {db.path}: IO error: {db.path}/000003.log: "
        "No space left on device; free space and restart"
    )
    assert isinstance(caught.value, StorageError), "derivd start reports StorageErrors as one line"
    assert (db.get(b"height"), db.get(b"block"), db.get(b"state")) == (b"1", b"block-1", None)
    db.close()


def test_an_io_error_other_than_a_full_disk_says_to_check_the_disk(tmp_path: Path) -> None:
    db, leveldb = flaky(tmp_path / "db")
    leveldb.error = plyvel.IOError(b"IO error: 000003.log: Input/output error")
    with pytest.raises(
        StorageWriteError, match=r": IO error: 000003\.log: Input/output error; check the disk"
    ):
        db.write(batch_of(k=b"v"))
    db.close()


def test_after_a_refused_write_every_write_is_refused_and_leveldb_is_not_asked(tmp_path: Path) -> None:
    db, leveldb = flaky(tmp_path / "db")
    leveldb.error = no_space(db.path)
    with pytest.raises(StorageWriteError) as first:
        db.write(batch_of(a=b"1"))
    leveldb.error = None  # space is back, but this process has stopped writing
    with pytest.raises(StorageWriteError) as second:
        db.write(batch_of(b=b"2"))
    assert str(second.value) == str(first.value)
    assert leveldb.write_attempts == 1
    assert db.get(b"a") is None and db.get(b"b") is None
    db.close()


def test_the_reopened_database_holds_the_last_batch_that_landed(tmp_path: Path) -> None:
    db, leveldb = flaky(tmp_path / "db")
    db.write(batch_of(height=b"7", app=b"app-7"))
    leveldb.error = no_space(db.path)
    with pytest.raises(StorageWriteError):
        db.write(batch_of(height=b"8", app=b"app-8"))
    db.close()
    reopened = Database(tmp_path / "db")
    try:
        assert (reopened.get(b"height"), reopened.get(b"app")) == (b"7", b"app-7")
        reopened.write(batch_of(height=b"8", app=b"app-8"))
        assert reopened.get(b"height") == b"8"
    finally:
        reopened.close()


def test_a_database_that_cannot_be_opened_for_want_of_space_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise plyvel.IOError(f"IO error: {tmp_path}/db/000005.ldb: No space left on device".encode())

    monkeypatch.setattr(plyvel, "DB", refuse)
    with pytest.raises(StorageError) as caught:
        Database(tmp_path / "db")
    assert str(caught.value) == (
        f"cannot open the database at {tmp_path / 'db'}: IO error: {tmp_path}/db/000005.ldb: "
        "No space left on device (free space and restart)"
    )
