"""Book-stream subscribers for `derivd bench throughput --book-subscribers N`: N WebSocket
connections to one node, each subscribed to one market's book (`node.streams`), run in a
process of their own (`python -m node.bench_streams URL MARKET COUNT SECONDS`): it prints
`ready` once every connection has its snapshot, then, SECONDS later, one JSON object.

Each message's latency is the subscriber's wall clock when the message is read minus the node's
`published` stamp (taken at commit, when the stream's messages are built): one machine, one
clock. It includes the time the subscriber process takes to get to the message among COUNT
connections, so the figure bounds what a client on its own machine sees from above; to keep that
share small the subscribers are lean: blocking handshakes (wsproto), then one epoll loop over
every socket that reads the server's frames (unmasked, never compressed: a two-to-ten-byte header
then the text) without a library per message. Its CPU is reported (`cpu_seconds`, and
`cpu_us_per_message`). Sequence gaps and connections the node closed are counted.
"""

from __future__ import annotations

import json
import resource
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Message, RejectConnection, Request

_TEXT, _CLOSE = 0x1, 0x8


@dataclass
class _Tally:
    latencies_ns: list[int] = field(default_factory=list)
    messages: int = 0
    snapshots: int = 0
    gaps: int = 0
    closed: int = 0
    failed: list[str] = field(default_factory=list)


@dataclass
class _Follower:
    sock: socket.socket
    buffer: bytearray = field(default_factory=bytearray)
    seq: int = -1


def _connect(url: str, market: str) -> socket.socket:
    """A connection that has sent its subscribe request (the reply is read with the stream)."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host=parts.netloc, target=parts.path or "/")))
    while True:
        data = sock.recv(65536)
        if not data:
            raise OSError("the node closed the connection during the handshake")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, RejectConnection):
                raise OSError(f"the node refused the upgrade: {event.status_code}")
            if isinstance(event, AcceptConnection):
                request = {
                    "jsonrpc": "2.0",
                    "id": 1,
                    "method": "subscribe",
                    "params": {"stream": "book", "market": market},
                }
                sock.sendall(ws.send(Message(data=json.dumps(request))))
                sock.setblocking(False)
                return sock


def _frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """Take the complete frames at the start of `buffer` (server frames: not masked)."""
    out = []
    while len(buffer) >= 2:
        opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                break
            length, start = int.from_bytes(buffer[2:4], "big"), 4
        elif length == 127:
            if len(buffer) < 10:
                break
            length, start = int.from_bytes(buffer[2:10], "big"), 10
        if len(buffer) < start + length:
            break
        out.append((opcode, bytes(buffer[start : start + length])))
        del buffer[: start + length]
    return out


def _read(follower: _Follower, tally: _Tally, count: int) -> bool:
    """Take what arrived on one connection; False once it is closed."""
    try:
        data = follower.sock.recv(1 << 20)
    except BlockingIOError:
        return True
    except OSError:
        data = b""
    now = time.time_ns()
    if not data:
        tally.closed += 1
        return False
    follower.buffer += data
    for opcode, payload in _frames(follower.buffer):
        if opcode == _CLOSE:
            tally.closed += 1
            return False
        if opcode != _TEXT:
            continue
        message = json.loads(payload)
        if "error" in message:
            tally.failed.append(str(message["error"].get("data")))
            _settled(tally, count)
            continue
        result = message.get("result")
        if not result:
            continue  # the reply to subscribe
        data_ = result["data"]
        if data_["type"] == "snapshot":
            tally.snapshots += 1
            _settled(tally, count)
        else:
            tally.messages += 1
            tally.latencies_ns.append(now - int(result["published"]))
            if data_["seq"] != follower.seq + 1:
                tally.gaps += 1
        follower.seq = data_["seq"]
    return True


def _settled(tally: _Tally, count: int) -> None:
    """Print `ready` once every connection has its snapshot or has failed."""
    if tally.snapshots + len(tally.failed) == count:
        print("ready", flush=True)


def _run(url: str, market: str, count: int, seconds: float) -> _Tally:
    tally = _Tally()
    selector = selectors.DefaultSelector()
    for _ in range(count):
        try:
            follower = _Follower(_connect(url, market))
        except OSError as exc:
            tally.failed.append(str(exc))
            _settled(tally, count)
            continue
        selector.register(follower.sock, selectors.EVENT_READ, follower)
    deadline = time.monotonic() + seconds
    while selector.get_map() and (left := deadline - time.monotonic()) > 0:
        for key, _ in selector.select(left):
            follower = key.data
            if not _read(follower, tally, count):
                selector.unregister(follower.sock)
                follower.sock.close()
    return tally


def main() -> None:
    url, market, count, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    tally = _run(url, market, count, seconds)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(
        json.dumps(
            {
                "latencies_ns": tally.latencies_ns,
                "messages": tally.messages,
                "snapshots": tally.snapshots,
                "gaps": tally.gaps,
                "closed": tally.closed,
                "failed": tally.failed[:5],
                "cpu_seconds": cpu,
            }
        )
    )


if __name__ == "__main__":
    main()
