"""The `derivd` command line, in the manner of `cometbft` and `simd`.

Node commands work on a home directory (`--home`, default `$DERIVD_HOME` or `~/.derivd`);
client commands talk JSON-RPC to `--node` (default http://127.0.0.1:26657) and print JSON.
Errors are one line on stderr naming what is wrong, with a non-zero exit.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import shutil
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import click
import trio
from click.core import ParameterSource

from consensus.execution import HandshakeError
from consensus.light import LightError, TrustOptions
from consensus.privval import FilePrivValidator, PrivValError
from consensus.wal import WALError
from execution.accounts import Account
from execution.bridge.evm import format_evm_address
from execution.genesis_state import AppStateError, add_account, default_exchange_app_state
from genesis.genesis import (
    GenesisDoc,
    GenesisError,
    genesis_json_bytes,
    load_genesis,
    new_genesis,
    save_genesis,
)
from node import inspect as inspect_server
from node import light, light_proxy, logs
from node.bench import bench
from node.bridge_key import (
    DEFAULT_EVM_RPC,
    DEV_MINT,
    DEV_MINT_ACCOUNTS,
    HARDHAT_DEV_KEYS,
    BridgeKeyError,
    create_bridge_key,
    read_evm_key,
)
from node.client import (
    RPCClient,
    abci_query,
    emit,
    fail,
    home_option,
    node_option,
    rpc_caller,
)
from node.config import Config, ConfigError, load_config, parse_duration, write_config
from node.database import ensure_not_in_use, explained
from node.export import ExportError, export_genesis
from node.keys_cli import keyring_backend_option, keys_group, open_cli_keyring
from node.keystore import KeyStoreError
from node.node import Node, NodeStartError, first_leaf, start_server
from node.query_cli import block_command, bridge_query_group, tx_command
from node.rollback import RollbackError, rollback
from node.sdk.errors import RPCError
from node.supervisor import SupervisorError, supervise
from node.testnet import (
    DEFAULT_BASE_PORT,
    TestnetError,
    create_testnet,
    parse_hostnames,
    starting_ip_hosts,
)
from node.trade_cli import (
    book_command,
    fees_command,
    funding_command,
    isolated_group,
    liquidations_command,
    markets_command,
    oracle_command,
    order_group,
    subaccounts_command,
    twaps_command,
)
from node.tx_cli import subaccount_group, tx_broadcast, tx_sign, tx_transfer, tx_withdraw
from node.version import VERSION
from p2p.nodekey import load_or_generate_node_key, node_id
from primitives.ics23 import ProofError
from primitives.keyfile import PRIV_KEY_TYPE, PUB_KEY_TYPE, KeyFileError, load_key_file
from primitives.keys import Address, PrivateKey
from storage import schema
from storage.db import StorageError

QUOTE_DECIMALS = 6
LOCALNET_ACCOUNTS = 2


class LazyGroup(click.Group):
    """A group some of whose subcommands are imported only when used: `derivd bridge` and `derivd
    tx bridge` (their module imports web3, ~0.5 s, which no other command should pay)."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}
        """subcommand name -> "module:attribute" of its click command"""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, attribute = self.lazy[cmd_name].split(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(
    cls=LazyGroup,
    lazy={"bridge": "node.bridge_cli:bridge_group"},
    context_settings={"help_option_names": ["-h", "--help"]},
)
def main() -> None:
    """derivd: a full node for a derivatives chain (Tendermint BFT, order books, perpetuals)."""


# -- node set-up ---------------------------------------------------------------------------------


def _load(home: Path) -> tuple[Config, GenesisDoc]:
    try:
        config = load_config(home)
        doc = load_genesis(config.path(config.base.genesis_file))
    except (ConfigError, GenesisError) as exc:
        fail(str(exc))
    return config, doc


def init_home(home: Path, moniker: str, chain_id: str | None) -> tuple[Config, GenesisDoc]:
    """Create a node home like `cometbft init`: config, keys and a one-validator genesis; keeps
    whatever already exists."""
    config_path = home / "config" / "config.toml"
    if config_path.exists():
        try:
            config = load_config(home)
        except ConfigError as exc:
            fail(str(exc))
        click.echo(f"Found config file {config_path}", err=True)
    else:
        config = Config.default(home, moniker)
        write_config(config)
        click.echo(f"Generated config file {config_path}", err=True)
    key_path = config.path(config.base.priv_validator_key_file)
    state_path = config.path(config.base.priv_validator_state_file)
    if key_path.exists():
        privval = FilePrivValidator.load(key_path, state_path)
        click.echo(f"Found private validator {key_path}", err=True)
    else:
        privval = FilePrivValidator.generate(key_path, state_path)
        click.echo(f"Generated private validator {key_path}", err=True)
    bridge_key_path = config.path(config.bridge.key_file)
    if bridge_key_path.exists():
        click.echo(f"Found bridge key {bridge_key_path}", err=True)
    else:
        bridge_key = create_bridge_key(bridge_key_path)
        click.echo(f"Generated bridge key {bridge_key_path} ({bridge_key.address_text})", err=True)
    node_key_path = config.path(config.base.node_key_file)
    existed = node_key_path.exists()
    load_or_generate_node_key(node_key_path)
    click.echo(f"{'Found' if existed else 'Generated'} node key {node_key_path}", err=True)
    genesis_file = config.path(config.base.genesis_file)
    if genesis_file.exists():
        doc = load_genesis(genesis_file)
        click.echo(f"Found genesis file {genesis_file}", err=True)
    else:
        chain = chain_id or f"derivd-{os.urandom(3).hex()}"
        genesis_time = time.time_ns()
        app_state = {"accounts": [], **default_exchange_app_state(options_from=genesis_time)}
        doc = new_genesis(chain, [(privval.public_key.raw, 10, moniker)], genesis_time, app_state)
        save_genesis(doc, genesis_file)
        click.echo(f"Generated genesis file {genesis_file}", err=True)
    return config, doc


@main.command()
@home_option
@click.option("--moniker", default=socket.gethostname, help="Node name.")
@click.option("--chain-id", default=None, help="Chain id of a new genesis (default: derivd-<random>).")
def init(home: Path, moniker: str, chain_id: str | None) -> None:
    """Initialise a node home: config.toml, keys (validator, node, bridge) and genesis.json."""
    try:
        init_home(home, moniker, chain_id)
    except (GenesisError, PrivValError, KeyFileError, BridgeKeyError, OSError) as exc:
        fail(str(exc))


@main.group(name="genesis")
def genesis_group() -> None:
    """Edit genesis.json before the chain starts."""


@genesis_group.command(name="add-account")
@home_option
@keyring_backend_option
@click.argument("address_or_key")
@click.argument("amount", type=int)
def genesis_add_account(home: Path, keyring_backend: str, address_or_key: str, amount: int) -> None:
    """Fund ADDRESS_OR_KEY (an address, or a key name in the keyring) with AMOUNT quote units
    (micro-USD) in genesis."""
    config, doc = _load(home)
    address = _resolve_address(home, keyring_backend, address_or_key)
    try:
        app_state = add_account(doc.app_state, address, amount)
    except AppStateError as exc:
        fail(f"{config.path(config.base.genesis_file)}: {exc}")
    save_genesis(replace(doc, app_state=app_state), config.path(config.base.genesis_file))
    emit({"address": address, "added": str(amount)})


def _resolve_address(home: Path, keyring_backend: str, address_or_key: str) -> str:
    try:
        return str(Address.parse(address_or_key))
    except ValueError:
        pass
    try:  # the public part: no passphrase
        return str(open_cli_keyring(home, keyring_backend).get(address_or_key).address)
    except KeyStoreError as exc:
        fail(f"{address_or_key!r} is neither an address nor a key name: {exc}")


# -- running -------------------------------------------------------------------------------------


START_SETTINGS = (
    ("moniker", "Node name, shown to peers and in /status."),
    ("p2p.persistent_peers", "Comma-separated id@host:port peers to stay connected to."),
    ("p2p.seeds", "Comma-separated id@host:port seed nodes to learn peers from."),
    ("p2p.laddr", "P2P listen address, e.g. tcp://0.0.0.0:26656."),
    ("rpc.laddr", "RPC listen address, e.g. tcp://127.0.0.1:26657."),
    ("rpc.websocket_laddr", "A second /websocket's listen address, e.g. tcp://127.0.0.1:26661."),
    ("instrumentation.prometheus", "Serve Prometheus metrics: true or false."),
    ("instrumentation.prometheus_listen_addr", "Metrics listen address, e.g. :26660."),
    ("log_level", "debug, info, warn or error."),
    ("log_format", "plain or json."),
)
"""The config.toml keys `derivd start` takes as `--<key>` flags and `DERIVD_<KEY>` variables
(CometBFT's flag names); a flag beats its variable, which beats config.toml."""


def setting_envvar(key: str) -> str:
    """The environment variable of a config.toml key: DERIVD_ and the key upper-cased, dots as
    underscores (DERIVD_P2P_PERSISTENT_PEERS)."""
    return "DERIVD_" + key.upper().replace(".", "_")


def _setting_param(key: str) -> str:
    return key.replace(".", "_")


def _start_settings(command: Callable[..., None]) -> Callable[..., None]:
    for key, help_text in reversed(START_SETTINGS):
        command = click.option(
            f"--{key}",
            _setting_param(key),
            default=None,
            envvar=setting_envvar(key),
            show_envvar=True,
            help=help_text,
        )(command)
    return command


@main.command()
@home_option
@_start_settings
def start(home: Path, **settings: str | None) -> None:
    """Run the node until SIGINT or SIGTERM. Each setting flag beats its DERIVD_* variable,
    which beats config.toml."""
    config, doc = _load(home)
    run_node(with_start_settings(config, settings), doc)


def with_start_settings(config: Config, settings: dict[str, str | None]) -> Config:
    """`config` with the START_SETTINGS given as flags or variables (`settings`: values by
    parameter name, None or absent: not given); a bad value fails the command with one line
    naming its flag or variable."""
    values = {key: settings.get(_setting_param(key)) for key, _ in START_SETTINGS}
    given = {key: value for key, value in values.items() if value is not None}
    try:
        return config.with_overrides(**given)
    except ConfigError as exc:
        key = f"{exc.section}.{exc.key}" if exc.section else str(exc.key)
        if key not in given:
            fail(str(exc))
        source = click.get_current_context().get_parameter_source(_setting_param(key))
        name = setting_envvar(key) if source is ParameterSource.ENVIRONMENT else f"--{key}"
        fail(f"{name}: {exc.problem}")


START_ERRORS = (
    NodeStartError,
    StorageError,
    PrivValError,
    KeyFileError,
    HandshakeError,
    WALError,
    RollbackError,
)
"""What stops a node (or `inspect`) from starting: reported as their one line, no traceback."""


def run_node(config: Config, doc: GenesisDoc) -> None:
    logs.configure(config.base.log_level, config.base.log_format)
    for key in config.unknown_keys:
        click.echo(
            f"warning: {config.home / 'config' / 'config.toml'}: unknown key {key} (ignored)", err=True
        )
    _serve_until_signal(Node(config, doc).run)


def _serve_until_signal(run: Callable[..., Awaitable[None]]) -> None:
    """Run the service `run` (a trio task that reports when it has started) until SIGINT or
    SIGTERM; a START_ERRORS failure ends the command with its one line."""
    try:
        trio.run(_run_until_signal, run)
    except START_ERRORS as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


async def _run_until_signal(run: Callable[..., Awaitable[None]]) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(run)
                async for signum in signals:
                    click.echo(f"received {signal.Signals(signum).name}, stopping", err=True)
                    nursery.cancel_scope.cancel()
                    break
        except* START_ERRORS as group:
            raise first_leaf(group) from None  # nurseries wrapped it: the command reports it plainly


# -- testnets -------------------------------------------------------------------------------------


def _bridge_options(command: Callable[..., None]) -> Callable[..., None]:
    """`--evm-rpc` and the bridge's other testnet options."""
    options = [
        click.option(
            "--evm-rpc",
            default=None,
            help=f"Bridge the chain to the EVM node at this JSON-RPC URL (e.g. {DEFAULT_EVM_RPC}, a "
            "`hardhat node`): bridge keys in the validator homes, the test token and the bridge "
            "deployed there, a genesis bridge section (default: no bridge).",
        ),
        click.option(
            "--evm-key",
            type=click.Path(dir_okay=False, path_type=Path),
            default=None,
            help="With --evm-rpc: a file with the deployer's secret key (0x and 64 hex digits).",
        ),
        click.option(
            "--evm-dev-account",
            type=click.IntRange(0, len(HARDHAT_DEV_KEYS) - 1),
            default=None,
            help="With --evm-rpc: deploy from hardhat's dev account N (default 0; LOCAL CHAINS ONLY, "
            "its key is public).",
        ),
        click.option(
            "--bridge-confirmations",
            type=click.IntRange(min=1),
            default=3,
            show_default=True,
            help="With --evm-rpc: EVM blocks a deposit waits before validators vote it.",
        ),
        click.option(
            "--bridge-dispute-period",
            type=click.IntRange(min=0),
            default=60,
            show_default=True,
            help="With --evm-rpc: seconds between a withdrawal's request and its payment on the EVM chain.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _bridge_settings(
    evm_rpc: str | None,
    evm_key: Path | None,
    evm_dev_account: int | None,
    bridge_confirmations: int,
    bridge_dispute_period: int,
) -> dict[str, Any]:
    """`create_testnet`'s bridge arguments from the options (none without --evm-rpc)."""
    if evm_rpc is None:
        given = [
            name
            for name, value in (("--evm-key", evm_key), ("--evm-dev-account", evm_dev_account))
            if value is not None
        ]
        if given:
            fail(f"{' and '.join(given)}: only with --evm-rpc")
        return {}
    if evm_key is not None and evm_dev_account is not None:
        fail("give one of --evm-key and --evm-dev-account")
    key = HARDHAT_DEV_KEYS[evm_dev_account or 0] if evm_key is None else read_evm_key(evm_key)
    return {
        "evm_rpc": evm_rpc,
        "evm_key": key,
        "bridge_confirmations": bridge_confirmations,
        "bridge_dispute_period": bridge_dispute_period,
    }


@main.command()
@click.option(
    "--validators", type=click.IntRange(min=1), default=4, show_default=True, help="Number of validators."
)
@click.option(
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write node0, node1, ... into (must not exist, or be empty).",
)
@click.option(
    "--non-validators",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Number of full nodes (not in the validator set).",
)
@click.option(
    "--base-port",
    type=click.IntRange(min=1, max=65535),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="node0's p2p port; node i uses base+10i (p2p), base+10i+1 (RPC), base+10i+4 (metrics) "
    "on 127.0.0.1, or base, base+1, base+4 on its own host with --hostnames/--starting-ip.",
)
@click.option("--chain-id", default=None, help="Chain id (default: derivd-testnet-<random>).")
@click.option(
    "--starting-ip",
    default=None,
    help="Give node i the IPv4 address STARTING_IP+i and the same ports on every node "
    "(default: every node on 127.0.0.1 with its own ports).",
)
@click.option(
    "--hostnames",
    default=None,
    help="Comma-separated host of each node (e.g. node0,node1,node2,node3 for containers); "
    "every node then uses the same ports.",
)
@click.option(
    "--accounts",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Number of funded keys account0, account1, ... (1,000,000 USD each) in every home.",
)
@click.option(
    "--option-expiries",
    "option_expiries",
    default=None,
    help="Comma-separated lifetimes of the default option series, as Go durations after the genesis "
    "time (e.g. 10m,24h; default: the first 08:00 UTC a day away and a week later).",
)
@_bridge_options
def testnet(
    validators: int,
    output: Path,
    non_validators: int,
    base_port: int,
    chain_id: str | None,
    starting_ip: str | None,
    hostnames: str | None,
    accounts: int,
    option_expiries: str | None,
    **bridge_options: Any,
) -> None:
    """Write the homes of a VALIDATORS (+ NON-VALIDATORS) node network sharing one genesis, with
    persistent peers between all nodes, and print a JSON summary (with --evm-rpc: bridged to an
    EVM chain, the contract and token addresses in its `bridge` member)."""
    bridge = _bridge_settings(**bridge_options)
    try:
        hosts: list[str] | None = None
        if starting_ip is not None and hostnames is not None:
            fail("--starting-ip and --hostnames cannot be used together")
        if hostnames is not None:
            hosts = parse_hostnames(hostnames)
        elif starting_ip is not None:
            hosts = starting_ip_hosts(starting_ip, validators + non_validators)
        net = create_testnet(
            output,
            validators,
            non_validators,
            base_port,
            chain_id,
            hosts,
            accounts,
            option_lifetimes=_option_lifetimes(option_expiries),
            **bridge,
        )
    except TestnetError as exc:
        fail(str(exc))
    emit(net.to_json())


def _option_lifetimes(text: str | None) -> list[int]:
    """The `--option-expiries` durations in ns (none given: the default expiries)."""
    if text is None:
        return []
    lifetimes: list[int] = []
    for part in text.split(","):
        try:
            lifetime = parse_duration(part.strip())
        except ValueError as exc:
            fail(f"--option-expiries: {exc}")
        if lifetime <= 0:
            fail(f"--option-expiries: a series must expire after the genesis time, got {part.strip()!r}")
        lifetimes.append(lifetime)
    if len(set(lifetimes)) != len(lifetimes):
        fail("--option-expiries: the same lifetime twice")
    return lifetimes


@main.command()
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".localnet"),
    show_default=True,
    help="Testnet directory holding node0, node1, ...",
)
@click.option(
    "--validators",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Validators of a new localnet (1 runs the single-node chain).",
)
@click.option(
    "--non-validators",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Full nodes of a new localnet.",
)
@click.option(
    "--base-port",
    type=click.IntRange(min=1, max=65535),
    default=DEFAULT_BASE_PORT,
    show_default=True,
    help="node0's p2p port of a new localnet (node i: p2p base+10i, RPC base+10i+1, metrics base+10i+4).",
)
@click.option(
    "--option-expiries",
    "option_expiries",
    default=None,
    help="Comma-separated lifetimes of the default option series, as Go durations after the genesis "
    "time (e.g. 10m,24h; default: the first 08:00 UTC a day away and a week later).",
)
@_bridge_options
def localnet(
    home: Path,
    validators: int,
    non_validators: int,
    base_port: int,
    option_expiries: str | None,
    **bridge_options: Any,
) -> None:
    """Create a local testnet under --home if absent (chain derivd-localnet, funded key `account0`
    in every node's key store) and run all its nodes until Ctrl-C."""
    if (home / "config" / "genesis.json").exists():
        fail(
            f"{home} holds a single-node home from an older `derivd localnet`; run it with "
            f"`derivd start --home {home}`, or remove it to create a new localnet"
        )
    if not (home / "node0" / "config" / "genesis.json").exists():
        bridge = _bridge_settings(**bridge_options)
        try:
            net = create_testnet(
                home,
                validators,
                non_validators,
                base_port,
                "derivd-localnet",
                accounts=LOCALNET_ACCOUNTS,
                option_lifetimes=_option_lifetimes(option_expiries),
                **bridge,
            )
        except TestnetError as exc:
            fail(str(exc))
        names = " and ".join(f"'{account.name}' ({account.address})" for account in net.accounts)
        click.echo(
            f"localnet created in {home}: {validators} validator(s), {non_validators} full node(s); "
            f"keys {names} hold 1,000,000 USD each.\n"
            f"Try: derivd tx order place --home {home / 'node0'} --from {net.accounts[0].name} "
            f"--market BTC-USD --side sell --size 0.1 --price 65000",
            err=True,
        )
        if net.bridge is not None:
            click.echo(
                f"bridge on EVM chain {net.bridge.evm_chain_id} ({net.evm_rpc}): contract "
                f"{format_evm_address(net.bridge.contract)}, token {format_evm_address(net.bridge.token)}; "
                f"hardhat's dev accounts 0-{DEV_MINT_ACCOUNTS - 1} hold {DEV_MINT // 10**QUOTE_DECIMALS:,} "
                f"test USD each.\n"
                f"Try: derivd bridge deposit --evm-rpc {net.evm_rpc} --evm-dev-account 1 "
                f"--node http://127.0.0.1:{base_port + 1} --amount 1000 --to {net.accounts[0].address}",
                err=True,
            )
    else:
        context = click.get_current_context()
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("validators", "non_validators", "base_port", "option_expiries", *bridge_options)
            if context.get_parameter_source(name) is ParameterSource.COMMANDLINE
        ]
        if given:
            click.echo(f"note: {home} already holds a localnet; {', '.join(given)} ignored", err=True)
    try:
        code = supervise(home, click.echo)
    except SupervisorError as exc:
        fail(str(exc))
    sys.exit(code)


