"""Seed corpora of the fuzz targets, built with the encoders so the fuzzers start from real
structure: one function per target, each returning valid inputs (plus a few near misses).

Nothing here is stored as a file: `python -m tests.fuzz` writes these into a temporary corpus
directory for libFuzzer, and `test_fuzz.py` draws from them.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import BlockPartEvent, ProposalEvent, Step, TimeoutEvent, VoteEvent
from consensus.messages import (
    BlockTxs,
    BlockTxsRequest,
    CompactBlock,
    DecidedBlock,
    EvidenceMessage,
    RoundStep,
    WireMessage,
    encode_message,
)
from consensus.types import Block, BlockID, Commit, PartSet, PartSetHeader, Proposal, Vote, VoteType
from consensus.wal import WAL
from execution.genesis_state import default_exchange_app_state, exported_app_state
from execution.tx import (
    Action,
    AmendOrder,
    CancelAll,
    CancelOrder,
    Liquidate,
    OracleVote,
    PlaceOrder,
    PlaceTrigger,
    Transfer,
    UnknownAction,
    build_tx,
)
from genesis.genesis import genesis_json_bytes, new_genesis
from node.config import Config, config_to_toml
from p2p.address import NetAddress
from p2p.base import NodeInfo
from p2p.connection import Packet, PacketMsg, PacketPing, PacketPong, encode_packet
from p2p.nodeinfo import encode_node_info
from p2p.nodekey import node_id
from p2p.pex import PexAddrs, PexRequest, encode_pex_message
from p2p.secret_connection import AuthMessage, EphemeralKeyMessage
from primitives import codec
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from storage.snapshot import CHUNKS, Manifest
from tests.consensus.light_chain import CHAIN, header, sign, vset
from tests.sim.memfile import MemFile

KEYS = [PrivateKey.from_seed(sha256(b"fuzz %d" % i)) for i in range(4)]
CHAIN_ID = "fuzz-chain"
TIME = 1_750_000_000 * 10**9
HASH = sha256(b"block")


def _vote(kind: VoteType, block_hash: bytes, index: int = 0) -> Vote:
    block_id = (
        BlockID(block_hash, PartSetHeader(1, sha256(block_hash)))
        if block_hash
        else BlockID(b"", PartSetHeader(0, b""))
    )
    key = KEYS[index]
    unsigned = Vote(kind, 5, 1, block_id, TIME, key.address.raw, index)
    return unsigned.with_signature(key.sign(unsigned.sign_bytes(CHAIN_ID)))


@cache
def chain() -> tuple[Block, Commit]:
    """A signed block of height 2 with two txs, and its commit."""
    validators = vset([0, 1, 2])
    first = header(1, validators, validators)
    last_commit = sign(first, validators)
    block = Block(header(2, validators, validators), tuple(tx_seeds()[:2]), (), last_commit)
    return block, sign(block.header, validators)


def evidence() -> DuplicateVoteEvidence:
    a, b = _vote(VoteType.PREVOTE, HASH), _vote(VoteType.PREVOTE, b"")
    first, second = sorted((a, b), key=lambda v: codec.encode(v.block_id.to_fields()))
    return DuplicateVoteEvidence(first, second, 30, 10, TIME)


@cache
def tx_seeds() -> list[bytes]:
    """Signed txs of every action kind (built by `build_tx`, so they follow the wire format)."""
    key, to = KEYS[0], KEYS[1].address
    actions: list[Action] = [
        Transfer(to, 1_000_000),
        PlaceOrder(1, 0, 10_000, 50_000, 0, 0, 7, 120),
        PlaceOrder(2, 1, 2**63 - 1, 1, 3, 1, 2**64 - 1, 0),
        CancelOrder(1, 0, 12),
        CancelOrder(1, 1, 2**64 - 1),
        CancelAll(0),
        AmendOrder(1, 4, 20_000, 51_000),
        OracleVote(((1, 50_000), (2, 3_000))),
        Liquidate(to),
        PlaceTrigger(1, 1, 10_000, 45_000, 44_000, 0, 1, 9),
        UnknownAction(99, codec.encode([99, 1, b"x"])),
    ]
    txs = [build_tx(key, CHAIN_ID, 1_700_000_000_000 + i, [action]) for i, action in enumerate(actions)]
    txs.append(build_tx(key, CHAIN_ID, 7, actions[:10]))
    txs.append(build_tx(key, CHAIN_ID, 8, [CancelAll(n) for n in range(64)]))
    txs.append(build_tx(key, CHAIN_ID, 9, []))
    return txs


def packet_seeds() -> list[bytes]:
    packets: list[Packet] = [
        PacketPing(),
        PacketPong(),
        PacketMsg(0x20, True, b"\x92\x05\x93\x01\x00\x03"),
        PacketMsg(0x30, False, bytes(1024)),
        PacketMsg(255, True, b""),
    ]
    return [encode_packet(packet)[4:] for packet in packets]


def packet_stream_seeds() -> list[bytes]:
    """Length-prefixed packets back to back, as `PacketDecoder` reads them."""
    packets = [encode_packet(p) for p in (PacketPing(), PacketMsg(0x22, True, b"vote"), PacketPong())]
    return [b"".join(packets), packets[1][:7], packets[0] + packets[1] * 3]


def node_info(**changes: object) -> NodeInfo:
    fields: dict[str, object] = {
        "node_id": node_id(KEYS[0].public_key),
        "listen_addr": "tcp://0.0.0.0:26656",
        "network": CHAIN_ID,
        "version": "0.38.0",
        "channels": bytes([0x00, 0x20, 0x21, 0x22, 0x30, 0x38, 0x40, 0x60, 0x61]),
        "moniker": "validator-0",
        "other": {"rpc_address": "tcp://127.0.0.1:26657", "tx_index": "on"},
    }
    return NodeInfo(**(fields | changes))  # type: ignore[arg-type]


def node_info_seeds() -> list[bytes]:
    return [
        encode_node_info(node_info()),
        encode_node_info(node_info(other={}, channels=b"", moniker="")),
        encode_node_info(node_info(listen_addr="[::1]:1", protocol_app=2**64 - 1)),
    ]


def pex_seeds() -> list[bytes]:
    addresses = tuple(
        NetAddress(node_id(key.public_key), host, port)
        for key, (host, port) in zip(
            KEYS, [("127.0.0.1", 26656), ("::1", 1), ("node.example", 65535)], strict=False
        )
    )
    return [
        encode_pex_message(PexRequest()),
        encode_pex_message(PexAddrs(addresses)),
        encode_pex_message(PexAddrs(())),
    ]


def ephemeral_key_seeds() -> list[bytes]:
    return [EphemeralKeyMessage(sha256(b"x25519")).encode(), EphemeralKeyMessage(bytes(32)).encode()]


def auth_message_seeds() -> list[bytes]:
    key = KEYS[0]
    return [AuthMessage(key.public_key.raw, key.sign(b"challenge")).encode()]


def wire_messages() -> list[WireMessage]:
    """One message of every kind the consensus reactor and the WAL carry."""
    block, commit = chain()
    parts = PartSet.from_data(block.encode(), 256)
    block_id = BlockID(block.hash, parts.header)
    unsigned = Proposal(2, 1, 0, block_id, TIME)
    proposal = unsigned.with_signature(KEYS[0].sign(unsigned.sign_bytes(CHAIN)))
    part = parts.get(1)
    assert part is not None
    return [
        ProposalEvent(proposal),
        BlockPartEvent(2, 1, part),
        VoteEvent(_vote(VoteType.PRECOMMIT, HASH, 2)),
        VoteEvent(_vote(VoteType.PREVOTE, b"", 1)),
        EvidenceMessage(evidence()),
        RoundStep(2, 0, 4),
        DecidedBlock(block, commit),
        CompactBlock(
            round=0,
            block_id=block_id,
            header=block.header,
            tx_hashes=tuple(sha256(tx) for tx in block.txs),
            evidence=(evidence().encode(),),
            last_commit=block.last_commit,
        ),
        BlockTxsRequest(2, 0, block.hash, (0, 1)),
        BlockTxs(2, 0, block.hash, tuple(enumerate(block.txs))),
    ]


def consensus_message_seeds() -> list[bytes]:
    return [encode_message(message) for message in wire_messages()]


def block_seeds() -> list[bytes]:
    block, _ = chain()
    empty = Block(block.header, (), (), block.last_commit)
    with_evidence = Block(block.header, block.txs, (evidence().encode(),), block.last_commit)
    return [block.encode(), empty.encode(), with_evidence.encode()]


def evidence_seeds() -> list[bytes]:
    return [evidence().encode()]


def mempool_message_seeds() -> list[bytes]:
    txs = tx_seeds()
    return [codec.encode(list(txs[:3])), codec.encode([txs[0]]), codec.encode([b"\x00"] * 500)]


def blocksync_message_seeds() -> list[bytes]:
    block, commit = chain()
    return [
        codec.encode([1]),
        codec.encode([2, 1, 40]),
        codec.encode([3, 2]),
        codec.encode([4, block.to_fields(), commit.to_fields()]),
        codec.encode([5, 7]),
    ]


@cache
def manifest() -> Manifest:
    entries = tuple((i % 3, b"" if i % 3 == 0 else sha256(b"%d" % i)) for i in range(CHUNKS))
    return Manifest(height=40, root=sha256(b"root"), entries=entries)


def statesync_message_seeds() -> list[bytes]:
    m = manifest()
    chunk = codec.encode([[b"a:key", b"value"]])
    return [
        codec.encode([1]),
        codec.encode([2, m.height, 1, CHUNKS, m.hash, m.encode()]),
        codec.encode([3, m.height, 1, 17]),
        codec.encode([4, m.height, 1, 17, chunk, 0]),
        codec.encode([4, m.height, 1, 3, b"", 1]),
    ]


def wal_seeds() -> list[bytes]:
    """WAL files: every record kind, and one with a torn tail."""
    file = MemFile("fuzz.wal")
    wal = WAL(file)
    wal.write_end_height(TIME, 1)
    for i, message in enumerate(wire_messages()):
        if isinstance(message, ProposalEvent | BlockPartEvent | VoteEvent):
            wal.write(TIME + i, message)
    wal.write(TIME + 9, VoteEvent(_vote(VoteType.PREVOTE, HASH), peer="a" * 40))
    wal.write(TIME + 10, TimeoutEvent(2, 1, Step.PREVOTE_WAIT))
    wal.write_end_height(TIME + 11, 2)
    whole = file.read()
    return [whole, whole[:-5], whole[: len(whole) // 2]]


def genesis_seeds() -> list[bytes]:
    validators = [(key.public_key.raw, 10 * (i + 1), f"validator-{i}") for i, key in enumerate(KEYS[:3])]
    app_state = default_exchange_app_state() | {
        "accounts": [{"address": str(KEYS[0].address), "balance": "1000000"}]
    }
    doc = new_genesis(CHAIN_ID, validators, TIME, app_state)
    small = new_genesis("c", validators[:1], 0, {})
    return [genesis_json_bytes(doc), genesis_json_bytes(small)]


def app_state_seeds() -> list[bytes]:
    full = default_exchange_app_state() | {
        "accounts": [
            {"address": str(KEYS[0].address), "balance": "1000000"},
            {"address": str(KEYS[1].address), "balance": 5},
        ]
    }
    exported = exported_app_state(12, [(b"a:acct", b"\x01\x02"), (b"a:mkt", b"\x03")])
    return [json.dumps(full).encode(), json.dumps(exported).encode(), b"{}", b""]


def config_seeds() -> list[bytes]:
    default = Config.default(Path("/nonexistent"), "fuzz-node")
    changed = default.with_overrides(
        **{
            "p2p.persistent_peers": f"{node_id(KEYS[1].public_key)}@127.0.0.1:26656",
            "rpc.cors_allowed_origins": "*",
            "consensus.timeout_commit": "1m30s",
        }
    )
    return [config_to_toml(default).encode(), config_to_toml(changed).encode(), b'moniker = "m"\n']


def rpc_seeds() -> list[bytes]:
    """JSON-RPC calls as [method, params, uri]: every method with parameters, by name and by
    position, in the JSON and the URI forms."""
    tx = tx_seeds()[0]
    b64 = __import__("base64").b64encode(tx).decode()
    calls: list[list[object]] = [
        ["block", {"height": "1"}, False],
        ["block", ["2"], True],
        ["block_by_hash", {"hash": "0x" + HASH.hex()}, True],
        ["blockchain", {"minHeight": "1", "maxHeight": "3"}, False],
        ["header", {"height": 1}, False],
        ["header_by_hash", ["AAAA"], False],
        ["commit", {"height": "1"}, True],
        ["block_results", {"height": "2"}, False],
        ["validators", {"height": "1", "page": "1", "per_page": "30"}, False],
        ["consensus_params", {"height": "1"}, False],
        ["check_tx", {"tx": b64}, False],
        ["broadcast_tx_sync", {"tx": "0x" + tx.hex()}, True],
        ["broadcast_tx_async", [b64], False],
        ["broadcast_tx_commit", {"tx": '"text"'}, True],
        ["broadcast_evidence", {"evidence": evidence().encode().hex()}, False],
        ["tx", {"hash": "0x" + sha256(tx).hex(), "prove": "true"}, True],
        ["tx_search", {"query": "tx.height=5", "page": "1", "per_page": "10", "order_by": "desc"}, False],
        ["block_search", {"query": "block.height > 1 AND block.height <= 3", "order_by": "asc"}, False],
        ["unconfirmed_txs", {"limit": "5"}, False],
        ["abci_query", {"path": "/account", "data": KEYS[0].address.raw.hex(), "height": "0"}, False],
        ["abci_query", ["/store", "0x00", "1", "false"], True],
        ["genesis_chunked", {"chunk": "0"}, False],
        ["status", None, False],
    ]
    return [json.dumps(call).encode() for call in calls]


def handshake_seeds() -> list[bytes]:
    """The handshake target's inputs: a mode byte, then what the peer does (see the target)."""
    key = KEYS[1]
    return [
        b"\x00" + EphemeralKeyMessage(sha256(b"garbage key")).encode() + bytes(100),
        b"\x01" + key.sign(b"x")[:32],
        b"\x02" + AuthMessage(key.public_key.raw, key.sign(b"wrong challenge")).encode(),
        b"\x03" + codec.encode([b"\x00" * 32, b"\x00" * 64]),
        b"\x04",
    ]
