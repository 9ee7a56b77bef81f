"""Account keys from a BIP-39 mnemonic: the mnemonic's words and checksum (Trezor's `mnemonic`
package), its seed, and SLIP-0010 Ed25519 derivation along a BIP-44 path.

derivd's path is `m/44'/118'/<account>'/0'/<index>'`: BIP-44's shape with Cosmos's coin type 118
(derivd has no SLIP-0044 number of its own), every level hardened because SLIP-0010 defines only
hardened derivation for Ed25519. The curve key of SLIP-0010 ("ed25519 seed") differs from BIP-32's,
so a mnemonic also used in a Cosmos (secp256k1) wallet gives a different key here.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import unicodedata
from dataclasses import dataclass

from mnemonic import Mnemonic

from primitives.keys import PrivateKey

MNEMONIC_WORDS = 24
ENTROPY_BYTES = 32  # 256 bits: 24 words
COIN_TYPE = 118
HARDENED = 0x8000_0000
_CURVE_KEY = b"ed25519 seed"
_VALID_WORD_COUNTS = (12, 15, 18, 21, 24)
_ENGLISH = Mnemonic("english")


class MnemonicError(ValueError):
    """A mnemonic that is not a valid BIP-39 English phrase; the message says why in one line
    and never repeats the phrase."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ExtendedKey:
    """A SLIP-0010 node: the Ed25519 seed (private key) and the chain code."""

    key: bytes
    chain_code: bytes


def new_mnemonic() -> str:
    """A fresh 24-word mnemonic (256 bits from the operating system's randomness)."""
    return _ENGLISH.to_mnemonic(secrets.token_bytes(ENTROPY_BYTES))


def normalize_mnemonic(text: str) -> str:
    """`text` as a checked BIP-39 English mnemonic, its words lower-case and single-spaced;
    MnemonicError if the word count, a word or the checksum is wrong."""
    words = unicodedata.normalize("NFKD", text).lower().split()
    if len(words) not in _VALID_WORD_COUNTS:
        raise MnemonicError(f"a mnemonic has 12, 15, 18, 21 or 24 words, got {len(words)}")
    known = set(_ENGLISH.wordlist)
    for position, word in enumerate(words, start=1):
        if word not in known:
            raise MnemonicError(f"word {position} is not in the BIP-39 English word list")
    phrase = " ".join(words)
    if not _ENGLISH.check(phrase):
        raise MnemonicError("the mnemonic's checksum does not match (a word is wrong or misplaced)")
    return phrase


def mnemonic_seed(mnemonic: str, passphrase: str = "") -> bytes:
    """BIP-39's 64-byte seed of a checked mnemonic (PBKDF2-HMAC-SHA512, 2048 rounds)."""
    return Mnemonic.to_seed(normalize_mnemonic(mnemonic), passphrase)


def master_key(seed: bytes) -> ExtendedKey:
    """SLIP-0010's Ed25519 master node of a seed (16 to 64 bytes)."""
    digest = hmac.digest(_CURVE_KEY, seed, hashlib.sha512)
    return ExtendedKey(key=digest[:32], chain_code=digest[32:])


def derive_child(parent: ExtendedKey, index: int) -> ExtendedKey:
    """The hardened child `index` (>= 2**31) of `parent`; Ed25519 has no other kind."""
    if not HARDENED <= index <= 0xFFFF_FFFF:
        raise ValueError(f"Ed25519 derivation is hardened only: index {index} is not in [2**31, 2**32)")
    data = b"\x00" + parent.key + index.to_bytes(4, "big")
    digest = hmac.digest(parent.chain_code, data, hashlib.sha512)
    return ExtendedKey(key=digest[:32], chain_code=digest[32:])


def parse_path(path: str) -> tuple[int, ...]:
    """The indexes of a path like "m/44'/118'/0'/0'/0'" (hardened levels as index + 2**31);
    ValueError if a level is malformed or not hardened."""
    parts = path.split("/")
    if parts[0] != "m":
        raise ValueError(f"a derivation path starts with 'm': {path!r}")
    indexes: list[int] = []
    for part in parts[1:]:
        body = part[:-1] if part.endswith(("'", "H", "h")) else ""
        if not body.isdigit() or int(body) >= HARDENED:
            raise ValueError(f"every level of an Ed25519 path is a hardened index like 44': {part!r}")
        indexes.append(int(body) + HARDENED)
    return tuple(indexes)


def derive_path(seed: bytes, path: str) -> ExtendedKey:
    """The node at `path` below the master node of `seed`."""
    node = master_key(seed)
    for index in parse_path(path):
        node = derive_child(node, index)
    return node


def account_path(account: int = 0, index: int = 0) -> str:
    """derivd's BIP-44 path of an account key: m/44'/118'/<account>'/0'/<index>'."""
    for name, value in (("account", account), ("index", index)):
        if not 0 <= value < HARDENED:
            raise ValueError(f"{name} must be in [0, {HARDENED - 1}], got {value}")
    return f"m/44'/{COIN_TYPE}'/{account}'/0'/{index}'"


def key_from_mnemonic(mnemonic: str, account: int = 0, index: int = 0) -> PrivateKey:
    """The Ed25519 account key of `mnemonic` (no BIP-39 passphrase) at `account_path`."""
    return PrivateKey.from_seed(derive_path(mnemonic_seed(mnemonic), account_path(account, index)).key)
