"""Quote accounts: the account record, the nonce rule of replay protection, balance moves, and the
total supply record that the conservation invariant checks against.

An account lives at `storage.schema.account_key(address)` as the canonical array
`[balance, nonces, rate_height, rate_level]`: `balance` in quote units (micro-USD, >= 0), `nonces`
the sorted (strictly increasing) list of the highest nonces the account has used, at most 100, and
its order-rate level as of block `rate_height` (`execution.fees.take_order_slot`; 0, 0 for an
account that never placed an order). An absent key is the empty account (balance 0, no nonces);
an account that becomes empty is deleted.

Nonce rule (Hyperliquid): a new nonce must be unused, larger than the smallest kept nonce once 100
are kept, and strictly within (block time - 2 days, block time + 1 day), all in milliseconds; block
time is nanoseconds and is converted by floor division. After use the 100 highest are kept.

Derived accounts (dYdX's numbered subaccounts, Hyperliquid's isolated margin): addresses derived
from an owner's that nobody holds a key for, each an ordinary account with its own balance,
positions, margin and liquidation. `subaccount_address(owner, n)`: n = 0 is the owner itself,
1..127 `sha256(b"derivd/subaccount" + owner + n as 1 byte)[:20]`; `isolated_address(owner, m)`:
`sha256(b"derivd/isolated" + owner + m as 4 bytes big-endian)[:20]`. Only the owner's txs act as
them (`execution.tx.UseSubaccount`, `UseIsolated`; the rules are `execution.actions`').
"""

from __future__ import annotations

from bisect import bisect_left, insort
from dataclasses import dataclass
from operator import lt
from typing import cast

from execution.state import StateReader, StateView, read_record
from primitives import codec
from primitives.codec import DecodeError, Value
from primitives.hashing import sha256
from primitives.keys import ADDRESS_SIZE, Address
from storage import schema

MAX_KEPT_NONCES = 100
MAX_BALANCE = 2**63 - 1
MS_PER_DAY = 24 * 60 * 60 * 1000
NONCE_PAST_WINDOW_MS = 2 * MS_PER_DAY
NONCE_FUTURE_WINDOW_MS = MS_PER_DAY
NS_PER_MS = 1_000_000
MAX_INT64 = 2**63 - 1
_INT = frozenset({int})
MAX_SUBACCOUNT = 127
"""Subaccounts are numbered 0 (the owner) to this"""
MAX_ISOLATED_MARKET_ID = 2**32 - 1
SUBACCOUNT_DOMAIN = b"derivd/subaccount"
ISOLATED_DOMAIN = b"derivd/isolated"


def subaccount_address(owner: Address, number: int) -> Address:
    """The address of `owner`'s subaccount `number` (0: `owner` itself); ValueError outside 0..127."""
    if not 0 <= number <= MAX_SUBACCOUNT:
        raise ValueError(f"subaccount number {number} is outside [0, {MAX_SUBACCOUNT}]")
    if number == 0:
        return owner
    return Address(sha256(SUBACCOUNT_DOMAIN + owner.raw + bytes((number,)))[:ADDRESS_SIZE])


def isolated_address(owner: Address, market_id: int) -> Address:
    """The address of `owner`'s isolated account of `market_id`; ValueError outside 4 bytes."""
    if not 0 <= market_id <= MAX_ISOLATED_MARKET_ID:
        raise ValueError(f"market id {market_id} is outside [0, {MAX_ISOLATED_MARKET_ID}]")
    return Address(sha256(ISOLATED_DOMAIN + owner.raw + market_id.to_bytes(4, "big"))[:ADDRESS_SIZE])


def subaccount_number(owner: Address, address: Address) -> int | None:
    """Which subaccount of `owner` `address` is (0..127), or None if it is none of them."""
    for number in range(MAX_SUBACCOUNT + 1):
        if subaccount_address(owner, number) == address:
            return number
    return None


