"""The OpenAPI document (`node.openapi`) against a real `derivd start`: it lists exactly the RPC's
methods and their parameters, and what every method answers validates against its schema."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest

from execution.tx import Transfer, build_tx
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.openapi import json_schema, result_schema
from node.rpc import METHODS
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.node.e2e import ChainHome, NodeProcess, make_chain, wait_for


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainHome]:
    tmp = tmp_path_factory.mktemp("openapi")
    home = make_chain(tmp, {"alice": 10**12})
    prices = tmp / "prices.json"
    prices.write_text(json.dumps({"BTC-USD": "65000", "ETH-USD": "3500"}))
    overrides = {"oracle.enabled": True, "oracle.source": "file", "oracle.file": str(prices)}
    write_config(load_config(home.home).with_overrides(**overrides))  # oracle prices: block events
    process = NodeProcess(home).start()
    process.wait_height(2)
    yield home
    process.stop()


def _get(chain: ChainHome, method: str, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{chain.rpc_url}/{method}", params=params, timeout=15).json()
    assert isinstance(response, dict)
    return response


def _samples(chain: ChainHome) -> dict[str, dict[str, str]]:
    """URI parameters that make each method answer with data (a committed transfer included)."""
    alice = KeyStore(chain.home).private_key("alice")
    to = PrivateKey.from_seed(sha256(b"openapi")).address

    def tx(amount: int) -> str:
        return (
            "0x"
            + build_tx(alice, "e2e-chain", time.time_ns() // 1_000_000 + amount, [Transfer(to, amount)]).hex()
        )

    committed = _get(chain, "broadcast_tx_commit", tx=tx(1))["result"]
    height = committed["height"]

    def with_block_events() -> str | None:
        latest = int(_get(chain, "status")["result"]["sync_info"]["latest_block_height"])
        for h in range(1, latest + 1):
            if _get(chain, "block_results", height=str(h))["result"]["finalize_block_events"]:
                return str(h)
        return None

    events_height = wait_for("a block with finalize-block events", with_block_events)
    block_hash = _get(chain, "block", height=height)["result"]["block_id"]["hash"]
    return {
        "health": {},
        "status": {},
        "net_info": {},
        "genesis": {},
        "genesis_chunked": {"chunk": "0"},
        "abci_info": {},
        "consensus_state": {},
        "dump_consensus_state": {},
        "block": {"height": height},
        "block_by_hash": {"hash": "0x" + block_hash},
        "blockchain": {},
        "header": {"height": height},
        "header_by_hash": {"hash": "0x" + block_hash},
        "commit": {"height": height},
        "block_results": {"height": events_height},
        "validators": {},
        "consensus_params": {},
        "check_tx": {"tx": tx(2)},
        "broadcast_tx_sync": {"tx": tx(3)},
        "broadcast_tx_async": {"tx": tx(4)},
        "broadcast_tx_commit": {"tx": tx(5)},
        "tx": {"hash": "0x" + committed["hash"], "prove": "true"},
        "tx_search": {"query": f"\"transfer.recipient = '{to}'\"", "prove": "true"},
        "block_search": {"query": f'"block.height >= {height}"'},
        "unconfirmed_txs": {},
        "num_unconfirmed_txs": {},
        "abci_query": {"path": '"/markets"'},
    }


def test_the_document_lists_the_rpc(chain: ChainHome) -> None:
    doc = httpx.get(f"{chain.rpc_url}/openapi.json", timeout=15).json()
    assert doc["openapi"].startswith("3.0")
    assert {path[1:] for path in doc["paths"] if path != "/"} == set(METHODS)
    for name, (_, params) in METHODS.items():
        assert [p["name"] for p in doc["paths"][f"/{name}"]["get"]["parameters"]] == list(params)
    body = doc["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(body["oneOf"][0]["properties"]["method"]["enum"]) == set(METHODS)
    for name in METHODS:
        jsonschema.Draft202012Validator.check_schema(result_schema(doc, name))


def test_every_method_answers_as_documented(chain: ChainHome) -> None:
    doc = httpx.get(f"{chain.rpc_url}/openapi.json", timeout=15).json()
    samples = _samples(chain)
    wait_for(
        "the tx_search sample to be indexed",
        lambda: _get(chain, "tx_search", **samples["tx_search"])["result"]["txs"] or None,
    )
    untested = set(METHODS) - set(samples) - {"broadcast_evidence"}
    assert not untested, f"give these methods a sample call: {sorted(untested)}"
    for name, params in samples.items():
        response = _get(chain, name, **params)
        assert "result" in response, (name, response)
        jsonschema.validate(response["result"], result_schema(doc, name))
    refused = _get(chain, "broadcast_evidence", evidence='"not evidence"')
    answers = doc["paths"]["/broadcast_evidence"]["get"]["responses"]["200"]["content"]
    error_schema = json_schema(answers["application/json"]["schema"])
    jsonschema.validate(refused, error_schema)
    assert refused["error"]["code"] == -32602


def test_a_wrong_answer_does_not_validate(chain: ChainHome) -> None:
    """The schemas say something: a height as a number, a hash in lower case or a missing field
    is refused."""
    doc = httpx.get(f"{chain.rpc_url}/openapi.json", timeout=15).json()
    status = _get(chain, "status")["result"]
    jsonschema.validate(status, result_schema(doc, "status"))
    for broken in (
        status | {"sync_info": status["sync_info"] | {"latest_block_height": 5}},
        status | {"sync_info": status["sync_info"] | {"latest_block_hash": "ab" * 32}},
        {key: value for key, value in status.items() if key != "validator_info"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, result_schema(doc, "status"))
