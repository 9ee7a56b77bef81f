"""The bridge's validator sets (valsets) and keys: each validator's bridge key (an EVM address,
`SetBridgeKey`), the valsets by nonce, the end-of-block derivation of a new set, and the signatures
by which set k-1 hands the contract over to set k.

A valset is `nonce` and members `(evm address, power)` sorted by address (strictly), powers > 0;
stored at `schema.bridge_valset_key(nonce)` as `[[evm address, power], ...]`, the latest nonce at
`schema.BRIDGE_VALSET_NONCE`. Nonce 0 is genesis's (`init_bridge_state`): the genesis validators
that have a key, with their powers. The current valset is the latest one.

End of block (`valset_end_block`): the set derived from the registry (validators with power > 0
and a bridge key, `derived_members`) is compared with the current set's members; when it differs
and is not empty it is stored as nonce current+1, marked pending (`schema.bridge_valset_pending_key`)
and announced (event `bridge_valset`: nonce, hash, members as `0x<EIP-55>:<power>` joined by ",").

Signatures (`sign_valset`): a member of set k-1 signs `valset_digest(domain, hash of set k)`; once
the members that signed hold > 2/3 of set k-1's power, set k is no longer pending (event
`bridge_valset_signed`). Signatures stay stored (`schema.bridge_valset_signature_key`), so a
relayer reads them all.

`SetBridgeKey` (`apply_set_bridge_key`): a validator in the registry (any power) sets its key; the
proof must be the new key's signature of `key_proof_digest` (INVALID_BRIDGE_SIGNATURE); the address
must be neither zero nor another validator's key (INVALID_ACTION).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consensus.app import Event, EventAttribute
from execution.bridge.evm import (
    EVM_ADDRESS_SIZE,
    format_evm_address,
    recover_signer,
    valset_digest,
    valset_hash,
)
from execution.bridge.params import (
    ZERO_EVM_ADDRESS,
    BridgeParams,
    bridge_domain,
    key_proof_digest,
    require_params,
    store_bridge_params,
)
from execution.codes import ActionError, Code
from execution.state import StateReader, StateView
from execution.tx import SetBridgeKey
from execution.validators import MAX_POWER, load_validator, registry
from primitives import codec
from primitives.keys import Address
from storage import schema

MAX_NONCE = 2**63 - 1
_MARK = codec.encode(0)

Member = tuple[bytes, int]
"""(EVM address, power)"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Valset:
    """A bridge validator set: its nonce and members (EVM address, power), sorted by address."""

    nonce: int
    members: tuple[Member, ...]

    @property
    def addresses(self) -> tuple[bytes, ...]:
        return tuple(address for address, _ in self.members)

    @property
    def powers(self) -> tuple[int, ...]:
        return tuple(power for _, power in self.members)

    @property
    def total_power(self) -> int:
        return sum(power for _, power in self.members)

    @property
    def hash(self) -> bytes:
        """The hash by which the contract knows this set (`evm.valset_hash`)."""
        return valset_hash(self.nonce, self.addresses, self.powers)

    def power_of(self, evm_address: bytes) -> int:
        """The power of the member `evm_address` (0: not a member)."""
        for address, power in self.members:
            if address == evm_address:
                return power
        return 0

    def signed_quorum(self, signers: Iterable[bytes]) -> int | None:
        """The power of the members among `signers` (EVM addresses, each once) if it is more than
        2/3 of the set's (what the contract requires), else None."""
        signed = sum(self.power_of(address) for address in signers)
        return signed if signed * 3 > self.total_power * 2 else None

    def encode(self) -> bytes:
        return codec.encode([[address, power] for address, power in self.members])

    @classmethod
    def decode(cls, nonce: int, raw: bytes) -> Valset:
        items = codec.field_list(codec.decode(raw), "valset")
        members: list[Member] = []
        for i, item in enumerate(items):
            f = codec.field_list(item, f"valset[{i}]", 2)
            address = codec.field_bytes(f[0], f"valset[{i}].address", EVM_ADDRESS_SIZE)
            power = codec.field_int(f[1], f"valset[{i}].power", 1, MAX_POWER)
            if members and address <= members[-1][0]:
                raise codec.DecodeError(f"valset[{i}].address: not strictly ascending")
            members.append((address, power))
        return cls(nonce=nonce, members=tuple(members))


# -- storage -----------------------------------------------------------------------------------------


