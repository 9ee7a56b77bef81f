"""Helpers for end-to-end tests: real `derivd` processes on loopback, a JSON-RPC client, and
polling with deadlines (never sleeps to synchronise).

A one-node chain listens on port 0 everywhere and the ports are read back from the node's log
each time it starts: a port picked free and released could be taken (by any connection on the
machine) before the node binds it."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import httpx
from click.testing import CliRunner

from execution.genesis_state import add_account
from genesis.genesis import load_genesis, save_genesis
from node.cli import init_home, main
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.testnet import Testnet, create_testnet, free_base_port

DERIVD = str(Path(sys.executable).parent / "derivd")
LISTENING_RPC = re.compile(r"rpc listening on \S*:(\d+)")
LISTENING_METRICS = re.compile(r"metrics listening on \S*:(\d+)")
LISTENING_WEBSOCKET = re.compile(r"websocket listening on \S*:(\d+)")
T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.05) -> T:
    """Poll `probe` until it returns something other than None, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
        except (httpx.HTTPError, OSError) as exc:
            last_error = exc
            value = None
        if value is not None:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([DERIVD, *args], capture_output=True, text=True, timeout=60, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"derivd {' '.join(args)} failed ({result.returncode}): {result.stderr}")
    return result


@dataclass
class ChainHome:
    """A node's home with funded keys; its ports are those the node listens on (0 until a
    NodeProcess has started a node configured to bind port 0)."""

    home: Path
    rpc_port: int
    metrics_port: int
    accounts: dict[str, str] = field(default_factory=dict)
    websocket_port: int = 0
    """the second `/websocket`'s (`[rpc] websocket_laddr`), if the node serves one"""

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.rpc_port}"


