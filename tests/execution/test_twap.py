"""TWAP orders (`execution.exchange.twap`): slice sizes and prices, the slices' timing by height,
a failed slice skipped with its size kept, cancel, the per-owner limit, the per-block cap and its
carry, the `/twaps` query, and the due index equal to the records after every block. Blocks run
through the Chain helper (conservation and zero net size checked after every block)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import CheckTxKind, FinalizeBlockResult
from execution.codes import Code
from execution.exchange import twap as twap_module
from execution.exchange.twap import Twap, slice_price, slice_size
from execution.fees import FeeParams
from execution.genesis_state import default_exchange_app_state
from execution.state import CommittedState
from execution.tx import CancelTwap, PlaceTwap, Tx, build_tx, standard_fee
from primitives import codec
from storage import schema
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    FUNDS,
    SELL,
    assert_books_match_state,
    assert_ok,
    attrs,
    btc,
    exchange_chain,
    place,
    position,
    usd,
)

ALICE, BOB = address(0), address(1)
A, B = key(0), key(1)
TICK = 100_000
STEP = 1_000_000


def twap(
    side: int, size: int, slices: int, interval: int = 1, slippage: int = 10_000, *, reduce_only: bool = False
) -> PlaceTwap:
    return PlaceTwap(BTC, side, size, slices, interval, slippage, int(reduce_only))


def due_entries(chain: Chain) -> list[tuple[int, bytes, int]]:
    state = CommittedState(chain.db)
    return [schema.twap_due_entry(k) for k, _ in state.iterate(schema.APP_TWAP_DUE_PREFIX)]


def records(chain: Chain) -> list[tuple[int, bytes, int]]:
    """(next height, owner, twap id) of every stored TWAP record."""
    state = CommittedState(chain.db)
    out = []
    for k, raw in state.iterate(schema.APP_TWAP_PREFIX):
        owner, twap_id = k[len(schema.APP_TWAP_PREFIX) : -8], int.from_bytes(k[-8:], "big")
        out.append((Twap.decode(raw).next_height, owner, twap_id))
    return sorted(out)


def block(chain: Chain, *txs: bytes, ok: bool = True) -> FinalizeBlockResult:
    result = chain.run_block(list(txs))
    if ok:
        assert_ok(result.tx_results)
    assert due_entries(chain) == records(chain)  # the due index always equals the records
    return result


def slices_of(result: FinalizeBlockResult) -> list[dict[str, str]]:
    return [attrs(e) for e in result.events if e.type == "twap_slice"]


def ended(result: FinalizeBlockResult, kind: str) -> list[dict[str, str]]:
    events = [e for r in result.tx_results for e in r.events] + list(result.events)
    return [attrs(e) for e in events if e.type == kind]


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Chain]:
    chain = exchange_chain(tmp_path / "db")
    yield chain
    assert_books_match_state(chain)
    chain.close()


def asks(chain: Chain, size: int = btc(1000)) -> None:
    """Bob offers `size` at $65,100 and bids `size` at $64,900 (the oracle is $65,000)."""
    block(chain, chain.tx(B, place(SELL, size, usd(65_100)), place(BUY, size, usd(64_900))))


# -- pure functions -------------------------------------------------------------------------------------


def test_slice_price_moves_against_the_trader_and_rounds_outward() -> None:
    assert slice_price(usd(65_000), BUY, 10_000, TICK) == usd(65_650)
    assert slice_price(usd(65_000), SELL, 10_000, TICK) == usd(64_350)
    # 65,001 * 1.001 = 65,066.001 -> up to $65,067; * 0.999 = 64,935.999 -> down to $64,935
    assert slice_price(usd(65_001), BUY, 1_000, TICK) == usd(65_067)
    assert slice_price(usd(65_001), SELL, 1_000, TICK) == usd(64_935)
    assert slice_price(TICK, SELL, 100_000, TICK) == TICK  # at least one tick


@settings(max_examples=200, deadline=None)
@given(
    steps=st.integers(1, 10**6),
    slices=st.integers(2, 1_000),
    min_steps=st.integers(1, 50),
)
def test_slices_sum_to_the_total_when_all_fill(steps: int, slices: int, min_steps: int) -> None:
    total, minimum = steps * STEP, min_steps * STEP
    remaining, placed = total, []
    for left in range(slices, 0, -1):
        size = slice_size(remaining, left, STEP)
        assert size % STEP == 0 and 0 <= size <= remaining
        if left > 1 and size < minimum:
            continue  # merged into the next
        placed.append(size)
        remaining -= size
    assert sum(placed) == total and remaining == 0
    assert placed[-1] == slice_size(placed[-1], 1, STEP)


@settings(max_examples=200, deadline=None)
@given(oracle=st.integers(1, 10**12), side=st.sampled_from([BUY, SELL]), slip=st.integers(1, 100_000))
def test_slice_price_is_the_exact_rounded_bound(oracle: int, side: int, slip: int) -> None:
    price = slice_price(oracle * 7, side, slip, TICK)
    assert price % TICK == 0 and price >= TICK
    exact_num = oracle * 7 * (10**6 + (slip if side == BUY else -slip))
    if side == BUY:
        assert price * 10**6 >= exact_num > (price - TICK) * 10**6
    else:
        assert price == TICK or (price * 10**6 <= exact_num < (price + TICK) * 10**6)


def test_wire_form_fee_and_json(ex: Chain) -> None:
    action = twap(SELL, btc(5), 7, 3, 99, reduce_only=True)
    assert action.to_fields() == [10, BTC, SELL, btc(5), 7, 3, 99, 1]
    assert CancelTwap(BTC, 4).to_fields() == [11, BTC, 4]
    decoded = Tx.decode(build_tx(A, "c", 1, [action, CancelTwap(BTC, 4)])).actions
    assert decoded == (action, CancelTwap(BTC, 4))
    assert standard_fee([action, CancelTwap(BTC, 4)]) == 110
    assert FeeParams().fee_of([action, CancelTwap(BTC, 4)]) == 110
    with pytest.raises(ValueError, match="slices"):
        build_tx(A, "c", 1, [PlaceTwap(BTC, BUY, 1, -1, 1, 1)])


# -- through the chain ----------------------------------------------------------------------------------


def test_slices_run_every_interval_from_the_placing_block_and_sum_to_the_total(ex: Chain) -> None:
    asks(ex)
    placed = block(ex, ex.tx(A, twap(BUY, btc(10), 4, interval=3)))
    (event,) = ended(placed, "twap_placed")
    assert event["twap_id"] == "1" and event["slices"] == "4"
    finished_at = 0
    runs = [(ex.height, slices_of(placed))]
    for _ in range(10):
        result = block(ex)
        runs.append((ex.height, slices_of(result)))
        if ended(result, "twap_finished"):
            (finished,) = ended(result, "twap_finished")
            finished_at = ex.height
            assert finished == {
                "twap_id": "1", "market": "BTC-USD", "owner": ALICE.raw.hex(),
                "filled": str(btc(10)), "remaining": "0",
            }  # fmt: skip
    heights = [h for h, s in runs if s]
    first = runs[0][0]
    assert heights == [first, first + 3, first + 6, first + 9]
    assert finished_at == first + 9
    sizes = [int(s[0]["size"]) for h, s in runs if s]
    assert sizes == [btc(2), btc(2), btc(3), btc(3)]  # 10/4 -> 2, 8/3 -> 2, 6/2 -> 3, the rest 3
    assert all(s[0]["code"] == "ok" and s[0]["filled"] == s[0]["size"] for _, s in runs if s)
    assert all(s[0]["price_limit"] == str(usd(65_650)) for _, s in runs if s)
    assert position(ex, ALICE).size == btc(10)
    assert records(ex) == []


def test_failed_slices_are_skipped_and_their_size_kept(ex: Chain) -> None:
    asks(ex)
    # reduce-only without a position: every slice would increase it
    result = block(ex, ex.tx(A, twap(SELL, btc(4), 2, reduce_only=True)))
    (first,) = slices_of(result)
    assert first["code"] == "reduce_only_would_increase" and first["filled"] == "0"
    assert first["log"]
    ((_, owner, twap_id),) = records(ex)
    stored = twap_module.load_twap(CommittedState(ex.db), owner, twap_id)
    assert stored is not None and stored.remaining == btc(4) and stored.slices_left == 1
    # a position appears: the last slice takes all that remains and reduces it
    block(ex, ex.tx(A, place(BUY, btc(10), usd(65_100))), ok=True)
    # (the slice of this block ran after the buy: it sold the whole remaining size)
    assert records(ex) == []
    assert position(ex, ALICE).size == btc(6)


def test_unfilled_part_of_a_slice_stays_in_remaining(ex: Chain) -> None:
    block(ex, ex.tx(B, place(SELL, btc(1), usd(65_100))))  # only 0.0001 BTC offered
    result = block(ex, ex.tx(A, twap(BUY, btc(6), 3, interval=5)))
    (s,) = slices_of(result)
    assert (s["size"], s["filled"], s["code"]) == (str(btc(2)), str(btc(1)), "ok")
    ((_, owner, twap_id),) = records(ex)
    stored = twap_module.load_twap(CommittedState(ex.db), owner, twap_id)
    assert stored is not None
    assert (stored.remaining, stored.filled, stored.slices_left) == (btc(5), btc(1), 2)
    assert stored.next_height == ex.height + 5


def test_margin_failure_is_skipped_with_its_code(tmp_path: Path) -> None:
    chain = exchange_chain(tmp_path / "db", funds=1_000 * 10**6)  # $1,000
    try:
        block(chain, chain.tx(B, place(SELL, btc(1_000), usd(65_100))))
        result = block(chain, chain.tx(A, twap(BUY, btc(10_000), 2)))
        (s,) = slices_of(result)
        assert s["code"] == "insufficient_margin"
        assert position(chain, ALICE).size == 0
    finally:
        chain.close()


def test_cancel_removes_record_and_index(ex: Chain) -> None:
    asks(ex)
    block(ex, ex.tx(A, twap(BUY, btc(9), 3, interval=10)))
    result = block(ex, ex.tx(A, CancelTwap(BTC, 1)))
    (cancelled,) = ended(result, "twap_cancelled")
    assert (cancelled["filled"], cancelled["remaining"]) == (str(btc(3)), str(btc(6)))
    assert records(ex) == [] and due_entries(ex) == []
    for _ in range(11):
        assert slices_of(block(ex)) == []
    assert position(ex, ALICE).size == btc(3)
    again = block(ex, ex.tx(A, CancelTwap(BTC, 1)), ex.tx(B, CancelTwap(BTC, 1)), ok=False)
    assert [r.code for r in again.tx_results] == [Code.ORDER_NOT_FOUND] * 2


def test_cancel_needs_the_right_market_and_owner(ex: Chain) -> None:
    block(ex, ex.tx(A, twap(BUY, btc(9), 3, interval=10)))
    result = block(ex, ex.tx(A, CancelTwap(2, 1)), ex.tx(B, CancelTwap(BTC, 1)), ok=False)
    assert [r.code for r in result.tx_results] == [Code.ORDER_NOT_FOUND] * 2
    assert len(records(ex)) == 1


def test_bad_twaps_are_refused_with_their_codes(ex: Chain) -> None:
    cases = [
        (PlaceTwap(9, BUY, btc(1), 2, 1, 1), Code.UNKNOWN_MARKET),
        (PlaceTwap(BTC, 2, btc(1), 2, 1, 1), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 2, 1, 1, 2), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, 0, 2, 1, 1), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 1, 1, 1), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 1_001, 1, 1), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 2, 0, 1), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 2, 1_001, 1), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 2, 1, 0), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1), 2, 1, 100_001), Code.INVALID_ORDER),
        (PlaceTwap(BTC, BUY, btc(1) + 1, 2, 1, 1), Code.OFF_STEP),
    ]
    results = block(ex, *(ex.tx(A, action) for action, _ in cases), ok=False).tx_results
    assert [r.code for r in results] == [int(code) for _, code in cases]
    for action, code in cases:
        assert ex.app.check_tx(ex.tx(A, action), CheckTxKind.NEW).code == code
    # the edges are accepted
    edges = [PlaceTwap(BTC, BUY, btc(2), 1_000, 1_000, 100_000), PlaceTwap(BTC, SELL, btc(2), 2, 1, 1)]
    block(ex, *(ex.tx(A, action) for action in edges))
    assert len(records(ex)) == 2


def test_at_most_ten_live_twaps_per_owner(ex: Chain) -> None:
    block(ex, *(ex.tx(A, twap(BUY, btc(2), 2, interval=100)) for _ in range(10)))
    result = block(ex, ex.tx(A, twap(BUY, btc(2), 2, interval=100)), ex.tx(B, twap(BUY, btc(2), 2)), ok=False)
    assert [r.code for r in result.tx_results] == [Code.TOO_MANY_OPEN_ORDERS, 0]
    assert ex.app.check_tx(ex.tx(A, twap(BUY, btc(2), 2)), CheckTxKind.NEW).code == Code.TOO_MANY_OPEN_ORDERS
    ids = sorted(i for _, o, i in records(ex) if o == ALICE.raw)
    assert ids == list(range(1, 11))  # a per-owner counter


def test_per_block_cap_carries_the_rest_in_due_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(twap_module, "MAX_TWAP_SLICES_PER_BLOCK", 3)
    chain = exchange_chain(tmp_path / "db", traders=5)
    try:
        asks(chain)
        buyers = [0, 2, 3, 4]  # Bob (1) is the seller
        first = block(chain, *(chain.tx(key(i), twap(BUY, btc(4), 2, interval=1)) for i in buyers))
        h = chain.height
        by_owner = sorted(address(i).raw for i in buyers)
        assert [s["owner"] for s in slices_of(first)] == [o.hex() for o in by_owner[:3]]
        assert CommittedState(chain.db).get(schema.TWAP_CARRY) == codec.encode(h)
        second = slices_of(block(chain))
        # the one carried from h first, then the first two of the three due at h + 1
        assert [s["owner"] for s in second] == [o.hex() for o in (by_owner[3], *by_owner[:2])]
        assert due_entries(chain)[0][0] == h + 1  # the one left waits at its own height
        third = slices_of(block(chain))
        assert [s["owner"] for s in third] == [o.hex() for o in (by_owner[2], by_owner[3])]
        assert due_entries(chain) == []
        assert CommittedState(chain.db).get(schema.TWAP_CARRY) is None
        assert [position(chain, address(i)).size for i in buyers] == [btc(4)] * 4
    finally:
        chain.close()


def test_twaps_query(ex: Chain) -> None:
    block(ex, ex.tx(A, twap(SELL, btc(30), 3, interval=50)))
    result = ex.app.query(f"/twaps/{ALICE}", b"", 0, False)
    assert result.code == 0, result.log
    value = json.loads(result.value)
    (item,) = value["twaps"]
    assert value["address"] == str(ALICE)
    assert item["twap_id"] == "1" and item["market"] == "BTC-USD" and item["side"] == "sell"
    assert item["size_human"] == "0.003" and item["slices_left"] == "2"  # the first slice found no bid
    assert item["remaining"] == str(btc(30)) and item["next_height"] == str(ex.height + 50)
    assert json.loads(ex.app.query(f"/twaps/{BOB}", b"", 0, False).value)["twaps"] == []
    assert ex.app.query("/twaps/xyz", b"", 0, False).code == Code.INVALID_QUERY


def test_slices_below_the_minimum_merge_into_the_next(tmp_path: Path) -> None:
    state = default_exchange_app_state()
    state["oracle"] = {**state["oracle"], "max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    for market in state["markets"]:
        market["min_order_base_quantums"] = 3 * STEP
    chain = Chain(tmp_path / "db", {address(i): FUNDS for i in range(2)}, app_state=state)
    try:
        asks(chain)
        runs = [slices_of(block(chain, chain.tx(A, twap(BUY, btc(7), 4))))]
        runs += [slices_of(block(chain)) for _ in range(3)]
        got = [(s["size"], s["filled"], s["code"]) for (s,) in runs]
        # 7/4 -> 1 and 7/3 -> 2 are below 3: merged; then 7/2 -> 3; the last takes 4
        assert got == [
            (str(btc(1)), "0", "merged"),
            (str(btc(2)), "0", "merged"),
            (str(btc(3)), str(btc(3)), "ok"),
            (str(btc(4)), str(btc(4)), "ok"),
        ]
        assert position(chain, ALICE).size == btc(7) and records(chain) == []
    finally:
        chain.close()