@main.command(name="unsafe-reset-all")
@home_option
def unsafe_reset_all(home: Path) -> None:
    """Delete the blockchain data and reset the validator's signing state (keeps keys,
    config and genesis). Never do this to a validator that has signed on a live chain."""
    config, _ = _load(home)
    data = config.path(config.base.db_dir)
    try:
        ensure_not_in_use(data / "derivd.db")
    except StorageError as exc:
        fail(str(exc))
    for child in (data / "derivd.db", config.path(config.consensus.wal_file).parent):
        if child.exists():
            shutil.rmtree(child)
            click.echo(f"Removed {child}", err=True)
    scan_position = data / "bridge_watcher.json"  # the bridge watcher's, of the chain removed
    if scan_position.exists():
        scan_position.unlink()
        click.echo(f"Removed {scan_position}", err=True)
    key_path = config.path(config.base.priv_validator_key_file)
    if key_path.exists():
        FilePrivValidator.load(key_path, config.path(config.base.priv_validator_state_file)).reset_state()
        click.echo("Reset private validator state", err=True)


@main.command()
@home_option
@click.option("--height", type=int, default=0, help="Height to export (default: the last committed).")
@click.option("--chain-id", default="", help="Chain id of the new chain (default: this chain's).")
@click.option(
    "--output", type=click.Path(path_type=Path), default=None, help="File to write (default: stdout)."
)
def export(home: Path, height: int, chain_id: str, output: Path | None) -> None:
    """Write the state at a height as the genesis file of a new chain that continues it (like
    `simd export`). Stop the node first."""
    config, doc = _load(home)
    db_path = config.path(config.base.db_dir) / "derivd.db"
    try:
        exported = export_genesis(db_path, doc, height, chain_id)
    except StorageError as exc:
        fail(str(explained(exc, db_path)))
    except (ExportError, GenesisError) as exc:
        fail(str(exc))
    if output is None:
        click.echo(genesis_json_bytes(exported).decode(), nl=False)
    else:
        save_genesis(exported, output)
    click.echo(
        f"Exported height {exported.initial_height - 1} (app hash {exported.app_hash.hex().upper()}): "
        f"{len(exported.app_state['state']['records'])} records",
        err=True,
    )


