"""Vote sets, height vote sets, commits and BFT time, with validators of unequal power and real
Ed25519 signatures: +2/3 is strictly more than two thirds of the power, a validator's second
different vote is a conflict (reported, and counted only in its block's tally), a commit proves
its block only with +2/3 of valid signatures, and the block time is the power-weighted median of
the commit's timestamps."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.types import (
    NIL_BLOCK_ID,
    BlockID,
    BlockIDFlag,
    Commit,
    CommitSig,
    PartSetHeader,
    Vote,
    VoteType,
)
from consensus.validators import ValidatorSet
from consensus.votes import (
    MAX_BLOCKS_PER_VALIDATOR,
    AddResult,
    AddStatus,
    CommitError,
    HeightVoteSet,
    SignatureCheck,
    VoteError,
    VoteSet,
    median_time,
    min_vote_time,
    verify_commit,
    vote_set_from_commit,
)
from primitives.batch_verify import BatchVerifier
from primitives.keys import PrivateKey
from tests.consensus.harness import GENESIS_TIME, keys

CHAIN = "votes-chain"
HEIGHT = 5
BLOCK_A = BlockID(b"\xaa" * 32, PartSetHeader(1, b"\x0a" * 32))
BLOCK_B = BlockID(b"\xbb" * 32, PartSetHeader(1, b"\x0b" * 32))
BLOCK_C = BlockID(b"\xcc" * 32, PartSetHeader(3, b"\x0c" * 32))
ALL_KEYS = keys(7)


def checker() -> SignatureCheck:
    return BatchVerifier(workers=1).verify_batch


@dataclass
class Net:
    """A validator set and its keys, both in the set's order (votes use that index)."""

    vset: ValidatorSet
    keys: list[PrivateKey]

    def vote(
        self,
        index: int,
        block_id: BlockID,
        vote_type: VoteType = VoteType.PRECOMMIT,
        round_: int = 0,
        height: int = HEIGHT,
        ts: int = GENESIS_TIME,
    ) -> Vote:
        key = self.keys[index]
        unsigned = Vote(vote_type, height, round_, block_id, ts + index, key.address.raw, index)
        return unsigned.with_signature(key.sign(unsigned.sign_bytes(CHAIN)))

    def vote_set(self, vote_type: VoteType = VoteType.PRECOMMIT, round_: int = 0) -> VoteSet:
        return VoteSet(CHAIN, HEIGHT, round_, vote_type, self.vset, checker())


def network(powers: list[int]) -> Net:
    members = ALL_KEYS[: len(powers)]
    vset = ValidatorSet.genesis([(k.public_key.raw, p) for k, p in zip(members, powers, strict=True)])
    by_address = {k.address.raw: k for k in members}
    return Net(vset, [by_address[v.address] for v in vset.validators])


def flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


# -- +2/3 ----------------------------------------------------------------------------------------


def test_network_orders_keys_like_the_set() -> None:
    net = network([1, 4, 2, 3])
    assert [v.power for v in net.vset.validators] == [4, 3, 2, 1]
    assert [k.address.raw for k in net.keys] == [v.address for v in net.vset.validators]


def test_three_equal_validators_need_all_three() -> None:
    net = network([1, 1, 1])
    votes = net.vote_set()
    assert votes.add(net.vote(0, BLOCK_A)).status is AddStatus.ADDED
    assert votes.add(net.vote(1, BLOCK_A)).status is AddStatus.ADDED
    assert votes.sum == 2
    assert votes.two_thirds_majority() is None, "2 of 3 is exactly two thirds, not more"
    assert not votes.has_two_thirds_any()
    assert votes.add(net.vote(2, BLOCK_A)).status is AddStatus.ADDED
    assert votes.two_thirds_majority() == BLOCK_A
    assert votes.has_two_thirds_any() and votes.has_all()


