"""Block store: blocks by height and by hash, the commit seen for each height, block results and
the transaction index, with the stored range [base, height] and pruning.

It stores bytes; `consensus` owns what they mean. Writes go into the caller's batch so that a
height's block, commit, results and state land in one atomic write.
"""

from __future__ import annotations

from primitives.codec import decode, encode, field_int, field_list
from storage import schema
from storage.db import Database, WriteBatch

MAX_PRUNE_PER_BATCH = 1000
"""Heights deleted by one prune call at most, so that turning retention on for a long chain
prunes progressively instead of in one huge batch."""


class BlockStore:
    """Blocks and what belongs to them, per height.

    `save_block` and `prune` add to the caller's batch and track the stored range the batch will
    leave; `mark_written` adopts that range once the batch is on disk. Both may go in one batch,
    in either order.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        raw = db.get(schema.BLOCK_STORE_META)
        if raw is None:
            self.base, self.height = 0, 0
        else:
            fields = field_list(decode(raw), "block store range", 2)
            self.base = field_int(fields[0], "base")
            self.height = field_int(fields[1], "height")
        self._pending: tuple[int, int] | None = None
        self._pending_txs: set[bytes] = set()  # tx hashes `save_block` indexed in the pending batch

    def _range(self) -> tuple[int, int]:
        return self._pending if self._pending is not None else (self.base, self.height)

    @property
    def pending_base(self) -> int:
        """The base the pending batch leaves (the stored base if nothing is pending)."""
        return self._range()[0]

    def _set_range(self, batch: WriteBatch, base: int, height: int) -> None:
        self._pending = (base, height)
        batch.put(schema.BLOCK_STORE_META, encode([base, height]))

    def save_block(
        self,
        batch: WriteBatch,
        height: int,
        block_hash: bytes,
        block: bytes,
        seen_commit: bytes,
        results: bytes,
        tx_hashes: list[bytes],
    ) -> None:
        """Add the block at `height` (the next one) and what belongs to it to `batch`."""
        base, top = self._range()
        if top and height != top + 1:
            raise ValueError(f"block store is at {top}; cannot save height {height}")
        if height < 1:
            raise ValueError(f"block heights start at 1, got {height}")
        batch.put(schema.block_key(height), block)
        batch.put(schema.block_hash_key(block_hash), schema.height_bytes(height))
        batch.put(schema.hash_by_height_key(height), block_hash)
        batch.put(schema.seen_commit_key(height), seen_commit)
        batch.put(schema.results_key(height), results)
        for index, tx_hash in enumerate(tx_hashes):
            batch.put(schema.tx_key(tx_hash), encode([height, index]))
        if tx_hashes:
            batch.put(schema.tx_list_key(height), b"".join(tx_hashes))
            self._pending_txs.update(tx_hashes)
        self._set_range(batch, base or height, height)

    def save_seen_commit(self, batch: WriteBatch, height: int, seen_commit: bytes) -> None:
        """The commit of a block this store does not hold (the height a state sync restored: the
        handshake starts from it, block sync goes on from the next height)."""
        batch.put(schema.seen_commit_key(height), seen_commit)

    def prune(self, batch: WriteBatch, retain_height: int) -> int:
        """Delete blocks below `retain_height` (at most MAX_PRUNE_PER_BATCH of them) into
        `batch`; returns the base the batch leaves. Their transactions' index entries go too
        (those of blocks stored before the `b:txl:` lists existed stay)."""
        base, top = self._range()
        if retain_height <= base or retain_height > top:
            return base
        new_base = min(retain_height, base + MAX_PRUNE_PER_BATCH)
        for height in range(base, new_base):
            batch.delete(schema.block_key(height))
            batch.delete(schema.seen_commit_key(height))
            batch.delete(schema.results_key(height))
            block_hash = self._db.get(schema.hash_by_height_key(height))
            if block_hash is not None:
                batch.delete(schema.block_hash_key(block_hash))
            batch.delete(schema.hash_by_height_key(height))
            hashes = self._db.get(schema.tx_list_key(height)) or b""
            for at in range(0, len(hashes), 32):
                tx_hash = hashes[at : at + 32]
                # not if a later block (stored, or in this batch) has a tx of that hash
                if tx_hash not in self._pending_txs and self.find_tx(tx_hash) == (height, at // 32):
                    batch.delete(schema.tx_key(tx_hash))
            batch.delete(schema.tx_list_key(height))
        self._set_range(batch, new_base, top)
        return new_base

    def mark_written(self) -> None:
        """The batch holding the pending saves and prunes is on disk: adopt its range."""
        if self._pending is not None:
            self.base, self.height = self._pending
            self._pending = None
        self._pending_txs.clear()

    def discard_pending(self) -> None:
        """The batch was dropped: forget its range."""
        self._pending = None
        self._pending_txs.clear()

    def load_block(self, height: int) -> bytes | None:
        return self._db.get(schema.block_key(height))

    def height_of_hash(self, block_hash: bytes) -> int | None:
        raw = self._db.get(schema.block_hash_key(block_hash))
        return None if raw is None else schema.height_from_bytes(raw)

    def hash_at(self, height: int) -> bytes | None:
        return self._db.get(schema.hash_by_height_key(height))

    def load_seen_commit(self, height: int) -> bytes | None:
        return self._db.get(schema.seen_commit_key(height))

    def load_results(self, height: int) -> bytes | None:
        return self._db.get(schema.results_key(height))

    def find_tx(self, tx_hash: bytes) -> tuple[int, int] | None:
        """(height, index in block) of a committed transaction."""
        raw = self._db.get(schema.tx_key(tx_hash))
        if raw is None:
            return None
        fields = field_list(decode(raw), "tx index entry", 2)
        return field_int(fields[0], "height"), field_int(fields[1], "index")
