"""The load generator of `derivd bench throughput`: pre-signed order flow submitted from separate
processes over persistent HTTP connections, and a sink that measures the generator itself.

`Generator` starts `processes` submitter processes (spawned, so each has its own interpreter and
core share). Each owns a disjoint set of the trading keys (so one account's txs go out in nonce
order), builds and signs its txs with `node.orderflow.OrderFlow` and encodes them into JSON-RPC
batch requests of `batch` `broadcast_tx_sync` calls, all before the measured window. On `go`, it
sends its batches back to back over one keep-alive connection (httpx), paced to its share of
`rate` txs per second (0: as fast as the server answers), records when each batch left, and
counts each tx as accepted (check_tx code 0) or refused (another code or a JSON-RPC error). When its
txs run out before the window ends it stops early (`exhausted`); with `cycle` it sends them again
(only a sink accepts that).

`run_sink` serves a minimal HTTP/1.1 JSON-RPC endpoint that parses every batch and answers every
call with code 0 without looking at the tx: the generator against it measures what the generator
alone can offer (orders per second and its CPU seconds), on the same machine.
"""

from __future__ import annotations

import base64
import json
import multiprocessing
import socketserver
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import httpx

from execution.markets import Market
from node.orderflow import OrderFlow
from primitives.hashing import sha256
from primitives.keys import PrivateKey

REQUOTE_EVERY = 10
"""a trader's every 10th maker tx pulls its quotes first (`OrderFlow`): resting orders stay bounded"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """What one submitter process sends (module docstring)."""

    url: str
    chain_id: str
    keys: tuple[bytes, ...]
    """the traders' private keys (`PrivateKey.cometbft_bytes`)"""
    markets: tuple[Market, ...]
    seed: int
    nonce: int
    txs: int
    batch: int
    rate: float
    """txs per second this process offers; 0: no pacing"""
    transfer_share: float
    cancel_gap: int
    """txs between two `OrderFlow.end_block`: a cancel names an order placed at least this many
    txs earlier (it must be in a block by then, or check_tx refuses the cancel)"""
    cycle: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Sent:
    """What one submitter process did in the window."""

    submitted: list[tuple[bytes, float, int]]
    """(tx hash, `time.monotonic()` when its batch left, its orders) of every accepted tx"""
    accepted_txs: int
    accepted_orders: int
    refused: dict[str, tuple[int, str]]
    """why (the check_tx code, or the JSON-RPC or transport error) -> (txs, the first one's log)"""
    batches: int
    seconds: float
    """from go to the last answer"""
    cpu_seconds: float
    exhausted: bool


@dataclass(frozen=True, slots=True)
class _Batch:
    body: bytes
    hashes: tuple[bytes, ...]
    orders: tuple[int, ...]


def _prepare(plan: Plan) -> list[_Batch]:
    keys = [PrivateKey.from_cometbft_bytes(raw) for raw in plan.keys]
    flow = OrderFlow(
        keys=keys,
        markets=plan.markets,
        chain_id=plan.chain_id,
        seed=plan.seed,
        nonce=plan.nonce,
        transfer_share=plan.transfer_share,
        requote_every=REQUOTE_EVERY,
    )
    batches: list[_Batch] = []
    for start in range(0, plan.txs, plan.batch):
        txs = []
        for i in range(start, min(plan.txs, start + plan.batch)):
            if i % plan.cancel_gap == 0:
                flow.end_block()
            txs.append(flow.next_tx())
        calls = [
            {
                "jsonrpc": "2.0",
                "id": n,
                "method": "broadcast_tx_sync",
                "params": {"tx": base64.b64encode(tx.raw).decode()},
            }
            for n, tx in enumerate(txs)
        ]
        batches.append(
            _Batch(
                json.dumps(calls).encode(),
                tuple(sha256(tx.raw) for tx in txs),
                tuple(tx.orders for tx in txs),
            )
        )
    return batches


