"""Block, header, vote, proposal, commit and block-part types, with their canonical encodings
and sign bytes.

Every type has `to_fields()` (a canonical value, see primitives.codec) and `from_fields()` that
rejects anything else, naming the field. Votes and proposals sign over the chain id through
`primitives.keys.sign_bytes` with a domain tag per kind, so a vote can never pass for a proposal
or for another chain. Times are integers of nanoseconds since the epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import IntEnum
from functools import cached_property

from primitives.codec import (
    DecodeError,
    Value,
    decode,
    encode,
    field_bytes,
    field_int,
    field_list,
    field_text,
)
from primitives.hashing import HASH_SIZE, MerkleProof, merkle_proofs, merkle_root, sha256
from primitives.keys import ADDRESS_SIZE, SIGNATURE_SIZE, sign_bytes

BLOCK_PART_SIZE = 65536
MAX_CHAIN_ID_LEN = 50
MAX_BLOCK_BYTES = 104_857_600
MAX_PARTS = MAX_BLOCK_BYTES // BLOCK_PART_SIZE + 1
MAX_VALIDATORS = 10_000
BLOCK_PROTOCOL_VERSION = 11
MS = 1_000_000

DOMAIN_VOTE = b"derivd/vote/v1"
DOMAIN_PROPOSAL = b"derivd/proposal/v1"


class VoteType(IntEnum):
    """CometBFT's SignedMsgType values."""

    PREVOTE = 1
    PRECOMMIT = 2


PROPOSAL_TYPE = 32


