"""The price feeder and option series: no price votes on option markets, vols from the chain (`sim`)
or the price file (`file`), voted in the same tx as the prices and accepted by the chain's rules."""

from __future__ import annotations

import logging
from decimal import Decimal
from pathlib import Path

import pytest

from execution.actions import apply_actions
from execution.codes import ActionError
from execution.markets import Market, load_markets, store_market
from execution.oracle.volatility import (
    StoredVol,
    StoredVolVote,
    VolParams,
    pair_votes,
    store_vol,
    store_vol_params,
)
from execution.state import StateView
from execution.tx import OracleVote, Tx, VolVote
from execution.validators import RegisteredValidator, store_validator
from node.config import OracleConfig
from node.events import EventBus
from node.pricefeed import (
    ChainVols,
    FileSource,
    FileVols,
    HttpSource,
    PriceFeeder,
    PriceSourceError,
    SimSource,
    build_source,
    feeder_from_config,
    sim_price,
    vol_fraction_to_ppm,
    vol_source_for,
)
from tests.execution.chain import Empty
from tests.execution.test_volatility import DEC, MAR, option
from tests.node.test_pricefeed import BTC, CHAIN, ETH, KEY, T0, FakeMempool, ScriptedSource, write_prices

CALL = option(3, BTC, DEC, 70_000, True)
ALL = [BTC, ETH, CALL]


def chain_state(*series: Market, params: VolParams | None = None) -> StateView:
    """The perpetuals, `series` (default CALL) and KEY as a validator with power 10."""
    view = StateView(Empty())
    for market in (BTC, ETH, *(series or (CALL,))):
        store_market(view, market)
    if params is not None:
        store_vol_params(view, params)
    store_validator(view, RegisteredValidator(KEY.public_key.raw, 10))
    return view


class Vols:
    """A vol source with fixed vols, or a failing one (`vols` None)."""

    def __init__(self, vols: dict[tuple[int, int], int] | None) -> None:
        self.fixed = vols

    async def vols(self, height: int) -> dict[tuple[int, int], int]:
        if self.fixed is None:
            raise PriceSourceError("no vols today")
        return dict(self.fixed)


