"""What the blocking and the async clients share, without I/O: nonces, human amounts to the
chain's units, actions, the fee schedule, the parsing of results, and a book kept from its
stream.

Subaccounts and isolated margin (`execution.accounts`): `subaccount_address`/`isolated_address`
derive an owner's accounts; `use_subaccount`/`use_isolated` are the switches a tx puts before the
actions that act as them, and `acting_as` puts one before a list of actions (what the clients'
`subaccount=`/`isolated=` options do); collateral moves by plain transfers to derived addresses."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Mapping, Sequence
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from execution import accounts
from execution.bridge.evm import format_evm_address, parse_evm_address
from execution.fees import FeeParams
from execution.markets import (
    MARKET_FIELDS,
    Market,
    OptionTerms,
    human_to_price,
    human_to_quote,
    human_to_size,
    price_to_human,
    quote_to_human,
    size_to_human,
)
from execution.tx import (
    Action,
    AmendOrder,
    CancelAll,
    CancelOrder,
    CancelTwap,
    PlaceOrder,
    PlaceScale,
    PlaceTrigger,
    PlaceTwap,
    Transfer,
    UseIsolated,
    UseSubaccount,
    Withdraw,
)
from node.sdk.errors import InputError, RPCError, TxError
from node.sdk.types import (
    Account,
    Book,
    BridgeWithdrawal,
    DerivedAccount,
    Event,
    Fill,
    Level,
    Liquidation,
    Liquidations,
    Position,
    QueuedAccount,
    RestingOrder,
    Subaccounts,
    Twap,
    TxResult,
)
from primitives.keys import Address

SIDES = {"buy": 0, "sell": 1}
TIME_IN_FORCE = {"gtc": 0, "ioc": 1, "fok": 2, "post-only": 3}
REDUCE_ONLY = 1
CANCEL_BY_ORDER_ID, CANCEL_BY_CLIENT_ID = 0, 1
STOP_LOSS, TAKE_PROFIT = 0, 1

Amount = str | int | Decimal
"""a human amount: "0.5", Decimal("65000.5"), 2"""


class Nonces:
    """Nonces for one key: the time in ms, or one more than the last if that is not later (the
    chain keeps a window of recent nonces per account, so txs may be in flight together)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1_000_000, self._last + 1)
            return self._last


def query_value(path: str, response: Mapping[str, Any]) -> Any:
    """The JSON value of an `abci_query` response to `path` (None: empty); RPCError on a
    non-zero code."""
    if response["code"] != 0:
        message = f"query {path}: {response['log']} (code {response['code']})"
        raise RPCError(
            {"code": response["code"], "message": "query failed", "data": response["log"]}, message
        )
    raw = base64.b64decode(response["value"] or "")
    return json.loads(raw) if raw else None


def fee_params(value: Any) -> FeeParams:
    """The chain's fee schedule from the `/fees` query's value; RPCError if it is not one."""
    try:
        return FeeParams.from_query(value)
    except (ValueError, TypeError) as exc:
        message = f"query /fees: not a fee schedule: {exc}"
        raise RPCError({"code": -32603, "message": "not a fee schedule", "data": str(exc)}, message) from None


def market_from_query(item: Mapping[str, Any]) -> Market:
    """A `Market` from one item of the `/markets` query (integers as strings; an option series'
    terms from its `option` object)."""
    option = item.get("option")
    terms = (
        None
        if option is None
        else OptionTerms(
            underlying_id=int(option["underlying"]),
            expiry_ns=int(option["expiry_ns"]),
            strike=int(option["strike"]),
            call=option["type"] == "call",
        )
    )
    values: dict[str, Any] = {name: int(item[name]) for name in MARKET_FIELDS[2:]}
    return Market(market_id=int(item["id"]), ticker=str(item["ticker"]), option=terms, **values)


def market_named(markets: Mapping[str, Market], ticker: str) -> Market:
    market = markets.get(ticker)
    if market is None:
        raise InputError(f"unknown market {ticker!r} (the chain has {', '.join(sorted(markets)) or 'none'})")
    return market


