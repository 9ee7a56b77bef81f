"""End to end with several real `derivd` processes on loopback: they agree, carry transactions
between them, survive a validator's crash (it catches up by block sync and votes again), stop
without +2/3 and resume without a fork, let a fresh full node sync from far behind, and drop
peers that misbehave on the wire."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from time import time_ns

import httpx
import pytest

from execution.tx import Transfer, build_tx
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.testnet import Testnet as Network
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from tests.node.e2e import NodeProcess, make_net, run_cli, start_all, wait_for


def block_hashes(node: NodeProcess, heights: range) -> list[str]:
    return [node.rpc("block", height=str(h))["block_id"]["hash"] for h in heights]


@pytest.fixture
def four(tmp_path: Path) -> Iterator[tuple[Network, list[NodeProcess]]]:
    net, nodes = make_net(tmp_path, 4)
    start_all(nodes)
    yield net, nodes
    for node in nodes:
        if node.alive():
            node.stop()


def test_four_validators_agree_and_carry_a_transfer(four: tuple[Network, list[NodeProcess]]) -> None:
    net, nodes = four
    top = min(node.wait_height(5) for node in nodes)
    reference = block_hashes(nodes[0], range(1, top + 1))
    for node in nodes[1:]:
        assert block_hashes(node, range(1, top + 1)) == reference
    commit = nodes[0].rpc("commit", height="3")["signed_header"]["commit"]
    assert sum(sig["block_id_flag"] == 2 for sig in commit["signatures"]) >= 3
    peers = nodes[0].rpc("net_info")["peers"]
    assert len(peers) == 3
    status = peers[0]["connection_status"]
    assert int(status["SendMonitor"]["Bytes"]) > 0 and int(status["RecvMonitor"]["Bytes"]) > 0
    assert int(status["Duration"]) > 0 and int(status["SendMonitor"]["AvgRate"]) > 0
    channels = {c["ID"]: c for c in status["Channels"]}
    assert {0x20, 0x21, 0x22, 0x30} <= set(channels)  # consensus state, data, votes; mempool
    assert int(channels[0x22]["SendQueueCapacity"]) > 0 and int(channels[0x22]["RecentlySent"]) >= 0
    metrics = httpx.get(f"http://127.0.0.1:{net.nodes[0].plan.metrics_port}/metrics", timeout=10).text
    assert 'cometbft_p2p_peers{chain_id="e2e-chain"} 3\n' in metrics  # integers as Go's client writes them
    assert 'cometbft_blocksync_syncing{chain_id="e2e-chain"} 0\n' in metrics
    assert "cometbft_p2p_peer_receive_bytes_total{" in metrics

    sender = KeyStore(net.nodes[0].home).private_key("account0")
    recipient = Address.parse(str(PrivateKey.from_seed(sha256(b"e2e recipient")).address))
    tx = build_tx(sender, "e2e-chain", time_ns() // 1_000_000, [Transfer(recipient, 777)])
    assert nodes[0].broadcast(tx)["code"] == 0
    wait_for("the transfer on node 3", lambda: True if nodes[3].balance(str(recipient)) == 777 else None)
    # Proposal blocks travel compact (the default): each node rebuilt some from its mempool.
    for plan in net.nodes:
        text = httpx.get(f"http://127.0.0.1:{plan.plan.metrics_port}/metrics", timeout=10).text
        [rebuilt] = [
            line
            for line in text.splitlines()
            if line.startswith("cometbft_consensus_compact_blocks_rebuilt_total")
        ]
        assert float(rebuilt.rpartition(" ")[2]) > 0, plan.home


def test_a_crashed_validator_catches_up_and_votes_again(four: tuple[Network, list[NodeProcess]]) -> None:
    net, nodes = four
    nodes[0].wait_height(3)
    victim = nodes[3]
    victim.kill9()
    stopped_at = nodes[0].height()
    nodes[0].wait_height(stopped_at + 8)  # the other three (30 of 40) keep committing
    victim.start()
    tip = nodes[0].height()
    victim.wait_height(tip, timeout=60)
    assert block_hashes(victim, range(1, tip + 1)) == block_hashes(nodes[0], range(1, tip + 1))
    address = net.nodes[3].validator_address

    next_height = tip + 1  # each commit is read once (polling must not load the nodes it watches)

    def signed_again() -> bool | None:
        nonlocal next_height
        latest = nodes[0].height()
        while next_height <= latest:
            commit = nodes[0].rpc("commit", height=str(next_height))["signed_header"]["commit"]
            next_height += 1
            for sig in commit["signatures"]:
                if sig["validator_address"] == address and sig["block_id_flag"] == 2:
                    return True
        return None

    wait_for("the restarted validator's signature in a commit", signed_again, timeout=90, interval=0.2)


def test_no_progress_without_two_thirds_then_resume_without_fork(
    four: tuple[Network, list[NodeProcess]],
) -> None:
    _, nodes = four
    nodes[0].wait_height(3)
    nodes[2].stop()
    nodes[3].stop()
    halted = max(nodes[0].height(), nodes[1].height())
    # An observation window, not a synchronisation: with 20 of 40 voting power no block may be
    # committed however long we watch (30 block intervals here).
    with pytest.raises(AssertionError, match="timed out"):
        wait_for("a block without +2/3", lambda: True if nodes[0].height() > halted else None, timeout=3)
    assert max(nodes[0].height(), nodes[1].height()) == halted
    nodes[2].start()
    resumed = nodes[0].wait_height(halted + 3, timeout=60)
    assert block_hashes(nodes[2], range(1, halted + 1)) == block_hashes(nodes[0], range(1, halted + 1))
    assert block_hashes(nodes[1], range(1, resumed + 1)) == block_hashes(nodes[0], range(1, resumed + 1))


def test_fresh_full_node_syncs_from_far_behind_and_follows(tmp_path: Path) -> None:
    _, nodes = make_net(tmp_path, 4, full_nodes=1)
    validators, full = nodes[:4], nodes[4]
    try:
        start_all(validators)
        validators[0].wait_height(105, timeout=120)
        full.start()
        tip = validators[0].height()
        full.wait_height(tip, timeout=60)
        assert block_hashes(full, range(tip - 5, tip + 1)) == block_hashes(
            validators[0], range(tip - 5, tip + 1)
        )
        full.wait_height(tip + 5, timeout=30)  # and it follows the chain
        assert full.status()["sync_info"]["catching_up"] is False
    finally:
        for node in nodes:
            if node.alive():
                node.stop()


def test_a_new_node_joins_by_state_sync(tmp_path: Path) -> None:
    """Validators take a snapshot every 10 heights; a new full node restores the newest one its
    light client verifies (trusting the header of height 2), block-syncs from there, and then has
    the validators' blocks and app hashes without ever holding the early blocks."""
    net, nodes = make_net(tmp_path, 4, full_nodes=1)
    validators, full = nodes[:4], nodes[4]
    try:
        for node, plan in zip(validators, net.nodes, strict=False):
            keep = {
                "storage.snapshot_interval": 10,
                "storage.snapshot_keep_recent": 10,
            }  # blocks are fast here
            write_config(load_config(plan.home).with_overrides(**keep))
            node.start()
        # a resting order with a client id: the derived indexes (client ids, an owner's markets)
        # are not in a snapshot; the restored node must rebuild them
        trader = str(KeyStore(net.nodes[0].home).private_key("account0").address)
        order = (
            "tx", "order", "place", "--home", str(net.nodes[0].home), "--node", validators[0].chain.rpc_url,
            "--from", "account0", "--market", "BTC-USD", "--side", "buy", "--size", "0.01",
            "--price", "60000", "--client-id", "42", "--broadcast-mode", "commit",
        )  # fmt: skip
        validators[0].wait_height(2)
        run_cli(*order)
        validators[0].wait_height(32, timeout=120)
        trusted = validators[0].rpc("commit", height="2")["signed_header"]["commit"]["block_id"]["hash"]
        overrides = {
            "statesync.enable": True,
            "statesync.rpc_servers": validators[0].chain.rpc_url,
            "statesync.trust_height": 2,
            "statesync.trust_hash": trusted,
            "statesync.discovery_time": "2s",
        }
        write_config(load_config(net.nodes[4].home).with_overrides(**overrides))
        full.start()
        tip = validators[0].height()
        full.wait_height(tip, timeout=90)
        restored = int(full.status()["sync_info"]["earliest_block_height"]) - 1
        assert restored >= 20 and restored % 10 == 0, "it restored a snapshot instead of replaying"
        assert "state sync restored height" in full.log()
        heights = range(restored + 1, tip + 1)
        assert block_hashes(full, heights) == block_hashes(validators[0], heights)
        app_hash = [n.rpc("header", height=str(tip))["header"]["app_hash"] for n in (full, validators[0])]
        assert app_hash[0] == app_hash[1]
        account = [n.query(f"/accounts/{trader}") for n in (full, validators[0])]  # their latest heights
        assert account[0]["orders"] == account[1]["orders"] and len(account[0]["orders"]) == 1
        assert [p["market"] for p in account[0]["positions"]] == ["BTC-USD"]  # found through a:pmk:
        # cancelling by client id works on the restored node as on the others
        cancel = (
            "tx", "order", "cancel", "--home", str(net.nodes[0].home), "--node", full.chain.rpc_url,
            "--from", "account0", "--market", "BTC-USD", "--client-id", "42", "--broadcast-mode", "commit",
        )  # fmt: skip
        height = int(json.loads(run_cli(*cancel).stdout)["height"])
        full.wait_height(height + 2, timeout=30)  # and it follows the chain
        after = [n.rpc("header", height=str(height + 1))["header"]["app_hash"] for n in (full, validators[0])]
        assert after[0] == after[1]
        assert full.query(f"/accounts/{trader}")["orders"] == []
    finally:
        for node in nodes:
            if node.alive():
                node.stop()


def test_misbehaving_peers_are_dropped_while_blocks_continue(four: tuple[Network, list[NodeProcess]]) -> None:
    net, nodes = four
    start = nodes[0].wait_height(3)
    port = net.nodes[0].plan.p2p_port
    for payload in (b"\x00" * 64, bytes(range(256)) * 40, b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(payload)
            sock.settimeout(10)
            try:
                while sock.recv(4096):
                    pass  # the node hangs up on garbage
            except (TimeoutError, ConnectionResetError):
                pass
    nodes[0].wait_height(start + 3)
    assert int(nodes[0].rpc("net_info")["n_peers"]) == 3
