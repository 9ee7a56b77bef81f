"""Scenario-grid portfolio margin of one account's perpetual and option legs (issue 17 item 4): the
leg records, `PortfolioParams` (and its canonical bytes), the per-series `ScenarioTable` and its
per-block cache `SeriesGrid`, and `portfolio_margin` / `portfolio_value`, pure functions of ints.

Units are the markets' (`execution.markets`): sizes in signed base quantums, prices in subticks,
values in quote quantums; a leg's value at price P is size * P * 10**qce. An option's base unit is
its underlying's, so its price (Black-Scholes, `execution.options.pricing`, at spot P, its strike,
implied vol, time to expiry and the params' rate) is in the underlying's subticks; the BS inputs and
prices are SCALE (10**18) fixed point, so an option leg's value is size * price * 10**qce / SCALE.

The grid, per underlying with spot P: the prices P_i = floor(P * SCALE * (n * 1e6 + i * range_ppm)
/ (n * 1e6)) / SCALE for i = -n..n (n = `price_steps`; 2n + 1 points, P_0 = P exactly) times the
vols {vol, floor(vol * (1e6 + vol_up_ppm) / 1e6), max(1, floor(vol * (1e6 - vol_down_ppm) / 1e6))}
of each option (perps ignore vol): 3 (2n + 1) scenarios, scenario index (i + n) * 3 + j (j: current,
up, down vol). A leg moves only with its own underlying's scenarios.

Rounding, in the protocol's favour. Every leg value inside the computation is exact: with
e = max(0, -min qce) over an underlying's legs, a leg contributes the integer
size * price_fp * 10**(qce + e) in units of 1 / (SCALE * 10**e) quote quantums (price_fp the
scenario spot for a perp, the option's BS price for an option; the one inexact input is that BS
price, rounded by `pricing` to the nearest 1e-18 subtick). Then, once each:

- a scenario's loss on an underlying = value now - value in the scenario, summed exactly over the
  underlying's legs, rounded UP (ceil) to a quote quantum; the underlying's worst loss is the
  largest such loss, and at least 0 (the scenario "now", i = 0 at the current vol, is in the grid);
- a short option's floor = ceil(|size| * P * 10**qce * short_option_floor_ppm / 1e6), per leg;
- maintenance = sum over underlyings of the worst losses + sum of the floors (no offset across
  underlyings); initial = ceil(maintenance * initial_factor_ppm / 1e6);
- `portfolio_value` = sum over underlyings of floor(value now) (values round DOWN).

Cost: a `ScenarioTable` (the 3 (2n + 1) BS prices of one option series at one spot and vol) is the
expensive part (`pricing.price_grid`); a `SeriesGrid` keeps them for the caller (one block: the
spot and vol are in the key), so an account's step is (2n + 1) * 3 integer multiply-adds per leg.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import assert_never

from execution.markets import MAX_EXPONENT, MIN_EXPONENT, pow10, scale_ceil
from execution.options.fixedpoint import SCALE
from execution.options.pricing import price_grid
from primitives import codec

PPM = 1_000_000
RATE_UNIT = SCALE // PPM
"""rate_ppm * RATE_UNIT is the SCALE fixed-point rate `pricing` takes."""
VOL_SCENARIOS = 3
"""Per price point: the current vol, vol up, vol down (index j = 0, 1, 2)."""
MAX_PRICE_STEPS = 1_000


@dataclass(frozen=True, slots=True, kw_only=True)
class PerpLeg:
    """A perpetual position: `size` signed base quantums of `underlying`'s market, whose
    quantum_conversion_exponent is `qce`."""

    underlying: int
    size: int
    qce: int

    def __post_init__(self) -> None:
        _check_qce(self.qce)


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionLeg:
    """A European option position on `underlying`: `size` signed base quantums (the underlying's
    base unit and `qce`), `strike` in subticks (> 0), `t` years to expiry (SCALE, >= 0), a call or a
    put, `vol` its implied vol (SCALE, > 0)."""

    underlying: int
    size: int
    qce: int
    strike: int
    t: int
    call: bool
    vol: int

    def __post_init__(self) -> None:
        _check_qce(self.qce)
        if self.strike <= 0:
            raise ValueError(f"strike must be positive, got {self.strike}")
        if self.t < 0:
            raise ValueError(f"t must not be negative, got {self.t}")
        if self.vol <= 0:
            raise ValueError(f"vol must be positive, got {self.vol}")


Leg = PerpLeg | OptionLeg


def _check_qce(qce: int) -> None:
    if not MIN_EXPONENT <= qce <= MAX_EXPONENT:
        raise ValueError(f"qce must be in [{MIN_EXPONENT}, {MAX_EXPONENT}], got {qce}")


PORTFOLIO_FIELDS = (
    "price_range_ppm",
    "price_steps",
    "vol_up_ppm",
    "vol_down_ppm",
    "short_option_floor_ppm",
    "initial_factor_ppm",
    "rate_ppm",
)
"""`PortfolioParams`' fields, in declaration (and encoding) order."""

