"""Command line of the simulator.

    python -m tests.sim --validators 7 --seeds 1000 --first-seed 1 --faults all [--jobs 2]

prints `N seeds passed` with the run's figures (seeds per second, heights and rounds per seed)
and exits 0, or prints each failing seed with the property it broke and exits 1. `--faults` is
one of none, network, crash, byzantine, split (the search mode: split prevotes and precommits,
isolation after commit), all. `--digest` also prints each seed's trace digest (two runs of one
seed print the same digest). `--mutant NAME` runs a known rule-breaking change of the vote rules
(tests/sim/mutants.py) to show that the simulator catches it; `--stop-at-first` ends the run at
the first failing seed; `--progress N` prints the running figures every N seeds (for long runs).
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

from tests.sim import mutants
from tests.sim.run import PROFILES, Result, run_seed


def _run(seed: int, validators: int, faults: str, mutant: str | None = None) -> Result:
    """One seed; an exception in the code under test is that seed's failure, not the run's end."""
    logging.disable(logging.CRITICAL)
    mutants.apply(mutant)
    try:
        return run_seed(seed, validators, faults)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        failure = f"crashed: {type(exc).__name__}: {exc} at {where.filename}:{where.lineno}"
        return Result(seed, validators, faults, failures=[failure])
    finally:
        mutants.apply(None)


def summary(results: list[Result], elapsed: float) -> str:
    """Seeds per second and the average heights and rounds of a run."""
    count = max(1, len(results))
    heights = sum(r.heights for r in results) / count
    rounds = sum(r.rounds for r in results) / count
    top = max((r.max_round for r in results), default=0)
    return (
        f"{len(results) / max(elapsed, 1e-9):.2f} seeds/s; per seed {heights:.1f} heights, "
        f"{rounds:.1f} rounds past round 0 (highest round {top}), "
        f"{sum(r.steps_checked for r in results) / count:.0f} steps checked"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.sim", description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--first-seed", type=int, default=1)
    parser.add_argument("--faults", choices=sorted(PROFILES), default="all")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--digest", action="store_true", help="print every seed's trace digest")
    parser.add_argument("--mutant", choices=sorted(mutants.MUTANTS), help="run a known broken vote rule")
    parser.add_argument("--stop-at-first", action="store_true", help="stop at the first failing seed")
    parser.add_argument("--progress", type=int, default=0, metavar="N", help="print figures every N seeds")
    args = parser.parse_args(argv)
    if args.validators < 1:
        parser.error("--validators must be at least 1")
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    started = time.monotonic()
    results: list[Result] = []
    failed: list[Result] = []
    chunk = 1 if args.stop_at_first else 4
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        runs = pool.map(
            _run, seeds, repeat(args.validators), repeat(args.faults), repeat(args.mutant), chunksize=chunk
        )
        for result in runs:
            results.append(result)
            if args.digest:
                print(f"seed {result.seed}: digest {result.digest} heights {result.heights}")
            if not result.passed:
                failed.append(result)
                print(
                    f"seed {result.seed} FAILED ({result.validators} validators, {result.profile}): "
                    f"{'; '.join(result.failures)}",
                    flush=True,
                )
                if args.stop_at_first:
                    pool.shutdown(cancel_futures=True)
                    break
            if args.progress > 0 and len(results) % args.progress == 0:
                so_far = time.monotonic() - started
                print(
                    f"after {len(results)} seeds ({len(failed)} failed, {so_far:.0f} s): "
                    f"{summary(results, so_far)}",
                    flush=True,
                )
    elapsed = time.monotonic() - started
    figures = summary(results, elapsed)
    if failed:
        print(f"{len(failed)} of {len(results)} seeds failed ({elapsed:.0f} s); {figures}")
        return 1
    print(
        f"{len(results)} seeds passed ({args.validators} validators, faults {args.faults}, "
        f"{elapsed:.0f} s); {figures}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
