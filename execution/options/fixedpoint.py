"""Integer-only fixed-point math for option pricing: exp, ln, sqrt and the standard normal pdf and
CDF, each with a tested error bound. No floats, no `math` float functions, no Decimal.

Two representations:

- **Public values** are decimal fixed point: an int `v` stands for `v / SCALE`, SCALE = 10**18
  (one unit = 1e-18). Every public function takes and returns such ints and rounds its result
  once, at the end, to the nearest unit (ties towards +infinity: `(y * SCALE + HALF) >> FRAC`).
- **Internal values** (the `*_q` functions, used by `pricing` so that only final results are
  rounded) are binary fixed point Q128: an int `q` stands for `q / 2**FRAC`, FRAC = 128. Internal
  steps truncate (floor); their errors are a few 2**-128 each, far below a public unit (2**-59.8).

Error bounds, in public units, each asserted against mpmath at 50 digits in
tests/execution/test_option_pricing.py (the 0.5 is the final rounding; the rest is the internal
error, below 1e-6 of a unit on these domains):

- `sqrt(x)`, x >= 0: exactly the nearest unit (`math.isqrt`, error <= 0.5).
- `ln(x)`, 1 <= x < 2**1000: error <= 0.5 + 1e-6.
- `exp(x)`, x <= EXP_MAX (20.0; ValueError above): error <= 0.5 + 1e-6; 0 once e**x < 0.5e-18.
- `norm_cdf(x)`, any x: error <= 0.5 + 1e-6; in [0, SCALE] always (clamped); exactly 0 or SCALE
  beyond |x| > 13 (the exact tail there is below 6.2e-39).
- `norm_pdf(x)`, any x: error <= 0.5 + 1e-6; exactly 0 beyond |x| > 13 (exact value < 8e-38).

Internally (Q128, asserted too): exp_q and ln_ratio_q are within a few 2**-128 (relative for
exp_q), normal_q's CDF within 2**-110 and its pdf within 2**-100 (the tails beyond 13 as above).

Methods. exp: x = k ln2 + r (|r| <= ln2/2), r = j/64 + s (|s| <= 1/128), e**x = 2**k e**(j/64)
e**s, the last by Taylor to s**14/14! (remainder < 2**-135). ln: a/b = 2**e m (m in [1/2, 2)),
m = c (1+u)/(1-u) around the centre c of its 1/128 cell (|u| <= 2**-8), ln m = ln c + 2 atanh u
to u**15/15 (remainder < 2**-140). Normal: the CDF and pdf at the 833 grid points k/64 of [0, 13]
with their Taylor coefficients (the derivatives of the pdf are Hermite polynomials:
phi^(n)(x) = (-1)^n He_n(x) phi(x)); x is evaluated from its nearest grid point (|h| <= 1/128)
(the CDF to h**12, the pdf to h**11); negative x by symmetry, N(-x) = 1 - N(x), exactly.
The tables and constants (ln 2, pi, the exp and ln tables, the normal grid) are computed at import
by integer series at 168 bits and rounded to 128: the same ints on every machine.
"""

from __future__ import annotations

from math import factorial, isqrt

SCALE = 10**18
"""Public fixed point: an int v is the real v / SCALE."""
FRAC = 128
"""Internal binary fixed point: an int q is the real q / 2**FRAC."""
ONE_Q = 1 << FRAC
HALF_Q = 1 << (FRAC - 1)

EXP_MAX = 20 * SCALE
"""Largest argument of `exp` (and of `exp_q` through the pricing's discount factor)."""
NORMAL_X_MAX = 13
"""Beyond |x| > NORMAL_X_MAX the CDF is 0 or 1 and the pdf 0."""

_BUILD = FRAC + 40  # precision of the import-time series
_GUARD = _BUILD - FRAC

_EXP_TERMS = 14
_LN_TERMS = 8  # atanh(u) = u (1 + w/3 + ... + w**7/15), w = u**2
_NORMAL_TERMS = 12  # CDF to h**12, pdf to h**11
_GRID_BITS = 6  # normal grid and exp table step: 1/64
_NORMAL_POINTS = NORMAL_X_MAX * (1 << _GRID_BITS) + 1


def to_q(x: int) -> int:
    """Public value -> Q128 (floor)."""
    return (x << FRAC) // SCALE


def from_q(q: int) -> int:
    """Q128 -> public value, rounded to the nearest unit (ties towards +infinity)."""
    return (q * SCALE + HALF_Q) >> FRAC


