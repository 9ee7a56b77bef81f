"""The second `/websocket` listener (`node.ws_server`) on a real socket, without a node: methods
answered by the RPC's handler, subscriptions served by the hub, pings, fragmented and oversized
messages, refused upgrades, the connection limit, and a client that does not read told why and
closed while the publisher goes on."""

from __future__ import annotations

import json
import random
import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage
from wsproto.frame_protocol import FrameProtocol

from node.events import EventBus
from node.streams import StreamKey
from node.websocket import Hub, Limits
from node.ws_server import DirectSender, FrameCache, WebSocketServer
from tests.node.test_websocket import new_block
from tests.p2p.helpers import wait_until

JSON = dict[str, Any]


async def _echo(request: JSON) -> JSON:
    return {"jsonrpc": "2.0", "id": request.get("id"), "result": {"method": request.get("method")}}


@asynccontextmanager
async def _served(
    hub: Hub, *, max_connections: int = 0, max_message_bytes: int = 0
) -> AsyncIterator[tuple[WebSocketServer, int]]:
    server = WebSocketServer(hub, _echo, max_connections=max_connections, max_message_bytes=max_message_bytes)
    async with trio.open_nursery() as nursery:
        bound: str = await nursery.start(server.serve, "127.0.0.1", 0)
        yield server, int(bound.rsplit(":", 1)[1])
        nursery.cancel_scope.cancel()


def _request(method: str, request_id: Any, **params: Any) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})


async def test_methods_subscriptions_and_pings() -> None:
    hub = Hub()
    bus = EventBus()
    bus.sinks.append(hub.publish)
    async with _served(hub) as (_, port), open_websocket_url(f"ws://127.0.0.1:{port}/websocket") as ws:
        await ws.send_message(_request("status", 7))
        assert json.loads(await ws.get_message()) == {
            "jsonrpc": "2.0",
            "id": 7,
            "result": {"method": "status"},
        }
        await ws.send_message(_request("subscribe", "h", query="tm.event = 'NewBlockHeader'"))
        assert json.loads(await ws.get_message()) == {"jsonrpc": "2.0", "id": "h", "result": {}}
        bus.publish(new_block(5))
        event = json.loads(await ws.get_message())
        assert event["id"] == "h" and event["result"]["data"]["type"] == "tendermint/event/NewBlockHeader"
        assert event["result"]["data"]["value"]["header"]["height"] == "5"
        with trio.fail_after(5):
            await ws.ping(b"are you there")  # returns when the pong with this payload arrives
        await ws.send_message(_request("unsubscribe_all", 8))
        assert json.loads(await ws.get_message())["result"] == {}
        assert hub.clients and not hub.clients[0].subscriptions
    await wait_until(lambda: not hub.clients, what="the closed connection to leave the hub")


class _RawClient:
    """A WebSocket client on a blocking socket that reads only when told to."""

    def __init__(self, port: int, receive_buffer: int = 0) -> None:
        self.sock = socket.socket()
        if receive_buffer:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.sock.sendall(self.ws.send(Request(host="127.0.0.1", target="/websocket")))
        assert isinstance(self._next(), AcceptConnection)

    def _next(self) -> Any:
        while True:
            for event in self.ws.events():
                return event
            data = self.sock.recv(65536)
            if not data:
                return None
            self.ws.receive_data(data)

    def send(self, text: str, *, finished: bool = True) -> None:
        self.sock.sendall(self.ws.send(Message(data=text, message_finished=finished)))

    def messages(self) -> tuple[list[str], int | None]:
        """Every message until the server closes, and the close code."""
        texts: list[str] = []
        part = ""
        while True:
            event = self._next()
            if isinstance(event, TextMessage):
                part += event.data
                if event.message_finished:
                    texts.append(part)
                    part = ""
            elif isinstance(event, CloseConnection):
                return texts, int(event.code)
            elif event is None:
                return texts, None


