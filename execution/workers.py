"""Worker processes for `execution.scheduler`, kept warm across blocks.

Each worker holds a replica of the committed application state (`MemoryStore`, every key under
`schema.APP_PREFIX`) and books built from it. `WorkerPool.load` sends the replica once; after each
commit the app hands over the block's changes (`advance`): sent at once after a parallel block
(the workers apply them while the main process goes on; pipes keep the order), otherwise kept,
merged by key, until the next `run` sends them (a chain whose blocks the cost model keeps serial
costs the workers nothing). For a block, `send` gives each worker its lane (the raw
txs with their positions) and what the block changed before its txs, and `receive` collects the
lanes' `TxOutcome`s (`execution.scheduler.run_lane`; the main process runs one more lane itself in
between). A lane's book changes stay in the worker's books until the next commit says which to
keep (`Replica`).
Processes are started with "spawn" (no state inherited from a threaded parent) as daemons.
A worker that fails answers with its error; `run` raises `WorkerError` and the caller runs the
block serially (nothing of the main process was changed yet).
"""

from __future__ import annotations

import contextlib
import copyreg
import multiprocessing
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection

from sortedcontainers import SortedDict

from consensus.app import Event, EventAttribute, ExecTxResult
from execution.exchange.books import Books
from execution.exchange.orderbook import fast_constructor
from execution.scheduler import TxOutcome, run_lane
from execution.state import Change, CommittedState, StateReader
from execution.tx import Tx
from storage import schema

# Outcomes cross the pipe by the thousand per block: rebuilt through positional constructors
# rather than the dataclasses' generic `__setstate__` (about 3x less unpickling time in the main
# process). The reducers are registered wherever this module is imported (workers and main).
_new_attribute = fast_constructor(EventAttribute)
_new_event = fast_constructor(Event)
_new_result = fast_constructor(ExecTxResult)


def _attribute(key: str, value: str, index: bool) -> EventAttribute:
    return _new_attribute(key, value, index)


def _event(kind: str, attributes: tuple[EventAttribute, ...]) -> Event:
    return _new_event(kind, attributes)


def _result(code: int, log: str, data: bytes, codespace: str, events: tuple[Event, ...]) -> ExecTxResult:
    return _new_result(code, log, data, codespace, events)


copyreg.pickle(EventAttribute, lambda a: (_attribute, (a.key, a.value, a.index)))
copyreg.pickle(Event, lambda e: (_event, (e.type, e.attributes)))
copyreg.pickle(ExecTxResult, lambda r: (_result, (r.code, r.log, r.data, r.codespace, r.events)))


class WorkerError(RuntimeError):
    """A worker could not run its lane (its traceback is the message)."""


