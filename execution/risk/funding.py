"""Funding of perpetual markets as dYdX v4 does it: premium samples every block, an 8-hour
funding rate (mean premium + interest, clamped by the market's margin fractions) paid pro rata at
every funding tick through the per-market cumulative funding index, and the sweep of the funding
pools' dust to the insurance fund.

Parameters (genesis `funding`, `FundingParams`, stored at `schema.FUNDING_PARAMS`):
`interval_seconds` (3600: the tick), `rate_period_seconds` (28800: the period the rate is quoted
for, >= `interval_seconds`), `interest_ppm` (100 per rate period: dYdX's 0.01% per 8 h),
`clamp_factor_ppm` (6_000_000: 600% of the market's initial minus maintenance margin fraction) and
`impact_notional` (quote quantums, 10_000_000_000 = $10,000). The keys `interest_ppm_per_interval`
and `clamp_ppm` of the former per-interval rule are refused, naming their replacements
(`RENAMED_FIELDS`).

Option series (`Market.option`) pay no funding and take no samples: everything below is of the
perpetuals.

Premium (every block, `funding_end_block`, per market in id order). The impact bid is the average
price of selling `impact_notional` quote into the bids (levels best first, the last one partly),
the impact ask that of buying it from the asks; a side whose whole depth is worth less than
`impact_notional` has the oracle price as its impact price. With the oracle price O (subticks),

    premium_ppm = (max(0, impact_bid - O) - max(0, O - impact_ask)) * 1e6 / O

computed exactly on the fractions and rounded toward zero (the book is never crossed, so at most
one term is non-zero), then clamped to [-1e6, 1e6] (a sample counts at most 100%: no single block's
book can dominate the mean beyond that, and the sums stay within 64 bits). A market whose oracle
price is stale at the height takes no sample. The samples accumulate per market as (sum, count) in
its `MarketFunding` record. A sample is not scaled by time: as in dYdX, the mean premium IS the
premium component of the rate-period (8-hour) rate.

Funding tick. `schema.FUNDING_NEXT_TIME` holds the block time (ns) of the next tick: genesis time
+ one interval. At the end of the first block whose time is >= it (after that block's sample), for
each market in id order, with mean = sample_sum / sample_count rounded toward zero (0 without
samples) and IMF, MMF the market's `initial_margin_ppm`, `maintenance_margin_ppm`:

    clamp_ppm = min(1e6, clamp_factor_ppm * (IMF - MMF) / 1e6)      (rounded down)
    rate_ppm  = clamp(mean + interest_ppm, -clamp_ppm, clamp_ppm)    (per rate period)

(at most 100% per rate period whatever the factor: a sample's own bound, and `last_rate_ppm`'s), and
the market's cumulative funding index (quote quantums per base quantum, times
`FUNDING_INDEX_SCALE`) advances by the part of the rate one tick covers,

    rate_ppm * O * 10**qce * FUNDING_INDEX_SCALE * elapsed / (rate_period_seconds * 1e6)

at the oracle price O of that block, computed exactly and rounded toward zero once, where elapsed
= `interval_seconds` (with the defaults: 1/8 of the 8-hour rate each hour). The samples reset,
`last_rate_ppm` keeps the rate-period rate. The next tick is the first `next + k * interval` after
the block time: intervals that passed without a block are not funded twice: one tick covers them,
with the samples taken, and still pays one interval's worth (elapsed stays `interval_seconds`; the
missed intervals pay nothing, as dYdX pays one funding-tick epoch's duration per tick). A tick
reads and writes the per-market records, the pools and the insurance fund only: O(markets), never
O(accounts). An index that would leave the signed 64-bit range stops at its bound (the funding of
that tick is then smaller for every position alike, which keeps it zero-sum). A `funding` event per
market: (market, rate_ppm (the rate-period rate), applied_ppm (rate_ppm * elapsed / rate period,
rounded toward zero: the part paid at this tick, for display; the index uses the exact figure),
index, oracle_price, samples, swept, height).

Settlement of positions against the index and the funding pools: `execution.positions.funding_index`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.app import Event
from execution.accounts import load_account, store_account
from execution.exchange.context import ExchangeContext
from execution.exchange.events import make_event
from execution.exchange.orderbook import OrderBook
from execution.markets import MAX_INT, PPM, Market, pow10, scale_ceil
from execution.oracle.prices import is_stale, load_params, load_price
from execution.positions.funding_index import (
    FUNDING_INDEX_SCALE,
    INDEX_MAX,
    INDEX_MIN,
    INSURANCE_FUND,
    FundingPool,
    MarketFunding,
    load_funding_index,
    load_market_funding,
    load_pool,
    store_market_funding,
    store_pool,
)
from execution.state import StateReader, StateView
from primitives import codec
from storage import schema

NS_PER_SECOND = 1_000_000_000
DEFAULT_INTERVAL_SECONDS = 3600
DEFAULT_RATE_PERIOD_SECONDS = 8 * 3600
DEFAULT_INTEREST_PPM = 100
DEFAULT_CLAMP_FACTOR_PPM = 6_000_000
DEFAULT_IMPACT_NOTIONAL = 10_000_000_000
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
MAX_CLAMP_FACTOR_PPM = 1000 * PPM
DEPTH_LEVELS_FIRST = 16
BID = 0
ASK = 1


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FundingParams:
    """The genesis `funding` section (see the module docstring)."""

    interval_seconds: int = DEFAULT_INTERVAL_SECONDS
    rate_period_seconds: int = DEFAULT_RATE_PERIOD_SECONDS
    interest_ppm: int = DEFAULT_INTEREST_PPM
    clamp_factor_ppm: int = DEFAULT_CLAMP_FACTOR_PPM
    impact_notional: int = DEFAULT_IMPACT_NOTIONAL

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field name, reason), or None."""
        if not 1 <= self.interval_seconds <= MAX_INTERVAL_SECONDS:
            return "interval_seconds", f"must be in [1, {MAX_INTERVAL_SECONDS}], got {self.interval_seconds}"
        if not self.interval_seconds <= self.rate_period_seconds <= MAX_INTERVAL_SECONDS:
            return (
                "rate_period_seconds",
                f"must be in [interval_seconds {self.interval_seconds}, {MAX_INTERVAL_SECONDS}] (a tick pays "
                f"at most the whole rate), got {self.rate_period_seconds}",
            )
        if not -PPM <= self.interest_ppm <= PPM:
            return "interest_ppm", f"must be in [-{PPM}, {PPM}], got {self.interest_ppm}"
        if not 0 <= self.clamp_factor_ppm <= MAX_CLAMP_FACTOR_PPM:
            return "clamp_factor_ppm", f"must be in [0, {MAX_CLAMP_FACTOR_PPM}], got {self.clamp_factor_ppm}"
        if not 1 <= self.impact_notional <= MAX_INT:
            return (
                "impact_notional",
                f"must be a positive integer up to {MAX_INT}, got {self.impact_notional}",
            )
        return None

    @property
    def interval_ns(self) -> int:
        return self.interval_seconds * NS_PER_SECOND

    def encode(self) -> bytes:
        return codec.encode(
            [
                self.interval_seconds,
                self.rate_period_seconds,
                self.interest_ppm,
                self.clamp_factor_ppm,
                self.impact_notional,
            ]
        )

    @classmethod
    def decode(cls, raw: bytes) -> FundingParams:
        f = codec.field_list(codec.decode(raw), "funding params", 5)
        try:
            return cls(
                interval_seconds=codec.field_int(f[0], "funding params.interval_seconds", 1),
                rate_period_seconds=codec.field_int(f[1], "funding params.rate_period_seconds", 1),
                interest_ppm=codec.field_int(f[2], "funding params.interest_ppm", -PPM, PPM),
                clamp_factor_ppm=codec.field_int(f[3], "funding params.clamp_factor_ppm"),
                impact_notional=codec.field_int(f[4], "funding params.impact_notional", 1),
            )
        except ValueError as exc:
            raise codec.DecodeError(f"funding params: {exc}") from exc

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FUNDING_FIELDS}


