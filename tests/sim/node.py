"""A simulated validator: the real ConsensusMachine, ConsensusDriver, WAL and FilePrivValidator
(on in-memory files that lose unsynced bytes when the node crashes), an evidence pool, and a toy
application whose state is a hash chain of the blocks' transactions and which removes a
double-signer's voting power (two heights later, through the validator updates).

What survives a crash: the synced part of the WAL, the private validator's state, the committed
chain (blocks, commits, states: written atomically per height, as the node's LevelDB batch) and
the pending evidence. Everything else is rebuilt on restart.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from consensus.driver import ConsensusDriver, Gossip
from consensus.evidence import EvidenceError, EvidencePool, decode_evidence_list
from consensus.machine import ConsensusMachine, ScheduleTimeout, TimeoutConfig
from consensus.privval import FilePrivValidator, load_sign_state
from consensus.state import ChainState
from consensus.types import Block, BlockID, Commit, VoteType
from consensus.validators import ValidatorSet
from consensus.votes import SignatureCheck
from consensus.wal import WAL
from primitives.hashing import merkle_root, sha256
from primitives.keys import PrivateKey
from tests.sim.memfile import MemFile


@dataclass
class Chain:
    """A node's durable chain: what its LevelDB would hold."""

    genesis: ChainState
    blocks: list[Block] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    states: list[ChainState] = field(default_factory=list)
    pending_evidence: dict[bytes, bytes] = field(default_factory=dict)
    committed_evidence: set[bytes] = field(default_factory=set)

    @property
    def state(self) -> ChainState:
        return self.states[-1] if self.states else self.genesis

    @property
    def height(self) -> int:
        return self.state.last_block_height

    def block_at(self, height: int) -> tuple[Block, Commit] | None:
        index = height - self.genesis.initial_height
        if 0 <= index < len(self.blocks):
            return self.blocks[index], self.commits[index]
        return None

    def time_at(self, height: int) -> int | None:
        found = self.block_at(height)
        return None if found is None else found[0].header.time

    def validators_at(self, height: int) -> ValidatorSet | None:
        for state in [self.genesis, *self.states]:
            if state.height == height:
                return state.validators
        return None

    # PendingStore
    def save_pending(self, key: bytes, raw: bytes) -> None:
        self.pending_evidence[key] = raw

    def delete_pending(self, keys: Sequence[bytes]) -> None:
        for key in keys:
            self.pending_evidence.pop(key, None)

    def load_pending(self) -> list[bytes]:
        return list(self.pending_evidence.values())


WAL_ROTATE_BYTES = 64 << 10
"""A simulated node's WAL starts afresh at the first end-height marker past this size (the
node's default is 64 MiB): restarts replay little, and rotation runs under crashes too."""

POISON = b"poison "
"""Transactions that start with this make the toy application reject a block."""


class ToyApplier:
    """Applies decided blocks to a node's Chain (the BlockApplier of a simulated node)."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def apply_block(self, state: ChainState, block: Block, block_id: BlockID, commit: Commit) -> ChainState:
        updates: list[tuple[bytes, int]] = []
        removed: set[bytes] = set()
        remaining = state.next_validators.total_power
        for evidence in decode_evidence_list(block.evidence):
            address = evidence.validator_address
            member = state.next_validators.get(address)
            if member is None or address in removed or remaining - member.power <= 0:
                continue
            removed.add(address)
            remaining -= member.power
            updates.append((member.pub_key, 0))
        for evidence in decode_evidence_list(block.evidence):
            self.chain.committed_evidence.add(evidence.key)
        app_hash = sha256(state.app_hash + merkle_root(list(block.txs)))
        new_state = state.next_state(block_id, block.header, merkle_root([]), app_hash, updates)
        self.chain.blocks.append(block)
        self.chain.commits.append(commit)
        self.chain.states.append(new_state)
        return new_state


class ToySource:
    """Proposals carry the node's pending toy transactions and evidence."""

    def __init__(self, node: SimNode) -> None:
        self.node = node

    def proposal_txs(
        self, state: ChainState, height: int, time: int, proposer: bytes, max_bytes: int
    ) -> list[bytes]:
        txs = self.node.txs_for(height)
        return txs if sum(map(len, txs)) <= max_bytes else []

    def proposal_evidence(self, state: ChainState, max_bytes: int) -> list[bytes]:
        assert self.node.evidence is not None
        return self.node.evidence.for_proposal(state, max_bytes)

    def process_proposal(self, state: ChainState, block: Block) -> bool:
        assert self.node.evidence is not None
        if any(tx.startswith(POISON) for tx in block.txs):
            return False
        try:
            self.node.evidence.check_block(state, block.evidence, block.header.time)
        except EvidenceError:
            return False
        return True


