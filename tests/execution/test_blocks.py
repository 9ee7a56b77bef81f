"""Block execution: transfers, every error code for its cause, ordering inside a block, nonce
recording, conservation, app-hash determinism and restart."""

from __future__ import annotations

from pathlib import Path

import pytest

from consensus.app import OK, FinalizeBlockRequest, InitChainRequest
from execution.accounts import NONCE_FUTURE_WINDOW_MS, NONCE_PAST_WINDOW_MS
from execution.app import ExchangeApp
from execution.codes import CODESPACE, Code
from execution.genesis_state import AppStateError
from execution.positions.margin import FEE_COLLECTOR
from execution.tx import MAX_ACTIONS, STANDARD_FEES, ActionKind, Transfer, Tx, UnknownAction, build_tx
from primitives import codec
from primitives.batch_verify import BatchVerifier
from storage import schema
from storage.db import Database, WriteBatch
from tests.execution.chain import CHAIN_ID, GENESIS_TIME, Chain, address, key
from tests.execution.conftest import ALICE_FUNDS, BOB_FUNDS, CAROL_FUNDS
from tests.storage.test_statetree import reference_root

ALICE, BOB, CAROL, DAVE = (address(i) for i in range(4))
FEE = STANDARD_FEES[ActionKind.TRANSFER]
"""the fee of one transfer (the chain's default schedule)"""


def test_transfer_moves_balance_and_emits_events(chain: Chain) -> None:
    raw = chain.transfer(key(0), BOB, 250)
    result = chain.run_block([raw])
    (tx_result,) = result.tx_results
    assert tx_result.code == OK, tx_result.log
    assert chain.balance(ALICE) == ALICE_FUNDS - 250 - FEE
    assert chain.balance(BOB) == BOB_FUNDS + 250
    assert chain.balance(FEE_COLLECTOR) == FEE
    types = [event.type for event in tx_result.events]
    assert types == ["tx", "transfer"]
    transfer = tx_result.events[1]
    assert transfer.attribute("sender") == str(ALICE)
    assert transfer.attribute("recipient") == str(BOB)
    assert transfer.attribute("amount") == "250"
    assert tx_result.events[0].attribute("sender") == str(ALICE)


def test_transfer_to_a_new_account_creates_it(chain: Chain) -> None:
    chain.run_block([chain.transfer(key(1), DAVE, 7)])
    assert chain.balance(DAVE) == 7
    assert chain.nonces(DAVE) == []


def test_multi_action_tx_applies_every_action(chain: Chain) -> None:
    raw = chain.tx(key(0), Transfer(BOB, 10), Transfer(CAROL, 20), Transfer(DAVE, 30))
    (result,) = chain.run_block([raw]).tx_results
    assert result.code == OK, result.log
    assert [e.type for e in result.events] == ["tx", "transfer", "transfer", "transfer"]
    assert chain.balance(ALICE) == ALICE_FUNDS - 60 - 3 * FEE
    assert (chain.balance(BOB), chain.balance(CAROL), chain.balance(DAVE)) == (
        BOB_FUNDS + 10,
        CAROL_FUNDS + 20,
        30,
    )


def _assert_failed(result_code: int, codespace: str, code: Code) -> None:
    assert result_code == code
    assert codespace == CODESPACE


def test_malformed_bytes_change_nothing(chain: Chain) -> None:
    good = chain.transfer(key(0), BOB, 5)
    garbage = [b"", b"\xff\x00garbage", good + b"\x00", good[:-1]]
    results = chain.run_block(garbage).tx_results
    for result in results:
        _assert_failed(result.code, result.codespace, Code.MALFORMED_TX)
        assert result.log.startswith("malformed tx: ")
        assert result.events == ()
    assert chain.balance(ALICE) == ALICE_FUNDS
    assert chain.nonces(ALICE) == []


def test_bad_signature_changes_nothing(chain: Chain) -> None:
    tx = Tx.decode(chain.transfer(key(0), BOB, 5))
    forged = Tx(tx.signer, tx.nonce, tx.actions, bytes(64)).encode()
    (result,) = chain.run_block([forged]).tx_results
    _assert_failed(result.code, result.codespace, Code.BAD_SIGNATURE)
    assert "bad signature" in result.log
    assert chain.balance(ALICE) == ALICE_FUNDS
    assert chain.nonces(ALICE) == []


