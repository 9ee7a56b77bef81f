"""Market-data streams on `/websocket` (as dYdX's full-node streaming and Hyperliquid's WebSocket):
what a trader follows, published at each commit, on the RPC port and on the second listener
(`node.ws_server`) alike.

A client subscribes with `subscribe` and `{"stream": name, ...}` instead of a query:

| stream | parameter | each block that has any |
|---|---|---|
| `book` | `market` (ticker) | a `snapshot` first, then `delta`s: changed levels `[price, size]` ("0": gone) |
| `trades` | `market` | the market's fills (`order_filled` events) |
| `user` | `address` (hex) | the events naming the address, and its changed positions |
| `oracle` | | price, implied-vol and option-series events (below) |
| `funding` | | `funding` events |
| `liquidations` | | `liquidation_*` and `deleveraged` events |

The oracle stream carries the `oracle_price`, `oracle_price_clamped`, `volatility`,
`volatility_clamped`, `option_mark` and `option_expired` events.

A book's messages carry a sequence number, one per message of that market's book, shared by its
subscribers: a delta whose `seq` is not the last one plus 1 means a lost message, and the client
resubscribes for a new snapshot. The node keeps a mirror of each subscribed book (resting orders
and L2 levels) from each commit's order records (`ExchangeApp.committed.last_changes`), so a
delta costs what the block changed, not the book's size. Events are `{"type", attribute: value,
...}`; prices are subticks and sizes base quantums, as strings (`execution.query`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from consensus.app import Event
from execution.exchange.books import load_orders
from execution.exchange.orderbook import Order, Side
from execution.markets import Market, load_markets
from execution.positions.position import Position
from execution.state import CommittedState
from node.events import NewBlock
from primitives import codec
from primitives.timefmt import format_rfc3339
from storage import schema

JSON = dict[str, Any]

BOOK, TRADES, USER, ORACLE, FUNDING, LIQUIDATIONS = (
    "book",
    "trades",
    "user",
    "oracle",
    "funding",
    "liquidations",
)
_BY_MARKET = (BOOK, TRADES)
_EVENT_TYPES = {
    ORACLE: frozenset(
        {
            "oracle_price",
            "oracle_price_clamped",
            "volatility",
            "volatility_clamped",
            "option_mark",
            "option_expired",
        }
    ),
    FUNDING: frozenset({"funding"}),
    LIQUIDATIONS: frozenset(
        {"liquidation_started", "liquidation_filled", "liquidation_taken_over", "deleveraged"}
    ),
}
_USER_KEYS = ("owner", "maker", "taker", "account", "counterparty", "sender", "recipient", "liquidator")


class StreamError(ValueError):
    """A stream subscription that names no stream, or an unknown market or a bad address."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamKey:
    stream: str
    market: str = ""
    address: str = ""
    """lower-case hex"""

    @property
    def text(self) -> str:
        """The subscription's name on a client (`unsubscribe` takes the same parameters)."""
        return ":".join(part for part in ("stream", self.stream, self.market, self.address) if part)

    def params(self) -> JSON:
        out: JSON = {"stream": self.stream}
        if self.market:
            out["market"] = self.market
        if self.address:
            out["address"] = self.address
        return out


