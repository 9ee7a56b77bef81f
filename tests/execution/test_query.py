"""Application queries: accounts, supply, app, heights and errors."""

from __future__ import annotations

import json

from execution.codes import CODESPACE, Code
from storage import schema
from tests.execution.chain import Chain, address, key
from tests.execution.conftest import ALICE_FUNDS, BOB_FUNDS, CAROL_FUNDS


def test_account_query(chain: Chain) -> None:
    raw = chain.transfer(key(0), address(1), 5)
    chain.run_block([raw])
    result = chain.app.query(f"/accounts/{str(address(0)).upper()}", b"", 0, False)
    assert result.code == 0
    assert result.height == 1
    assert result.key == schema.account_key(address(0).raw)
    value = json.loads(result.value)
    nonce = chain.nonces(address(0))[0]
    base = {"address", "balance", "nonces"}
    assert {k: value[k] for k in base} == {
        "address": str(address(0)),
        "balance": str(ALICE_FUNDS - 5),
        "nonces": [str(nonce)],
    }
    assert value["positions"] == value["orders"] == []
    assert value["collateral"] == value["account_value"] == value["free_collateral"] == str(ALICE_FUNDS - 5)
    empty = json.loads(chain.app.query(f"/accounts/{address(9)}", b"", 1, False).value)
    assert {k: empty[k] for k in base} == {"address": str(address(9)), "balance": "0", "nonces": []}
    assert empty["account_value"] == empty["initial_requirement"] == "0"


def test_supply_and_app_queries(chain: Chain) -> None:
    supply = json.loads(chain.app.query("/supply", b"", 0, False).value)
    assert supply == {"total": "0"}  # nothing committed yet
    last = chain.run_block([])
    supply = json.loads(chain.app.query("/supply", b"", 0, False).value)
    assert supply == {"total": str(ALICE_FUNDS + BOB_FUNDS + CAROL_FUNDS)}
    app = json.loads(chain.app.query("/app", b"", 1, False).value)
    assert app == {"height": "1", "app_hash": last.app_hash.hex().upper()}


def test_query_errors(chain: Chain) -> None:
    chain.run_block([])
    chain.run_block([])
    old = chain.app.query("/supply", b"", 1, False)
    assert old.code == Code.HEIGHT_NOT_AVAILABLE
    assert old.log == "historical state is not kept: only height 2 is available"
    assert (old.height, old.codespace) == (2, CODESPACE)
    unknown = chain.app.query("/nope", b"", 0, False)
    assert unknown.code == Code.UNKNOWN_QUERY
    assert "unknown query path '/nope'" in unknown.log
    bad = chain.app.query("/accounts/xyz", b"", 0, False)
    assert bad.code == Code.INVALID_QUERY
    assert "invalid address" in bad.log
    assert len({int(code) for code in Code}) == len(Code)
    assert all(int(code) != 0 for code in Code)
