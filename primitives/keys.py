"""Ed25519 keys (PyNaCl), addresses and signatures with a domain tag and the chain id.

An address is the first 20 bytes of SHA-256 of the 32-byte public key; its text form is lower-case
hex (parsing accepts either case). Every signature in derivd is over `sign_bytes(domain, chain_id,
payload)`, so a signature made for one purpose or one chain is never valid for another.
Validity is libsodium's strict Ed25519 verification and nothing else (see `verify`).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import nacl.bindings
from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from primitives.codec import encode
from primitives.hashing import sha256

PUBLIC_KEY_SIZE = 32
SEED_SIZE = 32
SIGNATURE_SIZE = 64
ADDRESS_SIZE = 20


def sign_bytes(domain: bytes, chain_id: str, payload: bytes) -> bytes:
    """The bytes actually signed: the canonical array [domain, chain id, payload]."""
    return encode([domain, chain_id.encode("utf-8"), payload])


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """libsodium's strict Ed25519 check: crypto_sign_open, which runs
    crypto_sign_verify_detached. Called through PyNaCl's cffi library object directly: the
    same C function PyNaCl's binding calls, minus the Python work that holds the GIL, so that
    the batch verifier's threads run in parallel."""
    if len(public_key) != PUBLIC_KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    signed = signature + message
    out = _ffi.new("unsigned char[]", len(signed))
    out_len = _ffi.new("unsigned long long *")
    return bool(_lib.crypto_sign_open(out, out_len, signed, len(signed), public_key) == 0)


@dataclass(frozen=True, slots=True)
class Address:
    """20-byte account or validator address."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != ADDRESS_SIZE:
            raise ValueError(f"an address is {ADDRESS_SIZE} bytes, got {len(self.raw)}")

    @classmethod
    def from_public_key(cls, public_key: bytes) -> Address:
        return cls(sha256(public_key)[:ADDRESS_SIZE])

    @classmethod
    def parse(cls, text: str) -> Address:
        """Parse 40 hex digits (an optional 0x prefix is allowed)."""
        body = text[2:] if text.startswith(("0x", "0X")) else text
        if len(body) != 2 * ADDRESS_SIZE:
            raise ValueError(f"an address is {2 * ADDRESS_SIZE} hex digits, got {len(body)}: {text!r}")
        try:
            return cls(bytes.fromhex(body))
        except ValueError as exc:
            raise ValueError(f"an address is hex digits: {text!r}") from exc

    def __str__(self) -> str:
        return self.raw.hex()

    def upper(self) -> str:
        """Upper-case hex, as CometBFT shows validator addresses."""
        return self.raw.hex().upper()


@dataclass(frozen=True, slots=True)
class PublicKey:
    """Ed25519 public key."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != PUBLIC_KEY_SIZE:
            raise ValueError(f"a public key is {PUBLIC_KEY_SIZE} bytes, got {len(self.raw)}")

    @property
    def address(self) -> Address:
        return Address.from_public_key(self.raw)

    def verify(self, message: bytes, signature: bytes) -> bool:
        return verify(self.raw, message, signature)


@dataclass(frozen=True, slots=True, repr=False)
class PrivateKey:
    """Ed25519 private key, kept as its 32-byte seed."""

    seed: bytes
    _secret: bytes
    public_key: PublicKey

    @classmethod
    def from_seed(cls, seed: bytes) -> PrivateKey:
        if len(seed) != SEED_SIZE:
            raise ValueError(f"an Ed25519 seed is {SEED_SIZE} bytes, got {len(seed)}")
        public, secret = nacl.bindings.crypto_sign_seed_keypair(seed)
        return cls(seed, secret, PublicKey(public))

    @classmethod
    def generate(cls) -> PrivateKey:
        """A new key from the operating system's randomness (key generation, not state)."""
        return cls.from_seed(secrets.token_bytes(SEED_SIZE))

    @classmethod
    def from_cometbft_bytes(cls, data: bytes) -> PrivateKey:
        """CometBFT's 64-byte form (seed || public key); the public half must match."""
        if len(data) != SEED_SIZE + PUBLIC_KEY_SIZE:
            raise ValueError(f"an Ed25519 private key is 64 bytes, got {len(data)}")
        key = cls.from_seed(data[:SEED_SIZE])
        if key.public_key.raw != data[SEED_SIZE:]:
            raise ValueError("the private key's public half does not match its seed")
        return key

    def cometbft_bytes(self) -> bytes:
        """seed || public key, CometBFT's `priv_key.value`."""
        return self.seed + self.public_key.raw

    @property
    def address(self) -> Address:
        return self.public_key.address

    def sign(self, message: bytes) -> bytes:
        """Detached Ed25519 signature of `message`."""
        return nacl.bindings.crypto_sign(message, self._secret)[:SIGNATURE_SIZE]

    def __repr__(self) -> str:
        return f"PrivateKey(address={self.address})"
