"""Block, header, vote, proposal, commit and part types: canonical round trips, strict decoding
that names the offending field, sign bytes that separate kinds, chains and values, and part sets
that reassemble a block from parts in any order and refuse parts that do not prove into them."""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from consensus.app import Event, EventAttribute, ExecTxResult, FinalizeBlockResult, ValidatorUpdate
from consensus.execution import BlockResults
from consensus.messages import BlockTxs, BlockTxsRequest, CompactBlock, decode_message, encode_message
from consensus.types import (
    BLOCK_PART_SIZE,
    MAX_CHAIN_ID_LEN,
    MAX_PARTS,
    NIL_BLOCK_ID,
    Block,
    BlockID,
    BlockIDFlag,
    Commit,
    CommitSig,
    Header,
    Part,
    PartSet,
    PartSetHeader,
    Proposal,
    Vote,
    VoteType,
)
from primitives.codec import DecodeError, Value, decode, encode
from primitives.hashing import MerkleProof

FAST = settings(max_examples=60, deadline=None)

# -- strategies ----------------------------------------------------------------------------------

INT64 = st.integers(-(2**63), 2**63 - 1)
HEIGHTS = st.integers(1, 2**63 - 1)
ROUNDS = st.integers(0, 2**31 - 1)
HASHES = st.binary(min_size=32, max_size=32)
ADDRESSES = st.binary(min_size=20, max_size=20)
SIGNATURES = st.binary(min_size=64, max_size=64)
CHAIN_IDS = st.text(st.characters(codec="utf-8"), max_size=MAX_CHAIN_ID_LEN).filter(
    lambda s: len(s.encode()) <= MAX_CHAIN_ID_LEN
)

PART_SET_HEADERS = st.builds(PartSetHeader, st.integers(0, MAX_PARTS), st.one_of(st.just(b""), HASHES))
BLOCK_IDS_FOR_A_BLOCK = st.builds(
    BlockID, HASHES, st.builds(PartSetHeader, st.integers(1, MAX_PARTS), HASHES)
)
BLOCK_IDS = st.one_of(st.just(NIL_BLOCK_ID), BLOCK_IDS_FOR_A_BLOCK)

VOTES = st.builds(
    Vote,
    st.sampled_from(VoteType),
    HEIGHTS,
    ROUNDS,
    BLOCK_IDS,
    INT64,
    ADDRESSES,
    st.integers(0, 9_999),
    SIGNATURES,
)


@st.composite
def proposals(draw: st.DrawFn) -> Proposal:
    round_ = draw(ROUNDS)
    return Proposal(
        height=draw(HEIGHTS),
        round=round_,
        pol_round=draw(st.integers(-1, round_ - 1)),
        block_id=draw(BLOCK_IDS_FOR_A_BLOCK),
        timestamp=draw(INT64),
        signature=draw(SIGNATURES),
    )


COMMIT_SIGS = st.one_of(
    st.just(CommitSig.absent()),
    st.builds(
        CommitSig, st.sampled_from([BlockIDFlag.COMMIT, BlockIDFlag.NIL]), ADDRESSES, INT64, SIGNATURES
    ),
)
COMMITS = st.builds(
    Commit,
    st.integers(0, 2**63 - 1),
    ROUNDS,
    BLOCK_IDS,
    st.lists(COMMIT_SIGS, max_size=5).map(tuple),
)
HEADERS = st.builds(
    Header,
    chain_id=CHAIN_IDS,
    height=HEIGHTS,
    time=INT64,
    last_block_id=BLOCK_IDS,
    last_commit_hash=st.one_of(st.just(b""), HASHES),
    data_hash=HASHES,
    validators_hash=HASHES,
    next_validators_hash=HASHES,
    consensus_hash=HASHES,
    app_hash=st.binary(max_size=64),
    last_results_hash=HASHES,
    evidence_hash=HASHES,
    proposer_address=ADDRESSES,
    version_block=st.integers(0, 2**63 - 1),
    version_app=st.integers(0, 2**63 - 1),
)
BLOCKS = st.builds(
    Block,
    HEADERS,
    st.lists(st.binary(max_size=40), max_size=5).map(tuple),
    st.lists(st.binary(max_size=40), max_size=3).map(tuple),
    COMMITS,
)

