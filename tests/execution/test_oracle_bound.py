"""The oracle's price-move bound (`execution.oracle.votes.bounded_price`): a median beyond the bound
moves the chain's price by exactly one step toward it, the price stays fresh, and a sustained move
(a 60% crash, a 150% rise) is followed block by block until the median is reached. Expected prices
come from the rule written out here, not from the engine's own events."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.app import FinalizeBlockResult, ValidatorUpdate
from execution.genesis_state import default_exchange_app_state
from execution.markets import default_markets
from execution.oracle.prices import OraclePrice, load_price, market_is_stale
from execution.oracle.votes import bounded_price
from execution.tx import OracleVote
from tests.execution.chain import Chain, address, key
from tests.execution.exchange_helpers import BTC, BUY, FUNDS, assert_ok, btc, place, usd

PPM = 1_000_000
BTC_MARKET = default_markets()[0]
VALIDATORS = [key(10), key(11), key(12)]


def rule(previous: int, wanted: int, max_move_ppm: int) -> int:
    """The bound as the brief states it: the median if within the bound (exact), else the previous
    price moved by floor(previous * bound / 1e6), at least 1, never past the median."""
    if abs(wanted - previous) * PPM <= max_move_ppm * previous:
        return wanted
    step = max(previous * max_move_ppm // PPM, 1)
    return min(previous + step, wanted) if wanted > previous else max(previous - step, wanted)


def bound_chain(path: Path, max_move_ppm: int) -> Chain:
    """BTC-USD and ETH-USD, accounts 0..1 funded, three validators of equal power; a price is stale
    one block after it was last set, so a block that did not update it would show."""
    state: dict[str, Any] = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 1, "stale_after_blocks": 1, "max_price_move_ppm": max_move_ppm}
    return Chain(
        path,
        {address(i): FUNDS for i in range(2)},
        app_state=state,
        validators=[ValidatorUpdate(v.public_key.raw, 10) for v in VALIDATORS],
    )


@pytest.fixture
def chain10(tmp_path: Path) -> Iterator[Chain]:
    chain = bound_chain(tmp_path / "db", 100_000)  # 10% a block
    yield chain
    chain.close()


def votes(chain: Chain, *prices: int) -> list[bytes]:
    """One BTC vote per validator; the median is the middle price."""
    return [chain.tx(v, OracleVote(((BTC, price),))) for v, price in zip(VALIDATORS, prices, strict=True)]


def events(result: FinalizeBlockResult, kind: str) -> list[dict[str, str]]:
    return [{a.key: a.value for a in e.attributes} for e in result.events if e.type == kind]


def stored(chain: Chain) -> OraclePrice:
    price = load_price(chain.app._committed, BTC)
    assert price is not None
    return price


# -- sustained moves -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("median", "max_move_ppm", "blocks"),
    [
        (usd(26_000), 100_000, 9),  # a 60% crash, 10% a block: 0.9**9 < 0.4 < 0.9**8
        (usd(162_500), 200_000, 6),  # a 150% rise, 20% a block: 1.2**6 > 2.5 > 1.2**5
    ],
)
def test_a_sustained_move_is_followed_in_bounded_steps(
    tmp_path: Path, median: int, max_move_ppm: int, blocks: int
) -> None:
    chain = bound_chain(tmp_path / "db", max_move_ppm)
    previous = BTC_MARKET.initial_price
    path: list[int] = []
    for _ in range(blocks + 2):  # two more blocks at the median: it stays there
        # the validators disagree a little; the stake-weighted median is the middle vote
        result = chain.run_block(votes(chain, median - usd(1), median, median + usd(500)))
        assert_ok(result.tx_results)
        expected = rule(previous, median, max_move_ppm)
        assert stored(chain) == OraclePrice(expected, chain.height)  # fresh every block
        assert not market_is_stale(chain.app._committed, BTC, chain.height + 1)
        assert events(result, "oracle_price") == [
            {"market": str(BTC), "price": str(expected), "height": str(chain.height)}
        ]
        clamped = {
            "market": str(BTC),
            "wanted": str(median),
            "applied": str(expected),
            "previous": str(previous),
            "height": str(chain.height),
        }
        assert events(result, "oracle_price_clamped") == ([] if expected == median else [clamped])
        if expected != median:  # exactly one step of the bound, no more and no less
            assert abs(expected - previous) == previous * max_move_ppm // PPM
        path.append(expected)
        previous = expected
    assert path.index(median) == blocks - 1  # reached at the block the rule predicts
    assert len(set(path[: blocks - 1])) == blocks - 1  # and every block before it moved
    chain.close()


def test_the_market_stays_open_for_orders_during_a_crash(chain10: Chain) -> None:
    """With the price following the crash, opening orders are accepted every block: the market
    does not go stale even though every block's median is beyond the bound."""
    for i in range(4):
        result = chain10.run_block(
            [
                *votes(chain10, usd(20_000), usd(20_000), usd(20_000)),
                chain10.tx(key(i % 2), place(BUY, btc(1), usd(10_000))),  # an opening bid
            ]
        )
        assert_ok(result.tx_results)
        assert len(events(result, "oracle_price_clamped")) == 1
    assert stored(chain10).updated_height == chain10.height