def bridge_key(state: StateReader, validator_address: bytes) -> bytes | None:
    """The bridge key (EVM address) of the validator of `validator_address`, None if it has none."""
    if len(validator_address) != schema.OWNER_SIZE:
        return None
    return state.get(schema.bridge_key_key(validator_address))


def store_bridge_key(view: StateView, validator_address: bytes, evm_address: bytes) -> None:
    view.put(schema.bridge_key_key(validator_address), evm_address)


def bridge_keys(state: StateReader) -> list[tuple[bytes, bytes]]:
    """Every (validator address, bridge key), by validator address."""
    prefix = len(schema.APP_BRIDGE_KEY_PREFIX)
    return [(key[prefix:], raw) for key, raw in state.iterate(schema.APP_BRIDGE_KEY_PREFIX)]


def current_nonce(state: StateReader) -> int | None:
    """The latest valset's nonce, None on a chain without a bridge."""
    raw = state.get(schema.BRIDGE_VALSET_NONCE)
    return None if raw is None else codec.field_int(codec.decode(raw), "valset nonce", 0, MAX_NONCE)


def load_valset(state: StateReader, nonce: int) -> Valset | None:
    """Valset `nonce`, None if there is none."""
    if not 0 <= nonce <= MAX_NONCE:
        return None
    raw = state.get(schema.bridge_valset_key(nonce))
    return None if raw is None else Valset.decode(nonce, raw)


def current_valset(state: StateReader) -> Valset | None:
    """The latest valset, None on a chain without a bridge."""
    nonce = current_nonce(state)
    return None if nonce is None else load_valset(state, nonce)


def store_valset(view: StateView, valset: Valset) -> None:
    """Store `valset` as the latest one."""
    view.put(schema.bridge_valset_key(valset.nonce), valset.encode())
    view.put(schema.BRIDGE_VALSET_NONCE, codec.encode(valset.nonce))


def is_valset_pending(state: StateReader, nonce: int) -> bool:
    return 0 <= nonce <= MAX_NONCE and state.get(schema.bridge_valset_pending_key(nonce)) is not None


def pending_valset_nonces(state: StateReader) -> list[int]:
    """The nonces of the valsets awaiting the signatures of the set before them, ascending."""
    prefix = len(schema.APP_BRIDGE_VALSET_PENDING_PREFIX)
    return [
        int.from_bytes(key[prefix:], "big")
        for key, _ in state.iterate(schema.APP_BRIDGE_VALSET_PENDING_PREFIX)
    ]


def valset_signatures(state: StateReader, nonce: int) -> dict[bytes, bytes]:
    """EVM address -> its signature of valset `nonce`, by address."""
    if not 0 <= nonce <= MAX_NONCE:
        return {}
    prefix = schema.bridge_valset_signature_prefix(nonce)
    return {key[len(prefix) :]: raw for key, raw in state.iterate(prefix)}


def derived_members(state: StateReader) -> tuple[Member, ...]:
    """The members the registry makes now: every validator with power > 0 and a bridge key, with
    its power, by EVM address."""
    members: list[Member] = []
    for entry in registry(state):
        if entry.power > 0:
            key = bridge_key(state, entry.address.raw)
            if key is not None:
                members.append((key, entry.power))
    return tuple(sorted(members))


# -- genesis -----------------------------------------------------------------------------------------


def init_bridge_state(view: StateView, params: BridgeParams, keys: Sequence[tuple[bytes, bytes]]) -> None:
    """The genesis writes of the bridge: `params`, the validators' `keys` (validator address, EVM
    address; the caller checked them) and valset 0 from the registry (write it first)."""
    store_bridge_params(view, params)
    for validator, evm_address in keys:
        store_bridge_key(view, validator, evm_address)
    store_valset(view, Valset(nonce=0, members=derived_members(view)))


# -- end of block ------------------------------------------------------------------------------------


def members_text(members: Sequence[Member]) -> str:
    """Members as `0x<EIP-55 address>:<power>` joined by "," (the `bridge_valset` event's form)."""
    return ",".join(f"{format_evm_address(address)}:{power}" for address, power in members)


def valset_end_block(view: StateView, height: int) -> list[Event]:
    """Store and announce a new valset when the registry's set differs from the current one (module
    docstring)."""
    current = current_valset(view)
    if current is None:  # no bridge
        return []
    members = derived_members(view)
    if not members or members == current.members:
        return []
    valset = Valset(nonce=current.nonce + 1, members=members)
    store_valset(view, valset)
    view.put(schema.bridge_valset_pending_key(valset.nonce), _MARK)
    return [
        Event(
            "bridge_valset",
            (
                EventAttribute("nonce", str(valset.nonce)),
                EventAttribute("hash", "0x" + valset.hash.hex()),
                EventAttribute("members", members_text(members)),
                EventAttribute("height", str(height)),
            ),
        )
    ]


