"""Liquidation, the insurance fund and deleveraging: which accounts are at risk (without scanning
every account), the permissionless `LIQUIDATE` action, the automatic end-block pass, the closing of
positions through the book, the insurance fund's takeover and auto-deleveraging.

Parameters (`LiquidationParams`, genesis section `liquidation`, stored at `LIQUIDATION_PARAMS`):
`fee_ppm` (15000: 1.5%), `liquidator_reward_ppm` (5000), `work_budget` (50000 state operations),
`max_deleverages_per_block` (10), `max_position_fraction_ppm` (100000: 10% of a position per
block), `min_liquidation_notional` (1000000000 quote quantums: $1,000), `stale_haircut_ppm`
(50000: 5%).

Figures (`execution.positions.margin`, at the oracle prices, q = 10**quantum_conversion_exponent, every
position settled to its market's funding index: `account_health`, as `margin_summary` counts it;
`ExchangeContext.funding_index` caches the index, which changes only in the funding phase just
before this pass, which updates the cache; the maintenance requirement is the portfolio rule's for
a group holding an option position, the linear rule's otherwise): an account is **liquidatable**
when it has a non-zero position and `value < maintenance`. It is **bankrupt** when `value < 0`.
The **bankruptcy price** of its position of size s on market m is the price at which closing the
whole position brings the account value to 0, every other position at its oracle price: with
`rest = value - floor(s * P_m * q)` (the account value without m's mark),

    B = -rest / (s * q)          (subticks, a rational number)

Closing s at B pays the account exactly `X = -rest` quote quantums (a sale: X > 0 for a long); a
transfer of the whole position at the bankruptcy price (takeover, deleveraging) moves exactly X, so
the account ends at value 0 with no rounding at all. Where B must be a price (the limit of the
book order, the `price` of events), it is rounded against the liquidated account: a sale's limit is
B rounded up to the tick, a purchase's rounded down (a fill at the limit never leaves the account
below what the exact B gives it); events show floor(B).

Candidates (detection costs what changed, never every account)
    1. the queue (`LIQUIDATION_QUEUE`): accounts carried over from earlier blocks, in order;
    2. the owners whose positions a fill changed in this block (`ExchangeContext.touched_owners`,
       marked by settlement), in first-touch order;
    3. for each market whose oracle price (or funding index) differs from what the last pass saw
       (`Marks`: `liquidation_mark_key`, which also keeps the market's funding clocks), in market
       id order, the holders whose healthy price band the new price (or the funding paid since)
       may leave (`execution.positions.holders.crossed`: one range read per side of the market's
       sorted band edges, so the cost is the holders crossed, not the holders). Bands: with
       exactly one open position the band is exact (`_band`: the break-even price of value =
       maintenance, widened by three quote quantums: two for the roundings of the figures, one
       for that of a later funding settlement); with k > 1 (`_multi_bands`) the cushion value -
       maintenance (less 3k) is split evenly and each market's band is how far its price may move
       before its share is used up; no cushion, or a portfolio-margined group (whose requirement
       moves with its underlying's price, vol and time, not with one price): unknown, checked on
       every move of any market it holds; and for every perpetual that moved, the holders with an
       unknown band of its option series (the series' mark may round to the same price). Funding
       paid since
       a band was computed shrinks it by at most `funding_shift_rate` subticks per index unit on
       the payers' side (the holder index keeps what the clocks need). A band is refreshed
       whenever its account is checked (`_refresh_bands`), and every change to an account between
       checks marks it (2.), so a band is never trusted for an account that changed since. A
       block without a move or trade costs one read per market.
    Each candidate is checked once per pass (its account and its position on each market).

Order and budget
    The liquidatable candidates are processed in one order (`_how_far_under`): the accounts
    carried over in the queue first, then the rest; within each, by value per maintenance
    requirement (ppm), the furthest under water (bankrupt accounts, whose ratio is negative)
    first, then by address. The pass runs on a `CountingView` that counts every state read and
    write (a deterministic measure of its work); once the steps have spent `work_budget` of them
    (the candidates' checks are not counted: all must be checked anyway, and counting them starved
    the steps), each remaining non-bankrupt account goes to the queue, in that order, to be
    processed first in the next block (at least one non-bankrupt account is processed in every
    block). A
    bankrupt account is always resolved in the block it is found, whatever the budget (the rule
    that no account ends a block with negative value comes first). Owners whose positions the
    pass itself changed (makers, the fund, deleveraging counterparties) and accounts still
    liquidatable after their step join the queue. LIQUIDATE actions (paid for by their txs' fees)
    spend none of the budget. What each step moved is kept for `/liquidations`
    (`execution.risk.history.record_block`), the pass's and the LIQUIDATE actions' alike.

One liquidation step of an account (`_Step`)
    Its resting orders and resting trigger orders on every market are cancelled first (reason
    "liquidation": `execution.exchange.orders.cancel_owner_orders`). Then, while it
    is liquidatable, for each of its positions by notional at the oracle price (largest first,
    then market id), on markets whose oracle price is fresh (stale markets: below):
    1. IOC through the book (`execution.exchange.placement.liquidation_match`: the account is the taker,
       makers get their normal re-check, the liquidation fee replaces the taker fee) of the larger
       of the block's slice, `max(ceil(|s0| * max_position_fraction_ppm / 1e6), the size of
       min_liquidation_notional at the oracle price)` rounded up to the step less what earlier
       steps of the block closed (s0: the position when its first step of the block began), and
       the part that restores health (`_restoring_size`: the least multiple of the step whose
       close at the oracle price, less its fee, would leave value >= maintenance; the whole
       position when none does), at most the position, at the bankruptcy price or better (so an
       account is cleared in one step when the book is deep enough, as on Hyperliquid, and a
       slightly unhealthy one closes only a part, as on dYdX). The restoring part assumes the
       linear rule, so a position in a portfolio-margined group (the perpetual and the option
       series of an underlying with an option position) closes the block's slice alone, never a
       "restoring" part computed by the wrong rule: the account stays queued and closes a further
       slice in each following block while it is liquidatable;
    2. the liquidation fee `ceil(closed notional * fee_ppm / 1e6)`, capped at the account value
       after the fill (never below 0), from the position's quote balance to `INSURANCE_FUND`;
       for a LIQUIDATE action, then the reward `floor(closed notional * liquidator_reward_ppm /
       1e6)`, capped the same way, to the sender's balance (a payout, so rounded down; it can be 0
       when the account has nothing left, and nothing is paid for the part not closed through the
       book: the takeover and deleveraging leave the account at exactly 0);
    3. if the account is still liquidatable and either the book did not fill the whole part or the
       account is bankrupt: the backstop. The insurance fund takes over the whole remaining
       position at the bankruptcy price if, with it, the fund's value stays >= its maintenance
       requirement ("while its balance can pay the loss"; the fund is an ordinary account whose
       positions count, by the same rules, portfolio margin included, and it is never its own
       backstop); else **deleveraging** (counted towards
       `max_deleverages_per_block` unless the account is bankrupt) against the opposite positions
       of the market, found by a scan of that market's holder index (once per market and side in
       a pass, kept current after it from what the pass writes: `Counterparties`):
       counterparties are ranked by the key `(-profit, -leverage_ppm, address)` where `profit` is
       the position's value `floor(size * P * q) + quote` and `leverage_ppm = |floor(size * P *
       q)| * 1e6 // value` of its account (a value <= 0 ranks as the largest leverage, 2**63 - 1).
       Each closes `d = min(what remains, its position)` (less if taking d would leave its account
       value negative) at the bankruptcy price: the liquidated account receives
       `floor(X * D_i / |s|) - floor(X * D_(i-1) / |s|)` for cumulative sizes D (rounded against it;
       the total is exactly X once the whole position is closed). An account without an open
       position is never a counterparty, so it never pays for another's loss.

Stale markets: no book order closes a position on a market whose oracle price is stale (the last
fresh price is the only price known, and the book may have moved away). A liquidatable account
that is not bankrupt keeps such positions (it is queued until the price is fresh again). A
bankrupt account (value < 0 at the last fresh prices) goes to the backstop at once, market by
market: the insurance fund takes the position over at the bankruptcy price (the account ends at
exactly 0, whatever the price) if it can bear it with the position judged at the last fresh price
moved against the fund by `stale_haircut_ppm` (`_haircut_price`: a long's taken at floor(P * (1e6
- h) / 1e6), a short's at ceil(P * (1e6 + h) / 1e6)), else deleveraging against the opposite
positions at the bankruptcy price. A LIQUIDATE action whose account's positions are all on stale
markets fails with LIQUIDATION_HALTED (one that is not liquidatable: NOT_LIQUIDATABLE, checked
first); the pass resolves such an account at the end of the block if it is bankrupt.

Events (attributes are strings, addresses lower-case hex, `market` the ticker):
liquidation_started(account, market, size, oracle_price, bankruptcy_price, value, maintenance,
liquidator), liquidation_filled(account, market, size, notional, fee, reward, liquidator),
liquidation_taken_over(account, fund, market, size, price, quote), deleveraged(account,
counterparty, market, size, price, quote). The book order of step 1 also emits the exchange's
order_placed / order_filled / order_cancelled events.

Funding: every figure counts pending funding (above); every change of a position here (the fee and
reward, the takeover, deleveraging) loads it through
`execution.positions.funding_index.load_settled_position` (the book fill through the exchange's
`execution.exchange.fills.Positions`), so the funding pool always holds exactly what the
unsettled positions owe.

The pass is the last end-block phase (`execution.app`), after the funding phase: an account that
a funding tick pushes under water is found (its market's mark changed) and resolved in that block.

The insurance fund unwinds the positions it takes over through the book in the following blocks
(`execution.risk.insurance`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass, field, fields

from sortedcontainers import SortedList

from consensus.app import Event
from execution.accounts import load_account, store_account
from execution.codes import ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.events import make_event
from execution.exchange.orders import cancel_owner_orders
from execution.exchange.placement import liquidation_match
from execution.markets import Market, pow10, slice_size, value_floor
from execution.positions.funding_index import (
    FUNDING_INDEX_SCALE,
    INSURANCE_FUND,
    load_settled_position,
    settled,
)
from execution.positions.holders import Rate, crossed, set_band, unknown_band_holders
from execution.positions.margin import (
    Entry,
    grouped_requirements,
    maintenance_requirement,
    portfolio_groups,
    position_value,
    requirements,
    underlying_of,
)
from execution.positions.position import Position, load_position, owner_markets, store_position
from execution.risk.history import DELEVERAGED, LIQUIDATED, TAKEN_OVER, LiquidationRecord, record_block
from execution.state import CountingView, StateReader, StateView
from execution.tx import Liquidate
from primitives import codec
from primitives.keys import ADDRESS_SIZE, Address
from storage import schema

PPM = 1_000_000
MAX_PRICE = 2**63 - 1
DEFAULT_WORK_BUDGET = 50_000
"""State operations (`execution.state.CountingView`) a pass may spend before it leaves the rest of
the liquidatable accounts to the next block: measured by `derivd bench liquidation` at about 7 us
each on a 2-core machine (the pass that clears 1,000 accounts at 100,000 holders counts 45,000),
so about 0.35 s, inside a 1-second block with room for the txs."""
LIQUIDATION_REASON = "liquidation"
LIQUIDATION_FIELDS = (
    "fee_ppm",
    "liquidator_reward_ppm",
    "work_budget",
    "max_deleverages_per_block",
    "max_position_fraction_ppm",
    "min_liquidation_notional",
    "stale_haircut_ppm",
)
"""The keys of the genesis `liquidation` section, in `LiquidationParams` field order."""
LIQUIDATION_RENAMED = {
    "max_liquidations_per_block": (
        "replaced by work_budget: the state operations a block's liquidation pass may spend before it "
        "leaves the rest of the liquidatable accounts to the next block (default 50000)"
    ),
}
"""Keys of a former rule, refused at genesis with their replacement named."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidationParams:
    """The liquidation parameters (module docstring)."""

    fee_ppm: int = 15_000
    liquidator_reward_ppm: int = 5_000
    work_budget: int = DEFAULT_WORK_BUDGET
    max_deleverages_per_block: int = 10
    max_position_fraction_ppm: int = 100_000
    min_liquidation_notional: int = 1_000_000_000
    stale_haircut_ppm: int = 50_000

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        for name in ("fee_ppm", "liquidator_reward_ppm", "stale_haircut_ppm"):
            value = getattr(self, name)
            if not 0 <= value <= PPM:
                return name, f"must be within [0, {PPM}], got {value}"
        if not 1 <= self.max_deleverages_per_block <= 1_000_000:
            return (
                "max_deleverages_per_block",
                f"must be within [1, 1000000], got {self.max_deleverages_per_block}",
            )
        if not 1 <= self.work_budget <= 10**12:
            return "work_budget", f"must be within [1, 10**12], got {self.work_budget}"
        if not 1 <= self.max_position_fraction_ppm <= PPM:
            value = self.max_position_fraction_ppm
            return "max_position_fraction_ppm", f"must be within [1, {PPM}], got {value}"
        if not 0 <= self.min_liquidation_notional <= 2**63 - 1:
            value = self.min_liquidation_notional
            return "min_liquidation_notional", f"must be a non-negative integer, got {value}"
        return None

    def encode(self) -> bytes:
        return codec.encode(list(astuple(self)))

    @classmethod
    def decode(cls, raw: bytes) -> LiquidationParams:
        f = codec.field_list(codec.decode(raw), "liquidation params", len(LIQUIDATION_FIELDS))
        names = [item.name for item in fields(cls)]
        return cls(
            **{n: codec.field_int(v, f"liquidation params.{n}") for v, n in zip(f, names, strict=True)}
        )

    def to_json(self) -> dict[str, int]:
        return dict(zip(LIQUIDATION_FIELDS, astuple(self), strict=True))


