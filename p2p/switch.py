"""The switch: the node's peer set. It listens for and dials peers, runs the secret handshake
and the node info exchange, admits peers (limits, bans, duplicates, no self-connections), runs
one multiplexed connection per peer (a receive task that hands whole messages to the reactor of
their channel, a send task, a ping task), hands peers to every reactor and takes them back with
a reason, redials persistent peers with capped, jittered exponential back-off, bans misbehaving
peers, and, with PEX on, runs the peer exchange reactor and its address book (in seed mode a
crawler that hands out addresses and lets peers go, `p2p.pex`).

Unless `allow_duplicate_ip`, a peer is refused when another node is already connected from its IP
(CometBFT's duplicate-IP filter; a localnet on one host must allow it).

Misbehaviour (a bad frame, an undecodable packet, an oversized message, a message on an unknown
channel, a reactor's `PeerMisbehaved`, `stop_peer_for_error`) drops the peer and bans its node
id and IP for `ban_duration`: its inbound connections are refused and it is not dialed.
Loopback IPs are not banned unless `ban_loopback_ips` (a localnet runs every node on 127.0.0.1).
Failed handshakes, incompatible peers and silent peers are dropped without a ban.

Inbound handshakes are bounded so that stalled ones cannot lock genuine peers out: at most
`MAX_INBOUND_HANDSHAKES_PER_IP` from one IP and `MAX_CONCURRENT_INBOUND_HANDSHAKES` in all. A
connection over either bound is not refused: it takes the slot of the handshake that has made the
least progress (no ephemeral key yet, then not authenticated yet, then exchanging node info), the
oldest first, of its own IP if that IP is at its bound, of any IP otherwise. An inbound secret
handshake must finish within `inbound_secret_handshake_timeout` (3 s), the whole exchange within
`handshake_timeout`; each is one deadline over all the reads, however the bytes trickle in.

Statistics for metrics are plain attributes: `stats` (cumulative counters and per-channel
bytes), each peer's `traffic` and `pending_send_bytes`.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from p2p.addrbook import AddressBook
from p2p.address import (
    NetAddress,
    format_host_port,
    is_loopback,
    parse_node_id,
)
from p2p.base import ChannelDescriptor, NodeInfo, Peer, PeerMisbehaved, Reactor
from p2p.connection import (
    DEFAULT_PING_INTERVAL,
    DEFAULT_PONG_TIMEOUT,
    MAX_PACKET_PAYLOAD,
    ChannelStatus,
    MConnection,
    TrafficCounters,
)
from p2p.errors import IncompatiblePeer, P2PError, ProtocolViolation
from p2p.nodeinfo import check_peer_node_info, exchange_node_info
from p2p.nodekey import node_id as node_id_of
from p2p.pex import PexReactor
from p2p.secret_connection import SecretConnection, handshake
from primitives.keys import PrivateKey

log = logging.getLogger("derivd.p2p")

MAX_CONCURRENT_INBOUND_HANDSHAKES = 64
MAX_INBOUND_HANDSHAKES_PER_IP = 8
"""a localnet of N nodes on one host has at most N - 1 handshakes from 127.0.0.1 at a time (a
node dials another once at a time); more than this takes the least advanced one's slot"""
DIAL_QUEUE_SIZE = 64