@pytest.mark.parametrize(
    ("powers", "threshold"),
    [
        ([1, 1, 1], 3),  # total 3: 2 is exactly 2/3
        ([2, 2, 2], 5),  # total 6: 4 is exactly 2/3, needs all three
        ([3, 2, 1], 5),  # total 6: 3+1 is not enough, 3+2 is
        ([5, 1], 5),  # total 6: the big one alone
        ([1, 1, 1, 1], 3),  # total 4
        ([4, 3, 2, 1], 7),  # total 10
        ([3, 3, 3, 3], 9),  # total 12: 8 is exactly 2/3
        ([7, 1, 1], 7),  # total 9: 6 would be exactly 2/3; 7 alone is more
    ],
)
def test_every_subset_has_two_thirds_exactly_when_above_the_threshold(
    powers: list[int], threshold: int
) -> None:
    net = network(powers)
    total = sum(powers)
    assert net.vset.quorum() == threshold
    assert 3 * threshold > 2 * total >= 3 * (threshold - 1)
    signed = [net.vote(i, BLOCK_A) for i in range(len(powers))]
    check = checker()
    for size in range(len(powers) + 1):
        for subset in combinations(range(len(powers)), size):
            votes = VoteSet(CHAIN, HEIGHT, 0, VoteType.PRECOMMIT, net.vset, check)
            for i in subset:
                votes.add(signed[i])
            power = sum(net.vset.validators[i].power for i in subset)
            assert votes.sum == power == votes.power_for(BLOCK_A)
            above = power >= threshold
            assert votes.has_two_thirds_any() is above, subset
            assert votes.two_thirds_majority() == (BLOCK_A if above else None), subset


def test_two_thirds_majority_for_nil() -> None:
    net = network([4, 3, 2, 1])
    votes = net.vote_set(VoteType.PREVOTE)
    votes.add(net.vote(0, NIL_BLOCK_ID, VoteType.PREVOTE))
    votes.add(net.vote(3, BLOCK_A, VoteType.PREVOTE))
    votes.add(net.vote(2, NIL_BLOCK_ID, VoteType.PREVOTE))
    assert votes.two_thirds_majority() is None
    votes.add(net.vote(1, NIL_BLOCK_ID, VoteType.PREVOTE))
    majority = votes.two_thirds_majority()
    assert majority is not None and majority.is_nil()
    assert votes.power_for(NIL_BLOCK_ID) == 9 and votes.power_for(BLOCK_A) == 1


def test_split_votes_have_two_thirds_of_any_but_no_majority() -> None:
    net = network([1, 1, 1, 1])
    votes = net.vote_set(VoteType.PREVOTE)
    votes.add(net.vote(0, BLOCK_A, VoteType.PREVOTE))
    votes.add(net.vote(1, BLOCK_A, VoteType.PREVOTE))
    assert not votes.has_two_thirds_any()
    votes.add(net.vote(2, BLOCK_B, VoteType.PREVOTE))
    assert votes.has_two_thirds_any()
    assert votes.two_thirds_majority() is None
    votes.add(net.vote(3, NIL_BLOCK_ID, VoteType.PREVOTE))
    assert votes.has_all() and votes.two_thirds_majority() is None
    assert (votes.power_for(BLOCK_A), votes.power_for(BLOCK_B), votes.power_for(NIL_BLOCK_ID)) == (2, 1, 1)


CHOICES = [None, BLOCK_A, BLOCK_B, NIL_BLOCK_ID]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 20), st.sampled_from(CHOICES)), min_size=1, max_size=6))
def test_tallies_match_a_reference(ballots: list[tuple[int, BlockID | None]]) -> None:
    net = network([power for power, _ in ballots])
    # the set reorders validators by power; give each position the choice drawn for it
    choices = [choice for _, choice in ballots]
    votes = net.vote_set()
    for i, choice in enumerate(choices):
        if choice is not None:
            assert votes.add(net.vote(i, choice)).status is AddStatus.ADDED
    total = net.vset.total_power
    power = {c: 0 for c in CHOICES if c is not None}
    for i, choice in enumerate(choices):
        if choice is not None:
            power[choice] += net.vset.validators[i].power
    present = sum(power.values())
    assert votes.sum == present
    assert votes.has_two_thirds_any() is (3 * present > 2 * total)
    assert votes.has_all() is (present == total)
    winners = [c for c, p in power.items() if 3 * p > 2 * total]
    assert votes.two_thirds_majority() == (winners[0] if winners else None)
    for choice, p in power.items():
        assert votes.power_for(choice) == p
    assert len(votes.votes()) == sum(c is not None for c in choices)


