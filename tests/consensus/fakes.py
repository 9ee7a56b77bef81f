"""Test doubles for the gossip reactors: a `FakePeer` that records what a reactor sends it (and can
refuse, as a full send queue does), and helpers that build a real node core (`build_core`) over a
LevelDB in a temporary directory and run its consensus service under trio's mock clock."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from consensus.app import InitChainRequest, ValidatorUpdate
from consensus.machine import Step, StepChanged, TimeoutConfig
from consensus.mempool import MempoolConfig
from consensus.privval import FilePrivValidator, LastSignState
from consensus.state import ConsensusParams
from consensus.wal import WAL
from execution.app import ExchangeApp
from node.node import Core, build_core
from p2p.base import NodeInfo
from primitives.batch_verify import BatchVerifier
from primitives.files import OSFile
from primitives.keys import PrivateKey
from storage.db import Database
from tests.consensus.harness import GENESIS_TIME

MS = 1_000_000
TIMEOUTS = TimeoutConfig(propose=500 * MS, prevote=200 * MS, precommit=200 * MS, commit=100 * MS)
CHAIN_ID = "reactor-chain"


@dataclass
class FakePeer:
    """A connected peer as a reactor sees it: `try_send` records (channel, bytes) unless the peer
    is `full` or `gone`; every recorded send wakes `wait_sent`."""

    peer_id: str
    outbound: bool = True
    persistent: bool = False
    full: bool = False
    gone: bool = False
    sent: list[tuple[int, bytes]] = field(default_factory=list)
    refused: list[tuple[int, bytes]] = field(default_factory=list)
    _values: dict[str, Any] = field(default_factory=dict)
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def id(self) -> str:
        return self.peer_id

    @property
    def node_info(self) -> NodeInfo:
        return NodeInfo(self.peer_id, "tcp://127.0.0.1:26656", CHAIN_ID, "0.1.0", b"", self.peer_id)

    @property
    def is_outbound(self) -> bool:
        return self.outbound

    @property
    def is_persistent(self) -> bool:
        return self.persistent

    @property
    def remote_address(self) -> str:
        return "127.0.0.1:26656"

    def try_send(self, channel_id: int, message: bytes) -> bool:
        if self.full or self.gone:
            self.refused.append((channel_id, message))
            return False
        self.sent.append((channel_id, message))
        self._changed.set()
        self._changed = trio.Event()
        return True

    def get(self, key: str) -> Any:
        return self._values.get(key)

    def set(self, key: str, value: Any) -> None:
        self._values[key] = value

    def on(self, channel_id: int) -> list[bytes]:
        """What was sent on one channel, in order."""
        return [message for channel, message in self.sent if channel == channel_id]

    async def wait_sent(self, condition: Callable[[], bool]) -> None:
        """Until `condition()` holds, re-checked after each send to this peer."""
        while not condition():
            await self._changed.wait()

    async def wait_count(self, count: int) -> None:
        """Until at least `count` messages were sent to this peer."""
        while len(self.sent) < count:
            await self._changed.wait()


# -- real cores -----------------------------------------------------------------------------------


def validator_keys(n: int) -> list[PrivateKey]:
    return [PrivateKey.from_seed(bytes([i + 1]) * 32) for i in range(n)]


def genesis_request(members: Sequence[PrivateKey], chain_id: str = CHAIN_ID) -> InitChainRequest:
    return InitChainRequest(
        chain_id,
        GENESIS_TIME,
        1,
        tuple(ValidatorUpdate(k.public_key.raw, 10) for k in members),
        json.dumps({"accounts": []}).encode(),
    )


@dataclass
class Node:
    core: Core
    db: Database
    verifier: BatchVerifier
    privval: FilePrivValidator

    def close(self) -> None:
        self.core.driver.wal.close()
        self.verifier.close()
        self.db.close()


def open_node(home: Path, key: PrivateKey, genesis: InitChainRequest) -> Node:
    """A node core over a fresh (or existing) LevelDB under `home`, signing with `key`."""
    home.mkdir(parents=True, exist_ok=True)
    db = Database(home / "db")
    verifier = BatchVerifier(workers=1)
    privval = FilePrivValidator(key, OSFile(home / "pv_state.json"), LastSignState())
    core = build_core(
        db,
        ExchangeApp(db, genesis.chain_id, verifier),
        verifier,
        privval,
        WAL.open(home / "wal"),
        genesis,
        ConsensusParams(),
        TIMEOUTS,
        MempoolConfig(),
    )
    return Node(core, db, verifier, privval)


class Reached(Exception):
    """Raised from a step listener to stop the service where a test wants it."""


async def run_to_height(core: Core, height: int) -> None:
    """Run `core`'s consensus service until it enters `height` (NEW_HEIGHT), then stop it."""

    def listener(step: StepChanged) -> None:
        if step.height == height and step.step == Step.NEW_HEIGHT:
            raise Reached

    core.driver.step_listeners.append(listener)
    try:
        with trio.fail_after(600):  # virtual seconds
            async with trio.open_nursery() as nursery:
                await nursery.start(core.service.run)
    except BaseExceptionGroup as group:
        if group.subgroup(Reached) is None:
            raise
    else:
        raise AssertionError(f"the service stopped before height {height}")
    finally:
        core.driver.step_listeners.remove(listener)
