"""The multiplexed connection: packet encoding, packetization and reassembly (hypothesis),
the channel choice under a flood, bounded queues that never block, size limits, bad packets,
ping/pong with a pong timeout, and rate limits."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from p2p.base import ChannelDescriptor, PeerMisbehaved
from p2p.connection import (
    SEND_BATCH_BYTES,
    MConnection,
    Multiplexer,
    PacketDecoder,
    PacketMsg,
    PacketPing,
    PacketPong,
    RateLimiter,
    Reassembler,
    decode_packet,
    encode_packet,
)
from p2p.errors import ConnectionClosed, PeerTimeout, ProtocolViolation
from primitives.codec import encode

VOTE, DATA, LOW = 0x22, 0x21, 0x30
CHANNELS = [
    ChannelDescriptor(VOTE, priority=7),
    ChannelDescriptor(DATA, priority=10),
    ChannelDescriptor(LOW, priority=1),
]


class StreamTransport:
    """A trio stream as the connection's transport, without encryption."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    async def send_all(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def receive_some(self) -> bytes:
        return bytes(await self.stream.receive_some(65536))


Received = list[tuple[int, bytes]]


def connection(
    stream: trio.abc.Stream,
    channels: list[ChannelDescriptor] = CHANNELS,
    on_receive: Callable[[int, bytes], None] | None = None,
    **options: Any,
) -> tuple[MConnection, Received]:
    received: Received = []

    def record(channel_id: int, message: bytes) -> None:
        received.append((channel_id, message))

    return MConnection(
        StreamTransport(stream), channels, on_receive or record, label="peer X", **options
    ), received


async def run_expecting(conn: MConnection) -> Exception:
    """Run `conn` until it fails; the failure."""
    try:
        await conn.run()
    except Exception as exc:
        return exc
    raise AssertionError("run returned")


# -- packets -------------------------------------------------------------------------------------


def test_packet_encoding_round_trip() -> None:
    for packet in (
        PacketPing(),
        PacketPong(),
        PacketMsg(VOTE, True, b"v"),
        PacketMsg(LOW, False, bytes(1024)),
    ):
        wire = encode_packet(packet)
        assert int.from_bytes(wire[:4], "big") == len(wire) - 4
        assert decode_packet(wire[4:]) == packet


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (encode([]), "empty"),
        (encode([9]), "packet kind"),
        (encode([3, 300, 1, b""]), "channel id"),
        (encode([3, 1, 2, b""]), "eof"),
        (encode([3, 1, 1]), "expected 4 fields"),
        (encode([3, 1, 1, bytes(1025)]), "payload"),
        (encode([1, 0]), "expected 1 fields"),
        (b"\xc0", "malformed|nil|boolean"),
        (b"\x91\xcd\x00\x01", "non-canonical"),
    ],
)
def test_bad_packets_are_protocol_violations(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolViolation, match=f"undecodable packet: .*({problem})"):
        decode_packet(body)


def test_oversized_packet_length_is_refused_before_reading_it() -> None:
    with pytest.raises(ProtocolViolation, match="packet of 1000000 bytes"):
        PacketDecoder().feed((1_000_000).to_bytes(4, "big"))


@settings(max_examples=60, deadline=None)
@given(
    messages=st.lists(st.tuples(st.sampled_from([VOTE, DATA, LOW]), st.binary(max_size=4000)), max_size=25),
    chunk=st.integers(1, 5000),
    payload=st.integers(1, 1024),
)
def test_packetization_round_trip(messages: list[tuple[int, bytes]], chunk: int, payload: int) -> None:
    mux = Multiplexer(CHANNELS, payload)
    for channel_id, message in messages:
        assert mux.try_queue(channel_id, message)
    assert mux.pending_bytes == sum(len(m) for _, m in messages)
    wire = bytearray()
    while (packet := mux.next_packet()) is not None:
        assert isinstance(packet, PacketMsg) and len(packet.payload) <= payload
        wire += encode_packet(packet)
    assert mux.pending_bytes == 0 and not mux.has_pending()
    decoder, reassembler = PacketDecoder(payload), Reassembler(CHANNELS)
    got: dict[int, list[bytes]] = {VOTE: [], DATA: [], LOW: []}
    for start in range(0, len(wire), chunk):
        for packet in decoder.feed(bytes(wire[start : start + chunk])):
            assert isinstance(packet, PacketMsg)
            whole = reassembler.add(packet)
            if whole is not None:
                got[packet.channel_id].append(whole)
    for channel_id, messages_got in got.items():
        assert messages_got == [m for c, m in messages if c == channel_id]


