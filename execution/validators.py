"""The application's validator registry: each validator's public key and voting power as the
application sees it, the source of the `ValidatorUpdate`s it hands back to consensus.

An entry lives at `storage.schema.validator_key(address)` as the canonical array
`[pub_key, power]`, where `address` is `Address.from_public_key(pub_key).raw` (the first 20 bytes of
SHA-256 of the 32-byte Ed25519 key, as consensus computes it). `init_chain` writes one entry per
genesis validator; the entries are part of the app hash like any other state. A validator whose
power the application set to 0 (slashed for misbehavior, `execution.evidence`) keeps its entry with
power 0, so it stays known; consensus removes it from the validator set.

The registry and consensus's next validator set agree as long as the application is the only
source of validator updates: every change of power written here is returned to consensus in the
same block's `validator_updates`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.app import ValidatorUpdate
from execution.state import StateReader, StateView
from primitives import codec
from primitives.keys import ADDRESS_SIZE, PUBLIC_KEY_SIZE, Address
from storage import schema

MAX_POWER = 2**63 - 1


@dataclass(frozen=True, slots=True)
class RegisteredValidator:
    """One registry entry: an Ed25519 public key and its voting power (0: no longer votes)."""

    pub_key: bytes
    power: int

    def __post_init__(self) -> None:
        if len(self.pub_key) != PUBLIC_KEY_SIZE:
            raise ValueError(f"a validator public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.pub_key)}")
        if not 0 <= self.power <= MAX_POWER:
            raise ValueError(f"voting power {self.power} is outside [0, {MAX_POWER}]")

    @property
    def address(self) -> Address:
        return Address.from_public_key(self.pub_key)

    def with_power(self, power: int) -> RegisteredValidator:
        return RegisteredValidator(self.pub_key, power)

    def encode(self) -> bytes:
        return codec.encode([self.pub_key, self.power])

    @classmethod
    def decode(cls, raw: bytes) -> RegisteredValidator:
        f = codec.field_list(codec.decode(raw), "validator", 2)
        pub_key = codec.field_bytes(f[0], "validator.pub_key", PUBLIC_KEY_SIZE)
        return cls(pub_key, codec.field_int(f[1], "validator.power", 0, MAX_POWER))


def load_validator(state: StateReader, address: bytes) -> RegisteredValidator | None:
    """The entry of `address`, None if it is not in the registry (or is not an address at all)."""
    if len(address) != ADDRESS_SIZE:
        return None
    raw = state.get(schema.validator_key(address))
    return None if raw is None else RegisteredValidator.decode(raw)


def store_validator(view: StateView, validator: RegisteredValidator) -> None:
    view.put(schema.validator_key(validator.address.raw), validator.encode())


def registry(state: StateReader) -> list[RegisteredValidator]:
    """Every entry, sorted by address."""
    return [RegisteredValidator.decode(raw) for _, raw in state.iterate(schema.APP_VALIDATOR_PREFIX)]


def total_power(state: StateReader) -> int:
    """The summed power of the registry."""
    return sum(validator.power for validator in registry(state))


def register_genesis_validators(view: StateView, validators: Sequence[ValidatorUpdate]) -> None:
    """Write an entry for each genesis validator; ValueError for a bad key, a power below 1 or
    two validators with the same address."""
    seen: set[bytes] = set()
    for i, update in enumerate(validators):
        if update.power < 1:
            raise ValueError(f"genesis validator {i}: voting power must be positive, got {update.power}")
        try:
            entry = RegisteredValidator(update.pub_key, update.power)
        except ValueError as exc:
            raise ValueError(f"genesis validator {i}: {exc}") from exc
        address = entry.address.raw
        if address in seen:
            raise ValueError(f"genesis validator {i}: address {entry.address.upper()} appears twice")
        seen.add(address)
        store_validator(view, entry)
