"""`ExchangeContext`: what order actions need beyond the state view, for one block (live: the books
change) or one check_tx call (not live: validation only, no book is touched): the height, the
books (read through `book` and `trigger_book`, which record the read on the view), the per-block
placement counts of the rate limit, the block's oracle prices and funding indexes as read once
(they change only at the end of the block), and what `execution.risk.liquidation` carries from
the txs to its end-block pass.

Order ids come from a counter per market (`schema.next_order_id_key`), read and written through
the view by every order that takes one (`take_order_id`): every accepted placement (a rejected
post-only or FOK order included, as the book requires increasing ids), trigger orders and the
liquidation's orders. An order is named by (market, order id).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from execution.codes import ActionError, Code
from execution.exchange.books import Books
from execution.exchange.orderbook import OrderBook
from execution.exchange.trigger_book import TriggerBook
from execution.fees import FeeParams, RateLimitParams, load_fee_params, load_rate_params, take_order_slot
from execution.markets import Market, load_market, load_markets
from execution.oracle.prices import is_stale, load_params, load_price
from execution.positions.funding_index import load_funding_index
from execution.positions.margin import MarginBase
from execution.state import StateReader, StateView
from primitives import codec
from storage import schema


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
    closed: dict[int, bool] = field(default_factory=dict)
    """option series id -> whether it has settled (`is_closed`)"""
    bases: dict[bytes, MarginBase] = field(default_factory=dict)
    """(owner) -> `_other_markets` within one placement (nothing else of the owner changes)"""
    touched_owners: dict[bytes, None] = field(default_factory=dict)
    """the owners whose positions a fill changed in this block, in first-touch order: candidates of
    `execution.risk.liquidation` (those of a failed tx stay: a needless check, never a missed one)"""
    liquidated: dict[tuple[bytes, int], int] = field(default_factory=dict)
    """(owner, market id) -> the size `execution.risk.liquidation` closed through the book this block"""
    risk_counts: dict[str, int] = field(default_factory=dict)
    """`execution.risk.liquidation`'s counters of this block (liquidations, deleveragings, ...)"""

    fee_key: bytes = schema.END_BLOCK_FEE_DELTA
    """the fee delta key of the running tx (`begin_tx`)"""
    funding_indexes: dict[int, int] = field(default_factory=dict)
    """market id -> its funding index, once read (`funding_index`)"""
    fees: FeeParams | None = None
    """the fee schedule, once read (`fee_params`)"""
    rates: RateLimitParams | None = None
    """the order-rate window's parameters, once read (`count_placement`)"""

    def __post_init__(self) -> None:
        if self.live and self.books is None:
            raise ValueError("a live exchange context needs the books")

    # tx boundaries (called by execution.executor)

    def begin_tx(self, fee_key: bytes = schema.END_BLOCK_FEE_DELTA) -> None:
        """A tx (or an end-of-block unit) starts; `fee_key`: where its fees are owed
        (`execution.exchange.fills.credit_fees`)."""
        self.tx_counts.clear()
        self.touched.clear()
        self.fee_key = fee_key

    def commit_tx(self) -> None:
        """The tx succeeded: its placements count towards the rate limits."""
        for key, count in self.tx_counts.items():
            self.counts[key] = count
        self.tx_counts.clear()
        self.touched.clear()

    def abort_tx(self, state: StateReader, dropped: StateView) -> None:
        """The tx failed and `dropped` (the view of its failed actions) is dropped: undo in the
        books each order and trigger record it wrote (back to its value in `state`, the view
        under it; every book change of an action is written through its view), in O(those
        writes), and forget its placements."""
        if self.books is not None and self.touched:
            self.books.revert(state, dropped)
        self.tx_counts.clear()
        self.touched.clear()

    def take_order_id(self, view: StateView, market_id: int) -> int:
        """The next order id of `market_id`, taken from its counter in `view` (a failed tx's ids
        go back with its view)."""
        key = schema.next_order_id_key(market_id)
        raw = view.get(key)
        order_id = 1 if raw is None else codec.field_int(codec.decode(raw), "next order id", 1)
        view.put(key, codec.encode(order_id + 1))
        return order_id

    # the books (live only): reads recorded on the view

    def book(self, view: StateView, market_id: int, *, change: bool = False) -> OrderBook:
        """The live book of `market_id`. The book is a cache of the market's order records, so
        using it is recorded on `view` as a read of their whole prefix; `change`: the caller
        changes it (`abort_tx` then reverts it if the tx fails)."""
        if self.books is None:
            raise RuntimeError("an exchange context without books has no live book")
        view.note_prefix_read(schema.order_prefix(market_id))
        if change:
            self.touched.add(market_id)
        return self.books.book(market_id)

    def trigger_book(self, view: StateView, market_id: int, *, change: bool = False) -> TriggerBook:
        """The resting trigger orders of `market_id`, recorded as `book` records the book."""
        if self.books is None:
            raise RuntimeError("an exchange context without books has no live trigger book")
        view.note_prefix_read(schema.trigger_prefix(market_id))
        if change:
            self.touched.add(market_id)
        return self.books.triggers(market_id)

    def fee_params(self, state: StateReader) -> FeeParams:
        """The chain's fee schedule (`execution.fees`), read once (only genesis writes it)."""
        fees = self.fees
        if fees is None:
            fees = self.fees = load_fee_params(state)
        return fees

    # markets and prices

    def market(self, state: StateReader, market_id: int) -> Market:
        market = self.books.market(market_id) if self.books is not None else load_market(state, market_id)
        if market is None:
            raise ActionError(Code.UNKNOWN_MARKET, f"unknown market {market_id}")
        return market

    def markets(self, state: StateReader) -> list[Market]:
        return self.books.markets() if self.books is not None else load_markets(state)

    def funding_index(self, state: StateReader, market_id: int) -> int:
        """The market's cumulative funding index (`execution.risk.funding`; it changes only in the
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

    def is_closed(self, state: StateReader, market: Market) -> bool:
        """Whether `market` is an option series that has expired and settled (its settlement record
        exists: `execution.risk.option_series`, at the end of a block only)."""
        if market.option is None:
            return False
        closed = self.closed.get(market.market_id)
        if closed is None:
            closed = state.get(schema.option_series_key(market.market_id)) is not None
            self.closed[market.market_id] = closed
        return closed

    def count_placement(self, view: StateView, owner: bytes, market: Market) -> None:
        """Count one place or amend of `owner` on `market` (live; not live: only judge it against
        the owner's order-rate window); RATE_LIMITED over the market's per-block limit or the
        window (`execution.fees.take_order_slot`)."""
        rates = self.rates
        if rates is None:
            rates = self.rates = load_rate_params(view)
        problem = take_order_slot(view, rates, owner, self.height, count=self.live)
        if problem is not None:
            raise ActionError(Code.RATE_LIMITED, problem)
        if not self.live:
            return
        key = (owner, market.market_id)
        count = self.tx_counts.get(key)
        if count is None:
            count = self.counts.get(key, 0)
        if count >= market.max_orders_per_block:
            raise ActionError(
                Code.RATE_LIMITED,
                f"rate limited: {count} places and amends on {market.ticker} in this block "
                f"(limit {market.max_orders_per_block})",
            )
        self.tx_counts[key] = count + 1
