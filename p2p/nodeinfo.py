"""The node info exchange that follows the authenticated handshake: NodeInfo's canonical
encoding, its exchange over the secret connection, and the checks that decide whether a peer
is usable (its claimed id is the authenticated one, same network, same block protocol, at least
one common channel), plus the dialable address a peer advertises.
"""

from __future__ import annotations

from p2p.address import NetAddress, is_unspecified, parse_listen_address, parse_node_id
from p2p.base import NodeInfo
from p2p.errors import IncompatiblePeer, ProtocolViolation
from p2p.secret_connection import SecretConnection, send_and_receive
from primitives.codec import (
    DecodeError,
    Value,
    decode,
    encode,
    field_bytes,
    field_int,
    field_list,
    field_text,
)

MAX_NODE_INFO_SIZE = 10 * 1024
MAX_NETWORK_LENGTH = 50
MAX_TEXT_LENGTH = 256
MAX_CHANNELS = 64
MAX_OTHER_ENTRIES = 16
_UINT64_MAX = 2**64 - 1


def node_info_fields(info: NodeInfo) -> Value:
    """NodeInfo as a fixed-order array (`other` as [key, value] pairs sorted by key)."""
    return [
        info.node_id.encode(),
        info.listen_addr.encode(),
        info.network.encode(),
        info.version.encode(),
        info.channels,
        info.moniker.encode(),
        info.protocol_p2p,
        info.protocol_block,
        info.protocol_app,
        [[key.encode(), value.encode()] for key, value in sorted(info.other.items())],
    ]


def encode_node_info(info: NodeInfo) -> bytes:
    return encode(node_info_fields(info))


def decode_node_info(data: bytes) -> NodeInfo:
    """NodeInfo from its canonical bytes; DecodeError names the bad field."""
    fields = field_list(decode(data, max_size=MAX_NODE_INFO_SIZE), "node info", 10)
    node_id_text = field_text(fields[0], "node_id", 64)
    try:
        node_id = parse_node_id(node_id_text)
    except ValueError as exc:
        raise DecodeError(f"node_id: {exc}") from None
    if node_id != node_id_text:
        raise DecodeError("node_id: not lower-case")
    network = field_text(fields[2], "network", MAX_NETWORK_LENGTH)
    if not network:
        raise DecodeError("network: empty")
    channels = field_bytes(fields[4], "channels", max_size=MAX_CHANNELS)
    if len(set(channels)) != len(channels):
        raise DecodeError("channels: duplicate channel ids")
    other: dict[str, str] = {}
    for index, entry in enumerate(field_list(fields[9], "other", max_len=MAX_OTHER_ENTRIES)):
        pair = field_list(entry, f"other[{index}]", 2)
        key = field_text(pair[0], f"other[{index}].key", 64)
        if other and key <= max(other):
            raise DecodeError("other: keys not sorted and unique")
        other[key] = field_text(pair[1], f"other[{index}].value", MAX_TEXT_LENGTH)
    return NodeInfo(
        node_id=node_id,
        listen_addr=field_text(fields[1], "listen_addr", MAX_TEXT_LENGTH),
        network=network,
        version=field_text(fields[3], "version", MAX_TEXT_LENGTH),
        channels=channels,
        moniker=field_text(fields[5], "moniker", MAX_TEXT_LENGTH),
        protocol_p2p=field_int(fields[6], "protocol_p2p", 0, _UINT64_MAX),
        protocol_block=field_int(fields[7], "protocol_block", 0, _UINT64_MAX),
        protocol_app=field_int(fields[8], "protocol_app", 0, _UINT64_MAX),
        other=other,
    )


async def exchange_node_info(connection: SecretConnection, ours: NodeInfo) -> NodeInfo:
    """Send ours and receive theirs; ProtocolViolation if theirs does not decode."""
    data = await send_and_receive(
        lambda: connection.send_message(encode_node_info(ours)),
        lambda: connection.receive_message(MAX_NODE_INFO_SIZE),
    )
    try:
        return decode_node_info(data)
    except DecodeError as exc:
        raise ProtocolViolation(f"{connection.remote} sent bad node info: {exc}") from None


def check_peer_node_info(ours: NodeInfo, theirs: NodeInfo, authenticated_id: str) -> None:
    """IncompatiblePeer (saying why) unless the peer is one we can talk to."""
    if theirs.node_id != authenticated_id:
        raise IncompatiblePeer(f"claims node id {theirs.node_id} but authenticated as {authenticated_id}")
    if theirs.network != ours.network:
        raise IncompatiblePeer(f"is on network {theirs.network!r}, we are on {ours.network!r}")
    if theirs.protocol_block != ours.protocol_block:
        raise IncompatiblePeer(
            f"speaks block protocol {theirs.protocol_block}, we speak {ours.protocol_block}"
        )
    if not set(theirs.channels) & set(ours.channels):
        raise IncompatiblePeer(
            f"has no channel in common with us (theirs {theirs.channels.hex()}, ours {ours.channels.hex()})"
        )


def advertised_address(info: NodeInfo, remote_host: str) -> NetAddress | None:
    """Where the peer says it can be dialed: its listen address, with an unspecified host
    (0.0.0.0, ::) replaced by the host it connected from; None if it gives none usable."""
    try:
        host, port = parse_listen_address(info.listen_addr)
        if is_unspecified(host):
            host = remote_host
        return NetAddress(info.node_id, host, port)
    except ValueError:
        return None
