"""Canonical binary encoding: the one byte form of everything hashed, signed or stored.

Values are built from three kinds only: integers (-2**63 .. 2**64-1), byte strings and arrays
of values. Structures are fixed-order arrays, never maps; booleans travel as 0/1 and text as
UTF-8 bytes. The wire form is MessagePack with the shortest encoding of every integer and length,
which is what `msgpack.packb` produces, so a value has exactly one encoding.

`decode` accepts only that form: it rejects maps, strings, floats, nil, booleans, extension types,
trailing bytes and any non-minimal length or integer encoding (it re-encodes what it read and
compares). The `field_*` helpers turn a decoded array into typed values and name the offending
field in their errors, so every message's `from_fields` reads the same way.
"""

from __future__ import annotations

import msgpack

Value = int | bytes | list["Value"] | tuple["Value", ...]

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
DEFAULT_MAX_SIZE = 4 * 1024 * 1024


class DecodeError(ValueError):
    """Bytes that are not the canonical encoding of the expected structure."""


def _check(value: object, depth: int = 0) -> None:
    if depth > 32:
        raise TypeError("value nests deeper than 32 levels")
    if isinstance(value, bool) or value is None:
        raise TypeError(f"canonical values are ints, bytes and arrays, not {value!r}")
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise TypeError(f"integer {value} is outside the 64-bit range")
        return
    if isinstance(value, bytes):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check(item, depth + 1)
        return
    raise TypeError(f"canonical values are ints, bytes and arrays, not {type(value).__name__}")


def encode(value: Value) -> bytes:
    """The canonical bytes of `value` (ints, bytes and arrays of them)."""
    _check(value)
    return msgpack.packb(value, use_bin_type=True)


def _check_decoded(value: object, depth: int = 0) -> None:
    if depth > 32:
        raise DecodeError("nesting deeper than 32 levels")
    if isinstance(value, bool) or value is None:
        raise DecodeError("booleans and nil are not canonical values")
    if isinstance(value, int | bytes):
        return
    if isinstance(value, list):
        for item in value:
            _check_decoded(item, depth + 1)
        return
    raise DecodeError(f"{type(value).__name__} is not a canonical value")


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Value:
    """Decode canonical bytes; raise DecodeError on anything else."""
    if not isinstance(data, bytes):
        raise DecodeError("expected bytes")
    if len(data) > max_size:
        raise DecodeError(f"{len(data)} bytes exceed the limit of {max_size}")
    try:
        value = msgpack.unpackb(
            data,
            raw=True,
            use_list=True,
            strict_map_key=True,
            max_str_len=0,
            max_map_len=0,
            max_ext_len=0,
            max_bin_len=len(data),
            max_array_len=len(data),
        )
    except msgpack.ExtraData as exc:
        raise DecodeError("trailing bytes after the value") from exc
    except (ValueError, TypeError, msgpack.UnpackException, RecursionError) as exc:
        raise DecodeError(f"malformed encoding: {exc}") from exc
    _check_decoded(value)
    if msgpack.packb(value, use_bin_type=True) != data:
        raise DecodeError("non-canonical encoding")
    return value  # type: ignore[no-any-return]


# -- typed field access: every from_fields uses these so errors name the field ------------------


def field_list(value: Value, name: str, length: int | None = None, max_len: int | None = None) -> list[Value]:
    """`value` as an array, optionally of an exact or bounded length."""
    if not isinstance(value, list):
        raise DecodeError(f"{name}: expected an array")
    if length is not None and len(value) != length:
        raise DecodeError(f"{name}: expected {length} fields, got {len(value)}")
    if max_len is not None and len(value) > max_len:
        raise DecodeError(f"{name}: {len(value)} items exceed the limit of {max_len}")
    return value


def field_int(value: Value, name: str, lo: int = 0, hi: int = 2**63 - 1) -> int:
    """`value` as an integer in [lo, hi] (non-negative int64 by default)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"{name}: expected an integer")
    if not lo <= value <= hi:
        raise DecodeError(f"{name}: {value} is outside [{lo}, {hi}]")
    return value


def field_bytes(value: Value, name: str, size: int | None = None, max_size: int | None = None) -> bytes:
    """`value` as bytes of an exact or bounded length."""
    if not isinstance(value, bytes):
        raise DecodeError(f"{name}: expected bytes")
    if size is not None and len(value) != size:
        raise DecodeError(f"{name}: expected {size} bytes, got {len(value)}")
    if max_size is not None and len(value) > max_size:
        raise DecodeError(f"{name}: {len(value)} bytes exceed the limit of {max_size}")
    return value


def field_text(value: Value, name: str, max_size: int) -> str:
    """`value` as UTF-8 text of at most `max_size` bytes."""
    raw = field_bytes(value, name, max_size=max_size)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(f"{name}: not valid UTF-8") from exc


def field_bool(value: Value, name: str) -> bool:
    """`value` as a boolean encoded 0 or 1."""
    return field_int(value, name, 0, 1) == 1
