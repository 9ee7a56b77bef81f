"""The insurance fund after a takeover: the unwind of the positions it holds through the book, over
the blocks that follow, bounded in price and size per block; and the fund's health.

`execution.risk.liquidation` makes the fund (`INSURANCE_FUND`, an ordinary account) take over a
bankrupt account's position at the bankruptcy price. This module owns what happens to it next.

Parameters (`InsuranceParams`, stored at `storage.schema.INSURANCE_PARAMS`; the defaults while none
is stored; a genesis `insurance` section sets them, `execution.genesis_state`): `unwind_fraction_ppm`
(200000: 20% of the position per block), `max_slippage_ppm` (20000: 2% from the oracle price),
`min_unwind_notional` (1000000000 quote quantums: $1,000).

The unwind (`insurance_unwind`, the end-of-block stage after the funding phase and before the
liquidation pass, on the block's live exchange context; `height` is the block's):
1. The fund's markets are `owner_markets(view, fund)`: one read. None: nothing else is read or
   written.
2. The chain's markets by id, rotated to start at index `height % len(markets)`, are visited in that
   order, keeping those on which the fund has a position record (fairness: each market leads in turn).
3. On each, the fund's position:
   - size 0 (and no orders): realized, its quote balance moved to the fund's balance and the record
     deleted (`insurance_realized`), unless the balance would become negative (then it stays);
   - the market's oracle price P is stale: skipped;
   - else, with s = |size| and q = 10**quantum_conversion_exponent, one IOC order of the fund
     through the book (`execution.exchange.placement.liquidation_match`: no placement rules, no
     taker fee; makers pay their fees and get their margin re-check) closing
         min(s, ceil_step(max(ceil(s * unwind_fraction_ppm / 1e6), ceil(min_unwind_notional / (P * q)))))
     at a limit no worse than P moved by `max_slippage_ppm` against the fund:
         a sale (long):      ceil_tick(P * (1e6 - max_slippage_ppm) / 1e6), at least one tick;
         a purchase (short): floor_tick(P * (1e6 + max_slippage_ppm) / 1e6) (0: no order);
     no order either when the book's best opposite order is beyond that limit (an order takes an
     order id and emits the exchange's order events: `order_placed`, `order_filled`, ...).
     An order that fills emits `insurance_unwound(market, size, notional, remaining)`: the size
     filled, the quote it moved (|received|) and the fund's signed position after; a position it
     closes is then realized as above.
The fund and the makers it fills are marked in `ctx.touched_owners`, so this block's liquidation
pass checks them. Sizes are per block: what does not fill waits for the next block.

Health (`insurance_fund_health`, read for metrics): the fund's balance, its account value at the
oracle prices (positions included, each settled to its market's funding index, as
`execution.positions.margin` counts it), its maintenance requirement (the portfolio rule for a group
that holds an option position, as `execution.positions.margin.requirements` counts it) and its open
positions.
"""

from __future__ import annotations

from dataclasses import astuple, dataclass, fields

from consensus.app import Event
from execution.accounts import load_account, store_account
from execution.exchange.context import ExchangeContext
from execution.exchange.events import make_event
from execution.exchange.placement import liquidation_match
from execution.markets import Market, rotated, slice_size
from execution.positions.funding_index import INSURANCE_FUND, settled
from execution.positions.margin import Entry, maintenance_requirement, position_value, requirements
from execution.positions.position import BUY, SELL, Position, load_position, owner_markets, store_position
from execution.state import StateReader, StateView
from primitives import codec
from storage import schema

PPM = 1_000_000
MAX_INT = 2**63 - 1
INSURANCE_FIELDS = ("unwind_fraction_ppm", "max_slippage_ppm", "min_unwind_notional")
"""The keys of the genesis `insurance` section, in `InsuranceParams` field order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InsuranceParams:
    """The unwind's bounds per block (module docstring)."""

    unwind_fraction_ppm: int = 200_000
    max_slippage_ppm: int = 20_000
    min_unwind_notional: int = 1_000_000_000

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        for name in INSURANCE_FIELDS:
            value = getattr(self, name)
            if type(value) is not int:
                return name, f"must be an integer, got {value!r}"
        if not 1 <= self.unwind_fraction_ppm <= PPM:
            return "unwind_fraction_ppm", f"must be within [1, {PPM}], got {self.unwind_fraction_ppm}"
        if not 0 <= self.max_slippage_ppm <= PPM:
            return "max_slippage_ppm", f"must be within [0, {PPM}], got {self.max_slippage_ppm}"
        if not 0 <= self.min_unwind_notional <= MAX_INT:
            return "min_unwind_notional", f"must be within [0, {MAX_INT}], got {self.min_unwind_notional}"
        return None

    def encode(self) -> bytes:
        return codec.encode(list(astuple(self)))

    @classmethod
    def decode(cls, raw: bytes) -> InsuranceParams:
        f = codec.field_list(codec.decode(raw), "insurance params", len(INSURANCE_FIELDS))
        names = [item.name for item in fields(cls)]
        return cls(**{n: codec.field_int(v, f"insurance params.{n}") for v, n in zip(f, names, strict=True)})

    def to_json(self) -> dict[str, int]:
        return dict(zip(INSURANCE_FIELDS, astuple(self), strict=True))


