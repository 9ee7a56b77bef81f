"""One simulated run from a seed: n validators on a virtual network with faults, then the
properties every run must keep.

Everything random comes from `random.Random(seed)`, time is a virtual clock, and every
collection that orders events is a list or a heap keyed by (time, sequence), so one seed always
gives the same run; the run's digest (a hash over every event handled) shows it.

Faults, before the heal time: message delays, drops, duplicates and reordering, partitions that
heal; crashes that lose a node's memory and the unsynced end of its WAL (it restarts from its
WAL, private-validator state and committed chain); byzantine validators (under 1/3 of the
power) that sign two votes per step and two proposals per round, sending each to part of the
network. After the heal time the network delivers everything (late, but surely) and every node
is up; byzantine validators keep equivocating.

Properties: agreement (no two honest nodes commit different blocks at one height), validity
(each committed block is valid on the state before it), no honest double-sign, liveness (after
the heal every honest node commits at least K more heights within a bounded virtual time), and
every equivocation an honest node detected ends up as evidence in a committed block.

Gossip here is a stand-in for the p2p reactors: every signed message is broadcast once; a node
that has made no progress for a gossip interval tells its peers its height and re-sends its own
votes of every round of the height, every vote it holds (conflicting ones included) of the
current round, its valid and locked rounds and the proposal's proof-of-lock round, the proposal
it holds for the current round and its pending evidence; a node that hears of a peer at a lower
height sends that peer the block and commit of that height.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field, replace
from typing import Any

from consensus.driver import supersedes
from consensus.evidence import DuplicateVoteEvidence
from consensus.machine import (
    BlockPartEvent,
    ProposalEvent,
    ScheduleTimeout,
    TimeoutConfig,
    TimeoutEvent,
    VoteEvent,
)
from consensus.messages import EvidenceMessage, Message
from consensus.state import ChainState, ConsensusParams, genesis_state, validate_block
from consensus.types import (
    NIL_BLOCK_ID,
    Block,
    BlockID,
    Commit,
    PartSet,
    PartSetHeader,
    Proposal,
    Vote,
    VoteType,
    data_hash,
)
from consensus.votes import verify_commit
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.sim.node import SimNode

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


@dataclass(frozen=True)
class Faults:
    network: bool = False
    crash: bool = False
    byzantine: bool = False

    @property
    def any(self) -> bool:
        return self.network or self.crash or self.byzantine


PROFILES = {
    "none": Faults(),
    "network": Faults(network=True),
    "crash": Faults(crash=True),
    "byzantine": Faults(byzantine=True),
    "all": Faults(network=True, crash=True, byzantine=True),
}


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
    events: int = 0
    equivocations: int = 0
    evidence_committed: int = 0

    @property
    def passed(self) -> bool:
        return not self.failures


class Violation(Exception):
    """A property broke; the run stops there."""


def _powers(rng: random.Random, n: int, byzantine: int) -> list[int]:
    honest = [rng.randint(5, 20) for _ in range(n - byzantine)]
    evil = [rng.randint(1, 10) for _ in range(byzantine)]
    while evil and 3 * sum(evil) >= sum(honest) + sum(evil):
        biggest = max(range(len(evil)), key=lambda i: evil[i])
        evil[biggest] = max(1, evil[biggest] - 1)
        if all(p == 1 for p in evil) and 3 * sum(evil) >= sum(honest) + sum(evil):
            honest[0] += 5
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
        self.now = GENESIS_TIME
        self.queue: list[tuple[int, int, int, Any]] = []
        self.seq = 0
        self.digest = hashlib.sha256()
        self.events = 0
        self.signed: dict[tuple[bytes, int, int, int], tuple[Any, ...]] = {}
        self.detected: dict[tuple[bytes, int, int, int], int] = {}
        self.sent_catchups: dict[tuple[int, int], int] = {}
        self._scanned: dict[int, int] = {}
        self._included_keys: set[tuple[bytes, int, int, int]] = set()
        self._plan_faults()

    # -- set-up -------------------------------------------------------------------------------

    def _plan_faults(self) -> None:
        rng, f = self.rng, self.faults
        self.heal_at = self.now + (rng.randint(3000, 6000) * MS if f.network or f.crash else 0)
        self.base_delay = rng.randint(1, 20) * MS
        self.jitter = rng.randint(0, 40) * MS if f.network else 5 * MS
        self.p_drop = rng.uniform(0.0, 0.15) if f.network else 0.0
        self.p_dup = rng.uniform(0.0, 0.05) if f.network else 0.0
        self.skew = [rng.randint(-20, 20) * MS if f.network else 0 for _ in self.nodes]
        self.partitions: list[tuple[int, int, list[int]]] = []
        if f.network:
            for _ in range(rng.randint(1, 3)):
                start = self.now + rng.randint(0, 2500) * MS
                end = min(start + rng.randint(300, 2000) * MS, self.heal_at)
                sides = [rng.randrange(2) for _ in self.nodes]
                self.partitions.append((start, end, sides))
        if f.crash:
            for _ in range(rng.randint(1, 3)):
                victim = rng.randrange(len(self.nodes))
                at = self.now + rng.randint(0, 2500) * MS
                back = min(at + rng.randint(200, 2000) * MS, self.heal_at - 50 * MS)
                if back > at:
                    self._push(at, CRASH, victim)
                    self._push(back, RESTART, victim)
        for node in self.nodes:
            if self.rng.random() < 0.2:
                node.big_tx_heights.add(self.rng.randint(2, 6))

    def _push(self, at: int, kind: int, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (at, self.seq, kind, data))

    def _clock(self, node: SimNode) -> Any:
        return lambda: self.now + self.skew[node.index]

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

    # -- network -------------------------------------------------------------------------------

    def _cut(self, a: int, b: int) -> bool:
        return any(start <= self.now < end and sides[a] != sides[b] for start, end, sides in self.partitions)

    def _send(self, sender: int, receiver: int, message: Any) -> None:
        if self.now < self.heal_at:
            if self._cut(sender, receiver) or self.rng.random() < self.p_drop:
                return
            if self.rng.random() < self.p_dup:
                self._push(
                    self.now + self.base_delay + int(self.rng.random() * self.jitter),
                    DELIVER,
                    (sender, receiver, message),
                )
        self._push(
            self.now + self.base_delay + int(self.rng.random() * self.jitter),
            DELIVER,
            (sender, receiver, message),
        )

    def _broadcast(self, node: SimNode, message: Message) -> None:
        self._record_signed(node, message)
        peers = [p.index for p in self.nodes if p.index != node.index]
        if node.byzantine and isinstance(message, VoteEvent | ProposalEvent | BlockPartEvent):
            self._equivocate(node, message, peers)
            return
        for peer in peers:
            self._send(node.index, peer, message)

    def _record_signed(self, node: SimNode, message: Message) -> None:
        if node.byzantine:
            return
        if isinstance(message, VoteEvent) and message.vote.validator_address == node.address:
            vote = message.vote
            self._check_single_signature(
                (vote.validator_address, vote.height, vote.round, int(vote.type)), (vote.block_id,)
            )
        elif isinstance(message, ProposalEvent) and self._is_own_proposal(node, message.proposal):
            p = message.proposal
            self._check_single_signature((node.address, p.height, p.round, 0), (p.block_id, p.pol_round))

    def _is_own_proposal(self, node: SimNode, proposal: Proposal) -> bool:
        machine = node.machine
        return proposal.height == machine.height and machine.proposer() == node.address

    def _check_single_signature(self, key: tuple[bytes, int, int, int], content: tuple[Any, ...]) -> None:
        seen = self.signed.setdefault(key, content)
        if seen != content:
            raise Violation(
                f"honest double-sign by {key[0].hex()[:8]} at height {key[1]} round {key[2]} step {key[3]}"
            )

    # -- byzantine behaviour ------------------------------------------------------------------------

    def _split(self, peers: list[int]) -> tuple[list[int], list[int]]:
        shuffled = peers[:]
        self.rng.shuffle(shuffled)
        half = max(1, len(shuffled) // 2)
        group_a, group_b = shuffled[:half], shuffled[half:]
        return group_a, group_b + group_a[:1]  # one peer sees both versions

    def _equivocate(
        self, node: SimNode, message: VoteEvent | ProposalEvent | BlockPartEvent, peers: list[int]
    ) -> None:
        if isinstance(message, VoteEvent):
            vote = message.vote
            if vote.validator_address != node.address:
                for peer in peers:
                    self._send(node.index, peer, message)
                return
            other_id = (
                BlockID(sha256(b"evil %d" % vote.height), PartSetHeader(1, sha256(b"evil parts")))
                if vote.block_id.is_nil()
                else NIL_BLOCK_ID
            )
            other = replace(vote, block_id=other_id, signature=b"")
            other = other.with_signature(node.key.sign(other.sign_bytes(self.genesis.chain_id)))
            group_a, group_b = self._split(peers)
            for peer in group_a:
                self._send(node.index, peer, message)
            for peer in group_b:
                self._send(node.index, peer, VoteEvent(other))
            return
        # Own proposals: hold the proposal until its parts are all there, then send two blocks.
        if isinstance(message, ProposalEvent):
            if self._is_own_proposal(node, message.proposal):
                node.held = (message.proposal, PartSet(message.proposal.block_id.parts))
            else:
                for peer in peers:
                    self._send(node.index, peer, message)
            return
        held = node.held
        if held is None or not held[1].add(message.part):
            for peer in peers:
                self._send(node.index, peer, message)
            return
        proposal, part_set = held
        if not part_set.is_complete():
            return
        node.held = None
        parts = [BlockPartEvent(proposal.height, proposal.round, part) for part in part_set.parts()]
        block = Block.decode(part_set.data())
        txs = (*block.txs, b"evil %d" % self.rng.getrandbits(32))
        other_block = Block(
            replace(block.header, data_hash=data_hash(txs)), txs, block.evidence, block.last_commit
        )
        other_parts = PartSet.from_data(other_block.encode())
        alt = replace(proposal, block_id=BlockID(other_block.hash, other_parts.header), signature=b"")
        alt = alt.with_signature(node.key.sign(alt.sign_bytes(self.genesis.chain_id)))
        group_a, group_b = self._split(peers)
        group_b = group_b[:-1]
        for peer in group_a:
            self._send(node.index, peer, ProposalEvent(proposal))
            for part in parts:
                self._send(node.index, peer, part)
        for peer in group_b:
            self._send(node.index, peer, ProposalEvent(alt))
            for piece in other_parts.parts():
                self._send(node.index, peer, BlockPartEvent(alt.height, alt.round, piece))

    def _on_detected(self, evidence: DuplicateVoteEvidence) -> None:
        vote = evidence.vote_a
        key = (vote.validator_address, vote.height, vote.round, int(vote.type))
        self.detected.setdefault(key, self.now)

    # -- events --------------------------------------------------------------------------------

    def _deliver(self, sender: int, receiver: int, message: Any) -> None:
        node = self.nodes[receiver]
        if not node.up or node.driver is None:
            return
        if isinstance(message, CatchUp):
            if message.block.height == node.machine.height:
                node.driver.apply_decided(message.block, message.commit)
            return
        if isinstance(message, Status):
            if message.height < node.machine.height:
                self._catch_up(node, sender, message.height)
            return
        height = _height_of(message)
        if height is not None and height < node.machine.height:
            self._catch_up(node, sender, height)
        node.driver.receive(replace(message, peer=self.nodes[sender].name))

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
        for message in messages:
            self._broadcast(node, message)
        for peer in self.nodes:
            if peer is not node:
                self._send(node.index, peer.index, Status(machine.height))

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
        elif kind == TICK:
            self._tick(self.nodes[data])
        elif kind == CRASH:
            self.digest.update(repr((at, "crash", data)).encode())
            self.nodes[data].crash()
        else:
            self.digest.update(repr((at, "restart", data)).encode())
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
            self._run_until(self.heal_at, lambda: False)
            for node in self.honest:
                if not node.up:
                    self._start(node)
            base = {node.index: node.chain.height for node in self.honest}
            target = HEIGHTS_AFTER_HEAL

            def live() -> bool:
                return all(node.chain.height >= base[node.index] + target for node in self.honest)

            if not self._run_until(self.heal_at + LIVENESS_BOUND, live):
                lagging = {node.name: (base[node.index], node.chain.height) for node in self.honest}
                raise Violation(
                    f"liveness: not every honest node committed {target} heights after the heal: {lagging}"
                )
            if self.faults.byzantine:
                stop_height = min(node.chain.height for node in self.honest)
                due = sorted(key for key in self.detected if key[1] < stop_height)

                def all_included() -> bool:
                    return all(key in self._included() for key in due)

                deadline = self.now + EVIDENCE_BOUND
                if not self._run_until(deadline, all_included):
                    missing = [(k[0].hex()[:8], k[1], k[2], k[3]) for k in due if k not in self._included()]
                    raise Violation(f"evidence: equivocations detected but never committed: {missing}")
                result.equivocations = len(due)
                result.evidence_committed = len(self._included())
            self._check_agreement_and_validity()
        except Violation as exc:
            result.failures.append(str(exc))
        result.heights = min((node.chain.height for node in self.honest), default=0)
        result.events = self.events
        for node in sorted(self.honest, key=lambda n: n.index):
            self.digest.update(b"".join(b.hash for b in node.chain.blocks))
        result.digest = self.digest.hexdigest()[:16]
        self.verifier.close()
        return result

    def _included(self) -> set[tuple[bytes, int, int, int]]:
        """(validator, height, round, type) of the evidence in honest nodes' committed blocks."""
        for node in self.honest:
            for block in node.chain.blocks[self._scanned.get(node.index, 0) :]:
                for raw in block.evidence:
                    vote = DuplicateVoteEvidence.decode(raw).vote_a
                    self._included_keys.add((vote.validator_address, vote.height, vote.round, int(vote.type)))
            self._scanned[node.index] = len(node.chain.blocks)
        return self._included_keys

    def _check_agreement_and_validity(self) -> None:
        longest = max(self.honest, key=lambda n: n.chain.height).chain
        for node in self.honest:
            for block in node.chain.blocks:
                reference = longest.block_at(block.height)
                if reference is None or reference[0].hash != block.hash:
                    raise Violation(
                        f"agreement: {node.name} committed a different block at height {block.height}"
                    )
        state: ChainState = longest.genesis
        for block, commit in zip(longest.blocks, longest.commits, strict=True):
            try:
                validate_block(state, block, self.check)
                verify_commit(
                    state.chain_id, state.validators, commit.block_id, block.height, commit, self.check
                )
            except ValueError as exc:
                raise Violation(f"validity: block {block.height}: {exc}") from exc
            state = longest.states[block.height - longest.genesis.initial_height]


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
