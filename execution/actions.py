"""The table from action type to handler (`HANDLERS`), the transfer handler, and `apply_actions`.

A handler takes (view, sender, action, exchange context), changes state only through the view and
reports a failure by raising `ActionError(code, log)` (`execution.codes`); the caller drops the
view, so a failed action leaves nothing. Without a live context (check_tx) order actions are
validated only. A new action kind is a type in `execution.tx` and one row here.

Acting address: the actions of a tx act as its signer until a switch, which `apply_actions` handles
itself (they have no handler): `UseSubaccount(n)` (INVALID_ACTION outside 0..127) makes the
following actions act as `execution.accounts.subaccount_address(signer, n)`, `UseIsolated(m)`
(UNKNOWN_MARKET unless market m exists) as `isolated_address(signer, m)`, isolated: until the next
switch every order action (place, cancel, cancel-all, amend, trigger, TWAP and its cancel, scale)
must be on market m (a cancel-all of market 0 means m), a transfer may go only to one of the
signer's subaccounts and a bridge withdrawal is refused (INVALID_ACTION otherwise). The handlers
see the acting address as `sender`, so events, margin, the rate limit and liquidation are the
acting address's. The signer alone pays the fee and owns the nonce (`execution.executor`).
`acting_addresses` is the same walk without the checks, for the scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from consensus.app import Event, EventAttribute
from execution.accounts import (
    MAX_SUBACCOUNT,
    FundsError,
    isolated_address,
    move_quote,
    subaccount_address,
    subaccount_number,
)
from execution.bridge.deposits import apply_deposit_vote
from execution.bridge.signing import apply_bridge_sign
from execution.bridge.valsets import apply_set_bridge_key
from execution.bridge.withdrawals import apply_withdraw
from execution.codes import ActionError, Code
from execution.exchange.context import ExchangeContext
from execution.exchange.orders import apply_amend, apply_cancel, apply_cancel_all
from execution.exchange.placement import apply_place
from execution.exchange.scale import apply_place_scale
from execution.exchange.twap import apply_cancel_twap, apply_place_twap
from execution.oracle.prices import prices_at
from execution.oracle.volatility import apply_vol_vote
from execution.oracle.votes import apply_oracle_vote
from execution.positions.margin import transfer_margin_error
from execution.risk.liquidation import apply_liquidate
from execution.risk.triggers import apply_place_trigger
from execution.state import StateView
from execution.tx import (
    MAX_ACTIONS,
    Action,
    AmendOrder,
    BridgeDepositVote,
    BridgeSign,
    CancelAll,
    CancelOrder,
    CancelTwap,
    Liquidate,
    OracleVote,
    PlaceOrder,
    PlaceScale,
    PlaceTrigger,
    PlaceTwap,
    SetBridgeKey,
    Transfer,
    UnknownAction,
    UseIsolated,
    UseSubaccount,
    VolVote,
    Withdraw,
    switches_only,
)
from primitives.keys import Address

A = TypeVar("A")
Handler = Callable[[StateView, Address, Any, ExchangeContext], list[Event]]
"""A handler, its action parameter erased (`_checked` ties it to the action type)."""


def transfer_event(sender: Address, recipient: Address, amount: int) -> Event:
    return Event(
        "transfer",
        (
            EventAttribute("sender", str(sender)),
            EventAttribute("recipient", str(recipient)),
            EventAttribute("amount", str(amount)),
        ),
    )


def apply_transfer(view: StateView, sender: Address, action: Transfer, ctx: ExchangeContext) -> list[Event]:
    """Move quote from the sender's account to another; the sender must keep its initial margin."""
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


def apply_vote(view: StateView, sender: Address, action: OracleVote, ctx: ExchangeContext) -> list[Event]:
    """A validator's oracle price vote at the context's height (`execution.oracle.votes`)."""
    return apply_oracle_vote(view, sender, action, ctx.height)


def apply_volatility_vote(
    view: StateView, sender: Address, action: VolVote, ctx: ExchangeContext
) -> list[Event]:
    """A validator's implied-volatility vote at the context's height (`execution.oracle.volatility`)."""
    return apply_vol_vote(view, sender, action, ctx.height)


