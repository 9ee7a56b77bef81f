"""The book mirror of the market-data streams (`node.streams`): deltas applied to a snapshot end
equal to the L2 of the orders the commits left, whatever the commits did (crossed or not: the
mirror follows records, the book's rules are the exchange's); stream parameters."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.app import Event, EventAttribute
from execution.exchange.orderbook import Order, Side
from execution.markets import default_markets
from execution.state import CommittedState
from node.streams import BookMirror, MarketStreams, StreamError, parse_stream
from primitives import codec
from storage import schema

BTC = default_markets()[0]
OTHER = default_markets()[1]

_order = st.builds(
    lambda oid, side, price, size: Order.limit(oid, b"\x01" * 20, Side(side), price, size),
    st.integers(1, 12),
    st.integers(0, 1),
    st.integers(1, 5),
    st.integers(1, 4),
)
# a commit: orders put (placed, or partly filled: a smaller remaining) or deleted by id
_commit = st.lists(st.one_of(_order, st.integers(1, 12)), max_size=6)


def _changes(commit: list[Order | int], market_id: int) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    for item in commit:
        if isinstance(item, Order):
            out[schema.order_key(market_id, item.order_id)] = item.encode()
        else:
            out[schema.order_key(market_id, item)] = None
    return out


def _levels(data: dict[str, list[list[str]]]) -> dict[str, dict[int, int]]:
    return {side: {int(p): int(s) for p, s in data[side]} for side in ("bids", "asks")}


@given(st.lists(_order, max_size=8, unique_by=lambda o: o.order_id), st.lists(_commit, max_size=8))
def test_deltas_rebuild_the_book(start: list[Order], commits: list[list[Order | int]]) -> None:
    mirror = BookMirror(BTC, start)
    snapshot = mirror.snapshot()
    book = _levels(snapshot)
    seq = snapshot["seq"]
    orders = {o.order_id: o for o in start}
    for commit in commits:
        changes = _changes(commit, BTC.market_id) | _changes(commit, OTHER.market_id)  # another market's too
        delta = mirror.apply(changes)
        for item in commit:
            if isinstance(item, Order):
                orders[item.order_id] = item
            else:
                orders.pop(item, None)
        if delta is None:
            continue
        assert delta["seq"] == seq + 1
        seq = delta["seq"]
        for side in ("bids", "asks"):
            assert [int(p) for p, _ in delta[side]] == sorted(
                (int(p) for p, _ in delta[side]), reverse=side == "bids"
            )
            for price, size in delta[side]:
                if int(size):
                    book[side][int(price)] = int(size)
                else:
                    book[side].pop(int(price), None)
    reference: dict[str, dict[int, int]] = {"bids": {}, "asks": {}}  # L2: remaining summed by price
    for order in orders.values():
        levels = reference["bids" if order.side is Side.BUY else "asks"]
        levels[order.price] = levels.get(order.price, 0) + order.remaining
    assert book == reference
    assert _levels(mirror.snapshot()) == book


def test_a_commit_that_changes_no_level_makes_no_delta() -> None:
    mirror = BookMirror(BTC, [Order.limit(1, b"\x01" * 20, Side.BUY, 5, 2)])
    assert mirror.apply({schema.order_key(OTHER.market_id, 1): None}) is None
    assert mirror.seq == 0
    same = Order.limit(1, b"\x01" * 20, Side.BUY, 5, 2)
    delta = mirror.apply({schema.order_key(BTC.market_id, 1): codec.encode(same.to_fields())})
    assert delta is not None and delta["bids"] == [["5", "2"]]  # rewritten, same size: still reported


def test_trades_are_the_market_fills() -> None:
    streams = MarketStreams(cast(CommittedState, None), lambda: 0)  # `_data` reads no state

    def fill(market: str, price: str) -> Event:
        return Event("order_filled", (EventAttribute("market", market), EventAttribute("price", price)))

    events = [
        fill("BTC-USD", "1"),
        fill("ETH-USD", "2"),
        Event("order_placed", (EventAttribute("market", "BTC-USD"),)),
    ]
    key = parse_stream({"stream": "trades", "market": "BTC-USD"})
    assert streams._data(key, events, {}) == {
        "trades": [{"type": "order_filled", "market": "BTC-USD", "price": "1"}]
    }
    assert streams._data(parse_stream({"stream": "trades", "market": "SOL-USD"}), events, {}) is None
    oracle = streams._data(
        parse_stream({"stream": "oracle"}),
        [*events, Event("oracle_price"), Event("volatility"), Event("option_mark"), Event("option_expired")],
        {},
    )
    assert oracle == {
        "events": [
            {"type": "oracle_price"},
            {"type": "volatility"},
            {"type": "option_mark"},
            {"type": "option_expired"},
        ]
    }


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({}, "unknown stream None"),
        ({"stream": "candles"}, "unknown stream 'candles'"),
        ({"stream": "book"}, "the book stream needs a market"),
        ({"stream": "trades", "market": ""}, "the trades stream needs a market"),
        ({"stream": "user", "address": "zz"}, "needs an address (20 bytes as hex)"),
        ({"stream": "user", "address": "ab" * 19}, "needs an address (20 bytes as hex)"),
    ],
)
def test_stream_parameters(params: dict[str, str], error: str) -> None:
    with pytest.raises(StreamError, match=error.replace("(", r"\(").replace(")", r"\)")):
        parse_stream(params)


def test_stream_keys() -> None:
    assert parse_stream({"stream": "user", "address": "AB" * 20}).text == "stream:user:" + "ab" * 20
    assert parse_stream({"stream": "book", "market": "BTC-USD"}).params() == {
        "stream": "book",
        "market": "BTC-USD",
    }
    assert parse_stream({"stream": "oracle", "market": "ignored"}).text == "stream:oracle"
