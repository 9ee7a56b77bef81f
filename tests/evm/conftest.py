"""The session's local EVM chain (one `hardhat node` for every test that asks for it)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.evm.hardhat import HardhatNode, hardhat_node


@pytest.fixture(scope="session")
def hardhat() -> Iterator[HardhatNode]:
    with hardhat_node() as node:
        yield node