@main.command(name="rollback")
@home_option
@click.option("--hard", is_flag=True, help="Remove the last block as well as the state.")
def rollback_command(home: Path, hard: bool) -> None:
    """Roll the state back by one height (like `cometbft rollback`), the application's state with
    it; the block store keeps the last block, which the node executes again at its next start,
    unless --hard removes it too. Stop the node first."""
    config, _ = _load(home)
    try:
        done = rollback(
            config.path(config.base.db_dir) / "derivd.db", config.path(config.consensus.wal_file), hard=hard
        )
    except (RollbackError, StorageError) as exc:
        fail(str(exc))
    what = "both state and block" if done.block_removed else "state"
    click.echo(f"Rolled back {what} to height {done.height} and hash {done.app_hash.hex().upper()}")


@main.command(name="inspect")
@home_option
@click.option(
    "--rpc.laddr",
    "rpc_laddr",
    default=None,
    envvar=setting_envvar("rpc.laddr"),
    show_envvar=True,
    help="Where to serve the RPC (default: [rpc] laddr of config.toml).",
)
def inspect_command(home: Path, rpc_laddr: str | None) -> None:
    """Serve the read-only RPC over a stopped node's data (like `cometbft inspect`): blocks, results,
    transactions, validators and state queries; what needs a running node is refused. Runs until
    SIGINT or SIGTERM; the node cannot start meanwhile."""
    config, doc = _load(home)
    if rpc_laddr is not None:
        config = with_start_settings(config, {"rpc_laddr": rpc_laddr})
    logs.configure(config.base.log_level, config.base.log_format)
    _serve_until_signal(partial(inspect_server.serve, config, doc))


