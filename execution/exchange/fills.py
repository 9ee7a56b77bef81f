"""Settlement of fills between positions, and what a placement's margin checks read.

Fills are at the maker's price; each fill moves notional = size * price * 10**qce (exact, see
`execution.markets`) between the positions' quote balances. Fees come out of the positions' quote
balances and are credited to `FEE_COLLECTOR` once per action: a maker pays
ceil(notional * maker_fee_ppm / 1e6) per fill; the taker's fees are cumulative, the i-th fill
costing ceil(N_i * taker_fee_ppm / 1e6) - ceil(N_{i-1} * taker_fee_ppm / 1e6) where N_i is the
notional of its first i fills, so one order never pays more than one rounding.
Maker re-check (Hyperliquid, `MakerRecheck`): before each fill the maker's account is checked with
the fill applied (and this placement's earlier fills of the same maker): its free collateral
(value - initial requirement with the remaining orders) must be >= 0, or no worse than before the
fill; a reduce-only maker must not grow or flip its position. Otherwise the maker order is
cancelled (reason "maker_check") and matching goes on.
Position.open_buy / open_sell / open_orders follow every rest, fill, cancel and expiry
(open_orders also counts the owner's resting trigger orders). Every position an action loads to
change (`Positions.get`) is first settled to its market's funding index, the payment going
through the market's funding pool (`execution.positions.funding_index`); the margin figures of the
other markets count their pending funding.
Margin figures (`account_margin`, `base_of`, `free_with`, `margin_with`) are those of
`execution.positions.margin` (the linear rule, and the portfolio rule for the groups that hold an
option position). The fast path (an account with no position record on an option series, placing
on a perpetual) is the linear rule alone, unchanged; anything else takes the full path: the base of
a placement on a market whose group is or may become portfolio margined carries its
`PortfolioGroup` (the group's other positions), so that `free_with` judges the group with a new
position.
"""

from __future__ import annotations

from consensus.app import Event
from execution.accounts import Account
from execution.exchange.context import ExchangeContext
from execution.exchange.events import cancelled_event, filled_event
from execution.exchange.orderbook import Fill, Order, OrderCancelled, PlaceResult, Side
from execution.markets import Market, scale_floor
from execution.positions.funding_index import Settlements, load_funding_index, settled
from execution.positions.holders import index_holder
from execution.positions.margin import (
    Entry,
    MarginBase,
    MarginSummary,
    Portfolio,
    PortfolioGroup,
    PriceFn,
    group_requirements,
    initial_requirement,
    is_option_position,
    maintenance_requirement,
    position_value,
    requirements,
    underlying_of,
)
from execution.positions.position import Position, index_owner_market, owner_markets
from execution.state import StateReader, StateView, read_record
from primitives import codec
from storage import schema

PPM = 1_000_000
_EMPTY_POSITION = Position()


# -- arithmetic -------------------------------------------------------------------------------------


def fill_notional(market: Market, size: int, price: int) -> int:
    """size * price * 10**qce for an aligned size and price: exact (genesis validation)."""
    return scale_floor(size * price, market.quantum_conversion_exponent)


