"""Cross margin: account value, the initial and maintenance requirements (the linear per-market rule
and, for positions grouped with options, the portfolio rule), the placement check of a new order,
and the fee collector (the `Position` record: `execution.positions.position`).

A position whose first five fields are zero is deleted (whatever its `funding_index`). Collateral
is the account's balance (`execution.accounts`, always >= 0). Fees go to `FEE_COLLECTOR`, an
ordinary account.

With the oracle price P_m of each market (`prices(market_id)`, see `execution.oracle.prices.prices_at`;
an option series' is its mark) and q = 10**quantum_conversion_exponent, each rounding in favour of
the protocol:

    value       = collateral + sum_m (floor(size * P_m * q) + quote - pending funding)
    maintenance = sum_m ceil(|size| * P_m * q * mmf_ppm / 1e6)                     (linear rule)
    initial     = sum_m ceil(max(|size + open_buy|, |size - open_sell|) * P_m * q * imf_ppm / 1e6)
    free        = value - initial

`initial` is the requirement "with orders": the worst position the resting orders can lead to.
Every account figure is of the positions settled to the current funding index
(`execution.positions.funding_index.settled`: the pending funding counted as paid, rounded as
settlement rounds).

Portfolio margin (issue 17). An account's positions split into groups by underlying: the group of
perpetual U holds the position on U and every position on an option series whose underlying is U.
A group with an **option position** (a series position with a non-zero size or resting orders:
`open_buy` or `open_sell`) is portfolio margined; every other position keeps the linear rule
(an account without option positions computes exactly the linear figures). For such a group, with
S = U's oracle price and p = the chain's `PortfolioParams` (`schema.OPTION_PARAMS`, the defaults
when absent), the legs are the perpetual position (`PerpLeg`) and each option position with a mark
(`OptionLeg`: the series' strike and call, vol = mark.vol_ppm * 1e12, t = mark.t, from its
`execution.options.marks.OptionMark`); a series without a mark (or with vol_ppm 0: settled) is
margined by the linear rule at its oracle price, outside the legs, and a group none of whose option
positions has a mark is linear altogether. Then (`execution.options.portfolio`):

    maintenance(group) = portfolio_margin(legs, {U: S}, p).maintenance
    initial(group)     = max over three leg sets of portfolio_margin(set, {U: S}, p).initial:
                         the legs as held, every resting buy filled (size + open_buy on each
                         market), every resting sell filled (size - open_sell)

(the max over the two one-sided sets stands in for the worst mix of fills; a documented
approximation). The value formula is unchanged. The scenario tables are cached per
`PortfolioParams` (`_grid`: a pure cache keyed by every input, bounded, never changing a result).

Placement check (`placement_error`): an order that can only reduce the position (flagged
reduce-only, or on the side opposite to the position with a size no larger than what the
position keeps after every resting order of that side fills) is exempt. Any other order is
accepted iff `value - worst_loss - worst_fee >= initial'`, where `initial'` is the initial
requirement (by the rules above) with the order added to the open orders,
`worst_loss = ceil(max(0, (limit - P) * size * q))` for a buy (`P - limit` for a sell: the loss of
filling at the limit instead of the oracle price) and `worst_fee = ceil(size * limit * q *
taker_fee_ppm / 1e6)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from execution.accounts import load_account
from execution.markets import Market, load_market, ppm_of_value_ceil, value_ceil, value_floor
from execution.options.fixedpoint import SCALE
from execution.options.marks import OptionMark
from execution.options.portfolio import OptionLeg, PerpLeg, PortfolioParams, SeriesGrid, portfolio_margin
from execution.positions.funding_index import load_funding_index, settled
from execution.positions.position import BUY, Position, load_position, positions
from execution.state import StateReader, read_record
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, Address
from storage import schema

FEE_COLLECTOR = Address(sha256(b"derivd/module/fees")[:ADDRESS_SIZE])
"""The account that collects maker and taker fees."""

PriceFn = Callable[[int], int]
"""market id -> oracle price in subticks (`execution.oracle.prices.prices_at`)."""


# -- per-position figures --------------------------------------------------------------------------


def position_value(m: Market, p: Position, price: int) -> int:
    """floor(size * price * q) + quote."""
    return value_floor(m, p.size, price) + p.quote


def maintenance_requirement(m: Market, p: Position, price: int) -> int:
    """ceil(|size| * price * q * mmf_ppm / 1e6)."""
    return ppm_of_value_ceil(m, abs(p.size), price, m.maintenance_margin_ppm)


def initial_requirement(m: Market, p: Position, price: int) -> int:
    """ceil(worst_size * price * q * imf_ppm / 1e6): the initial requirement with orders."""
    return ppm_of_value_ceil(m, p.worst_size, price, m.initial_margin_ppm)


def trade_fee(m: Market, size: int, price: int, fee_ppm: int) -> int:
    """ceil(|size| * price * q * fee_ppm / 1e6): the fee of a fill (rounded up)."""
    return ppm_of_value_ceil(m, abs(size), price, fee_ppm)


def worst_loss(m: Market, side: int, size: int, limit: int, oracle: int) -> int:
    """ceil(max(0, (limit - oracle) * size * q)) for a buy, (oracle - limit) for a sell: what
    filling `size` at `limit` instead of at the oracle price can lose at most."""
    gap = limit - oracle if side == BUY else oracle - limit
    return max(0, value_ceil(m, size, gap))


# -- portfolio groups ------------------------------------------------------------------------------

Entry = tuple[Market, Position, int]
"""A held position: (its market, the position settled to the market's funding index, the price it
is judged at: the oracle price)."""

VOL_PPM_TO_SCALE = SCALE // 1_000_000
"""An `OptionMark.vol_ppm` times this is the SCALE fixed-point vol of an `OptionLeg`."""
GRID_LIMIT = 4096
"""The scenario tables a `_grid` keeps before it starts afresh (a bound on memory, not on results)."""
_grids: dict[PortfolioParams, SeriesGrid] = {}
_last_grid: list[tuple[PortfolioParams, SeriesGrid]] = []
"""The params `_grid` was last asked for and its answer: found by the params' identity (a block's
reads of the params return one object) before they are hashed."""


def _grid(params: PortfolioParams) -> SeriesGrid:
    """The shared `SeriesGrid` of `params`: a pure cache (its keys hold every input of a table), so
    when and how often it is replaced changes no figure."""
    if _last_grid and _last_grid[0][0] is params and len(_last_grid[0][1]) <= GRID_LIMIT:
        return _last_grid[0][1]
    grid = _grids.get(params)
    if grid is None or len(grid) > GRID_LIMIT:
        _grids.clear()
        grid = _grids[params] = SeriesGrid(params)
    _last_grid[:] = [(params, grid)]
    return grid


def underlying_of(market: Market) -> int:
    """The group of `market`: its own id for a perpetual, its underlying's for an option series."""
    option = market.option
    return market.market_id if option is None else option.underlying_id


