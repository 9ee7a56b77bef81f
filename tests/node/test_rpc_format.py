"""The CometBFT text forms `consensus_state` uses (`node.rpc`): votes and vote bit arrays."""

from __future__ import annotations

from typing import cast

from consensus.types import BlockID, PartSetHeader, Vote, VoteType
from consensus.validators import ValidatorSet
from consensus.votes import VoteSet
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