@dataclass(frozen=True, slots=True)
class P2PSettings:
    """What the switch is configured with (the node builds it from `[p2p]`). Durations are
    seconds; rates are bytes per second, 0 for unlimited."""

    listen_host: str = "0.0.0.0"
    listen_port: int = 26656
    """0 asks the system for a free port (`run` reports the bound one)"""
    external_address: tuple[str, int] | None = None
    """(host, port) advertised to peers; None: the listen address (an unspecified host is then
    replaced, on the other side, by the address we connect from)"""
    persistent_peers: tuple[NetAddress, ...] = ()
    seeds: tuple[NetAddress, ...] = ()
    max_inbound: int = 40
    max_outbound: int = 10
    """outbound peers dialed from the address book, not counting persistent peers"""
    unconditional_peer_ids: tuple[str, ...] = ()
    """admitted even when the inbound limit is reached (persistent peers always are)"""
    private_peer_ids: tuple[str, ...] = ()
    """never stored in the address book nor handed out by PEX"""
    handshake_timeout: float = 20.0
    """seconds for the whole upgrade of a connection: secret handshake and node info exchange"""
    inbound_secret_handshake_timeout: float = 3.0
    """seconds an inbound connection has for the secret handshake (ephemeral keys and
    authentication), within `handshake_timeout`"""
    dial_timeout: float = 3.0
    pex: bool = True
    address_book_path: Path | None = None
    """None keeps the book in memory only"""
    ban_duration: float = 600.0
    ban_loopback_ips: bool = False
    ping_interval: float = DEFAULT_PING_INTERVAL
    pong_timeout: float = DEFAULT_PONG_TIMEOUT
    send_rate: int = 5_120_000
    recv_rate: int = 5_120_000
    max_packet_payload: int = MAX_PACKET_PAYLOAD
    redial_initial_delay: float = 1.0
    redial_max_delay: float = 60.0
    """cap of the persistent peers' redial back-off ([p2p] persistent_peers_max_dial_period)"""
    pex_request_interval: float = 30.0
    """how often we ask one peer for addresses; peers may ask us at most 3x as often"""
    seed_mode: bool = False
    """PEX as a seed node: answer an inbound peer's request then disconnect it, crawl the book
    (needs `pex`)"""
    allow_duplicate_ip: bool = True
    """admit a peer from an IP another connected node has ([p2p] allow_duplicate_ip; the node's
    config defaults to false, the switch alone to true)"""
    flush_throttle: float = 0.0
    """seconds queued messages may wait for more before a write ([p2p] flush_throttle_timeout)"""
    random_seed: int | None = None
    """seed of the switch's jitter and address choice; None: derived from the node id"""

    def __post_init__(self) -> None:
        if not 0 <= self.listen_port <= 65535:
            raise ValueError(f"listen port out of range (0-65535): {self.listen_port}")
        if self.external_address is not None and not (
            self.external_address[0] and 0 < self.external_address[1] <= 65535
        ):
            raise ValueError(f"external address needs a host and a non-zero port: {self.external_address}")
        for name in ("max_inbound", "max_outbound", "send_rate", "recv_rate"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative, got {getattr(self, name)}")
        for name in (
            "handshake_timeout",
            "inbound_secret_handshake_timeout",
            "dial_timeout",
            "ban_duration",
            "pong_timeout",
            "redial_initial_delay",
            "redial_max_delay",
            "pex_request_interval",
            "max_packet_payload",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.ping_interval < 0 or self.flush_throttle < 0:
            raise ValueError(
                f"ping_interval and flush_throttle must not be negative, got {self.ping_interval}"
                f" and {self.flush_throttle}"
            )
        if self.seed_mode and not self.pex:
            raise ValueError("seed mode needs PEX")
        for node_id in (*self.unconditional_peer_ids, *self.private_peer_ids):
            if parse_node_id(node_id) != node_id:
                raise ValueError(f"node ids are lower-case hex: {node_id!r}")


@dataclass(slots=True)
class SwitchStats:
    """Cumulative counters since the switch was made (for metrics)."""

    traffic: TrafficCounters = field(default_factory=TrafficCounters)
    """bytes and messages over all peers, past and present, per channel"""
    dials: int = 0
    dial_failures: int = 0
    handshake_failures: int = 0
    inbound_connections: int = 0
    """TCP connections accepted, before any check"""
    handshakes_evicted: int = 0
    """inbound handshakes cut short to give their slot to a newer connection"""
    connects: int = 0
    disconnects: int = 0
    refused: int = 0
    """connections hung up on after the handshake: incompatible, unexpected id, limits, duplicates"""
    refused_banned: int = 0
    bans: int = 0


class BanList:
    """Node ids and IPs banned until a time (trio's clock)."""

    def __init__(self) -> None:
        self._ids: dict[str, float] = {}
        self._ips: dict[str, float] = {}

    def ban(self, node_id: str | None, ip: str | None, until: float) -> None:
        if node_id is not None:
            self._ids[node_id] = max(until, self._ids.get(node_id, until))
        if ip is not None:
            self._ips[ip] = max(until, self._ips.get(ip, until))

    @staticmethod
    def _lookup(table: dict[str, float], key: str, now: float) -> float | None:
        until = table.get(key)
        if until is None:
            return None
        if until <= now:
            del table[key]
            return None
        return until

    def id_banned_until(self, node_id: str, now: float) -> float | None:
        return self._lookup(self._ids, node_id, now)

    def ip_banned_until(self, ip: str, now: float) -> float | None:
        return self._lookup(self._ips, ip, now)

    def banned_ids(self, now: float) -> list[str]:
        return sorted(n for n, until in self._ids.items() if until > now)


class _Progress(enum.IntEnum):
    """How far an inbound handshake has come; the least advanced is evicted first."""

    CONNECTED = 0
    KEY_RECEIVED = 1
    """the remote's ephemeral key arrived and was valid"""
    AUTHENTICATED = 2
    """the secret handshake is done; node info is being exchanged"""


@dataclass(slots=True, kw_only=True)
class _InboundHandshake:
    """An inbound connection between accept and admission, holding one handshake slot."""

    ip: str
    label: str
    order: int
    """accept order, oldest lowest"""
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    progress: _Progress = _Progress.CONNECTED

    def eviction_rank(self) -> tuple[int, int]:
        return (self.progress, self.order)

    def key_received(self) -> None:
        self.progress = _Progress.KEY_RECEIVED


class ConnectedPeer:
    """A connected peer: what reactors see (`p2p.base.Peer`) plus the switch's bookkeeping."""

    def __init__(
        self,
        secret: SecretConnection,
        node_info: NodeInfo,
        channels: list[ChannelDescriptor],
        deliver: Callable[[ConnectedPeer, int, bytes], None],
        *,
        outbound: bool,
        persistent: bool,
        remote_host: str,
        remote_port: int,
        remote_ip: str,
        settings: P2PSettings,
        totals: TrafficCounters,
    ) -> None:
        self._node_info = node_info
        self._outbound = outbound
        self._persistent = persistent
        self.remote_host = remote_host
        self.remote_port = remote_port
        self.remote_ip = remote_ip
        self._remote_channels = frozenset(node_info.channels)
        self._data: dict[str, Any] = {}
        self.label = f"{node_info.node_id}@{format_host_port(remote_host, remote_port)}"
        self.connection = MConnection(
            secret,
            channels,
            lambda channel_id, message: deliver(self, channel_id, message),
            label=f"peer {self.label}",
            ping_interval=settings.ping_interval,
            pong_timeout=settings.pong_timeout,
            send_rate=settings.send_rate,
            recv_rate=settings.recv_rate,
            max_packet_payload=settings.max_packet_payload,
            totals=totals,
            flush_throttle=settings.flush_throttle,
        )
        self.cancel_scope = trio.CancelScope()
        self.disconnected = trio.Event()
        self.stop_reason: str | None = None
        self.ban_on_stop = False
        self.connected_at = trio.current_time()
        self.connected_at_ns = time.time_ns()
        """wall-clock time of the connection (`net_info`'s monitors start there)"""

    # -- p2p.base.Peer ---------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._node_info.node_id

    @property
    def node_info(self) -> NodeInfo:
        return self._node_info

    @property
    def is_outbound(self) -> bool:
        return self._outbound

    @property
    def is_persistent(self) -> bool:
        return self._persistent

    @property
    def remote_address(self) -> str:
        return format_host_port(self.remote_host, self.remote_port)

    def try_send(self, channel_id: int, message: bytes) -> bool:
        """Queue without waiting; False if the queue is full, the peer lacks the channel, the
        message is over the channel's limit or the peer is gone."""
        if channel_id not in self._remote_channels or self.stop_reason is not None:
            return False
        return self.connection.try_send(channel_id, message)

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    # -- statistics and control ------------------------------------------------------------------

    @property
    def traffic(self) -> TrafficCounters:
        return self.connection.traffic

    @property
    def pending_send_bytes(self) -> int:
        return self.connection.pending_send_bytes

    def channel_status(self) -> list[ChannelStatus]:
        return self.connection.channel_status()

    def stop_when_sent(self, reason: str) -> None:
        """End the connection once what is queued for the peer has been written."""
        self.connection.close_when_sent(lambda: self.stop(reason))

    def stop(self, reason: str, *, ban: bool = False) -> None:
        """End the connection (the switch's task for it removes it from the reactors)."""
        if self.stop_reason is None:
            self.stop_reason = reason
            self.ban_on_stop = ban
            self.cancel_scope.cancel()

    def __repr__(self) -> str:
        return f"ConnectedPeer({self.label}, {'outbound' if self._outbound else 'inbound'})"


class Switch:
    """Peers, connections and reactors. See the module docstring."""

    def __init__(
        self, node_key: PrivateKey, node_info: NodeInfo, settings: P2PSettings, reactors: list[Reactor]
    ) -> None:
        own_id = node_id_of(node_key.public_key)
        if node_info.node_id != own_id:
            raise ValueError(f"node info names node {node_info.node_id} but the node key is {own_id}")
        self.node_id = own_id
        self.settings = settings
        self._key = node_key
        self._rng = random.Random(
            settings.random_seed if settings.random_seed is not None else int(own_id, 16)
        )
        self.book: AddressBook | None = None
        self.pex: PexReactor | None = None
        self._reactors: list[Reactor] = list(reactors)
        if settings.pex:
            self.book = AddressBook.load(
                settings.address_book_path, own_id, private_ids=settings.private_peer_ids
            )
            for seed in settings.seeds:
                self.book.add(seed, "seed")
            self.pex = PexReactor(
                self.book,
                self,
                rng=self._rng,
                request_interval=settings.pex_request_interval,
                retry_base=settings.redial_initial_delay,
                retry_cap=max(settings.redial_max_delay, settings.redial_initial_delay),
                seed_mode=settings.seed_mode,
            )
            self._reactors.insert(0, self.pex)
        self._reactor_by_channel: dict[int, Reactor] = {}
        self._channels: list[ChannelDescriptor] = []
        for reactor in self._reactors:
            for descriptor in reactor.channels():
                if descriptor.id in self._reactor_by_channel:
                    raise ValueError(f"channel {descriptor.id:#04x} is claimed by two reactors")
                self._reactor_by_channel[descriptor.id] = reactor
                self._channels.append(descriptor)
        self._channels.sort(key=lambda d: d.id)
        self.node_info = replace(node_info, channels=bytes(d.id for d in self._channels))
        self._persistent: dict[str, NetAddress] = {}
        for address in settings.persistent_peers:
            if address.node_id == own_id:
                log.warning("ignoring persistent peer %s: it is this node", address)
            else:
                self._persistent[address.node_id] = address
        self._unconditional = frozenset(settings.unconditional_peer_ids) | frozenset(self._persistent)
        self._peers: dict[str, ConnectedPeer] = {}
        self._dialing: dict[str, bool] = {}
        """node id -> whether the dial is to a persistent peer"""
        self._bans = BanList()
        self._dial_requests: trio.MemorySendChannel[NetAddress] | None = None
        self._handshakes: dict[int, _InboundHandshake] = {}
        """inbound handshakes in progress by accept order"""
        self._accepted = 0
        self.stats = SwitchStats()
        self.listen_port: int | None = None

    # -- queries -----------------------------------------------------------------------------------

    def peers(self) -> list[ConnectedPeer]:
        return [peer for _, peer in sorted(self._peers.items())]

    def peer(self, node_id: str) -> ConnectedPeer | None:
        return self._peers.get(node_id)

    @property
    def num_peers(self) -> int:
        return len(self._peers)

    @property
    def num_inbound(self) -> int:
        return sum(not p.is_outbound for p in self._peers.values())

    @property
    def num_outbound(self) -> int:
        return sum(p.is_outbound for p in self._peers.values())

    def inbound_handshakes(self) -> dict[str, int]:
        """Inbound handshakes in progress, by remote IP."""
        return dict(Counter(h.ip for h in self._handshakes.values()))

    def is_banned(self, node_id: str) -> bool:
        return self._bans.id_banned_until(node_id, trio.current_time()) is not None

    def is_ip_banned(self, ip: str) -> bool:
        return self._bans.ip_banned_until(ip, trio.current_time()) is not None

    def banned_ids(self) -> list[str]:
        return self._bans.banned_ids(trio.current_time())

    # PexHost
    @property
    def outbound_target(self) -> int:
        return self.settings.max_outbound

    def outbound_count(self) -> int:
        connected = sum(p.is_outbound and not p.is_persistent for p in self._peers.values())
        return connected + sum(not persistent for persistent in self._dialing.values())

    def is_connected_or_dialing(self, node_id: str) -> bool:
        return node_id in self._peers or node_id in self._dialing

    def stop_peer_when_sent(self, node_id: str, reason: str) -> None:
        """Let a peer go, without a ban, once what is queued for it is written (seed mode)."""
        peer = self._peers.get(node_id)
        if peer is not None:
            peer.stop_when_sent(reason)

    # -- sending and stopping ----------------------------------------------------------------------

    def broadcast(self, channel_id: int, message: bytes) -> int:
        """Queue `message` to every peer on `channel_id`; how many peers took it."""
        return sum(peer.try_send(channel_id, message) for peer in list(self._peers.values()))

    def stop_peer_for_error(self, peer: Peer | str, reason: str) -> None:
        """Drop `peer` (a peer or a node id) and ban it: it misbehaved."""
        node_id = peer if isinstance(peer, str) else peer.id
        connected = self._peers.get(node_id)
        if connected is None:
            self._ban(node_id, None, reason)
            return
        self._ban(connected.id, connected.remote_ip, reason)
        connected.stop(f"stopped for error: {reason}")

    def stop_peer(self, peer: Peer | str, reason: str) -> None:
        """Drop `peer` without a ban."""
        connected = self._peers.get(peer if isinstance(peer, str) else peer.id)
        if connected is not None:
            connected.stop(reason)

    def ban(self, node_id: str, reason: str, ip: str | None = None) -> None:
        """Ban a node id (and an IP) for `ban_duration` without touching connections."""
        self._ban(node_id, ip, reason)

    def _ban(self, node_id: str, ip: str | None, reason: str) -> None:
        until = trio.current_time() + self.settings.ban_duration
        if ip is not None and is_loopback(ip) and not self.settings.ban_loopback_ips:
            ip = None
        self._bans.ban(node_id, ip, until)
        self.stats.bans += 1
        log.warning(
            "banned peer %s%s for %g s: %s",
            node_id,
            f" and IP {ip}" if ip else "",
            self.settings.ban_duration,
            reason,
        )

    def request_dial(self, address: NetAddress) -> bool:
        """Dial `address` in the background (used by PEX); False if it is us, connected, being
        dialed, banned, or the switch is not running."""
        if self._dial_requests is None or self._why_not_dial(address) is not None:
            return False
        try:
            self._dial_requests.send_nowait(address)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        self._dialing[address.node_id] = False
        return True

    # -- the service -------------------------------------------------------------------------------

    def _advertised_listen_addr(self, port: int) -> str:
        if self.settings.external_address is not None:
            return format_host_port(*self.settings.external_address)
        return format_host_port(self.settings.listen_host or "0.0.0.0", port)

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen, accept, dial persistent peers and serve every peer until cancelled; reports
        the bound listen port through `task_status`."""
        where = format_host_port(self.settings.listen_host, self.settings.listen_port)
        try:
            listeners = await trio.open_tcp_listeners(
                self.settings.listen_port, host=self.settings.listen_host
            )
        except OSError as exc:
            raise OSError(exc.errno, f"p2p cannot listen on {where}: {exc.strerror or exc}") from exc
        port = int(listeners[0].socket.getsockname()[1])
        self.listen_port = port
        self.node_info = replace(self.node_info, listen_addr=self._advertised_listen_addr(port))
        send, receive = trio.open_memory_channel[NetAddress](DIAL_QUEUE_SIZE)
        self._dial_requests = send
        log.info(
            "p2p listening on %s as node %s", format_host_port(self.settings.listen_host, port), self.node_id
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    partial(trio.serve_listeners, self._handle_inbound, listeners, handler_nursery=nursery)
                )
                for address in self._persistent.values():
                    nursery.start_soon(self._keep_connected, address)
                nursery.start_soon(self._serve_dial_requests, receive, nursery)
                if self.pex is not None:
                    await nursery.start(self.pex.run)
                task_status.started(port)
        finally:
            self._dial_requests = None
            self.listen_port = None

    async def _serve_dial_requests(
        self, receive: trio.MemoryReceiveChannel[NetAddress], nursery: trio.Nursery
    ) -> None:
        async with receive:
            async for address in receive:
                nursery.start_soon(self._dial_and_serve, address, False)

    def _backoff(self, failures: int) -> float:
        settings = self.settings
        delay = min(settings.redial_max_delay, settings.redial_initial_delay * 2.0 ** min(failures, 30))
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _keep_connected(self, address: NetAddress) -> None:
        """Keep a persistent peer connected: redial with back-off while it is not, wait out bans."""
        failures = 0
        while True:
            existing = self._peers.get(address.node_id)
            if existing is not None:
                await existing.disconnected.wait()
                failures = 0
                await trio.sleep(self._backoff(0))
                continue
            now = trio.current_time()
            until = self._bans.id_banned_until(address.node_id, now)
            if until is None:
                until = self._bans.ip_banned_until(address.host, now)
            if until is not None:
                log.debug("not dialing persistent peer %s until its ban expires", address)
                await trio.sleep_until(until)
                continue
            if address.node_id in self._dialing:
                await trio.sleep(self._backoff(failures))
                continue
            self._dialing[address.node_id] = True
            connected = await self._dial_and_serve(address, True)
            failures = 0 if connected else failures + 1
            await trio.sleep(self._backoff(failures))

    def _why_not_dial(self, address: NetAddress) -> str | None:
        now = trio.current_time()
        if address.node_id == self.node_id:
            return "it is this node"
        if address.node_id in self._peers:
            return "already connected"
        if address.node_id in self._dialing:
            return "already dialing"
        if self._bans.id_banned_until(address.node_id, now) is not None:
            return "it is banned"
        if self._bans.ip_banned_until(address.host, now) is not None:
            return "its IP is banned"
        return None

    async def _dial(self, address: NetAddress) -> trio.SocketStream | None:
        self.stats.dials += 1
        with trio.move_on_after(self.settings.dial_timeout):
            try:
                return await trio.open_tcp_stream(address.host, address.port)
            except OSError as exc:
                log.info("could not dial %s: %s", address, exc)
                self.stats.dial_failures += 1
                return None
        log.info("could not dial %s: no connection within %g s", address, self.settings.dial_timeout)
        self.stats.dial_failures += 1
        return None

    async def _dial_and_serve(self, address: NetAddress, persistent: bool) -> bool:
        """Dial, handshake and serve `address` until the connection ends; whether it was
        admitted. The caller has entered it in `_dialing`."""
        try:
            stream = await self._dial(address)
            if stream is None:
                if not persistent and self.pex is not None:
                    self.pex.dial_failed(address, "dial failed")
                return False
            try:
                try:
                    remote_ip = str(stream.socket.getpeername()[0])
                    peer = await self._upgrade(
                        stream,
                        outbound=True,
                        expected=address,
                        host=address.host,
                        port=address.port,
                        remote_ip=remote_ip,
                    )
                except OSError as exc:
                    log.info("connection to %s broke: %s", address, exc)
                    peer = None
                finally:
                    self._dialing.pop(address.node_id, None)
                if peer is None:
                    if not persistent and self.pex is not None:
                        self.pex.dial_failed(address, "handshake failed")
                    return False
                return await self._serve_peer(peer)
            finally:
                await trio.aclose_forcefully(stream)
        finally:
            self._dialing.pop(address.node_id, None)

    async def _handle_inbound(self, stream: trio.SocketStream) -> None:
        try:
            try:
                host, port = stream.socket.getpeername()[:2]
            except OSError:
                return
            host, port = str(host), int(port)
            label = format_host_port(host, port)
            self._accepted += 1
            self.stats.inbound_connections += 1
            until = self._bans.ip_banned_until(host, trio.current_time())
            if until is not None:
                self.stats.refused_banned += 1
                log.info(
                    "refused connection from %s: its IP is banned for another %.0f s",
                    label,
                    until - trio.current_time(),
                )
                return
            entry = _InboundHandshake(ip=host, label=label, order=self._accepted)
            self._make_room(entry)
            self._handshakes[entry.order] = entry
            peer: ConnectedPeer | None = None
            try:
                with entry.scope:
                    peer = await self._upgrade(
                        stream,
                        outbound=False,
                        expected=None,
                        host=host,
                        port=port,
                        remote_ip=host,
                        inbound=entry,
                    )
            finally:
                self._handshakes.pop(entry.order, None)
            if peer is not None:
                await self._serve_peer(peer)
        finally:
            await trio.aclose_forcefully(stream)

    def _make_room(self, entry: _InboundHandshake) -> None:
        """Free a slot for `entry` if its IP or the switch is at its bound of handshakes, by
        cutting short the least advanced, oldest handshake (of the same IP if that IP is full)."""
        same_ip = [h for h in self._handshakes.values() if h.ip == entry.ip]
        if len(same_ip) >= MAX_INBOUND_HANDSHAKES_PER_IP:
            candidates, bound = same_ip, f"{MAX_INBOUND_HANDSHAKES_PER_IP} from IP {entry.ip}"
        elif len(self._handshakes) >= MAX_CONCURRENT_INBOUND_HANDSHAKES:
            candidates, bound = list(self._handshakes.values()), f"{MAX_CONCURRENT_INBOUND_HANDSHAKES} in all"
        else:
            return
        victim = min(candidates, key=_InboundHandshake.eviction_rank)
        del self._handshakes[victim.order]
        victim.scope.cancel()
        self.stats.handshakes_evicted += 1
        # debug: a flood of connections would otherwise log a line each
        log.debug(
            "hanging up on %s (%s): %s handshakes in progress, %s is newer",
            victim.label,
            victim.progress.name.lower().replace("_", " "),
            bound,
            entry.label,
        )

    async def _upgrade(
        self,
        stream: trio.SocketStream,
        *,
        outbound: bool,
        expected: NetAddress | None,
        host: str,
        port: int,
        remote_ip: str,
        inbound: _InboundHandshake | None = None,
    ) -> ConnectedPeer | None:
        """Handshake, exchange node info and check the peer; the peer, or None after logging
        why we hung up. `inbound` is the slot of an inbound connection, whose progress is kept."""
        label = str(expected) if expected is not None else format_host_port(host, port)
        timeout = self.settings.handshake_timeout
        deadline = trio.current_time() + timeout
        secret_timeout = timeout
        if inbound is not None:
            secret_timeout = min(timeout, self.settings.inbound_secret_handshake_timeout)
        try:
            secret = await handshake(
                stream,
                self._key,
                secret_timeout,
                remote=label,
                on_key_received=inbound.key_received if inbound is not None else None,
            )
            if inbound is not None:
                inbound.progress = _Progress.AUTHENTICATED
            with trio.fail_at(deadline):
                info = await exchange_node_info(secret, self.node_info)
        except trio.TooSlowError:
            self.stats.handshake_failures += 1
            log.info("hanging up on %s: the node info exchange did not finish within %g s", label, timeout)
            return None
        except P2PError as exc:
            self.stats.handshake_failures += 1
            log.info("hanging up on %s: %s", label, exc)
            return None
        remote_id = secret.remote_node_id
        label = f"{remote_id}@{format_host_port(host, port)}"
        secret.remote = f"peer {label}"  # its errors name the authenticated peer from now on
        try:
            if expected is not None and remote_id != expected.node_id:
                if self.pex is not None:
                    self.pex.wrong_node(expected)
                raise IncompatiblePeer(f"we dialed {expected} but reached node {remote_id}")
            if remote_id == self.node_id:
                raise IncompatiblePeer("it is this node")
            check_peer_node_info(self.node_info, info, remote_id)
        except IncompatiblePeer as exc:
            self.stats.refused += 1
            log.info("hanging up on %s: %s", label, exc)
            return None
        return ConnectedPeer(
            secret,
            info,
            self._channels,
            self._deliver,
            outbound=outbound,
            persistent=remote_id in self._persistent,
            remote_host=host,
            remote_port=port,
            remote_ip=remote_ip,
            settings=self.settings,
            totals=self.stats.traffic,
        )

    def _preferred(self, peer: ConnectedPeer) -> bool:
        """Of two connections between the same nodes, both keep the one the lower id dialed."""
        return peer.is_outbound == (self.node_id < peer.id)

    def _admission(self, peer: ConnectedPeer) -> str | ConnectedPeer | None:
        """None to admit; a reason to refuse; or an existing connection being replaced, to wait for."""
        now = trio.current_time()
        until = self._bans.id_banned_until(peer.id, now)
        if until is not None:
            self.stats.refused_banned += 1
            return f"it is banned for another {until - now:.1f} s"
        existing = self._peers.get(peer.id)
        if existing is not None:
            if self._preferred(peer) and not self._preferred(existing):
                existing.stop("replaced by a simultaneous connection")
                return existing
            self.stats.refused += 1
            return "already connected"
        if not self.settings.allow_duplicate_ip:
            for other in self._peers.values():
                if other.remote_ip == peer.remote_ip:
                    self.stats.refused += 1
                    return (
                        f"node {other.id} is already connected from IP {peer.remote_ip}"
                        " (allow_duplicate_ip is off)"
                    )
        if (
            not peer.is_outbound
            and peer.id not in self._unconditional
            and self.num_inbound >= self.settings.max_inbound
        ):
            self.stats.refused += 1
            return f"the inbound peer limit ({self.settings.max_inbound}) is reached"
        return None

    async def _serve_peer(self, peer: ConnectedPeer) -> bool:
        """Admit `peer`, hand it to the reactors and run its connection until it ends; whether
        it was admitted."""
        while True:
            verdict = self._admission(peer)
            if isinstance(verdict, ConnectedPeer):
                await verdict.disconnected.wait()
                continue
            if verdict is not None:
                log.info("hanging up on %s: %s", peer.label, verdict)
                return False
            break
        self._peers[peer.id] = peer
        self.stats.connects += 1
        log.info("peer connected: %s (%s)", peer.label, "outbound" if peer.is_outbound else "inbound")
        added: list[Reactor] = []
        reason = "the switch stopped"
        ban = False
        try:
            with peer.cancel_scope:
                for reactor in self._reactors:
                    reactor.add_peer(peer)
                    added.append(reactor)
                await peer.connection.run()
        except PeerMisbehaved as exc:
            reason, ban = f"misbehaved: {exc}", True
        except ProtocolViolation as exc:
            reason, ban = str(exc), True
        except P2PError as exc:
            reason = str(exc)
        except Exception as exc:
            log.exception("error serving peer %s", peer.label)
            reason = f"internal error: {exc!r}"
        finally:
            if peer.stop_reason is not None:
                reason, ban = peer.stop_reason, peer.ban_on_stop
            if ban:
                self._ban(peer.id, peer.remote_ip, reason)
            self._unregister(peer, reason, added)
        return True

    def _unregister(self, peer: ConnectedPeer, reason: str, added: list[Reactor]) -> None:
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
        for reactor in added:
            try:
                reactor.remove_peer(peer, reason)
            except Exception:
                log.exception("reactor %s failed to remove peer %s", type(reactor).__name__, peer.label)
        self.stats.disconnects += 1
        log.info("peer disconnected: %s: %s", peer.label, reason)
        peer.disconnected.set()

    def _deliver(self, peer: ConnectedPeer, channel_id: int, message: bytes) -> None:
        if peer.stop_reason is None:  # nothing more from a peer being dropped
            self._reactor_by_channel[channel_id].receive(channel_id, peer, message)
