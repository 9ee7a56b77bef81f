"""Funding of perpetual markets: premium samples every block, the funding rate and the per-market
cumulative funding index every funding interval, the settlement of a position's funding through
that index (whenever the position is loaded to be changed, and in account figures), the per-market
funding pool that makes settlement exact, and the sweep of the pool's dust to the insurance fund.

Parameters (genesis `funding`, `FundingParams`, stored at `schema.FUNDING_PARAMS`):
`interval_seconds` (default 3600), `interest_ppm_per_interval` (12), `clamp_ppm` (625, the
largest |rate| per interval) and `impact_notional` (quote quantums, 10_000_000_000 = $10,000).

Premium (every block, `funding_end_block`, per market in id order). The impact bid is the average
price of selling `impact_notional` quote into the bids (levels best first, the last one partly),
the impact ask that of buying it from the asks; a side whose whole depth is worth less than
`impact_notional` has the oracle price as its impact price. With the oracle price O (subticks),

    premium_ppm = (max(0, impact_bid - O) - max(0, O - impact_ask)) * 1e6 / O

computed exactly on the fractions and rounded toward zero (the book is never crossed, so at most
one term is non-zero), then clamped to [-1e6, 1e6] (a sample counts at most 100%: no single block's
book can dominate the mean beyond that, and the sums stay within 64 bits). A market whose oracle
price is stale at the height takes no sample. The samples accumulate per market as (sum, count) in
its `MarketFunding` record.

Funding tick. `schema.FUNDING_NEXT_TIME` holds the block time (ns) of the next tick: genesis time
+ one interval. At the end of the first block whose time is >= it (after that block's sample), for
each market in id order:

    rate_ppm = clamp(mean + interest_ppm_per_interval, -clamp_ppm, clamp_ppm)

where mean = sample_sum / sample_count rounded toward zero (0 without samples), and the market's
cumulative funding index (quote quantums per base quantum, times `FUNDING_INDEX_SCALE`) advances by

    rate_ppm * O * 10**qce * FUNDING_INDEX_SCALE / 1e6     (rounded toward zero)

at the oracle price O of that block; the samples reset, `last_rate_ppm` is the rate. The next tick
is the first `next + k * interval` after the block time: intervals that passed without a block are
not funded twice (one tick covers them, with the samples taken). A tick reads and writes the
per-market records, the pools and the insurance fund only: O(markets), never O(accounts). An
index that would leave the signed 64-bit range stops at its bound (the funding of that tick is
then smaller for every position alike, which keeps it zero-sum). A `funding` event per market:
(market, rate_ppm, index, oracle_price, samples, swept, height).

Settlement. A position holds the index of its last settlement (`Position.funding_index`). With
x = size * (index_now - funding_index) (signed; > 0: the position pays; longs pay shorts when the
rate is positive), the payment is ceil(x / FUNDING_INDEX_SCALE): a payer pays the ceiling and a
receiver gets the floor of what it is owed, so rounding never creates quote. Settling subtracts the
payment from the position's quote balance, adds it to the market's funding pool and sets
`funding_index` to index_now; the residual payment * SCALE - x (in [0, SCALE)) goes to the pool's
`dust`, and every whole quote quantum of dust moves to its `sweepable` part. The exchange settles a
position whenever it loads it to change it (`execution.exchange._Positions`; elsewhere, e.g.
liquidation, `execution.margin.load_settled_position` or the same `_Positions`); account figures
(`execution.margin.margin_summary`, the exchange's margin checks, queries) count the pending
funding as settled (`settled`).

Funding pool (`schema.funding_pool_key(market)`, `FundingPool`: `[balance, sweepable, dust]`): a
signed holder of quote, part of the conservation sum. Since every tick happens with the position
sizes of the market summing to zero, the exact payments of all positions for a tick sum to zero;
so balance - sweepable - dust / SCALE is exactly minus the funding still pending on unsettled
positions (the balance can be negative for a while: receivers settled before payers). At each
funding tick, `sweepable` moves from the pool's balance to the insurance fund (`INSURANCE_FUND`),
which leaves the pool able to settle every pending payment and never below zero once everything is
settled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from consensus.app import Event, EventAttribute
from execution.accounts import load_account, store_account
from execution.markets import MAX_INT, PPM, Market, pow10, scale_ceil
from execution.oracle import is_stale, load_params, load_price
from execution.orderbook import OrderBook
from execution.state import StateReader, StateView, read_record
from primitives import codec
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, Address
from storage import schema

if TYPE_CHECKING:
    from execution.exchange import ExchangeContext
    from execution.margin import Position

FUNDING_INDEX_SCALE = 10**12
"""Index units per quote quantum per base quantum. At $65,000 per BTC (6.5 quote quantums per base
quantum on BTC-USD) one ppm of funding moves the index by 6,500,000 units, and the clamp keeps the
index inside 64 bits for millions of intervals."""

INSURANCE_FUND = Address(sha256(b"derivd/module/insurance")[:ADDRESS_SIZE])
"""The insurance fund's account (the same address `execution.liquidation` uses); funding dust goes
there."""

NS_PER_SECOND = 1_000_000_000
DEFAULT_INTERVAL_SECONDS = 3600
DEFAULT_INTEREST_PPM = 12
DEFAULT_CLAMP_PPM = 625
DEFAULT_IMPACT_NOTIONAL = 10_000_000_000
MAX_INTERVAL_SECONDS = 366 * 24 * 3600
INDEX_MIN = -MAX_INT
INDEX_MAX = MAX_INT
DEPTH_LEVELS_FIRST = 16
BID = 0
ASK = 1


# -- records ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FundingParams:
    """The genesis `funding` section (see the module docstring)."""

    interval_seconds: int = DEFAULT_INTERVAL_SECONDS
    interest_ppm_per_interval: int = DEFAULT_INTEREST_PPM
    clamp_ppm: int = DEFAULT_CLAMP_PPM
    impact_notional: int = DEFAULT_IMPACT_NOTIONAL

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field name, reason), or None."""
        if not 1 <= self.interval_seconds <= MAX_INTERVAL_SECONDS:
            return "interval_seconds", f"must be in [1, {MAX_INTERVAL_SECONDS}], got {self.interval_seconds}"
        if not -PPM <= self.interest_ppm_per_interval <= PPM:
            return (
                "interest_ppm_per_interval",
                f"must be in [-{PPM}, {PPM}], got {self.interest_ppm_per_interval}",
            )
        if not 0 <= self.clamp_ppm <= PPM:
            return "clamp_ppm", f"must be in [0, {PPM}], got {self.clamp_ppm}"
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
            [self.interval_seconds, self.interest_ppm_per_interval, self.clamp_ppm, self.impact_notional]
        )

    @classmethod
    def decode(cls, raw: bytes) -> FundingParams:
        f = codec.field_list(codec.decode(raw), "funding params", 4)
        try:
            return cls(
                codec.field_int(f[0], "funding params.interval_seconds", 1),
                codec.field_int(f[1], "funding params.interest_ppm_per_interval", -PPM, PPM),
                codec.field_int(f[2], "funding params.clamp_ppm"),
                codec.field_int(f[3], "funding params.impact_notional", 1),
            )
        except ValueError as exc:
            raise codec.DecodeError(f"funding params: {exc}") from exc

    def to_json(self) -> dict[str, int]:
        return {
            "interval_seconds": self.interval_seconds,
            "interest_ppm_per_interval": self.interest_ppm_per_interval,
            "clamp_ppm": self.clamp_ppm,
            "impact_notional": self.impact_notional,
        }


