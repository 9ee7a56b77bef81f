"""Unit tests of the consensus machine's own mechanics (timeouts, bookkeeping, message checks),
beside the vote rules (test_rules.py) and the multi-node scenarios (test_scenarios.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest

from consensus.machine import (
    SECOND,
    BadMessage,
    BlockPartEvent,
    CommittedEvent,
    ConsensusMachine,
    Event,
    ProposalEvent,
    ScheduleTimeout,
    SignProposal,
    Step,
    StepChanged,
    TimeoutConfig,
    TimeoutEvent,
    VoteEvent,
)
from consensus.messages import RoundStep, decode_message, encode_message
from consensus.state import ChainState, ConsensusParams, genesis_state
from consensus.types import EMPTY_COMMIT, MS, Block, BlockID, Commit, PartSet, Proposal, VoteType
from node.config import BaseConfig, Config
from node.node import timeout_config
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from tests.consensus.cluster import NIL, PRECOMMIT, PREVOTE, Cluster, Member
from tests.consensus.harness import (
    FAST,
    GENESIS_TIME,
    SoloDriver,
    ToyApp,
    keys,
    make_genesis,
    next_state,
)


def test_default_timeouts_are_cometbft_s_but_commit_and_the_node_config_s() -> None:
    t = TimeoutConfig()
    half = SECOND // 2
    assert (t.propose, t.propose_delta, t.prevote, t.prevote_delta) == (3 * SECOND, half, SECOND, half)
    assert (t.precommit, t.precommit_delta, t.skip_timeout_commit) == (SECOND, half, False)
    assert t.commit == SECOND // 5, "200 ms (CometBFT: 1 s): sub-second blocks"
    assert timeout_config(Config(home=Path("home"), base=BaseConfig(moniker="m"))) == t


@pytest.mark.parametrize(
    ("step", "round_", "expected"),
    [
        (Step.PROPOSE, 0, 30),
        (Step.PROPOSE, 3, 30 + 3 * 4),
        (Step.PREVOTE_WAIT, 0, 10),
        (Step.PREVOTE_WAIT, 2, 10 + 2 * 5),
        (Step.PRECOMMIT_WAIT, 0, 20),
        (Step.PRECOMMIT_WAIT, 5, 20 + 5 * 6),
    ],
)
def test_a_timeout_grows_by_its_delta_each_round(step: Step, round_: int, expected: int) -> None:
    t = TimeoutConfig(
        propose=30, propose_delta=4, prevote=10, prevote_delta=5, precommit=20, precommit_delta=6, commit=1
    )
    assert t.for_step(step, round_) == expected


@pytest.mark.parametrize("step", [Step.NEW_HEIGHT, Step.NEW_ROUND, Step.PREVOTE, Step.PRECOMMIT, Step.COMMIT])
def test_steps_without_a_timeout_have_none(step: Step) -> None:
    with pytest.raises(ValueError, match="no timeout"):
        TimeoutConfig().for_step(step, 0)


# -- single-machine helpers --------------------------------------------------------------------

SOLO = keys(1)[0]
SOLO_GENESIS = make_genesis([(SOLO, 10)])
DISTINCT = TimeoutConfig(
    propose=3 * SECOND,
    propose_delta=SECOND // 2,
    prevote=SECOND + 1,
    prevote_delta=SECOND // 3,
    precommit=SECOND + 2,
    precommit_delta=SECOND // 4,
    commit=SECOND + 3,
)
"""Timeouts that all differ, so an effect names the one it means."""


@dataclass(kw_only=True)
class RecordingApp(ToyApp):
    """A ToyApp that offers fixed evidence and records each proposal budget and each block it
    is asked to judge."""

    evidence: list[bytes] = field(default_factory=list)
    budgets: list[int] = field(default_factory=list)
    judged: list[bytes] = field(default_factory=list)

    def proposal_txs(
        self, state: ChainState, height: int, time: int, proposer: bytes, max_bytes: int
    ) -> list[bytes]:
        self.budgets.append(max_bytes)
        return super().proposal_txs(state, height, time, proposer, max_bytes)

    def proposal_evidence(self, state: ChainState, max_bytes: int) -> list[bytes]:
        return list(self.evidence)

    def process_proposal(self, state: ChainState, block: Block) -> bool:
        self.judged.append(block.hash)
        return super().process_proposal(state, block)


def solo_machine(
    state: ChainState = SOLO_GENESIS, source: ToyApp | None = None, timeouts: TimeoutConfig = DISTINCT
) -> ConsensusMachine:
    """The machine of the single validator SOLO, not started."""
    return ConsensusMachine(
        state, SOLO.address.raw, timeouts, source or ToyApp(), BatchVerifier(workers=1).verify_batch
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class SoloChain:
    """Heights 1 and 2 of SOLO's chain as its driver decided them."""

    state2: ChainState
    commit1: Commit
    state3: ChainState
    commit2: Commit