def _round_build(v: int) -> int:
    return (v + (1 << (_GUARD - 1))) >> _GUARD


# ---- import-time constants (integer series at _BUILD bits) ----------------------------------------


def _atanh_ratio(p: int, q: int, bits: int) -> int:
    """atanh(p/q) at `bits` fractional bits, 0 <= p/q <= 1/3 (or its negative)."""
    sign = -1 if p < 0 else 1
    p = abs(p)
    total = 0
    term = (p << bits) // q
    n = 0
    while term:
        total += term // (2 * n + 1)
        term = term * p * p // (q * q)
        n += 1
    return sign * total


def _atan_inv(k: int, bits: int) -> int:
    """atan(1/k) at `bits` fractional bits."""
    total = 0
    term = (1 << bits) // k
    n = 0
    while term:
        total += term // (2 * n + 1) if n % 2 == 0 else -(term // (2 * n + 1))
        term //= k * k
        n += 1
    return total


def _exp_build(num: int, den: int, bits: int) -> int:
    """e**(num/den) at `bits` fractional bits, num/den >= 0."""
    whole, rest = divmod(num, den)
    one = 1 << bits
    result = 0
    term = one
    n = 0
    while term:
        result += term
        n += 1
        term = term * rest // (den * n)
    e_one = 0
    term = one
    n = 0
    while term:
        e_one += term
        n += 1
        term //= n
    for _ in range(whole):
        result = result * e_one >> bits
    return result


_LN2_BUILD = 2 * _atanh_ratio(1, 3, _BUILD)
LN2_Q = _round_build(_LN2_BUILD)
_HALF_LN2_Q = LN2_Q >> 1
_PI_BUILD = 16 * _atan_inv(5, _BUILD) - 4 * _atan_inv(239, _BUILD)
_INV_SQRT_2PI_BUILD = (1 << (2 * _BUILD)) // isqrt((2 * _PI_BUILD) << _BUILD)

