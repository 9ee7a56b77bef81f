"""Compaction of pruned data (`[storage] compact`, `compaction_interval`; CometBFT's keys).

Pruning deletes old blocks, their results and tx index entries (`b:`) and old state tree versions
(`s:`), but LevelDB frees the space of deleted keys only when a compaction of its own happens to
merge them, which for these key ranges (heights and versions only grow) is rare: with
`retain_blocks` and `state_versions` at 100, a node under 3,000 orders/s held 132 MiB of live data
in 732 MiB of files after 5 minutes. Every `compaction_interval` committed heights this compacts
the two ranges in a worker thread (LevelDB works without the GIL; the node keeps running; the same
node's files went to 68 MiB in 9.6 s). A height that comes while one runs is skipped.
"""

from __future__ import annotations

import logging
import time

import trio

from consensus.execution import BlockResults
from consensus.state import ChainState
from consensus.types import Block, BlockID
from storage.db import Database

log = logging.getLogger("derivd.compaction")

PRUNED_PREFIXES = (b"b:", b"s:", b"a:hb")
"""the key ranges pruning deletes from (the block store's and the state tree's), and the holder
index's band edges (`execution.positions.holders`), which every band refresh deletes and rewrites:
a range read of them skips the tombstones that no compaction has dropped yet"""


class Compactor:
    """Compacts `PRUNED_PREFIXES` of `db` at every `interval`-th height (a commit listener)."""

    def __init__(self, db: Database, interval: int) -> None:
        self._db, self.interval = db, interval
        self._send, self._receive = trio.open_memory_channel[int](0)
        self.compacted_at: list[int] = []
        """the heights compacted at, in order"""

    def on_commit(self, block: Block, block_id: BlockID, results: BlockResults, state: ChainState) -> None:
        if block.header.height % self.interval == 0:
            try:
                self._send.send_nowait(block.header.height)
            except trio.WouldBlock:
                log.info("compaction still running at height %d: skipped", block.header.height)

    async def run(self) -> None:
        async for height in self._receive:
            started = time.monotonic()
            await trio.to_thread.run_sync(self._compact)
            self.compacted_at.append(height)
            log.info(
                "compacted the pruned key ranges at height %d in %.1f s", height, time.monotonic() - started
            )

    def _compact(self) -> None:
        for prefix in PRUNED_PREFIXES:
            self._db.compact(prefix)
