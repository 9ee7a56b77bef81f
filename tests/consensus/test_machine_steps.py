"""The consensus machine's step flows on a hand-driven cluster of real machines: the guards of
the prevote-wait and precommit-wait steps (a late vote neither moves a step back nor restarts a
timer), the valid value and round (set on a relock seen without the proposal, and by a block
that completes after its polka), the commit (with the locked block, with the parts of the decided
block fetched in place of another proposal, once only, timed from the commit, and a
`ConsensusFailure` for an invalid block), the checks on proposals and block parts (other rounds
and heights, proof-of-lock round, signature, maximum block size), the late precommits of the
previous height (into the next block's last commit, equivocations, `skip_timeout_commit`),
equivocations and round skipping in the current height, and vote timestamps."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

import pytest

from consensus.machine import (
    BadMessage,
    BlockPartEvent,
    ConsensusFailure,
    Effect,
    Equivocation,
    Event,
    ProposalEvent,
    SignVote,
    Step,
    StepChanged,
    VoteEvent,
)
from consensus.state import ConsensusParams
from consensus.types import EMPTY_COMMIT, MS, Block, BlockIDFlag, VoteType
from tests.consensus.cluster import NIL, PRECOMMIT, PREVOTE, Cluster, Member
from tests.consensus.harness import FAST, GENESIS_TIME, SECOND


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(4)
    yield c
    c.close()


def effects_since(member: Member, mark: int) -> list[Effect]:
    """The effects of every event `member` handled after its first `mark` ones."""
    return [effect for handled in member.handled[mark:] for effect in handled.effects]


def steps_since(member: Member, mark: int) -> list[Step]:
    return [e.step for e in effects_since(member, mark) if isinstance(e, StepChanged)]


def own_votes(member: Member, vote_type: VoteType) -> list[VoteEvent]:
    return [m for m in member.sent if isinstance(m, VoteEvent) and m.vote.type == vote_type]


def from_peer(events: Iterable[Event], peer: str) -> list[Event]:
    """`events` (proposals, parts, votes) as sent by `peer`."""
    out: list[Event] = []
    for event in events:
        assert isinstance(event, ProposalEvent | BlockPartEvent | VoteEvent)
        out.append(replace(event, peer=peer))
    return out


def step(member: Member) -> Step:
    """`member`'s step, read through a call (mypy would keep an earlier comparison's narrowing)."""
    return member.machine.step


# -- prevote wait and precommit wait ----------------------------------------------------------


def test_a_late_prevote_neither_moves_the_step_back_nor_restarts_the_prevote_timer(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    a, l1, l2 = c.others(p0)
    # p0 and a prevote A; l1 and l2 never get the proposal and prevote nil: no polka.
    c.deliver(c.proposal(p0, 0), to=[a])
    c.timeout(l1, Step.PROPOSE)
    c.timeout(l2, Step.PROPOSE)
    # a waits on three prevotes, precommits nil on its timer; then the fourth prevote arrives.
    c.deliver(c.votes(PREVOTE, 0, [p0, l1]), to=[a])
    assert a.machine.step == Step.PREVOTE_WAIT
    c.timeout(a, Step.PREVOTE_WAIT)
    assert c.signed(a) == [("prevote", 0, "A"), ("precommit", 0, NIL)]
    mark = len(a.handled)
    c.deliver(c.votes(PREVOTE, 0, [l2]), to=[a])
    assert effects_since(a, mark) == []
    assert step(a) == Step.PRECOMMIT
    # l1 is in its prevote wait when the fourth prevote arrives: the timer keeps running.
    c.deliver(c.votes(PREVOTE, 0, [p0, a]), to=[l1])
    assert l1.machine.step == Step.PREVOTE_WAIT
    mark = len(l1.handled)
    c.deliver(c.votes(PREVOTE, 0, [l2]), to=[l1])
    assert effects_since(l1, mark) == []
    c.timeout(l1, Step.PREVOTE_WAIT)
    assert c.signed(l1) == [("prevote", 0, NIL), ("precommit", 0, NIL)]


def test_a_late_precommit_does_not_restart_the_precommit_timer(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x, y, z = c.others(p0)
    for member in (x, y, z):
        c.timeout(member, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [x, y, z]), to=c.members)
    assert {c.signed(m)[-1] for m in c.members} == {("precommit", 0, NIL)}
    c.deliver(c.votes(PRECOMMIT, 0, [y, z]), to=[x])
    assert x.machine.step == Step.PRECOMMIT_WAIT
    mark = len(x.handled)
    c.deliver(c.votes(PRECOMMIT, 0, [p0]), to=[x])
    assert effects_since(x, mark) == []
    c.timeout(x, Step.PRECOMMIT_WAIT)
    assert x.machine.round == 1


# -- the valid value and round ------------------------------------------------------------------


def test_a_relock_seen_without_the_proposal_makes_the_locked_block_the_valid_one(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, x = (c.proposer(r) for r in range(4))
    c.start()
    # Round 0: p1 never gets A. x sees the polka for A in time and locks it; p0 and p2 see it
    # only after precommitting nil (A becomes their valid block); p1 lacks the block.
    c.deliver(c.proposal(p0, 0), to=[p2, x])
    c.timeout(p1, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [p0, p1, p2]), to=[x])
    c.deliver(c.votes(PREVOTE, 0, [p1, p2]), to=[p0])
    c.deliver(c.votes(PREVOTE, 0, [p0, p1]), to=[p2])
    c.deliver(c.votes(PREVOTE, 0, c.members), to=[p1])
    for member in (p0, p1, p2):
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PREVOTE, 0, [x]), to=[p0, p2])
    assert [c.lock(m) for m in (p0, p1, p2, x)] == [(-1, None)] * 3 + [(0, "A")]
    assert [c.valid(m) for m in (p0, p1, p2)] == [(0, "A"), (-1, None), (0, "A")]
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    # Round 1: p1 proposes a new block B; x (locked on A) prevotes nil and sees the polka for B
    # after precommitting nil: B is its valid block, A its lock. Nobody else sees that polka.
    assert c.proposed(p1, 1).pol_round == -1
    c.deliver(c.proposal(p1, 1), to=c.members)
    c.deliver(c.votes(PREVOTE, 1, [p0, p1]), to=[x])
    c.timeout(x, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PREVOTE, 1, [p2]), to=[x])
    assert (c.lock(x), c.valid(x)) == ((0, "A"), (1, "B"))
    c.deliver(c.votes(PREVOTE, 1, [p1, x]), to=[p0])
    c.deliver(c.votes(PREVOTE, 1, [p2, x]), to=[p1])
    c.deliver(c.votes(PREVOTE, 1, [p0, x]), to=[p2])
    for member in (p0, p1, p2):
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 1, c.members), to=c.members)
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    # Round 2: p2 re-proposes its valid block A under the proof-of-lock of round 0; x never
    # gets the proposal, prevotes nil, then sees the polka for A, its locked block: it relocks A
    # at round 2 on its prevote timeout, and A (not B) is its valid block of round 2.
    assert c.proposed(p2, 2).pol_round == 0
    c.deliver(c.proposal(p2, 2), to=[p0, p1])
    c.timeout(x, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 2, [p0, p1, p2]), to=[x])
    assert x.machine.step == Step.PREVOTE_WAIT
    c.timeout(x, Step.PREVOTE_WAIT)
    assert c.signed(x) == [
        ("prevote", 0, "A"),
        ("precommit", 0, "A"),
        ("prevote", 1, NIL),
        ("precommit", 1, NIL),
        ("prevote", 2, NIL),
        ("precommit", 2, "A"),
    ]
    assert (c.lock(x), c.valid(x)) == ((2, "A"), (2, "A"))
    # The others precommit nil; in round 3 x proposes A under the proof-of-lock of round 2.
    c.deliver(c.votes(PREVOTE, 2, [p1, x]), to=[p0])
    c.deliver(c.votes(PREVOTE, 2, [p2, x]), to=[p1])
    c.deliver(c.votes(PREVOTE, 2, [p0, x]), to=[p2])
    for member in (p0, p1, p2):
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 2, c.members), to=[x])
    c.timeout(x, Step.PRECOMMIT_WAIT)
    proposal = c.proposed(x, 3)
    assert (proposal.pol_round, proposal.block_id) == (2, c.block_id("A"))


def test_a_block_completed_after_a_nil_precommit_on_its_polka_becomes_the_valid_block(
    cluster: Cluster,
) -> None:
    c = cluster
    p0, p1, p2 = (c.proposer(r) for r in range(3))
    c.start()
    # Round 0: p1 misses the proposal, sees the polka for A without the block and precommits nil.
    c.polka_without_the_block(p1)
    assert c.signed(p1) == [("prevote", 0, NIL), ("precommit", 0, NIL)]
    assert c.valid(p1) == (-1, None)
    # The block arrives: A is p1's valid block of round 0, though it is not locked.
    c.deliver(c.proposal(p0, 0), to=[p1])
    assert (c.valid(p1), c.lock(p1)) == ((0, "A"), (-1, None))
    # p1 sees no decision and proposes A in round 1 under the proof-of-lock of round 0.
    c.deliver(c.votes(PRECOMMIT, 0, [p0, p2]), to=[p1])
    c.timeout(p1, Step.PRECOMMIT_WAIT)
    proposal = c.proposed(p1, 1)
    assert (proposal.pol_round, proposal.block_id) == (0, c.block_id("A"))


def test_a_proposal_completed_after_its_polka_is_prevoted_and_precommitted_at_once(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    c.deliver(c.proposal(p0, 0), to=c.others(x))
    c.deliver(c.votes(PREVOTE, 0, c.others(x)), to=[x])
    assert (x.machine.step, c.signed(x)) == (Step.PROPOSE, [])  # a polka for a block it lacks
    proposal, part = c.proposal(p0, 0)
    c.deliver([proposal, part], to=[x])
    completing = next(h for h in x.handled if h.event == part)
    assert [e for e in completing.effects if isinstance(e, StepChanged | SignVote)] == [
        StepChanged(1, 0, Step.PREVOTE),
        SignVote(own_votes(x, PREVOTE)[0].vote.with_signature(b"")),
        StepChanged(1, 0, Step.PRECOMMIT),
        SignVote(own_votes(x, PRECOMMIT)[0].vote.with_signature(b"")),
    ]
    assert c.signed(x) == [("prevote", 0, "A"), ("precommit", 0, "A")]
    assert c.lock(x) == (0, "A")


def test_parts_gathered_before_a_nil_precommit_on_a_polka_for_a_missing_block_are_kept(
    cluster: Cluster,
) -> None:
    c = cluster
    p0 = c.proposer(0)
    late = c.others(p0)[0]
    p0.app.pending = [bytes(100_000)]  # a block of two parts
    c.start()
    proposal, first, second = c.proposal(p0, 0)
    c.deliver([proposal, first, second], to=c.others(p0, late))
    c.timeout(late, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    # late has the polka for A and the first part of A; it precommits nil on its prevote timeout
    # and keeps that part, so the second one completes the block once A is decided.
    c.deliver([first], to=[late])
    c.timeout(late, Step.PREVOTE_WAIT)
    assert c.signed(late) == [("prevote", 0, NIL), ("precommit", 0, NIL)]
    c.deliver(c.votes(PRECOMMIT, 0, c.others(late)), to=[late])
    assert (late.machine.step, late.decided) == (Step.COMMIT, [])
    c.deliver([second], to=[late])
    assert c.decision(late) == "A"


# -- the commit ---------------------------------------------------------------------------------


def test_precommits_for_the_held_proposal_decide_it_once_after_the_node_precommits(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    c.deliver(c.proposal(p0, 0), to=c.members)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.others(x))
    # x holds A, unlocked, and has seen no prevote but its own when +2/3 precommit A: it
    # precommits nil (it saw no polka) and decides A, once, though its own precommit comes after.
    c.deliver(c.votes(PRECOMMIT, 0, c.others(x)), to=[x])
    assert c.signed(x) == [("prevote", 0, "A"), ("precommit", 0, NIL)]
    assert c.lock(x) == (-1, None)
    assert [c.name_of(d.block_id) for d in x.decided] == ["A"]
    assert x.machine.height == 2


def test_a_node_that_saw_nothing_commits_when_the_parts_arrive_and_times_the_next_height_from_the_commit(
    cluster: Cluster,
) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    c.deliver(c.proposal(p0, 0), to=c.others(x))
    c.deliver(c.votes(PREVOTE, 0, c.others(x)), to=c.others(x))
    # x, still in its propose step, gets +2/3 precommits for A: it commits and waits for A.
    mark = len(x.handled)
    c.deliver(c.votes(PRECOMMIT, 0, c.others(x)), to=[x])
    assert (x.machine.step, x.decided) == (Step.COMMIT, [])
    committed_at = next(
        h.now for h in x.handled[mark:] if any(e == StepChanged(1, 0, Step.COMMIT) for e in h.effects)
    )
    # The parts (without the proposal) come 400 ms later: A is decided, and the next height
    # starts timeout_commit after the commit, not after the block came.
    c.now += 400 * MS
    c.deliver(c.proposal(p0, 0)[1:], to=[x])
    assert c.decision(x) == "A"
    entered_at = x.handled[-1].now
    assert x.machine.height == 2
    assert x.timeouts[(2, 0, Step.NEW_HEIGHT)] == FAST.commit - (entered_at - committed_at)
    assert x.timeouts[(2, 0, Step.NEW_HEIGHT)] < FAST.commit - 400 * MS


def test_a_validator_locked_on_one_block_commits_the_other_block_two_thirds_precommitted(
    cluster: Cluster,
) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    # Round 0: p3 alone locks A; round 1: p0, p1 and p2 lock B and precommit it.
    c.deliver(c.proposal(p0, 0), to=[p1, p3])
    c.timeout(p2, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [p0, p1, p2]), to=c.members)
    for member in (p0, p1, p2):
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    c.deliver(c.proposal(p1, 1), to=c.members)
    c.deliver(c.votes(PREVOTE, 1, [p0, p1, p2]), to=[p0, p1, p2])
    assert [c.lock(m) for m in (p0, p1, p2, p3)] == [(1, "B")] * 3 + [(0, "A")]
    # p3 holds B but is locked on A; +2/3 precommit B: it decides B.
    c.deliver(c.votes(PRECOMMIT, 1, [p0, p1, p2]), to=[p3])
    assert c.signed(p3)[-2:] == [("prevote", 1, NIL), ("precommit", 1, NIL)]
    assert c.decision(p3) == "B"


def test_late_precommits_of_an_earlier_round_commit_its_block_whatever_proposal_is_held(
    cluster: Cluster,
) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    # Round 0: p1 misses A; p0, p2 and p3 lock A and precommit it. p1 and p2 see only two of
    # those precommits and go to round 1, where p1 proposes a new block B.
    c.polka_without_the_block(p1)
    assert [c.lock(m) for m in (p0, p1, p2, p3)] == [(0, "A"), (-1, None), (0, "A"), (0, "A")]
    c.deliver(c.votes(PRECOMMIT, 0, [p0, p1]), to=[p2])
    c.deliver(c.votes(PRECOMMIT, 0, [p0, p2]), to=[p1])
    for member in (p1, p2):
        c.timeout(member, Step.PRECOMMIT_WAIT)
    c.deliver(c.proposal(p1, 1), to=[p2])
    assert c.signed(p1) == [("prevote", 0, NIL), ("precommit", 0, NIL), ("prevote", 1, "B")]
    assert c.signed(p2) == [("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, NIL)]
    # p3's precommit of round 0 arrives. p2 holds B but is locked on A: it decides A at once.
    c.deliver(c.votes(PRECOMMIT, 0, [p3]), to=[p2])
    assert c.decision(p2) == "A"
    # p1 holds only B: it drops B for A's parts, and decides A when they come.
    c.deliver(c.votes(PRECOMMIT, 0, [p3]), to=[p1])
    assert (p1.machine.step, p1.decided) == (Step.COMMIT, [])
    c.deliver(c.proposal(p0, 0)[1:], to=[p1])
    assert c.decision(p1) == "A"


def test_two_thirds_committing_a_block_this_node_finds_invalid_is_a_consensus_failure(
    cluster: Cluster,
) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    good = p0.machine.state.make_block([b"tx"], [], EMPTY_COMMIT, p0.address)
    bad = c.add_block(replace(good, header=replace(good.header, app_hash=bytes(32))))
    _, parts = c.blocks[bad]
    c.deliver([c.forge_vote(m, PRECOMMIT, 0, bad) for m in c.others(x)], to=[x])
    assert x.machine.step == Step.COMMIT
    with pytest.raises(ConsensusFailure, match="invalid block at height 1"):
        c.deliver([BlockPartEvent(1, 0, part) for part in parts.parts()], to=[x])
    assert x.decided == []


# -- proposals and block parts ----------------------------------------------------------------


def test_a_second_proposal_for_the_round_and_one_for_another_round_are_ignored(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0, p1 = c.proposer(0), c.proposer(1)
    x = c.others(p0, p1)[0]
    other = c.forge_block(p0, [b"other"])
    proposal, part = c.proposal(p0, 0)
    # A proposal of round 1 (not reached yet) is dropped without blaming anyone.
    c.deliver(c.forge_proposal(p1, 1, other, -1)[:1], to=[x])
    # p0 equivocates: after its proposal of A it signs one of another block for the same round.
    c.deliver([proposal, c.forge_proposal(p0, 0, other, -1)[0], part], to=[x])
    assert x.bad == []
    assert c.signed(x) == [("prevote", 0, "A")]


@pytest.mark.parametrize("pol_round", [0, -2])
def test_a_proposal_with_its_pol_round_out_of_range_is_a_bad_message(
    cluster: Cluster, pol_round: int
) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    other = c.forge_block(p0, [b"other"])
    c.deliver(from_peer(c.forge_proposal(p0, 0, other, pol_round), "mallory"), to=[x])
    assert x.bad == [BadMessage("mallory", "proposal pol_round out of range")]
    assert c.signed(x) == []
    # The proposal was not taken: the real one still is.
    c.deliver(c.proposal(p0, 0), to=[x])
    assert c.signed(x) == [("prevote", 0, "A")]


def test_a_proposal_not_signed_by_the_round_proposer_is_a_bad_message(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0, p1 = c.proposer(0), c.proposer(1)
    x = c.others(p0, p1)[0]
    other = c.forge_block(p1, [b"other"])
    c.deliver(from_peer(c.forge_proposal(p1, 0, other, -1), "mallory"), to=[x])
    assert x.bad == [BadMessage("mallory", "proposal for 1/0 not signed by its proposer")]
    c.deliver(c.proposal(p0, 0), to=[x])
    assert c.signed(x) == [("prevote", 0, "A")]


def test_block_parts_before_their_proposal_or_for_another_height_are_dropped(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    proposal, *parts = c.proposal(p0, 0)
    c.deliver(parts, to=[x])
    c.deliver([proposal], to=[x])
    assert c.signed(x) == []  # the block is still missing
    c.deliver([replace(p, height=2) for p in parts if isinstance(p, BlockPartEvent)], to=[x])
    assert (c.signed(x), x.bad) == ([], [])
    c.deliver(parts, to=[x])
    assert c.signed(x) == [("prevote", 0, "A")]


def padding_for(c: Cluster, proposer: Member, size: int) -> bytes:
    """A transaction that makes `proposer`'s first block encode to exactly `size` bytes."""
    state = proposer.machine.state
    tx = b""
    for _ in range(5):
        encoded = len(state.make_block([tx], [], EMPTY_COMMIT, proposer.address).encode())
        if encoded == size:
            return tx
        tx = bytes(len(tx) + size - encoded)
    raise AssertionError(f"no padding gives a block of {size} bytes")