# -- duplicates, conflicts, invalid votes ---------------------------------------------------------


def test_duplicate_vote_changes_nothing() -> None:
    net = network([3, 2, 1])
    votes = net.vote_set()
    first = net.vote(1, BLOCK_A)
    assert votes.add(first).status is AddStatus.ADDED
    assert votes.add(first).status is AddStatus.DUPLICATE
    assert votes.add(first, verified=True).status is AddStatus.DUPLICATE
    assert votes.sum == 2 and votes.power_for(BLOCK_A) == 2
    assert votes.votes() == [first]


def test_conflicting_vote_counts_for_its_block_but_not_twice_in_the_sum() -> None:
    """The paper's counting: a validator that signs two block ids is in both tallies, but its
    power counts once toward "+2/3 of any"."""
    net = network([3, 2, 1])
    votes = net.vote_set()
    first = net.vote(0, BLOCK_A)
    votes.add(first)
    votes.add(net.vote(2, BLOCK_B))
    for other in (BLOCK_B, NIL_BLOCK_ID):
        result = votes.add(net.vote(0, other))
        assert result.status is AddStatus.CONFLICT
        assert result.conflicting == first
    assert votes.add(net.vote(0, BLOCK_B)).status is AddStatus.DUPLICATE
    assert votes.get(0) == first
    assert votes.sum == 4
    assert votes.power_for(BLOCK_A) == 3
    assert votes.power_for(BLOCK_B) == 4
    assert votes.power_for(NIL_BLOCK_ID) == 3
    assert votes.two_thirds_majority() is None
    # with validator 1, B has 3 + 2 + 1 = 6 of 6: a polka that needed the equivocator's vote
    votes.add(net.vote(1, BLOCK_B))
    assert votes.two_thirds_majority() == BLOCK_B
    assert [v.validator_index for v in votes.votes_for(BLOCK_B)] == [0, 1, 2]


def test_an_equivocator_is_kept_for_a_bounded_number_of_block_ids() -> None:
    net = network([3, 2, 1])
    votes = net.vote_set()
    ids = [BlockID(bytes([i]) * 32, PartSetHeader(1, bytes([i]) * 32)) for i in range(1, 8)]
    first = net.vote(0, ids[0])
    assert votes.add(first) == AddResult(AddStatus.ADDED, None, counted=True)
    results = [votes.add(net.vote(0, block_id)) for block_id in ids[1:]]
    # its first four block ids are counted, the later ones reported but not kept
    assert results == [AddResult(AddStatus.CONFLICT, first, counted=i < 3) for i in range(6)]
    assert MAX_BLOCKS_PER_VALIDATOR == 4
    assert [votes.power_for(b) for b in ids] == [3, 3, 3, 3, 0, 0, 0]
    assert [v.block_id for v in votes.all_votes()] == ids[:4]
    assert votes.sum == 3


def test_conflicting_vote_with_a_bad_signature_is_an_error() -> None:
    net = network([3, 2, 1])
    votes = net.vote_set()
    votes.add(net.vote(0, BLOCK_A))
    forged = net.vote(0, BLOCK_B)
    with pytest.raises(VoteError, match="bad signature"):
        votes.add(forged.with_signature(flip(forged.signature)))


def _invalid_votes(net: Net) -> dict[str, Vote]:
    good = net.vote(1, BLOCK_A)
    other_key = ALL_KEYS[6]
    return {
        "height": net.vote(1, BLOCK_A, height=HEIGHT + 1),
        "round": net.vote(1, BLOCK_A, round_=1),
        "type": net.vote(1, BLOCK_A, VoteType.PREVOTE),
        "index out of range": replace(good, validator_index=len(net.vset)),
        "negative index": replace(good, validator_index=-1),
        "address of another validator": replace(good, validator_address=net.keys[0].address.raw),
        "unknown address": replace(good, validator_address=other_key.address.raw),
        "signature flipped": good.with_signature(flip(good.signature, 10)),
        "signature by another key": good.with_signature(net.keys[0].sign(good.sign_bytes(CHAIN))),
        "signature for another chain": good.with_signature(net.keys[1].sign(good.sign_bytes("other"))),
        "no signature": good.with_signature(b""),
    }


