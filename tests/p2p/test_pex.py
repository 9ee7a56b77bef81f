"""Peer exchange: the message codec, the reactor's rules (requests at most once per interval,
no unsolicited answers, private and own addresses never shared, dialing up to the outbound
target), and on loopback an address spreading from A to C through B, the book persisted."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2p.addrbook import AddressBook
from p2p.address import NetAddress
from p2p.base import PEX_CHANNEL, ChannelDescriptor, Peer, PeerMisbehaved
from p2p.pex import (
    MAX_ADDRESSES_PER_MESSAGE,
    PexAddrs,
    PexReactor,
    PexRequest,
    decode_pex_message,
    encode_pex_message,
)
from primitives.codec import DecodeError, encode
from primitives.keys import PrivateKey
from tests.p2p.helpers import FakePeer, ToyReactor, connected, make_node, node_info_for, running, wait_until

OWN = "00" * 20
PRIVATE = "11" * 20


def addr(n: int, host: str | None = None) -> NetAddress:
    return NetAddress(f"{n:02x}" * 20, host or f"10.0.0.{n}", 26656)


@dataclass
class FakeHost:
    node_id: str = OWN
    outbound_target: int = 2
    connected: set[str] = field(default_factory=set)
    banned: set[str] = field(default_factory=set)
    dialed: list[NetAddress] = field(default_factory=list)
    let_go: list[tuple[str, str]] = field(default_factory=list)

    def outbound_count(self) -> int:
        return len(self.dialed)

    def is_connected_or_dialing(self, node_id: str) -> bool:
        return node_id in self.connected or any(a.node_id == node_id for a in self.dialed)

    def is_banned(self, node_id: str) -> bool:
        return node_id in self.banned

    def request_dial(self, address: NetAddress) -> bool:
        self.dialed.append(address)
        return True

    def stop_peer_when_sent(self, node_id: str, reason: str) -> None:
        self.let_go.append((node_id, reason))


def fake_peer(n: int, *, outbound: bool = False, listen: str = "tcp://0.0.0.0:26656") -> FakePeer:
    key = PrivateKey.from_seed(bytes([n]) * 32)
    info = node_info_for(key, listen_addr=listen)
    return FakePeer(info.node_id, info, is_outbound=outbound, remote_address=f"10.9.9.{n}:40000")


def reactor(host: FakeHost | None = None, book: AddressBook | None = None) -> PexReactor:
    return PexReactor(
        book or AddressBook(None, OWN, private_ids=[PRIVATE]),
        host or FakeHost(),
        rng=random.Random(7),
        request_interval=30,
    )


def answers(peer: FakePeer) -> list[PexAddrs]:
    decoded = [decode_pex_message(m) for c, m in peer.sent if c == PEX_CHANNEL]
    return [m for m in decoded if isinstance(m, PexAddrs)]


# -- messages ------------------------------------------------------------------------------------


def test_messages_round_trip() -> None:
    for message in (PexRequest(), PexAddrs(()), PexAddrs((addr(1), addr(2, "::1"), addr(3, "node.example")))):
        assert decode_pex_message(encode_pex_message(message)) == message


@pytest.mark.parametrize(
    "data",
    [
        encode([]),
        encode([3]),
        encode([1, 0]),
        encode([2]),
        encode([2, [[b"zz" * 20, b"h", 1]]]),
        encode([2, [[b"ab" * 20, b"", 1]]]),
        encode([2, [[b"ab" * 20, b"h", 0]]]),
        encode([2, [[b"ab" * 20, b"h", 1]] * (MAX_ADDRESSES_PER_MESSAGE + 1)]),
        b"\xc0",
    ],
)
def test_bad_messages_do_not_decode(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_pex_message(data)


# -- the reactor ---------------------------------------------------------------------------------


async def test_new_peers_are_asked_and_remembered(mock_clock: trio.testing.MockClock) -> None:
    pex = reactor()
    outbound, inbound = fake_peer(2, outbound=True), fake_peer(3)
    pex.add_peer(outbound)
    pex.add_peer(inbound)
    assert outbound.sent == [(PEX_CHANNEL, encode_pex_message(PexRequest()))]
    assert inbound.sent == [(PEX_CHANNEL, encode_pex_message(PexRequest()))]
    # the dialed address of an outbound peer; an inbound peer's listen address with its IP
    assert pex.book.addresses() == sorted(
        [NetAddress(outbound.id, "10.9.9.2", 40000), NetAddress(inbound.id, "10.9.9.3", 26656)]
    )
    known = pex.book.get(outbound.id)
    assert known is not None and known.ever_connected


async def test_requests_more_often_than_allowed_are_misbehaviour(mock_clock: trio.testing.MockClock) -> None:
    pex = reactor()
    peer = fake_peer(2)
    pex.book.add(addr(5), "peer")
    pex.receive(PEX_CHANNEL, peer, encode_pex_message(PexRequest()))
    assert answers(peer) == [PexAddrs((addr(5),))]
    mock_clock.jump(pex.min_request_interval - 0.5)
    with pytest.raises(PeerMisbehaved, match=re.escape("asked for addresses again after 9.500 s")):
        pex.receive(PEX_CHANNEL, peer, encode_pex_message(PexRequest()))
    mock_clock.jump(0.5)
    pex.receive(PEX_CHANNEL, peer, encode_pex_message(PexRequest()))
    assert len(answers(peer)) == 2


async def test_unsolicited_or_undecodable_messages_are_misbehaviour(
    mock_clock: trio.testing.MockClock,
) -> None:
    pex = reactor()
    peer = fake_peer(2)
    with pytest.raises(PeerMisbehaved, match="sent addresses nobody asked it for"):
        pex.receive(PEX_CHANNEL, peer, encode_pex_message(PexAddrs((addr(5),))))
    with pytest.raises(PeerMisbehaved, match="undecodable PEX message"):
        pex.receive(PEX_CHANNEL, peer, b"\x91\x09")
    pex.add_peer(peer)  # asks it
    pex.receive(PEX_CHANNEL, peer, encode_pex_message(PexAddrs((addr(5), addr(6)))))
    assert addr(5) in pex.book.addresses() and addr(6) in pex.book.addresses()
    with pytest.raises(PeerMisbehaved, match="nobody asked"):  # one answer per request
        pex.receive(PEX_CHANNEL, peer, encode_pex_message(PexAddrs(())))


async def test_own_private_and_requester_addresses_are_not_shared(mock_clock: trio.testing.MockClock) -> None:
    pex = reactor()
    source = fake_peer(2)
    pex.add_peer(source)
    offered = (addr(5), NetAddress(OWN, "10.0.0.1", 1), NetAddress(PRIVATE, "10.0.0.2", 2))
    pex.receive(PEX_CHANNEL, source, encode_pex_message(PexAddrs(offered)))
    requester = fake_peer(6)
    pex.book.add(NetAddress(requester.id, "10.0.0.6", 1), "peer")
    pex.receive(PEX_CHANNEL, requester, encode_pex_message(PexRequest()))
    shared = set(answers(requester)[0].addresses)
    assert addr(5) in shared
    assert not {a.node_id for a in shared} & {OWN, PRIVATE, requester.id}


async def test_dials_from_the_book_up_to_the_outbound_target(mock_clock: trio.testing.MockClock) -> None:
    host = FakeHost(outbound_target=2, connected={addr(3).node_id}, banned={addr(4).node_id})
    pex = reactor(host)
    for n in (3, 4, 5, 6, 7):
        pex.book.add(addr(n), "peer")
    assert pex.dial_more(trio.current_time()) == 2
    assert {a.node_id for a in host.dialed} <= {addr(n).node_id for n in (5, 6, 7)}
    assert pex.dial_more(trio.current_time()) == 0
    pex.dial_failed(host.dialed[0], "refused")
    assert pex.book.get(host.dialed[0].node_id) is not None


def test_pex_channel() -> None:
    (channel,) = reactor().channels()
    assert channel.id == PEX_CHANNEL == 0x00 and channel.priority == 1


# -- on loopback ---------------------------------------------------------------------------------

PEX_FAST: dict[str, Any] = {"pex": True, "pex_request_interval": 0.15}


async def test_pex_spreads_an_address_from_a_to_c_through_b(tmp_path: Path) -> None:
    b = make_node(**PEX_FAST, address_book_path=tmp_path / "b.json")
    async with running(b):
        a = make_node(**PEX_FAST, persistent_peers=(b.address(),), address_book_path=tmp_path / "a.json")
        async with running(a):
            await wait_until(lambda: connected(a, b))
            a_address, b_address = a.address(), b.address()
            c_book = tmp_path / "c.json"
            c = make_node(**PEX_FAST, persistent_peers=(b.address(),), address_book_path=c_book)
            async with running(c):
                await wait_until(lambda: connected(c, a))
                assert c.switch.book is not None
                known = c.switch.book.get(a.id)
                assert known is not None and known.address == a_address and known.ever_connected
        reloaded = AddressBook.load(c_book, c.id)
        assert a_address in reloaded.addresses()
        assert b_address in reloaded.addresses()


class RequestSpammer(ToyReactor):
    """Claims the PEX channel and asks twice at once."""

    def __init__(self) -> None:
        super().__init__([ChannelDescriptor(PEX_CHANNEL, 1)])

    def add_peer(self, peer: Peer) -> None:
        super().add_peer(peer)
        peer.try_send(PEX_CHANNEL, encode_pex_message(PexRequest()))
        peer.try_send(PEX_CHANNEL, encode_pex_message(PexRequest()))


async def test_a_peer_asking_too_often_is_banned() -> None:
    a = make_node(pex=True)
    async with running(a):
        spammer = make_node(reactor=RequestSpammer(), persistent_peers=(a.address(),))
        async with running(spammer):
            await wait_until(lambda: a.switch.is_banned(spammer.id))
            await wait_until(lambda: a.switch.num_peers == 0)
            assert "asked for addresses again" in a.reactor.removed[0][1]