# -- samples for the decoding tests ----------------------------------------------------------------

BLOCK_A = BlockID(b"\xaa" * 32, PartSetHeader(2, b"\x0a" * 32))
BLOCK_B = BlockID(b"\xbb" * 32, PartSetHeader(2, b"\x0b" * 32))
SIG = b"\x5a" * 64
ADDR = b"\x11" * 20

SAMPLE_VOTE = Vote(VoteType.PRECOMMIT, 7, 2, BLOCK_A, 1_700_000_000_000_000_000, ADDR, 3, SIG)
SAMPLE_PROPOSAL = Proposal(7, 2, 1, BLOCK_A, 1_700_000_000_000_000_000, SIG)
SAMPLE_COMMIT = Commit(
    6,
    0,
    BLOCK_A,
    (
        CommitSig(BlockIDFlag.COMMIT, ADDR, 5, SIG),
        CommitSig.absent(),
        CommitSig(BlockIDFlag.NIL, b"\x22" * 20, 6, SIG),
    ),
)
SAMPLE_HEADER = Header(
    chain_id="test-chain",
    height=7,
    time=1_700_000_000_000_000_000,
    last_block_id=BLOCK_B,
    last_commit_hash=b"\x01" * 32,
    data_hash=b"\x02" * 32,
    validators_hash=b"\x03" * 32,
    next_validators_hash=b"\x04" * 32,
    consensus_hash=b"\x05" * 32,
    app_hash=b"\x06" * 32,
    last_results_hash=b"\x07" * 32,
    evidence_hash=b"\x08" * 32,
    proposer_address=ADDR,
)
SAMPLE_BLOCK = Block(SAMPLE_HEADER, (b"tx1", b"tx2"), (), SAMPLE_COMMIT)
SAMPLE_PART = PartSet.from_data(bytes(range(256)) * 3, part_size=100).parts()[1]


def _wire(fields: Value) -> Value:
    """Through the canonical bytes and back, as a peer would receive it."""
    return decode(encode(fields))


def _set(fields: Value, path: tuple[int, ...], new: Any) -> Value:
    """A deep copy of `fields` with the item at `path` replaced by `new` (any Python value, to
    test decoders against inputs a type checker would refuse)."""
    out = copy.deepcopy(fields)
    target: Any = out
    for i in path[:-1]:
        target = target[i]
    target[path[-1]] = new
    return out


def _resize(fields: Value, path: tuple[int, ...], extra: bool) -> Value:
    """A deep copy with one item appended to (or the last removed from) the array at `path`."""
    out = copy.deepcopy(fields)
    target: Any = out
    for i in path:
        target = target[i]
    if extra:
        target.append(0)
    else:
        target.pop()
    return out


# -- round trips ---------------------------------------------------------------------------------


@FAST
@given(PART_SET_HEADERS)
def test_part_set_header_round_trips(header: PartSetHeader) -> None:
    assert PartSetHeader.from_fields(_wire(header.to_fields())) == header


@FAST
@given(BLOCK_IDS)
def test_block_id_round_trips(block_id: BlockID) -> None:
    decoded = BlockID.from_fields(_wire(block_id.to_fields()))
    assert decoded == block_id
    assert decoded.is_nil() == (block_id == NIL_BLOCK_ID)


@FAST
@given(HEADERS)
def test_header_round_trips(header: Header) -> None:
    decoded = Header.from_fields(_wire(header.to_fields()))
    assert decoded == header
    assert decoded.hash() == header.hash()


