"""Markets: units and their arithmetic, human conversions, storage, genesis validation and the
genesis writes of the exchange."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction
from math import ceil, floor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.app import FinalizeBlockRequest, InitChainRequest
from execution.app import ExchangeApp
from execution.genesis_state import (
    AppStateError,
    default_exchange_app_state,
    init_exchange_state,
    load_app_state,
    parse_app_state,
)
from execution.markets import (
    Market,
    default_markets,
    format_scaled,
    human_to_price,
    human_to_quote,
    human_to_size,
    is_on_step,
    is_on_tick,
    load_market,
    load_markets,
    market_by_ticker,
    market_error,
    notional,
    ppm_of_value_ceil,
    price_to_human,
    quote_to_human,
    size_to_human,
    store_market,
    value_ceil,
    value_floor,
)
from execution.oracle.prices import OracleParams, OraclePrice, load_params, load_price
from execution.state import CommittedState, StateView
from primitives.batch_verify import BatchVerifier
from primitives.codec import DecodeError
from storage import schema
from storage.db import Database, WriteBatch
from tests.execution.chain import Empty

BTC, ETH = default_markets()


def exact(m: Market, size: int, price: int) -> Fraction:
    return Fraction(size * price) * Fraction(10) ** m.quantum_conversion_exponent


# -- the default markets and units -----------------------------------------------------------------


def test_default_markets_are_btc_and_eth_in_dollars() -> None:
    assert (BTC.market_id, BTC.ticker, ETH.market_id, ETH.ticker) == (1, "BTC-USD", 2, "ETH-USD")
    assert market_error(BTC) is None and market_error(ETH) is None
    assert price_to_human(BTC, BTC.initial_price) == "65000"
    assert price_to_human(ETH, ETH.initial_price) == "3500"
    # one tick is $1 on BTC and $0.1 on ETH; one step is 0.0001 BTC and 0.001 ETH
    assert price_to_human(BTC, BTC.subticks_per_tick) == "1"
    assert price_to_human(ETH, ETH.subticks_per_tick) == "0.1"
    assert size_to_human(BTC, BTC.step_base_quantums) == "0.0001"
    assert size_to_human(ETH, ETH.step_base_quantums) == "0.001"


def test_notional_of_a_fill_in_quote_quantums() -> None:
    # 0.5 BTC at $65,000 = $32,500 = 32_500_000_000 quote quantums
    size = human_to_size(BTC, "0.5")
    price = human_to_price(BTC, "65000")
    assert (size, price) == (5_000_000_000, 6_500_000_000)
    assert notional(BTC, size, price) == 32_500_000_000
    assert notional(BTC, -size, price) == -32_500_000_000
    # one step at one tick is exactly step * subticks_per_tick * 10**qce = 100 quote quantums
    assert notional(BTC, BTC.step_base_quantums, BTC.subticks_per_tick) == 100


def test_notional_refuses_an_inexact_value() -> None:
    with pytest.raises(ValueError, match="whole quote quantum"):
        notional(BTC, 1, 6_500_000_001)


def test_value_rounding_directions_for_both_signs() -> None:
    # 1 quantum at 6_500_000_001 subticks is 6.500000001 quote quantums
    assert value_floor(BTC, 1, 6_500_000_001) == 6
    assert value_ceil(BTC, 1, 6_500_000_001) == 7
    assert value_floor(BTC, -1, 6_500_000_001) == -7
    assert value_ceil(BTC, -1, 6_500_000_001) == -6
    # exact values are not moved
    assert value_floor(BTC, 1, 6_000_000_000) == value_ceil(BTC, 1, 6_000_000_000) == 6
    # ppm: ceil(6.500000001 * 30_000 / 1e6) = ceil(0.195...) = 1, one rounding only
    assert ppm_of_value_ceil(BTC, 1, 6_500_000_001, 30_000) == 1
    assert ppm_of_value_ceil(BTC, 1_000_000, 6_500_000_000, 30_000) == 195_000
    assert ppm_of_value_ceil(BTC, 0, 6_500_000_000, 30_000) == 0


@given(
    st.integers(-(10**20), 10**20),
    st.integers(1, 10**12),
    st.integers(-12, 3),
    st.integers(0, 1_000_000),
)
def test_rounding_helpers_match_exact_rationals(size: int, price: int, qce: int, ppm: int) -> None:
    m = replace(BTC, quantum_conversion_exponent=qce)
    value = exact(m, size, price)
    assert value_floor(m, size, price) == floor(value)
    assert value_ceil(m, size, price) == ceil(value)
    assert ppm_of_value_ceil(m, size, price, ppm) == ceil(value * ppm / 1_000_000)


def test_tick_and_step() -> None:
    assert is_on_tick(BTC, 100_000) and is_on_tick(BTC, 6_500_000_000)
    assert not is_on_tick(BTC, 150_000) and not is_on_tick(BTC, 0) and not is_on_tick(BTC, -100_000)
    assert is_on_step(BTC, 2_000_000) and not is_on_step(BTC, 2_500_000)


# -- human conversions -----------------------------------------------------------------------------


def test_human_conversions_examples() -> None:
    assert human_to_price(BTC, "65000.5") == 6_500_050_000
    assert human_to_price(BTC, "65000.00001") == 6_500_000_001
    assert human_to_price(BTC, "+1") == 100_000
    assert human_to_price(ETH, "3500") == 3_500_000_000
    assert human_to_price(ETH, "0.000001") == 1
    assert human_to_size(BTC, "-0.25") == -2_500_000_000
    assert human_to_size(BTC, ".5") == 5_000_000_000
    assert human_to_size(BTC, "1.") == 10_000_000_000
    assert human_to_size(ETH, "0.001000") == 1_000_000
    assert size_to_human(BTC, -2_500_000_000) == "-0.25"
    assert size_to_human(BTC, 1) == "0.0000000001"
    assert price_to_human(BTC, 6_500_050_000) == "65000.5"
    assert price_to_human(BTC, 0) == "0"
    assert quote_to_human(1_500_000) == "1.5"
    assert quote_to_human(-1) == "-0.000001"
    assert human_to_quote("1000") == 1_000_000_000


@pytest.mark.parametrize(
    ("convert", "text"),
    [
        (lambda t: human_to_price(BTC, t), "65000.000001"),  # finer than a subtick ($0.00001)
        (lambda t: human_to_price(ETH, t), "0.0000001"),
        (lambda t: human_to_size(BTC, t), "0.00000000001"),  # finer than 1e-10 BTC
        (human_to_quote, "0.0000001"),
    ],
)
def test_inexact_human_values_are_errors_never_rounded(convert: Any, text: str) -> None:
    with pytest.raises(ValueError, match="not a whole number"):
        convert(text)


@pytest.mark.parametrize(
    "text", ["", ".", "+", "-", "1e5", " 1", "1 ", "1.2.3", "--1", "0x10", "\u0661", "1,5", "nan"]
)
def test_malformed_human_values(text: str) -> None:
    with pytest.raises(ValueError, match="not a decimal number"):
        human_to_size(BTC, text)


@given(st.integers(-(10**30), 10**30), st.integers(-25, 25))
def test_format_scaled_is_exact(n: int, exponent: int) -> None:
    text = format_scaled(n, exponent)
    assert Fraction(Decimal(text)) == n * Fraction(10) ** exponent  # Decimal(str) is exact
    assert not ("." in text and text.endswith("0"))  # no trailing fractional zeros
    assert text == "0" or not text.lstrip("-").startswith("00")


@given(st.integers(-(10**25), 10**25))
def test_size_and_price_round_trip(n: int) -> None:
    for m in (BTC, ETH):
        assert human_to_size(m, size_to_human(m, n)) == n
        assert human_to_price(m, price_to_human(m, n)) == n
    assert human_to_quote(quote_to_human(n)) == n


@given(st.decimals(allow_nan=False, allow_infinity=False, places=12, min_value=-(10**9), max_value=10**9))
def test_human_to_size_agrees_with_decimal(value: Decimal) -> None:
    text = format(value, "f")
    units = Fraction(value) * 10**10  # BTC: 1 base unit = 10**10 base quantums
    if units.denominator == 1:
        assert human_to_size(BTC, text) == units.numerator
    else:
        with pytest.raises(ValueError):
            human_to_size(BTC, text)


# -- storage ---------------------------------------------------------------------------------------


def test_store_load_and_lookup_by_ticker() -> None:
    view = StateView(Empty())
    assert load_markets(view) == [] and load_market(view, 1) is None
    store_market(view, ETH)
    store_market(view, BTC)
    assert load_markets(view) == [BTC, ETH]  # by id, whatever the write order
    assert load_market(view, 2) == ETH
    assert load_market(view, 3) is None and load_market(view, -1) is None and load_market(view, 2**40) is None
    assert market_by_ticker(view, "ETH-USD") == ETH
    assert market_by_ticker(view, "eth-usd") is None
    assert view.get(schema.market_key(1)) == BTC.encode()
    assert Market.decode(BTC.encode()) == BTC


def test_decode_refuses_an_invalid_market() -> None:
    bad = replace(BTC, maintenance_margin_ppm=BTC.initial_margin_ppm + 1)
    with pytest.raises(DecodeError, match="maintenance_margin_ppm"):
        Market.decode(bad.encode())


# -- genesis ---------------------------------------------------------------------------------------


def genesis(**market_override: object) -> dict[str, Any]:
    state = copy.deepcopy(default_exchange_app_state())
    state["markets"][0].update(market_override)
    return state


def test_default_sections_parse() -> None:
    state = parse_app_state(default_exchange_app_state())
    assert state.markets == (BTC, ETH)
    assert state.oracle == OracleParams(3, 10)
    assert parse_app_state({}).markets == () and parse_app_state({}).oracle == OracleParams()


def test_markets_are_sorted_by_id() -> None:
    state = default_exchange_app_state()
    state["markets"].reverse()
    assert parse_app_state(state).markets == (BTC, ETH)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        # 1 * 1 * 10**-9 is not an integer: aligned notionals would not be exact
        (
            {"step_base_quantums": 1, "min_order_base_quantums": 1},
            r"markets\[0\]\.quantum_conversion_exponent: .*integer",
        ),
        ({"subticks_per_tick": 10}, r"markets\[0\]\.quantum_conversion_exponent: "),
        (
            {"maintenance_margin_ppm": 50_001},
            r"markets\[0\]\.maintenance_margin_ppm: must be in \[1, initial_margin_ppm",
        ),
        ({"initial_margin_ppm": 0}, r"markets\[0\]\.initial_margin_ppm: "),
        ({"initial_margin_ppm": 1_000_001}, r"markets\[0\]\.initial_margin_ppm: "),
        (
            {"min_order_base_quantums": 1_500_000},
            r"markets\[0\]\.min_order_base_quantums: must be a multiple",
        ),
        ({"taker_fee_ppm": -1}, r"markets\[0\]\.taker_fee_ppm: "),
        ({"max_open_orders": 0}, r"markets\[0\]\.max_open_orders: "),
        ({"max_orders_per_block": 0}, r"markets\[0\]\.max_orders_per_block: "),
        ({"initial_price": 0}, r"markets\[0\]\.initial_price: "),
        ({"id": 0}, r"markets\[0\]\.id: "),
        ({"ticker": "btc-usd"}, r"markets\[0\]\.ticker: "),
        ({"ticker": 5}, r"markets\[0\]\.ticker: must be a string"),
        ({"atomic_resolution": "-10"}, r"markets\[0\]\.atomic_resolution: must be a JSON integer"),
        ({"step_base_quantums": True}, r"markets\[0\]\.step_base_quantums: must be a JSON integer"),
        ({"colour": 1}, r"markets\[0\]\.colour: unknown field"),
    ],
)
def test_bad_market_fields_are_named(override: dict[str, object], message: str) -> None:
    with pytest.raises(AppStateError, match=r"^app_state\." + message):
        parse_app_state(genesis(**override))


def test_missing_market_field_is_named() -> None:
    state = genesis()
    del state["markets"][1]["taker_fee_ppm"]
    with pytest.raises(AppStateError, match=r"^app_state\.markets\[1\]\.taker_fee_ppm: missing"):
        parse_app_state(state)


def test_duplicate_ids_and_tickers() -> None:
    with pytest.raises(
        AppStateError, match=r"^app_state\.markets\[1\]\.id: duplicate of app_state\.markets\[0\]"
    ):
        parse_app_state(genesis(id=2))
    with pytest.raises(
        AppStateError, match=r"^app_state\.markets\[1\]\.ticker: duplicate of app_state\.markets\[0\]"
    ):
        parse_app_state(genesis(ticker="ETH-USD"))


@pytest.mark.parametrize(
    ("oracle", "message"),
    [
        (
            {"max_vote_age_blocks": 0, "stale_after_blocks": 10},
            r"oracle\.max_vote_age_blocks: must be a positive",
        ),
        ({"max_vote_age_blocks": 3}, r"oracle\.stale_after_blocks: missing"),
        (
            {"max_vote_age_blocks": 3, "stale_after_blocks": "10"},
            r"oracle\.stale_after_blocks: must be a JSON int",
        ),
        ({"max_vote_age_blocks": 3, "stale_after_blocks": 10, "x": 1}, r"oracle\.x: unknown field"),
        ([], r"oracle: must be a JSON object"),
    ],
)
def test_bad_oracle_section(oracle: object, message: str) -> None:
    with pytest.raises(AppStateError, match=r"^app_state\." + message):
        parse_app_state({"oracle": oracle})


def test_markets_must_be_an_array() -> None:
    with pytest.raises(AppStateError, match=r"^app_state\.markets: must be a JSON array"):
        parse_app_state({"markets": {}})


def test_init_exchange_state_writes_markets_params_and_genesis_prices() -> None:
    view = StateView(Empty())
    state = parse_app_state(
        {**default_exchange_app_state(), "oracle": {"max_vote_age_blocks": 2, "stale_after_blocks": 7}}
    )
    init_exchange_state(view, state, initial_height=5)
    assert load_markets(view) == [BTC, ETH]
    assert load_params(view) == OracleParams(2, 7)
    assert load_price(view, 1) == OraclePrice(BTC.initial_price, 4)
    assert load_price(view, 2) == OraclePrice(ETH.initial_price, 4)


def test_init_chain_puts_markets_in_genesis_state(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    verifier = BatchVerifier(workers=1)
    try:
        app = ExchangeApp(db, "c", verifier)
        app_state = json.dumps(default_exchange_app_state()).encode()
        with_markets = app.init_chain(InitChainRequest("c", 0, 1, (), app_state)).app_hash
        app.finalize_block(FinalizeBlockRequest(1, 1, b"\x11" * 32, b"\x22" * 20, (), ()))
        batch = WriteBatch()
        app.commit(batch)
        db.write(batch)
        committed = CommittedState(db)
        assert load_markets(committed) == [BTC, ETH]
        assert load_price(committed, 1) == OraclePrice(BTC.initial_price, 0)
        other_db = Database(tmp_path / "db2")
        plain = ExchangeApp(other_db, "c", verifier)
        assert plain.init_chain(InitChainRequest("c", 0, 1, (), b"")).app_hash != with_markets
        other_db.close()
    finally:
        verifier.close()
        db.close()


def test_load_app_state_round_trips_default_json() -> None:
    raw = json.dumps(default_exchange_app_state()).encode()
    assert load_app_state(raw).markets == (BTC, ETH)
