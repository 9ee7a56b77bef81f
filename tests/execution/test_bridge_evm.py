"""The bridge's EVM byte forms (`execution.bridge.evm`) against an independent implementation
(eth-account and eth-utils, which web3 uses): recovery, signatures, checksummed addresses; and the
refusals the contract also makes (high s, a v other than 27 or 28, r or s out of range)."""

from __future__ import annotations

from eth_account import Account
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak as reference_keccak
from hypothesis import given
from hypothesis import strategies as st

from execution.bridge.evm import (
    SECP256K1_ORDER,
    address_of_secret,
    deposit_id,
    format_evm_address,
    keccak256,
    parse_evm_address,
    recover_signer,
    sign_digest,
)

secrets = st.integers(1, SECP256K1_ORDER - 1).map(lambda n: n.to_bytes(32, "big"))
digests = st.binary(min_size=32, max_size=32)


@given(secrets, digests)
def test_signatures_recover_as_ethereum_recovers_them(secret: bytes, digest: bytes) -> None:
    signature = sign_digest(secret, digest)
    address = address_of_secret(secret)
    assert format_evm_address(address) == Account.from_key(secret).address
    assert recover_signer(digest, signature) == address
    assert Account._recover_hash(digest, signature=signature) == format_evm_address(address)


@given(st.binary(min_size=20, max_size=20))
def test_checksummed_addresses_are_eip55(address: bytes) -> None:
    text = format_evm_address(address)
    assert text == to_checksum_address(address)
    assert parse_evm_address(text) == parse_evm_address(text.lower()) == address


@given(st.binary(max_size=200))
def test_keccak_is_ethereums(data: bytes) -> None:
    assert keccak256(data) == reference_keccak(data)


def test_signatures_the_contract_refuses_recover_to_nothing() -> None:
    secret, digest = (7).to_bytes(32, "big"), keccak256(b"withdrawal")
    good = sign_digest(secret, digest)
    assert recover_signer(digest, good) == address_of_secret(secret)
    r, s, v = good[:32], int.from_bytes(good[32:64], "big"), good[64]
    twin = r + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([55 - v])  # the same point, high s
    assert Account._recover_hash(digest, vrs=(twin[64], int.from_bytes(r, "big"), SECP256K1_ORDER - s))
    assert recover_signer(digest, twin) is None
    for bad_v in (0, 1, 26, 29, 30):
        assert recover_signer(digest, good[:64] + bytes([bad_v])) is None, bad_v
    assert recover_signer(digest, bytes(32) + good[32:]) is None  # r = 0
    assert recover_signer(digest, SECP256K1_ORDER.to_bytes(32, "big") + good[32:]) is None  # r = n
    assert recover_signer(digest, good[:64]) is None and recover_signer(digest[:31], good) is None


def test_each_log_of_a_transaction_is_its_own_deposit() -> None:
    tx_hash = bytes(range(32))
    ids = {deposit_id(31337, tx_hash, index) for index in range(3)}
    assert len(ids) == 3 and deposit_id(1, tx_hash, 0) not in ids
