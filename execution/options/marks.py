"""An option series' mark record (`OptionMark`, at `schema.option_mark_key`): the Black-Scholes
quote the end of a block computed for it (`execution.risk.option_series`) and the inputs it was
computed from, which the margin of option positions reads (`execution.positions.margin`).
"""

from __future__ import annotations

from dataclasses import dataclass

from execution.markets import OptionTerms
from execution.options.fixedpoint import SCALE
from execution.options.pricing import Quote, black_scholes
from execution.state import StateReader, read_record
from primitives import codec
from storage import schema

YEAR_NS = 365 * 24 * 3600 * 10**9
"""The year of times to expiry: 365 days."""
MAX_YEARS = 9 * SCALE
"""Times to expiry are capped at 9 years (the mark's `t` is a 64-bit field)."""
PPM_TO_SCALE = SCALE // 1_000_000


def years_to_expiry(terms: OptionTerms, block_time: int) -> int:
    """(expiry - block_time) / YEAR_NS in SCALE fixed point, rounded down, 0 at or after expiry,
    at most `MAX_YEARS`."""
    return min(max(terms.expiry_ns - block_time, 0) * SCALE // YEAR_NS, MAX_YEARS)


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionMark:
    """A series' last mark: `price` (subticks per base unit, at least 1) and the Black-Scholes inputs
    it was computed from: the underlying's oracle price `spot` (subticks), the implied volatility
    `vol_ppm`, the years to expiry `t` (SCALE fixed point) and the height. Greeks: `quote`."""

    price: int
    spot: int
    vol_ppm: int
    t: int
    height: int

    def encode(self) -> bytes:
        return codec.encode([self.price, self.spot, self.vol_ppm, self.t, self.height])

    @classmethod
    def decode(cls, raw: bytes) -> OptionMark:
        f = codec.field_list(codec.decode(raw), "option mark", 5)
        return cls(
            price=codec.field_int(f[0], "option mark.price"),
            spot=codec.field_int(f[1], "option mark.spot"),
            vol_ppm=codec.field_int(f[2], "option mark.vol_ppm"),
            t=codec.field_int(f[3], "option mark.t", 0, MAX_YEARS),
            height=codec.field_int(f[4], "option mark.height", -(2**63)),
        )


def quote(terms: OptionTerms, *, spot: int, vol_ppm: int, t: int, rate_ppm: int) -> Quote:
    """The Black-Scholes quote of one base unit of the series: SCALE fixed point, prices in
    subticks (`execution.options.pricing`); at t = 0 or without a vol (a settled series' mark),
    the intrinsic value."""
    return black_scholes(
        spot=spot * SCALE,
        strike=terms.strike * SCALE,
        vol=max(vol_ppm, 1) * PPM_TO_SCALE,
        t=t if vol_ppm else 0,
        rate=rate_ppm * PPM_TO_SCALE,
        call=terms.call,
    )


def mark_quote(terms: OptionTerms, mark: OptionMark, rate_ppm: int) -> Quote:
    """The quote (price and Greeks) at the inputs of `mark`."""
    return quote(terms, spot=mark.spot, vol_ppm=mark.vol_ppm, t=mark.t, rate_ppm=rate_ppm)


def load_mark(state: StateReader, market_id: int) -> OptionMark | None:
    return read_record(state, schema.option_mark_key(market_id), OptionMark.decode)
