"""Positions and cross margin: the position record, account figures against hand-computed values
(including the direction of every rounding), the placement check and the transfer check."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from math import ceil, floor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from execution.accounts import Account, store_account
from execution.actions import apply_action
from execution.codes import ActionError, Code
from execution.markets import default_markets, store_market
from execution.oracle.prices import OraclePrice, prices_at, store_price
from execution.positions.margin import (
    FEE_COLLECTOR,
    MarginSummary,
    margin_summary,
    meets_initial_margin,
    order_only_reduces,
    placement_error,
    trade_fee,
    worst_loss,
)
from execution.positions.position import (
    BUY,
    SELL,
    Position,
    load_position,
    positions,
    store_position,
)
from execution.state import StateView
from execution.tx import Transfer
from primitives.codec import DecodeError
from primitives.hashing import sha256
from storage import schema
from tests.execution.chain import address

BTC, ETH = default_markets()
ORACLE = 6_500_000_000  # $65,000
ETH_ORACLE = 3_500_000_000  # $3,500
ALICE = address(0)
BOB = address(1)


class Empty:
    def get(self, key: bytes) -> bytes | None:
        return None

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        return []


def exchange(btc: int = ORACLE, eth: int = ETH_ORACLE) -> StateView:
    view = StateView(Empty())
    for market, price in ((BTC, btc), (ETH, eth)):
        store_market(view, market)
        store_price(view, market.market_id, OraclePrice(price, 0))
    return view


def fund(view: StateView, balance: int, owner: object = ALICE) -> None:
    assert owner is ALICE or owner is BOB
    store_account(view, ALICE if owner is ALICE else BOB, Account(balance=balance))


# -- the record ------------------------------------------------------------------------------------


def test_fee_collector_address() -> None:
    assert FEE_COLLECTOR.raw == sha256(b"derivd/module/fees")[:20]


def test_position_storage_round_trip_and_empty_deleted() -> None:
    view = exchange()
    assert load_position(view, ALICE, 1) == Position()
    p = Position(size=-3, quote=7, open_buy=2, open_sell=0, open_orders=1)
    store_position(view, ALICE, 2, p)
    store_position(view, ALICE, 1, Position(size=1))
    assert view.get(schema.position_key(ALICE.raw, 2)) == p.encode()
    assert Position.decode(p.encode()) == p
    assert positions(view, ALICE) == [(1, Position(size=1)), (2, p)]
    assert positions(view, BOB) == []
    store_position(view, ALICE, 1, Position())
    assert view.get(schema.position_key(ALICE.raw, 1)) is None
    assert positions(view, ALICE) == [(2, p)]


def test_position_decode_rules() -> None:
    with pytest.raises(DecodeError, match="empty position"):
        Position.decode(Position().encode())
    with pytest.raises(DecodeError, match="open_buy"):
        Position.decode(Position(1, 0, -1, 0, 0).encode())


def test_with_orders_and_fill() -> None:
    p = Position(size=10).with_orders(BUY, 5).with_orders(SELL, 3).with_orders(SELL, 2)
    assert p == Position(10, 0, 5, 5, 3)
    assert p.with_orders(SELL, -2, -1) == Position(10, 0, 5, 3, 2)
    assert p.with_fill(-4, 400) == Position(6, 400, 5, 5, 3)
    assert Position(10, 0, 5, 30, 0).worst_size == 20  # |10 - 30| > |10 + 5|
    assert Position(-10, 0, 5, 30, 0).worst_size == 40


# -- account figures by hand -----------------------------------------------------------------------


def test_summary_of_a_long_btc_position_by_hand() -> None:
    view = exchange()
    fund(view, 1_000_000_000)  # $1,000
    # long 0.1 BTC bought at $65,000: quote -$6,500; one resting buy of 0.05 BTC
    store_position(view, ALICE, 1, Position(1_000_000_000, -6_500_000_000, 500_000_000, 0, 1))
    s = margin_summary(view, ALICE, prices_at(view))
    # value = 1e9 + (0.1 * 65000 - 6500) $ = $1,000
    # maintenance = 6500$ * 3% = $195; initial with orders = |0.15 BTC| * 65000 * 5% = $487.5
    assert s == MarginSummary(1_000_000_000, 487_500_000, 195_000_000, 512_500_000)
    assert s.meets_initial and s.meets_maintenance
    assert meets_initial_margin(view, ALICE, prices_at(view))


def test_summary_sums_markets_at_their_own_prices() -> None:
    view = exchange(btc=6_000_000_000, eth=3_000_000_000)
    fund(view, 100_000_000)
    store_position(view, ALICE, 1, Position(1_000_000_000, -6_500_000_000))  # long 0.1 BTC from 65k, now 60k
    store_position(
        view, ALICE, 2, Position(-2_000_000_000, 7_000_000_000, 0, 1_000_000_000, 1)
    )  # short 2 ETH from 3500
    s = margin_summary(view, ALICE, prices_at(view))
    # BTC: 6000 - 6500 = -500 $; ETH: -6000 + 7000 = +1000 $; value = 100 - 500 + 1000 = $600
    assert s.value == 600_000_000
    # maintenance: 6000 * 3% + 6000 * 3% = $360; initial: 6000 * 5% + |(-2 - 1)| * 3000 * 5% = 300 + 450
    assert s.maintenance == 360_000_000
    assert s.initial == 750_000_000
    assert s.free == -150_000_000
    assert not s.meets_initial and s.meets_maintenance


def test_rounding_favours_the_protocol() -> None:
    # oracle 6_500_000_001: one quantum is worth 6.500000001 quote quantums
    view = exchange(btc=6_500_000_001)
    store_position(view, ALICE, 1, Position(size=-1, quote=10))
    s = margin_summary(view, ALICE, prices_at(view))
    assert s.value == -7 + 10  # the value rounds down (a short's value toward -infinity)
    assert s.maintenance == 1 and s.initial == 1  # requirements round up: ceil(0.195), ceil(0.325)
    store_position(view, BOB, 1, Position(size=1, quote=-6))
    assert margin_summary(view, BOB, prices_at(view)).value == 0  # floor(6.500000001) - 6


def test_fee_and_worst_loss_round_up() -> None:
    # one step at one tick: notional 100 quote quantums, fee 100 * 500 ppm = 0.05 -> 1
    assert trade_fee(BTC, BTC.step_base_quantums, BTC.subticks_per_tick, 500) == 1
    assert trade_fee(BTC, -BTC.step_base_quantums, BTC.subticks_per_tick, 500) == 1
    assert trade_fee(BTC, 1_000_000_000, ORACLE, 500) == 3_250_000  # 0.1 BTC at 65k: $3.25
    assert trade_fee(BTC, 1_000_000_000, ORACLE, 0) == 0
    # buy limit 1 subtick above the oracle: 1e6 quantums * 1 subtick * 1e-9 = 0.001 -> 1
    assert worst_loss(BTC, BUY, 1_000_000, ORACLE + 1, ORACLE) == 1
    assert worst_loss(BTC, BUY, 1_000_000, ORACLE - 100_000, ORACLE) == 0  # a gain is no loss
    assert worst_loss(BTC, SELL, 1_000_000_000, ORACLE - 100_000_000, ORACLE) == 100_000_000  # $1000 * 0.1
    assert worst_loss(BTC, SELL, 1_000_000_000, ORACLE + 100_000_000, ORACLE) == 0


# -- placement -------------------------------------------------------------------------------------


def test_placement_threshold_is_exact() -> None:
    # buy 0.1 BTC at the oracle: initial' = $325, worst loss 0, worst fee $3.25 -> need $328.25
    for balance, ok in ((328_250_000, True), (328_249_999, False)):
        view = exchange()
        fund(view, balance)
        problem = placement_error(view, ALICE, BTC, BUY, 1_000_000_000, ORACLE, False, prices_at(view))
        assert (problem is None) is ok, problem
    assert problem is not None and "initial requirement 325000000" in problem


def test_placement_counts_worst_loss_above_the_oracle() -> None:
    # buy 0.1 BTC with limit $66,000: loss 0.1 * $1000 = $100, fee 6600 * 0.05% = $3.30, initial $325
    limit = 6_600_000_000
    for balance, ok in ((428_300_000, True), (428_299_999, False)):
        view = exchange()
        fund(view, balance)
        assert (
            placement_error(view, ALICE, BTC, BUY, 1_000_000_000, limit, False, prices_at(view)) is None
        ) is ok
    # a sell at that limit loses nothing against the oracle: $325 + $3.30
    view = exchange()
    fund(view, 328_300_000)
    assert placement_error(view, ALICE, BTC, SELL, 1_000_000_000, limit, False, prices_at(view)) is None
    fund(view, 328_299_999)
    assert placement_error(view, ALICE, BTC, SELL, 1_000_000_000, limit, False, prices_at(view)) is not None


def test_placement_includes_existing_open_orders_on_the_same_side() -> None:
    view = exchange()
    fund(view, 978_249_999)
    # resting buys of 0.2 BTC already: worst long 0.3 -> initial $975 + fee $3.25 > $978.249999
    store_position(view, ALICE, 1, Position(0, 0, 2_000_000_000, 0, 2))
    assert placement_error(view, ALICE, BTC, BUY, 1_000_000_000, ORACLE, False, prices_at(view)) is not None
    # a sell of 0.1 does not add to the worst case (max(|0.2|, |-0.1|) = 0.2 -> $650 + $3.25)
    assert placement_error(view, ALICE, BTC, SELL, 1_000_000_000, ORACLE, False, prices_at(view)) is None


def underwater(view: StateView) -> None:
    """Alice: no collateral, long 0.1 BTC at the oracle (value 0 < initial $325)."""
    store_position(view, ALICE, 1, Position(1_000_000_000, -6_500_000_000, 0, 400_000_000, 1))


def test_reducing_orders_are_exempt() -> None:
    view = exchange()
    underwater(view)
    prices = prices_at(view)
    # long 0.1 with 0.04 already offered: a sell of up to 0.06 can only reduce
    assert order_only_reduces(load_position(view, ALICE, 1), SELL, 600_000_000)
    assert placement_error(view, ALICE, BTC, SELL, 600_000_000, ORACLE, False, prices) is None
    # one step more could flip the position short if every sell fills: checked, and refused
    assert not order_only_reduces(load_position(view, ALICE, 1), SELL, 601_000_000)
    assert placement_error(view, ALICE, BTC, SELL, 601_000_000, ORACLE, False, prices) is not None
    # a buy increases a long: refused; flagged reduce-only: exempt (the book enforces the flag)
    assert placement_error(view, ALICE, BTC, BUY, 1_000_000, ORACLE, False, prices) is not None
    assert placement_error(view, ALICE, BTC, BUY, 1_000_000, ORACLE, True, prices) is None
    # a short's reducing side is buy
    short = Position(-5, 0, 2, 0, 1)
    assert order_only_reduces(short, BUY, 3) and not order_only_reduces(short, BUY, 4)
    assert not order_only_reduces(short, SELL, 1) and not order_only_reduces(Position(), BUY, 1)


# -- transfers -------------------------------------------------------------------------------------


def test_transfer_out_that_breaks_initial_margin_is_refused() -> None:
    view = exchange()
    fund(view, 400_000_000)
    store_position(view, ALICE, 1, Position(1_000_000_000, -6_500_000_000))  # initial $325
    with pytest.raises(ActionError) as refused:
        apply_action(StateView(view), ALICE, Transfer(BOB, 75_000_001))
    assert refused.value.code == Code.INSUFFICIENT_MARGIN
    ok = StateView(view)
    apply_action(ok, ALICE, Transfer(BOB, 75_000_000))  # leaves exactly $325
    assert margin_summary(ok, ALICE, prices_at(ok)).free == 0


def test_open_orders_alone_hold_margin_for_transfers() -> None:
    view = exchange()
    fund(view, 100_000_000)
    store_position(view, ALICE, 1, Position(0, 0, 1_000_000_000, 0, 1))  # buy 0.1 BTC resting: $325
    with pytest.raises(ActionError) as refused:
        apply_action(StateView(view), ALICE, Transfer(BOB, 1))
    assert refused.value.code == Code.INSUFFICIENT_MARGIN


def test_transfer_without_positions_is_not_margin_checked() -> None:
    view = exchange()
    fund(view, 10)
    apply_action(view, ALICE, Transfer(BOB, 10))
    with pytest.raises(ActionError) as short:
        apply_action(view, ALICE, Transfer(BOB, 1))
    assert short.value.code == Code.INSUFFICIENT_FUNDS


# -- against an exact reference --------------------------------------------------------------------

positions_strategy = st.lists(
    st.tuples(
        st.sampled_from([1, 2]),
        st.integers(-(10**12), 10**12),
        st.integers(-(10**13), 10**13),
        st.integers(0, 10**12),
        st.integers(0, 10**12),
    ),
    max_size=2,
    unique_by=lambda item: item[0],
)


@given(
    st.integers(0, 10**13),
    positions_strategy,
    st.integers(1, 10**11),
    st.integers(1, 10**11),
    st.integers(-3, 1),
)
def test_summary_matches_exact_rationals(
    balance: int, held: list[tuple[int, int, int, int, int]], btc: int, eth: int, qce_shift: int
) -> None:
    coarse = replace(BTC, step_base_quantums=10**9, min_order_base_quantums=10**9)
    markets = {1: replace(coarse, quantum_conversion_exponent=-9 + qce_shift), 2: ETH}
    view = StateView(Empty())
    prices = {1: btc, 2: eth}
    for market in markets.values():
        store_market(view, market)
        store_price(view, market.market_id, OraclePrice(prices[market.market_id], 0))
    store_account(view, ALICE, Account(balance=balance))
    value, initial, maintenance = balance, 0, 0
    for market_id, size, quote, open_buy, open_sell in held:
        count = 1 if open_buy or open_sell else 0
        store_position(view, ALICE, market_id, Position(size, quote, open_buy, open_sell, count))
        m = markets[market_id]
        q = Fraction(10) ** m.quantum_conversion_exponent
        p = prices[market_id]
        worst = max(abs(size + open_buy), abs(size - open_sell))
        value += floor(size * p * q) + quote
        maintenance += ceil(abs(size) * p * q * m.maintenance_margin_ppm / 1_000_000)
        initial += ceil(worst * p * q * m.initial_margin_ppm / 1_000_000)
    assert margin_summary(view, ALICE, prices_at(view)) == MarginSummary(
        value, initial, maintenance, value - initial
    )