# e**(j/64) for j in [-24, 24]: index j + 24
_EXP_TABLE: tuple[int, ...] = tuple(
    _round_build(_exp_build(j, 64, _BUILD))
    if j >= 0
    else _round_build((1 << (2 * _BUILD)) // _exp_build(-j, 64, _BUILD))
    for j in range(-24, 25)
)
_INV_FACT: tuple[int, ...] = tuple(ONE_Q // factorial(n) for n in range(_EXP_TERMS + 1))

# ln((2j+1)/256), the centre of the cell [j/128, (j+1)/128), for j in [64, 256): index j - 64
_LN_TABLE: tuple[int, ...] = tuple(
    _round_build(2 * _atanh_ratio(2 * j + 1 - 256, 2 * j + 1 + 256, _BUILD)) for j in range(64, 256)
)
_INV_ODD: tuple[int, ...] = tuple(ONE_Q // (2 * n + 1) for n in range(_LN_TERMS))


def _normal_tables() -> tuple[tuple[tuple[int, ...], ...], tuple[tuple[int, ...], ...]]:
    """For each grid point x0 = k/64 of [0, 13]: the CDF's Taylor coefficients (N(x0), a_1..a_12,
    a_n = N^(n)(x0)/n!) and the pdf's (b_n = (n+1) a_(n+1), n = 0..11), in Q128. N(x0) is stepped
    from N(0) = 1/2 by the Taylor series of each cell to h**40 at 168 bits."""
    one = 1 << _BUILD
    step_terms = 40
    cdf_rows: list[tuple[int, ...]] = []
    pdf_rows: list[tuple[int, ...]] = []
    cdf = one >> 1
    for k in range(_NORMAL_POINTS):
        x0 = k << (_BUILD - _GRID_BITS)
        pdf = (_INV_SQRT_2PI_BUILD << _BUILD) // _exp_build(k * k, 2 << (2 * _GRID_BITS), _BUILD)
        hermite = [one, x0]  # He_0, He_1
        for n in range(1, step_terms):
            hermite.append((x0 * hermite[n] >> _BUILD) - n * hermite[n - 1])
        # a_n = (-1)**(n-1) He_(n-1)(x0) pdf(x0) / n!, n >= 1
        coef = [cdf] + [
            (-1 if (n - 1) % 2 else 1) * (hermite[n - 1] * pdf >> _BUILD) // factorial(n)
            for n in range(1, step_terms + 1)
        ]
        cdf_rows.append(tuple(_round_build(c) for c in coef[: _NORMAL_TERMS + 1]))
        pdf_rows.append(tuple(_round_build((n + 1) * coef[n + 1]) for n in range(_NORMAL_TERMS)))
        cdf += sum(coef[n] >> (_GRID_BITS * n) for n in range(1, step_terms + 1))
    return tuple(cdf_rows), tuple(pdf_rows)


_CDF_TABLE, _PDF_TABLE = _normal_tables()
_X_MAX_Q = NORMAL_X_MAX << FRAC
_CELL_SHIFT = FRAC - _GRID_BITS
_HALF_CELL = 1 << (_CELL_SHIFT - 1)


# ---- internal Q128 functions -----------------------------------------------------------------------


def exp_q(x: int) -> int:
    """e**x in Q128 for x in Q128 (x <= 20 for the documented bound; relative error < 2**-120)."""
    k = (x + _HALF_LN2_Q) // LN2_Q
    r = x - k * LN2_Q
    j = (r + _HALF_CELL) >> _CELL_SHIFT
    s = r - (j << _CELL_SHIFT)
    p = _INV_FACT[_EXP_TERMS]
    for n in range(_EXP_TERMS - 1, -1, -1):
        p = _INV_FACT[n] + (p * s >> FRAC)
    y = _EXP_TABLE[j + 24] * p >> FRAC
    return y << k if k >= 0 else y >> -k


def ln_ratio_q(a: int, b: int) -> int:
    """ln(a/b) in Q128 for ints a, b > 0 (absolute error < 2**-120 * (1 + |log2(a/b)|))."""
    e = a.bit_length() - b.bit_length()
    m = (a << FRAC) // (b << e) if e >= 0 else (a << (FRAC - e)) // b  # in [1/2, 2)
    j = m >> (FRAC - 7)
    c = (2 * j + 1) << (FRAC - 8)
    u = ((m - c) << FRAC) // (m + c)
    w = u * u >> FRAC
    p = _INV_ODD[_LN_TERMS - 1]
    for n in range(_LN_TERMS - 2, -1, -1):
        p = _INV_ODD[n] + (p * w >> FRAC)
    return ((e * _LN2_BUILD) >> _GUARD) + _LN_TABLE[j - 64] + 2 * (u * p >> FRAC)


def normal_q(x: int) -> tuple[int, int]:
    """(N(x), phi(x)) in Q128 for x in Q128: the standard normal CDF, clamped to [0, 1], and pdf."""
    ax = -x if x < 0 else x
    if ax > _X_MAX_Q:
        return (0 if x < 0 else ONE_Q), 0
    k = (ax + _HALF_CELL) >> _CELL_SHIFT
    h = ax - (k << _CELL_SHIFT)
    a = _CDF_TABLE[k]
    b = _PDF_TABLE[k]
    c = a[_NORMAL_TERMS]
    d = b[_NORMAL_TERMS - 1]
    for n in range(_NORMAL_TERMS - 1, 0, -1):
        c = a[n] + (c * h >> FRAC)
        d = b[n - 1] + (d * h >> FRAC)
    c = a[0] + (c * h >> FRAC)
    c = min(max(c, 0), ONE_Q)
    d = max(d, 0)
    return (ONE_Q - c if x < 0 else c), d


# ---- public functions (decimal fixed point, SCALE = 10**18) ----------------------------------------


def exp(x: int) -> int:
    """e**(x/SCALE), scaled; ValueError above EXP_MAX."""
    if x > EXP_MAX:
        raise ValueError(f"exp argument {x} above {EXP_MAX}")
    return from_q(exp_q(to_q(x)))


def ln(x: int) -> int:
    """ln(x/SCALE), scaled; ValueError for x <= 0."""
    if x <= 0:
        raise ValueError(f"ln of a non-positive value {x}")
    return from_q(ln_ratio_q(x, SCALE))


def sqrt(x: int) -> int:
    """sqrt(x/SCALE), scaled, to the nearest unit; ValueError for x < 0."""
    if x < 0:
        raise ValueError(f"sqrt of a negative value {x}")
    n = x * SCALE
    r = isqrt(n)
    return r + 1 if n - r * r > r else r


def norm_cdf(x: int) -> int:
    """The standard normal CDF at x/SCALE, scaled, in [0, SCALE]."""
    return from_q(normal_q(to_q(x))[0])


def norm_pdf(x: int) -> int:
    """The standard normal pdf at x/SCALE, scaled."""
    return from_q(normal_q(to_q(x))[1])
