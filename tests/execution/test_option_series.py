"""Option series on the chain: listing at genesis, marks and Greeks from the implied volatility,
trading on the book, and expiry with cash settlement (execution.risk.option_series)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import FinalizeBlockResult, ValidatorUpdate
from execution.codes import Code
from execution.genesis_state import (
    AppStateError,
    default_exchange_app_state,
    init_exchange_state,
    parse_app_state,
)
from execution.markets import Market, OptionTerms, default_markets, load_market, option_ticker
from execution.options.fixedpoint import SCALE
from execution.options.marks import YEAR_NS, OptionMark, load_mark
from execution.options.pricing import Quote, black_scholes
from execution.oracle.prices import load_price
from execution.positions.funding_index import INSURANCE_FUND
from execution.positions.position import Position
from execution.risk.option_series import (
    init_option_marks,
    load_settlement,
    mark_subticks,
    settlement_price,
)
from execution.state import StateView
from execution.tx import OracleVote
from primitives.timefmt import format_rfc3339
from storage import schema
from tests.execution.chain import BLOCK_INTERVAL, GENESIS_TIME, Chain, Empty, address, key
from tests.execution.exchange_helpers import (
    BUY,
    FUNDS,
    SELL,
    STEP,
    TICK,
    assert_books_match_state,
    assert_ok,
    place,
    position,
    stored_orders,
)

BTC_MARKET, _ETH_MARKET = default_markets()
EXPIRY = GENESIS_TIME + 20 * BLOCK_INTERVAL
STRIKE = 6_500_000_000  # $65,000
CALL, PUT = 11, 12
VOL_PPM = 600_000


def series_json(
    market_id: int, call: bool, strike: int = STRIKE, expiry: int = EXPIRY, **extra: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = BTC_MARKET.to_json() | {
        "id": market_id,
        "ticker": option_ticker(BTC_MARKET, expiry, strike, call),
        "initial_price": 100 * TICK,
    }
    entry["option"] = {
        "underlying": 1,
        "expiry": format_rfc3339(expiry),
        "strike": strike,
        "call": call,
        "initial_vol_ppm": VOL_PPM,
    } | extra
    return entry


def options_app_state() -> dict[str, Any]:
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    state["volatility"] = {"stale_after_blocks": 1_000_000}
    state["markets"] = [*state["markets"], series_json(CALL, True), series_json(PUT, False)]
    return state


VALIDATOR = key(9)


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(
        tmp_path / "db",
        {address(i): FUNDS for i in range(4)},
        app_state=options_app_state(),
        validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)],
    )


def set_underlying(chain: Chain, price: int, time: int | None = None) -> FinalizeBlockResult:
    """A block in which the validator votes BTC-USD's price (applied at its end)."""
    result = chain.run_block([chain.tx(VALIDATOR, OracleVote(((1, price),)))], time=time)
    assert_ok(result.tx_results)
    return result


def markets_query(chain: Chain) -> dict[str, dict[str, Any]]:
    result = chain.app.query("/markets", b"", 0, False)
    assert result.code == 0, result.log
    return {item["ticker"]: item for item in json.loads(result.value)}


# -- genesis ---------------------------------------------------------------------------------------


