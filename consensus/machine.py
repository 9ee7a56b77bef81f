"""The Tendermint consensus state machine, sans-io: `handle(event, now) -> list[effect]`.

It follows "The latest gossip on BFT consensus" (Buchman, Kwon, Milosevic 2018) in the shape of
CometBFT's consensus/state.go: heights and rounds; propose, prevote, precommit; locked and valid
value and round; proposals with a proof-of-lock round; the paper's round skipping (votes of a
higher round from more than a third of the power move a node to that round; CometBFT waits for
two thirds); timeouts `base + delta * round`. The vote decisions themselves are the pure
functions of `consensus.rules`.

Block production follows CometBFT's `create_empty_blocks` (`TimeoutConfig.waits_for_txs`): a node
that waits for transactions stays in round 0's new-round step until the mempool reports some
(`TxsAvailableEvent`) or `create_empty_blocks_interval` passes (a NEW_ROUND timeout), except at
the first height and after a block that changed the app hash, whose new hash needs a block of its
own (CometBFT's proof block). Proposals and votes of others still move a waiting node on.

Nothing here touches sockets, files, clocks or threads. Time comes in with each event; signing,
timers, persistence and block execution go out as effects, which the driver carries out. Signed
own proposals, block parts and votes come back in as ordinary events, so the machine handles its
own messages exactly as it handles a peer's, and replaying a WAL reproduces the same run. Only
two synchronous collaborators are called directly: the `ProposalSource` (mempool and
application, to fill and to judge a block) and the signature check (the batch verifier).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol, assert_never

from consensus import rules
from consensus.rules import Precommit, SeenProposal
from consensus.state import BlockError, ChainState, validate_block
from consensus.types import (
    EMPTY_COMMIT,
    MS,
    Block,
    BlockID,
    Commit,
    Part,
    PartSet,
    Proposal,
    Vote,
    VoteType,
)
from consensus.validators import ValidatorSet
from consensus.votes import (
    AddStatus,
    HeightVoteSet,
    SignatureCheck,
    VoteError,
    VoteSet,
    vote_set_from_commit,
)
from primitives.codec import DecodeError

log = logging.getLogger("derivd.consensus")

SECOND = 1_000_000_000


class Step(IntEnum):
    """Round steps, CometBFT's numbering."""

    NEW_HEIGHT = 1
    NEW_ROUND = 2
    PROPOSE = 3
    PREVOTE = 4
    PREVOTE_WAIT = 5
    PRECOMMIT = 6
    PRECOMMIT_WAIT = 7
    COMMIT = 8


@dataclass(frozen=True, slots=True)
class TimeoutConfig:
    """Timeouts in nanoseconds; round r waits `base + delta * r`."""

    propose: int = 3 * SECOND
    propose_delta: int = SECOND // 2
    prevote: int = SECOND
    prevote_delta: int = SECOND // 2
    precommit: int = SECOND
    precommit_delta: int = SECOND // 2
    commit: int = SECOND // 5  # CometBFT's is 1 s; ours is shorter for sub-second blocks
    skip_timeout_commit: bool = False
    create_empty_blocks: bool = True
    create_empty_blocks_interval: int = 0
    """with empty blocks off, or this above 0: round 0 waits for transactions this long at most
    (0: without limit), as CometBFT's `create_empty_blocks_interval`"""

    @property
    def waits_for_txs(self) -> bool:
        """Whether round 0 waits for transactions before proposing (CometBFT's WaitForTxs)."""
        return not self.create_empty_blocks or self.create_empty_blocks_interval > 0

    def for_step(self, step: Step, round_: int) -> int:
        if step == Step.PROPOSE:
            return self.propose + self.propose_delta * round_
        if step == Step.PREVOTE_WAIT:
            return self.prevote + self.prevote_delta * round_
        if step == Step.PRECOMMIT_WAIT:
            return self.precommit + self.precommit_delta * round_
        raise ValueError(f"no timeout for step {step.name}")


