"""The node's configuration: `<home>/config/config.toml` in CometBFT's layout and key names.

Owns the section records (frozen dataclasses, one per TOML table, the base keys at the top level),
their defaults and validation, reading (tomllib) and writing a commented file (tomlkit), command
line overrides, Go-syntax durations ("1m30s", kept as integer nanoseconds) and listen and peer
address parsing. A bad value is a ConfigError of one line, "<file>: [section] key: problem".
Keys this node does not know are not errors (operators copy CometBFT files): they are collected in
`Config.unknown_keys` for the node to warn about. Every key written has an effect on the node
(`tests/node/test_config_keys.py` names the tests that observe each); CometBFT keys this node
cannot honour are left out of the file, so that an operator's copy of them is warned about:
`abci` and `proxy_app` (the application is built in), `[consensus]`
`peer_query_maj23_sleep_duration` (the gossip reactor sends no +2/3 queries; it re-sends the votes
of the rounds that matter every gossip interval) and `[storage]` `discard_abci_responses` (block
results are where `tx`, `tx_search` and the event index read a transaction's result; pruning
with `retain_blocks` frees them with their blocks).
"""

from __future__ import annotations

import enum
import ipaddress
import json
import re
import socket
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import tomlkit
import tomlkit.items

from p2p.address import NetAddress
from p2p.address import parse_node_id as _parse_node_id
from primitives.files import atomic_write

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
CONFIG_FILE = Path("config") / "config.toml"
OVERRIDE_SOURCE = "override"
"""The source named in errors from `Config.with_overrides`."""
_DEFAULT_SOURCE = "config"


class ConfigError(ValueError):
    """A configuration that cannot be used: "<source>: [section] key: problem" on one line
    (base keys, which sit at the top level of the file, appear without a section)."""

    def __init__(self, source: str, problem: str, section: str | None = None, key: str | None = None) -> None:
        self.source = source
        self.problem = problem
        self.section = section
        self.key = key
        if key is None:
            text = f"{source}: {problem}"
        elif not section:
            text = f"{source}: {key}: {problem}"
        else:
            text = f"{source}: [{section}] {key}: {problem}"
        super().__init__(text)

    def with_source(self, source: str) -> ConfigError:
        """The same problem reported against `source`."""
        return ConfigError(source, self.problem, self.section, self.key)


def _show(value: object) -> str:
    """A value as TOML-like text for an error message (strings in double quotes)."""
    if isinstance(value, tuple):
        value = list(value)
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- durations in Go syntax ----------------------------------------------------------------------

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign, as Go writes it
    "\u03bcs": 1_000,  # Greek mu
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
_UNIT = r"(?:ns|us|\u00b5s|\u03bcs|ms|s|m|h)"
_DURATION = re.compile(rf"[-+]?(?:0|(?:{_NUMBER}{_UNIT})+)")
_DURATION_PART = re.compile(rf"({_NUMBER})({_UNIT})")


def parse_duration(text: str) -> int:
    """Nanoseconds of a Go duration ("3s", "500ms", "1m30s", "1.5s", "0"); ValueError if not one."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValueError(f"not a duration: {_show(text)}")
    total = 0
    for number, unit in _DURATION_PART.findall(text):
        whole, _, fraction = number.partition(".")
        scale = _NS_PER_UNIT[unit]
        total += int(whole or "0") * scale
        if fraction:
            total += int(fraction) * scale // 10 ** len(fraction)
    if text.startswith("-"):
        total = -total
    if not INT64_MIN <= total <= INT64_MAX:
        raise ValueError(f"duration out of range: {_show(text)}")
    return total


def _with_fraction(value: int, digits: int) -> str:
    whole, fraction = divmod(value, 10**digits)
    if not fraction:
        return str(whole)
    return f"{whole}." + f"{fraction:0{digits}d}".rstrip("0")


def format_duration(ns: int) -> str:
    """Go's text for a duration of `ns` nanoseconds: "0s", "500ms", "1.5s", "1m30s", "1h0m0s"."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    magnitude = abs(ns)
    if magnitude < 1_000:
        return f"{sign}{magnitude}ns"
    if magnitude < 1_000_000:
        return f"{sign}{_with_fraction(magnitude, 3)}\u00b5s"
    if magnitude < 1_000_000_000:
        return f"{sign}{_with_fraction(magnitude, 6)}ms"
    seconds, fraction = divmod(magnitude, 1_000_000_000)
    text = _with_fraction(seconds % 60 * 1_000_000_000 + fraction, 9) + "s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text


# -- listen and peer addresses -------------------------------------------------------------------

_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
_PORT = re.compile(r"[0-9]{1,5}")
ALL_INTERFACES = "0.0.0.0"


def _split_host_port(body: str, original: str) -> tuple[str, int]:
    if body.startswith("["):
        inner, bracket, rest = body[1:].partition("]")
        if not bracket or not rest.startswith(":"):
            raise ValueError(f"not a listen address (want tcp://host:port): {_show(original)}")
        try:
            host = str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise ValueError(f"not an IPv6 address: {_show(original)}") from None
        port_text = rest[1:]
    else:
        host, colon, port_text = body.rpartition(":")
        if not colon:
            raise ValueError(f"missing port (want tcp://host:port): {_show(original)}")
        if host and not _HOST.fullmatch(host):
            raise ValueError(f"not a host name or IPv4 address: {_show(original)}")
    if not _PORT.fullmatch(port_text):
        raise ValueError(f"not a port number: {_show(original)}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port out of range (0-65535): {_show(original)}")
    return host, port


