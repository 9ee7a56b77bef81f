"""The start-up double-sign check (`[consensus] double_sign_check_height`, CometBFT's
checkDoubleSigningRisk): before a validator signs anything, the last N stored commits are searched
for a signature of its key. One found means the key signed recently, so another node may be
running with it (or this node was reset): the caller refuses to start.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.types import BlockIDFlag, Commit
from storage.blockstore import BlockStore


@dataclass(frozen=True, slots=True, kw_only=True)
class RecentSignature:
    """A signature of the validator found in a stored commit."""

    height: int
    round: int
    flag: BlockIDFlag
    """COMMIT (a precommit for the block) or NIL"""


def recent_signature(
    blocks: BlockStore, address: bytes, last_height: int, lookback: int
) -> RecentSignature | None:
    """The newest signature of `address` in the commits of heights `last_height`,
    `last_height - 1`, ... (`lookback` of them, as far as the store holds them); None if there
    is none or `lookback` is 0. Precommits for nil count too: any signature shows the key live."""
    for height in range(last_height, max(blocks.base, last_height - lookback + 1, 1) - 1, -1):
        raw = blocks.load_seen_commit(height)
        if raw is None:
            continue
        commit = Commit.decode(raw)
        for sig in commit.signatures:
            if sig.flag != BlockIDFlag.ABSENT and sig.validator_address == address:
                return RecentSignature(height=height, round=commit.round, flag=sig.flag)
    return None