@dataclass(frozen=True, slots=True)
class Account:
    """One account's quote balance and its recently used nonces (ascending)."""

    balance: int = 0
    nonces: tuple[int, ...] = ()
    rate_height: int = 0
    """the block height of `rate_level`"""
    rate_level: int = 0
    """the order-rate level (`execution.fees.take_order_slot`)"""

    @property
    def is_empty(self) -> bool:
        return self.balance == 0 and not self.nonces

    def encode(self) -> bytes:
        return codec.encode([self.balance, list(self.nonces), self.rate_height, self.rate_level])

    @classmethod
    def decode(cls, raw: bytes) -> Account:
        f = codec.field_list(codec.decode(raw), "account", 4)
        balance = codec.field_int(f[0], "account.balance", 0, MAX_BALANCE)
        items = codec.field_list(f[1], "account.nonces", max_len=MAX_KEPT_NONCES)
        nonces = _nonces(items)
        if not all(map(lt, nonces, nonces[1:])):  # strictly increasing, looped in C
            raise DecodeError("account.nonces: not strictly increasing")
        rate_height = codec.field_int(f[2], "account.rate_height", 0, MAX_INT64)
        rate_level = codec.field_int(f[3], "account.rate_level", 0, MAX_INT64)
        return cls(balance, nonces, rate_height, rate_level)

    def with_balance(self, balance: int) -> Account:
        if not 0 <= balance <= MAX_BALANCE:
            raise ValueError(f"balance {balance} is outside [0, {MAX_BALANCE}]")
        return Account(balance, self.nonces, self.rate_height, self.rate_level)

    def with_nonce(self, nonce: int) -> Account:
        """This account with `nonce` recorded, keeping the highest `MAX_KEPT_NONCES`."""
        nonces = list(self.nonces)
        insort(nonces, nonce)
        return Account(self.balance, tuple(nonces[-MAX_KEPT_NONCES:]), self.rate_height, self.rate_level)

    def with_rate(self, height: int, level: int) -> Account:
        """This account with its order-rate level `level` as of block `height`."""
        return Account(self.balance, self.nonces, height, level)


_EMPTY = Account()


def _nonces(items: list[Value]) -> tuple[int, ...]:
    """`items` as non-negative int64 nonces: `field_int` of each, checked in C when they are all
    plain ints (the common case; an account has up to 100 nonces)."""
    if set(map(type, items)) <= _INT:
        ints = cast("list[int]", items)
        if not ints or (min(ints) >= 0 and max(ints) <= MAX_INT64):
            return tuple(ints)
    return tuple(codec.field_int(n, f"account.nonces[{i}]") for i, n in enumerate(items))


def load_account(state: StateReader, address: Address) -> Account:
    """The account of `address` (decoded once per view that holds its bytes: `read_record`)."""
    account = read_record(state, schema.account_key(address.raw), Account.decode)
    return _EMPTY if account is None else account


def store_account(view: StateView, address: Address, account: Account) -> None:
    """Write `account` (encoded when its bytes are needed), or delete its key when it is empty."""
    key = schema.account_key(address.raw)
    if account.is_empty:
        view.delete(key)
    else:
        view.put_record(key, account)


def block_time_ms(block_time_ns: int) -> int:
    """Block time in milliseconds, rounded down."""
    return block_time_ns // NS_PER_MS


def nonce_error(account: Account, nonce: int, block_time_ns: int) -> str | None:
    """Why `nonce` may not be used by `account` at `block_time_ns`, or None if it may."""
    nonces = account.nonces
    at = bisect_left(nonces, nonce)  # they are sorted: no scan of up to 100
    if at < len(nonces) and nonces[at] == nonce:
        return f"nonce {nonce} was already used"
    if len(account.nonces) >= MAX_KEPT_NONCES and nonce <= account.nonces[0]:
        return (
            f"nonce {nonce} is not above the smallest of the {MAX_KEPT_NONCES} kept nonces "
            f"({account.nonces[0]})"
        )
    now = block_time_ms(block_time_ns)
    low, high = now - NONCE_PAST_WINDOW_MS, now + NONCE_FUTURE_WINDOW_MS
    if not low < nonce < high:
        return f"nonce {nonce} is outside the window ({low}, {high}) around block time {now} ms"
    return None


def use_nonce(view: StateView, address: Address, nonce: int) -> None:
    """Record `nonce` as used by `address` (the caller checked it with `nonce_error`)."""
    store_account(view, address, load_account(view, address).with_nonce(nonce))


class FundsError(Exception):
    """A debit larger than the balance."""


def move_quote(view: StateView, sender: Address, recipient: Address, amount: int) -> None:
    """Move `amount` from `sender` to `recipient`; FundsError if the sender's balance is short."""
    if sender == recipient:
        raise ValueError("a quote move needs two different accounts")
    source = load_account(view, sender)
    if source.balance < amount:
        raise FundsError(f"insufficient funds: balance {source.balance}, need {amount}")
    store_account(view, sender, source.with_balance(source.balance - amount))
    target = load_account(view, recipient)
    store_account(view, recipient, target.with_balance(target.balance + amount))


def load_supply(state: StateReader) -> int:
    """The total quote supply fixed at genesis (0 before genesis)."""
    raw = state.get(schema.APP_SUPPLY)
    return 0 if raw is None else codec.field_int(codec.decode(raw), "supply", 0, MAX_BALANCE)


def store_supply(view: StateView, total: int) -> None:
    view.put(schema.APP_SUPPLY, codec.encode(total))
