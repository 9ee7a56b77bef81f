"""The consensus gossip reactor: proposals, block parts, votes and evidence between peers, with
enough tracking of each peer's position that nothing is sent twice to a peer that has it.

Channels (CometBFT's ids and priorities): state 0x20 (each peer's height/round/step), data 0x21
(proposals, block parts, decided blocks for a peer a few heights behind), vote 0x22, evidence
0x38. The node's own signed messages go to every peer at once. Then, every gossip interval, each
peer gets what it lacks and can use: the proposal and parts of its round when it is in ours,
the votes of its round and of the rounds that matter (our round, our valid, locked and
proof-of-lock rounds, its previous round), pending evidence, and, if it is behind, the decided
block of its height with its commit. What a peer sends us is marked as known to it.

Compact block propagation (`compact_blocks`, on in the node's default config): a complete
proposal block goes to a peer as a CompactBlock, its transactions named by hash, instead of its
parts. The peer rebuilds the block from its mempool (`lookup_tx`), asks the sender for the
transactions it lacks (BlockTxsRequest, then in turn each peer that sent the same compact block;
answered with BlockTxs, each checked against its hash), re-encodes it, checks that the part set
it makes is the proposal's, and hands the parts to its machine as if the sender had sent them.
A compact block whose header is not the block it names, a transaction that is not the one named,
a request for more transactions than the block has, or a rebuilt block whose parts are not the
named ones is misbehaviour; in the last case the hash list another peer sent for the same block
is tried next.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import BadMessage, BlockPartEvent, ProposalEvent, StepChanged, VoteEvent
from consensus.messages import (
    BlockTxs,
    BlockTxsRequest,
    CompactBlock,
    DecidedBlock,
    EvidenceMessage,
    Message,
    RoundStep,
    WireMessage,
    decode_message,
    encode_message,
)
from consensus.service import ConsensusService
from consensus.types import MAX_BLOCK_BYTES, Block, Commit, PartSet, Proposal, Vote, VoteType
from p2p.base import (
    CONSENSUS_DATA_CHANNEL,
    CONSENSUS_STATE_CHANNEL,
    CONSENSUS_VOTE_CHANNEL,
    EVIDENCE_CHANNEL,
    ChannelDescriptor,
    Peer,
    PeerMisbehaved,
    peer_state,
)
from primitives.codec import DecodeError
from primitives.hashing import sha256
from storage.blockstore import BlockStore

log = logging.getLogger("derivd.consensus.reactor")

PEER_STATE = "consensus"
VOTES_PER_TICK = 256
CATCH_UP_INTERVAL = 1.0  # driver timer (seconds, not state): resend pacing of a peer still at one height
MAX_DATA_MESSAGE = MAX_BLOCK_BYTES + (4 << 20)
MAX_REBUILDS = 32
"""compact blocks being rebuilt at once (one per peer and round: an honest peer has one proposal
block per round)"""
REQUEST_INTERVAL = 0.5  # driver timer (seconds, not state): asking again for a block's missing txs

VoteKey = tuple[int, int, int, int, bytes]
BlockKey = tuple[int, int, bytes]
"""(height, round, block hash)"""


def _key(message: Proposal | CompactBlock) -> BlockKey:
    """The block a proposal or a compact block names, at its height and round."""
    return (message.height, message.round, message.block_id.hash)


def _vote_key(vote: Vote) -> VoteKey:
    return (vote.height, vote.round, int(vote.type), vote.validator_index, vote.block_id.hash)


@dataclass
class PeerRoundState:
    """What we know of one peer's consensus position and of what it has."""

    height: int = 0
    round: int = -1
    step: int = 0
    votes: set[VoteKey] = field(default_factory=set)
    proposals: set[tuple[int, int, bytes]] = field(default_factory=set)
    parts: set[tuple[int, int, bytes, int]] = field(default_factory=set)
    blocks: set[BlockKey] = field(default_factory=set)
    """proposal blocks it has whole: it sent us their compact form, or we sent it ours"""
    evidence: set[bytes] = field(default_factory=set)
    last_catch_up: float = -1e9
    last_catch_up_height: int = 0

    def moved_to(self, height: int) -> None:
        """Forget what belongs to heights the peer has left."""
        if height > self.height:
            self.votes = {k for k in self.votes if k[0] >= height}
            self.proposals = {k for k in self.proposals if k[0] >= height}
            self.parts = {k for k in self.parts if k[0] >= height}
            self.blocks = {k for k in self.blocks if k[0] >= height}
        self.height = height