def parse_laddr(text: str) -> tuple[str, int]:
    """(host, port) of a listen address: "tcp://127.0.0.1:26657", "tcp://[::1]:26657",
    "0.0.0.0:26660" or ":26660". An empty host means all interfaces and is returned as
    "0.0.0.0"; port 0 asks the system for a free port. ValueError names what is wrong."""
    if not isinstance(text, str):
        raise ValueError(f"not a listen address: {_show(text)}")
    body = text
    if "://" in text:
        scheme, _, body = text.partition("://")
        if scheme != "tcp":
            raise ValueError(f"only tcp:// addresses are supported: {_show(text)}")
    host, port = _split_host_port(body, text)
    return host or ALL_INTERFACES, port


PeerAddress = NetAddress
"""A peer as `id@host:port` (the id is the lower-case hex node id); p2p's NetAddress."""


def parse_node_id(text: str) -> str:
    """A node id (40 hex digits), lower-cased; ValueError if it is not one."""
    return _parse_node_id(text)


def parse_peer(text: str) -> PeerAddress:
    """Parse `id@host:port`; ValueError names what is wrong."""
    return NetAddress.parse(text)


def _split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_peer_list(text: str) -> tuple[PeerAddress, ...]:
    """Comma-separated `id@host:port` entries (seeds, persistent_peers); empty entries are skipped."""
    return tuple(parse_peer(item) for item in _split_list(text))


def parse_id_list(text: str) -> tuple[str, ...]:
    """Comma-separated node ids (unconditional_peer_ids, private_peer_ids)."""
    return tuple(parse_node_id(item) for item in _split_list(text))


# -- key specifications --------------------------------------------------------------------------


class _Kind(enum.Enum):
    INT = "an integer"
    BOOL = "true or false"
    STR = "a string"
    DURATION = "a duration"
    STR_LIST = "an array of strings"
    COUNT_OR_AUTO = 'a non-negative integer or "auto"'


_INT, _BOOL, _STR, _DURATION_KEY, _STR_LIST = _Kind.INT, _Kind.BOOL, _Kind.STR, _Kind.DURATION, _Kind.STR_LIST

_Check = Callable[[Any, str], str | None]
"""A value check: (value, the value as shown in messages) -> the problem, or None if it is fine."""


@dataclass(frozen=True, slots=True)
class _Key:
    """One key of a section: its kind, the comment written above it, its check, and its TOML name
    where that is not the attribute's name."""

    kind: _Kind
    doc: str
    check: _Check | None = None
    toml: str | None = None


@dataclass(frozen=True, slots=True)
class _Section:
    name: str
    """the TOML table; "" for the top-level keys"""
    title: str
    keys: dict[str, _Key]
    """by attribute name, in file order"""

    def toml_name(self, attr: str) -> str:
        return self.keys[attr].toml or attr

    def attr_by_toml(self) -> dict[str, str]:
        return {self.toml_name(attr): attr for attr in self.keys}


def _non_negative(value: int, shown: str) -> str | None:
    return f"must not be negative, got {shown}" if value < 0 else None


def _positive(value: int, shown: str) -> str | None:
    return f"must be positive, got {shown}" if value <= 0 else None


def _non_empty(value: str, shown: str) -> str | None:
    return "must not be empty" if not value else None


def _one_of(*choices: str, note: str = "") -> _Check:
    def check(value: str, shown: str) -> str | None:
        if value in choices:
            return None
        return f"must be {' or '.join(_show(c) for c in choices)}{note}, got {shown}"

    return check


def _parsed_by(parse: Callable[[str], object], allow_empty: bool = False) -> _Check:
    def check(value: str, shown: str) -> str | None:
        if allow_empty and value == "":
            return None
        try:
            parse(value)
        except ValueError as exc:
            return str(exc)
        return None

    return check


def _moniker(value: str, shown: str) -> str | None:
    if not value:
        return "must not be empty"
    if not value.isprintable():
        return f"must be printable text, got {shown}"
    return None


def _namespace(value: str, shown: str) -> str | None:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        return None
    return f"must be a Prometheus name (letters, digits, '_'), got {shown}"


_laddr = _parsed_by(parse_laddr)
_SPECS: dict[type, _Section] = {}


def _validate(record: object) -> None:
    """Check every key of a section record; ConfigError names the section and key."""
    section = _SPECS[type(record)]
    for attr, key in section.keys.items():
        value = getattr(record, attr)
        problem = _type_problem(key.kind, value)
        if problem is None and key.check is not None:
            shown = _show(format_duration(value)) if key.kind is _Kind.DURATION else _show(value)
            problem = key.check(value, shown)
        if problem is not None:
            raise ConfigError(_DEFAULT_SOURCE, problem, section.name, section.toml_name(attr))


def _type_problem(kind: _Kind, value: object) -> str | None:
    """Whether a typed value (as held in a record) is of the key's kind."""
    if kind in (_Kind.INT, _Kind.DURATION):
        ok = isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX
    elif kind is _Kind.BOOL:
        ok = isinstance(value, bool)
    elif kind is _Kind.STR:
        ok = isinstance(value, str)
    elif kind is _Kind.COUNT_OR_AUTO:
        ok = value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 1024)
    else:
        ok = isinstance(value, tuple) and all(isinstance(item, str) for item in value)
    return None if ok else f"must be {kind.value}, got {_show(value)}"


def _register(cls: type, name: str, title: str, keys: dict[str, _Key]) -> _Section:
    attrs = [f.name for f in fields(cls)]
    if attrs != list(keys):
        raise TypeError(f"{cls.__name__}: the fields and the key specifications differ")
    _SPECS[cls] = _Section(name, title, keys)
    return _SPECS[cls]


