"""The user's file key store behind `derivd keys`: one Ed25519 key per file, `<home>/keys/<name>.json`.

The directory is mode 0700 and each file mode 0600 from the moment it exists (created with os.open
and that mode, never world-readable even briefly). A key is written to a temporary file, synced,
and then hard-linked to its name, which fails if the name is taken: adding a key never replaces
another. File content: {"name", "address" (lower-case hex), "pub_key": {type, value},
"priv_key": {type, value}} with base64 values, the private key in CometBFT's 64-byte form.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from primitives.files import sync_directory
from primitives.keyfile import PRIV_KEY_TYPE, PUB_KEY_TYPE
from primitives.keys import Address, PrivateKey, PublicKey

KEYS_DIR = "keys"
DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SUFFIX = ".json"


class KeyStoreError(ValueError):
    """A key that cannot be added or read; the message names the key or file and the problem."""


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """The public part of a stored key."""

    name: str
    address: Address
    public_key: PublicKey

    def to_json(self) -> dict[str, Any]:
        """{"name", "address", "pub_key": {"type", "value"}}; never the private key."""
        return {
            "name": self.name,
            "address": str(self.address),
            "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(self.public_key.raw).decode("ascii")},
        }


def check_key_name(name: str) -> str:
    """`name` if it is a valid key name (1 to 64 of A-Z a-z 0-9 . _ -), else KeyStoreError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyStoreError(f"invalid key name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return name


def _key_file_json(name: str, key: PrivateKey) -> bytes:
    obj = {
        "name": name,
        "address": str(key.address),
        "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(key.public_key.raw).decode("ascii")},
        "priv_key": {"type": PRIV_KEY_TYPE, "value": base64.b64encode(key.cometbft_bytes()).decode("ascii")},
    }
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


class KeyStore:
    """Keys of one home directory."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.directory = home / KEYS_DIR

    def file_of(self, name: str) -> Path:
        """The file that holds key `name`."""
        return self.directory / (check_key_name(name) + _SUFFIX)

    def add(self, name: str, seed: bytes | None = None) -> KeyInfo:
        """Create key `name` from `seed` (32 bytes) or from fresh randomness; an existing name is
        an error and its file is left untouched."""
        path = self.file_of(name)
        try:
            key = PrivateKey.generate() if seed is None else PrivateKey.from_seed(seed)
        except ValueError as exc:
            raise KeyStoreError(f"key {name!r}: {exc}") from None
        self._ensure_directory()
        if path.exists():
            raise KeyStoreError(f"{path}: a key named {name!r} already exists")
        tmp = self.directory / f".{name}.{secrets.token_hex(8)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
        try:
            try:
                os.fchmod(fd, FILE_MODE)
                view = memoryview(_key_file_json(name, key))
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, path)  # atomic, and unlike rename it never replaces an existing file
            except FileExistsError:
                raise KeyStoreError(f"{path}: a key named {name!r} already exists") from None
        finally:
            tmp.unlink(missing_ok=True)
        sync_directory(self.directory)
        return KeyInfo(name, key.address, key.public_key)

    def get(self, name: str) -> KeyInfo:
        """The public part of key `name`."""
        key = self.private_key(name)
        return KeyInfo(name, key.address, key.public_key)

    def private_key(self, name: str) -> PrivateKey:
        """The private key `name`, checked against its recorded public key and address."""
        path = self.file_of(name)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyStoreError(f"no key named {name!r} (looked for {path})") from None
        except OSError as exc:
            raise KeyStoreError(f"{path}: cannot read: {exc.strerror}") from None
        return _parse_key_file(path, name, data)

    def list(self) -> list[KeyInfo]:
        """All keys, sorted by name; a corrupt file is an error naming it."""
        try:
            entries = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        names = sorted(
            entry[: -len(_SUFFIX)]
            for entry in entries
            if entry.endswith(_SUFFIX) and _NAME.fullmatch(entry[: -len(_SUFFIX)])
        )
        return [self.get(name) for name in names]

    def _ensure_directory(self) -> None:
        self.directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        os.chmod(self.directory, DIR_MODE)  # mkdir leaves an existing directory's mode as it was


def _parse_key_file(path: Path, name: str, data: bytes) -> PrivateKey:
    def fail(problem: str) -> KeyStoreError:
        return KeyStoreError(f"{path}: {problem}")

    try:
        obj = json.loads(data)
    except ValueError as exc:
        raise fail(f"corrupt: not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise fail("corrupt: not a JSON object")
    if obj.get("name") != name:
        raise fail(f"name: {obj.get('name')!r} does not match the file name {name!r}")
    priv = obj.get("priv_key")
    if not isinstance(priv, dict) or priv.get("type") != PRIV_KEY_TYPE:
        raise fail(f"priv_key: must be {{type: {PRIV_KEY_TYPE}, value}}")
    try:
        key = PrivateKey.from_cometbft_bytes(base64.b64decode(str(priv.get("value")), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise fail(f"priv_key.value: {exc}") from None
    pub = obj.get("pub_key")
    if not isinstance(pub, dict) or pub.get("type") != PUB_KEY_TYPE:
        raise fail(f"pub_key: must be {{type: {PUB_KEY_TYPE}, value}}")
    if pub.get("value") != base64.b64encode(key.public_key.raw).decode("ascii"):
        raise fail("pub_key: does not match the private key")
    address = obj.get("address")
    if not isinstance(address, str):
        raise fail(f"address: missing (expected {key.address})")
    if address.lower() != str(key.address):
        raise fail(f"address: {address!r} does not match the key (expected {key.address})")
    return key
