"""Executing actions: the rules of meaning for each action kind and the dispatch from kind to
handler. A handler changes state only through the view it is given and reports a failure by
raising `ActionError(code, log)`; the caller drops the view, so a failed action leaves nothing.
New kinds (orders, cancels, oracle votes...) add a handler and a case in `apply_action`.
"""

from __future__ import annotations

from collections.abc import Sequence

from consensus.app import Event, EventAttribute
from execution.accounts import FundsError, move_quote
from execution.codes import Code
from execution.exchange import ORDER_ACTIONS, ExchangeContext, ExchangeError, apply_order_action
from execution.liquidation import apply_liquidate
from execution.margin import transfer_margin_error
from execution.oracle import OracleError, apply_oracle_vote, prices_at
from execution.state import StateView
from execution.triggers import apply_place_trigger
from execution.tx import MAX_ACTIONS, Action, Liquidate, OracleVote, PlaceTrigger, Transfer, UnknownAction
from primitives.keys import Address


class ActionError(Exception):
    """An action that cannot be applied: its result code and a log for the user."""

    def __init__(self, code: Code, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log


def transfer_event(sender: Address, recipient: Address, amount: int) -> Event:
    return Event(
        "transfer",
        (
            EventAttribute("sender", str(sender)),
            EventAttribute("recipient", str(recipient)),
            EventAttribute("amount", str(amount)),
        ),
    )


def apply_transfer(view: StateView, sender: Address, action: Transfer) -> list[Event]:
    if action.amount <= 0:
        raise ActionError(Code.INVALID_ACTION, f"transfer amount must be positive, got {action.amount}")
    if action.to == sender:
        raise ActionError(Code.INVALID_ACTION, f"transfer to self ({sender})")
    try:
        move_quote(view, sender, action.to, action.amount)
    except FundsError as exc:
        raise ActionError(Code.INSUFFICIENT_FUNDS, str(exc)) from exc
    margin_problem = transfer_margin_error(view, sender, prices_at(view))
    if margin_problem is not None:
        raise ActionError(Code.INSUFFICIENT_MARGIN, margin_problem)
    return [transfer_event(sender, action.to, action.amount)]


def apply_vote(view: StateView, sender: Address, action: OracleVote, height: int) -> list[Event]:
    try:
        return apply_oracle_vote(view, sender, action, height)
    except OracleError as exc:
        raise ActionError(exc.code, exc.log) from exc


def apply_action(
    view: StateView, sender: Address, action: Action, height: int = 0, exchange: ExchangeContext | None = None
) -> list[Event]:
    """Apply one action of `sender` in the block at `height`; its events, or ActionError. Order
    actions run in `exchange` (without one: validation only, as check_tx does)."""
    if isinstance(action, Transfer):
        return apply_transfer(view, sender, action)
    if isinstance(action, ORDER_ACTIONS):
        try:
            return apply_order_action(view, sender, action, exchange or ExchangeContext(height))
        except ExchangeError as exc:
            raise ActionError(exc.code, exc.log) from exc
    if isinstance(action, OracleVote):
        return apply_vote(view, sender, action, height)
    if isinstance(action, PlaceTrigger):
        try:
            return apply_place_trigger(view, sender, action, exchange or ExchangeContext(height))
        except ExchangeError as exc:
            raise ActionError(exc.code, exc.log) from exc
    if isinstance(action, Liquidate):
        try:
            return apply_liquidate(view, sender, action, exchange or ExchangeContext(height))
        except ExchangeError as exc:
            raise ActionError(exc.code, exc.log) from exc
    if isinstance(action, UnknownAction):
        raise ActionError(Code.UNKNOWN_ACTION, f"unknown action kind {action.kind}")
    raise TypeError(f"not an action: {action!r}")


def apply_actions(
    view: StateView,
    sender: Address,
    actions: Sequence[Action],
    height: int = 0,
    exchange: ExchangeContext | None = None,
) -> list[Event]:
    """Apply `actions` in order in the block at `height`; ActionError (its log prefixed with the
    action's index) on the first failure, after which the caller must drop `view`."""
    if not 1 <= len(actions) <= MAX_ACTIONS:
        raise ActionError(Code.INVALID_ACTION, f"a tx carries 1 to {MAX_ACTIONS} actions, got {len(actions)}")
    events: list[Event] = []
    for index, action in enumerate(actions):
        try:
            events.extend(apply_action(view, sender, action, height, exchange))
        except ActionError as exc:
            raise ActionError(exc.code, f"action {index}: {exc.log}") from exc
    return events
