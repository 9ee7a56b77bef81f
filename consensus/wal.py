"""The consensus write-ahead log: every input of the state machine, appended before it is
handled, so that a restarted node replays the height it was in and signs nothing new by mistake.

A record is `crc32 | length | payload` (both 4-byte big-endian; CRC-32 of the payload as zlib
computes it) with a canonical payload [kind, time, ...]: 1 message [peer, message], 2 timeout
[height, round, step], 3 end of height [height]. Peer messages and timeouts are written
buffered; the node's own messages and end-height markers are fsynced before anything depends on
them. On open, a torn or corrupt tail (a crash mid-write) is cut off and logged, never fatal.
Replay returns the inputs after the last end-height marker. When the file passes its size
limit at an end-height marker it is replaced by a file holding only that marker.

A write that fails (a full disk, an I/O error) raises `WALWriteError` and so does every write
after it: a record appended after a torn one would be cut off with it at the next open, so the
log takes nothing more and the node stops; what the failed write left is such a torn tail.
"""

from __future__ import annotations

import logging
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from consensus.machine import BlockPartEvent, Event, ProposalEvent, Step, TimeoutEvent, VoteEvent
from consensus.messages import MachineMessage, message_fields, message_from_fields
from primitives.codec import DecodeError, decode, encode, field_int, field_list, field_text
from primitives.files import DurableFile, OSFile, remedy

log = logging.getLogger("derivd.wal")

KIND_MESSAGE = 1
KIND_TIMEOUT = 2
KIND_END_HEIGHT = 3

MAX_RECORD_BYTES = 2 << 20
HEADER = struct.Struct(">II")
DEFAULT_ROTATE_BYTES = 64 << 20


class WALError(RuntimeError):
    """The WAL contradicts the stores (it is ahead of them) or cannot be written."""


class WALWriteError(WALError):
    """The WAL file could not be written or synced; the message names it, the OS error and what
    to do."""


@dataclass(frozen=True, slots=True)
class WALRecord:
    time: int
    event: Event | None
    end_height: int | None = None


def _encode_record(time: int, event: Event | None, end_height: int | None) -> bytes:
    if end_height is not None:
        payload = encode([KIND_END_HEIGHT, time, end_height])
    elif isinstance(event, TimeoutEvent):
        payload = encode([KIND_TIMEOUT, time, event.height, event.round, int(event.step)])
    else:
        assert event is not None and not isinstance(event, TimeoutEvent)
        message: MachineMessage = event  # type: ignore[assignment]
        payload = encode([KIND_MESSAGE, time, message.peer.encode(), message_fields(message)])
    return HEADER.pack(zlib.crc32(payload), len(payload)) + payload


def _decode_payload(payload: bytes) -> WALRecord:
    fields = field_list(decode(payload, max_size=MAX_RECORD_BYTES), "wal record")
    if len(fields) < 2:
        raise DecodeError("wal record: too short")
    kind = field_int(fields[0], "wal record.kind")
    time = field_int(fields[1], "wal record.time", -(2**63), 2**63 - 1)
    if kind == KIND_END_HEIGHT and len(fields) == 3:
        return WALRecord(time, None, field_int(fields[2], "end height"))
    if kind == KIND_TIMEOUT and len(fields) == 5:
        step = Step(field_int(fields[4], "timeout.step", 1, 8))
        event = TimeoutEvent(
            field_int(fields[2], "timeout.height"), field_int(fields[3], "timeout.round"), step
        )
        return WALRecord(time, event)
    if kind == KIND_MESSAGE and len(fields) == 4:
        peer = field_text(fields[2], "message.peer", 128)
        message = message_from_fields(fields[3], peer)
        if not isinstance(message, ProposalEvent | BlockPartEvent | VoteEvent):
            raise DecodeError("wal record: only proposals, block parts and votes are consensus inputs")
        return WALRecord(time, message)
    raise DecodeError(f"wal record: unknown kind {kind}")


def parse_records(data: bytes) -> tuple[list[WALRecord], int]:
    """The records in `data` and the length of its valid prefix."""
    records: list[WALRecord] = []
    offset = 0
    while offset + HEADER.size <= len(data):
        crc, length = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        if length > MAX_RECORD_BYTES or start + length > len(data):
            break
        payload = data[start : start + length]
        if zlib.crc32(payload) != crc:
            break
        try:
            records.append(_decode_payload(payload))
        except (DecodeError, ValueError):
            break
        offset = start + length
    return records, offset


class WAL:
    """Append-only log of one node's consensus inputs, kept in a DurableFile."""

    def __init__(self, file: DurableFile, rotate_bytes: int = DEFAULT_ROTATE_BYTES) -> None:
        self.file = file
        self.rotate_bytes = rotate_bytes
        data = file.read()
        records, valid = parse_records(data)
        if valid < len(data):
            log.warning(
                "WAL %s: cutting a torn or corrupt tail of %d bytes at offset %d",
                file.name,
                len(data) - valid,
                valid,
            )
            try:
                file.truncate(valid)
            except OSError as exc:
                raise self._write_error(exc) from exc
        self._records = records
        self.size = valid
        self._failure: str | None = None

    @classmethod
    def open(cls, path: Path, rotate_bytes: int = DEFAULT_ROTATE_BYTES) -> WAL:
        return cls(OSFile(path), rotate_bytes)

    def replay_after_last_end_height(self, committed_height: int) -> list[WALRecord]:
        """Inputs after the last end-height marker; WALError if the WAL is ahead of the stores."""
        last_end = -1
        for i, record in enumerate(self._records):
            if record.end_height is not None:
                if record.end_height > committed_height:
                    raise WALError(
                        f"WAL {self.file.name} marks height {record.end_height} as ended but the block "
                        f"store is at {committed_height}: the data directory and the WAL do not belong "
                        "together"
                    )
                last_end = i
        replay = [r for r in self._records[last_end + 1 :] if r.event is not None]
        self._records = []
        return replay

    def write(self, time: int, event: Event, sync: bool = False) -> None:
        record = _encode_record(time, event, None)
        if len(record) > MAX_RECORD_BYTES:
            raise WALError(f"WAL record of {len(record)} bytes exceeds {MAX_RECORD_BYTES}")
        self._append(record, sync)

    def write_end_height(self, time: int, height: int) -> None:
        record = _encode_record(time, None, height)
        self._append(record, True)
        if self.size > self.rotate_bytes:
            try:
                self.file.replace(record)
            except OSError as exc:  # the old file, marker included, is still whole
                raise self._failed(exc) from exc
            self.size = len(record)

    def _append(self, record: bytes, sync: bool) -> None:
        if self._failure is not None:
            raise WALWriteError(self._failure)
        try:
            self.file.append(record)
            self.size += len(record)
            if sync:
                self.file.sync()
        except OSError as exc:
            raise self._failed(exc) from exc

    def _write_error(self, exc: OSError) -> WALWriteError:
        return WALWriteError(f"cannot write the WAL {self.file.name}: {exc.strerror or exc}; {remedy(exc)}")

    def _failed(self, exc: OSError) -> WALWriteError:
        """The error of a failed write; every later write is refused with it."""
        error = self._write_error(exc)
        self._failure = str(error)
        return error

    def close(self) -> None:
        """Sync and close; after a failed write only close (the torn tail is the reader's)."""
        try:
            if self._failure is None:
                try:
                    self.file.sync()
                except OSError as exc:
                    raise self._failed(exc) from exc
        finally:
            self.file.close()
