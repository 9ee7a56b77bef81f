"""Tests of node.config: the file round trip, one-line errors for bad values, Go durations,
listen and peer addresses, command-line overrides and unknown keys."""

from __future__ import annotations

import re
import socket
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.config import (
    INT64_MAX,
    INT64_MIN,
    BaseConfig,
    Config,
    ConfigError,
    ConsensusConfig,
    PeerAddress,
    RPCConfig,
    config_to_toml,
    format_duration,
    load_config,
    parse_duration,
    parse_laddr,
    parse_peer_list,
    write_config,
)

NODE_ID = "0123456789abcdef0123456789abcdef01234567"


def _write(home: Path, text: str) -> Path:
    path = home / "config" / "config.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# -- the file ------------------------------------------------------------------------------------


def test_default_round_trip(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "node0")
    path = write_config(config)
    assert path == tmp_path / "config" / "config.toml"
    loaded = load_config(tmp_path)
    assert loaded == config
    assert loaded.unknown_keys == ()


def test_defaults_match_cometbft_and_the_brief(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "node0")
    assert config.base.db_backend == "goleveldb"
    assert config.rpc.laddr == "tcp://127.0.0.1:26657"
    assert config.rpc.timeout_broadcast_tx_commit == 10_000_000_000
    assert config.p2p.laddr == "tcp://0.0.0.0:26656"
    assert config.p2p.flush_throttle_timeout == 0  # CometBFT's 100ms would hold every vote back
    assert config.mempool.max_txs_bytes == 1_073_741_824
    assert (config.mempool.min_fee, config.mempool.max_txs_per_sender) == (0, 200)
    assert config.consensus.timeout_propose == 3_000_000_000
    assert config.consensus.timeout_commit == 200_000_000
    assert config.consensus.compact_blocks is True
    assert config.storage.retain_blocks == 0
    assert config.storage.state_versions == 1000
    assert (config.storage.snapshot_interval, config.storage.snapshot_keep_recent) == (0, 2)
    assert (config.storage.compact, config.storage.compaction_interval) == (True, 1000)
    assert config.instrumentation.prometheus is True
    assert config.instrumentation.prometheus_listen_addr == "127.0.0.1:26660"  # not every interface


def test_written_file_is_commented_cometbft_toml(tmp_path: Path) -> None:
    text = config_to_toml(Config.default(tmp_path, "node0"))
    lines = text.splitlines()
    assignments = [i for i, line in enumerate(lines) if re.match(r"^[A-Za-z0-9_-]+ = ", line)]
    assert len(assignments) == 9 + 13 + 19 + 9 + 7 + 1 + 14 + 6 + 1 + 4 + 7 + 6 + 1
    for i in assignments:
        assert lines[i - 1].startswith("# "), lines[i]
    parsed = tomllib.loads(text)
    assert parsed["consensus"]["timeout_propose"] == "3s"
    assert parsed["consensus"]["timeout_propose_delta"] == "500ms"
    assert parsed["mempool"]["keep-invalid-txs-in-cache"] is False
    assert parsed["rpc"]["cors_allowed_origins"] == []
    assert list(parsed)[-12:] == [
        "rpc",
        "p2p",
        "mempool",
        "statesync",
        "blocksync",
        "consensus",
        "storage",
        "tx_index",
        "instrumentation",
        "oracle",
        "bridge",
        "execution",
    ]


def test_changed_values_round_trip(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "validator-3").with_overrides(
        **{
            "rpc.laddr": "tcp://0.0.0.0:36657",
            "rpc.cors_allowed_origins": ("https://a.example", "*"),
            "p2p.persistent_peers": f"{NODE_ID}@10.0.0.2:26656,{NODE_ID}@host.example:26656",
            "mempool.keep-invalid-txs-in-cache": True,
            "consensus.timeout_commit": "1m30.25s",
            "consensus.create_empty_blocks_interval": 1_500,
            "storage.retain_blocks": 1000,
            "storage.state_versions": 0,
            "storage.snapshot_interval": 500,
            "storage.compact": False,
            "storage.compaction_interval": 50,
            "log_level": "debug",
        }
    )
    write_config(config)
    loaded = load_config(tmp_path)
    assert loaded == config
    assert loaded.consensus.timeout_commit == 90_250_000_000
    assert loaded.consensus.create_empty_blocks_interval == 1_500
    assert loaded.mempool.keep_invalid_txs_in_cache is True


