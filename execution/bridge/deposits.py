"""Deposits from the EVM chain: validators' votes (`BridgeDepositVote`), their tally, and the credit
of a deposit once validators holding > 2/3 of the power attested the same claim, exactly once.

A deposit's identity is `evm.deposit_id(evm_chain_id, tx_hash, log_index)`; a claim is everything a
validator saw of it (`execution.tx.DepositClaim`), hashed by `claim_hash`.

State (`storage.schema`): a validator's vote on a deposit not yet credited at
`bridge_deposit_vote_key(deposit id, validator)`, the claim itself; a credited deposit at
`bridge_credited_key(deposit id)`, `[height, claim]` (`CreditedDeposit`), kept forever.

A vote (`apply_deposit_vote`): BRIDGE_DISABLED without a bridge; NOT_A_VALIDATOR unless the signer
is in the registry with power > 0; INVALID_BRIDGE_VOTE for no claims, a deposit id twice, another
EVM chain id than the bridge's, an amount below `min_deposit`. Then, per claim in order: a claim of
a credited deposit is skipped (late honest voters); otherwise the validator's vote is stored
(replacing its earlier one on that deposit) and tallied: the registry power (power > 0 now) of the
validators whose vote on the deposit has this claim's hash. When that power * 3 > the registry's
total power * 2, the recipient's balance is credited, the deposit is marked credited, its votes are
deleted, `totals.deposited` grows, and a `bridge_deposit` event (deposit_id, evm_tx_hash,
log_index, depositor, recipient, amount) is emitted. Votes for differing claims never add up.
"""

from __future__ import annotations

from dataclasses import dataclass

from consensus.app import Event, EventAttribute
from execution.accounts import MAX_BALANCE, load_account, store_account
from execution.bridge.evm import deposit_id as evm_deposit_id
from execution.bridge.evm import format_evm_address
from execution.bridge.params import require_params
from execution.bridge.totals import add_deposited
from execution.codes import ActionError, Code
from execution.state import StateReader, StateView, read_record
from execution.tx import BridgeDepositVote, DepositClaim
from execution.validators import load_validator, registry
from primitives import codec
from primitives.hashing import sha256
from primitives.keys import Address
from storage import schema


def claim_hash(claim: DepositClaim) -> bytes:
    """The 32-byte hash of a claim: sha256 of its canonical encoding (every field counts)."""
    return sha256(codec.encode(claim.to_fields()))


def claim_json(claim: DepositClaim) -> dict[str, str]:
    """A claim as queries and clients show it: numbers as decimal strings, the tx hash 0x hex, the
    depositor EIP-55, the recipient a derivd address."""
    return {
        "evm_chain_id": str(claim.evm_chain_id),
        "tx_hash": "0x" + claim.tx_hash.hex(),
        "log_index": str(claim.log_index),
        "depositor": format_evm_address(claim.depositor),
        "recipient": str(claim.recipient),
        "amount": str(claim.amount),
    }


def claim_deposit_id(claim: DepositClaim) -> bytes:
    """The deposit id a claim is about."""
    return evm_deposit_id(claim.evm_chain_id, claim.tx_hash, claim.log_index)


def _decode_claim(raw: bytes) -> DepositClaim:
    return DepositClaim.from_fields(codec.decode(raw), "deposit claim")


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditedDeposit:
    """A deposit credited at `height`, and the claim that was credited."""

    height: int
    claim: DepositClaim

    def encode(self) -> bytes:
        return codec.encode([self.height, self.claim.to_fields()])

    @classmethod
    def decode(cls, raw: bytes) -> CreditedDeposit:
        f = codec.field_list(codec.decode(raw), "credited deposit", 2)
        return cls(
            height=codec.field_int(f[0], "credited deposit.height"),
            claim=DepositClaim.from_fields(f[1], "credited deposit.claim"),
        )


def load_credited(state: StateReader, deposit_id: bytes) -> CreditedDeposit | None:
    """The credit record of `deposit_id`, None if it has not been credited."""
    if len(deposit_id) != schema.DEPOSIT_ID_SIZE:
        return None
    return read_record(state, schema.bridge_credited_key(deposit_id), CreditedDeposit.decode)


def deposit_votes(state: StateReader, deposit_id: bytes) -> list[tuple[bytes, DepositClaim]]:
    """Every stored vote on a deposit not yet credited, as (validator address, claim), by address."""
    if len(deposit_id) != schema.DEPOSIT_ID_SIZE:
        return []
    prefix = schema.bridge_deposit_vote_prefix(deposit_id)
    return [(key[len(prefix) :], _decode_claim(raw)) for key, raw in state.iterate(prefix)]


