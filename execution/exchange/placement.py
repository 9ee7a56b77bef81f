"""Placing an order: the placement rules, matching through the book, and the liquidation order.

Validation (check_tx runs only this part, against the check state, and never touches a book):
UNKNOWN_MARKET; INVALID_ORDER (side not 0/1, tif not 0-3, unknown flag bits, size or price 0,
good_til_block already past; later, before the reduce-only rule: a size or notional beyond
`MAX_EXPOSURE`); OFF_TICK; OFF_STEP; BELOW_MIN_SIZE; MARKET_CLOSED (an option series that has
expired and settled, before the size rule); REDUCE_ONLY_WOULD_INCREASE (a reduce-only
order that is not "only reducing", see `execution.positions.margin.order_only_reduces`);
MARKET_STALE (a stale oracle price: only reducing orders are accepted); RATE_LIMITED (more than
`max_orders_per_block` places and amends by the account on the market in this block; check_tx
does not count); TOO_MANY_OPEN_ORDERS (a GTC or post-only order while the account has
`max_open_orders` resting on the market); DUPLICATE_CLIENT_ID (a non-zero client id of a resting
order of the account on the market); INSUFFICIENT_MARGIN (`placement_margin_error`, the check of
`execution.positions.margin.placement_error`). In that order: the first failing rule answers.

Matching (live) goes through `execution.exchange.orderbook`; self-trade prevention cancels the
taker's own resting orders that it reaches (reason "stp", dYdX's rule). Taker re-check: an order
that was not exempt from the placement check must leave its account at free collateral >= 0 after
its fills, else the action fails with INSUFFICIENT_MARGIN (the placement check makes this a matter
of rounding only; it keeps the invariant exact). Settlement: `execution.exchange.fills`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.app import Event
from execution.codes import ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.events import REJECT_REASONS, SIDE_NAMES, placed_event, rejected_event
from execution.exchange.fills import (
    MakerRecheck,
    Positions,
    base_of,
    credit_fees,
    free_with,
    margin_with,
    settle,
    write_order,
)
from execution.exchange.orderbook import CancelReason, Order, OrderCancelled, PlaceStatus, Side, TimeInForce
from execution.markets import Market
from execution.positions.margin import order_only_reduces, trade_fee, worst_loss
from execution.positions.position import Position
from execution.state import StateView
from execution.tx import PlaceOrder
from primitives import codec
from primitives.keys import Address
from storage import schema

MAX_EXPOSURE = 2**62
"""Bound of |position| + resting sizes and of an order's notional (quote quantums, for qce <= 0),
so that every stored figure stays a 64-bit integer."""
REDUCE_ONLY_FLAG = 1
KNOWN_FLAGS = REDUCE_ONLY_FLAG
_SIDES = tuple(Side)  # Side(i) is _SIDES[i] (i checked 0/1)
_TIFS = tuple(TimeInForce)  # TimeInForce(i) is _TIFS[i] (i checked 0-3)


# -- placement --------------------------------------------------------------------------------------


def check_shape(
    market: Market, side: int, size: int, price: int, tif: int, flags: int, gtb: int, height: int
) -> None:
    """The rules that need no state: INVALID_ORDER, OFF_TICK, OFF_STEP, BELOW_MIN_SIZE."""
    if side not in (0, 1):
        raise ActionError(Code.INVALID_ORDER, f"invalid order: side must be 0 (buy) or 1 (sell), got {side}")
    if tif not in (0, 1, 2, 3):
        raise ActionError(
            Code.INVALID_ORDER,
            f"invalid order: time in force must be 0-3 (gtc, ioc, fok, post-only), got {tif}",
        )
    if flags & ~KNOWN_FLAGS:
        raise ActionError(Code.INVALID_ORDER, f"invalid order: unknown flag bits in {flags}")
    if size <= 0:
        raise ActionError(Code.INVALID_ORDER, "invalid order: size must be positive")
    if price <= 0:
        raise ActionError(Code.INVALID_ORDER, "invalid order: price must be positive")
    if 0 < gtb < height:
        raise ActionError(
            Code.INVALID_ORDER, f"invalid order: good_til_block {gtb} is already past (block {height})"
        )
    if price % market.subticks_per_tick:
        raise ActionError(
            Code.OFF_TICK,
            f"price {price} is not a multiple of the tick of {market.ticker} ({market.subticks_per_tick})",
        )
    if size % market.step_base_quantums:
        raise ActionError(
            Code.OFF_STEP,
            f"size {size} is not a multiple of the step ({market.step_base_quantums}) of {market.ticker}",
        )
    if size < market.min_order_base_quantums:
        raise ActionError(
            Code.BELOW_MIN_SIZE,
            f"size {size} is below the minimum ({market.min_order_base_quantums}) of {market.ticker}",
        )


@dataclass(frozen=True, slots=True)
class Request:
    side: int
    size: int
    price: int
    tif: int
    reduce_only: bool
    client_id: int
    good_til_block: int


def validate_placement(
    view: StateView,
    sender: Address,
    market: Market,
    request: Request,
    position: Position,
    ctx: ExchangeContext,
) -> bool:
    """Every stateful placement rule (module docstring) against `position` (the sender's, as it
    will be when the order is placed); whether the order is exempt from the margin check."""
    side, size = request.side, request.size
    owner = sender.raw
    if ctx.is_closed(view, market):
        raise ActionError(Code.MARKET_CLOSED, f"{market.ticker} has expired and settled: it takes no orders")
    if (
        abs(position.size) + position.open_buy + position.open_sell + size > MAX_EXPOSURE
        or size * request.price > MAX_EXPOSURE * 10 ** max(0, -market.quantum_conversion_exponent)
    ):
        raise ActionError(
            Code.INVALID_ORDER,
            f"invalid order: size {size} at price {request.price} is beyond the largest position or "
            f"notional the chain keeps ({MAX_EXPOSURE})",
        )
    reduces = order_only_reduces(position, side, size)
    if request.reduce_only and not reduces:
        raise ActionError(
            Code.REDUCE_ONLY_WOULD_INCREASE,
            f"reduce-only {SIDE_NAMES[side]} of {size} could increase the position of {position.size} "
            f"(resting: buy {position.open_buy}, sell {position.open_sell})",
        )
    if not reduces and ctx.is_stale(view, market.market_id):
        raise ActionError(
            Code.MARKET_STALE,
            f"the oracle price of {market.ticker} is stale: only reducing orders are accepted",
        )
    ctx.count_placement(view, owner, market)
    if (
        request.tif in (TimeInForce.GTC, TimeInForce.POST_ONLY)
        and position.open_orders >= market.max_open_orders
    ):
        raise ActionError(
            Code.TOO_MANY_OPEN_ORDERS,
            f"too many open orders: {position.open_orders} resting on {market.ticker} "
            f"(limit {market.max_open_orders})",
        )
    if (
        request.client_id
        and view.get(schema.client_order_key(owner, market.market_id, request.client_id)) is not None
    ):
        raise ActionError(
            Code.DUPLICATE_CLIENT_ID,
            f"client id {request.client_id} is in use by a resting order on {market.ticker}",
        )
    exempt = request.reduce_only or reduces
    if not exempt:
        problem = _placement_margin_error(view, sender, market, request, position, ctx)
        if problem is not None:
            raise ActionError(Code.INSUFFICIENT_MARGIN, problem)
    return exempt


def _placement_margin_error(
    view: StateView,
    sender: Address,
    market: Market,
    request: Request,
    position: Position,
    ctx: ExchangeContext,
) -> str | None:
    """The placement check of `execution.positions.margin.placement_error` (same formula) for a non-exempt
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
    base = base_of(ctx, view, owner, market.market_id)
    value, initial = margin_with(market, base, position.with_orders(side, size), oracle)
    if value - loss - fee >= initial:
        return None
    return (
        f"insufficient margin: {where}account value {value} - worst loss {loss} - worst fee {fee} "
        f"< initial requirement {initial} with the order"
    )


