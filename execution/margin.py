"""Positions and cross margin: the `Position` record and its storage, account value, the initial
and maintenance requirements, the placement check of a new order, and the fee collector.

A position lives at `storage.schema.position_key(owner, market_id)` as the canonical array
`[size, quote, open_buy, open_sell, open_orders, funding_index]`:

- `size`: signed base quantums (long > 0);
- `quote`: signed quote quantums (micro-USD): the quote balance of the position (a buy of size s
  at price p adds s and subtracts notional(s, p); fees are debited here too). There is no
  averaged entry price, so every fill moves an exact integer notional;
- `open_buy` / `open_sell`: the summed remaining sizes of the owner's resting orders per side;
- `open_orders`: how many resting orders the owner has on the market;
- `funding_index`: the market's cumulative funding index at the position's last funding
  settlement (`execution.funding`): the funding still pending is
  `size * (index_now - funding_index) / FUNDING_INDEX_SCALE`, settled whenever the position is
  loaded to be changed.

A position whose first five fields are zero is deleted (whatever its `funding_index`). Collateral
is the account's balance (`execution.accounts`, always >= 0). Fees go to `FEE_COLLECTOR`, an
ordinary account.

With the oracle price P_m of each market (`prices(market_id)`, see `execution.oracle.prices_at`)
and q = 10**quantum_conversion_exponent, each rounding in favour of the protocol:

    value       = collateral + sum_m (floor(size * P_m * q) + quote - pending funding)
    maintenance = sum_m ceil(|size| * P_m * q * mmf_ppm / 1e6)
    initial     = sum_m ceil(max(|size + open_buy|, |size - open_sell|) * P_m * q * imf_ppm / 1e6)
    free        = value - initial

`initial` is the requirement "with orders": the worst position the resting orders can lead to.
Every account figure is of the positions settled to the current funding index
(`execution.funding.settled`: the pending funding counted as paid, rounded as settlement rounds).

Placement check (`placement_error`): an order that can only reduce the position (flagged
reduce-only, or on the side opposite to the position with a size no larger than what the
position keeps after every resting order of that side fills) is exempt. Any other order is
accepted iff `value - worst_loss - worst_fee >= initial'`, where `initial'` is the initial
requirement with the order added to the open orders,
`worst_loss = ceil(max(0, (limit - P) * size * q))` for a buy (`P - limit` for a sell: the loss of
filling at the limit instead of the oracle price) and `worst_fee = ceil(size * limit * q *
taker_fee_ppm / 1e6)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from execution.accounts import load_account
from execution.funding import Settlements, load_funding_index, settled
from execution.markets import Market, load_market, ppm_of_value_ceil, value_ceil, value_floor
from execution.state import StateReader, StateView
from primitives import codec
from primitives.codec import DecodeError, Value
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, Address
from storage import schema

FEE_COLLECTOR = Address(sha256(b"derivd/module/fees")[:ADDRESS_SIZE])
"""The account that collects maker and taker fees."""

MAX_INT = 2**63 - 1
BUY = 0
SELL = 1

PriceFn = Callable[[int], int]
"""market id -> oracle price in subticks (`execution.oracle.prices_at`)."""


@dataclass(frozen=True, slots=True)
class Position:
    """One owner's position and resting-order totals on one market (see the module docstring)."""

    size: int = 0
    quote: int = 0
    open_buy: int = 0
    open_sell: int = 0
    open_orders: int = 0
    funding_index: int = 0

    @property
    def is_empty(self) -> bool:
        """No size, quote or orders (the funding index does not count: such a position is deleted)."""
        return self.size == self.quote == self.open_buy == self.open_sell == self.open_orders == 0

    def to_fields(self) -> Value:
        return [self.size, self.quote, self.open_buy, self.open_sell, self.open_orders, self.funding_index]

    def encode(self) -> bytes:
        return codec.encode(self.to_fields())

    @classmethod
    def from_fields(cls, value: Value, name: str = "position") -> Position:
        f = codec.field_list(value, name, 6)
        position = cls(
            codec.field_int(f[0], f"{name}.size", -MAX_INT, MAX_INT),
            codec.field_int(f[1], f"{name}.quote", -MAX_INT, MAX_INT),
            codec.field_int(f[2], f"{name}.open_buy", 0, MAX_INT),
            codec.field_int(f[3], f"{name}.open_sell", 0, MAX_INT),
            codec.field_int(f[4], f"{name}.open_orders", 0, MAX_INT),
            codec.field_int(f[5], f"{name}.funding_index", -MAX_INT, MAX_INT),
        )
        if position.is_empty:
            raise DecodeError(f"{name}: an empty position is never stored")
        return position

    @classmethod
    def decode(cls, raw: bytes) -> Position:
        return cls.from_fields(codec.decode(raw))

    def with_orders(self, side: int, size: int, count: int = 1) -> Position:
        """This position with a resting order of `size` on `side` added (negative: removed)."""
        if side == BUY:
            return Position(
                self.size,
                self.quote,
                self.open_buy + size,
                self.open_sell,
                self.open_orders + count,
                self.funding_index,
            )
        return Position(
            self.size,
            self.quote,
            self.open_buy,
            self.open_sell + size,
            self.open_orders + count,
            self.funding_index,
        )

    def with_fill(self, size_delta: int, quote_delta: int) -> Position:
        """This position after a fill that changes `size` and `quote` by the given amounts."""
        return Position(
            self.size + size_delta,
            self.quote + quote_delta,
            self.open_buy,
            self.open_sell,
            self.open_orders,
            self.funding_index,
        )

    @property
    def worst_size(self) -> int:
        """max(|size + open_buy|, |size - open_sell|): the largest position the orders can reach."""
        return max(abs(self.size + self.open_buy), abs(self.size - self.open_sell))