@main.command(name="gen-validator")
def gen_validator() -> None:
    """Print a new validator key as priv_validator_key.json holds it (like `cometbft
    gen-validator`); nothing is written."""
    key = PrivateKey.generate()
    emit(
        {
            "address": key.address.upper(),
            "pub_key": {"type": PUB_KEY_TYPE, "value": _b64(key.public_key.raw)},
            "priv_key": {"type": PRIV_KEY_TYPE, "value": _b64(key.cometbft_bytes())},
        }
    )


@main.command(name="show-node-id")
@home_option
def show_node_id(home: Path) -> None:
    """Print this node's p2p id."""
    config, _ = _load(home)
    try:
        key = load_key_file(config.path(config.base.node_key_file))
    except KeyFileError as exc:
        fail(str(exc))
    click.echo(node_id(key.public_key))


@main.command(name="show-validator")
@home_option
def show_validator(home: Path) -> None:
    """Print this node's validator public key."""
    config, _ = _load(home)
    try:
        key = load_key_file(config.path(config.base.priv_validator_key_file))
    except KeyFileError as exc:
        fail(str(exc))
    click.echo(json.dumps({"type": PUB_KEY_TYPE, "value": _b64(key.public_key.raw)}))


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


main.add_command(bench)


@main.command()
def version() -> None:
    """Print the version."""
    click.echo(VERSION)


