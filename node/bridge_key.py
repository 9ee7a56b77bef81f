"""The validator's bridge key file (`[bridge] key_file`, `config/bridge_key.json`): the secp256k1
key with which this validator signs bridge withdrawals and validator-set updates
(`execution.bridge.evm`), kept apart from the Ed25519 consensus key.

Layout: `{"evm_address": "0x<EIP-55>", "secret": "<64 hex digits>"}`, written atomically with mode
0600 like `priv_validator_key.json`. Reading checks that the address is the secret's.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from execution.bridge.evm import (
    SECP256K1_ORDER,
    address_of_secret,
    format_evm_address,
    parse_evm_address,
    sign_digest,
)
from primitives.files import atomic_write

SECRET_SIZE = 32


class BridgeKeyError(ValueError):
    """A bridge key file that cannot be used (or written); the message names the file and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeKey:
    """A validator's bridge key: its EVM address and its secret."""

    evm_address: bytes
    secret: bytes = field(repr=False)

    @classmethod
    def from_secret(cls, secret: bytes) -> BridgeKey:
        """The key of a 32-byte secret; ValueError if it is not a valid secp256k1 secret."""
        if len(secret) != SECRET_SIZE or not 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
            raise ValueError("not a secp256k1 secret (32 bytes, 0 < secret < the curve order)")
        return cls(evm_address=address_of_secret(secret), secret=secret)

    def sign(self, digest: bytes) -> bytes:
        """The 65-byte signature (r || s || v) of a 32-byte digest (`evm.sign_digest`)."""
        return sign_digest(self.secret, digest)

    @property
    def address_text(self) -> str:
        """The EVM address, EIP-55."""
        return format_evm_address(self.evm_address)


def save_bridge_key(path: Path, key: BridgeKey) -> None:
    """Write `key` to `path` (mode 0600), replacing what is there."""
    document = {"evm_address": key.address_text, "secret": key.secret.hex()}
    atomic_write(path, (json.dumps(document, indent=2) + "\n").encode(), 0o600)


def create_bridge_key(path: Path) -> BridgeKey:
    """A new random bridge key written to `path`; BridgeKeyError if `path` exists (a key is never
    overwritten: it may be the one the chain knows)."""
    if path.exists():
        raise BridgeKeyError(f"{path}: already exists (a bridge key is never overwritten)")
    while True:
        secret = secrets.token_bytes(SECRET_SIZE)
        if 0 < int.from_bytes(secret, "big") < SECP256K1_ORDER:
            break
    key = BridgeKey.from_secret(secret)
    try:
        save_bridge_key(path, key)
    except OSError as exc:
        raise BridgeKeyError(f"{path}: cannot be written: {exc}") from exc
    return key


def load_bridge_key(path: Path) -> BridgeKey:
    """The key in `path`; BridgeKeyError names the file and the problem (missing, not JSON, a bad
    field, an address that is not the secret's)."""
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise BridgeKeyError(f"{path}: missing (`derivd init` creates it)") from None
    except (OSError, ValueError) as exc:
        raise BridgeKeyError(f"{path}: unreadable: {exc}") from None
    if not isinstance(document, dict):
        raise BridgeKeyError(f"{path}: not a JSON object")
    secret_text = document.get("secret")
    if not isinstance(secret_text, str) or len(secret_text) != 2 * SECRET_SIZE:
        raise BridgeKeyError(f"{path}: secret: must be {2 * SECRET_SIZE} hex digits")
    try:
        key = BridgeKey.from_secret(bytes.fromhex(secret_text))
    except ValueError as exc:
        raise BridgeKeyError(f"{path}: secret: {exc}") from None
    address_text = document.get("evm_address")
    if not isinstance(address_text, str):
        raise BridgeKeyError(f"{path}: evm_address: missing")
    try:
        address = parse_evm_address(address_text)
    except ValueError as exc:
        raise BridgeKeyError(f"{path}: evm_address: {exc}") from None
    if address != key.evm_address:
        raise BridgeKeyError(
            f"{path}: evm_address: {address_text} is not the secret's address ({key.address_text})"
        )
    return key
