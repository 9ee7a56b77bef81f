"""The HTTP side of the RPC app (`node.rpc.make_app`) in process: CORS from config, the body
size limit, JSON-RPC batches and the cap on open connections."""

from __future__ import annotations

import json
from typing import Any, cast

import httpx
import trio

from node.rpc import ConnectionLimit, NodeInfo, RPCEnv, make_app

_UNUSED = cast(Any, None)  # stores and services `health` does not read


def _env(**overrides: Any) -> RPCEnv:
    info = NodeInfo(
        node_id="id", listen_addr="", network="chain", version="0.38.0", moniker="m", rpc_address=""
    )
    fields: dict[str, Any] = {
        "info": info,
        "genesis": {},
        "blocks": _UNUSED,
        "states": _UNUSED,
        "executor": _UNUSED,
        "consensus": _UNUSED,
        "mempool": _UNUSED,
        "app": _UNUSED,
        "bus": _UNUSED,
        "validator_pub_key": None,
    }
    return RPCEnv(**(fields | overrides))


def _client(env: RPCEnv) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(env)), base_url="http://node")


async def test_cors_follows_the_config() -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    async with _client(_env(cors_origins=("https://app.example",))) as client:
        allowed = await client.options("/", headers=preflight)
        assert allowed.status_code == 200
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert "POST" in allowed.headers["access-control-allow-methods"]
        other = await client.options("/", headers=preflight | {"Origin": "https://evil.example"})
        assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
        simple = await client.get("/health", headers={"Origin": "https://app.example"})
        assert simple.headers["access-control-allow-origin"] == "https://app.example"
    async with _client(_env(cors_origins=("*",))) as client:
        anyone = await client.get("/health", headers={"Origin": "https://any.example"})
        assert anyone.headers["access-control-allow-origin"] == "*"
    async with _client(_env()) as client:  # no origins configured: no CORS headers at all
        plain = await client.get("/health", headers={"Origin": "https://app.example"})
        assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


async def test_body_limit_and_batches() -> None:
    async with _client(_env(max_body_bytes=200, max_batch=2)) as client:
        call = {"jsonrpc": "2.0", "id": 1, "method": "health"}
        too_big = await client.post("/", content=json.dumps([call] * 10))
        assert too_big.status_code == 413 and too_big.json()["error"]["data"] == "request body too large"
        batch = await client.post("/", json=[call, call | {"id": 2}])
        assert [r["id"] for r in batch.json()] == [1, 2] and all(r["result"] == {} for r in batch.json())
        over = await client.post("/", json=[call] * 3)
        assert over.json()["error"]["data"] == "batch of 3 exceeds 2"


async def test_open_connections_are_capped() -> None:
    """With max_open_connections = 1, a second request while one is in progress gets 503; once
    the first is done, requests go through again."""
    release, entered = trio.Event(), trio.Event()
    env = _env(max_open_connections=1)
    make = make_app(env)

    async def held(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/hold":
            entered.set()
            await release.wait()
        await make(scope, receive, send)

    limited = ConnectionLimit(held, 1)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=limited), base_url="http://node"
    ) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.get, "/hold")
            await entered.wait()
            refused = await client.get("/health")
            assert refused.status_code == 503
            assert refused.json()["error"]["data"] == "too many open connections"
            release.set()
        assert (await client.get("/health")).status_code == 200


async def test_a_lone_surrogate_in_a_string_parameter_is_invalid_params() -> None:
    """Found by fuzzing (tests/fuzz, target rpc): `tx_search` with the query "\\udcff" (a JSON
    escape of a lone surrogate, which no UTF-8 text holds) made the query parser raise
    UnicodeEncodeError, answered as -32603 Internal error with a traceback in the log. A string
    parameter that is not text is invalid params, named."""
    env = _env(index=cast(Any, object()))  # the query is refused before the index is searched
    body = '{"jsonrpc": "2.0", "id": 7, "method": "tx_search", "params": {"query": "\\udcff"}}'
    async with _client(env) as client:
        reply = (await client.post("/", content=body)).json()
    assert reply["error"]["code"] == -32602, reply
    assert reply["error"]["data"].startswith("query: not text"), reply
