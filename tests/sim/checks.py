"""The simulator's safety monitor: properties checked after every event a node handles, so a
run stops at the first step that breaks one, with what broke.

- agreement: no two honest nodes commit different blocks at one height;
- validity: every committed block is valid on the state before it, with a commit that proves it;
- no honest double-sign: an honest validator signs one vote per (height, round, type) and one
  proposal per (height, round);
- lock monotonicity: within a height an honest node's locked round never goes down, its locked
  block changes only with a higher locked round, and a restart from its WAL gives the lock back;
- the lock it holds is the one its precommits show (lines 36-38 of the paper): after every step,
  an honest node's (locked round, locked block) is its last precommit for a block at the height,
  or none; a lock kept at an older round on a relock is caught the step it happens;
- the valid value (lines 36-42), after every step: a block with +2/3 prevotes at the valid round,
  carried by its own parts, at or above the lock and not above the node's round, and the
  proposal of the node's round as soon as it holds that with +2/3 prevotes for it;
- the locking rules, judged from what was signed and sent (byzantine messages included), with
  an honest node's lock being its last precommit for a block (round lr, block L): an honest
  precommit for B at round r needs +2/3 prevotes for B at r; an honest prevote for B at round r
  needs a proposal of B at r with proof-of-lock round -1 and no lock on another block (line 22),
  or with a round vr, lr <= vr < r or L = B, and +2/3 prevotes for B at vr (line 28); an honest
  proposal naming a proof-of-lock round needs +2/3 prevotes for its block there, and an honest
  proposer locked at round lr proposes its valid value, whose round is at least lr (its locked
  block if equal: lines 14-16 and 36-42). A node that ignores its lock, or believes a forged
  proof-of-lock, is caught the first time it does so, fork or no fork;
- the vote rules exactly: each vote an honest node decides on is the one the paper's rules
  (tests/consensus/paper.py) give for what it holds at that moment (its proposal, judged valid
  apart from the machine, and the prevotes it has seen) and its lock as its precommits show
  it, so a node that votes nil where the rules say vote (or the reverse) is caught as well.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from consensus.machine import ConsensusMachine
from consensus.rules import SeenProposal
from consensus.state import BlockError, ChainState, validate_block
from consensus.types import Block, BlockID, Commit, PartSet, Proposal, Vote, VoteType
from consensus.validators import ValidatorSet
from consensus.votes import CommitError, SignatureCheck, verify_commit
from tests.consensus import paper

Validity = Callable[[Block], bool]
"""Whether a block is valid on a node's state, judged apart from its machine."""


