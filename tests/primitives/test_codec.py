"""Tests of primitives.codec: the canonical encoding, its strict decoder and the field helpers."""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.codec import (
    DEFAULT_MAX_SIZE,
    INT_MAX,
    INT_MIN,
    DecodeError,
    Value,
    decode,
    encode,
    field_bool,
    field_bytes,
    field_int,
    field_list,
    field_text,
)

MAX_DEPTH = 32

# -- strategies ---------------------------------------------------------------------------------

_BOUNDARY_INTS = [
    INT_MIN,
    INT_MIN + 1,
    -(2**31) - 1,
    -(2**31),
    -(2**15) - 1,
    -(2**15),
    -129,
    -128,
    -33,
    -32,
    -1,
    0,
    1,
    127,
    128,
    255,
    256,
    2**16 - 1,
    2**16,
    2**32 - 1,
    2**32,
    2**63 - 1,
    2**63,
    INT_MAX,
]

ints = st.one_of(st.integers(INT_MIN, INT_MAX), st.sampled_from(_BOUNDARY_INTS), st.integers(-40, 300))
_HEADER_EDGE_SIZES = [0, 1, 31, 32, 33, 255, 256, 257, 2**16 - 1, 2**16, 2**16 + 1]
byte_strings = st.one_of(
    st.binary(max_size=40),
    st.tuples(st.sampled_from(_HEADER_EDGE_SIZES), st.integers(0, 255)).map(lambda t: bytes([t[1]]) * t[0]),
)


def _depth(value: Value) -> int:
    """Nesting depth as the codec counts it: a scalar at the top is 0, each array adds one."""
    if isinstance(value, list | tuple):
        return 1 + max((_depth(item) for item in value), default=-1)
    return 0


values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(ints, st.binary(max_size=40)),
    lambda children: st.one_of(
        st.lists(children, max_size=6),
        st.lists(children, max_size=6).map(tuple),
        st.lists(children, min_size=15, max_size=17),
    ),
    max_leaves=40,
).filter(lambda v: _depth(v) <= MAX_DEPTH)


def _as_lists(value: Value) -> Value:
    """The value decode returns for `value`: tuples become lists."""
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    return value


# -- a reference MessagePack writer that may choose wider (non-canonical) headers ---------------


def _int_forms(value: int) -> list[bytes]:
    """Every MessagePack encoding of `value`, the canonical (shortest, msgpack-python's) first."""
    forms: list[bytes] = []
    if 0 <= value <= 0x7F:
        forms.append(bytes([value]))
    if -32 <= value < 0:
        forms.append(struct.pack(">b", value))
    if value >= 0:
        for code, fmt, hi in (
            (0xCC, ">B", 2**8),
            (0xCD, ">H", 2**16),
            (0xCE, ">I", 2**32),
            (0xCF, ">Q", 2**64),
        ):
            if value < hi:
                forms.append(bytes([code]) + struct.pack(fmt, value))
    for code, fmt, bits in ((0xD0, ">b", 8), (0xD1, ">h", 16), (0xD2, ">i", 32), (0xD3, ">q", 64)):
        if -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            forms.append(bytes([code]) + struct.pack(fmt, value))
    return forms


def _bin_headers(length: int) -> list[bytes]:
    headers: list[bytes] = []
    if length < 2**8:
        headers.append(bytes([0xC4, length]))
    if length < 2**16:
        headers.append(b"\xc5" + struct.pack(">H", length))
    headers.append(b"\xc6" + struct.pack(">I", length))
    return headers


def _array_headers(length: int) -> list[bytes]:
    headers: list[bytes] = []
    if length < 16:
        headers.append(bytes([0x90 | length]))
    if length < 2**16:
        headers.append(b"\xdc" + struct.pack(">H", length))
    headers.append(b"\xdd" + struct.pack(">I", length))
    return headers


def _wide_encode(value: Value, choose: Callable[[int], int]) -> bytes:
    """MessagePack of `value`, each header picked by `choose(options) -> index`."""
    if isinstance(value, int):
        forms = _int_forms(value)
        return forms[choose(len(forms))]
    if isinstance(value, bytes):
        headers = _bin_headers(len(value))
        return headers[choose(len(headers))] + value
    headers = _array_headers(len(value))
    return headers[choose(len(headers))] + b"".join(_wide_encode(item, choose) for item in value)


