"""Property test: random blocks of transfers among a few accounts, valid and invalid, paying
enough fee or not, executed by the app on a real LevelDB, match a simple reference model of
balances, fees collected and used nonces, keep conservation after every block, and give the same
app hashes when replayed on a fresh database."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from consensus.app import OK
from execution.codes import Code
from execution.positions.margin import FEE_COLLECTOR
from execution.tx import STANDARD_FEES, ActionKind, Transfer, Tx
from tests.execution.chain import BLOCK_INTERVAL, Chain, address, key

PEOPLE = 4
FUNDS = (1_000, 300, 150, 0)
FEE = STANDARD_FEES[ActionKind.TRANSFER]


@dataclass(frozen=True)
class Op:
    sender: int
    recipient: int
    amount: int
    nonce: str  # "fresh", "reuse" or "stale"
    damage: str  # "none", "signature" or "bytes"
    fee: int


ops = st.builds(
    Op,
    sender=st.integers(0, PEOPLE - 1),
    recipient=st.integers(0, PEOPLE - 1),
    amount=st.one_of(st.integers(0, 400), st.sampled_from([1, 1_000, 1_001])),
    nonce=st.sampled_from(["fresh", "fresh", "fresh", "reuse", "stale"]),
    damage=st.sampled_from(["none"] * 8 + ["signature", "bytes"]),
    fee=st.sampled_from([FEE, FEE, FEE, FEE - 1, 0, 3 * FEE]),
)


class Model:
    """Balances and used nonces, and the code each tx should get."""

    def __init__(self) -> None:
        self.balances = dict(enumerate(FUNDS))
        self.used: dict[int, set[int]] = {i: set() for i in range(PEOPLE)}
        self.fees = 0

    def apply(self, op: Op, nonce: int, window_ok: bool) -> int:
        if op.damage == "bytes":
            return Code.MALFORMED_TX
        if op.damage == "signature":
            return Code.BAD_SIGNATURE
        if nonce in self.used[op.sender] or not window_ok:
            return Code.INVALID_NONCE
        if op.fee < FEE or op.fee > self.balances[op.sender]:
            return Code.INSUFFICIENT_FEE
        self.used[op.sender].add(nonce)
        self.balances[op.sender] -= op.fee
        self.fees += op.fee
        if op.amount == 0 or op.sender == op.recipient:
            return Code.INVALID_ACTION
        if self.balances[op.sender] < op.amount:
            return Code.INSUFFICIENT_FUNDS
        self.balances[op.sender] -= op.amount
        self.balances[op.recipient] += op.amount
        return OK


def _raw(chain: Chain, op: Op, nonce: int) -> bytes:
    raw = chain.tx(key(op.sender), Transfer(address(op.recipient), op.amount), nonce=nonce, fee=op.fee)
    if op.damage == "signature":
        tx = Tx.decode(raw)
        return Tx(
            tx.signer, tx.nonce, (Transfer(address(op.recipient), op.amount + 1),), tx.signature, tx.fee
        ).encode()
    if op.damage == "bytes":
        return raw[:-3]
    return raw


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(ops, max_size=8), min_size=1, max_size=5))
def test_random_transfers_match_the_model(blocks: list[list[Op]]) -> None:
    balances = {address(i): amount for i, amount in enumerate(FUNDS)}
    with tempfile.TemporaryDirectory() as tmp:
        chain = Chain(Path(tmp) / "one", balances)
        model = Model()
        issued: list[tuple[int, int]] = []  # (sender, nonce) of every tx built
        all_txs: list[list[bytes]] = []
        try:
            for block in blocks:
                block_ms = (chain.time + BLOCK_INTERVAL) // 1_000_000
                txs, expected = [], []
                for op in block:
                    if op.nonce == "reuse" and issued:
                        nonce = issued[-1][1]
                    elif op.nonce == "stale":
                        nonce = block_ms - 3 * 86_400_000
                    else:
                        nonce = chain.nonce()
                    issued.append((op.sender, nonce))
                    txs.append(_raw(chain, op, nonce))
                    expected.append(
                        model.apply(
                            op, nonce, window_ok=block_ms - 2 * 86_400_000 < nonce < block_ms + 86_400_000
                        )
                    )
                results = chain.run_block(txs).tx_results  # asserts conservation
                assert [r.code for r in results] == expected, [r.log for r in results]
                all_txs.append(txs)
                for i in range(PEOPLE):
                    assert chain.balance(address(i)) == model.balances[i]
                    assert chain.nonces(address(i)) == sorted(model.used[i])
                assert chain.balance(FEE_COLLECTOR) == model.fees
            hashes = [chain.genesis_hash, *chain.app_hashes]
        finally:
            chain.close()
        replay = Chain(Path(tmp) / "two", balances)
        try:
            for txs in all_txs:
                replay.run_block(txs)
            assert [replay.genesis_hash, *replay.app_hashes] == hashes
        finally:
            replay.close()