def load_params(state: StateReader) -> LiquidationParams:
    """The liquidation parameters (the defaults if genesis wrote none)."""
    raw = state.get(schema.LIQUIDATION_PARAMS)
    return LiquidationParams() if raw is None else LiquidationParams.decode(raw)


def init_liquidation_state(view: StateView, params: LiquidationParams) -> None:
    """The genesis write of the parameters."""
    view.put(schema.LIQUIDATION_PARAMS, params.encode())


# -- account health ----------------------------------------------------------------------------


@dataclass(slots=True)
class Health:
    """An account's value and maintenance requirement at the oracle prices, with its positions
    (market, position settled to the market's funding index, oracle price), by market id, and the
    underlyings of its portfolio-margined groups (`execution.positions.margin`), ascending."""

    owner: bytes
    value: int
    maintenance: int
    held: list[tuple[Market, Position, int]] = field(default_factory=list)
    portfolio: tuple[int, ...] = ()

    def in_portfolio(self, market: Market) -> bool:
        """Whether `market`'s position is margined by the portfolio rule (its group is)."""
        return bool(self.portfolio) and underlying_of(market) in self.portfolio

    @property
    def has_open_position(self) -> bool:
        return any(p.size for _, p, _ in self.held)

    @property
    def liquidatable(self) -> bool:
        return self.value < self.maintenance and self.has_open_position

    def position(self, market_id: int) -> tuple[Market, Position, int] | None:
        for entry in self.held:
            if entry[0].market_id == market_id:
                return entry
        return None


