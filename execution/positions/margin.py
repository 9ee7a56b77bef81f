"""Cross margin: account value, the initial and maintenance requirements, the placement check of
a new order, and the fee collector (the `Position` record: `execution.positions.position`).

A position whose first five fields are zero is deleted (whatever its `funding_index`). Collateral
is the account's balance (`execution.accounts`, always >= 0). Fees go to `FEE_COLLECTOR`, an
ordinary account.

With the oracle price P_m of each market (`prices(market_id)`, see `execution.oracle.prices.prices_at`)
and q = 10**quantum_conversion_exponent, each rounding in favour of the protocol:

    value       = collateral + sum_m (floor(size * P_m * q) + quote - pending funding)
    maintenance = sum_m ceil(|size| * P_m * q * mmf_ppm / 1e6)
    initial     = sum_m ceil(max(|size + open_buy|, |size - open_sell|) * P_m * q * imf_ppm / 1e6)
    free        = value - initial

`initial` is the requirement "with orders": the worst position the resting orders can lead to.
Every account figure is of the positions settled to the current funding index
(`execution.positions.funding_index.settled`: the pending funding counted as paid, rounded as
settlement rounds).

Placement check (`placement_error`): an order that can only reduce the position (flagged
reduce-only, or on the side opposite to the position with a size no larger than what the
position keeps after every resting order of that side fills) is exempt. Any other order is
accepted iff `value - worst_loss - worst_fee >= initial'`, where `initial'` is the initial
requirement with the order added to the open orders,
`worst_loss = ceil(max(0, (limit - P) * size * q))` for a buy (`P - limit` for a sell: the loss of
filling at the limit instead of the oracle price) and `worst_fee = ceil(size * limit * q *
taker_fee_ppm / 1e6)`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from execution.accounts import load_account
from execution.markets import Market, load_market, ppm_of_value_ceil, value_ceil, value_floor
from execution.positions.funding_index import load_funding_index, settled
from execution.positions.position import BUY, Position, load_position, positions
from execution.state import StateReader
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, Address

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
    initial = maintenance = 0
    for market_id in sorted(held):
        position = held[market_id]
        if position.is_empty:
            continue
        position = settled(position, load_funding_index(state, market_id))
        market = _market(state, market_id)
        price = prices(market_id)
        value += position_value(market, position, price)
        initial += initial_requirement(market, position, price)
        maintenance += maintenance_requirement(market, position, price)
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
