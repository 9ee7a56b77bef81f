"""The simulator's network and its fault plan: what a seed does to messages, and when.

Until the heal time (the run's global stabilisation time) faults come and go all through the
run: storms (windows of drops, duplicates and jitter), partitions that form and heal, crashes
and restarts, and the two adversarial schedules of the search mode:

- splitting: for a (height, round) and a kind of message (proposal with its parts, prevotes,
  precommits), a random part of the nodes gets such messages from a random part of the senders
  late, after its timeout for that step (or after the whole round), so prevotes and precommits
  split: some nodes lock where others time out without seeing the polka, and a next proposer
  may not know the last round's polka; polka starvation keeps chosen nodes just short of +2/3
  prevotes for a block, and others from the proposal, so that they precommit nil while others
  lock; once nodes are locked, the polkas of the next rounds are often kept from them (and from
  one more node, so that the round does not decide), so that what moves a lock is a later
  proposal's proof-of-lock;
- isolation after commit: the first node to commit a height, and the block's proposer when it
  commits it, may be cut off at once, messages in flight included, so what it alone saw (the
  +2/3 precommits) reaches nobody else.

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
    p_starve: float = 0.0
    p_follow: float = 0.0
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
        p_starve = p_follow = p_isolate = 0.0
        if faults.split:
            p_split = {kind: rng.uniform(0.05, 0.5) for kind in (PROPOSAL, PREVOTE, PRECOMMIT)}
            p_starve = rng.uniform(0.1, 0.6)
            p_follow = rng.uniform(0.2, 0.8)
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
            p_starve=p_starve,
            p_follow=p_follow,
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

    def __init__(
        self, plan: FaultPlan, rng: random.Random, powers: list[int], timeouts: TimeoutConfig
    ) -> None:
        self.plan = plan
        self.rng = rng
        self.powers = powers
        self.total_power = sum(powers)
        self.nodes = len(powers)
        self.timeouts = timeouts
        self.heal_at: int | None = None
        self.isolated: dict[int, int] = {}
        """node -> until when it is cut off."""
        self.late: dict[tuple[str, int, int], dict[int, frozenset[int]]] = {}
        self.lateness: dict[tuple[str, int, int], bool] = {}
        """Whether the late messages of a (kind, height, round) come after the round, not just
        after the step's timeout."""
        self.locks: dict[int, dict[int, int]] = {}
        """height -> node -> the round of its latest precommit for a block."""
        self.starved: dict[tuple[int, int], tuple[frozenset[int], frozenset[int]]] = {}
        """(height, round) -> (the nodes kept just short of a polka, the nodes without the
        proposal) in that round."""
        self.on_time: dict[tuple[int, int, int, bytes], set[int]] = {}
        """(height, round, receiver, block) -> the prevoters for the block it gets on time."""
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
        storm = (
            next((s for s in self.plan.storms if s.start <= now < s.end), None) if self.plan.storms else None
        )
        if storm is not None:
            if self.rng.random() < storm.p_drop:
                return []
            base += int(self.rng.random() * storm.jitter)
        base += self._late_by(sender, receiver, message)
        if storm is not None and self.rng.random() < storm.p_dup:
            return [base, base + int(self.rng.random() * max(storm.jitter, MS))]
        return [base]

    def _late_by(self, sender: int, receiver: int, message: object) -> int:
        key = kind_of(message)
        if key is None or not self.plan.p_split:
            return 0
        starved, nil_voters = self._starvation(key[1], key[2])
        if key[0] == PROPOSAL and receiver in nil_voters:
            return self._late_delay(key, whole_round=True)
        if (
            isinstance(message, VoteEvent)
            and key[0] == PREVOTE
            and receiver in starved
            and self._completes_polka(sender, receiver, message)
        ):
            return self._late_delay(key, whole_round=True)
        late = self.late.get(key)
        if late is None:
            late = self._draw_late(key)
            self.late[key] = late
        if sender not in late.get(receiver, ()):
            return 0
        return self._late_delay(key)

    def _starvation(self, height: int, round_: int) -> tuple[frozenset[int], frozenset[int]]:
        """Polka starvation of a round: the nodes kept just short of +2/3 prevotes for a block
        (they get every prevote on time but the one that would complete it, and get that one
        after the round), and the nodes that get the proposal after the round (so they prevote
        nil, and the starved nodes time out and precommit nil while others lock): the round
        ends without a decision, and a starved next proposer does not know the polka."""
        key = (height, round_)
        found = self.starved.get(key)
        if found is None:
            found = (frozenset(), frozenset())
            lockers = [node for node, locked in self.locks.get(height, {}).items() if locked < round_]
            if lockers and self.rng.random() < self.plan.p_follow:
                # Keep the locked nodes, and one more, from this round's polka: no decision,
                # and a later proposal under this round's proof-of-lock is what can move a lock.
                others = [node for node in range(self.nodes) if node not in lockers]
                extra = self.rng.sample(others, 1) if others else []
                found = (frozenset([*lockers, *extra]), frozenset())
                self.stats["starved after a lock"] = self.stats.get("starved after a lock", 0) + 1
            elif self.rng.random() < self.plan.p_starve:
                order = self.rng.sample(range(self.nodes), self.nodes)
                cut = self.rng.randint(1, max(1, self.nodes // 3))
                found = (
                    frozenset(order[cut : cut + self.rng.randint(1, self.nodes - cut)]),
                    frozenset(order[:cut]),
                )
                self.stats["starved rounds"] = self.stats.get("starved rounds", 0) + 1
            self.starved[key] = found
        return found

    def _completes_polka(self, sender: int, receiver: int, message: VoteEvent) -> bool:
        vote = message.vote
        if vote.block_id.is_nil():
            return False
        voters = self.on_time.setdefault((vote.height, vote.round, receiver, vote.block_id.hash), set())
        if sender in voters:
            return False
        if 3 * sum(self.powers[v] for v in voters | {sender}) > 2 * self.total_power:
            return True
        voters.add(sender)
        return False

    def own_prevote(self, node: int, message: VoteEvent) -> None:
        """`node` holds its own prevote: it counts towards what it gets on time."""
        vote = message.vote
        if not vote.block_id.is_nil():
            self.on_time.setdefault((vote.height, vote.round, node, vote.block_id.hash), set()).add(node)

    def _late_delay(self, key: tuple[str, int, int], whole_round: bool = False) -> int:
        round_ = key[2]
        delay = self.timeouts.for_step(_STEP_OF[key[0]], round_) + self.rng.randint(10, 300) * MS
        if whole_round or self.lateness.setdefault(key, self.rng.random() < 0.5):  # past the round
            delay += sum(self.timeouts.for_step(step, round_) for step in _STEP_OF.values())
        return delay

    def _draw_late(self, key: tuple[str, int, int]) -> dict[int, frozenset[int]]:
        """For one (kind, height, round): receiver -> the senders whose messages reach it late."""
        kind = key[0]
        if self.rng.random() < self.plan.p_split[kind]:
            self.stats[f"split {kind}s"] = self.stats.get(f"split {kind}s", 0) + 1
            receivers = self.rng.sample(range(self.nodes), self.rng.randint(1, self.nodes - 1))
        else:
            return {}
        senders = range(self.nodes)
        return {
            receiver: frozenset(self.rng.sample(senders, self.rng.randint(1, self.nodes - 1)))
            for receiver in sorted(receivers)
        }

    def note_lock(self, node: int, height: int, round_: int) -> None:
        """`node` precommitted a block at (height, round): it is locked from that round on."""
        self.locks.setdefault(height, {})[node] = round_

    def isolate_after_commit(self, node: int, now: int) -> bool:
        """`node` just committed a height, first or as its proposer: maybe cut it off a while."""
        if self.healed(now) or self.rng.random() >= self.plan.p_isolate:
            return False
        until = now + self.rng.randint(200, 3_000) * MS
        self.isolated[node] = max(self.isolated.get(node, 0), until)
        self.stats["isolations"] = self.stats.get("isolations", 0) + 1
        return True
