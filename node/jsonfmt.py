"""CometBFT's JSON forms of chain types, for RPC responses and the CLI.

Conventions (REFERENCE.md): 64-bit integers as decimal strings, bytes as base64, hashes and
addresses as upper-case hex, times as RFC 3339 with nanoseconds, keys as {type, value}. The forms
a light client checks (header, commit, validator) also read back (`parse_*`).
"""

from __future__ import annotations

import base64
from typing import Any

from consensus.app import (
    CheckTxResult,
    Event,
    ExecTxResult,
    FinalizeBlockResult,
    ProofOp,
    QueryResult,
    ValidatorUpdate,
)
from consensus.evidence import DuplicateVoteEvidence
from consensus.types import (
    Block,
    BlockID,
    BlockIDFlag,
    Commit,
    CommitSig,
    Header,
    PartSetHeader,
    Vote,
    VoteType,
)
from consensus.validators import Validator, ValidatorSet
from primitives.hashing import MerkleProof, leaf_hash
from primitives.keyfile import PUB_KEY_TYPE
from primitives.keys import Address
from primitives.timefmt import format_rfc3339, parse_rfc3339

JSON = dict[str, Any]


def hex_upper(raw: bytes) -> str:
    return raw.hex().upper()


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def pub_key(raw: bytes) -> JSON:
    return {"type": PUB_KEY_TYPE, "value": b64(raw)}


def part_set_header(header: PartSetHeader) -> JSON:
    return {"total": header.total, "hash": hex_upper(header.hash)}


def block_id(value: BlockID) -> JSON:
    return {"hash": hex_upper(value.hash), "parts": part_set_header(value.parts)}


def header(h: Header) -> JSON:
    return {
        "version": {"block": str(h.version_block), "app": str(h.version_app)},
        "chain_id": h.chain_id,
        "height": str(h.height),
        "time": format_rfc3339(h.time),
        "last_block_id": block_id(h.last_block_id),
        "last_commit_hash": hex_upper(h.last_commit_hash),
        "data_hash": hex_upper(h.data_hash),
        "validators_hash": hex_upper(h.validators_hash),
        "next_validators_hash": hex_upper(h.next_validators_hash),
        "consensus_hash": hex_upper(h.consensus_hash),
        "app_hash": hex_upper(h.app_hash),
        "last_results_hash": hex_upper(h.last_results_hash),
        "evidence_hash": hex_upper(h.evidence_hash),
        "proposer_address": hex_upper(h.proposer_address),
    }


def commit(c: Commit) -> JSON:
    return {
        "height": str(c.height),
        "round": c.round,
        "block_id": block_id(c.block_id),
        "signatures": [
            {
                "block_id_flag": int(s.flag),
                "validator_address": hex_upper(s.validator_address),
                "timestamp": format_rfc3339(s.timestamp) if s.timestamp else "0001-01-01T00:00:00Z",
                "signature": b64(s.signature) if s.signature else None,
            }
            for s in c.signatures
        ],
    }


def vote(v: Vote) -> JSON:
    return {
        "type": int(v.type),
        "height": str(v.height),
        "round": v.round,
        "block_id": block_id(v.block_id),
        "timestamp": format_rfc3339(v.timestamp),
        "validator_address": hex_upper(v.validator_address),
        "validator_index": v.validator_index,
        "signature": b64(v.signature) if v.signature else None,
        "extension": None,
        "extension_signature": None,
    }


DUPLICATE_VOTE_EVIDENCE = "tendermint/DuplicateVoteEvidence"


def evidence(e: DuplicateVoteEvidence) -> JSON:
    return {
        "type": DUPLICATE_VOTE_EVIDENCE,
        "value": {
            "vote_a": vote(e.vote_a),
            "vote_b": vote(e.vote_b),
            "TotalVotingPower": str(e.total_voting_power),
            "ValidatorPower": str(e.validator_power),
            "Timestamp": format_rfc3339(e.timestamp),
        },
    }


def block(b: Block) -> JSON:
    return {
        "header": header(b.header),
        "data": {"txs": [b64(tx) for tx in b.txs]},
        "evidence": {"evidence": [evidence(DuplicateVoteEvidence.decode(e)) for e in b.evidence]},
        "last_commit": commit(b.last_commit),
    }


def validator(v: Validator) -> JSON:
    return {
        "address": hex_upper(v.address),
        "pub_key": pub_key(v.pub_key),
        "voting_power": str(v.power),
        "proposer_priority": str(v.proposer_priority),
    }


def validator_list(vs: ValidatorSet) -> list[JSON]:
    return [validator(v) for v in vs.validators]