# -- keys ----------------------------------------------------------------------------------------


main.add_command(keys_group)


# -- client commands -------------------------------------------------------------------------------


@main.command()
@node_option
def status(node: str) -> None:
    """Print the node's status."""
    emit(RPCClient(node).call("status"))


@main.group(cls=LazyGroup, lazy={"bridge": "node.bridge_cli:tx_bridge_group"})
def tx() -> None:
    """Sign and broadcast transactions (offline too: --generate-only, `tx sign`, `tx broadcast`)."""


@main.group()
def query() -> None:
    """Query application state, transactions and blocks."""


@query.command(name="account")
@node_option
@home_option
@click.argument("address")
@click.option("--height", type=int, default=0, help="Height to query at (0: latest).")
@click.option(
    "--prove",
    is_flag=True,
    help="Read the account record with its Merkle proof and check it against a header this command "
    "verifies itself (light client) from the trust anchor; prints the record and what was checked.",
)
@click.option(
    "--trusted-height", type=int, default=0, help="With --prove: a height you trust (default: genesis)."
)
@click.option("--trusted-hash", default="", help="With --prove: the header hash at --trusted-height (hex).")
def query_account(
    node: str, home: Path, address: str, height: int, prove: bool, trusted_height: int, trusted_hash: str
) -> None:
    """Show an account's balance, recent nonces, positions and orders; with --prove, its record,
    verified."""
    try:
        parsed = Address.parse(address)
    except ValueError as exc:
        fail(str(exc))
    client = RPCClient(node)
    if not prove:
        emit(abci_query(client, f"/accounts/{parsed}", height))
        return
    if height:
        fail("--prove reads the latest height (the header after it carries its app hash); drop --height")
    emit(_proven_account(client, home, parsed, trusted_height, trusted_hash))


