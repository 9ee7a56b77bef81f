"""The long fuzz runs: `python -m tests.fuzz [--target NAME ...] [--runs N] [--seconds S]`
(1,000,000 executions per target by default; with both limits, whichever comes first).

Each target runs in a process of its own, coverage-guided by atheris (libFuzzer) over the code of
our packages, starting from its seed corpus (written to a temporary directory) and mutating with
libFuzzer's byte mutations and `tests.fuzz.mutate`'s structure-aware ones, half and half. Without
atheris (no wheel for this platform) it runs hypothesis with as many examples. A crash (an
exception the target's decoder does not document) does not stop the run: the input is saved
under the artifacts directory, the first traceback of each kind is printed, and the run goes on.
Per target one line: `fuzz: <target> <executions> execs, <crashes> crashes, <seconds> s,
<execs/s> execs/s`; the exit status is 1 if any target crashed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, Phase, given, settings

from tests.fuzz import mutate  # the harness's own code: imported before, so not instrumented

if TYPE_CHECKING:
    from tests.fuzz.targets import Target

ROOT = Path(__file__).resolve().parents[2]
INSTRUMENTED = ("primitives", "storage", "genesis", "p2p", "consensus", "execution", "node")
"""our packages, whose code atheris instruments for coverage (what a target does not run costs nothing)"""


class _Counter:
    """Executions and crashes of one target; saves each crashing input once."""

    def __init__(
        self, name: str, run: Callable[[bytes], bool], artifacts: Path, runs: int, seconds: float
    ) -> None:
        self.name = name
        self._run = run
        self._artifacts = artifacts
        self._runs = runs
        self._deadline = time.monotonic() + seconds
        self.started = time.monotonic()
        self.execs = 0
        self.crashes = 0
        self._kinds: set[tuple[str, str, int]] = set()

    def __call__(self, data: bytes) -> None:
        self.execs += 1
        try:
            self._run(bytes(data))
        except Exception as exc:
            self.crashes += 1
            self._save(data, exc)
        if self.execs >= self._runs or (self.execs & 63 == 0 and time.monotonic() >= self._deadline):
            self.finish()

    def _save(self, data: bytes, exc: Exception) -> None:
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        kind = (type(exc).__name__, frame.filename, frame.lineno or 0)
        path = self._artifacts / f"crash-{self.name}-{hashlib.sha256(data).hexdigest()[:16]}"
        path.write_bytes(data)
        if kind not in self._kinds:
            self._kinds.add(kind)
            print(f"fuzz: {self.name}: crash, input saved to {path}", file=sys.stderr)
            traceback.print_exception(exc, file=sys.stderr)

    def line(self) -> str:
        seconds = time.monotonic() - self.started
        rate = self.execs / seconds if seconds else 0.0
        counts = f"{self.execs} execs, {self.crashes} crashes"
        return f"fuzz: {self.name} {counts}, {seconds:.1f} s, {rate:.0f} execs/s"

    def finish(self) -> None:
        print(self.line(), flush=True)
        sys.stderr.flush()
        os._exit(1 if self.crashes else 0)  # libFuzzer does not return to Python


def _targets() -> dict[str, Target]:
    """`tests.fuzz.targets.TARGETS`, imported late: a worker imports it under atheris's
    instrumentation, which must come before the first import of our packages."""
    return importlib.import_module("tests.fuzz.targets").TARGETS  # type: ignore[no-any-return]


def _atheris_worker(name: str, runs: int, seconds: float, artifacts: Path) -> None:
    atheris: Any = importlib.import_module("atheris")
    with atheris.instrument_imports(include=list(INSTRUMENTED)):
        target = _targets()[name]
    corpus = Path(tempfile.mkdtemp(prefix=f"derivd-fuzz-{name}-", dir=artifacts))
    for i, seed in enumerate(target.seeds()):
        (corpus / f"seed-{i}").write_bytes(seed)
    counter = _Counter(name, target.run, artifacts, runs, seconds)

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)  # type: ignore[no-any-return]
        return mutate.mutate(data, target.form, rng)[:max_size]

    args = [sys.argv[0], str(corpus), f"-max_len={target.max_len}", "-rss_limit_mb=2048", "-timeout=60"]
    atheris.Setup(args, counter, custom_mutator=custom_mutator)
    atheris.Fuzz()
    counter.finish()


def _hypothesis_worker(name: str, runs: int, seconds: float, artifacts: Path) -> None:
    target = _targets()[name]
    inputs = importlib.import_module("tests.fuzz.strategies").inputs
    counter = _Counter(name, target.run, artifacts, runs, seconds)

    @settings(
        max_examples=runs,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(inputs(target))
    def run(data: bytes) -> None:
        counter(data)

    run()
    counter.finish()


def _worker(argv: list[str]) -> None:
    name, runs, seconds, artifacts = argv[0], int(argv[1]), float(argv[2]), Path(argv[3])
    if importlib.util.find_spec("atheris") is None:
        _hypothesis_worker(name, runs, seconds, artifacts)
    else:
        _atheris_worker(name, runs, seconds, artifacts)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        _worker(sys.argv[2:])
        return 0
    targets = _targets()
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", action="append", choices=list(targets), help="a target (repeatable); default: all"
    )
    parser.add_argument("--runs", type=int, help="executions per target (default 1000000 without --seconds)")
    parser.add_argument(
        "--seconds", type=float, help="seconds per target (with --runs: whichever comes first)"
    )
    parser.add_argument(
        "--artifacts",
        type=Path,
        help="where crashing inputs and libFuzzer's logs go (default: a new temporary directory)",
    )
    args = parser.parse_args()
    runs = args.runs if args.runs is not None else (2**62 if args.seconds is not None else 1_000_000)
    seconds = args.seconds if args.seconds is not None else float("inf")
    if runs < 1 or seconds <= 0:
        parser.error("--runs and --seconds must be positive")
    artifacts: Path = (args.artifacts or Path(tempfile.mkdtemp(prefix="derivd-fuzz-"))).resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {"PYTHONPATH": path, "TMPDIR": str(artifacts)}  # the targets' scratch files too
    failed = False
    for name in args.target or list(targets):
        log = artifacts / f"{name}.log"
        with log.open("wb") as stderr:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tests.fuzz",
                    "--worker",
                    name,
                    str(runs),
                    repr(seconds),
                    str(artifacts),
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=stderr,
                check=False,
            )
        lines = [line for line in done.stdout.decode().splitlines() if line.startswith("fuzz: ")]
        if lines:
            print(lines[-1], flush=True)
        else:
            print(
                f"fuzz: {name} stopped without a summary (exit status {done.returncode}); see {log}",
                flush=True,
            )
        failed |= done.returncode != 0
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"fuzz: logs and crashing inputs in {artifacts} ({cpu.ru_utime + cpu.ru_stime:.0f} s of CPU)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
