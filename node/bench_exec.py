"""`derivd bench exec`: order actions per second through the application, on one core.

Pre-built blocks of signed order txs (one order action each) are executed through
`ExchangeApp.finalize_block` and `commit`, the commit's batch written to LevelDB (without fsync,
whose cost is the disk's, not execution's), as a node does. The signatures are verified once
before the timer starts (the batch verifier's cache then answers for them, as it does for txs that
check_tx admitted), so the figure is execution's own cost: decoding, nonces, validation, margin,
matching, settlement, state views, the app hash and the batch. The garbage collector runs under
the node's policy (`node.gcpolicy`), applied once start-up is done, as a node applies it.

The mix, for `accounts` traders on BTC-USD (70%) and ETH-USD (30%) around a fixed oracle price:
25% of the txs are takers, one IOC order crossing the mid by 5 ticks; the others are market
makers' batches of `orders_per_tx` actions (1 reproduces one order per tx): placements (a quarter
post-only), half of them within 5 ticks of the mid (they get filled) and half 8 to 40 ticks away,
and cancels by client id of the sender's far orders (40% of a batch's actions once it has some).
No action is meant to fail (a failing batch would be rolled back, book included; the counts of
failed txs are reported). The blocks are generated with `random.Random(seed)`; the figure counts
order actions (placements and cancels).

The same blocks are executed twice, each time on a fresh database: the app hash of every block
must be the same in both runs (it is reported, and a mismatch is an error). The figures are the
faster run's: orders per second of wall time, and orders per CPU second of the process (the
one-core figure when other work shares the machine's cores).
"""

from __future__ import annotations

import cProfile
import json
import pstats
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.app import FinalizeBlockRequest, InitChainRequest
from execution.app import ExchangeApp
from execution.genesis_state import default_exchange_app_state
from execution.markets import default_markets
from execution.tx import Action, CancelOrder, PlaceOrder, Tx, build_tx
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


@dataclass(frozen=True, slots=True)
class Workload:
    blocks: list[list[bytes]]
    orders: int
    app_state: bytes


def _generate(blocks: int, txs_per_block: int, accounts: int, seed: int, orders_per_tx: int) -> Workload:
    rng = random.Random(seed)
    keys = [PrivateKey.from_seed(sha256(b"bench exec %d" % i)) for i in range(accounts)]
    markets = default_markets()
    nonce = GENESIS_TIME // 1_000_000
    deep: list[list[tuple[int, int]]] = [[] for _ in range(accounts)]  # (market, client id)
    placed: list[tuple[int, int, int]] = []  # (trader, market, client id) of this block
    next_client = [1] * accounts
    out: list[list[bytes]] = []
    orders = 0
    for _ in range(blocks):
        # cancels name far orders of earlier blocks only: within a block, cancels run first
        for trader, market_id, client_id in placed:
            deep[trader].append((market_id, client_id))
        placed.clear()
        txs: list[bytes] = []
        for _ in range(txs_per_block):
            trader = rng.randrange(accounts)
            actions: list[Action] = []
            if rng.random() < TAKER_SHARE:
                market = markets[0] if rng.random() < 0.7 else markets[1]
                side = rng.randrange(2)
                cross = TAKER_CROSS_TICKS * market.subticks_per_tick
                price = market.initial_price + (cross if side == 0 else -cross)
                size = market.step_base_quantums * rng.randint(1, 20)
                actions.append(PlaceOrder(market.market_id, side, size, price, 1))
            wanted = 1 if actions else orders_per_tx
            while len(actions) < wanted:
                market = markets[0] if rng.random() < 0.7 else markets[1]
                tick = market.subticks_per_tick
                if deep[trader] and rng.random() < CANCEL_SHARE:
                    market_id, client_id = deep[trader].pop(rng.randrange(len(deep[trader])))
                    actions.append(CancelOrder(market_id, 1, client_id))
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
                    placed.append((trader, market.market_id, client_id))
            nonce += 1
            txs.append(build_tx(keys[trader], CHAIN_ID, nonce, actions))
            orders += len(actions)
        out.append(txs)
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000_000}
    state["accounts"] = [{"address": str(k.address), "balance": str(FUNDS)} for k in keys]
    return Workload(out, orders, json.dumps(state).encode())