def is_option_position(market: Market, position: Position) -> bool:
    """A position on an option series with a size or resting orders: its group is portfolio margined."""
    return market.option is not None and bool(position.size or position.open_buy or position.open_sell)


def portfolio_groups(entries: Sequence[Entry]) -> list[int]:
    """The underlyings of the portfolio-margined groups of `entries`, ascending."""
    groups = {underlying_of(m) for m, p, _ in entries if is_option_position(m, p)}
    return sorted(groups)


def load_option_params(state: StateReader) -> PortfolioParams:
    """The chain's `PortfolioParams` (`schema.OPTION_PARAMS`; the defaults when absent)."""
    params = read_record(state, schema.OPTION_PARAMS, PortfolioParams.decode)
    return PortfolioParams() if params is None else params


class Portfolio:
    """What the portfolio rule reads besides the positions, each at most once per object: the
    parameters, the series' marks (through `state`, so every read is recorded) and the underlyings'
    oracle prices (`prices`)."""

    __slots__ = ("_marks", "_params", "_prices", "_state")

    def __init__(self, state: StateReader, prices: PriceFn) -> None:
        self._state = state
        self._prices = prices
        self._params: PortfolioParams | None = None
        self._marks: dict[int, OptionMark | None] = {}

    @property
    def params(self) -> PortfolioParams:
        params = self._params
        if params is None:
            params = self._params = load_option_params(self._state)
        return params

    def mark(self, market_id: int) -> OptionMark | None:
        """The series' mark, None without one (or with no vol: a settled series)."""
        if market_id in self._marks:
            return self._marks[market_id]
        mark = read_record(self._state, schema.option_mark_key(market_id), OptionMark.decode)
        if mark is not None and mark.vol_ppm <= 0:
            mark = None
        self._marks[market_id] = mark
        return mark

    def spot(self, underlying: int) -> int:
        return self._prices(underlying)


