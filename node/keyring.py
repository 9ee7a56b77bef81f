"""The keyring backends of `derivd keys` and of every command that signs, with Cosmos SDK's names:
`test` (`node.keystore.KeyStore`: plaintext files in `<home>/keys/`) and `file` (this module's
`FileKeyStore`: `<home>/keyring-file/<name>.json`, each private key sealed under its own
passphrase by `node.keycrypt`). `open_keyring` picks one.

A `file` key's name, address and public key are stored in clear (listing, showing and
`--generate-only` need no passphrase) and bound to the sealed seed as its associated data:

    {"name", "address", "pub_key": {type, value},
     "priv_key": {"type": "tendermint/PrivKeyEd25519",
                  "sealed": {"kdf": {"name": "argon2id", "salt", "iterations", "memory_kib", "lanes"},
                             "cipher": "chacha20-poly1305", "nonce", "ciphertext"}}}

Files and directory have the `test` store's modes (0600 in 0700) and are added the same way,
never replacing an existing name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Protocol, assert_never, get_args

from node.keycrypt import KeyCryptError, SealedSeed, WrongPassphrase, open_seed, seal_seed
from node.keystore import (
    SUFFIX,
    KeyInfo,
    KeyStore,
    KeyStoreError,
    check_key_name,
    delete_key_file,
    key_names,
    parse_public_part,
    read_key_file,
    write_new_key_file,
)
from primitives.keyfile import PRIV_KEY_TYPE
from primitives.keys import PrivateKey

FILE_KEYRING_DIR = "keyring-file"
Backend = Literal["test", "file"]
BACKENDS: tuple[Backend, ...] = get_args(Backend)
_AAD_TAG = b"derivd/keyring-file/v1"


class Passphrases(Protocol):
    """Where the `file` backend gets passphrases (the CLI prompts; tests give them)."""

    def for_key(self, name: str) -> str:
        """The passphrase of the stored key `name`."""
        ...

    def new_for_key(self, name: str) -> str:
        """A new passphrase for key `name` (the caller has checked it and had it repeated)."""
        ...


class Keyring(Protocol):
    """What every backend offers."""

    @property
    def backend(self) -> Backend: ...

    @property
    def directory(self) -> Path: ...

    def file_of(self, name: str) -> Path: ...

    def exists(self, name: str) -> bool: ...

    def add_key(self, name: str, key: PrivateKey) -> KeyInfo: ...

    def get(self, name: str) -> KeyInfo: ...

    def private_key(self, name: str) -> PrivateKey: ...

    def list(self) -> list[KeyInfo]: ...

    def delete(self, name: str) -> None: ...


def open_keyring(home: Path, backend: Backend, passphrases: Passphrases) -> Keyring:
    """The `backend` keyring of `home`; `passphrases` is used by the `file` backend only."""
    if backend == "test":
        return KeyStore(home)
    if backend == "file":
        return FileKeyStore(home, passphrases)
    assert_never(backend)


def _associated(info: KeyInfo) -> bytes:
    fields = [_AAD_TAG, info.name.encode(), str(info.address).encode(), info.public_key.raw.hex().encode()]
    return b"\n".join(fields)


class FileKeyStore:
    """The `file` backend: encrypted keys of one home directory."""

    backend: Literal["file"] = "file"

    def __init__(self, home: Path, passphrases: Passphrases) -> None:
        self.home = home
        self.directory = home / FILE_KEYRING_DIR
        self._passphrases = passphrases

    def file_of(self, name: str) -> Path:
        """The file that holds key `name`."""
        return self.directory / (check_key_name(name) + SUFFIX)

    def exists(self, name: str) -> bool:
        """Whether a key named `name` is stored."""
        return self.file_of(name).exists()

    def add_key(self, name: str, key: PrivateKey) -> KeyInfo:
        """Store `key` as `name`, sealed under a new passphrase; an existing name is an error (found
        before the passphrase is asked) and its file is left untouched."""
        path = self.file_of(name)
        if path.exists():
            raise KeyStoreError(f"{path}: a key named {name!r} already exists")
        info = KeyInfo(name=name, address=key.address, public_key=key.public_key)
        try:
            sealed = seal_seed(key, self._passphrases.new_for_key(name), _associated(info))
        except KeyCryptError as exc:
            raise KeyStoreError(f"key {name!r}: {exc}") from None
        obj = {
            **info.to_json(),
            "priv_key": {"type": PRIV_KEY_TYPE, "sealed": sealed.to_json()},
        }
        write_new_key_file(self.directory, name, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
        return info

    def get(self, name: str) -> KeyInfo:
        """The public part of key `name` (no passphrase needed)."""
        return self._read(name)[0]

    def private_key(self, name: str) -> PrivateKey:
        """The private key `name`, opened with its passphrase; KeyStoreError naming the file if the
        passphrase is wrong."""
        path = self.file_of(name)
        info, sealed = self._read(name)
        try:
            key = open_seed(sealed, self._passphrases.for_key(name), _associated(info))
        except WrongPassphrase:
            raise KeyStoreError(
                f"{path}: wrong passphrase for key {name!r} (or the file was altered)"
            ) from None
        except KeyCryptError as exc:
            raise KeyStoreError(f"{path}: {exc}") from None
        if key.public_key != info.public_key:  # the associated data already binds them
            raise KeyStoreError(f"{path}: pub_key: does not match the private key")
        return key

    def list(self) -> list[KeyInfo]:
        """All keys, sorted by name; a corrupt file is an error naming it."""
        return [self.get(name) for name in key_names(self.directory)]

    def delete(self, name: str) -> None:
        """Remove key `name`."""
        delete_key_file(self.file_of(name), name)

    def _read(self, name: str) -> tuple[KeyInfo, SealedSeed]:
        path = self.file_of(name)
        data = read_key_file(path, name)
        try:
            obj = json.loads(data)
        except ValueError as exc:
            raise KeyStoreError(f"{path}: corrupt: not valid JSON: {exc}") from None
        info = parse_public_part(path, name, obj)
        priv = obj.get("priv_key")
        if not isinstance(priv, dict) or priv.get("type") != PRIV_KEY_TYPE or set(priv) != {"type", "sealed"}:
            raise KeyStoreError(f"{path}: priv_key: must be {{type: {PRIV_KEY_TYPE}, sealed}}")
        try:
            sealed = SealedSeed.from_json(priv["sealed"], "priv_key.sealed")
        except KeyCryptError as exc:
            raise KeyStoreError(f"{path}: {exc}") from None
        return info, sealed
