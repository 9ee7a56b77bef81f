"""The RPC's `/websocket` endpoint: CometBFT's JSON-RPC over WebSocket with event subscriptions.

A client sends `subscribe` / `unsubscribe` (params `{"query": ...}`, `node.query`'s language)
and `unsubscribe_all`; every other method is the HTTP RPC's, answered on the socket. Each event
that matches one of its queries arrives as CometBFT 0.38 sends it: `{"jsonrpc": "2.0", "id": <the
subscribe request's id>, "result": {"query", "data": {"type": "tendermint/event/<Name>", "value"},
"events": {tag: [values]}}}`. Events: NewBlock, NewBlockHeader, NewBlockEvents, Tx,
ValidatorSetUpdates (from committed blocks), NewRound and NewRoundStep (from the consensus
driver's steps). `subscribe` with `{"stream": ...}` instead of a query follows a market-data
stream (`node.streams`): its messages are `{"jsonrpc", "id", "result": {"stream", ..., "data"}}`.

`Hub` is the event bus's sink: at publish it computes an event's tags once if a query may match
it (`tm.event` rules out the others first), and its JSON once if one does, and queues the text
on each matching client's bounded outbox. A client whose outbox is full is sent nothing more and
disconnected (the node never waits for a reader); `max_subscription_clients` and
`max_subscriptions_per_client` bound the rest.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.websockets import WebSocket, WebSocketDisconnect

from consensus.app import Event
from consensus.machine import Step
from node import jsonfmt
from node.events import BusEvent, NewBlock, RoundStepChanged, TxCommitted
from node.query import (
    BLOCK_HEIGHT_TAG,
    EVENT_TYPE_TAG,
    TX_HASH_TAG,
    TX_HEIGHT_TAG,
    Kind,
    Op,
    Query,
    QueryError,
)
from node.query import parse as parse_query
from node.streams import MarketStreams, StreamError, StreamKey, parse_stream

JSON = dict[str, Any]
Tags = dict[str, list[str]]

_STEP_NAMES = {
    Step.NEW_HEIGHT: "RoundStepNewHeight",
    Step.NEW_ROUND: "RoundStepNewRound",
    Step.PROPOSE: "RoundStepPropose",
    Step.PREVOTE: "RoundStepPrevote",
    Step.PREVOTE_WAIT: "RoundStepPrevoteWait",
    Step.PRECOMMIT: "RoundStepPrecommit",
    Step.PRECOMMIT_WAIT: "RoundStepPrecommitWait",
    Step.COMMIT: "RoundStepCommit",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    max_clients: int = 100
    """clients with at least one subscription (0: no limit)"""
    max_per_client: int = 5
    """subscriptions of one client (0: no limit)"""
    outbox: int = 5000
    """messages queued for one client before it is disconnected as too slow"""


@dataclass(frozen=True, slots=True, kw_only=True)
class QuerySubscription:
    query: Query
    request_id: Any
    """the subscribe request's id: every event message carries it"""
    names: frozenset[str] | None
    """the event names its `tm.event = '...'` conditions allow (None: any)"""

    @classmethod
    def of(cls, query: Query, request_id: Any) -> QuerySubscription:
        names: frozenset[str] | None = None
        for c in query.conditions:
            if c.tag == EVENT_TYPE_TAG and c.op is Op.EQ and c.kind is Kind.STRING:
                names = frozenset({c.text}) if names is None else names & {c.text}
        return cls(query=query, request_id=request_id, names=names)


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSubscription:
    key: StreamKey
    request_id: Any


@dataclass(eq=False)
class Client:
    """One WebSocket connection: its subscriptions (by query text, or `StreamKey.text`) and the
    outbox its writer task drains."""

    send: trio.MemorySendChannel[str]
    subscriptions: dict[str, QuerySubscription | StreamSubscription] = field(default_factory=dict)
    dropped: str = ""
    """why the hub stopped sending (empty while it is served)"""