def parse_stream(params: Mapping[str, Any]) -> StreamKey:
    stream = params.get("stream")
    if stream not in (BOOK, TRADES, USER, ORACLE, FUNDING, LIQUIDATIONS):
        raise StreamError(f"unknown stream {stream!r}: book, trades, user, oracle, funding or liquidations")
    if stream in _BY_MARKET:
        market = params.get("market")
        if not isinstance(market, str) or not market:
            raise StreamError(f"the {stream} stream needs a market (its ticker)")
        return StreamKey(stream=stream, market=market)
    if stream == USER:
        address = params.get("address")
        try:
            raw = bytes.fromhex(address) if isinstance(address, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != schema.OWNER_SIZE:
            raise StreamError(f"the user stream needs an address (20 bytes as hex), got {address!r}")
        return StreamKey(stream=stream, address=raw.hex())
    return StreamKey(stream=stream)


class BookMirror:
    """One market's resting orders and L2 levels as the book stream last published them."""

    def __init__(self, market: Market, orders: Iterable[Order]) -> None:
        self.market = market
        self.prefix = schema.order_prefix(market.market_id)
        self.seq = 0
        self._orders: dict[int, tuple[Side, int, int]] = {}
        self._levels: tuple[dict[int, int], dict[int, int]] = ({}, {})
        for order in orders:
            self._set(order.order_id, (order.side, order.price, order.remaining))

    def _set(self, order_id: int, entry: tuple[Side, int, int] | None) -> list[tuple[Side, int]]:
        """Replace one order; the (side, price) levels that changed."""
        touched = []
        old = self._orders.pop(order_id, None)
        if old is not None:
            side, price, size = old
            level = self._levels[side]
            level[price] -= size
            if level[price] == 0:
                del level[price]
            touched.append((side, price))
        if entry is not None:
            side, price, size = entry
            self._orders[order_id] = entry
            level = self._levels[side]
            level[price] = level.get(price, 0) + size
            touched.append((side, price))
        return touched

    def apply(self, changes: Mapping[bytes, bytes | None]) -> JSON | None:
        """Take one commit's changes of this market's order records; the delta (None: no level
        changed), numbered with the next seq."""
        touched: set[tuple[Side, int]] = set()
        prefix, size = self.prefix, len(self.prefix)
        for key, raw in changes.items():
            if not key.startswith(prefix):
                continue
            order_id = int.from_bytes(key[size:], "big")
            if raw is None:
                touched.update(self._set(order_id, None))
            else:
                order = Order.from_fields(codec.decode(raw))
                touched.update(self._set(order_id, (order.side, order.price, order.remaining)))
        if not touched:
            return None
        self.seq += 1
        bids = sorted((p for s, p in touched if s is Side.BUY), reverse=True)
        asks = sorted(p for s, p in touched if s is Side.SELL)
        return {
            "type": "delta",
            "seq": self.seq,
            "bids": [[str(p), str(self._levels[Side.BUY].get(p, 0))] for p in bids],
            "asks": [[str(p), str(self._levels[Side.SELL].get(p, 0))] for p in asks],
        }

    def snapshot(self) -> JSON:
        bids, asks = self._levels
        return {
            "type": "snapshot",
            "seq": self.seq,
            "bids": [[str(p), str(bids[p])] for p in sorted(bids, reverse=True)],
            "asks": [[str(p), str(asks[p])] for p in sorted(asks)],
        }


def _event_json(event: Event) -> JSON:
    out: JSON = {"type": event.type}
    for attribute in event.attributes:
        out[attribute.key] = attribute.value
    return out


class MarketStreams:
    """The book mirrors of the subscribed markets, and each block's messages per stream."""

    def __init__(self, committed: CommittedState, height: Callable[[], int]) -> None:
        self._committed = committed
        self._height = height
        self._books: dict[str, BookMirror] = {}
        self._holders: dict[str, int] = {}

    def open(self, key: StreamKey) -> JSON | None:
        """Start serving `key` for one more subscriber; the first message for it (a book's
        snapshot) or None. StreamError for an unknown market."""
        if key.stream in _BY_MARKET:
            markets = {m.ticker: m for m in load_markets(self._committed)}
            market = markets.get(key.market)
            if market is None:
                raise StreamError(f"unknown market {key.market!r}: one of {', '.join(sorted(markets))}")
            if key.stream == BOOK:
                mirror = self._books.get(key.market)
                if mirror is None:
                    mirror = self._books[key.market] = BookMirror(
                        market, load_orders(self._committed, market.market_id)
                    )
                self._holders[key.market] = self._holders.get(key.market, 0) + 1
                return self._message(key, self._height(), 0, mirror.snapshot())
        return None

    def close(self, key: StreamKey) -> None:
        """One subscriber of `key` left; a book nobody follows is no longer mirrored."""
        if key.stream == BOOK and key.market in self._holders:
            self._holders[key.market] -= 1
            if self._holders[key.market] == 0:
                del self._holders[key.market], self._books[key.market]

    def on_block(self, event: NewBlock, wanted: set[StreamKey]) -> dict[StreamKey, JSON]:
        """Advance the mirrors by the commit of `event` and the messages of this block for the
        `wanted` streams that have any."""
        height, block_time = event.block.header.height, event.block.header.time
        out: dict[StreamKey, JSON] = {}
        if self._books:
            changes = self._committed.last_changes()
            for ticker, mirror in self._books.items():
                delta = mirror.apply(changes)
                if delta is not None:
                    out[StreamKey(stream=BOOK, market=ticker)] = self._message(
                        StreamKey(stream=BOOK, market=ticker), height, block_time, delta
                    )
        others = [k for k in wanted if k.stream != BOOK]
        if not others:
            return out
        events = [e for r in event.results.tx_results for e in r.events] + list(event.results.finalize.events)
        positions = self._changed_positions() if any(k.stream == USER for k in others) else {}
        for key in others:
            data = self._data(key, events, positions)
            if data is not None:
                out[key] = self._message(key, height, block_time, data)
        return out

    def _data(self, key: StreamKey, events: list[Event], positions: dict[str, list[JSON]]) -> JSON | None:
        if key.stream == TRADES:
            picked = [
                _event_json(e)
                for e in events
                if e.type == "order_filled" and e.attribute("market") == key.market
            ]
            return {"trades": picked} if picked else None
        if key.stream == USER:
            mine = [
                _event_json(e)
                for e in events
                if any(a.key in _USER_KEYS and a.value == key.address for a in e.attributes)
            ]
            changed = positions.get(key.address, [])
            return {"events": mine, "positions": changed} if mine or changed else None
        types = _EVENT_TYPES[key.stream]
        picked = [_event_json(e) for e in events if e.type in types]
        return {"events": picked} if picked else None

    def _changed_positions(self) -> dict[str, list[JSON]]:
        """owner (hex) -> the positions the last commit changed, by market (size "0" and quote
        "0": closed)."""
        markets = {m.market_id: m.ticker for m in load_markets(self._committed)}
        out: dict[str, list[JSON]] = {}
        prefix, owner_end = schema.APP_POSITION_PREFIX, len(schema.APP_POSITION_PREFIX) + schema.OWNER_SIZE
        changed = [
            (key, raw) for key, raw in self._committed.last_changes().items() if key.startswith(prefix)
        ]
        for key, raw in sorted(changed, key=lambda change: change[0]):
            market_id = schema.market_id_from_position_key(key)
            position = Position() if raw is None else Position.decode(raw)
            out.setdefault(key[len(prefix) : owner_end].hex(), []).append(
                {
                    "market": markets.get(market_id, str(market_id)),
                    "size": str(position.size),
                    "quote": str(position.quote),
                    "open_orders": position.open_orders,
                }
            )
        return out

    @staticmethod
    def _message(key: StreamKey, height: int, block_time: int, data: JSON) -> JSON:
        return {
            **key.params(),
            "height": str(height),
            "time": format_rfc3339(block_time) if block_time else "",
            "published": str(time.time_ns()),  # wall clock of the node, for latency (not chain state)
            "data": data,
        }
