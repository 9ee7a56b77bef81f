"""Properties of the bridge: any sequence of deposit votes (from any validators, on a few deposits,
with disagreeing claims, and slashes between them) credits each deposit at most once, and exactly
when the validators agreeing on one claim held > 2/3 of the power as a vote was tallied; and a block
of bridge txs gives the same results, events and app hash serially and in the workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution import block as block_module
from execution.accounts import load_account
from execution.bridge.deposits import apply_deposit_vote, load_credited
from execution.bridge.params import store_bridge_params
from execution.bridge.totals import load_totals
from execution.bridge.withdrawals import split_withdrawal_id, withdrawal_id
from execution.codes import ActionError, Code
from execution.state import StateView
from execution.tx import BridgeDepositVote, DepositClaim, Transfer, Withdraw
from execution.validators import RegisteredValidator, store_validator
from execution.workers import WorkerPool
from primitives.keys import Address
from tests.execution.bridge_helpers import (
    PARAMS,
    POWERS,
    RECIPIENT_EVM,
    bridge_chain,
    claim,
    id_of,
    sign_tx,
    validator_address,
    validator_key,
    vote,
    withdrawal_signature,
)
from tests.execution.chain import Chain, Empty, address, key
from tests.execution.exchange_helpers import all_events, assert_ok

DEPOSITS = 3
VARIANTS = 2
"""claims per deposit: variant 0 the honest one, 1 another amount and recipient"""

_step = st.one_of(
    st.tuples(st.just("vote"), st.integers(0, 3), st.integers(0, DEPOSITS - 1), st.integers(0, VARIANTS - 1)),
    st.tuples(st.just("slash"), st.integers(0, 3), st.just(0), st.just(0)),
)


def _claim(deposit: int, variant: int) -> DepositClaim:
    return claim(deposit, amount=10_000 + 1_000 * variant, recipient=address(variant))


@settings(max_examples=150, deadline=None)
@given(steps=st.lists(_step, max_size=30))
def test_votes_credit_each_deposit_at_most_once_and_exactly_over_two_thirds(
    steps: list[tuple[str, int, int, int]],
) -> None:
    view = StateView(Empty())
    store_bridge_params(view, PARAMS)
    powers = list(POWERS)
    for i, power in enumerate(powers):
        store_validator(view, RegisteredValidator(validator_key(i).public_key.raw, power))
    votes: dict[int, dict[int, int]] = {d: {} for d in range(DEPOSITS)}  # deposit -> validator -> variant
    credited: dict[int, int] = {}  # deposit -> variant
    for height, (kind, i, deposit, variant) in enumerate(steps, start=1):
        if kind == "slash":
            if sum(powers) > powers[i]:  # the registry keeps some power (as `execution.evidence`)
                powers[i] = 0
                store_validator(view, RegisteredValidator(validator_key(i).public_key.raw, 0))
            continue
        tx = StateView(view)
        try:
            apply_deposit_vote(
                tx, validator_address(i), BridgeDepositVote((_claim(deposit, variant),)), height
            )
        except ActionError as exc:
            assert exc.code == Code.NOT_A_VALIDATOR and powers[i] == 0
            continue
        tx.apply_to(view)
        if deposit in credited:
            continue
        votes[deposit][i] = variant
        agreeing = sum(powers[v] for v, chosen in votes[deposit].items() if chosen == variant)
        if agreeing * 3 > sum(powers) * 2:
            credited[deposit] = variant
    for deposit in range(DEPOSITS):
        record = load_credited(view, id_of(_claim(deposit, 0)))
        if deposit in credited:
            assert record is not None and record.claim == _claim(deposit, credited[deposit])
        else:
            assert record is None
    for variant in range(VARIANTS):
        expected = sum(_claim(d, v).amount for d, v in credited.items() if v == variant)
        assert load_account(view, address(variant)).balance == expected
    assert load_totals(view).deposited == sum(_claim(d, v).amount for d, v in credited.items())


# -- parallel execution ------------------------------------------------------------------------------

TRADERS = range(4, 20)  # accounts 20.. are the validators' keys


@pytest.fixture(scope="module")
def pool() -> Iterator[WorkerPool]:
    started = WorkerPool(2)
    yield started
    started.close()


def _chain(path: Path, pool: WorkerPool | None) -> Chain:
    return bridge_chain(path, balances={address(i): 10**9 for i in TRADERS}, pool=pool)


def test_bridge_txs_run_the_same_in_the_workers(
    tmp_path: Path, pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(block_module, "worth_parallel", lambda lanes: True)
    serial, parallel = _chain(tmp_path / "serial", None), _chain(tmp_path / "workers", pool)
    for chain in (serial, parallel):
        chain.run_block([])
    withdraws = [serial.tx(key(i), Withdraw(RECIPIENT_EVM, 5_000 + i)) for i in TRADERS]
    votes = [vote(serial, v, claim(n), claim(n + 10)) for n in range(4) for v in range(4)]
    block = [tx for pair in zip(withdraws, votes, strict=True) for tx in pair]
    expected = serial.run_block(block)
    assert_ok(expected.tx_results)
    got = parallel.run_block(block)
    assert parallel.app.last_block_parallel
    assert (got.tx_results, got.events, got.app_hash) == (
        expected.tx_results,
        expected.events,
        expected.app_hash,
    )
    ids = [int(e["id"]) for e in all_events(expected.tx_results, "bridge_withdrawal")]
    assert len(ids) == len(TRADERS) and len(all_events(expected.tx_results, "bridge_deposit")) == 8
    amounts = {int(e["id"]): int(e["amount"]) for e in all_events(expected.tx_results, "bridge_withdrawal")}
    signatures = [
        sign_tx(serial, v, *(withdrawal_signature(v, wid, RECIPIENT_EVM, amounts[wid]) for wid in ids[k::4]))
        for v in (1, 2, 3)
        for k in range(4)
    ]
    more = [serial.tx(key(i), Withdraw(RECIPIENT_EVM, 7_000), Transfer(address(4), 1)) for i in TRADERS[1:]]
    block = signatures + more + [vote(serial, 0, claim(n)) for n in range(4)]
    expected = serial.run_block(block)
    got = parallel.run_block(block)
    assert parallel.app.last_block_parallel
    assert (got.tx_results, got.events, got.app_hash) == (
        expected.tx_results,
        expected.events,
        expected.app_hash,
    )
    assert len(all_events(expected.tx_results, "bridge_withdrawal_signed")) == len(ids)
    for chain in (serial, parallel):
        chain.close()


def test_withdrawal_ids_are_per_owner() -> None:
    owner = Address(bytes(range(20)))
    assert split_withdrawal_id(withdrawal_id(owner.raw, 7)) == (owner, 7)
    assert withdrawal_id(owner.raw, 1) >> 64 == int.from_bytes(owner.raw, "big")
