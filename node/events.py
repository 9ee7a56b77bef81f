"""The node's event bus: what happened in each committed block and each round, for RPC waiters
and subscribers.

The block executor's commit listener publishes a NewBlock event and one Tx event per
transaction; the consensus driver's step and vote listeners publish RoundStepChanged and
VoteAdded. Subscribers
receive the events their predicate accepts on a bounded trio channel; a subscriber that falls
behind loses its subscription (CometBFT closes slow clients the same way) rather than slowing
consensus. Sinks (the WebSocket hub, `node.websocket`) are called with every event as it is
published and keep their own bounds.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from consensus.app import ExecTxResult
from consensus.execution import BlockResults
from consensus.machine import Step
from consensus.types import Block, BlockID, Vote
from primitives.hashing import sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NewBlock:
    block: Block
    block_id: BlockID
    results: BlockResults


@dataclass(frozen=True, slots=True)
class TxCommitted:
    height: int
    index: int
    tx: bytes
    hash: bytes
    result: ExecTxResult


@dataclass(frozen=True, slots=True, kw_only=True)
class RoundStepChanged:
    height: int
    round: int
    step: Step
    proposer: bytes
    proposer_index: int


@dataclass(frozen=True, slots=True)
class VoteAdded:
    vote: Vote


BusEvent = NewBlock | TxCommitted | RoundStepChanged | VoteAdded
Predicate = Callable[[BusEvent], bool]


class Subscription:
    def __init__(self, bus: EventBus, predicate: Predicate, buffer: int) -> None:
        self._bus = bus
        self.predicate = predicate
        self.send, self.receive = trio.open_memory_channel[BusEvent](buffer)
        self.cancelled_reason = ""

    def close(self) -> None:
        self._bus.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self.sinks: list[Callable[[BusEvent], None]] = []
        self.published = 0

    def subscribe(self, predicate: Predicate, buffer: int = 100) -> Subscription:
        subscription = Subscription(self, predicate, buffer)
        self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)
            subscription.send.close()

    def publish(self, event: BusEvent) -> None:
        self.published += 1
        for sink in self.sinks:
            sink(event)
        for subscription in list(self._subscriptions):
            if not subscription.predicate(event):
                continue
            try:
                subscription.send.send_nowait(event)
            except trio.WouldBlock:
                subscription.cancelled_reason = "slow client"
                self.unsubscribe(subscription)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self.unsubscribe(subscription)

    def on_commit(self, block: Block, block_id: BlockID, results: BlockResults) -> None:
        """Publish a committed block and its transactions."""
        self.publish(NewBlock(block, block_id, results))
        for index, (tx, result) in enumerate(zip(block.txs, results.tx_results, strict=True)):
            self.publish(TxCommitted(block.height, index, tx, sha256(tx), result))


def _is_new_block(event: BusEvent) -> bool:
    return isinstance(event, NewBlock)


async def follow_new_blocks(
    bus: EventBus,
    handle: Callable[[NewBlock], Awaitable[None]],
    who: str,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Call `handle` with each committed block until cancelled, coalesced: blocks that arrive while
    it runs are skipped but the newest. Started once subscribed; a subscription lost for falling
    behind is logged (as `who`'s) and taken again."""
    started = False
    while True:
        with bus.subscribe(_is_new_block, buffer=64) as subscription:
            if not started:
                task_status.started()
                started = True
            async for event in subscription.receive:
                latest = event
                while True:
                    try:
                        latest = subscription.receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                assert isinstance(latest, NewBlock)
                await handle(latest)
        log.warning("%s fell behind the event bus; subscribing again", who)
