"""The `test` key store behind `derivd keys`: one Ed25519 key per plaintext file,
`<home>/keys/<name>.json`, and the file handling every key store shares (names, modes, adding
without replacing, deleting, listing). The encrypted `file` store is `node.keyring`'s.

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
from typing import Any, Literal

from primitives.files import sync_directory
from primitives.keyfile import PRIV_KEY_TYPE, PUB_KEY_TYPE
from primitives.keys import Address, PrivateKey, PublicKey

KEYS_DIR = "keys"
DIR_MODE = 0o700
FILE_MODE = 0o600
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
SUFFIX = ".json"


class KeyStoreError(ValueError):
    """A key that cannot be added or read; the message names the key or file and the problem."""


@dataclass(frozen=True, kw_only=True, slots=True)
class KeyInfo:
    """The public part of a stored key."""

    name: str
    address: Address
    public_key: PublicKey

    def to_json(self) -> dict[str, Any]:
        """{"name", "address", "pub_key": {"type", "value"}}; never the private key."""
        return {"name": self.name, "address": str(self.address), "pub_key": pub_key_json(self.public_key)}


def pub_key_json(public_key: PublicKey) -> dict[str, str]:
    """{"type": "tendermint/PubKeyEd25519", "value": <base64>}."""
    return {"type": PUB_KEY_TYPE, "value": base64.b64encode(public_key.raw).decode("ascii")}


def check_key_name(name: str) -> str:
    """`name` if it is a valid key name (1 to 64 of A-Z a-z 0-9 . _ -), else KeyStoreError."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeyStoreError(f"invalid key name {name!r}: use 1 to 64 letters, digits, '.', '_' or '-'")
    return name


def ensure_key_directory(directory: Path) -> None:
    """Create `directory` (mode 0700), or tighten an existing one to 0700."""
    directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    os.chmod(directory, DIR_MODE)  # mkdir leaves an existing directory's mode as it was


def write_new_key_file(directory: Path, name: str, data: bytes) -> Path:
    """Write `data` as `<directory>/<name>.json` (mode 0600, synced); KeyStoreError if the name is
    taken, even by a file another process creates meanwhile: the existing file is never touched."""
    path = directory / (check_key_name(name) + SUFFIX)
    ensure_key_directory(directory)
    if path.exists():
        raise KeyStoreError(f"{path}: a key named {name!r} already exists")
    tmp = directory / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    try:
        try:
            os.fchmod(fd, FILE_MODE)
            view = memoryview(data)
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
    sync_directory(directory)
    return path


def read_key_file(path: Path, name: str) -> bytes:
    """The bytes of key `name`'s file; KeyStoreError if there is none or it cannot be read."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyStoreError(f"no key named {name!r} (looked for {path})") from None
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot read: {exc.strerror}") from None


def delete_key_file(path: Path, name: str) -> None:
    """Remove key `name`'s file; KeyStoreError if there is none."""
    try:
        path.unlink()
    except FileNotFoundError:
        raise KeyStoreError(f"no key named {name!r} (looked for {path})") from None
    except OSError as exc:
        raise KeyStoreError(f"{path}: cannot delete: {exc.strerror}") from None
    sync_directory(path.parent)


def key_names(directory: Path) -> list[str]:
    """The names of the key files in `directory`, sorted (other files are ignored)."""
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(
        entry[: -len(SUFFIX)]
        for entry in entries
        if entry.endswith(SUFFIX) and _NAME.fullmatch(entry[: -len(SUFFIX)])
    )


def _key_file_json(name: str, key: PrivateKey) -> bytes:
    obj = {
        "name": name,
        "address": str(key.address),
        "pub_key": pub_key_json(key.public_key),
        "priv_key": {"type": PRIV_KEY_TYPE, "value": base64.b64encode(key.cometbft_bytes()).decode("ascii")},
    }
    return (json.dumps(obj, indent=2) + "\n").encode("utf-8")


class KeyStore:
    """The `test` backend: plaintext keys of one home directory."""

    backend: Literal["test"] = "test"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.directory = home / KEYS_DIR

    def file_of(self, name: str) -> Path:
        """The file that holds key `name`."""
        return self.directory / (check_key_name(name) + SUFFIX)

    def exists(self, name: str) -> bool:
        """Whether a key named `name` is stored."""
        return self.file_of(name).exists()

    def add(self, name: str, seed: bytes | None = None) -> KeyInfo:
        """Create key `name` from `seed` (32 bytes) or from fresh randomness; an existing name is
        an error and its file is left untouched."""
        check_key_name(name)
        try:
            key = PrivateKey.generate() if seed is None else PrivateKey.from_seed(seed)
        except ValueError as exc:
            raise KeyStoreError(f"key {name!r}: {exc}") from None
        return self.add_key(name, key)

    def add_key(self, name: str, key: PrivateKey) -> KeyInfo:
        """Store `key` as `name`; an existing name is an error and its file is left untouched."""
        write_new_key_file(self.directory, name, _key_file_json(name, key))
        return KeyInfo(name=name, address=key.address, public_key=key.public_key)

    def get(self, name: str) -> KeyInfo:
        """The public part of key `name`."""
        key = self.private_key(name)
        return KeyInfo(name=name, address=key.address, public_key=key.public_key)

    def private_key(self, name: str) -> PrivateKey:
        """The private key `name`, checked against its recorded public key and address."""
        path = self.file_of(name)
        return _parse_key_file(path, name, read_key_file(path, name))

    def list(self) -> list[KeyInfo]:
        """All keys, sorted by name; a corrupt file is an error naming it."""
        return [self.get(name) for name in key_names(self.directory)]

    def delete(self, name: str) -> None:
        """Remove key `name`."""
        delete_key_file(self.file_of(name), name)


def parse_public_part(path: Path, name: str, obj: object) -> KeyInfo:
    """The name, address and public key of a key file's JSON object, checked against each other
    and the file's name."""

    def fail(problem: str) -> KeyStoreError:
        return KeyStoreError(f"{path}: {problem}")

    if not isinstance(obj, dict):
        raise fail("corrupt: not a JSON object")
    if obj.get("name") != name:
        raise fail(f"name: {obj.get('name')!r} does not match the file name {name!r}")
    pub = obj.get("pub_key")
    if not isinstance(pub, dict) or pub.get("type") != PUB_KEY_TYPE:
        raise fail(f"pub_key: must be {{type: {PUB_KEY_TYPE}, value}}")
    try:
        public_key = PublicKey(base64.b64decode(str(pub.get("value")), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise fail(f"pub_key.value: {exc}") from None
    address = obj.get("address")
    if not isinstance(address, str):
        raise fail(f"address: missing (expected {public_key.address})")
    if address.lower() != str(public_key.address):
        raise fail(f"address: {address!r} does not match the key (expected {public_key.address})")
    return KeyInfo(name=name, address=public_key.address, public_key=public_key)


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
