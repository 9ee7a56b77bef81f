"""`derivd bench options`: fixed-point Black-Scholes quotes (price, delta, gamma, vega, theta) per
second on one core, in this process (execution.options.pricing; target 20,000/s, issue 17).

The inputs are `count` option series drawn from a seed before the timing: spot 100 .. 100,000,
moneyness K/S 0.5 .. 2 (with one in ten from 1e-3 to 1e3), vol 10% .. 200%, expiry one hour to two
years, rate -1% .. 10%, calls and puts alike; the figure is the best of `repeats` passes over all
of them (each pass prices every series once). `--profile` prints a cProfile of one more pass.
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


def bench_options(
    count: int = 20_000, seed: int = 1, repeats: int = 3, profile: bool = False
) -> dict[str, Any]:
    """Figures: options_per_second (best pass), microseconds per option, the passes' seconds and a
    checksum (sha256) of every output, equal on every machine for the same count and seed."""
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
    }
