"""Trading end to end on a 4-validator localnet of real `derivd` processes: two accounts cross
through the CLI and both see the fill and their positions through any node's RPC; every
validator's price feeder reads a `file` source, and the chain's oracle price follows the file;
with the file gone no validator votes, the market goes stale and refuses an opening order while
it still takes a reducing one; a price drop written to the file gets a leveraged account
liquidated against the book."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from execution.positions.funding_index import INSURANCE_FUND
from genesis.genesis import load_genesis, save_genesis
from node.config import load_config, write_config
from node.testnet import Testnet as Network
from node.testnet import create_testnet, free_base_port
from tests.node.e2e import SPEED, ChainHome, NodeProcess, run_cli, start_all, wait_for

STALE_AFTER_BLOCKS = 3
MARKET_STALE = 30


@pytest.fixture
def trading_net(tmp_path: Path) -> Iterator[tuple[Network, list[NodeProcess], Path]]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    base = free_base_port(4)
    net = create_testnet(tmp_path / "net", 4, base_port=base, chain_id="trade-chain", accounts=2)
    processes = []
    for node in net.nodes:
        overrides = {
            **SPEED,
            "oracle.source": "file",
            "oracle.file": str(prices),
            "oracle.reload_interval": "200ms",
        }
        write_config(load_config(node.home).with_overrides(**overrides))
        genesis_path = node.home / "config" / "genesis.json"
        doc = load_genesis(genesis_path)
        app_state = dict(doc.app_state)
        app_state["oracle"] = {**app_state["oracle"], "stale_after_blocks": STALE_AFTER_BLOCKS}
        save_genesis(replace(doc, app_state=app_state), genesis_path)
        processes.append(NodeProcess(ChainHome(node.home, node.plan.rpc_port, node.plan.metrics_port)))
    start_all(processes)
    yield net, processes, prices
    for process in processes:
        if process.alive():
            process.stop()


def order(net: Network, node: int, *args: str, check: bool = True) -> dict[str, Any]:
    """`derivd tx order ...` through node `node`'s RPC (commit mode); the printed result."""
    home, rpc = net.nodes[node].home, f"http://127.0.0.1:{net.nodes[node].plan.rpc_port}"
    result = run_cli("tx", "order", *args, "--home", str(home), "--node", rpc, check=check)
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def events(result: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [
        {a["key"]: a["value"] for a in event["attributes"]}
        for event in result["tx_result"]["events"]
        if event["type"] == kind
    ]


def btc_position(node: NodeProcess, address: str) -> dict[str, Any] | None:
    for position in node.query(f"/accounts/{address}")["positions"]:
        if position["market"] == "BTC-USD":
            found: dict[str, Any] = position
            return found
    return None


def oracle_btc(node: NodeProcess) -> dict[str, Any]:
    [item] = [p for p in node.query("/oracle") if p["market"] == "BTC-USD"]
    found: dict[str, Any] = item
    return found


def test_two_accounts_cross_and_prices_follow_the_file_source(
    trading_net: tuple[Network, list[NodeProcess], Path],
) -> None:
    net, nodes, prices = trading_net
    for node in nodes:
        node.wait_height(3, timeout=60)
    seller, buyer = (account.address for account in net.accounts)

    placed = order(
        net,
        0,
        "place",
        "--from",
        "account0",
        "--market",
        "BTC-USD",
        "--side",
        "sell",
        "--size",
        "0.1",
        "--price",
        "65000",
        "--client-id",
        "7",
    )
    assert placed["tx_result"]["code"] == 0, placed
    [rested] = events(placed, "order_placed")
    crossed = order(
        net,
        1,
        "place",
        "--from",
        "account1",
        "--market",
        "BTC-USD",
        "--side",
        "buy",
        "--size",
        "0.1",
        "--price",
        "65000",
        "--tif",
        "ioc",
    )
    assert crossed["tx_result"]["code"] == 0, crossed
    [fill] = events(crossed, "order_filled")
    assert fill["maker_order_id"] == rested["order_id"]
    assert fill["price"] == "6500000000" and fill["size"] == "1000000000"
    for node in nodes:  # every node's RPC shows both positions
        bought = wait_for("the fill on this node", partial(btc_position, node, buyer))
        sold = btc_position(node, seller)
        assert bought["size_human"] == "0.1"
        assert sold is not None and sold["size_human"] == "-0.1"
    # open interest follows the fill on a node that was running (kept from each commit's changes)
    interest = 'derivd_open_interest{chain_id="trade-chain",market="BTC-USD"} 1000000000\n'
    metrics_url = f"http://127.0.0.1:{net.nodes[3].plan.metrics_port}/metrics"
    wait_for("the open interest metric", lambda: interest in httpx.get(metrics_url, timeout=10).text or None)

    prices.write_text(json.dumps({"BTC-USD": "60000", "ETH-USD": "3400"}))
    wait_for(
        "the oracle to follow the file",
        lambda: True if oracle_btc(nodes[3])["price_human"] == "60000" else None,
        timeout=60,
    )

    prices.unlink()  # no source: no validator votes, the price ages
    wait_for("the market to go stale", lambda: True if oracle_btc(nodes[2])["stale"] else None, timeout=60)
    refused = order(
        net,
        1,
        "place",
        "--from",
        "account1",
        "--market",
        "BTC-USD",
        "--side",
        "buy",
        "--size",
        "0.1",
        "--price",
        "60000",
        check=False,
    )
    assert refused["check_tx"]["code"] == MARKET_STALE or refused["tx_result"]["code"] == MARKET_STALE, (
        refused
    )
    reducing = order(
        net,
        1,
        "place",
        "--from",
        "account1",
        "--market",
        "BTC-USD",
        "--side",
        "sell",
        "--size",
        "0.05",
        "--price",
        "60000",
        "--reduce-only",
    )
    assert reducing["tx_result"]["code"] == 0, reducing


def test_a_price_drop_on_the_file_source_liquidates_a_leveraged_account(
    trading_net: tuple[Network, list[NodeProcess], Path],
) -> None:
    net, nodes, prices = trading_net
    for node in nodes:
        node.wait_height(3, timeout=60)
    maker, trader = (account.address for account in net.accounts)
    home0 = str(net.nodes[0].home)
    rpc0 = f"http://127.0.0.1:{net.nodes[0].plan.rpc_port}"
    # the trader keeps $10,000 of collateral and goes long 1 BTC at $65,000 (6.5x)
    run_cli("tx", "transfer", "--home", home0, "--node", rpc0, "--from", "account1", "--to", maker,
            "--amount", str(990_000 * 10**6))  # fmt: skip
    assert order(net, 0, "place", "--from", "account0", "--market", "BTC-USD", "--side", "sell",
                 "--size", "1", "--price", "65000")["tx_result"]["code"] == 0  # fmt: skip
    assert order(net, 0, "place", "--from", "account1", "--market", "BTC-USD", "--side", "buy",
                 "--size", "1", "--price", "65000", "--tif", "ioc")["tx_result"]["code"] == 0  # fmt: skip
    # bids that can absorb the liquidation above the trader's bankruptcy price (about $55,033)
    assert order(net, 0, "place", "--from", "account0", "--market", "BTC-USD", "--side", "buy",
                 "--size", "1", "--price", "55500")["tx_result"]["code"] == 0  # fmt: skip
    long = btc_position(nodes[2], trader)
    assert long is not None and long["size_human"] == "1"

    prices.write_text(json.dumps({"BTC-USD": "56000", "ETH-USD": "3500"}))  # value $967 < maintenance $1,680

    def closed() -> bool | None:
        position = btc_position(nodes[3], trader)
        return True if position is None or position["size"] == "0" else None

    wait_for("the long to be liquidated", closed, timeout=120)
    account = nodes[1].query(f"/accounts/{trader}")
    assert int(account["account_value"]) >= 0
    assert int(nodes[1].query(f"/accounts/{INSURANCE_FUND}")["balance"]) > 0, "the liquidation fee"
    metrics = httpx.get(f"http://127.0.0.1:{net.nodes[2].plan.metrics_port}/metrics", timeout=10).text
    assert any(
        line.startswith("derivd_liquidations_total") and float(line.split()[-1]) >= 1
        for line in metrics.splitlines()
    ), metrics[-2000:]
    for family in ("liquidation_fills_total", "insurance_fund_balance", "triggered_orders_total"):
        assert f"derivd_{family}{{" in metrics, family
    for family in ("orders_placed_total", "fills_total"):  # counted from the blocks' events, per market
        assert any(
            line.startswith(f"derivd_{family}{{")
            and 'market="BTC-USD"' in line
            and float(line.split()[-1]) >= 1
            for line in metrics.splitlines()
        ), family
