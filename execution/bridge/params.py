"""The bridge's parameters (genesis section `bridge`, stored at `schema.BRIDGE_PARAMS`; absent: the
chain has no bridge and every bridge action is BRIDGE_DISABLED), the domain its digests use, and the
digest a validator's bridge key signs to prove it holds the key (`key_proof_digest`).

`BridgeParams` is stored as `[chain_id (UTF-8), evm_chain_id, contract (20), token (20),
confirmations, min_deposit, min_withdrawal]`. `chain_id` is the derivd chain id that init_chain
was given: it is in the domain of every digest (`execution.bridge.evm.BridgeDomain`).
"""

from __future__ import annotations

from dataclasses import dataclass

from execution.bridge.evm import EVM_ADDRESS_SIZE, MAX_UINT256, BridgeDomain, address_word, keccak256
from execution.codes import ActionError, Code
from execution.state import StateReader, StateView, read_record
from primitives import codec
from storage import schema

MAX_PARAM = 2**63 - 1
MAX_CHAIN_ID_BYTES = 256
KEY_PROOF_DOMAIN = b"derivd.bridge.key.v1"
"""The prefix of the digest a bridge key signs to prove possession (`key_proof_digest`)"""
ZERO_EVM_ADDRESS = bytes(EVM_ADDRESS_SIZE)


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeParams:
    """Which EVM chain, contract and token the bridge serves, how many confirmations a watcher
    waits for, and the smallest deposit and withdrawal (quote units)."""

    chain_id: str
    """the derivd chain id (init_chain's)"""
    evm_chain_id: int
    contract: bytes
    """the bridge contract's 20-byte address"""
    token: bytes
    """the bridged ERC-20's 20-byte address"""
    confirmations: int
    min_deposit: int
    min_withdrawal: int

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        if not 0 < len(self.chain_id.encode("utf-8")) <= MAX_CHAIN_ID_BYTES:
            return "chain_id", f"must be 1 to {MAX_CHAIN_ID_BYTES} bytes, got {self.chain_id!r}"
        if not 1 <= self.evm_chain_id <= MAX_PARAM:
            return "evm_chain_id", f"must be within [1, {MAX_PARAM}], got {self.evm_chain_id}"
        for name in ("contract", "token"):
            value: bytes = getattr(self, name)
            if len(value) != EVM_ADDRESS_SIZE:
                return name, f"must be a {EVM_ADDRESS_SIZE}-byte EVM address, got {len(value)} bytes"
            if value == ZERO_EVM_ADDRESS:
                return name, "must not be the zero address"
        for name in ("confirmations", "min_deposit", "min_withdrawal"):
            number = getattr(self, name)
            if not 1 <= number <= MAX_PARAM:
                return name, f"must be within [1, {MAX_PARAM}], got {number}"
        return None

    def encode(self) -> bytes:
        return codec.encode(
            [
                self.chain_id.encode("utf-8"),
                self.evm_chain_id,
                self.contract,
                self.token,
                self.confirmations,
                self.min_deposit,
                self.min_withdrawal,
            ]
        )

    @classmethod
    def decode(cls, raw: bytes) -> BridgeParams:
        f = codec.field_list(codec.decode(raw), "bridge params", 7)
        return cls(
            chain_id=codec.field_text(f[0], "bridge params.chain_id", MAX_CHAIN_ID_BYTES),
            evm_chain_id=codec.field_int(f[1], "bridge params.evm_chain_id", 1, MAX_UINT256),
            contract=codec.field_bytes(f[2], "bridge params.contract", EVM_ADDRESS_SIZE),
            token=codec.field_bytes(f[3], "bridge params.token", EVM_ADDRESS_SIZE),
            confirmations=codec.field_int(f[4], "bridge params.confirmations", 1),
            min_deposit=codec.field_int(f[5], "bridge params.min_deposit", 1),
            min_withdrawal=codec.field_int(f[6], "bridge params.min_withdrawal", 1),
        )


def load_bridge_params(state: StateReader) -> BridgeParams | None:
    """The bridge's parameters, None if the chain has no bridge."""
    return read_record(state, schema.BRIDGE_PARAMS, BridgeParams.decode)


def store_bridge_params(view: StateView, params: BridgeParams) -> None:
    view.put(schema.BRIDGE_PARAMS, params.encode())


def require_params(state: StateReader) -> BridgeParams:
    """The bridge's parameters; ActionError BRIDGE_DISABLED if the chain has no bridge."""
    params = load_bridge_params(state)
    if params is None:
        raise ActionError(
            Code.BRIDGE_DISABLED, "this chain has no bridge (its genesis has no bridge section)"
        )
    return params


def bridge_domain(params: BridgeParams) -> BridgeDomain:
    """The domain of every digest this chain's bridge signs."""
    return BridgeDomain(evm_chain_id=params.evm_chain_id, contract=params.contract, chain_id=params.chain_id)


def key_proof_digest(params: BridgeParams, validator_address: bytes) -> bytes:
    """What a bridge key signs to prove that the validator of `validator_address` (20 bytes) holds it:
    keccak256(b"derivd.bridge.key.v1" + domain words + the address as an ABI word)."""
    return keccak256(KEY_PROOF_DOMAIN + bridge_domain(params).words() + address_word(validator_address))
