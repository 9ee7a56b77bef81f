"""The record of recent liquidations in state, for the `/liquidations` query (`execution.query`):
what each block's liquidations moved, kept for the last `KEPT_BLOCKS` blocks that had any.

A `LiquidationRecord` is one movement of a liquidated account's position: `liquidated` (closed
through the book; `fee` the liquidation fee, `counterparty` empty), `taken_over` (by the insurance
fund, the counterparty) or `deleveraged` (against the counterparty). `size` is the signed change of
the account's position, `price` subticks, `quote` (signed) what the account's position received.

State (`storage.schema`): `liquidation_history_key(height)` holds the block's records in the order
given, `[[kind, account, counterparty, market_id, size, price, quote, fee], ...]` (kind: its index
in `KINDS`); `LIQUIDATION_HISTORY_INDEX` the heights that have such a value, ascending. Both are in
the state tree. `record_block` writes nothing for a block without records; otherwise it reads the
index (and the block's value when the height already has one: the records are appended), writes
the value and the index, and deletes the oldest block's value once more than `KEPT_BLOCKS` are
kept. A block keeps at most `MAX_RECORDS_PER_BLOCK` records, the first ones (the query shows no
more; every liquidation stays in the block's events). Heights only go up: recording below the
newest kept height is a ValueError (a caller bug every node hits alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from execution.state import StateReader, StateView
from primitives import codec
from primitives.keys import ADDRESS_SIZE
from storage import schema

KEPT_BLOCKS = 100
"""blocks with records kept; the oldest goes when one more is recorded"""
MAX_RECORDS_PER_BLOCK = 1_000
"""records kept of one block (the first ones), as many as the query shows"""
KINDS = ("liquidated", "taken_over", "deleveraged")
"""the kinds of record; a stored kind is its index here"""
LIQUIDATED, TAKEN_OVER, DELEVERAGED = KINDS
_KIND_CODES = {kind: code for code, kind in enumerate(KINDS)}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MARKET_ID_MAX = 2 ** (8 * schema.MARKET_ID_SIZE) - 1
_FIELDS = 8


Fields = tuple[str, bytes, bytes, int, int, int, int, int]
"""a record's fields in their stored order"""


def _problem(fields: Fields) -> str | None:
    """What makes these fields no valid record (None: valid)."""
    kind, account, counterparty, market_id, size, price, quote, fee = fields
    if kind not in _KIND_CODES:
        return f"kind {kind!r} is none of {', '.join(KINDS)}"
    if len(account) != ADDRESS_SIZE:
        return f"account is {len(account)} bytes, not {ADDRESS_SIZE}"
    wanted = 0 if kind == LIQUIDATED else ADDRESS_SIZE
    if len(counterparty) != wanted:
        return f"a {kind} record's counterparty is {wanted} bytes, got {len(counterparty)}"
    if fee and kind != LIQUIDATED:
        return f"a {kind} record has no fee, got {fee}"
    checks = (
        ("market_id", market_id, 0, MARKET_ID_MAX),
        ("size", size, INT64_MIN, INT64_MAX),
        ("price", price, 0, INT64_MAX),
        ("quote", quote, INT64_MIN, INT64_MAX),
        ("fee", fee, 0, INT64_MAX),
    )
    for name, value, lo, hi in checks:
        if not lo <= value <= hi:
            return f"{name} {value} is outside [{lo}, {hi}]"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class LiquidationRecord:
    """One movement of a liquidated account's position (module docstring); ValueError if invalid."""

    kind: str
    account: bytes
    counterparty: bytes
    market_id: int
    size: int
    price: int
    quote: int
    fee: int = 0

    def __post_init__(self) -> None:
        problem = _problem(self.fields())
        if problem is not None:
            raise ValueError(f"liquidation record: {problem}")

    def fields(self) -> Fields:
        return (
            self.kind,
            self.account,
            self.counterparty,
            self.market_id,
            self.size,
            self.price,
            self.quote,
            self.fee,
        )

    def to_value(self) -> list[codec.Value]:
        """The canonical array of the record (module docstring): `fields` with the kind's code."""
        fields = self.fields()
        return [_KIND_CODES[fields[0]], *fields[1:]]

    @classmethod
    def from_value(cls, value: codec.Value, name: str = "liquidation record") -> LiquidationRecord:
        """The record of its canonical array; DecodeError naming the field otherwise."""
        f = codec.field_list(value, name, _FIELDS)
        code = codec.field_int(f[0], f"{name}.kind", 0, len(KINDS) - 1)
        fields: Fields = (
            KINDS[code],
            codec.field_bytes(f[1], f"{name}.account", ADDRESS_SIZE),
            codec.field_bytes(f[2], f"{name}.counterparty", max_size=ADDRESS_SIZE),
            codec.field_int(f[3], f"{name}.market_id", 0, MARKET_ID_MAX),
            codec.field_int(f[4], f"{name}.size", INT64_MIN, INT64_MAX),
            codec.field_int(f[5], f"{name}.price"),
            codec.field_int(f[6], f"{name}.quote", INT64_MIN, INT64_MAX),
            codec.field_int(f[7], f"{name}.fee"),
        )
        problem = _problem(fields)
        if problem is not None:
            raise codec.DecodeError(f"{name}: {problem}")
        kind, account, counterparty, market_id, size, price, quote, fee = fields
        return cls(
            kind=kind,
            account=account,
            counterparty=counterparty,
            market_id=market_id,
            size=size,
            price=price,
            quote=quote,
            fee=fee,
        )


