"""Test scaffolding for the consensus machine: a toy application, validator keys, genesis
states and a synchronous driver that carries out effects on a virtual clock."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from consensus.machine import (
    BlockPartEvent,
    CommittedEvent,
    ConsensusMachine,
    Decide,
    Effect,
    Event,
    ProposalEvent,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    StepChanged,
    TimeoutConfig,
    TimeoutEvent,
    VoteEvent,
)
from consensus.privval import FilePrivValidator, LastSignState
from consensus.state import ChainState, ConsensusParams, genesis_state
from consensus.types import Block, Commit
from primitives.batch_verify import BatchVerifier
from primitives.files import OSFile
from primitives.hashing import merkle_root, sha256
from primitives.keys import PrivateKey

GENESIS_TIME = 1_700_000_000 * 10**9
SECOND = 10**9
FAST = TimeoutConfig(
    propose=3 * SECOND,
    propose_delta=SECOND // 2,
    prevote=SECOND,
    prevote_delta=SECOND // 2,
    precommit=SECOND,
    precommit_delta=SECOND // 2,
    commit=SECOND,
)


def keys(n: int) -> list[PrivateKey]:
    return [PrivateKey.from_seed(sha256(b"validator %d" % i)) for i in range(n)]


def make_genesis(members: Sequence[tuple[PrivateKey, int]], chain_id: str = "test-chain") -> ChainState:
    return genesis_state(
        chain_id,
        1,
        GENESIS_TIME,
        [(k.public_key.raw, power) for k, power in members],
        ConsensusParams(),
        sha256(b"genesis app"),
    )


@dataclass
class ToyApp:
    """Proposes its pending txs once; rejects blocks holding a tx in `poison`."""

    pending: list[bytes] = field(default_factory=list)
    poison: frozenset[bytes] = frozenset()

    def proposal_txs(
        self, state: ChainState, height: int, time: int, proposer: bytes, max_bytes: int
    ) -> list[bytes]:
        txs, self.pending = self.pending, []
        return txs

    def proposal_evidence(self, state: ChainState, max_bytes: int) -> list[bytes]:
        return []

    def process_proposal(self, state: ChainState, block: Block) -> bool:
        return not any(tx in self.poison for tx in block.txs)


def next_state(state: ChainState, decide: Decide) -> ChainState:
    app_hash = sha256(state.app_hash + merkle_root(list(decide.block.txs)))
    return state.next_state(decide.block_id, decide.block.header, merkle_root([]), app_hash, [])


class SoloDriver:
    """Runs one machine to completion on a virtual clock: effects are carried out at once,
    own messages fed back first, and when nothing is queued the pending timeout fires."""

    def __init__(self, tmp_path: Path, key: PrivateKey, state: ChainState, app: ToyApp | None = None) -> None:
        self.verifier = BatchVerifier(workers=1)
        self.app = app or ToyApp()
        self.privval = FilePrivValidator(key, OSFile(tmp_path / "pv_state.json"), LastSignState())
        self.machine = ConsensusMachine(state, key.address.raw, FAST, self.app, self.verifier.verify_batch)
        self.now = GENESIS_TIME
        self.queue: deque[Event] = deque()
        self.timeout: ScheduleTimeout | None = None
        self.decided: list[Decide] = []
        self.steps: list[StepChanged] = []
        self.run_effects(self.machine.handle(CommittedEvent(state, None), self.now))

    def run_effects(self, effects: list[Effect]) -> None:
        chain_id = self.machine.state.chain_id
        for effect in effects:
            if isinstance(effect, SignVote):
                self.queue.append(VoteEvent(self.privval.sign_vote(chain_id, effect.vote)))
            elif isinstance(effect, SignProposal):
                proposal = self.privval.sign_proposal(chain_id, effect.proposal)
                self.queue.append(ProposalEvent(proposal))
                for part in effect.parts.parts():
                    self.queue.append(BlockPartEvent(proposal.height, proposal.round, part))
            elif isinstance(effect, ScheduleTimeout):
                self.timeout = effect
            elif isinstance(effect, Decide):
                self.decided.append(effect)
                self.queue.append(CommittedEvent(next_state(self.machine.state, effect), effect.commit))
            elif isinstance(effect, StepChanged):
                self.steps.append(effect)

    def step(self) -> None:
        if self.queue:
            event = self.queue.popleft()
        else:
            assert self.timeout is not None, "nothing to do and no timeout pending"
            timeout, self.timeout = self.timeout, None
            self.now += timeout.duration
            event = TimeoutEvent(timeout.height, timeout.round, timeout.step)
        self.now += 1_000_000
        self.run_effects(self.machine.handle(event, self.now))

    def run_until(self, height: int, max_steps: int = 10_000) -> None:
        for _ in range(max_steps):
            if len(self.decided) >= height:
                return
            self.step()
        raise AssertionError(f"no decision at height {height} within {max_steps} steps")


def last_commit(driver: SoloDriver) -> Commit:
    return driver.decided[-1].commit
