"""Executing one transaction whose signature has been checked: the ante (nonce and fee), then the
all-or-nothing application of its actions. Used by check_tx (against the check state) and by
finalize_block (against the block view), so both apply the same rules.

Order of checks: nonce (INVALID_NONCE), fee (INSUFFICIENT_FEE, `execution.fees`), both before
anything is written; then the nonce is recorded and the fee paid, then the actions run on a view of
their own that is merged only if every action succeeds. A tx whose actions fail still uses its
nonce and pays its fee, so the same bytes can never execute later and every action costs.
"""

from __future__ import annotations

from consensus.app import OK, Event, EventAttribute, ExecTxResult
from execution.accounts import load_account, nonce_error, store_account
from execution.actions import apply_actions
from execution.codes import CODESPACE, ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.fills import account_margin
from execution.fees import fee_error, pay_fee
from execution.positions.position import owner_markets
from execution.state import StateView
from execution.tx import CancelAll, CancelOrder, Tx
from storage import schema


def failure(code: Code, log: str, events: tuple[Event, ...] = ()) -> ExecTxResult:
    """The result of a failed tx."""
    return ExecTxResult(code=int(code), log=log, codespace=CODESPACE, events=events)


def tx_event(tx: Tx) -> Event:
    """Emitted for every tx that used its nonce (and paid its fee), whether or not its actions
    succeeded."""
    return Event(
        "tx",
        (
            EventAttribute("sender", str(tx.sender)),
            EventAttribute("nonce", str(tx.nonce)),
            EventAttribute("fee", str(tx.fee), index=False),
        ),
    )


_CANCELS = (CancelOrder, CancelAll)


def collateral_error(view: StateView, tx: Tx, ctx: ExchangeContext) -> str | None:
    """Why the sender, who holds positions, cannot pay the fee of `tx` from its collateral, or None.
    The fee must fit in the free collateral (value - initial requirement with orders); a tx of
    cancels only lowers the requirement, so it needs the fee above the maintenance requirement only:
    an account at its margin limit can still cancel. Either way no fee takes an account under water."""
    summary = account_margin(ctx, view, tx.sender.raw)
    if all(type(action) in _CANCELS for action in tx.actions):
        spare, what = summary.value - summary.maintenance, "value above maintenance"
    else:
        spare, what = summary.free, "free collateral"
    if spare < tx.fee:
        return f"insufficient fee: {what} {spare} cannot pay the fee {tx.fee}"
    return None


def run_ante(view: StateView, tx: Tx, block_time_ns: int, ctx: ExchangeContext) -> ExecTxResult | None:
    """The ante part of a tx: INVALID_NONCE or INSUFFICIENT_FEE with nothing written, or None with
    its nonce recorded and its fee paid on `view` (the fee schedule and the prices from `ctx`)."""
    account = load_account(view, tx.sender)
    problem = nonce_error(account, tx.nonce, block_time_ns)
    if problem is not None:
        return failure(Code.INVALID_NONCE, f"invalid nonce: {problem}")
    problem = fee_error(view, ctx.fee_params(view), tx, account)
    if problem is None and tx.fee and owner_markets(view, tx.sender.raw):
        problem = collateral_error(view, tx, ctx)
    if problem is not None:
        return failure(Code.INSUFFICIENT_FEE, problem)
    account = account.with_nonce(tx.nonce)
    if tx.fee:
        account = account.with_balance(account.balance - tx.fee)
        pay_fee(view, tx)
    store_account(view, tx.sender, account)
    return None


def execute_tx(
    view: StateView, tx: Tx, block_time_ns: int, height: int, exchange: ExchangeContext
) -> ExecTxResult:
    """Execute `tx` (signature already verified) on `view` in the block at `height` and
    `block_time_ns` (check_tx: the next height and the last block time). Order actions run in
    `exchange` (not live in check_tx); when the actions fail, their book changes are undone
    (`ExchangeContext.abort_tx`)."""
    sender = tx.sender
    refused = run_ante(view, tx, block_time_ns, exchange)
    if refused is not None:
        return refused
    actions_view = StateView(view)
    exchange.begin_tx(schema.fee_delta_key(sender.raw, tx.nonce))
    try:
        events = apply_actions(actions_view, sender, tx.actions, height, exchange)
    except ActionError as exc:
        exchange.abort_tx(view, actions_view)
        return failure(exc.code, exc.log, (tx_event(tx),))
    exchange.commit_tx()
    actions_view.apply_to(view)
    return ExecTxResult(code=OK, events=(tx_event(tx), *events))