def _anchor(call: light.Call, home: Path, trusted_height: int, trusted_hash: str) -> light.Anchor:
    """The light client's trust anchor: the given height and hash, else the home's genesis."""
    provider = light.RPCProvider(call)
    if trusted_height or trusted_hash:
        if not (trusted_height > 0 and trusted_hash):
            fail("--trusted-height and --trusted-hash go together")
        chain_id = call("status")["node_info"]["network"]
        return light.anchor_from_hash(provider, chain_id, trusted_height, bytes.fromhex(trusted_hash))
    config = load_config(home)
    return light.anchor_from_genesis(provider, load_genesis(config.path(config.base.genesis_file)))


@main.command(name="light")
@node_option
@home_option
@click.option("--laddr", default="tcp://127.0.0.1:8888", show_default=True, help="Where the proxy listens.")
@click.option(
    "--trusted-height",
    type=int,
    default=0,
    help="A height you trust (default: the last run's, else genesis).",
)
@click.option("--trusted-hash", default="", help="The header hash at --trusted-height (hex).")
@click.option(
    "--trusting-period", default="168h", show_default=True, help="How long a verified header is trusted."
)
def light_command(
    node: str, home: Path, laddr: str, trusted_height: int, trusted_hash: str, trusting_period: str
) -> None:
    """Run a light client: a JSON-RPC proxy that verifies headers and /key query proofs (like
    `cometbft light`)."""
    logs.configure("info", "plain")
    call = rpc_caller(node)
    store = home / "data" / "light-trust.json"
    try:
        options = TrustOptions(trusting_period=parse_duration(trusting_period))
        kept = None if trusted_height or trusted_hash else light_proxy.stored_trust(store)
        if kept is not None:
            chain_id = call("status")["node_info"]["network"]
            anchor = light.anchor_from_hash(light.RPCProvider(call), chain_id, kept[0], kept[1])
        else:
            anchor = _anchor(call, home, trusted_height, trusted_hash)
        store.parent.mkdir(parents=True, exist_ok=True)
    except (LightError, GenesisError, ConfigError, ValueError, OSError, RPCError) as exc:
        fail(f"cannot start the light client: {exc}")
    session = light_proxy.LightSession(call, anchor, options, store)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            bound = await start_server(nursery, light_proxy.make_proxy(session), laddr, 0)
            click.echo(
                f"light proxy listening on {bound} (trusting block {anchor.block.height}, {anchor.source})",
                err=True,
            )

    try:
        trio.run(run)
    except NodeStartError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        pass