def _units(what: str, convert: Any, *args: Any) -> int:
    try:
        value = int(convert(*args))
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None
    if value <= 0:
        raise InputError(f"{what}: must be positive, got {args[-1]!r}")
    return value


def size_units(market: Market, size: Amount) -> int:
    """Base quantums of `size` base units; InputError if not a positive whole quantum."""
    return _units("size", human_to_size, market, str(size))


def price_units(market: Market, price: Amount) -> int:
    """Subticks of `price` USD per base unit; InputError if not a positive whole subtick."""
    return _units("price", human_to_price, market, str(price))


def quote_units(amount: Amount) -> int:
    """Quote quantums (micro-USD) of `amount` USD."""
    return _units("amount", human_to_quote, str(amount))


def on_tick(market: Market, price: Decimal, *, up: bool) -> Decimal:
    """`price` (USD) moved to the market's tick grid, up or down (a quote's price must be a
    whole number of ticks)."""
    tick = Decimal(price_to_human(market, market.subticks_per_tick))
    ticks = (price / tick).to_integral_value(ROUND_CEILING if up else ROUND_FLOOR)
    return max(ticks, Decimal(1)) * tick


def oracle_item(items: Any, market: str) -> Mapping[str, Any]:
    """The entry of `market` in the `/oracle` query's value."""
    for item in items or ():
        if item["market"] == market:
            found: Mapping[str, Any] = item
            return found
    raise InputError(f"unknown market {market!r}")


def oracle_price(items: Any, market: str) -> Decimal:
    """The price (USD) of `market` in the `/oracle` query's value."""
    return Decimal(oracle_item(items, market)["price_human"])


def side_code(side: str) -> int:
    if side not in SIDES:
        raise InputError(f"side: 'buy' or 'sell', got {side!r}")
    return SIDES[side]


def place_action(
    market: Market,
    side: str,
    size: Amount,
    price: Amount,
    *,
    tif: str = "gtc",
    client_id: int = 0,
    reduce_only: bool = False,
    good_til_block: int = 0,
) -> PlaceOrder:
    if tif not in TIME_IN_FORCE:
        raise InputError(f"tif: one of {', '.join(TIME_IN_FORCE)}, got {tif!r}")
    return PlaceOrder(
        market.market_id,
        side_code(side),
        size_units(market, size),
        price_units(market, price),
        TIME_IN_FORCE[tif],
        REDUCE_ONLY if reduce_only else 0,
        client_id,
        good_til_block,
    )


def slipped_price(market: Market, oracle_subticks: int, side: str, slippage: Decimal) -> int:
    """Subticks of the oracle price moved by `slippage` (a fraction in [0, 1)) against a trader on
    `side`, rounded outward to the tick (at least one tick): a market order's worst price."""
    if not 0 <= slippage < 1:
        raise InputError(f"slippage: must be in [0, 1), got {slippage}")
    buy = side_code(side) == SIDES["buy"]
    ticks = Decimal(oracle_subticks) * (1 + slippage if buy else 1 - slippage) / market.subticks_per_tick
    rounded = ticks.to_integral_value(ROUND_CEILING if buy else ROUND_FLOOR)
    return max(int(rounded), 1) * market.subticks_per_tick


def market_order_action(
    market: Market,
    side: str,
    size: Amount,
    worst_subticks: int,
    *,
    client_id: int = 0,
    reduce_only: bool = False,
) -> PlaceOrder:
    """An immediate-or-cancel order at the worst price `worst_subticks` (a market order)."""
    return PlaceOrder(
        market.market_id,
        side_code(side),
        size_units(market, size),
        worst_subticks,
        TIME_IN_FORCE["ioc"],
        REDUCE_ONLY if reduce_only else 0,
        client_id,
        0,
    )


