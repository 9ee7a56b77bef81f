"""Tests of storage.statetree: roots against a reference written from the docstring's definition,
history independence, reads and proofs at every kept version, persistence, pruning."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives.ics23 import (
    ExistenceProof,
    NonExistenceProof,
    ProofError,
    decode_proof,
    encode_proof,
    verify_membership,
    verify_non_membership,
)
from storage import schema
from storage.db import Database, WriteBatch
from storage.statetree import EMPTY, PROOF_SPEC, StateTree, TreeError

# -- the reference: the tree's root from its definition, recomputed from scratch ------------------


def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _place(key: bytes) -> list[int]:
    return [int(digit, 16) for digit in _h(key).hex()]


def reference_root(state: dict[bytes, bytes]) -> bytes:
    def subtree(keys: list[bytes], depth: int) -> bytes:
        if not keys:
            return EMPTY
        if len(keys) == 1:
            key = keys[0]
            return _h(b"\x00" + b"\x20" + _h(key) + b"\x20" + _h(state[key]))
        children = [subtree([k for k in keys if _place(k)[depth] == slot], depth + 1) for slot in range(16)]
        return _h(b"\x01" + b"".join(children))

    return subtree(sorted(state), 0)


# -- helpers ------------------------------------------------------------------------------------------


def _commit(db: Database, tree: StateTree) -> None:
    batch = WriteBatch()
    tree.flush(batch)
    db.write(batch)


def _check_proof(tree: StateTree, key: bytes, version: int, state: dict[bytes, bytes]) -> None:
    root = tree.root_at(version)
    proof = decode_proof(encode_proof(tree.prove(key, version)))
    if not state:  # no leaf to stand beside: ICS23 has no absence proof in an empty tree
        assert proof == NonExistenceProof(key=key, left=None, right=None)
        with pytest.raises(ProofError, match="needs a left or a right neighbour"):
            verify_non_membership(PROOF_SPEC, root, proof, key)
    elif key in state:
        verify_membership(PROOF_SPEC, root, proof, key, state[key])
        with pytest.raises(ProofError):
            verify_membership(PROOF_SPEC, root, proof, key, state[key] + b"!")
        with pytest.raises(ProofError):
            verify_non_membership(PROOF_SPEC, root, proof, key)
    else:
        verify_non_membership(PROOF_SPEC, root, proof, key)
        with pytest.raises(ProofError):
            verify_membership(PROOF_SPEC, root, proof, key, b"x")


KEYS = [b"k%d" % i for i in range(48)]

versions = st.lists(
    st.dictionaries(
        st.sampled_from(KEYS), st.one_of(st.none(), st.binary(min_size=1, max_size=3)), max_size=20
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=versions, flush_every=st.integers(1, 3))
def test_roots_reads_and_proofs_match_the_reference(
    tmp_path: Path, history: list[dict[bytes, bytes | None]], flush_every: int
) -> None:
    db = Database(tmp_path / f"db{len(list(tmp_path.iterdir()))}")
    tree = StateTree(db)
    state: dict[bytes, bytes] = {}
    snapshots: dict[int, dict[bytes, bytes]] = {}
    for version, changes in enumerate(history, start=1):
        root = tree.apply(version, changes.items())
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        snapshots[version] = dict(state)
        assert root == reference_root(state)
        if version % flush_every == 0:
            _commit(db, tree)
    for version, snapshot in snapshots.items():
        assert tree.root_at(version) == reference_root(snapshot)
        for key in KEYS[:24]:
            assert tree.get(key, version) == snapshot.get(key)
            _check_proof(tree, key, version, snapshot)
    db.close()


def test_the_shape_depends_on_the_keys_only(tmp_path: Path) -> None:
    """Built at once, or key by key and with deletes on the way, the tree has one root."""
    state = {key: b"v" + key for key in KEYS}
    at_once = StateTree(Database(tmp_path / "a"))
    one_by_one = StateTree(Database(tmp_path / "b"))
    at_once.apply(1, state.items())
    version = 0
    for key in reversed(KEYS):
        version += 1
        one_by_one.apply(version, [(key, b"tmp"), (b"gone" + key, b"x")])
        version += 1
        one_by_one.apply(version, [(key, state[key]), (b"gone" + key, None)])
    assert one_by_one.root_hash == at_once.root_hash == reference_root(state)


def test_deleting_down_to_one_key_lifts_its_leaf_to_the_root(tmp_path: Path) -> None:
    tree = StateTree(Database(tmp_path))
    tree.apply(1, [(key, b"v") for key in KEYS])
    tree.apply(2, [(key, None) for key in KEYS[1:]])
    assert tree.root_hash == reference_root({KEYS[0]: b"v"})
    proof = tree.prove(KEYS[0], 2)
    assert isinstance(proof, ExistenceProof) and proof.path == ()
    absent = tree.prove(KEYS[1], 2)
    assert isinstance(absent, NonExistenceProof) and (absent.left is None) != (absent.right is None)
    verify_non_membership(PROOF_SPEC, tree.root_hash, absent, KEYS[1])
    tree.apply(3, [(KEYS[0], None)])
    assert tree.root_hash == EMPTY
    assert tree.get(KEYS[0], 3) is None


def test_unchanged_writes_write_nothing(tmp_path: Path) -> None:
    db = Database(tmp_path)
    tree = StateTree(db)
    tree.apply(1, [(key, b"v") for key in KEYS])
    _commit(db, tree)
    root = tree.root_hash
    tree.apply(2, [(KEYS[3], b"v"), (b"absent", None)])
    batch = WriteBatch()
    tree.flush(batch)
    assert tree.root_hash == root
    assert [key for key, _ in batch.ops] == [schema.state_root_key(2)]


def test_versions_survive_a_reopen(tmp_path: Path) -> None:
    db = Database(tmp_path)
    tree = StateTree(db)
    tree.apply(4, [(b"a", b"1"), (b"b", b"2")])
    tree.apply(5, [(b"a", None)])
    _commit(db, tree)
    again = StateTree(db)
    assert again.version == 5 and again.root_hash == tree.root_hash
    assert again.get(b"b", 4) == b"2" and again.get(b"a", 4) == b"1" and again.get(b"a", 5) is None
    again.apply(6, [(b"c", b"3")])
    assert again.root_hash == reference_root({b"b": b"2", b"c": b"3"})


def test_refusals(tmp_path: Path) -> None:
    db = Database(tmp_path)
    tree = StateTree(db)
    tree.apply(1, [(b"a", b"1"), (b"b", b"2")])
    with pytest.raises(ValueError, match="after version 1"):
        tree.apply(1, [])
    with pytest.raises(ValueError, match="non-empty"):
        tree.apply(2, [(b"a", b"")])
    with pytest.raises(TreeError, match="does not keep version 7"):
        tree.get(b"a", 7)
    _commit(db, tree)
    node_key = next(key for key, _ in db.iterate(schema.STATE_NODE_PREFIX))
    batch = WriteBatch()
    batch.put(node_key, b"\x00\xff")
    db.write(batch)
    with pytest.raises(TreeError, match="is malformed"):
        StateTree(db).get(b"a", 1)
    batch = WriteBatch()
    batch.put(schema.state_root_key(1), b"\x01" * 33)
    db.write(batch)
    with pytest.raises(TreeError, match="root record is malformed"):
        StateTree(db)


def _reachable(db: Database, version: int) -> set[bytes]:
    """The keys of the internal nodes the tree of `version` uses, walked from its root."""
    raw = db.get(schema.state_root_key(version))
    assert raw is not None
    found: set[bytes] = set()
    if raw[32:33] != b"\x00":
        return found  # empty, or one leaf
    stack = [(int.from_bytes(raw[33:41], "big"), b"")]
    while stack:
        node_version, path = stack.pop()
        key = schema.state_node_key(node_version, path)
        found.add(key)
        node = db.get(key)
        assert node is not None, f"version {version} lost node {key.hex()}"
        leaves, present = int.from_bytes(node[641:643], "big"), int.from_bytes(node[643:645], "big")
        for slot in range(16):
            child_version = int.from_bytes(node[513 + 8 * slot : 521 + 8 * slot], "big")
            if present >> slot & 1:
                assert node[1 + 32 * slot : 33 + 32 * slot] != EMPTY
            else:
                assert node[1 + 32 * slot : 33 + 32 * slot] == EMPTY and child_version == 0
            if present >> slot & 1 and not leaves >> slot & 1:
                stack.append((child_version, path + bytes((slot,))))
    return found


def test_pruning_keeps_exactly_the_nodes_of_the_kept_versions(tmp_path: Path) -> None:
    db = Database(tmp_path)
    tree = StateTree(db)
    states: dict[int, dict[bytes, bytes]] = {}
    state: dict[bytes, bytes] = {}
    for version in range(1, 31):
        changes = {
            KEYS[(version * 7 + i) % len(KEYS)]: (b"%d" % version if i % 4 else None) for i in range(9)
        }
        tree.apply(version, changes.items())
        for key, value in changes.items():
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        states[version] = dict(state)
        batch = WriteBatch()
        tree.flush(batch)
        tree.prune(batch, version - 4)  # keep the last 5 versions
        db.write(batch)
    kept = range(26, 31)
    used = set().union(*(_reachable(db, version) for version in kept))
    stored = {key for key, _ in db.iterate(schema.STATE_NODE_PREFIX)}
    assert stored == used
    for version in kept:
        assert all(tree.get(key, version) == states[version].get(key) for key in KEYS)
    with pytest.raises(TreeError, match="does not keep version 25"):
        tree.get(KEYS[0], 25)
