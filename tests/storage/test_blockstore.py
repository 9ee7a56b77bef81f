"""Tests of storage.blockstore: blocks by height and hash, seen commits, results, the tx index,
the persisted range [base, height] and pruning."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.codec import DecodeError, encode
from primitives.hashing import sha256
from storage import schema
from storage.blockstore import MAX_PRUNE_PER_BATCH, BlockStore
from storage.db import Database, WriteBatch


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "db")
    try:
        yield database
    finally:
        database.close()


def block_hash(height: int) -> bytes:
    return sha256(b"block %d" % height)


def block_bytes(height: int) -> bytes:
    return b"block body %d" % height


def commit_bytes(height: int) -> bytes:
    return b"seen commit %d" % height


def results_bytes(height: int) -> bytes:
    return b"results %d" % height


def tx_hashes(height: int) -> list[bytes]:
    return [sha256(b"tx %d %d" % (height, i)) for i in range(height % 4)]


def save(db: Database, store: BlockStore, height: int) -> None:
    """The documented use: one batch per height, written, then mark_written."""
    batch = WriteBatch()
    store.save_block(
        batch,
        height,
        block_hash(height),
        block_bytes(height),
        commit_bytes(height),
        results_bytes(height),
        tx_hashes(height),
    )
    db.write(batch)
    store.mark_written()


def save_range(db: Database, store: BlockStore, first: int, last: int) -> None:
    for height in range(first, last + 1):
        save(db, store, height)


def prune(db: Database, store: BlockStore, retain: int) -> int:
    """The documented use: prune into its own batch write, then mark_written."""
    batch = WriteBatch()
    base = store.prune(batch, retain)
    db.write(batch)
    store.mark_written()
    return base


def assert_present(store: BlockStore, height: int) -> None:
    assert store.load_block(height) == block_bytes(height)
    assert store.hash_at(height) == block_hash(height)
    assert store.height_of_hash(block_hash(height)) == height
    assert store.load_seen_commit(height) == commit_bytes(height)
    assert store.load_results(height) == results_bytes(height)


def assert_pruned(store: BlockStore, height: int) -> None:
    assert store.load_block(height) is None
    assert store.hash_at(height) is None
    assert store.height_of_hash(block_hash(height)) is None
    assert store.load_seen_commit(height) is None
    assert store.load_results(height) is None


# -- saving and loading ---------------------------------------------------------------------------


def test_empty_store(db: Database) -> None:
    store = BlockStore(db)
    assert (store.base, store.height) == (0, 0)
    assert store.load_block(1) is None
    assert store.hash_at(1) is None
    assert store.height_of_hash(block_hash(1)) is None
    assert store.load_seen_commit(1) is None
    assert store.load_results(1) is None
    assert store.find_tx(sha256(b"nothing")) is None


def test_save_and_load(db: Database) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 12)
    assert (store.base, store.height) == (1, 12)
    for height in range(1, 13):
        assert_present(store, height)
        for index, tx_hash in enumerate(tx_hashes(height)):
            assert store.find_tx(tx_hash) == (height, index)
    assert store.load_block(13) is None
    assert store.load_block(0) is None
    assert store.hash_at(13) is None
    assert store.height_of_hash(sha256(b"unknown")) is None
    assert store.find_tx(sha256(b"tx 99 0")) is None


def test_save_writes_only_into_the_batch(db: Database) -> None:
    store = BlockStore(db)
    batch = WriteBatch()
    store.save_block(
        batch, 1, block_hash(1), block_bytes(1), commit_bytes(1), results_bytes(1), [sha256(b"t")]
    )
    assert len(batch) > 0
    assert store.load_block(1) is None
    assert store.find_tx(sha256(b"t")) is None
    assert db.get(schema.BLOCK_STORE_META) is None
    assert (store.base, store.height) == (0, 0)
    db.write(batch)
    assert store.load_block(1) == block_bytes(1)
    assert store.find_tx(sha256(b"t")) == (1, 0)
    assert (store.base, store.height) == (0, 0)  # until mark_written
    store.mark_written()
    assert (store.base, store.height) == (1, 1)


def test_meta_record_layout(db: Database) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 3)
    assert db.get(schema.BLOCK_STORE_META) == encode([1, 3])
    assert db.get(schema.tx_key(tx_hashes(3)[2])) == encode([3, 2])


def test_empty_blocks_and_values(db: Database) -> None:
    store = BlockStore(db)
    batch = WriteBatch()
    store.save_block(batch, 1, b"\x00" * 32, b"", b"", b"", [])
    db.write(batch)
    store.mark_written()
    assert store.load_block(1) == b""
    assert store.load_seen_commit(1) == b""
    assert store.load_results(1) == b""
    assert store.height_of_hash(b"\x00" * 32) == 1


def test_first_block_may_be_above_one(db: Database) -> None:
    # a node that starts from a snapshot stores its first block at that height
    store = BlockStore(db)
    save_range(db, store, 100, 102)
    assert (store.base, store.height) == (100, 102)
    assert_present(store, 100)
    assert store.load_block(99) is None


@pytest.mark.parametrize("bad", [0, 1, 5, 7, 100])
def test_non_consecutive_height_raises(db: Database, bad: int) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 5)
    batch = WriteBatch()
    with pytest.raises(ValueError, match="cannot save height"):
        store.save_block(batch, bad, block_hash(bad), b"b", b"c", b"r", [sha256(b"x")])
    assert len(batch) == 0
    assert (store.base, store.height) == (1, 5)
    save(db, store, 6)
    assert store.height == 6


def test_tx_seen_again_points_to_the_latest_block(db: Database) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 2)
    batch = WriteBatch()
    duplicate = tx_hashes(2)[0]
    store.save_block(batch, 3, block_hash(3), b"b", b"c", b"r", [sha256(b"other"), duplicate])
    db.write(batch)
    store.mark_written()
    assert store.find_tx(duplicate) == (3, 1)


# -- persistence ----------------------------------------------------------------------------------


def test_range_persists_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path)
    store = BlockStore(db)
    save_range(db, store, 1, 7)
    db.close()

    db = Database(path)
    try:
        store = BlockStore(db)
        assert (store.base, store.height) == (1, 7)
        assert_present(store, 7)
        assert store.find_tx(tx_hashes(7)[0]) == (7, 0)
        with pytest.raises(ValueError):
            store.save_block(WriteBatch(), 9, block_hash(9), b"", b"", b"", [])
        save(db, store, 8)
        assert (store.base, store.height) == (1, 8)
    finally:
        db.close()


def test_unwritten_batch_is_not_persisted(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path)
    store = BlockStore(db)
    save_range(db, store, 1, 3)
    store.save_block(WriteBatch(), 4, block_hash(4), b"", b"", b"", [])  # batch dropped: a crash
    db.close()

    db = Database(path)
    try:
        store = BlockStore(db)
        assert (store.base, store.height) == (1, 3)
        assert store.load_block(4) is None
    finally:
        db.close()


def test_corrupt_meta_record_is_a_decode_error(db: Database) -> None:
    batch = WriteBatch()
    batch.put(schema.BLOCK_STORE_META, b"\xc0")
    db.write(batch)
    with pytest.raises(DecodeError):
        BlockStore(db)
    batch = WriteBatch()
    batch.put(schema.BLOCK_STORE_META, encode([1, 2, 3]))
    db.write(batch)
    with pytest.raises(DecodeError, match="block store range"):
        BlockStore(db)
    batch = WriteBatch()
    batch.put(schema.BLOCK_STORE_META, encode([1, -2]))
    db.write(batch)
    with pytest.raises(DecodeError, match="height"):
        BlockStore(db)


# -- pruning --------------------------------------------------------------------------------------


def test_prune(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path)
    store = BlockStore(db)
    save_range(db, store, 1, 10)

    batch = WriteBatch()
    assert store.prune(batch, 6) == 6
    # nothing happens before the batch is written
    assert_present(store, 1)
    assert store.base == 1
    db.write(batch)
    store.mark_written()

    assert (store.base, store.height) == (6, 10)
    for height in range(1, 6):
        assert_pruned(store, height)
        # so are the index entries of their transactions
        assert all(store.find_tx(tx_hash) is None for tx_hash in tx_hashes(height))
    for height in range(6, 11):
        assert_present(store, height)
    db.close()

    db = Database(path)
    try:
        store = BlockStore(db)
        assert (store.base, store.height) == (6, 10)
        assert_present(store, 6)
        assert_pruned(store, 5)
    finally:
        db.close()


def test_prune_deletes_nothing_outside_the_block_store(db: Database) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 4)
    batch = WriteBatch()
    batch.put(b"c:state", b"state")
    batch.put(b"a:meta", b"app")
    db.write(batch)
    before = {k for k, _ in db.iterate(b"")}
    prune(db, store, 3)
    after = {k for k, _ in db.iterate(b"")}
    removed = before - after
    assert removed == {
        key
        for h in (1, 2)
        for key in (
            schema.block_key(h),
            schema.block_hash_key(block_hash(h)),
            schema.hash_by_height_key(h),
            schema.seen_commit_key(h),
            schema.results_key(h),
            schema.tx_list_key(h),
            *(schema.tx_key(tx_hash) for tx_hash in tx_hashes(h)),
        )
        if key != schema.tx_list_key(h) or tx_hashes(h)
    }
    assert db.get(b"c:state") == b"state"
    assert db.get(b"a:meta") == b"app"


def test_prune_keeps_the_index_entry_of_a_later_block_with_the_same_tx(db: Database) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 2)
    again = tx_hashes(1)[0]  # the same tx bytes committed again at height 3 (index 1)
    batch = WriteBatch()
    store.save_block(
        batch, 3, block_hash(3), block_bytes(3), commit_bytes(3), results_bytes(3), [sha256(b"x"), again]
    )
    db.write(batch)
    store.mark_written()
    prune(db, store, 3)
    assert store.find_tx(again) == (3, 1)
    # the same, with the later block and the prune in one batch
    again = sha256(b"x")  # block 3's first tx
    batch = WriteBatch()
    store.save_block(batch, 4, block_hash(4), block_bytes(4), commit_bytes(4), results_bytes(4), [again])
    store.prune(batch, 4)
    db.write(batch)
    store.mark_written()
    assert store.find_tx(again) == (4, 0)


@pytest.mark.parametrize("retain", [-1, 0, 1])
def test_prune_at_or_below_base_does_nothing(db: Database, retain: int) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 5)
    batch = WriteBatch()
    assert store.prune(batch, retain) == 1
    assert len(batch) == 0
    assert store.base == 1
    assert_present(store, 1)


@pytest.mark.parametrize("retain", [6, 7, 1000])
def test_prune_above_height_does_nothing(db: Database, retain: int) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 5)
    batch = WriteBatch()
    assert store.prune(batch, retain) == 1
    assert len(batch) == 0
    assert_present(store, 5)


def test_prune_of_an_empty_store_does_nothing(db: Database) -> None:
    store = BlockStore(db)
    batch = WriteBatch()
    assert store.prune(batch, 1) == 0
    assert len(batch) == 0


def test_prune_to_height_keeps_only_the_last_block(db: Database) -> None:
    store = BlockStore(db)
    save_range(db, store, 1, 5)
    assert prune(db, store, 5) == 5
    assert (store.base, store.height) == (5, 5)
    for height in range(1, 5):
        assert_pruned(store, height)
    assert_present(store, 5)


def test_prune_repeatedly_while_saving(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path)
    store = BlockStore(db)
    retain_last = 3
    for height in range(1, 21):
        save(db, store, height)
        prune(db, store, height - retain_last + 1)
        assert store.height == height
        assert store.base == max(1, height - retain_last + 1)
    for height in range(1, 18):
        assert_pruned(store, height)
    for height in range(18, 21):
        assert_present(store, height)
    db.close()

    db = Database(path)
    try:
        store = BlockStore(db)
        assert (store.base, store.height) == (18, 20)
    finally:
        db.close()


def test_saving_after_prune_keeps_the_base(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path)
    store = BlockStore(db)
    save_range(db, store, 1, 5)
    prune(db, store, 4)
    save(db, store, 6)
    assert (store.base, store.height) == (4, 6)
    db.close()
    db = Database(path)
    try:
        store = BlockStore(db)
        assert (store.base, store.height) == (4, 6)
    finally:
        db.close()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(-2, 30)), min_size=1, max_size=8))
def test_save_and_prune_model(tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[int, int]]) -> None:
    """Random runs of saves and prunes against a model of which heights exist."""
    path = tmp_path_factory.mktemp("model")
    db = Database(path)
    store = BlockStore(db)
    base, height = 0, 0
    for count, retain in steps:
        for _ in range(count):
            height += 1
            save(db, store, height)
            base = base or height
        new_base = prune(db, store, retain)
        if base < retain <= height:
            base = retain
        assert new_base == base
        assert (store.base, store.height) == (base, height)
    db.close()

    db = Database(path)
    try:
        store = BlockStore(db)
        assert (store.base, store.height) == (base, height)
        for h in range(1, height + 1):
            if h < base:
                assert_pruned(store, h)
            else:
                assert_present(store, h)
            for index, tx_hash in enumerate(tx_hashes(h)):
                assert store.find_tx(tx_hash) == (None if h < base else (h, index))
    finally:
        db.close()


def test_save_and_prune_in_one_batch_either_order(tmp_path: Path) -> None:
    """DESIGN.md wants everything a height changes in one batch, pruning included."""
    for prune_first in (False, True):
        path = tmp_path / f"db-{prune_first}"
        db = Database(path)
        store = BlockStore(db)
        save_range(db, store, 1, 5)
        batch = WriteBatch()
        if prune_first:
            store.prune(batch, 3)
        store.save_block(batch, 6, block_hash(6), block_bytes(6), commit_bytes(6), results_bytes(6), [])
        if not prune_first:
            store.prune(batch, 3)
        db.write(batch)
        store.mark_written()
        assert (store.base, store.height) == (3, 6)
        db.close()
        reopened = BlockStore(Database(path))
        assert (reopened.base, reopened.height) == (3, 6)
        assert_pruned(reopened, 2)
        assert reopened.load_block(6) == block_bytes(6)


def test_prune_is_bounded_per_batch(db: Database) -> None:

    store = BlockStore(db)
    save_range(db, store, 1, MAX_PRUNE_PER_BATCH + 20)
    batch = WriteBatch()
    assert store.prune(batch, MAX_PRUNE_PER_BATCH + 10) == MAX_PRUNE_PER_BATCH + 1
    db.write(batch)
    store.mark_written()
    assert store.base == MAX_PRUNE_PER_BATCH + 1
