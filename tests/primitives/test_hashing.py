"""Tests of primitives.hashing: SHA-256 and RFC 6962 Merkle roots and inclusion proofs."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from primitives.hashing import (
    HASH_SIZE,
    MerkleProof,
    inner_hash,
    leaf_hash,
    merkle_proofs,
    merkle_root,
    sha256,
)

# -- reference implementation, written independently from the RFC text -----------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1 MTH, with CometBFT's empty-tree root SHA-256("")."""
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return _h(b"\x00" + leaves[0])
    k = _largest_power_of_two_below(len(leaves))
    return _h(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:]))


def reference_path(index: int, total: int) -> list[bool]:
    """Directions from the root down to leaf `index` among `total`: True means "go left"."""
    path: list[bool] = []
    while total > 1:
        k = _largest_power_of_two_below(total)
        if index < k:
            path.append(True)
            total = k
        else:
            path.append(False)
            index -= k
            total -= k
    return path


leaf_lists = st.lists(st.binary(max_size=12), max_size=40)
non_empty_leaf_lists = st.lists(st.binary(max_size=12), min_size=1, max_size=40)


# -- sha256, leaf and inner hashes -------------------------------------------------------------


def test_sha256_known_vectors() -> None:
    assert sha256(b"").hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256(b"abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert len(sha256(b"x")) == HASH_SIZE == 32


def test_leaf_and_inner_hash_prefixes() -> None:
    assert leaf_hash(b"abc") == _h(b"\x00abc")
    left, right = _h(b"l"), _h(b"r")
    assert inner_hash(left, right) == _h(b"\x01" + left + right)
    assert inner_hash(left, right) != inner_hash(right, left)
    # domain separation: a leaf that looks like an inner node does not hash like one
    assert leaf_hash(left + right) != inner_hash(left, right)


# -- roots ------------------------------------------------------------------------------------


def test_known_roots() -> None:
    empty = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    assert merkle_root([]) == empty
    # SHA-256(0x00): the root of one empty leaf
    assert merkle_root([b""]) == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )
    a, b, c, d, e = (_h(b"\x00" + x) for x in (b"a", b"b", b"c", b"d", b"e"))
    assert merkle_root([b"a"]) == a
    assert merkle_root([b"a", b"b"]) == _h(b"\x01" + a + b)
    # 3 leaves split 2 + 1
    assert merkle_root([b"a", b"b", b"c"]) == _h(b"\x01" + _h(b"\x01" + a + b) + c)
    ab_cd = _h(b"\x01" + _h(b"\x01" + a + b) + _h(b"\x01" + c + d))
    assert merkle_root([b"a", b"b", b"c", b"d"]) == ab_cd
    # 5 leaves split 4 + 1
    assert merkle_root([b"a", b"b", b"c", b"d", b"e"]) == _h(b"\x01" + ab_cd + e)


# The RFC 6962 test data of certificate-transparency / Trillian: 8 leaves and MTH(D[:n]), n = 1..8.
RFC6962_LEAVES = [
    b"",
    bytes([0x00]),
    bytes([0x10]),
    bytes([0x20, 0x21]),
    bytes([0x30, 0x31]),
    bytes([0x40, 0x41, 0x42, 0x43]),
    bytes(range(0x50, 0x58)),
    bytes(range(0x60, 0x70)),
]
RFC6962_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]


@pytest.mark.parametrize("n", range(1, 9))
def test_rfc6962_vectors(n: int) -> None:
    leaves = RFC6962_LEAVES[:n]
    assert merkle_root(leaves).hex() == RFC6962_ROOTS[n - 1]
    assert reference_root(leaves).hex() == RFC6962_ROOTS[n - 1]
    root, proofs = merkle_proofs(leaves)
    assert root.hex() == RFC6962_ROOTS[n - 1]
    assert all(proof.verify(root, leaf) for proof, leaf in zip(proofs, leaves, strict=True))


