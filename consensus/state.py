"""The chain state after the last committed block (CometBFT's sm.State): what the next block is
checked against, how it is built, and the transition from one height to the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from consensus.types import (
    EMPTY_COMMIT,
    NIL_BLOCK_ID,
    Block,
    BlockID,
    Commit,
    Header,
    data_hash,
    evidence_hash,
)
from consensus.validators import ValidatorSet
from consensus.votes import CommitError, SignatureCheck, median_time, verify_commit
from primitives.codec import (
    Value,
    decode,
    encode,
    field_bytes,
    field_int,
    field_list,
    field_text,
)
from primitives.hashing import merkle_root, sha256


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """The consensus parameters in force; their canonical form is the genesis file's
    `consensus_params` in field order (genesis.ConsensusParams.to_fields)."""

    block_max_bytes: int = 22_020_096
    block_max_gas: int = -1
    evidence_max_age_num_blocks: int = 100_000
    evidence_max_age_duration: int = 172_800_000_000_000
    evidence_max_bytes: int = 1_048_576
    version_app: int = 0

    def to_fields(self) -> Value:
        return [
            self.block_max_bytes,
            self.block_max_gas,
            self.evidence_max_age_num_blocks,
            self.evidence_max_age_duration,
            self.evidence_max_bytes,
            self.version_app,
        ]

    @classmethod
    def from_fields(cls, value: Value) -> ConsensusParams:
        f = field_list(value, "consensus params", 6)
        return cls(
            field_int(f[0], "block_max_bytes", 1),
            field_int(f[1], "block_max_gas", -1),
            field_int(f[2], "evidence_max_age_num_blocks", 1),
            field_int(f[3], "evidence_max_age_duration", 1),
            field_int(f[4], "evidence_max_bytes", 0),
            field_int(f[5], "version_app", 0),
        )

    def hash(self) -> bytes:
        return sha256(encode(self.to_fields()))


@dataclass(frozen=True, slots=True)
class ChainState:
    """Everything consensus needs to know about the chain between two heights."""

    chain_id: str
    initial_height: int
    last_block_height: int
    last_block_id: BlockID
    last_block_time: int
    validators: ValidatorSet
    next_validators: ValidatorSet
    last_validators: ValidatorSet
    last_height_validators_changed: int
    params: ConsensusParams
    last_results_hash: bytes
    app_hash: bytes

    @property
    def height(self) -> int:
        """The height of the next block."""
        return self.last_block_height + 1 if self.last_block_height else self.initial_height

    def is_initial(self) -> bool:
        return self.last_block_height == 0

    def to_fields(self) -> Value:
        return [
            self.chain_id.encode(),
            self.initial_height,
            self.last_block_height,
            self.last_block_id.to_fields(),
            self.last_block_time,
            self.validators.to_fields(),
            self.next_validators.to_fields(),
            self.last_validators.to_fields(),
            self.last_height_validators_changed,
            self.params.to_fields(),
            self.last_results_hash,
            self.app_hash,
        ]

    @classmethod
    def from_fields(cls, value: Value) -> ChainState:
        f = field_list(value, "chain state", 12)
        return cls(
            chain_id=field_text(f[0], "chain_id", 50),
            initial_height=field_int(f[1], "initial_height", 1),
            last_block_height=field_int(f[2], "last_block_height"),
            last_block_id=BlockID.from_fields(f[3], "last_block_id"),
            last_block_time=field_int(f[4], "last_block_time", -(2**63), 2**63 - 1),
            validators=ValidatorSet.from_fields(f[5]),
            next_validators=ValidatorSet.from_fields(f[6]),
            last_validators=ValidatorSet.from_fields(f[7]),
            last_height_validators_changed=field_int(f[8], "last_height_validators_changed"),
            params=ConsensusParams.from_fields(f[9]),
            last_results_hash=field_bytes(f[10], "last_results_hash", max_size=32),
            app_hash=field_bytes(f[11], "app_hash", max_size=64),
        )

    def encode(self) -> bytes:
        return encode(self.to_fields())

    @classmethod
    def decode(cls, raw: bytes) -> ChainState:
        return cls.from_fields(decode(raw))

    # -- building and checking blocks --------------------------------------------------------------

    def block_time(self, last_commit: Commit) -> int:
        """The time the next block must carry: genesis time first, then BFT time."""
        if self.is_initial():
            return self.last_block_time
        return median_time(last_commit, self.last_validators)

    def make_block(
        self, txs: Sequence[bytes], evidence: Sequence[bytes], last_commit: Commit, proposer: bytes
    ) -> Block:
        """The next block with the given contents, its header filled from this state."""
        commit = EMPTY_COMMIT if self.is_initial() else last_commit
        header = Header(
            chain_id=self.chain_id,
            height=self.height,
            time=self.block_time(commit),
            last_block_id=self.last_block_id,
            last_commit_hash=commit.hash(),
            data_hash=data_hash(txs),
            validators_hash=self.validators.hash(),
            next_validators_hash=self.next_validators.hash(),
            consensus_hash=self.params.hash(),
            app_hash=self.app_hash,
            last_results_hash=self.last_results_hash,
            evidence_hash=evidence_hash(evidence),
            proposer_address=proposer,
            version_app=self.params.version_app,
        )
        return Block(header, tuple(txs), tuple(evidence), commit)

    def next_state(
        self,
        block_id: BlockID,
        header: Header,
        results_hash: bytes,
        app_hash: bytes,
        validator_updates: Sequence[tuple[bytes, int]],
    ) -> ChainState:
        """The state after committing the block `block_id` with `header` (CometBFT's updateState)."""
        next_set = self.next_validators
        changed = self.last_height_validators_changed
        if validator_updates:
            next_set = next_set.with_updates(validator_updates)
            changed = header.height + 2
        return replace(
            self,
            last_block_height=header.height,
            last_block_id=block_id,
            last_block_time=header.time,
            validators=self.next_validators,
            next_validators=next_set.increment_proposer_priority(1),
            last_validators=self.validators,
            last_height_validators_changed=changed,
            last_results_hash=results_hash,
            app_hash=app_hash,
        )


def genesis_state(
    chain_id: str,
    initial_height: int,
    genesis_time: int,
    validators: Sequence[tuple[bytes, int]],
    params: ConsensusParams,
    app_hash: bytes,
) -> ChainState:
    """The state before the first block (CometBFT's MakeGenesisState)."""
    validator_set = ValidatorSet.genesis(validators)
    return ChainState(
        chain_id=chain_id,
        initial_height=initial_height,
        last_block_height=0,
        last_block_id=NIL_BLOCK_ID,
        last_block_time=genesis_time,
        validators=validator_set,
        next_validators=validator_set.increment_proposer_priority(1),
        last_validators=ValidatorSet([]),
        last_height_validators_changed=initial_height,
        params=params,
        last_results_hash=merkle_root([]),
        app_hash=app_hash,
    )


class BlockError(ValueError):
    """A block that does not follow from the chain state; the message says which field."""


def validate_block(state: ChainState, block: Block, check: SignatureCheck) -> None:
    """Check `block` against `state` (header fields, last commit with its signatures, sizes);
    raise BlockError naming the first problem. The application's own checks are separate."""
    h = block.header
    expected: list[tuple[str, object, object]] = [
        ("chain_id", h.chain_id, state.chain_id),
        ("height", h.height, state.height),
        ("last_block_id", h.last_block_id, state.last_block_id),
        ("validators_hash", h.validators_hash, state.validators.hash()),
        ("next_validators_hash", h.next_validators_hash, state.next_validators.hash()),
        ("consensus_hash", h.consensus_hash, state.params.hash()),
        ("app_hash", h.app_hash, state.app_hash),
        ("last_results_hash", h.last_results_hash, state.last_results_hash),
        ("data_hash", h.data_hash, data_hash(block.txs)),
        ("evidence_hash", h.evidence_hash, evidence_hash(block.evidence)),
        ("last_commit_hash", h.last_commit_hash, block.last_commit.hash()),
        ("version.app", h.version_app, state.params.version_app),
    ]
    for name, got, want in expected:
        if got != want:
            raise BlockError(f"block {h.height}: wrong {name}")
    if state.validators.get(h.proposer_address) is None:
        raise BlockError(f"block {h.height}: proposer {h.proposer_address.hex().upper()} is not a validator")
    if state.is_initial():
        if not block.last_commit.is_empty():
            raise BlockError(f"block {h.height}: the first block carries no last commit")
    else:
        try:
            verify_commit(
                state.chain_id,
                state.last_validators,
                state.last_block_id,
                state.last_block_height,
                block.last_commit,
                check,
            )
        except CommitError as exc:
            raise BlockError(f"block {h.height}: last commit: {exc}") from exc
    if h.time != state.block_time(block.last_commit):
        raise BlockError(f"block {h.height}: time is not the BFT time of the last commit")
    size = len(block.encode())
    if size > state.params.block_max_bytes:
        raise BlockError(f"block {h.height}: {size} bytes exceed the limit of {state.params.block_max_bytes}")
