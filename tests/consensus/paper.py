"""The vote rules of Algorithm 1 of "The latest gossip on BFT consensus" (Buchman, Kwon,
Milosevic 2018) read literally, as a reference written apart from `consensus.rules`: the rule
tables check the machine's rules against it over every combination, and the simulator checks
every honest vote against it (tests/sim/checks.py).

The paper's lock is the value a process last precommitted and the round it did so; its
validity is valid(v); "2f + 1 prevotes" is +2/3 of the voting power.
"""

from __future__ import annotations

from consensus.rules import SeenProposal
from consensus.types import NIL_BLOCK_ID, BlockID


def prevote(
    round_p: int,
    proposal: SeenProposal | None,
    locked_round: int,
    locked_value: bytes | None,
    polka_at_vr: BlockID | None,
) -> BlockID:
    """What process p prevotes in round_p: lines 22-27 (a proposal without a proof-of-lock),
    28-33 (with one) and 57-60 (the propose timeout: nil). `locked_value` is a block hash;
    `polka_at_vr` is the block id +2/3 prevoted at the proposal's vr (None if none)."""
    if proposal is None:
        return NIL_BLOCK_ID
    v, vr = proposal.block_id, proposal.pol_round
    if vr == -1:
        accept = proposal.valid and (locked_round == -1 or locked_value == v.hash)
        return v if accept else NIL_BLOCK_ID
    has_pol = polka_at_vr is not None and polka_at_vr.hash == v.hash
    if has_pol and 0 <= vr < round_p:
        accept = proposal.valid and (locked_round <= vr or locked_value == v.hash)
        return v if accept else NIL_BLOCK_ID
    return NIL_BLOCK_ID  # the upon-rule of line 28 never fired: the propose timeout did


def precommit(
    polka: BlockID | None, locked_value: bytes | None, proposal_value: bytes | None, proposal_valid: bool
) -> BlockID:
    """What process p precommits in round_p: line 36 (+2/3 prevotes for a valid proposal v
    it holds: v), lines 44 and 61 (+2/3 for nil, or the prevote timeout: nil). A polka for the
    block p is locked on is a polka for a value it holds and found valid when it locked."""
    if polka is None or polka.is_nil():
        return NIL_BLOCK_ID
    if locked_value == polka.hash:
        return polka
    if proposal_value == polka.hash and proposal_valid:
        return polka
    return NIL_BLOCK_ID
