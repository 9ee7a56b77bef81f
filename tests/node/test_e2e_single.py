"""End to end with a real `derivd start` on loopback: blocks, RPC shapes, transfers through the
CLI and RPC, bad transactions, metrics, clean shutdown, bad config and genesis."""

from __future__ import annotations

import base64
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import WebSocketConnection, open_websocket_url

from consensus.types import BlockID, PartSetHeader, Vote, VoteType
from consensus.validators import ValidatorSet
from execution.accounts import Account
from execution.positions.margin import FEE_COLLECTOR
from execution.tx import CancelAll, Transfer, Tx, build_tx, standard_fee
from node import jsonfmt
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.node import only_validator_is_us
from primitives.codec import encode
from primitives.hashing import MerkleProof, sha256
from primitives.ics23 import decode_proof, verify_membership
from primitives.keyfile import load_key_file
from primitives.keys import Address, PrivateKey
from primitives.timefmt import parse_rfc3339
from storage import schema
from storage.db import Database, WriteBatch
from storage.statetree import PROOF_SPEC
from tests.node.e2e import DERIVD, ChainHome, NodeProcess, RPCFailure, make_chain, run_cli, wait_for

ALICE_FUNDS = 1_000_000_000_000


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> ChainHome:
    return make_chain(tmp_path_factory.mktemp("single"), {"alice": ALICE_FUNDS, "carol": 5_000_000})


@pytest.fixture(scope="module")
def node(chain: ChainHome) -> Iterator[NodeProcess]:
    process = NodeProcess(chain).start()
    yield process
    process.stop()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_blocks_advance_and_status_has_cometbft_shape(node: NodeProcess) -> None:
    first = node.wait_height(2)
    node.wait_height(first + 2)
    status = node.status()
    assert status["node_info"]["network"] == "e2e-chain"
    assert status["sync_info"]["catching_up"] is False
    assert len(status["sync_info"]["latest_block_hash"]) == 64
    assert status["validator_info"]["voting_power"] == "10"
    assert "block sync skipped: this node is the only validator" in node.log()  # CometBFT's rule


def test_only_the_sole_validator_skips_block_sync() -> None:
    us, other = b"\x01" * 32, b"\x02" * 32  # public keys
    mine = Address.from_public_key(us).raw
    assert only_validator_is_us(ValidatorSet.genesis([(us, 10)]), mine)
    assert not only_validator_is_us(ValidatorSet.genesis([(other, 10)]), mine)
    assert not only_validator_is_us(ValidatorSet.genesis([(us, 10), (other, 10)]), mine)


def test_block_commit_validators_and_uri_forms(node: NodeProcess, chain: ChainHome) -> None:
    node.wait_height(3)
    block = node.rpc("block", height="2")
    header = block["block"]["header"]
    assert header["height"] == "2" and header["chain_id"] == "e2e-chain"
    assert block["block"]["last_commit"]["height"] == "1"
    assert (
        block["block_id"]["hash"] == node.rpc("block", height="3")["block"]["header"]["last_block_id"]["hash"]
    )
    commit = node.rpc("commit", height="2")
    assert commit["canonical"] is True
    assert commit["signed_header"]["commit"]["block_id"]["hash"] == block["block_id"]["hash"]
    by_hash = node.rpc(
        "block_by_hash", hash=base64.b64encode(bytes.fromhex(block["block_id"]["hash"])).decode()
    )
    assert by_hash["block"]["header"]["height"] == "2"
    validators = node.rpc("validators")
    assert validators["total"] == "1" and validators["validators"][0]["voting_power"] == "10"
    uri = httpx.get(f"{chain.rpc_url}/block?height=2", timeout=10).json()
    assert uri["result"]["block_id"] == block["block_id"]
    assert httpx.get(f"{chain.rpc_url}/health", timeout=10).json()["result"] == {}
    genesis = node.rpc("genesis")["genesis"]
    assert genesis["chain_id"] == "e2e-chain"


def test_blockchain_header_by_hash_genesis_chunks_and_params(node: NodeProcess, chain: ChainHome) -> None:
    node.wait_height(22)
    full = node.rpc("blockchain", minHeight="1")
    latest = int(full["last_height"])
    heights = [int(meta["header"]["height"]) for meta in full["block_metas"]]
    assert heights == list(range(latest, latest - 20, -1))  # 20 at most, the highest
    meta = node.rpc("blockchain", minHeight="2", maxHeight="3")["block_metas"]
    assert [m["header"]["height"] for m in meta] == ["3", "2"]
    block = node.rpc("block", height="2")
    assert meta[1]["block_id"] == block["block_id"] and meta[1]["num_txs"] == "0"
    assert int(meta[1]["block_size"]) > 0
    with pytest.raises(RPCFailure, match="min height 5 can't be greater than max height 3"):
        node.rpc("blockchain", minHeight="5", maxHeight="3")
    by_hash = node.rpc("header_by_hash", hash="0x" + block["block_id"]["hash"])
    assert by_hash["header"] == block["block"]["header"]
    assert node.rpc("header_by_hash", hash="0x" + "00" * 32) == {"header": None}
    chunk = node.rpc("genesis_chunked", chunk="0")
    assert (
        chunk["total"] == "1"
        and json.loads(base64.b64decode(chunk["data"])) == node.rpc("genesis")["genesis"]
    )
    with pytest.raises(RPCFailure, match="there are 1 chunks, 1 is invalid"):
        node.rpc("genesis_chunked", chunk="1")
    params = node.rpc("consensus_params", height="2")
    assert params["block_height"] == "2" and params["consensus_params"]["validator"]["pub_key_types"] == [
        "ed25519"
    ]
    with pytest.raises(RPCFailure, match="must be less than or equal"):
        node.rpc("consensus_params", height=str(10**9))
    assert node.status()["node_info"]["version"].startswith("0.38.")  # CosmJS picks its 0.38 client
    assert node.rpc("abci_info")["response"]["version"] == run_cli("version").stdout.strip()