def load_params(state: StateReader) -> InsuranceParams:
    """The insurance parameters (the defaults if none are stored)."""
    raw = state.get(schema.INSURANCE_PARAMS)
    return InsuranceParams() if raw is None else InsuranceParams.decode(raw)


def init_insurance_state(view: StateView, params: InsuranceParams) -> None:
    """The genesis write of the parameters."""
    view.put(schema.INSURANCE_PARAMS, params.encode())


# -- the bounds of one block ------------------------------------------------------------------------


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def unwind_limit(params: InsuranceParams, market: Market, side: int, price: int) -> int:
    """The worst price (subticks, on the tick) the fund's order on `side` accepts at oracle price
    `price`: a sale's P * (1e6 - slip) / 1e6 rounded up to the tick (at least one tick), a
    purchase's P * (1e6 + slip) / 1e6 rounded down (0: no price)."""
    tick = market.subticks_per_tick
    if side == SELL:
        return max(tick, _ceil_div(price * (PPM - params.max_slippage_ppm), PPM * tick) * tick)
    return price * (PPM + params.max_slippage_ppm) // (PPM * tick) * tick


# -- the end-of-block stage ------------------------------------------------------------------------


def _realize(view: StateView, market: Market, position: Position) -> list[Event]:
    """Move a size-0 position's quote balance to the fund's balance and delete the record (not if
    it has orders, or if the balance would become negative)."""
    if position.size or position.open_orders or position.open_buy or position.open_sell:
        return []
    account = load_account(view, INSURANCE_FUND)
    balance = account.balance + position.quote
    if balance < 0:
        return []
    store_position(view, INSURANCE_FUND, market.market_id, Position())
    if position.quote:
        store_account(view, INSURANCE_FUND, account.with_balance(balance))
    return [make_event("insurance_realized", ("market", market.ticker), ("quote", position.quote))]


def insurance_unwind(view: StateView, ctx: ExchangeContext, height: int) -> list[Event]:
    """The end-of-block unwind of the fund's positions (module docstring); its events. `ctx` is the
    block's live exchange context."""
    held = owner_markets(view, INSURANCE_FUND.raw)
    if not held:
        return []
    params: InsuranceParams | None = None
    events: list[Event] = []
    for market in rotated(ctx.markets(view), height):
        market_id = market.market_id
        if market_id not in held:
            continue
        position = load_position(view, INSURANCE_FUND, market_id)  # settled by the fill, not here
        if position.size == 0:
            events.extend(_realize(view, market, position))
            continue
        if ctx.is_stale(view, market_id):
            continue
        if params is None:
            params = load_params(view)
        price = ctx.price(view, market_id)
        side = SELL if position.size > 0 else BUY
        size = slice_size(
            market, abs(position.size), params.unwind_fraction_ppm, params.min_unwind_notional, price
        )
        limit = unwind_limit(params, market, side, price)
        if size <= 0 or limit <= 0 or ctx.books is None:
            continue
        book = ctx.book(view, market_id)
        best = book.best_bid() if side == SELL else book.best_ask()
        if best is None or (best < limit if side == SELL else best > limit):
            continue  # nothing within the limit: no order
        filled, received, fills = liquidation_match(view, ctx, market, INSURANCE_FUND.raw, side, size, limit)
        events.extend(fills)
        if not filled:
            continue
        after = load_position(view, INSURANCE_FUND, market_id)
        events.append(
            make_event(
                "insurance_unwound",
                ("market", market.ticker),
                ("size", filled),
                ("notional", abs(received)),
                ("remaining", after.size),
            )
        )
        if after.size == 0:
            events.extend(_realize(view, market, after))
    return events


# -- health ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class FundHealth:
    """The insurance fund's figures at the oracle prices (quote quantums)."""

    balance: int
    value: int
    """the balance plus every position's value, settled to its market's funding index"""
    maintenance: int
    open_positions: int
    """markets on which the fund holds a non-zero size"""

    @property
    def underwater(self) -> bool:
        return self.value < self.maintenance


def insurance_fund_health(state: StateReader, ctx: ExchangeContext) -> FundHealth:
    """The fund's balance, account value and maintenance requirement at `ctx`'s oracle prices and
    funding indexes (a non-live context over `state` will do), and its open positions."""
    balance = load_account(state, INSURANCE_FUND).balance
    value, maintenance, open_positions = balance, 0, 0
    held: list[Entry] = []
    for market_id in owner_markets(state, INSURANCE_FUND.raw):
        position = load_position(state, INSURANCE_FUND, market_id)
        if position.is_empty:
            continue
        market = ctx.market(state, market_id)
        position = settled(position, ctx.funding_index(state, market_id))
        price = ctx.price(state, market_id)
        value += position_value(market, position, price)
        maintenance += maintenance_requirement(market, position, price)
        open_positions += int(position.size != 0)
        held.append((market, position, price))
    if any(market.option is not None for market, _, _ in held):
        maintenance = requirements(held, state, lambda market_id: ctx.price(state, market_id))[1]
    return FundHealth(balance=balance, value=value, maintenance=maintenance, open_positions=open_positions)
