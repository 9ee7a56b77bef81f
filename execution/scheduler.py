"""Parallel execution of a block's txs: lanes, speculative runs, and a merge in block order whose
result is exactly that of serial execution (`execution.block.execute_txs` without lanes, which
stays the specification).

1. `plan_lanes`: the txs, in execution order, are dealt into one lane per worker and one for the
   main process by a key (the market of a tx's first market action, else the address it acts as): all txs of
   a key go to one lane in order, keys to the least loaded lane (the main process's counts less:
   `LOCAL_SHARE`), the biggest key first (ties by key).
2. `run_lane` (in a worker process on a replica of the state the tx phase starts from, or in the
   main process on the block view while the workers run theirs, `keep_books`): the
   lane's txs in order, each on its own view, as serial execution runs them, reporting a
   `TxOutcome`: result, changes, what it read (keys, and prefixes scanned or noted) and what it
   adds to the exchange context (rate-limit counts, touched owners).
3. `merge` (in the main process), in block order: a tx whose reads meet no key written by an
   earlier tx of another lane, nor one written differently by an earlier tx run again here, saw
   exactly the state serial execution gives it, so its outcome is taken: its changes go into the
   block view and the books, its context additions into the context. Any other tx, and every tx
   with a LIQUIDATE action (the liquidation's per-block counters are shared by all accounts and
   live outside the views), runs again on the block view.

Why that is serial execution: a tx's result and changes are a function of the values of what it
read (`tests/execution/test_read_sets.py` checks that the views record every read); a taken tx read
only keys whose value in its lane equals their value after all earlier txs in block order (no
other lane wrote them, and every earlier writer in its lane has its speculative changes as its
final ones). The context carried from tx to tx is the same: rate-limit counts are per owner, and
every tx of an owner writes the owner's account (its nonces), so a tx whose earlier same-owner txs
ran in another lane conflicts; touched owners are merged in block order; prices, staleness and
funding indexes do not change during the txs. Rate-limit counts are per acting address (a tx
acting as a subaccount or isolated account counts for that address, `_counted`), and every counted
placement writes that address's account record (its rate level), so the same holds for them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from consensus.app import ExecTxResult
from execution.actions import acting_addresses
from execution.exchange.books import Books
from execution.exchange.context import ExchangeContext
from execution.executor import execute_tx
from execution.state import Change, StateReader, StateView
from execution.tx import (
    AmendOrder,
    CancelAll,
    CancelOrder,
    Liquidate,
    PlaceOrder,
    PlaceScale,
    PlaceTrigger,
    Tx,
    UseIsolated,
    UseSubaccount,
)

MIN_PARALLEL_TXS = 32
"""Fewer txs than this run serially (the messages to the workers would cost more)."""
WORKER_SHARE, LOCAL_SHARE = 2, 3
"""How many txs the main process's lane is given for a worker's: a worker's tx also costs its
decoding there, the outcome's pickling both ways, and the replica's upkeep (measured with
`derivd bench exec --workers 1`: about 1.5 times a tx run in the main process)."""
MAX_LANE_SHARE_PERCENT = 75
"""A plan whose biggest lane holds more than this share of the txs runs serially (one hot market:
the lanes would wait for it)."""

_EVERYONE = 1 << 62
"""The lane bit of a write that no lane may have seen: an earlier tx's changes that differed when
it ran again in the main process (lanes are numbered below 62)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TxOutcome:
    """One tx run speculatively in a lane."""

    position: int
    """its index in the block's txs"""
    result: ExecTxResult
    changes: tuple[Change, ...]
    reads: frozenset[bytes]
    prefix_reads: frozenset[bytes]
    counts: tuple[tuple[tuple[bytes, int], int], ...]
    """the rate-limit counts of (owner, market) as this tx left them"""
    touched_owners: tuple[bytes, ...]
    """the owners whose positions its fills changed, in first-touch order"""


