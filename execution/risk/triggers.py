"""Triggered orders: stop-loss and take-profit orders that rest outside the book until the oracle
price reaches their trigger price, then execute through the exchange's normal placement path.

Action (`execution.tx.PlaceTrigger`, kind 8):
    `[8, market_id, side, size, trigger_price, limit_price, trigger_kind, flags, client_id]`:
    `trigger_kind` 0 stop-loss / 1 take-profit; `limit_price` 0 makes it a market order once
    triggered, else a GTC limit order at `limit_price`; `flags` bit 0 reduce-only; `client_id` 0
    for none. The trigger takes its order id from the exchange's one order-id counter.

When it fires (`TriggerOrder.fires_at`, the oracle price P of the market at the end of a block):
    buy stop-loss and sell take-profit when P >= trigger_price; sell stop-loss and buy
    take-profit when P <= trigger_price (dYdX v4's conditional orders; Hyperliquid's TP/SL).
    A trigger whose condition already holds when it is placed fires at the end of that block.

Execution price: a limit trigger executes as a GTC order at `limit_price`. A market trigger
executes as an IOC order whose worst price is the trigger price moved by `SLIPPAGE_PPM` (5%)
against the trader, rounded outward to the tick: a buy at ceil(trigger * 1.05) up to the next
tick, a sell at floor(trigger * 0.95) down to a tick, at least one tick (Hyperliquid's TP/SL
market orders use a fixed slippage tolerance, 10%; dYdX's clients send an explicit worst price).

Placement rules (check_tx and finalize_block), the first failing one answers:
    UNKNOWN_MARKET; INVALID_TRIGGER (trigger_kind not 0/1, trigger_price 0, a market trigger's
    execution price beyond 2**63 - 1); OFF_TICK (trigger price); then the order's shape as
    `execution.exchange` checks it with the execution price (INVALID_ORDER for side or flags,
    OFF_TICK for the limit price, OFF_STEP, BELOW_MIN_SIZE); INVALID_ORDER beyond `MAX_EXPOSURE`;
    MARKET_STALE (a trigger that is neither reduce-only nor only reducing now, on a stale market);
    RATE_LIMITED (it counts as a placement of the block); TOO_MANY_OPEN_ORDERS (the account's
    resting orders plus resting triggers on the market reach `max_open_orders`);
    DUPLICATE_CLIENT_ID (client ids are shared with resting orders); INSUFFICIENT_MARGIN (below).
    A reduce-only trigger is not judged against the position when it is placed (a stop-loss may
    be placed with the entry order, before the position exists): it is judged when it fires.

Margin: a resting trigger reserves nothing (it is not in the position's `open_buy`/`open_sell`,
so it does not raise the initial requirement), as in dYdX v4 (untriggered conditional orders are
not collateral-checked) and Hyperliquid (trigger orders use no margin until they trigger). A
trigger that is not exempt (reduce-only, or only reducing the position now) is checked once at
placement with the exchange's placement formula evaluated as if it fired now at its trigger
price: this market's oracle price taken as the trigger price, the other markets at their oracle
prices, the order added to the open orders: `value - worst_loss - worst_fee >= initial`. When it
fires, the order goes through every rule of `execution.exchange` placement again, at the oracle
prices of that moment. A resting trigger counts in the position's `open_orders` (the open-order
limit), and leaves it when it fires or is cancelled.

Parameters (`TriggerParams`, genesis section `triggers`, stored at `schema.TRIGGER_PARAMS`):
`max_triggers_per_block` (100): the most triggers that fire at the end of one block.

End of block (`trigger_orders`, after the oracle aggregation, in live mode), per market in
round-robin order: the markets by id, starting from the one at index H % (number of markets) for
the block at height H and wrapping around (so the start moves one market a block, with no state
kept), markets with a stale oracle price skipped (their triggers wait for a fresh price):
    every trigger the oracle price fires leaves the index, the state and its owner's open-order
    count, in firing order: first the triggers that fire on a rise (P >= trigger) by ascending
    trigger price, then those that fire on a fall (P <= trigger) by descending trigger price (the
    order in which a move crosses them), each price by ascending order id
    (`execution.exchange.trigger_book`). Then each is placed in that order as its own all-or-nothing unit
    (`ExchangeContext.begin_tx` / `abort_tx`, as a tx): a new order id, every placement rule of
    `execution.exchange` (the rate limit excepted: the trigger was counted when placed), matching,
    margin re-checks. An order that fails is dropped with a `trigger_cancelled` event whose
    reason is its result code's name in lower case (e.g. `insufficient_margin`,
    `reduce_only_would_increase`) and whose log is the exchange's log.
    Finding the fired triggers costs the number fired (`TriggerBook.fire`), not the number resting.
    Cap: once `max_triggers_per_block` triggers have fired in the block (placed or dropped alike),
    the rest do not fire: they stay resting, first in line in their market, and the next block's
    end fires them (in that block's market order, then the order above) if its oracle price still
    reaches them (a price that moved back leaves them resting, as if they had never been reached).
    As the start market moves each block, a market whose triggers exceed the cap in every block
    does not starve the others: each market is visited first once in every (number of markets)
    consecutive blocks.

Cancels (`execution.exchange`): cancel by order id or client id and cancel-all also cancel
resting triggers (`trigger_cancelled`, reason "user"). Triggers are not amended and have no
good-til-block.

Events (attribute values are strings; `market` is the ticker, `owner` lower-case hex; `kind`
"stop_loss"/"take_profit"; `order_id` is the trigger's id):
    trigger_placed(order_id, market, owner, side, kind, size, trigger_price, limit_price,
    execution_price, reduce_only, client_id); trigger_triggered(order_id, market, owner, side,
    kind, trigger_price, oracle_price, placed_order_id (the new order's id; 0 when it failed));
    trigger_cancelled(order_id, market, owner, reason, log); and the normal order events of the
    placed order (order_placed, order_filled, order_cancelled...).
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.app import Event
from execution.codes import ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.events import make_event
from execution.exchange.fills import Positions
from execution.exchange.orderbook import TimeInForce
from execution.exchange.placement import (
    MAX_EXPOSURE,
    REDUCE_ONLY_FLAG,
    Request,
    check_shape,
    place,
    placement_margin_error,
)
from execution.exchange.trigger_book import (
    KIND_NAMES,
    SIDE_NAMES,
    TriggerOrder,
    delete_trigger,
    trigger_cancelled_event,
    write_trigger,
)
from execution.markets import Market, rotated
from execution.positions.margin import order_only_reduces
from execution.positions.position import BUY, Position
from execution.state import StateReader, StateView
from execution.tx import PlaceTrigger
from primitives import codec
from primitives.keys import Address
from storage import schema

PPM = 1_000_000
SLIPPAGE_PPM = 50_000
"""How far a market trigger's worst price is from its trigger price (5%), against the trader."""
MAX_PRICE = 2**63 - 1
TRIGGER_FIELDS = ("max_triggers_per_block",)
"""The keys of the genesis `triggers` section (each optional, `TriggerParams` defaults)."""