def load_position(state: StateReader, owner: Address, market_id: int) -> Position:
    """The position of `owner` on `market_id` (all zero if it has none)."""
    raw = state.get(schema.position_key(owner.raw, market_id))
    return Position() if raw is None else Position.decode(raw)


def store_position(view: StateView, owner: Address, market_id: int, position: Position) -> None:
    """Write `position`, or delete its key when it is all zero."""
    key = schema.position_key(owner.raw, market_id)
    index_holder(view, market_id, owner.raw, None, position.size)
    if position.is_empty:
        view.delete(key)
    else:
        view.put(key, position.encode())


HOLDER_UNKNOWN = codec.encode([0, 0])
"""The holder-index value of a holder whose healthy price band is not known (always checked)."""


def index_holder(view: StateView, market_id: int, owner: bytes, before: int | None, after: int) -> None:
    """Keep the holder index (`storage.schema.holder_key`, read by `execution.liquidation`): a key
    per (market, owner) with a non-zero position size. `before` is the size in `view` before the
    write of `after` (None: unknown, the index key decides)."""
    key = schema.holder_key(market_id, owner)
    had = view.get(key) is not None if before is None else before != 0
    if had and after == 0:
        view.delete(key)
    elif not had and after != 0:
        view.put(key, HOLDER_UNKNOWN)


