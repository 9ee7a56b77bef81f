"""Stop-loss and take-profit orders (`execution.risk.triggers`) executed in blocks: each direction fires
at its trigger price and not one tick before, market and limit execution, reduce-only triggers
that can no longer reduce, the firing order of several triggers in one block, the open-order
limit, cancels by order id, client id and cancel-all, margin at placement and when fired, queries,
and restart and replay determinism. Every block checks conservation and zero-sum positions
(`Chain.commit`); the fixture checks that the in-memory books and trigger indexes equal state."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consensus.app import CheckTxKind, ExecTxResult, FinalizeBlockResult, ValidatorUpdate
from execution.codes import Code
from execution.exchange.trigger_book import TriggerBook, TriggerOrder
from execution.genesis_state import default_exchange_app_state
from execution.markets import default_markets
from execution.risk.triggers import execution_price
from execution.tx import OracleVote, PlaceTrigger, Transfer, Tx, build_tx
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FUNDS,
    IOC,
    SELL,
    assert_books_match_state,
    assert_ok,
    attrs,
    btc,
    cancel,
    cancel_all,
    cancel_client,
    place,
    position,
    stored_orders,
    usd,
)

ALICE, BOB, CAROL = (address(i) for i in range(3))
A, B, C = (key(i) for i in range(3))
VALIDATOR = key(10)
STOP_LOSS, TAKE_PROFIT = 0, 1


def trigger(
    side: int,
    size: int,
    trigger_price: int,
    limit_price: int = 0,
    kind: int = STOP_LOSS,
    *,
    market: int = BTC,
    reduce_only: bool = False,
    client_id: int = 0,
) -> PlaceTrigger:
    return PlaceTrigger(market, side, size, trigger_price, limit_price, kind, int(reduce_only), client_id)


def trigger_chain(
    path: Path,
    market_overrides: dict[str, int] | None = None,
    funds: int = FUNDS,
    triggers: dict[str, int] | None = None,
) -> Chain:
    """BTC-USD and ETH-USD, accounts 0..3 holding `funds`, and one validator (key 10) whose votes
    alone move the oracle; `triggers` overrides fields of the genesis `triggers` section."""
    state: dict[str, Any] = default_exchange_app_state()
    state["triggers"] = {**state["triggers"], **(triggers or {})}
    state["oracle"] = {**state["oracle"], "max_vote_age_blocks": 1, "stale_after_blocks": 1_000_000}
    for market in state["markets"]:
        market.update(market_overrides or {})
    return Chain(
        path,
        {address(i): funds for i in range(4)},
        app_state=state,
        validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)],
    )


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Chain]:
    chain = trigger_chain(tmp_path / "db")
    yield chain
    assert_books_match_state(chain)
    chain.close()


def vote(chain: Chain, dollars: int, eth_dollars: int | None = None) -> bytes:
    prices = [(BTC, usd(dollars))]
    if eth_dollars is not None:
        prices.append((ETH, eth_dollars * 10**6))  # ETH-USD: $1 is 1,000,000 subticks
    return chain.tx(VALIDATOR, OracleVote(tuple(prices)))


def block(chain: Chain, *txs: bytes, ok: bool = True) -> FinalizeBlockResult:
    result = chain.run_block(list(txs))
    if ok:
        assert_ok(result.tx_results)
    return result


def kinds(result: FinalizeBlockResult | ExecTxResult, *names: str) -> list[dict[str, str]]:
    """The events of those kinds: a block's txs' (in block order), then its end-block events."""
    events = list(result.events)
    if isinstance(result, FinalizeBlockResult):
        events = [e for r in result.tx_results for e in r.events] + events
    return [attrs(e) for e in events if e.type in names]


def resting_trigger_ids(chain: Chain, market: int = BTC) -> list[int]:
    return [t.order_id for t in chain.app.books.triggers(market).triggers()]


def liquidity(chain: Chain) -> None:
    """Bob quotes 0.01 BTC: asks at $66,500 and $70,000, bids at $63,500 and $60,000."""
    block(
        chain,
        chain.tx(
            B,
            place(SELL, btc(100), usd(66_500)),
            place(SELL, btc(100), usd(70_000)),
            place(BUY, btc(100), usd(63_500)),
            place(BUY, btc(100), usd(60_000)),
        ),
    )


# -- shape and encoding -------------------------------------------------------------------------------


def test_decode_round_trip_and_execution_price() -> None:
    action = trigger(SELL, 5, 7, 9, TAKE_PROFIT, reduce_only=True, client_id=2**64 - 1)
    assert action.to_fields() == [8, BTC, SELL, 5, 7, 9, TAKE_PROFIT, 1, 2**64 - 1]
    assert Tx.decode(build_tx(A, "c", 1, [action])).actions == (action,)
    with pytest.raises(ValueError, match="size"):
        build_tx(A, "c", 1, [PlaceTrigger(BTC, 0, -1, 1)])
    btc_market = default_markets()[0]
    assert execution_price(btc_market, BUY, usd(66_000), 0) == usd(69_300)
    assert execution_price(btc_market, SELL, usd(64_000), 0) == usd(60_800)
    # 65,001 * 1.05 = 68,251.05 -> up to the tick; 65,001 * 0.95 = 61,750.95 -> down to the tick
    assert execution_price(btc_market, BUY, usd(65_001), 0) == usd(68_252)
    assert execution_price(btc_market, SELL, usd(65_001), 0) == usd(61_750)
    assert execution_price(btc_market, SELL, 100_000, 0) == 100_000  # at least one tick
    assert execution_price(btc_market, BUY, usd(66_000), usd(66_100)) == usd(66_100)


def test_bad_triggers_are_rejected_with_their_codes(ex: Chain) -> None:
    cases = [
        (trigger(BUY, btc(1), usd(66_000), kind=2), Code.INVALID_TRIGGER),
        (trigger(BUY, btc(1), 0), Code.INVALID_TRIGGER),
        (trigger(BUY, btc(1), usd(66_000) + 1), Code.OFF_TICK),
        (trigger(BUY, btc(1), usd(66_000), usd(66_000) + 1), Code.OFF_TICK),
        (trigger(2, btc(1), usd(66_000)), Code.INVALID_ORDER),
        (PlaceTrigger(BTC, BUY, btc(1), usd(66_000), 0, 0, 2), Code.INVALID_ORDER),
        (trigger(BUY, btc(1) + 1, usd(66_000)), Code.OFF_STEP),
        (trigger(BUY, 0, usd(66_000)), Code.INVALID_ORDER),
        (trigger(BUY, btc(1), usd(66_000), market=9), Code.UNKNOWN_MARKET),
        (trigger(BUY, 10**10 * 10_000, usd(66_000)), Code.INSUFFICIENT_MARGIN),
    ]
    results = block(ex, *(ex.tx(A, action) for action, _ in cases), ok=False).tx_results
    assert [r.code for r in results] == [int(code) for _, code in cases]
    # check_tx answers the same
    for action, code in cases:
        assert ex.app.check_tx(ex.tx(A, action), CheckTxKind.NEW).code == code
    assert resting_trigger_ids(ex) == []


# -- firing -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "kind", "trigger_dollars", "before_dollars", "fill_dollars"),
    [
        (BUY, STOP_LOSS, 66_000, 65_999, 66_500),  # fires when oracle >= trigger
        (SELL, TAKE_PROFIT, 66_000, 65_999, 63_500),  # fires when oracle >= trigger
        (SELL, STOP_LOSS, 64_000, 64_001, 63_500),  # fires when oracle <= trigger
        (BUY, TAKE_PROFIT, 64_000, 64_001, 66_500),  # fires when oracle <= trigger
    ],
)
def test_each_direction_fires_at_its_trigger_price_and_not_a_tick_before(
    ex: Chain, side: int, kind: int, trigger_dollars: int, before_dollars: int, fill_dollars: int
) -> None:
    liquidity(ex)
    placed = block(ex, ex.tx(A, trigger(side, btc(10), usd(trigger_dollars), kind=kind, client_id=5)))
    (event,) = kinds(placed.tx_results[0], "trigger_placed")
    price = execution_price(default_markets()[0], side, usd(trigger_dollars), 0)
    assert event == {
        "order_id": "5", "market": "BTC-USD", "owner": ALICE.raw.hex(), "side": ("buy", "sell")[side],
        "kind": ("stop_loss", "take_profit")[kind], "size": str(btc(10)),
        "trigger_price": str(usd(trigger_dollars)), "limit_price": "0", "execution_price": str(price),
        "reduce_only": "0", "client_id": "5",
    }  # fmt: skip
    assert position(ex, ALICE).open_orders == 1
    assert (position(ex, ALICE).open_buy, position(ex, ALICE).open_sell) == (0, 0)  # no margin reserved
    # one tick before: nothing
    result = block(ex, vote(ex, before_dollars))
    assert kinds(result, "trigger_triggered", "order_placed") == []
    assert resting_trigger_ids(ex) == [5]
    # at the trigger price: fires, placed as an IOC order at the slipped price, filled at bob's quote
    result = block(ex, vote(ex, trigger_dollars))
    (fired,) = kinds(result, "trigger_triggered")
    assert fired["order_id"] == "5"
    assert fired["oracle_price"] == str(usd(trigger_dollars))
    assert fired["placed_order_id"] == "6"
    (order,) = kinds(result, "order_placed")
    assert (order["order_id"], order["tif"], order["client_id"]) == ("6", "ioc", "5")
    (fill,) = kinds(result, "order_filled")
    assert (fill["price"], fill["size"], fill["taker"]) == (str(usd(fill_dollars)), str(btc(10)), str(ALICE))
    assert resting_trigger_ids(ex) == []
    p = position(ex, ALICE)
    assert (p.size, p.open_orders) == (btc(10) if side == BUY else -btc(10), 0)
    assert ex.app.triggered_orders_total == 1


def test_a_trigger_already_satisfied_fires_in_the_block_it_is_placed(ex: Chain) -> None:
    liquidity(ex)
    # the oracle is at $65,000: a sell stop at $65,500 (fires when oracle <= trigger) holds already
    result = block(ex, ex.tx(A, trigger(SELL, btc(10), usd(65_500))))
    assert [e["order_id"] for e in kinds(result, "trigger_triggered")] == ["5"]
    assert position(ex, ALICE).size == -btc(10)


def test_market_versus_limit_execution(ex: Chain) -> None:
    liquidity(ex)
    block(
        ex,
        ex.tx(A, trigger(BUY, btc(10), usd(66_000), usd(66_200), client_id=1)),  # 5: limit below the ask
        ex.tx(C, trigger(BUY, btc(10), usd(66_000))),  # 6: market: worst $69,300
        ex.tx(A, trigger(BUY, btc(200), usd(66_000), usd(66_000), kind=STOP_LOSS, market=BTC, client_id=2)),
    )
    result = block(ex, vote(ex, 66_000))
    # same trigger price: by order id
    assert [e["order_id"] for e in kinds(result, "trigger_triggered")] == ["5", "6", "7"]
    placed = kinds(result, "order_placed")
    assert [(p["order_id"], p["tif"], p["price"]) for p in placed] == [
        ("8", "gtc", str(usd(66_200))),
        ("9", "ioc", str(usd(69_300))),
        ("10", "gtc", str(usd(66_000))),
    ]
    # the limit orders rest on the book (they do not reach the $66,500 ask), keeping client ids
    assert [(o.order_id, o.client_id) for o in ex.app.books.book(BTC).open_orders(ALICE.raw)] == [
        (8, 1),
        (10, 2),
    ]
    (fill,) = kinds(result, "order_filled")
    assert (fill["taker_order_id"], fill["price"]) == ("9", str(usd(66_500)))
    assert position(ex, CAROL).size == btc(10)
    assert position(ex, ALICE).open_orders == 2
    # the client id now names the resting order
    result = block(ex, ex.tx(A, cancel_client(1)))
    assert kinds(result.tx_results[0], "order_cancelled")[0]["order_id"] == "8"


def test_a_market_trigger_without_liquidity_inside_its_bound_is_cancelled_as_ioc(ex: Chain) -> None:
    block(ex, ex.tx(B, place(SELL, btc(100), usd(70_000))))  # beyond 66,000 * 1.05 = 69,300
    block(ex, ex.tx(A, trigger(BUY, btc(10), usd(66_000))))
    result = block(ex, vote(ex, 67_000))
    assert [e["reason"] for e in kinds(result, "order_cancelled")] == ["ioc_remainder"]
    assert kinds(result, "order_filled") == []
    assert position(ex, ALICE).is_empty


def test_reduce_only_trigger_that_can_no_longer_reduce_is_cancelled(ex: Chain) -> None:
    liquidity(ex)
    block(ex, ex.tx(A, place(BUY, btc(100), usd(66_500), IOC)))  # alice long 0.01 BTC
    # two reduce-only sell stops for the whole position; a resting reduce-only take-profit too
    block(
        ex,
        ex.tx(
            A,
            trigger(SELL, btc(100), usd(63_900), reduce_only=True),  # 6
            trigger(SELL, btc(100), usd(64_000), reduce_only=True),  # 7
        ),
    )
    assert position(ex, ALICE).open_orders == 2
    result = block(ex, vote(ex, 63_800))
    # the higher trigger fires first (the order a fall crosses them) and closes the position
    assert [e["order_id"] for e in kinds(result, "trigger_triggered")] == ["7", "6"]
    (fill,) = kinds(result, "order_filled")
    assert (fill["taker"], fill["price"], fill["size"]) == (str(ALICE), str(usd(63_500)), str(btc(100)))
    (cancelled,) = kinds(result, "trigger_cancelled")
    assert (cancelled["order_id"], cancelled["reason"]) == ("6", "reduce_only_would_increase")
    assert [e["placed_order_id"] for e in kinds(result, "trigger_triggered")] == ["8", "0"]
    assert position(ex, ALICE).size == 0
    assert position(ex, ALICE).open_orders == 0


def test_firing_order_of_several_triggers_in_one_block(ex: Chain) -> None:
    # limit triggers far from any liquidity, so each just rests when it fires
    block(
        ex,
        ex.tx(A, trigger(BUY, btc(1), usd(66_000), usd(50_000))),  # 1 rise 66,000
        ex.tx(B, trigger(BUY, btc(1), usd(65_500), usd(50_000))),  # 2 rise 65,500
        ex.tx(C, trigger(SELL, btc(1), usd(66_000), usd(90_000), TAKE_PROFIT)),  # 3 rise 66,000
        ex.tx(A, trigger(SELL, btc(1), usd(68_000), usd(90_000), TAKE_PROFIT)),  # 4 rise: not reached
        ex.tx(B, trigger(SELL, btc(1), usd(60_000), usd(90_000))),  # 5 fall 60,000: not reached
        ex.tx(C, trigger(BUY, 10**9, 3_600 * 10**6, 2_000 * 10**6, market=ETH)),  # ETH 1 rise $3,600
    )
    assert resting_trigger_ids(ex) == [1, 2, 3, 4, 5]  # order ids count per market
    # in the block of the move, two fall triggers that already hold at $67,000
    result = block(
        ex,
        vote(ex, 67_000, 3_600),
        ex.tx(A, trigger(SELL, btc(1), usd(67_500), usd(90_000))),  # 6 fall 67,500
        ex.tx(B, trigger(SELL, btc(1), usd(68_000), usd(90_000))),  # 7 fall 68,000
    )
    fired = kinds(result, "trigger_triggered")
    # BTC first (market id order): rise by ascending trigger (then id), then fall by descending
    assert [e["order_id"] for e in fired] == ["2", "1", "3", "7", "6", "1"]
    assert [e["market"] for e in fired] == ["BTC-USD"] * 5 + ["ETH-USD"]
    assert [e["placed_order_id"] for e in fired] == ["8", "9", "10", "11", "12", "2"]
    assert resting_trigger_ids(ex) == [4, 5]
    assert [o.order_id for o in stored_orders(ex)] == [8, 9, 10, 11, 12]


def test_the_per_block_cap_leaves_the_rest_for_the_next_block_in_the_same_order(tmp_path: Path) -> None:
    """Within a market the leftovers keep their order; across markets the next block starts from
    another market (`execution.markets.rotated`, tests/execution/test_trigger_fairness.py)."""
    chain = trigger_chain(tmp_path / "db", triggers={"max_triggers_per_block": 3})
    # limit triggers far from any liquidity, so each just rests when it fires
    block(
        chain,
        chain.tx(A, trigger(BUY, btc(1), usd(66_000), usd(50_000))),  # 1 rise 66,000
        chain.tx(B, trigger(BUY, btc(1), usd(65_500), usd(50_000))),  # 2 rise 65,500
        chain.tx(C, trigger(SELL, btc(1), usd(66_000), usd(90_000), TAKE_PROFIT)),  # 3 rise 66,000
        chain.tx(C, trigger(BUY, 10**9, 3_600 * 10**6, 2_000 * 10**6, market=ETH)),  # ETH 1 rise $3,600
    )
    # the move (height 2: BTC-USD first) reaches all six (4 and 5 already hold at $67,000); three
    # fire, in the documented order
    result = block(
        chain,
        vote(chain, 67_000, 3_600),
        chain.tx(A, trigger(SELL, btc(1), usd(67_500), usd(90_000))),  # 4 fall 67,500
        chain.tx(B, trigger(SELL, btc(1), usd(68_000), usd(90_000))),  # 5 fall 68,000
    )
    assert [e["order_id"] for e in kinds(result, "trigger_triggered")] == ["2", "1", "3"]
    assert resting_trigger_ids(chain) == [4, 5] and resting_trigger_ids(chain, ETH) == [1]
    assert position(chain, ALICE).open_orders == 2  # trigger 4 and the order trigger 1 placed
    assert_books_match_state(chain)
    # the next block (same prices; height 3: ETH-USD first) fires the leftovers, BTC-USD's still in
    # that order
    second = kinds(block(chain), "trigger_triggered")
    assert [(e["market"], e["order_id"]) for e in second] == [
        ("ETH-USD", "1"),
        ("BTC-USD", "5"),
        ("BTC-USD", "4"),
    ]
    assert resting_trigger_ids(chain) == [] and resting_trigger_ids(chain, ETH) == []
    assert_books_match_state(chain)
    chain.close()


def test_a_capped_trigger_that_the_price_leaves_keeps_resting(tmp_path: Path) -> None:
    chain = trigger_chain(tmp_path / "db", triggers={"max_triggers_per_block": 1})
    block(
        chain,
        chain.tx(A, trigger(BUY, btc(1), usd(65_500), usd(50_000))),  # 1 rise 65,500
        chain.tx(B, trigger(BUY, btc(1), usd(66_000), usd(50_000))),  # 2 rise 66,000
    )
    fired = kinds(block(chain, vote(chain, 66_000)), "trigger_triggered")
    assert [e["order_id"] for e in fired] == ["1"]
    # the price falls back before the next block's end: trigger 2 is not reached any more
    assert kinds(block(chain, vote(chain, 65_000)), "trigger_triggered") == []
    assert resting_trigger_ids(chain) == [2]
    chain.close()


def test_triggered_order_without_margin_is_cancelled(ex: Chain) -> None:
    liquidity(ex)
    # 1 BTC long at the trigger needs $3,300 initial (5%) + slippage + fees: fine with $1M
    block(ex, ex.tx(A, trigger(BUY, btc(10_000), usd(66_000))))
    # alice moves almost everything away (a resting trigger reserves nothing)
    block(ex, ex.tx(A, Transfer(BOB, FUNDS - 1_000 * 10**6)))
    result = block(ex, vote(ex, 66_000))
    (cancelled,) = kinds(result, "trigger_cancelled")
    assert cancelled["reason"] == "insufficient_margin"
    assert "insufficient margin" in cancelled["log"]
    assert kinds(result, "order_placed", "order_filled") == []
    assert position(ex, ALICE).is_empty
    # the failed placement gave its order id back: the next order takes it
    block(ex, ex.tx(C, place(BUY, btc(1), usd(50_000))))
    assert stored_orders(ex)[-1].order_id == 6


# -- limits and cancels -------------------------------------------------------------------------------


def test_open_order_limit_counts_triggers(tmp_path: Path) -> None:
    chain = trigger_chain(tmp_path / "db", {"max_open_orders": 3})
    block(chain, chain.tx(A, place(BUY, btc(1), usd(60_000)), place(BUY, btc(1), usd(60_001))))
    block(chain, chain.tx(A, trigger(SELL, btc(1), usd(60_000), client_id=4)))  # order 3
    assert position(chain, ALICE).open_orders == 3
    results = block(
        chain,
        chain.tx(A, trigger(SELL, btc(1), usd(59_000))),
        chain.tx(A, place(BUY, btc(1), usd(60_002))),
        ok=False,
    ).tx_results
    assert [r.code for r in results] == [Code.TOO_MANY_OPEN_ORDERS] * 2
    assert "resting orders and triggers" in results[0].log
    block(chain, chain.tx(A, cancel_client(4)))
    assert position(chain, ALICE).open_orders == 2
    block(chain, chain.tx(A, trigger(SELL, btc(1), usd(59_000))))
    assert position(chain, ALICE).open_orders == 3
    assert_books_match_state(chain)
    chain.close()


def test_cancel_by_order_id_client_id_and_cancel_all(ex: Chain) -> None:
    block(
        ex,
        ex.tx(
            A,
            trigger(SELL, btc(1), usd(60_000)),  # 1
            trigger(SELL, btc(1), usd(59_000), client_id=7),  # 2
            trigger(BUY, btc(1), usd(70_000), client_id=8),  # 3
            place(BUY, btc(1), usd(50_000), client_id=9),  # 4
            trigger(BUY, 10**9, 4_000 * 10**6, market=ETH),  # ETH 1
        ),
        ex.tx(B, trigger(SELL, btc(1), usd(60_000))),  # 5
    )
    assert position(ex, ALICE).open_orders == 4
    # a client id is shared between orders and triggers
    (dup,) = block(ex, ex.tx(A, trigger(SELL, btc(1), usd(58_000), client_id=9)), ok=False).tx_results
    assert dup.code == Code.DUPLICATE_CLIENT_ID
    # nobody cancels another's trigger; check_tx validates trigger cancels too
    (other,) = block(ex, ex.tx(B, cancel(1)), ok=False).tx_results
    assert other.code == Code.ORDER_NOT_FOUND
    assert ex.app.check_tx(ex.tx(A, cancel(1)), CheckTxKind.NEW).code == 0
    assert ex.app.check_tx(ex.tx(A, cancel_client(7)), CheckTxKind.NEW).code == 0
    assert ex.app.check_tx(ex.tx(B, cancel_client(7)), CheckTxKind.NEW).code == Code.ORDER_NOT_FOUND
    result = block(ex, ex.tx(A, cancel(1)), ex.tx(A, cancel_client(7)))
    assert [(e["order_id"], e["reason"]) for e in kinds(result, "trigger_cancelled")] == [
        ("1", "user"),
        ("2", "user"),
    ]
    assert resting_trigger_ids(ex) == [3, 5]
    # the freed client id can be used again; a cancelled trigger is gone
    (again,) = block(ex, ex.tx(A, cancel(1)), ok=False).tx_results
    assert again.code == Code.ORDER_NOT_FOUND
    result = block(ex, ex.tx(A, cancel_all(0)))
    cancelled = kinds(result, "order_cancelled", "trigger_cancelled")
    assert [(e["order_id"], e["market"]) for e in cancelled] == [
        ("4", "BTC-USD"),
        ("3", "BTC-USD"),
        ("1", "ETH-USD"),
    ]
    assert resting_trigger_ids(ex) == [5]
    assert resting_trigger_ids(ex, ETH) == []
    assert position(ex, ALICE).is_empty
    assert position(ex, ALICE, ETH).is_empty


def test_a_failed_tx_leaves_no_trigger_behind(ex: Chain) -> None:
    block(ex, ex.tx(A, trigger(SELL, btc(1), usd(60_000), client_id=3)))
    # places a trigger and cancels the first, then fails: both undone
    raw = ex.tx(A, trigger(SELL, btc(1), usd(59_000)), cancel_client(3), cancel(99))
    (result,) = block(ex, raw, ok=False).tx_results
    assert result.code == Code.ORDER_NOT_FOUND
    assert resting_trigger_ids(ex) == [1]
    assert position(ex, ALICE).open_orders == 1
    # the ids the failed tx took are given back
    block(ex, ex.tx(A, trigger(SELL, btc(1), usd(59_000))))
    assert resting_trigger_ids(ex) == [1, 2]


# -- queries ------------------------------------------------------------------------------------------


def test_account_and_market_trigger_queries(ex: Chain) -> None:
    block(
        ex,
        ex.tx(A, trigger(SELL, btc(10), usd(60_000), usd(59_000), client_id=2)),  # 1 fall
        ex.tx(A, trigger(BUY, btc(10), usd(70_000))),  # 2 rise
        ex.tx(B, trigger(SELL, btc(10), usd(61_000), kind=STOP_LOSS)),  # 3 fall
    )
    triggers = ex.account(ALICE)["triggers"]
    assert isinstance(triggers, list)
    assert [t["order_id"] for t in triggers] == ["1", "2"]
    assert triggers[0] == {
        "order_id": "1", "market": "BTC-USD", "owner": ALICE.raw.hex(), "side": "sell", "kind": "stop_loss",
        "size": str(btc(10)), "size_human": "0.001", "trigger_price": str(usd(60_000)),
        "trigger_price_human": "60000", "limit_price": str(usd(59_000)), "limit_price_human": "59000",
        "execution_price": str(usd(59_000)), "execution_price_human": "59000",
        "fires_when": "oracle <= trigger", "reduce_only": False, "client_id": "2",
    }  # fmt: skip
    assert triggers[1]["execution_price"] == str(usd(73_500))
    result = ex.app.query("/triggers/BTC-USD", b"", 0, False)
    assert result.code == 0
    value = json.loads(result.value)
    assert [t["order_id"] for t in value["rise"]] == ["2"]
    assert [t["order_id"] for t in value["fall"]] == ["3", "1"]
    assert ex.app.query("/triggers/NOPE", b"", 0, False).code == Code.INVALID_QUERY


# -- index, restart and replay ------------------------------------------------------------------------


def test_trigger_book_fires_only_what_the_price_reaches() -> None:
    owner = b"\x01" * 20
    rise = [
        TriggerOrder(i, owner, BUY, 1, price, 0, STOP_LOSS, False, 0)
        for i, price in ((1, 30), (2, 10), (3, 20), (4, 10))
    ]
    fall = [
        TriggerOrder(i, owner, SELL, 1, price, 0, STOP_LOSS, False, 0)
        for i, price in ((5, 5), (6, 8), (7, 8))
    ]
    book = TriggerBook.of(rise + fall)
    assert book.next_prices() == (10, 8)
    assert book.fire(9) == []
    assert [t.order_id for t in book.fire(20)] == [2, 4, 3]
    assert [t.order_id for t in book.fire(8)] == [6, 7]
    assert book.remove(5) is not None and book.remove(5) is None
    assert [t.order_id for t in book.triggers()] == [1]
    assert book.remove_owner(owner)[0].order_id == 1
    assert len(book) == 0


def _scenario(chain: Chain, restart_at: int | None) -> list[bytes]:
    steps: list[list[bytes]] = [
        [chain.tx(B, place(SELL, btc(100), usd(66_500)), place(BUY, btc(100), usd(63_500)))],
        [
            chain.tx(A, trigger(BUY, btc(10), usd(66_000))),
            chain.tx(C, trigger(SELL, btc(10), usd(64_000), usd(63_000))),
        ],
        [chain.tx(A, trigger(SELL, btc(10), usd(64_800), reduce_only=True, client_id=1))],
        [vote(chain, 66_000)],
        [vote(chain, 64_500)],
        [vote(chain, 63_900)],
    ]
    for i, txs in enumerate(steps):
        if restart_at == i:
            chain.reopen()
            assert_books_match_state(chain)
        block(chain, *txs)
    return chain.app_hashes


def test_books_match_state_counts_resting_triggers(ex: Chain) -> None:
    block(ex, ex.tx(A, trigger(SELL, btc(1), usd(60_000)), place(BUY, btc(1), usd(50_000))))
    assert position(ex, ALICE).open_orders == 2
    assert_books_match_state(ex)  # one book order and one trigger: open_orders 2


def test_restart_rebuilds_the_index_and_replay_gives_the_same_app_hashes(tmp_path: Path) -> None:
    hashes = []
    for run, restart_at in enumerate((None, 3, 4, 5)):
        chain = trigger_chain(tmp_path / f"db{run}")
        hashes.append(_scenario(chain, restart_at))
        assert_books_match_state(chain)
        assert resting_trigger_ids(chain) == []
        assert position(chain, ALICE).size == 0  # bought at 66,000's trigger, sold by the stop
        chain.close()
    assert all(h == hashes[0] for h in hashes)


def test_triggers_wait_while_the_market_is_stale(tmp_path: Path) -> None:
    state: dict[str, Any] = default_exchange_app_state()
    state["oracle"] = {**state["oracle"], "max_vote_age_blocks": 1, "stale_after_blocks": 2}
    chain = Chain(
        tmp_path / "db",
        {address(i): FUNDS for i in range(4)},
        app_state=state,
        validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)],
    )
    for _ in range(3):
        block(chain)  # no votes: the genesis price goes stale
    (stale,) = block(chain, chain.tx(A, trigger(SELL, btc(1), usd(66_000))), ok=False).tx_results
    assert stale.code == Code.MARKET_STALE
    # a reduce-only trigger is accepted; its condition holds ($65,000 <= $66,000) but it waits
    result = block(chain, chain.tx(A, trigger(SELL, btc(1), usd(66_000), reduce_only=True)))
    assert kinds(result, "trigger_triggered") == []
    assert resting_trigger_ids(chain) == [1]
    # a fresh price fires it: with no position to reduce, it is cancelled
    result = block(chain, vote(chain, 65_000))
    assert [e["order_id"] for e in kinds(result, "trigger_triggered")] == ["1"]
    assert [e["reason"] for e in kinds(result, "trigger_cancelled")] == ["reduce_only_would_increase"]
    assert resting_trigger_ids(chain) == []
    assert_books_match_state(chain)
    chain.close()
