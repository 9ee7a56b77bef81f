"""The light proxy's checks against a primary that lies (node.light_proxy.answer over a fake
primary serving a signed chain and a state tree)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from consensus.app import ProofOp, QueryResult
from consensus.light import LightError, TrustOptions
from node import jsonfmt
from node.light import Anchor
from node.light_proxy import LightSession, answer, stored_trust
from primitives.ics23 import ProofError, encode_proof
from storage.db import Database
from storage.statetree import PROOF_OP_TYPE, StateTree
from tests.consensus.light_chain import CHAIN, LinkedChain, vset

OPTIONS = TrustOptions(trusting_period=100 * 365 * 24 * 3600 * 10**9)
STATE = {b"a:x": b"1", b"a:y": b"2"}


class FakePrimary:
    """A node's RPC over `chain` (blocks 1-4) and `tree` (version 3: block 4 carries its root)."""

    def __init__(self, chain: LinkedChain, tree: StateTree) -> None:
        self.chain, self.tree = chain, tree
        self.lie_value: bytes | None = None

    def __call__(self, method: str, **params: Any) -> Any:
        if method == "status":
            return {
                "sync_info": {"latest_block_height": str(self.chain.top)},
                "node_info": {"network": CHAIN},
            }
        if method == "commit":
            block = self.chain.light_block(int(params["height"]))
            return {
                "signed_header": {
                    "header": jsonfmt.header(block.header),
                    "commit": jsonfmt.commit(block.commit),
                }
            }
        if method == "validators":
            vals = jsonfmt.validator_list(self.chain.light_block(int(params["height"])).validators)
            return {
                "block_height": params["height"],
                "validators": vals,
                "count": str(len(vals)),
                "total": str(len(vals)),
            }
        assert method == "abci_query" and params["path"] == "/key"
        key = bytes.fromhex(params["data"].removeprefix("0x"))
        value = self.tree.get(key, 3) or b""
        op = ProofOp(type=PROOF_OP_TYPE, key=key, data=encode_proof(self.tree.prove(key, 3)))
        shown = self.lie_value if self.lie_value is not None else value
        return {
            "response": jsonfmt.query_result(QueryResult(key=key, value=shown, height=3, proof_ops=(op,)))
        }


@pytest.fixture
def primary(tmp_path: Path) -> FakePrimary:
    tree = StateTree(Database(tmp_path))
    tree.apply(3, STATE.items())
    return FakePrimary(LinkedChain(vset(range(4)), 4, {4: tree.root_at(3)}), tree)


def _session(primary: FakePrimary, anchor_height: int = 1) -> LightSession:
    return LightSession(
        primary, Anchor(block=primary.chain.light_block(anchor_height), source="test"), OPTIONS
    )


def _query(session: LightSession, key: bytes) -> Any:
    return answer(session, "abci_query", {"path": "/key", "data": "0x" + key.hex(), "height": "0"})


def test_honest_answers_pass(primary: FakePrimary) -> None:
    session = _session(primary)
    present = _query(session, b"a:x")["response"]
    assert present["value"] == "MQ==" and present["proofOps"]["ops"][0]["type"] == PROOF_OP_TYPE
    assert _query(session, b"a:absent")["response"]["value"] is None
    assert answer(session, "header", {"height": "3"}) == {
        "header": jsonfmt.header(primary.chain.blocks[3].header)
    }
    shown = answer(session, "validators", {"height": "2"})
    assert shown["total"] == "4" and shown["validators"] == jsonfmt.validator_list(
        primary.chain.blocks[2].validators
    )


def test_a_lying_value_is_refused(primary: FakePrimary) -> None:
    primary.lie_value = b"9"
    with pytest.raises(ProofError, match="another value"):
        _query(_session(primary), b"a:x")
    primary.lie_value = b""  # "absent", with the proof of a present key
    with pytest.raises(ProofError, match="cannot show that a key is absent"):
        _query(_session(primary), b"a:x")


def test_a_header_signed_by_strangers_is_refused(primary: FakePrimary) -> None:
    strangers = vset(range(4, 8))
    block = primary.chain.blocks[4]
    primary.chain.forge(4, validators_hash=strangers.hash())
    forged = primary.chain.blocks[4]
    primary.chain.blocks[4] = type(block)(header=forged.header, commit=forged.commit, validators=strangers)
    with pytest.raises(LightError):
        _query(_session(primary), b"a:x")


def test_heights_below_the_anchor_follow_the_hash_chain(primary: FakePrimary) -> None:
    session = _session(primary, anchor_height=4)
    assert answer(session, "header", {"height": "2"})["header"]["height"] == "2"
    other = _session(primary, anchor_height=4)
    primary.chain.forge(3, app_hash=b"\x07" * 32)
    with pytest.raises(LightError, match="block 3 is not the one block 4 follows"):
        answer(other, "header", {"height": "1"})


def test_what_cannot_be_verified_is_refused(primary: FakePrimary) -> None:
    session = _session(primary)
    with pytest.raises(ValueError, match="does not serve 'block'"):
        answer(session, "block", {"height": "1"})
    with pytest.raises(ValueError, match="only /key queries carry a proof"):
        answer(session, "abci_query", {"path": "/markets"})


def test_the_trusted_block_is_kept_for_the_next_start(primary: FakePrimary, tmp_path: Path) -> None:
    store = tmp_path / "light-trust.json"
    assert stored_trust(store) is None
    session = LightSession(primary, Anchor(block=primary.chain.light_block(1), source="test"), OPTIONS, store)
    assert stored_trust(store) == (1, primary.chain.blocks[1].header.hash())
    session.verified(4)
    assert stored_trust(store) == (4, primary.chain.blocks[4].header.hash())
    store.write_text("{}")
    with pytest.raises(ValueError, match="not a light client trust record"):
        stored_trust(store)