# -- sections: durations are int nanoseconds -----------------------------------------------------

_MS = 1_000_000
_S = 1_000_000_000


@dataclass(frozen=True, slots=True)
class BaseConfig:
    """The top-level keys of config.toml."""

    moniker: str
    db_backend: str = "goleveldb"
    db_dir: str = "data"
    log_level: str = "info"
    log_format: str = "plain"
    genesis_file: str = "config/genesis.json"
    priv_validator_key_file: str = "config/priv_validator_key.json"
    priv_validator_state_file: str = "data/priv_validator_state.json"
    node_key_file: str = "config/node_key.json"

    def __post_init__(self) -> None:
        _validate(self)


_register(
    BaseConfig,
    "",
    "Main base config options",
    {
        "moniker": _Key(_STR, "A custom human-readable name for this node", _moniker),
        "db_backend": _Key(
            _STR,
            'Database backend: derivd always uses LevelDB ("goleveldb" and "leveldb" are accepted)',
            _one_of("goleveldb", "leveldb", note=" (derivd always uses LevelDB)"),
        ),
        "db_dir": _Key(_STR, "Database directory", _non_empty),
        "log_level": _Key(_STR, "Output level for logging", _one_of("debug", "info", "warn", "error")),
        "log_format": _Key(_STR, 'Output format: "plain" (colored text) or "json"', _one_of("plain", "json")),
        "genesis_file": _Key(_STR, "Path to the JSON file containing the initial validator set", _non_empty),
        "priv_validator_key_file": _Key(
            _STR, "Path to the JSON file containing the private key of the validator", _non_empty
        ),
        "priv_validator_state_file": _Key(
            _STR, "Path to the JSON file containing the last sign state of the validator", _non_empty
        ),
        "node_key_file": _Key(
            _STR,
            "Path to the JSON file containing the private key of the node (p2p authentication)",
            _non_empty,
        ),
    },
)


@dataclass(frozen=True, slots=True)
class RPCConfig:
    """[rpc]: the JSON-RPC server."""

    laddr: str = "tcp://127.0.0.1:26657"
    websocket_laddr: str = ""
    cors_allowed_origins: tuple[str, ...] = ()
    cors_allowed_methods: tuple[str, ...] = ("HEAD", "GET", "POST")
    cors_allowed_headers: tuple[str, ...] = (
        "Origin",
        "Accept",
        "Content-Type",
        "X-Requested-With",
        "X-Server-Time",
    )
    max_open_connections: int = 900
    max_subscription_clients: int = 100
    max_subscriptions_per_client: int = 5
    experimental_websocket_write_buffer_size: int = 5000
    timeout_broadcast_tx_commit: int = 10 * _S
    max_request_batch_size: int = 10
    max_body_bytes: int = 1_000_000
    max_header_bytes: int = 1_048_576

    def __post_init__(self) -> None:
        _validate(self)


_register(
    RPCConfig,
    "rpc",
    "RPC server configuration options",
    {
        "laddr": _Key(_STR, "TCP address for the RPC server to listen on", _laddr),
        "websocket_laddr": _Key(
            _STR,
            "TCP address of a second /websocket (the same protocol, written to sockets directly: for"
            " many stream subscribers), empty for none",
            _parsed_by(parse_laddr, allow_empty=True),
        ),
        "cors_allowed_origins": _Key(
            _STR_LIST, 'Origins a cross-domain request can be executed from; ["*"] allows any, [] none'
        ),
        "cors_allowed_methods": _Key(_STR_LIST, "Methods a cross-domain request can use"),
        "cors_allowed_headers": _Key(_STR_LIST, "Non-simple headers a cross-domain request can carry"),
        "max_open_connections": _Key(
            _INT, "Maximum number of simultaneous connections, 0 for no limit", _non_negative
        ),
        "max_subscription_clients": _Key(
            _INT, "Maximum number of clients that can /subscribe", _non_negative
        ),
        "max_subscriptions_per_client": _Key(
            _INT, "Maximum number of queries one client can /subscribe to", _non_negative
        ),
        "experimental_websocket_write_buffer_size": _Key(
            _INT,
            "Event messages queued for one /websocket client; a client that lets more pile up is"
            " disconnected (CometBFT: 200; a block here holds thousands of txs)",
            _positive,
        ),
        "timeout_broadcast_tx_commit": _Key(
            _DURATION_KEY, "How long /broadcast_tx_commit waits for the tx to be committed", _non_negative
        ),
        "max_request_batch_size": _Key(
            _INT, "Maximum number of requests in a JSON-RPC batch, 0 for no limit", _non_negative
        ),
        "max_body_bytes": _Key(_INT, "Maximum size of a request body, in bytes", _non_negative),
        "max_header_bytes": _Key(
            _INT, "Maximum size of a request's line and headers, in bytes (larger: refused)", _positive
        ),
    },
)


@dataclass(frozen=True, slots=True)
class P2PConfig:
    """[p2p]: peer-to-peer networking."""

    laddr: str = "tcp://0.0.0.0:26656"
    external_address: str = ""
    seeds: str = ""
    persistent_peers: str = ""
    addr_book_file: str = "config/addrbook.json"
    max_num_inbound_peers: int = 40
    max_num_outbound_peers: int = 10
    unconditional_peer_ids: str = ""
    persistent_peers_max_dial_period: int = 0
    flush_throttle_timeout: int = 0  # CometBFT's is 100ms, which would delay every vote that long
    max_packet_msg_payload_size: int = 1024
    send_rate: int = 5_120_000
    recv_rate: int = 5_120_000
    pex: bool = True
    seed_mode: bool = False
    private_peer_ids: str = ""
    allow_duplicate_ip: bool = False
    handshake_timeout: int = 20 * _S
    dial_timeout: int = 3 * _S

    def __post_init__(self) -> None:
        _validate(self)
        if self.seed_mode and not self.pex:
            raise ConfigError(_DEFAULT_SOURCE, "needs pex = true", "p2p", "seed_mode")


