"""The multiplexed connection to one peer, in the manner of CometBFT's MConnection: messages on
numbered channels over the secret connection.

Wire: a stream of packets, each a 4-byte big-endian length and the canonical encoding of
`[1]` (ping), `[2]` (pong) or `[3, channel id, eof, payload]` (a piece of a message of at most
`max_packet_payload` bytes; the piece with eof=1 completes it).

Sans-io core:
- `Multiplexer` keeps one bounded send queue per channel and cuts the next packet from the
  channel with the lowest recently-sent/priority ratio (CometBFT's rule), so a flood on a
  low-priority channel never starves a high-priority one; recently-sent decays over time.
- `PacketDecoder` parses packets out of received bytes; `Reassembler` joins pieces into
  messages, refusing unknown channels and messages over a channel's size limit.
- `RateLimiter` is a token bucket for the optional send and receive rate limits.

`MConnection` is the trio shell: a send task, a receive task and a ping task. It never blocks
a caller: `try_send` queues or returns False. A peer that breaks the protocol ends `run` with a
`ProtocolViolation`; one that goes silent, with a `PeerTimeout` after the pong timeout. With a
flush throttle (`[p2p] flush_throttle_timeout`, CometBFT's), messages queued on an idle
connection wait up to that long for more to join them in one write; `SEND_BATCH_BYTES` pending,
or a ping or pong, go at once, and so does what follows a write until the queues run dry.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import trio

from p2p.base import ChannelDescriptor, PeerMisbehaved
from p2p.errors import ConnectionClosed, P2PError, PeerTimeout, ProtocolViolation
from primitives.codec import DecodeError, decode, encode, field_bool, field_bytes, field_int, field_list

log = logging.getLogger("derivd.p2p")

MAX_PACKET_PAYLOAD = 1024
PACKET_LENGTH_SIZE = 4
PACKET_OVERHEAD = 16
"""bound on the encoding's bytes around a payload ([3, id, eof, bin header])"""

PING, PONG, MSG = 1, 2, 3
SEND_BATCH_BYTES = 16 * 1024
DECAY_PERIOD = 2.0
DECAY_FACTOR = 0.8
DEFAULT_PING_INTERVAL = 60.0
DEFAULT_PONG_TIMEOUT = 45.0


# -- packets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PacketPing:
    pass


@dataclass(frozen=True, slots=True)
class PacketPong:
    pass


@dataclass(frozen=True, slots=True)
class PacketMsg:
    channel_id: int
    eof: bool
    payload: bytes


Packet = PacketPing | PacketPong | PacketMsg


def encode_packet(packet: Packet) -> bytes:
    """The packet's wire bytes, length prefix included."""
    if isinstance(packet, PacketMsg):
        body = encode([MSG, packet.channel_id, int(packet.eof), packet.payload])
    elif isinstance(packet, PacketPing):
        body = encode([PING])
    else:
        body = encode([PONG])
    return len(body).to_bytes(PACKET_LENGTH_SIZE, "big") + body


def decode_packet(body: bytes, max_payload: int = MAX_PACKET_PAYLOAD) -> Packet:
    """A packet from its canonical bytes (no length prefix); ProtocolViolation otherwise."""
    try:
        fields = field_list(decode(body, max_size=max_payload + PACKET_OVERHEAD), "packet", max_len=4)
        if not fields:
            raise DecodeError("packet: empty")
        kind = field_int(fields[0], "packet kind", 1, 3)
        if kind == MSG:
            field_list(fields, "message packet", 4)
            return PacketMsg(
                field_int(fields[1], "channel id", 0, 255),
                field_bool(fields[2], "eof"),
                field_bytes(fields[3], "payload", max_size=max_payload),
            )
        field_list(fields, "ping/pong packet", 1)
        return PacketPing() if kind == PING else PacketPong()
    except DecodeError as exc:
        raise ProtocolViolation(f"undecodable packet: {exc}") from None