def lane_key(tx: Tx) -> tuple[int, bytes]:
    """The key that keeps txs together in a lane: (0, market id) of the first market action (a
    cancel-all of market 0 acting as an isolated account: its market), else (1, the address the
    first action that is not a switch acts as: `execution.actions.acting_addresses`)."""
    isolated: int | None = None
    for action in tx.actions:
        if isinstance(action, UseSubaccount):
            isolated = None
        elif isinstance(action, UseIsolated):
            isolated = action.market_id
        elif isinstance(action, PlaceOrder | CancelOrder | AmendOrder | PlaceTrigger | PlaceScale) or (
            isinstance(action, CancelAll) and action.market_id
        ):
            return 0, action.market_id.to_bytes(4, "big")
        elif isinstance(action, CancelAll) and isolated is not None and isolated < 2**32:
            return 0, isolated.to_bytes(4, "big")
    for action, acting in zip(tx.actions, acting_addresses(tx.sender, tx.actions), strict=True):
        if not isinstance(action, UseSubaccount | UseIsolated):
            return 1, acting.raw
    return 1, tx.sender.raw


def plan_lanes(txs: Sequence[tuple[int, Tx]], workers: int) -> list[list[int]]:
    """The txs' positions (given in execution order) dealt into `workers` + 1 lanes (module
    docstring): lane i < `workers` for worker i, the last for the main process, which is given
    `LOCAL_SHARE` txs for every `WORKER_SHARE` of a worker's. Each lane keeps execution order.
    Deterministic."""
    groups: dict[tuple[int, bytes], list[int]] = {}
    for position, tx in txs:
        groups.setdefault(lane_key(tx), []).append(position)
    lanes: list[list[int]] = [[] for _ in range(workers + 1)]
    # a lane's load is its size over its share; compared as size times the other share
    scale = [LOCAL_SHARE] * workers + [WORKER_SHARE]
    for _, positions in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0])):
        lightest = min(range(len(lanes)), key=lambda lane: (len(lanes[lane]) * scale[lane], lane))
        lanes[lightest].extend(positions)
    rank = {position: i for i, (position, _) in enumerate(txs)}
    return [sorted(lane, key=rank.__getitem__) for lane in lanes]


def worth_parallel(lanes: Sequence[Sequence[int]]) -> bool:
    """The cost model: enough txs, and no lane with most of them."""
    total = sum(len(lane) for lane in lanes)
    biggest = max((len(lane) for lane in lanes), default=0)
    return total >= MIN_PARALLEL_TXS and biggest * 100 <= total * MAX_LANE_SHARE_PERCENT


def _counted(tx: Tx) -> list[tuple[bytes, int]]:
    """The (acting address, market) pairs whose rate-limit count `tx` may change: each placement
    or amend counts for the address it acts as (`execution.actions.acting_addresses`)."""
    return [
        (acting.raw, action.market_id)
        for action, acting in zip(tx.actions, acting_addresses(tx.sender, tx.actions), strict=True)
        if isinstance(action, PlaceOrder | AmendOrder | PlaceTrigger | PlaceScale)
    ]


def run_lane(
    base: StateReader,
    books: Books,
    base_changes: Sequence[Change],
    txs: Sequence[tuple[int, Tx]],
    *,
    height: int,
    time: int,
    keep_books: bool = False,
) -> list[TxOutcome]:
    """Run `txs` (position, tx) in order on `base` with `base_changes` applied (what the block
    did before its txs), each on its own view; the books are changed as the txs go and set back
    to `base` at the end (with `keep_books`, only if a tx raised: the lane the main process runs,
    whose book changes `merge` then keeps)."""
    lane_view = StateView(base)
    for key, value in base_changes:
        if value is None:
            lane_view.delete(key)
        else:
            lane_view.put(key, value)
    books.apply(base_changes)
    ctx = ExchangeContext(height, books, live=True)
    outcomes: list[TxOutcome] = []
    try:
        for position, tx in txs:
            ctx.touched_owners = {}
            tx_view = StateView(lane_view)
            result = execute_tx(tx_view, tx, time, height, ctx)
            counts = ctx.counts
            outcomes.append(
                TxOutcome(
                    position=position,
                    result=result,
                    changes=tuple(tx_view.changes()),
                    reads=tx_view.read_set,
                    prefix_reads=tx_view.prefix_reads,
                    counts=tuple((key, counts[key]) for key in _counted(tx) if key in counts),
                    touched_owners=tuple(ctx.touched_owners),
                )
            )
            tx_view.apply_to(lane_view)
    except BaseException:
        books.apply((key, base.get(key)) for key in sorted(lane_view.write_set))
        raise
    if not keep_books:
        books.apply((key, base.get(key)) for key in sorted(lane_view.write_set))
    return outcomes


