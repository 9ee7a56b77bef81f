"""The Python SDK (`node.sdk`): its pure core without a node, then both clients and the two
examples against a real `derivd start` (a market maker's quotes, a taker following its fills and
the book stream), paying the chain's fee schedule."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from execution.codes import Code
from execution.fees import FeeParams
from execution.markets import OPTION_TICKER_PATTERN, default_markets
from genesis.genesis import load_genesis, save_genesis
from node.cli import main
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.sdk import AsyncClient, Book, Client, Fill, InputError, RPCError, TxError, core
from node.sdk.client import _BookFollower
from node.sdk.examples import follow_fills, market_maker
from node.sdk.types import Event, Liquidations
from tests.node.e2e import ChainHome, NodeProcess, make_chain

BTC = default_markets()[0]
SCHEDULE = FeeParams(transfer=123, place_order=250, cancel_order=9, cancel_all=7)
"""the test chain's fees, none the default, so paying the default schedule would be caught"""
UNIT = Decimal("0.000001")
"""a quote unit in USD"""


def test_amounts_convert_exactly_or_not_at_all() -> None:
    assert core.size_units(BTC, "0.5") == 5_000_000_000
    assert core.price_units(BTC, Decimal("65000")) == 6_500_000_000
    assert core.quote_units(2) == 2_000_000
    with pytest.raises(InputError, match=r"size: .*not a whole number"):
        core.size_units(BTC, "0.00000000001")
    with pytest.raises(InputError, match="price: must be positive"):
        core.price_units(BTC, "0")
    with pytest.raises(InputError, match="side: 'buy' or 'sell'"):
        core.place_action(BTC, "long", "1", "1")
    with pytest.raises(InputError, match="give order_id or client_id"):
        core.cancel_action(BTC)
    with pytest.raises(InputError, match="unknown market 'DOGE-USD'"):
        core.market_named({"BTC-USD": BTC}, "DOGE-USD")
    assert core.on_tick(BTC, Decimal("65000.7"), up=False) == Decimal("65000")
    assert core.on_tick(BTC, Decimal("65000.2"), up=True) == Decimal("65001")


def test_a_market_orders_worst_price() -> None:
    oracle = core.price_units(BTC, "65000")
    assert core.slipped_price(BTC, oracle, "buy", Decimal("0.01")) == core.price_units(BTC, "65650")
    assert core.slipped_price(BTC, oracle + 1, "buy", Decimal(0)) == oracle + BTC.subticks_per_tick  # outward
    assert core.slipped_price(BTC, oracle, "sell", Decimal("0.01")) == core.price_units(BTC, "64350")
    assert core.slipped_price(BTC, 1, "sell", Decimal("0.5")) == BTC.subticks_per_tick  # at least a tick
    with pytest.raises(InputError, match=r"slippage: must be in \[0, 1\)"):
        core.slipped_price(BTC, oracle, "buy", Decimal(1))


def test_nonces_increase_even_within_a_millisecond() -> None:
    nonces = core.Nonces()
    drawn = [nonces.next() for _ in range(1000)]
    assert drawn == sorted(set(drawn))


def test_a_refused_tx_raises_with_the_chains_reason() -> None:
    ok = {"code": 0, "log": "", "events": []}
    refused = {
        "hash": "AB",
        "height": "0",
        "check_tx": {"code": 4, "log": "insufficient funds", "codespace": "derivd"},
    }
    with pytest.raises(
        TxError, match="failed at check with code 4 \\(derivd\\): insufficient funds"
    ) as caught:
        core.tx_result(refused | {"tx_result": ok})
    assert (caught.value.stage, caught.value.code) == ("check", 4)
    failed = {
        "hash": "AB",
        "height": "9",
        "check_tx": ok,
        "tx_result": {"code": 11, "log": "no", "codespace": "x"},
    }
    with pytest.raises(TxError, match="at deliver"):
        core.tx_result(failed)
    placed = {"type": "order_placed", "attributes": [{"key": "order_id", "value": "12"}]}
    result = core.tx_result(
        {"hash": "AB", "height": "9", "check_tx": ok, "tx_result": ok | {"events": [placed]}}
    )
    assert result.placed_order_ids() == [12] and result.height == 9