def stop_action(
    market: Market,
    side: str,
    size: Amount,
    trigger_price: Amount,
    *,
    limit_price: Amount | None = None,
    take_profit: bool = False,
    client_id: int = 0,
    reduce_only: bool = False,
) -> PlaceTrigger:
    """A stop-loss (or take-profit) that rests outside the book until the oracle price reaches
    `trigger_price`, then runs as a market order (or a limit order at `limit_price`)."""
    return PlaceTrigger(
        market.market_id,
        side_code(side),
        size_units(market, size),
        price_units(market, trigger_price),
        0 if limit_price is None else price_units(market, limit_price),
        TAKE_PROFIT if take_profit else STOP_LOSS,
        REDUCE_ONLY if reduce_only else 0,
        client_id,
    )


def slippage_ppm(slippage: Amount) -> int:
    """A fraction ("0.01": 1%) as exact parts per million; InputError if finer or not in (0, 1)."""
    try:
        ppm = Decimal(slippage) * 1_000_000
    except ArithmeticError:
        raise InputError(f"slippage: a decimal fraction, got {slippage!r}") from None
    if ppm != ppm.to_integral_value() or not 0 < ppm < 1_000_000:
        raise InputError(f"slippage: a fraction in (0, 1) in steps of 0.000001, got {slippage}")
    return int(ppm)


def twap_action(
    market: Market,
    side: str,
    size: Amount,
    *,
    slices: int,
    interval_blocks: int,
    max_slippage: Amount,
    reduce_only: bool = False,
) -> PlaceTwap:
    """A TWAP: `size` in `slices` IOC orders, one every `interval_blocks` blocks, each at the oracle
    price moved by at most `max_slippage` (a fraction) against the trader."""
    return PlaceTwap(
        market.market_id,
        side_code(side),
        size_units(market, size),
        slices,
        interval_blocks,
        slippage_ppm(max_slippage),
        REDUCE_ONLY if reduce_only else 0,
    )


def cancel_twap_action(market: Market, twap_id: int) -> CancelTwap:
    return CancelTwap(market.market_id, twap_id)


def scale_action(
    market: Market,
    side: str,
    size: Amount,
    *,
    count: int,
    start_price: Amount,
    end_price: Amount,
    tif: str = "gtc",
    reduce_only: bool = False,
    client_id_base: int = 0,
) -> PlaceScale:
    """A scale order: `count` limit orders from `start_price` to `end_price` whose sizes sum to
    `size`; `tif` "gtc" or "post-only"; order k gets client id `client_id_base + k` (0: none)."""
    if tif not in ("gtc", "post-only"):
        raise InputError(f"tif: gtc or post-only, got {tif!r}")
    return PlaceScale(
        market.market_id,
        side_code(side),
        size_units(market, size),
        count,
        price_units(market, start_price),
        price_units(market, end_price),
        TIME_IN_FORCE[tif],
        REDUCE_ONLY if reduce_only else 0,
        client_id_base,
    )


def twaps(value: Mapping[str, Any], markets: Mapping[str, Market]) -> list[Twap]:
    """The live TWAPs of the `/twaps/<address>` query."""
    out = []
    for item in value.get("twaps") or ():
        market = markets[str(item["market"])]
        out.append(
            Twap(
                twap_id=int(item["twap_id"]),
                market=market.ticker,
                side=str(item["side"]),
                size=Decimal(size_to_human(market, int(item["size"]))),
                remaining=Decimal(size_to_human(market, int(item["remaining"]))),
                filled=Decimal(size_to_human(market, int(item["filled"]))),
                slices_left=int(item["slices_left"]),
                interval_blocks=int(item["interval_blocks"]),
                next_height=int(item["next_height"]),
                max_slippage_ppm=int(item["max_slippage_ppm"]),
                reduce_only=bool(item["reduce_only"]),
            )
        )
    return out


def cancel_action(
    market: Market, *, order_id: int | None = None, client_id: int | None = None
) -> CancelOrder:
    if (order_id is None) == (client_id is None):
        raise InputError("cancel: give order_id or client_id (one of them)")
    if order_id is not None:
        return CancelOrder(market.market_id, CANCEL_BY_ORDER_ID, order_id)
    assert client_id is not None
    return CancelOrder(market.market_id, CANCEL_BY_CLIENT_ID, client_id)


def cancel_all_action(market: Market | None) -> CancelAll:
    return CancelAll(market.market_id if market is not None else 0)


