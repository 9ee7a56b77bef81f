"""Cancel, cancel-all and amend; the expiry of good-til-block orders; the block order of txs.

cancel: ORDER_NOT_FOUND unless the sender has that resting order or resting trigger order (by
order id, or by a live client id); `by` other than 0/1 is INVALID_ORDER. cancel-all: market 0
means every market (in id order), each market's resting orders then its resting trigger orders;
cancelling nothing is not an error. amend: the old order (ORDER_NOT_FOUND) is cancelled (reason
"amend") and a new order placed with a new id at the back of the queue, keeping side, time in
force (post-only or GTC), reduce-only, client id and good-til-block; it counts towards the rate
limit and goes through every placement rule (`execution.exchange.placement`).

Block order (`execution.block`): `expire_orders` at the start of a block removes every order with
0 < good_til_block < height; then the txs whose actions are all non-taking (`is_non_taking`:
transfers, oracle and vol votes, cancels, cancel-alls, TWAP placements and cancels (their slices
run at the end of the block), subaccount switches, the bridge's actions, post-only placements and
amends of post-only orders) in tx order, then the others in tx order (`block_order`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from consensus.app import Event
from execution.codes import ActionError, Code
from execution.exchange.books import Books, load_orders
from execution.exchange.context import ExchangeContext
from execution.exchange.events import AMEND_REASON, USER_REASON, cancelled_event, expired_event
from execution.exchange.fills import Positions, delete_order, stored_order
from execution.exchange.orderbook import Order, TimeInForce
from execution.exchange.placement import (
    REDUCE_ONLY_FLAG,
    Request,
    check_shape,
    place,
    validate_placement,
)
from execution.exchange.trigger_book import (
    TriggerOrder,
    delete_trigger,
    load_trigger,
    trigger_cancelled_event,
)
from execution.markets import Market, load_markets
from execution.state import StateReader, StateView
from execution.tx import (
    Action,
    AmendOrder,
    BridgeDepositVote,
    BridgeSign,
    CancelAll,
    CancelOrder,
    CancelTwap,
    OracleVote,
    PlaceOrder,
    PlaceTwap,
    SetBridgeKey,
    Transfer,
    UseIsolated,
    UseSubaccount,
    VolVote,
    Withdraw,
)
from primitives import codec
from primitives.keys import Address
from storage import schema


def _find_order(view: StateView, ctx: ExchangeContext, market_id: int, order_id: int) -> Order | None:
    if ctx.live:
        return ctx.book(view, market_id).get(order_id)
    return stored_order(view, market_id, order_id)


def _remove_resting(
    view: StateView, ctx: ExchangeContext, market: Market, order: Order, positions: Positions
) -> None:
    """Take `order` off the book (live) and out of state and its owner's totals."""
    if ctx.live:
        ctx.book(view, market.market_id, change=True).cancel(order.order_id)
    delete_order(view, market.market_id, order)
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
        raise ActionError(
            Code.INVALID_ORDER, f"invalid cancel: by must be 0 (order id) or 1 (client id), got {action.by}"
        )
    if order is None and order_id is not None:  # a resting trigger order (execution.risk.triggers)?
        trigger = load_trigger(view, market_id, order_id)
        if trigger is not None and trigger.owner == sender.raw:
            return _cancel_triggers(view, ctx, market, [trigger])
    if order is None or order.owner != sender.raw:
        raise ActionError(
            Code.ORDER_NOT_FOUND, f"no resting order of {sender} with {what} on {market.ticker}"
        )
    if not ctx.live:
        return []
    positions = Positions(view, market_id)
    _remove_resting(view, ctx, market, order, positions)
    positions.store()
    return [cancelled_event(market, order, USER_REASON)]


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
    index = ctx.trigger_book(view, market.market_id, change=True)
    positions = Positions(view, market.market_id)
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
    events: list[Event] = []
    for market in markets:  # each market's resting orders, then its resting trigger orders
        events.extend(cancel_owner_orders(view, ctx, market, sender.raw, USER_REASON))
    return events


