"""`derivd bench options`: fixed-point Black-Scholes quotes (price, delta, gamma, vega, theta) per
second on one core, in this process (execution.options.pricing; target 20,000/s, issue 17), and the
scenario-grid portfolio margin of one account (execution.options.portfolio; target 2 ms for 50
positions, issue 17 item 4).

The inputs are `count` option series drawn from a seed before the timing: spot 100 .. 100,000,
moneyness K/S 0.5 .. 2 (with one in ten from 1e-3 to 1e3), vol 10% .. 200%, expiry one hour to two
years, rate -1% .. 10%, calls and puts alike; the figure is the best of `repeats` passes over all
of them (each pass prices every series once). `--profile` prints a cProfile of one more pass.

The portfolio figures are of one account drawn from the seed, whatever `count`: 50 positions on two
underlyings (BTC-like at $65,000 and ETH-like at $3,500, dYdX units), a perp on each and 48 options
of distinct series (strikes 0.7 .. 1.3 of the spot, expiry one day to a year, vol 30% .. 120%, calls
and puts, long and short), margined with the default `PortfolioParams` (13 prices x 3 vols). Warm:
`portfolio_margin` with every series' `ScenarioTable` already in the `SeriesGrid` (what an account
costs when the block's grids are shared); cold: a fresh `SeriesGrid` inside the timing (the 48
series' grids computed too). `series_grids_per_second` is the grids alone. Each is the best of its
passes.
"""

from __future__ import annotations

import cProfile
import hashlib
import pstats
import random
import time
from dataclasses import dataclass
from typing import Any

from execution.options.fixedpoint import SCALE
from execution.options.portfolio import (
    Leg,
    OptionLeg,
    PerpLeg,
    PortfolioParams,
    SeriesGrid,
    portfolio_margin,
    scenario_table,
)
from execution.options.pricing import Quote, black_scholes

HOUR = SCALE // 8766  # years (Julian year)


@dataclass(frozen=True, slots=True, kw_only=True)
class Series:
    spot: int
    strike: int
    vol: int
    t: int
    rate: int
    call: bool


def option_series(count: int, seed: int) -> list[Series]:
    """`count` varied series (fixed-point ints), the same for the same seed."""
    rng = random.Random(seed)
    series = []
    for i in range(count):
        spot = rng.randrange(100, 100_000) * SCALE + rng.randrange(SCALE)
        per_mille = rng.randrange(1, 1_000_000) if i % 10 == 0 else rng.randrange(500, 2_000)
        series.append(
            Series(
                spot=spot,
                strike=max(1, spot * per_mille // 1000),
                vol=rng.randrange(SCALE // 10, 2 * SCALE),
                t=rng.randrange(HOUR, 2 * SCALE),
                rate=rng.randrange(-SCALE // 100, SCALE // 10),
                call=i % 2 == 0,
            )
        )
    return series


def _price_all(series: list[Series]) -> list[Quote]:
    return [
        black_scholes(spot=s.spot, strike=s.strike, vol=s.vol, t=s.t, rate=s.rate, call=s.call)
        for s in series
    ]


def _checksum(quotes: list[Quote]) -> str:
    digest = hashlib.sha256()
    for q in quotes:
        digest.update(f"{q.price},{q.delta},{q.gamma},{q.vega},{q.theta};".encode())
    return digest.hexdigest()[:16]


PORTFOLIO_POSITIONS = 50
_UNDERLYINGS = ((1, 6_500_000_000), (2, 3_500_000_000))  # (market id, spot subticks), qce -9
_QCE = -9


def portfolio_account(seed: int) -> tuple[list[Leg], dict[int, int]]:
    """The bench's account (module docstring) and its spots, the same for the same seed."""
    rng = random.Random(seed)
    legs: list[Leg] = []
    for underlying, _ in _UNDERLYINGS:
        size = rng.randrange(1, 100) * 100_000_000 * rng.choice((-1, 1))
        legs.append(PerpLeg(underlying=underlying, size=size, qce=_QCE))
    for i in range(PORTFOLIO_POSITIONS - len(legs)):
        underlying, spot = _UNDERLYINGS[i % len(_UNDERLYINGS)]
        legs.append(
            OptionLeg(
                underlying=underlying,
                size=rng.randrange(1, 100) * 100_000_000 * rng.choice((-1, 1)),
                qce=_QCE,
                strike=spot * rng.randrange(70, 131) // 100 // 100_000 * 100_000,
                t=rng.randrange(SCALE // 365, SCALE),
                call=i % 2 == 0,
                vol=rng.randrange(3, 13) * SCALE // 10,
            )
        )
    return legs, dict(_UNDERLYINGS)


def _series_grids(legs: list[Leg], spots: dict[int, int], params: PortfolioParams) -> int:
    count = 0
    for leg in legs:
        if isinstance(leg, OptionLeg):
            scenario_table(
                strike=leg.strike,
                t=leg.t,
                call=leg.call,
                vol=leg.vol,
                spot=spots[leg.underlying],
                params=params,
            )
            count += 1
    return count


def _bench_portfolio(seed: int, repeats: int, profile: bool) -> dict[str, Any]:
    legs, spots = portfolio_account(seed)
    params = PortfolioParams()
    cold, warm, grids = [], [], []
    series = 0
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        series = _series_grids(legs, spots, params)
        grids.append(time.perf_counter() - start)
        start = time.perf_counter()
        grid = SeriesGrid(params)
        margin = portfolio_margin(legs, spots, params, grid)
        cold.append(time.perf_counter() - start)
        for _ in range(10):
            start = time.perf_counter()
            portfolio_margin(legs, spots, params, grid)
            warm.append(time.perf_counter() - start)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        portfolio_margin(legs, spots, params)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    return {
        "portfolio_positions": len(legs),
        "portfolio_margin_ms_50_positions_warm": min(warm) * 1e3,
        "portfolio_margin_ms_50_positions_cold": min(cold) * 1e3,
        "series_grids_per_second": series / min(grids),
        "portfolio_maintenance": margin.maintenance,
        "portfolio_initial": margin.initial,
    }


def bench_options(
    count: int = 20_000, seed: int = 1, repeats: int = 3, profile: bool = False
) -> dict[str, Any]:
    """Figures: options_per_second (best pass), microseconds per option, the passes' seconds and a
    checksum (sha256) of every output, equal on every machine for the same count and seed; then the
    portfolio margin figures (module docstring), whose maintenance and initial requirements are
    equal on every machine for the same seed."""
    series = option_series(count, seed)
    seconds = []
    quotes: list[Quote] = []
    for _ in range(repeats):
        start = time.perf_counter()
        quotes = _price_all(series)
        seconds.append(time.perf_counter() - start)
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        _price_all(series)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
    best = min(seconds)
    return {
        "count": count,
        "seed": seed,
        "options_per_second": count / best,
        "microseconds_per_option": best / count * 1e6,
        "pass_seconds": seconds,
        "checksum": _checksum(quotes),
        **_bench_portfolio(seed, repeats, profile),
    }