class _Outgoing:
    """One CometBFT event: its tags and its message's JSON, each built on first use (a query on
    `tm.event` alone skips the events of other names without either)."""

    __slots__ = ("_data", "_events", "_reserved", "_source", "_tags", "_value", "name")

    def __init__(
        self,
        name: str,
        value: Callable[[], JSON],
        events: Iterable[Event] = (),
        reserved: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self._value = value
        self._source = events
        self._reserved = reserved or {}
        self._tags: Tags | None = None
        self._data = ""
        self._events = ""

    @property
    def tags(self) -> Tags:
        if self._tags is None:
            tags: Tags = {EVENT_TYPE_TAG: [self.name]}
            for tag, value in self._reserved.items():
                tags[tag] = [value]
            for event in self._source:
                for attribute in event.attributes:
                    if event.type and attribute.key:
                        tags.setdefault(f"{event.type}.{attribute.key}", []).append(attribute.value)
            self._tags = tags
        return self._tags

    def message(self, query: str, request_id: Any) -> str:
        if not self._data:
            self._data = json.dumps({"type": f"tendermint/event/{self.name}", "value": self._value()})
            self._events = json.dumps(self.tags)
        return (
            f'{{"jsonrpc": "2.0", "id": {json.dumps(request_id)}, "result": {{"query": {json.dumps(query)}, '
            f'"data": {self._data}, "events": {self._events}}}}}'
        )


def outgoing(event: BusEvent) -> list[_Outgoing]:
    """The CometBFT events one bus event makes, in the order CometBFT publishes them."""
    match event:
        case NewBlock(block=block, block_id=block_id, results=results):
            height = {BLOCK_HEIGHT_TAG: str(block.header.height)}
            finalize = results.finalize
            out = [
                _Outgoing(
                    "NewBlock",
                    lambda: {
                        "block": jsonfmt.block(block),
                        "block_id": jsonfmt.block_id(block_id),
                        "result_finalize_block": jsonfmt.finalize_block_result(finalize),
                    },
                    finalize.events,
                    reserved=height,
                ),
                _Outgoing(
                    "NewBlockHeader", lambda: {"header": jsonfmt.header(block.header)}, reserved=height
                ),
                _Outgoing(
                    "NewBlockEvents",
                    lambda: {
                        "height": str(block.header.height),
                        "events": [jsonfmt.event(e) for e in finalize.events],
                        "num_txs": str(len(block.txs)),
                    },
                    finalize.events,
                    reserved=height,
                ),
            ]
            if finalize.validator_updates:
                out.append(
                    _Outgoing(
                        "ValidatorSetUpdates",
                        lambda: {"validator_updates": jsonfmt.validator_updates(finalize.validator_updates)},
                    )
                )
            return out
        case TxCommitted(height=height, index=index, tx=tx, hash=tx_hash, result=result):
            reserved = {TX_HASH_TAG: jsonfmt.hex_upper(tx_hash), TX_HEIGHT_TAG: str(height)}
            return [
                _Outgoing(
                    "Tx",
                    lambda: {
                        "TxResult": {
                            "height": str(height),
                            "index": index,
                            "tx": jsonfmt.b64(tx),
                            "result": jsonfmt.exec_tx_result(result),
                        }
                    },
                    result.events,
                    reserved=reserved,
                )
            ]
        case RoundStepChanged():
            state: JSON = {"height": str(event.height), "round": event.round, "step": _STEP_NAMES[event.step]}
            out = [_Outgoing("NewRoundStep", lambda: state)]
            if event.step is Step.NEW_ROUND:
                proposer = {"address": jsonfmt.hex_upper(event.proposer), "index": event.proposer_index}
                out.append(_Outgoing("NewRound", lambda: state | {"proposer": proposer}))
            return out


class SubscribeError(Exception):
    """A subscribe or unsubscribe the hub refuses; the message says why."""


class Hub:
    """The WebSocket clients and their subscriptions; the event bus's sink."""

    def __init__(self, limits: Limits | None = None, streams: MarketStreams | None = None) -> None:
        self.limits = limits or Limits()
        self.streams = streams
        self.clients: list[Client] = []
        self.sent = 0
        self.dropped_clients = 0

    def connect(self) -> tuple[Client, trio.MemoryReceiveChannel[str]]:
        send, receive = trio.open_memory_channel[str](self.limits.outbox)
        client = Client(send)
        self.clients.append(client)
        return client, receive

    def disconnect(self, client: Client) -> None:
        if client in self.clients:
            self.clients.remove(client)
        self.unsubscribe_all(client)

    def _admit(self, client: Client, text: str) -> None:
        if text in client.subscriptions:
            raise SubscribeError("already subscribed")
        limits = self.limits
        if not client.subscriptions and limits.max_clients:
            subscribing = sum(1 for c in self.clients if c.subscriptions)
            if subscribing >= limits.max_clients:
                raise SubscribeError(f"max_subscription_clients {limits.max_clients} reached")
        if limits.max_per_client and len(client.subscriptions) >= limits.max_per_client:
            raise SubscribeError(f"max_subscriptions_per_client {limits.max_per_client} reached")

    def subscribe(self, client: Client, text: str, request_id: Any) -> None:
        """Subscribe `client` to the events that match the query `text`."""
        self._admit(client, text)
        try:
            query = parse_query(text)
        except QueryError as exc:
            raise SubscribeError(f"failed to parse query: {exc}") from exc
        client.subscriptions[text] = QuerySubscription.of(query, request_id)

    def subscribe_stream(self, client: Client, params: dict[str, Any], request_id: Any) -> str | None:
        """Subscribe `client` to a market-data stream (`node.streams`); the stream's first
        message (a book's snapshot), to send after the reply, or None."""
        if self.streams is None:
            raise SubscribeError("market-data streams are not served by this node")
        try:
            key = parse_stream(params)
        except StreamError as exc:
            raise SubscribeError(str(exc)) from exc
        self._admit(client, key.text)
        try:
            first = self.streams.open(key)
        except StreamError as exc:
            raise SubscribeError(str(exc)) from exc
        client.subscriptions[key.text] = StreamSubscription(key=key, request_id=request_id)
        return None if first is None else _stream_message(request_id, json.dumps(first))

    def unsubscribe(self, client: Client, text: str) -> None:
        subscription = client.subscriptions.pop(text, None)
        if subscription is None:
            raise SubscribeError("subscription not found")
        if isinstance(subscription, StreamSubscription) and self.streams is not None:
            self.streams.close(subscription.key)

    def unsubscribe_stream(self, client: Client, params: dict[str, Any]) -> None:
        try:
            key = parse_stream(params)
        except StreamError as exc:
            raise SubscribeError(str(exc)) from exc
        self.unsubscribe(client, key.text)

    def unsubscribe_all(self, client: Client) -> None:
        for text in list(client.subscriptions):
            self.unsubscribe(client, text)

    def publish(self, event: BusEvent) -> None:
        """Queue `event` for every client with a matching query, and a block's stream messages
        for their subscribers (the bus calls this)."""
        if isinstance(event, NewBlock) and self.streams is not None:
            self._publish_streams(event)
        if not any(c.subscriptions for c in self.clients):
            return
        for item in outgoing(event):
            for client in list(self.clients):
                for text, subscription in list(client.subscriptions.items()):
                    if not isinstance(subscription, QuerySubscription):
                        continue
                    if subscription.names is not None and item.name not in subscription.names:
                        continue
                    if not subscription.query.matches(item.tags):
                        continue
                    if not self._send(client, item.message(text, subscription.request_id)):
                        break

    def _publish_streams(self, event: NewBlock) -> None:
        assert self.streams is not None
        wanted = {
            s.key for c in self.clients for s in c.subscriptions.values() if isinstance(s, StreamSubscription)
        }
        messages = self.streams.on_block(event, wanted)
        if not messages:
            return
        texts = {key: json.dumps(message) for key, message in messages.items()}
        for client in list(self.clients):
            for subscription in list(client.subscriptions.values()):
                if not isinstance(subscription, StreamSubscription) or subscription.key not in texts:
                    continue
                if not self._send(client, _stream_message(subscription.request_id, texts[subscription.key])):
                    break

    def _send(self, client: Client, text: str) -> bool:
        """Queue `text` for `client`; False if the client is gone or was dropped as too slow."""
        try:
            client.send.send_nowait(text)
        except trio.WouldBlock:
            self._drop(client, f"{self.limits.outbox} messages unread")
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self.disconnect(client)
            return False
        self.sent += 1
        return True

    def _drop(self, client: Client, reason: str) -> None:
        client.dropped = reason
        self.dropped_clients += 1
        self.disconnect(client)
        client.send.close()  # the writer sees the end of its outbox and closes the socket


def _stream_message(request_id: Any, result: str) -> str:
    return f'{{"jsonrpc": "2.0", "id": {json.dumps(request_id)}, "result": {result}}}'


def _response(request_id: Any, result: JSON) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def _error(request_id: Any, code: int, message: str, data: str = "") -> str:
    body: JSON = {"code": code, "message": message}
    if data:
        body["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": body})