def fee_of(notional: int, fee_ppm: int) -> int:
    """ceil(notional * fee_ppm / 1e6) (fees round up)."""
    return -(-notional * fee_ppm // PPM)


# -- position cache of one action -----------------------------------------------------------------


class Positions:
    """The positions one action changes on one market, loaded once and written back at the end."""

    __slots__ = ("_dirty", "_funding", "_held", "_index", "_market_id", "_sizes", "_stored", "_view")

    def __init__(self, view: StateView, market_id: int) -> None:
        self._view = view
        self._market_id = market_id
        self._held: dict[bytes, Position] = {}
        self._dirty: dict[bytes, None] = {}
        self._sizes: dict[bytes, int] = {}  # owner -> its size in the view (the holder index)
        self._stored: dict[bytes, bool] = {}  # owner -> whether its record is in the view
        self._index: int | None = None  # the market's funding index, read on first use
        self._funding = Settlements(market_id)

    def get(self, owner: bytes) -> Position:
        """The owner's position, settled to the market's funding index
        (`execution.positions.funding_index`): a settlement that changes a stored position marks it
        changed (written by `store`)."""
        position = self._held.get(owner)
        if position is None:
            position = self._view.get_record(schema.position_key(owner, self._market_id), Position.decode)
            self._stored[owner] = position is not None
            if position is None:
                position = _EMPTY_POSITION
            self._sizes[owner] = position.size
            index = self._index
            if index is None:
                index = self._index = load_funding_index(self._view, self._market_id)
            if position.funding_index != index:
                position = self._funding.settle(position, index)
                if position.size:
                    self._dirty[owner] = None
            self._held[owner] = position
        return position

    def set(self, owner: bytes, position: Position) -> None:
        self._held[owner] = position
        self._dirty[owner] = None

    def add_orders(self, order: Order, size: int, count: int) -> None:
        """Add a resting order's `size` (negative: remove) and `count` to its owner's totals."""
        self.set(order.owner, self.get(order.owner).with_orders(order.side, size, count))

    def store(self) -> None:
        """Write the changed positions (and forget that they changed), as `store_position` does."""
        view = self._view
        for owner in sorted(self._dirty):
            p = self._held[owner]
            key = schema.position_key(owner, self._market_id)
            was_stored = self._stored.get(owner)
            if was_stored is None:  # set without being loaded
                was_stored = view.get(key) is not None
            stored = not (p.size == p.quote == p.open_buy == p.open_sell == p.open_orders == 0)
            if stored:
                view.put_record(key, p)
            else:
                view.delete(key)
            index_owner_market(view, owner, self._market_id, was_stored, stored)
            self._stored[owner] = stored
            before = self._sizes.get(owner)
            if before is None or (before == 0) != (p.size == 0):
                index_holder(view, self._market_id, owner, before, p.size)
            self._sizes[owner] = p.size
        self._dirty.clear()
        self._funding.flush(view)


def _load_position(state: StateReader, owner: bytes, market_id: int) -> Position:
    """`load_position`, with `_EMPTY_POSITION` itself for no position."""
    position = read_record(state, schema.position_key(owner, market_id), Position.decode)
    return _EMPTY_POSITION if position is None else position


# -- margin figures (per-key reads over the owner's markets) ----------------------------------------


def _collateral(state: StateReader, owner: bytes) -> int:
    """The account's balance."""
    account = read_record(state, schema.account_key(owner), Account.decode)
    return 0 if account is None else account.balance


def _other_markets(ctx: ExchangeContext, state: StateReader, owner: bytes, market_id: int) -> MarginBase:
    """The owner's figures without its position on `market_id` (`MarginBase`); the full path
    (`_group_base`) when the account holds an option series or `market_id` is one."""
    value = _collateral(state, owner)
    initial = 0
    prefix = schema.position_prefix(owner)  # position_key(owner, id) = prefix + the id's bytes
    for other in owner_markets(state, owner):
        if other == market_id:
            continue
        position = read_record(state, prefix + schema.market_id_bytes(other), Position.decode)
        if position is None:
            continue
        market = ctx.market(state, other)
        if market.option is not None:
            return _group_base(ctx, state, owner, market_id)
        price = ctx.price(state, other)
        position = settled(position, ctx.funding_index(state, other))  # pending funding
        value += position_value(market, position, price)
        initial += initial_requirement(market, position, price)
    if ctx.market(state, market_id).option is not None:
        return _group_base(ctx, state, owner, market_id)
    return MarginBase(value, initial)


def _entries(
    ctx: ExchangeContext, state: StateReader, owner: bytes, skip: int | None
) -> tuple[int, list[Entry]]:
    """(collateral + the value of every position but the one on `skip`, those positions as
    entries by market id)."""
    value = _collateral(state, owner)
    entries: list[Entry] = []
    prefix = schema.position_prefix(owner)
    for other in owner_markets(state, owner):
        if other == skip:
            continue
        position = read_record(state, prefix + schema.market_id_bytes(other), Position.decode)
        if position is None:
            continue
        market = ctx.market(state, other)
        price = ctx.price(state, other)
        position = settled(position, ctx.funding_index(state, other))
        value += position_value(market, position, price)
        entries.append((market, position, price))
    return value, entries


def _prices(ctx: ExchangeContext, state: StateReader) -> PriceFn:
    return lambda market_id: ctx.price(state, market_id)


def _group_base(ctx: ExchangeContext, state: StateReader, owner: bytes, market_id: int) -> MarginBase:
    """The full path of `_other_markets`: without a group when the group of `market_id` stays
    linear whatever the position on it (a perpetual whose series hold no option position of the
    owner), else with its `PortfolioGroup`."""
    value, entries = _entries(ctx, state, owner, market_id)
    prices = _prices(ctx, state)
    initial = requirements(entries, state, prices)[0]
    target = ctx.market(state, market_id)
    underlying = underlying_of(target)
    group = tuple(entry for entry in entries if underlying_of(entry[0]) == underlying)
    if target.option is None and not any(is_option_position(m, p) for m, p, _ in group):
        return MarginBase(value, initial)
    outside = [e for e in entries if underlying_of(e[0]) != underlying]
    return MarginBase(
        value,
        initial,
        PortfolioGroup(
            underlying=underlying,
            spot=ctx.price(state, underlying),
            entries=group,
            outside=requirements(outside, state, prices)[0],
            portfolio=Portfolio(state, prices),
        ),
    )


def account_margin(ctx: ExchangeContext, state: StateReader, owner: bytes) -> MarginSummary:
    """The account figures of `execution.positions.margin.margin_summary` (same formula), read key
    by key over the owner's markets with the context's prices and funding indexes. The loop is
    `_other_markets`' with maintenance added: one generator shared by both cost serial bench exec
    3-5% (the placement check calls `_other_markets` for every order). An account with a position
    record on an option series takes the full path (`requirements`)."""
    value = _collateral(state, owner)
    initial = maintenance = 0
    prefix = schema.position_prefix(owner)
    for market_id in owner_markets(state, owner):
        position = read_record(state, prefix + schema.market_id_bytes(market_id), Position.decode)
        if position is None:
            continue
        market = ctx.market(state, market_id)
        if market.option is not None:
            value, entries = _entries(ctx, state, owner, None)
            initial, maintenance = requirements(entries, state, _prices(ctx, state))
            return MarginSummary(value, initial, maintenance, value - initial)
        price = ctx.price(state, market_id)
        position = settled(position, ctx.funding_index(state, market_id))
        value += position_value(market, position, price)
        initial += initial_requirement(market, position, price)
        maintenance += maintenance_requirement(market, position, price)
    return MarginSummary(value, initial, maintenance, value - initial)


def base_of(ctx: ExchangeContext, state: StateReader, owner: bytes, market_id: int) -> MarginBase:
    """`_other_markets`, remembered for the current placement (`ExchangeContext.bases`)."""
    base = ctx.bases.get(owner)
    if base is None:
        base = ctx.bases[owner] = _other_markets(ctx, state, owner, market_id)
    return base


def free_with(market: Market, base: MarginBase, position: Position, price: int) -> int:
    """Free collateral (value - initial requirement with orders) with `position` on `market` (at
    oracle price `price`)."""
    if base.group is None:
        return (
            base.value
            + position_value(market, position, price)
            - base.initial
            - initial_requirement(market, position, price)
        )
    value, initial = margin_with(market, base, position, price)
    return value - initial


def margin_with(market: Market, base: MarginBase, position: Position, price: int) -> tuple[int, int]:
    """(account value, initial requirement with orders) with `position` on `market` at `price`
    and `base` (`base_of`) for the rest; with a `PortfolioGroup`, the group is judged with the
    position (its spot is `price` when `market` is its perpetual)."""
    value = base.value + position_value(market, position, price)
    group = base.group
    if group is None:
        return value, base.initial + initial_requirement(market, position, price)
    entries = list(group.entries)
    if not position.is_empty:
        entries.append((market, position, price))
    spot = price if market.market_id == group.underlying else group.spot
    initial = group_requirements(group.underlying, entries, spot, group.portfolio)[0]
    return value, group.outside + initial


# -- persistence of orders --------------------------------------------------------------------------


def write_order(view: StateView, market_id: int, order: Order) -> None:
    # put as a record: encoded once, when the block's changes are listed, and never if a later
    # fill or cancel of the block deletes or rewrites it (readers of the key use `get`)
    view.put_record(schema.order_key(market_id, order.order_id), order)


def delete_order(view: StateView, market_id: int, order: Order) -> None:
    view.delete(schema.order_key(market_id, order.order_id))
    if order.client_id:
        view.delete(schema.client_order_key(order.owner, market_id, order.client_id))


def stored_order(view: StateView, market_id: int, order_id: int) -> Order | None:
    if not 0 <= order_id < 2**64:
        return None
    raw = view.get(schema.order_key(market_id, order_id))
    return None if raw is None else Order.from_fields(codec.decode(raw))


def credit_fees(view: StateView, ctx: ExchangeContext, amount: int) -> None:
    """Owe `amount` of fees to `FEE_COLLECTOR`: added to the current tx's fee delta
    (`ExchangeContext.fee_key`), which the block sums into the collector's account at its end
    (`execution.block.sweep_fees`), so that fee-paying txs do not all write one account."""
    if amount:
        key = ctx.fee_key
        raw = view.get(key)
        owed = 0 if raw is None else codec.field_int(codec.decode(raw), "fee delta")
        view.put(key, codec.encode(owed + amount))


class MakerRecheck:
    """The `maker_check` of one placement: the maker's account with the fill (and this placement's
    earlier fills of the same maker) applied must keep free collateral >= 0 or no worse than
    before; a reduce-only maker must not grow or flip its position. Remembers every maker it saw
    (for their client ids when they leave the book)."""

    __slots__ = ("_ctx", "_deltas", "_market", "_positions", "_price", "_view", "makers")

    def __init__(self, ctx: ExchangeContext, view: StateView, market: Market, positions: Positions) -> None:
        self._ctx = ctx
        self._view = view
        self._market = market
        self._positions = positions
        self._price = ctx.price(view, market.market_id)
        self._deltas: dict[bytes, Position] = {}
        self.makers: dict[int, Order] = {}

    def __call__(self, maker: Order, fill: int, price: int) -> bool:
        self.makers[maker.order_id] = maker
        owner = maker.owner
        market = self._market
        before = self._deltas.get(owner)
        if before is None:
            before = self._positions.get(owner)
        notional = fill_notional(market, fill, price)
        fee = fee_of(notional, market.maker_fee_ppm)
        if maker.side is Side.BUY:
            after = Position(before.size + fill, before.quote - notional - fee, before.open_buy - fill,
                             before.open_sell, before.open_orders, before.funding_index)  # fmt: skip
        else:
            after = Position(before.size - fill, before.quote + notional - fee, before.open_buy,
                             before.open_sell - fill, before.open_orders, before.funding_index)  # fmt: skip
        if maker.reduce_only and (abs(after.size) > abs(before.size) or after.size * before.size < 0):
            return False
        base = base_of(self._ctx, self._view, owner, market.market_id)
        free_after = free_with(market, base, after, self._price)
        if free_after < 0 and free_after < free_with(market, base, before, self._price):
            return False
        self._deltas[owner] = after
        return True


def settle(
    view: StateView,
    market: Market,
    result: PlaceResult,
    makers: dict[int, Order],
    positions: Positions,
    events: list[Event],
) -> int:
    """Apply the fills and maker cancels of `result` to positions and stored orders; the fees."""
    market_id = market.market_id
    taker = result.order
    taker_owner = taker.owner
    taker_ppm = market.taker_fee_ppm
    maker_ppm = market.maker_fee_ppm
    cumulative = 0
    taker_fees_so_far = 0
    fees = 0
    for event in result.events:
        if type(event) is Fill:
            maker = makers[event.maker_order_id]
            notional = fill_notional(market, event.size, event.price)
            cumulative += notional
            maker_fee = fee_of(notional, maker_ppm)
            taker_fee = fee_of(cumulative, taker_ppm) - taker_fees_so_far
            taker_fees_so_far += taker_fee
            fees += maker_fee + taker_fee
            sign = 1 if event.taker_side is Side.BUY else -1
            taker_position = positions.get(taker_owner)
            positions.set(
                taker_owner, taker_position.with_fill(sign * event.size, -sign * notional - taker_fee)
            )
            maker_position = positions.get(event.maker_owner).with_fill(
                -sign * event.size, sign * notional - maker_fee
            )
            gone = event.maker_remaining_after == 0
            positions.set(
                event.maker_owner, maker_position.with_orders(maker.side, -event.size, -1 if gone else 0)
            )
            if gone:
                delete_order(view, market_id, maker)
            events.append(filled_event(market, event, maker_fee, taker_fee))
        elif type(event) is OrderCancelled:
            order = event.order
            if order.order_id == taker.order_id:
                events.append(cancelled_event(market, order, str(event.reason)))
                continue
            positions.add_orders(order, -order.remaining, -1)
            delete_order(view, market_id, order)
            events.append(cancelled_event(market, order, str(event.reason)))
    if result.maker_update is not None:
        write_order(view, market_id, result.maker_update)
    return fees