def test_consensus_state_has_cometbft_shape(node: NodeProcess, chain: ChainHome) -> None:
    node.wait_height(3)
    state = node.rpc("consensus_state")["round_state"]
    height, round_, step = (int(x) for x in state["height/round/step"].split("/"))
    assert height > 2 and round_ >= 0 and 1 <= step <= 8
    assert state["start_time"].endswith("Z")
    validator = node.status()["validator_info"]["address"]
    assert state["proposer"] == {"address": validator, "index": 0}
    for entry in state["height_vote_set"]:
        for kind in ("prevotes", "precommits"):
            assert len(entry[kind]) == 1
            voted = entry[kind][0] != "nil-Vote"
            shape = (
                rf"Vote\{{0:{validator[:12]} {height}/{entry['round']:02d}/[12]\((Prevote|Precommit)\) .+Z\}}"
            )
            assert not voted or re.fullmatch(shape, entry[kind][0])
            assert entry[f"{kind}_bit_array"] == ("BA{1:x} 10/10 = 1.00" if voted else "BA{1:_} 0/10 = 0.00")


def test_check_tx_answers_without_admitting(node: NodeProcess, chain: ChainHome) -> None:
    carol = KeyStore(chain.home).private_key("alice")  # carol's balance is asserted further on
    frank = Address.parse(str(PrivateKey.from_seed(sha256(b"frank")).address))
    tx = build_tx(carol, "e2e-chain", now_ms(), [Transfer(frank, 7)])
    encoded = base64.b64encode(tx).decode()
    checked = node.rpc("check_tx", tx=encoded)
    assert checked["code"] == 0 and checked["codespace"] == "" and checked["gas_wanted"] == "0"
    assert node.rpc("check_tx", tx=encoded)["code"] == 0  # the dry run did not take its nonce
    assert encoded not in (node.rpc("unconfirmed_txs")["txs"] or [])  # nor entered the mempool
    assert node.broadcast(tx)["code"] == 0
    too_much = node.rpc(
        "check_tx",
        tx=base64.b64encode(build_tx(carol, "e2e-chain", now_ms() + 5, [Transfer(frank, 10**15)])).decode(),
    )
    assert too_much["code"] == 4 and "insufficient funds" in too_much["log"]


def test_rpc_errors(node: NodeProcess, chain: ChainHome) -> None:
    with pytest.raises(RPCFailure) as unknown:
        node.rpc("no_such_method")
    assert unknown.value.error["code"] == -32601
    with pytest.raises(RPCFailure) as bad:
        node.rpc("block", height="not-a-number")
    assert bad.value.error["code"] == -32602
    with pytest.raises(RPCFailure) as future:
        node.rpc("block", height=str(10**9))
    assert "must be less than or equal" in future.value.error["data"]
    response = httpx.post(chain.rpc_url, content=b"{not json", timeout=10)
    assert response.json()["error"]["code"] == -32700
    batch = httpx.post(
        chain.rpc_url,
        json=[{"jsonrpc": "2.0", "id": i, "method": "health"} for i in range(3)],
        timeout=10,
    ).json()
    assert [r["id"] for r in batch] == [0, 1, 2]


def test_transfer_through_cli_shows_in_query(node: NodeProcess, chain: ChainHome) -> None:
    bob = str(PrivateKey.from_seed(sha256(b"bob")).address)
    result = run_cli(
        "tx", "transfer", "--home", str(chain.home), "--node", chain.rpc_url,
        "--from", "alice", "--to", bob, "--amount", "2500000",
    )  # fmt: skip
    out = json.loads(result.stdout)
    assert out["tx_result"]["code"] == 0
    assert int(out["height"]) > 0
    shown = json.loads(run_cli("query", "account", bob, "--node", chain.rpc_url).stdout)
    assert {k: shown[k] for k in ("address", "balance", "nonces")} == {
        "address": bob,
        "balance": "2500000",
        "nonces": [],
    }
    assert shown["positions"] == [] and shown["orders"] == [] and shown["free_collateral"] == "2500000"
    tx = node.rpc("tx", hash="0x" + out["hash"])
    assert tx["height"] == out["height"] and "proof" not in tx
    proven = node.rpc("tx", hash="0x" + out["hash"], prove=True)
    header = node.rpc("block", height=tx["height"])["block"]["header"]
    proof = proven["proof"]
    assert proof["root_hash"] == header["data_hash"] and proof["data"] == tx["tx"]
    inclusion = MerkleProof(
        int(proof["proof"]["total"]),
        int(proof["proof"]["index"]),
        tuple(base64.b64decode(a) for a in proof["proof"]["aunts"]),
    )
    assert inclusion.index == tx["index"]
    assert inclusion.verify(bytes.fromhex(header["data_hash"]), base64.b64decode(tx["tx"]))
    assert not inclusion.verify(bytes.fromhex(header["data_hash"]), base64.b64decode(tx["tx"]) + b"!")
    assert any(e["type"] == "transfer" for e in tx["tx_result"]["events"])