# -- events (inputs) ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProposalEvent:
    proposal: Proposal
    peer: str = ""


@dataclass(frozen=True, slots=True)
class BlockPartEvent:
    height: int
    round: int
    part: Part
    peer: str = ""


@dataclass(frozen=True, slots=True)
class VoteEvent:
    vote: Vote
    peer: str = ""


@dataclass(frozen=True, slots=True)
class TimeoutEvent:
    height: int
    round: int
    step: Step


@dataclass(frozen=True, slots=True)
class CommittedEvent:
    """The decided block is executed and stored (or the node starts): `state` is the chain state
    now, `last_commit` the commit of its last block (None before the first block),
    `last_app_hash` the app hash that block's header carried (the state before it; None if
    unknown, which counts as changed)."""

    state: ChainState
    last_commit: Commit | None
    last_app_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class TxsAvailableEvent:
    """The mempool holds transactions for the block at `height` (sent once a height, and only to
    a machine that waits for transactions). Not written to the WAL, as in CometBFT: a replay
    re-derives the round from the recorded proposals, votes and timeouts."""

    height: int


Event = ProposalEvent | BlockPartEvent | VoteEvent | TimeoutEvent | CommittedEvent | TxsAvailableEvent


# -- effects (outputs) ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignProposal:
    """Sign `proposal` (through the private validator) and feed it back with its parts."""

    proposal: Proposal
    parts: PartSet = field(compare=False)


@dataclass(frozen=True, slots=True)
class SignVote:
    """Sign `vote` (through the private validator) and feed it back."""

    vote: Vote


@dataclass(frozen=True, slots=True)
class ScheduleTimeout:
    height: int
    round: int
    step: Step
    duration: int


@dataclass(frozen=True, slots=True)
class Decide:
    """+2/3 precommitted `block`: execute and store it, then feed back a CommittedEvent."""

    block: Block
    block_id: BlockID
    commit: Commit


@dataclass(frozen=True, slots=True)
class StepChanged:
    height: int
    round: int
    step: Step


@dataclass(frozen=True, slots=True)
class Equivocation:
    """A validator signed two different votes for one (height, round, type)."""

    first: Vote
    second: Vote


@dataclass(frozen=True, slots=True)
class BadMessage:
    """A message that failed validation; the reactor may punish `peer`."""

    peer: str
    reason: str


Effect = SignProposal | SignVote | ScheduleTimeout | Decide | StepChanged | Equivocation | BadMessage


class ConsensusFailure(RuntimeError):
    """+2/3 of the voting power committed something this node cannot accept: the safety
    assumption (less than 1/3 byzantine) is broken and the node must stop."""


class ProposalSource(Protocol):
    """What the machine asks of the rest of the node when it proposes or judges a block."""

    def proposal_txs(
        self, state: ChainState, height: int, time: int, proposer: bytes, max_bytes: int
    ) -> list[bytes]:
        """Transactions for a new block (mempool reap + application's prepare_proposal)."""
        ...

    def proposal_evidence(self, state: ChainState, max_bytes: int) -> list[bytes]:
        """Pending evidence for a new block (encoded)."""
        ...

    def process_proposal(self, state: ChainState, block: Block) -> bool:
        """Whether the block's evidence is valid and the application accepts its contents."""
        ...


HEADER_OVERHEAD = 2048
"""Bytes kept free in a block for the header, the last commit's framing and the encoding."""


