"""Duplicate-vote evidence and the evidence pool, with a validator set of unequal powers and real
Ed25519 signatures: the evidence's canonical form and identity, what `verify_evidence` refuses,
and the pool's rules (once only, nothing from the future, nothing expired or committed, proposals
of committed heights within a byte budget, the checks of a block's evidence, pruning and the
pending store)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from consensus.evidence import (
    KIND_DUPLICATE_VOTE,
    MAX_EVIDENCE_BYTES,
    DuplicateVoteEvidence,
    EvidenceError,
    EvidencePool,
    PendingStore,
    decode_evidence_list,
    verify_evidence,
)
from consensus.state import ChainState, ConsensusParams, genesis_state
from consensus.types import NIL_BLOCK_ID, BlockID, PartSetHeader, Vote, VoteType
from consensus.validators import ValidatorSet
from consensus.votes import SignatureCheck
from primitives.batch_verify import BatchVerifier
from primitives.codec import DecodeError, encode
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.consensus.harness import GENESIS_TIME, SECOND, keys

CHAIN = "evidence-chain"
HEIGHT = 5
BLOCK_A = BlockID(b"\xaa" * 32, PartSetHeader(1, b"\x0a" * 32))
BLOCK_B = BlockID(b"\xbb" * 32, PartSetHeader(2, b"\x0b" * 32))
BLOCK_C = BlockID(b"\xcc" * 32, PartSetHeader(1, b"\x0c" * 32))
ALL_KEYS = keys(5)
OUTSIDER = ALL_KEYS[4]
POWERS = [10, 40, 20, 30]  # of ALL_KEYS[0..3]; the set orders them 40, 30, 20, 10
MAX_AGE_BLOCKS = 10
MAX_AGE_TIME = 100 * SECOND
PARAMS = ConsensusParams(evidence_max_age_num_blocks=MAX_AGE_BLOCKS, evidence_max_age_duration=MAX_AGE_TIME)
VERIFIER = BatchVerifier(workers=1)
CHECK: SignatureCheck = VERIFIER.verify_batch

VSET = ValidatorSet.genesis([(k.public_key.raw, p) for k, p in zip(ALL_KEYS[:4], POWERS, strict=True)])
BY_ADDRESS = {k.address.raw: k for k in ALL_KEYS}
WITHOUT_LOWEST = ValidatorSet.genesis(
    [(k.public_key.raw, p) for k, p in zip(ALL_KEYS[1:4], POWERS[1:], strict=True)]
)  # the set's validator 3 (power 10) left
SET_KEYS = [BY_ADDRESS[v.address] for v in VSET.validators]  # the set's order: index i is SET_KEYS[i]


def flip(data: bytes, at: int = 0) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def signed_vote(
    key: PrivateKey,
    index: int,
    block_id: BlockID,
    height: int = HEIGHT,
    round_: int = 0,
    vote_type: VoteType = VoteType.PRECOMMIT,
    ts: int = GENESIS_TIME,
) -> Vote:
    unsigned = Vote(vote_type, height, round_, block_id, ts, key.address.raw, index)
    return unsigned.with_signature(key.sign(unsigned.sign_bytes(CHAIN)))


def vote(index: int, block_id: BlockID, **kwargs: int) -> Vote:
    """A precommit (unless told otherwise) of the set's validator `index`."""
    height = kwargs.get("height", HEIGHT)
    round_ = kwargs.get("round_", 0)
    vote_type = VoteType(kwargs.get("vote_type", VoteType.PRECOMMIT))
    ts = kwargs.get("ts", GENESIS_TIME + index)
    return signed_vote(SET_KEYS[index], index, block_id, height, round_, vote_type, ts)


def time_at(height: int) -> int:
    """The header time of the committed block at `height` (unless a test gives other times)."""
    return GENESIS_TIME + height * SECOND


def evidence(
    index: int = 2, height: int = HEIGHT, timestamp: int | None = None, other: BlockID = BLOCK_B
) -> DuplicateVoteEvidence:
    """Validator `index` precommitted BLOCK_A and `other` at `height` (given in reverse order),
    stamped with the time of the block at `height` unless told otherwise."""
    first = vote(index, other, height=height)
    second = vote(index, BLOCK_A, height=height)
    stamp = time_at(height) if timestamp is None else timestamp
    return DuplicateVoteEvidence.from_conflict(first, second, VSET, stamp)


