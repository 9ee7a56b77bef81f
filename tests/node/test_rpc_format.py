"""CometBFT's forms (`node.rpc`, `node.jsonfmt`): the text of votes and vote bit arrays that
`consensus_state` shows, and the JSON of evidence."""

from __future__ import annotations

from typing import cast

import pytest

from consensus.evidence import DuplicateVoteEvidence
from consensus.types import BlockID, PartSetHeader, Vote, VoteType
from consensus.validators import ValidatorSet
from consensus.votes import VoteSet
from node import jsonfmt
from node.rpc import _bit_array_string, _vote_string

NS = 1_700_000_000 * 10**9 + 123_456_789


def test_a_vote_reads_as_cometbft_prints_it() -> None:
    vote = Vote(
        type=VoteType.PRECOMMIT,
        height=12,
        round=3,
        block_id=BlockID(bytes.fromhex("ab" * 32), PartSetHeader(1, b"\x01" * 32)),
        timestamp=NS,
        validator_address=bytes.fromhex("12" * 20),
        validator_index=4,
        signature=b"\x34" * 64,
    )
    assert _vote_string(vote) == (
        "Vote{4:121212121212 12/03/2(Precommit) ABABABABABAB 343434343434 000000000000 "
        "@ 2023-11-14T22:13:20.123456789Z}"
    )
    assert _vote_string(None) == "nil-Vote"


class _Votes:
    """The two things `_bit_array_string` reads of a vote set."""

    def __init__(self, voted: dict[int, int]) -> None:
        self._voted = voted
        self.sum = sum(voted.values())

    def get(self, index: int) -> object | None:
        return object() if index in self._voted else None


class _Validators:
    def __init__(self, powers: list[int]) -> None:
        self.total_power = sum(powers)
        self._n = len(powers)

    def __len__(self) -> int:
        return self._n


def test_a_vote_bit_array_reads_as_cometbft_prints_it() -> None:
    validators = cast(ValidatorSet, _Validators([10, 20, 30, 40]))
    assert _bit_array_string(cast(VoteSet, _Votes({0: 10, 3: 40})), validators) == "BA{4:x__x} 50/100 = 0.50"
    assert _bit_array_string(None, validators) == "BA{4:____} 0/100 = 0.00"


def test_evidence_json_reads_back() -> None:
    """CometBFT's DuplicateVoteEvidence JSON (block evidence, broadcast_evidence) parses back to
    the same evidence; a wrong kind or field is named."""
    votes = [
        Vote(
            type=VoteType.PREVOTE,
            height=7,
            round=1,
            block_id=BlockID(bytes([n]) * 32, PartSetHeader(2, bytes([n + 1]) * 32)),
            timestamp=NS,
            validator_address=bytes.fromhex("12" * 20),
            validator_index=3,
            signature=bytes([n]) * 64,
        )
        for n in (1, 2)
    ]
    evidence = DuplicateVoteEvidence(votes[0], votes[1], 100, 10, NS)
    shown = jsonfmt.evidence(evidence)
    assert shown["type"] == "tendermint/DuplicateVoteEvidence"
    assert shown["value"]["vote_a"]["height"] == "7" and shown["value"]["TotalVotingPower"] == "100"
    assert jsonfmt.parse_evidence(shown) == evidence
    with pytest.raises(jsonfmt.ShapeError, match="only tendermint/DuplicateVoteEvidence"):
        jsonfmt.parse_evidence({**shown, "type": "tendermint/LightClientAttackEvidence"})
    broken = {**shown, "value": {**shown["value"], "vote_b": {**shown["value"]["vote_b"], "type": 9}}}
    with pytest.raises(jsonfmt.ShapeError, match=r"vote_b\.type"):
        jsonfmt.parse_evidence(broken)
