"""Scale orders (`execution.exchange.scale`): prices and sizes exactly as specified for random
inputs, the orders placed through the normal path with client ids base + k, all-or-nothing on a
failing order, the refusals at validation, and the fee of n placements. Blocks run through the
Chain helper (conservation and zero net size checked after every block)."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import CheckTxKind, FinalizeBlockResult
from execution.codes import Code
from execution.exchange.scale import scale_prices, scale_sizes
from execution.fees import FeeParams
from execution.tx import PlaceScale, Tx, build_tx, standard_fee
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    GTC,
    POST_ONLY,
    SELL,
    assert_books_match_state,
    assert_ok,
    attrs,
    book_orders,
    btc,
    exchange_chain,
    place,
    position,
    usd,
)

ALICE = address(0)
A, B = key(0), key(1)
TICK = 100_000
STEP = 1_000_000


def scale(
    side: int, size: int, count: int, start: int, end: int, tif: int = GTC, *, flags: int = 0, cid: int = 0
) -> PlaceScale:
    return PlaceScale(BTC, side, size, count, start, end, tif, flags, cid)


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Chain]:
    chain = exchange_chain(tmp_path / "db")
    yield chain
    assert_books_match_state(chain)
    chain.close()


def block(chain: Chain, *txs: bytes, ok: bool = True) -> FinalizeBlockResult:
    result = chain.run_block(list(txs))
    if ok:
        assert_ok(result.tx_results)
    return result


@settings(max_examples=300, deadline=None)
@given(
    a=st.integers(1, 10**6),
    b=st.integers(1, 10**6),
    count=st.integers(2, 50),
    side=st.sampled_from([BUY, SELL]),
    tick=st.sampled_from([1, 7, 100_000]),
)
def test_prices_are_the_even_spread_rounded_less_aggressive(
    a: int, b: int, count: int, side: int, tick: int
) -> None:
    start, end = a * tick, b * tick
    prices = scale_prices(start, end, count, tick, side)
    assert len(prices) == count and prices[0] == start and prices[-1] == end
    for k, price in enumerate(prices):
        exact = Fraction(start) + Fraction((end - start) * k, count - 1)
        assert price % tick == 0
        if side == BUY:  # down to the tick
            assert exact - tick < price <= exact
        else:  # up to the tick
            assert exact <= price < exact + tick
        assert min(start, end) <= price <= max(start, end)


@settings(max_examples=300, deadline=None)
@given(steps=st.integers(2, 10**9), count=st.integers(2, 50), step=st.sampled_from([1, 3, STEP]))
def test_sizes_are_equal_steps_and_the_last_takes_the_rest(steps: int, count: int, step: int) -> None:
    total = steps * step
    sizes = scale_sizes(total, count, step)
    assert len(sizes) == count and sum(sizes) == total
    each = sizes[0]
    assert all(size == each for size in sizes[:-1]) and all(size % step == 0 for size in sizes)
    assert each == total // count // step * step
    assert 0 <= sizes[-1] - each < count * step


def test_wire_form_and_fee_of_n_placements() -> None:
    action = scale(SELL, btc(5), 7, usd(1), usd(2), POST_ONLY, flags=1, cid=2**64 - 7)
    assert action.to_fields() == [12, BTC, SELL, btc(5), 7, usd(1), usd(2), POST_ONLY, 1, 2**64 - 7]
    assert Tx.decode(build_tx(A, "c", 1, [action])).actions == (action,)
    assert standard_fee([action]) == 700
    assert FeeParams(place_order=3).fee_of([action]) == 21
    assert FeeParams().fee_of([scale(BUY, 1, 0, 1, 1)]) == 100  # never free
    with pytest.raises(ValueError, match="client_id_base"):
        build_tx(A, "c", 1, [scale(BUY, 1, 2, 1, 1, cid=2**64)])


def test_places_n_orders_with_their_prices_sizes_and_client_ids(ex: Chain) -> None:
    action = scale(BUY, btc(10), 3, usd(64_000), usd(63_001), cid=100)
    result = block(ex, ex.tx(A, action, fee=300))
    kinds = [e.type for e in result.tx_results[0].events]
    assert kinds.count("order_placed") == 3 and kinds[-1] == "scale_placed"
    (summary,) = [attrs(e) for e in result.tx_results[0].events if e.type == "scale_placed"]
    orders = sorted(book_orders(ex), key=lambda o: o.order_id)
    assert summary == {
        "market": "BTC-USD", "owner": ALICE.raw.hex(), "count": "3",
        "first_order_id": str(orders[0].order_id), "last_order_id": str(orders[-1].order_id),
    }  # fmt: skip
    # 64,000 -> 63,001 in 2 steps: 63,500.5 rounds down for a buy
    assert [o.price for o in orders] == [usd(64_000), usd(63_500), usd(63_001)]
    assert [o.size for o in orders] == [btc(3), btc(3), btc(4)]
    assert [o.client_id for o in orders] == [100, 101, 102]
    assert position(ex, ALICE).open_orders == 3 and position(ex, ALICE).open_buy == btc(10)
    # the fee is three placements: one less is refused
    short = block(ex, ex.tx(A, scale(BUY, btc(10), 3, usd(60_000), usd(61_000)), fee=299), ok=False)
    assert short.tx_results[0].code == Code.INSUFFICIENT_FEE


def test_a_sell_scale_rounds_up_and_crossing_orders_match(ex: Chain) -> None:
    block(ex, ex.tx(B, place(BUY, btc(2), usd(65_000))))
    result = block(ex, ex.tx(A, scale(SELL, btc(6), 3, usd(64_999), usd(65_002))))
    kinds = [e.type for e in result.tx_results[0].events]
    assert "order_filled" in kinds  # 64,999 crosses Bob's bid: the normal path matched it
    assert position(ex, ALICE).size == -btc(2)
    # 64,999 -> 65,002: 65,000.5 rounds up to 65,001 for a sell
    assert sorted(o.price for o in book_orders(ex) if o.owner == ALICE.raw) == [usd(65_001), usd(65_002)]


def test_one_failing_order_fails_the_whole_action(ex: Chain) -> None:
    block(ex, ex.tx(A, place(BUY, btc(1), usd(60_000), client_id=101)))
    # order k=1 would take client id 101, in use: nothing is placed
    result = block(ex, ex.tx(A, scale(BUY, btc(6), 3, usd(64_000), usd(63_000), cid=100)), ok=False)
    assert result.tx_results[0].code == Code.DUPLICATE_CLIENT_ID
    assert [o.price for o in book_orders(ex)] == [usd(60_000)]
    assert position(ex, ALICE).open_orders == 1
    # reduce-only without a position: the first order already fails
    result = block(ex, ex.tx(A, scale(SELL, btc(6), 3, usd(66_000), usd(67_000), flags=1)), ok=False)
    assert result.tx_results[0].code == Code.REDUCE_ONLY_WOULD_INCREASE
    assert len(book_orders(ex)) == 1


def test_refusals_at_validation(ex: Chain) -> None:
    cases = [
        (PlaceScale(9, BUY, btc(4), 2, usd(1), usd(2)), Code.UNKNOWN_MARKET),
        (scale(BUY, btc(4), 1, usd(1), usd(2)), Code.INVALID_ORDER),
        (scale(BUY, btc(51), 51, usd(1), usd(2)), Code.INVALID_ORDER),
        (scale(BUY, btc(4), 2, usd(1), usd(2), tif=1), Code.INVALID_ORDER),
        (scale(BUY, btc(4), 2, 0, usd(2)), Code.INVALID_ORDER),
        (scale(BUY, btc(4), 2, usd(1), usd(2), cid=2**64 - 1), Code.INVALID_ORDER),
        (scale(BUY, btc(4), 2, usd(1) + 1, usd(2)), Code.OFF_TICK),
        (scale(BUY, btc(4), 2, usd(1), usd(2) + 1), Code.OFF_TICK),
        (scale(BUY, btc(4) + 1, 2, usd(1), usd(2)), Code.OFF_STEP),
        (scale(BUY, btc(3), 4, usd(1), usd(2)), Code.BELOW_MIN_SIZE),
        (scale(2, btc(4), 2, usd(1), usd(2)), Code.INVALID_ORDER),
    ]
    results = block(ex, *(ex.tx(A, action) for action, _ in cases), ok=False).tx_results
    assert [r.code for r in results] == [int(code) for _, code in cases]
    for action, code in cases:
        assert ex.app.check_tx(ex.tx(A, action), CheckTxKind.NEW).code == code
    assert book_orders(ex) == []
    # the edges pass: 50 orders, the last client id 2**64 - 1
    block(ex, ex.tx(A, scale(BUY, btc(50), 50, usd(60_000), usd(60_049), POST_ONLY, cid=2**64 - 50)))
    assert len(book_orders(ex)) == 50
