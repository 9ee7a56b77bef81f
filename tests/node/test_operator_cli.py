"""The operator's commands on real homes: `start` flags and DERIVD_* variables (two nodes on one
host told apart by them alone), one-line errors for a database or a port in use, `rollback` (soft
and hard) back to the same app hash, `inspect` over a stopped node, `gen-validator`, and `query tx`
and `query block`."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from click.testing import CliRunner

from consensus.app import InitChainRequest, ValidatorUpdate
from consensus.machine import Step, StepChanged, TimeoutConfig
from consensus.mempool import MempoolConfig
from consensus.privval import FilePrivValidator
from consensus.state import ConsensusParams
from consensus.wal import WAL
from execution.app import ExchangeApp
from execution.genesis_state import add_account
from execution.tx import Transfer, build_tx
from genesis.genesis import load_genesis, save_genesis
from node.cli import START_SETTINGS, init_home, main, setting_envvar
from node.config import Config, load_config, write_config
from node.node import build_core
from node.rollback import RollbackError, rollback
from primitives.batch_verify import BatchVerifier
from primitives.keyfile import load_key_file
from primitives.keys import Address, PrivateKey
from storage.db import Database, check_format
from tests.node.e2e import DERIVD, ChainHome, NodeProcess, make_chain, wait_for

IN_USE = "is in use by another process (is a node already running on this home?)"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A loopback port this test listens on: a node told to bind it cannot."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def _configure(home: Path, **settings: object) -> None:
    write_config(load_config(home).with_overrides(**settings))


def _all_on(port: int) -> dict[str, object]:
    """Every listener of a home on `port` (held by the test: only flags or variables get a node
    started)."""
    return {
        "rpc.laddr": f"tcp://127.0.0.1:{port}",
        "p2p.laddr": f"tcp://127.0.0.1:{port}",
        "instrumentation.prometheus_listen_addr": f"127.0.0.1:{port}",
    }


def _start_fails(home: Path, *args: str, env: dict[str, str] | None = None) -> list[str]:
    """`derivd start` on `home` that must fail: its stderr lines."""
    result = subprocess.run(
        [DERIVD, "start", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.splitlines()


def _cli(*args: str) -> Any:
    """An in-process `derivd` command (those that neither log nor serve)."""
    return CliRunner().invoke(main, list(args))


# -- start settings ---------------------------------------------------------------------------------


def _started_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Config:
    """The config `derivd start` would run with (the node itself is not started)."""
    seen: list[Config] = []
    monkeypatch.setattr("node.cli.run_node", lambda config, doc: seen.append(config))
    result = _cli("start", "--home", str(tmp_path / "home"), *args)
    assert result.exit_code == 0, result.stderr
    return seen[0]


def test_start_flags_beat_variables_which_beat_config_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_home(tmp_path / "home", "from-file", "settings-chain")
    peer = "a" * 40 + "@127.0.0.1:26656"
    values = {
        "moniker": ("m-flag", "m-env"),
        "p2p.persistent_peers": (peer, "b" * 40 + "@127.0.0.1:1"),
        "p2p.seeds": (peer.replace("a", "c"), "d" * 40 + "@127.0.0.1:2"),
        "p2p.laddr": ("tcp://127.0.0.1:1001", "tcp://127.0.0.1:2001"),
        "rpc.laddr": ("tcp://127.0.0.1:1002", "tcp://127.0.0.1:2002"),
        "rpc.websocket_laddr": ("tcp://127.0.0.1:1004", "tcp://127.0.0.1:2004"),
        "instrumentation.prometheus": ("false", "true"),
        "instrumentation.prometheus_listen_addr": ("127.0.0.1:1003", "127.0.0.1:2003"),
        "log_level": ("debug", "error"),
        "log_format": ("json", "plain"),
    }

    def read(config: Config, key: str) -> str:
        section, _, name = key.rpartition(".")
        value = getattr(getattr(config, section or "base"), name)
        return str(value).lower() if isinstance(value, bool) else str(value)

    base = _started_config(tmp_path, monkeypatch)
    for key, (flag_value, env_value) in values.items():
        variable = "DERIVD_" + key.upper().replace(".", "_")
        monkeypatch.setenv(variable, env_value)
        assert read(_started_config(tmp_path, monkeypatch), key) == env_value, variable
        flagged = _started_config(tmp_path, monkeypatch, f"--{key}", flag_value)
        assert read(flagged, key) == flag_value, key
        others = [k for k in values if k != key]
        assert [read(flagged, k) for k in others] == [read(base, k) for k in others], key
        monkeypatch.delenv(variable)
    assert read(base, "moniker") == "from-file"


def test_a_bad_setting_is_one_line_naming_its_flag_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    init_home(tmp_path / "home", "m", "settings-chain")
    home = str(tmp_path / "home")
    flagged = _cli("start", "--home", home, "--p2p.persistent_peers", "nobody")
    assert flagged.exit_code != 0
    assert flagged.stderr == (
        'Error: --p2p.persistent_peers: not a peer address (want id@host:port): "nobody"\n'
    )
    monkeypatch.setenv("DERIVD_INSTRUMENTATION_PROMETHEUS_LISTEN_ADDR", "nowhere")
    from_env = _cli("start", "--home", home)
    assert from_env.exit_code != 0
    assert from_env.stderr.startswith("Error: DERIVD_INSTRUMENTATION_PROMETHEUS_LISTEN_ADDR: ")
    assert from_env.stderr.count("\n") == 1
    # the flag overrides the variable: no error then
    monkeypatch.setattr("node.cli.run_node", lambda config, doc: None)
    fixed = _cli("start", "--home", home, "--instrumentation.prometheus_listen_addr", "127.0.0.1:0")
    assert fixed.exit_code == 0, fixed.stderr


# -- two nodes on one host, and what is in use ----------------------------------------------------------


def test_two_nodes_on_one_host_by_flags_and_variables_and_one_line_errors(
    tmp_path: Path, held_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    a = make_chain(tmp_path / "a", {})
    _configure(a.home, **_all_on(held_port), **{"oracle.enabled": True})  # its votes log at debug
    b_home = tmp_path / "b"
    init_home(b_home, "b-file", "e2e-chain")
    shutil.copy(a.home / "config" / "genesis.json", b_home / "config" / "genesis.json")
    _configure(b_home, **_all_on(held_port), **{"storage.state_versions": 1})
    b = ChainHome(b_home, 0, 0)

    alpha = NodeProcess(a).start(
        "--moniker=alpha",
        "--rpc.laddr=tcp://127.0.0.1:0",
        "--p2p.laddr=tcp://127.0.0.1:0",
        "--instrumentation.prometheus_listen_addr=127.0.0.1:0",
        "--log_level=debug",
    )
    beta = NodeProcess(b)
    try:
        a_id = alpha.status()["node_info"]["id"]
        a_p2p = alpha.log_path.read_text().split("p2p listening on 127.0.0.1:")[1].split()[0]
        with monkeypatch.context() as env:
            env.setenv("DERIVD_MONIKER", "beta")
            env.setenv("DERIVD_RPC_LADDR", "tcp://127.0.0.1:0")
            env.setenv("DERIVD_P2P_LADDR", "tcp://127.0.0.1:0")
            env.setenv("DERIVD_INSTRUMENTATION_PROMETHEUS_LISTEN_ADDR", "127.0.0.1:0")
            env.setenv("DERIVD_P2P_PERSISTENT_PEERS", f"{a_id}@127.0.0.1:{a_p2p}")
            env.setenv("DERIVD_LOG_FORMAT", "json")
            beta.start()
        assert alpha.status()["node_info"]["moniker"] == "alpha"
        assert beta.status()["node_info"]["moniker"] == "beta"
        ports = {a.rpc_port, a.metrics_port, b.rpc_port, b.metrics_port, int(a_p2p)}
        assert len(ports) == 5 and held_port not in ports
        for chain in (a, b):
            assert httpx.get(f"http://127.0.0.1:{chain.metrics_port}/metrics", timeout=10).status_code == 200
        # beta reached alpha by the variable's persistent peer and follows its chain
        peers = wait_for("beta's peer", lambda: beta.rpc("net_info")["peers"] or None)
        assert [peer["node_info"]["id"] for peer in peers] == [a_id]
        beta.wait_height(3)
        json_lines = [json.loads(line) for line in beta.log_path.read_text().splitlines() if line[:1] == "{"]
        assert any(line["event"].startswith("rpc listening on") for line in json_lines)
        wait_for("a debug line", lambda: True if "[debug" in alpha.log_path.read_text() else None)

        # the database of a running node: one line, from every command that opens it
        in_use = f"Error: the database {a.home / 'data' / 'derivd.db'} {IN_USE}"
        assert _start_fails(a.home, "--rpc.laddr=tcp://127.0.0.1:0") == [in_use]
        inspected = subprocess.run(
            [DERIVD, "inspect", "--home", str(a.home)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert inspected.returncode != 0 and inspected.stderr.splitlines() == [in_use]
        for command in ("rollback", "export", "unsafe-reset-all"):
            result = _cli(command, "--home", str(a.home))
            assert result.exit_code != 0 and result.stderr.splitlines() == [in_use], command

        # a port in use: one line naming the address and the setting
        c_home = tmp_path / "c"
        init_home(c_home, "c", "other-chain")
        assert _cli("rollback", "--home", str(c_home)).stderr.startswith("Error: there is no node database")
        free = ["--p2p.laddr=tcp://127.0.0.1:0", "--instrumentation.prometheus_listen_addr=127.0.0.1:0"]
        rpc_taken = _start_fails(
            c_home, f"--rpc.laddr=tcp://127.0.0.1:{held_port}", *free, "--log_level=error"
        )
        assert rpc_taken == [
            f"Error: cannot listen on 127.0.0.1:{held_port} (rpc.laddr): address already in use"
        ]
        p2p_env = {
            **os.environ,
            "DERIVD_P2P_LADDR": f"tcp://127.0.0.1:{held_port}",
            "DERIVD_LOG_LEVEL": "error",
        }
        p2p_taken = _start_fails(c_home, "--rpc.laddr=tcp://127.0.0.1:0", free[1], env=p2p_env)
        assert p2p_taken == [
            f"Error: cannot listen on 127.0.0.1:{held_port} (p2p.laddr): address already in use"
        ]
        empty = _cli("rollback", "--home", str(c_home))
        assert empty.exit_code != 0
        assert empty.stderr == "Error: the node has committed nothing yet: there is nothing to roll back\n"
    finally:
        beta_ran = beta.alive()
        if beta_ran:
            beta.stop()
        alpha.stop()
    # beta keeps one state version: the height below its last is gone
    assert beta_ran
    kept_one = _cli("rollback", "--home", str(b_home))
    assert kept_one.exit_code != 0 and kept_one.stderr.count("\n") == 1
    assert "is no longer kept ([storage] state_versions)" in kept_one.stderr


# -- rollback and inspect --------------------------------------------------------------------------------


class _Stop(Exception):
    """Raised from a step listener: the service stops there."""


def _dump(db: Database) -> dict[bytes, bytes]:
    return dict(db.iterate(b""))


async def test_a_rollback_is_the_exact_inverse_of_committing_a_height(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """In process: the database after rolling height 4 back is, key for key, the database the
    node had at height 3 (the block store aside while it keeps block 4); the validators' proposer
    priorities move every height here (powers 100 and 1; the first alone commits)."""
    ms = 1_000_000
    sender = PrivateKey.from_seed(b"s" * 32)
    privval = FilePrivValidator.generate(tmp_path / "pv_key.json", tmp_path / "pv_state.json")
    silent = PrivateKey.from_seed(b"v" * 32)
    genesis = InitChainRequest(
        "rollback-chain",
        time.time_ns(),
        1,
        (ValidatorUpdate(privval.public_key.raw, 100), ValidatorUpdate(silent.public_key.raw, 1)),
        json.dumps({"accounts": [{"address": str(sender.address), "balance": "1000000"}]}).encode(),
    )
    transfer = build_tx(sender, "rollback-chain", time.time_ns() // ms, [Transfer(Address(b"\x01" * 20), 5)])
    db_path, wal_path = tmp_path / "db", tmp_path / "wal"
    db, verifier = Database(db_path), BatchVerifier(workers=1)
    check_format(db, stamp=True)  # as the node does
    timeouts = TimeoutConfig(propose=500 * ms, prevote=200 * ms, precommit=200 * ms, commit=100 * ms)
    core = build_core(
        db,
        ExchangeApp(db, "rollback-chain", verifier),
        verifier,
        privval,
        WAL.open(wal_path),
        genesis,
        ConsensusParams(),
        timeouts,
        MempoolConfig(),
    )
    at_height_3: dict[bytes, bytes] = {}

    def listener(step: StepChanged) -> None:
        if step.step != Step.NEW_HEIGHT:
            return
        if step.height == 4:  # block 3 is stored: what a rollback of 4 must come back to
            at_height_3.update(_dump(db))
            assert core.mempool.check_tx(transfer).ok  # block 4 changes the application's state
        if step.height == 5:
            raise _Stop

    core.driver.step_listeners.append(listener)
    try:
        with trio.fail_after(60):  # virtual seconds (autojump clock)
            async with trio.open_nursery() as nursery:
                await nursery.start(core.service.run)
    except BaseExceptionGroup as group:
        assert group.subgroup(_Stop) is not None, group
    finally:
        core.driver.wal.close()
        at_height_4 = _dump(db)
        db.close()
        verifier.close()

    def app_state(dump: dict[bytes, bytes]) -> dict[bytes, bytes]:
        return {k: v for k, v in dump.items() if k.startswith(b"a:") and k not in (b"a:meta", b"a:time")}

    assert app_state(at_height_4) != app_state(at_height_3)  # the transfer is in block 4

    def block_store(key: bytes) -> bool:
        return key.startswith(b"b:")

    assert rollback(db_path, wal_path, hard=False).height == 3
    db = Database(db_path)
    soft = _dump(db)
    db.close()
    assert {k: v for k, v in soft.items() if not block_store(k)} == {
        k: v for k, v in at_height_3.items() if not block_store(k)
    }
    assert rollback(db_path, wal_path, hard=True).block_removed  # the kept block goes too
    db = Database(db_path)
    assert _dump(db) == at_height_3
    db.close()


def _funded_chain(tmp: Path) -> tuple[ChainHome, PrivateKey, Address]:
    chain = make_chain(tmp, {})
    sender, recipient = PrivateKey.generate(), PrivateKey.generate().address
    genesis_file = chain.home / "config" / "genesis.json"
    doc = load_genesis(genesis_file)
    save_genesis(replace(doc, app_state=add_account(doc.app_state, str(sender.address), 10**9)), genesis_file)
    return chain, sender, recipient


def _hashes(node: NodeProcess, height: int) -> tuple[str, str]:
    """(block hash, app hash after it) of `height`, in upper-case hex."""
    block = node.rpc("block", height=str(height))["block_id"]["hash"]
    app_hash = base64.b64decode(node.rpc("block_results", height=str(height))["app_hash"])
    return block, app_hash.hex().upper()


def test_rollback_then_start_reaches_the_same_app_hash_and_inspect_serves_the_stopped_node(
    tmp_path: Path,
) -> None:
    chain, sender, recipient = _funded_chain(tmp_path)
    node = NodeProcess(chain).start()
    node.wait_height(2)  # the tx's block is then not the first, which has nothing before it
    tx = build_tx(sender, "e2e-chain", time.time_ns() // 1_000_000, [Transfer(recipient, 12_345)])
    committed = node.broadcast(tx, "commit")
    assert committed["tx_result"]["code"] == 0
    tx_height, tx_hash = int(committed["height"]), committed["hash"]
    top = node.wait_height(tx_height + 1)  # a block after it, for the hard rollbacks to take back
    before = {h: _hashes(node, h) for h in range(tx_height - 1, top + 1)}
    assert before[tx_height][1] != before[tx_height - 1][1]  # the transfer changed the state
    node.stop()

    db, wal = chain.home / "data" / "derivd.db", chain.home / "data" / "cs.wal" / "wal"
    heights = [rollback(db, wal, hard=True).height]  # hard: block and state, down to the tx's block
    while heights[-1] > tx_height:
        heights.append(rollback(db, wal, hard=True).height)
    assert heights == list(range(heights[0], tx_height - 1, -1))
    soft = _cli("rollback", "--home", str(chain.home))
    assert soft.exit_code == 0, soft.stderr
    assert soft.stdout == f"Rolled back state to height {tx_height - 1} and hash {before[tx_height - 1][1]}\n"
    again = _cli("rollback", "--home", str(chain.home))  # CometBFT: nothing moves a second time
    assert again.stdout == soft.stdout

    # inspect: the stored chain read-only, the kept block included; broadcasts refused
    stored = _contents(db)
    inspector = NodeProcess(chain, "inspect.log")
    inspector.proc = subprocess.Popen(
        [DERIVD, "inspect", "--home", str(chain.home), "--rpc.laddr=tcp://127.0.0.1:0"],
        stdout=open(inspector.log_path, "ab"),  # noqa: SIM115 - the child's
        stderr=subprocess.STDOUT,
    )
    try:
        port = wait_for("inspect's RPC", lambda: _logged_port(inspector))
        chain.rpc_port = port
        status = inspector.status()
        assert status["sync_info"]["latest_block_height"] == str(tx_height)
        assert status["sync_info"]["latest_app_hash"] == before[tx_height - 1][1]
        found = inspector.rpc("tx", hash="0x" + tx_hash)
        assert found["height"] == str(tx_height) and found["tx_result"]["code"] == 0
        assert inspector.rpc("block", height=str(tx_height))["block_id"]["hash"] == before[tx_height][0]
        refused = httpx.post(
            chain.rpc_url,
            json={"jsonrpc": "2.0", "id": 1, "method": "broadcast_tx_sync", "params": {"tx": "AA=="}},
            timeout=10,
        ).json()["error"]
        assert refused["code"] == -32601 and "derivd inspect" in refused["data"]
    finally:
        inspector.stop()
    assert _contents(db) == stored  # inspect wrote nothing (nor executed the kept block)

    # start: the kept block runs again; the WAL's messages decide the heights after it again
    node.start()
    node.wait_height(top + 1)
    for height, hashes in before.items():
        assert _hashes(node, height) == hashes, height
    assert node.rpc("tx", hash="0x" + tx_hash)["height"] == str(tx_height)
    searched = node.rpc("tx_search", query=f"tx.height = {tx_height}")  # the event index has it again
    assert [found["hash"] for found in searched["txs"]] == [tx_hash]

    query = _cli("query", "tx", tx_hash, "--node", chain.rpc_url)
    assert query.exit_code == 0 and json.loads(query.stdout)["height"] == str(tx_height)
    block = _cli("query", "block", str(tx_height), "--node", chain.rpc_url)
    assert json.loads(block.stdout)["block_id"]["hash"] == before[tx_height][0]
    latest = json.loads(_cli("query", "block", "--node", chain.rpc_url).stdout)
    assert int(latest["block"]["header"]["height"]) >= tx_height + 2
    bad = _cli("query", "tx", "not-a-hash", "--node", chain.rpc_url)
    assert bad.exit_code != 0
    assert bad.stderr == "Error: HASH: expected the tx hash as 64 hex digits, got 'not-a-hash'\n"
    node.stop()

    # the first block has no state before it
    while True:
        try:
            rollback(db, wal, hard=True)
        except RollbackError:
            break
    first = _cli("rollback", "--home", str(chain.home))
    assert first.exit_code != 0
    assert first.stderr.startswith("Error: block 1 is the chain's first") and first.stderr.count("\n") == 1


def _contents(path: Path) -> str:
    """A digest of every key and value of the database at `path`."""
    db = Database(path)
    try:
        digest = hashlib.sha256()
        for key, value in db.iterate(b""):
            digest.update(len(key).to_bytes(4, "big") + key + len(value).to_bytes(4, "big") + value)
        return digest.hexdigest()
    finally:
        db.close()


def _logged_port(process: NodeProcess) -> int | None:
    if not process.alive():
        raise AssertionError(f"derivd inspect exited:\n{process.log()}")
    text = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
    marker = "rpc listening on http://127.0.0.1:"
    return int(text.split(marker)[1].split()[0]) if marker in text else None


# -- gen-validator ----------------------------------------------------------------------------------------


def test_gen_validator_prints_a_new_key_file_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("DERIVD_HOME", str(tmp_path / "home"))
    first, second = _cli("gen-validator"), _cli("gen-validator")
    assert first.exit_code == 0 and list(tmp_path.iterdir()) == [cwd] and list(cwd.iterdir()) == []
    key_file = tmp_path / "priv_validator_key.json"
    key_file.write_text(first.stdout)
    key = load_key_file(key_file)  # the form `derivd start` reads, its address checked against the key
    shown = json.loads(first.stdout)
    assert shown["address"] == key.address.upper()
    assert shown["pub_key"]["type"] == "tendermint/PubKeyEd25519"
    assert json.loads(second.stdout)["address"] != shown["address"]


# -- the operators' guide ---------------------------------------------------------------------------------


def test_operators_md_lists_every_command_and_start_setting() -> None:
    guide = (Path(__file__).resolve().parents[2] / "deploy" / "OPERATORS.md").read_text()
    start = guide.index("\n## Commands\n")
    section = guide[start : guide.index("\n## ", start + 1)]
    rows = [line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| `")]
    named = {cell.strip("`").split()[0] for row in rows for cell in row.split(", ")}
    assert set(main.commands) <= named, set(main.commands) - named
    for key, _ in START_SETTINGS:
        assert f"| `--{key}`" in section and f"`{setting_envvar(key)}`" in section, key