# -- one block -----------------------------------------------------------------------------------


def test_a_move_within_the_bound_is_applied_at_once(chain10: Chain, caplog: Any) -> None:
    start = BTC_MARKET.initial_price
    exactly = start + start // 10  # +10%: on the bound
    result = chain10.run_block(votes(chain10, exactly, exactly, exactly))
    assert stored(chain10) == OraclePrice(exactly, 1)
    assert events(result, "oracle_price_clamped") == []
    down = exactly - exactly // 20  # -5%
    result = chain10.run_block(votes(chain10, down, down, down))
    assert stored(chain10) == OraclePrice(down, 2)
    assert events(result, "oracle_price_clamped") == []
    assert "clamped" not in caplog.text
    # one subtick beyond the bound: one full step, and a warning
    beyond = down + down // 10 + 1
    result = chain10.run_block(votes(chain10, beyond, beyond, beyond))
    assert stored(chain10) == OraclePrice(beyond - 1, 3)
    assert [e["wanted"] for e in events(result, "oracle_price_clamped")] == [str(beyond)]
    assert "clamped" in caplog.text


def test_the_step_is_at_least_one_subtick_and_never_below_one() -> None:
    assert bounded_price(10, 1_000, 50_000) == 11  # 0.5 subtick rounds down to 0: 1 subtick
    assert bounded_price(10, 1, 50_000) == 9
    assert bounded_price(2, 1, 1) == 1
    assert bounded_price(1, 10**12, 1) == 2
    assert bounded_price(1, 1, 1) == 1
    assert bounded_price(3, 1, 999_999) == 1  # the step is 2 (floor of 2.999997): reaches 1
    assert bounded_price(1_000, 1, 999_000) == 1  # step 999 lands on 1, never below


@given(
    previous=st.integers(1, 2**63 - 1),
    wanted=st.integers(1, 2**63 - 1),
    max_move_ppm=st.one_of(st.integers(1, 2 * PPM), st.integers(1, 2**63 - 1)),
)
def test_the_applied_price_lies_between_and_moves_at_most_the_bound(
    previous: int, wanted: int, max_move_ppm: int
) -> None:
    applied = bounded_price(previous, wanted, max_move_ppm)
    assert applied == rule(previous, wanted, max_move_ppm)
    assert min(previous, wanted) <= applied <= max(previous, wanted)
    assert applied >= 1
    step = max(previous * max_move_ppm // PPM, 1)
    assert abs(applied - previous) <= step
    if abs(wanted - previous) * PPM <= max_move_ppm * previous:
        assert applied == wanted
    else:
        assert abs(applied - previous) == step  # the full step: a clamped block is not wasted


@given(previous=st.integers(1, 10**12), wanted=st.integers(1, 10**12), max_move_ppm=st.integers(10_000, PPM))
def test_repeated_steps_reach_the_median(previous: int, wanted: int, max_move_ppm: int) -> None:
    """A median that holds is reached, and every block until then moves toward it."""
    price = previous
    for _ in range(10_000):
        if price == wanted:
            return
        after = bounded_price(price, wanted, max_move_ppm)
        assert abs(wanted - after) < abs(wanted - price)
        price = after
    raise AssertionError("10,000 steps did not reach the median")


def test_the_default_bound_clamps_a_move_beyond_fifty_percent(tmp_path: Path, caplog: Any) -> None:
    """The default bound (500,000 ppm): $65,000 to $97,501 applies $97,500, fresh, with a warning;
    the next block, within the bound, reaches $97,501; a fall of more than half steps by half."""
    state: dict[str, Any] = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 1, "stale_after_blocks": 1_000_000}
    chain = Chain(
        tmp_path / "db", {}, app_state=state, validators=[ValidatorUpdate(VALIDATORS[0].public_key.raw, 10)]
    )

    def one_vote(price: int) -> FinalizeBlockResult:
        result = chain.run_block([chain.tx(VALIDATORS[0], OracleVote(((BTC, price),)))])
        assert_ok(result.tx_results)
        return result

    result = one_vote(usd(97_501))
    assert events(result, "oracle_price") == [{"market": "1", "price": str(usd(97_500)), "height": "1"}]
    assert events(result, "oracle_price_clamped") == [
        {
            "market": "1",
            "wanted": str(usd(97_501)),
            "applied": str(usd(97_500)),
            "previous": str(usd(65_000)),
            "height": "1",
        }
    ]
    assert stored(chain) == OraclePrice(usd(97_500), 1)
    assert "clamped" in caplog.text
    result = one_vote(usd(97_501))
    assert events(result, "oracle_price_clamped") == []
    assert stored(chain) == OraclePrice(usd(97_501), 2)
    result = one_vote(usd(48_750))  # more than -50% of $97,501: down by floor($48,750.5)
    assert [e["applied"] for e in events(result, "oracle_price_clamped")] == [
        str(usd(97_501) - usd(97_501) // 2)
    ]
    assert stored(chain) == OraclePrice(usd(97_501) - usd(97_501) // 2, 3)
    chain.close()
