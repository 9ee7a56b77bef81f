"""Command line of the simulator.

    python -m tests.sim --validators 7 --seeds 1000 --first-seed 1 --faults all [--jobs 2]

prints `N seeds passed` and exits 0, or prints each failing seed with the property it broke and
exits 1. `--faults` is one of none, network, crash, byzantine, all. `--digest` also prints each
seed's trace digest (two runs of one seed print the same digest).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from itertools import repeat

from tests.sim.run import PROFILES, Result, run_seed


def _run(seed: int, validators: int, faults: str) -> Result:
    """One seed; an exception in the code under test is that seed's failure, not the run's end."""
    logging.disable(logging.CRITICAL)
    try:
        return run_seed(seed, validators, faults)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        failure = f"crashed: {type(exc).__name__}: {exc} at {where.filename}:{where.lineno}"
        return Result(seed, validators, faults, failures=[failure])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--faults", choices=sorted(PROFILES), default="all")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--digest", action="store_true", help="print every seed's trace digest")
    args = parser.parse_args(argv)
    if args.validators < 1:
        parser.error("--validators must be at least 1")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    started = time.monotonic()
    failed: list[Result] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for result in pool.map(_run, seeds, repeat(args.validators), repeat(args.faults), chunksize=8):
            if args.digest:
                print(f"seed {result.seed}: digest {result.digest} heights {result.heights}")
            if not result.passed:
                failed.append(result)
                print(
                    f"seed {result.seed} FAILED ({result.validators} validators, {result.profile}): "
                    f"{'; '.join(result.failures)}",
                    flush=True,
                )
    elapsed = time.monotonic() - started
    if failed:
        print(f"{len(failed)} of {len(seeds)} seeds failed ({elapsed:.0f} s)")
        return 1
    print(f"{len(seeds)} seeds passed ({args.validators} validators, faults {args.faults}, {elapsed:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
