"""The consensus gossip reactor: proposals, block parts, votes and evidence between peers, with
enough tracking of each peer's position that nothing is sent twice to a peer that has it.

Channels (CometBFT's ids and priorities): state 0x20 (each peer's height/round/step), data 0x21
(proposals, block parts, decided blocks for a peer a few heights behind), vote 0x22, evidence
0x38. The node's own signed messages go to every peer at once. Then, every gossip interval, each
peer gets what it lacks and can use: the proposal and parts of its round when it is in ours,
the votes of its round and of the rounds that matter (our round, our valid, locked and
proof-of-lock rounds, its previous round), pending evidence, and, if it is behind, the decided
block of its height with its commit. What a peer sends us is marked as known to it.

Received messages go to the consensus service's inbox; messages that do not decode get the
peer banned here, and messages the machine finds invalid (a bad signature, a forged part) get it
banned through the driver's bad-message report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import BadMessage, BlockPartEvent, ProposalEvent, StepChanged, VoteEvent
from consensus.messages import (
    DecidedBlock,
    EvidenceMessage,
    Message,
    RoundStep,
    WireMessage,
    decode_message,
    encode_message,
)
from consensus.service import ConsensusService
from consensus.types import MAX_BLOCK_BYTES, Block, Commit, Vote, VoteType
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
from storage.blockstore import BlockStore

log = logging.getLogger("derivd.consensus.reactor")

PEER_STATE = "consensus"
VOTES_PER_TICK = 256
CATCH_UP_INTERVAL = 1.0  # driver timer (seconds, not state): resend pacing of a peer still at one height
MAX_DATA_MESSAGE = MAX_BLOCK_BYTES + (4 << 20)

VoteKey = tuple[int, int, int, int, bytes]


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
    evidence: set[bytes] = field(default_factory=set)
    last_catch_up: float = -1e9
    last_catch_up_height: int = 0

    def moved_to(self, height: int) -> None:
        """Forget what belongs to heights the peer has left."""
        if height > self.height:
            self.votes = {k for k in self.votes if k[0] >= height}
            self.proposals = {k for k in self.proposals if k[0] >= height}
            self.parts = {k for k in self.parts if k[0] >= height}
        self.height = height


class ConsensusReactor:
    """Gossip of consensus messages over the switch."""

    def __init__(
        self,
        service: ConsensusService,
        blocks: BlockStore,
        ban: Callable[[str, str], None],
        gossip_interval: float = 0.1,
    ) -> None:
        self.service = service
        self.blocks = blocks
        self.ban = ban
        self.gossip_interval = gossip_interval
        self._peers: dict[str, Peer] = {}
        driver = service.driver
        driver.gossip.append(self._on_own_message)
        driver.step_listeners.append(self._on_step)
        driver.bad_peer_listeners.append(self._on_bad_message)
        self.dropped_inbound = 0

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
                elif (state.height, state.round) == (message.height, message.round):
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
                if machine.proposal_parts.is_complete():
                    for part in machine.proposal_parts.parts():
                        self._send_part(peer, BlockPartEvent(proposal.height, proposal.round, part), b"")
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

    def _catch_up(self, peer: Peer, state: PeerRoundState) -> None:
        """Send a lagging peer the decided block of its height, at once when it reached a new
        height (so it catches up as fast as it applies blocks, faster than the chain grows), and
        again only after `CATCH_UP_INTERVAL` while it stays at one height (lost or in flight)."""
        now = trio.current_time()
        if state.height == state.last_catch_up_height and now - state.last_catch_up < CATCH_UP_INTERVAL:
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
    if isinstance(message, ProposalEvent | BlockPartEvent | DecidedBlock):
        return channel == CONSENSUS_DATA_CHANNEL
    if isinstance(message, VoteEvent):
        return channel == CONSENSUS_VOTE_CHANNEL
    return channel == EVIDENCE_CHANNEL
