"""Tests of primitives.keys: Ed25519 keys, strict verification, addresses and domain-tagged signing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.codec import encode
from primitives.keys import (
    ADDRESS_SIZE,
    PUBLIC_KEY_SIZE,
    SEED_SIZE,
    SIGNATURE_SIZE,
    Address,
    PrivateKey,
    PublicKey,
    sign_bytes,
    verify,
)

# Ed25519 group order
L = 2**252 + 27742317777372353535851937790883648493

# RFC 8032 section 7.1, TEST 1 and TEST 2
RFC8032 = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]

# Encodings of points of small order (the identity first); libsodium refuses them as public keys.
SMALL_ORDER_KEYS = [
    bytes(32),
    b"\x01" + bytes(31),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]

KEY = PrivateKey.from_seed(bytes(range(32)))
OTHER = PrivateKey.from_seed(bytes(range(1, 33)))


# -- sign and verify ----------------------------------------------------------------------------


@pytest.mark.parametrize(("seed", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(seed: str, public: str, message: str, signature: str) -> None:
    key = PrivateKey.from_seed(bytes.fromhex(seed))
    assert key.public_key.raw.hex() == public
    assert key.sign(bytes.fromhex(message)).hex() == signature
    assert verify(bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature))


@settings(max_examples=50)
@given(st.binary(min_size=SEED_SIZE, max_size=SEED_SIZE), st.binary(max_size=200))
def test_sign_then_verify(seed: bytes, message: bytes) -> None:
    key = PrivateKey.from_seed(seed)
    signature = key.sign(message)
    assert len(signature) == SIGNATURE_SIZE
    assert verify(key.public_key.raw, message, signature)
    assert key.public_key.verify(message, signature)
    # Ed25519 is deterministic
    assert key.sign(message) == signature


@settings(max_examples=50)
@given(st.binary(max_size=100), st.data())
def test_verify_rejects_modified_message(message: bytes, data: st.DataObject) -> None:
    signature = KEY.sign(message)
    if message:
        pos = data.draw(st.integers(0, len(message) - 1))
        flipped = bytearray(message)
        flipped[pos] ^= 1 << data.draw(st.integers(0, 7))
        assert not verify(KEY.public_key.raw, bytes(flipped), signature)
        assert not verify(KEY.public_key.raw, message[:-1], signature)
    assert not verify(KEY.public_key.raw, message + b"\x00", signature)


@settings(max_examples=100)
@given(st.integers(0, 8 * SIGNATURE_SIZE - 1))
def test_verify_rejects_modified_signature(bit: int) -> None:
    message = b"transfer 100 to bob"
    signature = bytearray(KEY.sign(message))
    signature[bit // 8] ^= 1 << (bit % 8)
    assert not verify(KEY.public_key.raw, message, bytes(signature))


def test_verify_rejects_wrong_key() -> None:
    message = b"vote"
    signature = KEY.sign(message)
    assert not verify(OTHER.public_key.raw, message, signature)
    assert not OTHER.public_key.verify(message, signature)
    assert verify(KEY.public_key.raw, message, signature)


@pytest.mark.parametrize(("key_size", "sig_size"), [(31, 64), (33, 64), (0, 64), (32, 63), (32, 65), (32, 0)])
def test_verify_rejects_wrong_lengths(key_size: int, sig_size: int) -> None:
    message = b"m"
    signature = KEY.sign(message)
    public = KEY.public_key.raw
    assert not verify((public + b"\x00")[:key_size], message, (signature + b"\x00")[:sig_size])


def test_verify_rejects_signature_with_appended_message_bytes() -> None:
    # the detached check must not accept a 64-byte prefix followed by part of the message
    message = b"abcdef"
    signature = KEY.sign(message)
    assert not verify(KEY.public_key.raw, message[3:], signature + message[:3])


def test_verify_rejects_non_canonical_s() -> None:
    message = b"malleable?"
    signature = KEY.sign(message)
    s = int.from_bytes(signature[32:], "little")
    assert s < L
    assert s + L < 2**256
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    assert not verify(KEY.public_key.raw, message, malleated)
    # also with the highest bits set so the scalar is far out of range
    assert not verify(KEY.public_key.raw, message, signature[:32] + b"\xff" * 32)


@pytest.mark.parametrize("public", SMALL_ORDER_KEYS, ids=lambda b: b.hex()[:8])
def test_verify_rejects_small_order_public_keys(public: bytes) -> None:
    # With a small-order key A and R = identity, s = 0, the equation [s]B = R + [k]A holds for
    # every message whose challenge k is a multiple of A's order; for the identity key it holds
    # for every message. Only the strict small-order check rejects these.
    identity = b"\x01" + bytes(31)
    for message in (b"", b"anything", b"\x00" * 64):
        assert not verify(public, message, identity + bytes(32))
        assert not verify(public, message, KEY.sign(message))


def test_verify_rejects_non_canonical_public_key() -> None:
    # y = p (2**255 - 19) is a non-canonical encoding of y = 0
    p = 2**255 - 19
    assert not verify(p.to_bytes(32, "little"), b"m", KEY.sign(b"m"))


def test_verify_rejects_small_order_r() -> None:
    message = b"m"
    signature = KEY.sign(message)
    assert not verify(KEY.public_key.raw, message, b"\x01" + bytes(31) + signature[32:])


# -- sign_bytes ---------------------------------------------------------------------------------


def test_sign_bytes_layout() -> None:
    assert sign_bytes(b"vote", "chain-1", b"\x01\x02") == encode([b"vote", b"chain-1", b"\x01\x02"])
    assert sign_bytes(b"vote", "c", b"p") == b"\x93\xc4\x04vote\xc4\x01c\xc4\x01p"
    assert sign_bytes(b"d", "ü", b"") == b"\x93\xc4\x01d\xc4\x02\xc3\xbc\xc4\x00"


def test_sign_bytes_domain_separation() -> None:
    payload = b"payload"
    base = sign_bytes(b"vote", "chain-A", payload)
    other_domain = sign_bytes(b"proposal", "chain-A", payload)
    other_chain = sign_bytes(b"vote", "chain-B", payload)
    assert len({base, other_domain, other_chain}) == 3
    signature = KEY.sign(base)
    assert KEY.public_key.verify(base, signature)
    assert not KEY.public_key.verify(other_domain, signature)
    assert not KEY.public_key.verify(other_chain, signature)
    assert not KEY.public_key.verify(payload, signature)


def test_sign_bytes_fields_do_not_run_together() -> None:
    assert sign_bytes(b"ab", "c", b"d") != sign_bytes(b"a", "bc", b"d")
    assert sign_bytes(b"a", "bc", b"d") != sign_bytes(b"a", "b", b"cd")
    assert sign_bytes(b"", "", b"x") != sign_bytes(b"x", "", b"")


triples = st.tuples(
    st.binary(max_size=4), st.sampled_from(["", "a", "ab", "b", "é", "chain-1"]), st.binary(max_size=4)
)


@settings(max_examples=150)
@given(triples, triples)
def test_sign_bytes_is_injective(a: tuple[bytes, str, bytes], b: tuple[bytes, str, bytes]) -> None:
    if a == b:
        assert sign_bytes(*a) == sign_bytes(*b)
    else:
        assert sign_bytes(*a) != sign_bytes(*b)


# -- addresses ----------------------------------------------------------------------------------


@settings(max_examples=100)
@given(st.binary(min_size=ADDRESS_SIZE, max_size=ADDRESS_SIZE))
def test_address_text_round_trip(raw: bytes) -> None:
    address = Address(raw)
    text = str(address)
    assert text == raw.hex()
    assert text == text.lower()
    assert len(text) == 2 * ADDRESS_SIZE
    assert Address.parse(text) == address
    assert Address.parse("0x" + text) == address
    assert Address.parse("0X" + text) == address
    assert Address.parse(text.upper()) == address
    assert Address.parse("0x" + text.upper()) == address
    assert address.upper() == text.upper()


def test_address_from_public_key() -> None:
    public = KEY.public_key.raw
    expected = hashlib.sha256(public).digest()[:20]
    assert Address.from_public_key(public).raw == expected
    assert KEY.public_key.address.raw == expected
    assert KEY.address.raw == expected
    assert OTHER.address != KEY.address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "0x",
        "00" * 19,
        "00" * 21,
        "0" * 39,
        "0" * 41,
        "0x" + "00" * 19,
        "0x" + "00" * 21,
        "0x0x" + "00" * 18,
    ],
)
def test_address_parse_rejects_wrong_length(text: str) -> None:
    with pytest.raises(ValueError, match="40 hex digits"):
        Address.parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "zz" * 20,
        "0g" + "00" * 19,
        "00" * 19 + "-1",
        "00" * 19 + " 0",
        " " + "0" * 39,
        "00" * 19 + "é0",
        "0x" + "xx" * 20,
    ],
)
def test_address_parse_rejects_non_hex(text: str) -> None:
    with pytest.raises(ValueError):
        Address.parse(text)


@pytest.mark.parametrize("size", [0, 19, 21, 32])
def test_address_rejects_wrong_raw_length(size: int) -> None:
    with pytest.raises(ValueError, match="20 bytes"):
        Address(bytes(size))


def test_address_is_hashable_value() -> None:
    a = Address(bytes(20))
    assert a == Address(bytes(20))
    assert len({a, Address(bytes(20)), Address(b"\x01" * 20)}) == 2


# -- key types ------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_public_key_rejects_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PublicKey(bytes(size))


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_from_seed_rejects_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        PrivateKey.from_seed(bytes(size))


def test_from_seed_is_deterministic() -> None:
    seed = b"\x42" * 32
    a, b = PrivateKey.from_seed(seed), PrivateKey.from_seed(seed)
    assert a.public_key == b.public_key
    assert a.seed == seed
    assert a.sign(b"msg") == b.sign(b"msg")
    assert PrivateKey.from_seed(b"\x43" * 32).public_key != a.public_key


def test_generate_gives_distinct_working_keys() -> None:
    a, b = PrivateKey.generate(), PrivateKey.generate()
    assert a.seed != b.seed
    assert len(a.seed) == SEED_SIZE
    assert len(a.public_key.raw) == PUBLIC_KEY_SIZE
    assert a.public_key.verify(b"x", a.sign(b"x"))
    assert PrivateKey.from_seed(a.seed).public_key == a.public_key


@settings(max_examples=30)
@given(st.binary(min_size=SEED_SIZE, max_size=SEED_SIZE))
def test_cometbft_bytes_round_trip(seed: bytes) -> None:
    key = PrivateKey.from_seed(seed)
    raw = key.cometbft_bytes()
    assert len(raw) == 64
    assert raw == seed + key.public_key.raw
    again = PrivateKey.from_cometbft_bytes(raw)
    assert again.seed == seed
    assert again.public_key == key.public_key
    assert again.sign(b"m") == key.sign(b"m")


def test_cometbft_bytes_rfc8032_layout() -> None:
    seed, public, _, _ = RFC8032[0]
    key = PrivateKey.from_cometbft_bytes(bytes.fromhex(seed + public))
    assert key.public_key.raw.hex() == public


def test_from_cometbft_bytes_rejects_mismatched_public_half() -> None:
    raw = KEY.seed + OTHER.public_key.raw
    with pytest.raises(ValueError, match="does not match"):
        PrivateKey.from_cometbft_bytes(raw)
    flipped = bytearray(KEY.cometbft_bytes())
    flipped[-1] ^= 1
    with pytest.raises(ValueError, match="does not match"):
        PrivateKey.from_cometbft_bytes(bytes(flipped))


@pytest.mark.parametrize("size", [0, 32, 63, 65, 96])
def test_from_cometbft_bytes_rejects_wrong_length(size: int) -> None:
    with pytest.raises(ValueError, match="64 bytes"):
        PrivateKey.from_cometbft_bytes(bytes(size))


def test_private_key_repr_hides_the_seed() -> None:
    text = repr(KEY)
    assert str(KEY.address) in text
    assert KEY.seed.hex() not in text
    assert repr(KEY.seed) not in text
    assert KEY.cometbft_bytes().hex() not in text
