"""`derivd testnet`: the homes of an N-validator (plus M full node) network, in the manner of
`cometbft testnet`.

Owns the port scheme, the per-node configuration (listen addresses, `persistent_peers` naming every
other node as `id@host:port`), the one shared genesis (validators `node0..` of power 10, funded
accounts) and the account keys copied into every home's key store.

Port scheme. On one machine (the default) node i listens on 127.0.0.1 with its own ports:
p2p `base + 10*i`, RPC `base + 10*i + 1`, Prometheus `base + 10*i + 4`, the second `/websocket`
(`[rpc] websocket_laddr`, `node.ws_server`) `base + 10*i + 5`; the default base 26656 gives node0
CometBFT's 26656/26657/26660 and 26661. With `hosts` (from `--hostnames` or `--starting-ip`)
every node is on its own host (a container or a machine), listens on all interfaces and uses the
same four ports `base`, `base + 1`, `base + 4` and `base + 5`; peers are dialed at `id@host:base`.

The bridge (`evm_rpc`, off by default): each validator home also gets a bridge key
(`node.bridge_key`, `[bridge] key_file`) and `[bridge] evm_rpc`; the test token and the bridge
contract are deployed on that EVM chain (`node.bridge_cli.deploy_localnet_bridge`, by hardhat's dev
account 0 unless `evm_key` is given) trusting the validators' bridge keys with their genesis powers
as valset nonce 0; the genesis gets its `bridge` section (the EVM chain id, the contract, the token,
`bridge_confirmations`, minimum deposit and withdrawal of 1 USD, the validators' keys), and the
first dev accounts get test tokens. Without `evm_rpc` there is no bridge section.

A failure leaves nothing behind: what was written is removed and a TestnetError of one line says
what went wrong (the contracts of a deployment that failed half-way stay on the EVM chain,
unreferenced).
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consensus.privval import FilePrivValidator, PrivValError
from execution.bridge.evm import format_evm_address
from execution.genesis_state import AppStateError, add_account, default_exchange_app_state, parse_app_state
from execution.markets import Market
from genesis.genesis import GenesisError, new_genesis, save_genesis
from node.bridge_key import (
    DEV_MINT_ACCOUNTS,
    HARDHAT_DEV_KEYS,
    BridgeKeyError,
    EvmError,
    create_bridge_key,
    dev_address,
)
from node.config import Config, ConfigError, PeerAddress, parse_peer, write_config
from node.keystore import KeyStore, KeyStoreError
from p2p.nodekey import load_or_generate_node_key, node_id

if TYPE_CHECKING:  # web3 is imported only when a testnet is bridged (`node.bridge_cli`)
    from web3 import Web3

    from node.bridge_cli import LocalBridge
from primitives.keyfile import KeyFileError

DEFAULT_BASE_PORT = 26656
"""node0's p2p port; its RPC port is one above (26657), its Prometheus port four above (26660), its
second `/websocket` five above (26661)."""
PORT_STRIDE = 10
RPC_OFFSET = 1
METRICS_OFFSET = 4
WEBSOCKET_OFFSET = 5
MAX_PORT = 65535
LOOPBACK = "127.0.0.1"
ALL_INTERFACES = "0.0.0.0"
VALIDATOR_POWER = 10
QUOTE_DECIMALS = 6
ACCOUNT_FUNDS = 1_000_000 * 10**QUOTE_DECIMALS
"""What each generated account holds at genesis: 1,000,000 USD in quote units."""
ACCOUNT_PREFIX = "account"
NODE_PREFIX = "node"
BRIDGE_CONFIRMATIONS = 3
BRIDGE_DISPUTE_PERIOD_S = 60
BRIDGE_MINIMUM = 1 * 10**QUOTE_DECIMALS
"""The localnet bridge's minimum deposit and withdrawal: 1 USD."""


class TestnetError(ValueError):
    """A testnet that cannot be created; the message is one line naming the problem."""


