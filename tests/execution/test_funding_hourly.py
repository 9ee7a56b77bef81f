"""Funding as dYdX v4 does it (issue 16, item 6): the rate is quoted per 8-hour rate period (mean
premium + 100 ppm of interest, clamped to 600% of the market's IMF - MMF) and each hourly tick pays
1/8 of it through the funding index. The expectations are computed here, in fractions, from the
notional and the rule as the issue states it, never with the module's rate or index functions."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.accounts import load_account
from execution.exchange.books import Books
from execution.exchange.context import ExchangeContext
from execution.genesis_state import AppState, default_exchange_app_state, init_exchange_state, parse_app_state
from execution.markets import Market, default_markets
from execution.oracle.prices import OracleParams, OraclePrice, store_price
from execution.positions.funding_index import (
    FUNDING_INDEX_SCALE,
    INDEX_MAX,
    INDEX_MIN,
    INSURANCE_FUND,
    load_funding_index,
    load_market_funding,
    load_pool,
    load_settled_position,
    store_market_funding,
)
from execution.positions.position import Position, load_position, store_position
from execution.risk.funding import (
    FundingParams,
    funding_end_block,
    funding_imbalances,
    init_funding_state,
)
from execution.state import StateView
from primitives import codec
from primitives.keys import Address
from storage import schema
from tests.execution.chain import GENESIS_TIME, Empty

BTC_MARKET, ETH_MARKET = default_markets()
BTC, ETH = BTC_MARKET.market_id, ETH_MARKET.market_id
PPM = 10**6
HOUR = 3600
NS = 10**9
LONG, SHORT, LONG2, SHORT2 = (Address(bytes([i]) * 20) for i in range(1, 5))
STALE_AFTER = 5
FIRST_HEIGHT = STALE_AFTER + 1  # the genesis prices (height 0) are stale from here: no new samples


def ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


def floor(x: Fraction) -> int:
    return x.numerator // x.denominator


def notional(market: Market, size: int, price: int) -> Fraction:
    """Quote quantums of `size` base quantums at `price` subticks."""
    return Fraction(size * price) * Fraction(10) ** market.quantum_conversion_exponent


def exchange_state(
    params: FundingParams, markets: tuple[Market, ...] = (BTC_MARKET, ETH_MARKET)
) -> StateView:
    view = StateView(Empty())
    init_exchange_state(view, AppState(markets=markets, oracle=OracleParams(3, STALE_AFTER)), 1)
    init_funding_state(view, params, GENESIS_TIME)
    return view


def set_premium(view: StateView, market_id: int, sample_sum: int, sample_count: int) -> None:
    """The running interval's samples (the prices are stale at the ticks: no sample is added)."""
    funding = load_market_funding(view, market_id)
    store_market_funding(view, market_id, replace(funding, sample_sum=sample_sum, sample_count=sample_count))


def tick(view: StateView, params: FundingParams, n: int) -> list[dict[str, str]]:
    """The n-th tick (n >= 1), at exactly its time, written to `view`; its events."""
    child = StateView(view)
    height = FIRST_HEIGHT + n
    found = funding_end_block(
        child,
        ExchangeContext(height, Books.load(view), live=True),
        height,
        GENESIS_TIME + n * params.interval_ns,
    )
    assert found, "a tick"
    child.apply_to(view)
    return [{a.key: a.value for a in e.attributes} for e in found]


def open_pair(view: StateView, market_id: int, long: Address, short: Address, size: int) -> None:
    store_position(view, long, market_id, Position(size=size))
    store_position(view, short, market_id, Position(size=-size))


def settle(view: StateView, owner: Address, market_id: int) -> int:
    """Settle `owner`'s position; what it paid now (negative: received)."""
    before = load_position(view, owner, market_id).quote
    return before - load_settled_position(view, owner, market_id).quote


DEFAULTS = parse_app_state(default_exchange_app_state()).funding


def test_the_default_genesis_has_dydx_parameters() -> None:
    assert default_exchange_app_state()["funding"] == {
        "interval_seconds": 3600,
        "rate_period_seconds": 8 * 3600,
        "interest_ppm": 100,
        "clamp_factor_ppm": 6_000_000,
        "impact_notional": 10_000_000_000,
    }
    assert FundingParams() == DEFAULTS


