"""Scale orders: one action that places n limit orders spread evenly over a price range
(Hyperliquid's scale order), each through the normal placement path.

Action (`execution.tx.PlaceScale`, kind 12): `[12, market_id, side, size, count, start_price,
end_price, tif, flags, client_id_base]`.

Orders: for k in 0..n-1, price_k = start + (end - start) * k / (n - 1) rounded to the tick toward
the less aggressive side (down for a buy, up for a sell: `scale_prices`); size total // n rounded
down to the step, the last order taking the remainder (`scale_sizes`); client id base + k (base 0:
none). They are placed in k order by `execution.exchange.placement.place` (every rule, matching,
margin) on the tx's view: an order that fails a rule fails the whole action, and the caller drops
the view, so nothing is placed. A post-only order that would cross is rejected by the book as a
single post-only order is (an `order_rejected` event, not a failure).

Validation before any order (the first failing rule answers): UNKNOWN_MARKET; INVALID_ORDER (count
outside [2, `MAX_COUNT`], tif not GTC/POST_ONLY, a price 0, client ids beyond 2**64 - 1); OFF_TICK
(start or end price); OFF_STEP (the total); BELOW_MIN_SIZE (the size per order). Then each order's
own rules as it is placed.

Events: the orders' normal events, then scale_placed(market, owner, count, first_order_id,
last_order_id) (live only).
"""

from __future__ import annotations

from consensus.app import Event
from execution.codes import ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.events import make_event
from execution.exchange.orderbook import TimeInForce
from execution.exchange.placement import REDUCE_ONLY_FLAG, Request, check_shape, place
from execution.markets import Market
from execution.state import StateView
from execution.tx import MAX_CLIENT_ID, PlaceScale
from primitives import codec
from primitives.keys import Address
from storage import schema

MAX_COUNT = 50
_TIFS = (int(TimeInForce.GTC), int(TimeInForce.POST_ONLY))


def scale_prices(start: int, end: int, count: int, tick: int, side: int) -> list[int]:
    """The n prices from `start` to `end` (both on the tick), each rounded to the tick down for a
    buy (side 0), up for a sell."""
    span = count - 1
    out = []
    for k in range(count):
        numerator = start * span + (end - start) * k
        ticks = numerator // (span * tick) if side == 0 else -(-numerator // (span * tick))
        out.append(ticks * tick)
    return out


def scale_sizes(total: int, count: int, step: int) -> list[int]:
    """The n sizes: total // n rounded down to the step, the last taking the remainder."""
    each = total // count // step * step
    return [each] * (count - 1) + [total - each * (count - 1)]


def _check_scale(market: Market, action: PlaceScale) -> None:
    """The rules judged before any order (module docstring)."""
    problem = None
    if not 2 <= action.count <= MAX_COUNT:
        problem = f"count must be within [2, {MAX_COUNT}], got {action.count}"
    elif action.tif not in _TIFS:
        problem = f"time in force must be 0 (gtc) or 3 (post-only), got {action.tif}"
    elif action.start_price <= 0 or action.end_price <= 0:
        problem = "prices must be positive"
    elif action.client_id_base and action.client_id_base + action.count - 1 > MAX_CLIENT_ID:
        problem = f"client ids {action.client_id_base} + {action.count - 1} exceed {MAX_CLIENT_ID}"
    if problem is not None:
        raise ActionError(Code.INVALID_ORDER, f"invalid scale order: {problem}")
    tick = market.subticks_per_tick
    for price in (action.start_price, action.end_price):
        if price % tick:
            raise ActionError(
                Code.OFF_TICK, f"price {price} is not a multiple of the tick of {market.ticker} ({tick})"
            )
    step = market.step_base_quantums
    if action.size % step:
        raise ActionError(
            Code.OFF_STEP, f"size {action.size} is not a multiple of the step ({step}) of {market.ticker}"
        )
    each = action.size // action.count // step * step
    if each < market.min_order_base_quantums:
        raise ActionError(
            Code.BELOW_MIN_SIZE,
            f"size per order {each} ({action.size} in {action.count}) is below the minimum "
            f"({market.min_order_base_quantums}) of {market.ticker}",
        )


def _next_order_id(view: StateView, market_id: int) -> int:
    raw = view.get(schema.next_order_id_key(market_id))
    return 1 if raw is None else codec.field_int(codec.decode(raw), "next order id", 1)


def apply_place_scale(
    view: StateView, sender: Address, action: PlaceScale, ctx: ExchangeContext
) -> list[Event]:
    """Validate and place the scale order's orders (module docstring); their events."""
    market = ctx.market(view, action.market_id)
    _check_scale(market, action)
    prices = scale_prices(
        action.start_price, action.end_price, action.count, market.subticks_per_tick, action.side
    )
    sizes = scale_sizes(action.size, action.count, market.step_base_quantums)
    first = _next_order_id(view, market.market_id) if ctx.live else 0
    events: list[Event] = []
    reduce_only = bool(action.flags & REDUCE_ONLY_FLAG)
    for k, (price, size) in enumerate(zip(prices, sizes, strict=True)):
        client_id = action.client_id_base + k if action.client_id_base else 0
        check_shape(market, action.side, size, price, action.tif, action.flags, 0, ctx.height)
        request = Request(action.side, size, price, action.tif, reduce_only, client_id, 0)
        place(view, sender, market, request, ctx, events)
    if not ctx.live:
        return events
    events.append(
        make_event(
            "scale_placed",
            ("market", market.ticker),
            ("owner", sender.raw.hex()),
            ("count", action.count),
            ("first_order_id", first),
            ("last_order_id", _next_order_id(view, market.market_id) - 1),
        )
    )
    return events
