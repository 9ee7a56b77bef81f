"""One simulated run from a seed: n validators on a virtual network with faults (tests/sim/network.py),
byzantine validators (tests/sim/byzantine.py), and the safety monitor (tests/sim/checks.py)
consulted after every event.

Everything random comes from `random.Random(seed)`, time is a virtual clock, and every
collection that orders events is a list or a heap keyed by (time, sequence), so one seed always
gives the same run; the run's digest (a hash over every event handled) shows it.

A run has two phases. Until the heal time faults come and go; then every honest node is up, the
network delivers everything, and each honest node must commit `HEIGHTS_AFTER_HEAL` more heights
within `LIVENESS_BOUND` of virtual time (liveness), and every equivocation an honest node
detected must end up as evidence in a committed block. Byzantine validators keep misbehaving
after the heal.

Gossip here is a stand-in for the p2p reactors: every signed message is broadcast once; a node
that has made no progress for a gossip interval re-sends, to each peer that lacks it (a reactor
knows its peers' round states and votes): its own votes of every round of the height, every
vote it holds (conflicting ones included) of its current, valid and locked rounds, of the rounds
its peers are in and of the proof-of-lock rounds of their proposals, the proposal it holds for
the current round and its pending evidence; it tells the peers ahead of it its height, and a
node that hears of a peer at a lower height sends that peer the block and commit of that
height.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from consensus.driver import supersedes
from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import (
    BlockPartEvent,
    ConsensusMachine,
    ProposalEvent,
    ScheduleTimeout,
    TimeoutConfig,
    TimeoutEvent,
    VoteEvent,
)
from consensus.messages import EvidenceMessage, Message
from consensus.state import BlockError, ConsensusParams, genesis_state, validate_block
from consensus.types import Block, BlockID, Commit, Proposal, Vote, VoteType
from consensus.validators import ValidatorSet
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.sim.byzantine import Adversary, draw_behaviours
from tests.sim.checks import Monitor, Violation
from tests.sim.network import PROFILES, FaultPlan, Network
from tests.sim.node import SimNode, VoteObserver

MS = 1_000_000
SECOND = 1_000 * MS
GENESIS_TIME = 1_750_000_000 * SECOND
GOSSIP_INTERVAL = 250 * MS
LIVENESS_BOUND = 60 * SECOND
EVIDENCE_BOUND = 60 * SECOND
HEIGHTS_AFTER_HEAL = 3
TIMEOUTS = TimeoutConfig(
    propose=400 * MS,
    propose_delta=100 * MS,
    prevote=150 * MS,
    prevote_delta=50 * MS,
    precommit=150 * MS,
    precommit_delta=50 * MS,
    commit=100 * MS,
)

DELIVER, TIMER, TICK, CRASH, RESTART = range(5)

__all__ = ["PROFILES", "Result", "Simulation", "Violation", "run_seed"]


@dataclass(frozen=True, slots=True)
class CatchUp:
    """A committed block and its commit, sent to a peer that is behind."""

    block: Block
    commit: Commit


@dataclass(frozen=True, slots=True)
class Status:
    """A stalled node's height, so that peers ahead of it send it what it misses (CometBFT's
    peers learn it from NewRoundStep messages)."""

    height: int


@dataclass
class Result:
    seed: int
    validators: int
    profile: str
    failures: list[str] = field(default_factory=list)
    digest: str = ""
    heights: int = 0
    rounds: int = 0
    """Rounds past round 0 over the committed heights (sum of the commits' rounds)."""
    max_round: int = 0
    events: int = 0
    steps_checked: int = 0
    equivocations: int = 0
    evidence_committed: int = 0
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


def _powers(rng: random.Random, n: int, byzantine: int) -> list[int]:
    """Honest powers, then byzantine ones holding less than a third of the total: in half the
    seeds as close to a third as the integers allow, in the others anything below it."""
    honest = [rng.randint(5, 20) for _ in range(n - byzantine)]
    if not byzantine:
        return honest
    ceiling = (sum(honest) - 1) // 2  # 3 * evil < honest + evil
    total = ceiling if rng.random() < 0.5 else rng.randint(byzantine, max(byzantine, ceiling))
    if total < byzantine:
        honest[0] += 2 * byzantine
        total = byzantine
    evil = [total // byzantine + (1 if i < total % byzantine else 0) for i in range(byzantine)]
    return honest + evil


class Simulation:
    def __init__(self, seed: int, validators: int, profile: str) -> None:
        self.seed = seed
        self.profile = profile
        self.faults = PROFILES[profile]
        self.rng = random.Random(seed)
        rng = self.rng
        n = validators
        byzantine = (n - 1) // 3 if self.faults.byzantine else 0
        keys = [PrivateKey.from_seed(sha256(b"sim %d %d" % (seed, i))) for i in range(n)]
        powers = _powers(rng, n, byzantine)
        evil_slots = set(rng.sample(range(n), byzantine))
        ordered_powers = []
        honest_iter = iter(powers[: n - byzantine])
        evil_iter = iter(powers[n - byzantine :])
        for i in range(n):
            ordered_powers.append(next(evil_iter) if i in evil_slots else next(honest_iter))
        self.genesis = genesis_state(
            f"sim-{seed}",
            1,
            GENESIS_TIME,
            [(k.public_key.raw, p) for k, p in zip(keys, ordered_powers, strict=True)],
            ConsensusParams(),
            sha256(b"sim genesis"),
        )
        self.verifier = BatchVerifier(workers=1)
        self.check = self.verifier.verify_batch
        self.nodes = [
            SimNode(
                i,
                keys[i],
                self.genesis,
                TIMEOUTS,
                self.check,
                random.Random(rng.getrandbits(64)),
                i in evil_slots,
            )
            for i in range(n)
        ]
        self.honest = [node for node in self.nodes if not node.byzantine]
        for node in self.honest:
            node.observer = self._observer(node)
        self.adversaries = {
            node.index: Adversary(
                node, self.genesis.chain_id, draw_behaviours(rng), random.Random(rng.getrandbits(64))
            )
            for node in self.nodes
            if node.byzantine
        }
        self.now = GENESIS_TIME
        self.queue: list[tuple[int, int, int, Any]] = []
        self.seq = 0
        self.digest = hashlib.sha256()
        self.events = 0
        self.monitor = Monitor(self.check)
        self.detected: dict[tuple[bytes, int, int, int], int] = {}
        self.sent_catchups: dict[tuple[int, int], int] = {}
        self.first_commit: dict[int, int] = {}
        self._crash_locks: dict[int, Any] = {}
        self._scanned: dict[int, int] = {}
        self._included_keys: set[tuple[bytes, int, int, int]] = set()
        self.plan = FaultPlan.draw(rng, n, self.faults, self.now)
        self.network = Network(self.plan, random.Random(rng.getrandbits(64)), ordered_powers, TIMEOUTS)
        for crash in self.plan.crashes:
            self._push(crash.at, CRASH, crash.node)
            self._push(crash.back, RESTART, crash.node)
        for node in self.nodes:
            if self.rng.random() < 0.2:
                node.big_tx_heights.add(self.rng.randint(2, 20))

    # -- set-up -------------------------------------------------------------------------------

    def _push(self, at: int, kind: int, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, data))

    def _clock(self, node: SimNode) -> Any:
        return lambda: self.now + self.plan.skew[node.index]

    def _start(self, node: SimNode) -> None:
        def schedule(timeout: ScheduleTimeout, node: SimNode = node) -> None:
            if supersedes(timeout, node.pending_timeout):
                node.pending_timeout = timeout
                node.timer_token += 1
                self._push(self.now + timeout.duration, TIMER, (node.index, node.timer_token, timeout))

        def gossip(message: Message, node: SimNode = node) -> None:
            self._broadcast(node, message)

        node.start(self._clock(node), schedule, gossip)
        assert node.driver is not None
        if not node.byzantine:
            node.driver.evidence_listeners.append(self._on_detected)
            self.monitor.after_restart(node.name, node.machine, self._crash_locks.pop(node.index, None))
        self._after(node)

    def _observer(self, node: SimNode) -> VoteObserver:
        def observe(machine: ConsensusMachine, vote_type: VoteType, block_id: BlockID) -> None:
            def valid(block: Block) -> bool:
                try:
                    validate_block(machine.state, block, self.check)
                except BlockError:
                    return False
                return machine.source.process_proposal(machine.state, block)

            self.monitor.decided(node.name, machine, vote_type, block_id, valid)

        return observe

    def _crash(self, node: SimNode) -> None:
        if node.up and not node.byzantine:
            self._crash_locks[node.index] = self.monitor.forget(node.name)
        node.crash()

    # -- network -------------------------------------------------------------------------------

    def _send(self, sender: int, receiver: int, message: Any) -> None:
        if isinstance(message, VoteEvent) and message.vote.type == VoteType.PREVOTE:
            self.monitor.seen_prevote(message.vote)
        elif isinstance(message, ProposalEvent):
            self.monitor.seen_proposal(message.proposal)
        for delay in self.network.delays(sender, receiver, message, self.now):
            self._push(self.now + delay, DELIVER, (sender, receiver, message))

    def _broadcast(self, node: SimNode, message: Message) -> None:
        """Send `message`, just signed by `node`, to every peer."""
        peers = [p.index for p in self.nodes if p.index != node.index]
        if (
            isinstance(message, VoteEvent)
            and message.vote.type == VoteType.PREVOTE
            and message.vote.validator_address == node.address
        ):
            self.network.own_prevote(node.index, message)
        adversary = self.adversaries.get(node.index)
        if adversary is None:
            self._record_signed(node, message)
            sends: list[tuple[int, Message]] = [(peer, message) for peer in peers]
        else:
            sends = adversary.outgoing(message, peers)
        for peer, out in sends:
            self._send(node.index, peer, out)

    def _lacks(self, node: SimNode, message: Message) -> bool:
        """Whether `node` (up) is at the height and round where `message` counts, and lacks it:
        what a reactor that tracks its peers' round states and votes sends again."""
        machine = node.machine
        if isinstance(message, VoteEvent):
            vote = message.vote
            if vote.height != machine.height:
                return False
            votes = machine.votes.peek(vote.round, vote.type)
            if votes is None:
                return True
            first = votes.get(vote.validator_index)
            return first is None or (first != vote and vote not in votes.votes_for(vote.block_id))
        if isinstance(message, ProposalEvent):
            p = message.proposal
            return p.height == machine.height and p.round == machine.round and machine.proposal is None
        if isinstance(message, BlockPartEvent):
            parts = machine.proposal_parts
            return (
                message.height == machine.height
                and parts is not None
                and not parts.is_complete()
                and not parts.has(message.part.index)
            )
        key = message.evidence.key
        pool = node.evidence
        return (
            pool is not None
            and key not in node.chain.committed_evidence
            and all(e.key != key for e in pool.pending())
        )

    def _record_signed(self, node: SimNode, message: Message) -> None:
        if isinstance(message, VoteEvent) and message.vote.validator_address == node.address:
            vote = message.vote
            self.monitor.honest_vote(vote, self._validators(node, vote.height))
            if vote.type == VoteType.PRECOMMIT and not vote.block_id.is_nil():
                self.network.note_lock(node.index, vote.height, vote.round)
        elif isinstance(message, ProposalEvent) and self._is_own_proposal(node, message.proposal):
            self.monitor.honest_proposal(node.address, message.proposal)

    def _validators(self, node: SimNode, height: int) -> ValidatorSet:
        if node.machine.height == height:
            return node.machine.votes.validators
        found = node.chain.validators_at(height)
        assert found is not None, f"{node.name} knows no validators at height {height}"
        return found

    def _is_own_proposal(self, node: SimNode, proposal: Proposal) -> bool:
        machine = node.machine
        return proposal.height == machine.height and machine.proposer() == node.address

    def _on_detected(self, evidence: DuplicateVoteEvidence) -> None:
        vote = evidence.vote_a
        key = (vote.validator_address, vote.height, vote.round, int(vote.type))
        self.detected.setdefault(key, self.now)

    # -- events --------------------------------------------------------------------------------

    def _after(self, node: SimNode) -> None:
        """After `node` handled an event: check it, and note what it committed."""
        if not node.up or node.driver is None:
            return
        adversary = self.adversaries.get(node.index)
        if adversary is not None:
            adversary.after_event()
        else:
            self.monitor.after_event(node.name, node.machine)
        chain = node.chain
        while node.committed_height < chain.height:
            height = node.committed_height + 1
            block, commit = chain.block_at(height) or (None, None)
            assert block is not None and commit is not None
            if not node.byzantine:
                index = height - chain.genesis.initial_height
                before = chain.states[index - 1] if index else chain.genesis
                self.monitor.committed(node.name, before, block, commit)
                first = height not in self.first_commit
                self.first_commit.setdefault(height, node.index)
                if first or block.header.proposer_address == node.address:
                    self.network.isolate_after_commit(node.index, self.now)
            node.committed_height = height

    def _deliver(self, sender: int, receiver: int, message: Any) -> None:
        node = self.nodes[receiver]
        if not node.up or node.driver is None or self.network.cut(sender, receiver, self.now):
            return
        if isinstance(message, CatchUp):
            if message.block.height == node.machine.height:
                node.driver.apply_decided(message.block, message.commit)
                self._after(node)
            return
        if isinstance(message, Status):
            if message.height < node.machine.height:
                self._catch_up(node, sender, message.height)
            return
        height = _height_of(message)
        if height is not None and height < node.machine.height:
            self._catch_up(node, sender, height)
        node.driver.receive(_from(message, self.nodes[sender].name))
        self._after(node)

    def _catch_up(self, node: SimNode, peer: int, height: int) -> None:
        found = node.chain.block_at(height)
        last = self.sent_catchups.get((peer, height))
        if found is None or (last is not None and self.now - last < GOSSIP_INTERVAL):
            return
        self.sent_catchups[(peer, height)] = self.now
        self._send(node.index, peer, CatchUp(*found))

    def _tick(self, node: SimNode) -> None:
        self._push(self.now + GOSSIP_INTERVAL + self.rng.randint(0, 50) * MS, TICK, node.index)
        if not node.up or node.driver is None:
            return
        machine = node.machine
        key = (machine.height, machine.round, int(machine.step), len(machine.votes.rounds()))
        stalled = key == node.last_stall_key
        node.last_stall_key = key
        if not stalled:
            return
        messages: list[Message] = []
        index = machine.votes.validators.index_of(node.address)
        relay = {machine.round, machine.valid_round, machine.locked_round}
        for peer in self.nodes:  # and the rounds the peers are in, as a reactor learns them
            if peer.up and peer.driver is not None and peer.machine.height == machine.height:
                relay.add(peer.machine.round)
                if peer.machine.proposal is not None:
                    relay.add(peer.machine.proposal.pol_round)
        if machine.proposal is not None:
            relay.add(machine.proposal.pol_round)
        for round_ in machine.votes.rounds():
            for vote_type in (VoteType.PREVOTE, VoteType.PRECOMMIT):
                vote_set = machine.votes.get(round_, vote_type)
                if round_ in relay:
                    messages.extend(VoteEvent(v) for v in vote_set.all_votes())
                elif index is not None and (own := vote_set.get(index)) is not None:
                    messages.append(VoteEvent(own))
        if (
            machine.proposal is not None
            and machine.proposal_parts is not None
            and machine.proposal_parts.is_complete()
        ):
            messages.append(ProposalEvent(machine.proposal))
            messages.extend(
                BlockPartEvent(machine.height, machine.proposal.round, part)
                for part in machine.proposal_parts.parts()
            )
        if node.evidence is not None:
            messages.extend(EvidenceMessage(e) for e in node.evidence.pending())
        adversary = self.adversaries.get(node.index)
        peers = [p.index for p in self.nodes if p is not node and p.up and p.driver is not None]
        for message in messages:  # sent before: only what a peer lacks goes again
            sends = adversary.outgoing(message, peers) if adversary else [(i, message) for i in peers]
            for peer_index, out in sends:
                if self._lacks(self.nodes[peer_index], out):
                    self._send(node.index, peer_index, out)
        for peer in self.nodes:
            if peer is not node and peer.up and peer.chain.height >= machine.height:
                self._send(node.index, peer.index, Status(machine.height))  # to peers that can help

    def _step(self) -> None:
        at, _, kind, data = heapq.heappop(self.queue)
        self.now = at
        self.events += 1
        if kind == DELIVER:
            sender, receiver, message = data
            self.digest.update(repr((at, receiver, sender, _summary(message))).encode())
            self._deliver(sender, receiver, message)
        elif kind == TIMER:
            index, token, timeout = data
            node = self.nodes[index]
            if node.up and node.driver is not None and token == node.timer_token:
                node.pending_timeout = None
                self.digest.update(
                    repr((at, index, timeout.height, timeout.round, int(timeout.step))).encode()
                )
                node.driver.handle(TimeoutEvent(timeout.height, timeout.round, timeout.step))
                self._after(node)
        elif kind == TICK:
            self._tick(self.nodes[data])
        elif kind == CRASH:
            if not self.network.healed(at):
                self.digest.update(repr((at, "crash", data)).encode())
                self._crash(self.nodes[data])
        else:
            self.digest.update(repr((at, "restart", data)).encode())
            if not self.nodes[data].up:
                self._start(self.nodes[data])

    # -- the run -------------------------------------------------------------------------------

    def _run_until(self, deadline: int, done: Any) -> bool:
        while self.queue and self.queue[0][0] <= deadline:
            if done():
                return True
            self._step()
        return bool(done())

    def run(self) -> Result:
        result = Result(self.seed, len(self.nodes), self.profile)
        try:
            for node in self.nodes:
                self._start(node)
                self._push(self.now + self.rng.randint(0, int(GOSSIP_INTERVAL)), TICK, node.index)
            target = self.plan.target_height
            self._run_until(self.plan.horizon, lambda: all(n.chain.height >= target for n in self.honest))
            self.network.heal(self.now)
            for node in self.honest:
                if not node.up:
                    self._start(node)
            base = {node.index: node.chain.height for node in self.honest}
            target = HEIGHTS_AFTER_HEAL
            heal_at = self.now

            def live() -> bool:
                return all(node.chain.height >= base[node.index] + target for node in self.honest)

            if not self._run_until(heal_at + LIVENESS_BOUND, live):
                lagging = {node.name: (base[node.index], node.chain.height) for node in self.honest}
                raise Violation(
                    f"liveness: not every honest node committed {target} heights after the heal: {lagging}"
                )
            if self.faults.byzantine:
                self._check_evidence(result)
        except Violation as exc:
            result.failures.append(str(exc))
        self._fill(result)
        self.verifier.close()
        return result

    def _check_evidence(self, result: Result) -> None:
        stop_height = min(node.chain.height for node in self.honest)
        due = sorted(key for key in self.detected if key[1] < stop_height)

        def all_included() -> bool:
            return all(key in self._included() for key in due)

        if not self._run_until(self.now + EVIDENCE_BOUND, all_included):
            missing = [(k[0].hex()[:8], k[1], k[2], k[3]) for k in due if k not in self._included()]
            raise Violation(f"evidence: equivocations detected but never committed: {missing}")
        result.equivocations = len(due)
        result.evidence_committed = len(self._included())

    def _fill(self, result: Result) -> None:
        longest = max(self.honest, key=lambda n: n.chain.height).chain
        result.heights = min((node.chain.height for node in self.honest), default=0)
        result.rounds = sum(commit.round for commit in longest.commits)
        result.max_round = max((commit.round for commit in longest.commits), default=0)
        result.events = self.events
        result.steps_checked = self.monitor.checked_steps
        stats = dict(self.network.stats)
        for adversary in self.adversaries.values():
            for name, count in adversary.stats.items():
                stats[name] = stats.get(name, 0) + count
        result.stats = stats
        for node in sorted(self.honest, key=lambda n: n.index):
            self.digest.update(b"".join(b.hash for b in node.chain.blocks))
        result.digest = self.digest.hexdigest()[:16]

    def _included(self) -> set[tuple[bytes, int, int, int]]:
        """(validator, height, round, type) of the evidence in honest nodes' committed blocks."""
        for node in self.honest:
            for block in node.chain.blocks[self._scanned.get(node.index, 0) :]:
                for raw in block.evidence:
                    vote = DuplicateVoteEvidence.decode(raw).vote_a
                    self._included_keys.add((vote.validator_address, vote.height, vote.round, int(vote.type)))
            self._scanned[node.index] = len(node.chain.blocks)
        return self._included_keys


def _from(message: Message, peer: str) -> Message:
    """`message` as received from `peer` (dataclasses.replace, without its cost)."""
    if isinstance(message, VoteEvent):
        return VoteEvent(message.vote, peer)
    if isinstance(message, BlockPartEvent):
        return BlockPartEvent(message.height, message.round, message.part, peer)
    if isinstance(message, ProposalEvent):
        return ProposalEvent(message.proposal, peer)
    return EvidenceMessage(message.evidence, peer)


def _height_of(message: Any) -> int | None:
    if isinstance(message, VoteEvent):
        return message.vote.height
    if isinstance(message, ProposalEvent):
        return message.proposal.height
    if isinstance(message, BlockPartEvent):
        return message.height
    return None


def _summary(message: Any) -> tuple[Any, ...]:
    if isinstance(message, VoteEvent):
        v: Vote = message.vote
        return ("vote", v.height, v.round, int(v.type), v.validator_index, v.block_id.hash[:6])
    if isinstance(message, ProposalEvent):
        p = message.proposal
        return ("proposal", p.height, p.round, p.block_id.hash[:6])
    if isinstance(message, BlockPartEvent):
        return ("part", message.height, message.round, message.part.index)
    if isinstance(message, CatchUp):
        return ("catchup", message.block.height)
    if isinstance(message, Status):
        return ("status", message.height)
    if isinstance(message, EvidenceMessage):
        return ("evidence", message.evidence.hash()[:6])
    return ("?",)


def run_seed(seed: int, validators: int, profile: str) -> Result:
    return Simulation(seed, validators, profile).run()
