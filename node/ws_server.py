"""The `/websocket` protocol on a listener of its own (`[rpc] websocket_laddr`), for many stream
subscribers: the same JSON-RPC, subscriptions and market-data streams as the RPC port's
`/websocket` (one `node.websocket.Hub`, the RPC's request handler), with a transport of its own.

On the RPC port each message to each client goes through the ASGI server (a task switch, hypercorn,
wsproto and one `send` per frame: ~100 us of the node's one thread). Here the hub's publish writes
a block's message to each follower's socket at once: the frame is built once per distinct text (a
block's stream message is one text for every follower that subscribed with the same request id)
and written with one non-blocking `write`; only what the kernel does not take waits, in order, for
the connection's writer task. A connection with more than the outbox's messages waiting is sent
the reason and closed (1008), as on `/websocket`. The handshake and every frame a client sends are
wsproto's; no extension is accepted (a compressed frame could not be shared).
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import Callable

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, FrameProtocol
from wsproto.utilities import RemoteProtocolError

from node.websocket import Client, Handler, Hub, Queued, answer, drop_notice

log = logging.getLogger("derivd.websocket")

PATHS = ("/websocket", "/")
"""where a client connects (CometBFT clients add `/websocket` to the node's address)"""
HANDSHAKE_SECONDS = 10.0
"""a connection that has not completed its upgrade by then is closed"""
CLOSING_SECONDS = 5.0
"""how long a closing connection's last frames may wait for the client to read them"""
_READ_SIZE = 65536


def _server_frame(text: str) -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))


def _close_frame(code: CloseReason, reason: str = "") -> bytes:
    return bytes(FrameProtocol(client=False, extensions=[]).close(code, reason))


class FrameCache:
    """The frame of the last text framed: a block's message to N followers is framed once."""

    def __init__(self) -> None:
        self._text: str | None = None
        self._frame = b""

    def frame(self, text: str) -> bytes:
        if text is not self._text:
            self._text, self._frame = text, _server_frame(text)
        return self._frame


class DirectSender:
    """One connection's outbox as the hub uses a client's (`send_nowait`, `close`): a message is
    written to the socket at once when nothing waits before it; the rest waits for `drain`."""

    def __init__(
        self, sock: trio.socket.SocketType, frames: FrameCache, limit: int, delivered: Callable[[int], None]
    ) -> None:
        self._sock = sock
        self._fd = sock.fileno()
        self._frames = frames
        self._limit = limit
        self._delivered = delivered
        self._waiting: deque[tuple[memoryview, int]] = deque()
        self._wake = trio.Event()
        self._scope = trio.CancelScope()
        self.client: Client | None = None
        self.closing = False
        self.broken = False

    def send_nowait(self, item: Queued) -> None:
        """Write (or queue) one text message: trio.WouldBlock once `limit` messages wait,
        trio.ClosedResourceError once closing or the socket failed (the hub's outbox contract)."""
        if self.closing or self.broken:
            raise trio.ClosedResourceError
        if len(self._waiting) >= self._limit:
            raise trio.WouldBlock
        text, queued = item
        self._write(self._frames.frame(text), queued)

    def send_frame(self, frame: bytes) -> None:
        """A frame of the protocol's own (a pong), in order with the messages."""
        if not (self.closing or self.broken):
            self._write(frame, 0)

    def _write(self, frame: bytes, queued: int) -> None:
        view = memoryview(frame)
        if not self._waiting:
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                written = 0
            except OSError:
                self.broken = True
                self._wake.set()
                raise trio.ClosedResourceError from None
            if written == len(view):
                if queued:
                    self._delivered(queued)
                return
            view = view[written:]
        self._waiting.append((view, queued))
        self._wake.set()

    def close(self) -> None:
        """The hub stopped serving the client: tell it why (if it was dropped) and close."""
        client = self.client
        self.finish([_server_frame(drop_notice(client.dropped))] if client and client.dropped else [])

    def finish(self, last: list[bytes]) -> None:
        """Close after the frame being written (if any) and `last` (then a 1008 close frame if
        the client was dropped; messages not started are not sent); at most CLOSING_SECONDS more."""
        if self.closing:
            return
        started = self._waiting[0] if self._waiting else None
        self._waiting.clear()
        if started is not None and started[0].nbytes < len(started[0].obj):  # type: ignore[arg-type]
            self._waiting.append(started)
        if self.client is not None and self.client.dropped:
            last = [*last, _close_frame(CloseReason.POLICY_VIOLATION)]
        self._waiting.extend((memoryview(frame), 0) for frame in last)
        self.closing = True
        self._scope.deadline = trio.current_time() + CLOSING_SECONDS
        self._wake.set()

    async def drain(self) -> None:
        """Write what waits as the socket takes it; return once closing and empty, or broken."""
        with self._scope:
            while not self.broken:
                if not self._waiting:
                    if self.closing:
                        return
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                await trio.lowlevel.wait_writable(self._sock)
                view, queued = self._waiting[0]
                try:
                    written = os.write(self._fd, view)
                except BlockingIOError:
                    continue
                except OSError:
                    self.broken = True
                    return
                if written < len(view):
                    self._waiting[0] = (view[written:], queued)
                    continue
                self._waiting.popleft()
                if queued:
                    self._delivered(queued)


