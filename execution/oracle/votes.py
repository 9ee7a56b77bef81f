"""Validators' price votes and their aggregation into the chain price at the end of each block.

Votes (`apply_oracle_vote`): the action's `prices` must have strictly increasing market ids, each a
known market (UNKNOWN_MARKET) that is not an option series (whose price is the chain's mark,
`execution.risk.option_series`), and prices > 0 (INVALID_ORACLE_VOTE); the signer must be in the
validator registry (`execution.validators`) with power > 0 (NOT_A_VALIDATOR). A vote overwrites the
validator's previous vote on each market it names.

Aggregation (`end_block(view, H)`), per market in id order: the counted votes are those with
height > H - max_vote_age_blocks from validators whose registry power is > 0, each weighted by
that power. If the counted power * 3 > the registry's total power * 2, the stake-weighted median
M of the counted votes (the lower weighted median: sort by (price, validator address), the first
price at which the cumulative power * 2 >= the counted power) is applied through the price-move
bound with `updated_height = H`, and an `oracle_price` event is emitted; otherwise the price is
unchanged.
Price-move bound (`bounded_price`): the chain's price follows the median in bounded steps. With
P the stored price and step = max(floor(P * max_price_move_ppm / 1e6), 1), the applied price is
M when |M - P| <= step, else P + step on a rise and P - step on a fall: never past M and, as votes
are > 0, never below 1 subtick. It is stored with `updated_height = H` either way (a market whose
votes keep asking for a larger move is followed, one step a block, and does not go stale); the
`oracle_price` event carries the applied price, and when it is not M an `oracle_price_clamped`
event (market, wanted M, applied, previous P, height) follows it and a warning is logged. A
market without a stored price takes M at once.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from consensus.app import Event, EventAttribute
from execution.codes import ActionError, Code
from execution.markets import load_market, load_markets
from execution.oracle.prices import (
    PPM,
    OraclePrice,
    StoredVote,
    load_params,
    load_price,
    market_votes,
    store_price,
)
from execution.state import StateReader, StateView
from execution.tx import OracleVote
from execution.validators import load_validator, registry
from primitives.keys import Address
from storage import schema

log = logging.getLogger("derivd.oracle")


# -- votes -------------------------------------------------------------------------------------------


def vote_error(state: StateReader, sender: Address, action: OracleVote) -> ActionError | None:
    """Why `sender` may not cast `action`, or None."""
    entry = load_validator(state, sender.raw)
    if entry is None or entry.power <= 0:
        return ActionError(Code.NOT_A_VALIDATOR, f"{sender} is not a validator with voting power")
    if not action.prices:
        return ActionError(Code.INVALID_ORACLE_VOTE, "an oracle vote needs at least one price")
    previous = 0
    for i, (market_id, price) in enumerate(action.prices):
        if market_id <= previous:
            return ActionError(
                Code.INVALID_ORACLE_VOTE,
                f"prices[{i}]: market ids must be strictly increasing, got {market_id}",
            )
        previous = market_id
        if price <= 0:
            return ActionError(Code.INVALID_ORACLE_VOTE, f"prices[{i}]: price must be positive, got {price}")
        market = load_market(state, market_id)
        if market is None:
            return ActionError(Code.UNKNOWN_MARKET, f"prices[{i}]: unknown market {market_id}")
        if market.option is not None:
            return ActionError(
                Code.INVALID_ORACLE_VOTE,
                f"prices[{i}]: {market.ticker} is an option series: its price is the chain's mark "
                "(vote its underlying's price and implied volatility)",
            )
    return None


def apply_oracle_vote(view: StateView, sender: Address, action: OracleVote, height: int) -> list[Event]:
    """Record `sender`'s vote at `height`; ActionError if it breaks a rule (nothing written)."""
    problem = vote_error(view, sender, action)
    if problem is not None:
        raise problem
    for market_id, price in action.prices:
        view.put(schema.oracle_vote_key(market_id, sender.raw), StoredVote(price, height).encode())
    return []


# -- aggregation -------------------------------------------------------------------------------------


def weighted_median(votes: Sequence[tuple[int, bytes, int]]) -> int:
    """The lower stake-weighted median of (price, validator address, power) votes (power > 0):
    sorted by (price, address), the first price at which cumulative power * 2 >= total power.
    ValueError for no votes."""
    if not votes:
        raise ValueError("no votes")
    total = sum(power for _, _, power in votes)
    cumulative = 0
    for price, _, power in sorted(votes):
        cumulative += power
        if cumulative * 2 >= total:
            return price
    raise AssertionError("unreachable: the cumulative power reaches the total")


def oracle_price_event(market_id: int, price: int, height: int) -> Event:
    return Event(
        "oracle_price",
        (
            EventAttribute("market", str(market_id)),
            EventAttribute("price", str(price)),
            EventAttribute("height", str(height)),
        ),
    )


def oracle_price_clamped_event(
    market_id: int, wanted: int, applied: int, previous: int, height: int
) -> Event:
    return Event(
        "oracle_price_clamped",
        (
            EventAttribute("market", str(market_id)),
            EventAttribute("wanted", str(wanted)),
            EventAttribute("applied", str(applied)),
            EventAttribute("previous", str(previous)),
            EventAttribute("height", str(height)),
        ),
    )


def bounded_price(previous: int, wanted: int, max_move_ppm: int) -> int:
    """The price applied when the median `wanted` meets the stored `previous` (both > 0): `wanted`
    if within one step of `previous`, else `previous` moved one step toward it, the step being
    max(floor(previous * max_move_ppm / 1e6), 1) (module docstring)."""
    step = max(previous * max_move_ppm // PPM, 1)
    return min(max(wanted, previous - step), previous + step)


def end_block(view: StateView, height: int) -> list[Event]:
    """Aggregate the votes of every market at the end of the block at `height` (module docstring)."""
    params = load_params(view)
    powers = {v.address.raw: v.power for v in registry(view) if v.power > 0}
    total = sum(powers.values())
    oldest = height - params.max_vote_age_blocks  # votes must be strictly newer
    max_move = params.max_price_move_ppm
    events: list[Event] = []
    for market in load_markets(view):
        counted = [
            (vote.price, address, powers[address])
            for address, vote in market_votes(view, market.market_id)
            if oldest < vote.height <= height and address in powers
        ]
        voting_power = sum(power for _, _, power in counted)
        if total == 0 or voting_power * 3 <= total * 2:
            continue
        wanted = weighted_median(counted)
        previous = load_price(view, market.market_id)
        price = wanted if previous is None else bounded_price(previous.price, wanted, max_move)
        store_price(view, market.market_id, OraclePrice(price, height))
        events.append(oracle_price_event(market.market_id, price, height))
        if previous is not None and price != wanted:
            log.warning(
                "oracle price of market %d clamped at height %d: the median %d moves more than %d ppm "
                "from %d, %d applied",
                market.market_id, height, wanted, max_move, previous.price, price,
            )  # fmt: skip
            events.append(oracle_price_clamped_event(market.market_id, wanted, price, previous.price, height))
    return events