@pytest.mark.parametrize("case", sorted(_invalid_votes(network([3, 2, 1]))))
def test_invalid_votes_raise(case: str) -> None:
    net = network([3, 2, 1])
    votes = net.vote_set()
    with pytest.raises(VoteError):
        votes.add(_invalid_votes(net)[case])
    assert votes.sum == 0 and votes.votes() == []
    assert votes.add(net.vote(1, BLOCK_A)).status is AddStatus.ADDED


def test_verified_skips_only_the_signature_check() -> None:
    net = network([3, 2, 1])
    votes = net.vote_set()
    good = net.vote(1, BLOCK_A)
    assert votes.add(good.with_signature(b"\x00" * 64), verified=True).status is AddStatus.ADDED
    with pytest.raises(VoteError):
        votes.add(replace(good, round=1), verified=True)


# -- commits -------------------------------------------------------------------------------------


def _precommits(net: Net, choices: list[BlockID | None]) -> tuple[VoteSet, list[Vote | None]]:
    votes = net.vote_set()
    cast: list[Vote | None] = []
    for i, choice in enumerate(choices):
        vote = None if choice is None else net.vote(i, choice)
        if vote is not None:
            votes.add(vote)
        cast.append(vote)
    return votes, cast


def _mixed() -> tuple[Net, VoteSet, list[Vote | None]]:
    """Powers 5,4,3,2,1 (total 15): A from 5,4,2 (11 > 10), nil from 3, B from 1."""
    net = network([5, 4, 3, 2, 1])
    votes, cast = _precommits(net, [BLOCK_A, BLOCK_A, NIL_BLOCK_ID, BLOCK_A, BLOCK_B])
    return net, votes, cast


def test_make_commit_flags_in_validator_order() -> None:
    net, votes, cast = _mixed()
    commit = votes.make_commit()
    assert (commit.height, commit.round, commit.block_id) == (HEIGHT, 0, BLOCK_A)
    assert [s.flag for s in commit.signatures] == [
        BlockIDFlag.COMMIT,
        BlockIDFlag.COMMIT,
        BlockIDFlag.NIL,
        BlockIDFlag.COMMIT,
        BlockIDFlag.ABSENT,  # a vote for another block is not part of the commit
    ]
    for index, sig in enumerate(commit.signatures[:4]):
        vote = cast[index]
        assert vote is not None
        assert sig == CommitSig(sig.flag, vote.validator_address, vote.timestamp, vote.signature)
        assert commit.vote_of(index) == vote
    assert commit.signatures[4] == CommitSig.absent()
    verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, commit, checker())
    assert Commit.decode(commit.encode()) == commit


def test_make_commit_leaves_absent_validators_absent() -> None:
    net = network([1, 1, 1, 1])
    votes, _ = _precommits(net, [BLOCK_A, None, BLOCK_A, BLOCK_A])
    commit = votes.make_commit()
    assert [s.flag for s in commit.signatures] == [
        BlockIDFlag.COMMIT,
        BlockIDFlag.ABSENT,
        BlockIDFlag.COMMIT,
        BlockIDFlag.COMMIT,
    ]
    verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, commit, checker())


def test_make_commit_needs_precommits_for_a_block() -> None:
    net = network([1, 1, 1])
    no_majority, _ = _precommits(net, [BLOCK_A, BLOCK_A, None])
    nil_majority, _ = _precommits(net, [NIL_BLOCK_ID] * 3)
    prevotes = net.vote_set(VoteType.PREVOTE)
    for i in range(3):
        prevotes.add(net.vote(i, BLOCK_A, VoteType.PREVOTE))
    for vote_set in (no_majority, nil_majority, prevotes):
        with pytest.raises(ValueError):
            vote_set.make_commit()