@FAST
@given(VOTES)
def test_vote_round_trips(vote: Vote) -> None:
    decoded = Vote.from_fields(_wire(vote.to_fields()))
    assert decoded == vote
    assert decoded.type is vote.type
    assert encode(decoded.to_fields()) == encode(vote.to_fields())


@FAST
@given(proposals())
def test_proposal_round_trips(proposal: Proposal) -> None:
    assert Proposal.from_fields(_wire(proposal.to_fields())) == proposal


@FAST
@given(COMMIT_SIGS)
def test_commit_sig_round_trips(sig: CommitSig) -> None:
    decoded = CommitSig.from_fields(_wire(sig.to_fields()))
    assert decoded == sig
    assert decoded.flag is sig.flag


@FAST
@given(COMMITS)
def test_commit_round_trips_through_fields_and_bytes(commit: Commit) -> None:
    assert Commit.from_fields(_wire(commit.to_fields())) == commit
    raw = commit.encode()
    assert raw == encode(commit.to_fields())
    decoded = Commit.decode(raw)
    assert decoded == commit
    assert decoded.hash() == commit.hash()


@FAST
@given(BLOCKS)
def test_block_round_trips_through_fields_and_bytes(block: Block) -> None:
    assert Block.from_fields(_wire(block.to_fields())) == block
    decoded = Block.decode(block.encode())
    assert decoded == block
    assert decoded.encode() == block.encode()
    assert decoded.hash == block.hash


COMPACT_MESSAGES = st.one_of(
    st.builds(
        CompactBlock,
        round=ROUNDS,
        block_id=BLOCK_IDS_FOR_A_BLOCK,
        header=HEADERS,
        tx_hashes=st.lists(HASHES, max_size=5).map(tuple),
        evidence=st.lists(st.binary(max_size=40), max_size=2).map(tuple),
        last_commit=COMMITS,
    ),
    st.builds(
        BlockTxsRequest, HEIGHTS, ROUNDS, HASHES, st.lists(st.integers(0, 10**6), max_size=5).map(tuple)
    ),
    st.builds(
        BlockTxs,
        HEIGHTS,
        ROUNDS,
        HASHES,
        st.lists(st.tuples(st.integers(0, 10**6), st.binary(max_size=40)), max_size=5).map(tuple),
    ),
)


@FAST
@given(COMPACT_MESSAGES)
def test_compact_block_messages_round_trip(message: CompactBlock | BlockTxsRequest | BlockTxs) -> None:
    raw = encode_message(message)
    assert decode_message(raw) == message
    assert encode_message(decode_message(raw)) == raw


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ([8, [1, 0, b"short", [0]]], "block txs request.block_hash: expected 32 bytes"),
        ([8, [1, 0, b"h" * 32, [-1]]], "block txs request.indexes[]"),
        ([9, [1, 0, b"h" * 32, [[0]]]], "block txs.txs[]"),
        ([9, [0, 0, b"h" * 32, []]], "block txs.height"),
        ([7, [0, NIL_BLOCK_ID.to_fields(), [], [], [], []]], "header"),
    ],
    ids=["short-hash", "negative-index", "pair-of-one", "height-0", "bad-header"],
)
def test_malformed_compact_block_messages_are_refused_naming_the_field(fields: Value, error: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(error)):
        decode_message(encode(fields))


@FAST
@given(st.binary(max_size=1500), st.integers(1, 400), st.data())
def test_part_round_trips_and_still_proves(data: bytes, part_size: int, draw: st.DataObject) -> None:
    source = PartSet.from_data(data, part_size)
    part = draw.draw(st.sampled_from(source.parts()))
    decoded = Part.from_fields(_wire(part.to_fields()))
    assert decoded == part
    target = PartSet(source.header)
    assert target.add(decoded)


