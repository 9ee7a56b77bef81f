"""What the transport offers the subsystems that gossip over it: channel descriptors, the
`Reactor` interface, the `Peer` handle and the node info exchanged after the handshake.

p2p moves opaque bytes on numbered channels; each subsystem (consensus, mempool, evidence,
block sync) owns a reactor that encodes and decodes its own messages. Reactor callbacks run in
the switch's trio tasks and must not block: they hand work to their subsystem (for example with
a memory channel's `send_nowait`) and return. A reactor that finds a peer's message invalid
raises `PeerMisbehaved`, and the switch drops and temporarily bans that peer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

# CometBFT's channel ids and priorities (REFERENCE.md).
PEX_CHANNEL = 0x00
CONSENSUS_STATE_CHANNEL = 0x20
CONSENSUS_DATA_CHANNEL = 0x21
CONSENSUS_VOTE_CHANNEL = 0x22
MEMPOOL_CHANNEL = 0x30
EVIDENCE_CHANNEL = 0x38
BLOCKSYNC_CHANNEL = 0x40
STATESYNC_SNAPSHOT_CHANNEL = 0x60
STATESYNC_CHUNK_CHANNEL = 0x61

PROTOCOL_VERSION_P2P = 8
PROTOCOL_VERSION_BLOCK = 11


class PeerMisbehaved(Exception):
    """Raised by a reactor for an undecodable or invalid message: the peer is dropped and
    banned for a while."""


@dataclass(frozen=True, slots=True)
class ChannelDescriptor:
    id: int
    priority: int
    send_queue_capacity: int = 100
    max_message_size: int = 1 << 20
    """bytes; a larger message on this channel gets the peer banned"""


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """Exchanged right after the authenticated handshake (CometBFT's DefaultNodeInfo)."""

    node_id: str
    listen_addr: str
    network: str
    version: str
    channels: bytes
    moniker: str
    protocol_p2p: int = PROTOCOL_VERSION_P2P
    protocol_block: int = PROTOCOL_VERSION_BLOCK
    protocol_app: int = 0
    other: dict[str, str] = field(default_factory=dict)


class Peer(Protocol):
    """A connected peer as reactors see it."""

    @property
    def id(self) -> str: ...

    @property
    def node_info(self) -> NodeInfo: ...

    @property
    def is_outbound(self) -> bool: ...

    @property
    def is_persistent(self) -> bool: ...

    @property
    def remote_address(self) -> str:
        """`host:port` of the connection."""
        ...

    def try_send(self, channel_id: int, message: bytes) -> bool:
        """Queue `message` without waiting; False if the channel's queue is full (or the peer is
        gone): the message is not sent."""
        ...

    def get(self, key: str) -> Any:
        """Per-peer state a reactor keeps (None if unset)."""
        ...

    def set(self, key: str, value: Any) -> None: ...


_S = TypeVar("_S")


def peer_state(peer: Peer, key: str, kind: type[_S]) -> _S:
    """The reactor state of type `kind` that `peer` keeps under `key`, a new `kind()` if it has
    none."""
    value = peer.get(key)
    if not isinstance(value, kind):
        value = kind()
        peer.set(key, value)
    return value


class Reactor(Protocol):
    """A subsystem's gossip over its channels."""

    def channels(self) -> list[ChannelDescriptor]: ...

    def add_peer(self, peer: Peer) -> None:
        """A peer is connected (after the handshake and node-info checks)."""
        ...

    def remove_peer(self, peer: Peer, reason: str) -> None: ...

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        """A whole message from `peer` on one of this reactor's channels; raise PeerMisbehaved
        if it is invalid."""
        ...
