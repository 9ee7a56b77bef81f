"""`kill -9` under load, repeatedly: the restarted node resumes at its last committed height with
the same block hashes, and the balances equal genesis plus every committed transfer."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx

from execution.positions.margin import FEE_COLLECTOR
from execution.tx import Transfer, build_tx
from node.keystore import KeyStore
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from tests.node.e2e import NodeProcess, make_chain, wait_for

FUNDS = {"alice": 10**12, "bob": 10**12}
RECIPIENTS = [Address.parse(str(PrivateKey.from_seed(sha256(b"r%d" % i)).address)) for i in range(5)]


class Load:
    """Signed transfers sent continuously through RPC until stopped; failures are expected
    while the node is down."""

    def __init__(self, node: NodeProcess, keys: list[PrivateKey]) -> None:
        self.node = node
        self.keys = keys
        self.stop = threading.Event()
        self.accepted = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        nonce = time.time_ns() // 1_000_000
        i = 0
        while not self.stop.is_set():
            i += 1
            nonce += 1
            key = self.keys[i % len(self.keys)]
            tx = build_tx(key, "e2e-chain", nonce, [Transfer(RECIPIENTS[i % len(RECIPIENTS)], 1000 + i)])
            try:
                if self.node.broadcast(tx)["code"] == 0:
                    self.accepted += 1
            except (httpx.HTTPError, OSError, ValueError):
                self.stop.wait(0.05)


COLLECTOR = str(FEE_COLLECTOR)


def committed_balances(node: NodeProcess, genesis: dict[str, int], height: int) -> dict[str, int]:
    """Genesis balances plus the transfer events of every block up to `height`, each tx's fee (its
    `tx` event) moved to the fee collector."""
    balances = dict(genesis)
    for h in range(1, height + 1):
        for result in node.rpc("block_results", height=str(h))["txs_results"]:
            for event in result["events"]:
                attrs = {a["key"]: a["value"] for a in event["attributes"]}
                if event["type"] == "tx":
                    balances[attrs["sender"]] = balances.get(attrs["sender"], 0) - int(attrs["fee"])
                    balances[COLLECTOR] = balances.get(COLLECTOR, 0) + int(attrs["fee"])
                if event["type"] != "transfer":
                    continue
                amount = int(attrs["amount"])
                balances[attrs["sender"]] = balances.get(attrs["sender"], 0) - amount
                balances[attrs["recipient"]] = balances.get(attrs["recipient"], 0) + amount
    return balances


def test_kill9_under_load_resumes_with_the_same_history(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, FUNDS)
    store = KeyStore(chain.home)
    keys = [store.private_key(name) for name in FUNDS]
    node = NodeProcess(chain).start()
    load = Load(node, keys)
    seen: dict[int, str] = {}
    crash_moments = random.Random(7)
    try:
        for cycle in range(4):
            target = node.height() + 3 + cycle
            node.wait_height(target)
            for h in range(max(seen, default=0) + 1, node.height() + 1):
                seen[h] = node.rpc("block", height=str(h))["block_id"]["hash"]
            # Not a synchronisation: this picks where in the ~150 ms block cycle the crash lands.
            time.sleep(crash_moments.uniform(0, 0.2))
            node.kill9()
            node.start()
            resumed = node.height()
            assert resumed >= max(seen), "the restarted node lost committed blocks"
            node.wait_height(resumed + 2)
    finally:
        load.stop.set()
        load.thread.join(10)
    assert load.accepted > 0
    for h, block_hash in seen.items():
        assert node.rpc("block", height=str(h))["block_id"]["hash"] == block_hash, f"block {h} changed"
    # With the load stopped and the mempool drained, no more transfers happen.
    wait_for(
        "the mempool to drain", lambda: True if node.rpc("num_unconfirmed_txs")["n_txs"] == "0" else None
    )
    latest = node.wait_height(node.height() + 1)
    genesis = {chain.accounts[name]: amount for name, amount in FUNDS.items()}
    expected = committed_balances(node, genesis, latest)
    assert any(address not in genesis for address in expected), "no transfer was ever committed"
    actual = {address: node.balance(address) for address in expected}
    assert actual == expected
    assert sum(actual.values()) == sum(FUNDS.values()) == int(node.query("/supply")["total"])
    node.stop()