VoteObserver = Callable[[ConsensusMachine, VoteType, BlockID], None]


class WatchedMachine(ConsensusMachine):
    """An honest node's machine: each vote it decides on is shown to `observer` first, with the
    machine as it is at that moment."""

    observer: VoteObserver | None = None

    def _sign_vote(self, vote_type: VoteType, block_id: BlockID) -> None:
        if self.observer is not None and self.is_validator:
            self.observer(self, vote_type, block_id)
        super()._sign_vote(vote_type, block_id)


class UnguardedSigner(FilePrivValidator):
    """A byzantine validator's signer: signs whatever it is asked, never refuses."""

    def _check(self, height: int, round_: int, step: int, message: bytes) -> tuple[bytes, int] | None:
        return None


class SimNode:
    def __init__(
        self,
        index: int,
        key: PrivateKey,
        genesis: ChainState,
        timeouts: TimeoutConfig,
        check: SignatureCheck,
        rng: random.Random,
        byzantine: bool,
    ) -> None:
        self.index = index
        self.name = f"n{index}"
        self.key = key
        self.timeouts = timeouts
        self.check = check
        self.rng = rng
        self.byzantine = byzantine
        self.chain = Chain(genesis)
        self.wal_file = MemFile(f"{self.name}/wal")
        self.pv_file = MemFile(f"{self.name}/priv_validator_state.json")
        self.big_tx_heights: set[int] = set()
        self.up = False
        self.driver: ConsensusDriver | None = None
        self.evidence: EvidencePool | None = None
        self.pending_timeout: ScheduleTimeout | None = None
        self.timer_token = 0
        self.last_stall_key: tuple[int, int, int, int] | None = None
        self.observer: VoteObserver | None = None
        """Told of every vote an honest node's machine decides on (tests/sim/checks.py)."""
        self.committed_height = genesis.last_block_height
        """The height up to which the simulation has checked this node's commits."""

    @property
    def address(self) -> bytes:
        return self.key.address.raw

    @property
    def machine(self) -> ConsensusMachine:
        assert self.driver is not None
        return self.driver.machine

    def txs_for(self, height: int) -> list[bytes]:
        txs = [b"tx %d from %s" % (height, self.name.encode())]
        if height in self.big_tx_heights:
            txs.append(bytes(70_000))  # a block of two parts
        return txs

    def start(
        self, clock: Callable[[], int], schedule: Callable[[ScheduleTimeout], None], gossip: Gossip
    ) -> None:
        """Boot (or reboot) from the durable state, replaying the WAL."""
        state = self.chain.state
        last_commit = self.chain.commits[-1] if self.chain.commits else None
        privval = make_privval(self)
        self.evidence = EvidencePool(
            state.chain_id,
            self.check,
            self.chain.validators_at,
            self.chain.committed_evidence.__contains__,
            self.chain,
            self.chain.time_at,
        )
        source = ToySource(self)
        machine = (
            ConsensusMachine(state, self.address, self.timeouts, source, self.check)
            if self.byzantine
            else WatchedMachine(state, self.address, self.timeouts, source, self.check)
        )
        if isinstance(machine, WatchedMachine):
            machine.observer = self.observer
        self.driver = ConsensusDriver(
            machine,
            WAL(self.wal_file, rotate_bytes=WAL_ROTATE_BYTES),
            privval,
            ToyApplier(self.chain),
            clock,
            schedule,
            self.evidence,
        )
        self.driver.gossip.append(gossip)
        self.up = True
        self.driver.start(last_commit)

    def crash(self) -> None:
        """Lose everything in memory and the unsynced end of the WAL."""
        self.up = False
        self.driver = None
        self.evidence = None
        self.pending_timeout = None
        self.timer_token += 1
        self.wal_file.crash(self.rng)


def make_privval(node: SimNode) -> FilePrivValidator:
    state = load_sign_state(node.pv_file)
    signer = UnguardedSigner if node.byzantine else FilePrivValidator
    return signer(node.key, node.pv_file, state)