def state_at(last_height: int, last_time: int | None = None) -> ChainState:
    """The chain state after block `last_height` at `last_time` (by default `time_at`), VSET at
    every height."""
    if last_time is None:
        last_time = time_at(last_height)
    genesis = genesis_state(CHAIN, 1, GENESIS_TIME, [], PARAMS, sha256(b"app"))
    return replace(
        genesis,
        last_block_height=last_height,
        last_block_id=BLOCK_C,
        last_block_time=last_time,
        validators=VSET,
        next_validators=VSET,
        last_validators=VSET,
    )


@dataclass
class FakeStore:
    """A PendingStore in a dict that records the calls it gets."""

    items: dict[bytes, bytes] = field(default_factory=dict)
    saved: list[bytes] = field(default_factory=list)
    deleted: list[bytes] = field(default_factory=list)

    def save_pending(self, key: bytes, raw: bytes) -> None:
        self.saved.append(key)
        self.items[key] = raw

    def delete_pending(self, keys: Sequence[bytes]) -> None:
        self.deleted.extend(keys)
        for key in keys:
            self.items.pop(key, None)

    def load_pending(self) -> list[bytes]:
        return list(self.items.values())


@dataclass
class Committed:
    """The is_committed callback: the keys of evidence in stored blocks."""

    keys: set[bytes] = field(default_factory=set)

    def __call__(self, key: bytes) -> bool:
        return key in self.keys


def make_pool(
    committed: Committed | None = None,
    store: PendingStore | None = None,
    known: dict[int, ValidatorSet] | None = None,
    times: dict[int, int] | None = None,
) -> EvidencePool:
    """A pool that knows the sets `known` (VSET at every height by default) and the block times
    `times` (`time_at` of every height by default)."""
    sets = known if known is not None else {h: VSET for h in range(1, 100)}
    block_times = times if times is not None else {h: time_at(h) for h in range(1, 100)}
    return EvidencePool(CHAIN, CHECK, sets.get, committed or Committed(), store, block_times.get)


# -- the evidence ----------------------------------------------------------------------------------


def test_the_set_orders_validators_by_power() -> None:
    assert [v.power for v in VSET.validators] == [40, 30, 20, 10]
    assert VSET.total_power == 100
    assert [k.address.raw for k in SET_KEYS] == [v.address for v in VSET.validators]


@pytest.mark.parametrize("index", [0, 1, 2, 3])
def test_from_conflict_orders_the_votes_and_carries_the_powers(index: int) -> None:
    for_a, for_b = vote(index, BLOCK_A), vote(index, BLOCK_B)
    assert encode(BLOCK_A.to_fields()) < encode(BLOCK_B.to_fields())
    for first, second in ((for_a, for_b), (for_b, for_a)):
        ev = DuplicateVoteEvidence.from_conflict(first, second, VSET, GENESIS_TIME + 7)
        assert (ev.vote_a, ev.vote_b) == (for_a, for_b)
        assert ev.validator_power == VSET.validators[index].power
        assert ev.total_voting_power == 100
        assert ev.timestamp == GENESIS_TIME + 7
        assert ev.height == HEIGHT
        assert ev.validator_address == SET_KEYS[index].address.raw
        verify_evidence(CHAIN, ev, VSET, CHECK)


def test_from_conflict_orders_a_nil_vote_first() -> None:
    nil_vote, block_vote = vote(1, NIL_BLOCK_ID), vote(1, BLOCK_A)
    ev = DuplicateVoteEvidence.from_conflict(block_vote, nil_vote, VSET, GENESIS_TIME)
    assert (ev.vote_a, ev.vote_b) == (nil_vote, block_vote)
    verify_evidence(CHAIN, ev, VSET, CHECK)


def test_misbehavior_carries_what_the_application_records() -> None:
    ev = evidence(index=3, timestamp=GENESIS_TIME + 9)
    item = ev.misbehavior()
    assert item.kind == KIND_DUPLICATE_VOTE
    assert item.validator_address == SET_KEYS[3].address.raw
    assert (item.validator_power, item.total_voting_power) == (10, 100)
    assert (item.height, item.time) == (HEIGHT, GENESIS_TIME + 9)