def test_a_key_query_proof_verifies_against_the_next_header(node: NodeProcess, chain: ChainHome) -> None:
    """`abci_query /key` with prove over JSON-RPC: CometBFT's proofOps shape, and an ICS23 proof
    that checks against the app hash in the header of the block after the queried height."""
    key = schema.account_key(Address.parse(chain.accounts["carol"]).raw)
    response = node.rpc("abci_query", path="/key", data="0x" + key.hex(), height="0", prove=True)["response"]
    assert response["code"] == 0, response["log"]
    height = int(response["height"])
    assert base64.b64decode(response["key"]) == key
    value = base64.b64decode(response["value"])
    (op,) = response["proofOps"]["ops"]
    assert op["type"] == "ics23:derivd-state" and base64.b64decode(op["key"]) == key
    node.wait_height(height + 1)
    header = node.rpc("block", height=str(height + 1))["block"]["header"]
    proof = decode_proof(base64.b64decode(op["data"]))
    verify_membership(PROOF_SPEC, bytes.fromhex(header["app_hash"]), proof, key, value)
    assert Account.decode(value).balance == 5_000_000


def test_query_account_prove_verifies_through_a_light_client(node: NodeProcess, chain: ChainHome) -> None:
    """`derivd query account --prove`: the record, proven against a header the CLI verified itself
    from the genesis validators, or from a trusted height and hash; a wrong hash is refused."""
    carol, nobody = chain.accounts["carol"], str(PrivateKey.from_seed(sha256(b"nobody")).address)
    base = ("query", "account", "--home", str(chain.home), "--node", chain.rpc_url, "--prove")
    node.wait_height(2)  # the genesis block, committed
    out = json.loads(run_cli(*base, carol).stdout)
    assert (out["address"], out["balance"], out["nonces"]) == (carol, "5000000", [])
    proof = out["proof"]
    assert proof["verified"] is True and proof["kind"] == "presence" and proof["trusted_from"] == "genesis"
    assert proof["trusted_height"] == "1" and proof["light_blocks_verified"][-1] == proof["header_height"]
    header = node.rpc("header", height=proof["header_height"])["header"]
    assert header["app_hash"] == proof["app_hash"]
    trusted = node.rpc("commit", height="2")["signed_header"]["commit"]["block_id"]["hash"]
    absent = json.loads(run_cli(*base, nobody, "--trusted-height", "2", "--trusted-hash", trusted).stdout)
    assert absent["balance"] == "0" and absent["proof"]["kind"] == "absence"
    assert absent["proof"]["trusted_from"] == "trusted hash" and absent["proof"]["trusted_height"] == "2"
    wrong = run_cli(*base, carol, "--trusted-height", "2", "--trusted-hash", "AB" * 32, check=False)
    assert wrong.returncode == 1
    assert f"not verified: block 2 has hash {trusted}, not the trusted {'AB' * 32}" in wrong.stderr


def _start_proxy(chain: ChainHome) -> tuple[subprocess.Popen[str], str, str]:
    """`derivd light` on port 0: the process, its URL and what it trusts ("block N, source")."""
    args = [
        DERIVD,
        "light",
        "--node",
        chain.rpc_url,
        "--home",
        str(chain.home),
        "--laddr",
        "tcp://127.0.0.1:0",
    ]
    proxy = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    assert proxy.stderr is not None
    lines = []
    for line in proxy.stderr:  # blocks until the proxy prints where it listens (or exits)
        lines.append(line)
        match = re.search(r"light proxy listening on \S*:(\d+) \(trusting (.*)\)", line)
        if match:
            return proxy, f"http://127.0.0.1:{match.group(1)}", match.group(2)
    proxy.wait(10)
    raise AssertionError("".join(lines))


def test_the_light_proxy_serves_verified_headers_and_proofs(node: NodeProcess, chain: ChainHome) -> None:
    """`derivd light` on port 0: verified headers and commits in CometBFT's forms, /key answers
    whose proofs it checked, and a refusal for what carries no proof; a second start trusts what
    the first verified."""
    node.wait_height(2)  # the genesis block, committed
    (chain.home / "data" / "light-trust.json").unlink(missing_ok=True)
    proxy, url, trusting = _start_proxy(chain)
    try:
        assert trusting == "block 1, genesis"

        def via(method: str, **params: object) -> dict[str, object]:
            body = {"jsonrpc": "2.0", "id": 7, "method": method, "params": params}
            reply: dict[str, object] = httpx.post(url, json=body, timeout=30).json()
            return reply

        height = node.wait_height(4)
        header = via("header", height=str(height))["result"]
        assert header == node.rpc("header", height=str(height))
        commit = via("commit", height="2")["result"]
        assert commit["signed_header"]["header"] == node.rpc("header", height="2")["header"]  # type: ignore[index]
        key = schema.account_key(Address.parse(chain.accounts["carol"]).raw)
        answer = via("abci_query", path="/key", data="0x" + key.hex(), height="0", prove=False)["result"]
        value = base64.b64decode(answer["response"]["value"])  # type: ignore[index]
        assert Account.decode(value).balance == 5_000_000
        path = "/accounts/" + chain.accounts["carol"]
        refused = via("abci_query", path=path)
        assert refused["error"] == {
            "code": -32603,
            "message": "not verified",
            "data": f"only /key queries carry a proof; {path!r} cannot be verified",
        }
        assert via("status")["result"]["sync_info"]["latest_block_height"]  # type: ignore[index]
        assert via("block", height="1")["error"]["data"] == "the light proxy does not serve 'block'"  # type: ignore[index]
    finally:
        proxy.terminate()
        proxy.wait(10)
    again, _, trusting = _start_proxy(chain)
    again.terminate()
    again.wait(10)
    assert re.fullmatch(r"block (\d+), trusted hash", trusting) and int(trusting.split()[1][:-1]) >= height


