"""A local EVM chain for tests: `hardhat node` (chain id 31337, from `evm/node_modules`, installed by
`npm ci --prefix evm`) on a free port, with its funded dev accounts, plus the JSON-RPC test
controls (snapshots, time) the tests use.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from web3 import Web3
from web3.types import RPCEndpoint

EVM_DIR = Path(__file__).resolve().parents[2] / "evm"
HARDHAT = EVM_DIR / "node_modules" / ".bin" / "hardhat"
HARDHAT_CHAIN_ID = 31337
DEV_ACCOUNTS = 10
START_TIMEOUT_S = 60.0

LISTENING = re.compile(r"JSON-RPC server at (http://127\.0\.0\.1:\d+)/?")
PRIVATE_KEY = re.compile(r"Private Key: 0x([0-9a-fA-F]{64})")


@dataclass(frozen=True, slots=True, kw_only=True)
class HardhatNode:
    url: str
    keys: tuple[bytes, ...]
    """the first dev accounts' 32-byte secrets (each funded with 10,000 ETH)"""
    pid: int
    """the hardhat process (its own process group), for a test that takes the EVM node away"""

    def kill(self) -> None:
        """Stops the EVM node now (the context manager's exit then has nothing left to stop)."""
        os.killpg(self.pid, signal.SIGKILL)


class _Output:
    """The child's stdout, drained by a thread (hardhat logs every request: an unread pipe would
    fill and stop it) and searched under a condition."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: list[str] = []
        self._done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._drain, args=(proc,), daemon=True)
        self._thread.start()

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                if len(self._lines) < 200:  # the start-up text; later request logs are dropped
                    self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def text(self) -> str:
        with self._cond:
            return "".join(self._lines)

    def wait_for_start(self, deadline: float) -> tuple[str, tuple[bytes, ...]]:
        """The URL and the first DEV_ACCOUNTS keys, once printed; RuntimeError at the deadline or
        if hardhat exits first."""
        with self._cond:
            while True:
                text = "".join(self._lines)
                url = LISTENING.search(text)
                keys = PRIVATE_KEY.findall(text)
                if url and len(keys) >= DEV_ACCOUNTS:
                    return url[1], tuple(bytes.fromhex(k) for k in keys[:DEV_ACCOUNTS])
                remaining = deadline - time.monotonic()
                if self._done or remaining <= 0:
                    state = "exited" if self._done else "did not start in time"
                    raise RuntimeError(f"hardhat node {state}:\n{text[-4000:]}")
                self._cond.wait(remaining)


@contextmanager
def hardhat_node(timeout: float = START_TIMEOUT_S) -> Iterator[HardhatNode]:
    """Runs `hardhat node --port 0` in evm/ for the block; kills it at exit."""
    if not HARDHAT.exists():
        raise RuntimeError(f"{HARDHAT} is missing: run `npm ci --prefix evm`")
    proc = subprocess.Popen(
        [str(HARDHAT), "node", "--port", "0", "--hostname", "127.0.0.1"],
        cwd=EVM_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
        env={**os.environ, "HARDHAT_DISABLE_TELEMETRY_PROMPT": "true", "NO_COLOR": "1"},
    )
    try:
        output = _Output(proc)
        url, keys = output.wait_for_start(time.monotonic() + timeout)
        yield HardhatNode(url=url, keys=keys, pid=proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _rpc(w3: Web3, method: str, *params: object) -> object:
    response = w3.provider.make_request(RPCEndpoint(method), list(params))
    if "error" in response:
        raise RuntimeError(f"{method}: {response['error']}")
    return response["result"]


def snapshot(w3: Web3) -> str:
    """The id of a snapshot of the chain's state (hardhat's `evm_snapshot`)."""
    return str(_rpc(w3, "evm_snapshot"))


def revert(w3: Web3, snapshot_id: str) -> None:
    """Back to `snapshot_id` (which is used up)."""
    if _rpc(w3, "evm_revert", snapshot_id) is not True:
        raise RuntimeError(f"evm_revert {snapshot_id} failed")


def advance_time(w3: Web3, seconds: int) -> None:
    """Moves the chain's clock `seconds` ahead and mines a block at the new time."""
    _rpc(w3, "evm_increaseTime", seconds)
    _rpc(w3, "evm_mine")


def mine(w3: Web3, blocks: int = 1) -> None:
    """Mines `blocks` empty blocks (hardhat's `evm_mine`)."""
    for _ in range(blocks):
        _rpc(w3, "evm_mine")


def set_next_block_timestamp(w3: Web3, timestamp: int) -> None:
    _rpc(w3, "evm_setNextBlockTimestamp", timestamp)
