"""Block sync between real node cores: a single validator builds a chain in one LevelDB; a fresh
node over another LevelDB, with the same genesis, catches up through `BlockSync` from fake peers
whose requests are answered by the source node's own BlockSync (a small pump per peer), all
under trio's mock clock."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.blocksync import (
    BLOCK_REQUEST,
    BLOCK_RESPONSE,
    MAX_PENDING_PER_PEER,
    NO_BLOCK,
    REQUEST_TIMEOUT,
    STATUS_REQUEST,
    STATUS_RESPONSE,
    BlockSync,
)
from consensus.state import ChainState
from consensus.types import Commit
from execution.app import ExchangeApp
from p2p.base import BLOCKSYNC_CHANNEL, PeerMisbehaved
from primitives.codec import Value, decode, encode, field_int, field_list
from primitives.keys import PrivateKey
from tests.consensus.fakes import FakePeer, Node, genesis_request, open_node, run_to_height, validator_keys

VALIDATOR, BYSTANDER = validator_keys(2)
GENESIS = genesis_request([VALIDATOR])
SOURCE_HEIGHT = 25  # more than MAX_PENDING_PER_PEER, so that the request window matters


def message(raw: bytes) -> list[Value]:
    return field_list(decode(raw, max_size=1 << 30), "block sync message")


def kind_of(raw: bytes) -> int:
    return field_int(message(raw)[0], "kind")


def requested_heights(peer: FakePeer) -> list[int]:
    return [
        field_int(m[1], "height") for m in map(message, peer.on(BLOCKSYNC_CHANNEL)) if m[0] == BLOCK_REQUEST
    ]


Tamper = Callable[[bytes], bytes]


def untouched(raw: bytes) -> bytes:
    return raw


def bad_commit_signature(raw: bytes) -> bytes:
    """A block response whose commit carries a corrupted signature."""
    fields = message(raw)
    if fields[0] != BLOCK_RESPONSE:
        return raw
    commit = field_list(fields[2], "commit")
    signatures = field_list(commit[3], "signatures")
    first = field_list(signatures[0], "signature")
    signature = bytearray(first[3])  # type: ignore[arg-type]
    signature[0] ^= 1
    first[3] = bytes(signature)
    return encode(fields)


def with_commit(commit: Value) -> Tamper:
    """Block responses carrying `commit` (a valid commit, of another block) instead of theirs."""

    def tamper(raw: bytes) -> bytes:
        fields = message(raw)
        if fields[0] != BLOCK_RESPONSE:
            return raw
        return encode([BLOCK_RESPONSE, fields[1], commit])

    return tamper


@dataclass
class Remote:
    """A peer of the syncing node that answers its block sync messages from a source node's
    BlockSync (optionally tampering with the answers) and counts requests in flight."""

    peer: FakePeer
    server: BlockSync
    tamper: Tamper = untouched
    outstanding: int = 0
    max_outstanding: int = 0
    back: FakePeer = field(init=False)

    def __post_init__(self) -> None:
        self.back = FakePeer(f"view of {self.peer.id}")

    async def serve(self, client: BlockSync) -> None:
        done = 0
        while True:
            await self.peer.wait_count(done + 1)
            batch, done = self.peer.sent[done:], len(self.peer.sent)
            self.outstanding += sum(kind_of(raw) == BLOCK_REQUEST for _, raw in batch)
            self.max_outstanding = max(self.max_outstanding, self.outstanding)
            for channel, raw in batch:
                assert channel == BLOCKSYNC_CHANNEL
                start = len(self.back.sent)
                self.server.receive(channel, self.back, raw)
                for _, answer in self.back.sent[start:]:
                    if kind_of(answer) in (BLOCK_RESPONSE, NO_BLOCK):
                        self.outstanding -= 1
                    if not self.peer.gone:
                        client.receive(channel, self.peer, self.tamper(answer))


@dataclass
class Syncing:
    """The fresh node with its BlockSync; `ban` drops the peer as the switch would."""

    node: Node
    sync: BlockSync = field(init=False)
    peers: dict[str, FakePeer] = field(default_factory=dict)
    bans: list[tuple[str, str]] = field(default_factory=list)
    applied: list[int] = field(default_factory=list)
    """heights `on_applied` was told of"""

    def on_applied(self, state: ChainState, evidence: tuple[bytes, ...]) -> None:
        self.applied.append(state.last_block_height)

    def ban(self, peer_id: str, reason: str) -> None:
        self.bans.append((peer_id, reason))
        peer = self.peers.get(peer_id)
        if peer is not None:
            peer.gone = True
            self.sync.remove_peer(peer, reason)

    def connect(self, peer: FakePeer) -> FakePeer:
        self.peers[peer.id] = peer
        self.sync.add_peer(peer)
        return peer


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Callable[[str, PrivateKey], Node]]:
    opened: list[Node] = []

    def make(name: str, key: PrivateKey, chain_id: str = GENESIS.chain_id) -> Node:
        genesis = GENESIS if chain_id == GENESIS.chain_id else genesis_request([VALIDATOR], chain_id)
        node = open_node(tmp_path / name, key, genesis)
        opened.append(node)
        return node

    yield make
    for node in opened:
        node.close()


async def source_chain(
    make: Callable[..., Node], name: str = "source", chain_id: str = GENESIS.chain_id
) -> Node:
    node: Node = make(name, VALIDATOR, chain_id)
    await run_to_height(node.core, SOURCE_HEIGHT + 1)
    assert node.core.blocks.height == SOURCE_HEIGHT
    return node


def server_of(node: Node) -> BlockSync:
    core = node.core
    return BlockSync(
        core.executor, core.blocks, core.service.machine.state, node.verifier.verify_batch, lambda p, r: None
    )


def syncing(node: Node, status_wait: float = 2.0) -> Syncing:
    s = Syncing(node)
    core = node.core
    s.sync = BlockSync(
        core.executor,
        core.blocks,
        core.service.machine.state,
        node.verifier.verify_batch,
        s.ban,
        status_wait,
        on_applied=s.on_applied,
    )
    return s


def assert_same_chain(synced: Node, source: Node, height: int) -> None:
    assert synced.core.blocks.height == height
    for h in range(1, height + 1):
        assert synced.core.blocks.hash_at(h) == source.core.blocks.hash_at(h), h
        assert synced.core.blocks.load_seen_commit(h) == source.core.blocks.load_seen_commit(h), h
    app = synced.core.executor.app
    assert isinstance(app, ExchangeApp)
    info = app.info()
    assert info.last_block_height == height
    assert info.last_block_app_hash == source.core.service.machine.state.app_hash


async def run_sync(
    s: Syncing, remotes: list[Remote], nursery: trio.Nursery
) -> tuple[ChainState, Commit | None]:
    for remote in remotes:
        nursery.start_soon(remote.serve, s.sync)
        s.connect(remote.peer)
    with trio.fail_after(120):  # virtual seconds
        return await s.sync.sync()


# -- syncing --------------------------------------------------------------------------------------


async def test_a_fresh_node_syncs_to_the_source_height(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    source = await source_chain(nodes)
    fresh = syncing(nodes("fresh", BYSTANDER))
    remote = Remote(FakePeer("source"), server_of(source))
    async with trio.open_nursery() as nursery:
        state, commit = await run_sync(fresh, [remote], nursery)
        nursery.cancel_scope.cancel()

    assert state.last_block_height == SOURCE_HEIGHT
    assert state.app_hash == source.core.service.machine.state.app_hash
    assert state == source.core.service.machine.state
    assert commit is not None
    assert commit.encode() == source.core.blocks.load_seen_commit(SOURCE_HEIGHT)
    assert_same_chain(fresh.node, source, SOURCE_HEIGHT)
    assert not fresh.sync.syncing and fresh.sync.synced_blocks == SOURCE_HEIGHT
    assert fresh.applied == list(range(1, SOURCE_HEIGHT + 1))
    assert fresh.bans == []
    assert sorted(requested_heights(remote.peer)) == list(range(1, SOURCE_HEIGHT + 1))  # each once
    assert remote.max_outstanding == MAX_PENDING_PER_PEER  # the window is used, never exceeded


async def test_two_peers_share_the_work_and_the_validator_carries_on_after_the_hand_over(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    source = await source_chain(nodes)
    # The same validator key in a separate home (the source is stopped for good).
    fresh = syncing(nodes("fresh", VALIDATOR))
    remotes = [Remote(FakePeer(name), server_of(source)) for name in ("p1", "p2")]
    async with trio.open_nursery() as nursery:
        state, commit = await run_sync(fresh, remotes, nursery)
        nursery.cancel_scope.cancel()

    assert_same_chain(fresh.node, source, SOURCE_HEIGHT)
    first, second = (requested_heights(r.peer) for r in remotes)
    assert first and second and not set(first) & set(second)
    assert sorted(first + second) == list(range(1, SOURCE_HEIGHT + 1))
    assert all(r.max_outstanding <= MAX_PENDING_PER_PEER for r in remotes)

    core = fresh.node.core
    core.service.start_from(state, commit)
    await run_to_height(core, SOURCE_HEIGHT + 3)
    assert core.blocks.height == SOURCE_HEIGHT + 2
    assert core.blocks.hash_at(SOURCE_HEIGHT) == source.core.blocks.hash_at(SOURCE_HEIGHT)


@pytest.mark.parametrize("fault", ["bad-signature", "other-chain", "commit-of-another-block"])
async def test_a_peer_sending_a_bad_block_is_banned_and_the_block_fetched_elsewhere(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock, fault: str
) -> None:
    source = await source_chain(nodes)
    tamper: Tamper = untouched
    bad_server = server_of(source)
    if fault == "bad-signature":
        tamper = bad_commit_signature
    elif fault == "other-chain":
        bad_server = server_of(await source_chain(nodes, "elsewhere", "another-chain"))
    else:
        tamper = with_commit(decode(source.core.blocks.load_seen_commit(SOURCE_HEIGHT) or b""))
    fresh = syncing(nodes("fresh", BYSTANDER))
    # "a-bad" sorts first: it is asked for height 1 before anyone else.
    bad = Remote(FakePeer("a-bad"), bad_server, tamper)
    good = Remote(FakePeer("b-good"), server_of(source))
    async with trio.open_nursery() as nursery:
        state, _ = await run_sync(fresh, [bad, good], nursery)
        nursery.cancel_scope.cancel()

    assert state.last_block_height == SOURCE_HEIGHT
    assert_same_chain(fresh.node, source, SOURCE_HEIGHT)
    assert fresh.bans, "the bad peer was not banned"
    assert {peer_id for peer_id, _ in fresh.bans} == {"a-bad"}
    assert all("bad block" in reason for _, reason in fresh.bans)
    assert requested_heights(bad.peer)[0] == 1
    assert 1 in requested_heights(good.peer)
    assert bad.peer.gone


async def test_a_banned_peer_is_banned_once(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """Once a peer has proven bad, the other blocks it sent are dropped with it, not verified
    (and it banned again) one by one as the sync reaches their heights."""
    source = await source_chain(nodes)
    fresh = syncing(nodes("fresh", BYSTANDER))
    bad = Remote(FakePeer("a-bad"), server_of(source), bad_commit_signature)
    good = Remote(FakePeer("b-good"), server_of(source))
    async with trio.open_nursery() as nursery:
        await run_sync(fresh, [bad, good], nursery)
        nursery.cancel_scope.cancel()
    assert len(requested_heights(bad.peer)) > 1
    assert [peer_id for peer_id, _ in fresh.bans] == ["a-bad"]


async def test_a_peer_that_does_not_answer_is_worked_around(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """Requests to a peer that never answers time out and go to another peer."""
    source = await source_chain(nodes)
    fresh = syncing(nodes("fresh", BYSTANDER))
    good = Remote(FakePeer("b-good"), server_of(source))
    async with trio.open_nursery() as nursery:
        silent = fresh.connect(FakePeer("a-silent"))
        fresh.sync.receive(BLOCKSYNC_CHANNEL, silent, encode([STATUS_RESPONSE, 1, SOURCE_HEIGHT]))
        started = trio.current_time()
        state, _ = await run_sync(fresh, [good], nursery)
        nursery.cancel_scope.cancel()
    assert state.last_block_height == SOURCE_HEIGHT
    assert_same_chain(fresh.node, source, SOURCE_HEIGHT)
    assert requested_heights(silent)[0] == 1 and 1 in requested_heights(good.peer)
    assert trio.current_time() - started >= REQUEST_TIMEOUT
    assert fresh.bans == []


async def test_a_peer_whose_send_queue_stays_full_does_not_stall_the_sync(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """A request that cannot be queued to the least busy peer goes to the next one."""
    source = await source_chain(nodes)
    fresh = syncing(nodes("fresh", BYSTANDER))
    good = Remote(FakePeer("b-good"), server_of(source))
    async with trio.open_nursery() as nursery:
        clogged = fresh.connect(FakePeer("a-clogged", full=True))
        fresh.sync.receive(BLOCKSYNC_CHANNEL, clogged, encode([STATUS_RESPONSE, 1, SOURCE_HEIGHT]))
        state, _ = await run_sync(fresh, [good], nursery)
        nursery.cancel_scope.cancel()
    assert state.last_block_height == SOURCE_HEIGHT
    assert_same_chain(fresh.node, source, SOURCE_HEIGHT)
    assert clogged.sent == [] and clogged.refused


async def test_unsolicited_block_responses_are_ignored(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    source = await source_chain(nodes)
    server = server_of(source)
    fresh = syncing(nodes("fresh", BYSTANDER))
    stranger = FakePeer("stranger")  # never connected
    meddler = fresh.connect(FakePeer("meddler"))  # connected, reports nothing, asked nothing
    good = Remote(FakePeer("good"), server)

    def response(height: int, tamper: Tamper = untouched) -> bytes:
        back = FakePeer("back")
        server.receive(BLOCKSYNC_CHANNEL, back, encode([BLOCK_REQUEST, height]))
        [(_, raw)] = back.sent
        return tamper(raw)

    async with trio.open_nursery() as nursery:
        # Before anything was asked: a forged block 1 from each.
        fresh.sync.receive(BLOCKSYNC_CHANNEL, stranger, response(1, bad_commit_signature))
        fresh.sync.receive(BLOCKSYNC_CHANNEL, meddler, response(1, bad_commit_signature))
        # While block 2 is asked of `good` only: a forged block 2 from the meddler.
        fresh.connect(good.peer)
        fresh.sync.receive(BLOCKSYNC_CHANNEL, good.peer, encode([STATUS_RESPONSE, 1, SOURCE_HEIGHT]))
        synced: list[ChainState] = []
        done = trio.Event()

        async def run() -> None:
            state, _ = await fresh.sync.sync()
            synced.append(state)
            done.set()

        nursery.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        assert requested_heights(good.peer) == list(range(1, MAX_PENDING_PER_PEER + 1))
        assert requested_heights(meddler) == []
        fresh.sync.receive(BLOCKSYNC_CHANNEL, meddler, response(2, bad_commit_signature))
        nursery.start_soon(good.serve, fresh.sync)
        with trio.fail_after(120):
            await done.wait()
        nursery.cancel_scope.cancel()

    assert [state.last_block_height for state in synced] == [SOURCE_HEIGHT]
    assert fresh.bans == []
    assert_same_chain(fresh.node, source, SOURCE_HEIGHT)


async def test_a_node_without_peers_hands_over_after_the_status_wait(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = nodes("alone", VALIDATOR)
    fresh = syncing(node, status_wait=3.0)
    started = trio.current_time()
    state, commit = await fresh.sync.sync()
    waited = trio.current_time() - started
    assert 3.0 <= waited < 3.5
    assert (state.last_block_height, commit) == (0, None)
    assert state == node.core.service.machine.state
    assert not fresh.sync.syncing and fresh.sync.synced_blocks == 0


async def test_a_node_whose_peers_have_nothing_hands_over_after_the_status_wait(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    peer_node = nodes("peer", VALIDATOR)
    fresh = syncing(nodes("fresh", BYSTANDER), status_wait=2.0)
    remote = Remote(FakePeer("empty"), server_of(peer_node))
    started = trio.current_time()
    async with trio.open_nursery() as nursery:
        state, commit = await run_sync(fresh, [remote], nursery)
        nursery.cancel_scope.cancel()
    assert 2.0 <= trio.current_time() - started < 2.5
    assert (state.last_block_height, commit) == (0, None)
    assert requested_heights(remote.peer) == []


# -- serving and the request window ---------------------------------------------------------------


async def test_status_and_block_requests_are_answered_from_the_store(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    source = await source_chain(nodes)
    blocks = source.core.blocks
    server = server_of(source)
    peer = FakePeer("asker")
    server.add_peer(peer)  # on connecting: ask its status, tell ours
    assert [message(raw) for raw in peer.on(BLOCKSYNC_CHANNEL)] == [
        [STATUS_REQUEST],
        [STATUS_RESPONSE, 1, SOURCE_HEIGHT],
    ]
    peer.sent.clear()

    server.receive(BLOCKSYNC_CHANNEL, peer, encode([STATUS_REQUEST]))
    server.receive(BLOCKSYNC_CHANNEL, peer, encode([BLOCK_REQUEST, 7]))
    server.receive(BLOCKSYNC_CHANNEL, peer, encode([BLOCK_REQUEST, SOURCE_HEIGHT + 1]))
    server.receive(BLOCKSYNC_CHANNEL, peer, encode([BLOCK_REQUEST, 0]))
    status, block, missing, zero = (message(raw) for raw in peer.on(BLOCKSYNC_CHANNEL))
    assert status == [STATUS_RESPONSE, blocks.base, blocks.height] == [STATUS_RESPONSE, 1, SOURCE_HEIGHT]
    assert block == [
        BLOCK_RESPONSE,
        decode(blocks.load_block(7) or b""),
        decode(blocks.load_seen_commit(7) or b""),
    ]
    assert missing == [NO_BLOCK, SOURCE_HEIGHT + 1]
    assert zero == [NO_BLOCK, 0]


@pytest.mark.parametrize(
    "raw",
    [b"\xc1", encode([]), encode([9]), encode([BLOCK_RESPONSE, [1], [2]]), encode([STATUS_RESPONSE, -1, 3])],
    ids=["garbage", "empty", "unknown-kind", "bad-block", "negative-status"],
)
async def test_undecodable_block_sync_messages_are_misbehaviour(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock, raw: bytes
) -> None:
    fresh = syncing(nodes("fresh", BYSTANDER))
    peer = fresh.connect(FakePeer("p"))
    with pytest.raises(PeerMisbehaved):
        fresh.sync.receive(BLOCKSYNC_CHANNEL, peer, raw)


async def test_requests_per_peer_never_exceed_the_limit(
    nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    source = await source_chain(nodes)
    server = server_of(source)
    fresh = syncing(nodes("fresh", BYSTANDER))
    far = 1000
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fresh.sync.sync)
        slow = fresh.connect(FakePeer("slow"))
        fresh.sync.receive(BLOCKSYNC_CHANNEL, slow, encode([STATUS_RESPONSE, 1, far]))
        await trio.testing.wait_all_tasks_blocked()
        assert requested_heights(slow) == list(range(1, MAX_PENDING_PER_PEER + 1))

        slower = fresh.connect(FakePeer("slower"))
        fresh.sync.receive(BLOCKSYNC_CHANNEL, slower, encode([STATUS_RESPONSE, 1, far]))
        await trio.testing.wait_all_tasks_blocked()
        assert requested_heights(slower) == list(
            range(MAX_PENDING_PER_PEER + 1, 2 * MAX_PENDING_PER_PEER + 1)
        )
        assert len(requested_heights(slow)) == MAX_PENDING_PER_PEER  # still full: nothing more

        # `slow` answers height 1: one slot frees, one more request goes to it.
        back = FakePeer("back")
        server.receive(BLOCKSYNC_CHANNEL, back, encode([BLOCK_REQUEST, 1]))
        fresh.sync.receive(BLOCKSYNC_CHANNEL, slow, back.sent[0][1])
        await trio.testing.wait_all_tasks_blocked()
        assert fresh.sync.state.last_block_height == 1
        assert requested_heights(slow)[MAX_PENDING_PER_PEER:] == [2 * MAX_PENDING_PER_PEER + 1]
        assert len(requested_heights(slower)) == MAX_PENDING_PER_PEER
        nursery.cancel_scope.cancel()