def test_signature_for_another_chain_is_a_bad_signature(chain: Chain) -> None:
    raw = build_tx(key(0), "some-other-chain", chain.nonce(), [Transfer(BOB, 5)])
    (result,) = chain.run_block([raw]).tx_results
    _assert_failed(result.code, result.codespace, Code.BAD_SIGNATURE)
    assert CHAIN_ID in result.log
    assert chain.balance(BOB) == BOB_FUNDS
    assert chain.nonces(ALICE) == []


def test_reused_nonce_in_a_later_block(chain: Chain) -> None:
    nonce = chain.nonce()
    first = chain.transfer(key(0), BOB, 5, nonce=nonce)
    assert chain.run_block([first]).tx_results[0].code == OK
    again = chain.transfer(key(0), BOB, 6, nonce=nonce)
    (result,) = chain.run_block([again]).tx_results
    _assert_failed(result.code, result.codespace, Code.INVALID_NONCE)
    assert f"nonce {nonce} was already used" in result.log
    assert chain.balance(BOB) == BOB_FUNDS + 5
    assert chain.nonces(ALICE) == [nonce]


def test_same_tx_twice_in_one_block_executes_once(chain: Chain) -> None:
    raw = chain.transfer(key(0), BOB, 5)
    first, second = chain.run_block([raw, raw]).tx_results
    assert first.code == OK
    assert second.code == Code.INVALID_NONCE
    assert chain.balance(BOB) == BOB_FUNDS + 5


@pytest.mark.parametrize(
    ("offset_ms", "ok"),
    [
        (-NONCE_PAST_WINDOW_MS, False),
        (-NONCE_PAST_WINDOW_MS + 1, True),
        (NONCE_FUTURE_WINDOW_MS - 1, True),
        (NONCE_FUTURE_WINDOW_MS, False),
    ],
)
def test_nonce_window_is_open_on_both_ends(chain: Chain, offset_ms: int, ok: bool) -> None:
    block_time = chain.time + 5 * 10**9 + 123_456  # not a whole millisecond: floor division
    block_ms = block_time // 1_000_000
    raw = chain.transfer(key(0), BOB, 5, nonce=block_ms + offset_ms)
    (result,) = chain.run_block([raw], time=block_time).tx_results
    if ok:
        assert result.code == OK, result.log
        assert chain.balance(BOB) == BOB_FUNDS + 5
    else:
        _assert_failed(result.code, result.codespace, Code.INVALID_NONCE)
        assert "outside the window" in result.log
        assert chain.balance(BOB) == BOB_FUNDS
        assert chain.nonces(ALICE) == []


def test_insufficient_funds_records_the_nonce_only(chain: Chain) -> None:
    raw = chain.transfer(key(2), BOB, CAROL_FUNDS + 1)
    (result,) = chain.run_block([raw]).tx_results
    _assert_failed(result.code, result.codespace, Code.INSUFFICIENT_FUNDS)
    assert f"insufficient funds: balance {CAROL_FUNDS - FEE}, need {CAROL_FUNDS + 1}" in result.log
    assert chain.balance(CAROL) == CAROL_FUNDS - FEE  # a failed tx pays its fee
    assert chain.balance(FEE_COLLECTOR) == FEE
    assert chain.balance(BOB) == BOB_FUNDS
    assert chain.nonces(CAROL) == [Tx.decode(raw).nonce]
    (replayed,) = chain.run_block([raw]).tx_results
    assert replayed.code == Code.INVALID_NONCE


def test_failing_action_rolls_back_earlier_actions_of_the_tx(chain: Chain) -> None:
    raw = chain.tx(key(2), Transfer(BOB, 100), Transfer(DAVE, CAROL_FUNDS))
    (result,) = chain.run_block([raw]).tx_results
    _assert_failed(result.code, result.codespace, Code.INSUFFICIENT_FUNDS)
    assert result.log.startswith("action 1: insufficient funds")
    assert [e.type for e in result.events] == ["tx"]
    assert chain.balance(CAROL) == CAROL_FUNDS - 2 * FEE
    assert chain.balance(BOB) == BOB_FUNDS
    assert chain.balance(DAVE) == 0
    assert len(chain.nonces(CAROL)) == 1