def amend_action(market: Market, order_id: int, size: Amount, price: Amount) -> AmendOrder:
    return AmendOrder(market.market_id, order_id, size_units(market, size), price_units(market, price))


def transfer_action(to: str, amount: Amount) -> Transfer:
    try:
        recipient = Address.parse(to)
    except ValueError as exc:
        raise InputError(f"recipient: {exc}") from None
    return Transfer(recipient, quote_units(amount))


def evm_address(text: str, what: str = "EVM address") -> bytes:
    """The 20 bytes of a 0x-prefixed EVM address; a mixed-case one must carry a valid EIP-55
    checksum (all lower or all upper case carries none). InputError naming `what` otherwise."""
    try:
        raw = parse_evm_address(text)
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None
    digits = text[2:]
    if digits != digits.lower() and digits != digits.upper() and text[:2] + digits != format_evm_address(raw):
        raise InputError(
            f"{what}: {text} fails its EIP-55 checksum (a typo?); its checksummed form is "
            f"{format_evm_address(raw)}"
        )
    return raw


def withdraw_action(recipient: str, amount: Amount) -> Withdraw:
    """Withdraw `amount` USD through the bridge to the EVM address `recipient` (a positive whole
    number of micro-USD, as token units; the chain's minimum withdrawal is the chain's to check)."""
    return Withdraw(evm_address(recipient, "recipient"), quote_units(amount))


WITHDRAWAL_NUMBER_SIZE = 8


def withdrawal_id(owner: str, number: int) -> int:
    """The id of `owner`'s withdrawal `number` (1, 2, ...: its withdrawals in order): the owner's
    20 bytes then the number's 8, big-endian, as one integer (the contract's uint256 id)."""
    if not 1 <= number < 2 ** (8 * WITHDRAWAL_NUMBER_SIZE):
        raise InputError(f"withdrawal number: from 1 to 2**64 - 1, got {number}")
    return int.from_bytes(
        _address(owner, "owner").raw + number.to_bytes(WITHDRAWAL_NUMBER_SIZE, "big"), "big"
    )


def bridge_withdrawal(value: Mapping[str, Any]) -> BridgeWithdrawal:
    """A `/bridge/withdrawals/<id>` value (or an item of `/bridge/owners/<owner>`)."""
    return BridgeWithdrawal(
        id=int(value["id"]),
        owner=str(value["owner"]),
        recipient=str(value["recipient"]),
        amount=Decimal(quote_to_human(int(value["amount"]))),
        amount_units=int(value["amount"]),
        status=str(value["status"]),
        signers=tuple(str(s["evm_address"]) for s in value.get("signatures") or ()),
    )


def bridge_withdrawals(value: Mapping[str, Any]) -> list[BridgeWithdrawal]:
    """The `/bridge/owners/<owner>` value: the owner's withdrawals, oldest first."""
    return [bridge_withdrawal(item) for item in value["withdrawals"]]


def _address(text: str, what: str) -> Address:
    try:
        return Address.parse(text)
    except ValueError as exc:
        raise InputError(f"{what}: {exc}") from None


def subaccount_address(owner: str, number: int) -> str:
    """The address (lower-case hex) of `owner`'s subaccount `number` (0..127; 0: `owner`)."""
    try:
        return str(accounts.subaccount_address(_address(owner, "owner"), number))
    except ValueError as exc:
        raise InputError(f"subaccount: {exc}") from None


def isolated_address(owner: str, market: Market) -> str:
    """The address (lower-case hex) of `owner`'s isolated account of `market`."""
    return str(accounts.isolated_address(_address(owner, "owner"), market.market_id))


def use_subaccount(number: int) -> UseSubaccount:
    """The switch after which a tx's actions act as the signer's subaccount `number`."""
    if not 0 <= number <= accounts.MAX_SUBACCOUNT:
        raise InputError(f"subaccount: a number in [0, {accounts.MAX_SUBACCOUNT}], got {number}")
    return UseSubaccount(number)


def use_isolated(market: Market) -> UseIsolated:
    """The switch after which a tx's actions act as the signer's isolated account of `market`."""
    return UseIsolated(market.market_id)