FUNDING_FIELDS = ("interval_seconds", "interest_ppm_per_interval", "clamp_ppm", "impact_notional")
"""The keys of the genesis `funding` section (each optional, `FundingParams` defaults)."""


@dataclass(frozen=True, slots=True)
class MarketFunding:
    """A market's cumulative funding index, the rate of the last tick and the premium samples of the
    running interval (absent record: all zero)."""

    index: int = 0
    last_rate_ppm: int = 0
    sample_sum: int = 0
    sample_count: int = 0

    def encode(self) -> bytes:
        return codec.encode([self.index, self.last_rate_ppm, self.sample_sum, self.sample_count])

    @classmethod
    def decode(cls, raw: bytes) -> MarketFunding:
        f = codec.field_list(codec.decode(raw), "market funding", 4)
        return cls(
            codec.field_int(f[0], "market funding.index", INDEX_MIN, INDEX_MAX),
            codec.field_int(f[1], "market funding.last_rate_ppm", -PPM, PPM),
            codec.field_int(f[2], "market funding.sample_sum", -MAX_INT, MAX_INT),
            codec.field_int(f[3], "market funding.sample_count", 0, MAX_INT),
        )


@dataclass(frozen=True, slots=True)
class FundingPool:
    """A market's funding pool: `balance` (signed quote quantums, in the conservation sum), of which
    `sweepable` whole quantums are rounding dust owed to the insurance fund, and `dust`, the
    fractional dust in 1/FUNDING_INDEX_SCALE quote quantums (in [0, SCALE))."""

    balance: int = 0
    sweepable: int = 0
    dust: int = 0

    @property
    def is_empty(self) -> bool:
        return self.balance == self.sweepable == self.dust == 0

    def encode(self) -> bytes:
        return codec.encode([self.balance, self.sweepable, self.dust])

    @classmethod
    def decode(cls, raw: bytes) -> FundingPool:
        f = codec.field_list(codec.decode(raw), "funding pool", 3)
        pool = cls(
            codec.field_int(f[0], "funding pool.balance", -MAX_INT, MAX_INT),
            codec.field_int(f[1], "funding pool.sweepable", 0, MAX_INT),
            codec.field_int(f[2], "funding pool.dust", 0, FUNDING_INDEX_SCALE - 1),
        )
        if pool.is_empty:
            raise codec.DecodeError("funding pool: an empty pool is never stored")
        return pool

    def with_payments(self, paid: int, residual: int) -> FundingPool:
        """This pool after settlements that paid `paid` in total (signed) with summed residuals
        `residual` (>= 0, in 1/SCALE quote quantums)."""
        dust = self.dust + residual
        return FundingPool(
            self.balance + paid, self.sweepable + dust // FUNDING_INDEX_SCALE, dust % FUNDING_INDEX_SCALE
        )


