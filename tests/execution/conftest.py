"""Fixtures of the execution tests: a chain with three funded accounts on a real LevelDB."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.execution.chain import Chain, address

ALICE_FUNDS = 1_000_000_000
BOB_FUNDS = 500_000_000
CAROL_FUNDS = 250_000_000


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    """Accounts 0 (alice), 1 (bob) and 2 (carol) funded; account 3 (dave) unknown to genesis."""
    c = Chain(tmp_path / "db", {address(0): ALICE_FUNDS, address(1): BOB_FUNDS, address(2): CAROL_FUNDS})
    yield c
    c.close()