@settings(max_examples=200)
@given(leaf_lists)
def test_root_matches_reference(leaves: list[bytes]) -> None:
    assert merkle_root(leaves) == reference_root(leaves)


@pytest.mark.parametrize("n", [*range(0, 18), 31, 32, 33, 63, 64, 65, 100, 127, 128, 129])
def test_root_matches_reference_for_sizes(n: int) -> None:
    leaves = [i.to_bytes(2, "big") for i in range(n)]
    assert merkle_root(leaves) == reference_root(leaves)


def test_root_accepts_tuples() -> None:
    assert merkle_root((b"a", b"b", b"c")) == reference_root([b"a", b"b", b"c"])


@settings(max_examples=100)
@given(non_empty_leaf_lists, st.data())
def test_root_changes_with_any_leaf(leaves: list[bytes], data: st.DataObject) -> None:
    i = data.draw(st.integers(0, len(leaves) - 1))
    changed = list(leaves)
    changed[i] = leaves[i] + b"!"
    assert merkle_root(changed) != merkle_root(leaves)
    assert merkle_root([*leaves, b""]) != merkle_root(leaves)


# -- proofs -----------------------------------------------------------------------------------


def test_proofs_of_empty_list() -> None:
    root, proofs = merkle_proofs([])
    assert root == _h(b"")
    assert proofs == []


def test_proof_of_single_leaf() -> None:
    root, proofs = merkle_proofs([b"only"])
    assert root == leaf_hash(b"only")
    assert proofs == [MerkleProof(1, 0, ())]
    assert proofs[0].verify(root, b"only")
    assert not proofs[0].verify(root, b"other")


def test_proof_aunts_are_leaf_side_first() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    root, proofs = merkle_proofs([b"a", b"b", b"c"])
    assert proofs[0] == MerkleProof(3, 0, (b, c))
    assert proofs[1] == MerkleProof(3, 1, (a, c))
    assert proofs[2] == MerkleProof(3, 2, (inner_hash(a, b),))
    assert root == inner_hash(inner_hash(a, b), c)


@settings(max_examples=100)
@given(non_empty_leaf_lists)
def test_every_proof_verifies(leaves: list[bytes]) -> None:
    root, proofs = merkle_proofs(leaves)
    assert root == reference_root(leaves)
    assert len(proofs) == len(leaves)
    for i, (leaf, proof) in enumerate(zip(leaves, proofs, strict=True)):
        assert proof.total == len(leaves)
        assert proof.index == i
        assert len(proof.aunts) == len(reference_path(i, len(leaves)))
        assert proof.root_for(leaf) == root
        assert proof.verify(root, leaf)