@pytest.mark.parametrize(("sample_sum", "sample_count"), [(1_234, 2), (-2_967, 2), (0, 0)])
def test_an_hourly_tick_pays_exactly_one_eighth_of_the_8_hour_rate(
    sample_sum: int, sample_count: int
) -> None:
    view = exchange_state(DEFAULTS)
    size = 10_000 * 10**6 + 3  # 1.0000000003 BTC: the payment is not a whole number of quantums
    open_pair(view, BTC, LONG, SHORT, size)
    set_premium(view, BTC, sample_sum, sample_count)
    (btc_tick, _) = tick(view, DEFAULTS, 1)
    mean = int(Fraction(sample_sum, sample_count)) if sample_count else 0
    rate_8h = mean + 100
    assert btc_tick["rate_ppm"] == str(rate_8h)
    assert btc_tick["applied_ppm"] == str(int(Fraction(rate_8h, 8)))  # toward zero
    owed = notional(BTC_MARKET, size, BTC_MARKET.initial_price) * rate_8h / PPM / 8  # exact: 6.5 a quantum
    assert settle(view, LONG, BTC) == ceil(owed)  # a payer pays the ceiling
    assert -settle(view, SHORT, BTC) == floor(owed)  # a receiver gets the floor
    assert load_market_funding(view, BTC).last_rate_ppm == rate_8h  # the 8-hour rate is kept
    assert funding_imbalances(view) == {BTC: 0}


def test_eight_hourly_ticks_pay_the_8_hour_rate_within_rounding() -> None:
    view = exchange_state(DEFAULTS)
    price = 6_500_000_007  # each tick's index move is rounded toward zero
    store_price(view, BTC, OraclePrice(price, 0))
    size, size2 = 12_345_678_901, 7 * 10**9 + 1
    open_pair(view, BTC, LONG, SHORT, size)  # settled once, at the end
    open_pair(view, BTC, LONG2, SHORT2, size2)  # settled after every tick
    hourly_long = hourly_short = 0
    for n in range(1, 9):
        set_premium(view, BTC, 3 * 1_001, 3)  # a premium of 1,001 ppm per 8 h, every hour
        tick(view, DEFAULTS, n)
        hourly_long += settle(view, LONG2, BTC)
        hourly_short -= settle(view, SHORT2, BTC)
    rate_8h = 1_001 + 100
    exact_index = Fraction(rate_8h * price * FUNDING_INDEX_SCALE, PPM) * Fraction(10) ** -9
    index = load_funding_index(view, BTC)
    assert exact_index - 8 < index <= exact_index  # eight roundings toward zero, each < 1 unit
    exact = notional(BTC_MARKET, size, price) * rate_8h / PPM
    paid, received = settle(view, LONG, BTC), -settle(view, SHORT, BTC)
    assert abs(paid - exact) < 1 and abs(received - exact) < 1 and paid >= received
    exact2 = notional(BTC_MARKET, size2, price) * rate_8h / PPM
    assert abs(hourly_long - exact2) < 8 and abs(hourly_short - exact2) < 8  # one rounding an hour
    assert hourly_long >= hourly_short
    assert funding_imbalances(view) == {BTC: 0}


WIDE = replace(ETH_MARKET, initial_margin_ppm=100_000, maintenance_margin_ppm=40_000)  # IMF - MMF = 6%


@pytest.mark.parametrize("premium", [PPM, -PPM, None])  # None: no sample, the interest alone
@pytest.mark.parametrize(
    ("clamp_factor_ppm", "btc_clamp", "wide_clamp"),
    [
        (6_000_000, 6 * 20_000, 6 * 60_000),  # 600% of 2% and of 6%
        (1_500_000, 30_000, 90_000),  # 150%
        (40_000_000, 800_000, PPM),  # 4000% of 6% = 240%: at most 100% per 8 h
        (0, 0, 0),
    ],
)
def test_the_clamp_follows_the_markets_imf_minus_mmf(
    premium: int | None, clamp_factor_ppm: int, btc_clamp: int, wide_clamp: int
) -> None:
    params = FundingParams(clamp_factor_ppm=clamp_factor_ppm)
    view = exchange_state(params, (BTC_MARKET, WIDE))
    if premium is not None:
        set_premium(view, BTC, premium, 1)
        set_premium(view, WIDE.market_id, premium, 1)
    btc_tick, wide_tick = tick(view, params, 1)
    btc_rate = max(-btc_clamp, min(btc_clamp, (premium or 0) + 100))
    wide_rate = max(-wide_clamp, min(wide_clamp, (premium or 0) + 100))
    assert (btc_tick["rate_ppm"], wide_tick["rate_ppm"]) == (str(btc_rate), str(wide_rate))
    assert btc_tick["applied_ppm"] == str(int(Fraction(btc_rate, 8)))
    expected = Fraction(btc_rate * BTC_MARKET.initial_price * FUNDING_INDEX_SCALE, 8 * PPM * 10**9)
    assert load_funding_index(view, BTC) == int(expected)


def test_interest_alone_pays_100_ppm_per_8_hours() -> None:
    view = exchange_state(DEFAULTS)
    for n in range(1, 9):
        ticks = tick(view, DEFAULTS, n)
        assert [(t["rate_ppm"], t["applied_ppm"], t["samples"]) for t in ticks] == [("100", "12", "0")] * 2
    for market in (BTC_MARKET, ETH_MARKET):
        # 100 ppm of one base quantum's value, in index units: exact for both markets
        per_quantum = notional(market, 1, market.initial_price) * 100 / PPM
        assert load_funding_index(view, market.market_id) == per_quantum * FUNDING_INDEX_SCALE
    assert load_funding_index(view, BTC) == 650_000_000  # $65,000 * 0.01% per BTC of 10**10 quantums