def _canonical(value: Value) -> bytes:
    return _wide_encode(value, lambda _n: 0)


# -- round trip ---------------------------------------------------------------------------------


@settings(max_examples=150)
@given(values)
def test_round_trip(value: Value) -> None:
    data = encode(value)
    assert data == _canonical(value)
    assert decode(data) == _as_lists(value)
    assert encode(decode(data)) == data


@given(ints)
def test_int_round_trip_full_range(value: int) -> None:
    data = encode(value)
    assert data == _int_forms(value)[0]
    assert decode(data) == value


@pytest.mark.parametrize("value", _BOUNDARY_INTS)
def test_boundary_ints(value: int) -> None:
    assert decode(encode(value)) == value


@given(byte_strings)
@settings(max_examples=40)
def test_bytes_round_trip_across_header_sizes(value: bytes) -> None:
    data = encode(value)
    assert data == _canonical(value)
    assert decode(data) == value


def test_known_encodings() -> None:
    assert encode(0) == b"\x00"
    assert encode(-1) == b"\xff"
    assert encode(128) == b"\xcc\x80"
    assert encode(-33) == b"\xd0\xdf"
    assert encode(INT_MAX) == b"\xcf" + b"\xff" * 8
    assert encode(INT_MIN) == b"\xd3\x80" + b"\x00" * 7
    assert encode(b"") == b"\xc4\x00"
    assert encode(b"ab") == b"\xc4\x02ab"
    assert encode([]) == b"\x90"
    assert encode(()) == b"\x90"
    assert encode([1, [b"x"], ()]) == b"\x93\x01\x91\xc4\x01x\x90"


def test_decode_returns_lists_for_tuples() -> None:
    assert decode(encode((1, (2, b"z")))) == [1, [2, b"z"]]


