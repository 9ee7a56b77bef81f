"""Peer addresses: `id@host:port` parsing and formatting, node ids, listen addresses, and the
config's peer parser delegating to them."""

from __future__ import annotations

import re

import pytest

from node.config import PeerAddress, parse_peer, parse_peer_list
from p2p.address import (
    NetAddress,
    format_host_port,
    is_loopback,
    is_unspecified,
    parse_listen_address,
    parse_node_id,
)

NODE_ID = "0123456789abcdef0123456789abcdef01234567"


def test_parse_and_format_round_trip() -> None:
    address = NetAddress.parse(f"{NODE_ID}@10.0.0.2:26656")
    assert address == NetAddress(NODE_ID, "10.0.0.2", 26656)
    assert str(address) == f"{NODE_ID}@10.0.0.2:26656"
    assert address.host_port == "10.0.0.2:26656"


def test_upper_case_id_is_lower_cased() -> None:
    assert NetAddress.parse(f"{NODE_ID.upper()}@host.example:1").node_id == NODE_ID


def test_ipv6_host_is_bracketed_in_text() -> None:
    address = NetAddress.parse(f"{NODE_ID}@[::1]:26656")
    assert address.host == "::1"
    assert str(address) == f"{NODE_ID}@[::1]:26656"
    assert NetAddress.parse(str(address)) == address


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("10.0.0.2:26656", "not a peer address (want id@host:port)"),
        ("abc@10.0.0.2:26656", "not a node id (40 hex digits)"),
        (f"{NODE_ID[:-1]}g@10.0.0.2:26656", "not a node id"),
        (f"{NODE_ID}@10.0.0.2", "missing port"),
        (f"{NODE_ID}@10.0.0.2:0", "a peer needs a host and a non-zero port"),
        (f"{NODE_ID}@:26656", "a peer needs a host and a non-zero port"),
        (f"{NODE_ID}@10.0.0.2:65536", "port out of range"),
        (f"{NODE_ID}@10.0.0.2:http", "not a port number"),
        (f"{NODE_ID}@bad host:1", "not a host name or IPv4 address"),
        (f"{NODE_ID}@[zz]:1", "not an IPv6 address"),
    ],
)
def test_parse_errors_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)) as info:
        NetAddress.parse(text)
    quoted = text.partition("@")[0] if "node id" in problem else text
    assert f'"{quoted}"' in str(info.value)


def test_constructor_insists_on_lower_case_id_and_a_port() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        NetAddress(NODE_ID.upper(), "h", 1)
    with pytest.raises(ValueError, match="non-zero port"):
        NetAddress(NODE_ID, "h", 0)


def test_node_ids() -> None:
    assert parse_node_id(NODE_ID.upper()) == NODE_ID
    with pytest.raises(ValueError, match='not a node id \\(40 hex digits\\): "zz"'):
        parse_node_id("zz")


def test_listen_addresses_and_hosts() -> None:
    assert parse_listen_address("tcp://0.0.0.0:26656") == ("0.0.0.0", 26656)
    assert parse_listen_address("127.0.0.1:5") == ("127.0.0.1", 5)
    assert parse_listen_address("[::]:5") == ("::", 5)
    with pytest.raises(ValueError, match="only tcp://"):
        parse_listen_address("unix:///x:1")
    assert format_host_port("::1", 3) == "[::1]:3"
    assert is_unspecified("0.0.0.0") and is_unspecified("::") and is_unspecified("")
    assert not is_unspecified("127.0.0.1") and not is_unspecified("host.example")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and not is_loopback("10.0.0.1")


def test_config_parser_delegates_to_p2p() -> None:
    assert PeerAddress is NetAddress
    assert parse_peer(f"{NODE_ID}@h:1") == NetAddress(NODE_ID, "h", 1)
    assert parse_peer_list(f"{NODE_ID}@h:1, {NODE_ID}@[::1]:2") == (
        NetAddress(NODE_ID, "h", 1),
        NetAddress(NODE_ID, "::1", 2),
    )
