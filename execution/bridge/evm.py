"""The bridge's EVM byte forms, exactly as the bridge contract (`evm/contracts/DerivdBridge.sol`)
computes them: keccak-256, ABI words, the digests validators sign, and the secp256k1 recovery of a
signer's EVM address.

Every digest is keccak256 of 32-byte ABI words (`abi.encode` of static types); no EIP-191 prefix:

    domain words   = uint256 evm_chain_id, address contract, bytes32 keccak256(derivd chain id)
    withdrawal     = keccak256(WITHDRAWAL_DOMAIN, domain words, uint256 id, address recipient, uint256 amount)
    valset hash    = keccak256(uint256 nonce, keccak256(addresses as words), keccak256(powers as words))
    valset update  = keccak256(VALSET_DOMAIN, domain words, bytes32 new valset hash)
    pause, unpause = keccak256(PAUSE_DOMAIN or UNPAUSE_DOMAIN, domain words, uint256 pause nonce)
    deposit id     = keccak256(uint256 evm_chain_id, bytes32 tx hash, uint256 log index)

where each *_DOMAIN is keccak256 of its ASCII name. A signature is 65 bytes r || s || v with v 27
or 28 (as Solidity's `ecrecover` takes it); one with s above half the curve order, r or s zero or
not below the order, or another v is refused (`recover_signer` answers None), so each signer has
exactly one valid signature of a digest, as in the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coincurve import PrivateKey as Secp256k1PrivateKey
from coincurve import PublicKey as Secp256k1PublicKey
from Crypto.Hash import keccak

EVM_ADDRESS_SIZE = 20
SIGNATURE_SIZE = 65
SECP256K1_ORDER = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_ORDER = SECP256K1_ORDER // 2
MAX_UINT256 = 2**256 - 1


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


WITHDRAWAL_DOMAIN = keccak256(b"derivd.bridge.withdrawal.v1")
VALSET_DOMAIN = keccak256(b"derivd.bridge.valset.v1")
PAUSE_DOMAIN = keccak256(b"derivd.bridge.pause.v1")
UNPAUSE_DOMAIN = keccak256(b"derivd.bridge.unpause.v1")


def uint_word(value: int) -> bytes:
    """`value` as an ABI uint256 word; ValueError outside [0, 2**256)."""
    if not 0 <= value <= MAX_UINT256:
        raise ValueError(f"{value} is not a uint256")
    return value.to_bytes(32, "big")


def address_word(address: bytes) -> bytes:
    """A 20-byte address as an ABI word (left-padded with zeros)."""
    if len(address) != EVM_ADDRESS_SIZE:
        raise ValueError(f"an EVM address is {EVM_ADDRESS_SIZE} bytes, got {len(address)}")
    return bytes(12) + address


def _bytes32(value: bytes) -> bytes:
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeDomain:
    """What ties a signature to one deployment: the EVM chain, the contract, the derivd chain."""

    evm_chain_id: int
    contract: bytes
    """the bridge contract's 20-byte address"""
    chain_id: str
    """the derivd chain id"""

    def words(self) -> bytes:
        return (
            uint_word(self.evm_chain_id)
            + address_word(self.contract)
            + keccak256(self.chain_id.encode("utf-8"))
        )


def withdrawal_digest(domain: BridgeDomain, withdrawal_id: int, recipient: bytes, amount: int) -> bytes:
    """What validators sign so that `recipient` may claim `amount` token units for `withdrawal_id`."""
    return keccak256(
        WITHDRAWAL_DOMAIN
        + domain.words()
        + uint_word(withdrawal_id)
        + address_word(recipient)
        + uint_word(amount)
    )


def valset_hash(nonce: int, addresses: Sequence[bytes], powers: Sequence[int]) -> bytes:
    """The hash by which the contract knows a validator set (`addresses[i]` has `powers[i]`)."""
    if len(addresses) != len(powers):
        raise ValueError(f"{len(addresses)} addresses but {len(powers)} powers")
    return keccak256(
        uint_word(nonce)
        + keccak256(b"".join(address_word(a) for a in addresses))
        + keccak256(b"".join(uint_word(p) for p in powers))
    )


def valset_digest(domain: BridgeDomain, new_valset_hash: bytes) -> bytes:
    """What the current set signs to make the contract trust the set of `new_valset_hash`."""
    return keccak256(VALSET_DOMAIN + domain.words() + _bytes32(new_valset_hash))


def pause_digest(domain: BridgeDomain, pause_nonce: int) -> bytes:
    """What validators holding > 1/3 of the power sign to pause the contract."""
    return keccak256(PAUSE_DOMAIN + domain.words() + uint_word(pause_nonce))


def unpause_digest(domain: BridgeDomain, pause_nonce: int) -> bytes:
    """What validators holding > 2/3 of the power sign to unpause the contract."""
    return keccak256(UNPAUSE_DOMAIN + domain.words() + uint_word(pause_nonce))


def deposit_id(evm_chain_id: int, tx_hash: bytes, log_index: int) -> bytes:
    """The 32-byte identity of one deposit event on the EVM chain."""
    return keccak256(uint_word(evm_chain_id) + _bytes32(tx_hash) + uint_word(log_index))


def evm_address(public_key: Secp256k1PublicKey) -> bytes:
    """The EVM address of a secp256k1 public key: the last 20 bytes of keccak256 of its 64-byte form."""
    return keccak256(public_key.format(compressed=False)[1:])[-EVM_ADDRESS_SIZE:]


def address_of_secret(secret: bytes) -> bytes:
    """The EVM address of a 32-byte secp256k1 secret key."""
    return evm_address(Secp256k1PrivateKey(secret).public_key)


def sign_digest(secret: bytes, digest: bytes) -> bytes:
    """The 65-byte signature (r || s || v, v 27 or 28, low s) of a 32-byte digest."""
    raw = Secp256k1PrivateKey(secret).sign_recoverable(_bytes32(digest), hasher=None)
    return raw[:64] + bytes([27 + raw[64]])


def recover_signer(digest: bytes, signature: bytes) -> bytes | None:
    """The EVM address that signed `digest`, or None for a signature the contract would refuse."""
    if len(digest) != 32 or len(signature) != SIGNATURE_SIZE:
        return None
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if not (0 < r < SECP256K1_ORDER and 0 < s <= HALF_ORDER and v in (27, 28)):
        return None
    try:
        public_key = Secp256k1PublicKey.from_signature_and_message(
            signature[:64] + bytes([v - 27]), digest, hasher=None
        )
    except ValueError:
        return None
    return evm_address(public_key)


def parse_evm_address(text: str) -> bytes:
    """A 0x-prefixed 40-hex-digit address (any case); ValueError otherwise."""
    if not (isinstance(text, str) and len(text) == 42 and text[:2] in ("0x", "0X")):
        raise ValueError(f"an EVM address is 0x and 40 hex digits, got {text!r}")
    try:
        return bytes.fromhex(text[2:])
    except ValueError:
        raise ValueError(f"an EVM address is 0x and 40 hex digits, got {text!r}") from None


def format_evm_address(address: bytes) -> str:
    """The EIP-55 mixed-case checksum form of a 20-byte address."""
    hex_lower = address.hex()
    hashed = keccak256(hex_lower.encode("ascii")).hex()
    return "0x" + "".join(c.upper() if int(hashed[i], 16) >= 8 else c for i, c in enumerate(hex_lower))