def test_decoders_reject_bytes_that_are_not_canonical() -> None:
    raw = SAMPLE_BLOCK.encode()
    with pytest.raises(DecodeError):
        Block.decode(raw + b"\x00")
    with pytest.raises(DecodeError):
        Commit.decode(SAMPLE_COMMIT.encode()[:-1])


# -- strict decoding -----------------------------------------------------------------------------

Decoder = Callable[[Value], object]
SAMPLES: dict[str, tuple[Decoder, Value]] = {
    "part_set_header": (PartSetHeader.from_fields, BLOCK_A.parts.to_fields()),
    "block_id": (BlockID.from_fields, BLOCK_A.to_fields()),
    "header": (Header.from_fields, SAMPLE_HEADER.to_fields()),
    "vote": (Vote.from_fields, SAMPLE_VOTE.to_fields()),
    "proposal": (Proposal.from_fields, SAMPLE_PROPOSAL.to_fields()),
    "commit signature": (CommitSig.from_fields, SAMPLE_COMMIT.signatures[0].to_fields()),
    "commit": (Commit.from_fields, SAMPLE_COMMIT.to_fields()),
    "block": (Block.from_fields, SAMPLE_BLOCK.to_fields()),
    "part": (Part.from_fields, SAMPLE_PART.to_fields()),
}


def test_samples_decode() -> None:
    for decoder, fields in SAMPLES.values():
        decoder(_wire(fields))


@pytest.mark.parametrize("name", sorted(SAMPLES))
@pytest.mark.parametrize("extra", [True, False], ids=["one-more", "one-less"])
def test_wrong_field_count_is_refused_naming_the_type(name: str, extra: bool) -> None:
    decoder, fields = SAMPLES[name]
    with pytest.raises(DecodeError, match=rf"^{name}: expected \d+ fields"):
        decoder(_resize(fields, (), extra))


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_a_non_array_is_refused_naming_the_type(name: str) -> None:
    decoder, _ = SAMPLES[name]
    with pytest.raises(DecodeError, match=rf"^{name}: expected an array"):
        decoder(b"\x00")


