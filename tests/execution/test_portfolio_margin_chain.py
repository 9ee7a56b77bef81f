"""Portfolio margin in the chain's margin (issue 17 item 4, `execution.positions.margin`): perp-only
accounts keep the linear figures exactly; a group with an option position is margined by the
scenario grid in every check that reads an account's figures (placement, transfer, taker and
maker re-checks through `execution.exchange.fills`, liquidation's health and bands)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from fractions import Fraction
from math import ceil, floor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.app import Event, ValidatorUpdate
from execution.accounts import load_account, store_account
from execution.codes import Code
from execution.exchange.context import ExchangeContext
from execution.exchange.fills import account_margin, base_of, free_with, margin_with
from execution.genesis_state import default_exchange_app_state
from execution.markets import default_markets, load_market, option_ticker, slice_size
from execution.options.fixedpoint import SCALE
from execution.options.marks import load_mark
from execution.options.portfolio import Leg, OptionLeg, PerpLeg, PortfolioParams, portfolio_margin
from execution.options.pricing import black_scholes
from execution.oracle.prices import prices_at
from execution.positions.funding_index import INSURANCE_FUND, load_funding_index
from execution.positions.holders import HOLDER_UNKNOWN
from execution.positions.margin import MarginSummary, margin_summary
from execution.positions.position import Position, load_position, positions, store_position
from execution.risk.insurance import insurance_fund_health
from execution.risk.liquidation import LiquidationParams, account_health, candidates, load_queue
from execution.state import StateReader, StateView
from execution.tx import STANDARD_FEES, ActionKind, OracleVote
from primitives import codec
from primitives.keys import Address
from primitives.timefmt import format_rfc3339
from storage import schema
from tests.execution.chain import GENESIS_TIME, Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FUNDS,
    IOC,
    ONE_BTC,
    SELL,
    STEP,
    TICK,
    assert_books_match_state,
    assert_ok,
    place,
    usd,
)

BTC_MARKET = default_markets()[0]
CALL, PUT = 11, 12
STRIKE = usd(65_000)
EXPIRY = GENESIS_TIME + 30 * 24 * 3600 * 10**9
VOL_PPM = 600_000
VALIDATOR = key(9)
A, M = address(0), address(1)
PARAMS = PortfolioParams()


def _series(market_id: int, call: bool) -> dict[str, Any]:
    entry: dict[str, Any] = BTC_MARKET.to_json() | {
        "id": market_id,
        "ticker": option_ticker(BTC_MARKET, EXPIRY, STRIKE, call),
        "initial_price": 100 * TICK,
    }
    entry["option"] = {
        "underlying": BTC,
        "expiry": format_rfc3339(EXPIRY),
        "strike": STRIKE,
        "call": call,
        "initial_vol_ppm": VOL_PPM,
    }
    return entry


def app_state() -> dict[str, Any]:
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    state["volatility"] = {"stale_after_blocks": 1_000_000}
    state["markets"] = [*state["markets"], _series(CALL, True), _series(PUT, False)]
    return state


def new_chain(path: Path, subject_funds: int = FUNDS) -> Chain:
    """A (0) holds `subject_funds`, M (1, the market maker) and 2, 3 hold FUNDS; block 1 marks the
    series (BTC at $65,000, vol 60%)."""
    balances = {A: subject_funds} | {address(i): FUNDS for i in (1, 2, 3)}
    chain = Chain(
        path, balances, app_state=app_state(), validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)]
    )
    chain.run_block([])
    return chain


# -- the linear rule, written out apart ------------------------------------------------------------


def linear_figures(state: StateReader, owner: Address) -> tuple[int, int, int]:
    """(value, initial, maintenance) by the linear rule, in exact fractions (no pending funding)."""
    prices = prices_at(state)
    value, initial, maintenance = load_account(state, owner).balance, 0, 0
    for market_id, p in positions(state, owner):
        market = load_market(state, market_id)
        assert market is not None
        unit = Fraction(prices(market_id)) * Fraction(10) ** market.quantum_conversion_exponent
        value += floor(p.size * unit) + p.quote
        worst = max(abs(p.size + p.open_buy), abs(p.size - p.open_sell))
        initial += ceil(worst * unit * market.initial_margin_ppm / 1_000_000)
        maintenance += ceil(abs(p.size) * unit * market.maintenance_margin_ppm / 1_000_000)
    return value, initial, maintenance


def figures(chain: Chain, owner: Address) -> MarginSummary:
    state = chain.app._committed
    return margin_summary(state, owner, prices_at(state))


# -- accounts without option positions: exactly the linear figures ---------------------------------


@pytest.fixture(scope="module")
def marked_chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    chain = new_chain(tmp_path_factory.mktemp("pm") / "db")
    yield chain
    chain.close()


position_st = st.builds(
    Position,
    size=st.integers(-(10**12), 10**12),
    quote=st.integers(-(10**11), 10**11),
    open_buy=st.integers(0, 10**12),
    open_sell=st.integers(0, 10**12),
    open_orders=st.integers(0, 3),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    balance=st.integers(0, 10**12),
    btc=st.one_of(st.none(), position_st),
    eth=st.one_of(st.none(), position_st),
    option_quote=st.one_of(st.none(), st.integers(-(10**9), 10**9).filter(bool)),
)
def test_accounts_without_option_positions_get_exactly_the_linear_figures(
    marked_chain: Chain, balance: int, btc: Position | None, eth: Position | None, option_quote: int | None
) -> None:
    """Perp positions (and an option record with a quote balance only: no size, no orders) keep
    the linear rule bit for bit in every reader of the figures, and the fast path's base is a plain
    tuple."""
    view = StateView(marked_chain.app._committed)
    owner = address(7)
    store_account(view, owner, load_account(view, owner).with_balance(balance))
    held = {BTC: btc, ETH: eth, CALL: None if option_quote is None else Position(quote=option_quote)}
    for market_id, p in held.items():
        if p is not None and not p.is_empty:
            index = load_funding_index(view, market_id)
            store_position(
                view,
                owner,
                market_id,
                Position(p.size, p.quote, p.open_buy, p.open_sell, p.open_orders, index),
            )
    value, initial, maintenance = linear_figures(view, owner)
    expected = MarginSummary(value, initial, maintenance, value - initial)
    assert margin_summary(view, owner, prices_at(view)) == expected
    ctx = ExchangeContext(marked_chain.height + 1)
    assert account_margin(ctx, view, owner.raw) == expected
    health = account_health(view, ctx, owner.raw)
    assert (health.value, health.maintenance, health.portfolio) == (value, maintenance, ())
    base = base_of(ctx, view, owner.raw, BTC)
    assert base.group is None  # the fast path: the linear rule
    btc_market = ctx.market(view, BTC)
    assert (
        free_with(btc_market, base, load_position(view, owner, BTC), ctx.price(view, BTC)) == value - initial
    )


# -- portfolio-margined accounts -----------------------------------------------------------------


def _spot(chain: Chain) -> int:
    return prices_at(chain.app._committed)(BTC)


def _option_leg(chain: Chain, market_id: int, size: int) -> OptionLeg:
    mark = load_mark(chain.app._committed, market_id)
    assert mark is not None
    return OptionLeg(
        underlying=BTC,
        size=size,
        qce=-9,
        strike=STRIKE,
        t=mark.t,
        call=market_id == CALL,
        vol=mark.vol_ppm * 10**12,
    )


def _hedged(chain: Chain, calls: int, perp: int) -> None:
    """A buys `calls` base quantums of calls and sells `perp` of BTC-USD, M on the other side."""
    mark = load_mark(chain.app._committed, CALL)
    assert mark is not None
    ask = (mark.price // TICK + 1) * TICK
    results = chain.run_block(
        [
            chain.tx(key(1), place(SELL, calls, ask, market=CALL), place(BUY, perp, usd(64_990))),
            chain.tx(key(0), place(BUY, calls, ask, IOC, market=CALL), place(SELL, perp, usd(64_990), IOC)),
        ]
    ).tx_results
    assert_ok(results)
    assert load_position(chain.app._committed, A, CALL).size == calls
    assert load_position(chain.app._committed, A, BTC).size == -perp


def test_a_delta_hedged_account_needs_less_than_its_legs_and_than_the_linear_rule(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db")
    calls, perp = 10 * ONE_BTC, 5 * ONE_BTC  # ATM delta ~0.5: 10 calls hedged by 5 BTC short
    _hedged(chain, calls, perp)
    state = chain.app._committed
    hedged = figures(chain, A)
    legs: list[Leg] = [_option_leg(chain, CALL, calls), PerpLeg(underlying=BTC, size=-perp, qce=-9)]
    pm = portfolio_margin(legs, {BTC: _spot(chain)}, PARAMS)
    assert (hedged.maintenance, hedged.initial) == (pm.maintenance, pm.initial)
    prices = prices_at(state)
    calls_alone = margin_summary(state, A, prices, {BTC: Position()})
    perp_alone = margin_summary(state, A, prices, {CALL: Position()})
    assert hedged.initial < calls_alone.initial + perp_alone.initial
    assert hedged.initial < calls_alone.initial  # the short perp hedges the calls' fall
    value, linear_initial, _ = linear_figures(state, A)
    assert value == hedged.value and hedged.initial < linear_initial
    # every reader of the figures agrees (the fills' full path, liquidation's health)
    ctx = ExchangeContext(chain.height + 1)
    assert account_margin(ctx, state, A.raw) == hedged
    assert account_health(state, ctx, A.raw).maintenance == hedged.maintenance
    call_market = ctx.market(state, CALL)
    base = base_of(ctx, state, A.raw, CALL)
    assert base.group is not None and base.group.underlying == BTC
    assert free_with(call_market, base, load_position(state, A, CALL), ctx.price(state, CALL)) == hedged.free
    # a transfer down to between the two requirements: the linear rule would refuse it
    target = (hedged.initial + linear_initial) // 2
    assert_ok(chain.run_block([chain.transfer(key(0), address(3), hedged.value - target)]).tx_results)
    after = figures(chain, A)
    assert after.initial <= after.value < linear_figures(chain.app._committed, A)[1]
    # and a further order the linear rule would refuse (0.01 BTC of calls, resting)
    order = place(BUY, 100 * STEP, usd(4_000), market=CALL)
    assert_ok(chain.run_block([chain.tx(key(0), order)]).tx_results)
    assert load_position(chain.app._committed, A, CALL).open_buy == 100 * STEP
    assert figures(chain, A).initial <= figures(chain, A).value < linear_figures(chain.app._committed, A)[1]


def _grid_loss(chain: Chain, market_id: int, size: int) -> int:
    """The worst scenario loss of an option position, from Black-Scholes directly (ceil, >= 0)."""
    mark = load_mark(chain.app._committed, market_id)
    assert mark is not None
    spot, vol = _spot(chain), mark.vol_ppm * 10**12
    n, spread = PARAMS.price_steps, PARAMS.price_range_ppm

    def value(s: int, v: int) -> int:
        quote = black_scholes(spot=s, strike=STRIKE * SCALE, vol=v, t=mark.t, rate=0, call=market_id == CALL)
        return size * quote.price

    now = value(spot * SCALE, vol)
    vols = (vol, vol * 13 // 10, vol * 3 // 4)
    worst = min(
        value(spot * SCALE * (n * 10**6 + i * spread) // (n * 10**6), v)
        for i in range(-n, n + 1)
        for v in vols
    )
    return max(0, -((worst - now) // (SCALE * 10**9)))


def _short_calls(chain: Chain, size: int) -> None:
    mark = load_mark(chain.app._committed, CALL)
    assert mark is not None
    bid = mark.price // TICK * TICK
    results = chain.run_block(
        [
            chain.tx(key(1), place(BUY, size, bid, market=CALL)),
            chain.tx(key(0), place(SELL, size, bid, IOC, market=CALL)),
        ]
    ).tx_results
    assert_ok(results)
    assert load_position(chain.app._committed, A, CALL).size == -size


def test_a_naked_short_call_needs_its_grid_loss_and_floor(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db", subject_funds=20_000 * 10**6)
    _short_calls(chain, ONE_BTC)
    summary = figures(chain, A)
    floor_addon = ceil(Fraction(ONE_BTC * _spot(chain) * PARAMS.short_option_floor_ppm, 10**9 * 10**6))
    assert floor_addon == 650 * 10**6  # 1% of $65,000
    assert summary.maintenance == _grid_loss(chain, CALL, -ONE_BTC) + floor_addon
    assert summary.initial == ceil(Fraction(summary.maintenance * PARAMS.initial_factor_ppm, 10**6))
    _, _, linear_maintenance = linear_figures(chain.app._committed, A)
    assert summary.maintenance > 10 * linear_maintenance  # the linear rule would see ~$134
    # a resting sell that, filled, breaks the initial requirement is refused; a smaller one rests
    high = usd(9_000)
    too_big, fits = chain.run_block(
        [
            chain.tx(key(0), place(SELL, 15 * ONE_BTC // 10, high, market=CALL)),
            chain.tx(key(0), place(SELL, ONE_BTC // 2, high, market=CALL)),
        ]
    ).tx_results
    assert too_big.code == Code.INSUFFICIENT_MARGIN, too_big.log
    assert fits.code == 0, fits.log
    after = figures(chain, A)
    held = portfolio_margin([_option_leg(chain, CALL, -ONE_BTC)], {BTC: _spot(chain)}, PARAMS)
    with_sells = portfolio_margin([_option_leg(chain, CALL, -3 * ONE_BTC // 2)], {BTC: _spot(chain)}, PARAMS)
    assert after.initial == with_sells.initial and after.maintenance == held.maintenance
    assert after.initial <= after.value


def test_a_transfer_that_breaks_the_portfolio_initial_requirement_is_refused(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db", subject_funds=20_000 * 10**6)
    _short_calls(chain, ONE_BTC)
    summary = figures(chain, A)
    state = chain.app._committed
    fee = STANDARD_FEES[ActionKind.TRANSFER]  # each tx's fee comes out of the balance first
    free = summary.value - summary.initial
    value, linear_initial, _ = linear_figures(state, A)
    too_much = free - fee + 1  # leaves the value one quantum short of the initial requirement
    assert value - fee - too_much >= linear_initial  # the linear rule would let it go
    received = chain.balance(address(3))
    refused, allowed = chain.run_block(
        [chain.transfer(key(0), address(3), too_much), chain.transfer(key(0), address(3), free - 2 * fee)]
    ).tx_results
    assert refused.code == Code.INSUFFICIENT_MARGIN, refused.log
    assert allowed.code == 0, allowed.log  # leaves the value exactly at the initial requirement
    assert chain.balance(address(3)) == received + free - 2 * fee


def test_an_under_margined_short_call_is_liquidated_through_the_book(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db", subject_funds=13_000 * 10**6)
    _short_calls(chain, ONE_BTC)
    before = figures(chain, A)
    assert before.maintenance <= before.value < before.initial + 3_000 * 10**6
    # M offers calls well above the mark; then BTC jumps 10% (the call's mark ~$4,455 -> ~$8,626)
    assert_ok(chain.run_block([chain.tx(key(1), place(SELL, ONE_BTC, usd(9_500), market=CALL))]).tx_results)
    result = chain.run_block([chain.tx(VALIDATOR, OracleVote(((BTC, usd(71_500)),)))])
    assert_ok(result.tx_results)
    started = _events(result.events, "liquidation_started")
    assert len(started) == 1 and started[0]["account"] == A.raw.hex()
    assert int(started[0]["value"]) < int(started[0]["maintenance"])
    state = chain.app._committed
    market = load_market(state, CALL)
    assert market is not None
    price = prices_at(state)(CALL)
    params = LiquidationParams()
    # a portfolio-margined position closes the block's slice (never a "restoring" part of the
    # linear rule): max(10% of it, $1,000 at the mark) on the step, through M's ask
    slice_ = slice_size(
        market, ONE_BTC, params.max_position_fraction_ppm, params.min_liquidation_notional, price
    )
    assert slice_ == 1_160 * STEP
    filled = _events(result.events, "liquidation_filled")
    assert [(f["account"], f["size"]) for f in filled] == [(A.raw.hex(), str(slice_))]
    assert load_position(state, A, CALL).size == slice_ - ONE_BTC
    assert load_position(state, M, CALL).size == ONE_BTC - slice_
    assert state.get(schema.holder_key(CALL, A.raw)) == HOLDER_UNKNOWN
    assert_books_match_state(chain)
    # still liquidatable: queued, it closes another slice in the next block, then is healthy
    after = chain.run_block([])
    assert [f["size"] for f in _events(after.events, "liquidation_filled")] == [str(slice_)]
    assert load_position(chain.app._committed, A, CALL).size == 2 * slice_ - ONE_BTC
    final = figures(chain, A)
    assert final.value >= final.maintenance
    assert _events(chain.run_block([]).events, "liquidation_started") == []


def _events(events: Sequence[Event], kind: str) -> list[dict[str, str]]:
    return [{a.key: a.value for a in e.attributes} for e in events if e.type == kind]


def test_portfolio_accounts_have_unknown_bands(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db")
    _hedged(chain, 10 * ONE_BTC, 5 * ONE_BTC)  # A checked by the pass (a fill touched it)
    assert_ok(chain.run_block([chain.tx(VALIDATOR, OracleVote(((BTC, usd(65_100)),)))]).tx_results)
    state = chain.app._committed
    assert account_health(state, ExchangeContext(chain.height + 1), A.raw).portfolio == (BTC,)
    for market_id in (BTC, CALL):
        assert state.get(schema.holder_key(market_id, A.raw)) == HOLDER_UNKNOWN


def test_a_series_holder_is_a_candidate_when_only_the_underlying_moved(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db", subject_funds=20_000 * 10**6)
    _short_calls(chain, ONE_BTC)
    view = StateView(chain.app._committed)
    ctx = ExchangeContext(chain.height + 1)
    for market in ctx.markets(view):  # what the last pass saw: every market as it is, BTC elsewhere
        market_id = market.market_id
        price = ctx.price(view, market_id) + (TICK if market_id == BTC else 0)
        view.put(
            schema.liquidation_mark_key(market_id),
            codec.encode([price, ctx.funding_index(view, market_id), 0, 0]),
        )
    assert load_queue(view) == []
    assert A.raw in candidates(view, ctx)
    view.put(schema.liquidation_mark_key(BTC), codec.encode([ctx.price(view, BTC), 0, 0, 0]))
    assert A.raw not in candidates(view, ExchangeContext(chain.height + 1))  # nothing moved


def test_the_insurance_fund_health_counts_portfolio_margin(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db")
    view = StateView(chain.app._committed)
    store_position(view, INSURANCE_FUND, CALL, Position(size=-ONE_BTC, quote=4_000 * 10**6))
    ctx = ExchangeContext(chain.height + 1)
    health = insurance_fund_health(view, ctx)
    pm = portfolio_margin([_option_leg(chain, CALL, -ONE_BTC)], {BTC: _spot(chain)}, PARAMS)
    assert health.maintenance == pm.maintenance


def test_a_perp_order_of_an_account_with_options_is_judged_with_its_group(tmp_path: Path) -> None:
    """The fast path (perpetuals only) is left as soon as the account holds a series: a perp sell
    that adds to a short call's risk is refused though the linear rule would take it; a buy that
    hedges it rests."""
    chain = new_chain(tmp_path / "db", subject_funds=20_000 * 10**6)
    _short_calls(chain, ONE_BTC)
    state = chain.app._committed
    value, linear_initial, _ = linear_figures(state, A)
    btc = load_market(state, BTC)
    assert btc is not None
    linear_with_sell = linear_initial + ceil(
        Fraction(ONE_BTC * _spot(chain) * btc.initial_margin_ppm, 10**15)
    )
    assert value - 10**9 > linear_with_sell  # the linear rule would take it (less $1,000 of loss and fee)
    adds, hedges = chain.run_block(
        [
            chain.tx(key(0), place(SELL, ONE_BTC, usd(66_000))),
            chain.tx(key(0), place(BUY, ONE_BTC // 2, usd(64_000))),
        ]
    ).tx_results
    assert adds.code == Code.INSUFFICIENT_MARGIN, adds.log
    assert hedges.code == 0, hedges.log
    assert load_position(chain.app._committed, A, BTC).open_buy == ONE_BTC // 2


def test_resting_option_orders_make_the_group_portfolio_margined(tmp_path: Path) -> None:
    chain = new_chain(tmp_path / "db")
    perp, calls = ONE_BTC, 2 * ONE_BTC
    assert_ok(
        chain.run_block(
            [
                chain.tx(key(1), place(BUY, perp, usd(64_990))),
                chain.tx(
                    key(0), place(SELL, perp, usd(64_990), IOC), place(BUY, calls, usd(1_000), market=CALL)
                ),
            ]
        ).tx_results
    )
    assert load_position(chain.app._committed, A, CALL) == Position(0, 0, calls, 0, 1, 0)
    summary = figures(chain, A)
    spots = {BTC: _spot(chain)}
    short_perp = PerpLeg(underlying=BTC, size=-perp, qce=-9)
    alone = portfolio_margin([short_perp], spots, PARAMS)
    with_calls = portfolio_margin([short_perp, _option_leg(chain, CALL, calls)], spots, PARAMS)
    assert summary.maintenance == alone.maintenance
    assert summary.initial == max(alone.initial, with_calls.initial)
    assert summary.initial > linear_figures(chain.app._committed, A)[1]


def test_a_perp_judged_at_another_price_moves_its_group_spot(tmp_path: Path) -> None:
    """`free_with` / `margin_with` at a price of the perpetual other than the oracle's (a trigger
    judged at its trigger price) take that price as the group's spot, as `margin_summary` does."""
    chain = new_chain(tmp_path / "db")
    _hedged(chain, 10 * ONE_BTC, 5 * ONE_BTC)
    state = chain.app._committed
    ctx = ExchangeContext(chain.height + 1)
    btc = ctx.market(state, BTC)
    held = load_position(state, A, BTC)
    oracle = prices_at(state)
    for price in (usd(58_000), usd(65_000), usd(72_000)):

        def prices(market_id: int, price: int = price) -> int:
            return price if market_id == BTC else oracle(market_id)

        base = base_of(ctx, state, A.raw, BTC)
        expected = margin_summary(state, A, prices)
        assert margin_with(btc, base, held, price) == (expected.value, expected.initial)
        assert free_with(btc, base, held, price) == expected.free


