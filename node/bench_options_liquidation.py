"""`derivd bench options --liquidation`: the end-block cost of the option marks and the liquidation
pass when `accounts` accounts hold option positions and BTC moves 10% against the short calls
(issue 17: at most 500 ms for the pass with 10,000 accounts), on one core.

The chain (one `ExchangeApp` over LevelDB, one validator): BTC-USD and ETH-USD (the default
perpetuals) and twelve BTC series, calls and puts struck at 90%, 100% and 110% of $65,000 expiring
7 and 30 days after genesis, initial implied vol 60% (the genesis marks them). Each account
(`_portfolio`, drawn from `seed`) is short one to three series (0.01 .. 2 BTC each); one in three
also holds the perpetual that hedges its delta at genesis. The market maker holds the opposite of
every position (quote balances of exactly -/+, so conservation holds). Positions are written
straight into state through views (as `node.bench_liquidation` does), then each account's balance
is set to its maintenance requirement (the portfolio rule, `execution.risk.liquidation.
account_health`) plus a cushion of 5% .. 60% of it, the rest of its genesis funds moved to the maker.
The changes are committed and the application reopened over them.

Blocks: 1. the maker's asks on every series 3% above its mark after the move (at the move block's
time) and its bid on BTC-USD 0.5% under the moved price, sized to cover every account (the first
pass also checks every holder: `first_pass_ms`); 2-3. quiet blocks (no vote: the series' marks
still move with time, so the pass checks every option holder in each); 4. the validator's oracle
vote moves BTC-USD up 10%; then empty blocks until no account is liquidatable or `max_blocks`
blocks from the move have run (`blocks_to_clear`: the blocks from the move's to the one that
leaves none, None when some are left).

Figures, for the move block and each following one: `finalize_block` (`block_ms`: the txs, every
end-block stage and the app hash of the state tree), the end-block stages (`end_block_ms`: the
`execution.block.END_BLOCK_HOOKS`, oracle aggregation to liquidation), the option marks stage alone
(`option_marks_ms`) and the liquidation pass alone (`liquidation_pass_ms`, as `node.bench_
liquidation` times it; `_cpu_ms`: the process's CPU time in it, which other processes on a loaded
machine do not inflate), the accounts it started to liquidate and the state operations it counted.
Excluded from every timing: the app's `commit` and the synced LevelDB write of the block, the
building of the state, and the checks of which accounts are still liquidatable between blocks.
`app_hash` is the state tree root after the last block: equal for the same arguments whatever the
code's speed.
"""

from __future__ import annotations

import cProfile
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consensus.app import Event, FinalizeBlockRequest
from execution import block as block_module
from execution.accounts import load_account, store_account
from execution.app import ExchangeApp
from execution.exchange.context import ExchangeContext
from execution.genesis_state import default_exchange_app_state
from execution.markets import Market, default_markets, option_ticker, value_floor
from execution.options.fixedpoint import SCALE
from execution.options.marks import load_mark, quote, years_to_expiry
from execution.positions.position import Position, store_position
from execution.risk.liquidation import account_health
from execution.risk.option_series import mark_subticks
from execution.state import CommittedState, StateView
from execution.tx import OracleVote, PlaceOrder, build_tx
from node.bench_liquidation import GENESIS_TIME, genesis_app
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from primitives.timefmt import format_rfc3339
from storage.db import Database, WriteBatch

CHAIN_ID = "derivd-bench-options-liquidation"
BLOCK_INTERVAL = 10**9
DAY_NS = 24 * 3600 * 10**9
FUNDS = 1_000_000 * 10**6  # each account's genesis funds, $1M (most go to the maker)
MAKER_FUNDS = 10**9 * 10**6
VOL_PPM = 600_000
MOVE_PPM = 100_000  # BTC up 10%
EXPIRIES = (7 * DAY_NS, 30 * DAY_NS)
STRIKES_PPM = (900_000, 1_000_000, 1_100_000)
FIRST_SERIES = 11
QUIET_BLOCKS = 2
MOVE_HEIGHT = 2 + QUIET_BLOCKS
BUY, SELL = 0, 1
PASS = "liquidation_pass"
MARKS = "option_series_end_block"
HOOKS = "END_BLOCK_HOOKS"


def _btc() -> Market:
    return default_markets()[0]


def series_json() -> list[dict[str, Any]]:
    """The genesis JSON of the bench's twelve BTC series (module docstring), ids from 11."""
    btc = _btc()
    out: list[dict[str, Any]] = []
    for lifetime in EXPIRIES:
        expiry = GENESIS_TIME + lifetime
        for ppm in STRIKES_PPM:
            strike = btc.initial_price * ppm // 1_000_000 // btc.subticks_per_tick * btc.subticks_per_tick
            for call in (True, False):
                entry: dict[str, Any] = btc.to_json() | {
                    "id": FIRST_SERIES + len(out),
                    "ticker": option_ticker(btc, expiry, strike, call),
                    "initial_price": btc.subticks_per_tick,
                }
                entry["option"] = {
                    "underlying": btc.market_id,
                    "expiry": format_rfc3339(expiry),
                    "strike": strike,
                    "call": call,
                    "initial_vol_ppm": VOL_PPM,
                }
                out.append(entry)
    return out