def linear_requirements(entries: Sequence[Entry]) -> tuple[int, int]:
    """(initial with orders, maintenance) of `entries` by the linear rule."""
    initial = maintenance = 0
    for market, position, price in entries:
        initial += initial_requirement(market, position, price)
        maintenance += maintenance_requirement(market, position, price)
    return initial, maintenance


def _legs(
    underlying: int,
    perps: Sequence[Entry],
    options: Sequence[tuple[Market, Position, OptionMark]],
    side: int,
) -> list[PerpLeg | OptionLeg]:
    """The group's legs with every position as held (`side` 0), with its resting buys filled (1) or
    its resting sells filled (2)."""

    def size(p: Position) -> int:
        return p.size if side == 0 else p.size + p.open_buy if side == 1 else p.size - p.open_sell

    legs: list[PerpLeg | OptionLeg] = [
        PerpLeg(underlying=underlying, size=size(p), qce=m.quantum_conversion_exponent) for m, p, _ in perps
    ]
    for market, position, mark in options:
        terms = market.option
        assert terms is not None
        legs.append(
            OptionLeg(
                underlying=underlying,
                size=size(position),
                qce=market.quantum_conversion_exponent,
                strike=terms.strike,
                t=mark.t,
                call=terms.call,
                vol=mark.vol_ppm * VOL_PPM_TO_SCALE,
            )
        )
    return legs


def group_requirements(
    underlying: int, entries: Sequence[Entry], spot: int, portfolio: Portfolio
) -> tuple[int, int]:
    """(initial with orders, maintenance) of the positions of one group (all of `entries` are on
    `underlying` or its series) at the underlying's price `spot`: the portfolio rule of the module
    docstring when the group holds an option position, the linear rule otherwise. A series without
    a mark is margined by the linear rule; a group none of whose option positions has a mark is
    linear altogether."""
    if not any(is_option_position(m, p) for m, p, _ in entries):
        return linear_requirements(entries)
    initial = maintenance = 0
    perps: list[Entry] = []
    options: list[tuple[Market, Position, OptionMark]] = []
    for entry in entries:
        market, position, price = entry
        if market.option is None:
            perps.append(entry)
            continue
        mark = portfolio.mark(market.market_id)
        if mark is None:
            initial += initial_requirement(market, position, price)
            maintenance += maintenance_requirement(market, position, price)
        else:
            options.append((market, position, mark))
    if not options:
        linear_initial, linear_maintenance = linear_requirements(perps)
        return initial + linear_initial, maintenance + linear_maintenance
    params = portfolio.params
    grid = _grid(params)
    spots = {underlying: spot}
    held = portfolio_margin(_legs(underlying, perps, options, 0), spots, params, grid)
    worst = held.initial
    if any(p.open_buy or p.open_sell for _, p, _ in perps) or any(
        p.open_buy or p.open_sell for _, p, _ in options
    ):
        for side in (1, 2):
            worst = max(
                worst, portfolio_margin(_legs(underlying, perps, options, side), spots, params, grid).initial
            )
    return initial + worst, maintenance + held.maintenance


def requirements(entries: Sequence[Entry], state: StateReader, prices: PriceFn) -> tuple[int, int]:
    """(initial with orders, maintenance) of an account's `entries` (module docstring): the linear
    rule, but for the portfolio-margined groups. The spot of a group is the price of its perpetual's
    entry when held (the caller's price), else `prices(underlying)`."""
    return grouped_requirements(entries, portfolio_groups(entries), state, prices)


def grouped_requirements(
    entries: Sequence[Entry], groups: Sequence[int], state: StateReader, prices: PriceFn
) -> tuple[int, int]:
    """`requirements` of `entries` whose `portfolio_groups` are `groups` (a caller that needs them
    too computes them once)."""
    if not groups:
        return linear_requirements(entries)
    grouped: dict[int, list[Entry]] = {underlying: [] for underlying in groups}
    rest: list[Entry] = []
    for entry in entries:
        bucket = grouped.get(underlying_of(entry[0]))
        (rest if bucket is None else bucket).append(entry)
    initial, maintenance = linear_requirements(rest)
    portfolio = Portfolio(state, prices)
    for underlying in groups:
        group = grouped[underlying]
        spot = next((price for m, _, price in group if m.market_id == underlying), None)
        if spot is None:
            spot = portfolio.spot(underlying)
        group_initial, group_maintenance = group_requirements(underlying, group, spot, portfolio)
        initial += group_initial
        maintenance += group_maintenance
    return initial, maintenance


