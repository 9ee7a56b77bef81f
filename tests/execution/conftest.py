"""Fixtures of the execution tests on a real LevelDB: `chain`, three funded accounts; `ex`, the
exchange's genesis (markets, funded traders), its books checked against state at the end."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.execution.chain import Chain, address
from tests.execution.exchange_helpers import assert_books_match_state, exchange_chain

ALICE_FUNDS = 1_000_000_000
BOB_FUNDS = 500_000_000
CAROL_FUNDS = 250_000_000


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    """Accounts 0 (alice), 1 (bob) and 2 (carol) funded; account 3 (dave) unknown to genesis."""
    c = Chain(tmp_path / "db", {address(0): ALICE_FUNDS, address(1): BOB_FUNDS, address(2): CAROL_FUNDS})
    yield c
    c.close()


@pytest.fixture
def ex(tmp_path: Path) -> Iterator[Chain]:
    """The exchange chain of `exchange_helpers`; at the end its books must match its state."""
    chain = exchange_chain(tmp_path / "db")
    yield chain
    assert_books_match_state(chain)
    chain.close()
