"""The validator oracle: validators' price votes, the per-market chain price (a stake-weighted
median) aggregated at the end of each block, staleness, the oracle parameters, and the genesis
writes of the exchange (`init_exchange_state`: markets, oracle parameters and initial prices).

State (keys in `storage.schema`):

- `ORACLE_PARAMS`: `[max_vote_age_blocks, stale_after_blocks, max_price_move_ppm]`;
- `oracle_price_key(market)`: `[price, updated_height]`, the chain's price in subticks and the
  height that last set it (genesis: `market.initial_price` at the genesis height
  `initial_height - 1`);
- `oracle_vote_key(market, validator)`: `[price, height]`, the validator's latest vote.

Votes (`apply_oracle_vote`): the action's `prices` must have strictly increasing market ids, each a
known market (UNKNOWN_MARKET), and prices > 0 (INVALID_ORACLE_VOTE); the signer must be in the
validator registry (`execution.validators`) with power > 0 (NOT_A_VALIDATOR). A vote overwrites the
validator's previous vote on each market it names.

Aggregation (`end_block(view, H)`), per market in id order: the counted votes are those with
height > H - max_vote_age_blocks from validators whose registry power is > 0, each weighted by
that power. If the counted power * 3 > the registry's total power * 2, the price becomes the
stake-weighted median of the counted votes (the lower weighted median: sort by (price, validator
address), the first price at which the cumulative power * 2 >= the counted power) with
`updated_height = H`, and an `oracle_price` event is emitted; otherwise the price is unchanged.
Price-move bound: a median M that moves more than `max_price_move_ppm` from the stored price P
(|M - P| * 1e6 > max_price_move_ppm * P, exact) is not applied: the stored price and its
`updated_height` stay (a market whose votes keep moving too far goes stale), an
`oracle_price_rejected` event (market, price, previous, height) is emitted and a warning logged.
A price is stale at height H when H - updated_height > stale_after_blocks (`is_stale`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from consensus.app import Event, EventAttribute
from execution.codes import Code
from execution.markets import MAX_INT, Market, load_market, load_markets, store_market
from execution.state import StateReader, StateView
from execution.tx import OracleVote
from execution.validators import load_validator, registry
from primitives import codec
from primitives.keys import Address
from storage import schema

if TYPE_CHECKING:
    from execution.genesis_state import AppState

DEFAULT_MAX_VOTE_AGE_BLOCKS = 3
DEFAULT_STALE_AFTER_BLOCKS = 10
DEFAULT_MAX_PRICE_MOVE_PPM = 500_000
PPM = 1_000_000

log = logging.getLogger("derivd.oracle")


class OracleError(Exception):
    """A vote that cannot be applied: its result code and a log (the caller raises ActionError)."""

    def __init__(self, code: Code, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log


@dataclass(frozen=True, slots=True)
class OracleParams:
    """How old a vote may be to count, after how many blocks without an update a price is stale,
    and how far (ppm of the previous price) one block may move a price."""

    max_vote_age_blocks: int = DEFAULT_MAX_VOTE_AGE_BLOCKS
    stale_after_blocks: int = DEFAULT_STALE_AFTER_BLOCKS
    max_price_move_ppm: int = DEFAULT_MAX_PRICE_MOVE_PPM

    def __post_init__(self) -> None:
        for name in ("max_vote_age_blocks", "stale_after_blocks", "max_price_move_ppm"):
            value = getattr(self, name)
            if not 1 <= value <= MAX_INT:
                raise ValueError(f"{name} must be a positive integer, got {value}")

    def encode(self) -> bytes:
        return codec.encode([self.max_vote_age_blocks, self.stale_after_blocks, self.max_price_move_ppm])

    @classmethod
    def decode(cls, raw: bytes) -> OracleParams:
        f = codec.field_list(codec.decode(raw), "oracle params", 3)
        return cls(
            codec.field_int(f[0], "oracle params.max_vote_age_blocks", 1),
            codec.field_int(f[1], "oracle params.stale_after_blocks", 1),
            codec.field_int(f[2], "oracle params.max_price_move_ppm", 1),
        )

    def to_json(self) -> dict[str, int]:
        return {
            "max_vote_age_blocks": self.max_vote_age_blocks,
            "stale_after_blocks": self.stale_after_blocks,
            "max_price_move_ppm": self.max_price_move_ppm,
        }


@dataclass(frozen=True, slots=True)
class OraclePrice:
    """A market's chain price (subticks) and the height that set it."""

    price: int
    updated_height: int

    def encode(self) -> bytes:
        return codec.encode([self.price, self.updated_height])

    @classmethod
    def decode(cls, raw: bytes) -> OraclePrice:
        f = codec.field_list(codec.decode(raw), "oracle price", 2)
        return cls(
            codec.field_int(f[0], "oracle price.price", 1),
            codec.field_int(f[1], "oracle price.updated_height"),
        )


@dataclass(frozen=True, slots=True)
class StoredVote:
    """A validator's latest vote on one market: price (subticks) and the height it was cast at."""

    price: int
    height: int

    def encode(self) -> bytes:
        return codec.encode([self.price, self.height])

    @classmethod
    def decode(cls, raw: bytes) -> StoredVote:
        f = codec.field_list(codec.decode(raw), "oracle vote", 2)
        return cls(codec.field_int(f[0], "oracle vote.price", 1), codec.field_int(f[1], "oracle vote.height"))


# -- storage -----------------------------------------------------------------------------------------


def load_params(state: StateReader) -> OracleParams:
    """The oracle parameters (the defaults if genesis wrote none)."""
    raw = state.get(schema.ORACLE_PARAMS)
    return OracleParams() if raw is None else OracleParams.decode(raw)


