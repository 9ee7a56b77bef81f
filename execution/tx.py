"""The transaction format: a signed envelope of one or more actions, its canonical bytes, its sign
bytes and its hash.

Wire form (canonical encoding, `primitives.codec`):

    tx       = [version=1, signer public key (32 bytes), nonce, fee, actions, signature (64 bytes)]
    action   = [kind, fields...]                  first element: the action kind
    transfer = [1, to address (20 bytes), amount]  amount in quote units (micro-USD, 6 decimals)
    place    = [2, market_id, side (0 buy, 1 sell), size, price, tif (0 GTC, 1 IOC, 2 FOK,
                3 POST_ONLY), flags (bit 0 reduce-only), client_id, good_til_block]
    cancel   = [3, market_id, by (0 order id, 1 client id), id]
    cancel_all = [4, market_id]                   market_id 0: every market
    amend    = [5, market_id, order_id, new_size, new_price]
    oracle_vote = [6, [[market_id, price], ...]]  a validator's prices in subticks
    liquidate = [7, account (20 bytes)]           see `execution.risk.liquidation`
    place_trigger = [8, market_id, side, size, trigger_price, limit_price (0: a market order once
                triggered), trigger_kind (0 stop-loss, 1 take-profit), flags (bit 0 reduce-only),
                client_id]                        see `execution.risk.triggers`
    vol_vote = [9, [[underlying_id, expiry_ns, vol_ppm], ...]]  a validator's implied vols, see
                `execution.oracle.volatility`
    place_twap = [10, market_id, side, size, slices, interval_blocks, max_slippage_ppm, flags]
                                                  see `execution.exchange.twap`
    cancel_twap = [11, market_id, twap_id]
    place_scale = [12, market_id, side, size, count, start_price, end_price, tif, flags,
                client_id_base]                   see `execution.exchange.scale`
    use_subaccount = [13, number]                 the following actions act as the signer's
                                                  subaccount `number` (0..127; 0: the signer)
    use_isolated = [14, market_id]                the following actions act as the signer's
                                                  isolated account of that market
                                                  (`execution.accounts`, `execution.actions`)
    bridge_deposit_vote = [15, [[evm_chain_id, tx_hash (32 bytes), log_index, depositor (20),
                recipient (20), amount], ...]]    a validator's attestations of EVM deposits
    withdraw = [16, recipient (20-byte EVM address), amount]  quote units out through the bridge
    bridge_sign = [17, [[target (0 withdrawal, 1 valset), id (32 bytes: a uint256, big-endian),
                signature (65 bytes)], ...]]      a validator's bridge-key signatures (a withdrawal
                                                  id is 224 bits: more than a codec integer holds)
    set_bridge_key = [18, evm address (20), proof (65 bytes)]  a validator's new bridge key
                                                  (see `execution.bridge`)

Order sizes are base quantums and prices subticks (`execution.markets`); the meaning of each field
(side, tif and flags values, tick, step...) is checked by execution (`execution.exchange`).

The nonce is an integer of milliseconds (Hyperliquid style, see `execution.accounts`). The fee is
what the sender pays, in quote units, for the tx whatever its outcome (`execution.fees`: at least
the chain's minimum for its actions). The signature is Ed25519 over
`sign_bytes(b"derivd/tx/v1", chain_id, sign_payload)` where
`sign_payload = encode([version, public key, nonce, fee, [action fields...]])`, so a tx signed for one
chain is a bad signature on any other. The tx hash is SHA-256 of the raw bytes.

`Tx.decode` checks structure only (types, sizes, field counts of known kinds); it keeps actions of
unknown kinds as `UnknownAction` so execution can answer UNKNOWN_ACTION, and leaves the rules of
meaning (1 to 64 actions, amount > 0, no transfer to self) to execution, which answers
INVALID_ACTION.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from primitives import codec
from primitives.batch_verify import SignedItem
from primitives.codec import DecodeError, Value
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, PUBLIC_KEY_SIZE, SIGNATURE_SIZE, Address, PrivateKey, PublicKey
from primitives.keys import sign_bytes as domain_sign_bytes

TX_VERSION = 1
TX_DOMAIN = b"derivd/tx/v1"
MAX_TX_BYTES = 64 * 1024
MAX_ACTIONS = 64
MAX_NONCE = 2**63 - 1
MAX_AMOUNT = 2**63 - 1
MAX_FEE = 2**63 - 1


class ActionKind(IntEnum):
    """The first field of every action."""

    TRANSFER = 1
    PLACE_ORDER = 2
    CANCEL_ORDER = 3
    CANCEL_ALL = 4
    AMEND_ORDER = 5
    ORACLE_VOTE = 6
    LIQUIDATE = 7
    PLACE_TRIGGER = 8
    VOL_VOTE = 9
    PLACE_TWAP = 10
    CANCEL_TWAP = 11
    PLACE_SCALE = 12
    USE_SUBACCOUNT = 13
    USE_ISOLATED = 14
    BRIDGE_DEPOSIT_VOTE = 15
    WITHDRAW = 16
    BRIDGE_SIGN = 17
    SET_BRIDGE_KEY = 18


@dataclass(frozen=True, slots=True)
class Transfer:
    """Move `amount` quote units (micro-USD) from the signer to `to`."""

    to: Address
    amount: int

    @property
    def kind(self) -> int:
        return ActionKind.TRANSFER

    def to_fields(self) -> Value:
        return [int(ActionKind.TRANSFER), self.to.raw, self.amount]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> Transfer:
        codec.field_list(fields, name, 3)
        to = codec.field_bytes(fields[1], f"{name}.to", ADDRESS_SIZE)
        amount = codec.field_int(fields[2], f"{name}.amount", 0, MAX_AMOUNT)
        return cls(Address(to), amount)


MAX_ORDER_INT = 2**63 - 1
MAX_CLIENT_ID = 2**64 - 1


def _plain_ints(fields: list[Value], count: int, client_id_at: int = -1) -> bool:
    """Whether `fields` is `count` fields after which every one but the first (the kind) is an
    exact int in [0, MAX_ORDER_INT] ([0, MAX_CLIENT_ID] at index `client_id_at`): exactly when the
    `field_list` and `field_int` checks of its `from_fields` would all pass (see
    `_decode_action_fast`)."""
    if type(fields) is not list or len(fields) != count:
        return False
    for i in range(1, count):
        value = fields[i]
        if type(value) is not int or not 0 <= value <= (
            MAX_CLIENT_ID if i == client_id_at else MAX_ORDER_INT
        ):
            return False
    return True


@dataclass(frozen=True, slots=True)
class PlaceOrder:
    """Place an order: `side` 0 buy / 1 sell, `size` base quantums, `price` subticks (the worst
    price of a market order), `tif` 0 GTC / 1 IOC / 2 FOK / 3 POST_ONLY, `flags` bit 0 reduce-only,
    `client_id` the sender's own id (0: none), `good_til_block` the last height the order may rest
    (0: no expiry)."""

    market_id: int
    side: int
    size: int
    price: int
    tif: int = 0
    flags: int = 0
    client_id: int = 0
    good_til_block: int = 0

    @property
    def kind(self) -> int:
        return ActionKind.PLACE_ORDER

    @property
    def reduce_only(self) -> bool:
        return bool(self.flags & 1)

    def to_fields(self) -> Value:
        return [
            int(ActionKind.PLACE_ORDER),
            self.market_id,
            self.side,
            self.size,
            self.price,
            self.tif,
            self.flags,
            self.client_id,
            self.good_til_block,
        ]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> PlaceOrder:
        codec.field_list(fields, name, 9)
        ints = [
            codec.field_int(fields[i], f"{name}.{field}", 0, MAX_CLIENT_ID if i == 7 else MAX_ORDER_INT)
            for i, field in enumerate(
                ("kind", "market_id", "side", "size", "price", "tif", "flags", "client_id", "good_til_block")
            )
            if i > 0
        ]
        return cls(*ints)


@dataclass(frozen=True, slots=True)
class CancelOrder:
    """Cancel one resting order of the sender: `by` 0 names it by order id, 1 by client id."""

    market_id: int
    by: int
    id: int

    @property
    def kind(self) -> int:
        return ActionKind.CANCEL_ORDER

    def to_fields(self) -> Value:
        return [int(ActionKind.CANCEL_ORDER), self.market_id, self.by, self.id]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> CancelOrder:
        codec.field_list(fields, name, 4)
        return cls(
            codec.field_int(fields[1], f"{name}.market_id", 0, MAX_ORDER_INT),
            codec.field_int(fields[2], f"{name}.by", 0, MAX_ORDER_INT),
            codec.field_int(fields[3], f"{name}.id", 0, MAX_CLIENT_ID),
        )


@dataclass(frozen=True, slots=True)
class CancelAll:
    """Cancel every resting order of the sender on `market_id` (0: on every market)."""

    market_id: int

    @property
    def kind(self) -> int:
        return ActionKind.CANCEL_ALL

    def to_fields(self) -> Value:
        return [int(ActionKind.CANCEL_ALL), self.market_id]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> CancelAll:
        codec.field_list(fields, name, 2)
        return cls(codec.field_int(fields[1], f"{name}.market_id", 0, MAX_ORDER_INT))


@dataclass(frozen=True, slots=True)
class AmendOrder:
    """Cancel-replace a resting order of the sender with a new size and price: a new order id and
    the back of the queue; side, time in force, flags, client id and good-til-block are kept."""

    market_id: int
    order_id: int
    new_size: int
    new_price: int

    @property
    def kind(self) -> int:
        return ActionKind.AMEND_ORDER

    def to_fields(self) -> Value:
        return [int(ActionKind.AMEND_ORDER), self.market_id, self.order_id, self.new_size, self.new_price]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> AmendOrder:
        codec.field_list(fields, name, 5)
        ints = [
            codec.field_int(fields[i], f"{name}.{field}", 0, MAX_ORDER_INT)
            for i, field in enumerate(("kind", "market_id", "order_id", "new_size", "new_price"))
            if i > 0
        ]
        return cls(*ints)


@dataclass(frozen=True, slots=True)
class Liquidate:
    """Liquidate `account` (permissionless; the rules and the sender's reward are
    `execution.risk.liquidation`'s)."""

    account: Address

    @property
    def kind(self) -> int:
        return ActionKind.LIQUIDATE

    def to_fields(self) -> Value:
        return [int(ActionKind.LIQUIDATE), self.account.raw]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> Liquidate:
        codec.field_list(fields, name, 2)
        return cls(Address(codec.field_bytes(fields[1], f"{name}.account", ADDRESS_SIZE)))


@dataclass(frozen=True, slots=True)
class PlaceTrigger:
    """Place a stop-loss (`trigger_kind` 0) or take-profit (1) order that rests outside the book
    until the oracle price reaches `trigger_price` (subticks), then executes as a market order
    (`limit_price` 0) or a GTC limit order at `limit_price`; `flags` bit 0 reduce-only;
    `client_id` the sender's own id (0: none). The rules are `execution.risk.triggers`'."""

    market_id: int
    side: int
    size: int
    trigger_price: int
    limit_price: int = 0
    trigger_kind: int = 0
    flags: int = 0
    client_id: int = 0

    @property
    def kind(self) -> int:
        return ActionKind.PLACE_TRIGGER

    @property
    def reduce_only(self) -> bool:
        return bool(self.flags & 1)

    def to_fields(self) -> Value:
        return [
            int(ActionKind.PLACE_TRIGGER),
            self.market_id,
            self.side,
            self.size,
            self.trigger_price,
            self.limit_price,
            self.trigger_kind,
            self.flags,
            self.client_id,
        ]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> PlaceTrigger:
        codec.field_list(fields, name, 9)
        names = ("kind", "market_id", "side", "size", "trigger_price", "limit_price", "trigger_kind", "flags",
                 "client_id")  # fmt: skip
        ints = [
            codec.field_int(fields[i], f"{name}.{field}", 0, MAX_CLIENT_ID if i == 8 else MAX_ORDER_INT)
            for i, field in enumerate(names)
            if i > 0
        ]
        return cls(*ints)


def _ints_from_fields(
    fields: list[Value], name: str, names: tuple[str, ...], client_id_at: int = -1
) -> list[int]:
    """The int fields after the kind of an action of `names` (the kind first), each in
    [0, MAX_ORDER_INT] ([0, MAX_CLIENT_ID] at index `client_id_at`); DecodeError names the field."""
    codec.field_list(fields, name, len(names))
    return [
        codec.field_int(
            fields[i], f"{name}.{field}", 0, MAX_CLIENT_ID if i == client_id_at else MAX_ORDER_INT
        )
        for i, field in enumerate(names)
        if i > 0
    ]


@dataclass(frozen=True, slots=True)
class PlaceTwap:
    """Execute `size` base quantums as `slices` IOC orders, one every `interval_blocks` blocks from
    the end of this block, each at the oracle price moved by at most `max_slippage_ppm` against the
    trader; `flags` bit 0 reduce-only. The rules are `execution.exchange.twap`'s."""

    market_id: int
    side: int
    size: int
    slices: int
    interval_blocks: int
    max_slippage_ppm: int
    flags: int = 0

    @property
    def kind(self) -> int:
        return ActionKind.PLACE_TWAP

    def to_fields(self) -> Value:
        return [
            int(ActionKind.PLACE_TWAP),
            self.market_id,
            self.side,
            self.size,
            self.slices,
            self.interval_blocks,
            self.max_slippage_ppm,
            self.flags,
        ]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> PlaceTwap:
        names = (
            "kind",
            "market_id",
            "side",
            "size",
            "slices",
            "interval_blocks",
            "max_slippage_ppm",
            "flags",
        )
        return cls(*_ints_from_fields(fields, name, names))


@dataclass(frozen=True, slots=True)
class CancelTwap:
    """Stop a live TWAP of the sender on `market_id` (`execution.exchange.twap`)."""

    market_id: int
    twap_id: int

    @property
    def kind(self) -> int:
        return ActionKind.CANCEL_TWAP

    def to_fields(self) -> Value:
        return [int(ActionKind.CANCEL_TWAP), self.market_id, self.twap_id]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> CancelTwap:
        return cls(*_ints_from_fields(fields, name, ("kind", "market_id", "twap_id")))


@dataclass(frozen=True, slots=True)
class PlaceScale:
    """Place `count` limit orders spread evenly from `start_price` to `end_price` (subticks) whose
    sizes sum to `size`; `tif` 0 GTC / 3 POST_ONLY; `flags` bit 0 reduce-only; order k gets client
    id `client_id_base + k` (base 0: none). The rules are `execution.exchange.scale`'s."""

    market_id: int
    side: int
    size: int
    count: int
    start_price: int
    end_price: int
    tif: int = 0
    flags: int = 0
    client_id_base: int = 0

    @property
    def kind(self) -> int:
        return ActionKind.PLACE_SCALE

    def to_fields(self) -> Value:
        return [
            int(ActionKind.PLACE_SCALE),
            self.market_id,
            self.side,
            self.size,
            self.count,
            self.start_price,
            self.end_price,
            self.tif,
            self.flags,
            self.client_id_base,
        ]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> PlaceScale:
        names = ("kind", "market_id", "side", "size", "count", "start_price", "end_price", "tif", "flags",
                 "client_id_base")  # fmt: skip
        return cls(*_ints_from_fields(fields, name, names, client_id_at=9))


@dataclass(frozen=True, slots=True)
class UseSubaccount:
    """The following actions of the tx act as the signer's subaccount `number` (0: the signer
    itself; `execution.accounts.subaccount_address`); the signer still pays and owns the nonce."""

    number: int

    @property
    def kind(self) -> int:
        return ActionKind.USE_SUBACCOUNT

    def to_fields(self) -> Value:
        return [int(ActionKind.USE_SUBACCOUNT), self.number]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> UseSubaccount:
        return cls(*_ints_from_fields(fields, name, ("kind", "number")))


@dataclass(frozen=True, slots=True)
class UseIsolated:
    """The following actions of the tx act as the signer's isolated account of `market_id`
    (`execution.accounts.isolated_address`), their orders on that market only."""

    market_id: int

    @property
    def kind(self) -> int:
        return ActionKind.USE_ISOLATED

    def to_fields(self) -> Value:
        return [int(ActionKind.USE_ISOLATED), self.market_id]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> UseIsolated:
        return cls(*_ints_from_fields(fields, name, ("kind", "market_id")))


SWITCH_TYPES = (UseSubaccount, UseIsolated)
"""The actions that switch who the following actions act as: free (`standard_fee`)."""


MAX_VOTE_PRICES = 256


@dataclass(frozen=True, slots=True)
class OracleVote:
    """A validator's price per market: `prices` is ((market_id, price in subticks), ...). Decoding
    checks the structure; the rules (strictly increasing ids, price > 0, known markets, signer is a
    validator) are execution's (`execution.oracle.votes.apply_oracle_vote`)."""

    prices: tuple[tuple[int, int], ...]

    @property
    def kind(self) -> int:
        return ActionKind.ORACLE_VOTE

    def to_fields(self) -> Value:
        return [int(ActionKind.ORACLE_VOTE), [[market_id, price] for market_id, price in self.prices]]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> OracleVote:
        codec.field_list(fields, name, 2)
        items = codec.field_list(fields[1], f"{name}.prices", max_len=MAX_VOTE_PRICES)
        prices: list[tuple[int, int]] = []
        for i, item in enumerate(items):
            pair = codec.field_list(item, f"{name}.prices[{i}]", 2)
            market_id = codec.field_int(pair[0], f"{name}.prices[{i}].market_id", 0, 2**32 - 1)
            price = codec.field_int(pair[1], f"{name}.prices[{i}].price", 0, MAX_AMOUNT)
            prices.append((market_id, price))
        return cls(tuple(prices))


MAX_VOTE_VOLS = 256


@dataclass(frozen=True, slots=True)
class VolVote:
    """A validator's implied volatility per option expiry: `vols` is ((underlying market id, expiry
    ns, vol ppm), ...). Decoding checks the structure; the rules (strictly increasing pairs, vol
    within the oracle's range, listed pairs, signer is a validator) are execution's
    (`execution.oracle.volatility.apply_vol_vote`)."""

    vols: tuple[tuple[int, int, int], ...]

    @property
    def kind(self) -> int:
        return ActionKind.VOL_VOTE

    def to_fields(self) -> Value:
        return [int(ActionKind.VOL_VOTE), [[u, expiry, vol] for u, expiry, vol in self.vols]]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> VolVote:
        codec.field_list(fields, name, 2)
        items = codec.field_list(fields[1], f"{name}.vols", max_len=MAX_VOTE_VOLS)
        vols: list[tuple[int, int, int]] = []
        for i, item in enumerate(items):
            entry = codec.field_list(item, f"{name}.vols[{i}]", 3)
            underlying = codec.field_int(entry[0], f"{name}.vols[{i}].underlying", 0, 2**32 - 1)
            expiry = codec.field_int(entry[1], f"{name}.vols[{i}].expiry", 0, MAX_AMOUNT)
            vol = codec.field_int(entry[2], f"{name}.vols[{i}].vol_ppm", 0, MAX_AMOUNT)
            vols.append((underlying, expiry, vol))
        return cls(tuple(vols))


MAX_BRIDGE_ENTRIES = 64
BRIDGE_HASH_SIZE = 32
EVM_ADDRESS_SIZE = 20
EVM_SIGNATURE_SIZE = 65
MAX_UINT256 = 2**256 - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class DepositClaim:
    """One deposit event on the EVM chain as a validator saw it (`execution.bridge.deposits`)."""

    evm_chain_id: int
    tx_hash: bytes
    log_index: int
    depositor: bytes
    """the EVM address that deposited (20 bytes)"""
    recipient: Address
    amount: int

    def to_fields(self) -> Value:
        return [
            self.evm_chain_id,
            self.tx_hash,
            self.log_index,
            self.depositor,
            self.recipient.raw,
            self.amount,
        ]

    @classmethod
    def from_fields(cls, value: Value, name: str) -> DepositClaim:
        f = codec.field_list(value, name, 6)
        return cls(
            evm_chain_id=codec.field_int(f[0], f"{name}.evm_chain_id", 0, MAX_UINT256),
            tx_hash=codec.field_bytes(f[1], f"{name}.tx_hash", BRIDGE_HASH_SIZE),
            log_index=codec.field_int(f[2], f"{name}.log_index", 0, MAX_UINT256),
            depositor=codec.field_bytes(f[3], f"{name}.depositor", EVM_ADDRESS_SIZE),
            recipient=Address(codec.field_bytes(f[4], f"{name}.recipient", ADDRESS_SIZE)),
            amount=codec.field_int(f[5], f"{name}.amount", 0, MAX_AMOUNT),
        )


@dataclass(frozen=True, slots=True)
class BridgeDepositVote:
    """A validator's attestations of deposits on the EVM chain (1 to `MAX_BRIDGE_ENTRIES`);
    the rules are execution's (`execution.bridge.deposits`)."""

    deposits: tuple[DepositClaim, ...]

    @property
    def kind(self) -> int:
        return ActionKind.BRIDGE_DEPOSIT_VOTE

    def to_fields(self) -> Value:
        return [int(ActionKind.BRIDGE_DEPOSIT_VOTE), [claim.to_fields() for claim in self.deposits]]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> BridgeDepositVote:
        codec.field_list(fields, name, 2)
        items = codec.field_list(fields[1], f"{name}.deposits", max_len=MAX_BRIDGE_ENTRIES)
        return cls(
            tuple(DepositClaim.from_fields(item, f"{name}.deposits[{i}]") for i, item in enumerate(items))
        )


@dataclass(frozen=True, slots=True)
class Withdraw:
    """Send `amount` quote units of the acting account out through the bridge to `recipient`, a
    20-byte EVM address (`execution.bridge.withdrawals`)."""

    recipient: bytes
    amount: int

    @property
    def kind(self) -> int:
        return ActionKind.WITHDRAW

    def to_fields(self) -> Value:
        return [int(ActionKind.WITHDRAW), self.recipient, self.amount]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> Withdraw:
        codec.field_list(fields, name, 3)
        recipient = codec.field_bytes(fields[1], f"{name}.recipient", EVM_ADDRESS_SIZE)
        return cls(recipient, codec.field_int(fields[2], f"{name}.amount", 0, MAX_AMOUNT))


class SignTarget(IntEnum):
    """What a bridge signature signs."""

    WITHDRAWAL = 0
    VALSET = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class BridgeSignature:
    """A validator's bridge-key signature of a withdrawal (by id) or a validator-set update (by
    nonce). On the wire `id` is a 32-byte big-endian word (a withdrawal id has 224 bits)."""

    target: SignTarget
    id: int
    signature: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.id <= MAX_UINT256:
            raise ValueError(f"a bridge signature's id is a uint256, got {self.id}")

    def to_fields(self) -> Value:
        return [int(self.target), self.id.to_bytes(BRIDGE_HASH_SIZE, "big"), self.signature]

    @classmethod
    def from_fields(cls, value: Value, name: str) -> BridgeSignature:
        f = codec.field_list(value, name, 3)
        return cls(
            target=SignTarget(codec.field_int(f[0], f"{name}.target", 0, len(SignTarget) - 1)),
            id=int.from_bytes(codec.field_bytes(f[1], f"{name}.id", BRIDGE_HASH_SIZE), "big"),
            signature=codec.field_bytes(f[2], f"{name}.signature", EVM_SIGNATURE_SIZE),
        )


@dataclass(frozen=True, slots=True)
class BridgeSign:
    """A validator's bridge-key signatures (1 to `MAX_BRIDGE_ENTRIES`; `execution.bridge`)."""

    signatures: tuple[BridgeSignature, ...]

    @property
    def kind(self) -> int:
        return ActionKind.BRIDGE_SIGN

    def to_fields(self) -> Value:
        return [int(ActionKind.BRIDGE_SIGN), [entry.to_fields() for entry in self.signatures]]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> BridgeSign:
        codec.field_list(fields, name, 2)
        items = codec.field_list(fields[1], f"{name}.signatures", max_len=MAX_BRIDGE_ENTRIES)
        return cls(
            tuple(
                BridgeSignature.from_fields(item, f"{name}.signatures[{i}]") for i, item in enumerate(items)
            )
        )


@dataclass(frozen=True, slots=True)
class SetBridgeKey:
    """A validator's new bridge key: its EVM address and the key's signature proving possession
    (`execution.bridge`)."""

    evm_address: bytes
    proof: bytes

    @property
    def kind(self) -> int:
        return ActionKind.SET_BRIDGE_KEY

    def to_fields(self) -> Value:
        return [int(ActionKind.SET_BRIDGE_KEY), self.evm_address, self.proof]

    @classmethod
    def from_fields(cls, fields: list[Value], name: str) -> SetBridgeKey:
        codec.field_list(fields, name, 3)
        evm_address = codec.field_bytes(fields[1], f"{name}.evm_address", EVM_ADDRESS_SIZE)
        return cls(evm_address, codec.field_bytes(fields[2], f"{name}.proof", EVM_SIGNATURE_SIZE))


VOTE_TYPES = (OracleVote, VolVote, BridgeDepositVote, BridgeSign, SetBridgeKey)
"""The validators' votes (oracle, vol, bridge attestations and signatures, bridge key): free for a
validator with power (`execution.fees`, `standard_fee`)."""


@dataclass(frozen=True, slots=True)
class UnknownAction:
    """An action of a kind this version does not know, kept as its canonical bytes."""

    kind: int
    encoded: bytes

    def to_fields(self) -> Value:
        return codec.decode(self.encoded)


Action = (
    Transfer
    | PlaceOrder
    | CancelOrder
    | CancelAll
    | AmendOrder
    | OracleVote
    | Liquidate
    | PlaceTrigger
    | VolVote
    | PlaceTwap
    | CancelTwap
    | PlaceScale
    | UseSubaccount
    | UseIsolated
    | BridgeDepositVote
    | Withdraw
    | BridgeSign
    | SetBridgeKey
    | UnknownAction
)


_PLAIN_ACTIONS: dict[
    int, tuple[type[PlaceOrder | CancelOrder | CancelAll | AmendOrder | PlaceTrigger], int, int]
] = {
    ActionKind.PLACE_ORDER: (PlaceOrder, 9, 7),
    ActionKind.CANCEL_ORDER: (CancelOrder, 4, 3),
    ActionKind.CANCEL_ALL: (CancelAll, 2, -1),
    ActionKind.AMEND_ORDER: (AmendOrder, 5, -1),
    ActionKind.PLACE_TRIGGER: (PlaceTrigger, 9, 8),
}
"""kind -> (class, field count with the kind, index of the field in [0, MAX_CLIENT_ID] or -1) of
the actions made of ints only"""


def _decode_action_fast(value: Value) -> Action | None:
    """The hot path of decoding: an action of `_PLAIN_ACTIONS` whose fields all pass their checks
    (`_plain_ints`), built without formatting a field name for each check; None for anything
    else, which `decode_action` then decodes or refuses with the offending field's name."""
    if type(value) is not list or not value or type(value[0]) is not int:
        return None
    shape = _PLAIN_ACTIONS.get(value[0])
    if shape is None or not _plain_ints(value, shape[1], shape[2]):
        return None
    return shape[0](*value[1:])  # type: ignore[arg-type]


def decode_action(value: Value, name: str) -> Action:
    """One action from its decoded array; DecodeError names the field."""
    fast = _decode_action_fast(value)
    if fast is not None:
        return fast
    fields = codec.field_list(value, name)
    if not fields:
        raise DecodeError(f"{name}: expected at least the action kind")
    kind = codec.field_int(fields[0], f"{name}.kind")
    if kind == ActionKind.TRANSFER:
        return Transfer.from_fields(fields, name)
    if kind == ActionKind.PLACE_ORDER:
        return PlaceOrder.from_fields(fields, name)
    if kind == ActionKind.CANCEL_ORDER:
        return CancelOrder.from_fields(fields, name)
    if kind == ActionKind.CANCEL_ALL:
        return CancelAll.from_fields(fields, name)
    if kind == ActionKind.AMEND_ORDER:
        return AmendOrder.from_fields(fields, name)
    if kind == ActionKind.ORACLE_VOTE:
        return OracleVote.from_fields(fields, name)
    if kind == ActionKind.LIQUIDATE:
        return Liquidate.from_fields(fields, name)
    if kind == ActionKind.PLACE_TRIGGER:
        return PlaceTrigger.from_fields(fields, name)
    if kind == ActionKind.VOL_VOTE:
        return VolVote.from_fields(fields, name)
    if kind == ActionKind.PLACE_TWAP:
        return PlaceTwap.from_fields(fields, name)
    if kind == ActionKind.CANCEL_TWAP:
        return CancelTwap.from_fields(fields, name)
    if kind == ActionKind.PLACE_SCALE:
        return PlaceScale.from_fields(fields, name)
    if kind == ActionKind.USE_SUBACCOUNT:
        return UseSubaccount.from_fields(fields, name)
    if kind == ActionKind.USE_ISOLATED:
        return UseIsolated.from_fields(fields, name)
    if kind == ActionKind.BRIDGE_DEPOSIT_VOTE:
        return BridgeDepositVote.from_fields(fields, name)
    if kind == ActionKind.WITHDRAW:
        return Withdraw.from_fields(fields, name)
    if kind == ActionKind.BRIDGE_SIGN:
        return BridgeSign.from_fields(fields, name)
    if kind == ActionKind.SET_BRIDGE_KEY:
        return SetBridgeKey.from_fields(fields, name)
    return UnknownAction(kind, codec.encode(fields))


@dataclass(frozen=True, slots=True)
class Tx:
    """A signed transaction envelope."""

    signer: PublicKey
    nonce: int
    actions: tuple[Action, ...]
    signature: bytes
    fee: int = 0
    """quote units the sender pays for the tx (`execution.fees`)"""
    version: int = TX_VERSION
    _payload: bytes | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    """`sign_payload()`, when `decode` cut it out of the raw bytes (else computed on demand)"""
    _sender: Address | None = dataclasses.field(default=None, init=False, repr=False, compare=False)
    """`sender`, once computed (a hash of the public key; a tx's handling asks for it often)"""

    @property
    def sender(self) -> Address:
        """The account that signs, pays and whose nonce is used."""
        sender = self._sender
        if sender is None:
            sender = self.signer.address
            object.__setattr__(self, "_sender", sender)
        return sender

    def sign_payload(self) -> bytes:
        """The canonical bytes of everything but the signature."""
        if self._payload is not None:
            return self._payload
        return codec.encode(
            [
                self.version,
                self.signer.raw,
                self.nonce,
                self.fee,
                [action.to_fields() for action in self.actions],
            ]
        )

    def sign_bytes(self, chain_id: str) -> bytes:
        """The message the signature is over: domain tag, chain id and payload."""
        return domain_sign_bytes(TX_DOMAIN, chain_id, self.sign_payload())

    def signed_item(self, chain_id: str) -> SignedItem:
        """(public key, message, signature) for the batch verifier."""
        return (self.signer.raw, self.sign_bytes(chain_id), self.signature)

    def to_fields(self) -> Value:
        return [
            self.version,
            self.signer.raw,
            self.nonce,
            self.fee,
            [action.to_fields() for action in self.actions],
            self.signature,
        ]

    def encode(self) -> bytes:
        return codec.encode(self.to_fields())

    @classmethod
    def decode(cls, raw: bytes) -> Tx:
        """Parse canonical tx bytes; DecodeError (naming the field) on anything else."""
        if isinstance(raw, bytes) and len(raw) > MAX_TX_BYTES:
            raise DecodeError(f"tx: {len(raw)} bytes exceed the limit of {MAX_TX_BYTES}")
        tx = cls.from_fields(codec.decode(raw, max_size=MAX_TX_BYTES))
        # The sign payload is the tx's own encoding without its last element: canonical `raw` is
        # 0x96 (an array of 6), the five fields, then the signature as c4 40 <64 bytes>; the
        # payload, encode([version, signer, nonce, fee, actions]), is 0x95 (an array of 5) and the
        # same bytes of the five fields (each re-encodes to what was read: decode checked that).
        # The verifier's cache lookup of every executed tx then encodes no action again.
        if raw[0] == 0x96 and raw[-66:-64] == b"\xc4\x40":
            object.__setattr__(tx, "_payload", b"\x95" + raw[1:-66])
        return tx

    @classmethod
    def from_fields(cls, value: Value) -> Tx:
        f = codec.field_list(value, "tx", 6)
        version = codec.field_int(f[0], "tx.version")
        if version != TX_VERSION:
            raise DecodeError(f"tx.version: unsupported version {version}, expected {TX_VERSION}")
        signer = PublicKey(codec.field_bytes(f[1], "tx.signer", PUBLIC_KEY_SIZE))
        nonce = codec.field_int(f[2], "tx.nonce", 0, MAX_NONCE)
        fee = codec.field_int(f[3], "tx.fee", 0, MAX_FEE)
        items = codec.field_list(f[4], "tx.actions")
        actions = tuple(
            _decode_action_fast(item) or decode_action(item, f"tx.actions[{i}]")  # the name only if needed
            for i, item in enumerate(items)
        )
        signature = codec.field_bytes(f[5], "tx.signature", SIGNATURE_SIZE)
        return cls(signer, nonce, actions, signature, fee, version)

    @classmethod
    def create(
        cls, private_key: PrivateKey, chain_id: str, nonce: int, actions: tuple[Action, ...], *, fee: int
    ) -> Tx:
        """A tx signed by `private_key` for `chain_id` (no rule of meaning is checked)."""
        unsigned = cls(private_key.public_key, nonce, actions, b"\x00" * SIGNATURE_SIZE, fee)
        signature = private_key.sign(unsigned.sign_bytes(chain_id))
        return cls(private_key.public_key, nonce, actions, signature, fee)


STANDARD_FEES: dict[int, int] = {
    ActionKind.TRANSFER: 100,
    ActionKind.PLACE_ORDER: 100,
    ActionKind.CANCEL_ORDER: 10,
    ActionKind.CANCEL_ALL: 10,
    ActionKind.AMEND_ORDER: 100,
    ActionKind.ORACLE_VOTE: 100,
    ActionKind.LIQUIDATE: 100,
    ActionKind.PLACE_TRIGGER: 100,
    ActionKind.VOL_VOTE: 100,
    ActionKind.PLACE_TWAP: 100,
    ActionKind.CANCEL_TWAP: 10,
    ActionKind.PLACE_SCALE: 100,
    ActionKind.USE_SUBACCOUNT: 0,
    ActionKind.USE_ISOLATED: 0,
    ActionKind.BRIDGE_DEPOSIT_VOTE: 100,
    ActionKind.WITHDRAW: 100,
    ActionKind.BRIDGE_SIGN: 100,
    ActionKind.SET_BRIDGE_KEY: 100,
}
"""The fee of each action kind, in quote units, under the default schedule (`execution.fees.FeeParams`
takes its defaults from here): what clients pay when not told the chain's schedule, per unit
(`fee_units`). An action of a kind not listed costs as a placement. The switches cost 0, but a tx of
switches only pays one placement (`switches_only`): no tx but a validator's vote is free."""


def fee_units(action: Action) -> int:
    """How many times an action pays its kind's price: a scale order its count of placements (at
    least 1), any other action once."""
    return max(action.count, 1) if isinstance(action, PlaceScale) else 1


def switches_only(actions: Sequence[Action]) -> bool:
    """Whether `actions` are one or more switches (`SWITCH_TYPES`) and nothing else: such a tx
    pays one placement, as it would else be free."""
    return bool(actions) and all(isinstance(action, SWITCH_TYPES) for action in actions)


def standard_fee(actions: Sequence[Action]) -> int:
    """The fee of `actions` under the default schedule (`STANDARD_FEES`), oracle and vol votes
    counted 0: validators send them, and a validator's vote is free."""
    place = STANDARD_FEES[ActionKind.PLACE_ORDER]
    if switches_only(actions):
        return place
    return sum(
        0 if isinstance(action, VOTE_TYPES) else STANDARD_FEES.get(action.kind, place) * fee_units(action)
        for action in actions
    )


def build_tx(
    private_key: PrivateKey, chain_id: str, nonce: int, actions: Sequence[Action], *, fee: int | None = None
) -> bytes:
    """The raw bytes of a signed tx, for clients (CLI, load generator, tests), paying `fee` (None:
    `standard_fee(actions)`, the minimum of a chain with the default schedule).

    Only the wire limits are enforced here (ValueError): the size and the integer ranges. The rules
    of meaning (1 to 64 actions, amount > 0, ...) are the application's to answer.
    """
    if not 0 <= nonce <= MAX_NONCE:
        raise ValueError(f"nonce {nonce} is outside [0, {MAX_NONCE}]")
    if fee is None:
        fee = standard_fee(actions)
    if not 0 <= fee <= MAX_FEE:
        raise ValueError(f"fee {fee} is outside [0, {MAX_FEE}]")
    for action in actions:
        if isinstance(action, Transfer) and not 0 <= action.amount <= MAX_AMOUNT:
            raise ValueError(f"transfer amount {action.amount} is outside [0, {MAX_AMOUNT}]")
        if isinstance(
            action,
            PlaceOrder
            | CancelOrder
            | CancelAll
            | AmendOrder
            | PlaceTrigger
            | PlaceTwap
            | CancelTwap
            | PlaceScale
            | UseSubaccount
            | UseIsolated,
        ):
            try:
                decode_action(action.to_fields(), "action")
            except DecodeError as exc:
                raise ValueError(str(exc)) from exc
    raw = Tx.create(private_key, chain_id, nonce, tuple(actions), fee=fee).encode()
    if len(raw) > MAX_TX_BYTES:
        raise ValueError(f"tx of {len(raw)} bytes exceeds the limit of {MAX_TX_BYTES}")
    return raw


def tx_hash(raw: bytes) -> bytes:
    """The tx hash: SHA-256 of its raw bytes (shown as upper-case hex in RPC)."""
    return sha256(raw)
