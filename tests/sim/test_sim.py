"""The simulator in the suite: seeds across the fault profiles (the short form of the 10,000-seed
runs), reproducible digests, checks that each property check really fails when its property
breaks, and the known broken vote rules caught within 300 seeds."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from itertools import repeat

import pytest

from consensus import rules
from consensus.types import NIL_BLOCK_ID, Block, BlockID, PartSet, PartSetHeader, Proposal, Vote, VoteType
from consensus.validators import ValidatorSet
from primitives.batch_verify import BatchVerifier
from tests.sim import mutants
from tests.sim.__main__ import _run
from tests.sim.byzantine import Behaviour
from tests.sim.checks import Monitor
from tests.sim.node import SimNode
from tests.sim.run import Result, Simulation, Violation, run_seed

# (validators, profile, seeds): the short form of `python -m tests.sim`
PLAN = [
    (4, "none", 8),
    (4, "network", 16),
    (4, "crash", 16),
    (4, "byzantine", 24),
    (4, "split", 24),
    (4, "all", 48),
    (7, "all", 16),
    (10, "all", 6),
]


SIM = [sys.executable, "-m", "tests.sim"]


def run_seeds(validators: int, profile: str, seeds: range, mutant: str | None = None) -> list[Result]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(_run, seeds, repeat(validators), repeat(profile), repeat(mutant), chunksize=2))


@pytest.fixture(autouse=True)
def quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize(("validators", "profile", "seeds"), PLAN)
def test_seeds_keep_every_property(validators: int, profile: str, seeds: int) -> None:
    first = 1000 * validators
    results = run_seeds(validators, profile, range(first, first + seeds))
    failed = [f"seed {r.seed}: {'; '.join(r.failures)}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert sum(r.heights for r in results) / len(results) >= 20, "runs must pass 20 heights on average"
    assert all(r.steps_checked > r.events // 4 for r in results), "the monitor must see every step"
    assert sum(r.rounds for r in results) > 0
    stats: dict[str, int] = {}
    for r in results:
        for name, count in r.stats.items():
            stats[name] = stats.get(name, 0) + count
    if profile in ("byzantine", "all"):
        assert sum(r.equivocations for r in results) > 0, "no equivocation was ever detected"
        assert sum(r.evidence_committed for r in results) > 0
    if profile == "all" and validators == 4:
        for behaviour in Behaviour:
            assert stats.get(behaviour.value, 0) > 0, (behaviour, stats)
    if profile in ("split", "all"):
        for name in ("split proposals", "split prevotes", "split precommits", "isolations"):
            assert stats.get(name, 0) > 0, (name, stats)


@pytest.mark.parametrize("mutant", sorted(mutants.MUTANTS))
def test_the_simulator_catches_a_broken_vote_rule_within_300_seeds(mutant: str) -> None:
    """The issue's two rule-breaking machines: the seeds find each (at once, in practice)."""
    caught: list[str] = []
    for first in range(1, 301, 10):
        results = run_seeds(4, "all", range(first, first + 10), mutant)
        caught = [f for r in results for f in r.failures]
        if caught:
            break
    assert caught, f"{mutant} survived 300 seeds"
    assert any(f.startswith(("vote rule", "lock rule", "agreement", "proof of lock")) for f in caught), caught


def test_a_mutant_is_patched_in_for_its_run_only() -> None:
    real = rules.prevote
    mutants.apply("pol-without-polka")
    assert rules.prevote is not real
    mutants.apply(None)
    assert rules.prevote is real
    _run(3, 4, "none", "prevote-ignores-lock")
    assert rules.prevote is real


def test_same_seed_same_digest() -> None:
    first = run_seed(7, 4, "all")
    again = run_seed(7, 4, "all")
    other = run_seed(8, 4, "all")
    assert first.digest == again.digest and first.events == again.events
    assert first.digest != other.digest