_BOUNDS: tuple[tuple[int, int], ...] = (
    (0, PPM - 1),  # price_range_ppm: every scenario price stays positive
    (1, MAX_PRICE_STEPS),  # price_steps
    (0, 10 * PPM),  # vol_up_ppm
    (0, PPM),  # vol_down_ppm (the down vol never goes below 1 unit)
    (0, PPM),  # short_option_floor_ppm
    (PPM, 10 * PPM),  # initial_factor_ppm: initial >= maintenance
    (-PPM, PPM),  # rate_ppm: |rate| <= 100% a year
)
"""The [lo, hi] of each field of `PORTFOLIO_FIELDS`, in order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioParams:
    """The scenario grid and the add-ons (the module docstring has the formulas)."""

    price_range_ppm: int = 150_000
    price_steps: int = 6
    vol_up_ppm: int = 300_000
    vol_down_ppm: int = 250_000
    short_option_floor_ppm: int = 10_000
    initial_factor_ppm: int = 1_250_000
    rate_ppm: int = 0

    def __post_init__(self) -> None:
        for name, (lo, hi) in zip(PORTFOLIO_FIELDS, _BOUNDS, strict=True):
            value = getattr(self, name)
            if type(value) is not int or not lo <= value <= hi:
                raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")

    @property
    def scenario_count(self) -> int:
        return (2 * self.price_steps + 1) * VOL_SCENARIOS

    def to_json(self) -> dict[str, int]:
        """The genesis `options` section of these parameters."""
        return {name: getattr(self, name) for name in PORTFOLIO_FIELDS}

    def encode(self) -> bytes:
        return codec.encode([getattr(self, name) for name in PORTFOLIO_FIELDS])

    @classmethod
    def decode(cls, raw: bytes) -> PortfolioParams:
        f = codec.field_list(codec.decode(raw), "portfolio params", len(PORTFOLIO_FIELDS))
        values = {
            name: codec.field_int(value, f"portfolio params.{name}", lo, hi)
            for name, value, (lo, hi) in zip(PORTFOLIO_FIELDS, f, _BOUNDS, strict=True)
        }
        return cls(**values)


if tuple(f.name for f in fields(PortfolioParams)) != PORTFOLIO_FIELDS:
    raise ImportError("PORTFOLIO_FIELDS is not PortfolioParams' field order")


# -- the grid --------------------------------------------------------------------------------------


def scenario_spots(spot: int, params: PortfolioParams) -> tuple[int, ...]:
    """The 2n + 1 scenario prices of an underlying at `spot` subticks, SCALE fixed point, from -range
    to +range (index n is `spot * SCALE` exactly)."""
    if spot <= 0:
        raise ValueError(f"spot must be positive, got {spot}")
    n = params.price_steps
    den = n * PPM
    return tuple(spot * SCALE * (den + i * params.price_range_ppm) // den for i in range(-n, n + 1))


def scenario_vols(vol: int, params: PortfolioParams) -> tuple[int, int, int]:
    """(vol, vol up, vol down), SCALE fixed point, the last never below 1 unit."""
    return (
        vol,
        vol * (PPM + params.vol_up_ppm) // PPM,
        max(1, vol * (PPM - params.vol_down_ppm) // PPM),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioTable:
    """One option series' BS price (SCALE fixed-point subticks per base unit) in every scenario of
    the grid around one spot and vol, at scenario index (i + n) * 3 + j (module docstring)."""

    prices: tuple[int, ...]


def scenario_table(
    *, strike: int, t: int, call: bool, vol: int, spot: int, params: PortfolioParams
) -> ScenarioTable:
    """The `ScenarioTable` of a series, uncached."""
    return ScenarioTable(
        prices=price_grid(
            spots=scenario_spots(spot, params),
            strike=strike * SCALE,
            vols=scenario_vols(vol, params),
            t=t,
            rate=params.rate_ppm * RATE_UNIT,
            call=call,
        )
    )


SeriesKey = tuple[int, int, int, bool, int, int]
"""(underlying, strike, t, call, vol, spot)"""


class SeriesGrid:
    """A cache of `ScenarioTable`s (by `SeriesKey`) and of the perps' scenario prices (by spot) for
    one `PortfolioParams`: computed once, shared by every account margined with it. The caller
    decides its lifetime (one block: spots and vols change between blocks, and the keys hold them,
    so an old entry is never wrong, only useless)."""

    __slots__ = ("_spot_rows", "_tables", "params")

    def __init__(self, params: PortfolioParams) -> None:
        self.params = params
        self._tables: dict[SeriesKey, ScenarioTable] = {}
        self._spot_rows: dict[int, tuple[int, ...]] = {}

    def __len__(self) -> int:
        """The number of series tables held."""
        return len(self._tables)

    def table(
        self, *, underlying: int, strike: int, t: int, call: bool, vol: int, spot: int
    ) -> ScenarioTable:
        """The series' table, computed on the first ask."""
        key = (underlying, strike, t, call, vol, spot)
        table = self._tables.get(key)
        if table is None:
            table = scenario_table(strike=strike, t=t, call=call, vol=vol, spot=spot, params=self.params)
            self._tables[key] = table
        return table

    def spot_row(self, spot: int) -> tuple[int, ...]:
        """`scenario_spots(spot)` with each price repeated for the 3 vols: a perp's scenario row."""
        row = self._spot_rows.get(spot)
        if row is None:
            row = tuple(p for p in scenario_spots(spot, self.params) for _ in range(VOL_SCENARIOS))
            self._spot_rows[spot] = row
        return row


