"""The fuzz targets: one function per decoder or loader that takes bytes from outside the node
(a peer, a client, a file), and `TARGETS`, their registry.

Each function feeds its bytes to the real decoder and returns True if it was accepted, False if it
was refused with the decoder's own error (DecodeError, ProtocolViolation, HandshakeError,
PeerMisbehaved, WALError, GenesisError, AppStateError, ConfigError, the RPC's RPCError). Any
other exception escapes: that is a crash. Where a decoder has an encoder, an accepted input must
also be its canonical form: encode(decode(x)) == x (an AssertionError otherwise).

`Target.form` names the structure-aware mutation of `tests.fuzz.mutate` that fits the input.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import logging
import shutil
import tempfile
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal, cast

import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from consensus.app import CheckTxResult
from consensus.blocksync import BlockSync
from consensus.evidence import EvidenceError, decode_evidence_list, verify_evidence
from consensus.mempool import Mempool, MempoolConfig
from consensus.mempool_reactor import MempoolReactor
from consensus.messages import decode_message, encode_message
from consensus.state import ConsensusParams, genesis_state
from consensus.statesync import StateSync
from consensus.types import Block
from consensus.wal import WAL, WALError, parse_records
from execution.block import KeptTxs, decode_tx
from execution.genesis_state import AppStateError, default_exchange_app_state, load_app_state
from execution.tx import Tx
from genesis.genesis import GenesisError, genesis_json_bytes, parse_genesis
from node.config import CONFIG_FILE, ConfigError, config_from_toml, config_to_toml, load_config
from node.events import EventBus
from node.query import Query
from node.rpc import METHODS, NodeInfo, RPCEnv, RPCError, dispatch
from p2p.base import BLOCKSYNC_CHANNEL, MEMPOOL_CHANNEL, STATESYNC_CHUNK_CHANNEL, PeerMisbehaved
from p2p.connection import PacketDecoder, decode_packet, encode_packet
from p2p.errors import HandshakeError, ProtocolViolation
from p2p.nodeinfo import decode_node_info, encode_node_info
from p2p.nodekey import node_id
from p2p.pex import decode_pex_message, encode_pex_message
from p2p.secret_connection import (
    EPHEMERAL_MESSAGE_SIZE,
    FRAME_SIZE,
    MESSAGE_LENGTH_SIZE,
    AuthMessage,
    EphemeralKeyMessage,
    FrameSealer,
    challenge_sign_bytes,
    compute_shared_secret,
    derive_session_keys,
    handshake,
)
from primitives.codec import DecodeError
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from storage.snapshot import Manifest
from tests.execution.chain import Chain
from tests.fuzz import seeds
from tests.sim.memfile import MemFile

Form = Literal["codec", "json", "toml", "wal", "bytes"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """One fuzz target and what its fuzzer needs to know."""

    name: str
    run: Callable[[bytes], bool]
    seeds: Callable[[], list[bytes]]
    form: Form
    """the structure-aware mutation that fits its inputs (`tests.fuzz.mutate`)"""
    seeds_accepted: bool = True
    """every seed is a valid input (checked by the tests); False where seeds probe refusals"""
    max_len: int = 4096
    """the longest input libFuzzer makes"""


# -- transactions ---------------------------------------------------------------------------------


def fuzz_tx(data: bytes) -> bool:
    """`Tx.decode`: a tx or DecodeError; canonical; the sign payload cut from the raw bytes is the
    one its fields encode to."""
    try:
        tx = Tx.decode(data)
    except DecodeError:
        return False
    assert tx.encode() == data, "Tx.decode accepted a non-canonical encoding"
    assert tx.sign_payload() == dataclasses.replace(tx).sign_payload(), "sign payload differs"
    return True


def fuzz_block_tx(data: bytes) -> bool:
    """`execution.block.decode_tx` and `KeptTxs`: never raise; a tx or its DecodeError."""
    result = decode_tx(data)
    kept = KeptTxs(limit=1).keep(data)
    if isinstance(result, DecodeError):
        assert isinstance(kept, DecodeError) and str(kept) == str(result)
        return False
    assert isinstance(result, Tx) and kept == result and result.encode() == data
    return True


# -- p2p ----------------------------------------------------------------------------------------


def fuzz_packet(data: bytes) -> bool:
    """`decode_packet` (an MConnection packet without its length prefix)."""
    try:
        packet = decode_packet(data)
    except ProtocolViolation:
        return False
    assert encode_packet(packet)[4:] == data, "decode_packet accepted a non-canonical packet"
    return True


def fuzz_packet_stream(data: bytes) -> bool:
    """`PacketDecoder.feed` over a byte stream cut in two: the packets it returns are the prefix
    of the stream they encode to."""
    decoder = PacketDecoder()
    cut = data[0] % (len(data) + 1) if data else 0
    packets = []
    try:
        packets += decoder.feed(data[:cut])
        packets += decoder.feed(data[cut:])
    except ProtocolViolation:
        return False
    encoded = b"".join(encode_packet(packet) for packet in packets)
    assert data.startswith(encoded), "PacketDecoder returned packets the stream does not hold"
    return True


def fuzz_node_info(data: bytes) -> bool:
    try:
        info = decode_node_info(data)
    except DecodeError:
        return False
    assert encode_node_info(info) == data, "decode_node_info accepted a non-canonical encoding"
    return True


def fuzz_pex(data: bytes) -> bool:
    try:
        message = decode_pex_message(data)
    except DecodeError:
        return False
    assert encode_pex_message(message) == data, "decode_pex_message accepted a non-canonical encoding"
    return True


def fuzz_ephemeral_key(data: bytes) -> bool:
    try:
        message = EphemeralKeyMessage.decode(data)
    except DecodeError:
        return False
    assert message.encode() == data
    return True


def fuzz_auth_message(data: bytes) -> bool:
    try:
        message = AuthMessage.decode(data)
    except DecodeError:
        return False
    assert message.encode() == data
    return True


_NODE_KEY = PrivateKey.from_seed(sha256(b"fuzz node key"))
_HANDSHAKE_MODES = 5


async def _hostile_peer(stream: trio.abc.Stream, mode: int, rest: bytes) -> None:
    """The other end of a handshake, by `mode`: 0 sends `rest` as raw bytes; 1 a valid ephemeral
    key, then `rest` raw (as if sealed frames); 2 a valid key, then `rest` as the length-prefixed
    authentication message, properly sealed; 3 a valid key, then `rest` as sealed frames' plain
    bytes, length fields included (`FrameSealer.seal_raw`); 4 an honest peer (its node key from
    `rest`). It closes the stream when done, so the node never waits for more."""
    try:
        if mode == 0:
            await stream.send_all(rest)
            return
        ephemeral = X25519PrivateKey.from_private_bytes(sha256(rest))
        local = ephemeral.public_key().public_bytes_raw()
        await stream.send_all(EphemeralKeyMessage(local).encode())
        received = b""
        while len(received) < EPHEMERAL_MESSAGE_SIZE:
            chunk = await stream.receive_some(EPHEMERAL_MESSAGE_SIZE - len(received))
            if not chunk:
                return
            received += chunk
        remote = EphemeralKeyMessage.decode(received).key
        keys = derive_session_keys(local, remote, compute_shared_secret(ephemeral, remote))
        sealer = FrameSealer(keys.send_key)
        if mode == 1:
            await stream.send_all(rest)
        elif mode == 2:
            await stream.send_all(sealer.seal(len(rest).to_bytes(MESSAGE_LENGTH_SIZE, "big") + rest))
        elif mode == 3:
            frames = [
                rest[at : at + FRAME_SIZE].ljust(FRAME_SIZE, b"\0") for at in range(0, len(rest), FRAME_SIZE)
            ]
            await stream.send_all(b"".join(sealer.seal_raw(frame) for frame in frames))
        else:
            key = PrivateKey.from_seed(sha256(b"peer" + rest))
            auth = AuthMessage(key.public_key.raw, key.sign(challenge_sign_bytes(keys.challenge))).encode()
            await stream.send_all(sealer.seal(len(auth).to_bytes(MESSAGE_LENGTH_SIZE, "big") + auth))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


def fuzz_handshake(data: bytes) -> bool:
    """`p2p.secret_connection.handshake` against a peer that plays `data` (see `_hostile_peer`):
    it authenticates the honest peer and ends in HandshakeError for anything else, on trio's
    mock clock (a stalled handshake times out at once)."""
    mode, rest = (data[0] % _HANDSHAKE_MODES, data[1:]) if data else (0, b"")

    async def main() -> bool:
        ours, theirs = trio.testing.memory_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_hostile_peer, theirs, mode, rest)
            try:
                connection = await handshake(ours, _NODE_KEY, 5.0, remote="the fuzzer")
            except HandshakeError:
                return False
            finally:
                await ours.aclose()
        expected = node_id(PrivateKey.from_seed(sha256(b"peer" + rest)).public_key)
        assert mode == 4 and connection.remote_node_id == expected, "a hostile peer authenticated"
        return True

    accepted = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert accepted or mode != 4, "an honest peer's handshake failed"
    return accepted


# -- consensus channels -----------------------------------------------------------------------------


def fuzz_consensus_message(data: bytes) -> bool:
    """`consensus.messages.decode_message`: every message of the consensus state, data and vote
    channels and the evidence channel, and what the WAL records."""
    try:
        message = decode_message(data, "peer")
    except DecodeError:
        return False
    assert encode_message(message) == data, "decode_message accepted a non-canonical encoding"
    return True


def fuzz_block(data: bytes) -> bool:
    """`Block.decode`: what the consensus machine makes of a proposal's parts once complete (and
    block sync of a peer's block)."""
    try:
        block = Block.decode(data)
    except DecodeError:
        return False
    assert block.encode() == data, "Block.decode accepted a non-canonical encoding"
    return True