class MemoryStore:
    """A sorted in-memory key-value store with the reads of `execution.state.Store`."""

    __slots__ = ("_data",)

    def __init__(self, items: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self._data: SortedDict[bytes, bytes] = SortedDict(items)

    def get(self, key: bytes) -> bytes | None:
        return self._data.get(key)

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        data = self._data
        for key in data.irange(minimum=prefix if start is None else max(prefix, start)):
            if not key.startswith(prefix):
                return
            yield key, data[key]

    def apply(self, changes: Sequence[Change]) -> None:
        data = self._data
        for key, value in changes:
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Load:
    items: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Run:
    height: int
    time: int
    base_changes: list[Change]
    txs: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Advance:
    changes: list[Change]


@dataclass(frozen=True, slots=True)
class _Stop:
    pass


_Message = _Load | _Run | _Advance | _Stop


_UNSET = object()


class Replica:
    """A worker's copy of committed state and its books. A lane leaves the books as it changed them
    (`speculative`: the values the lane wrote); the next commit then mirrors only the keys whose
    committed value differs from the lane's (none when the merge took all of the lane's txs) and
    sets back the keys the lane wrote that the commit does not have. A lane that comes before any
    commit (its block was abandoned) first sets back what the previous lane wrote."""

    __slots__ = ("books", "committed", "speculative", "store")

    def __init__(self, items: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.store = MemoryStore(items)
        self.committed = CommittedState(self.store)
        self.books = Books.load(self.committed)
        self.speculative: dict[bytes, bytes | None] = {}

    def advance(self, changes: Sequence[Change]) -> None:
        """Make one commit's changes (or several, merged by key) the replica's state."""
        speculative, self.speculative = self.speculative, {}
        if speculative:
            committed = dict(changes)
            store = self.store
            self.books.apply(
                [(key, value) for key, value in changes if speculative.get(key, _UNSET) != value]
            )
            self.books.apply([(key, store.get(key)) for key in speculative if key not in committed])
        else:
            self.books.apply(changes)
        self.store.apply(changes)
        self.committed.forget(key for key, _ in changes)

    def run(self, message: _Run) -> list[TxOutcome]:
        """The outcomes of the lane of `message` (`execution.scheduler.run_lane`)."""
        if self.speculative:
            store = self.store
            self.books.apply([(key, store.get(key)) for key in self.speculative])
            self.speculative = {}
        txs = [(position, Tx.decode(raw)) for position, raw in message.txs]
        outcomes = run_lane(
            self.committed,
            self.books,
            message.base_changes,
            txs,
            height=message.height,
            time=message.time,
            keep_books=True,
        )
        speculative = dict(message.base_changes)
        for outcome in outcomes:
            speculative.update(outcome.changes)
        self.speculative = speculative
        return outcomes


def _serve(conn: Connection, setup: Callable[[], None] | None) -> None:
    """A worker's loop: one message at a time until `_Stop` (or the pipe closes); `setup` runs
    after each replica is loaded (the node's garbage-collector policy: `node.gcpolicy`)."""
    replica = Replica()
    while True:
        try:
            message: _Message = conn.recv()
        except EOFError:
            return
        if isinstance(message, _Stop):
            return
        try:
            if isinstance(message, _Load):
                replica = Replica(message.items)
                if setup is not None:
                    setup()
            elif isinstance(message, _Advance):
                replica.advance(message.changes)
            else:
                conn.send(replica.run(message))
        except Exception:  # the main process is told and runs the block serially
            conn.send(WorkerError(traceback.format_exc()))


class WorkerPool:
    """`workers` warm processes, each with a replica of committed state (module docstring)."""

    def __init__(self, workers: int, *, setup: Callable[[], None] | None = None) -> None:
        """`setup`: a module-level function (it is pickled by name) each worker runs after loading
        its replica."""
        if workers < 1:
            raise ValueError(f"a worker pool needs at least one worker, got {workers}")
        context = multiprocessing.get_context("spawn")
        self._conns: list[Connection] = []
        self._processes: list[multiprocessing.process.BaseProcess] = []
        for i in range(workers):
            parent, child = context.Pipe()
            process = context.Process(
                target=_serve, args=(child, setup), name=f"derivd-exec-{i}", daemon=True
            )
            process.start()
            child.close()
            self._conns.append(parent)
            self._processes.append(process)
        self._backlog: dict[bytes, bytes | None] = {}  # commits not yet sent, merged by key
        self._sent = 0  # lanes sent and not yet received

    @property
    def size(self) -> int:
        return len(self._conns)

    def load(self, state: StateReader) -> None:
        """Give every worker a replica of `state` (every application key)."""
        items = state.iterate(schema.APP_PREFIX)
        self._backlog.clear()
        for conn in self._conns:
            conn.send(_Load(items=items))

    def advance(self, changes: Sequence[Change], *, now: bool) -> None:
        """The replicas take one commit's changes: sent `now` (the workers apply them while the
        main process goes on; when the next block is likely parallel), or kept, merged by key with
        the changes kept before (so bounded by the state's size), until the next `run` (when the
        cost model keeps choosing serial, the workers then cost nothing)."""
        self._backlog.update(changes)
        if now:
            self._flush()

    def _flush(self) -> None:
        if not self._backlog:
            return
        message = _Advance(changes=sorted(self._backlog.items()))
        self._backlog.clear()
        for conn in self._conns:
            conn.send(message)

    def send(
        self,
        lanes: Sequence[Sequence[tuple[int, bytes]]],
        base_changes: Sequence[Change],
        *,
        height: int,
        time: int,
    ) -> None:
        """Start lane i in worker i (at most `size` lanes); `receive` has their outcomes."""
        if self._sent:
            raise RuntimeError("the workers' last lanes have not been received")
        self._flush()
        base = list(base_changes)
        for conn, lane in zip(self._conns, lanes, strict=False):
            conn.send(_Run(height=height, time=time, base_changes=base, txs=list(lane)))
        self._sent = min(len(lanes), len(self._conns))

    def receive(self) -> list[list[TxOutcome]]:
        """Each lane's outcomes, in the order `send` was given them; raises `WorkerError` (after
        every answer is in) if a worker failed."""
        answers = [conn.recv() for conn in self._conns[: self._sent]]
        self._sent = 0
        for answer in answers:
            if isinstance(answer, WorkerError):
                raise answer
        return answers

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):  # already gone
                conn.send(_Stop())
            conn.close()
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.kill()
        self._conns.clear()
        self._processes.clear()