def test_missing_keys_take_defaults(tmp_path: Path) -> None:
    _write(tmp_path, 'moniker = "m"\n[rpc]\nladdr = "tcp://127.0.0.1:5000"\n')
    config = load_config(tmp_path)
    assert config == replace(Config.default(tmp_path, "m"), rpc=RPCConfig(laddr="tcp://127.0.0.1:5000"))


def test_missing_moniker_is_the_host_name(tmp_path: Path) -> None:
    _write(tmp_path, "")
    assert load_config(tmp_path).base.moniker == (socket.gethostname() or "derivd")


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert (
        str(info.value) == f"{tmp_path / 'config' / 'config.toml'}: missing (run `derivd init` to create it)"
    )


def test_toml_syntax_error(tmp_path: Path) -> None:
    path = _write(tmp_path, 'moniker = "m"\n[rpc\nladdr = 1\n')
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: not valid TOML: ")
    assert "line 2" in message
    assert "\n" not in message


def test_not_utf8(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    path.write_bytes(b'moniker = "\xff"\n')
    with pytest.raises(ConfigError, match="not valid TOML: not UTF-8"):
        load_config(tmp_path)


BAD_VALUES: list[tuple[str, str]] = [
    (
        '[consensus]\ntimeout_propose = "3 seconds"',
        '[consensus] timeout_propose: not a duration: "3 seconds"',
    ),
    (
        "[consensus]\ntimeout_propose = 3",
        '[consensus] timeout_propose: not a duration: 3 (write it like "3s"',
    ),
    ('[consensus]\ntimeout_commit = "-1s"', '[consensus] timeout_commit: must not be negative, got "-1s"'),
    ("[consensus]\nskip_timeout_commit = 1", "[consensus] skip_timeout_commit: must be true or false, got 1"),
    ('[rpc]\nmax_open_connections = "900"', '[rpc] max_open_connections: must be an integer, got "900"'),
    ("[rpc]\nmax_open_connections = 9.5", "[rpc] max_open_connections: must be an integer, got 9.5"),
    ("[rpc]\nmax_open_connections = true", "[rpc] max_open_connections: must be an integer, got true"),
    ("[rpc]\nmax_body_bytes = -1", "[rpc] max_body_bytes: must not be negative, got -1"),
    ("[mempool]\nsize = -5000", "[mempool] size: must not be negative, got -5000"),
    (
        "[mempool]\nkeep-invalid-txs-in-cache = 0",
        "[mempool] keep-invalid-txs-in-cache: must be true or false",
    ),
    (
        '[rpc]\nladdr = "tcp://127.0.0.1:70000"',
        '[rpc] laddr: port out of range (0-65535): "tcp://127.0.0.1:70000"',
    ),
    (
        '[rpc]\nladdr = "unix:///tmp/rpc.sock"',
        '[rpc] laddr: only tcp:// addresses are supported: "unix:///tmp',
    ),
    (
        '[rpc]\nladdr = "tcp://127.0.0.1"',
        '[rpc] laddr: missing port (want tcp://host:port): "tcp://127.0.0.1"',
    ),
    ('[rpc]\ncors_allowed_origins = "*"', '[rpc] cors_allowed_origins: must be an array of strings, got "*"'),
    ("[rpc]\ncors_allowed_origins = [1]", "[rpc] cors_allowed_origins: must be an array of strings, got [1]"),
    ("[p2p]\nladdr = 26656", "[p2p] laddr: must be a string, got 26656"),
    ('[p2p]\npex = "yes"', '[p2p] pex: must be true or false, got "yes"'),
    ("[p2p]\nsend_rate = 0", "[p2p] send_rate: must be positive, got 0"),
    ('[p2p]\nhandshake_timeout = "0s"', '[p2p] handshake_timeout: must be positive, got "0s"'),
    (
        '[p2p]\npersistent_peers = "abc@1.2.3.4:26656"',
        '[p2p] persistent_peers: not a node id (40 hex digits): "abc"',
    ),
    (
        '[p2p]\nseeds = "1.2.3.4:26656"',
        '[p2p] seeds: not a peer address (want id@host:port): "1.2.3.4:26656"',
    ),
    (f'[p2p]\nseeds = "{NODE_ID}@1.2.3.4:0"', "[p2p] seeds: a peer needs a host and a non-zero port"),
    ('[p2p]\nprivate_peer_ids = "zz"', '[p2p] private_peer_ids: not a node id (40 hex digits): "zz"'),
    (
        '[p2p]\nexternal_address = "my host:1"',
        '[p2p] external_address: not a host name or IPv4 address: "my host:1"',
    ),
    ('log_level = "verbose"', 'log_level: must be "debug" or "info" or "warn" or "error", got "verbose"'),
    ('log_format = "xml"', 'log_format: must be "plain" or "json", got "xml"'),
    ('db_backend = "badgerdb"', 'db_backend: must be "goleveldb" or "leveldb" (derivd always uses LevelDB)'),
    ('moniker = ""', "moniker: must not be empty"),
    ('db_dir = ""', "db_dir: must not be empty"),
    ('[blocksync]\nversion = "v2"', '[blocksync] version: must be "v0", got "v2"'),
    ('[tx_index]\nindexer = "psql"', '[tx_index] indexer: must be "kv" or "null", got "psql"'),
    ('[instrumentation]\nnamespace = "my-chain"', "[instrumentation] namespace: must be a Prometheus name"),
    (
        '[instrumentation]\nprometheus_listen_addr = "26660"',
        "[instrumentation] prometheus_listen_addr: missing port",
    ),
    ("[storage]\nretain_blocks = -1", "[storage] retain_blocks: must not be negative, got -1"),
    (f"[storage]\nretain_blocks = {INT64_MAX}0", "[storage] retain_blocks: out of range"),
    ("[storage]\nstate_versions = -2", "[storage] state_versions: must not be negative, got -2"),
    ("[storage]\nsnapshot_keep_recent = 0", "[storage] snapshot_keep_recent: must be positive, got 0"),
    ("[storage]\ncompaction_interval = 0", "[storage] compaction_interval: must be positive, got 0"),
    ("rpc = 5", "rpc: must be a table, got 5"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_VALUES, ids=[e.split(":")[0] for _, e in BAD_VALUES])
def test_bad_value_gives_one_line_error(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, f'moniker = "m"\n{text}\n' if not text.startswith("moniker") else text + "\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}"), message
    assert "\n" not in message


def test_unknown_keys_are_collected_not_errors(tmp_path: Path) -> None:
    _write(
        tmp_path,
        """
moniker = "m"
filter_peers = false
[rpc]
laddr = "tcp://127.0.0.1:26657"
unsafe = false
[rpc.tls]
cert = "x"
[p2p]
foo = 1
[statesync]
enable = false
[mempool]
type = "flood"
""",
    )
    config = load_config(tmp_path)
    assert config.unknown_keys == (
        "filter_peers",
        "mempool.type",
        "p2p.foo",
        "rpc.tls",
        "rpc.unsafe",
    )
    assert config.statesync.enable is False


def test_a_cometbft_config_file_loads(tmp_path: Path) -> None:
    """Keys and values as CometBFT v0.38's `init` writes them (an excerpt)."""
    _write(
        tmp_path,
        f"""
proxy_app = "tcp://127.0.0.1:26658"
moniker = "my-node"
db_backend = "goleveldb"
db_dir = "data"
log_level = "info"
log_format = "plain"
genesis_file = "config/genesis.json"
priv_validator_key_file = "config/priv_validator_key.json"
priv_validator_state_file = "data/priv_validator_state.json"
priv_validator_laddr = ""
node_key_file = "config/node_key.json"
abci = "socket"
filter_peers = false

[rpc]
laddr = "tcp://127.0.0.1:26657"
cors_allowed_origins = []
cors_allowed_methods = ["HEAD", "GET", "POST", ]
grpc_laddr = ""
max_open_connections = 900
unsafe = false
max_subscription_clients = 100
max_subscriptions_per_client = 5
experimental_subscription_buffer_size = 200
timeout_broadcast_tx_commit = "10s"
max_request_batch_size = 10
max_body_bytes = 1000000
max_header_bytes = 1048576
pprof_laddr = ""

[p2p]
laddr = "tcp://0.0.0.0:26656"
external_address = ""
seeds = ""
persistent_peers = "{NODE_ID}@192.168.0.2:26656, {NODE_ID.upper()}@[::1]:26656"
addr_book_file = "config/addrbook.json"
addr_book_strict = true
max_num_inbound_peers = 40
max_num_outbound_peers = 10
unconditional_peer_ids = ""
persistent_peers_max_dial_period = "0s"
flush_throttle_timeout = "100ms"
max_packet_msg_payload_size = 1024
send_rate = 5120000
recv_rate = 5120000
pex = true
seed_mode = false
private_peer_ids = ""
allow_duplicate_ip = false
handshake_timeout = "20s"
dial_timeout = "3s"

[mempool]
type = "flood"
recheck = true
broadcast = true
wal_dir = ""
size = 5000
max_txs_bytes = 1073741824
cache_size = 10000
keep-invalid-txs-in-cache = false
max_tx_bytes = 1048576
max_batch_bytes = 0

[statesync]
enable = false
rpc_servers = ""
trust_period = "168h0m0s"

[blocksync]
version = "v0"

[consensus]
wal_file = "data/cs.wal/wal"
timeout_propose = "3s"
timeout_propose_delta = "500ms"
timeout_prevote = "1s"
timeout_prevote_delta = "500ms"
timeout_precommit = "1s"
timeout_precommit_delta = "500ms"
timeout_commit = "200ms"
double_sign_check_height = 0
skip_timeout_commit = false
create_empty_blocks = true
create_empty_blocks_interval = "0s"
peer_gossip_sleep_duration = "100ms"
peer_query_maj23_sleep_duration = "2s"

[storage]
discard_abci_responses = false

[tx_index]
indexer = "kv"
psql-conn = ""

[instrumentation]
prometheus = false
prometheus_listen_addr = ":26660"
max_open_connections = 3
namespace = "cometbft"
""",
    )
    config = load_config(tmp_path)
    expected = Config.default(tmp_path, "my-node")
    assert config.base == expected.base
    assert config.consensus == expected.consensus
    assert config.mempool == expected.mempool
    assert config.instrumentation.prometheus is False
    assert [str(p) for p in parse_peer_list(config.p2p.persistent_peers)] == [
        f"{NODE_ID}@192.168.0.2:26656",
        f"{NODE_ID}@[::1]:26656",
    ]
    assert config.statesync == expected.statesync, "CometBFT's [statesync] keys are ours"
    assert "tx_index.psql-conn" in config.unknown_keys
    assert "mempool.type" in config.unknown_keys
    # CometBFT keys derivd cannot honour are not in its file: an operator's copy is warned about
    for key in (
        "abci",
        "proxy_app",
        "consensus.peer_query_maj23_sleep_duration",
        "storage.discard_abci_responses",
    ):
        assert key in config.unknown_keys


# -- overrides -----------------------------------------------------------------------------------


def test_overrides_replace_only_the_named_keys(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "node0")
    changed = config.with_overrides(
        **{
            "rpc.laddr": "tcp://0.0.0.0:1234",
            "p2p.laddr": "tcp://0.0.0.0:1235",
            "moniker": "other",
            "consensus.timeout_commit": "500ms",
            "mempool.size": "10",
            "p2p.pex": "false",
            "rpc.cors_allowed_origins": "https://a.example, https://b.example",
        }
    )
    assert changed.rpc == replace(
        config.rpc,
        laddr="tcp://0.0.0.0:1234",
        cors_allowed_origins=(
            "https://a.example",
            "https://b.example",
        ),
    )
    assert changed.p2p == replace(config.p2p, laddr="tcp://0.0.0.0:1235", pex=False)
    assert changed.base == replace(config.base, moniker="other")
    assert changed.consensus == replace(config.consensus, timeout_commit=500_000_000)
    assert changed.mempool == replace(config.mempool, size=10)
    assert changed.storage == config.storage
    assert config.rpc.laddr == "tcp://127.0.0.1:26657"  # the original is unchanged
    assert config.with_overrides() == config


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"rpc.nope": 1}, "override: [rpc] nope: unknown setting"),
        ({"nope.laddr": 1}, "override: [nope] laddr: unknown setting"),
        (
            {"mempool.keep_invalid_txs_in_cache": True},
            "override: [mempool] keep_invalid_txs_in_cache: unknown",
        ),
        (
            {"rpc.laddr": "127.0.0.1"},
            'override: [rpc] laddr: missing port (want tcp://host:port): "127.0.0.1"',
        ),
        ({"mempool.size": "many"}, 'override: [mempool] size: must be an integer, got "many"'),
        ({"mempool.size": -1}, "override: [mempool] size: must not be negative, got -1"),
        (
            {"consensus.timeout_commit": "soon"},
            'override: [consensus] timeout_commit: not a duration: "soon"',
        ),
        ({"log_level": "loud"}, 'override: log_level: must be "debug" or "info"'),
    ],
)
def test_bad_overrides(tmp_path: Path, overrides: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.default(tmp_path, "node0").with_overrides(**overrides)
    assert str(info.value).startswith(expected), str(info.value)


def test_records_validate_when_built_in_code(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^config: moniker: must not be empty$"):
        Config.default(tmp_path, "")
    with pytest.raises(ConfigError, match=r"^config: \[consensus\] timeout_propose: must not be negative"):
        ConsensusConfig(timeout_propose=-1)
    with pytest.raises(ConfigError, match=r"^config: \[rpc\] max_body_bytes: must be an integer, got \"1\"$"):
        RPCConfig(max_body_bytes="1")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^config: log_level: must be a string, got 1$"):
        BaseConfig(moniker="m", log_level=1)  # type: ignore[arg-type]


# -- helpers -------------------------------------------------------------------------------------


def test_paths_resolve_against_home(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "node0")
    assert config.path(config.base.genesis_file) == tmp_path / "config" / "genesis.json"
    assert config.path("/etc/derivd/genesis.json") == Path("/etc/derivd/genesis.json")
    assert config.path(Path("data")) == tmp_path / "data"
    assert config.config_file == tmp_path / "config" / "config.toml"


def test_timeouts_grow_with_the_round(tmp_path: Path) -> None:
    consensus = Config.default(tmp_path, "node0").consensus
    assert consensus.propose_timeout(0) == 3_000_000_000
    assert consensus.propose_timeout(2) == 4_000_000_000
    assert consensus.prevote_timeout(1) == 1_500_000_000
    assert consensus.precommit_timeout(3) == 2_500_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tcp://127.0.0.1:26657", ("127.0.0.1", 26657)),
        ("tcp://0.0.0.0:26656", ("0.0.0.0", 26656)),
        ("tcp://localhost:1", ("localhost", 1)),
        ("tcp://[::1]:26657", ("::1", 26657)),
        ("tcp://:26657", ("0.0.0.0", 26657)),
        (":26660", ("0.0.0.0", 26660)),
        ("0.0.0.0:26660", ("0.0.0.0", 26660)),
        ("node-1.example.com:0", ("node-1.example.com", 0)),
        ("tcp://127.0.0.1:65535", ("127.0.0.1", 65535)),
    ],
)
def test_parse_laddr(text: str, expected: tuple[str, int]) -> None:
    assert parse_laddr(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:-1",
        "tcp://127.0.0.1:http",
        "http://127.0.0.1:80",
        "unix:///tmp/x.sock",
        "tcp://a b:1",
        "tcp://[zz]:1",
        "tcp://[::1]",
        "tcp://-bad:1",
        " :1",
    ],
)
def test_parse_laddr_rejects(text: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(text)[1:-1]) if text else None):
        parse_laddr(text)


