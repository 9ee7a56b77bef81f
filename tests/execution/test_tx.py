"""The transaction format: canonical round trips, sign bytes, hashes, and rejection of every
non-canonical or ill-typed form (with the field named), fuzzed with hypothesis."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.tx import (
    MAX_TX_BYTES,
    TX_DOMAIN,
    Transfer,
    Tx,
    UnknownAction,
    build_tx,
    decode_action,
    standard_fee,
    tx_hash,
)
from primitives import codec
from primitives.codec import DecodeError, Value
from primitives.hashing import sha256
from primitives.keys import Address, sign_bytes, verify
from tests.execution.chain import CHAIN_ID, address, key

NONCE = 1_700_000_000_123
PK = key(0).public_key.raw
SIG = bytes(range(64))
TO = address(1).raw


def _pack(fields: list[object]) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


def _fields(**override: object) -> list[object]:
    base: dict[str, object] = {
        "version": 1,
        "signer": PK,
        "nonce": NONCE,
        "fee": 100,
        "actions": [[1, TO, 5]],
        "sig": SIG,
    }
    base.update(override)
    return [base["version"], base["signer"], base["nonce"], base["fee"], base["actions"], base["sig"]]


def test_round_trip_and_layout() -> None:
    raw = build_tx(key(0), CHAIN_ID, NONCE, [Transfer(address(1), 250), Transfer(address(2), 1)])
    tx = Tx.decode(raw)
    assert tx.encode() == raw
    assert tx.version == 1
    assert tx.nonce == NONCE
    assert tx.fee == 200 == standard_fee(tx.actions)  # two transfers at the default schedule
    assert tx.actions == (Transfer(address(1), 250), Transfer(address(2), 1))
    assert tx.sender == key(0).address == Address.from_public_key(PK)
    assert codec.decode(raw) == [
        1,
        PK,
        NONCE,
        200,
        [[1, address(1).raw, 250], [1, address(2).raw, 1]],
        tx.signature,
    ]
    assert tx_hash(raw) == sha256(raw)


def test_sign_payload_and_signed_message() -> None:
    raw = build_tx(key(0), CHAIN_ID, NONCE, [Transfer(address(1), 250)], fee=777)
    tx = Tx.decode(raw)
    payload = codec.encode([1, PK, NONCE, 777, [[1, address(1).raw, 250]]])
    assert tx.sign_payload() == payload
    message = sign_bytes(TX_DOMAIN, CHAIN_ID, payload)
    assert tx.sign_bytes(CHAIN_ID) == message
    assert verify(PK, message, tx.signature)
    assert not verify(PK, sign_bytes(TX_DOMAIN, "other-chain", payload), tx.signature)
    assert tx.signed_item(CHAIN_ID) == (PK, message, tx.signature)


def test_unknown_action_round_trips() -> None:
    fields = _fields(actions=[[1, TO, 5], [42, b"abc", [1, 2]]])
    raw = _pack(fields)
    tx = Tx.decode(raw)
    assert tx.actions[1] == UnknownAction(42, codec.encode([42, b"abc", [1, 2]]))
    assert tx.encode() == raw


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (_pack(_fields(version=2)), "tx.version: unsupported version 2"),
        (_pack(_fields(version=b"\x01")), "tx.version"),
        (_pack(_fields(signer=PK[:31])), "tx.signer: expected 32 bytes"),
        (_pack(_fields(nonce=-1)), "tx.nonce"),
        (_pack(_fields(nonce=b"1")), "tx.nonce: expected an integer"),
        (_pack(_fields(fee=-1)), "tx.fee"),
        (_pack(_fields(fee=2**63)), "tx.fee"),
        (_pack(_fields(fee=b"1")), "tx.fee: expected an integer"),
        (_pack(_fields(actions=b"")), "tx.actions: expected an array"),
        (_pack(_fields(actions=[[]])), "tx.actions[0]: expected at least the action kind"),
        (_pack(_fields(actions=[7])), "tx.actions[0]: expected an array"),
        (_pack(_fields(actions=[[b"\x01", TO, 5]])), "tx.actions[0].kind"),
        (_pack(_fields(actions=[[1, TO, 5], [1, TO[:19], 5]])), "tx.actions[1].to: expected 20 bytes"),
        (_pack(_fields(actions=[[1, TO, -5]])), "tx.actions[0].amount"),
        (_pack(_fields(actions=[[1, TO, b"5"]])), "tx.actions[0].amount: expected an integer"),
        (_pack(_fields(actions=[[1, TO, 5, 0]])), "tx.actions[0]: expected 3 fields, got 4"),
        (_pack(_fields(sig=SIG[:63])), "tx.signature: expected 64 bytes"),
        (_pack(_fields()[:5]), "tx: expected 6 fields, got 5"),
        (_pack([*_fields(), b""]), "tx: expected 6 fields, got 7"),
    ],
)
def test_wrong_field_types_name_the_field(raw: bytes, field: str) -> None:
    with pytest.raises(DecodeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        Tx.decode(raw)


def test_non_canonical_forms_are_rejected() -> None:
    good = _pack(_fields())
    Tx.decode(good)
    parts = [_pack(v) for v in _fields()]  # type: ignore[arg-type]
    long_version = b"\xcc\x01"  # a uint8 where the fixint form exists
    long_nonce = b"\xd3" + NONCE.to_bytes(8, "big")  # an int64 where the uint64 form is canonical
    padded_array = b"\xdc\x00\x06" + b"".join(parts)  # array16 header for 6 items
    for raw in (
        b"\x96" + long_version + b"".join(parts[1:]),
        b"\x96" + parts[0] + parts[1] + long_nonce + b"".join(parts[3:]),
        padded_array,
    ):
        with pytest.raises(DecodeError, match="non-canonical"):
            Tx.decode(raw)
    for raw in (
        good + b"\x00",
        good[:-1],
        msgpack.packb({"version": 1}),
        msgpack.packb(["x", PK, NONCE, 100, [[1, TO, 5]], SIG]),
        msgpack.packb([True, PK, NONCE, 100, [[1, TO, 5]], SIG]),
        msgpack.packb([1, PK, NONCE, 100, [[1, TO, 5]], None]),
        msgpack.packb([1, PK, 1.5, 100, [[1, TO, 5]], SIG]),
        msgpack.packb([1, PK, NONCE, 1.5, [[1, TO, 5]], SIG]),
        msgpack.packb(_fields(), use_bin_type=False),  # bytes as str
    ):
        with pytest.raises(DecodeError):
            Tx.decode(raw)


def test_size_limit() -> None:
    many = [[1, TO, 1]] * 3000
    raw = _pack(_fields(actions=many))
    assert len(raw) > MAX_TX_BYTES
    with pytest.raises(DecodeError, match="exceed the limit"):
        Tx.decode(raw)
    with pytest.raises(ValueError, match="exceeds the limit"):
        build_tx(key(0), CHAIN_ID, NONCE, [Transfer(address(1), 1)] * 3000)


def test_build_tx_checks_integer_ranges() -> None:
    with pytest.raises(ValueError, match="nonce"):
        build_tx(key(0), CHAIN_ID, -1, [Transfer(address(1), 1)])
    with pytest.raises(ValueError, match="amount"):
        build_tx(key(0), CHAIN_ID, 1, [Transfer(address(1), 2**63)])
    with pytest.raises(ValueError, match="fee"):
        build_tx(key(0), CHAIN_ID, 1, [Transfer(address(1), 1)], fee=-1)


@given(st.binary(max_size=300))
def test_random_bytes_decode_or_raise_decode_error(raw: bytes) -> None:
    try:
        tx = Tx.decode(raw)
    except DecodeError:
        return
    assert tx.encode() == raw


def _values() -> st.SearchStrategy[Value]:
    leaves: st.SearchStrategy[Value] = st.one_of(
        st.integers(min_value=-(2**63), max_value=2**64 - 1), st.binary(max_size=70)
    )
    return st.recursive(leaves, lambda inner: st.lists(inner, max_size=6), max_leaves=30)


@given(_values())
def test_random_canonical_values_decode_or_raise_decode_error(value: Value) -> None:
    raw = codec.encode(value)
    try:
        tx = Tx.decode(raw)
    except DecodeError:
        return
    assert tx.encode() == raw


@given(
    version_ok=st.booleans(),
    nonce=st.integers(min_value=0, max_value=2**63 - 1),
    actions=st.lists(
        st.one_of(
            st.tuples(st.just(1), st.binary(min_size=20, max_size=20), st.integers(0, 2**63 - 1)),
            st.tuples(st.integers(19, 2**32), st.binary(max_size=8)),  # kinds 2-18 are known or reserved
        ),
        max_size=5,
    ),
)
def test_envelopes_round_trip(
    version_ok: bool, nonce: int, actions: list[tuple[int, ...] | tuple[int, bytes]]
) -> None:
    raw = _pack(_fields(version=1 if version_ok else 3, nonce=nonce, actions=[list(a) for a in actions]))
    if not version_ok:
        with pytest.raises(DecodeError, match=r"tx\.version"):
            Tx.decode(raw)
        return
    tx = Tx.decode(raw)
    assert tx.encode() == raw
    assert len(tx.actions) == len(actions)


def test_decode_action_dispatches_on_kind() -> None:
    assert decode_action([1, TO, 3], "a") == Transfer(Address(TO), 3)
    assert decode_action([99], "a") == UnknownAction(99, codec.encode([99]))
