"""The implied-volatility oracle: validators' vol votes per listed (underlying, expiry) pair, their
aggregation into the chain's vol at the end of each block, its storage and staleness.

A pair (underlying market id, expiry ns) is listed while a market with option terms on it exists
(`listed_expiries`; settled series stay listed). Vols are ppm of 1 (annualised; 550_000 is 55%).

State (keys in `storage.schema`):

- `VOL_PARAMS`: `VolParams` (`VOL_FIELDS`, the genesis `volatility` section);
- `vol_key(underlying, expiry)`: `[vol_ppm, updated_height]` (`StoredVol`; genesis: `init_vol`);
- `vol_vote_key(underlying, expiry, validator)`: `[vol_ppm, height]`, the validator's latest vote.

Votes (`apply_vol_vote`): the action's `vols` must be non-empty with (underlying, expiry) strictly
increasing (INVALID_VOL_VOTE), each vol_ppm within [min_vol_ppm, max_vol_ppm] (INVALID_VOL_VOTE),
each pair listed (UNKNOWN_MARKET); the signer must be in the validator registry with power > 0
(NOT_A_VALIDATOR). A vote overwrites the validator's previous vote on each pair it names.

Aggregation (`vol_end_block(view, H)`), per listed pair in order: the counted votes are those with
height > H - max_vote_age_blocks from validators whose registry power is > 0, each weighted by
that power. If the counted power * 3 > the registry's total power * 2, the lower stake-weighted
median M (`execution.oracle.votes.weighted_median`) is applied through the move bound
(`execution.oracle.votes.bounded_price` with max_vol_move_ppm; a pair without a stored vol takes M
at once), then kept within [min_vol_ppm, max_vol_ppm], and stored with `updated_height = H` with a
`volatility` event; when the applied vol is not M a `volatility_clamped` event follows (wanted M,
applied, previous) and a warning is logged. Otherwise the vol is unchanged.

A vol is stale at height H when H - updated_height > stale_after_blocks (`vol_is_stale`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from consensus.app import Event, EventAttribute
from execution.codes import ActionError, Code
from execution.markets import MAX_INT, Market, load_markets
from execution.oracle.votes import bounded_price, weighted_median
from execution.state import StateReader, StateView
from execution.tx import VolVote
from execution.validators import load_validator, registry
from primitives import codec
from primitives.keys import Address
from primitives.timefmt import format_rfc3339
from storage import schema

log = logging.getLogger("derivd.oracle")

VOL_FIELDS = ("max_vote_age_blocks", "stale_after_blocks", "max_vol_move_ppm", "min_vol_ppm", "max_vol_ppm")
"""The keys of the genesis `volatility` section (each optional), in their stored order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VolParams:
    """How old a vote may be to count, after how many blocks without an update a vol is stale, how
    far (ppm of the previous vol) one block may move a vol, and the range of a voted vol (ppm)."""

    max_vote_age_blocks: int = 3
    stale_after_blocks: int = 10
    max_vol_move_ppm: int = 500_000
    min_vol_ppm: int = 10_000
    max_vol_ppm: int = 5_000_000

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        for name in VOL_FIELDS:
            value = getattr(self, name)
            if type(value) is not int or not 1 <= value <= MAX_INT:
                return name, f"must be an integer within [1, {MAX_INT}], got {value!r}"
        if self.max_vol_ppm < self.min_vol_ppm:
            return "max_vol_ppm", f"must be at least min_vol_ppm {self.min_vol_ppm}, got {self.max_vol_ppm}"
        return None

    def encode(self) -> bytes:
        return codec.encode([getattr(self, name) for name in VOL_FIELDS])

    @classmethod
    def decode(cls, raw: bytes) -> VolParams:
        f = codec.field_list(codec.decode(raw), "vol params", len(VOL_FIELDS))
        return cls(**{name: codec.field_int(f[i], f"vol params.{name}") for i, name in enumerate(VOL_FIELDS)})

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in VOL_FIELDS}


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredVol:
    """A pair's chain vol (ppm) and the height that set it."""

    vol_ppm: int
    updated_height: int

    def encode(self) -> bytes:
        return codec.encode([self.vol_ppm, self.updated_height])

    @classmethod
    def decode(cls, raw: bytes) -> StoredVol:
        f = codec.field_list(codec.decode(raw), "vol", 2)
        return cls(
            vol_ppm=codec.field_int(f[0], "vol.vol_ppm", 1),
            updated_height=codec.field_int(f[1], "vol.updated_height"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredVolVote:
    """A validator's latest vote on one pair: vol (ppm) and the height it was cast at."""

    vol_ppm: int
    height: int

    def encode(self) -> bytes:
        return codec.encode([self.vol_ppm, self.height])

    @classmethod
    def decode(cls, raw: bytes) -> StoredVolVote:
        f = codec.field_list(codec.decode(raw), "vol vote", 2)
        return cls(
            vol_ppm=codec.field_int(f[0], "vol vote.vol_ppm", 1),
            height=codec.field_int(f[1], "vol vote.height"),
        )


# -- storage -----------------------------------------------------------------------------------------


def load_vol_params(state: StateReader) -> VolParams:
    """The volatility oracle's parameters (the defaults if genesis wrote none)."""
    raw = state.get(schema.VOL_PARAMS)
    return VolParams() if raw is None else VolParams.decode(raw)


def store_vol_params(view: StateView, params: VolParams) -> None:
    view.put(schema.VOL_PARAMS, params.encode())


def load_vol(state: StateReader, underlying_id: int, expiry_ns: int) -> StoredVol | None:
    raw = state.get(schema.vol_key(underlying_id, expiry_ns))
    return None if raw is None else StoredVol.decode(raw)


def store_vol(view: StateView, underlying_id: int, expiry_ns: int, vol: StoredVol) -> None:
    view.put(schema.vol_key(underlying_id, expiry_ns), vol.encode())


def vol_is_stale(stored: StoredVol, height: int, params: VolParams) -> bool:
    """Whether `stored` is stale at `height`: more than `stale_after_blocks` since its update."""
    return height - stored.updated_height > params.stale_after_blocks


def init_vol(view: StateView, underlying_id: int, expiry_ns: int, vol_ppm: int, height: int) -> None:
    """The genesis vol of a pair, set at `height` (the genesis height); ValueError if `vol_ppm` is
    outside the stored parameters' [min_vol_ppm, max_vol_ppm] (write the parameters first)."""
    params = load_vol_params(view)
    if not params.min_vol_ppm <= vol_ppm <= params.max_vol_ppm:
        raise ValueError(
            f"vol_ppm must be within [{params.min_vol_ppm}, {params.max_vol_ppm}], got {vol_ppm}"
        )
    store_vol(view, underlying_id, expiry_ns, StoredVol(vol_ppm=vol_ppm, updated_height=height))


def _listed(markets: list[Market]) -> list[tuple[int, int]]:
    return sorted({(m.option.underlying_id, m.option.expiry_ns) for m in markets if m.option is not None})


def listed_expiries(state: StateReader) -> list[tuple[int, int]]:
    """The (underlying id, expiry ns) pairs of the markets with option terms, sorted, each once."""
    return _listed(load_markets(state))


# -- votes -------------------------------------------------------------------------------------------


def vol_vote_error(state: StateReader, sender: Address, action: VolVote) -> ActionError | None:
    """Why `sender` may not cast `action`, or None."""
    entry = load_validator(state, sender.raw)
    if entry is None or entry.power <= 0:
        return ActionError(Code.NOT_A_VALIDATOR, f"{sender} is not a validator with voting power")
    if not action.vols:
        return ActionError(Code.INVALID_VOL_VOTE, "a vol vote needs at least one vol")
    params = load_vol_params(state)
    listed = frozenset(listed_expiries(state))  # membership only
    previous: tuple[int, int] | None = None
    low, high = params.min_vol_ppm, params.max_vol_ppm
    for i, (underlying_id, expiry_ns, vol_ppm) in enumerate(action.vols):
        pair = (underlying_id, expiry_ns)
        if previous is not None and pair <= previous:
            return ActionError(
                Code.INVALID_VOL_VOTE,
                f"vols[{i}]: (underlying, expiry) must be strictly increasing, got {pair}",
            )
        previous = pair
        if not low <= vol_ppm <= high:
            return ActionError(
                Code.INVALID_VOL_VOTE, f"vols[{i}]: vol_ppm must be within [{low}, {high}], got {vol_ppm}"
            )
        if pair not in listed:
            return ActionError(
                Code.UNKNOWN_MARKET,
                f"vols[{i}]: no option series on market {underlying_id} expiring at {expiry_ns} ns",
            )
    return None


def apply_vol_vote(view: StateView, sender: Address, action: VolVote, height: int) -> list[Event]:
    """Record `sender`'s vol vote at `height`; ActionError if it breaks a rule (nothing written)."""
    problem = vol_vote_error(view, sender, action)
    if problem is not None:
        raise problem
    for underlying_id, expiry_ns, vol_ppm in action.vols:
        key = schema.vol_vote_key(underlying_id, expiry_ns, sender.raw)
        view.put(key, StoredVolVote(vol_ppm=vol_ppm, height=height).encode())
    return []


def pair_votes(state: StateReader, underlying_id: int, expiry_ns: int) -> list[tuple[bytes, StoredVolVote]]:
    """Every stored vote on the pair as (validator address, vote), by address."""
    prefix = schema.vol_vote_prefix(underlying_id, expiry_ns)
    return [(key[len(prefix) :], StoredVolVote.decode(raw)) for key, raw in state.iterate(prefix)]


# -- aggregation -------------------------------------------------------------------------------------


def volatility_event(ticker: str, expiry_ns: int, vol_ppm: int, height: int) -> Event:
    return Event(
        "volatility",
        (
            EventAttribute("underlying", ticker),
            EventAttribute("expiry", format_rfc3339(expiry_ns)),
            EventAttribute("vol_ppm", str(vol_ppm)),
            EventAttribute("height", str(height)),
        ),
    )


def volatility_clamped_event(
    ticker: str, expiry_ns: int, wanted: int, applied: int, previous: int, height: int
) -> Event:
    return Event(
        "volatility_clamped",
        (
            EventAttribute("underlying", ticker),
            EventAttribute("expiry", format_rfc3339(expiry_ns)),
            EventAttribute("wanted", str(wanted)),
            EventAttribute("applied", str(applied)),
            EventAttribute("previous", str(previous)),
            EventAttribute("height", str(height)),
        ),
    )


def bounded_vol(previous: int | None, wanted: int, params: VolParams) -> int:
    """The vol applied when the median `wanted` meets the stored `previous` (None: none stored):
    `wanted` within one step of `previous`, else `previous` moved one step toward it, then kept
    within [min_vol_ppm, max_vol_ppm] (module docstring)."""
    moved = wanted if previous is None else bounded_price(previous, wanted, params.max_vol_move_ppm)
    return min(max(moved, params.min_vol_ppm), params.max_vol_ppm)


def vol_end_block(view: StateView, height: int) -> list[Event]:
    """Aggregate the vol votes of every listed pair at the end of the block at `height` (module
    docstring)."""
    params = load_vol_params(view)
    markets = load_markets(view)
    pairs = _listed(markets)
    if not pairs:
        return []
    tickers = {m.market_id: m.ticker for m in markets}
    powers = {v.address.raw: v.power for v in registry(view) if v.power > 0}
    total = sum(powers.values())
    oldest = height - params.max_vote_age_blocks  # votes must be strictly newer
    events: list[Event] = []
    for underlying_id, expiry_ns in pairs:
        counted = [
            (vote.vol_ppm, address, powers[address])
            for address, vote in pair_votes(view, underlying_id, expiry_ns)
            if oldest < vote.height <= height and address in powers
        ]
        voting_power = sum(power for _, _, power in counted)
        if total == 0 or voting_power * 3 <= total * 2:
            continue
        wanted = weighted_median(counted)
        stored = load_vol(view, underlying_id, expiry_ns)
        previous = None if stored is None else stored.vol_ppm
        vol = bounded_vol(previous, wanted, params)
        store_vol(view, underlying_id, expiry_ns, StoredVol(vol_ppm=vol, updated_height=height))
        ticker = tickers.get(underlying_id, str(underlying_id))
        events.append(volatility_event(ticker, expiry_ns, vol, height))
        if vol != wanted:
            log.warning(
                "vol of %s %s clamped at height %d: the median %d ppm moves more than %d ppm from %s, "
                "%d applied",
                ticker, format_rfc3339(expiry_ns), height, wanted, params.max_vol_move_ppm, previous, vol,
            )  # fmt: skip
            events.append(
                volatility_clamped_event(
                    ticker, expiry_ns, wanted, vol, previous if previous is not None else 0, height
                )
            )
    return events