Handler = Callable[[JSON], Awaitable[JSON]]
"""a JSON-RPC request -> its response, as the HTTP RPC answers it (`node.rpc`)"""


async def serve(websocket: WebSocket, hub: Hub, handle: Handler) -> None:
    """Serve one WebSocket connection until either side closes it."""
    await websocket.accept()
    client, outbox = hub.connect()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write, websocket, outbox, client, nursery.cancel_scope)
            await _read(websocket, hub, client, handle)
            nursery.cancel_scope.cancel()
    finally:
        hub.disconnect(client)


async def _write(
    websocket: WebSocket, outbox: trio.MemoryReceiveChannel[str], client: Client, scope: trio.CancelScope
) -> None:
    async for text in outbox:
        await websocket.send_text(text)
    # the hub dropped the client: say why, then close
    if client.dropped:
        await websocket.send_text(_error(None, -32000, "Server error", f"disconnected: {client.dropped}"))
        await websocket.close(code=1008)
    scope.cancel()


async def _read(websocket: WebSocket, hub: Hub, client: Client, handle: Handler) -> None:
    while not client.dropped:
        try:
            text = await websocket.receive_text()
        except (WebSocketDisconnect, KeyError, RuntimeError):
            return  # closed by the client, or a binary frame (starlette's KeyError): done
        try:
            for reply in await _reply(text, hub, client, handle):
                await client.send.send(reply)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            return  # dropped meanwhile