def test_transfer_through_rpc_and_bad_transactions(node: NodeProcess, chain: ChainHome) -> None:
    carol = KeyStore(chain.home).private_key("carol")
    dave = Address.parse(str(PrivateKey.from_seed(sha256(b"dave")).address))
    before = node.balance(chain.accounts["carol"])
    good = build_tx(carol, "e2e-chain", now_ms(), [Transfer(dave, 1_000_000)])
    assert node.broadcast(good)["code"] == 0
    wait_for("the transfer to commit", lambda: True if node.balance(str(dave)) == 1_000_000 else None)
    assert node.balance(chain.accounts["carol"]) == before - 1_000_000 - Tx.decode(good).fee

    height = node.height()
    garbage = node.broadcast(b"\x93\x01\x02")
    assert garbage["code"] == 1 and garbage["codespace"] == "derivd"
    other_chain = build_tx(carol, "another-chain", now_ms(), [Transfer(dave, 1)])
    assert node.broadcast(other_chain)["code"] == 2
    too_much = build_tx(carol, "e2e-chain", now_ms() + 1, [Transfer(dave, 10**12)])
    rejected = node.broadcast(too_much)
    assert rejected["code"] == 4 and "insufficient funds" in rejected["log"]
    with pytest.raises(RPCFailure, match="already exists in cache"):
        node.broadcast(good)
    same_nonce = build_tx(carol, "e2e-chain", Tx.decode(good).nonce, [Transfer(dave, 5)])
    replay = node.broadcast(same_nonce)
    assert replay["code"] == 3 and "nonce" in replay["log"]
    node.wait_height(height + 3)
    assert node.balance(str(dave)) == 1_000_000


def test_tx_search_and_block_search(node: NodeProcess, chain: ChainHome) -> None:
    """Transfers found by their events through tx_search (CometBFT's query language, paging and
    order), and blocks through block_search."""
    alice = KeyStore(chain.home).private_key("alice")
    grace = Address.parse(str(PrivateKey.from_seed(sha256(b"grace")).address))
    txs = [build_tx(alice, "e2e-chain", now_ms() + i, [Transfer(grace, 1_000 + i)]) for i in range(3)]
    for tx in txs:
        assert node.broadcast(tx)["code"] == 0
    wait_for("the transfers to commit", lambda: True if node.balance(str(grace)) == 3_003 else None)
    query = f"transfer.recipient = '{grace}'"
    found = node.rpc("tx_search", query=query)
    assert found["total_count"] == "3"
    assert sorted(t["hash"] for t in found["txs"]) == sorted(sha256(t).hex().upper() for t in txs)
    first = found["txs"][0]
    assert set(first) == {"hash", "height", "index", "tx_result", "tx"}
    assert base64.b64decode(first["tx"]) in txs
    amounts = [
        int(a["value"])
        for t in found["txs"]
        for e in t["tx_result"]["events"]
        for a in e["attributes"]
        if e["type"] == "transfer" and a["key"] == "amount"
    ]
    assert sorted(amounts) == [1_000, 1_001, 1_002]
    # a page of one, newest first; the same through the URI form with a quoted query
    ordered = [(int(t["height"]), t["index"]) for t in found["txs"]]
    assert ordered == sorted(ordered)  # ascending by default
    for number, expected in ((1, ordered[2]), (2, ordered[1]), (3, ordered[0])):
        page = node.rpc("tx_search", query=query, per_page=1, page=number, order_by="desc", prove=True)
        assert page["total_count"] == "3" and len(page["txs"]) == 1 and "proof" in page["txs"][0]
        assert (int(page["txs"][0]["height"]), page["txs"][0]["index"]) == expected
    uri = httpx.get(f"{chain.rpc_url}/tx_search", params={"query": f'"{query} AND transfer.amount > 1000"'})
    assert uri.json()["result"]["total_count"] == "2"
    height = int(first["height"])
    by_hash = node.rpc("tx_search", query=f"tx.hash = '{first['hash']}' AND tx.height = {height}")
    assert [t["hash"] for t in by_hash["txs"]] == [first["hash"]]
    with pytest.raises(RPCFailure, match="page should be within \\[1, 1\\] range, given 2"):
        node.rpc("tx_search", query="transfer.recipient = 'nobody'", page=2)
    with pytest.raises(RPCFailure, match="expected AND at offset"):
        node.rpc("tx_search", query=f"{query} OR tx.height > 1")

    blocks = node.rpc("block_search", query=f"block.height >= {height} AND block.height <= {height + 1}")
    assert blocks["total_count"] == "2"
    assert [b["block"]["header"]["height"] for b in blocks["blocks"]] == [str(height), str(height + 1)]
    assert set(blocks["blocks"][0]) == {"block_id", "block"}


