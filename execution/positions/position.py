"""The `Position` record, its storage (which keeps the holder index, `execution.positions.holders`)
and an owner's positions.

A position lives at `storage.schema.position_key(owner, market_id)` as the canonical array
`[size, quote, open_buy, open_sell, open_orders, funding_index]`:

- `size`: signed base quantums (long > 0);
- `quote`: signed quote quantums (micro-USD): the quote balance of the position (a buy of size s
  at price p adds s and subtracts notional(s, p); fees are debited here too). There is no
  averaged entry price, so every fill moves an exact integer notional;
- `open_buy` / `open_sell`: the summed remaining sizes of the owner's resting orders per side;
- `open_orders`: how many resting orders the owner has on the market;
- `funding_index`: the market's cumulative funding index at the position's last funding
  settlement (`execution.positions.funding_index`): the funding still pending is
  `size * (index_now - funding_index) / FUNDING_INDEX_SCALE`, settled whenever the position is
  loaded to be changed.
"""

from __future__ import annotations

from dataclasses import dataclass

from execution.positions.holders import index_holder
from execution.state import StateReader, StateView, read_record
from primitives import codec
from primitives.codec import DecodeError, Value
from primitives.keys import Address
from storage import schema

MAX_INT = 2**63 - 1
BUY = 0
SELL = 1


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


_NO_POSITION = Position()


def load_position(state: StateReader, owner: Address, market_id: int) -> Position:
    """The position of `owner` on `market_id` (all zero if it has none; decoded once per state that
    holds its bytes: `read_record`)."""
    position = read_record(state, schema.position_key(owner.raw, market_id), Position.decode)
    return _NO_POSITION if position is None else position


def store_position(view: StateView, owner: Address, market_id: int, position: Position) -> None:
    """Write `position`, or delete its key when it is all zero."""
    key = schema.position_key(owner.raw, market_id)
    index_holder(view, market_id, owner.raw, None, position.size)
    existed = view.get(key) is not None
    if position.is_empty:
        view.delete(key)
    else:
        view.put(key, position.encode())
    index_owner_market(view, owner.raw, market_id, existed, not position.is_empty)


@dataclass(frozen=True, slots=True)
class MarketIds:
    """The `owner_markets_key` record: market ids, ascending."""

    ids: tuple[int, ...]

    def encode(self) -> bytes:
        return codec.encode(list(self.ids))

    @classmethod
    def decode(cls, raw: bytes) -> MarketIds:
        value = codec.decode(raw)
        if not isinstance(value, list) or not value:
            raise DecodeError("owner markets: a non-empty list of market ids")
        ids = tuple(codec.field_int(item, "owner markets.id", 1, 2**32 - 1) for item in value)
        if list(ids) != sorted(set(ids)):
            raise DecodeError("owner markets: ids must be strictly ascending")
        return cls(ids)


_NO_MARKETS = MarketIds(())


def owner_markets(state: StateReader, owner: bytes) -> tuple[int, ...]:
    """The ids of the markets on which `owner` has a position record, ascending."""
    record = read_record(state, schema.owner_markets_key(owner), MarketIds.decode)
    return (record or _NO_MARKETS).ids


def index_owner_market(view: StateView, owner: bytes, market_id: int, existed: bool, exists: bool) -> None:
    """Keep `owner_markets` when the owner's position record on `market_id` appears or goes."""
    if existed == exists:
        return
    ids = set(owner_markets(view, owner))
    if exists:
        ids.add(market_id)
    else:
        ids.discard(market_id)
    key = schema.owner_markets_key(owner)
    if ids:
        view.put_record(key, MarketIds(tuple(sorted(ids))))
    else:
        view.delete(key)


def positions(state: StateReader, owner: Address) -> list[tuple[int, Position]]:
    """Every non-empty position of `owner` as (market id, position), by market id."""
    return [
        (schema.market_id_from_position_key(key), Position.decode(raw))
        for key, raw in state.iterate(schema.position_prefix(owner.raw))
    ]
