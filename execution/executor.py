"""Executing one transaction whose signature has been checked: the nonce (ante) check, recording
the nonce, and the all-or-nothing application of its actions. Used by check_tx (against the check
state) and by finalize_block (against the block view), so both apply the same rules.

Order of checks: nonce (INVALID_NONCE, nothing written), then the nonce is recorded, then the
actions run on a view of their own that is merged only if every action succeeds. A tx whose
actions fail still uses its nonce, so the same bytes can never execute later.
"""

from __future__ import annotations

from consensus.app import OK, Event, EventAttribute, ExecTxResult
from execution.accounts import load_account, nonce_error, store_account
from execution.actions import apply_actions
from execution.codes import CODESPACE, ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.state import StateView
from execution.tx import Tx
from storage import schema


def failure(code: Code, log: str, events: tuple[Event, ...] = ()) -> ExecTxResult:
    """The result of a failed tx."""
    return ExecTxResult(code=int(code), log=log, codespace=CODESPACE, events=events)


def tx_event(tx: Tx) -> Event:
    """Emitted for every tx that used its nonce, whether or not its actions succeeded."""
    return Event("tx", (EventAttribute("sender", str(tx.sender)), EventAttribute("nonce", str(tx.nonce))))


def use_tx_nonce(view: StateView, tx: Tx, block_time_ns: int) -> ExecTxResult | None:
    """The ante part of a tx: INVALID_NONCE, or None with its nonce recorded on `view`."""
    account = load_account(view, tx.sender)
    problem = nonce_error(account, tx.nonce, block_time_ns)
    if problem is not None:
        return failure(Code.INVALID_NONCE, f"invalid nonce: {problem}")
    store_account(view, tx.sender, account.with_nonce(tx.nonce))  # use_nonce, with the account at hand
    return None


def execute_tx(
    view: StateView, tx: Tx, block_time_ns: int, height: int = 0, exchange: ExchangeContext | None = None
) -> ExecTxResult:
    """Execute `tx` (signature already verified) on `view` in the block at `height` and
    `block_time_ns` (check_tx: the next height and the last block time). Order actions run in
    `exchange`; when the actions fail, their book changes are undone (`ExchangeContext.abort_tx`)."""
    sender = tx.sender
    refused = use_tx_nonce(view, tx, block_time_ns)
    if refused is not None:
        return refused
    actions_view = StateView(view)
    if exchange is not None:
        exchange.begin_tx(schema.fee_delta_key(sender.raw, tx.nonce))
    try:
        events = apply_actions(actions_view, sender, tx.actions, height, exchange)
    except ActionError as exc:
        if exchange is not None:
            exchange.abort_tx(view, actions_view)
        return failure(exc.code, exc.log, (tx_event(tx),))
    if exchange is not None:
        exchange.commit_tx()
    actions_view.apply_to(view)
    return ExecTxResult(code=OK, events=(tx_event(tx), *events))
