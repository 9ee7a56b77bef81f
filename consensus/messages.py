"""Consensus messages in their canonical byte form: what the WAL records and peers exchange.

A message is the canonical array [kind, fields]: 1 proposal, 2 block part [height, round, part],
3 vote, 4 evidence, and for the gossip reactor only 5 round step [height, round, step] (a peer's
position, CometBFT's NewRoundStep) and 6 decided block [block, commit] (what a peer that is a
height or a few behind needs to catch up). Decoding validates every field (see consensus.types)
and raises DecodeError naming it. Evidence is not a state-machine input: the driver hands it to
the evidence pool; a decided block goes to the driver's catch-up path.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import BlockPartEvent, ProposalEvent, VoteEvent
from consensus.types import Block, Commit, Part, Proposal, Vote
from primitives.codec import DecodeError, Value, decode, encode, field_int, field_list

KIND_PROPOSAL = 1
KIND_BLOCK_PART = 2
KIND_VOTE = 3
KIND_EVIDENCE = 4
KIND_ROUND_STEP = 5
KIND_DECIDED_BLOCK = 6

MAX_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class EvidenceMessage:
    evidence: DuplicateVoteEvidence
    peer: str = ""


@dataclass(frozen=True, slots=True)
class RoundStep:
    height: int
    round: int
    step: int


@dataclass(frozen=True, slots=True)
class DecidedBlock:
    block: Block
    commit: Commit
    peer: str = ""


MachineMessage = ProposalEvent | BlockPartEvent | VoteEvent
Message = MachineMessage | EvidenceMessage
WireMessage = Message | RoundStep | DecidedBlock


def message_fields(message: WireMessage) -> Value:
    if isinstance(message, RoundStep):
        return [KIND_ROUND_STEP, [message.height, message.round, message.step]]
    if isinstance(message, DecidedBlock):
        return [KIND_DECIDED_BLOCK, [message.block.to_fields(), message.commit.to_fields()]]
    if isinstance(message, EvidenceMessage):
        return [KIND_EVIDENCE, message.evidence.to_fields()]
    if isinstance(message, ProposalEvent):
        return [KIND_PROPOSAL, message.proposal.to_fields()]
    if isinstance(message, BlockPartEvent):
        return [KIND_BLOCK_PART, [message.height, message.round, message.part.to_fields()]]
    return [KIND_VOTE, message.vote.to_fields()]


def message_from_fields(value: Value, peer: str = "") -> WireMessage:
    f = field_list(value, "consensus message", 2)
    kind = field_int(f[0], "consensus message.kind")
    if kind == KIND_PROPOSAL:
        return ProposalEvent(Proposal.from_fields(f[1]), peer)
    if kind == KIND_BLOCK_PART:
        p = field_list(f[1], "block part message", 3)
        return BlockPartEvent(
            field_int(p[0], "block part.height", 1),
            field_int(p[1], "block part.round", 0, 2**31 - 1),
            Part.from_fields(p[2]),
            peer,
        )
    if kind == KIND_VOTE:
        return VoteEvent(Vote.from_fields(f[1]), peer)
    if kind == KIND_EVIDENCE:
        return EvidenceMessage(DuplicateVoteEvidence.from_fields(f[1]), peer)
    if kind == KIND_ROUND_STEP:
        r = field_list(f[1], "round step", 3)
        return RoundStep(
            field_int(r[0], "round step.height"),
            field_int(r[1], "round step.round", 0, 2**31 - 1),
            field_int(r[2], "round step.step", 1, 8),
        )
    if kind == KIND_DECIDED_BLOCK:
        d = field_list(f[1], "decided block", 2)
        return DecidedBlock(Block.from_fields(d[0]), Commit.from_fields(d[1]), peer)
    raise DecodeError(f"consensus message.kind: unknown kind {kind}")


def encode_message(message: WireMessage) -> bytes:
    return encode(message_fields(message))


def decode_message(raw: bytes, peer: str = "", max_size: int = MAX_MESSAGE_BYTES) -> WireMessage:
    return message_from_fields(decode(raw, max_size=max_size), peer)
