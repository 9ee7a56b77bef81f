"""The genesis `bridge` section: what it refuses (each error names its path), and an exported state
that carries the bridge's records to a new chain."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from consensus.app import InitChainRequest
from execution.app import ExchangeApp
from execution.bridge.evm import format_evm_address
from execution.genesis_state import AppStateError, exported_app_state, parse_app_state
from execution.tx import Withdraw
from primitives.batch_verify import BatchVerifier
from storage.db import Database, WriteBatch
from storage.statetree import StateTree
from tests.execution.bridge_helpers import (
    GENESIS_VALIDATORS,
    RECIPIENT_EVM,
    bridge_chain,
    bridge_section,
    claim,
    evm,
    validator_address,
    vote,
)
from tests.execution.chain import CHAIN_ID, GENESIS_TIME, address, key


def _with(change: dict[str, Any], key_change: dict[str, Any] | None = None) -> dict[str, Any]:
    section = bridge_section()
    section.update(change)
    if key_change is not None:
        section["keys"][1].update(key_change)
    return {"bridge": section}


@pytest.mark.parametrize(
    ("app_state", "message"),
    [
        (_with({"contract": "0x1234"}), "app_state.bridge.contract: an EVM address is 0x and 40 hex digits"),
        (_with({"token": "0x" + "00" * 20}), "app_state.bridge.token: must not be the zero address"),
        (_with({"token": 5}), "app_state.bridge.token: must be 0x and 40 hex digits"),
        (_with({"confirmations": 0}), "app_state.bridge.confirmations: must be a positive integer"),
        (_with({"min_deposit": "5"}), "app_state.bridge.min_deposit: must be a JSON integer"),
        (_with({"min_withdrawal": -1}), "app_state.bridge.min_withdrawal: must be a positive integer"),
        (_with({"extra": 1}), "app_state.bridge.extra: unknown field"),
        (_with({"keys": {}}), "app_state.bridge.keys: must be a non-empty JSON array"),
        (_with({"keys": []}), "app_state.bridge.keys: must be a non-empty JSON array"),
        (
            _with({}, {"evm_address": format_evm_address(evm(0))}),
            r"app_state.bridge.keys[1].evm_address: already the key of app_state.bridge.keys[0]",
        ),
        (
            _with({}, {"validator": validator_address(0).upper()}),
            "app_state.bridge.keys[1].validator: duplicate of app_state.bridge.keys[0]",
        ),
        (
            _with({}, {"evm_address": "0x" + "00" * 20}),
            "app_state.bridge.keys[1].evm_address: must not be the zero",
        ),
        (_with({}, {"validator": "xyz"}), "app_state.bridge.keys[1].validator: must be 40 hex digits"),
        (_with({}, {"power": 5}), "app_state.bridge.keys[1].power: unknown field"),
    ],
)
def test_bad_bridge_sections_are_refused(app_state: dict[str, Any], message: str) -> None:
    with pytest.raises(AppStateError) as raised:
        parse_app_state(app_state)
    assert str(raised.value).startswith(message), str(raised.value)


def test_a_missing_field_is_refused() -> None:
    section = bridge_section()
    del section["token"]
    with pytest.raises(AppStateError, match=r"app_state\.bridge\.token: missing"):
        parse_app_state({"bridge": section})
    section["token"] = format_evm_address(bytes(range(1, 21)))
    assert parse_app_state({"bridge": section}).bridge is not None
    del section["keys"]
    with pytest.raises(AppStateError, match=r"app_state\.bridge\.keys: missing"):
        parse_app_state({"bridge": section})


def test_a_key_of_an_address_that_is_not_a_genesis_validator_is_refused(tmp_path: Path) -> None:
    section = bridge_section()
    section["keys"][2]["validator"] = address(0).upper()
    with pytest.raises(
        AppStateError, match=r"app_state\.bridge\.keys\[2\]\.validator: .* is not a genesis validator"
    ):
        bridge_chain(tmp_path / "db", bridge=section)


def test_an_exported_state_carries_the_bridge(tmp_path: Path) -> None:
    chain = bridge_chain(tmp_path / "db")
    chain.run_block([vote(chain, 3, claim(1)), vote(chain, 2, claim(1)), vote(chain, 0, claim(2))])
    chain.run_block([chain.tx(key(0), Withdraw(RECIPIENT_EVM, 5_000))])
    height = chain.height
    _, records = StateTree(chain.db).subtree(height, b"")
    app_state = exported_app_state(height, records)
    db = Database(tmp_path / "new")
    verifier = BatchVerifier(workers=1)
    app = ExchangeApp(db, CHAIN_ID, verifier)
    request = InitChainRequest(
        CHAIN_ID, GENESIS_TIME, height + 1, GENESIS_VALIDATORS, json.dumps(app_state).encode()
    )
    assert app.init_chain(request).app_hash == chain.app_hashes[-1]
    batch = WriteBatch()
    app.commit(batch)
    db.write(batch)
    paths = ["/bridge", f"/bridge/owners/{address(0)}", "/bridge/valsets/0"]
    old = [json.loads(chain.app.query(path, b"", 0, False).value) for path in paths]
    assert old[0]["deposited"] == "50000" and old[0]["pending_deposits"] == "1"
    assert [json.loads(app.query(path, b"", 0, False).value) for path in paths] == old
    verifier.close()
    db.close()
    chain.close()
