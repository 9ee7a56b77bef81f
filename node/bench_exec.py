"""`derivd bench exec`: order actions per second through the application, serial and with worker
processes (`execution.scheduler`), on the same blocks.

Each run starts from a fresh database with `markets` copies of BTC-USD and `accounts` funded
traders, runs one untimed warm-up block (the worker pool gets its replica then), and times the
workload's blocks through `ExchangeApp.finalize_block`, `commit` and the write of the commit's
batch with fsync, as a node does. Signatures are verified inside the timed section, by the app's
batch verifier with an empty cache (a node whose check_tx saw the txs would find them cached).
Excluded: decoding and signing by the load generator (the blocks are built first), consensus, the
mempool and the network. The garbage collector runs under the node's policy (`node.gcpolicy`).

The mix is `node.orderflow`'s (makers' batches of placements and cancels, IOC takers; with
`--hot`, every trader on market 1, so every tx conflicts with every other), a block of it after
each `OrderFlow.end_block`, on `markets` copies of BTC-USD.

The figures: orders (placements and cancels) per second of wall time of each run, the speedup,
the share of txs run again after the lanes (conflicts), and the final app hash, which must be the
same in both runs (a mismatch is an error).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.app import FinalizeBlockRequest, InitChainRequest
from execution.app import ExchangeApp
from execution.genesis_state import default_exchange_app_state
from node.gcpolicy import apply_gc_policy
from node.orderflow import OrderFlow, copies_of_btc
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from storage.db import Database, WriteBatch

CHAIN_ID = "derivd-bench-exec"
GENESIS_TIME = 1_750_000_000 * 10**9
BLOCK_INTERVAL = 10**9
FUNDS = 10_000_000 * 10**6  # $10M per trader
WARM_UP_TXS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    warm_up: list[bytes]
    blocks: list[list[bytes]]
    orders: int
    app_state: bytes


def _generate(
    *, blocks: int, txs_per_block: int, accounts: int, markets: int, hot: bool, seed: int, orders_per_tx: int
) -> Workload:
    keys = [PrivateKey.from_seed(sha256(b"bench exec %d" % i)) for i in range(accounts)]
    book = copies_of_btc(markets)
    flow = OrderFlow(
        keys=keys,
        markets=book,
        chain_id=CHAIN_ID,
        seed=seed,
        nonce=GENESIS_TIME // 1_000_000,
        hot=hot,
        orders_per_tx=orders_per_tx,
    )
    generated: list[list[bytes]] = []
    orders = 0
    for _ in range(blocks + 1):
        flow.end_block()
        txs = [flow.next_tx() for _ in range(txs_per_block if generated else WARM_UP_TXS)]
        if generated:
            orders += sum(tx.orders for tx in txs)
        generated.append([tx.raw for tx in txs])
    state = default_exchange_app_state()
    state["markets"] = [market.to_json() for market in book]
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000_000}
    state["accounts"] = [{"address": str(k.address), "balance": str(FUNDS)} for k in keys]
    return Workload(
        warm_up=generated[0], blocks=generated[1:], orders=orders, app_state=json.dumps(state).encode()
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    seconds: float
    app_hash: bytes
    txs: int
    txs_failed: int
    fills: int
    parallel_blocks: int
    txs_run_again: int


def _block(app: ExchangeApp, db: Database, height: int, txs: list[bytes]) -> tuple[bytes, int, int]:
    request = FinalizeBlockRequest(
        height, GENESIS_TIME + height * BLOCK_INTERVAL, b"\x11" * 32, b"\x22" * 20, tuple(txs), ()
    )
    result = app.finalize_block(request)
    batch = WriteBatch()
    app.commit(batch)
    db.write(batch, sync=True)
    failed = sum(1 for r in result.tx_results if r.code != 0)
    fills = sum(1 for r in result.tx_results for event in r.events if event.type == "order_filled")
    return result.app_hash, failed, fills


def _run(workload: Workload, path: Path, workers: int, profile: bool) -> Run:
    db = Database(path)
    verifier = BatchVerifier()
    app = ExchangeApp(db, CHAIN_ID, verifier, workers=workers, worker_setup=apply_gc_policy)
    try:
        app.init_chain(InitChainRequest(CHAIN_ID, GENESIS_TIME, 1, (), workload.app_state))
        batch = WriteBatch()
        app.commit(batch)
        db.write(batch)
        _block(app, db, 1, workload.warm_up)  # untimed: the workers get their replica here
        profiler = cProfile.Profile() if profile else None
        apply_gc_policy()  # the node's, applied once start-up is done (node.gcpolicy)
        app_hash, failed, fills, parallel, again = b"", 0, 0, 0, 0
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        for height, block in enumerate(workload.blocks, start=2):
            app_hash, block_failed, block_fills = _block(app, db, height, block)
            failed += block_failed
            fills += block_fills
            parallel += app.last_block_parallel
            again += app.last_block_txs_run_again
        seconds = time.perf_counter() - started
        if profiler is not None:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    finally:
        app.close()
        verifier.close()
        db.close()
    txs = sum(len(block) for block in workload.blocks)
    return Run(
        seconds=seconds,
        app_hash=app_hash,
        txs=txs,
        txs_failed=failed,
        fills=fills,
        parallel_blocks=parallel,
        txs_run_again=again,
    )


def bench_exec(
    *,
    workers: int = 1,
    markets: int = 32,
    accounts: int = 2_000,
    hot: bool = False,
    blocks: int = 20,
    txs_per_block: int = 1_000,
    orders_per_tx: int = 4,
    seed: int = 1,
    profile: bool = False,
) -> dict[str, Any]:
    """Run the workload serially and with `workers` (module docstring)."""
    workload = _generate(
        blocks=blocks,
        txs_per_block=txs_per_block,
        accounts=accounts,
        markets=markets,
        hot=hot,
        seed=seed,
        orders_per_tx=orders_per_tx,
    )
    with tempfile.TemporaryDirectory(prefix="derivd-bench-exec-") as tmp:
        serial = _run(workload, Path(tmp) / "serial", 0, profile)
        parallel = _run(workload, Path(tmp) / "parallel", workers, profile)
    if serial.app_hash != parallel.app_hash or serial.txs_failed != parallel.txs_failed:
        raise RuntimeError("serial and parallel execution of the same blocks disagree")
    return {
        "workers": workers,
        "lanes": workers + 1,  # the main process runs one
        "markets": markets,
        "accounts": accounts,
        "mix": "hot" if hot else "low-conflict",
        "blocks": blocks,
        "txs_per_block": txs_per_block,
        "orders_per_maker_tx": orders_per_tx,
        "orders": workload.orders,
        "txs_failed": serial.txs_failed,
        "fills": serial.fills,
        "serial_seconds": serial.seconds,
        "seconds": parallel.seconds,
        "serial_orders_per_second": workload.orders / serial.seconds,
        "orders_per_second": workload.orders / parallel.seconds,
        "speedup": serial.seconds / parallel.seconds,
        "parallel_blocks": parallel.parallel_blocks,
        "reexecuted_fraction": parallel.txs_run_again / parallel.txs,
        "app_hash": serial.app_hash.hex().upper(),
        "app_hash_matches": True,
    }