def invoke(chain: ChainHome, *args: str, query: bool = False) -> dict[str, Any]:
    """`derivd ARGS` in this process against `chain`'s node (a query: `--node` only; else with
    `--home`, and the tx must succeed); the printed JSON."""
    tail = ["--node", chain.rpc_url] if query else ["--home", str(chain.home), "--node", chain.rpc_url]
    result = CliRunner().invoke(main, [*args, *tail], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out: dict[str, Any] = json.loads(result.output)
    if not query:
        assert out["tx_result"].get("code", 0) == 0, out
    return out


def tx_events(out: dict[str, Any], kind: str) -> list[dict[str, str]]:
    """The attributes of each event of type `kind` of a committed tx's printed result."""
    return [
        {a["key"]: a["value"] for a in e["attributes"]}
        for e in out["tx_result"]["events"]
        if e["type"] == kind
    ]


def start_file_priced_node(tmp: Path, funded: dict[str, int]) -> tuple[ChainHome, NodeProcess]:
    """`make_chain` with its validator's price feeder reading fixed prices from a file (BTC-USD
    65,000, ETH-USD 3,500), started and past height 2."""
    chain = make_chain(tmp, funded)
    prices = tmp / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    overrides = {"oracle.enabled": True, "oracle.source": "file", "oracle.file": str(prices)}
    write_config(load_config(chain.home).with_overrides(**overrides))
    process = NodeProcess(chain).start()
    process.wait_height(2)
    return chain, process


def make_chain(tmp: Path, funded: dict[str, int], chain_id: str = "e2e-chain") -> ChainHome:
    """`derivd init` a home with short timeouts, port 0 everywhere and the given keys funded (the
    ports are known once a NodeProcess has started the node)."""
    home = tmp / "node"
    init_home(home, "e2e", chain_id)
    config = load_config(home).with_overrides(
        **{
            "rpc.laddr": "tcp://127.0.0.1:0",
            "p2p.laddr": "tcp://127.0.0.1:0",
            "instrumentation.prometheus_listen_addr": "127.0.0.1:0",
            "consensus.timeout_commit": "150ms",
            "consensus.timeout_propose": "1s",
            "execution.workers": 1,  # the parallel scheduler on (auto is serial on 2 cores)
            "rpc.timeout_broadcast_tx_commit": "10s",
            "oracle.enabled": False,  # no validator price votes: these tests count the txs they send
        }
    )
    write_config(config)
    chain = ChainHome(home, rpc_port=0, metrics_port=0)
    store = KeyStore(home)
    doc = load_genesis(home / "config" / "genesis.json")
    app_state = doc.app_state
    for name, amount in funded.items():
        info = store.add(name)
        chain.accounts[name] = str(info.address)
        app_state = add_account(app_state, str(info.address), amount)
    save_genesis(replace(doc, app_state=app_state), home / "config" / "genesis.json")
    return chain


class NodeProcess:
    """A `derivd start` subprocess."""

    def __init__(self, chain: ChainHome, log_name: str = "node.log") -> None:
        self.chain = chain
        self.log_path = chain.home / log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log_start = 0

    def start(self, *args: str) -> NodeProcess:
        """Start the node (`args`: more `derivd start` flags), learn the ports it bound from its
        log, and wait for its RPC."""
        return self.spawn(*args).wait_started()

    def spawn(self, *args: str) -> NodeProcess:
        """Start the node's process without waiting for it (`wait_started` does)."""
        self._log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [DERIVD, "start", "--home", str(self.chain.home), *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        return self

    def wait_started(self) -> NodeProcess:
        """Learn the ports the spawned node bound from its log, and wait for its RPC."""
        ports = wait_for("the node's listening ports", lambda: self._bound_ports(self._log_start))
        self.chain.rpc_port, self.chain.metrics_port = ports
        wait_for("the node's RPC", lambda: self.status() if self.alive() else self._died())
        return self

    def _bound_ports(self, log_start: int) -> tuple[int, int] | None:
        """The RPC and metrics ports this start of the node logged, once it has logged both (and
        the chain's `websocket_port`, logged between them if the node has that listener)."""
        if not self.alive():
            self._died()
        with open(self.log_path, "rb") as file:
            file.seek(log_start)
            text = file.read().decode(errors="replace")
        rpc = LISTENING_RPC.search(text)
        metrics = LISTENING_METRICS.search(text)
        websocket = LISTENING_WEBSOCKET.search(text)
        self.chain.websocket_port = int(websocket[1]) if websocket else 0
        return (int(rpc[1]), int(metrics[1])) if rpc and metrics else None

    def _died(self) -> None:
        raise AssertionError(
            f"derivd exited with {self.proc.returncode if self.proc else None}:\n{self.log()}"
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def rpc(self, method: str, **params: Any) -> Any:
        body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        response = httpx.post(self.chain.rpc_url, json=body, timeout=15)
        payload = response.json()
        if "error" in payload:
            raise RPCFailure(payload["error"])
        return payload["result"]

    def status(self) -> dict[str, Any]:
        result: dict[str, Any] = self.rpc("status")
        return result

    def height(self) -> int:
        return int(self.status()["sync_info"]["latest_block_height"])

    def wait_height(self, height: int, timeout: float = 30.0) -> int:
        return wait_for(f"height {height}", lambda: h if (h := self.height()) >= height else None, timeout)

    def broadcast(self, tx: bytes, mode: str = "sync") -> dict[str, Any]:
        result: dict[str, Any] = self.rpc(f"broadcast_tx_{mode}", tx=base64.b64encode(tx).decode())
        return result

    def query(self, path: str) -> Any:
        response = self.rpc("abci_query", path=path, data="", height="0", prove=False)["response"]
        assert response["code"] == 0, response["log"]
        return json.loads(base64.b64decode(response["value"]))

    def balance(self, address: str) -> int:
        return int(self.query(f"/accounts/{address}")["balance"])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


SPEED = {
    "consensus.timeout_commit": "100ms",
    "consensus.timeout_propose": "1s",
    "consensus.timeout_prevote": "300ms",
    "consensus.timeout_precommit": "300ms",
    "consensus.peer_gossip_sleep_duration": "50ms",
    "execution.workers": 1,  # the parallel scheduler on (auto is serial on 2 cores)
}


def start_all(processes: list[NodeProcess]) -> None:
    """Start every node at once (their interpreters load side by side), then wait for each."""
    for process in processes:
        process.spawn()
    for process in processes:
        process.wait_started()


def make_net(tmp: Path, validators: int, full_nodes: int = 0) -> tuple[Testnet, list[NodeProcess]]:
    """A testnet of real homes under `tmp/net` with fast consensus timeouts (not started)."""
    base = free_base_port(validators + full_nodes)
    net = create_testnet(tmp / "net", validators, full_nodes, base_port=base, chain_id="e2e-chain")
    processes = []
    for node in net.nodes:
        write_config(load_config(node.home).with_overrides(**SPEED))
        processes.append(NodeProcess(ChainHome(node.home, node.plan.rpc_port, node.plan.metrics_port)))
    return net, processes


class RPCFailure(Exception):
    def __init__(self, error: dict[str, Any]) -> None:
        super().__init__(f"{error.get('message')}: {error.get('data')}")
        self.error = error
