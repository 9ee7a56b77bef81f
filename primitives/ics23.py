"""ICS23 commitment proofs (cosmos/ics23): the messages, their protobuf bytes, and verification.

A proof that a key holds a value (`ExistenceProof`) is the key, the value, the `LeafOp` that hashes
them into a leaf, and the `InnerOp`s from the leaf's parent up to the root; each inner step hashes
`prefix || child || suffix`. A proof that a key is absent (`NonExistenceProof`) is the existence
proofs of its neighbours in the tree's key order (either may be missing at an edge), which must be
adjacent leaves. A `ProofSpec` says what a tree's proofs must look like; `verify_membership` and
`verify_non_membership` check a proof against a spec and a root and raise `ProofError` naming
what is wrong.

Supported: hash ops NO_HASH and SHA256, length ops NO_PREFIX and VAR_PROTO, `CommitmentProof`s of
kind exist or nonexist (batch and compressed proofs are refused). The protobuf bytes are those of
`cosmos.ics23.v1` (`encode_proof` / `decode_proof`); decoding is strict (unknown or repeated
fields, wrong wire types and trailing bytes are refused).

One deliberate difference from ICS23's Go verifier: where a left and a right neighbour's paths
split, ICS23 requires the right branch to be the very next child; here the children between the
two may be the spec's empty child (a 16-ary node has empty slots between non-empty ones). With a
binary spec the two rules are the same.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import IntEnum


class ProofError(ValueError):
    """A proof that does not verify, or bytes that are not a proof; the message says why."""


class HashOp(IntEnum):
    NO_HASH = 0
    SHA256 = 1


class LengthOp(IntEnum):
    NO_PREFIX = 0
    VAR_PROTO = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LeafOp:
    hash: HashOp
    prehash_key: HashOp
    prehash_value: HashOp
    length: LengthOp
    prefix: bytes

    def apply(self, key: bytes, value: bytes) -> bytes:
        if not key:
            raise ProofError("a leaf needs a key")
        if not value:
            raise ProofError("a leaf needs a value")
        data = self.prefix + _leaf_data(self.prehash_key, self.length, key)
        return _hash(self.hash, data + _leaf_data(self.prehash_value, self.length, value))


@dataclass(frozen=True, slots=True, kw_only=True)
class InnerOp:
    hash: HashOp
    prefix: bytes
    suffix: bytes

    def apply(self, child: bytes) -> bytes:
        if not child:
            raise ProofError("an inner step needs a child hash")
        return _hash(self.hash, self.prefix + child + self.suffix)


@dataclass(frozen=True, slots=True, kw_only=True)
class InnerSpec:
    child_order: tuple[int, ...]
    child_size: int
    min_prefix_length: int
    max_prefix_length: int
    empty_child: bytes
    hash: HashOp


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofSpec:
    leaf_spec: LeafOp
    inner_spec: InnerSpec
    max_depth: int = 0
    min_depth: int = 0
    prehash_key_before_comparison: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class ExistenceProof:
    key: bytes
    value: bytes
    leaf: LeafOp
    path: tuple[InnerOp, ...]

    def calculate(self) -> bytes:
        """The root this proof leads to."""
        result = self.leaf.apply(self.key, self.value)
        for step in self.path:
            result = step.apply(result)
        return result


@dataclass(frozen=True, slots=True, kw_only=True)
class NonExistenceProof:
    key: bytes
    left: ExistenceProof | None
    right: ExistenceProof | None

    def calculate(self) -> bytes:
        """The root the neighbours' proofs lead to."""
        neighbour = self.left if self.left is not None else self.right
        if neighbour is None:
            raise ProofError("an absence proof needs a left or a right neighbour")
        return neighbour.calculate()


CommitmentProof = ExistenceProof | NonExistenceProof


# -- verification -----------------------------------------------------------------------------------


def verify_membership(spec: ProofSpec, root: bytes, proof: CommitmentProof, key: bytes, value: bytes) -> None:
    """Raise ProofError unless `proof` shows `key` holding `value` under `root`."""
    if not isinstance(proof, ExistenceProof):
        raise ProofError("a proof of absence cannot show that a key holds a value")
    _verify_existence(spec, root, proof, key, value)