def encode_block(records: Sequence[LiquidationRecord]) -> bytes:
    return codec.encode([record.to_value() for record in records])


def decode_block(raw: bytes) -> list[LiquidationRecord]:
    items = codec.field_list(codec.decode(raw), "liquidation history", max_len=MAX_RECORDS_PER_BLOCK)
    return [LiquidationRecord.from_value(item, f"liquidation history[{i}]") for i, item in enumerate(items)]


def load_heights(state: StateReader) -> list[int]:
    """The heights whose records are kept, ascending."""
    raw = state.get(schema.LIQUIDATION_HISTORY_INDEX)
    if raw is None:
        return []
    name = "liquidation history index"
    items = codec.field_list(codec.decode(raw), name, max_len=KEPT_BLOCKS)
    heights = [codec.field_int(item, f"{name}[]") for item in items]
    if any(a >= b for a, b in pairwise(heights)):
        raise codec.DecodeError(f"{name}: heights not strictly ascending")
    return heights


def _load_block(state: StateReader, height: int) -> list[LiquidationRecord]:
    raw = state.get(schema.liquidation_history_key(height))
    if raw is None:
        raise codec.DecodeError(f"liquidation history: height {height} is indexed but not stored")
    return decode_block(raw)


def record_block(view: StateView, height: int, records: Sequence[LiquidationRecord]) -> None:
    """Keep `records` (in order) as the liquidations of the block at `height` (module docstring)."""
    if not records:
        return
    heights = load_heights(view)
    key = schema.liquidation_history_key(height)
    kept = list(records)
    if heights and heights[-1] == height:
        kept = _load_block(view, height) + kept
    elif heights and heights[-1] > height:
        raise ValueError(f"liquidations recorded at height {height}, below the kept {heights[-1]}")
    else:
        heights.append(height)
    view.put(key, encode_block(kept[:MAX_RECORDS_PER_BLOCK]))
    if len(heights) > KEPT_BLOCKS:
        for old in heights[: len(heights) - KEPT_BLOCKS]:
            view.delete(schema.liquidation_history_key(old))
        del heights[: len(heights) - KEPT_BLOCKS]
    view.put(schema.LIQUIDATION_HISTORY_INDEX, codec.encode(tuple(heights)))


def recent(state: StateReader, limit: int) -> list[tuple[int, LiquidationRecord]]:
    """At most `limit` kept records with their heights: newest block first, each block's in order."""
    out: list[tuple[int, LiquidationRecord]] = []
    for height in reversed(load_heights(state)):
        if len(out) >= limit:
            break
        out.extend((height, record) for record in _load_block(state, height)[: limit - len(out)])
    return out