def load_funding_params(state: StateReader) -> FundingParams:
    """The funding parameters (the defaults if genesis wrote none)."""
    raw = state.get(schema.FUNDING_PARAMS)
    return FundingParams() if raw is None else FundingParams.decode(raw)


def load_market_funding(state: StateReader, market_id: int) -> MarketFunding:
    """Through the views' decoded-record cache: every position an action loads reads it."""
    funding = read_record(state, schema.funding_market_key(market_id), MarketFunding.decode)
    return _NO_FUNDING if funding is None else funding


_NO_FUNDING = MarketFunding()


def store_market_funding(view: StateView, market_id: int, funding: MarketFunding) -> None:
    view.put(schema.funding_market_key(market_id), funding.encode())


def load_funding_index(state: StateReader, market_id: int) -> int:
    """The market's cumulative funding index (0 before its first tick)."""
    return load_market_funding(state, market_id).index


def load_pool(state: StateReader, market_id: int) -> FundingPool:
    raw = state.get(schema.funding_pool_key(market_id))
    return FundingPool() if raw is None else FundingPool.decode(raw)


def store_pool(view: StateView, market_id: int, pool: FundingPool) -> None:
    key = schema.funding_pool_key(market_id)
    if pool.is_empty:
        view.delete(key)
    else:
        view.put(key, pool.encode())


def pool_total(state: StateReader) -> int:
    """The summed balance of every market's funding pool (the conservation sum counts it)."""
    return sum(FundingPool.decode(raw).balance for _, raw in state.iterate(schema.APP_FUNDING_POOL_PREFIX))


def load_next_time(state: StateReader) -> int | None:
    raw = state.get(schema.FUNDING_NEXT_TIME)
    return None if raw is None else codec.field_int(codec.decode(raw), "funding next time", -(2**63))


def init_funding_state(view: StateView, params: FundingParams, genesis_time: int) -> None:
    """Genesis: the parameters, and the first tick one interval after the genesis time."""
    view.put(schema.FUNDING_PARAMS, params.encode())
    view.put(schema.FUNDING_NEXT_TIME, codec.encode(genesis_time + params.interval_ns))


# -- settlement ---------------------------------------------------------------------------------


