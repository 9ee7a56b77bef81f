"""The private validator never signs two different things for one (height, round, step)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from consensus.privval import DoubleSignError, FilePrivValidator, PrivValError
from consensus.types import BlockID, PartSetHeader, Proposal, Vote, VoteType
from primitives.keys import verify

CHAIN = "test-chain"
BLOCK_A = BlockID(b"\xaa" * 32, PartSetHeader(1, b"\x01" * 32))
BLOCK_B = BlockID(b"\xbb" * 32, PartSetHeader(1, b"\x02" * 32))


def make(tmp_path: Path) -> FilePrivValidator:
    return FilePrivValidator.generate(tmp_path / "key.json", tmp_path / "state.json")


def vote(
    pv: FilePrivValidator, height: int, round_: int, kind: VoteType, block: BlockID, ts: int = 1000
) -> Vote:
    return Vote(kind, height, round_, block, ts, pv.address, 0)


def test_signs_and_persists_before_returning(tmp_path: Path) -> None:
    pv = make(tmp_path)
    signed = pv.sign_vote(CHAIN, vote(pv, 5, 0, VoteType.PREVOTE, BLOCK_A))
    assert verify(pv.public_key.raw, signed.sign_bytes(CHAIN), signed.signature)
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["height"] == "5" and state["round"] == 0 and state["step"] == 2
    assert bytes.fromhex(state["signbytes"]) == signed.sign_bytes(CHAIN)


@pytest.mark.parametrize(
    ("height", "round_", "kind"),
    [(4, 0, VoteType.PRECOMMIT), (5, 0, VoteType.PREVOTE), (5, 1, VoteType.PREVOTE)],
)
def test_refuses_regression(tmp_path: Path, height: int, round_: int, kind: VoteType) -> None:
    pv = make(tmp_path)
    pv.sign_vote(CHAIN, vote(pv, 5, 1, VoteType.PRECOMMIT, BLOCK_A))
    with pytest.raises(DoubleSignError, match="regression"):
        pv.sign_vote(CHAIN, vote(pv, height, round_, kind, BLOCK_A))


def test_refuses_conflicting_vote_also_after_restart(tmp_path: Path) -> None:
    pv = make(tmp_path)
    pv.sign_vote(CHAIN, vote(pv, 7, 2, VoteType.PREVOTE, BLOCK_A))
    with pytest.raises(DoubleSignError, match="conflicting"):
        pv.sign_vote(CHAIN, vote(pv, 7, 2, VoteType.PREVOTE, BLOCK_B))
    restarted = FilePrivValidator.load(tmp_path / "key.json", tmp_path / "state.json")
    with pytest.raises(DoubleSignError, match="conflicting"):
        restarted.sign_vote(CHAIN, vote(restarted, 7, 2, VoteType.PREVOTE, BLOCK_B))


def test_same_vote_or_new_timestamp_returns_the_stored_signature(tmp_path: Path) -> None:
    pv = make(tmp_path)
    first = pv.sign_vote(CHAIN, vote(pv, 3, 0, VoteType.PRECOMMIT, BLOCK_A, ts=1000))
    again = pv.sign_vote(CHAIN, vote(pv, 3, 0, VoteType.PRECOMMIT, BLOCK_A, ts=1000))
    later = pv.sign_vote(CHAIN, vote(pv, 3, 0, VoteType.PRECOMMIT, BLOCK_A, ts=9999))
    assert again == first
    assert later.signature == first.signature and later.timestamp == 1000
    assert verify(pv.public_key.raw, later.sign_bytes(CHAIN), later.signature)


def test_proposals_are_guarded_too(tmp_path: Path) -> None:
    pv = make(tmp_path)
    proposal = Proposal(9, 0, -1, BLOCK_A, 500)
    signed = pv.sign_proposal(CHAIN, proposal)
    assert verify(pv.public_key.raw, signed.sign_bytes(CHAIN), signed.signature)
    with pytest.raises(DoubleSignError):
        pv.sign_proposal(CHAIN, replace(proposal, block_id=BLOCK_B))
    # the prevote of the same round comes after the proposal step and is allowed
    pv.sign_vote(CHAIN, vote(pv, 9, 0, VoteType.PREVOTE, BLOCK_B))


def test_generate_refuses_to_overwrite_and_bad_state_file_is_named(tmp_path: Path) -> None:
    make(tmp_path)
    with pytest.raises(PrivValError, match="refusing to overwrite"):
        make(tmp_path)
    (tmp_path / "state.json").write_text("{not json")
    with pytest.raises(PrivValError, match=r"state\.json"):
        FilePrivValidator.load(tmp_path / "key.json", tmp_path / "state.json")