def solo_chain(tmp_path: Path) -> SoloChain:
    (tmp_path / "chain").mkdir()
    driver = SoloDriver(tmp_path / "chain", SOLO, SOLO_GENESIS)
    driver.run_until(2)
    first, second = driver.decided
    state2 = next_state(SOLO_GENESIS, first)
    return SoloChain(
        state2=state2, commit1=first.commit, state3=next_state(state2, second), commit2=second.commit
    )


def decide_height_1(tmp_path: Path) -> tuple[SoloDriver, CommittedEvent]:
    """SOLO's driver right after it decided height 1 (at `driver.now`), and the CommittedEvent
    it has not handled yet."""
    (tmp_path / "solo").mkdir()
    driver = SoloDriver(tmp_path / "solo", SOLO, SOLO_GENESIS)
    driver.run_until(1)
    assert len(driver.queue) == 1
    committed = driver.queue.popleft()
    assert isinstance(committed, CommittedEvent)
    return driver, committed


# -- Step numbers -------------------------------------------------------------------------------


def test_steps_are_numbered_as_cometbft_s_round_step_types() -> None:
    assert {s.name: s.value for s in Step} == {
        "NEW_HEIGHT": 1,
        "NEW_ROUND": 2,
        "PROPOSE": 3,
        "PREVOTE": 4,
        "PREVOTE_WAIT": 5,
        "PRECOMMIT": 6,
        "PRECOMMIT_WAIT": 7,
        "COMMIT": 8,
    }
    for step in Step:  # the number goes on the wire to peers
        message = RoundStep(7, 2, int(step))
        assert decode_message(encode_message(message)) == message


# -- construction, start, round entry ------------------------------------------------------------


def test_a_machine_before_its_start_shows_the_state_s_height_with_nothing_seen() -> None:
    """The reactor and the metrics read a machine that block sync has not started yet."""
    genesis = make_genesis([(k, 10) for k in keys(4)])
    member, outsider = keys(4)[2], keys(5)[4]
    machine = ConsensusMachine(genesis, member.address.raw, DISTINCT, ToyApp(), _no_signatures)
    assert (machine.height, machine.round, machine.step) == (1, 0, Step.NEW_HEIGHT)
    assert machine.proposal is None and machine.proposal_parts is None and machine.proposal_block is None
    assert (machine.locked_round, machine.valid_round) == (-1, -1)
    assert machine.locked_block is None and machine.valid_block is None
    assert machine.last_commit is None
    assert machine.votes.peek(0, VoteType.PREVOTE) is None
    assert machine.is_validator
    for address in (outsider.address.raw, None):
        other = ConsensusMachine(genesis, address, DISTINCT, ToyApp(), _no_signatures)
        assert not other.is_validator
        assert other.handle(CommittedEvent(genesis, None), GENESIS_TIME)[0] == StepChanged(
            1, 0, Step.NEW_HEIGHT
        )
        assert not other.is_validator


