"""The load generator and `derivd bench throughput`: a temporary localnet of real `derivd`
processes, driven with signed transfers from many accounts through JSON-RPC.

Each worker owns accounts and submits `broadcast_tx_sync` calls back to back (nonces are
milliseconds, one more per transaction); a watcher polls the node for new blocks and matches
their transactions to submission times. Reported: committed tx/s over the measured window,
submit-to-commit latency p50 and p99 (as the client sees it), the mean block interval, and each
node's CPU seconds and resident memory, read from /proc.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from execution.tx import Transfer, build_tx
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.testnet import create_testnet, free_base_port
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from primitives.timefmt import parse_rfc3339

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass
class LoadResult:
    validators: int
    duration: float
    submitted: int = 0
    rejected: int = 0
    committed: int = 0
    latencies: list[float] = field(default_factory=list)
    block_times: list[int] = field(default_factory=list)
    nodes: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)

        def pct(p: float) -> float:
            return lat[min(len(lat) - 1, int(p * len(lat)))] if lat else 0.0

        intervals = [(b - a) / 1e9 for a, b in zip(self.block_times, self.block_times[1:], strict=False)]
        return {
            "validators": self.validators,
            "duration_s": self.duration,
            "submitted": self.submitted,
            "rejected": self.rejected,
            "committed": self.committed,
            "committed_tx_per_s": self.committed / self.duration if self.duration else 0.0,
            "latency_p50_s": pct(0.50),
            "latency_p99_s": pct(0.99),
            "block_interval_s": sum(intervals) / len(intervals) if intervals else 0.0,
            "nodes": self.nodes,
        }


def _proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MiB) of a process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return cpu, rss_kib / 1024


async def _rpc(client: httpx.AsyncClient, url: str, method: str, **params: Any) -> Any:
    response = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    payload = response.json()
    if "error" in payload:
        raise RuntimeError(f"{method}: {payload['error']}")
    return payload["result"]


async def _worker(
    client: httpx.AsyncClient,
    url: str,
    chain_id: str,
    key: PrivateKey,
    stop_at: float,
    sent: dict[bytes, float],
    result: LoadResult,
) -> None:
    nonce = time.time_ns() // 1_000_000
    recipient = Address(sha256(b"bench recipient" + key.public_key.raw)[:20])
    while trio.current_time() < stop_at:
        nonce += 1
        tx = build_tx(key, chain_id, nonce, [Transfer(recipient, 1)])
        submitted = time.monotonic()
        try:
            answer = await _rpc(client, url, "broadcast_tx_sync", tx=base64.b64encode(tx).decode())
        except (httpx.HTTPError, RuntimeError):
            result.rejected += 1
            continue
        if answer["code"] == 0:
            sent[sha256(tx)] = submitted
            result.submitted += 1
        else:
            result.rejected += 1


async def _watch(
    client: httpx.AsyncClient,
    url: str,
    start_height: int,
    stop_at: float,
    sent: dict[bytes, float],
    result: LoadResult,
) -> None:
    height = start_height
    while trio.current_time() < stop_at:
        status = await _rpc(client, url, "status")
        latest = int(status["sync_info"]["latest_block_height"])
        while height < latest:
            height += 1
            block = (await _rpc(client, url, "block", height=str(height)))["block"]
            seen = time.monotonic()
            result.block_times.append(parse_rfc3339(block["header"]["time"]))
            for raw in block["data"]["txs"]:
                submitted = sent.pop(sha256(base64.b64decode(raw)), None)
                if submitted is not None:
                    result.committed += 1
                    result.latencies.append(seen - submitted)
        await trio.sleep(0.05)  # polling pace


async def _drive(
    urls: list[str], chain_id: str, keys: list[PrivateKey], duration: float, result: LoadResult
) -> None:
    sent: dict[bytes, float] = {}
    limits = httpx.Limits(max_connections=len(keys) + 4)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start_height = int((await _rpc(client, urls[0], "status"))["sync_info"]["latest_block_height"])
        stop_at = trio.current_time() + duration
        async with trio.open_nursery() as nursery:
            for i, key in enumerate(keys):
                nursery.start_soon(_worker, client, urls[i % len(urls)], chain_id, key, stop_at, sent, result)
            nursery.start_soon(_watch, client, urls[0], start_height, stop_at + 3.0, sent, result)


def bench_throughput(
    validators: int, duration: float, accounts: int = 32, timeout_commit: str = "1s"
) -> dict[str, Any]:
    """Start a temporary localnet, load it for `duration` seconds, stop it, report."""
    workdir = Path(tempfile.mkdtemp(prefix="derivd-bench-"))
    processes: list[subprocess.Popen[bytes]] = []
    try:
        base_port = free_base_port(validators)
        net = create_testnet(
            workdir / "net", validators, base_port=base_port, accounts=accounts, chain_id="bench"
        )
        for node in net.nodes:
            write_config(
                load_config(node.home).with_overrides(**{"consensus.timeout_commit": timeout_commit})
            )
        derivd = str(Path(sys.executable).parent / "derivd")
        for node in net.nodes:
            log = open(node.home / "node.log", "wb")  # noqa: SIM115 - handed to the child
            processes.append(
                subprocess.Popen([derivd, "start", "--home", str(node.home)], stdout=log, stderr=log)
            )
            log.close()
        urls = [f"http://127.0.0.1:{node.plan.rpc_port}" for node in net.nodes]
        _wait_for_blocks(urls[0])
        store = KeyStore(net.nodes[0].home)
        keys = [store.private_key(account.name) for account in net.accounts]
        before = [_proc_usage(p.pid) for p in processes]
        result = LoadResult(validators, duration)
        trio.run(_drive, urls, net.chain_id, keys, duration, result)
        after = [_proc_usage(p.pid) for p in processes]
        result.nodes = [
            {
                "cpu_seconds": round(a[0] - b[0], 2),
                "cpu_percent": round(100 * (a[0] - b[0]) / duration, 1),
                "rss_mib": round(a[1], 1),
            }
            for a, b in zip(after, before, strict=True)
        ]
        return result.summary()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_blocks(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "status"}, timeout=5).json()
            if int(status["result"]["sync_info"]["latest_block_height"]) >= 2:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.2)  # polling pace while the localnet starts
    raise RuntimeError(f"the benchmark localnet produced no blocks within {timeout:.0f} s")