def _query_param(params: Any) -> str | None:
    if isinstance(params, dict):
        query = params.get("query")
    elif isinstance(params, list) and params:
        query = params[0]
    else:
        return None
    return query if isinstance(query, str) else None


async def _reply(text: str, hub: Hub, client: Client, handle: Handler) -> list[str]:
    """The messages answering one request: its reply, then a stream's first message if any."""
    try:
        request = json.loads(text)
    except ValueError as exc:
        return [_error(None, -32700, "Parse error", str(exc))]
    method = request.get("method") if isinstance(request, dict) else None
    if method not in ("subscribe", "unsubscribe", "unsubscribe_all") or request.get("jsonrpc") != "2.0":
        return [json.dumps(await handle(request))]
    request_id, params = request.get("id", -1), request.get("params")
    first = None
    try:
        if method == "unsubscribe_all":
            if not client.subscriptions:
                raise SubscribeError("subscription not found")
            hub.unsubscribe_all(client)
        elif isinstance(params, dict) and "stream" in params:
            if method == "subscribe":
                first = hub.subscribe_stream(client, params, request_id)
            else:
                hub.unsubscribe_stream(client, params)
        else:
            query = _query_param(params)
            if query is None:
                return [_error(request_id, -32602, "Invalid params", "query: expected a string")]
            if method == "subscribe":
                hub.subscribe(client, query, request_id)
            else:
                hub.unsubscribe(client, query)
    except SubscribeError as exc:
        return [_error(request_id, -32603, "Internal error", str(exc))]
    return [_response(request_id, {})] + ([first] if first is not None else [])