def _no_signatures(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    raise AssertionError("no signature to check here")


def test_a_proposer_goes_through_the_start_of_a_round_with_exact_effects() -> None:
    machine = solo_machine()
    now = GENESIS_TIME + 5 * MS
    assert machine.handle(CommittedEvent(SOLO_GENESIS, None), now) == [
        StepChanged(1, 0, Step.NEW_HEIGHT),
        ScheduleTimeout(1, 0, Step.NEW_HEIGHT, DISTINCT.commit),
    ]
    assert machine.start_time == now + DISTINCT.commit  # when round 0 starts (consensus_state)
    block = SOLO_GENESIS.make_block([], [], EMPTY_COMMIT, SOLO.address.raw)
    parts = PartSet.from_data(block.encode())
    later = now + DISTINCT.commit
    effects = machine.handle(TimeoutEvent(1, 0, Step.NEW_HEIGHT), later)
    assert effects == [
        StepChanged(1, 0, Step.NEW_ROUND),
        StepChanged(1, 0, Step.PROPOSE),
        ScheduleTimeout(1, 0, Step.PROPOSE, DISTINCT.propose),
        SignProposal(
            Proposal(1, 0, -1, BlockID(block.hash, parts.header), later), PartSet.from_data(block.encode())
        ),
    ]
    sign = effects[-1]
    assert isinstance(sign, SignProposal) and sign.parts.data() == block.encode()
    # Delivered again, neither the timeout nor the start enters a step or schedules anything.
    assert machine.handle(TimeoutEvent(1, 0, Step.NEW_HEIGHT), later + MS) == []
    assert machine.handle(CommittedEvent(SOLO_GENESIS, None), later + 2 * MS) == []
    assert (machine.height, machine.round, machine.step) == (1, 0, Step.PROPOSE)


def test_the_proposer_s_budget_for_transactions_leaves_room_for_header_commit_and_evidence() -> None:
    app = RecordingApp(evidence=[b"e" * 100, b"f" * 50])
    machine = solo_machine(source=app)
    machine.handle(CommittedEvent(SOLO_GENESIS, None), GENESIS_TIME)
    effects = machine.handle(TimeoutEvent(1, 0, Step.NEW_HEIGHT), GENESIS_TIME + SECOND)
    max_bytes = SOLO_GENESIS.params.block_max_bytes
    assert app.budgets == [max_bytes - 2048 - len(EMPTY_COMMIT.encode()) - 150]
    sign = effects[-1]
    assert isinstance(sign, SignProposal)
    assert Block.decode(sign.parts.data()).evidence == (b"e" * 100, b"f" * 50)


def test_the_budget_of_a_later_height_leaves_room_for_the_last_commit(tmp_path: Path) -> None:
    chain = solo_chain(tmp_path)
    app = RecordingApp()
    machine = solo_machine(chain.state2, app)
    machine.handle(CommittedEvent(chain.state2, chain.commit1), GENESIS_TIME)
    effects = machine.handle(TimeoutEvent(2, 0, Step.NEW_HEIGHT), GENESIS_TIME + SECOND)
    max_bytes = chain.state2.params.block_max_bytes
    assert len(chain.commit1.encode()) > len(EMPTY_COMMIT.encode())
    assert app.budgets == [max_bytes - 2048 - len(chain.commit1.encode())]
    assert isinstance(effects[-1], SignProposal)


def test_the_budget_is_never_negative() -> None:
    tiny = genesis_state(
        "tiny-chain",
        1,
        GENESIS_TIME,
        [(SOLO.public_key.raw, 10)],
        ConsensusParams(block_max_bytes=1500),
        sha256(b"genesis app"),
    )
    app = RecordingApp()
    machine = solo_machine(tiny, app)
    machine.handle(CommittedEvent(tiny, None), GENESIS_TIME)
    machine.handle(TimeoutEvent(1, 0, Step.NEW_HEIGHT), GENESIS_TIME + SECOND)
    assert app.budgets == [0]


def test_a_proposer_without_the_last_commit_does_not_propose(tmp_path: Path) -> None:
    chain = solo_chain(tmp_path)
    machine = solo_machine(chain.state2)
    machine.handle(CommittedEvent(chain.state2, None), GENESIS_TIME)
    assert machine.handle(TimeoutEvent(2, 0, Step.NEW_HEIGHT), GENESIS_TIME + SECOND) == [
        StepChanged(2, 0, Step.NEW_ROUND),
        StepChanged(2, 0, Step.PROPOSE),
        ScheduleTimeout(2, 0, Step.PROPOSE, DISTINCT.propose),
    ]
    # nor with the commit of an earlier height
    machine = solo_machine(chain.state2)
    machine.handle(CommittedEvent(chain.state2, chain.commit1), GENESIS_TIME)
    machine.handle(CommittedEvent(chain.state3, None), GENESIS_TIME + SECOND)
    assert machine.last_commit is None
    assert machine.handle(TimeoutEvent(3, 0, Step.NEW_HEIGHT), GENESIS_TIME + 3 * SECOND) == [
        StepChanged(3, 0, Step.NEW_ROUND),
        StepChanged(3, 0, Step.PROPOSE),
        ScheduleTimeout(3, 0, Step.PROPOSE, DISTINCT.propose),
    ]


# -- _on_committed --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delay", "wait"),
    [(0, SECOND), (300 * MS, SECOND - 300 * MS), (SECOND, 0), (2 * SECOND, 0)],
)
def test_the_commit_timeout_counts_from_the_commit_time(tmp_path: Path, delay: int, wait: int) -> None:
    driver, committed = decide_height_1(tmp_path)
    assert FAST.commit == SECOND
    effects = driver.machine.handle(committed, driver.now + delay)
    assert effects == [StepChanged(2, 0, Step.NEW_HEIGHT), ScheduleTimeout(2, 0, Step.NEW_HEIGHT, wait)]


