"""Vote sets: the votes of one (height, round, type), with +2/3 detection and conflicting-vote
(equivocation) detection; the per-height collection over rounds; and commit verification.

"+2/3" is strictly more than two thirds of the total power. As in the paper's counting, the tally
of a block id is the power of the validators that signed a vote for it: a validator that signs
votes for two block ids (an equivocation, reported for evidence) counts once in each tally, but
once only in the power that has voted at all. Without that, a polka that needs a byzantine vote
would exist for the nodes that saw one version and never for the others, and a validator locked
by it could keep the rest from progressing. Two +2/3 tallies still cannot form for different
block ids unless more than a third of the power equivocates. A validator's votes for at most
`MAX_BLOCKS_PER_VALIDATOR` distinct block ids are kept, bounding what an equivocator can store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum

from consensus.types import (
    MS,
    BlockID,
    BlockIDFlag,
    Commit,
    CommitSig,
    Vote,
    VoteType,
)
from consensus.validators import ValidatorSet

SignatureCheck = Callable[[Sequence[tuple[bytes, bytes, bytes]]], list[bool]]
"""A batch verifier: (public key, message, signature) items in, validity out."""


MAX_BLOCKS_PER_VALIDATOR = 4


class AddStatus(Enum):
    ADDED = "added"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"


class VoteError(ValueError):
    """A vote that is invalid for this set (wrong height/round/type, unknown validator, bad
    signature, mismatched index)."""


@dataclass(frozen=True, slots=True)
class AddResult:
    status: AddStatus
    conflicting: Vote | None = None
    counted: bool = True
    """Whether the vote entered its block id's tally (a conflicting vote may not, see
    MAX_BLOCKS_PER_VALIDATOR)."""


class VoteSet:
    """Votes of one type for one (height, round)."""

    def __init__(
        self,
        chain_id: str,
        height: int,
        round_: int,
        vote_type: VoteType,
        validators: ValidatorSet,
        check: SignatureCheck,
    ):
        self.chain_id = chain_id
        self._check = check
        self.height = height
        self.round = round_
        self.type = vote_type
        self.validators = validators
        self._votes: list[Vote | None] = [None] * len(validators)
        self.sum = 0
        self._by_block: dict[BlockID, dict[int, Vote]] = {}
        self._power_by_block: dict[BlockID, int] = {}
        self._blocks_of: dict[int, int] = {}
        self.maj23: BlockID | None = None

    def add(self, vote: Vote, verified: bool = False) -> AddResult:
        """Add `vote`; raise VoteError if it is invalid here. `verified` skips the signature
        check for a vote whose signature the caller already checked."""
        if vote.height != self.height or vote.round != self.round or vote.type != self.type:
            raise VoteError(
                f"vote {vote.height}/{vote.round}/{vote.type.name} does not belong to "
                f"{self.height}/{self.round}/{self.type.name}"
            )
        index = vote.validator_index
        if not 0 <= index < len(self.validators):
            raise VoteError(f"validator index {index} out of range")
        validator = self.validators.validators[index]
        if validator.address != vote.validator_address:
            raise VoteError("validator address does not match the index")
        existing = self._votes[index]
        if index in self._by_block.get(vote.block_id, {}):
            return AddResult(AddStatus.DUPLICATE)
        if (
            not verified
            and not self._check([(validator.pub_key, vote.sign_bytes(self.chain_id), vote.signature)])[0]
        ):
            raise VoteError(f"bad signature from validator {validator.address.hex().upper()}")
        if existing is None:
            self._votes[index] = vote
            self.sum += validator.power
        counted = self._blocks_of.get(index, 0) < MAX_BLOCKS_PER_VALIDATOR
        if counted:
            self._blocks_of[index] = self._blocks_of.get(index, 0) + 1
            self._by_block.setdefault(vote.block_id, {})[index] = vote
            power = self._power_by_block.get(vote.block_id, 0) + validator.power
            self._power_by_block[vote.block_id] = power
            if self.maj23 is None and 3 * power > 2 * self.validators.total_power:
                self.maj23 = vote.block_id
        if existing is not None:
            return AddResult(AddStatus.CONFLICT, existing, counted)
        return AddResult(AddStatus.ADDED)

    def two_thirds_majority(self) -> BlockID | None:
        """The block id (possibly nil) with +2/3 of the power, if any."""
        return self.maj23

    def has_two_thirds_any(self) -> bool:
        return 3 * self.sum > 2 * self.validators.total_power

    def has_all(self) -> bool:
        return self.sum == self.validators.total_power

    def get(self, index: int) -> Vote | None:
        """The first vote of validator `index`."""
        return self._votes[index] if 0 <= index < len(self._votes) else None

    def votes_for(self, block_id: BlockID) -> list[Vote]:
        """The votes for `block_id`, in validator order."""
        found = self._by_block.get(block_id, {})
        return [found[i] for i in sorted(found)]

    def all_votes(self) -> list[Vote]:
        """Every vote kept, conflicting ones included, in validator then arrival order."""
        out: list[Vote] = []
        for index in range(len(self._votes)):
            out.extend(votes[index] for votes in self._by_block.values() if index in votes)
        return out

    def votes(self) -> list[Vote]:
        return [v for v in self._votes if v is not None]

    def power_for(self, block_id: BlockID) -> int:
        return self._power_by_block.get(block_id, 0)

    def make_commit(self) -> Commit:
        """The commit for the +2/3 block of a precommit set."""
        if self.type != VoteType.PRECOMMIT or self.maj23 is None or self.maj23.is_nil():
            raise ValueError("a commit needs +2/3 precommits for a block")
        sigs = []
        for_block = self._by_block.get(self.maj23, {})
        for index, first in enumerate(self._votes):
            vote = for_block.get(index, first)
            if vote is None:
                sigs.append(CommitSig.absent())
            elif vote.block_id == self.maj23:
                sigs.append(
                    CommitSig(BlockIDFlag.COMMIT, vote.validator_address, vote.timestamp, vote.signature)
                )
            elif vote.block_id.is_nil():
                sigs.append(
                    CommitSig(BlockIDFlag.NIL, vote.validator_address, vote.timestamp, vote.signature)
                )
            else:
                sigs.append(CommitSig.absent())
        return Commit(self.height, self.round, self.maj23, tuple(sigs))


class HeightVoteSet:
    """Prevotes and precommits of every round of one height, within a window of rounds."""

    def __init__(
        self,
        chain_id: str,
        height: int,
        validators: ValidatorSet,
        check: SignatureCheck,
        round_window: int = 50,
    ):
        self.chain_id = chain_id
        self._check = check
        self.height = height
        self.validators = validators
        self.round_window = round_window
        self._sets: dict[tuple[int, VoteType], VoteSet] = {}
        self._round_power: dict[int, int] = {}
        self.current_round = 0

    def set_round(self, round_: int) -> None:
        self.current_round = max(self.current_round, round_)

    def accepts_round(self, round_: int) -> bool:
        return 0 <= round_ <= self.current_round + self.round_window

    def get(self, round_: int, vote_type: VoteType) -> VoteSet:
        key = (round_, vote_type)
        found = self._sets.get(key)
        if found is None:
            found = VoteSet(self.chain_id, self.height, round_, vote_type, self.validators, self._check)
            self._sets[key] = found
        return found

    def peek(self, round_: int, vote_type: VoteType) -> VoteSet | None:
        """The votes of a round if any set exists for it (never creates one)."""
        return self._sets.get((round_, vote_type))

    def prevotes(self, round_: int) -> VoteSet:
        return self.get(round_, VoteType.PREVOTE)

    def precommits(self, round_: int) -> VoteSet:
        return self.get(round_, VoteType.PRECOMMIT)

    def add(self, vote: Vote, verified: bool = False) -> AddResult:
        if vote.height != self.height:
            raise VoteError(f"vote for height {vote.height}, not {self.height}")
        if not self.accepts_round(vote.round):
            raise VoteError(f"vote for round {vote.round} is beyond the window of round {self.current_round}")
        result = self.get(vote.round, vote.type).add(vote, verified)
        if result.status == AddStatus.ADDED:
            other = VoteType.PRECOMMIT if vote.type == VoteType.PREVOTE else VoteType.PREVOTE
            other_set = self._sets.get((vote.round, other))
            if other_set is None or other_set.get(vote.validator_index) is None:
                power = self.validators.validators[vote.validator_index].power
                self._round_power[vote.round] = self._round_power.get(vote.round, 0) + power
        return result

    def round_power(self, round_: int) -> int:
        """The power of the validators with a vote of any type in `round_`."""
        return self._round_power.get(round_, 0)

    def pol_info(self) -> tuple[int, BlockID] | None:
        """The highest round with +2/3 prevotes for a block, and that block."""
        best: tuple[int, BlockID] | None = None
        for (round_, vote_type), vote_set in self._sets.items():
            if vote_type != VoteType.PREVOTE:
                continue
            maj = vote_set.two_thirds_majority()
            if maj is not None and not maj.is_nil() and (best is None or round_ > best[0]):
                best = (round_, maj)
        return best

    def rounds(self) -> list[int]:
        return sorted({r for r, _ in self._sets})


class CommitError(ValueError):
    """A commit that does not prove its block."""


def verify_commit(
    chain_id: str,
    validators: ValidatorSet,
    block_id: BlockID,
    height: int,
    commit: Commit,
    check: SignatureCheck,
) -> None:
    """Check that `commit` carries +2/3 of `validators`' power for `block_id` at `height`, every
    present signature valid (one batch through `check`); raise CommitError otherwise."""
    if commit.height != height:
        raise CommitError(f"commit is for height {commit.height}, expected {height}")
    if commit.block_id != block_id:
        raise CommitError(f"commit is for block {commit.block_id.short()}, expected {block_id.short()}")
    if len(commit.signatures) != len(validators):
        raise CommitError(f"commit has {len(commit.signatures)} entries for {len(validators)} validators")
    items: list[tuple[bytes, bytes, bytes]] = []
    tallied = 0
    for index, sig in enumerate(commit.signatures):
        if sig.flag == BlockIDFlag.ABSENT:
            continue
        validator = validators.validators[index]
        if sig.validator_address != validator.address:
            raise CommitError(f"commit entry {index} is not from validator {validator.address.hex().upper()}")
        vote = commit.vote_of(index)
        items.append((validator.pub_key, vote.sign_bytes(chain_id), sig.signature))
        if sig.flag == BlockIDFlag.COMMIT:
            tallied += validator.power
    if 3 * tallied <= 2 * validators.total_power:
        raise CommitError(f"commit has {tallied} of {validators.total_power} voting power, not +2/3")
    results = check(items)
    if not all(results):
        bad = results.index(False)
        raise CommitError(f"commit has an invalid signature ({bad + 1} of {len(items)} checked)")


def median_time(commit: Commit, validators: ValidatorSet) -> int:
    """BFT time: the voting-power-weighted median of the commit's vote timestamps."""
    weighted: list[tuple[int, int]] = []
    total = 0
    for index, sig in enumerate(commit.signatures):
        if sig.flag == BlockIDFlag.ABSENT or index >= len(validators):
            continue
        power = validators.validators[index].power
        weighted.append((sig.timestamp, power))
        total += power
    if not weighted:
        raise ValueError("a commit without votes has no median time")
    weighted.sort()
    # The element at index total // 2 of the power-expanded sorted times (the upper median).
    # CometBFT's weightedMedian compares with <= and so takes index total // 2 - 1, which for
    # three equal validators is the earliest time; both stay within the honest validators' times.
    median = total // 2
    for timestamp, power in weighted:
        if median < power:
            return timestamp
        median -= power
    return weighted[-1][0]


def min_vote_time(block_time: int) -> int:
    """The earliest timestamp a vote for a block of `block_time` may carry (block time + 1 ms)."""
    return block_time + MS


def vote_set_from_commit(
    chain_id: str, commit: Commit, validators: ValidatorSet, check: SignatureCheck
) -> VoteSet:
    """The precommit set a stored commit stands for (its signatures were verified before it
    was stored)."""
    vote_set = VoteSet(chain_id, commit.height, commit.round, VoteType.PRECOMMIT, validators, check)
    for index, sig in enumerate(commit.signatures):
        if sig.flag != BlockIDFlag.ABSENT:
            vote_set.add(commit.vote_of(index), verified=True)
    return vote_set
