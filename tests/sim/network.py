"""The simulator's network and its fault plan: what a seed does to messages, and when.

Until the heal time (the run's global stabilisation time) faults come and go all through the
run: storms (windows of drops, duplicates and jitter), partitions that form and heal, crashes
and restarts, and the two adversarial schedules of the search mode:

- splitting: for a (height, round) and a kind of message (proposal with its parts, prevotes,
  precommits), a random part of the nodes gets every such message late, after its timeout for
  that step, so prevotes and precommits split and some nodes lock where others do not;
- isolation after commit: the first node to commit a height is cut off at once, messages in
  flight included, so what it alone saw (the +2/3 precommits) reaches nobody else.

A partition or an isolation is checked when a message is sent and again when it arrives. After
the heal time the network delivers everything (late, but surely).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from consensus.machine import BlockPartEvent, ProposalEvent, Step, TimeoutConfig, VoteEvent
from consensus.types import VoteType

MS = 1_000_000

PROPOSAL, PREVOTE, PRECOMMIT = "proposal", "prevote", "precommit"


@dataclass(frozen=True, slots=True, kw_only=True)
class Faults:
    """Which kinds of fault a profile turns on."""

    network: bool = False
    crash: bool = False
    byzantine: bool = False
    split: bool = False

    @property
    def any(self) -> bool:
        return self.network or self.crash or self.byzantine or self.split


PROFILES = {
    "none": Faults(),
    "network": Faults(network=True),
    "crash": Faults(crash=True),
    "byzantine": Faults(byzantine=True),
    "split": Faults(split=True),
    "all": Faults(network=True, crash=True, byzantine=True, split=True),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Storm:
    start: int
    end: int
    p_drop: float
    p_dup: float
    jitter: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Partition:
    start: int
    end: int
    sides: tuple[int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Crash:
    node: int
    at: int
    back: int


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultPlan:
    """Everything a seed decides up front about its faults. Faults are drawn over `horizon`
    virtual nanoseconds from the start; the run heals when every honest node has committed
    `target_height`, or at the end of the horizon."""

    horizon: int
    target_height: int
    base_delay: int
    jitter: int
    skew: tuple[int, ...]
    storms: tuple[Storm, ...] = ()
    partitions: tuple[Partition, ...] = ()
    crashes: tuple[Crash, ...] = ()
    p_split: dict[str, float] = field(default_factory=dict)
    p_isolate: float = 0.0

    @classmethod
    def draw(cls, rng: random.Random, nodes: int, faults: Faults, start: int) -> FaultPlan:
        horizon = HORIZON
        storms: list[Storm] = []
        partitions: list[Partition] = []
        crashes: list[Crash] = []
        if faults.network:
            for begin in _times(rng, start, horizon, 4_000 * MS):
                storms.append(
                    Storm(
                        start=begin,
                        end=begin + rng.randint(500, 4_000) * MS,
                        p_drop=rng.uniform(0.0, 0.3),
                        p_dup=rng.uniform(0.0, 0.1),
                        jitter=rng.randint(0, 80) * MS,
                    )
                )
            for begin in _times(rng, start, horizon, 5_000 * MS):
                sides = tuple(rng.randrange(2) for _ in range(nodes))
                partitions.append(
                    Partition(start=begin, end=begin + rng.randint(300, 3_000) * MS, sides=sides)
                )
        if faults.crash:
            for at in _times(rng, start, horizon, 6_000 * MS):
                crashes.append(
                    Crash(node=rng.randrange(nodes), at=at, back=at + rng.randint(200, 2_000) * MS)
                )
        p_split: dict[str, float] = {}
        p_isolate = 0.0
        if faults.split:
            p_split = {kind: rng.uniform(0.05, 0.5) for kind in (PROPOSAL, PREVOTE, PRECOMMIT)}
            p_isolate = rng.uniform(0.05, 0.5)
        return cls(
            horizon=start + horizon,
            target_height=rng.randint(18, 30),
            base_delay=rng.randint(1, 20) * MS,
            jitter=rng.randint(0, 40) * MS if faults.network else 5 * MS,
            skew=tuple(rng.randint(-20, 20) * MS if faults.network else 0 for _ in range(nodes)),
            storms=tuple(storms),
            partitions=tuple(partitions),
            crashes=tuple(crashes),
            p_split=p_split,
            p_isolate=p_isolate,
        )


HORIZON = 120_000 * MS
"""The longest fault phase of a run (virtual time)."""


def _times(rng: random.Random, start: int, horizon: int, mean_gap: int) -> list[int]:
    """Start times over [start, start + horizon) with gaps of mean `mean_gap` (exponential)."""
    times: list[int] = []
    at = start + int(rng.expovariate(1 / mean_gap))
    while at < start + horizon:
        times.append(at)
        at += int(rng.expovariate(1 / mean_gap))
    return times


def kind_of(message: object) -> tuple[str, int, int] | None:
    """(kind, height, round) of a message the splitter may delay."""
    if isinstance(message, ProposalEvent):
        return PROPOSAL, message.proposal.height, message.proposal.round
    if isinstance(message, BlockPartEvent):
        return PROPOSAL, message.height, message.round
    if isinstance(message, VoteEvent):
        vote = message.vote
        return (PREVOTE if vote.type == VoteType.PREVOTE else PRECOMMIT), vote.height, vote.round
    return None


_STEP_OF = {PROPOSAL: Step.PROPOSE, PREVOTE: Step.PREVOTE_WAIT, PRECOMMIT: Step.PRECOMMIT_WAIT}


class Network:
    """Decides each message's fate under a FaultPlan."""

    def __init__(self, plan: FaultPlan, rng: random.Random, nodes: int, timeouts: TimeoutConfig) -> None:
        self.plan = plan
        self.rng = rng
        self.nodes = nodes
        self.timeouts = timeouts
        self.heal_at: int | None = None
        self.isolated: dict[int, int] = {}
        """node -> until when it is cut off."""
        self.late: dict[tuple[str, int, int], frozenset[int]] = {}
        self._partitions_now: list[Partition] = []
        self._valid_from = 0
        self._valid_until = 0
        self.stats: dict[str, int] = {}

    def heal(self, now: int) -> None:
        """From `now` on, no more faults."""
        self.heal_at = now

    def healed(self, now: int) -> bool:
        return self.heal_at is not None and now >= self.heal_at

    def cut(self, a: int, b: int, now: int) -> bool:
        """Whether a message between `a` and `b` is lost at `now` (partition or isolation)."""
        if self.healed(now):
            return False
        if self.isolated and (self.isolated.get(a, 0) > now or self.isolated.get(b, 0) > now):
            return True
        return any(p.sides[a] != p.sides[b] for p in self._active(now))

    def _active(self, now: int) -> list[Partition]:
        """The partitions in force at `now` (recomputed only when `now` crosses a start or an end)."""
        if not self._valid_from <= now < self._valid_until:
            self._partitions_now = [p for p in self.plan.partitions if p.start <= now < p.end]
            starts = [p.start for p in self.plan.partitions if p.start > now]
            ends = [p.end for p in self._partitions_now]
            earlier = [p.end for p in self.plan.partitions if p.end <= now]
            self._valid_from = max([*earlier, *(p.start for p in self._partitions_now), 0])
            self._valid_until = min([*starts, *ends, 2**63])
        return self._partitions_now

    def delays(self, sender: int, receiver: int, message: object, now: int) -> list[int]:
        """The delay of each copy of `message` that will arrive (none if it is lost)."""
        base = self.plan.base_delay + int(self.rng.random() * self.plan.jitter)
        if self.healed(now):
            return [base]
        if self.cut(sender, receiver, now):
            return []
        storm = next((s for s in self.plan.storms if s.start <= now < s.end), None) if self.plan.storms else None
        if storm is not None:
            if self.rng.random() < storm.p_drop:
                return []
            base += int(self.rng.random() * storm.jitter)
        base += self._late_by(receiver, message)
        if storm is not None and self.rng.random() < storm.p_dup:
            return [base, base + int(self.rng.random() * max(storm.jitter, MS))]
        return [base]

    def _late_by(self, receiver: int, message: object) -> int:
        key = kind_of(message)
        if key is None or not self.plan.p_split:
            return 0
        late = self.late.get(key)
        if late is None:
            late = frozenset()
            if self.rng.random() < self.plan.p_split[key[0]]:
                size = self.rng.randint(1, self.nodes - 1)
                late = frozenset(self.rng.sample(range(self.nodes), size))
                self.stats[f"split {key[0]}s"] = self.stats.get(f"split {key[0]}s", 0) + 1
            self.late[key] = late
        if receiver not in late:
            return 0
        step = _STEP_OF[key[0]]
        return self.timeouts.for_step(step, key[2]) + self.rng.randint(10, 300) * MS

    def isolate_after_commit(self, node: int, now: int) -> bool:
        """`node` was the first to commit a height: maybe cut it off for a while."""
        if self.healed(now) or self.rng.random() >= self.plan.p_isolate:
            return False
        until = now + self.rng.randint(200, 3_000) * MS
        self.isolated[node] = max(self.isolated.get(node, 0), until)
        self.stats["isolations"] = self.stats.get("isolations", 0) + 1
        return True
