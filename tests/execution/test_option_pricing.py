"""The fixed-point option pricing core (execution.options): each primitive against mpmath at 50
digits within its documented bound, Black-Scholes price and Greeks against an mpmath reference
over a grid of moneyness, vol, time and rate, put-call parity, monotonicity, expiry, extremes.

Tolerance of the Black-Scholes comparison (`TOLERANCE`): 0.5 unit (1e-18) for the final rounding,
1e-6 unit of slack, plus 1e-30 of the output's natural scale (pricing's docstring). The internal
Q128 steps carry errors of ~2**-110 (the normal table's truncation) amplified in d1 by at most
1/(sigma sqrt(t)) < 2**20 on this grid: ~2**-108 ~ 3e-33 of the scale, so 1e-30 leaves a margin of
~300. For the price (K <= 1000 S) that is ~1e-27 of the spot, where a mark price needs ~1e-9;
anything looser would let a broken series term or table entry pass.
"""

from __future__ import annotations

import mpmath  # type: ignore[import-untyped]
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from execution.options import fixedpoint as fp
from execution.options.fixedpoint import SCALE
from execution.options.pricing import Quote, black_scholes
from node.bench_options import Series, bench_options

mpmath.mp.dps = 50
mpf = mpmath.mpf

PRIMITIVE_BOUND = mpf("0.5") + mpf("1e-6")
"""The documented bound of every rounded primitive, in units (fixedpoint's docstring)."""
TOLERANCE = mpf("1e-30")
SECOND = SCALE // 31_557_600  # one second in years (Julian year)
FIVE_YEARS = 5 * SCALE


def real(x: int) -> mpmath.mpf:
    return mpf(x) / SCALE


def units(x: mpmath.mpf) -> mpmath.mpf:
    return x * SCALE


# ---- primitives -----------------------------------------------------------------------------------


@given(st.integers(0, 10**40))
@example(0)
@example(1)
@example(2 * SCALE)
@settings(max_examples=200, deadline=None)
def test_sqrt_is_the_nearest_unit(x: int) -> None:
    r = fp.sqrt(x)
    # (r - 1/2)**2 <= x * SCALE <= (r + 1/2)**2, exactly in integers
    assert max(2 * r - 1, 0) ** 2 <= 4 * x * SCALE <= (2 * r + 1) ** 2