def place(
    view: StateView,
    sender: Address,
    market: Market,
    request: Request,
    ctx: ExchangeContext,
    events: list[Event],
    positions: Positions | None = None,
) -> None:
    """Validate and (live) match and persist one order; events appended to `events`."""
    market_id = market.market_id
    owner = sender.raw
    if positions is None:
        positions = Positions(view, market_id)
    ctx.bases.clear()
    exempt = validate_placement(view, sender, market, request, positions.get(owner), ctx)
    if not ctx.live:
        return
    book = ctx.book(view, market_id, change=True)
    order_id = ctx.take_order_id(view, market_id)
    tif = _TIFS[request.tif]  # TimeInForce(request.tif) without the enum call (checked 0-3)
    order = Order(
        order_id, owner, _SIDES[request.side], request.price, request.size, request.size,
        request.client_id, tif is TimeInForce.POST_ONLY, request.reduce_only, request.good_til_block,
    )  # fmt: skip
    checker = MakerRecheck(ctx, view, market, positions)
    result = book.place(order, tif, checker)
    if result.status is PlaceStatus.REJECTED:
        reason = result.events[0].reason if type(result.events[0]) is OrderCancelled else CancelReason.FOK
        events.append(rejected_event(market, order, REJECT_REASONS[reason]))
        return
    events.append(placed_event(market, order, request.tif))
    fees = settle(view, market, result, checker.makers, positions, events)
    if result.filled:
        touched = ctx.touched_owners
        touched[owner] = None
        for maker in checker.makers.values():
            touched[maker.owner] = None
    if result.status is PlaceStatus.RESTED:
        taker = result.order
        positions.add_orders(taker, taker.remaining, 1)
        write_order(view, market_id, taker)
        if taker.client_id:
            view.put(schema.client_order_key(owner, market_id, taker.client_id), codec.encode(taker.order_id))
    if result.filled and not exempt:
        base = base_of(ctx, view, owner, market_id)
        free = free_with(market, base, positions.get(owner), ctx.price(view, market_id))
        if free < 0:
            raise ActionError(
                Code.INSUFFICIENT_MARGIN,
                f"insufficient margin: free collateral {free} after the fills of order {order_id}",
            )
    positions.store()
    credit_fees(view, ctx, fees)