_register(
    P2PConfig,
    "p2p",
    "P2P configuration options",
    {
        "laddr": _Key(_STR, "Address to listen for incoming connections", _laddr),
        "external_address": _Key(
            _STR,
            "Address to advertise to peers for them to dial; empty: the listen address",
            _parsed_by(parse_laddr, allow_empty=True),
        ),
        "seeds": _Key(_STR, "Comma separated list of seed nodes (id@host:port)", _parsed_by(parse_peer_list)),
        "persistent_peers": _Key(
            _STR,
            "Comma separated list of nodes to keep persistent connections to (id@host:port)",
            _parsed_by(parse_peer_list),
        ),
        "addr_book_file": _Key(_STR, "Path to the address book", _non_empty),
        "max_num_inbound_peers": _Key(_INT, "Maximum number of inbound peers", _non_negative),
        "max_num_outbound_peers": _Key(
            _INT, "Maximum number of outbound peers to connect to, excluding persistent peers", _non_negative
        ),
        "unconditional_peer_ids": _Key(
            _STR,
            "Comma separated list of node ids let in even when the peer limits are reached",
            _parsed_by(parse_id_list),
        ),
        "persistent_peers_max_dial_period": _Key(
            _DURATION_KEY,
            "Longest pause between redials of a persistent peer; 0s: exponential backoff",
            _non_negative,
        ),
        "flush_throttle_timeout": _Key(
            _DURATION_KEY,
            "How long messages queued on a connection may wait for more to share one write "
            '(16 KiB pending, pings and pongs go at once); "0s" writes at once',
            _non_negative,
        ),
        "max_packet_msg_payload_size": _Key(
            _INT, "Maximum size of a message packet payload, in bytes", _positive
        ),
        "send_rate": _Key(_INT, "Rate at which packets can be sent, in bytes/second", _positive),
        "recv_rate": _Key(_INT, "Rate at which packets can be received, in bytes/second", _positive),
        "pex": _Key(_BOOL, "Set true to enable the peer-exchange reactor"),
        "seed_mode": _Key(
            _BOOL,
            "Seed mode (needs pex): crawl the address book, answer a peer's request for addresses "
            "once and disconnect it, keep no peers but the persistent ones",
        ),
        "private_peer_ids": _Key(
            _STR,
            "Comma separated list of peer ids to keep private (never gossiped)",
            _parsed_by(parse_id_list),
        ),
        "allow_duplicate_ip": _Key(
            _BOOL, "Allow several peers from the same IP address (false: a second one is refused)"
        ),
        "handshake_timeout": _Key(
            _DURATION_KEY, "Timeout of the authenticated connection handshake", _positive
        ),
        "dial_timeout": _Key(_DURATION_KEY, "Timeout of dialing a peer", _positive),
    },
)


@dataclass(frozen=True, slots=True)
class MempoolConfig:
    """[mempool]: the transaction pool."""

    size: int = 5000
    max_txs_bytes: int = 1_073_741_824
    cache_size: int = 10_000
    keep_invalid_txs_in_cache: bool = False
    max_tx_bytes: int = 1_048_576
    recheck: bool = True
    broadcast: bool = True
    min_fee: int = 0
    max_txs_per_sender: int = 200

    def __post_init__(self) -> None:
        _validate(self)


_register(
    MempoolConfig,
    "mempool",
    "Mempool configuration options",
    {
        "size": _Key(_INT, "Maximum number of transactions in the mempool", _non_negative),
        "max_txs_bytes": _Key(
            _INT, "Limit of the total size of the transactions in the mempool, in bytes", _non_negative
        ),
        "cache_size": _Key(
            _INT, "Size of the cache of seen transactions (filters duplicates)", _non_negative
        ),
        "keep_invalid_txs_in_cache": _Key(
            _BOOL,
            "Keep invalid transactions in the cache so that they are not checked again",
            toml="keep-invalid-txs-in-cache",
        ),
        "max_tx_bytes": _Key(_INT, "Maximum size of a single transaction, in bytes", _non_negative),
        "recheck": _Key(_BOOL, "Recheck the remaining transactions after every block"),
        "broadcast": _Key(
            _BOOL, "Gossip transactions to peers (false: send none; those peers send are still taken)"
        ),
        "min_fee": _Key(
            _INT,
            "The least fee, in quote units (micro-USD), of a transaction this node admits, on top of "
            "the chain's minimum for its actions (like the Cosmos SDK's minimum-gas-prices; a "
            "validator's free oracle vote is exempt; 0: the chain's minimum only)",
            _non_negative,
        ),
        "max_txs_per_sender": _Key(
            _INT,
            "The most transactions of one sender the mempool holds (0: no limit)",
            _non_negative,
        ),
    },
)


@dataclass(frozen=True, slots=True)
class BlockSyncConfig:
    """[blocksync]: catching up with the chain block by block."""

    version: str = "v0"

    def __post_init__(self) -> None:
        _validate(self)


_register(
    BlockSyncConfig,
    "blocksync",
    "Block sync configuration options",
    {"version": _Key(_STR, 'Block sync protocol version: only "v0"', _one_of("v0"))},
)


