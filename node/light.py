"""The light client's shell (its checks are `consensus.light`): light blocks read from a node's
JSON-RPC (`RPCProvider`), the trust anchor, and proven state reads.

A trust anchor is a block the user trusts: a height and the hash of its header (from a source
they trust, CometBFT's `--trusted-height`/`--trusted-hash`), or else the first block of the
chain, accepted when its validator set is the home's genesis set and more than 2/3 of it signed
it. `prove_key` reads a state key with its proof at the node's last height H, verifies the header
of H + 1 (which carries H's app hash) from the anchor, and checks the proof against that app hash.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from consensus.light import LightBlock, LightError, TrustOptions, verify_to
from consensus.validators import ValidatorSet
from consensus.votes import CommitError, verify_commit
from genesis.genesis import GenesisDoc
from node.jsonfmt import ShapeError, parse_commit, parse_header, parse_validator
from primitives.ics23 import ProofError, decode_proof, verify_membership, verify_non_membership
from primitives.keys import verify
from storage.statetree import PROOF_OP_TYPE, PROOF_SPEC

Call = Callable[..., Any]
"""`call(method, **params)`: a JSON-RPC call's result"""

VALIDATORS_PER_PAGE = 100
WAIT_FOR_NEXT_BLOCK_S = 30.0


def wait_for_block(call: Call, height: int) -> None:
    """Return once the node has block `height` (LightError after WAIT_FOR_NEXT_BLOCK_S)."""
    deadline = time.monotonic() + WAIT_FOR_NEXT_BLOCK_S
    while int(call("status")["sync_info"]["latest_block_height"]) < height:
        if time.monotonic() > deadline:
            raise LightError(f"block {height} did not come within {WAIT_FOR_NEXT_BLOCK_S:.0f} s")
        time.sleep(0.2)  # polling a remote node's height: nothing to wait on but time


def check_signatures(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    return [verify(pub_key, message, signature) for pub_key, message, signature in items]


class RPCProvider:
    """Light blocks from a node's `commit` and `validators` methods."""

    def __init__(self, call: Call) -> None:
        self._call = call

    def light_block(self, height: int) -> LightBlock:
        try:
            signed = self._call("commit", height=str(height))["signed_header"]
            header, commit = parse_header(signed["header"]), parse_commit(signed["commit"])
            members = []
            page = 1
            while True:
                result = self._call(
                    "validators", height=str(height), page=str(page), per_page=str(VALIDATORS_PER_PAGE)
                )
                members += [parse_validator(v) for v in result["validators"]]
                if len(members) >= int(result["total"]) or not result["validators"]:
                    break
                page += 1
            return LightBlock(header=header, commit=commit, validators=ValidatorSet(members))
        except (ShapeError, KeyError, TypeError, ValueError) as exc:
            raise LightError(f"the node sent a malformed block {height}: {exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    block: LightBlock
    source: str
    """how it came to be trusted ("trusted hash" or "genesis")"""


def anchor_from_hash(provider: RPCProvider, chain_id: str, height: int, header_hash: bytes) -> Anchor:
    block = provider.light_block(height)
    block.check_self(chain_id)
    if block.header.hash() != header_hash:
        found, trusted = block.header.hash().hex().upper(), header_hash.hex().upper()
        raise LightError(f"block {height} has hash {found}, not the trusted {trusted}")
    return Anchor(block=block, source="trusted hash")


def anchor_from_genesis(provider: RPCProvider, doc: GenesisDoc) -> Anchor:
    block = provider.light_block(doc.initial_height)
    block.check_self(doc.chain_id)
    genesis_set = ValidatorSet.genesis([(v.pub_key, v.power) for v in doc.validators])
    if block.header.validators_hash != genesis_set.hash():
        raise LightError(
            f"block {doc.initial_height} is not signed by the genesis validators of {doc.chain_id}"
        )
    try:
        verify_commit(
            doc.chain_id,
            block.validators,
            block.commit.block_id,
            block.height,
            block.commit,
            check_signatures,
        )
    except CommitError as exc:
        raise LightError(f"block {doc.initial_height}: {exc}") from None
    return Anchor(block=block, source="genesis")


@dataclass(frozen=True, slots=True, kw_only=True)
class ProvenValue:
    height: int
    """the state's height"""
    value: bytes | None
    """None: proven absent"""
    app_hash: bytes
    verified_heights: tuple[int, ...]
    """the light blocks verified from the anchor, the header of `height` + 1 last"""


def prove_key(call: Call, anchor: Anchor, key: bytes, options: TrustOptions | None = None) -> ProvenValue:
    """`key`'s value at the node's last height, proven against a header verified from `anchor`;
    LightError or ProofError if anything does not check."""
    response = call("abci_query", path="/key", data="0x" + key.hex(), height="0", prove=True)["response"]
    if response["code"] != 0:
        raise LightError(f"the node refused the query: {response['log']}")
    height = int(response["height"])
    value = base64.b64decode(response["value"]) if response["value"] else None
    ops = (response.get("proofOps") or {}).get("ops") or []
    if len(ops) != 1 or ops[0]["type"] != PROOF_OP_TYPE:
        raise ProofError(f"the node sent no {PROOF_OP_TYPE} proof")
    proof = decode_proof(base64.b64decode(ops[0]["data"]))
    wait_for_block(call, height + 1)  # H's app hash is in H + 1
    provider = RPCProvider(call)
    blocks = verify_to(
        provider, anchor.block, height + 1, options or TrustOptions(), time.time_ns(), check_signatures
    )
    app_hash = blocks[-1].header.app_hash
    if value is None:
        verify_non_membership(PROOF_SPEC, app_hash, proof, key)
    else:
        verify_membership(PROOF_SPEC, app_hash, proof, key, value)
    return ProvenValue(
        height=height, value=value, app_hash=app_hash, verified_heights=tuple(b.height for b in blocks)
    )