class PacketDecoder:
    """Cuts length-prefixed packets out of a byte stream."""

    def __init__(self, max_payload: int = MAX_PACKET_PAYLOAD) -> None:
        self._buffer = bytearray()
        self._max_payload = max_payload
        self._max_body = max_payload + PACKET_OVERHEAD

    def feed(self, data: bytes) -> list[Packet]:
        """The packets completed by `data`; ProtocolViolation for an oversized or bad packet."""
        self._buffer += data
        packets: list[Packet] = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= PACKET_LENGTH_SIZE:
            size = int.from_bytes(buffer[start : start + PACKET_LENGTH_SIZE], "big")
            if size > self._max_body:
                raise ProtocolViolation(f"packet of {size} bytes, more than {self._max_body}")
            end = start + PACKET_LENGTH_SIZE + size
            if len(buffer) < end:
                break
            packets.append(decode_packet(bytes(buffer[start + PACKET_LENGTH_SIZE : end]), self._max_payload))
            start = end
        del buffer[:start]
        return packets


# -- sending: queues and the channel choice ------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ChannelStatus:
    """One send channel as `net_info` shows it (CometBFT's ChannelStatus)."""

    descriptor: ChannelDescriptor
    queued: int
    """messages waiting in its send queue"""
    recently_sent: int
    """bytes sent lately, decaying (what the channel choice weighs against the priority)"""


class _SendChannel:
    __slots__ = ("current", "descriptor", "offset", "queue", "queued_bytes", "recently_sent")

    def __init__(self, descriptor: ChannelDescriptor) -> None:
        self.descriptor = descriptor
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.current: bytes | None = None
        self.offset = 0
        self.recently_sent = 0.0

    def has_pending(self) -> bool:
        return self.current is not None or bool(self.queue)


class Multiplexer:
    """Per-channel bounded send queues and the choice of the next packet to send."""

    def __init__(self, channels: Sequence[ChannelDescriptor], max_payload: int = MAX_PACKET_PAYLOAD) -> None:
        if max_payload <= 0:
            raise ValueError(f"the packet payload size must be positive, got {max_payload}")
        self._channels: dict[int, _SendChannel] = {}
        for descriptor in channels:
            if descriptor.priority <= 0:
                raise ValueError(f"channel {descriptor.id:#04x}: priority must be positive")
            if descriptor.send_queue_capacity <= 0:
                raise ValueError(f"channel {descriptor.id:#04x}: send queue capacity must be positive")
            if descriptor.id in self._channels:
                raise ValueError(f"channel {descriptor.id:#04x} is declared twice")
            self._channels[descriptor.id] = _SendChannel(descriptor)
        self._max_payload = max_payload
        self._ping = False
        self._pong = False

    def descriptor(self, channel_id: int) -> ChannelDescriptor | None:
        channel = self._channels.get(channel_id)
        return channel.descriptor if channel else None

    def try_queue(self, channel_id: int, message: bytes) -> bool:
        """Queue `message` on its channel; False if the channel is unknown or its queue is full."""
        channel = self._channels.get(channel_id)
        if channel is None or len(channel.queue) >= channel.descriptor.send_queue_capacity:
            return False
        channel.queue.append(message)
        channel.queued_bytes += len(message)
        return True

    def queue_ping(self) -> None:
        self._ping = True

    def queue_pong(self) -> None:
        self._pong = True

    def has_pending(self) -> bool:
        return self._ping or self._pong or any(c.has_pending() for c in self._channels.values())

    def has_control_packet(self) -> bool:
        """Whether a ping or a pong waits (they are never held back)."""
        return self._ping or self._pong

    @property
    def pending_bytes(self) -> int:
        """Bytes of messages queued and not yet sent."""
        return sum(
            c.queued_bytes + (len(c.current) - c.offset if c.current else 0) for c in self._channels.values()
        )

    def queue_length(self, channel_id: int) -> int:
        channel = self._channels.get(channel_id)
        return len(channel.queue) if channel else 0

    def channel_status(self) -> list[ChannelStatus]:
        """Each channel's queue and recent sending, by channel id."""
        return [
            ChannelStatus(
                descriptor=channel.descriptor,
                queued=len(channel.queue),
                recently_sent=int(channel.recently_sent),
            )
            for _, channel in sorted(self._channels.items())
        ]

    def decay(self, factor: float = DECAY_FACTOR) -> None:
        """Let recently-sent counts fade (CometBFT multiplies them by 0.8 every 2 s)."""
        for channel in self._channels.values():
            channel.recently_sent *= factor

    def next_packet(self) -> Packet | None:
        """The next packet to send: a pong or ping first, then a piece of the message on the
        pending channel with the lowest recently-sent/priority; None if nothing is pending."""
        if self._pong:
            self._pong = False
            return PacketPong()
        if self._ping:
            self._ping = False
            return PacketPing()
        chosen: _SendChannel | None = None
        best = 0.0
        for channel in self._channels.values():
            if not channel.has_pending():
                continue
            ratio = channel.recently_sent / channel.descriptor.priority
            if chosen is None or ratio < best:
                chosen, best = channel, ratio
        if chosen is None:
            return None
        if chosen.current is None:
            chosen.current = chosen.queue.popleft()
            chosen.queued_bytes -= len(chosen.current)
            chosen.offset = 0
        message = chosen.current
        chunk = message[chosen.offset : chosen.offset + self._max_payload]
        chosen.offset += len(chunk)
        eof = chosen.offset >= len(message)
        if eof:
            chosen.current = None
            chosen.offset = 0
        chosen.recently_sent += len(chunk)
        return PacketMsg(chosen.descriptor.id, eof, chunk)