def acting_as(
    actions: Sequence[Action], *, subaccount: int | None = None, isolated: Market | None = None
) -> list[Action]:
    """`actions` acting as the signer's subaccount `subaccount` or its isolated account of
    `isolated` (neither: as the signer); InputError for both."""
    if subaccount is not None and isolated is not None:
        raise InputError("subaccount: give a subaccount or isolated, not both")
    if subaccount is not None:
        return [use_subaccount(subaccount), *actions]
    if isolated is not None:
        return [use_isolated(isolated), *actions]
    return list(actions)


def _derived(item: Mapping[str, Any], *, number: int | None, market: str | None) -> DerivedAccount:
    def usd(name: str) -> Decimal:
        return Decimal(quote_to_human(int(item[name])))

    return DerivedAccount(
        address=str(item["address"]),
        number=number,
        market=market,
        balance=usd("balance"),
        account_value=usd("account_value"),
        initial_requirement=usd("initial_requirement"),
        maintenance_requirement=usd("maintenance_requirement"),
        positions=int(item["positions"]),
    )


def subaccounts(value: Mapping[str, Any]) -> Subaccounts:
    """The `/subaccounts/<owner>` query."""
    return Subaccounts(
        owner=str(value["owner"]),
        subaccounts=tuple(_derived(i, number=int(i["number"]), market=None) for i in value["subaccounts"]),
        isolated=tuple(_derived(i, number=None, market=str(i["market"])) for i in value["isolated"]),
    )


def events(items: Any) -> tuple[Event, ...]:
    """Events of the RPC's JSON (`[{"type", "attributes": [{"key", "value"}]}]`)."""
    return tuple(
        Event(
            type=str(e["type"]),
            attributes={str(a["key"]): str(a["value"]) for a in e.get("attributes") or ()},
        )
        for e in items or ()
    )


def tx_result(commit: Mapping[str, Any]) -> TxResult:
    """The result of `broadcast_tx_commit`; TxError if the check or the execution failed."""
    tx_hash = str(commit["hash"])
    check, deliver = commit["check_tx"], commit["tx_result"]
    for stage, result in (("check", check), ("deliver", deliver)):
        if result.get("code", 0):
            raise TxError(
                stage=stage,
                code=int(result["code"]),
                log=str(result.get("log", "")),
                codespace=str(result.get("codespace", "")),
                tx_hash=tx_hash,
            )
    return TxResult(
        hash=tx_hash,
        height=int(commit["height"]),
        code=0,
        log=str(deliver.get("log", "")),
        events=events(deliver.get("events")),
    )


def _level(item: Mapping[str, Any]) -> Level:
    return Level(
        price=Decimal(item["price_human"]),
        size=Decimal(item["size_human"]),
        price_subticks=int(item["price"]),
        size_quantums=int(item["size"]),
    )


def book(value: Mapping[str, Any]) -> Book:
    """The `/book/<TICKER>` query's value."""
    return Book(
        market=str(value["market"]),
        bids=tuple(_level(item) for item in value["bids"]),
        asks=tuple(_level(item) for item in value["asks"]),
    )


def account(value: Mapping[str, Any] | None, address: str) -> Account:
    """The `/accounts/<address>` query's value (None: an account the chain has not seen)."""
    if not value:
        return Account(
            address=address,
            balance=Decimal(0),
            account_value=Decimal(0),
            free_collateral=Decimal(0),
            positions=(),
            orders=(),
        )
    return Account(
        address=str(value["address"]),
        balance=Decimal(value["collateral_human"]),
        account_value=Decimal(value.get("account_value_human", "0")),
        free_collateral=Decimal(value.get("free_collateral_human", "0")),
        positions=tuple(
            Position(
                market=str(p["market"]),
                size=Decimal(p["size_human"]),
                size_quantums=int(p["size"]),
                quote=Decimal(p["quote_human"]),
                open_orders=int(p["open_orders"]),
            )
            for p in value.get("positions", ())
        ),
        orders=tuple(
            RestingOrder(
                order_id=int(o["order_id"]),
                market=str(o["market"]),
                side=str(o["side"]),
                price=Decimal(o["price_human"]),
                remaining=Decimal(o["remaining_human"]),
                client_id=int(o["client_id"]),
            )
            for o in value.get("orders", ())
        ),
    )


