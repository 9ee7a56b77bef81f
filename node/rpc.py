"""JSON-RPC 2.0 server with CometBFT's method names, parameters and response shapes.

Served by hypercorn (trio worker) as a Starlette app: JSON-RPC POST to `/` (single calls and
batches of up to `max_request_batch_size`), URI GET `/<method>?param=value` (strings may be
quoted, bytes given as 0x-hex or quoted text, as in CometBFT), and a plain index at `/`.
Handlers run on the node's trio thread and read the stores directly; they never block on I/O.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute

from consensus.app import Application, CheckTxKind, ExecTxResult
from consensus.evidence import DuplicateVoteEvidence, EvidenceError
from consensus.execution import BlockExecutor, BlockResults
from consensus.mempool import Mempool, MempoolError
from consensus.reactor import ConsensusReactor
from consensus.service import ConsensusService
from consensus.types import NIL_BLOCK_ID, Block, Commit, PartSet, Vote, VoteType
from consensus.validators import ValidatorSet
from consensus.votes import VoteSet
from node import jsonfmt
from node.events import EventBus, TxCommitted
from node.indexer import EventIndex, SearchError
from node.openapi import document
from node.query import Query, QueryError
from node.query import parse as parse_query
from node.version import VERSION
from node.websocket import Endpoint as WebSocketEndpoint
from node.websocket import Handler as RequestHandler
from node.websocket import Hub, parse_json
from p2p.switch import ConnectedPeer, Switch
from primitives.codec import DecodeError, decode
from primitives.hashing import MerkleProof, merkle_proofs, sha256
from primitives.keys import Address
from primitives.timefmt import format_rfc3339
from storage.blockstore import BlockStore
from storage.statestore import StateStore

log = logging.getLogger("derivd.rpc")

JSON = dict[str, Any]

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

BLOCKCHAIN_LIMIT = 20
"""block metas one `blockchain` call returns at most (CometBFT's)"""
GENESIS_CHUNK_BYTES = 16 * 1024 * 1024
"""bytes of the genesis JSON per `genesis_chunked` chunk (CometBFT's)"""


class RPCError(Exception):
    def __init__(self, code: int, message: str, data: str = "") -> None:
        super().__init__(data or message)
        self.code = code
        self.message = message
        self.data = data


NEEDS_RUNNING_NODE = frozenset(
    {
        "broadcast_tx_sync",
        "broadcast_tx_async",
        "broadcast_tx_commit",
        "broadcast_evidence",
        "check_tx",
        "unconfirmed_txs",
        "num_unconfirmed_txs",
        "consensus_state",
        "dump_consensus_state",
        "net_info",
    }
)
"""methods that read the running node's mempool, consensus round or peers, or change something:
`derivd inspect` (`RPCEnv.stored_only`) refuses them"""


def invalid_params(data: str) -> RPCError:
    return RPCError(INVALID_PARAMS, "Invalid params", data)


def internal(data: str) -> RPCError:
    return RPCError(INTERNAL_ERROR, "Internal error", data)


@dataclass
class NodeInfo:
    node_id: str
    listen_addr: str
    network: str
    version: str
    moniker: str
    rpc_address: str
    channels: str = "40202122233038"


@dataclass
class RPCEnv:
    """What the handlers read: the node's stores and services."""

    info: NodeInfo
    genesis: JSON
    blocks: BlockStore
    states: StateStore
    executor: BlockExecutor
    consensus: ConsensusService
    mempool: Mempool
    app: Application
    bus: EventBus
    validator_pub_key: bytes | None
    timeout_broadcast_tx_commit: float = 10.0
    max_batch: int = 10
    max_body_bytes: int = 1_000_000
    max_open_connections: int = 0
    """requests in progress plus open WebSockets at most (0: no limit)"""
    cors_origins: tuple[str, ...] = ()
    """origins allowed cross-domain requests (CORS; "*": any, none: CORS off)"""
    cors_methods: tuple[str, ...] = ("HEAD", "GET", "POST")
    cors_headers: tuple[str, ...] = ("Origin", "Accept", "Content-Type", "X-Requested-With", "X-Server-Time")
    catching_up: Callable[[], bool] = field(default=lambda: False)
    switch: Switch | None = None
    index: EventIndex | None = None
    """the event index behind tx_search and block_search (None: `indexer = "null"`)"""
    reactor: ConsensusReactor | None = None
    """the consensus gossip (dump_consensus_state's peers)"""
    hub: Hub = field(default_factory=Hub)
    """the `/websocket` clients and their subscriptions (a sink of `bus`)"""
    stored_only: bool = False
    """serving a stopped node's stores (`derivd inspect`): the methods in NEEDS_RUNNING_NODE and
    `/websocket` are refused"""


# -- parameters ----------------------------------------------------------------------------------


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1]
    return text