def test_an_unfunded_sender_writes_nothing(chain: Chain) -> None:
    """A key that never had funds cannot pay the fee: refused before anything is written, so it
    leaves no account record (no nonce) in state."""
    chain.run_block([])
    before = _state(chain)
    raws = [chain.transfer(key(3), ALICE, 1), chain.tx(key(3), *[Transfer(ALICE, 1)] * 64)]
    for result in chain.run_block(raws).tx_results:
        _assert_failed(result.code, result.codespace, Code.INSUFFICIENT_FEE)
        assert "balance 0 cannot pay the fee" in result.log
        assert result.events == ()
    assert chain.balance(ALICE) == ALICE_FUNDS
    assert schema.account_key(DAVE.raw) not in _state(chain)
    assert _state(chain) == before


def test_the_fee_must_reach_the_chain_minimum(chain: Chain) -> None:
    """A fee below the schedule's minimum for the tx's actions is refused with nothing written; any
    fee at or above it is paid whole to the fee collector."""
    below = chain.tx(key(0), Transfer(BOB, 5), Transfer(CAROL, 5), fee=2 * FEE - 1)
    (result,) = chain.run_block([below]).tx_results
    _assert_failed(result.code, result.codespace, Code.INSUFFICIENT_FEE)
    assert f"{2 * FEE - 1} is below the minimum {2 * FEE}" in result.log
    assert (chain.balance(ALICE), chain.nonces(ALICE)) == (ALICE_FUNDS, [])
    generous = chain.tx(key(0), Transfer(BOB, 5), fee=FEE * 7)
    (result,) = chain.run_block([generous]).tx_results
    assert result.code == OK, result.log
    assert chain.balance(ALICE) == ALICE_FUNDS - 5 - 7 * FEE
    assert chain.balance(FEE_COLLECTOR) == 7 * FEE


def test_a_fee_above_the_balance_is_refused(chain: Chain) -> None:
    raw = chain.transfer(key(2), BOB, 1)
    drain = chain.tx(key(2), Transfer(DAVE, CAROL_FUNDS - FEE - 5))
    first, second = chain.run_block([drain, raw]).tx_results
    assert first.code == OK, first.log
    _assert_failed(second.code, second.codespace, Code.INSUFFICIENT_FEE)
    assert f"balance 5 cannot pay the fee {FEE}" in second.log
    assert chain.balance(CAROL) == 5
    assert len(chain.nonces(CAROL)) == 1


@pytest.mark.parametrize(
    ("actions", "code", "log"),
    [
        (
            (Transfer(address(1), 0),),
            Code.INVALID_ACTION,
            "action 0: transfer amount must be positive, got 0",
        ),
        ((Transfer(address(0), 5),), Code.INVALID_ACTION, "action 0: transfer to self"),
        ((), Code.INVALID_ACTION, f"a tx carries 1 to {MAX_ACTIONS} actions, got 0"),
        (tuple(Transfer(address(1), 1) for _ in range(MAX_ACTIONS + 1)), Code.INVALID_ACTION, "got 65"),
        (
            (UnknownAction(99, codec.encode([99, b"x"])),),
            Code.UNKNOWN_ACTION,
            "action 0: unknown action kind 99",
        ),
        (
            (Transfer(address(1), 5), Transfer(address(1), 0)),
            Code.INVALID_ACTION,
            "action 1: transfer amount",
        ),
    ],
)
def test_invalid_actions(
    chain: Chain, actions: tuple[Transfer | UnknownAction, ...], code: Code, log: str
) -> None:
    raw = chain.tx(key(0), *actions)
    (result,) = chain.run_block([raw]).tx_results
    _assert_failed(result.code, result.codespace, code)
    assert log in result.log
    assert chain.balance(ALICE) == ALICE_FUNDS - Tx.decode(raw).fee
    assert chain.balance(BOB) == BOB_FUNDS
    assert chain.nonces(ALICE) == [Tx.decode(raw).nonce]


def test_two_txs_of_one_sender_apply_in_block_order(chain: Chain) -> None:
    # carol can pay either one alone but not both: the first in block order wins
    first = chain.transfer(key(2), DAVE, CAROL_FUNDS - 10 - 2 * FEE)
    second = chain.transfer(key(2), DAVE, 20)
    r1, r2 = chain.run_block([first, second]).tx_results
    assert r1.code == OK
    assert r2.code == Code.INSUFFICIENT_FUNDS
    assert "balance 10, need 20" in r2.log
    assert chain.balance(DAVE) == CAROL_FUNDS - 10 - 2 * FEE


