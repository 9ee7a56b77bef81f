"""The simulator in the suite: hundreds of seeds across the fault profiles, reproducible digests,
and checks that each property check really fails when its property breaks."""

from __future__ import annotations

import logging
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from itertools import repeat

import pytest

from consensus.machine import VoteEvent
from consensus.types import NIL_BLOCK_ID, BlockID, PartSetHeader, Vote, VoteType
from tests.sim.__main__ import _run
from tests.sim.run import Simulation, Violation, run_seed

# (validators, profile, seeds): 620 seeds in all
PLAN = [
    (4, "none", 60),
    (4, "network", 100),
    (4, "crash", 100),
    (4, "byzantine", 100),
    (4, "all", 150),
    (7, "all", 80),
    (10, "all", 30),
]


@pytest.mark.parametrize(("validators", "profile", "seeds"), PLAN)
def test_seeds_keep_every_property(validators: int, profile: str, seeds: int) -> None:
    first = 1000 * validators
    with ProcessPoolExecutor(max_workers=2) as pool:
        results = list(
            pool.map(_run, range(first, first + seeds), repeat(validators), repeat(profile), chunksize=4)
        )
    failed = [f"seed {r.seed}: {'; '.join(r.failures)}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert all(r.heights >= 3 for r in results)
    if profile in ("byzantine", "all"):
        assert sum(r.equivocations for r in results) > 0, "no equivocation was ever detected"
        assert sum(r.evidence_committed for r in results) > 0


def test_same_seed_same_digest() -> None:
    logging.disable(logging.CRITICAL)
    try:
        first = run_seed(7, 4, "all")
        again = run_seed(7, 4, "all")
        other = run_seed(8, 4, "all")
    finally:
        logging.disable(logging.NOTSET)
    assert first.digest == again.digest and first.events == again.events
    assert first.digest != other.digest


def test_double_sign_by_an_honest_node_is_reported() -> None:
    sim = Simulation(1, 4, "none")
    node = sim.honest[0]
    sim._start(node)
    block_id = BlockID(b"\x01" * 32, PartSetHeader(1, b"\x02" * 32))
    vote = VoteEvent(Vote(VoteType.PREVOTE, 1, 0, block_id, 0, node.address, 0))
    sim._record_signed(node, vote)
    sim._record_signed(node, vote)  # the same vote again is fine
    with pytest.raises(Violation, match="double-sign"):
        sim._record_signed(node, VoteEvent(replace(vote.vote, block_id=NIL_BLOCK_ID)))


def test_disagreement_is_reported() -> None:
    sim = Simulation(2, 4, "none")
    result = sim.run()
    assert result.passed
    victim = sim.honest[1].chain
    block = victim.blocks[0]
    victim.blocks[0] = replace(block, header=replace(block.header, app_hash=b"\x00" * 32))
    with pytest.raises(Violation, match="agreement"):
        sim._check_agreement_and_validity()


def test_lost_liveness_is_reported() -> None:
    sim = Simulation(3, 4, "none")
    sim._send = lambda sender, receiver, message: None  # type: ignore[method-assign]
    result = sim.run()
    assert any(f.startswith("liveness") for f in result.failures)


def test_command_line() -> None:
    ok = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.sim",
            "--validators",
            "4",
            "--seeds",
            "4",
            "--faults",
            "all",
            "--jobs",
            "1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "4 seeds passed" in ok.stdout