def test_verify_commit_rejects_wrong_height_and_block() -> None:
    net, votes, _ = _mixed()
    commit = votes.make_commit()
    with pytest.raises(CommitError, match="height"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT + 1, commit, checker())
    with pytest.raises(CommitError, match="block"):
        verify_commit(CHAIN, net.vset, BLOCK_B, HEIGHT, commit, checker())
    with pytest.raises(CommitError, match="height"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, replace(commit, height=HEIGHT + 1), checker())
    with pytest.raises(CommitError):
        verify_commit("other-chain", net.vset, BLOCK_A, HEIGHT, commit, checker())


def test_verify_commit_rejects_a_wrong_number_of_entries() -> None:
    net, votes, _ = _mixed()
    commit = votes.make_commit()
    for signatures in (commit.signatures[:-1], (*commit.signatures, CommitSig.absent()), ()):
        with pytest.raises(CommitError, match="entries"):
            verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, replace(commit, signatures=signatures), checker())


def test_verify_commit_rejects_an_entry_from_another_validator() -> None:
    net, votes, _ = _mixed()
    commit = votes.make_commit()
    sigs = list(commit.signatures)
    sigs[0], sigs[1] = sigs[1], sigs[0]
    with pytest.raises(CommitError, match="not from validator"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, replace(commit, signatures=tuple(sigs)), checker())
    outsider = replace(commit.signatures[3], validator_address=ALL_KEYS[6].address.raw)
    sigs = [*commit.signatures[:3], outsider, commit.signatures[4]]
    with pytest.raises(CommitError, match="not from validator"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, replace(commit, signatures=tuple(sigs)), checker())


@pytest.mark.parametrize("index", [0, 2, 3], ids=["commit-entry", "nil-entry", "last-commit-entry"])
@pytest.mark.parametrize("at", [0, 31, 63])
def test_verify_commit_rejects_a_flipped_signature_byte(index: int, at: int) -> None:
    net, votes, _ = _mixed()
    commit = votes.make_commit()
    sigs = list(commit.signatures)
    sigs[index] = replace(sigs[index], signature=flip(sigs[index].signature, at))
    with pytest.raises(CommitError, match="invalid signature"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, replace(commit, signatures=tuple(sigs)), checker())


def test_verify_commit_rejects_changed_timestamps_rounds_and_flags() -> None:
    net, votes, _ = _mixed()
    commit = votes.make_commit()
    sigs = list(commit.signatures)
    sigs[1] = replace(sigs[1], timestamp=sigs[1].timestamp + 1)
    forged: list[Commit] = [
        replace(commit, signatures=tuple(sigs)),
        replace(commit, round=1),
    ]
    # a nil precommit re-flagged as a vote for the block does not add its power
    sigs = list(commit.signatures)
    sigs[2] = replace(sigs[2], flag=BlockIDFlag.COMMIT)
    forged.append(replace(commit, signatures=tuple(sigs)))
    for bad in forged:
        with pytest.raises(CommitError, match="invalid signature"):
            verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, bad, checker())


def test_verify_commit_rejects_two_of_four() -> None:
    net = network([1, 1, 1, 1])
    signed = [net.vote(i, BLOCK_A) for i in range(2)]
    present = [CommitSig(BlockIDFlag.COMMIT, v.validator_address, v.timestamp, v.signature) for v in signed]
    sigs = (*present, CommitSig.absent(), CommitSig.absent())
    commit = Commit(HEIGHT, 0, BLOCK_A, sigs)
    with pytest.raises(CommitError, match=r"2 of 4 voting power"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, commit, checker())
    # nil votes are valid signatures but do not count towards the block
    nil = net.vote(2, NIL_BLOCK_ID)
    with_nil = replace(
        commit,
        signatures=(
            *sigs[:2],
            CommitSig(BlockIDFlag.NIL, nil.validator_address, nil.timestamp, nil.signature),
            sigs[3],
        ),
    )
    with pytest.raises(CommitError, match=r"2 of 4 voting power"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, with_nil, checker())
    third = net.vote(3, BLOCK_A)
    enough = replace(
        commit,
        signatures=(
            *sigs[:3],
            CommitSig(BlockIDFlag.COMMIT, third.validator_address, third.timestamp, third.signature),
        ),
    )
    verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, enough, checker())