def fuzz_evidence(data: bytes) -> bool:
    """`decode_evidence_list` of one item: a block's evidence as the evidence pool checks it."""
    try:
        (evidence,) = decode_evidence_list([data])
    except EvidenceError:
        return False
    assert evidence.encode() == data, "DuplicateVoteEvidence.decode accepted a non-canonical encoding"
    return True


class _Peer:
    """A connected peer as the reactors see it (sends are dropped)."""

    id = "f" * 40
    node_info = seeds.node_info()
    is_outbound = True
    is_persistent = False
    remote_address = "127.0.0.1:26656"

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}

    def try_send(self, channel_id: int, message: bytes) -> bool:
        return True

    def get(self, key: str) -> Any:
        return self._values.get(key)

    def set(self, key: str, value: Any) -> None:
        self._values[key] = value


def _received(reactor: Any, channel: int, data: bytes) -> bool:
    """Feed `data` to `reactor.receive`; False if it called the peer a misbehaver."""
    try:
        reactor.receive(channel, _Peer(), data)
    except PeerMisbehaved:
        return False
    return True


def fuzz_mempool_message(data: bytes) -> bool:
    """The mempool reactor's message (a list of txs); the application refuses every tx."""
    mempool = Mempool(MempoolConfig(max_tx_bytes=64 * 1024), lambda tx, kind: CheckTxResult(code=1))
    return _received(MempoolReactor(mempool), MEMPOOL_CHANNEL, data)


