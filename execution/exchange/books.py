"""The in-memory order books (`Books`): one `OrderBook` and one `TriggerBook` per market (prices in
subticks, sizes in base quantums), owned by the app: built from committed state at start
(`Books.load`), changed only by `finalize_block` (through a live `ExchangeContext`), and for a
tx that then fails, undone change by change (`Books.revert`, from `ExchangeContext.abort_tx`).
The books are a cache of the `order_key` (and trigger) records: every book change is written
through the view in the same action, so state alone defines them. Markets are read once at load
(there is no way to change a market after genesis yet).

Changes mirrored with `apply` are kept per market, the last value of each key, and put into the
market's books when they are next read (`book`, `triggers`): a worker's replica
(`execution.workers`) then decodes only the orders of the markets its lanes trade, once however
often they changed meanwhile. That is the same book because a book is a function of its records
(`OrderBook.put`; priority comes from the order ids).
"""

from __future__ import annotations

from collections.abc import Iterable

from execution.exchange.orderbook import Order, OrderBook
from execution.exchange.trigger_book import TriggerBook, TriggerOrder
from execution.markets import Market, load_markets
from execution.state import Change, StateReader, StateView
from primitives import codec
from storage import schema

MAX_KEPT = 20_000
"""Changes kept for one market beyond this are mirrored at once (a replica whose lanes never trade
a market would otherwise keep the key of every order that market ever had)."""


def _ids(key: bytes, start: int) -> tuple[int, int]:
    """(market id, order id) of an order or trigger key whose prefix ends at `start`."""
    split = start + schema.MARKET_ID_SIZE
    return int.from_bytes(key[start:split], "big"), int.from_bytes(key[split:], "big")


def load_orders(state: StateReader, market_id: int) -> list[Order]:
    """The resting orders of `market_id` in state, by order id."""
    return [Order.from_fields(codec.decode(raw)) for _, raw in state.iterate(schema.order_prefix(market_id))]


class Books:
    """market id -> its `OrderBook` and `Market`, built from state (see the module docstring)."""

    __slots__ = ("_books", "_by_id", "_markets", "_pending", "_triggers")

    def __init__(self) -> None:
        self._books: dict[int, OrderBook] = {}
        self._triggers: dict[int, TriggerBook] = {}  # resting stop-loss and take-profit orders
        self._markets: dict[int, Market] = {}
        self._by_id: list[Market] = []
        self._pending: dict[int, dict[bytes, bytes | None]] = {}  # market -> key -> value to mirror

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
        self._pending.pop(market_id, None)
        book = OrderBook()
        book.restore(load_orders(state, market_id))
        self._books[market_id] = book
        self._triggers[market_id] = TriggerBook.load(state, market_id)

    def apply(self, changes: Iterable[Change]) -> None:
        """Mirror changes of order and trigger records and of the order-id counters (other keys are
        ignored) in the books: what a tx run elsewhere wrote, or (`revert`) the values that undo a
        failed tx. Kept until the market's books are read (module docstring); costs the number of
        changes, not the size of the books."""
        order_prefix = schema.APP_ORDER_PREFIX
        trigger_prefix = schema.APP_TRIGGER_PREFIX
        counter_prefix = schema.APP_NEXT_ORDER_ID_PREFIX
        pending = self._pending
        size = schema.MARKET_ID_SIZE
        for key, value in changes:
            if key.startswith(order_prefix):
                start = len(order_prefix)
            elif key.startswith(trigger_prefix):
                start = len(trigger_prefix)
            elif key.startswith(counter_prefix):
                start = len(counter_prefix)
            else:
                continue
            market_id = int.from_bytes(key[start : start + size], "big")
            kept = pending.get(market_id)
            if kept is None:
                pending[market_id] = {key: value}
            else:
                kept[key] = value
                if len(kept) > MAX_KEPT:
                    self._mirror(market_id)

    def _mirror(self, market_id: int) -> None:
        """Put the kept changes of `market_id` into its books, in key order."""
        changes = self._pending.pop(market_id)
        order_prefix = schema.APP_ORDER_PREFIX
        trigger_prefix = schema.APP_TRIGGER_PREFIX
        book = self._books[market_id]
        triggers = self._triggers[market_id]
        for key in sorted(changes):
            value = changes[key]
            if key.startswith(order_prefix):
                order_id = _ids(key, len(order_prefix))[1]
                if value is None:
                    book.cancel(order_id)
                else:
                    book.put(Order.from_fields(codec.decode(value)))
            elif key.startswith(trigger_prefix):
                order_id = _ids(key, len(trigger_prefix))[1]
                if value is None:
                    triggers.remove(order_id)
                else:
                    triggers.put(TriggerOrder.decode(value))
            else:  # the order-id counter (every resting id is below it, so it can go first)
                next_id = 1 if value is None else codec.field_int(codec.decode(value), "next order id", 1)
                book.rewind_ids(next_id)

    def revert(self, state: StateReader, dropped: StateView) -> None:
        """Undo in the books what the failed tx whose view is `dropped` did: each order and
        trigger record it wrote goes back to its value in `state` (the view under it)."""
        self.apply((key, state.get(key)) for key in sorted(dropped.write_set))

    def market(self, market_id: int) -> Market | None:
        return self._markets.get(market_id)

    def markets(self) -> list[Market]:
        """Every market, by id (do not modify the list)."""
        return self._by_id

    def book(self, market_id: int) -> OrderBook:
        if market_id in self._pending:
            self._mirror(market_id)
        return self._books[market_id]

    def triggers(self, market_id: int) -> TriggerBook:
        """The resting trigger orders of `market_id` (`execution.risk.triggers`)."""
        if market_id in self._pending:
            self._mirror(market_id)
        return self._triggers[market_id]

    def __contains__(self, market_id: int) -> bool:
        return market_id in self._books
