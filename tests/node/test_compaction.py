"""`node.compaction.Compactor`: which heights compact, in a thread, one at a time."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any, cast

import trio
import trio.testing

from node.compaction import PRUNED_PREFIXES, Compactor
from storage.db import Database


class _HeldDB:
    """Records the prefixes compacted; each compaction waits for `release`."""

    def __init__(self) -> None:
        self.compacted: list[bytes] = []
        self.release = threading.Event()

    def compact(self, prefix: bytes) -> None:
        self.release.wait(10)
        self.compacted.append(prefix)


def _commit(compactor: Compactor, height: int) -> None:
    block: Any = SimpleNamespace(header=SimpleNamespace(height=height))
    compactor.on_commit(block, cast(Any, None), cast(Any, None), cast(Any, None))


async def test_every_interval_compacts_the_pruned_ranges_once_at_a_time() -> None:
    db = _HeldDB()
    compactor = Compactor(cast(Database, db), interval=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(compactor.run)
        await trio.testing.wait_all_tasks_blocked()
        _commit(compactor, 1)  # not a multiple of the interval
        _commit(compactor, 2)  # starts one (held in its thread)
        await trio.testing.wait_all_tasks_blocked()
        _commit(compactor, 4)  # one is running: skipped
        db.release.set()
        with trio.fail_after(10):
            while len(compactor.compacted_at) < 1:
                await trio.sleep(0.01)  # poll with a deadline: the worker thread's end is no trio event
        assert db.compacted == list(PRUNED_PREFIXES)
        await trio.testing.wait_all_tasks_blocked()
        _commit(compactor, 6)
        with trio.fail_after(10):
            while len(compactor.compacted_at) < 2:
                await trio.sleep(0.01)  # the same poll
        nursery.cancel_scope.cancel()
    assert db.compacted == list(PRUNED_PREFIXES) * 2
    assert compactor.compacted_at == [2, 6]