BAD_FIELDS: list[tuple[str, tuple[int, ...], object, str]] = [
    # wrong types
    ("vote", (1,), b"\x07", "vote.height: expected an integer"),
    ("vote", (5,), 17, "vote.validator_address: expected bytes"),
    ("vote", (3,), 0, "vote.block_id: expected an array"),
    ("proposal", (4,), b"", "proposal.timestamp: expected an integer"),
    ("header", (1,), 5, "header.chain_id: expected bytes"),
    ("header", (0,), 11, "header.version: expected an array"),
    ("header", (4, 1), b"", "header.last_block_id.parts: expected an array"),
    ("commit", (3,), b"", "commit.signatures: expected an array"),
    ("commit signature", (3,), 0, "commit signature.signature: expected bytes"),
    ("block", (1,), b"", "block.txs: expected an array"),
    ("block", (1, 0), 5, r"block.txs\[\]: expected bytes"),
    ("part", (1,), 0, "part.data: expected bytes"),
    ("part", (2, 2, 0), 0, r"part.proof.aunts\[\]: expected bytes"),
    ("part_set_header", (0,), b"", "part_set_header.total: expected an integer"),
    # out of range
    ("vote", (1,), -1, "vote.height: -1 is outside"),
    ("vote", (1,), 0, "vote.height: 0 is outside"),
    ("vote", (0,), 3, "vote.type: 3 is outside"),
    ("vote", (0,), 0, "vote.type: 0 is outside"),
    ("vote", (2,), -1, "vote.round: -1 is outside"),
    ("vote", (6,), -1, "vote.validator_index: -1 is outside"),
    ("vote", (7,), SIG[:63], "vote.signature: expected 64 bytes"),
    ("vote", (5,), ADDR[:19], "vote.validator_address: expected 20 bytes"),
    ("vote", (4,), 2**63, "vote.timestamp: .* is outside"),
    ("proposal", (0,), -5, "proposal.height: -5 is outside"),
    ("proposal", (2,), 2, "proposal.pol_round: must be below the round"),
    ("proposal", (2,), 3, "proposal.pol_round: must be below the round"),
    ("proposal", (2,), -2, "proposal.pol_round: -2 is outside"),
    ("proposal", (3,), NIL_BLOCK_ID.to_fields(), "proposal.block_id: .*nil"),
    ("header", (2,), -1, "header.height: -1 is outside"),
    ("header", (2,), 0, "header.height: 0 is outside"),
    ("header", (1,), b"x" * (MAX_CHAIN_ID_LEN + 1), "header.chain_id: .* exceed"),
    ("header", (1,), b"\xff\xfe", "header.chain_id: not valid UTF-8"),
    ("header", (13,), ADDR + b"\x00", "header.proposer_address: expected 20 bytes"),
    ("header", (0, 0), -1, "header.version.block: -1 is outside"),
    ("commit", (0,), -1, "commit.height: -1 is outside"),
    ("commit", (1,), -1, "commit.round: -1 is outside"),
    ("commit signature", (0,), 4, "commit signature.flag: 4 is outside"),
    ("commit signature", (0,), 0, "commit signature.flag: 0 is outside"),
    ("commit signature", (1,), ADDR[:10], "commit signature: a present entry"),
    ("commit signature", (3,), b"", "commit signature: a present entry"),
    ("part_set_header", (0,), -1, "part_set_header.total: -1 is outside"),
    ("part_set_header", (0,), MAX_PARTS + 1, "part_set_header.total: .* is outside"),
    ("part", (0,), -1, "part.index: -1 is outside"),
    ("part", (2, 0), 0, "part.proof.total: 0 is outside"),
    ("part", (1,), b"\x00" * (BLOCK_PART_SIZE + 1), "part.data: .* exceed"),
    # hashes of 31 bytes
    ("block_id", (0,), b"\x01" * 31, "block_id.hash: a hash is 32 bytes"),
    ("part_set_header", (1,), b"\x01" * 31, "part_set_header.hash: a hash is 32 bytes"),
    ("block_id", (1, 1), b"\x01" * 31, "block_id.parts.hash: a hash is 32 bytes"),
    ("vote", (3, 0), b"\x01" * 31, "vote.block_id.hash: a hash is 32 bytes"),
    ("proposal", (3, 1, 1), b"\x01" * 31, "proposal.block_id.parts.hash: a hash is 32 bytes"),
    ("header", (6,), b"\x01" * 31, "header.data_hash: a hash is 32 bytes"),
    ("header", (5,), b"\x01" * 33, "header.last_commit_hash: .*exceed"),
    ("header", (4, 0), b"\x01" * 31, "header.last_block_id.hash: a hash is 32 bytes"),
    ("commit", (2, 0), b"\x01" * 31, "commit.block_id.hash: a hash is 32 bytes"),
    ("part", (2, 2, 0), b"\x01" * 31, r"part.proof.aunts\[\]: a hash is 32 bytes"),
    # block ids: a hash without parts, parts without a hash
    ("block_id", (1, 0), 0, "block_id: a block id has a hash and at least one part"),
    ("block_id", (0,), b"", "block_id: a nil block id has no parts"),
    # nested structures name their own path
    ("block", (0, 2), 0, "header.height: 0 is outside"),
    ("block", (3, 3, 0, 0), 9, "commit signature.flag: 9 is outside"),
]


@pytest.mark.parametrize(
    ("name", "path", "new", "message"),
    BAD_FIELDS,
    ids=[f"{n}{list(p)}={m.split(':')[0]}" for n, p, _, m in BAD_FIELDS],
)
def test_bad_field_is_refused_naming_it(name: str, path: tuple[int, ...], new: object, message: str) -> None:
    decoder, fields = SAMPLES[name]
    with pytest.raises(DecodeError, match=f"^{message}"):
        decoder(_set(fields, path, new))


