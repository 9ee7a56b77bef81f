"""`derivd bench statesync`: how much faster a new node joins by state sync than by block sync.

A temporary localnet of real `derivd` processes (`node.testnet`): one validator whose genesis funds
`accounts` extra accounts (the state a snapshot must carry), with `timeout_commit` 1 ms so that
heights come fast, a snapshot every `snapshot_interval` heights; and two full nodes, not started.
With `load`, the bench throughput's order flow (`node.loadgen`, 200 traders, 4 markets) is offered
at `load` orders/s for `load_seconds` first, so that the chain holds blocks full of orders (block
sync replays them; a snapshot carries their resting orders and positions). Once the validator is
at `heights`, it restarts with the default `timeout_commit` (200 ms: the
chain then moves slowly while the joiners chase it), and the first full node starts with
`[statesync]` on (trusting the header of height 1, `discovery_time` 1 s) and is timed until it
reaches the validator's height at its start; it stops; then the second one, by block sync alone,
the same way. Figures: both times
(process start to caught up, start-up included), the speedup, the heights each had to reach, the
height the snapshot restored.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from genesis.genesis import load_genesis, save_genesis
from node.bench_throughput import ORDERS_PER_TX
from node.client import rpc_caller
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.loadgen import Generator, plans
from node.orderflow import copies_of_btc
from node.sdk.errors import RPCError
from node.testnet import Testnet, create_testnet, free_base_port
from primitives.hashing import sha256

FUNDS = 1_000_000
TRADERS = 200
TRADER_FUNDS = 10_000_000 * 10**6
MARKETS = copies_of_btc(4)


def _rpc(port: int, method: str, **params: Any) -> Any:
    return rpc_caller(f"http://127.0.0.1:{port}", timeout=10)(method, **params)


def _height(port: int) -> int:
    try:
        return int(_rpc(port, "status")["sync_info"]["latest_block_height"])
    except (RPCError, KeyError, ValueError, TypeError):
        return -1  # not serving yet


def _wait_height(
    process: subprocess.Popen[bytes], home: Path, port: int, height: int, timeout: float
) -> float:
    """Seconds until the node at `port` is at `height` (RuntimeError after `timeout`, or at once
    if the node exits: with the end of its log)."""
    started = time.monotonic()
    while _height(port) < height:
        if process.poll() is not None or time.monotonic() - started > timeout:
            tail = (home / "node.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the node in {home} did not reach height {height}:\n{tail}")
        time.sleep(0.05)  # polling another process's height
    return time.monotonic() - started


def _load(net: Testnet, url: str, rate: float, seconds: float) -> int:
    """Offer the bench throughput's order flow at `rate` orders/s for `seconds`; the txs accepted."""
    keys = [KeyStore(net.nodes[0].home).private_key(account.name) for account in net.accounts]
    tx_rate = rate / ORDERS_PER_TX
    generator = Generator(
        plans(
            urls=[url],
            chain_id=net.chain_id,
            keys=keys,
            markets=MARKETS,
            processes=2,
            txs=int(tx_rate * seconds) + 100,
            batch=100,
            rate=tx_rate,
            transfer_share=0.0,
            seed=11,
            cancel_gap=max(1_000, int(tx_rate / 2 * 5)),
        )
    )
    try:
        generator.start()
        generator.go(seconds)
        return sum(sent.accepted_txs for sent in generator.results())
    finally:
        generator.close()


def bench_statesync(
    *,
    accounts: int,
    heights: int,
    snapshot_interval: int,
    load: float = 0.0,
    load_seconds: float = 0.0,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="derivd-bench-statesync-"))
    running: list[subprocess.Popen[bytes]] = []
    try:
        net = create_testnet(
            workdir / "net",
            1,
            2,
            base_port=free_base_port(3),
            chain_id="bench-statesync",
            accounts=TRADERS if load else 1,
            account_funds=TRADER_FUNDS,
            markets=MARKETS,
        )
        homes = [node.home for node in net.nodes]
        doc = load_genesis(homes[0] / "config" / "genesis.json")
        state = dict(doc.app_state)
        extra = [
            {"address": sha256(b"bench %d" % i)[:20].hex(), "balance": str(FUNDS)} for i in range(accounts)
        ]
        state["accounts"] = [*state.get("accounts", []), *extra]
        for home in homes:
            save_genesis(replace(doc, app_state=state), home / "config" / "genesis.json")
        fast = {
            "consensus.timeout_commit": "1ms",
            "storage.snapshot_interval": snapshot_interval,
            "storage.snapshot_keep_recent": 10,  # heights come fast: a snapshot must outlive its fetch
            "rpc.max_request_batch_size": 100,  # the load generator's batches
        }
        write_config(load_config(homes[0]).with_overrides(**fast))
        derivd = str(Path(sys.executable).parent / "derivd")

        def start(home: Path) -> subprocess.Popen[bytes]:
            log = open(home / "node.log", "wb")  # noqa: SIM115 - handed to the child
            process = subprocess.Popen([derivd, "start", "--home", str(home)], stdout=log, stderr=log)
            log.close()
            running.append(process)
            return process

        ports = [node.plan.rpc_port for node in net.nodes]
        validator = start(homes[0])
        _wait_height(validator, homes[0], ports[0], 2, timeout)
        sent = _load(net, f"http://127.0.0.1:{ports[0]}", load, load_seconds) if load and load_seconds else 0
        if load and load_seconds and not sent:
            raise RuntimeError("the validator accepted none of the load generator's txs")
        loaded_height = _height(ports[0])
        _wait_height(validator, homes[0], ports[0], heights, timeout)
        # the same chain at the node's own pace from here, so that both joiners chase a near target
        validator.terminate()
        validator.wait(30)
        write_config(load_config(homes[0]).with_overrides(**{"consensus.timeout_commit": "200ms"}))
        validator = start(homes[0])
        _wait_height(validator, homes[0], ports[0], heights + 1, timeout)
        trusted = _rpc(ports[0], "commit", height="1")["signed_header"]["commit"]["block_id"]["hash"]
        sync = {
            "statesync.enable": True,
            "statesync.rpc_servers": f"127.0.0.1:{ports[0]}",
            "statesync.trust_height": 1,
            "statesync.trust_hash": trusted,
            "statesync.discovery_time": "1s",
        }
        write_config(load_config(homes[1]).with_overrides(**sync))
        figures: dict[str, Any] = {
            "accounts": accounts,
            "snapshot_interval": snapshot_interval,
            "load_orders_per_second": load,
            "load_txs_accepted": sent,
            "loaded_heights": loaded_height if sent else 0,
        }
        for name, index in (("state_sync", 1), ("block_sync", 2)):
            target = _height(ports[0])
            process = start(homes[index])
            figures[f"{name}_seconds"] = round(
                _wait_height(process, homes[index], ports[index], target, timeout), 2
            )
            figures[f"{name}_target_height"] = target
            if name == "state_sync":
                figures["restored_height"] = (
                    int(_rpc(ports[1], "status")["sync_info"]["earliest_block_height"]) - 1
                )
            process.terminate()
            process.wait(30)
        figures["speedup"] = round(figures["block_sync_seconds"] / figures["state_sync_seconds"], 2)
        figures["target_speedup"] = 10
        return figures
    finally:
        for process in running:
            if process.poll() is None:
                process.terminate()
                process.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
