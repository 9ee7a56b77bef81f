"""What a tx reads is in its view's read sets: the ground a conflict-detecting scheduler stands on.

The property (`test_a_tx_that_reads_nothing_earlier_txs_wrote_runs_the_same_alone`): in a block run
serially, a tx whose recorded reads (keys and scanned or noted prefixes, `execution.state.reads_any`)
meet no key that an earlier tx of the block wrote gives the same result, events and changes when it
runs alone on the state the block started from. A read that bypasses the views (an in-memory book,
a counter or a cache carried from tx to tx) makes it fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consensus.app import ExecTxResult
from execution.exchange.books import Books
from execution.exchange.context import ExchangeContext
from execution.executor import execute_tx
from execution.state import Change, CommittedState, StateView, reads_any
from execution.tx import Action, CancelAll, PlaceOrder, Tx
from storage import schema
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    IOC,
    POST_ONLY,
    SELL,
    assert_ok,
    btc,
    exchange_chain,
    place,
    usd,
)
from tests.execution.strategies import trading_actions

TRADERS = 6


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One tx's run on a view: its result, its changes and the view (for its read sets)."""

    result: ExecTxResult
    changes: list[Change]
    view: StateView


def _run(parent: StateView, tx: Tx, chain: Chain, ctx: ExchangeContext) -> Run:
    view = StateView(parent)
    result = execute_tx(view, tx, chain.time + 1, chain.height + 1, ctx)
    changes = view.changes()
    return Run(result=result, changes=changes, view=view)


def _serial(chain: Chain, txs: list[Tx]) -> list[Run]:
    block = StateView(CommittedState(chain.db))
    ctx = ExchangeContext(chain.height + 1, Books.load(block), live=True)
    runs = []
    for tx in txs:
        run = _run(block, tx, chain, ctx)
        ctx.begin_tx()  # what the block pipeline does between txs, keeping the block's state
        run.view.apply_to(block)
        runs.append(run)
    return runs


def _alone(chain: Chain, tx: Tx) -> Run:
    block = StateView(CommittedState(chain.db))
    return _run(block, tx, chain, ExchangeContext(chain.height + 1, Books.load(block), live=True))


def _seeded(tmp: Path) -> Chain:
    """A chain with resting orders on both markets around $65,000 (BTC) and $3,000 (ETH)."""
    chain = exchange_chain(tmp, traders=TRADERS)
    setup = []
    for i in range(TRADERS):
        setup.append(
            chain.tx(
                key(i),
                place(SELL, btc(10 * (i + 1)), usd(65_000 + 100 * (i + 1)), client_id=100 + i),
                place(BUY, btc(10 * (i + 1)), usd(65_000 - 100 * (i + 1)), client_id=200 + i),
                place(SELL, 10**9 * (i + 1), 3_000 * 10**5 + 10**5 * (i + 1), market=ETH),
            )
        )
    assert_ok(chain.run_block(setup).tx_results)
    return chain


_actions = trading_actions(
    markets=[BTC, BTC, ETH],
    max_order_id=30,
    transfer_to=st.just(address(TRADERS)),  # nobody trades with it
)


_blocks = st.lists(
    st.tuples(st.integers(0, TRADERS - 1), st.lists(_actions, min_size=1, max_size=3)),
    min_size=2,
    max_size=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(block=_blocks)
# an earlier tx empties the best ask without taking an order id; a later taker must see that
@example(block=[(0, [CancelAll(BTC)]), (1, [PlaceOrder(BTC, BUY, btc(10), usd(65_200), IOC, 0, 0, 0)])])
def test_a_tx_that_reads_nothing_earlier_txs_wrote_runs_the_same_alone(
    tmp_path_factory: pytest.TempPathFactory, block: list[tuple[int, list[Action]]]
) -> None:
    chain = _seeded(tmp_path_factory.mktemp("reads"))
    txs = [Tx.decode(chain.tx(key(signer), *actions)) for signer, actions in block]
    runs = _serial(chain, txs)
    written: set[bytes] = set()
    independent = 0
    for tx, run in zip(txs, runs, strict=True):
        if not reads_any(run.view, written):
            alone = _alone(chain, tx)
            assert (alone.result, alone.changes) == (run.result, run.changes)
            independent += 1
        written.update(k for k, _ in run.changes)
    assert independent >= 1  # the first tx always is


def test_a_fill_reads_the_order_an_earlier_tx_of_the_block_placed(tmp_path: Path) -> None:
    chain = _seeded(tmp_path)
    maker = Tx.decode(chain.tx(key(0), place(SELL, btc(10), usd(65_050), POST_ONLY)))
    taker = Tx.decode(chain.tx(key(1), place(BUY, btc(10), usd(65_050), IOC)))
    first, second = _serial(chain, [maker, taker])
    assert any(k.startswith(schema.order_prefix(BTC)) for k, _ in first.changes)
    assert reads_any(second.view, {k for k, _ in first.changes})
    # the book is a cache of the order records: matching against it reads all of them
    assert schema.order_prefix(BTC) in second.view.prefix_reads
    fills = [e for e in second.result.events if e.type == "order_filled"]
    assert fills, "the taker filled against the maker's order"


def test_txs_on_different_markets_by_different_traders_do_not_conflict(tmp_path: Path) -> None:
    chain = _seeded(tmp_path)
    btc_tx = Tx.decode(chain.tx(key(0), place(BUY, btc(10), usd(65_000), POST_ONLY)))
    eth_tx = Tx.decode(chain.tx(key(1), place(BUY, 10**9, 2_990 * 10**5, POST_ONLY, market=ETH)))
    first, second = _serial(chain, [btc_tx, eth_tx])
    assert not reads_any(second.view, {k for k, _ in first.changes})
