"""Duplicate-vote evidence and the evidence pool.

A validator that signs two different votes for one (height, round, type) has equivocated; the two
votes together are `DuplicateVoteEvidence` (CometBFT's fields: both votes, the total and the
validator's voting power at that height, and a timestamp). The pool verifies evidence against
the validator set of its height, keeps it pending until a proposer includes it in a block,
refuses what is expired, already pending or already committed, and checks the evidence of every
proposed block the same way. Committed evidence goes to the application as `Misbehavior`.

Evidence expires when it is older than both `evidence_max_age_num_blocks` and
`evidence_max_age_duration` (CometBFT's rule).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Protocol

from consensus.app import Misbehavior
from consensus.state import ChainState
from consensus.types import Vote
from consensus.validators import ValidatorSet
from consensus.votes import SignatureCheck
from primitives.codec import DecodeError, Value, decode, encode, field_int, field_list
from primitives.hashing import sha256

log = logging.getLogger("derivd.evidence")

KIND_DUPLICATE_VOTE = "duplicate_vote"
MAX_EVIDENCE_BYTES = 4096


class EvidenceError(ValueError):
    """Evidence that does not prove misbehaviour, or may not go in this block."""


@dataclass(frozen=True)
class DuplicateVoteEvidence:
    vote_a: Vote
    vote_b: Vote
    total_voting_power: int
    validator_power: int
    timestamp: int

    @classmethod
    def from_conflict(
        cls, first: Vote, second: Vote, validators: ValidatorSet, timestamp: int
    ) -> DuplicateVoteEvidence:
        """Evidence of two conflicting votes, in canonical order (by encoded block id)."""
        a, b = sorted((first, second), key=lambda v: encode(v.block_id.to_fields()))
        validator = validators.get(first.validator_address)
        power = validator.power if validator is not None else 0
        return cls(a, b, validators.total_power, power, timestamp)

    @property
    def height(self) -> int:
        return self.vote_a.height

    @property
    def validator_address(self) -> bytes:
        return self.vote_a.validator_address

    def to_fields(self) -> Value:
        return [
            self.vote_a.to_fields(),
            self.vote_b.to_fields(),
            self.total_voting_power,
            self.validator_power,
            self.timestamp,
        ]

    @classmethod
    def from_fields(cls, value: Value) -> DuplicateVoteEvidence:
        f = field_list(value, "evidence", 5)
        return cls(
            Vote.from_fields(f[0]),
            Vote.from_fields(f[1]),
            field_int(f[2], "evidence.total_voting_power"),
            field_int(f[3], "evidence.validator_power"),
            field_int(f[4], "evidence.timestamp", -(2**63), 2**63 - 1),
        )

    @cached_property
    def encoded(self) -> bytes:
        return encode(self.to_fields())

    def encode(self) -> bytes:
        return self.encoded

    @classmethod
    def decode(cls, raw: bytes) -> DuplicateVoteEvidence:
        return cls.from_fields(decode(raw, max_size=MAX_EVIDENCE_BYTES))

    @cached_property
    def key(self) -> bytes:
        """The evidence's identity: SHA-256 of the two votes (not of the timestamp, so that one
        double sign is one piece of evidence however it is stamped)."""
        return sha256(encode([self.vote_a.to_fields(), self.vote_b.to_fields()]))

    def hash(self) -> bytes:
        """The identity (`key`)."""
        return self.key

    def misbehavior(self) -> Misbehavior:
        return Misbehavior(
            KIND_DUPLICATE_VOTE,
            self.validator_address,
            self.validator_power,
            self.height,
            self.timestamp,
            self.total_voting_power,
        )


def verify_evidence(
    chain_id: str, evidence: DuplicateVoteEvidence, validators: ValidatorSet, check: SignatureCheck
) -> None:
    """Raise EvidenceError unless `evidence` proves that a validator of `validators` (the set of
    the evidence's height) signed both votes."""
    a, b = evidence.vote_a, evidence.vote_b
    if (a.height, a.round, a.type) != (b.height, b.round, b.type):
        raise EvidenceError("the votes are for different heights, rounds or types")
    if a.validator_address != b.validator_address or a.validator_index != b.validator_index:
        raise EvidenceError("the votes are from different validators")
    if a.block_id == b.block_id:
        raise EvidenceError("the votes are for the same block")
    if encode(a.block_id.to_fields()) >= encode(b.block_id.to_fields()):
        raise EvidenceError("the votes are not in canonical order")
    index = validators.index_of(a.validator_address)
    if index is None or index != a.validator_index:
        raise EvidenceError(
            f"{a.validator_address.hex().upper()} was not validator {a.validator_index} at {a.height}"
        )
    validator = validators.validators[index]
    if evidence.validator_power != validator.power or evidence.total_voting_power != validators.total_power:
        raise EvidenceError("the evidence's voting powers do not match the validator set")
    items = [(validator.pub_key, vote.sign_bytes(chain_id), vote.signature) for vote in (a, b)]
    if not all(check(items)):
        raise EvidenceError("a vote's signature is invalid")


def decode_evidence_list(raw_items: Iterable[bytes]) -> list[DuplicateVoteEvidence]:
    try:
        return [DuplicateVoteEvidence.decode(raw) for raw in raw_items]
    except DecodeError as exc:
        raise EvidenceError(f"undecodable evidence: {exc}") from exc


ValidatorsAt = Callable[[int], ValidatorSet | None]
IsCommitted = Callable[[bytes], bool]
BlockTimeAt = Callable[[int], int | None]
"""header time of the committed block at a height, if known"""


class PendingStore(Protocol):
    """Where pending evidence survives a restart."""

    def save_pending(self, key: bytes, raw: bytes) -> None: ...

    def delete_pending(self, keys: Sequence[bytes]) -> None: ...

    def load_pending(self) -> list[bytes]: ...


class EvidencePool:
    """Verified evidence waiting for a block, and the checks of evidence in proposed blocks.

    An evidence's timestamp is the header time of the block at its height (CometBFT's rule), so
    every node computes the same one: evidence of the height still in progress is held and
    stamped when that block commits, and only then proposed. Identity (`key`) leaves the
    timestamp out. Expiry counts blocks from the last committed height.
    """

    def __init__(
        self,
        chain_id: str,
        check: SignatureCheck,
        validators_at: ValidatorsAt,
        is_committed: IsCommitted,
        store: PendingStore | None = None,
        block_time_at: BlockTimeAt | None = None,
    ) -> None:
        self.chain_id = chain_id
        self.check = check
        self.validators_at = validators_at
        self.is_committed = is_committed
        self.store = store
        self.block_time_at = block_time_at or (lambda height: None)
        self._pending: dict[bytes, DuplicateVoteEvidence] = {}
        self._committed: set[bytes] = set()
        if store is not None:
            stale: list[bytes] = []
            for evidence in decode_evidence_list(store.load_pending()):
                if self._committed_already(evidence.key):
                    stale.append(evidence.key)
                else:
                    self._pending[evidence.key] = evidence
            if stale:
                store.delete_pending(stale)

    def __len__(self) -> int:
        return len(self._pending)

    def pending(self) -> list[DuplicateVoteEvidence]:
        return list(self._pending.values())

    def _committed_already(self, key: bytes) -> bool:
        return key in self._committed or self.is_committed(key)

    def _block_time(self, state: ChainState, height: int) -> int | None:
        if height == state.last_block_height:
            return state.last_block_time
        return self.block_time_at(height)

    def _verify(
        self, state: ChainState, evidence: DuplicateVoteEvidence, block_time: int, stamped: bool
    ) -> None:
        """Full verification; `stamped` requires the canonical timestamp of a committed height
        (otherwise the evidence may be of the height in progress and is not yet stamped)."""
        max_height = state.last_block_height if stamped else state.height
        if evidence.height < state.initial_height:
            raise EvidenceError(f"evidence for height {evidence.height} is below the chain's first height")
        if evidence.height > max_height:
            raise EvidenceError(f"evidence for height {evidence.height} is from the future")
        if evidence.height <= state.last_block_height:
            expected = self._block_time(state, evidence.height)
            if expected is None:
                raise EvidenceError(f"the time of block {evidence.height} is unknown")
            if evidence.timestamp != expected:
                raise EvidenceError(f"evidence timestamp is not the time of block {evidence.height}")
        params = state.params
        age_blocks = state.last_block_height - evidence.height
        age_time = block_time - evidence.timestamp
        if age_blocks > params.evidence_max_age_num_blocks and age_time > params.evidence_max_age_duration:
            raise EvidenceError(f"evidence from height {evidence.height} has expired")
        if evidence.height == state.height:
            validators: ValidatorSet | None = state.validators
        elif evidence.height == state.last_block_height:
            validators = state.last_validators
        else:
            validators = self.validators_at(evidence.height)
        if validators is None:
            raise EvidenceError(f"the validator set of height {evidence.height} is unknown")
        verify_evidence(self.chain_id, evidence, validators, self.check)

    def stamp(self, state: ChainState, evidence: DuplicateVoteEvidence) -> DuplicateVoteEvidence:
        """`evidence` with the canonical timestamp if its block is committed (else as it is)."""
        time = (
            self._block_time(state, evidence.height) if evidence.height <= state.last_block_height else None
        )
        return evidence if time is None or time == evidence.timestamp else replace(evidence, timestamp=time)

    def add(self, state: ChainState, evidence: DuplicateVoteEvidence) -> bool:
        """Verify and keep `evidence`; False if it was already known. EvidenceError if invalid."""
        key = evidence.key
        if key in self._pending or self._committed_already(key):
            return False
        evidence = self.stamp(state, evidence)
        self._verify(state, evidence, state.last_block_time, stamped=False)
        self._keep(key, evidence)
        return True

    def _keep(self, key: bytes, evidence: DuplicateVoteEvidence) -> None:
        self._pending[key] = evidence
        if self.store is not None:
            self.store.save_pending(key, evidence.encode())

    def for_proposal(self, state: ChainState, max_bytes: int) -> list[bytes]:
        """Pending evidence of committed heights, oldest first, within `max_bytes`."""
        out: list[bytes] = []
        total = 0
        for key, evidence in list(self._pending.items()):
            if self._committed_already(key):
                self._drop([key])
                continue
            if evidence.height >= state.height:
                continue  # the height in progress: stamped and proposed once it is committed
            try:
                self._verify(state, evidence, state.last_block_time, stamped=True)
            except EvidenceError as exc:
                log.warning("dropping pending evidence that no longer verifies: %s", exc)
                self._drop([key])
                continue
            raw = evidence.encode()
            if total + len(raw) > max_bytes:
                break
            out.append(raw)
            total += len(raw)
        return out

    def check_block(
        self, state: ChainState, raw_items: Sequence[bytes], block_time: int
    ) -> list[DuplicateVoteEvidence]:
        """The decoded evidence of a proposed block; EvidenceError if any item may not be in it."""
        items = decode_evidence_list(raw_items)
        seen: set[bytes] = set()
        for evidence in items:
            key = evidence.key
            if key in seen:
                raise EvidenceError("the same evidence appears twice in the block")
            seen.add(key)
            if self._committed_already(key):
                raise EvidenceError("the evidence was committed before")
            self._verify(state, evidence, block_time, stamped=True)
        return items

    def mark_committed(self, state: ChainState, raw_items: Sequence[bytes]) -> None:
        """A block with `raw_items` is committed; `state` is the state after it. Its evidence
        leaves the pool, expired evidence goes, and evidence of the block's height is stamped."""
        gone: list[bytes] = []
        for evidence in decode_evidence_list(raw_items):
            if self._pending.pop(evidence.key, None) is not None:
                gone.append(evidence.key)
            self._committed.add(evidence.key)
        params = state.params
        for key, evidence in list(self._pending.items()):
            old_blocks = state.last_block_height - evidence.height > params.evidence_max_age_num_blocks
            old_time = state.last_block_time - evidence.timestamp > params.evidence_max_age_duration
            if old_blocks and old_time:
                del self._pending[key]
                gone.append(key)
            elif evidence.height == state.last_block_height:
                stamped = self.stamp(state, evidence)
                if stamped is not evidence:
                    self._keep(key, stamped)
        self._drop(gone)

    def _drop(self, keys: list[bytes]) -> None:
        for key in keys:
            self._pending.pop(key, None)
        if keys and self.store is not None:
            self.store.delete_pending(keys)