def _run(workload: Workload, path: Path, profile: bool) -> tuple[float, float, list[bytes], dict[str, int]]:
    db = Database(path)
    verifier = BatchVerifier(workers=1)
    app = ExchangeApp(db, CHAIN_ID, verifier)
    app.init_chain(InitChainRequest(CHAIN_ID, GENESIS_TIME, 1, (), workload.app_state))
    batch = WriteBatch()
    app.commit(batch)
    db.write(batch)
    # verify every signature once, before the timer (check_tx would have)
    for txs in workload.blocks:
        decoded = [Tx.decode(raw) for raw in txs]
        assert all(verifier.verify_batch([tx.signed_item(CHAIN_ID) for tx in decoded]))
    hashes: list[bytes] = []
    counts = {"ok": 0, "failed": 0, "fills": 0}
    profiler: Any = None
    if profile:
        profiler = cProfile.Profile()
    apply_gc_policy()  # the node's, applied once start-up is done (node.gcpolicy)
    started = time.perf_counter()
    cpu_started = time.process_time()
    if profiler is not None:
        profiler.enable()
    for height, txs in enumerate(workload.blocks, start=1):
        request = FinalizeBlockRequest(
            height, GENESIS_TIME + height * BLOCK_INTERVAL, b"\x11" * 32, b"\x22" * 20, tuple(txs), ()
        )
        result = app.finalize_block(request)
        batch = WriteBatch()
        app.commit(batch)
        db.write(batch, sync=False)
        hashes.append(result.app_hash)
        for tx_result in result.tx_results:
            counts["ok" if tx_result.code == 0 else "failed"] += 1
            counts["fills"] += sum(1 for event in tx_result.events if event.type == "order_filled")
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    if profiler is not None:
        profiler.disable()
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
    counts["resting_at_end"] = sum(len(app.books.book(m.market_id)) for m in app.books.markets())
    verifier.close()
    db.close()
    return elapsed, cpu, hashes, counts


def bench_exec(
    blocks: int = 20,
    txs_per_block: int = 1_000,
    accounts: int = 500,
    seed: int = 1,
    profile: bool = False,
    orders_per_tx: int = 4,
) -> dict[str, Any]:
    """Run the workload twice on fresh databases; the figures of the faster run."""
    workload = _generate(blocks, txs_per_block, accounts, seed, orders_per_tx)
    runs = []
    with tempfile.TemporaryDirectory(prefix="derivd-bench-exec-") as tmp:
        for attempt in range(2):
            runs.append(_run(workload, Path(tmp) / f"run{attempt}", profile and attempt == 0))
    (first, cpu_a, hashes_a, counts), (second, cpu_b, hashes_b, counts_b) = runs
    if hashes_a != hashes_b or counts != counts_b:
        raise RuntimeError("the two runs of the same blocks disagree: execution is not deterministic")
    best = min(first, second)
    best_cpu = min(cpu_a, cpu_b)
    return {
        "blocks": blocks,
        "txs_per_block": txs_per_block,
        "orders_per_maker_tx": orders_per_tx,
        "accounts": accounts,
        "orders": workload.orders,
        "txs_succeeded": counts["ok"],
        "txs_failed": counts["failed"],
        "fills": counts["fills"],
        "resting_at_end": counts["resting_at_end"],
        "seconds": best,
        "orders_per_second": workload.orders / best,
        "cpu_seconds": best_cpu,
        "orders_per_cpu_second": workload.orders / best_cpu,
        "app_hash": hashes_a[-1].hex().upper(),
        "app_hash_matches": True,
    }
