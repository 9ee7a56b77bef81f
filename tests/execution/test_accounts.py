"""The account record and the nonce rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.accounts import (
    MAX_KEPT_NONCES,
    MS_PER_DAY,
    Account,
    nonce_error,
)
from primitives import codec
from primitives.codec import DecodeError

NOW_MS = 1_700_000_000_000
NOW_NS = NOW_MS * 1_000_000 + 999_999


def test_record_round_trip() -> None:
    account = Account(1234, (5, 9, 12), 77, 300)
    raw = account.encode()
    assert codec.decode(raw) == [1234, [5, 9, 12], 77, 300]
    assert Account.decode(raw) == account
    assert Account().is_empty
    assert not Account(0, (1,)).is_empty


@pytest.mark.parametrize(
    "value",
    [
        [1, [3, 2], 0, 0],
        [1, [2, 2], 0, 0],
        [-1, [], 0, 0],
        [1],
        [1, []],
        [1, list(range(MAX_KEPT_NONCES + 1)), 0, 0],
        [b"1", [], 0, 0],
        [1, [], -1, 0],
        [1, [], 0, b"1"],
    ],
)
def test_record_rejects_invalid_forms(value: codec.Value) -> None:
    with pytest.raises(DecodeError):
        Account.decode(codec.encode(value))


def test_nonce_rule() -> None:
    fresh = Account(10)
    assert nonce_error(fresh, NOW_MS, NOW_NS) is None
    assert nonce_error(fresh, NOW_MS - 2 * MS_PER_DAY + 1, NOW_NS) is None
    assert nonce_error(fresh, NOW_MS + MS_PER_DAY - 1, NOW_NS) is None
    assert "outside the window" in str(nonce_error(fresh, NOW_MS - 2 * MS_PER_DAY, NOW_NS))
    assert "outside the window" in str(nonce_error(fresh, NOW_MS + MS_PER_DAY, NOW_NS))
    used = fresh.with_nonce(NOW_MS)
    assert "already used" in str(nonce_error(used, NOW_MS, NOW_NS))
    full = Account(10, tuple(range(NOW_MS, NOW_MS + MAX_KEPT_NONCES)))
    assert "not above the smallest" in str(nonce_error(full, NOW_MS - 1, NOW_NS))
    assert nonce_error(Account(10, full.nonces[1:]), NOW_MS - 1, NOW_NS) is None  # 99 kept: any unused


@given(st.lists(st.integers(0, 10**6), unique=True, max_size=250))
def test_with_nonce_keeps_the_highest_hundred_sorted(nonces: list[int]) -> None:
    account = Account()
    for nonce in nonces:
        account = account.with_nonce(nonce)
    assert list(account.nonces) == sorted(nonces)[-MAX_KEPT_NONCES:]
    assert Account.decode(account.encode()) == account
