"""The network a chaos run's nodes talk over, and the faults injected into it: partitions, packet
loss and delay on one node's links.

Two fabrics:

- `NetnsFabric` (root, `ip netns` works): every node in a network namespace of its own
  (`chaos<tag>-node<i>`), its `eth0` a veth pair to a bridge `cz<tag>br` in the root namespace
  (address 10.a.b.1/24, from where the harness reaches the RPC); node i is 10.a.b.(10+i) and
  listens on the testnet's usual ports. A partition is a blackhole route to each node across
  the cut in every node's namespace (the RPC from the root namespace stays up). Loss is a
  classic-BPF `cls_bpf` filter in direct-action mode on both ends of the node's veth that drops
  that share of packets (`ld rand`); delay is `tc netem delay` on both ends where the kernel has
  sch_netem, and otherwise a token bucket (`tc tbf`, 256 kbit/s, queueing up to the delay)
  that makes the link slow: the qdiscs this kernel has are named in the mode line.
  The tag is the harness's pid (mod 4096), so parallel runs do not collide; whatever an
  earlier run of that tag left (namespaces, the processes in them, links) is removed first.
- `ProxyFabric` (anywhere): nodes on 127.0.0.1; node i reaches node j through a TCP proxy of
  its own (one listener per ordered pair, on a port bound as 0 and read back), `pex` off so no
  node learns a direct address. A partition closes the pairs' connections and refuses new ones;
  loss holds a chunk for a retransmission timeout with that probability (what TCP makes of a
  lost packet) and cuts the connection with a twentieth of it; delay holds every chunk.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import threading
from collections.abc import Sequence
from typing import Protocol

import trio

from node.config import load_config, write_config
from node.testnet import DEFAULT_BASE_PORT, Testnet, TestnetNode, free_base_port

TBF_RATE = "256kbit"
RETRANSMIT_TIMEOUT = 0.2
"""seconds a proxied chunk that 'lost a packet' waits (Linux's minimum TCP RTO)"""
PROXY_CHUNK = 65536


class FabricError(RuntimeError):
    """The network cannot be set up; the message is one line."""


class Fabric(Protocol):
    mode: str

    def describe(self) -> str: ...

    def hosts(self) -> list[str] | None:
        """One address per node for `create_testnet`, or None for loopback ports."""
        ...

    def base_port(self) -> int: ...

    def configure(self, net: Testnet) -> None:
        """Adjust the written homes to the fabric and start what it needs."""
        ...

    def command(self, index: int, argv: list[str]) -> list[str]:
        """The command line that runs `argv` as node `index`."""
        ...

    def rpc_url(self, node: TestnetNode) -> str: ...

    def partition(self, sides: Sequence[Sequence[int]]) -> None: ...

    def heal_partition(self) -> None: ...

    def degrade(self, index: int, *, loss: float = 0.0, delay_ms: float = 0.0) -> None: ...

    def restore(self, index: int) -> None: ...

    def close(self) -> None: ...


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if check and result.returncode != 0:
        raise FabricError(f"`{' '.join(argv)}` failed: {(result.stderr or result.stdout).strip()}")
    return result


def run_tag() -> int:
    """This run's tag (0..4095): the pid, unique among the runs alive now."""
    return os.getpid() % 4096


def netns_available() -> str | None:
    """None if network namespaces can be used here, else why not (one line)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return "ip or tc (iproute2) not found"
    probe = f"chaos{run_tag():03x}-probe"
    added = _run("ip", "netns", "add", probe, check=False)
    if added.returncode != 0:
        return f"`ip netns add` failed: {added.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


def loss_bytecode(share: float) -> str:
    """A classic BPF program for `tc filter ... bpf da bytecode`: TC_ACT_SHOT (2) for a random
    `share` of packets, TC_ACT_UNSPEC (-1: go on) for the others."""
    threshold = max(0, min(2**32 - 1, round(share * 2**32) - 1))
    rand = 0xFFFFF000 + 56  # SKF_AD_OFF + SKF_AD_RANDOM: A = a random u32
    return f"4,32 0 0 {rand},37 1 0 {threshold},6 0 0 2,6 0 0 {2**32 - 1}"


class NetnsFabric:
    """Namespaces, veths and a bridge (module docstring)."""

    mode = "netns"

    def __init__(self, count: int, tag: int | None = None) -> None:
        self.tag = f"{run_tag() if tag is None else tag:03x}"
        number = int(self.tag, 16)
        self.subnet = f"10.{100 + number // 256}.{number % 256}"
        self.namespaces = [f"chaos{self.tag}-node{i}" for i in range(count)]
        self.links = [f"cz{self.tag}n{i}" for i in range(count)]
        self.bridge = f"cz{self.tag}br"
        self.addresses = [f"{self.subnet}.{10 + i}" for i in range(count)]
        self.netem = False
        self._routes: list[tuple[str, str]] = []
        self._setup()

    def describe(self) -> str:
        delay = "tc netem" if self.netem else f"tc tbf {TBF_RATE} (this kernel has no sch_netem)"
        return (
            f"netns: {len(self.namespaces)} namespaces chaos{self.tag}-node*, bridge {self.bridge} "
            f"{self.subnet}.0/24; partitions by blackhole routes, loss by cls_bpf, delay by {delay}"
        )

    def _setup(self) -> None:
        self.remove_leftovers()
        try:
            in_use = _run("ip", "-o", "-4", "addr", "show").stdout
            if f" {self.subnet}." in in_use:
                raise FabricError(
                    f"{self.subnet}.0/24 is in use on this machine; cannot place the nodes there"
                )
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
            for ns, link, address in zip(self.namespaces, self.links, self.addresses, strict=True):
                _run("ip", "netns", "add", ns)
                _run("ip", "-n", ns, "link", "set", "lo", "up")
                _run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", ns)
                _run("ip", "link", "set", link, "master", self.bridge)
                _run("ip", "link", "set", link, "up")
                _run("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
                _run("ip", "-n", ns, "link", "set", "eth0", "up")
            probe = _run(
                "tc", "qdisc", "add", "dev", self.links[0], "root", "netem", "delay", "1ms", check=False
            )
            self.netem = probe.returncode == 0
            if self.netem:
                _run("tc", "qdisc", "del", "dev", self.links[0], "root", check=False)
        except BaseException:
            self.close()
            raise

    def remove_leftovers(self) -> None:
        """Delete this tag's namespaces (killing what runs in them) and links."""
        listed = _run("ip", "netns", "list", check=False).stdout.split("\n")
        for line in listed:
            name = line.split(" ")[0]
            if not name.startswith(f"chaos{self.tag}-"):
                continue
            for pid in _run("ip", "netns", "pids", name, check=False).stdout.split():
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _run("ip", "netns", "del", name, check=False)
        for line in _run("ip", "-o", "link", "show", check=False).stdout.splitlines():
            parts = line.split(": ")
            if len(parts) > 1:
                name = parts[1].split("@")[0]
                if name.startswith(f"cz{self.tag}"):
                    _run("ip", "link", "del", name, check=False)

    def hosts(self) -> list[str] | None:
        return list(self.addresses)

    def base_port(self) -> int:
        return DEFAULT_BASE_PORT

    def configure(self, net: Testnet) -> None:
        return None

    def command(self, index: int, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespaces[index], *argv]

    def rpc_url(self, node: TestnetNode) -> str:
        return f"http://{self.addresses[node.plan.index]}:{node.plan.rpc_port}"

    def partition(self, sides: Sequence[Sequence[int]]) -> None:
        for side in sides:
            for other in sides:
                if other is side:
                    continue
                for i in side:
                    for j in other:
                        route = (self.namespaces[i], f"{self.addresses[j]}/32")
                        _run("ip", "-n", route[0], "route", "add", "blackhole", route[1])
                        self._routes.append(route)

    def heal_partition(self) -> None:
        routes, self._routes = self._routes, []
        for ns, prefix in routes:
            _run("ip", "-n", ns, "route", "del", "blackhole", prefix, check=False)

    def _ends(self, index: int) -> list[list[str]]:
        """`tc ... dev X` prefixes of both ends of node `index`'s veth."""
        return [["tc"], ["ip", "netns", "exec", self.namespaces[index], "tc"]]

    def degrade(self, index: int, *, loss: float = 0.0, delay_ms: float = 0.0) -> None:
        for tc, dev in zip(self._ends(index), (self.links[index], "eth0"), strict=True):
            if loss > 0:
                _run(*tc, "qdisc", "add", "dev", dev, "clsact")
                _run(*tc, "filter", "add", "dev", dev, "egress", "bpf", "da", "bytecode", loss_bytecode(loss))
            if delay_ms > 0:
                ms = f"{delay_ms:.0f}ms"
                if self.netem:
                    _run(
                        *tc, "qdisc", "add", "dev", dev, "root", "netem", "delay", ms, f"{delay_ms / 5:.0f}ms"
                    )
                else:
                    _run(
                        *tc,
                        "qdisc",
                        "add",
                        "dev",
                        dev,
                        "root",
                        "tbf",
                        "rate",
                        TBF_RATE,
                        "burst",
                        "4kb",
                        "latency",
                        ms,
                    )

    def restore(self, index: int) -> None:
        for tc, dev in zip(self._ends(index), (self.links[index], "eth0"), strict=True):
            _run(*tc, "qdisc", "del", "dev", dev, "clsact", check=False)
            _run(*tc, "qdisc", "del", "dev", dev, "root", check=False)

    def close(self) -> None:
        self._routes.clear()
        self.remove_leftovers()


class ProxyFabric:
    """Loopback ports with a fault-injecting TCP proxy between every pair (module docstring)."""

    mode = "proxy"

    def __init__(self, count: int, seed: int) -> None:
        self.count = count
        self._base = free_base_port(count)
        self._rng = random.Random(seed)
        self._ports: dict[tuple[int, int], int] = {}
        self._targets: dict[int, int] = {}
        self._cut: set[tuple[int, int]] = set()
        self._loss: dict[int, float] = {}
        self._delay: dict[int, float] = {}
        self._scopes: dict[tuple[int, int], set[trio.CancelScope]] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def describe(self) -> str:
        pairs = self.count * (self.count - 1)
        return f"proxy: 127.0.0.1, {pairs} TCP proxies (one per ordered pair of nodes), pex off"

    def hosts(self) -> list[str] | None:
        return None

    def base_port(self) -> int:
        return self._base

    def configure(self, net: Testnet) -> None:
        self._targets = {node.plan.index: node.plan.p2p_port for node in net.nodes}
        self._thread = threading.Thread(target=self._thread_main, name="chaos-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error is not None:
            raise FabricError(f"the TCP proxies did not start: {self._error}")
        for node in net.nodes:
            i = node.plan.index
            peers = ",".join(
                f"{other.node_id}@127.0.0.1:{self._ports[(i, other.plan.index)]}"
                for other in net.nodes
                if other is not node
            )
            config = load_config(node.home)
            write_config(config.with_overrides(**{"p2p.persistent_peers": peers, "p2p.pex": False}))

    def command(self, index: int, argv: list[str]) -> list[str]:
        return argv

    def proxy_port(self, i: int, j: int) -> int:
        """The port node i dials to reach node j."""
        return self._ports[(i, j)]

    def rpc_url(self, node: TestnetNode) -> str:
        return f"http://127.0.0.1:{node.plan.rpc_port}"

    def _thread_main(self) -> None:
        try:
            trio.run(self._main)
        except BaseException as exc:  # reported to configure() through _error
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for i in range(self.count):
                for j in range(self.count):
                    if i == j:
                        continue
                    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
                    self._ports[(i, j)] = listener.socket.getsockname()[1]
                    self._scopes[(i, j)] = set()
                    nursery.start_soon(self._serve, i, j, listener)
            self._ready.set()
            await self._stop.wait()
            nursery.cancel_scope.cancel()

    async def _serve(self, i: int, j: int, listener: trio.SocketListener) -> None:
        async with listener, trio.open_nursery() as nursery:
            while True:
                stream = await listener.accept()
                nursery.start_soon(self._relay, i, j, stream)

    async def _relay(self, i: int, j: int, inbound: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            with self._lock:
                if (i, j) in self._cut:
                    scope.cancel()
                self._scopes[(i, j)].add(scope)
            try:
                async with inbound:
                    outbound = await trio.open_tcp_stream("127.0.0.1", self._targets[j])
                    async with outbound, trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, i, j, inbound, outbound, nursery.cancel_scope)
                        nursery.start_soon(self._pump, i, j, outbound, inbound, nursery.cancel_scope)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass  # a node went away: its peer sees the connection close
            finally:
                with self._lock:
                    self._scopes[(i, j)].discard(scope)

    def _fault(self, i: int, j: int) -> tuple[float, float]:
        """(loss share, delay seconds) on the link between nodes i and j now."""
        loss = max(self._loss.get(i, 0.0), self._loss.get(j, 0.0))
        delay = max(self._delay.get(i, 0.0), self._delay.get(j, 0.0)) / 1000
        return loss, delay

    async def _pump(
        self, i: int, j: int, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](256)

        async def forward() -> None:
            async with receive:
                async for due, data in receive:
                    await trio.sleep_until(due)
                    await sink.send_all(data)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(forward)
                async with send:
                    while data := await source.receive_some(PROXY_CHUNK):
                        loss, delay = self._fault(i, j)
                        if loss and self._rng.random() < loss / 20:
                            break  # the connection breaks
                        if loss and self._rng.random() < loss:
                            delay += RETRANSMIT_TIMEOUT
                        await send.send((trio.current_time() + delay, data))
        finally:
            scope.cancel()

    def _cancel_cut(self) -> None:
        with self._lock:
            for pair in self._cut:
                for scope in self._scopes.get(pair, ()):
                    scope.cancel()

    def partition(self, sides: Sequence[Sequence[int]]) -> None:
        with self._lock:
            for side in sides:
                for other in sides:
                    if other is not side:
                        self._cut.update((i, j) for i in side for j in other)
        if self._token is not None:
            trio.from_thread.run_sync(self._cancel_cut, trio_token=self._token)

    def heal_partition(self) -> None:
        with self._lock:
            self._cut.clear()

    def degrade(self, index: int, *, loss: float = 0.0, delay_ms: float = 0.0) -> None:
        with self._lock:
            if loss:
                self._loss[index] = loss
            if delay_ms:
                self._delay[index] = delay_ms

    def restore(self, index: int) -> None:
        with self._lock:
            self._loss.pop(index, None)
            self._delay.pop(index, None)

    def close(self) -> None:
        token, stop = self._token, self._stop
        if token is not None and stop is not None and self._thread is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
            self._thread.join(10)
