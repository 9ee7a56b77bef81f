"""DerivdBridge on a local hardhat chain, driven through `node.bridge_evm` with signatures made by
`execution.bridge.evm.sign_digest` over the Python digests: the two sides agree on every byte, and
the contract refuses each attack on deposits, withdrawals, the validator set and the pause.

One deployment per module; every test runs between an `evm_snapshot` and an `evm_revert`.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from eth_account import Account
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3

from execution.bridge.evm import (
    HALF_ORDER,
    SECP256K1_ORDER,
    BridgeDomain,
    address_of_secret,
    keccak256,
    pause_digest,
    recover_signer,
    sign_digest,
    unpause_digest,
    valset_digest,
    withdrawal_digest,
)
from node.bridge_evm import (
    BridgeContract,
    BridgeRevert,
    ValsetOnChain,
    deploy_bridge,
    deploy_token,
    load_contracts,
    send_raw,
)
from tests.evm.hardhat import (
    HARDHAT_CHAIN_ID,
    HardhatNode,
    advance_time,
    revert,
    set_next_block_timestamp,
    snapshot,
)

CHAIN_ID = "derivd-bridge-test"
DISPUTE_PERIOD = 600
MIN_DEPOSIT = 1_000
POWERS = (40, 20, 20, 10)  # by ascending address: total 90, 2/3 = 60, 1/3 = 30
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, slots=True, kw_only=True)
class Bridge:
    w3: Web3
    contract: BridgeContract
    domain: BridgeDomain
    valset: ValsetOnChain
    secrets: tuple[bytes, ...]
    """validator i's bridge key, i by ascending address (members[i])"""
    relayer: bytes
    user: bytes
    """a funded dev account's secret, holding 10**12 test units"""

    def sign(self, digest: bytes, *indices: int) -> dict[bytes, bytes]:
        return {address_of_secret(self.secrets[i]): sign_digest(self.secrets[i], digest) for i in indices}

    def request(self, withdrawal_id: int, amount: int, *signers: int) -> None:
        recipient = address_of_secret(self.user)
        digest = withdrawal_digest(self.domain, withdrawal_id, recipient, amount)
        self.contract.request_withdrawal(
            self.relayer, withdrawal_id, recipient, amount, self.valset, self.sign(digest, *signers)
        )


def _validator_secrets(tag: bytes, count: int) -> tuple[bytes, ...]:
    secrets = [keccak256(tag + bytes([i])) for i in range(count)]
    return tuple(sorted(secrets, key=address_of_secret))


@pytest.fixture(scope="module")
def deployed(hardhat: HardhatNode) -> Bridge:
    w3 = Web3(HTTPProvider(hardhat.url))
    deployer, relayer, user = hardhat.keys[:3]
    secrets = _validator_secrets(b"validator", len(POWERS))
    members = tuple((address_of_secret(s), p) for s, p in zip(secrets, POWERS, strict=True))
    token = deploy_token(w3, deployer)
    address = deploy_bridge(w3, deployer, token, CHAIN_ID, members, DISPUTE_PERIOD, MIN_DEPOSIT)
    contract = BridgeContract(w3, address)
    contract.mint(user, address_of_secret(user), 10**12)
    return Bridge(
        w3=w3,
        contract=contract,
        domain=contract.domain(CHAIN_ID),
        valset=ValsetOnChain(nonce=0, members=members),
        secrets=secrets,
        relayer=relayer,
        user=user,
    )


@pytest.fixture
def bridge(deployed: Bridge) -> Iterator[Bridge]:
    taken = snapshot(deployed.w3)
    yield deployed
    revert(deployed.w3, taken)


@contextmanager
def refused(error: str) -> Iterator[list[BridgeRevert]]:
    """Expects the block to revert with the custom error `error`; yields the exception (in a list)."""
    caught: list[BridgeRevert] = []
    with pytest.raises(BridgeRevert) as info:
        yield caught
    assert info.value.error == error, info.value
    caught.append(info.value)


# ---------------------------------------------------------------------------- deployment