def test_a_fee_schedule_is_read_strictly() -> None:
    value = {name: str(price) for name, price in SCHEDULE.to_json().items()}
    assert core.fee_params(value) == SCHEDULE
    for wrong in (value | {"transfer": "0"}, value | {"transfer": "x"}, {"transfer": "1"}, None):
        with pytest.raises(RPCError, match="query /fees: not a fee schedule"):
            core.fee_params(wrong)


def test_book_state_detects_a_gap() -> None:
    state = core.BookState(BTC, {"type": "snapshot", "seq": 4, "bids": [["100000", "7"]], "asks": []}, 10)
    state.apply({"type": "delta", "seq": 5, "bids": [["100000", "0"], ["200000", "3"]], "asks": []}, 11)
    book = state.book()
    assert (book.seq, book.height, [b.price_subticks for b in book.bids]) == (5, 11, [200000])
    with pytest.raises(core.Gap):
        state.apply({"type": "delta", "seq": 7, "bids": [], "asks": []}, 12)
    with pytest.raises(core.Gap):
        core.BookState(BTC, {"type": "delta", "seq": 1, "bids": [], "asks": []}, 1)


def test_fills_of_an_account_take_its_side() -> None:
    fill = Event(
        type="order_filled",
        attributes={
            "market": "BTC-USD",
            "maker": "aa",
            "taker": "bb",
            "taker_side": "buy",
            "price": "6500000000",
            "size": "100000000",
            "maker_order_id": "3",
            "taker_order_id": "4",
        },
    )
    (maker,) = core.fills_of("aa", {"BTC-USD": BTC}, [fill], 7)
    (taker,) = core.fills_of("bb", {"BTC-USD": BTC}, [fill], 7)
    assert (maker.side, maker.maker, maker.order_id, maker.size) == ("sell", True, 3, Decimal("0.01"))
    assert (taker.side, taker.maker, taker.order_id, taker.price) == ("buy", False, 4, Decimal("65000"))
    assert core.fills_of("cc", {"BTC-USD": BTC}, [fill], 7) == []


@pytest.fixture
def trading_node(tmp_path: Path) -> Iterator[ChainHome]:
    chain = make_chain(tmp_path, {"alice": 10**12, "bob": 10**12})
    genesis = chain.home / "config" / "genesis.json"
    doc = load_genesis(genesis)
    save_genesis(dataclasses.replace(doc, app_state=doc.app_state | {"fees": SCHEDULE.to_json()}), genesis)
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    overrides = {
        "oracle.enabled": True,
        "oracle.source": "file",
        "oracle.file": str(prices),
        "rpc.websocket_laddr": "tcp://127.0.0.1:0",
    }
    write_config(load_config(chain.home).with_overrides(**overrides))
    process = NodeProcess(chain).start()
    process.wait_height(2)  # the genesis state is committed with the first block
    yield chain
    process.stop()


