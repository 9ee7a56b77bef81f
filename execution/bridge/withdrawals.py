"""Withdrawals to the EVM chain: the `Withdraw` action (a debit of the acting account's free
collateral), the withdrawal records, and the validators' signatures that let anyone claim one on
the contract.

Ids: `withdrawal_id(owner, n)` = the integer of owner (20 bytes) + n (8 bytes BE), n the owner's
next withdrawal number from 1 (`schema.bridge_withdrawal_number_key`, per owner: no key that every
withdrawal writes). So an owner's withdrawals sort by number, and all by id.

State (`storage.schema`): the record at `bridge_withdrawal_key(id)` as `[recipient, amount, height,
signed_height]` (`Withdrawal`; kept forever), `bridge_withdrawal_pending_key(id)` while it awaits
signatures, each signature at `bridge_withdrawal_signature_key(id, evm address)`.

`Withdraw` (`apply_withdraw`): BRIDGE_DISABLED without a bridge; INVALID_ACTION for an amount below
`min_withdrawal` or the zero recipient (and, `execution.actions`, while acting as an isolated
account); the amount is debited from the acting account (INSUFFICIENT_FUNDS) and the transfer's
margin check applies (INSUFFICIENT_MARGIN); then the record, the pending mark, `totals.withdrawn`
and a `bridge_withdrawal` event (id in decimal, owner, recipient, amount).

A signature (`sign_withdrawal`): the withdrawal must exist (UNKNOWN_WITHDRAWAL); the signature must
recover over `withdrawal_digest(domain, id, recipient, amount)` to the signer's bridge key
(INVALID_BRIDGE_SIGNATURE); it is stored (the same one again changes nothing). While the withdrawal
is pending, the powers in the current valset of the EVM addresses that signed are summed; over 2/3
of the set's total it is signed: pending cleared, `signed_height` set, event
`bridge_withdrawal_signed`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from consensus.app import Event, EventAttribute
from execution.accounts import load_account, store_account
from execution.bridge.evm import EVM_ADDRESS_SIZE, format_evm_address, recover_signer, withdrawal_digest
from execution.bridge.params import ZERO_EVM_ADDRESS, BridgeParams, bridge_domain, require_params
from execution.bridge.totals import add_withdrawn
from execution.bridge.valsets import current_valset
from execution.codes import ActionError, Code
from execution.oracle.prices import prices_at
from execution.positions.margin import transfer_margin_error
from execution.state import StateReader, StateView, read_record
from execution.tx import Withdraw
from primitives import codec
from primitives.keys import Address
from storage import schema

NUMBER_BITS = 8 * schema.WITHDRAWAL_NUMBER_SIZE
MAX_WITHDRAWAL_ID = 2 ** (8 * schema.WITHDRAWAL_ID_SIZE) - 1
_MARK = codec.encode(0)


def withdrawal_id(owner: bytes, number: int) -> int:
    """The id of `owner`'s (20 bytes) withdrawal `number`: owner + number (8 bytes BE) as an integer."""
    if len(owner) != schema.OWNER_SIZE:
        raise ValueError(f"an owner is {schema.OWNER_SIZE} bytes, got {len(owner)}")
    return int.from_bytes(owner + number.to_bytes(schema.WITHDRAWAL_NUMBER_SIZE, "big"), "big")


def split_withdrawal_id(withdrawal_id: int) -> tuple[Address, int]:
    """(owner, number) of an id."""
    raw = schema.withdrawal_id_bytes(withdrawal_id)
    return Address(raw[: schema.OWNER_SIZE]), int.from_bytes(raw[schema.OWNER_SIZE :], "big")


@dataclass(frozen=True, slots=True, kw_only=True)
class Withdrawal:
    """A withdrawal: `amount` quote units of `owner` to the EVM address `recipient`, made at
    `height`, signed (by > 2/3 of the current valset) at `signed_height` (0: awaiting signatures)."""

    id: int
    owner: Address
    recipient: bytes
    amount: int
    height: int
    signed_height: int

    def encode(self) -> bytes:
        return codec.encode([self.recipient, self.amount, self.height, self.signed_height])

    @classmethod
    def decode(cls, withdrawal_id: int, raw: bytes) -> Withdrawal:
        f = codec.field_list(codec.decode(raw), "withdrawal", 4)
        owner, _ = split_withdrawal_id(withdrawal_id)
        return cls(
            id=withdrawal_id,
            owner=owner,
            recipient=codec.field_bytes(f[0], "withdrawal.recipient", EVM_ADDRESS_SIZE),
            amount=codec.field_int(f[1], "withdrawal.amount", 1),
            height=codec.field_int(f[2], "withdrawal.height"),
            signed_height=codec.field_int(f[3], "withdrawal.signed_height"),
        )


def _id_of_key(key: bytes, prefix: bytes) -> int:
    return int.from_bytes(key[len(prefix) : len(prefix) + schema.WITHDRAWAL_ID_SIZE], "big")


def load_withdrawal(state: StateReader, withdrawal_id: int) -> Withdrawal | None:
    """Withdrawal `withdrawal_id`, None if there is none."""
    if not 0 <= withdrawal_id <= MAX_WITHDRAWAL_ID:
        return None
    return read_record(
        state, schema.bridge_withdrawal_key(withdrawal_id), lambda raw: Withdrawal.decode(withdrawal_id, raw)
    )