def test_a_height_decided_elsewhere_waits_the_whole_commit_timeout(tmp_path: Path) -> None:
    """Block sync or a peer's decided block moves a machine on without its own commit."""
    chain = solo_chain(tmp_path)
    machine = solo_machine()
    machine.handle(CommittedEvent(SOLO_GENESIS, None), GENESIS_TIME)
    effects = machine.handle(CommittedEvent(chain.state2, chain.commit1), GENESIS_TIME + 10 * SECOND)
    assert effects == [
        StepChanged(2, 0, Step.NEW_HEIGHT),
        ScheduleTimeout(2, 0, Step.NEW_HEIGHT, DISTINCT.commit),
    ]
    # a machine that committed the height before: that commit's time is forgotten too
    driver, committed = decide_height_1(tmp_path)
    driver.machine.handle(committed, driver.now + MS)
    effects = driver.machine.handle(CommittedEvent(chain.state3, chain.commit2), driver.now + 2 * MS)
    assert effects == [
        StepChanged(3, 0, Step.NEW_HEIGHT),
        ScheduleTimeout(3, 0, Step.NEW_HEIGHT, FAST.commit),
    ]


def test_a_stale_committed_state_is_ignored(tmp_path: Path) -> None:
    chain = solo_chain(tmp_path)
    machine = solo_machine()
    machine.handle(CommittedEvent(SOLO_GENESIS, None), GENESIS_TIME)
    machine.handle(CommittedEvent(chain.state3, chain.commit2), GENESIS_TIME + SECOND)
    for stale in (CommittedEvent(SOLO_GENESIS, None), CommittedEvent(chain.state2, chain.commit1)):
        assert machine.handle(stale, GENESIS_TIME + 2 * SECOND) == []
    assert (machine.height, machine.step) == (3, Step.NEW_HEIGHT)
    assert machine.state == chain.state3


def test_a_height_after_a_commit_in_a_later_round_starts_at_round_0(tmp_path: Path) -> None:
    # round 0's block holds a tx the application rejects: height 1 is committed in round 1
    app = ToyApp(pending=[b"rejected"], poison=frozenset({b"rejected"}))
    driver = SoloDriver(tmp_path, SOLO, SOLO_GENESIS, app)
    driver.run_until(1)
    assert driver.decided[0].commit.round == 1
    driver.step()
    assert driver.steps[-1] == StepChanged(2, 0, Step.NEW_HEIGHT)
    assert driver.timeout == ScheduleTimeout(2, 0, Step.NEW_HEIGHT, FAST.commit - MS)
    driver.run_until(2)
    assert driver.decided[1].commit.round == 0


