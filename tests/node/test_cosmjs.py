"""CosmJS, as a client author uses it, against a real `derivd start`: `@cosmjs/tendermint-rpc`
0.39's `connectComet` must pick its CometBFT 0.38 client, and `blockchain`, `txSearch`,
`blockResults` (with finalize_block_events), `subscribeNewBlock` and `subscribeTx` must work
unchanged (tests/cosmjs/check.mjs; `make` installs its packages from the lock file)."""

from __future__ import annotations

import base64
import json
import subprocess
import time
from pathlib import Path

import pytest

from execution.tx import Transfer, build_tx
from node.config import load_config, write_config
from node.keystore import KeyStore
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from tests.node.e2e import NodeProcess, make_chain

CHECK = Path(__file__).resolve().parent.parent / "cosmjs" / "check.mjs"


@pytest.mark.parametrize("listener", ["rpc", "websocket_laddr"])
def test_cosmjs_comet38_client(tmp_path: Path, listener: str) -> None:
    """On the RPC port and on the second `/websocket` listener (`node.ws_server`): CosmJS sends
    every call over the WebSocket."""
    chain = make_chain(tmp_path, {"alice": 10**12})
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    overrides = {
        "oracle.enabled": True,
        "oracle.source": "file",
        "oracle.file": str(prices),
        "rpc.websocket_laddr": "tcp://127.0.0.1:0",
    }
    write_config(load_config(chain.home).with_overrides(**overrides))  # oracle prices: block events
    node = NodeProcess(chain).start()
    try:
        node.wait_height(2)
        alice = KeyStore(chain.home).private_key("alice")
        bob = Address.parse(str(PrivateKey.from_seed(sha256(b"bob")).address))
        tx = build_tx(alice, "e2e-chain", time.time_ns() // 1_000_000, [Transfer(bob, 77)])
        port = chain.rpc_port if listener == "rpc" else chain.websocket_port
        done = subprocess.run(
            [
                "node",
                str(CHECK),
                f"ws://127.0.0.1:{port}",
                base64.b64encode(tx).decode(),
                f"transfer.recipient='{bob}'",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        seen = json.loads(done.stdout)
    finally:
        node.stop()
    assert seen["node_version"] == "0.38.0"
    assert seen["block_metas"] >= 1 and seen["blockchain_last_height"] >= 2
    assert seen["tx_event_code"] == 0 and seen["tx_event_events"] == ["tx", "transfer"]
    assert seen["new_block_heights"][1] == seen["new_block_heights"][0] + 1
    assert seen["tx_search_total"] == 1 and seen["tx_search_first_hash"] == sha256(tx).hex().upper()
    assert seen["block_results_txs"] >= 1
    assert "oracle_price" in seen["finalize_block_event_types"]