def test_a_block_of_exactly_the_maximum_size_is_accepted() -> None:
    c = Cluster(4, params=ConsensusParams(block_max_bytes=100_000))
    try:
        p0 = c.proposer(0)
        x = c.others(p0)[0]
        p0.app.pending = [padding_for(c, p0, 100_000)]
        c.start()
        assert len(c.proposal(p0, 0)) == 3  # the proposal and two parts
        c.deliver(c.proposal(p0, 0), to=[x])
        assert (x.bad, c.signed(x)) == ([], [("prevote", 0, "A")])
    finally:
        c.close()


def test_parts_beyond_the_maximum_block_size_are_reported_and_dropped() -> None:
    c = Cluster(4, params=ConsensusParams(block_max_bytes=100_000))
    try:
        p0 = c.proposer(0)
        x = c.others(p0)[0]
        p0.app.pending = [padding_for(c, p0, 140_000)]
        c.start()
        proposal, first, second, third = c.proposal(p0, 0)
        # The second part takes the block over the limit: it is reported, and the parts held so
        # far are dropped, so the third fits again and is not reported; no block ever completes.
        c.deliver(from_peer([proposal, first, second, third], "mallory"), to=[x])
        assert x.bad == [BadMessage("mallory", "block parts exceed the maximum block size")]
        assert x.machine.proposal_block is None
        c.timeout(x, Step.PROPOSE)
        assert c.signed(x) == [("prevote", 0, NIL)]
    finally:
        c.close()


