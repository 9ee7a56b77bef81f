"""Order actions executed in blocks: crossing, fees, partial fills, self-trade prevention,
post-only, FOK, IOC, cancels, amend, good-til-block expiry and every bad-input code. Every block
checks conservation and zero-sum positions (`Chain.commit`), and the tests check that the books
equal the persisted orders."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.app import CheckTxKind, ValidatorUpdate
from execution.codes import Code
from execution.genesis_state import default_exchange_app_state
from execution.positions.margin import FEE_COLLECTOR
from execution.positions.position import Position
from execution.tx import STANDARD_FEES, ActionKind, OracleVote, PlaceOrder, Transfer, Tx, build_tx
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FOK,
    FUNDS,
    GTC,
    IOC,
    PLACE_FEE,
    POST_ONLY,
    SELL,
    TICK,
    all_events,
    amend,
    assert_books_match_state,
    assert_ok,
    btc,
    cancel,
    cancel_all,
    cancel_client,
    exchange_chain,
    fees_collected,
    place,
    position,
    stored_orders,
    usd,
)

ALICE, BOB, CAROL, DAVE = (address(i) for i in range(4))
A, B, C, D = (key(i) for i in range(4))


def run_ok(chain: Chain, *txs: bytes) -> list[dict[str, str]]:
    results = chain.run_block(list(txs)).tx_results
    assert_ok(results)
    return [dict(attrs) for attrs in all_events(results, "order_filled")]


def test_decode_round_trip_of_order_actions() -> None:
    actions = (place(BUY, 5, 7, FOK, reduce_only=True, client_id=2**64 - 1, good_til_block=9), cancel(3),
               cancel_client(4), cancel_all(0), amend(1, 2, 3))  # fmt: skip
    raw = build_tx(A, "c", 1, actions)
    assert Tx.decode(raw).actions == actions
    with pytest.raises(ValueError, match="size"):
        build_tx(A, "c", 1, [PlaceOrder(BTC, 0, -1, 1)])


def test_crossing_two_accounts_moves_exact_notional_and_fees(ex: Chain) -> None:
    size, price = btc(5000), usd(65_000)  # 0.5 BTC at $65,000
    results = ex.run_block([ex.tx(B, place(SELL, size, price, client_id=7))]).tx_results
    assert_ok(results)
    (placed,) = all_events(results, "order_placed")
    assert placed == {
        "order_id": "1", "market": "BTC-USD", "owner": str(BOB), "side": "sell", "size": str(size),
        "price": str(price), "tif": "gtc", "client_id": "7", "reduce_only": "0", "good_til_block": "0",
    }  # fmt: skip
    assert position(ex, BOB) == Position(0, 0, 0, size, 1)
    (fill,) = run_ok(ex, ex.tx(A, place(BUY, size, price, IOC)))
    notional = 32_500 * 10**6
    maker_fee, taker_fee = notional // 10_000, notional * 5 // 10_000
    assert fill == {
        "market": "BTC-USD", "maker_order_id": "1", "taker_order_id": "2", "maker": str(BOB),
        "taker": str(ALICE), "price": str(price), "size": str(size), "maker_fee": str(maker_fee),
        "taker_fee": str(taker_fee), "taker_side": "buy",
    }  # fmt: skip
    assert position(ex, ALICE) == Position(size, -notional - taker_fee)
    assert position(ex, BOB) == Position(-size, notional - maker_fee)
    assert fees_collected(ex) == maker_fee + taker_fee + 2 * PLACE_FEE  # and each tx's fee
    assert ex.balance(ALICE) == ex.balance(BOB) == FUNDS - PLACE_FEE  # collateral pays the tx fee only
    assert stored_orders(ex) == []
    account = ex.account(ALICE)
    assert account["positions"] == [
        {"market": "BTC-USD", "market_id": "1", "size": str(size), "size_human": "0.5",
         "quote": str(-notional - taker_fee), "quote_human": "-32516.25", "open_buy": "0", "open_sell": "0",
         "open_orders": "0", "oracle_price": str(price), "funding_index": "0", "pending_funding": "0"},
    ]  # fmt: skip
    assert account["account_value"] == str(FUNDS - PLACE_FEE - taker_fee)
    assert account["initial_requirement"] == str(notional // 20)
    assert account["maintenance_requirement"] == str(notional * 3 // 100)
    assert account["free_collateral"] == str(FUNDS - PLACE_FEE - taker_fee - notional // 20)


def test_partial_fills_walk_the_book_in_price_time_order(ex: Chain) -> None:
    run_ok(
        ex,
        ex.tx(B, place(SELL, btc(10), usd(65_001))),  # 1
        ex.tx(C, place(SELL, btc(10), usd(65_000))),  # 2
        ex.tx(D, place(SELL, btc(10), usd(65_000))),  # 3
    )
    fills = run_ok(ex, ex.tx(A, place(BUY, btc(25), usd(65_001), GTC)))
    assert [(f["maker_order_id"], f["size"], f["price"]) for f in fills] == [
        ("2", str(btc(10)), str(usd(65_000))),
        ("3", str(btc(10)), str(usd(65_000))),
        ("1", str(btc(5)), str(usd(65_001))),
    ]
    (rest,) = stored_orders(ex)
    assert (rest.order_id, rest.remaining, rest.size) == (1, btc(5), btc(10))
    assert position(ex, BOB) == Position(-btc(5), position(ex, BOB).quote, 0, btc(5), 1)
    assert position(ex, ALICE).size == btc(25)
    # the taker's fees are cumulative: one rounding for the whole order
    notional = (btc(20) * usd(65_000) + btc(5) * usd(65_001)) // 10**9
    assert position(ex, ALICE).quote == -notional - -(-notional * 500 // 10**6)


def test_taker_remainder_rests_after_partial_fill(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(10), usd(65_000))))
    run_ok(ex, ex.tx(A, place(BUY, btc(30), usd(65_000))))
    (rest,) = stored_orders(ex)
    assert (rest.owner, rest.remaining, rest.size) == (ALICE.raw, btc(20), btc(30))
    assert position(ex, ALICE) == Position(btc(10), position(ex, ALICE).quote, btc(20), 0, 1)


def test_self_trade_prevention_cancels_the_resting_order(ex: Chain) -> None:
    run_ok(ex, ex.tx(A, place(SELL, btc(10), usd(65_000))), ex.tx(B, place(SELL, btc(10), usd(65_001))))
    results = ex.run_block([ex.tx(A, place(BUY, btc(10), usd(65_001), IOC))]).tx_results
    assert_ok(results)
    assert all_events(results, "order_cancelled") == [
        {"order_id": "1", "market": "BTC-USD", "owner": str(ALICE), "reason": "stp"}
    ]
    (fill,) = all_events(results, "order_filled")
    assert fill["maker"] == str(BOB)
    assert stored_orders(ex) == []
    assert position(ex, ALICE) == Position(btc(10), position(ex, ALICE).quote)


def test_post_only_that_would_cross_is_rejected_with_an_event(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(10), usd(65_000))))
    results = ex.run_block([ex.tx(A, place(BUY, btc(10), usd(65_000), POST_ONLY, client_id=5))]).tx_results
    assert_ok(results)
    assert all_events(results, "order_rejected") == [
        {"market": "BTC-USD", "owner": str(ALICE), "client_id": "5", "reason": "post_only_would_cross"}
    ]
    assert all_events(results, "order_placed") == []
    assert [o.owner for o in stored_orders(ex)] == [BOB.raw]
    assert position(ex, ALICE) == Position()
    run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(64_999), POST_ONLY, client_id=5)))
    assert [o.post_only for o in stored_orders(ex)] == [False, True]


def test_fok_fills_completely_or_not_at_all(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(10), usd(65_000))))
    results = ex.run_block([ex.tx(A, place(BUY, btc(11), usd(65_000), FOK))]).tx_results
    assert_ok(results)
    assert all_events(results, "order_rejected")[0]["reason"] == "fok_not_filled"
    assert all_events(results, "order_filled") == []
    assert stored_orders(ex)[0].remaining == btc(10)
    fills = run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(65_000), FOK)))
    assert len(fills) == 1
    assert position(ex, ALICE).size == btc(10)


def test_ioc_remainder_is_cancelled(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(10), usd(65_000))))
    results = ex.run_block([ex.tx(A, place(BUY, btc(15), usd(65_000), IOC))]).tx_results
    assert_ok(results)
    assert all_events(results, "order_cancelled") == [
        {"order_id": "2", "market": "BTC-USD", "owner": str(ALICE), "reason": "ioc_remainder"}
    ]
    assert stored_orders(ex) == []
    assert position(ex, ALICE) == Position(btc(10), position(ex, ALICE).quote)


def test_cancel_by_order_id_and_by_client_id(ex: Chain) -> None:
    run_ok(
        ex,
        ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=11)),
        ex.tx(A, place(BUY, btc(20), usd(60_001), client_id=12)),
    )
    assert position(ex, ALICE) == Position(0, 0, btc(30), 0, 2)
    results = ex.run_block([ex.tx(A, cancel_client(11)), ex.tx(A, cancel(2))]).tx_results
    assert_ok(results)
    assert [(e["order_id"], e["reason"]) for e in all_events(results, "order_cancelled")] == [
        ("1", "user"),
        ("2", "user"),
    ]
    assert stored_orders(ex) == []
    assert position(ex, ALICE) == Position()
    # the client id is free again
    run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=11)))
    assert ex.account(ALICE)["orders"][0]["client_id"] == "11"  # type: ignore[index]


def test_cancel_of_someone_elses_or_missing_order_is_not_found(ex: Chain) -> None:
    run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=3)))
    results = ex.run_block([ex.tx(B, cancel(1)), ex.tx(B, cancel_client(3)), ex.tx(A, cancel(99))]).tx_results
    assert [r.code for r in results] == [Code.ORDER_NOT_FOUND] * 3
    assert len(stored_orders(ex)) == 1


def test_cancel_all_per_market_and_everywhere(ex: Chain) -> None:
    run_ok(
        ex,
        ex.tx(A, place(BUY, btc(10), usd(60_000))),
        ex.tx(A, place(SELL, btc(10), usd(70_000))),
        ex.tx(A, place(BUY, 10**6, 300_000_000, market=ETH)),
        ex.tx(B, place(BUY, btc(10), usd(60_000))),
    )
    results = ex.run_block([ex.tx(A, cancel_all(BTC))]).tx_results
    assert [e["order_id"] for e in all_events(results, "order_cancelled")] == ["1", "2"]
    assert [o.owner for o in stored_orders(ex)] == [BOB.raw]
    assert len(stored_orders(ex, ETH)) == 1
    run_ok(ex, ex.tx(A, place(SELL, btc(10), usd(70_000))))
    results = ex.run_block([ex.tx(A, cancel_all(0))]).tx_results
    assert [(e["market"], e["order_id"]) for e in all_events(results, "order_cancelled")] == [
        ("BTC-USD", "4"),  # order ids count per market
        ("ETH-USD", "1"),
    ]
    assert stored_orders(ex, ETH) == []
    assert position(ex, ALICE, ETH) == Position()
    # nothing left to cancel is fine
    run_ok(ex, ex.tx(A, cancel_all(0)))


def test_amend_gets_a_new_id_and_loses_priority(ex: Chain) -> None:
    run_ok(
        ex,
        ex.tx(A, place(SELL, btc(10), usd(65_000), client_id=9)),  # 1
        ex.tx(B, place(SELL, btc(10), usd(65_000))),  # 2
    )
    results = ex.run_block([ex.tx(A, amend(1, btc(12), usd(65_000)))]).tx_results
    assert_ok(results)
    assert all_events(results, "order_cancelled") == [
        {"order_id": "1", "market": "BTC-USD", "owner": str(ALICE), "reason": "amend"}
    ]
    (placed,) = all_events(results, "order_placed")
    assert (placed["order_id"], placed["size"], placed["client_id"]) == ("3", str(btc(12)), "9")
    assert position(ex, ALICE) == Position(0, 0, 0, btc(12), 1)
    fills = run_ok(ex, ex.tx(C, place(BUY, btc(10), usd(65_000), IOC)))
    assert [f["maker_order_id"] for f in fills] == ["2"]  # bob is now first in the queue
    run_ok(ex, ex.tx(A, cancel_client(9)))
    assert stored_orders(ex) == []


def test_amend_to_a_crossing_price_takes(ex: Chain) -> None:
    run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(64_000))), ex.tx(B, place(SELL, btc(10), usd(65_000))))
    fills = run_ok(ex, ex.tx(A, amend(1, btc(10), usd(65_000))))
    assert [(f["maker_order_id"], f["taker_order_id"]) for f in fills] == [("2", "3")]
    assert position(ex, ALICE).size == btc(10)


def test_good_til_block_orders_expire_at_the_start_of_the_next_block(ex: Chain) -> None:
    height = ex.height + 1
    run_ok(
        ex,
        ex.tx(A, place(BUY, btc(10), usd(60_000), good_til_block=height + 1, client_id=4)),
        ex.tx(A, place(BUY, btc(10), usd(60_000), good_til_block=height + 2)),
    )
    result = ex.run_block([])  # height + 1: both still live
    assert [e.type for e in result.events] == []
    result = ex.run_block([])  # height + 2: the first expires
    assert [(e.type, e.attribute("order_id")) for e in result.events] == [("order_expired", "1")]
    assert position(ex, ALICE) == Position(0, 0, btc(10), 0, 1)
    result = ex.run_block([ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=4))])
    assert [(e.type, e.attribute("order_id")) for e in result.events] == [("order_expired", "2")]
    assert_ok(result.tx_results)  # the expired order's client id is free
    assert [o.order_id for o in stored_orders(ex)] == [3]


def _codes(chain: Chain, *txs: bytes) -> list[int]:
    return [r.code for r in chain.run_block(list(txs)).tx_results]


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (place(BUY, btc(10), usd(60_000), market=7), Code.UNKNOWN_MARKET),
        (place(BUY, btc(10), usd(60_000) + 1), Code.OFF_TICK),
        (place(BUY, btc(10) + 1, usd(60_000)), Code.OFF_STEP),
        (place(BUY, btc(0), usd(60_000)), Code.INVALID_ORDER),
        (place(BUY, btc(10), 0), Code.INVALID_ORDER),
        (place(2, btc(10), usd(60_000)), Code.INVALID_ORDER),
        (PlaceOrder(BTC, BUY, btc(10), usd(60_000), 4), Code.INVALID_ORDER),
        (PlaceOrder(BTC, BUY, btc(10), usd(60_000), 0, 2), Code.INVALID_ORDER),
        (place(BUY, btc(10), usd(60_000), good_til_block=1), Code.INVALID_ORDER),
        (place(SELL, btc(10), usd(60_000), reduce_only=True), Code.REDUCE_ONLY_WOULD_INCREASE),
        (place(BUY, 10**10 * 1000, usd(60_000)), Code.INSUFFICIENT_MARGIN),
        (
            place(BUY, 2**62 // 10**6 * 10**6 + 10**6, usd(1)),
            Code.INVALID_ORDER,
        ),  # beyond the largest position
        (place(BUY, 10**13, 2**62 // TICK * TICK), Code.INVALID_ORDER),  # notional too large
        (cancel(5), Code.ORDER_NOT_FOUND),
        (cancel_client(5), Code.ORDER_NOT_FOUND),
        (cancel(1, market=9), Code.UNKNOWN_MARKET),
        (cancel_all(9), Code.UNKNOWN_MARKET),
        (amend(5, btc(10), usd(60_000)), Code.ORDER_NOT_FOUND),
    ],
)
def test_bad_input_codes(ex: Chain, action: PlaceOrder, code: Code) -> None:
    ex.run_block([])
    ex.run_block([])
    (result,) = ex.run_block([ex.tx(A, action)]).tx_results
    assert result.code == code, result.log
    assert stored_orders(ex) == []


def test_below_min_size(tmp_path: Path) -> None:
    state_markets = default_exchange_app_state()
    state_markets["markets"][0]["min_order_base_quantums"] = btc(10)
    chain = Chain(tmp_path / "db", {ALICE: FUNDS}, app_state=state_markets)
    (result,) = chain.run_block([chain.tx(A, place(BUY, btc(9), usd(60_000)))]).tx_results
    assert result.code == Code.BELOW_MIN_SIZE
    chain.close()


def test_duplicate_client_id_and_amend_rules(ex: Chain) -> None:
    run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=1)))
    assert _codes(ex, ex.tx(A, place(BUY, btc(10), usd(60_000), client_id=1))) == [Code.DUPLICATE_CLIENT_ID]
    assert _codes(ex, ex.tx(B, place(BUY, btc(10), usd(60_000), client_id=1))) == [0]  # per account
    assert _codes(ex, ex.tx(A, amend(1, btc(10), usd(60_000) + 7))) == [Code.OFF_TICK]
    assert _codes(ex, ex.tx(B, amend(1, btc(10), usd(60_000)))) == [Code.ORDER_NOT_FOUND]


def test_rate_limit_per_block(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path / "db")
    orders = [place(BUY, btc(1), usd(60_000 - i)) for i in range(50)]
    txs = [chain.tx(A, *orders[:25]), chain.tx(A, *orders[25:]), chain.tx(A, place(BUY, btc(1), usd(50_000)))]
    results = chain.run_block(txs).tx_results
    assert [r.code for r in results] == [0, 0, Code.RATE_LIMITED]
    assert "rate limited" in results[2].log
    # another market, another account and the next block are not limited
    results = chain.run_block([chain.tx(A, place(BUY, btc(1), usd(50_000)))]).tx_results
    assert_ok(results)
    assert_books_match_state(chain)
    chain.close()


def test_the_order_rate_window_is_a_token_bucket_over_blocks(tmp_path: Path) -> None:
    """`rate_limits`: at most 2 places/amends per 10 blocks on average over every market: a burst
    of 2, then one order per 5 blocks; blocks count it, check_tx refuses what the committed level
    forbids, each account has its own."""
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    state["rate_limits"] = {"window_blocks": 10, "orders_per_window": 2}
    chain = Chain(tmp_path / "db", {ALICE: FUNDS, BOB: FUNDS}, app_state=state)
    btc_bid = place(BUY, btc(1), usd(50_000))
    eth_bid = place(BUY, 10**9, 2_000 * 10**6, market=ETH)
    burst = [chain.tx(A, btc_bid), chain.tx(A, eth_bid), chain.tx(A, amend(1, btc(2), usd(49_000)))]
    results = chain.run_block(burst).tx_results
    assert [r.code for r in results] == [0, 0, Code.RATE_LIMITED]  # two markets share the window
    assert "more than 2 places and amends in 10 blocks" in results[2].log
    assert chain.app.check_tx(chain.tx(A, btc_bid), CheckTxKind.NEW).code == Code.RATE_LIMITED
    results = chain.run_block([chain.tx(B, btc_bid), chain.tx(A, btc_bid)]).tx_results
    assert [r.code for r in results] == [0, Code.RATE_LIMITED]
    for _ in range(3):
        chain.run_block([])
    # five blocks after the burst: room for one more order, not two
    results = chain.run_block([chain.tx(A, btc_bid), chain.tx(A, eth_bid)]).tx_results
    assert [r.code for r in results] == [0, Code.RATE_LIMITED]
    assert_books_match_state(chain)
    chain.close()


def test_open_order_cap(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path / "db")
    for block in range(4):
        txs = [chain.tx(A, *[place(BUY, btc(1), usd(50_000 + block * 25 + i)) for i in range(25)])]
        assert_ok(chain.run_block(txs).tx_results)
    assert position(chain, ALICE).open_orders == 100
    codes = _codes(
        chain,
        chain.tx(A, place(BUY, btc(1), usd(40_000))),
        chain.tx(A, place(BUY, btc(1), usd(40_000), IOC)),  # never rests: not capped
    )
    assert codes == [Code.TOO_MANY_OPEN_ORDERS, 0]
    assert_books_match_state(chain)
    chain.close()


def test_insufficient_margin_counts_open_orders(ex: Chain) -> None:
    # $1M at 5% initial margin: about $20M of notional in all, resting orders included
    ten_million = 10**10 * 150  # 150 BTC ~ $9.75M
    assert_ok(ex.run_block([ex.tx(A, place(BUY, ten_million, usd(65_000)))]).tx_results)
    assert _codes(ex, ex.tx(A, place(BUY, ten_million + btc(1000) * 100, usd(65_000)))) == [
        Code.INSUFFICIENT_MARGIN
    ]
    # a sell is netted against the resting buys: max(|0 + buys|, |0 - sells|)
    assert _codes(ex, ex.tx(A, place(SELL, ten_million, usd(66_000)))) == [0]


def test_transfer_out_is_refused_below_initial_margin(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, 10**10 * 100, usd(65_000))))
    run_ok(ex, ex.tx(A, place(BUY, 10**10 * 100, usd(65_000), IOC)))  # $6.5M long: $325k initial
    (result,) = ex.run_block([ex.tx(A, Transfer(DAVE, 700_000 * 10**6))]).tx_results
    assert result.code == Code.INSUFFICIENT_MARGIN
    (result,) = ex.run_block([ex.tx(A, Transfer(DAVE, 600_000 * 10**6))]).tx_results
    assert result.code == 0


def test_reduce_only_reduces_and_is_bounded_by_resting_orders(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(100), usd(65_000))))
    run_ok(ex, ex.tx(A, place(BUY, btc(100), usd(65_000), IOC)))  # alice long 0.01
    run_ok(ex, ex.tx(A, place(SELL, btc(60), usd(70_000), reduce_only=True)))
    codes = _codes(
        ex,
        ex.tx(A, place(SELL, btc(50), usd(70_000), reduce_only=True)),  # 60 + 50 > 100
        ex.tx(A, place(SELL, btc(40), usd(70_000), reduce_only=True)),
        ex.tx(A, place(BUY, btc(1), usd(60_000), reduce_only=True)),
    )
    assert codes == [Code.REDUCE_ONLY_WOULD_INCREASE, 0, Code.REDUCE_ONLY_WOULD_INCREASE]


def test_reduce_only_maker_is_cancelled_rather_than_flip(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(100), usd(65_000))))
    run_ok(ex, ex.tx(A, place(BUY, btc(100), usd(65_000), IOC)))  # alice long 0.01
    run_ok(ex, ex.tx(A, place(SELL, btc(100), usd(66_000), reduce_only=True)))  # 3
    run_ok(ex, ex.tx(A, place(SELL, btc(100), usd(65_500))))  # 4: a plain sell closes first
    results = ex.run_block([ex.tx(C, place(BUY, btc(200), usd(66_000), IOC))]).tx_results
    assert_ok(results)
    assert [f["maker_order_id"] for f in all_events(results, "order_filled")] == ["4"]
    assert all_events(results, "order_cancelled")[0] == {
        "order_id": "3", "market": "BTC-USD", "owner": str(ALICE), "reason": "maker_check",
    }  # fmt: skip
    assert position(ex, ALICE).size == 0


def test_maker_without_margin_is_cancelled_at_match_time(tmp_path: Path) -> None:
    validator = key(10)
    chain = exchange_chain(
        tmp_path / "db", funds=100_000 * 10**6, validators=[ValidatorUpdate(validator.public_key.raw, 10)]
    )
    # bob rests a sell of 20 BTC at $65,000: $65k initial requirement of his $100k
    assert_ok(chain.run_block([chain.tx(B, place(SELL, 10**10 * 20, usd(65_000)))]).tx_results)
    assert_ok(chain.run_block([chain.tx(C, place(SELL, btc(10), usd(65_001)))]).tx_results)
    # the oracle moves to $80,000: filling bob now would leave him $200k under water
    assert_ok(chain.run_block([chain.tx(validator, OracleVote(((BTC, usd(80_000)),)))]).tx_results)
    assert chain.account(BOB)["free_collateral"] == str(20_000 * 10**6 - PLACE_FEE)
    results = chain.run_block([chain.tx(A, place(BUY, 10**10 * 20, usd(65_001), IOC))]).tx_results
    assert_ok(results)
    assert all_events(results, "order_cancelled")[0] == {
        "order_id": "1", "market": "BTC-USD", "owner": str(BOB), "reason": "maker_check",
    }  # fmt: skip
    assert [f["maker"] for f in all_events(results, "order_filled")] == [str(CAROL)]
    assert position(chain, BOB) == Position()
    assert_books_match_state(chain)
    chain.close()


def test_fee_collector_is_an_ordinary_account(ex: Chain) -> None:
    run_ok(ex, ex.tx(B, place(SELL, btc(10), usd(65_000))))
    run_ok(ex, ex.tx(A, place(BUY, btc(10), usd(65_000), IOC)))
    assert ex.balance(FEE_COLLECTOR) == fees_collected(ex) > 0


def test_the_fee_is_paid_from_free_collateral_and_cancels_need_only_maintenance(ex: Chain) -> None:
    """An account with a position pays its fee from free collateral: with less free collateral
    than the fee, an order is refused (INSUFFICIENT_FEE, nothing written) while a cancel, which
    only lowers the requirement, still goes through above maintenance; no fee takes an account
    under water."""
    run_ok(ex, ex.tx(B, place(SELL, btc(10_000), usd(65_000))))
    run_ok(ex, ex.tx(A, place(BUY, btc(10_000), usd(65_000), IOC)))  # alice long 1 BTC
    free = int(str(ex.account(ALICE)["free_collateral"]))
    keep = 5  # free collateral left below the fee of even a cancel (10)
    run_ok(ex, ex.tx(A, Transfer(CAROL, free - PLACE_FEE - keep)))
    assert ex.account(ALICE)["free_collateral"] == str(keep)
    nonces = ex.nonces(ALICE)
    [refused] = ex.run_block([ex.tx(A, place(BUY, btc(1), usd(60_000)))]).tx_results
    assert refused.code == Code.INSUFFICIENT_FEE
    assert refused.log == f"insufficient fee: free collateral {keep} cannot pay the fee {PLACE_FEE}"
    assert ex.nonces(ALICE) == nonces and ex.account(ALICE)["free_collateral"] == str(keep)
    [cancelled] = ex.run_block([ex.tx(A, cancel_all())]).tx_results
    assert cancelled.code == 0, cancelled.log
    assert ex.account(ALICE)["free_collateral"] == str(keep - STANDARD_FEES[ActionKind.CANCEL_ALL])
