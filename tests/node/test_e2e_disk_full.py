"""A real `derivd start` whose home (or only its database) is on a small tmpfs that a ballast file
fills: the node halts with one error line and exit code 1, no traceback; with the ballast deleted
the same home starts again and goes on past the height it halted at, with the blocks below it
unchanged.

Mounting needs root (the tests run as root here and in CI)."""

from __future__ import annotations

import contextlib
import errno
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.node.e2e import NodeProcess, make_chain

COMMITTED = re.compile(r"committed block height=(\d+) hash=([0-9A-F]{64})")
TMPFS_SIZE = "8m"


@contextlib.contextmanager
def small_disk(mount_point: Path) -> Iterator[Path]:
    """An empty 8 MiB tmpfs at `mount_point` (created), unmounted at the end."""
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.fail(f"this test mounts a tmpfs and needs root: mount said {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill(path: Path) -> int:
    """Write `path` until the file system is full; the bytes written."""
    written = 0
    chunk = b"\0" * (64 << 10)
    with open(path, "wb", buffering=0) as file:
        try:
            while True:
                written += file.write(chunk) or 0
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
    return written


def committed(log: str) -> dict[int, str]:
    return {int(height): block_hash for height, block_hash in COMMITTED.findall(log)}


HALTS = {
    "home": r"cannot (write|save) ",  # the first write that needs a page: any of them
    "database": r"cannot write the database at \S+/data/derivd\.db: IO error: ",
}


@pytest.mark.parametrize("full", HALTS)
def test_a_full_disk_halts_the_node_with_one_line_and_a_restart_resumes(tmp_path: Path, full: str) -> None:
    """`full`: the whole home is on the tmpfs, or only the database (the WAL and the sign state
    are elsewhere, so LevelDB itself meets the full disk)."""
    with contextlib.ExitStack() as mounts:
        if full == "home":
            disk = mounts.enter_context(small_disk(tmp_path / "node"))
        chain = make_chain(tmp_path, {"alice": 10**12})
        if full == "database":
            disk = mounts.enter_context(small_disk(chain.home / "data" / "derivd.db"))
        node = NodeProcess(chain, log_name=str(tmp_path / "node.log"))  # the log is not on the full disk
        try:
            node.start()
            node.wait_height(3)
            assert fill(disk / "ballast") > 0
            assert node.proc is not None
            # the node's next signature or block needs a page of the full tmpfs: it halts at once
            code = node.proc.wait(timeout=20)
            log = node.log_path.read_text()
            assert code == 1, log
            halt_lines = [line for line in log.splitlines() if "free space and restart" in line]
            assert len(halt_lines) == 2, log  # the node's error line, and `derivd start`'s Error line
            logged, printed = halt_lines
            assert re.search(r"\[error\s*\] halting: " + HALTS[full], logged), logged
            assert printed.startswith("Error: cannot "), printed
            message = printed.removeprefix("Error: ")
            assert logged.split("halting: ", 1)[1].removesuffix(" [derivd.node]") == message
            assert str(disk) in printed and "No space left on device" in printed
            assert "Traceback" not in log
            before = committed(log)
            halted_at = max(before)
            assert halted_at >= 3

            (disk / "ballast").unlink()
            node.start()
            node.wait_height(halted_at + 2)
            for height, block_hash in before.items():
                assert node.rpc("block", height=str(height))["block_id"]["hash"] == block_hash, height
            assert node.stop() == 0
        finally:
            if node.alive():
                node.kill9()