@dataclass(frozen=True, slots=True)
class StateSyncConfig:
    """[statesync]: a new node restores a recent snapshot instead of replaying every block."""

    enable: bool = False
    rpc_servers: str = ""
    trust_height: int = 0
    trust_hash: str = ""
    trust_period: int = 168 * 3600 * _S
    discovery_time: int = 15 * _S
    chunk_request_timeout: int = 10 * _S

    def __post_init__(self) -> None:
        _validate(self)


_register(
    StateSyncConfig,
    "statesync",
    "State sync configuration options",
    {
        "enable": _Key(
            _BOOL,
            "Restore a snapshot from peers when the node has no state yet (it needs rpc_servers, "
            "trust_height and trust_hash), then block-sync the rest",
        ),
        "rpc_servers": _Key(_STR, "Comma-separated RPC servers the light client verifies headers from"),
        "trust_height": _Key(_INT, "A height whose header hash you trust", _non_negative),
        "trust_hash": _Key(_STR, "The header hash at trust_height (hex)"),
        "trust_period": _Key(_DURATION_KEY, "How long a verified header stays trusted", _positive),
        "discovery_time": _Key(_DURATION_KEY, "How long to collect snapshot offers", _non_negative),
        "chunk_request_timeout": _Key(
            _DURATION_KEY, "How long to wait for a chunk before asking another peer", _positive
        ),
    },
)


@dataclass(frozen=True, slots=True)
class ConsensusConfig:
    """[consensus]: timeouts (base + delta * round) and block production."""

    wal_file: str = "data/cs.wal/wal"
    timeout_propose: int = 3 * _S
    timeout_propose_delta: int = 500 * _MS
    timeout_prevote: int = 1 * _S
    timeout_prevote_delta: int = 500 * _MS
    timeout_precommit: int = 1 * _S
    timeout_precommit_delta: int = 500 * _MS
    timeout_commit: int = 200 * _MS  # CometBFT's is 1s; sub-second blocks (README: Running a node)
    double_sign_check_height: int = 0
    skip_timeout_commit: bool = False
    create_empty_blocks: bool = True
    create_empty_blocks_interval: int = 0
    peer_gossip_sleep_duration: int = 100 * _MS
    compact_blocks: bool = True

    def __post_init__(self) -> None:
        _validate(self)

    def propose_timeout(self, round_: int) -> int:
        """timeout_propose + timeout_propose_delta * round, in nanoseconds."""
        return self.timeout_propose + self.timeout_propose_delta * round_

    def prevote_timeout(self, round_: int) -> int:
        """timeout_prevote + timeout_prevote_delta * round, in nanoseconds."""
        return self.timeout_prevote + self.timeout_prevote_delta * round_

    def precommit_timeout(self, round_: int) -> int:
        """timeout_precommit + timeout_precommit_delta * round, in nanoseconds."""
        return self.timeout_precommit + self.timeout_precommit_delta * round_


_register(
    ConsensusConfig,
    "consensus",
    "Consensus configuration options",
    {
        "wal_file": _Key(_STR, "Path to the consensus write-ahead log", _non_empty),
        "timeout_propose": _Key(
            _DURATION_KEY, "How long to wait for a proposal block before prevoting nil", _non_negative
        ),
        "timeout_propose_delta": _Key(
            _DURATION_KEY, "How much timeout_propose increases with each round", _non_negative
        ),
        "timeout_prevote": _Key(
            _DURATION_KEY, "How long to wait after receiving +2/3 prevotes for anything", _non_negative
        ),
        "timeout_prevote_delta": _Key(
            _DURATION_KEY, "How much timeout_prevote increases with each round", _non_negative
        ),
        "timeout_precommit": _Key(
            _DURATION_KEY, "How long to wait after receiving +2/3 precommits for anything", _non_negative
        ),
        "timeout_precommit_delta": _Key(
            _DURATION_KEY, "How much timeout_precommit increases with each round", _non_negative
        ),
        "timeout_commit": _Key(
            _DURATION_KEY,
            "How long to wait after committing a block before starting the next height",
            _non_negative,
        ),
        "double_sign_check_height": _Key(
            _INT,
            "How many of the last commits to search, at start, for this validator's signature; "
            "one found (another node may be signing with the key) stops the node. 0 skips. "
            "After a restart, wait that many blocks before starting again",
            _non_negative,
        ),
        "skip_timeout_commit": _Key(
            _BOOL, "Go on as soon as all precommits are in (as if timeout_commit = 0)"
        ),
        "create_empty_blocks": _Key(
            _BOOL,
            "Produce blocks when there are no transactions; false: wait for one, except for the "
            "first block and after a block that changed the app hash (as CometBFT)",
        ),
        "create_empty_blocks_interval": _Key(
            _DURATION_KEY,
            "Above 0s: while there are no transactions, make an empty block after this long "
            "(whatever create_empty_blocks says)",
            _non_negative,
        ),
        "peer_gossip_sleep_duration": _Key(
            _DURATION_KEY, "Pause of the gossip routines when there is nothing to send", _non_negative
        ),
        "compact_blocks": _Key(
            _BOOL,
            "Send proposal blocks as transaction hashes that peers fill from their mempools "
            "(fetching only what they lack) instead of as block parts",
        ),
    },
)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """[storage]: what the node keeps on disk."""

    retain_blocks: int = 0
    state_versions: int = 1000
    snapshot_interval: int = 0
    snapshot_keep_recent: int = 2
    compact: bool = True
    compaction_interval: int = 1000

    def __post_init__(self) -> None:
        _validate(self)