def deposit_vote(state: StateReader, deposit_id: bytes, validator_address: bytes) -> bytes | None:
    """The hash of the claim the validator voted on the deposit (not yet credited), None if none."""
    if len(deposit_id) != schema.DEPOSIT_ID_SIZE or len(validator_address) != schema.OWNER_SIZE:
        return None
    raw = state.get(schema.bridge_deposit_vote_key(deposit_id, validator_address))
    return None if raw is None else claim_hash(_decode_claim(raw))


def pending_deposit_count(state: StateReader) -> int:
    """How many deposits have votes and are not credited."""
    start = len(schema.APP_BRIDGE_DEPOSIT_VOTE_PREFIX)
    ids = [
        key[start : start + schema.DEPOSIT_ID_SIZE]
        for key, _ in state.iterate(schema.APP_BRIDGE_DEPOSIT_VOTE_PREFIX)
    ]
    return sum(1 for i, deposit in enumerate(ids) if i == 0 or deposit != ids[i - 1])  # keys sorted


def _check(action: BridgeDepositVote, evm_chain_id: int, min_deposit: int) -> list[bytes]:
    """The deposit id of each claim; ActionError INVALID_BRIDGE_VOTE if the vote breaks a rule."""
    if not action.deposits:
        raise ActionError(Code.INVALID_BRIDGE_VOTE, "a deposit vote needs at least one deposit")
    ids: list[bytes] = []
    for i, claim in enumerate(action.deposits):
        if claim.evm_chain_id != evm_chain_id:
            raise ActionError(
                Code.INVALID_BRIDGE_VOTE,
                f"deposits[{i}]: EVM chain id {claim.evm_chain_id}, the bridge's is {evm_chain_id}",
            )
        if claim.amount < min_deposit:
            raise ActionError(
                Code.INVALID_BRIDGE_VOTE,
                f"deposits[{i}]: amount {claim.amount} is below the minimum deposit {min_deposit}",
            )
        deposit = claim_deposit_id(claim)
        if deposit in ids:
            raise ActionError(
                Code.INVALID_BRIDGE_VOTE, f"deposits[{i}]: the same deposit as deposits[{ids.index(deposit)}]"
            )
        ids.append(deposit)
    return ids


def deposit_event(deposit: bytes, claim: DepositClaim) -> Event:
    return Event(
        "bridge_deposit",
        (
            EventAttribute("deposit_id", "0x" + deposit.hex()),
            EventAttribute("evm_tx_hash", "0x" + claim.tx_hash.hex()),
            EventAttribute("log_index", str(claim.log_index)),
            EventAttribute("depositor", format_evm_address(claim.depositor)),
            EventAttribute("recipient", str(claim.recipient)),
            EventAttribute("amount", str(claim.amount)),
        ),
    )


def _credit(view: StateView, deposit: bytes, claim: DepositClaim, height: int) -> Event:
    recipient = load_account(view, claim.recipient)
    if recipient.balance + claim.amount > MAX_BALANCE:
        raise ActionError(
            Code.INVALID_BRIDGE_VOTE,
            f"crediting deposit 0x{deposit.hex()} would take {claim.recipient}'s balance above {MAX_BALANCE}",
        )
    store_account(view, claim.recipient, recipient.with_balance(recipient.balance + claim.amount))
    view.put_record(schema.bridge_credited_key(deposit), CreditedDeposit(height=height, claim=claim))
    for key, _ in view.iterate(schema.bridge_deposit_vote_prefix(deposit)):
        view.delete(key)
    add_deposited(view, claim.amount)
    return deposit_event(deposit, claim)


def apply_deposit_vote(
    view: StateView, sender: Address, action: BridgeDepositVote, height: int
) -> list[Event]:
    """Record and tally `sender`'s deposit vote in the block at `height` (module docstring)."""
    params = require_params(view)
    entry = load_validator(view, sender.raw)
    if entry is None or entry.power <= 0:
        raise ActionError(Code.NOT_A_VALIDATOR, f"{sender} is not a validator with voting power")
    ids = _check(action, params.evm_chain_id, params.min_deposit)
    entries = registry(view)
    powers = {v.address.raw: v.power for v in entries if v.power > 0}
    total = sum(powers.values())
    events: list[Event] = []
    for deposit, claim in zip(ids, action.deposits, strict=True):
        if load_credited(view, deposit) is not None:
            continue
        view.put(schema.bridge_deposit_vote_key(deposit, sender.raw), codec.encode(claim.to_fields()))
        wanted = claim_hash(claim)
        agreeing = sum(
            powers.get(validator, 0)
            for validator, voted in deposit_votes(view, deposit)
            if claim_hash(voted) == wanted
        )
        if agreeing * 3 > total * 2:
            events.append(_credit(view, deposit, claim, height))
    return events
