"""Funding: premium samples, the rate of each interval (mean premium + interest, clamped, quoted per
rate period and paid pro rata per tick), the cumulative index, lazy settlement of positions against
a reference that settles every position at every interval in exact fractions, the funding pool and
its dust and the cost of a tick (no position is read). Every chain
block checks conservation, the funding pools' exact balance and zero net size (`Chain.commit`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import FinalizeBlockResult, ValidatorUpdate
from execution.accounts import load_account
from execution.exchange.books import Books
from execution.exchange.context import ExchangeContext
from execution.exchange.orderbook import Order, OrderBook, Side
from execution.genesis_state import AppState, default_exchange_app_state, init_exchange_state, parse_app_state
from execution.markets import default_markets
from execution.oracle.prices import OracleParams
from execution.positions.funding_index import (
    FUNDING_INDEX_SCALE,
    INSURANCE_FUND,
    FundingPool,
    MarketFunding,
    Settlements,
    funding_payment,
    load_market_funding,
    load_pool,
    load_settled_position,
    pending_funding,
    settled,
    store_market_funding,
    store_pool,
)
from execution.positions.position import Position, load_position, store_position
from execution.risk.funding import (
    FundingParams,
    book_premium,
    funding_end_block,
    funding_imbalances,
    funding_rate,
    impact_price,
    index_delta,
    init_funding_state,
    premium_ppm,
)
from execution.state import StateView
from primitives import codec
from primitives.keys import Address
from storage import schema
from tests.execution.chain import GENESIS_TIME, Chain, Empty, address, key
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    FUNDS,
    IOC,
    POST_ONLY,
    SELL,
    all_events,
    assert_ok,
    btc,
    cancel,
    place,
    position,
    usd,
)

BTC_MARKET, ETH_MARKET = default_markets()
INTERVAL_SECONDS = 10
RATE_PERIOD_SECONDS = 8 * INTERVAL_SECONDS  # a tick pays 1/8 of the rate, as dYdX's hour of 8 h
INTEREST = 100  # per rate period, the default
CLAMP_FACTOR = 31_250  # 3.125% of IMF - MMF (2%): a clamp of 625 ppm per rate period
CLAMP = 625
TICK_SHARE = Fraction(INTERVAL_SECONDS, RATE_PERIOD_SECONDS)
IMPACT = 10_000 * 10**6  # $10,000
PPM = 10**6
A, B, C, D, M = (key(i) for i in range(5))
ALICE, BOB, CAROL, DAVE, MAKER = (address(i) for i in range(5))
NAMES = {ALICE: "A", BOB: "B", CAROL: "C", DAVE: "D", MAKER: "M"}


def funding_chain(path: Path, validators: Sequence[ValidatorUpdate] = (), **oracle: int) -> Chain:
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000, **oracle}
    state["funding"] = {
        "interval_seconds": INTERVAL_SECONDS,
        "rate_period_seconds": RATE_PERIOD_SECONDS,
        "interest_ppm": INTEREST,
        "clamp_factor_ppm": CLAMP_FACTOR,
        "impact_notional": IMPACT,
    }
    return Chain(path, {addr: FUNDS for addr in NAMES}, app_state=state, validators=validators)


def events(result: FinalizeBlockResult, kind: str) -> list[dict[str, str]]:
    return [{a.key: a.value for a in e.attributes} for e in result.events if e.type == kind]


# -- reference ----------------------------------------------------------------------------------


def ref_impact(levels: Sequence[tuple[int, int]], target: Fraction) -> Fraction | None:
    """Average price of filling `target` (size * price units) from `levels` best first."""
    remaining, size = target, Fraction(0)
    for price, level_size in levels:
        take = min(remaining, Fraction(price * level_size))
        size += take / price
        remaining -= take
        if remaining == 0:
            return target / size
    return None


def ref_premium(book: OrderBook, oracle: int, qce: int) -> int:
    bids, asks = book.depth()
    target = Fraction(IMPACT) / Fraction(10) ** qce
    bid = ref_impact(bids, target) or Fraction(oracle)
    ask = ref_impact(asks, target) or Fraction(oracle)
    exact = (max(Fraction(0), bid - oracle) - max(Fraction(0), oracle - ask)) * PPM / oracle
    return int(exact)  # int() of a Fraction truncates toward zero


def ref_rate(samples: list[int]) -> int:
    mean = int(Fraction(sum(samples), len(samples))) if samples else 0
    return max(-CLAMP, min(CLAMP, mean + INTEREST))


def ceil(x: Fraction) -> int:
    return -((-x.numerator) // x.denominator)


# -- the scenario --------------------------------------------------------------------------------


def test_funding_over_several_intervals_matches_the_reference(tmp_path: Path) -> None:
    chain = funding_chain(tmp_path / "db")
    o = BTC_MARKET.initial_price
    qce = BTC_MARKET.quantum_conversion_exponent
    # per height: the txs, and the accounts whose BTC position they load (settle)
    script: dict[int, tuple[list[bytes], set[Address]]] = {
        1: (
            [
                chain.tx(M, place(BUY, btc(10_000), usd(65_010), POST_ONLY)),  # 1 BTC bid above the oracle
                chain.tx(M, place(SELL, btc(10_000), usd(65_300), POST_ONLY)),
                chain.tx(B, place(SELL, btc(5_001), usd(65_200), POST_ONLY)),
            ],
            {MAKER, BOB},
        ),
        2: (
            [
                chain.tx(A, place(BUY, btc(5_001), usd(65_200), IOC)),  # takes bob's ask: A +0.5001
                chain.tx(C, place(SELL, btc(2_001), usd(65_010), IOC)),  # into M's bid: C -0.2001
            ],
            {ALICE, BOB, CAROL, MAKER},
        ),
        12: ([chain.tx(M, cancel(1))], {MAKER}),  # the bid goes: premium 0
        15: ([chain.tx(D, place(BUY, btc(3_001), usd(65_300), IOC))], {DAVE, MAKER}),  # D +0.3001
        21: ([chain.tx(M, place(BUY, btc(10_000), usd(65_200), POST_ONLY))], {MAKER}),  # clamped above
        25: ([chain.tx(B, place(BUY, btc(1_999), usd(65_300), IOC))], {BOB, MAKER}),  # B +0.1999
        31: ([chain.tx(M, cancel(7))], {MAKER}),
        35: ([chain.tx(M, place(SELL, btc(10_000), usd(64_900), POST_ONLY))], {MAKER}),  # clamped below
        41: ([chain.tx(k, place(BUY, btc(1), usd(1_000), POST_ONLY)) for k in (A, B, C, D, M)], set(NAMES)),
    }
    samples: list[int] = []
    rates: list[int] = []
    index = Fraction(0)  # quote quantums per base quantum
    owed: dict[Address, Fraction] = {addr: Fraction(0) for addr in NAMES}  # exact, since the last touch
    paid: dict[Address, int] = dict.fromkeys(NAMES, 0)  # the rounding rule applied at each touch
    exact_total: dict[Address, Fraction] = {addr: Fraction(0) for addr in NAMES}
    trade_quote: dict[Address, int] = dict.fromkeys(NAMES, 0)
    swept = 0
    for height in range(1, 42):
        txs, touched = script.get(height, ([], set()))
        for addr in sorted(
            touched, key=lambda a: a.raw
        ):  # a touch settles at the index before this block's tick
            paid[addr] += ceil(owed[addr])
            owed[addr] = Fraction(0)
        result = chain.run_block(txs)
        assert_ok(result.tx_results)
        for fill in all_events(result.tx_results, "order_filled"):
            notional = int(fill["size"]) * int(fill["price"]) // 10**9
            sign = 1 if fill["taker_side"] == "buy" else -1
            trade_quote[Address.parse(fill["taker"])] += -sign * notional - int(fill["taker_fee"])
            trade_quote[Address.parse(fill["maker"])] += sign * notional - int(fill["maker_fee"])
        samples.append(ref_premium(chain.app.books.book(BTC), o, qce))
        ticks = events(result, "funding")
        if height % INTERVAL_SECONDS:
            assert ticks == []
            continue
        rate = ref_rate(samples)
        rates.append(rate)
        samples = []
        index += Fraction(rate * o, PPM) * Fraction(10) ** qce * TICK_SHARE
        btc_tick, eth_tick = ticks
        assert btc_tick["market"] == "BTC-USD" and int(btc_tick["rate_ppm"]) == rate
        assert int(btc_tick["applied_ppm"]) == int(rate * TICK_SHARE)
        assert Fraction(int(btc_tick["index"]), FUNDING_INDEX_SCALE) == index  # exact on BTC-USD
        assert int(btc_tick["samples"]) == INTERVAL_SECONDS
        assert eth_tick["market"] == "ETH-USD" and eth_tick["rate_ppm"] == str(INTEREST)  # an empty book
        swept += int(btc_tick["swept"]) + int(eth_tick["swept"])
        for addr in NAMES:  # the reference: every position settled at every interval, exactly
            amount = position(chain, addr).size * Fraction(rate * o, PPM) * Fraction(10) ** qce * TICK_SHARE
            owed[addr] += amount
            exact_total[addr] += amount
        if height == 10:
            # the account query counts the pending funding: A's settled quote is the stored one minus it
            held = chain.account(ALICE)["positions"]
            assert isinstance(held, list) and len(held) == 1
            a_position: dict[str, str] = held[0]
            assert a_position["pending_funding"] == str(ceil(owed[ALICE]))
            assert int(a_position["quote"]) == position(chain, ALICE).quote - ceil(owed[ALICE])
    assert rates == [253, 115, CLAMP, -CLAMP]  # 153 + 100; 153 / 10 + 100; clamped both ways
    assert [position(chain, addr).size for addr in (ALICE, BOB, CAROL, DAVE, MAKER)] == [
        btc(5_001), -btc(3_002), -btc(2_001), btc(3_001), -btc(2_999),
    ]  # fmt: skip
    # every position was settled by the last block: the chain's payments are the rounding rule's
    for addr, name in NAMES.items():
        chain_paid = trade_quote[addr] - position(chain, addr).quote
        assert chain_paid == paid[addr], name
        touches = [h for h, (_, touched) in script.items() if addr in touched]
        assert 0 <= chain_paid - exact_total[addr] < len(touches)
    assert sum(exact_total.values()) == 0
    # dust: what the payers paid beyond the receivers' takings is in the pool or the insurance fund
    dust = sum(paid.values())
    pool = load_pool(chain.app._committed, BTC)
    assert pool.balance + swept == dust >= 0
    assert pool.balance == pool.sweepable and pool.dust == 0  # all settled: only whole dust is left
    assert load_account(chain.app._committed, INSURANCE_FUND).balance == swept > 0  # odd sizes and rates
    chain.close()


def test_funding_query_shows_the_predicted_and_last_rate(tmp_path: Path) -> None:
    chain = funding_chain(tmp_path / "db")
    assert_ok(chain.run_block([chain.tx(M, place(BUY, btc(10_000), usd(65_010), POST_ONLY))]).tx_results)
    for _ in range(9):
        chain.run_block([])
    assert_ok(chain.run_block([chain.tx(M, cancel(1))]).tx_results)  # height 11: sample 0
    for _ in range(3):
        chain.run_block([])
    result = chain.app.query("/funding", b"", 0, False)
    assert result.code == 0
    btc_item, eth_item = json.loads(result.value)
    # samples of heights 11..14: 0, 0, 0, 0 (the cancel is in block 11) -> 0 + 100; the applied parts
    # are 1/8, toward zero
    assert btc_item == {
        "market": "BTC-USD", "market_id": "1", "funding_rate_ppm": str(INTEREST), "funding_applied_ppm": "12",
        "last_funding_rate_ppm": "253", "last_funding_applied_ppm": "31",
        "funding_index": str(253 * 6_500_000 // 8), "funding_samples": "4",
        "next_funding_time": str(GENESIS_TIME + 2 * INTERVAL_SECONDS * 10**9),
        "oracle_price": str(BTC_MARKET.initial_price),
    }  # fmt: skip
    assert eth_item["last_funding_rate_ppm"] == str(INTEREST)
    (btc_market, _) = json.loads(chain.app.query("/markets", b"", 0, False).value)
    assert btc_market["funding_rate_ppm"] == str(INTEREST)
    assert btc_market["last_funding_rate_ppm"] == "253"
    assert chain.app.funding_rates() == {"BTC-USD": 253, "ETH-USD": INTEREST}  # the metric's figures
    chain.close()


def test_missed_intervals_are_funded_once(tmp_path: Path) -> None:
    chain = funding_chain(tmp_path / "db")
    result = chain.run_block([], time=GENESIS_TIME + 35 * 10**9)  # 3.5 intervals after genesis
    (tick, _) = events(result, "funding")
    assert tick["rate_ppm"] == str(INTEREST) and tick["samples"] == "1"
    # one tick's worth (elapsed = one interval): the missed intervals pay nothing
    assert int(tick["index"]) == INTEREST * 6_500_000 // 8
    funding = json.loads(chain.app.query("/funding", b"", 0, False).value)[0]
    assert funding["next_funding_time"] == str(GENESIS_TIME + 40 * 10**9)
    assert events(chain.run_block([], time=GENESIS_TIME + 39 * 10**9), "funding") == []
    assert len(events(chain.run_block([], time=GENESIS_TIME + 40 * 10**9), "funding")) == 2
    chain.close()


# -- the tick alone ------------------------------------------------------------------------------


DEFAULT_PARAMS = FundingParams()


def exchange_state(params: FundingParams = DEFAULT_PARAMS, stale_after: int = 1_000_000) -> StateView:
    view = StateView(Empty())
    state = AppState(markets=(BTC_MARKET, ETH_MARKET), oracle=OracleParams(3, stale_after))
    init_exchange_state(view, state, 1)
    init_funding_state(view, params, GENESIS_TIME)
    return view


def run_tick(parent: StateView, height: int, time: int) -> tuple[StateView, list[dict[str, str]]]:
    view = StateView(parent)
    ctx = ExchangeContext(height, Books.load(parent), live=True)
    found = funding_end_block(view, ctx, height, time)
    return view, [{a.key: a.value for a in e.attributes} for e in found]


TICK_TIME = GENESIS_TIME + 3600 * 10**9


def test_no_samples_gives_the_interest_rate() -> None:
    view = exchange_state(stale_after=5)  # the prices (height 0) are stale at height 6
    after, ticks = run_tick(view, 6, TICK_TIME)
    assert [t["rate_ppm"] for t in ticks] == [str(INTEREST), str(INTEREST)]
    assert [t["samples"] for t in ticks] == ["0", "0"]
    # the default params: an hourly tick of the 8-hour rate
    assert load_market_funding(after, BTC) == MarketFunding(INTEREST * 6_500_000 // 8, INTEREST, 0, 0)
    # not yet time: a sample only
    after, ticks = run_tick(exchange_state(), 1, TICK_TIME - 1)
    assert ticks == [] and load_market_funding(after, BTC) == MarketFunding(0, 0, 0, 1)


def test_the_rate_is_clamped() -> None:
    params = FundingParams(interest_ppm=130_000)  # the default clamp: 600% of 2% = 120,000 per 8 h
    assert funding_rate(BTC_MARKET, MarketFunding(sample_sum=0, sample_count=0), params) == 120_000
    # -150,000 + 130,000 = -20,000: inside; -300,000 + 130,000: clamped
    assert funding_rate(BTC_MARKET, MarketFunding(sample_sum=-300_000, sample_count=2), params) == -20_000
    assert funding_rate(BTC_MARKET, MarketFunding(sample_sum=-600_000, sample_count=2), params) == -120_000
    assert (
        funding_rate(BTC_MARKET, MarketFunding(sample_sum=-7, sample_count=2), FundingParams())
        == -3 + INTEREST
    )
    assert (
        funding_rate(BTC_MARKET, MarketFunding(sample_sum=7, sample_count=2), FundingParams()) == 3 + INTEREST
    )
    view = exchange_state(params)
    _, ticks = run_tick(view, 1, TICK_TIME)
    assert [t["rate_ppm"] for t in ticks] == ["120000", "120000"]
    assert [t["applied_ppm"] for t in ticks] == ["15000", "15000"]


def test_a_tick_reads_no_position(tmp_path: Path) -> None:
    view = exchange_state()
    for i in range(50):  # positions on both markets with stale funding indexes
        owner = Address(bytes([i + 1]) * 20)
        store_position(view, owner, BTC, Position(size=(i + 1) * (-1) ** i, quote=5))
        store_position(view, owner, ETH, Position(size=(i + 1) * (-1) ** i, quote=5))
    store_pool(view, BTC, FundingPool(balance=7, sweepable=3, dust=11))
    after, ticks = run_tick(view, 1, TICK_TIME)
    assert len(ticks) == 2 and ticks[0]["swept"] == "3"
    prefix = schema.APP_POSITION_PREFIX
    assert not any(k.startswith(prefix) for k in after.read_set | after.write_set)
    assert not any(p.startswith(prefix) for p in after.prefix_reads)
    assert len(after.read_set) <= 4 + 4 * 2  # params, next time, oracle params, insurance + per market
    assert load_pool(after, BTC) == FundingPool(4, 0, 11)
    assert load_account(after, INSURANCE_FUND).balance == 3


def test_book_premium_and_impact_prices() -> None:
    book = OrderBook()
    owner = b"\x01" * 20
    qce = BTC_MARKET.quantum_conversion_exponent
    o = BTC_MARKET.initial_price
    orders = [
        Order.limit(1, owner, Side.BUY, usd(65_100), btc(500)),  # 0.05 BTC: $3,255
        Order.limit(2, owner, Side.BUY, usd(65_050), btc(2_000)),  # $13,010
        Order.limit(3, owner, Side.SELL, usd(65_500), btc(100)),  # $655: too thin
    ]
    book.restore(orders)
    premium = book_premium(BTC_MARKET, book, o, IMPACT)
    assert premium == ref_premium(book, o, qce) > 0
    # the impact bid: $3,255 at 65,100 and $6,745 at 65,050
    bid = Fraction(IMPACT * 10**9) / (
        btc(500) + Fraction(IMPACT * 10**9 - usd(65_100) * btc(500), usd(65_050))
    )
    assert premium == int((bid - o) * PPM / o)
    assert impact_price([(10, 5)], 51) is None
    assert impact_price([(10, 5), (8, 10)], 50) == (500, 50)
    assert premium_ppm(None, None, 100) == 0
    assert premium_ppm((101, 1), (102, 1), 100) == 10_000
    assert premium_ppm((97, 1), (99, 1), 100) == -10_000
    assert premium_ppm((1001, 10), None, 100) == 1_000  # 100.1: 0.1%
    assert premium_ppm(None, (2999, 30), 100) == -333  # 99.9666..: toward zero


def test_a_sample_counts_at_most_one_hundred_percent() -> None:
    view = exchange_state()
    far_bid = Order.limit(1, b"\x01" * 20, Side.BUY, 3 * BTC_MARKET.initial_price, btc(10_000))
    view.put(schema.order_key(BTC, 1), codec.encode(far_bid.to_fields()))  # a bid at 3x the oracle
    assert book_premium(BTC_MARKET, Books.load(view).book(BTC), BTC_MARKET.initial_price, IMPACT) == 2 * PPM
    after, _ = run_tick(view, 1, TICK_TIME - 1)
    assert load_market_funding(after, BTC) == MarketFunding(0, 0, PPM, 1)


def test_index_delta_rounds_toward_zero() -> None:
    whole = FundingParams(rate_period_seconds=3600)  # a tick pays the whole rate
    assert index_delta(BTC_MARKET, 1, BTC_MARKET.initial_price, whole) == 6_500_000
    assert index_delta(BTC_MARKET, -3, 6_500_000_001, whole) == -19_500_000  # -19_500_000.003
    assert index_delta(BTC_MARKET, 3, 6_500_000_001, whole) == 19_500_000
    # the default 1/8: one division at the end, 2_437_500.000375 toward zero
    assert index_delta(BTC_MARKET, 1, BTC_MARKET.initial_price, DEFAULT_PARAMS) == 812_500
    assert index_delta(BTC_MARKET, -3, 6_500_000_001, DEFAULT_PARAMS) == -2_437_500
    assert index_delta(BTC_MARKET, 3, 6_500_000_001, DEFAULT_PARAMS) == 2_437_500
    assert index_delta(BTC_MARKET, 1, 7, DEFAULT_PARAMS) == 0  # 0.000875, toward zero


# -- settlement ----------------------------------------------------------------------------------


def test_payers_pay_the_ceiling_and_receivers_get_the_floor() -> None:
    scale = FUNDING_INDEX_SCALE
    assert funding_payment(3, 0, scale // 2) == (2, scale // 2)  # owes 1.5: pays 2
    assert funding_payment(-3, 0, scale // 2) == (-1, scale // 2)  # owed 1.5: gets 1
    assert funding_payment(5, 7, 7) == (0, 0)
    long = Position(size=3, quote=100, funding_index=0)
    assert settled(long, scale // 2) == Position(3, 98, 0, 0, 0, scale // 2)
    assert pending_funding(long, scale // 2) == 2
    assert settled(Position(open_buy=1, open_orders=1), 9) == Position(0, 0, 1, 0, 1, 9)
    assert Position(funding_index=5).is_empty
    with pytest.raises(ValueError, match="empty"):
        Position.decode(Position(funding_index=5).encode())


def test_load_settled_position_moves_the_payment_to_the_pool() -> None:
    view = exchange_state()
    store_position(view, ALICE, BTC, Position(size=10, quote=0))
    store_position(view, BOB, BTC, Position(size=-10, quote=0))
    store_market_funding(view, BTC, MarketFunding(index=FUNDING_INDEX_SCALE // 4))  # owes 2.5
    assert load_settled_position(view, ALICE, BTC).quote == -3
    assert load_position(view, ALICE, BTC).quote == -3
    assert load_pool(view, BTC) == FundingPool(3, 0, FUNDING_INDEX_SCALE // 2)
    assert load_settled_position(view, BOB, BTC).quote == 2
    assert load_pool(view, BTC) == FundingPool(1, 1, 0)
    assert funding_imbalances(view) == {BTC: 0}


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(-(10**13), 10**13), min_size=1, max_size=6),
    steps=st.lists(
        st.tuples(
            st.integers(-(10**15), 10**15),  # index move of a tick
            st.lists(st.integers(0, 6), max_size=4),  # positions touched before it
            st.booleans(),  # sweep at the tick
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_settlement_never_creates_quote(sizes: list[int], steps: list[tuple[int, list[int], bool]]) -> None:
    sizes = [*sizes, -sum(sizes)]
    positions = [Position(size=size) for size in sizes]
    pool = FundingPool()
    insurance = 0
    index = 0
    exact = [Fraction(0)] * len(sizes)  # what each position is owed (-) or owes (+), exactly

    def settle(i: int) -> None:
        nonlocal pool
        settlements = Settlements(BTC)
        before = positions[i]
        positions[i] = settlements.settle(before, index)
        owed = Fraction(before.size * (index - before.funding_index), FUNDING_INDEX_SCALE)
        paid = before.quote - positions[i].quote
        assert paid >= owed and paid - owed < 1  # payers pay the ceiling, receivers get the floor
        exact[i] += owed
        pool = pool.with_payments(settlements.paid, settlements.residual)

    def imbalance() -> int:
        pending = sum(p.size * (index - p.funding_index) for p in positions)
        return (pool.balance - pool.sweepable) * FUNDING_INDEX_SCALE - pool.dust + pending

    for move, touched, sweep in steps:
        for i in touched:
            settle(i % len(positions))
        assert imbalance() == 0
        index += move
        if sweep:
            insurance += pool.sweepable
            pool = FundingPool(pool.balance - pool.sweepable, 0, pool.dust)
        assert imbalance() == 0
    for i in range(len(positions)):
        settle(i)
    quote_out = sum(p.quote for p in positions)  # what the positions received net (<= 0)
    assert quote_out <= 0 and sum(exact) == 0
    assert pool.balance + insurance == -quote_out  # the pool and the fund hold exactly the dust
    assert pool.balance == pool.sweepable >= 0 and pool.dust == 0
    assert all(p.funding_index == index for p in positions)


# -- genesis and records -------------------------------------------------------------------------


def test_genesis_funding_section() -> None:
    assert parse_app_state({}).funding == FundingParams()
    assert parse_app_state({"funding": {"clamp_factor_ppm": 100}}).funding == FundingParams(
        clamp_factor_ppm=100
    )
    for section, match in (
        ({"interval_seconds": 0}, r"app_state\.funding\.interval_seconds: must be in"),
        ({"clamp_factor_ppm": -1}, r"app_state\.funding\.clamp_factor_ppm: must be in"),
        ({"clamp_factor_ppm": 10**9 + 1}, r"app_state\.funding\.clamp_factor_ppm: must be in"),
        ({"interest_ppm": 10**6 + 1}, r"app_state\.funding\.interest_ppm: must be in"),
        (
            {"rate_period_seconds": 3599},
            r"app_state\.funding\.rate_period_seconds: must be in \[interval_seconds 3600",
        ),
        (
            {"interval_seconds": 60, "rate_period_seconds": 0},
            r"app_state\.funding\.rate_period_seconds: must be in",
        ),
        ({"impact_notional": "5"}, r"app_state\.funding\.impact_notional: must be a JSON integer"),
        ({"x": 1}, r"app_state\.funding\.x: unknown field"),
    ):
        with pytest.raises(ValueError, match=match):
            parse_app_state({"funding": section})
    odd = FundingParams(
        interval_seconds=7, rate_period_seconds=8, interest_ppm=-3, clamp_factor_ppm=9, impact_notional=11
    )
    assert FundingParams.decode(odd.encode()) == odd
    assert default_exchange_app_state()["funding"] == FundingParams().to_json()
    assert parse_app_state({"oracle": {"max_vote_age_blocks": 3, "stale_after_blocks": 10}}).oracle == (
        OracleParams(3, 10, 500_000)
    )