@pytest.mark.parametrize(
    ("field", "value"),
    [(1, ADDR), (2, 5), (3, SIG)],
    ids=["address", "timestamp", "signature"],
)
def test_absent_commit_sig_carrying_data_is_refused(field: int, value: Value) -> None:
    fields = _set(CommitSig.absent().to_fields(), (field,), value)
    with pytest.raises(DecodeError, match=r"^commit signature: an absent entry carries nothing"):
        CommitSig.from_fields(fields)


def test_round_zero_proposal_has_no_pol_round() -> None:
    ok = replace(SAMPLE_PROPOSAL, round=0, pol_round=-1)
    assert Proposal.from_fields(ok.to_fields()) == ok
    with pytest.raises(DecodeError, match=r"^proposal\.pol_round"):
        Proposal.from_fields(replace(SAMPLE_PROPOSAL, round=0, pol_round=0).to_fields())


# -- sign bytes ----------------------------------------------------------------------------------


@FAST
@given(HEIGHTS, ROUNDS, BLOCK_IDS_FOR_A_BLOCK, INT64, st.sampled_from(VoteType), CHAIN_IDS)
def test_vote_and_proposal_with_the_same_numbers_sign_different_bytes(
    height: int, round_: int, block_id: BlockID, ts: int, kind: VoteType, chain_id: str
) -> None:
    vote = Vote(kind, height, round_, block_id, ts, ADDR, 0)
    proposal = Proposal(height, round_, -1, block_id, ts)
    assert vote.sign_bytes(chain_id) != proposal.sign_bytes(chain_id)


def test_sign_bytes_carry_a_domain_per_kind_and_cometbft_type_codes() -> None:
    """Either the domain tag or the type code alone keeps a vote from passing for a proposal."""
    vote_domain, vote_chain, vote_payload = decode(SAMPLE_VOTE.sign_bytes("test-chain"))  # type: ignore[misc]
    prop_domain, prop_chain, prop_payload = decode(SAMPLE_PROPOSAL.sign_bytes("test-chain"))  # type: ignore[misc]
    assert vote_domain != prop_domain
    assert vote_chain == prop_chain == b"test-chain"
    assert isinstance(vote_payload, bytes) and isinstance(prop_payload, bytes)
    assert decode(vote_payload)[0] == int(VoteType.PRECOMMIT) == 2  # type: ignore[index]
    assert decode(prop_payload)[0] == 32  # type: ignore[index]


@FAST
@given(VOTES, proposals(), CHAIN_IDS, CHAIN_IDS)
def test_sign_bytes_depend_on_the_chain_id(
    vote: Vote, proposal: Proposal, chain_a: str, chain_b: str
) -> None:
    assume(chain_a != chain_b)
    assert vote.sign_bytes(chain_a) != vote.sign_bytes(chain_b)
    assert proposal.sign_bytes(chain_a) != proposal.sign_bytes(chain_b)


def test_sign_bytes_are_not_ambiguous_at_the_chain_id_boundary() -> None:
    vote = SAMPLE_VOTE
    assert vote.sign_bytes("ab") != vote.sign_bytes("a")
    assert vote.sign_bytes("") != vote.sign_bytes("\x00")


VOTE_SIGNED_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "type": st.sampled_from(VoteType),
    "height": HEIGHTS,
    "round": ROUNDS,
    "block_id": BLOCK_IDS,
    "timestamp": INT64,
}
PROPOSAL_SIGNED_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "height": HEIGHTS,
    "round": ROUNDS,
    "pol_round": st.integers(-1, 2**31 - 1),
    "block_id": BLOCK_IDS_FOR_A_BLOCK,
    "timestamp": INT64,
}