# -- late precommits of the previous height ---------------------------------------------------


def height_two_without_one_precommit(c: Cluster) -> tuple[Member, Member]:
    """Everyone decides A at height 1, round 0; the proposer of height 2 (returned first)
    decides on three precommits and has not seen the fourth, that of the member returned second;
    it waits in NEW_HEIGHT of height 2."""
    c.start()
    p0 = c.proposer(0)
    c.deliver(c.proposal(p0, 0), to=c.members)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    x = next(m for m in c.members if m.address == c.genesis.next_validators.proposer.address)
    w = c.others(x)[0]
    c.deliver(c.votes(PRECOMMIT, 0, c.others(x, w)), to=[x])
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.others(x))
    assert {c.decision(m) for m in c.members} == {"A"}
    assert c.proposer(0, height=2) is x
    assert x.decided[0].commit.signatures[w.index].flag == BlockIDFlag.ABSENT
    assert x.machine.step == Step.NEW_HEIGHT
    return x, w


def proposed_block(c: Cluster, member: Member) -> Block:
    """The block of `member`'s last proposal."""
    proposal = [m for m in member.sent if isinstance(m, ProposalEvent)][-1].proposal
    return c.blocks[c.name_of(proposal.block_id)][0]


def test_late_precommits_of_the_last_height_go_into_the_next_blocks_last_commit(cluster: Cluster) -> None:
    c = cluster
    x, w = height_two_without_one_precommit(c)
    mark = len(x.handled)
    c.deliver(c.votes(PRECOMMIT, 0, [w]), to=[x])
    assert effects_since(x, mark) == []  # the commit timeout still runs
    assert x.machine.step == Step.NEW_HEIGHT
    c.timeout(x, Step.NEW_HEIGHT)
    block = proposed_block(c, x)
    assert block.height == 2
    assert [s.flag for s in block.last_commit.signatures] == [BlockIDFlag.COMMIT] * 4


