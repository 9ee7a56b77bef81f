"""The exchange's events. Attribute values are strings; `market` is the ticker, `owner`/`maker`/
`taker` lower-case hex addresses, sides "buy"/"sell", tif "gtc"/"ioc"/"fok"/"post_only":
order_placed(order_id, market, owner, side, size, price, tif, client_id, reduce_only,
good_til_block), order_filled(market, maker_order_id, taker_order_id, maker, taker, price, size,
maker_fee, taker_fee, taker_side), order_cancelled(order_id, market, owner, reason: user, amend,
stp, maker_check, ioc_remainder), order_expired(order_id, market, owner), order_rejected(market,
owner, client_id, reason: post_only_would_cross, fok_not_filled). They are built without the
frozen dataclasses' `__init__`, and attributes that recur are shared objects (the hot path emits
two or three events per order). The event index (`node.indexer`) takes the ids, `market`, `owner`,
`maker`, `taker` and `client_id`; sizes, prices, fees, sides and flags are marked not indexed (an
entry each would double the index for searches nobody makes: fills above a price of any trader).
"""

from __future__ import annotations

from functools import lru_cache

from consensus.app import Event, EventAttribute
from execution.exchange.orderbook import CancelReason, Fill, Order, fast_constructor
from execution.markets import Market

SIDE_NAMES = ("buy", "sell")
TIF_NAMES = ("gtc", "ioc", "fok", "post_only")
REJECT_REASONS = {
    CancelReason.POST_ONLY_CROSS: "post_only_would_cross",
    CancelReason.FOK: "fok_not_filled",
}
AMEND_REASON = "amend"
USER_REASON = "user"


_new_event = fast_constructor(Event)
_new_attribute = fast_constructor(EventAttribute)


def make_event(kind: str, *pairs: tuple[str, object]) -> Event:
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
def _unindexed(key: str, value: str) -> EventAttribute:
    """`_shared`, marked not indexed."""
    return _new_attribute(key, value, False)


@lru_cache(maxsize=4096)
def _owner_attribute(key: str, owner: bytes) -> EventAttribute:
    """`key=<owner as lower-case hex>`, shared as `_shared` is (a trader appears in many events)."""
    return _new_attribute(key, owner.hex(), True)


def placed_event(market: Market, order: Order, tif: int) -> Event:
    # `_attribute(key, n)` written out as `_new_attribute(key, str(n), True)`: one call fewer each
    return _new_event(
        "order_placed",
        (
            _new_attribute("order_id", str(order.order_id), True),
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
            _unindexed("side", SIDE_NAMES[order.side]),
            _new_attribute("size", str(order.size), False),
            _new_attribute("price", str(order.price), False),
            _unindexed("tif", TIF_NAMES[tif]),
            _new_attribute("client_id", str(order.client_id), True),
            _unindexed("reduce_only", "1" if order.reduce_only else "0"),
            _unindexed("good_til_block", str(order.good_til_block)),
        ),
    )


def cancelled_event(market: Market, order: Order, reason: str) -> Event:
    return _new_event(
        "order_cancelled",
        (
            _attribute("order_id", order.order_id),
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
            _unindexed("reason", reason),
        ),
    )


def expired_event(market: Market, order: Order) -> Event:
    return _new_event(
        "order_expired",
        (
            _attribute("order_id", order.order_id),
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
        ),
    )


def rejected_event(market: Market, order: Order, reason: str) -> Event:
    return _new_event(
        "order_rejected",
        (
            _shared("market", market.ticker),
            _owner_attribute("owner", order.owner),
            _attribute("client_id", order.client_id),
            _shared("reason", reason),
        ),
    )


def filled_event(market: Market, fill: Fill, maker_fee: int, taker_fee: int) -> Event:
    # number attributes inline, as in `placed_event`
    return _new_event(
        "order_filled",
        (
            _shared("market", market.ticker),
            _new_attribute("maker_order_id", str(fill.maker_order_id), True),
            _new_attribute("taker_order_id", str(fill.taker_order_id), True),
            _owner_attribute("maker", fill.maker_owner),
            _owner_attribute("taker", fill.taker_owner),
            _new_attribute("price", str(fill.price), False),
            _new_attribute("size", str(fill.size), False),
            _new_attribute("maker_fee", str(maker_fee), False),
            _new_attribute("taker_fee", str(taker_fee), False),
            _unindexed("taker_side", SIDE_NAMES[fill.taker_side]),
        ),
    )