def apply_amend(view: StateView, sender: Address, action: AmendOrder, ctx: ExchangeContext) -> list[Event]:
    market = ctx.market(view, action.market_id)
    old = _find_order(view, ctx, market.market_id, action.order_id)
    if old is None or old.owner != sender.raw:
        raise ActionError(
            Code.ORDER_NOT_FOUND,
            f"no resting order of {sender} with order {action.order_id} on {market.ticker}",
        )
    tif = TimeInForce.POST_ONLY if old.post_only else TimeInForce.GTC
    flags = REDUCE_ONLY_FLAG if old.reduce_only else 0
    check_shape(
        market, old.side, action.new_size, action.new_price, tif, flags, old.good_til_block, ctx.height
    )
    request = Request(
        int(old.side),
        action.new_size,
        action.new_price,
        int(tif),
        old.reduce_only,
        old.client_id,
        old.good_til_block,
    )
    positions = Positions(view, market.market_id)
    events: list[Event] = []
    if not ctx.live:
        # validation only: judge the new order against the position without the old one; the
        # client id is the old order's own
        positions.add_orders(old, -old.remaining, -1)
        no_client_id = Request(
            request.side, request.size, request.price, request.tif, request.reduce_only, 0, 0
        )
        validate_placement(view, sender, market, no_client_id, positions.get(sender.raw), ctx)
        return []
    _remove_resting(view, ctx, market, old, positions)
    events.append(cancelled_event(market, old, AMEND_REASON))
    positions.store()  # every rule of the new order reads the state without the old one
    place(view, sender, market, request, ctx, events, positions)
    return events


def cancel_owner_orders(
    view: StateView, ctx: ExchangeContext, market: Market, owner: bytes, reason: str
) -> list[Event]:
    """Cancel every resting order of `owner` on `market` (live), an `order_cancelled` event each
    with `reason`, then its resting trigger orders, a `trigger_cancelled` event each with `reason`
    (a liquidation cancels the liquidated account's orders first)."""
    cancelled = ctx.book(view, market.market_id, change=True).cancel_owner(owner)
    events: list[Event] = []
    if cancelled:
        positions = Positions(view, market.market_id)
        for order in cancelled:
            delete_order(view, market.market_id, order)
            positions.add_orders(order, -order.remaining, -1)
            events.append(cancelled_event(market, order, reason))
        positions.store()
    triggers = ctx.trigger_book(view, market.market_id).owner_triggers(owner)
    if triggers:
        events.extend(_cancel_triggers(view, ctx, market, triggers, reason))
    return events


# -- block phases -----------------------------------------------------------------------------------


def expire_orders(view: StateView, books: Books, height: int) -> list[Event]:
    """Remove every order with 0 < good_til_block < `height` from the books and state, market by
    market in id order; an `order_expired` event each."""
    events: list[Event] = []
    for market in books.markets():
        expired = books.book(market.market_id).expire(height)
        if not expired:
            continue
        positions = Positions(view, market.market_id)
        for order in expired:
            delete_order(view, market.market_id, order)
            positions.add_orders(order, -order.remaining, -1)
            events.append(expired_event(market, order))
        positions.store()
    return events


def _action_is_non_taking(action: Action, books: Books) -> bool:
    if isinstance(
        action,
        Transfer
        | CancelOrder
        | CancelAll
        | OracleVote
        | VolVote
        | PlaceTwap
        | CancelTwap
        | UseSubaccount
        | UseIsolated
        | BridgeDepositVote
        | Withdraw
        | BridgeSign
        | SetBridgeKey,
    ):
        return True
    if isinstance(action, PlaceOrder):
        return action.tif == TimeInForce.POST_ONLY
    if isinstance(action, AmendOrder):
        if action.market_id not in books:
            return False
        order = books.book(action.market_id).get(action.order_id)
        return order is not None and order.post_only
    return False


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
