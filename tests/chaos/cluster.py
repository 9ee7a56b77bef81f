"""The node processes of a chaos run: the testnet homes (N validators, plus the byzantine twin's
home when there is one), their configuration for the run, and starting, `kill -9`, restarting and
stopping each `derivd start` child; a small JSON-RPC client for the harness's threads.

The twin is the testnet's extra full node (its own home, node key and address, named in every
node's persistent peers) whose `priv_validator_key.json` is replaced by the victim's, with a fresh
sign state, `double_sign_check_height = 0` (the documented way to start a key that signed
recently), the oracle feeder off and a shorter propose timeout: it signs as the victim wherever the
two see different things (a nil prevote where the victim waited for the proposal, a proposal of its own).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from node.config import load_config, write_config
from node.supervisor import node_command
from node.testnet import Testnet, TestnetNode, create_testnet
from tests.chaos.network import Fabric

CHAIN_ID = "chaos-chain"
ACCOUNTS = 4
NODE_CONFIG: dict[str, object] = {
    "consensus.timeout_commit": "300ms",
    "consensus.timeout_propose": "1s",
    "consensus.timeout_prevote": "500ms",
    "consensus.timeout_precommit": "500ms",
    "consensus.peer_gossip_sleep_duration": "50ms",
    "p2p.persistent_peers_max_dial_period": "2s",  # a healed peer is redialled within 2 s
    "rpc.timeout_broadcast_tx_commit": "10s",
}
TWIN_CONFIG: dict[str, object] = {
    "consensus.double_sign_check_height": 0,
    "oracle.enabled": False,
    "consensus.timeout_propose": "300ms",  # prevotes nil where the victim waits for the proposal
}


class RPCError(Exception):
    """A JSON-RPC error answer."""


class RPC:
    """JSON-RPC over HTTP to one node (a client per thread: httpx clients are not shared)."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.url = url
        self._client = httpx.Client(timeout=timeout)

    def call(self, method: str, **params: Any) -> Any:
        payload = self._client.post(
            self.url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
        )
        body = payload.json()
        if "error" in body:
            error = body["error"]
            raise RPCError(f"{error.get('message')}: {error.get('data')}")
        return body["result"]

    def batch(self, calls: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        """Several calls in one request; each answer's result (an RPCError for an error answer)."""
        body = [{"jsonrpc": "2.0", "id": n, "method": m, "params": p} for n, (m, p) in enumerate(calls)]
        answers = self._client.post(self.url, json=body).json()
        if not isinstance(answers, list):  # one error for the whole batch
            raise RPCError(f"batch refused: {answers.get('error') if isinstance(answers, dict) else answers}")
        by_id = {answer.get("id"): answer for answer in answers}
        out: list[Any] = []
        for n in range(len(calls)):
            answer = by_id.get(n, {"error": {"message": "no answer"}})
            out.append(RPCError(str(answer["error"])) if "error" in answer else answer["result"])
        return out

    def height(self) -> int:
        return int(self.call("status")["sync_info"]["latest_block_height"])

    def query(self, path: str) -> Any:
        response = self.call("abci_query", path=path, data="", height="0", prove=False)["response"]
        if response["code"] != 0:
            raise RPCError(f"abci_query {path}: {response['log']}")
        return json.loads(base64.b64decode(response["value"]))

    def close(self) -> None:
        self._client.close()


@dataclass
class NodeProc:
    """One node of the run and its current process."""

    index: int
    node: TestnetNode
    rpc_url: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return self.node.plan.name

    @property
    def log_path(self) -> Path:
        return self.node.home / "node.log"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the harness only; it stops the nodes
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def kill9(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(20)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def create_homes(root: Path, fabric: Fabric, validators: int, twin_of: int | None) -> Testnet:
    """The testnet homes under `root/net`, configured for the run; with `twin_of`, node<N> is the
    byzantine twin of that validator."""
    extra = 1 if twin_of is not None else 0
    net = create_testnet(
        root / "net",
        validators,
        extra,
        base_port=fabric.base_port(),
        chain_id=CHAIN_ID,
        hosts=fabric.hosts(),
        accounts=ACCOUNTS,
    )
    for node in net.nodes:
        write_config(load_config(node.home).with_overrides(**NODE_CONFIG))
    if twin_of is not None:
        victim, twin = net.nodes[twin_of], net.nodes[-1]
        victim_config, twin_config = load_config(victim.home), load_config(twin.home)
        key_file = victim_config.path(victim_config.base.priv_validator_key_file)
        shutil.copyfile(key_file, twin_config.path(twin_config.base.priv_validator_key_file))
        write_config(twin_config.with_overrides(**TWIN_CONFIG))
    fabric.configure(net)
    return net


def node_procs(net: Testnet, fabric: Fabric) -> list[NodeProc]:
    return [
        NodeProc(
            index=node.plan.index,
            node=node,
            rpc_url=fabric.rpc_url(node),
            argv=fabric.command(node.plan.index, node_command(node.home)),
        )
        for node in net.nodes
    ]
