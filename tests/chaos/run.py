"""One chaos run from start to verdict: the fabric, the homes and processes, the byzantine twin,
the schedule's episodes under load, the final liveness wait, the collection of every node's block
hashes and acknowledged txs, the state check of every stopped node, and the report.

Everything started is stopped and removed in a `finally` (a Ctrl-C included): the processes
(SIGKILL), the fabric's namespaces, links and proxies, and the work directory unless kept (it is
kept when the run failed or did not finish, for its node logs).
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, assert_never

import httpx

from node.testnet import Testnet
from primitives.hashing import sha256
from storage.db import StorageError
from tests.chaos.checks import Fork, Lost, find_forks, find_lost, stall_problems, state_figures
from tests.chaos.cluster import RPC, NodeProc, RPCError, create_homes, node_procs
from tests.chaos.load import Load
from tests.chaos.network import Fabric, NetnsFabric, ProxyFabric, netns_available
from tests.chaos.schedule import Episode, FaultKind, Schedule, build_schedule

Mode = Literal["auto", "netns", "proxy"]
Echo = Callable[[str], None]
POLL = 0.25
BLOCKCHAIN_PAGE = 20
RPC_BATCH = 10
"""calls per JSON-RPC batch ([rpc] max_request_batch_size's default)"""
START_TIMEOUT = 90.0
CATCH_UP_TIMEOUT = 90.0
FINAL_ADVANCE = 3
"""heights every node must add after the last fault healed"""


class ChaosError(RuntimeError):
    """The run could not be carried out (not a failed check); the message is one line."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    nodes: int = 4
    duration: float = 40.0
    seed: int = 1
    faults: frozenset[FaultKind] = frozenset(FaultKind)
    mode: Mode = "auto"
    rate: float = 4.0
    """txs per second of load"""
    stall_bound: float = 10.0
    byzantine_timeout: float = 120.0
    min_kills: int = 0
    min_partitions: int = 0
    workdir: Path | None = None
    keep: bool = False


@dataclass(kw_only=True)
class Report:
    mode: str = ""
    kills: int = 0
    partitions: int = 0
    episodes: int = 0
    forks: list[Fork] = field(default_factory=list)
    lost: list[Lost] = field(default_factory=list)
    stalls: dict[int, float] = field(default_factory=dict)
    kill_codes: list[int] = field(default_factory=list)
    """the exit status of every killed process (-9)"""
    problems: list[str] = field(default_factory=list)
    heights: int = 0
    acked: int = 0
    seconds: float = 0.0
    workdir: Path | None = None

    @property
    def max_stall(self) -> float:
        return max(self.stalls.values(), default=0.0)

    @property
    def passed(self) -> bool:
        return not self.forks and not self.lost and not self.problems

    def summary(self) -> str:
        return (
            f"chaos: {self.kills} kills, {self.partitions} partitions, {len(self.forks)} forks, "
            f"{len(self.lost)} lost, max stall {self.max_stall:.1f} s"
        )


def make_fabric(options: Options, count: int, echo: Echo) -> Fabric:
    match options.mode:
        case "netns":
            why = netns_available()
            if why is not None:
                raise ChaosError(f"--mode netns: network namespaces are not available here ({why})")
            return NetnsFabric(count)
        case "proxy":
            return ProxyFabric(count, options.seed)
        case "auto":
            why = netns_available()
            if why is None:
                return NetnsFabric(count)
            echo(f"network namespaces are not available ({why}): falling back to loopback proxies")
            return ProxyFabric(count, options.seed)
        case _:
            assert_never(options.mode)


class Monitor:
    """Polls every node's height; keeps when the majority's height rose (for stalls)."""

    def __init__(self, procs: list[NodeProc]) -> None:
        self.procs = procs
        self.heights: dict[int, int] = {p.index: -1 for p in procs}
        self.rises: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-monitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        clients = {p.index: RPC(p.rpc_url, timeout=1.0) for p in self.procs}
        while not self._stop.is_set():
            for proc in self.procs:
                height = -1
                if proc.alive():
                    try:
                        height = clients[proc.index].height()
                    except (httpx.HTTPError, OSError, ValueError, RPCError, KeyError):
                        height = -1
                self.heights[proc.index] = height
            ordered = sorted(self.heights.values(), reverse=True)
            majority = ordered[len(ordered) // 2]
            with self._lock:
                if majority >= 0 and (not self.rises or majority > self.rises[-1][1]):
                    self.rises.append((time.monotonic(), majority))
            self._stop.wait(POLL)  # the polling interval
        for client in clients.values():
            client.close()

    def majority_rise_after(self, moment: float, timeout: float) -> float | None:
        """Seconds from `moment` to the first rise of the majority's height after it; None if
        none came within `timeout` of it."""
        deadline = moment + timeout
        while True:
            with self._lock:
                later = [t for t, _ in self.rises if t > moment]
            if later:
                return later[0] - moment
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL)  # polling the monitor, with a deadline

    def caught_up(self, timeout: float, slack: int = 2) -> bool:
        """Whether every node comes within `slack` heights of the highest within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            heights = list(self.heights.values())
            if min(heights) >= 0 and max(heights) - min(heights) <= slack:
                return True
            time.sleep(POLL)  # polling the monitor, with a deadline
        return False


class Run:
    """The state of one run (module docstring)."""

    def __init__(self, options: Options, echo: Echo) -> None:
        self.options = options
        self.echo = echo
        self.report = Report()
        self.schedule: Schedule = build_schedule(
            options.seed,
            options.nodes,
            options.duration,
            options.faults,
            min_kills=options.min_kills,
            min_partitions=options.min_partitions,
        )
        self.fabric: Fabric | None = None
        self.net: Testnet | None = None
        self.procs: list[NodeProc] = []
        self.twin: NodeProc | None = None
        self.monitor: Monitor | None = None
        self.load: Load | None = None

    # -- the whole run ------------------------------------------------------------------------

    def execute(self) -> Report:
        started = time.monotonic()
        options = self.options
        root = options.workdir or Path(tempfile.mkdtemp(prefix="chaos-"))
        root.mkdir(parents=True, exist_ok=True)
        self.report.workdir = root
        completed = False  # an interrupted or broken run keeps its work directory (the logs)
        try:
            for line in self.schedule.lines():
                self.echo(line)
            count = options.nodes + (1 if self.schedule.twin_of is not None else 0)
            self.fabric = make_fabric(options, count, self.echo)
            self.report.mode = self.fabric.mode
            self.echo(f"mode: {self.fabric.describe()}")
            self.net = create_homes(root, self.fabric, options.nodes, self.schedule.twin_of)
            all_procs = node_procs(self.net, self.fabric)
            self.procs = all_procs[: options.nodes]
            self.twin = all_procs[options.nodes] if self.schedule.twin_of is not None else None
            self._start_nodes()
            self.monitor = Monitor(self.procs)
            self.monitor.start()
            self.load = Load(
                self.net, [p.rpc_url for p in self.procs], self._live, options.seed, options.rate
            )
            self.load.start()
            if self.twin is not None and self.schedule.twin_of is not None:
                self._byzantine(self.twin, self.schedule.twin_of)
            for episode in self.schedule.episodes:
                self._episode(episode)
            self._final_liveness()
            self._collect_and_check()
            completed = True
        finally:
            self._teardown()
            self.report.seconds = time.monotonic() - started
            if completed and self.report.passed and not options.keep and options.workdir is None:
                shutil.rmtree(root, ignore_errors=True)
                self.report.workdir = None
        return self.report

    def _live(self) -> list[int]:
        return [p.index for p in self.procs if p.alive()]

    def _start_nodes(self) -> None:
        for proc in self.procs:
            proc.start()
        deadline = time.monotonic() + START_TIMEOUT
        for proc in self.procs:
            rpc = RPC(proc.rpc_url, timeout=2)
            try:
                while True:
                    if not proc.alive():
                        raise ChaosError(f"{proc.name} exited at start; its log ends:\n{proc.tail()}")
                    try:
                        if rpc.height() >= 2:
                            break
                    except (httpx.HTTPError, OSError, ValueError, RPCError):
                        pass
                    if time.monotonic() > deadline:
                        raise ChaosError(
                            f"{proc.name} did not reach height 2 in {START_TIMEOUT:g}s:\n{proc.tail()}"
                        )
                    time.sleep(POLL)  # polling the node's start, with a deadline
            finally:
                rpc.close()
        self.echo(f"{len(self.procs)} nodes are up and committing")

    # -- the byzantine twin ---------------------------------------------------------------------

    def _byzantine(self, twin: NodeProc, victim_index: int) -> None:
        assert self.net is not None
        victim = self.net.nodes[victim_index].validator_address
        self.echo(f"byzantine: starting a twin of node{victim_index} (validator {victim[:12]})")
        twin.start()
        deadline = time.monotonic() + self.options.byzantine_timeout
        slashed_at: int | None = None
        while time.monotonic() < deadline:
            live = self._live()
            if live:
                rpc = RPC(self.procs[live[0]].rpc_url, timeout=3)
                try:
                    registry = rpc.query("/validators")
                    power = {entry["address"]: entry["power"] for entry in registry}
                    if power.get(victim) == "0":
                        evidence = rpc.query("/evidence")
                        found = [e for e in evidence if e["validator"] == victim]
                        slashed_at = int(found[0]["block_height"]) if found else -1
                        break
                except (httpx.HTTPError, OSError, ValueError, RPCError):
                    pass
                finally:
                    rpc.close()
            time.sleep(0.5)  # polling the application's registry, with a deadline
        twin.kill9()
        if slashed_at is None:
            self.report.problems.append(
                f"byzantine: no evidence against node{victim_index}'s key landed within "
                f"{self.options.byzantine_timeout:g}s (its power is not 0 in /validators)"
            )
            self.echo(self.report.problems[-1])
            return
        if slashed_at < 0:
            self.report.problems.append("byzantine: the power is 0 but /evidence has no record of the twin")
        self.echo(
            f"byzantine: duplicate-vote evidence landed in block {slashed_at}; "
            f"node{victim_index}'s power is 0"
        )
        if not self._consensus_set_drops(victim):
            self.report.problems.append(
                f"byzantine: node{victim_index} is still in the consensus validator set"
            )

    def _consensus_set_drops(self, address: str) -> bool:
        """Whether `/validators` (consensus's set) leaves the slashed validator out within a few
        heights (the update takes effect two heights after its block)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = self._live()
            if live:
                rpc = RPC(self.procs[live[0]].rpc_url, timeout=3)
                try:
                    validators = rpc.call("validators")["validators"]
                    if all(v["address"] != address for v in validators):
                        return True
                except (httpx.HTTPError, OSError, ValueError, RPCError):
                    pass
                finally:
                    rpc.close()
            time.sleep(0.5)  # polling the validator set, with a deadline
        return False

    # -- the episodes ---------------------------------------------------------------------------

    def _proposer(self) -> int | None:
        """The index of the current proposer (from a live node's consensus_state)."""
        assert self.net is not None
        for index in self._live():
            rpc = RPC(self.procs[index].rpc_url, timeout=2)
            try:
                address = rpc.call("consensus_state")["round_state"]["proposer"]["address"]
            except (httpx.HTTPError, OSError, ValueError, RPCError, KeyError):
                continue
            finally:
                rpc.close()
            for node in self.net.nodes[: self.options.nodes]:
                if node.validator_address == address:
                    return node.plan.index
        return None

    def _check_exits(self) -> None:
        """A node that exited without being killed is a finding; it is restarted to go on."""
        for proc in self.procs:
            if proc.proc is not None and proc.proc.poll() is not None:
                code = proc.proc.returncode
                problem = f"{proc.name} exited on its own (code {code}); its log ends: {proc.tail(5)}"
                self.report.problems.append(problem)
                self.echo(problem)
                proc.start()

    def _episode(self, episode: Episode) -> None:
        assert self.fabric is not None and self.monitor is not None
        time.sleep(episode.lead)  # the quiet time the schedule puts before the fault (load runs)
        self._check_exits()
        match episode.kind:
            case FaultKind.KILL:
                target = episode.target if episode.target is not None else self._proposer()
                if target is None:
                    target = 0
                what = f"node{target}" + (" (the proposer)" if episode.target is None else "")
                killed = self.procs[target]
                killed.kill9()
                self.report.kills += 1
                if killed.proc is not None and killed.proc.returncode is not None:
                    self.report.kill_codes.append(killed.proc.returncode)
                self.echo(f"#{episode.number}: kill -9 {what}")
                time.sleep(episode.hold)  # the node stays down this long
                self.procs[target].start()
                self.echo(f"#{episode.number}: restarted node{target}")
            case FaultKind.PARTITION:
                self.fabric.partition(episode.sides)
                self.report.partitions += 1
                self.echo(f"#{episode.number}: {episode.describe().split(': ', 1)[1]}")
                time.sleep(episode.hold)  # the partition lasts this long
                self.fabric.heal_partition()
            case FaultKind.LOSS | FaultKind.DELAY:
                assert episode.target is not None
                loss = episode.amount if episode.kind is FaultKind.LOSS else 0.0
                delay = episode.amount if episode.kind is FaultKind.DELAY else 0.0
                self.fabric.degrade(episode.target, loss=loss, delay_ms=delay)
                self.echo(f"#{episode.number}: {episode.describe().split(': ', 1)[1]}")
                time.sleep(episode.hold)  # the degradation lasts this long
                self.fabric.restore(episode.target)
            case FaultKind.BYZANTINE:
                raise AssertionError("the byzantine twin is not an episode")
            case _:
                assert_never(episode.kind)
        healed = time.monotonic()
        self.report.episodes += 1
        stall = self.monitor.majority_rise_after(healed, 3 * self.options.stall_bound)
        self.report.stalls[episode.number] = stall if stall is not None else 3 * self.options.stall_bound
        if stall is None:
            self.echo(f"#{episode.number}: no new height {3 * self.options.stall_bound:g}s after healing")
        else:
            self.echo(f"#{episode.number}: healed; the majority's next height came {stall:.1f}s later")
        if not self.monitor.caught_up(CATCH_UP_TIMEOUT):
            problem = (
                f"episode #{episode.number}: the nodes did not catch up within {CATCH_UP_TIMEOUT:g}s: "
                f"{self.monitor.heights}"
            )
            self.report.problems.append(problem)
            self.echo(problem)

    # -- after the faults -----------------------------------------------------------------------

    def _final_liveness(self) -> None:
        assert self.monitor is not None
        self._check_exits()
        self.report.problems.extend(stall_problems(self.report.stalls, self.options.stall_bound))
        start = dict(self.monitor.heights)
        deadline = time.monotonic() + 6 * self.options.stall_bound
        while time.monotonic() < deadline:
            if all(self.monitor.heights[i] >= start[i] + FINAL_ADVANCE for i in start):
                return
            time.sleep(POLL)  # polling the monitor, with a deadline
        self.report.problems.append(
            f"liveness: not every node advanced {FINAL_ADVANCE} heights after the last fault: "
            f"{self.monitor.heights}"
        )

    def _collect_and_check(self) -> None:
        assert self.load is not None and self.monitor is not None and self.net is not None
        self.load.stop_sending()
        self.load.drain(30)
        stats = self.load.stats
        acked = {tx_hash: a.height for tx_hash, a in stats.acked.items()}
        self.report.acked = len(acked)
        refused = ", ".join(f"{why}: {n}" for why, n in sorted(stats.refused.items())) or "none"
        self.echo(
            f"load: {stats.sent} sent, {stats.accepted} accepted, {len(acked)} acknowledged as committed "
            f"({sum(1 for a in stats.acked.values() if a.code == 0)} with code 0), "
            f"{stats.unconfirmed} never found; refused: {refused}"
        )
        top = max(acked.values(), default=0)
        deadline = time.monotonic() + CATCH_UP_TIMEOUT
        while min(self.monitor.heights.values()) < top and time.monotonic() < deadline:
            time.sleep(POLL)  # polling the monitor, with a deadline
        self.monitor.stop()
        tip = min(self.monitor.heights.values())
        self.report.heights = tip
        hashes: dict[str, dict[int, str]] = {}
        txs: dict[str, dict[int, frozenset[bytes]]] = {}
        for proc in self.procs:
            hashes[proc.name], txs[proc.name] = self._collect(proc, tip, sorted(set(acked.values())))
        self.report.forks = find_forks(hashes)
        self.report.lost = find_lost(acked, txs)
        for fork in self.report.forks[:5]:
            self.echo(fork.describe())
        for lost in self.report.lost[:5]:
            self.echo(lost.describe())
        for proc in self.procs:
            proc.stop()
        for proc in self.procs:
            try:
                figures = state_figures(proc.node.home, self.net.chain_id)
            except StorageError as exc:
                self.report.problems.append(f"{proc.name}: cannot read its database: {exc}")
                continue
            self.report.problems.extend(figures.problems(proc.name))
        self.echo(f"checked {tip} heights and {len(acked)} acknowledged txs on {len(self.procs)} nodes")

    def _collect(
        self, proc: NodeProc, tip: int, tx_heights: list[int]
    ) -> tuple[dict[int, str], dict[int, frozenset[bytes]]]:
        rpc = RPC(proc.rpc_url, timeout=60)
        hashes: dict[int, str] = {}
        txs: dict[int, frozenset[bytes]] = {}
        try:
            pages = [(low, min(tip, low + BLOCKCHAIN_PAGE - 1)) for low in range(1, tip + 1, BLOCKCHAIN_PAGE)]
            for start in range(0, len(pages), RPC_BATCH):
                calls = [
                    ("blockchain", {"minHeight": str(lo), "maxHeight": str(hi)})
                    for lo, hi in pages[start : start + RPC_BATCH]
                ]
                for answer in rpc.batch(calls):
                    if isinstance(answer, Exception):
                        raise ChaosError(f"{proc.name}: blockchain failed: {answer}")
                    for meta in answer["block_metas"]:
                        hashes[int(meta["header"]["height"])] = meta["block_id"]["hash"]
            wanted = [h for h in tx_heights if h <= tip]
            for start in range(0, len(wanted), RPC_BATCH):
                chunk = wanted[start : start + RPC_BATCH]
                for height, answer in zip(
                    chunk, rpc.batch([("block", {"height": str(h)}) for h in chunk]), strict=True
                ):
                    if isinstance(answer, Exception):
                        continue  # a height the node lacks: every acked tx there counts as lost on it
                    txs[height] = frozenset(
                        sha256(base64.b64decode(tx)) for tx in answer["block"]["data"]["txs"]
                    )
        finally:
            rpc.close()
        return hashes, txs

    def _teardown(self) -> None:
        if self.load is not None:
            self.load.stop_sending()
        if self.monitor is not None:
            self.monitor.stop()
        for proc in [*self.procs, *([self.twin] if self.twin is not None else [])]:
            proc.kill9()
        if self.fabric is not None:
            self.fabric.close()


def run(options: Options, echo: Echo = print) -> Report:
    """Carry out one chaos run and return its report (`Report.passed`, `Report.summary()`)."""
    return Run(options, echo).execute()
