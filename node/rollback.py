"""`derivd rollback`: a stopped node's state one height back, as `cometbft rollback` does, the
application's state included (it lives in the same database); and the execution, at the next
start, of the block such a rollback kept (`replay_kept_block`).

What committing height H wrote, and a rollback to H-1 takes back in ONE synced batch:
- the chain state (`c:state`) becomes that of H-1, rebuilt as CometBFT rebuilds it (the state of
  H, the validator set stored for H-1, the headers of H-1 and H), and it must accept block H as
  its next block (`validate_block`: the validator sets' hashes, the last commit's signatures by
  the set of H-1, BFT time) with the state tree's root of H-1 as H's app hash; the validator set
  stored for H+1 and block H's committed-evidence marks go;
- the application's flat state (every `a:` key) becomes the state tree's records at H-1 with
  their derived indexes (`execution.indexes`) and the `a:meta`/`a:time` of H-1; the tree's version
  H (its nodes, root and list of replaced nodes) and H's snapshot, if one was taken, go;
- the event index (`i:`) loses the entries of H;
- with `--hard`, block H goes too: block, hash entries, commit, results, tx index and tx list, and
  the block store's range ends at H-1.

Without `--hard` the block store keeps block H, one height above the state; the node's next start
executes it again (`replay_kept_block`, before the handshake) through the node's `BlockExecutor`,
so the node is at H again as if it had just decided it, and the event index catches up. With
`--hard` the WAL first loses its end-of-height markers of H and above, its messages kept: the node
starts at H, replays H's consensus messages (a validator's own proposal and votes among them,
which it does not sign again) and decides H again, and so on for the heights after it whose
messages the WAL holds; or it gets the blocks from its peers.

Refused with one line, changing nothing: no database, or nothing committed; block H the chain's
first (there is no state before it); a state of H-1 the tree no longer keeps (`[storage]
state_versions`) or a block H-1 the store has pruned (`retain_blocks`: the state needs its time);
a running node (`node.database`). A second rollback before the node has run changes nothing
(CometBFT's rule: the state is already one below the block store), except that `--hard` then
removes the kept block.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from consensus.app import Application
from consensus.evidence import decode_evidence_list
from consensus.execution import BlockExecutor, load_results
from consensus.mempool import Mempool, MempoolConfig
from consensus.state import BlockError, ChainState, validate_block
from consensus.types import Block, Commit
from consensus.validators import ValidatorSet
from consensus.wal import HEADER, parse_records
from execution.app import AppMeta
from execution.indexes import rebuild as rebuild_indexes
from node.database import open_database
from node.indexer import EventIndex
from primitives import codec
from primitives.batch_verify import BatchVerifier
from primitives.files import OSFile
from primitives.hashing import sha256
from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database, WriteBatch, check_format
from storage.statestore import StateStore
from storage.statetree import StateTree, TreeError

log = logging.getLogger("derivd.rollback")


class RollbackError(RuntimeError):
    """The state cannot be rolled back; the message says why (nothing was changed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RolledBack:
    """Where a rollback left the node."""

    height: int
    """the last committed height now"""
    app_hash: bytes
    """its app hash"""
    block_removed: bool
    """whether the block above it left the block store (`--hard`)"""


def rollback(db_path: Path, wal_path: Path, *, hard: bool) -> RolledBack:
    """Roll the node database at `db_path` back one height (see the module docstring); with
    `hard`, remove the block above the state too, cutting the WAL at `wal_path` first."""
    db = open_database(db_path, create=False)
    try:
        check_format(db, stamp=False)
        batch, result = _plan(db, hard)
        if result.block_removed:
            # before the batch: a crash between the two leaves a WAL without H's end marker beside
            # a database still at H, which starts (H's messages are then past inputs)
            unmark_wal_heights(wal_path, result.height + 1)
        db.write(batch, sync=True)
    finally:
        db.close()
    return result


def _plan(db: Database, hard: bool) -> tuple[WriteBatch, RolledBack]:
    """The batch of the rollback and where it leaves the node."""
    states, blocks = StateStore(db), BlockStore(db)
    raw_state = states.load()
    if raw_state is None:
        raise RollbackError("the node has committed nothing yet: there is nothing to roll back")
    state = ChainState.decode(raw_state)
    batch = WriteBatch()
    if blocks.height == state.last_block_height + 1:
        # rolled back already, the block kept (CometBFT: the state is not moved again)
        if hard:
            _remove_block(db, blocks, batch, blocks.height)
        return batch, RolledBack(height=state.last_block_height, app_hash=state.app_hash, block_removed=hard)
    height = state.last_block_height
    if blocks.height != height:
        raise RollbackError(
            f"the chain state is at height {height} but the block store at {blocks.height}: "
            "they do not belong together"
        )
    target = height - 1
    if target < state.initial_height:
        raise RollbackError(
            f"block {height} is the chain's first: there is no state before it to roll back to "
            "(`derivd unsafe-reset-all` starts over)"
        )
    raw_meta = db.get(schema.APP_META)
    if raw_meta is None or AppMeta.decode(raw_meta).height != height:
        raise RollbackError(f"the application state is not at the chain state's height {height}")
    top = _stored_block(blocks, height)
    below = blocks.load_block(target)
    if below is None:
        raise RollbackError(
            f"block {target} is no longer in the block store ([storage] retain_blocks): "
            f"cannot roll back to height {target}"
        )
    raw_validators = states.load_validators(target)
    if raw_validators is None:
        raise RollbackError(f"the validator set of height {target} is not stored: cannot roll back to it")
    tree = StateTree(db)
    try:
        app_hash = tree.root_at(target)
        _, records = tree.subtree(target, b"")
    except TreeError:
        raise RollbackError(
            f"the application state of height {target} is no longer kept ([storage] state_versions): "
            f"cannot roll back to it"
        ) from None
    header = top.header
    previous = replace(
        state,
        last_block_height=target,
        last_block_id=header.last_block_id,
        last_block_time=Block.decode(below).header.time,
        validators=state.last_validators,
        next_validators=state.validators,
        last_validators=ValidatorSet.from_fields(codec.decode(raw_validators)),
        # CometBFT's rule: a change after the target height is taken to be at the next one
        last_height_validators_changed=min(state.last_height_validators_changed, height),
        last_results_hash=header.last_results_hash,
        app_hash=header.app_hash,
    )
    verifier = BatchVerifier()
    try:
        if app_hash != header.app_hash:
            raise BlockError(f"block {height}: its app hash is not the state tree's root of {target}")
        validate_block(previous, top, verifier.verify_batch)
    except BlockError as exc:
        raise RollbackError(
            f"the state rebuilt for height {target} does not accept {exc}: the database is damaged; "
            "cannot roll back"
        ) from None
    finally:
        verifier.close()
    states.save(batch, previous.encode())
    batch.delete(schema.validators_key(height + 1))
    for evidence in decode_evidence_list(top.evidence):
        batch.delete(schema.committed_evidence_key(evidence.hash()))
    _restore_app_state(db, batch, records, AppMeta(target, app_hash), previous.last_block_time)
    for key, _ in db.iterate(schema.STATE_NODE_PREFIX + schema.height_bytes(height)):
        batch.delete(key)
    batch.delete(schema.state_root_key(height))
    batch.delete(schema.state_stale_key(height))
    batch.delete(schema.snapshot_key(height))
    _drop_indexed(db, blocks, batch, height)
    if hard:
        _remove_block(db, blocks, batch, height)
    return batch, RolledBack(height=target, app_hash=app_hash, block_removed=hard)


def _stored_block(blocks: BlockStore, height: int) -> Block:
    raw = blocks.load_block(height)
    if raw is None:
        raise RollbackError(f"block {height} is missing from the block store")
    return Block.decode(raw)


def _restore_app_state(
    db: Database, batch: WriteBatch, records: Iterable[tuple[bytes, bytes]], meta: AppMeta, time: int
) -> None:
    """Make the flat `a:` keys those of the state whose tree records are `records`."""
    wanted = dict(records)
    wanted.update(rebuild_indexes(wanted.items()))
    wanted[schema.APP_META] = meta.encode()
    wanted[schema.APP_BLOCK_TIME] = codec.encode(time)
    for key, value in db.iterate(schema.APP_PREFIX):
        kept = wanted.pop(key, None)
        if kept is None:
            batch.delete(key)
        elif kept != value:
            batch.put(key, kept)
    for key, value in wanted.items():
        batch.put(key, value)


def _drop_indexed(db: Database, blocks: BlockStore, batch: WriteBatch, height: int) -> None:
    """Take `height` out of the event index if it is the index's last height."""
    EventIndex(db, blocks, lambda h: load_results(blocks, h)).roll_back(batch, height)


def _remove_block(db: Database, blocks: BlockStore, batch: WriteBatch, height: int) -> None:
    """Delete the block store's top block, `height`, and end its range below it."""
    if blocks.base >= height:
        raise RollbackError(f"block {height} is the only block stored: cannot remove it")
    block = _stored_block(blocks, height)
    for index, tx in enumerate(block.txs):
        tx_hash = sha256(tx)
        if blocks.find_tx(tx_hash) == (height, index):
            batch.delete(schema.tx_key(tx_hash))
    block_hash = blocks.hash_at(height)
    if block_hash is not None:
        batch.delete(schema.block_hash_key(block_hash))
    for key in (
        schema.block_key(height),
        schema.hash_by_height_key(height),
        schema.seen_commit_key(height),
        schema.results_key(height),
        schema.tx_list_key(height),
    ):
        batch.delete(key)
    batch.put(schema.BLOCK_STORE_META, codec.encode([blocks.base, height - 1]))


def unmark_wal_heights(path: Path, height: int) -> int:
    """Remove the consensus WAL's end-of-height markers of `height` and above (the database no
    longer has those heights), keeping every message, so that the node replays them; how many
    markers went. A torn tail is left as it is (the node cuts it when it opens the WAL)."""
    file = OSFile(path)
    try:
        data = file.read()
        kept: list[bytes] = []
        removed = offset = 0
        while offset + HEADER.size <= len(data):
            _, length = HEADER.unpack_from(data, offset)
            end = offset + HEADER.size + length
            records, valid = parse_records(data[offset:end])
            if not records or valid != end - offset:
                break
            ended = records[0].end_height
            if ended is not None and ended >= height:
                removed += 1
            else:
                kept.append(data[offset:end])
            offset = end
        if removed:
            file.replace(b"".join(kept) + data[offset:])
        return removed
    finally:
        file.close()


def replay_kept_block(db: Database, app: Application, mempool_settings: MempoolConfig) -> int | None:
    """If a rollback left the block store one block above the chain state, execute and store that
    block again now (one batch, as the node commits any block); its height, else None."""
    states, blocks = StateStore(db), BlockStore(db)
    raw_state = states.load()
    if raw_state is None:
        return None
    state = ChainState.decode(raw_state)
    height = state.last_block_height + 1
    if state.is_initial() or blocks.height != height or app.info().last_block_height != height - 1:
        return None  # nothing kept above the state (or a mismatch the handshake reports)
    block = _stored_block(blocks, height)
    raw_commit = blocks.load_seen_commit(height)
    if raw_commit is None:
        raise RollbackError(f"the commit of the kept block {height} is missing from the block store")
    commit = Commit.decode(raw_commit)
    before = load_results(blocks, height)
    blocks.height = height - 1  # the block store takes block `height` again, the same bytes
    mempool = Mempool(mempool_settings, app.check_tx, app.admission_work)
    after = BlockExecutor(db, blocks, states, app, mempool).apply_block(state, block, commit.block_id, commit)
    if before is not None and before.finalize.app_hash != after.app_hash:
        log.warning(
            "block %d executed again gives app hash %s, not %s as before the rollback",
            height,
            after.app_hash.hex().upper(),
            before.finalize.app_hash.hex().upper(),
        )
    log.info(
        "executed block %d again (kept by a rollback): app hash %s", height, after.app_hash.hex().upper()
    )
    return height