def test_verify_commit_rejects_exactly_two_thirds() -> None:
    net = network([1, 1, 1])
    votes, _ = _precommits(net, [BLOCK_A, BLOCK_A, None])
    sigs = tuple(
        CommitSig.absent()
        if v is None
        else CommitSig(BlockIDFlag.COMMIT, v.validator_address, v.timestamp, v.signature)
        for v in (votes.get(i) for i in range(3))
    )
    with pytest.raises(CommitError, match="2 of 3"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, Commit(HEIGHT, 0, BLOCK_A, sigs), checker())


def test_verify_commit_checks_power_not_count() -> None:
    net = network([4, 3, 2, 1])
    # three of four validators but only 2 + 1 + 3 = 6 of 10
    votes, _ = _precommits(net, [None, BLOCK_A, BLOCK_A, BLOCK_A])
    assert votes.two_thirds_majority() is None
    sigs = tuple(
        CommitSig.absent()
        if v is None
        else CommitSig(BlockIDFlag.COMMIT, v.validator_address, v.timestamp, v.signature)
        for v in (votes.get(i) for i in range(4))
    )
    with pytest.raises(CommitError, match="6 of 10"):
        verify_commit(CHAIN, net.vset, BLOCK_A, HEIGHT, Commit(HEIGHT, 0, BLOCK_A, sigs), checker())


def test_vote_set_from_commit_rebuilds_the_precommits() -> None:
    net, votes, cast = _mixed()
    commit = votes.make_commit()

    def must_not_verify(items: object) -> list[bool]:
        raise AssertionError("a stored commit's signatures are not verified again")

    rebuilt = vote_set_from_commit(CHAIN, commit, net.vset, must_not_verify)
    assert (rebuilt.height, rebuilt.round, rebuilt.type) == (HEIGHT, 0, VoteType.PRECOMMIT)
    assert rebuilt.two_thirds_majority() == BLOCK_A
    assert [rebuilt.get(i) for i in range(4)] == cast[:4]
    assert rebuilt.get(4) is None
    assert rebuilt.sum == 14
    assert rebuilt.power_for(BLOCK_A) == 11 and rebuilt.power_for(NIL_BLOCK_ID) == 3
    assert rebuilt.make_commit() == commit


# -- BFT time ------------------------------------------------------------------------------------


def _timed_commit(vset: ValidatorSet, times: list[int | None]) -> Commit:
    """A commit (signatures not checked by median_time) with entry i at times[i], None absent."""
    sigs = tuple(
        CommitSig.absent()
        if t is None
        else CommitSig(BlockIDFlag.COMMIT, vset.validators[i].address, t, b"\x00" * 64)
        for i, t in enumerate(times)
    )
    return Commit(HEIGHT, 0, BLOCK_A, sigs)


@pytest.mark.parametrize(
    ("powers", "times", "median"),
    [
        ([1, 1, 1], [30, 10, 20], 20),
        ([1, 1, 1], [10, 10, 99], 10),
        ([5, 1, 1], [30, 10, 20], 30),  # 10, 20, 30 x5: the heavy validator decides
        ([3, 2, 1, 1], [10, 40, 20, 30], 20),  # 10 10 10 20 | 30 40 40: index 3 of 7
        ([1, 1], [10, 20], 20),  # even total: the upper median
        ([2, 2, 1, 1], [10, 40, 20, 30], 30),  # 10 10 20 | 30 40 40: index 3 of 6
        ([4, 3, 2, 1], [100, None, 50, 70], 100),  # absent excluded: 50 50 70 | 100 x4
        ([4, 3, 2, 2], [None, 50, 100, 70], 70),  # 50 50 50 | 70 | 70 100 100
        ([40, 33, 27], [5, 0, 10], 5),  # CometBFT's TestWeightedMedian, sorted by power
    ],
)
def test_median_time_by_hand(powers: list[int], times: list[int | None], median: int) -> None:
    net = network(powers)
    assert [v.power for v in net.vset.validators] == powers
    assert median_time(_timed_commit(net.vset, times), net.vset) == median