class _Blocks:
    """A block store holding block 2 and its commit (`seeds`)."""

    base = height = 2

    def __init__(self) -> None:
        block, commit = seeds.chain()
        self._block, self._commit, self._hash = block.encode(), commit.encode(), block.hash
        self._txs = {sha256(tx): (2, index) for index, tx in enumerate(block.txs)}

    def load_block(self, height: int) -> bytes | None:
        return self._block if height == 2 else None

    def load_seen_commit(self, height: int) -> bytes | None:
        return self._commit if height == 2 else None

    def height_of_hash(self, block_hash: bytes) -> int | None:
        return 2 if block_hash == self._hash else None

    def find_tx(self, tx_hash: bytes) -> tuple[int, int] | None:
        return self._txs.get(tx_hash)


def fuzz_blocksync_message(data: bytes) -> bool:
    """The block sync reactor's messages (status, block request and response, no block)."""
    state = SimpleNamespace(height=2, last_block_height=1)
    reactor = BlockSync(
        cast(Any, None), cast(Any, _Blocks()), cast(Any, state), cast(Any, None), lambda *_: None
    )
    reactor.add_peer(_Peer())
    return _received(reactor, BLOCKSYNC_CHANNEL, data)


class _Snapshots:
    def snapshots(self) -> list[Manifest]:
        return [seeds.manifest()]

    def snapshot_chunk(self, height: int, index: int) -> bytes | None:
        return b"chunk" if height == 40 else None


def fuzz_statesync_message(data: bytes) -> bool:
    """The state sync reactor's messages, on a node that is syncing and fetching the seeds'
    snapshot (so offers and chunks are read, not ignored)."""
    reactor = StateSync(_Snapshots(), lambda *_: None)
    reactor.syncing = True
    # the state of a fetch in progress, which only `sync` sets: every chunk asked of this peer
    reactor._fetching = seeds.manifest()
    reactor._asked = {index: (_Peer.id, 0.0) for index in range(256)}
    return _received(reactor, STATESYNC_CHUNK_CHANNEL, data)


# -- the WAL ------------------------------------------------------------------------------------

_WAL_LOG = logging.getLogger("derivd.wal")