@FAST
@given(VOTES, st.sampled_from(sorted(VOTE_SIGNED_FIELDS)), st.data())
def test_vote_sign_bytes_change_with_every_signed_field(vote: Vote, name: str, data: st.DataObject) -> None:
    new = data.draw(VOTE_SIGNED_FIELDS[name], label=name)
    assume(new != getattr(vote, name))
    changed = replace(vote, **{name: new})
    assert changed.sign_bytes("c") != vote.sign_bytes("c")


@FAST
@given(proposals(), st.sampled_from(sorted(PROPOSAL_SIGNED_FIELDS)), st.data())
def test_proposal_sign_bytes_change_with_every_signed_field(
    proposal: Proposal, name: str, data: st.DataObject
) -> None:
    new = data.draw(PROPOSAL_SIGNED_FIELDS[name], label=name)
    assume(new != getattr(proposal, name))
    changed = replace(proposal, **{name: new})
    assert changed.sign_bytes("c") != proposal.sign_bytes("c")


@FAST
@given(VOTES, proposals(), SIGNATURES, CHAIN_IDS)
def test_sign_bytes_ignore_the_signature(vote: Vote, proposal: Proposal, sig: bytes, chain_id: str) -> None:
    assert vote.with_signature(sig).sign_bytes(chain_id) == vote.sign_bytes(chain_id)
    assert vote.with_signature(b"").sign_bytes(chain_id) == vote.sign_bytes(chain_id)
    assert proposal.with_signature(sig).sign_bytes(chain_id) == proposal.sign_bytes(chain_id)
    assert vote.with_signature(sig).signature == sig


# -- part sets -----------------------------------------------------------------------------------


