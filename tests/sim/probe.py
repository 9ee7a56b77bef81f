"""The simulator alone against a mutant: 300 seeds (4 validators, `SIM_PROBE_FAULTS`, default
all) that must keep every property. Not part of `make test` (its name is not test_*); the
mutation tester runs it as its only stage to see which mutants the simulator catches:

    python -m tests.mutation consensus/rules.py --fast tests/sim/probe.py --slow
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat

from tests.sim.__main__ import _run

SEEDS = 300
BATCH = 20


def test_300_seeds_keep_every_property() -> None:
    profile = os.environ.get("SIM_PROBE_FAULTS", "all")
    with ProcessPoolExecutor(max_workers=2) as pool:
        for first in range(1, SEEDS + 1, BATCH):
            seeds = range(first, min(first + BATCH, SEEDS + 1))
            results = pool.map(_run, seeds, repeat(4), repeat(profile), chunksize=1)
            failed = [f"seed {r.seed}: {'; '.join(r.failures)}" for r in results if not r.passed]
            assert not failed, failed[0]
