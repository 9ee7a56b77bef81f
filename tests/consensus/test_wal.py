"""The consensus WAL: records round-trip, a torn or corrupt tail is cut (never fatal), replay
starts after the last end-height marker, and a WAL ahead of the stores is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.machine import Step, TimeoutEvent, VoteEvent
from consensus.types import NIL_BLOCK_ID, Vote, VoteType
from consensus.wal import WAL, WALError, parse_records


def vote(height: int, round_: int = 0) -> VoteEvent:
    return VoteEvent(
        Vote(VoteType.PREVOTE, height, round_, NIL_BLOCK_ID, 123, b"\x01" * 20, 0, b"\x02" * 64), "peer1"
    )


def test_records_round_trip_and_replay_after_end_height(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = WAL.open(path)
    wal.write(1, vote(1))
    wal.write_end_height(2, 1)
    wal.write(3, vote(2), sync=True)
    wal.write(4, TimeoutEvent(2, 0, Step.PROPOSE))
    wal.close()
    replay = WAL.open(path).replay_after_last_end_height(committed_height=1)
    assert [r.event for r in replay] == [vote(2), TimeoutEvent(2, 0, Step.PROPOSE)]
    assert [r.time for r in replay] == [3, 4]


@pytest.mark.parametrize("cut", [1, 5, 9, 20])
def test_torn_tail_is_cut_and_the_log_stays_usable(tmp_path: Path, cut: int) -> None:
    path = tmp_path / "wal"
    wal = WAL.open(path)
    wal.write(1, vote(1))
    wal.write(2, vote(1, 1))
    wal.close()
    good_size = len(path.read_bytes())
    records, _ = parse_records(path.read_bytes())
    with open(path, "r+b") as fh:
        fh.truncate(good_size - cut)
    reopened = WAL.open(path)
    assert [r.event for r in reopened.replay_after_last_end_height(0)] == [vote(1)]
    reopened.write(3, vote(1, 2))
    reopened.close()
    assert [r.event for r in WAL.open(path).replay_after_last_end_height(0)] == [vote(1), vote(1, 2)]
    assert len(records) == 2


def test_corrupt_record_cuts_from_there(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = WAL.open(path)
    for i in range(3):
        wal.write(i, vote(1, i))
    wal.close()
    data = bytearray(path.read_bytes())
    _, valid = parse_records(path.read_bytes())
    assert valid == len(data)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    replay = WAL.open(path).replay_after_last_end_height(0)
    assert len(replay) < 3
    assert [r.event for r in replay] == [vote(1, i) for i in range(len(replay))]


def test_wal_ahead_of_store_is_refused(tmp_path: Path) -> None:
    wal = WAL.open(tmp_path / "wal")
    wal.write_end_height(1, 5)
    wal.close()
    with pytest.raises(WALError, match="height 5"):
        WAL.open(tmp_path / "wal").replay_after_last_end_height(committed_height=4)


def test_rotation_keeps_only_the_last_end_height(tmp_path: Path) -> None:
    path = tmp_path / "wal"
    wal = WAL.open(path, rotate_bytes=500)
    for height in range(1, 20):
        wal.write(height, vote(height))
        wal.write_end_height(height, height)
    wal.write(99, vote(20))
    wal.close()
    assert path.stat().st_size < 1000
    records, _ = parse_records(path.read_bytes())
    assert records[0].end_height is not None
    assert [r.event for r in WAL.open(path).replay_after_last_end_height(19)] == [vote(20)]