def p_int(value: Any, name: str, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        raise invalid_params(f"{name}: expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(_unquote(value))
        except ValueError:
            pass
    raise invalid_params(f"{name}: expected an integer, got {value!r}")


_SURROGATE = re.compile("[\ud800-\udfff]")


def p_str(value: Any, name: str, default: str = "") -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid_params(f"{name}: expected a string")
    if _SURROGATE.search(value):  # a JSON \u escape can spell one; no UTF-8 text holds it
        raise invalid_params(f"{name}: not text (a \\u escape of a lone UTF-16 surrogate)")
    return _unquote(value)


def p_bool(value: Any, name: str) -> bool:
    if value is None or value == "":
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and _unquote(value).lower() in ("true", "false"):
        return _unquote(value).lower() == "true"
    raise invalid_params(f"{name}: expected true or false")


def p_bytes(value: Any, name: str, uri: bool, hex_default: bool = False) -> bytes:
    """Bytes: 0x-hex anywhere; in URI calls a quoted string is its text; in JSON, base64 (or
    hex for parameters CometBFT types as HexBytes)."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise invalid_params(f"{name}: expected a string")
    try:
        if value.startswith(("0x", "0X")):
            return bytes.fromhex(value[2:])
        if uri:
            if len(value) >= 2 and value[0] == value[-1] == '"':
                return value[1:-1].encode()
            return bytes.fromhex(value) if hex_default else base64.b64decode(value, validate=True)
        if hex_default:
            return bytes.fromhex(value)
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise invalid_params(f"{name}: not valid {'hex' if hex_default else 'base64 or 0x-hex'}") from exc


@dataclass(frozen=True, slots=True)
class Call:
    params: dict[str, Any]
    uri: bool

    def get(self, name: str) -> Any:
        return self.params.get(name)


Handler = Callable[[RPCEnv, Call], Awaitable[JSON]]
METHODS: dict[str, tuple[Handler, tuple[str, ...]]] = {}


def method(name: str, *params: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        METHODS[name] = (fn, params)
        return fn

    return register


# -- helpers over the stores -----------------------------------------------------------------------


def _height(env: RPCEnv, call: Call, name: str = "height") -> int:
    latest = env.blocks.height
    height = p_int(call.get(name), name, 0) or latest
    if height <= 0:
        raise invalid_params(f"{name}: must be greater than 0, but got {height}")
    if height > latest:
        raise invalid_params(
            f"{name} {height} must be less than or equal to the current blockchain height {latest}"
        )
    if height < env.blocks.base:
        raise invalid_params(f"{name} {height} is not available, lowest height is {env.blocks.base}")
    return height


def _load_block(env: RPCEnv, height: int) -> Block:
    raw = env.blocks.load_block(height)
    if raw is None:
        raise internal(f"block {height} is not in the block store")
    return Block.decode(raw)


def _block_id_json(env: RPCEnv, block: Block) -> JSON:
    """The block id the commit of `block` names (it carries the part-set header)."""
    raw = env.blocks.load_seen_commit(block.height)
    if raw is None:
        raise internal(f"commit {block.height} is not in the block store")
    return jsonfmt.block_id(Commit.decode(raw).block_id)


def _validators_at(env: RPCEnv, height: int) -> ValidatorSet:
    raw = env.states.load_validators(height)
    if raw is None:
        state = env.consensus.machine.state
        if height == state.height:
            return state.validators
        raise invalid_params(f"validators for height {height} are not stored")
    try:
        return ValidatorSet.from_fields(decode(raw))
    except DecodeError as exc:
        raise internal(f"stored validator set {height} is corrupt: {exc}") from exc


# -- info methods ----------------------------------------------------------------------------------


@method("health")
async def health(env: RPCEnv, call: Call) -> JSON:
    return {}


@method("status")
async def status(env: RPCEnv, call: Call) -> JSON:
    state = env.consensus.machine.state
    latest_hash, latest_time, earliest_hash, earliest_time = b"", 0, b"", 0
    earliest_app_hash = b""
    if env.blocks.height:
        latest = _load_block(env, env.blocks.height)
        latest_hash, latest_time = latest.hash, latest.header.time
        earliest = _load_block(env, env.blocks.base)
        earliest_hash, earliest_time = earliest.hash, earliest.header.time
        earliest_app_hash = earliest.header.app_hash
    validator_info: JSON = {"address": "", "pub_key": None, "voting_power": "0"}
    if env.validator_pub_key is not None:
        address = Address.from_public_key(env.validator_pub_key).raw
        member = state.validators.get(address)
        validator_info = {
            "address": jsonfmt.hex_upper(address),
            "pub_key": jsonfmt.pub_key(env.validator_pub_key),
            "voting_power": str(member.power if member else 0),
        }
    return {
        "node_info": {
            "protocol_version": {"p2p": "8", "block": "11", "app": "0"},
            "id": env.info.node_id,
            "listen_addr": env.info.listen_addr,
            "network": env.info.network,
            "version": env.info.version,
            "channels": env.info.channels,
            "moniker": env.info.moniker,
            "other": {"tx_index": "on" if env.index else "off", "rpc_address": env.info.rpc_address},
        },
        "sync_info": {
            "latest_block_hash": jsonfmt.hex_upper(latest_hash),
            "latest_app_hash": jsonfmt.hex_upper(state.app_hash),
            "latest_block_height": str(env.blocks.height),
            "latest_block_time": format_rfc3339(latest_time) if latest_time else "",
            "earliest_block_hash": jsonfmt.hex_upper(earliest_hash),
            "earliest_app_hash": jsonfmt.hex_upper(earliest_app_hash),
            "earliest_block_height": str(env.blocks.base),
            "earliest_block_time": format_rfc3339(earliest_time) if earliest_time else "",
            "catching_up": env.catching_up(),
        },
        "validator_info": validator_info,
    }


@method("net_info")
async def net_info(env: RPCEnv, call: Call) -> JSON:
    peers = env.switch.peers() if env.switch is not None else []
    return {
        "listening": True,
        "listeners": [f"Listener({env.info.listen_addr})"],
        "n_peers": str(len(peers)),
        "peers": [
            {
                "node_info": {
                    "id": peer.id,
                    "listen_addr": peer.node_info.listen_addr,
                    "network": peer.node_info.network,
                    "version": peer.node_info.version,
                    "moniker": peer.node_info.moniker,
                },
                "is_outbound": peer.is_outbound,
                "connection_status": _connection_status(peer),
                "remote_ip": peer.remote_ip,
            }
            for peer in peers
        ],
    }


def _connection_status(peer: ConnectedPeer) -> JSON:
    """CometBFT's ConnectionStatus, with the monitor fields this node measures (bytes since the
    connection started and their average rate; no instantaneous or peak rates)."""
    duration = max(1, time.time_ns() - peer.connected_at_ns)
    traffic = peer.traffic

    def monitor(moved: int) -> JSON:
        return {
            "Start": format_rfc3339(peer.connected_at_ns),
            "Bytes": str(moved),
            "AvgRate": str(moved * 1_000_000_000 // duration),
            "Duration": str(duration),
            "Active": True,
        }

    return {
        "Duration": str(duration),
        "SendMonitor": monitor(traffic.bytes_sent),
        "RecvMonitor": monitor(traffic.bytes_received),
        "Channels": [
            {
                "ID": status.descriptor.id,
                "SendQueueCapacity": str(status.descriptor.send_queue_capacity),
                "SendQueueSize": str(status.queued),
                "Priority": str(status.descriptor.priority),
                "RecentlySent": str(status.recently_sent),
            }
            for status in peer.channel_status()
        ],
    }


@method("genesis")
async def genesis(env: RPCEnv, call: Call) -> JSON:
    return {"genesis": env.genesis}


@method("genesis_chunked", "chunk")
async def genesis_chunked(env: RPCEnv, call: Call) -> JSON:
    """The genesis document's JSON in chunks of GENESIS_CHUNK_BYTES, base64 (CometBFT's shape)."""
    raw = json.dumps(env.genesis).encode()
    chunks = [raw[at : at + GENESIS_CHUNK_BYTES] for at in range(0, len(raw), GENESIS_CHUNK_BYTES)]
    index = p_int(call.get("chunk"), "chunk", 0) or 0
    if not 0 <= index < len(chunks):
        raise invalid_params(f"there are {len(chunks)} chunks, {index} is invalid")
    return {"chunk": str(index), "total": str(len(chunks)), "data": jsonfmt.b64(chunks[index])}


@method("abci_info")
async def abci_info(env: RPCEnv, call: Call) -> JSON:
    info = env.app.info()
    return {
        "response": {
            "data": info.data,
            "version": info.version or VERSION,
            "app_version": str(info.app_version),
            "last_block_height": str(info.last_block_height),
            "last_block_app_hash": jsonfmt.b64(info.last_block_app_hash),
        }
    }


@method("consensus_state")
async def consensus_state(env: RPCEnv, call: Call) -> JSON:
    """The consensus machine's round state in CometBFT's summary shape."""
    machine = env.consensus.machine
    validators = machine.round_validators

    def block_hash(block: Block | None) -> str:
        return jsonfmt.hex_upper(block.hash if block is not None else b"")

    rounds = _rounds_json(env)
    proposer = validators.proposer.address
    return {
        "round_state": {
            "height/round/step": f"{machine.height}/{machine.round}/{int(machine.step)}",
            "start_time": format_rfc3339(machine.start_time) if machine.start_time else "",
            "proposal_block_hash": block_hash(machine.proposal_block),
            "locked_block_hash": block_hash(machine.locked_block),
            "valid_block_hash": block_hash(machine.valid_block),
            "height_vote_set": rounds,
            "proposer": {"address": jsonfmt.hex_upper(proposer), "index": validators.index_of(proposer)},
        }
    }


def _rounds_json(env: RPCEnv) -> list[JSON]:
    """The height's vote sets per round, as consensus_state and dump_consensus_state show them."""
    machine = env.consensus.machine
    validators = machine.round_validators
    rounds = []
    for round_ in machine.votes.rounds():
        entry: JSON = {"round": round_}
        for name, vote_type in (("prevotes", VoteType.PREVOTE), ("precommits", VoteType.PRECOMMIT)):
            votes = machine.votes.peek(round_, vote_type)
            entry[name] = [
                _vote_string(votes.get(i)) if votes else "nil-Vote" for i in range(len(validators))
            ]
            entry[f"{name}_bit_array"] = _bit_array_string(votes, validators)
        rounds.append(entry)
    return rounds