# -- receiving: reassembly -----------------------------------------------------------------------


class Reassembler:
    """Joins message pieces per channel, enforcing each channel's maximum message size."""

    def __init__(self, channels: Sequence[ChannelDescriptor]) -> None:
        self._limits = {d.id: d.max_message_size for d in channels}
        self._buffers: dict[int, bytearray] = {d.id: bytearray() for d in channels}

    def add(self, packet: PacketMsg) -> bytes | None:
        """The whole message if `packet` completes one; ProtocolViolation for an unknown channel
        or a message over the channel's limit."""
        buffer = self._buffers.get(packet.channel_id)
        if buffer is None:
            raise ProtocolViolation(f"packet on unknown channel {packet.channel_id:#04x}")
        limit = self._limits[packet.channel_id]
        if len(buffer) + len(packet.payload) > limit:
            raise ProtocolViolation(
                f"message on channel {packet.channel_id:#04x} exceeds its limit of {limit} bytes"
            )
        if not packet.eof:
            buffer += packet.payload
            return None
        if not buffer:
            return packet.payload
        buffer += packet.payload
        message = bytes(buffer)
        buffer.clear()
        return message


class RateLimiter:
    """Token bucket: `rate` bytes per second with a burst of `burst` bytes; rate 0 = unlimited."""

    def __init__(self, rate: int, burst: int | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate // 10, 64 * 1024)
        self._tokens = float(self.burst)
        self._last: float | None = None

    def consume(self, size: int, now: float) -> float:
        """Take `size` bytes' worth of tokens at time `now`; the seconds to wait before going on."""
        if self.rate <= 0:
            return 0.0
        if self._last is not None:
            self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.rate)
        self._last = now
        self._tokens -= size
        return -self._tokens / self.rate if self._tokens < 0 else 0.0


# -- the trio shell ------------------------------------------------------------------------------


class Transport(Protocol):
    """An ordered, reliable byte stream (the secret connection)."""

    async def send_all(self, data: bytes) -> None: ...

    async def receive_some(self) -> bytes:
        """At least one byte, or b"" at the end of the stream."""
        ...


