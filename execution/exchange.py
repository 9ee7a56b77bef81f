"""The exchange's order actions: place, cancel (by order id or client id), cancel-all and amend;
matching through `execution.orderbook`, settlement of every fill between the two positions, the
persistence of resting orders, the expiry of good-til-block orders, and the in-memory books.

Books (`Books`)
    One `OrderBook` per market (prices in subticks, sizes in base quantums), owned by the app: built
    from committed state at start (`Books.load`), changed only by `finalize_block` (through an
    `ExchangeContext` in live mode), and for a market touched by a tx that then fails, rebuilt
    from the block view (`ExchangeContext.abort_tx`). The books are a cache of the `order_key`
    records: every book change is written through the view in the same action (`PlaceResult.
    changes()`, cancels, expiry), so state alone defines them. Markets are read once at load
    (there is no way to change a market after genesis yet).

Validation (`check_tx` runs only this part, against the check state, and never touches a book)
    place: UNKNOWN_MARKET; INVALID_ORDER (side not 0/1, tif not 0-3, unknown flag bits, size or
    price 0, good_til_block already past; later, before the reduce-only rule: a size or notional
    beyond `MAX_EXPOSURE`); OFF_TICK; OFF_STEP; BELOW_MIN_SIZE;
    REDUCE_ONLY_WOULD_INCREASE (a reduce-only order that is not "only reducing", see
    `execution.margin.order_only_reduces`); MARKET_STALE (a stale oracle price: only reducing orders
    are accepted); RATE_LIMITED (more than `max_orders_per_block` places and amends by the account
    on the market in this block; check_tx does not count); TOO_MANY_OPEN_ORDERS (a GTC or post-only
    order while the account has `max_open_orders` resting on the market); DUPLICATE_CLIENT_ID (a
    non-zero client id of a resting order of the account on the market); INSUFFICIENT_MARGIN (the
    placement check of `execution.margin.placement_error`). In that order: the first failing rule
    answers.

Matching (live mode) and settlement
    Order ids come from the one counter `NEXT_ORDER_ID` (consumed by every accepted placement, a
    rejected post-only or FOK order included, as the book requires increasing ids). During a block
    the counter lives in the `ExchangeContext` (a failed tx gives its ids back) and is written to
    the block view once, after the txs (`ExchangeContext.flush`). Fills are at
    the maker's price; each fill moves notional = size * price * 10**qce (exact, see
    `execution.markets`) between the positions' quote balances. Fees come out of the positions'
    quote balances and are credited to `FEE_COLLECTOR` once per action: a maker pays
    ceil(notional * maker_fee_ppm / 1e6) per fill; the taker's fees are cumulative, the i-th fill
    costing ceil(N_i * taker_fee_ppm / 1e6) - ceil(N_{i-1} * taker_fee_ppm / 1e6) where N_i is the
    notional of its first i fills, so one order never pays more than one rounding.
    Self-trade prevention: the taker cancels its owner's resting orders that it reaches (reason
    "stp", dYdX's rule; see `execution.orderbook`).
    Maker re-check (Hyperliquid): before each fill the maker's account is checked with the fill
    applied (and this placement's earlier fills of the same maker): its free collateral (value -
    initial requirement with the remaining orders) must be >= 0, or no worse than before the fill;
    a reduce-only maker must not grow or flip its position. Otherwise the maker order is cancelled
    (reason "maker_check") and matching goes on.
    Taker re-check: an order that was not exempt from the placement check must leave its account at
    free collateral >= 0 after its fills, else the action fails with INSUFFICIENT_MARGIN (the
    placement check makes this a matter of rounding only; it keeps the invariant exact).
    Position.open_buy / open_sell / open_orders follow every rest, fill, cancel and expiry;
    open_orders also counts the owner's resting trigger orders (`execution.triggers`), which
    `Books` keep per market beside the book (`Books.triggers`, loaded, rebuilt and reverted with it).
    Funding: every position an action loads to change (`_Positions.get`) is first settled to its
    market's funding index, the payment going through the market's funding pool
    (`execution.funding`); the margin figures of the other markets count their pending funding.

Cancel / cancel-all / amend
    cancel: ORDER_NOT_FOUND unless the sender has that resting order or resting trigger order
    (`execution.triggers`; by order id, or by a live client id); `by` other than 0/1 is
    INVALID_ORDER. cancel-all: market 0 means every market (in id order), each market's resting
    orders then its resting trigger orders; cancelling nothing is not an error. amend: the old
    order (ORDER_NOT_FOUND) is cancelled (reason "amend") and a new order placed with a new id at
    the back of the queue, keeping side, time in force (post-only or GTC), reduce-only, client id
    and good-til-block; it counts towards the rate limit and goes through every placement rule.

Events (attribute values are strings; `market` is the ticker, `owner`/`maker`/`taker` lower-case
hex addresses, sides "buy"/"sell", tif "gtc"/"ioc"/"fok"/"post_only"):
    order_placed(order_id, market, owner, side, size, price, tif, client_id, reduce_only,
    good_til_block), order_filled(market, maker_order_id, taker_order_id, maker, taker, price, size,
    maker_fee, taker_fee, taker_side), order_cancelled(order_id, market, owner, reason: user, amend,
    stp, maker_check, ioc_remainder), order_expired(order_id, market, owner), order_rejected(market,
    owner, client_id, reason: post_only_would_cross, fok_not_filled).

Block order (`execution.app`): `expire_orders` at the start of a block removes every order with
0 < good_til_block < height; then the txs whose actions are all non-taking (`is_non_taking`:
transfers, oracle votes, cancels, cancel-alls, post-only placements and amends of post-only
orders) in tx order, then the others in tx order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache

from consensus.app import Event, EventAttribute
from execution.accounts import Account, load_account, store_account
from execution.codes import Code
from execution.funding import Settlements, load_funding_index, settled
from execution.margin import (
    FEE_COLLECTOR,
    Position,
    index_holder,
    initial_requirement,
    order_only_reduces,
    position_value,
    trade_fee,
    worst_loss,
)
from execution.markets import Market, load_market, load_markets, scale_floor
from execution.oracle import is_stale, load_params, load_price
from execution.orderbook import (
    CancelReason,
    Fill,
    Order,
    OrderBook,
    OrderCancelled,
    PlaceResult,
    PlaceStatus,
    Side,
    TimeInForce,
    _fast_constructor,
)
from execution.state import StateReader, StateView, read_record
from execution.trigger_book import (
    TriggerBook,
    TriggerOrder,
    delete_trigger,
    load_trigger,
    trigger_cancelled_event,
)
from execution.tx import Action, AmendOrder, CancelAll, CancelOrder, PlaceOrder, Transfer
from primitives import codec
from primitives.keys import Address
from storage import schema

PPM = 1_000_000
MAX_EXPOSURE = 2**62
"""Bound of |position| + resting sizes and of an order's notional (quote quantums, for qce <= 0),
so that every stored figure stays a 64-bit integer."""
REDUCE_ONLY_FLAG = 1
KNOWN_FLAGS = REDUCE_ONLY_FLAG
ORACLE_VOTE_KIND = 6
SIDE_NAMES = ("buy", "sell")
_SIDES = tuple(Side)  # Side(i) is _SIDES[i] (i checked 0/1)
_TIFS = tuple(TimeInForce)  # TimeInForce(i) is _TIFS[i] (i checked 0-3)
TIF_NAMES = ("gtc", "ioc", "fok", "post_only")
REJECT_REASONS = {
    CancelReason.POST_ONLY_CROSS: "post_only_would_cross",
    CancelReason.FOK: "fok_not_filled",
}
AMEND_REASON = "amend"
USER_REASON = "user"


class ExchangeError(Exception):
    """An order action that cannot be applied: its result code and a log (the caller raises
    ActionError, and drops the view)."""

    def __init__(self, code: Code, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log


# -- books ----------------------------------------------------------------------------------------


def load_orders(state: StateReader, market_id: int) -> list[Order]:
    """The resting orders of `market_id` in state, by order id."""
    return [Order.from_fields(codec.decode(raw)) for _, raw in state.iterate(schema.order_prefix(market_id))]


class Books:
    """market id -> its `OrderBook` and `Market`, built from state (see the module docstring)."""

    __slots__ = ("_books", "_by_id", "_markets", "_triggers")

    def __init__(self) -> None:
        self._books: dict[int, OrderBook] = {}
        self._triggers: dict[int, TriggerBook] = {}  # resting stop/take-profit orders (execution.triggers)
        self._markets: dict[int, Market] = {}
        self._by_id: list[Market] = []

    @classmethod
    def load(cls, state: StateReader) -> Books:
        """Every market of `state` and its book restored from the persisted orders."""
        books = cls()
        for market in load_markets(state):
            books._markets[market.market_id] = market
            books.rebuild(state, market.market_id)
        books._by_id = [books._markets[market_id] for market_id in sorted(books._markets)]
        return books

    def rebuild(self, state: StateReader, market_id: int) -> None:
        """Replace the book of `market_id` with one restored from `state`."""
        book = OrderBook()
        book.restore(load_orders(state, market_id))
        self._books[market_id] = book
        self._triggers[market_id] = TriggerBook.load(state, market_id)

    def revert(self, state: StateReader, market_id: int, dropped: StateView) -> None:
        """Rebuild the book of `market_id` from its current orders with the order records written
        in `dropped` reverted to their values in `state` (see `ExchangeContext.abort_tx`)."""
        prefix = schema.order_prefix(market_id)
        bids, asks = self._books[market_id].orders()
        orders = {order.order_id: order for order in (*bids, *asks)}
        for key in sorted(dropped.write_set):
            if not key.startswith(prefix):
                continue
            order_id = int.from_bytes(key[len(prefix) :], "big")
            raw = state.get(key)
            if raw is None:
                orders.pop(order_id, None)
            else:
                orders[order_id] = Order.from_fields(codec.decode(raw))
        book = OrderBook()
        book.restore(orders.values())
        self._books[market_id] = book
        self._triggers[market_id] = self._triggers[market_id].reverted(state, market_id, dropped.write_set)

    def market(self, market_id: int) -> Market | None:
        return self._markets.get(market_id)

    def markets(self) -> list[Market]:
        """Every market, by id (do not modify the list)."""
        return self._by_id

    def book(self, market_id: int) -> OrderBook:
        return self._books[market_id]

    def triggers(self, market_id: int) -> TriggerBook:
        """The resting trigger orders of `market_id` (`execution.triggers`)."""
        return self._triggers[market_id]

    def __contains__(self, market_id: int) -> bool:
        return market_id in self._books


@dataclass(slots=True)
class ExchangeContext:
    """What order actions need beyond the view: the height being executed, the books and whether
    to change them (`live`: finalize_block; not live: check_tx, validation only), the per-block
    placement counts of the rate limit, and the oracle prices of the block (they change only at
    its end). Used by one block (or one check_tx call) and dropped."""

    height: int
    books: Books | None = None
    live: bool = False
    counts: dict[tuple[bytes, int], int] = field(default_factory=dict)
    tx_counts: dict[tuple[bytes, int], int] = field(default_factory=dict)
    touched: set[int] = field(default_factory=set)
    prices: dict[int, int] = field(default_factory=dict)
    stale: dict[int, bool] = field(default_factory=dict)
    bases: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    next_order_id: int | None = None
    """the order id counter (`NEXT_ORDER_ID`) of the block, once read; written back by `flush`"""
    tx_start_order_id: int | None = None
    """(owner) -> `_other_markets` within one placement (nothing else of the owner changes)"""
    touched_owners: dict[bytes, None] = field(default_factory=dict)
    """the owners whose positions a fill changed in this block, in first-touch order: candidates of
    `execution.liquidation` (those of a failed tx stay: a needless check, never a missed one)"""
    liquidated: dict[tuple[bytes, int], int] = field(default_factory=dict)
    """(owner, market id) -> the size `execution.liquidation` closed through the book this block"""
    risk_counts: dict[str, int] = field(default_factory=dict)
    """`execution.liquidation`'s counters of this block (liquidations, deleveragings, ...)"""

    funding_indexes: dict[int, int] = field(default_factory=dict)
    """market id -> its funding index, once read (`funding_index`)"""

    def __post_init__(self) -> None:
        if self.live and self.books is None:
            raise ValueError("a live exchange context needs the books")

    # tx boundaries (called by execution.executor)

    def begin_tx(self) -> None:
        self.tx_counts.clear()
        self.touched.clear()
        self.tx_start_order_id = self.next_order_id

    def commit_tx(self) -> None:
        """The tx succeeded: its placements count towards the rate limits."""
        for key, count in self.tx_counts.items():
            self.counts[key] = count
        self.tx_counts.clear()
        self.touched.clear()

    def abort_tx(self, state: StateReader, dropped: StateView | None = None) -> None:
        """The tx failed and its writes are dropped: rebuild each book it changed as `state` (the
        view without them) has it, and forget its placements. With `dropped` (the view of the
        failed actions), the book is rebuilt in memory: its orders, with the order records that
        `dropped` wrote replaced by their versions in `state` (every book change of an action is
        written through its view); without, from `state`'s order records."""
        if self.books is not None:
            for market_id in sorted(self.touched):
                if dropped is None:
                    self.books.rebuild(state, market_id)
                else:
                    self.books.revert(state, market_id, dropped)
        self.tx_counts.clear()
        self.touched.clear()
        self.next_order_id = self.tx_start_order_id

    def take_order_id(self, state: StateReader) -> int:
        """The next order id (the counter lives here during a block: see `flush`)."""
        order_id = self.next_order_id
        if order_id is None:
            raw = state.get(schema.NEXT_ORDER_ID)
            order_id = 1 if raw is None else codec.field_int(codec.decode(raw), "next order id")
        self.next_order_id = order_id + 1
        return order_id

    def flush(self, view: StateView) -> None:
        """Write the order id counter into `view` (the block view, after the block's txs) if a
        placement of the block used it."""
        if self.next_order_id is not None:
            view.put(schema.NEXT_ORDER_ID, codec.encode(self.next_order_id))

    # markets and prices

    def market(self, state: StateReader, market_id: int) -> Market:
        market = self.books.market(market_id) if self.books is not None else load_market(state, market_id)
        if market is None:
            raise ExchangeError(Code.UNKNOWN_MARKET, f"unknown market {market_id}")
        return market

    def markets(self, state: StateReader) -> list[Market]:
        return self.books.markets() if self.books is not None else load_markets(state)

    def funding_index(self, state: StateReader, market_id: int) -> int:
        """The market's cumulative funding index (`execution.funding`; it changes only in the
        funding phase at the end of the block, which updates this cache)."""
        index = self.funding_indexes.get(market_id)
        if index is None:
            index = self.funding_indexes[market_id] = load_funding_index(state, market_id)
        return index

    def price(self, state: StateReader, market_id: int) -> int:
        """The market's oracle price (subticks); the initial price if it has none."""
        price = self.prices.get(market_id)
        if price is None:
            stored = load_price(state, market_id)
            if stored is None:
                market = self.market(state, market_id)
                price = market.initial_price
            else:
                price = stored.price
            self.prices[market_id] = price
        return price

    def is_stale(self, state: StateReader, market_id: int) -> bool:
        stale = self.stale.get(market_id)
        if stale is None:
            stored = load_price(state, market_id)
            stale = stored is None or is_stale(stored, self.height, load_params(state))
            self.stale[market_id] = stale
        return stale

    def count_placement(self, owner: bytes, market: Market) -> None:
        """Count one place or amend of `owner` on `market`; RATE_LIMITED over the limit."""
        key = (owner, market.market_id)
        count = self.tx_counts.get(key)
        if count is None:
            count = self.counts.get(key, 0)
        if count >= market.max_orders_per_block:
            raise ExchangeError(
                Code.RATE_LIMITED,
                f"rate limited: {count} places and amends on {market.ticker} in this block "
                f"(limit {market.max_orders_per_block})",
            )
        self.tx_counts[key] = count + 1


