"""Application queries (`abci_query`) on the committed state. Values are JSON bytes, integers as
decimal strings, hashes as upper-case hex:

| path | value |
|---|---|
| `/accounts/<address hex>` | `{"address", "balance", "nonces"}` (an absent account is empty) |
| `/supply` | `{"total"}`: the quote supply fixed at genesis |
| `/app` | `{"height", "app_hash"}` of the last commit |

Only the latest state is kept: height 0 or the last committed height are served, any other is
HEIGHT_NOT_AVAILABLE. Results carry the last committed height. No proofs are produced yet.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from consensus.app import QueryResult
from execution.accounts import load_account, load_supply
from execution.codes import CODESPACE, Code
from execution.state import CommittedState
from primitives.keys import Address
from storage import schema

ACCOUNTS_PREFIX = "/accounts/"


@dataclass(frozen=True, slots=True)
class QueryContext:
    """What a query sees: the committed state, its height and app hash."""

    state: CommittedState
    height: int
    app_hash: bytes


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error(ctx: QueryContext, code: Code, log: str) -> QueryResult:
    return QueryResult(code=int(code), log=log, height=ctx.height, codespace=CODESPACE)


def query_account(ctx: QueryContext, path: str) -> QueryResult:
    text = path[len(ACCOUNTS_PREFIX) :]
    try:
        address = Address.parse(text)
    except ValueError as exc:
        return _error(ctx, Code.INVALID_QUERY, f"invalid address in {path!r}: {exc}")
    account = load_account(ctx.state, address)
    value = {
        "address": str(address),
        "balance": str(account.balance),
        "nonces": [str(nonce) for nonce in account.nonces],
    }
    return QueryResult(key=schema.account_key(address.raw), value=_json(value), height=ctx.height)


def query_supply(ctx: QueryContext, path: str) -> QueryResult:
    return QueryResult(value=_json({"total": str(load_supply(ctx.state))}), height=ctx.height)


def query_app(ctx: QueryContext, path: str) -> QueryResult:
    value = {"height": str(ctx.height), "app_hash": ctx.app_hash.hex().upper()}
    return QueryResult(value=_json(value), height=ctx.height)


EXACT_PATHS: dict[str, Callable[[QueryContext, str], QueryResult]] = {
    "/supply": query_supply,
    "/app": query_app,
}


def run_query(ctx: QueryContext, path: str, height: int) -> QueryResult:
    """Answer `path` at `height` (0: latest)."""
    if height not in (0, ctx.height):
        log = f"historical state is not kept: only height {ctx.height} is available"
        return _error(ctx, Code.HEIGHT_NOT_AVAILABLE, log)
    if path.startswith(ACCOUNTS_PREFIX):
        return query_account(ctx, path)
    handler = EXACT_PATHS.get(path)
    if handler is None:
        known = ", ".join([ACCOUNTS_PREFIX + "<address>", *EXACT_PATHS])
        return _error(ctx, Code.UNKNOWN_QUERY, f"unknown query path {path!r} (known: {known})")
    return handler(ctx, path)