def test_encoding_round_trips_and_the_hash_is_stable() -> None:
    ev = evidence()
    raw = ev.encode()
    back = DuplicateVoteEvidence.decode(raw)
    assert back == ev
    assert back.encode() == raw
    assert back.hash() == ev.hash() == ev.key
    assert ev.key == sha256(encode([ev.vote_a.to_fields(), ev.vote_b.to_fields()]))
    assert evidence().hash() == ev.hash(), "the same evidence built again has the same identity"
    assert DuplicateVoteEvidence.from_fields(ev.to_fields()) == ev
    assert len(ev.hash()) == 32


def test_the_identity_is_the_two_votes() -> None:
    """One double sign is one piece of evidence however it is stamped; other votes are other
    evidence."""
    ev = evidence()
    same = [
        replace(ev, timestamp=ev.timestamp + 1),
        replace(ev, validator_power=ev.validator_power + 1),
        replace(ev, total_voting_power=ev.total_voting_power + 1),
    ]
    assert {v.hash() for v in same} == {ev.hash()}
    assert all(v.encode() != ev.encode() for v in same)
    others = [replace(ev, vote_b=vote(2, BLOCK_C)), evidence(index=1), evidence(height=HEIGHT + 1)]
    assert len({ev.hash(), *(v.hash() for v in others)}) == len(others) + 1


def test_decoding_refuses_malformed_bytes() -> None:
    raw = evidence().encode()
    for bad in (raw[:-1], raw + b"\x00", b"", encode([1, 2, 3])):
        with pytest.raises(DecodeError):
            DuplicateVoteEvidence.decode(bad)
    with pytest.raises(DecodeError):
        DuplicateVoteEvidence.decode(encode([b"x" * MAX_EVIDENCE_BYTES]))
    with pytest.raises(EvidenceError, match="undecodable"):
        decode_evidence_list([raw, raw[:-3]])
    assert decode_evidence_list([raw, raw]) == [evidence(), evidence()]


# -- verify_evidence -------------------------------------------------------------------------------


def pair(a: Vote, b: Vote, power: int = 20, total: int = 100) -> DuplicateVoteEvidence:
    """Evidence of exactly these votes, in this order."""
    return DuplicateVoteEvidence(a, b, total, power, GENESIS_TIME)


def test_valid_evidence_verifies_for_every_validator() -> None:
    for index in range(4):
        verify_evidence(CHAIN, evidence(index), VSET, CHECK)


def test_refuses_votes_for_the_same_block() -> None:
    a = vote(2, BLOCK_A, ts=GENESIS_TIME)
    b = vote(2, BLOCK_A, ts=GENESIS_TIME + 1)  # signed twice, but for the same block: no equivocation
    assert a != b
    with pytest.raises(EvidenceError, match="same block"):
        verify_evidence(CHAIN, pair(a, b), VSET, CHECK)


@pytest.mark.parametrize(
    "changes",
    [
        {"height": HEIGHT + 1},
        {"round_": 1},
        {"vote_type": int(VoteType.PREVOTE)},
    ],
    ids=["height", "round", "type"],
)
def test_refuses_votes_of_different_heights_rounds_or_types(changes: dict[str, int]) -> None:
    a = vote(2, BLOCK_A)
    b = vote(2, BLOCK_B, **changes)
    with pytest.raises(EvidenceError, match="different heights, rounds or types"):
        verify_evidence(CHAIN, pair(a, b), VSET, CHECK)


def test_refuses_votes_of_different_validators() -> None:
    a, b = vote(2, BLOCK_A), vote(3, BLOCK_B)
    with pytest.raises(EvidenceError, match="different validators"):
        verify_evidence(CHAIN, pair(a, b), VSET, CHECK)


def test_refuses_votes_of_one_validator_under_two_indexes() -> None:
    key = SET_KEYS[2]
    a = signed_vote(key, 2, BLOCK_A)
    b = signed_vote(key, 3, BLOCK_B)
    with pytest.raises(EvidenceError, match="different validators"):
        verify_evidence(CHAIN, pair(a, b), VSET, CHECK)


