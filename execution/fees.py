"""What spam costs: transaction fees (the chain's schedule, genesis section `fees`, stored at
`schema.FEE_PARAMS`; the minimum fee of a tx; the fee part of the ante, `fee_error` and
`pay_fee`) and each account's order-rate window (genesis section `rate_limits`).

Every tx pays its `fee` (`execution.tx.Tx.fee`, quote units), whatever its actions' outcome, and the
fee must be at least the chain's minimum for its actions: the sum of each action's price in the
schedule (`FeeParams`: placements, amends, triggers, transfers and liquidations 100 quote units,
a ten-thousandth of a dollar; cancels 10, as Hyperliquid lets cancels through more cheaply; a vol
vote costs an oracle vote's price, `oracle_vote`, and so do the bridge's deposit votes, signatures
and key; a bridge withdrawal costs a transfer's; a TWAP a placement's, its cancel a cancel's; a
scale order of n orders n placements', `execution.tx.fee_units`). An oracle or vol vote (or a
bridge vote, signature or key, `execution.tx.VOTE_TYPES`) of a validator with power costs nothing
(validators feed prices and vols every block; anyone else pays for the vote, which then fails
NOT_A_VALIDATOR). The subaccount switches (`UseSubaccount`,
`UseIsolated`) cost nothing and are not in the schedule, but a tx of switches only pays one
placement (`execution.tx.switches_only`). Every price is at least 1, so every tx but a
validator's vote costs something.

The fee is paid from the sender's account balance (its collateral) before the actions run, so every
margin check of the actions counts it: a placement, amend, trigger or transfer needs free
collateral for its own requirement and the fee. A tx of cancels, or of orders that can only reduce
a position, needs only a balance that covers its fee: an account at its margin limit can always
cancel. The fee goes to `FEE_COLLECTOR` through the tx's fee delta (`schema.fee_delta_key`, swept at
the end of the block), so fee-paying txs do not all write one account.

A tx whose fee is below the minimum, or more than the sender's balance, is refused
(INSUFFICIENT_FEE) before anything is written: its nonce stays unused, and an account that never
had funds gets no record. A node may ask more than the chain's minimum of the txs it admits to its
mempool (`[mempool] min_fee`, like the Cosmos SDK's `minimum-gas-prices`); that is not a rule of
the chain.

Order-rate window (`RateLimitParams`, stored at `schema.RATE_LIMIT_PARAMS`): besides each market's
per-block limit (`Market.max_orders_per_block`), an account places and amends (orders and
triggers) at most `orders_per_window` times in any `window_blocks` blocks on average, as a token
bucket: its level (in its account record, `execution.accounts.Account.rate_level`) rises by `window_blocks`
per placement and drains by `orders_per_window` per block, and a placement that would take it
above `orders_per_window * window_blocks` is RATE_LIMITED. So a burst of `orders_per_window` is
allowed, then `orders_per_window / window_blocks` a block, with no burst at window boundaries.
Blocks count the level; check_tx only refuses a placement the committed level already forbids.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from execution.accounts import Account
from execution.state import StateReader, StateView, read_record
from execution.tx import STANDARD_FEES, VOTE_TYPES, Action, ActionKind, Tx, fee_units, switches_only
from execution.validators import load_validator
from primitives import codec
from storage import schema

MAX_ACTION_FEE = 10**12
"""The largest price of one action in a schedule (a million dollars)"""


@dataclass(frozen=True, slots=True, kw_only=True)
class FeeParams:
    """The genesis `fees` section: the price of each action kind, in quote units."""

    transfer: int = STANDARD_FEES[ActionKind.TRANSFER]
    place_order: int = STANDARD_FEES[ActionKind.PLACE_ORDER]
    cancel_order: int = STANDARD_FEES[ActionKind.CANCEL_ORDER]
    cancel_all: int = STANDARD_FEES[ActionKind.CANCEL_ALL]
    amend_order: int = STANDARD_FEES[ActionKind.AMEND_ORDER]
    oracle_vote: int = STANDARD_FEES[ActionKind.ORACLE_VOTE]
    """also the price of a vol vote (`_FIELD_OF_KIND`)"""
    liquidate: int = STANDARD_FEES[ActionKind.LIQUIDATE]
    place_trigger: int = STANDARD_FEES[ActionKind.PLACE_TRIGGER]

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        for name in FEE_FIELDS:
            value = getattr(self, name)
            if not 1 <= value <= MAX_ACTION_FEE:
                return (
                    name,
                    f"must be within [1, {MAX_ACTION_FEE}] (a zero fee makes spam free), got {value}",
                )
        return None

    def price(self, kind: int) -> int:
        """The price of one action of `kind` (an unknown kind costs as a placement, a switch 0)."""
        if kind in _FREE_KINDS:
            return 0
        return getattr(self, _FIELD_OF_KIND.get(kind, "place_order"))  # type: ignore[no-any-return]

    def fee_of(self, actions: Sequence[Action]) -> int:
        """The minimum fee of `actions` at this schedule for a sender that is not a validator (what
        a client pays; `minimum_fee` also knows a validator's free vote); switches only: one
        placement."""
        if switches_only(actions):
            return self.place_order
        return sum(self.price(action.kind) * fee_units(action) for action in actions)

    def encode(self) -> bytes:
        return codec.encode([getattr(self, name) for name in FEE_FIELDS])

    @classmethod
    def decode(cls, raw: bytes) -> FeeParams:
        f = codec.field_list(codec.decode(raw), "fee params", len(FEE_FIELDS))
        return cls(**{name: codec.field_int(f[i], f"fee params.{name}") for i, name in enumerate(FEE_FIELDS)})

    def to_json(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FEE_FIELDS}

    @classmethod
    def from_query(cls, value: object) -> FeeParams:
        """The schedule from the JSON of the `/fees` query (decimal strings); ValueError if it is not one."""
        if not isinstance(value, dict) or set(value) != set(FEE_FIELDS):
            raise ValueError(f"a fee schedule has the fields {', '.join(FEE_FIELDS)}, got {value!r}")
        return cls(**{name: int(value[name]) for name in FEE_FIELDS})


FEE_FIELDS = tuple(f.name for f in fields(FeeParams))
_FREE_KINDS = frozenset({int(ActionKind.USE_SUBACCOUNT), int(ActionKind.USE_ISOLATED)})
"""The switches: free (`execution.tx.STANDARD_FEES`)"""
"""The keys of the genesis `fees` section, in their stored order (each optional)."""

_FIELD_OF_KIND: dict[int, str] = {
    ActionKind.TRANSFER: "transfer",
    ActionKind.PLACE_ORDER: "place_order",
    ActionKind.CANCEL_ORDER: "cancel_order",
    ActionKind.CANCEL_ALL: "cancel_all",
    ActionKind.AMEND_ORDER: "amend_order",
    ActionKind.ORACLE_VOTE: "oracle_vote",
    ActionKind.LIQUIDATE: "liquidate",
    ActionKind.PLACE_TRIGGER: "place_trigger",
    ActionKind.VOL_VOTE: "oracle_vote",
    ActionKind.PLACE_TWAP: "place_order",
    ActionKind.CANCEL_TWAP: "cancel_order",
    ActionKind.PLACE_SCALE: "place_order",
    ActionKind.BRIDGE_DEPOSIT_VOTE: "oracle_vote",
    ActionKind.WITHDRAW: "transfer",
    ActionKind.BRIDGE_SIGN: "oracle_vote",
    ActionKind.SET_BRIDGE_KEY: "oracle_vote",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitParams:
    """The genesis `rate_limits` section (module docstring)."""

    window_blocks: int = 100
    orders_per_window: int = 20_000

    def __post_init__(self) -> None:
        problem = self.error()
        if problem is not None:
            raise ValueError(f"{problem[0]}: {problem[1]}")

    def error(self) -> tuple[str, str] | None:
        """The first rule broken as (field, reason), or None."""
        if not 1 <= self.window_blocks <= 1_000_000:
            return "window_blocks", f"must be within [1, 1000000], got {self.window_blocks}"
        if not 1 <= self.orders_per_window <= 100_000_000:
            return "orders_per_window", f"must be within [1, 100000000], got {self.orders_per_window}"
        return None

    def encode(self) -> bytes:
        return codec.encode([self.window_blocks, self.orders_per_window])

    @classmethod
    def decode(cls, raw: bytes) -> RateLimitParams:
        f = codec.field_list(codec.decode(raw), "rate limit params", 2)
        return cls(
            window_blocks=codec.field_int(f[0], "rate limit params.window_blocks"),
            orders_per_window=codec.field_int(f[1], "rate limit params.orders_per_window"),
        )

    def to_json(self) -> dict[str, int]:
        return {"window_blocks": self.window_blocks, "orders_per_window": self.orders_per_window}


RATE_LIMIT_FIELDS = ("window_blocks", "orders_per_window")
"""The keys of the genesis `rate_limits` section (each optional)."""


def load_rate_params(state: StateReader) -> RateLimitParams:
    """The order-rate window (the defaults if genesis wrote none)."""
    raw = state.get(schema.RATE_LIMIT_PARAMS)
    return RateLimitParams() if raw is None else RateLimitParams.decode(raw)


def take_order_slot(
    view: StateView, params: RateLimitParams, owner: bytes, height: int, *, count: bool
) -> str | None:
    """Why `owner` may not place or amend once more at `height` (its window is full), or None;
    `count`: record the placement in the owner's level (blocks), else only judge it (check_tx)."""
    key = schema.account_key(owner)
    account = read_record(view, key, Account.decode) or Account()
    drained = max(0, height - account.rate_height) * params.orders_per_window
    level = max(0, account.rate_level - drained) + params.window_blocks
    if level > params.orders_per_window * params.window_blocks:
        return (
            f"rate limited: more than {params.orders_per_window} places and amends in "
            f"{params.window_blocks} blocks (the account's order-rate window)"
        )
    if count:  # the account record every tx of the owner writes anyway (its nonces): no new key
        view.put_record(key, account.with_rate(height, level))
    return None


def init_rate_state(view: StateView, params: RateLimitParams) -> None:
    """The genesis write of the order-rate window."""
    view.put(schema.RATE_LIMIT_PARAMS, params.encode())


def load_fee_params(state: StateReader) -> FeeParams:
    """The fee schedule (the defaults if genesis wrote none)."""
    raw = state.get(schema.FEE_PARAMS)
    return FeeParams() if raw is None else FeeParams.decode(raw)


def init_fee_state(view: StateView, params: FeeParams) -> None:
    """The genesis write of the schedule."""
    view.put(schema.FEE_PARAMS, params.encode())


def minimum_fee(state: StateReader, params: FeeParams, tx: Tx) -> int:
    """The chain's minimum fee of `tx`: the sum of its actions' prices, an oracle or vol vote of a
    validator with power counting 0."""
    actions: Sequence[Action] = tx.actions
    if any(type(action) in VOTE_TYPES for action in actions):
        entry = load_validator(state, tx.sender.raw)
        if entry is not None and entry.power > 0:  # a validator votes for free
            actions = [action for action in actions if type(action) not in VOTE_TYPES]
    return params.fee_of(actions)


def fee_error(state: StateReader, params: FeeParams, tx: Tx, account: Account) -> str | None:
    """Why `tx` cannot pay its fee from `account` (the sender's), or None."""
    minimum = minimum_fee(state, params, tx)
    if tx.fee < minimum:
        return f"insufficient fee: {tx.fee} is below the minimum {minimum} for these actions"
    if tx.fee > account.balance:
        return f"insufficient fee: balance {account.balance} cannot pay the fee {tx.fee}"
    return None


def pay_fee(view: StateView, tx: Tx) -> None:
    """Owe the tx's fee to the fee collector: its fee delta, which the tx's trading fees add to
    (`execution.exchange.fills.credit_fees`) and the block sweeps (`execution.block.sweep_fees`).
    The caller has debited the sender."""
    if tx.fee:
        view.put(schema.fee_delta_key(tx.sender.raw, tx.nonce), codec.encode(tx.fee))