async def test_clients_and_examples_against_a_node(trading_node: ChainHome) -> None:
    chain = trading_node
    keys = KeyStore(chain.home)
    with Client(chain.rpc_url, key=keys.private_key("alice")) as alice:
        markets = alice.markets()
        perpetuals = {ticker for ticker, market in markets.items() if market.option is None}
        assert perpetuals == {"BTC-USD", "ETH-USD"}
        assert len(markets) == 10  # and the default genesis's 8 option series (`default_option_series`)
        assert all(OPTION_TICKER_PATTERN.fullmatch(t) for t in markets if t not in perpetuals)
        assert alice.fees() == SCHEDULE
        assert alice.liquidations() == Liquidations(queue=(), recent=())  # nobody under water
        shown = CliRunner().invoke(main, ["query", "liquidations", "--node", chain.rpc_url])
        assert (shown.exit_code, json.loads(shown.output)) == (0, {"queue": [], "recent": []})
        balance = alice.account().balance
        assert balance == Decimal(10**6)
        with pytest.raises(TxError) as low:
            alice.transfer(chain.accounts["bob"], "1", fee=SCHEDULE.transfer - 1)
        assert (low.value.stage, low.value.code) == ("check", Code.INSUFFICIENT_FEE), low.value
        assert "below the minimum 123" in low.value.log
        alice.transfer(chain.accounts["bob"], "1")  # pays the chain's minimum
        alice.transfer(chain.accounts["bob"], "1", fee=1000)  # or what it is told
        balance -= 2 + (SCHEDULE.transfer + 1000) * UNIT
        assert alice.account().balance == balance
        market_maker.run(alice, "BTC-USD", Decimal("0.001"), Decimal("0.01"), rounds=2)
        # each round one tx of a cancel-all and two placements (post-only: no trading fee yet)
        balance -= 2 * (SCHEDULE.cancel_all + 2 * SCHEDULE.place_order) * UNIT
        assert alice.account().balance == balance
        quotes = alice.account().orders
        assert sorted(o.side for o in quotes) == ["buy", "sell"]  # the first round's were replaced
        ask = next(o.price for o in quotes if o.side == "sell")
        with pytest.raises(InputError, match="price: "):
            alice.place("BTC-USD", "buy", "0.01", "65000.000000001")
        with pytest.raises(RPCError, match="unknown market"):
            alice.query("/book/DOGE-USD")

    streams = f"ws://127.0.0.1:{chain.websocket_port}/websocket"  # the second listener's
    async with AsyncClient(chain.rpc_url, key=keys.private_key("bob"), websocket_url=streams) as bob:
        assert await bob.fees() == SCHEDULE
        assert await bob.liquidations() == Liquidations(queue=(), recent=())
        await bob.transfer(chain.accounts["alice"], "1")
        assert (await bob.account()).balance == 10**6 + 2 - 1 - SCHEDULE.transfer * UNIT
        books: list[Book] = []
        fills: list[Fill] = []
        subscribed, following = trio.Event(), trio.Event()

        async def watch() -> None:
            async with bob.book_updates("BTC-USD") as updates:
                async for book in updates:
                    books.append(book)
                    subscribed.set()
                    if not book.asks:
                        return

        async def follow() -> None:
            fills.extend(await follow_fills.follow(bob, limit=1, ready=following))

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                nursery.start_soon(follow)
                await subscribed.wait()  # the snapshot is in: the deltas from here on reach the watcher
                await following.wait()  # the node has the fills subscription
                taken = await bob.place("BTC-USD", "buy", "0.01", ask, tif="ioc")
        assert [f.get("taker") for f in taken.fills()] == [bob.address]
        assert [(f.side, f.size, f.price, f.maker) for f in fills] == [("buy", Decimal("0.01"), ask, False)]
        assert books[0].asks[0].price == ask and books[-1].asks == ()
        assert books[-1].bids == (await bob.book("BTC-USD")).bids
        assert (await bob.account()).position("BTC-USD") is not None
        stop = await bob.stop("BTC-USD", "sell", "0.01", "60000", reduce_only=True)
        assert [e.type for e in stop.events if e.type.startswith("trigger")] == ["trigger_placed"]
        closed = await bob.market_order("BTC-USD", "sell", "0.01")  # into alice's bid
        assert [f.get("taker") for f in closed.fills()] == [bob.address]
        with pytest.raises(TxError) as refused:
            await bob.place("BTC-USD", "buy", "1000", "65000")  # far beyond bob's margin
        assert refused.value.code != 0 and refused.value.log
        assert bob.resyncs == 0


async def test_a_gap_ends_the_subscription_for_a_new_snapshot() -> None:
    """The book follower hands on the snapshot and each following delta, and asks for a new
    subscription (False) at a gap; `AsyncClient` then subscribes again (`resyncs`)."""
    send, receive = trio.open_memory_channel[Book](10)
    follower = _BookFollower(BTC, send)
    snapshot = {"type": "snapshot", "seq": 1, "bids": [["100000", "5"]], "asks": []}
    assert await follower.take({"height": "3", "data": snapshot})
    assert await follower.take(
        {"height": "4", "data": {"type": "delta", "seq": 2, "bids": [], "asks": [["200000", "1"]]}}
    )
    assert not await follower.take(
        {"height": "6", "data": {"type": "delta", "seq": 4, "bids": [], "asks": []}}
    )
    books = [receive.receive_nowait(), receive.receive_nowait()]
    assert [(b.seq, b.height, len(b.asks)) for b in books] == [(1, 3, 0), (2, 4, 1)]
    with pytest.raises(trio.WouldBlock):
        receive.receive_nowait()
