"""`derivd bench liquidation`: the end-block cost of liquidation detection and work with many open
positions, on one core.

State is built directly through views (not through signed txs): `accounts` accounts, funded at
genesis with $10,000 each, hold balanced long/short pairs (quote balances of exactly -/+ the
notional at the initial price, so conservation holds) on four markets (BTC-USD, ETH-USD and two
more with ETH-USD's units); 90% hold one position, 10% two (each at half the leverage). Longs and
shorts are at 1x to 5x, except the longs of 1% of the accounts, at 9x: a 10% fall puts exactly
those under their maintenance requirement. A market maker rests bids 0.5% under the fallen prices.
The changes are committed to LevelDB and the application reopened over them (its books loaded from
state); the first block (the maker's bids) lets the liquidation pass compute every holder's healthy
band (its time is reported as `first_pass_ms`), after which the band edges' key range is compacted
once, as the node's periodic compaction does (`node.compaction`: the first pass deleted 100,000
unknown-band markers, whose tombstones a range read would otherwise skip one by one).

Figures: the `finalize_block` time of an empty block with no price move (the whole end block:
oracle aggregation, triggers, funding, the insurance unwind, the liquidation pass, the app hash),
of the block whose oracle vote moves every market down 10% (including the liquidations of that
block, within the pass's `work_budget`), and of each following block until every under-water
account is cleared (its position closed, taken over or deleveraged: `blocks_to_clear` counts the
blocks from the move's, at most 10) and the queue holds no liquidatable account; with the time
spent in `liquidation_pass` and the state operations it counted (`work`) for each. The app's
commit and the batch write (fsync off) are outside the timings.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from consensus.app import FinalizeBlockRequest, InitChainRequest, ValidatorUpdate
from execution import block as block_module
from execution.app import ExchangeApp
from execution.exchange.context import ExchangeContext
from execution.genesis_state import default_exchange_app_state
from execution.markets import Market, default_markets, value_floor
from execution.positions.position import Position, store_position
from execution.risk.liquidation import account_health, load_queue
from execution.state import CommittedState, StateView
from execution.tx import OracleVote, PlaceOrder, build_tx
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from storage.db import Database, WriteBatch

CHAIN_ID = "derivd-bench-liquidation"
GENESIS_TIME = 1_750_000_000 * 10**9
BLOCK_INTERVAL = 10**9
FUNDS = 10_000 * 10**6
MOVE_PPM = 100_000  # the 10% fall
UNDER_WATER_LEVERAGE = 9
UNDER_WATER_EVERY = 100  # one account in 100
PASS = "liquidation_pass"
MAX_CLEARING_BLOCKS = 10


def bench_markets() -> list[Market]:
    btc, eth = default_markets()
    return [
        btc,
        eth,
        replace(eth, market_id=3, ticker="SOL-USD", initial_price=1_500_000_000),
        replace(eth, market_id=4, ticker="AVAX-USD", initial_price=400_000_000),
    ]


def _address(i: int) -> Address:
    return Address(sha256(b"bench liquidation %d" % i)[:20])


def _size_for(market: Market, quote: int) -> int:
    """The largest aligned size whose notional at the initial price is at most `quote`."""
    unit = value_floor(market, market.step_base_quantums, market.initial_price)
    return max(1, quote // unit) * market.step_base_quantums


def genesis_app(
    path: Path, state: dict[str, Any], validator: PrivateKey, chain_id: str = CHAIN_ID
) -> tuple[Database, ExchangeApp]:
    """A new database at `path` holding the committed genesis of `state` (`validator` with power
    10, `GENESIS_TIME`), synced, and the application over it (a one-core verifier)."""
    db = Database(path)
    app = ExchangeApp(db, chain_id, BatchVerifier(workers=1))
    request = InitChainRequest(
        chain_id,
        GENESIS_TIME,
        1,
        (ValidatorUpdate(validator.public_key.raw, 10),),
        json.dumps(state).encode(),
    )
    app.init_chain(request)
    batch = WriteBatch()
    app.commit(batch)
    db.write(batch, sync=True)
    return db, app


def _build(path: Path, accounts: int) -> tuple[PrivateKey, PrivateKey, list[Market], int]:
    """Genesis, then every position written straight into state; (validator, maker, markets,
    under-water accounts)."""
    validator = PrivateKey.from_seed(sha256(b"bench liquidation validator"))
    maker = PrivateKey.from_seed(sha256(b"bench liquidation maker"))
    markets = bench_markets()
    state = default_exchange_app_state()
    state["markets"] = [m.to_json() for m in markets]
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000_000}
    state["accounts"] = [{"address": str(_address(i)), "balance": str(FUNDS)} for i in range(accounts)]
    state["accounts"].append({"address": str(maker.address), "balance": str(10**9 * 10**6)})
    db, _ = genesis_app(path, state, validator)
    view = StateView(CommittedState(db))
    under_water = 0
    for pair in range(accounts // 2):
        long_owner, short_owner = _address(2 * pair), _address(2 * pair + 1)
        leverage = 1 + pair % 5
        if pair % (UNDER_WATER_EVERY // 2) == 0:
            leverage = UNDER_WATER_LEVERAGE
            under_water += 1
            held = [markets[pair % len(markets)]]
        elif pair % 10 == 1:
            held = [markets[pair % len(markets)], markets[(pair + 1) % len(markets)]]
        else:
            held = [markets[pair % len(markets)]]
        for market in held:
            size = _size_for(market, FUNDS * leverage // len(held))
            notional = value_floor(market, size, market.initial_price)
            store_position(view, long_owner, market.market_id, Position(size=size, quote=-notional))
            store_position(view, short_owner, market.market_id, Position(size=-size, quote=notional))
    batch = WriteBatch()
    for key, value in view.changes():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    db.write(batch)
    db.close()
    return validator, maker, markets, under_water


class _Timed:
    """Wraps `execution.app.liquidation_pass` to time each call and keep the work it counted."""

    def __init__(self) -> None:
        self.original = vars(block_module)[PASS]
        self.last = 0.0
        self.work = 0

    def __call__(self, view: Any, ctx: ExchangeContext, height: int) -> Any:
        started = time.perf_counter()
        work = ctx.risk_counts.get("work", 0)
        try:
            return self.original(view, ctx, height)
        finally:
            self.last = time.perf_counter() - started
            self.work = ctx.risk_counts.get("work", 0) - work


def bench_liquidation(accounts: int = 100_000) -> dict[str, Any]:
    accounts = max(100, accounts - accounts % 100)
    with tempfile.TemporaryDirectory(prefix="derivd-bench-liquidation-") as tmp:
        path = Path(tmp) / "db"
        build_started = time.perf_counter()
        validator, maker, markets, under_water = _build(path, accounts)
        db = Database(path)
        verifier = BatchVerifier(workers=1)
        app = ExchangeApp(db, CHAIN_ID, verifier)
        timed = _Timed()
        vars(block_module)[PASS] = timed  # the block pipeline calls it by this module-level name
        height = 0
        nonce = GENESIS_TIME // 1_000_000

        def block(txs: list[bytes]) -> tuple[float, float, int, int]:
            nonlocal height
            height += 1
            request = FinalizeBlockRequest(
                height, GENESIS_TIME + height * BLOCK_INTERVAL, b"\x11" * 32, b"\x22" * 20, tuple(txs), ()
            )
            started = time.perf_counter()
            result = app.finalize_block(request)
            elapsed = time.perf_counter() - started
            assert all(r.code == 0 for r in result.tx_results), [r.log for r in result.tx_results]
            batch = WriteBatch()
            app.commit(batch)
            db.write(batch, sync=False)
            started_events = sum(1 for e in result.events if e.type == "liquidation_started")
            return elapsed, timed.last, started_events, timed.work

        try:
            # the maker's bids 0.5% under the fallen prices, for every under-water long
            orders = []
            for market in markets:
                fallen = market.initial_price * (1_000_000 - MOVE_PPM) // 1_000_000
                bid = fallen * 995 // 1000 // market.subticks_per_tick * market.subticks_per_tick
                size = _size_for(market, FUNDS * UNDER_WATER_LEVERAGE) * (accounts // 100 + 1)
                orders.append(PlaceOrder(market.market_id, 0, size, bid, 3))
            nonce += 1
            first = block([build_tx(maker, CHAIN_ID, nonce, orders)])  # every holder's band
            db.compact(b"a:hb")  # its 100,000 deleted unknown-band markers: what the node compacts
            build_seconds = time.perf_counter() - build_started
            quiet = [block([]) for _ in range(5)]
            moved = [
                (
                    m.market_id,
                    m.initial_price
                    * (1_000_000 - MOVE_PPM)
                    // 1_000_000
                    // m.subticks_per_tick
                    * m.subticks_per_tick,
                )
                for m in markets
            ]
            nonce += 1
            move = block([build_tx(validator, CHAIN_ID, nonce, [OracleVote(tuple(moved))])])
            clearing = [move]
            while _still_under(db, app, accounts) and len(clearing) < MAX_CLEARING_BLOCKS:
                clearing.append(block([]))
            left = _still_under(db, app, accounts)
            queue = len(load_queue(CommittedState(db)))
        finally:
            vars(block_module)[PASS] = timed.original
            verifier.close()
            db.close()
    quiet_best = min(quiet, key=lambda item: item[0])
    return {
        "accounts": accounts,
        "markets": len(markets),
        "under_water": under_water,
        "setup_seconds": build_seconds,
        "first_pass_ms": first[1] * 1000,
        "no_move_end_block_ms": quiet_best[0] * 1000,
        "no_move_liquidation_pass_ms": quiet_best[1] * 1000,
        "move_block_ms": move[0] * 1000,
        "move_liquidation_pass_ms": move[1] * 1000,
        "move_liquidations": move[2],
        "blocks_to_clear": None if left else len(clearing),
        "under_water_left": left,
        "block_ms": [item[0] * 1000 for item in clearing],
        "liquidation_pass_ms": [item[1] * 1000 for item in clearing],
        "liquidations": [item[2] for item in clearing],
        "work": [item[3] for item in clearing],
        "pass_us_per_operation": [item[1] * 1e6 / max(1, item[3]) for item in clearing],
        "queue_after": queue,
    }


def _still_under(db: Database, app: ExchangeApp, accounts: int) -> int:
    """How many of the under-water accounts (the 9x longs) still hold a position that is
    liquidatable at the committed oracle prices."""
    committed = CommittedState(db)
    ctx = ExchangeContext(app.info().last_block_height + 1, app.books, live=False)
    left = 0
    for pair in range(0, accounts // 2, UNDER_WATER_EVERY // 2):
        if account_health(committed, ctx, _address(2 * pair).raw).liquidatable:
            left += 1
    return left
