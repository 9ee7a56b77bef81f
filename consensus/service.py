"""The trio shell around the consensus driver: the one task that owns the machine.

Peers' messages (through the reactor) and timeouts (from the single ticker) arrive on a memory
channel and are handed to the synchronous `ConsensusDriver` one at a time. Before a batch of
queued votes is handled, their signatures are checked in one call to the batch verifier (the
machine then finds them in the verifier's cache). The wall clock is read here: vote and proposal
timestamps come from it; the machine itself only sees the time each input arrives with.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import trio

from consensus.driver import ConsensusDriver, supersedes
from consensus.machine import (
    CommittedEvent,
    ConsensusMachine,
    Event,
    ScheduleTimeout,
    TimeoutEvent,
    TxsAvailableEvent,
    VoteEvent,
)
from consensus.messages import DecidedBlock, Message
from consensus.state import ChainState
from consensus.types import Commit

MAX_BATCH = 256

Inbound = Event | Message | DecidedBlock


class TimeoutTicker:
    """One pending timeout at a time; a request for an earlier (height, round, step) than the
    pending one is ignored, as CometBFT's ticker does."""

    def __init__(self) -> None:
        self._pending: ScheduleTimeout | None = None
        self._deadline = 0.0
        self._changed = trio.Event()

    def schedule(self, timeout: ScheduleTimeout) -> None:
        if not supersedes(timeout, self._pending):
            return
        self._pending = timeout
        self._deadline = trio.current_time() + timeout.duration / 1e9  # a driver timer, not state
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


def wall_clock() -> int:
    """Nanoseconds since the epoch, for vote and proposal timestamps (not a state input)."""
    return time.time_ns()


class ConsensusService:
    """Runs a ConsensusDriver under trio."""

    def __init__(
        self, driver: ConsensusDriver, start_commit: Commit | None, inbox_size: int = 10_000
    ) -> None:
        self.driver = driver
        self._start_commit = start_commit
        self._start_state: ChainState | None = None
        self._start_app_hash: bytes | None = None
        self._send, self._receive = trio.open_memory_channel[Inbound](inbox_size)
        self.ticker = TimeoutTicker()
        driver.schedule = self.ticker.schedule

    @property
    def machine(self) -> ConsensusMachine:
        return self.driver.machine

    def start_from(
        self, state: ChainState, last_commit: Commit | None, last_app_hash: bytes | None = None
    ) -> None:
        """Start consensus at `state` instead (block sync moved the chain on); `last_app_hash`
        as in `ConsensusDriver.start`."""
        self._start_state = state
        self._start_commit = last_commit
        self._start_app_hash = last_app_hash

    def txs_available(self, height: int) -> None:
        """The mempool's news that it holds transactions for `height` (`Mempool.on_txs_available`);
        dropped if the inbox is full (the next transaction of the height does not repeat it, but
        a waiting node still moves on with the others' proposal)."""
        self.submit_nowait(TxsAvailableEvent(height))

    def submit_nowait(self, message: Inbound) -> bool:
        """Queue a peer's message; False if the inbox is full (the message is dropped)."""
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            return False
        return True

    async def submit(self, message: Inbound) -> None:
        await self._send.send(message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.driver.start(self._start_commit, self._start_state, self._start_app_hash)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.ticker.run, self.submit)
            task_status.started()
            async for first in self._receive:
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self._receive.receive_nowait())
                    except trio.WouldBlock:
                        break
                self._preverify(batch)
                for item in batch:
                    if isinstance(item, TimeoutEvent | CommittedEvent | TxsAvailableEvent):
                        self.driver.handle(item)
                    elif isinstance(item, DecidedBlock):
                        self.driver.apply_decided(item.block, item.commit)
                    else:
                        self.driver.receive(item)

    def _preverify(self, batch: list[Inbound]) -> None:
        """Check the signatures of the batch's votes for the current height in one call."""
        machine = self.driver.machine
        validators = machine.votes.validators
        items = []
        for item in batch:
            if isinstance(item, VoteEvent) and item.vote.height == machine.height:
                index = item.vote.validator_index
                if 0 <= index < len(validators):
                    pub_key = validators.validators[index].pub_key
                    items.append((pub_key, item.vote.sign_bytes(machine.state.chain_id), item.vote.signature))
        if len(items) > 1:
            machine.check(items)
