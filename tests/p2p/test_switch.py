"""Switches on 127.0.0.1 (port 0): peers exchange messages on channels through a toy reactor;
incompatible or unexpected peers, garbage and misbehaviour end in a drop (and a ban where
misbehaviour is involved, lasting until it expires); persistent peers are redialed after a
restart; the inbound limit holds; a node never connects to itself or twice to one node."""

from __future__ import annotations

import logging
import os

import pytest
import trio

from p2p.address import NetAddress
from p2p.base import ChannelDescriptor
from p2p.nodeinfo import exchange_node_info
from p2p.secret_connection import handshake
from p2p.switch import P2PSettings, Switch
from primitives.keys import PrivateKey
from tests.p2p.helpers import (
    TOY_CHANNEL,
    TOY_LOW_CHANNEL,
    ToyReactor,
    connected,
    make_node,
    node_info_for,
    running,
    start,
    wait_until,
)


async def test_two_switches_exchange_messages() -> None:
    a = make_node()
    async with running(a):
        b = make_node(persistent_peers=(a.address(),))
        async with running(b):
            await wait_until(lambda: connected(a, b))
            peer_b = a.switch.peer(b.id)
            peer_a = b.switch.peer(a.id)
            assert peer_b is not None and peer_a is not None
            assert peer_a.is_outbound and peer_a.is_persistent and not peer_b.is_outbound
            assert a.reactor.added == [b.id] and b.reactor.added == [a.id]
            assert peer_b.node_info.network == "test-chain"
            assert peer_a.remote_address == a.address().host_port
            big = os.urandom(200_000)
            assert peer_a.try_send(TOY_CHANNEL, b"hello a")
            assert peer_a.try_send(TOY_LOW_CHANNEL, big)
            assert peer_b.try_send(TOY_CHANNEL, b"hello b")
            await wait_until(lambda: len(a.reactor.received) == 2 and len(b.reactor.received) == 1)
            assert sorted(a.reactor.received) == sorted(
                [(TOY_CHANNEL, b.id, b"hello a"), (TOY_LOW_CHANNEL, b.id, big)]
            )
            assert b.reactor.received == [(TOY_CHANNEL, a.id, b"hello b")]
            assert peer_b.traffic.received_by_channel[TOY_LOW_CHANNEL] == len(big)
            assert a.switch.stats.traffic.received_by_channel[TOY_LOW_CHANNEL] == len(big)
            assert a.switch.num_peers == 1 and a.switch.num_inbound == 1 and b.switch.num_outbound == 1
        await wait_until(lambda: a.switch.num_peers == 0)
        assert a.reactor.removed[0][0] == b.id
        assert "closed the connection" in a.reactor.removed[0][1]
        assert a.switch.banned_ids() == []


async def test_three_switches_broadcast() -> None:
    a = make_node()
    async with running(a):
        b = make_node(persistent_peers=(a.address(),))
        async with running(b):
            c = make_node(persistent_peers=(a.address(), b.address()))
            async with running(c):
                await wait_until(lambda: connected(a, b) and connected(a, c) and connected(b, c))
                assert a.switch.broadcast(TOY_CHANNEL, b"from a") == 2
                assert c.switch.broadcast(TOY_CHANNEL, b"from c") == 2
                await wait_until(
                    lambda: (
                        len(a.reactor.received) == 1
                        and len(b.reactor.received) == 2
                        and len(c.reactor.received) == 1
                    )
                )
                assert b.reactor.messages_from(a.id) == [b"from a"]
                assert b.reactor.messages_from(c.id) == [b"from c"]
                assert c.reactor.messages_from(a.id) == [b"from a"]
                assert a.reactor.messages_from(c.id) == [b"from c"]
                assert [p.id for p in a.switch.peers()] == sorted([b.id, c.id])


async def test_wrong_chain_id_is_refused_with_a_logged_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "derivd.p2p")
    a = make_node()
    async with running(a):
        b = make_node(network="other-chain")
        async with running(b):
            assert b.switch.request_dial(a.address())
            await wait_until(lambda: a.switch.stats.refused >= 1 and b.switch.stats.refused >= 1)
            assert a.switch.num_peers == 0 and b.switch.num_peers == 0
            assert a.reactor.added == [] and b.reactor.added == []
        assert a.switch.banned_ids() == [] and b.switch.banned_ids() == []
    assert any(
        b.id in r.getMessage() and "is on network 'other-chain', we are on 'test-chain'" in r.getMessage()
        for r in caplog.records
    )


