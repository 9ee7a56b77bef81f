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

from execution import block as block_module
from execution.genesis_state import default_exchange_app_state
from execution.scheduler import MIN_PARALLEL_TXS, lane_key, plan_lanes, worth_parallel
from execution.tx import Action, Tx
from execution.workers import WorkerPool
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FUNDS,
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


def test_one_hot_market_runs_serially(tmp_path: Path) -> None:
    chain = _chain(tmp_path, None)
    txs = [Tx.decode(chain.tx(key(i % TRADERS), place(BUY, btc(1), usd(64_000)))) for i in range(40)]
    lanes = plan_lanes(list(enumerate(txs)), 2)
    assert {lane_key(tx) for tx in txs} == {(0, BTC.to_bytes(4, "big"))}
    assert sorted(len(lane) for lane in lanes) == [0, 40]
    assert not worth_parallel(lanes)
    chain.close()
