"""Market-data streams over `/websocket` on a real `derivd start` (`node.streams`): a book
snapshot then deltas that, applied in sequence, end equal to `query /book`; the market's trades;
a trader's own events and positions; oracle prices."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from execution.tx import CancelOrder, PlaceOrder, Transfer, build_tx
from node.config import load_config, write_config
from node.keystore import KeyStore
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.node.e2e import NodeProcess, make_chain

BTC = 1
DOLLAR = 100_000  # subticks per dollar of BTC-USD
HUNDREDTH = 100_000_000  # base quantums per 0.01 BTC
BUY, SELL = 0, 1
GTC, IOC = 0, 1


async def _next(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(30):
        message = json.loads(await ws.get_message())
    assert isinstance(message, dict)
    return message


async def _subscribe(ws: WebSocketConnection, request_id: str, **params: Any) -> None:
    await ws.send_message(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "subscribe", "params": params})
    )


def _apply(book: dict[str, dict[int, int]], data: dict[str, Any]) -> None:
    for side in ("bids", "asks"):
        if data["type"] == "snapshot":
            book[side] = {}
        for price, size in data[side]:
            if int(size):
                book[side][int(price)] = int(size)
            else:
                book[side].pop(int(price), None)


@pytest.mark.parametrize("listener", ["rpc", "websocket_laddr"])
async def test_book_trades_user_and_oracle_streams(tmp_path: Path, listener: str) -> None:
    """The same streams on the RPC port's `/websocket` and on the second listener
    (`[rpc] websocket_laddr`, `node.ws_server`)."""
    chain = make_chain(tmp_path, {"alice": 10**12})
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    overrides = {
        "oracle.enabled": True,
        "oracle.source": "file",
        "oracle.file": str(prices),
        "rpc.websocket_laddr": "tcp://127.0.0.1:0",
    }
    write_config(load_config(chain.home).with_overrides(**overrides))
    node = NodeProcess(chain).start()
    try:
        node.wait_height(2)  # the genesis state (its markets) is committed with the first block
        assert chain.websocket_port
        port = chain.rpc_port if listener == "rpc" else chain.websocket_port
        await _run(node, f"ws://127.0.0.1:{port}/websocket", chain.home)
    finally:
        node.stop()


async def _run(node: NodeProcess, url: str, home: Path) -> None:
    alice = KeyStore(home).private_key("alice")
    ivan = PrivateKey.from_seed(sha256(b"ivan"))
    ivan_hex = ivan.address.raw.hex()
    nonce = time.time_ns() // 1_000_000

    def tx(key: PrivateKey, *actions: Any) -> bytes:
        nonlocal nonce
        nonce += 1
        return build_tx(key, "e2e-chain", nonce, list(actions))

    def place(
        key: PrivateKey, side: int, dollars: int, hundredths: int, tif: int = GTC, cid: int = 0
    ) -> bytes:
        return tx(
            key, PlaceOrder(BTC, side, hundredths * HUNDREDTH, dollars * DOLLAR, tif=tif, client_id=cid)
        )

    async with open_websocket_url(url) as ws:
        await _subscribe(ws, "book", stream="book", market="BTC-USD")
        first = await _next(ws)
        assert first.get("result") == {}, first
        snapshot = (await _next(ws))["result"]
        assert snapshot["stream"] == "book" and snapshot["market"] == "BTC-USD"
        assert snapshot["data"]["type"] == "snapshot"
        book: dict[str, dict[int, int]] = {}
        _apply(book, snapshot["data"])
        seq = snapshot["data"]["seq"]
        for request_id, params in (
            ("trades", {"stream": "trades", "market": "BTC-USD"}),
            ("ivan", {"stream": "user", "address": ivan_hex}),
            ("oracle", {"stream": "oracle"}),
        ):
            await _subscribe(ws, request_id, **params)
            assert (await _next(ws)) == {"jsonrpc": "2.0", "id": request_id, "result": {}}
        await _subscribe(ws, "bad", stream="book", market="DOGE-USD")
        assert "unknown market 'DOGE-USD'" in (await _next(ws))["error"]["data"]

        heights = []
        for raw in (
            tx(alice, Transfer(ivan.address, 10**10)),
            place(alice, SELL, 65_010, 1),
            place(alice, SELL, 65_010, 2),
            place(alice, SELL, 65_020, 1),
            place(alice, BUY, 64_990, 1),
            place(alice, BUY, 64_980, 3, cid=9),
            place(ivan, BUY, 65_010, 2, tif=IOC),  # takes 0.02 of the 0.03 at 65,010
            tx(alice, CancelOrder(BTC, 1, 9)),  # the 64,980 bid, by client id
        ):
            done = node.broadcast(raw, mode="commit")
            assert done["check_tx"]["code"] == 0 and done["tx_result"]["code"] == 0, done
            heights.append(int(done["height"]))

        trades: list[dict[str, str]] = []
        ivan_events: list[str] = []
        ivan_positions: list[dict[str, Any]] = []
        oracle_prices = 0
        book_height = 0  # the height of the last delta applied
        while book_height < heights[-1]:
            message = await _next(ws)
            result = message["result"]
            if message["id"] == "book":
                data = result["data"]
                assert data["type"] == "delta" and data["seq"] == seq + 1, "a gap in the book's sequence"
                seq = data["seq"]
                _apply(book, data)
                book_height = int(result["height"])
            elif message["id"] == "trades":
                trades += result["data"]["trades"]
            elif message["id"] == "ivan":
                ivan_events += [e["type"] for e in result["data"]["events"]]
                ivan_positions += result["data"]["positions"]
            else:
                assert message["id"] == "oracle"
                oracle_prices += sum(1 for e in result["data"]["events"] if e["type"] == "oracle_price")
        query = node.query("/book/BTC-USD")
        assert book == {
            "bids": {int(level["price"]): int(level["size"]) for level in query["bids"]},
            "asks": {int(level["price"]): int(level["size"]) for level in query["asks"]},
        }
        assert book["asks"][65_010 * DOLLAR] == 1 * HUNDREDTH and 64_980 * DOLLAR not in book["bids"]
        # price-time priority: the 0.01 placed first, then 0.01 of the 0.02
        assert [(t["price"], t["size"], t["taker"]) for t in trades] == [
            (str(65_010 * DOLLAR), str(HUNDREDTH), ivan_hex)
        ] * 2
        assert {"transfer", "order_placed", "order_filled"} <= set(ivan_events)
        assert ivan_positions[-1]["market"] == "BTC-USD" and ivan_positions[-1]["size"] == str(2 * HUNDREDTH)
        assert oracle_prices >= 1