async def _next(ws: WebSocketConnection) -> dict[str, Any]:
    with trio.fail_after(30):
        message = json.loads(await ws.get_message())
    assert isinstance(message, dict)
    return message


async def _call(ws: WebSocketConnection, request_id: int, method: str, **params: Any) -> dict[str, Any]:
    """Send a request and read up to its reply (events before it are skipped)."""
    await ws.send_message(
        json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
    )
    while True:
        message = await _next(ws)
        if message["id"] == request_id and "query" not in message.get("result", {}):
            return message


async def test_websocket_subscriptions(node: NodeProcess, chain: ChainHome) -> None:
    """CometBFT's /websocket: subscribe to NewBlock, to one recipient's Tx events and to round
    steps; broadcast over the socket; the limits and errors of subscribe and unsubscribe."""
    url = chain.rpc_url.replace("http://", "ws://") + "/websocket"
    alice = KeyStore(chain.home).private_key("alice")
    heidi = Address.parse(str(PrivateKey.from_seed(sha256(b"heidi")).address))
    async with open_websocket_url(url) as ws:
        assert (await _call(ws, 1, "subscribe", query="tm.event = 'NewBlock'"))["result"] == {}
        tx_query = f"tm.event = 'Tx' AND transfer.recipient = '{heidi}'"
        assert (await _call(ws, 2, "subscribe", query=tx_query))["result"] == {}
        tx = build_tx(alice, "e2e-chain", now_ms(), [Transfer(heidi, 4_242)])
        reply = await _call(ws, 3, "broadcast_tx_sync", tx=base64.b64encode(tx).decode())
        assert reply["result"]["code"] == 0 and reply["result"]["hash"] == sha256(tx).hex().upper()
        blocks, tx_event = [], None
        while tx_event is None or len(blocks) < 2:
            message = await _next(ws)
            result = message["result"]
            if message["id"] == 1:
                assert result["query"] == "tm.event = 'NewBlock'"
                assert result["data"]["type"] == "tendermint/event/NewBlock"
                value = result["data"]["value"]
                assert set(value) == {"block", "block_id", "result_finalize_block"}
                assert result["events"]["tm.event"] == ["NewBlock"]
                blocks.append(int(value["block"]["header"]["height"]))
            else:
                assert message["id"] == 2 and result["query"] == tx_query
                assert result["data"]["type"] == "tendermint/event/Tx"
                tx_result = result["data"]["value"]["TxResult"]
                assert base64.b64decode(tx_result["tx"]) == tx and tx_result["result"]["code"] == 0
                assert result["events"]["tx.hash"] == [sha256(tx).hex().upper()]
                assert result["events"]["transfer.amount"] == ["4242"]
                tx_event = tx_result
        assert blocks == sorted(blocks) and blocks[1] == blocks[0] + 1

        error = await _call(ws, 4, "subscribe", query="tm.event = 'NewBlock'")
        assert error["error"]["data"] == "already subscribed"
        error = await _call(ws, 5, "subscribe", query="tm.event = ")
        assert "failed to parse query" in error["error"]["data"]
        for n in range(3):
            assert "result" in await _call(
                ws, 10 + n, "subscribe", query=f"tm.event = 'NewRoundStep' AND x.y = {n}"
            )
        error = await _call(ws, 20, "subscribe", query="tm.event = 'NewRound'")
        assert error["error"]["data"] == "max_subscriptions_per_client 5 reached"
        assert "result" in await _call(ws, 21, "unsubscribe", query="tm.event = 'NewBlock'")
        error = await _call(ws, 22, "unsubscribe", query="tm.event = 'NewBlock'")
        assert error["error"]["data"] == "subscription not found"
        assert "result" in await _call(ws, 23, "unsubscribe_all")
        for n in range(3):  # gone: subscribing again is no duplicate
            assert "result" in await _call(
                ws, 30 + n, "subscribe", query=f"tm.event = 'NewRoundStep' AND x.y = {n}"
            )
        assert "result" in await _call(ws, 33, "unsubscribe_all")
        assert "result" in await _call(ws, 24, "subscribe", query="tm.event = 'NewRound'")
        new_round = await _next(ws)
        assert new_round["id"] == 24 and new_round["result"]["data"]["type"] == "tendermint/event/NewRound"
        value = new_round["result"]["data"]["value"]
        assert value["step"] == "RoundStepNewRound" and set(value["proposer"]) == {"address", "index"}
        assert "result" in await _call(ws, 27, "unsubscribe_all")
        assert "result" in await _call(ws, 28, "subscribe", query="tm.event = 'Vote'")
        votes = [await _next(ws) for _ in range(4)]  # the validator's prevote and precommit, twice
        shown = [v["result"]["data"]["value"]["Vote"] for v in votes]
        assert all(v["result"]["data"]["type"] == "tendermint/event/Vote" for v in votes)
        assert {v["type"] for v in shown} == {1, 2} and all(v["validator_index"] == 0 for v in shown)
        assert len({(v["height"], v["type"]) for v in shown}) == 4  # each vote once
        status = await _call(ws, 25, "status")
        assert int(status["result"]["sync_info"]["latest_block_height"]) >= blocks[1]
        unknown = await _call(ws, 26, "no_such_method")
        assert unknown["error"]["code"] == -32601