class WebSocketServer:
    """Serves the hub's subscriptions and `handle` (the RPC's methods) over WebSocket."""

    def __init__(self, hub: Hub, handle: Handler, *, max_connections: int, max_message_bytes: int) -> None:
        self.hub = hub
        self.handle = handle
        self.max_connections = max_connections
        """0: no limit"""
        self.max_message_bytes = max_message_bytes
        """a client's message above this closes its connection (1009); 0: no limit"""
        self.frames = FrameCache()
        self.connections = 0

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen on (host, port) until cancelled; report the bound address (`ws://host:port`)."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound_host, bound_port = listeners[0].socket.getsockname()[:2]
        task_status.started(f"ws://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}")
        await trio.serve_listeners(self._connection, listeners)

    async def _connection(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            async with stream:
                ws = WSConnection(ConnectionType.SERVER)
                accepted = False
                with trio.move_on_after(HANDSHAKE_SECONDS):
                    accepted = await self._handshake(stream, ws)
                if accepted:
                    await self._serve(stream, ws)
        except* (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away (a reset, a write to a closed socket)
        except* Exception as group:  # one connection's failure must not stop the node
            log.error("websocket connection failed: %r", group.exceptions[0], exc_info=group)
        finally:
            self.connections -= 1

    async def _handshake(self, stream: trio.SocketStream, ws: WSConnection) -> bool:
        """Read the upgrade request and answer it; whether the connection is a WebSocket now."""
        while True:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                return False
            try:
                ws.receive_data(data)
                request = next((e for e in ws.events() if isinstance(e, Request)), None)
            except RemoteProtocolError as exc:  # not a WebSocket upgrade
                await _reject(stream, ws, 400, f"not a WebSocket upgrade: {exc}")
                return False
            if request is None:
                continue
            path = request.target.split("?", 1)[0]
            if path not in PATHS:
                await _reject(stream, ws, 404, f"no WebSocket at {path}: connect to /websocket")
                return False
            if self.max_connections and self.connections > self.max_connections:
                await _reject(stream, ws, 503, f"max_open_connections {self.max_connections} reached")
                return False
            await stream.send_all(ws.send(AcceptConnection()))
            return True

    async def _serve(self, stream: trio.SocketStream, ws: WSConnection) -> None:
        observe = self.hub.observe_delivery
        sender = DirectSender(
            stream.socket,
            self.frames,
            self.hub.limits.outbox,
            (lambda queued: observe((time.monotonic_ns() - queued) / 1e9)) if observe else (lambda _: None),
        )
        client = sender.client = self.hub.attach(sender)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._read, stream, ws, sender, client)
                await sender.drain()
                nursery.cancel_scope.cancel()
        finally:
            self.hub.disconnect(client)

    async def _read(
        self, stream: trio.SocketStream, ws: WSConnection, sender: DirectSender, client: Client
    ) -> None:
        parts: list[str] = []
        size = 0
        while not sender.closing:
            data = await stream.receive_some(_READ_SIZE)
            if not data:
                sender.finish([])
                return
            try:
                ws.receive_data(data)
                events = list(ws.events())
            except RemoteProtocolError as exc:
                sender.finish([_close_frame(CloseReason.PROTOCOL_ERROR, str(exc)[:120])])
                return
            for event in events:
                if isinstance(event, TextMessage | BytesMessage):
                    chunk = (
                        event.data if isinstance(event.data, str) else event.data.decode("utf-8", "replace")
                    )
                    size += len(chunk)
                    if self.max_message_bytes and size > self.max_message_bytes:
                        sender.finish([_close_frame(CloseReason.MESSAGE_TOO_BIG, "message too big")])
                        return
                    parts.append(chunk)
                    if event.message_finished:
                        text, parts, size = "".join(parts), [], 0
                        for reply in await answer(text, self.hub, client, self.handle):
                            if not self.hub.deliver(client, reply):
                                return
                elif isinstance(event, Ping):
                    sender.send_frame(ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    sender.finish([ws.send(event.response())])
                    return


async def _reject(stream: trio.SocketStream, ws: WSConnection, status: int, reason: str) -> None:
    """Answer a request that is not served with `status` and `reason`."""
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    data = ws.send(RejectConnection(status_code=status, headers=headers, has_body=True))
    await stream.send_all(data + ws.send(RejectData(data=reason.encode())))
