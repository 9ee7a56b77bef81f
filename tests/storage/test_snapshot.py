"""Snapshots of the state tree: made, checked and restored into an empty database with the same
root and reads; a manifest or chunk that lies is refused with its index."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from primitives import codec
from storage import schema
from storage.db import Database, WriteBatch
from storage.snapshot import CHUNKS, Manifest, Restore, SnapshotError, make_chunk, make_manifest, read_chunk
from storage.statetree import StateTree


def _tree(path: Path, state: dict[bytes, bytes], height: int = 7) -> StateTree:
    db = Database(path)
    tree = StateTree(db)
    tree.apply(height - 1, [(b"a:old", b"gone")])
    tree.apply(height, [*state.items(), (b"a:old", None)])
    batch = WriteBatch()
    tree.flush(batch)
    db.write(batch)
    tree.apply(height + 1, [(b"a:later", b"not in the snapshot")])  # a newer version, staged
    return tree


def _restore(path: Path, tree: StateTree, height: int) -> tuple[Database, StateTree]:
    manifest = Manifest.decode(make_manifest(tree, height).encode())
    manifest.check(tree.root_at(height))
    db = Database(path)
    fresh = StateTree(db)
    restore = Restore(fresh, manifest)
    for index in reversed(range(CHUNKS)):  # any order
        restore.add(index, make_chunk(tree, height, index))
    db.write(restore.finish())
    return db, StateTree(db)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.dictionaries(st.binary(max_size=6).map(b"a:".__add__), st.binary(min_size=1, max_size=4), max_size=400)
)
def test_a_restored_snapshot_is_the_same_state(tmp_path: Path, state: dict[bytes, bytes]) -> None:
    n = len(list(tmp_path.iterdir()))
    tree = _tree(tmp_path / f"a{n}", state)
    db, restored = _restore(tmp_path / f"b{n}", tree, 7)
    assert restored.version == 7 and restored.root_hash == tree.root_at(7)
    flat = dict(db.iterate(schema.APP_PREFIX))
    assert flat == state
    for key in [*list(state)[:20], b"a:absent", b"a:old", b"a:later"]:
        assert restored.get(key, 7) == state.get(key)
    restored.apply(8, [(b"a:next", b"1")])  # it goes on like any tree
    assert restored.get(b"a:next", 8) == b"1" and restored.get(b"a:next", 7) is None


def test_lies_are_refused_with_their_index(tmp_path: Path) -> None:
    state = {b"a:key%d" % i: b"value%d" % i for i in range(3000)}
    tree = _tree(tmp_path / "a", state)
    manifest = make_manifest(tree, 7)
    manifest.check(tree.root_at(7))
    with pytest.raises(SnapshotError, match="another app hash"):
        manifest.check(b"\x01" * 32)
    forged_entries = list(manifest.entries)
    forged_entries[3] = (2, b"\x02" * 32)
    forged = Manifest(height=7, root=manifest.root, entries=tuple(forged_entries))
    with pytest.raises(SnapshotError, match="do not combine to the app hash"):
        forged.check(manifest.root)
    chunk = make_chunk(tree, 7, 5)
    pairs = codec.decode(chunk)
    assert isinstance(pairs, list) and len(pairs) > 2
    changed = codec.encode([pairs[0], [pairs[1][0], b"lie"], *pairs[2:]])  # type: ignore[index]
    dropped = codec.encode(pairs[1:])
    stranger = make_chunk(tree, 7, 6)
    for raw, message in [
        (changed, "does not rebuild"),
        (dropped, "does not rebuild"),
        (stranger, "not its own"),
        (b"\xff", "malformed"),
        (codec.encode([*pairs, pairs[0]]), "twice"),
    ]:
        with pytest.raises(SnapshotError, match=f"chunk 5 .*{message}|chunk 5 {message}"):
            read_chunk(manifest, 5, raw)
    db = Database(tmp_path / "b")
    restore = Restore(StateTree(db), manifest)
    with pytest.raises(SnapshotError, match="does not rebuild"):
        restore.add(5, changed)
    restore.add(5, chunk)  # the honest chunk from another peer is taken
    with pytest.raises(SnapshotError, match="255 chunks are missing"):
        restore.finish()
    assert not [k for k, _ in db.iterate(schema.STATE_NODE_PREFIX)], "nothing written before finish"


def test_an_empty_or_tiny_state(tmp_path: Path) -> None:
    for n, state in enumerate([{}, {b"a:one": b"1"}, {b"a:one": b"1", b"a:two": b"2"}]):
        tree = _tree(tmp_path / f"a{n}", state)
        _, restored = _restore(tmp_path / f"b{n}", tree, 7)
        assert restored.root_hash == tree.root_at(7)