@dataclass(frozen=True, slots=True)
class NodePlan:
    """Where one node of the testnet lives and listens."""

    index: int
    host: str
    """the address other nodes dial (and clients reach)"""
    listen_host: str
    """the address the node's servers bind"""
    p2p_port: int
    rpc_port: int
    metrics_port: int
    websocket_port: int
    validator: bool

    @property
    def name(self) -> str:
        """`node<index>`: the home directory's name, the moniker and the genesis validator name."""
        return f"{NODE_PREFIX}{self.index}"


def plan_nodes(
    validators: int,
    non_validators: int = 0,
    base_port: int = DEFAULT_BASE_PORT,
    hosts: Sequence[str] | None = None,
) -> list[NodePlan]:
    """The nodes' addresses and ports: validators first, then full nodes. Without `hosts` all
    nodes share 127.0.0.1 with ports `base + 10*i (+1, +4, +5)`; with `hosts` (one per node) each
    node has its own host and every node uses `base`, `base + 1`, `base + 4` and `base + 5`."""
    if validators < 1:
        raise TestnetError(f"--validators: must be at least 1, got {validators}")
    if non_validators < 0:
        raise TestnetError(f"--non-validators: must not be negative, got {non_validators}")
    count = validators + non_validators
    if hosts is not None and len(hosts) != count:
        raise TestnetError(f"--hostnames: {len(hosts)} hosts for {count} nodes; give exactly one per node")
    last_offset = (0 if hosts is not None else PORT_STRIDE * (count - 1)) + WEBSOCKET_OFFSET
    if base_port < 1 or base_port + last_offset > MAX_PORT:
        raise TestnetError(
            f"--base-port: must be between 1 and {MAX_PORT - last_offset} for {count} nodes, got {base_port}"
        )
    plans = []
    for i in range(count):
        offset = 0 if hosts is not None else PORT_STRIDE * i
        plans.append(
            NodePlan(
                index=i,
                host=LOOPBACK if hosts is None else hosts[i],
                listen_host=LOOPBACK if hosts is None else ALL_INTERFACES,
                p2p_port=base_port + offset,
                rpc_port=base_port + offset + RPC_OFFSET,
                metrics_port=base_port + offset + METRICS_OFFSET,
                websocket_port=base_port + offset + WEBSOCKET_OFFSET,
                validator=i < validators,
            )
        )
    return plans


def parse_hostnames(text: str) -> list[str]:
    """`node0,node1,...` as a list of host names or IP addresses, each usable in `id@host:port`,
    none repeated."""
    hosts = [item.strip() for item in text.split(",")]
    seen: set[str] = set()
    for host in hosts:
        try:
            parse_peer(f"{'0' * 40}@{host}:1")
        except ValueError:
            raise TestnetError(f"--hostnames: not a host name or IP address: {host!r}") from None
        if host in seen:
            raise TestnetError(f"--hostnames: {host!r} is given twice (every node needs its own host)")
        seen.add(host)
    return hosts


def starting_ip_hosts(starting_ip: str, count: int) -> list[str]:
    """`count` consecutive IPv4 addresses from `starting_ip` (CometBFT's `--starting-ip`)."""
    try:
        first = ipaddress.IPv4Address(starting_ip)
    except ValueError:
        raise TestnetError(f"--starting-ip: not an IPv4 address: {starting_ip!r}") from None
    if int(first) + count - 1 > int(ipaddress.IPv4Address("255.255.255.255")):
        raise TestnetError(f"--starting-ip: {count} addresses from {first} run past 255.255.255.255")
    return [str(first + i) for i in range(count)]


@dataclass(frozen=True, slots=True)
class TestnetNode:
    """A node home that was written."""

    plan: NodePlan
    home: Path
    node_id: str
    validator_pub_key: bytes
    validator_address: str
    """upper-case hex, as in genesis.json"""
    bridge_address: bytes | None = None
    """the EVM address of the validator's bridge key (a bridged testnet's validators only)"""

    @property
    def peer_address(self) -> PeerAddress:
        """How the other nodes dial this one."""
        return PeerAddress(self.node_id, self.plan.host, self.plan.p2p_port)

    def to_json(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "name": plan.name,
            "home": str(self.home),
            "node_id": self.node_id,
            "validator": plan.validator,
            "validator_address": self.validator_address,
            "p2p": str(self.peer_address),
            "rpc": f"http://{plan.host}:{plan.rpc_port}",
            "metrics": f"http://{plan.host}:{plan.metrics_port}/metrics",
            "websocket": f"ws://{plan.host}:{plan.websocket_port}/websocket",
            **(
                {} if self.bridge_address is None else {"bridge_key": format_evm_address(self.bridge_address)}
            ),
        }


