"""The state view: reads through parents, read and write sets, sorted changes, merging and
rollback by dropping; the committed-state adapter over LevelDB and its unwritten overlay."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from execution.state import CommittedState, CountingView, StateView
from storage.db import Database, WriteBatch


class DictState:
    def __init__(self, data: dict[bytes, bytes]) -> None:
        self.data = data

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        low = prefix if start is None else start
        return sorted((k, v) for k, v in self.data.items() if k.startswith(prefix) and k >= low)


def test_reads_writes_and_sets() -> None:
    view = StateView(DictState({b"a": b"1", b"b": b"2"}))
    assert view.get(b"a") == b"1"
    assert view.get(b"zz") is None
    view.put(b"c", b"3")
    view.delete(b"b")
    assert view.get(b"c") == b"3"  # own write: not a read of the parent
    assert view.get(b"b") is None
    assert view.read_set == frozenset({b"a", b"zz"})
    assert view.write_set == frozenset({b"b", b"c"})


def test_changes_are_sorted_by_key_whatever_the_write_order() -> None:
    view = StateView(DictState({}))
    for key in (b"m", b"a", b"z", b"b"):
        view.put(key, key * 2)
    view.delete(b"c")
    view.put(b"m", b"last")
    assert view.changes() == [(b"a", b"aa"), (b"b", b"bb"), (b"c", None), (b"m", b"last"), (b"z", b"zz")]


def test_apply_to_merges_and_dropping_rolls_back() -> None:
    base = StateView(DictState({b"k": b"old", b"gone": b"x"}))
    child = StateView(base)
    child.put(b"k", b"new")
    child.delete(b"gone")
    assert base.get(b"k") == b"old"
    dropped = StateView(base)
    dropped.put(b"k", b"never")
    child.apply_to(base)
    assert base.get(b"k") == b"new"
    assert base.get(b"gone") is None
    assert base.changes() == [(b"gone", None), (b"k", b"new")]


def test_iterate_merges_stacked_views_and_records_what_it_scanned() -> None:
    base = StateView(DictState({b"p:1": b"a", b"p:2": b"b", b"p:3": b"c", b"q:1": b"x"}))
    base.put(b"p:0", b"new")
    base.delete(b"p:2")
    view = StateView(base)
    view.put(b"p:3", b"mine")
    view.put(b"p:5", b"five")
    view.put(b"q:2", b"other prefix")
    assert view.iterate(b"p:") == [(b"p:0", b"new"), (b"p:1", b"a"), (b"p:3", b"mine"), (b"p:5", b"five")]
    assert view.iterate(b"q:") == [(b"q:1", b"x"), (b"q:2", b"other prefix")]
    assert view.iterate(b"r:") == []
    assert view.prefix_reads == frozenset({b"p:", b"q:", b"r:"})
    # keys that came from the parent are reads; keys this view wrote are not
    assert view.read_set == frozenset({b"p:0", b"p:1", b"q:1"})
    assert base.prefix_reads == frozenset({b"p:", b"q:", b"r:"})
    view.delete(b"p:1")
    assert view.iterate(b"p:") == [(b"p:0", b"new"), (b"p:3", b"mine"), (b"p:5", b"five")]


def test_committed_state_overlays_the_last_commit(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    batch = WriteBatch()
    for key in (b"p:1", b"p:2", b"p:3", b"q:1"):
        batch.put(key, b"disk")
    db.write(batch)
    state = CommittedState(db)
    state.advance([(b"p:2", None), (b"p:4", b"mem"), (b"p:1", b"mem")])
    assert state.get(b"p:2") is None
    assert state.get(b"p:3") == b"disk"
    assert state.iterate(b"p:") == [(b"p:1", b"mem"), (b"p:3", b"disk"), (b"p:4", b"mem")]
    state.advance([])
    assert state.get(b"p:2") == b"disk"
    db.close()


def test_a_scan_from_a_start_key_sees_every_layer_from_there(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    batch = WriteBatch()
    for key in (b"p:1", b"p:3", b"p:5", b"q:1"):
        batch.put(key, b"disk")
    db.write(batch)
    state = CommittedState(db)
    state.advance([(b"p:0", b"mem"), (b"p:4", b"mem"), (b"p:5", None)])
    assert state.iterate(b"p:", start=b"p:2") == [(b"p:3", b"disk"), (b"p:4", b"mem")]
    view = StateView(state)
    view.put(b"p:1", b"view")
    view.put(b"p:6", b"view")
    view.delete(b"p:3")
    assert view.iterate(b"p:", start=b"p:2") == [(b"p:4", b"mem"), (b"p:6", b"view")]
    assert view.iterate(b"p:", start=b"p:") == view.iterate(b"p:")
    assert b"p:" in view.prefix_reads  # a ranged scan still depends on the whole prefix
    db.close()


def test_a_counting_view_counts_each_operation_and_each_key_listed() -> None:
    view = CountingView(DictState({b"a:1": b"x", b"a:2": b"y", b"b:1": b"z"}))
    view.get(b"a:1")
    view.put(b"a:3", b"w")
    view.delete(b"b:1")
    assert view.ops == 3
    assert len(view.iterate(b"a:")) == 3
    assert view.ops == 3 + 1 + 3 + 1  # the scan, its three keys, and the read of its own write
    view.iterate(b"a:", start=b"a:3")
    assert view.ops == 8 + 1 + 1 + 1


_keys = st.binary(min_size=1, max_size=7).map(lambda raw: bytes(b"ab:"[x % 3] for x in raw))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("put"), _keys, st.binary(min_size=1, max_size=2)),
        st.tuples(st.just("delete"), _keys, st.just(b"")),
        st.tuples(st.just("commit_child"), _keys, st.binary(min_size=1, max_size=2)),
        st.tuples(st.just("discard"), _keys, st.just(b"")),
        st.tuples(st.just("iterate"), _keys, st.just(b"")),
    ),
    max_size=40,
)


@given(
    base=st.dictionaries(_keys, st.binary(min_size=1, max_size=2), max_size=12),
    ops=_ops,
    prefixes=st.lists(_keys, max_size=6),
)
def test_iterate_matches_a_model_whatever_the_prefix_length(
    base: dict[bytes, bytes], ops: list[tuple[str, bytes, bytes]], prefixes: list[bytes]
) -> None:
    view = StateView(DictState(dict(base)))
    model = dict(base)
    for op, key, value in ops:
        if op == "put":
            view.put(key, value)
            model[key] = value
        elif op == "delete":
            view.delete(key)
            model.pop(key, None)
        elif op == "commit_child":  # a tx view merged into its parent
            child = StateView(view)
            child.put(key, value)
            child.apply_to(view)
            model[key] = value
        elif op == "iterate":  # between writes: what the view indexes then must stay right
            assert view.iterate(key) == sorted((k, v) for k, v in model.items() if k.startswith(key))
        else:  # block-local keys under `key` dropped, as if never written
            for dropped, _ in view.discard_prefix(key):
                del model[dropped]
            for written in [k for k in model if k.startswith(key) and k not in base]:
                del model[written]
            for restored in [k for k in base if k.startswith(key)]:
                model[restored] = base[restored]
    for prefix in [b"", *prefixes]:
        assert view.iterate(prefix) == sorted((k, v) for k, v in model.items() if k.startswith(prefix))


@dataclass(frozen=True)
class Raw:
    """A record that is its bytes."""

    raw: bytes

    def encode(self) -> bytes:
        return self.raw


def test_decoded_records_outlive_commits_that_do_not_change_them(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    batch = WriteBatch()
    for key in (b"k:1", b"k:2"):
        batch.put(key, b"v1")
    db.write(batch)
    state = CommittedState(db)
    decoded: list[bytes] = []

    def decode(raw: bytes) -> Raw:
        decoded.append(raw)
        return Raw(raw)

    first = state.get_record(b"k:1", decode)
    assert state.get_record(b"k:2", decode) == Raw(b"v1") and state.get_record(b"k:3", decode) is None
    state.advance([(b"k:2", b"v2"), (b"k:3", b"v3")])  # k:1 unchanged: kept, decoded once
    assert state.get_record(b"k:1", decode) is first
    assert state.get_record(b"k:2", decode) == Raw(b"v2") and state.get_record(b"k:3", decode) == Raw(b"v3")
    assert decoded == [b"v1", b"v1", b"v2", b"v3"]
    state.forget([b"k:1"])  # a replica's store changed it
    assert state.get_record(b"k:1", decode) is not first
    db.close()
