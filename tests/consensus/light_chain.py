"""Signed chains for light client tests: validator sets of test keys, commits signed by them,
and a hash-linked chain of light blocks with the app hashes a test chooses."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from consensus.light import LightBlock
from consensus.types import BlockID, BlockIDFlag, Commit, CommitSig, Header, PartSetHeader, Vote, VoteType
from consensus.validators import Validator, ValidatorSet
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from primitives.keys import verify as verify_signature

CHAIN = "light-chain"
SECOND = 10**9
START = 1_750_000_000 * SECOND
KEYS = [PrivateKey.from_seed(sha256(b"light %d" % i)) for i in range(12)]


def check(items: Sequence[tuple[bytes, bytes, bytes]]) -> list[bool]:
    return [verify_signature(pk, message, signature) for pk, message, signature in items]


def vset(members: Sequence[int]) -> ValidatorSet:
    return ValidatorSet(Validator(KEYS[i].address.raw, KEYS[i].public_key.raw, 10) for i in members)


def sign(header: Header, validators: ValidatorSet, signers: set[int] | None = None) -> Commit:
    """A commit of `header` by the members of `validators` (all, or those whose key index is in `signers`)."""
    block_id = BlockID(header.hash(), PartSetHeader(1, sha256(b"parts")))
    sigs = []
    for index, validator in enumerate(validators.validators):
        key = next(k for k in KEYS if k.address.raw == validator.address)
        if signers is not None and KEYS.index(key) not in signers:
            sigs.append(CommitSig(BlockIDFlag.ABSENT, validator.address, 0, b""))
            continue
        vote = Vote(
            VoteType.PRECOMMIT,
            header.height,
            0,
            block_id,
            header.time + SECOND,
            validator.address,
            index,
            b"",
        )
        sigs.append(
            CommitSig(
                BlockIDFlag.COMMIT, validator.address, header.time + SECOND, key.sign(vote.sign_bytes(CHAIN))
            )
        )
    return Commit(header.height, 0, block_id, tuple(sigs))


def header(height: int, validators: ValidatorSet, next_validators: ValidatorSet) -> Header:
    """A header of `height` signed by `validators`, its hashes made up from the height."""
    z = sha256(b"%d" % height)
    return Header(
        chain_id=CHAIN,
        height=height,
        time=START + height * SECOND,
        last_block_id=BlockID(z, PartSetHeader(1, z)),
        last_commit_hash=z,
        data_hash=z,
        validators_hash=validators.hash(),
        next_validators_hash=next_validators.hash(),
        consensus_hash=z,
        app_hash=sha256(b"app %d" % height),
        last_results_hash=z,
        evidence_hash=z,
        proposer_address=validators.validators[0].address,
    )


@dataclass
class LinkedChain:
    """Blocks 1..top signed by `validators`, each header naming the previous one's hash; block
    h's app hash is `app_hashes[h]` (default: a hash of h). A Provider."""

    validators: ValidatorSet
    top: int
    app_hashes: dict[int, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.blocks: dict[int, LightBlock] = {}
        previous = BlockID(b"", PartSetHeader(0, b""))
        for height in range(1, self.top + 1):
            h = header(height, self.validators, self.validators)
            h = replace(h, last_block_id=previous, app_hash=self.app_hashes.get(height, h.app_hash))
            commit = sign(h, self.validators)
            self.blocks[height] = LightBlock(header=h, commit=commit, validators=self.validators)
            previous = commit.block_id

    def light_block(self, height: int) -> LightBlock:
        return self.blocks[height]

    def forge(self, height: int, **changes: object) -> None:
        """Replace block `height`'s header with changed fields, signed by the same validators."""
        h = replace(self.blocks[height].header, **changes)  # type: ignore[arg-type]
        self.blocks[height] = LightBlock(
            header=h, commit=sign(h, self.validators), validators=self.validators
        )