def load_settled_position(view: StateView, owner: Address, market_id: int) -> Position:
    """The position of `owner` on `market_id` settled to the market's funding index
    (`execution.funding`): if that changed it, the settled position and the market's funding pool
    are written. Load a position this way (or through `execution.exchange._Positions`) before
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


def positions(state: StateReader, owner: Address) -> list[tuple[int, Position]]:
    """Every non-empty position of `owner` as (market id, position), by market id."""
    return [
        (schema.market_id_from_position_key(key), Position.decode(raw))
        for key, raw in state.iterate(schema.position_prefix(owner.raw))
    ]


# -- per-position figures --------------------------------------------------------------------------


def position_value(m: Market, p: Position, price: int) -> int:
    """floor(size * price * q) + quote."""
    return value_floor(m, p.size, price) + p.quote


def maintenance_requirement(m: Market, p: Position, price: int) -> int:
    """ceil(|size| * price * q * mmf_ppm / 1e6)."""
    return ppm_of_value_ceil(m, abs(p.size), price, m.maintenance_margin_ppm)


def initial_requirement(m: Market, p: Position, price: int) -> int:
    """ceil(worst_size * price * q * imf_ppm / 1e6): the initial requirement with orders."""
    return ppm_of_value_ceil(m, p.worst_size, price, m.initial_margin_ppm)


def trade_fee(m: Market, size: int, price: int, fee_ppm: int) -> int:
    """ceil(|size| * price * q * fee_ppm / 1e6): the fee of a fill (rounded up)."""
    return ppm_of_value_ceil(m, abs(size), price, fee_ppm)


def worst_loss(m: Market, side: int, size: int, limit: int, oracle: int) -> int:
    """ceil(max(0, (limit - oracle) * size * q)) for a buy, (oracle - limit) for a sell: what
    filling `size` at `limit` instead of at the oracle price can lose at most."""
    gap = limit - oracle if side == BUY else oracle - limit
    return max(0, value_ceil(m, size, gap))


# -- account figures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarginSummary:
    """An account's value, its initial requirement with orders, maintenance requirement and free
    collateral (value - initial), all in quote quantums."""

    value: int
    initial: int
    maintenance: int
    free: int

    @property
    def meets_initial(self) -> bool:
        return self.value >= self.initial

    @property
    def meets_maintenance(self) -> bool:
        return self.value >= self.maintenance


def _market(state: StateReader, market_id: int) -> Market:
    market = load_market(state, market_id)
    if market is None:
        raise LookupError(f"a position on market {market_id}, which does not exist")
    return market


def margin_summary(
    state: StateReader,
    owner: Address,
    prices: PriceFn,
    overrides: dict[int, Position] | None = None,
) -> MarginSummary:
    """The account figures of `owner` at the oracle `prices`, each position settled to its
    market's funding index. `overrides` replaces the stored position of the given markets (a
    hypothetical position: the placement check; derive it from the stored one, so that it keeps
    its `funding_index`)."""
    held = dict(positions(state, owner))
    if overrides:
        held.update(overrides)
    value = load_account(state, owner).balance
    initial = maintenance = 0
    for market_id in sorted(held):
        position = held[market_id]
        if position.is_empty:
            continue
        position = settled(position, load_funding_index(state, market_id))
        market = _market(state, market_id)
        price = prices(market_id)
        value += position_value(market, position, price)
        initial += initial_requirement(market, position, price)
        maintenance += maintenance_requirement(market, position, price)
    return MarginSummary(value, initial, maintenance, value - initial)


def meets_initial_margin(state: StateReader, owner: Address, prices: PriceFn) -> bool:
    """value >= initial requirement with orders (the maker re-check after a fill, transfers)."""
    return margin_summary(state, owner, prices).meets_initial


def order_only_reduces(position: Position, side: int, size: int) -> bool:
    """Whether an order of `size` on `side` can only reduce the position: it is on the opposite
    side and no larger than what remains of the position after every resting order of that side
    has filled."""
    if side == BUY:
        return position.size < 0 and size <= -position.size - position.open_buy
    return position.size > 0 and size <= position.size - position.open_sell


def placement_error(
    state: StateReader,
    owner: Address,
    market: Market,
    side: int,
    size: int,
    limit: int,
    reduce_only: bool,
    prices: PriceFn,
) -> str | None:
    """Why `owner` may not place a resting-or-taking order (`side` 0 buy / 1 sell, `size` base
    quantums > 0, `limit` price in subticks) on `market`, or None if margin allows it (the rule is
    in the module docstring). The caller answers INSUFFICIENT_MARGIN with the returned log."""
    position = load_position(state, owner, market.market_id)
    if reduce_only or order_only_reduces(position, side, size):
        return None
    oracle = prices(market.market_id)
    loss = worst_loss(market, side, size, limit, oracle)
    fee = trade_fee(market, size, limit, market.taker_fee_ppm)
    with_order = position.with_orders(side, size)
    summary = margin_summary(state, owner, prices, {market.market_id: with_order})
    if summary.value - loss - fee >= summary.initial:
        return None
    return (
        f"insufficient margin: account value {summary.value} - worst loss {loss} - worst fee {fee} "
        f"< initial requirement {summary.initial} with the order"
    )


def transfer_margin_error(state: StateReader, owner: Address, prices: PriceFn) -> str | None:
    """Why the state after a transfer out of `owner` breaks initial margin, or None. An account
    without positions or orders always passes (its value is its balance, >= 0)."""
    if not positions(state, owner):
        return None
    summary = margin_summary(state, owner, prices)
    if summary.meets_initial:
        return None
    return (
        f"insufficient margin: account value {summary.value} < initial requirement {summary.initial} "
        "after the transfer"
    )
