"""The RPC's hardened limits: a body over `[rpc] max_body_bytes` is refused while it streams in
(and by its Content-Length before), malformed JSON of any kind gets a JSON-RPC error, and a
replayed tx gets CometBFT's answers; the memory of a real node under oversized bodies."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from execution.tx import Transfer, build_tx
from node.config import load_config, write_config
from node.keystore import KeyStore
from node.node import start_server
from node.rpc import RPCEnv, make_app
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.node.e2e import ChainHome, NodeProcess, make_chain, wait_for
from tests.node.test_rpc_http import _env

CHUNK = b" " * 65536


@asynccontextmanager
async def _served(env: RPCEnv) -> AsyncIterator[tuple[str, int]]:
    """The RPC app served by hypercorn on 127.0.0.1, port 0, as the node serves it."""
    async with trio.open_nursery() as nursery:
        bound = await start_server(
            nursery,
            make_app(env),
            "tcp://127.0.0.1:0",
            0,
            setting="rpc.laddr",
            max_message_bytes=env.max_body_bytes,
        )
        host, _, port = bound.rpartition(":")
        yield host.removeprefix("http://"), int(port)
        nursery.cancel_scope.cancel()


async def _endless(sent: list[int]) -> AsyncIterator[bytes]:
    """A body that never ends; `sent[0]` counts the bytes handed to the client."""
    while True:
        sent[0] += len(CHUNK)
        yield CHUNK


def _too_large(response: httpx.Response) -> None:
    assert response.status_code == 413
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": -32600, "message": "Invalid Request", "data": "request body too large"},
    }


# -- the body limit -----------------------------------------------------------------------------


async def test_declared_length_over_the_limit_is_refused_before_the_body() -> None:
    """Content-Length above the limit: 413 at once, though not a byte of the body was sent, and
    the server closes the connection."""
    async with _served(_env(max_body_bytes=1000)) as (host, port):
        stream = await trio.open_tcp_stream(host, port)
        head = f"POST / HTTP/1.1\r\nhost: node\r\ncontent-length: {10**9}\r\n\r\n"
        await stream.send_all(head.encode())
        received = b""
        with trio.fail_after(5):  # the answer comes without the body, or never
            while chunk := await stream.receive_some(65536):
                received += chunk
        await stream.aclose()
    head_bytes, _, body = received.partition(b"\r\n\r\n")
    assert head_bytes.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in head_bytes.lower()
    assert json.loads(body)["error"]["data"] == "request body too large"


async def test_an_endless_body_is_cut_at_the_limit_and_the_connection_closed() -> None:
    """A chunked body that never ends: the server stops reading past the limit, answers 413 and
    closes; the client has pushed only what the socket buffers held."""
    sent = [0]
    async with _served(_env(max_body_bytes=100_000)) as (host, port), httpx.AsyncClient(timeout=10) as client:
        with trio.fail_after(10):  # an endless body read to its end never answers
            response = await client.post(f"http://{host}:{port}/", content=_endless(sent))
        _too_large(response)
        assert sent[0] < 64 * 2**20, sent[0]
        health = {"jsonrpc": "2.0", "id": 2, "method": "health"}
        assert (await client.post(f"http://{host}:{port}/", json=health)).json()["result"] == {}


async def test_the_refusal_goes_out_though_the_server_queue_is_full() -> None:
    """Hypercorn queues a few body chunks for the app and, once the response is complete, the
    disconnect behind them: the refusal must go on receiving (and dropping) what comes, or its
    last send and the connection hang. Here the response starts only once the client has pushed
    far more than the queue and the socket buffers hold, so only a server still receiving lets
    it through."""
    sent = [0]
    app = make_app(_env(max_body_bytes=100_000))

    async def held_back(scope: Any, receive: Any, send: Any) -> None:
        async def send_late(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                target = sent[0] + 64 * 2**20  # well past hypercorn's queue and loopback buffers
                with trio.fail_after(30):  # a deadline: a client that stops pushing fails the test
                    while sent[0] < target:  # polls the client in this same event loop, no timing
                        await trio.sleep(0.001)
            await send(message)

        await app(scope, receive, send_late)

    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, held_back, "tcp://127.0.0.1:0", 0, setting="rpc.laddr")
        async with httpx.AsyncClient(timeout=10) as client:
            with trio.fail_after(10):  # a refusal that stopped receiving never completes
                _too_large(await client.post(f"{bound}/", content=_endless(sent)))
        nursery.cancel_scope.cancel()


async def test_a_body_at_the_limit_is_served() -> None:
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "health"}).encode()
    padded = call + b" " * (1000 - len(call))
    env = _env(max_body_bytes=1000)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(env)), base_url="http://n") as c:
        assert (await c.post("/", content=padded)).json()["result"] == {}
        _too_large(await c.post("/", content=padded + b" "))


# -- malformed requests -------------------------------------------------------------------------

PARSE_ERROR = (500, -32700)
INVALID = (200, -32600)


def test_the_derivd_process_keeps_the_default_recursion_limit() -> None:
    """A dependency of the bridge's web3 (py_ecc) raises the recursion limit at import; with it
    raised, the deep-nesting bodies below overflow the C stack instead of raising RecursionError.
    The `derivd` command imports everything `node.cli` does: its limit must be a bare
    interpreter's."""
    probe = "import sys; import node.cli; print(sys.getrecursionlimit())"
    bare = subprocess.run(
        [sys.executable, "-c", "import sys; print(sys.getrecursionlimit())"],
        capture_output=True,
        text=True,
        check=True,
    )
    derivd = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert derivd.stdout == bare.stdout == "1000\n"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[" * 100_000 + b"]" * 100_000, PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": 1, "method": "health", "params": ' + b"[" * 50_000, PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": "\xff\xfe", "method": "health"}', PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": 1e999, "method": "health"}', PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": NaN, "method": "health"}', PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": ' + b"9" * 5000 + b', "method": "health"}', PARSE_ERROR),
        (b"{not json", PARSE_ERROR),
        (b'{"jsonrpc": "2.0", "id": {"a": [1]}, "method": "health"}', INVALID),
        (b'{"jsonrpc": "2.0", "id": 1, "method": 7}', INVALID),
    ],
)
async def test_malformed_json_gets_a_json_rpc_error(body: bytes, expected: tuple[int, int]) -> None:
    env = _env()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(env)), base_url="http://n") as c:
        response = await c.post("/", content=body)
    status, code = expected
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text
    assert response.json()["jsonrpc"] == "2.0"