def test_deployment_state_matches_python(bridge: Bridge) -> None:
    assert bridge.contract.valset_hash() == bridge.valset.hash()
    assert bridge.contract.valset_nonce() == 0
    assert not bridge.contract.paused() and bridge.contract.pause_nonce() == 0
    assert (bridge.contract.dispute_period(), bridge.contract.min_deposit()) == (DISPUTE_PERIOD, MIN_DEPOSIT)
    assert bridge.domain == BridgeDomain(
        evm_chain_id=HARDHAT_CHAIN_ID, contract=bridge.contract.address, chain_id=CHAIN_ID
    )
    with pytest.raises(ValueError, match="not derivd chain"):
        bridge.contract.domain("another-chain")


def test_deploy_refuses_a_set_not_ascending(bridge: Bridge, hardhat: HardhatNode) -> None:
    members = tuple(reversed(bridge.valset.members))
    with refused("ValidatorsNotAscending") as caught:
        deploy_bridge(bridge.w3, hardhat.keys[0], bridge.contract.token_address, CHAIN_ID, members, 1, 1)
    assert caught[0].values == (1,)


# ---------------------------------------------------------------------------- deposits


def test_deposit_emits_the_event_and_moves_the_tokens(bridge: Bridge) -> None:
    user = address_of_secret(bridge.user)
    recipient = bytes(range(1, 21))
    event = bridge.contract.deposit(bridge.user, 123_456, recipient)
    assert (event.depositor, event.recipient, event.amount) == (user, recipient, 123_456)
    receipt = bridge.w3.eth.get_transaction_receipt(HexBytes(event.tx_hash))
    assert receipt["blockNumber"] == event.block_number
    (log,) = [
        entry for entry in receipt["logs"] if entry["address"].lower() == "0x" + bridge.contract.address.hex()
    ]
    assert log["logIndex"] == event.log_index
    assert bridge.contract.token_balance(bridge.contract.address) == 123_456
    assert bridge.contract.token_balance(user) == 10**12 - 123_456


def test_deposit_refusals(bridge: Bridge) -> None:
    with refused("DepositBelowMinimum") as caught:
        bridge.contract.deposit(bridge.user, MIN_DEPOSIT - 1, bytes(range(20)))
    assert caught[0].values == (MIN_DEPOSIT - 1, MIN_DEPOSIT)
    with refused("ZeroRecipient"):
        bridge.contract.deposit(bridge.user, MIN_DEPOSIT, bytes(20))
    with refused("ERC20InsufficientBalance"):
        bridge.contract.deposit(bridge.user, 10**12 + 1, bytes(range(20)))
    bridge.contract.deposit(bridge.user, MIN_DEPOSIT, bytes(range(20)))  # the minimum itself is fine


# ---------------------------------------------------------------------------- withdrawals


def test_withdrawal_is_paid_only_after_the_dispute_period(bridge: Bridge) -> None:
    bridge.contract.deposit(bridge.user, 10**6, bytes(range(20)))
    recipient = address_of_secret(bridge.user)
    before = bridge.contract.token_balance(recipient)
    bridge.request(7, 400_000, 0, 1, 3)  # 70 of 90
    record = bridge.contract.withdrawal(7)
    assert (record.recipient, record.amount, record.finalized) == (recipient, 400_000, False)
    with refused("DisputePeriodNotOver") as caught:
        bridge.contract.finalize_withdrawal(bridge.relayer, 7)
    assert caught[0].values == (7, record.requested_at + DISPUTE_PERIOD)
    set_next_block_timestamp(bridge.w3, record.requested_at + DISPUTE_PERIOD - 1)
    with refused("DisputePeriodNotOver"):  # one second early
        bridge.contract.finalize_withdrawal(bridge.relayer, 7)
    set_next_block_timestamp(bridge.w3, record.requested_at + DISPUTE_PERIOD)
    bridge.contract.finalize_withdrawal(bridge.relayer, 7)
    assert bridge.contract.withdrawal(7).finalized
    assert bridge.contract.token_balance(recipient) == before + 400_000
    assert bridge.contract.token_balance(bridge.contract.address) == 10**6 - 400_000
    with refused("WithdrawalAlreadyFinalized"):
        bridge.contract.finalize_withdrawal(bridge.relayer, 7)
    with refused("UnknownWithdrawal"):
        bridge.contract.finalize_withdrawal(bridge.relayer, 8)