# -- several validators -----------------------------------------------------------------------------


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(4)
    yield c
    c.close()


def proposals_at(member: Member, height: int) -> list[Proposal]:
    return [m.proposal for m in member.sent if isinstance(m, ProposalEvent) and m.proposal.height == height]


def test_the_next_height_s_proposer_is_the_new_state_s(cluster: Cluster) -> None:
    c = cluster
    p0 = c.proposer(0)
    c.start()
    c.deliver(c.proposal(p0, 0), to=c.members)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    assert all(m.machine.height == 2 for m in c.members)
    for member in c.members:
        c.timeout(member, Step.NEW_HEIGHT)
    proposer = c.proposer(0, height=2)
    assert proposer != p0
    assert [m for m in c.members if proposals_at(m, 2)] == [proposer]
    (proposal,) = proposals_at(proposer, 2)
    others = c.others(proposer)
    c.deliver(c.proposal(proposer, 0), to=others)
    for member in others:
        assert c.signed(member)[-1] == ("prevote", 0, c.name_of(proposal.block_id))
        assert member.bad == []


def test_a_round_accepts_votes_up_to_51_rounds_ahead(cluster: Cluster) -> None:
    c = cluster
    c.start()
    x, a, b, d = c.members
    assert x.machine.round == 0
    # votes of round 2 from half the power move x to round 2
    c.deliver([c.forge_vote(a, PREVOTE, 2, NIL), c.forge_vote(b, PREVOTE, 2, NIL)], to=[x])
    assert x.machine.round == 2
    c.deliver([c.forge_vote(d, PREVOTE, 53, NIL)], to=[x])
    assert x.bad == []
    late = c.forge_vote(d, PREVOTE, 54, NIL)
    c.deliver([late], to=[x])
    assert x.bad == [BadMessage("", "vote for round 54 is beyond the window of round 3")]
    assert x.machine.votes.prevotes(53).get(d.index) is not None


def test_a_proposal_complete_before_its_round_starts_is_prevoted_on_entering_it(cluster: Cluster) -> None:
    c = cluster
    p0 = c.proposer(0)
    a, b, x = c.others(p0)
    c.deliver([CommittedEvent(c.genesis, None)], to=c.members)
    for member in (p0, a, b):
        c.timeout(member, Step.NEW_HEIGHT)
    proposal, *parts = c.proposal(p0, 0)
    c.deliver([proposal, *parts], to=[a, b])
    # x, still waiting out its commit timeout, sees the polka, then the block, then the proposal
    c.deliver(c.votes(PREVOTE, 0, [p0, a, b]), to=[x])
    c.deliver(parts, to=[x])
    assert c.valid(x) == (0, "A")
    c.deliver([proposal], to=[x])
    assert c.signed(x) == []
    c.timeout(x, Step.NEW_HEIGHT)
    assert c.signed(x) == [("prevote", 0, "A"), ("precommit", 0, "A")]
    assert c.lock(x) == (0, "A")


def test_a_node_that_prevoted_before_round_0_began_still_waits_out_split_precommits(
    cluster: Cluster,
) -> None:
    c = cluster
    p0 = c.proposer(0)
    a, b, x = c.others(p0)
    c.deliver([CommittedEvent(c.genesis, None)], to=c.members)
    c.timeout(p0, Step.NEW_HEIGHT)
    # the complete proposal reaches x during its commit timeout: x prevotes at once
    c.deliver(c.proposal(p0, 0), to=[x])
    assert c.signed(x) == [("prevote", 0, "A")]
    assert (x.machine.round, x.machine.step) == (0, Step.PREVOTE)
    # precommits of three quarters of the power, for no one value
    split = [
        c.forge_vote(p0, PRECOMMIT, 0, "A"),
        c.forge_vote(a, PRECOMMIT, 0, NIL),
        c.forge_vote(b, PRECOMMIT, 0, NIL),
    ]
    c.deliver(split, to=[x])
    assert (x.machine.round, x.machine.step) == (0, Step.PRECOMMIT_WAIT)
    c.timeout(x, Step.PRECOMMIT_WAIT)
    assert (x.machine.round, x.machine.step) == (1, Step.PROPOSE)