@dataclass(frozen=True, slots=True, kw_only=True)
class PortfolioGroup:
    """The group of a placement's market when it is or may become portfolio margined: its
    `underlying`, the underlying's oracle price `spot`, the owner's other positions in the group
    `entries`, the initial requirement of its positions outside the group `outside`, and the
    `portfolio` inputs (marks, parameters) read through the view."""

    underlying: int
    spot: int
    entries: tuple[Entry, ...]
    outside: int
    portfolio: Portfolio


class MarginBase(NamedTuple):
    """An account's figures without its position on one market (`execution.exchange.fills.base_of`):
    collateral + the value of its other positions, their initial requirement with orders, and the
    market's `PortfolioGroup` when that market's group is or may become portfolio margined (None:
    the linear rule, the hot path)."""

    value: int
    initial: int
    group: PortfolioGroup | None = None


# -- account figures ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MarginSummary:
    """An account's value, its initial requirement with orders, maintenance requirement and free
    collateral (value - initial), all in quote quantums."""

    value: int
    initial: int
    maintenance: int
    free: int

    @property
    def meets_initial(self) -> bool:
        return self.value >= self.initial

    @property
    def meets_maintenance(self) -> bool:
        return self.value >= self.maintenance


def _market(state: StateReader, market_id: int) -> Market:
    market = load_market(state, market_id)
    if market is None:
        raise LookupError(f"a position on market {market_id}, which does not exist")
    return market


def margin_summary(
    state: StateReader,
    owner: Address,
    prices: PriceFn,
    overrides: dict[int, Position] | None = None,
) -> MarginSummary:
    """The account figures of `owner` at the oracle `prices`, each position settled to its
    market's funding index. `overrides` replaces the stored position of the given markets (a
    hypothetical position: the placement check; derive it from the stored one, so that it keeps
    its `funding_index`)."""
    held = dict(positions(state, owner))
    if overrides:
        held.update(overrides)
    value = load_account(state, owner).balance
    entries: list[Entry] = []
    for market_id in sorted(held):
        position = held[market_id]
        if position.is_empty:
            continue
        position = settled(position, load_funding_index(state, market_id))
        market = _market(state, market_id)
        price = prices(market_id)
        value += position_value(market, position, price)
        entries.append((market, position, price))
    initial, maintenance = requirements(entries, state, prices)
    return MarginSummary(value, initial, maintenance, value - initial)


def meets_initial_margin(state: StateReader, owner: Address, prices: PriceFn) -> bool:
    """value >= initial requirement with orders (the maker re-check after a fill, transfers)."""
    return margin_summary(state, owner, prices).meets_initial


def order_only_reduces(position: Position, side: int, size: int) -> bool:
    """Whether an order of `size` on `side` can only reduce the position: it is on the opposite
    side and no larger than what remains of the position after every resting order of that side
    has filled."""
    if side == BUY:
        return position.size < 0 and size <= -position.size - position.open_buy
    return position.size > 0 and size <= position.size - position.open_sell


def placement_error(
    state: StateReader,
    owner: Address,
    market: Market,
    side: int,
    size: int,
    limit: int,
    reduce_only: bool,
    prices: PriceFn,
) -> str | None:
    """Why `owner` may not place a resting-or-taking order (`side` 0 buy / 1 sell, `size` base
    quantums > 0, `limit` price in subticks) on `market`, or None if margin allows it (the rule is
    in the module docstring). The caller answers INSUFFICIENT_MARGIN with the returned log."""
    position = load_position(state, owner, market.market_id)
    if reduce_only or order_only_reduces(position, side, size):
        return None
    oracle = prices(market.market_id)
    loss = worst_loss(market, side, size, limit, oracle)
    fee = trade_fee(market, size, limit, market.taker_fee_ppm)
    with_order = position.with_orders(side, size)
    summary = margin_summary(state, owner, prices, {market.market_id: with_order})
    if summary.value - loss - fee >= summary.initial:
        return None
    return (
        f"insufficient margin: account value {summary.value} - worst loss {loss} - worst fee {fee} "
        f"< initial requirement {summary.initial} with the order"
    )


def transfer_margin_error(state: StateReader, owner: Address, prices: PriceFn) -> str | None:
    """Why the state after a transfer out of `owner` breaks initial margin, or None. An account
    without positions or orders always passes (its value is its balance, >= 0)."""
    if not positions(state, owner):
        return None
    summary = margin_summary(state, owner, prices)
    if summary.meets_initial:
        return None
    return (
        f"insufficient margin: account value {summary.value} < initial requirement {summary.initial} "
        "after the transfer"
    )
