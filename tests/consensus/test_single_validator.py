"""The single-validator path through the full state machine: propose, prevote, precommit,
commit with its own votes, no special case."""

from __future__ import annotations

from pathlib import Path

from consensus.machine import Step
from consensus.state import validate_block
from consensus.types import BlockIDFlag
from consensus.votes import verify_commit
from tests.consensus.harness import GENESIS_TIME, SoloDriver, keys, make_genesis, next_state


def test_single_validator_commits_consecutive_heights(tmp_path: Path) -> None:
    key = keys(1)[0]
    genesis = make_genesis([(key, 10)])
    driver = SoloDriver(tmp_path, key, genesis)
    driver.app.pending = [b"tx-1", b"tx-2"]
    driver.run_until(5)
    heights = [d.block.height for d in driver.decided]
    assert heights == [1, 2, 3, 4, 5]
    assert driver.decided[0].block.txs == (b"tx-1", b"tx-2")
    assert driver.decided[0].block.header.time == GENESIS_TIME
    for previous, current in zip(driver.decided, driver.decided[1:], strict=False):
        header = current.block.header
        assert header.last_block_id == previous.block_id
        assert header.time > previous.block.header.time
        assert current.block.last_commit == previous.commit
    for decision in driver.decided:
        assert decision.commit.round == 0
        assert [s.flag for s in decision.commit.signatures] == [BlockIDFlag.COMMIT]


def test_steps_follow_tendermint_order(tmp_path: Path) -> None:
    key = keys(1)[0]
    driver = SoloDriver(tmp_path, key, make_genesis([(key, 1)]))
    driver.run_until(1)
    steps = [s.step for s in driver.steps if s.height == 1]
    assert steps == [Step.NEW_HEIGHT, Step.NEW_ROUND, Step.PROPOSE, Step.PREVOTE, Step.PRECOMMIT, Step.COMMIT]


def test_commits_verify_against_the_validator_set(tmp_path: Path) -> None:
    key = keys(1)[0]
    genesis = make_genesis([(key, 7)])
    driver = SoloDriver(tmp_path, key, genesis)
    driver.run_until(3)
    state = genesis
    for decision in driver.decided:
        validate_block(state, decision.block, driver.verifier.verify_batch)
        verify_commit(
            state.chain_id,
            state.validators,
            decision.block_id,
            decision.block.height,
            decision.commit,
            driver.verifier.verify_batch,
        )
        state = next_state(state, decision)


def test_rejected_proposal_moves_to_the_next_round(tmp_path: Path) -> None:
    key = keys(1)[0]
    driver = SoloDriver(tmp_path, key, make_genesis([(key, 1)]))
    driver.app.pending = [b"poison"]
    driver.app.poison = frozenset({b"poison"})
    driver.run_until(1)
    decision = driver.decided[0]
    assert decision.commit.round == 1
    assert decision.block.txs == ()
    round0 = [s.step for s in driver.steps if s.height == 1 and s.round == 0]
    assert Step.PRECOMMIT_WAIT in round0