def test_refuses_votes_out_of_canonical_order() -> None:
    good = evidence()
    swapped = replace(good, vote_a=good.vote_b, vote_b=good.vote_a)
    with pytest.raises(EvidenceError, match="canonical order"):
        verify_evidence(CHAIN, swapped, VSET, CHECK)


def test_refuses_a_validator_not_in_the_set() -> None:
    a = signed_vote(OUTSIDER, 2, BLOCK_A)
    b = signed_vote(OUTSIDER, 2, BLOCK_B)
    with pytest.raises(EvidenceError, match="was not validator 2"):
        verify_evidence(CHAIN, pair(a, b), VSET, CHECK)


@pytest.mark.parametrize("claimed", [0, 1, 3, 4])
def test_refuses_a_validator_at_another_index(claimed: int) -> None:
    key = SET_KEYS[2]
    a = signed_vote(key, claimed, BLOCK_A)
    b = signed_vote(key, claimed, BLOCK_B)
    with pytest.raises(EvidenceError, match=f"was not validator {claimed}"):
        verify_evidence(CHAIN, pair(a, b), VSET, CHECK)


def test_refuses_a_validator_of_another_set() -> None:
    """The set of the evidence's height decides: the same votes do not verify against a set
    without the validator."""
    ev = evidence(index=3)
    without = WITHOUT_LOWEST
    verify_evidence(CHAIN, ev, VSET, CHECK)
    with pytest.raises(EvidenceError, match="was not validator 3"):
        verify_evidence(CHAIN, ev, without, CHECK)


@pytest.mark.parametrize(
    ("power", "total"),
    [(10, 100), (30, 100), (0, 100), (20, 99), (20, 120)],
)
def test_refuses_wrong_powers(power: int, total: int) -> None:
    ev = replace(evidence(index=2), validator_power=power, total_voting_power=total)
    with pytest.raises(EvidenceError, match="voting powers"):
        verify_evidence(CHAIN, ev, VSET, CHECK)


@pytest.mark.parametrize("which", ["vote_a", "vote_b"])
def test_refuses_a_bad_signature(which: str) -> None:
    ev = evidence()
    bad_vote = getattr(ev, which)
    forged = replace(ev, **{which: bad_vote.with_signature(flip(bad_vote.signature, 5))})
    with pytest.raises(EvidenceError, match="signature is invalid"):
        verify_evidence(CHAIN, forged, VSET, CHECK)


def test_refuses_votes_signed_for_another_chain() -> None:
    key = SET_KEYS[2]
    votes = []
    for block_id in (BLOCK_A, BLOCK_B):
        unsigned = Vote(VoteType.PRECOMMIT, HEIGHT, 0, block_id, GENESIS_TIME, key.address.raw, 2)
        votes.append(unsigned.with_signature(key.sign(unsigned.sign_bytes("other-chain"))))
    with pytest.raises(EvidenceError, match="signature is invalid"):
        verify_evidence(CHAIN, pair(votes[0], votes[1]), VSET, CHECK)


def test_refuses_a_vote_signed_by_another_validator() -> None:
    unsigned = Vote(VoteType.PRECOMMIT, HEIGHT, 0, BLOCK_B, GENESIS_TIME, SET_KEYS[2].address.raw, 2)
    by_other = unsigned.with_signature(SET_KEYS[1].sign(unsigned.sign_bytes(CHAIN)))
    with pytest.raises(EvidenceError, match="signature is invalid"):
        verify_evidence(CHAIN, pair(vote(2, BLOCK_A), by_other), VSET, CHECK)


# -- EvidencePool.add ------------------------------------------------------------------------------


def test_add_accepts_valid_evidence_once_and_saves_it() -> None:
    store = FakeStore()
    pool = make_pool(store=store)
    ev = evidence()
    state = state_at(10)
    assert pool.add(state, ev) is True
    assert pool.add(state, ev) is False
    assert pool.add(state, DuplicateVoteEvidence.decode(ev.encode())) is False
    assert pool.pending() == [ev]
    assert len(pool) == 1
    assert store.saved == [ev.hash()]
    assert store.items == {ev.hash(): ev.encode()}


def test_add_refuses_invalid_evidence() -> None:
    store = FakeStore()
    pool = make_pool(store=store)
    ev = evidence()
    forged = replace(ev, vote_b=ev.vote_b.with_signature(flip(ev.vote_b.signature)))
    with pytest.raises(EvidenceError, match="signature"):
        pool.add(state_at(10), forged)
    assert len(pool) == 0
    assert store.saved == []