# -- actions -----------------------------------------------------------------------------------------


def signer_key(state: StateReader, sender: Address) -> bytes:
    """The bridge key of `sender`, a validator with power > 0; ActionError NOT_A_VALIDATOR otherwise."""
    entry = load_validator(state, sender.raw)
    if entry is None or entry.power <= 0:
        raise ActionError(Code.NOT_A_VALIDATOR, f"{sender} is not a validator with voting power")
    key = bridge_key(state, sender.raw)
    if key is None:
        raise ActionError(
            Code.NOT_A_VALIDATOR, f"validator {sender.upper()} has no bridge key (SetBridgeKey)"
        )
    return key


def sign_valset(
    view: StateView, params: BridgeParams, key: bytes, nonce: int, signature: bytes
) -> list[Event]:
    """Record the signature of valset `nonce` (>= 1) by the bridge key `key` and tally it over set
    nonce-1 (module docstring); ActionError UNKNOWN_WITHDRAWAL (no such set) or
    INVALID_BRIDGE_SIGNATURE."""
    valset = load_valset(view, nonce) if nonce >= 1 else None
    if valset is None:
        raise ActionError(Code.UNKNOWN_WITHDRAWAL, f"no bridge valset with nonce {nonce} to sign")
    previous = load_valset(view, nonce - 1)
    if previous is None:  # every nonce below the latest is stored
        raise ActionError(Code.UNKNOWN_WITHDRAWAL, f"no bridge valset with nonce {nonce - 1}")
    if previous.power_of(key) == 0:
        raise ActionError(
            Code.INVALID_BRIDGE_SIGNATURE,
            f"bridge key {format_evm_address(key)} is not a member of valset {nonce - 1}, which signs "
            f"valset {nonce}",
        )
    digest = valset_digest(bridge_domain(params), valset.hash)
    if recover_signer(digest, signature) != key:
        raise ActionError(
            Code.INVALID_BRIDGE_SIGNATURE,
            f"the signature of valset {nonce} does not recover to bridge key {format_evm_address(key)}",
        )
    sig_key = schema.bridge_valset_signature_key(nonce, key)
    if view.get(sig_key) == signature:
        return []
    view.put(sig_key, signature)
    if not is_valset_pending(view, nonce):
        return []
    signed = previous.signed_quorum(valset_signatures(view, nonce))
    if signed is None:
        return []
    view.delete(schema.bridge_valset_pending_key(nonce))
    return [
        Event(
            "bridge_valset_signed",
            (
                EventAttribute("nonce", str(nonce)),
                EventAttribute("hash", "0x" + valset.hash.hex()),
                EventAttribute("signed_power", str(signed)),
                EventAttribute("total_power", str(previous.total_power)),
            ),
        )
    ]


def apply_set_bridge_key(view: StateView, sender: Address, action: SetBridgeKey) -> list[Event]:
    """Set `sender`'s bridge key (module docstring)."""
    params = require_params(view)
    if load_validator(view, sender.raw) is None:
        raise ActionError(Code.NOT_A_VALIDATOR, f"{sender} is not in the validator registry")
    new = action.evm_address
    if new == ZERO_EVM_ADDRESS:  # no key has it: checked first, to say so
        raise ActionError(Code.INVALID_ACTION, "a bridge key must not be the zero address")
    if recover_signer(key_proof_digest(params, sender.raw), action.proof) != new:
        raise ActionError(
            Code.INVALID_BRIDGE_SIGNATURE,
            f"the proof does not recover to {format_evm_address(new)} over the key proof digest of "
            f"validator {sender.upper()}",
        )
    for validator, key in bridge_keys(view):
        if key == new and validator != sender.raw:
            raise ActionError(
                Code.INVALID_ACTION,
                f"{format_evm_address(new)} is already the bridge key of validator {validator.hex().upper()}",
            )
    store_bridge_key(view, sender.raw, new)
    return [
        Event(
            "bridge_key",
            (
                EventAttribute("validator", sender.upper()),
                EventAttribute("evm_address", format_evm_address(new)),
            ),
        )
    ]
