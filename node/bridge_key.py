"""The validator's bridge key file (`[bridge] key_file`, `config/bridge_key.json`): the secp256k1
key with which this validator signs bridge withdrawals and validator-set updates
(`execution.bridge.evm`), kept apart from the Ed25519 consensus key. Also the other EVM keys of the
command line: `--evm-key` files (`read_evm_key`) and a local EVM chain's public dev keys. Nothing
here imports web3 (`derivd` imports this module for every command).

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
from node.exitcodes import bad_input
from primitives.files import atomic_write

SECRET_SIZE = 32


class EvmError(Exception):
    """An EVM-side failure (the node unreachable, a deployment refused), one line."""


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


# -- EVM keys of the command line and of a local EVM chain ------------------------------------------

DEFAULT_EVM_RPC = "http://127.0.0.1:8545"
HARDHAT_DEV_KEYS = tuple(
    bytes.fromhex(k)
    for k in (
        "ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        "59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
        "5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
        "7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
        "47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
        "8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
        "92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
        "4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
        "dbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
        "2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
    )
)
"""The secrets of hardhat's (and anvil's) dev accounts 0..9, from the public mnemonic "test test
... junk": funded on a local EVM chain, worthless (and public) anywhere else."""
DEV_MINT = 1_000_000 * 10**6
"""Test tokens (1,000,000 USD) a localnet mints to each of its first dev accounts."""
DEV_MINT_ACCOUNTS = 4


def dev_address(index: int) -> bytes:
    """The EVM address of hardhat's dev account `index`."""
    return address_of_secret(HARDHAT_DEV_KEYS[index])


def read_evm_key(path: Path) -> bytes:
    """The 32-byte secret in `path` (0x and 64 hex digits, blank space around it allowed)."""
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        bad_input(f"--evm-key: cannot read {path}: {getattr(exc, 'strerror', None) or exc}")
    digits = text[2:] if text[:2] in ("0x", "0X") else text
    try:
        secret = bytes.fromhex(digits)
    except ValueError:
        secret = b""
    if len(secret) != 32 or len(digits) != 64:
        bad_input(f"--evm-key: {path} must hold a secp256k1 secret as 0x and 64 hex digits")
    return secret
