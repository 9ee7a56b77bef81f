"""SHA-256 and RFC 6962 Merkle trees (roots and inclusion proofs), as CometBFT computes them.

Leaves are hashed as SHA-256(0x00 || leaf) and inner nodes as SHA-256(0x01 || left || right);
a tree of n > 1 leaves splits at the largest power of two below n. The root of no leaves is
SHA-256 of the empty string.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

HASH_SIZE = 32
_LEAF = b"\x00"
_INNER = b"\x01"


def sha256(data: bytes) -> bytes:
    """SHA-256 of `data`."""
    return hashlib.sha256(data).digest()


def leaf_hash(leaf: bytes) -> bytes:
    """The Merkle hash of one leaf."""
    return hashlib.sha256(_LEAF + leaf).digest()


def inner_hash(left: bytes, right: bytes) -> bytes:
    """The Merkle hash of an inner node."""
    return hashlib.sha256(_INNER + left + right).digest()


def _split_point(n: int) -> int:
    """The largest power of two strictly below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def _root_of_hashes(hashes: Sequence[bytes]) -> bytes:
    """The root over the node hashes `hashes` (at least one), level by level: adjacent pairs are
    hashed and an odd last node moves up a level unchanged. This is the RFC 6962 tree (split at
    the largest power of two below n): the left subtree of every split is a full power-of-two
    tree, so pairing from the left never crosses a split, and the lone right-most node of a level
    is exactly a right subtree that is not yet complete. Iterative: no recursion, no slicing."""
    level = list(hashes)
    new = hashlib.sha256
    while len(level) > 1:
        paired = [new(_INNER + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """The RFC 6962 Merkle root of `leaves`."""
    if not leaves:
        return sha256(b"")
    new = hashlib.sha256
    return _root_of_hashes([new(_LEAF + leaf).digest() for leaf in leaves])


@dataclass(frozen=True, slots=True)
class MerkleProof:
    """Inclusion proof of leaf `index` among `total` leaves: the sibling hashes, leaf side first."""

    total: int
    index: int
    aunts: tuple[bytes, ...]

    def root_for(self, leaf: bytes) -> bytes | None:
        """The root this proof gives for `leaf`, or None if the proof is malformed."""
        if self.total <= 0 or not 0 <= self.index < self.total:
            return None
        return _root_from_aunts(self.index, self.total, leaf_hash(leaf), list(self.aunts))

    def verify(self, root: bytes, leaf: bytes) -> bool:
        """Whether `leaf` sits at `index` in the tree of `root`."""
        computed = self.root_for(leaf)
        return computed is not None and computed == root


def _root_from_aunts(index: int, total: int, node: bytes, aunts: list[bytes]) -> bytes | None:
    if total == 1:
        return node if not aunts else None
    if not aunts:
        return None
    k = _split_point(total)
    if index < k:
        left = _root_from_aunts(index, k, node, aunts[:-1])
        return None if left is None else inner_hash(left, aunts[-1])
    right = _root_from_aunts(index - k, total - k, node, aunts[:-1])
    return None if right is None else inner_hash(aunts[-1], right)


def merkle_proofs(leaves: Sequence[bytes]) -> tuple[bytes, list[MerkleProof]]:
    """The root of `leaves` and one inclusion proof per leaf."""
    total = len(leaves)
    if total == 0:
        return sha256(b""), []
    aunts: list[list[bytes]] = [[] for _ in range(total)]

    def build(lo: int, hi: int) -> bytes:
        if hi - lo == 1:
            return leaf_hash(leaves[lo])
        k = _split_point(hi - lo)
        left = build(lo, lo + k)
        right = build(lo + k, hi)
        for i in range(lo, lo + k):
            aunts[i].append(right)
        for i in range(lo + k, hi):
            aunts[i].append(left)
        return inner_hash(left, right)

    root = build(0, total)
    return root, [MerkleProof(total, i, tuple(aunts[i])) for i in range(total)]
