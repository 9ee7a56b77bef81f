"""Scenario-grid portfolio margin (execution.options.portfolio) against a reference that prices every
scenario with `black_scholes` and sums in exact fractions; the hedge, side, premium, floor and
no-offset-across-underlyings properties; the series cache; the params record; and the price-only
fast path of `execution.options.pricing` (the same ints as `black_scholes`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from fractions import Fraction
from math import ceil

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from execution.options.fixedpoint import SCALE
from execution.options.portfolio import (
    PORTFOLIO_FIELDS,
    Leg,
    OptionLeg,
    PerpLeg,
    PortfolioMargin,
    PortfolioParams,
    SeriesGrid,
    portfolio_margin,
    portfolio_value,
)
from execution.options.pricing import black_scholes, bs_price, price_grid
from primitives.codec import DecodeError, encode

PPM = 1_000_000
BTC = 6_500_000_000  # subticks: $65,000 with qce -9, atomic resolution -10
WEEK = SCALE * 7 // 365
DEFAULT = PortfolioParams()

# ---- the reference: every scenario priced by black_scholes, summed exactly ---------------------------


def _leg_value(leg: Leg, spot_fp: int, vol: int, params: PortfolioParams) -> Fraction:
    """The exact quote value of `leg` at a SCALE fixed-point spot and (for an option) a vol."""
    if isinstance(leg, PerpLeg):
        price = spot_fp
    else:
        price = black_scholes(
            spot=spot_fp,
            strike=leg.strike * SCALE,
            vol=vol,
            t=leg.t,
            rate=params.rate_ppm * 10**12,
            call=leg.call,
        ).price
    return Fraction(leg.size * price, SCALE) * Fraction(10) ** leg.qce


def _vols(vol: int, params: PortfolioParams) -> list[int]:
    return [vol, vol * (PPM + params.vol_up_ppm) // PPM, max(1, vol * (PPM - params.vol_down_ppm) // PPM)]


def scenario_losses(legs: Sequence[Leg], spot: int, params: PortfolioParams) -> list[Fraction]:
    """Value now - value in each of the (2n + 1) * 3 scenarios, exactly, for legs of one underlying."""
    n = params.price_steps
    now = sum((_leg_value(leg, spot * SCALE, getattr(leg, "vol", 1), params) for leg in legs), Fraction(0))
    losses = []
    for i in range(-n, n + 1):
        spot_fp = spot * SCALE * (n * PPM + i * params.price_range_ppm) // (n * PPM)
        for j in range(3):
            value = sum(
                (
                    _leg_value(
                        leg, spot_fp, _vols(leg.vol, params)[j] if isinstance(leg, OptionLeg) else 1, params
                    )
                    for leg in legs
                ),
                Fraction(0),
            )
            losses.append(now - value)
    return losses


def short_floor(legs: Sequence[Leg], spot: int, params: PortfolioParams) -> int:
    return sum(
        ceil(Fraction(-leg.size * spot * params.short_option_floor_ppm, PPM) * Fraction(10) ** leg.qce)
        for leg in legs
        if isinstance(leg, OptionLeg) and leg.size < 0
    )


# ---- strategies -----------------------------------------------------------------------------------

params_st = st.builds(
    PortfolioParams,
    price_range_ppm=st.integers(0, 500_000),
    price_steps=st.integers(1, 6),
    vol_up_ppm=st.integers(0, 2 * PPM),
    vol_down_ppm=st.integers(0, PPM),
    short_option_floor_ppm=st.integers(0, 50_000),
    initial_factor_ppm=st.integers(PPM, 2 * PPM),
    rate_ppm=st.integers(-50_000, 200_000),
)


@st.composite
def option_legs(draw: st.DrawFn, underlying: int, size: st.SearchStrategy[int]) -> OptionLeg:
    return OptionLeg(
        underlying=underlying,
        size=draw(size),
        qce=draw(st.integers(-10, 3)),
        strike=draw(st.integers(10**6, 2 * 10**10)),
        t=draw(st.one_of(st.just(0), st.integers(1, 2 * SCALE))),
        call=draw(st.booleans()),
        vol=draw(st.integers(SCALE // 100, 2 * SCALE)),
    )


@st.composite
def accounts(draw: st.DrawFn) -> tuple[list[Leg], dict[int, int]]:
    legs: list[Leg] = []
    sizes = st.integers(-(10**11), 10**11)
    for _ in range(draw(st.integers(1, 4))):
        underlying = draw(st.sampled_from([1, 2]))
        if draw(st.booleans()):
            legs.append(PerpLeg(underlying=underlying, size=draw(sizes), qce=draw(st.integers(-10, 3))))
        else:
            legs.append(draw(option_legs(underlying, sizes)))
    spots = {u: draw(st.integers(10**6, 10**10)) for u in (1, 2)}
    return legs, spots


def margin(
    legs: Sequence[Leg], spots: Mapping[int, int], params: PortfolioParams = DEFAULT
) -> PortfolioMargin:
    return portfolio_margin(legs, spots, params)


# ---- the grid ------------------------------------------------------------------------------------


@given(accounts(), params_st)
@settings(max_examples=60, deadline=None)
def test_margin_is_exactly_the_worst_grid_loss_rounded_up_never_below_a_scenario(
    account: tuple[list[Leg], dict[int, int]], params: PortfolioParams
) -> None:
    legs, spots = account
    result = portfolio_margin(legs, spots, params)
    underlyings = sorted({leg.underlying for leg in legs})
    expected = []
    floor = 0
    for u in underlyings:
        group = [leg for leg in legs if leg.underlying == u]
        losses = scenario_losses(group, spots[u], params)
        worst = result.worst_loss[underlyings.index(u)][1]
        assert all(worst >= loss for loss in losses), "below the loss of a grid scenario"
        expected.append((u, ceil(max([Fraction(0), *losses]))))
        floor += short_floor(group, spots[u], params)
    assert result.worst_loss == tuple(expected)
    assert result.floor == floor
    assert result.maintenance == sum(loss for _, loss in expected) + floor
    assert result.initial == ceil(Fraction(result.maintenance * params.initial_factor_ppm, PPM))


def test_the_default_grid_is_13_prices_by_3_vols_and_its_worst_case_is_the_corner() -> None:
    call = OptionLeg(underlying=1, size=10**10, qce=-9, strike=BTC, t=SCALE // 12, call=True, vol=SCALE // 2)
    losses = scenario_losses([call], BTC, DEFAULT)
    assert len(losses) == 39 == DEFAULT.scenario_count
    assert max(losses) == losses[2], "a long call loses most at -15% and vol down"
    assert margin([call], {1: BTC}).worst_loss == ((1, ceil(losses[2])),)


@given(
    size=st.integers(1, 10**12).flatmap(lambda n: st.sampled_from([n, -n])),
    price=st.integers(1, 10**12),
    qce=st.integers(-12, 0),
)
@example(size=-1, price=1, qce=-9)
@settings(max_examples=80, deadline=None)
def test_a_perp_alone_needs_exactly_15_percent_of_its_notional_rounded_up(
    size: int, price: int, qce: int
) -> None:
    result = margin([PerpLeg(underlying=7, size=size, qce=qce)], {7: price})
    expected = ceil(Fraction(abs(size) * price * 15, 100) * Fraction(10) ** qce)
    assert result.worst_loss == ((7, expected),) and result.floor == 0
    assert result.maintenance == expected
    assert result.initial == ceil(Fraction(expected * 5, 4))


@given(
    size=st.integers(1, 1000),
    moneyness=st.integers(70, 130),
    vol=st.integers(SCALE // 5, 3 * SCALE // 2),
    t=st.integers(WEEK, SCALE),
)
@settings(max_examples=40, deadline=None)
def test_a_delta_hedged_call_needs_less_than_its_two_legs_apart(
    size: int, moneyness: int, vol: int, t: int
) -> None:
    step = 1_000_000
    call = OptionLeg(
        underlying=1, size=size * 10**8, qce=-9, strike=BTC * moneyness // 100, t=t, call=True, vol=vol
    )
    delta = black_scholes(spot=BTC * SCALE, strike=call.strike * SCALE, vol=vol, t=t, rate=0, call=True).delta
    hedge = PerpLeg(
        underlying=1, size=-((2 * delta * call.size // SCALE + step) // (2 * step)) * step, qce=-9
    )
    assume(hedge.size != 0)  # a call so far out of the money that it needs no hedge
    spots = {1: BTC}
    together = margin([call, hedge], spots).maintenance
    assert together < margin([call], spots).maintenance + margin([hedge], spots).maintenance


@given(account=accounts())
@settings(max_examples=40, deadline=None)
def test_long_options_lose_at_most_their_premium_and_short_ones_carry_the_floor(
    account: tuple[list[Leg], dict[int, int]],
) -> None:
    legs, spots = account
    longs: list[Leg] = [replace(leg, size=abs(leg.size)) for leg in legs if isinstance(leg, OptionLeg)]
    shorts: list[Leg] = [replace(leg, size=-abs(leg.size)) for leg in legs if isinstance(leg, OptionLeg)]
    if not longs:
        return
    long_margin = margin(longs, spots)
    assert long_margin.floor == 0
    for u, loss in long_margin.worst_loss:
        group = [leg for leg in longs if leg.underlying == u]
        # -portfolio_value of the opposite legs is the premium rounded up
        premium = -portfolio_value([replace(leg, size=-leg.size) for leg in group], spots, DEFAULT)
        assert 0 <= loss <= premium
        assert portfolio_value(group, spots, DEFAULT) <= premium <= portfolio_value(group, spots, DEFAULT) + 1
    short_margin = margin(shorts, spots)
    floors = sum(
        short_floor([leg for leg in shorts if leg.underlying == u], spots[u], DEFAULT) for u in (1, 2)
    )
    assert short_margin.floor == floors
    assert short_margin.maintenance == sum(loss for _, loss in short_margin.worst_loss) + floors


def test_a_deep_out_of_the_money_short_put_needs_its_floor() -> None:
    put = OptionLeg(underlying=1, size=-(10**10), qce=-9, strike=BTC // 4, t=WEEK, call=False, vol=SCALE // 2)
    result = margin([put], {1: BTC})
    assert result.worst_loss == ((1, 0),), "worth 0 in every scenario"
    assert result.floor == 650_000_000 == result.maintenance  # 1% of 1 BTC at $65,000


def test_different_underlyings_do_not_offset() -> None:
    long1 = PerpLeg(underlying=1, size=10**10, qce=-9)
    short2 = PerpLeg(underlying=2, size=-(10**10), qce=-9)
    short1 = replace(short2, underlying=1)
    spots = {1: BTC, 2: BTC}
    apart = margin([long1], spots).maintenance + margin([short2], spots).maintenance
    both = margin([short2, long1], spots)
    assert both.maintenance == apart == 2 * 9_750_000_000
    assert both.worst_loss == ((1, 9_750_000_000), (2, 9_750_000_000)), "by underlying"
    assert margin([long1, short1], spots).maintenance == 0, "the same two on one underlying cancel"


def test_an_underlying_without_a_spot_is_refused() -> None:
    with pytest.raises(ValueError, match="underlying 2"):
        margin([PerpLeg(underlying=2, size=1, qce=-9)], {1: BTC})
    with pytest.raises(ValueError, match="underlying 1"):
        margin([PerpLeg(underlying=1, size=1, qce=-9)], {1: 0})


# ---- the cache -----------------------------------------------------------------------------------


@given(st.lists(accounts(), min_size=1, max_size=4), params_st)
@settings(max_examples=25, deadline=None)
def test_a_shared_series_grid_gives_the_uncached_answer(
    batch: list[tuple[list[Leg], dict[int, int]]], params: PortfolioParams
) -> None:
    grid = SeriesGrid(params)
    spots = batch[0][1]  # one block: one spot per underlying for every account
    for legs, _ in batch + batch:
        assert portfolio_margin(legs, spots, params, grid) == portfolio_margin(legs, spots, params)
        assert portfolio_value(legs, spots, params, grid) == portfolio_value(legs, spots, params)
    series = {
        (leg.underlying, leg.strike, leg.t, leg.call, leg.vol)
        for legs, _ in batch
        for leg in legs
        if isinstance(leg, OptionLeg) and leg.size != 0
    }
    assert len(grid) == len(series), "one table per series, computed once"


def test_a_grid_of_other_params_is_refused_and_a_new_spot_is_a_new_table() -> None:
    call = OptionLeg(underlying=1, size=10**10, qce=-9, strike=BTC, t=SCALE // 12, call=True, vol=SCALE // 2)
    grid = SeriesGrid(DEFAULT)
    with pytest.raises(ValueError, match="other params"):
        portfolio_margin([call], {1: BTC}, replace(DEFAULT, price_steps=5), grid)
    first = portfolio_margin([call], {1: BTC}, DEFAULT, grid)
    moved = portfolio_margin([call], {1: BTC + 100_000}, DEFAULT, grid)
    assert len(grid) == 2 and moved != first
    assert moved == margin([call], {1: BTC + 100_000})


# ---- params --------------------------------------------------------------------------------------


def test_params_defaults_and_field_order() -> None:
    assert PORTFOLIO_FIELDS == (
        "price_range_ppm",
        "price_steps",
        "vol_up_ppm",
        "vol_down_ppm",
        "short_option_floor_ppm",
        "initial_factor_ppm",
        "rate_ppm",
    )
    assert [getattr(DEFAULT, name) for name in PORTFOLIO_FIELDS] == [
        150_000,
        6,
        300_000,
        250_000,
        10_000,
        1_250_000,
        0,
    ]


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("price_range_ppm", -1),
        ("price_range_ppm", PPM),
        ("price_steps", 0),
        ("vol_up_ppm", -1),
        ("vol_down_ppm", PPM + 1),
        ("short_option_floor_ppm", -1),
        ("initial_factor_ppm", PPM - 1),
        ("rate_ppm", PPM + 1),
        ("rate_ppm", -PPM - 1),
    ],
)
def test_params_out_of_range_name_the_field(name: str, bad: int) -> None:
    with pytest.raises(ValueError, match=name):
        PortfolioParams(**{name: bad})
    fields = [getattr(DEFAULT, n) for n in PORTFOLIO_FIELDS]
    fields[PORTFOLIO_FIELDS.index(name)] = bad
    with pytest.raises(DecodeError, match=name):
        PortfolioParams.decode(encode(fields))


@given(params_st)
def test_params_encode_decode_round_trip(params: PortfolioParams) -> None:
    raw = params.encode()
    assert PortfolioParams.decode(raw) == params
    assert PortfolioParams.decode(raw).encode() == raw


def test_params_decode_refuses_a_wrong_shape() -> None:
    with pytest.raises(DecodeError, match="7 fields"):
        PortfolioParams.decode(encode([1, 2, 3]))


def test_legs_validate_their_fields() -> None:
    with pytest.raises(ValueError, match="strike"):
        OptionLeg(underlying=1, size=1, qce=-9, strike=0, t=1, call=True, vol=1)
    with pytest.raises(ValueError, match="vol"):
        OptionLeg(underlying=1, size=1, qce=-9, strike=1, t=1, call=True, vol=0)
    with pytest.raises(ValueError, match="t must"):
        OptionLeg(underlying=1, size=1, qce=-9, strike=1, t=-1, call=True, vol=1)
    with pytest.raises(ValueError, match="qce"):
        PerpLeg(underlying=1, size=1, qce=31)


# ---- the price-only fast path ----------------------------------------------------------------------

fast_inputs = st.fixed_dictionaries(
    {
        "spot": st.integers(1, 10**24),
        "strike": st.integers(1, 10**24),
        "vol": st.integers(1, 5 * SCALE),
        "t": st.one_of(st.just(0), st.integers(1, 5 * SCALE)),
        "rate": st.integers(-SCALE // 10, SCALE // 4),
        "call": st.booleans(),
    }
)


@given(fast_inputs)
@settings(max_examples=300, deadline=None)
def test_bs_price_is_black_scholes_price_to_the_unit(inputs: dict[str, int]) -> None:
    assert bs_price(**inputs) == black_scholes(**inputs).price  # type: ignore[arg-type]


@given(
    spots=st.lists(st.integers(1, 10**22), min_size=1, max_size=4),
    vols=st.lists(st.integers(1, 3 * SCALE), min_size=1, max_size=3),
    strike=st.integers(1, 10**22),
    t=st.integers(0, 2 * SCALE),
    call=st.booleans(),
)
@settings(max_examples=60, deadline=None)
def test_price_grid_is_spot_major_black_scholes(
    spots: list[int], vols: list[int], strike: int, t: int, call: bool
) -> None:
    grid = price_grid(spots=spots, strike=strike, vols=vols, t=t, rate=SCALE // 20, call=call)
    assert grid == tuple(
        black_scholes(spot=s, strike=strike, vol=v, t=t, rate=SCALE // 20, call=call).price
        for s in spots
        for v in vols
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"spot": 0}, "spot"),
        ({"strike": -1}, "strike"),
        ({"vol": 0}, "vol"),
        ({"t": -1}, "expiry"),
        ({"rate": 21 * SCALE}, "rate"),
    ],
)
def test_bs_price_refuses_what_black_scholes_refuses(change: dict[str, int], message: str) -> None:
    inputs = {"spot": SCALE, "strike": SCALE, "vol": SCALE, "t": SCALE, "rate": 0, "call": True} | change
    with pytest.raises(ValueError, match=message):
        black_scholes(**inputs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        bs_price(**inputs)  # type: ignore[arg-type]