def test_a_new_round_forgets_the_last_round_s_block(cluster: Cluster) -> None:
    """A polka for the block of an earlier round, seen before the new round's proposal, makes
    a node fetch the block again and precommit nil (the paper's line 36 needs the proposal)."""
    c = cluster
    p0, p1 = c.proposer(0), c.proposer(1)
    x, y = c.others(p0, p1)
    c.start()
    c.deliver(c.proposal(p0, 0), to=[x])
    assert c.signed(x) == [("prevote", 0, "A")]
    c.deliver([c.forge_vote(m, PREVOTE, 1, "A") for m in (p0, p1, y)], to=[x])
    assert (x.machine.round, x.machine.step) == (1, Step.PROPOSE)
    parts = x.machine.proposal_parts
    assert parts is not None and parts.header == c.block_id("A").parts and not parts.is_complete()
    c.timeout(x, Step.PROPOSE)
    c.timeout(x, Step.PREVOTE_WAIT)
    assert c.signed(x) == [("prevote", 0, "A"), ("prevote", 1, NIL), ("precommit", 1, NIL)]
    assert c.lock(x) == (-1, None) and c.valid(x) == (-1, None)


def test_a_late_prevote_of_the_proof_of_lock_round_does_not_make_a_node_prevote_again(
    cluster: Cluster,
) -> None:
    c = cluster
    p0, p1 = c.proposer(0), c.proposer(1)
    x, y = c.others(p0, p1)
    c.start()
    c.deliver(c.proposal(p0, 0), to=[p1, x])
    c.timeout(y, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [p0, p1, x]), to=[p1, x, y])
    c.timeout(y, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 0, [p1, x, y]), to=[p1, x])
    for member in (p1, x):
        c.timeout(member, Step.PRECOMMIT_WAIT)
    assert c.proposed(p1, 1).pol_round == 0
    c.deliver(c.proposal(p1, 1), to=[x])
    assert c.signed(x) == [("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, "A")]
    # y's nil prevote of round 0, the proposal's proof-of-lock round, arrives late
    c.deliver(c.votes(PREVOTE, 0, [y]), to=[x])
    assert c.signed(x) == [("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, "A")]
    assert (x.machine.round, x.machine.step) == (1, Step.PREVOTE)


def signed_proposal(c: Cluster, proposer: Member, block: Block) -> list[Event]:
    """`proposer`'s signed round-0 proposal of `block` with its parts."""
    parts = PartSet.from_data(block.encode())
    proposal = Proposal(1, 0, -1, BlockID(block.hash, parts.header), c.now)
    proposal = proposal.with_signature(proposer.key.sign(proposal.sign_bytes(c.chain_id)))
    return [ProposalEvent(proposal), *(BlockPartEvent(1, 0, part) for part in parts.parts())]


@pytest.mark.parametrize("app_hash_ok", [True, False])
def test_a_block_the_chain_rules_reject_gets_a_nil_prevote_though_the_application_accepts_it(
    cluster: Cluster, app_hash_ok: bool
) -> None:
    c = cluster
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    c.start()
    state = c.genesis if app_hash_ok else replace(c.genesis, app_hash=sha256(b"another app state"))
    block = state.make_block([b"tx"], [], EMPTY_COMMIT, p0.address)
    assert x.app.process_proposal(c.genesis, block)
    c.deliver(signed_proposal(c, p0, block), to=[x])
    (prevote,) = (m.vote for m in x.sent if isinstance(m, VoteEvent))
    assert prevote.block_id.hash == (block.hash if app_hash_ok else b"")


def test_the_application_judges_a_block_once(tmp_path: Path) -> None:
    app = RecordingApp(pending=[b"tx"])
    driver = SoloDriver(tmp_path, SOLO, SOLO_GENESIS, app)
    driver.run_until(1)
    assert app.judged == [driver.decided[0].block.hash]
