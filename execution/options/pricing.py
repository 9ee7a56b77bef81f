"""Deterministic fixed-point Black-Scholes for European calls and puts on a non-dividend
underlying: the `Quote` record (price and Greeks) and `black_scholes`, a pure function of ints,
and its price-only fast path over a grid of spots and vols (`price_grid`, `bs_price`).

Units (SCALE = 10**18 fixed point, `execution.options.fixedpoint`): `spot`, `strike` and `price`
are prices (> 0); `vol` is the annualised volatility (0.5 = 50%, > 0); `t` is years to expiry
(>= 0); `rate` the continuously compounded annual rate (any sign). Greeks: `delta` = dV/dS,
`gamma` = d2V/dS2 (per unit of price), `vega` = dV/dvol per 1.0 of vol (divide by 100 for one
vol point), `theta` = dV/dt of calendar time per year (the negative of dV/dT; divide by 365 for a
day). |rate * t| must be at most 20 (ValueError otherwise, like a non-positive spot, strike or vol
or a negative t).

Computation: d1 and d2, N(d1), N(d2), phi(d1) and the discount factor e**(-rate t) are Q128
internal values (`fixedpoint`'s *_q functions, truncating steps of ~2**-128); each output is
then rounded once to the nearest unit (ties towards +infinity), the price clamped at 0. The put
uses N(-d) = 1 - N(d), exactly, so put-call parity C - P = S - K e**(-rate t) holds to 1 unit
plus the discount factor's error (< 2**-120 K). At t == 0 the price is the intrinsic value,
delta is 1 or 0 for a call (1 only strictly in the money), -1 or 0 for a put, and gamma, vega and
theta are 0. Far in or out of the money, or with sigma sqrt(t) tiny, |d| exceeds 13 and N(d) is
exactly 0 or 1 and phi(d) exactly 0 (`fixedpoint.NORMAL_X_MAX`); with vol huge N(d1) -> 1 and
N(d2) -> 0, so the call tends to the spot. Nothing raises or overflows on such inputs.

Accuracy against the exact Black-Scholes values of the same inputs, asserted with mpmath in
tests/execution/test_option_pricing.py over moneyness K/S in [1e-3, 1e3], vol 1%..500%, t of one
second to 5 years, rate -5%..20%, spot 0.001..100,000 (`TOLERANCE` there): every output is within
0.5 unit (its rounding) + 1e-6 unit + 1e-30 of its natural scale: S + K for the price; 1 for
delta; phi(0)/(S sigma sqrt(t)) for gamma; S sqrt(t) for vega; S sigma/sqrt(t) + |r| K for
theta. (The internal error is ~2**-108 of the scale: the normal table's 2**-110, and the Q128
steps of d1 amplified by 1/(sigma sqrt(t)) < 2**20 on that grid.) For the price that is ~1e-27
of the spot, where a mark price needs perhaps 1e-9.

`price_grid` (and `bs_price`, its one-point case) is the price alone, the very same int as
`black_scholes(...).price` by the very same integer steps, for scenario grids (portfolio margin):
no Greeks, the CDF without the pdf, and the discount factor, ln(S/K) and sigma sqrt(t) computed
once per grid, spot and vol respectively: ~4x cheaper per price than a full quote.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import isqrt

from execution.options.fixedpoint import (
    _CDF_TABLE,  # the normal CDF's Taylor rows, for _cdf_q (fixedpoint exports no CDF-only Q128 function)
    _GRID_BITS,
    EXP_MAX,
    FRAC,
    HALF_Q,
    NORMAL_X_MAX,
    ONE_Q,
    SCALE,
    exp_q,
    from_q,
    ln_ratio_q,
    normal_q,
)

_SCALE2 = SCALE * SCALE
_SCALE3 = _SCALE2 * SCALE
_MAX_RATE_TIME = EXP_MAX * SCALE  # |rate * t| in SCALE**2 units
_HALF_2Q = 1 << (2 * FRAC - 1)


@dataclass(frozen=True, slots=True, kw_only=True)
class Quote:
    """A European option's price and Greeks, each a SCALE fixed-point int (units in the module
    docstring)."""

    price: int
    delta: int
    gamma: int
    vega: int
    theta: int


def _div_round(num: int, den: int) -> int:
    """num / den to the nearest int, ties towards +infinity (den > 0)."""
    return (2 * num + den) // (2 * den)


def _intrinsic(spot: int, strike: int, call: bool) -> Quote:
    if call:
        return Quote(
            price=max(spot - strike, 0), delta=SCALE if spot > strike else 0, gamma=0, vega=0, theta=0
        )
    return Quote(price=max(strike - spot, 0), delta=-SCALE if spot < strike else 0, gamma=0, vega=0, theta=0)


def black_scholes(*, spot: int, strike: int, vol: int, t: int, rate: int, call: bool) -> Quote:
    """The Black-Scholes price and Greeks of a European call (`call`) or put; see the module
    docstring for units, rounding and bounds."""
    if spot <= 0 or strike <= 0:
        raise ValueError(f"spot {spot} and strike {strike} must be positive")
    if vol <= 0:
        raise ValueError(f"vol {vol} must be positive")
    if t < 0:
        raise ValueError(f"time to expiry {t} must not be negative")
    rate_time = rate * t  # SCALE**2
    if abs(rate_time) > _MAX_RATE_TIME:
        raise ValueError(f"|rate * t| above {EXP_MAX // SCALE}")
    if t == 0:
        return _intrinsic(spot, strike, call)

    vol2_t = vol * vol * t  # SCALE**3
    sqrt_t = isqrt((t << (2 * FRAC)) // SCALE)  # Q128, > 0 for t >= 1
    v = max(isqrt((vol2_t << (2 * FRAC)) // _SCALE3), 1)  # sigma sqrt(t), Q128
    drift = ((2 * SCALE * rate_time + vol2_t) << FRAC) // (2 * _SCALE3)  # (r + sigma**2/2) t
    d1 = ((ln_ratio_q(spot, strike) + drift) << FRAC) // v
    n1, pdf1 = normal_q(d1)
    n2 = normal_q(d1 - v)[0]
    k_df = strike * exp_q(-((rate_time << FRAC) // _SCALE2))  # K e**(-rt), SCALE * Q128

    if call:
        value = ((spot * n1) << FRAC) - k_df * n2  # SCALE * Q256
        delta = n1
        carry = -rate * k_df * n2  # -r K e**(-rt) N(d2), SCALE**2 * Q256
    else:
        value = k_df * (ONE_Q - n2) - ((spot * (ONE_Q - n1)) << FRAC)
        delta = n1 - ONE_Q
        carry = rate * k_df * (ONE_Q - n2)
    decay = ((spot * pdf1 * vol) << FRAC) // (2 * SCALE * sqrt_t)  # S phi sigma / (2 sqrt t), SCALE * Q128
    return Quote(
        price=max((value + _HALF_2Q) >> (2 * FRAC), 0),
        delta=from_q(delta),
        gamma=_div_round(pdf1 * _SCALE2, spot * v),
        vega=(spot * pdf1 * sqrt_t + _HALF_2Q) >> (2 * FRAC),
        theta=(-decay + carry // (SCALE << FRAC) + HALF_Q) >> FRAC,
    )


# ---- price-only fast path (portfolio margin's scenario grids) ----------------------------------------

_X_MAX_Q = NORMAL_X_MAX << FRAC
_CELL_SHIFT = FRAC - _GRID_BITS
_HALF_CELL = 1 << (_CELL_SHIFT - 1)
if any(len(row) != 13 for row in _CDF_TABLE):  # _cdf_q below is unrolled for 12 Taylor terms
    raise ImportError("fixedpoint's normal CDF table changed shape; update pricing._cdf_q")


def _cdf_q(x: int) -> int:
    """`normal_q(x)[0]` without the pdf: the same integer steps (the Horner loop unrolled), so the
    same int."""
    ax = -x if x < 0 else x
    if ax > _X_MAX_Q:
        return 0 if x < 0 else ONE_Q
    k = (ax + _HALF_CELL) >> _CELL_SHIFT
    h = ax - (k << _CELL_SHIFT)
    a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12 = _CDF_TABLE[k]
    c = a11 + (a12 * h >> FRAC)
    c = a10 + (c * h >> FRAC)
    c = a9 + (c * h >> FRAC)
    c = a8 + (c * h >> FRAC)
    c = a7 + (c * h >> FRAC)
    c = a6 + (c * h >> FRAC)
    c = a5 + (c * h >> FRAC)
    c = a4 + (c * h >> FRAC)
    c = a3 + (c * h >> FRAC)
    c = a2 + (c * h >> FRAC)
    c = a1 + (c * h >> FRAC)
    c = a0 + (c * h >> FRAC)
    if c < 0:
        c = 0
    elif c > ONE_Q:
        c = ONE_Q
    return ONE_Q - c if x < 0 else c


def _check_inputs(spot: int, strike: int, vol: int, t: int, rate: int) -> None:
    """black_scholes's ValueErrors, in its order."""
    if spot <= 0 or strike <= 0:
        raise ValueError(f"spot {spot} and strike {strike} must be positive")
    if vol <= 0:
        raise ValueError(f"vol {vol} must be positive")
    if t < 0:
        raise ValueError(f"time to expiry {t} must not be negative")
    if abs(rate * t) > _MAX_RATE_TIME:
        raise ValueError(f"|rate * t| above {EXP_MAX // SCALE}")