@dataclass(frozen=True, slots=True)
class TestnetAccount:
    """A funded key, present in every home's key store."""

    name: str
    address: str
    balance: int

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "address": self.address, "balance": str(self.balance)}


@dataclass(frozen=True, slots=True)
class Testnet:
    """What `create_testnet` wrote."""

    output: Path
    chain_id: str
    nodes: tuple[TestnetNode, ...]
    accounts: tuple[TestnetAccount, ...]
    bridge: LocalBridge | None = None
    evm_rpc: str | None = None

    def to_json(self) -> dict[str, Any]:
        bridge = {} if self.bridge is None else {"bridge": {"evm_rpc": self.evm_rpc, **self.bridge.to_json()}}
        return {
            "output": str(self.output),
            "chain_id": self.chain_id,
            "validators": sum(1 for n in self.nodes if n.plan.validator),
            "nodes": [n.to_json() for n in self.nodes],
            "accounts": [a.to_json() for a in self.accounts],
            **bridge,
        }


def default_chain_id() -> str:
    return f"derivd-testnet-{secrets.token_hex(3)}"


def create_testnet(
    output: Path,
    validators: int,
    non_validators: int = 0,
    base_port: int = DEFAULT_BASE_PORT,
    chain_id: str | None = None,
    hosts: Sequence[str] | None = None,
    accounts: int = 1,
    account_funds: int = ACCOUNT_FUNDS,
    genesis_time_ns: int | None = None,
    markets: Sequence[Market] = (),
    option_lifetimes: Sequence[int] = (),
    *,
    evm_rpc: str | None = None,
    evm_key: bytes | None = None,
    bridge_confirmations: int = BRIDGE_CONFIRMATIONS,
    bridge_dispute_period: int = BRIDGE_DISPUTE_PERIOD_S,
) -> Testnet:
    """Write `output/node0 .. node<N+M-1>`, each a complete home (config.toml, validator key and
    sign state, node key, the shared genesis.json, the account keys). `output` must not exist or
    be an empty directory. `markets` replace the default markets of the genesis, if given;
    `option_lifetimes` (ns after the genesis time) set the expiries of the default option series
    (`execution.genesis_state.default_option_series`). With `evm_rpc`, the bridge too (module
    docstring), deployed with `evm_key` (default: hardhat's dev account 0)."""
    plans = plan_nodes(validators, non_validators, base_port, hosts)
    if accounts < 0:
        raise TestnetError(f"--accounts: must not be negative, got {accounts}")
    if bridge_confirmations < 1:
        raise TestnetError(f"--bridge-confirmations: must be at least 1, got {bridge_confirmations}")
    if bridge_dispute_period < 0:
        raise TestnetError(f"--bridge-dispute-period: must not be negative, got {bridge_dispute_period}")
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise TestnetError(f"{output}: already exists and is not empty; refusing to overwrite it")
    bridge: _BridgePlan | None = None
    if evm_rpc is not None:
        from node.bridge_cli import connect_evm  # noqa: PLC0415 (web3: only for a bridged testnet)

        try:
            w3 = connect_evm(evm_rpc)
        except EvmError as exc:
            raise TestnetError(f"--evm-rpc: {exc}") from None
        key = HARDHAT_DEV_KEYS[0] if evm_key is None else evm_key
        bridge = _BridgePlan(
            evm_rpc=evm_rpc,
            w3=w3,
            key=key,
            confirmations=bridge_confirmations,
            dispute_period=bridge_dispute_period,
        )
    created_output = not output.exists()
    try:
        output.mkdir(parents=True, exist_ok=True)
        return _write(
            output,
            plans,
            chain_id or default_chain_id(),
            accounts,
            account_funds,
            genesis_time_ns,
            markets,
            option_lifetimes,
            bridge,
        )
    except EvmError as exc:
        _remove(output, plans, created_output)
        raise TestnetError(f"--evm-rpc: {exc}") from None
    except (
        GenesisError,
        AppStateError,
        KeyStoreError,
        PrivValError,
        KeyFileError,
        ConfigError,
        BridgeKeyError,
    ) as exc:
        _remove(output, plans, created_output)
        raise TestnetError(str(exc)) from None
    except OSError as exc:
        _remove(output, plans, created_output)
        where = f"{exc.filename}: " if exc.filename else ""
        raise TestnetError(f"{where}{exc.strerror or exc}") from None
    except BaseException:
        _remove(output, plans, created_output)
        raise


