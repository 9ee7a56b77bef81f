"""The switch's bounds on inbound handshakes, over real loopback sockets: 1,000 stalled
connections (silent, trickling a byte a second, or stopping after their ephemeral key) do not keep
a genuine peer on the same IP from connecting within 2 s; a handshake that has made progress
outlives newer stalled ones from its IP; one IP's flood takes no slot of another IP; past the total
bound the oldest go; and an inbound secret handshake has one short deadline however its bytes
trickle in.

Addresses in 127.0.0.0/8 other than 127.0.0.1 stand for other hosts (Linux routes all of them to
the loopback interface)."""

from __future__ import annotations

import contextlib
import enum
import resource
from collections.abc import Iterator
from functools import partial
from typing import assert_never

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2p.base import NodeInfo
from p2p.errors import P2PError
from p2p.nodeinfo import exchange_node_info
from p2p.nodekey import node_id
from p2p.secret_connection import SEALED_FRAME_SIZE, EphemeralKeyMessage, handshake
from p2p.switch import MAX_CONCURRENT_INBOUND_HANDSHAKES, MAX_INBOUND_HANDSHAKES_PER_IP
from primitives.keys import PrivateKey
from tests.p2p.helpers import connected, make_node, node_info_for, running, wait_until

FLOOD = 1000
GENUINE_WITHIN = 2.0
"""seconds a genuine peer may take to connect past a flood (issue 15)"""
KEY_MESSAGE = EphemeralKeyMessage(X25519PrivateKey.generate().public_key().public_bytes_raw()).encode()


@pytest.fixture(autouse=True)
def enough_file_descriptors() -> Iterator[None]:
    """Both ends of every connection are in this process: raise the soft limit for them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * FLOOD + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        raised = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Stall(enum.Enum):
    """How an attacker's connection stalls the handshake."""

    SILENT = "sends nothing"
    TRICKLE = "sends a byte of its ephemeral key message a second"
    KEY_THEN_SILENCE = "sends a valid ephemeral key, then nothing"