# -- events ---------------------------------------------------------------------------------------


_new_event = _fast_constructor(Event)
_new_attribute = _fast_constructor(EventAttribute)
_EMPTY_POSITION = Position()


def _event(kind: str, *pairs: tuple[str, object]) -> Event:
    """`Event(kind, (EventAttribute(key, str(value)), ...))`, built without the frozen
    dataclasses' `__init__` (the hot path emits two or three events per order)."""
    return _new_event(kind, tuple([_new_attribute(key, str(value), True) for key, value in pairs]))


def _attribute(key: str, value: int) -> EventAttribute:
    """An attribute whose value is a number of this event alone (an id, a size, a price)."""
    return _new_attribute(key, str(value), True)


@lru_cache(maxsize=4096)
def _shared(key: str, value: str) -> EventAttribute:
    """The attribute `key=value` for a value that recurs from event to event (a ticker, a side, a
    reason, a flag): one object, shared by the events (they are immutable). Fewer allocations, and
    fewer objects for the garbage collector to walk while a block's results are alive."""
    return _new_attribute(key, value, True)


@lru_cache(maxsize=4096)
def _owner_attribute(key: str, owner: bytes) -> EventAttribute:
    """`key=<owner as lower-case hex>`, shared as `_shared` is (a trader appears in many events)."""
    return _new_attribute(key, owner.hex(), True)


