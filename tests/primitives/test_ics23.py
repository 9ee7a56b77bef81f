"""Tests of primitives.ics23: the protobuf bytes (by hand and round trips), strict decoding, and the
checks that make an absence proof fail (the tree's proofs that pass are in tests/storage)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from primitives.ics23 import (
    ExistenceProof,
    HashOp,
    InnerOp,
    LeafOp,
    LengthOp,
    NonExistenceProof,
    ProofError,
    decode_proof,
    encode_proof,
    verify_membership,
    verify_non_membership,
)
from storage.db import Database
from storage.statetree import LEAF_OP, PROOF_SPEC, StateTree


def test_bytes_of_a_small_proof_by_hand() -> None:
    proof = ExistenceProof(
        key=b"k", value=b"v", leaf=LEAF_OP, path=(InnerOp(hash=HashOp.SHA256, prefix=b"\x01", suffix=b""),)
    )
    leaf = bytes([0x08, 1, 0x10, 1, 0x18, 1, 0x20, 1, 0x2A, 1, 0x00])  # hash, prehashes, length, prefix
    inner = bytes([0x08, 1, 0x12, 1, 0x01])  # hash SHA256, prefix 0x01, no suffix (proto3 default)
    exist = (
        b"\x0a\x01k\x12\x01v" + b"\x1a" + bytes([len(leaf)]) + leaf + b"\x22" + bytes([len(inner)]) + inner
    )
    assert encode_proof(proof) == b"\x0a" + bytes([len(exist)]) + exist
    assert decode_proof(encode_proof(proof)) == proof


hashes = st.sampled_from(list(HashOp))
leaves = st.builds(
    LeafOp,
    hash=hashes,
    prehash_key=hashes,
    prehash_value=hashes,
    length=st.sampled_from(list(LengthOp)),
    prefix=st.binary(max_size=4),
)
inners = st.builds(InnerOp, hash=hashes, prefix=st.binary(max_size=70), suffix=st.binary(max_size=70))
existence = st.builds(
    ExistenceProof,
    key=st.binary(max_size=8),
    value=st.binary(max_size=300),
    leaf=leaves,
    path=st.lists(inners, max_size=5).map(tuple),
)
proofs = st.one_of(
    existence,
    st.builds(
        NonExistenceProof,
        key=st.binary(max_size=8),
        left=st.one_of(st.none(), existence),
        right=st.one_of(st.none(), existence),
    ),
)


@given(proofs)
def test_round_trip(proof: ExistenceProof | NonExistenceProof) -> None:
    assert decode_proof(encode_proof(proof)) == proof


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"", "exactly one of exist and nonexist"),
        (b"\x0a\x00\x12\x00", "exactly one"),
        (b"\x1a\x00", "batch and compressed proofs are not supported"),
        (b"\x0a\x05\x0a\x01k", "runs past the end"),
        (b"\x0a\x02\x0a\x00", "no leaf op"),
        (b"\x0a\x04\x1a\x02\x08\x07", "hash op 7 is not supported"),
        (b"\x0a\x04\x1a\x02\x20\x05", "length op 5 is not supported"),
        (b"\x0a\x04\x1a\x00\x1a\x00", "field 3 appears twice"),
        (b"\x0a\x03\x1a\x00\x38", "unexpected field 7"),
        (b"\x08\x01", "unexpected field 1 \\(wire type 0\\)"),
        (b"\x0a\x82", "truncated or overlong varint"),
    ],
)
def test_malformed_bytes_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(ProofError, match=message):
        decode_proof(raw)


@pytest.fixture
def tree(tmp_path: Path) -> StateTree:
    tree = StateTree(Database(tmp_path))
    tree.apply(1, [(b"key%d" % i, b"value%d" % i) for i in range(200)])
    return tree


def _order(keys: list[bytes]) -> list[bytes]:
    return sorted(keys, key=lambda k: hashlib.sha256(k).digest())


def test_an_absence_proof_needs_adjacent_neighbours(tree: StateTree) -> None:
    root = tree.root_hash
    present = _order([b"key%d" % i for i in range(200)])
    absent = b"nokey"
    honest = tree.prove(absent, 1)
    assert isinstance(honest, NonExistenceProof) and honest.left is not None and honest.right is not None
    verify_non_membership(PROOF_SPEC, root, honest, absent)
    left_at = present.index(honest.left.key)
    farther_left = tree.prove(present[left_at - 1], 1)
    farther_right = tree.prove(present[left_at + 2], 1)
    assert isinstance(farther_left, ExistenceProof) and isinstance(farther_right, ExistenceProof)
    cases = [
        (NonExistenceProof(key=absent, left=farther_left, right=honest.right), "not adjacent"),
        (NonExistenceProof(key=absent, left=honest.left, right=farther_right), "not adjacent"),
        (NonExistenceProof(key=absent, left=honest.right, right=honest.left), "not left of the key"),
        (NonExistenceProof(key=absent, left=None, right=honest.right), "must be the leftmost"),
        (NonExistenceProof(key=absent, left=honest.left, right=None), "must be the rightmost"),
        (NonExistenceProof(key=b"other", left=honest.left, right=honest.right), "another key"),
    ]
    for forged, message in cases:
        with pytest.raises(ProofError, match=message):
            verify_non_membership(PROOF_SPEC, root, forged, absent)
    # a present key's neighbours cannot prove it absent: they are not adjacent (it is between them)
    key = present[100]
    around = NonExistenceProof(key=key, left=tree.prove(present[99], 1), right=tree.prove(present[101], 1))  # type: ignore[arg-type]
    with pytest.raises(ProofError, match="not adjacent"):
        verify_non_membership(PROOF_SPEC, root, around, key)


def test_a_proof_against_another_root_or_a_tampered_step_fails(tree: StateTree) -> None:
    proof = tree.prove(b"key5", 1)
    assert isinstance(proof, ExistenceProof)
    verify_membership(PROOF_SPEC, tree.root_hash, proof, b"key5", b"value5")
    tree.apply(2, [(b"key6", b"changed")])
    with pytest.raises(ProofError, match="another root"):
        verify_membership(PROOF_SPEC, tree.root_hash, proof, b"key5", b"value5")
    step = proof.path[0]
    flipped = bytes([step.prefix[-1] ^ 1]) if len(step.prefix) > 1 else b""
    tampered = InnerOp(
        hash=step.hash,
        prefix=step.prefix[:-1] + flipped if flipped else step.prefix,
        suffix=step.suffix[::-1],
    )
    bad = ExistenceProof(key=proof.key, value=proof.value, leaf=proof.leaf, path=(tampered, *proof.path[1:]))
    with pytest.raises(ProofError, match="another root"):
        verify_membership(PROOF_SPEC, tree.root_at(1), bad, b"key5", b"value5")
    leaf_prefixed = InnerOp(hash=step.hash, prefix=b"\x00" + step.prefix, suffix=step.suffix)
    odd = ExistenceProof(
        key=proof.key, value=proof.value, leaf=proof.leaf, path=(leaf_prefixed, *proof.path[1:])
    )
    with pytest.raises(ProofError, match="starts like a leaf"):
        verify_membership(PROOF_SPEC, tree.root_at(1), odd, b"key5", b"value5")
