"""Application queries (`abci_query`) on the committed state. Values are JSON bytes, integers as
decimal strings, hashes as upper-case hex:

| path | value |
|---|---|
| `/accounts/<address hex>` | `{"address", "balance", "nonces"}` (an absent account is empty) |
| `/supply` | `{"total"}`: the quote supply fixed at genesis |
| `/app` | `{"height", "app_hash"}` of the last commit |
| `/validators` | the validator registry, sorted by address: `[{"address", "pub_key", "power"}]` |
| `/evidence` | every recorded misbehavior, oldest first (see below) |

In `/validators`, `address` is upper-case hex, `pub_key` the base64 of the 32-byte Ed25519 key and
`power` the application's current power (a slashed validator stays listed with "0").
`/evidence` items are `{"kind", "validator", "validator_power", "height", "time",
"total_voting_power", "block_height"}`: `validator` is the upper-case hex address; `height`, `time`
(ns) and both powers are those of the infraction; `block_height` is the block that handed it to
the application.

Only the latest state is kept: height 0 or the last committed height are served, any other is
HEIGHT_NOT_AVAILABLE. Results carry the last committed height. No proofs are produced yet.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from consensus.app import QueryResult
from execution.accounts import load_account, load_supply
from execution.codes import CODESPACE, Code
from execution.evidence import load_evidence
from execution.state import CommittedState
from execution.validators import registry
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


def query_validators(ctx: QueryContext, path: str) -> QueryResult:
    value = [
        {
            "address": validator.address.upper(),
            "pub_key": base64.b64encode(validator.pub_key).decode(),
            "power": str(validator.power),
        }
        for validator in registry(ctx.state)
    ]
    return QueryResult(value=_json(value), height=ctx.height)


def query_evidence(ctx: QueryContext, path: str) -> QueryResult:
    value = [
        {
            "kind": record.misbehavior.kind,
            "validator": record.misbehavior.validator_address.hex().upper(),
            "validator_power": str(record.misbehavior.validator_power),
            "height": str(record.misbehavior.height),
            "time": str(record.misbehavior.time),
            "total_voting_power": str(record.misbehavior.total_voting_power),
            "block_height": str(record.block_height),
        }
        for record in load_evidence(ctx.state)
    ]
    return QueryResult(value=_json(value), height=ctx.height)


EXACT_PATHS: dict[str, Callable[[QueryContext, str], QueryResult]] = {
    "/supply": query_supply,
    "/app": query_app,
    "/validators": query_validators,
    "/evidence": query_evidence,
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
