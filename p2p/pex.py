"""Peer exchange (PEX): the reactor on channel 0x00 that asks peers for addresses, answers their
requests, keeps the address book and dials from it while the node has fewer outbound peers than
its target.

Messages (canonical arrays): `[1]` asks for addresses, `[2, [[id, host, port], ...]]` answers
with at most 250. A peer may ask at most once per `min_request_interval`; a second request
sooner, addresses nobody asked it for, or an undecodable message is misbehaviour. Addresses of
private peers and our own are never stored or handed out. Each peer is asked when it connects
and again, while the book wants more, at most once per `request_interval`.

Seed mode (`[p2p] seed_mode`, CometBFT's): the node crawls instead of keeping peers. An inbound
peer that asks for addresses gets one answer and is let go once it is sent; an outbound peer is
let go once it has answered our request (its addresses are in the book), and the dial loop goes
on to the next address of the book, none crawled again within `SEED_RECRAWL_INTERVAL`.
Persistent peers are kept.

The switch creates and runs this reactor when PEX is on; the reactor reaches the switch only
through the small `PexHost` protocol.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Protocol

import trio

from p2p.addrbook import AddressBook
from p2p.address import NetAddress, split_host_port
from p2p.base import PEX_CHANNEL, ChannelDescriptor, Peer, PeerMisbehaved
from p2p.nodeinfo import advertised_address
from primitives.codec import DecodeError, decode, encode, field_bytes, field_int, field_list, field_text

log = logging.getLogger("derivd.p2p")

PEX_REQUEST = 1
PEX_ADDRS = 2
MAX_ADDRESSES_PER_MESSAGE = 250
MAX_PEX_MESSAGE_SIZE = 128 * 1024
WANT_MORE_ADDRESSES = 1000
"""below this many known addresses the reactor keeps asking peers"""
SEED_RECRAWL_INTERVAL = 120.0
"""seconds before a seed dials a crawled address again (CometBFT's minTimeBetweenCrawls)"""


@dataclass(frozen=True, slots=True)
class PexRequest:
    pass


@dataclass(frozen=True, slots=True)
class PexAddrs:
    addresses: tuple[NetAddress, ...]


PexMessage = PexRequest | PexAddrs


def encode_pex_message(message: PexMessage) -> bytes:
    if isinstance(message, PexRequest):
        return encode([PEX_REQUEST])
    return encode([PEX_ADDRS, [[a.node_id.encode(), a.host.encode(), a.port] for a in message.addresses]])


def decode_pex_message(data: bytes) -> PexMessage:
    """A PEX message from its bytes; DecodeError (a ValueError) says what is wrong."""
    fields = field_list(decode(data, max_size=MAX_PEX_MESSAGE_SIZE), "pex message", max_len=2)
    if not fields:
        raise DecodeError("pex message: empty")
    kind = field_int(fields[0], "pex message kind", PEX_REQUEST, PEX_ADDRS)
    if kind == PEX_REQUEST:
        field_list(fields, "pex request", 1)
        return PexRequest()
    field_list(fields, "pex addresses", 2)
    addresses: list[NetAddress] = []
    for index, item in enumerate(field_list(fields[1], "addresses", max_len=MAX_ADDRESSES_PER_MESSAGE)):
        entry = field_list(item, f"addresses[{index}]", 3)
        node_id = field_bytes(entry[0], f"addresses[{index}].node_id", size=40).decode("ascii", "replace")
        host = field_text(entry[1], f"addresses[{index}].host", 255)
        port = field_int(entry[2], f"addresses[{index}].port", 1, 65535)
        try:
            addresses.append(NetAddress(node_id, host, port))
        except ValueError as exc:
            raise DecodeError(f"addresses[{index}]: {exc}") from None
    return PexAddrs(tuple(addresses))


class PexHost(Protocol):
    """What PEX needs of the switch."""

    @property
    def node_id(self) -> str: ...

    @property
    def outbound_target(self) -> int:
        """How many outbound peers (besides persistent ones) the node wants."""
        ...

    def outbound_count(self) -> int:
        """Outbound peers (besides persistent ones) connected or being dialed."""
        ...

    def is_connected_or_dialing(self, node_id: str) -> bool: ...

    def is_banned(self, node_id: str) -> bool: ...

    def request_dial(self, address: NetAddress) -> bool:
        """Start dialing `address` in the background; False if the switch will not."""
        ...

    def stop_peer_when_sent(self, node_id: str, reason: str) -> None:
        """Disconnect the peer, without a ban, once what is queued for it is written."""
        ...


def peer_dial_address(peer: Peer) -> NetAddress | None:
    """Where `peer` can be dialed: the address we dialed, or the listen address it advertises
    (an unspecified host replaced by the address it connected from)."""
    try:
        host, port = split_host_port(peer.remote_address)
    except ValueError:
        return None
    if peer.is_outbound:
        try:
            return NetAddress(peer.id, host, port)
        except ValueError:
            return None
    return advertised_address(peer.node_info, host)


class PexReactor:
    """Peer exchange over channel 0x00 (priority 1)."""

    def __init__(
        self,
        book: AddressBook,
        host: PexHost,
        *,
        rng: random.Random,
        request_interval: float = 30.0,
        min_request_interval: float | None = None,
        retry_base: float = 5.0,
        retry_cap: float = 600.0,
        seed_mode: bool = False,
    ) -> None:
        self.book = book
        self.host = host
        self.rng = rng
        self.seed_mode = seed_mode
        if seed_mode:
            retry_base = max(retry_base, SEED_RECRAWL_INTERVAL)
            retry_cap = max(retry_cap, retry_base)
        self.request_interval = request_interval
        self.min_request_interval = (
            request_interval / 3 if min_request_interval is None else min_request_interval
        )
        self.retry_base = retry_base
        self.retry_cap = retry_cap
        self._peers: dict[str, Peer] = {}
        self._last_request_sent: dict[str, float] = {}
        self._last_request_received: dict[str, float] = {}
        self._awaiting_answer: set[str] = set()
        self.requests_received = 0
        self.addresses_received = 0

    def channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                PEX_CHANNEL, priority=1, send_queue_capacity=10, max_message_size=MAX_PEX_MESSAGE_SIZE
            )
        ]

    # -- reactor callbacks -------------------------------------------------------------------------

    def add_peer(self, peer: Peer) -> None:
        self._peers[peer.id] = peer
        address = peer_dial_address(peer)
        if address is not None:
            if peer.is_outbound:
                self.book.mark_good(address)
            else:
                self.book.add(address, "peer")
        self._ask(peer, trio.current_time())

    def remove_peer(self, peer: Peer, reason: str) -> None:
        if self._peers.get(peer.id) is peer:
            del self._peers[peer.id]
            self._last_request_sent.pop(peer.id, None)
            self._last_request_received.pop(peer.id, None)
            self._awaiting_answer.discard(peer.id)

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        try:
            decoded = decode_pex_message(message)
        except DecodeError as exc:
            raise PeerMisbehaved(f"undecodable PEX message: {exc}") from None
        now = trio.current_time()
        if isinstance(decoded, PexRequest):
            last = self._last_request_received.get(peer.id)
            if last is not None and now - last < self.min_request_interval:
                raise PeerMisbehaved(
                    f"asked for addresses again after {now - last:.3f} s "
                    f"(at most once per {self.min_request_interval:g} s)"
                )
            self._last_request_received[peer.id] = now
            self.requests_received += 1
            self._answer(peer)
            if not peer.is_outbound and self._lets_go(peer):
                self.host.stop_peer_when_sent(peer.id, "seed mode: addresses sent")
            return
        if peer.id not in self._awaiting_answer:
            raise PeerMisbehaved("sent addresses nobody asked it for")
        self._awaiting_answer.discard(peer.id)
        self.addresses_received += len(decoded.addresses)
        for address in decoded.addresses:
            self.book.add(address, peer.id)
        if peer.is_outbound and self._lets_go(peer):
            self.host.stop_peer_when_sent(peer.id, "seed mode: crawled")

    def _lets_go(self, peer: Peer) -> bool:
        """Whether seed mode ends the connection once the exchange with `peer` is done."""
        return self.seed_mode and not peer.is_persistent

    # -- asking and answering ------------------------------------------------------------------

    def _ask(self, peer: Peer, now: float) -> None:
        if peer.try_send(PEX_CHANNEL, encode_pex_message(PexRequest())):
            self._last_request_sent[peer.id] = now
            self._awaiting_answer.add(peer.id)

    def _answer(self, peer: Peer) -> None:
        addresses = self.book.sample(
            MAX_ADDRESSES_PER_MESSAGE, self.rng, exclude=lambda node_id: node_id == peer.id
        )
        peer.try_send(PEX_CHANNEL, encode_pex_message(PexAddrs(tuple(addresses))))

    def ask_peers(self, now: float) -> None:
        """While the book wants more addresses, ask one peer not asked within the interval."""
        if len(self.book) >= WANT_MORE_ADDRESSES:
            return
        due = [
            peer
            for node_id, peer in sorted(self._peers.items())
            if now - self._last_request_sent.get(node_id, float("-inf")) >= self.request_interval
        ]
        if due:
            self._ask(self.rng.choice(due), now)

    def dial_more(self, now: float) -> int:
        """Ask the switch to dial book addresses while outbound peers are below target; returns
        how many dials were requested."""
        requested = 0
        while self.host.outbound_count() < self.host.outbound_target:
            address = self.book.pick_to_dial(
                self.rng,
                now,
                exclude=lambda node_id: (
                    node_id == self.host.node_id
                    or self.host.is_connected_or_dialing(node_id)
                    or self.host.is_banned(node_id)
                ),
                retry_base=self.retry_base,
                retry_cap=self.retry_cap,
            )
            if address is None:
                break
            self.book.mark_attempt(address.node_id, now)
            if not self.host.request_dial(address):
                break
            requested += 1
        return requested

    def dial_failed(self, address: NetAddress, reason: str) -> None:
        """The switch could not connect to `address` (the book backs off or forgets it)."""
        self.book.mark_failed(address.node_id)

    def wrong_node(self, address: NetAddress) -> None:
        """Dialing `address` reached another node: the address is stale."""
        self.book.remove(address.node_id)

    # -- the service -----------------------------------------------------------------------------

    async def save_book(self) -> None:
        """Write the book if it changed (in a thread: the write is synced); a failure is logged
        and retried at the next round."""
        if self.book.dirty and self.book.path is not None:
            data = self.book.to_json()
            self.book.dirty = False
            try:
                await trio.to_thread.run_sync(self.book.write, data)
            except OSError as exc:
                self.book.dirty = True
                log.warning("could not save the address book %s: %s", self.book.path, exc)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every `request_interval / 3`: dial from the book if below the outbound target, ask a
        peer for addresses, save the book if it changed. The book is saved on the way out too."""
        task_status.started()
        try:
            while True:
                now = trio.current_time()
                self.dial_more(now)
                self.ask_peers(now)
                await self.save_book()
                await trio.sleep(self.min_request_interval)
        finally:
            if self.book.dirty and self.book.path is not None:
                with trio.CancelScope(shield=True):
                    try:
                        await trio.to_thread.run_sync(self.book.save)
                    except OSError as exc:
                        log.warning("could not save the address book %s: %s", self.book.path, exc)