@dataclass(frozen=True, slots=True, kw_only=True)
class _BridgePlan:
    """What `create_testnet` deploys the bridge with."""

    evm_rpc: str
    w3: Web3
    key: bytes
    confirmations: int
    dispute_period: int


def _remove(output: Path, plans: Sequence[NodePlan], created_output: bool) -> None:
    if created_output:
        shutil.rmtree(output, ignore_errors=True)
        return
    for plan in plans:
        shutil.rmtree(output / plan.name, ignore_errors=True)


def _node_config(home: Path, plan: NodePlan) -> Config:
    overrides: dict[str, object] = {
        "p2p.laddr": f"tcp://{plan.listen_host}:{plan.p2p_port}",
        "rpc.laddr": f"tcp://{plan.listen_host}:{plan.rpc_port}",
        "instrumentation.prometheus_listen_addr": f"{plan.listen_host}:{plan.metrics_port}",
        "rpc.websocket_laddr": f"tcp://{plan.listen_host}:{plan.websocket_port}",
        "p2p.allow_duplicate_ip": True,
    }
    if plan.listen_host == ALL_INTERFACES:  # its own host: tell peers where to dial
        overrides["p2p.external_address"] = f"tcp://{plan.host}:{plan.p2p_port}"
    return Config.default(home, plan.name).with_overrides(**overrides)


def _write(
    output: Path,
    plans: Sequence[NodePlan],
    chain_id: str,
    account_count: int,
    account_funds: int,
    genesis_time_ns: int | None,
    markets: Sequence[Market],
    option_lifetimes: Sequence[int],
    bridge_plan: _BridgePlan | None,
) -> Testnet:
    configs: list[Config] = []
    nodes: list[TestnetNode] = []
    for plan in plans:
        home = output / plan.name
        config = _node_config(home, plan)
        privval = FilePrivValidator.generate(
            config.path(config.base.priv_validator_key_file),
            config.path(config.base.priv_validator_state_file),
        )
        node_key = load_or_generate_node_key(config.path(config.base.node_key_file))
        bridge_address = None
        if bridge_plan is not None and plan.validator:
            config = config.with_overrides(**{"bridge.evm_rpc": bridge_plan.evm_rpc})
            bridge_address = create_bridge_key(config.path(config.bridge.key_file)).evm_address
        configs.append(config)
        nodes.append(
            TestnetNode(
                plan=plan,
                home=home,
                node_id=node_id(node_key.public_key),
                validator_pub_key=privval.public_key.raw,
                validator_address=privval.public_key.address.upper(),
                bridge_address=bridge_address,
            )
        )
    genesis_time = time.time_ns() if genesis_time_ns is None else genesis_time_ns
    doc = new_genesis(
        chain_id,
        [(n.validator_pub_key, VALIDATOR_POWER, n.plan.name) for n in nodes if n.plan.validator],
        genesis_time,
        {
            "accounts": [],
            **default_exchange_app_state(options_from=genesis_time, option_lifetimes=option_lifetimes),
            **({"markets": [market.to_json() for market in markets]} if markets else {}),
        },
    )
    app_state = doc.app_state
    funded: list[TestnetAccount] = []
    seeds: list[tuple[str, bytes]] = []
    for k in range(account_count):
        name, seed = f"{ACCOUNT_PREFIX}{k}", os.urandom(32)
        info = KeyStore(nodes[0].home).add(name, seed)
        app_state = add_account(app_state, str(info.address), account_funds)
        funded.append(TestnetAccount(name, str(info.address), account_funds))
        seeds.append((name, seed))
    bridge = None
    if bridge_plan is not None:
        bridge = _deploy_bridge(bridge_plan, chain_id, nodes)
        app_state = {**app_state, "bridge": _bridge_section(bridge, bridge_plan, nodes)}
        parse_app_state(app_state)
    doc = replace(doc, app_state=app_state)
    for node, config in zip(nodes, configs, strict=True):
        peers = ",".join(str(other.peer_address) for other in nodes if other is not node)
        write_config(config.with_overrides(**{"p2p.persistent_peers": peers}))
        save_genesis(doc, config.path(config.base.genesis_file))
        if node is not nodes[0]:
            store = KeyStore(node.home)
            for name, seed in seeds:
                store.add(name, seed)
    return Testnet(
        output,
        chain_id,
        tuple(nodes),
        tuple(funded),
        bridge,
        None if bridge_plan is None else bridge_plan.evm_rpc,
    )


