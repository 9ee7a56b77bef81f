"""Genesis app_state parsing (errors name the field) and add_account."""

from __future__ import annotations

import json

import pytest

from execution.genesis_state import (
    MAX_SUPPLY,
    AppState,
    AppStateError,
    GenesisAccount,
    add_account,
    load_app_state,
    parse_app_state,
)
from primitives.keys import Address

A = "aa" * 20
B = "bb" * 20


def test_parses_accounts_with_string_or_int_balances() -> None:
    state = parse_app_state(
        {"accounts": [{"address": A, "balance": "100"}, {"address": B.upper(), "balance": 5}]}
    )
    assert state.accounts == (
        GenesisAccount(Address.parse(A), 100),
        GenesisAccount(Address.parse(B), 5),
    )
    assert state.total_supply == 105


def test_empty_forms() -> None:
    assert parse_app_state({}) == AppState()
    assert parse_app_state(None) == AppState()
    assert load_app_state(b"") == AppState()
    assert load_app_state(b'{"accounts": []}') == AppState()


@pytest.mark.parametrize(
    ("app_state", "message"),
    [
        ([], "app_state: must be a JSON object"),
        ({"acounts": []}, "app_state.acounts: unknown field"),
        ({"accounts": {}}, "app_state.accounts: must be a JSON array"),
        ({"accounts": [7]}, "app_state.accounts[0]: must be a JSON object"),
        ({"accounts": [{"address": A}]}, "app_state.accounts[0].balance: missing"),
        ({"accounts": [{"address": A, "balance": 1, "x": 1}]}, "app_state.accounts[0].x: unknown field"),
        (
            {"accounts": [{"address": "zz", "balance": 1}]},
            'app_state.accounts[0].address: must be 40 hex digits, got "zz"',
        ),
        (
            {"accounts": [{"address": 5, "balance": 1}]},
            "app_state.accounts[0].address: must be 40 hex digits",
        ),
        (
            {
                "accounts": [
                    {"address": A, "balance": 1},
                    {"address": B, "balance": 1},
                    {"address": "cc" * 20, "balance": "x"},
                ]
            },
            'app_state.accounts[2].balance: must be a non-negative integer, got "x"',
        ),
        (
            {"accounts": [{"address": A, "balance": -1}]},
            "app_state.accounts[0].balance: must be a non-negative",
        ),
        (
            {"accounts": [{"address": A, "balance": "-1"}]},
            "app_state.accounts[0].balance: must be a non-negative",
        ),
        (
            {"accounts": [{"address": A, "balance": 1.0}]},
            "app_state.accounts[0].balance: must be a non-negative",
        ),
        (
            {"accounts": [{"address": A, "balance": True}]},
            "app_state.accounts[0].balance: must be a non-negative",
        ),
        (
            {"accounts": [{"address": A, "balance": " 1"}]},
            "app_state.accounts[0].balance: must be a non-negative",
        ),
        (
            {"accounts": [{"address": A, "balance": str(2**63)}]},
            "app_state.accounts[0].balance: must be a non-negative",
        ),
        (
            {"accounts": [{"address": A, "balance": 1}, {"address": "0x" + A.upper(), "balance": 2}]},
            "app_state.accounts[1].address: duplicate of app_state.accounts[0]",
        ),
        (
            {"accounts": [{"address": A, "balance": MAX_SUPPLY}, {"address": B, "balance": 1}]},
            "app_state.accounts: total supply",
        ),
    ],
)
def test_errors_name_the_field(app_state: object, message: str) -> None:
    with pytest.raises(AppStateError) as info:
        parse_app_state(app_state)
    assert str(info.value).startswith(message)


def test_load_rejects_bad_json_and_duplicate_keys() -> None:
    with pytest.raises(AppStateError, match="app_state: not valid JSON"):
        load_app_state(b"{")
    with pytest.raises(AppStateError, match="duplicate JSON key"):
        load_app_state(b'{"accounts": [], "accounts": []}')
    assert isinstance(AppStateError("x"), ValueError)


def test_add_account_adds_or_increases_without_mutating() -> None:
    original = {"accounts": [{"address": A, "balance": "100"}]}
    snapshot = json.dumps(original)
    grown = add_account(original, B.upper(), 50)
    assert grown == {"accounts": [{"address": A, "balance": "100"}, {"address": B, "balance": "50"}]}
    topped = add_account(grown, "0x" + A, 25)
    assert topped["accounts"][0] == {"address": A, "balance": "125"}
    assert json.dumps(original) == snapshot
    assert add_account({}, A, 1) == {"accounts": [{"address": A, "balance": "1"}]}


def test_add_account_validates() -> None:
    with pytest.raises(AppStateError, match="address: must be 40 hex digits"):
        add_account({}, "nope", 1)
    with pytest.raises(AppStateError, match="amount: must be a non-negative integer"):
        add_account({}, A, -1)
    with pytest.raises(AppStateError, match=r"app_state\.accounts: total supply"):
        add_account({"accounts": [{"address": B, "balance": MAX_SUPPLY}]}, A, 1)
    with pytest.raises(AppStateError, match=r"app_state\.accounts\[0\]\.balance"):
        add_account({"accounts": [{"address": A, "balance": MAX_SUPPLY}]}, A, 1)
    with pytest.raises(AppStateError, match=r"app_state\.bogus: unknown field"):
        add_account({"bogus": 1}, A, 1)
