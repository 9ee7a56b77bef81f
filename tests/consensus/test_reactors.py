"""The mempool and consensus gossip reactors driven directly through fake peers.

The mempool reactor runs over a real Mempool with a fake check_tx; the consensus reactor over a
real node core (`build_core` on a LevelDB in tmp_path) whose consensus service runs under trio's
mock clock, with one local validator key (alone, or among four validators whose other keys the
test signs with as if they were remote)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.app import CheckTxKind, CheckTxResult
from consensus.machine import BlockPartEvent, ConsensusMachine, ProposalEvent, Step, StepChanged, VoteEvent
from consensus.mempool import Mempool, MempoolConfig, TxInCache
from consensus.mempool_reactor import BATCH_BYTES, BATCH_TXS, MempoolReactor
from consensus.messages import (
    BlockTxs,
    BlockTxsRequest,
    CompactBlock,
    DecidedBlock,
    RoundStep,
    WireMessage,
    decode_message,
    encode_message,
)
from consensus.reactor import CATCH_UP_INTERVAL, ConsensusReactor
from consensus.types import (
    EMPTY_COMMIT,
    NIL_BLOCK_ID,
    Block,
    BlockID,
    Commit,
    PartSet,
    PartSetHeader,
    Proposal,
    Vote,
    VoteType,
)
from consensus.validators import ValidatorSet
from p2p.base import (
    CONSENSUS_DATA_CHANNEL,
    CONSENSUS_STATE_CHANNEL,
    CONSENSUS_VOTE_CHANNEL,
    MEMPOOL_CHANNEL,
    PeerMisbehaved,
)
from primitives.codec import decode, encode
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.consensus.fakes import (
    CHAIN_ID,
    FakePeer,
    Node,
    genesis_request,
    open_node,
    run_to_height,
    validator_keys,
)

# -- the mempool reactor --------------------------------------------------------------------------


def fake_check_tx(tx: bytes, kind: CheckTxKind) -> CheckTxResult:
    """Accepts every transaction except those starting with b"bad"."""
    return CheckTxResult(code=1, log="rejected") if tx.startswith(b"bad") else CheckTxResult()


def mempool_net(*peer_ids: str, max_tx_bytes: int = 1024) -> tuple[Mempool, MempoolReactor, list[FakePeer]]:
    mempool = Mempool(MempoolConfig(max_tx_bytes=max_tx_bytes), fake_check_tx)
    reactor = MempoolReactor(mempool)
    peers = [FakePeer(peer_id) for peer_id in peer_ids]
    for peer in peers:
        reactor.add_peer(peer)
    return mempool, reactor, peers


def gossip(*txs: bytes) -> bytes:
    """One mempool message carrying `txs`."""
    return encode(list(txs))


def txs_sent(peer: FakePeer) -> list[bytes]:
    """Every tx sent to `peer`, in order, across its mempool messages."""
    out: list[bytes] = []
    for channel, message in peer.sent:
        assert channel == MEMPOOL_CHANNEL
        batch = decode(message)
        assert isinstance(batch, list) and batch
        out.extend(tx for tx in batch if isinstance(tx, bytes))
    return out


def test_mempool_channel_allows_a_batch_and_the_largest_tx() -> None:
    _, reactor, _ = mempool_net(max_tx_bytes=777)
    [channel] = reactor.channels()
    assert channel.id == MEMPOOL_CHANNEL
    assert channel.max_message_size >= BATCH_BYTES + BATCH_TXS * 5
    _, big, _ = mempool_net(max_tx_bytes=4 * BATCH_BYTES)
    assert big.channels()[0].max_message_size >= 4 * BATCH_BYTES + 5


def test_local_tx_goes_to_every_peer_once() -> None:
    mempool, reactor, peers = mempool_net("a", "b", "c")
    assert mempool.check_tx(b"tx-1").ok
    with pytest.raises(TxInCache):
        mempool.check_tx(b"tx-1")
    assert mempool.check_tx(b"tx-2").ok
    assert all(peer.sent == [] for peer in peers), "waiting for the flush"
    reactor.flush()
    for peer in peers:
        assert peer.sent == [(MEMPOOL_CHANNEL, gossip(b"tx-1", b"tx-2"))], "both in one message"
    reactor.flush()
    assert all(len(peer.sent) == 1 for peer in peers), "nothing more to send"


def test_a_full_outbox_goes_without_waiting_for_the_flush() -> None:
    mempool, reactor, (a,) = mempool_net("a")
    txs = [b"tx-%d" % i for i in range(BATCH_TXS + 3)]
    for tx in txs:
        assert mempool.check_tx(tx).ok
    assert a.sent == [(MEMPOOL_CHANNEL, gossip(*txs[:BATCH_TXS]))]
    reactor.flush()
    assert txs_sent(a) == txs
    mempool2, reactor2, (b,) = mempool_net("b", max_tx_bytes=BATCH_BYTES)
    big = [bytes([i]) * (BATCH_BYTES // 2 + 1) for i in range(3)]
    for tx in big:
        assert mempool2.check_tx(tx).ok
    assert len(b.sent) == 2, "each big tx pushed out the one before it"
    reactor2.flush()
    limit = reactor2.channels()[0].max_message_size
    assert txs_sent(b) == big and all(len(message) <= limit for _, message in b.sent)


def test_tx_from_a_peer_goes_to_the_others_never_back() -> None:
    mempool, reactor, (a, b, c) = mempool_net("a", "b", "c")
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"from-a"))
    reactor.flush()
    assert sha256(b"from-a") in mempool
    assert a.sent == []
    assert txs_sent(b) == txs_sent(c) == [b"from-a"]

    # The same transaction again (from its source, or relayed back by a peer that got it).
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"from-a"))
    reactor.receive(MEMPOOL_CHANNEL, b, gossip(b"from-a"))
    reactor.flush()
    assert a.sent == []
    assert txs_sent(b) == txs_sent(c) == [b"from-a"]
    assert len(mempool) == 1
    assert reactor.received == 3


def test_a_message_of_several_txs_admits_each_on_its_own_merits() -> None:
    mempool, reactor, (a, b) = mempool_net("a", "b")
    assert mempool.check_tx(b"known").ok
    reactor.flush()
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"one", b"bad one", b"known", b"two"))
    reactor.flush()
    assert [tx for _, tx in mempool.pending()] == [b"known", b"one", b"two"]
    assert txs_sent(b) == [b"known", b"one", b"two"]
    assert txs_sent(a) == [b"known"], "a sent the rest: none go back"
    assert reactor.received == 4 and reactor.refused == 1, "the known one: in cache"
    assert mempool.stats.failed_txs == 1


def test_the_shared_admission_work_runs_once_for_the_fresh_txs_of_a_message() -> None:
    works: list[list[bytes]] = []

    def admission_work(txs: Sequence[bytes]) -> Callable[[], object]:
        works.append(list(txs))
        return lambda: None

    mempool = Mempool(MempoolConfig(max_tx_bytes=10), fake_check_tx, admission_work)
    reactor = MempoolReactor(mempool)
    a = FakePeer("a")
    reactor.add_peer(a)
    assert mempool.check_tx(b"known").ok
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"x", b"known", b"y"))
    assert works == [[b"x", b"y"]], "known txs skip the shared work"
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"z"))
    assert works == [[b"x", b"y"]], "one fresh tx: nothing to share"
    assert len(mempool) == 4


def test_a_peer_that_sent_a_tx_first_is_not_sent_it_later() -> None:
    mempool, reactor, (a, b) = mempool_net("a", "b")
    reactor.receive(MEMPOOL_CHANNEL, b, gossip(b"shared"))  # b has it ...
    reactor.flush()
    assert txs_sent(a) == [b"shared"]
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"shared"))  # ... and now a too: nothing goes anywhere
    assert mempool.check_tx(b"local").ok
    reactor.flush()
    assert txs_sent(a) == [b"shared", b"local"]
    assert txs_sent(b) == [b"local"]


def test_a_new_peer_gets_every_pending_tx_in_order() -> None:
    mempool, reactor, (a,) = mempool_net("a")
    for tx in (b"one", b"two", b"three"):
        assert mempool.check_tx(tx).ok
    mempool.update(1, [b"two"])  # committed: no longer pending
    late = FakePeer("late")
    reactor.add_peer(late)
    assert txs_sent(late) == [b"one", b"three"], "sent when it connects"
    assert mempool.check_tx(b"four").ok
    reactor.flush()
    assert txs_sent(late) == [b"one", b"three", b"four"]

    reactor.remove_peer(a, "gone")
    assert mempool.check_tx(b"five").ok
    reactor.flush()
    assert b"five" not in txs_sent(a)
    assert txs_sent(late)[-1] == b"five"


def test_a_pending_tx_the_new_peer_sent_us_is_not_sent_back_to_it() -> None:
    mempool, reactor, (a,) = mempool_net("a")
    assert mempool.check_tx(b"pending").ok
    b = FakePeer("b")
    reactor.add_peer(b)
    reactor.receive(MEMPOOL_CHANNEL, b, gossip(b"from-b"))
    reactor.flush()
    assert txs_sent(b) == [b"pending"]
    assert txs_sent(a) == [b"pending", b"from-b"]


def test_a_batch_the_peer_could_not_take_is_sent_again_with_the_next() -> None:
    mempool, reactor, (a,) = mempool_net("a")
    a.full = True
    assert mempool.check_tx(b"dropped").ok
    reactor.flush()
    assert a.sent == []
    a.full = False
    reactor.receive(MEMPOOL_CHANNEL, FakePeer("x"), gossip(b"dropped"))  # not new: no resend
    assert mempool.check_tx(b"next").ok
    reactor.flush()
    assert txs_sent(a) == [b"next"], "a tx goes to a peer once it is admitted, not later"


@pytest.mark.parametrize(
    "message",
    [
        b"x" * 101,  # not a list
        encode([]),  # no txs
        encode([b"ok", [b"nested"]]),  # not byte strings
        encode([b"ok", 5]),
        encode([b"y" * 101]),  # over the size limit
        encode([b"t"] * (BATCH_TXS + 1)),  # too many
        encode([b"ok"]) + b"\x00",  # trailing bytes
    ],
)
def test_a_malformed_mempool_message_is_misbehaviour(message: bytes) -> None:
    mempool, reactor, (a, b) = mempool_net("a", "b", max_tx_bytes=100)
    with pytest.raises(PeerMisbehaved):
        reactor.receive(MEMPOOL_CHANNEL, a, message)
    reactor.flush()
    assert len(mempool) == 0 and b.sent == []


def test_a_tx_at_the_size_limit_is_fine() -> None:
    _, reactor, (a, b) = mempool_net("a", "b", max_tx_bytes=100)
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"x" * 100))
    reactor.flush()
    assert txs_sent(b) == [b"x" * 100]


def test_a_tx_the_application_refuses_is_not_misbehaviour_and_not_relayed() -> None:
    mempool, reactor, (a, b) = mempool_net("a", "b")
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"bad \x00\xff garbage"))
    reactor.flush()
    assert len(mempool) == 0
    assert a.sent == b.sent == []
    assert mempool.stats.failed_txs == 1
    reactor.receive(MEMPOOL_CHANNEL, a, gossip(b"good"))  # the peer is still served
    reactor.flush()
    assert txs_sent(b) == [b"good"]


# -- the consensus reactor: scaffolding ------------------------------------------------------------

KEYS = validator_keys(4)
GENESIS4 = genesis_request(KEYS)
GENESIS_SET = ValidatorSet.genesis([(k.public_key.raw, 10) for k in KEYS])
PROPOSER = next(k for k in KEYS if k.address.raw == GENESIS_SET.proposer.address)
OTHERS = [k for k in KEYS if k is not PROPOSER]
INTERVAL = 0.1

Bans = list[tuple[str, str]]


def wire(peer: FakePeer, channel: int) -> list[WireMessage]:
    return [decode_message(raw) for raw in peer.on(channel)]


def votes_to(peer: FakePeer) -> list[Vote]:
    return [m.vote for m in wire(peer, CONSENSUS_VOTE_CHANNEL) if isinstance(m, VoteEvent)]


def proposals_to(peer: FakePeer) -> list[Proposal]:
    return [m.proposal for m in wire(peer, CONSENSUS_DATA_CHANNEL) if isinstance(m, ProposalEvent)]


def part_indexes_to(peer: FakePeer) -> list[int]:
    return [m.part.index for m in wire(peer, CONSENSUS_DATA_CHANNEL) if isinstance(m, BlockPartEvent)]


def decided(peer: FakePeer) -> list[DecidedBlock]:
    return [m for m in wire(peer, CONSENSUS_DATA_CHANNEL) if isinstance(m, DecidedBlock)]


def round_step(height: int, round_: int, step: Step) -> bytes:
    return encode_message(RoundStep(height, round_, int(step)))


def signed_vote(
    key: PrivateKey, machine: ConsensusMachine, round_: int = 0, vote_type: VoteType = VoteType.PREVOTE
) -> Vote:
    index = machine.state.validators.index_of(key.address.raw)
    assert index is not None
    vote = Vote(
        vote_type, machine.height, round_, NIL_BLOCK_ID, 1_700_000_001 * 10**9, key.address.raw, index
    )
    return vote.with_signature(key.sign(vote.sign_bytes(CHAIN_ID)))


def signed_proposal(key: PrivateKey, height: int, round_: int) -> Proposal:
    block_id = BlockID(sha256(b"some block"), PartSetHeader(1, sha256(b"its parts")))
    proposal = Proposal(height, round_, -1, block_id, 1_700_000_001 * 10**9)
    return proposal.with_signature(key.sign(proposal.sign_bytes(CHAIN_ID)))


@pytest.fixture
def open_nodes() -> Iterator[Callable[[Path, PrivateKey, int], Node]]:
    """Opens node cores (`n` validators, the first `n` of KEYS) and closes them afterwards."""
    opened: list[Node] = []

    def make(home: Path, key: PrivateKey, n: int) -> Node:
        members = [key] if n == 1 else KEYS[:n]
        node = open_node(home, key, genesis_request(members))
        opened.append(node)
        return node

    yield make
    for node in opened:
        node.close()


def reactor_for(node: Node, bans: Bans) -> ConsensusReactor:
    return ConsensusReactor(node.core.service, node.core.blocks, lambda p, r: bans.append((p, r)), INTERVAL)


def connect(reactor: ConsensusReactor, peer_id: str, at: tuple[int, int, Step] | None = None) -> FakePeer:
    """Add a peer; if `at` is given it reports that (height, round, step)."""
    peer = FakePeer(peer_id)
    reactor.add_peer(peer)
    if at is not None:
        reactor.receive(CONSENSUS_STATE_CHANNEL, peer, round_step(*at))
    return peer


async def until(node: Node, condition: Callable[[ConsensusMachine], bool]) -> None:
    """Until `condition(machine)` holds, re-checked at each step change of the machine."""
    changed = trio.Event()

    def listener(step: StepChanged) -> None:
        changed.set()

    node.core.driver.step_listeners.append(listener)
    try:
        while not condition(node.core.service.machine):
            await changed.wait()
            changed = trio.Event()
    finally:
        node.core.driver.step_listeners.remove(listener)


async def ticks(clock: trio.testing.MockClock, n: int) -> None:
    """Let `n` gossip intervals of virtual time pass, each fully processed."""
    for _ in range(n):
        clock.jump(INTERVAL)
        await trio.testing.wait_all_tasks_blocked()


# -- the consensus reactor: wire checks ------------------------------------------------------------


async def test_add_peer_sends_our_round_step(tmp_path: Path, open_nodes: Callable[..., Node]) -> None:
    node = open_nodes(tmp_path, KEYS[0], 1)
    reactor = reactor_for(node, [])
    peer = connect(reactor, "a")
    assert peer.sent == [(CONSENSUS_STATE_CHANNEL, round_step(1, 0, Step.NEW_HEIGHT))]


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        (CONSENSUS_STATE_CHANNEL, b"\xc1 not msgpack"),
        (CONSENSUS_VOTE_CHANNEL, encode_message(RoundStep(1, 0, 1))[:-1]),
        (CONSENSUS_DATA_CHANNEL, b"\x92\x09\x90"),  # [9, []]: an unknown kind
        (CONSENSUS_VOTE_CHANNEL, round_step(1, 0, Step.PROPOSE)),  # a round step on the vote channel
        (CONSENSUS_STATE_CHANNEL, encode_message(ProposalEvent(signed_proposal(PROPOSER, 1, 0)))),
        (CONSENSUS_DATA_CHANNEL, encode_message(RoundStep(1, 0, 1))),
    ],
    ids=["garbage", "truncated", "unknown-kind", "step-on-vote", "proposal-on-state", "step-on-data"],
)
async def test_undecodable_or_misplaced_messages_are_misbehaviour(
    tmp_path: Path, open_nodes: Callable[..., Node], channel: int, message: bytes
) -> None:
    node = open_nodes(tmp_path, KEYS[0], 1)
    reactor = reactor_for(node, [])
    peer = connect(reactor, "a")
    with pytest.raises(PeerMisbehaved):
        reactor.receive(channel, peer, message)


async def test_a_vote_on_the_data_channel_is_misbehaviour(
    tmp_path: Path, open_nodes: Callable[..., Node]
) -> None:
    node = open_nodes(tmp_path, KEYS[0], 4)
    reactor = reactor_for(node, [])
    peer = connect(reactor, "a")
    vote = encode_message(VoteEvent(signed_vote(KEYS[1], node.core.service.machine)))
    with pytest.raises(PeerMisbehaved):
        reactor.receive(CONSENSUS_DATA_CHANNEL, peer, vote)
    reactor.receive(CONSENSUS_VOTE_CHANNEL, peer, vote)  # where it belongs: fine


async def test_a_round_step_going_back_in_height_is_misbehaviour(
    tmp_path: Path, open_nodes: Callable[..., Node]
) -> None:
    node = open_nodes(tmp_path, KEYS[0], 1)
    reactor = reactor_for(node, [])
    peer = connect(reactor, "a", (3, 2, Step.PREVOTE))
    reactor.receive(CONSENSUS_STATE_CHANNEL, peer, round_step(3, 0, Step.NEW_HEIGHT))  # same height
    reactor.receive(CONSENSUS_STATE_CHANNEL, peer, round_step(4, 0, Step.NEW_HEIGHT))
    with pytest.raises(PeerMisbehaved):
        reactor.receive(CONSENSUS_STATE_CHANNEL, peer, round_step(3, 0, Step.COMMIT))


# -- the consensus reactor: gossip -----------------------------------------------------------------


async def test_own_proposal_and_votes_go_to_the_peers_that_can_use_them(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = open_nodes(tmp_path, PROPOSER, 4)
    machine = node.core.service.machine
    assert machine.proposer() == PROPOSER.address.raw
    reactor = reactor_for(node, [])
    same = connect(reactor, "same", (1, 0, Step.NEW_HEIGHT))
    silent = connect(reactor, "silent")  # has not told us where it is
    later_round = connect(reactor, "later-round", (1, 1, Step.NEW_ROUND))
    ahead = connect(reactor, "ahead", (2, 0, Step.NEW_HEIGHT))
    full = FakePeer("full", full=True)  # its send queue is full: nothing goes through
    reactor.add_peer(full)
    reactor.receive(CONSENSUS_STATE_CHANNEL, full, round_step(1, 0, Step.NEW_HEIGHT))

    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await until(node, lambda m: (m.height, m.round, m.step) == (1, 0, Step.PREVOTE))
        await trio.testing.wait_all_tasks_blocked()

        proposal, parts = machine.proposal, machine.proposal_parts
        assert proposal is not None and parts is not None and parts.is_complete()
        [prevote] = machine.votes.prevotes(0).all_votes()
        assert prevote.validator_address == PROPOSER.address.raw
        all_parts = [part.index for part in parts.parts()]

        assert proposals_to(same) == [proposal]
        assert part_indexes_to(same) == all_parts
        assert votes_to(same) == [prevote]
        assert wire(same, CONSENSUS_STATE_CHANNEL)[-1] == RoundStep(1, 0, int(Step.PREVOTE))
        # Another round of the same height: the vote, not the proposal.
        assert proposals_to(later_round) == [] and part_indexes_to(later_round) == []
        assert votes_to(later_round) == [prevote]
        # Another height, or no height known: neither.
        for peer in (ahead, silent):
            assert peer.on(CONSENSUS_DATA_CHANNEL) == [] and peer.on(CONSENSUS_VOTE_CHANNEL) == []
        assert full.sent == [] and full.refused

        # The silent peer reports our round, the full one has room again: the gossip tick sends
        # them what they lack.
        reactor.receive(CONSENSUS_STATE_CHANNEL, silent, round_step(1, 0, Step.PROPOSE))
        full.full = False
        await silent.wait_sent(lambda: bool(votes_to(silent)) and part_indexes_to(silent) == all_parts)
        await full.wait_sent(lambda: bool(votes_to(full)) and part_indexes_to(full) == all_parts)
        await ticks(autojump_clock, 20)

        for peer in (same, silent, full):
            assert proposals_to(peer) == [proposal], peer.id
            assert part_indexes_to(peer) == all_parts, peer.id
            assert votes_to(peer) == [prevote], peer.id
        assert proposals_to(later_round) == [] and votes_to(later_round) == [prevote]
        assert ahead.on(CONSENSUS_DATA_CHANNEL) == [] and ahead.on(CONSENSUS_VOTE_CHANNEL) == []
        assert (machine.height, machine.step) == (1, Step.PREVOTE)  # one of four: no progress
        nursery.cancel_scope.cancel()


async def test_a_received_vote_is_handled_and_never_sent_back(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    local, remote = OTHERS[0], OTHERS[1]
    node = open_nodes(tmp_path, local, 4)
    machine = node.core.service.machine
    reactor = reactor_for(node, [])
    source = connect(reactor, "source", (1, 0, Step.NEW_HEIGHT))
    other = connect(reactor, "other", (1, 0, Step.NEW_HEIGHT))
    vote = signed_vote(remote, machine)
    reactor.receive(CONSENSUS_VOTE_CHANNEL, source, encode_message(VoteEvent(vote)))
    assert reactor.dropped_inbound == 0

    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await other.wait_sent(lambda: vote in votes_to(other))
        assert vote in machine.votes.prevotes(0).all_votes()
        await until(node, lambda m: m.step == Step.PREVOTE)  # after the propose timeout: nil
        await ticks(autojump_clock, 20)

        own = [v for v in machine.votes.prevotes(0).all_votes() if v.validator_address == local.address.raw]
        assert len(own) == 1
        assert votes_to(source) == own
        assert sorted(votes_to(other), key=lambda v: v.validator_index) == sorted(
            [vote, *own], key=lambda v: v.validator_index
        )
        nursery.cancel_scope.cancel()


async def test_a_received_proposal_is_handled_and_never_sent_back(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = open_nodes(tmp_path, OTHERS[0], 4)
    machine = node.core.service.machine
    reactor = reactor_for(node, [])
    source = connect(reactor, "source", (1, 0, Step.NEW_HEIGHT))
    other = connect(reactor, "other", (1, 0, Step.PROPOSE))
    proposal = signed_proposal(PROPOSER, 1, 0)
    reactor.receive(CONSENSUS_DATA_CHANNEL, source, encode_message(ProposalEvent(proposal)))

    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await other.wait_sent(lambda: bool(proposals_to(other)))
        assert machine.proposal == proposal
        await ticks(autojump_clock, 20)
        assert proposals_to(other) == [proposal]
        assert proposals_to(source) == []
        nursery.cancel_scope.cancel()


async def test_gossip_does_not_create_vote_sets_for_rounds_a_peer_reports(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """Reading what to send must not change the machine: a peer choosing the rounds it reports
    would otherwise make us allocate vote sets far beyond the round window, without bound."""
    node = open_nodes(tmp_path, OTHERS[0], 4)
    machine = node.core.service.machine
    reactor = reactor_for(node, [])
    peer = connect(reactor, "roamer", (1, 0, Step.NEW_HEIGHT))

    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await until(node, lambda m: m.step == Step.PREVOTE)
        await ticks(autojump_clock, 2)
        before = machine.votes.rounds()
        for round_ in range(1_000, 1_100):
            reactor.receive(CONSENSUS_STATE_CHANNEL, peer, round_step(1, round_, Step.PREVOTE))
            await ticks(autojump_clock, 1)
        assert machine.votes.rounds() == before
        nursery.cancel_scope.cancel()


async def test_a_lagging_peer_gets_the_decided_block_of_its_height_at_most_once_per_interval(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = open_nodes(tmp_path, KEYS[0], 1)
    await run_to_height(node.core, 6)  # blocks 1..5 stored, consensus stopped at height 6
    blocks = node.core.blocks
    assert (blocks.height, node.core.service.machine.height) == (5, 6)
    reactor = reactor_for(node, [])
    behind = connect(reactor, "behind", (2, 0, Step.PREVOTE))
    just_behind = connect(reactor, "just-behind", (5, 1, Step.PRECOMMIT))
    level = connect(reactor, "level", (6, 0, Step.NEW_HEIGHT))

    def stored(height: int) -> tuple[bytes, bytes]:
        return blocks.load_block(height) or b"", blocks.load_seen_commit(height) or b""

    async with trio.open_nursery() as nursery:
        await nursery.start(reactor.run)
        await ticks(autojump_clock, 1)
        [first] = decided(behind)
        assert (first.block.encode(), first.commit.encode()) == stored(2)
        assert first.commit.block_id.hash == first.block.hash
        [other] = decided(just_behind)
        assert (other.block.encode(), other.commit.encode()) == stored(5)
        assert level.on(CONSENSUS_DATA_CHANNEL) == []

        interval_ticks = round(CATCH_UP_INTERVAL / INTERVAL)
        await ticks(autojump_clock, interval_ticks - 2)
        assert len(decided(behind)) == 1  # not again within the interval
        await ticks(autojump_clock, 4)
        assert [(d.block.height, d.commit.height) for d in decided(behind)] == [(2, 2), (2, 2)]

        # It applied block 2: the next one comes at the next tick, without waiting for the interval.
        reactor.receive(CONSENSUS_STATE_CHANNEL, behind, round_step(3, 0, Step.NEW_HEIGHT))
        await ticks(autojump_clock, 1)
        heights = [d.block.height for d in decided(behind)]
        assert heights == [2, 2, 3]
        assert [Block.decode(stored(3)[0]).hash] == [d.block.hash for d in decided(behind)[2:]]
        assert Commit.decode(stored(3)[1]) == decided(behind)[2].commit
        assert level.on(CONSENSUS_DATA_CHANNEL) == []
        nursery.cancel_scope.cancel()


async def test_an_invalid_message_gets_its_sender_banned(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = open_nodes(tmp_path, OTHERS[0], 4)
    machine = node.core.service.machine
    bans: Bans = []
    reactor = reactor_for(node, bans)
    honest = connect(reactor, "honest", (1, 0, Step.NEW_HEIGHT))
    forger = connect(reactor, "forger", (1, 0, Step.NEW_HEIGHT))
    departed = connect(reactor, "departed", (1, 0, Step.NEW_HEIGHT))
    good = signed_vote(OTHERS[1], machine)
    forged = signed_vote(OTHERS[2], machine).with_signature(OTHERS[1].sign(b"something else"))
    forged_too = signed_vote(PROPOSER, machine).with_signature(OTHERS[1].sign(b"something else"))
    reactor.receive(CONSENSUS_VOTE_CHANNEL, honest, encode_message(VoteEvent(good)))
    reactor.receive(CONSENSUS_VOTE_CHANNEL, forger, encode_message(VoteEvent(forged)))
    reactor.receive(CONSENSUS_VOTE_CHANNEL, departed, encode_message(VoteEvent(forged_too)))
    reactor.remove_peer(departed, "disconnected")  # the switch dropped it already

    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await trio.testing.wait_all_tasks_blocked()
        assert [peer for peer, _ in bans] == ["forger"]
        assert "signature" in bans[0][1]
        assert machine.votes.prevotes(0).all_votes() == [good]
        nursery.cancel_scope.cancel()


# -- compact block propagation ----------------------------------------------------------------------


def compact_to(peer: FakePeer) -> list[CompactBlock]:
    return [m for m in wire(peer, CONSENSUS_DATA_CHANNEL) if isinstance(m, CompactBlock)]


def of_type(peer: FakePeer, kind: type[WireMessage]) -> list[WireMessage]:
    return [m for m in wire(peer, CONSENSUS_DATA_CHANNEL) if isinstance(m, kind)]


def proposed_block(machine: ConsensusMachine, txs: list[bytes]) -> tuple[Block, Proposal]:
    """A height-1 block of `txs` (their content is not checked before prevote) and PROPOSER's
    signed round-0 proposal of it."""
    block = machine.state.make_block(txs, (), EMPTY_COMMIT, PROPOSER.address.raw)
    parts = PartSet.from_data(block.encode())
    proposal = Proposal(1, 0, -1, BlockID(block.hash, parts.header), 1_700_000_001 * 10**9)
    return block, proposal.with_signature(PROPOSER.sign(proposal.sign_bytes(CHAIN_ID)))


def compact_of(block: Block, proposal: Proposal, **changes: object) -> CompactBlock:
    fields: dict[str, object] = {
        "round": proposal.round,
        "block_id": proposal.block_id,
        "header": block.header,
        "tx_hashes": tuple(sha256(tx) for tx in block.txs),
        "evidence": block.evidence,
        "last_commit": block.last_commit,
    }
    fields.update(changes)
    return CompactBlock(**fields)  # type: ignore[arg-type]


async def until_block(clock: trio.testing.MockClock, machine: ConsensusMachine) -> Block:
    """The machine's proposal block, once it has one (within 50 gossip ticks): with one of four
    validators it can have prevoted nil already, so no step change signals it."""
    for _ in range(50):
        if machine.proposal_block is not None:
            return machine.proposal_block
        await ticks(clock, 1)
    raise AssertionError("the proposal block never came")


def compact_reactor(node: Node, bans: Bans, known: Sequence[bytes] = ()) -> ConsensusReactor:
    mempool = {sha256(tx): tx for tx in known}
    return ConsensusReactor(
        node.core.service,
        node.core.blocks,
        lambda p, r: bans.append((p, r)),
        INTERVAL,
        compact_blocks=True,
        lookup_tx=mempool.get,
    )


def compact_receiver(
    open_nodes: Callable[..., Node], tmp_path: Path, txs: list[bytes], known: Sequence[bytes]
) -> tuple[Node, ConsensusMachine, Block, Proposal, ConsensusReactor, Bans]:
    """A validator of four that is not the height-1 proposer, with a compact reactor whose mempool
    holds `known`, and PROPOSER's block of `txs` with its proposal."""
    node = open_nodes(tmp_path, OTHERS[0], 4)
    machine = node.core.service.machine
    block, proposal = proposed_block(machine, txs)
    bans: Bans = []
    return node, machine, block, proposal, compact_reactor(node, bans, known), bans