def _hash(value: Value, name: str, empty_ok: bool = True) -> bytes:
    raw = field_bytes(value, name, max_size=HASH_SIZE)
    if len(raw) not in ((0, HASH_SIZE) if empty_ok else (HASH_SIZE,)):
        raise DecodeError(f"{name}: a hash is {HASH_SIZE} bytes (or empty), got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class PartSetHeader:
    """How a block is split for gossip: the number of parts and the Merkle root over them."""

    total: int
    hash: bytes

    def to_fields(self) -> Value:
        return [self.total, self.hash]

    @classmethod
    def from_fields(cls, value: Value, name: str = "part_set_header") -> PartSetHeader:
        f = field_list(value, name, 2)
        return cls(field_int(f[0], f"{name}.total", 0, MAX_PARTS), _hash(f[1], f"{name}.hash"))

    def is_zero(self) -> bool:
        return self.total == 0 and not self.hash


@dataclass(frozen=True, slots=True)
class BlockID:
    """A block's hash and part-set header; the empty BlockID stands for nil."""

    hash: bytes
    parts: PartSetHeader

    def to_fields(self) -> Value:
        return [self.hash, self.parts.to_fields()]

    @classmethod
    def from_fields(cls, value: Value, name: str = "block_id") -> BlockID:
        f = field_list(value, name, 2)
        block_id = cls(_hash(f[0], f"{name}.hash"), PartSetHeader.from_fields(f[1], f"{name}.parts"))
        if not block_id.is_nil() and (len(block_id.hash) != HASH_SIZE or block_id.parts.total < 1):
            raise DecodeError(f"{name}: a block id has a hash and at least one part")
        if block_id.is_nil() and not block_id.parts.is_zero():
            raise DecodeError(f"{name}: a nil block id has no parts")
        return block_id

    def is_nil(self) -> bool:
        return not self.hash

    def short(self) -> str:
        return self.hash[:6].hex().upper() if self.hash else "nil"


NIL_BLOCK_ID = BlockID(b"", PartSetHeader(0, b""))


@dataclass(frozen=True, slots=True)
class Header:
    """A block header (CometBFT's fields); its hash is the block's hash."""

    chain_id: str
    height: int
    time: int
    last_block_id: BlockID
    last_commit_hash: bytes
    data_hash: bytes
    validators_hash: bytes
    next_validators_hash: bytes
    consensus_hash: bytes
    app_hash: bytes
    last_results_hash: bytes
    evidence_hash: bytes
    proposer_address: bytes
    version_block: int = BLOCK_PROTOCOL_VERSION
    version_app: int = 0

    def to_fields(self) -> Value:
        return [
            [self.version_block, self.version_app],
            self.chain_id.encode(),
            self.height,
            self.time,
            self.last_block_id.to_fields(),
            self.last_commit_hash,
            self.data_hash,
            self.validators_hash,
            self.next_validators_hash,
            self.consensus_hash,
            self.app_hash,
            self.last_results_hash,
            self.evidence_hash,
            self.proposer_address,
        ]

    @classmethod
    def from_fields(cls, value: Value) -> Header:
        f = field_list(value, "header", 14)
        version = field_list(f[0], "header.version", 2)
        return cls(
            version_block=field_int(version[0], "header.version.block"),
            version_app=field_int(version[1], "header.version.app"),
            chain_id=field_text(f[1], "header.chain_id", MAX_CHAIN_ID_LEN),
            height=field_int(f[2], "header.height", 1),
            time=field_int(f[3], "header.time", -(2**63), 2**63 - 1),
            last_block_id=BlockID.from_fields(f[4], "header.last_block_id"),
            last_commit_hash=_hash(f[5], "header.last_commit_hash"),
            data_hash=_hash(f[6], "header.data_hash"),
            validators_hash=_hash(f[7], "header.validators_hash"),
            next_validators_hash=_hash(f[8], "header.next_validators_hash"),
            consensus_hash=_hash(f[9], "header.consensus_hash"),
            app_hash=field_bytes(f[10], "header.app_hash", max_size=64),
            last_results_hash=_hash(f[11], "header.last_results_hash"),
            evidence_hash=_hash(f[12], "header.evidence_hash"),
            proposer_address=field_bytes(f[13], "header.proposer_address", ADDRESS_SIZE),
        )

    def hash(self) -> bytes:
        return sha256(encode(self.to_fields()))


@dataclass(frozen=True, slots=True)
class Vote:
    """A signed prevote or precommit of one validator for a block id (or nil)."""

    type: VoteType
    height: int
    round: int
    block_id: BlockID
    timestamp: int
    validator_address: bytes
    validator_index: int
    signature: bytes = b""

    def sign_payload(self) -> bytes:
        """CometBFT's canonical vote without the chain id (that goes in via sign_bytes)."""
        return encode([int(self.type), self.height, self.round, self.block_id.to_fields(), self.timestamp])

    def sign_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(DOMAIN_VOTE, chain_id, self.sign_payload())

    def to_fields(self) -> Value:
        return [
            int(self.type),
            self.height,
            self.round,
            self.block_id.to_fields(),
            self.timestamp,
            self.validator_address,
            self.validator_index,
            self.signature,
        ]

    @classmethod
    def from_fields(cls, value: Value) -> Vote:
        f = field_list(value, "vote", 8)
        kind = field_int(f[0], "vote.type", 1, 2)
        return cls(
            type=VoteType(kind),
            height=field_int(f[1], "vote.height", 1),
            round=field_int(f[2], "vote.round", 0, 2**31 - 1),
            block_id=BlockID.from_fields(f[3], "vote.block_id"),
            timestamp=field_int(f[4], "vote.timestamp", -(2**63), 2**63 - 1),
            validator_address=field_bytes(f[5], "vote.validator_address", ADDRESS_SIZE),
            validator_index=field_int(f[6], "vote.validator_index", 0, MAX_VALIDATORS - 1),
            signature=field_bytes(f[7], "vote.signature", SIGNATURE_SIZE),
        )

    def with_signature(self, signature: bytes) -> Vote:
        return replace(self, signature=signature)


@dataclass(frozen=True, slots=True)
class Proposal:
    """A proposer's signed proposal of a block for (height, round); pol_round is -1 or the round
    of the proof-of-lock the proposer re-proposes under."""

    height: int
    round: int
    pol_round: int
    block_id: BlockID
    timestamp: int
    signature: bytes = b""

    def sign_payload(self) -> bytes:
        return encode(
            [
                PROPOSAL_TYPE,
                self.height,
                self.round,
                self.pol_round,
                self.block_id.to_fields(),
                self.timestamp,
            ]
        )

    def sign_bytes(self, chain_id: str) -> bytes:
        return sign_bytes(DOMAIN_PROPOSAL, chain_id, self.sign_payload())

    def to_fields(self) -> Value:
        return [
            self.height,
            self.round,
            self.pol_round,
            self.block_id.to_fields(),
            self.timestamp,
            self.signature,
        ]

    @classmethod
    def from_fields(cls, value: Value) -> Proposal:
        f = field_list(value, "proposal", 6)
        proposal = cls(
            height=field_int(f[0], "proposal.height", 1),
            round=field_int(f[1], "proposal.round", 0, 2**31 - 1),
            pol_round=field_int(f[2], "proposal.pol_round", -1, 2**31 - 1),
            block_id=BlockID.from_fields(f[3], "proposal.block_id"),
            timestamp=field_int(f[4], "proposal.timestamp", -(2**63), 2**63 - 1),
            signature=field_bytes(f[5], "proposal.signature", SIGNATURE_SIZE),
        )
        if proposal.pol_round >= proposal.round:
            raise DecodeError("proposal.pol_round: must be below the round")
        if proposal.block_id.is_nil():
            raise DecodeError("proposal.block_id: a proposal is for a block, not nil")
        return proposal

    def with_signature(self, signature: bytes) -> Proposal:
        return replace(self, signature=signature)


class BlockIDFlag(IntEnum):
    ABSENT = 1
    COMMIT = 2
    NIL = 3


@dataclass(frozen=True, slots=True)
class CommitSig:
    """One validator's entry in a commit: absent, a precommit for the block, or for nil."""

    flag: BlockIDFlag
    validator_address: bytes
    timestamp: int
    signature: bytes

    def to_fields(self) -> Value:
        return [int(self.flag), self.validator_address, self.timestamp, self.signature]

    @classmethod
    def from_fields(cls, value: Value) -> CommitSig:
        f = field_list(value, "commit signature", 4)
        flag = BlockIDFlag(field_int(f[0], "commit signature.flag", 1, 3))
        sig = cls(
            flag,
            field_bytes(f[1], "commit signature.validator_address", max_size=ADDRESS_SIZE),
            field_int(f[2], "commit signature.timestamp", -(2**63), 2**63 - 1),
            field_bytes(f[3], "commit signature.signature", max_size=SIGNATURE_SIZE),
        )
        if flag == BlockIDFlag.ABSENT:
            if sig.validator_address or sig.signature or sig.timestamp:
                raise DecodeError("commit signature: an absent entry carries nothing")
        elif len(sig.validator_address) != ADDRESS_SIZE or len(sig.signature) != SIGNATURE_SIZE:
            raise DecodeError("commit signature: a present entry has an address and a signature")
        return sig

    @classmethod
    def absent(cls) -> CommitSig:
        return cls(BlockIDFlag.ABSENT, b"", 0, b"")


@dataclass(frozen=True, slots=True)
class Commit:
    """+2/3 precommits for a block: one entry per validator of the set, in set order."""

    height: int
    round: int
    block_id: BlockID
    signatures: tuple[CommitSig, ...]

    def to_fields(self) -> Value:
        return [self.height, self.round, self.block_id.to_fields(), [s.to_fields() for s in self.signatures]]

    @classmethod
    def from_fields(cls, value: Value) -> Commit:
        f = field_list(value, "commit", 4)
        return cls(
            height=field_int(f[0], "commit.height"),
            round=field_int(f[1], "commit.round", 0, 2**31 - 1),
            block_id=BlockID.from_fields(f[2], "commit.block_id"),
            signatures=tuple(
                CommitSig.from_fields(s)
                for s in field_list(f[3], "commit.signatures", max_len=MAX_VALIDATORS)
            ),
        )

    def hash(self) -> bytes:
        return merkle_root([encode(s.to_fields()) for s in self.signatures])

    def is_empty(self) -> bool:
        return self.height == 0

    def vote_of(self, index: int) -> Vote:
        """The precommit that entry `index` stands for (its sign bytes are what was signed)."""
        sig = self.signatures[index]
        block_id = self.block_id if sig.flag == BlockIDFlag.COMMIT else NIL_BLOCK_ID
        return Vote(
            VoteType.PRECOMMIT,
            self.height,
            self.round,
            block_id,
            sig.timestamp,
            sig.validator_address,
            index,
            sig.signature,
        )

    def encode(self) -> bytes:
        return encode(self.to_fields())

    @classmethod
    def decode(cls, raw: bytes) -> Commit:
        return cls.from_fields(decode(raw))


EMPTY_COMMIT = Commit(0, 0, NIL_BLOCK_ID, ())


@dataclass(frozen=True)
class Block:
    """Header, transactions, evidence and the commit of the previous block."""

    header: Header
    txs: tuple[bytes, ...]
    evidence: tuple[bytes, ...]
    last_commit: Commit

    def to_fields(self) -> Value:
        return [self.header.to_fields(), list(self.txs), list(self.evidence), self.last_commit.to_fields()]

    @classmethod
    def from_fields(cls, value: Value) -> Block:
        f = field_list(value, "block", 4)
        return cls(
            header=Header.from_fields(f[0]),
            txs=tuple(
                field_bytes(t, "block.txs[]", max_size=MAX_BLOCK_BYTES)
                for t in field_list(f[1], "block.txs", max_len=MAX_BLOCK_BYTES)
            ),
            evidence=tuple(
                field_bytes(e, "block.evidence[]", max_size=MAX_BLOCK_BYTES)
                for e in field_list(f[2], "block.evidence", max_len=10_000)
            ),
            last_commit=Commit.from_fields(f[3]),
        )

    def encode(self) -> bytes:
        return encode(self.to_fields())

    @classmethod
    def decode(cls, raw: bytes) -> Block:
        return cls.from_fields(decode(raw, max_size=MAX_BLOCK_BYTES))

    @cached_property
    def hash(self) -> bytes:
        return self.header.hash()

    @property
    def height(self) -> int:
        return self.header.height


def data_hash(txs: Sequence[bytes]) -> bytes:
    """Merkle root over the transactions (CometBFT's Data.Hash)."""
    return merkle_root(list(txs))


def evidence_hash(evidence: Sequence[bytes]) -> bytes:
    return merkle_root(list(evidence))


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of an encoded block, with its Merkle proof against the part-set hash."""

    index: int
    data: bytes
    proof: MerkleProof

    def to_fields(self) -> Value:
        return [self.index, self.data, [self.proof.total, self.proof.index, list(self.proof.aunts)]]

    @classmethod
    def from_fields(cls, value: Value) -> Part:
        f = field_list(value, "part", 3)
        p = field_list(f[2], "part.proof", 3)
        proof = MerkleProof(
            field_int(p[0], "part.proof.total", 1, MAX_PARTS),
            field_int(p[1], "part.proof.index", 0, MAX_PARTS),
            tuple(
                _hash(a, "part.proof.aunts[]", False)
                for a in field_list(p[2], "part.proof.aunts", max_len=64)
            ),
        )
        return cls(
            field_int(f[0], "part.index", 0, MAX_PARTS),
            field_bytes(f[1], "part.data", max_size=BLOCK_PART_SIZE),
            proof,
        )


class PartSet:
    """A block's parts: built whole from the block bytes, or filled part by part from peers."""

    def __init__(self, header: PartSetHeader) -> None:
        self.header = header
        self._parts: list[Part | None] = [None] * header.total
        self.count = 0
        self.byte_size = 0

    @classmethod
    def from_data(cls, data: bytes, part_size: int = BLOCK_PART_SIZE) -> PartSet:
        chunks = [data[i : i + part_size] for i in range(0, len(data), part_size)] or [b""]
        root, proofs = merkle_proofs(chunks)
        part_set = cls(PartSetHeader(len(chunks), root))
        for i, (chunk, proof) in enumerate(zip(chunks, proofs, strict=True)):
            part_set._parts[i] = Part(i, chunk, proof)
        part_set.count = len(chunks)
        part_set.byte_size = len(data)
        return part_set

    def add(self, part: Part) -> bool:
        """Add a part that proves into this set; False if it is a duplicate or does not fit."""
        if not 0 <= part.index < self.header.total or self._parts[part.index] is not None:
            return False
        if part.proof.index != part.index or part.proof.total != self.header.total:
            return False
        if not part.proof.verify(self.header.hash, part.data):
            return False
        self._parts[part.index] = part
        self.count += 1
        self.byte_size += len(part.data)
        return True

    def is_complete(self) -> bool:
        return self.count == self.header.total

    def has(self, index: int) -> bool:
        return 0 <= index < self.header.total and self._parts[index] is not None

    def get(self, index: int) -> Part | None:
        return self._parts[index] if 0 <= index < self.header.total else None

    def parts(self) -> list[Part]:
        return [p for p in self._parts if p is not None]

    def data(self) -> bytes:
        if not self.is_complete():
            raise ValueError("part set is incomplete")
        return b"".join(p.data for p in self._parts if p is not None)
