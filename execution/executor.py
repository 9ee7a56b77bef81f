"""Executing one transaction whose signature has been checked: the nonce (ante) check, recording
the nonce, and the all-or-nothing application of its actions. Used by check_tx (against the check
state) and by finalize_block (against the block view), so both apply the same rules.

Order of checks: nonce (INVALID_NONCE, nothing written), then the nonce is recorded, then the
actions run on a view of their own that is merged only if every action succeeds. A tx whose
actions fail still uses its nonce, so the same bytes can never execute later.
"""

from __future__ import annotations

from consensus.app import OK, Event, EventAttribute, ExecTxResult
from execution.accounts import load_account, nonce_error, use_nonce
from execution.actions import ActionError, apply_actions
from execution.codes import CODESPACE, Code
from execution.state import StateView
from execution.tx import Tx


def failure(code: Code, log: str, events: tuple[Event, ...] = ()) -> ExecTxResult:
    """The result of a failed tx."""
    return ExecTxResult(code=int(code), log=log, codespace=CODESPACE, events=events)


def tx_event(tx: Tx) -> Event:
    """Emitted for every tx that used its nonce, whether or not its actions succeeded."""
    return Event("tx", (EventAttribute("sender", str(tx.sender)), EventAttribute("nonce", str(tx.nonce))))


def execute_tx(view: StateView, tx: Tx, block_time_ns: int) -> ExecTxResult:
    """Execute `tx` (signature already verified) on `view` at `block_time_ns`."""
    sender = tx.sender
    problem = nonce_error(load_account(view, sender), tx.nonce, block_time_ns)
    if problem is not None:
        return failure(Code.INVALID_NONCE, f"invalid nonce: {problem}")
    use_nonce(view, sender, tx.nonce)
    actions_view = StateView(view)
    try:
        events = apply_actions(actions_view, sender, tx.actions)
    except ActionError as exc:
        return failure(exc.code, exc.log, (tx_event(tx),))
    actions_view.apply_to(view)
    return ExecTxResult(code=OK, events=(tx_event(tx), *events))