def apply_bridge_deposit_vote(
    view: StateView, sender: Address, action: BridgeDepositVote, ctx: ExchangeContext
) -> list[Event]:
    """A validator's attestations of EVM deposits (`execution.bridge.deposits`)."""
    return apply_deposit_vote(view, sender, action, ctx.height)


def apply_bridge_withdraw(
    view: StateView, sender: Address, action: Withdraw, ctx: ExchangeContext
) -> list[Event]:
    """Quote out through the bridge (`execution.bridge.withdrawals`)."""
    return apply_withdraw(view, sender, action, ctx.height)


def apply_bridge_signatures(
    view: StateView, sender: Address, action: BridgeSign, ctx: ExchangeContext
) -> list[Event]:
    """A validator's bridge-key signatures (`execution.bridge.signing`)."""
    return apply_bridge_sign(view, sender, action, ctx.height)


def apply_bridge_key(
    view: StateView, sender: Address, action: SetBridgeKey, ctx: ExchangeContext
) -> list[Event]:
    """A validator's new bridge key (`execution.bridge.valsets`)."""
    return apply_set_bridge_key(view, sender, action)


def apply_unknown(
    view: StateView, sender: Address, action: UnknownAction, ctx: ExchangeContext
) -> list[Event]:
    """An action of a kind this version does not know: always UNKNOWN_ACTION."""
    raise ActionError(Code.UNKNOWN_ACTION, f"unknown action kind {action.kind}")


def apply_switch(
    view: StateView, sender: Address, action: UseSubaccount | UseIsolated, ctx: ExchangeContext
) -> list[Event]:
    """A switch on its own: only its checks (`apply_actions` does the switching)."""
    _switch(view, sender, action, ctx)
    return []


def _checked(
    kind: type[A], handler: Callable[[StateView, Address, A, ExchangeContext], list[Event]]
) -> Handler:
    """`handler`, checked (by the type checker) to take actions of type `kind`."""
    return handler


HANDLERS: dict[type[Action], Handler] = {
    Transfer: _checked(Transfer, apply_transfer),
    PlaceOrder: _checked(PlaceOrder, apply_place),
    CancelOrder: _checked(CancelOrder, apply_cancel),
    CancelAll: _checked(CancelAll, apply_cancel_all),
    AmendOrder: _checked(AmendOrder, apply_amend),
    OracleVote: _checked(OracleVote, apply_vote),
    Liquidate: _checked(Liquidate, apply_liquidate),
    PlaceTrigger: _checked(PlaceTrigger, apply_place_trigger),
    VolVote: _checked(VolVote, apply_volatility_vote),
    PlaceTwap: _checked(PlaceTwap, apply_place_twap),
    CancelTwap: _checked(CancelTwap, apply_cancel_twap),
    PlaceScale: _checked(PlaceScale, apply_place_scale),
    UseSubaccount: _checked(UseSubaccount, apply_switch),
    UseIsolated: _checked(UseIsolated, apply_switch),
    BridgeDepositVote: _checked(BridgeDepositVote, apply_bridge_deposit_vote),
    Withdraw: _checked(Withdraw, apply_bridge_withdraw),
    BridgeSign: _checked(BridgeSign, apply_bridge_signatures),
    SetBridgeKey: _checked(SetBridgeKey, apply_bridge_key),
    UnknownAction: _checked(UnknownAction, apply_unknown),
}
"""Every action type of `execution.tx.Action` and its handler."""

VALIDATED_ONLY_IN_CHECK: frozenset[type[Action]] = frozenset({PlaceOrder, CancelOrder, CancelAll, AmendOrder})
"""Action types whose handler, without a live context (check_tx), validates and writes nothing. A
tx with a switch is rechecked whole (a switch writes nothing, but its tx is rare enough)."""

_MARKET_ACTIONS = (PlaceOrder, CancelOrder, AmendOrder, PlaceTrigger, PlaceTwap, CancelTwap, PlaceScale)
"""The order actions with a market id that an isolated account may use on its own market only"""


