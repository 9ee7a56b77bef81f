"""The validator oracle: vote rules, stake-weighted median aggregation, the 2/3 rule, vote age,
staleness, and oracle votes as transactions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consensus.app import CheckTxKind, ValidatorUpdate
from execution.codes import ActionError, Code
from execution.genesis_state import default_exchange_app_state
from execution.markets import default_markets, store_market
from execution.oracle.prices import (
    OracleParams,
    OraclePrice,
    StoredVote,
    is_stale,
    load_price,
    load_vote,
    market_is_stale,
    prices_at,
    store_params,
    store_price,
)
from execution.oracle.votes import apply_oracle_vote, end_block, weighted_median
from execution.state import CommittedState, StateView
from execution.tx import STANDARD_FEES, ActionKind, OracleVote, Tx, decode_action
from execution.validators import RegisteredValidator, store_validator
from primitives.codec import DecodeError
from tests.execution.chain import Chain, Empty, address, key

BTC, ETH = default_markets()


UNBOUNDED_MOVE = 10**12
PARAMS = OracleParams(max_vote_age_blocks=3, stale_after_blocks=10, max_price_move_ppm=UNBOUNDED_MOVE)


def oracle_state(powers: list[int], params: OracleParams = PARAMS) -> StateView:
    """Markets BTC and ETH at their initial prices (height 0) and validators key(0..) with `powers`."""
    view = StateView(Empty())
    for market in (BTC, ETH):
        store_market(view, market)
        store_price(view, market.market_id, OraclePrice(market.initial_price, 0))
    store_params(view, params)
    for i, power in enumerate(powers):
        store_validator(view, RegisteredValidator(key(i).public_key.raw, power))
    return view


def vote(view: StateView, i: int, height: int, *prices: tuple[int, int]) -> None:
    apply_oracle_vote(view, address(i), OracleVote(tuple(prices)), height)


def refusal(view: StateView, i: int, prices: tuple[tuple[int, int], ...]) -> ActionError:
    """The refusal of a vote by validator `i`, which writes nothing."""
    attempt = StateView(view)
    with pytest.raises(ActionError) as caught:
        apply_oracle_vote(attempt, address(i), OracleVote(prices), 5)
    assert attempt.write_set == frozenset()
    return caught.value


# -- votes -----------------------------------------------------------------------------------------


def test_a_validator_vote_is_stored_per_market() -> None:
    view = oracle_state([10, 10])
    assert apply_oracle_vote(view, address(1), OracleVote(((1, 100), (2, 200))), 7) == []
    assert load_vote(view, 1, address(1)) == StoredVote(100, 7)
    assert load_vote(view, 2, address(1)) == StoredVote(200, 7)
    vote(view, 1, 8, (2, 250))  # a later vote overwrites that market only
    assert load_vote(view, 2, address(1)) == StoredVote(250, 8)
    assert load_vote(view, 1, address(1)) == StoredVote(100, 7)


def test_non_validators_are_refused_and_nothing_is_written() -> None:
    view = oracle_state([10, 0])
    assert refusal(view, 5, ((1, 100),)).code == Code.NOT_A_VALIDATOR  # not in the registry
    assert refusal(view, 1, ((1, 100),)).code == Code.NOT_A_VALIDATOR  # power 0 (slashed)
    assert load_vote(view, 1, address(5)) is None and load_vote(view, 1, address(1)) is None


@pytest.mark.parametrize(
    ("prices", "code", "log"),
    [
        ((), Code.INVALID_ORACLE_VOTE, "at least one price"),
        (
            ((2, 100), (1, 100)),
            Code.INVALID_ORACLE_VOTE,
            r"prices\[1\]: market ids must be strictly increasing",
        ),
        (
            ((1, 100), (1, 101)),
            Code.INVALID_ORACLE_VOTE,
            r"prices\[1\]: market ids must be strictly increasing",
        ),
        (((1, 0),), Code.INVALID_ORACLE_VOTE, r"prices\[0\]: price must be positive"),
        (((1, 100), (3, 100)), Code.UNKNOWN_MARKET, r"prices\[1\]: unknown market 3"),
        (((0, 100),), Code.INVALID_ORACLE_VOTE, r"prices\[0\]"),
    ],
)
def test_bad_votes(prices: tuple[tuple[int, int], ...], code: Code, log: str) -> None:
    view = oracle_state([10])
    error = refusal(view, 0, prices)
    assert error.code == code
    assert re.search(log, error.log), error.log


def test_vote_wire_form() -> None:
    action = OracleVote(((1, 6_500_000_000), (2, 3_500_000_000)))
    fields = action.to_fields()
    assert fields == [6, [[1, 6_500_000_000], [2, 3_500_000_000]]]
    assert isinstance(fields, list)
    assert decode_action(fields, "a") == action
    with pytest.raises(DecodeError, match=r"a\.prices\[0\]: expected 2 fields"):
        decode_action([6, [[1]]], "a")
    with pytest.raises(DecodeError, match=r"a\.prices\[0\]\.price"):
        decode_action([6, [[1, -5]]], "a")
    with pytest.raises(DecodeError, match="expected 2 fields"):
        decode_action([6, [[1, 5]], 0], "a")


# -- aggregation -----------------------------------------------------------------------------------


def test_stake_weighted_median_with_unequal_powers() -> None:
    view = oracle_state([10, 20, 30, 40])
    vote(view, 0, 5, (1, 100_000))
    vote(view, 1, 5, (1, 300_000))
    vote(view, 2, 5, (1, 200_000))
    vote(view, 3, 5, (1, 400_000))
    events = end_block(view, 5)
    # sorted by price: 100k (10), 200k (30), 300k (20), 400k (40); cumulative 10, 40, 60 >= 50
    # (the unweighted lower median would be 200k)
    assert load_price(view, 1) == OraclePrice(300_000, 5)
    assert load_price(view, 2) == OraclePrice(ETH.initial_price, 0)  # nobody voted on ETH
    assert [(e.type, [(a.key, a.value) for a in e.attributes]) for e in events] == [
        ("oracle_price", [("market", "1"), ("price", "300000"), ("height", "5")])
    ]


def test_ties_take_the_lower_median() -> None:
    view = oracle_state([10, 10])
    vote(view, 0, 5, (1, 900))
    vote(view, 1, 5, (1, 100))
    end_block(view, 5)
    assert load_price(view, 1) == OraclePrice(100, 5)  # cumulative 10 * 2 >= 20 at the lower vote


def test_no_update_without_more_than_two_thirds_of_the_power() -> None:
    view = oracle_state([1, 1, 1])
    vote(view, 0, 5, (1, 100))
    vote(view, 1, 5, (1, 100))
    assert end_block(view, 5) == []  # exactly 2/3 is not more than 2/3
    assert load_price(view, 1) == OraclePrice(BTC.initial_price, 0)
    vote(view, 2, 6, (1, 300))
    end_block(view, 6)
    assert load_price(view, 1) == OraclePrice(100, 6)


def test_heavy_minority_cannot_move_the_price() -> None:
    view = oracle_state([60, 20, 20])
    vote(view, 0, 5, (1, 100))  # 60 of 100: not > 2/3
    assert end_block(view, 5) == []
    vote(view, 1, 5, (1, 200))  # 80 of 100: the 60 still decides the median
    end_block(view, 5)
    assert load_price(view, 1) == OraclePrice(100, 5)


def test_old_votes_are_ignored() -> None:
    view = oracle_state([10, 10, 10, 10])  # max_vote_age_blocks = 3
    vote(view, 0, 7, (1, 100))  # at height 10: 7 > 10 - 3 is false: too old
    for i in (1, 2, 3):
        vote(view, i, 8, (1, 500))
    end_block(view, 10)
    assert load_price(view, 1) == OraclePrice(500, 10)  # 30 of 40 counted: > 2/3, median 500
    vote(view, 2, 8, (1, 500))
    assert end_block(view, 11) == []  # only votes at 9..11 count: none
    assert load_price(view, 1) == OraclePrice(500, 10)


def test_slashed_validators_do_not_count() -> None:
    view = oracle_state([10, 10, 10])
    vote(view, 0, 5, (1, 100))
    vote(view, 1, 5, (1, 200))
    store_validator(view, RegisteredValidator(key(1).public_key.raw, 0))  # slashed after voting
    assert end_block(view, 5) == []  # 10 of 20 counted
    store_validator(view, RegisteredValidator(key(2).public_key.raw, 0))
    end_block(view, 5)  # 10 of 10
    assert load_price(view, 1) == OraclePrice(100, 5)


def test_staleness() -> None:
    params = OracleParams(max_vote_age_blocks=3, stale_after_blocks=10, max_price_move_ppm=UNBOUNDED_MOVE)
    price = OraclePrice(100, 5)
    assert not is_stale(price, 15, params)
    assert is_stale(price, 16, params)
    view = oracle_state([10], params)
    assert not market_is_stale(view, 1, 10) and market_is_stale(view, 1, 11)
    assert market_is_stale(view, 9, 0)  # no price at all
    vote(view, 0, 11, (1, 100))
    end_block(view, 11)
    assert not market_is_stale(view, 1, 21) and market_is_stale(view, 1, 22)


def test_prices_at_reads_each_market_price() -> None:
    view = oracle_state([10])
    prices = prices_at(view)
    assert prices(1) == BTC.initial_price and prices(2) == ETH.initial_price
    with pytest.raises(LookupError):
        prices(3)


def reference_median(votes: list[tuple[int, bytes, int]]) -> int:
    """The smallest voted price at or below which at least half the power voted."""
    total = sum(power for _, _, power in votes)
    return min(p for p, _, _ in votes if 2 * sum(w for q, _, w in votes if q <= p) >= total)


@given(
    st.lists(
        st.tuples(st.integers(1, 50), st.binary(min_size=20, max_size=20), st.integers(1, 10**6)),
        min_size=1,
        max_size=12,
        unique_by=lambda vote: vote[1],
    )
)
def test_weighted_median_matches_brute_force(votes: list[tuple[int, bytes, int]]) -> None:
    median = weighted_median(votes)
    assert median == reference_median(votes)
    assert weighted_median(list(reversed(votes))) == median
    total = sum(w for _, _, w in votes)
    assert 2 * sum(w for p, _, w in votes if p < median) < total
    assert 2 * sum(w for p, _, w in votes if p > median) <= total


def test_weighted_median_of_nothing() -> None:
    with pytest.raises(ValueError):
        weighted_median([])


# -- through the app -------------------------------------------------------------------------------


@pytest.fixture
def exchange_chain(tmp_path: Path) -> Iterator[Chain]:
    """Validators key(0) (power 10) and key(1) (power 5); account 2 funded; BTC and ETH markets."""
    validators = (ValidatorUpdate(key(0).public_key.raw, 10), ValidatorUpdate(key(1).public_key.raw, 5))
    c = Chain(
        tmp_path / "db", {address(2): 1_000}, validators=validators, app_state=default_exchange_app_state()
    )
    yield c
    c.close()


def test_oracle_vote_transactions(exchange_chain: Chain) -> None:
    c = exchange_chain
    good = c.tx(key(0), OracleVote(((1, 6_600_000_000),)))
    outsider = c.tx(key(2), OracleVote(((1, 1),)), fee=STANDARD_FEES[ActionKind.ORACLE_VOTE])
    free_ride = c.tx(key(2), OracleVote(((1, 1),)))  # a validator's vote is free, an outsider's is not
    assert c.app.check_tx(free_ride, CheckTxKind.NEW).code == Code.INSUFFICIENT_FEE
    unsorted = c.tx(key(1), OracleVote(((2, 1), (1, 1))))
    assert Tx.decode(good).actions == (OracleVote(((1, 6_600_000_000),)),)
    assert c.app.check_tx(outsider, CheckTxKind.NEW).code == Code.NOT_A_VALIDATOR
    assert c.app.check_tx(good, CheckTxKind.NEW).code == 0
    result = c.run_block([good, outsider, unsorted])
    codes = [r.code for r in result.tx_results]
    assert codes == [0, int(Code.NOT_A_VALIDATOR), int(Code.INVALID_ORACLE_VOTE)]
    assert "not a validator" in result.tx_results[1].log


def test_blocks_aggregate_votes_at_the_end(exchange_chain: Chain) -> None:
    c = exchange_chain  # powers 10 and 5: validator 0 alone holds exactly 2/3, not more
    first = c.run_block([c.tx(key(0), OracleVote(((1, 6_600_000_000),)))])
    assert first.tx_results[0].code == 0
    assert [e for e in first.events if e.type == "oracle_price"] == []
    assert load_price(CommittedState(c.db), 1) == OraclePrice(BTC.initial_price, 0)
    # validator 1 joins one block later; validator 0's vote (height 1) still counts at height 2
    second = c.run_block([c.tx(key(1), OracleVote(((1, 6_400_000_000), (2, 3_000_000_000))))])
    prices = [e for e in second.events if e.type == "oracle_price"]
    assert [[a.value for a in e.attributes] for e in prices] == [["1", "6600000000", "2"]]
    committed = CommittedState(c.db)
    assert load_price(committed, 1) == OraclePrice(6_600_000_000, 2)  # the heavier vote is the median
    assert load_price(committed, 2) == OraclePrice(ETH.initial_price, 0)  # 5 of 15 voted on ETH
