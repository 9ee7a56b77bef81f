"""The localnet supervisor: runs every node home of a testnet directory as a `derivd start` child
process under one trio nursery.

Each child writes stdout and stderr to `<home>/node.log` and runs in its own session, so a Ctrl-C
in the terminal reaches only the supervisor, which then stops the children in order: SIGTERM to
all, up to `stop_timeout` seconds (20 by default) for them to exit, SIGKILL for stragglers (a
second Ctrl-C kills at once). A child that dies on its own is reported with the last lines of
its log; the others keep running and nothing is restarted. The supervisor's exit status is 0
after a signal stopped it, 1 if every node died on its own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

from node.config import ALL_INTERFACES, ConfigError, load_config, parse_laddr

LOG_FILE = "node.log"
STOP_TIMEOUT = 20.0
TAIL_LINES = 20
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_NODE_DIR = re.compile(r"node([0-9]+)")

Echo = Callable[[str], None]


class SupervisorError(RuntimeError):
    """The nodes cannot be started; the message is one line naming the problem."""


def node_command(home: Path) -> list[str]:
    """The command line of one node: this interpreter running the `derivd` CLI."""
    return [sys.executable, "-m", "node.cli", "start", "--home", str(home)]


def find_homes(root: Path) -> list[Path]:
    """`root/node0`, `root/node1`, ... in index order: the directories named node<i> that hold a
    config.toml."""
    try:
        entries = list(root.iterdir())
    except OSError as exc:
        raise SupervisorError(f"{root}: cannot list: {exc.strerror or exc}") from None
    homes = sorted(
        (int(m.group(1)), entry)
        for entry in entries
        if (m := _NODE_DIR.fullmatch(entry.name)) and (entry / "config" / "config.toml").is_file()
    )
    if not homes:
        raise SupervisorError(f"{root}: no node homes (node0, node1, ...) in it")
    return [home for _, home in homes]


def _client_url(laddr: str, scheme: str = "http") -> str:
    host, port = parse_laddr(laddr)
    if host == ALL_INTERFACES:
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


@dataclass
class Child:
    """One node under supervision."""

    name: str
    home: Path
    rpc: str
    metrics: str
    p2p: str
    command: list[str]
    websocket: str = ""
    """the second `/websocket`'s URL (`[rpc] websocket_laddr`), empty when the node has none"""
    process: trio.Process | None = None
    returncode: int | None = None
    exited: trio.Event = field(default_factory=trio.Event)

    @property
    def log_path(self) -> Path:
        return self.home / LOG_FILE

    @classmethod
    def for_home(cls, home: Path, command: Callable[[Path], list[str]] = node_command) -> Child:
        try:
            config = load_config(home)
        except ConfigError as exc:
            raise SupervisorError(str(exc)) from None
        metrics = _client_url(config.instrumentation.prometheus_listen_addr) + "/metrics"
        if not config.instrumentation.prometheus:
            metrics = "off"
        return cls(
            name=home.name,
            home=home,
            rpc=_client_url(config.rpc.laddr),
            metrics=metrics,
            p2p=config.p2p.laddr,
            command=command(home),
            websocket=(
                _client_url(config.rpc.websocket_laddr, "ws") + "/websocket"
                if config.rpc.websocket_laddr
                else ""
            ),
        )

    def running(self) -> bool:
        return self.process is not None and self.returncode is None


def describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def tail(path: Path, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines of a file (empty if it cannot be read)."""
    try:
        with path.open("r", errors="replace") as file:
            return [line.rstrip("\n") for line in deque(file, maxlen=lines)]
    except OSError:
        return []


class Supervisor:
    """Runs `children` until a stop signal arrives or every child has died."""

    def __init__(self, children: Sequence[Child], echo: Echo, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.children = list(children)
        self.echo = echo
        self.stop_timeout = stop_timeout
        self.stopping = False
        self.exit_code = 0
        self._done = trio.Event()
        self._grace: trio.CancelScope | None = None

    async def run(self) -> int:
        """Start every child, supervise, stop them all; returns the exit status."""
        with trio.open_signal_receiver(*STOP_SIGNALS) as signals:
            try:
                for child in self.children:
                    await self._spawn(child)
                self._announce()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._handle_signals, signals)
                    for child in self.children:
                        nursery.start_soon(self._watch, child)
                    await self._done.wait()
                    await self._stop_all()
                    nursery.cancel_scope.cancel()
            finally:
                with trio.CancelScope(shield=True):
                    await self._kill_leftovers()
        return self.exit_code

    async def _spawn(self, child: Child) -> None:
        try:
            with child.log_path.open("ab") as log:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                log.write(f"--- derivd localnet: starting {child.name} at {stamp} ---\n".encode())
                log.flush()
                child.process = await trio.lowlevel.open_process(
                    child.command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env={**os.environ, "PYTHONUNBUFFERED": "1"},
                )
        except OSError as exc:
            raise SupervisorError(f"cannot start {child.name}: {exc.strerror or exc}") from None

    def _announce(self) -> None:
        for child in self.children:
            pid = child.process.pid if child.process is not None else "-"
            self.echo(
                f"{child.name}: rpc {child.rpc}  metrics {child.metrics}  p2p {child.p2p}  "
                + (f"streams {child.websocket}  " if child.websocket else "")
                + f"pid {pid}  log {child.log_path}"
            )
        logs = " ".join(str(c.log_path) for c in self.children)
        self.echo(f"Follow the logs: tail -F {logs}")
        self.echo("Ctrl-C stops every node.")

    async def _handle_signals(self, signals: AsyncIterator[int]) -> None:
        async for signum in signals:
            self.request_stop(signal.Signals(signum).name)

    def request_stop(self, reason: str = "a stop request") -> None:
        """Stop every node (what SIGINT, SIGTERM and SIGHUP do); a second request while stopping
        kills the nodes that are still running at once."""
        if not self.stopping:
            self.echo(
                f"received {reason}: stopping every node (SIGTERM, then SIGKILL after "
                f"{self.stop_timeout:g}s; {reason} again kills at once)"
            )
            self.exit_code = 0
            self.stopping = True
            self._done.set()
        elif self._grace is not None:
            self.echo(f"received {reason} again: killing the nodes that are still running")
            self._grace.cancel()

    async def _watch(self, child: Child) -> None:
        assert child.process is not None
        code = await child.process.wait()
        child.returncode = code
        child.exited.set()
        if self.stopping:
            if code != 0:
                self.echo(f"{child.name} {describe_exit(code)}")
            return
        running = [c.name for c in self.children if c.running()]
        self.echo(
            f"{child.name} (pid {child.process.pid}) {describe_exit(code)} unexpectedly; "
            f"last lines of {child.log_path}:"
        )
        for line in tail(child.log_path):
            self.echo(f"  | {line}")
        if running:
            self.echo(f"still running: {', '.join(running)} (nothing is restarted)")
        else:
            self.echo("every node has exited; stopping")
            self.exit_code = 1
            self.stopping = True
            self._done.set()

    async def _stop_all(self) -> None:
        self.stopping = True
        live = [c for c in self.children if c.running()]
        for child in live:
            _send(child, signal.SIGTERM)
        with trio.move_on_after(self.stop_timeout) as grace:
            self._grace = grace
            for child in live:
                await child.exited.wait()
        self._grace = None
        for child in live:
            if child.running():
                self.echo(f"{child.name} did not stop in time: sending SIGKILL")
                _send(child, signal.SIGKILL)
        for child in live:
            await child.exited.wait()
        self.echo("every node has stopped")

    async def _kill_leftovers(self) -> None:
        """Last resort (an error in the supervisor): no child may outlive it."""
        for child in self.children:
            process = child.process
            if process is not None and process.poll() is None:
                process.kill()
                await process.wait()


def _send(child: Child, signum: signal.Signals) -> None:
    assert child.process is not None
    with contextlib.suppress(ProcessLookupError):  # it exited since we last looked
        child.process.send_signal(signum)


def supervise(root: Path, echo: Echo, stop_timeout: float = STOP_TIMEOUT) -> int:
    """Run every node home under `root` until SIGINT, SIGTERM or SIGHUP; the exit status."""
    children = [Child.for_home(home) for home in find_homes(root)]
    try:
        return trio.run(Supervisor(children, echo, stop_timeout).run)
    except KeyboardInterrupt:  # a Ctrl-C before the signal receiver was installed
        return 130