def store_params(view: StateView, params: OracleParams) -> None:
    view.put(schema.ORACLE_PARAMS, params.encode())


def load_price(state: StateReader, market_id: int) -> OraclePrice | None:
    raw = state.get(schema.oracle_price_key(market_id))
    return None if raw is None else OraclePrice.decode(raw)


def store_price(view: StateView, market_id: int, price: OraclePrice) -> None:
    view.put(schema.oracle_price_key(market_id), price.encode())


def load_vote(state: StateReader, market_id: int, validator: Address) -> StoredVote | None:
    raw = state.get(schema.oracle_vote_key(market_id, validator.raw))
    return None if raw is None else StoredVote.decode(raw)


def market_votes(state: StateReader, market_id: int) -> list[tuple[bytes, StoredVote]]:
    """Every stored vote on `market_id` as (validator address, vote), by address."""
    return [
        (schema.validator_from_oracle_vote_key(key), StoredVote.decode(raw))
        for key, raw in state.iterate(schema.oracle_vote_prefix(market_id))
    ]


def is_stale(price: OraclePrice, height: int, params: OracleParams) -> bool:
    """Whether `price` is stale at `height`: more than `stale_after_blocks` since its update."""
    return height - price.updated_height > params.stale_after_blocks


def market_is_stale(state: StateReader, market_id: int, height: int) -> bool:
    """Whether the market's price is stale at `height` (a market without a price is stale)."""
    price = load_price(state, market_id)
    return price is None or is_stale(price, height, load_params(state))


def prices_at(state: StateReader) -> Callable[[int], int]:
    """market id -> the chain's oracle price (subticks, stale or not), read through `state` on
    first use and then remembered; LookupError for a market without a price."""
    seen: dict[int, int] = {}

    def price(market_id: int) -> int:
        if market_id not in seen:
            stored = load_price(state, market_id)
            if stored is None:
                raise LookupError(f"market {market_id} has no oracle price")
            seen[market_id] = stored.price
        return seen[market_id]

    return price


# -- votes -------------------------------------------------------------------------------------------


def vote_error(state: StateReader, sender: Address, action: OracleVote) -> OracleError | None:
    """Why `sender` may not cast `action`, or None."""
    entry = load_validator(state, sender.raw)
    if entry is None or entry.power <= 0:
        return OracleError(Code.NOT_A_VALIDATOR, f"{sender} is not a validator with voting power")
    if not action.prices:
        return OracleError(Code.INVALID_ORACLE_VOTE, "an oracle vote needs at least one price")
    previous = 0
    for i, (market_id, price) in enumerate(action.prices):
        if market_id <= previous:
            return OracleError(
                Code.INVALID_ORACLE_VOTE,
                f"prices[{i}]: market ids must be strictly increasing, got {market_id}",
            )
        previous = market_id
        if price <= 0:
            return OracleError(Code.INVALID_ORACLE_VOTE, f"prices[{i}]: price must be positive, got {price}")
        if load_market(state, market_id) is None:
            return OracleError(Code.UNKNOWN_MARKET, f"prices[{i}]: unknown market {market_id}")
    return None


def apply_oracle_vote(view: StateView, sender: Address, action: OracleVote, height: int) -> list[Event]:
    """Record `sender`'s vote at `height`; OracleError if it breaks a rule (nothing written)."""
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


def oracle_price_rejected_event(market_id: int, price: int, previous: int, height: int) -> Event:
    return Event(
        "oracle_price_rejected",
        (
            EventAttribute("market", str(market_id)),
            EventAttribute("price", str(price)),
            EventAttribute("previous", str(previous)),
            EventAttribute("height", str(height)),
        ),
    )


def moves_too_far(previous: int, price: int, max_move_ppm: int) -> bool:
    """|price - previous| * 1e6 > max_move_ppm * previous (the price-move bound, exact)."""
    return abs(price - previous) * PPM > max_move_ppm * previous


def end_block(view: StateView, height: int) -> list[Event]:
    """Aggregate the votes of every market at the end of the block at `height` (module docstring)."""
    params = load_params(view)
    powers = {v.address.raw: v.power for v in registry(view) if v.power > 0}
    total = sum(powers.values())
    oldest = height - params.max_vote_age_blocks  # votes must be strictly newer
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
        price = weighted_median(counted)
        previous = load_price(view, market.market_id)
        if previous is not None and moves_too_far(previous.price, price, params.max_price_move_ppm):
            log.warning(
                "oracle price of market %d rejected at height %d: %d moves more than %d ppm from %d",
                market.market_id, height, price, params.max_price_move_ppm, previous.price,
            )  # fmt: skip
            events.append(oracle_price_rejected_event(market.market_id, price, previous.price, height))
            continue
        store_price(view, market.market_id, OraclePrice(price, height))
        events.append(oracle_price_event(market.market_id, price, height))
    return events


# -- genesis -----------------------------------------------------------------------------------------


def init_exchange_state(view: StateView, app_state: AppState, initial_height: int) -> None:
    """Write the genesis markets, the oracle parameters and each market's initial price (updated at
    the genesis height, `initial_height - 1`)."""
    store_params(view, app_state.oracle)
    for market in app_state.markets:
        store_market(view, market)
        store_price(view, market.market_id, OraclePrice(market.initial_price, initial_height - 1))


def genesis_markets_json(markets: Sequence[Market]) -> list[dict[str, object]]:
    """The genesis `markets` section of `markets`."""
    return [market.to_json() for market in markets]
