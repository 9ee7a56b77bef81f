"""Order actions and block structure: all-or-nothing txs (the book included), cancels and
post-only placements before takers, tx results in block order, stale markets, check_tx leaving
the books alone, restart and replay determinism; and a hypothesis test of random order streams
(margin never broken by an account's own order, replay and restart give the same app hashes and
books). Conservation and zero-sum positions are checked after every block (`Chain.commit`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus.app import CheckTxKind
from execution.codes import Code
from execution.oracle.prices import prices_at
from execution.positions.margin import margin_summary, order_only_reduces
from execution.positions.position import Position
from execution.tx import Action, PlaceOrder
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BUY,
    IOC,
    PLACE_FEE,
    POST_ONLY,
    SELL,
    all_events,
    amend,
    assert_books_match_state,
    assert_ok,
    book_orders,
    btc,
    cancel,
    exchange_chain,
    fees_collected,
    place,
    position,
    stored_orders,
    usd,
)

ALICE, BOB, CAROL, DAVE = (address(i) for i in range(4))
A, B, C, D = (key(i) for i in range(4))


def test_a_tx_whose_second_action_fails_leaves_no_trace(ex: Chain) -> None:
    assert_ok(ex.run_block([ex.tx(B, place(SELL, btc(10), usd(65_000)))]).tx_results)
    before = (stored_orders(ex), book_orders(ex), position(ex, BOB), fees_collected(ex))
    # the first action fills bob's order completely; the second is off tick
    raw = ex.tx(A, place(BUY, btc(10), usd(65_000), IOC), place(BUY, btc(10), usd(60_000) + 1))
    (result,) = ex.run_block([raw]).tx_results
    assert result.code == Code.OFF_TICK
    assert result.log.startswith("action 1: ")
    assert [e.type for e in result.events] == ["tx"]
    after = (stored_orders(ex), book_orders(ex), position(ex, BOB), fees_collected(ex) - 2 * PLACE_FEE)
    assert after == before  # only the tx's own fee is left of it
    assert position(ex, ALICE) == Position()
    # bob's order is still there to be taken, by the next tx of the same block too
    raw_fail = ex.tx(A, place(BUY, btc(10), usd(65_000), IOC), cancel(42))
    raw_ok = ex.tx(C, place(BUY, btc(10), usd(65_000), IOC))
    failed, ok = ex.run_block([raw_fail, raw_ok]).tx_results
    assert failed.code == Code.ORDER_NOT_FOUND
    assert ok.code == 0
    assert [f["taker"] for f in all_events([ok], "order_filled")] == [str(CAROL)]
    assert position(ex, CAROL).size == btc(10)


def test_a_failed_tx_restores_partly_filled_and_self_trade_cancelled_makers(ex: Chain) -> None:
    txs = [
        ex.tx(A, place(SELL, btc(5), usd(65_001))),  # 1: alice's own, reached by her buy: stp
        ex.tx(B, place(SELL, btc(10), usd(65_000))),  # 2: filled completely
        ex.tx(C, place(SELL, btc(10), usd(65_002))),  # 3: filled partly
    ]
    assert_ok(ex.run_block(txs).tx_results)
    before = (stored_orders(ex), book_orders(ex))
    positions = [position(ex, who) for who in (ALICE, BOB, CAROL)]
    raw = ex.tx(
        A,
        place(BUY, btc(14), usd(65_002)),  # fills 2, cancels 1 (stp), fills 4 of 3
        place(BUY, btc(1), usd(65_003)),  # crosses the rest of 3
        cancel(999),  # fails: everything above is undone
    )
    (result,) = ex.run_block([raw]).tx_results
    assert result.code == Code.ORDER_NOT_FOUND
    assert (stored_orders(ex), book_orders(ex)) == before
    assert [position(ex, who) for who in (ALICE, BOB, CAROL)] == positions
    # and the book still matches as before: the same order executes in full now
    (ok,) = ex.run_block([ex.tx(A, place(BUY, btc(14), usd(65_002)))]).tx_results
    assert ok.code == 0
    assert [(f["maker_order_id"], f["size"]) for f in all_events([ok], "order_filled")] == [
        ("2", str(btc(10))),
        ("3", str(btc(4))),
    ]


def test_a_failed_amend_restores_the_old_order(ex: Chain) -> None:
    assert_ok(ex.run_block([ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=3))]).tx_results)
    (result,) = ex.run_block([ex.tx(A, amend(1, 10**10 * 10_000, usd(60_000)))]).tx_results
    assert result.code == Code.INSUFFICIENT_MARGIN
    (order,) = book_orders(ex)
    assert (order.order_id, order.client_id) == (1, 3)
    assert position(ex, ALICE) == Position(0, 0, btc(10), 0, 1)


def test_cancels_and_post_only_run_before_takers(ex: Chain) -> None:
    assert_ok(ex.run_block([ex.tx(B, place(SELL, btc(10), usd(65_000)))]).tx_results)
    txs = [
        ex.tx(A, place(BUY, btc(10), usd(65_000), IOC)),  # a taker, first in the block
        ex.tx(B, cancel(1)),  # its target is cancelled before it runs
        ex.tx(C, place(BUY, btc(5), usd(65_001), IOC)),  # a taker
        ex.tx(D, place(SELL, btc(5), usd(65_001), POST_ONLY)),  # rests before the takers run
    ]
    results = ex.run_block(txs).tx_results
    assert_ok(results)
    assert [e.type for e in results[1].events] == ["tx", "order_cancelled"]
    assert all_events([results[0]], "order_filled") == []
    assert all_events([results[0]], "order_cancelled")[0]["reason"] == "ioc_remainder"
    (fill,) = all_events([results[2]], "order_filled")
    assert (fill["maker"], fill["taker"]) == (str(DAVE), str(CAROL))
    # results stay in tx order; ids follow execution order: the post-only order (tx 3) got its id
    # before the takers (txs 0 and 2)
    assert [e["order_id"] for e in all_events(results, "order_placed")] == ["3", "4", "2"]


def test_amend_of_a_post_only_order_is_non_taking(ex: Chain) -> None:
    assert_ok(ex.run_block([ex.tx(D, place(SELL, btc(5), usd(65_010), POST_ONLY))]).tx_results)
    txs = [ex.tx(C, place(BUY, btc(5), usd(65_005), IOC)), ex.tx(D, amend(1, btc(5), usd(65_005)))]
    results = ex.run_block(txs).tx_results
    assert_ok(results)
    assert [f["maker_order_id"] for f in all_events(results, "order_filled")] == ["2"]


def test_stale_market_takes_reducing_orders_only(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path / "db", oracle={"max_vote_age_blocks": 3, "stale_after_blocks": 2})
    txs = [
        chain.tx(B, place(BUY, btc(20), usd(64_000))),
        chain.tx(C, place(SELL, btc(20), usd(66_000))),
        chain.tx(A, place(SELL, btc(10), usd(64_000), IOC)),
    ]
    assert_ok(chain.run_block(txs).tx_results)  # height 1: alice short 0.001
    chain.run_block([])
    oracle = chain.app.query("/oracle", b"", 0, False)
    assert b'"stale":true' in oracle.value
    results = chain.run_block(
        [
            chain.tx(A, place(BUY, btc(20), usd(66_000), IOC)),  # would flip to long: opening
            chain.tx(D, place(BUY, btc(1), usd(60_000))),
            chain.tx(A, place(BUY, btc(5), usd(66_000), IOC)),  # reduces
        ]
    ).tx_results
    assert [r.code for r in results] == [Code.MARKET_STALE, Code.MARKET_STALE, 0]
    assert "stale" in results[0].log
    assert position(chain, ALICE).size == -btc(5)
    # cancels are always fine
    assert_ok(chain.run_block([chain.tx(B, cancel(1))]).tx_results)
    assert_books_match_state(chain)
    chain.close()


def test_check_tx_validates_without_touching_the_books(ex: Chain) -> None:
    assert_ok(ex.run_block([ex.tx(B, place(SELL, btc(10), usd(65_000)))]).tx_results)
    before = book_orders(ex)
    ok = ex.app.check_tx(ex.tx(A, place(BUY, btc(10), usd(65_000), IOC)), CheckTxKind.NEW)
    assert ok.code == 0, ok.log
    bad = ex.app.check_tx(ex.tx(A, place(BUY, btc(10), usd(65_000) + 1)), CheckTxKind.NEW)
    assert bad.code == Code.OFF_TICK
    margin = ex.app.check_tx(ex.tx(A, place(BUY, 10**10 * 10_000, usd(65_000))), CheckTxKind.NEW)
    assert margin.code == Code.INSUFFICIENT_MARGIN
    assert ex.app.check_tx(ex.tx(A, cancel(1)), CheckTxKind.NEW).code == Code.ORDER_NOT_FOUND
    assert ex.app.check_tx(ex.tx(B, cancel(1)), CheckTxKind.NEW).code == 0
    assert ex.app.check_tx(ex.tx(B, amend(1, btc(10), usd(65_001))), CheckTxKind.NEW).code == 0
    assert book_orders(ex) == before


def test_queries_of_books_markets_and_oracle(ex: Chain) -> None:
    txs = [
        ex.tx(A, place(BUY, btc(10), usd(64_000))),
        ex.tx(B, place(BUY, btc(5), usd(64_000))),
        ex.tx(C, place(SELL, btc(7), usd(66_000))),
    ]
    assert_ok(ex.run_block(txs).tx_results)
    book = json.loads(ex.app.query("/book/BTC-USD", b"", 0, False).value)
    assert book == {
        "market": "BTC-USD",
        "bids": [
            {"price": str(usd(64_000)), "price_human": "64000", "size": str(btc(15)), "size_human": "0.0015"}
        ],
        "asks": [
            {"price": str(usd(66_000)), "price_human": "66000", "size": str(btc(7)), "size_human": "0.0007"}
        ],
    }
    l3 = json.loads(ex.app.query("/book/BTC-USD/l3", b"", 0, False).value)
    assert [o["order_id"] for o in l3["bids"]] == ["1", "2"]
    assert l3["asks"][0]["owner"] == str(CAROL)
    assert ex.app.query("/book/DOGE-USD", b"", 0, False).code == Code.INVALID_QUERY
    markets = json.loads(ex.app.query("/markets", b"", 0, False).value)
    assert [(m["ticker"], m["tick_human"], m["step_human"]) for m in markets] == [
        ("BTC-USD", "1", "0.0001"),
        ("ETH-USD", "0.1", "0.001"),
    ]
    oracle = json.loads(ex.app.query("/oracle", b"", 0, False).value)
    assert oracle[0] == {
        "market": "BTC-USD", "market_id": "1", "price": str(usd(65_000)), "price_human": "65000",
        "updated_height": "0", "age_blocks": "1", "stale": False,
    }  # fmt: skip
    account = ex.account(ALICE)
    orders = account["orders"]
    assert isinstance(orders, list)
    assert [o["order_id"] for o in orders] == ["1"]
    assert account["initial_requirement"] == str(3_250_000)  # 5% of 0.001 BTC at $65,000


def _replay(path: Path, blocks: list[list[bytes]]) -> Chain:
    chain = exchange_chain(path)
    for txs in blocks:
        chain.run_block(txs)
    return chain


def test_restart_reloads_the_books_and_replay_gives_the_same_hashes(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path / "a")
    blocks = [
        [
            chain.tx(B, place(SELL, btc(10), usd(65_000), good_til_block=5)),
            chain.tx(C, place(BUY, btc(3), usd(64_000))),
        ],
        [chain.tx(A, place(BUY, btc(4), usd(65_000), IOC))],
    ]
    for txs in blocks:
        assert_ok(chain.run_block(txs).tx_results)
    chain.reopen()
    assert book_orders(chain) == stored_orders(chain)
    more = [[chain.tx(D, place(BUY, btc(6), usd(65_000)))], [], [], [], []]  # ... and the expiry at 6
    for txs in more:
        assert_ok(chain.run_block(txs).tx_results)
    blocks += more
    fresh = _replay(tmp_path / "b", blocks)
    assert fresh.app_hashes == chain.app_hashes
    assert book_orders(fresh) == book_orders(chain)
    assert_books_match_state(chain)
    fresh.close()
    chain.close()


# -- random order streams ------------------------------------------------------------------------

TRADERS = 4
TRADER_FUNDS = 20_000 * 10**6  # $20,000: margin binds for orders of a few BTC


@st.composite
def _order_actions(draw: st.DrawFn) -> Action:
    kind = draw(st.sampled_from(["place", "place", "place", "ioc", "cancel", "amend"]))
    if kind == "cancel":
        return cancel(draw(st.integers(1, 40)))
    size = btc(draw(st.sampled_from([1, 10, 100, 1_000, 5_000, 20_000, 60_000])))
    price = usd(65_000 + draw(st.integers(-30, 30)) * 100)
    if kind == "amend":
        return amend(draw(st.integers(1, 40)), size, price)
    tif = IOC if kind == "ioc" else draw(st.sampled_from([0, 0, 2, 3]))
    return PlaceOrder(1, draw(st.integers(0, 1)), size, price, tif, int(draw(st.integers(0, 7)) == 0))


_streams = st.lists(
    st.lists(
        st.tuples(st.integers(0, TRADERS - 1), st.lists(_order_actions(), min_size=1, max_size=3)), max_size=4
    ),
    min_size=1,
    max_size=12,
)


def _free(chain: Chain, owner_index: int) -> int:
    state = chain.app._committed
    return margin_summary(state, address(owner_index), prices_at(state)).free


def _exempt(chain: Chain, owner_index: int, actions: list[Action]) -> bool:
    """Whether a tx holds an order that the placement check exempts (it can only reduce)."""
    held = position(chain, address(owner_index))
    return any(
        isinstance(a, PlaceOrder) and (a.flags & 1 or order_only_reduces(held, a.side, a.size))
        for a in actions
    ) or any(not isinstance(a, PlaceOrder) for a in actions)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stream=_streams, restart_at=st.integers(0, 12))
def test_random_order_streams(
    tmp_path_factory: pytest.TempPathFactory, stream: list[list[tuple[int, list[Action]]]], restart_at: int
) -> None:
    base = tmp_path_factory.mktemp("stream")
    chain = exchange_chain(base / "a", traders=TRADERS, funds=TRADER_FUNDS)
    blocks: list[list[bytes]] = []
    for number, block in enumerate(stream):
        if number == restart_at and number > 0:  # a restart needs a committed block
            chain.reopen()
        free_before = [_free(chain, i) for i in range(TRADERS)]
        exempt = {i for i, actions in block if _exempt(chain, i, actions)}
        senders = [i for i, _ in block]
        txs = [chain.tx(key(i), *actions) for i, actions in block]
        blocks.append(txs)
        chain.run_block(txs)
        assert_books_match_state(chain)
        for i in range(TRADERS):
            free = _free(chain, i)
            if free_before[i] >= 0 and i not in exempt and senders.count(i) <= 1:
                # only its own non-exempt orders and maker fills touched it: margin holds
                assert free >= 0, (i, free_before[i], free)
    replay = exchange_chain(base / "c", traders=TRADERS, funds=TRADER_FUNDS)
    for txs in blocks:
        replay.run_block(txs)
    assert replay.app_hashes == chain.app_hashes
    assert book_orders(replay) == book_orders(chain)
    replay.close()
    chain.close()