@dataclass(slots=True)
class TrafficCounters:
    """Bytes moved: packet bytes in total (before encryption), message payload bytes per
    channel, and whole messages."""

    bytes_sent: int = 0
    bytes_received: int = 0
    sent_by_channel: dict[int, int] = field(default_factory=dict)
    received_by_channel: dict[int, int] = field(default_factory=dict)
    messages_sent: int = 0
    messages_received: int = 0


class MConnection:
    """Channels over one transport. `on_receive(channel_id, message)` is called, in the receive
    task, for each whole message; it must not block and may raise PeerMisbehaved."""

    def __init__(
        self,
        transport: Transport,
        channels: Sequence[ChannelDescriptor],
        on_receive: Callable[[int, bytes], None],
        *,
        label: str,
        ping_interval: float = DEFAULT_PING_INTERVAL,
        pong_timeout: float = DEFAULT_PONG_TIMEOUT,
        send_rate: int = 0,
        recv_rate: int = 0,
        max_packet_payload: int = MAX_PACKET_PAYLOAD,
        totals: TrafficCounters | None = None,
        flush_throttle: float = 0.0,
    ) -> None:
        self._transport = transport
        self._mux = Multiplexer(channels, max_packet_payload)
        self._reassembler = Reassembler(channels)
        self._decoder = PacketDecoder(max_packet_payload)
        self._on_receive = on_receive
        self.label = label
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.flush_throttle = flush_throttle
        """seconds queued messages may wait for more before a write (0: write at once)"""
        self.writes = 0
        """writes to the transport (each carries one batch of packets)"""
        self._on_sent: Callable[[], None] | None = None
        self._send_limiter = RateLimiter(send_rate)
        self._recv_limiter = RateLimiter(recv_rate)
        self._wakeup = trio.Event()
        self._pong_received: trio.Event | None = None
        self._closed = False
        self.traffic = TrafficCounters()
        self._totals = totals
        self.refused_sends = 0
        """messages try_send did not queue (full queue, unknown channel, too large, closed)"""

    @property
    def pending_send_bytes(self) -> int:
        return self._mux.pending_bytes

    def channel_status(self) -> list[ChannelStatus]:
        return self._mux.channel_status()

    @property
    def closed(self) -> bool:
        return self._closed

    def queue_length(self, channel_id: int) -> int:
        return self._mux.queue_length(channel_id)

    def try_send(self, channel_id: int, message: bytes) -> bool:
        """Queue `message` on `channel_id` without waiting; False if the queue is full, the
        channel unknown, the message over the channel's limit or the connection closed."""
        descriptor = self._mux.descriptor(channel_id)
        if self._closed or descriptor is None:
            self.refused_sends += 1
            return False
        if len(message) > descriptor.max_message_size:
            log.warning(
                "not sending a %d-byte message to %s on channel %#04x: the limit is %d bytes",
                len(message),
                self.label,
                channel_id,
                descriptor.max_message_size,
            )
            self.refused_sends += 1
            return False
        if not self._mux.try_queue(channel_id, message):
            self.refused_sends += 1
            return False
        self._wakeup.set()
        return True

    def close_when_sent(self, on_sent: Callable[[], None]) -> None:
        """Call `on_sent` (once) when everything queued has been written: at once if nothing is
        pending, else after the send task's last write (the caller then ends the connection)."""
        self._on_sent = on_sent
        self._wakeup.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Send, receive and ping until the peer fails or the caller cancels. Raises
        ConnectionClosed, PeerTimeout, ProtocolViolation (naming the peer) or PeerMisbehaved."""
        failures: list[Exception] = []
        try:
            async with trio.open_nursery() as nursery:

                async def guarded(loop: Callable[[], Awaitable[None]]) -> None:
                    try:
                        await loop()
                    except (P2PError, PeerMisbehaved) as exc:
                        failures.append(exc)
                        nursery.cancel_scope.cancel()

                nursery.start_soon(guarded, self._send_loop)
                nursery.start_soon(guarded, self._receive_loop)
                if self.ping_interval > 0:
                    nursery.start_soon(guarded, self._ping_loop)
                task_status.started()
        finally:
            self._closed = True
        if failures:
            raise failures[0]

    def _count(self, counters: TrafficCounters, channel_id: int, size: int, sent: bool) -> None:
        if sent:
            counters.sent_by_channel[channel_id] = counters.sent_by_channel.get(channel_id, 0) + size
        else:
            counters.received_by_channel[channel_id] = counters.received_by_channel.get(channel_id, 0) + size

    async def _gather(self) -> None:
        """Wait, up to the flush throttle, until a full batch or a ping or pong is pending."""
        deadline = trio.current_time() + self.flush_throttle
        while self._mux.pending_bytes < SEND_BATCH_BYTES and not self._mux.has_control_packet():
            self._wakeup = trio.Event()
            with trio.move_on_at(deadline) as scope:
                await self._wakeup.wait()  # woken by try_send and by the ping and receive tasks
            if scope.cancelled_caught:
                return

    async def _send_loop(self) -> None:
        last_decay = trio.current_time()
        idle = True  # nothing written since the queues last ran dry: a throttle may hold the next write
        while True:
            if idle and self.flush_throttle > 0 and self._mux.has_pending():
                await self._gather()
            batch = bytearray()
            while len(batch) < SEND_BATCH_BYTES:
                packet = self._mux.next_packet()
                if packet is None:
                    break
                if isinstance(packet, PacketMsg):
                    for counters in (self.traffic, self._totals):
                        if counters is not None:
                            self._count(counters, packet.channel_id, len(packet.payload), sent=True)
                            counters.messages_sent += packet.eof
                batch += encode_packet(packet)
            if not batch:
                if self._on_sent is not None:
                    on_sent, self._on_sent = self._on_sent, None
                    on_sent()
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                idle = True
                continue
            idle = False
            await self._transport.send_all(bytes(batch))
            self.writes += 1
            self.traffic.bytes_sent += len(batch)
            if self._totals is not None:
                self._totals.bytes_sent += len(batch)
            now = trio.current_time()
            delay = self._send_limiter.consume(len(batch), now)
            if delay > 0:
                await trio.sleep(delay)
            periods = int((now - last_decay) / DECAY_PERIOD)
            if periods:
                self._mux.decay(DECAY_FACTOR**periods)
                last_decay += periods * DECAY_PERIOD

    async def _receive_loop(self) -> None:
        while True:
            data = await self._transport.receive_some()
            if not data:
                raise ConnectionClosed(f"{self.label} closed the connection")
            self.traffic.bytes_received += len(data)
            if self._totals is not None:
                self._totals.bytes_received += len(data)
            try:
                packets = self._decoder.feed(data)
            except ProtocolViolation as exc:
                raise ProtocolViolation(f"{self.label}: {exc}") from None
            for packet in packets:
                if isinstance(packet, PacketMsg):
                    self._handle_message_packet(packet)
                elif isinstance(packet, PacketPing):
                    self._mux.queue_pong()
                    self._wakeup.set()
                elif self._pong_received is not None:
                    self._pong_received.set()
            delay = self._recv_limiter.consume(len(data), trio.current_time())
            if delay > 0:
                await trio.sleep(delay)

    def _handle_message_packet(self, packet: PacketMsg) -> None:
        try:
            message = self._reassembler.add(packet)
        except ProtocolViolation as exc:
            raise ProtocolViolation(f"{self.label}: {exc}") from None
        for counters in (self.traffic, self._totals):
            if counters is not None:
                self._count(counters, packet.channel_id, len(packet.payload), sent=False)
                counters.messages_received += message is not None
        if message is not None:
            self._on_receive(packet.channel_id, message)

    async def _ping_loop(self) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            self._pong_received = trio.Event()
            self._mux.queue_ping()
            self._wakeup.set()
            with trio.move_on_after(self.pong_timeout):
                await self._pong_received.wait()
            if not self._pong_received.is_set():
                raise PeerTimeout(f"{self.label} did not answer a ping within {self.pong_timeout:g} s")