def test_reassembler_refuses_unknown_channels_and_oversized_messages() -> None:
    reassembler = Reassembler([ChannelDescriptor(1, 1, max_message_size=2000)])
    with pytest.raises(ProtocolViolation, match="unknown channel 0x05"):
        reassembler.add(PacketMsg(5, True, b"x"))
    assert reassembler.add(PacketMsg(1, False, bytes(1024))) is None
    with pytest.raises(ProtocolViolation, match="channel 0x01 exceeds its limit of 2000 bytes"):
        reassembler.add(PacketMsg(1, False, bytes(1024)))


# -- the channel choice --------------------------------------------------------------------------


def test_a_flood_on_a_low_priority_channel_does_not_delay_a_vote() -> None:
    mux = Multiplexer([ChannelDescriptor(VOTE, 7), ChannelDescriptor(LOW, 1, send_queue_capacity=100)])
    for _ in range(100):
        assert mux.try_queue(LOW, os.urandom(10_000))
    for _ in range(50):
        mux.next_packet()
    vote = os.urandom(3000)
    assert mux.try_queue(VOTE, vote)
    packets = [mux.next_packet() for _ in range(3)]
    assert all(isinstance(p, PacketMsg) and p.channel_id == VOTE for p in packets)
    assert b"".join(p.payload for p in packets if isinstance(p, PacketMsg)) == vote


def test_busy_channels_share_by_priority_and_none_starves() -> None:
    mux = Multiplexer(
        [
            ChannelDescriptor(VOTE, 7, send_queue_capacity=1000),
            ChannelDescriptor(LOW, 1, send_queue_capacity=1000),
        ]
    )
    for _ in range(1000):
        mux.try_queue(VOTE, bytes(1024))
        mux.try_queue(LOW, bytes(1024))
    sent = {VOTE: 0, LOW: 0}
    for _ in range(800):
        packet = mux.next_packet()
        assert isinstance(packet, PacketMsg)
        sent[packet.channel_id] += 1
    assert sent[VOTE] == 700 and sent[LOW] == 100


def test_channel_status_shows_queues_and_recent_sending() -> None:
    mux = Multiplexer([ChannelDescriptor(LOW, 1, send_queue_capacity=5), ChannelDescriptor(VOTE, 7)])
    for _ in range(3):
        assert mux.try_queue(LOW, bytes(100))
    before = mux.channel_status()
    assert [(s.descriptor.id, s.queued, s.recently_sent) for s in before] == sorted(
        [(LOW, 3, 0), (VOTE, 0, 0)]
    )
    mux.next_packet()
    low = next(s for s in mux.channel_status() if s.descriptor.id == LOW)
    assert low.queued == 2 and low.recently_sent == 100 and low.descriptor.send_queue_capacity == 5


def test_pong_and_ping_go_first() -> None:
    mux = Multiplexer(CHANNELS)
    mux.try_queue(VOTE, b"v")
    mux.queue_ping()
    mux.queue_pong()
    assert [mux.next_packet(), mux.next_packet()] == [PacketPong(), PacketPing()]


def test_rate_limiter() -> None:
    limiter = RateLimiter(1000, burst=1000)
    assert limiter.consume(1000, 0.0) == 0.0
    assert limiter.consume(500, 0.0) == pytest.approx(0.5)
    assert limiter.consume(100, 1.0) == 0.0  # 1 s refilled the 500 owed and 500 more
    assert RateLimiter(0).consume(10**9, 0.0) == 0.0


# -- the connection over a stream ----------------------------------------------------------------


async def test_messages_round_trip_on_channels() -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream)
    b, received = connection(b_stream)
    messages = [(VOTE, b"vote"), (LOW, os.urandom(50_000)), (DATA, b""), (VOTE, os.urandom(3000))]
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        for channel_id, message in messages:
            assert a.try_send(channel_id, message)
        with trio.fail_after(5):
            while len(received) < len(messages):
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert sorted(received) == sorted(messages)
    assert a.traffic.sent_by_channel[LOW] == 50_000
    assert b.traffic.received_by_channel == a.traffic.sent_by_channel
    assert b.traffic.messages_received == 4


async def test_vote_overtakes_a_flood_over_the_wire() -> None:
    """With the low channel flooded, a vote queued mid-flood arrives after at most about two
    send batches of other traffic."""
    a_stream, b_stream = trio.testing.lockstep_stream_pair()
    low = ChannelDescriptor(LOW, 1, send_queue_capacity=100)
    a, _ = connection(a_stream, [ChannelDescriptor(VOTE, 7), low])
    vote = os.urandom(300)
    marks: dict[str, int] = {}
    low_messages = 0

    def on_receive(channel_id: int, message: bytes) -> None:
        nonlocal low_messages
        if channel_id == LOW:
            low_messages += 1
            if low_messages == 3:
                marks["queued"] = b.traffic.bytes_received
                assert a.try_send(VOTE, vote)
        else:
            assert message == vote
            marks["arrived"] = b.traffic.bytes_received
            marks["low_messages"] = low_messages
            done.set()

    b, _ = connection(b_stream, [ChannelDescriptor(VOTE, 7), low], on_receive)
    done = trio.Event()
    for _ in range(100):
        assert a.try_send(LOW, os.urandom(20_000))
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        with trio.fail_after(5):
            await done.wait()
        nursery.cancel_scope.cancel()
    assert marks["arrived"] - marks["queued"] <= 2 * SEND_BATCH_BYTES + 2048
    assert marks["low_messages"] < 10  # the flood (100 messages) was still under way