def account_health(view: StateReader, ctx: ExchangeContext, owner: bytes) -> Health:
    """The figures of `owner` (module docstring), reading its account and its position key on each
    market it has one on (`owner_markets`; no prefix scan). Each position counts as settled to its
    market's funding index (`execution.positions.funding_index.settled`, as
    `execution.positions.margin.margin_summary` counts it): its pending funding is part of the
    value, rounded as settlement rounds. The maintenance requirement is `margin_summary`'s: the
    portfolio rule for the groups that hold an option position (`requirements`), else linear."""
    address = Address(owner)
    value = load_account(view, address).balance
    options = False
    held: list[tuple[Market, Position, int]] = []
    for market_id in owner_markets(view, owner):
        market = ctx.market(view, market_id)
        position = load_position(view, address, market_id)
        if position.is_empty:
            continue
        position = settled(position, ctx.funding_index(view, market.market_id))
        price = ctx.price(view, market.market_id)
        value += position_value(market, position, price)
        held.append((market, position, price))
        options = options or market.option is not None
    if not options:
        maintenance = 0
        for market, position, price in held:
            maintenance += maintenance_requirement(market, position, price)
        return Health(owner, value, maintenance, held)
    groups = portfolio_groups(held)
    maintenance = grouped_requirements(held, groups, view, lambda market_id: ctx.price(view, market_id))[1]
    return Health(owner, value, maintenance, held, tuple(groups))


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _haircut_price(price: int, size: int, haircut_ppm: int) -> int:
    """`price` moved against a position of `size` by `haircut_ppm`: a long's floor(P * (1e6 -
    h) / 1e6), a short's ceil(P * (1e6 + h) / 1e6)."""
    if size > 0:
        return price * (PPM - haircut_ppm) // PPM
    return _ceil_div(price * (PPM + haircut_ppm), PPM)


def _band(health: Health) -> tuple[int, int] | None:
    """The healthy band `(lo, hi)` of the account: every price lo < P < hi of its one open
    position's market keeps it healthy (at the funding index of `health`); None (unknown) unless it
    has exactly one open position and no portfolio-margined group. With K = value - floor(s * P *
    q) (independent of P) the account is liquidatable iff K + floor(s*P*q) <
    ceil(|s|*P*q*mmf/1e6), which implies K - 2 < P*q*(|s|*mmf/1e6 - s); one more quote quantum is
    kept for the rounding of a later funding settlement (`_funding_shift`): liquidatable implies
    for a long P < (3 - K) * 1e6 / (q * s * (1e6 - mmf)), for a short P > (K - 3) * 1e6 / (q * |s|
    * (1e6 + mmf))."""
    open_positions = [entry for entry in health.held if entry[1].size]
    if len(open_positions) != 1 or health.portfolio:
        return None
    return _single_band(health, *open_positions[0])


