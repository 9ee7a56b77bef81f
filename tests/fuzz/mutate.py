"""Structure-aware mutation of fuzz inputs: one input in, a changed one out, driven by a
`random.Random` (atheris's custom mutator seeds it; the tests draw it from hypothesis).

Byte flips rarely get past a strict decoder, so an input that parses in its target's form
(`Target.form`) is changed as a tree and encoded again: a canonical-codec value (MessagePack) gets
a node replaced by a boundary integer, a byte string of a telling length, a type the codec
refuses (text, nil, booleans, floats, maps), an element dropped, duplicated or moved, or deep
nesting; JSON and TOML values likewise (big and negative numbers, numbers as text, wrong types,
unknown keys); a WAL file gets one record's payload mutated and its CRC and length made right
again, so the mutation reaches the record decoder. Anything that does not parse gets byte edits.
"""

from __future__ import annotations

import copy
import json
import random
import struct
import tomllib
import zlib
from typing import Any

import msgpack

_INTS = (0, 1, 2, 3, 4, 5, 8, 9, 127, 128, 255, 256, 1024, 65535, 65536, 2**31 - 1, 2**31,
         2**32 - 1, 2**32, 2**53, 2**63 - 1, 2**63, 2**64 - 1, -1, -2, -32, -33, -128, -129, -(2**31),
         -(2**63))  # fmt: skip
_SIZES = (0, 1, 19, 20, 21, 31, 32, 33, 40, 63, 64, 65, 255, 256, 1024, 1025)
_CODEC_MARKERS = bytes([0x90, 0x91, 0x94, 0x95, 0x96, 0x9F, 0xC0, 0xC2, 0xC3, 0xC4, 0xC5, 0xCA, 0xCC,
                        0xCD, 0xCF, 0xD3, 0xD9, 0xDC, 0xDD, 0x80, 0xA0, 0xFF, 0x00, 0x7F])  # fmt: skip
_TEXTS = ("", "0", "-1", "1e3", "0x10", "1.5", "18446744073709551616", "9" * 30, "null", "true", " 1",
          "\u0663", "\udcff", "a" * 300, "3s", "-1s", "1m30s", "99999999999h", "tcp://0.0.0.0:0",
          "tcp://[::1]:26656", "unix:///tmp/x.sock", "x@127.0.0.1:1", "*", "2025-06-15T16:00:02Z",
          "tx.height > 5 AND tm.event = 'Tx'", "block.time >= TIME 2025-01-01T00:00:00Z")  # fmt: skip
MAX_NODES = 512