def pending_withdrawals(state: StateReader) -> list[Withdrawal]:
    """The withdrawals awaiting signatures, by id."""
    prefix = schema.APP_BRIDGE_WITHDRAWAL_PENDING_PREFIX
    out: list[Withdrawal] = []
    for key, _ in state.iterate(prefix):
        withdrawal = load_withdrawal(state, _id_of_key(key, prefix))
        if withdrawal is not None:
            out.append(withdrawal)
    return out


def owner_withdrawals(state: StateReader, owner: Address) -> list[Withdrawal]:
    """Every withdrawal of `owner`, by number."""
    prefix = schema.APP_BRIDGE_WITHDRAWAL_PREFIX
    return [
        Withdrawal.decode(_id_of_key(key, prefix), raw)
        for key, raw in state.iterate(schema.bridge_withdrawal_owner_prefix(owner.raw))
    ]


def is_withdrawal_pending(state: StateReader, withdrawal_id: int) -> bool:
    return state.get(schema.bridge_withdrawal_pending_key(withdrawal_id)) is not None


def withdrawal_signatures(state: StateReader, withdrawal_id: int) -> dict[bytes, bytes]:
    """EVM address -> its signature of the withdrawal, by address."""
    if not 0 <= withdrawal_id <= MAX_WITHDRAWAL_ID:
        return {}
    prefix = schema.bridge_withdrawal_signature_prefix(withdrawal_id)
    return {key[len(prefix) :]: raw for key, raw in state.iterate(prefix)}


def digest_of(params: BridgeParams, withdrawal: Withdrawal) -> bytes:
    """What the validators sign for `withdrawal`."""
    return withdrawal_digest(bridge_domain(params), withdrawal.id, withdrawal.recipient, withdrawal.amount)


# -- actions -----------------------------------------------------------------------------------------


def apply_withdraw(view: StateView, sender: Address, action: Withdraw, height: int) -> list[Event]:
    """`sender` (the acting address) withdraws through the bridge (module docstring)."""
    params = require_params(view)
    if action.amount < params.min_withdrawal:
        raise ActionError(
            Code.INVALID_ACTION,
            f"withdrawal amount {action.amount} is below the minimum withdrawal {params.min_withdrawal}",
        )
    if action.recipient == ZERO_EVM_ADDRESS:
        raise ActionError(Code.INVALID_ACTION, "a withdrawal's recipient must not be the zero address")
    account = load_account(view, sender)
    if account.balance < action.amount:
        raise ActionError(
            Code.INSUFFICIENT_FUNDS, f"insufficient funds: balance {account.balance}, need {action.amount}"
        )
    store_account(view, sender, account.with_balance(account.balance - action.amount))
    margin_problem = transfer_margin_error(view, sender, prices_at(view))
    if margin_problem is not None:
        raise ActionError(Code.INSUFFICIENT_MARGIN, margin_problem)
    counter = schema.bridge_withdrawal_number_key(sender.raw)
    raw = view.get(counter)
    number = 1 if raw is None else codec.field_int(codec.decode(raw), "next withdrawal number", 1)
    view.put(counter, codec.encode(number + 1))
    withdrawal = Withdrawal(
        id=withdrawal_id(sender.raw, number),
        owner=sender,
        recipient=action.recipient,
        amount=action.amount,
        height=height,
        signed_height=0,
    )
    view.put_record(schema.bridge_withdrawal_key(withdrawal.id), withdrawal)
    view.put(schema.bridge_withdrawal_pending_key(withdrawal.id), _MARK)
    add_withdrawn(view, action.amount)
    return [
        Event(
            "bridge_withdrawal",
            (
                EventAttribute("id", str(withdrawal.id)),
                EventAttribute("owner", str(sender)),
                EventAttribute("recipient", format_evm_address(action.recipient)),
                EventAttribute("amount", str(action.amount)),
            ),
        )
    ]


def sign_withdrawal(
    view: StateView, params: BridgeParams, key: bytes, withdrawal_id: int, signature: bytes, height: int
) -> list[Event]:
    """Record the bridge key `key`'s signature of a withdrawal and tally it (module docstring)."""
    withdrawal = load_withdrawal(view, withdrawal_id)
    if withdrawal is None:
        raise ActionError(Code.UNKNOWN_WITHDRAWAL, f"no withdrawal with id {withdrawal_id}")
    if recover_signer(digest_of(params, withdrawal), signature) != key:
        raise ActionError(
            Code.INVALID_BRIDGE_SIGNATURE,
            f"the signature of withdrawal {withdrawal_id} does not recover to bridge key "
            f"{format_evm_address(key)}",
        )
    sig_key = schema.bridge_withdrawal_signature_key(withdrawal_id, key)
    if view.get(sig_key) == signature:
        return []
    view.put(sig_key, signature)
    if not is_withdrawal_pending(view, withdrawal_id):
        return []
    valset = current_valset(view)
    if valset is None:  # a bridge always has valset 0
        return []
    signed = valset.signed_quorum(withdrawal_signatures(view, withdrawal_id))
    if signed is None:
        return []
    view.delete(schema.bridge_withdrawal_pending_key(withdrawal_id))
    view.put_record(schema.bridge_withdrawal_key(withdrawal_id), replace(withdrawal, signed_height=height))
    return [
        Event(
            "bridge_withdrawal_signed",
            (
                EventAttribute("id", str(withdrawal_id)),
                EventAttribute("valset_nonce", str(valset.nonce)),
                EventAttribute("signed_power", str(signed)),
                EventAttribute("total_power", str(valset.total_power)),
            ),
        )
    ]