def _multi_bands(
    health: Health, open_positions: list[tuple[Market, Position, int]]
) -> list[tuple[int, int] | None]:
    """The bands of an account with k > 1 open positions: its cushion value - maintenance, less 3k
    for the roundings (two of the figures, one of a later funding settlement), split evenly;
    position m keeps its share while its price moves by at most d_m = share * 1e6 / (|s_m| * q *
    (1e6 + mmf_m)) (the most value - maintenance can lose per unit of price), so the account is
    healthy while every price stays within P_m +- d_m."""
    k = len(open_positions)
    if k == 0:
        return []
    share = (health.value - health.maintenance - 3 * k) // k
    if share <= 0:
        return [None] * k
    bands: list[tuple[int, int] | None] = []
    for market, position, price in open_positions:
        e = market.quantum_conversion_exponent
        num = share * PPM * (pow10(-e) if e < 0 else 1)
        den = abs(position.size) * (PPM + market.maintenance_margin_ppm) * (pow10(e) if e > 0 else 1)
        reach = num // den
        bands.append((max(0, price - reach - 1), min(MAX_PRICE, price + reach + 1)))
    return bands


def _single_band(health: Health, market: Market, position: Position, price: int) -> tuple[int, int] | None:
    size = position.size
    k = health.value - value_floor(market, size, price)
    mmf = market.maintenance_margin_ppm
    e = market.quantum_conversion_exponent
    scale_num = pow10(-e) if e < 0 else 1
    scale_den = pow10(e) if e > 0 else 1
    if size > 0:
        den = size * (PPM - mmf) * scale_den
        if den <= 0:
            return None
        num = (3 - k) * PPM * scale_num
        threshold = _ceil_div(num, den)  # liquidatable => P < threshold
        return max(0, threshold - 1), MAX_PRICE
    den = -size * (PPM + mmf) * scale_den
    num = (k - 3) * PPM * scale_num
    threshold = num // den  # liquidatable => P > threshold
    return 0, max(0, min(MAX_PRICE, threshold + 1))


def funding_shift_rate(market: Market) -> Rate:
    """(N, D) such that a change d of the market's funding index costs a position at most what an
    adverse price move of ceil(|d| * N / D) subticks would (`execution.positions.holders`): a
    position of size s pays at most |s| * |d| / SCALE (plus one quote quantum of rounding, kept in
    the band), and value - maintenance loses at least |s| * q * (1e6 - mmf) / 1e6 per subtick of
    an adverse move (for a long, a short and the k > 1 split alike). Only payers lose (for d > 0
    the longs, for d < 0 the shorts); a receiver gains at least -1 quantum of rounding, also kept
    in the band. None when mmf >= 100%."""
    mmf = market.maintenance_margin_ppm
    if mmf >= PPM:
        return None
    e = market.quantum_conversion_exponent
    return PPM * (pow10(-e) if e < 0 else 1), FUNDING_INDEX_SCALE * (PPM - mmf) * (pow10(e) if e > 0 else 1)


def _refresh_bands(view: StateView, ctx: ExchangeContext, health: Health, marks: Marks) -> None:
    """Record the account's band on every market it holds (`execution.positions.holders.set_band`),
    with the funding clock of its side (the band holds at the funding index `health` counted). An
    account with a portfolio-margined group has no band (unknown: checked on every move)."""
    open_positions = [entry for entry in health.held if entry[1].size]
    bands: list[tuple[int, int] | None]
    if health.portfolio:
        bands = [None] * len(open_positions)
    elif len(open_positions) == 1:
        bands = [_band(health)]
    else:
        bands = _multi_bands(health, open_positions)
    for (market, position, _), band in zip(open_positions, bands, strict=True):
        market_id = market.market_id
        if band is None:  # unknown: neither the clock nor the rate counts (`set_band`)
            set_band(view, market_id, health.owner, None, long=position.size > 0, clock=0, rate=None)
            continue
        set_band(
            view,
            market_id,
            health.owner,
            band,
            long=position.size > 0,
            clock=marks.clock(view, market_id, long=position.size > 0),
            rate=funding_shift_rate(market),
        )


# -- detection -----------------------------------------------------------------------------------


class Marks:
    """The markets' liquidation marks (`schema.liquidation_mark_key`: `[price, funding index, up,
    down]`, what the last pass saw), read once per pass. The funding clocks `up` and `down` sum
    every rise and every fall of the index the passes have seen: longs pay on rises, shorts on
    falls (`execution.positions.holders`)."""

    __slots__ = ("_clocks",)

    def __init__(self) -> None:
        self._clocks: dict[int, tuple[int, int]] = {}

    @staticmethod
    def _read(view: StateView, market_id: int) -> tuple[int, int, int, int] | None:
        raw = view.get(schema.liquidation_mark_key(market_id))
        if raw is None:
            return None
        f = codec.field_list(codec.decode(raw), "liquidation mark", 4)
        return (
            codec.field_int(f[0], "liquidation mark.price"),
            codec.field_int(f[1], "liquidation mark.index", -(2**63)),
            codec.field_int(f[2], "liquidation mark.up"),
            codec.field_int(f[3], "liquidation mark.down"),
        )

    def clocks(self, view: StateView, market_id: int) -> tuple[int, int]:
        """The market's funding clocks (up, down)."""
        clocks = self._clocks.get(market_id)
        if clocks is None:
            mark = self._read(view, market_id)
            clocks = self._clocks[market_id] = (0, 0) if mark is None else (mark[2], mark[3])
        return clocks

    def clock(self, view: StateView, market_id: int, *, long: bool) -> int:
        """The funding clock that a long (the rises) or a short (the falls) of the market pays by."""
        up, down = self.clocks(view, market_id)
        return up if long else down

    def update(self, view: StateView, market_id: int, price: int, index: int) -> bool:
        """Record what this pass sees of the market; whether it differs from the last pass's."""
        mark = self._read(view, market_id)
        if mark is not None and mark[0] == price and mark[1] == index:
            self._clocks[market_id] = (mark[2], mark[3])
            return False
        up, down = (0, 0) if mark is None else (mark[2], mark[3])
        if mark is not None:
            up, down = up + max(0, index - mark[1]), down + max(0, mark[1] - index)
        self._clocks[market_id] = (up, down)
        view.put(schema.liquidation_mark_key(market_id), codec.encode([price, index, up, down]))
        return True


