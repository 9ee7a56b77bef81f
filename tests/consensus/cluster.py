"""A cluster of real consensus machines on a network the test drives by hand, for directed
scenarios: nothing is delivered unless the test says so, no timer fires unless the test fires
it, and each node's own signed messages are fed back to it at once (as the driver does).

Blocks get letters in the order they are first proposed (or forged), so a scenario asserts the
exact votes of a node as `[("prevote", 0, "A"), ("precommit", 0, "A"), ("prevote", 1, "nil")]`.
A node's signatures go through a double-sign guard: an honest node that signs two different
votes for one (height, round, type) fails the test at once.
"""

from __future__ import annotations

import string
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from consensus.machine import (
    BadMessage,
    BlockPartEvent,
    CommittedEvent,
    ConsensusMachine,
    Decide,
    Effect,
    Equivocation,
    Event,
    ProposalEvent,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    Step,
    StepChanged,
    TimeoutConfig,
    TimeoutEvent,
    VoteEvent,
)
from consensus.state import ChainState, ConsensusParams
from consensus.types import (
    EMPTY_COMMIT,
    NIL_BLOCK_ID,
    Block,
    BlockID,
    Commit,
    PartSet,
    Proposal,
    Vote,
    VoteType,
)
from primitives.batch_verify import BatchVerifier
from primitives.keys import PrivateKey
from tests.consensus.harness import FAST, GENESIS_TIME, ToyApp, keys, make_genesis, next_state

MS = 1_000_000
PREVOTE = VoteType.PREVOTE
PRECOMMIT = VoteType.PRECOMMIT
NIL = "nil"


@dataclass(frozen=True, slots=True)
class Handled:
    """One event a member's machine handled: at local time `now`, returning `effects`."""

    now: int
    event: Event
    effects: list[Effect]


@dataclass
class Member:
    """One validator of the cluster: its machine and what it has done."""

    index: int
    key: PrivateKey
    machine: ConsensusMachine
    app: ToyApp
    sent: list[VoteEvent | ProposalEvent | BlockPartEvent] = field(default_factory=list)
    timeouts: dict[tuple[int, int, Step], int] = field(default_factory=dict)
    decided: list[Decide] = field(default_factory=list)
    equivocations: list[Equivocation] = field(default_factory=list)
    bad: list[BadMessage] = field(default_factory=list)
    handled: list[Handled] = field(default_factory=list)
    """Every event this member's machine handled, in order, with its local time and effects."""
    clock_offset: int = 0
    """Added to the cluster's clock for this member's machine (negative: its clock is behind)."""

    @property
    def name(self) -> str:
        return f"v{self.index}"

    @property
    def address(self) -> bytes:
        return self.key.address.raw


