"""The RPC's `/websocket` endpoint: CometBFT's JSON-RPC over WebSocket with event subscriptions.

A client sends `subscribe` / `unsubscribe` (params `{"query": ...}`, `node.query`'s language)
and `unsubscribe_all`; every other method is the HTTP RPC's, answered on the socket. Each event
that matches one of its queries arrives as CometBFT 0.38 sends it: `{"jsonrpc": "2.0", "id": <the
subscribe request's id>, "result": {"query", "data": {"type": "tendermint/event/<Name>", "value"},
"events": {tag: [values]}}}`. Events: NewBlock, NewBlockHeader, NewBlockEvents, Tx,
ValidatorSetUpdates (from committed blocks), NewRound, NewRoundStep and Vote (from the consensus
driver's steps and the votes its machine adds). `subscribe` with `{"stream": ...}` instead of a
query follows a market-data stream (`node.streams`): its messages are `{"jsonrpc", "id",
"result": {"stream", ..., "data"}}`.

`Hub` is the event bus's sink: at publish it computes an event's tags once if a query may match
it (`tm.event` rules out the others first), and its JSON once if one does, and puts the text in
each matching client's bounded outbox (`Outbox`: here a memory channel drained by the client's
writer task; on the second listener, `node.ws_server`, the socket itself). A client whose outbox
is full is sent nothing more and disconnected (the node never waits for a reader);
`max_subscription_clients` and `max_subscriptions_per_client` bound the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from consensus.app import Event
from consensus.machine import Step
from node import jsonfmt
from node.events import BusEvent, NewBlock, RoundStepChanged, TxCommitted, VoteAdded
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
    id_json: str
    """`request_id` as JSON: the followers that used the same id share a message's text"""


Queued = tuple[str, int]
"""a message for a client and, for a block's stream message, when the hub queued it (monotonic ns;
0 for the rest): the writer observes the delivery time from it"""


class Outbox(Protocol):
    """Where the hub puts a client's messages: a bounded memory channel its writer task drains
    (the RPC port's `/websocket`), or the socket itself (`node.ws_server`)."""

    def send_nowait(self, item: Queued) -> None:
        """trio.WouldBlock when full; trio.ClosedResourceError or BrokenResourceError when gone."""

    def close(self) -> None:
        """The hub sends nothing more (the client left or was dropped: `Client.dropped`)."""


@dataclass(eq=False)
class Client:
    """One WebSocket connection: its subscriptions (by query text, or `StreamKey.text`) and its
    outbox."""

    send: Outbox
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
        case VoteAdded(vote=vote):
            return [_Outgoing("Vote", lambda: {"Vote": jsonfmt.vote(vote)})]
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
        # the subscriptions by kind, so that publishing visits those that may want an event only
        self._queries: dict[tuple[int, str], tuple[Client, str, QuerySubscription]] = {}
        self._followers: dict[StreamKey, dict[int, tuple[Client, StreamSubscription]]] = {}
        self.sent = 0
        self.dropped_clients = 0
        self.observe_delivery: Callable[[float], None] | None = None
        """called with the seconds from a block's stream messages being queued to each one's send
        to its client completing (the node's share of the stream latency; `node.metrics`)"""

    def connect(self) -> tuple[Client, trio.MemoryReceiveChannel[Queued]]:
        """A new client whose messages wait in a channel (at most `limits.outbox`); its receiving
        end, for the client's writer task."""
        send, receive = trio.open_memory_channel[Queued](self.limits.outbox)
        return self.attach(send), receive

    def attach(self, outbox: Outbox) -> Client:
        """A new client whose messages go to `outbox`."""
        client = Client(outbox)
        self.clients.append(client)
        return client

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
        subscription = QuerySubscription.of(query, request_id)
        client.subscriptions[text] = subscription
        self._queries[(id(client), text)] = (client, text, subscription)

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
        subscription = StreamSubscription(key=key, request_id=request_id, id_json=json.dumps(request_id))
        client.subscriptions[key.text] = subscription
        self._followers.setdefault(key, {})[id(client)] = (client, subscription)
        return None if first is None else _stream_message(subscription.id_json, json.dumps(first))

    def unsubscribe(self, client: Client, text: str) -> None:
        subscription = client.subscriptions.pop(text, None)
        if subscription is None:
            raise SubscribeError("subscription not found")
        if isinstance(subscription, QuerySubscription):
            del self._queries[(id(client), text)]
            return
        followers = self._followers[subscription.key]
        del followers[id(client)]
        if not followers:
            del self._followers[subscription.key]
        if self.streams is not None:
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
        if not self._queries:
            return
        for item in outgoing(event):
            for client, text, subscription in list(self._queries.values()):
                if client.dropped:
                    continue
                if subscription.names is not None and item.name not in subscription.names:
                    continue
                if subscription.query.matches(item.tags):
                    self.deliver(client, item.message(text, subscription.request_id))

    def _publish_streams(self, event: NewBlock) -> None:
        assert self.streams is not None
        messages = self.streams.on_block(event, set(self._followers))
        queued = time.monotonic_ns()
        for key, message in messages.items():
            text = json.dumps(message)
            by_id: dict[str, str] = {}  # one text per request id: a transport may frame it once
            for client, subscription in list(self._followers.get(key, {}).values()):
                if not client.dropped:
                    out = by_id.get(subscription.id_json)
                    if out is None:
                        out = by_id[subscription.id_json] = _stream_message(subscription.id_json, text)
                    self.deliver(client, out, queued)

    def deliver(self, client: Client, text: str, queued: int = 0) -> bool:
        """Queue `text` for `client`; False if the client is gone or was dropped as too slow."""
        try:
            client.send.send_nowait((text, queued))
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