def test_a_late_precommit_of_another_round_is_dropped_without_blaming_the_peer(cluster: Cluster) -> None:
    c = cluster
    x, w = height_two_without_one_precommit(c)
    mark = len(x.handled)
    # w was honest: a node that had not seen the commit may have gone on to round 1.
    c.deliver([replace(c.forge_vote(w, PRECOMMIT, 1, NIL), peer="peer")], to=[x])
    assert effects_since(x, mark) == []


def test_a_late_precommit_with_a_bad_signature_is_a_bad_message(cluster: Cluster) -> None:
    c = cluster
    x, w = height_two_without_one_precommit(c)
    vote = own_votes(w, PRECOMMIT)[0].vote
    c.deliver([VoteEvent(replace(vote, signature=bytes(64)), "mallory")], to=[x])
    assert [(b.peer, "bad signature" in b.reason) for b in x.bad] == [("mallory", True)]


def test_a_conflicting_late_precommit_is_an_equivocation(cluster: Cluster) -> None:
    c = cluster
    x, w = height_two_without_one_precommit(c)
    s = c.others(x, w)[0]  # its precommit for A is in x's last commit
    conflicting = c.forge_vote(s, PRECOMMIT, 0, NIL)
    c.deliver([conflicting], to=[x])
    assert x.equivocations == [Equivocation(own_votes(s, PRECOMMIT)[0].vote, conflicting.vote)]
    assert (x.bad, x.machine.step) == ([], Step.NEW_HEIGHT)


