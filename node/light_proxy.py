"""`derivd light`: a light client serving a verifying JSON-RPC proxy (like `cometbft light`).

It trusts one block (a height and header hash given; else the highest block a previous run
verified, kept in `<home>/data/light-trust.json`; else the first block signed by the home's
genesis validators) and verifies every header it hands out from there (`consensus.light`: forward
by skipping and bisection; heights below the trusted one by the hash chain of `last_block_id`).
Over JSON-RPC POST to `/` it answers:

- `header`, `commit`, `validators`: the light block at that height once verified, in CometBFT's
  forms (0 or none: the primary's latest height; every validator on one page);
- `abci_query` with path `/key`: asked with a proof whatever `prove` says; the proof is checked
  against the verified app hash of the next header before the answer goes out (other paths carry
  no proof and are refused);
- `health`, `status`, `broadcast_tx_sync|async|commit`: passed through, unverified (a tx's
  signature is its own proof; CometBFT's proxy does the same).

Anything that does not verify is a JSON-RPC error saying what failed; the proxy keeps running.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consensus.light import LightBlock, LightError, TrustOptions, verify_to
from node import jsonfmt
from node.light import Anchor, Call, RPCProvider, check_signatures, wait_for_block
from node.sdk.errors import RPCError
from primitives.files import atomic_write
from primitives.ics23 import ProofError, decode_proof, verify_membership, verify_non_membership
from storage.statetree import PROOF_OP_TYPE, PROOF_SPEC

PASS_THROUGH = frozenset(
    {"health", "status", "broadcast_tx_sync", "broadcast_tx_async", "broadcast_tx_commit"}
)
VERIFIED = frozenset({"header", "commit", "validators", "abci_query"})


@dataclass
class LightSession:
    """The trusted blocks so far, and verification of more (one at a time). With `store`, the
    highest trusted block's height and hash are kept there (JSON, written atomically), for the
    next start to trust (`stored_trust`)."""

    call: Call
    anchor: Anchor
    options: TrustOptions
    store: Path | None = None

    def __post_init__(self) -> None:
        self._provider = RPCProvider(self.call)
        self._trusted: dict[int, LightBlock] = {self.anchor.block.height: self.anchor.block}
        self._lock = threading.Lock()
        self._save()

    def _save(self) -> None:
        if self.store is not None:
            latest = self.latest.header
            record = {"height": latest.height, "hash": latest.hash().hex().upper()}
            atomic_write(self.store, json.dumps(record).encode())

    @property
    def latest(self) -> LightBlock:
        return self._trusted[max(self._trusted)]

    def verified(self, height: int) -> LightBlock:
        """The light block at `height` (0: the primary's latest), verified."""
        with self._lock:
            if height <= 0:
                height = int(self.call("status")["sync_info"]["latest_block_height"])
            if height in self._trusted:
                return self._trusted[height]
            below = [h for h in self._trusted if h < height]
            if below:
                start = self._trusted[max(below)]
                for block in verify_to(
                    self._provider, start, height, self.options, time.time_ns(), check_signatures
                ):
                    self._trusted[block.height] = block
                self._save()
                return self._trusted[height]
            return self._backwards(height)

    def _backwards(self, height: int) -> LightBlock:
        """A block below every trusted one: each header's hash is its successor's last_block_id."""
        later = self._trusted[min(self._trusted)]
        while later.height > height:
            block = self._provider.light_block(later.height - 1)
            block.check_self(later.header.chain_id)
            if block.header.hash() != later.header.last_block_id.hash:
                raise LightError(f"block {block.height} is not the one block {later.height} follows")
            later = block
        self._trusted[height] = later
        return later

    def proven_query(self, data: bytes, height: int) -> dict[str, Any]:
        """An `abci_query` of `/key` whose proof checked against the verified next header."""
        response = self.call(
            "abci_query", path="/key", data="0x" + data.hex(), height=str(height), prove=True
        )
        answer = response["response"]
        if answer["code"] != 0:
            return dict(response)  # the app's refusal (e.g. a height it no longer keeps) proves nothing
        ops = (answer.get("proofOps") or {}).get("ops") or []
        if len(ops) != 1 or ops[0].get("type") != PROOF_OP_TYPE:
            raise ProofError(f"the primary sent no {PROOF_OP_TYPE} proof")
        wait_for_block(self.call, int(answer["height"]) + 1)  # its app hash is in the next header
        header = self.verified(int(answer["height"]) + 1).header
        proof = decode_proof(base64.b64decode(ops[0]["data"]))
        value = base64.b64decode(answer["value"]) if answer["value"] else b""
        if value:
            verify_membership(PROOF_SPEC, header.app_hash, proof, data, value)
        else:
            verify_non_membership(PROOF_SPEC, header.app_hash, proof, data)
        return dict(response)


def stored_trust(store: Path) -> tuple[int, bytes] | None:
    """The (height, header hash) a previous run kept in `store`; None if there is none; ValueError
    if the file is not one `LightSession` wrote."""
    if not store.exists():
        return None
    try:
        record = json.loads(store.read_text())
        return int(record["height"]), bytes.fromhex(record["hash"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{store}: not a light client trust record ({exc})") from None


def _param(params: Any, name: str, index: int) -> Any:
    if isinstance(params, dict):
        return params.get(name)
    if isinstance(params, list) and len(params) > index:
        return params[index]
    return None


def answer(session: LightSession, method: str, params: Any) -> Any:
    """The result of one call (RPCError, LightError, ProofError or ValueError otherwise)."""
    if method in PASS_THROUGH:
        return session.call(method, **(params if isinstance(params, dict) else {}))
    if method not in VERIFIED:
        raise ValueError(f"the light proxy does not serve {method!r}")
    if method == "abci_query":
        path = _param(params, "path", 0)
        if path != "/key":
            raise ValueError(f"only /key queries carry a proof; {path!r} cannot be verified")
        data = str(_param(params, "data", 1) or "")
        return session.proven_query(
            bytes.fromhex(data.removeprefix("0x")), int(_param(params, "height", 2) or 0)
        )
    block = session.verified(int(_param(params, "height", 0) or 0))
    if method == "header":
        return {"header": jsonfmt.header(block.header)}
    if method == "commit":
        signed = {"header": jsonfmt.header(block.header), "commit": jsonfmt.commit(block.commit)}
        return {"signed_header": signed, "canonical": True}
    validators = jsonfmt.validator_list(block.validators)
    count = str(len(validators))
    return {"block_height": str(block.height), "validators": validators, "count": count, "total": count}


def make_proxy(session: LightSession) -> Starlette:
    async def post(request: Request) -> Response:
        try:
            payload = json.loads(await request.body())
            method, params, id_ = payload["method"], payload.get("params"), payload.get("id", -1)
        except (ValueError, KeyError, TypeError):
            return JSONResponse(
                {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Invalid Request"}}
            )
        try:
            result = await trio.to_thread.run_sync(answer, session, method, params)
        except RPCError as exc:
            return JSONResponse({"jsonrpc": "2.0", "id": id_, "error": exc.error})
        except (LightError, ProofError, ValueError, KeyError) as exc:
            error = {"code": -32603, "message": "not verified", "data": str(exc)}
            return JSONResponse({"jsonrpc": "2.0", "id": id_, "error": error})
        return JSONResponse({"jsonrpc": "2.0", "id": id_, "result": result})

    return Starlette(routes=[Route("/", post, methods=["POST"])])