def test_received_funds_are_spendable_later_in_the_same_block(chain: Chain) -> None:
    pay_dave = chain.transfer(key(0), DAVE, 1_000)
    dave_pays = chain.transfer(key(3), BOB, 600)
    r1, r2 = chain.run_block([pay_dave, dave_pays]).tx_results
    assert (r1.code, r2.code) == (OK, OK)
    assert chain.balance(DAVE) == 400 - FEE
    # and reversed, dave has too little yet
    r3, r4 = chain.run_block([chain.transfer(key(3), BOB, 600), chain.transfer(key(0), DAVE, 1)]).tx_results
    assert r3.code == Code.INSUFFICIENT_FUNDS
    assert r4.code == OK


def test_oldest_nonce_is_dropped_after_one_hundred(chain: Chain) -> None:
    nonces = [chain.nonce() for _ in range(101)]
    txs = [chain.transfer(key(0), BOB, 1, nonce=n) for n in nonces]
    results = chain.run_block(txs).tx_results
    assert all(r.code == OK for r in results)
    assert chain.nonces(ALICE) == nonces[1:]
    # the dropped nonce and anything below the smallest kept one are refused
    for stale in (nonces[0], nonces[0] - 1):
        (result,) = chain.run_block([chain.transfer(key(0), BOB, 1, nonce=stale)]).tx_results
        assert result.code == Code.INVALID_NONCE
        assert "not above the smallest" in result.log


def _state(chain: Chain) -> dict[bytes, bytes]:
    """Every application key the app hash covers (all of `a:` but the app's meta and block time
    and the derived indexes)."""
    outside = (schema.APP_META, schema.APP_BLOCK_TIME)
    return {
        k: v for k, v in chain.db.iterate(schema.APP_PREFIX) if k not in outside and schema.in_state_tree(k)
    }


def test_the_app_hash_is_the_root_of_the_whole_state(chain: Chain) -> None:
    first = chain.run_block([chain.transfer(key(0), BOB, 5)]).app_hash
    assert first == reference_root(_state(chain)) != chain.genesis_hash
    for _ in range(2):
        assert chain.run_block([]).app_hash == reference_root(_state(chain))
    assert chain.app.info().last_block_height == 3


def _replay(path: Path, blocks: list[list[bytes]]) -> list[bytes]:
    chain = Chain(path, {address(0): ALICE_FUNDS, address(1): BOB_FUNDS, address(2): CAROL_FUNDS})
    try:
        for txs in blocks:
            chain.run_block(txs)
        return [chain.genesis_hash, *chain.app_hashes]
    finally:
        chain.close()


def test_app_hash_is_deterministic_and_sensitive(tmp_path: Path, chain: Chain) -> None:
    blocks = [
        [chain.transfer(key(0), BOB, 5), chain.transfer(key(1), CAROL, 7)],
        [b"junk", chain.transfer(key(2), DAVE, CAROL_FUNDS * 2)],
        [chain.transfer(key(3), ALICE, 1), chain.transfer(key(1), DAVE, 3)],
    ]
    first = _replay(tmp_path / "one", blocks)
    second = _replay(tmp_path / "two", blocks)
    assert first == second
    # the app hash commits to state changes (tx results go to the header's results hash):
    # swapping a malformed tx and a failing one changes no state, a different transfer does
    swapped = [blocks[0], [blocks[1][1], blocks[1][0]], blocks[2]]
    assert _replay(tmp_path / "swapped", swapped) == first
    changed = [blocks[0], [b"junk", chain.transfer(key(2), DAVE, 11)], blocks[2]]
    third = _replay(tmp_path / "three", changed)
    assert third[:2] == first[:2]
    assert third[2] != first[2]
    assert third[3] != first[3]  # the hash is chained


def test_genesis_hash_is_the_root_of_the_genesis_state(tmp_path: Path) -> None:
    """It depends on the state alone: not on the initial height, as a root of state does not."""
    balances = {address(0): 5}
    hashes = []
    for name, height, state in [("a", 1, balances), ("b", 7, balances), ("c", 1, {address(0): 6})]:
        c = Chain(tmp_path / name, state, initial_height=height)
        hashes.append(c.genesis_hash)
        c.close()
    assert hashes[0] == hashes[1] != hashes[2]


