"""check_tx against the check state (sequencing, reset at commit, recheck) and the proposal calls
(prepare_proposal filtering and capping, process_proposal accepting and rejecting)."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.app import OK, CheckTxKind, ValidatorUpdate
from execution.actions import VALIDATED_ONLY_IN_CHECK, apply_action
from execution.block import KeptTxs
from execution.codes import CODESPACE, Code
from execution.exchange.context import ExchangeContext
from execution.state import StateView
from execution.tx import STANDARD_FEES, Action, ActionKind, OracleVote, Transfer, Tx, build_tx
from primitives.codec import DecodeError
from tests.execution.chain import Chain, address, key
from tests.execution.conftest import ALICE_FUNDS, CAROL_FUNDS
from tests.execution.exchange_helpers import (
    BUY,
    IOC,
    SELL,
    amend,
    btc,
    cancel,
    cancel_all,
    cancel_client,
    exchange_chain,
    place,
    stored_orders,
    usd,
)

ALICE, BOB, CAROL, DAVE = (address(i) for i in range(4))
FEE = STANDARD_FEES[ActionKind.TRANSFER]
NEW, RECHECK = CheckTxKind.NEW, CheckTxKind.RECHECK


def test_check_tx_accepts_a_good_tx(chain: Chain) -> None:
    result = chain.app.check_tx(chain.transfer(key(0), BOB, 5), NEW)
    assert result.ok, result.log
    assert result.sender == str(ALICE)


def test_check_tx_reports_each_failure(chain: Chain) -> None:
    malformed = chain.app.check_tx(b"\x95\x01", NEW)
    assert (malformed.code, malformed.codespace) == (Code.MALFORMED_TX, CODESPACE)
    assert malformed.log.startswith("malformed tx: ")
    other_chain = chain.app.check_tx(build_tx(key(0), "other", chain.nonce(), [Transfer(BOB, 1)]), NEW)
    assert (other_chain.code, other_chain.sender) == (Code.BAD_SIGNATURE, str(ALICE))
    poor = chain.app.check_tx(chain.transfer(key(2), BOB, CAROL_FUNDS + 250), NEW)
    assert poor.code == Code.INSUFFICIENT_FUNDS
    assert poor.log == f"action 0: insufficient funds: balance {CAROL_FUNDS - FEE}, need {CAROL_FUNDS + 250}"
    assert poor.codespace == CODESPACE
    zero = chain.app.check_tx(chain.transfer(key(0), BOB, 0), NEW)
    assert zero.code == Code.INVALID_ACTION
    unfunded = chain.app.check_tx(chain.transfer(key(3), BOB, 1), NEW)
    assert (unfunded.code, unfunded.log) == (
        Code.INSUFFICIENT_FEE,
        f"insufficient fee: balance 0 cannot pay the fee {FEE}",
    )
    cheap = chain.app.check_tx(chain.tx(key(0), Transfer(BOB, 1), fee=FEE - 1), NEW)
    assert cheap.code == Code.INSUFFICIENT_FEE and f"below the minimum {FEE}" in cheap.log


def test_check_tx_sequences_txs_of_one_sender(chain: Chain) -> None:
    first = chain.transfer(key(2), DAVE, CAROL_FUNDS - 100 - 2 * FEE)  # leaves 100 and a fee
    second = chain.transfer(key(2), DAVE, 101)
    assert chain.app.check_tx(first, NEW).ok
    result = chain.app.check_tx(second, NEW)
    assert result.code == Code.INSUFFICIENT_FUNDS
    assert "balance 100, need 101" in result.log
    # a failed check leaves no trace: its nonce is still free
    retry = chain.transfer(key(2), DAVE, 60, nonce=Tx.decode(second).nonce)
    assert chain.app.check_tx(retry, NEW).ok
    broke = chain.app.check_tx(chain.transfer(key(2), DAVE, 1), NEW)
    assert (broke.code, broke.log) == (
        Code.INSUFFICIENT_FEE,
        f"insufficient fee: balance 40 cannot pay the fee {FEE}",
    )
    assert chain.app.check_tx(first, NEW).code == Code.INVALID_NONCE


def test_check_state_credits_are_seen_by_later_checks(chain: Chain) -> None:
    assert chain.app.check_tx(chain.transfer(key(0), DAVE, 50 + FEE), NEW).ok
    assert chain.app.check_tx(chain.transfer(key(3), BOB, 50), NEW).ok


def test_check_state_resets_at_commit(chain: Chain) -> None:
    spend_all = chain.transfer(key(2), DAVE, CAROL_FUNDS - FEE)
    assert chain.app.check_tx(spend_all, NEW).ok
    assert chain.app.check_tx(chain.transfer(key(2), DAVE, 1), NEW).code == Code.INSUFFICIENT_FEE
    chain.run_block([])  # spend_all never made it into a block
    assert chain.app.check_tx(chain.transfer(key(2), DAVE, 1), NEW).ok


def test_recheck_drops_txs_made_invalid_by_a_block(chain: Chain) -> None:
    pending = [chain.transfer(key(2), DAVE, CAROL_FUNDS // 2), chain.transfer(key(0), BOB, 10)]
    included = chain.transfer(key(2), BOB, CAROL_FUNDS // 2 + 1)
    for tx in pending:
        assert chain.app.check_tx(tx, NEW).ok
    chain.run_block([included])
    rechecked = [chain.app.check_tx(tx, RECHECK) for tx in pending]
    assert rechecked[0].code == Code.INSUFFICIENT_FUNDS
    assert rechecked[1].ok
    # the block's own tx, if still in a mempool, is dropped for its used nonce
    assert chain.app.check_tx(included, RECHECK).code == Code.INVALID_NONCE


def test_check_tx_nonce_window_uses_the_last_block_time(chain: Chain) -> None:
    far = chain.time // 1_000_000 + 2 * 86_400_000
    assert chain.app.check_tx(chain.transfer(key(0), BOB, 1, nonce=far), NEW).code == Code.INVALID_NONCE
    chain.run_block([], time=chain.time + 2 * 86_400 * 10**9)
    assert chain.app.check_tx(chain.transfer(key(0), BOB, 1, nonce=far), NEW).ok


def test_signature_checked_at_admission_is_not_verified_again(chain: Chain) -> None:
    txs = [chain.transfer(key(i), DAVE, 1) for i in range(3)]
    for tx in txs:
        assert chain.app.check_tx(tx, NEW).ok
    verified = chain.verifier.verified
    assert chain.app.process_proposal(chain.proposal(txs))
    results = chain.run_block(txs).tx_results
    assert all(r.code == OK for r in results)
    assert chain.verifier.verified == verified


def test_a_tx_admitted_by_check_tx_is_decoded_once(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    txs = [chain.transfer(key(i), DAVE, 1) for i in range(3)]
    decoded: list[bytes] = []
    decode = Tx.decode

    def counting(raw: bytes) -> Tx:
        decoded.append(raw)
        return decode(raw)

    monkeypatch.setattr(Tx, "decode", staticmethod(counting))
    for tx in txs:
        assert chain.app.check_tx(tx, NEW).ok
    assert chain.app.prepare_proposal(chain.proposal(txs)) == txs
    assert chain.app.process_proposal(chain.proposal(txs))
    assert all(r.code == OK for r in chain.run_block(txs).tx_results)
    assert decoded == txs, "check_tx decodes; the proposal checks and the block reuse it"
    assert chain.app.process_proposal(chain.proposal(txs[:1]))
    assert decoded == [*txs, txs[0]], "forgotten once its block has run"


def test_admission_work_verifies_a_batch_that_check_tx_then_finds(chain: Chain) -> None:
    txs = [chain.transfer(key(i), DAVE, 1) for i in range(3)]
    tx = Tx.decode(txs[2])
    forged = Tx(tx.signer, tx.nonce + 1, tx.actions, tx.signature).encode()
    work = chain.app.admission_work([*txs, b"garbage", forged])
    assert chain.verifier.verified == 0, "nothing verified until the work runs"
    work()
    assert chain.verifier.batch_calls == 1 and chain.verifier.verified == 4
    assert all(chain.app.check_tx(tx, NEW).ok for tx in txs)
    assert chain.verifier.verified == 4, "check_tx found the batch's good signatures verified"
    assert chain.app.check_tx(forged, NEW).code == Code.BAD_SIGNATURE  # a failure is not cached
    assert chain.app.check_tx(b"garbage", NEW).code == Code.MALFORMED_TX


def test_kept_txs_are_bounded_oldest_first() -> None:
    kept = KeptTxs(limit=2)
    txs = [build_tx(key(i), "c", 1, [Transfer(DAVE, 1)]) for i in range(3)]
    for tx in txs:
        assert kept.keep(tx) == Tx.decode(tx)
    assert isinstance(kept.keep(b"garbage"), DecodeError) and len(kept) == 2
    kept.forget([txs[2]])
    assert len(kept) == 1


def test_prepare_proposal_keeps_decodable_well_signed_txs_in_order(chain: Chain) -> None:
    good = [chain.transfer(key(i), DAVE, 1) for i in range(3)]
    tx = Tx.decode(good[1])
    forged = Tx(tx.signer, tx.nonce + 1, tx.actions, tx.signature).encode()
    poor = chain.transfer(key(3), ALICE, 1)  # fails at execution, not at proposal time
    txs = [good[0], b"garbage", good[1], forged, poor, good[2]]
    assert chain.app.prepare_proposal(chain.proposal(txs)) == [good[0], good[1], poor, good[2]]


def test_prepare_proposal_caps_total_bytes(chain: Chain) -> None:
    txs = [chain.transfer(key(i % 3), DAVE, i + 1) for i in range(5)]
    size = len(txs[0])
    assert all(len(tx) == size for tx in txs)
    assert chain.app.prepare_proposal(chain.proposal(txs, max_tx_bytes=3 * size)) == txs[:3]
    assert chain.app.prepare_proposal(chain.proposal(txs, max_tx_bytes=3 * size - 1)) == txs[:2]
    assert chain.app.prepare_proposal(chain.proposal(txs, max_tx_bytes=0)) == txs


def test_process_proposal(chain: Chain) -> None:
    good = [chain.transfer(key(0), BOB, 1), chain.transfer(key(3), ALICE, ALICE_FUNDS)]
    assert chain.app.process_proposal(chain.proposal(good))
    assert chain.app.process_proposal(chain.proposal([]))
    assert not chain.app.process_proposal(chain.proposal([*good, b"\x00"]))
    tx = Tx.decode(good[0])
    bad = Tx(tx.signer, tx.nonce, (Transfer(DAVE, 1),), tx.signature).encode()
    calls = chain.verifier.batch_calls
    assert not chain.app.process_proposal(chain.proposal([good[0], bad]))
    assert chain.verifier.batch_calls == calls + 1


def test_recheck_of_order_actions_runs_the_nonce_rule_only(ex: Chain) -> None:
    maker, other = key(0), key(1)
    ex.run_block([ex.tx(maker, place(SELL, btc(5), usd(70_000), client_id=7))])
    pending_cancel = ex.tx(maker, cancel_client(7))
    assert ex.app.check_tx(pending_cancel, NEW).ok
    ex.run_block([ex.tx(other, place(BUY, btc(5), usd(70_000), IOC))])  # fills the order
    assert ex.app.check_tx(ex.tx(maker, cancel_client(7)), NEW).code == Code.ORDER_NOT_FOUND
    # the pending cancel is kept by the recheck (ante only) and fails in its block
    assert ex.app.check_tx(pending_cancel, RECHECK).ok
    [result] = ex.run_block([pending_cancel]).tx_results
    assert result.code == Code.ORDER_NOT_FOUND
    # a used nonce is still refused at recheck, orders or not
    assert ex.app.check_tx(pending_cancel, RECHECK).code == Code.INVALID_NONCE


def test_recheck_of_a_transfer_runs_the_whole_tx(chain: Chain) -> None:
    pending = chain.transfer(key(2), DAVE, CAROL_FUNDS - FEE)
    assert chain.app.check_tx(pending, NEW).ok
    chain.run_block([chain.transfer(key(2), BOB, 1)])
    assert chain.app.check_tx(pending, RECHECK).code == Code.INSUFFICIENT_FUNDS


def test_order_actions_write_nothing_in_check_mode(ex: Chain) -> None:
    # what lets a recheck skip them (`VALIDATED_ONLY_IN_CHECK`)
    ex.run_block([ex.tx(key(0), place(SELL, btc(5), usd(70_000), client_id=7))])
    [order] = stored_orders(ex)
    actions: list[Action] = [
        place(BUY, btc(5), usd(70_000), IOC),
        place(BUY, btc(1), usd(60_000), client_id=3),
        cancel_client(7),
        cancel(order.order_id),
        amend(order.order_id, btc(2), usd(71_000)),
        cancel_all(),
    ]
    assert {type(a) for a in actions} == set(VALIDATED_ONLY_IN_CHECK)
    for action in actions:
        view = StateView(ex.app._committed)
        apply_action(view, address(0), action, ex.height + 1, ExchangeContext(ex.height + 1, ex.app.books))
        assert view.write_set == frozenset(), action


def test_check_tx_sees_each_block_s_oracle_state(tmp_path: Path) -> None:
    # check_tx's exchange context caches prices and staleness until the next commit, not longer
    chain = exchange_chain(tmp_path / "db", oracle={"max_vote_age_blocks": 3, "stale_after_blocks": 3})
    try:
        buy = place(BUY, btc(1), usd(60_000))
        results = []
        for _ in range(6):
            results.append(chain.app.check_tx(chain.tx(key(0), buy), NEW).code)
            chain.run_block([])
        assert results[0] == OK and Code.MARKET_STALE in results, results
        assert chain.app.check_tx(chain.tx(key(0), buy), NEW).code == Code.MARKET_STALE
    finally:
        chain.close()


def test_a_node_may_ask_more_than_the_chain_minimum(chain: Chain) -> None:
    """`[mempool] min_fee`: this node's admission floor; a block still takes the chain's minimum."""
    chain.app.min_fee = 3 * FEE
    low = chain.transfer(key(0), BOB, 1)
    result = chain.app.check_tx(low, NEW)
    assert result.code == Code.INSUFFICIENT_FEE
    assert result.log == f"insufficient fee: {FEE} is below this node's minimum {3 * FEE} ([mempool] min_fee)"
    assert chain.app.check_tx(chain.tx(key(0), Transfer(BOB, 1), fee=3 * FEE), NEW).ok
    assert chain.run_block([low]).tx_results[0].code == OK  # not a rule of the chain


def test_a_validators_free_vote_passes_the_node_minimum(tmp_path: Path) -> None:
    validator = key(10)
    chain = exchange_chain(tmp_path / "db", validators=[ValidatorUpdate(validator.public_key.raw, 10)])
    chain.app.min_fee = 1_000
    vote = chain.tx(validator, OracleVote(((1, usd(65_000)),)))
    assert Tx.decode(vote).fee == 0
    assert chain.app.check_tx(vote, NEW).ok
    chain.close()


def test_pending_txs_per_sender_are_capped(chain: Chain) -> None:
    """`[mempool] max_txs_per_sender`: counted over the txs admitted since the last commit, which
    the recheck after each commit admits again, so it bounds what a sender has pending."""
    chain.app.max_txs_per_sender = 3
    txs = [chain.transfer(key(0), BOB, 1) for _ in range(4)]
    assert [chain.app.check_tx(tx, NEW).code for tx in txs[:3]] == [OK] * 3
    assert (
        chain.app.check_tx(chain.transfer(key(0), BOB, 1), CheckTxKind.DRY_RUN).code == Code.TOO_MANY_PENDING
    )
    refused = chain.app.check_tx(txs[3], NEW)
    assert refused.code == Code.TOO_MANY_PENDING
    assert f"{ALICE} has 3 txs waiting" in refused.log
    assert chain.app.check_tx(chain.transfer(key(1), CAROL, 1), NEW).ok  # other senders are not held
    chain.run_block(txs[:2])  # two leave the pool; the one left is rechecked, two slots free
    assert chain.app.check_tx(txs[2], RECHECK).ok
    assert [chain.app.check_tx(tx, NEW).code for tx in (txs[3], chain.transfer(key(0), BOB, 1))] == [OK, OK]
    assert chain.app.check_tx(chain.transfer(key(0), BOB, 1), NEW).code == Code.TOO_MANY_PENDING