def verify_non_membership(spec: ProofSpec, root: bytes, proof: CommitmentProof, key: bytes) -> None:
    """Raise ProofError unless `proof` shows `key` absent under `root`."""
    if not isinstance(proof, NonExistenceProof):
        raise ProofError("a proof of presence cannot show that a key is absent")
    if proof.key != key:
        raise ProofError("the absence proof is for another key")
    left, right = proof.left, proof.right
    if left is None and right is None:
        raise ProofError("an absence proof needs a left or a right neighbour")
    compared = _comparison_key(spec, key)
    if left is not None:
        _verify_existence(spec, root, left, left.key, left.value, "left neighbour: ")
        if _comparison_key(spec, left.key) >= compared:
            raise ProofError("the left neighbour is not left of the key")
    if right is not None:
        _verify_existence(spec, root, right, right.key, right.value, "right neighbour: ")
        if _comparison_key(spec, right.key) <= compared:
            raise ProofError("the right neighbour is not right of the key")
    inner = spec.inner_spec
    if left is None:
        assert right is not None
        if not _is_leftmost(inner, right.path):
            raise ProofError("with no left neighbour, the right one must be the leftmost leaf")
    elif right is None:
        if not _is_rightmost(inner, left.path):
            raise ProofError("with no right neighbour, the left one must be the rightmost leaf")
    elif not _are_neighbours(inner, left.path, right.path):
        raise ProofError("the left and right neighbours are not adjacent leaves")


def _verify_existence(
    spec: ProofSpec, root: bytes, proof: ExistenceProof, key: bytes, value: bytes, where: str = ""
) -> None:
    _check_against_spec(spec, proof, where)
    if proof.key != key:
        raise ProofError(f"{where}the proof is for another key")
    if proof.value != value:
        raise ProofError(f"{where}the proof is for another value")
    if proof.calculate() != root:
        raise ProofError(f"{where}the proof leads to another root (another height or state?)")


def _check_against_spec(spec: ProofSpec, proof: ExistenceProof, where: str) -> None:
    leaf, want = proof.leaf, spec.leaf_spec
    if (leaf.hash, leaf.prehash_key, leaf.prehash_value, leaf.length) != (
        want.hash,
        want.prehash_key,
        want.prehash_value,
        want.length,
    ) or not leaf.prefix.startswith(want.prefix):
        raise ProofError(f"{where}the leaf step is not the spec's")
    depth = len(proof.path)
    max_depth = spec.max_depth or 128
    if depth < spec.min_depth or depth > max_depth:
        raise ProofError(f"{where}the path has {depth} steps (the spec allows {spec.min_depth}-{max_depth})")
    inner = spec.inner_spec
    most_left = (len(inner.child_order) - 1) * inner.child_size
    for step in proof.path:
        if step.hash != inner.hash:
            raise ProofError(f"{where}an inner step uses another hash")
        if want.prefix and step.prefix.startswith(want.prefix):
            raise ProofError(f"{where}an inner step's prefix starts like a leaf's")
        if not inner.min_prefix_length <= len(step.prefix) <= inner.max_prefix_length + most_left:
            raise ProofError(f"{where}an inner step's prefix has a length the spec does not allow")
        if len(step.suffix) % inner.child_size:
            raise ProofError(f"{where}an inner step's suffix is not whole children")


def _comparison_key(spec: ProofSpec, key: bytes) -> bytes:
    return _hash(spec.leaf_spec.prehash_key, key) if spec.prehash_key_before_comparison else key


def _padding(spec: InnerSpec, branch: int) -> tuple[int, int, int]:
    """(min prefix, max prefix, suffix) lengths of a step whose child is `branch`."""
    index = spec.child_order.index(branch)
    prefix = index * spec.child_size
    suffix = (len(spec.child_order) - 1 - index) * spec.child_size
    return prefix + spec.min_prefix_length, prefix + spec.max_prefix_length, suffix