@dataclass(frozen=True, slots=True)
class TriggerParams:
    """The genesis `triggers` section (module docstring)."""

    max_triggers_per_block: int = 100

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        if not 1 <= self.max_triggers_per_block <= 1_000_000:
            return "max_triggers_per_block", f"must be within [1, 1000000], got {self.max_triggers_per_block}"
        return None

    def encode(self) -> bytes:
        return codec.encode([self.max_triggers_per_block])

    @classmethod
    def decode(cls, raw: bytes) -> TriggerParams:
        f = codec.field_list(codec.decode(raw), "trigger params", len(TRIGGER_FIELDS))
        return cls(codec.field_int(f[0], "trigger params.max_triggers_per_block"))

    def to_json(self) -> dict[str, int]:
        return {"max_triggers_per_block": self.max_triggers_per_block}


def load_trigger_params(state: StateReader) -> TriggerParams:
    """The trigger parameters (the defaults if genesis wrote none)."""
    raw = state.get(schema.TRIGGER_PARAMS)
    return TriggerParams() if raw is None else TriggerParams.decode(raw)


def init_trigger_state(view: StateView, params: TriggerParams) -> None:
    """The genesis write of the parameters."""
    view.put(schema.TRIGGER_PARAMS, params.encode())


def execution_price(market: Market, side: int, trigger_price: int, limit_price: int) -> int:
    """The price the triggered order is placed at: `limit_price`, or for a market trigger
    (`limit_price` 0) the trigger price moved by `SLIPPAGE_PPM` against the trader, rounded
    outward to the tick (at least one tick)."""
    if limit_price:
        return limit_price
    tick = market.subticks_per_tick
    if side == BUY:
        moved = -(-trigger_price * (PPM + SLIPPAGE_PPM) // PPM)
        return -(-moved // tick) * tick
    moved = trigger_price * (PPM - SLIPPAGE_PPM) // PPM
    return max(moved // tick, 1) * tick


def _time_in_force(limit_price: int) -> int:
    return int(TimeInForce.GTC) if limit_price else int(TimeInForce.IOC)


# -- placement --------------------------------------------------------------------------------------


def _check_trigger_shape(market: Market, action: PlaceTrigger, height: int) -> int:
    """The rules that need no state (module docstring); the execution price."""
    if action.trigger_kind not in (0, 1):
        raise ActionError(
            Code.INVALID_TRIGGER,
            f"invalid trigger: kind must be 0 (stop-loss) or 1 (take-profit), got {action.trigger_kind}",
        )
    if action.trigger_price <= 0:
        raise ActionError(Code.INVALID_TRIGGER, "invalid trigger: trigger price must be positive")
    if action.trigger_price % market.subticks_per_tick:
        raise ActionError(
            Code.OFF_TICK,
            f"trigger price {action.trigger_price} is not a multiple of the tick of {market.ticker} "
            f"({market.subticks_per_tick})",
        )
    price = execution_price(market, action.side, action.trigger_price, action.limit_price)
    if price > MAX_PRICE:
        raise ActionError(
            Code.INVALID_TRIGGER,
            f"invalid trigger: the execution price {price} of trigger price {action.trigger_price} "
            f"is beyond {MAX_PRICE}",
        )
    tif = _time_in_force(action.limit_price)
    check_shape(market, action.side, action.size, price, tif, action.flags, 0, height)
    return price


def _margin_error(
    view: StateView,
    owner: bytes,
    market: Market,
    position: Position,
    trigger: TriggerOrder,
    price: int,
    ctx: ExchangeContext,
) -> str | None:
    """The exchange's placement formula as if `trigger` fired now: this market's oracle price
    taken as the trigger price, `position` the owner's on the market (module docstring)."""
    ctx.bases.clear()
    return placement_margin_error(
        ctx,
        view,
        owner,
        market,
        position,
        trigger.side,
        trigger.size,
        price,
        trigger.trigger_price,
        "at the trigger price, ",
    )


def apply_place_trigger(
    view: StateView, sender: Address, action: PlaceTrigger, ctx: ExchangeContext
) -> list[Event]:
    """Validate (module docstring) and, live, store and index a trigger order; its event."""
    market = ctx.market(view, action.market_id)
    market_id = market.market_id
    price = _check_trigger_shape(market, action, ctx.height)
    if ctx.is_closed(view, market):
        raise ActionError(Code.MARKET_CLOSED, f"{market.ticker} has expired and settled: it takes no orders")
    owner = sender.raw
    positions = Positions(view, market_id)
    position = positions.get(owner)
    size = action.size
    if (
        abs(position.size) + position.open_buy + position.open_sell + size > MAX_EXPOSURE
        or size * price > MAX_EXPOSURE * 10 ** max(0, -market.quantum_conversion_exponent)
    ):
        raise ActionError(
            Code.INVALID_ORDER,
            f"invalid order: size {size} at price {price} is beyond the largest position or notional "
            f"the chain keeps ({MAX_EXPOSURE})",
        )
    reduce_only = bool(action.flags & REDUCE_ONLY_FLAG)
    exempt = reduce_only or order_only_reduces(position, action.side, size)
    if not exempt and ctx.is_stale(view, market_id):
        raise ActionError(
            Code.MARKET_STALE,
            f"the oracle price of {market.ticker} is stale: only reducing orders are accepted",
        )
    ctx.count_placement(view, owner, market)
    if position.open_orders >= market.max_open_orders:
        raise ActionError(
            Code.TOO_MANY_OPEN_ORDERS,
            f"too many open orders: {position.open_orders} resting orders and triggers on "
            f"{market.ticker} (limit {market.max_open_orders})",
        )
    if action.client_id and view.get(schema.client_order_key(owner, market_id, action.client_id)) is not None:
        raise ActionError(
            Code.DUPLICATE_CLIENT_ID,
            f"client id {action.client_id} is in use by a resting order on {market.ticker}",
        )
    trigger = TriggerOrder(
        0, owner, action.side, size, action.trigger_price, action.limit_price, action.trigger_kind,
        reduce_only, action.client_id,
    )  # fmt: skip
    if not exempt:
        problem = _margin_error(view, owner, market, position, trigger, price, ctx)
        if problem is not None:
            raise ActionError(Code.INSUFFICIENT_MARGIN, problem)
    if not ctx.live:
        return []
    assert ctx.books is not None
    order_id = ctx.take_order_id(view, market_id)
    trigger = TriggerOrder(
        order_id, owner, action.side, size, action.trigger_price, action.limit_price, action.trigger_kind,
        reduce_only, action.client_id,
    )  # fmt: skip
    write_trigger(view, market_id, trigger)
    positions.set(owner, position.with_orders(action.side, 0, 1))
    positions.store()
    ctx.trigger_book(view, market_id, change=True).add(trigger)
    return [
        make_event(
            "trigger_placed",
            ("order_id", order_id),
            ("market", market.ticker),
            ("owner", owner.hex()),
            ("side", SIDE_NAMES[trigger.side]),
            ("kind", KIND_NAMES[trigger.kind]),
            ("size", size),
            ("trigger_price", trigger.trigger_price),
            ("limit_price", trigger.limit_price),
            ("execution_price", price),
            ("reduce_only", int(reduce_only)),
            ("client_id", trigger.client_id),
        )
    ]


# -- end of block -----------------------------------------------------------------------------------


def _triggered_event(market: Market, trigger: TriggerOrder, oracle: int, placed_order_id: int) -> Event:
    return make_event(
        "trigger_triggered",
        ("order_id", trigger.order_id),
        ("market", market.ticker),
        ("owner", trigger.owner.hex()),
        ("side", SIDE_NAMES[trigger.side]),
        ("kind", KIND_NAMES[trigger.kind]),
        ("trigger_price", trigger.trigger_price),
        ("oracle_price", oracle),
        ("placed_order_id", placed_order_id),
    )


def _execute(
    view: StateView, ctx: ExchangeContext, market: Market, trigger: TriggerOrder, oracle: int
) -> list[Event]:
    """Place one fired trigger's order as an all-or-nothing unit (module docstring)."""
    price = execution_price(market, trigger.side, trigger.trigger_price, trigger.limit_price)
    request = Request(
        trigger.side, trigger.size, price, _time_in_force(trigger.limit_price), trigger.reduce_only,
        trigger.client_id, 0,
    )  # fmt: skip
    ctx.begin_tx()
    unit = StateView(view)
    placed: list[Event] = []
    try:
        place(unit, Address(trigger.owner), market, request, ctx, placed)
    except ActionError as exc:
        ctx.abort_tx(view, unit)
        return [
            _triggered_event(market, trigger, oracle, 0),
            trigger_cancelled_event(market.ticker, trigger, exc.code.name.lower(), exc.log),
        ]
    ctx.tx_counts.clear()  # the rate limit counted the trigger when it was placed
    ctx.commit_tx()
    unit.apply_to(view)
    placed_id = next(
        (
            int(a.value)
            for e in placed
            if e.type == "order_placed"
            for a in e.attributes
            if a.key == "order_id"
        ),
        0,
    )
    return [_triggered_event(market, trigger, oracle, placed_id), *placed]


def trigger_orders(view: StateView, ctx: ExchangeContext, height: int) -> list[Event]:
    """Fire and place every trigger order that the oracle prices of the block at `height` reach
    (module docstring). `ctx` is a live context created after the oracle aggregation (its cached
    prices must be the new ones); the caller flushes its order-id counter."""
    if not ctx.live or ctx.books is None:
        raise ValueError("trigger_orders needs a live exchange context")
    books = ctx.books
    events: list[Event] = []
    budget = load_trigger_params(view).max_triggers_per_block
    for market in rotated(books.markets(), height):
        market_id = market.market_id
        index = books.triggers(market_id)
        if budget <= 0:
            break
        if not len(index) or ctx.is_stale(view, market_id):
            continue
        oracle = ctx.price(view, market_id)
        fired = index.fire(oracle, budget)
        if not fired:
            continue
        budget -= len(fired)
        positions = Positions(view, market_id)
        for trigger in fired:
            delete_trigger(view, market_id, trigger)
            positions.set(trigger.owner, positions.get(trigger.owner).with_orders(trigger.side, 0, -1))
        positions.store()
        for trigger in fired:
            events.extend(_execute(view, ctx, market, trigger, oracle))
    return events


def triggers_fired(events: list[Event]) -> int:
    """How many triggers fired in `events` (for the node's counter)."""
    return sum(1 for event in events if event.type == "trigger_triggered")