class Cluster:
    """`n` validators of the given powers (equal by default) at height 1 of one chain; `timeouts`
    and `params` (the genesis consensus parameters) default to the harness's."""

    def __init__(
        self,
        n: int = 4,
        powers: Sequence[int] | None = None,
        *,
        timeouts: TimeoutConfig = FAST,
        params: ConsensusParams | None = None,
    ) -> None:
        powers = list(powers) if powers is not None else [10] * n
        self.verifier = BatchVerifier(workers=1)
        self.genesis = make_genesis(list(zip(keys(n), powers, strict=True)), chain_id="scenario-chain")
        if params is not None:
            self.genesis = replace(self.genesis, params=params)
        self.chain_id = self.genesis.chain_id
        self.now = GENESIS_TIME
        self.labels: dict[bytes, str] = {}
        self.blocks: dict[str, tuple[Block, PartSet]] = {}
        by_address = {k.address.raw: k for k in keys(n)}
        self.members = []
        for index, validator in enumerate(self.genesis.validators.validators):
            key = by_address[validator.address]
            app = ToyApp(pending=[b"tx of %s" % key.address.raw.hex().encode()])
            machine = ConsensusMachine(
                self.genesis, key.address.raw, timeouts, app, self.verifier.verify_batch
            )
            self.members.append(Member(index, key, machine, app))
        self.in_power_order = [next(m for m in self.members if m.address == k.address.raw) for k in keys(n)]
        """The members in the order of `powers`."""

    def close(self) -> None:
        self.verifier.close()

    # -- who is who -------------------------------------------------------------------------------

    def proposer(self, round_: int, height: int = 1) -> Member:
        """The proposer of (height, round) on this cluster's chain (heights > 1 need the state of a
        member at that height)."""
        state = self.genesis if height == 1 else self._state_at(height)
        validators = state.validators.increment_proposer_priority(round_) if round_ else state.validators
        address = validators.proposer.address
        return next(m for m in self.members if m.address == address)

    def others(self, *excluded: Member) -> list[Member]:
        return [m for m in self.members if m not in excluded]

    def _state_at(self, height: int) -> ChainState:
        for member in self.members:
            if member.machine.height == height:
                return member.machine.state
        raise AssertionError(f"no member is at height {height}")

    # -- running ------------------------------------------------------------------------------

    def start(self) -> None:
        """Every member enters height 1 and, on its commit timeout, round 0."""
        self.join()
        for member in self.members:
            self.timeout(member, Step.NEW_HEIGHT)

    def join(self) -> None:
        """Every member enters height 1 and waits in NEW_HEIGHT for its commit timeout (which the
        test fires, per member, with `timeout`)."""
        for member in self.members:
            self._handle(member, CommittedEvent(self.genesis, None))

    def timeout(self, member: Member, step: Step) -> None:
        """Fire `member`'s timeout of `step` for its current height and round; it must have been
        scheduled."""
        key = (member.machine.height, member.machine.round, step)
        if member.machine.step != step:
            raise AssertionError(f"{member.name} is at step {member.machine.step.name}, not {step.name}")
        if key not in member.timeouts:
            raise AssertionError(f"{member.name} has no {step.name} timeout for {key[:2]}: {member.timeouts}")
        self.now += member.timeouts.pop(key)
        self._handle(member, TimeoutEvent(*key))

    def deliver(self, messages: Iterable[Event], to: Iterable[Member]) -> None:
        """Deliver each message to each receiver, in order (a receiver's own messages are skipped:
        it already has them)."""
        messages = list(messages)
        for member in to:
            for message in messages:
                if message in member.sent:
                    continue
                self._handle(member, message)

    def proposal(self, sender: Member, round_: int) -> list[Event]:
        """The proposal `sender` signed for `round_` and its block parts."""
        found: list[Event] = [
            m
            for m in sender.sent
            if (isinstance(m, ProposalEvent) and m.proposal.round == round_)
            or (isinstance(m, BlockPartEvent) and m.round == round_)
        ]
        if not found:
            raise AssertionError(f"{sender.name} proposed nothing in round {round_}")
        return found

    def proposed(self, sender: Member, round_: int) -> Proposal:
        """The proposal itself that `sender` signed for `round_`."""
        first = self.proposal(sender, round_)[0]
        assert isinstance(first, ProposalEvent)
        return first.proposal

    def votes(self, vote_type: VoteType, round_: int, senders: Iterable[Member]) -> list[Event]:
        """The votes of `vote_type` each sender signed in `round_` (each must have signed one)."""
        out: list[Event] = []
        for sender in senders:
            found = [
                m
                for m in sender.sent
                if isinstance(m, VoteEvent) and m.vote.type == vote_type and m.vote.round == round_
            ]
            if not found:
                raise AssertionError(f"{sender.name} signed no {vote_type.name} in round {round_}")
            out.extend(found)
        return out

    def polka_without_the_block(self, late: Member) -> None:
        """Round 0, after `start`: the proposal reaches everyone but `late`, every prevote reaches
        everyone, and `late` (a polka for a block it lacks) precommits nil on its prevote
        timeout; the others lock the block and precommit it."""
        proposer = self.proposer(0)
        self.deliver(self.proposal(proposer, 0), to=self.others(proposer, late))
        self.timeout(late, Step.PROPOSE)
        self.deliver(self.votes(VoteType.PREVOTE, 0, self.members), to=self.members)
        self.timeout(late, Step.PREVOTE_WAIT)

    # -- forging (what a byzantine validator can sign) ---------------------------------------------

    def forge_block(self, member: Member, txs: Sequence[bytes]) -> str:
        """A block `member` could propose at its height, with `txs`; returns its letter."""
        machine = member.machine
        block = machine.state.make_block(list(txs), [], _last_commit(machine), member.address)
        parts = PartSet.from_data(block.encode())
        return self._label(block, parts)

    def forge_proposal(self, member: Member, round_: int, label: str, pol_round: int) -> list[Event]:
        """`member`'s signed proposal of the block `label` in `round_` claiming `pol_round`, with
        its parts (nothing is checked: a byzantine proposer signs what it likes)."""
        block, parts = self.blocks[label]
        proposal = Proposal(1, round_, pol_round, BlockID(block.hash, parts.header), self.now)
        proposal = proposal.with_signature(member.key.sign(proposal.sign_bytes(self.chain_id)))
        return [
            ProposalEvent(proposal),
            *(BlockPartEvent(proposal.height, round_, part) for part in parts.parts()),
        ]

    def forge_vote(self, member: Member, vote_type: VoteType, round_: int, label: str) -> VoteEvent:
        """`member`'s signed vote for block `label` (or "nil") at height 1."""
        block_id = NIL_BLOCK_ID if label == NIL else self.block_id(label)
        vote = Vote(vote_type, 1, round_, block_id, self.now, member.address, member.index)
        return VoteEvent(vote.with_signature(member.key.sign(vote.sign_bytes(self.chain_id))))

    def add_block(self, block: Block) -> str:
        """Give any block (e.g. one a byzantine proposer built by hand) a letter, for
        `forge_proposal` and `forge_vote`."""
        return self._label(block, PartSet.from_data(block.encode()))

    def block_id(self, label: str) -> BlockID:
        block, parts = self.blocks[label]
        return BlockID(block.hash, parts.header)

    # -- what happened ------------------------------------------------------------------------

    def signed(self, member: Member) -> list[tuple[str, int, str]]:
        """`member`'s votes in signing order, as (type, round, block letter or "nil")."""
        return [
            (m.vote.type.name.lower(), m.vote.round, self.name_of(m.vote.block_id))
            for m in member.sent
            if isinstance(m, VoteEvent)
        ]

    def name_of(self, block_id: BlockID) -> str:
        return NIL if block_id.is_nil() else self.labels.get(block_id.hash, "?")

    def decision(self, member: Member) -> str | None:
        """The letter of the block `member` decided at height 1, if any."""
        return self.labels[member.decided[0].block.hash] if member.decided else None

    def lock(self, member: Member) -> tuple[int, str | None]:
        machine = member.machine
        locked = machine.locked_block
        return machine.locked_round, None if locked is None else self.labels.get(locked.hash, "?")

    def valid(self, member: Member) -> tuple[int, str | None]:
        machine = member.machine
        valid = machine.valid_block
        return machine.valid_round, None if valid is None else self.labels.get(valid.hash, "?")

    # -- effects ------------------------------------------------------------------------------

    def _label(self, block: Block, parts: PartSet) -> str:
        if block.hash not in self.labels:
            label = string.ascii_uppercase[len(self.labels)]
            self.labels[block.hash] = label
            self.blocks[label] = (block, parts)
        return self.labels[block.hash]

    def _handle(self, member: Member, first: Event) -> None:
        queue: deque[Event] = deque([first])
        while queue:
            event = queue.popleft()
            self.now += MS
            now = self.now + member.clock_offset
            effects = member.machine.handle(event, now)
            member.handled.append(Handled(now, event, effects))
            queue.extend(self._effects(member, effects))

    def _effects(self, member: Member, effects: list[Effect]) -> list[Event]:
        own: list[Event] = []
        for effect in effects:
            if isinstance(effect, SignVote):
                vote = effect.vote
                signed = VoteEvent(vote.with_signature(member.key.sign(vote.sign_bytes(self.chain_id))))
                self._guard(member, signed.vote)
                member.sent.append(signed)
                own.append(signed)
            elif isinstance(effect, SignProposal):
                proposal = effect.proposal
                proposal = proposal.with_signature(member.key.sign(proposal.sign_bytes(self.chain_id)))
                self._label(Block.decode(effect.parts.data()), effect.parts)
                messages: list[VoteEvent | ProposalEvent | BlockPartEvent] = [ProposalEvent(proposal)]
                messages.extend(
                    BlockPartEvent(proposal.height, proposal.round, p) for p in effect.parts.parts()
                )
                member.sent.extend(messages)
                own.extend(messages)
            elif isinstance(effect, ScheduleTimeout):
                member.timeouts[(effect.height, effect.round, effect.step)] = effect.duration
            elif isinstance(effect, Decide):
                member.decided.append(effect)
                own.append(CommittedEvent(next_state(member.machine.state, effect), effect.commit))
            elif isinstance(effect, Equivocation):
                member.equivocations.append(effect)
            elif isinstance(effect, BadMessage):
                member.bad.append(effect)
            else:
                assert isinstance(effect, StepChanged)
        return own

    def _guard(self, member: Member, vote: Vote) -> None:
        for message in member.sent:
            if isinstance(message, VoteEvent):
                old = message.vote
                same_step = (old.height, old.round, old.type) == (vote.height, vote.round, vote.type)
                if same_step and old.block_id != vote.block_id:
                    raise AssertionError(f"{member.name} double-signed {vote.type.name} {vote.round}")


def _last_commit(machine: ConsensusMachine) -> Commit:
    return EMPTY_COMMIT if machine.last_commit is None else machine.last_commit.make_commit()
