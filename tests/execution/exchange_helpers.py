"""Helpers of the exchange tests: a chain with the default markets and funded traders, order
actions in human-ish units, and readers of positions, books and events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from consensus.app import Event, ExecTxResult
from execution.exchange.books import load_orders
from execution.exchange.orderbook import Order
from execution.exchange.trigger_book import load_triggers
from execution.genesis_state import default_exchange_app_state
from execution.positions.margin import FEE_COLLECTOR
from execution.positions.position import Position, load_position
from execution.tx import STANDARD_FEES, ActionKind, AmendOrder, CancelAll, CancelOrder, PlaceOrder
from primitives.keys import Address
from tests.execution.chain import Chain, address

BTC = 1
ETH = 2
ONE_BTC = 10**10  # base quantums
STEP = 1_000_000  # 0.0001 BTC
TICK = 100_000  # subticks of $1 on BTC-USD
FUNDS = 1_000_000 * 10**6  # $1,000,000 each
PLACE_FEE = STANDARD_FEES[ActionKind.PLACE_ORDER]
"""the tx fee of one placement (`execution.fees`, the default schedule)"""
BUY, SELL = 0, 1
GTC, IOC, FOK, POST_ONLY = 0, 1, 2, 3


def usd(dollars: int) -> int:
    """Subticks of a BTC-USD price in whole dollars."""
    return dollars * TICK


def btc(tenths_of_millis: int) -> int:
    """Base quantums of a number of 0.0001 BTC steps."""
    return tenths_of_millis * STEP


def exchange_chain(
    path: Path,
    traders: int = 4,
    funds: int = FUNDS,
    oracle: Mapping[str, int] | None = None,
    **kwargs: Any,
) -> Chain:
    """A chain with BTC-USD and ETH-USD and accounts 0..traders-1 holding `funds` each."""
    state = default_exchange_app_state()
    state["oracle"] = dict(oracle or {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000})
    return Chain(path, {address(i): funds for i in range(traders)}, app_state=state, **kwargs)


def place(
    side: int,
    size: int,
    price: int,
    tif: int = GTC,
    *,
    market: int = BTC,
    reduce_only: bool = False,
    client_id: int = 0,
    good_til_block: int = 0,
) -> PlaceOrder:
    return PlaceOrder(market, side, size, price, tif, int(reduce_only), client_id, good_til_block)


def cancel(order_id: int, market: int = BTC) -> CancelOrder:
    return CancelOrder(market, 0, order_id)


def cancel_client(client_id: int, market: int = BTC) -> CancelOrder:
    return CancelOrder(market, 1, client_id)


def cancel_all(market: int = BTC) -> CancelAll:
    return CancelAll(market)


def amend(order_id: int, size: int, price: int, market: int = BTC) -> AmendOrder:
    return AmendOrder(market, order_id, size, price)


def position(chain: Chain, owner: Address, market: int = BTC) -> Position:
    return load_position(chain.app._committed, owner, market)


def fees_collected(chain: Chain) -> int:
    return chain.balance(FEE_COLLECTOR)


def stored_orders(chain: Chain, market: int = BTC) -> list[Order]:
    return load_orders(chain.app._committed, market)


def book_orders(chain: Chain, market: int = BTC) -> list[Order]:
    """The app's in-memory book as a list by order id (to compare with `stored_orders`)."""
    bids, asks = chain.app.books.book(market).orders()
    return sorted(bids + asks, key=lambda o: o.order_id)


def events_of(result: ExecTxResult, kind: str) -> list[Event]:
    return [event for event in result.events if event.type == kind]


def attrs(event: Event) -> dict[str, str]:
    return {a.key: a.value for a in event.attributes}


def all_events(results: Iterable[ExecTxResult], kind: str) -> list[dict[str, str]]:
    return [attrs(e) for r in results for e in r.events if e.type == kind]


def assert_ok(results: Sequence[ExecTxResult]) -> None:
    for i, result in enumerate(results):
        assert result.code == 0, f"tx {i}: code {result.code}: {result.log}"


def assert_books_match_state(chain: Chain) -> None:
    """On every market: the in-memory book equals the persisted orders, the in-memory trigger index
    equals the persisted trigger orders (`execution.exchange.trigger_book`), and every position's open-order
    totals equal its resting orders: `open_buy` / `open_sell` the book's orders only, `open_orders`
    the book's orders plus the resting trigger orders."""
    committed = chain.app._committed
    for market in chain.app.books.markets():
        market_id = market.market_id
        stored = stored_orders(chain, market_id)
        assert book_orders(chain, market_id) == stored
        triggers = load_triggers(committed, market_id)
        assert chain.app.books.triggers(market_id).triggers() == triggers
        totals: dict[bytes, list[int]] = {}
        for order in stored:
            t = totals.setdefault(order.owner, [0, 0, 0])
            t[int(order.side)] += order.remaining
            t[2] += 1
        for trig in triggers:
            totals.setdefault(trig.owner, [0, 0, 0])[2] += 1
        for key, raw in committed.iterate(b"a:pos:"):
            owner, position_market = key[6:26], int.from_bytes(key[26:], "big")
            if position_market != market_id:
                continue
            p = Position.decode(raw)
            assert [p.open_buy, p.open_sell, p.open_orders] == totals.pop(owner, [0, 0, 0]), owner.hex()
        assert totals == {}