# -- decode rejects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x01\x00", id="int-then-trailing"),
        pytest.param(b"\x90\x90", id="array-then-trailing"),
        pytest.param(b"\xc4\x01ab", id="bin-then-trailing"),
        pytest.param(encode([1, 2]) + b"\x00", id="list-then-zero"),
    ],
)
def test_decode_rejects_trailing_bytes(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\x80", "empty fixmap"),
        (b"\x81\x01\x02", "fixmap int key"),
        (b"\x81\xc4\x01a\x01", "fixmap bin key"),
        (b"\xde\x00\x00", "map16"),
        (b"\xdf\x00\x00\x00\x00", "map32"),
        (b"\xa0", "empty fixstr"),
        (b"\xa1a", "fixstr"),
        (b"\xd9\x00", "str8 empty"),
        (b"\xd9\x01a", "str8"),
        (b"\xda\x00\x01a", "str16"),
        (b"\xdb\x00\x00\x00\x01a", "str32"),
        (b"\xca\x00\x00\x00\x00", "float32"),
        (b"\xcb" + struct.pack(">d", 1.5), "float64"),
        (b"\xc0", "nil"),
        (b"\xc2", "false"),
        (b"\xc3", "true"),
        (b"\x91\xc0", "nil in array"),
        (b"\x92\x01\xc3", "true in array"),
        (b"\x91\x80", "map in array"),
        (b"\xd4\x01\x00", "fixext1"),
        (b"\xd5\x01\x00\x00", "fixext2"),
        (b"\xd6\xff\x00\x00\x00\x00", "fixext4 timestamp"),
        (b"\xd7\xff" + b"\x00" * 8, "fixext8 timestamp"),
        (b"\xd8\x01" + b"\x00" * 16, "fixext16"),
        (b"\xc7\x00\x05", "ext8 empty"),
        (b"\xc7\x01\x05\x00", "ext8"),
        (b"\xc8\x00\x01\x05\x00", "ext16"),
        (b"\xc9\x00\x00\x00\x01\x05\x00", "ext32"),
        (b"\xc1", "never used"),
    ],
)
def test_decode_rejects_non_canonical_kinds(data: bytes, kind: str) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xcc\x05", id="uint8-5"),
        pytest.param(b"\xcc\x00", id="uint8-0"),
        pytest.param(b"\xcc\x7f", id="uint8-127"),
        pytest.param(b"\xcd\x00\xff", id="uint16-255"),
        pytest.param(b"\xcd\x00\x05", id="uint16-5"),
        pytest.param(b"\xce\x00\x00\xff\xff", id="uint32-65535"),
        pytest.param(b"\xcf\x00\x00\x00\x00\xff\xff\xff\xff", id="uint64-2**32-1"),
        pytest.param(b"\xd0\x05", id="int8-5"),
        pytest.param(b"\xd0\x00", id="int8-0"),
        pytest.param(b"\xd0\x7f", id="int8-127"),
        pytest.param(b"\xd1\x00\x80", id="int16-128"),
        pytest.param(b"\xd0\xff", id="int8--1"),
        pytest.param(b"\xd0\xe0", id="int8--32"),
        pytest.param(b"\xd1\xff\x80", id="int16--128"),
        pytest.param(b"\xd2\xff\xff\x80\x00", id="int32--32768"),
        pytest.param(b"\xd3\xff\xff\xff\xff\x80\x00\x00\x00", id="int64--2**31"),
        pytest.param(b"\xd3\x7f\xff\xff\xff\xff\xff\xff\xff", id="int64-2**63-1"),
    ],
)
def test_decode_rejects_non_minimal_ints(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xc5\x00\x03abc", id="bin16-3"),
        pytest.param(b"\xc6\x00\x00\x00\x03abc", id="bin32-3"),
        pytest.param(b"\xc5\x00\x00", id="bin16-0"),
        pytest.param(b"\xc6\x00\x00\x01\x00" + b"x" * 256, id="bin32-256"),
        pytest.param(b"\xdc\x00\x02\x01\x02", id="array16-2"),
        pytest.param(b"\xdd\x00\x00\x00\x02\x01\x02", id="array32-2"),
        pytest.param(b"\xdc\x00\x00", id="array16-0"),
        pytest.param(b"\xdd\x00\x00\x00\x10" + b"\x00" * 16, id="array32-16"),
        pytest.param(b"\x91\xc5\x00\x01a", id="nested-bin16"),
        pytest.param(b"\x91\xdc\x00\x00", id="nested-array16"),
    ],
)
def test_decode_rejects_non_minimal_lengths(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_minimal_wide_headers_are_accepted() -> None:
    assert decode(b"\xc5\x01\x00" + b"y" * 256) == b"y" * 256
    assert decode(b"\xdc\x00\x10" + b"\x00" * 16) == [0] * 16
    assert decode(b"\xcd\x01\x00") == 256
    assert decode(b"\xd0\xdf") == -33


@settings(max_examples=100)
@given(values, st.randoms(use_true_random=False))
def test_decode_accepts_only_the_shortest_form(value: Value, rnd: random.Random) -> None:
    data = _wide_encode(value, rnd.randrange)
    if data == encode(value):
        assert decode(data) == _as_lists(value)
    else:
        with pytest.raises(DecodeError):
            decode(data)


@settings(max_examples=40)
@given(values.filter(lambda v: len(encode(v)) > 1))
def test_decode_rejects_every_truncation(value: Value) -> None:
    data = encode(value)
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])


@pytest.mark.parametrize(
    "data",
    [b"", b"\xcc", b"\xcd\x01", b"\xcf\x00", b"\xc4\x05ab", b"\x92\x01", b"\xdc\x00", b"\xc6\x00\x00"],
)
def test_decode_rejects_truncated_input(data: bytes) -> None:
    with pytest.raises(DecodeError):
        decode(data)


def test_decode_rejects_length_claims_beyond_input() -> None:
    with pytest.raises(DecodeError):
        decode(b"\xc6\xff\xff\xff\xff")
    with pytest.raises(DecodeError):
        decode(b"\xdd\xff\xff\xff\xff")