def test_same_seed_same_digest_in_processes_with_other_hash_seeds() -> None:
    """Nothing in a run may depend on Python's per-process hash randomisation."""
    digests = set()
    for hash_seed in ("1", "2", "3"):
        out = subprocess.run(
            [*SIM, "--validators", "4", "--seeds", "2", "--first-seed", "5", "--jobs", "1", "--digest"],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
        )
        digests.add(tuple(line for line in out.stdout.splitlines() if "digest" in line))
    assert len(digests) == 1, digests


def test_lost_liveness_is_reported() -> None:
    sim = Simulation(3, 4, "none")
    sim._send = lambda sender, receiver, message: None  # type: ignore[method-assign]
    result = sim.run()
    assert any(f.startswith("liveness") for f in result.failures)


def test_command_line() -> None:
    ok = subprocess.run(
        [*SIM, "--validators", "4", "--seeds", "4", "--faults", "all", "--jobs", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "4 seeds passed" in ok.stdout and "heights" in ok.stdout
    caught = subprocess.run(
        [*SIM, "--seeds", "40", "--mutant", "prevote-ignores-lock", "--stop-at-first", "--jobs", "1"],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert caught.returncode == 1 and "FAILED" in caught.stdout, caught.stdout + caught.stderr


# -- the monitor's checks fail when their property breaks -----------------------------------


def block_id(tag: bytes) -> BlockID:
    return BlockID(tag * 32, PartSetHeader(1, tag * 32))


A, B = block_id(b"\x0a"), block_id(b"\x0b")


@pytest.fixture
def monitor() -> Iterator[tuple[Monitor, ValidatorSet]]:
    verifier = BatchVerifier(workers=1)
    validators = ValidatorSet.genesis([(bytes([i + 1]) * 32, 10) for i in range(4)])
    yield Monitor(verifier.verify_batch), validators
    verifier.close()


def vote(validators: ValidatorSet, index: int, kind: VoteType, round_: int, target: BlockID) -> Vote:
    address = validators.validators[index].address
    return Vote(kind, 1, round_, target, 0, address, index)


def polka(m: Monitor, validators: ValidatorSet, round_: int, target: BlockID, voters: int = 3) -> None:
    for index in range(voters):
        m.seen_prevote(vote(validators, index, VoteType.PREVOTE, round_, target))


def test_an_honest_double_sign_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    first = vote(vals, 0, VoteType.PREVOTE, 0, NIL_BLOCK_ID)
    m.honest_vote(first, vals)
    m.honest_vote(first, vals)  # the same vote again is fine
    with pytest.raises(Violation, match="double-sign"):
        m.honest_vote(replace(first, timestamp=5, block_id=A), vals)


def test_a_precommit_without_a_polka_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    polka(m, vals, 0, A, voters=2)
    with pytest.raises(Violation, match="lock rule"):
        m.honest_vote(vote(vals, 0, VoteType.PRECOMMIT, 0, A), vals)
    polka(m, vals, 0, A, voters=3)
    m.honest_vote(vote(vals, 1, VoteType.PRECOMMIT, 0, A), vals)


def propose(m: Monitor, round_: int, target: BlockID, pol_round: int) -> None:
    m.seen_proposal(Proposal(1, round_, pol_round, target, 0))


def test_a_prevote_against_the_lock_without_a_pol_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    propose(m, 0, A, -1)
    polka(m, vals, 0, A)
    m.honest_vote(vote(vals, 0, VoteType.PRECOMMIT, 0, A), vals)  # locked on A at round 0
    propose(m, 1, B, -1)
    with pytest.raises(Violation, match="lock rule"):
        m.honest_vote(vote(vals, 0, VoteType.PREVOTE, 1, B), vals)
    m.honest_vote(vote(vals, 1, VoteType.PREVOTE, 1, B), vals)  # validator 1 is not locked


def test_a_prevote_on_a_forged_pol_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    propose(m, 2, B, 1)  # claims round 1, where B has no +2/3
    polka(m, vals, 1, B, voters=2)
    with pytest.raises(Violation, match="lock rule"):
        m.honest_vote(vote(vals, 0, VoteType.PREVOTE, 2, B), vals)
    polka(m, vals, 1, B, voters=3)
    m.honest_vote(vote(vals, 1, VoteType.PREVOTE, 2, B), vals)


def test_a_pol_below_the_lock_does_not_unlock(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    polka(m, vals, 0, B)
    polka(m, vals, 1, A)
    m.honest_vote(vote(vals, 0, VoteType.PRECOMMIT, 1, A), vals)  # locked on A at round 1
    propose(m, 2, B, 0)
    with pytest.raises(Violation, match="lock rule"):
        m.honest_vote(vote(vals, 0, VoteType.PREVOTE, 2, B), vals)


def test_a_prevote_for_a_block_nobody_proposed_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    with pytest.raises(Violation, match="lock rule"):
        m.honest_vote(vote(vals, 0, VoteType.PREVOTE, 0, A), vals)


def test_an_honest_proposal_with_a_false_pol_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    m.validators[1] = vals
    with pytest.raises(Violation, match="proof of lock"):
        m.honest_proposal(b"p" * 20, Proposal(1, 1, 0, A, 0))


def test_an_honest_proposal_below_its_lock_is_reported(monitor: tuple[Monitor, ValidatorSet]) -> None:
    m, vals = monitor
    proposer = vals.validators[0].address
    polka(m, vals, 0, B)
    polka(m, vals, 1, A)
    m.honest_vote(vote(vals, 0, VoteType.PRECOMMIT, 1, A), vals)  # locked on A at round 1
    with pytest.raises(Violation, match="valid value"):
        m.honest_proposal(proposer, Proposal(1, 2, 0, B, 0))  # a true POL, but older than the lock
    with pytest.raises(Violation, match="valid value"):
        m.honest_proposal(proposer, Proposal(1, 3, -1, A, 0))  # its locked block, but no round
    m.honest_proposal(proposer, Proposal(1, 4, 1, A, 0))  # its valid value: A of round 1


def test_disagreement_is_reported() -> None:
    sim = Simulation(2, 4, "none")
    result = sim.run()
    assert result.passed
    chain = sim.honest[1].chain
    block, commit = chain.blocks[3], chain.commits[3]
    other = replace(block, header=replace(block.header, app_hash=b"\x00" * 32))
    with pytest.raises(Violation, match="agreement"):
        sim.monitor.committed("n1", chain.states[2], other, commit)


def test_an_invalid_committed_block_is_reported() -> None:
    sim = Simulation(2, 4, "none")
    sim.run()
    chain = sim.honest[1].chain
    fresh = Monitor(sim.check)
    block, commit = chain.blocks[3], chain.commits[3]
    with pytest.raises(Violation, match="validity"):
        fresh.committed("n1", chain.states[1], block, commit)  # the state of the wrong height


def locked_simulation(precommit_rounds: tuple[int, ...]) -> tuple[Simulation, SimNode, Block]:
    """A short run, then its first honest node shown by its signed votes to have precommitted
    one of the chain's blocks in each of `precommit_rounds` of its current height, and holding
    that lock and valid value in the last of them."""
    sim = Simulation(2, 4, "none")
    assert sim.run().passed
    node = sim.honest[0]
    machine = node.machine
    block = node.chain.blocks[1]
    target = id_of(block)
    validators, address = machine.votes.validators, machine.address
    assert address is not None
    own = validators.index_of(address)
    assert own is not None
    for round_ in precommit_rounds:
        everyone_prevotes(sim, node, round_, target)
        precommit = Vote(VoteType.PRECOMMIT, machine.height, round_, target, 0, address, own)
        sim.monitor.honest_vote(precommit, validators)
    machine.round = max(precommit_rounds)
    hold(node, machine.round, block)
    return sim, node, block


def id_of(block: Block) -> BlockID:
    return BlockID(block.hash, PartSetHeader(1, block.hash))


def everyone_prevotes(sim: Simulation, node: SimNode, round_: int, target: BlockID) -> None:
    """The monitor sees every validator of `node`'s height prevote `target` at `round_`."""
    machine = node.machine
    for index, validator in enumerate(machine.votes.validators.validators):
        sim.monitor.seen_prevote(
            Vote(VoteType.PREVOTE, machine.height, round_, target, 0, validator.address, index)
        )


def hold(node: SimNode, locked_round: int, block: Block | None) -> None:
    """Give `node`'s machine the lock and the valid value of `locked_round` on `block`."""
    machine = node.machine
    machine.locked_round, machine.locked_block = locked_round, block
    machine.valid_round, machine.valid_block = locked_round, block
    machine.valid_parts = None if block is None else PartSet.from_data(block.encode())


def test_a_lock_that_goes_back_is_reported() -> None:
    sim, node, block = locked_simulation((1, 2))
    machine = node.machine
    sim.monitor.after_event(node.name, machine)
    hold(node, 1, block)
    with pytest.raises(Violation, match="lock monotonicity"):
        sim.monitor.after_event(node.name, machine)
    before = sim.monitor.forget(node.name)
    hold(node, 0, block)
    with pytest.raises(Violation, match="lock after restart"):
        sim.monitor.after_restart(node.name, machine, replace(before, locked_round=3) if before else None)


def test_a_lock_other_than_the_last_precommit_is_reported() -> None:
    sim, node, block = locked_simulation((1, 2))
    machine = node.machine
    hold(node, 1, block)  # relocked at round 2, but the round kept
    with pytest.raises(Violation, match=r"holds lock 1/.* last precommit for a block is 2/"):
        sim.monitor.after_event(node.name, machine)
    hold(node, 2, block)
    sim.monitor.after_event(node.name, machine)


def test_a_valid_value_the_rules_do_not_give_is_reported() -> None:
    sim, node, block = locked_simulation((1, 2))
    machine = node.machine
    sim.monitor.after_event(node.name, machine)
    other_parts = PartSet.from_data(node.chain.blocks[2].encode())
    everyone_prevotes(sim, node, 3, id_of(block))
    cases: list[tuple[str, str, object]] = [
        ("below its locked round", "valid_round", 1),
        (r"no \+2/3 prevotes", "valid_round", 4),
        ("above its round 2", "valid_round", 3),
        ("do not carry the valid block", "valid_parts", other_parts),
        ("without a valid round", "valid_round", -1),
        ("no valid block or parts", "valid_parts", None),
    ]
    for message, attribute, value in cases:
        saved = getattr(machine, attribute)
        setattr(machine, attribute, value)
        with pytest.raises(Violation, match=message):
            sim.monitor.after_event(node.name, machine)
        setattr(machine, attribute, saved)
    sim.monitor.after_event(node.name, machine)


def test_a_proposal_held_with_a_polka_must_be_the_valid_value() -> None:
    sim, node, _ = locked_simulation((1, 2))  # valid value: the block of round 2
    machine = node.machine
    other = node.chain.blocks[2]
    other_id = id_of(other)
    machine.proposal, machine.proposal_block = Proposal(machine.height, 2, -1, other_id, 0), other
    sim.monitor.after_event(node.name, machine)  # no +2/3 prevotes for it yet
    prevotes = machine.votes.prevotes(2)
    for index, validator in enumerate(machine.votes.validators.validators):
        prevotes.add(
            Vote(VoteType.PREVOTE, machine.height, 2, other_id, 0, validator.address, index), verified=True
        )
    with pytest.raises(Violation, match="not its proposal of round 2"):
        sim.monitor.after_event(node.name, machine)