def _validator_set_json(validators: ValidatorSet) -> JSON:
    if not len(validators):  # the last validators before the first block
        return {"validators": [], "proposer": None}
    return {
        "validators": jsonfmt.validator_list(validators),
        "proposer": jsonfmt.validator(validators.proposer),
    }


def _parts_header_json(parts: PartSet | None) -> JSON:
    return jsonfmt.part_set_header(parts.header) if parts is not None else {"total": 0, "hash": ""}


@method("dump_consensus_state")
async def dump_consensus_state(env: RPCEnv, call: Call) -> JSON:
    """The machine's whole round state and each peer's round as gossip knows it (CometBFT's
    fields; the votes as consensus_state shows them)."""
    machine = env.consensus.machine
    proposal = machine.proposal
    last_commit = machine.last_commit
    round_state: JSON = {
        "height": str(machine.height),
        "round": machine.round,
        "step": int(machine.step),
        "start_time": format_rfc3339(machine.start_time) if machine.start_time else "",
        "commit_time": format_rfc3339(machine.commit_time) if machine.commit_time else "",
        "validators": _validator_set_json(machine.round_validators),
        "proposal": None
        if proposal is None
        else {
            "type": 32,
            "height": str(proposal.height),
            "round": proposal.round,
            "pol_round": proposal.pol_round,
            "block_id": jsonfmt.block_id(proposal.block_id),
            "timestamp": format_rfc3339(proposal.timestamp),
            "signature": jsonfmt.b64(proposal.signature),
        },
        "proposal_block_parts_header": _parts_header_json(machine.proposal_parts),
        "locked_round": machine.locked_round,
        "locked_block_parts_header": _parts_header_json(machine.locked_parts),
        "valid_round": machine.valid_round,
        "valid_block_parts_header": _parts_header_json(machine.valid_parts),
        "votes": _rounds_json(env),
        "commit_round": machine.commit_round,
        "last_commit": None
        if last_commit is None
        else {
            "votes": [_vote_string(last_commit.get(i)) for i in range(len(machine.state.last_validators))],
            "votes_bit_array": _bit_array_string(last_commit, machine.state.last_validators),
        },
        "last_validators": _validator_set_json(machine.state.last_validators),
        "triggered_timeout_precommit": machine.triggered_timeout_precommit,
    }
    peers = []
    for peer_id, address, state in env.reactor.peer_states() if env.reactor is not None else ():
        peers.append(
            {
                "node_address": f"{peer_id}@{address}",
                "peer_state": {
                    "round_state": {"height": str(state.height), "round": state.round, "step": state.step},
                    "stats": {"votes": str(len(state.votes)), "block_parts": str(len(state.parts))},
                },
            }
        )
    return {"round_state": round_state, "peers": peers}


