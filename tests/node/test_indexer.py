"""The event index (`node.indexer`) over a real LevelDB: searches equal a brute-force reference
over the same blocks, pruning leaves no entry of a pruned height, and `catch_up` indexes what the
block store holds."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.app import Event, EventAttribute, ExecTxResult, FinalizeBlockResult
from consensus.execution import BlockResults
from consensus.types import EMPTY_COMMIT
from node import indexer
from node.indexer import EventIndex, SearchError
from node.query import Query, parse
from primitives.hashing import sha256
from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database, WriteBatch
from tests.consensus.harness import keys, make_genesis

_SOLO = keys(1)[0]
_BASE = make_genesis([(_SOLO, 10)]).make_block([], [], EMPTY_COMMIT, _SOLO.address.raw)

TxEvents = tuple[Event, ...]


class Chain:
    """A block store and its event index, fed blocks as the executor feeds them (one batch per
    height: block, pruning, index)."""

    def __init__(self, path: Path, retain: int = 0, index: bool = True) -> None:
        self.db = Database(path)
        self.blocks = BlockStore(self.db)
        self.index = EventIndex(self.db, self.blocks, self.load_results) if index else None
        self.retain = retain
        self.kept: dict[int, tuple[list[bytes], list[TxEvents], TxEvents]] = {}

    def load_results(self, height: int) -> BlockResults | None:
        raw = self.blocks.load_results(height)
        return None if raw is None else BlockResults.decode(raw)

    def commit(self, txs: Sequence[tuple[bytes, TxEvents]], block_events: TxEvents = ()) -> int:
        height = self.blocks.height + 1
        block = replace(_BASE, header=replace(_BASE.header, height=height), txs=tuple(t for t, _ in txs))
        tx_results = tuple(ExecTxResult(events=e) for _, e in txs)
        results = BlockResults(height, tx_results, FinalizeBlockResult(tx_results, b"", block_events))
        batch = WriteBatch()
        self.blocks.save_block(
            batch,
            height,
            sha256(b"%d" % height),
            block.encode(),
            b"",
            results.encode(),
            [sha256(t) for t, _ in txs],
        )
        if self.retain and height > self.retain:
            self.blocks.prune(batch, height - self.retain + 1)
        if self.index is not None:
            self.index.record(batch, block, results)
        self.db.write(batch)
        self.blocks.mark_written()
        if self.index is not None:
            self.index.written()
        self.kept[height] = ([t for t, _ in txs], [e for _, e in txs], block_events)
        return height

    def index_keys(self) -> list[bytes]:
        return [k for k, _ in self.db.iterate(b"i:") if k != schema.INDEX_META]


# -- the reference ----------------------------------------------------------------------------------


def _event_holds(event: Event, conditions: list[Query]) -> bool:
    return all(
        any(
            a.index and f"{event.type}.{a.key}" == q.conditions[0].tag and q.conditions[0].holds(a.value)
            for a in event.attributes
        )
        for q in conditions
    )


def _events_match(query: Query, special: dict[str, str], events: Sequence[Event]) -> bool:
    """CometBFT 0.38's rule, by brute force: reserved tags against their value, and the
    conditions on one event type all in one event of that type."""
    groups: dict[str, list[Query]] = {}
    for c in query.conditions:
        if c.tag in special:
            if not c.holds(special[c.tag]):
                return False
        else:
            groups.setdefault(c.tag.rsplit(".", 1)[0], []).append(Query((c,)))
    return all(
        any(e.type == event_type and _event_holds(e, conds) for e in events)
        for event_type, conds in groups.items()
    )


def reference_txs(chain: Chain, query: Query) -> list[tuple[int, int]]:
    out = []
    for height, (txs, tx_events, _) in sorted(chain.kept.items()):
        if height < chain.blocks.base:
            continue
        for index, (tx, events) in enumerate(zip(txs, tx_events, strict=True)):
            tx_hash = sha256(tx).hex().upper()
            hash_conditions = [c for c in query.conditions if c.tag == "tx.hash"]
            rest = Query(tuple(c for c in query.conditions if c.tag != "tx.hash"))
            special = {"tm.event": "Tx", "tx.height": str(height)}
            if all(c.holds(tx_hash) for c in hash_conditions) and _events_match(rest, special, events):
                out.append((height, index))
    return out


def reference_blocks(chain: Chain, query: Query) -> list[int]:
    special = {"tm.event": "NewBlock"}
    return [
        h
        for h, (_, _, events) in sorted(chain.kept.items())
        if h >= chain.blocks.base and _events_match(query, special | {"block.height": str(h)}, events)
    ]


# -- generated chains and queries -------------------------------------------------------------------

TYPES = ("order_placed", "order_filled", "tx")
ATTRS = ("owner", "market", "price")
VALUES = ("a", "b", "7", "12", "100x", "-3")


def _attribute() -> st.SearchStrategy[EventAttribute]:
    return st.builds(EventAttribute, st.sampled_from(ATTRS), st.sampled_from(VALUES), st.booleans())


_event = st.builds(Event, st.sampled_from(TYPES), st.lists(_attribute(), max_size=3).map(tuple))
_tx_events = st.lists(_event, max_size=3).map(tuple)
_block = st.lists(st.tuples(st.binary(min_size=1, max_size=4), _tx_events), max_size=4)


@st.composite
def _condition_text(draw: st.DrawFn, height_tag: str) -> str:
    tag = draw(
        st.sampled_from([f"{t}.{a}" for t in TYPES for a in ATTRS] + [height_tag, "tm.event", "nokey"])
    )
    if tag == "tm.event":
        return f"tm.event = '{draw(st.sampled_from(['Tx', 'NewBlock', 'Vote']))}'"
    form = draw(st.sampled_from(["eq_str", "contains", "exists", "num"]))
    if form == "eq_str":
        return f"{tag} = '{draw(st.sampled_from(VALUES))}'"
    if form == "contains":
        return f"{tag} CONTAINS '{draw(st.sampled_from(['0', 'x', 'a']))}'"
    if form == "exists":
        return f"{tag} EXISTS"
    op = draw(st.sampled_from(["=", "<", "<=", ">", ">="]))
    return f"{tag} {op} {draw(st.sampled_from(['0', '2', '7', '7.5', '-3', '12']))}"


def _query(height_tag: str) -> st.SearchStrategy[Query]:
    return st.lists(_condition_text(height_tag), min_size=1, max_size=3).map(
        lambda cs: parse(" AND ".join(cs))
    )


@dataclass
class _Dirs:
    root: Path
    count: int = 0

    def fresh(self) -> Path:
        self.count += 1
        return self.root / f"db{self.count}"


@pytest.fixture
def dirs(tmp_path: Path) -> _Dirs:
    return _Dirs(tmp_path)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    blocks=st.lists(st.tuples(_block, _tx_events), min_size=1, max_size=6),
    retain=st.sampled_from([0, 2]),
    tx_queries=st.lists(_query("tx.height"), min_size=1, max_size=6),
    block_queries=st.lists(_query("block.height"), min_size=1, max_size=4),
)
def test_search_equals_reference(
    dirs: _Dirs,
    blocks: list[tuple[list[tuple[bytes, TxEvents]], TxEvents]],
    retain: int,
    tx_queries: list[Query],
    block_queries: list[Query],
) -> None:
    chain = Chain(dirs.fresh(), retain=retain)
    try:
        for txs, block_events in blocks:
            chain.commit(txs, block_events)
        assert chain.index is not None
        assert (chain.index.base, chain.index.height) == (chain.blocks.base, chain.blocks.height)
        for query in tx_queries:
            assert chain.index.search_txs(query) == reference_txs(chain, query), str(query)
        for query in block_queries:
            assert chain.index.search_blocks(query) == reference_blocks(chain, query), str(query)
    finally:
        chain.db.close()


def _owner(name: str) -> Event:
    return Event("order_placed", (EventAttribute("owner", name), EventAttribute("size", "5", index=False)))


def test_tx_hash_and_unindexed_attributes(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    assert chain.index is not None
    chain.commit([(b"t1", (_owner("alice"),)), (b"t2", (_owner("bob"),))])
    chain.commit([(b"t1", (_owner("alice"),))])  # the same tx again: the hash names the latest
    t2 = sha256(b"t2").hex()
    assert chain.index.search_txs(parse(f"tx.hash = '{t2.upper()}'")) == [(1, 1)]
    assert chain.index.search_txs(parse(f"tx.hash = '{t2}'")) == [(1, 1)]  # either case
    assert chain.index.search_txs(parse("tx.hash = 'zz'")) == []
    assert chain.index.search_txs(parse(f"tx.hash = '{sha256(b't1').hex()}'")) == [(2, 0)]
    assert chain.index.search_txs(parse("order_placed.owner = 'alice'")) == [(1, 0), (2, 0)]
    assert chain.index.search_txs(parse("order_placed.size = 5")) == []  # not indexed
    assert chain.index.tx_hash(1, 1) == sha256(b"t2")


def test_conditions_on_one_event_type_hold_in_one_event(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    assert chain.index is not None
    two = (
        Event("order_placed", (EventAttribute("owner", "a"), EventAttribute("market", "x"))),
        Event("order_placed", (EventAttribute("owner", "b"), EventAttribute("market", "y"))),
    )
    chain.commit([(b"t1", two)])
    assert chain.index.search_txs(parse("order_placed.owner = 'a' AND order_placed.market = 'x'")) == [(1, 0)]
    assert chain.index.search_txs(parse("order_placed.owner = 'a' AND order_placed.market = 'y'")) == []
    # on two event types, each holds in an event of its own type
    transfer = Event("transfer", (EventAttribute("recipient", "a"),))
    chain.commit([(b"t2", (*two, transfer))])
    assert chain.index.search_txs(parse("order_placed.market = 'y' AND transfer.recipient = 'a'")) == [(2, 0)]


def test_height_bounds(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db")
    assert chain.index is not None
    for n in range(4):
        chain.commit([(b"tx%d" % n, (_owner("alice"),))], (_owner("block"),))
    heights = {
        "tx.height < 2": [1],
        "tx.height <= 2": [1, 2],
        "tx.height > 2": [3, 4],
        "tx.height >= 4": [4],
        "tx.height = 3": [3],
        "tx.height > 1.5 AND tx.height < 3.5": [2, 3],
    }
    for text, expected in heights.items():
        assert [h for h, _ in chain.index.search_txs(parse(text))] == expected, text
    assert chain.index.search_blocks(parse("block.height >= 1")) == [1, 2, 3, 4]
    assert chain.index.search_blocks(parse("block.height > 2")) == [3, 4]
    assert chain.index.search_blocks(parse("order_placed.owner = 'block' AND block.height < 3")) == [1, 2]


def test_pruning_leaves_no_entry_of_a_pruned_height(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "db", retain=3)
    assert chain.index is not None
    for n in range(8):
        chain.commit([(b"tx%d" % n, (_owner("alice"), _owner(f"o{n}")))], (_owner(f"b{n}"),))
    assert (chain.blocks.base, chain.index.base, chain.index.height) == (6, 6, 8)
    fresh = Chain(tmp_path / "fresh")
    for n in range(5, 8):
        fresh.commit([(b"tx%d" % n, (_owner("alice"), _owner(f"o{n}")))], (_owner(f"b{n}"),))
    # the same entries as a chain of the retained blocks alone (heights shifted by 5)
    assert (
        len(chain.index_keys()) == len(fresh.index_keys()) == 3 * (1 + 2 + 1)
    )  # per height: the tx, two attributes, a block attribute
    assert [h for h, _ in chain.index.search_txs(parse("order_placed.owner = 'alice'"))] == [6, 7, 8]


def test_catch_up_indexes_the_stored_blocks(tmp_path: Path) -> None:
    """A node that ran with `indexer = "null"` indexes what it stored once the index is on, and
    the index goes on from there at each height."""
    off = Chain(tmp_path / "db", index=False)
    for n in range(5):
        off.commit([(b"tx%d" % n, (_owner("alice"),))])
    on = EventIndex(off.db, off.blocks, off.load_results)
    assert on.search_txs(parse("order_placed.owner = 'alice'")) == []
    assert on.catch_up() == 5
    assert on.catch_up() == 0
    assert (on.base, on.height) == (1, 5)
    off.index = on
    off.commit([(b"tx5", (_owner("alice"),))])
    assert [h for h, _ in on.search_txs(parse("order_placed.owner = 'alice'"))] == [1, 2, 3, 4, 5, 6]
    reopened = EventIndex(off.db, off.blocks, off.load_results)
    assert (reopened.base, reopened.height) == (1, 6)


def test_a_query_too_broad_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = Chain(tmp_path / "db")
    assert chain.index is not None
    for n in range(4):
        chain.commit([(b"tx%d" % n, (_owner("alice"),))])
    monkeypatch.setattr(indexer, "MAX_SCAN", 3)
    with pytest.raises(SearchError, match="query too broad"):
        chain.index.search_txs(parse("order_placed.owner = 'alice'"))
    with pytest.raises(SearchError, match="query too broad"):
        chain.index.search_txs(parse("tx.height > 0"))
    assert chain.index.search_txs(parse("tx.height = 2")) == [(2, 0)]