def moved_markets(view: StateView, ctx: ExchangeContext, marks: Marks) -> list[Market]:
    """The markets whose oracle price or funding index differ from what the last pass saw (by
    id); the marks are updated."""
    return [
        market
        for market in ctx.markets(view)
        if marks.update(
            view,
            market.market_id,
            ctx.price(view, market.market_id),
            ctx.funding_index(view, market.market_id),
        )
    ]


def load_queue(state: StateReader) -> list[bytes]:
    raw = state.get(schema.LIQUIDATION_QUEUE)
    if raw is None:
        return []
    items = codec.field_list(codec.decode(raw), "liquidation queue")
    return [codec.field_bytes(item, "liquidation queue[]", ADDRESS_SIZE) for item in items]


def store_queue(view: StateView, owners: list[bytes]) -> None:
    if owners:
        view.put(schema.LIQUIDATION_QUEUE, codec.encode(tuple(owners)))
    elif view.get(schema.LIQUIDATION_QUEUE) is not None:
        view.delete(schema.LIQUIDATION_QUEUE)


def candidates(view: StateView, ctx: ExchangeContext, marks: Marks | None = None) -> list[bytes]:
    """The pass's candidates in order, each once (module docstring)."""
    marks = Marks() if marks is None else marks
    found: dict[bytes, None] = dict.fromkeys(load_queue(view))
    for owner in ctx.touched_owners:
        found[owner] = None
    moved: dict[int, None] = {}
    for market in moved_markets(view, ctx, marks):
        market_id = market.market_id
        moved[market_id] = None
        price, up, down = ctx.price(view, market_id), *marks.clocks(view, market_id)
        for owner in crossed(view, market_id, price, up, down, funding_shift_rate(market)):
            found[owner] = None
    for market in ctx.markets(view):  # a series whose underlying moved, its own mark perhaps not
        option = market.option
        if option is not None and option.underlying_id in moved and market.market_id not in moved:
            for owner in unknown_band_holders(view, market.market_id):
                found[owner] = None
    return list(found)


def _price_of(market: Market, quote: int, size: int) -> int:
    """floor(|quote| / (|size| * q)) in subticks: the price that `quote` pays for `size`."""
    e = market.quantum_conversion_exponent
    if size == 0:
        return 0
    if e <= 0:
        return abs(quote) * pow10(-e) // abs(size)
    return abs(quote) // (abs(size) * pow10(e))


# -- one liquidation step ----------------------------------------------------------------------------


def _bump(ctx: ExchangeContext, name: str, by: int = 1) -> None:
    ctx.risk_counts[name] = ctx.risk_counts.get(name, 0) + by


def _restoring_size(params: LiquidationParams, market: Market, health: Health, size: int, price: int) -> int:
    """The least multiple of the step (at most |size|) whose close at the oracle price, less its
    liquidation fee, would leave the account's value at least its maintenance requirement (every
    other position as it is); |size| when no part does."""
    base, step = abs(size), market.step_base_quantums
    others = health.maintenance - maintenance_requirement(market, Position(size=size), price)

    def restores(part: int) -> bool:
        fee = _ceil_div(value_floor(market, part, price) * params.fee_ppm, PPM)
        left = Position(size=size - part if size > 0 else size + part)
        return health.value - fee >= others + maintenance_requirement(market, left, price)

    low, high = 0, _ceil_div(base, step)  # the answer is min(base, k * step) for the least such k
    if not restores(base):
        return base
    while low < high:
        middle = (low + high) // 2
        if restores(min(base, middle * step)):
            high = middle
        else:
            low = middle + 1
    return min(base, low * step)


