"""Unit tests of the consensus machine's own mechanics (timeouts, bookkeeping, message checks),
beside the vote rules (test_rules.py) and the multi-node scenarios (test_scenarios.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.machine import SECOND, Step, TimeoutConfig
from node.config import BaseConfig, Config
from node.node import timeout_config


def test_default_timeouts_are_cometbft_s_and_the_node_config_s() -> None:
    t = TimeoutConfig()
    half = SECOND // 2
    assert (t.propose, t.propose_delta, t.prevote, t.prevote_delta) == (3 * SECOND, half, SECOND, half)
    assert (t.precommit, t.precommit_delta, t.commit, t.skip_timeout_commit) == (SECOND, half, SECOND, False)
    assert timeout_config(Config(home=Path("home"), base=BaseConfig(moniker="m"))) == t


@pytest.mark.parametrize(
    ("step", "round_", "expected"),
    [
        (Step.PROPOSE, 0, 30),
        (Step.PROPOSE, 3, 30 + 3 * 4),
        (Step.PREVOTE_WAIT, 0, 10),
        (Step.PREVOTE_WAIT, 2, 10 + 2 * 5),
        (Step.PRECOMMIT_WAIT, 0, 20),
        (Step.PRECOMMIT_WAIT, 5, 20 + 5 * 6),
    ],
)
def test_a_timeout_grows_by_its_delta_each_round(step: Step, round_: int, expected: int) -> None:
    t = TimeoutConfig(
        propose=30, propose_delta=4, prevote=10, prevote_delta=5, precommit=20, precommit_delta=6, commit=1
    )
    assert t.for_step(step, round_) == expected


@pytest.mark.parametrize("step", [Step.NEW_HEIGHT, Step.NEW_ROUND, Step.PREVOTE, Step.PRECOMMIT, Step.COMMIT])
def test_steps_without_a_timeout_have_none(step: Step) -> None:
    with pytest.raises(ValueError, match="no timeout"):
        TimeoutConfig().for_step(step, 0)
