"""The vote rules, row by row from Algorithm 1 of "The latest gossip on BFT consensus" (lines
22-46), then against a reference written from the paper's text over every combination."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.rules import Precommit, SeenProposal, precommit, precommit_vote, prevote
from consensus.types import NIL_BLOCK_ID, BlockID, PartSetHeader
from tests.consensus import paper

A = BlockID(b"\xaa" * 32, PartSetHeader(1, b"\x0a" * 32))
B = BlockID(b"\xbb" * 32, PartSetHeader(1, b"\x0b" * 32))
NIL = NIL_BLOCK_ID
ROUND = 2


def seen(block: BlockID = A, pol_round: int = -1, valid: bool = True) -> SeenProposal:
    return SeenProposal(block_id=block, pol_round=pol_round, valid=valid)


# (what the row checks, proposal, locked round, locked block, +2/3 prevotes at pol_round, prevote)
PREVOTE_ROWS: list[tuple[str, SeenProposal | None, int, BlockID | None, BlockID | None, BlockID]] = [
    # line 57 (timeout propose): no proposal
    ("no proposal", None, -1, None, None, NIL),
    ("no proposal while locked", None, 1, A, None, NIL),
    # lines 22-27: pol_round = -1
    ("new block, not locked", seen(), -1, None, None, A),
    ("new block, invalid", seen(valid=False), -1, None, None, NIL),
    ("new block, locked on it", seen(), 1, A, None, A),
    ("new block, locked on it at round 0", seen(), 0, A, None, A),
    ("new block, locked on another", seen(), 1, B, None, NIL),
    ("new block, locked on another at round 0", seen(), 0, B, None, NIL),
    ("new block, invalid, locked on it", seen(valid=False), 1, A, None, NIL),
    # lines 28-33: pol_round = vr with +2/3 prevotes for the block at vr
    ("pol, not locked", seen(pol_round=1), -1, None, A, A),
    ("pol above the lock", seen(pol_round=1), 0, B, A, A),
    ("pol at the lock's round", seen(pol_round=1), 1, B, A, A),
    ("pol below the lock", seen(pol_round=0), 1, B, A, NIL),
    ("pol below the lock, locked on the block", seen(pol_round=0), 1, A, A, A),
    ("pol at round 0, not locked", seen(pol_round=0), -1, None, A, A),
    ("pol, invalid block", seen(pol_round=1, valid=False), -1, None, A, NIL),
    ("pol above the lock, invalid block", seen(pol_round=1, valid=False), 0, B, A, NIL),
    # ... and without them: a claimed proof-of-lock is not one
    ("pol claimed, no +2/3 at vr", seen(pol_round=1), -1, None, None, NIL),
    ("pol claimed above the lock, no +2/3 at vr", seen(pol_round=1), 0, B, None, NIL),
    ("pol claimed, locked on the block, no +2/3 at vr", seen(pol_round=1), 1, A, None, NIL),
    ("pol claimed, +2/3 for another block at vr", seen(pol_round=1), -1, None, B, NIL),
    ("pol claimed above the lock, +2/3 for another block", seen(pol_round=1), 0, B, B, NIL),
    ("pol claimed, +2/3 for nil at vr", seen(pol_round=1), -1, None, NIL, NIL),
    ("pol claimed, +2/3 for nil, locked on the block", seen(pol_round=0), 1, A, NIL, NIL),
    ("pol round not below the round", seen(pol_round=ROUND), -1, None, A, NIL),
    ("pol round above the round", seen(pol_round=ROUND + 1), -1, None, A, NIL),
    ("pol round below -1", seen(pol_round=-2), -1, None, A, NIL),
]


@pytest.mark.parametrize(
    ("proposal", "locked_round", "locked", "pol_majority", "expected"),
    [row[1:] for row in PREVOTE_ROWS],
    ids=[row[0] for row in PREVOTE_ROWS],
)
def test_prevote(
    proposal: SeenProposal | None,
    locked_round: int,
    locked: BlockID | None,
    pol_majority: BlockID | None,
    expected: BlockID,
) -> None:
    got = prevote(
        round_=ROUND,
        proposal=proposal,
        locked_round=locked_round,
        locked_hash=None if locked is None else locked.hash,
        pol_majority=pol_majority,
    )
    assert got == expected


def test_a_pol_of_the_same_hash_with_other_parts_counts_for_the_block() -> None:
    """The polka is matched by block hash (CometBFT's BlockID.Hash), the vote carries the
    proposal's whole block id."""
    other_parts = BlockID(A.hash, PartSetHeader(2, b"\x0c" * 32))
    got = prevote(
        round_=ROUND, proposal=seen(pol_round=1), locked_round=-1, locked_hash=None, pol_majority=other_parts
    )
    assert got == A


# (what the row checks, polka of this round, locked block, proposal block held, its validity, decision)
PRECOMMIT_ROWS: list[tuple[str, BlockID | None, BlockID | None, BlockID | None, bool, Precommit]] = [
    # line 61 (timeout prevote) and line 44 (+2/3 prevotes for nil)
    ("no polka", None, None, A, True, Precommit.NIL),
    ("no polka, locked", None, A, A, True, Precommit.NIL),
    ("polka for nil", NIL, None, A, True, Precommit.NIL),
    ("polka for nil, locked", NIL, A, A, True, Precommit.NIL),
    # line 36: +2/3 prevotes for the proposal's block
    ("polka for the locked block", A, A, A, True, Precommit.RELOCK),
    ("polka for the locked block, another proposal", A, A, B, True, Precommit.RELOCK),
    ("polka for the locked block, no proposal", A, A, None, False, Precommit.RELOCK),
    ("polka for the valid proposal", A, None, A, True, Precommit.LOCK),
    ("polka for the valid proposal, locked on another", A, B, A, True, Precommit.LOCK),
    ("polka for an invalid proposal", A, None, A, False, Precommit.INVALID),
    ("polka for an invalid proposal, locked on another", A, B, A, False, Precommit.INVALID),
    ("polka for a block not held", A, None, None, False, Precommit.MISSING),
    ("polka for a block not held, another proposal", A, None, B, True, Precommit.MISSING),
    ("polka for a block not held, locked on another", A, B, None, False, Precommit.MISSING),
    ("polka for a block not held, locked and proposed another", A, B, B, True, Precommit.MISSING),
]


@pytest.mark.parametrize(
    ("polka", "locked", "proposal", "valid", "expected"),
    [row[1:] for row in PRECOMMIT_ROWS],
    ids=[row[0] for row in PRECOMMIT_ROWS],
)
def test_precommit(
    polka: BlockID | None, locked: BlockID | None, proposal: BlockID | None, valid: bool, expected: Precommit
) -> None:
    got = precommit(
        polka=polka,
        locked_hash=None if locked is None else locked.hash,
        proposal_hash=None if proposal is None else proposal.hash,
        proposal_valid=valid,
    )
    assert got == expected


@pytest.mark.parametrize("decision", list(Precommit))
def test_precommit_vote_signs_the_polka_only_when_locking(decision: Precommit) -> None:
    locks = decision in (Precommit.RELOCK, Precommit.LOCK)
    assert precommit_vote(decision, A) == (A if locks else NIL)


# -- the same rules over every combination, against the paper's wording ------------------------


blocks = st.sampled_from([A, B])
locks = st.one_of(st.just((-1, None)), st.tuples(st.integers(0, 4), blocks))
proposals = st.one_of(
    st.none(),
    st.builds(seen, block=blocks, pol_round=st.integers(-1, 5), valid=st.booleans()),
)


@given(round_p=st.integers(0, 5), proposal=proposals, lock=locks, polka=st.sampled_from([None, NIL, A, B]))
def test_prevote_matches_the_paper(
    round_p: int, proposal: SeenProposal | None, lock: tuple[int, BlockID | None], polka: BlockID | None
) -> None:
    locked_round, locked_value = lock
    if locked_round >= round_p:
        locked_round = -1 if round_p == 0 else round_p - 1  # a lock is from an earlier round
    if locked_round == -1:
        locked_value = None
    got = prevote(
        round_=round_p,
        proposal=proposal,
        locked_round=locked_round,
        locked_hash=None if locked_value is None else locked_value.hash,
        pol_majority=polka,
    )
    locked_hash = None if locked_value is None else locked_value.hash
    assert got == paper.prevote(round_p, proposal, locked_round, locked_hash, polka)


@given(
    polka=st.sampled_from([None, NIL, A, B]),
    locked=st.sampled_from([None, A, B]),
    proposal=st.sampled_from([None, A, B]),
    valid=st.booleans(),
)
def test_precommit_matches_the_paper(
    polka: BlockID | None, locked: BlockID | None, proposal: BlockID | None, valid: bool
) -> None:
    locked_hash = None if locked is None else locked.hash
    proposal_hash = None if proposal is None else proposal.hash
    decision = precommit(
        polka=polka, locked_hash=locked_hash, proposal_hash=proposal_hash, proposal_valid=valid
    )
    assert precommit_vote(decision, polka) == paper.precommit(polka, locked_hash, proposal_hash, valid)