async def test_incompatible_block_protocol_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "derivd.p2p")
    a = make_node()
    async with running(a):
        b = make_node(info_changes={"protocol_block": 99})
        async with running(b):
            assert b.switch.request_dial(a.address())
            await wait_until(lambda: a.switch.stats.refused >= 1)
            assert a.switch.num_peers == 0
    assert any("speaks block protocol 99, we speak 11" in r.getMessage() for r in caplog.records)


async def test_no_common_channel_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "derivd.p2p")
    a = make_node()
    async with running(a):
        b = make_node(reactor=ToyReactor([ChannelDescriptor(0x55, 1)]))
        async with running(b):
            assert b.switch.request_dial(a.address())
            await wait_until(lambda: a.switch.stats.refused >= 1)
    assert any("has no channel in common" in r.getMessage() for r in caplog.records)


async def test_dialer_hangs_up_on_an_unexpected_node_id(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "derivd.p2p")
    a = make_node()
    async with running(a):
        b = make_node()
        async with running(b):
            impostor = NetAddress("ab" * 20, "127.0.0.1", a.address().port)
            assert b.switch.request_dial(impostor)
            await wait_until(lambda: b.switch.stats.refused == 1)
            await wait_until(lambda: a.switch.num_peers == 0)
            assert b.switch.num_peers == 0
            assert b.reactor.added == []
    assert any(f"we dialed {impostor} but reached node {a.id}" in r.getMessage() for r in caplog.records)


async def test_never_connects_to_itself() -> None:
    a = make_node()
    async with running(a):
        assert not a.switch.request_dial(a.address())
        # our own address under another id: the handshake reveals it is us
        assert a.switch.request_dial(NetAddress("cd" * 20, "127.0.0.1", a.address().port))
        await wait_until(lambda: a.switch.stats.refused >= 1)
        assert a.switch.num_peers == 0
    own = make_node(key=a.key, persistent_peers=(NetAddress(a.id, "127.0.0.1", 1),))
    assert own.switch.outbound_count() == 0


async def test_random_bytes_instead_of_a_handshake_are_dropped() -> None:
    a = make_node()
    async with running(a):
        stream = await trio.open_tcp_stream("127.0.0.1", a.address().port)
        await stream.send_all(bytes(range(256)) * 4)
        with trio.fail_after(5):
            try:
                while await stream.receive_some():
                    pass  # a's ephemeral key message, then the end of the stream
            except trio.BrokenResourceError:
                pass  # or a reset: a closed with our bytes unread
        await stream.aclose()
        await wait_until(lambda: a.switch.stats.handshake_failures == 1)
        assert a.switch.num_peers == 0 and a.switch.banned_ids() == []


async def test_oversized_message_drops_and_bans() -> None:
    a = make_node(reactor=ToyReactor([ChannelDescriptor(TOY_CHANNEL, 5, max_message_size=1000)]))
    async with running(a):
        b = make_node(
            reactor=ToyReactor([ChannelDescriptor(TOY_CHANNEL, 5, max_message_size=1 << 20)]),
            persistent_peers=(a.address(),),
        )
        async with running(b):
            await wait_until(lambda: connected(a, b))
            peer = b.switch.peer(a.id)
            assert peer is not None and peer.try_send(TOY_CHANNEL, bytes(5000))
            await wait_until(lambda: a.switch.num_peers == 0)
            assert a.switch.is_banned(b.id)
            assert "exceeds its limit of 1000 bytes" in a.reactor.removed[0][1]
            assert a.reactor.received == []