def _placed_event(market: Market, order: Order, tif: int) -> Event:
    # `_attribute(key, n)` written out as `_new_attribute(key, str(n), True)`: one call fewer each
    return _new_event(
        "order_placed",
        (
            _new_attribute("order_id", str(order.order_id), True),
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
            _shared("side", SIDE_NAMES[order.side]),
            _new_attribute("size", str(order.size), True),
            _new_attribute("price", str(order.price), True),
            _shared("tif", TIF_NAMES[tif]),
            _new_attribute("client_id", str(order.client_id), True),
            _shared("reduce_only", "1" if order.reduce_only else "0"),
            _shared("good_til_block", str(order.good_til_block)),
        ),
    )


def _cancelled_event(market: Market, order: Order, reason: str) -> Event:
    return _new_event(
        "order_cancelled",
        (
            _attribute("order_id", order.order_id),
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
            _shared("reason", reason),
        ),
    )


def _expired_event(market: Market, order: Order) -> Event:
    return _new_event(
        "order_expired",
        (
            _attribute("order_id", order.order_id),
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
        ),
    )


def _rejected_event(market: Market, order: Order, reason: str) -> Event:
    return _new_event(
        "order_rejected",
        (
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
            _attribute("client_id", order.client_id),
            _shared("reason", reason),
        ),
    )


