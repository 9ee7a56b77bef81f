"""Node info: canonical encoding round trip, refusal of malformed info, the compatibility
checks and the advertised dialable address."""

from __future__ import annotations

from dataclasses import replace

import pytest

from p2p.address import NetAddress
from p2p.errors import IncompatiblePeer
from p2p.nodeinfo import (
    advertised_address,
    check_peer_node_info,
    decode_node_info,
    encode_node_info,
    node_info_fields,
)
from primitives.codec import DecodeError, Value, encode
from primitives.keys import PrivateKey
from tests.p2p.helpers import node_info_for

KEY = PrivateKey.from_seed(bytes(range(32)))
INFO = node_info_for(KEY, channels=bytes([0x00, 0x20, 0x22]), other={"tx_index": "on", "rpc_address": "x"})


def test_round_trip_is_canonical() -> None:
    data = encode_node_info(INFO)
    assert decode_node_info(data) == INFO
    assert encode_node_info(decode_node_info(data)) == data
    # `other` is encoded sorted, whatever the dict's order
    assert encode_node_info(replace(INFO, other=dict(reversed(list(INFO.other.items()))))) == data


def _with(index: int, value: Value) -> bytes:
    fields = node_info_fields(INFO)
    assert isinstance(fields, list)
    fields[index] = value
    return encode(fields)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (_with(0, INFO.node_id.upper().encode()), "node_id: not lower-case"),
        (_with(0, b"abc"), "node_id: not a node id"),
        (_with(2, b""), "network: empty"),
        (_with(2, b"x" * 51), "network: 51 bytes exceed"),
        (_with(4, b"\x20\x20"), "channels: duplicate"),
        (_with(9, [[b"b", b"1"], [b"a", b"2"]]), "other: keys not sorted"),
        (_with(6, -1), "protocol_p2p"),
        (encode([b"x"]), "expected 10 fields"),
    ],
)
def test_malformed_node_info_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(DecodeError, match=problem):
        decode_node_info(data)


def test_compatibility_checks() -> None:
    ours = INFO
    check_peer_node_info(ours, INFO, INFO.node_id)
    other_id = "ab" * 20
    cases = [
        (INFO, other_id, f"claims node id {INFO.node_id} but authenticated as {other_id}"),
        (replace(INFO, network="other"), INFO.node_id, "is on network 'other', we are on 'test-chain'"),
        (replace(INFO, protocol_block=12), INFO.node_id, "speaks block protocol 12, we speak 11"),
        (replace(INFO, channels=b"\x99"), INFO.node_id, "has no channel in common with us"),
    ]
    for theirs, authenticated, reason in cases:
        with pytest.raises(IncompatiblePeer, match=reason):
            check_peer_node_info(ours, theirs, authenticated)
    # a different p2p or app protocol and partly different channels are fine
    check_peer_node_info(
        ours, replace(INFO, protocol_p2p=9, protocol_app=3, channels=b"\x22\x99"), INFO.node_id
    )


def test_advertised_address() -> None:
    assert advertised_address(replace(INFO, listen_addr="tcp://0.0.0.0:26656"), "10.1.2.3") == NetAddress(
        INFO.node_id, "10.1.2.3", 26656
    )
    assert advertised_address(replace(INFO, listen_addr="node.example:5"), "10.1.2.3") == NetAddress(
        INFO.node_id, "node.example", 5
    )
    assert advertised_address(replace(INFO, listen_addr="nonsense"), "10.1.2.3") is None
    assert advertised_address(replace(INFO, listen_addr="1.2.3.4:0"), "10.1.2.3") is None
