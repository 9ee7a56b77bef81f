"""Light client verification (CometBFT's light/verifier.go and its bisection), sans-io.

A `LightBlock` is a header, the commit that signed it and the validator set that signed it. From a
trusted light block, a later one is accepted when:

- both are of one chain, the later one is higher and later in time, not ahead of `now` by more
  than `max_clock_drift`, and the trusted one is within the trusting period of `now`;
- adjacent (height + 1): its `validators_hash` is the trusted header's `next_validators_hash`;
  non-adjacent: validators of the trusted set holding more than `trust_level` (default 1/3) of its
  power signed the new commit (`verify_trusting`; "skipping verification");
- and in both cases more than 2/3 of the new block's own validators signed its commit.

`verify_to` walks from a trusted block to a target height with bisection: when too little of the
trusted power signed the target, it verifies the block halfway first, and so on. Blocks come from
a `Provider` (the node's RPC in `node.light`); every check raises `LightError` saying which.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from consensus.types import BlockIDFlag, Commit, Header
from consensus.validators import ValidatorSet
from consensus.votes import CommitError, verify_commit

SignatureCheck = Callable[[Sequence[tuple[bytes, bytes, bytes]]], list[bool]]

DEFAULT_TRUSTING_PERIOD = 168 * 3600 * 10**9
"""One week, CometBFT's default `trusting_period` (it must stay below the unbonding period)."""
DEFAULT_MAX_CLOCK_DRIFT = 10 * 10**9


class LightError(ValueError):
    """A light block that cannot be trusted; the message says which check failed."""


class NotEnoughTrust(LightError):
    """Too little of the trusted validators' power signed a non-adjacent block (bisect)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class LightBlock:
    header: Header
    commit: Commit
    validators: ValidatorSet

    @property
    def height(self) -> int:
        return self.header.height

    def check_self(self, chain_id: str) -> None:
        """The block is internally consistent: its chain, its commit is of this header, its
        validator set is the one the header names."""
        if self.header.chain_id != chain_id:
            raise LightError(f"block {self.height} is of chain {self.header.chain_id!r}, not {chain_id!r}")
        if self.commit.height != self.height:
            raise LightError(f"the commit of block {self.height} is for height {self.commit.height}")
        if self.commit.block_id.hash != self.header.hash():  # sha256 Merkle root, not Python's hash()
            raise LightError(f"the commit of block {self.height} signs another header")
        if self.validators.hash() != self.header.validators_hash:  # sha256 Merkle root
            raise LightError(f"the validator set of block {self.height} is not the one its header names")


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustOptions:
    trusting_period: int = DEFAULT_TRUSTING_PERIOD
    """ns: how long a trusted header stays usable to verify others"""
    trust_level: tuple[int, int] = (1, 3)
    """(numerator, denominator), in [1/3, 1]: the share of trusted power that must sign a skip"""
    max_clock_drift: int = DEFAULT_MAX_CLOCK_DRIFT

    def __post_init__(self) -> None:
        num, den = self.trust_level
        if not (den > 0 and 3 * num >= den and num <= den):
            raise ValueError(f"trust level {num}/{den} must be within [1/3, 1]")
        if self.trusting_period <= 0:
            raise ValueError("the trusting period must be positive")


class Provider(Protocol):
    """Where light blocks come from (a full node's RPC)."""

    def light_block(self, height: int) -> LightBlock: ...


def verify_trusting(
    chain_id: str, trusted: ValidatorSet, commit: Commit, trust_level: tuple[int, int], check: SignatureCheck
) -> None:
    """Raise NotEnoughTrust unless validators of `trusted` with more than `trust_level` of its
    power signed `commit` (found by address; each counted once; their signatures checked)."""
    num, den = trust_level
    items: list[tuple[bytes, bytes, bytes]] = []
    seen: set[bytes] = set()
    tallied = 0
    for index, sig in enumerate(commit.signatures):
        if sig.flag != BlockIDFlag.COMMIT or sig.validator_address in seen:
            continue
        validator = trusted.get(sig.validator_address)
        if validator is None:
            continue
        seen.add(sig.validator_address)
        items.append((validator.pub_key, commit.vote_of(index).sign_bytes(chain_id), sig.signature))
        tallied += validator.power
    if tallied * den <= trusted.total_power * num:
        raise NotEnoughTrust(
            f"validators of the trusted set with {tallied} of its {trusted.total_power} power signed block "
            f"{commit.height}: not more than {num}/{den}"
        )
    results = check(items)
    if not all(results):
        raise LightError(f"block {commit.height} carries an invalid signature of a trusted validator")


def verify(
    trusted: LightBlock, untrusted: LightBlock, options: TrustOptions, now: int, check: SignatureCheck
) -> None:
    """Accept `untrusted` on the strength of `trusted` (module docstring) or raise LightError
    (NotEnoughTrust: a block between them may be trusted enough to get there)."""
    chain_id = trusted.header.chain_id
    untrusted.check_self(chain_id)
    old, new = trusted.header, untrusted.header
    if new.height <= old.height:
        raise LightError(f"block {new.height} is not above the trusted height {old.height}")
    if new.time <= old.time:
        raise LightError(f"block {new.height} is not later than the trusted block {old.height}")
    if new.time > now + options.max_clock_drift:
        raise LightError(f"block {new.height} is from the future (beyond the allowed clock drift)")
    if old.time + options.trusting_period <= now:
        raise LightError(
            f"the trusted block {old.height} is older than the trusting period: start again from a "
            "recent height and hash you trust"
        )
    if new.height == old.height + 1:
        if new.validators_hash != old.next_validators_hash:
            raise LightError(f"block {new.height}'s validators are not those block {old.height} named next")
    else:
        verify_trusting(chain_id, trusted.validators, untrusted.commit, options.trust_level, check)
    try:
        verify_commit(
            chain_id, untrusted.validators, untrusted.commit.block_id, new.height, untrusted.commit, check
        )
    except CommitError as exc:
        raise LightError(f"block {new.height}: {exc}") from None


def verify_to(
    provider: Provider,
    trusted: LightBlock,
    height: int,
    options: TrustOptions,
    now: int,
    check: SignatureCheck,
) -> list[LightBlock]:
    """The blocks verified on the way from `trusted` to `height`, the block at `height` last
    (skipping, with bisection where a skip lacks trust); LightError if one fails."""
    if height == trusted.height:
        return [trusted]
    current, pending = trusted, [provider.light_block(height)]
    verified: list[LightBlock] = []
    while pending:
        candidate = pending[-1]
        try:
            verify(current, candidate, options, now, check)
        except NotEnoughTrust:
            middle = (current.height + candidate.height) // 2
            pending.append(provider.light_block(middle))  # adjacent blocks never lack trust
            continue
        verified.append(candidate)
        current = pending.pop()
    return verified