class ConsensusMachine:
    """One node's Tendermint state machine."""

    def __init__(
        self,
        state: ChainState,
        address: bytes | None,
        timeouts: TimeoutConfig,
        source: ProposalSource,
        check: SignatureCheck,
    ) -> None:
        self.address = address
        self.timeouts = timeouts
        self.source = source
        self.check = check
        self.now = 0
        self._effects: list[Effect] = []
        self.state = state
        self.height = state.height
        self.round = 0
        self.step = Step.NEW_HEIGHT
        self.round_validators: ValidatorSet = state.validators
        self.votes = HeightVoteSet(state.chain_id, self.height, state.validators, check)
        self.last_commit: VoteSet | None = None
        self.start_time = 0
        """when round 0 of this height starts: the last commit plus timeout_commit (local time,
        CometBFT's StartTime; 0 before the first height)"""
        self._reset_height()
        self.started = False

    # -- public --------------------------------------------------------------------------------

    def handle(self, event: Event, now: int) -> list[Effect]:
        """Apply one input at local time `now`; return what the driver must do, in order."""
        self.now = now
        self._effects = []
        if isinstance(event, VoteEvent):
            self._on_vote(event.vote, event.peer)
        elif isinstance(event, ProposalEvent):
            self._on_proposal(event.proposal, event.peer)
        elif isinstance(event, BlockPartEvent):
            self._on_block_part(event.height, event.part, event.peer)
        elif isinstance(event, TimeoutEvent):
            self._on_timeout(event)
        elif isinstance(event, TxsAvailableEvent):
            self._on_txs_available(event)
        else:
            self._on_committed(event)
        effects, self._effects = self._effects, []
        return effects

    @property
    def is_validator(self) -> bool:
        return self.address is not None and self.votes.validators.index_of(self.address) is not None

    def proposer(self) -> bytes:
        return self.round_validators.proposer.address

    # -- height bookkeeping ----------------------------------------------------------------------

    def _reset_height(self) -> None:
        self.proposal: Proposal | None = None
        self.proposal_block: Block | None = None
        self.proposal_parts: PartSet | None = None
        self.locked_round = -1
        self.locked_block: Block | None = None
        self.locked_parts: PartSet | None = None
        self.valid_round = -1
        self.valid_block: Block | None = None
        self.valid_parts: PartSet | None = None
        self.commit_round = -1
        self.commit_time = 0
        self.triggered_timeout_precommit = False
        self._verdicts: dict[bytes, bool] = {}
        self.txs_available = False
        """the mempool reported transactions for this height before round 0 began"""
        self.proof_block_needed = True
        """this height must have a block even without transactions: the first height, or the
        last block changed the app hash (CometBFT's needProofBlock)"""

    def _on_committed(self, event: CommittedEvent) -> None:
        state = event.state
        if self.started and state.height <= self.height:
            return
        self.state = state
        self.height = state.height
        self.round = 0
        self.round_validators = state.validators
        self.votes = HeightVoteSet(state.chain_id, self.height, state.validators, self.check)
        self.last_commit = None
        if event.last_commit is not None and not event.last_commit.is_empty():
            self.last_commit = vote_set_from_commit(
                state.chain_id, event.last_commit, state.last_validators, self.check
            )
        wait = self.timeouts.commit
        if self.started and self.commit_time:
            wait = max(0, self.commit_time + self.timeouts.commit - self.now)
        self.start_time = self.now + wait
        self._reset_height()
        self.proof_block_needed = state.is_initial() or event.last_app_hash != state.app_hash
        self.started = True
        self._set_step(Step.NEW_HEIGHT)
        self._schedule(Step.NEW_HEIGHT, 0, wait)

    # -- steps (CometBFT's enterX) ---------------------------------------------------------------

    def _set_step(self, step: Step) -> None:
        self.step = step
        self._effects.append(StepChanged(self.height, self.round, step))

    def _schedule(self, step: Step, round_: int, duration: int) -> None:
        self._effects.append(ScheduleTimeout(self.height, round_, step, duration))

    def _enter_new_round(self, height: int, round_: int) -> None:
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step != Step.NEW_HEIGHT)
            or self.step == Step.COMMIT
        ):
            return
        if round_ > self.round:
            self.round_validators = self.round_validators.increment_proposer_priority(round_ - self.round)
        self.round = round_
        if round_ != 0:
            self.proposal = None
            self.proposal_block = None
            self.proposal_parts = None
        self.votes.set_round(round_ + 1)
        self.triggered_timeout_precommit = False
        self._set_step(Step.NEW_ROUND)
        if round_ == 0 and self._waits_for_txs():
            interval = self.timeouts.create_empty_blocks_interval
            if interval > 0:
                self._schedule(Step.NEW_ROUND, 0, interval)
            return
        self._enter_propose(height, round_)

    def _waits_for_txs(self) -> bool:
        return self.timeouts.waits_for_txs and not self.proof_block_needed and not self.txs_available

    def _enter_propose(self, height: int, round_: int) -> None:
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PROPOSE)
        ):
            return
        self._set_step(Step.PROPOSE)
        self._schedule(Step.PROPOSE, round_, self.timeouts.for_step(Step.PROPOSE, round_))
        if self.is_validator and self.proposer() == self.address:
            self._decide_proposal(height, round_)
        if self._is_proposal_complete():
            self._enter_prevote(height, self.round)

    def _decide_proposal(self, height: int, round_: int) -> None:
        assert self.address is not None
        if self.valid_block is not None and self.valid_parts is not None:
            block, parts = self.valid_block, self.valid_parts
        else:
            if not self.state.is_initial() and (
                self.last_commit is None or self.last_commit.two_thirds_majority() is None
            ):
                log.warning("cannot propose at height %d: no commit for the previous block", height)
                return
            last_commit = self.last_commit.make_commit() if self.last_commit is not None else EMPTY_COMMIT
            params = self.state.params
            evidence = self.source.proposal_evidence(self.state, params.evidence_max_bytes)
            budget = (
                params.block_max_bytes - HEADER_OVERHEAD - len(last_commit.encode()) - sum(map(len, evidence))
            )
            txs = self.source.proposal_txs(
                self.state, height, self.state.block_time(last_commit), self.address, max(0, budget)
            )
            block = self.state.make_block(txs, evidence, last_commit, self.address)
            parts = PartSet.from_data(block.encode())
        proposal = Proposal(height, round_, self.valid_round, BlockID(block.hash, parts.header), self.now)
        self._effects.append(SignProposal(proposal, parts))

    def _is_proposal_complete(self) -> bool:
        if self.proposal is None or self.proposal_block is None:
            return False
        if self.proposal.pol_round < 0:
            return True
        return self.votes.prevotes(self.proposal.pol_round).two_thirds_majority() is not None

    def _enter_prevote(self, height: int, round_: int) -> None:
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PREVOTE)
        ):
            return
        self._set_step(Step.PREVOTE)
        self._sign_vote(VoteType.PREVOTE, self._prevote_choice())

    def _prevote_choice(self) -> BlockID:
        """The prevote of this round by the paper's rules (`rules.prevote`)."""
        proposal, block = self.proposal, self.proposal_block
        seen: SeenProposal | None = None
        pol_majority: BlockID | None = None
        if proposal is not None and block is not None:
            valid = block.hash == proposal.block_id.hash and self._block_acceptable(block)
            seen = SeenProposal(block_id=proposal.block_id, pol_round=proposal.pol_round, valid=valid)
            if proposal.pol_round >= 0:
                pol_majority = self.votes.prevotes(proposal.pol_round).two_thirds_majority()
        return rules.prevote(
            round_=self.round,
            proposal=seen,
            locked_round=self.locked_round,
            locked_hash=self.locked_block.hash if self.locked_block is not None else None,
            pol_majority=pol_majority,
        )

    def _block_acceptable(self, block: Block) -> bool:
        """Whether `block` is valid on this state and accepted by the application (memoised)."""
        verdict = self._verdicts.get(block.hash)
        if verdict is None:
            try:
                validate_block(self.state, block, self.check)
                verdict = self.source.process_proposal(self.state, block)
                if not verdict:
                    log.warning("application rejected block %d %s", block.height, block.hash.hex().upper())
            except BlockError as exc:
                log.warning("invalid block: %s", exc)
                verdict = False
            self._verdicts[block.hash] = verdict
        return verdict

    def _enter_prevote_wait(self, height: int, round_: int) -> None:
        if (
            height != self.height
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PREVOTE_WAIT)
        ):
            return
        if not self.votes.prevotes(round_).has_two_thirds_any():
            return
        self.round = round_
        self._set_step(Step.PREVOTE_WAIT)
        self._schedule(Step.PREVOTE_WAIT, round_, self.timeouts.for_step(Step.PREVOTE_WAIT, round_))

    def _enter_precommit(self, height: int, round_: int) -> None:
        if (
            height != self.height
            or self.step == Step.COMMIT
            or round_ < self.round
            or (round_ == self.round and self.step >= Step.PRECOMMIT)
        ):
            return
        self.round = round_
        self._set_step(Step.PRECOMMIT)
        polka = self.votes.prevotes(round_).two_thirds_majority()
        block = self.proposal_block
        decision = rules.precommit(
            polka=polka,
            locked_hash=self.locked_block.hash if self.locked_block is not None else None,
            proposal_hash=block.hash if block is not None else None,
            proposal_valid=(
                block is not None
                and polka is not None
                and block.hash == polka.hash
                and self._block_acceptable(block)
            ),
        )
        match decision:
            case Precommit.NIL:
                pass
            case Precommit.RELOCK:
                assert self.locked_block is not None
                self.locked_round = round_
                self._set_valid(round_, self.locked_block, self.locked_parts)
            case Precommit.LOCK:
                assert block is not None
                self.locked_round = round_
                self.locked_block = block
                self.locked_parts = self.proposal_parts
                self._set_valid(round_, block, self.proposal_parts)
            case Precommit.INVALID:
                assert polka is not None
                log.error("+2/3 prevoted block %s that this node finds invalid", polka.short())
            case Precommit.MISSING:
                assert polka is not None
                if self.proposal_parts is None or self.proposal_parts.header != polka.parts:
                    self.proposal_block = None
                    self.proposal_parts = PartSet(polka.parts)
            case _:
                assert_never(decision)
        self._sign_vote(VoteType.PRECOMMIT, rules.precommit_vote(decision, polka))

    def _set_valid(self, round_: int, block: Block, parts: PartSet | None) -> None:
        """Lines 36-43 of the paper: a polka seen for a block sets the valid value and round."""
        if round_ > self.valid_round:
            self.valid_round = round_
            self.valid_block = block
            self.valid_parts = parts

    def _enter_precommit_wait(self, height: int, round_: int) -> None:
        if (
            height != self.height
            or self.step == Step.COMMIT
            or round_ < self.round
            or (round_ == self.round and self.triggered_timeout_precommit)
        ):
            return
        if not self.votes.precommits(round_).has_two_thirds_any():
            return
        self.round = round_
        self.triggered_timeout_precommit = True
        self._set_step(Step.PRECOMMIT_WAIT)
        self._schedule(Step.PRECOMMIT_WAIT, round_, self.timeouts.for_step(Step.PRECOMMIT_WAIT, round_))

    def _enter_commit(self, height: int, commit_round: int) -> None:
        if height != self.height or self.step == Step.COMMIT:
            return
        decided = self.votes.precommits(commit_round).two_thirds_majority()
        if decided is None or decided.is_nil():
            return
        self.commit_round = commit_round
        self.commit_time = self.now
        self._set_step(Step.COMMIT)
        if self.locked_block is not None and self.locked_block.hash == decided.hash:
            self.proposal_block = self.locked_block
            self.proposal_parts = self.locked_parts
        have_block = self.proposal_block is not None and self.proposal_block.hash == decided.hash
        if not have_block and (self.proposal_parts is None or self.proposal_parts.header != decided.parts):
            self.proposal_block = None
            self.proposal_parts = PartSet(decided.parts)
        self._try_finalize_commit(height)

    def _try_finalize_commit(self, height: int) -> None:
        if height != self.height or self.step != Step.COMMIT:
            return
        precommits = self.votes.precommits(self.commit_round)
        decided = precommits.two_thirds_majority()
        if decided is None or decided.is_nil():
            return
        block = self.proposal_block
        if block is None or block.hash != decided.hash:
            return  # wait for the block's parts
        try:
            validate_block(self.state, block, self.check)
        except BlockError as exc:
            raise ConsensusFailure(f"+2/3 committed an invalid block at height {height}: {exc}") from exc
        self._effects.append(Decide(block, decided, precommits.make_commit()))

    # -- messages --------------------------------------------------------------------------------

    def _on_proposal(self, proposal: Proposal, peer: str) -> None:
        if self.proposal is not None or proposal.height != self.height or proposal.round != self.round:
            return
        if not -1 <= proposal.pol_round < proposal.round:
            self._bad(peer, "proposal pol_round out of range")
            return
        proposer = self.round_validators.proposer
        message = proposal.sign_bytes(self.state.chain_id)
        if not self.check([(proposer.pub_key, message, proposal.signature)])[0]:
            self._bad(peer, f"proposal for {proposal.height}/{proposal.round} not signed by its proposer")
            return
        self.proposal = proposal
        if self.proposal_parts is None:
            self.proposal_parts = PartSet(proposal.block_id.parts)

    def _on_block_part(self, height: int, part: Part, peer: str) -> None:
        parts = self.proposal_parts
        if height != self.height or parts is None or parts.is_complete():
            return
        if not parts.add(part):
            if not parts.has(part.index):
                self._bad(peer, f"block part {part.index} does not prove into the expected block")
            return
        if parts.byte_size > self.state.params.block_max_bytes:
            self._bad(peer, "block parts exceed the maximum block size")
            self.proposal_parts = PartSet(parts.header)
            return
        if not parts.is_complete():
            return
        try:
            self.proposal_block = Block.decode(parts.data())
        except DecodeError as exc:
            log.warning("block at height %d does not decode: %s", height, exc)
            return
        self._on_complete_proposal(height)

    def _on_complete_proposal(self, height: int) -> None:
        block = self.proposal_block
        assert block is not None
        polka = self.votes.prevotes(self.round).two_thirds_majority()
        if (
            polka is not None
            and not polka.is_nil()
            and self.valid_round < self.round
            and block.hash == polka.hash
        ):
            self.valid_round = self.round
            self.valid_block = block
            self.valid_parts = self.proposal_parts
        if self.step <= Step.PROPOSE and self._is_proposal_complete():
            self._enter_prevote(height, self.round)
            if polka is not None:
                self._enter_precommit(height, self.round)
        elif self.step == Step.COMMIT:
            self._try_finalize_commit(height)

    def _on_vote(self, vote: Vote, peer: str) -> None:
        if vote.height + 1 == self.height and vote.type == VoteType.PRECOMMIT:
            self._on_late_precommit(vote, peer)
            return
        if vote.height != self.height:
            return
        try:
            result = self.votes.add(vote)
        except VoteError as exc:
            self._bad(peer, str(exc))
            return
        if result.status == AddStatus.DUPLICATE:
            return
        if result.status == AddStatus.CONFLICT:
            assert result.conflicting is not None
            self._effects.append(Equivocation(result.conflicting, vote))
            if not result.counted:
                return
        ahead = self.votes.round_power(vote.round)
        if vote.round > self.round and 3 * ahead > self.votes.validators.total_power:
            self._enter_new_round(self.height, vote.round)  # line 55: over 1/3 of the power is ahead
        if vote.type == VoteType.PREVOTE:
            self._on_prevote_added(vote)
        else:
            self._on_precommit_added(vote)

    def _on_late_precommit(self, vote: Vote, peer: str) -> None:
        if self.step != Step.NEW_HEIGHT or self.last_commit is None or vote.round != self.last_commit.round:
            return
        try:
            result = self.last_commit.add(vote)
        except VoteError as exc:
            self._bad(peer, str(exc))
            return
        if result.status == AddStatus.CONFLICT and result.conflicting is not None:
            self._effects.append(Equivocation(result.conflicting, vote))
        elif (
            result.status == AddStatus.ADDED
            and self.timeouts.skip_timeout_commit
            and self.last_commit.has_all()
        ):
            self._enter_new_round(self.height, 0)

    def _on_prevote_added(self, vote: Vote) -> None:
        height = self.height
        prevotes = self.votes.prevotes(vote.round)
        polka = prevotes.two_thirds_majority()
        if polka is not None and not polka.is_nil() and self.valid_round < vote.round == self.round:
            if self.proposal_block is not None and self.proposal_block.hash == polka.hash:
                self.valid_round = vote.round
                self.valid_block = self.proposal_block
                self.valid_parts = self.proposal_parts
            else:
                self.proposal_block = None
                if self.proposal_parts is None or self.proposal_parts.header != polka.parts:
                    self.proposal_parts = PartSet(polka.parts)
        if self.round == vote.round and self.step >= Step.PREVOTE:
            if polka is not None and (self._is_proposal_complete() or polka.is_nil()):
                self._enter_precommit(height, vote.round)
            elif prevotes.has_two_thirds_any():
                self._enter_prevote_wait(height, vote.round)
        elif (
            self.proposal is not None
            and 0 <= self.proposal.pol_round == vote.round
            and self._is_proposal_complete()
        ):
            self._enter_prevote(height, self.round)

    def _on_precommit_added(self, vote: Vote) -> None:
        height = self.height
        precommits = self.votes.precommits(vote.round)
        decided = precommits.two_thirds_majority()
        if decided is not None:
            self._enter_new_round(height, vote.round)
            self._enter_precommit(height, vote.round)
            if not decided.is_nil():
                self._enter_commit(height, vote.round)
            else:
                self._enter_precommit_wait(height, vote.round)
        elif self.round <= vote.round and precommits.has_two_thirds_any():
            self._enter_new_round(height, vote.round)
            self._enter_precommit_wait(height, vote.round)

    def _on_txs_available(self, event: TxsAvailableEvent) -> None:
        """CometBFT's handleTxsAvailable: before round 0 the news is kept for it; in round 0's
        new-round step (waiting) the node goes on to propose."""
        if event.height != self.height or self.round != 0:
            return
        if self.step == Step.NEW_HEIGHT:
            self.txs_available = True
        elif self.step == Step.NEW_ROUND:
            self._enter_propose(self.height, 0)

    def _on_timeout(self, timeout: TimeoutEvent) -> None:
        if (
            timeout.height != self.height
            or timeout.round < self.round
            or (timeout.round == self.round and timeout.step < self.step)
        ):
            return
        if timeout.step == Step.NEW_HEIGHT:
            self._enter_new_round(timeout.height, 0)
        elif timeout.step == Step.NEW_ROUND:
            self._enter_propose(timeout.height, timeout.round)  # create_empty_blocks_interval
        elif timeout.step == Step.PROPOSE:
            self._enter_prevote(timeout.height, timeout.round)
        elif timeout.step == Step.PREVOTE_WAIT:
            self._enter_precommit(timeout.height, timeout.round)
        elif timeout.step == Step.PRECOMMIT_WAIT:
            self._enter_precommit(timeout.height, timeout.round)
            self._enter_new_round(timeout.height, timeout.round + 1)

    # -- helpers ---------------------------------------------------------------------------------

    def _sign_vote(self, vote_type: VoteType, block_id: BlockID) -> None:
        if self.address is None:
            return
        index = self.votes.validators.index_of(self.address)
        if index is None:
            return
        vote = Vote(vote_type, self.height, self.round, block_id, self._vote_time(), self.address, index)
        self._effects.append(SignVote(vote))

    def _vote_time(self) -> int:
        """Local time, but never before the voted-on block's time + 1 ms (CometBFT's voteTime)."""
        reference = self.locked_block or self.proposal_block
        if reference is None:
            return self.now
        return max(self.now, reference.header.time + MS)

    def _bad(self, peer: str, reason: str) -> None:
        log.debug("rejected message from %s: %s", peer or "self", reason)
        self._effects.append(BadMessage(peer, reason))