def fuzz_wal(data: bytes) -> bool:
    """A WAL file of any content: opening it cuts a bad tail and never fails; the records kept
    re-encode to exactly the bytes kept; reopening cuts nothing more; replay is the records after
    the last end-height marker, or WALError if a marker is past the stores' height."""
    records, valid = parse_records(data)
    file = MemFile("fuzz.wal")
    file.replace(data)
    _WAL_LOG.disabled = True  # it warns of every tail it cuts: most inputs have one
    try:
        wal = WAL(file)
    finally:
        _WAL_LOG.disabled = False
    assert wal.size == valid and file.read() == data[:valid], "WAL kept other bytes than parse_records"
    again = MemFile("again.wal")
    rewritten = WAL(again, rotate_bytes=2**62)
    for record in records:
        if record.end_height is not None:
            rewritten.write_end_height(record.time, record.end_height)
        else:
            assert record.event is not None
            rewritten.write(record.time, record.event)
    assert again.read() == data[:valid], "a WAL record was not in its canonical form"
    assert parse_records(file.read())[1] == valid, "reopening the WAL would cut more"
    heights = [record.end_height for record in records if record.end_height is not None]
    try:
        replay = wal.replay_after_last_end_height(max(heights, default=0) - 1)
    except WALError:
        assert heights, "WALError without an end-height marker"
    else:
        assert not heights
        assert replay == [record for record in records if record.event is not None]
    return bool(records)


# -- files: genesis, app_state, config -----------------------------------------------------------


def fuzz_genesis(data: bytes) -> bool:
    """`parse_genesis`: a document or GenesisError; what it writes back reads as the same document."""
    try:
        doc = parse_genesis(data, "genesis.json")
    except GenesisError:
        return False
    written = genesis_json_bytes(doc)
    again = parse_genesis(written, "written")
    assert again == doc and genesis_json_bytes(again) == written, "genesis does not read back"
    return True


def fuzz_app_state(data: bytes) -> bool:
    """`execution.genesis_state.load_app_state`: the app_state of init_chain, or AppStateError."""
    try:
        load_app_state(data)
    except AppStateError:
        return False
    return True