def _submit(plan: Plan, batches: list[_Batch], stop_at: float) -> Sent:
    submitted: list[tuple[bytes, float, int]] = []
    refused: dict[str, tuple[int, str]] = {}

    def refuse(why: str, log: str, txs: int = 1) -> None:
        count, first = refused.get(why, (0, log))
        refused[why] = (count + txs, first)

    accepted_txs = accepted_orders = sent_batches = 0
    cpu_start = time.process_time()
    started = time.monotonic()
    offered = 0  # txs sent so far, for pacing
    exhausted = False
    headers = {"content-type": "application/json"}
    with httpx.Client(timeout=30, headers=headers) as client:
        index = 0
        while True:
            now = time.monotonic()
            if now >= stop_at:
                break
            if index == len(batches):
                if not plan.cycle:
                    exhausted = True
                    break
                index = 0
            batch = batches[index]
            index += 1
            if plan.rate:
                due = started + offered / plan.rate
                if due > now:
                    time.sleep(due - now)  # pacing to the offered rate, not synchronisation
            left = time.monotonic()
            try:
                answers = client.post(plan.url, content=batch.body).json()
            except (httpx.HTTPError, ValueError) as exc:
                refuse(f"transport {type(exc).__name__}", str(exc), len(batch.hashes))
                continue
            sent_batches += 1
            offered += len(batch.hashes)
            if not isinstance(answers, list):
                answers = [answers] * len(batch.hashes)  # one error for the whole batch
            for answer, tx_hash, orders in zip(answers, batch.hashes, batch.orders, strict=False):
                result = answer.get("result") if isinstance(answer, dict) else None
                if isinstance(result, dict) and result.get("code") == 0:
                    submitted.append((tx_hash, left, orders))
                    accepted_txs += 1
                    accepted_orders += orders
                    continue
                if isinstance(result, dict):
                    refuse(f"code {result.get('code')}", str(result.get("log", "")))
                else:
                    error = answer.get("error", {}) if isinstance(answer, dict) else {}
                    refuse(f"rpc error {error.get('code')}", str(error.get("data") or error.get("message")))
    return Sent(
        submitted=submitted if not plan.cycle else [],
        accepted_txs=accepted_txs,
        accepted_orders=accepted_orders,
        refused=refused,
        batches=sent_batches,
        seconds=time.monotonic() - started,
        cpu_seconds=time.process_time() - cpu_start,
        exhausted=exhausted,
    )


def _submitter_main(plan: Plan, conn: Connection) -> None:
    """A submitter process: prepare, say ready, wait for the window's end time, submit, report."""
    try:
        batches = _prepare(plan)
        conn.send(("ready", sum(len(b.hashes) for b in batches)))
        stop_at = conn.recv()
        conn.send(("sent", _submit(plan, batches, stop_at)))
    except Exception as exc:  # reported to the parent, which raises it
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


@dataclass
class Generator:
    """The submitter processes of one run (module docstring)."""

    plans: list[Plan]
    _processes: list[Any] = field(default_factory=list)
    _conns: list[Connection] = field(default_factory=list)

    def start(self) -> int:
        """Start the processes and wait until each has signed and encoded its txs; how many."""
        context = multiprocessing.get_context("spawn")
        for plan in self.plans:
            parent, child = context.Pipe()
            process = context.Process(target=_submitter_main, args=(plan, child), daemon=True)
            process.start()
            child.close()
            self._processes.append(process)
            self._conns.append(parent)
        return sum(self._expect(conn, "ready") for conn in self._conns)

    def go(self, seconds: float) -> float:
        """Start sending now, for `seconds`; the `time.monotonic()` of the start."""
        started = time.monotonic()
        for conn in self._conns:
            conn.send(started + seconds)
        return started

    def results(self) -> list[Sent]:
        """Wait for every process's report (blocking)."""
        sent = [self._expect(conn, "sent") for conn in self._conns]
        self.close()
        return sent

    def close(self) -> None:
        for process in self._processes:
            process.join(10)
            if process.is_alive():
                process.kill()
        for conn in self._conns:
            conn.close()
        self._processes.clear()
        self._conns.clear()

    @staticmethod
    def _expect(conn: Connection, kind: str) -> Any:
        try:
            got, payload = conn.recv()
        except EOFError:
            raise RuntimeError("a load generator process died") from None
        if got == "error":
            raise RuntimeError(f"a load generator process failed: {payload}")
        if got != kind:
            raise RuntimeError(f"a load generator process said {got!r}, expected {kind!r}")
        return payload