def test_spam_is_paid_for_and_a_key_without_funds_gets_nothing_in(
    node: NodeProcess, chain: ChainHome
) -> None:
    """Issue 15's spam case on a real node: a fresh key's 64-action txs are refused at admission
    (before, they were all committed with code 0 and left a nonce record each); a funded spammer
    pays the schedule's price for every action, to the fee collector."""
    nobody = PrivateKey.from_seed(sha256(b"a spammer without funds"))
    spam = [build_tx(nobody, "e2e-chain", now_ms() + i, [CancelAll(0)] * 64) for i in range(5)]
    for tx in spam:
        refused = node.broadcast(tx)
        assert refused["code"] == 7 and "balance 0 cannot pay the fee 640" in refused["log"], refused
    alice = KeyStore(chain.home).private_key("alice")
    paid_before = node.balance(str(alice.address)), node.balance(str(FEE_COLLECTOR))
    nonce = now_ms() + 1_000
    funded = [build_tx(alice, "e2e-chain", nonce + i, [CancelAll(0)] * 64) for i in range(20)]
    assert [node.broadcast(tx)["code"] for tx in funded] == [0] * 20
    cost = 20 * standard_fee([CancelAll(0)] * 64)
    wait_for(
        "the spam to commit",
        lambda: True if node.balance(str(alice.address)) == paid_before[0] - cost else None,
    )
    assert node.balance(str(FEE_COLLECTOR)) == paid_before[1] + cost
    assert node.query(f"/accounts/{nobody.address}")["nonces"] == []  # nothing was written for it


def test_a_batch_of_broadcasts_admits_each_tx_on_its_own_merits(node: NodeProcess, chain: ChainHome) -> None:
    carol = KeyStore(chain.home).private_key("carol")
    erin = Address.parse(str(PrivateKey.from_seed(sha256(b"erin")).address))
    nonce = now_ms() + 100
    good = [build_tx(carol, "e2e-chain", nonce + i, [Transfer(erin, 1_000)]) for i in range(3)]
    signed = Tx.decode(good[2])
    forged = Tx(signed.signer, signed.nonce + 7, signed.actions, signed.signature).encode()
    txs = [good[0], b"\x93\x01\x02", good[1], forged, good[2]]
    calls = [
        {
            "jsonrpc": "2.0",
            "id": i,
            "method": "broadcast_tx_sync",
            "params": {"tx": base64.b64encode(tx).decode()},
        }
        for i, tx in enumerate(txs)
    ]
    calls.append({"jsonrpc": "2.0", "id": 9, "method": "broadcast_tx_sync", "params": {"tx": "not base64!"}})
    answers = httpx.post(chain.rpc_url, json=calls, timeout=10).json()
    assert [a["id"] for a in answers] == [0, 1, 2, 3, 4, 9]
    assert [a["result"]["code"] for a in answers[:5]] == [0, 1, 0, 2, 0], "malformed 1, bad signature 2"
    assert answers[5]["error"]["code"] == -32602
    wait_for("the batch to commit", lambda: True if node.balance(str(erin)) == 3_000 else None)


def test_metrics_are_exported(node: NodeProcess, chain: ChainHome) -> None:
    node.wait_height(2)
    text = httpx.get(f"http://127.0.0.1:{chain.metrics_port}/metrics", timeout=10).text
    for name in (
        "cometbft_consensus_height",
        "cometbft_consensus_num_txs",
        "cometbft_consensus_total_txs",
        "cometbft_consensus_block_interval_seconds_bucket",
        "cometbft_mempool_size",
        "cometbft_mempool_failed_txs",
        "cometbft_mempool_recheck_times",
    ):
        assert f'{name}{{chain_id="e2e-chain"' in text, name
    # CometBFT's counter names, without the `_total` prometheus_client would add
    for name in ("failed_txs", "rejected_txs", "evicted_txs", "recheck_times"):
        assert (
            f"# TYPE cometbft_mempool_{name} counter" in text and f"cometbft_mempool_{name}_total" not in text
        )
    families = {family.name: family for family in text_string_to_metric_families(text)}  # it parses
    assert families["cometbft_consensus_block_interval_seconds"].type == "histogram"
    assert families["cometbft_rpc_stream_delivery_seconds"].type == "histogram"

    def value(name: str, **labels: str) -> float:
        [sample] = [s for s in families[name].samples if labels.items() <= s.labels.items()]
        return sample.value

    # the one validator signs every commit: nobody missing, its last signed height follows the chain
    assert value("cometbft_consensus_missing_validators") == 0
    assert value("cometbft_consensus_byzantine_validators") == 0
    assert value("cometbft_consensus_validator_last_signed_height") >= 1
    assert value("cometbft_consensus_validator_missed_blocks") == 0
    assert value("cometbft_consensus_validator_power") > 0
    assert value("process_resident_memory_bytes") > 0 and "\nprocess_cpu_seconds_total " in text
    assert value("derivd_oracle_price_age_blocks", market="BTC-USD") >= 0  # no feeder here: it ages
    assert "# TYPE derivd_orders_placed_total counter" in text and "# TYPE derivd_fills_total counter" in text
    # every finalize_block timed (ms), one observation per block executed since start
    processing = families["cometbft_state_block_processing_time"]
    assert processing.type == "histogram"
    timing = {
        s.name.rsplit("_", 1)[1]: s.value for s in processing.samples if s.name.endswith(("_count", "_sum"))
    }
    assert timing["count"] >= 2 and 0 < timing["sum"] < 60_000 * timing["count"]
    assert value("derivd_open_interest", market="BTC-USD") >= 0
    assert value("derivd_liquidation_queue_size") == 0
    # the default genesis's option series: marks, deltas, and the implied vols (aging: no feeder here)
    marks = [s for s in families["derivd_option_mark_price"].samples if s.labels["market"].startswith("BTC-")]
    assert len(marks) == 4 and all(s.value >= 1 for s in marks)
    deltas = [(s.labels["market"][-1], s.value) for s in families["derivd_option_delta"].samples]
    assert len(deltas) == 8 and all(0 < d < 1 if kind == "C" else -1 < d < 0 for kind, d in deltas)
    vols = {(s.labels["underlying"], s.value) for s in families["derivd_implied_vol_ppm"].samples}
    assert vols == {("BTC-USD", 600_000), ("ETH-USD", 700_000)}  # two expiries each
    assert all(s.value >= 0 for s in families["derivd_implied_vol_age_blocks"].samples)
    # the operator guide's table names every metric the node exports, and nothing it does not
    guide = (Path(__file__).resolve().parents[2] / "deploy" / "OPERATORS.md").read_text()
    table = guide[guide.index("### Metrics") :]
    documented = set(re.findall(r"`((?:cometbft|derivd)_[a-z0-9_]+)`", table[: table.index("\n## ")]))
    exported = {name for name in families if name.startswith(("cometbft_", "derivd_"))}
    exported |= {f"{name}_total" for name in exported if families[name].type == "counter"} & documented
    # no feeder, no bridge and no bridge watcher here
    feeder_only = {name for name in documented if name.startswith(("derivd_price_feeder_", "derivd_bridge_"))}
    assert sorted(exported - documented - {n[: -len("_total")] for n in documented}) == []
    assert sorted(documented - exported - feeder_only) == []