def test_median_time_ignores_entries_without_a_validator() -> None:
    net = network([1, 1])
    commit = _timed_commit(net.vset, [10, 20])
    # a third entry, past the end of the set, has no power and no say
    extra = CommitSig(BlockIDFlag.COMMIT, ALL_KEYS[6].address.raw, 5, b"\x00" * 64)
    longer = replace(commit, signatures=(*commit.signatures, extra))
    assert median_time(commit, net.vset) == median_time(longer, net.vset) == 20


def test_a_vote_for_a_block_is_at_least_a_millisecond_after_it() -> None:
    assert min_vote_time(GENESIS_TIME) == GENESIS_TIME + 1_000_000


def test_median_time_of_no_votes_is_an_error() -> None:
    net = network([1, 1])
    with pytest.raises(ValueError):
        median_time(_timed_commit(net.vset, [None, None]), net.vset)


def reference_median(powers: list[int], times: list[int | None]) -> int:
    expanded = sorted(t for p, t in zip(powers, times, strict=True) if t is not None for _ in range(p))
    return expanded[len(expanded) // 2]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 30), st.one_of(st.none(), st.integers(-(10**6), 10**6))),
        min_size=1,
        max_size=7,
    ).filter(lambda vs: any(t is not None for _, t in vs))
)
def test_median_time_matches_the_expanded_reference(members: list[tuple[int, int | None]]) -> None:
    net = network([p for p, _ in members])
    powers = [v.power for v in net.vset.validators]
    times = [t for _, t in members]
    assert median_time(_timed_commit(net.vset, times), net.vset) == reference_median(powers, times)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 30), st.integers(0, 10**6)), min_size=1, max_size=7))
def test_a_third_of_power_cannot_move_median_time_outside_the_rest(members: list[tuple[int, int]]) -> None:
    """Validators of less than 1/3 of the power, voting any time, leave the median between the
    times of the others."""
    net = network([p for p, _ in members])
    powers = [v.power for v in net.vset.validators]
    times: list[int | None] = [t for _, t in members]
    total = sum(powers)
    # the lightest validators, while they hold < 1/3 of the power, vote the extreme times
    faulty: list[int] = []
    for i in reversed(range(len(powers))):
        if 3 * (sum(powers[j] for j in faulty) + powers[i]) < total:
            faulty.append(i)
    honest = [times[i] for i in range(len(powers)) if i not in faulty]
    assert honest
    lo, hi = min(t for t in honest if t is not None), max(t for t in honest if t is not None)
    for extreme in (-(10**9), 10**9):
        skewed = [extreme if i in faulty else t for i, t in enumerate(times)]
        assert lo <= median_time(_timed_commit(net.vset, skewed), net.vset) <= hi


# -- height vote sets ----------------------------------------------------------------------------


def test_height_vote_set_accepts_rounds_within_the_window() -> None:
    net = network([1, 1, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker(), round_window=3)
    assert hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=3)).status is AddStatus.ADDED
    with pytest.raises(VoteError, match="window"):
        hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=4))
    with pytest.raises(VoteError, match="height"):
        hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, height=HEIGHT + 1))
    hvs.set_round(2)
    assert hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=5)).status is AddStatus.ADDED
    with pytest.raises(VoteError, match="window"):
        hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=6))
    hvs.set_round(1)
    assert hvs.current_round == 2, "the round never goes back"
    assert hvs.accepts_round(5) and not hvs.accepts_round(6) and not hvs.accepts_round(-1)
    assert hvs.rounds() == [3, 5]
    assert hvs.prevotes(3).get(0) is not None and hvs.precommits(3).get(0) is None


def test_height_vote_set_accepts_50_rounds_ahead_by_default() -> None:
    net = network([1, 1, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker())
    assert hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=50)).status is AddStatus.ADDED
    with pytest.raises(VoteError, match="window"):
        hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=51))