def plans(
    *,
    urls: Sequence[str],
    chain_id: str,
    keys: Sequence[PrivateKey],
    markets: Sequence[Market],
    processes: int,
    txs: int,
    batch: int,
    rate: float,
    transfer_share: float,
    seed: int,
    cancel_gap: int,
    cycle: bool = False,
) -> list[Plan]:
    """`processes` plans over disjoint key sets, round-robin over `urls`, sharing `txs` and `rate`."""
    if processes < 1 or len(keys) < processes:
        raise ValueError(f"{processes} submitter processes need at least as many keys (have {len(keys)})")
    nonce = time.time_ns() // 1_000_000
    return [
        Plan(
            url=urls[i % len(urls)],
            chain_id=chain_id,
            keys=tuple(key.cometbft_bytes() for key in keys[i::processes]),
            markets=tuple(markets),
            seed=seed + i,
            nonce=nonce,
            txs=-(-txs // processes),
            batch=batch,
            rate=rate / processes,
            transfer_share=transfer_share,
            cancel_gap=cancel_gap,
            cycle=cycle,
        )
        for i in range(processes)
    ]


# -- the sink -------------------------------------------------------------------------------------


class _SinkHandler(socketserver.StreamRequestHandler):
    """HTTP/1.1 keep-alive: each POST's JSON-RPC calls answered with code 0."""

    def handle(self) -> None:
        while True:
            length = -1
            line = self.rfile.readline()
            if not line:
                return
            while line not in (b"\r\n", b"\n", b""):
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                line = self.rfile.readline()
            calls = json.loads(self.rfile.read(length)) if length > 0 else []
            answers = [
                {"jsonrpc": "2.0", "id": call.get("id"), "result": {"code": 0, "log": ""}}
                for call in (calls if isinstance(calls, list) else [calls])
            ]
            body = json.dumps(answers).encode()
            self.wfile.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                + body
            )


class _Sink(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _sink_main(conn: Connection) -> None:
    with _Sink(("127.0.0.1", 0), _SinkHandler) as server:
        conn.send(server.server_address[1])
        server.serve_forever()


def run_sink() -> tuple[Any, str]:
    """Start the sink in a process of its own; (the process, its URL). Kill the process to stop."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    process = context.Process(target=_sink_main, args=(child,), daemon=True)
    process.start()
    child.close()
    port = parent.recv()
    parent.close()
    return process, f"http://127.0.0.1:{port}"


def generator_capacity(
    *, keys: Sequence[PrivateKey], markets: Sequence[Market], processes: int, batch: int, seconds: float
) -> dict[str, float]:
    """The generator's own rate against the sink: orders and txs per second, CPU seconds."""
    sink, url = run_sink()
    try:
        generator = Generator(
            plans(
                urls=[url],
                chain_id="sink",
                keys=keys,
                markets=markets,
                processes=processes,
                txs=20 * batch * processes,
                batch=batch,
                rate=0,
                transfer_share=0,
                seed=1,
                cancel_gap=1_000,
                cycle=True,
            )
        )
        generator.start()
        generator.go(seconds)
        sent = generator.results()
    finally:
        sink.kill()
        sink.join()
    span = max(s.seconds for s in sent)
    return {
        "orders_per_s": sum(s.accepted_orders for s in sent) / span,
        "tx_per_s": sum(s.accepted_txs for s in sent) / span,
        "cpu_seconds": sum(s.cpu_seconds for s in sent),
        "seconds": span,
    }
