"""The vote rules of Tendermint as pure functions: what an honest validator prevotes, what it
precommits and how its lock moves, given only what it has seen.

They are lines 22-46 of Algorithm 1 in "The latest gossip on BFT consensus" (Buchman, Kwon,
Milosevic 2018). `ConsensusMachine` gathers the inputs (its lock, the round's proposal, the
polkas in its vote sets) and carries the decision out; the table-driven tests of these functions
are the specification of the locking and proof-of-lock rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from consensus.types import NIL_BLOCK_ID, BlockID


@dataclass(frozen=True, slots=True, kw_only=True)
class SeenProposal:
    """The round's proposal as this validator holds it."""

    block_id: BlockID
    pol_round: int
    """-1, or the round of the proof-of-lock the proposer claims for the block."""
    valid: bool
    """The whole block is here, hashes to `block_id`, and both the chain rules and the
    application accept it (the paper's valid(v))."""


def prevote(
    *,
    round_: int,
    proposal: SeenProposal | None,
    locked_round: int,
    locked_hash: bytes | None,
    pol_majority: BlockID | None,
) -> BlockID:
    """The prevote of round `round_`: the proposal's block id, or nil.

    `pol_majority` is the block id (possibly nil) that +2/3 of the power prevoted at the
    proposal's `pol_round`, or None if no such majority has been seen.

    - no proposal, or an invalid block: nil;
    - pol_round = -1 (lines 22-27): the block if not locked, or locked on this very block;
    - pol_round = vr (lines 28-33), 0 <= vr < round_, with +2/3 prevotes for the block at vr:
      the block if locked at a round <= vr, or locked on this very block; without those prevotes,
      nil (the paper waits for them until the propose timeout; a node that prevotes has stopped
      waiting).
    """
    if proposal is None or not proposal.valid:
        return NIL_BLOCK_ID
    block_id = proposal.block_id
    if proposal.pol_round == -1:
        if locked_round == -1 or locked_hash == block_id.hash:
            return block_id
        return NIL_BLOCK_ID
    if not 0 <= proposal.pol_round < round_:
        return NIL_BLOCK_ID
    if pol_majority is None or pol_majority.hash != block_id.hash:
        return NIL_BLOCK_ID
    if locked_round <= proposal.pol_round or locked_hash == block_id.hash:
        return block_id
    return NIL_BLOCK_ID


class Precommit(Enum):
    """What a validator does on entering the precommit step of a round (lines 34-46 and the
    prevote timeout, line 61)."""

    NIL = "nil"
    """No +2/3 prevotes for one value, or +2/3 for nil: precommit nil, the lock stays."""
    RELOCK = "relock"
    """+2/3 prevoted the locked block: lock it again at this round and precommit it."""
    LOCK = "lock"
    """+2/3 prevoted the round's valid proposal block: lock it at this round and precommit it."""
    INVALID = "invalid"
    """+2/3 prevoted a block this validator holds and finds invalid: precommit nil, no lock."""
    MISSING = "missing"
    """+2/3 prevoted a block this validator does not hold: precommit nil and fetch the block."""


def precommit(
    *,
    polka: BlockID | None,
    locked_hash: bytes | None,
    proposal_hash: bytes | None,
    proposal_valid: bool,
) -> Precommit:
    """The precommit decision of a round: `polka` is the +2/3 majority of this round's
    prevotes (None if there is none), `proposal_hash` the hash of the complete proposal block
    held (None if none) and `proposal_valid` its validity (only read when that block is the
    polka's, so a caller may leave it False otherwise). A lock never moves to a block that has no
    polka in this round, and never goes away within a height."""
    if polka is None or polka.is_nil():
        return Precommit.NIL
    if locked_hash is not None and locked_hash == polka.hash:
        return Precommit.RELOCK
    if proposal_hash is not None and proposal_hash == polka.hash:
        return Precommit.LOCK if proposal_valid else Precommit.INVALID
    return Precommit.MISSING


def precommit_vote(decision: Precommit, polka: BlockID | None) -> BlockID:
    """The block id a precommit decision signs."""
    if decision in (Precommit.RELOCK, Precommit.LOCK):
        assert polka is not None
        return polka
    return NIL_BLOCK_ID
