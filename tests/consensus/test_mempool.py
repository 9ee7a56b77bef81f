"""The mempool against a fake check_tx: arrival order, reap limits, the LRU cache of seen
transactions, size limits, statistics, and update after a commit (removal, recheck, eviction);
a random sequence of operations keeps the pool, its byte count and its counters consistent."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from consensus.app import CheckTxKind, CheckTxResult
from consensus.mempool import Mempool, MempoolConfig, MempoolFull, MempoolStats, TxInCache, TxTooLarge
from primitives.hashing import sha256


@dataclass
class FakeApp:
    """check_tx: code 0 unless the tx starts with b"bad" (or, on recheck, is in `fail_recheck`)."""

    calls: list[tuple[bytes, CheckTxKind]] = field(default_factory=list)
    fail_recheck: set[bytes] = field(default_factory=set)

    def check_tx(self, tx: bytes, kind: CheckTxKind) -> CheckTxResult:
        self.calls.append((tx, kind))
        if tx.startswith(b"bad") or (kind == CheckTxKind.RECHECK and tx in self.fail_recheck):
            return CheckTxResult(code=1, log="rejected")
        return CheckTxResult()

    def new_calls(self) -> list[bytes]:
        return [tx for tx, kind in self.calls if kind == CheckTxKind.NEW]

    def rechecks(self) -> list[bytes]:
        return [tx for tx, kind in self.calls if kind == CheckTxKind.RECHECK]


def make(**config: int | bool) -> tuple[Mempool, FakeApp]:
    app = FakeApp()
    return Mempool(MempoolConfig(**config), app.check_tx), app  # type: ignore[arg-type]


def stats(**counts: int) -> MempoolStats:
    return MempoolStats(**counts)


def txs(n: int, prefix: bytes = b"tx") -> list[bytes]:
    return [b"%s-%03d" % (prefix, i) for i in range(n)]


# -- admission and order -------------------------------------------------------------------------


def test_admitted_txs_keep_arrival_order() -> None:
    pool, app = make()
    order = [b"zeta", b"alpha", b"mid", b"bad-one", b"beta", b"a"]
    results = [pool.check_tx(tx) for tx in order]
    assert [r.ok for r in results] == [True, True, True, False, True, True]
    kept = [b"zeta", b"alpha", b"mid", b"beta", b"a"]
    assert pool.txs() == kept
    assert pool.txs(2) == kept[:2]
    assert pool.txs(0) == []
    assert pool.reap(max_bytes=10**6) == kept
    assert len(pool) == 5
    assert sha256(b"mid") in pool and sha256(b"bad-one") not in pool
    assert app.new_calls() == order
    assert pool.size_bytes == sum(map(len, kept))
    assert pool.stats == stats(added_txs=5, failed_txs=1)


def test_reap_respects_max_bytes_and_max_count() -> None:
    pool, _ = make()
    sizes = [5, 3, 7, 1, 4]
    kept = [bytes([65 + i]) * n for i, n in enumerate(sizes)]
    for tx in kept:
        pool.check_tx(tx)
    assert pool.reap(max_bytes=0) == []
    assert pool.reap(max_bytes=4) == []
    assert pool.reap(max_bytes=5) == kept[:1]
    assert pool.reap(max_bytes=14) == kept[:2], "stops at the first tx that does not fit"
    assert pool.reap(max_bytes=15) == kept[:3]
    assert pool.reap(max_bytes=20) == kept
    assert pool.reap(max_bytes=100, max_count=0) == []
    assert pool.reap(max_bytes=100, max_count=2) == kept[:2]
    assert pool.reap(max_bytes=100, max_count=-1) == kept
    assert pool.reap(max_bytes=8, max_count=3) == kept[:2]
    assert pool.reap(max_bytes=15, max_count=2) == kept[:2]
    assert len(pool) == 5, "reaping does not remove"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=30), max_size=20, unique=True),
    st.integers(0, 300),
    st.integers(-1, 25),
)
def test_reap_is_the_longest_prefix_within_the_limits(
    candidates: list[bytes], max_bytes: int, max_count: int
) -> None:
    pool, _ = make()
    for tx in candidates:
        pool.check_tx(tx)
    kept = [tx for tx in candidates if not tx.startswith(b"bad")]
    assert pool.txs() == kept
    reaped = pool.reap(max_bytes, max_count)
    assert reaped == kept[: len(reaped)]
    assert sum(map(len, reaped)) <= max_bytes
    if max_count >= 0:
        assert len(reaped) <= max_count
    if len(reaped) < len(kept) and (max_count < 0 or len(reaped) < max_count):
        assert sum(map(len, reaped)) + len(kept[len(reaped)]) > max_bytes


# -- the cache -----------------------------------------------------------------------------------


def test_duplicate_is_refused_before_check_tx() -> None:
    pool, app = make()
    pool.check_tx(b"once")
    with pytest.raises(TxInCache):
        pool.check_tx(b"once")
    assert app.new_calls() == [b"once"]
    assert pool.txs() == [b"once"]
    assert pool.size_bytes == 4
    assert pool.stats == stats(added_txs=1)


def test_failed_tx_is_not_kept_and_may_be_resubmitted() -> None:
    pool, app = make()
    assert not pool.check_tx(b"bad tx").ok
    assert pool.txs() == [] and pool.size_bytes == 0
    assert not pool.check_tx(b"bad tx").ok, "not cached: it reaches the application again"
    assert app.new_calls() == [b"bad tx", b"bad tx"]
    assert pool.stats == stats(failed_txs=2)


def test_failed_tx_stays_in_the_cache_when_configured() -> None:
    pool, app = make(keep_invalid_txs_in_cache=True)
    assert not pool.check_tx(b"bad tx").ok
    with pytest.raises(TxInCache):
        pool.check_tx(b"bad tx")
    assert app.new_calls() == [b"bad tx"]
    assert pool.stats == stats(failed_txs=1)


def test_cache_forgets_the_least_recently_seen_beyond_cache_size() -> None:
    pool, app = make(cache_size=3, keep_invalid_txs_in_cache=True)
    for tx in (b"bad-1", b"bad-2", b"bad-3", b"bad-4"):
        pool.check_tx(tx)
    with pytest.raises(TxInCache):
        pool.check_tx(b"bad-2")  # refreshed: now the most recent
    pool.check_tx(b"bad-5")  # pushes out bad-3, the oldest
    for remembered in (b"bad-2", b"bad-4", b"bad-5"):
        with pytest.raises(TxInCache):
            pool.check_tx(remembered)
    calls = len(app.calls)
    pool.check_tx(b"bad-1")
    assert len(app.calls) == calls + 1, "bad-1 was forgotten"
    pool.check_tx(b"bad-3")
    assert len(app.calls) == calls + 2, "bad-3 was forgotten"


def test_committed_txs_are_remembered_up_to_cache_size() -> None:
    pool, app = make(cache_size=3)
    committed = txs(4, b"c")
    pool.update(1, committed)
    for tx in committed[1:]:
        with pytest.raises(TxInCache):
            pool.check_tx(tx)
    assert pool.check_tx(committed[0]).ok, "the oldest committed tx was forgotten"
    assert app.new_calls() == [committed[0]]


def test_a_tx_still_in_the_pool_is_refused_after_the_cache_forgot_it() -> None:
    """With a cache smaller than the pool, the oldest pending tx drops out of the cache; sent
    again it must not reach check_tx nor be counted twice (CometBFT checks txsMap as well)."""
    pool, app = make(cache_size=2)
    for tx in (b"first", b"second", b"third"):
        assert pool.check_tx(tx).ok
    with pytest.raises(TxInCache):
        pool.check_tx(b"first")
    assert app.new_calls() == [b"first", b"second", b"third"]
    assert pool.txs() == [b"first", b"second", b"third"]
    assert pool.size_bytes == len(b"first") + len(b"second") + len(b"third")
    assert pool.stats.added_txs == 3


# -- limits --------------------------------------------------------------------------------------


def test_too_large_tx_never_reaches_the_application() -> None:
    pool, app = make(max_tx_bytes=8)
    assert pool.check_tx(b"8 bytes!").ok
    with pytest.raises(TxTooLarge):
        pool.check_tx(b"9 bytes!!")
    assert app.new_calls() == [b"8 bytes!"]
    assert pool.txs() == [b"8 bytes!"]
    assert pool.stats.added_txs == 1 and pool.stats.failed_txs == 0


def test_full_by_count() -> None:
    pool, app = make(size=2)
    pool.check_tx(b"one")
    pool.check_tx(b"two")
    with pytest.raises(MempoolFull):
        pool.check_tx(b"three")
    with pytest.raises(MempoolFull):
        pool.check_tx(b"four")
    assert pool.stats == stats(added_txs=2, rejected_txs=2)
    assert app.new_calls() == [b"one", b"two"]
    assert pool.txs() == [b"one", b"two"]
    pool.update(1, [b"one"])
    assert pool.check_tx(b"three").ok, "a tx refused while full was not cached"
    assert pool.txs() == [b"two", b"three"]


def test_full_by_bytes() -> None:
    pool, app = make(max_txs_bytes=10)
    pool.check_tx(b"six..6")
    with pytest.raises(MempoolFull):
        pool.check_tx(b"five5")
    assert pool.check_tx(b"four").ok, "exactly at the limit fits"
    assert pool.size_bytes == 10
    with pytest.raises(MempoolFull):
        pool.check_tx(b"1")
    assert pool.stats == stats(added_txs=2, rejected_txs=2)
    assert app.new_calls() == [b"six..6", b"four"]
    pool.update(1, [b"six..6"])
    assert pool.size_bytes == 4
    assert pool.check_tx(b"five5").ok


# -- update after a commit ----------------------------------------------------------------------


def test_update_removes_committed_remembers_them_and_rechecks_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool, app = make()
    pending = txs(6)
    for tx in pending:
        pool.check_tx(tx)
    app.fail_recheck = {pending[2], pending[5]}
    with caplog.at_level(logging.INFO, logger="derivd.mempool"):
        pool.update(7, [pending[1], pending[4], b"from another node"])
    [line] = [r.getMessage() for r in caplog.records if "evicted" in r.getMessage()]
    assert f"recheck after height 7 evicted 2 txs (first {sha256(pending[2]).hex().upper()}:" in line
    assert pool.height == 7
    assert app.rechecks() == [pending[0], pending[2], pending[3], pending[5]]
    assert pool.txs() == [pending[0], pending[3]]
    assert pool.size_bytes == len(pending[0]) + len(pending[3])
    assert pool.stats == stats(added_txs=6, evicted_txs=2, recheck_times=1)
    for committed in (pending[1], pending[4], b"from another node"):
        with pytest.raises(TxInCache):
            pool.check_tx(committed)
    # an evicted tx is forgotten (keep_invalid_txs_in_cache is off) and may come back
    app.fail_recheck = set()
    assert pool.check_tx(pending[2]).ok
    assert pool.txs() == [pending[0], pending[3], pending[2]]


def test_evicted_tx_stays_in_the_cache_when_configured() -> None:
    pool, app = make(keep_invalid_txs_in_cache=True)
    pool.check_tx(b"doomed")
    app.fail_recheck = {b"doomed"}
    pool.update(1, [])
    assert pool.txs() == []
    with pytest.raises(TxInCache):
        pool.check_tx(b"doomed")


def test_no_recheck_when_disabled_or_nothing_is_left() -> None:
    pool, app = make(recheck=False)
    pool.check_tx(b"a")
    pool.check_tx(b"b")
    app.fail_recheck = {b"b"}
    pool.update(1, [b"a"])
    assert app.rechecks() == []
    assert pool.txs() == [b"b"]
    assert pool.stats.recheck_times == 0

    pool, app = make()
    pool.check_tx(b"a")
    pool.update(1, [b"a"])
    assert app.rechecks() == []
    assert pool.stats.recheck_times == 0
    assert pool.txs() == [] and pool.size_bytes == 0


def test_every_update_rechecks_once() -> None:
    pool, app = make()
    pool.check_tx(b"stays")
    for height in (1, 2, 3):
        pool.update(height, [])
    assert app.rechecks() == [b"stays"] * 3
    assert pool.stats.recheck_times == 3


def test_flush_empties_the_pool() -> None:
    pool, _ = make()
    for tx in txs(3):
        pool.check_tx(tx)
    pool.flush()
    assert pool.txs() == [] and len(pool) == 0 and pool.size_bytes == 0


# -- random operations against a model ----------------------------------------------------------

TX_POOL = [b"t%d" % i + b"." * (i % 5) for i in range(12)] + [b"bad%d" % i for i in range(3)] + [b"too large"]


class MempoolMachine(RuleBasedStateMachine):
    """Random check_tx / update / flush sequences. The model is the ordered list of kept txs and
    the counters, driven by what the mempool reports; invariants tie its state to the model."""

    def __init__(self) -> None:
        super().__init__()
        self.app = FakeApp()
        self.pool: Mempool | None = None
        self.kept: list[bytes] = []
        self.expected = MempoolStats()

    @precondition(lambda self: self.pool is None)
    @rule(
        size=st.integers(1, 8),
        max_txs_bytes=st.integers(4, 40),
        cache_size=st.integers(1, 20),
        keep_invalid=st.booleans(),
    )
    def configure(self, size: int, max_txs_bytes: int, cache_size: int, keep_invalid: bool) -> None:
        config = MempoolConfig(
            size=size,
            max_txs_bytes=max_txs_bytes,
            max_tx_bytes=6,
            cache_size=cache_size,
            keep_invalid_txs_in_cache=keep_invalid,
        )
        self.pool = Mempool(config, self.app.check_tx)

    def mempool(self) -> Mempool:
        assert self.pool is not None
        return self.pool

    @precondition(lambda self: self.pool is not None)
    @rule(tx=st.sampled_from(TX_POOL))
    def submit(self, tx: bytes) -> None:
        pool = self.mempool()
        config = pool.config
        calls = len(self.app.calls)
        try:
            result = pool.check_tx(tx)
        except TxTooLarge:
            assert len(tx) > config.max_tx_bytes
            self.expected.rejected_txs += 1
        except MempoolFull:
            assert len(self.kept) >= config.size or sum(map(len, self.kept)) + len(tx) > config.max_txs_bytes
            self.expected.rejected_txs += 1
        except TxInCache:
            pass
        else:
            assert len(tx) <= config.max_tx_bytes
            assert tx not in self.kept, "a tx already in the pool reached check_tx again"
            assert self.app.calls[calls:] == [(tx, CheckTxKind.NEW)]
            if result.ok:
                self.kept.append(tx)
                self.expected.added_txs += 1
            else:
                self.expected.failed_txs += 1
            return
        assert len(self.app.calls) == calls, "a refused tx reached check_tx"

    @precondition(lambda self: self.pool is not None)
    @rule(
        committed=st.lists(st.sampled_from(TX_POOL), max_size=4, unique=True),
        failing=st.sets(st.sampled_from(TX_POOL), max_size=4),
    )
    def commit(self, committed: list[bytes], failing: set[bytes]) -> None:
        pool = self.mempool()
        self.app.fail_recheck = failing
        calls = len(self.app.calls)
        pool.update(pool.height + 1, committed)
        remaining = [tx for tx in self.kept if tx not in committed]
        if remaining:
            self.expected.recheck_times += 1
        assert self.app.calls[calls:] == [(tx, CheckTxKind.RECHECK) for tx in remaining]
        self.kept = [tx for tx in remaining if tx not in failing]
        self.expected.evicted_txs += len(remaining) - len(self.kept)
        self.app.fail_recheck = set()
        if committed:
            # the last committed tx is the most recent entry of the cache: it is refused
            calls = len(self.app.calls)
            try:
                pool.check_tx(committed[-1])
            except TxInCache:
                pass
            except (MempoolFull, TxTooLarge):
                self.expected.rejected_txs += 1
            else:
                raise AssertionError(f"committed {committed[-1]!r} was admitted again right after the commit")
            assert len(self.app.calls) == calls

    @precondition(lambda self: self.pool is not None)
    @rule()
    def flush(self) -> None:
        self.mempool().flush()
        self.kept = []

    @invariant()
    def pool_matches_the_model(self) -> None:
        if self.pool is None:
            return
        assert self.pool.txs() == self.kept
        assert len(self.pool) == len(self.kept)
        assert self.pool.size_bytes == sum(len(tx) for tx in self.pool.txs())
        assert self.pool.size_bytes <= self.pool.config.max_txs_bytes
        assert len(self.pool) <= self.pool.config.size
        assert self.pool.stats == self.expected
        assert self.pool.reap(max_bytes=10**6) == self.kept


TestMempoolMachine = MempoolMachine.TestCase
TestMempoolMachine.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)