def test_request_needs_more_than_two_thirds_of_the_power(bridge: Bridge) -> None:
    """Every subset of signers: accepted exactly when its power * 3 > total * 2 (power, not count:
    3 of 4 signers holding 50 of 90 are refused)."""
    total = sum(POWERS)
    for n, signers in enumerate(
        s for k in range(len(POWERS) + 1) for s in itertools.combinations(range(4), k)
    ):
        power = sum(POWERS[i] for i in signers)
        if power * 3 > total * 2:
            taken = snapshot(bridge.w3)
            bridge.request(100 + n, 5, *signers)
            assert bridge.contract.withdrawal(100 + n).amount == 5
            revert(bridge.w3, taken)
        else:
            with refused("InsufficientPower") as caught:
                bridge.request(100 + n, 5, *signers)
            assert caught[0].values == (power, total)


def test_replayed_request_is_refused(bridge: Bridge) -> None:
    bridge.contract.deposit(bridge.user, 10**6, bytes(range(20)))
    bridge.request(1, 300, 0, 1, 2)
    with refused("WithdrawalAlreadyRequested"):
        bridge.request(1, 300, 0, 1, 2)
    advance_time(bridge.w3, DISPUTE_PERIOD)
    bridge.contract.finalize_withdrawal(bridge.relayer, 1)
    with refused("WithdrawalAlreadyRequested"):  # paid: still refused
        bridge.request(1, 300, 0, 1, 2)


def test_a_failing_transaction_sent_without_estimation_is_a_bridge_revert(bridge: Bridge) -> None:
    """The path where the node mines the transaction (its gas given, nothing estimated) and fails it."""
    account = Account.from_key(bridge.relayer)
    function = bridge.w3.eth.contract(
        address=Web3.to_checksum_address(bridge.contract.address), abi=load_contracts().bridge.abi
    ).functions.finalizeWithdrawal(3)
    nonce = bridge.w3.eth.get_transaction_count(account.address)
    tx = function.build_transaction({"from": account.address, "gas": 100_000, "nonce": nonce})
    with refused("UnknownWithdrawal") as caught:
        send_raw(bridge.w3, account.sign_transaction(dict(tx)).raw_transaction)
    assert caught[0].values == (3,)


def _high_s(sig: bytes) -> bytes:
    s = int.from_bytes(sig[32:64], "big")
    return sig[:32] + (SECP256K1_ORDER - s).to_bytes(32, "big") + bytes([55 - sig[64]])


def _bad_signatures(bridge: Bridge, digest: bytes) -> dict[str, bytes]:
    good = sign_digest(bridge.secrets[1], digest)
    stranger = keccak256(b"not a validator")
    return {
        "high_s": _high_s(good),
        "v_29": good[:64] + bytes([29]),
        "r_zero": bytes(32) + good[32:],
        "other_digest": sign_digest(bridge.secrets[1], keccak256(digest)),
        "other_key": sign_digest(stranger, digest),
        "flipped_bit": good[:5] + bytes([good[5] ^ 1]) + good[6:],
    }


@pytest.mark.parametrize("kind", ["high_s", "v_29", "r_zero", "other_digest", "other_key", "flipped_bit"])
def test_bad_signature_is_refused(bridge: Bridge, kind: str) -> None:
    recipient = address_of_secret(bridge.user)
    digest = withdrawal_digest(bridge.domain, 5, recipient, 77)
    bad = _bad_signatures(bridge, digest)[kind]
    assert recover_signer(digest, bad) != bridge.valset.members[1][0]  # Python refuses it too
    signatures = bridge.sign(digest, 0, 2, 3) | {bridge.valset.members[1][0]: bad}
    with refused("InvalidSignature") as caught:  # 70 of 90 is enough without it: the bad one decides
        bridge.contract.request_withdrawal(bridge.relayer, 5, recipient, 77, bridge.valset, signatures)
    assert caught[0].values == (1,)


def test_high_s_twin_is_a_valid_ecdsa_signature() -> None:
    """The mutant the contract's s <= n/2 rule stops: the twin recovers the same key in plain ECDSA."""
    secret = keccak256(b"twin")
    digest = keccak256(b"digest")
    twin = _high_s(sign_digest(secret, digest))
    assert int.from_bytes(twin[32:64], "big") > HALF_ORDER
    low = twin[:32] + (SECP256K1_ORDER - int.from_bytes(twin[32:64], "big")).to_bytes(32, "big")
    assert recover_signer(digest, low + bytes([55 - twin[64]])) == address_of_secret(secret)
    assert recover_signer(digest, twin) is None


