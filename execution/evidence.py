"""Validator accountability: what the application does with the misbehavior (verified evidence,
e.g. a duplicate vote) that consensus hands it in `FinalizeBlockRequest.misbehavior`.

For each item, in the order given, at the start of the block (before its txs):

1. Record it at `storage.schema.evidence_key(block height, index)` as the canonical array
   `[kind, validator_address, validator_power, height, time, total_voting_power]` (kind as UTF-8
   bytes; `height`, `time` (ns), the powers are those of the infraction). The records are in the
   block's changes, so in the app hash.
2. If the offender is in the validator registry (`execution.validators`) with power > 0, set its
   power to 0 and return `ValidatorUpdate(pub_key, 0)`: consensus removes it from the validator
   set (effective two heights later). Its power being 0 afterwards makes a second item against
   the same offender, in this block or a later one, produce no second update; so each offender
   appears at most once per block, in the order offenders first appear. Exception: the registry
   is never left with zero total power; evidence against the last validator with power is
   recorded, and its power kept.
3. Emit a block-level event `misbehavior` with attributes `kind`, `validator` (upper-case hex),
   `height` (of the infraction), `power` (the validator's power at the infraction) and `slashed`
   (`"true"` when this item set the power to 0, else `"false"`: an address not in the registry,
   one already at 0, or the last validator with power).

The application trusts consensus to have verified the evidence; it judges only its shape. An item
that is malformed (kind empty or over 256 bytes, an address that is not 20 bytes, a negative power
or height, an out-of-range time) raises ValueError: a bug on the consensus side, which every node
hits identically.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from consensus.app import Event, EventAttribute, Misbehavior, ValidatorUpdate
from execution.state import StateReader, StateView
from execution.validators import load_validator, store_validator, total_power
from primitives import codec
from primitives.keys import ADDRESS_SIZE
from storage import schema

MAX_KIND_BYTES = 256
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MISBEHAVIOR_EVENT = "misbehavior"


def _check(item: Misbehavior) -> None:
    kind = item.kind.encode()
    if not 0 < len(kind) <= MAX_KIND_BYTES:
        raise ValueError(f"misbehavior kind must be 1 to {MAX_KIND_BYTES} bytes, got {len(kind)}")
    if len(item.validator_address) != ADDRESS_SIZE:
        raise ValueError(
            f"misbehavior validator address must be {ADDRESS_SIZE} bytes, got {len(item.validator_address)}"
        )
    counts = (
        ("validator_power", item.validator_power),
        ("height", item.height),
        ("total_voting_power", item.total_voting_power),
    )
    for name, value in counts:
        if not 0 <= value <= INT64_MAX:
            raise ValueError(f"misbehavior {name} {value} is outside [0, {INT64_MAX}]")
    if not INT64_MIN <= item.time <= INT64_MAX:
        raise ValueError(f"misbehavior time {item.time} is outside the int64 range")


def encode_misbehavior(item: Misbehavior) -> bytes:
    """The canonical value of an evidence record."""
    return codec.encode(
        [
            item.kind.encode(),
            item.validator_address,
            item.validator_power,
            item.height,
            item.time,
            item.total_voting_power,
        ]
    )


def decode_misbehavior(raw: bytes) -> Misbehavior:
    f = codec.field_list(codec.decode(raw), "misbehavior", 6)
    return Misbehavior(
        kind=codec.field_text(f[0], "misbehavior.kind", MAX_KIND_BYTES),
        validator_address=codec.field_bytes(f[1], "misbehavior.validator_address", ADDRESS_SIZE),
        validator_power=codec.field_int(f[2], "misbehavior.validator_power"),
        height=codec.field_int(f[3], "misbehavior.height"),
        time=codec.field_int(f[4], "misbehavior.time", INT64_MIN, INT64_MAX),
        total_voting_power=codec.field_int(f[5], "misbehavior.total_voting_power"),
    )


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One recorded misbehavior and where it was handed over (block height, index in the block)."""

    block_height: int
    index: int
    misbehavior: Misbehavior


def load_evidence(state: StateReader) -> list[EvidenceRecord]:
    """Every recorded misbehavior, oldest first (by block height, then index)."""
    records = []
    for key, raw in state.iterate(schema.APP_EVIDENCE_PREFIX):
        block_height, index = schema.evidence_key_position(key)
        records.append(EvidenceRecord(block_height, index, decode_misbehavior(raw)))
    return records


@dataclass(frozen=True, slots=True)
class Accountability:
    """What a block's misbehavior produced: its events and the validator updates for consensus."""

    events: tuple[Event, ...] = ()
    validator_updates: tuple[ValidatorUpdate, ...] = ()


def _slash(view: StateView, address: bytes) -> ValidatorUpdate | None:
    """Set the power of `address` to 0 if it is registered with power and is not the last
    validator with power; the update for consensus, or None."""
    entry = load_validator(view, address)
    if entry is None or entry.power == 0:
        return None
    if total_power(view) == entry.power:
        return None
    store_validator(view, entry.with_power(0))
    return ValidatorUpdate(entry.pub_key, 0)


def misbehavior_event(item: Misbehavior, slashed: bool) -> Event:
    return Event(
        MISBEHAVIOR_EVENT,
        (
            EventAttribute("kind", item.kind),
            EventAttribute("validator", item.validator_address.hex().upper()),
            EventAttribute("height", str(item.height)),
            EventAttribute("power", str(item.validator_power)),
            EventAttribute("slashed", "true" if slashed else "false"),
        ),
    )


def handle_misbehavior(view: StateView, block_height: int, items: Sequence[Misbehavior]) -> Accountability:
    """Record, punish and report `items` (see the module docstring) on the block's `view`."""
    for item in items:
        _check(item)
    events: list[Event] = []
    updates: list[ValidatorUpdate] = []
    for index, item in enumerate(items):
        view.put(schema.evidence_key(block_height, index), encode_misbehavior(item))
        update = _slash(view, item.validator_address)
        if update is not None:
            updates.append(update)
        events.append(misbehavior_event(item, update is not None))
    return Accountability(tuple(events), tuple(updates))