class Conflicts:
    """Which lanes wrote which keys so far in the merge: the check of a tx's reads against them."""

    __slots__ = ("_by_length", "_log", "_writers")

    def __init__(self) -> None:
        self._writers: dict[bytes, int] = {}  # key -> the lane bits of its writers
        self._by_length: dict[int, dict[bytes, int]] = {}  # prefix length -> prefix -> lane bits
        self._log: list[tuple[bytes, int]] = []

    def wrote(self, keys: Iterable[bytes], bit: int) -> None:
        writers = self._writers
        tables = self._by_length.items()
        for key in keys:
            writers[key] = writers.get(key, 0) | bit
            for length, table in tables:
                prefix = key[:length]
                if prefix in table:
                    table[prefix] |= bit
            self._log.append((key, bit))

    def _prefix_bits(self, prefix: bytes) -> int:
        table = self._by_length.setdefault(len(prefix), {})
        bits = table.get(prefix)
        if bits is None:
            bits = 0
            for key, bit in self._log:
                if key.startswith(prefix):
                    bits |= bit
            table[prefix] = bits
        return bits

    def hit(self, outcome: TxOutcome, lane: int) -> bool:
        """Whether `outcome` read a key that an earlier tx of another lane (or of no lane) wrote."""
        others = ~(1 << lane)
        writers = self._writers
        for key in outcome.reads:
            if writers.get(key, 0) & others:
                return True
        return any(self._prefix_bits(prefix) & others for prefix in outcome.prefix_reads)


def _keys(changes: Iterable[Change]) -> list[bytes]:
    return [key for key, _ in changes]


def merge(
    view: StateView,
    ctx: ExchangeContext,
    order: Sequence[int],
    checked: Sequence[Tx | ExecTxResult],
    outcomes: dict[int, TxOutcome],
    lane_of: dict[int, int],
    *,
    height: int,
    time: int,
    in_books: int | None = None,
) -> tuple[list[ExecTxResult], int]:
    """Step 3 (module docstring): the results in the block's tx order, and how many txs ran
    again. `ctx` is the live context of the block's txs (its books are changed). The books already
    hold the changes of lane `in_books` (run here with `keep_books`): its outcomes, when taken,
    are not applied to them again, and before the first tx runs again the books are set back to
    `view` at every key that lane's outcomes not yet taken wrote (a book is a function of the
    records: `OrderBook.put`). Until then the books and `view` agree on every book key because
    no two lanes both have a taken write of one: an order or trigger record is written only after
    its market's book was read (`ExchangeContext.book` notes the prefix), an order-id counter only
    after it was read (`take_order_id`), so the later writer in block order conflicts."""
    assert ctx.books is not None
    books = ctx.books
    conflicts = Conflicts()
    results: list[ExecTxResult | None] = [None] * len(checked)
    again = 0
    for step, index in enumerate(order):
        item = checked[index]
        if not isinstance(item, Tx):
            results[index] = item
            continue
        outcome = outcomes[index]
        lane = lane_of[index]
        if any(isinstance(action, Liquidate) for action in item.actions) or conflicts.hit(outcome, lane):
            if in_books is not None:
                books.apply(_unmerged(view, order[step:], outcomes, lane_of, in_books))
                in_books = None
            tx_view = StateView(view)
            results[index] = execute_tx(tx_view, item, time, height, ctx)
            changes = tx_view.changes()
            tx_view.apply_to(view)
            same = tuple(changes) == outcome.changes
            conflicts.wrote(
                _keys(changes) if same else {*_keys(changes), *_keys(outcome.changes)},
                1 << lane if same else _EVERYONE,
            )
            again += 1
            continue
        for key, value in outcome.changes:
            if value is None:
                view.delete(key)
            else:
                view.put(key, value)
        if lane != in_books:
            books.apply(outcome.changes)
        ctx.counts.update(outcome.counts)
        touched = ctx.touched_owners
        for owner in outcome.touched_owners:
            touched[owner] = None
        conflicts.wrote(_keys(outcome.changes), 1 << lane)
        results[index] = outcome.result
    return [result for result in results if result is not None], again


def _unmerged(
    view: StateView,
    rest: Sequence[int],
    outcomes: dict[int, TxOutcome],
    lane_of: dict[int, int],
    lane: int,
) -> list[Change]:
    """(key, value in `view`) of every key written by the outcomes of `lane` among `rest`."""
    keys = {key for index in rest if lane_of.get(index) == lane for key, _ in outcomes[index].changes}
    return [(key, view.get(key)) for key in sorted(keys)]