async def connect_from(source: str, port: int) -> trio.SocketStream:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    try:
        await sock.bind((source, 0))
        await sock.connect(("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def trickle(stream: trio.SocketStream) -> None:
    try:
        for byte in KEY_MESSAGE[:-1]:  # never the whole message
            await stream.send_all(bytes([byte]))
            await trio.sleep(1.0)  # the attack's pace, not synchronisation
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the switch hung up on it


async def open_stalled(
    nursery: trio.Nursery, port: int, how: Stall, source: str = "127.0.0.1"
) -> trio.SocketStream:
    stream = await connect_from(source, port)
    match how:
        case Stall.SILENT:
            pass
        case Stall.TRICKLE:
            nursery.start_soon(trickle, stream)
        case Stall.KEY_THEN_SILENCE:
            with contextlib.suppress(trio.BrokenResourceError):  # evicted already by a newer one
                await stream.send_all(KEY_MESSAGE)
        case _:
            assert_never(how)
    return stream


def close_all(streams: list[trio.SocketStream]) -> None:
    for stream in streams:
        stream.socket.close()


@pytest.mark.parametrize("how", list(Stall), ids=lambda how: how.name.lower())
async def test_a_genuine_peer_connects_within_2_s_past_1000_stalled_handshakes(how: Stall) -> None:
    a = make_node(handshake_timeout=20.0, inbound_secret_handshake_timeout=20.0)  # none times out
    b = make_node()
    streams: list[trio.SocketStream] = []
    try:
        async with running(a, b) as nursery:
            for _ in range(FLOOD):
                streams.append(await open_stalled(nursery, a.address().port, how))
            # a accepts in tasks of its own: wait until it has taken in every connection
            await wait_until(lambda: a.switch.stats.inbound_connections == FLOOD)
            assert a.switch.inbound_handshakes() == {"127.0.0.1": MAX_INBOUND_HANDSHAKES_PER_IP}
            assert b.switch.request_dial(a.address())
            await wait_until(lambda: connected(a, b), timeout=GENUINE_WITHIN)
    finally:
        close_all(streams)


class GatedStream(trio.abc.HalfCloseableStream):
    """A client's stream that holds back everything after its first write until `gate` is set,
    and counts what it receives."""

    def __init__(self, inner: trio.SocketStream) -> None:
        self.inner = inner
        self.gate = trio.Event()
        self.writes = 0
        self.received = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes += 1
        if self.writes > 1:
            await self.gate.wait()
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_a_handshake_that_has_progressed_outlives_newer_stalled_ones() -> None:
    """Of one IP's handshakes the least advanced goes first, not merely the oldest: a genuine
    handshake from a busy IP survives a flood that arrives after it."""
    a = make_node(handshake_timeout=20.0, inbound_secret_handshake_timeout=20.0)
    client_key = PrivateKey.generate()
    streams: list[trio.SocketStream] = []
    outcome: list[NodeInfo | P2PError] = []
    try:
        async with running(a) as nursery:
            port = a.address().port
            gated = GatedStream(await connect_from("127.0.0.5", port))
            streams.append(gated.inner)

            async def client() -> None:
                try:
                    secret = await handshake(gated, client_key, 20.0)
                    ours = node_info_for(client_key, channels=a.switch.node_info.channels)
                    outcome.append(await exchange_node_info(secret, ours))
                except P2PError as exc:
                    outcome.append(exc)

            nursery.start_soon(client)
            # a's ephemeral key and its encrypted authentication: a has our key, so it sent them
            await wait_until(lambda: gated.received == len(KEY_MESSAGE) + SEALED_FRAME_SIZE)
            for _ in range(2 * MAX_INBOUND_HANDSHAKES_PER_IP):
                streams.append(await open_stalled(nursery, port, Stall.SILENT, "127.0.0.5"))
            await wait_until(
                lambda: a.switch.stats.inbound_connections == 1 + 2 * MAX_INBOUND_HANDSHAKES_PER_IP
            )
            assert a.switch.stats.handshakes_evicted == MAX_INBOUND_HANDSHAKES_PER_IP + 1
            gated.gate.set()  # our authentication, then the node info exchange
            await wait_until(lambda: len(outcome) == 1)
            assert isinstance(outcome[0], NodeInfo) and outcome[0].node_id == a.id
            await wait_until(lambda: a.switch.peer(node_id(client_key.public_key)) is not None)
    finally:
        close_all(streams)


async def test_one_ips_flood_takes_no_slot_of_another_ip() -> None:
    a = make_node(handshake_timeout=20.0, inbound_secret_handshake_timeout=20.0)
    b = make_node()
    streams: list[trio.SocketStream] = []
    try:
        async with running(a, b) as nursery:
            port = a.address().port
            streams.append(await open_stalled(nursery, port, Stall.SILENT, source="127.0.0.3"))
            await wait_until(lambda: a.switch.stats.inbound_connections == 1)
            for _ in range(FLOOD):
                streams.append(await open_stalled(nursery, port, Stall.KEY_THEN_SILENCE, "127.0.0.2"))
            await wait_until(lambda: a.switch.stats.inbound_connections == FLOOD + 1)
            # the older, less advanced handshake of 127.0.0.3 is still there
            assert a.switch.inbound_handshakes() == {
                "127.0.0.2": MAX_INBOUND_HANDSHAKES_PER_IP,
                "127.0.0.3": 1,
            }
            assert a.switch.stats.handshakes_evicted == FLOOD - MAX_INBOUND_HANDSHAKES_PER_IP
            assert b.switch.request_dial(a.address())
            await wait_until(lambda: connected(a, b), timeout=GENUINE_WITHIN)
    finally:
        close_all(streams)


async def test_past_the_total_bound_the_oldest_handshakes_are_evicted() -> None:
    a = make_node(handshake_timeout=20.0, inbound_secret_handshake_timeout=20.0)
    sources = [f"127.0.1.{i}" for i in range(1, MAX_CONCURRENT_INBOUND_HANDSHAKES + 17)]
    streams: list[trio.SocketStream] = []
    try:
        async with running(a) as nursery:
            for count, source in enumerate(sources, start=1):
                streams.append(await open_stalled(nursery, a.address().port, Stall.SILENT, source))
                # one at a time, so that a's accept order is ours
                await wait_until(partial(lambda n: a.switch.stats.inbound_connections == n, count))
            assert a.switch.inbound_handshakes() == dict.fromkeys(
                sources[-MAX_CONCURRENT_INBOUND_HANDSHAKES:], 1
            )
            assert a.switch.stats.handshakes_evicted == 16
            # an evicted connection is closed: a's ephemeral key message, then the end
            received = b""
            with trio.fail_after(5):
                while chunk := await streams[0].receive_some():
                    received += chunk
            assert len(received) == len(KEY_MESSAGE)
    finally:
        close_all(streams)


@pytest.mark.parametrize("how", [Stall.SILENT, Stall.TRICKLE], ids=["silent", "trickle"])
async def test_an_inbound_secret_handshake_has_one_short_deadline(how: Stall) -> None:
    """Far inside handshake_timeout, and a byte now and then does not extend it."""
    a = make_node(handshake_timeout=20.0, inbound_secret_handshake_timeout=0.5)
    async with running(a) as nursery:
        stream = await connect_from("127.0.0.1", a.address().port)
        start = trio.current_time()
        if how is Stall.TRICKLE:

            async def drip() -> None:
                try:
                    for byte in KEY_MESSAGE[:-1]:
                        await stream.send_all(bytes([byte]))
                        await trio.sleep(0.1)  # faster than the deadline: each read gets a byte
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            nursery.start_soon(drip)
        await wait_until(lambda: a.switch.stats.handshake_failures == 1)
        assert 0.45 <= trio.current_time() - start < 1.5
        assert a.switch.inbound_handshakes() == {}
        stream.socket.close()
