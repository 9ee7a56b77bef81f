"""Oracle parameters and prices, their storage and staleness.

State (keys in `storage.schema`):

- `ORACLE_PARAMS`: `[max_vote_age_blocks, stale_after_blocks, max_price_move_ppm]`;
- `oracle_price_key(market)`: `[price, updated_height]`, the chain's price in subticks and the
  height that last set it (genesis: `market.initial_price` at the genesis height
  `initial_height - 1`);
- `oracle_vote_key(market, validator)`: `[price, height]`, the validator's latest vote.

A price is stale at height H when H - updated_height > stale_after_blocks (`is_stale`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from execution.markets import MAX_INT
from execution.state import StateReader, StateView
from primitives import codec
from primitives.keys import Address
from storage import schema

DEFAULT_MAX_VOTE_AGE_BLOCKS = 3
DEFAULT_STALE_AFTER_BLOCKS = 10
DEFAULT_MAX_PRICE_MOVE_PPM = 500_000
PPM = 1_000_000


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