async def test_a_batch_with_items_that_are_not_requests() -> None:
    """Each item that is not a request object gets its own Invalid Request, the others their
    results (JSON-RPC 2.0 batches)."""
    body = b'[1, "x", null, [], {"jsonrpc": "2.0", "id": 5, "method": "health"}]'
    env = _env()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(env)), base_url="http://n") as c:
        response = await c.post("/", content=body)
    assert response.status_code == 200
    replies = response.json()
    assert [r.get("error", {}).get("code") for r in replies] == [-32600] * 4 + [None]
    assert replies[4] == {"jsonrpc": "2.0", "id": 5, "result": {}}


async def test_a_lone_surrogate_is_echoed_escaped() -> None:
    """An id (or a method name, echoed in the error) with an escape that is no UTF-8 character
    comes back escaped, not as a plain-text 500."""
    body = b'{"jsonrpc": "2.0", "id": "\\ud800", "method": "no\\udfff"}'
    env = _env()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(env)), base_url="http://n") as c:
        response = await c.post("/", content=body)
    assert response.status_code == 200
    assert response.json() == {
        "jsonrpc": "2.0",
        "id": "\ud800",
        "error": {"code": -32601, "message": "Method not found", "data": "no\udfff"},
    }


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/block?height=" + "9" * 5000, 500, -32602),
        ("/block?height=1e999", 500, -32602),
        ("/tx?hash=%ff%fe", 500, -32602),
        ("/health?nested=" + "%5B" * 10_000, 500, -32602),
        ("/no_such_method", 404, -32601),
    ],
)
async def test_malformed_uri_calls_get_a_json_rpc_error(path: str, status: int, code: int) -> None:
    env = _env(blocks=SimpleNamespace(height=10, base=1))  # a chain of 10 blocks, none read
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(env)), base_url="http://n") as c:
        response = await c.get(path)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code), response.text


async def test_websocket_answers_malformed_json_and_stays_open() -> None:
    async with _served(_env()) as (host, port), open_websocket_url(f"ws://{host}:{port}/websocket") as ws:
        for text in ("[" * 100_000, '{"jsonrpc": "2.0", "id": 1e999, "method": "health"}'):
            await ws.send_message(text)
            with trio.fail_after(5):
                reply = json.loads(await ws.get_message())
            assert reply["error"]["code"] == -32700, reply
        await ws.send_message(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "health"}))
        with trio.fail_after(5):
            assert json.loads(await ws.get_message()) == {"jsonrpc": "2.0", "id": 3, "result": {}}


