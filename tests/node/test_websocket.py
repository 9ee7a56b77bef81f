"""The WebSocket hub (`node.websocket`) without a socket: CometBFT's event shapes and tags, the
subscription limits, and a slow client dropped without slowing the publisher."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
import trio

from consensus.app import Event, EventAttribute, ExecTxResult, FinalizeBlockResult, ValidatorUpdate
from consensus.execution import BlockResults
from consensus.machine import Step
from consensus.types import EMPTY_COMMIT, NIL_BLOCK_ID
from node.events import EventBus, NewBlock, RoundStepChanged, TxCommitted
from node.websocket import Hub, Limits, SubscribeError, outgoing
from primitives.hashing import sha256
from tests.consensus.harness import keys, make_genesis

_SOLO = keys(1)[0]
_BASE = make_genesis([(_SOLO, 10)]).make_block([], [], EMPTY_COMMIT, _SOLO.address.raw)
_PRICE = Event("oracle_price", (EventAttribute("market", "BTC-USD"), EventAttribute("price", "97000")))


def new_block(height: int, updates: tuple[ValidatorUpdate, ...] = ()) -> NewBlock:
    block = replace(_BASE, header=replace(_BASE.header, height=height), txs=(b"tx",))
    tx_results = (ExecTxResult(events=(Event("transfer", (EventAttribute("amount", "5"),)),)),)
    finalize = FinalizeBlockResult(tx_results, b"\x01", (_PRICE,), updates)
    return NewBlock(block, NIL_BLOCK_ID, BlockResults(height, tx_results, finalize))


def test_the_events_a_block_makes_in_cometbft_shapes() -> None:
    update = ValidatorUpdate(_SOLO.public_key.raw, 0)
    made = {item.name: item for item in outgoing(new_block(7, (update,)))}
    assert list(made) == ["NewBlock", "NewBlockHeader", "NewBlockEvents", "ValidatorSetUpdates"]
    assert made["NewBlock"].tags == {
        "tm.event": ["NewBlock"],
        "block.height": ["7"],
        "oracle_price.market": ["BTC-USD"],
        "oracle_price.price": ["97000"],
    }
    message = json.loads(made["NewBlock"].message("q", 3))
    assert message["id"] == 3 and message["result"]["query"] == "q"
    assert message["result"]["events"] == made["NewBlock"].tags
    data = message["result"]["data"]
    assert data["type"] == "tendermint/event/NewBlock"
    assert data["value"]["block"]["header"]["height"] == "7"
    assert set(data["value"]["result_finalize_block"]) == {
        "events",
        "tx_results",
        "validator_updates",
        "consensus_param_updates",
        "app_hash",
    }
    events = json.loads(made["NewBlockEvents"].message("q", 1))["result"]["data"]["value"]
    assert events == {
        "height": "7",
        "num_txs": "1",
        "events": [
            {
                "type": "oracle_price",
                "attributes": [
                    {"key": "market", "value": "BTC-USD", "index": True},
                    {"key": "price", "value": "97000", "index": True},
                ],
            }
        ],
    }
    header = json.loads(made["NewBlockHeader"].message("q", 1))["result"]["data"]["value"]
    assert header["header"]["height"] == "7"
    updates = json.loads(made["ValidatorSetUpdates"].message("q", 1))["result"]["data"]["value"]
    assert updates["validator_updates"][0]["voting_power"] == "0"
    assert updates["validator_updates"][0]["address"] == _SOLO.address.raw.hex().upper()
    assert [i.name for i in outgoing(new_block(8))] == ["NewBlock", "NewBlockHeader", "NewBlockEvents"]


def test_a_tx_event_and_round_steps() -> None:
    result = ExecTxResult(events=(Event("transfer", (EventAttribute("amount", "5"),)),))
    (tx,) = outgoing(TxCommitted(9, 2, b"raw", sha256(b"raw"), result))
    assert tx.tags == {
        "tm.event": ["Tx"],
        "tx.hash": [sha256(b"raw").hex().upper()],
        "tx.height": ["9"],
        "transfer.amount": ["5"],
    }
    value = json.loads(tx.message("q", 1))["result"]["data"]["value"]
    assert value["TxResult"]["height"] == "9" and value["TxResult"]["index"] == 2
    assert (
        value["TxResult"]["tx"] == "cmF3" and value["TxResult"]["result"]["events"][0]["type"] == "transfer"
    )

    def step(s: Step) -> RoundStepChanged:
        return RoundStepChanged(height=4, round=1, step=s, proposer=b"\xaa" * 20, proposer_index=0)

    assert [i.name for i in outgoing(step(Step.PREVOTE))] == ["NewRoundStep"]
    step_event, new_round = outgoing(step(Step.NEW_ROUND))
    assert json.loads(step_event.message("q", 1))["result"]["data"]["value"] == {
        "height": "4",
        "round": 1,
        "step": "RoundStepNewRound",
    }
    assert json.loads(new_round.message("q", 1))["result"]["data"]["value"]["proposer"] == {
        "address": "AA" * 20,
        "index": 0,
    }


def _drain(receive: trio.MemoryReceiveChannel[tuple[str, int]]) -> list[Any]:
    out = []
    while True:
        try:
            out.append(json.loads(receive.receive_nowait()[0]))
        except (trio.WouldBlock, trio.EndOfChannel):
            return out


async def test_matching_limits_and_a_slow_client_dropped() -> None:
    hub = Hub(Limits(max_clients=2, max_per_client=2, outbox=4))
    bus = EventBus()
    bus.sinks.append(hub.publish)
    fast, fast_box = hub.connect()
    slow, slow_box = hub.connect()
    third, _ = hub.connect()
    hub.subscribe(fast, "tm.event = 'NewBlockHeader'", 1)
    hub.subscribe(fast, "oracle_price.price > 96000 AND block.height >= 11", "two")
    with pytest.raises(SubscribeError, match="max_subscriptions_per_client 2 reached"):
        hub.subscribe(fast, "tm.event = 'Tx'", 3)
    with pytest.raises(SubscribeError, match="already subscribed"):
        hub.subscribe(fast, "tm.event = 'NewBlockHeader'", 4)
    hub.subscribe(slow, "tm.event EXISTS", 1)
    with pytest.raises(SubscribeError, match="max_subscription_clients 2 reached"):
        hub.subscribe(third, "tm.event = 'Tx'", 1)
    with pytest.raises(SubscribeError, match="failed to parse query"):
        hub.subscribe(slow, "tm.event ==", 5)

    bus.publish(new_block(10))  # 3 events for the slow client (which reads nothing)
    bus.publish(new_block(11))  # 3 more: its outbox of 4 overflows, it is dropped, the rest go on
    assert slow.dropped == "4 messages unread" and slow not in hub.clients
    assert len(_drain(slow_box)) == 4  # what was queued, then the end of the outbox
    got = [(m["id"], m["result"]["data"]["type"]) for m in _drain(fast_box)]
    assert got == [
        (1, "tendermint/event/NewBlockHeader"),
        ("two", "tendermint/event/NewBlock"),  # both match height 11; one message per subscription
        (1, "tendermint/event/NewBlockHeader"),
        ("two", "tendermint/event/NewBlockEvents"),
    ]
    hub.subscribe(third, "tm.event = 'Tx'", 1)  # the dropped client freed its place
    hub.unsubscribe(fast, "tm.event = 'NewBlockHeader'")
    with pytest.raises(SubscribeError, match="subscription not found"):
        hub.unsubscribe(fast, "tm.event = 'NewBlockHeader'")
