"""Ed25519 key files in CometBFT's JSON format (priv_validator_key.json, node_key.json):
{"address", "pub_key": {"type", "value"}, "priv_key": {"type", "value"}}, values in base64 and the
private key as its 64-byte seed || public key form. Written with mode 0600, atomically."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from primitives.files import atomic_write
from primitives.keys import PrivateKey

PUB_KEY_TYPE = "tendermint/PubKeyEd25519"
PRIV_KEY_TYPE = "tendermint/PrivKeyEd25519"


class KeyFileError(ValueError):
    """A key file that cannot be used; the message names the file and the problem."""


def save_key_file(path: Path, key: PrivateKey) -> None:
    """Write `key` to `path` (mode 0600)."""
    obj = {
        "address": key.address.upper(),
        "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(key.public_key.raw).decode()},
        "priv_key": {"type": PRIV_KEY_TYPE, "value": base64.b64encode(key.cometbft_bytes()).decode()},
    }
    atomic_write(path, (json.dumps(obj, indent=2) + "\n").encode(), 0o600)


def load_key_file(path: Path) -> PrivateKey:
    """Read a key file; KeyFileError names the file and what is wrong."""
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KeyFileError(f"{path}: missing (run `derivd init`)") from exc
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(obj, dict) or not isinstance(obj.get("priv_key"), dict):
        raise KeyFileError(f"{path}: priv_key: missing")
    priv = obj["priv_key"]
    if priv.get("type") != PRIV_KEY_TYPE:
        raise KeyFileError(f"{path}: priv_key.type: only {PRIV_KEY_TYPE} is supported")
    try:
        key = PrivateKey.from_cometbft_bytes(base64.b64decode(str(priv.get("value", "")), validate=True))
    except ValueError as exc:
        raise KeyFileError(f"{path}: priv_key.value: {exc}") from exc
    address = obj.get("address")
    if address and str(address).upper() != key.address.upper():
        raise KeyFileError(f"{path}: address: does not match the key")
    return key