def test_restart_keeps_height_hash_and_balances(chain: Chain) -> None:
    chain.run_block([chain.transfer(key(0), BOB, 5)])
    last = chain.run_block([chain.transfer(key(1), DAVE, 9)])
    chain.reopen()
    info = chain.app.info()
    assert (info.last_block_height, info.last_block_app_hash) == (2, last.app_hash)
    assert chain.balance(BOB) == BOB_FUNDS + 5 - 9 - FEE
    assert chain.balance(DAVE) == 9
    chain.assert_conservation()
    # the restarted app continues the chain, and check_tx knows the last block time
    after = chain.run_block([chain.transfer(key(1), ALICE, 4)])
    assert after.tx_results[0].code == OK
    assert chain.balance(ALICE) == ALICE_FUNDS - 5 - FEE + 4


def test_info_before_and_after_genesis_commit(tmp_path: Path) -> None:
    c = Chain(tmp_path / "db", {address(0): 10}, initial_height=5)
    assert c.app.info().last_block_height == 0
    assert c.app.info().last_block_app_hash == b""
    result = c.run_block([])
    assert c.app.info().last_block_height == 5
    assert c.app.info().last_block_app_hash == result.app_hash
    c.close()


def test_finalize_does_not_touch_the_database(chain: Chain) -> None:
    chain.run_block([])
    before = list(chain.db.iterate(b""))
    chain.finalize([chain.transfer(key(0), BOB, 5)])
    assert list(chain.db.iterate(b"")) == before
    assert chain.balance(BOB) == BOB_FUNDS  # queries see committed state only
    chain.commit()
    assert chain.balance(BOB) == BOB_FUNDS + 5


def test_commit_state_is_visible_before_the_batch_is_written(chain: Chain) -> None:
    chain.run_block([])
    chain.finalize([chain.transfer(key(0), BOB, 5)])
    batch = WriteBatch()
    chain.app.commit(batch)
    assert chain.balance(BOB) == BOB_FUNDS + 5
    assert chain.app.total_quote() == chain.supply
    chain.db.write(batch)
    assert chain.balance(BOB) == BOB_FUNDS + 5


def test_block_signatures_are_verified_in_one_batch_call(chain: Chain) -> None:
    txs = [chain.transfer(key(i), DAVE, 1) for i in range(3)]
    calls = chain.verifier.batch_calls
    chain.run_block(txs)
    assert chain.verifier.batch_calls == calls + 1


def test_commit_without_a_finalized_block_is_refused(chain: Chain) -> None:
    chain.run_block([])
    with pytest.raises(RuntimeError, match="commit without"):
        chain.app.commit(WriteBatch())


def test_genesis_alone_can_be_committed(tmp_path: Path) -> None:
    c = Chain(tmp_path / "db", {address(0): 10 + FEE}, initial_height=1)
    batch = WriteBatch()
    c.app.commit(batch)
    c.db.write(batch)
    assert c.app.info().last_block_height == 0
    assert c.app.info().last_block_app_hash == c.genesis_hash
    c.assert_conservation()
    c.reopen()
    assert c.balance(address(0)) == 10 + FEE
    assert c.run_block([c.transfer(key(0), address(1), 3)]).tx_results[0].code == OK
    c.close()


def test_out_of_order_finalize_is_refused(chain: Chain) -> None:
    request = FinalizeBlockRequest(3, chain.time, b"", b"", ())
    with pytest.raises(ValueError, match="after height 0"):
        chain.app.finalize_block(request)
    chain.finalize([])
    with pytest.raises(RuntimeError, match="awaits commit"):
        chain.app.finalize_block(FinalizeBlockRequest(2, chain.time, b"", b"", ()))


def test_init_chain_is_refused_for_another_chain_or_twice(tmp_path: Path) -> None:
    c = Chain(tmp_path / "db", {address(0): 10})
    request = InitChainRequest("other-chain", GENESIS_TIME, 1, (), b"{}")
    with pytest.raises(ValueError, match="other-chain"):
        c.app.init_chain(request)
    with pytest.raises(RuntimeError, match="already"):
        c.app.init_chain(InitChainRequest(CHAIN_ID, GENESIS_TIME, 1, (), b"{}"))
    c.close()


def test_init_chain_rejects_a_bad_app_state(tmp_path: Path) -> None:
    db = Database(tmp_path / "fresh")
    app = ExchangeApp(db, CHAIN_ID, BatchVerifier(workers=1))
    bad = b'{"accounts": [{"address": "00", "balance": "1"}]}'
    with pytest.raises(AppStateError, match=r"app_state\.accounts\[0\]\.address"):
        app.init_chain(InitChainRequest(CHAIN_ID, GENESIS_TIME, 1, (), bad))
    db.close()
