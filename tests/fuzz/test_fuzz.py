"""The short form of every fuzz target (`tests.fuzz.targets`) in the test suite: its seeds are
accepted and re-encode to themselves, a few hundred hypothesis inputs (random bytes, seeds
mutated with structure) crash nothing, and the long-run command works end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz.__main__ import ROOT, _Counter
from tests.fuzz.strategies import inputs
from tests.fuzz.targets import TARGETS, Target

EXAMPLES = {"config": 80, "handshake": 200, "rpc": 600, "genesis": 300, "wal": 300}
"""examples of the slow targets (the others: DEFAULT_EXAMPLES); all together stay within ~20 s"""
DEFAULT_EXAMPLES = 600


@pytest.mark.parametrize("target", [t for t in TARGETS.values() if t.seeds_accepted], ids=lambda t: t.name)
def test_seeds_are_accepted(target: Target) -> None:
    """Every seed decodes (and so passed the target's round-trip check): the fuzzer starts from
    real structure, and the round trip is exercised."""
    refused = [seed[:40] for seed in target.seeds() if not target.run(seed)]
    assert not refused


@pytest.mark.parametrize("target", list(TARGETS.values()), ids=lambda t: t.name)
def test_short_fuzz(target: Target) -> None:
    """No input crashes the target: it is accepted (and canonical) or refused with the decoder's
    own error. A failure prints the input (hypothesis shrinks it)."""

    @settings(
        max_examples=EXAMPLES.get(target.name, DEFAULT_EXAMPLES),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(inputs(target))
    def run(data: bytes) -> None:
        target.run(data)

    run()


def test_hostile_handshakes_end_in_handshake_error() -> None:
    """Each mode of the handshake target ends as it should: garbage, a valid key then garbage,
    a sealed bad authentication, forged frames: refused; the honest peer: authenticated."""
    run = TARGETS["handshake"].run
    assert [run(bytes([mode]) + b"\x07" * 40) for mode in range(5)] == [False, False, False, False, True]


def test_a_crash_is_counted_and_saved(tmp_path: Path) -> None:
    """The runner's accounting: an exception the target does not document is a crash, its input
    is saved, and the run goes on."""

    def target(data: bytes) -> bool:
        if data == b"bad":
            raise KeyError("boom")
        return True

    counter = _Counter("selftest", target, tmp_path, runs=100, seconds=60)
    for data in (b"good", b"bad", b"bad", b"fine"):
        counter(data)
    assert (counter.execs, counter.crashes) == (4, 2)
    assert [path.read_bytes() for path in tmp_path.glob("crash-selftest-*")] == [b"bad"]
    assert counter.line().startswith("fuzz: selftest 4 execs, 2 crashes, ")


def test_the_long_run_command(tmp_path: Path) -> None:
    """`python -m tests.fuzz` runs a target and prints its summary line."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.fuzz",
            "--target",
            "ephemeral_key",
            "--runs",
            "300",
            "--artifacts",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("fuzz: ephemeral_key 300 execs, 0 crashes, "), done.stdout
