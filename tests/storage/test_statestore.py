"""Tests of storage.statestore: the consensus state record and validator sets by height."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database, WriteBatch
from storage.statestore import StateStore


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(tmp_path / "db")
    try:
        yield database
    finally:
        database.close()


def test_empty(db: Database) -> None:
    store = StateStore(db)
    assert store.load() is None
    assert store.load_validators(1) is None
    assert store.load_validators(0) is None


def test_save_and_load_state(db: Database) -> None:
    store = StateStore(db)
    batch = WriteBatch()
    store.save(batch, b"state at 1")
    assert store.load() is None  # only in the batch so far
    db.write(batch)
    assert store.load() == b"state at 1"

    batch = WriteBatch()
    store.save(batch, b"state at 2")
    db.write(batch)
    assert store.load() == b"state at 2"
    assert db.get(schema.CONSENSUS_STATE) == b"state at 2"


def test_save_and_load_validators_by_height(db: Database) -> None:
    store = StateStore(db)
    batch = WriteBatch()
    store.save_validators(batch, 1, b"set A")
    store.save_validators(batch, 2, b"set A")
    store.save_validators(batch, 3, b"set B")
    assert store.load_validators(1) is None
    db.write(batch)
    assert store.load_validators(1) == b"set A"
    assert store.load_validators(2) == b"set A"
    assert store.load_validators(3) == b"set B"
    assert store.load_validators(4) is None

    batch = WriteBatch()
    store.save_validators(batch, 3, b"set C")
    db.write(batch)
    assert store.load_validators(3) == b"set C"
    assert store.load_validators(2) == b"set A"


@pytest.mark.parametrize("height", [-1, 2**63])
def test_validators_height_out_of_range(db: Database, height: int) -> None:
    store = StateStore(db)
    with pytest.raises(ValueError):
        store.save_validators(WriteBatch(), height, b"x")
    with pytest.raises(ValueError):
        store.load_validators(height)


def test_large_heights(db: Database) -> None:
    store = StateStore(db)
    batch = WriteBatch()
    for height in (0, 255, 256, 2**32, 2**63 - 1):
        store.save_validators(batch, height, b"v%d" % height)
    db.write(batch)
    for height in (0, 255, 256, 2**32, 2**63 - 1):
        assert store.load_validators(height) == b"v%d" % height
    # stored under big-endian heights, so they sort by height
    values = [v for _, v in db.iterate(schema.validators_key(0)[: -schema.HEIGHT_SIZE])]
    assert values == [b"v0", b"v255", b"v256", b"v4294967296", b"v%d" % (2**63 - 1)]


def test_state_and_blocks_share_one_atomic_batch(tmp_path: Path) -> None:
    path = tmp_path / "db"
    db = Database(path)
    blocks, states = BlockStore(db), StateStore(db)
    batch = WriteBatch()
    blocks.save_block(batch, 1, b"h" * 32, b"block", b"commit", b"results", [])
    states.save(batch, b"state 1")
    states.save_validators(batch, 1, b"vals 1")
    states.save_validators(batch, 2, b"vals 2")
    db.write(batch)
    blocks.mark_written()
    db.close()

    db = Database(path)
    try:
        blocks, states = BlockStore(db), StateStore(db)
        assert blocks.height == 1
        assert blocks.load_block(1) == b"block"
        assert states.load() == b"state 1"
        assert states.load_validators(1) == b"vals 1"
        assert states.load_validators(2) == b"vals 2"
        # the same height in both stores does not collide
        assert blocks.load_results(1) == b"results"
    finally:
        db.close()


@settings(max_examples=30, deadline=None)
@given(
    st.dictionaries(st.integers(0, 2**63 - 1), st.binary(max_size=20), max_size=20), st.binary(max_size=50)
)
def test_persists_across_reopen(
    tmp_path_factory: pytest.TempPathFactory, validators: dict[int, bytes], state: bytes
) -> None:
    path = tmp_path_factory.mktemp("state")
    db = Database(path)
    store = StateStore(db)
    batch = WriteBatch()
    store.save(batch, state)
    for height, value in validators.items():
        store.save_validators(batch, height, value)
    db.write(batch)
    db.close()

    db = Database(path)
    try:
        store = StateStore(db)
        assert store.load() == state
        for height, value in validators.items():
            assert store.load_validators(height) == value
        missing = next(h for h in range(len(validators) + 1) if h not in validators)
        assert store.load_validators(missing) is None
    finally:
        db.close()
