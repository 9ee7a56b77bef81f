"""Tests of node.pricefeed: the sim walk (deterministic, chain-specific, on tick, bounded steps),
the file source (reading, reloading, errors), the http source against a real local HTTP server,
and the feeder (one correctly signed vote per committed block, skips on source failure, coalescing,
not voting while inactive) and its construction from `[oracle]`."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import (
    CheckTxResult,
    FinalizeBlockRequest,
    FinalizeBlockResult,
    InitChainRequest,
    ValidatorUpdate,
)
from consensus.execution import BlockResults
from consensus.mempool import Mempool, MempoolConfig, MempoolFull
from consensus.types import Block, BlockID, Commit, Header, PartSetHeader
from execution.app import ExchangeApp
from execution.genesis_state import default_exchange_app_state
from execution.markets import Market, default_markets
from execution.oracle.prices import OraclePrice, load_price
from execution.state import CommittedState, StateView
from execution.tx import OracleVote, Tx
from execution.validators import RegisteredValidator, store_validator
from node.config import Config, ConfigError, OracleConfig, config_from_toml, config_to_toml
from node.events import EventBus, NewBlock
from node.pricefeed import (
    SIM_MAX_STEP_PPM,
    FileSource,
    HttpSource,
    PriceFeeder,
    PriceSourceError,
    SimSource,
    SimWalk,
    build_source,
    extract_field,
    feeder_from_config,
    human_price_to_subticks,
    parse_field_entries,
    round_to_tick,
    sim_price,
)
from primitives.batch_verify import BatchVerifier
from primitives.keys import PrivateKey, verify
from storage.db import Database, WriteBatch

CHAIN = "derivd-test"
BTC, ETH = default_markets()
MARKETS = [BTC, ETH]
KEY = PrivateKey.from_seed(bytes(range(32)))
T0 = 1_700_000_000_000_000_000  # a block time in ns


def tick_market(initial_price: int, tick: int) -> Market:
    return replace(BTC, subticks_per_tick=tick, initial_price=initial_price)


# -- units ---------------------------------------------------------------------------------------


def test_round_to_tick_is_nearest_half_up_and_at_least_one_tick() -> None:
    assert round_to_tick(BTC, 6_400_049_999) == 6_400_000_000
    assert round_to_tick(BTC, 6_400_050_000) == 6_400_100_000
    assert round_to_tick(BTC, 1) == 100_000
    assert round_to_tick(BTC, 0) == 100_000


@pytest.mark.parametrize(
    ("market", "value", "expected"),
    [
        (BTC, "64000.5", 6_400_100_000),  # $64,000.5 rounds half up to the $1 tick
        (BTC, "64000.49", 6_400_000_000),
        (BTC, 64000, 6_400_000_000),
        (BTC, "64000.123456789", 6_400_000_000),  # finer than a subtick
        (ETH, "3400.07", 3_400_100_000),  # ETH's tick is $0.1
        (ETH, " 3400 ", 3_400_000_000),
        (ETH, "0.00001", 100_000),  # never below one tick
    ],
)
def test_human_prices_become_subticks_on_tick(market: Market, value: object, expected: int) -> None:
    assert human_price_to_subticks(market, value) == expected


@pytest.mark.parametrize("value", ["abc", "", "-1", "0", "NaN", "Infinity", True, None, [1], {"p": 1}])
def test_bad_human_prices_are_value_errors(value: object) -> None:
    with pytest.raises(ValueError):
        human_price_to_subticks(BTC, value)


# -- sim -----------------------------------------------------------------------------------------


def walk(chain_id: str, market: Market, heights: range, genesis_height: int = 0) -> list[int]:
    w = SimWalk(chain_id, market, genesis_height)
    return [w.price(h) for h in heights]


def test_sim_starts_at_the_initial_price_and_is_deterministic() -> None:
    assert sim_price(CHAIN, BTC, 0) == BTC.initial_price
    assert sim_price(CHAIN, BTC, 7, genesis_height=9) == BTC.initial_price
    path = walk(CHAIN, BTC, range(200))
    assert path == walk(CHAIN, BTC, range(200))
    assert len(set(path)) > 50  # it moves
    for h in (1, 17, 199):
        assert path[h] == sim_price(CHAIN, BTC, h)


def test_sim_depends_on_chain_market_and_genesis_height() -> None:
    base = walk(CHAIN, BTC, range(1, 50))
    assert base != walk("other-chain", BTC, range(1, 50))
    assert base != walk(CHAIN, replace(BTC, market_id=3), range(1, 50))
    assert walk(CHAIN, BTC, range(1, 50), genesis_height=0) != walk(
        CHAIN, BTC, range(11, 60), genesis_height=10
    )


def test_sim_cache_goes_backwards_and_skips_forwards() -> None:
    w = SimWalk(CHAIN, ETH)
    at_100 = w.price(100)
    assert w.price(40) == sim_price(CHAIN, ETH, 40)
    assert w.price(100) == at_100
    assert w.price(1000) == sim_price(CHAIN, ETH, 1000)


def assert_sim_step_bounded(path: list[int], tick: int) -> None:
    for prev, price in itertools.pairwise(path):
        assert price % tick == 0 and price >= tick
        # the unrounded price moves by at most 0.2% of itself (itself within half a tick of prev),
        # and each of the two roundings adds at most half a tick
        assert abs(price - prev) * 1_000_000 <= SIM_MAX_STEP_PPM * (prev + tick) + tick * 1_000_000


def test_sim_is_on_tick_with_bounded_steps() -> None:
    for market in MARKETS:
        assert_sim_step_bounded(walk(CHAIN, market, range(500)), market.subticks_per_tick)


def test_sim_never_goes_below_one_tick() -> None:
    market = tick_market(initial_price=1, tick=100_000)
    path = walk(CHAIN, market, range(300))
    assert min(path) == 100_000


@settings(max_examples=60, deadline=None)
@given(
    chain_id=st.text(min_size=1, max_size=20),
    initial_price=st.integers(1, 10**15),
    tick=st.sampled_from([1, 10, 1_000, 100_000]),
    genesis_height=st.integers(0, 1_000),
    heights=st.lists(st.integers(0, 400), min_size=1, max_size=20),
)
def test_sim_walk_properties(
    chain_id: str, initial_price: int, tick: int, genesis_height: int, heights: list[int]
) -> None:
    market = tick_market(initial_price, tick)
    cached = SimWalk(chain_id, market, genesis_height)
    for offset in heights:  # any order of queries gives the pure function's answers
        h = genesis_height + offset
        assert cached.price(h) == sim_price(chain_id, market, h, genesis_height)
    path = walk(chain_id, market, range(genesis_height, genesis_height + 60), genesis_height)
    assert path[0] == round_to_tick(market, initial_price)
    assert_sim_step_bounded(path, tick)


async def test_sim_source_prices_every_market_and_catches_up_in_a_thread() -> None:
    source = SimSource(CHAIN, MARKETS, genesis_height=0)
    assert await source.prices(3) == {1: sim_price(CHAIN, BTC, 3), 2: sim_price(CHAIN, ETH, 3)}
    far = await source.prices(5_000)  # beyond SIM_THREAD_STEPS: computed in a worker thread
    assert far == {1: sim_price(CHAIN, BTC, 5_000), 2: sim_price(CHAIN, ETH, 5_000)}


# -- file ----------------------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def write_prices(path: Path, doc: object, mtime_ns: int | None = None) -> None:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


async def test_file_source_reads_human_prices(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"BTC-USD": "64000.5", "ETH-USD": 3400.07}')
    source = FileSource(path, MARKETS, reload_interval=3.0, clock=FakeClock())
    assert await source.prices(1) == {1: 6_400_100_000, 2: 3_400_100_000}


async def test_file_source_may_name_some_markets_only(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    write_prices(path, {"ETH-USD": "3500"})
    assert await FileSource(path, MARKETS).prices(1) == {2: 3_500_000_000}


async def test_file_source_picks_up_changes(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    clock = FakeClock()
    write_prices(path, {"BTC-USD": "64000"}, mtime_ns=10**18)
    source = FileSource(path, MARKETS, reload_interval=3.0, clock=clock)
    assert await source.prices(1) == {1: 6_400_000_000}
    assert await source.prices(2) == {1: 6_400_000_000}
    assert source.reads == 1  # unchanged and within the interval: not read again

    write_prices(path, {"BTC-USD": "65000"}, mtime_ns=10**18 + 1)  # same size, new mtime
    assert await source.prices(3) == {1: 6_500_000_000}
    assert source.reads == 2

    write_prices(path, {"BTC-USD": "66000"}, mtime_ns=10**18 + 1)  # same size and mtime
    assert await source.prices(4) == {1: 6_500_000_000}
    clock.now = 3.0  # the reload interval re-reads it anyway
    assert await source.prices(5) == {1: 6_600_000_000}
    assert source.reads == 3


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not valid JSON"),
        ('["BTC-USD", 1]', "expected a JSON object"),
        ("{}", "no prices"),
        ('{"BTC-USD": "cheap"}', "BTC-USD: not a number"),
        ('{"BTC-USD": -5}', "BTC-USD: not a positive price"),
        ('{"ETH-USD": true}', "ETH-USD: not a number"),
        ('{"BTC-USD": 1, "DOGE-USD": 1}', "unknown market 'DOGE-USD'"),
    ],
)
async def test_file_source_errors_name_the_problem(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(PriceSourceError, match=r"price file .*prices\.json") as info:
        await FileSource(path, MARKETS).prices(1)
    assert problem in str(info.value)


async def test_file_source_missing_file_then_fixed(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    clock = FakeClock()
    source = FileSource(path, MARKETS, reload_interval=3.0, clock=clock)
    with pytest.raises(PriceSourceError, match="cannot read"):
        await source.prices(1)
    write_prices(path, "{broken", mtime_ns=10**18)
    with pytest.raises(PriceSourceError, match="not valid JSON"):
        await source.prices(2)
    with pytest.raises(PriceSourceError, match="not valid JSON"):  # the cached error stands
        await source.prices(3)
    write_prices(path, {"BTC-USD": 1}, mtime_ns=10**18 + 5)
    assert await source.prices(4) == {1: 100_000}


# -- http ----------------------------------------------------------------------------------------


class PriceServer:
    """A real HTTP server on 127.0.0.1 in a thread, answering GET with `body` and `status`."""

    def __init__(self) -> None:
        self.body: bytes = b"{}"
        self.status = 200
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                self.send_response(server.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/prices"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def set_json(self, doc: object) -> None:
        self.body = json.dumps(doc).encode()


@pytest.fixture
def price_server() -> Iterator[PriceServer]:
    server = PriceServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join()


HTTP_FIELDS = {"BTC-USD": "data.bitcoin.usd", "ETH-USD": "list.1.price"}


async def test_http_source_reads_field_paths(price_server: PriceServer) -> None:
    price_server.set_json(
        {"data": {"bitcoin": {"usd": 64000.5}}, "list": [{"price": 1}, {"price": "3400.07"}]}
    )
    source = HttpSource(price_server.url, HTTP_FIELDS, MARKETS, timeout=5.0)
    assert await source.prices(1) == {1: 6_400_100_000, 2: 3_400_100_000}
    price_server.set_json({"data": {"bitcoin": {"usd": 70000}}, "list": [{}, {"price": 3000}]})
    assert await source.prices(2) == {1: 7_000_000_000, 2: 3_000_000_000}
    assert price_server.requests == 2


async def test_http_source_bad_field_path_names_market_and_field(price_server: PriceServer) -> None:
    price_server.set_json({"data": {"bitcoin": {"eur": 60000}}, "list": [{"price": 1}, {"price": 2}]})
    source = HttpSource(price_server.url, HTTP_FIELDS, MARKETS, timeout=5.0)
    with pytest.raises(PriceSourceError, match=r"BTC-USD: no field 'data\.bitcoin\.usd'"):
        await source.prices(1)
    price_server.set_json({"data": {"bitcoin": {"usd": 1}}, "list": [{"price": 1}]})
    with pytest.raises(PriceSourceError, match=r"ETH-USD: no field 'list\.1'"):
        await source.prices(2)
    price_server.set_json({"data": {"bitcoin": {"usd": {"x": 1}}}, "list": [{}, {"price": 1}]})
    with pytest.raises(PriceSourceError, match=r"BTC-USD: field 'data\.bitcoin\.usd': not a number"):
        await source.prices(3)


async def test_http_source_http_errors(price_server: PriceServer) -> None:
    source = HttpSource(price_server.url, {"BTC-USD": "p"}, MARKETS, timeout=5.0)
    price_server.status = 503
    with pytest.raises(PriceSourceError, match="HTTP 503"):
        await source.prices(1)
    price_server.status = 200
    price_server.body = b"<html>"
    with pytest.raises(PriceSourceError, match="not valid JSON"):
        await source.prices(2)


async def test_http_source_unreachable() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    source = HttpSource(f"http://127.0.0.1:{port}/", {"BTC-USD": "p"}, MARKETS, timeout=5.0)
    with pytest.raises(PriceSourceError, match="ConnectError"):
        await source.prices(1)


def test_http_source_refuses_unknown_markets() -> None:
    with pytest.raises(PriceSourceError, match="unknown market 'DOGE-USD'"):
        HttpSource("http://127.0.0.1:1/", {"DOGE-USD": "p"}, MARKETS)
    with pytest.raises(PriceSourceError, match="no market"):
        HttpSource("http://127.0.0.1:1/", {}, MARKETS)


def test_extract_field() -> None:
    doc = {"a": [{"b": 1}, {"c": [5, 6]}], "0": "zero"}
    assert extract_field(doc, "a.1.c.1") == 6
    assert extract_field(doc, "a.-1.c.0") == 5
    assert extract_field(doc, "0") == "zero"
    assert extract_field(doc, "") == doc
    for path, missing in [("a.2", "a.2"), ("a.x", "a.x"), ("b", "b"), ("a.0.b.c", "a.0.b.c")]:
        with pytest.raises(KeyError) as info:
            extract_field(doc, path)
        assert info.value.args[0] == missing


def test_parse_field_entries() -> None:
    assert parse_field_entries(["BTC-USD=bitcoin.usd", " ETH-USD = x.0 "]) == {
        "BTC-USD": "bitcoin.usd",
        "ETH-USD": "x.0",
    }
    for bad in (["BTC-USD"], ["=x"], ["BTC-USD="], ["BTC-USD=a", "BTC-USD=b"]):
        with pytest.raises(ValueError):
            parse_field_entries(bad)


def test_build_source_kinds(tmp_path: Path) -> None:
    assert isinstance(build_source("sim", MARKETS, chain_id=CHAIN), SimSource)
    assert isinstance(build_source("file", MARKETS, chain_id=CHAIN, file=tmp_path / "p.json"), FileSource)
    http = build_source("http", MARKETS, chain_id=CHAIN, url="http://x/", fields=["BTC-USD=a.b"])
    assert isinstance(http, HttpSource)
    with pytest.raises(PriceSourceError, match="fields"):
        build_source("http", MARKETS, chain_id=CHAIN, url="http://x/", fields=["nope"])
    with pytest.raises(PriceSourceError, match="unknown source"):
        build_source("carrier-pigeon", MARKETS, chain_id=CHAIN)


# -- the feeder ----------------------------------------------------------------------------------


def new_block(height: int, time_ns: int) -> NewBlock:
    zero = BlockID(b"\x00" * 32, PartSetHeader(0, b"\x00" * 32))
    block_id = BlockID(bytes([height % 256]) * 32, PartSetHeader(1, b"\x01" * 32))
    h32 = b"\x00" * 32
    header = Header(CHAIN, height, time_ns, zero, h32, h32, h32, h32, h32, h32, h32, h32, b"\x00" * 20)
    block = Block(header, (), (), Commit(height - 1, 0, zero, ()))
    return NewBlock(block, block_id, BlockResults(height, (), FinalizeBlockResult((), b"")))


class FakeMempool:
    def __init__(self) -> None:
        self.txs: list[bytes] = []
        self.answer: CheckTxResult | Exception = CheckTxResult()

    def check_tx(self, tx: bytes) -> CheckTxResult:
        if isinstance(self.answer, Exception):
            raise self.answer
        self.txs.append(tx)
        return self.answer


class ScriptedSource:
    """Prices from a function of the height; PriceSourceError where it returns None. `gate`, when
    set, holds each request until it is released."""

    def __init__(self, prices: Callable[[int], dict[int, int] | None]) -> None:
        self.fn = prices
        self.heights: list[int] = []
        self.gate: trio.Event | None = None

    async def prices(self, height: int) -> dict[int, int]:
        self.heights.append(height)
        if self.gate is not None:
            await self.gate.wait()
        result = self.fn(height)
        if result is None:
            raise PriceSourceError(f"no prices at {height}")
        return result


def decode_vote(raw: bytes) -> tuple[Tx, OracleVote]:
    tx = Tx.decode(raw)
    assert len(tx.actions) == 1
    vote = tx.actions[0]
    assert isinstance(vote, OracleVote)
    return tx, vote


async def run_feeder(
    nursery: trio.Nursery, source: Any, mempool: FakeMempool, active: Callable[[], bool] = lambda: True
) -> tuple[PriceFeeder, EventBus]:
    bus = EventBus()
    feeder = PriceFeeder(source, KEY, CHAIN, mempool.check_tx, bus, active)
    await nursery.start(feeder.run)
    return feeder, bus


async def test_feeder_votes_once_per_block_signed_by_the_validator() -> None:
    mempool = FakeMempool()
    source = SimSource(CHAIN, MARKETS)
    async with trio.open_nursery() as nursery:
        feeder, bus = await run_feeder(nursery, source, mempool)
        for height in range(1, 6):
            bus.on_commit(*_parts(new_block(height, T0 + height * 1_000_000_000)))
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert len(mempool.txs) == 5
    nonces = []
    for height, raw in enumerate(mempool.txs, start=1):
        tx, vote = decode_vote(raw)
        assert verify(*tx.signed_item(CHAIN))
        assert not verify(*tx.signed_item("another-chain"))
        assert tx.sender == KEY.address
        assert vote.prices == ((1, sim_price(CHAIN, BTC, height)), (2, sim_price(CHAIN, ETH, height)))
        assert tx.nonce == (T0 + height * 1_000_000_000) // 1_000_000
        nonces.append(tx.nonce)
    assert feeder.stats.votes == 5 and feeder.stats.blocks == 5


async def test_feeder_nonces_strictly_increase_with_equal_block_times() -> None:
    mempool = FakeMempool()
    async with trio.open_nursery() as nursery:
        _, bus = await run_feeder(nursery, ScriptedSource(lambda h: {1: 100_000 * h}), mempool)
        for height in (1, 2, 3):
            bus.on_commit(*_parts(new_block(height, T0)))
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    nonces = [Tx.decode(raw).nonce for raw in mempool.txs]
    assert nonces == [T0 // 1_000_000, T0 // 1_000_000 + 1, T0 // 1_000_000 + 2]
    assert [decode_vote(raw)[1].prices for raw in mempool.txs] == [
        ((1, 100_000),),
        ((1, 200_000),),
        ((1, 300_000),),
    ]


async def test_feeder_skips_a_block_whose_source_fails(caplog: pytest.LogCaptureFixture) -> None:
    mempool = FakeMempool()
    source = ScriptedSource(lambda h: None if h in (2, 3) else {2: 3_500_000_000})
    caplog.set_level(logging.DEBUG, logger="derivd.pricefeed")
    async with trio.open_nursery() as nursery:
        feeder, bus = await run_feeder(nursery, source, mempool)
        for height in (1, 2, 3, 4):
            bus.on_commit(*_parts(new_block(height, T0 + height * 10**9)))
            await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert source.heights == [1, 2, 3, 4]
    assert len(mempool.txs) == 2
    assert feeder.stats.source_errors == 2 and feeder.stats.votes == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 2  # a new problem each time ("no prices at 2", "no prices at 3")
    assert "no prices at 2" in errors[0].getMessage()
    assert any("available again" in r.getMessage() for r in caplog.records)


async def test_feeder_survives_mempool_refusals() -> None:
    mempool = FakeMempool()
    async with trio.open_nursery() as nursery:
        feeder, bus = await run_feeder(nursery, ScriptedSource(lambda h: {1: 100_000}), mempool)
        mempool.answer = MempoolFull("mempool is full")
        bus.on_commit(*_parts(new_block(1, T0)))
        await trio.testing.wait_all_tasks_blocked()
        mempool.answer = CheckTxResult(code=60, log="not a validator")
        bus.on_commit(*_parts(new_block(2, T0 + 10**9)))
        await trio.testing.wait_all_tasks_blocked()
        mempool.answer = CheckTxResult()
        bus.on_commit(*_parts(new_block(3, T0 + 2 * 10**9)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert feeder.stats.refused == 2 and feeder.stats.votes == 1
    assert len(mempool.txs) == 2  # the refused one by check_tx, and the admitted one


async def test_feeder_does_not_vote_while_inactive() -> None:
    mempool = FakeMempool()
    active = False
    source = ScriptedSource(lambda h: {1: 100_000})
    async with trio.open_nursery() as nursery:
        feeder, bus = await run_feeder(nursery, source, mempool, lambda: active)
        bus.on_commit(*_parts(new_block(1, T0)))
        await trio.testing.wait_all_tasks_blocked()
        active = True
        bus.on_commit(*_parts(new_block(2, T0 + 10**9)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert source.heights == [2]
    assert feeder.stats.inactive == 1 and len(mempool.txs) == 1


async def test_feeder_coalesces_blocks_that_arrive_during_a_vote() -> None:
    mempool = FakeMempool()
    source = ScriptedSource(lambda h: {1: 100_000 * h})
    source.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        _, bus = await run_feeder(nursery, source, mempool)
        bus.on_commit(*_parts(new_block(1, T0)))
        await trio.testing.wait_all_tasks_blocked()  # the feeder waits on the source for block 1
        for height in (2, 3, 4):
            bus.on_commit(*_parts(new_block(height, T0 + height * 10**9)))
        source.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert source.heights == [1, 4]
    assert [decode_vote(raw)[1].prices for raw in mempool.txs] == [((1, 100_000),), ((1, 400_000),)]


async def test_feeder_resubscribes_when_the_bus_drops_it() -> None:
    mempool = FakeMempool()
    source = ScriptedSource(lambda h: {1: 100_000})
    source.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        _, bus = await run_feeder(nursery, source, mempool)
        bus.on_commit(*_parts(new_block(1, T0)))
        await trio.testing.wait_all_tasks_blocked()
        for height in range(2, 2 + 200):  # more than the subscription's buffer: the bus drops it
            bus.on_commit(*_parts(new_block(height, T0 + height * 10**9)))
        source.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        bus.on_commit(*_parts(new_block(500, T0 + 500 * 10**9)))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert source.heights[0] == 1 and source.heights[-1] == 500


def _parts(event: NewBlock) -> tuple[Block, BlockID, BlockResults]:
    return event.block, event.block_id, event.results


# -- construction from [oracle] ------------------------------------------------------------------


def test_oracle_config_defaults_round_trip_and_validation(tmp_path: Path) -> None:
    config = Config.default(tmp_path, "n")
    assert config.oracle == OracleConfig()
    assert config.oracle.source == "sim" and config.oracle.reload_interval == 3_000_000_000
    text = config_to_toml(config)
    assert "[oracle]" in text
    changed = config.with_overrides(
        **{
            "oracle.source": "http",
            "oracle.url": "http://127.0.0.1:8080/p",
            "oracle.fields": "BTC-USD=bitcoin.usd,ETH-USD=eth.0",
            "oracle.reload_interval": "500ms",
        }
    )
    assert changed.oracle.fields == ("BTC-USD=bitcoin.usd", "ETH-USD=eth.0")
    reread = config_from_toml(tomllib.loads(config_to_toml(changed)), tmp_path)
    assert reread.oracle == changed.oracle
    for toml, problem in [
        ('[oracle]\nsource = "magic"', "[oracle] source: must be"),
        ('[oracle]\nsource = "http"', "[oracle] url: must be set"),
        ('[oracle]\nsource = "http"\nurl = "http://x/"', "[oracle] fields: must name a market"),
        ('[oracle]\nfields = ["BTC-USD"]', "[oracle] fields: each entry"),
        ('[oracle]\nreload_interval = "0s"', "[oracle] reload_interval: must be positive"),
        ("[oracle]\nenabled = 1", "[oracle] enabled: must be true or false"),
    ]:
        with pytest.raises(ConfigError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            config_from_toml(tomllib.loads(toml), tmp_path)


def _registry(power: int) -> StateView:
    view = StateView(_Empty())
    if power >= 0:
        store_validator(view, RegisteredValidator(KEY.public_key.raw, power))
    return view


class _Empty:
    def get(self, key: bytes) -> bytes | None:
        return None

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        return []


def _feeder(
    oracle: OracleConfig, state: StateView, tmp_path: Path, syncing: bool = False
) -> PriceFeeder | None:
    return feeder_from_config(
        oracle,
        lambda rel: tmp_path / rel,
        CHAIN,
        0,
        state,
        default_exchange_app_state(),
        KEY,
        FakeMempool().check_tx,
        EventBus(),
        lambda: syncing,
    )


def test_feeder_from_config(tmp_path: Path) -> None:
    feeder = _feeder(OracleConfig(), _registry(10), tmp_path)
    assert feeder is not None and isinstance(feeder.source, SimSource)
    assert [w.market_id for w in feeder.source.walks] == [1, 2]  # the genesis markets
    assert feeder.is_active()
    assert _feeder(OracleConfig(enabled=False), _registry(10), tmp_path) is None
    bad_http = OracleConfig(source="http", url="http://x/", fields=("DOGE-USD=a",))
    assert _feeder(bad_http, _registry(10), tmp_path) is None
    file_feeder = _feeder(OracleConfig(source="file", file="config/p.json"), _registry(10), tmp_path)
    assert file_feeder is not None and isinstance(file_feeder.source, FileSource)
    assert file_feeder.source.path == tmp_path / "config/p.json"


@pytest.mark.parametrize(
    ("power", "syncing", "active"),
    [(10, False, True), (0, False, False), (-1, False, False), (10, True, False)],
)
def test_feeder_is_active_only_as_a_validator_with_power(
    tmp_path: Path, power: int, syncing: bool, active: bool
) -> None:
    feeder = _feeder(OracleConfig(), _registry(power), tmp_path, syncing)
    assert feeder is not None and feeder.is_active() is active


# -- with the real application -------------------------------------------------------------------


async def test_votes_are_admitted_by_the_application_and_move_the_chain_price(tmp_path: Path) -> None:
    db = Database(tmp_path / "db")
    verifier = BatchVerifier(workers=1)
    try:
        app = ExchangeApp(db, CHAIN, verifier)
        app_state = {**default_exchange_app_state(), "accounts": []}
        validators = (ValidatorUpdate(KEY.public_key.raw, 10),)
        app.init_chain(InitChainRequest(CHAIN, T0, 1, validators, json.dumps(app_state).encode()))
        mempool = Mempool(MempoolConfig(), app.check_tx)
        committed = CommittedState(db)
        feeder = feeder_from_config(
            OracleConfig(),
            lambda rel: tmp_path / rel,
            CHAIN,
            0,
            committed,
            app_state,
            KEY,
            mempool.check_tx,
            EventBus(),
        )
        assert feeder is not None
        assert not feeder.is_active()  # genesis is not written before the first block
        for height in range(1, 5):
            txs = mempool.reap(10**7)
            time_ns = T0 + height * 10**9
            result = app.finalize_block(
                FinalizeBlockRequest(height, time_ns, b"\x11" * 32, b"\x22" * 20, tuple(txs), ())
            )
            assert all(r.code == 0 for r in result.tx_results), result.tx_results
            batch = WriteBatch()
            app.commit(batch)
            db.write(batch)
            mempool.update(height, txs)
            if height > 1:  # the vote after block h-1 is in block h: the chain price is sim(h-1)
                assert load_price(committed, 1) == OraclePrice(sim_price(CHAIN, BTC, height - 1), height)
                assert load_price(committed, 2) == OraclePrice(sim_price(CHAIN, ETH, height - 1), height)
            assert feeder.is_active()
            assert await feeder.on_block(height, time_ns) is not None
            assert len(mempool) == 1
        assert feeder.stats.votes == 4 and feeder.stats.refused == 0
    finally:
        verifier.close()
        db.close()