@pytest.mark.parametrize(
    ("old", "new", "hint"),
    [
        ("interest_ppm_per_interval", "interest_ppm", "per rate_period_seconds"),
        ("clamp_ppm", "clamp_factor_ppm", "clamp_factor_ppm * (initial_margin_ppm - maintenance_margin_ppm)"),
    ],
)
def test_an_old_genesis_gets_the_replacement_keys_named(old: str, new: str, hint: str) -> None:
    with pytest.raises(ValueError, match=rf"^app_state\.funding\.{old}: replaced by {new}\b") as caught:
        parse_app_state({"funding": {"interval_seconds": 3600, old: 12}})
    assert hint in str(caught.value)


def test_the_parameters_record_has_the_new_layout() -> None:
    old_record = codec.encode([3600, 12, 625, 10_000_000_000])  # the former 4-field parameters
    with pytest.raises(codec.DecodeError, match="funding params"):
        FundingParams.decode(old_record)
    view = StateView(Empty())
    view.put(schema.FUNDING_PARAMS, FundingParams(interest_ppm=-7).encode())
    assert FundingParams.decode(view.get(schema.FUNDING_PARAMS) or b"") == FundingParams(interest_ppm=-7)


@settings(max_examples=200, deadline=None)
@given(
    interval=st.integers(1, 2 * HOUR),
    periods=st.integers(1, 16),  # rate period = interval * periods + extra
    extra=st.integers(0, HOUR),
    interest=st.integers(-1_000, 1_000),
    premiums=st.lists(st.tuples(st.integers(-PPM, PPM), st.integers(1, 5)), min_size=1, max_size=4),
    price=st.integers(1, 10**12),
    qce=st.integers(-11, 2),  # a valid market: step * subticks_per_tick * 10**qce an integer
    sizes=st.lists(st.integers(-(10**9), 10**9), min_size=1, max_size=5),
    touched=st.lists(st.lists(st.integers(0, 5), max_size=3), min_size=4, max_size=4),
)
def test_hourly_funding_is_zero_sum_up_to_the_pools_dust(
    interval: int,
    periods: int,
    extra: int,
    interest: int,
    premiums: list[tuple[int, int]],
    price: int,
    qce: int,
    sizes: list[int],
    touched: list[list[int]],
) -> None:
    params = FundingParams(
        interval_seconds=interval, rate_period_seconds=interval * periods + extra, interest_ppm=interest
    )
    market = replace(BTC_MARKET, quantum_conversion_exponent=qce)
    view = exchange_state(params, (market,))
    store_price(view, BTC, OraclePrice(price, 0))
    sizes = [*sizes, -sum(sizes)]
    owners = [Address(bytes([0xA0 + i]) * 20) for i in range(len(sizes))]
    for owner, size in zip(owners, sizes, strict=True):
        store_position(view, owner, BTC, Position(size=size))
    clamp = min(PPM, 6 * (market.initial_margin_ppm - market.maintenance_margin_ppm))
    index = 0
    paid = dict.fromkeys(owners, 0)
    settled = dict.fromkeys(owners, 1)  # the settlements of each owner (the last one included)
    for n, (mean, count) in enumerate(premiums, start=1):
        set_premium(view, BTC, mean * count, count)
        (event,) = tick(view, params, n)
        rate = max(-clamp, min(clamp, mean + interest))
        move = Fraction(rate * price * FUNDING_INDEX_SCALE * interval, params.rate_period_seconds * PPM)
        index = max(INDEX_MIN, min(INDEX_MAX, index + int(move * Fraction(10) ** qce)))  # int(): toward 0
        assert (event["rate_ppm"], event["index"]) == (str(rate), str(index))
        assert set(funding_imbalances(view).values()) <= {0}  # {} without positions
        for i in touched[(n - 1) % len(touched)]:
            owner = owners[i % len(owners)]
            paid[owner] += settle(view, owner, BTC)
            settled[owner] += 1
        assert set(funding_imbalances(view).values()) <= {0}
    for owner in owners:
        paid[owner] += settle(view, owner, BTC)
    longs_pay = sum(p for p in paid.values() if p > 0)
    shorts_get = -sum(p for p in paid.values() if p < 0)
    dust = sum(paid.values())  # longs pay what shorts receive, plus the rounding dust
    assert longs_pay - shorts_get == dust and 0 <= dust < sum(settled.values())
    for owner, size in zip(owners, sizes, strict=True):  # under one quantum per settlement beyond its share
        assert 0 <= paid[owner] - Fraction(size * index, FUNDING_INDEX_SCALE) < settled[owner]
    pool = load_pool(view, BTC)
    assert pool.balance + load_account(view, INSURANCE_FUND).balance == dust
    assert pool.dust == 0 and pool.balance == pool.sweepable