def test_parse_peer_list() -> None:
    assert parse_peer_list("") == ()
    assert parse_peer_list(f" {NODE_ID.upper()}@h:1 ,, {NODE_ID}@[::1]:2,") == (
        PeerAddress(NODE_ID, "h", 1),
        PeerAddress(NODE_ID, "::1", 2),
    )


# -- durations -----------------------------------------------------------------------------------

S = 1_000_000_000


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("0s", 0),
        ("3s", 3 * S),
        ("500ms", 500_000_000),
        ("1m30s", 90 * S),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("1.s", S),
        ("1h0m0s", 3600 * S),
        ("2h45m", (2 * 3600 + 45 * 60) * S),
        ("168h0m0s", 168 * 3600 * S),
        ("1.5us", 1_500),
        ("1.5\u00b5s", 1_500),
        ("1.5\u03bcs", 1_500),
        ("100ns", 100),
        ("1.0000000009s", S),  # finer than a nanosecond: truncated, as Go does
        ("-1.5s", -1_500_000_000),
        ("+3s", 3 * S),
        ("1s1s", 2 * S),
        ("2562047h47m16.854775807s", INT64_MAX),
    ],
)
def test_parse_duration(text: str, ns: int) -> None:
    assert parse_duration(text) == ns


@pytest.mark.parametrize(
    "text",
    [
        "",
        "3",
        "3 s",
        "3 seconds",
        "s",
        "3sec",
        "1.2.3s",
        "--1s",
        "1d",
        ".s",
        "3S",
        "2562047h47m16.854775808s",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_500, "1.5\u00b5s"),
        (1_500_000, "1.5ms"),
        (100_000_000, "100ms"),
        (S, "1s"),
        (1_500_000_000, "1.5s"),
        (90 * S, "1m30s"),
        (3600 * S, "1h0m0s"),
        (3600 * S + 1, "1h0m0.000000001s"),
        (-90 * S, "-1m30s"),
        (INT64_MAX, "2562047h47m16.854775807s"),
    ],
)
def test_format_duration_like_go(ns: int, text: str) -> None:
    assert format_duration(ns) == text


