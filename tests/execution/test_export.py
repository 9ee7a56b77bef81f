"""An exported state (`app_state.state`, `derivd export`) starts a new chain that continues the old
one: same app hash at its genesis, same results and hashes for the same next block."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consensus.app import FinalizeBlockRequest, InitChainRequest, ValidatorUpdate
from execution.app import ExchangeApp
from execution.genesis_state import AppStateError, exported_app_state, load_app_state
from execution.validators import RegisteredValidator
from primitives.batch_verify import BatchVerifier
from storage import schema
from storage.db import Database
from storage.statetree import StateTree
from tests.execution.chain import CHAIN_ID, Chain, key
from tests.execution.exchange_helpers import (
    BUY,
    ETH,
    IOC,
    SELL,
    all_events,
    assert_ok,
    btc,
    cancel_client,
    place,
    usd,
)
from tests.execution.test_exchange import A, B, C, run_ok


def _exported(chain: Chain) -> tuple[int, dict[str, Any]]:
    height = chain.height
    _, records = StateTree(chain.db).subtree(height, b"")
    return height, exported_app_state(height, records)


def _new_app(
    path: Path, app_state: dict[str, Any], initial_height: int, validators: tuple[ValidatorUpdate, ...] = ()
) -> tuple[ExchangeApp, bytes]:
    app = ExchangeApp(Database(path), CHAIN_ID, BatchVerifier(workers=1))
    request = InitChainRequest(CHAIN_ID, 0, initial_height, validators, json.dumps(app_state).encode())
    return app, app.init_chain(request).app_hash


def test_an_exported_state_continues_the_chain(ex: Chain, tmp_path: Path) -> None:
    run_ok(
        ex,
        ex.tx(
            B, place(SELL, btc(5000), usd(65_000), client_id=7), place(SELL, btc(5), usd(66_000), client_id=8)
        ),
    )
    run_ok(
        ex,
        ex.tx(
            A,
            place(BUY, btc(1000), usd(65_000), IOC),
            place(BUY, btc(1), usd(3_000), market=ETH, client_id=3),
        ),
    )
    height, app_state = _exported(ex)
    app, genesis_hash = _new_app(tmp_path / "new", app_state, height + 1)
    assert genesis_hash == ex.app_hashes[-1]
    # the next block cancels by client id (the rebuilt index) and trades against the resting order
    txs = (
        ex.tx(B, cancel_client(8)),
        ex.tx(C, place(BUY, btc(100), usd(65_000), IOC)),
        ex.tx(A, cancel_client(3, ETH)),
    )
    old = ex.finalize(txs)
    ex.commit()
    new = app.finalize_block(FinalizeBlockRequest(height + 1, ex.time, b"\x11" * 32, b"\x22" * 20, txs, ()))
    assert_ok(old.tx_results)
    assert len(all_events(old.tx_results, "order_filled")) == 1
    assert new == old
    app.close()


def test_an_exported_state_must_be_continued(ex: Chain, tmp_path: Path) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(5000), usd(65_000), client_id=7)))
    height, app_state = _exported(ex)
    with pytest.raises(ValueError, match=f"starts a chain at initial height {height + 1}, not 1"):
        _new_app(tmp_path / "a", app_state, 1)
    validator = ValidatorUpdate(key(9).public_key.raw, 10)
    with pytest.raises(ValueError, match="the genesis validators are not the exported state's validators"):
        _new_app(tmp_path / "b", app_state, height + 1, (validator,))


def _state_error(section: Any) -> str:
    with pytest.raises(AppStateError) as info:
        load_app_state(json.dumps(section).encode())
    return str(info.value)


def test_a_malformed_exported_state_is_refused() -> None:
    good = [schema.account_key(b"\x01" * 20).hex(), "00"]
    assert (
        load_app_state(json.dumps({"state": {"height": "4", "records": [good]}}).encode()).exported
        is not None
    )
    assert "remove accounts" in _state_error({"state": {"height": 4, "records": []}, "accounts": []})
    assert _state_error({"state": {"records": []}}) == "app_state.state.height: missing"
    cases = {
        "app_state.state.records[0]: must be [key, value] in hex": [[good[0]]],
        "app_state.state.records[0][0]: must be a string of hex digits": [["zz", "00"]],
        "app_state.state.records[0][1]: must not be empty": [[good[0], ""]],
        "is not a key of the application's state tree": [[b"c:state".hex(), "00"]],
        "app_state.state.records[1][0]: keys must be strictly ascending": [good, good],
    }
    for message, records in cases.items():
        assert message in _state_error({"state": {"height": 4, "records": records}})
    for outside in (schema.APP_META, schema.APP_BLOCK_TIME, schema.client_order_key(b"\x01" * 20, 1, 1)):
        assert "not a key of the application's state tree" in _state_error(
            {"state": {"height": 4, "records": [[outside.hex(), "00"]]}}
        )


def test_registry_entries_without_power_are_not_genesis_validators(ex: Chain, tmp_path: Path) -> None:
    ex.run_block([])
    height, app_state = _exported(ex)
    voting, retired = (
        RegisteredValidator(key(8).public_key.raw, 10),
        RegisteredValidator(key(9).public_key.raw, 0),
    )
    records = app_state["state"]["records"]
    for entry in (voting, retired):
        records.append([schema.validator_key(entry.address.raw).hex(), entry.encode().hex()])
    records.sort()
    _, genesis_hash = _new_app(
        tmp_path / "new", app_state, height + 1, (ValidatorUpdate(voting.pub_key, 10),)
    )
    assert genesis_hash != ex.app_hashes[-1]  # another state: two more registry entries