async def test_try_send_never_blocks_on_a_stuck_peer() -> None:
    a_stream, _stuck = trio.testing.lockstep_stream_pair()  # nobody ever reads
    a, _ = connection(a_stream, [ChannelDescriptor(LOW, 1, send_queue_capacity=3, max_message_size=10_000)])
    accepted = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        for _ in range(5):
            while a.try_send(LOW, bytes(5000)):
                accepted += 1
            await trio.testing.wait_all_tasks_blocked()
        assert a.try_send(LOW, b"x") is False
        nursery.cancel_scope.cancel()
    # the sender took three messages and is stuck writing them; three more fill the queue
    assert accepted == 6
    assert a.pending_send_bytes == 15_000
    assert a.try_send(0x99, b"x") is False  # unknown channel
    assert a.try_send(LOW, bytes(20_000)) is False  # over the channel's limit
    assert a.refused_sends >= 8


async def test_oversized_message_from_the_peer_is_a_protocol_violation() -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream, [ChannelDescriptor(LOW, 1, max_message_size=1 << 20)])
    b, received = connection(b_stream, [ChannelDescriptor(LOW, 1, max_message_size=1000)])
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        assert a.try_send(LOW, bytes(5000))
        failure = await run_expecting(b)
        nursery.cancel_scope.cancel()
    assert isinstance(failure, ProtocolViolation)
    assert str(failure) == "peer X: message on channel 0x30 exceeds its limit of 1000 bytes"
    assert received == []


async def test_undecodable_packet_is_a_protocol_violation() -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    b, _ = connection(b_stream)
    body = b"\x93\x03\x30"  # an array that says three items and holds two
    await a_stream.send_all(len(body).to_bytes(4, "big") + body)
    failure = await run_expecting(b)
    assert isinstance(failure, ProtocolViolation) and "peer X: undecodable packet" in str(failure)


async def test_misbehaviour_reported_by_the_receiver_ends_the_connection() -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream)

    def reject(channel_id: int, message: bytes) -> None:
        raise PeerMisbehaved("bad vote")

    b, _ = connection(b_stream, on_receive=reject)
    a.try_send(VOTE, b"forged")
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        failure = await run_expecting(b)
        nursery.cancel_scope.cancel()
    assert isinstance(failure, PeerMisbehaved) and str(failure) == "bad vote"


async def test_closed_stream_is_connection_closed() -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    b, _ = connection(b_stream)
    await a_stream.aclose()
    failure = await run_expecting(b)
    assert isinstance(failure, ConnectionClosed) and str(failure) == "peer X closed the connection"
    assert b.try_send(VOTE, b"late") is False


async def test_pings_keep_a_live_peer(autojump_clock: trio.testing.MockClock) -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream, ping_interval=60, pong_timeout=45)
    b, _ = connection(b_stream, ping_interval=60, pong_timeout=45)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        await trio.sleep(60 * 10 + 1)
        nursery.cancel_scope.cancel()
    ping_and_pong = len(encode_packet(PacketPing())) + len(encode_packet(PacketPong()))
    assert a.traffic.bytes_sent == 10 * ping_and_pong  # ten pings sent, ten pongs to b's pings


async def test_silent_peer_times_out(autojump_clock: trio.testing.MockClock) -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream, ping_interval=60, pong_timeout=45)

    async def drain() -> None:
        while await b_stream.receive_some():
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        failure = await run_expecting(a)
        nursery.cancel_scope.cancel()
    assert isinstance(failure, PeerTimeout)
    assert str(failure) == "peer X did not answer a ping within 45 s"
    assert trio.current_time() == pytest.approx(105)


async def test_send_rate_limit(autojump_clock: trio.testing.MockClock) -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream, send_rate=100_000)
    b, received = connection(b_stream)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        for _ in range(10):
            assert a.try_send(LOW, bytes(100_000))
        start = trio.current_time()
        while len(received) < 10:
            await trio.sleep(0.01)
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    # 1 MB at 100 kB/s with a 64 KiB burst: about 9.4 s
    assert 9.0 <= elapsed <= 11.0