def _bankruptcy_limit(market: Market, size: int, rest: int) -> int:
    """The limit price (subticks, on the tick) of a book order closing a position of `size`, from
    the exact bankruptcy price B = -rest / (size * q): a sale's B rounded up to the tick, a
    purchase's rounded down (0: no price is good enough)."""
    tick = market.subticks_per_tick
    e = market.quantum_conversion_exponent
    # B in subticks = -rest * 10**-e / size
    num = -rest * (pow10(-e) if e < 0 else 1)
    den = size * (pow10(e) if e > 0 else 1)
    if size > 0:  # a sale: the lowest acceptable price
        b = _ceil_div(num, den)
        return max(tick, _ceil_div(b, tick) * tick)
    b = num // den  # den < 0: a purchase, the highest acceptable price
    return max(0, (b // tick) * tick)


def _move_position_quote(view: StateView, owner: Address, market_id: int, delta: int) -> None:
    position = load_settled_position(view, owner, market_id)
    store_position(view, owner, market_id, position.with_fill(0, delta))


def _pay_from_position(view: StateView, owner: Address, market_id: int, to: Address, amount: int) -> None:
    if amount <= 0:
        return
    _move_position_quote(view, owner, market_id, -amount)
    account = load_account(view, to)
    store_account(view, to, account.with_balance(account.balance + amount))


Ranked = tuple[tuple[int, int, bytes], Health, int]
"""A deleveraging candidate: its ranking key (-profit, -leverage_ppm, address), its figures and its
size on the market"""


def _ranked(
    view: StateView, ctx: ExchangeContext, market: Market, price: int, long: bool, other: bytes
) -> Ranked | None:
    """`other` as a deleveraging candidate on `market` at `price` (module docstring), None unless it
    holds a long position there (`long`) or a short one (not `long`)."""
    market_id = market.market_id
    their = load_position(view, Address(other), market_id)
    if their.size == 0 or (their.size > 0) != long:
        return None
    h = account_health(view, ctx, other)
    their = settled(their, ctx.funding_index(view, market_id))  # its profit net of funding
    profit = position_value(market, their, price)
    notional = abs(value_floor(market, their.size, price))
    leverage = notional * PPM // h.value if h.value > 0 else MAX_PRICE
    return (-profit, -leverage, other), h, their.size


def _holders(
    view: StateView, ctx: ExchangeContext, market: Market, price: int, long: bool
) -> dict[bytes, Ranked]:
    """Every long (`long`) or short holder of `market` as a deleveraging candidate: one scan of its
    holder index."""
    prefix = schema.holder_prefix(market.market_id)
    found: dict[bytes, Ranked] = {}
    for key, _ in view.iterate(prefix):
        entry = _ranked(view, ctx, market, price, long, key[len(prefix) :])
        if entry is not None:
            found[entry[0][2]] = entry
    return found


_Side = tuple[Market, int, dict[bytes, Ranked], "SortedList[Ranked]"]
"""A cached side: the market, its price, the candidates by owner and in ranking order"""


class Counterparties:
    """The pass's deleveraging candidates by market and side: a side's holders are read and figured
    once, the first time the pass deleverages against it (`_holders`), and from then on only the
    owners whose account or positions the pass has written since are figured again (the pass
    view's `written` keys); prices and funding indexes do not change during the pass. So each
    deleveraging sees exactly what a fresh scan would, at the cost of what changed."""

    __slots__ = ("_ctx", "_seen", "_sides", "_view")

    def __init__(self, view: CountingView, ctx: ExchangeContext) -> None:
        self._view, self._ctx = view, ctx
        self._sides: dict[tuple[int, bool], _Side] = {}
        self._seen = 0

    def of(self, market: Market, price: int, long: bool) -> SortedList[Ranked]:
        """The long (`long`) or short holders of `market` as candidates at `price` (its oracle
        price, the same all pass), in ranking order."""
        self._catch_up()
        key = (market.market_id, long)
        cached = self._sides.get(key)
        if cached is None:
            holders = _holders(self._view, self._ctx, market, price, long)
            cached = self._sides[key] = (market, price, holders, SortedList(holders.values()))
        return cached[3]

    def _catch_up(self) -> None:
        written = self._view.written
        new, self._seen = written[self._seen :], len(written)
        if not self._sides or not new:
            return
        changed: dict[bytes, None] = {}
        for key in new:
            if key.startswith(schema.APP_ACCOUNT_PREFIX):
                changed[key[len(schema.APP_ACCOUNT_PREFIX) :]] = None
            elif key.startswith(schema.APP_POSITION_PREFIX):
                start = len(schema.APP_POSITION_PREFIX)
                changed[key[start : start + schema.OWNER_SIZE]] = None
        for (_, long), (market, price, holders, ranked) in self._sides.items():
            for owner in changed:
                entry = _ranked(self._view, self._ctx, market, price, long, owner)
                old = holders.pop(owner, None)
                if old is not None:
                    ranked.remove(old)
                if entry is not None:
                    holders[owner] = entry
                    ranked.add(entry)


class _Step:
    """One account's liquidation step (module docstring) in `view` under `ctx`."""

    def __init__(
        self,
        view: StateView,
        ctx: ExchangeContext,
        params: LiquidationParams,
        liquidator: Address | None,
        capped_deleveraging: bool,
        counterparties: Counterparties | None = None,
    ) -> None:
        """`counterparties`: the pass's cache of deleveraging candidates (None: read them afresh)."""
        self.view = view
        self.ctx = ctx
        self.params = params
        self.liquidator = liquidator
        self.capped_deleveraging = capped_deleveraging
        self.counterparties = counterparties
        self.events: list[Event] = []
        self.records: list[LiquidationRecord] = []

    def run(self, health: Health) -> None:
        view, ctx = self.view, self.ctx
        owner = health.owner
        for market, position, _ in health.held:
            if position.open_orders and ctx.books is not None and market.market_id in ctx.books:
                self.events.extend(cancel_owner_orders(view, ctx, market, owner, LIQUIDATION_REASON))
        order = sorted(
            (entry for entry in health.held if entry[1].size),
            key=lambda entry: (-abs(value_floor(entry[0], entry[1].size, entry[2])), entry[0].market_id),
        )
        _bump(ctx, "liquidations")
        for market, _, _ in order:
            health = account_health(view, ctx, owner)
            if not health.liquidatable:
                break
            if not ctx.is_stale(view, market.market_id):
                self._close(market, health)
                continue
            if health.value < 0:  # bankrupt: the backstop, the fund judging at the haircut price
                self._backstop(market, health, stale=True)

    def _close(self, market: Market, health: Health) -> None:
        view, ctx, params = self.view, self.ctx, self.params
        owner = health.owner
        address = Address(owner)
        entry = health.position(market.market_id)
        assert entry is not None
        _, position, price = entry
        size = position.size
        rest = health.value - value_floor(market, size, price)
        limit = _bankruptcy_limit(market, size, rest)
        liquidator = "" if self.liquidator is None else self.liquidator.raw.hex()
        self.events.append(
            make_event(
                "liquidation_started",
                ("account", owner.hex()),
                ("market", market.ticker),
                ("size", size),
                ("oracle_price", price),
                ("bankruptcy_price", _price_of(market, rest, size)),
                ("value", health.value),
                ("maintenance", health.maintenance),
                ("liquidator", liquidator),
            )
        )
        key = (owner, market.market_id)
        closed = ctx.liquidated.get(key, 0)
        whole = closed + abs(size)
        by_slice = slice_size(
            market, whole, params.max_position_fraction_ppm, params.min_liquidation_notional, price
        )
        by_slice = max(0, by_slice - closed)
        if health.in_portfolio(market):  # the restoring size assumes the linear rule: the slice
            wanted = min(abs(size), by_slice)
        else:
            wanted = min(abs(size), max(by_slice, _restoring_size(params, market, health, size, price)))
        filled = 0
        if wanted > 0 and limit > 0 and ctx.books is not None:
            side = 1 if size > 0 else 0
            filled, received, events = liquidation_match(view, ctx, market, owner, side, wanted, limit)
            self.events.extend(events)
            if filled:
                ctx.liquidated[key] = closed + filled
                notional = abs(received)
                after = account_health(view, ctx, owner)
                fee = min(-(-notional * params.fee_ppm // PPM), max(0, after.value))
                _pay_from_position(view, address, market.market_id, INSURANCE_FUND, fee)
                reward = 0
                if self.liquidator is not None:
                    reward = min(notional * params.liquidator_reward_ppm // PPM, max(0, after.value - fee))
                    _pay_from_position(view, address, market.market_id, self.liquidator, reward)
                _bump(ctx, "filled")
                self.records.append(
                    LiquidationRecord(
                        kind=LIQUIDATED,
                        account=owner,
                        counterparty=b"",
                        market_id=market.market_id,
                        size=-filled if size > 0 else filled,
                        price=_price_of(market, received, filled),
                        quote=received,
                        fee=fee,
                    )
                )
                self.events.append(
                    make_event(
                        "liquidation_filled",
                        ("account", owner.hex()),
                        ("market", market.ticker),
                        ("size", filled),
                        ("notional", notional),
                        ("fee", fee),
                        ("reward", reward),
                        ("liquidator", liquidator),
                    )
                )
        health = account_health(view, ctx, owner)
        if not health.liquidatable or (filled >= wanted and health.value >= 0):
            return
        self._backstop(market, health, stale=False)

    def _backstop(self, market: Market, health: Health, *, stale: bool) -> None:
        """The fund's takeover of the whole position at the bankruptcy price, else deleveraging.
        On a `stale` market the fund judges the position at its `_haircut_price`."""
        ctx = self.ctx
        owner = health.owner
        entry = health.position(market.market_id)
        assert entry is not None
        _, position, price = entry
        size = position.size
        quote = -(health.value - value_floor(market, size, price))  # X: the account ends at 0
        judged_price, judged_value = price, health.value
        if stale:
            judged_price = _haircut_price(price, size, self.params.stale_haircut_ppm)
            judged_value += value_floor(market, size, judged_price) - value_floor(market, size, price)
        if owner != INSURANCE_FUND.raw and self._fund_can_take(market, size, judged_price, judged_value):
            self._transfer(owner, INSURANCE_FUND.raw, market, size, quote)
            _bump(ctx, "takeovers")
            self._record(
                TAKEN_OVER, owner, INSURANCE_FUND.raw, market, -size, _price_of(market, quote, size), quote
            )
            self.events.append(
                make_event(
                    "liquidation_taken_over",
                    ("account", owner.hex()),
                    ("fund", INSURANCE_FUND.raw.hex()),
                    ("market", market.ticker),
                    ("size", size),
                    ("price", _price_of(market, quote, size)),
                    ("quote", quote),
                )
            )
            return
        bankrupt = health.value < 0
        capped = self.capped_deleveraging and not bankrupt
        if capped and ctx.risk_counts.get("deleveragings", 0) >= self.params.max_deleverages_per_block:
            return
        self._deleverage(market, health, size, price, quote)

    def _record(
        self, kind: str, owner: bytes, other: bytes, market: Market, size: int, price: int, quote: int
    ) -> None:
        self.records.append(
            LiquidationRecord(
                kind=kind,
                account=owner,
                counterparty=other,
                market_id=market.market_id,
                size=size,
                price=price,
                quote=quote,
            )
        )

    def _fund_can_take(self, market: Market, size: int, price: int, account_value: int) -> bool:
        fund = account_health(self.view, self.ctx, INSURANCE_FUND.raw)
        entry = fund.position(market.market_id)
        current = Position() if entry is None else entry[1]
        after = Position(size=current.size + size)
        if fund.portfolio or market.option is not None:
            view, ctx = self.view, self.ctx
            entries: list[Entry] = [e for e in fund.held if e[0].market_id != market.market_id]
            entries.append((market, after, price))
            maintenance = requirements(entries, view, lambda market_id: ctx.price(view, market_id))[1]
        else:
            maintenance = (
                fund.maintenance
                - maintenance_requirement(market, current, price)
                + maintenance_requirement(market, after, price)
            )
        # the fund pays X for a position worth floor(s*P*q): its value changes by the account's value
        return fund.value + account_value >= maintenance and fund.value + account_value >= 0

    def _transfer(self, source: bytes, target: bytes, market: Market, size: int, quote: int) -> None:
        """Move `size` of `source`'s position on `market` to `target`; `source` receives `quote`.
        Both positions are settled to the market's funding index first (`load_settled_position`),
        so the funding pool keeps exactly what the unsettled positions owe."""
        view, ctx = self.view, self.ctx
        market_id = market.market_id
        src, dst = Address(source), Address(target)
        moved = load_settled_position(view, src, market_id).with_fill(-size, quote)
        store_position(view, src, market_id, moved)
        taken = load_settled_position(view, dst, market_id).with_fill(size, -quote)
        store_position(view, dst, market_id, taken)
        ctx.touched_owners[source] = None
        ctx.touched_owners[target] = None

    def _deleverage(self, market: Market, health: Health, size: int, price: int, quote: int) -> None:
        view, ctx = self.view, self.ctx
        owner = health.owner
        opposite = size < 0  # the side that takes the position over
        ranked: Iterable[Ranked]
        if self.counterparties is None:
            ranked = sorted(_holders(view, ctx, market, price, opposite).values())
        else:
            ranked = self.counterparties.of(market, price, opposite)
        total = abs(size)
        sign = 1 if size > 0 else -1
        done = 0
        paid = 0
        step = market.step_base_quantums
        for (_, _, other), h, their_size in ranked:
            if done == total:
                break
            most = min(total - done, abs(their_size))

            def keeps_value(
                take: int, h: Health = h, their_size: int = their_size, done: int = done, paid: int = paid
            ) -> bool:
                # the counterparty gets sign*take of size and pays its share of X
                share = quote * (done + take) // total - paid
                delta = (
                    value_floor(market, their_size + sign * take, price)
                    - value_floor(market, their_size, price)
                    - share
                )
                return h.value + delta >= 0

            take = most
            if not keeps_value(most):
                # the largest multiple of the step that keeps its value >= 0 (the loss grows with it)
                low, high = 0, most // step
                while low < high:
                    mid = (low + high + 1) // 2
                    if keeps_value(mid * step):
                        low = mid
                    else:
                        high = mid - 1
                take = low * step
            if take <= 0:
                continue
            share = quote * (done + take) // total - paid
            self._transfer(owner, other, market, sign * take, share)
            done += take
            paid += share
            self._record(
                DELEVERAGED, owner, other, market, -sign * take, _price_of(market, quote, size), share
            )
            self.events.append(
                make_event(
                    "deleveraged",
                    ("account", owner.hex()),
                    ("counterparty", other.hex()),
                    ("market", market.ticker),
                    ("size", sign * take),
                    ("price", _price_of(market, quote, size)),
                    ("quote", share),
                )
            )
        if done:
            _bump(self.ctx, "deleveragings")


# -- the action and the pass -------------------------------------------------------------------------


def apply_liquidate(view: StateView, sender: Address, action: Liquidate, ctx: ExchangeContext) -> list[Event]:
    """The LIQUIDATE action: NOT_LIQUIDATABLE unless the account is liquidatable at the block's
    oracle prices; LIQUIDATION_HALTED if each of its open positions is on a stale market; else one
    liquidation step with the sender as liquidator (validation only when `ctx` is not live)."""
    owner = action.account.raw
    health = account_health(view, ctx, owner)
    if not health.liquidatable:
        raise ActionError(
            Code.NOT_LIQUIDATABLE,
            f"account {action.account} is not liquidatable: value {health.value} >= maintenance "
            f"requirement {health.maintenance} (or no open position)",
        )
    if all(ctx.is_stale(view, market.market_id) for market, p, _ in health.held if p.size):
        raise ActionError(
            Code.LIQUIDATION_HALTED,
            f"account {action.account}: every market of its positions has a stale oracle price",
        )
    if not ctx.live:
        return []
    step = _Step(view, ctx, load_params(view), sender, capped_deleveraging=True)
    step.run(health)
    record_block(view, ctx.height, step.records)
    return step.events


def _how_far_under(health: Health, carried: dict[bytes, None]) -> tuple[int, int, bytes]:
    """The processing order of the liquidatable accounts: those carried over from the last block
    first, then by value per maintenance requirement (ppm: the furthest under water, bankrupt
    accounts the first of all, first), then by address."""
    ratio = health.value * PPM // max(1, health.maintenance)
    return (0 if health.owner in carried else 1, ratio, health.owner)


def liquidation_pass(view: StateView, ctx: ExchangeContext, height: int) -> list[Event]:
    """The end-block pass (module docstring), after the oracle aggregation, the triggered orders
    and the funding phase; its events. `ctx` is the block's live exchange context (its cached
    prices are dropped: the oracle has just aggregated). The pass runs on a `CountingView` of
    `view` whose count is its work budget's measure."""
    ctx.prices.clear()
    ctx.stale.clear()
    ctx.bases.clear()
    counted = CountingView(view)
    params = load_params(counted)
    marks = Marks()
    carried = dict.fromkeys(load_queue(counted))
    found = candidates(counted, ctx, marks)
    ctx.touched_owners.clear()  # from here on: the owners the pass itself changes
    liquidatable: list[Health] = []
    for owner in found:
        health = account_health(counted, ctx, owner)
        _refresh_bands(counted, ctx, health, marks)
        if health.liquidatable:
            liquidatable.append(health)
    liquidatable.sort(key=lambda health: _how_far_under(health, carried))
    queue: dict[bytes, None] = {}
    events: list[Event] = []
    records: list[LiquidationRecord] = []
    counterparties = Counterparties(counted, ctx)
    stepped = False  # at least one account a block, whatever the budget: progress
    checked = counted.ops  # detection and checks: not on the budget
    for health in liquidatable:
        bankrupt = health.value < 0
        if not bankrupt and stepped and counted.ops - checked >= params.work_budget:
            queue[health.owner] = None
            continue
        stepped = stepped or not bankrupt
        events.extend(_run_step(counted, ctx, params, health, records, counterparties, capped=not bankrupt))
    for health in liquidatable:
        if health.owner not in queue and account_health(counted, ctx, health.owner).liquidatable:
            queue[health.owner] = None
    for owner in ctx.touched_owners:
        queue[owner] = None
    store_queue(counted, list(queue))
    record_block(counted, height, records)
    _bump(ctx, "work", counted.ops)
    counted.apply_to(view)
    return events


def _run_step(
    view: StateView,
    ctx: ExchangeContext,
    params: LiquidationParams,
    health: Health,
    records: list[LiquidationRecord],
    counterparties: Counterparties,
    *,
    capped: bool,
) -> list[Event]:
    """One step of the pass for an account still liquidatable; its events (its records are
    appended to `records`)."""
    current = account_health(view, ctx, health.owner)
    if not current.liquidatable:
        return []
    step = _Step(view, ctx, params, None, capped_deleveraging=capped, counterparties=counterparties)
    step.run(current)
    records.extend(step.records)
    return step.events


def carry_tx_state(tx_ctx: ExchangeContext, end_ctx: ExchangeContext) -> None:
    """Hand what the block's txs recorded (touched owners, sizes closed and counts of LIQUIDATE
    actions) from their exchange context to the end-block one."""
    for owner in tx_ctx.touched_owners:
        end_ctx.touched_owners[owner] = None
    for key, size in tx_ctx.liquidated.items():
        end_ctx.liquidated[key] = end_ctx.liquidated.get(key, 0) + size
    for name, count in tx_ctx.risk_counts.items():
        end_ctx.risk_counts[name] = end_ctx.risk_counts.get(name, 0) + count


@dataclass(slots=True)
class RiskStats:
    """Counters since the node started, for metrics (plain ints: `node.metrics` reads them):
    accounts liquidated (steps), book fills of liquidations, takeovers by the insurance fund,
    deleveraged accounts, and the fund's balance after the last finalized block."""

    liquidations: int = 0
    liquidation_fills: int = 0
    takeovers: int = 0
    deleveragings: int = 0
    insurance_fund_balance: int = 0

    def add(self, counts: dict[str, int]) -> None:
        self.liquidations += counts.get("liquidations", 0)
        self.liquidation_fills += counts.get("filled", 0)
        self.takeovers += counts.get("takeovers", 0)
        self.deleveragings += counts.get("deleveragings", 0)


def insurance_fund_balance(state: StateReader) -> int:
    """The fund's quote balance (its account; positions it took over are not counted)."""
    return load_account(state, INSURANCE_FUND).balance
