"""`derivd export`: a height's application state as a genesis file that starts a new chain from it.

The genesis continues the chain: `initial_height` is the exported height + 1, `genesis_time` that
height's block time, `chain_id` the chain's (or a new one), `consensus_params` those in force, the
validators those of the state's validator registry with power above 0 (unnamed), `app_hash` the
height's app hash, and `app_state` the state tree's records at that height
(`execution.genesis_state`, section `state`). A node started on it loads the records in
`init_chain` and refuses to start unless they hash to `app_hash` (`consensus.execution.handshake`),
so the new chain provably starts from the exported state.

Heights: the last committed one by default, or an older one the state tree still keeps
(`[storage] state_versions`) whose block the block store still has. Export reads the database:
stop the node first (LevelDB lets one process open it).
"""

from __future__ import annotations

from pathlib import Path

from consensus.state import ChainState
from consensus.types import Block
from execution.app import AppMeta
from execution.genesis_state import exported_app_state
from execution.validators import RegisteredValidator
from genesis.genesis import ConsensusParams as GenesisParams
from genesis.genesis import GenesisDoc, GenesisValidator
from primitives import codec
from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database, check_format
from storage.statestore import StateStore
from storage.statetree import StateTree, TreeError


class ExportError(RuntimeError):
    """Nothing can be exported as asked; the message says why."""


def export_genesis(db_path: Path, doc: GenesisDoc, height: int = 0, chain_id: str = "") -> GenesisDoc:
    """The genesis of a new chain from the state at `height` (0: the last committed) of the node
    database at `db_path`, whose chain began with `doc`; `chain_id` (empty: the chain's)."""
    if not db_path.exists():
        raise ExportError(f"there is no node database at {db_path}: nothing to export")
    db = Database(db_path)
    try:
        check_format(db, stamp=False)
        raw_meta, raw_state = db.get(schema.APP_META), StateStore(db).load()
        if raw_meta is None or raw_state is None:
            raise ExportError("the node has committed nothing yet: nothing to export")
        last = AppMeta.decode(raw_meta).height
        chain = ChainState.decode(raw_state)
        height = height or last
        if height > last:
            raise ExportError(f"height {height} is not committed yet (the last is {last})")
        tree = StateTree(db)
        try:
            _, records = tree.subtree(height, b"")
            app_hash = tree.root_at(height)
        except TreeError as exc:
            raise ExportError(f"height {height}: {exc} (see [storage] state_versions)") from None
        time = _block_time(db, height, last, doc)
    finally:
        db.close()
    voting = [
        entry
        for key, value in sorted(records)
        if key.startswith(schema.APP_VALIDATOR_PREFIX)
        and (entry := RegisteredValidator.decode(value)).power > 0
    ]
    return GenesisDoc(
        genesis_time=time,
        chain_id=chain_id or chain.chain_id,
        initial_height=height + 1,
        consensus_params=GenesisParams.from_fields(chain.params.to_fields()),  # the same six fields
        validators=tuple(
            GenesisValidator(entry.address.raw, entry.pub_key, entry.power, "") for entry in voting
        ),
        app_hash=app_hash,
        app_state=exported_app_state(height, records),
    )


def _block_time(db: Database, height: int, last: int, doc: GenesisDoc) -> int:
    """The time of block `height` (the genesis time for the genesis height)."""
    if height == last:
        raw = db.get(schema.APP_BLOCK_TIME)
        if raw is not None:
            return codec.field_int(codec.decode(raw), "block time")
    if height == doc.initial_height - 1:
        return doc.genesis_time
    raw_block = BlockStore(db).load_block(height)
    if raw_block is None:
        raise ExportError(f"block {height} is no longer in the block store (see [storage] retain_blocks)")
    return Block.decode(raw_block).header.time
