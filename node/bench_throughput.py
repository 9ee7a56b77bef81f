"""`derivd bench throughput`: a temporary localnet of real `derivd` processes under the load
generator's order flow (`node.loadgen`), measured from the blocks it commits.

Steps: the generator's own capacity against the sink (`loadgen.generator_capacity`); a localnet of
`validators` nodes (`node.testnet`: `markets` copies of BTC-USD, `accounts` funded traders, the
nodes' `timeout_commit`, `workers`, other `settings` and a JSON-RPC batch size of `batch`); the
submitter processes sign and encode everything (untimed); then
`duration` seconds of load, spread over the nodes' RPC endpoints, while a watcher reads every new
block (`block`). After the window it waits until every accepted tx is in a block (at most
`DRAIN_SECONDS`), then reads the blocks' results (`block_results`: the codes; not during the
window, where encoding them took a fifth of a node's CPU). A node that prunes blocks
(`retain_blocks`) has lost the results of the early ones by then: their txs are counted apart
(`results_pruned_txs`), neither committed nor failed.

Figures, all of the generator's txs found in blocks: committed orders and txs (code 0) per second
over the span from the start of the load to the last block that held one of them; the failed txs
by code; submit-to-commit latency p50/p99 (the batch leaving the generator to the watcher seeing
the block); the mean block interval (header times); accepted txs never seen in a block (`lost`:
a node's recheck evicted them, `evicted_txs` of its metrics, or they are still pending);
each node's CPU seconds and resident memory, its worker processes included (/proc), and the size
of its data directory at the start of the load and after each tenth of it (`disk_mib`: with
`--set storage.retain_blocks=N --set storage.state_versions=N`, whether pruning bounds it); the
generator's CPU in the window and its capacity. A tqdm line shows the height and the txs seen in
blocks while it runs.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio
from tqdm import tqdm

from node.config import ConsensusConfig, format_duration, load_config, write_config
from node.keystore import KeyStore
from node.loadgen import Generator, Sent, generator_capacity, plans
from node.orderflow import copies_of_btc
from node.testnet import create_testnet, free_base_port
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from primitives.timefmt import parse_rfc3339

CLK_TCK = os.sysconf("SC_CLK_TCK")
DRAIN_SECONDS = 15.0
FUNDS = 10_000_000 * 10**6  # $10M per trader
CAPACITY_SECONDS = 3.0
UNPACED_BUDGET = 20_000.0
"""orders (or transfers) per second of load signed in advance when the rate is not paced"""
CANCEL_GAP_SECONDS = 5.0
"""a cancel names an order placed this long before (at the offered rate)"""
ORDERS_PER_TX = 3.25  # the flow's mean (a quarter of takers with one order, makers with four)


@dataclass
class _Seen:
    """What the watcher saw: tx hash -> (monotonic time its block was seen, its result code, -1
    until `_codes` has read it), block times, each block's txs."""

    txs: dict[bytes, tuple[float, int]] = field(default_factory=dict)
    header_times: list[int] = field(default_factory=list)
    blocks: dict[int, list[bytes]] = field(default_factory=dict)
    """height -> the hashes of its txs"""
    height: int = 0
    expected: set[bytes] | None = None
    """the accepted txs, once the generator has reported them"""

    def done(self) -> bool:
        return self.expected is not None and self.expected.issubset(self.txs)


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (a node's execution workers)."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            pids.extend(_tree(int(child)))
    return pids


def _proc_usage(pid: int) -> tuple[float, float]:
    """(CPU seconds, resident MiB) of a process and its descendants."""
    cpu = rss_kib = 0.0
    for member in _tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{member}/status").read_text().splitlines()
        except FileNotFoundError:  # ended meanwhile
            continue
        cpu += (int(fields[11]) + int(fields[12])) / CLK_TCK
        rss_kib += sum(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return cpu, rss_kib / 1024


async def _rpc(client: httpx.AsyncClient, url: str, method: str, **params: Any) -> Any:
    response = await client.post(url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": params})
    payload = response.json()
    if "error" in payload:
        raise RuntimeError(f"{method}: {payload['error']}")
    return payload["result"]


async def _watch(
    url: str, start_height: int, started: float, stop_at: float, seen: _Seen, progress: tqdm[Any]
) -> None:
    """Read every block after `start_height` until `stop_at`, then until every accepted tx is in a
    block (at most `DRAIN_SECONDS` more). Only `block` is read here: the results (`_codes`) are
    read after the window, so that the node does not spend the window encoding them."""
    seen.height = start_height
    async with httpx.AsyncClient(timeout=30) as client:
        while True:
            now = time.monotonic()
            status = await _rpc(client, url, "status")
            latest = int(status["sync_info"]["latest_block_height"])
            while seen.height < latest:
                height = seen.height + 1
                block = (await _rpc(client, url, "block", height=str(height)))["block"]
                at = time.monotonic()
                seen.header_times.append(parse_rfc3339(block["header"]["time"]))
                seen.blocks[height] = [sha256(base64.b64decode(raw)) for raw in block["data"]["txs"] or []]
                for tx_hash in seen.blocks[height]:
                    seen.txs[tx_hash] = (at, -1)
                seen.height = height
            progress.n = round(min(now, stop_at) - started, 1)
            progress.set_postfix(height=seen.height, txs_in_blocks=len(seen.txs))
            if now >= stop_at and (seen.done() or now >= stop_at + DRAIN_SECONDS):
                return
            await trio.sleep(0.05)  # polling pace


async def _codes(url: str, seen: _Seen) -> None:
    """The result code of every tx `_watch` saw, from `block_results`; those of heights the node
    has pruned meanwhile (`[storage] retain_blocks`) stay unknown (-1)."""
    async with httpx.AsyncClient(timeout=30) as client:
        for height, hashes in seen.blocks.items():
            try:
                results = await _rpc(client, url, "block_results", height=str(height))
            except RuntimeError:
                if height < int((await _rpc(client, url, "status"))["sync_info"]["earliest_block_height"]):
                    continue  # pruned
                raise
            codes = [int(r.get("code", 0)) for r in results["txs_results"] or []]
            for tx_hash, code in zip(hashes, codes, strict=True):
                seen.txs[tx_hash] = (seen.txs[tx_hash][0], code)


async def _measure(
    generator: Generator, url: str, start_height: int, duration: float, progress: tqdm[Any]
) -> tuple[float, list[Sent], _Seen]:
    """Run the window: the generator sends while the watcher reads the blocks (`_watch`)."""
    seen = _Seen()
    started = generator.go(duration)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_watch, url, start_height, started, started + duration, seen, progress)
        sent = await trio.to_thread.run_sync(generator.results)
        seen.expected = {tx_hash for report in sent for tx_hash, _, _ in report.submitted}
    return started, sent, seen


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else 0.0


def _figures(sent: list[Sent], seen: _Seen, started: float, duration: float) -> dict[str, Any]:
    committed_txs = committed_orders = pruned = 0
    failed: dict[str, int] = {}
    latencies: list[float] = []
    last = started
    accepted = 0
    for report in sent:
        accepted += report.accepted_txs
        for tx_hash, left, orders in report.submitted:
            found = seen.txs.get(tx_hash)
            if found is None:
                continue
            at, code = found
            latencies.append(at - left)
            last = max(last, at)
            if code == 0:
                committed_txs += 1
                committed_orders += orders
            elif code == -1:
                pruned += 1
            else:
                failed[str(code)] = failed.get(str(code), 0) + 1
    span = max(last - started, 1e-9)
    refused: dict[str, dict[str, Any]] = {}
    for report in sent:
        for why, (count, log) in report.refused.items():
            entry = refused.setdefault(why, {"txs": 0, "example": log})
            entry["txs"] += count
    intervals = [(b - a) / 1e9 for a, b in zip(seen.header_times, seen.header_times[1:], strict=False)]
    included = committed_txs + sum(failed.values()) + pruned
    return {
        "committed_orders_per_s": committed_orders / span,
        "committed_tx_per_s": committed_txs / span,
        "latency_p50_s": _percentile(latencies, 0.50),
        "latency_p99_s": _percentile(latencies, 0.99),
        "block_interval_s": sum(intervals) / len(intervals) if intervals else 0.0,
        "committed_orders": committed_orders,
        "committed_txs": committed_txs,
        "failed_txs_by_code": failed,
        "results_pruned_txs": pruned,
        "accepted_orders_per_s": sum(r.accepted_orders for r in sent) / duration,
        "accepted_tx_per_s": sum(r.accepted_txs for r in sent) / duration,
        "accepted_txs": accepted,
        "refused_txs": refused,
        "lost_txs": accepted - included,
        "generator_exhausted": any(r.exhausted for r in sent),
        "generator_cpu_seconds": round(sum(r.cpu_seconds for r in sent), 2),
        "span_s": span,
        "blocks": len(seen.header_times),
    }


def bench_throughput(
    *,
    validators: int,
    duration: float,
    mix: str = "orders",
    markets: int = 8,
    accounts: int = 1_000,
    processes: int = 2,
    batch: int = 100,
    rate: float = 12_000.0,
    timeout_commit: str = format_duration(ConsensusConfig().timeout_commit),
    workers: str = "auto",
    settings: dict[str, str] | None = None,
    book_subscribers: int = 0,
    book_stream_on: str = "websocket",
) -> dict[str, Any]:
    """Measure the generator, start a temporary localnet, load it, stop it, report (module docstring).
    `settings`: more config.toml keys for every node ("mempool.recheck": "false").
    `rate`: offered orders per second (for `mix` "transfers": txs per second); 0: as fast as accepted.
    `book_subscribers`: WebSocket clients of the first market's book stream on node 0, in
    `SUBSCRIBER_PROCESSES` processes of `node.bench_streams`, through the load; `book_stream_on`:
    "websocket" (the second listener, `[rpc] websocket_laddr`) or "rpc" (the RPC port's)."""
    book = copies_of_btc(markets)
    transfer_share = 1.0 if mix == "transfers" else 0.0
    per_tx = 1.0 if mix == "transfers" else ORDERS_PER_TX
    workdir = Path(tempfile.mkdtemp(prefix="derivd-bench-"))
    processes_run: list[subprocess.Popen[bytes]] = []
    try:
        net = create_testnet(
            workdir / "net",
            validators,
            base_port=free_base_port(validators),
            accounts=accounts,
            account_funds=FUNDS,
            chain_id="bench",
            markets=book,
        )
        store = KeyStore(net.nodes[0].home)
        keys: list[PrivateKey] = [store.private_key(account.name) for account in net.accounts]
        capacity = generator_capacity(
            keys=keys, markets=book, processes=processes, batch=batch, seconds=CAPACITY_SECONDS
        )
        for node in net.nodes:
            overrides = {
                "consensus.timeout_commit": timeout_commit,
                "rpc.max_request_batch_size": batch,
                "execution.workers": workers if workers == "auto" else int(workers),
                **_subscriber_room(book_subscribers),
                **(settings or {}),
            }
            write_config(load_config(node.home).with_overrides(**overrides))
        derivd = str(Path(sys.executable).parent / "derivd")
        for node in net.nodes:
            log = open(node.home / "node.log", "wb")  # noqa: SIM115 - handed to the child
            processes_run.append(
                subprocess.Popen([derivd, "start", "--home", str(node.home)], stdout=log, stderr=log)
            )
            log.close()
        urls = [f"http://127.0.0.1:{node.plan.rpc_port}" for node in net.nodes]
        _wait_for_blocks(urls[0])
        tx_rate = (rate or UNPACED_BUDGET) / per_tx
        generator = Generator(
            plans(
                urls=urls,
                chain_id=net.chain_id,
                keys=keys,
                markets=book,
                processes=processes,
                txs=int(tx_rate * duration * 1.1) + batch,
                batch=batch,
                rate=tx_rate if rate else 0,
                transfer_share=transfer_share,
                seed=7,
                cancel_gap=max(1_000, int(tx_rate / processes * CANCEL_GAP_SECONDS)),
            )
        )
        plan = net.nodes[0].plan
        stream_url = (
            f"ws://127.0.0.1:{plan.websocket_port}/websocket"
            if book_stream_on == "websocket"
            else f"ws://127.0.0.1:{plan.rpc_port}/websocket"
        )
        followers = _start_followers(
            stream_url, book[0].ticker, book_subscribers, duration + FOLLOW_MARGIN_SECONDS, processes_run
        )
        try:
            generator.start()
            start_height = _latest_height(urls[0])
            before = [_proc_usage(p.pid) for p in processes_run[: len(net.nodes)]]
            sent_before = [_scrape(node.plan.metrics_port)[1] for node in net.nodes]
            disk = _DiskSampler([node.home / "data" for node in net.nodes], duration / DISK_SAMPLES)
            disk.start()
            with tqdm(total=duration, unit="s", desc=f"load {mix}", leave=False, disable=None) as progress:
                started, sent, seen = trio.run(_measure, generator, urls[0], start_height, duration, progress)
            disk_mib = disk.stop()
        finally:
            generator.close()
        after = [_proc_usage(p.pid) for p in processes_run[: len(net.nodes)]]
        scraped = [_scrape(node.plan.metrics_port) for node in net.nodes]
        trio.run(_codes, urls[0], seen)
        figures = _figures(sent, seen, started, duration)
        span = figures["span_s"]
        return {
            "book_stream": _followed(followers, net.nodes[0].plan.metrics_port) if followers else None,
            "validators": validators,
            "mix": mix,
            "duration_s": duration,
            "markets": markets,
            "accounts": accounts,
            "rate_offered": rate,
            "timeout_commit": timeout_commit,
            "execution_workers": workers,
            "settings": settings or {},
            **figures,
            "generator_capacity_orders_per_s": capacity["orders_per_s"],
            "generator_capacity_tx_per_s": capacity["tx_per_s"],
            "generator_capacity_cpu_seconds": round(capacity["cpu_seconds"], 2),
            "generator_processes": processes,
            "nodes": [
                {
                    "cpu_seconds": round(a[0] - b[0], 2),
                    "cpu_percent": round(100 * (a[0] - b[0]) / span, 1),
                    "rss_mib": round(a[1], 1),
                    "disk_mib": sizes,
                    "evicted_txs": evicted,
                    "p2p_sent_mib": {
                        name: round((sent.get(channel, 0) - sent_was.get(channel, 0)) / 2**20, 2)
                        for name, channel in P2P_CHANNELS.items()
                    },
                }
                for a, b, (evicted, sent), sent_was, sizes in zip(
                    after, before, scraped, sent_before, disk_mib, strict=True
                )
            ],
        }
    finally:
        for process in processes_run:
            process.send_signal(signal.SIGTERM)
        for process in processes_run:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


DISK_SAMPLES = 10
"""samples of the nodes' data directory sizes after the first, evenly over the load"""

SUBSCRIBER_PROCESSES = 2
FOLLOW_MARGIN_SECONDS = 5.0
"""the subscribers listen this much longer than the load (the drain's blocks too)"""


def _subscriber_room(count: int) -> dict[str, int]:
    """Config keys that let `count` WebSocket subscribers in beside the RPC's other clients."""
    if count <= 0:
        return {}
    return {
        "rpc.max_subscription_clients": max(100, count),
        "rpc.max_open_connections": max(900, count + 100),
    }


def _start_followers(
    url: str, market: str, count: int, seconds: float, processes_run: list[subprocess.Popen[bytes]]
) -> list[subprocess.Popen[bytes]]:
    """`count` book-stream subscribers in `SUBSCRIBER_PROCESSES` processes, once all of them have
    their snapshot (their stdout's first line)."""
    if count <= 0:
        return []
    shares = [
        count // SUBSCRIBER_PROCESSES + (i < count % SUBSCRIBER_PROCESSES)
        for i in range(SUBSCRIBER_PROCESSES)
    ]
    followers = [
        subprocess.Popen(
            [sys.executable, "-m", "node.bench_streams", url, market, str(share), str(seconds)],
            stdout=subprocess.PIPE,
        )
        for share in shares
        if share
    ]
    processes_run.extend(followers)
    for follower in followers:
        assert follower.stdout is not None
        line = follower.stdout.readline().strip()
        if line != b"ready":
            raise RuntimeError(f"a book-stream subscriber process did not subscribe: {line[-500:]!r}")
    return followers


def _followed(followers: list[subprocess.Popen[bytes]], metrics_port: int) -> dict[str, Any]:
    """The subscribers' figures: latency from the node's commit to a subscriber reading the
    delta (p50/p99/max, ms), messages, sequence gaps, dropped connections, their CPU; and the
    node's share, from its `rpc_stream_delivery_seconds` histogram: the bucket bounds (ms) that
    hold the median and the 99th percentile of its deliveries (queued to sent)."""
    reports = []
    for follower in followers:
        out, _ = follower.communicate(timeout=120)
        reports.append(json.loads(out.decode().splitlines()[-1]))
    latencies = sorted(ns / 1e6 for report in reports for ns in report["latencies_ns"])
    messages = sum(r["messages"] for r in reports)
    return {
        "subscribers": sum(r["snapshots"] for r in reports),
        "messages": messages,
        "latency_p50_ms": round(_percentile(latencies, 0.5), 1) if latencies else None,
        "latency_p99_ms": round(_percentile(latencies, 0.99), 1) if latencies else None,
        "latency_max_ms": round(latencies[-1], 1) if latencies else None,
        "gaps": sum(r["gaps"] for r in reports),
        "closed": sum(r["closed"] for r in reports),
        "failed": [f for r in reports for f in r["failed"]],
        "subscriber_cpu_seconds": round(sum(r["cpu_seconds"] for r in reports), 1),
        "subscriber_cpu_us_per_message": (
            round(sum(r["cpu_seconds"] for r in reports) / messages * 1e6, 1) if messages else None
        ),
        "subscriber_processes": len(reports),
        **_delivery(metrics_port),
    }


def _delivery(metrics_port: int) -> dict[str, Any]:
    buckets: list[tuple[float, float]] = []
    for line in httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text.splitlines():
        name, _, value = line.rpartition(" ")
        if name.split("{")[0].endswith("_rpc_stream_delivery_seconds_bucket"):
            bound = name.partition('le="')[2].partition('"')[0]
            buckets.append((float(bound), float(value)))
    total = buckets[-1][1] if buckets else 0.0

    def bound_ms(share: float) -> float | None:
        return next((round(le * 1000, 1) for le, count in buckets if total and count >= share * total), None)

    return {"node_delivery_p50_le_ms": bound_ms(0.5), "node_delivery_p99_le_ms": bound_ms(0.99)}


def _disk_mib(path: Path) -> float:
    """The size of the files under `path` (a file LevelDB removes meanwhile counts 0)."""
    total = 0
    for file in path.rglob("*"):
        with contextlib.suppress(FileNotFoundError):
            total += file.stat().st_size if file.is_file() else 0
    return round(total / 2**20, 1)


class _DiskSampler(threading.Thread):
    """Samples the sizes of `paths` now and every `interval` seconds until stopped."""

    def __init__(self, paths: list[Path], interval: float) -> None:
        super().__init__(daemon=True)
        self.paths, self.interval = paths, interval
        self.samples: list[list[float]] = [[_disk_mib(path) for path in paths]]
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.interval) and len(self.samples) <= DISK_SAMPLES:
            self.samples.append([_disk_mib(path) for path in self.paths])

    def stop(self) -> list[list[float]]:
        """Each path's samples."""
        self._done.set()
        self.join()
        return [list(column) for column in zip(*self.samples, strict=True)]


P2P_CHANNELS = {"consensus_data": "0x21", "consensus_votes": "0x22", "mempool": "0x30"}
"""the channels whose bytes sent the report shows"""


def _scrape(metrics_port: int) -> tuple[int, dict[str, int]]:
    """The node's `mempool_evicted_txs` counter (txs its recheck dropped) and its bytes sent to
    all peers by channel id (as the metric labels it: "0x21")."""
    url = f"http://127.0.0.1:{metrics_port}/metrics"
    evicted: int | None = None
    sent: dict[str, int] = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        metric = name.split("{")[0]
        if metric.endswith("_mempool_evicted_txs"):
            evicted = int(float(value))
        elif metric.endswith("_p2p_peer_send_bytes_total"):
            channel = name.partition('chID="')[2].partition('"')[0]
            sent[channel] = sent.get(channel, 0) + int(float(value))
    if evicted is None:
        raise RuntimeError(f"{url}: no mempool_evicted_txs counter")
    return evicted, sent


def _latest_height(url: str) -> int:
    status = httpx.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "status"}, timeout=5).json()
    return int(status["result"]["sync_info"]["latest_block_height"])


def _wait_for_blocks(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _latest_height(url) >= 2:
                return
        except (httpx.HTTPError, KeyError, ValueError):
            pass
        time.sleep(0.2)  # polling pace while the localnet starts
    raise RuntimeError(f"the benchmark localnet produced no blocks within {timeout:.0f} s")
