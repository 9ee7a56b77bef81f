"""The SDK's typed results. Human amounts are `Decimal` (USD, base units), beside the chain's
integers (`*_subticks`, `*_quantums`, quote quantums) where a trader may need them exact."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An event of a transaction or a block: its type and its attributes by key."""

    type: str
    attributes: Mapping[str, str] = field(default_factory=dict)

    def get(self, key: str, default: str = "") -> str:
        return self.attributes.get(key, default)


@dataclass(frozen=True, slots=True, kw_only=True)
class TxResult:
    """A transaction the chain executed: its hash (upper-case hex), height, code (0) and events."""

    hash: str
    height: int
    code: int
    log: str
    events: tuple[Event, ...]

    def placed_order_ids(self) -> list[int]:
        """The ids of the orders the transaction placed, in order."""
        return [int(e.get("order_id")) for e in self.events if e.type == "order_placed"]

    def fills(self) -> list[Event]:
        return [e for e in self.events if e.type == "order_filled"]

    def twap_id(self) -> int | None:
        """The id of the TWAP the transaction placed (None if it placed none)."""
        return next((int(e.get("twap_id")) for e in self.events if e.type == "twap_placed"), None)

    def withdrawal_id(self) -> int | None:
        """The id of the bridge withdrawal the transaction made (None if it made none)."""
        return next((int(e.get("id")) for e in self.events if e.type == "bridge_withdrawal"), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Twap:
    """A live TWAP (`/twaps/<address>`): sizes in base units, the next slice's height."""

    twap_id: int
    market: str
    side: str
    size: Decimal
    remaining: Decimal
    filled: Decimal
    slices_left: int
    interval_blocks: int
    next_height: int
    max_slippage_ppm: int
    reduce_only: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class Level:
    price: Decimal
    size: Decimal
    price_subticks: int
    size_quantums: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Book:
    """L2: levels best first. From a stream, `height` is the last block applied and `seq` the
    book's sequence number (-1 from a query)."""

    market: str
    bids: tuple[Level, ...]
    asks: tuple[Level, ...]
    height: int = 0
    seq: int = -1

    @property
    def best_bid(self) -> Level | None:
        return self.bids[0] if self.bids else None

    @property
    def best_ask(self) -> Level | None:
        return self.asks[0] if self.asks else None


@dataclass(frozen=True, slots=True, kw_only=True)
class Position:
    market: str
    size: Decimal
    """base units; negative: short"""
    size_quantums: int
    quote: Decimal
    """USD (quote balance of the position, funding settled)"""
    open_orders: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RestingOrder:
    order_id: int
    market: str
    side: str
    price: Decimal
    remaining: Decimal
    client_id: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    address: str
    balance: Decimal
    """USD"""
    account_value: Decimal
    free_collateral: Decimal
    positions: tuple[Position, ...]
    orders: tuple[RestingOrder, ...]

    def position(self, market: str) -> Position | None:
        return next((p for p in self.positions if p.market == market), None)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueuedAccount:
    """An account in the liquidation queue, figured at the oracle prices."""

    account: str
    account_value: Decimal
    """USD"""
    maintenance_requirement: Decimal
    """USD"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Liquidation:
    """One movement of a liquidated account's position: `kind` "liquidated" (closed through the
    book), "taken_over" (by the insurance fund) or "deleveraged" (against `counterparty`)."""

    height: int
    kind: str
    account: str
    counterparty: str
    """lower-case hex: the insurance fund or the deleveraging counterparty (empty: closed through the book)"""
    market: str
    size: Decimal
    """base units: the signed change of the account's position"""
    size_quantums: int
    price: Decimal
    """USD per base unit"""
    price_subticks: int
    quote: Decimal
    """USD the account's position received (negative: paid)"""
    fee: Decimal
    """USD: the liquidation fee (0 unless "liquidated")"""


@dataclass(frozen=True, slots=True, kw_only=True)
class Liquidations:
    """The `/liquidations` query: the queue in processing order and the last liquidations,
    newest block first."""

    queue: tuple[QueuedAccount, ...]
    recent: tuple[Liquidation, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Fill:
    """One fill of an order of the account followed (`AsyncClient.fills`)."""

    market: str
    price: Decimal
    size: Decimal
    side: str
    """the account's side in this fill"""
    maker: bool
    order_id: int
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DerivedAccount:
    """One of an owner's subaccounts (`number`; 0: the owner itself) or isolated accounts
    (`market`), from the `/subaccounts/<owner>` query."""

    address: str
    number: int | None
    """the subaccount number, None for an isolated account"""
    market: str | None
    """the isolated account's market, None for a subaccount"""
    balance: Decimal
    """USD"""
    account_value: Decimal
    """USD"""
    initial_requirement: Decimal
    """USD"""
    maintenance_requirement: Decimal
    """USD"""
    positions: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Subaccounts:
    """An owner's derived accounts in use: subaccounts by number, isolated accounts by market id."""

    owner: str
    subaccounts: tuple[DerivedAccount, ...]
    isolated: tuple[DerivedAccount, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeWithdrawal:
    """A withdrawal through the bridge (`/bridge/withdrawals/<id>`): `pending` until validators
    holding > 2/3 of the power signed it, then `signed` (claim it on the EVM chain: `derivd bridge
    claim`)."""

    id: int
    owner: str
    recipient: str
    """the EVM address, EIP-55"""
    amount: Decimal
    """USD"""
    amount_units: int
    """token units (micro-USD)"""
    status: str
    signers: tuple[str, ...]
    """the EVM addresses (EIP-55) of the validators' bridge keys that signed it so far"""
