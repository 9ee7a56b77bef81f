"""Parallel execution is serial execution: the same random blocks run on a serial app and on apps
with 1, 2 and 4 worker processes (`execution.scheduler`, `execution.workers`) give the same tx
results, events and app hashes, block after block; and the parallel path is really taken, with
txs both taken from the workers and run again after a conflict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.app import Event, FinalizeBlockResult
from execution import block as block_module
from execution.block import EndBlock
from execution.genesis_state import default_exchange_app_state
from execution.scheduler import MIN_PARALLEL_TXS, lane_key, plan_lanes, worth_parallel
from execution.tx import Action, Tx
from execution.workers import MemoryStore, WorkerPool
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FUNDS,
    IOC,
    POST_ONLY,
    SELL,
    assert_ok,
    btc,
    place,
    usd,
)
from tests.execution.strategies import trading_actions

TRADERS = 12
SIZES = (1, 2, 4)


@pytest.fixture(scope="module")
def pools() -> Iterator[dict[int, WorkerPool]]:
    started = {n: WorkerPool(n) for n in SIZES}
    yield started
    for pool in started.values():
        pool.close()


def _chain(path: Path, pool: WorkerPool | None) -> Chain:
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    chain = Chain(path, {address(i): FUNDS for i in range(TRADERS)}, app_state=state, pool=pool)
    setup = [
        chain.tx(
            key(i),
            place(SELL, btc(10 * (i + 1)), usd(65_000 + 100 * (i + 1))),
            place(BUY, btc(10 * (i + 1)), usd(65_000 - 100 * (i + 1))),
            place(SELL, 10**9 * (i + 1), 3_000 * 10**5 + 10**5 * (i + 1), market=ETH),
            place(BUY, 10**9 * (i + 1), 3_000 * 10**5 - 10**5 * (i + 1), market=ETH),
        )
        for i in range(TRADERS)
    ]
    assert_ok(chain.run_block(setup).tx_results)
    return chain


_action = trading_actions(
    markets=[BTC, ETH], max_order_id=60, transfer_to=st.integers(0, TRADERS - 1).map(address)
)


_block = st.lists(
    st.tuples(st.integers(0, TRADERS - 1), st.lists(_action, min_size=1, max_size=3)),
    min_size=MIN_PARALLEL_TXS,
    max_size=MIN_PARALLEL_TXS + 24,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(blocks=st.lists(_block, min_size=1, max_size=3))
def test_parallel_execution_gives_what_serial_execution_gives(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    pools: dict[int, WorkerPool],
    blocks: list[list[tuple[int, list[Action]]]],
) -> None:
    # whatever the cost model would say (one worker: never worth it), the merge must be exact
    monkeypatch.setattr(block_module, "worth_parallel", lambda lanes: True)
    tmp = tmp_path_factory.mktemp("parallel")
    serial = _chain(tmp / "serial", None)
    parallel = [_chain(tmp / f"workers{n}", pools[n]) for n in SIZES]
    for block in blocks:
        txs = [serial.tx(key(signer), *actions) for signer, actions in block]
        expected = serial.run_block(txs)
        assert not serial.app.last_block_parallel
        for chain in parallel:
            chain._next_nonce = serial._next_nonce
            got = chain.run_block(txs)
            assert got.tx_results == expected.tx_results
            assert got.events == expected.events
            assert got.app_hash == expected.app_hash
            assert chain.app.last_block_parallel  # the cost model is overridden: always the workers
    for chain in (serial, *parallel):
        chain.close()


def test_the_parallel_path_is_taken_and_a_conflict_runs_again(
    tmp_path: Path, pools: dict[int, WorkerPool]
) -> None:
    serial = _chain(tmp_path / "serial", None)
    chain = _chain(tmp_path / "workers", pools[2])
    # a small block first: it runs serially, and its changes reach the workers only with the next
    # block's lanes (`WorkerPool.advance`, kept until `run`)
    small = [serial.tx(key(i), place(BUY, btc(1), usd(64_500), POST_ONLY)) for i in range(4)]
    assert serial.run_block(small).app_hash == chain.run_block(small).app_hash
    assert not chain.app.last_block_parallel
    # 40 txs on two markets by distinct traders per market, and one trader on both (a conflict)
    txs = []
    for i in range(20):
        trader = i % (TRADERS // 2)
        txs.append(serial.tx(key(trader), place(BUY, btc(1), usd(64_000 + 100 * (i % 5)), POST_ONLY)))
        eth_price = 2_900 * 10**5 + 10**5 * (i % 5)
        txs.append(serial.tx(key(TRADERS // 2 + trader), place(BUY, 10**9, eth_price, POST_ONLY, market=ETH)))
    txs.append(serial.tx(key(0), place(BUY, 10**9, 2_950 * 10**5, POST_ONLY, market=ETH)))
    expected = serial.run_block(txs)
    chain._next_nonce = serial._next_nonce
    got = chain.run_block(txs)
    assert (got.tx_results, got.app_hash) == (expected.tx_results, expected.app_hash)
    assert chain.app.last_block_parallel
    assert 1 <= chain.app.last_block_txs_run_again < len(txs) // 2
    serial.close()
    chain.close()


ETH_INSIDE = 3_000 * 10**5
"""An ETH price inside the spread `_chain` leaves (best bid 2,999, best ask 3,001)."""


def _same_in_parallel(serial: Chain, chain: Chain, txs: list[bytes]) -> FinalizeBlockResult:
    """Run `txs` on both chains (signed with `serial`'s nonces), `chain` in parallel; the same."""
    expected = serial.run_block(txs)
    chain._next_nonce = serial._next_nonce
    got = chain.run_block(txs)
    assert chain.app.last_block_parallel
    assert (got.tx_results, got.events, got.app_hash) == (
        expected.tx_results,
        expected.events,
        expected.app_hash,
    )
    return got


def test_a_worker_sees_what_other_lanes_did_when_its_market_changes_lane(
    tmp_path: Path, pools: dict[int, WorkerPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block 1: BTC (the bigger group) runs in the worker, ETH in the main process, which rests
    asks there. Block 2: ETH is the bigger group, so the worker runs it: its bids must find the
    asks the other lane rested (a worker keeps its own lane's book changes, and takes every other
    change from the commit)."""
    monkeypatch.setattr(block_module, "worth_parallel", lambda lanes: True)
    serial = _chain(tmp_path / "serial", None)
    chain = _chain(tmp_path / "workers", pools[1])
    first = [serial.tx(key(i), place(BUY, btc(1), usd(64_000), POST_ONLY)) for i in range(8)]
    first += [serial.tx(key(8 + i), place(SELL, 10**9, ETH_INSIDE, POST_ONLY, market=ETH)) for i in range(3)]
    second = [serial.tx(key(i), place(BUY, 10**9, ETH_INSIDE, IOC, market=ETH)) for i in range(6)]
    second += [serial.tx(key(8 + i), place(SELL, btc(1), usd(66_000), POST_ONLY)) for i in range(2)]
    _same_in_parallel(serial, chain, first)
    got = _same_in_parallel(serial, chain, second)
    fills = [event for result in got.tx_results for event in result.events if event.type == "order_filled"]
    assert len(fills) == 3
    serial.close()
    chain.close()


def test_a_worker_drops_the_orders_of_its_lane_that_the_block_did_not_keep(
    tmp_path: Path, pools: dict[int, WorkerPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Block 1: trader 11 moves its funds away (a lane of its own: the main process) and, later in
    the block, bids on BTC and ETH (the BTC lane: the worker), which succeeds there but fails when
    the merge runs it again after the transfer: its ETH bid rested in the worker's book, and the
    commit does not have it. Block 2: ETH sells in the worker must not find that bid."""
    monkeypatch.setattr(block_module, "worth_parallel", lambda lanes: True)
    serial = _chain(tmp_path / "serial", None)
    chain = _chain(tmp_path / "workers", pools[1])
    first = [serial.transfer(key(11), address(0), FUNDS - 2_140 * 10**6)]  # keeps its open orders margined
    first += [serial.tx(key(i), place(BUY, btc(1), usd(64_000), POST_ONLY)) for i in range(6)]
    first.append(
        serial.tx(
            key(11),
            place(BUY, btc(1), usd(64_000), POST_ONLY),
            place(BUY, 10**9, ETH_INSIDE, POST_ONLY, market=ETH),
        )
    )
    second = [serial.tx(key(i), place(SELL, 10**9, ETH_INSIDE, IOC, market=ETH)) for i in range(4)]
    second += [serial.tx(key(6 + i), place(SELL, btc(1), usd(66_000), POST_ONLY)) for i in range(2)]
    got = _same_in_parallel(serial, chain, first)
    assert got.tx_results[-1].code != 0 and chain.app.last_block_txs_run_again >= 1
    _same_in_parallel(serial, chain, second)
    serial.close()
    chain.close()


def test_a_tx_run_again_sees_the_books_without_the_main_lanes_later_txs(
    tmp_path: Path, pools: dict[int, WorkerPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """ETH is the main process's lane: an ask rests (non-taking, so early in block order), then a
    later buyer takes it there. A BTC-lane tx between them in block order also buys that ask; the
    merge runs it again (it read ETH's book, which the other lane wrote), and it must find the
    ask, which the main lane's later buyer had already taken in the books."""
    monkeypatch.setattr(block_module, "worth_parallel", lambda lanes: True)
    serial = _chain(tmp_path / "serial", None)
    chain = _chain(tmp_path / "workers", pools[1])
    txs = [serial.tx(key(i), place(BUY, btc(1), usd(64_000), POST_ONLY)) for i in range(6)]
    txs.append(serial.tx(key(8), place(SELL, 10**9, ETH_INSIDE, POST_ONLY, market=ETH)))
    txs.append(
        serial.tx(
            key(6),
            place(BUY, btc(1), usd(64_000), POST_ONLY),
            place(BUY, 10**9, ETH_INSIDE, IOC, market=ETH),
        )
    )
    txs.append(serial.tx(key(9), place(BUY, 10**9, ETH_INSIDE, IOC, market=ETH)))
    got = _same_in_parallel(serial, chain, txs)
    assert chain.app.last_block_txs_run_again >= 1
    filled = [
        i for i, result in enumerate(got.tx_results) if any(e.type == "order_filled" for e in result.events)
    ]
    assert filled == [7]
    serial.close()
    chain.close()


def test_a_block_abandoned_after_its_lanes_leaves_no_trace_in_the_workers(
    tmp_path: Path, pools: dict[int, WorkerPool], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane changes its worker's books as it goes; a block that fails after its lanes ran is never
    committed, and the block run instead at that height must not see what they did."""
    monkeypatch.setattr(block_module, "worth_parallel", lambda lanes: True)
    serial = _chain(tmp_path / "serial", None)
    chain = _chain(tmp_path / "workers", pools[2])
    chain._next_nonce = serial._next_nonce
    inside = usd(64_950)  # between the best bid (64,900) and the best ask (65,100)
    abandoned = [chain.tx(key(i), place(SELL, btc(1), inside, POST_ONLY)) for i in range(6)]
    abandoned += [
        chain.tx(key(6 + i), place(SELL, 10**9, ETH_INSIDE, POST_ONLY, market=ETH)) for i in range(6)
    ]

    def fail(block: EndBlock) -> list[Event]:
        raise RuntimeError("the block fails after its lanes")

    hooks = block_module.END_BLOCK_HOOKS
    monkeypatch.setattr(block_module, "END_BLOCK_HOOKS", (fail,))
    with pytest.raises(RuntimeError, match="after its lanes"):
        chain.finalize(abandoned)
    monkeypatch.setattr(block_module, "END_BLOCK_HOOKS", hooks)
    chain.height -= 1
    chain.time = serial.time
    # buyers at that price: the abandoned asks would fill them
    txs = [serial.tx(key(6 + i), place(BUY, btc(1), inside, IOC)) for i in range(6)]
    txs += [serial.tx(key(i), place(BUY, 10**9, ETH_INSIDE, IOC, market=ETH)) for i in range(6)]
    got = _same_in_parallel(serial, chain, txs)
    assert not any(event.type == "order_filled" for result in got.tx_results for event in result.events)
    serial.close()
    chain.close()


def test_lanes_keep_each_market_together_and_give_the_main_process_its_share(tmp_path: Path) -> None:
    chain = _chain(tmp_path, None)
    sizes = {1: 10, 2: 9, 3: 8, 4: 7, 5: 6}  # market -> txs (only their first actions' markets count)
    txs = [
        Tx.decode(chain.tx(key(i % TRADERS), place(BUY, btc(1), usd(64_000), market=market)))
        for market, count in sizes.items()
        for i in range(count)
    ]
    worker, local = plan_lanes(list(enumerate(txs)), 1)
    assert worker == sorted(worker) and local == sorted(local)  # execution order within a lane
    markets = [{txs[p].actions[0].market_id for p in lane} for lane in (worker, local)]  # type: ignore[union-attr]
    assert markets == [{1, 4}, {2, 3, 5}]  # 17 and 23 txs: the main process's share is 3 to 2
    assert len(plan_lanes(list(enumerate(txs)), 3)) == 4
    chain.close()


def test_one_hot_market_runs_serially(tmp_path: Path) -> None:
    chain = _chain(tmp_path, None)
    txs = [Tx.decode(chain.tx(key(i % TRADERS), place(BUY, btc(1), usd(64_000)))) for i in range(40)]
    lanes = plan_lanes(list(enumerate(txs)), 1)
    assert {lane_key(tx) for tx in txs} == {(0, BTC.to_bytes(4, "big"))}
    assert sorted(len(lane) for lane in lanes) == [0, 40]
    assert not worth_parallel(lanes)
    chain.close()


_store_keys = st.builds(
    lambda family, rest: family + bytes(b"ab"[x % 2] for x in rest),
    st.sampled_from([b"a", b"ab", b"ab:a", b"ab:b", b"b:ab"]),
    st.binary(max_size=3),
)
"""Keys and prefixes from a few key families, some shorter than a family."""


@given(
    start=st.dictionaries(_store_keys, st.binary(min_size=1, max_size=2), max_size=12),
    rounds=st.lists(
        st.tuples(
            st.lists(st.tuples(_store_keys, st.none() | st.binary(min_size=1, max_size=2)), max_size=10),
            st.lists(_store_keys, max_size=3),
        ),
        max_size=8,
    ),
)
def test_a_replica_store_iterates_like_a_sorted_model(
    start: dict[bytes, bytes], rounds: list[tuple[list[tuple[bytes, bytes | None]], list[bytes]]]
) -> None:
    """A worker's replica store (`MemoryStore`) against a sorted model: commits applied between
    scans, prefixes shorter and longer than a key family (the first 4 bytes of a key)."""
    store = MemoryStore(sorted(start.items()))
    model = dict(start)
    for changes, prefixes in rounds:
        store.apply(changes)
        for k, value in changes:
            if value is None:
                model.pop(k, None)
            else:
                model[k] = value
        for prefix in [b"", *prefixes]:
            assert list(store.iterate(prefix)) == sorted(
                (k, v) for k, v in model.items() if k.startswith(prefix)
            )
        assert all(store.get(k) == v for k, v in model.items()) and len(store) == len(model)