async def test_misbehaving_peer_is_banned_until_the_ban_expires() -> None:
    ban = 0.6
    a = make_node(ban_duration=ban)
    async with running(a):
        b = make_node(persistent_peers=(a.address(),))
        async with running(b):
            await wait_until(lambda: connected(a, b))
            peer = b.switch.peer(a.id)
            assert peer is not None and peer.try_send(TOY_CHANNEL, b"evil")
            await wait_until(lambda: a.switch.peer(b.id) is None)
            banned_at = trio.current_time()
            assert a.switch.is_banned(b.id)
            assert a.reactor.removed == [(b.id, "misbehaved: toy reactor: evil message")]
            # b keeps redialing; a refuses it while the ban lasts
            await wait_until(lambda: a.switch.stats.refused_banned >= 2)
            assert a.switch.is_banned(b.id) and a.switch.peer(b.id) is None
            await wait_until(lambda: connected(a, b))
            assert trio.current_time() >= banned_at + ban * 0.9
            assert not a.switch.is_banned(b.id)
            assert a.reactor.added == [b.id, b.id]


async def test_banned_persistent_peer_is_not_dialed_until_the_ban_expires() -> None:
    b = make_node()
    async with running(b):
        ban = 0.5
        a = make_node(persistent_peers=(b.address(),), ban_duration=ban)
        async with running(a):
            await wait_until(lambda: connected(a, b))
            dials = a.switch.stats.dials
            a.switch.stop_peer_for_error(b.id, "sent an invalid block")
            banned_at = trio.current_time()
            assert a.switch.is_banned(b.id)
            await wait_until(lambda: a.switch.peer(b.id) is None)
            assert a.reactor.removed == [(b.id, "stopped for error: sent an invalid block")]
            await wait_until(lambda: connected(a, b))
            assert trio.current_time() >= banned_at + ban * 0.9
            assert a.switch.stats.dials == dials + 1


async def test_ip_ban_refuses_other_keys_from_the_same_address() -> None:
    a = make_node(ban_loopback_ips=True, ban_duration=60)
    async with running(a):
        b = make_node(persistent_peers=(a.address(),))
        async with running(b):
            await wait_until(lambda: connected(a, b))
            a.switch.stop_peer_for_error(b.id, "test")
            await wait_until(lambda: a.switch.num_peers == 0)
        assert a.switch.is_ip_banned("127.0.0.1")
        c = make_node()
        async with running(c):
            assert c.switch.request_dial(a.address())
            await wait_until(lambda: c.switch.stats.handshake_failures == 1)
            assert a.switch.stats.refused_banned >= 1 and a.switch.num_peers == 0


async def test_persistent_peer_is_redialed_after_a_restart() -> None:
    b_key = PrivateKey.generate()
    b1 = make_node(key=b_key)
    async with trio.open_nursery() as nursery:
        b1_scope = await start(nursery, b1)
        port = b1.address().port
        a = make_node(persistent_peers=(NetAddress(b1.id, "127.0.0.1", port),))
        await start(nursery, a)
        await wait_until(lambda: connected(a, b1))
        b1_scope.cancel()
        await wait_until(lambda: a.switch.num_peers == 0)
        b2 = make_node(key=b_key, listen_port=port)
        await start(nursery, b2)
        await wait_until(lambda: connected(a, b2))
        peer = a.switch.peer(b2.id)
        assert peer is not None and peer.try_send(TOY_CHANNEL, b"welcome back")
        await wait_until(lambda: b2.reactor.received == [(TOY_CHANNEL, a.id, b"welcome back")])
        nursery.cancel_scope.cancel()


async def test_inbound_limit_is_enforced() -> None:
    a = make_node(max_inbound=1)
    async with trio.open_nursery() as nursery:
        await start(nursery, a)
        b, c = make_node(persistent_peers=(a.address(),)), make_node(persistent_peers=(a.address(),))
        b_scope = await start(nursery, b)
        await wait_until(lambda: connected(a, b))
        await start(nursery, c)
        await wait_until(lambda: a.switch.stats.refused >= 2)
        assert a.switch.num_inbound == 1 and a.switch.peer(c.id) is None
        b_scope.cancel()  # a slot frees up: c gets in
        await wait_until(lambda: connected(a, c))
        assert a.switch.num_inbound == 1
        nursery.cancel_scope.cancel()


async def test_unconditional_peer_passes_the_inbound_limit() -> None:
    c_key = PrivateKey.generate()
    c_id = make_node(key=c_key).id
    a = make_node(max_inbound=1, unconditional_peer_ids=(c_id,))
    async with running(a):
        b = make_node(persistent_peers=(a.address(),))
        c = make_node(key=c_key, persistent_peers=(a.address(),))
        async with running(b, c):
            await wait_until(lambda: connected(a, b) and connected(a, c))
            assert a.switch.num_inbound == 2


