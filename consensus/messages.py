"""Consensus messages in their canonical byte form: what the WAL records and peers exchange.

A message is the canonical array [kind, fields]: 1 proposal, 2 block part [height, round, part],
3 vote, 4 evidence. Decoding validates every field (see consensus.types) and raises DecodeError
naming it. Evidence is not a state-machine input: the driver hands it to the evidence pool.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import BlockPartEvent, ProposalEvent, VoteEvent
from consensus.types import Part, Proposal, Vote
from primitives.codec import DecodeError, Value, decode, encode, field_int, field_list

KIND_PROPOSAL = 1
KIND_BLOCK_PART = 2
KIND_VOTE = 3
KIND_EVIDENCE = 4

MAX_MESSAGE_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class EvidenceMessage:
    evidence: DuplicateVoteEvidence
    peer: str = ""


MachineMessage = ProposalEvent | BlockPartEvent | VoteEvent
Message = MachineMessage | EvidenceMessage


def message_fields(message: Message) -> Value:
    if isinstance(message, EvidenceMessage):
        return [KIND_EVIDENCE, message.evidence.to_fields()]
    if isinstance(message, ProposalEvent):
        return [KIND_PROPOSAL, message.proposal.to_fields()]
    if isinstance(message, BlockPartEvent):
        return [KIND_BLOCK_PART, [message.height, message.round, message.part.to_fields()]]
    return [KIND_VOTE, message.vote.to_fields()]


def message_from_fields(value: Value, peer: str = "") -> Message:
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
    raise DecodeError(f"consensus message.kind: unknown kind {kind}")


def encode_message(message: Message) -> bytes:
    return encode(message_fields(message))


def decode_message(raw: bytes, peer: str = "") -> Message:
    return message_from_fields(decode(raw, max_size=MAX_MESSAGE_BYTES), peer)