def event(e: Event) -> JSON:
    return {
        "type": e.type,
        "attributes": [{"key": a.key, "value": a.value, "index": a.index} for a in e.attributes],
    }


def exec_tx_result(r: ExecTxResult) -> JSON:
    return {
        "code": r.code,
        "data": b64(r.data) if r.data else None,
        "log": r.log,
        "info": "",
        "gas_wanted": "0",
        "gas_used": "0",
        "events": [event(e) for e in r.events],
        "codespace": r.codespace,
    }


def finalize_block_result(r: FinalizeBlockResult) -> JSON:
    """ABCI's ResponseFinalizeBlock (a NewBlock event's `result_finalize_block`; block_results
    has its fields under other names)."""
    return {
        "events": [event(e) for e in r.events],
        "tx_results": [exec_tx_result(t) for t in r.tx_results],
        "validator_updates": [
            {"pub_key": pub_key(u.pub_key), "power": str(u.power)} for u in r.validator_updates
        ],
        "consensus_param_updates": None,
        "app_hash": b64(r.app_hash),
    }


def validator_updates(updates: tuple[ValidatorUpdate, ...]) -> list[JSON]:
    """A ValidatorSetUpdates event's validators (power 0: removed)."""
    return [
        {
            "address": hex_upper(Address.from_public_key(u.pub_key).raw),
            "pub_key": pub_key(u.pub_key),
            "voting_power": str(u.power),
            "proposer_priority": "0",
        }
        for u in updates
    ]


def check_tx_result(r: CheckTxResult) -> JSON:
    return {
        "code": r.code,
        "data": None,
        "log": r.log,
        "info": "",
        "gas_wanted": "0",
        "gas_used": "0",
        "events": [],
        "codespace": r.codespace,
    }


def tx_proof(data_hash: bytes, tx: bytes, proof: MerkleProof) -> JSON:
    """CometBFT's `TxProof`: the tx's RFC 6962 inclusion proof under the header's `data_hash`."""
    return {
        "root_hash": hex_upper(data_hash),
        "data": b64(tx),
        "proof": {
            "total": str(proof.total),
            "index": str(proof.index),
            "leaf_hash": b64(leaf_hash(tx)),
            "aunts": [b64(aunt) for aunt in proof.aunts],
        },
    }


def _proof_op(op: ProofOp) -> JSON:
    return {"type": op.type, "key": b64(op.key), "data": b64(op.data)}


def query_result(r: QueryResult) -> JSON:
    return {
        "code": r.code,
        "log": r.log,
        "info": r.info,
        "index": "0",
        "key": b64(r.key) if r.key else None,
        "value": b64(r.value) if r.value else None,
        "proofOps": {"ops": [_proof_op(op) for op in r.proof_ops]} if r.proof_ops else None,
        "height": str(r.height),
        "codespace": r.codespace,
    }


# -- reading them back (the light client checks what a node sent) ----------------------------------


class ShapeError(ValueError):
    """JSON that is not the form above; the message names the field."""


def _get(obj: Any, key: str, where: str) -> Any:
    if not isinstance(obj, dict) or key not in obj:
        raise ShapeError(f"{where}: no {key!r}")
    return obj[key]


def _hex_field(obj: Any, key: str, where: str) -> bytes:
    try:
        return bytes.fromhex(_get(obj, key, where))
    except (TypeError, ValueError):
        raise ShapeError(f"{where}.{key}: not hex") from None


def _int_field(obj: Any, key: str, where: str) -> int:
    value = _get(obj, key, where)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{where}.{key}: not an integer: {value!r}") from None


def _time_field(obj: Any, key: str, where: str) -> int:
    value = _get(obj, key, where)
    if value == "0001-01-01T00:00:00Z":
        return 0
    try:
        return parse_rfc3339(value)
    except (TypeError, ValueError):
        raise ShapeError(f"{where}.{key}: not an RFC 3339 time: {value!r}") from None


def parse_block_id(obj: Any, where: str) -> BlockID:
    parts = _get(obj, "parts", where)
    return BlockID(
        _hex_field(obj, "hash", where),
        PartSetHeader(
            _int_field(parts, "total", where + ".parts"), _hex_field(parts, "hash", where + ".parts")
        ),
    )