_register(
    StorageConfig,
    "storage",
    "Storage configuration options",
    {
        "retain_blocks": _Key(
            _INT, "Keep only the last N blocks and prune older ones; 0 keeps all", _non_negative
        ),
        "state_versions": _Key(
            _INT,
            "Keep the state of the last N heights for queries at past heights and proofs "
            "(abci_query /key); older versions of the state tree are pruned; 0 keeps all",
            _non_negative,
        ),
        "snapshot_interval": _Key(
            _INT,
            "Take a state snapshot (for nodes that join by state sync) at every height that is a "
            "multiple of N; 0 takes none",
            _non_negative,
        ),
        "snapshot_keep_recent": _Key(
            _INT, "How many recent snapshots to keep (their state versions are kept with them)", _positive
        ),
        "compact": _Key(
            _BOOL,
            "Compact the pruned blocks and state versions every compaction_interval heights, so that "
            "pruning frees disk space (LevelDB alone frees it late; CometBFT's default is false)",
        ),
        "compaction_interval": _Key(_INT, "Heights between two compactions (see compact)", _positive),
    },
)


@dataclass(frozen=True, slots=True)
class TxIndexConfig:
    """[tx_index]: the transaction index behind tx and tx_search."""

    indexer: str = "kv"

    def __post_init__(self) -> None:
        _validate(self)


_register(
    TxIndexConfig,
    "tx_index",
    "Transaction indexer configuration options",
    {"indexer": _Key(_STR, 'Indexer: "kv" (in the node\'s database) or "null" (off)', _one_of("kv", "null"))},
)


@dataclass(frozen=True, slots=True)
class InstrumentationConfig:
    """[instrumentation]: the Prometheus metrics endpoint."""

    prometheus: bool = True
    prometheus_listen_addr: str = "127.0.0.1:26660"  # CometBFT's is ":26660" (all interfaces)
    max_open_connections: int = 3
    namespace: str = "cometbft"

    def __post_init__(self) -> None:
        _validate(self)


_register(
    InstrumentationConfig,
    "instrumentation",
    "Instrumentation configuration options",
    {
        "prometheus": _Key(_BOOL, "Serve Prometheus metrics at /metrics (on by default in derivd)"),
        "prometheus_listen_addr": _Key(
            _STR,
            'Address to listen for Prometheus collectors on (loopback by default; ":26660" for all '
            "interfaces, as CometBFT's default)",
            _laddr,
        ),
        "max_open_connections": _Key(
            _INT,
            "Maximum number of requests served at once, 0 for no limit (one more gets 503)",
            _non_negative,
        ),
        "namespace": _Key(_STR, "Prefix of the metric names", _namespace),
    },
)

ORACLE_SOURCES = ("sim", "file", "http")


def _field_entries(value: tuple[str, ...], shown: str) -> str | None:
    seen: set[str] = set()
    for entry in value:
        ticker, eq, path = entry.partition("=")
        if not eq or not ticker.strip() or not path.strip():
            return f'each entry must be "TICKER=field.path", got {_show(entry)}'
        if ticker.strip() in seen:
            return f"market {_show(ticker.strip())} appears twice"
        seen.add(ticker.strip())
    return None


@dataclass(frozen=True, slots=True)
class OracleConfig:
    """[oracle]: the validator's price feeder, which submits an oracle vote after every block."""

    enabled: bool = True
    source: str = "sim"
    file: str = "config/prices.json"
    url: str = ""
    fields: tuple[str, ...] = ()
    reload_interval: int = 3 * _S
    timeout: int = 2 * _S

    def __post_init__(self) -> None:
        _validate(self)
        if self.source == "http" and not self.url:
            raise ConfigError(_DEFAULT_SOURCE, 'must be set when source = "http"', "oracle", "url")
        if self.source == "http" and not self.fields:
            raise ConfigError(_DEFAULT_SOURCE, 'must name a market when source = "http"', "oracle", "fields")


_register(
    OracleConfig,
    "oracle",
    "Oracle price feeder configuration options (validators only)",
    {
        "enabled": _Key(_BOOL, "Submit an oracle vote (signed with the validator key) after every block"),
        "source": _Key(
            _STR,
            'Where prices come from: "sim" (a seeded random walk, the same on every validator), '
            '"file" (a JSON file of ticker -> USD price) or "http" (a JSON endpoint)',
            _one_of(*ORACLE_SOURCES),
        ),
        "file": _Key(
            _STR, 'The price file of source = "file": {"BTC-USD": "64000.5", "ETH-USD": 3400}', _non_empty
        ),
        "url": _Key(_STR, 'The JSON endpoint of source = "http"'),
        "fields": _Key(
            _STR_LIST,
            'Per market, the field path of its USD price in the endpoint\'s JSON (source = "http"): '
            '["BTC-USD=bitcoin.usd", "ETH-USD=data.1.price"] (dots separate keys, integers index arrays)',
            _field_entries,
        ),
        "reload_interval": _Key(
            _DURATION_KEY, "The price file is re-read when it changes and at least this often", _positive
        ),
        "timeout": _Key(_DURATION_KEY, 'How long a request of source = "http" may take', _positive),
    },
)


def _evm_rpc_url(value: str, shown: str) -> str | None:
    if value == "" or re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        return None
    return f'must be "" (no EVM endpoint) or an http:// or https:// URL, got {shown}'


@dataclass(frozen=True, slots=True)
class BridgeConfig:
    """[bridge]: the validator's bridge watcher (`node.bridge_watcher`), which votes the EVM
    deposits it sees and signs withdrawals and validator-set updates with the bridge key."""

    enabled: bool = True
    evm_rpc: str = ""
    key_file: str = "config/bridge_key.json"
    poll_interval: int = 1 * _S
    start_block: int = 0
    max_block_range: int = 2000

    def __post_init__(self) -> None:
        _validate(self)


