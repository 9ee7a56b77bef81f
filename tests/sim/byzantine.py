"""Byzantine validators of the simulator: each runs the honest machine (with a signer that never
refuses) and an `Adversary` that rewrites what it sends, with behaviours that attack the
locking rules. A seed gives each byzantine validator a random set of them; together they hold
less than a third of the power.

- EQUIVOCATE: two votes per step and two blocks per proposal, each to part of the network;
- FORGE_POL: it proposes a block nobody prevoted, claiming a proof-of-lock of a recent round;
- REPROPOSE: it proposes a block seen in an earlier round of the height instead of its own;
- AMNESIA: it forgets its lock whenever its round changes;
- FLIP_VOTES: one vote per step, but for a block chosen among those seen at the height (or
  nil), so its votes differ from round to round;
- WITHHOLD: each of its messages of a (height, round, step) goes to one chosen part of the
  network only, to split the honest validators;
- INVALID_BLOCK: its proposals carry a block the chain or the application rejects, or parts
  that do not match the proposal.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from enum import Enum

from consensus.machine import BlockPartEvent, ProposalEvent, VoteEvent
from consensus.messages import Message
from consensus.types import NIL_BLOCK_ID, Block, BlockID, PartSet, PartSetHeader, Proposal, Vote, data_hash
from primitives.hashing import sha256
from tests.sim.node import POISON, SimNode


class Behaviour(Enum):
    EQUIVOCATE = "equivocate"
    FORGE_POL = "forge-pol"
    REPROPOSE = "repropose"
    AMNESIA = "amnesia"
    FLIP_VOTES = "flip-votes"
    WITHHOLD = "withhold"
    INVALID_BLOCK = "invalid-block"


Send = tuple[int, Message]
"""A message for one peer (by index)."""


def draw_behaviours(rng: random.Random) -> frozenset[Behaviour]:
    """A random non-empty set of behaviours, each in about half the seeds."""
    chosen = {b for b in Behaviour if rng.random() < 0.5}
    return frozenset(chosen or {rng.choice(list(Behaviour))})


@dataclass
class Adversary:
    """What one byzantine validator does to its outgoing messages."""

    node: SimNode
    chain_id: str
    behaviours: frozenset[Behaviour]
    rng: random.Random
    held: tuple[Proposal, PartSet] | None = None
    """Its own proposal, held until its parts are all there (to send what it likes instead)."""
    blocks: dict[int, dict[bytes, tuple[Block, PartSet]]] = field(default_factory=dict)
    """Complete blocks it has seen, by height."""
    flips: dict[tuple[int, int, int], BlockID] = field(default_factory=dict)
    audiences: dict[tuple[int, int, int], list[int]] = field(default_factory=dict)
    last_round: tuple[int, int] = (0, 0)
    stats: dict[str, int] = field(default_factory=dict)

    # -- hooks -------------------------------------------------------------------------------

    def after_event(self) -> None:
        """After each event its machine handled: remember blocks; forget the lock (AMNESIA)."""
        machine = self.node.machine
        for block, parts in (
            (machine.proposal_block, machine.proposal_parts),
            (machine.valid_block, machine.valid_parts),
            (machine.locked_block, machine.locked_parts),
        ):
            if block is not None and parts is not None and parts.is_complete():
                self.blocks.setdefault(block.height, {}).setdefault(block.hash, (block, parts))
        position = (machine.height, machine.round)
        if Behaviour.AMNESIA in self.behaviours and position != self.last_round and machine.locked_round >= 0:
            machine.locked_round = -1
            machine.locked_block = None
            machine.locked_parts = None
            self._count(Behaviour.AMNESIA.value)
        self.last_round = position

    def outgoing(self, message: Message, peers: list[int]) -> list[Send]:
        """What goes out, and to whom, when its driver gossips `message`."""
        if isinstance(message, VoteEvent) and message.vote.validator_address == self.node.address:
            return self._own_vote(message.vote, peers)
        if isinstance(message, ProposalEvent) and self._is_own(message.proposal):
            self.held = (message.proposal, PartSet(message.proposal.block_id.parts))
            return []
        if (
            isinstance(message, BlockPartEvent)
            and self.held is not None
            and self.held[0].round == message.round
        ):
            proposal, parts = self.held
            if parts.add(message.part) and parts.is_complete():
                self.held = None
                return self._own_proposal(proposal, parts, peers)
            return []
        return [(peer, message) for peer in peers]

    # -- votes -------------------------------------------------------------------------------

    def _own_vote(self, vote: Vote, peers: list[int]) -> list[Send]:
        if Behaviour.FLIP_VOTES in self.behaviours:
            key = (vote.height, vote.round, int(vote.type))
            if key not in self.flips:
                self.flips[key] = self.rng.choice(
                    [vote.block_id, NIL_BLOCK_ID, *self._known_ids(vote.height)]
                )
            if self.flips[key] != vote.block_id:
                vote = self._sign_vote(replace(vote, block_id=self.flips[key]))
                self._count(Behaviour.FLIP_VOTES.value)
        audience = self._audience(vote.height, vote.round, int(vote.type), peers)
        if Behaviour.EQUIVOCATE in self.behaviours and self.rng.random() < 0.5:
            other_id = (
                BlockID(sha256(b"evil %d" % vote.height), PartSetHeader(1, sha256(b"evil parts")))
                if vote.block_id.is_nil()
                else NIL_BLOCK_ID
            )
            other = self._sign_vote(replace(vote, block_id=other_id))
            group_a, group_b = self._split(audience)
            self._count(Behaviour.EQUIVOCATE.value)
            sends: list[Send] = [(p, VoteEvent(vote)) for p in group_a]
            return sends + [(p, VoteEvent(other)) for p in group_b]
        return [(peer, VoteEvent(vote)) for peer in audience]

    def _known_ids(self, height: int) -> list[BlockID]:
        known = self.blocks.get(height, {})
        return [BlockID(block.hash, parts.header) for block, parts in known.values()]

    # -- proposals ---------------------------------------------------------------------------

    def _own_proposal(self, proposal: Proposal, parts: PartSet, peers: list[int]) -> list[Send]:
        block = Block.decode(parts.data())
        self.blocks.setdefault(block.height, {}).setdefault(block.hash, (block, parts))
        options = ["honest proposals"]
        options += [b.value for b in Behaviour if b in self.behaviours and b in _PROPOSAL_BEHAVIOURS]
        choice = self.rng.choice(options)
        self._count(choice)
        audience = self._audience(proposal.height, proposal.round, 0, peers)
        if choice == Behaviour.EQUIVOCATE.value:
            other_block, other_parts = self._variant(block, b"evil %d" % self.rng.getrandbits(32))
            group_a, group_b = self._split(audience)
            return self._proposal_to(group_a, proposal, parts) + self._proposal_to(
                group_b, self._sign_proposal(other_block, other_parts, proposal), other_parts
            )
        if choice == Behaviour.FORGE_POL.value and proposal.round > 0:
            # A block nobody has prevoted, under a proof-of-lock of a recent round.
            block, parts = self._variant(block, b"forged %d" % self.rng.getrandbits(32))
            claimed = self.rng.randint(max(0, proposal.round - 2), proposal.round - 1)
            proposal = self._sign_proposal(block, parts, proposal, pol_round=claimed)
        elif choice == Behaviour.REPROPOSE.value:
            older = [(b, p) for b, p in self.blocks.get(block.height, {}).values() if b.hash != block.hash]
            if older:
                block, parts = self.rng.choice(older)
                proposal = self._sign_proposal(block, parts, proposal, pol_round=-1)
        elif choice == Behaviour.INVALID_BLOCK.value:
            return self._invalid_proposal(block, parts, proposal, audience)
        return self._proposal_to(audience, proposal, parts)

    def _invalid_proposal(
        self, block: Block, parts: PartSet, proposal: Proposal, audience: list[int]
    ) -> list[Send]:
        kind = self.rng.randrange(3)
        if kind == 0:  # the application rejects a poisoned transaction
            bad_block, bad_parts = self._variant(block, POISON + b"%d" % self.rng.getrandbits(32))
            return self._proposal_to(audience, self._sign_proposal(bad_block, bad_parts, proposal), bad_parts)
        if kind == 1:  # the chain rules reject the header
            header = replace(block.header, app_hash=sha256(b"wrong app hash"))
            bad = Block(header, block.txs, block.evidence, block.last_commit)
            bad_parts = PartSet.from_data(bad.encode())
            return self._proposal_to(audience, self._sign_proposal(bad, bad_parts, proposal), bad_parts)
        # the proposal names one block, the parts carry another
        other_block, other_parts = self._variant(block, b"mismatch")
        signed = self._sign_proposal(other_block, other_parts, proposal)
        mismatched = replace(signed, block_id=BlockID(other_block.hash, parts.header), signature=b"")
        mismatched = mismatched.with_signature(self.node.key.sign(mismatched.sign_bytes(self.chain_id)))
        return self._proposal_to(audience, mismatched, parts)

    def _variant(self, block: Block, extra_tx: bytes) -> tuple[Block, PartSet]:
        txs = (*block.txs, extra_tx)
        other = Block(replace(block.header, data_hash=data_hash(txs)), txs, block.evidence, block.last_commit)
        return other, PartSet.from_data(other.encode())

    def _proposal_to(self, peers: list[int], proposal: Proposal, parts: PartSet) -> list[Send]:
        out: list[Send] = []
        for peer in peers:
            out.append((peer, ProposalEvent(proposal)))
            out.extend((peer, BlockPartEvent(proposal.height, proposal.round, p)) for p in parts.parts())
        return out

    # -- helpers -----------------------------------------------------------------------------

    def _is_own(self, proposal: Proposal) -> bool:
        machine = self.node.machine
        return proposal.height == machine.height and machine.proposer() == self.node.address

    def _audience(self, height: int, round_: int, step: int, peers: list[int]) -> list[int]:
        if Behaviour.WITHHOLD not in self.behaviours:
            return peers
        key = (height, round_, step)
        if key not in self.audiences:
            size = self.rng.randint(0, len(peers))
            self.audiences[key] = sorted(self.rng.sample(peers, size))
            self._count(Behaviour.WITHHOLD.value)
        return [p for p in self.audiences[key] if p in peers]

    def _split(self, peers: list[int]) -> tuple[list[int], list[int]]:
        shuffled = peers[:]
        self.rng.shuffle(shuffled)
        half = max(1, len(shuffled) // 2)
        group_a, group_b = shuffled[:half], shuffled[half:]
        return group_a, group_b + group_a[:1]  # one peer sees both versions

    def _sign_vote(self, vote: Vote) -> Vote:
        vote = replace(vote, signature=b"")
        return vote.with_signature(self.node.key.sign(vote.sign_bytes(self.chain_id)))

    def _sign_proposal(
        self, block: Block, parts: PartSet, template: Proposal, pol_round: int | None = None
    ) -> Proposal:
        proposal = replace(
            template,
            block_id=BlockID(block.hash, parts.header),
            pol_round=template.pol_round if pol_round is None else pol_round,
            signature=b"",
        )
        return proposal.with_signature(self.node.key.sign(proposal.sign_bytes(self.chain_id)))

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


_PROPOSAL_BEHAVIOURS = frozenset(
    {Behaviour.EQUIVOCATE, Behaviour.FORGE_POL, Behaviour.REPROPOSE, Behaviour.INVALID_BLOCK}
)