async def test_a_client_that_does_not_read_is_told_why_and_closed() -> None:
    hub = Hub(Limits(outbox=2))
    async with _served(hub) as (_, port):
        reader = await trio.to_thread.run_sync(lambda: _RawClient(port, receive_buffer=4096))
        other = await trio.to_thread.run_sync(lambda: _RawClient(port))
        await wait_until(lambda: len(hub.clients) == 2, what="the server to accept both clients")
        slow, fast = hub.clients
        big = "x" * 1_000_000
        sent = 0
        while hub.deliver(slow, json.dumps({"n": sent, "pad": big})):  # the kernel's buffers fill,
            sent += 1  # then two messages wait, then one more is refused and the client dropped
            assert sent < 100, "the sender never blocked"
        assert slow.dropped == "2 messages unread" and slow not in hub.clients
        assert not hub.deliver(slow, "late")  # nothing more is taken
        assert hub.deliver(fast, '{"still": "served"}')  # the others go on
        texts, code = await trio.to_thread.run_sync(reader.messages)
        numbers = [json.loads(t)["n"] for t in texts[:-1]]
        assert numbers == list(range(len(numbers))) and len(numbers) < sent  # in order, the rest not sent
        assert json.loads(texts[-1])["error"]["data"] == "disconnected: 2 messages unread"
        assert code == 1008
        assert await trio.to_thread.run_sync(other._next) == TextMessage(data='{"still": "served"}')


async def test_fragments_oversized_messages_and_refusals() -> None:
    hub = Hub()
    async with _served(hub, max_connections=2, max_message_bytes=100) as (_, port):
        client = await trio.to_thread.run_sync(lambda: _RawClient(port))
        client.send('{"jsonrpc": "2.0", "id": 1, ', finished=False)
        client.send('"method": "health"}')
        assert json.loads((await trio.to_thread.run_sync(client._next)).data)["result"] == {
            "method": "health"
        }
        client.send("y" * 101)
        assert (await trio.to_thread.run_sync(client.messages)) == ([], 1009)

        async with (
            open_websocket_url(f"ws://127.0.0.1:{port}/websocket"),
            open_websocket_url(f"ws://127.0.0.1:{port}/"),
        ):
            with pytest.raises(ConnectionRejected) as full:
                async with open_websocket_url(f"ws://127.0.0.1:{port}/websocket"):
                    pass
            assert full.value.status_code == 503
            assert b"max_open_connections 2 reached" in (full.value.body or b"")
        with pytest.raises(ConnectionRejected) as elsewhere:
            async with open_websocket_url(f"ws://127.0.0.1:{port}/stream"):
                pass
        assert elsewhere.value.status_code == 404
        async with httpx.AsyncClient() as http:
            plain = await http.get(f"http://127.0.0.1:{port}/websocket")
        assert plain.status_code == 400 and "not a WebSocket upgrade" in plain.text


async def test_a_peer_that_closes_is_answered() -> None:
    hub = Hub()
    async with _served(hub) as (_, port):
        client = await trio.to_thread.run_sync(lambda: _RawClient(port))
        client.sock.sendall(client.ws.send(CloseConnection(code=1000, reason="bye")))
        assert (await trio.to_thread.run_sync(client.messages)) == ([], 1000)  # echoed, then closed
        await wait_until(lambda: not hub.clients, what="the closed connection to leave the hub")


async def test_a_reset_connection_leaves_the_server_serving() -> None:
    hub = Hub()
    async with _served(hub) as (server, port):
        for _ in range(2):  # a reset while idle, then one with a message waiting to be read
            client = await trio.to_thread.run_sync(lambda: _RawClient(port))
            await wait_until(lambda: bool(hub.clients), what="the server to accept the client")
            assert hub.deliver(hub.clients[0], '{"unread": true}')
            client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            client.sock.close()  # linger 0: the kernel sends RST, the server's read fails
            await wait_until(
                lambda: not hub.clients and not server.connections, what="the reset connection to end"
            )
        async with open_websocket_url(f"ws://127.0.0.1:{port}/websocket") as ws:  # still serving
            await ws.send_message(_request("health", 3))
            assert json.loads(await ws.get_message())["result"] == {"method": "health"}


async def test_hostile_bytes_before_and_after_the_upgrade_leave_the_server_serving() -> None:
    hub = Hub()
    rng = random.Random(7)
    async with _served(hub, max_message_bytes=1000) as (server, port):

        def attack(upgraded: bool, garbage: bytes, reset: bool) -> None:
            if upgraded:
                client = _RawClient(port)
                sock = client.sock
                if rng.random() < 0.5:  # sometimes a valid masked frame header, then nonsense
                    garbage = client.ws.send(Message(data="x" * 10))[:6] + garbage
            else:
                sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(garbage)
            if reset:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

        for _ in range(60):
            garbage = rng.randbytes(rng.choice((1, 7, 130, 5000)))
            upgraded, reset = rng.random() < 0.6, rng.random() < 0.5
            await trio.to_thread.run_sync(attack, upgraded, garbage, reset)
        # every connection ends (a handshake left half-sent times out at 10 s)
        await wait_until(lambda: not server.connections, timeout=15, what="every connection to end")
        async with open_websocket_url(f"ws://127.0.0.1:{port}/websocket") as ws:
            await ws.send_message(_request("health", 4))
            assert json.loads(await ws.get_message())["result"] == {"method": "health"}
        assert not hub.clients