def test_decode_max_size() -> None:
    data = encode(b"x" * 100)
    assert len(data) == 102
    assert decode(data, max_size=102) == b"x" * 100
    with pytest.raises(DecodeError, match="exceed"):
        decode(data, max_size=101)
    big = encode(b"\x00" * DEFAULT_MAX_SIZE)
    with pytest.raises(DecodeError):
        decode(big)


def _nested(levels: int, leaf: Value) -> Value:
    value = leaf
    for _ in range(levels):
        value = [value]
    return value


def test_nesting_limit_is_the_same_for_encode_and_decode() -> None:
    deepest_ok = _nested(MAX_DEPTH, 7)
    assert decode(encode(deepest_ok)) == deepest_ok
    too_deep = _nested(MAX_DEPTH + 1, 7)
    with pytest.raises(TypeError):
        encode(too_deep)
    with pytest.raises(DecodeError):
        decode(b"\x91" * (MAX_DEPTH + 1) + b"\x07")


@pytest.mark.parametrize("levels", [MAX_DEPTH + 2, 100, 1000, 100_000])
def test_decode_rejects_deep_nesting(levels: int) -> None:
    with pytest.raises(DecodeError):
        decode(b"\x91" * levels + b"\x00")
    with pytest.raises(DecodeError):
        decode(b"\x91" * levels + b"\x90")


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(DecodeError):
        decode(bytearray(b"\x00"))  # type: ignore[arg-type]
    with pytest.raises(DecodeError):
        decode(memoryview(b"\x00"))  # type: ignore[arg-type]


@settings(max_examples=500)
@given(st.binary(max_size=64))
def test_random_bytes_decode_canonically_or_fail(data: bytes) -> None:
    try:
        value = decode(data)
    except DecodeError:
        return
    assert encode(value) == data


@settings(max_examples=100)
@given(values, st.data())
def test_mutated_encodings_decode_canonically_or_fail(value: Value, data: st.DataObject) -> None:
    encoded = bytearray(encode(value))
    pos = data.draw(st.integers(0, len(encoded) - 1))
    encoded[pos] = data.draw(st.integers(0, 255))
    mutated = bytes(encoded)
    try:
        decoded = decode(mutated)
    except DecodeError:
        return
    assert encode(decoded) == mutated


def test_decode_agrees_with_msgpack_on_valid_input() -> None:
    value: Value = [INT_MIN, INT_MAX, b"\x00" * 300, [[], [b""]], list(range(20))]
    data = encode(value)
    assert data == msgpack.packb(value, use_bin_type=True)
    assert decode(data) == value


# -- encode rejects ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(True, id="true"),
        pytest.param(False, id="false"),
        pytest.param(None, id="none"),
        pytest.param("text", id="str"),
        pytest.param("", id="empty-str"),
        pytest.param(1.0, id="float"),
        pytest.param(float("nan"), id="nan"),
        pytest.param({}, id="empty-dict"),
        pytest.param({1: 2}, id="dict"),
        pytest.param(bytearray(b"x"), id="bytearray"),
        pytest.param(memoryview(b"x"), id="memoryview"),
        pytest.param({1, 2}, id="set"),
        pytest.param(INT_MAX + 1, id="2**64"),
        pytest.param(INT_MIN - 1, id="-2**63-1"),
        pytest.param(2**100, id="2**100"),
        pytest.param([1, [b"x", None]], id="nested-none"),
        pytest.param([True], id="nested-bool"),
        pytest.param((1, "s"), id="nested-str"),
        pytest.param([[INT_MAX + 1]], id="nested-out-of-range"),
    ],
)
def test_encode_rejects(value: Any) -> None:
    with pytest.raises(TypeError):
        encode(value)


@given(st.one_of(st.integers(max_value=INT_MIN - 1), st.integers(min_value=INT_MAX + 1)))
@settings(max_examples=50)
def test_encode_rejects_out_of_range_ints(value: int) -> None:
    with pytest.raises(TypeError, match="64-bit"):
        encode(value)


# -- field helpers ------------------------------------------------------------------------------


