"""Command line of the chaos harness.

    python -m tests.chaos --nodes 4 --duration 60 --seed 1 --faults kill,partition,loss,delay,byzantine

prints the seeded schedule, the mode (netns or proxy) and each fault as it happens, then the
checks' findings and one summary line `chaos: N kills, P partitions, F forks, L lost, max stall S s`;
exits 0 iff every check passed (1 otherwise, 2 on bad arguments or a run that could not be
carried out).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from node.testnet import TestnetError
from tests.chaos.network import FabricError
from tests.chaos.run import ChaosError, Options, run
from tests.chaos.schedule import ScheduleError, parse_faults


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM and SIGHUP clean up as Ctrl-C does


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4, help="validators (default 4)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of faults the schedule plans")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-kills", type=int, default=0, help="plan at least this many kills")
    parser.add_argument("--min-partitions", type=int, default=0, help="plan at least this many partitions")
    parser.add_argument(
        "--faults", default="kill,partition,loss,delay,byzantine", help="comma-separated, or all"
    )
    parser.add_argument("--mode", choices=("auto", "netns", "proxy"), default="auto")
    parser.add_argument("--rate", type=float, default=4.0, help="load: txs per second (default 4)")
    parser.add_argument(
        "--stall-bound", type=float, default=10.0, help="seconds a healed fault may stall the chain"
    )
    parser.add_argument(
        "--workdir", type=Path, help="where the node homes go (default: a new temporary directory)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the node homes and logs after a passing run"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.stall_bound <= 0:
        parser.error("--rate and --stall-bound must be positive")
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"--workdir {args.workdir}: exists and is not empty")
    try:
        options = Options(
            nodes=args.nodes,
            duration=args.duration,
            seed=args.seed,
            faults=parse_faults(args.faults),
            mode=args.mode,
            rate=args.rate,
            stall_bound=args.stall_bound,
            workdir=args.workdir,
            keep=args.keep,
            min_kills=args.min_kills,
            min_partitions=args.min_partitions,
        )
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _interrupt)
        report = run(options, lambda line: print(line, flush=True))
    except (ScheduleError, ChaosError, FabricError, TestnetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the nodes, namespaces and proxies were removed", file=sys.stderr)
        return 130
    for problem in report.problems:
        print(f"FAILED: {problem}")
    print(
        f"{report.summary()} ({report.mode}, {report.heights} heights, {report.acked} acked txs, "
        f"{report.seconds:.0f} s wall)"
    )
    if report.workdir is not None:
        print(f"node homes and logs: {report.workdir}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
