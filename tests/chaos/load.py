"""Order load during a chaos run: signed orders and transfers of `node.orderflow.OrderFlow` (so
they follow the tx format, fees included, as `execution.tx.build_tx` builds it) sent at a modest
rate with `broadcast_tx_sync` to a random live node, and each accepted tx confirmed by hash (`tx`)
on some live node: a tx found there is acknowledged as committed, with its height.

A tx accepted but never found is not acknowledged (it may have died in a killed node's mempool);
only acknowledged txs are held to be in their block on every node.
"""

from __future__ import annotations

import base64
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import httpx

from execution.markets import default_markets
from node.keystore import KeyStore
from node.orderflow import OrderFlow
from node.testnet import Testnet
from primitives.hashing import sha256
from tests.chaos.cluster import RPC, RPCError

REQUOTE_EVERY = 10
END_BLOCK_EVERY = 20
"""txs between two `OrderFlow.end_block`: a cancel names an order sent at least this long ago"""
GIVE_UP_AFTER = 120.0
"""seconds after which an accepted tx that is nowhere to be found is no longer looked for"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Acked:
    height: int
    code: int


@dataclass
class LoadStats:
    sent: int = 0
    accepted: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    acked: dict[bytes, Acked] = field(default_factory=dict)
    """tx hash -> where it was found committed"""
    unconfirmed: int = 0


class Load:
    """The sender and the confirmer threads (module docstring)."""

    def __init__(
        self, net: Testnet, urls: Sequence[str], live: Callable[[], list[int]], seed: int, rate: float
    ) -> None:
        store = KeyStore(net.nodes[0].home)
        keys = [store.private_key(account.name) for account in net.accounts]
        self._flow = OrderFlow(
            keys=keys,
            markets=default_markets(),
            chain_id=net.chain_id,
            seed=seed,
            nonce=time.time_ns() // 1_000_000,
            transfer_share=0.2,
            requote_every=REQUOTE_EVERY,
        )
        self._urls = list(urls)
        self._live = live
        self._rng = random.Random(seed)
        self._rate = rate
        self.stats = LoadStats()
        self._pending: dict[bytes, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._send_loop, name="chaos-load", daemon=True),
            threading.Thread(target=self._confirm_loop, name="chaos-confirm", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop_sending(self) -> None:
        self._stop.set()
        self._threads[0].join(30)

    def drain(self, timeout: float) -> None:
        """Keep confirming until nothing is pending or `timeout` passes, then stop."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._pending:
                    break
            time.sleep(0.2)  # polling the confirmer's progress, with a deadline
        self._threads[1].join(5)
        with self._lock:
            self.stats.unconfirmed += len(self._pending)
            self._pending.clear()

    def _client(self, clients: dict[int, RPC]) -> tuple[int, RPC] | None:
        live = self._live()
        if not live:
            return None
        index = self._rng.choice(live)
        if index not in clients:
            clients[index] = RPC(self._urls[index], timeout=5)
        return index, clients[index]

    def _send_loop(self) -> None:
        clients: dict[int, RPC] = {}
        started = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = started + sent / self._rate
            if self._stop.wait(max(0.0, due - time.monotonic())):  # pacing to the rate
                break
            if sent % END_BLOCK_EVERY == 0:
                self._flow.end_block()
            raw = self._flow.next_tx().raw
            sent += 1
            self.stats.sent += 1
            target = self._client(clients)
            if target is None:
                self._refuse("no live node")
                continue
            try:
                result = target[1].call("broadcast_tx_sync", tx=base64.b64encode(raw).decode())
            except (httpx.HTTPError, OSError, ValueError, RPCError) as exc:
                self._refuse(type(exc).__name__)
                continue
            if result.get("code") == 0:
                self.stats.accepted += 1
                with self._lock:
                    self._pending[sha256(raw)] = time.monotonic()
            else:
                self._refuse(f"code {result.get('code')}")
        for client in clients.values():
            client.close()

    def _refuse(self, why: str) -> None:
        self.stats.refused[why] = self.stats.refused.get(why, 0) + 1

    def _confirm_loop(self) -> None:
        clients: dict[int, RPC] = {}
        while True:
            with self._lock:
                pending = list(self._pending.items())
            if self._stop.is_set() and not pending:
                break
            target = self._client(clients)
            if target is not None and pending:
                self._confirm(target[1], pending)
            time.sleep(0.3)  # a polling interval, not a synchronisation
            if self._stop.is_set() and self._drained():
                break
        for client in clients.values():
            client.close()

    def _drained(self) -> bool:
        with self._lock:
            return not self._pending

    def _confirm(self, rpc: RPC, pending: list[tuple[bytes, float]]) -> None:
        now = time.monotonic()
        for start in range(0, len(pending), 10):  # the RPC's batch limit
            chunk = pending[start : start + 10]
            try:
                answers = rpc.batch([("tx", {"hash": "0x" + tx_hash.hex()}) for tx_hash, _ in chunk])
            except (httpx.HTTPError, OSError, ValueError, RPCError):
                return
            with self._lock:
                for (tx_hash, since), answer in zip(chunk, answers, strict=True):
                    if isinstance(answer, dict):
                        code = int(answer["tx_result"]["code"])
                        self.stats.acked[tx_hash] = Acked(height=int(answer["height"]), code=code)
                        self._pending.pop(tx_hash, None)
                    elif now - since > GIVE_UP_AFTER:
                        self.stats.unconfirmed += 1
                        self._pending.pop(tx_hash, None)