async def test_simultaneous_dials_settle_on_one_connection() -> None:
    a_key, b_key = PrivateKey.generate(), PrivateKey.generate()
    a_probe, b_probe = make_node(key=a_key), make_node(key=b_key)
    async with running(a_probe, b_probe):
        a_port, b_port = a_probe.address().port, b_probe.address().port
    a = make_node(
        key=a_key, listen_port=a_port, persistent_peers=(NetAddress(b_probe.id, "127.0.0.1", b_port),)
    )
    b = make_node(
        key=b_key, listen_port=b_port, persistent_peers=(NetAddress(a_probe.id, "127.0.0.1", a_port),)
    )
    async with running(a, b):
        await wait_until(lambda: connected(a, b))
        ab, ba = a.switch.peer(b.id), b.switch.peer(a.id)
        assert ab is not None and ba is not None
        assert ab.is_outbound != ba.is_outbound
        assert ab.try_send(TOY_CHANNEL, b"one connection")
        await wait_until(lambda: b.reactor.messages_from(a.id) == [b"one connection"])
        assert a.switch.num_peers == 1 and b.switch.num_peers == 1


async def test_silent_peer_is_dropped_after_the_pong_timeout() -> None:
    a = make_node(ping_interval=0.05, pong_timeout=0.2)
    async with running(a):
        # b completes the handshake but its connection never answers (it never runs)
        b_key = PrivateKey.generate()
        stream = await trio.open_tcp_stream("127.0.0.1", a.address().port)
        secret = await handshake(stream, b_key, 5)
        await exchange_node_info(secret, node_info_for(b_key, channels=bytes([TOY_CHANNEL])))
        await wait_until(lambda: a.switch.num_peers == 1)
        await wait_until(lambda: a.switch.num_peers == 0)
        assert "did not answer a ping within 0.2 s" in a.reactor.removed[0][1]
        assert not a.switch.banned_ids()
        await stream.aclose()


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        ("packet", "undecodable packet"),
        ("frame", "failed authentication"),
    ],
)
async def test_bad_packets_and_frames_after_the_handshake_drop_and_ban(garbage: str, reason: str) -> None:
    a = make_node()
    async with running(a):
        b_key = PrivateKey.generate()
        stream = await trio.open_tcp_stream("127.0.0.1", a.address().port)
        secret = await handshake(stream, b_key, 5)
        await exchange_node_info(secret, node_info_for(b_key, channels=bytes([TOY_CHANNEL])))
        await wait_until(lambda: a.switch.num_peers == 1)
        if garbage == "packet":
            await secret.send_all((3).to_bytes(4, "big") + b"\x93\x03\x70")
        else:
            await stream.send_all(os.urandom(1044))
        await wait_until(lambda: a.switch.num_peers == 0)
        b_id = node_info_for(b_key).node_id
        assert a.switch.is_banned(b_id)
        assert reason in a.reactor.removed[0][1] and b_id in a.reactor.removed[0][1]
        await stream.aclose()


async def test_listening_on_a_busy_port_fails_clearly() -> None:
    a = make_node()
    async with running(a):
        b = make_node(listen_port=a.address().port)
        with pytest.raises(OSError, match=f"p2p cannot listen on 127.0.0.1:{a.address().port}"):
            await b.switch.run()


def test_switch_checks_its_configuration() -> None:
    key = PrivateKey.generate()
    with pytest.raises(ValueError, match="node info names node"):
        Switch(key, node_info_for(PrivateKey.generate()), P2PSettings(pex=False), [])
    with pytest.raises(ValueError, match="claimed by two reactors"):
        Switch(key, node_info_for(key), P2PSettings(pex=False), [ToyReactor(), ToyReactor()])
    with pytest.raises(ValueError, match="handshake_timeout must be positive"):
        P2PSettings(handshake_timeout=0)
    switch = Switch(key, node_info_for(key), P2PSettings(pex=True), [ToyReactor()])
    assert switch.node_info.channels == bytes([0x00, TOY_CHANNEL, TOY_LOW_CHANNEL])