def _bytes_edit(data: bytes, rng: random.Random) -> bytes:
    """One byte-level edit of `data`."""
    buf = bytearray(data)
    choice = rng.randrange(7)
    at = rng.randrange(len(buf) + 1)
    if choice == 0 and buf:
        buf[at % len(buf)] ^= 1 << rng.randrange(8)
    elif choice == 1 and buf:
        buf[at % len(buf)] = rng.choice(_CODEC_MARKERS)
    elif choice == 2:
        buf[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
    elif choice == 3 and buf:
        del buf[at : at + rng.randrange(1, 9)]
    elif choice == 4 and buf:
        start = rng.randrange(len(buf))
        buf[at:at] = buf[start : start + rng.randrange(1, 33)]
    elif choice == 5:
        del buf[at:]
    else:
        buf[at:at] = rng.choice(_CODEC_MARKERS).to_bytes(1, "big")
    return bytes(buf)


def _nodes(tree: Any) -> list[tuple[Any, Any]]:
    """(container, key) of every node under `tree` (the root: (None, None)), at most MAX_NODES."""
    found: list[tuple[Any, Any]] = [(None, None)]
    stack = [tree]
    while stack and len(found) < MAX_NODES:
        item = stack.pop()
        keys = range(len(item)) if isinstance(item, list) else list(item) if isinstance(item, dict) else ()
        for key in keys:
            found.append((item, key))
            stack.append(item[key])
    return found


def _codec_value(value: Any, rng: random.Random, pool: list[Any]) -> Any:
    """A replacement for one node of a MessagePack tree (of a list, half the time its elements
    changed: a field dropped, duplicated, added or moved)."""
    choice = 5 if isinstance(value, list) and value and rng.random() < 0.5 else rng.randrange(12)
    if choice == 0:
        return rng.choice(_INTS)
    if choice == 1 and isinstance(value, int) and not isinstance(value, bool):
        return max(-(2**63), min(2**64 - 1, value + rng.choice((-1, 1, -256, 256))))
    if choice == 2:
        size = rng.choice(_SIZES) if not isinstance(value, bytes) or rng.random() < 0.5 else len(value)
        return bytes(rng.randrange(256) for _ in range(size))
    if choice == 3 and isinstance(value, bytes):
        return value[: rng.randrange(len(value) + 1)] if rng.random() < 0.5 else value + value[:1] + b"\x00"
    if choice == 4:
        return rng.choice(["text", None, True, False, 1.5, {b"k": 1}, b"\xff\xfe".decode("latin-1")])
    if choice == 5 and isinstance(value, list) and value:
        copy = list(value)
        op = rng.randrange(5)
        at = rng.randrange(len(copy))
        if op == 0:
            del copy[at]
        elif op == 4:
            del copy[rng.randrange(len(copy)) :]  # a record cut short
        elif op == 1:
            copy.insert(at, copy[rng.randrange(len(copy))])
        elif op == 2:
            copy.append(rng.choice(pool))
        else:
            other = rng.randrange(len(copy))
            copy[at], copy[other] = copy[other], copy[at]
        return copy
    if choice == 6:
        return rng.choice(pool)
    if choice == 7:
        nested = value
        for _ in range(rng.choice((1, 2, 31, 32, 33))):
            nested = [nested]
        return nested
    if choice == 8:
        return []
    if choice == 9:
        return [value] * rng.choice((2, 3, 64, 65, 257))
    if choice == 10 and isinstance(value, bytes):
        return (value.decode("utf-8", "replace").upper()).encode() if rng.random() < 0.5 else b"\xc3\x28"
    return rng.getrandbits(64) - (2**63 if rng.random() < 0.5 else 0)


def _mutate_tree(tree: Any, rng: random.Random, replace: Any) -> Any:
    """`tree` with one node replaced by `replace(node, rng, pool)`."""
    nodes = _nodes(tree)
    # copies, so that a node replaced by one of its ancestors does not make a cycle
    pool = [
        copy.deepcopy(tree if container is None else container[key])
        for container, key in rng.sample(nodes, min(len(nodes), 8))
    ]
    # a leaf (a field's value), a container (a record, a list, the whole) or any node
    leaves = [(c, k) for c, k in nodes if c is not None and not isinstance(c[k], list | dict)]
    containers = [(c, k) for c, k in nodes if isinstance(tree if c is None else c[k], list | dict)]
    draw = rng.random()
    choices = leaves if draw < 0.4 else containers if draw < 0.7 else nodes
    container, key = rng.choice(choices or nodes)
    if container is None:
        return replace(tree, rng, pool)
    container[key] = replace(container[key], rng, pool)
    return tree


def _pack_wide(tree: Any, wide: Any) -> bytes:
    """`tree` as MessagePack with the node `wide` (by identity) in a wider form than the shortest:
    the same value in a non-canonical encoding, which only the codec's canonical check refuses."""
    if tree is not wide:
        if isinstance(tree, list):
            return _array_header(len(tree), False) + b"".join(_pack_wide(item, wide) for item in tree)
        return msgpack.packb(tree, use_bin_type=True)
    if isinstance(tree, bool) or not isinstance(tree, int | bytes | list):
        return msgpack.packb(tree, use_bin_type=True)
    if isinstance(tree, int):
        return (
            (b"\xcf" + tree.to_bytes(8, "big"))
            if tree >= 0
            else (b"\xd3" + tree.to_bytes(8, "big", signed=True))
        )
    if isinstance(tree, bytes):
        return b"\xc6" + len(tree).to_bytes(4, "big") + tree
    return _array_header(len(tree), True) + b"".join(_pack_wide(item, wide) for item in tree)


def _array_header(length: int, wide: bool) -> bytes:
    if wide:
        return b"\xdd" + length.to_bytes(4, "big")
    return msgpack.packb([None] * length)[: 1 if length < 16 else 3 if length < 2**16 else 5]


def _codec(data: bytes, rng: random.Random) -> bytes:
    try:
        tree = msgpack.unpackb(data, raw=True, strict_map_key=False)
    except Exception:
        return _bytes_edit(data, rng)
    if rng.random() < 0.15:  # the same value, one node encoded the long way
        container, key = rng.choice(_nodes(tree))
        try:
            return _pack_wide(tree, tree if container is None else container[key])
        except (TypeError, ValueError, OverflowError):
            return _bytes_edit(data, rng)
    try:
        return msgpack.packb(_mutate_tree(tree, rng, _codec_value), use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return _bytes_edit(data, rng)


def _json_value(value: Any, rng: random.Random, pool: list[Any]) -> Any:
    """A replacement for one node of a JSON (or TOML) tree."""
    choice = rng.randrange(11)
    if choice == 0:
        return rng.choice((*_INTS, 2**64, 10**30, -(10**30)))
    if choice in (1, 10):
        return rng.choice(_TEXTS)
    if choice == 2 and isinstance(value, int) and not isinstance(value, bool):
        return str(value) if rng.random() < 0.5 else value * rng.choice((-1, 2**32, 0))
    if choice == 3 and isinstance(value, str):
        return value[: rng.randrange(len(value) + 1)] if rng.random() < 0.5 else value + rng.choice(_TEXTS)
    if choice == 4:
        return rng.choice([None, True, False, 1.5, -0.0, [], {}, [value], {"x": value}])
    if choice == 5 and isinstance(value, dict) and value:
        changed = dict(value)
        key = rng.choice(list(changed))
        if rng.random() < 0.5:
            del changed[key]
        else:
            changed[key + rng.choice(("_", "x", ""))] = rng.choice(pool)
        return changed
    if choice == 6 and isinstance(value, list) and value:
        items = list(value)
        at = rng.randrange(len(items))
        if rng.random() < 0.5:
            del items[at]
        else:
            items.insert(at, items[rng.randrange(len(items))])
        return items
    if choice == 7:
        return rng.choice(pool)
    if choice == 8 and isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _json(data: bytes, rng: random.Random) -> bytes:
    try:
        tree = json.loads(data)
    except (ValueError, RecursionError):
        return _bytes_edit(data, rng)
    return json.dumps(_mutate_tree(tree, rng, _json_value)).encode()


def _toml_value(value: Any, rng: random.Random, pool: list[Any]) -> Any:
    replaced = _json_value(value, rng, pool)
    if replaced is None:  # TOML has no null
        return rng.choice(_TEXTS)
    if isinstance(replaced, int) and not -(2**63) <= replaced < 2**63:
        return rng.choice(_INTS[:-1])
    return replaced


def _toml(data: bytes, rng: random.Random) -> bytes:
    try:
        tree = tomllib.loads(data.decode())
    except (ValueError, UnicodeDecodeError):
        return _bytes_edit(data, rng)
    return _toml_text(_mutate_tree(tree, rng, _toml_value)).encode()


def _toml_scalar(value: Any) -> str:
    """A value as TOML text (strings in JSON's escapes, which TOML's basic strings share)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {_toml_scalar(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _toml_text(tree: Any) -> str:
    """A parsed TOML document written back: top-level keys, then one table per dict."""
    if not isinstance(tree, dict):
        return f"value = {_toml_scalar(tree)}\n"
    lines = [
        f"{json.dumps(key)} = {_toml_scalar(value)}"
        for key, value in tree.items()
        if not isinstance(value, dict)
    ]
    for key, value in tree.items():
        if isinstance(value, dict):
            lines.append(f"[{json.dumps(key)}]")
            lines += [f"{json.dumps(k)} = {_toml_scalar(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"


_HEADER = struct.Struct(">II")


def _wal(data: bytes, rng: random.Random) -> bytes:
    records: list[bytes] = []
    offset = 0
    while offset + _HEADER.size <= len(data):
        _, length = _HEADER.unpack_from(data, offset)
        payload = data[offset + _HEADER.size : offset + _HEADER.size + length]
        records.append(payload)
        offset += _HEADER.size + length
    if not records or rng.random() < 0.2:
        return _bytes_edit(data, rng)
    at = rng.randrange(len(records))
    choice = rng.randrange(4)
    if choice == 0:
        records[at] = _codec(records[at], rng)
    elif choice == 1:
        del records[at]
    elif choice == 2:
        records.insert(at, records[rng.randrange(len(records))])
    else:
        records[at], records[-1] = records[-1], records[at]
    return b"".join(_HEADER.pack(zlib.crc32(payload), len(payload)) + payload for payload in records)


def mutate(data: bytes, form: str, rng: random.Random) -> bytes:
    """One structure-aware mutation of `data`, an input of the given form."""
    if form == "codec":
        return _codec(data, rng)
    if form == "json":
        return _json(data, rng)
    if form == "toml":
        return _toml(data, rng)
    if form == "wal":
        return _wal(data, rng)
    return _bytes_edit(data, rng)
