"""Peer addresses: node ids and `id@host:port` network addresses, parsed and formatted.

A node id is the lower-case hex of the first 20 bytes of SHA-256 of the node's Ed25519 public
key (40 digits; parsing accepts either case and lower-cases). A host is a DNS name, an IPv4
address or an IPv6 address (bracketed in text: `id@[::1]:26656`). Errors are `ValueError`s that
quote the offending text.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass

NODE_ID_LENGTH = 40

_NODE_ID = re.compile(r"[0-9a-fA-F]{40}")
_LOWER_NODE_ID = re.compile(r"[0-9a-f]{40}")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")


def _show(text: object) -> str:
    shown = json.dumps(text, ensure_ascii=False, default=str)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def parse_node_id(text: str) -> str:
    """A node id (40 hex digits, either case), lower-cased; ValueError if it is not one."""
    if not isinstance(text, str) or not _NODE_ID.fullmatch(text):
        raise ValueError(f"not a node id (40 hex digits): {_show(text)}")
    return text.lower()


def split_host_port(text: str) -> tuple[str, int]:
    """(host, port) of `host:port` or `[ipv6]:port`; the host may be empty (`:26656`) and the
    port 0. ValueError names what is wrong."""
    if text.startswith("["):
        inner, bracket, rest = text[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"not a host:port address: {_show(text)}")
        try:
            host = str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ValueError(f"not an IPv6 address: {_show(text)}") from None
        port_text = rest[1:]
    else:
        host, colon, port_text = text.rpartition(":")
        if not colon:
            raise ValueError(f"missing port (want host:port): {_show(text)}")
        if host and not _HOST.fullmatch(host):
            raise ValueError(f"not a host name or IPv4 address: {_show(text)}")
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"not a port number: {_show(text)}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range (0-65535): {_show(text)}")
    return host, port


def format_host_port(host: str, port: int) -> str:
    """`host:port`, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_listen_address(text: str) -> tuple[str, int]:
    """(host, port) of an advertised listen address, `host:port` or `tcp://host:port`."""
    body = text
    if "://" in text:
        scheme, _, body = text.partition("://")
        if scheme != "tcp":
            raise ValueError(f"only tcp:// addresses are supported: {_show(text)}")
    return split_host_port(body)


def is_unspecified(host: str) -> bool:
    """Whether `host` means "all interfaces" (empty, 0.0.0.0 or ::), so not dialable."""
    if not host:
        return True
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True, slots=True, order=True)
class NetAddress:
    """A peer as `id@host:port`: whom we expect (the node id) and where to dial."""

    node_id: str
    host: str
    port: int

    def __post_init__(self) -> None:
        if not isinstance(self.node_id, str) or not _LOWER_NODE_ID.fullmatch(self.node_id):
            raise ValueError(f"not a node id (40 lower-case hex digits): {_show(self.node_id)}")
        if not self.host or not 0 < self.port <= 65535:
            raise ValueError(f"a peer needs a host and a non-zero port: {_show(str(self))}")

    @classmethod
    def parse(cls, text: str) -> NetAddress:
        """Parse `id@host:port` (the id in either case); ValueError names what is wrong."""
        if not isinstance(text, str):
            raise ValueError(f"not a peer address (want id@host:port): {_show(text)}")
        node_id, at, address = text.partition("@")
        if not at:
            raise ValueError(f"not a peer address (want id@host:port): {_show(text)}")
        try:
            host, port = split_host_port(address)
        except ValueError as exc:
            raise ValueError(f"{exc} (in peer address {_show(text)})") from None
        if not host or port == 0:
            raise ValueError(f"a peer needs a host and a non-zero port: {_show(text)}")
        return cls(parse_node_id(node_id), host, port)

    @property
    def host_port(self) -> str:
        return format_host_port(self.host, self.port)

    def __str__(self) -> str:
        return f"{self.node_id}@{format_host_port(self.host, self.port)}"
