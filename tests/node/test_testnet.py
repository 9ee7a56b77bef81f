"""`derivd testnet` homes (one genesis, validator keys, ports, persistent peers, funded keys in
every home, refusal to overwrite, `--hostnames`) and the `derivd localnet` supervisor (starts a
node, stops it and itself cleanly on SIGINT)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from genesis.genesis import load_genesis
from node import testnet
from node.config import load_config, parse_laddr, parse_peer_list
from node.keystore import KeyStore
from node.supervisor import Child, Supervisor, find_homes
from node.testnet import ACCOUNT_FUNDS, create_testnet, free_base_port, plan_nodes, starting_ip_hosts
from p2p.nodekey import node_id
from primitives.keyfile import load_key_file
from primitives.timefmt import parse_rfc3339
from tests.node.e2e import DERIVD, run_cli, wait_for

VALIDATORS, FULL_NODES = 3, 1


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    output = tmp_path_factory.mktemp("testnet") / "net"
    result = run_cli(
        "testnet",
        "--validators",
        str(VALIDATORS),
        "--non-validators",
        str(FULL_NODES),
        "--output",
        str(output),
        "--chain-id",
        "tn-chain",
        "--accounts",
        "2",
        "--base-port",
        "36656",
    )
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def homes(summary: dict[str, Any]) -> list[Path]:
    return [Path(node["home"]) for node in summary["nodes"]]


def test_writes_one_home_per_node(summary: dict[str, Any]) -> None:
    output = Path(summary["output"])
    names = [f"node{i}" for i in range(VALIDATORS + FULL_NODES)]
    assert sorted(p.name for p in output.iterdir()) == names
    assert [h.name for h in find_homes(output)] == names
    for home in homes(summary):
        for rel in ("config/config.toml", "config/genesis.json", "config/node_key.json"):
            assert (home / rel).is_file(), rel
        assert (home / "config" / "priv_validator_key.json").is_file()
        assert (home / "data" / "priv_validator_state.json").is_file()
        assert load_config(home).base.moniker == home.name


def test_one_genesis_with_the_validators_keys(summary: dict[str, Any]) -> None:
    texts = {(home / "config" / "genesis.json").read_bytes() for home in homes(summary)}
    assert len(texts) == 1
    doc = load_genesis(homes(summary)[0] / "config" / "genesis.json")
    assert doc.chain_id == "tn-chain"
    assert [v.name for v in doc.validators] == [f"node{i}" for i in range(VALIDATORS)]
    assert all(v.power == 10 for v in doc.validators)
    for i, home in enumerate(homes(summary)):
        key = load_key_file(home / "config" / "priv_validator_key.json")
        in_genesis = [v for v in doc.validators if v.pub_key == key.public_key.raw]
        if i < VALIDATORS:
            assert in_genesis == [doc.validators[i]]
            assert summary["nodes"][i]["validator"] is True
        else:
            assert in_genesis == []
            assert summary["nodes"][i]["validator"] is False


def test_distinct_loopback_ports_in_the_documented_scheme(summary: dict[str, Any]) -> None:
    seen: set[int] = set()
    for i, home in enumerate(homes(summary)):
        config = load_config(home)
        p2p, rpc = parse_laddr(config.p2p.laddr), parse_laddr(config.rpc.laddr)
        metrics = parse_laddr(config.instrumentation.prometheus_listen_addr)
        websocket = parse_laddr(config.rpc.websocket_laddr)
        base = 36656 + 10 * i
        assert (p2p, rpc, metrics, websocket) == (
            ("127.0.0.1", base),
            ("127.0.0.1", base + 1),
            ("127.0.0.1", base + 4),
            ("127.0.0.1", base + 5),
        )
        assert config.p2p.allow_duplicate_ip is True
        assert not seen & {base, base + 1, base + 4, base + 5}
        seen |= {base, base + 1, base + 4, base + 5}
        assert summary["nodes"][i]["rpc"] == f"http://127.0.0.1:{base + 1}"


def test_persistent_peers_name_every_other_node(summary: dict[str, Any]) -> None:
    ids = [node_id(load_key_file(home / "config" / "node_key.json").public_key) for home in homes(summary)]
    assert [n["node_id"] for n in summary["nodes"]] == ids
    assert run_cli("show-node-id", "--home", str(homes(summary)[2])).stdout.strip() == ids[2]
    for i, home in enumerate(homes(summary)):
        peers = parse_peer_list(load_config(home).p2p.persistent_peers)
        expected = {(ids[j], "127.0.0.1", 36656 + 10 * j) for j in range(len(ids)) if j != i}
        assert {(p.node_id, p.host, p.port) for p in peers} == expected
        assert len(peers) == len(ids) - 1


def test_funded_account_keys_in_every_home(summary: dict[str, Any]) -> None:
    doc = load_genesis(homes(summary)[0] / "config" / "genesis.json")
    balances = {a["address"]: int(a["balance"]) for a in doc.app_state["accounts"]}
    assert len(balances) == 2 and set(balances.values()) == {ACCOUNT_FUNDS}
    assert ACCOUNT_FUNDS == 10**12
    for home in homes(summary):
        infos = KeyStore(home).list()
        assert [k.name for k in infos] == ["account0", "account1"]
        assert {str(k.address) for k in infos} == set(balances)
        assert KeyStore(home).private_key("account1").address == infos[1].address
    shown = json.loads(run_cli("keys", "show", "account0", "--home", str(homes(summary)[3])).stdout)
    assert shown["address"] == summary["accounts"][0]["address"]


def test_refuses_an_existing_output(tmp_path: Path) -> None:
    output = tmp_path / "net"
    output.mkdir()
    (output / "something").write_text("keep me")
    result = run_cli("testnet", "--validators", "2", "--output", str(output), check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "already exists" in result.stderr and str(output) in result.stderr
    assert sorted(p.name for p in output.iterdir()) == ["something"]
    with pytest.raises(testnet.TestnetError, match="already exists"):
        create_testnet(output, 1)


def test_a_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    with pytest.raises(testnet.TestnetError, match="chain_id"):
        create_testnet(tmp_path / "net", 2, chain_id="not a chain id")
    assert not (tmp_path / "net").exists()


def test_hostnames_give_every_node_the_same_ports(tmp_path: Path) -> None:
    output = tmp_path / "net"
    output.mkdir()  # an empty directory is accepted (a freshly mounted Docker volume)
    result = run_cli(
        "testnet", "--validators", "4", "--output", str(output), "--hostnames", "node0,node1,node2,node3"
    )
    nodes = json.loads(result.stdout)["nodes"]
    ids = [n["node_id"] for n in nodes]
    for i in range(4):
        config = load_config(output / f"node{i}")
        assert parse_laddr(config.p2p.laddr) == ("0.0.0.0", 26656)
        assert parse_laddr(config.rpc.laddr) == ("0.0.0.0", 26657)
        assert parse_laddr(config.instrumentation.prometheus_listen_addr) == ("0.0.0.0", 26660)
        assert config.p2p.external_address == f"tcp://node{i}:26656"
        peers = {(p.node_id, p.host, p.port) for p in parse_peer_list(config.p2p.persistent_peers)}
        assert peers == {(ids[j], f"node{j}", 26656) for j in range(4) if j != i}
        assert nodes[i]["rpc"] == f"http://node{i}:26657"
    bad = run_cli(
        "testnet", "--validators", "2", "--output", str(tmp_path / "x"), "--hostnames", "a", check=False
    )
    assert bad.returncode == 1 and "--hostnames" in bad.stderr
    assert not (tmp_path / "x").exists()


def test_starting_ip_counts_up() -> None:
    plans = plan_nodes(2, 1, hosts=starting_ip_hosts("192.168.10.2", 3))
    assert [(p.host, p.p2p_port, p.rpc_port) for p in plans] == [
        ("192.168.10.2", 26656, 26657),
        ("192.168.10.3", 26656, 26657),
        ("192.168.10.4", 26656, 26657),
    ]
    assert [p.validator for p in plans] == [True, True, False]


# -- the localnet supervisor -----------------------------------------------------------------------

IDLE = "import time; print('ready', flush=True); time.sleep(600)"
STUBBORN = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
    "time.sleep(600)"
)
CRASH = "print('boom: cannot listen', flush=True); raise SystemExit(3)"


def fake_child(tmp: Path, name: str, code: str) -> Child:
    home = tmp / name
    home.mkdir()
    return Child(name, home, "http://127.0.0.1:1", "off", "tcp://127.0.0.1:1", [sys.executable, "-c", code])


class Supervised:
    """A Supervisor running in a background task, with what it printed."""

    def __init__(self, children: list[Child], stop_timeout: float = 20.0) -> None:
        self.lines: list[str] = []
        self.supervisor = Supervisor(children, self.lines.append, stop_timeout)
        self.result: int | None = None
        self.finished = trio.Event()

    async def run(self) -> None:
        self.result = await self.supervisor.run()
        self.finished.set()

    async def wait_output(self, text: str) -> None:
        with trio.fail_after(30):
            while not any(text in line for line in self.lines):
                await trio.sleep(0.01)

    async def wait_log(self, child: Child, text: str) -> None:
        with trio.fail_after(30):
            while not (child.log_path.exists() and text in child.log_path.read_text()):
                await trio.sleep(0.01)

    async def stop(self) -> int:
        self.supervisor.request_stop("SIGINT")
        with trio.fail_after(30):
            await self.finished.wait()
        assert self.result is not None
        return self.result


async def test_supervisor_reports_a_dead_node_and_keeps_the_others(tmp_path: Path) -> None:
    idle, crash = fake_child(tmp_path, "node0", IDLE), fake_child(tmp_path, "node1", CRASH)
    supervised = Supervised([idle, crash])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervised.run)
        await supervised.wait_output("still running: node0")
        text = "\n".join(supervised.lines)
        assert "node1 (pid" in text and "exited with code 3 unexpectedly" in text
        assert "| boom: cannot listen" in text
        assert idle.running()
        await supervised.wait_log(idle, "ready")
        assert await supervised.stop() == 0
    assert idle.returncode == -signal.SIGTERM
    assert "every node has stopped" in supervised.lines


async def test_supervisor_kills_a_node_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = fake_child(tmp_path, "node0", STUBBORN)
    supervised = Supervised([stubborn], stop_timeout=0.5)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervised.run)
        await supervised.wait_log(stubborn, "ready")
        assert await supervised.stop() == 0
    assert stubborn.returncode == -signal.SIGKILL
    assert any("did not stop in time" in line for line in supervised.lines)


async def test_supervisor_exits_1_when_every_node_died(tmp_path: Path) -> None:
    supervised = Supervised([fake_child(tmp_path, "node0", CRASH), fake_child(tmp_path, "node1", CRASH)])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(supervised.run)
        with trio.fail_after(30):
            await supervised.finished.wait()
    assert supervised.result == 1
    assert any("every node has exited" in line for line in supervised.lines)


def _height(rpc: str) -> int | None:
    body = {"jsonrpc": "2.0", "id": 1, "method": "status", "params": {}}
    result = httpx.post(rpc, json=body, timeout=5).json()["result"]
    height = int(result["sync_info"]["latest_block_height"])
    return height if height >= 2 else None


def test_free_base_port_stays_below_the_ephemeral_range(tmp_path: Path) -> None:
    """Ports the kernel hands to outbound connections could be taken before a node binds them."""
    ephemeral_low = testnet._ephemeral_low()
    for _ in range(20):
        base = free_base_port(4)
        assert base >= 10000 and base + 34 < ephemeral_low
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        assert sock.getsockname()[1] >= ephemeral_low  # what a bind to port 0 would race with
    ranges = tmp_path / "ip_local_port_range"
    ranges.write_text("40000\t60999\n")
    assert testnet._ephemeral_low(ranges) == 40000
    ranges.write_text("garbage")
    assert testnet._ephemeral_low(ranges) == 32768
    assert testnet._ephemeral_low(tmp_path / "missing") == 32768


def test_localnet_supervisor_runs_a_node_and_stops_on_sigint(tmp_path: Path) -> None:
    base = free_base_port(1)
    home = tmp_path / "localnet"
    out_path = tmp_path / "supervisor.out"
    with out_path.open("wb") as out:
        proc = subprocess.Popen(
            [DERIVD, "localnet", "--validators", "1", "--home", str(home), "--base-port", str(base)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:

        def produced_blocks() -> int | None:
            if proc.poll() is not None:
                raise AssertionError(f"localnet exited with {proc.returncode}: {out_path.read_text()}")
            return _height(f"http://127.0.0.1:{base + 1}")

        wait_for("the localnet's node to produce blocks", produced_blocks, timeout=60)
        pids = [int(pid) for pid in re.findall(r"\bpid (\d+)", out_path.read_text())]
        assert len(pids) == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, out_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(pids[0], 0)  # the child was stopped and reaped before the supervisor exited
    output = out_path.read_text()
    assert "received SIGINT" in output and "every node has stopped" in output
    assert re.search(r"node0: rpc http://127\.0\.0\.1:\d+ .* streams ws://127\.0\.0\.1:\d+/websocket", output)
    assert "node stopped" in (home / "node0" / "node.log").read_text()
    assert KeyStore(home / "node0").get("account0")


def test_the_genesis_lists_option_series_with_the_lifetimes_asked_for(tmp_path: Path) -> None:
    net = create_testnet(tmp_path / "net", 1, option_lifetimes=[600 * 10**9, 3 * 3600 * 10**9])
    doc = load_genesis(net.nodes[0].home / "config" / "genesis.json")
    series = [m for m in doc.app_state["markets"] if "option" in m]
    expiries = sorted({parse_rfc3339(m["option"]["expiry"]) - doc.genesis_time for m in series})
    assert expiries == [600 * 10**9, 3 * 3600 * 10**9]
    assert len(series) == 8 and {m["option"]["underlying"] for m in series} == {1, 2}
    default = create_testnet(tmp_path / "default", 1)  # the first 08:00 UTC a day away, and a week later
    doc = load_genesis(default.nodes[0].home / "config" / "genesis.json")
    times = sorted({parse_rfc3339(m["option"]["expiry"]) for m in doc.app_state["markets"] if "option" in m})
    day = 24 * 3600 * 10**9
    assert len(times) == 2 and times[1] - times[0] == 7 * day and times[0] % day == 8 * 3600 * 10**9
    assert day <= times[0] - doc.genesis_time < 2 * day


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("0s", "must expire after the genesis time"),
        ("tomorrow", "not a duration"),
        ("5m,5m", "the same lifetime"),
    ],
)
def test_bad_option_expiries_are_refused_in_one_line(tmp_path: Path, flag: str, message: str) -> None:
    output = tmp_path / "net"
    result = run_cli(
        "testnet", "--validators", "1", "--output", str(output), "--option-expiries", flag, check=False
    )
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "--option-expiries" in result.stderr and message in result.stderr
    assert not output.exists()