def _address(i: int) -> Address:
    return Address(sha256(b"bench options liquidation %d" % i)[:20])


@dataclass(frozen=True, slots=True, kw_only=True)
class Holding:
    """One account's positions as drawn: (series id, size) shorts, the hedging perp size and the
    cushion over its maintenance requirement (ppm of it)."""

    shorts: tuple[tuple[int, int], ...]
    hedge: bool
    cushion_ppm: int


def _portfolio(rng: random.Random, series_count: int, step: int) -> Holding:
    chosen = rng.sample(range(series_count), rng.randrange(1, 4))
    shorts = tuple((FIRST_SERIES + index, -rng.randrange(100, 20_001) * step) for index in sorted(chosen))
    return Holding(shorts=shorts, hedge=rng.randrange(3) == 0, cushion_ppm=rng.randrange(50_000, 600_001))


def _write(db: Database, view: StateView) -> None:
    batch = WriteBatch()
    for key, value in view.changes():
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    db.write(batch, sync=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Built:
    validator: PrivateKey
    maker: PrivateKey
    series: list[Market]
    short_total: dict[int, int]  # series id -> the accounts' summed short size (> 0)
    hedge_total: int  # the accounts' summed perp size


def _build(path: Path, accounts: int, seed: int, work_budget: int | None = None) -> _Built:
    """Genesis, then every position and balance written straight into state (module docstring);
    `work_budget`: the liquidation pass's (None: the default)."""
    validator = PrivateKey.from_seed(sha256(b"bench options liquidation validator"))
    maker = PrivateKey.from_seed(sha256(b"bench options liquidation maker"))
    state = default_exchange_app_state()
    state["markets"] = [*state["markets"], *series_json()]
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000_000}
    state["volatility"] = {"stale_after_blocks": 1_000_000_000}
    if work_budget is not None:
        state["liquidation"] = {**state["liquidation"], "work_budget": work_budget}
    state["accounts"] = [{"address": str(_address(i)), "balance": str(FUNDS)} for i in range(accounts)]
    state["accounts"].append({"address": str(maker.address), "balance": str(MAKER_FUNDS)})
    db, app = genesis_app(path, state, validator, CHAIN_ID)
    committed = CommittedState(db)
    btc = _btc()
    series = [m for m in app.books.markets() if m.option is not None]
    marks = {m.market_id: load_mark(committed, m.market_id) for m in series}
    deltas: dict[int, int] = {}
    for market in series:
        mark = marks[market.market_id]
        assert market.option is not None and mark is not None
        deltas[market.market_id] = quote(
            market.option, spot=mark.spot, vol_ppm=mark.vol_ppm, t=mark.t, rate_ppm=0
        ).delta
    by_id = {m.market_id: m for m in series}
    rng = random.Random(seed)
    view = StateView(committed)
    step = btc.step_base_quantums
    maker_sizes: dict[int, int] = {}
    maker_quotes: dict[int, int] = {}
    holdings: list[Holding] = []
    for i in range(accounts):
        holding = _portfolio(rng, len(series), step)
        holdings.append(holding)
        owner = _address(i)
        hedge = 0
        for market_id, size in holding.shorts:
            market = by_id[market_id]
            mark = marks[market_id]
            assert mark is not None
            quote_balance = -value_floor(market, size, mark.price)  # the premium received
            store_position(view, owner, market_id, Position(size=size, quote=quote_balance))
            maker_sizes[market_id] = maker_sizes.get(market_id, 0) - size
            maker_quotes[market_id] = maker_quotes.get(market_id, 0) - quote_balance
            hedge -= size * deltas[market_id] // SCALE
        hedge = hedge // step * step
        if holding.hedge and hedge:
            notional = value_floor(btc, hedge, btc.initial_price)
            store_position(view, owner, btc.market_id, Position(size=hedge, quote=-notional))
            maker_sizes[btc.market_id] = maker_sizes.get(btc.market_id, 0) - hedge
            maker_quotes[btc.market_id] = maker_quotes.get(btc.market_id, 0) + notional
    for market_id in sorted(maker_sizes):
        position = Position(size=maker_sizes[market_id], quote=maker_quotes[market_id])
        store_position(view, maker.address, market_id, position)
    # balances: maintenance plus the cushion; the rest of each account's funds to the maker
    ctx = ExchangeContext(2, app.books, live=False)
    moved = 0
    for i, holding in enumerate(holdings):
        owner = _address(i)
        health = account_health(view, ctx, owner.raw)
        positions_value = health.value - FUNDS
        target = health.maintenance + health.maintenance * holding.cushion_ppm // 1_000_000 - positions_value
        target = min(FUNDS, max(0, target))
        store_account(view, owner, load_account(view, owner).with_balance(target))
        moved += FUNDS - target
    maker_account = load_account(view, maker.address)
    store_account(view, maker.address, maker_account.with_balance(maker_account.balance + moved))
    _write(db, view)
    db.close()
    short_total = {m: -sum(s for h in holdings for i, s in h.shorts if i == m) for m in by_id}
    hedge_total = -maker_sizes.get(btc.market_id, 0)
    return _Built(
        validator=validator, maker=maker, series=series, short_total=short_total, hedge_total=hedge_total
    )