def price_grid(
    *, spots: Sequence[int], strike: int, vols: Sequence[int], t: int, rate: int, call: bool
) -> tuple[int, ...]:
    """`black_scholes(spot=s, strike=strike, vol=v, t=t, rate=rate, call=call).price` for every s
    in `spots` and v in `vols`, spot-major (index i * len(vols) + j), each the very same int; the
    same ValueErrors. No Greeks, and the work that does not change along the grid is done once:
    the discount factor once, ln(S/K) once per spot, sigma sqrt(t) and the drift once per vol."""
    if not spots or not vols:
        return ()
    _check_inputs(min(spots), strike, min(vols), t, rate)  # a failing spot or vol if there is one
    if t == 0:
        return tuple(max(s - strike, 0) if call else max(strike - s, 0) for s in spots for _ in vols)
    rate_time = rate * t  # SCALE**2
    k_df = strike * exp_q(-((rate_time << FRAC) // _SCALE2))  # K e**(-rt), SCALE * Q128
    per_vol = []
    for vol in vols:
        vol2_t = vol * vol * t  # SCALE**3
        v = max(isqrt((vol2_t << (2 * FRAC)) // _SCALE3), 1)  # sigma sqrt(t), Q128
        per_vol.append((v, ((2 * SCALE * rate_time + vol2_t) << FRAC) // (2 * _SCALE3)))
    cdf = _cdf_q
    shift = 2 * FRAC
    out: list[int] = []
    for spot in spots:
        ln_sk = ln_ratio_q(spot, strike)
        for v, drift in per_vol:
            d1 = ((ln_sk + drift) << FRAC) // v
            n1 = cdf(d1)
            n2 = cdf(d1 - v)
            if call:
                value = ((spot * n1) << FRAC) - k_df * n2  # SCALE * Q256
            else:
                value = k_df * (ONE_Q - n2) - ((spot * (ONE_Q - n1)) << FRAC)
            price = (value + _HALF_2Q) >> shift
            out.append(price if price > 0 else 0)
    return tuple(out)


def bs_price(*, spot: int, strike: int, vol: int, t: int, rate: int, call: bool) -> int:
    """`black_scholes(...).price` without the Greeks: the same int, the same ValueErrors."""
    return price_grid(spots=(spot,), strike=strike, vols=(vol,), t=t, rate=rate, call=call)[0]