def test_signatures_for_another_chain_or_amount_are_refused(bridge: Bridge) -> None:
    recipient = address_of_secret(bridge.user)
    other_chain = BridgeDomain(
        evm_chain_id=HARDHAT_CHAIN_ID, contract=bridge.contract.address, chain_id="other"
    )
    for digest, amount in [
        (withdrawal_digest(other_chain, 3, recipient, 50), 50),
        (withdrawal_digest(bridge.domain, 3, recipient, 50), 51),
    ]:
        with refused("InvalidSignature"):
            bridge.contract.request_withdrawal(
                bridge.relayer, 3, recipient, amount, bridge.valset, bridge.sign(digest, 0, 1, 2)
            )


# ---------------------------------------------------------------------------- validator set


def _next_valset(nonce: int) -> tuple[ValsetOnChain, tuple[bytes, ...]]:
    secrets = _validator_secrets(b"next validator", 3)
    members = tuple((address_of_secret(s), p) for s, p in zip(secrets, (5, 5, 5), strict=True))
    return ValsetOnChain(nonce=nonce, members=members), secrets


def test_valset_update_retires_the_old_set(bridge: Bridge) -> None:
    new, new_secrets = _next_valset(1)
    digest = valset_digest(bridge.domain, new.hash())
    with refused("InsufficientPower"):
        bridge.contract.update_valset(bridge.relayer, new, bridge.valset, bridge.sign(digest, 0, 1))
    bridge.contract.update_valset(bridge.relayer, new, bridge.valset, bridge.sign(digest, 0, 2, 3))
    assert bridge.contract.valset_nonce() == 1
    assert bridge.contract.valset_hash() == new.hash()
    with refused("StaleValsetNonce"):  # the same update again
        bridge.contract.update_valset(bridge.relayer, new, bridge.valset, bridge.sign(digest, 0, 2, 3))

    bridge.contract.deposit(bridge.user, 10**6, bytes(range(20)))
    with refused("ValsetMismatch"):  # the old set can no longer sign withdrawals
        bridge.request(9, 1000, 0, 1, 2, 3)
    third, _ = _next_valset(2)
    with refused("ValsetMismatch"):  # ... nor the next set
        bridge.contract.update_valset(
            bridge.relayer,
            third,
            bridge.valset,
            bridge.sign(valset_digest(bridge.domain, third.hash()), 0, 1, 2, 3),
        )
    recipient = address_of_secret(bridge.user)
    digest = withdrawal_digest(bridge.domain, 9, recipient, 1000)
    by_new = {address_of_secret(s): sign_digest(s, digest) for s in new_secrets}
    bridge.contract.request_withdrawal(bridge.relayer, 9, recipient, 1000, new, by_new)
    assert bridge.contract.withdrawal(9).amount == 1000


def _signed_update(bridge: Bridge, new: ValsetOnChain) -> None:
    digest = valset_digest(bridge.domain, new.hash())
    bridge.contract.update_valset(bridge.relayer, new, bridge.valset, bridge.sign(digest, 0, 1, 2, 3))


def test_valset_update_refusals(bridge: Bridge) -> None:
    good, _ = _next_valset(5)
    (a, pa), (b, pb), (c, pc) = good.members
    cases: list[tuple[str, ValsetOnChain]] = [
        ("ValidatorsNotAscending", ValsetOnChain(nonce=5, members=((a, pa), (c, pc), (b, pb)))),
        ("ValidatorsNotAscending", ValsetOnChain(nonce=5, members=((a, pa), (a, pb), (c, pc)))),
        ("ValidatorsNotAscending", ValsetOnChain(nonce=5, members=((bytes(20), 1), (a, pa)))),
        ("ZeroPower", ValsetOnChain(nonce=5, members=((a, pa), (b, 0), (c, pc)))),
        ("EmptyValset", ValsetOnChain(nonce=5, members=())),
        ("StaleValsetNonce", ValsetOnChain(nonce=0, members=good.members)),
    ]
    for error, new in cases:
        with refused(error):
            _signed_update(bridge, new)
    other = ValsetOnChain(nonce=5, members=((a, pa), (b, pb), (c, pc + 1)))
    with refused("InvalidSignature"):  # signatures over another set's hash
        digest = valset_digest(bridge.domain, good.hash())
        bridge.contract.update_valset(bridge.relayer, other, bridge.valset, bridge.sign(digest, 0, 1, 2, 3))
    _signed_update(bridge, good)  # a nonce may skip ahead
    assert bridge.contract.valset_nonce() == 5


