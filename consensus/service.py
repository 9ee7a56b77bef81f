"""The trio driver of the consensus state machine: the one task that owns it.

It takes inputs from a memory channel (peers' messages through the reactor, timeouts from its
ticker), appends each to the WAL before the machine sees it, and carries out the machine's
effects in order: signing through the private validator (then feeding the signed message back
ahead of any other input, fsynced to the WAL), scheduling the single timeout ticker, applying
decided blocks through the block executor, and telling listeners about steps and messages to
gossip. On start it replays the WAL's inputs after the last end-height marker.

The wall clock is read here (vote and proposal timestamps come from it); the machine itself only
sees the time each input arrives with.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from consensus.execution import BlockExecutor
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
    TimeoutEvent,
    VoteEvent,
)
from consensus.messages import Message
from consensus.privval import DoubleSignError, FilePrivValidator
from consensus.types import Commit
from consensus.wal import WAL

log = logging.getLogger("derivd.consensus")

Gossip = Callable[[Message], None]
StepListener = Callable[[StepChanged], None]
BadPeerListener = Callable[[BadMessage], None]


@dataclass(frozen=True, slots=True)
class _Queued:
    event: Event
    own: bool


class TimeoutTicker:
    """One pending timeout at a time; a request for an earlier (height, round, step) than the
    pending one is ignored, as CometBFT's ticker does."""

    def __init__(self) -> None:
        self._pending: ScheduleTimeout | None = None
        self._deadline = 0.0
        self._changed = trio.Event()

    def schedule(self, timeout: ScheduleTimeout) -> None:
        pending = self._pending
        if pending is not None and (timeout.height, timeout.round, timeout.step) < (
            pending.height,
            pending.round,
            pending.step,
        ):
            return
        self._pending = timeout
        self._deadline = trio.current_time() + timeout.duration / 1e9  # driver timer, not state
        self._changed.set()

    async def run(self, fire: Callable[[TimeoutEvent], Awaitable[None]]) -> None:
        while True:
            if self._pending is None:
                await self._changed.wait()
                self._changed = trio.Event()
                continue
            with trio.move_on_at(self._deadline) as scope:
                await self._changed.wait()
            if scope.cancelled_caught and self._pending is not None:
                fired, self._pending = self._pending, None
                await fire(TimeoutEvent(fired.height, fired.round, fired.step))
            else:
                self._changed = trio.Event()


class ConsensusService:
    """Runs one ConsensusMachine against the real clock, WAL, signer and stores."""

    def __init__(
        self,
        machine: ConsensusMachine,
        wal: WAL,
        privval: FilePrivValidator | None,
        executor: BlockExecutor,
        start_commit: Commit | None,
        inbox_size: int = 10_000,
    ) -> None:
        self.machine = machine
        self.wal = wal
        self.privval = privval
        self.executor = executor
        self._start_commit = start_commit
        self._send, self._receive = trio.open_memory_channel[Event](inbox_size)
        self._ticker = TimeoutTicker()
        self.gossip: list[Gossip] = []
        self.step_listeners: list[StepListener] = []
        self.bad_peer_listeners: list[BadPeerListener] = []
        self.equivocations: list[Equivocation] = []
        self.double_sign_refusals = 0
        self._replaying = False

    @property
    def chain_id(self) -> str:
        return self.machine.state.chain_id

    def submit_nowait(self, event: Event) -> bool:
        """Queue a peer's message; False if the inbox is full (the message is dropped)."""
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            return False
        return True

    async def submit(self, event: Event) -> None:
        await self._send.send(event)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self._start()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ticker.run, self.submit)
            task_status.started()
            try:
                async for event in self._receive:
                    self._process(event, own=False)
            finally:
                self.wal.flush()

    def _start(self) -> None:
        state = self.machine.state
        self._run_effects(self.machine.handle(CommittedEvent(state, self._start_commit), time.time_ns()), [])
        replay = self.wal.replay_after_last_end_height(state.last_block_height)
        if replay:
            log.info("replaying %d WAL records of height %d", len(replay), self.machine.height)
        self._replaying = True
        try:
            for record in replay:
                assert record.event is not None
                self._process(record.event, own=False, at=record.time, record=False)
        finally:
            self._replaying = False

    def _process(self, first: Event, own: bool, at: int | None = None, record: bool = True) -> None:
        """Handle `first`, then every own message its effects produce, in order."""
        queue: deque[_Queued] = deque([_Queued(first, own)])
        while queue:
            item = queue.popleft()
            now = at if at is not None and item.event is first else time.time_ns()
            if record and not isinstance(item.event, CommittedEvent):
                self.wal.write(now, item.event, sync=item.own)
            effects = self.machine.handle(item.event, now)
            followups: list[_Queued] = []
            self._run_effects(effects, followups)
            queue.extend(followups)
            record = True

    def _run_effects(self, effects: list[Effect], followups: list[_Queued]) -> None:
        for effect in effects:
            if isinstance(effect, SignVote):
                self._sign_vote(effect, followups)
            elif isinstance(effect, SignProposal):
                self._sign_proposal(effect, followups)
            elif isinstance(effect, ScheduleTimeout):
                self._ticker.schedule(effect)
            elif isinstance(effect, Decide):
                self._decide(effect, followups)
            elif isinstance(effect, StepChanged):
                for step_listener in self.step_listeners:
                    step_listener(effect)
            elif isinstance(effect, Equivocation):
                log.warning(
                    "validator %s signed conflicting votes at height %d round %d",
                    effect.first.validator_address.hex().upper(),
                    effect.first.height,
                    effect.first.round,
                )
                self.equivocations.append(effect)
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
        followups.append(_Queued(message, True))
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
        messages: list[Message] = [ProposalEvent(proposal)]
        messages.extend(
            BlockPartEvent(proposal.height, proposal.round, part) for part in effect.parts.parts()
        )
        for message in messages:
            followups.append(_Queued(message, True))
            self._gossip(message)

    def _decide(self, effect: Decide, followups: list[_Queued]) -> None:
        state = self.machine.state
        started = time.perf_counter()
        new_state = self.executor.apply_block(state, effect.block, effect.block_id, effect.commit)
        self.wal.write_end_height(time.time_ns(), effect.block.height)
        log.info(
            "committed block height=%d hash=%s txs=%d app_hash=%s took=%.1fms",
            effect.block.height,
            effect.block.hash.hex().upper(),
            len(effect.block.txs),
            new_state.app_hash.hex().upper(),
            (time.perf_counter() - started) * 1000,
        )
        followups.append(_Queued(CommittedEvent(new_state, effect.commit), False))

    def _gossip(self, message: Message) -> None:
        for send in self.gossip:
            send(message)