def _fingerprint(data: bytes) -> str:
    """CometBFT's Fingerprint: the first 6 bytes, zero-padded, upper-case hex."""
    return data[:6].ljust(6, b"\0").hex().upper()


def _vote_string(vote: Vote | None) -> str:
    """CometBFT's Vote.String (no vote extensions here: their fingerprint is zeros)."""
    if vote is None:
        return "nil-Vote"
    kind = "Prevote" if vote.type is VoteType.PREVOTE else "Precommit"
    return (
        f"Vote{{{vote.validator_index}:{_fingerprint(vote.validator_address)} {vote.height}/{vote.round:02d}/"
        f"{int(vote.type)}({kind}) {_fingerprint(vote.block_id.hash)} {_fingerprint(vote.signature)} "
        f"{_fingerprint(b'')} @ {format_rfc3339(vote.timestamp)}}}"
    )


def _bit_array_string(votes: VoteSet | None, validators: ValidatorSet) -> str:
    """CometBFT's VoteSet.BitArrayString: who voted, then voted power / total power."""
    bits = "".join(
        "x" if votes is not None and votes.get(i) is not None else "_" for i in range(len(validators))
    )
    voted, total = (votes.sum if votes is not None else 0), validators.total_power
    return f"BA{{{len(validators)}:{bits}}} {voted}/{total} = {voted / total if total else 0:.2f}"


# -- blocks --------------------------------------------------------------------------------------


@method("block", "height")
async def block(env: RPCEnv, call: Call) -> JSON:
    if not env.blocks.height and not call.get("height"):
        return {"block_id": jsonfmt.block_id(NIL_BLOCK_ID), "block": None}
    b = _load_block(env, _height(env, call))
    return {"block_id": _block_id_json(env, b), "block": jsonfmt.block(b)}


@method("block_by_hash", "hash")
async def block_by_hash(env: RPCEnv, call: Call) -> JSON:
    block_hash = p_bytes(call.get("hash"), "hash", call.uri)
    height = env.blocks.height_of_hash(block_hash)
    if height is None:
        return {"block_id": jsonfmt.block_id(NIL_BLOCK_ID), "block": None}
    b = _load_block(env, height)
    return {"block_id": _block_id_json(env, b), "block": jsonfmt.block(b)}


@method("blockchain", "minHeight", "maxHeight")
async def blockchain(env: RPCEnv, call: Call) -> JSON:
    """The metas of at most BLOCKCHAIN_LIMIT blocks, highest first, between `minHeight` (default 1)
    and `maxHeight` (default the latest), both clamped to the stored range (CometBFT's rules)."""
    low = p_int(call.get("minHeight"), "minHeight", 0) or 0
    high = p_int(call.get("maxHeight"), "maxHeight", 0) or 0
    if low < 0 or high < 0:
        raise invalid_params("heights must be non-negative")
    latest = env.blocks.height
    high = min(latest, high or latest)
    low = max(env.blocks.base, low or 1, high - BLOCKCHAIN_LIMIT + 1)
    if low > high:
        raise invalid_params(f"min height {low} can't be greater than max height {high}")
    metas = []
    for height in range(high, low - 1, -1):
        b = _load_block(env, height)
        metas.append(
            {
                "block_id": _block_id_json(env, b),
                "block_size": str(len(b.encode())),
                "header": jsonfmt.header(b.header),
                "num_txs": str(len(b.txs)),
            }
        )
    return {"last_height": str(latest), "block_metas": metas}


@method("header_by_hash", "hash")
async def header_by_hash(env: RPCEnv, call: Call) -> JSON:
    height = env.blocks.height_of_hash(p_bytes(call.get("hash"), "hash", call.uri))
    if height is None:
        return {"header": None}
    return {"header": jsonfmt.header(_load_block(env, height).header)}


@method("header", "height")
async def header(env: RPCEnv, call: Call) -> JSON:
    b = _load_block(env, _height(env, call))
    return {"header": jsonfmt.header(b.header)}


