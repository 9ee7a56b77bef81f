"""`derivd bench exec`: order actions per second through the application, serial and with worker
processes (`execution.scheduler`), on the same blocks.

Each run starts from a fresh database with `markets` copies of BTC-USD and `accounts` funded
traders, runs one untimed warm-up block (the worker pool gets its replica then), and times the
workload's blocks through `ExchangeApp.finalize_block`, `commit` and the write of the commit's
batch with fsync, as a node does. Signatures are verified inside the timed section, by the app's
batch verifier with an empty cache (a node whose check_tx saw the txs would find them cached).
Excluded: decoding and signing by the load generator (the blocks are built first), consensus, the
mempool and the network. The garbage collector runs under the node's policy (`node.gcpolicy`).

The mix, per trader: each trades only its home market (trader i: market i mod `markets`; with
`--hot`, every trader trades market 1, so every tx conflicts with every other). 25% of the txs are
takers, one IOC order crossing the mid by 5 ticks; the others are market makers' batches of
`orders_per_tx` actions: placements (a quarter post-only), half within 5 ticks of the mid and half
8 to 40 ticks away, and cancels by client id of the trader's far orders of earlier blocks (40% of
a batch's actions once it has some). The blocks come from `random.Random(seed)`.

The figures: orders (placements and cancels) per second of wall time of each run, the speedup,
the share of txs run again after the lanes (conflicts), and the final app hash, which must be the
same in both runs (a mismatch is an error).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import random
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from consensus.app import FinalizeBlockRequest, InitChainRequest
from execution.app import ExchangeApp
from execution.genesis_state import default_exchange_app_state
from execution.markets import Market, default_markets
from execution.tx import Action, CancelOrder, PlaceOrder, build_tx
from node.gcpolicy import apply_gc_policy
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from storage.db import Database, WriteBatch

CHAIN_ID = "derivd-bench-exec"
GENESIS_TIME = 1_750_000_000 * 10**9
BLOCK_INTERVAL = 10**9
FUNDS = 10_000_000 * 10**6  # $10M per trader
TAKER_SHARE = 0.25  # of txs: one IOC order crossing the mid by TAKER_CROSS_TICKS
TAKER_CROSS_TICKS = 5
CANCEL_SHARE = 0.4  # of a maker's actions, when it has deep orders to cancel
NEAR_SHARE = 0.5  # of placements: within TAKER_CROSS_TICKS of the mid (the others 8-40 ticks away)
WARM_UP_TXS = 8


@dataclass(frozen=True, slots=True, kw_only=True)
class Workload:
    warm_up: list[bytes]
    blocks: list[list[bytes]]
    orders: int
    app_state: bytes


def bench_markets(count: int) -> list[Market]:
    """`count` markets with BTC-USD's parameters, ids 1..count."""
    btc = default_markets()[0]
    return [replace(btc, market_id=i, ticker=f"M{i}-USD") for i in range(1, count + 1)]


def _generate(
    *, blocks: int, txs_per_block: int, accounts: int, markets: int, hot: bool, seed: int, orders_per_tx: int
) -> Workload:
    rng = random.Random(seed)
    keys = [PrivateKey.from_seed(sha256(b"bench exec %d" % i)) for i in range(accounts)]
    book = bench_markets(markets)
    nonce = GENESIS_TIME // 1_000_000
    deep: list[list[int]] = [[] for _ in range(accounts)]  # client ids of far orders
    placed: list[tuple[int, int]] = []  # (trader, client id) of this block
    next_client = [1] * accounts
    generated: list[list[bytes]] = []
    orders = 0
    for _ in range(blocks + 1):
        # cancels name far orders of earlier blocks only: within a block, cancels run first
        for trader, client_id in placed:
            deep[trader].append(client_id)
        placed.clear()
        txs: list[bytes] = []
        for _ in range(txs_per_block if generated else WARM_UP_TXS):
            trader = rng.randrange(accounts)
            market = book[0] if hot else book[trader % markets]
            tick = market.subticks_per_tick
            actions: list[Action] = []
            if rng.random() < TAKER_SHARE:
                side = rng.randrange(2)
                cross = TAKER_CROSS_TICKS * tick
                price = market.initial_price + (cross if side == 0 else -cross)
                size = market.step_base_quantums * rng.randint(1, 20)
                actions.append(PlaceOrder(market.market_id, side, size, price, 1))
            wanted = 1 if actions else orders_per_tx
            while len(actions) < wanted:
                if deep[trader] and rng.random() < CANCEL_SHARE:
                    client_id = deep[trader].pop(rng.randrange(len(deep[trader])))
                    actions.append(CancelOrder(market.market_id, 1, client_id))
                    continue
                side = rng.randrange(2)
                near = rng.random() < NEAR_SHARE
                offset = tick * (rng.randint(1, TAKER_CROSS_TICKS) if near else rng.randint(8, 40))
                price = market.initial_price - offset if side == 0 else market.initial_price + offset
                client_id = next_client[trader]
                next_client[trader] += 1
                tif = 3 if rng.random() < 0.25 else 0
                size = market.step_base_quantums * rng.randint(1, 10)
                actions.append(PlaceOrder(market.market_id, side, size, price, tif, 0, client_id))
                if not near:  # near orders may fill, so only deep ones are cancelled later
                    placed.append((trader, client_id))
            nonce += 1
            txs.append(build_tx(keys[trader], CHAIN_ID, nonce, actions))
            if generated:
                orders += len(actions)
        generated.append(txs)
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