# -- a real node --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> ChainHome:
    made = make_chain(tmp_path_factory.mktemp("limits"), {"alice": 10_000_000})
    # no cache of seen txs: a committed tx sent again reaches the application, as after a restart
    write_config(load_config(made.home).with_overrides(**{"mempool.cache_size": 0}))
    return made


@pytest.fixture(scope="module")
def node(chain: ChainHome) -> Iterator[NodeProcess]:
    process = NodeProcess(chain).start()
    yield process
    process.stop()


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


BIG = 100 * 2**20


async def _big_post(url: str, declared: bool, answers: list[httpx.Response]) -> None:
    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG // len(CHUNK)):
            yield CHUNK

    headers = {"content-length": str(BIG)} if declared else {}
    async with httpx.AsyncClient(timeout=60) as client:
        answers.append(await client.post(url, content=body(), headers=headers))


def test_oversized_bodies_do_not_grow_the_node(node: NodeProcess) -> None:
    """Ten 100 MB bodies at once (five with their Content-Length, five chunked): each gets 413,
    the node's RSS grows by less than 20 MB, and it goes on answering."""
    pid = node.proc.pid if node.proc else 0
    node.status()
    before = _rss_kib(pid)
    answers: list[httpx.Response] = []

    async def all_at_once() -> None:
        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(_big_post, node.chain.rpc_url, i % 2 == 0, answers)

    started = time.monotonic()
    trio.run(all_at_once)
    elapsed = time.monotonic() - started
    after = _rss_kib(pid)
    assert [a.status_code for a in answers] == [413] * 10
    for answer in answers:
        _too_large(answer)
    assert after - before < 20 * 1024, f"RSS {before} -> {after} KiB in {elapsed:.1f}s"
    assert node.status()["node_info"]["network"] == "e2e-chain"


def test_a_replayed_tx_gets_cometbft_answers(node: NodeProcess, chain: ChainHome) -> None:
    """A tx already pending is refused by the mempool as CometBFT does (JSON-RPC -32603 "tx
    already exists in cache"); a committed one sent again (no cache here) gets the application's
    nonce code and log from every broadcast mode that waits for CheckTx."""
    alice = KeyStore(chain.home).private_key("alice")
    bob = PrivateKey.from_seed(sha256(b"bob")).address
    tx = build_tx(alice, "e2e-chain", time.time_ns() // 1_000_000, [Transfer(bob, 1_000)])
    encoded = base64.b64encode(tx).decode()
    call = {"jsonrpc": "2.0", "method": "broadcast_tx_sync", "params": {"tx": encoded}}
    twice = httpx.post(chain.rpc_url, json=[call | {"id": 1}, call | {"id": 2}], timeout=15).json()
    assert twice[0]["result"]["code"] == 0
    assert twice[1]["error"] == {
        "code": -32603,
        "message": "Internal error",
        "data": "tx already exists in cache",
    }
    wait_for("the transfer to commit", lambda: True if node.balance(str(bob)) == 1_000 else None)

    for mode in ("sync", "commit"):
        replay = httpx.post(
            chain.rpc_url, json=call | {"id": 3, "method": f"broadcast_tx_{mode}"}, timeout=15
        )
        assert replay.status_code == 200 and "error" not in replay.json(), replay.text
        result = replay.json()["result"]
        check = result["check_tx"] if mode == "commit" else result
        assert check["code"] == 3 and "nonce" in check["log"], check
    assert node.balance(str(bob)) == 1_000


async def test_a_websocket_message_over_max_body_bytes_closes_the_connection() -> None:
    """CometBFT reads a WebSocket message up to `max_body_bytes`; a larger one ends the connection
    (1009, message too big) instead of being buffered whole."""
    call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "health"})
    async with _served(_env(max_body_bytes=1000)) as (host, port):
        async with open_websocket_url(f"ws://{host}:{port}/websocket") as ws:
            await ws.send_message(call + " " * (1000 - len(call)))  # at the limit: served
            with trio.fail_after(5):
                assert json.loads(await ws.get_message())["result"] == {}
            await ws.send_message(call + " " * (1001 - len(call)))
            with trio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
        reason = closed.value.reason
        assert reason is not None and reason.code == 1009