def _branch(spec: InnerSpec, step: InnerOp) -> int | None:
    """Which child `step` hashes, read from its padding (None: no child fits)."""
    for branch in range(len(spec.child_order)):
        low, high, suffix = _padding(spec, branch)
        if low <= len(step.prefix) <= high and len(step.suffix) == suffix:
            return branch
    return None


def _empty(spec: InnerSpec, children: bytes) -> bool:
    size = spec.child_size
    return all(children[i : i + size] == spec.empty_child for i in range(0, len(children), size))


def _is_leftmost(spec: InnerSpec, path: tuple[InnerOp, ...]) -> bool:
    """Every step hashes the first non-empty child of its node."""
    for step in path:
        branch = _branch(spec, step)
        if branch is None:
            return False
        left = spec.child_order.index(branch) * spec.child_size
        if not _empty(spec, step.prefix[len(step.prefix) - left :] if left else b""):
            return False
    return True


def _is_rightmost(spec: InnerSpec, path: tuple[InnerOp, ...]) -> bool:
    """Every step hashes the last non-empty child of its node."""
    return all(_branch(spec, step) is not None and _empty(spec, step.suffix) for step in path)


def _are_neighbours(spec: InnerSpec, left: tuple[InnerOp, ...], right: tuple[InnerOp, ...]) -> bool:
    """Whether the leaves at the ends of `left` and `right` (paths from leaf to root) are adjacent."""
    i, j = len(left) - 1, len(right) - 1
    while i >= 0 and j >= 0 and left[i] == right[j]:
        i, j = i - 1, j - 1
    if i < 0 or j < 0:
        return False
    left_branch, right_branch = _branch(spec, left[i]), _branch(spec, right[j])
    if left_branch is None or right_branch is None:
        return False
    left_at, right_at = spec.child_order.index(left_branch), spec.child_order.index(right_branch)
    if right_at <= left_at:
        return False
    between = left[i].suffix[: (right_at - left_at - 1) * spec.child_size]
    return _empty(spec, between) and _is_rightmost(spec, left[:i]) and _is_leftmost(spec, right[:j])


def _hash(op: HashOp, data: bytes) -> bytes:
    return hashlib.sha256(data).digest() if op is HashOp.SHA256 else data


def _leaf_data(prehash: HashOp, length: LengthOp, data: bytes) -> bytes:
    hashed = _hash(prehash, data)
    return hashed if length is LengthOp.NO_PREFIX else _varint(len(hashed)) + hashed


# -- protobuf bytes (cosmos.ics23.v1) ---------------------------------------------------------------

_VARINT = 0
_BYTES = 2


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | _BYTES) + _varint(len(payload)) + payload


def _enum(number: int, value: int) -> bytes:
    return _varint(number << 3 | _VARINT) + _varint(value) if value else b""


def _bytes(number: int, value: bytes) -> bytes:
    return _field(number, value) if value else b""


def _leaf_bytes(leaf: LeafOp) -> bytes:
    return (
        _enum(1, leaf.hash)
        + _enum(2, leaf.prehash_key)
        + _enum(3, leaf.prehash_value)
        + _enum(4, leaf.length)
        + _bytes(5, leaf.prefix)
    )


def _existence_bytes(proof: ExistenceProof) -> bytes:
    out = _bytes(1, proof.key) + _bytes(2, proof.value) + _field(3, _leaf_bytes(proof.leaf))
    for step in proof.path:
        out += _field(4, _enum(1, step.hash) + _bytes(2, step.prefix) + _bytes(3, step.suffix))
    return out


def encode_proof(proof: CommitmentProof) -> bytes:
    """The protobuf bytes of a `CommitmentProof` holding `proof`."""
    if isinstance(proof, ExistenceProof):
        return _field(1, _existence_bytes(proof))
    inner = _bytes(1, proof.key)
    if proof.left is not None:
        inner += _field(2, _existence_bytes(proof.left))
    if proof.right is not None:
        inner += _field(3, _existence_bytes(proof.right))
    return _field(2, inner)


