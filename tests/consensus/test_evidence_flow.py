"""A double sign from evidence to the validator set, through the node's real core (`build_core`:
ExchangeApp on LevelDB, evidence pool, block executor): four validators of unequal power whose
keys the test holds; blocks built, signed and committed by hand. Validator X precommits block 1
and another block at height 1; block 2 carries the evidence. The application records it, sets
X's power to 0 and reports a `misbehavior` event; the node stores the evidence as committed and
refuses it again; X still validates height 3 and is gone from height 4."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from consensus.app import InitChainRequest, ValidatorUpdate
from consensus.evidence import KIND_DUPLICATE_VOTE, DuplicateVoteEvidence, EvidenceError, EvidencePool
from consensus.execution import AppProposalSource, stored_validators
from consensus.mempool import MempoolConfig
from consensus.privval import FilePrivValidator, LastSignState
from consensus.state import ChainState, ConsensusParams, validate_block
from consensus.types import (
    EMPTY_COMMIT,
    Block,
    BlockID,
    Commit,
    CommitSig,
    PartSet,
    PartSetHeader,
    Vote,
    VoteType,
)
from consensus.validators import ValidatorSet
from consensus.votes import CommitError, VoteError, VoteSet, verify_commit
from consensus.wal import WAL
from execution.app import ExchangeApp
from node.node import Core, build_core
from primitives.batch_verify import BatchVerifier
from primitives.files import OSFile
from primitives.keys import PrivateKey
from storage.db import Database
from tests.consensus.harness import FAST, GENESIS_TIME, keys

CHAIN = "evidence-flow"
MS = 1_000_000
KEYS = keys(4)
POWERS = [40, 30, 20, 10]
X = KEYS[3]  # the equivocator: power 10 of 100
OTHER_BLOCK = BlockID(b"\x77" * 32, PartSetHeader(1, b"\x66" * 32))


@dataclass
class Net:
    db: Database
    verifier: BatchVerifier
    app: ExchangeApp
    core: Core
    source: AppProposalSource
    keys: dict[bytes, PrivateKey]

    def sign(
        self, validators: ValidatorSet, height: int, block_id: BlockID, signer: PrivateKey, ts: int
    ) -> Vote:
        index = validators.index_of(signer.address.raw)
        assert index is not None, "the signer is not in the set"
        unsigned = Vote(VoteType.PRECOMMIT, height, 0, block_id, ts, signer.address.raw, index)
        return unsigned.with_signature(signer.sign(unsigned.sign_bytes(CHAIN)))

    def commit(
        self,
        validators: ValidatorSet,
        height: int,
        block_id: BlockID,
        time: int,
        signers: Sequence[PrivateKey],
    ) -> Commit:
        votes = VoteSet(CHAIN, height, 0, VoteType.PRECOMMIT, validators, self.verifier.verify_batch)
        for i, signer in enumerate(signers):
            votes.add(self.sign(validators, height, block_id, signer, time + (i + 1) * MS))
        return votes.make_commit()

    def propose(self, state: ChainState, last_commit: Commit, evidence: Sequence[bytes] = ()) -> Block:
        return state.make_block([], evidence, last_commit, state.validators.proposer.address)

    def apply(
        self, state: ChainState, block: Block, signers: Sequence[PrivateKey] | None = None
    ) -> tuple[ChainState, Commit]:
        """Check `block` as a validator would, commit it with precommits of `signers` (all of the
        height's set by default) and apply it as the driver does."""
        validate_block(state, block, self.verifier.verify_batch)
        assert self.source.process_proposal(state, block), "a validator would refuse the block"
        block_id = BlockID(block.hash, PartSet.from_data(block.encode()).header)
        chosen = (
            signers if signers is not None else [self.keys[v.address] for v in state.validators.validators]
        )
        commit = self.commit(state.validators, block.height, block_id, block.header.time, chosen)
        new_state = self.core.executor.apply_block(state, block, block_id, commit)
        self.core.evidence.mark_committed(new_state, block.evidence)
        return new_state, commit

    def query(self, path: str) -> object:
        result = self.app.query(path, b"", 0, False)
        assert result.code == 0, result.log
        return json.loads(result.value)

    def query_dicts(self, path: str) -> list[dict[str, str]]:
        value = self.query(path)
        assert isinstance(value, list)
        return value


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    db = Database(tmp_path / "db")
    verifier = BatchVerifier(workers=1)
    app = ExchangeApp(db, CHAIN, verifier)
    privval = FilePrivValidator(KEYS[0], OSFile(tmp_path / "pv_state.json"), LastSignState())
    genesis = InitChainRequest(
        CHAIN,
        GENESIS_TIME,
        1,
        tuple(ValidatorUpdate(k.public_key.raw, p) for k, p in zip(KEYS, POWERS, strict=True)),
        b"{}",
    )
    core = build_core(
        db,
        app,
        verifier,
        privval,
        WAL.open(tmp_path / "wal"),
        genesis,
        ConsensusParams(),
        FAST,
        MempoolConfig(),
    )
    source = AppProposalSource(app, core.mempool, core.evidence)
    try:
        yield Net(db, verifier, app, core, source, {k.address.raw: k for k in KEYS})
    finally:
        core.driver.wal.close()
        verifier.close()
        db.close()


@dataclass
class Flow:
    """The chain after block 2 (with the evidence) and what led there."""

    after_1: ChainState
    after_2: ChainState
    commit_2: Commit
    evidence: DuplicateVoteEvidence
    block_2: Block


def double_sign_at_height_1(net: Net) -> Flow:
    genesis = net.core.driver.machine.state
    assert genesis.is_initial()
    assert [v.power for v in genesis.validators.validators] == POWERS
    block_1 = net.propose(genesis, EMPTY_COMMIT)
    after_1, commit_1 = net.apply(genesis, block_1)
    x_index = genesis.validators.index_of(X.address.raw)
    assert x_index == 3
    in_commit = commit_1.vote_of(x_index)  # X's precommit for block 1, as the commit carries it
    conflicting = net.sign(genesis.validators, 1, OTHER_BLOCK, X, in_commit.timestamp)
    evidence = DuplicateVoteEvidence.from_conflict(
        in_commit, conflicting, after_1.last_validators, block_1.header.time
    )
    assert (evidence.validator_power, evidence.total_voting_power) == (10, 100)
    assert net.core.evidence.add(after_1, evidence) is True
    proposed = net.core.evidence.for_proposal(after_1, after_1.params.evidence_max_bytes)
    assert proposed == [evidence.encode()]
    block_2 = net.propose(after_1, commit_1, proposed)
    after_2, commit_2 = net.apply(after_1, block_2)
    return Flow(after_1, after_2, commit_2, evidence, block_2)


def test_the_application_records_the_evidence_and_slashes_the_validator(net: Net) -> None:
    flow = double_sign_at_height_1(net)
    x_hex = X.address.raw.hex().upper()
    assert net.query("/evidence") == [
        {
            "kind": KIND_DUPLICATE_VOTE,
            "validator": x_hex,
            "validator_power": "10",
            "height": "1",
            "time": str(flow.evidence.timestamp),
            "total_voting_power": "100",
            "block_height": "2",
        }
    ]
    powers = {item["address"]: item["power"] for item in net.query_dicts("/validators")}
    assert powers == {k.address.raw.hex().upper(): str(p) for k, p in zip(KEYS, POWERS, strict=True)} | {
        x_hex: "0"
    }


def test_block_results_carry_the_misbehavior_event_and_the_update(net: Net) -> None:
    flow = double_sign_at_height_1(net)
    results = net.core.executor.load_results(2)
    assert results is not None
    events = [e for e in results.finalize.events if e.type == "misbehavior"]
    assert len(events) == 1
    event = events[0]
    assert event.attribute("kind") == KIND_DUPLICATE_VOTE
    assert event.attribute("validator") == X.address.raw.hex().upper()
    assert event.attribute("height") == "1"
    assert event.attribute("power") == "10"
    assert event.attribute("slashed") == "true"
    assert results.finalize.validator_updates == (ValidatorUpdate(X.public_key.raw, 0),)
    assert net.core.executor.load_results(1) is not None
    assert flow.block_2.evidence == (flow.evidence.encode(),)


def test_the_committed_evidence_is_stored_and_no_longer_pending(net: Net) -> None:
    flow = double_sign_at_height_1(net)
    assert net.core.states.has_committed_evidence(flow.evidence.hash())
    assert not net.core.states.has_committed_evidence(flow.evidence.vote_a.block_id.hash)
    assert net.core.evidence.pending() == []
    assert net.core.states.load_pending() == []


def test_x_validates_height_3_and_is_gone_from_height_4(net: Net) -> None:
    flow = double_sign_at_height_1(net)
    state = flow.after_2
    assert state.last_block_height == 2
    assert state.validators.get(X.address.raw) is not None, "height 3 keeps X"
    assert state.next_validators.get(X.address.raw) is None, "height 4 has no X"
    assert [v.power for v in state.next_validators.validators] == [40, 30, 20]
    assert state.last_height_validators_changed == 4
    validators_at = stored_validators(net.core.states)
    stored_3 = validators_at(3)
    assert stored_3 is not None and stored_3.get(X.address.raw) is not None
    assert validators_at(4) is None, "height 4's set is stored with block 3"

    # Block 3: its commit needs X (40 + 20 + 10 = 70 of 100; without X, 60 is not +2/3).
    block_3 = net.propose(state, flow.commit_2)
    signers = [KEYS[0], KEYS[2], X]
    after_3, commit_3 = net.apply(state, block_3, signers)
    x_at_3 = state.validators.index_of(X.address.raw)
    assert x_at_3 is not None and commit_3.signatures[x_at_3].validator_address == X.address.raw
    without_x = replace(
        commit_3,
        signatures=tuple(
            CommitSig.absent() if i == x_at_3 else sig for i, sig in enumerate(commit_3.signatures)
        ),
    )
    with pytest.raises(CommitError, match="not \\+2/3"):
        verify_commit(CHAIN, state.validators, commit_3.block_id, 3, without_x, net.verifier.verify_batch)
    assert after_3.last_validators.get(X.address.raw) is not None
    assert after_3.validators.get(X.address.raw) is None
    stored_4 = validators_at(4)
    assert stored_4 is not None and stored_4.get(X.address.raw) is None

    # Block 4 carries that commit (X's signature included) and is valid.
    block_4 = net.propose(after_3, commit_3)
    assert X.address.raw in {sig.validator_address for sig in block_4.last_commit.signatures}
    validate_block(after_3, block_4, net.verifier.verify_batch)

    # But X cannot vote at height 4, and a height-4 commit shaped for four validators is refused.
    block_id_4 = BlockID(block_4.hash, PartSet.from_data(block_4.encode()).header)
    votes_4 = VoteSet(CHAIN, 4, 0, VoteType.PRECOMMIT, after_3.validators, net.verifier.verify_batch)
    foreign = net.sign(state.validators, 4, block_id_4, X, block_4.header.time + MS)  # X's old index
    with pytest.raises(VoteError):
        votes_4.add(foreign)
    four = net.commit(state.validators, 4, block_id_4, block_4.header.time, KEYS)
    with pytest.raises(CommitError):
        verify_commit(CHAIN, after_3.validators, block_id_4, 4, four, net.verifier.verify_batch)

    after_4, commit_4 = net.apply(after_3, block_4)
    assert len(commit_4.signatures) == 3
    assert X.address.raw not in {sig.validator_address for sig in commit_4.signatures}
    verify_commit(CHAIN, after_3.validators, block_id_4, 4, commit_4, net.verifier.verify_batch)
    block_5 = net.propose(after_4, commit_4)
    validate_block(after_4, block_5, net.verifier.verify_batch)
    recorded = net.query("/evidence")
    assert isinstance(recorded, list) and len(recorded) == 1, "no further misbehavior recorded"
    assert {v["address"]: v["power"] for v in net.query_dicts("/validators")}[X.address.upper()] == "0"


def test_the_pool_refuses_the_same_evidence_again(net: Net) -> None:
    flow = double_sign_at_height_1(net)
    state = flow.after_2
    raw = flow.evidence.encode()
    assert net.core.evidence.add(state, flow.evidence) is False
    assert net.core.evidence.pending() == []
    assert net.core.evidence.for_proposal(state, 1 << 20) == []
    with pytest.raises(EvidenceError, match="committed before"):
        net.core.evidence.check_block(state, [raw], state.last_block_time + MS)
    again = net.propose(state, flow.commit_2, [raw])
    validate_block(state, again, net.verifier.verify_batch)
    assert not net.source.process_proposal(state, again), "a block repeating the evidence is refused"

    # A pool started afresh over the same database (a restart) knows it from the stored key.
    fresh = EvidencePool(
        CHAIN,
        net.verifier.verify_batch,
        stored_validators(net.core.states),
        net.core.states.has_committed_evidence,
        net.core.states,
    )
    assert fresh.add(state, flow.evidence) is False
    with pytest.raises(EvidenceError, match="committed before"):
        fresh.check_block(state, [raw], state.last_block_time + MS)


def test_the_same_double_sign_restamped_is_not_committed_twice(net: Net) -> None:
    """The double sign committed in block 2 does not pass again under another timestamp (the
    application, which trusts consensus, would record it a second time)."""
    flow = double_sign_at_height_1(net)
    state = flow.after_2
    restamped = DuplicateVoteEvidence(
        flow.evidence.vote_a,
        flow.evidence.vote_b,
        flow.evidence.total_voting_power,
        flow.evidence.validator_power,
        flow.after_1.last_block_time + 1,
    )
    block_3 = net.propose(state, flow.commit_2, [restamped.encode()])
    validate_block(state, block_3, net.verifier.verify_batch)
    assert not net.source.process_proposal(state, block_3), "the double sign was already punished"