def acting_addresses(sender: Address, actions: Sequence[Action]) -> list[Address]:
    """The address each action of `sender`'s tx acts as (a switch's own: the one it switches to),
    as `apply_actions` walks them, without its checks (a switch it would refuse keeps the address)."""
    acting = sender
    out: list[Address] = []
    for action in actions:
        if isinstance(action, UseSubaccount) and 0 <= action.number <= MAX_SUBACCOUNT:
            acting = subaccount_address(sender, action.number)
        elif isinstance(action, UseIsolated) and action.market_id < 2**32:
            acting = isolated_address(sender, action.market_id)
        out.append(acting)
    return out


def _switch(
    view: StateView, sender: Address, action: UseSubaccount | UseIsolated, ctx: ExchangeContext
) -> tuple[Address, int | None]:
    """(the address the following actions act as, its isolated market or None)."""
    if isinstance(action, UseSubaccount):
        if not 0 <= action.number <= MAX_SUBACCOUNT:
            raise ActionError(
                Code.INVALID_ACTION, f"subaccount number {action.number} is outside [0, {MAX_SUBACCOUNT}]"
            )
        return subaccount_address(sender, action.number), None
    market = ctx.market(view, action.market_id)  # UNKNOWN_MARKET; every market is a perpetual or option
    return isolated_address(sender, market.market_id), market.market_id


def _isolated_action(sender: Address, action: Action, market_id: int) -> Action:
    """`action` as the isolated account of `market_id` of `sender` may run it (a cancel-all of
    market 0 made one of `market_id`); INVALID_ACTION if it may not."""
    where = f"acting as the isolated account of market {market_id}"
    if isinstance(action, CancelAll):
        if action.market_id not in (0, market_id):
            raise ActionError(Code.INVALID_ACTION, f"{where}: cancel-all on market {action.market_id}")
        return CancelAll(market_id)
    if isinstance(action, _MARKET_ACTIONS) and action.market_id != market_id:
        raise ActionError(Code.INVALID_ACTION, f"{where}: an order action on market {action.market_id}")
    if isinstance(action, Withdraw):
        raise ActionError(
            Code.INVALID_ACTION, f"{where}: a withdrawal (withdraw from the owner or a subaccount)"
        )
    if isinstance(action, Transfer) and subaccount_number(sender, action.to) is None:
        raise ActionError(
            Code.INVALID_ACTION, f"{where}: a transfer to {action.to}, not one of the subaccounts of {sender}"
        )
    return action


def apply_action(
    view: StateView, sender: Address, action: Action, height: int = 0, exchange: ExchangeContext | None = None
) -> list[Event]:
    """Apply one action of `sender` in the block at `height`; its events, or ActionError. Order
    actions run in `exchange` (without one: validation only, as check_tx does)."""
    return HANDLERS[type(action)](view, sender, action, exchange or ExchangeContext(height))


def apply_actions(
    view: StateView,
    sender: Address,
    actions: Sequence[Action],
    height: int = 0,
    exchange: ExchangeContext | None = None,
) -> list[Event]:
    """Apply `actions` of the signer `sender` in order in the block at `height`, each as the
    address the switches before it chose (module docstring); ActionError (its log prefixed with
    the action's index) on the first failure, after which the caller must drop `view`."""
    if not 1 <= len(actions) <= MAX_ACTIONS:
        raise ActionError(Code.INVALID_ACTION, f"a tx carries 1 to {MAX_ACTIONS} actions, got {len(actions)}")
    if switches_only(actions):
        raise ActionError(Code.INVALID_ACTION, "a tx of subaccount switches only does nothing")
    events: list[Event] = []
    acting, isolated = sender, None
    for index, action in enumerate(actions):
        try:
            if isinstance(action, UseSubaccount | UseIsolated):
                acting, isolated = _switch(view, sender, action, exchange or ExchangeContext(height))
                continue
            allowed = action if isolated is None else _isolated_action(sender, action, isolated)
            events.extend(apply_action(view, acting, allowed, height, exchange))
        except ActionError as exc:
            raise ActionError(exc.code, f"action {index}: {exc.log}") from exc
    return events