def _fields(
    data: bytes, what: str, allowed: dict[int, int], repeated: frozenset[int] = frozenset()
) -> dict[int, list[int | bytes]]:
    """The fields of one message: number -> values, wire types as `allowed` says."""
    out: dict[int, list[int | bytes]] = {}
    at = 0
    while at < len(data):
        tag, at = _read_varint(data, at, what)
        number, wire = tag >> 3, tag & 7
        if allowed.get(number) != wire:
            raise ProofError(f"{what}: unexpected field {number} (wire type {wire})")
        if number in out and number not in repeated:
            raise ProofError(f"{what}: field {number} appears twice")
        value: int | bytes
        if wire == _VARINT:
            value, at = _read_varint(data, at, what)
        else:
            size, at = _read_varint(data, at, what)
            if at + size > len(data):
                raise ProofError(f"{what}: field {number} runs past the end")
            value, at = data[at : at + size], at + size
        out.setdefault(number, []).append(value)
    return out


def _read_varint(data: bytes, at: int, what: str) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ProofError(f"{what}: a truncated or overlong varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, at


def _int(fields: dict[int, list[int | bytes]], number: int) -> int:
    value = fields.get(number, [0])[0]
    assert isinstance(value, int)  # the wire type was checked
    return value


def _blob(fields: dict[int, list[int | bytes]], number: int) -> bytes:
    value = fields.get(number, [b""])[0]
    assert isinstance(value, bytes)  # the wire type was checked
    return value


def _hash_op(value: int, what: str) -> HashOp:
    try:
        return HashOp(value)
    except ValueError:
        raise ProofError(f"{what}: hash op {value} is not supported") from None


def _decode_leaf(data: bytes) -> LeafOp:
    f = _fields(data, "leaf op", {1: _VARINT, 2: _VARINT, 3: _VARINT, 4: _VARINT, 5: _BYTES})
    try:
        length = LengthOp(_int(f, 4))
    except ValueError:
        raise ProofError(f"leaf op: length op {_int(f, 4)} is not supported") from None
    return LeafOp(
        hash=_hash_op(_int(f, 1), "leaf op"),
        prehash_key=_hash_op(_int(f, 2), "leaf op"),
        prehash_value=_hash_op(_int(f, 3), "leaf op"),
        length=length,
        prefix=_blob(f, 5),
    )


def _decode_inner(data: bytes) -> InnerOp:
    f = _fields(data, "inner op", {1: _VARINT, 2: _BYTES, 3: _BYTES})
    return InnerOp(hash=_hash_op(_int(f, 1), "inner op"), prefix=_blob(f, 2), suffix=_blob(f, 3))


def _decode_existence(data: bytes) -> ExistenceProof:
    f = _fields(data, "existence proof", {1: _BYTES, 2: _BYTES, 3: _BYTES, 4: _BYTES}, frozenset({4}))
    if 3 not in f:
        raise ProofError("existence proof: no leaf op")
    steps = [step for step in f.get(4, []) if isinstance(step, bytes)]
    return ExistenceProof(
        key=_blob(f, 1),
        value=_blob(f, 2),
        leaf=_decode_leaf(_blob(f, 3)),
        path=tuple(_decode_inner(step) for step in steps),
    )


def decode_proof(data: bytes) -> CommitmentProof:
    """The proof in a `CommitmentProof`'s protobuf bytes (exist or nonexist only)."""
    f = _fields(data, "commitment proof", {1: _BYTES, 2: _BYTES, 3: _BYTES, 4: _BYTES})
    if len(f) != 1:
        raise ProofError("commitment proof: exactly one of exist and nonexist must be set")
    if 1 in f:
        return _decode_existence(_blob(f, 1))
    if 2 not in f:
        raise ProofError("commitment proof: batch and compressed proofs are not supported")
    n = _fields(_blob(f, 2), "non-existence proof", {1: _BYTES, 2: _BYTES, 3: _BYTES})
    return NonExistenceProof(
        key=_blob(n, 1),
        left=_decode_existence(_blob(n, 2)) if 2 in n else None,
        right=_decode_existence(_blob(n, 3)) if 3 in n else None,
    )
