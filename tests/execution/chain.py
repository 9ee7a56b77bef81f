"""Test helper: an `ExchangeApp` on a real LevelDB driven through init_chain (with genesis validators
if given), finalize_block (with misbehavior if given) and commit (the batch written with
`Database.write`, as the node does), checking conservation after every block."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

from consensus.app import (
    FinalizeBlockRequest,
    FinalizeBlockResult,
    InitChainRequest,
    Misbehavior,
    ProposalRequest,
    ValidatorUpdate,
)
from execution.app import ExchangeApp
from execution.indexes import rebuild as rebuild_indexes
from execution.oracle.prices import prices_at
from execution.positions.margin import margin_summary
from execution.risk.funding import funding_imbalances
from execution.state import CommittedState
from execution.tx import Action, Transfer, build_tx
from execution.workers import WorkerPool
from primitives.batch_verify import BatchVerifier, SignedItem
from primitives.keys import Address, PrivateKey
from storage import schema
from storage.db import Database, WriteBatch

CHAIN_ID = "derivd-test"
GENESIS_TIME = 1_700_000_000 * 10**9
BLOCK_INTERVAL = 10**9
GENESIS_MS = GENESIS_TIME // 1_000_000


def key(i: int) -> PrivateKey:
    """A fixed test key."""
    return PrivateKey.from_seed(bytes([i + 1]) * 32)


def address(i: int) -> Address:
    return key(i).address


def app_state_json(balances: Mapping[Address, int], extra: Mapping[str, object] | None = None) -> bytes:
    """The genesis app_state of `balances`, with the other sections of `extra` (markets, oracle)."""
    accounts = [{"address": str(addr), "balance": str(amount)} for addr, amount in balances.items()]
    return json.dumps({"accounts": accounts, **(extra or {})}).encode()


class Empty:
    """A state with no keys (a `StateReader` to build views on)."""

    def get(self, key: bytes) -> bytes | None:
        return None

    def iterate(self, prefix: bytes, *, start: bytes | None = None) -> list[tuple[bytes, bytes]]:
        return []


class CountingVerifier(BatchVerifier):
    """A batch verifier that counts its verify_batch calls."""

    def __init__(self) -> None:
        super().__init__(workers=1)
        self.batch_calls = 0

    def verify_batch(self, items: Sequence[SignedItem]) -> list[bool]:
        self.batch_calls += 1
        return super().verify_batch(items)


class Chain:
    """One node's application and database, advanced block by block."""

    def __init__(
        self,
        path: Path,
        balances: Mapping[Address, int],
        *,
        chain_id: str = CHAIN_ID,
        initial_height: int = 1,
        validators: Sequence[ValidatorUpdate] = (),
        app_state: Mapping[str, object] | None = None,
        pool: WorkerPool | None = None,
    ) -> None:
        self.path = path
        self.chain_id = chain_id
        self.db = Database(path)
        self.verifier = CountingVerifier()
        self.app = ExchangeApp(self.db, chain_id, self.verifier, pool=pool)
        self.supply = sum(balances.values())
        self.height = initial_height - 1
        self.time = GENESIS_TIME
        self._next_nonce = GENESIS_MS
        result = self.app.init_chain(
            InitChainRequest(
                chain_id, GENESIS_TIME, initial_height, tuple(validators), app_state_json(balances, app_state)
            )
        )
        self.genesis_hash = result.app_hash
        self.app_hashes: list[bytes] = []

    def nonce(self) -> int:
        """A fresh nonce inside the window of the coming blocks."""
        self._next_nonce += 1
        return self._next_nonce

    def tx(
        self, signer: PrivateKey, *actions: Action, nonce: int | None = None, fee: int | None = None
    ) -> bytes:
        """A signed tx paying `fee` (None: the default schedule's minimum, `standard_fee`)."""
        return build_tx(signer, self.chain_id, self.nonce() if nonce is None else nonce, actions, fee=fee)

    def transfer(self, signer: PrivateKey, to: Address, amount: int, *, nonce: int | None = None) -> bytes:
        return self.tx(signer, Transfer(to, amount), nonce=nonce)

    def finalize(
        self, txs: Sequence[bytes], time: int | None = None, misbehavior: Sequence[Misbehavior] = ()
    ) -> FinalizeBlockResult:
        """finalize_block of the next height, without commit."""
        self.height += 1
        self.time = self.time + BLOCK_INTERVAL if time is None else time
        request = FinalizeBlockRequest(
            self.height, self.time, b"\x11" * 32, b"\x22" * 20, tuple(txs), tuple(misbehavior)
        )
        return self.app.finalize_block(request)

    def commit(self) -> None:
        batch = WriteBatch()
        assert self.app.commit(batch) == 0
        self.db.write(batch)
        self.assert_conservation()
        self.assert_no_negative_account()

    def run_block(
        self, txs: Sequence[bytes], time: int | None = None, misbehavior: Sequence[Misbehavior] = ()
    ) -> FinalizeBlockResult:
        result = self.finalize(txs, time, misbehavior)
        assert len(result.tx_results) == len(txs)
        self.commit()
        self.app_hashes.append(result.app_hash)
        return result

    def proposal(self, txs: Sequence[bytes], max_tx_bytes: int = 0) -> ProposalRequest:
        return ProposalRequest(
            self.height + 1, self.time + BLOCK_INTERVAL, b"\x22" * 20, tuple(txs), max_tx_bytes
        )

    def assert_conservation(self) -> None:
        """Accounts' balances plus positions' quote balances plus the markets' funding pools
        (`ExchangeApp.total_quote`) equal the genesis supply plus what the bridge credited minus
        what it withdrew (`ExchangeApp.bridge_totals`), each funding pool holds exactly what the
        unsettled positions owe net plus its dust (`execution.risk.funding.funding_imbalances`), and on
        every market the position sizes sum to zero."""
        assert self.app.total_supply() == self.supply
        bridge = self.app.bridge_totals()
        assert self.app.total_quote() == self.supply + bridge.deposited - bridge.withdrawn
        assert all(v == 0 for v in funding_imbalances(CommittedState(self.db)).values())
        assert all(total == 0 for total in self.app.position_size_sums().values())
        self.assert_derived_indexes()

    def assert_derived_indexes(self) -> None:
        """The derived indexes kept (client order ids, owners' markets) are exactly what
        `execution.indexes.rebuild` makes of the state (as a node restored from a snapshot has)."""
        state = CommittedState(self.db)
        kept = [(key, value) for prefix in schema.DERIVED_PREFIXES for key, value in state.iterate(prefix)]
        assert sorted(kept) == rebuild_indexes(state.iterate(schema.APP_PREFIX))

    def assert_no_negative_account(self) -> None:
        """Every account with a position record has a value >= 0 at the oracle prices (an account
        without one is its balance, never negative)."""
        state = CommittedState(self.db)
        owners = dict.fromkeys(key[6:26] for key, _ in state.iterate(b"a:pos:"))
        prices = prices_at(state)
        for owner in owners:
            value = margin_summary(state, Address(owner), prices).value
            assert value >= 0, f"account {owner.hex()} ends block {self.height} with value {value}"

    def account(self, addr: Address) -> dict[str, object]:
        result = self.app.query(f"/accounts/{addr}", b"", 0, False)
        assert result.code == 0, result.log
        value: dict[str, object] = json.loads(result.value)
        return value

    def balance(self, addr: Address) -> int:
        return int(str(self.account(addr)["balance"]))

    def nonces(self, addr: Address) -> list[int]:
        raw = self.account(addr)["nonces"]
        assert isinstance(raw, list)
        return [int(n) for n in raw]

    def reopen(self) -> None:
        """Close and reopen the database with a new application, as a restarted node does."""
        self.db.close()
        self.db = Database(self.path)
        self.verifier = CountingVerifier()
        self.app = ExchangeApp(self.db, self.chain_id, self.verifier)

    def close(self) -> None:
        self.verifier.close()
        self.db.close()