# -- vols as decimal fractions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ppm"),
    [
        ("0.55", 550_000),
        (" 0.55 ", 550_000),
        ("0.5500000", 550_000),  # trailing zeros are exact
        ("0.000001", 1),
        ("5E-6", 5),
        (1, 1_000_000),
        (Decimal("1.25"), 1_250_000),
        ("2.5", 2_500_000),
    ],
)
def test_vol_fractions_become_exact_ppm(value: object, ppm: int) -> None:
    assert vol_fraction_to_ppm(value) == ppm


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("0.5500001", "more than 6 decimals"),
        ("0.0000001", "more than 6 decimals"),
        ("1E-7", "more than 6 decimals"),
        ("1.0000000000000000000000000000001", "more than 6 decimals"),  # beyond Decimal's default precision
        ("0", "not a positive vol"),
        ("-0.5", "not a positive vol"),
        ("NaN", "not a positive vol"),
        ("Infinity", "not a positive vol"),
        ("1E+20", "not a plausible vol"),
        ("high", "not a number"),
        (True, "not a number"),
        (0.5, "not a number"),  # a float is never exact: the file is read with Decimals
    ],
)
def test_bad_vol_fractions_are_refused(value: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        vol_fraction_to_ppm(value)


# -- sources: no prices for option series ------------------------------------------------------------


async def test_sources_never_price_option_series(tmp_path: Path) -> None:
    sim = build_source("sim", ALL, chain_id=CHAIN)
    assert isinstance(sim, SimSource)
    assert [walk.market_id for walk in sim.walks] == [1, 2]
    assert set(await sim.prices(4)) == {1, 2}
    path = tmp_path / "prices.json"
    write_prices(path, {"BTC-USD": "64000", CALL.ticker: "1200"})
    file = build_source("file", ALL, chain_id=CHAIN, file=path)
    with pytest.raises(PriceSourceError, match=f"unknown market '{CALL.ticker}'"):
        await file.prices(1)
    with pytest.raises(PriceSourceError, match="unknown market"):
        build_source("http", ALL, chain_id=CHAIN, url="http://x/", fields=[f"{CALL.ticker}=a"])


# -- file vols ---------------------------------------------------------------------------------------


async def test_file_source_reads_vols_beside_the_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(  # a JSON number is read exactly (as a Decimal)
        '{"BTC-USD": "64000", "vols": {"BTC-USD": {"2026-12-31T08:00:00Z": "0.55", '
        '"2027-03-26T08:00:00Z": 0.6}, "ETH-USD": {}}}'
    )
    source = FileSource(path, [BTC, ETH])
    assert await source.prices(1) == {1: 6_400_000_000}
    assert await source.vols(1) == {(1, DEC): 550_000, (1, MAR): 600_000}
    write_prices(path, {"BTC-USD": "64000"})
    assert await FileSource(path, [BTC, ETH]).vols(1) == {}


@pytest.mark.parametrize(
    ("vols", "problem"),
    [
        ({"DOGE-USD": {}}, "vols: unknown market 'DOGE-USD'"),
        ({"BTC-USD": ["0.5"]}, "vols.BTC-USD: expected an object"),
        ({"BTC-USD": {"tomorrow": "0.5"}}, "vols.BTC-USD.tomorrow: not an RFC 3339 time"),
        ({"BTC-USD": {"2026-12-31T08:00:00Z": "0.1234567"}}, "more than 6 decimals"),
        ({"BTC-USD": {"2026-12-31T08:00:00Z": "-1"}}, "not a positive vol"),
        (["BTC-USD"], "vols: expected an object"),
    ],
)
async def test_bad_file_vols_fail_the_file(tmp_path: Path, vols: object, problem: str) -> None:
    path = tmp_path / "prices.json"
    write_prices(path, {"BTC-USD": "64000", "vols": vols})
    source = FileSource(path, [BTC, ETH])
    with pytest.raises(PriceSourceError, match="price file") as info:
        await source.vols(1)
    assert problem in str(info.value)
    with pytest.raises(PriceSourceError):  # the file is wrong as a whole
        await source.prices(1)


async def test_file_vols_keep_the_listed_pairs_within_bounds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "prices.json"
    doc = {
        "BTC-USD": "64000",
        "vols": {"BTC-USD": {"2026-12-31T08:00:00Z": "0.55", "2027-03-26T08:00:00Z": "0.6"}, "ETH-USD": {}},
    }
    write_prices(path, doc)
    state = chain_state(CALL, option(5, ETH, DEC, 4_000, True), params=VolParams(max_vol_ppm=500_000))
    vols = FileVols(FileSource(path, [BTC, ETH]), state)
    caplog.set_level(logging.WARNING, logger="derivd.pricefeed")
    assert await vols.vols(1) == {}  # (1, DEC) is above the chain's max, (1, MAR) is not listed
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "2026-12-31T08:00:00Z: 550000 ppm outside [10000, 500000]" in warnings[0]
    assert "2027-03-26T08:00:00Z: no option series" in warnings[0]
    assert await vols.vols(2) == {}
    assert len(caplog.records) == 1  # the same problem is not logged again
    doc["vols"] = {"BTC-USD": {"2026-12-31T08:00:00Z": "0.45"}, "ETH-USD": {"2026-12-31T08:00:00Z": "0.5"}}
    write_prices(path, doc, mtime_ns=10**18)
    assert await vols.vols(3) == {(1, DEC): 450_000, (2, DEC): 500_000}


# -- sim vols: the chain's own -----------------------------------------------------------------------


async def test_chain_vols_vote_what_the_chain_holds() -> None:
    state = chain_state(CALL, option(4, BTC, MAR, 70_000, False))
    store_vol(state, 1, DEC, StoredVol(vol_ppm=550_000, updated_height=3))
    assert await ChainVols(state).vols(9) == {(1, DEC): 550_000}  # (1, MAR) has no vol: not voted
    store_vol(state, 1, MAR, StoredVol(vol_ppm=610_000, updated_height=8))
    assert await ChainVols(state).vols(9) == {(1, DEC): 550_000, (1, MAR): 610_000}
    assert await ChainVols(chain_state(CALL)).vols(1) == {}


def test_each_source_kind_has_its_vols(tmp_path: Path) -> None:
    state = chain_state()
    assert isinstance(vol_source_for(SimSource(CHAIN, [BTC]), state), ChainVols)
    file_vols = vol_source_for(FileSource(tmp_path / "p.json", [BTC]), state)
    assert isinstance(file_vols, FileVols) and file_vols.committed is state
    assert vol_source_for(HttpSource("http://x/", {"BTC-USD": "a"}, [BTC]), state) is None
    feeder = feeder_from_config(
        OracleConfig(),
        lambda rel: tmp_path / rel,
        CHAIN,
        0,
        state,
        {},
        KEY,
        FakeMempool().check_tx,
        EventBus(),
    )
    assert feeder is not None and isinstance(feeder.vol_source, ChainVols)
    assert isinstance(feeder.source, SimSource) and [w.market_id for w in feeder.source.walks] == [1, 2]


# -- the feeder --------------------------------------------------------------------------------------


async def test_the_feeder_votes_prices_and_vols_in_one_tx_the_chain_accepts() -> None:
    state = chain_state(CALL, option(4, BTC, MAR, 70_000, False))
    store_vol(state, 1, MAR, StoredVol(vol_ppm=610_000, updated_height=0))
    store_vol(state, 1, DEC, StoredVol(vol_ppm=550_000, updated_height=0))
    mempool = FakeMempool()
    source = build_source("sim", load_markets(state), chain_id=CHAIN)
    feeder = PriceFeeder(source, KEY, CHAIN, mempool.check_tx, EventBus(), vol_source=ChainVols(state))
    raw = await feeder.on_block(5, T0)
    assert raw is not None and mempool.txs == [raw]
    tx = Tx.decode(raw)
    assert tx.fee == 0
    assert tx.actions == (
        OracleVote(((1, sim_price(CHAIN, BTC, 5)), (2, sim_price(CHAIN, ETH, 5)))),
        VolVote(((1, DEC, 550_000), (1, MAR, 610_000))),
    )
    assert feeder.stats.votes == 1 and feeder.stats.vol_votes == 1
    apply_actions(state, tx.sender, tx.actions, 6)  # the chain's rules accept the whole tx
    assert pair_votes(state, 1, MAR) == [(KEY.address.raw, StoredVolVote(vol_ppm=610_000, height=6))]


async def test_the_feeder_votes_prices_alone_without_vols(caplog: pytest.LogCaptureFixture) -> None:
    mempool = FakeMempool()
    prices = ScriptedSource(lambda h: {1: 100_000})
    caplog.set_level(logging.WARNING, logger="derivd.pricefeed")
    for vols in (Vols({}), Vols(None), None):
        feeder = PriceFeeder(prices, KEY, CHAIN, mempool.check_tx, EventBus(), vol_source=vols)
        raw = await feeder.on_block(2, T0)
        assert raw is not None and Tx.decode(raw).actions == (OracleVote(((1, 100_000),)),)
        assert feeder.stats.votes == 1 and feeder.stats.vol_votes == 0
    assert [r.getMessage() for r in caplog.records] == ["vols not voted at height 2: no vols today"]
    feeder = PriceFeeder(
        prices, KEY, CHAIN, mempool.check_tx, EventBus(), vol_source=Vols({(2, MAR): 7, (1, DEC): 9})
    )
    raw = await feeder.on_block(3, T0)
    assert raw is not None and Tx.decode(raw).actions[1] == VolVote(((1, DEC, 9), (2, MAR, 7)))  # sorted


async def test_a_vol_vote_the_chain_refuses_shows_why_the_filter_matters() -> None:
    state = chain_state()  # only (1, DEC) is listed
    mempool = FakeMempool()
    feeder = PriceFeeder(
        ScriptedSource(lambda h: {1: 100_000}),
        KEY,
        CHAIN,
        mempool.check_tx,
        EventBus(),
        vol_source=Vols({(1, MAR): 500_000}),
    )
    raw = await feeder.on_block(2, T0)
    assert raw is not None
    with pytest.raises(ActionError, match="action 1: vols"):  # the whole tx fails
        apply_actions(StateView(state), KEY.address, Tx.decode(raw).actions, 3)
