"""Passphrase encryption of account keys: Argon2id stretches the passphrase, ChaCha20-Poly1305
seals the 32-byte Ed25519 seed, and the KDF's parameters travel with the ciphertext (so they can
change without breaking older files). Also the armored text form of an exported key.

Every sealed key is bound to the public facts stored beside it (name, address, public key, or the
armor's headers) as the AEAD's associated data: changing any of them makes the passphrase fail.

Armor (`derivd keys export`):

    -----BEGIN DERIVD PRIVATE KEY-----
    type: ed25519
    address: <hex>
    kdf: argon2id
    salt: <base64>
    iterations: 3
    memory-kib: 65536
    lanes: 4
    cipher: chacha20-poly1305
    nonce: <base64>

    <base64 ciphertext, 64 columns>
    -----END DERIVD PRIVATE KEY-----

The associated data of an armored key is its header lines as written, joined by newlines.
"""

from __future__ import annotations

import base64
import binascii
import os
import textwrap
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from primitives.keys import SEED_SIZE, PrivateKey

KDF_NAME = "argon2id"
CIPHER_NAME = "chacha20-poly1305"
MIN_PASSPHRASE_CHARS = 8
SALT_BYTES = 16
NONCE_BYTES = 12
KEY_BYTES = 32
# RFC 9106's second recommended option (64 MiB, 3 passes, 4 lanes): ~0.15 s here.
DEFAULT_ITERATIONS = 3
DEFAULT_MEMORY_KIB = 64 * 1024
DEFAULT_LANES = 4
# Limits on what a file may ask for, so that a crafted file cannot make opening it take all memory.
MAX_ITERATIONS = 64
MAX_MEMORY_KIB = 4 * 1024 * 1024
MAX_LANES = 64

ARMOR_BEGIN = "-----BEGIN DERIVD PRIVATE KEY-----"
ARMOR_END = "-----END DERIVD PRIVATE KEY-----"
_ARMOR_HEADERS = (
    "type",
    "address",
    "kdf",
    "salt",
    "iterations",
    "memory-kib",
    "lanes",
    "cipher",
    "nonce",
)


class KeyCryptError(ValueError):
    """A sealed key or armor that cannot be opened; the message is one line."""


class WrongPassphrase(KeyCryptError):
    """The passphrase does not open the key (or the sealed data or its public facts were altered)."""


def check_new_passphrase(passphrase: str) -> str:
    """`passphrase` if it may protect a key (at least 8 characters), else KeyCryptError."""
    if len(passphrase) < MIN_PASSPHRASE_CHARS:
        raise KeyCryptError(f"a passphrase has at least {MIN_PASSPHRASE_CHARS} characters")
    return passphrase


@dataclass(frozen=True, kw_only=True, slots=True)
class KdfParams:
    """Argon2id's salt and costs."""

    salt: bytes
    iterations: int = DEFAULT_ITERATIONS
    memory_kib: int = DEFAULT_MEMORY_KIB
    lanes: int = DEFAULT_LANES

    @classmethod
    def fresh(cls) -> KdfParams:
        """The default costs with a new random salt."""
        return cls(salt=os.urandom(SALT_BYTES))

    def check(self, where: str = "kdf") -> KdfParams:
        """Self, if its costs are within the limits this version accepts; else KeyCryptError naming
        the parameter as `<where>.<name>`."""
        if len(self.salt) < 8:
            raise KeyCryptError(f"{where}.salt: at least 8 bytes, got {len(self.salt)}")
        for name, value, low, high in (
            ("iterations", self.iterations, 1, MAX_ITERATIONS),
            ("lanes", self.lanes, 1, MAX_LANES),
            ("memory_kib", self.memory_kib, 8 * self.lanes, MAX_MEMORY_KIB),
        ):
            if not low <= value <= high:
                raise KeyCryptError(f"{where}.{name}: {value} is outside [{low}, {high}]")
        return self

    def derive(self, passphrase: str) -> bytes:
        """The 32-byte cipher key of `passphrase`."""
        self.check()
        kdf = Argon2id(
            salt=self.salt,
            length=KEY_BYTES,
            iterations=self.iterations,
            lanes=self.lanes,
            memory_cost=self.memory_kib,
        )
        return kdf.derive(passphrase.encode("utf-8"))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": KDF_NAME,
            "salt": _b64(self.salt),
            "iterations": self.iterations,
            "memory_kib": self.memory_kib,
            "lanes": self.lanes,
        }

    @classmethod
    def from_json(cls, obj: object, where: str) -> KdfParams:
        fields = _object(obj, where, {"name", "salt", "iterations", "memory_kib", "lanes"})
        if fields["name"] != KDF_NAME:
            raise KeyCryptError(
                f"{where}.name: unsupported KDF {fields['name']!r} (this version: {KDF_NAME})"
            )
        return cls(
            salt=_unb64(fields["salt"], f"{where}.salt"),
            iterations=_int(fields["iterations"], f"{where}.iterations"),
            memory_kib=_int(fields["memory_kib"], f"{where}.memory_kib"),
            lanes=_int(fields["lanes"], f"{where}.lanes"),
        ).check(where)


