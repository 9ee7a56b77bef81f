"""The implied-volatility oracle: parameters, listed expiries, vote rules, the stake-weighted median,
the 2/3 rule, vote age, staleness, the move bound, and the VOL_VOTE action (wire, JSON, fees, the
handler table, block order)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import CheckTxKind, Event, ValidatorUpdate
from execution.actions import HANDLERS, apply_action
from execution.codes import ActionError, Code
from execution.exchange.books import Books
from execution.exchange.orders import is_non_taking
from execution.fees import FeeParams, minimum_fee
from execution.genesis_state import default_exchange_app_state
from execution.markets import Market, OptionTerms, default_markets, human_to_price, store_market
from execution.oracle.volatility import (
    VOL_FIELDS,
    StoredVol,
    StoredVolVote,
    VolParams,
    apply_vol_vote,
    bounded_vol,
    init_vol,
    listed_expiries,
    load_vol,
    load_vol_params,
    pair_votes,
    store_vol,
    store_vol_params,
    vol_end_block,
    vol_is_stale,
)
from execution.state import CommittedState, StateView
from execution.tx import (
    STANDARD_FEES,
    ActionKind,
    OracleVote,
    Transfer,
    Tx,
    VolVote,
    decode_action,
    standard_fee,
)
from execution.validators import RegisteredValidator, store_validator
from node.txjson import TxDocumentError, action_from_json, action_to_json
from primitives.codec import DecodeError
from primitives.timefmt import parse_rfc3339
from tests.execution.chain import Chain, Empty, address, key
from tests.execution.test_oracle import reference_median

BTC, ETH = default_markets()
DEC = parse_rfc3339("2026-12-31T08:00:00Z")
MAR = parse_rfc3339("2027-03-26T08:00:00Z")
UNBOUNDED = VolParams(max_vol_move_ppm=10**12)


def option(market_id: int, underlying: Market, expiry_ns: int, strike_usd: int, call: bool) -> Market:
    """An option series on `underlying` (its units; strike in whole dollars)."""
    day = {DEC: "31DEC26", MAR: "26MAR27"}[expiry_ns]
    base = underlying.ticker.split("-")[0]
    ticker = f"{base}-{day}-{strike_usd}-{'C' if call else 'P'}"
    terms = OptionTerms(
        underlying_id=underlying.market_id,
        expiry_ns=expiry_ns,
        strike=human_to_price(underlying, str(strike_usd)),
        call=call,
    )
    return dataclasses.replace(underlying, market_id=market_id, ticker=ticker, option=terms)


SERIES = (
    option(7, BTC, MAR, 70_000, True),
    option(3, BTC, DEC, 70_000, True),
    option(4, BTC, DEC, 60_000, False),  # same expiry as 3: one pair
    option(5, ETH, DEC, 4_000, True),
)


def vol_state(powers: list[int], params: VolParams = UNBOUNDED) -> StateView:
    """BTC, ETH and the option series of SERIES; validators key(0..) with `powers`."""
    view = StateView(Empty())
    for market in (BTC, ETH, *SERIES):
        store_market(view, market)
    store_vol_params(view, params)
    for i, power in enumerate(powers):
        store_validator(view, RegisteredValidator(key(i).public_key.raw, power))
    return view


def vote(view: StateView, i: int, height: int, *vols: tuple[int, int, int]) -> None:
    apply_vol_vote(view, address(i), VolVote(tuple(vols)), height)


def refusal(view: StateView, i: int, vols: tuple[tuple[int, int, int], ...]) -> ActionError:
    """The refusal of a vote by validator `i`, which writes nothing."""
    attempt = StateView(view)
    with pytest.raises(ActionError) as caught:
        apply_vol_vote(attempt, address(i), VolVote(vols), 5)
    assert attempt.write_set == frozenset()
    return caught.value


def attrs(events: list[Event]) -> list[tuple[str, list[tuple[str, str]]]]:
    return [(e.type, [(a.key, a.value) for a in e.attributes]) for e in events]


# -- parameters, storage, listing ------------------------------------------------------------------


def test_params_defaults_round_trip_and_json() -> None:
    params = VolParams()
    assert (params.max_vote_age_blocks, params.stale_after_blocks, params.max_vol_move_ppm) == (
        3,
        10,
        500_000,
    )
    assert (params.min_vol_ppm, params.max_vol_ppm) == (10_000, 5_000_000)
    assert tuple(params.to_json()) == VOL_FIELDS
    odd = VolParams(
        max_vote_age_blocks=2, stale_after_blocks=7, max_vol_move_ppm=9, min_vol_ppm=5, max_vol_ppm=6
    )
    assert VolParams.decode(odd.encode()) == odd
    assert load_vol_params(StateView(Empty())) == params  # nothing stored: the defaults
    view = StateView(Empty())
    store_vol_params(view, odd)
    assert load_vol_params(view) == odd


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"max_vote_age_blocks": 0}, "max_vote_age_blocks"),
        ({"stale_after_blocks": -1}, "stale_after_blocks"),
        ({"max_vol_move_ppm": 0}, "max_vol_move_ppm"),
        ({"min_vol_ppm": 0}, "min_vol_ppm"),
        ({"min_vol_ppm": 600, "max_vol_ppm": 599}, "max_vol_ppm"),
    ],
)
def test_bad_params_name_the_field(fields: dict[str, int], named: str) -> None:
    with pytest.raises(ValueError, match=rf"^{named}: "):
        VolParams(**fields)


def test_listed_expiries_are_the_option_pairs_sorted_once() -> None:
    view = vol_state([10])
    assert listed_expiries(view) == [(1, DEC), (1, MAR), (2, DEC)]
    perpetuals = StateView(Empty())
    store_market(perpetuals, BTC)
    assert listed_expiries(perpetuals) == []


def test_stored_vol_staleness_and_genesis_init() -> None:
    view = vol_state([10])
    init_vol(view, 1, DEC, 550_000, 0)
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=550_000, updated_height=0)
    assert load_vol(view, 1, MAR) is None
    params = VolParams(stale_after_blocks=10)
    assert not vol_is_stale(StoredVol(vol_ppm=1, updated_height=5), 15, params)
    assert vol_is_stale(StoredVol(vol_ppm=1, updated_height=5), 16, params)
    with pytest.raises(ValueError, match="vol_ppm"):
        init_vol(view, 1, MAR, 9_999, 0)  # below min_vol_ppm
    with pytest.raises(ValueError, match="vol_ppm"):
        init_vol(view, 1, MAR, 5_000_001, 0)


# -- votes -----------------------------------------------------------------------------------------


def test_a_validator_vote_is_stored_per_pair() -> None:
    view = vol_state([10, 10])
    assert apply_vol_vote(view, address(1), VolVote(((1, DEC, 500_000), (1, MAR, 600_000))), 7) == []
    assert pair_votes(view, 1, DEC) == [(address(1).raw, StoredVolVote(vol_ppm=500_000, height=7))]
    vote(view, 1, 8, (1, MAR, 650_000))  # overwrites that pair only
    assert pair_votes(view, 1, MAR) == [(address(1).raw, StoredVolVote(vol_ppm=650_000, height=8))]
    assert pair_votes(view, 1, DEC) == [(address(1).raw, StoredVolVote(vol_ppm=500_000, height=7))]
    vote(view, 0, 8, (1, DEC, 10_000), (2, DEC, 5_000_000))  # the bounds themselves are accepted
    assert [a for a, _ in pair_votes(view, 1, DEC)] == sorted([address(0).raw, address(1).raw])


def test_non_validators_are_refused() -> None:
    view = vol_state([10, 0])
    assert refusal(view, 5, ((1, DEC, 500_000),)).code == Code.NOT_A_VALIDATOR  # not registered
    assert refusal(view, 1, ((1, DEC, 500_000),)).code == Code.NOT_A_VALIDATOR  # power 0


@pytest.mark.parametrize(
    ("vols", "code", "log"),
    [
        ((), Code.INVALID_VOL_VOTE, "at least one vol"),
        (((1, MAR, 500_000), (1, DEC, 500_000)), Code.INVALID_VOL_VOTE, r"vols\[1\]: .*strictly increasing"),
        (((1, DEC, 500_000), (1, DEC, 600_000)), Code.INVALID_VOL_VOTE, r"vols\[1\]: .*strictly increasing"),
        (((2, DEC, 500_000), (1, MAR, 500_000)), Code.INVALID_VOL_VOTE, r"vols\[1\]: .*strictly increasing"),
        (((1, DEC, 9_999),), Code.INVALID_VOL_VOTE, r"vols\[0\]: vol_ppm must be within \[10000, 5000000\]"),
        (((1, DEC, 5_000_001),), Code.INVALID_VOL_VOTE, r"vols\[0\]: vol_ppm"),
        (((1, DEC, 0),), Code.INVALID_VOL_VOTE, r"vols\[0\]: vol_ppm"),
        (((1, DEC, 500_000), (2, MAR, 500_000)), Code.UNKNOWN_MARKET, rf"vols\[1\]: .*market 2 .*{MAR}"),
        (((3, DEC, 500_000),), Code.UNKNOWN_MARKET, r"vols\[0\]: no option series on market 3"),
        (((9, DEC, 500_000),), Code.UNKNOWN_MARKET, r"vols\[0\]"),
    ],
)
def test_bad_votes(vols: tuple[tuple[int, int, int], ...], code: Code, log: str) -> None:
    view = vol_state([10], VolParams())
    error = refusal(view, 0, vols)
    assert error.code == code
    assert re.search(log, error.log), error.log


# -- aggregation -----------------------------------------------------------------------------------


def test_stake_weighted_median_with_unequal_powers_and_its_event() -> None:
    view = vol_state([10, 20, 30, 40])
    for i, vol in enumerate((100_000, 300_000, 200_000, 400_000)):
        vote(view, i, 5, (1, DEC, vol))
    events = vol_end_block(view, 5)
    # sorted: 100k (10), 200k (30), 300k (20), 400k (40); cumulative 10, 40, 60 >= 50
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=300_000, updated_height=5)
    assert load_vol(view, 1, MAR) is None and load_vol(view, 2, DEC) is None  # nobody voted
    assert attrs(events) == [
        (
            "volatility",
            [
                ("underlying", "BTC-USD"),
                ("expiry", "2026-12-31T08:00:00Z"),
                ("vol_ppm", "300000"),
                ("height", "5"),
            ],
        )
    ]


def test_pairs_aggregate_in_order_each_from_its_own_votes() -> None:
    view = vol_state([10])
    vote(view, 0, 5, (1, DEC, 400_000), (1, MAR, 450_000), (2, DEC, 700_000))
    events = vol_end_block(view, 5)
    assert [(a[0][1], a[1][1], a[2][1]) for _, a in attrs(events)] == [
        ("BTC-USD", "2026-12-31T08:00:00Z", "400000"),
        ("BTC-USD", "2027-03-26T08:00:00Z", "450000"),
        ("ETH-USD", "2026-12-31T08:00:00Z", "700000"),
    ]
    assert load_vol(view, 2, DEC) == StoredVol(vol_ppm=700_000, updated_height=5)


def test_no_update_without_more_than_two_thirds_of_the_power() -> None:
    view = vol_state([1, 1, 1])
    store_vol(view, 1, DEC, StoredVol(vol_ppm=500_000, updated_height=0))
    vote(view, 0, 5, (1, DEC, 300_000))
    vote(view, 1, 5, (1, DEC, 300_000))
    assert vol_end_block(view, 5) == []  # exactly 2/3 is not more
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=500_000, updated_height=0)
    vote(view, 2, 6, (1, DEC, 900_000))
    vol_end_block(view, 6)
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=300_000, updated_height=6)


def test_old_votes_and_slashed_validators_do_not_count() -> None:
    view = vol_state([10, 10, 10, 10])  # max_vote_age_blocks 3
    vote(view, 0, 7, (1, DEC, 100_000))  # at height 10: 7 > 10 - 3 is false
    for i in (1, 2, 3):
        vote(view, i, 8, (1, DEC, 500_000))
    vol_end_block(view, 10)
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=500_000, updated_height=10)
    assert vol_end_block(view, 11) == []  # only votes at 9..11 count: none
    vote(view, 0, 12, (1, DEC, 200_000))
    vote(view, 1, 12, (1, DEC, 200_000))
    vote(view, 2, 12, (1, DEC, 200_000))
    store_validator(view, RegisteredValidator(key(2).public_key.raw, 0))  # slashed after voting
    assert vol_end_block(view, 12) == []  # 20 of 30 counted: not > 2/3
    store_validator(view, RegisteredValidator(key(3).public_key.raw, 0))
    vol_end_block(view, 12)  # 20 of 20
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=200_000, updated_height=12)


def test_the_move_bound_follows_a_jump_in_steps() -> None:
    view = vol_state([10], VolParams())  # at most 50% of the vol a block
    store_vol(view, 1, DEC, StoredVol(vol_ppm=400_000, updated_height=0))
    applied = []
    for height in range(1, 5):
        vote(view, 0, height, (1, DEC, 1_500_000))
        events = vol_end_block(view, height)
        applied.append(load_vol(view, 1, DEC))
        if height == 1:
            assert attrs(events)[1] == (
                "volatility_clamped",
                [
                    ("underlying", "BTC-USD"),
                    ("expiry", "2026-12-31T08:00:00Z"),
                    ("wanted", "1500000"),
                    ("applied", "600000"),
                    ("previous", "400000"),
                    ("height", "1"),
                ],
            )
    assert applied == [
        StoredVol(vol_ppm=600_000, updated_height=1),
        StoredVol(vol_ppm=900_000, updated_height=2),
        StoredVol(vol_ppm=1_350_000, updated_height=3),
        StoredVol(vol_ppm=1_500_000, updated_height=4),  # within one step: the median itself
    ]
    assert [e.type for e in vol_end_block(view, 5)] == ["volatility"]  # no clamp once there
    vote(view, 0, 6, (1, DEC, 10_000))
    vol_end_block(view, 6)
    assert load_vol(view, 1, DEC) == StoredVol(vol_ppm=750_000, updated_height=6)  # halved, no lower


def test_a_pair_without_a_vol_takes_the_median_at_once() -> None:
    view = vol_state([10], VolParams())
    vote(view, 0, 3, (1, MAR, 4_000_000))
    assert [e.type for e in vol_end_block(view, 3)] == ["volatility"]
    assert load_vol(view, 1, MAR) == StoredVol(vol_ppm=4_000_000, updated_height=3)


def test_bounded_vol_stays_within_the_range() -> None:
    params = VolParams(min_vol_ppm=100_000, max_vol_ppm=200_000, max_vol_move_ppm=500_000)
    assert bounded_vol(None, 150_000, params) == 150_000
    assert bounded_vol(150_000, 200_000, params) == 200_000
    assert bounded_vol(50_000, 150_000, params) == 100_000  # a vol from before a narrower range
    assert bounded_vol(900_000, 150_000, params) == 200_000
    assert bounded_vol(1, 150_000, params) == 100_000


@settings(max_examples=150, deadline=None)
@given(
    votes=st.lists(
        st.tuples(st.integers(10_000, 5_000_000), st.integers(1, 1_000), st.integers(0, 12)),
        min_size=1,
        max_size=7,
    ),
    previous=st.none() | st.integers(10_000, 5_000_000),
    move_ppm=st.integers(1, 3_000_000),
    height=st.integers(10, 12),
)
def test_the_aggregate_is_the_bounded_median_of_the_counted_votes(
    votes: list[tuple[int, int, int]], previous: int | None, move_ppm: int, height: int
) -> None:
    params = VolParams(max_vol_move_ppm=move_ppm)
    view = vol_state([power for _, power, _ in votes], params)
    if previous is not None:
        store_vol(view, 1, DEC, StoredVol(vol_ppm=previous, updated_height=0))
    for i, (vol, _, voted_at) in enumerate(votes):
        vote(view, i, voted_at, (1, DEC, vol))
    vol_end_block(view, height)
    counted = [
        (vol, address(i).raw, power) for i, (vol, power, at) in enumerate(votes) if height - 3 < at <= height
    ]
    total = sum(power for _, power, _ in votes)
    stored = load_vol(view, 1, DEC)
    if 3 * sum(power for _, _, power in counted) <= 2 * total:
        assert stored == (None if previous is None else StoredVol(vol_ppm=previous, updated_height=0))
        return
    assert stored is not None and stored.updated_height == height
    median = reference_median(counted)
    applied = stored.vol_ppm
    assert params.min_vol_ppm <= applied <= params.max_vol_ppm
    if previous is None:
        assert applied == median
    else:
        step = max(previous * move_ppm // 1_000_000, 1)
        assert applied == (
            median if abs(median - previous) <= step else previous + step * (1 if median > previous else -1)
        )


# -- the action ------------------------------------------------------------------------------------


def test_vol_vote_wire_form() -> None:
    action = VolVote(((1, DEC, 550_000), (2, MAR, 700_000)))
    fields = action.to_fields()
    assert fields == [9, [[1, DEC, 550_000], [2, MAR, 700_000]]]
    assert isinstance(fields, list)
    assert decode_action(fields, "a") == action
    assert int(ActionKind.VOL_VOTE) == 9 and action.kind == ActionKind.VOL_VOTE
    with pytest.raises(DecodeError, match=r"a\.vols\[0\]: expected 3 fields"):
        decode_action([9, [[1, DEC]]], "a")
    with pytest.raises(DecodeError, match=r"a\.vols\[0\]\.vol_ppm"):
        decode_action([9, [[1, DEC, -5]]], "a")
    with pytest.raises(DecodeError, match=r"a\.vols\[0\]\.underlying"):
        decode_action([9, [[2**32, DEC, 5]]], "a")
    with pytest.raises(DecodeError, match="expected 2 fields"):
        decode_action([9, [[1, DEC, 5]], 0], "a")
    with pytest.raises(DecodeError, match=r"a\.vols"):
        decode_action([9, [[1, DEC, 5]] * 257], "a")


def test_vol_vote_json_form() -> None:
    action = VolVote(((1, DEC, 550_000),))
    doc = action_to_json(action)
    assert doc == {"type": "vol_vote", "vols": [{"underlying": "1", "expiry": str(DEC), "vol_ppm": "550000"}]}
    assert action_from_json(doc, "a") == action
    for bad, problem in [
        ({"type": "vol_vote", "vols": [[1, DEC, 5]]}, r"a\.vols\[0\]: must be an object"),
        (
            {"type": "vol_vote", "vols": [{"underlying": "1", "expiry": "2"}]},
            r"a\.vols\[0\]: missing field\(s\) vol_ppm",
        ),
        (
            {"type": "vol_vote", "vols": [{"underlying": "1", "expiry": 2, "vol_ppm": "3"}]},
            r"a\.vols\[0\]\.expiry",
        ),
        ({"type": "vol_vote", "vols": {}}, r"a\.vols: must be a list"),
    ]:
        with pytest.raises(TxDocumentError, match=problem):
            action_from_json(bad, "a")


def test_a_validators_vol_vote_is_free_as_its_oracle_vote() -> None:
    view = vol_state([10])
    both = (OracleVote(((1, 100),)), VolVote(((1, DEC, 550_000),)))
    fees = FeeParams(oracle_vote=7)
    validator = Tx.create(key(0), "c", 1, both, fee=0)
    outsider = Tx.create(key(5), "c", 1, both, fee=0)
    assert minimum_fee(view, fees, validator) == 0
    assert minimum_fee(view, fees, outsider) == 14  # a vol vote costs an oracle vote's price
    with_transfer = Tx.create(key(0), "c", 1, (*both, Transfer(address(1), 5)), fee=0)
    assert minimum_fee(view, fees, with_transfer) == fees.transfer  # only the votes are free
    assert fees.price(ActionKind.VOL_VOTE) == 7
    assert STANDARD_FEES[ActionKind.VOL_VOTE] == STANDARD_FEES[ActionKind.ORACLE_VOTE]
    assert standard_fee(both) == 0
    assert standard_fee((*both, OracleVote(()))) == 0


def test_the_handler_table_routes_vol_votes_and_they_take_no_liquidity() -> None:
    view = vol_state([10])
    assert VolVote in HANDLERS
    assert apply_action(view, address(0), VolVote(((1, DEC, 550_000),)), 4) == []
    assert pair_votes(view, 1, DEC) == [(address(0).raw, StoredVolVote(vol_ppm=550_000, height=4))]
    with pytest.raises(ActionError) as caught:
        apply_action(StateView(view), address(3), VolVote(((1, DEC, 550_000),)), 4)
    assert caught.value.code == Code.NOT_A_VALIDATOR
    assert is_non_taking([VolVote(((1, DEC, 550_000),)), OracleVote(((1, 1),))], Books())


# -- through the app -------------------------------------------------------------------------------


@pytest.fixture
def option_chain(tmp_path: Path) -> Iterator[Chain]:
    """Validators key(0) (power 10) and key(1) (power 5); account 2 funded; BTC, ETH and a BTC call
    expiring at DEC with a genesis vol of 600000 ppm."""
    call = option(3, BTC, DEC, 70_000, True)
    assert call.option is not None
    series = call.to_json() | {"option": call.to_json()["option"] | {"initial_vol_ppm": 600_000}}
    app_state = default_exchange_app_state()
    app_state["markets"] = [*app_state["markets"], series]
    validators = (ValidatorUpdate(key(0).public_key.raw, 10), ValidatorUpdate(key(1).public_key.raw, 5))
    c = Chain(tmp_path / "db", {address(2): 1_000}, validators=validators, app_state=app_state)
    yield c
    c.close()


def test_vol_votes_through_blocks(option_chain: Chain) -> None:
    c = option_chain
    both = (OracleVote(((1, 6_600_000_000),)), VolVote(((1, DEC, 700_000),)))
    free = c.tx(key(0), *both, fee=0)
    assert c.app.check_tx(free, CheckTxKind.NEW).code == 0  # a validator's votes are free together
    outsider_free = c.tx(key(2), VolVote(((1, DEC, 700_000),)), fee=0)
    assert c.app.check_tx(outsider_free, CheckTxKind.NEW).code == Code.INSUFFICIENT_FEE
    outsider = c.tx(key(2), VolVote(((1, DEC, 700_000),)), fee=STANDARD_FEES[ActionKind.VOL_VOTE])
    unlisted = c.tx(key(1), VolVote(((1, MAR, 700_000),)), fee=0)
    first = c.run_block([free, outsider, unlisted])
    assert [r.code for r in first.tx_results] == [0, Code.NOT_A_VALIDATOR, Code.UNKNOWN_MARKET]
    assert [e for e in first.events if e.type == "volatility"] == []  # 10 of 15: not > 2/3
    assert load_vol(CommittedState(c.db), 1, DEC) == StoredVol(vol_ppm=600_000, updated_height=0)  # genesis
    second = c.run_block([c.tx(key(1), VolVote(((1, DEC, 800_000),)), fee=0)])
    assert second.tx_results[0].code == 0
    vols = [[(a.key, a.value) for a in e.attributes] for e in second.events if e.type == "volatility"]
    assert vols == [
        [
            ("underlying", "BTC-USD"),
            ("expiry", "2026-12-31T08:00:00Z"),
            ("vol_ppm", "700000"),
            ("height", "2"),
        ]
    ]
    assert load_vol(CommittedState(c.db), 1, DEC) == StoredVol(vol_ppm=700_000, updated_height=2)