def parse_vote(obj: Any, where: str = "vote") -> Vote:
    """The `vote` form back to a Vote."""
    try:
        kind = VoteType(_int_field(obj, "type", where))
    except ValueError:
        raise ShapeError(f"{where}.type: not a prevote (1) or precommit (2)") from None
    signature = _get(obj, "signature", where)
    try:
        raw_signature = base64.b64decode(signature, validate=True) if signature else b""
    except (TypeError, ValueError):
        raise ShapeError(f"{where}.signature: not base64") from None
    return Vote(
        type=kind,
        height=_int_field(obj, "height", where),
        round=_int_field(obj, "round", where),
        block_id=parse_block_id(_get(obj, "block_id", where), where + ".block_id"),
        timestamp=_time_field(obj, "timestamp", where),
        validator_address=_hex_field(obj, "validator_address", where),
        validator_index=_int_field(obj, "validator_index", where),
        signature=raw_signature,
    )


def parse_evidence(obj: Any) -> DuplicateVoteEvidence:
    """The `evidence` form back to DuplicateVoteEvidence (the only kind there is)."""
    if _get(obj, "type", "evidence") != DUPLICATE_VOTE_EVIDENCE:
        raise ShapeError(f"evidence.type: only {DUPLICATE_VOTE_EVIDENCE} is known")
    value = _get(obj, "value", "evidence")
    return DuplicateVoteEvidence(
        parse_vote(_get(value, "vote_a", "evidence.value"), "evidence.value.vote_a"),
        parse_vote(_get(value, "vote_b", "evidence.value"), "evidence.value.vote_b"),
        _int_field(value, "TotalVotingPower", "evidence.value"),
        _int_field(value, "ValidatorPower", "evidence.value"),
        _time_field(value, "Timestamp", "evidence.value"),
    )


def parse_header(obj: Any) -> Header:
    """The `header` form back to a Header (ShapeError if a field is missing or malformed)."""
    version = _get(obj, "version", "header")
    return Header(
        chain_id=str(_get(obj, "chain_id", "header")),
        height=_int_field(obj, "height", "header"),
        time=_time_field(obj, "time", "header"),
        last_block_id=parse_block_id(_get(obj, "last_block_id", "header"), "header.last_block_id"),
        last_commit_hash=_hex_field(obj, "last_commit_hash", "header"),
        data_hash=_hex_field(obj, "data_hash", "header"),
        validators_hash=_hex_field(obj, "validators_hash", "header"),
        next_validators_hash=_hex_field(obj, "next_validators_hash", "header"),
        consensus_hash=_hex_field(obj, "consensus_hash", "header"),
        app_hash=_hex_field(obj, "app_hash", "header"),
        last_results_hash=_hex_field(obj, "last_results_hash", "header"),
        evidence_hash=_hex_field(obj, "evidence_hash", "header"),
        proposer_address=_hex_field(obj, "proposer_address", "header"),
        version_block=_int_field(version, "block", "header.version"),
        version_app=_int_field(version, "app", "header.version"),
    )


def parse_commit(obj: Any) -> Commit:
    """The `commit` form back to a Commit."""
    signatures = []
    for i, sig in enumerate(_get(obj, "signatures", "commit")):
        where = f"commit.signatures[{i}]"
        raw = _get(sig, "signature", where)
        try:
            flag = BlockIDFlag(_int_field(sig, "block_id_flag", where))
            signature = base64.b64decode(raw, validate=True) if raw else b""
        except ValueError:
            raise ShapeError(f"{where}: a bad flag or signature") from None
        address = _hex_field(sig, "validator_address", where)
        signatures.append(CommitSig(flag, address, _time_field(sig, "timestamp", where), signature))
    return Commit(
        _int_field(obj, "height", "commit"),
        _int_field(obj, "round", "commit"),
        parse_block_id(_get(obj, "block_id", "commit"), "commit.block_id"),
        tuple(signatures),
    )


def parse_validator(obj: Any) -> Validator:
    """The `validator` form back to a Validator (its address must be its key's)."""
    key = _get(obj, "pub_key", "validator")
    if _get(key, "type", "validator.pub_key") != PUB_KEY_TYPE:
        raise ShapeError(f"validator.pub_key: not an {PUB_KEY_TYPE}")
    try:
        pub_key = base64.b64decode(_get(key, "value", "validator.pub_key"), validate=True)
    except (TypeError, ValueError):
        raise ShapeError("validator.pub_key.value: not base64") from None
    address = _hex_field(obj, "address", "validator")
    if len(pub_key) != 32 or Address.from_public_key(pub_key).raw != address:
        raise ShapeError(f"validator {address.hex().upper()}: the address is not its key's")
    return Validator(
        address,
        pub_key,
        _int_field(obj, "voting_power", "validator"),
        _int_field(obj, "proposer_priority", "validator"),
    )