# -- actions ----------------------------------------------------------------------------------------


def apply_place(view: StateView, sender: Address, action: PlaceOrder, ctx: ExchangeContext) -> list[Event]:
    market = ctx.market(view, action.market_id)
    check_shape(
        market,
        action.side,
        action.size,
        action.price,
        action.tif,
        action.flags,
        action.good_til_block,
        ctx.height,
    )
    request = Request(
        action.side, action.size, action.price, action.tif, bool(action.flags & REDUCE_ONLY_FLAG),
        action.client_id, action.good_til_block,
    )  # fmt: skip
    events: list[Event] = []
    place(view, sender, market, request, ctx, events)
    return events


def liquidation_match(
    view: StateView, ctx: ExchangeContext, market: Market, owner: bytes, side: int, size: int, limit: int
) -> tuple[int, int, list[Event]]:
    """Match an IOC order of `owner` (a liquidated account: `execution.risk.liquidation`) of `size` at
    prices no worse than `limit` against the book of `market` (live), without the placement rules
    and without a taker fee (the liquidation fee replaces it); makers get their normal re-check and
    pay their fees. Returns (the size filled, the quote the owner's position received: positive for
    a sale, negative for a purchase, its events)."""
    market_id = market.market_id
    ctx.bases.clear()
    positions = Positions(view, market_id)
    before = positions.get(owner).quote
    order = Order(
        ctx.take_order_id(view, market_id), owner, Side(side), limit, size, size, 0, False, False, 0
    )
    no_taker_fee = replace(market, taker_fee_ppm=0)
    checker = MakerRecheck(ctx, view, no_taker_fee, positions)
    result = ctx.book(view, market_id, change=True).place(order, TimeInForce.IOC, checker)
    events = [placed_event(market, order, int(TimeInForce.IOC))]
    fees = settle(view, no_taker_fee, result, checker.makers, positions, events)
    touched = ctx.touched_owners
    touched[owner] = None
    for maker in checker.makers.values():
        touched[maker.owner] = None
    received = positions.get(owner).quote - before
    positions.store()
    credit_fees(view, ctx, fees)
    return result.filled, received, events
