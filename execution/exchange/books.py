"""The in-memory order books (`Books`): one `OrderBook` and one `TriggerBook` per market (prices in
subticks, sizes in base quantums), owned by the app: built from committed state at start
(`Books.load`), changed only by `finalize_block` (through a live `ExchangeContext`), and for a
market touched by a tx that then fails, rebuilt from the block view (`ExchangeContext.abort_tx`).
The books are a cache of the `order_key` (and trigger) records: every book change is written
through the view in the same action, so state alone defines them. Markets are read once at load
(there is no way to change a market after genesis yet).
"""

from __future__ import annotations

from execution.exchange.orderbook import Order, OrderBook
from execution.exchange.trigger_book import TriggerBook
from execution.markets import Market, load_markets
from execution.state import StateReader, StateView
from primitives import codec
from storage import schema

# -- books ----------------------------------------------------------------------------------------


def load_orders(state: StateReader, market_id: int) -> list[Order]:
    """The resting orders of `market_id` in state, by order id."""
    return [Order.from_fields(codec.decode(raw)) for _, raw in state.iterate(schema.order_prefix(market_id))]


class Books:
    """market id -> its `OrderBook` and `Market`, built from state (see the module docstring)."""

    __slots__ = ("_books", "_by_id", "_markets", "_triggers")

    def __init__(self) -> None:
        self._books: dict[int, OrderBook] = {}
        self._triggers: dict[
            int, TriggerBook
        ] = {}  # resting stop/take-profit orders (execution.risk.triggers)
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
        """The resting trigger orders of `market_id` (`execution.risk.triggers`)."""
        return self._triggers[market_id]

    def __contains__(self, market_id: int) -> bool:
        return market_id in self._books