async def test_own_proposal_goes_as_a_compact_block_not_as_parts(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = open_nodes(tmp_path, PROPOSER, 4)
    machine = node.core.service.machine
    reactor = compact_reactor(node, [])
    same = connect(reactor, "same", (1, 0, Step.NEW_HEIGHT))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        with trio.fail_after(60):  # virtual seconds
            await until(node, lambda m: m.step == Step.PREVOTE)
        assert len(compact_to(same)) == 1, "sent as soon as the block is complete, not at a gossip tick"
        await nursery.start(reactor.run)
        late = connect(reactor, "late", (1, 0, Step.PROPOSE))
        await ticks(autojump_clock, 5)
        block, proposal = machine.proposal_block, machine.proposal
        assert block is not None and proposal is not None
        for peer in (same, late):
            assert proposals_to(peer) == [proposal], peer.id
            [compact] = compact_to(peer)
            assert compact.block_id == proposal.block_id and compact.round == 0
            assert compact.rebuild(block.txs) == block
            assert part_indexes_to(peer) == [], "the parts do not travel"
        # Our own block coming back: nothing to rebuild, nothing to ask for.
        reactor.receive(CONSENSUS_DATA_CHANNEL, late, encode_message(compact_to(same)[0]))
        assert reactor.compact_rebuilt == 0 and reactor.rebuilding == 0
        assert of_type(late, BlockTxsRequest) == []
        nursery.cancel_scope.cancel()


async def test_a_compact_block_is_rebuilt_from_the_mempool_and_the_txs_it_lacked(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    txs = [b"tx-%03d" % i for i in range(40)]
    node, machine, block, proposal, reactor, _ = compact_receiver(open_nodes, tmp_path, txs, txs[::2])
    source = connect(reactor, "source", (1, 0, Step.PROPOSE))
    other = connect(reactor, "other", (1, 0, Step.PROPOSE))
    reactor.receive(CONSENSUS_DATA_CHANNEL, source, encode_message(ProposalEvent(proposal)))
    reactor.receive(CONSENSUS_DATA_CHANNEL, source, encode_message(compact_of(block, proposal)))
    [request] = of_type(source, BlockTxsRequest)
    assert request == BlockTxsRequest(1, 0, block.hash, tuple(range(1, 40, 2)))

    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await ticks(autojump_clock, 2)
        assert machine.proposal == proposal and machine.proposal_block is None
        assert len(of_type(source, BlockTxsRequest)) == 1, "asked again only after REQUEST_INTERVAL"
        await ticks(autojump_clock, 6)
        assert of_type(source, BlockTxsRequest) == [request, request], "the answer did not come: again"
        answer = BlockTxs(1, 0, block.hash, tuple((i, txs[i]) for i in request.indexes))
        reactor.receive(CONSENSUS_DATA_CHANNEL, source, encode_message(answer))
        assert await until_block(autojump_clock, machine) == block
        assert (reactor.compact_rebuilt, reactor.compact_fetched_txs) == (1, 20)
        # The block goes on to a peer that lacks it, compact, and never back to its source.
        with trio.fail_after(60):  # virtual seconds
            await other.wait_sent(lambda: bool(compact_to(other)))
        assert compact_to(other)[0] == compact_of(block, proposal)
        assert part_indexes_to(other) == [] and compact_to(source) == []
        # And we answer for the transactions of our proposal block.
        reactor.receive(
            CONSENSUS_DATA_CHANNEL, other, encode_message(BlockTxsRequest(1, 0, block.hash, (39, 0, 39, 99)))
        )
        assert of_type(other, BlockTxs) == [BlockTxs(1, 0, block.hash, ((0, txs[0]), (39, txs[39])))]
        reactor.receive(
            CONSENSUS_DATA_CHANNEL, other, encode_message(BlockTxsRequest(1, 0, sha256(b"other"), (0,)))
        )
        assert len(of_type(other, BlockTxs)) == 1, "not a block we have: no answer"
        greedy = BlockTxsRequest(1, 0, block.hash, tuple(range(41)))
        with pytest.raises(PeerMisbehaved, match="a request for 41 txs of a block of 40"):
            reactor.receive(CONSENSUS_DATA_CHANNEL, other, encode_message(greedy))
        nursery.cancel_scope.cancel()


async def test_a_compact_block_the_mempool_holds_whole_needs_no_request(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    txs = [b"tx-%03d" % i for i in range(10)]
    node, machine, block, proposal, reactor, _ = compact_receiver(open_nodes, tmp_path, txs, txs)
    first = connect(reactor, "first", (1, 0, Step.PROPOSE))
    # The compact block comes before the proposal that names it (from two peers): its parts wait.
    reactor.receive(CONSENSUS_DATA_CHANNEL, first, encode_message(compact_of(block, proposal)))
    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await ticks(autojump_clock, 1)
        assert machine.proposal is None and machine.proposal_block is None
        second = connect(reactor, "second", (1, 0, Step.PROPOSE))
        reactor.receive(CONSENSUS_DATA_CHANNEL, second, encode_message(ProposalEvent(proposal)))
        assert await until_block(autojump_clock, machine) == block
        assert of_type(first, BlockTxsRequest) == [] and reactor.compact_fetched_txs == 0
        nursery.cancel_scope.cancel()


async def test_lies_in_compact_blocks_are_misbehaviour(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    txs = [b"tx-%03d" % i for i in range(6)]
    node, machine, block, proposal, reactor, bans = compact_receiver(open_nodes, tmp_path, txs, txs[1:])
    peer = connect(reactor, "liar", (1, 0, Step.PROPOSE))
    other_header = machine.state.make_block(txs[:1], (), EMPTY_COMMIT, PROPOSER.address.raw).header
    with pytest.raises(PeerMisbehaved, match="header is not the block it names"):
        reactor.receive(
            CONSENSUS_DATA_CHANNEL, peer, encode_message(compact_of(block, proposal, header=other_header))
        )
    reactor.receive(CONSENSUS_DATA_CHANNEL, peer, encode_message(compact_of(block, proposal)))
    with pytest.raises(PeerMisbehaved, match="block tx 0 is not the transaction the block names"):
        reactor.receive(
            CONSENSUS_DATA_CHANNEL, peer, encode_message(BlockTxs(1, 0, block.hash, ((0, b"x"),)))
        )
    with pytest.raises(PeerMisbehaved, match="block tx 6"):
        reactor.receive(
            CONSENSUS_DATA_CHANNEL, peer, encode_message(BlockTxs(1, 0, block.hash, ((6, b"x"),)))
        )
    assert bans == []
    # Hashes that are not the block's (with its true header): the rebuilt parts give it away, the
    # peer whose hashes they were is banned (not the one that supplied a missing tx), and the
    # block is rebuilt from the hash list another peer sent for it.
    second_txs = [*txs[1:], b"tx-new"]
    second, proposal2 = proposed_block(machine, second_txs)
    swapped = (sha256(txs[2]), sha256(txs[1]), *(sha256(tx) for tx in second_txs[2:]))
    liar = connect(reactor, "other-liar", (1, 0, Step.PROPOSE))
    honest = connect(reactor, "honest", (1, 0, Step.PROPOSE))
    reactor.receive(CONSENSUS_DATA_CHANNEL, honest, encode_message(ProposalEvent(proposal2)))
    reactor.receive(
        CONSENSUS_DATA_CHANNEL, liar, encode_message(compact_of(second, proposal2, tx_hashes=swapped))
    )
    assert of_type(liar, BlockTxsRequest) == [BlockTxsRequest(1, 0, second.hash, (5,))]
    reactor.receive(CONSENSUS_DATA_CHANNEL, honest, encode_message(compact_of(second, proposal2)))
    answer = BlockTxs(1, 0, second.hash, ((5, b"tx-new"),))
    reactor.receive(CONSENSUS_DATA_CHANNEL, honest, encode_message(answer))
    assert bans == [("other-liar", "a compact block that does not rebuild the block it names")]
    assert reactor.compact_rebuilt == 1, "from the honest hash list, with the tx already fetched"
    assert len(of_type(honest, BlockTxsRequest)) == 0
    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        assert await until_block(autojump_clock, machine) == second
        nursery.cancel_scope.cancel()


async def test_a_peer_behind_that_has_the_decided_block_gets_it_only_after_the_interval(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """A peer one height behind that has the block (it sent us its compact form) is executing it:
    sending it the whole block again at once would only double the traffic."""
    node = open_nodes(tmp_path, KEYS[0], 1)
    await run_to_height(node.core, 6)
    blocks = node.core.blocks
    stored = Block.decode(blocks.load_block(5) or b"")
    other_round = BlockID(sha256(b"another block"), PartSetHeader(1, sha256(b"its parts")))
    reactor = compact_reactor(node, [])
    executing = connect(reactor, "executing", (5, 0, Step.COMMIT))
    confused = connect(reactor, "confused", (5, 0, Step.COMMIT))
    block_id = BlockID(stored.hash, PartSet.from_data(stored.encode()).header)
    compact = compact_of(stored, Proposal(5, 0, -1, block_id, 0))
    reactor.receive(CONSENSUS_DATA_CHANNEL, executing, encode_message(compact))
    # A block of that height, not the decided one: no reason to wait.
    header = replace(stored.header, time=stored.header.time + 1)
    reactor.receive(
        CONSENSUS_DATA_CHANNEL,
        confused,
        encode_message(
            compact_of(
                stored,
                Proposal(5, 0, -1, replace(other_round, hash=header.hash()), 0),
                header=header,
            )
        ),
    )

    async with trio.open_nursery() as nursery:
        await nursery.start(reactor.run)
        await ticks(autojump_clock, 1)
        assert len(decided(confused)) == 1
        assert decided(executing) == []
        await ticks(autojump_clock, round(CATCH_UP_INTERVAL / INTERVAL) + 1)
        assert [d.block.hash for d in decided(executing)] == [stored.hash], "still there: it gets it"
        nursery.cancel_scope.cancel()


async def test_rebuilds_of_past_heights_are_forgotten(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    node = open_nodes(tmp_path, KEYS[0], 1)
    machine = node.core.service.machine
    txs = [b"tx-%03d" % i for i in range(3)]
    block = machine.state.make_block(txs, (), EMPTY_COMMIT, KEYS[0].address.raw)
    proposal = Proposal(1, 0, -1, BlockID(block.hash, PartSet.from_data(block.encode()).header), 0)
    reactor = compact_reactor(node, [])
    peer = connect(reactor, "peer", (1, 0, Step.PROPOSE))
    reactor.receive(CONSENSUS_DATA_CHANNEL, peer, encode_message(compact_of(block, proposal)))
    assert reactor.rebuilding == 1 and len(of_type(peer, BlockTxsRequest)) == 1
    await run_to_height(node.core, 3)  # its own blocks, not that one
    async with trio.open_nursery() as nursery:
        await nursery.start(reactor.run)
        await ticks(autojump_clock, 1)
        assert reactor.rebuilding == 0
        nursery.cancel_scope.cancel()


async def test_missing_txs_are_asked_of_each_source_in_turn(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """A source that does not answer (it moved on, or it is hostile) does not stall the rebuild:
    the next peer that sent the same compact block is asked, and the answer of any completes it."""
    txs = [b"tx-%03d" % i for i in range(4)]
    node, machine, block, proposal, reactor, _ = compact_receiver(open_nodes, tmp_path, txs, txs[1:])
    mute = connect(reactor, "mute", (1, 0, Step.PROPOSE))
    helpful = connect(reactor, "helpful", (1, 0, Step.PROPOSE))
    reactor.receive(CONSENSUS_DATA_CHANNEL, mute, encode_message(ProposalEvent(proposal)))
    for peer in (mute, helpful):
        reactor.receive(CONSENSUS_DATA_CHANNEL, peer, encode_message(compact_of(block, proposal)))
    request = BlockTxsRequest(1, 0, block.hash, (0,))
    assert (of_type(mute, BlockTxsRequest), of_type(helpful, BlockTxsRequest)) == ([request], [])
    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        with trio.fail_after(60):  # virtual seconds
            await helpful.wait_sent(lambda: bool(of_type(helpful, BlockTxsRequest)))
        assert of_type(mute, BlockTxsRequest) == [request], "the other source's turn"
        answer = BlockTxs(1, 0, block.hash, ((0, txs[0]),))
        reactor.receive(CONSENSUS_DATA_CHANNEL, helpful, encode_message(answer))
        assert await until_block(autojump_clock, machine) == block
        nursery.cancel_scope.cancel()


async def test_a_peer_gets_one_rebuild_per_round_and_not_the_proposal_is_dropped(
    tmp_path: Path, open_nodes: Callable[..., Node], autojump_clock: trio.testing.MockClock
) -> None:
    """A peer naming blocks of its own making before the proposal arrives takes one rebuild of
    the round, not the room of the honest ones, and loses it when the proposal names another."""
    txs = [b"tx-%03d" % i for i in range(3)]
    node, machine, block, proposal, reactor, _ = compact_receiver(open_nodes, tmp_path, txs, ())
    liar = connect(reactor, "liar", (1, 0, Step.PROPOSE))
    honest = connect(reactor, "honest", (1, 0, Step.PROPOSE))
    for n in range(3):
        fake, fake_proposal = proposed_block(machine, [b"fake-%d" % n])
        reactor.receive(CONSENSUS_DATA_CHANNEL, liar, encode_message(compact_of(fake, fake_proposal)))
    assert reactor.rebuilding == 1 and len(of_type(liar, BlockTxsRequest)) == 1
    reactor.receive(CONSENSUS_DATA_CHANNEL, honest, encode_message(ProposalEvent(proposal)))
    reactor.receive(CONSENSUS_DATA_CHANNEL, honest, encode_message(compact_of(block, proposal)))
    assert reactor.rebuilding == 2 and of_type(honest, BlockTxsRequest)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.core.service.run)
        await nursery.start(reactor.run)
        await ticks(autojump_clock, 1)
        assert machine.proposal == proposal
        assert reactor.rebuilding == 1, "the liar's block is not the proposal: dropped"
        answer = BlockTxs(1, 0, block.hash, tuple(enumerate(txs)))
        reactor.receive(CONSENSUS_DATA_CHANNEL, honest, encode_message(answer))
        assert await until_block(autojump_clock, machine) == block
        nursery.cancel_scope.cancel()
