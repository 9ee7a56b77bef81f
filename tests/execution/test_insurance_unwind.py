"""The insurance fund's unwind (`execution.risk.insurance`): a position the fund took over is sold
(or bought back) through the book over the following blocks, each block's size as the rule says
(an independent computation here), never beyond the slippage bound, never on a stale market, in a
market order that rotates with the height; conservation holds (`Chain.commit` checks it after every
block); a calm block reads one key and writes nothing; the parameters and the fund's health."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.app import FinalizeBlockResult, ValidatorUpdate
from execution.block import END_BLOCK_HOOKS
from execution.exchange.context import ExchangeContext
from execution.genesis_state import AppStateError, default_exchange_app_state, parse_app_state
from execution.markets import Market, default_markets, rotated, slice_size
from execution.oracle.prices import OraclePrice, market_is_stale, store_price
from execution.positions.funding_index import INSURANCE_FUND
from execution.positions.position import Position, load_position, owner_markets
from execution.risk.insurance import (
    InsuranceParams,
    insurance_fund_health,
    insurance_unwind,
    load_params,
    unwind_limit,
)
from execution.state import StateView
from execution.tx import Action, OracleVote, PlaceOrder
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from storage import schema
from tests.execution.chain import Chain
from tests.execution.exchange_helpers import BTC, BUY, ETH, IOC, POST_ONLY, SELL, assert_ok, attrs

USD = 10**6  # quote quantums
BTC_STEP = 1_000_000  # 0.0001 BTC
BTC_TICK = 100_000  # $1 on BTC-USD
ETH_TICK = 100_000  # $0.1 on ETH-USD
VALIDATOR = PrivateKey.from_seed(sha256(b"insurance test validator"))
MAKER = PrivateKey.from_seed(sha256(b"insurance test maker"))
FUND = 100_000 * USD


def trader(i: int) -> PrivateKey:
    return PrivateKey.from_seed(sha256(b"insurance trader %d" % i))


def btc(dollars: int) -> int:
    """BTC-USD subticks of a whole-dollar price (qce -9, atomic resolution -10: $1 = 1e5 subticks)."""
    return dollars * BTC_TICK


def eth(dimes: int) -> int:
    """ETH-USD subticks of a price in tenths of a dollar ($1 = 1e6 subticks)."""
    return dimes * ETH_TICK


def make_chain(path: Path, stale_after_blocks: int = 1_000_000) -> Chain:
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": stale_after_blocks}
    balances = {trader(i).address: 10_000 * USD for i in range(4)}
    balances[MAKER.address] = 100_000_000 * USD
    balances[INSURANCE_FUND] = FUND
    return Chain(path, balances, app_state=state, validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)])


def run(chain: Chain, txs: Sequence[bytes] = ()) -> FinalizeBlockResult:
    result = chain.run_block(list(txs))
    assert_ok(result.tx_results)
    return result


def order(market: int, side: int, size: int, price: int, tif: int) -> Action:
    return PlaceOrder(market, side, size, price, tif)


def fund_position(chain: Chain, market: int = BTC) -> Position:
    return load_position(chain.app._committed, INSURANCE_FUND, market)


def unwound(result: FinalizeBlockResult) -> list[dict[str, str]]:
    return [attrs(e) for e in result.events if e.type == "insurance_unwound"]


@dataclass(frozen=True, slots=True)
class Scenario:
    long: bool  # the fund took over a long (it sells) or a short (it buys back)
    open_price: int
    oracle: int  # the price after the move, at which the fund took over
    bound: int  # the worst price the unwind accepts, worked out by hand: 2% from the oracle, on the tick
    beyond: int  # one tick past it


# 10x positions of $100,000 opened at $65,000; a 15% move makes one side bankrupt. The bounds:
# 55,251 * 0.98 = 54,145.98, up to 54,146 for a sale; 74,751 * 1.02 = 76,246.02, down to 76,246 for a purchase
LONG = Scenario(True, btc(65_000), btc(55_251), btc(54_146), btc(54_145))
SHORT = Scenario(False, btc(65_000), btc(74_751), btc(76_246), btc(76_247))
SIZE = 15_384 * BTC_STEP  # 1.5384 BTC: $100,000 at $65,000


def take_over(
    chain: Chain, s: Scenario, market: int = BTC, size: int = SIZE, moved: int | None = None
) -> None:
    """Trader 0 opens a 10x position on `market` (long if `s.long`) against trader 1; the oracle then
    moves against it (to `moved`, else `s.oracle`): it is bankrupt, the book is empty, the fund
    takes it over."""
    loser, winner = (trader(0), trader(1)) if market == BTC else (trader(2), trader(3))
    opened = s.open_price if market == BTC else eth(35_000)
    side = BUY if s.long else SELL
    run(
        chain,
        [
            chain.tx(winner, order(market, 1 - side, size, opened, POST_ONLY)),
            chain.tx(loser, order(market, side, size, opened, IOC)),
        ],
    )
    price = s.oracle if moved is None else moved
    run(chain, [chain.tx(VALIDATOR, OracleVote(((market, price),)))])
    assert load_position(chain.app._committed, loser.address, market).size == 0
    assert fund_position(chain, market).size == (size if s.long else -size)


def expected_slice(position: int, oracle: int) -> int:
    """The rule's size for a BTC-USD position of |size| `position` at `oracle`, worked out apart:
    20% of it, or $1,000 worth at the oracle price (q = 1e-9) if that is more, rounded up to whole
    steps, never more than the position."""
    by_fraction = Fraction(position * 200_000, 1_000_000)
    by_notional = Fraction(1_000 * USD * 10**9, oracle)
    return min(position, math.ceil(max(by_fraction, by_notional) / BTC_STEP) * BTC_STEP)


@pytest.mark.parametrize("s", [LONG, SHORT], ids=["long", "short"])
def test_the_fund_unwinds_its_position_block_by_block_at_the_bound(tmp_path: Path, s: Scenario) -> None:
    chain = make_chain(tmp_path / "db", stale_after_blocks=1_000)
    take_over(chain, s)
    taken = fund_position(chain)
    balance = chain.balance(INSURANCE_FUND)
    # the maker rests the whole size exactly at the bound: every block's order fills its full size
    maker_side = BUY if s.long else SELL
    txs = [chain.tx(MAKER, order(BTC, maker_side, SIZE, s.bound, POST_ONLY))]
    remaining = SIZE
    notionals = 0
    blocks = 0
    while remaining:
        result = run(chain, txs)
        txs = []
        blocks += 1
        want = expected_slice(remaining, s.oracle)
        remaining -= want
        assert want * s.bound % 10**9 == 0  # whole steps at a whole-dollar price: an exact notional
        notional = want * s.bound // 10**9  # size * price * 1e-9
        notionals += notional
        signed = remaining if s.long else -remaining
        assert unwound(result) == [
            {"market": "BTC-USD", "size": str(want), "notional": str(notional), "remaining": str(signed)}
        ]
        fills = [attrs(e) for e in result.events if e.type == "order_filled"]
        assert [f["taker"] for f in fills] == [INSURANCE_FUND.raw.hex()]
        assert fills[0]["price"] == str(s.bound) and fills[0]["taker_fee"] == "0"  # no taker fee
        if remaining:
            assert fund_position(chain).size == signed
        assert chain.app.total_quote() == chain.supply  # conservation (also checked by Chain.commit)
        assert blocks < 25  # 20% a block down to the $1,000 floor, then the floor: about 20 blocks
    assert load_position(chain.app._committed, MAKER.address, BTC).size == taken.size
    # the closed position is realized: its quote (what the takeover paid, what the sales brought)
    # moves to the fund's balance and the record goes
    quote = taken.quote + (notionals if s.long else -notionals)
    [realized] = [attrs(e) for e in result.events if e.type == "insurance_realized"]
    assert realized == {"market": "BTC-USD", "quote": str(quote)}
    assert fund_position(chain) == Position()
    assert owner_markets(chain.app._committed, INSURANCE_FUND.raw) == ()
    assert chain.balance(INSURANCE_FUND) == balance + quote
    # from now on a block reads the fund's market list and nothing else, and writes nothing
    assert_calm(chain)
    assert unwound(run(chain)) == []
    chain.close()


def assert_calm(chain: Chain) -> None:
    view = StateView(chain.app._committed)
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=True)
    assert insurance_unwind(view, ctx, chain.height + 1) == []
    assert view.changes() == []
    assert view.read_set == frozenset({schema.owner_markets_key(INSURANCE_FUND.raw)})


def test_a_calm_block_reads_one_key_and_writes_nothing(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db")
    run(chain)
    assert_calm(chain)
    chain.close()


@pytest.mark.parametrize("s", [LONG, SHORT], ids=["long", "short"])
def test_nothing_fills_beyond_the_slippage_bound(tmp_path: Path, s: Scenario) -> None:
    chain = make_chain(tmp_path / "db")
    take_over(chain, s)
    taken = fund_position(chain)
    maker_side = BUY if s.long else SELL
    # every resting order is one tick beyond the bound: nothing fills, block after block
    run(chain, [chain.tx(MAKER, order(BTC, maker_side, SIZE, s.beyond, POST_ONLY))])
    for _ in range(2):
        result = run(chain)
        assert unwound(result) == []
        assert not [e for e in result.events if e.type.startswith("order_")]  # not even an order
        assert fund_position(chain) == taken
    bids, asks = chain.app.books.book(BTC).orders()
    [resting] = bids + asks
    assert (resting.price, resting.remaining) == (s.beyond, SIZE)
    # one order at the bound itself fills (the bound is inclusive), ahead of the one beyond it
    result = run(chain, [chain.tx(MAKER, order(BTC, maker_side, SIZE, s.bound, POST_ONLY))])
    [event] = unwound(result)
    assert event["size"] == str(expected_slice(SIZE, s.oracle))
    fills = [attrs(e) for e in result.events if e.type == "order_filled"]
    assert {f["price"] for f in fills} == {str(s.bound)}
    chain.close()


def test_a_stale_market_is_skipped(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db", stale_after_blocks=3)
    take_over(chain, LONG)
    taken = fund_position(chain)
    # bids at the bound, in a block of their own: fresh, so the unwind sells into them that block;
    # on the same state with the price gone stale, it does nothing at all
    bids = [chain.tx(MAKER, order(BTC, BUY, SIZE, LONG.bound, POST_ONLY))]
    committed = chain.app._committed
    view = StateView(committed)
    store_price(view, BTC, OraclePrice(LONG.oracle, chain.height))
    ctx = ExchangeContext(chain.height + 4, chain.app.books, live=True)  # past stale_after_blocks
    books_before = chain.app.books.book(BTC).orders()
    assert insurance_unwind(view, ctx, chain.height + 4) == []
    assert [key for key, _ in view.changes()] == [schema.oracle_price_key(BTC)]  # only the test's write
    assert chain.app.books.book(BTC).orders() == books_before
    # the control: the same fund, fresh, sells
    result = run(chain, bids)
    assert [e["size"] for e in unwound(result)] == [str(expected_slice(SIZE, LONG.oracle))]
    # then the price goes stale (no votes): an order in each fresh block, none once it is stale
    stale = []
    for _ in range(8):
        result = run(chain)
        stale.append(market_is_stale(chain.app._committed, BTC, chain.height))  # as the block saw it
        assert len(unwound(result)) == (0 if stale[-1] else 1)
    assert stale[-3:] == [True] * 3 and fund_position(chain).size < taken.size
    result = run(chain, [chain.tx(VALIDATOR, OracleVote(((BTC, LONG.oracle),)))])
    assert len(unwound(result)) == 1
    chain.close()


def test_markets_take_turns_leading(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db")
    take_over(chain, LONG)
    eth_size = 28_571 * 1_000_000  # 28.571 ETH: $100,000 at $3,500
    take_over(chain, LONG, market=ETH, size=eth_size, moved=eth(29_751))  # $2,975.1: -15%
    assert owner_markets(chain.app._committed, INSURANCE_FUND.raw) == (BTC, ETH)
    eth_bound = eth(29_157)  # 2,975.1 * 0.98 = 2,915.598 -> up to the $0.1 tick
    txs = [
        chain.tx(MAKER, order(BTC, BUY, SIZE, LONG.bound, POST_ONLY)),
        chain.tx(MAKER, order(ETH, BUY, eth_size, eth_bound, POST_ONLY)),
    ]
    for _ in range(4):
        result = run(chain, txs)
        txs = []
        first = ["BTC-USD", "ETH-USD"][chain.height % 2]  # index height % 2 of the markets by id
        assert [e["market"] for e in unwound(result)] == [first, ({"BTC-USD", "ETH-USD"} - {first}).pop()]
    assert rotated(default_markets(), 7)[0].market_id == ETH
    assert rotated([], 7) == []
    chain.close()


def test_the_funds_health_counts_its_positions(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db")
    run(chain)  # the genesis is committed with the first block
    empty = chain.app.insurance_fund_health()
    assert (empty.balance, empty.value, empty.maintenance, empty.open_positions) == (FUND, FUND, 0, 0)
    take_over(chain, LONG)
    position = fund_position(chain)
    health = chain.app.insurance_fund_health()
    # worked out apart: value = balance + quote + floor(size * P * 1e-9); maintenance 3% of that, up
    mark = position.size * LONG.oracle // 10**9
    assert health.balance == chain.balance(INSURANCE_FUND)
    assert health.value == health.balance + position.quote + mark
    assert health.maintenance == -(-mark * 30_000 // 10**6)
    assert health.open_positions == 1 and not health.underwater
    ctx = ExchangeContext(chain.height + 1)
    assert insurance_fund_health(chain.app._committed, ctx) == health


# -- the parameters ------------------------------------------------------------------------------


def test_params_defaults_round_trip_and_genesis_errors(tmp_path: Path) -> None:
    defaults = InsuranceParams()
    assert defaults.to_json() == {
        "unwind_fraction_ppm": 200_000,
        "max_slippage_ppm": 20_000,
        "min_unwind_notional": 1_000_000_000,
    }
    custom = parse_app_state({"insurance": {"max_slippage_ppm": 5_000}}).insurance
    assert custom == InsuranceParams(max_slippage_ppm=5_000)
    assert InsuranceParams.decode(custom.encode()) == custom
    view = StateView(make_chain(tmp_path / "db").app._committed)
    assert load_params(view) == defaults  # nothing stored: the defaults
    view.put(schema.INSURANCE_PARAMS, custom.encode())
    assert load_params(view) == custom
    for section, message in (
        ({"unwind_fraction_ppm": 0}, "unwind_fraction_ppm: must be within"),
        ({"unwind_fraction_ppm": 1_000_001}, "unwind_fraction_ppm: must be within"),
        ({"max_slippage_ppm": -1}, "max_slippage_ppm: must be within"),
        ({"min_unwind_notional": -5}, "min_unwind_notional: must be within"),
        ({"min_unwind_notional": "5"}, "min_unwind_notional: must be a JSON integer"),
        ({"max_slippage_ppm": True}, "max_slippage_ppm: must be a JSON integer"),
        ({"slippage": 1}, "slippage: unknown field"),
    ):
        with pytest.raises(AppStateError, match=f"app_state.insurance.{message}"):
            parse_app_state({"insurance": section})


# -- the bounds, against a model in exact fractions ----------------------------------------------

MARKETS = st.builds(
    lambda qce, step, tick: Market(
        market_id=1,
        ticker="X-USD",
        atomic_resolution=-10,
        quantum_conversion_exponent=qce,
        subticks_per_tick=tick,
        step_base_quantums=step,
        min_order_base_quantums=step,
        initial_margin_ppm=50_000,
        maintenance_margin_ppm=30_000,
        maker_fee_ppm=100,
        taker_fee_ppm=500,
        max_open_orders=100,
        max_orders_per_block=50,
        initial_price=tick,
    ),
    st.integers(-12, 3),
    st.sampled_from([1, 10, 1_000, 1_000_000]),
    st.sampled_from([1, 7, 100_000]),
)
PARAMS = st.builds(
    InsuranceParams,
    unwind_fraction_ppm=st.integers(1, 1_000_000),
    max_slippage_ppm=st.integers(0, 1_000_000),
    min_unwind_notional=st.integers(0, 10**12),
)


@given(PARAMS, MARKETS, st.integers(1, 10**6), st.integers(1, 10**12))
def test_the_size_bound_matches_the_rule(
    params: InsuranceParams, market: Market, steps: int, price: int
) -> None:
    size = steps * market.step_base_quantums
    q = Fraction(10) ** market.quantum_conversion_exponent
    wanted = max(
        Fraction(size * params.unwind_fraction_ppm, 10**6), Fraction(params.min_unwind_notional) / (price * q)
    )
    expected = min(size, math.ceil(wanted / market.step_base_quantums) * market.step_base_quantums)
    got = slice_size(market, size, params.unwind_fraction_ppm, params.min_unwind_notional, price)
    assert got == expected
    assert 0 < got <= size and got % market.step_base_quantums == 0


@given(PARAMS, MARKETS, st.integers(1, 10**12))
def test_the_price_bound_matches_the_rule(params: InsuranceParams, market: Market, price: int) -> None:
    tick = market.subticks_per_tick
    low = Fraction(price * (10**6 - params.max_slippage_ppm), 10**6)
    high = Fraction(price * (10**6 + params.max_slippage_ppm), 10**6)
    sale, purchase = unwind_limit(params, market, SELL, price), unwind_limit(params, market, BUY, price)
    assert sale == max(tick, math.ceil(low / tick) * tick)
    assert purchase == math.floor(high / tick) * tick
    # on the tick, no worse than the bound, and the best such price
    assert sale % tick == 0 and (sale >= low) and (sale - tick < low or sale == tick)
    assert purchase % tick == 0 and purchase <= high < purchase + tick


def test_the_unwind_runs_after_funding_and_before_the_liquidation_pass() -> None:
    # after funding: the positions it settles are final; before the pass: the makers it fills are
    # this block's liquidation candidates (`ExchangeContext.touched_owners`)
    names = [hook.__name__ for hook in END_BLOCK_HOOKS]
    assert names.index("_funding") < names.index("_insurance") == names.index("_liquidation") - 1
