"""Known rule-breaking changes of the vote decisions, applied by patching `consensus.rules`, so
that the suite can show the simulator catching them (`python -m tests.sim --mutant NAME`).

- prevote-ignores-lock: prevote any valid proposal, whatever the lock (lines 22-33 without the
  lock condition);
- pol-without-polka: believe a proposal's proof-of-lock round without +2/3 prevotes for its block
  at that round (line 28 without its second condition).
"""

from __future__ import annotations

from collections.abc import Callable

from consensus import rules
from consensus.rules import SeenProposal
from consensus.types import NIL_BLOCK_ID, BlockID

_real_prevote = rules.prevote


def _prevote_ignores_lock(
    *,
    round_: int,
    proposal: SeenProposal | None,
    locked_round: int,
    locked_hash: bytes | None,
    pol_majority: BlockID | None,
) -> BlockID:
    if proposal is None or not proposal.valid:
        return NIL_BLOCK_ID
    return proposal.block_id


def _pol_without_polka(
    *,
    round_: int,
    proposal: SeenProposal | None,
    locked_round: int,
    locked_hash: bytes | None,
    pol_majority: BlockID | None,
) -> BlockID:
    if proposal is not None and proposal.pol_round >= 0:
        pol_majority = proposal.block_id
    return _real_prevote(
        round_=round_,
        proposal=proposal,
        locked_round=locked_round,
        locked_hash=locked_hash,
        pol_majority=pol_majority,
    )


MUTANTS: dict[str, Callable[..., BlockID]] = {
    "prevote-ignores-lock": _prevote_ignores_lock,
    "pol-without-polka": _pol_without_polka,
}


def apply(name: str | None) -> None:
    """Patch the named mutant in (None restores the real rules)."""
    rules.prevote = _real_prevote if name is None else MUTANTS[name]
