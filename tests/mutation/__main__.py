"""Command line of the mutation tester.

    python -m tests.mutation consensus/rules.py [FILE ...] [--jobs 2] [--json results.json]
    python -m tests.mutation consensus/machine.py --list [--lines 400-450] [--operators ROR,DEL]
    python -m tests.mutation consensus/machine.py --only machine.py:412:3 --slow   # no slow stage

Each mutant (the rules are in tests/mutation/mutants.py) is written into a scratch copy of the
repository: the files git lists, tracked and untracked but not ignored, copied once per worker;
the working tree is never written. The tests run there with `pytest -x`, the copy first on
PYTHONPATH: the fast stage, then, if it passes, the slow stage (a directory among the tests
stands for its test files, so the files named first run first). Start-up aborts unless each
file imports from the copy, a copy that raises on import breaks the fast stage's collection,
and both stages pass unmutated.

Statuses: killed (a stage failed), timeout (a stage ran over --timeout, by default 10 times its
unmutated time), error (pytest exited 2 to 5, e.g. a collection error), survived (both stages
passed). The score is (killed + timeout) / (mutants - error). Exit status: 0 after a completed
run, 1 if the score is under --fail-under, 2 if the run could not start, 130 if interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import assert_never

from tqdm import tqdm

from tests.mutation.mutants import Generated, Mutant, Operator, generate

FAST = (
    "tests/consensus/test_rules.py",
    "tests/consensus/test_scenarios.py",
    "tests/consensus/test_votes.py",
    "tests/consensus",
)
SLOW = ("tests/sim",)
PYTEST = ("-m", "pytest", "-x", "-q", "-p", "no:cacheprovider")
CANARY = "tests.mutation canary: this copy's file is the code that runs"
TIMEOUT_FACTOR = 10


class StageName(StrEnum):
    FAST = "fast"
    SLOW = "slow"


class Status(StrEnum):
    KILLED = "killed"
    TIMEOUT = "timeout"
    SURVIVED = "survived"
    ERROR = "error"


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    name: StageName
    tests: tuple[str, ...]
    timeout: float
    baseline: float
    """Seconds the stage took on the unmutated copy."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Run:
    """One pytest run: its exit code (None if it was killed at the timeout) and output."""

    code: int | None
    seconds: float
    output: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Result:
    mutant: Mutant
    status: Status
    stage: StageName | None
    """The stage that killed it, timed out or failed to run; None if it survived."""
    seconds: float
    detail: str
    """The first failing test, or what went wrong."""

    def record(self) -> dict[str, object]:
        mutant = self.mutant
        return {
            "id": mutant.id,
            "path": mutant.path,
            "line": mutant.line,
            "operator": str(mutant.operator),
            "original": mutant.original,
            "replacement": mutant.replacement,
            "status": str(self.status),
            "stage": None if self.stage is None else str(self.stage),
            "seconds": round(self.seconds, 2),
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Tally:
    mutants: int
    fast: int
    slow: int
    timeout: int
    survived: int
    error: int

    @property
    def killed(self) -> int:
        return self.fast + self.slow

    @property
    def score(self) -> float | None:
        """Percent of the mutants that ran which the tests detected."""
        ran = self.mutants - self.error
        return 100 * (self.killed + self.timeout) / ran if ran else None


class AbortError(Exception):
    """The run cannot start or go on; the message says why."""


class Stopped(Exception):
    """The run was interrupted before this mutant finished."""


# -- the scratch copies


@dataclass(frozen=True, slots=True, kw_only=True)
class Copy:
    """A scratch copy of the repository, used by one worker at a time."""

    root: Path

    def env(self) -> dict[str, str]:
        """The copy first on the path (before the editable install's finder), and bytecode cached
        in the copy even where PYTHONDONTWRITEBYTECODE is set: `write` drops a mutated file's."""
        inherited = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
        return {**inherited, "PYTHONPATH": str(self.root)}

    def write(self, path: str, text: str) -> None:
        """Write `text` as `path`, dropping its bytecode (a same-sized edit within the same second
        would otherwise look fresh) and any Hypothesis examples the last run saved."""
        target = self.root / path
        with target.open("w", encoding="utf-8", newline="") as file:
            file.write(text)
        for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
            cached.unlink(missing_ok=True)
        shutil.rmtree(self.root / ".hypothesis", ignore_errors=True)


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AbortError(f"git {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def _repo_files(repo: Path) -> list[str]:
    listed = _git(repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    return sorted({name for name in listed if name and os.path.lexists(repo / name)})


def _snapshot(repo: Path, files: Sequence[str]) -> Copy:
    root = Path(tempfile.mkdtemp(prefix="derivd-mutation-"))
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / name, root / name, follow_symlinks=False)
    return Copy(root=root)


def _clone(copy: Copy) -> Copy:
    root = Path(tempfile.mkdtemp(prefix="derivd-mutation-"))
    shutil.copytree(copy.root, root, symlinks=True, dirs_exist_ok=True)
    return Copy(root=root)


def _read(path: Path) -> str:
    with path.open(encoding="utf-8", newline="") as file:
        return file.read()


# -- running pytest


class Processes:
    """The pytest process groups running now, so that a timeout or Ctrl-C kills them whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: set[subprocess.Popen[str]] = set()
        self._stopped = threading.Event()

    @contextlib.contextmanager
    def track(self, process: subprocess.Popen[str]) -> Iterator[None]:
        with self._lock:
            if self._stopped.is_set():
                _kill_group(process)
            self._running.add(process)
        try:
            yield
        finally:
            with self._lock:
                self._running.discard(process)

    def stop(self) -> None:
        with self._lock:
            self._stopped.set()
            for process in self._running:
                _kill_group(process)

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()


def _kill_group(process: subprocess.Popen[str]) -> None:
    """Kill the session `process` leads (pytest and the workers it started), while it is unreaped."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def run_pytest(copy: Copy, args: Sequence[str], timeout: float | None, processes: Processes) -> Run:
    if processes.stopped:
        raise Stopped
    started = time.monotonic()
    with (
        subprocess.Popen(
            [sys.executable, *PYTEST, *args],
            cwd=copy.root,
            env=copy.env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        ) as process,
        processes.track(process),
    ):
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            output, _ = process.communicate()
            return Run(code=None, seconds=time.monotonic() - started, output=output)
        except BaseException:  # Ctrl-C: the new session does not get the terminal's SIGINT
            _kill_group(process)
            raise
    if processes.stopped:
        raise Stopped
    return Run(code=process.returncode, seconds=time.monotonic() - started, output=output)


def _verdict(run: Run) -> Status:
    if run.code is None:
        return Status.TIMEOUT
    if run.code == 0:
        return Status.SURVIVED
    if run.code == 1:
        return Status.KILLED
    return Status.ERROR  # 2 interrupted (collection errors), 3 internal, 4 usage, 5 no tests


def _detail(status: Status, run: Run, stage: Stage) -> str:
    lines = [line.strip() for line in run.output.splitlines() if line.strip()]
    first_failure = next((line for line in lines if line.startswith(("FAILED ", "ERROR "))), None)
    match status:
        case Status.KILLED:
            return first_failure or (lines[-1] if lines else "")
        case Status.TIMEOUT:
            return f"over {stage.timeout:.0f} s"
        case Status.ERROR:
            return f"pytest exit code {run.code}: {first_failure or (lines[-1] if lines else 'no output')}"
        case Status.SURVIVED:
            return ""
        case _:
            assert_never(status)


def _judge(mutant: Mutant, copy: Copy, stages: Sequence[Stage], processes: Processes) -> Result:
    seconds = 0.0
    for stage in stages:
        run = run_pytest(copy, stage.tests, stage.timeout, processes)
        seconds += run.seconds
        status = _verdict(run)
        if status is not Status.SURVIVED:
            return Result(
                mutant=mutant,
                status=status,
                stage=stage.name,
                seconds=seconds,
                detail=_detail(status, run, stage),
            )
    return Result(mutant=mutant, status=Status.SURVIVED, stage=None, seconds=seconds, detail="")


def _test_mutant(
    mutant: Mutant, copies: queue.Queue[Copy], stages: Sequence[Stage], processes: Processes
) -> Result:
    copy = copies.get()
    try:
        copy.write(mutant.path, mutant.source())
        try:
            return _judge(mutant, copy, stages, processes)
        finally:
            copy.write(mutant.path, mutant.base)
    finally:
        copies.put(copy)


# -- start-up checks


def _module(path: str) -> str:
    parts = PurePosixPath(path).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _check_imports(copy: Copy, sources: dict[str, str]) -> None:
    """Abort unless each target imports from `copy` (PYTHONPATH before the editable install)."""
    code = "import importlib, sys; print(importlib.import_module(sys.argv[1]).__file__)"
    for path in sources:
        done = subprocess.run(
            [sys.executable, "-c", code, _module(path)],
            cwd=copy.root,
            env=copy.env(),
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        found = done.stdout.strip()
        if done.returncode != 0 or not found or Path(found).resolve() != (copy.root / path).resolve():
            raise AbortError(
                f"in the scratch copy, {_module(path)} is imported from {found or done.stderr.strip()!r}, "
                f"not from {copy.root / path}: the mutants would not be the code under test"
            )


def _check_canary(copy: Copy, sources: dict[str, str], fast: Sequence[str], processes: Processes) -> None:
    """Abort unless pytest, collecting the fast stage in `copy`, imports each target from there:
    a target that raises on import (an always-killed mutant) must break the collection."""
    for path, source in sources.items():
        copy.write(path, f"{source}\nraise RuntimeError({CANARY!r})\n")
        try:
            run = run_pytest(copy, ["--collect-only", *fast], None, processes)
        finally:
            copy.write(path, source)
        if run.code == 0 or CANARY not in run.output:
            raise AbortError(
                f"a copy of {path} that raises on import did not break the collection of the fast stage "
                f"(pytest exit code {run.code}): pytest does not import the copy, or no fast test imports "
                f"{_module(path)}"
            )


def _in_order(root: Path, tests: Sequence[str]) -> tuple[str, ...]:
    """`tests` with each directory replaced by its test files, each file once, in the order given:
    pytest (9) would otherwise collect a file named before its directory in the directory's order."""
    ordered: dict[str, None] = {}
    for test in tests:
        directory = root / test
        if "::" in test or not directory.is_dir():
            ordered.setdefault(test)
            continue
        for found in sorted(directory.rglob("*.py")):
            inside = found.relative_to(root)
            hidden = any(part.startswith(".") or part == "__pycache__" for part in inside.parts)
            if not hidden and (found.name.startswith("test_") or found.name.endswith("_test.py")):
                ordered.setdefault(inside.as_posix())
    return tuple(ordered)


def _baseline(
    copy: Copy,
    stages: Sequence[tuple[StageName, tuple[str, ...]]],
    timeout: float | None,
    processes: Processes,
) -> list[Stage]:
    measured: list[Stage] = []
    for name, given in stages:
        tests = _in_order(copy.root, given)
        print(f"baseline: {name} stage, {' '.join(given)} ...", flush=True)
        run = run_pytest(copy, tests, timeout, processes)
        if run.code != 0:
            why = "ran over --timeout" if run.code is None else f"exits {run.code}"
            tail = "\n".join(run.output.splitlines()[-15:])
            raise AbortError(f"the {name} stage {why} on the unmutated copy; nothing can be judged:\n{tail}")
        limit = timeout if timeout is not None else TIMEOUT_FACTOR * run.seconds
        measured.append(Stage(name=name, tests=tests, timeout=limit, baseline=run.seconds))
        print(f"baseline: {name} stage passes in {run.seconds:.1f} s; timeout {limit:.0f} s", flush=True)
    return measured


# -- selection and reports


def _lines(text: str) -> tuple[int, int]:
    first, _, last = text.partition("-")
    try:
        return int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not A-B or A") from None


def _operators(text: str) -> frozenset[Operator]:
    try:
        return frozenset(Operator(name.strip().upper()) for name in text.split(",") if name.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"operators are {','.join(Operator)}; not {text!r}") from None


def _select(generated: dict[str, Generated], args: argparse.Namespace) -> list[Mutant]:
    everything = [mutant for found in generated.values() for mutant in found.mutants]
    if args.only:
        unknown = set(args.only) - {mutant.id for mutant in everything}
        if unknown:
            raise AbortError(f"no mutant has the id {', '.join(sorted(unknown))} (see --list)")
    selected = [
        mutant
        for mutant in everything
        if (not args.only or mutant.id in args.only)
        and (args.operators is None or mutant.operator in args.operators)
        and (args.lines is None or args.lines[0] <= mutant.line <= args.lines[1])
    ]
    if not selected:
        raise AbortError("no mutant matches the filters")
    return selected


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _describe(mutant: Mutant) -> str:
    change = f"{_one_line(mutant.original)}  →  {mutant.replacement}"
    return f"{mutant.id:<22} {mutant.line:>5}  {mutant.operator:<6}  {change}"


def _print_list(selected: Sequence[Mutant], generated: dict[str, Generated]) -> None:
    for mutant in selected:
        print(_describe(mutant))
    for path, found in generated.items():
        shown = sum(mutant.path == path for mutant in selected)
        print(
            f"{path}: {len(found.mutants)} mutants, {shown} selected "
            f"({found.dropped} dropped: unchanged or not compiling)"
        )
    print(
        f"total: {sum(len(found.mutants) for found in generated.values())} mutants, {len(selected)} selected"
    )


def _tally(results: Sequence[Result]) -> Tally:
    counts = dict.fromkeys(("fast", "slow", "timeout", "survived", "error"), 0)
    for result in results:
        match result.status:
            case Status.KILLED:
                counts["slow" if result.stage is StageName.SLOW else "fast"] += 1
            case Status.TIMEOUT:
                counts["timeout"] += 1
            case Status.SURVIVED:
                counts["survived"] += 1
            case Status.ERROR:
                counts["error"] += 1
            case _:
                assert_never(result.status)
    return Tally(mutants=len(results), **counts)


_HEADER = ("mutants", "killed", "(fast", "slow)", "timeout", "survived", "error", "score")


def _cells(name: str, cells: Sequence[object]) -> str:
    widths = [max(len(title), 6) for title in _HEADER]
    return f"{name:<28}" + "".join(f" {cell!s:>{width}}" for cell, width in zip(cells, widths, strict=True))


def _row(name: str, tally: Tally) -> str:
    score = "n/a" if tally.score is None else f"{tally.score:.1f}%"
    counts = (tally.mutants, tally.killed, tally.fast, tally.slow, tally.timeout, tally.survived, tally.error)
    return _cells(name, (*counts, score))


def _print_summary(
    paths: Sequence[str], results: Sequence[Result], stages: Sequence[Stage], wall: float
) -> None:
    print()
    print(_cells("file", _HEADER))
    for path in paths:
        print(_row(path, _tally([result for result in results if result.mutant.path == path])))
    print(_row("total", _tally(results)))
    baselines = ", ".join(f"{stage.name} {stage.baseline:.0f} s" for stage in stages)
    print(f"wall time {wall // 60:.0f} min {wall % 60:.0f} s (baseline {baselines})")
    for status in (Status.SURVIVED, Status.ERROR, Status.TIMEOUT):
        chosen = [result for result in results if result.status is status]
        if chosen:
            print(f"\n{status} ({len(chosen)}):")
        for result in chosen:
            print(f"  {_describe(result.mutant)}" + (f"\n      {result.detail}" if result.detail else ""))


# -- the command


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tests.mutation", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument(
        "files", nargs="+", metavar="FILE", help="source files to mutate, e.g. consensus/rules.py"
    )
    parser.add_argument(
        "--fast", nargs="+", default=list(FAST), metavar="TEST", help="tests run first, with -x"
    )
    parser.add_argument(
        "--slow",
        nargs="*",
        default=list(SLOW),
        metavar="TEST",
        help="tests run if the fast ones pass (none: skip)",
    )
    parser.add_argument(
        "--timeout", type=float, help=f"seconds per stage (default {TIMEOUT_FACTOR} x its baseline)"
    )
    parser.add_argument(
        "--jobs", type=int, default=os.cpu_count() or 1, help="workers, each with its own copy"
    )
    parser.add_argument("--list", action="store_true", help="print the mutants and exit")
    parser.add_argument("--only", nargs="+", metavar="ID", help="run just these mutants")
    parser.add_argument(
        "--operators", type=_operators, help=f"comma-separated subset of {','.join(Operator)}"
    )
    parser.add_argument("--lines", type=_lines, metavar="A-B", help="only mutants on lines A to B")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every result to PATH")
    parser.add_argument("--fail-under", type=float, metavar="PCT", help="exit 1 if the score is under PCT")
    return parser


def _targets(repo: Path, files: Sequence[str], names: Sequence[str]) -> list[str]:
    targets: list[str] = []
    for name in names:
        try:
            path = Path(name).resolve().relative_to(repo).as_posix()
        except ValueError:
            raise AbortError(f"{name} is not in the repository {repo}") from None
        if path not in files or not path.endswith(".py"):
            raise AbortError(f"{name} is not a Python file git knows (tracked, or untracked and not ignored)")
        if path not in targets:
            targets.append(path)
    names_only = [PurePosixPath(path).name for path in targets]
    if len(set(names_only)) != len(names_only):
        raise AbortError("two files share a name, so their mutant ids would clash; run them separately")
    return targets


def _run_all(
    selected: Sequence[Mutant], copies: Sequence[Copy], stages: Sequence[Stage], processes: Processes
) -> list[Result]:
    free: queue.Queue[Copy] = queue.Queue()
    for copy in copies:
        free.put(copy)
    results: list[Result] = []
    with (
        ThreadPoolExecutor(max_workers=len(copies)) as pool,
        tqdm(total=len(selected), file=sys.stderr, unit="mutant", disable=None) as bar,
    ):
        futures: list[Future[Result]] = [
            pool.submit(_test_mutant, mutant, free, stages, processes) for mutant in selected
        ]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                bar.update()
                # A line per mutant as it ends: above the bar on a terminal, and in a log (a long
                # run that is stopped still says what it found).
                where = f" ({result.stage})" if result.stage else ""
                tqdm.write(
                    f"{result.mutant.id:<22} {result.status}{where} {result.seconds:.0f} s",
                    file=sys.stdout,
                )
                sys.stdout.flush()
        except BaseException:
            processes.stop()
            for future in futures:
                future.cancel()
            raise
    order = {mutant.id: index for index, mutant in enumerate(selected)}
    return sorted(results, key=lambda result: order[result.mutant.id])


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel").strip()).resolve()
    files = _repo_files(repo)
    targets = _targets(repo, files, args.files)
    if args.list:
        generated = {path: generate(path, _read(repo / path)) for path in targets}
        _print_list(_select(generated, args), generated)
        return 0
    processes = Processes()
    copies = [_snapshot(repo, files)]
    try:
        sources = {path: _read(copies[0].root / path) for path in targets}
        generated = {path: generate(path, source) for path, source in sources.items()}
        selected = _select(generated, args)
        print(f"{len(selected)} mutants; scratch copies under {copies[0].root.parent}", flush=True)
        copies += [_clone(copies[0]) for _ in range(1, max(1, min(args.jobs, len(selected))))]
        for copy in copies:
            _check_imports(copy, sources)
        _check_canary(copies[0], sources, args.fast, processes)
        wanted = [(StageName.FAST, tuple(args.fast))] + (
            [(StageName.SLOW, tuple(args.slow))] if args.slow else []
        )
        stages = _baseline(copies[0], wanted, args.timeout, processes)
        results = _run_all(selected, copies, stages, processes)
    finally:
        for copy in copies:
            shutil.rmtree(copy.root, ignore_errors=True)
    _print_summary(targets, results, stages, time.monotonic() - started)
    if args.json is not None:
        args.json.write_text(
            json.dumps([result.record() for result in results], indent=1, ensure_ascii=False) + "\n"
        )
    score = _tally(results).score
    if args.fail_under is not None and (score is None or score < args.fail_under):
        print(f"score under {args.fail_under:g}%")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except AbortError as exc:
        print(f"python -m tests.mutation: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Stopped):
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