def test_add_verifies_against_the_set_of_the_evidence_height() -> None:
    """Height 5's set lacks the offender although the current sets have it."""
    without = WITHOUT_LOWEST
    pool = make_pool(known={HEIGHT: without})
    with pytest.raises(EvidenceError, match="was not validator"):
        pool.add(state_at(10), evidence(index=3))
    unknown = make_pool(known={})
    with pytest.raises(EvidenceError, match="unknown"):
        unknown.add(state_at(10), evidence())


def test_add_uses_the_state_sets_for_the_last_and_current_heights() -> None:
    pool = make_pool(known={})  # no stored sets: only the state's own
    state = state_at(HEIGHT)
    assert pool.add(state, evidence(height=HEIGHT)) is True  # last_validators
    assert pool.add(state, evidence(height=HEIGHT + 1)) is True  # validators (height in progress)


def test_add_refuses_evidence_from_the_future() -> None:
    pool = make_pool()
    state = state_at(HEIGHT - 1)
    assert state.height == HEIGHT
    with pytest.raises(EvidenceError, match="future"):
        pool.add(state, evidence(height=HEIGHT + 1))
    with pytest.raises(EvidenceError, match="future"):
        pool.add(state_at(2), evidence(height=HEIGHT))
    assert len(pool) == 0
    assert pool.add(state, evidence(height=HEIGHT)) is True


def test_add_refuses_evidence_below_the_initial_height() -> None:
    pool = make_pool()
    state = replace(state_at(20), initial_height=HEIGHT + 1)
    with pytest.raises(EvidenceError):
        pool.add(state, evidence(height=HEIGHT))


# Evidence of height 5 at GENESIS_TIME; the state is after block 30 (31 - 5 = 26 > 10 blocks).
OLD_STATE_TIME = GENESIS_TIME + 10 * MAX_AGE_TIME


