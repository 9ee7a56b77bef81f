"""Shared test helpers: a toy reactor, a fake peer, switches with fast timers on loopback, a
man-in-the-middle stream pair, and polling with a deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import trio
import trio.testing

from p2p.address import NetAddress
from p2p.base import ChannelDescriptor, NodeInfo, Peer, PeerMisbehaved
from p2p.nodekey import node_id
from p2p.switch import P2PSettings, Switch
from primitives.keys import PrivateKey

TOY_CHANNEL = 0x70
TOY_LOW_CHANNEL = 0x71
CHAIN_ID = "test-chain"


async def wait_until(
    predicate: Callable[[], bool], timeout: float = 5.0, what: str = "the condition"
) -> None:
    """Poll `predicate` until it holds; AssertionError naming `what` after `timeout` seconds."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.005)
        return
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class ToyReactor:
    """Records what it sees; raises PeerMisbehaved for the message b"evil"."""

    def __init__(self, channels: list[ChannelDescriptor] | None = None) -> None:
        self._channels = channels or [
            ChannelDescriptor(TOY_CHANNEL, priority=5),
            ChannelDescriptor(TOY_LOW_CHANNEL, priority=1),
        ]
        self.peers: dict[str, Peer] = {}
        self.received: list[tuple[int, str, bytes]] = []
        self.removed: list[tuple[str, str]] = []
        self.added: list[str] = []

    def channels(self) -> list[ChannelDescriptor]:
        return self._channels

    def add_peer(self, peer: Peer) -> None:
        self.peers[peer.id] = peer
        self.added.append(peer.id)

    def remove_peer(self, peer: Peer, reason: str) -> None:
        if self.peers.get(peer.id) is peer:
            del self.peers[peer.id]
        self.removed.append((peer.id, reason))

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        if message == b"evil":
            raise PeerMisbehaved("toy reactor: evil message")
        self.received.append((channel_id, peer.id, message))

    def messages_from(self, peer_id: str) -> list[bytes]:
        return [m for _, p, m in self.received if p == peer_id]


@dataclass
class FakePeer:
    """A Peer for reactor unit tests: records what is sent to it."""

    id: str
    node_info: NodeInfo
    is_outbound: bool = False
    is_persistent: bool = False
    remote_address: str = "127.0.0.1:40000"
    sent: list[tuple[int, bytes]] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def try_send(self, channel_id: int, message: bytes) -> bool:
        self.sent.append((channel_id, message))
        return True

    def get(self, key: str) -> Any:
        return self.data.get(key)

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value


def node_info_for(key: PrivateKey, network: str = CHAIN_ID, **changes: Any) -> NodeInfo:
    info = NodeInfo(
        node_id=node_id(key.public_key),
        listen_addr="tcp://0.0.0.0:26656",
        network=network,
        version="0.1.0-test",
        channels=b"",
        moniker="test-node",
    )
    return replace(info, **changes)


FAST = {
    "listen_host": "127.0.0.1",
    "listen_port": 0,
    "pex": False,
    "send_rate": 0,
    "recv_rate": 0,
    "handshake_timeout": 5.0,
    "dial_timeout": 2.0,
    "redial_initial_delay": 0.02,
    "redial_max_delay": 0.1,
}


@dataclass
class Node:
    """A switch with its key and toy reactor."""

    key: PrivateKey
    switch: Switch
    reactor: ToyReactor

    @property
    def id(self) -> str:
        return self.switch.node_id

    def address(self, port: int | None = None) -> NetAddress:
        bound = port if port is not None else self.switch.listen_port
        assert bound is not None
        return NetAddress(self.id, "127.0.0.1", bound)


def make_node(
    *,
    key: PrivateKey | None = None,
    network: str = CHAIN_ID,
    reactor: ToyReactor | None = None,
    info_changes: dict[str, Any] | None = None,
    **settings: Any,
) -> Node:
    key = key or PrivateKey.generate()
    reactor = reactor or ToyReactor()
    switch = Switch(
        key,
        node_info_for(key, network, **(info_changes or {})),
        P2PSettings(**{**FAST, **settings}),
        [reactor],
    )
    return Node(key, switch, reactor)


async def start(nursery: trio.Nursery, node: Node) -> trio.CancelScope:
    """Start the node's switch in `nursery`; the scope stops it alone."""
    scope = trio.CancelScope()

    async def runner(*, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await node.switch.run(task_status=task_status)

    await nursery.start(runner)
    return scope


@asynccontextmanager
async def running(*nodes: Node) -> AsyncIterator[trio.Nursery]:
    async with trio.open_nursery() as nursery:
        for node in nodes:
            await start(nursery, node)
        yield nursery
        nursery.cancel_scope.cancel()


def connected(a: Node, b: Node) -> bool:
    return a.switch.peer(b.id) is not None and b.switch.peer(a.id) is not None


class Interceptor:
    """A transform applied to bytes in flight in one direction (identity until set)."""

    def __init__(self) -> None:
        self.transform: Callable[[bytes], bytes] | None = None
        self.seen: list[bytes] = []


def _one_way(
    interceptor: Interceptor,
) -> tuple[trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream]:
    send_stream, receive_stream = trio.testing.memory_stream_one_way_pair()

    def pump() -> None:
        data = bytes(send_stream.get_data_nowait())
        if data:
            interceptor.seen.append(data)
            if interceptor.transform is not None:
                data = interceptor.transform(data)
            receive_stream.put_data(data)

    async def async_pump() -> None:
        pump()

    send_stream.send_all_hook = async_pump
    send_stream.close_hook = receive_stream.put_eof
    return send_stream, receive_stream


def intercepted_pair() -> tuple[
    trio.StapledStream[Any, Any], trio.StapledStream[Any, Any], Interceptor, Interceptor
]:
    """Two connected streams; the interceptors see (and may rewrite) a->b and b->a traffic."""
    a_to_b, b_to_a = Interceptor(), Interceptor()
    a_send, b_receive = _one_way(a_to_b)
    b_send, a_receive = _one_way(b_to_a)
    return trio.StapledStream(a_send, a_receive), trio.StapledStream(b_send, b_receive), a_to_b, b_to_a
