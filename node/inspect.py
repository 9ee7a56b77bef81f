"""`derivd inspect`: the node's own JSON-RPC (`node.rpc`) over a stopped node's database, as
`cometbft inspect` serves a crashed or stopped node's data.

Everything the stores answer is served as the running node serves it: `status`, `block`,
`block_results`, `blockchain`, `commit`, `header`, `tx`, `tx_search`, `block_search`,
`validators`, `genesis`, `consensus_params`, `abci_info`, `abci_query` (the application's state
is in the same database). What needs the running node (its mempool, consensus round or peers)
or would change something is refused with an error naming the method (`node.rpc`'s
NEEDS_RUNNING_NODE; no `/websocket`).

Nothing is written: the database is opened without the format stamp or the event index's
catch-up, no block is executed (a block `derivd rollback` kept is shown, not replayed), the WAL
and the private validator's state are not opened. LevelDB lets one process hold the database, so
inspect fails with one line while the node runs, and the node cannot start while inspect runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from consensus.driver import ConsensusDriver
from consensus.evidence import EvidencePool
from consensus.execution import AppProposalSource, BlockExecutor, stored_validators
from consensus.machine import ConsensusMachine
from consensus.mempool import Mempool
from consensus.service import ConsensusService, wall_clock
from consensus.state import ChainState
from consensus.types import Commit
from consensus.wal import WAL
from execution.app import ExchangeApp
from genesis.genesis import GenesisDoc
from node.config import Config
from node.database import open_database
from node.events import EventBus
from node.indexer import EventIndex
from node.node import mempool_config, rpc_env_of, start_rpc, timeout_config
from node.rpc import RPCEnv
from p2p.nodekey import node_id
from primitives.batch_verify import BatchVerifier
from primitives.keyfile import KeyFileError, load_key_file
from storage.blockstore import BlockStore
from storage.db import Database, StorageError, check_format
from storage.statestore import StateStore

log = logging.getLogger("derivd.inspect")


class _NoWAL:
    """The DurableFile of the consensus driver the RPC reads the chain state through: empty, and
    never written (inspect runs no consensus)."""

    name = "(derivd inspect: no WAL)"

    def read(self) -> bytes:
        return b""

    def append(self, data: bytes) -> None:
        raise RuntimeError("derivd inspect writes nothing")

    def sync(self) -> None:
        pass

    def truncate(self, size: int) -> None:
        raise RuntimeError("derivd inspect writes nothing")

    def replace(self, data: bytes) -> None:
        raise RuntimeError("derivd inspect writes nothing")

    def close(self) -> None:
        pass


def stored_env(config: Config, doc: GenesisDoc, db: Database, verifier: BatchVerifier) -> RPCEnv:
    """The RPC's environment over the stores of `db` (committed state only; StorageError if the
    node has committed nothing)."""
    check_format(db, stamp=False)
    blocks, states = BlockStore(db), StateStore(db)
    raw_state = states.load()
    if raw_state is None:
        raise StorageError(f"the node has committed nothing yet: there is nothing in {db.path} to inspect")
    state = ChainState.decode(raw_state)
    raw_commit = blocks.load_seen_commit(state.last_block_height)
    app = ExchangeApp(db, doc.chain_id, verifier, state_versions=config.storage.state_versions)
    mempool = Mempool(mempool_config(config), app.check_tx, app.admission_work)  # never fed
    evidence = EvidencePool(
        state.chain_id, verifier.verify_batch, stored_validators(states), states.has_committed_evidence
    )
    machine = ConsensusMachine(
        state, None, timeout_config(config), AppProposalSource(app, mempool, evidence), verifier.verify_batch
    )
    executor = BlockExecutor(db, blocks, states, app, mempool)  # block results only
    driver = ConsensusDriver(machine, WAL(_NoWAL()), None, executor, wall_clock, lambda _: None)
    index = EventIndex(db, blocks, executor.load_results) if config.tx_index.indexer == "kv" else None
    try:
        pub_key: bytes | None = load_key_file(config.path(config.base.priv_validator_key_file)).public_key.raw
    except KeyFileError:
        pub_key = None
    try:
        node = node_id(load_key_file(config.path(config.base.node_key_file)).public_key)
    except KeyFileError:
        node = ""
    return rpc_env_of(
        config,
        doc,
        node,
        blocks=blocks,
        states=states,
        executor=executor,
        consensus=ConsensusService(driver, None if raw_commit is None else Commit.decode(raw_commit)),
        mempool=mempool,
        app=app,
        bus=EventBus(),
        validator_pub_key=pub_key,
        index=index,
        stored_only=True,
    )


async def serve(
    config: Config, doc: GenesisDoc, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve the RPC over the node database of `config`'s home at `[rpc] laddr` until cancelled;
    reports the address it bound. StorageError if there is no database, it is in use or empty."""
    path: Path = config.path(config.base.db_dir) / "derivd.db"
    db = open_database(path, create=False)
    verifier = BatchVerifier()
    try:
        env = stored_env(config, doc, db, verifier)
        async with trio.open_nursery() as nursery:
            bound = await start_rpc(nursery, env, config)
            log.info(
                "inspecting %s read-only (height %d); rpc listening on %s", path, env.blocks.height, bound
            )
            task_status.started(bound)
    finally:
        verifier.close()
        db.close()