_register(
    BridgeConfig,
    "bridge",
    "EVM bridge watcher configuration options (validators only)",
    {
        "enabled": _Key(
            _BOOL,
            "Run the bridge watcher: vote EVM deposits and sign withdrawals and validator-set updates "
            "(only with evm_rpc set, on a chain with a bridge, on a validator)",
        ),
        "evm_rpc": _Key(
            _STR,
            'JSON-RPC endpoint of an EVM node of the bridge\'s chain ("http://127.0.0.1:8545"); "" for none '
            "(the watcher does not run)",
            _evm_rpc_url,
        ),
        "key_file": _Key(
            _STR,
            'The validator\'s bridge key (secp256k1): {"evm_address", "secret"}; keep it secret',
            _non_empty,
        ),
        "poll_interval": _Key(_DURATION_KEY, "How often the EVM node is asked for new blocks", _positive),
        "start_block": _Key(_INT, "The first EVM block scanned for deposits", _non_negative),
        "max_block_range": _Key(_INT, "The most blocks one eth_getLogs request covers", _positive),
    },
)


AUTO = "auto"


AUTO_MIN_CORES = 4
"""`workers = "auto"` runs serially below this many cores: on 2 cores a worker lane made blocks
slower (`derivd bench exec`: 0.73-0.96x) and so did the node under load, which also checks txs and
serves RPC on those cores (`derivd bench throughput`, 2026-12-04: 1 validator 5,630 against 6,174
orders/s serial; 4 validators 1,740 against 2,309). Not measured on 4 or more cores."""


@dataclass(frozen=True, slots=True)
class ExecutionConfig:
    """[execution]: how blocks are executed."""

    workers: int | str = AUTO

    def __post_init__(self) -> None:
        _validate(self)

    def worker_count(self, cores: int | None) -> int:
        """The number of worker processes: `workers`, or for "auto" one per core but the main
        process's (which runs a lane of its own, then merges), up to 7, on a machine of
        `AUTO_MIN_CORES` cores or more; else 0 (serial)."""
        if isinstance(self.workers, int):
            return self.workers
        return min(cores - 1, 7) if cores is not None and cores >= AUTO_MIN_CORES else 0


_register(
    ExecutionConfig,
    "execution",
    "Block execution options",
    {
        "workers": _Key(
            _Kind.COUNT_OR_AUTO,
            "Worker processes that run a block's transactions in parallel beside the main process "
            "(which runs one lane too), with the result of serial execution: a number (0: serial) or "
            '"auto" (one per core but one, up to 7, with 4 cores or more; serial below)',
        ),
    },
)

_TABLES: tuple[tuple[str, type], ...] = (
    ("rpc", RPCConfig),
    ("p2p", P2PConfig),
    ("mempool", MempoolConfig),
    ("statesync", StateSyncConfig),
    ("blocksync", BlockSyncConfig),
    ("consensus", ConsensusConfig),
    ("storage", StorageConfig),
    ("tx_index", TxIndexConfig),
    ("instrumentation", InstrumentationConfig),
    ("oracle", OracleConfig),
    ("bridge", BridgeConfig),
    ("execution", ExecutionConfig),
)
"""The TOML tables in file order, each with its record; the Config attribute is the table name."""


# -- the whole configuration ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """config.toml plus the home directory it belongs to."""

    home: Path
    base: BaseConfig
    rpc: RPCConfig = field(default_factory=RPCConfig)
    p2p: P2PConfig = field(default_factory=P2PConfig)
    mempool: MempoolConfig = field(default_factory=MempoolConfig)
    blocksync: BlockSyncConfig = field(default_factory=BlockSyncConfig)
    statesync: StateSyncConfig = field(default_factory=StateSyncConfig)
    consensus: ConsensusConfig = field(default_factory=ConsensusConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tx_index: TxIndexConfig = field(default_factory=TxIndexConfig)
    instrumentation: InstrumentationConfig = field(default_factory=InstrumentationConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    bridge: BridgeConfig = field(default_factory=BridgeConfig)
    execution: ExecutionConfig = field(default_factory=ExecutionConfig)
    unknown_keys: tuple[str, ...] = ()
    """keys of the file this node does not know, as "p2p.foo" (a whole unknown table by its name)"""

    @classmethod
    def default(cls, home: Path, moniker: str) -> Config:
        """The default configuration of a node at `home`."""
        return cls(home=home, base=BaseConfig(moniker=moniker))

    @property
    def config_file(self) -> Path:
        """`<home>/config/config.toml`."""
        return self.home / CONFIG_FILE

    def path(self, rel: str | Path) -> Path:
        """A file key resolved against the home directory (absolute paths stay as they are)."""
        path = Path(rel)
        return path if path.is_absolute() else self.home / path

    def with_overrides(self, **overrides: object) -> Config:
        """A copy with keys replaced, named as in the file: "rpc.laddr", "consensus.timeout_commit",
        or "moniker" for a top-level key. Values may be typed (int nanoseconds for durations) or
        text as given on a command line ("500ms", "10", "true", "a,b" for a list)."""
        changes: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            table, _, key = dotted.rpartition(".")
            cls = _record_class(table)
            section = _SPECS[cls] if cls is not None else None
            attr = section.attr_by_toml().get(key) if section is not None else None
            if section is None or attr is None:
                raise ConfigError(OVERRIDE_SOURCE, "unknown setting", table, key)
            try:
                typed = _convert(section.keys[attr].kind, value, from_text=True)
            except ValueError as exc:
                raise ConfigError(OVERRIDE_SOURCE, str(exc), table, key) from None
            changes.setdefault(table or "base", {})[attr] = typed
        updated: dict[str, Any] = {}
        for name, values in changes.items():
            try:
                updated[name] = replace(getattr(self, name), **values)
            except ConfigError as exc:
                raise exc.with_source(OVERRIDE_SOURCE) from None
        return replace(self, **updated)


def _record_class(table: str) -> type | None:
    if table == "":
        return BaseConfig
    return dict(_TABLES).get(table)


def _convert(kind: _Kind, raw: object, *, from_text: bool = False) -> Any:
    """A raw value (from TOML, or from a command line if `from_text`) as the typed value of a key;
    ValueError says what is wrong."""
    if kind is _Kind.DURATION:
        if isinstance(raw, str):
            return parse_duration(raw)
        if from_text and isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        raise ValueError(f'not a duration: {_show(raw)} (write it like "3s" or "500ms")')
    if kind is _Kind.INT:
        if from_text and isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,19}", raw):
            return int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool):
            if not INT64_MIN <= raw <= INT64_MAX:
                raise ValueError(f"out of range, got {raw}")
            return raw
    elif kind is _Kind.BOOL:
        if from_text and raw in ("true", "false"):
            return raw == "true"
        if isinstance(raw, bool):
            return raw
    elif kind is _Kind.STR:
        if isinstance(raw, str):
            return raw
    elif kind is _Kind.COUNT_OR_AUTO:
        if raw == AUTO:
            return raw
        if from_text and isinstance(raw, str) and re.fullmatch(r"[0-9]{1,4}", raw):
            raw = int(raw)
        if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw <= 1024:
            return raw
    else:
        if from_text and isinstance(raw, str):
            return tuple(_split_list(raw))
        if isinstance(raw, list | tuple) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
    raise ValueError(f"must be {kind.value}, got {_show(raw)}")


