"""Directed scenarios of the locking and proof-of-lock rules on four (or more) real machines: each
drives the network by hand into one corner of the algorithm and asserts the exact votes of the
honest validators, and that no two of them decide differently."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from consensus.machine import Step
from tests.consensus.cluster import NIL, PRECOMMIT, PREVOTE, Cluster, Member


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    c = Cluster(4)
    yield c
    c.close()


def finish_round(c: Cluster, round_: int, group: list[Member]) -> None:
    """Everyone in `group` sees every prevote and precommit of `round_` within the group, and
    each waits out its timeouts: the round ends in a decision or in the next round."""
    for member in group:
        if member.machine.round == round_ and member.machine.step == Step.PROPOSE:
            c.timeout(member, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, round_, group), to=group)
    for member in group:
        if member.machine.round == round_ and member.machine.step == Step.PREVOTE_WAIT:
            c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, round_, group), to=group)
    for member in group:
        if not member.decided and member.machine.round == round_:
            c.timeout(member, Step.PRECOMMIT_WAIT)


def run_until_decided(c: Cluster, group: list[Member], first_round: int, last_round: int) -> None:
    """Rounds `first_round`.. among `group` only: each round's proposer (if in the group) sends
    its proposal to the group, then the round is finished."""
    for round_ in range(first_round, last_round + 1):
        if all(m.decided for m in group):
            return
        proposer = c.proposer(round_)
        if proposer in group:
            c.deliver(c.proposal(proposer, round_), to=group)
        finish_round(c, round_, group)
    assert all(m.decided for m in group), [c.signed(m) for m in group]


def lock_on_a_committed_by_p0_only(c: Cluster) -> tuple[Member, Member, Member, Member]:
    """The issue's schedule: at round 0, p0 proposes A; p1 never gets it; p0, x and y prevote and
    precommit A; only p0 receives the precommits, commits A and is cut off; x, y and p1 time out
    into round 1, where p1 proposes."""
    p0, p1 = c.proposer(0), c.proposer(1)
    x, y = c.others(p0, p1)
    c.start()
    c.deliver(c.proposal(p0, 0), to=[x, y])
    c.timeout(p1, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [p0, x, y, p1]), to=c.members)
    c.timeout(p1, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 0, [x, y]), to=[p0])
    c.deliver(c.votes(PRECOMMIT, 0, [x, y, p1]), to=[x, y, p1])
    for member in (x, y, p1):
        c.timeout(member, Step.PRECOMMIT_WAIT)
    assert c.decision(p0) == "A"
    return p0, p1, x, y


def test_a_locked_validator_prevotes_nil_for_a_new_block_of_a_later_round(cluster: Cluster) -> None:
    c = cluster
    _, p1, x, y = lock_on_a_committed_by_p0_only(c)
    assert c.lock(x) == c.lock(y) == (0, "A")
    assert c.lock(p1) == (-1, None)
    # Round 1: p1 proposes a new block B with no proof-of-lock.
    assert c.proposed(p1, 1).pol_round == -1
    c.deliver(c.proposal(p1, 1), to=[x, y])
    for member in (x, y):
        assert c.signed(member) == [("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, NIL)]
    assert c.signed(p1) == [("prevote", 0, NIL), ("precommit", 0, NIL), ("prevote", 1, "B")]
    # The three go on without p0 and decide A too: a locked validator re-proposes it.
    finish_round(c, 1, [x, y, p1])
    run_until_decided(c, [x, y, p1], 2, 8)
    assert {c.decision(m) for m in c.members} == {"A"}


def test_a_forged_proof_of_lock_does_not_move_a_lock(cluster: Cluster) -> None:
    c = cluster
    _, p1, x, y = lock_on_a_committed_by_p0_only(c)
    # p1 is byzantine: in round 1 it proposes a new block C claiming a proof-of-lock at round 0,
    # which only A has, and prevotes it.
    forged = c.forge_block(p1, [b"forged"])
    c.deliver(c.forge_proposal(p1, 1, forged, pol_round=0), to=[x, y])
    c.deliver([c.forge_vote(p1, PREVOTE, 1, forged)], to=[x, y])
    for member in (x, y):
        assert c.signed(member) == [("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, NIL)]
        assert c.lock(member) == (0, "A")


def test_a_proof_of_lock_of_a_higher_round_unlocks(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    # Round 0: p3 alone sees the polka for A and locks it; the others precommit nil.
    c.deliver(c.proposal(p0, 0), to=[p1, p3])
    c.timeout(p2, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [p0, p1, p2]), to=c.members)
    assert c.lock(p3) == (0, "A")
    for member in (p0, p1, p2):
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    # Round 1: p1 proposes B; p3 (locked on A) prevotes nil, the rest B; only p0, p1 and p2 see
    # the polka for B (they lock it); p3 sees two prevotes for B.
    c.deliver(c.proposal(p1, 1), to=c.members)
    c.deliver(c.votes(PREVOTE, 1, [p0, p1, p2]), to=[p0, p1, p2])
    c.deliver(c.votes(PREVOTE, 1, [p0, p1]), to=[p3])
    c.timeout(p3, Step.PREVOTE_WAIT)
    assert [c.lock(m) for m in (p0, p1, p2, p3)] == [(1, "B"), (1, "B"), (1, "B"), (0, "A")]
    # Nobody sees +2/3 precommits for B: p0, p1 and p2 each see two, and p3's nil.
    c.deliver(c.votes(PRECOMMIT, 1, [p1, p3]), to=[p0])
    c.deliver(c.votes(PRECOMMIT, 1, [p0, p3]), to=[p1, p2])
    c.deliver(c.votes(PRECOMMIT, 1, [p0, p1]), to=[p3])
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    # Round 2: p2 re-proposes its valid block B under the proof-of-lock of round 1. p3 holds
    # the proposal but not the polka, so it waits; the last prevote of round 1 completes it.
    assert c.proposed(p2, 2).pol_round == 1
    c.deliver(c.proposal(p2, 2), to=[p3])
    assert c.signed(p3)[-1] == ("precommit", 1, NIL)
    c.deliver(c.votes(PREVOTE, 1, [p2]), to=[p3])
    assert c.signed(p3) == [
        ("prevote", 0, "A"),
        ("precommit", 0, "A"),
        ("prevote", 1, NIL),
        ("precommit", 1, NIL),
        ("prevote", 2, "B"),
    ]
    c.deliver(c.proposal(p2, 2), to=c.members)
    c.deliver(c.votes(PREVOTE, 2, c.members), to=c.members)
    assert {c.lock(m) for m in c.members} == {(2, "B")}
    c.deliver(c.votes(PRECOMMIT, 2, c.members), to=c.members)
    assert {c.decision(m) for m in c.members} == {"B"}


def test_the_valid_block_is_proposed_again_with_its_round(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    # Round 0: each sees three prevotes but not the polka for A, and times out into precommit
    # nil; then the rest arrive, so each one holding A makes it its valid block, unlocked.
    c.deliver(c.proposal(p0, 0), to=[p1, p2])
    c.timeout(p3, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, [p3, p2]), to=[p0])
    c.deliver(c.votes(PREVOTE, 0, [p3, p0]), to=[p1])
    c.deliver(c.votes(PREVOTE, 0, [p3, p1]), to=[p2])
    c.deliver(c.votes(PREVOTE, 0, [p0, p1]), to=[p3])
    for member in c.members:
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    assert [c.valid(m) for m in (p0, p1, p2, p3)] == [(0, "A"), (0, "A"), (0, "A"), (-1, None)]
    assert {c.lock(m) for m in c.members} == {(-1, None)}
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    # Round 1: p1 proposes A again, with proof-of-lock round 0; all prevote it, p3 included
    # (the proposal brings it the block; it has the round-0 prevotes).
    proposal = c.proposed(p1, 1)
    assert (proposal.pol_round, c.name_of(proposal.block_id)) == (0, "A")
    c.deliver(c.proposal(p1, 1), to=c.members)
    for member in c.members:
        assert c.signed(member)[-1] == ("prevote", 1, "A")
    run_until_decided(c, c.members, 1, 1)
    assert {c.decision(m) for m in c.members} == {"A"}


def test_a_proposer_that_saw_a_polka_the_others_did_not(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    # Round 0: only p1 sees the polka for A (and locks it); p3 never gets the proposal.
    c.deliver(c.proposal(p0, 0), to=[p1, p2])
    c.timeout(p3, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=[p1])
    c.deliver(c.votes(PREVOTE, 0, [p0, p2, p3]), to=[p0, p2, p3])
    for member in (p0, p2, p3):
        c.timeout(member, Step.PREVOTE_WAIT)
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    assert c.lock(p1) == (0, "A")
    # Round 1: p1 proposes A with proof-of-lock round 0. p2 gets p1's missing prevote and
    # prevotes A; p0 and p3 never see the polka and prevote nil when the propose timeout fires.
    c.deliver(c.proposal(p1, 1), to=[p0, p2, p3])
    for member in (p0, p2, p3):
        assert c.signed(member)[-1] == ("precommit", 0, NIL)  # still waiting for the polka
    c.deliver(c.votes(PREVOTE, 0, [p1]), to=[p2])
    c.timeout(p0, Step.PROPOSE)
    c.timeout(p3, Step.PROPOSE)
    assert c.signed(p1) == [("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, "A")]
    assert c.signed(p2) == [("prevote", 0, "A"), ("precommit", 0, NIL), ("prevote", 1, "A")]
    assert c.signed(p0) == [("prevote", 0, "A"), ("precommit", 0, NIL), ("prevote", 1, NIL)]
    assert c.signed(p3) == [("prevote", 0, NIL), ("precommit", 0, NIL), ("prevote", 1, NIL)]
    finish_round(c, 1, c.members)
    assert c.lock(p1) == (0, "A")
    run_until_decided(c, c.members, 2, 8)
    assert len({c.decision(m) for m in c.members}) == 1


def test_prevote_timeout_without_a_polka_precommits_nil(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    c.deliver(c.proposal(p0, 0), to=[p1])
    for member in (p2, p3):
        c.timeout(member, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    for member in c.members:
        assert member.machine.step == Step.PREVOTE_WAIT
        assert c.signed(member) == [("prevote", 0, "A" if member in (p0, p1) else NIL)]
        c.timeout(member, Step.PREVOTE_WAIT)
        assert c.signed(member)[-1] == ("precommit", 0, NIL)
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    for member in c.members:
        assert member.machine.step == Step.PRECOMMIT_WAIT
        c.timeout(member, Step.PRECOMMIT_WAIT)
        assert (member.machine.round, c.lock(member)) == (1, (-1, None))


def test_a_polka_for_nil_precommits_nil_without_waiting(cluster: Cluster) -> None:
    c = cluster
    c.start()
    p0 = c.proposer(0)
    for member in c.others(p0):
        c.timeout(member, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, c.others(p0)), to=c.others(p0))
    for member in c.others(p0):
        assert c.signed(member) == [("prevote", 0, NIL), ("precommit", 0, NIL)]


@pytest.mark.parametrize(
    ("powers", "voters", "skips"),
    [
        ([10, 10, 10, 10], [1], False),  # a quarter of the power
        ([10, 10, 10, 10], [1, 2], True),  # a half
        ([10, 10, 10, 10], [1, 1], False),  # one validator's prevote and precommit count once
        ([10, 10, 10, 15], [3], False),  # 15 of 45 is a third, not more
        ([10, 10, 10, 16], [3], True),
        ([5, 10, 10, 10], [0, 1], True),  # 15 of 35
        ([5, 10, 20, 10], [0, 1], False),  # 15 of 45
    ],
)
def test_votes_of_more_than_a_third_of_the_power_move_a_node_to_their_round(
    powers: list[int], voters: list[int], skips: bool
) -> None:
    c = Cluster(len(powers), powers)
    try:
        c.start()
        listener = next(
            m for i, m in enumerate(c.in_power_order) if i not in voters and m is not c.proposer(0)
        )
        signed: set[int] = set()
        for index in voters:
            kind = PRECOMMIT if index in signed else PREVOTE
            signed.add(index)
            c.deliver([c.forge_vote(c.in_power_order[index], kind, 3, NIL)], to=[listener])
        assert (listener.machine.round, listener.machine.step) == ((3 if skips else 0), Step.PROPOSE)
        assert c.signed(listener) == []
    finally:
        c.close()


def test_an_invalid_block_gets_nil_prevotes_and_a_polka_for_it_no_lock(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    # p3's application rejects what p0 will propose; the others accept it.
    p3.app.poison = frozenset(p0.app.pending)
    c.start()
    c.deliver(c.proposal(p0, 0), to=c.members)
    assert c.signed(p3) == [("prevote", 0, NIL)]
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    assert c.signed(p3) == [("prevote", 0, NIL), ("precommit", 0, NIL)]
    assert c.lock(p3) == (-1, None)
    for member in (p0, p1, p2):
        assert c.signed(member) == [("prevote", 0, "A"), ("precommit", 0, "A")]


def test_a_block_that_does_not_match_its_proposal_gets_nil(cluster: Cluster) -> None:
    c = cluster
    p0 = c.proposer(0)
    c.start()
    # p0 signs a proposal for A but sends the parts of another block.
    other = c.forge_block(p0, [b"other"])
    real = c.proposal(p0, 0)
    c.deliver([real[0], *c.forge_proposal(p0, 0, other, -1)[1:]], to=c.others(p0))
    for member in c.others(p0):
        assert member.machine.proposal_block is None
        c.timeout(member, Step.PROPOSE)
        assert c.signed(member) == [("prevote", 0, NIL)]
        assert any("does not prove" in bad.reason for bad in member.bad)


def test_a_polka_for_a_missing_block_precommits_nil_then_commits_when_it_arrives(cluster: Cluster) -> None:
    c = cluster
    p0 = c.proposer(0)
    late = c.others(p0)[0]
    c.start()
    c.deliver(c.proposal(p0, 0), to=c.others(p0, late))
    c.timeout(late, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 0, c.members), to=c.members)
    assert late.machine.step == Step.PREVOTE_WAIT  # a polka for a block it lacks: it waits
    c.timeout(late, Step.PREVOTE_WAIT)
    assert c.signed(late) == [("prevote", 0, NIL), ("precommit", 0, NIL)]
    assert c.lock(late) == (-1, None)
    c.deliver(c.votes(PRECOMMIT, 0, c.members), to=c.members)
    assert (late.machine.step, late.decided) == (Step.COMMIT, [])
    c.deliver(c.proposal(p0, 0)[1:], to=[late])  # the parts alone complete the decided block
    assert {c.decision(m) for m in c.members} == {"A"}


def test_a_polka_for_the_locked_block_in_a_later_round_relocks(cluster: Cluster) -> None:
    c = cluster
    p0, p1, p2, p3 = (c.proposer(r) for r in range(4))
    c.start()
    c.polka_without_the_block(p3)
    assert [c.lock(m) for m in (p0, p1, p2, p3)] == [(0, "A")] * 3 + [(-1, None)]
    # Each sees three precommits, two of them for A: no decision, round 1.
    c.deliver(c.votes(PRECOMMIT, 0, [p1, p3]), to=[p0])
    c.deliver(c.votes(PRECOMMIT, 0, [p0, p3]), to=[p1, p2])
    c.deliver(c.votes(PRECOMMIT, 0, [p0, p1]), to=[p3])
    for member in c.members:
        c.timeout(member, Step.PRECOMMIT_WAIT)
    # Round 1: p1 proposes A again under the proof-of-lock of round 0; all prevote it; the
    # three locked on A lock it again at round 1, p3 locks it for the first time.
    assert c.proposed(p1, 1).pol_round == 0
    c.deliver(c.proposal(p1, 1), to=c.members)
    c.deliver(c.votes(PREVOTE, 1, c.members), to=c.members)
    assert {c.lock(m) for m in c.members} == {(1, "A")}
    assert {c.valid(m) for m in c.members} == {(1, "A")}
    for member in (p0, p1, p2):
        assert c.signed(member) == [
            ("prevote", 0, "A"),
            ("precommit", 0, "A"),
            ("prevote", 1, "A"),
            ("precommit", 1, "A"),
        ]
    assert c.signed(p3) == [
        ("prevote", 0, NIL),
        ("precommit", 0, NIL),
        ("prevote", 1, "A"),
        ("precommit", 1, "A"),
    ]


def test_a_node_in_the_commit_step_keeps_its_decision_through_later_rounds(cluster: Cluster) -> None:
    """Line 49 of the paper decides on +2/3 precommits of any round once the block is there: a
    node that saw round 0's +2/3 precommits for A without A's parts neither votes in the rounds
    the others go on to, nor forgets that A is decided; the parts alone then finish its commit."""
    c = cluster
    p0 = c.proposer(0)
    late = c.others(p0)[0]
    rest = c.others(late)
    c.start()
    c.polka_without_the_block(late)
    c.deliver(c.votes(PRECOMMIT, 0, rest), to=[late])
    assert (late.machine.step, late.decided) == (Step.COMMIT, [])
    # The others see too few precommits for A and end round 0; round 1's proposal reaches nobody.
    for i, member in enumerate(rest):
        c.deliver(c.votes(PRECOMMIT, 0, [late, rest[i - 1]]), to=[member])
        c.timeout(member, Step.PRECOMMIT_WAIT)
        c.timeout(member, Step.PROPOSE)
    c.deliver(c.votes(PREVOTE, 1, rest), to=c.members)
    c.deliver(c.votes(PRECOMMIT, 1, rest), to=c.members)
    assert [c.signed(m)[2:] for m in rest] == [[("prevote", 1, NIL), ("precommit", 1, NIL)]] * 3
    assert (late.machine.step, late.machine.round) == (Step.COMMIT, 0)
    assert c.signed(late) == [("prevote", 0, NIL), ("precommit", 0, NIL)]
    c.deliver(c.proposal(p0, 0)[1:], to=[late])
    assert c.decision(late) == "A"