def _proven_account(
    client: RPCClient, home: Path, address: Address, trusted_height: int, trusted_hash: str
) -> dict[str, object]:
    try:
        anchor = _anchor(client.call, home, trusted_height, trusted_hash)
        proven = light.prove_key(client.call, anchor, schema.account_key(address.raw))
    except (LightError, ProofError, GenesisError, ConfigError, ValueError) as exc:
        fail(f"not verified: {exc}")
    account = Account() if proven.value is None else Account.decode(proven.value)
    return {
        "address": str(address),
        "height": str(proven.height),
        "balance": str(account.balance),
        "nonces": [str(n) for n in account.nonces],
        "proof": {
            "verified": True,
            "kind": "absence" if proven.value is None else "presence",
            "app_hash": proven.app_hash.hex().upper(),
            "header_height": str(proven.height + 1),
            "trusted_height": str(anchor.block.height),
            "trusted_from": anchor.source,
            "light_blocks_verified": [str(h) for h in proven.verified_heights],
        },
    }


tx.add_command(order_group)
tx.add_command(tx_transfer)
tx.add_command(tx_withdraw)
tx.add_command(subaccount_group)
tx.add_command(isolated_group)
tx.add_command(tx_sign)
tx.add_command(tx_broadcast)
query.add_command(book_command)
query.add_command(markets_command)
query.add_command(oracle_command)
query.add_command(funding_command)
query.add_command(liquidations_command)
query.add_command(fees_command)
query.add_command(twaps_command)
query.add_command(subaccounts_command)
query.add_command(tx_command)
query.add_command(block_command)
query.add_command(bridge_query_group)


if __name__ == "__main__":
    main()
