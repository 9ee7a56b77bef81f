"""The seeded fault schedule of a chaos run: which faults, on which nodes, held how long, in what
order. The same seed, node count, duration and fault set give the same schedule; only the moments
it is carried out depend on the run (each episode starts once the previous one has healed and the
chain has recovered).

The first episodes take every enabled fault kind once (in a seeded order), so even a short run
has each; after that kinds are drawn by weight (kills most often). A kill names a node or "the
proposer" (read from the RPC when the episode starts); a partition is a minority (one node cut
off from the others) or a split into two halves of which neither holds +2/3 of the power. The
byzantine twin is not an episode: it runs first, until its evidence has landed.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import assert_never


class FaultKind(enum.Enum):
    KILL = "kill"
    PARTITION = "partition"
    LOSS = "loss"
    DELAY = "delay"
    BYZANTINE = "byzantine"


EPISODE_KINDS = (FaultKind.KILL, FaultKind.PARTITION, FaultKind.LOSS, FaultKind.DELAY)
WEIGHTS = {FaultKind.KILL: 0.6, FaultKind.PARTITION: 0.12, FaultKind.LOSS: 0.14, FaultKind.DELAY: 0.14}
"""of the drawn episodes: about 5 kills per partition (the issue's target is 100 and 20)"""
RECOVERY_ESTIMATE = {FaultKind.KILL: 5.0, FaultKind.PARTITION: 2.0, FaultKind.LOSS: 1.0, FaultKind.DELAY: 1.0}
"""seconds an episode is expected to need after it heals, to fill `duration` with episodes"""


class ScheduleError(ValueError):
    """Bad schedule arguments; the message is one line."""


def parse_faults(text: str) -> frozenset[FaultKind]:
    """`kill,partition,...` (or `all`) as a set of fault kinds."""
    if text.strip() == "all":
        return frozenset(FaultKind)
    kinds: set[FaultKind] = set()
    for item in (part.strip() for part in text.split(",")):
        try:
            kinds.add(FaultKind(item))
        except ValueError:
            names = ", ".join(kind.value for kind in FaultKind)
            raise ScheduleError(f"--faults: unknown fault {item!r} (known: {names}, or all)") from None
    return frozenset(kinds)


class PartitionShape(enum.Enum):
    MINORITY = "minority"
    SPLIT = "split"


@dataclass(frozen=True, slots=True, kw_only=True)
class Episode:
    """One fault: applied after `lead` seconds of quiet, held `hold` seconds, then healed."""

    number: int
    kind: FaultKind
    lead: float
    hold: float
    target: int | None = None
    """the node (kill, loss, delay); None for a kill of the proposer of the moment"""
    sides: tuple[tuple[int, ...], ...] = ()
    """a partition's sides"""
    shape: PartitionShape | None = None
    amount: float = 0.0
    """loss: the fraction of packets dropped; delay: milliseconds"""

    def describe(self) -> str:
        head = f"#{self.number} after {self.lead:.1f}s"
        match self.kind:
            case FaultKind.KILL:
                who = "the proposer" if self.target is None else f"node{self.target}"
                return f"{head}: kill -9 {who}, restart after {self.hold:.1f}s"
            case FaultKind.PARTITION:
                sides = " | ".join(",".join(f"node{i}" for i in side) for side in self.sides)
                shape = self.shape.value if self.shape is not None else "?"
                return f"{head}: partition ({shape}) {sides} for {self.hold:.1f}s"
            case FaultKind.LOSS:
                return f"{head}: {self.amount:.0%} loss on node{self.target}'s links for {self.hold:.1f}s"
            case FaultKind.DELAY:
                return f"{head}: {self.amount:.0f} ms delay on node{self.target}'s links for {self.hold:.1f}s"
            case FaultKind.BYZANTINE:
                raise AssertionError("the byzantine twin is not an episode")
            case _:
                assert_never(self.kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    seed: int
    nodes: int
    twin_of: int | None
    """the validator whose key the byzantine twin signs with (None: no twin)"""
    episodes: tuple[Episode, ...]

    def lines(self) -> list[str]:
        out = [f"schedule (seed {self.seed}, {self.nodes} nodes, {len(self.episodes)} episodes):"]
        if self.twin_of is not None:
            out.append(f"  first: a byzantine twin of node{self.twin_of} until its evidence lands")
        out.extend(f"  {episode.describe()}" for episode in self.episodes)
        return out

    def count(self, kind: FaultKind) -> int:
        return sum(1 for episode in self.episodes if episode.kind is kind)


def _episode(rng: random.Random, number: int, kind: FaultKind, nodes: int) -> Episode:
    lead = round(rng.uniform(1.0, 3.0), 2)
    match kind:
        case FaultKind.KILL:
            target = None if rng.random() < 0.4 else rng.randrange(nodes)
            return Episode(
                number=number, kind=kind, lead=lead, hold=round(rng.uniform(0.3, 3.0), 2), target=target
            )
        case FaultKind.PARTITION:
            order = list(range(nodes))
            rng.shuffle(order)
            shape = PartitionShape.MINORITY if rng.random() < 0.5 else PartitionShape.SPLIT
            cut = 1 if shape is PartitionShape.MINORITY else nodes // 2
            sides = (tuple(sorted(order[:cut])), tuple(sorted(order[cut:])))
            return Episode(
                number=number,
                kind=kind,
                lead=lead,
                hold=round(rng.uniform(3.0, 8.0), 2),
                sides=sides,
                shape=shape,
            )
        case FaultKind.LOSS:
            amount = round(rng.uniform(0.05, 0.3), 2)
            hold = round(rng.uniform(3.0, 8.0), 2)
            return Episode(
                number=number, kind=kind, lead=lead, hold=hold, target=rng.randrange(nodes), amount=amount
            )
        case FaultKind.DELAY:
            amount = float(rng.randrange(50, 301, 10))
            hold = round(rng.uniform(3.0, 8.0), 2)
            return Episode(
                number=number, kind=kind, lead=lead, hold=hold, target=rng.randrange(nodes), amount=amount
            )
        case FaultKind.BYZANTINE:
            raise AssertionError("the byzantine twin is not an episode")
        case _:
            assert_never(kind)


def build_schedule(
    seed: int,
    nodes: int,
    duration: float,
    faults: Iterable[FaultKind],
    *,
    min_kills: int = 0,
    min_partitions: int = 0,
) -> Schedule:
    """The episodes that fill about `duration` seconds (module docstring): at least one of each
    enabled kind, and at least `min_kills` kills and `min_partitions` partitions if enabled."""
    if nodes < 2:
        raise ScheduleError(f"--nodes: a chaos run needs at least 2 nodes, got {nodes}")
    if duration <= 0:
        raise ScheduleError(f"--duration: must be positive, got {duration:g}")
    if min_kills < 0 or min_partitions < 0:
        raise ScheduleError("--min-kills and --min-partitions must not be negative")
    enabled = set(faults)
    rng = random.Random(seed)
    twin_of = rng.randrange(nodes) if FaultKind.BYZANTINE in enabled else None
    kinds = [kind for kind in EPISODE_KINDS if kind in enabled]
    wanted = {
        FaultKind.KILL: min_kills if FaultKind.KILL in enabled else 0,
        FaultKind.PARTITION: min_partitions if FaultKind.PARTITION in enabled else 0,
    }
    episodes: list[Episode] = []
    first = list(kinds)
    rng.shuffle(first)
    spent = 0.0

    def short() -> bool:
        return any(sum(1 for e in episodes if e.kind is kind) < n for kind, n in wanted.items())

    while kinds and (spent < duration or first or short()):
        kind = first.pop(0) if first else rng.choices(kinds, weights=[WEIGHTS[k] for k in kinds])[0]
        episode = _episode(rng, len(episodes) + 1, kind, nodes)
        episodes.append(episode)
        spent += episode.lead + episode.hold + RECOVERY_ESTIMATE[kind]
    return Schedule(seed=seed, nodes=nodes, twin_of=twin_of, episodes=tuple(episodes))