@settings(max_examples=80, deadline=None)
@given(st.binary(max_size=3000), st.integers(1, 300), st.randoms(use_true_random=False))
def test_parts_in_any_order_reassemble_the_data(data: bytes, part_size: int, rng: random.Random) -> None:
    source = PartSet.from_data(data, part_size)
    assert source.is_complete()
    assert source.header.total == max(1, -(-len(data) // part_size))
    assert source.data() == data
    parts = source.parts()
    rng.shuffle(parts)
    target = PartSet(source.header)
    for n, part in enumerate(parts):
        assert not target.is_complete()
        with pytest.raises(ValueError, match="incomplete"):
            target.data()
        assert target.add(part)
        assert target.count == n + 1
        assert target.has(part.index)
        assert not target.add(part), "a duplicate part is not added twice"
    assert target.is_complete()
    assert target.data() == data
    assert target.byte_size == len(data)


def test_default_part_size_splits_a_large_block() -> None:
    data = bytes(range(256)) * (2 * BLOCK_PART_SIZE // 256) + b"tail"
    source = PartSet.from_data(data)
    assert source.header.total == 3
    assert [len(p.data) for p in source.parts()] == [BLOCK_PART_SIZE, BLOCK_PART_SIZE, 4]
    target = PartSet(source.header)
    for part in reversed(source.parts()):
        assert target.add(part)
    assert target.data() == data


def test_empty_data_is_one_empty_part() -> None:
    source = PartSet.from_data(b"")
    assert source.header.total == 1
    target = PartSet(source.header)
    assert target.add(source.parts()[0])
    assert target.data() == b""


def _pieces() -> tuple[PartSet, PartSet]:
    """Two part sets of five parts each, of different data."""
    return PartSet.from_data(bytes(range(250)), 50), PartSet.from_data(bytes(range(5, 255)), 50)


@pytest.mark.parametrize("at", [0, 7, 49])
def test_a_tampered_part_is_refused(at: int) -> None:
    source, _ = _pieces()
    part = source.parts()[2]
    data = bytearray(part.data)
    data[at] ^= 0x01
    target = PartSet(source.header)
    assert not target.add(replace(part, data=bytes(data)))
    assert not target.add(replace(part, data=part.data + b"\x00"))
    assert not target.add(replace(part, data=part.data[:-1]))
    assert target.count == 0 and not target.has(2)
    assert target.add(part), "the genuine part is still accepted"


def test_a_part_under_a_wrong_index_is_refused() -> None:
    source, _ = _pieces()
    parts = source.parts()
    target = PartSet(source.header)
    assert not target.add(replace(parts[0], index=1))
    assert not target.add(Part(1, parts[0].data, parts[1].proof))
    assert not target.add(Part(5, parts[4].data, MerkleProof(5, 5, parts[4].proof.aunts)))
    assert not target.add(replace(parts[3], proof=replace(parts[3].proof, total=6)))
    assert not target.add(replace(parts[3], index=-1))
    assert target.count == 0
    assert all(target.add(p) for p in parts)


def test_a_part_with_a_proof_for_another_set_is_refused() -> None:
    source, other = _pieces()
    target = PartSet(source.header)
    for part in other.parts():
        assert not target.add(part)
    foreign = other.parts()[1]
    assert not target.add(Part(1, source.parts()[1].data, foreign.proof))
    assert target.count == 0


def test_a_part_for_a_set_of_another_size_is_refused() -> None:
    source = PartSet.from_data(bytes(range(200)), 50)
    longer = PartSet.from_data(bytes(range(200)) + b"x", 50)
    target = PartSet(source.header)
    assert not any(target.add(p) for p in longer.parts())


# -- hashes --------------------------------------------------------------------------------------


@FAST
@given(BLOCKS)
def test_block_hash_is_the_header_hash(block: Block) -> None:
    assert block.hash == block.header.hash()
    assert len(block.hash) == 32
    other_txs = replace(block, txs=(*block.txs, b"another tx"))
    assert other_txs.hash == block.hash


@FAST
@given(HEADERS, st.data())
def test_header_hash_commits_to_every_field(header: Header, data: st.DataObject) -> None:
    strategies: dict[str, st.SearchStrategy[Any]] = {
        "chain_id": CHAIN_IDS,
        "height": HEIGHTS,
        "time": INT64,
        "last_block_id": BLOCK_IDS,
        "data_hash": HASHES,
        "app_hash": st.binary(max_size=64),
        "proposer_address": ADDRESSES,
        "version_app": st.integers(0, 2**63 - 1),
    }
    name = data.draw(st.sampled_from(sorted(strategies)), label="field")
    new = data.draw(strategies[name], label=name)
    assume(new != getattr(header, name))
    assert replace(header, **{name: new}).hash() != header.hash()


_texts = st.text(max_size=12)
_events = st.builds(
    Event,
    _texts,
    st.lists(st.builds(EventAttribute, _texts, _texts, st.booleans()), max_size=3).map(tuple),
)
_tx_results = st.builds(
    ExecTxResult,
    st.integers(0, 2**32 - 1),
    _texts,
    st.binary(max_size=8),
    _texts,
    st.lists(_events, max_size=3).map(tuple),
)


@given(
    height=st.integers(0, 2**63 - 1),
    results=st.lists(_tx_results, max_size=4),
    events=st.lists(_events, max_size=3),
    updates=st.lists(st.builds(ValidatorUpdate, st.binary(min_size=32, max_size=32), st.integers(0, 2**62))),
    app_hash=st.binary(min_size=32, max_size=32),
)
def test_block_results_are_stored_in_the_canonical_form(
    height: int,
    results: list[ExecTxResult],
    events: list[Event],
    updates: list[ValidatorUpdate],
    app_hash: bytes,
) -> None:
    # BlockResults.encode packs without the codec's checks: it must still give `encode`'s bytes
    stored = BlockResults(
        height, tuple(results), FinalizeBlockResult(tuple(results), app_hash, tuple(events), tuple(updates))
    )
    raw = stored.encode()
    assert raw == encode(
        [
            height,
            [r.to_fields() for r in results],
            [e.to_fields() for e in events],
            [[u.pub_key, u.power] for u in updates],
            app_hash,
        ]
    )
    assert BlockResults.decode(raw) == stored
