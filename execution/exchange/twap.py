"""TWAP orders: a size executed as IOC slices at a fixed block interval (Hyperliquid's TWAP,
deterministic), their records and due index, and the end-of-block hook that runs the due slices.

Actions (`execution.tx`): `PlaceTwap` (kind 10) `[10, market_id, side, size, slices,
interval_blocks, max_slippage_ppm, flags]`; `CancelTwap` (kind 11) `[11, market_id, twap_id]`.

Placement rules (check_tx validates only; a block stores), the first failing one answers:
UNKNOWN_MARKET; INVALID_ORDER (side not 0/1, unknown flag bits, size 0, slices outside
[2, `MAX_SLICES`], interval outside [1, `MAX_INTERVAL`], slippage outside [1, `MAX_SLIPPAGE_PPM`]);
OFF_STEP; BELOW_MIN_SIZE (the total); MARKET_CLOSED; TOO_MANY_OPEN_ORDERS (the owner has
`MAX_LIVE_TWAPS` live TWAPs). No margin is judged at placement: each slice is judged when it runs.
A TWAP is not a resting order (`max_open_orders` does not count it). Cancel: ORDER_NOT_FOUND
unless the sender has a live TWAP of that id on that market.

State (`storage.schema`): the record per (owner, twap id) (`Twap`), the due index entry per
(next height, owner, twap id), the owner's twap-id counter (per owner: no key every TWAP writes)
and `TWAP_CARRY`, the lowest height whose due entries the per-block cap left waiting.

Slices (`twap_end_block`, after the trigger orders, live): the due entries of the heights from the
carry (else the block's height) to the block's height, in key order (height, owner, twap id), at
most `MAX_TWAP_SLICES_PER_BLOCK` a block (the rest wait, in that order, for the next block). The
first slice runs at the end of the block that places the TWAP, then one every interval blocks.
A slice's size is remaining // slices left rounded down to the step; the last slice takes the
rest. A slice (not the last) below the market's minimum is merged into the next (event code
"merged", nothing placed). Else an IOC order at the oracle price P moved by the slippage against
the trader (`slice_price`) goes through the normal placement path (`execution.exchange.placement`,
margin and every rule) as its own all-or-nothing unit, as triggers do. A failed slice is skipped
(event code: the result code's name in lower case, log: the exchange's log); its size, like the
unfilled part of an IOC slice, stays in `remaining`; only the slice count goes down. With no
slices left (or nothing remaining) the TWAP finishes: record and index entry go.

Events (values strings; `market` the ticker, `owner` lower-case hex): twap_placed(twap_id,
market, owner, side, size, slices, interval_blocks, max_slippage_ppm, reduce_only);
twap_slice(twap_id, market, owner, size, filled, price_limit, code, log) and the placed order's
events; twap_finished / twap_cancelled(twap_id, market, owner, filled, remaining).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.app import Event
from execution.codes import ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.events import SIDE_NAMES, make_event
from execution.exchange.fills import Positions
from execution.exchange.orderbook import TimeInForce
from execution.exchange.placement import KNOWN_FLAGS, REDUCE_ONLY_FLAG, Request, check_shape, place
from execution.markets import Market, size_to_human
from execution.state import StateReader, StateView, read_record
from execution.tx import CancelTwap, PlaceTwap
from primitives import codec
from primitives.codec import Value
from primitives.keys import Address
from storage import schema

PPM = 1_000_000
MAX_SLICES = 1_000
MAX_INTERVAL = 1_000
MAX_SLIPPAGE_PPM = 100_000
MAX_LIVE_TWAPS = 10
"""The most live TWAPs of one owner (all markets)."""
MAX_TWAP_SLICES_PER_BLOCK = 1_000
"""The most slices (merged and failed ones included) one block's end runs."""
_DUE_MARK = codec.encode(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class Twap:
    """A live TWAP (its owner and id are its key's)."""

    market_id: int
    side: int
    size: int
    """the total size asked for"""
    remaining: int
    filled: int
    slices_left: int
    interval: int
    next_height: int
    max_slippage_ppm: int
    flags: int

    @property
    def reduce_only(self) -> bool:
        return bool(self.flags & REDUCE_ONLY_FLAG)

    def to_fields(self) -> Value:
        return [
            self.market_id, self.side, self.size, self.remaining, self.filled, self.slices_left,
            self.interval, self.next_height, self.max_slippage_ppm, self.flags,
        ]  # fmt: skip

    def encode(self) -> bytes:
        return codec.encode(self.to_fields())

    @classmethod
    def decode(cls, raw: bytes) -> Twap:
        names = ("market_id", "side", "size", "remaining", "filled", "slices_left", "interval", "next_height",
                 "max_slippage_ppm", "flags")  # fmt: skip
        f = codec.field_list(codec.decode(raw), "twap", len(names))
        return cls(**{name: codec.field_int(f[i], f"twap.{name}", 0) for i, name in enumerate(names)})


def load_twap(state: StateReader, owner: bytes, twap_id: int) -> Twap | None:
    return read_record(state, schema.twap_key(owner, twap_id), Twap.decode)


def live_twaps(state: StateReader, owner: bytes) -> list[tuple[int, Twap]]:
    """The owner's live TWAPs as (twap id, record), by twap id."""
    prefix = schema.twap_prefix(owner)
    return [
        (int.from_bytes(key[len(prefix) :], "big"), Twap.decode(raw)) for key, raw in state.iterate(prefix)
    ]


def slice_size(remaining: int, slices_left: int, step: int) -> int:
    """The next slice's size: the rest for the last slice, else remaining / slices left rounded
    down to the step."""
    if slices_left <= 1:
        return remaining
    return remaining // slices_left // step * step


def slice_price(oracle: int, side: int, slippage_ppm: int, tick: int) -> int:
    """The slice's worst price: a buy ceil to the tick of P * (1e6 + s) / 1e6, a sell floor to the
    tick of P * (1e6 - s) / 1e6 (at least one tick)."""
    if side == 0:
        return -(-oracle * (PPM + slippage_ppm) // (PPM * tick)) * tick
    return max(oracle * (PPM - slippage_ppm) // (PPM * tick), 1) * tick


def _store(view: StateView, owner: bytes, twap_id: int, twap: Twap) -> None:
    view.put_record(schema.twap_key(owner, twap_id), twap)
    view.put(schema.twap_due_key(twap.next_height, owner, twap_id), _DUE_MARK)


def _remove(view: StateView, owner: bytes, twap_id: int, twap: Twap) -> None:
    view.delete(schema.twap_key(owner, twap_id))
    view.delete(schema.twap_due_key(twap.next_height, owner, twap_id))


def _end_event(kind: str, market: str, owner: bytes, twap_id: int, twap: Twap) -> Event:
    return make_event(
        kind,
        ("twap_id", twap_id),
        ("market", market),
        ("owner", owner.hex()),
        ("filled", twap.filled),
        ("remaining", twap.remaining),
    )


# -- actions ----------------------------------------------------------------------------------------


def _check_twap(market: Market, action: PlaceTwap) -> None:
    """The rules that need no state (module docstring)."""
    problem = None
    if action.side not in (0, 1):
        problem = f"side must be 0 (buy) or 1 (sell), got {action.side}"
    elif action.flags & ~KNOWN_FLAGS:
        problem = f"unknown flag bits in {action.flags}"
    elif action.size <= 0:
        problem = "size must be positive"
    elif not 2 <= action.slices <= MAX_SLICES:
        problem = f"slices must be within [2, {MAX_SLICES}], got {action.slices}"
    elif not 1 <= action.interval_blocks <= MAX_INTERVAL:
        problem = f"interval must be within [1, {MAX_INTERVAL}] blocks, got {action.interval_blocks}"
    elif not 1 <= action.max_slippage_ppm <= MAX_SLIPPAGE_PPM:
        problem = f"max slippage must be within [1, {MAX_SLIPPAGE_PPM}] ppm, got {action.max_slippage_ppm}"
    if problem is not None:
        raise ActionError(Code.INVALID_ORDER, f"invalid twap: {problem}")
    if action.size % market.step_base_quantums:
        raise ActionError(
            Code.OFF_STEP,
            f"size {action.size} is not a multiple of the step ({market.step_base_quantums}) of "
            f"{market.ticker}",
        )
    if action.size < market.min_order_base_quantums:
        raise ActionError(
            Code.BELOW_MIN_SIZE,
            f"size {action.size} is below the minimum ({market.min_order_base_quantums}) of {market.ticker}",
        )


def apply_place_twap(
    view: StateView, sender: Address, action: PlaceTwap, ctx: ExchangeContext
) -> list[Event]:
    """Validate (module docstring) and, live, store and index a TWAP due at this block's end."""
    market = ctx.market(view, action.market_id)
    _check_twap(market, action)
    if ctx.is_closed(view, market):
        raise ActionError(Code.MARKET_CLOSED, f"{market.ticker} has expired and settled: it takes no orders")
    owner = sender.raw
    live = len(view.iterate(schema.twap_prefix(owner)))
    if live >= MAX_LIVE_TWAPS:
        raise ActionError(
            Code.TOO_MANY_OPEN_ORDERS, f"too many twaps: {live} live (limit {MAX_LIVE_TWAPS} per account)"
        )
    if not ctx.live:
        return []
    counter = schema.twap_next_id_key(owner)
    raw = view.get(counter)
    twap_id = 1 if raw is None else codec.field_int(codec.decode(raw), "next twap id", 1)
    view.put(counter, codec.encode(twap_id + 1))
    twap = Twap(
        market_id=market.market_id, side=action.side, size=action.size, remaining=action.size, filled=0,
        slices_left=action.slices, interval=action.interval_blocks, next_height=ctx.height,
        max_slippage_ppm=action.max_slippage_ppm, flags=action.flags,
    )  # fmt: skip
    _store(view, owner, twap_id, twap)
    return [
        make_event(
            "twap_placed",
            ("twap_id", twap_id),
            ("market", market.ticker),
            ("owner", owner.hex()),
            ("side", SIDE_NAMES[action.side]),
            ("size", action.size),
            ("slices", action.slices),
            ("interval_blocks", action.interval_blocks),
            ("max_slippage_ppm", action.max_slippage_ppm),
            ("reduce_only", int(twap.reduce_only)),
        )
    ]


def apply_cancel_twap(
    view: StateView, sender: Address, action: CancelTwap, ctx: ExchangeContext
) -> list[Event]:
    """Stop a live TWAP of the sender (ORDER_NOT_FOUND otherwise); live, its record and index go."""
    market = ctx.market(view, action.market_id)
    owner = sender.raw
    twap = load_twap(view, owner, action.twap_id) if action.twap_id else None
    if twap is None or twap.market_id != market.market_id:
        raise ActionError(
            Code.ORDER_NOT_FOUND, f"no live twap {action.twap_id} of {sender} on {market.ticker}"
        )
    if not ctx.live:
        return []
    _remove(view, owner, action.twap_id, twap)
    return [_end_event("twap_cancelled", market.ticker, owner, action.twap_id, twap)]


# -- end of block -----------------------------------------------------------------------------------


def _slice_event(
    market: Market, owner: bytes, twap_id: int, size: int, filled: int, price: int, code: str, log: str
) -> Event:
    return make_event(
        "twap_slice",
        ("twap_id", twap_id),
        ("market", market.ticker),
        ("owner", owner.hex()),
        ("size", size),
        ("filled", filled),
        ("price_limit", price),
        ("code", code),
        ("log", log),
    )


def _run_slice(view: StateView, ctx: ExchangeContext, owner: bytes, twap_id: int, twap: Twap) -> list[Event]:
    """One due slice of a TWAP (module docstring); the TWAP stored again or finished."""
    market = ctx.market(view, twap.market_id)
    size = slice_size(twap.remaining, twap.slices_left, market.step_base_quantums)
    events: list[Event] = []
    filled = 0
    if twap.slices_left > 1 and size < market.min_order_base_quantums:
        events.append(_slice_event(market, owner, twap_id, size, 0, 0, "merged", "below the minimum size"))
    else:
        price = slice_price(
            ctx.price(view, market.market_id), twap.side, twap.max_slippage_ppm, market.subticks_per_tick
        )
        request = Request(twap.side, size, price, int(TimeInForce.IOC), twap.reduce_only, 0, 0)
        before = Positions(view, market.market_id).get(owner).size
        ctx.begin_tx()
        unit = StateView(view)
        placed: list[Event] = []
        try:
            check_shape(market, twap.side, size, price, int(TimeInForce.IOC), twap.flags, 0, ctx.height)
            place(unit, Address(owner), market, request, ctx, placed)
        except ActionError as exc:
            ctx.abort_tx(view, unit)
            events.append(
                _slice_event(market, owner, twap_id, size, 0, price, exc.code.name.lower(), exc.log)
            )
        else:
            ctx.commit_tx()
            unit.apply_to(view)
            filled = abs(Positions(view, market.market_id).get(owner).size - before)
            events.append(_slice_event(market, owner, twap_id, size, filled, price, "ok", ""))
            events.extend(placed)
    view.delete(schema.twap_due_key(twap.next_height, owner, twap_id))
    twap = replace(
        twap,
        remaining=twap.remaining - filled,
        filled=twap.filled + filled,
        slices_left=twap.slices_left - 1,
        next_height=ctx.height + twap.interval,
    )
    if twap.slices_left == 0 or twap.remaining == 0:
        view.delete(schema.twap_key(owner, twap_id))
        events.append(_end_event("twap_finished", market.ticker, owner, twap_id, twap))
    else:
        _store(view, owner, twap_id, twap)
    return events


def twap_end_block(view: StateView, ctx: ExchangeContext, height: int) -> list[Event]:
    """Run the slices due at the end of the block at `height` (module docstring). `ctx` is the live
    context of the end of the block (the trigger orders' one: its prices are the new ones)."""
    if not ctx.live:
        raise ValueError("twap_end_block needs a live exchange context")
    carry_raw = view.get(schema.TWAP_CARRY)
    low = height if carry_raw is None else min(height, codec.field_int(codec.decode(carry_raw), "twap carry"))
    budget = MAX_TWAP_SLICES_PER_BLOCK
    events: list[Event] = []
    left: int | None = None
    for due in range(low, height + 1):
        entries = view.iterate(schema.twap_due_prefix(due))
        if entries and budget <= 0:
            left = due
            break
        for key, _ in entries:
            if budget <= 0:
                left = due
                break
            _, owner, twap_id = schema.twap_due_entry(key)
            twap = load_twap(view, owner, twap_id)
            if twap is None or twap.next_height != due:  # cannot happen: record and index go together
                raise ValueError(f"twap due index entry {key.hex()} without its record")
            budget -= 1
            events.extend(_run_slice(view, ctx, owner, twap_id, twap))
        if left is not None:
            break
    if left is None:
        if carry_raw is not None:
            view.delete(schema.TWAP_CARRY)
    else:
        view.put(schema.TWAP_CARRY, codec.encode(left))
    return events


def twap_json(market: Market, twap_id: int, twap: Twap) -> dict[str, object]:
    """A live TWAP as the `/twaps/<address>` query shows it (sizes also in human units)."""
    return {
        "twap_id": str(twap_id),
        "market": market.ticker,
        "market_id": str(twap.market_id),
        "side": SIDE_NAMES[twap.side],
        "size": str(twap.size),
        "size_human": size_to_human(market, twap.size),
        "remaining": str(twap.remaining),
        "remaining_human": size_to_human(market, twap.remaining),
        "filled": str(twap.filled),
        "filled_human": size_to_human(market, twap.filled),
        "slices_left": str(twap.slices_left),
        "interval_blocks": str(twap.interval),
        "next_height": str(twap.next_height),
        "max_slippage_ppm": str(twap.max_slippage_ppm),
        "reduce_only": twap.reduce_only,
    }