@pytest.mark.parametrize(
    ("ev_height", "ev_time", "expired"),
    [
        (HEIGHT, GENESIS_TIME, True),  # too many blocks and too long ago
        (HEIGHT, OLD_STATE_TIME - MAX_AGE_TIME // 2, False),  # too many blocks, recent enough
        (30 - MAX_AGE_BLOCKS // 2, GENESIS_TIME, False),  # long ago, few enough blocks
        (30, OLD_STATE_TIME, False),
    ],
    ids=["both", "blocks-only", "time-only", "fresh"],
)
def test_add_refuses_evidence_expired_by_both_age_limits(ev_height: int, ev_time: int, expired: bool) -> None:
    pool = make_pool(times={ev_height: ev_time})
    state = state_at(30, OLD_STATE_TIME)
    ev = evidence(height=ev_height, timestamp=ev_time)
    if expired:
        with pytest.raises(EvidenceError, match="expired"):
            pool.add(state, ev)
        assert len(pool) == 0
    else:
        assert pool.add(state, ev) is True


def test_add_refuses_committed_evidence() -> None:
    ev = evidence()
    committed = Committed({ev.hash()})
    store = FakeStore()
    pool = make_pool(committed, store)
    assert pool.add(state_at(10), ev) is False
    assert len(pool) == 0
    assert store.saved == []
    other = evidence(index=1)
    assert pool.add(state_at(10), other) is True


def test_add_refuses_evidence_after_mark_committed() -> None:
    pool = make_pool()
    ev, other = evidence(), evidence(index=1)
    assert pool.add(state_at(10), ev) is True
    pool.mark_committed(state_at(11), [ev.encode()])
    assert pool.add(state_at(11), ev) is False
    assert pool.pending() == []
    # committed without ever being pending here (a block proposed by someone else)
    pool.mark_committed(state_at(12), [other.encode()])
    assert pool.add(state_at(12), other) is False
    assert pool.pending() == []


def test_add_refuses_the_same_equivocation_restamped_after_it_was_committed() -> None:
    """The timestamp is not part of the identity: one double sign cannot be committed twice
    under two timestamps."""
    pool = make_pool()
    first = evidence()
    restamped = evidence(timestamp=time_at(HEIGHT) + SECOND)
    assert (first.vote_a, first.vote_b) == (restamped.vote_a, restamped.vote_b)
    assert pool.add(state_at(10), first) is True
    pool.mark_committed(state_at(11), [first.encode()])
    assert pool.add(state_at(11), restamped) is False
    assert pool.pending() == []


def test_add_stamps_evidence_with_the_time_of_its_block() -> None:
    """Whatever time a node put on evidence of a committed height, the pool keeps it with the
    header time of the block at that height, so every node proposes the same bytes."""
    pool = make_pool()
    ev = evidence(timestamp=GENESIS_TIME + 12345)
    assert pool.add(state_at(10), ev) is True
    assert pool.pending() == [replace(ev, timestamp=time_at(HEIGHT))]
    unknown_time = make_pool(times={})
    with pytest.raises(EvidenceError, match="time of block 5 is unknown"):
        unknown_time.add(state_at(10), ev)


def test_evidence_of_the_height_in_progress_is_stamped_when_its_block_commits() -> None:
    store = FakeStore()
    pool = make_pool(store=store)
    ev = evidence(height=HEIGHT, timestamp=GENESIS_TIME)  # seen during height 5: no block time yet
    assert pool.add(state_at(HEIGHT - 1), ev) is True
    assert pool.for_proposal(state_at(HEIGHT - 1), 1 << 20) == [], "not includable in its own height"
    pool.mark_committed(state_at(HEIGHT), [])
    stamped = replace(ev, timestamp=time_at(HEIGHT))
    assert pool.pending() == [stamped]
    assert store.items == {ev.key: stamped.encode()}
    assert pool.for_proposal(state_at(HEIGHT), 1 << 20) == [stamped.encode()]


def test_check_block_refuses_evidence_not_stamped_with_its_block_time() -> None:
    pool = make_pool()
    ev = evidence(timestamp=time_at(HEIGHT) - 1)
    with pytest.raises(EvidenceError, match="timestamp is not the time of block 5"):
        pool.check_block(state_at(10), [ev.encode()], time_at(11))
    assert pool.check_block(state_at(10), [evidence().encode()], time_at(11)) == [evidence()]


# -- for_proposal ----------------------------------------------------------------------------------


def test_for_proposal_returns_only_evidence_of_committed_heights() -> None:
    pool = make_pool()
    state = state_at(HEIGHT)
    old, current = evidence(height=HEIGHT), evidence(height=HEIGHT + 1)
    assert pool.add(state, current) is True
    assert pool.add(state, old) is True
    assert pool.for_proposal(state, 1 << 20) == [old.encode()]
    later = state_at(HEIGHT + 1)
    assert pool.for_proposal(later, 1 << 20) == [current.encode(), old.encode()]


def test_for_proposal_respects_max_bytes() -> None:
    pool = make_pool()
    items = [evidence(index=i) for i in range(3)]
    for item in items:
        assert pool.add(state_at(10), item) is True
    raws = [item.encode() for item in items]
    size = sum(map(len, raws))
    state = state_at(10)
    assert pool.for_proposal(state, size) == raws
    assert pool.for_proposal(state, size - 1) == raws[:2]
    assert pool.for_proposal(state, len(raws[0])) == raws[:1]
    assert pool.for_proposal(state, len(raws[0]) - 1) == []
    assert pool.for_proposal(state, 0) == []
    for budget in range(0, size + 2, 97):
        assert sum(map(len, pool.for_proposal(state, budget))) <= budget


def test_for_proposal_skips_evidence_committed_without_mark_committed() -> None:
    """Evidence that reached a stored block without mark_committed (a path that forgets to tell
    the pool) is not offered again: otherwise the node's own process_proposal (check_block:
    "committed before") would refuse every block it proposes until the evidence expires."""
    committed = Committed()
    pool = make_pool(committed)
    ev = evidence()
    assert pool.add(state_at(10), ev) is True
    committed.keys.add(ev.hash())  # block 11 with `ev` was stored by blocksync
    state = state_at(11)
    with pytest.raises(EvidenceError, match="committed before"):
        pool.check_block(state, [ev.encode()], state.last_block_time + SECOND)
    assert pool.for_proposal(state, 1 << 20) == []


# -- check_block -----------------------------------------------------------------------------------


def test_check_block_accepts_valid_pending_and_not_pending_evidence() -> None:
    pool = make_pool()
    pending, fresh = evidence(index=0), evidence(index=3, height=HEIGHT + 2)
    assert pool.add(state_at(10), pending) is True
    state = state_at(10)
    block_time = state.last_block_time + SECOND
    raws = [pending.encode(), fresh.encode()]
    assert pool.check_block(state, raws, block_time) == [pending, fresh]
    assert pool.check_block(state, [], block_time) == []
    assert pool.pending() == [pending], "checking a block changes nothing"


def test_check_block_refuses_the_same_evidence_twice() -> None:
    pool = make_pool()
    ev = evidence()
    state = state_at(10)
    with pytest.raises(EvidenceError, match="twice"):
        pool.check_block(state, [ev.encode(), evidence(index=1).encode(), ev.encode()], GENESIS_TIME)
    assert pool.add(state, ev) is True
    with pytest.raises(EvidenceError, match="twice"):
        pool.check_block(state, [ev.encode(), ev.encode()], GENESIS_TIME)


def test_check_block_refuses_one_equivocation_twice_under_two_timestamps() -> None:
    """One double sign cannot be two evidence items of one block."""
    pool = make_pool()
    a, b = evidence(timestamp=GENESIS_TIME), evidence(timestamp=GENESIS_TIME + 1)
    with pytest.raises(EvidenceError):
        pool.check_block(state_at(10), [a.encode(), b.encode()], GENESIS_TIME + SECOND)


def test_check_block_refuses_committed_evidence() -> None:
    first, second = evidence(index=0), evidence(index=1)
    committed = Committed({first.hash()})
    pool = make_pool(committed)
    state = state_at(10)
    with pytest.raises(EvidenceError, match="committed before"):
        pool.check_block(state, [first.encode()], GENESIS_TIME)
    assert pool.add(state, second) is True
    pool.mark_committed(state_at(11), [second.encode()])
    with pytest.raises(EvidenceError, match="committed before"):
        pool.check_block(state_at(11), [second.encode()], GENESIS_TIME)


def test_check_block_refuses_invalid_evidence() -> None:
    pool = make_pool()
    state = state_at(10)
    ev = evidence()
    forged = replace(ev, vote_a=ev.vote_a.with_signature(flip(ev.vote_a.signature, 9)))
    wrong_power = replace(ev, validator_power=ev.validator_power + 1)
    for bad, reason in ((forged, "signature"), (wrong_power, "voting powers")):
        with pytest.raises(EvidenceError, match=reason):
            pool.check_block(state, [evidence(index=0).encode(), bad.encode()], GENESIS_TIME)
    with pytest.raises(EvidenceError, match="undecodable"):
        pool.check_block(state, [b"\x93\x01"], GENESIS_TIME)


def test_check_block_refuses_evidence_of_the_height_in_progress() -> None:
    """Evidence of the block's own height may be pending, but is not includable yet."""
    pool = make_pool()
    state = state_at(HEIGHT - 1)
    ev = evidence(height=HEIGHT)
    assert pool.add(state, ev) is True
    with pytest.raises(EvidenceError, match="future"):
        pool.check_block(state, [ev.encode()], GENESIS_TIME)
    with pytest.raises(EvidenceError, match="future"):
        pool.check_block(state, [evidence(height=HEIGHT + 1).encode()], GENESIS_TIME)


def test_check_block_refuses_expired_evidence_by_the_block_time() -> None:
    pool = make_pool(times={HEIGHT: OLD_STATE_TIME - MAX_AGE_TIME})
    state = state_at(30, OLD_STATE_TIME)
    ev = evidence(height=HEIGHT, timestamp=OLD_STATE_TIME - MAX_AGE_TIME)
    assert pool.check_block(state, [ev.encode()], OLD_STATE_TIME) == [ev]
    with pytest.raises(EvidenceError, match="expired"):
        pool.check_block(state, [ev.encode()], OLD_STATE_TIME + 1)


def test_check_block_refuses_expired_evidence_even_if_pending() -> None:
    """Pending evidence is verified in full like any other, expiry included: expiry depends on
    the block's time, later than what pruning used, and a node holding the evidence must refuse
    the block that a node without it refuses (no validity split)."""
    state = state_at(30, OLD_STATE_TIME)
    ev = evidence(height=HEIGHT, timestamp=OLD_STATE_TIME - MAX_AGE_TIME)
    times = {HEIGHT: OLD_STATE_TIME - MAX_AGE_TIME}
    holder, other = make_pool(times=times), make_pool(times=times)
    assert holder.add(state, ev) is True
    holder.mark_committed(state, [])  # pruning at the last block time keeps it
    assert holder.pending() == [ev]
    block_time = OLD_STATE_TIME + 1
    with pytest.raises(EvidenceError, match="expired"):
        other.check_block(state, [ev.encode()], block_time)
    with pytest.raises(EvidenceError, match="expired"):
        holder.check_block(state, [ev.encode()], block_time)


# -- mark_committed and the pending store ----------------------------------------------------------


def test_mark_committed_removes_from_pending_and_the_store() -> None:
    store = FakeStore()
    pool = make_pool(store=store)
    a, b, c = evidence(index=0), evidence(index=1), evidence(index=2)
    for item in (a, b, c):
        assert pool.add(state_at(10), item) is True
    pool.mark_committed(state_at(11), [b.encode(), evidence(index=3).encode()])
    assert pool.pending() == [a, c]
    assert store.deleted == [b.hash()]
    assert set(store.items) == {a.hash(), c.hash()}
    pool.mark_committed(state_at(12), [])
    assert store.deleted == [b.hash()], "nothing to delete: no call"


def test_mark_committed_prunes_expired_evidence() -> None:
    store = FakeStore()
    times = {HEIGHT: GENESIS_TIME, HEIGHT + 1: OLD_STATE_TIME - SECOND, 25: GENESIS_TIME + SECOND}
    pool = make_pool(store=store, times=times)
    old = evidence(index=0, height=HEIGHT, timestamp=times[HEIGHT])
    old_but_recent_time = evidence(index=1, height=HEIGHT + 1, timestamp=times[HEIGHT + 1])
    recent_height = evidence(index=2, height=25, timestamp=times[25])
    for item in (old, old_but_recent_time, recent_height):
        assert pool.add(state_at(25, times[25]), item) is True
    pool.mark_committed(state_at(30, OLD_STATE_TIME), [])
    assert pool.pending() == [old_but_recent_time, recent_height]
    assert store.deleted == [old.hash()]
    assert set(store.items) == {old_but_recent_time.hash(), recent_height.hash()}
    with pytest.raises(EvidenceError, match="expired"):
        pool.add(state_at(30, OLD_STATE_TIME), old)


def test_a_new_pool_restores_pending_evidence_from_the_store() -> None:
    store = FakeStore()
    pool = make_pool(store=store)
    a, b, c = evidence(index=0), evidence(index=1), evidence(index=2)
    for item in (a, b, c):
        assert pool.add(state_at(10), item) is True
    pool.mark_committed(state_at(11), [b.encode()])
    restored = make_pool(store=store)
    assert restored.pending() == [a, c]
    assert restored.add(state_at(11), a) is False, "already pending"
    assert restored.for_proposal(state_at(11), 1 << 20) == [a.encode(), c.encode()]
    assert store.saved == [a.hash(), b.hash(), c.hash()], "restoring saves nothing again"


def test_a_new_pool_refuses_an_undecodable_store() -> None:
    store = FakeStore({b"k" * 32: b"\xc1"})
    with pytest.raises(EvidenceError, match="undecodable"):
        make_pool(store=store)


def test_a_restored_pool_drops_evidence_committed_before_the_restart() -> None:
    """The block's batch (with the committed-evidence key) is written before mark_committed
    deletes the pending copy in its own write; after a crash between the two, the restored pool
    must not offer the committed evidence (its proposals would all be refused)."""
    store = FakeStore()
    ev, other = evidence(index=0), evidence(index=1)
    pool = make_pool(store=store)
    assert pool.add(state_at(10), ev) is True
    assert pool.add(state_at(10), other) is True
    restored = make_pool(Committed({ev.hash()}), store)  # block 11 with `ev` is on disk
    assert restored.for_proposal(state_at(11), 1 << 20) == [other.encode()]
    assert restored.pending() == [other]
