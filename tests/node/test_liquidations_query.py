"""`derivd query liquidations` and the SDK's `liquidations()` (both clients) on the `/liquidations`
query of an app whose state holds a liquidation queue and records
(`tests.execution.test_liquidation_history.liquidation_chain`), their RPC calls answered by that app
as the node's `abci_query` answers them. Against a real node: `tests/node/test_sdk.py`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from node import jsonfmt, trade_cli
from node.cli import main
from node.client import RPCClient
from node.sdk import AsyncClient, Client
from tests.execution.chain import Chain
from tests.execution.test_liquidation_history import FUND, LONG, liquidation_chain


class AppTransport:
    """The SDK's transport (`call`, `aclose`, `close`) answering `abci_query` from `chain`'s app."""

    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.paths: list[str] = []

    def call(self, method: str, **params: Any) -> Any:
        assert method == "abci_query" and params["height"] == "0" and not params["prove"]
        self.paths.append(params["path"])
        result = self.chain.app.query(params["path"], b"", 0, False)
        return {"response": jsonfmt.query_result(result)}

    def close(self) -> None:
        pass


class AsyncAppTransport(AppTransport):
    async def call(self, method: str, **params: Any) -> Any:
        return super().call(method, **params)

    async def aclose(self) -> None:
        pass


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = liquidation_chain(tmp_path / "db")
    yield c
    c.close()


def test_the_clients_return_typed_liquidations(chain: Chain) -> None:
    client = Client("http://unused")
    client.rpc = AppTransport(chain)  # type: ignore[assignment]
    got = client.liquidations()
    assert client.rpc.paths == ["/liquidations"]  # type: ignore[attr-defined]
    long = got.queue[0]
    assert long.account == str(LONG) and long.maintenance_requirement > 0
    assert long.account_value == Decimal(str(chain.account(LONG)["account_value_human"]))
    newest = got.recent[0]
    assert (newest.height, newest.kind, newest.counterparty, newest.market) == (
        7,
        "liquidated",
        "",
        "BTC-USD",
    )
    assert (newest.size, newest.size_quantums) == (Decimal("-0.0021"), -21_000_000)
    assert (newest.price, newest.price_subticks) == (Decimal("65000.0002"), 6_500_000_020)
    assert (newest.quote, newest.fee) == (Decimal("1.365"), Decimal("0.00002"))
    assert [(r.height, r.kind) for r in got.recent[1:]] == [
        (7, "deleveraged"),
        (5, "taken_over"),
        (5, "deleveraged"),
    ]
    assert got.recent[2].counterparty == FUND.hex() and got.recent[2].fee == 0
    assert len(got.queue) == 3 and got.queue[1].maintenance_requirement == 0


async def test_the_async_client_returns_the_same(chain: Chain) -> None:
    blocking = Client("http://unused")
    blocking.rpc = AppTransport(chain)  # type: ignore[assignment]
    client = AsyncClient("http://unused")
    client.rpc = AsyncAppTransport(chain)  # type: ignore[assignment]
    got = await client.liquidations()
    assert got == blocking.liquidations() and len(got.recent) == 4


def test_the_cli_prints_the_query(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    class Rpc(RPCClient):
        def __init__(self, url: str) -> None:
            assert url == "http://node:1"
            self.url = url
            self._call = AppTransport(chain).call

    monkeypatch.setattr(trade_cli, "RPCClient", Rpc)
    result = CliRunner().invoke(main, ["query", "liquidations", "--node", "http://node:1"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(chain.app.query("/liquidations", b"", 0, False).value)
    assert json.loads(result.output)["recent"][0]["kind"] == "liquidated"
