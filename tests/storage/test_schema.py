"""Tests of storage.schema: the key layouts of the node's LevelDB."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from storage import schema

HEIGHT_KEYS = [
    schema.block_key,
    schema.hash_by_height_key,
    schema.seen_commit_key,
    schema.results_key,
    schema.validators_key,
]


def test_height_bytes() -> None:
    assert schema.height_bytes(0) == bytes(8)
    assert schema.height_bytes(1) == b"\x00" * 7 + b"\x01"
    assert schema.height_bytes(2**63 - 1) == b"\x7f" + b"\xff" * 7
    for bad in (-1, 2**63, 2**64):
        with pytest.raises(ValueError, match="out of range"):
            schema.height_bytes(bad)


@given(st.integers(0, 2**63 - 1))
def test_height_round_trip(height: int) -> None:
    raw = schema.height_bytes(height)
    assert len(raw) == schema.HEIGHT_SIZE
    assert schema.height_from_bytes(raw) == height


@pytest.mark.parametrize("size", [0, 7, 9])
def test_height_from_bytes_rejects_wrong_size(size: int) -> None:
    with pytest.raises(ValueError, match="8 bytes"):
        schema.height_from_bytes(bytes(size))


@settings(max_examples=100)
@given(st.integers(0, 2**63 - 1), st.integers(0, 2**63 - 1))
def test_height_keys_sort_by_height(a: int, b: int) -> None:
    for make in HEIGHT_KEYS:
        assert (make(a) < make(b)) == (a < b)
        assert (make(a) == make(b)) == (a == b)


def test_key_families_do_not_overlap() -> None:
    samples = {
        "block": schema.block_key(1),
        "hash": schema.block_hash_key(b"\x00" * 32),
        "hh": schema.hash_by_height_key(1),
        "seen": schema.seen_commit_key(1),
        "res": schema.results_key(1),
        "tx": schema.tx_key(b"\x00" * 32),
        "vals": schema.validators_key(1),
        "acct": schema.account_key(b"\x00" * 20),
    }
    assert len(set(samples.values())) == len(samples)
    # no family's key prefix is a prefix of another family's
    prefixes = {name: key[: key.index(b":", 2) + 1] for name, key in samples.items()}
    for (a, pa), (b, pb) in itertools.permutations(prefixes.items(), 2):
        assert not pb.startswith(pa), (a, b)
    singles = [schema.BLOCK_STORE_META, schema.CONSENSUS_STATE, schema.APP_META]
    for single in singles:
        assert not any(single.startswith(p) for p in prefixes.values())


def test_app_keys_share_the_app_prefix() -> None:
    assert schema.APP_META.startswith(schema.APP_PREFIX)
    assert schema.account_key(b"a" * 20).startswith(schema.APP_PREFIX)
    assert schema.account_key(b"a" * 20).startswith(schema.APP_ACCOUNT_PREFIX)
    assert not schema.CONSENSUS_STATE.startswith(schema.APP_PREFIX)
    assert not schema.block_key(1).startswith(schema.APP_PREFIX)


@given(st.binary(min_size=20, max_size=20))
def test_account_key_round_trip(address: bytes) -> None:
    assert schema.address_from_account_key(schema.account_key(address)) == address


def test_address_from_non_account_key() -> None:
    with pytest.raises(ValueError, match="not an account key"):
        schema.address_from_account_key(schema.block_key(1))