async def test_a_failure_in_one_connection_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def failing(request: JSON) -> JSON:
        if request.get("method") == "boom":
            raise RuntimeError("a bug in a handler")
        return await _echo(request)

    server = WebSocketServer(Hub(), failing, max_connections=0, max_message_bytes=0)
    async with trio.open_nursery() as nursery:
        port = int((await nursery.start(server.serve, "127.0.0.1", 0)).rsplit(":", 1)[1])
        url = f"ws://127.0.0.1:{port}/websocket"
        async with open_websocket_url(url) as broken, open_websocket_url(url) as other:
            await broken.send_message(_request("boom", 1))
            with pytest.raises(ConnectionClosed), trio.fail_after(5):
                await broken.get_message()  # its connection ends
            await other.send_message(_request("health", 2))  # the other is still served
            assert json.loads(await other.get_message())["result"] == {"method": "health"}
        nursery.cancel_scope.cancel()
    assert "websocket connection failed: RuntimeError('a bug in a handler')" in caplog.text


def test_a_text_is_framed_once() -> None:
    cache = FrameCache()
    text = json.dumps({"a": "b" * 200})
    first = cache.frame(text)
    assert cache.frame(text) is first
    assert first[:4] == bytes([0x81, 126]) + len(text).to_bytes(2, "big") and first[4:] == text.encode()
    assert cache.frame(text + " ") is not first


async def test_messages_go_out_at_once_until_the_kernel_is_full_then_limit_more_wait() -> None:
    mine, theirs = socket.socketpair()
    with mine, theirs:
        mine.setblocking(False)
        delivered: list[int] = []
        sender = DirectSender(trio.socket.from_stdlib_socket(mine), FrameCache(), 2, delivered.append)
        accepted = 0
        with pytest.raises(trio.WouldBlock):
            while accepted < 1000:
                sender.send_nowait((json.dumps({"n": accepted, "pad": "x" * 100_000}), 1))
                accepted += 1
        assert delivered and accepted - len(delivered) == 2  # written at once, then 2 waited
        received = bytearray()

        def read_all() -> None:
            theirs.settimeout(5)
            while len(received) < accepted * 100_020:  # each frame is a little more
                received.extend(theirs.recv(1 << 20))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.drain)
            await trio.to_thread.run_sync(read_all)
            sender.finish([])
        assert len(delivered) == accepted  # the waiting ones were written by drain, whole
        frames = FrameProtocol(client=True, extensions=[])  # as the client reads them
        frames.receive_bytes(bytes(received))
        numbers = [json.loads(str(frame.payload))["n"] for frame in frames.received_frames()]
        assert numbers == list(range(accepted))


class _Capture:
    """An outbox that keeps what the hub gives it."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def send_nowait(self, item: tuple[str, int]) -> None:
        self.items.append(item[0])

    def close(self) -> None:
        pass


class _OneBook:
    """A stand-in for `MarketStreams`: every block has one message for the BTC-USD book."""

    def open(self, key: StreamKey) -> None:
        return None

    def close(self, key: StreamKey) -> None:
        pass

    def on_block(self, event: Any, wanted: set[StreamKey]) -> dict[StreamKey, JSON]:
        return {key: {"stream": "book", "data": {"seq": 1}} for key in wanted}


def test_followers_with_the_same_request_id_share_one_text() -> None:
    hub = Hub(streams=_OneBook())  # type: ignore[arg-type]
    outboxes = [_Capture() for _ in range(3)]
    clients = [hub.attach(outbox) for outbox in outboxes]
    for client, request_id in zip(clients, (1, 1, "x"), strict=True):
        hub.subscribe_stream(client, {"stream": "book", "market": "BTC-USD"}, request_id)
    hub.publish(new_block(3))
    (first,), (second,), (third,) = (outbox.items for outbox in outboxes)
    assert first is second  # one text, so the direct transport frames it once
    assert json.loads(first)["id"] == 1 and json.loads(third)["id"] == "x"
    assert json.loads(third)["result"] == {"stream": "book", "data": {"seq": 1}}