@method("commit", "height")
async def commit(env: RPCEnv, call: Call) -> JSON:
    height = _height(env, call)
    b = _load_block(env, height)
    canonical = False
    if height < env.blocks.height:
        c = _load_block(env, height + 1).last_commit
        canonical = True
    else:
        raw = env.blocks.load_seen_commit(height)
        if raw is None:
            raise internal(f"commit {height} is not in the block store")
        c = Commit.decode(raw)
    return {
        "signed_header": {"header": jsonfmt.header(b.header), "commit": jsonfmt.commit(c)},
        "canonical": canonical,
    }


@method("block_results", "height")
async def block_results(env: RPCEnv, call: Call) -> JSON:
    height = _height(env, call)
    results = env.executor.load_results(height)
    if results is None:
        raise internal(f"results of block {height} are not stored")
    body = jsonfmt.finalize_block_result(results.finalize)
    return {
        "height": str(height),
        "txs_results": body["tx_results"],
        "finalize_block_events": body["events"],
        "validator_updates": body["validator_updates"],
        "consensus_param_updates": None,
        "app_hash": body["app_hash"],
    }


@method("validators", "height", "page", "per_page")
async def validators(env: RPCEnv, call: Call) -> JSON:
    latest = env.consensus.machine.state.height
    height = p_int(call.get("height"), "height", 0) or latest
    if height <= 0 or height > latest:
        raise invalid_params(f"height {height} must be between 1 and {latest}")
    vals = _validators_at(env, height)
    per_page = p_int(call.get("per_page"), "per_page", 30) or 30
    per_page = max(1, min(per_page, 100))
    pages = max(1, -(-len(vals) // per_page))
    page = p_int(call.get("page"), "page", 1) or 1
    if not 1 <= page <= pages:
        raise invalid_params(f"page should be within [1, {pages}] range, given {page}")
    chunk = vals.validators[(page - 1) * per_page : page * per_page]
    return {
        "block_height": str(height),
        "validators": [jsonfmt.validator(v) for v in chunk],
        "count": str(len(chunk)),
        "total": str(len(vals)),
    }


@method("consensus_params", "height")
async def consensus_params(env: RPCEnv, call: Call) -> JSON:
    """The parameters at `height` (default the latest): no block changes them here, so those in
    force now, for any height the store keeps."""
    height = _height(env, call) if env.blocks.height or call.get("height") else 0
    params = env.consensus.machine.state.params
    return {
        "block_height": str(height),
        "consensus_params": {
            "block": {"max_bytes": str(params.block_max_bytes), "max_gas": str(params.block_max_gas)},
            "evidence": {
                "max_age_num_blocks": str(params.evidence_max_age_num_blocks),
                "max_age_duration": str(params.evidence_max_age_duration),
                "max_bytes": str(params.evidence_max_bytes),
            },
            "validator": {"pub_key_types": ["ed25519"]},
            "version": {"app": str(params.version_app)},
        },
    }


# -- transactions ---------------------------------------------------------------------------------


def _check(env: RPCEnv, tx: bytes) -> JSON:
    try:
        result = env.mempool.check_tx(tx)
    except MempoolError as exc:
        raise internal(str(exc)) from exc
    return {
        "code": result.code,
        "data": "",
        "log": result.log,
        "codespace": result.codespace,
        "hash": jsonfmt.hex_upper(sha256(tx)),
    }


@method("check_tx", "tx")
async def check_tx(env: RPCEnv, call: Call) -> JSON:
    """The application's verdict on `tx` against the pending state, without adding it to the
    mempool or to the check state (CometBFT's check_tx leaves the app's check state changed)."""
    tx = p_bytes(call.get("tx"), "tx", call.uri)
    result = env.app.check_tx(tx, CheckTxKind.DRY_RUN)
    return {
        "code": result.code,
        "data": "",
        "log": result.log,
        "info": "",
        "gas_wanted": "0",
        "gas_used": "0",
        "events": [],
        "codespace": result.codespace,
    }


@method("broadcast_tx_sync", "tx")
async def broadcast_tx_sync(env: RPCEnv, call: Call) -> JSON:
    return _check(env, p_bytes(call.get("tx"), "tx", call.uri))


@method("broadcast_tx_async", "tx")
async def broadcast_tx_async(env: RPCEnv, call: Call) -> JSON:
    tx = p_bytes(call.get("tx"), "tx", call.uri)
    try:
        env.mempool.check_tx(tx)
    except MempoolError as exc:
        raise internal(str(exc)) from exc
    return {"code": 0, "data": "", "log": "", "codespace": "", "hash": jsonfmt.hex_upper(sha256(tx))}


@method("broadcast_tx_commit", "tx")
async def broadcast_tx_commit(env: RPCEnv, call: Call) -> JSON:
    tx = p_bytes(call.get("tx"), "tx", call.uri)
    tx_hash = sha256(tx)

    def wanted(event: object) -> bool:
        return isinstance(event, TxCommitted) and event.hash == tx_hash

    with env.bus.subscribe(wanted, buffer=1) as subscription:
        try:
            check = env.mempool.check_tx(tx)
        except MempoolError as exc:
            raise internal(str(exc)) from exc
        check_json = jsonfmt.check_tx_result(check)
        if not check.ok:
            return {
                "check_tx": check_json,
                "tx_result": jsonfmt.exec_tx_result(ExecTxResult()),
                "hash": jsonfmt.hex_upper(tx_hash),
                "height": "0",
            }
        with trio.move_on_after(env.timeout_broadcast_tx_commit):
            async for event in subscription.receive:
                assert isinstance(event, TxCommitted)
                return {
                    "check_tx": check_json,
                    "tx_result": jsonfmt.exec_tx_result(event.result),
                    "hash": jsonfmt.hex_upper(tx_hash),
                    "height": str(event.height),
                }
    # CometBFT's words, then what the client needs to know: the tx is in the mempool and may be
    # committed yet (a retry with the same bytes would be a replay), and how to find out
    raise internal(
        f"timed out waiting for tx to be included in a block: tx {jsonfmt.hex_upper(tx_hash)} passed "
        "check_tx and is in the mempool, so it may still be committed; do not send it again, ask "
        f"`tx` with hash=0x{jsonfmt.hex_upper(tx_hash)} (or search tx.hash) after the next blocks"
    )


def _txs_json(env: RPCEnv, positions: list[tuple[int, int]], prove: bool) -> list[JSON]:
    """CometBFT's ResultTx of each (height, index in block), in order; each block, its results
    and (with `prove`) its Merkle proofs are read once for all its txs."""
    out: list[JSON] = []
    loaded: dict[int, tuple[Block, BlockResults, list[MerkleProof]]] = {}
    for height, index in positions:
        if height not in loaded:
            b = _load_block(env, height)
            results = env.executor.load_results(height)
            if results is None:
                raise internal(f"results of block {height} are not stored")
            loaded[height] = (b, results, merkle_proofs(b.txs)[1] if prove else [])
        b, results, proofs = loaded[height]
        if index >= len(b.txs):
            raise internal(f"tx {index} of block {height} is not stored")
        found_tx: JSON = {
            "hash": jsonfmt.hex_upper(sha256(b.txs[index])),
            "height": str(height),
            "index": index,
            "tx_result": jsonfmt.exec_tx_result(results.tx_results[index]),
            "tx": jsonfmt.b64(b.txs[index]),
        }
        if prove:
            found_tx["proof"] = jsonfmt.tx_proof(b.header.data_hash, b.txs[index], proofs[index])
        out.append(found_tx)
    return out


@method("broadcast_evidence", "evidence")
async def broadcast_evidence(env: RPCEnv, call: Call) -> JSON:
    """Verify, keep and gossip evidence of misbehavior: CometBFT's JSON form (`{"type":
    "tendermint/DuplicateVoteEvidence", "value": ...}`, also as a JSON string in the URI form) or
    its canonical bytes (hex or base64, as the block JSON does not show them)."""
    given = call.get("evidence")
    try:
        if isinstance(given, str) and _unquote(given).lstrip().startswith("{"):
            given = json.loads(_unquote(given))
        if isinstance(given, dict):
            evidence = jsonfmt.parse_evidence(given)
        else:
            evidence = DuplicateVoteEvidence.decode(p_bytes(given, "evidence", call.uri))
    except (jsonfmt.ShapeError, DecodeError, ValueError) as exc:
        raise invalid_params(f"evidence: {exc}") from exc
    try:
        env.consensus.driver.submit_evidence(evidence)
    except EvidenceError as exc:
        raise internal(f"failed to add evidence: {exc}") from exc
    return {"hash": jsonfmt.hex_upper(evidence.hash())}  # its sha256 identity (`DuplicateVoteEvidence.key`)


@method("tx", "hash", "prove")
async def tx(env: RPCEnv, call: Call) -> JSON:
    tx_hash = p_bytes(call.get("hash"), "hash", call.uri)
    found = env.blocks.find_tx(tx_hash)
    if found is None:
        raise internal(f"tx ({jsonfmt.hex_upper(tx_hash)}) not found")
    height, index = found
    try:
        return _txs_json(env, [(height, index)], p_bool(call.get("prove"), "prove"))[0]
    except RPCError:
        raise internal(f"tx ({jsonfmt.hex_upper(tx_hash)}) not found") from None


SEARCH_PER_PAGE = 30
SEARCH_MAX_PER_PAGE = 100


def _search_query(env: RPCEnv, call: Call) -> tuple[EventIndex, Query]:
    if env.index is None:
        raise internal("transaction indexing is disabled")
    try:
        return env.index, parse_query(p_str(call.get("query"), "query"))
    except QueryError as exc:
        raise invalid_params(f"query: {exc}") from exc


def _page(call: Call, found: list[Any]) -> list[Any]:
    """The requested page of `found` in the requested order (CometBFT's paging rules)."""
    order = p_str(call.get("order_by"), "order_by")
    if order not in ("", "asc", "desc"):
        raise invalid_params("expected order_by to be either `asc` or `desc` or empty")
    per_page = p_int(call.get("per_page"), "per_page", SEARCH_PER_PAGE) or SEARCH_PER_PAGE
    per_page = SEARCH_PER_PAGE if per_page < 1 else min(per_page, SEARCH_MAX_PER_PAGE)
    pages = max(1, -(-len(found) // per_page))
    page = p_int(call.get("page"), "page", 1)
    if page is None or not 1 <= page <= pages:
        raise invalid_params(f"page should be within [1, {pages}] range, given {page}")
    ordered = found[::-1] if order == "desc" else found
    return ordered[(page - 1) * per_page : page * per_page]


@method("tx_search", "query", "prove", "page", "per_page", "order_by")
async def tx_search(env: RPCEnv, call: Call) -> JSON:
    index, query = _search_query(env, call)
    prove = p_bool(call.get("prove"), "prove")
    try:
        found = index.search_txs(query)
    except SearchError as exc:
        raise internal(str(exc)) from exc
    page = _page(call, found)
    return {
        "txs": _txs_json(env, page, prove),
        "total_count": str(len(found)),
    }


@method("block_search", "query", "page", "per_page", "order_by")
async def block_search(env: RPCEnv, call: Call) -> JSON:
    index, query = _search_query(env, call)
    try:
        found = index.search_blocks(query)
    except SearchError as exc:
        raise internal(str(exc)) from exc
    blocks = []
    for height in _page(call, found):
        b = _load_block(env, height)
        blocks.append({"block_id": _block_id_json(env, b), "block": jsonfmt.block(b)})
    return {"blocks": blocks, "total_count": str(len(found))}


@method("unconfirmed_txs", "limit")
async def unconfirmed_txs(env: RPCEnv, call: Call) -> JSON:
    limit = p_int(call.get("limit"), "limit", 30) or 30
    txs = env.mempool.txs(max(1, min(limit, 100)))
    return {
        "n_txs": str(len(txs)),
        "total": str(len(env.mempool)),
        "total_bytes": str(env.mempool.size_bytes),
        "txs": [jsonfmt.b64(t) for t in txs],
    }


@method("num_unconfirmed_txs")
async def num_unconfirmed_txs(env: RPCEnv, call: Call) -> JSON:
    return {
        "n_txs": str(len(env.mempool)),
        "total": str(len(env.mempool)),
        "total_bytes": str(env.mempool.size_bytes),
        "txs": None,
    }


@method("abci_query", "path", "data", "height", "prove")
async def abci_query(env: RPCEnv, call: Call) -> JSON:
    path = p_str(call.get("path"), "path")
    data = p_bytes(call.get("data"), "data", call.uri, hex_default=True)
    height = p_int(call.get("height"), "height", 0) or 0
    prove = p_bool(call.get("prove"), "prove")
    return {"response": jsonfmt.query_result(env.app.query(path, data, height, prove))}


# -- the ASGI app -------------------------------------------------------------------------------


def _call(name: str, raw_params: Any, uri: bool) -> tuple[Handler, Call]:
    """The handler of method `name` and its parameters by name; RPCError if either is wrong."""
    entry = METHODS.get(name)
    if entry is None:
        raise RPCError(METHOD_NOT_FOUND, "Method not found", name)
    handler, names = entry
    if raw_params is None:
        params: dict[str, Any] = {}
    elif isinstance(raw_params, dict):
        params = raw_params
    elif isinstance(raw_params, list):
        if len(raw_params) > len(names):
            raise invalid_params(f"{name} takes at most {len(names)} parameters")
        params = dict(zip(names, raw_params, strict=False))
    else:
        raise invalid_params("params must be an object or an array")
    unknown = sorted(set(params) - set(names))
    if unknown:
        raise invalid_params(f"unknown parameter {unknown[0]!r} for {name}")
    return handler, Call(params, uri)


async def dispatch(env: RPCEnv, name: str, raw_params: Any, uri: bool) -> JSON:
    if env.stored_only and name in NEEDS_RUNNING_NODE:
        raise RPCError(
            METHOD_NOT_FOUND,
            "Method not found",
            f"{name} needs a running node: derivd inspect serves a stopped node's stored data, read-only",
        )
    handler, call = _call(name, raw_params, uri)
    return await handler(env, call)


def _error(id_: Any, error: RPCError) -> JSON:
    body: JSON = {"code": error.code, "message": error.message}
    if error.data:
        body["data"] = error.data
    return {"jsonrpc": "2.0", "id": id_, "error": body}


async def _one(env: RPCEnv, request: Any) -> JSON:
    if (
        not isinstance(request, dict)
        or request.get("jsonrpc") != "2.0"
        or not isinstance(request.get("method"), str)
    ):
        return _error(
            request.get("id") if isinstance(request, dict) else None,
            RPCError(INVALID_REQUEST, "Invalid Request"),
        )
    id_ = request.get("id", -1)
    if isinstance(id_, bool) or not isinstance(id_, str | int | float | None):
        return _error(
            None, RPCError(INVALID_REQUEST, "Invalid Request", "id must be a string, a number or null")
        )
    try:
        result = await dispatch(env, request["method"], request.get("params"), uri=False)
    except RPCError as exc:
        return _error(id_, exc)
    except Exception as exc:
        log.exception("RPC %s failed", request["method"])
        return _error(id_, internal(f"{type(exc).__name__}: {exc}"))
    return {"jsonrpc": "2.0", "id": id_, "result": result}


_BROADCASTS = frozenset({"broadcast_tx_sync", "broadcast_tx_async", "broadcast_tx_commit"})


async def _admit_ahead(env: RPCEnv, batch: list[Any]) -> None:
    """Before a batch's broadcast calls run one by one, the shared admission work of their txs
    (`Mempool.admission_work`: one signature batch) on a worker thread, while the event loop
    goes on; check_tx then finds the signatures verified. Malformed calls are left to their
    handlers."""
    txs: list[bytes] = []
    for item in batch:
        if isinstance(item, dict) and item.get("method") in _BROADCASTS:
            try:
                _, call = _call(item["method"], item.get("params"), uri=False)
                txs.append(p_bytes(call.get("tx"), "tx", call.uri))  # as the broadcast handlers read it
            except RPCError:
                continue
    if not txs:
        return
    work = env.mempool.admission_work(txs)
    if work is not None:
        await trio.to_thread.run_sync(work)


class Reply(JSONResponse):
    """A JSON response; a string the client sent that cannot be UTF-8 (a lone surrogate escape
    such as "\\ud800", echoed in an id or an error's data) goes back \\u-escaped, not as a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, allow_nan=False, separators=(",", ":")).encode()


class BodyRefused(Reply):
    """The 413 for a body over `max_body_bytes`, with `Connection: close`. While it goes out,
    the rest of the body that arrives is received and dropped: hypercorn queues body chunks for
    the app (ten at most) and, the response complete, queues the disconnect behind them, so an
    app that stopped receiving would leave that last send, and the connection, hanging. Hypercorn
    then closes the connection, since the body was not read to its end."""

    def __init__(self, content: JSON) -> None:
        super().__init__(content, 413, headers={"connection": "close"})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_drop_body, receive)
            await super().__call__(scope, receive, send)
            nursery.cancel_scope.cancel()


async def _drop_body(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while (await receive())["type"] == "http.request":
        pass


async def read_body(request: Request, limit: int) -> bytes | None:
    """The request's body as it arrives; None once it is known to pass `limit` bytes (by its
    Content-Length, before any of it is read, or by what has arrived), the rest left unread."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


class HeaderLimit:
    """`[rpc] max_header_bytes` (Go's MaxHeaderBytes): a request whose line and headers come to
    more bytes than `limit` gets 431 (a WebSocket handshake is refused). Hypercorn's h11 buffer
    limit only cuts headers that arrive incomplete, so the whole request head is measured here."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    @staticmethod
    def head_size(scope: Any) -> int:
        """Bytes of "METHOD /path?query HTTP/1.1\r\n", each "name: value\r\n" and the blank line."""
        query = scope.get("query_string", b"")
        path = scope.get("raw_path") or scope.get("path", "").encode()
        line = len(scope.get("method", "GET")) + 1 + len(path) + (1 + len(query) if query else 0) + 11
        return line + sum(len(name) + len(value) + 4 for name, value in scope.get("headers", ())) + 2

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.head_size(scope) > self.limit:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1009})
                return
            body = b"request header fields too large\n"
            headers = [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 431, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


class ConnectionLimit:
    """At most `limit` HTTP requests in progress and WebSockets open at once (CometBFT's
    `max_open_connections`; hypercorn has no cap on sockets, so the app counts what it serves):
    one more request gets 503, one more WebSocket handshake is refused."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit
        self.active = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self.active >= self.limit:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013})
                return
            error = _error(None, RPCError(INTERNAL_ERROR, "Internal error", "too many open connections"))
            await JSONResponse(error, 503)(scope, receive, send)
            return
        self.active += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.active -= 1


def request_handler(env: RPCEnv) -> RequestHandler:
    """One JSON-RPC request -> its response (what `/websocket` answers a method other than the
    subscriptions with)."""

    async def handle(request: JSON) -> JSON:
        return await _one(env, request)

    return handle


def make_app(env: RPCEnv) -> Starlette:
    async def post(request: Request) -> Response:
        body = await read_body(request, env.max_body_bytes)
        if body is None:
            return BodyRefused(
                _error(None, RPCError(INVALID_REQUEST, "Invalid Request", "request body too large"))
            )
        try:
            payload = parse_json(body)
        except ValueError as exc:
            return Reply(_error(None, RPCError(PARSE_ERROR, "Parse error", str(exc))), 500)
        if isinstance(payload, list):
            if not payload:
                return Reply(_error(None, RPCError(INVALID_REQUEST, "Invalid Request", "empty batch")))
            if len(payload) > env.max_batch:
                error = RPCError(
                    INVALID_REQUEST, "Invalid Request", f"batch of {len(payload)} exceeds {env.max_batch}"
                )
                return Reply(_error(None, error))
            await _admit_ahead(env, payload)
            return Reply([await _one(env, item) for item in payload])
        return Reply(await _one(env, payload))

    served = {
        name: names
        for name, (_, names) in METHODS.items()
        if not (env.stored_only and name in NEEDS_RUNNING_NODE)
    }

    async def openapi(request: Request) -> Response:
        return Reply(document(served))

    async def index(request: Request) -> Response:
        lines = ["Available endpoints:"] + [f"//{request.url.netloc}/{name}" for name in sorted(served)]
        return PlainTextResponse("\n".join(lines) + "\n")

    async def get(request: Request) -> Response:
        name = request.path_params["method"]
        params = dict(request.query_params)
        try:
            result = await dispatch(env, name, params, uri=True)
        except RPCError as exc:
            status_code = 404 if exc.code == METHOD_NOT_FOUND else 500
            return Reply(_error(-1, exc), status_code)
        except Exception as exc:
            log.exception("RPC %s failed", name)
            return Reply(_error(-1, internal(f"{type(exc).__name__}: {exc}")), 500)
        return Reply({"jsonrpc": "2.0", "id": -1, "result": result})

    handle = request_handler(env)
    middleware = []
    if env.max_open_connections:
        middleware.append(Middleware(ConnectionLimit, limit=env.max_open_connections))
    if env.cors_origins:
        middleware.append(
            Middleware(
                CORSMiddleware,
                allow_origins=list(env.cors_origins),
                allow_methods=list(env.cors_methods),
                allow_headers=list(env.cors_headers),
            )
        )
    routes = [] if env.stored_only else [WebSocketRoute("/websocket", WebSocketEndpoint(env.hub, handle))]
    return Starlette(
        middleware=middleware,
        routes=[
            *routes,
            Route("/", post, methods=["POST"]),
            Route("/", index, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/{method}", get, methods=["GET"]),
        ],
    )