@pytest.mark.parametrize(("fund", "taken_over"), [(5_000 * 10**6, False), (30_000 * 10**6, True)])
def test_the_insurance_fund_takes_an_option_position_over_only_if_its_portfolio_margin_allows(
    tmp_path: Path, fund: int, taken_over: bool
) -> None:
    """A short call with no ask to buy it back goes to the backstop after BTC jumps to $81,000: the
    fund takes it over only when its value covers the position's portfolio maintenance (~$12,800;
    the linear rule would ask ~$500), else the long holder (M) is deleveraged."""
    balances = {A: 13_000 * 10**6, INSURANCE_FUND: fund} | {address(i): FUNDS for i in (1, 2, 3)}
    chain = Chain(
        tmp_path / "db",
        balances,
        app_state=app_state(),
        validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)],
    )
    chain.run_block([])
    _short_calls(chain, ONE_BTC)
    result = chain.run_block([chain.tx(VALIDATOR, OracleVote(((BTC, usd(81_000)),)))])
    assert len(_events(result.events, "liquidation_started")) == 1
    assert bool(_events(result.events, "liquidation_taken_over")) is taken_over
    assert bool(_events(result.events, "deleveraged")) is not taken_over
    state = chain.app._committed
    assert load_position(state, A, CALL).size == 0
    assert load_position(state, INSURANCE_FUND, CALL).size == (-ONE_BTC if taken_over else 0)
    assert load_position(state, M, CALL).size == (ONE_BTC if taken_over else 0)
