"""Application queries: accounts, supply, app, heights and errors; `/key` with proofs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consensus.app import QueryResult
from execution.accounts import Account
from execution.codes import CODESPACE, Code
from execution.tx import STANDARD_FEES, ActionKind, Tx
from primitives.ics23 import ProofError, decode_proof, verify_membership, verify_non_membership
from storage import schema
from storage.db import Database
from storage.snapshot import CHUNKS, Restore
from storage.statetree import PROOF_OP_TYPE, PROOF_SPEC, StateTree
from tests.execution.chain import Chain, address, key
from tests.execution.conftest import ALICE_FUNDS, BOB_FUNDS, CAROL_FUNDS

FEE = STANDARD_FEES[ActionKind.TRANSFER]


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
        "balance": str(ALICE_FUNDS - 5 - Tx.decode(raw).fee),
        "nonces": [str(nonce)],
    }
    assert value["positions"] == value["orders"] == []
    assert (
        value["collateral"]
        == value["account_value"]
        == value["free_collateral"]
        == str(ALICE_FUNDS - 5 - FEE)
    )
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
    assert old.log == "past heights are kept for /key queries only: this path answers at height 2"
    assert (old.height, old.codespace) == (2, CODESPACE)
    unknown = chain.app.query("/nope", b"", 0, False)
    assert unknown.code == Code.UNKNOWN_QUERY
    assert "unknown query path '/nope'" in unknown.log
    bad = chain.app.query("/accounts/xyz", b"", 0, False)
    assert bad.code == Code.INVALID_QUERY
    assert "invalid address" in bad.log
    assert len({int(code) for code in Code}) == len(Code)
    assert all(int(code) != 0 for code in Code)


def _proof(result: QueryResult) -> bytes:
    ops = result.proof_ops
    assert len(ops) == 1 and ops[0].type == PROOF_OP_TYPE
    return ops[0].data


def test_key_queries_at_past_heights_with_proofs(chain: Chain) -> None:
    account = schema.account_key(address(0).raw)
    first = chain.run_block([chain.transfer(key(0), address(1), 5)])
    second = chain.run_block([chain.transfer(key(0), address(1), 7)])
    for height, app_hash, balance in [
        (1, first.app_hash, ALICE_FUNDS - 5 - FEE),
        (2, second.app_hash, ALICE_FUNDS - 12 - 2 * FEE),
    ]:
        result = chain.app.query("/key", account, height, True)
        assert (result.code, result.height, result.key) == (0, height, account)
        assert Account.decode(result.value).balance == balance
        verify_membership(PROOF_SPEC, app_hash, decode_proof(_proof(result)), account, result.value)
    latest = chain.app.query("/key", account, 0, False)
    assert latest.height == 2 and latest.proof_ops == ()
    with_first_root = decode_proof(_proof(chain.app.query("/key", account, 2, True)))
    with pytest.raises(ProofError, match="another root"):
        verify_membership(PROOF_SPEC, first.app_hash, with_first_root, account, latest.value)
    absent = schema.account_key(address(9).raw)
    missing = chain.app.query("/key", absent, 0, True)
    assert (missing.code, missing.value) == (0, b"")
    verify_non_membership(PROOF_SPEC, second.app_hash, decode_proof(_proof(missing)), absent)


def test_key_query_errors_and_pruned_heights(chain: Chain) -> None:
    chain.app.state_versions = 2
    for _ in range(4):
        chain.run_block([])
    account = schema.account_key(address(0).raw)
    assert chain.app.query("/key", account, 3, True).code == 0
    pruned = chain.app.query("/key", account, 2, True)
    assert pruned.code == Code.HEIGHT_NOT_AVAILABLE
    assert pruned.log == "height 2: the state tree does not keep version 2"
    future = chain.app.query("/key", account, 5, False)
    assert (future.code, future.log) == (Code.HEIGHT_NOT_AVAILABLE, "height 5 is not committed yet (last 4)")
    empty = chain.app.query("/key", b"", 0, False)
    assert (empty.code, empty.log) == (Code.INVALID_QUERY, "/key needs the state key in data")


def test_snapshots_are_taken_kept_and_restore_the_state(chain: Chain, tmp_path: Path) -> None:
    chain.app.snapshot_interval, chain.app.snapshot_keep_recent, chain.app.state_versions = 2, 2, 1
    for i in range(7):
        chain.run_block([chain.transfer(key(0), address(1), i + 1)])
    snapshots = chain.app.snapshots()
    assert [s.height for s in snapshots] == [4, 6]
    assert [s.root for s in snapshots] == [chain.app_hashes[3], chain.app_hashes[5]]
    assert chain.app.snapshot_chunk(2, 0) is None and chain.app.snapshot_chunk(6, CHUNKS) is None
    # state_versions 1 keeps height 7 alone, but the oldest kept snapshot keeps every version from 4
    assert chain.app.query("/key", b"a:supply", 4, False).code == 0
    assert chain.app.query("/key", b"a:supply", 3, False).code == Code.HEIGHT_NOT_AVAILABLE
    manifest = snapshots[1]
    manifest.check(chain.app_hashes[5])
    db = Database(tmp_path / "restored")
    restore = Restore(StateTree(db), manifest)
    for index in range(CHUNKS):
        chunk = chain.app.snapshot_chunk(6, index)
        assert chunk is not None
        restore.add(index, chunk)
    db.write(restore.finish())
    restored = StateTree(db)
    account = schema.account_key(address(0).raw)
    assert restored.root_hash == chain.app_hashes[5]
    assert restored.get(account, 6) == chain.app.query("/key", account, 6, False).value == db.get(account)


def test_pruning_bounds_the_stored_tree(chain: Chain) -> None:
    """With state_versions 3, the tree's stored nodes stop growing with the heights (the state
    itself does not grow: transfers among the same accounts)."""
    chain.app.state_versions = 3

    def stored() -> int:
        return sum(1 for _ in chain.db.iterate(schema.STATE_NODE_PREFIX))

    counts = []
    for i in range(60):
        chain.run_block([chain.transfer(key(i % 3), address((i + 1) % 3), 1)])
        if i in (19, 59):
            counts.append(stored())
    assert counts[1] <= counts[0] + 2, counts
    assert sum(1 for _ in chain.db.iterate(schema.STATE_ROOT_PREFIX)) == 3