@settings(max_examples=100)
@given(non_empty_leaf_lists, st.data())
def test_proof_fails_for_another_leaf(leaves: list[bytes], data: st.DataObject) -> None:
    root, proofs = merkle_proofs(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    other = data.draw(st.binary(max_size=12).filter(lambda x: x != leaves[i]))
    assert not proofs[i].verify(root, other)
    assert not proofs[i].verify(sha256(b"another root"), leaves[i])


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=12), min_size=2, max_size=40, unique=True), st.data())
def test_proof_fails_at_another_index(leaves: list[bytes], data: st.DataObject) -> None:
    root, proofs = merkle_proofs(leaves)
    n = len(leaves)
    i = data.draw(st.integers(0, n - 1))
    j = data.draw(st.integers(0, n - 1).filter(lambda j: j != i))
    moved = MerkleProof(n, j, proofs[i].aunts)
    assert not moved.verify(root, leaves[i])
    for bad_index in (-1, n, n + 5):
        assert MerkleProof(n, bad_index, proofs[i].aunts).root_for(leaves[i]) is None
        assert not MerkleProof(n, bad_index, proofs[i].aunts).verify(root, leaves[i])


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=12), min_size=2, max_size=40), st.data())
def test_proof_fails_with_a_tampered_aunt(leaves: list[bytes], data: st.DataObject) -> None:
    root, proofs = merkle_proofs(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = proofs[i]
    k = data.draw(st.integers(0, len(proof.aunts) - 1))
    bit = data.draw(st.integers(0, 8 * HASH_SIZE - 1))
    aunt = bytearray(proof.aunts[k])
    aunt[bit // 8] ^= 1 << (bit % 8)
    aunts = list(proof.aunts)
    aunts[k] = bytes(aunt)
    assert not MerkleProof(proof.total, proof.index, tuple(aunts)).verify(root, leaves[i])
    # swapping two aunts is also caught
    if len(aunts) >= 2 and proof.aunts[0] != proof.aunts[-1]:
        swapped = (proof.aunts[-1], *proof.aunts[1:-1], proof.aunts[0])
        assert not MerkleProof(proof.total, proof.index, swapped).verify(root, leaves[i])


@settings(max_examples=100)
@given(non_empty_leaf_lists, st.data())
def test_proof_fails_with_extra_or_missing_aunts(leaves: list[bytes], data: st.DataObject) -> None:
    root, proofs = merkle_proofs(leaves)
    i = data.draw(st.integers(0, len(leaves) - 1))
    proof = proofs[i]
    extra = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE))
    for aunts in (
        (*proof.aunts, extra),
        (extra, *proof.aunts),
        (*proof.aunts, root),
    ):
        bad = MerkleProof(proof.total, proof.index, aunts)
        assert bad.root_for(leaves[i]) is None
        assert not bad.verify(root, leaves[i])
    if proof.aunts:
        for aunts in (proof.aunts[1:], proof.aunts[:-1], ()):
            bad = MerkleProof(proof.total, proof.index, aunts)
            assert bad.root_for(leaves[i]) is None
            assert not bad.verify(root, leaves[i])


@settings(max_examples=100)
@given(non_empty_leaf_lists, st.data())
def test_wrong_total(leaves: list[bytes], data: st.DataObject) -> None:
    """A wrong total fails unless it leaves the path to the leaf unchanged.

    RFC 6962 (and CometBFT) proofs do not commit to the total on their own: for index 0 of 3 or
    of 4 leaves the path is left-left in both trees, so the same aunts give the same root. What
    must hold is that a total that changes the path never verifies."""
    n = len(leaves)
    root, proofs = merkle_proofs(leaves)
    i = data.draw(st.integers(0, n - 1))
    total = data.draw(st.integers(-2, 2 * n + 2).filter(lambda t: t != n))
    bad = MerkleProof(total, i, proofs[i].aunts)
    if total > i and reference_path(i, total) == reference_path(i, n):
        assert bad.verify(root, leaves[i])
    else:
        assert not bad.verify(root, leaves[i])


def test_wrong_total_examples() -> None:
    leaves = [b"a", b"b", b"c", b"d", b"e"]
    root, proofs = merkle_proofs(leaves)
    # index 4 of 5 hangs directly off the root; in a tree of 6 it is one level deeper
    assert not MerkleProof(6, 4, proofs[4].aunts).verify(root, b"e")
    assert not MerkleProof(4, 4, proofs[4].aunts).verify(root, b"e")
    assert not MerkleProof(0, 0, proofs[0].aunts).verify(root, b"a")
    assert not MerkleProof(-5, 0, proofs[0].aunts).verify(root, b"a")
    assert not MerkleProof(1, 0, proofs[0].aunts).verify(root, b"a")
    assert not MerkleProof(2, 0, proofs[0].aunts).verify(root, b"a")
    assert not MerkleProof(16, 0, proofs[0].aunts).verify(root, b"a")
    # inherent in RFC 6962 / CometBFT proofs: index 0 is left-left-left in trees of 5 to 8 leaves,
    # so the total is only bound through the root; callers must check it against a signed value
    assert MerkleProof(8, 0, proofs[0].aunts).verify(root, b"a")


def test_proof_is_frozen() -> None:
    proof = MerkleProof(1, 0, ())
    with pytest.raises(AttributeError):
        proof.total = 2  # type: ignore[misc]