def _read_record(
    cls: type, table: Mapping[str, object], source: str, unknown: list[str], skip: frozenset[str]
) -> Any:
    section = _SPECS[cls]
    attr_by_toml = section.attr_by_toml()
    values: dict[str, Any] = {}
    for key, raw in table.items():
        if key in skip:
            continue
        attr = attr_by_toml.get(key)
        if attr is None:
            unknown.append(f"{section.name}.{key}" if section.name else key)
            continue
        try:
            values[attr] = _convert(section.keys[attr].kind, raw)
        except ValueError as exc:
            raise ConfigError(source, str(exc), section.name, key) from None
    try:
        return cls(**values)
    except ConfigError as exc:
        raise exc.with_source(source) from None


def default_moniker() -> str:
    """The host name, CometBFT's default moniker (no network involved)."""
    return socket.gethostname() or "derivd"


def config_from_toml(
    doc: Mapping[str, object], home: Path, source: str = _DEFAULT_SOURCE, moniker: str | None = None
) -> Config:
    """A Config from parsed TOML; missing keys take their defaults, a missing moniker is `moniker`
    (default: the host name). ConfigError names `source`, the section and the key."""
    unknown: list[str] = []
    base_table = dict(doc)
    if "moniker" not in base_table:
        base_table["moniker"] = moniker if moniker is not None else default_moniker()
    base = _read_record(BaseConfig, base_table, source, unknown, frozenset(name for name, _ in _TABLES))
    records: dict[str, Any] = {}
    for name, cls in _TABLES:
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(source, f"must be a table, got {_show(table)}", "", name)
        records[name] = _read_record(cls, table, source, unknown, frozenset())
    return Config(home=home, base=base, unknown_keys=tuple(sorted(unknown)), **records)


def load_config(home: Path) -> Config:
    """Read `<home>/config/config.toml`."""
    path = home / CONFIG_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "missing (run `derivd init` to create it)") from None
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read: {exc.strerror}") from None
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            str(path), f"not valid TOML: not UTF-8 ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML: {exc}") from None
    return config_from_toml(doc, home, str(path))


# -- writing -------------------------------------------------------------------------------------

_HEADER = (
    "This is a TOML config file (https://toml.io) for derivd, in CometBFT's layout and key names.",
    "Relative paths are resolved against the node's home directory.",
    'Durations are written as in Go: "500ms", "3s", "1m30s".',
)


def _toml_value(kind: _Kind, value: Any) -> Any:
    if kind is _Kind.DURATION:
        return format_duration(value)
    if kind is _Kind.STR_LIST:
        array = tomlkit.array()
        array.extend(value)
        return array
    return value


def _add_keys(container: tomlkit.TOMLDocument | tomlkit.items.Table, record: object) -> None:
    section = _SPECS[type(record)]
    for attr, key in section.keys.items():
        container.add(tomlkit.nl())
        container.add(tomlkit.comment(key.doc))
        container.add(section.toml_name(attr), _toml_value(key.kind, getattr(record, attr)))


def config_to_toml(config: Config) -> str:
    """The text of config.toml for `config`, with a comment above each key."""
    doc = tomlkit.document()
    for line in _HEADER:
        doc.add(tomlkit.comment(line))
    doc.add(tomlkit.nl())
    doc.add(tomlkit.comment(f"##### {_SPECS[BaseConfig].title} #####"))
    _add_keys(doc, config.base)
    for name, cls in _TABLES:
        table = tomlkit.table()
        table.add(tomlkit.comment(f"##### {_SPECS[cls].title} #####"))
        _add_keys(table, getattr(config, name))
        doc.add(tomlkit.nl())
        doc.add(name, table)
    return tomlkit.dumps(doc)


def write_config(config: Config) -> Path:
    """Write `<home>/config/config.toml` atomically; returns its path."""
    path = config.config_file
    atomic_write(path, config_to_toml(config).encode("utf-8"))
    return path