def funding_payment(size: int, from_index: int, to_index: int) -> tuple[int, int]:
    """(payment, residual) of a position of `size` settled from `from_index` to `to_index`:
    payment = ceil(size * (to - from) / SCALE) (> 0: the position pays; < 0: it receives the floor
    of what it is owed) and residual = payment * SCALE - size * (to - from), in [0, SCALE)."""
    owed = size * (to_index - from_index)
    payment = -(-owed // FUNDING_INDEX_SCALE)
    return payment, payment * FUNDING_INDEX_SCALE - owed


def pending_funding(position: Position, index: int) -> int:
    """What settling `position` at `index` would take from its quote balance (negative: add)."""
    if position.size == 0:
        return 0
    return funding_payment(position.size, position.funding_index, index)[0]


def settled(position: Position, index: int) -> Position:
    """`position` as settlement at `index` leaves it (in memory: no pool is changed). A position
    without size only takes the index."""
    if position.funding_index == index:
        return position
    if position.size == 0:
        return replace(position, funding_index=index)
    payment, _ = funding_payment(position.size, position.funding_index, index)
    return replace(position, quote=position.quote - payment, funding_index=index)


class Settlements:
    """The payments of positions settled on one market, written to its pool at once (`flush`)."""

    __slots__ = ("market_id", "paid", "residual")

    def __init__(self, market_id: int) -> None:
        self.market_id = market_id
        self.paid = 0
        self.residual = 0

    def settle(self, position: Position, index: int) -> Position:
        """`position` settled at `index`, its payment recorded here (for `flush`)."""
        if position.funding_index == index:
            return position
        if position.size == 0:
            return replace(position, funding_index=index)
        payment, residual = funding_payment(position.size, position.funding_index, index)
        self.paid += payment
        self.residual += residual
        return replace(position, quote=position.quote - payment, funding_index=index)

    def flush(self, view: StateView) -> None:
        """Add the recorded payments to the market's pool (nothing if there were none)."""
        if self.paid or self.residual:
            store_pool(
                view, self.market_id, load_pool(view, self.market_id).with_payments(self.paid, self.residual)
            )
            self.paid = self.residual = 0


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


def interval_rate(funding: MarketFunding, params: FundingParams) -> int:
    """clamp(mean premium + interest, -clamp_ppm, clamp_ppm) of the running interval."""
    mean = _div_toward_zero(funding.sample_sum, funding.sample_count) if funding.sample_count else 0
    rate = mean + params.interest_ppm_per_interval
    return max(-params.clamp_ppm, min(params.clamp_ppm, rate))


def index_delta(market: Market, rate_ppm: int, oracle: int) -> int:
    """rate_ppm * O * 10**qce * SCALE / 1e6, rounded toward zero."""
    n = rate_ppm * oracle * FUNDING_INDEX_SCALE
    exponent = market.quantum_conversion_exponent - 6  # PPM = 10**6
    if exponent >= 0:
        return n * pow10(exponent)
    return _div_toward_zero(n, pow10(-exponent))


def _event(kind: str, *pairs: tuple[str, object]) -> Event:
    return Event(kind, tuple(EventAttribute(key, str(value)) for key, value in pairs))


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
            rate = interval_rate(funding, params)
            index = max(INDEX_MIN, min(INDEX_MAX, funding.index + index_delta(market, rate, oracle)))
            samples = funding.sample_count
            funding = MarketFunding(index, rate, 0, 0)
            ctx.funding_indexes[market_id] = index
            pool = load_pool(view, market_id)
            swept = pool.sweepable
            if swept:
                store_pool(view, market_id, FundingPool(pool.balance - swept, 0, pool.dust))
                insurance += swept
            events.append(
                _event(
                    "funding",
                    ("market", market.ticker),
                    ("rate_ppm", rate),
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
    """The funding fields of a market in `/funding` and `/markets`: `funding_rate_ppm` (the rate the
    running interval would get from its samples so far: the predicted rate), `last_funding_rate_ppm`
    (the rate of the last tick), `funding_index`, `funding_samples` and `next_funding_time` (ns)."""
    params = load_funding_params(state)
    funding = load_market_funding(state, market.market_id)
    next_time = load_next_time(state)
    return {
        "funding_rate_ppm": str(interval_rate(funding, params)),
        "last_funding_rate_ppm": str(funding.last_rate_ppm),
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