@given(st.one_of(st.integers(1, 10**24), st.integers(1, 2**999)))
@example(1)
@example(SCALE)
@example(SCALE - 1)
@example(2 * SCALE)
@example(SCALE // 2)
@settings(max_examples=300, deadline=None)
def test_ln_within_bound(x: int) -> None:
    assert abs(fp.ln(x) - units(mpmath.log(real(x)))) <= PRIMITIVE_BOUND


@given(st.integers(-50 * SCALE, fp.EXP_MAX))
@example(0)
@example(fp.EXP_MAX)
@example(-SCALE)
@example(-42 * SCALE)
@example(1)
@settings(max_examples=300, deadline=None)
def test_exp_within_bound(x: int) -> None:
    assert abs(fp.exp(x) - units(mpmath.exp(real(x)))) <= PRIMITIVE_BOUND


@given(st.integers(-14 * SCALE, 14 * SCALE))
@example(0)
@example(13 * SCALE)
@example(-13 * SCALE)
@example(13 * SCALE + 1)
@example(SCALE // 128)  # half a grid cell
@example(SCALE // 64 * 3 + SCALE // 128 - 1)
@settings(max_examples=400, deadline=None)
def test_normal_cdf_and_pdf_within_bound(x: int) -> None:
    cdf = fp.norm_cdf(x)
    assert 0 <= cdf <= SCALE
    assert abs(cdf - units(mpmath.ncdf(real(x)))) <= PRIMITIVE_BOUND
    assert abs(fp.norm_pdf(x) - units(mpmath.npdf(real(x)))) <= PRIMITIVE_BOUND


@given(st.integers(-(14 << fp.FRAC), 14 << fp.FRAC))
@settings(max_examples=200, deadline=None)
def test_internal_normal_is_symmetric_and_accurate(x: int) -> None:
    """N(-x) = 1 - N(x) and phi(-x) = phi(x) exactly in Q128; the CDF within 2**-110 and the pdf
    within 2**-100 (beyond 13, the tails: < 2**-120)."""
    cdf, pdf = fp.normal_q(x)
    cdf_neg, pdf_neg = fp.normal_q(-x)
    assert cdf + cdf_neg == fp.ONE_Q and pdf == pdf_neg
    xr = mpf(x) / fp.ONE_Q
    inside = abs(xr) <= fp.NORMAL_X_MAX
    assert abs(mpf(cdf) / fp.ONE_Q - mpmath.ncdf(xr)) <= mpf(2) ** (-110 if inside else -120)
    assert abs(mpf(pdf) / fp.ONE_Q - mpmath.npdf(xr)) <= mpf(2) ** (-100 if inside else -120)


@given(st.integers(-45 << fp.FRAC, 20 << fp.FRAC))
@example(0)
@example(fp.LN2_Q)
@settings(max_examples=200, deadline=None)
def test_internal_exp_within_bound(x: int) -> None:
    """exp_q within 2**-120 of e**x relatively, or 2**-127 absolutely (a tiny result's floor)."""
    exact = mpmath.exp(mpf(x) / fp.ONE_Q)
    error = abs(mpf(fp.exp_q(x)) / fp.ONE_Q - exact)
    assert error <= max(exact * mpf(2) ** -120, mpf(2) ** -127)


@given(st.integers(1, 2**300), st.integers(1, 2**300))
@example(1, 1)
@example(3, 2)
@settings(max_examples=200, deadline=None)
def test_internal_ln_within_bound(a: int, b: int) -> None:
    exact = mpmath.log(mpf(a) / b)
    assert abs(mpf(fp.ln_ratio_q(a, b)) / fp.ONE_Q - exact) <= mpf(2) ** -124 * (1 + abs(exact))


def test_primitive_edges() -> None:
    assert fp.exp(0) == SCALE and fp.ln(SCALE) == 0 and fp.sqrt(SCALE) == SCALE
    assert fp.norm_cdf(0) == SCALE // 2 and fp.norm_cdf(14 * SCALE) == SCALE and fp.norm_cdf(-14 * SCALE) == 0
    assert fp.norm_pdf(14 * SCALE) == 0 and fp.exp(-43 * SCALE) == 0
    assert fp.sqrt(4 * SCALE) == 2 * SCALE and fp.sqrt(1) == 10**9
    with pytest.raises(ValueError):
        fp.exp(fp.EXP_MAX + 1)
    with pytest.raises(ValueError):
        fp.ln(0)
    with pytest.raises(ValueError):
        fp.sqrt(-1)


# ---- Black-Scholes against mpmath -----------------------------------------------------------------


def log_uniform(low: int, high: int, steps: int = 10**6) -> st.SearchStrategy[int]:
    """Ints spread evenly in log between low and high (mpmath builds them: no code under test)."""
    ratio = mpf(high) / low
    return st.integers(0, steps).map(lambda i: max(low, min(high, int(low * ratio ** (mpf(i) / steps)))))


@st.composite
def cases(draw: st.DrawFn) -> Series:
    spot = draw(log_uniform(10**15, 10**23))  # 0.001 .. 100,000
    moneyness = draw(st.integers(-3 * 10**6, 3 * 10**6))  # K/S = 10**(m / 1e6)
    strike = max(1, int(spot * mpf(10) ** (mpf(moneyness) / 10**6)))
    return Series(
        spot=spot,
        strike=strike,
        vol=draw(log_uniform(SCALE // 100, 5 * SCALE)),
        t=draw(log_uniform(SECOND, FIVE_YEARS)),
        rate=draw(st.integers(-SCALE // 20, SCALE // 5)),
        call=draw(st.booleans()),
    )


def quote(c: Series) -> Quote:
    return black_scholes(spot=c.spot, strike=c.strike, vol=c.vol, t=c.t, rate=c.rate, call=c.call)


def reference(c: Series) -> dict[str, tuple[mpmath.mpf, mpmath.mpf]]:
    """Each output's exact value (real) and natural scale (real), by mpmath at 50 digits."""
    s, k, v, t, r = real(c.spot), real(c.strike), real(c.vol), real(c.t), real(c.rate)
    vst = v * mpmath.sqrt(t)
    d1 = (mpmath.log(s / k) + (r + v * v / 2) * t) / vst
    d2 = d1 - vst
    df = mpmath.exp(-r * t)
    pdf = mpmath.npdf(d1)
    decay = s * pdf * v / (2 * mpmath.sqrt(t))
    if c.call:
        price = s * mpmath.ncdf(d1) - k * df * mpmath.ncdf(d2)
        delta = mpmath.ncdf(d1)
        theta = -decay - r * k * df * mpmath.ncdf(d2)
    else:
        price = k * df * mpmath.ncdf(-d2) - s * mpmath.ncdf(-d1)
        delta = mpmath.ncdf(d1) - 1
        theta = -decay + r * k * df * mpmath.ncdf(-d2)
    return {
        "price": (price, s + k),
        "delta": (delta, mpf(1)),
        "gamma": (pdf / (s * vst), mpmath.npdf(0) / (s * vst)),
        "vega": (s * pdf * mpmath.sqrt(t), s * mpmath.sqrt(t)),
        "theta": (theta, s * v / mpmath.sqrt(t) + abs(r) * k),
    }


def assert_matches_reference(c: Series) -> None:
    q = quote(c)
    for name, (exact, scale) in reference(c).items():
        got = getattr(q, name)
        error = abs(got - units(exact))
        assert error <= PRIMITIVE_BOUND + units(TOLERANCE * scale), (
            f"{name}: {got} vs {units(exact)} (error {error} units)"
        )


@given(cases())
@example(Series(spot=100 * SCALE, strike=100 * SCALE, vol=SCALE // 5, t=SCALE, rate=SCALE // 20, call=True))
@example(Series(spot=SCALE, strike=1000 * SCALE, vol=SCALE // 100, t=SECOND, rate=-SCALE // 20, call=False))
@example(Series(spot=SCALE, strike=SCALE // 1000, vol=5 * SCALE, t=FIVE_YEARS, rate=SCALE // 5, call=True))
@example(Series(spot=SCALE, strike=SCALE, vol=SCALE // 100, t=SECOND, rate=0, call=False))
# d2 = -10.5 on a large strike: K N(d2) is ~4 units, so the normal tail must not be cut at 10
@example(Series(spot=10**5 * SCALE, strike=10**8 * SCALE, vol=68 * SCALE // 100, t=SCALE, rate=0, call=True))
@settings(max_examples=300, deadline=None)
def test_black_scholes_matches_mpmath(c: Series) -> None:
    assert_matches_reference(c)


@given(cases())
@settings(max_examples=200, deadline=None)
def test_put_call_parity(c: Series) -> None:
    """C - P = S - K e**(-rt) to 1 unit plus the discount factor's error, and the Greeks' parity:
    delta_C - delta_P = 1; gamma and vega equal; theta_C - theta_P = -r K e**(-rt)."""
    args = {"spot": c.spot, "strike": c.strike, "vol": c.vol, "t": c.t, "rate": c.rate}
    call = black_scholes(**args, call=True)
    put = black_scholes(**args, call=False)
    discounted = real(c.strike) * mpmath.exp(-real(c.rate) * real(c.t))
    assert abs(call.price - put.price - units(real(c.spot) - discounted)) <= 1 + units(
        mpf("1e-30") * discounted
    )
    assert call.delta - put.delta == SCALE
    assert call.gamma == put.gamma and call.vega == put.vega
    assert abs(call.theta - put.theta + units(real(c.rate) * discounted)) <= 2


@given(cases(), st.integers(1, 10**17))
@settings(max_examples=100, deadline=None)
def test_price_rises_with_vol(c: Series, bump: int) -> None:
    higher = Series(spot=c.spot, strike=c.strike, vol=c.vol + bump, t=c.t, rate=c.rate, call=c.call)
    assert quote(higher).price >= quote(c).price


@given(cases(), st.integers(1, 10**22))
@settings(max_examples=100, deadline=None)
def test_call_price_falls_with_strike_and_put_rises(c: Series, bump: int) -> None:
    higher = Series(spot=c.spot, strike=c.strike + bump, vol=c.vol, t=c.t, rate=c.rate, call=c.call)
    if c.call:
        assert quote(higher).price <= quote(c).price
    else:
        assert quote(higher).price >= quote(c).price


@pytest.mark.parametrize(
    ("spot", "strike", "call", "expected"),
    [
        (120 * SCALE, 100 * SCALE, True, Quote(price=20 * SCALE, delta=SCALE, gamma=0, vega=0, theta=0)),
        (80 * SCALE, 100 * SCALE, True, Quote(price=0, delta=0, gamma=0, vega=0, theta=0)),
        (100 * SCALE, 100 * SCALE, True, Quote(price=0, delta=0, gamma=0, vega=0, theta=0)),
        (80 * SCALE, 100 * SCALE, False, Quote(price=20 * SCALE, delta=-SCALE, gamma=0, vega=0, theta=0)),
        (120 * SCALE, 100 * SCALE, False, Quote(price=0, delta=0, gamma=0, vega=0, theta=0)),
        (100 * SCALE, 100 * SCALE, False, Quote(price=0, delta=0, gamma=0, vega=0, theta=0)),
    ],
)
def test_intrinsic_value_at_expiry(spot: int, strike: int, call: bool, expected: Quote) -> None:
    assert (
        black_scholes(spot=spot, strike=strike, vol=SCALE // 2, t=0, rate=SCALE // 10, call=call) == expected
    )


def test_one_second_before_expiry_is_near_intrinsic() -> None:
    """One second out, 50% vol: a 20% in-the-money call is worth S - K e**(-rt) (its time value
    is ~1e-9000) with delta 1; an at-the-money one ~ S sigma sqrt(t/2pi)."""
    itm = black_scholes(
        spot=120 * SCALE, strike=100 * SCALE, vol=SCALE // 2, t=SECOND, rate=SCALE // 10, call=True
    )
    forward = units(real(120 * SCALE) - real(100 * SCALE) * mpmath.exp(-real(SCALE // 10) * real(SECOND)))
    assert abs(itm.price - forward) <= 1 and itm.delta == SCALE and itm.gamma == 0 and itm.vega == 0
    atm = Series(spot=100 * SCALE, strike=100 * SCALE, vol=SCALE // 2, t=SECOND, rate=0, call=True)
    assert_matches_reference(atm)
    assert (
        abs(
            quote(atm).price
            - units(real(atm.spot) * real(atm.vol) * mpmath.sqrt(real(SECOND) / (2 * mpmath.pi)))
        )
        < SCALE // 10**6
    )


@pytest.mark.parametrize("call", [True, False])
@pytest.mark.parametrize("strike", [50 * SCALE, 50_000 * SCALE, 50_000_000 * SCALE])
@pytest.mark.parametrize("vol", [1, SCALE // 10**6, 10**6 * SCALE])
@pytest.mark.parametrize("t", [1, SECOND, 100 * SCALE])
def test_extremes_stay_in_range(call: bool, strike: int, vol: int, t: int) -> None:
    """Tiny or huge vol, moneyness 1e-3..1e3, from 1e-18 of a year to a century: no error, prices
    within their no-arbitrage range, Greeks of the right sign and range."""
    spot = 50_000 * SCALE
    q = black_scholes(spot=spot, strike=strike, vol=vol, t=t, rate=SCALE // 20, call=call)
    assert 0 <= q.price <= (spot if call else strike)
    assert (0 <= q.delta <= SCALE) if call else (-SCALE <= q.delta <= 0)
    assert q.gamma >= 0 and q.vega >= 0
    if vol == 10**6 * SCALE and t >= SECOND and call:
        assert q.price == spot and q.delta == SCALE  # N(d1) = 1, N(d2) = 0


def test_invalid_inputs_raise() -> None:
    ok = {"spot": SCALE, "strike": SCALE, "vol": SCALE, "t": SCALE, "rate": 0, "call": True}
    for name, bad in [("spot", 0), ("strike", -1), ("vol", 0), ("t", -1), ("rate", 21 * SCALE)]:
        with pytest.raises(ValueError):
            black_scholes(**{**ok, name: bad})  # type: ignore[arg-type]


def test_same_ints_on_every_machine() -> None:
    """Pinned output of one quote (any change to the arithmetic or its rounding shows here; the
    values are within the bound of the mpmath test)."""
    q = black_scholes(
        spot=60_000 * SCALE,
        strike=61_000 * SCALE,
        vol=6 * SCALE // 10,
        t=SCALE // 12,
        rate=SCALE // 100,
        call=True,
    )
    assert q == Quote(
        price=3715993953343834994733,
        delta=498396983742367924,
        gamma=38387928928063,
        vega=6909827207051300681378,
        theta=-25137256196096664956913,
    )


def test_bench_quotes_are_pinned() -> None:
    """`derivd bench options`' 300 varied series (seed 7) give the same outputs on every machine."""
    figures = bench_options(300, 7, repeats=1)
    assert figures["checksum"] == "f65ab937c832eb18" and figures["options_per_second"] > 0
