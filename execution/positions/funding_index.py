"""The per-market cumulative funding index, the funding pools and the lazy settlement of positions.

Settlement. A position holds the index of its last settlement (`Position.funding_index`). With
x = size * (index_now - funding_index) (signed; > 0: the position pays; longs pay shorts when the
rate is positive), the payment is ceil(x / FUNDING_INDEX_SCALE): a payer pays the ceiling and a
receiver gets the floor of what it is owed, so rounding never creates quote. Settling subtracts
the payment from the position's quote balance, adds it to the market's funding pool and sets
`funding_index` to index_now; the residual payment * SCALE - x (in [0, SCALE)) goes to the pool's
`dust`, and every whole quote quantum of dust moves to its `sweepable` part. The exchange settles a
position whenever it loads it to change it (`execution.exchange.fills.Positions`; elsewhere, e.g.
liquidation, `load_settled_position` or the same `Positions`); account figures
(`execution.positions.margin.margin_summary`, the exchange's margin checks, queries) count the
pending funding as settled (`settled`).

Funding pool (`schema.funding_pool_key(market)`, `FundingPool`: `[balance, sweepable, dust]`): a
signed holder of quote, part of the conservation sum. Since every tick happens with the position
sizes of the market summing to zero, the exact payments of all positions for a tick sum to zero;
so balance - sweepable - dust / SCALE is exactly minus the funding still pending on unsettled
positions (the balance can be negative for a while: receivers settled before payers). At each
funding tick (`execution.risk.funding`), `sweepable` moves from the pool's balance to the
insurance fund (`INSURANCE_FUND`), which leaves the pool able to settle every pending payment and
never below zero once everything is settled.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from execution.markets import MAX_INT, PPM
from execution.positions.position import Position, load_position, store_position
from execution.state import StateReader, StateView, read_record
from primitives import codec
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, Address
from storage import schema

FUNDING_INDEX_SCALE = 10**12
"""Index units per quote quantum per base quantum. At $65,000 per BTC (6.5 quote quantums per base
quantum on BTC-USD) one ppm of funding moves the index by 6,500,000 units, and the clamp keeps the
index inside 64 bits for millions of intervals."""

INSURANCE_FUND = Address(sha256(b"derivd/module/insurance")[:ADDRESS_SIZE])
"""The insurance fund's account (the same address `execution.risk.liquidation` uses); funding dust goes
there."""
INDEX_MIN = -MAX_INT
INDEX_MAX = MAX_INT


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


def load_settled_position(view: StateView, owner: Address, market_id: int) -> Position:
    """The position of `owner` on `market_id` settled to the market's funding index
    (`execution.risk.funding`): if that changed it, the settled position and the market's funding pool
    are written. Load a position this way (or through `execution.exchange.fills.Positions`) before
    changing it outside the exchange."""
    position = load_position(view, owner, market_id)
    if position.size == 0:
        return settled(position, load_funding_index(view, market_id))
    settlements = Settlements(market_id)
    after = settlements.settle(position, load_funding_index(view, market_id))
    if after is not position:
        store_position(view, owner, market_id, after)
        settlements.flush(view)
    return after
