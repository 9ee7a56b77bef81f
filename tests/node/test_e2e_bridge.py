"""The bridge end to end: a real local EVM chain (hardhat), a 4-validator localnet of real `derivd`
processes made by `create_testnet(evm_rpc=...)` (which deploys the contracts), each validator's
watcher following the EVM chain. A deposit on the EVM chain is credited on derivd once confirmed,
the depositor trades, withdraws, the validators sign, anyone claims on the EVM chain, and after the
dispute period the tokens are paid: both sides' balances match. On the same chain: a fake deposit
voted by one validator mints nothing; a validator rotates its bridge key, the old set signs the
handover to the new one, `relay-valset` moves the contract, and a withdrawal signed under the new
set is paid; with the EVM node gone the chain keeps making blocks while the watchers report it
down."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web3 import Web3

from execution.bridge.evm import address_of_secret, deposit_id, format_evm_address
from execution.tx import BridgeDepositVote, DepositClaim, build_tx
from node.bridge_evm import BridgeContract
from node.bridge_key import create_bridge_key
from node.config import load_config, write_config
from node.testnet import Testnet as Network
from node.testnet import create_testnet, free_base_port
from primitives.keyfile import load_key_file
from primitives.keys import Address
from tests.evm.hardhat import HARDHAT_CHAIN_ID, HardhatNode, advance_time, hardhat_node, mine
from tests.node.e2e import SPEED, ChainHome, NodeProcess, run_cli, start_all, wait_for

CONFIRMATIONS = 2
DISPUTE_PERIOD_S = 30
USD = 10**6


@pytest.fixture
def bridged_net(tmp_path: Path) -> Iterator[tuple[HardhatNode, Network, list[NodeProcess]]]:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    with hardhat_node() as evm:
        net = create_testnet(
            tmp_path / "net",
            4,
            base_port=free_base_port(4),
            chain_id="bridge-chain",
            accounts=2,
            evm_rpc=evm.url,
            bridge_confirmations=CONFIRMATIONS,
            bridge_dispute_period=DISPUTE_PERIOD_S,
        )
        processes = []
        for node in net.nodes:
            overrides = {
                **SPEED,
                "oracle.source": "file",
                "oracle.file": str(prices),
                "bridge.poll_interval": "200ms",
            }
            write_config(load_config(node.home).with_overrides(**overrides))
            processes.append(NodeProcess(ChainHome(node.home, node.plan.rpc_port, node.plan.metrics_port)))
        try:
            start_all(processes)
            yield evm, net, processes
        finally:
            for process in processes:
                if process.alive():
                    process.stop()


def cli(*args: str, check: bool = True) -> dict[str, Any]:
    result = run_cli(*args, check=check)
    if not check and result.returncode != 0:
        return {"error": result.stderr, "exit": result.returncode}
    out: dict[str, Any] = json.loads(result.stdout)
    return out


def tx_events(result: dict[str, Any], kind: str) -> list[dict[str, str]]:
    return [
        {a["key"]: a["value"] for a in event["attributes"]}
        for event in result["tx_result"]["events"]
        if event["type"] == kind
    ]


def test_deposit_trade_withdraw_claim_against_a_real_evm(
    bridged_net: tuple[HardhatNode, Network, list[NodeProcess]],
) -> None:
    evm, net, nodes = bridged_net
    for node in nodes:
        node.wait_height(2, timeout=60)
    rpc = [f"http://127.0.0.1:{n.plan.rpc_port}" for n in net.nodes]
    home0 = str(net.nodes[0].home)
    trader, other = (account.address for account in net.accounts)
    w3 = Web3(Web3.HTTPProvider(evm.url))
    assert net.bridge is not None
    bridge = BridgeContract(w3, net.bridge.contract)
    evm_args = ("--evm-rpc", evm.url, "--node", rpc[0])

    # 1. deposit 2,500 USD on the EVM chain for the trader: credited once confirmed, exactly once
    before = nodes[0].balance(trader)
    locked_before = bridge.token_balance(bridge.address)
    deposit = cli(
        "bridge", "deposit", *evm_args, "--evm-dev-account", "5", "--mint", "--amount", "2500", "--to", trader
    )
    mine(w3, CONFIRMATIONS)  # the deposit's block now has more than enough confirmations
    wait_for("the deposit credited", lambda: nodes[3].balance(trader) == before + 2500 * USD or None, 60)
    credited = nodes[1].query(f"/bridge/deposits/{deposit['deposit_id'][2:]}")
    assert credited["status"] == "credited" and credited["claim"]["amount"] == str(2500 * USD), credited
    mine(w3, 3)  # more blocks, more polls: never a second credit
    nodes[0].wait_height(nodes[0].height() + 3)
    assert nodes[2].balance(trader) == before + 2500 * USD

    # 2. a fake deposit voted by one validator (1/4 of the power) mints nothing
    validator = load_key_file(net.nodes[0].home / "config" / "priv_validator_key.json")
    fake = DepositClaim(
        evm_chain_id=HARDHAT_CHAIN_ID,
        tx_hash=b"\x66" * 32,
        log_index=0,
        depositor=b"\x01" * 20,
        recipient=Address.parse(other),
        amount=1_000_000 * USD,
    )
    other_before = nodes[0].balance(other)
    nonce = time.time_ns() // 1_000_000  # a millisecond nonce, as clients use
    vote = build_tx(validator, "bridge-chain", nonce, [BridgeDepositVote((fake,))], fee=0)
    voted = nodes[0].broadcast(vote, "commit")
    assert voted["check_tx"]["code"] == 0 and voted["tx_result"]["code"] == 0, voted
    pending = nodes[0].query(f"/bridge/deposits/{deposit_id(HARDHAT_CHAIN_ID, fake.tx_hash, 0).hex()}")
    assert pending["status"] != "credited" and len(pending["votes"]) == 1, pending
    nodes[0].wait_height(nodes[0].height() + 2)
    assert nodes[3].balance(other) == other_before

    # 3. trade: the trader sells 0.01 BTC to the other account
    order = ("tx", "order", "place", "--market", "BTC-USD", "--size", "0.01", "--price", "65000")
    sold = cli(*order, "--from", "account0", "--side", "sell", "--home", home0, "--node", rpc[0])
    assert sold["tx_result"]["code"] == 0, sold
    home1 = str(net.nodes[1].home)
    bought = cli(
        *order, "--from", "account1", "--side", "buy", "--tif", "ioc", "--home", home1, "--node", rpc[1]
    )
    assert tx_events(bought, "order_filled"), bought

    # 4. withdraw 1,000 USD to an EVM address: signed by the validators' watchers
    recipient = address_of_secret(evm.keys[6])
    paid_before = bridge.token_balance(recipient)
    withdrawn = cli(
        "tx", "withdraw", "--from", "account0", "--to", format_evm_address(recipient), "--amount", "1000",
        "--home", home0, "--node", rpc[0],
    )  # fmt: skip
    assert withdrawn["tx_result"]["code"] == 0, withdrawn
    [event] = tx_events(withdrawn, "bridge_withdrawal")
    wid = event["id"]
    wait_for(
        "the validators' signatures",
        lambda: nodes[2].query(f"/bridge/withdrawals/{wid}")["status"] == "signed" or None,
        60,
    )

    # 5. anyone claims it on the EVM chain; paid after the dispute period (its refusals before it,
    #    of a replay and of too few signatures: tests/evm, tests/node/test_bridge_cli.py)
    claim = cli("bridge", "claim", wid, *evm_args, "--evm-dev-account", "7")
    assert claim["amount"] == str(1000 * USD) and len(claim["signers"]) >= 3, claim
    advance_time(w3, DISPUTE_PERIOD_S)
    paid = cli("bridge", "finalize", wid, *evm_args, "--evm-dev-account", "7")
    assert bridge.token_balance(recipient) == paid_before + 1000 * USD == int(paid["recipient_balance"])

    # 6. both sides agree: what the contract holds is what derivd counts as bridged in minus out
    assert_sides_match(nodes[3], bridge, locked_before, 2500 * USD, 1000 * USD)

    # 7. validator 3 rotates its bridge key: the chain makes valset 1, set 0 signs the handover
    #    (without validator 3, whose watcher still holds the old key: 3/4 of the power), anyone
    #    relays it, and the contract then pays a withdrawal signed under set 1
    home3 = net.nodes[3].home
    rotated = home3 / "config" / "bridge_key_rotated.json"
    create_bridge_key(rotated)
    write_config(load_config(home3).with_overrides(**{"bridge.key_file": str(rotated)}))
    set_key = cli("tx", "bridge", "set-key", "--home", str(home3), "--node", rpc[3])
    assert set_key["tx_result"]["code"] == 0, set_key
    wait_for(
        "valset 1 signed by set 0",
        lambda: nodes[1].query("/bridge/valsets/1")["status"] == "signed" or None,
        30,
    )
    relayed = cli("bridge", "relay-valset", *evm_args, "--evm-dev-account", "7")
    assert bridge.valset_nonce() == 1, relayed
    again = cli(
        "tx", "withdraw", "--from", "account0", "--to", format_evm_address(recipient), "--amount", "100",
        "--home", home0, "--node", rpc[0],
    )  # fmt: skip
    [event] = tx_events(again, "bridge_withdrawal")
    wait_for(
        "the signatures under set 1",
        lambda: nodes[2].query(f"/bridge/withdrawals/{event['id']}")["status"] == "signed" or None,
        30,
    )
    assert cli("bridge", "claim", event["id"], *evm_args, "--evm-dev-account", "7")["valset_nonce"] == "1"
    advance_time(w3, DISPUTE_PERIOD_S)
    cli("bridge", "finalize", event["id"], *evm_args, "--evm-dev-account", "7")
    assert bridge.token_balance(recipient) == paid_before + 1100 * USD
    assert_sides_match(nodes[3], bridge, locked_before, 2500 * USD, 1100 * USD)

    # 8. the EVM node goes away: the chain keeps making blocks, the watchers say the EVM is down
    evm.kill()
    metrics = f"http://127.0.0.1:{net.nodes[1].plan.metrics_port}/metrics"
    wait_for("a watcher to see the EVM down", lambda: _watcher_up(metrics) == 0 or None, 30)
    height = nodes[2].height()
    nodes[2].wait_height(height + 3)
    assert all(node.alive() for node in nodes)


def assert_sides_match(
    node: NodeProcess, bridge: BridgeContract, locked_before: int, deposited: int, withdrawn: int
) -> None:
    """derivd's totals are what is expected, and the contract holds what they leave (every
    withdrawal finalized)."""
    summary = node.query("/bridge")
    assert (int(summary["deposited"]), int(summary["withdrawn"])) == (deposited, withdrawn), summary
    assert bridge.token_balance(bridge.address) - locked_before == deposited - withdrawn


def _watcher_up(metrics_url: str) -> int | None:
    for line in httpx.get(metrics_url, timeout=10).text.splitlines():
        if line.startswith("derivd_bridge_watcher_up{"):
            return int(float(line.rsplit(" ", 1)[1]))
    return None