# -- margin ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioMargin:
    """An account's requirements in quote quantums: `worst_loss` is (underlying, worst scenario
    loss) for every underlying with a leg, by underlying; `floor` the short options' add-on."""

    maintenance: int
    initial: int
    worst_loss: tuple[tuple[int, int], ...]
    floor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class _Underlying:
    underlying: int
    values: list[int]  # the exact value in every scenario, in 1 / (SCALE * 10**e) quote quantums
    exponent: int  # e
    floor: int  # its short options' floors, quote quantums


def _by_underlying(legs: Iterable[Leg]) -> dict[int, list[Leg]]:
    groups: dict[int, list[Leg]] = {}
    for leg in legs:
        groups.setdefault(leg.underlying, []).append(leg)
    return groups


def _weighted_sum(terms: Sequence[tuple[int, tuple[int, ...]]], count: int) -> list[int]:
    """sum_k weight_k * row_k[i] for each scenario i (every row has `count` entries): one list
    built for up to three terms, the common case (exact integers, so the grouping changes nothing)."""
    if not terms:
        return [0] * count
    if len(terms) == 1:
        a, p = terms[0]
        return [a * x for x in p]
    if len(terms) == 2:
        (a, p), (b, q) = terms
        return [a * x + b * y for x, y in zip(p, q, strict=True)]
    (a, p), (b, q), (c, r) = terms[:3]
    values = [a * x + b * y + c * z for x, y, z in zip(p, q, r, strict=True)]
    for w, row in terms[3:]:
        values = [v + w * x for v, x in zip(values, row, strict=True)]
    return values