def _deploy_bridge(plan: _BridgePlan, chain_id: str, nodes: Sequence[TestnetNode]) -> LocalBridge:
    """The test token and the bridge, trusting the validators' bridge keys (valset nonce 0)."""
    from node.bridge_cli import deploy_localnet_bridge, genesis_members  # noqa: PLC0415 (web3)

    keys = {bytes.fromhex(n.validator_address): n.bridge_address for n in nodes if n.bridge_address}
    validators = [(bytes.fromhex(n.validator_address), VALIDATOR_POWER) for n in nodes if n.plan.validator]
    return deploy_localnet_bridge(
        plan.w3,
        plan.key,
        chain_id,
        genesis_members(validators, keys),
        dispute_period=plan.dispute_period,
        min_deposit=BRIDGE_MINIMUM,
        mint_to=[dev_address(i) for i in range(DEV_MINT_ACCOUNTS)],
    )


def _bridge_section(bridge: LocalBridge, plan: _BridgePlan, nodes: Sequence[TestnetNode]) -> dict[str, Any]:
    """The genesis `bridge` section of a deployed bridge."""
    return {
        "evm_chain_id": bridge.evm_chain_id,
        "contract": format_evm_address(bridge.contract),
        "token": format_evm_address(bridge.token),
        "confirmations": plan.confirmations,
        "min_deposit": BRIDGE_MINIMUM,
        "min_withdrawal": BRIDGE_MINIMUM,
        "keys": [
            {"validator": n.validator_address.lower(), "evm_address": format_evm_address(n.bridge_address)}
            for n in nodes
            if n.bridge_address is not None
        ],
    }


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_base_port(nodes: int) -> int:
    """A base port whose testnet ports (p2p, RPC and metrics of `nodes` nodes) are all free now
    on 127.0.0.1 (for tests and benchmarks that run beside other localnets).

    The range is chosen below the kernel's ephemeral range, which the kernel hands out for every
    outbound connection and every bind to port 0: a port there can be taken between this check
    and the node's bind (or while a crashed node is down) by any connection on the machine, the
    nodes' own dials included. Below it only a program that binds that very port can take it."""
    span = 10 * (nodes - 1) + WEBSOCKET_OFFSET + 1
    low, high = 10000, _ephemeral_low() - span
    if high <= low:
        raise TestnetError(f"no room below the ephemeral port range for {nodes} nodes")
    choices = range(low, high, 97)
    first = secrets.randbelow(len(choices))
    for index in range(len(choices)):
        base = choices[(first + index) % len(choices)]
        if all(
            _port_free(base + 10 * i + k)
            for i in range(nodes)
            for k in (0, RPC_OFFSET, METRICS_OFFSET, WEBSOCKET_OFFSET)
        ):
            return base
    raise TestnetError("no free range of ports on 127.0.0.1")


def _ephemeral_low(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> int:
    """The first port of the kernel's ephemeral range (Linux's default 32768 where unreadable)."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768