def test_round_power_is_the_power_of_the_validators_with_any_vote_in_the_round() -> None:
    net = network([4, 2, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker())
    assert hvs.round_power(0) == 0
    hvs.add(net.vote(0, BLOCK_A, VoteType.PRECOMMIT, round_=1))
    hvs.add(net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=1))  # the same validator: once
    hvs.add(net.vote(0, BLOCK_B, VoteType.PREVOTE, round_=1))  # a conflict: once
    assert hvs.round_power(1) == 4
    hvs.add(net.vote(2, NIL_BLOCK_ID, VoteType.PREVOTE, round_=1))
    hvs.add(net.vote(1, BLOCK_A, VoteType.PREVOTE, round_=2))
    assert [hvs.round_power(r) for r in range(4)] == [0, 5, 2, 0]


def test_peek_finds_a_round_s_votes_without_creating_a_set() -> None:
    net = network([1, 1, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker())
    assert hvs.peek(1, VoteType.PREVOTE) is None
    assert hvs.rounds() == []
    vote = net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=1)
    hvs.add(vote)
    found = hvs.peek(1, VoteType.PREVOTE)
    assert found is not None and found.votes() == [vote]
    assert hvs.peek(1, VoteType.PRECOMMIT) is None


def test_a_vote_set_has_no_vote_outside_its_validators() -> None:
    net = network([1, 1, 1])
    votes = net.vote_set()
    for i in range(3):
        votes.add(net.vote(i, BLOCK_A))
    assert [votes.get(i) is not None for i in range(3)] == [True, True, True]
    assert votes.get(3) is None and votes.get(-1) is None


def test_height_vote_set_keeps_rounds_and_types_apart() -> None:
    net = network([1, 1, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker())
    prevote = net.vote(0, BLOCK_A, VoteType.PREVOTE, round_=1)
    precommit = net.vote(0, BLOCK_B, VoteType.PRECOMMIT, round_=1)
    other_round = net.vote(0, BLOCK_C, VoteType.PREVOTE, round_=2)
    for vote in (prevote, precommit, other_round):
        assert hvs.add(vote).status is AddStatus.ADDED
    assert hvs.prevotes(1).votes() == [prevote]
    assert hvs.precommits(1).votes() == [precommit]
    assert hvs.prevotes(2).votes() == [other_round]
    assert hvs.add(prevote).status is AddStatus.DUPLICATE


def test_pol_info_is_the_highest_round_with_a_block_majority() -> None:
    net = network([1, 1, 1, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker())
    assert hvs.pol_info() is None

    def prevote(round_: int, block_id: BlockID, voters: range) -> None:
        for i in voters:
            hvs.add(net.vote(i, block_id, VoteType.PREVOTE, round_=round_))

    prevote(1, BLOCK_A, range(3))
    assert hvs.pol_info() == (1, BLOCK_A)
    prevote(4, NIL_BLOCK_ID, range(4))  # a nil majority is no proof of lock
    prevote(3, BLOCK_B, range(3))
    prevote(2, BLOCK_C, range(3))
    prevote(5, BLOCK_C, range(2))  # not +2/3
    prevote(6, BLOCK_A, range(1, 3))
    prevote(6, BLOCK_B, range(3, 4))  # +2/3 of any, no majority
    for i in range(4):
        hvs.add(net.vote(i, BLOCK_C, VoteType.PRECOMMIT, round_=7))  # precommits do not count
    assert hvs.pol_info() == (3, BLOCK_B)
    prevote(5, BLOCK_C, range(2, 3))
    assert hvs.pol_info() == (5, BLOCK_C)


def test_pol_info_ignores_nil_majorities() -> None:
    net = network([1, 1, 1])
    hvs = HeightVoteSet(CHAIN, HEIGHT, net.vset, checker())
    for i in range(3):
        hvs.add(net.vote(i, NIL_BLOCK_ID, VoteType.PREVOTE, round_=2))
    assert hvs.pol_info() is None