def _maker_orders(built: _Built) -> list[PlaceOrder]:
    """Asks on every series 3% above its mark at the move block (the moved spot, the same vol) and
    a bid on BTC-USD 0.5% under the moved price, each covering every account's position."""
    btc = _btc()
    moved = (
        btc.initial_price
        * (1_000_000 + MOVE_PPM)
        // 1_000_000
        // btc.subticks_per_tick
        * btc.subticks_per_tick
    )
    at = GENESIS_TIME + MOVE_HEIGHT * BLOCK_INTERVAL
    orders: list[PlaceOrder] = []
    for market in built.series:
        terms = market.option
        assert terms is not None
        size = built.short_total[market.market_id]
        if size <= 0:
            continue
        mark = mark_subticks(
            quote(terms, spot=moved, vol_ppm=VOL_PPM, t=years_to_expiry(terms, at), rate_ppm=0)
        )
        tick = market.subticks_per_tick
        ask = -(-mark * 103 // 100 // tick) * tick
        orders.append(PlaceOrder(market.market_id, SELL, size, ask, 3))
    if built.hedge_total > 0:
        bid = moved * 995 // 1000 // btc.subticks_per_tick * btc.subticks_per_tick
        orders.append(PlaceOrder(btc.market_id, BUY, built.hedge_total, bid, 3))
    return orders


class _Timer:
    """Wraps a module-level function of `execution.block` to time each call; for the liquidation
    pass (called with the view, the exchange context and the height) also the state operations it
    counted (`work`)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.original: Callable[..., Any] = vars(block_module)[name]
        self.last = 0.0
        self.last_cpu = 0.0
        self.work = 0

    def __call__(self, *args: Any) -> Any:
        ctx = args[1] if self.name == PASS else None
        work = 0 if ctx is None else ctx.risk_counts.get("work", 0)
        started, started_cpu = time.perf_counter(), time.process_time()
        try:
            return self.original(*args)
        finally:
            self.last = time.perf_counter() - started
            self.last_cpu = time.process_time() - started_cpu
            if ctx is not None:
                self.work = ctx.risk_counts.get("work", 0) - work


def _timed_hooks(spent: list[float]) -> tuple[Callable[[block_module.EndBlock], list[Event]], ...]:
    """`END_BLOCK_HOOKS` with their summed time added to `spent[0]`."""

    def wrap(
        hook: Callable[[block_module.EndBlock], list[Event]],
    ) -> Callable[[block_module.EndBlock], list[Event]]:
        def timed(end: block_module.EndBlock) -> list[Event]:
            started = time.perf_counter()
            try:
                return hook(end)
            finally:
                spent[0] += time.perf_counter() - started

        return timed

    return tuple(wrap(hook) for hook in block_module.END_BLOCK_HOOKS)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Block:
    block_ms: float
    end_block_ms: float
    option_marks_ms: float
    liquidation_pass_ms: float
    liquidation_pass_cpu_ms: float
    liquidations: int
    work: int


def _liquidatable(db: Database, app: ExchangeApp, accounts: int) -> int:
    """The accounts liquidatable at the committed state (outside every timing)."""
    committed = CommittedState(db)
    ctx = ExchangeContext(app.info().last_block_height + 1, app.books, live=False)
    return sum(1 for i in range(accounts) if account_health(committed, ctx, _address(i).raw).liquidatable)


def bench_options_liquidation(
    accounts: int = 10_000,
    seed: int = 1,
    max_blocks: int = 10,
    profile: bool = False,
    work_budget: int | None = None,
) -> dict[str, Any]:
    """The figures of the module docstring; `profile`: print a cProfile of the move block's
    `finalize_block` (its figures are then of the profiled run)."""
    accounts = max(1, accounts)
    with tempfile.TemporaryDirectory(prefix="derivd-bench-options-liquidation-") as tmp:
        path = Path(tmp) / "db"
        build_started = time.perf_counter()
        built = _build(path, accounts, seed, work_budget)
        db = Database(path)
        verifier = BatchVerifier(workers=1)
        app = ExchangeApp(db, CHAIN_ID, verifier)
        passes, marks = _Timer(PASS), _Timer(MARKS)
        hooks = vars(block_module)[HOOKS]
        spent = [0.0]
        vars(block_module)[PASS] = passes  # the block pipeline calls these by their module-level names
        vars(block_module)[MARKS] = marks
        vars(block_module)[HOOKS] = _timed_hooks(spent)
        height = 0
        nonce = GENESIS_TIME // 1_000_000

        def block(txs: list[bytes], profiled: bool = False) -> _Block:
            nonlocal height
            height += 1
            request = FinalizeBlockRequest(
                height, GENESIS_TIME + height * BLOCK_INTERVAL, b"\x11" * 32, b"\x22" * 20, tuple(txs), ()
            )
            spent[0] = 0.0
            profiler = cProfile.Profile() if profiled else None
            started = time.perf_counter()
            if profiler is not None:
                profiler.enable()
            result = app.finalize_block(request)
            if profiler is not None:
                profiler.disable()
            elapsed = time.perf_counter() - started
            if profiler is not None:
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(25)
            assert all(r.code == 0 for r in result.tx_results), [r.log for r in result.tx_results]
            batch = WriteBatch()
            app.commit(batch)
            db.write(batch, sync=True)
            started_for = {
                a.value
                for e in result.events
                if e.type == "liquidation_started"
                for a in e.attributes
                if a.key == "account"
            }
            return _Block(
                block_ms=elapsed * 1000,
                end_block_ms=spent[0] * 1000,
                option_marks_ms=marks.last * 1000,
                liquidation_pass_ms=passes.last * 1000,
                liquidation_pass_cpu_ms=passes.last_cpu * 1000,
                liquidations=len(started_for),
                work=passes.work,
            )

        try:
            nonce += 1
            first = block([build_tx(built.maker, CHAIN_ID, nonce, _maker_orders(built))])
            build_seconds = time.perf_counter() - build_started
            quiet = [block([]) for _ in range(QUIET_BLOCKS)]
            btc = _btc()
            moved = btc.initial_price * (1_000_000 + MOVE_PPM) // 1_000_000
            moved = moved // btc.subticks_per_tick * btc.subticks_per_tick
            under_before = _liquidatable(db, app, accounts)
            nonce += 1
            assert height + 1 == MOVE_HEIGHT
            clearing = [
                block(
                    [build_tx(built.validator, CHAIN_ID, nonce, [OracleVote(((btc.market_id, moved),))])],
                    profiled=profile,
                )
            ]
            under_after_move = _liquidatable(db, app, accounts)
            left = under_after_move
            while left and len(clearing) < max_blocks:
                clearing.append(block([]))
                left = _liquidatable(db, app, accounts)
            app_hash = app.info().last_block_app_hash.hex()
        finally:
            vars(block_module)[PASS] = passes.original
            vars(block_module)[MARKS] = marks.original
            vars(block_module)[HOOKS] = hooks
            verifier.close()
            db.close()
    move = clearing[0]
    quiet_best = min(quiet, key=lambda b: b.block_ms)
    return {
        "accounts": accounts,
        "seed": seed,
        "series": len(built.series),
        "setup_seconds": build_seconds,
        "first_pass_ms": first.liquidation_pass_ms,
        "no_move_block_ms": quiet_best.block_ms,
        "no_move_end_block_ms": quiet_best.end_block_ms,
        "no_move_option_marks_ms": quiet_best.option_marks_ms,
        "no_move_liquidation_pass_ms": quiet_best.liquidation_pass_ms,
        "no_move_liquidation_pass_cpu_ms": quiet_best.liquidation_pass_cpu_ms,
        "liquidatable_before_move": under_before,
        "liquidatable_after_move_block": under_after_move,
        "move_block_ms": move.block_ms,
        "end_block_ms": move.end_block_ms,
        "option_marks_ms": move.option_marks_ms,
        "liquidation_pass_ms": move.liquidation_pass_ms,
        "liquidation_pass_cpu_ms": move.liquidation_pass_cpu_ms,
        "liquidated": move.liquidations,
        "liquidation_work": move.work,
        "blocks_to_clear": None if left else len(clearing),
        "liquidatable_left": left,
        "block_ms": [b.block_ms for b in clearing],
        "liquidation_pass_ms_per_block": [b.liquidation_pass_ms for b in clearing],
        "liquidation_pass_cpu_ms_per_block": [b.liquidation_pass_cpu_ms for b in clearing],
        "liquidated_per_block": [b.liquidations for b in clearing],
        "work_per_block": [b.work for b in clearing],
        "app_hash": app_hash,
    }
