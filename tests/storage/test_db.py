"""Tests of storage.db: the LevelDB handle, atomic write batches and prefix iteration."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import schema
from storage.db import Database, StorageError, WriteBatch, check_format


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "db")
    try:
        yield database
    finally:
        database.close()


def put_all(db: Database, items: dict[bytes, bytes]) -> None:
    batch = WriteBatch()
    for key, value in items.items():
        batch.put(key, value)
    db.write(batch)


# -- WriteBatch -----------------------------------------------------------------------------------


def test_write_batch_collects_ops_in_order() -> None:
    batch = WriteBatch()
    assert len(batch) == 0
    batch.put(b"a", b"1")
    batch.delete(b"b")
    batch.put(b"a", b"2")
    assert len(batch) == 3
    assert batch.ops == [(b"a", b"1"), (b"b", None), (b"a", b"2")]


def test_put_get_delete(db: Database) -> None:
    assert db.get(b"missing") is None
    batch = WriteBatch()
    batch.put(b"k", b"v")
    batch.put(b"empty", b"")
    db.write(batch)
    assert db.get(b"k") == b"v"
    assert db.get(b"empty") == b""

    batch = WriteBatch()
    batch.delete(b"k")
    batch.delete(b"never-there")
    db.write(batch)
    assert db.get(b"k") is None
    assert db.get(b"empty") == b""


def test_later_ops_in_a_batch_win(db: Database) -> None:
    batch = WriteBatch()
    batch.put(b"a", b"1")
    batch.put(b"a", b"2")
    batch.put(b"b", b"1")
    batch.delete(b"b")
    batch.delete(b"c")
    batch.put(b"c", b"3")
    db.write(batch)
    assert db.get(b"a") == b"2"
    assert db.get(b"b") is None
    assert db.get(b"c") == b"3"


def test_nothing_visible_before_write_everything_after(db: Database) -> None:
    put_all(db, {b"old": b"x"})
    batch = WriteBatch()
    for i in range(100):
        batch.put(b"k%03d" % i, b"v%d" % i)
    batch.delete(b"old")
    assert all(db.get(b"k%03d" % i) is None for i in range(100))
    assert db.get(b"old") == b"x"
    assert list(db.iterate(b"k")) == []
    db.write(batch)
    assert all(db.get(b"k%03d" % i) == b"v%d" % i for i in range(100))
    assert db.get(b"old") is None
    assert len(list(db.iterate(b"k"))) == 100


def test_write_without_sync(db: Database) -> None:
    batch = WriteBatch()
    batch.put(b"k", b"v")
    db.write(batch, sync=False)
    assert db.get(b"k") == b"v"


def test_empty_batch(db: Database) -> None:
    db.write(WriteBatch())
    assert list(db.iterate(b"")) == []


def test_batch_can_be_written_twice(db: Database) -> None:
    batch = WriteBatch()
    batch.put(b"k", b"v")
    db.write(batch)
    put_all(db, {b"k": b"changed"})
    db.write(batch)
    assert db.get(b"k") == b"v"


class _Interrupted(Exception):
    pass


class _InterruptedBatch(WriteBatch):
    """A batch whose op list breaks off after the first op, as a signal or an error would."""

    __slots__ = ()

    @property
    def ops(self) -> list[tuple[bytes, bytes | None]]:
        return cast(list[tuple[bytes, bytes | None]], self._interrupted())

    def _interrupted(self) -> Iterator[tuple[bytes, bytes | None]]:
        yield from super().ops[:1]
        raise _Interrupted


def test_failure_while_applying_a_batch_writes_nothing(db: Database) -> None:
    batch = _InterruptedBatch()
    batch.put(b"first", b"1")
    batch.put(b"second", b"2")
    with pytest.raises(_Interrupted):
        db.write(batch)
    # atomic: all or nothing, so the first put must not have landed either
    assert db.get(b"first") is None
    assert db.get(b"second") is None


def test_bad_op_in_a_batch_writes_nothing(db: Database) -> None:
    batch = WriteBatch()
    batch.put(b"good", b"1")
    batch.put(cast(bytes, "not bytes"), b"2")
    with pytest.raises(TypeError):
        db.write(batch)
    assert db.get(b"good") is None


# -- iteration ------------------------------------------------------------------------------------


SAMPLE = {
    b"a": b"0",
    b"a:1": b"1",
    b"a:2": b"2",
    b"a:3": b"3",
    b"a;": b"x",
    b"b:1": b"4",
    b"ab": b"5",
}


def test_iterate_prefix(db: Database) -> None:
    put_all(db, SAMPLE)
    assert [k for k, _ in db.iterate(b"a:")] == [b"a:1", b"a:2", b"a:3"]
    assert list(db.iterate(b"a:")) == [(b"a:1", b"1"), (b"a:2", b"2"), (b"a:3", b"3")]
    assert [k for k, _ in db.iterate(b"a")] == [b"a", b"a:1", b"a:2", b"a:3", b"a;", b"ab"]
    assert [k for k, _ in db.iterate(b"b")] == [b"b:1"]
    assert list(db.iterate(b"c")) == []
    assert [k for k, _ in db.iterate(b"")] == sorted(SAMPLE)


def test_iterate_reverse(db: Database) -> None:
    put_all(db, SAMPLE)
    assert [k for k, _ in db.iterate(b"a:", reverse=True)] == [b"a:3", b"a:2", b"a:1"]
    assert [k for k, _ in db.iterate(b"", reverse=True)] == sorted(SAMPLE, reverse=True)


def test_iterate_from_start(db: Database) -> None:
    put_all(db, SAMPLE)
    assert [k for k, _ in db.iterate(b"a:", start=b"a:2")] == [b"a:2", b"a:3"]
    assert [k for k, _ in db.iterate(b"a:", start=b"a:15")] == [b"a:2", b"a:3"]
    assert [k for k, _ in db.iterate(b"a:", start=b"a:4")] == []
    assert [k for k, _ in db.iterate(b"a:", start=b"a:")] == [b"a:1", b"a:2", b"a:3"]


def test_iterate_start_before_prefix_stays_inside_prefix(db: Database) -> None:
    put_all(db, SAMPLE)
    # "keys whose key starts with prefix": a start below the prefix must not leak other keys
    assert [k for k, _ in db.iterate(b"a:", start=b"a")] == [b"a:1", b"a:2", b"a:3"]
    assert [k for k, _ in db.iterate(b"b", start=b"")] == [b"b:1"]


def test_iterate_start_after_prefix_is_empty(db: Database) -> None:
    put_all(db, SAMPLE)
    assert list(db.iterate(b"a:", start=b"b")) == []


def test_iterate_heights_in_order(db: Database) -> None:
    put_all(db, {b"h:" + h.to_bytes(8, "big"): b"%d" % h for h in (1, 255, 256, 2**32, 7)})
    assert [v for _, v in db.iterate(b"h:")] == [b"1", b"7", b"255", b"256", b"4294967296"]
    start = b"h:" + (200).to_bytes(8, "big")
    assert [v for _, v in db.iterate(b"h:", start=start)] == [b"255", b"256", b"4294967296"]


def test_iterate_prefix_ending_in_ff(db: Database) -> None:
    keys = [b"\xfe", b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\x01", b"\xff\xff\xff"]
    keys += [b"a\xfe", b"a\xff", b"a\xff\x05", b"a\xff\xff", b"b", b"b\x00"]
    put_all(db, {k: k for k in keys})
    assert [k for k, _ in db.iterate(b"\xff")] == [
        b"\xff",
        b"\xff\x00",
        b"\xff\xff",
        b"\xff\xff\x01",
        b"\xff\xff\xff",
    ]
    assert [k for k, _ in db.iterate(b"\xff\xff")] == [b"\xff\xff", b"\xff\xff\x01", b"\xff\xff\xff"]
    assert [k for k, _ in db.iterate(b"\xff\xff", start=b"\xff\xff\x00")] == [
        b"\xff\xff\x01",
        b"\xff\xff\xff",
    ]
    assert [k for k, _ in db.iterate(b"\xff", start=b"\xff\x01")] == [
        b"\xff\xff",
        b"\xff\xff\x01",
        b"\xff\xff\xff",
    ]
    assert [k for k, _ in db.iterate(b"a\xff")] == [b"a\xff", b"a\xff\x05", b"a\xff\xff"]
    assert [k for k, _ in db.iterate(b"a\xff", start=b"a\xff\x01")] == [b"a\xff\x05", b"a\xff\xff"]
    assert [k for k, _ in db.iterate(b"a\xff", reverse=True)] == [b"a\xff\xff", b"a\xff\x05", b"a\xff"]
    assert [k for k, _ in db.iterate(b"\xff\xff", reverse=True)] == [
        b"\xff\xff\xff",
        b"\xff\xff\x01",
        b"\xff\xff",
    ]


def test_iteration_sees_a_consistent_snapshot(db: Database) -> None:
    put_all(db, {b"p1": b"1", b"p2": b"2", b"p3": b"3"})
    it = db.iterate(b"p")
    assert next(it) == (b"p1", b"1")
    # writes during an iteration (e.g. deleting what was read) do not disturb it
    batch = WriteBatch()
    batch.delete(b"p2")
    batch.put(b"p4", b"4")
    db.write(batch)
    assert list(it) == [(b"p2", b"2"), (b"p3", b"3")]
    assert [k for k, _ in db.iterate(b"p")] == [b"p1", b"p3", b"p4"]


ALPHABET = [b"\x00", b"\x01", b"a", b"\xfe", b"\xff"]
keys_st = st.lists(st.sampled_from(ALPHABET), min_size=1, max_size=4).map(b"".join)


@settings(max_examples=60, deadline=None)
@given(
    st.sets(keys_st, max_size=25),
    st.lists(st.sampled_from(ALPHABET), max_size=2).map(b"".join),
    st.one_of(st.none(), st.lists(st.sampled_from(ALPHABET), max_size=2).map(b"".join)),
    st.booleans(),
)
def test_iterate_matches_a_sorted_model(
    keys: set[bytes], prefix: bytes, suffix: bytes | None, reverse: bool
) -> None:
    start = None if suffix is None else prefix + suffix
    if start is not None and reverse:
        reverse = False  # the meaning of start with reverse is not specified; see the report
    with tempfile.TemporaryDirectory() as tmp:
        database = Database(Path(tmp))
        try:
            put_all(database, {k: k[::-1] for k in keys})
            want = sorted(k for k in keys if k.startswith(prefix) and (start is None or k >= start))
            if reverse:
                want.reverse()
            assert list(database.iterate(prefix, start=start, reverse=reverse)) == [
                (k, k[::-1]) for k in want
            ]
        finally:
            database.close()


# -- opening and closing ------------------------------------------------------------------------


def test_reopen_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "data" / "derivd.db"
    first = Database(path)
    put_all(first, {b"k": b"v", b"k2": b"v2"})
    batch = WriteBatch()
    batch.delete(b"k2")
    first.write(batch)
    first.close()

    second = Database(path)
    try:
        assert second.path == path
        assert second.get(b"k") == b"v"
        assert second.get(b"k2") is None
        assert list(second.iterate(b"k")) == [(b"k", b"v")]
    finally:
        second.close()


def test_open_creates_missing_directories(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c"
    database = Database(path)
    database.close()
    assert path.is_dir()


def test_opening_the_same_path_twice(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = Database(path)
    try:
        with pytest.raises(StorageError) as info:
            Database(path)
        message = str(info.value)
        assert str(path) in message
        assert "another derivd" in message
    finally:
        first.close()
    # once closed, the lock is released
    again = Database(path)
    again.close()


def test_close_is_idempotent(tmp_path: Path) -> None:
    database = Database(tmp_path)
    database.close()
    database.close()


@pytest.mark.parametrize(
    ("keys", "prefix"),
    [
        pytest.param([b"a"], b"a", id="only-key"),
        pytest.param([b"0", b"a", b"b"], b"a", id="between-others"),
        pytest.param([b"a:", b"a;"], b"a:", id="before-a-sibling"),
    ],
)
def test_reverse_iteration_yields_a_key_equal_to_the_prefix(
    db: Database, keys: list[bytes], prefix: bytes
) -> None:
    # plyvel 1.5.1 drops the first key of a reverse scan when it equals the lower bound
    # (Iterator.real_prev compares start >= key where it means start > key)
    put_all(db, {k: b"v" for k in keys})
    assert [k for k, _ in db.iterate(prefix, reverse=True)] == [prefix]


def test_reverse_iteration_from_the_last_key_yields_it(db: Database) -> None:
    # whichever way start is read with reverse (lower bound, or the first key going down),
    # a start equal to the last key of the prefix must yield that key first
    put_all(db, {b"p:1": b"1", b"p:2": b"2", b"q": b"3"})
    assert [k for k, _ in db.iterate(b"p:", start=b"p:2", reverse=True)][:1] == [b"p:2"]


def _size(path: Path) -> int:
    return sum(file.stat().st_size for file in path.iterdir())


def test_compact_frees_the_space_of_deleted_keys_under_a_prefix(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    batch = WriteBatch()
    for i in range(4_000):
        batch.put(b"x:%08d" % i, bytes([i % 251]) * 1_000)
        batch.put(b"y:%08d" % i, b"kept %d" % i)
    db.write(batch)
    db.compact(b"x:")  # everything in table files, as after a long run
    full = _size(tmp_path / "db")
    batch = WriteBatch()
    for i in range(4_000):
        batch.delete(b"x:%08d" % i)
    db.write(batch)
    assert _size(tmp_path / "db") >= full  # a delete alone frees nothing
    db.compact(b"x:")
    assert _size(tmp_path / "db") < full // 4
    assert list(db.iterate(b"x:")) == []
    assert len(list(db.iterate(b"y:"))) == 4_000 and db.get(b"y:%08d" % 7) == b"kept 7"
    db.close()


def test_check_format_stamps_an_empty_database_and_refuses_other_layouts(tmp_path: Path) -> None:
    db = Database(tmp_path / "new")
    check_format(db, stamp=False)
    assert db.get(schema.FORMAT_KEY) is None  # reading only: an empty database stays empty
    check_format(db, stamp=True)
    assert db.get(schema.FORMAT_KEY) == str(schema.FORMAT).encode()
    check_format(db, stamp=True)  # its own layout passes
    db.close()
    old = Database(tmp_path / "old")
    batch = WriteBatch()
    batch.put(b"a:meta", b"x")
    old.write(batch)
    with pytest.raises(StorageError, match=r"has layout 1 \(no stamp\); this derivd reads layout 3"):
        check_format(old, stamp=True)
    batch = WriteBatch()
    batch.put(schema.FORMAT_KEY, b"9")
    old.write(batch)
    with pytest.raises(StorageError, match=r"has layout 9; .*unsafe-reset-all"):
        check_format(old, stamp=False)
    old.close()