FUNDING_FIELDS = (
    "interval_seconds",
    "rate_period_seconds",
    "interest_ppm",
    "clamp_factor_ppm",
    "impact_notional",
)
"""The keys of the genesis `funding` section (each optional, `FundingParams` defaults)."""

RENAMED_FIELDS = {
    "interest_ppm_per_interval": (
        "replaced by interest_ppm, quoted per rate_period_seconds (default 100 per 28800 s: 0.01% per 8 h), "
        "paid pro rata at each tick of interval_seconds"
    ),
    "clamp_ppm": (
        "replaced by clamp_factor_ppm: the rate per rate_period_seconds is clamped to "
        "clamp_factor_ppm * (initial_margin_ppm - maintenance_margin_ppm) / 1e6 of each market "
        "(default 6000000: 600%)"
    ),
}
"""Keys of the former per-interval rule that a genesis may still carry: why each is refused."""


def load_funding_params(state: StateReader) -> FundingParams:
    """The funding parameters (the defaults if genesis wrote none)."""
    raw = state.get(schema.FUNDING_PARAMS)
    return FundingParams() if raw is None else FundingParams.decode(raw)


def load_next_time(state: StateReader) -> int | None:
    raw = state.get(schema.FUNDING_NEXT_TIME)
    return None if raw is None else codec.field_int(codec.decode(raw), "funding next time", -(2**63))