def _stream_message(id_json: str, result: str) -> str:
    return f'{{"jsonrpc": "2.0", "id": {id_json}, "result": {result}}}'


def _response(request_id: Any, result: JSON) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "result": result})


def _error(request_id: Any, code: int, message: str, data: str = "") -> str:
    body: JSON = {"code": code, "message": message}
    if data:
        body["data"] = data
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": body})


Handler = Callable[[JSON], Awaitable[JSON]]
"""a JSON-RPC request -> its response, as the HTTP RPC answers it (`node.rpc`)"""


ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class Endpoint:
    """The `/websocket` ASGI app: the protocol's messages handled directly (no per-message
    wrapper: a block's stream messages go to every subscriber, so each send counts)."""

    def __init__(self, hub: Hub, handle: Handler) -> None:
        self.hub = hub
        self.handle = handle

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        client, outbox = self.hub.connect()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_write, send, outbox, client, self.hub, nursery.cancel_scope)
                await _read(receive, self.hub, client, self.handle)
                nursery.cancel_scope.cancel()
        finally:
            self.hub.disconnect(client)


async def _write(
    send: ASGISend,
    outbox: trio.MemoryReceiveChannel[Queued],
    client: Client,
    hub: Hub,
    scope: trio.CancelScope,
) -> None:
    async for text, queued in outbox:
        await send({"type": "websocket.send", "text": text})
        if queued and hub.observe_delivery is not None:
            hub.observe_delivery((time.monotonic_ns() - queued) / 1e9)
    # the hub dropped the client: say why, then close
    if client.dropped:
        await send({"type": "websocket.send", "text": drop_notice(client.dropped)})
        await send({"type": "websocket.close", "code": 1008})
    scope.cancel()


async def _read(receive: ASGIReceive, hub: Hub, client: Client, handle: Handler) -> None:
    while not client.dropped:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # closed by the client
        text = message.get("text")
        if text is None:
            raw = message.get("bytes") or b""
            text = raw.decode("utf-8", "replace")
        for reply in await answer(text, hub, client, handle):
            if not hub.deliver(client, reply):
                return  # gone, or dropped as too slow


def parse_json(text: bytes | str) -> Any:
    """A request's JSON value (HTTP body or WebSocket message); ValueError, saying why, for what
    is not strict JSON: bytes that are not UTF-8, NaN or Infinity, a number out of float range,
    an integer of more digits than Python converts, nesting deeper than the parser's stack."""
    try:
        return json.loads(
            text.decode() if isinstance(text, bytes) else text,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number out of range: {text[:40]}")
    return value


def _query_param(params: Any) -> str | None:
    if isinstance(params, dict):
        query = params.get("query")
    elif isinstance(params, list) and params:
        query = params[0]
    else:
        return None
    return query if isinstance(query, str) else None


def drop_notice(reason: str) -> str:
    """The last message to a client the hub dropped (then the socket closes with 1008)."""
    return _error(None, -32000, "Server error", f"disconnected: {reason}")


async def answer(text: str, hub: Hub, client: Client, handle: Handler) -> list[str]:
    """The messages answering one request: its reply, then a stream's first message if any."""
    try:
        request = parse_json(text)
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