@dataclass(frozen=True, kw_only=True, slots=True)
class SealedSeed:
    """An Ed25519 seed sealed under a passphrase."""

    kdf: KdfParams
    nonce: bytes
    ciphertext: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "kdf": self.kdf.to_json(),
            "cipher": CIPHER_NAME,
            "nonce": _b64(self.nonce),
            "ciphertext": _b64(self.ciphertext),
        }

    @classmethod
    def from_json(cls, obj: object, where: str) -> SealedSeed:
        fields = _object(obj, where, {"kdf", "cipher", "nonce", "ciphertext"})
        if fields["cipher"] != CIPHER_NAME:
            raise KeyCryptError(
                f"{where}.cipher: unsupported cipher {fields['cipher']!r} (this version: {CIPHER_NAME})"
            )
        return cls(
            kdf=KdfParams.from_json(fields["kdf"], f"{where}.kdf"),
            nonce=_unb64(fields["nonce"], f"{where}.nonce", NONCE_BYTES),
            ciphertext=_unb64(fields["ciphertext"], f"{where}.ciphertext"),
        )


def seal_seed(
    key: PrivateKey, passphrase: str, associated: bytes, kdf: KdfParams | None = None
) -> SealedSeed:
    """`key`'s seed sealed under `passphrase` (a new salt and nonce each time), bound to
    `associated`."""
    params = kdf if kdf is not None else KdfParams.fresh()
    nonce = os.urandom(NONCE_BYTES)
    ciphertext = ChaCha20Poly1305(params.derive(passphrase)).encrypt(nonce, key.seed, associated)
    return SealedSeed(kdf=params, nonce=nonce, ciphertext=ciphertext)


def open_seed(sealed: SealedSeed, passphrase: str, associated: bytes) -> PrivateKey:
    """The key sealed in `sealed`; WrongPassphrase if `passphrase` or `associated` is not the
    one it was sealed with."""
    try:
        seed = ChaCha20Poly1305(sealed.kdf.derive(passphrase)).decrypt(
            sealed.nonce, sealed.ciphertext, associated
        )
    except InvalidTag:
        raise WrongPassphrase("wrong passphrase") from None
    if len(seed) != SEED_SIZE:
        raise KeyCryptError(f"the sealed key is {len(seed)} bytes, expected {SEED_SIZE}")
    return PrivateKey.from_seed(seed)


# -- armor ------------------------------------------------------------------------------------------


