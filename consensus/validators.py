"""Validators, validator sets and CometBFT's weighted round-robin proposer selection.

A set is ordered by voting power (descending), then address (ascending); a validator's index in
that order is the index votes and commits use. Proposer selection (spec/consensus/
proposer-selection.md): each increment rescales priorities so their spread stays within
2 x total power, centres them on zero, adds every validator's power to its priority, and picks
the highest priority (ties: the lower address), which then pays the total power. All arithmetic
is on integers and clipped to int64 like CometBFT's; divisions say how they round.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from primitives.codec import DecodeError, Value, encode, field_bytes, field_int, field_list
from primitives.hashing import merkle_root
from primitives.keys import ADDRESS_SIZE, PUBLIC_KEY_SIZE, Address

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)
MAX_TOTAL_VOTING_POWER = INT64_MAX // 8
PRIORITY_WINDOW_SIZE_FACTOR = 2


def _clip(value: int) -> int:
    return max(INT64_MIN, min(INT64_MAX, value))


def _trunc_div(a: int, b: int) -> int:
    """Division rounding toward zero (Go's integer division)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass(frozen=True, slots=True)
class Validator:
    address: bytes
    pub_key: bytes
    power: int
    proposer_priority: int = 0

    def to_fields(self) -> Value:
        return [self.pub_key, self.power, self.proposer_priority]

    @classmethod
    def from_fields(cls, value: Value) -> Validator:
        f = field_list(value, "validator", 3)
        pub_key = field_bytes(f[0], "validator.pub_key", PUBLIC_KEY_SIZE)
        return cls(
            Address.from_public_key(pub_key).raw,
            pub_key,
            field_int(f[1], "validator.power", 1, MAX_TOTAL_VOTING_POWER),
            field_int(f[2], "validator.proposer_priority", INT64_MIN, INT64_MAX),
        )

    def hash_fields(self) -> Value:
        """What the set's hash commits to: key and power, not the priority."""
        return [self.pub_key, self.power]


class ValidatorSet:
    """An immutable, ordered validator set with proposer priorities."""

    __slots__ = ("_by_address", "_hash", "_proposer", "total_power", "validators")

    def __init__(self, validators: Iterable[Validator], proposer: bytes | None = None) -> None:
        ordered = sorted(validators, key=lambda v: (-v.power, v.address))
        self.validators: tuple[Validator, ...] = tuple(ordered)
        self._by_address = {v.address: i for i, v in enumerate(self.validators)}
        if len(self._by_address) != len(self.validators):
            raise ValueError("a validator set lists each validator once")
        if any(len(v.address) != ADDRESS_SIZE for v in self.validators):
            raise ValueError("validator addresses are 20 bytes")
        self.total_power = sum(v.power for v in self.validators)
        if self.total_power > MAX_TOTAL_VOTING_POWER:
            raise ValueError(f"total voting power exceeds {MAX_TOTAL_VOTING_POWER}")
        self._hash: bytes | None = None
        self._proposer = proposer if proposer in self._by_address else None

    @classmethod
    def genesis(cls, members: Sequence[tuple[bytes, int]]) -> ValidatorSet:
        """A new set from (public key, power) pairs, with priorities as CometBFT's
        NewValidatorSet leaves them (one increment)."""
        fresh = cls(Validator(Address.from_public_key(pk).raw, pk, power) for pk, power in members)
        return fresh.increment_proposer_priority(1) if fresh.validators else fresh

    def __len__(self) -> int:
        return len(self.validators)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ValidatorSet)
            and self.validators == other.validators
            and self.proposer.address == other.proposer.address
        )

    def __hash__(self) -> int:
        return hash(self.validators)

    def index_of(self, address: bytes) -> int | None:
        return self._by_address.get(address)

    def get(self, address: bytes) -> Validator | None:
        index = self._by_address.get(address)
        return None if index is None else self.validators[index]

    def hash(self) -> bytes:
        if self._hash is None:
            self._hash = merkle_root([encode(v.hash_fields()) for v in self.validators])
        return self._hash

    def quorum(self) -> int:
        """The least power that is more than 2/3 of the total."""
        return self.total_power * 2 // 3 + 1

    @property
    def proposer(self) -> Validator:
        """The proposer chosen by the last increment (else the highest priority, ties: the lower
        address)."""
        if self._proposer is not None:
            return self.validators[self._by_address[self._proposer]]
        return _highest_priority(self.validators)

    # -- priorities -------------------------------------------------------------------------------

    def increment_proposer_priority(self, times: int) -> ValidatorSet:
        """A copy advanced `times` proposer turns."""
        if times <= 0 or not self.validators:
            return self
        diff_max = PRIORITY_WINDOW_SIZE_FACTOR * self.total_power
        vals = _rescale(list(self.validators), diff_max)
        vals = _shift_by_average(vals)
        total = self.total_power
        chosen = b""
        for _ in range(times):
            vals = [replace(v, proposer_priority=_clip(v.proposer_priority + v.power)) for v in vals]
            best = _highest_priority(vals)
            chosen = best.address
            at = next(i for i, v in enumerate(vals) if v.address == chosen)
            vals[at] = replace(best, proposer_priority=_clip(best.proposer_priority - total))
        return ValidatorSet(vals, chosen)

    def with_updates(self, updates: Sequence[tuple[bytes, int]]) -> ValidatorSet:
        """Apply (public key, power) changes (power 0 removes) as CometBFT's UpdateWithChangeSet:
        new validators start at -1.125 x the new total power; priorities are then recentred."""
        by_key = {v.pub_key: v for v in self.validators}
        seen: set[bytes] = set()
        for pub_key, power in updates:
            if pub_key in seen:
                raise ValueError("a validator appears twice in one update")
            seen.add(pub_key)
            if power < 0:
                raise ValueError("voting power cannot be negative")
            if power == 0 and pub_key not in by_key:
                raise ValueError("cannot remove a validator that is not in the set")
        kept = dict(by_key)
        for pub_key, power in updates:
            if power == 0:
                kept.pop(pub_key, None)
            elif pub_key in kept:
                kept[pub_key] = replace(kept[pub_key], power=power)
        new_total = sum(v.power for v in kept.values()) + sum(
            power for pub_key, power in updates if power > 0 and pub_key not in by_key
        )
        if new_total == 0:
            raise ValueError("applying the updates would leave no voting power")
        start = -(new_total + (new_total >> 3))
        for pub_key, power in updates:
            if power > 0 and pub_key not in by_key:
                kept[pub_key] = Validator(Address.from_public_key(pub_key).raw, pub_key, power, _clip(start))
        merged = ValidatorSet(kept.values())
        diff_max = PRIORITY_WINDOW_SIZE_FACTOR * merged.total_power
        return ValidatorSet(_shift_by_average(_rescale(list(merged.validators), diff_max)))

    # -- encoding ---------------------------------------------------------------------------------

    def to_fields(self) -> Value:
        return [[v.to_fields() for v in self.validators], self._proposer or b""]

    @classmethod
    def from_fields(cls, value: Value) -> ValidatorSet:
        f = field_list(value, "validator set", 2)
        items = field_list(f[0], "validator set.validators", max_len=10_000)
        vals = [Validator.from_fields(v) for v in items]
        proposer = field_bytes(f[1], "validator set.proposer", max_size=ADDRESS_SIZE)
        try:
            return cls(vals, proposer or None)
        except ValueError as exc:
            raise DecodeError(f"validator set: {exc}") from exc


def _highest_priority(vals: Sequence[Validator]) -> Validator:
    return min(vals, key=lambda v: (-v.proposer_priority, v.address))


def _rescale(vals: list[Validator], diff_max: int) -> list[Validator]:
    if not vals or diff_max <= 0:
        return vals
    priorities = [v.proposer_priority for v in vals]
    diff = max(priorities) - min(priorities)
    if diff <= diff_max:
        return vals
    ratio = (diff + diff_max - 1) // diff_max
    return [replace(v, proposer_priority=_trunc_div(v.proposer_priority, ratio)) for v in vals]


def _shift_by_average(vals: list[Validator]) -> list[Validator]:
    if not vals:
        return vals
    average = sum(v.proposer_priority for v in vals) // len(vals)  # floor, as big.Int.Div
    return [replace(v, proposer_priority=_clip(v.proposer_priority - average)) for v in vals]
