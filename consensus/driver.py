"""The synchronous driver of the consensus state machine: the WAL, the signer, the evidence pool
and block application around one `ConsensusMachine`.

Each input is appended to the WAL before the machine sees it; effects are carried out in order:
signing through the private validator (the signed message is fed back ahead of any other input
and fsynced to the WAL, and handed to gossip), timeouts to the scheduler, decided blocks to the
block applier (then an end-height marker and the next height), conflicting votes to the evidence
pool. On start it replays the WAL's inputs after the last end-height marker, skipping signing
requests for steps it had already signed (the WAL holds those messages).

It does no I/O of its own beyond what its collaborators do and reads time only through the
`clock` it is given, so the node's trio service (`consensus.service`) and the deterministic
simulator (tests/sim) run the very same code.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consensus.evidence import DuplicateVoteEvidence, EvidenceError, EvidencePool
from consensus.machine import (
    BadMessage,
    BlockPartEvent,
    CommittedEvent,
    ConsensusMachine,
    Decide,
    Effect,
    Equivocation,
    Event,
    ProposalEvent,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    StepChanged,
    TxsAvailableEvent,
    VoteEvent,
)
from consensus.messages import EvidenceMessage, Message
from consensus.privval import DoubleSignError, FilePrivValidator
from consensus.state import BlockError, ChainState, validate_block
from consensus.types import Block, BlockID, Commit, Vote, VoteType
from consensus.votes import CommitError, verify_commit
from consensus.wal import WAL

log = logging.getLogger("derivd.consensus")


class BlockApplier(Protocol):
    """Executes a decided block and makes it durable; returns the next chain state."""

    def apply_block(
        self, state: ChainState, block: Block, block_id: BlockID, commit: Commit
    ) -> ChainState: ...


Gossip = Callable[[Message], None]
StepListener = Callable[[StepChanged], None]
BadPeerListener = Callable[[BadMessage], None]
Clock = Callable[[], int]
Scheduler = Callable[[ScheduleTimeout], None]


def supersedes(new: ScheduleTimeout, pending: ScheduleTimeout | None) -> bool:
    """Whether a newly scheduled timeout replaces the pending one: a node keeps one timer, and a
    request for an earlier (height, round, step) than the pending one is ignored (CometBFT's
    timeout ticker)."""
    if pending is None:
        return True
    return (new.height, new.round, new.step) >= (pending.height, pending.round, pending.step)


@dataclass(frozen=True, slots=True)
class _Queued:
    event: Event
    own: bool
    time: int | None = None
    record: bool = True


class ConsensusDriver:
    """Runs one ConsensusMachine against a WAL, a signer and a block applier."""

    def __init__(
        self,
        machine: ConsensusMachine,
        wal: WAL,
        privval: FilePrivValidator | None,
        applier: BlockApplier,
        clock: Clock,
        schedule: Scheduler,
        evidence: EvidencePool | None = None,
    ) -> None:
        self.machine = machine
        self.wal = wal
        self.privval = privval
        self.applier = applier
        self.clock = clock
        self.schedule = schedule
        self.evidence = evidence
        self.gossip: list[Gossip] = []
        self.step_listeners: list[StepListener] = []
        self.bad_peer_listeners: list[BadPeerListener] = []
        self.equivocations: list[Equivocation] = []
        self.evidence_listeners: list[Callable[[DuplicateVoteEvidence], None]] = []
        self.vote_listeners: list[Callable[[Vote], None]] = []
        """called with each vote the machine added to its vote sets (own votes included), once"""
        self.double_sign_refusals = 0
        self._replaying = False

    @property
    def chain_id(self) -> str:
        return self.machine.state.chain_id

    def start(
        self, last_commit: Commit | None, state: ChainState | None = None, last_app_hash: bytes | None = None
    ) -> None:
        """Enter the height of `state` (by default the machine's: block sync may have moved the
        chain on since the machine was built) and replay the WAL after its last end-height
        marker. `last_app_hash` is the app hash in the last block's header, if known (see
        `CommittedEvent`)."""
        state = state if state is not None else self.machine.state
        self._process(_Queued(CommittedEvent(state, last_commit, last_app_hash), own=False, record=False))
        replay = self.wal.replay_after_last_end_height(state.last_block_height)
        if replay:
            log.info("replaying %d WAL records of height %d", len(replay), self.machine.height)
        self._replaying = True
        try:
            for record in replay:
                assert record.event is not None
                self._process(_Queued(record.event, own=False, time=record.time, record=False))
        finally:
            self._replaying = False

    def handle(self, event: Event) -> None:
        """One input from a peer or a timer."""
        self._process(_Queued(event, own=False))

    def receive(self, message: Message) -> None:
        """A peer's message: evidence goes to the pool, the rest to the machine."""
        if isinstance(message, EvidenceMessage):
            self._add_evidence(message.evidence, message.peer)
        else:
            self.handle(message)

    def apply_decided(self, block: Block, commit: Commit) -> bool:
        """A block decided elsewhere (catch-up, block sync) for this node's current height:
        verify it and its commit against the chain state, apply it and move on. False if it
        does not fit or does not verify."""
        state = self.machine.state
        if (
            block.height != state.height
            or commit.height != block.height
            or commit.block_id.hash != block.hash
        ):
            return False
        try:
            verify_commit(
                state.chain_id, state.validators, commit.block_id, block.height, commit, self.machine.check
            )
            validate_block(state, block, self.machine.check)
        except (CommitError, BlockError) as exc:
            log.warning("rejecting decided block %d: %s", block.height, exc)
            return False
        followups: list[_Queued] = []
        self._decide(Decide(block, commit.block_id, commit), followups)
        for item in followups:
            self._process(item)
        return True

    # -- the loop ---------------------------------------------------------------------------------

    def _process(self, first: _Queued) -> None:
        """Handle `first`, then every own message its effects produce, in order."""
        queue: deque[_Queued] = deque([first])
        while queue:
            item = queue.popleft()
            now = item.time if item.time is not None else self.clock()
            if item.record and not isinstance(item.event, CommittedEvent | TxsAvailableEvent):
                self.wal.write(now, item.event, sync=item.own)
            vote = item.event.vote if self.vote_listeners and isinstance(item.event, VoteEvent) else None
            known = vote is not None and self._holds(vote)
            effects = self.machine.handle(item.event, now)
            if vote is not None and not known and self._holds(vote):
                for vote_listener in self.vote_listeners:
                    vote_listener(vote)
            followups: list[_Queued] = []
            self._run_effects(effects, followups)
            queue.extend(followups)

    def _holds(self, vote: Vote) -> bool:
        """Whether the machine's vote sets hold `vote` (its height's, or the last commit's)."""
        machine = self.machine
        if vote.height == machine.height:
            votes = machine.votes.peek(vote.round, vote.type)
        elif vote.height + 1 == machine.height and vote.type == VoteType.PRECOMMIT:
            votes = machine.last_commit
        else:
            return False
        return votes is not None and votes.get(vote.validator_index) == vote

    def _run_effects(self, effects: list[Effect], followups: list[_Queued]) -> None:
        for effect in effects:
            if isinstance(effect, SignVote):
                self._sign_vote(effect, followups)
            elif isinstance(effect, SignProposal):
                self._sign_proposal(effect, followups)
            elif isinstance(effect, ScheduleTimeout):
                self.schedule(effect)
            elif isinstance(effect, Decide):
                self._decide(effect, followups)
            elif isinstance(effect, StepChanged):
                for step_listener in self.step_listeners:
                    step_listener(effect)
            elif isinstance(effect, Equivocation):
                self._on_equivocation(effect)
            else:
                for bad_listener in self.bad_peer_listeners:
                    bad_listener(effect)

    def _sign_vote(self, effect: SignVote, followups: list[_Queued]) -> None:
        if self.privval is None:
            return
        if self._replaying and self.privval.vote_signed_past(effect.vote):
            return  # signed before the crash; the WAL replays what was signed
        try:
            vote = self.privval.sign_vote(self.chain_id, effect.vote)
        except DoubleSignError as exc:
            self.double_sign_refusals += 1
            log.warning("not signing: %s", exc)
            return
        message = VoteEvent(vote)
        followups.append(_Queued(message, own=True))
        self._gossip(message)

    def _sign_proposal(self, effect: SignProposal, followups: list[_Queued]) -> None:
        if self.privval is None:
            return
        if self._replaying and self.privval.proposal_signed_past(effect.proposal):
            return  # signed before the crash; the WAL replays what was signed
        try:
            proposal = self.privval.sign_proposal(self.chain_id, effect.proposal)
        except DoubleSignError as exc:
            self.double_sign_refusals += 1
            log.warning("not signing: %s", exc)
            return
        messages: list[ProposalEvent | BlockPartEvent] = [ProposalEvent(proposal)]
        messages.extend(
            BlockPartEvent(proposal.height, proposal.round, part) for part in effect.parts.parts()
        )
        for message in messages:
            followups.append(_Queued(message, own=True))
            self._gossip(message)

    def _decide(self, effect: Decide, followups: list[_Queued]) -> None:
        state = self.machine.state
        new_state = self.applier.apply_block(state, effect.block, effect.block_id, effect.commit)
        self.wal.write_end_height(self.clock(), effect.block.height)
        if self.evidence is not None:
            self.evidence.mark_committed(new_state, effect.block.evidence)
        log.info(
            "committed block height=%d hash=%s txs=%d app_hash=%s",
            effect.block.height,
            effect.block.hash.hex().upper(),
            len(effect.block.txs),
            new_state.app_hash.hex().upper(),
        )
        event = CommittedEvent(new_state, effect.commit, effect.block.header.app_hash)
        followups.append(_Queued(event, own=False, record=False))

    def _on_equivocation(self, effect: Equivocation) -> None:
        self.equivocations.append(effect)
        first = effect.first
        log.warning(
            "validator %s signed conflicting %s votes at height %d round %d",
            first.validator_address.hex().upper(),
            first.type.name.lower(),
            first.height,
            first.round,
        )
        state = self.machine.state
        validators = (
            self.machine.votes.validators if first.height == self.machine.height else state.last_validators
        )
        evidence = DuplicateVoteEvidence.from_conflict(
            first, effect.second, validators, state.last_block_time
        )
        self._add_evidence(evidence, "")

    def _add_evidence(self, evidence: DuplicateVoteEvidence, peer: str) -> None:
        if self.evidence is None:
            return
        try:
            self.submit_evidence(evidence)
        except EvidenceError as exc:
            if peer:
                for bad_listener in self.bad_peer_listeners:
                    bad_listener(BadMessage(peer, f"invalid evidence: {exc}"))
            else:
                log.warning("invalid evidence: %s", exc)

    def submit_evidence(self, evidence: DuplicateVoteEvidence) -> bool:
        """Verify and keep `evidence` (a peer's, or a client's through RPC broadcast_evidence) and
        gossip it; False if it was known already. EvidenceError if it is invalid or this node
        keeps no evidence."""
        if self.evidence is None:
            raise EvidenceError("this node keeps no evidence pool")
        added = self.evidence.add(self.machine.state, evidence)
        if added:
            for listener in self.evidence_listeners:
                listener(evidence)
            self._gossip(EvidenceMessage(evidence))
        return added

    def _gossip(self, message: Message) -> None:
        for send in self.gossip:
            send(message)
