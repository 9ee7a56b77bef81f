"""The bridge in execution (`execution.bridge`): deposits credited once at > 2/3 of the power and
never by a minority or by disagreeing claims, withdrawals (funds, margin, minimum, isolated
accounts), withdrawal and valset signatures and their tallies, new valsets after a slash or a key
change, bridge keys, fees, queries, and a chain without a bridge. Conservation with the bridge term
is checked after every block by `Chain.commit`."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from consensus.app import OK, Misbehavior
from execution.accounts import isolated_address, subaccount_address
from execution.bridge.deposits import claim_hash, deposit_vote, load_credited, pending_deposit_count
from execution.bridge.evm import (
    SECP256K1_ORDER,
    address_of_secret,
    format_evm_address,
    sign_digest,
    valset_hash,
    withdrawal_digest,
)
from execution.bridge.params import key_proof_digest, load_bridge_params, store_bridge_params
from execution.bridge.totals import load_totals
from execution.bridge.valsets import (
    Valset,
    bridge_key,
    current_valset,
    load_valset,
    pending_valset_nonces,
    sign_valset,
    store_valset,
    valset_signatures,
)
from execution.bridge.withdrawals import (
    load_withdrawal,
    owner_withdrawals,
    pending_withdrawals,
    withdrawal_id,
    withdrawal_signatures,
)
from execution.codes import Code
from execution.fees import FeeParams, load_fee_params, minimum_fee
from execution.genesis_state import default_exchange_app_state
from execution.state import CommittedState, StateView
from execution.tx import (
    STANDARD_FEES,
    ActionKind,
    BridgeDepositVote,
    BridgeSign,
    SetBridgeKey,
    Transfer,
    Tx,
    UseIsolated,
    UseSubaccount,
    Withdraw,
)
from storage import schema
from tests.execution.bridge_helpers import (
    CONTRACT,
    DOMAIN,
    EVM_CHAIN_ID,
    FUNDS,
    GENESIS_VALIDATORS,
    MIN_DEPOSIT,
    MIN_WITHDRAWAL,
    PARAMS,
    POWERS,
    RECIPIENT_EVM,
    TOTAL,
    bridge_chain,
    bridge_secret,
    bridge_section,
    claim,
    codes,
    evm,
    id_of,
    set_key,
    sign_tx,
    validator_address,
    validator_key,
    valset_signature,
    vote,
    withdrawal_signature,
)
from tests.execution.chain import Chain, Empty, address, key
from tests.execution.exchange_helpers import BTC, BUY, IOC, SELL, all_events, btc, place, usd

WITHDRAW_FEE = STANDARD_FEES[ActionKind.TRANSFER]


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Chain]:
    c = bridge_chain(tmp_path / "db")
    c.run_block([])  # the genesis state committed
    yield c
    c.close()


def state(chain: Chain) -> CommittedState:
    return CommittedState(chain.db)


def query(chain: Chain, path: str) -> Any:
    result = chain.app.query(path, b"", 0, False)
    assert result.code == OK, result.log
    return json.loads(result.value)


def slash(i: int, height: int) -> Misbehavior:
    return Misbehavior("duplicate_vote", validator_address(i).raw, POWERS[i], height, 0, TOTAL)


# -- genesis -----------------------------------------------------------------------------------------


def test_genesis_writes_params_keys_and_valset_zero(tmp_path: Path) -> None:
    c = bridge_chain(tmp_path / "db", bridge=_section_keyed((0, 1, 3)))  # validator 2 has no key
    c.run_block([])  # the genesis state is committed with the first block
    s = state(c)
    assert load_bridge_params(s) == PARAMS
    assert [bridge_key(s, validator_address(i).raw) for i in range(4)] == [evm(0), evm(1), None, evm(3)]
    valset = current_valset(s)
    assert valset is not None and valset.nonce == 0
    assert valset.members == tuple(sorted([(evm(0), 1), (evm(1), 2), (evm(3), 6)]))
    assert valset.total_power == 9 and valset.power_of(evm(2)) == 0
    assert valset.hash == valset_hash(0, valset.addresses, valset.powers)
    assert pending_valset_nonces(s) == []
    c.run_block([])  # nothing changed: no new valset
    assert current_valset(state(c)) == valset
    assert query(c, "/bridge/valsets/0")["members"] == [
        {"evm_address": format_evm_address(a), "power": str(p), "validator": validator_address(i).upper()}
        for a, p, i in sorted([(evm(0), 1, 0), (evm(1), 2, 1), (evm(3), 6, 3)])
    ]
    c.close()


def _section_keyed(keyed: tuple[int, ...]) -> dict[str, Any]:
    return bridge_section(keyed)


# -- deposits ----------------------------------------------------------------------------------------


def test_a_deposit_is_credited_above_two_thirds_not_at_two_thirds_and_once(chain: Chain) -> None:
    deposit = claim(1)
    recipient = deposit.recipient
    # validators 1 and 3 hold 2 + 6 = 8 of 12: exactly 2/3, not more
    result = chain.run_block([vote(chain, 1, deposit), vote(chain, 3, deposit)])
    assert codes(result.tx_results) == [OK, OK]
    assert chain.balance(recipient) == FUNDS
    assert load_credited(state(chain), id_of(deposit)) is None
    assert deposit_vote(state(chain), id_of(deposit), validator_address(3).raw) == claim_hash(deposit)
    assert pending_deposit_count(state(chain)) == 1
    # validator 0 makes it 9 of 12
    result = chain.run_block([vote(chain, 0, deposit)])
    assert codes(result.tx_results) == [OK]
    assert all_events(result.tx_results, "bridge_deposit") == [
        {
            "deposit_id": "0x" + id_of(deposit).hex(),
            "evm_tx_hash": "0x" + deposit.tx_hash.hex(),
            "log_index": "1",
            "depositor": format_evm_address(deposit.depositor),
            "recipient": str(recipient),
            "amount": str(deposit.amount),
        }
    ]
    assert chain.balance(recipient) == FUNDS + deposit.amount
    credited = load_credited(state(chain), id_of(deposit))
    assert credited is not None and credited.claim == deposit and credited.height == chain.height
    assert deposit_vote(state(chain), id_of(deposit), validator_address(3).raw) is None  # votes gone
    assert pending_deposit_count(state(chain)) == 0
    assert load_totals(state(chain)).deposited == deposit.amount
    # the late voter, and everyone again: skipped, never a second credit
    result = chain.run_block([vote(chain, i, deposit) for i in range(4)])
    assert codes(result.tx_results) == [OK] * 4
    assert all_events(result.tx_results, "bridge_deposit") == []
    assert chain.balance(recipient) == FUNDS + deposit.amount
    assert load_totals(state(chain)).deposited == deposit.amount
    assert query(chain, f"/bridge/deposits/{id_of(deposit).hex()}")["status"] == "credited"


def test_a_fake_deposit_of_a_minority_mints_nothing(chain: Chain) -> None:
    fake = claim(2, amount=10**9)
    chain.run_block([vote(chain, 3, fake)])  # one validator, the strongest (6 of 12)
    other = claim(3, amount=10**9)
    chain.run_block([vote(chain, 1, other), vote(chain, 2, other)])  # 2 of 4 validators: 5 of 12
    chain.run_block([vote(chain, 1, other), vote(chain, 2, other)])  # again: the same 5
    assert chain.balance(fake.recipient) == FUNDS
    assert load_totals(state(chain)).deposited == 0
    assert pending_deposit_count(state(chain)) == 2
    assert load_credited(state(chain), id_of(other)) is None
    votes = query(chain, f"/bridge/deposits/0x{id_of(other).hex()}")
    assert votes["status"] == "pending"
    assert [v["validator"] for v in votes["votes"]] == sorted(
        [validator_address(1).upper(), validator_address(2).upper()]
    )


def test_the_first_fake_mints_when_the_strongest_joins_minorities_never_do(chain: Chain) -> None:
    fake = claim(2, amount=10**9)
    chain.run_block([vote(chain, 3, fake), vote(chain, 0, fake)])  # 7 of 12
    assert load_credited(state(chain), id_of(fake)) is None
    chain.run_block([vote(chain, 1, fake)])  # 9 of 12: over 2/3, whatever the claim says
    assert load_credited(state(chain), id_of(fake)) is not None


def test_disagreeing_claims_do_not_add_up(chain: Chain) -> None:
    honest = claim(4, amount=70_000)
    liar = claim(4, amount=700_000)  # the same deposit id, another amount
    assert id_of(honest) == id_of(liar) and claim_hash(honest) != claim_hash(liar)
    other_recipient = claim(4, amount=70_000, recipient=address(2))
    result = chain.run_block(
        [vote(chain, 3, honest), vote(chain, 1, liar), vote(chain, 2, other_recipient), vote(chain, 0, liar)]
    )
    assert codes(result.tx_results) == [OK] * 4  # 6, 3, 3 and 3 of 12: none over 8
    assert load_credited(state(chain), id_of(honest)) is None
    # validator 2 changes its mind: its vote is replaced, and 6 + 3 = 9 agree
    result = chain.run_block([vote(chain, 2, honest)])
    assert all_events(result.tx_results, "bridge_deposit")[0]["amount"] == "70000"
    assert chain.balance(address(3)) == FUNDS + 70_000
    assert chain.balance(address(2)) == FUNDS


def test_one_vote_carries_many_deposits(chain: Chain) -> None:
    deposits = [claim(10 + n, amount=MIN_DEPOSIT + n) for n in range(5)]
    for i in (3, 2):
        chain.run_block([vote(chain, i, *deposits)])
    assert chain.balance(address(3)) == FUNDS + sum(d.amount for d in deposits)
    assert load_totals(state(chain)).deposited == sum(d.amount for d in deposits)


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ((), "at least one deposit"),
        ((claim(1, evm_chain_id=1),), "EVM chain id 1"),
        ((claim(1, amount=MIN_DEPOSIT - 1),), "below the minimum deposit"),
        ((claim(1), claim(2), claim(1, amount=60_000)), r"deposits\[2\]: the same deposit as deposits\[0\]"),
    ],
)
def test_deposit_vote_rules(chain: Chain, claims: tuple[Any, ...], match: str) -> None:
    result = chain.run_block([chain.tx(validator_key(3), BridgeDepositVote(claims))])
    assert result.tx_results[0].code == Code.INVALID_BRIDGE_VOTE
    assert re.search(match, result.tx_results[0].log)
    assert pending_deposit_count(state(chain)) == 0


def test_only_validators_with_power_vote(tmp_path: Path) -> None:
    chain = bridge_chain(tmp_path / "db", balances={address(0): FUNDS, validator_address(3): FUNDS})
    deposit = claim(1)
    fee = STANDARD_FEES[ActionKind.ORACLE_VOTE]
    outsider = chain.tx(key(0), BridgeDepositVote((deposit,)), fee=fee)
    result = chain.run_block([outsider], misbehavior=[slash(3, 1)])
    assert result.tx_results[0].code == Code.NOT_A_VALIDATOR
    result = chain.run_block([chain.tx(validator_key(3), BridgeDepositVote((deposit,)), fee=fee)])
    assert result.tx_results[0].code == Code.NOT_A_VALIDATOR  # slashed: power 0, and it paid
    assert pending_deposit_count(state(chain)) == 0
    chain.close()


def test_votes_of_a_validator_slashed_later_do_not_count(chain: Chain) -> None:
    deposit = claim(1)
    chain.run_block([vote(chain, 3, deposit)])
    # validator 3 slashed: 6 gone, total 6; validators 0 and 1 hold 3 of 6, with 2: 6 of 6
    chain.run_block([vote(chain, 1, deposit), vote(chain, 2, deposit)], misbehavior=[slash(3, 2)])
    assert load_credited(state(chain), id_of(deposit)) is not None  # 5 of 6 > 2/3 without the 6
    assert chain.balance(address(3)) == FUNDS + deposit.amount


# -- withdrawals -------------------------------------------------------------------------------------


def test_withdraw_debits_and_records(chain: Chain) -> None:
    owner = address(0)
    result = chain.run_block([chain.tx(key(0), Withdraw(RECIPIENT_EVM, 5_000))])
    assert codes(result.tx_results) == [OK]
    first = withdrawal_id(owner.raw, 1)
    assert all_events(result.tx_results, "bridge_withdrawal") == [
        {
            "id": str(first),
            "owner": str(owner),
            "recipient": format_evm_address(RECIPIENT_EVM),
            "amount": "5000",
        }
    ]
    assert chain.balance(owner) == FUNDS - 5_000 - WITHDRAW_FEE
    chain.run_block([chain.tx(key(0), Withdraw(RECIPIENT_EVM, 6_000))])
    second = withdrawal_id(owner.raw, 2)
    assert second == first + 1 and first == int.from_bytes(owner.raw + (1).to_bytes(8, "big"), "big")
    records = owner_withdrawals(state(chain), owner)
    assert [(w.id, w.amount, w.signed_height, w.height) for w in records] == [
        (first, 5_000, 0, 2),
        (second, 6_000, 0, 3),
    ]
    assert [w.id for w in pending_withdrawals(state(chain))] == [first, second]
    assert load_totals(state(chain)).withdrawn == 11_000
    value = query(chain, f"/bridge/withdrawals/{first}")
    assert value["status"] == "pending" and value["amount"] == "5000" and value["signatures"] == []
    assert value["digest"] == "0x" + withdrawal_digest(DOMAIN, first, RECIPIENT_EVM, 5_000).hex()
    assert [w["id"] for w in query(chain, f"/bridge/owners/{owner}")["withdrawals"]] == [
        str(first),
        str(second),
    ]


@pytest.mark.parametrize(
    ("action", "code"),
    [
        (Withdraw(RECIPIENT_EVM, MIN_WITHDRAWAL - 1), Code.INVALID_ACTION),
        (Withdraw(bytes(20), MIN_WITHDRAWAL), Code.INVALID_ACTION),
        (Withdraw(RECIPIENT_EVM, FUNDS), Code.INSUFFICIENT_FUNDS),  # the fee came out first
    ],
)
def test_withdraw_rules(chain: Chain, action: Withdraw, code: Code) -> None:
    result = chain.run_block([chain.tx(key(0), action)])
    assert result.tx_results[0].code == code
    assert chain.balance(address(0)) == FUNDS - WITHDRAW_FEE
    assert load_totals(state(chain)).withdrawn == 0 and pending_withdrawals(state(chain)) == []


def test_withdraw_the_whole_balance_at_the_minimum(chain: Chain) -> None:
    result = chain.run_block([chain.tx(key(0), Withdraw(RECIPIENT_EVM, FUNDS - WITHDRAW_FEE))])
    assert codes(result.tx_results) == [OK]
    assert chain.balance(address(0)) == 0
    result = chain.run_block([chain.tx(key(1), Withdraw(RECIPIENT_EVM, MIN_WITHDRAWAL))])
    assert codes(result.tx_results) == [OK]


def test_a_subaccount_withdraws_an_isolated_account_does_not(tmp_path: Path) -> None:
    markets = default_exchange_app_state()
    markets["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    c = bridge_chain(tmp_path / "db", extra=markets)
    sub = subaccount_address(address(0), 1)
    iso = isolated_address(address(0), BTC)
    c.run_block([c.tx(key(0), Transfer(sub, 100_000), Transfer(iso, 100_000))])
    result = c.run_block(
        [
            c.tx(key(0), UseSubaccount(1), Withdraw(RECIPIENT_EVM, 50_000)),
            c.tx(key(0), UseIsolated(BTC), Withdraw(RECIPIENT_EVM, 50_000)),
        ]
    )
    assert codes(result.tx_results) == [OK, Code.INVALID_ACTION]
    assert c.balance(sub) == 50_000 and c.balance(iso) == 100_000
    assert [w.owner for w in pending_withdrawals(state(c))] == [sub]
    c.close()


def test_withdraw_beyond_free_collateral_with_a_position_is_refused(tmp_path: Path) -> None:
    markets = default_exchange_app_state()
    markets["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": 1_000_000}
    funds = 100_000 * 10**6
    c = bridge_chain(tmp_path / "db", extra=markets, balances={address(0): funds, address(1): funds})
    # account 1 buys 1 BTC at $65,000 from account 0: initial margin 5% is $3,250
    result = c.run_block(
        [
            c.tx(key(0), place(SELL, btc(10_000), usd(65_000))),
            c.tx(key(1), place(BUY, btc(10_000), usd(65_000), IOC)),
        ]
    )
    assert codes(result.tx_results) == [OK, OK]
    free = int(str(c.account(address(1))["free_collateral"]))
    assert 0 < free < c.balance(address(1))
    result = c.run_block([c.tx(key(1), Withdraw(RECIPIENT_EVM, free))])  # the fee leaves less free
    assert result.tx_results[0].code == Code.INSUFFICIENT_MARGIN
    result = c.run_block([c.tx(key(1), Withdraw(RECIPIENT_EVM, free - 10 * WITHDRAW_FEE))])
    assert codes(result.tx_results) == [OK]
    c.close()


# -- withdrawal signatures ---------------------------------------------------------------------------


def _withdraw(chain: Chain, amount: int = 5_000) -> int:
    result = chain.run_block([chain.tx(key(0), Withdraw(RECIPIENT_EVM, amount))])
    assert codes(result.tx_results) == [OK]
    return int(all_events(result.tx_results, "bridge_withdrawal")[0]["id"])


def test_withdrawal_signatures_mark_it_signed_above_two_thirds(chain: Chain) -> None:
    wid = _withdraw(chain)
    sig = {i: withdrawal_signature(i, wid, RECIPIENT_EVM, 5_000) for i in range(4)}
    result = chain.run_block([sign_tx(chain, 1, sig[1]), sign_tx(chain, 3, sig[3])])  # 8 of 12
    assert codes(result.tx_results) == [OK, OK]
    assert all_events(result.tx_results, "bridge_withdrawal_signed") == []
    assert [w.id for w in pending_withdrawals(state(chain))] == [wid]
    assert withdrawal_signatures(state(chain), wid) == {evm(1): sig[1].signature, evm(3): sig[3].signature}
    result = chain.run_block([sign_tx(chain, 1, sig[1])])  # the same again: nothing
    assert codes(result.tx_results) == [OK]
    result = chain.run_block([sign_tx(chain, 0, sig[0])])
    assert all_events(result.tx_results, "bridge_withdrawal_signed") == [
        {"id": str(wid), "valset_nonce": "0", "signed_power": "9", "total_power": "12"}
    ]
    withdrawal = load_withdrawal(state(chain), wid)
    assert withdrawal is not None and withdrawal.signed_height == chain.height
    assert pending_withdrawals(state(chain)) == []
    result = chain.run_block([sign_tx(chain, 2, sig[2])])  # late: stored, no second event
    assert codes(result.tx_results) == [OK]
    assert all_events(result.tx_results, "bridge_withdrawal_signed") == []
    value = query(chain, f"/bridge/withdrawals/{wid}")
    assert value["status"] == "signed" and value["signed_height"] == str(chain.height - 1)
    assert [s["evm_address"] for s in value["signatures"]] == [
        format_evm_address(a) for a in sorted(map(evm, range(4)))
    ]


def test_bad_withdrawal_signatures_are_refused(chain: Chain) -> None:
    wid = _withdraw(chain)
    wrong_key = withdrawal_signature(2, wid, RECIPIENT_EVM, 5_000)  # validator 2's, sent by 3
    other_amount = withdrawal_signature(3, wid, RECIPIENT_EVM, 5_001)
    other_recipient = withdrawal_signature(3, wid, bytes(range(20)), 5_000)
    unknown = withdrawal_signature(3, wid + 1, RECIPIENT_EVM, 5_000)
    good = withdrawal_signature(3, wid, RECIPIENT_EVM, 5_000)
    high_s = good.signature[:32] + (SECP256K1_ORDER - int.from_bytes(good.signature[32:64], "big")).to_bytes(
        32, "big"
    )
    high_s += bytes([good.signature[64] ^ 1])  # the other signature of the same key: refused
    malleated = type(good)(target=good.target, id=good.id, signature=high_s)
    outsider = chain.tx(key(1), BridgeSign((good,)), fee=STANDARD_FEES[ActionKind.ORACLE_VOTE])
    result = chain.run_block(
        [
            sign_tx(chain, 3, wrong_key),
            sign_tx(chain, 3, other_amount),
            sign_tx(chain, 3, other_recipient),
            sign_tx(chain, 3, unknown),
            sign_tx(chain, 3, malleated),
            outsider,
            sign_tx(chain, 3, good, other_amount),  # all or nothing
        ]
    )
    assert codes(result.tx_results) == [
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.UNKNOWN_WITHDRAWAL,
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.NOT_A_VALIDATOR,
        Code.INVALID_BRIDGE_SIGNATURE,
    ]
    assert "signatures[1]" in result.tx_results[6].log
    assert withdrawal_signatures(state(chain), wid) == {}


def test_a_validator_without_a_bridge_key_cannot_sign(tmp_path: Path) -> None:
    c = bridge_chain(tmp_path / "db", bridge=_section_keyed((0, 1, 3)))
    wid = _withdraw(c)
    result = c.run_block([sign_tx(c, 2, withdrawal_signature(2, wid, RECIPIENT_EVM, 5_000))])
    assert result.tx_results[0].code == Code.NOT_A_VALIDATOR
    assert "no bridge key" in result.tx_results[0].log
    c.close()


# -- valsets -----------------------------------------------------------------------------------------


def test_a_slash_makes_valset_one_signed_by_set_zero(chain: Chain) -> None:
    zero = current_valset(state(chain))
    assert zero is not None
    result = chain.run_block([], misbehavior=[slash(0, 1)])
    [event] = [e for e in result.events if e.type == "bridge_valset"]
    one = load_valset(state(chain), 1)
    assert one is not None and one.members == tuple(sorted([(evm(1), 2), (evm(2), 3), (evm(3), 6)]))
    attrs = {a.key: a.value for a in event.attributes}
    assert attrs["nonce"] == "1" and attrs["hash"] == "0x" + one.hash.hex()
    assert attrs["members"] == ",".join(f"{format_evm_address(a)}:{p}" for a, p in one.members)
    assert pending_valset_nonces(state(chain)) == [1]
    assert current_valset(state(chain)) == one
    chain.run_block([])  # the same set: no nonce 2
    assert current_valset(state(chain)) == one
    # set 0 signs set 1 (the slashed validator 0 is still a member of set 0, but has no power to
    # send txs): 6 + 2 = 8 of set 0's 12 is exactly 2/3 (of set 1's 11 it would be more)
    sigs = {i: valset_signature(bridge_secret(i), 1, one.hash) for i in range(4)}
    result = chain.run_block([sign_tx(chain, 3, sigs[3]), sign_tx(chain, 1, sigs[1])])
    assert codes(result.tx_results) == [OK, OK]
    assert all_events(result.tx_results, "bridge_valset_signed") == []
    assert query(chain, "/bridge/valsets/1")["status"] == "pending"
    result = chain.run_block([sign_tx(chain, 2, sigs[2])])
    assert all_events(result.tx_results, "bridge_valset_signed") == [
        {"nonce": "1", "hash": "0x" + one.hash.hex(), "signed_power": "11", "total_power": "12"}
    ]
    assert pending_valset_nonces(state(chain)) == []
    assert valset_signatures(state(chain), 1) == {evm(i): sigs[i].signature for i in (1, 2, 3)}
    value = query(chain, "/bridge/valsets/1")
    assert value["status"] == "signed" and len(value["signatures"]) == 3
    assert [m["validator"] for m in value["members"]] == [
        validator_address(i).upper() for i in sorted((1, 2, 3), key=evm)
    ]
    # a withdrawal is now tallied over set 1: 2 + 6 = 8 of 11 is over 2/3
    wid = _withdraw(chain)
    result = chain.run_block(
        [sign_tx(chain, i, withdrawal_signature(i, wid, RECIPIENT_EVM, 5_000)) for i in (1, 3)]
    )
    assert all_events(result.tx_results, "bridge_withdrawal_signed")[-1]["valset_nonce"] == "1"


def test_valset_signature_rules(chain: Chain) -> None:
    chain.run_block([set_key(chain, 0, b"\x07" * 32)])  # a new key for validator 0: set 1
    one = load_valset(state(chain), 1)
    assert one is not None and one.power_of(evm(0)) == 0 and one.power_of(_address_of(b"\x07" * 32)) == 1
    wrong_hash = valset_signature(bridge_secret(3), 1, bytes(32))
    not_a_member = valset_signature(b"\x07" * 32, 1, one.hash)  # validator 0's new key: not in set 0
    result = chain.run_block(
        [
            sign_tx(chain, 3, wrong_hash),
            sign_tx(chain, 0, not_a_member),
            sign_tx(chain, 3, valset_signature(bridge_secret(3), 0, one.hash)),
            sign_tx(chain, 3, valset_signature(bridge_secret(3), 2, one.hash)),
        ]
    )
    assert codes(result.tx_results) == [
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.UNKNOWN_WITHDRAWAL,
        Code.UNKNOWN_WITHDRAWAL,
    ]
    assert valset_signatures(state(chain), 1) == {}


def _address_of(secret: bytes) -> bytes:
    return address_of_secret(secret)


# -- bridge keys -------------------------------------------------------------------------------------


def test_set_bridge_key_rules(chain: Chain) -> None:
    new = b"\x09" * 32
    proof_of_other = sign_digest(new, _key_digest(1))  # signed for validator 1, sent by 0
    result = chain.run_block(
        [
            chain.tx(validator_key(0), SetBridgeKey(_address_of(new), proof_of_other)),
            chain.tx(validator_key(0), SetBridgeKey(bytes(20), proof_of_other)),
            set_key(chain, 0, bridge_secret(1)),  # validator 1's key
            chain.tx(key(0), SetBridgeKey(_address_of(new), sign_digest(new, _key_digest(0))), fee=100),
        ]
    )
    assert codes(result.tx_results) == [
        Code.INVALID_BRIDGE_SIGNATURE,
        Code.INVALID_ACTION,
        Code.INVALID_ACTION,
        Code.NOT_A_VALIDATOR,
    ]
    assert bridge_key(state(chain), validator_address(0).raw) == evm(0)
    result = chain.run_block([set_key(chain, 0, new), set_key(chain, 1, bridge_secret(1))])  # own: fine
    assert codes(result.tx_results) == [OK, OK]
    assert bridge_key(state(chain), validator_address(0).raw) == _address_of(new)
    assert current_valset(state(chain)).nonce == 1  # type: ignore[union-attr]


def test_a_slashed_validator_may_still_set_its_key(chain: Chain) -> None:
    chain.run_block([], misbehavior=[slash(0, 1)])
    result = chain.run_block([set_key(chain, 0, b"\x0a" * 32)], time=None)
    # in the registry with power 0: allowed, but it pays (no free vote without power)
    assert result.tx_results[0].code == Code.INSUFFICIENT_FEE
    tx = chain.tx(
        validator_key(0), SetBridgeKey(_address_of(b"\x0a" * 32), sign_digest(b"\x0a" * 32, _key_digest(0)))
    )
    fee_params = load_fee_params(state(chain))
    assert minimum_fee(state(chain), fee_params, Tx.decode(tx)) == fee_params.oracle_vote


def _key_digest(i: int) -> bytes:
    return key_proof_digest(PARAMS, validator_address(i).raw)


# -- fees, disabled bridge, queries -------------------------------------------------------------------


def test_fees_of_the_bridge_actions(chain: Chain) -> None:
    params = FeeParams(transfer=7, oracle_vote=3)
    assert params.price(ActionKind.WITHDRAW) == 7
    for kind in (ActionKind.BRIDGE_DEPOSIT_VOTE, ActionKind.BRIDGE_SIGN, ActionKind.SET_BRIDGE_KEY):
        assert params.price(kind) == 3
    s = state(chain)
    for signer, expected in ((validator_key(3), 0), (key(0), 3)):
        tx = Tx.decode(chain.tx(signer, BridgeDepositVote((claim(1),)), fee=5))
        assert minimum_fee(s, params, tx) == expected


def test_a_chain_without_a_bridge_refuses_every_bridge_action(tmp_path: Path) -> None:
    c = Chain(tmp_path / "db", {address(0): FUNDS}, validators=GENESIS_VALIDATORS)
    result = c.run_block(
        [
            vote(c, 3, claim(1)),
            c.tx(key(0), Withdraw(RECIPIENT_EVM, MIN_WITHDRAWAL)),
            sign_tx(c, 3, withdrawal_signature(3, 1, RECIPIENT_EVM, 1)),
            set_key(c, 3, bridge_secret(3)),
        ]
    )
    assert codes(result.tx_results) == [Code.BRIDGE_DISABLED] * 4
    assert c.balance(address(0)) == FUNDS - WITHDRAW_FEE
    assert not [e for e in result.events if e.type.startswith("bridge")]
    for path in ("/bridge", "/bridge/withdrawals/1", "/bridge/valsets/0"):
        assert c.app.query(path, b"", 0, False).code == Code.BRIDGE_DISABLED
    c.close()


def test_bridge_query(chain: Chain) -> None:
    deposit = claim(1)
    chain.run_block([vote(chain, 3, deposit), vote(chain, 2, deposit)])
    _withdraw(chain, 4_000)
    chain.run_block([vote(chain, 0, claim(2)), vote(chain, 1, claim(3)), vote(chain, 2, claim(3))])
    value = query(chain, "/bridge")
    assert value["chain_id"] == PARAMS.chain_id and value["evm_chain_id"] == str(EVM_CHAIN_ID)
    assert value["contract"] == format_evm_address(CONTRACT)
    assert (value["deposited"], value["withdrawn"]) == (str(deposit.amount), "4000")
    assert value["valset"]["nonce"] == "0" and len(value["valset"]["members"]) == 4
    member = value["valset"]["members"][0]
    assert set(member) == {"evm_address", "power", "validator"}
    assert (value["pending_withdrawals"], value["pending_valsets"], value["pending_deposits"]) == (
        "1",
        [],
        "2",
    )
    for bad, code in (
        ("/bridge/withdrawals/x", Code.INVALID_QUERY),
        ("/bridge/withdrawals/12", Code.UNKNOWN_WITHDRAWAL),
        ("/bridge/valsets/7", Code.UNKNOWN_WITHDRAWAL),
        ("/bridge/deposits/00", Code.INVALID_QUERY),
        ("/bridge/owners/zz", Code.INVALID_QUERY),
        ("/bridge/nothing", Code.UNKNOWN_QUERY),
    ):
        assert chain.app.query(bad, b"", 0, False).code == code, bad
    unseen = query(chain, "/bridge/deposits/" + "ab" * 32)
    assert unseen == {"deposit_id": "0x" + "ab" * 32, "status": "unknown", "votes": []}
    zero = query(chain, "/bridge/valsets/0")
    assert zero["status"] == "signed" and zero["signatures"] == []


def test_a_valset_is_tallied_over_the_powers_of_the_set_before() -> None:
    view = StateView(Empty())
    store_bridge_params(view, PARAMS)
    a, b, c = sorted(evm(i) for i in (0, 1, 2))
    store_valset(view, Valset(nonce=0, members=((a, 1), (b, 1), (c, 1))))
    one = Valset(nonce=1, members=((a, 10), (b, 1), (c, 1)))  # powers set 0 never had
    store_valset(view, one)
    view.put(schema.bridge_valset_pending_key(1), b"\x00")
    secrets = {evm(i): bridge_secret(i) for i in (0, 1, 2)}
    signed = valset_signature(secrets[a], 1, one.hash).signature
    assert sign_valset(view, PARAMS, a, 1, signed) == []  # 1 of set 0's 3
    assert pending_valset_nonces(view) == [1]
    signed = valset_signature(secrets[b], 1, one.hash).signature
    assert sign_valset(view, PARAMS, b, 1, signed) == []  # 2 of 3: not over 2/3 either
    signed = valset_signature(secrets[c], 1, one.hash).signature
    [event] = sign_valset(view, PARAMS, c, 1, signed)
    assert event.type == "bridge_valset_signed" and pending_valset_nonces(view) == []