def armor(key: PrivateKey, passphrase: str, kdf: KdfParams | None = None) -> str:
    """`key` as armored text, sealed under `passphrase`."""
    params = kdf if kdf is not None else KdfParams.fresh()
    nonce = os.urandom(NONCE_BYTES)
    values = {
        "type": "ed25519",
        "address": str(key.address),
        "kdf": KDF_NAME,
        "salt": _b64(params.salt),
        "iterations": str(params.iterations),
        "memory-kib": str(params.memory_kib),
        "lanes": str(params.lanes),
        "cipher": CIPHER_NAME,
        "nonce": _b64(nonce),
    }
    headers = [f"{name}: {values[name]}" for name in _ARMOR_HEADERS]
    associated = "\n".join(headers).encode("utf-8")
    ciphertext = ChaCha20Poly1305(params.derive(passphrase)).encrypt(nonce, key.seed, associated)
    body = textwrap.wrap(_b64(ciphertext), 64)
    return "\n".join([ARMOR_BEGIN, *headers, "", *body, ARMOR_END]) + "\n"


def unarmor(text: str, passphrase: str) -> PrivateKey:
    """The key of armored `text`; KeyCryptError if it is malformed (the message says where),
    WrongPassphrase if `passphrase` does not open it or a header was changed."""
    lines = [line.rstrip("\r") for line in text.strip().split("\n")]
    if not lines or lines[0].strip() != ARMOR_BEGIN:
        raise KeyCryptError(f"not an armored derivd key: the first line must be {ARMOR_BEGIN}")
    if lines[-1].strip() != ARMOR_END:
        raise KeyCryptError(f"armored key: the last line must be {ARMOR_END}")
    try:
        blank = lines.index("")
    except ValueError:
        raise KeyCryptError("armored key: no blank line between the headers and the data") from None
    headers = lines[1:blank]
    values: dict[str, str] = {}
    for line in headers:
        name, sep, value = line.partition(": ")
        if not sep or name not in _ARMOR_HEADERS:
            raise KeyCryptError(f"armored key: unknown or malformed header line {line[:40]!r}")
        if name in values:
            raise KeyCryptError(f"armored key: header {name!r} appears twice")
        values[name] = value
    missing = [name for name in _ARMOR_HEADERS if name not in values]
    if missing:
        raise KeyCryptError(f"armored key: missing header(s) {', '.join(missing)}")
    if values["type"] != "ed25519":
        raise KeyCryptError(f"armored key: type {values['type']!r} is not ed25519")
    if values["kdf"] != KDF_NAME or values["cipher"] != CIPHER_NAME:
        raise KeyCryptError(
            f"armored key: unsupported kdf {values['kdf']!r} or cipher {values['cipher']!r} "
            f"(this version: {KDF_NAME}, {CIPHER_NAME})"
        )
    params = KdfParams(
        salt=_unb64(values["salt"], "armored key: salt"),
        iterations=_int_text(values["iterations"], "iterations"),
        memory_kib=_int_text(values["memory-kib"], "memory-kib"),
        lanes=_int_text(values["lanes"], "lanes"),
    ).check("armored key: kdf")
    sealed = SealedSeed(
        kdf=params,
        nonce=_unb64(values["nonce"], "armored key: nonce", NONCE_BYTES),
        ciphertext=_unb64("".join(lines[blank + 1 : -1]), "armored key: data"),
    )
    key = open_seed(sealed, passphrase, "\n".join(headers).encode("utf-8"))
    if str(key.address) != values["address"].lower():
        raise KeyCryptError(f"armored key: the key's address is {key.address}, not {values['address']}")
    return key


# -- JSON and text field helpers --------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _unb64(value: object, where: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise KeyCryptError(f"{where}: must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise KeyCryptError(f"{where}: not valid base64") from None
    if size is not None and len(raw) != size:
        raise KeyCryptError(f"{where}: must be {size} bytes, got {len(raw)}")
    return raw


def _int(value: object, where: str) -> int:
    if type(value) is not int:
        raise KeyCryptError(f"{where}: must be an integer")
    return value


def _int_text(value: str, name: str) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise KeyCryptError(f"armored key: {name}: must be an integer, got {value[:20]!r}")
    return int(value)


def _object(obj: object, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise KeyCryptError(f"{where}: must be an object")
    if set(obj) != keys:
        extra, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
        raise KeyCryptError(f"{where}: unexpected fields {extra} / missing fields {missing}")
    return obj
