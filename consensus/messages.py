"""Consensus messages in their canonical byte form: what the WAL records and peers exchange.

A message is the canonical array [kind, fields]: 1 proposal, 2 block part [height, round, part],
3 vote, 4 evidence, and for the gossip reactor only 5 round step [height, round, step] (a peer's
position, CometBFT's NewRoundStep), 6 decided block [block, commit] (what a peer that is a
height or a few behind needs to catch up), and compact block propagation's three: 7 compact
block [round, block id, header, tx hashes, evidence, last commit] (a proposal block with its
transactions named by hash), 8 block txs request [height, round, block hash, indexes] and 9 block
txs [height, round, block hash, [[index, tx], ...]] (the transactions a peer lacked). Decoding
validates every field (see consensus.types) and raises DecodeError naming it. Evidence is not a
state-machine input: the driver hands it to the evidence pool; a decided block goes to the
driver's catch-up path.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import BlockPartEvent, ProposalEvent, VoteEvent
from consensus.types import MAX_BLOCK_BYTES, Block, BlockID, Commit, Header, Part, Proposal, Vote
from primitives.codec import DecodeError, Value, decode, encode, field_bytes, field_int, field_list

KIND_PROPOSAL = 1
KIND_BLOCK_PART = 2
KIND_VOTE = 3
KIND_EVIDENCE = 4
KIND_ROUND_STEP = 5
KIND_DECIDED_BLOCK = 6
KIND_COMPACT_BLOCK = 7
KIND_BLOCK_TXS_REQUEST = 8
KIND_BLOCK_TXS = 9

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


@dataclass(frozen=True, slots=True, kw_only=True)
class CompactBlock:
    """A proposal block with its transactions replaced by their hashes (sha256, the mempool's
    key): a peer rebuilds the block from its mempool and fetches only the transactions it lacks."""

    round: int
    block_id: BlockID
    header: Header
    tx_hashes: tuple[bytes, ...]
    evidence: tuple[bytes, ...]
    last_commit: Commit

    @property
    def height(self) -> int:
        return self.header.height

    def rebuild(self, txs: tuple[bytes, ...]) -> Block:
        return Block(self.header, txs, self.evidence, self.last_commit)


@dataclass(frozen=True, slots=True)
class BlockTxsRequest:
    """Asks for the transactions at `indexes` of the block `block_hash` proposed at height/round."""

    height: int
    round: int
    block_hash: bytes
    indexes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class BlockTxs:
    """The answer to a BlockTxsRequest: (index, transaction) pairs."""

    height: int
    round: int
    block_hash: bytes
    txs: tuple[tuple[int, bytes], ...]


MachineMessage = ProposalEvent | BlockPartEvent | VoteEvent
Message = MachineMessage | EvidenceMessage
CompactMessage = CompactBlock | BlockTxsRequest | BlockTxs
WireMessage = Message | RoundStep | DecidedBlock | CompactMessage
_MAX_TXS = MAX_BLOCK_BYTES // 32  # a block's transaction count is bounded by its size


def message_fields(message: WireMessage) -> Value:
    if isinstance(message, RoundStep):
        return [KIND_ROUND_STEP, [message.height, message.round, message.step]]
    if isinstance(message, DecidedBlock):
        return [KIND_DECIDED_BLOCK, [message.block.to_fields(), message.commit.to_fields()]]
    if isinstance(message, EvidenceMessage):
        return [KIND_EVIDENCE, message.evidence.to_fields()]
    if isinstance(message, CompactBlock):
        return [
            KIND_COMPACT_BLOCK,
            [
                message.round,
                message.block_id.to_fields(),
                message.header.to_fields(),
                list(message.tx_hashes),
                list(message.evidence),
                message.last_commit.to_fields(),
            ],
        ]
    if isinstance(message, BlockTxsRequest):
        return [
            KIND_BLOCK_TXS_REQUEST,
            [message.height, message.round, message.block_hash, list(message.indexes)],
        ]
    if isinstance(message, BlockTxs):
        pairs: list[Value] = [[index, tx] for index, tx in message.txs]
        return [KIND_BLOCK_TXS, [message.height, message.round, message.block_hash, pairs]]
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
    if kind == KIND_COMPACT_BLOCK:
        return _compact_block(f[1])
    if kind == KIND_BLOCK_TXS_REQUEST:
        q = field_list(f[1], "block txs request", 4)
        return BlockTxsRequest(
            field_int(q[0], "block txs request.height", 1),
            field_int(q[1], "block txs request.round", 0, 2**31 - 1),
            field_bytes(q[2], "block txs request.block_hash", 32),
            tuple(
                field_int(i, "block txs request.indexes[]", 0, _MAX_TXS)
                for i in field_list(q[3], "block txs request.indexes", max_len=_MAX_TXS)
            ),
        )
    if kind == KIND_BLOCK_TXS:
        t = field_list(f[1], "block txs", 4)
        txs: list[tuple[int, bytes]] = []
        for pair in field_list(t[3], "block txs.txs", max_len=_MAX_TXS):
            p = field_list(pair, "block txs.txs[]", 2)
            txs.append(
                (
                    field_int(p[0], "block txs.txs[].index", 0, _MAX_TXS),
                    field_bytes(p[1], "block txs.txs[].tx", max_size=MAX_BLOCK_BYTES),
                )
            )
        return BlockTxs(
            field_int(t[0], "block txs.height", 1),
            field_int(t[1], "block txs.round", 0, 2**31 - 1),
            field_bytes(t[2], "block txs.block_hash", 32),
            tuple(txs),
        )
    raise DecodeError(f"consensus message.kind: unknown kind {kind}")


def _compact_block(value: Value) -> CompactBlock:
    c = field_list(value, "compact block", 6)
    return CompactBlock(
        round=field_int(c[0], "compact block.round", 0, 2**31 - 1),
        block_id=BlockID.from_fields(c[1], "compact block.block_id"),
        header=Header.from_fields(c[2]),
        tx_hashes=tuple(
            field_bytes(h, "compact block.tx_hashes[]", 32)
            for h in field_list(c[3], "compact block.tx_hashes", max_len=_MAX_TXS)
        ),
        evidence=tuple(
            field_bytes(e, "compact block.evidence[]", max_size=MAX_BLOCK_BYTES)
            for e in field_list(c[4], "compact block.evidence", max_len=10_000)
        ),
        last_commit=Commit.from_fields(c[5]),
    )


def encode_message(message: WireMessage) -> bytes:
    return encode(message_fields(message))


def decode_message(raw: bytes, peer: str = "", max_size: int = MAX_MESSAGE_BYTES) -> WireMessage:
    return message_from_fields(decode(raw, max_size=max_size), peer)