@given(st.integers(INT64_MIN + 1, INT64_MAX))
def test_duration_text_round_trips(ns: int) -> None:
    assert parse_duration(format_duration(ns)) == ns


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.sampled_from(["ns", "us", "ms", "s", "m", "h"])),
        min_size=1,
        max_size=4,
    )
)
def test_duration_parts_add_up(parts: list[tuple[int, str]]) -> None:
    unit = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": S, "m": 60 * S, "h": 3600 * S}
    text = "".join(f"{n}{u}" for n, u in parts)
    ns = parse_duration(text)
    assert ns == sum(n * unit[u] for n, u in parts)
    assert format_duration(ns) == format_duration(parse_duration(format_duration(ns)))


def test_execution_workers_are_a_count_or_auto(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "node0")
    assert config.execution.workers == "auto"
    assert config.execution.worker_count(4) == 3 and config.execution.worker_count(64) == 7
    assert config.execution.worker_count(3) == 0, "serial below 4 cores (measured slower on 2)"
    assert config.execution.worker_count(1) == 0 and config.execution.worker_count(None) == 0
    assert config.with_overrides(**{"execution.workers": "3"}).execution.worker_count(2) == 3
    assert config.with_overrides(**{"execution.workers": "0"}).execution.worker_count(16) == 0
    assert 'workers = "auto"' in config_to_toml(config)
    with pytest.raises(ConfigError, match=r'\[execution\] workers: must be a non-negative integer or "auto"'):
        config.with_overrides(**{"execution.workers": "many"})
