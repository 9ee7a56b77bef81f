"""The event index (`[tx_index] indexer = "kv"`): transactions and blocks found by their events.

Each committed height adds, in the height's own batch (a `HeightRecorder` of the executor), one
entry per indexed attribute (`EventAttribute.index`) of its transactions' events and of its
finalize-block events, and one entry per transaction; the layouts are `storage.schema`'s `i:`
keys. The index covers a contiguous range of heights `[base, height]`: heights the block store
prunes leave it in the same batch, and `catch_up` indexes what is stored but not yet indexed (a
node that ran with `indexer = "null"`, or a restored one).

`search_txs` and `search_blocks` answer a `node.query.Query`: `tx.height` / `block.height` bound
the heights, `tx.hash` names one transaction, and the conditions on one event type must all hold
in one event of that type (CometBFT 0.38's rule), so `order_filled.maker = 'ab..' AND
order_filled.market = 'BTC-PERP'` finds that maker's fills on that market.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator

from consensus.app import Event
from consensus.execution import BlockResults
from consensus.types import Block
from node.query import (
    BLOCK_HEIGHT_TAG,
    EVENT_TYPE_TAG,
    TX_HASH_TAG,
    TX_HEIGHT_TAG,
    Condition,
    Kind,
    Op,
    Query,
)
from primitives.codec import decode, encode, field_int, field_list
from primitives.hashing import sha256
from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database, WriteBatch

MAX_SCAN = 2_000_000
"""index entries one search reads at most; a query that needs more is refused as too broad"""

CATCH_UP_BATCH = 100
"""heights `catch_up` indexes per write"""

Position = tuple[int, ...]
"""(height, tx index) of a transaction, (height,) of a block"""


class SearchError(ValueError):
    """A query this index cannot answer (too broad); the message says why."""


def _entries(prefix: bytes, events: Iterable[Event]) -> Iterator[tuple[int, bytes]]:
    """(event index, key up to the height) of each indexed attribute of `events` under `prefix`."""
    head, value_part = schema.index_attribute_head, schema.index_value
    for number, event in enumerate(events):
        if not event.type:
            continue
        for attribute in event.attributes:
            if attribute.index and attribute.key:
                yield number, head(prefix, event.type, attribute.key) + value_part(attribute.value)


class EventIndex:
    def __init__(
        self, db: Database, blocks: BlockStore, load_results: Callable[[int], BlockResults | None]
    ) -> None:
        self._db = db
        self._blocks = blocks
        self._load_results = load_results
        raw = db.get(schema.INDEX_META)
        if raw is None:
            self.base, self.height = 0, 0
        else:
            fields = field_list(decode(raw), "event index range", 2)
            self.base, self.height = field_int(fields[0], "base"), field_int(fields[1], "height")
        self._pending: tuple[int, int] | None = None

    # -- writing -------------------------------------------------------------------------------

    def record(self, batch: WriteBatch, block: Block, results: BlockResults) -> None:
        """Index the block at the next height into its batch, and drop the heights the block
        store prunes in it."""
        height = block.header.height
        base, top = self._pending or (self.base, self.height)
        if top and height != top + 1:
            # not contiguous (indexing was off for a while): start again from this height
            self._drop(batch, base, top + 1)
            base = 0
        self._add(batch, height, block.txs, results)
        base = base or height
        prune_to = min(self._blocks.pending_base, height)
        if prune_to > base:
            self._drop(batch, base, prune_to)
            base = prune_to
        self._pending = (base, height)
        batch.put(schema.INDEX_META, encode([base, height]))

    def written(self) -> None:
        if self._pending is not None:
            self.base, self.height = self._pending
            self._pending = None

    def catch_up(self) -> int:
        """Index the stored blocks above the indexed range (all stored ones if it is not
        contiguous with them); returns how many heights were indexed."""
        low, top = self._blocks.base, self._blocks.height
        start = max(low, self.height + 1) if self.height and self.height + 1 >= low else low
        done = 0
        height = start
        while top and height <= top:
            batch = WriteBatch()
            for h in range(height, min(top, height + CATCH_UP_BATCH - 1) + 1):
                raw = self._blocks.load_block(h)
                results = self._load_results(h)
                if raw is None or results is None:
                    raise RuntimeError(f"block {h} or its results are missing from the block store")
                self.record(batch, Block.decode(raw), results)
                done += 1
            self._db.write(batch, sync=False)
            self.written()
            height += CATCH_UP_BATCH
        return done

    def _add(self, batch: WriteBatch, height: int, txs: Iterable[bytes], results: BlockResults) -> None:
        tx_prefix, block_prefix = schema.INDEX_TX_ATTRIBUTE_PREFIX, schema.INDEX_BLOCK_ATTRIBUTE_PREFIX
        put, position, event_number, empty = batch.put, schema.index_position, schema.index_event_number, b""
        for index, (tx, result) in enumerate(zip(txs, results.tx_results, strict=True)):
            put(schema.index_tx_key(height, index), sha256(tx))
            at = position(height, index)
            for number, head in _entries(tx_prefix, result.events):
                put(head + at + event_number(number), empty)
        for number, head in _entries(block_prefix, results.finalize.events):
            put(head + position(height, number), empty)

    def roll_back(self, batch: WriteBatch, height: int) -> None:
        """Take `height` out of the index in `batch` if it is the index's last height (`derivd
        rollback`); an index behind the block store is left for `catch_up`."""
        if self.height != height:
            return
        self._drop(batch, height, height + 1)
        if self.base >= height:
            batch.delete(schema.INDEX_META)
        else:
            batch.put(schema.INDEX_META, encode([self.base, height - 1]))

    def _drop(self, batch: WriteBatch, low: int, high: int) -> None:
        """Delete the entries of heights [low, high) (from their stored results)."""
        tx_prefix, block_prefix = schema.INDEX_TX_ATTRIBUTE_PREFIX, schema.INDEX_BLOCK_ATTRIBUTE_PREFIX
        position = schema.index_position
        for height in range(low, high):
            for key, _ in self._db.iterate(schema.INDEX_TX_PREFIX + schema.height_bytes(height)):
                batch.delete(key)
            results = self._load_results(height)
            if results is None:
                continue
            for index, result in enumerate(results.tx_results):
                for number, head in _entries(tx_prefix, result.events):
                    batch.delete(head + position(height, index, number))
            for number, head in _entries(block_prefix, results.finalize.events):
                batch.delete(head + position(height, number))

    # -- searching -----------------------------------------------------------------------------

    def tx_hash(self, height: int, index: int) -> bytes | None:
        return self._db.get(schema.index_tx_key(height, index))

    def search_txs(self, query: Query) -> list[tuple[int, int]]:
        """(height, tx index) of the indexed transactions that match `query`, ascending."""
        special, groups = _split(query, TX_HEIGHT_TAG, "Tx")
        if special is None:
            return []
        low, high, height_filters = special
        hashes = groups.pop(TX_HASH_TAG, [])
        found: set[Position] | None = None
        for hash_condition in hashes:
            if hash_condition.op is Op.EQ and hash_condition.kind is Kind.STRING:
                try:
                    where = self._blocks.find_tx(bytes.fromhex(hash_condition.text))
                except ValueError:
                    return []
                found = {where} if where is not None else set()
                break
        found = self._intersect_groups(schema.INDEX_TX_ATTRIBUTE_PREFIX, groups, low, high, found)
        if found is None:
            found = set(self._all_txs(low, high))
        out: list[tuple[int, int]] = []
        for position in sorted(found):
            height, index = position
            if not (low <= height <= high and all(c.holds(str(height)) for c in height_filters)):
                continue
            if hashes:
                raw = self.tx_hash(height, index)
                if raw is None or not all(c.holds(raw.hex().upper()) or c.holds(raw.hex()) for c in hashes):
                    continue
            out.append((height, index))
        return out

    def search_blocks(self, query: Query) -> list[int]:
        """The indexed heights whose block matches `query`, ascending."""
        special, groups = _split(query, BLOCK_HEIGHT_TAG, "NewBlock")
        if special is None:
            return []
        low, high, height_filters = special
        found = self._intersect_groups(schema.INDEX_BLOCK_ATTRIBUTE_PREFIX, groups, low, high, None)
        heights: Iterable[int]
        if found is None:
            heights = range(max(low, self.base), min(high, self.height) + 1) if self.height else ()
        else:
            heights = sorted(p[0] for p in found)
        return [h for h in heights if low <= h <= high and all(c.holds(str(h)) for c in height_filters)]

    def _all_txs(self, low: int, high: int) -> Iterator[Position]:
        start = schema.INDEX_TX_PREFIX + schema.height_bytes(min(max(low, 0), _NO_HEIGHT))
        scanned = 0
        for key, _ in self._db.iterate(schema.INDEX_TX_PREFIX, start=start):
            position = key[len(schema.INDEX_TX_PREFIX) :]
            height = schema.height_from_bytes(position[: schema.HEIGHT_SIZE])
            if height > high:
                return
            scanned = _count(scanned)
            yield height, int.from_bytes(position[schema.HEIGHT_SIZE :], "big")

    def _intersect_groups(
        self,
        prefix: bytes,
        groups: dict[str, list[Condition]],
        low: int,
        high: int,
        found: set[Position] | None,
    ) -> set[Position] | None:
        """The positions (without the event index) where every event type's conditions hold in
        one of its events, within `found` if given; None if there are no conditions. The most
        selective conditions (equalities to a string) are read first."""
        for _, conditions in sorted(groups.items(), key=lambda item: _breadth(item[1])):
            events: set[Position] | None = None
            for condition in sorted(conditions, key=_breadth_one):
                matches = set(self._matching(prefix, condition, low, high, events))
                events = matches if events is None else events & matches
                if not events:
                    return set()
            assert events is not None
            positions = {p[:-1] for p in events}
            found = positions if found is None else found & positions
            if not found:
                return set()
        return found

    def _matching(
        self, prefix: bytes, condition: Condition, low: int, high: int, within: set[Position] | None
    ) -> Iterator[Position]:
        """The event positions (height, [tx index,] event index) where `condition` holds."""
        exact = condition.op is Op.EQ and condition.kind is Kind.STRING
        scan_prefix = schema.index_attribute_prefix(prefix, condition.tag, condition.text if exact else None)
        scanned = 0
        for key, _ in self._db.iterate(scan_prefix):
            scanned = _count(scanned)
            value, height, positions = schema.split_index_attribute_key(prefix, key)
            if not low <= height <= high:
                continue
            position = (height, *positions)
            if within is not None and position not in within:
                continue
            if exact or condition.holds(value):
                yield position


def _count(scanned: int) -> int:
    if scanned >= MAX_SCAN:
        raise SearchError(f"query too broad: it reads more than {MAX_SCAN} index entries; narrow it")
    return scanned + 1


def _breadth_one(condition: Condition) -> int:
    return 0 if condition.op is Op.EQ and condition.kind is Kind.STRING else 1


def _breadth(conditions: list[Condition]) -> int:
    return min(_breadth_one(c) for c in conditions)


_NO_HEIGHT = 2**63 - 1


def _split(
    query: Query, height_tag: str, event_name: str
) -> tuple[tuple[int, int, list[Condition]] | None, dict[str, list[Condition]]]:
    """The query's height bounds `(low, high, conditions the bounds do not capture)` (None if
    it cannot match: a `tm.event` other than `event_name`) and its other conditions by event
    type (`tx.hash` conditions under that tag)."""
    low, high = 0, _NO_HEIGHT
    filters: list[Condition] = []
    groups: dict[str, list[Condition]] = defaultdict(list)
    for condition in query.conditions:
        if condition.tag == EVENT_TYPE_TAG:
            if not condition.holds(event_name):
                return None, {}
        elif condition.tag == height_tag:
            bound = _height_bound(condition)
            if bound is None:
                filters.append(condition)
            else:
                low, high = max(low, bound[0]), min(high, bound[1])
        elif condition.tag == TX_HASH_TAG and height_tag == TX_HEIGHT_TAG:
            groups[TX_HASH_TAG].append(condition)
        elif "." not in condition.tag:
            return None, {}  # no event attribute has a tag without a type
        else:
            groups[condition.tag.rsplit(".", 1)[0]].append(condition)
    return (low, high, filters), dict(groups)


def _height_bound(condition: Condition) -> tuple[int, int] | None:
    """The heights [low, high] an integer comparison of the height admits (None: not one)."""
    if condition.kind is not Kind.NUMBER or condition.number.denominator != 1:
        return None
    n = int(condition.number)
    match condition.op:
        case Op.EQ:
            return n, n
        case Op.LT:
            return 0, n - 1
        case Op.LE:
            return 0, n
        case Op.GT:
            return n + 1, _NO_HEIGHT
        case Op.GE:
            return n, _NO_HEIGHT
        case Op.CONTAINS | Op.EXISTS:
            return None
