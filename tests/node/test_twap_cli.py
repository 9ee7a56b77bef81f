"""TWAP and scale orders from the outside, against a real `derivd start`: the CLI's `tx order scale`,
`tx order twap`, `tx order twap-cancel` and the `twaps` query command, the SDK's `twap`,
`cancel_twap`, `scale` and `twaps` (sync and async), and their JSON forms in a tx document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from execution.codes import Code
from execution.tx import CancelTwap, PlaceScale, PlaceTwap
from node.keystore import KeyStore
from node.sdk import AsyncClient, Client, TxError
from node.trade_cli import twaps_command
from node.txjson import action_from_json, action_to_json
from tests.node.e2e import ChainHome, NodeProcess, invoke, start_file_priced_node, tx_events


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[ChainHome, NodeProcess]]:
    chain, process = start_file_priced_node(tmp_path, {"alice": 10**12, "bob": 10**12})
    yield chain, process
    process.stop()


def order(chain: ChainHome, *args: str) -> dict[str, Any]:
    return invoke(chain, "tx", "order", *args)


def test_json_forms_round_trip() -> None:
    for action in (PlaceTwap(1, 0, 5, 2, 3, 4, 1), CancelTwap(1, 7), PlaceScale(1, 1, 6, 3, 10, 20, 3, 1, 9)):
        doc = action_to_json(action)
        assert doc["type"] in ("place_twap", "cancel_twap", "place_scale")
        assert action_from_json(json.loads(json.dumps(doc)), "a") == action


async def test_twap_and_scale_through_cli_and_sdk(node: tuple[ChainHome, NodeProcess]) -> None:
    chain, process = node
    keys = KeyStore(chain.home)
    # bob's scale order: asks at 65,100, 65,200, 65,300 of 0.001 BTC each
    scale = order(chain, "scale", "--from", "bob", "--market", "BTC-USD", "--side", "sell", "--size", "0.003",
                "--count", "3", "--start-price", "65100", "--end-price", "65300", "--tif", "post-only",
                "--client-id-base", "10")  # fmt: skip
    (summary,) = tx_events(scale, "scale_placed")
    assert summary["count"] == "3"
    placed = tx_events(scale, "order_placed")
    assert [p["price"] for p in placed] == [str(d * 100_000) for d in (65_100, 65_200, 65_300)]
    with Client(chain.rpc_url, key=keys.private_key("alice")) as alice:
        result = alice.twap("BTC-USD", "buy", "0.002", slices=2, interval_blocks=1, max_slippage="0.01")
        assert result.twap_id() == 1
        start = result.height
        process.wait_height(start + 2)
        assert alice.twaps() == []  # both slices ran: finished
        position = alice.account().position("BTC-USD")
        assert position is not None and position.size == Decimal("0.002")
        # a slow TWAP through the CLI, shown by the query command, then cancelled
        twap = order(
            chain, "twap", "--from", "alice", "--market", "BTC-USD", "--side", "buy",
            "--size", "0.01", "--slices", "10", "--interval", "1000", "--max-slippage", "0.001",
        )  # fmt: skip
        (started,) = tx_events(twap, "twap_placed")
        assert started["twap_id"] == "2" and started["max_slippage_ppm"] == "1000"
        shown = CliRunner().invoke(twaps_command, [alice.address, "--node", chain.rpc_url])
        assert shown.exit_code == 0, shown.output
        (item,) = json.loads(shown.output)["twaps"]
        assert (item["twap_id"], item["size_human"], item["slices_left"]) == ("2", "0.01", "9")
        (live,) = alice.twaps()
        assert (live.twap_id, live.size, live.slices_left) == (2, Decimal("0.01"), 9)
        cancelled = invoke(
            chain, "tx", "order", "twap-cancel", "--from", "alice", "--market", "BTC-USD", "--twap-id", "2"
        )
        assert tx_events(cancelled, "twap_cancelled")[0]["twap_id"] == "2"
        assert alice.twaps() == []
    async with AsyncClient(chain.rpc_url, key=keys.private_key("bob")) as bob:
        with pytest.raises(TxError) as missing:
            await bob.cancel_twap("BTC-USD", 2)
        assert missing.value.code == Code.ORDER_NOT_FOUND
        more = await bob.place_scale(
            "BTC-USD", "sell", "0.002", count=2, start_price="66000", end_price="66100", client_id_base=20
        )
        assert len(more.placed_order_ids()) == 2
        assert await bob.twaps() == []