class Violation(Exception):
    """A property broke; the run stops there."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LockState:
    height: int
    locked_round: int
    locked_hash: bytes | None

    @classmethod
    def of(cls, machine: ConsensusMachine) -> LockState:
        return cls(
            height=machine.height, locked_round=machine.locked_round, locked_hash=_hash(machine.locked_block)
        )


class Monitor:
    """Watches the honest nodes of one simulation (identified by name)."""

    def __init__(self, check: SignatureCheck) -> None:
        self.check = check
        self.canonical: dict[int, bytes] = {}
        """height -> hash of the block first committed there by an honest node."""
        self.locks: dict[str, LockState] = {}
        self.votes: dict[tuple[bytes, int, int, VoteType], Vote] = {}
        """Every vote an honest node signed, by (validator, height, round, type)."""
        self.proposals: dict[tuple[bytes, int, int], Proposal] = {}
        self.prevoters: dict[tuple[int, int, bytes], set[bytes]] = {}
        """(height, round, block hash) -> validators seen to sign a prevote for it, any node."""
        self.proposed: dict[tuple[int, int, bytes], set[int]] = {}
        """(height, round, block hash) -> proof-of-lock rounds claimed by proposals of it."""
        self.locked: dict[tuple[bytes, int], dict[int, bytes]] = {}
        """(validator, height) -> round -> block hash of its precommits for a block."""
        self.validators: dict[int, ValidatorSet] = {}
        self.carried: dict[tuple[bytes, bytes], bool] = {}
        """(parts hash, block hash) -> whether the parts are that block's encoding."""
        self.checked_steps = 0

    # -- signatures ------------------------------------------------------------------------------

    def seen_prevote(self, vote: Vote) -> None:
        """A prevote signed by anyone (honest or not) entered the network."""
        if not vote.block_id.is_nil():
            key = (vote.height, vote.round, vote.block_id.hash)
            self.prevoters.setdefault(key, set()).add(vote.validator_address)

    def honest_vote(self, vote: Vote, validators: ValidatorSet) -> None:
        """An honest validator signed `vote` (at a height whose validators are `validators`)."""
        self.validators.setdefault(vote.height, validators)
        key = (vote.validator_address, vote.height, vote.round, vote.type)
        seen = self.votes.get(key)
        if seen is not None:
            if seen.block_id != vote.block_id:
                raise Violation(
                    f"honest double-sign by {_short(vote.validator_address)} at height {vote.height} "
                    f"round {vote.round} {vote.type.name.lower()}"
                )
            return  # sent again
        self.votes[key] = vote
        if vote.type == VoteType.PREVOTE:
            self.seen_prevote(vote)
            self._check_prevote(vote)
        else:
            self._check_precommit(vote)

    def seen_proposal(self, proposal: Proposal) -> None:
        """A proposal signed by anyone entered the network."""
        key = (proposal.height, proposal.round, proposal.block_id.hash)
        self.proposed.setdefault(key, set()).add(proposal.pol_round)

    def honest_proposal(self, proposer: bytes, proposal: Proposal) -> None:
        """An honest proposer signed `proposal`: once per round, and a proof-of-lock round it
        names has +2/3 prevotes for the block."""
        key = (proposer, proposal.height, proposal.round)
        seen = self.proposals.get(key)
        if seen is not None:
            if (seen.block_id, seen.pol_round) != (proposal.block_id, proposal.pol_round):
                raise Violation(
                    f"honest double-sign by {_short(proposer)} of proposals at height "
                    f"{proposal.height} round {proposal.round}"
                )
            return  # sent again
        self.proposals[key] = proposal
        self.seen_proposal(proposal)
        pol_round = proposal.pol_round
        if pol_round >= 0 and not self._has_polka(proposal.height, pol_round, proposal.block_id.hash):
            raise Violation(
                f"proof of lock: {_short(proposer)} proposed {_short(proposal.block_id.hash)} at height "
                f"{proposal.height} round {proposal.round} under round {pol_round}, which has no +2/3 "
                f"prevotes for it"
            )
        locked_round, locked = self.lock_before(proposer, proposal.height, proposal.round)
        if locked is not None and (
            pol_round < locked_round or (pol_round == locked_round and proposal.block_id.hash != locked)
        ):
            raise Violation(
                f"valid value: {_short(proposer)}, locked on {_short(locked)} since round {locked_round}, "
                f"proposed {_short(proposal.block_id.hash)} at height {proposal.height} round "
                f"{proposal.round} under round {pol_round}"
            )

    def _has_polka(self, height: int, round_: int, block_hash: bytes) -> bool:
        validators = self.validators[height]
        voters = self.prevoters.get((height, round_, block_hash), set())
        power = sum(v.power for v in validators.validators if v.address in voters)
        return 3 * power > 2 * validators.total_power

    def _check_precommit(self, vote: Vote) -> None:
        if vote.block_id.is_nil():
            return
        block = vote.block_id.hash
        if not self._has_polka(vote.height, vote.round, block):
            raise Violation(
                f"lock rule: {_short(vote.validator_address)} precommitted {_short(block)} at height "
                f"{vote.height} round {vote.round} without +2/3 prevotes for it in that round"
            )
        self.locked.setdefault((vote.validator_address, vote.height), {})[vote.round] = block

    def lock_before(self, validator: bytes, height: int, round_: int) -> tuple[int, bytes | None]:
        """The paper's lock of `validator` when it votes in `round_`: its last precommit for a
        block in an earlier round of the height, as (round, block hash), or (-1, None)."""
        rounds = self.locked.get((validator, height), {})
        earlier = [r for r in rounds if r < round_]
        if not earlier:
            return -1, None
        latest = max(earlier)
        return latest, rounds[latest]

    def _check_prevote(self, vote: Vote) -> None:
        if vote.block_id.is_nil():
            return
        block, height, round_ = vote.block_id.hash, vote.height, vote.round
        locked_round, locked = self.lock_before(vote.validator_address, height, round_)
        claims = self.proposed.get((height, round_, block), set())
        for pol_round in sorted(claims):
            if pol_round == -1 and (locked is None or locked == block):
                return  # line 22
            if (
                0 <= pol_round < round_
                and (locked_round <= pol_round or locked == block)
                and self._has_polka(height, pol_round, block)
            ):
                return  # line 28
        raise Violation(
            f"lock rule: {_short(vote.validator_address)} (locked on {_short(locked)} since round "
            f"{locked_round}) prevoted {_short(block)} at height {height} round {round_}, proposed "
            f"there with proof-of-lock rounds {sorted(claims)}, which no +2/3 prevotes justify"
        )

    # -- the decisions themselves -------------------------------------------------------------

    def decided(
        self, name: str, machine: ConsensusMachine, vote_type: VoteType, block_id: BlockID, valid: Validity
    ) -> None:
        """The honest node `name` decided to sign a `vote_type` for `block_id` in its current
        round: it must be what the paper's rules give for what it holds (its proposal, the
        prevotes it has seen) and its lock as its precommits show it. `valid` judges a block
        apart from the machine (the chain rules and the application)."""
        assert machine.address is not None
        height, round_ = machine.height, machine.round
        locked_round, locked = self.lock_before(machine.address, height, round_)
        proposal, block = machine.proposal, machine.proposal_block
        held = proposal is not None and block is not None and proposal.round == round_
        if vote_type == VoteType.PREVOTE:
            seen: SeenProposal | None = None
            polka_at_vr: BlockID | None = None
            if held:
                assert proposal is not None and block is not None
                ok = block.hash == proposal.block_id.hash and valid(block)
                seen = SeenProposal(block_id=proposal.block_id, pol_round=proposal.pol_round, valid=ok)
                if proposal.pol_round >= 0:
                    prevotes = machine.votes.peek(proposal.pol_round, VoteType.PREVOTE)
                    polka_at_vr = None if prevotes is None else prevotes.two_thirds_majority()
            expected = paper.prevote(round_, seen, locked_round, locked, polka_at_vr)
        else:
            prevotes = machine.votes.peek(round_, VoteType.PREVOTE)
            polka = None if prevotes is None else prevotes.two_thirds_majority()
            value = None if block is None else block.hash
            valid_block = block is not None and valid(block)
            expected = paper.precommit(polka, locked, value, valid_block)
        if expected != block_id:
            held_text = "none"
            if proposal is not None:
                held_text = f"{_short(proposal.block_id.hash)}/{proposal.pol_round}"
            raise Violation(
                f"vote rule: {name} decided a {vote_type.name.lower()} for {_short(block_id.hash)} at "
                f"height {height} round {round_}; the paper's rules give {_short(expected.hash)} "
                f"(lock {locked_round}/{_short(locked)}, proposal/pol round {held_text})"
            )

    # -- node state ------------------------------------------------------------------------------

    def after_event(self, name: str, machine: ConsensusMachine) -> None:
        """The node `name` handled one event: its lock may only have moved forward, and its lock
        and valid value are what the paper's rules give."""
        self.checked_steps += 1
        self._moved_forward(name, machine, "lock monotonicity", "went from lock {} to {}")
        self._lock_is_last_precommit(name, machine)
        self._valid_value_holds(name, machine)

    def _lock_is_last_precommit(self, name: str, machine: ConsensusMachine) -> None:
        if machine.address is None:
            return  # not a validator: it never locks
        held = LockState.of(machine)
        signed_round, signed = self.lock_before(machine.address, machine.height, machine.round + 1)
        if (held.locked_round, held.locked_hash) != (signed_round, signed):
            raise Violation(
                f"lock rule: {name} at height {held.height} holds lock "
                f"{held.locked_round}/{_short(held.locked_hash)}, but its last precommit for a block "
                f"is {signed_round}/{_short(signed)}"
            )

    def _valid_value_holds(self, name: str, machine: ConsensusMachine) -> None:
        fault = self._valid_value_fault(machine)
        if fault:
            raise Violation(
                f"valid value: {name} at height {machine.height} holds valid round {machine.valid_round} "
                f"({_short(_hash(machine.valid_block))}): {fault}"
            )

    def _valid_value_fault(self, machine: ConsensusMachine) -> str:
        """What is wrong with the valid value (lines 36-42), or "": it must be a block with +2/3
        prevotes at the valid round, carried by its own parts, at or above the lock (the locked
        block itself when level), not above the node's round, and the proposal of its round once
        it holds that with +2/3 prevotes."""
        valid_round, block, parts = machine.valid_round, machine.valid_block, machine.valid_parts
        locked = machine.locked_block
        if valid_round < 0:
            return "" if block is None else "a valid block without a valid round"
        if block is None or parts is None:
            return "no valid block or parts"
        if not self._carries(parts, block):
            return "valid parts that do not carry the valid block"
        if machine.height not in self.validators or not self._has_polka(
            machine.height, valid_round, block.hash
        ):
            return "no +2/3 prevotes for the valid block at the valid round"
        if valid_round < machine.locked_round:
            return f"a valid round below its locked round {machine.locked_round}"
        if locked is not None and valid_round == machine.locked_round and block.hash != locked.hash:
            return "a valid block other than its locked block at the locked round"
        if valid_round > machine.round:
            return f"a valid round above its round {machine.round}"
        if self._polka_for_proposal(machine) and (
            valid_round != machine.round or block.hash != _hash(machine.proposal_block)
        ):
            return f"not its proposal of round {machine.round}, which it holds with +2/3 prevotes"
        return ""

    @staticmethod
    def _polka_for_proposal(machine: ConsensusMachine) -> bool:
        """Whether `machine` holds the block of its round's proposal and +2/3 prevotes for it
        in that round: then that block is its valid value (line 36)."""
        proposal, block = machine.proposal, machine.proposal_block
        if proposal is None or block is None or proposal.round != machine.round:
            return False
        prevotes = machine.votes.peek(machine.round, VoteType.PREVOTE)
        polka = None if prevotes is None else prevotes.two_thirds_majority()
        return polka is not None and polka.hash == block.hash == proposal.block_id.hash

    def _carries(self, parts: PartSet, block: Block) -> bool:
        key = (parts.header.hash, block.hash)
        carried = self.carried.get(key)
        if carried is None:
            carried = parts.is_complete() and parts.data() == block.encode()
            self.carried[key] = carried
        return carried

    def forget(self, name: str) -> LockState | None:
        """`name` crashed: the lock it had, to hold its restarted self to."""
        return self.locks.pop(name, None)

    def after_restart(self, name: str, machine: ConsensusMachine, before: LockState | None) -> None:
        """`name` restarted and replayed its WAL: it holds at least the lock it had."""
        if before is not None:
            self.locks[name] = before
        self._moved_forward(
            name, machine, "lock after restart", "had lock {} before its crash and {} after replaying its WAL"
        )

    def _moved_forward(self, name: str, machine: ConsensusMachine, rule: str, how: str) -> None:
        now = LockState.of(machine)
        before = self.locks.get(name)
        self.locks[name] = now
        if before is None or before.height != now.height:
            return
        if now.locked_round < before.locked_round or (
            now.locked_round == before.locked_round and now.locked_hash != before.locked_hash
        ):
            was = f"{before.locked_round}/{_short(before.locked_hash)}"
            is_ = f"{now.locked_round}/{_short(now.locked_hash)}"
            raise Violation(f"{rule}: {name} at height {now.height} {how.format(was, is_)}")

    def committed(self, name: str, state: ChainState, block: Block, commit: Commit) -> None:
        """`name` committed `block` on top of `state`: same block as everyone, and valid."""
        height = block.height
        first = self.canonical.get(height)
        if first is not None:
            if first != block.hash:
                raise Violation(
                    f"agreement: {name} committed {_short(block.hash)} at height {height}, "
                    f"another honest node {_short(first)}"
                )
            return  # the same block on the same state (agreement below it): checked already
        self.canonical[height] = block.hash
        try:
            validate_block(state, block, self.check)
            verify_commit(state.chain_id, state.validators, commit.block_id, height, commit, self.check)
        except (BlockError, CommitError) as exc:
            raise Violation(f"validity: {name}'s block {height}: {exc}") from exc


def _short(value: bytes | None) -> str:
    return "-" if value is None else value.hex()[:8]


def _hash(block: Block | None) -> bytes | None:
    return None if block is None else block.hash