def _filled_event(market: Market, fill: Fill, maker_fee: int, taker_fee: int) -> Event:
    # number attributes inline, as in `_placed_event`
    return _new_event(
        "order_filled",
        (
            _shared("market", market.ticker),
            _new_attribute("maker_order_id", str(fill.maker_order_id), True),
            _new_attribute("taker_order_id", str(fill.taker_order_id), True),
            _owner_attribute("maker", fill.maker_owner),
            _owner_attribute("taker", fill.taker_owner),
            _new_attribute("price", str(fill.price), True),
            _new_attribute("size", str(fill.size), True),
            _new_attribute("maker_fee", str(maker_fee), True),
            _new_attribute("taker_fee", str(taker_fee), True),
            _shared("taker_side", SIDE_NAMES[fill.taker_side]),
        ),
    )


# -- arithmetic -------------------------------------------------------------------------------------


def fill_notional(market: Market, size: int, price: int) -> int:
    """size * price * 10**qce for an aligned size and price: exact (genesis validation)."""
    return scale_floor(size * price, market.quantum_conversion_exponent)


def fee_of(notional: int, fee_ppm: int) -> int:
    """ceil(notional * fee_ppm / 1e6) (fees round up)."""
    return -(-notional * fee_ppm // PPM)


# -- position cache of one action -----------------------------------------------------------------


class _Positions:
    """The positions one action changes on one market, loaded once and written back at the end."""

    __slots__ = ("_dirty", "_funding", "_held", "_index", "_market_id", "_sizes", "_view")

    def __init__(self, view: StateView, market_id: int) -> None:
        self._view = view
        self._market_id = market_id
        self._held: dict[bytes, Position] = {}
        self._dirty: dict[bytes, None] = {}
        self._sizes: dict[bytes, int] = {}  # owner -> its size in the view (the holder index)
        self._index: int | None = None  # the market's funding index, read on first use
        self._funding = Settlements(market_id)

    def get(self, owner: bytes) -> Position:
        """The owner's position, settled to the market's funding index (`execution.funding`): a
        settlement that changes a stored position marks it changed (written by `store`)."""
        position = self._held.get(owner)
        if position is None:
            position = self._view.get_record(schema.position_key(owner, self._market_id), Position.decode)
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
            if p.size == p.quote == p.open_buy == p.open_sell == p.open_orders == 0:
                view.delete(key)
            else:
                view.put_record(key, p)
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


# -- margin figures (per-key reads over the known markets) ----------------------------------------


def _collateral(state: StateReader, owner: bytes) -> int:
    """The account's balance."""
    account = read_record(state, schema.account_key(owner), Account.decode)
    return 0 if account is None else account.balance


def _other_markets(ctx: ExchangeContext, state: StateReader, owner: bytes, market_id: int) -> tuple[int, int]:
    """(collateral + the value of the owner's positions on every other market, their initial
    requirement with orders)."""
    value = _collateral(state, owner)
    initial = 0
    prefix = schema.position_prefix(owner)  # position_key(owner, id) = prefix + the id's bytes
    for market in ctx.markets(state):
        other = market.market_id
        if other == market_id:
            continue
        position = read_record(state, prefix + schema.market_id_bytes(other), Position.decode)
        if position is None:
            continue
        price = ctx.price(state, other)
        position = settled(position, ctx.funding_index(state, other))  # pending funding
        value += position_value(market, position, price)
        initial += initial_requirement(market, position, price)
    return value, initial


def _base_of(ctx: ExchangeContext, state: StateReader, owner: bytes, market_id: int) -> tuple[int, int]:
    """`_other_markets`, remembered for the current placement (`ExchangeContext.bases`)."""
    base = ctx.bases.get(owner)
    if base is None:
        base = ctx.bases[owner] = _other_markets(ctx, state, owner, market_id)
    return base


def _free_with(market: Market, base: tuple[int, int], position: Position, price: int) -> int:
    """Free collateral (value - initial requirement with orders) with `position` on `market`."""
    return (
        base[0]
        + position_value(market, position, price)
        - base[1]
        - initial_requirement(market, position, price)
    )


# -- persistence of orders --------------------------------------------------------------------------


def _write_order(view: StateView, market_id: int, order: Order) -> None:
    # put as a record: encoded once, when the block's changes are listed, and never if a later
    # fill or cancel of the block deletes or rewrites it (readers of the key use `get`)
    view.put_record(schema.order_key(market_id, order.order_id), order)


def _delete_order(view: StateView, market_id: int, order: Order) -> None:
    view.delete(schema.order_key(market_id, order.order_id))
    if order.client_id:
        view.delete(schema.client_order_key(order.owner, market_id, order.client_id))


def _stored_order(view: StateView, market_id: int, order_id: int) -> Order | None:
    if not 0 <= order_id < 2**64:
        return None
    raw = view.get(schema.order_key(market_id, order_id))
    return None if raw is None else Order.from_fields(codec.decode(raw))


def _credit_fees(view: StateView, amount: int) -> None:
    if amount:
        collector = load_account(view, FEE_COLLECTOR)
        store_account(view, FEE_COLLECTOR, collector.with_balance(collector.balance + amount))


# -- placement --------------------------------------------------------------------------------------


def _check_shape(
    market: Market, side: int, size: int, price: int, tif: int, flags: int, gtb: int, height: int
) -> None:
    """The rules that need no state: INVALID_ORDER, OFF_TICK, OFF_STEP, BELOW_MIN_SIZE."""
    if side not in (0, 1):
        raise ExchangeError(
            Code.INVALID_ORDER, f"invalid order: side must be 0 (buy) or 1 (sell), got {side}"
        )
    if tif not in (0, 1, 2, 3):
        raise ExchangeError(
            Code.INVALID_ORDER,
            f"invalid order: time in force must be 0-3 (gtc, ioc, fok, post-only), got {tif}",
        )
    if flags & ~KNOWN_FLAGS:
        raise ExchangeError(Code.INVALID_ORDER, f"invalid order: unknown flag bits in {flags}")
    if size <= 0:
        raise ExchangeError(Code.INVALID_ORDER, "invalid order: size must be positive")
    if price <= 0:
        raise ExchangeError(Code.INVALID_ORDER, "invalid order: price must be positive")
    if 0 < gtb < height:
        raise ExchangeError(
            Code.INVALID_ORDER, f"invalid order: good_til_block {gtb} is already past (block {height})"
        )
    if price % market.subticks_per_tick:
        raise ExchangeError(
            Code.OFF_TICK,
            f"price {price} is not a multiple of the tick of {market.ticker} ({market.subticks_per_tick})",
        )
    if size % market.step_base_quantums:
        raise ExchangeError(
            Code.OFF_STEP,
            f"size {size} is not a multiple of the step ({market.step_base_quantums}) of {market.ticker}",
        )
    if size < market.min_order_base_quantums:
        raise ExchangeError(
            Code.BELOW_MIN_SIZE,
            f"size {size} is below the minimum ({market.min_order_base_quantums}) of {market.ticker}",
        )


@dataclass(frozen=True, slots=True)
class _Request:
    side: int
    size: int
    price: int
    tif: int
    reduce_only: bool
    client_id: int
    good_til_block: int


def _validate_placement(
    view: StateView,
    sender: Address,
    market: Market,
    request: _Request,
    position: Position,
    ctx: ExchangeContext,
) -> bool:
    """Every stateful placement rule (module docstring) against `position` (the sender's, as it
    will be when the order is placed); whether the order is exempt from the margin check."""
    side, size = request.side, request.size
    owner = sender.raw
    if (
        abs(position.size) + position.open_buy + position.open_sell + size > MAX_EXPOSURE
        or size * request.price > MAX_EXPOSURE * 10 ** max(0, -market.quantum_conversion_exponent)
    ):
        raise ExchangeError(
            Code.INVALID_ORDER,
            f"invalid order: size {size} at price {request.price} is beyond the largest position or "
            f"notional the chain keeps ({MAX_EXPOSURE})",
        )
    reduces = order_only_reduces(position, side, size)
    if request.reduce_only and not reduces:
        raise ExchangeError(
            Code.REDUCE_ONLY_WOULD_INCREASE,
            f"reduce-only {SIDE_NAMES[side]} of {size} could increase the position of {position.size} "
            f"(resting: buy {position.open_buy}, sell {position.open_sell})",
        )
    if not reduces and ctx.is_stale(view, market.market_id):
        raise ExchangeError(
            Code.MARKET_STALE,
            f"the oracle price of {market.ticker} is stale: only reducing orders are accepted",
        )
    if ctx.live:
        ctx.count_placement(owner, market)
    if (
        request.tif in (TimeInForce.GTC, TimeInForce.POST_ONLY)
        and position.open_orders >= market.max_open_orders
    ):
        raise ExchangeError(
            Code.TOO_MANY_OPEN_ORDERS,
            f"too many open orders: {position.open_orders} resting on {market.ticker} "
            f"(limit {market.max_open_orders})",
        )
    if (
        request.client_id
        and view.get(schema.client_order_key(owner, market.market_id, request.client_id)) is not None
    ):
        raise ExchangeError(
            Code.DUPLICATE_CLIENT_ID,
            f"client id {request.client_id} is in use by a resting order on {market.ticker}",
        )
    exempt = request.reduce_only or reduces
    if not exempt:
        problem = _placement_margin_error(view, sender, market, request, position, ctx)
        if problem is not None:
            raise ExchangeError(Code.INSUFFICIENT_MARGIN, problem)
    return exempt


def _placement_margin_error(
    view: StateView,
    sender: Address,
    market: Market,
    request: _Request,
    position: Position,
    ctx: ExchangeContext,
) -> str | None:
    """The placement check of `execution.margin.placement_error` (same formula) for a non-exempt
    order, with `position` as the sender's position on `market` (an amend removed its old order
    from it), reading the other positions key by key (no prefix scan on the hot path)."""
    oracle = ctx.price(view, market.market_id)
    return placement_margin_error(
        ctx, view, sender.raw, market, position, request.side, request.size, request.price, oracle
    )


def placement_margin_error(
    ctx: ExchangeContext,
    view: StateView,
    owner: bytes,
    market: Market,
    position: Position,
    side: int,
    size: int,
    limit: int,
    oracle: int,
    where: str = "",
) -> str | None:
    """None if the account still meets initial margin with an order of `size` at `limit` added to
    `position` in the worst case (worst loss against `oracle`, worst taker fee), else why not;
    `where` says at which price it was judged (empty: the oracle's)."""
    loss = worst_loss(market, side, size, limit, oracle)
    fee = trade_fee(market, size, limit, market.taker_fee_ppm)
    base_value, base_initial = _base_of(ctx, view, owner, market.market_id)
    with_order = position.with_orders(side, size)
    value = base_value + position_value(market, with_order, oracle)
    initial = base_initial + initial_requirement(market, with_order, oracle)
    if value - loss - fee >= initial:
        return None
    return (
        f"insufficient margin: {where}account value {value} - worst loss {loss} - worst fee {fee} "
        f"< initial requirement {initial} with the order"
    )


def _place(
    view: StateView,
    sender: Address,
    market: Market,
    request: _Request,
    ctx: ExchangeContext,
    events: list[Event],
    positions: _Positions | None = None,
) -> None:
    """Validate and (live) match and persist one order; events appended to `events`."""
    market_id = market.market_id
    owner = sender.raw
    if positions is None:
        positions = _Positions(view, market_id)
    ctx.bases.clear()
    exempt = _validate_placement(view, sender, market, request, positions.get(owner), ctx)
    if not ctx.live:
        return
    assert ctx.books is not None
    book = ctx.books.book(market_id)
    order_id = ctx.take_order_id(view)
    tif = _TIFS[request.tif]  # TimeInForce(request.tif) without the enum call (checked 0-3)
    order = Order(
        order_id, owner, _SIDES[request.side], request.price, request.size, request.size,
        request.client_id, tif is TimeInForce.POST_ONLY, request.reduce_only, request.good_til_block,
    )  # fmt: skip
    checker = _MakerCheck(ctx, view, market, positions)
    ctx.touched.add(market_id)
    result = book.place(order, tif, checker)
    if result.status is PlaceStatus.REJECTED:
        reason = result.events[0].reason if type(result.events[0]) is OrderCancelled else CancelReason.FOK
        events.append(_rejected_event(market, order, REJECT_REASONS[reason]))
        return
    events.append(_placed_event(market, order, request.tif))
    fees = _settle(view, market, result, checker.makers, positions, events)
    if result.filled:
        touched = ctx.touched_owners
        touched[owner] = None
        for maker in checker.makers.values():
            touched[maker.owner] = None
    if result.status is PlaceStatus.RESTED:
        taker = result.order
        positions.add_orders(taker, taker.remaining, 1)
        _write_order(view, market_id, taker)
        if taker.client_id:
            view.put(schema.client_order_key(owner, market_id, taker.client_id), codec.encode(taker.order_id))
    if result.filled and not exempt:
        base = _base_of(ctx, view, owner, market_id)
        free = _free_with(market, base, positions.get(owner), ctx.price(view, market_id))
        if free < 0:
            raise ExchangeError(
                Code.INSUFFICIENT_MARGIN,
                f"insufficient margin: free collateral {free} after the fills of order {order_id}",
            )
    positions.store()
    _credit_fees(view, fees)


class _MakerCheck:
    """The `maker_check` of one placement: the maker's account with the fill (and this placement's
    earlier fills of the same maker) applied must keep free collateral >= 0 or no worse than
    before; a reduce-only maker must not grow or flip its position. Remembers every maker it saw
    (for their client ids when they leave the book)."""

    __slots__ = ("_ctx", "_deltas", "_market", "_positions", "_price", "_view", "makers")

    def __init__(self, ctx: ExchangeContext, view: StateView, market: Market, positions: _Positions) -> None:
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
        base = _base_of(self._ctx, self._view, owner, market.market_id)
        free_after = _free_with(market, base, after, self._price)
        if free_after < 0 and free_after < _free_with(market, base, before, self._price):
            return False
        self._deltas[owner] = after
        return True


def _settle(
    view: StateView,
    market: Market,
    result: PlaceResult,
    makers: dict[int, Order],
    positions: _Positions,
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
                _delete_order(view, market_id, maker)
            events.append(_filled_event(market, event, maker_fee, taker_fee))
        elif type(event) is OrderCancelled:
            order = event.order
            if order.order_id == taker.order_id:
                events.append(_cancelled_event(market, order, str(event.reason)))
                continue
            positions.add_orders(order, -order.remaining, -1)
            _delete_order(view, market_id, order)
            events.append(_cancelled_event(market, order, str(event.reason)))
    if result.maker_update is not None:
        _write_order(view, market_id, result.maker_update)
    return fees


# -- actions ----------------------------------------------------------------------------------------


def apply_place(view: StateView, sender: Address, action: PlaceOrder, ctx: ExchangeContext) -> list[Event]:
    market = ctx.market(view, action.market_id)
    _check_shape(
        market,
        action.side,
        action.size,
        action.price,
        action.tif,
        action.flags,
        action.good_til_block,
        ctx.height,
    )
    request = _Request(
        action.side, action.size, action.price, action.tif, bool(action.flags & REDUCE_ONLY_FLAG),
        action.client_id, action.good_til_block,
    )  # fmt: skip
    events: list[Event] = []
    _place(view, sender, market, request, ctx, events)
    return events


def _find_order(view: StateView, ctx: ExchangeContext, market_id: int, order_id: int) -> Order | None:
    if ctx.live:
        assert ctx.books is not None
        return ctx.books.book(market_id).get(order_id)
    return _stored_order(view, market_id, order_id)


def _remove_resting(
    view: StateView, ctx: ExchangeContext, market: Market, order: Order, positions: _Positions
) -> None:
    """Take `order` off the book (live) and out of state and its owner's totals."""
    if ctx.live:
        assert ctx.books is not None
        ctx.touched.add(market.market_id)
        ctx.books.book(market.market_id).cancel(order.order_id)
    _delete_order(view, market.market_id, order)
    positions.add_orders(order, -order.remaining, -1)


def apply_cancel(view: StateView, sender: Address, action: CancelOrder, ctx: ExchangeContext) -> list[Event]:
    market = ctx.market(view, action.market_id)
    market_id = market.market_id
    order_id: int | None
    if action.by == 0:
        order_id = action.id
        order = _find_order(view, ctx, market_id, action.id)
        what = f"order {action.id}"
    elif action.by == 1:
        raw = view.get(schema.client_order_key(sender.raw, market_id, action.id))
        order_id = None if raw is None else codec.field_int(codec.decode(raw), "order id")
        order = None if order_id is None else _find_order(view, ctx, market_id, order_id)
        what = f"client id {action.id}"
    else:
        raise ExchangeError(
            Code.INVALID_ORDER, f"invalid cancel: by must be 0 (order id) or 1 (client id), got {action.by}"
        )
    if order is None and order_id is not None:  # a resting trigger order (execution.triggers)?
        trigger = load_trigger(view, market_id, order_id)
        if trigger is not None and trigger.owner == sender.raw:
            return _cancel_triggers(view, ctx, market, [trigger])
    if order is None or order.owner != sender.raw:
        raise ExchangeError(
            Code.ORDER_NOT_FOUND, f"no resting order of {sender} with {what} on {market.ticker}"
        )
    if not ctx.live:
        return []
    positions = _Positions(view, market_id)
    _remove_resting(view, ctx, market, order, positions)
    positions.store()
    return [_cancelled_event(market, order, USER_REASON)]


def _cancel_triggers(
    view: StateView,
    ctx: ExchangeContext,
    market: Market,
    triggers: list[TriggerOrder],
    reason: str = USER_REASON,
) -> list[Event]:
    """Cancel resting trigger orders of one owner (live: out of the index, state and the owner's
    open-order count); a `trigger_cancelled` event each (`reason`, "user" by default)."""
    if not ctx.live:
        return []
    assert ctx.books is not None
    ctx.touched.add(market.market_id)
    index = ctx.books.triggers(market.market_id)
    positions = _Positions(view, market.market_id)
    events: list[Event] = []
    for trigger in triggers:
        index.remove(trigger.order_id)
        delete_trigger(view, market.market_id, trigger)
        positions.set(trigger.owner, positions.get(trigger.owner).with_orders(trigger.side, 0, -1))
        events.append(trigger_cancelled_event(market.ticker, trigger, reason))
    positions.store()
    return events


def apply_cancel_all(
    view: StateView, sender: Address, action: CancelAll, ctx: ExchangeContext
) -> list[Event]:
    markets = ctx.markets(view) if action.market_id == 0 else [ctx.market(view, action.market_id)]
    if not ctx.live:
        return []
    assert ctx.books is not None
    events: list[Event] = []
    for market in markets:
        cancelled = ctx.books.book(market.market_id).cancel_owner(sender.raw)
        if cancelled:
            ctx.touched.add(market.market_id)
            positions = _Positions(view, market.market_id)
            for order in cancelled:
                _delete_order(view, market.market_id, order)
                positions.add_orders(order, -order.remaining, -1)
                events.append(_cancelled_event(market, order, USER_REASON))
            positions.store()
        triggers = ctx.books.triggers(market.market_id).owner_triggers(sender.raw)
        if triggers:  # the resting trigger orders too (execution.triggers), after the book's
            events.extend(_cancel_triggers(view, ctx, market, triggers))
    return events


def apply_amend(view: StateView, sender: Address, action: AmendOrder, ctx: ExchangeContext) -> list[Event]:
    market = ctx.market(view, action.market_id)
    old = _find_order(view, ctx, market.market_id, action.order_id)
    if old is None or old.owner != sender.raw:
        raise ExchangeError(
            Code.ORDER_NOT_FOUND,
            f"no resting order of {sender} with order {action.order_id} on {market.ticker}",
        )
    tif = TimeInForce.POST_ONLY if old.post_only else TimeInForce.GTC
    flags = REDUCE_ONLY_FLAG if old.reduce_only else 0
    _check_shape(
        market, old.side, action.new_size, action.new_price, tif, flags, old.good_til_block, ctx.height
    )
    request = _Request(
        int(old.side),
        action.new_size,
        action.new_price,
        int(tif),
        old.reduce_only,
        old.client_id,
        old.good_til_block,
    )
    positions = _Positions(view, market.market_id)
    events: list[Event] = []
    if not ctx.live:
        # validation only: judge the new order against the position without the old one; the
        # client id is the old order's own
        positions.add_orders(old, -old.remaining, -1)
        no_client_id = _Request(
            request.side, request.size, request.price, request.tif, request.reduce_only, 0, 0
        )
        _validate_placement(view, sender, market, no_client_id, positions.get(sender.raw), ctx)
        return []
    _remove_resting(view, ctx, market, old, positions)
    events.append(_cancelled_event(market, old, AMEND_REASON))
    positions.store()  # every rule of the new order reads the state without the old one
    _place(view, sender, market, request, ctx, events, positions)
    return events


def liquidation_match(
    view: StateView, ctx: ExchangeContext, market: Market, owner: bytes, side: int, size: int, limit: int
) -> tuple[int, int, list[Event]]:
    """Match an IOC order of `owner` (a liquidated account: `execution.liquidation`) of `size` at
    prices no worse than `limit` against the book of `market` (live), without the placement rules
    and without a taker fee (the liquidation fee replaces it); makers get their normal re-check and
    pay their fees. Returns (the size filled, the quote the owner's position received: positive for
    a sale, negative for a purchase, its events)."""
    assert ctx.books is not None
    market_id = market.market_id
    ctx.bases.clear()
    positions = _Positions(view, market_id)
    before = positions.get(owner).quote
    order = Order(ctx.take_order_id(view), owner, Side(side), limit, size, size, 0, False, False, 0)
    no_taker_fee = replace(market, taker_fee_ppm=0)
    checker = _MakerCheck(ctx, view, no_taker_fee, positions)
    ctx.touched.add(market_id)
    result = ctx.books.book(market_id).place(order, TimeInForce.IOC, checker)
    events = [_placed_event(market, order, int(TimeInForce.IOC))]
    fees = _settle(view, no_taker_fee, result, checker.makers, positions, events)
    touched = ctx.touched_owners
    touched[owner] = None
    for maker in checker.makers.values():
        touched[maker.owner] = None
    received = positions.get(owner).quote - before
    positions.store()
    _credit_fees(view, fees)
    return result.filled, received, events


def cancel_owner_orders(
    view: StateView, ctx: ExchangeContext, market: Market, owner: bytes, reason: str
) -> list[Event]:
    """Cancel every resting order of `owner` on `market` (live), an `order_cancelled` event each
    with `reason`, then its resting trigger orders, a `trigger_cancelled` event each with `reason`
    (a liquidation cancels the liquidated account's orders first)."""
    assert ctx.books is not None
    cancelled = ctx.books.book(market.market_id).cancel_owner(owner)
    events: list[Event] = []
    if cancelled:
        ctx.touched.add(market.market_id)
        positions = _Positions(view, market.market_id)
        for order in cancelled:
            _delete_order(view, market.market_id, order)
            positions.add_orders(order, -order.remaining, -1)
            events.append(_cancelled_event(market, order, reason))
        positions.store()
    triggers = ctx.books.triggers(market.market_id).owner_triggers(owner)
    if triggers:
        events.extend(_cancel_triggers(view, ctx, market, triggers, reason))
    return events


ORDER_ACTIONS = (PlaceOrder, CancelOrder, CancelAll, AmendOrder)


def apply_order_action(
    view: StateView,
    sender: Address,
    action: PlaceOrder | CancelOrder | CancelAll | AmendOrder,
    ctx: ExchangeContext,
) -> list[Event]:
    """Apply one order action of `sender`; ExchangeError on failure (the caller drops `view`)."""
    if isinstance(action, PlaceOrder):
        return apply_place(view, sender, action, ctx)
    if isinstance(action, CancelOrder):
        return apply_cancel(view, sender, action, ctx)
    if isinstance(action, CancelAll):
        return apply_cancel_all(view, sender, action, ctx)
    return apply_amend(view, sender, action, ctx)


# -- block phases -----------------------------------------------------------------------------------


def expire_orders(view: StateView, books: Books, height: int) -> list[Event]:
    """Remove every order with 0 < good_til_block < `height` from the books and state, market by
    market in id order; an `order_expired` event each."""
    events: list[Event] = []
    for market in books.markets():
        expired = books.book(market.market_id).expire(height)
        if not expired:
            continue
        positions = _Positions(view, market.market_id)
        for order in expired:
            _delete_order(view, market.market_id, order)
            positions.add_orders(order, -order.remaining, -1)
            events.append(_expired_event(market, order))
        positions.store()
    return events


def _action_is_non_taking(action: Action, books: Books) -> bool:
    if isinstance(action, Transfer | CancelOrder | CancelAll):
        return True
    if isinstance(action, PlaceOrder):
        return action.tif == TimeInForce.POST_ONLY
    if isinstance(action, AmendOrder):
        if action.market_id not in books:
            return False
        order = books.book(action.market_id).get(action.order_id)
        return order is not None and order.post_only
    return action.kind == ORACLE_VOTE_KIND


def is_non_taking(actions: Sequence[Action], books: Books) -> bool:
    """Whether every action of a tx is unable to take liquidity (module docstring); an amend counts
    as post-only if the order it names rests as post-only on `books` now."""
    return all(_action_is_non_taking(action, books) for action in actions)


def block_order(non_taking: Iterable[bool]) -> list[int]:
    """Execution order of a block's txs: the indexes of the non-taking ones, then the others, each
    group in tx order."""
    flags = list(non_taking)
    return [i for i, flag in enumerate(flags) if flag] + [i for i, flag in enumerate(flags) if not flag]


def account_orders(state: StateReader, books: Books | None, owner: bytes) -> list[tuple[Market, Order]]:
    """The resting orders of `owner` on every market (by market id, then order id), from `books`
    if given, else from state."""
    out: list[tuple[Market, Order]] = []
    markets = books.markets() if books is not None else load_markets(state)
    for market in markets:
        if books is not None:
            orders = books.book(market.market_id).open_orders(owner)
        else:
            orders = [o for o in load_orders(state, market.market_id) if o.owner == owner]
        out.extend((market, order) for order in orders)
    return out