# ---------------------------------------------------------------------------- pause


def _pause(bridge: Bridge, *signers: int) -> None:
    digest = pause_digest(bridge.domain, bridge.contract.pause_nonce())
    bridge.contract.pause(bridge.relayer, bridge.valset, bridge.sign(digest, *signers))


def _unpause(bridge: Bridge, *signers: int) -> None:
    digest = unpause_digest(bridge.domain, bridge.contract.pause_nonce())
    bridge.contract.unpause(bridge.relayer, bridge.valset, bridge.sign(digest, *signers))


def test_pause_needs_more_than_a_third_and_stops_the_bridge(bridge: Bridge) -> None:
    bridge.contract.deposit(bridge.user, 10**6, bytes(range(20)))
    bridge.request(1, 500, 0, 1, 2)
    advance_time(bridge.w3, DISPUTE_PERIOD)
    with refused("InsufficientPower") as caught:
        _pause(bridge, 1, 3)  # 30 of 90: exactly a third
    assert caught[0].values == (30, 90)
    _pause(bridge, 0)  # 40 of 90, one signer
    assert bridge.contract.paused()
    with refused("AlreadyPaused"):
        _pause(bridge, 0)
    with refused("BridgePaused"):
        bridge.contract.deposit(bridge.user, MIN_DEPOSIT, bytes(range(20)))
    with refused("BridgePaused"):
        bridge.request(2, 500, 0, 1, 2)
    with refused("BridgePaused"):
        bridge.contract.finalize_withdrawal(bridge.relayer, 1)

    with refused("InsufficientPower"):
        _unpause(bridge, 0, 1)  # 60 of 90: exactly two thirds
    _unpause(bridge, 0, 1, 3)
    assert not bridge.contract.paused() and bridge.contract.pause_nonce() == 1
    with refused("NotPaused"):
        _unpause(bridge, 0, 1, 3)
    bridge.contract.finalize_withdrawal(bridge.relayer, 1)
    bridge.request(2, 500, 0, 1, 2)

    old = bridge.sign(pause_digest(bridge.domain, 0), 0, 1, 2, 3)
    with refused("InvalidSignature"):  # the pause signatures of nonce 0 are spent
        bridge.contract.pause(bridge.relayer, bridge.valset, old)
    _pause(bridge, 0)  # fresh ones (nonce 1) work
    assert bridge.contract.paused()


def test_valset_can_move_while_paused(bridge: Bridge) -> None:
    _pause(bridge, 0)
    new, new_secrets = _next_valset(1)
    _signed_update(bridge, new)
    digest = unpause_digest(bridge.domain, 0)
    bridge.contract.unpause(
        bridge.relayer, new, {address_of_secret(s): sign_digest(s, digest) for s in new_secrets}
    )
    assert not bridge.contract.paused()


# ---------------------------------------------------------------------------- python side, build


def test_aligned_signatures() -> None:
    secrets = _validator_secrets(b"align", 3)
    valset = ValsetOnChain(nonce=0, members=tuple((address_of_secret(s), 1) for s in secrets))
    digest = keccak256(b"x")
    sig = sign_digest(secrets[2], digest)
    aligned = valset.aligned_signatures({address_of_secret(secrets[2]): sig})
    assert aligned == [(0, bytes(32), bytes(32)), (0, bytes(32), bytes(32)), (sig[64], sig[:32], sig[32:64])]
    with pytest.raises(ValueError, match="non-members"):
        valset.aligned_signatures({address_of_secret(keccak256(b"stranger")): sig})
    with pytest.raises(ValueError, match="65 bytes"):
        valset.aligned_signatures({address_of_secret(secrets[0]): sig[:64]})


def test_compile_is_reproducible() -> None:
    done = subprocess.run(
        ["node", str(REPO / "evm" / "compile.mjs"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert load_contracts().solc.startswith("0.8.28+")