def test_with_skip_timeout_commit_the_next_height_starts_when_all_precommits_are_in() -> None:
    c = Cluster(4, timeouts=replace(FAST, skip_timeout_commit=True))
    try:
        x, w = height_two_without_one_precommit(c)
        mark = len(x.handled)
        c.deliver(c.votes(PRECOMMIT, 0, [w]), to=[x])
        assert [e for e in effects_since(x, mark) if isinstance(e, StepChanged)][:2] == [
            StepChanged(2, 0, Step.NEW_ROUND),
            StepChanged(2, 0, Step.PROPOSE),
        ]
        block = proposed_block(c, x)
        assert block.height == 2
        assert [s.flag for s in block.last_commit.signatures] == [BlockIDFlag.COMMIT] * 4
    finally:
        c.close()


# -- votes of the current height ----------------------------------------------------------------


def test_a_conflicting_vote_is_an_equivocation_and_still_counts(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x, b = c.others(p0)[:2]
    c.deliver(c.proposal(p0, 0), to=[x])
    # b prevotes nil, then A: with p0's and x's, its second prevote makes the polka for A.
    first, second = c.forge_vote(b, PREVOTE, 0, NIL), c.forge_vote(b, PREVOTE, 0, "A")
    c.deliver([*c.votes(PREVOTE, 0, [p0]), first], to=[x])
    assert x.machine.step == Step.PREVOTE_WAIT
    c.deliver([second], to=[x])
    assert x.equivocations == [Equivocation(first.vote, second.vote)]
    assert c.signed(x) == [("prevote", 0, "A"), ("precommit", 0, "A")]
    assert c.lock(x) == (0, "A")


def test_votes_of_the_current_round_do_not_cut_the_commit_wait_short(cluster: Cluster) -> None:
    c = cluster
    c.join()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    for member in c.others(x):
        c.timeout(member, Step.NEW_HEIGHT)
    c.deliver(c.proposal(p0, 0), to=c.others(x))
    # Half the power has prevoted in round 0: x, in its commit wait at round 0, stays there.
    mark = len(x.handled)
    c.deliver(c.votes(PREVOTE, 0, c.others(x)[:2]), to=[x])
    assert effects_since(x, mark) == []
    assert (x.machine.round, x.machine.step) == (0, Step.NEW_HEIGHT)
    c.timeout(x, Step.NEW_HEIGHT)
    assert x.machine.step == Step.PROPOSE


@pytest.mark.parametrize(
    ("precommits", "steps"),
    [
        (["A", "A", "A"], [Step.NEW_ROUND, Step.PROPOSE, Step.PRECOMMIT, Step.COMMIT]),
        (["A", "A", NIL], [Step.NEW_ROUND, Step.PROPOSE, Step.PRECOMMIT_WAIT]),
    ],
)
def test_precommits_of_round_zero_met_in_the_commit_wait_start_round_zero_first(
    cluster: Cluster, precommits: list[str], steps: list[Step]
) -> None:
    c = cluster
    c.join()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    block = c.forge_block(p0, [b"tx"])
    mark = len(x.handled)
    c.deliver(
        [c.forge_vote(m, PRECOMMIT, 0, label) for m, label in zip(c.others(x), precommits, strict=True)],
        to=[x],
    )
    assert steps_since(x, mark) == steps
    assert (1, 0, Step.PROPOSE) in x.timeouts
    if steps[-1] == Step.COMMIT:
        c.deliver([BlockPartEvent(1, 0, part) for part in c.blocks[block][1].parts()], to=[x])
        assert c.decision(x) == block


def test_a_polka_for_another_block_than_the_proposal_makes_the_node_wait_for_that_block(
    cluster: Cluster,
) -> None:
    c = cluster
    p0 = c.proposer(0)
    p1, p2, x = c.others(p0)
    c.start()
    # p0 equivocates: A to p1 and p2, B to x. p0, p1 and p2 prevote A, x prevotes B.
    other = c.forge_block(p0, [b"other"])
    c.deliver(c.proposal(p0, 0), to=[p1, p2])
    c.deliver(c.forge_proposal(p0, 0, other, -1), to=[x])
    assert c.signed(x) == [("prevote", 0, "B")]
    # x sees the polka for A, which it lacks: it drops B and waits, A's parts come during the
    # prevote wait, and on its timeout x locks and precommits A.
    c.deliver(c.votes(PREVOTE, 0, [p0, p1, p2]), to=[x])
    assert x.machine.step == Step.PREVOTE_WAIT
    c.deliver(c.proposal(p0, 0)[1:], to=[x])
    assert c.signed(x) == [("prevote", 0, "B")]
    c.timeout(x, Step.PREVOTE_WAIT)
    assert c.signed(x) == [("prevote", 0, "B"), ("precommit", 0, "A")]
    assert c.lock(x) == (0, "A")


def test_prevotes_of_its_round_do_not_move_a_node_that_has_not_prevoted(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    x = c.others(p0)[0]
    c.deliver(c.proposal(p0, 0), to=c.others(x))
    c.deliver(c.votes(PREVOTE, 0, c.others(x)), to=[x])
    assert (x.machine.step, c.signed(x)) == (Step.PROPOSE, [])
    c.timeout(x, Step.PROPOSE)
    assert c.signed(x) == [("prevote", 0, NIL)]


# -- vote timestamps ----------------------------------------------------------------------------


def test_a_vote_is_never_timestamped_before_its_block_time_plus_a_millisecond(cluster: Cluster) -> None:
    c = cluster
    p0 = c.proposer(0)
    slow, x = c.others(p0)[:2]
    slow.clock_offset = -10 * SECOND  # its clock is ten seconds behind
    c.start()
    c.deliver(c.proposal(p0, 0), to=[slow, x])
    block_time = c.blocks["A"][0].header.time
    assert block_time == GENESIS_TIME
    assert [m.vote.timestamp for m in own_votes(slow, PREVOTE)] == [block_time + MS]
    signed_at = next(h.now for h in x.handled if any(isinstance(e, SignVote) for e in h.effects))
    assert [m.vote.timestamp for m in own_votes(x, PREVOTE)] == [signed_at]
