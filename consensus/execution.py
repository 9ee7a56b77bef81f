"""Block execution and the start-up handshake: how a decided block becomes stored state.

`BlockExecutor.apply_block` runs the application's finalize_block, then writes the block, its
commit, the results, the transaction index, the new chain state, the application's state and what
the node's `HeightRecorder`s keep (the event index) in ONE synced LevelDB batch: after any crash
the node is at height H or H-1, never between. Then it updates the mempool. `handshake` brings the
application and the chain state together at start: a fresh node runs InitChain; a restarted one
checks that both are at the same height and hash. It also feeds the machine's `ProposalSource`
from the mempool and the application.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from consensus.app import (
    Application,
    Event,
    ExecTxResult,
    FinalizeBlockRequest,
    FinalizeBlockResult,
    InitChainRequest,
    ProposalRequest,
    ValidatorUpdate,
)
from consensus.evidence import EvidenceError, EvidencePool, decode_evidence_list
from consensus.mempool import Mempool
from consensus.state import ChainState, ConsensusParams, genesis_state
from consensus.types import MAX_BLOCK_BYTES, Block, BlockID, Commit
from consensus.validators import ValidatorSet
from primitives.codec import decode, encode, field_bytes, field_int, field_list, pack_unchecked
from primitives.hashing import merkle_root, sha256
from storage.blockstore import BlockStore
from storage.db import Database, WriteBatch
from storage.statestore import StateStore

log = logging.getLogger("derivd.consensus")


class HandshakeError(RuntimeError):
    """The stored chain state and the application disagree; the node cannot start."""


@dataclass(frozen=True, slots=True)
class BlockResults:
    """What finalize_block returned for a stored block (for block_results, tx and events)."""

    height: int
    tx_results: tuple[ExecTxResult, ...]
    finalize: FinalizeBlockResult

    def encode(self) -> bytes:
        # unchecked: every field is built canonical here (ints from int fields, an event
        # attribute's index flag as 1/0, text encoded to bytes), and a block's results hold tens
        # of thousands of values
        return pack_unchecked(
            [
                self.height,
                [r.to_fields() for r in self.tx_results],
                [e.to_fields() for e in self.finalize.events],
                [[u.pub_key, u.power] for u in self.finalize.validator_updates],
                self.finalize.app_hash,
            ]
        )

    @classmethod
    def decode(cls, raw: bytes) -> BlockResults:
        f = field_list(decode(raw, max_size=MAX_BLOCK_BYTES), "block results", 5)
        tx_results = tuple(ExecTxResult.from_fields(r) for r in field_list(f[1], "tx results"))
        events = tuple(Event.from_fields(e) for e in field_list(f[2], "events"))
        updates = []
        for item in field_list(f[3], "validator updates"):
            pair = field_list(item, "validator update", 2)
            updates.append(ValidatorUpdate(field_bytes(pair[0], "pub_key", 32), field_int(pair[1], "power")))
        app_hash = field_bytes(f[4], "app_hash", max_size=64)
        finalize = FinalizeBlockResult(tx_results, app_hash, events, tuple(updates))
        return cls(field_int(f[0], "height"), tx_results, finalize)


def results_hash(tx_results: tuple[ExecTxResult, ...]) -> bytes:
    return merkle_root([encode(r.deterministic_fields()) for r in tx_results])


CommitListener = Callable[[Block, BlockID, BlockResults, ChainState], None]


class HeightRecorder(Protocol):
    """What the node keeps of each height beside the block, in the height's own batch (the event
    index): never behind the block store, never ahead of it."""

    def record(self, batch: WriteBatch, block: Block, results: BlockResults) -> None:
        """Add what this height keeps to `batch` (the block store's pruning is in it already)."""

    def written(self) -> None:
        """The batch is on disk."""


class BlockApplication(Protocol):
    """What `BlockExecutor` needs of the application (its `Application`'s two block methods; the
    node may wrap them, e.g. to time finalize_block)."""

    def finalize_block(self, request: FinalizeBlockRequest) -> FinalizeBlockResult: ...

    def commit(self, batch: WriteBatch) -> int: ...


class BlockExecutor:
    """Executes decided blocks through the application into the stores."""

    def __init__(
        self,
        db: Database,
        blocks: BlockStore,
        states: StateStore,
        app: BlockApplication,
        mempool: Mempool,
        retain_blocks: int = 0,
    ) -> None:
        """`retain_blocks` > 0 keeps only that many recent blocks."""
        self.db = db
        self.blocks = blocks
        self.states = states
        self.app = app
        self.mempool = mempool
        self.retain_blocks = retain_blocks
        self.listeners: list[CommitListener] = []
        self.recorders: list[HeightRecorder] = []

    def apply_block(self, state: ChainState, block: Block, block_id: BlockID, commit: Commit) -> ChainState:
        """Execute and store `block` (already validated and decided); return the next state."""
        header = block.header
        evidence = decode_evidence_list(block.evidence)
        result = self.app.finalize_block(
            FinalizeBlockRequest(
                height=header.height,
                time=header.time,
                block_hash=block.hash,
                proposer_address=header.proposer_address,
                txs=block.txs,
                misbehavior=tuple(e.misbehavior() for e in evidence),
            )
        )
        if len(result.tx_results) != len(block.txs):
            raise RuntimeError(
                f"application returned {len(result.tx_results)} results for {len(block.txs)} transactions"
            )
        new_state = state.next_state(
            block_id,
            header,
            results_hash(result.tx_results),
            result.app_hash,
            [(u.pub_key, u.power) for u in result.validator_updates],
        )
        results = BlockResults(header.height, result.tx_results, result)
        batch = WriteBatch()
        self.blocks.save_block(
            batch,
            header.height,
            block.hash,
            block.encode(),
            commit.encode(),
            results.encode(),
            [sha256(tx) for tx in block.txs],
        )
        self.states.save_validators(batch, header.height, encode(state.validators.to_fields()))
        self.states.save_validators(batch, new_state.height, encode(new_state.validators.to_fields()))
        self.states.save(batch, new_state.encode())
        for item in evidence:
            self.states.save_committed_evidence(batch, item.hash(), header.height)
        app_retain = self.app.commit(batch)
        self._prune(batch, header.height, app_retain)
        for recorder in self.recorders:
            recorder.record(batch, block, results)
        self.db.write(batch, sync=True)
        self.blocks.mark_written()
        for recorder in self.recorders:
            recorder.written()
        self.mempool.update(header.height, block.txs)
        for listener in self.listeners:
            listener(block, block_id, results, new_state)
        return new_state

    def _prune(self, batch: WriteBatch, height: int, app_retain: int) -> None:
        """Add the pruning of blocks below the retain height to the height's batch: the lower of
        the configured retention and the application's retain height (0 means keep all)."""
        retain = max(0, height - self.retain_blocks + 1) if self.retain_blocks > 0 else 0
        if app_retain > 0:
            retain = min(retain, app_retain) if retain else app_retain
        if retain > 0:
            self.blocks.prune(batch, retain)

    def load_results(self, height: int) -> BlockResults | None:
        return load_results(self.blocks, height)


def load_results(blocks: BlockStore, height: int) -> BlockResults | None:
    """The stored results of the block at `height` (None if not stored)."""
    raw = blocks.load_results(height)
    return None if raw is None else BlockResults.decode(raw)


def handshake(
    app: Application,
    states: StateStore,
    blocks: BlockStore,
    genesis: InitChainRequest,
    params: ConsensusParams,
    genesis_app_hash: bytes = b"",
) -> tuple[ChainState, Commit | None]:
    """The chain state to start from and the commit of its last block. A new chain's genesis state
    must hash to `genesis_app_hash` when one is given (the genesis file's `app_hash`: CometBFT
    does not check it; an exported state must be the one it names)."""
    info = app.info()
    raw = states.load()
    if raw is None:
        if info.last_block_height != 0:
            raise HandshakeError(
                f"the application is at height {info.last_block_height} but there is no chain state"
            )
        result = app.init_chain(genesis)
        if genesis_app_hash and result.app_hash != genesis_app_hash:
            raise HandshakeError(
                f"the genesis file's app_hash is {genesis_app_hash.hex().upper()} but its app_state hashes "
                f"to {result.app_hash.hex().upper()}: the genesis is not the state it names"
            )
        members = result.validators or genesis.validators
        state = genesis_state(
            genesis.chain_id,
            genesis.initial_height,
            genesis.time,
            [(v.pub_key, v.power) for v in members],
            params,
            result.app_hash,
        )
        return state, None
    state = ChainState.decode(raw)
    if state.chain_id != genesis.chain_id:
        raise HandshakeError(
            f"the data directory belongs to chain {state.chain_id!r}, not {genesis.chain_id!r}"
        )
    if info.last_block_height != state.last_block_height or info.last_block_app_hash != state.app_hash:
        raise HandshakeError(
            f"the application is at height {info.last_block_height} (app hash "
            f"{info.last_block_app_hash.hex().upper()}) but the chain state is at height "
            f"{state.last_block_height} (app hash {state.app_hash.hex().upper()})"
        )
    raw_commit = blocks.load_seen_commit(state.last_block_height)
    if raw_commit is None:
        raise HandshakeError(f"the commit of block {state.last_block_height} is missing from the block store")
    return state, Commit.decode(raw_commit)


class AppProposalSource:
    """The machine's ProposalSource: the mempool's transactions through the application, and
    the evidence pool's evidence."""

    def __init__(self, app: Application, mempool: Mempool, evidence: EvidencePool) -> None:
        self.app = app
        self.mempool = mempool
        self.evidence = evidence

    def proposal_evidence(self, state: ChainState, max_bytes: int) -> list[bytes]:
        return self.evidence.for_proposal(state, max_bytes)

    def proposal_txs(
        self, state: ChainState, height: int, time: int, proposer: bytes, max_bytes: int
    ) -> list[bytes]:
        # Each tx costs its bytes plus a few bytes of framing in the block encoding.
        candidates = self.mempool.reap(max_bytes=max(0, max_bytes - 16 * len(self.mempool)))
        return self.app.prepare_proposal(
            ProposalRequest(height, time, proposer, tuple(candidates), max_bytes)
        )

    def process_proposal(self, state: ChainState, block: Block) -> bool:
        header = block.header
        try:
            self.evidence.check_block(state, block.evidence, header.time)
        except EvidenceError as exc:
            log.warning("block %d has invalid evidence: %s", header.height, exc)
            return False
        return self.app.process_proposal(
            ProposalRequest(header.height, header.time, header.proposer_address, block.txs, 0, block.hash)
        )


def stored_validators(states: StateStore) -> Callable[[int], ValidatorSet | None]:
    """The validator set of a committed height, from the state store."""

    def validators_at(height: int) -> ValidatorSet | None:
        raw = states.load_validators(height)
        return None if raw is None else ValidatorSet.from_fields(decode(raw))

    return validators_at


def stored_block_time(blocks: BlockStore) -> Callable[[int], int | None]:
    """The header time of a stored block."""

    def block_time_at(height: int) -> int | None:
        raw = blocks.load_block(height)
        return None if raw is None else Block.decode(raw).header.time

    return block_time_at