def test_default_series_parse_and_are_listed_by_genesis() -> None:
    state = parse_app_state(default_exchange_app_state(options_from=GENESIS_TIME))
    series = [m for m in state.markets if m.option is not None]
    assert len(series) == 8
    assert {m.option.underlying_id for m in series if m.option} == {1, 2}
    assert all(m.option.expiry_ns > GENESIS_TIME + 24 * 3600 * 10**9 for m in series if m.option)
    assert {(v.underlying_id, v.vol_ppm) for v in state.initial_vols} == {(1, 600_000), (2, 700_000)}
    assert len(state.initial_vols) == 4  # two underlyings, two expiries
    assert parse_app_state(default_exchange_app_state()).initial_vols == ()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda e: e["option"].update(underlying=99), "markets[2].option.underlying: no market has id 99"),
        (lambda e: e["option"].update(underlying=12), "is an option series, not a perpetual"),
        (lambda e: e.update(atomic_resolution=-9), "must share BTC-USD's atomic_resolution"),
        (lambda e: e["option"].update(strike=STRIKE + 1), "option.strike: must be a positive multiple"),
        (lambda e: e["option"].update(expiry="next friday"), "option.expiry: not an RFC 3339 time"),
        (lambda e: e["option"].update(expiry="1970-01-01T00:00:00Z"), "option.expiry: must be after 1970"),
        (lambda e: e["option"].update(call="yes"), "option.call: must be true"),
        (lambda e: e["option"].pop("strike"), "option.strike: missing"),
        (lambda e: e["option"].update(colour="red"), "option.colour: unknown field"),
        (lambda e: e.update(ticker="BTC-CALL"), "ticker: an option's ticker looks like"),
        (lambda e: e["option"].update(initial_vol_ppm=500_000), "differs from"),
    ],
)
def test_genesis_refuses_bad_series(change: Any, message: str) -> None:
    state = options_app_state()
    entry = copy.deepcopy(state["markets"][2])
    change(entry)
    state["markets"][2] = entry
    with pytest.raises(AppStateError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_app_state(state)


def test_series_record_round_trips_with_its_terms(chain: Chain) -> None:
    chain.run_block([])
    market = load_market(chain.app._committed, CALL)
    assert market is not None
    assert market.option == OptionTerms(underlying_id=1, expiry_ns=EXPIRY, strike=STRIKE, call=True)
    assert Market.decode(market.encode()) == market
    assert market.ticker == "BTC-14NOV23T221340-65000-C"  # expiry 22:13:40 UTC: not 08:00, so in the ticker


# -- marks ---------------------------------------------------------------------------------------


def test_marks_are_black_scholes_at_the_oracle_price_and_vol(chain: Chain) -> None:
    spot = 6_600_000_000
    set_underlying(chain, spot)
    state = chain.app._committed
    t = (EXPIRY - chain.time) * SCALE // YEAR_NS
    quotes = {}
    for market_id, call in ((CALL, True), (PUT, False)):
        expected = black_scholes(
            spot=spot * SCALE, strike=STRIKE * SCALE, vol=VOL_PPM * 10**12, t=t, rate=0, call=call
        )
        quotes[call] = expected
        mark = load_mark(state, market_id)
        assert mark == OptionMark(
            price=mark_subticks(expected), spot=spot, vol_ppm=VOL_PPM, t=t, height=chain.height
        )
        price = load_price(state, market_id)
        assert price is not None and price.price == mark.price and price.updated_height == chain.height
    # put-call parity at rate 0: C - P = S - K, to a unit of the fixed point
    assert abs((quotes[True].price - quotes[False].price) - (spot - STRIKE) * SCALE) <= 2
    shown = markets_query(chain)[option_ticker(BTC_MARKET, EXPIRY, STRIKE, True)]
    option = shown["option"]
    assert option["type"] == "call" and option["status"] == "open" and option["strike_human"] == "65000"
    assert option["mark"]["price"] == str(mark_subticks(quotes[True]))
    assert (
        quotes[True].delta > SCALE - 10**12 and option["mark"]["delta"] == "1"
    )  # deep in the money, 18 s out
    assert option["mark"]["underlying_price_human"] == "66000"
    assert "funding_rate_ppm" not in shown
    assert "funding_rate_ppm" in markets_query(chain)["BTC-USD"]


def test_each_block_emits_the_series_marks(chain: Chain) -> None:
    result = chain.run_block([])
    marks = [{a.key: a.value for a in e.attributes} for e in result.events if e.type == "option_mark"]
    assert [m["market"] for m in marks] == [
        option_ticker(BTC_MARKET, EXPIRY, STRIKE, True),
        option_ticker(BTC_MARKET, EXPIRY, STRIKE, False),
    ]
    mark = load_mark(chain.app._committed, CALL)
    assert mark is not None and marks[0]["price"] == str(mark.price) and marks[0]["vol_ppm"] == str(VOL_PPM)


def test_genesis_marks_the_series_and_a_stale_vol_stops_the_marks(tmp_path: Path) -> None:
    state = options_app_state()
    state["volatility"] = {"stale_after_blocks": 2}
    chain = Chain(tmp_path / "db", {address(0): FUNDS}, app_state=state)
    chain.run_block([])
    genesis_mark = load_mark(chain.app._committed, CALL)
    assert genesis_mark is not None and genesis_mark.height == 1  # marked in block 1 (vol 1 block old)
    chain.run_block([])
    chain.run_block([])  # the genesis vol (height 0) is 3 blocks old at 3: stale
    mark = load_mark(chain.app._committed, CALL)
    assert mark is not None and mark.height == 2
    price = load_price(chain.app._committed, CALL)
    assert price is not None and price.updated_height == 2


def test_a_price_vote_on_a_series_is_refused(chain: Chain) -> None:
    result = chain.run_block([chain.tx(VALIDATOR, OracleVote(((CALL, 200 * TICK),)))])
    assert result.tx_results[0].code == Code.INVALID_ORACLE_VOTE
    assert "is an option series" in result.tx_results[0].log


# -- trading and expiry --------------------------------------------------------------------------


def _trade(chain: Chain, market: int, price: int, size: int) -> None:
    """Account 0 buys `size` from account 1 at `price` on `market`; account 2 rests a bid."""
    results = chain.run_block(
        [
            chain.tx(key(1), place(SELL, size, price, market=market)),
            chain.tx(key(0), place(BUY, size, price, market=market)),
            chain.tx(key(2), place(BUY, STEP, TICK, market=market)),
        ]
    ).tx_results
    assert_ok(results)


def test_series_trade_on_the_book_and_settle_at_intrinsic_value_at_expiry(chain: Chain) -> None:
    size = 10 * STEP  # 0.001 BTC
    _trade(chain, CALL, 1_000 * TICK, size)
    _trade(chain, PUT, 2_000 * TICK, size)
    assert position(chain, address(0), CALL).size == size
    assert position(chain, address(1), PUT).size == -size
    spot = 6_600_000_000  # the underlying rises to $66,000
    set_underlying(chain, spot)
    balances = {i: chain.balance(address(i)) for i in range(3)}
    quotes = {(i, m): position(chain, address(i), m).quote for i in range(2) for m in (CALL, PUT)}
    result = chain.run_block([], time=EXPIRY)
    events = [e for e in result.events if e.type == "option_expired"]
    assert len(events) == 2
    state = chain.app._committed
    call_settled, put_settled = load_settlement(state, CALL), load_settlement(state, PUT)
    assert call_settled is not None and call_settled.price == spot - STRIKE  # $1,000 in the money
    assert put_settled is not None and put_settled.price == 0
    # the call's buyer receives 0.001 BTC x $1,000 = $1 on its $1 premium; the seller pays it
    payoff = size * (spot - STRIKE) // 10**9
    assert chain.balance(address(0)) == balances[0] + quotes[(0, CALL)] + payoff + quotes[(0, PUT)]
    assert chain.balance(address(1)) == balances[1] + quotes[(1, CALL)] - payoff + quotes[(1, PUT)]
    for i in range(3):
        for m in (CALL, PUT):
            assert position(chain, address(i), m) == Position()
    assert stored_orders(chain, CALL) == [] and stored_orders(chain, PUT) == []
    assert_books_match_state(chain)
    cancelled = [e for e in result.events if e.type == "order_cancelled"]
    assert {a.value for e in cancelled for a in e.attributes if a.key == "reason"} == {"expiry"}
    # closed: no more orders
    after = chain.run_block(
        [chain.tx(key(2), place(BUY, STEP, TICK, market=CALL))], time=EXPIRY + BLOCK_INTERVAL
    )
    assert after.tx_results[0].code == Code.MARKET_CLOSED
    assert (
        markets_query(chain)[option_ticker(BTC_MARKET, EXPIRY, STRIKE, True)]["option"]["status"] == "settled"
    )


# -- settlement price -----------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(spot=st.integers(1, 10**12), strike_ticks=st.integers(1, 10**6), call=st.booleans())
def test_settlement_price_is_the_intrinsic_value_on_the_tick(
    spot: int, strike_ticks: int, call: bool
) -> None:
    terms = OptionTerms(underlying_id=1, expiry_ns=1, strike=strike_ticks * TICK, call=call)
    price = settlement_price(BTC_MARKET, terms, spot)
    intrinsic = max(spot - terms.strike, 0) if call else max(terms.strike - spot, 0)
    assert price % TICK == 0 and 0 <= intrinsic - price < TICK


def test_series_pay_no_funding_and_take_no_premium_samples(chain: Chain) -> None:
    _trade(chain, CALL, 1_000 * TICK, 10 * STEP)
    result = chain.run_block([], time=GENESIS_TIME + 3_600 * 10**9)  # the first funding tick
    ticked = {
        attr.value
        for e in result.events
        if e.type == "funding"
        for attr in e.attributes
        if attr.key == "market"
    }
    assert ticked == {"BTC-USD", "ETH-USD"}
    for market_id in (CALL, PUT):
        assert chain.app._committed.get(schema.funding_market_key(market_id)) is None


def test_genesis_writes_the_first_marks() -> None:
    state = parse_app_state(options_app_state())
    view = StateView(Empty())
    init_exchange_state(view, state, 1)
    init_option_marks(view, state.markets, 0, GENESIS_TIME)
    mark = load_mark(view, CALL)
    assert mark is not None and mark.height == 0 and mark.t == (EXPIRY - GENESIS_TIME) * SCALE // YEAR_NS
    price = load_price(view, CALL)
    assert price is not None and price.price == mark.price and price.updated_height == 0
    late = StateView(Empty())
    init_exchange_state(late, state, 1)
    init_option_marks(late, state.markets, 0, EXPIRY)  # a genesis at the expiry: nothing to mark
    assert load_mark(late, CALL) is None


@pytest.mark.parametrize(
    ("price", "subticks"),
    [(0, 1), (SCALE // 2 - 1, 1), (3 * SCALE // 2 - 1, 1), (3 * SCALE // 2, 2), (7 * SCALE, 7)],
)
def test_a_mark_is_the_price_to_the_nearest_subtick_and_at_least_one(price: int, subticks: int) -> None:
    assert mark_subticks(Quote(price=price, delta=0, gamma=0, vega=0, theta=0)) == subticks


def test_a_holder_who_cannot_pay_at_expiry_is_covered_by_the_insurance_fund(chain: Chain) -> None:
    seller, buyer, fund = address(1), address(0), INSURANCE_FUND
    keep = 200 * 10**6  # the seller keeps $200: enough margin for a short 0.01 BTC call, not for a 50% jump
    assert_ok(
        chain.run_block(
            [
                chain.transfer(key(1), address(3), FUNDS - keep),
                chain.transfer(key(3), fund, 10_000 * 10**6),
            ]
        ).tx_results
    )
    size = 100 * STEP  # 0.01 BTC
    _trade(chain, CALL, 1_000 * TICK, size)
    funded = chain.balance(fund)
    before = {who: chain.balance(who) for who in (seller, buyer)}
    quotes = {who: position(chain, who, CALL).quote for who in (seller, buyer)}
    # the expiry block: the underlying jumps 50% (the oracle's bound) and the series settles on it
    result = set_underlying(chain, 9_750_000_000, time=EXPIRY)
    payoff = size * (9_750_000_000 - STRIKE) // 10**9  # $325
    shortfall = payoff - (before[seller] + quotes[seller])
    assert shortfall > 0
    settled = {
        attrs["owner"]: attrs
        for attrs in (
            {a.key: a.value for a in e.attributes} for e in result.events if e.type == "option_settlement"
        )
    }
    assert settled[seller.raw.hex()]["insurance_covered"] == str(shortfall)
    assert settled[buyer.raw.hex()]["insurance_covered"] == "0"
    assert chain.balance(seller) == 0 and position(chain, seller, CALL) == Position()
    assert chain.balance(fund) == funded - shortfall
    assert chain.balance(buyer) == before[buyer] + quotes[buyer] + payoff