def _scratch(prefix: str) -> Path:
    """A new temporary directory, removed when the process exits normally (the fuzz runner's
    workers end with os._exit: theirs are in the artifacts directory, their TMPDIR)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, True)
    return path


@cache
def _config_home() -> Path:
    home = _scratch("derivd-fuzz-config-")
    (home / CONFIG_FILE).parent.mkdir(parents=True)
    return home


def fuzz_config(data: bytes) -> bool:
    """`node.config.load_config` of a config.toml holding `data`: a Config or ConfigError; the
    file it writes for that Config reads back as the same Config."""
    home = _config_home()
    (home / CONFIG_FILE).write_bytes(data)
    try:
        config = load_config(home)
    except ConfigError:
        return False
    written = config_to_toml(config)
    again = config_from_toml(tomllib.loads(written), home, "written")
    assert again == dataclasses.replace(config, unknown_keys=()), "config.toml does not read back"
    return True


# -- RPC parameters -------------------------------------------------------------------------------


class _Index:
    """The event index: tx 0 of block 2 and block 2 match a query that matches their events."""

    TX_EVENTS = {"tx.height": ["2"], "tx.hash": ["AB" * 32], "transfer.amount": ["5"], "tm.event": ["Tx"]}
    BLOCK_EVENTS = {"block.height": ["2"], "block.time": ["2025-06-15T16:00:02Z"], "tm.event": ["NewBlock"]}

    def search_txs(self, query: Query) -> list[tuple[int, int]]:
        return [(2, 0)] if query.matches(self.TX_EVENTS) else []

    def search_blocks(self, query: Query) -> list[int]:
        return [2] if query.matches(self.BLOCK_EVENTS) else []


_NO_PARAMS = frozenset(name for name, (_, params) in METHODS.items() if not params)


@cache
def _rpc_env() -> RPCEnv:
    """An RPC environment over a real application (its genesis: the exchange's markets and one
    funded account) and mempool, the block store of `_Blocks`, no event results, and a consensus
    that verifies evidence against the genesis validators."""
    key = seeds.KEYS[0]
    home = _scratch("derivd-fuzz-rpc-")
    chain = Chain(
        home / "db", {key.address: 10**12}, chain_id=seeds.CHAIN_ID, app_state=default_exchange_app_state()
    )
    validators = [(k.public_key.raw, 10) for k in seeds.KEYS[:3]]
    state = genesis_state(seeds.CHAIN_ID, 1, seeds.TIME, validators, ConsensusParams(), chain.genesis_hash)

    def submit_evidence(evidence: Any) -> bool:
        verify_evidence(seeds.CHAIN_ID, evidence, state.validators, lambda items: [False for _ in items])
        return True

    consensus = SimpleNamespace(
        machine=SimpleNamespace(state=state), driver=SimpleNamespace(submit_evidence=submit_evidence)
    )
    info = NodeInfo(
        node_id="f" * 40,
        listen_addr="",
        network=seeds.CHAIN_ID,
        version="0.38.0",
        moniker="m",
        rpc_address="",
    )
    return RPCEnv(
        info=info,
        genesis=json.loads(seeds.genesis_seeds()[0]),
        blocks=cast(Any, _Blocks()),
        states=cast(Any, SimpleNamespace(load_validators=lambda height: None)),
        executor=cast(Any, SimpleNamespace(load_results=lambda height: None)),
        consensus=cast(Any, consensus),
        mempool=Mempool(MempoolConfig(), chain.app.check_tx, chain.app.admission_work),
        app=chain.app,
        bus=EventBus(),
        validator_pub_key=None,
        timeout_broadcast_tx_commit=0.01,
        index=cast(Any, _Index()),
    )


_METHOD_NAMES = sorted(METHODS)


def fuzz_rpc(data: bytes) -> bool:
    """A JSON-RPC call's parameters, as `node.rpc.dispatch` reads them: `data` is the JSON of
    [method, params, uri] (any other JSON value is the params of a method chosen by its length).
    The call returns a result or raises RPCError (invalid params, or an error of the stores)."""
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return False
    if (
        isinstance(value, list)
        and len(value) == 3
        and isinstance(value[0], str)
        and isinstance(value[2], bool)
    ):
        name, params, uri = value
    else:
        name, params, uri = _METHOD_NAMES[len(data) % len(_METHOD_NAMES)], value, bool(len(data) & 1)
    if name in _NO_PARAMS:
        name = "health"  # the others read a running node's internals; their parameters are none
    env = _rpc_env()

    async def call() -> bool:
        try:
            await dispatch(env, name, params, uri)
        except RPCError:
            return False
        return True

    return trio.run(call)


# -- the registry ---------------------------------------------------------------------------------

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(name="tx", run=fuzz_tx, seeds=seeds.tx_seeds, form="codec"),
        Target(name="block_tx", run=fuzz_block_tx, seeds=seeds.tx_seeds, form="codec"),
        Target(name="packet", run=fuzz_packet, seeds=seeds.packet_seeds, form="codec"),
        Target(name="packet_stream", run=fuzz_packet_stream, seeds=seeds.packet_stream_seeds, form="bytes"),
        Target(name="node_info", run=fuzz_node_info, seeds=seeds.node_info_seeds, form="codec"),
        Target(name="pex", run=fuzz_pex, seeds=seeds.pex_seeds, form="codec"),
        Target(name="ephemeral_key", run=fuzz_ephemeral_key, seeds=seeds.ephemeral_key_seeds, form="codec"),
        Target(name="auth_message", run=fuzz_auth_message, seeds=seeds.auth_message_seeds, form="codec"),
        Target(
            name="handshake",
            run=fuzz_handshake,
            seeds=seeds.handshake_seeds,
            form="bytes",
            seeds_accepted=False,
        ),
        Target(
            name="consensus_message",
            run=fuzz_consensus_message,
            seeds=seeds.consensus_message_seeds,
            form="codec",
            max_len=16384,
        ),
        Target(name="block", run=fuzz_block, seeds=seeds.block_seeds, form="codec", max_len=16384),
        Target(name="evidence", run=fuzz_evidence, seeds=seeds.evidence_seeds, form="codec"),
        Target(
            name="mempool_message",
            run=fuzz_mempool_message,
            seeds=seeds.mempool_message_seeds,
            form="codec",
            max_len=16384,
        ),
        Target(
            name="blocksync_message",
            run=fuzz_blocksync_message,
            seeds=seeds.blocksync_message_seeds,
            form="codec",
            max_len=16384,
        ),
        Target(
            name="statesync_message",
            run=fuzz_statesync_message,
            seeds=seeds.statesync_message_seeds,
            form="codec",
            max_len=32768,
        ),
        Target(name="wal", run=fuzz_wal, seeds=seeds.wal_seeds, form="wal", max_len=32768),
        Target(name="genesis", run=fuzz_genesis, seeds=seeds.genesis_seeds, form="json", max_len=16384),
        Target(
            name="app_state",
            run=fuzz_app_state,
            seeds=seeds.app_state_seeds,
            form="json",
            max_len=16384,
            seeds_accepted=True,
        ),
        Target(name="config", run=fuzz_config, seeds=seeds.config_seeds, form="toml", max_len=65536),
        Target(name="rpc", run=fuzz_rpc, seeds=seeds.rpc_seeds, form="json", seeds_accepted=False),
    )
}