def test_field_list() -> None:
    assert field_list([1, 2], "pair", 2) == [1, 2]
    assert field_list([], "items", max_len=0) == []
    assert field_list([1, 2, 3], "items", max_len=3) == [1, 2, 3]
    with pytest.raises(DecodeError, match="pair"):
        field_list([1], "pair", 2)
    with pytest.raises(DecodeError, match="pair"):
        field_list([1, 2, 3], "pair", 2)
    with pytest.raises(DecodeError, match="items"):
        field_list([1, 2, 3, 4], "items", max_len=3)
    with pytest.raises(DecodeError, match="my_array"):
        field_list(b"ab", "my_array")
    with pytest.raises(DecodeError, match="my_array"):
        field_list(5, "my_array")
    with pytest.raises(DecodeError, match="my_array"):
        field_list((1, 2), "my_array")


def test_field_int() -> None:
    assert field_int(0, "height") == 0
    assert field_int(2**63 - 1, "height") == 2**63 - 1
    with pytest.raises(DecodeError, match="height"):
        field_int(-1, "height")
    with pytest.raises(DecodeError, match="height"):
        field_int(2**63, "height")
    with pytest.raises(DecodeError, match="height"):
        field_int(b"\x01", "height")
    with pytest.raises(DecodeError, match="height"):
        field_int([1], "height")
    with pytest.raises(DecodeError, match="flag"):
        field_int(True, "flag")
    assert field_int(-5, "delta", lo=-5, hi=5) == -5
    assert field_int(5, "delta", lo=-5, hi=5) == 5
    with pytest.raises(DecodeError, match="delta"):
        field_int(6, "delta", lo=-5, hi=5)
    with pytest.raises(DecodeError, match="delta"):
        field_int(-6, "delta", lo=-5, hi=5)


@given(st.integers(-(2**70), 2**70), st.integers(-(2**65), 2**65), st.integers(0, 2**66))
@settings(max_examples=100)
def test_field_int_bounds(value: int, lo: int, width: int) -> None:
    hi = lo + width
    if lo <= value <= hi:
        assert field_int(value, "amount", lo, hi) == value
    else:
        with pytest.raises(DecodeError, match="amount"):
            field_int(value, "amount", lo, hi)


def test_field_bytes() -> None:
    assert field_bytes(b"abc", "hash", size=3) == b"abc"
    assert field_bytes(b"", "memo", max_size=0) == b""
    assert field_bytes(b"abc", "memo", max_size=3) == b"abc"
    with pytest.raises(DecodeError, match="hash"):
        field_bytes(b"ab", "hash", size=3)
    with pytest.raises(DecodeError, match="hash"):
        field_bytes(b"abcd", "hash", size=3)
    with pytest.raises(DecodeError, match="memo"):
        field_bytes(b"abcd", "memo", max_size=3)
    with pytest.raises(DecodeError, match="memo"):
        field_bytes(3, "memo")
    with pytest.raises(DecodeError, match="memo"):
        field_bytes([b"a"], "memo")


def test_field_text() -> None:
    assert field_text("héllo".encode(), "name", max_size=6) == "héllo"
    assert field_text(b"", "name", max_size=0) == ""
    with pytest.raises(DecodeError, match="name"):
        field_text("héllo".encode(), "name", max_size=5)
    with pytest.raises(DecodeError, match="name"):
        field_text(b"\xff\xfe", "name", max_size=10)
    with pytest.raises(DecodeError, match="name"):
        field_text(b"\xc3", "name", max_size=10)
    with pytest.raises(DecodeError, match="name"):
        field_text(1, "name", max_size=10)


def test_field_bool() -> None:
    assert field_bool(0, "flag") is False
    assert field_bool(1, "flag") is True
    bad_values: list[Value] = [2, -1, b"\x01", [1]]
    for bad in bad_values:
        with pytest.raises(DecodeError, match="flag"):
            field_bool(bad, "flag")


def test_field_helpers_on_decoded_message() -> None:
    raw = encode([7, b"k" * 32, b"ok", 1, [1, 2]])
    fields = field_list(decode(raw), "message", 5)
    assert field_int(fields[0], "height") == 7
    assert field_bytes(fields[1], "key", size=32) == b"k" * 32
    assert field_text(fields[2], "memo", max_size=10) == "ok"
    assert field_bool(fields[3], "flag") is True
    assert field_list(fields[4], "items", max_len=2) == [1, 2]