def init_funding_state(view: StateView, params: FundingParams, genesis_time: int) -> None:
    """Genesis: the parameters, and the first tick one interval after the genesis time."""
    view.put(schema.FUNDING_PARAMS, params.encode())
    view.put(schema.FUNDING_NEXT_TIME, codec.encode(genesis_time + params.interval_ns))


# -- premium ------------------------------------------------------------------------------------


def impact_price(levels: Sequence[tuple[int, int]], target: int) -> tuple[int, int] | None:
    """The average price (numerator, denominator) of filling `target` (size * price units) from
    `levels` [(price, size)] best first, the last level partly; None if they hold less."""
    value = size = 0
    for price, level_size in levels:
        level_value = price * level_size
        if value + level_value >= target:
            # target / (size + (target - value) / price)
            return target * price, size * price + (target - value)
        value += level_value
        size += level_size
    return None


def _side_impact(book: OrderBook, side: int, target: int) -> tuple[int, int] | None:
    """`impact_price` of one side of `book`, reading only the levels it needs (doubling)."""
    levels = DEPTH_LEVELS_FIRST
    while True:
        depth = book.depth(levels)[side]
        found = impact_price(depth, target)
        if found is not None or len(depth) < levels:
            return found
        levels *= 4


def premium_ppm(impact_bid: tuple[int, int] | None, impact_ask: tuple[int, int] | None, oracle: int) -> int:
    """(max(0, bid - O) - max(0, O - ask)) * 1e6 / O, exact on the fractions, rounded toward zero;
    a missing side is the oracle price."""
    premium = 0
    if impact_bid is not None:
        num, den = impact_bid
        if num > oracle * den:
            premium += (num - oracle * den) * PPM // (den * oracle)
    if impact_ask is not None:
        num, den = impact_ask
        if oracle * den > num:
            premium -= (oracle * den - num) * PPM // (den * oracle)
    return premium


def impact_target(market: Market, impact_notional: int) -> int:
    """`impact_notional` quote quantums in size * price units (ceil(notional / 10**qce))."""
    return scale_ceil(impact_notional, -market.quantum_conversion_exponent)


def book_premium(market: Market, book: OrderBook, oracle: int, impact_notional: int) -> int:
    """The premium sample of `market` (module docstring)."""
    target = impact_target(market, impact_notional)
    return premium_ppm(_side_impact(book, BID, target), _side_impact(book, ASK, target), oracle)


# -- rate and index -----------------------------------------------------------------------------


def _div_toward_zero(n: int, d: int) -> int:
    q = abs(n) // d
    return q if n >= 0 else -q