@dataclass
class _Rebuild:
    """A compact block being rebuilt: its transactions as found so far, then its parts."""

    compact: CompactBlock
    origin: str
    """the peer whose compact block this is (its hashes are the ones checked)"""
    sources: list[str]
    """the peers that sent this block compact, asked in turn for the missing transactions"""
    txs: list[bytes | None]
    missing: int
    parts: PartSet | None = None
    asked_at: float = -1e9
    alternates: dict[str, CompactBlock] = field(default_factory=dict)
    """compact forms of the same block from other peers whose hash lists differ from this one's
    (one of the two lies): tried in turn if this one does not rebuild the block"""


def _no_tx(tx_hash: bytes) -> bytes | None:
    return None


class ConsensusReactor:
    """Gossip of consensus messages over the switch."""

    def __init__(
        self,
        service: ConsensusService,
        blocks: BlockStore,
        ban: Callable[[str, str], None],
        gossip_interval: float = 0.1,
        *,
        compact_blocks: bool = False,
        lookup_tx: Callable[[bytes], bytes | None] = _no_tx,
    ) -> None:
        self.service = service
        self.blocks = blocks
        self.ban = ban
        self.gossip_interval = gossip_interval
        self.compact_blocks = compact_blocks
        self.lookup_tx = lookup_tx
        self._peers: dict[str, Peer] = {}
        self._rebuilds: dict[BlockKey, _Rebuild] = {}
        self._compact: tuple[BlockKey, bytes] | None = None
        """the last block's encoded CompactBlock"""
        self.compact_rebuilt = 0
        self.compact_fetched_txs = 0
        driver = service.driver
        driver.gossip.append(self._on_own_message)
        driver.step_listeners.append(self._on_step)
        driver.bad_peer_listeners.append(self._on_bad_message)
        self.dropped_inbound = 0

    @property
    def rebuilding(self) -> int:
        """Compact blocks being rebuilt (waiting for transactions, or for the machine to take
        their parts)."""
        return len(self._rebuilds)

    def peer_states(self) -> list[tuple[str, str, PeerRoundState]]:
        """(peer id, remote address, what we know of its round) of each connected peer."""
        return [(peer.id, peer.remote_address, self._state(peer)) for peer in self._peers.values()]

    # -- Reactor --------------------------------------------------------------------------------

    def channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                CONSENSUS_STATE_CHANNEL, priority=6, send_queue_capacity=100, max_message_size=1024
            ),
            ChannelDescriptor(
                CONSENSUS_DATA_CHANNEL,
                priority=10,
                send_queue_capacity=200,
                max_message_size=MAX_DATA_MESSAGE,
            ),
            ChannelDescriptor(
                CONSENSUS_VOTE_CHANNEL, priority=7, send_queue_capacity=1000, max_message_size=4096
            ),
            ChannelDescriptor(EVIDENCE_CHANNEL, priority=6, send_queue_capacity=100, max_message_size=16_384),
        ]

    def add_peer(self, peer: Peer) -> None:
        peer.set(PEER_STATE, PeerRoundState())
        self._peers[peer.id] = peer
        machine = self.service.machine
        self._send(peer, CONSENSUS_STATE_CHANNEL, RoundStep(machine.height, machine.round, int(machine.step)))
        evidence = self.service.driver.evidence
        if evidence is not None:
            for item in evidence.pending():
                self._send_evidence(peer, item)

    def remove_peer(self, peer: Peer, reason: str) -> None:
        self._peers.pop(peer.id, None)

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        limit = MAX_DATA_MESSAGE if channel_id == CONSENSUS_DATA_CHANNEL else 1 << 20
        try:
            decoded = decode_message(message, peer.id, limit)
        except (DecodeError, ValueError) as exc:
            raise PeerMisbehaved(f"undecodable consensus message: {exc}") from exc
        if not _on_right_channel(channel_id, decoded):
            raise PeerMisbehaved(f"{type(decoded).__name__} on channel {channel_id:#x}")
        state = self._state(peer)
        if isinstance(decoded, CompactBlock):
            self._on_compact_block(peer, state, decoded)
            return
        if isinstance(decoded, BlockTxsRequest):
            self._on_block_txs_request(peer, decoded)
            return
        if isinstance(decoded, BlockTxs):
            self._on_block_txs(peer, decoded)
            return
        if isinstance(decoded, RoundStep):
            if decoded.height < state.height:
                raise PeerMisbehaved("its height went backwards")
            state.moved_to(decoded.height)
            state.round, state.step = decoded.round, decoded.step
            return
        if isinstance(decoded, VoteEvent):
            state.votes.add(_vote_key(decoded.vote))
        elif isinstance(decoded, ProposalEvent):
            p = decoded.proposal
            state.proposals.add((p.height, p.round, p.block_id.hash))
        elif isinstance(decoded, BlockPartEvent):
            state.parts.add((decoded.height, decoded.round, b"", decoded.part.index))
        elif isinstance(decoded, EvidenceMessage):
            state.evidence.add(decoded.evidence.key)
        if not self.service.submit_nowait(decoded):
            self.dropped_inbound += 1  # the inbox is full: gossip will bring it again

    # -- outbound -------------------------------------------------------------------------------

    def _state(self, peer: Peer) -> PeerRoundState:
        return peer_state(peer, PEER_STATE, PeerRoundState)

    def _send(self, peer: Peer, channel: int, message: WireMessage) -> bool:
        return peer.try_send(channel, encode_message(message))

    def _send_evidence(self, peer: Peer, evidence: DuplicateVoteEvidence) -> None:
        state = self._state(peer)
        if evidence.key not in state.evidence and self._send(
            peer, EVIDENCE_CHANNEL, EvidenceMessage(evidence)
        ):
            state.evidence.add(evidence.key)

    def _on_step(self, step: StepChanged) -> None:
        message = encode_message(RoundStep(step.height, step.round, int(step.step)))
        for peer in list(self._peers.values()):
            peer.try_send(CONSENSUS_STATE_CHANNEL, message)
        if self.compact_blocks:  # the block may have just become complete: pass it on at once
            machine = self.service.machine
            for peer in list(self._peers.values()):
                state = self._state(peer)
                if (state.height, state.round) == (machine.height, machine.round):
                    self._send_block(peer, state)

    def _on_own_message(self, message: Message) -> None:
        for peer in list(self._peers.values()):
            if isinstance(message, EvidenceMessage):
                self._send_evidence(peer, message.evidence)
            elif isinstance(message, VoteEvent):
                self._send_vote(peer, message.vote)
            else:
                state = self._state(peer)
                if isinstance(message, ProposalEvent):
                    p = message.proposal
                    if (state.height, state.round) == (p.height, p.round):
                        self._send_proposal(peer, message)
                elif not self.compact_blocks and (state.height, state.round) == (
                    message.height,
                    message.round,
                ):
                    self._send_part(peer, message, b"")

    def _send_vote(self, peer: Peer, vote: Vote) -> bool:
        state = self._state(peer)
        key = _vote_key(vote)
        if key in state.votes or vote.height != state.height:
            return False
        if self._send(peer, CONSENSUS_VOTE_CHANNEL, VoteEvent(vote)):
            state.votes.add(key)
            return True
        return False

    def _send_proposal(self, peer: Peer, message: ProposalEvent) -> None:
        state = self._state(peer)
        p = message.proposal
        key = (p.height, p.round, p.block_id.hash)
        if key not in state.proposals and self._send(peer, CONSENSUS_DATA_CHANNEL, message):
            state.proposals.add(key)

    def _send_part(self, peer: Peer, message: BlockPartEvent, block_hash: bytes) -> None:
        state = self._state(peer)
        key = (message.height, message.round, block_hash, message.part.index)
        if key not in state.parts and self._send(peer, CONSENSUS_DATA_CHANNEL, message):
            state.parts.add(key)

    def _on_bad_message(self, bad: BadMessage) -> None:
        if bad.peer in self._peers:
            self.ban(bad.peer, bad.reason)

    # -- the gossip routine -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            await trio.sleep(self.gossip_interval)  # a pacing timer, not synchronisation
            self._tend_rebuilds()
            for peer in list(self._peers.values()):
                self._gossip_to(peer)

    def _gossip_to(self, peer: Peer) -> None:
        machine = self.service.machine
        state = self._state(peer)
        if state.height == 0:
            return
        if state.height < machine.height:
            self._catch_up(peer, state)
            return
        if state.height > machine.height:
            return
        if (
            machine.proposal is not None
            and machine.proposal_parts is not None
            and state.round == machine.round
        ):
            proposal = machine.proposal
            if machine.proposal_parts.header == proposal.block_id.parts:
                self._send_proposal(peer, ProposalEvent(proposal))
                self._send_block(peer, state)
        rounds = {state.round, state.round - 1, machine.round, machine.valid_round, machine.locked_round}
        if machine.proposal is not None:
            rounds.add(machine.proposal.pol_round)
        sent = 0
        for round_ in sorted(r for r in rounds if r >= 0):
            for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                vote_set = machine.votes.peek(round_, vote_type)
                for vote in vote_set.all_votes() if vote_set is not None else ():
                    if sent >= VOTES_PER_TICK:
                        return
                    if self._send_vote(peer, vote):
                        sent += 1
        evidence = self.service.driver.evidence
        if evidence is not None:
            for item in evidence.pending():
                self._send_evidence(peer, item)

    def _send_block(self, peer: Peer, state: PeerRoundState) -> None:
        """The complete proposal block of our round, compact or as parts, unless the peer has it."""
        machine = self.service.machine
        proposal, parts, block = machine.proposal, machine.proposal_parts, machine.proposal_block
        if proposal is None or parts is None or not parts.is_complete():
            return
        key = _key(proposal)
        if key in state.blocks:
            return
        if self.compact_blocks and block is not None:
            if peer.try_send(CONSENSUS_DATA_CHANNEL, self._compact_of(key, proposal, block)):
                state.blocks.add(key)
            return
        for part in parts.parts():
            self._send_part(peer, BlockPartEvent(proposal.height, proposal.round, part), b"")

    def _compact_of(self, key: BlockKey, proposal: Proposal, block: Block) -> bytes:
        """The encoded CompactBlock of `block` (made once per block). Its parts rebuild from it:
        a decoded block re-encodes to the very bytes it came from (the codec is canonical)."""
        if self._compact is None or self._compact[0] != key:
            compact = CompactBlock(
                round=proposal.round,
                block_id=proposal.block_id,
                header=block.header,
                tx_hashes=tuple(sha256(tx) for tx in block.txs),
                evidence=block.evidence,
                last_commit=block.last_commit,
            )
            self._compact = (key, encode_message(compact))
        return self._compact[1]

    # -- compact blocks received ------------------------------------------------------------------

    def _on_compact_block(self, peer: Peer, state: PeerRoundState, compact: CompactBlock) -> None:
        key = _key(compact)
        state.blocks.add(key)  # it has the block whole: never send it back
        if compact.header.hash() != compact.block_id.hash:
            raise PeerMisbehaved("a compact block whose header is not the block it names")
        machine = self.service.machine
        if (compact.height, compact.round) != (machine.height, machine.round):
            return
        if machine.proposal is not None and machine.proposal.block_id != compact.block_id:
            return  # not the proposal we have (the proposer equivocated, or the peer lies)
        if machine.proposal_parts is not None and machine.proposal_parts.is_complete():
            return
        rebuild = self._rebuilds.get(key)
        if rebuild is not None:
            if peer.id not in rebuild.sources:
                rebuild.sources.append(peer.id)
                if compact.tx_hashes != rebuild.compact.tx_hashes:
                    rebuild.alternates[peer.id] = compact
            return
        if len(self._rebuilds) >= MAX_REBUILDS or any(
            r.origin == peer.id and k[:2] == key[:2] for k, r in self._rebuilds.items()
        ):
            return  # a second block of this peer for the round: it lies (or relays one that did)
        self._start_rebuild(peer, compact, [peer.id], {}, {})

    def _start_rebuild(
        self,
        peer: Peer,
        compact: CompactBlock,
        sources: list[str],
        fetched: dict[bytes, bytes],
        alternates: dict[str, CompactBlock],
    ) -> None:
        """Rebuild `compact` (from `peer`) with the mempool and `fetched` (txs by hash already
        received for this block), asking `peer` for the rest."""
        lookup = self.lookup_tx
        txs = [fetched.get(tx_hash) or lookup(tx_hash) for tx_hash in compact.tx_hashes]
        missing = sum(1 for tx in txs if tx is None)
        rebuild = _Rebuild(compact, peer.id, sources, txs, missing, alternates=alternates)
        self._rebuilds[_key(compact)] = rebuild
        if missing:
            self._ask_for_txs(peer, rebuild)
        else:
            self._rebuilt(rebuild)

    def _ask_for_txs(self, peer: Peer, rebuild: _Rebuild) -> None:
        c = rebuild.compact
        indexes = tuple(i for i, tx in enumerate(rebuild.txs) if tx is None)
        if self._send(
            peer, CONSENSUS_DATA_CHANNEL, BlockTxsRequest(c.height, c.round, c.block_id.hash, indexes)
        ):
            rebuild.asked_at = trio.current_time()

    def _on_block_txs_request(self, peer: Peer, request: BlockTxsRequest) -> None:
        machine = self.service.machine
        block = machine.proposal_block
        if block is None or (block.height, block.hash) != (request.height, request.block_hash):
            return  # not ours to give (any more)
        if len(request.indexes) > len(block.txs):
            raise PeerMisbehaved(f"a request for {len(request.indexes)} txs of a block of {len(block.txs)}")
        txs = tuple((i, block.txs[i]) for i in sorted(set(request.indexes)) if i < len(block.txs))
        if txs:
            self._send(
                peer, CONSENSUS_DATA_CHANNEL, BlockTxs(request.height, request.round, request.block_hash, txs)
            )

    def _on_block_txs(self, peer: Peer, answer: BlockTxs) -> None:
        rebuild = self._rebuilds.get((answer.height, answer.round, answer.block_hash))
        if rebuild is None or rebuild.parts is not None:
            return  # not asked for, or no longer needed
        hashes = rebuild.compact.tx_hashes
        for index, tx in answer.txs:
            if index >= len(hashes) or sha256(tx) != hashes[index]:
                raise PeerMisbehaved(f"block tx {index} is not the transaction the block names")
            if rebuild.txs[index] is None:
                rebuild.txs[index] = tx
                rebuild.missing -= 1
                self.compact_fetched_txs += 1
        if rebuild.missing == 0:
            self._rebuilt(rebuild)

    def _rebuilt(self, rebuild: _Rebuild) -> None:
        """Every transaction is in: make the parts, check them, hand them to the machine."""
        c = rebuild.compact
        block = c.rebuild(tuple(tx for tx in rebuild.txs if tx is not None))
        parts = PartSet.from_data(block.encode())
        if parts.header != c.block_id.parts:
            del self._rebuilds[_key(c)]
            self.ban(rebuild.origin, "a compact block that does not rebuild the block it names")
            alternates = [(p, a) for p, a in rebuild.alternates.items() if p in self._peers]
            if alternates:  # another peer's hash list for the block: it may be the true one
                peer_id, alternate = alternates[0]
                fetched = {sha256(tx): tx for tx in rebuild.txs if tx is not None}
                sources = [peer_id, *(s for s in rebuild.sources if s not in (peer_id, rebuild.origin))]
                self._start_rebuild(self._peers[peer_id], alternate, sources, fetched, dict(alternates[1:]))
            return
        rebuild.parts = parts
        rebuild.txs = []
        self.compact_rebuilt += 1
        self._submit_parts(rebuild)

    def _submit_parts(self, rebuild: _Rebuild) -> None:
        assert rebuild.parts is not None
        c = rebuild.compact
        have = self.service.machine.proposal_parts
        for part in rebuild.parts.parts():
            if have is not None and have.has(part.index):
                continue
            if not self.service.submit_nowait(BlockPartEvent(c.height, c.round, part, rebuild.origin)):
                self.dropped_inbound += 1  # the inbox is full: `_tend_rebuilds` tries again
                return

    def _tend_rebuilds(self) -> None:
        """Each gossip tick: forget rebuilds of past heights and rounds and of blocks that are not
        the proposal, ask again for transactions that did not come, and hand the machine parts it
        has not taken (it had no proposal yet, or its inbox was full)."""
        machine = self.service.machine
        now = trio.current_time()
        proposal = machine.proposal
        for key, rebuild in list(self._rebuilds.items()):
            if (
                key[0] != machine.height
                or key[1] < machine.round
                or (proposal is not None and key[1] == proposal.round and key[2] != proposal.block_id.hash)
            ):
                del self._rebuilds[key]  # a past height or round, or not the block proposed
            elif rebuild.parts is None:
                if now - rebuild.asked_at >= REQUEST_INTERVAL:
                    # the next source in turn: one that does not answer does not stall the rebuild
                    rebuild.sources = [
                        s for s in rebuild.sources[1:] + rebuild.sources[:1] if s in self._peers
                    ]
                    if not rebuild.sources:
                        del self._rebuilds[key]
                    else:
                        self._ask_for_txs(self._peers[rebuild.sources[0]], rebuild)
            else:
                have = machine.proposal_parts
                if (
                    key[1] == machine.round
                    and have is not None
                    and have.header == rebuild.parts.header
                    and not have.is_complete()
                ):
                    self._submit_parts(rebuild)

    def _catch_up(self, peer: Peer, state: PeerRoundState) -> None:
        """Send a lagging peer the decided block of its height, at once when it reached a new
        height (so it catches up as fast as it applies blocks, faster than the chain grows), and
        again only after `CATCH_UP_INTERVAL` while it stays at one height (lost or in flight). A
        peer known to have that block whole (`PeerRoundState.blocks`) is behind only because it
        is still executing it: it gets the block after the interval, not at once."""
        now = trio.current_time()
        if state.height == state.last_catch_up_height and now - state.last_catch_up < CATCH_UP_INTERVAL:
            return
        if state.height != state.last_catch_up_height:
            decided = self.blocks.hash_at(state.height)
            if any(key[0] == state.height and key[2] == decided for key in state.blocks):
                # It has the decided block whole: it is executing it, most likely. Only if it is
                # still at this height after the interval does the block go.
                state.last_catch_up, state.last_catch_up_height = now, state.height
                return
        raw_block = self.blocks.load_block(state.height)
        raw_commit = self.blocks.load_seen_commit(state.height)
        if raw_block is None or raw_commit is None:
            return  # pruned: the peer needs block sync from someone else
        message = DecidedBlock(Block.decode(raw_block), Commit.decode(raw_commit))
        if self._send(peer, CONSENSUS_DATA_CHANNEL, message):
            state.last_catch_up = now
            state.last_catch_up_height = state.height


def _on_right_channel(channel: int, message: WireMessage) -> bool:
    if isinstance(message, RoundStep):
        return channel == CONSENSUS_STATE_CHANNEL
    if isinstance(
        message, ProposalEvent | BlockPartEvent | DecidedBlock | CompactBlock | BlockTxsRequest | BlockTxs
    ):
        return channel == CONSENSUS_DATA_CHANNEL
    if isinstance(message, VoteEvent):
        return channel == CONSENSUS_VOTE_CHANNEL
    return channel == EVIDENCE_CHANNEL
