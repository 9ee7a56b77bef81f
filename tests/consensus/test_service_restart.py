"""The trio consensus service crashing mid-height: on restart it replays its WAL and commits the
block it had already voted for, signing nothing that conflicts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio
import trio.testing

from consensus.app import InitChainRequest, ValidatorUpdate
from consensus.machine import Step, StepChanged, TimeoutConfig
from consensus.mempool import MempoolConfig
from consensus.privval import FilePrivValidator
from consensus.state import ConsensusParams
from consensus.types import Block, Commit
from consensus.wal import WAL
from execution.app import ExchangeApp
from execution.tx import Transfer, build_tx
from node.node import Core, build_core
from primitives.batch_verify import BatchVerifier
from primitives.keys import Address, PrivateKey
from storage.blockstore import BlockStore
from storage.db import Database
from tests.consensus.harness import GENESIS_TIME

MS = 1_000_000
TIMEOUTS = TimeoutConfig(propose=500 * MS, prevote=200 * MS, precommit=200 * MS, commit=100 * MS)


ALICE = PrivateKey.from_seed(b"a" * 32)
# The service stamps votes with the wall clock, so block times (and the nonce window) are now.
TRANSFER = build_tx(ALICE, "restart-chain", time.time_ns() // MS, [Transfer(Address(b"\x01" * 20), 5)])


class Crash(Exception):
    """Stands for the process dying at that instruction."""


def build(home: Path, privval: FilePrivValidator) -> tuple[Core, Database]:
    db = Database(home / "db")
    verifier = BatchVerifier(workers=1)
    genesis = InitChainRequest(
        "restart-chain",
        GENESIS_TIME,
        1,
        (ValidatorUpdate(privval.public_key.raw, 10),),
        json.dumps({"accounts": [{"address": str(ALICE.address), "balance": "1000000"}]}).encode(),
    )
    core = build_core(
        db,
        ExchangeApp(db, "restart-chain", verifier),
        verifier,
        privval,
        WAL.open(home / "wal"),
        genesis,
        ConsensusParams(),
        TIMEOUTS,
        MempoolConfig(),
    )
    return core, db


async def run_until(core: Core, stop: StepChanged, tx_at: int = 0) -> None:
    def listener(step: StepChanged) -> None:
        if step.height == tx_at and step.step == Step.NEW_HEIGHT:
            assert core.mempool.check_tx(TRANSFER).ok
        if step.height == stop.height and step.step == stop.step:
            raise Crash

    core.driver.step_listeners.append(listener)
    try:
        with trio.fail_after(60):  # virtual seconds (autojump clock)
            async with trio.open_nursery() as nursery:
                await nursery.start(core.service.run)
    except BaseExceptionGroup as group:
        if group.subgroup(Crash) is None:
            raise
    else:
        pytest.fail("the service stopped without reaching the crash point")


async def test_restart_mid_height_commits_the_block_it_voted_for(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    key_path, state_path = tmp_path / "pv_key.json", tmp_path / "pv_state.json"
    privval = FilePrivValidator.generate(key_path, state_path)
    core, db = build(tmp_path, privval)
    await run_until(core, StepChanged(3, 0, Step.PRECOMMIT), tx_at=3)
    core.driver.wal.close()
    db.close()
    voted = privval.last  # the precommit for height 3 was being produced: its prevote is signed
    assert (voted.height, voted.step) == (3, 2)

    restarted_pv = FilePrivValidator.load(key_path, state_path)
    core, db = build(tmp_path, restarted_pv)
    assert core.driver.machine.state.last_block_height == 2
    await run_until(core, StepChanged(5, 0, Step.NEW_HEIGHT))
    core.driver.wal.close()
    assert core.driver.double_sign_refusals == 0
    block = Block.decode(BlockStore(db).load_block(3) or b"")
    commit = Commit.decode(BlockStore(db).load_seen_commit(3) or b"")
    assert commit.block_id.hash == block.hash
    prevote_payload = voted.sign_bytes
    assert block.hash in prevote_payload, "height 3 committed a different block than the one voted for"
    assert block.txs == (TRANSFER,), "the mempool was lost in the crash: only the WAL knew this block"
    db.close()