def liquidations(value: Mapping[str, Any]) -> Liquidations:
    """The `/liquidations` query's value."""
    return Liquidations(
        queue=tuple(
            QueuedAccount(
                account=str(item["account"]),
                account_value=Decimal(item["account_value_human"]),
                maintenance_requirement=Decimal(item["maintenance_requirement_human"]),
            )
            for item in value["queue"]
        ),
        recent=tuple(
            Liquidation(
                height=int(item["height"]),
                kind=str(item["kind"]),
                account=str(item["account"]),
                counterparty=str(item["counterparty"]),
                market=str(item["market"]),
                size=Decimal(item["size_human"]),
                size_quantums=int(item["size"]),
                price=Decimal(item["price_human"]),
                price_subticks=int(item["price"]),
                quote=Decimal(item["quote_human"]),
                fee=Decimal(item["fee_human"]),
            )
            for item in value["recent"]
        ),
    )


class Gap(Exception):
    """A book delta that does not follow the last one: the stream lost a message."""


class BookState:
    """One market's L2 book kept from its stream (`node.streams`): a snapshot, then deltas that
    must follow each other by `seq` (`Gap` otherwise: subscribe again for a new snapshot)."""

    def __init__(self, market: Market, snapshot: Mapping[str, Any], height: int) -> None:
        if snapshot.get("type") != "snapshot":
            raise Gap("a book stream starts with a snapshot")
        self.market = market
        self.seq = int(snapshot["seq"])
        self.height = height
        self._sides: tuple[dict[int, int], dict[int, int]] = (
            {int(p): int(s) for p, s in snapshot["bids"]},
            {int(p): int(s) for p, s in snapshot["asks"]},
        )

    def apply(self, delta: Mapping[str, Any], height: int) -> None:
        if int(delta["seq"]) != self.seq + 1:
            raise Gap(f"delta {delta['seq']} after {self.seq}")
        for levels, side in zip(self._sides, ("bids", "asks"), strict=True):
            for price, size in delta[side]:
                if int(size):
                    levels[int(price)] = int(size)
                else:
                    levels.pop(int(price), None)
        self.seq = int(delta["seq"])
        self.height = height

    def book(self) -> Book:
        m = self.market

        def level(price: int, size: int) -> Level:
            return Level(
                price=Decimal(price_to_human(m, price)),
                size=Decimal(size_to_human(m, size)),
                price_subticks=price,
                size_quantums=size,
            )

        bids, asks = self._sides
        return Book(
            market=m.ticker,
            bids=tuple(level(p, bids[p]) for p in sorted(bids, reverse=True)),
            asks=tuple(level(p, asks[p]) for p in sorted(asks)),
            height=self.height,
            seq=self.seq,
        )


def fills_of(address: str, markets: Mapping[str, Market], found: list[Event], height: int) -> list[Fill]:
    """The fills in `found` (a user stream message's events) of the account `address`."""
    out = []
    for event in found:
        if event.type != "order_filled" or address not in (event.get("maker"), event.get("taker")):
            continue
        market = markets.get(event.get("market"))
        if market is None:
            continue
        maker = event.get("maker") == address
        taker_side = event.get("taker_side")
        side = taker_side if not maker else ("sell" if taker_side == "buy" else "buy")
        out.append(
            Fill(
                market=market.ticker,
                price=Decimal(price_to_human(market, int(event.get("price")))),
                size=Decimal(size_to_human(market, int(event.get("size")))),
                side=side,
                maker=maker,
                order_id=int(event.get("maker_order_id" if maker else "taker_order_id")),
                height=height,
            )
        )
    return out


def stream_events(items: Any) -> list[Event]:
    """Events of a stream message (`{"type", key: value, ...}`)."""
    return [
        Event(type=str(item["type"]), attributes={k: str(v) for k, v in item.items() if k != "type"})
        for item in items or ()
    ]
