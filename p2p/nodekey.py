"""The node key (`config/node_key.json`, CometBFT's format) and the node id derived from it:
hex of the first 20 bytes of SHA-256 of the Ed25519 public key."""

from __future__ import annotations

from pathlib import Path

from primitives.keyfile import load_key_file, save_key_file
from primitives.keys import PrivateKey, PublicKey


def node_id(public_key: PublicKey) -> str:
    return str(public_key.address)


def load_or_generate_node_key(path: Path) -> PrivateKey:
    """The node key at `path`, created on first use."""
    if path.exists():
        return load_key_file(path)
    key = PrivateKey.generate()
    save_key_file(path, key)
    return key