def test_dump_consensus_state_and_bad_evidence(node: NodeProcess, chain: ChainHome) -> None:
    dump = node.rpc("dump_consensus_state")
    state = dump["round_state"]
    assert int(state["height"]) >= 1 and state["step"] in range(1, 9)
    assert {"validators", "proposal", "locked_round", "valid_round", "votes", "last_validators"} <= set(state)
    assert len(state["validators"]["validators"]) == 1 and dump["peers"] == []
    with pytest.raises(RPCFailure, match="evidence: "):
        node.rpc("broadcast_evidence", evidence={"type": "tendermint/DuplicateVoteEvidence", "value": {}})
    with pytest.raises(RPCFailure, match="evidence: "):
        node.rpc("broadcast_evidence", evidence="0x00")


def test_broadcast_evidence_of_a_double_sign(tmp_path: Path) -> None:
    """Two conflicting precommits of the validator, sent as CometBFT's JSON, become evidence in a
    block and the application records it (the single validator's power goes to 0: the chain
    stops, so this node is its own)."""
    home = make_chain(tmp_path, {"alice": 10**9})
    process = NodeProcess(home).start()
    try:
        process.wait_height(3)
        key = load_key_file(home.home / "config" / "priv_validator_key.json")
        [validator] = process.rpc("validators", height="2")["validators"]
        block_time = process.rpc("block", height="2")["block"]["header"]["time"]

        def precommit(tag: bytes) -> Vote:
            block_id = BlockID(sha256(tag), PartSetHeader(1, sha256(tag + b"parts")))
            vote = Vote(VoteType.PRECOMMIT, 2, 0, block_id, parse_rfc3339(block_time), key.address.raw, 0)
            return vote.with_signature(key.sign(vote.sign_bytes("e2e-chain")))

        # the pair in its canonical order (by encoded block id), as the pool requires
        vote_a, vote_b = sorted(
            (precommit(b"a"), precommit(b"b")), key=lambda v: encode(v.block_id.to_fields())
        )
        power = validator["voting_power"]
        evidence: dict[str, Any] = {
            "type": "tendermint/DuplicateVoteEvidence",
            "value": {
                "vote_a": jsonfmt.vote(vote_a),
                "vote_b": jsonfmt.vote(vote_b),
                "TotalVotingPower": power,
                "ValidatorPower": power,
                "Timestamp": block_time,
            },
        }
        added = process.rpc("broadcast_evidence", evidence=evidence)
        assert len(added["hash"]) == 64
        recorded = wait_for("the evidence to be committed", lambda: process.query("/evidence") or None)
        assert recorded[0]["validator"] == key.address.raw.hex().upper() and recorded[0]["height"] == "2"
        value: dict[str, Any] = evidence["value"]
        bad_signature = jsonfmt.vote(precommit(b"c")) | {"signature": base64.b64encode(bytes(64)).decode()}
        forged = {**evidence, "value": {**value, "vote_b": bad_signature}}
        with pytest.raises(RPCFailure, match="failed to add evidence"):
            process.rpc("broadcast_evidence", evidence=forged)
    finally:
        process.stop()


def test_sigterm_stops_cleanly_and_restart_resumes(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, {"alice": 10**9})
    node = NodeProcess(chain).start()
    height = node.wait_height(3)
    hashes = {h: node.rpc("block", height=str(h))["block_id"]["hash"] for h in range(1, height + 1)}
    assert node.stop(signal.SIGTERM) == 0
    assert "node stopped" in node.log()
    node.start()
    assert node.height() >= height
    node.wait_height(height + 2)
    assert {h: node.rpc("block", height=str(h))["block_id"]["hash"] for h in hashes} == hashes
    assert node.stop(signal.SIGINT) == 0


