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

from collections.abc import Sequence

import msgpack

Value = int | bytes | list["Value"] | tuple["Value", ...]

INT_MIN = -(2**63)
INT_MAX = 2**64 - 1
DEFAULT_MAX_SIZE = 4 * 1024 * 1024


class DecodeError(ValueError):
    """Bytes that are not the canonical encoding of the expected structure."""


MAX_DEPTH = 32

_BYTES = frozenset({bytes})
_INT = frozenset({int})
_SCALARS = frozenset({int, bytes})

# One packer serves every call: building a `Packer` costs about three times what packing a small
# value does (`msgpack.packb` builds one per call). `pack` is C that never releases the GIL (no
# `default` hook is set), and it resets its buffer after each value, so threads cannot interleave
# in it. The output is `msgpack.packb(value, use_bin_type=True)`'s.
_pack = msgpack.Packer(use_bin_type=True).pack


def _check(value: object) -> None:
    """Raise TypeError unless `value` is ints (64-bit), bytes and arrays nested at most
    MAX_DEPTH deep. Iterative, with the common types checked by exact type first (hot path)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is bytes:
            continue
        if kind is int:
            if not INT_MIN <= item <= INT_MAX:  # type: ignore[operator]
                raise TypeError(f"integer {item} is outside the 64-bit range")
            continue
        if kind is list or kind is tuple:
            if depth >= MAX_DEPTH:
                raise TypeError(f"value nests deeper than {MAX_DEPTH} levels")
            kinds = set(map(type, item))  # type: ignore[call-overload]
            if kinds <= _BYTES:  # bytes only, or empty
                continue
            if kinds <= _INT and min(item) >= INT_MIN and max(item) <= INT_MAX:  # type: ignore[call-overload]
                continue  # plain ints only (a record's fields): the range checked in C
            for child in item:  # type: ignore[attr-defined]
                child_kind = type(child)
                if child_kind is bytes:
                    continue
                if child_kind is int and INT_MIN <= child <= INT_MAX:
                    continue
                stack.append((child, depth + 1))
            continue
        if isinstance(item, bool) or item is None:
            raise TypeError(f"canonical values are ints, bytes and arrays, not {item!r}")
        if isinstance(item, int):  # an IntEnum member
            if not INT_MIN <= item <= INT_MAX:
                raise TypeError(f"integer {item} is outside the 64-bit range")
            continue
        raise TypeError(f"canonical values are ints, bytes and arrays, not {kind.__name__}")


def _flat_scalars(value: Sequence[object]) -> bool:
    """Whether `value` holds only bytes and 64-bit ints (a record's fields): the common case of
    `encode`, checked with C loops only. False sends the value to `_check`, which decides."""
    kinds = set(map(type, value))
    if not kinds <= _SCALARS:
        return False
    ints = value if bytes not in kinds else [item for item in value if type(item) is int]
    return not ints or (min(ints) >= INT_MIN and max(ints) <= INT_MAX)  # type: ignore[type-var, operator]


def encode(value: Value) -> bytes:
    """The canonical bytes of `value` (ints, bytes and arrays of them)."""
    if type(value) is not list or not _flat_scalars(value):
        _check(value)
    return _pack(value)


def pack_unchecked(value: Value) -> bytes:
    """`encode(value)` without the check of its types and ranges: only for a hot path whose
    value is known to be canonical (bytes, and ints in range, in arrays), which the caller
    guarantees (see `consensus.execution`). Anything else would not raise: it would pack a
    non-canonical form."""
    return _pack(value)


def _check_decoded(value: object) -> None:
    """Raise DecodeError unless the decoded `value` is ints, bytes and lists (msgpack gives
    booleans, nil, floats and text their own types, all refused here)."""
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is int or kind is bytes:
            continue
        if kind is list:
            if depth >= MAX_DEPTH:
                raise DecodeError(f"nesting deeper than {MAX_DEPTH} levels")
            if set(map(type, item)) <= _SCALARS:  # type: ignore[call-overload]
                continue  # the common case, checked in C
            for child in item:  # type: ignore[attr-defined]
                child_kind = type(child)
                if child_kind is not int and child_kind is not bytes:
                    stack.append((child, depth + 1))
            continue
        if kind is bool or item is None:
            raise DecodeError("booleans and nil are not canonical values")
        raise DecodeError(f"{kind.__name__} is not a canonical value")


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
    if _pack(value) != data:
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
