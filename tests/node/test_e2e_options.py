"""Options end to end on a real `derivd` validator: the testnet's default option series (here with
a 20-second lifetime) show their mark and Greeks in `query markets`, trade through the CLI, show
the position's Greeks in `query account`, are margined by the portfolio rule (a naked short call
the linear rule would take is refused), expire and settle at the intrinsic value, after which the
series refuses orders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execution.codes import Code
from execution.positions.margin import FEE_COLLECTOR
from node.config import load_config, write_config
from node.testnet import Testnet as Network
from node.testnet import create_testnet, free_base_port
from tests.node.e2e import SPEED, ChainHome, NodeProcess, run_cli, wait_for

LIFETIME_NS = 20 * 10**9


@pytest.fixture
def options_node(tmp_path: Path) -> Iterator[tuple[Network, NodeProcess]]:
    net = create_testnet(
        tmp_path / "net",
        1,
        base_port=free_base_port(1),
        chain_id="options-chain",
        accounts=2,
        option_lifetimes=[LIFETIME_NS],
    )
    node = net.nodes[0]
    write_config(load_config(node.home).with_overrides(**SPEED))
    process = NodeProcess(ChainHome(node.home, node.plan.rpc_port, node.plan.metrics_port))
    process.start()
    yield net, process
    if process.alive():
        process.stop()


def cli(net: Network, *args: str, check: bool = True) -> dict[str, Any]:
    node = net.nodes[0]
    result = run_cli(
        *args, "--home", str(node.home), "--node", f"http://127.0.0.1:{node.plan.rpc_port}", check=check
    )
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def query(net: Network, *args: str) -> Any:
    node = net.nodes[0]
    return json.loads(run_cli("query", *args, "--node", f"http://127.0.0.1:{node.plan.rpc_port}").stdout)


def balance(node: NodeProcess, address: str) -> int:
    return int(node.query(f"/accounts/{address}")["balance"])


def test_an_option_series_trades_shows_its_greeks_expires_and_settles(
    options_node: tuple[Network, NodeProcess],
) -> None:
    net, node = options_node
    node.wait_height(2, timeout=60)
    markets = {item["ticker"]: item for item in query(net, "markets")}
    [call] = [t for t, m in markets.items() if t.startswith("BTC-") and t.endswith("-C")]
    option = markets[call]["option"]
    assert (
        option["status"] == "open" and option["type"] == "call" and option["underlying_ticker"] == "BTC-USD"
    )
    mark = option["mark"]
    for greek in ("delta", "gamma_per_usd", "vega_usd_per_vol_point", "theta_usd_per_day"):
        assert greek in mark
    assert int(mark["price"]) > 0 and int(mark["vol_ppm"]) == 600_000
    assert "funding_rate_ppm" not in markets[call]

    seller, buyer = (account.address for account in net.accounts)
    # the seller keeps about $3,000: enough for a short 0.01 BTC call, not for a naked 1 BTC one, whose
    # portfolio margin (the loss if BTC rose 15%, plus 1% of its notional) is ~$12,000 (the linear
    # rule's 5% of the call's notional would be a few dollars)
    moved = cli(net, "tx", "transfer", "--from", "account0", "--to", buyer, "--amount", str(997_000 * 10**6))
    assert moved["tx_result"]["code"] == 0, moved
    naked = cli(
        net, "tx", "order", "place", "--from", "account0", "--side", "sell", "--market", call, "--size", "1",
        "--price", "50", "--tif", "post-only", check=False,
    )  # fmt: skip
    code = naked.get("check_tx", {}).get("code") or naked.get("tx_result", {}).get("code")
    assert code == Code.INSUFFICIENT_MARGIN, naked
    before = {address: balance(node, address) for address in (seller, buyer, str(FEE_COLLECTOR))}
    trade = ("--market", call, "--size", "0.01", "--price", "50")
    sold = cli(net, "tx", "order", "place", "--from", "account0", "--side", "sell", *trade)
    assert sold["tx_result"]["code"] == 0, sold
    bought = cli(net, "tx", "order", "place", "--from", "account1", "--side", "buy", "--tif", "ioc", *trade)
    assert bought["tx_result"]["code"] == 0, bought
    assert any(event["type"] == "order_filled" for event in bought["tx_result"]["events"])
    shown = query(net, "account", buyer)
    [held] = [p for p in shown["positions"] if p["market"] == call]
    assert held["size_human"] == "0.01" and set(held["greeks"]) == {
        "delta",
        "gamma_per_usd",
        "vega_usd_per_vol_point",
        "theta_usd_per_day",
    }

    def settled() -> dict[str, Any] | None:
        [item] = [m for m in node.query("/markets") if m["ticker"] == call]
        found: dict[str, Any] = item["option"]
        return found if found["status"] == "settled" else None

    done = wait_for("the series to settle", settled, timeout=LIFETIME_NS / 10**9 + 60)
    underlying = int(done["settlement_underlying_price"])
    strike = int(done["strike"])
    assert int(done["settlement_price"]) == max(underlying - strike, 0) // 100_000 * 100_000  # on the $1 tick
    for address in (seller, buyer):
        assert all(p["market"] != call for p in node.query(f"/accounts/{address}")["positions"])
    after = {address: balance(node, address) for address in before}
    # quote is conserved: what the two traders lost in all went to the fee collector
    assert sum(after[a] - before[a] for a in (seller, buyer)) == -(
        after[str(FEE_COLLECTOR)] - before[str(FEE_COLLECTOR)]
    )
    payoff = int(done["settlement_price"]) * 10**8 // 10**9  # 0.01 BTC = 10**8 base quantums, qce -9
    premium = 50 * 100_000 * 10**8 // 10**9
    assert after[buyer] - before[buyer] < payoff - premium + 1  # the buyer paid fees on top
    assert after[buyer] - before[buyer] > payoff - premium - 10**6  # fees below $1

    refused = cli(net, "tx", "order", "place", "--from", "account1", "--side", "buy", *trade, check=False)
    code = refused.get("check_tx", {}).get("code") or refused.get("tx_result", {}).get("code")
    assert code == Code.MARKET_CLOSED, refused