def test_start_takes_a_log_level_flag(tmp_path: Path) -> None:
    """`derivd start --log_level` sets the top-level `log_level` key (it once failed with
    "unknown setting" whatever the level); a level that does not exist is named."""
    home = make_chain(tmp_path, {})
    # the price feeder logs each vote at debug level
    write_config(load_config(home.home).with_overrides(**{"oracle.enabled": True, "oracle.source": "sim"}))
    refused = run_cli("start", "--home", str(home.home), "--log_level", "loud", check=False)
    assert refused.returncode == 1
    assert 'log_level: must be "debug" or "info" or "warn" or "error", got "loud"' in refused.stderr
    process = NodeProcess(home).start("--log_level", "debug")
    try:
        wait_for("a debug line", lambda: True if "[debug" in process.log() else None)
    finally:
        process.stop()


def test_bad_genesis_and_config_name_the_file_and_field(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, {"alice": 10**9})
    genesis_path = chain.home / "config" / "genesis.json"
    doc = json.loads(genesis_path.read_text())
    doc["validators"][0]["power"] = "-5"
    genesis_path.write_text(json.dumps(doc))
    result = run_cli("start", "--home", str(chain.home), check=False)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(genesis_path) in lines[0] and "validators[0].power" in lines[0]

    doc["validators"][0]["power"] = "10"
    genesis_path.write_text(json.dumps(doc))
    config_path = chain.home / "config" / "config.toml"
    config_path.write_text(
        config_path.read_text().replace('timeout_propose = "1s"', 'timeout_propose = "soon"')
    )
    result = run_cli("start", "--home", str(chain.home), check=False)
    assert result.returncode != 0
    line = result.stderr.strip()
    assert str(config_path) in line and "timeout_propose" in line and "\n" not in line

    config_path.write_text(
        config_path.read_text().replace('timeout_propose = "soon"', 'timeout_propose = "1s"') + "\n"
    )
    write_config(load_config(chain.home).with_overrides(**{"statesync.enable": True}))
    result = run_cli("start", "--home", str(chain.home), check=False)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: state sync failed: [statesync] enable needs rpc_servers, trust_height and trust_hash"
    )


def test_export_starts_a_chain_that_continues_the_state(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, {"alice": 10**9})
    node = NodeProcess(chain).start()
    bob = str(PrivateKey.from_seed(sha256(b"bob")).address)
    run_cli(
        "tx", "transfer", "--home", str(chain.home), "--node", chain.rpc_url,
        "--from", "alice", "--to", bob, "--amount", "2500000",
    )  # fmt: skip
    locked = run_cli("export", "--home", str(chain.home), check=False)
    assert locked.returncode == 1 and "is in use by another process" in locked.stderr
    node.wait_height(4)
    headers = {h: node.rpc("header", height=str(h))["header"] for h in (2, 3)}
    assert node.stop() == 0
    past = json.loads(run_cli("export", "--home", str(chain.home), "--height", "2").stdout)
    assert past["initial_height"] == "3" and past["app_hash"] == headers[3]["app_hash"]  # H+1 names H
    assert past["genesis_time"] == headers[2]["time"]
    future = run_cli("export", "--home", str(chain.home), "--height", "1000000", check=False)
    assert future.returncode == 1 and "height 1000000 is not committed yet" in future.stderr
    out = tmp_path / "exported.json"
    result = run_cli("export", "--home", str(chain.home), "--chain-id", "e2e-next", "--output", str(out))
    height = int(re.findall(r"Exported height (\d+)", result.stderr)[0])
    doc = json.loads(out.read_text())
    assert (doc["chain_id"], doc["initial_height"]) == ("e2e-next", str(height + 1))
    assert run_cli("export", "--home", str(chain.home), "--chain-id", "e2e-next").stdout == out.read_text()
    # the new chain: same validator key, fresh data, the exported genesis
    run_cli("unsafe-reset-all", "--home", str(chain.home))
    genesis = chain.home / "config" / "genesis.json"
    tampered = json.loads(out.read_text())
    records = tampered["app_state"]["state"]["records"]
    records[0][1] = records[0][1] + "00"
    genesis.write_text(json.dumps(tampered))
    refused = run_cli("start", "--home", str(chain.home), check=False)
    assert refused.returncode == 1 and "the genesis is not the state it names" in refused.stderr
    genesis.write_text(out.read_text())
    node = NodeProcess(chain).start()
    node.wait_height(height + 2)
    assert node.status()["node_info"]["network"] == "e2e-next"
    assert node.balance(bob) == 2_500_000
    assert node.rpc("block", height=str(height + 1))["block"]["header"]["app_hash"] == doc["app_hash"]
    assert node.stop() == 0


def test_a_database_of_another_layout_is_refused(tmp_path: Path) -> None:
    chain = make_chain(tmp_path, {"alice": 10**9})
    old = Database(chain.home / "data" / "derivd.db")
    batch = WriteBatch()
    batch.put(b"a:meta", b"written by an older derivd")
    old.write(batch)
    old.close()
    result = run_cli("start", "--home", str(chain.home), check=False)
    assert result.returncode == 1
    assert "has layout 1 (no stamp); this derivd reads layout" in result.stderr
    assert "unsafe-reset-all" in result.stderr
