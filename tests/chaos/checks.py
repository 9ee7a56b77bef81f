"""The verdicts of a chaos run, as pure functions of what was collected from the nodes (so a test
can feed them doctored data and see them fail), and the state check of a stopped node's database.

- forks: a height at which two nodes hold different block hashes;
- lost: an acknowledged tx (found committed at height h on some node) that is not in the block at
  h of every node that has h;
- state: on every node, the quote of every account, position and funding pool (fees and the
  insurance fund are accounts) sums to the genesis supply (`ExchangeApp.total_quote` against
  `total_supply`), and the position sizes of every market sum to zero;
- liveness: every stall (a healed fault to the majority's next height) under the bound, and every
  node advancing at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from execution.app import ExchangeApp
from node.database import open_database
from primitives.batch_verify import BatchVerifier


@dataclass(frozen=True, slots=True, kw_only=True)
class Fork:
    height: int
    hashes: tuple[tuple[str, str], ...]
    """(node, block hash) of every node at the height"""

    def describe(self) -> str:
        return f"fork at height {self.height}: " + ", ".join(f"{n} {h[:12]}" for n, h in self.hashes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Lost:
    tx_hash: bytes
    height: int
    missing_on: tuple[str, ...]

    def describe(self) -> str:
        nodes = ", ".join(self.missing_on)
        return f"tx {self.tx_hash.hex()[:16]} acknowledged at height {self.height} is not there on {nodes}"


def find_forks(hashes: Mapping[str, Mapping[int, str]]) -> list[Fork]:
    """Every height at which the nodes' block hashes (node -> height -> hash) differ."""
    heights = sorted({h for per_node in hashes.values() for h in per_node})
    forks = []
    for height in heights:
        seen = tuple(
            (node, per_node[height]) for node, per_node in sorted(hashes.items()) if height in per_node
        )
        if len({block_hash for _, block_hash in seen}) > 1:
            forks.append(Fork(height=height, hashes=seen))
    return forks


def find_lost(acked: Mapping[bytes, int], txs: Mapping[str, Mapping[int, frozenset[bytes]]]) -> list[Lost]:
    """Every acknowledged tx (hash -> height) missing from its block on a node (node -> height ->
    the hashes of the block's txs). A node without the height at all misses it too."""
    lost = []
    for tx_hash, height in sorted(acked.items(), key=lambda item: (item[1], item[0])):
        missing = tuple(
            node for node, blocks in sorted(txs.items()) if tx_hash not in blocks.get(height, frozenset())
        )
        if missing:
            lost.append(Lost(tx_hash=tx_hash, height=height, missing_on=missing))
    return lost


@dataclass(frozen=True, slots=True, kw_only=True)
class StateFigures:
    height: int
    supply: int
    total_quote: int
    size_sums: dict[int, int]

    def problems(self, name: str) -> list[str]:
        out = []
        if self.total_quote != self.supply:
            out.append(
                f"{name}: conservation broken at height {self.height}: "
                f"quote {self.total_quote} != supply {self.supply}"
            )
        for market, total in sorted(self.size_sums.items()):
            if total != 0:
                out.append(f"{name}: market {market} net position size {total} != 0 at height {self.height}")
        return out


def state_figures(home: Path, chain_id: str) -> StateFigures:
    """The conservation figures of a stopped node's committed state (its database is opened)."""
    db = open_database(home / "data" / "derivd.db", create=False)
    verifier = BatchVerifier(workers=1)
    try:
        app = ExchangeApp(db, chain_id, verifier)
        return StateFigures(
            height=app.info().last_block_height,
            supply=app.total_supply(),
            total_quote=app.total_quote(),
            size_sums=app.position_size_sums(),
        )
    finally:
        verifier.close()
        db.close()


def stall_problems(stalls: Mapping[int, float], bound: float) -> list[str]:
    """Each episode (number -> seconds from its heal to the majority's next height) over `bound`."""
    return [
        f"episode #{number}: the chain stalled {seconds:.1f}s after the fault healed (bound {bound:g}s)"
        for number, seconds in sorted(stalls.items())
        if seconds > bound
    ]