def rate_clamp_ppm(market: Market, params: FundingParams) -> int:
    """The largest |rate| per rate period of `market`: clamp_factor * (IMF - MMF) / 1e6, rounded
    down, at most 1e6 (100%)."""
    spread = market.initial_margin_ppm - market.maintenance_margin_ppm
    return min(PPM, params.clamp_factor_ppm * spread // PPM)


def funding_rate(market: Market, funding: MarketFunding, params: FundingParams) -> int:
    """clamp(mean premium + interest, +-`rate_clamp_ppm`) of the running interval: the rate per rate
    period (8 hours by default)."""
    mean = _div_toward_zero(funding.sample_sum, funding.sample_count) if funding.sample_count else 0
    rate = mean + params.interest_ppm
    clamp = rate_clamp_ppm(market, params)
    return max(-clamp, min(clamp, rate))


def applied_ppm(rate_ppm: int, params: FundingParams) -> int:
    """The part of `rate_ppm` (per rate period) one tick pays: rate * interval / rate period, rounded
    toward zero (for display: the index uses the exact figure, `index_delta`)."""
    return _div_toward_zero(rate_ppm * params.interval_seconds, params.rate_period_seconds)


def index_delta(market: Market, rate_ppm: int, oracle: int, params: FundingParams) -> int:
    """rate_ppm * O * 10**qce * SCALE * interval / (rate period * 1e6), exact, rounded toward zero
    once: the index move of one tick at the rate `rate_ppm` per rate period."""
    n = rate_ppm * oracle * FUNDING_INDEX_SCALE * params.interval_seconds
    d = params.rate_period_seconds * PPM
    exponent = market.quantum_conversion_exponent
    if exponent >= 0:
        n *= pow10(exponent)
    else:
        d *= pow10(-exponent)
    return _div_toward_zero(n, d)


def funding_end_block(view: StateView, ctx: ExchangeContext, height: int, block_time: int) -> list[Event]:
    """The funding phase at the end of the block at `height` (just before the liquidation pass): a
    premium sample per market, and the funding tick when `block_time` has reached it (module
    docstring)."""
    books = ctx.books
    if books is None:
        raise ValueError("funding_end_block needs the books (a live exchange context)")
    params = load_funding_params(view)
    next_time = load_next_time(view)
    if next_time is None:  # a state from before funding: the first tick one interval from now
        next_time = block_time + params.interval_ns
        view.put(schema.FUNDING_NEXT_TIME, codec.encode(next_time))
    tick = block_time >= next_time
    oracle_params = load_params(view)
    events: list[Event] = []
    insurance = 0
    for market in books.markets():
        if market.option is not None:  # option series pay no funding
            continue
        market_id = market.market_id
        funding = before = load_market_funding(view, market_id)
        stored = load_price(view, market_id)
        oracle = market.initial_price if stored is None else stored.price
        if stored is not None and not is_stale(stored, height, oracle_params):
            sample = book_premium(market, books.book(market_id), oracle, params.impact_notional)
            sample = max(-PPM, min(PPM, sample))
            funding = MarketFunding(
                funding.index, funding.last_rate_ppm, funding.sample_sum + sample, funding.sample_count + 1
            )
        if tick:
            rate = funding_rate(market, funding, params)
            index = max(INDEX_MIN, min(INDEX_MAX, funding.index + index_delta(market, rate, oracle, params)))
            samples = funding.sample_count
            funding = MarketFunding(index, rate, 0, 0)
            ctx.funding_indexes[market_id] = index
            pool = load_pool(view, market_id)
            swept = pool.sweepable
            if swept:
                store_pool(view, market_id, FundingPool(pool.balance - swept, 0, pool.dust))
                insurance += swept
            events.append(
                make_event(
                    "funding",
                    ("market", market.ticker),
                    ("rate_ppm", rate),
                    ("applied_ppm", applied_ppm(rate, params)),
                    ("index", index),
                    ("oracle_price", oracle),
                    ("samples", samples),
                    ("swept", swept),
                    ("height", height),
                )
            )
        if funding != before:
            store_market_funding(view, market_id, funding)
    if insurance:
        fund = load_account(view, INSURANCE_FUND)
        store_account(view, INSURANCE_FUND, fund.with_balance(fund.balance + insurance))
    if tick:
        interval = params.interval_ns
        next_time += ((block_time - next_time) // interval + 1) * interval
        view.put(schema.FUNDING_NEXT_TIME, codec.encode(next_time))
    return events


# -- queries ------------------------------------------------------------------------------------


def funding_json(state: StateReader, market: Market) -> dict[str, str]:
    """The funding fields of a market in `/funding` and `/markets`: `funding_rate_ppm` (the rate per
    rate period, 8 h by default, that the running interval would get from its samples so far: the
    predicted rate), `funding_applied_ppm` (the part of it the next tick would pay, 1/8 by default,
    rounded toward zero), `last_funding_rate_ppm` and `last_funding_applied_ppm` (the same of the
    last tick), `funding_index`, `funding_samples` and `next_funding_time` (ns)."""
    params = load_funding_params(state)
    funding = load_market_funding(state, market.market_id)
    next_time = load_next_time(state)
    predicted = funding_rate(market, funding, params)
    return {
        "funding_rate_ppm": str(predicted),
        "funding_applied_ppm": str(applied_ppm(predicted, params)),
        "last_funding_rate_ppm": str(funding.last_rate_ppm),
        "last_funding_applied_ppm": str(applied_ppm(funding.last_rate_ppm, params)),
        "funding_index": str(funding.index),
        "funding_samples": str(funding.sample_count),
        "next_funding_time": "" if next_time is None else str(next_time),
    }


def funding_imbalances(state: StateReader) -> dict[int, int]:
    """Per market with a funding record or pool: (balance - sweepable) * SCALE - dust + the exact
    funding pending on every position, in 1/SCALE quote quantums; always 0 (the pool holds exactly
    what the unsettled positions owe net, plus its dust). Reads every position: for tests and
    audits, never for a state transition."""
    from_positions: dict[int, int] = {}
    for key, raw in state.iterate(schema.APP_POSITION_PREFIX):
        f = codec.field_list(codec.decode(raw), "position", 6)
        market_id = schema.market_id_from_position_key(key)
        size = codec.field_int(f[0], "position.size", -MAX_INT, MAX_INT)
        held = codec.field_int(f[5], "position.funding_index", INDEX_MIN, INDEX_MAX)
        owed = size * (load_funding_index(state, market_id) - held)
        from_positions[market_id] = from_positions.get(market_id, 0) + owed
    out: dict[int, int] = {}
    market_ids = {
        int.from_bytes(key[len(schema.APP_FUNDING_POOL_PREFIX) :], "big")
        for key, _ in state.iterate(schema.APP_FUNDING_POOL_PREFIX)
    }
    market_ids.update(from_positions)
    for market_id in sorted(market_ids):
        pool = load_pool(state, market_id)
        out[market_id] = (
            (pool.balance - pool.sweepable) * FUNDING_INDEX_SCALE
            - pool.dust
            + from_positions.get(market_id, 0)
        )
    return out