def _underlyings(
    legs: Iterable[Leg], spots: Mapping[int, int], params: PortfolioParams, grid: SeriesGrid | None
) -> list[_Underlying]:
    """Each underlying's exact scenario values, by underlying."""
    if grid is None:
        grid = SeriesGrid(params)
    elif grid.params is not params and grid.params != params:
        raise ValueError("the SeriesGrid was made for other params")
    floor_ppm = params.short_option_floor_ppm
    count = params.scenario_count
    tables = grid._tables  # `grid.table`'s cache, read here first (the legs' common case)
    groups = _by_underlying(legs)
    out = []
    for underlying in sorted(groups):
        group = groups[underlying]
        spot = spots.get(underlying)
        if spot is None or spot <= 0:
            raise ValueError(f"no positive spot price for underlying {underlying}: {spot}")
        e = max(0, -min(leg.qce for leg in group))
        terms: list[tuple[int, tuple[int, ...]]] = []
        perp_weight = 0
        floor = 0
        for leg in group:
            if not leg.size:
                continue
            weight = leg.size * pow10(leg.qce + e)
            if isinstance(leg, PerpLeg):
                perp_weight += weight
            elif isinstance(leg, OptionLeg):
                table = tables.get((underlying, leg.strike, leg.t, leg.call, leg.vol, spot))
                if table is None:
                    table = grid.table(
                        underlying=underlying,
                        strike=leg.strike,
                        t=leg.t,
                        call=leg.call,
                        vol=leg.vol,
                        spot=spot,
                    )
                terms.append((weight, table.prices))
                if leg.size < 0:
                    floor += scale_ceil(-leg.size * spot * floor_ppm, leg.qce - 6)  # ppm = 10**-6
            else:
                assert_never(leg)
        if perp_weight:
            terms.append((perp_weight, grid.spot_row(spot)))
        values = _weighted_sum(terms, count)
        out.append(_Underlying(underlying=underlying, values=values, exponent=e, floor=floor))
    return out


def portfolio_margin(
    legs: Sequence[Leg], spots: Mapping[int, int], params: PortfolioParams, grid: SeriesGrid | None = None
) -> PortfolioMargin:
    """The maintenance and initial requirements of `legs` at `spots` (underlying -> subticks), the
    worst loss of each underlying and the short-option floor (module docstring). `grid` is a cache
    for `params` (a fresh one if None); ValueError for an underlying without a positive spot."""
    worst: list[tuple[int, int]] = []
    floor = 0
    for u in _underlyings(legs, spots, params, grid):
        now = u.values[params.price_steps * VOL_SCENARIOS]
        den = SCALE * pow10(u.exponent)
        worst.append((u.underlying, -((min(u.values) - now) // den)))  # ceil((now - min) / den)
        floor += u.floor
    maintenance = sum(loss for _, loss in worst) + floor
    return PortfolioMargin(
        maintenance=maintenance,
        initial=-(-maintenance * params.initial_factor_ppm // PPM),
        worst_loss=tuple(worst),
        floor=floor,
    )


def portfolio_value(
    legs: Sequence[Leg], spots: Mapping[int, int], params: PortfolioParams, grid: SeriesGrid | None = None
) -> int:
    """The legs' value now (at the current spots and vols), quote quantums: floor per underlying."""
    total = 0
    for u in _underlyings(legs, spots, params, grid):
        total += u.values[params.price_steps * VOL_SCENARIOS] // (SCALE * pow10(u.exponent))
    return total
