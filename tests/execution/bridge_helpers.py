"""Helpers of the bridge tests: four validators with seeded bridge keys (powers 1, 2, 3, 6: two
of them, 2 and 6, hold exactly 2/3), the genesis `bridge` section, and builders of the bridge
actions."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from consensus.app import ExecTxResult, ValidatorUpdate
from execution.bridge.evm import (
    address_of_secret,
    deposit_id,
    format_evm_address,
    sign_digest,
    valset_digest,
    withdrawal_digest,
)
from execution.bridge.params import BridgeParams, bridge_domain, key_proof_digest
from execution.tx import (
    BridgeDepositVote,
    BridgeSign,
    BridgeSignature,
    DepositClaim,
    SetBridgeKey,
    SignTarget,
)
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from tests.execution.chain import CHAIN_ID, Chain, address, key

POWERS = (1, 2, 3, 6)
TOTAL = sum(POWERS)
EVM_CHAIN_ID = 31337
CONTRACT = bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3".lower())
TOKEN = bytes.fromhex("e7f1725E7734CE288F8367e1Bb143E90bb3F0512".lower())
MIN_DEPOSIT = 1_000
MIN_WITHDRAWAL = 2_000
FUNDS = 10_000_000
DEPOSITOR = bytes.fromhex("f39fd6e51aad88f6f4ce6ab8827279cfffb92266")
RECIPIENT_EVM = bytes.fromhex("70997970c51812dc3a010c7d01b50e0d17dc79c8")


def validator_key(i: int) -> PrivateKey:
    """Validator i's consensus key (it signs the validator's txs)."""
    return key(20 + i)


def validator_address(i: int) -> Address:
    return validator_key(i).address


def bridge_secret(i: int) -> bytes:
    """Validator i's secp256k1 bridge secret (seeded)."""
    return sha256(b"derivd test bridge key" + bytes([i]))


def evm(i: int) -> bytes:
    """Validator i's bridge key (EVM address)."""
    return address_of_secret(bridge_secret(i))


GENESIS_VALIDATORS = tuple(ValidatorUpdate(validator_key(i).public_key.raw, p) for i, p in enumerate(POWERS))
PARAMS = BridgeParams(
    chain_id=CHAIN_ID,
    evm_chain_id=EVM_CHAIN_ID,
    contract=CONTRACT,
    token=TOKEN,
    confirmations=3,
    min_deposit=MIN_DEPOSIT,
    min_withdrawal=MIN_WITHDRAWAL,
)
DOMAIN = bridge_domain(PARAMS)


def bridge_section(keyed: range | tuple[int, ...] = range(4)) -> dict[str, Any]:
    return {
        "evm_chain_id": EVM_CHAIN_ID,
        "contract": format_evm_address(CONTRACT),
        "token": format_evm_address(TOKEN),
        "confirmations": 3,
        "min_deposit": MIN_DEPOSIT,
        "min_withdrawal": MIN_WITHDRAWAL,
        "keys": [
            {"validator": validator_address(i).upper(), "evm_address": format_evm_address(evm(i))}
            for i in keyed
        ],
    }


def bridge_chain(
    path: Path,
    *,
    balances: Mapping[Address, int] | None = None,
    extra: Mapping[str, object] | None = None,
    bridge: dict[str, Any] | None = None,
    **kwargs: Any,
) -> Chain:
    """A chain with the four validators and the bridge; accounts 0..3 funded with `FUNDS`."""
    state: dict[str, object] = {"bridge": bridge_section() if bridge is None else bridge, **(extra or {})}
    funded = {address(i): FUNDS for i in range(4)} if balances is None else balances
    return Chain(path, funded, validators=GENESIS_VALIDATORS, app_state=state, **kwargs)


def claim(n: int, amount: int = 50_000, recipient: Address | None = None, **changes: Any) -> DepositClaim:
    """Deposit n (its tx hash is sha256 of n) of `amount` to `recipient` (account 3)."""
    fields: dict[str, Any] = {
        "evm_chain_id": EVM_CHAIN_ID,
        "tx_hash": sha256(b"evm tx" + n.to_bytes(8, "big")),
        "log_index": 1,
        "depositor": DEPOSITOR,
        "recipient": address(3) if recipient is None else recipient,
        "amount": amount,
    }
    fields.update(changes)
    return DepositClaim(**fields)


def id_of(c: DepositClaim) -> bytes:
    return deposit_id(c.evm_chain_id, c.tx_hash, c.log_index)


def vote(chain: Chain, i: int, *claims: DepositClaim) -> bytes:
    """Validator i's deposit vote tx (free)."""
    return chain.tx(validator_key(i), BridgeDepositVote(tuple(claims)))


def withdrawal_signature(i: int, withdrawal_id: int, recipient: bytes, amount: int) -> BridgeSignature:
    digest = withdrawal_digest(DOMAIN, withdrawal_id, recipient, amount)
    return BridgeSignature(
        target=SignTarget.WITHDRAWAL, id=withdrawal_id, signature=sign_digest(bridge_secret(i), digest)
    )


def valset_signature(secret: bytes, nonce: int, valset_hash: bytes) -> BridgeSignature:
    digest = valset_digest(DOMAIN, valset_hash)
    return BridgeSignature(target=SignTarget.VALSET, id=nonce, signature=sign_digest(secret, digest))


def sign_tx(chain: Chain, i: int, *entries: BridgeSignature) -> bytes:
    return chain.tx(validator_key(i), BridgeSign(tuple(entries)))


def set_key(chain: Chain, i: int, secret: bytes) -> bytes:
    """Validator i's SetBridgeKey to the key of `secret`, with its proof."""
    proof = sign_digest(secret, key_proof_digest(PARAMS, validator_address(i).raw))
    return chain.tx(validator_key(i), SetBridgeKey(address_of_secret(secret), proof))


def codes(results: tuple[ExecTxResult, ...]) -> list[int]:
    return [result.code for result in results]
