"""Application queries (`abci_query`) on the committed state. Values are JSON bytes, integers as
decimal strings, hashes as upper-case hex:

| path | value |
|---|---|
| `/accounts/<address hex>` | the account, its positions, orders and margin (below; absent: empty) |
| `/markets` | every market by id: parameters, human tick/step/minimum, oracle price, funding (note) |
| `/book/<TICKER>` | L2 `{"market", "bids", "asks"}`: levels best first (at most 1,000 a side) |
| `/book/<TICKER>/l3` | L3 `{"market", "bids", "asks"}`: orders by priority (at most 10,000 a side) |
| `/triggers/<TICKER>` | `{"market", "rise", "fall"}`: resting stop-loss / take-profit orders (below) |
| `/twaps/<address hex>` | `{"address", "twaps"}`: live TWAPs by id (`execution.exchange.twap.twap_json`) |
| `/subaccounts/<owner hex>` | `{"owner", "subaccounts", "isolated"}`: the owner's derived accounts (below) |
| `/oracle` | per market: price, `updated_height`, `age_blocks`, `stale` (below) |
| `/funding` | per perpetual: predicted and last 8-hour rate and hourly part, index, next tick (below) |
| `/liquidations` | `{"queue", "recent"}`: accounts waiting for liquidation, the last liquidations (below) |
| `/supply` | `{"total"}`: the quote supply fixed at genesis |
| `/fees` | the fee schedule: each action kind's price in quote units (`execution.fees`), as strings |
| `/app` | `{"height", "app_hash"}` of the last commit |
| `/validators` | the validator registry, sorted by address: `[{"address", "pub_key", "power"}]` |
| `/evidence` | every recorded misbehavior, oldest first (see below) |
| `/bridge` | the bridge (`execution.bridge`): parameters, totals, current valset, pending counts (below) |
| `/bridge/deposits/<id hex>` | a deposit: `credited` with its claim, else its pending votes |
| `/bridge/withdrawals/<id>` | a withdrawal (id decimal), its status, digest and signatures |
| `/bridge/owners/<address hex>` | `{"owner", "withdrawals"}`: the owner's withdrawals by number |
| `/bridge/valsets/<nonce>` | a valset: members, hash, status, the digest its predecessor signs, signatures |

In `/validators`, `address` is upper-case hex, `pub_key` the base64 of the 32-byte Ed25519 key and
`power` the application's current power (a slashed validator stays listed with "0").
`/evidence` items are `{"kind", "validator", "validator_power", "height", "time",
"total_voting_power", "block_height"}`: `validator` is the upper-case hex address; `height`, `time`
(ns) and both powers are those of the infraction; `block_height` is the block that handed it to
the application.

Note: an option series has no funding fields but an `option` object: its terms, status and mark with
its Greeks (`execution.risk.option_series.option_json`).

`/accounts/<address>` is `{"address", "balance", "nonces", "collateral", "positions", "orders", "triggers",
"account_value", "initial_requirement", "maintenance_requirement", "free_collateral"}`:
`collateral` is the balance; `positions` lists `{"market", "market_id",
"size", "size_human", "quote", "quote_human", "open_buy", "open_sell", "open_orders",
"oracle_price", "funding_index", "pending_funding"}` (and, on an option series, `greeks`:
`execution.risk.option_series.position_greeks_json`) by market id, each settled to its market's
funding index (`execution.risk.funding`): `quote` is the settled quote balance, `pending_funding` what
that settlement takes from the stored one (negative: adds), `funding_index` the market's index;
`orders` lists the resting orders `{"order_id", "market", "side",
"price", "price_human", "size", "remaining", "remaining_human", "client_id", "post_only",
"reduce_only", "good_til_block"}` by market then order id; the four margin figures
(`execution.positions.margin`) are quote quantums at the oracle prices, each with a `*_human` USD string
beside it. Orders (`order_id`, `side` "buy"/"sell", `post_only`/`reduce_only` booleans) look the
same in `/book/<TICKER>/l3`. `triggers` lists the account's resting trigger orders
(`execution.risk.triggers`) by market then order id, each `{"order_id", "market", "owner", "side",
"kind" ("stop_loss"/"take_profit"), "size", "size_human", "trigger_price", "trigger_price_human",
"limit_price", "limit_price_human" (0: a market order once triggered), "execution_price",
"execution_price_human", "fires_when" ("oracle >= trigger" or "oracle <= trigger"), "reduce_only",
"client_id"}`; `/triggers/<TICKER>` lists the market's, `rise` (those that fire when the oracle
price is >= their trigger price, lowest trigger first) and `fall` (<=, highest first), at most
10,000 each. `age_blocks` is the committed height minus `updated_height`; `stale`
uses the oracle's `stale_after_blocks` at the next height. An L2 level is `{"price",
"price_human", "size", "size_human"}` (its summed remaining size); `/oracle` items are
`{"market", "market_id", "price", "price_human", "updated_height", "age_blocks", "stale"}`.
`/funding` items are `{"market", "market_id", "funding_rate_ppm", "funding_applied_ppm",
"last_funding_rate_ppm", "last_funding_applied_ppm", "funding_index", "funding_samples",
"next_funding_time", "oracle_price"}`: `funding_rate_ppm` is the 8-hour rate (per the funding
`rate_period_seconds`) the running interval gets from its premium samples so far (the predicted
rate, clamped, interest included), `funding_applied_ppm` the part of it the next tick pays (1/8 of
it with hourly ticks, rounded toward zero), `last_funding_rate_ppm` the 8-hour rate of the last
funding tick (0 before the first) and `last_funding_applied_ppm` the part that tick paid,
`funding_index` the cumulative index (quote quantums per base quantum times
`execution.positions.funding_index.FUNDING_INDEX_SCALE`), `funding_samples` the samples of the
running interval and `next_funding_time` the block time (ns) at or after which the next tick
happens (a rate > 0: longs pay shorts). `/markets` items carry the same funding fields.
`/liquidations` is `{"queue", "recent"}`: `queue` the accounts the liquidation pass carries to the
next block (`execution.risk.liquidation.load_queue`), in processing order, at most 1,000, each
`{"account", "account_value", "account_value_human", "maintenance_requirement",
"maintenance_requirement_human"}` figured as in `/accounts/<address>`; `recent` the last 1,000
liquidation records (`execution.risk.history`), newest block first and in order within a block,
each `{"height", "kind" ("liquidated": closed through the book, "taken_over": by the insurance
fund, "deleveraged"), "account", "counterparty" (the fund or the deleveraging counterparty; ""
for "liquidated"), "market", "market_id", "size", "size_human" (the signed change of the account's
position), "price", "price_human", "quote", "quote_human" (what the account's position received),
"fee", "fee_human" (the liquidation fee; "0" unless "liquidated")}`. Addresses are lower-case hex.
Prices are subticks, sizes base quantums and quote amounts quote quantums, as integer strings;
the `*_human` strings beside them are USD per base unit, base units and USD
(`execution.markets`).

`/subaccounts/<owner>` lists the owner's subaccounts (`execution.accounts.subaccount_address`, 0
the owner itself) by number, each `{"number", "address", "balance", "account_value",
"initial_requirement", "maintenance_requirement", "positions"}` (`positions`: how many), and its
isolated accounts (`isolated_address`) by market id, each `{"market", "market_id", "address", ...the
same}`; only those with an account record or a position.

`/bridge` is `{"chain_id", "evm_chain_id", "contract", "token", "confirmations", "min_deposit",
"min_withdrawal", "deposited", "withdrawn", "valset", "pending_withdrawals" (a count),
"pending_valsets" (nonces, ascending), "pending_deposits" (a count)}`; a valset is `{"nonce",
"hash", "total_power", "members": [{"evm_address", "power", "validator"}]}` (`validator`: the
upper-case hex address whose bridge key it is now, "" if none), and `/bridge/valsets/<nonce>` adds
`"status"` (pending|signed: signed by > 2/3 of the set before; nonce 0 is signed), `"digest"` (what
the set before signs) and `"signatures"`. A withdrawal is `{"id", "owner", "recipient", "amount",
"height", "signed_height", "status" (pending|signed), "digest", "signatures"}`; signatures are
`[{"evm_address", "signature"}]` by address. `/bridge/deposits/<id>` is `{"deposit_id", "status"}`
and, credited, `"height"` and `"claim"`, else (pending, or unknown without votes) `"votes":
[{"validator", "claim_hash", "claim"}]`; a claim is `{"evm_chain_id", "tx_hash", "log_index",
"depositor", "recipient", "amount"}`. EVM addresses are EIP-55, hashes, digests and signatures 0x
and lower-case hex. On a chain without a bridge every `/bridge` path answers BRIDGE_DISABLED; an
unknown withdrawal or valset UNKNOWN_WITHDRAWAL.

`/key` answers from the state tree (`storage.statetree`) instead: `data` is a state key (the
`a:` layouts of `storage.schema`, e.g. `a:acct:` + a 20-byte address), the value is its stored
bytes (empty: absent) at `height` (0: the last committed), any height the tree still keeps
(HEIGHT_NOT_AVAILABLE otherwise). With `prove`, `proof_ops` holds one `PROOF_OP_TYPE` op whose
data is an ICS23 `CommitmentProof` (presence or absence, `primitives.ics23`) against the root of
that height's state: the app hash in the header of the next block. The derived indexes
(`execution.indexes`: client order ids, an owner's markets) are not in the tree: INVALID_QUERY.

The other paths read the latest state only: height 0 or the last committed height are served, any
other is HEIGHT_NOT_AVAILABLE; they carry no proof. Results carry the height they answer for.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass

from consensus.app import ProofOp, QueryResult
from execution.accounts import MAX_SUBACCOUNT, isolated_address, load_account, load_supply, subaccount_address
from execution.bridge.deposits import (
    claim_hash,
    claim_json,
    deposit_votes,
    load_credited,
    pending_deposit_count,
)
from execution.bridge.evm import format_evm_address, valset_digest
from execution.bridge.params import BridgeParams, bridge_domain, load_bridge_params
from execution.bridge.totals import load_totals
from execution.bridge.valsets import (
    Valset,
    bridge_keys,
    current_valset,
    is_valset_pending,
    load_valset,
    pending_valset_nonces,
    valset_signatures,
)
from execution.bridge.withdrawals import (
    Withdrawal,
    digest_of,
    is_withdrawal_pending,
    load_withdrawal,
    owner_withdrawals,
    withdrawal_signatures,
)
from execution.codes import CODESPACE, Code
from execution.evidence import load_evidence
from execution.exchange.books import load_orders
from execution.exchange.events import SIDE_NAMES
from execution.exchange.orderbook import Order, OrderBook
from execution.exchange.trigger_book import KIND_NAMES, TriggerOrder, load_triggers
from execution.exchange.twap import live_twaps, twap_json
from execution.fees import load_fee_params
from execution.markets import (
    Market,
    load_market,
    load_markets,
    market_by_ticker,
    price_to_human,
    quote_to_human,
    size_to_human,
)
from execution.oracle.prices import is_stale, load_params, load_price, prices_at
from execution.positions.funding_index import load_funding_index, pending_funding, settled
from execution.positions.margin import margin_summary
from execution.positions.position import positions
from execution.risk.funding import funding_json
from execution.risk.history import recent
from execution.risk.liquidation import load_queue
from execution.risk.option_series import option_json, position_greeks_json
from execution.risk.triggers import execution_price
from execution.state import CommittedState
from execution.validators import registry
from primitives.ics23 import encode_proof
from primitives.keys import Address
from storage import schema
from storage.statetree import PROOF_OP_TYPE, StateTree, TreeError

KEY_PATH = "/key"
ACCOUNTS_PREFIX = "/accounts/"
TRIGGERS_PREFIX = "/triggers/"
TWAPS_PREFIX = "/twaps/"
SUBACCOUNTS_PREFIX = "/subaccounts/"
BOOK_PREFIX = "/book/"
L3_SUFFIX = "/l3"
BRIDGE_PATH = "/bridge"
BRIDGE_PREFIX = "/bridge/"
BRIDGE_SUBPATHS = ("deposits/<deposit id hex>", "withdrawals/<id>", "owners/<address>", "valsets/<nonce>")
MAX_L2_LEVELS = 1_000
MAX_L3_ORDERS = 10_000
MAX_LIQUIDATION_QUEUE = 1_000
MAX_RECENT_LIQUIDATIONS = 1_000


@dataclass(frozen=True, slots=True)
class QueryContext:
    """What a query sees: the committed state, the state tree, the last committed height and app hash."""

    state: CommittedState
    tree: StateTree
    height: int
    app_hash: bytes


def _json(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _error(ctx: QueryContext, code: Code, log: str) -> QueryResult:
    return QueryResult(code=int(code), log=log, height=ctx.height, codespace=CODESPACE)


def _parsed_address(ctx: QueryContext, text: str, path: str) -> Address | QueryResult:
    """The address `text` of the query `path`, or its INVALID_QUERY answer."""
    try:
        return Address.parse(text)
    except ValueError as exc:
        return _error(ctx, Code.INVALID_QUERY, f"invalid address in {path!r}: {exc}")


def query_account(ctx: QueryContext, path: str) -> QueryResult:
    address = _parsed_address(ctx, path[len(ACCOUNTS_PREFIX) :], path)
    if isinstance(address, QueryResult):
        return address
    account = load_account(ctx.state, address)
    value: dict[str, object] = {
        "address": str(address),
        "balance": str(account.balance),
        "nonces": [str(nonce) for nonce in account.nonces],
        "collateral": str(account.balance),
        "collateral_human": quote_to_human(account.balance),
    }
    value.update(_account_trading(ctx, address))
    return QueryResult(key=schema.account_key(address.raw), value=_json(value), height=ctx.height)


def query_supply(ctx: QueryContext, path: str) -> QueryResult:
    return QueryResult(value=_json({"total": str(load_supply(ctx.state))}), height=ctx.height)


def query_fees(ctx: QueryContext, path: str) -> QueryResult:
    """The fee schedule (`execution.fees`): each action kind's price in quote units."""
    value = {name: str(price) for name, price in load_fee_params(ctx.state).to_json().items()}
    return QueryResult(value=_json(value), height=ctx.height)


def query_app(ctx: QueryContext, path: str) -> QueryResult:
    value = {"height": str(ctx.height), "app_hash": ctx.app_hash.hex().upper()}
    return QueryResult(value=_json(value), height=ctx.height)


def query_validators(ctx: QueryContext, path: str) -> QueryResult:
    value = [
        {
            "address": validator.address.upper(),
            "pub_key": base64.b64encode(validator.pub_key).decode(),
            "power": str(validator.power),
        }
        for validator in registry(ctx.state)
    ]
    return QueryResult(value=_json(value), height=ctx.height)


def query_evidence(ctx: QueryContext, path: str) -> QueryResult:
    value = [
        {
            "kind": record.misbehavior.kind,
            "validator": record.misbehavior.validator_address.hex().upper(),
            "validator_power": str(record.misbehavior.validator_power),
            "height": str(record.misbehavior.height),
            "time": str(record.misbehavior.time),
            "total_voting_power": str(record.misbehavior.total_voting_power),
            "block_height": str(record.block_height),
        }
        for record in load_evidence(ctx.state)
    ]
    return QueryResult(value=_json(value), height=ctx.height)


def _prices(ctx: QueryContext) -> Callable[[int], int]:
    """market id -> oracle price (the market's initial price if it has none)."""
    known = prices_at(ctx.state)

    def price(market_id: int) -> int:
        try:
            return known(market_id)
        except LookupError:
            market = load_market(ctx.state, market_id)
            return 0 if market is None else market.initial_price

    return price


def _order_json(market: Market, order: Order) -> dict[str, object]:
    return {
        "order_id": str(order.order_id),
        "market": market.ticker,
        "owner": order.owner.hex(),
        "side": SIDE_NAMES[order.side],
        "price": str(order.price),
        "price_human": price_to_human(market, order.price),
        "size": str(order.size),
        "remaining": str(order.remaining),
        "remaining_human": size_to_human(market, order.remaining),
        "client_id": str(order.client_id),
        "post_only": order.post_only,
        "reduce_only": order.reduce_only,
        "good_til_block": str(order.good_til_block),
    }


def _trigger_json(market: Market, trigger: TriggerOrder) -> dict[str, object]:
    price = execution_price(market, trigger.side, trigger.trigger_price, trigger.limit_price)
    return {
        "order_id": str(trigger.order_id),
        "market": market.ticker,
        "owner": trigger.owner.hex(),
        "side": SIDE_NAMES[trigger.side],
        "kind": KIND_NAMES[trigger.kind],
        "size": str(trigger.size),
        "size_human": size_to_human(market, trigger.size),
        "trigger_price": str(trigger.trigger_price),
        "trigger_price_human": price_to_human(market, trigger.trigger_price),
        "limit_price": str(trigger.limit_price),
        "limit_price_human": price_to_human(market, trigger.limit_price),
        "execution_price": str(price),
        "execution_price_human": price_to_human(market, price),
        "fires_when": "oracle >= trigger" if trigger.fires_on_rise else "oracle <= trigger",
        "reduce_only": trigger.reduce_only,
        "client_id": str(trigger.client_id),
    }


def query_triggers(ctx: QueryContext, path: str) -> QueryResult:
    ticker = path[len(TRIGGERS_PREFIX) :]
    market = market_by_ticker(ctx.state, ticker)
    if market is None:
        return _error(ctx, Code.INVALID_QUERY, f"unknown market {ticker!r} in {path!r}")
    triggers = load_triggers(ctx.state, market.market_id)
    rise = sorted((t for t in triggers if t.fires_on_rise), key=lambda t: (t.trigger_price, t.order_id))
    fall = sorted((t for t in triggers if not t.fires_on_rise), key=lambda t: (-t.trigger_price, t.order_id))
    value = {
        "market": market.ticker,
        "rise": [_trigger_json(market, t) for t in rise[:MAX_L3_ORDERS]],
        "fall": [_trigger_json(market, t) for t in fall[:MAX_L3_ORDERS]],
    }
    return QueryResult(value=_json(value), height=ctx.height)


def query_twaps(ctx: QueryContext, path: str) -> QueryResult:
    address = _parsed_address(ctx, path[len(TWAPS_PREFIX) :], path)
    if isinstance(address, QueryResult):
        return address
    markets = {market.market_id: market for market in load_markets(ctx.state)}
    twaps = [twap_json(markets[t.market_id], i, t) for i, t in live_twaps(ctx.state, address.raw)]
    return QueryResult(value=_json({"address": str(address), "twaps": twaps}), height=ctx.height)


def _derived_json(ctx: QueryContext, address: Address, prices: Callable[[int], int]) -> dict[str, str] | None:
    """The figures of one derived account of `/subaccounts/<owner>`, None if it is not in use."""
    held = positions(ctx.state, address)
    if not held and ctx.state.get(schema.account_key(address.raw)) is None:
        return None
    summary = margin_summary(ctx.state, address, prices)
    return {
        "address": str(address),
        "balance": str(load_account(ctx.state, address).balance),
        "account_value": str(summary.value),
        "initial_requirement": str(summary.initial),
        "maintenance_requirement": str(summary.maintenance),
        "positions": str(len(held)),
    }


def query_subaccounts(ctx: QueryContext, path: str) -> QueryResult:
    owner = _parsed_address(ctx, path[len(SUBACCOUNTS_PREFIX) :], path)
    if isinstance(owner, QueryResult):
        return owner
    prices = _prices(ctx)
    subaccounts: list[dict[str, str]] = []
    for number in range(MAX_SUBACCOUNT + 1):
        item = _derived_json(ctx, subaccount_address(owner, number), prices)
        if item is not None:
            subaccounts.append({"number": str(number), **item})
    isolated: list[dict[str, str]] = []
    for market in load_markets(ctx.state):
        item = _derived_json(ctx, isolated_address(owner, market.market_id), prices)
        if item is not None:
            isolated.append({"market": market.ticker, "market_id": str(market.market_id), **item})
    value = {"owner": str(owner), "subaccounts": subaccounts, "isolated": isolated}
    return QueryResult(value=_json(value), height=ctx.height)


def _account_trading(ctx: QueryContext, address: Address) -> dict[str, object]:
    """Positions, resting orders and margin figures of `address`."""
    markets = {market.market_id: market for market in load_markets(ctx.state)}
    prices = _prices(ctx)
    held = positions(ctx.state, address)
    summary = margin_summary(ctx.state, address, prices)
    indexes = {market_id: load_funding_index(ctx.state, market_id) for market_id, _ in held}
    return {
        "positions": [
            {
                "market": markets[market_id].ticker,
                "market_id": str(market_id),
                "size": str(position.size),
                "size_human": size_to_human(markets[market_id], position.size),
                "quote": str(settled(position, indexes[market_id]).quote),
                "quote_human": quote_to_human(settled(position, indexes[market_id]).quote),
                "open_buy": str(position.open_buy),
                "open_sell": str(position.open_sell),
                "open_orders": str(position.open_orders),
                "oracle_price": str(prices(market_id)),
                "funding_index": str(indexes[market_id]),
                "pending_funding": str(pending_funding(position, indexes[market_id])),
                **(
                    {"greeks": position_greeks_json(ctx.state, markets[market_id], position.size)}
                    if markets[market_id].option is not None
                    else {}
                ),
            }
            for market_id, position in held
        ],
        "orders": [
            _order_json(markets[market_id], order)
            for market_id, position in held
            if position.open_orders
            for order in load_orders(ctx.state, market_id)
            if order.owner == address.raw
        ],
        "triggers": [
            _trigger_json(markets[market_id], trigger)
            for market_id, position in held
            if position.open_orders
            for trigger in load_triggers(ctx.state, market_id)
            if trigger.owner == address.raw
        ],
        "account_value": str(summary.value),
        "account_value_human": quote_to_human(summary.value),
        "initial_requirement": str(summary.initial),
        "initial_requirement_human": quote_to_human(summary.initial),
        "maintenance_requirement": str(summary.maintenance),
        "maintenance_requirement_human": quote_to_human(summary.maintenance),
        "free_collateral": str(summary.free),
        "free_collateral_human": quote_to_human(summary.free),
    }


def query_markets(ctx: QueryContext, path: str) -> QueryResult:
    prices = _prices(ctx)
    value = [
        {
            **{name: str(v) if isinstance(v, int) else v for name, v in market.to_json().items()},
            "tick_human": price_to_human(market, market.subticks_per_tick),
            "step_human": size_to_human(market, market.step_base_quantums),
            "min_order_size_human": size_to_human(market, market.min_order_base_quantums),
            "oracle_price": str(prices(market.market_id)),
            "oracle_price_human": price_to_human(market, prices(market.market_id)),
            **(
                funding_json(ctx.state, market)
                if market.option is None
                else {"option": option_json(ctx.state, market, market.option)}
            ),
        }
        for market in load_markets(ctx.state)
    ]
    return QueryResult(value=_json(value), height=ctx.height)


def query_book(ctx: QueryContext, path: str) -> QueryResult:
    rest = path[len(BOOK_PREFIX) :]
    l3 = rest.endswith(L3_SUFFIX)
    ticker = rest[: -len(L3_SUFFIX)] if l3 else rest
    market = market_by_ticker(ctx.state, ticker)
    if market is None:
        return _error(ctx, Code.INVALID_QUERY, f"unknown market {ticker!r} in {path!r}")
    book = OrderBook()
    book.restore(load_orders(ctx.state, market.market_id))
    value: dict[str, object] = {"market": market.ticker}
    if l3:
        bids, asks = book.orders()
        value["bids"] = [_order_json(market, order) for order in bids[:MAX_L3_ORDERS]]
        value["asks"] = [_order_json(market, order) for order in asks[:MAX_L3_ORDERS]]
    else:
        depth_bids, depth_asks = book.depth(MAX_L2_LEVELS)
        for name, levels in (("bids", depth_bids), ("asks", depth_asks)):
            value[name] = [
                {
                    "price": str(price),
                    "price_human": price_to_human(market, price),
                    "size": str(size),
                    "size_human": size_to_human(market, size),
                }
                for price, size in levels
            ]
    return QueryResult(value=_json(value), height=ctx.height)


def query_oracle(ctx: QueryContext, path: str) -> QueryResult:
    params = load_params(ctx.state)
    value = []
    for market in load_markets(ctx.state):
        stored = load_price(ctx.state, market.market_id)
        if stored is None:
            continue
        value.append(
            {
                "market": market.ticker,
                "market_id": str(market.market_id),
                "price": str(stored.price),
                "price_human": price_to_human(market, stored.price),
                "updated_height": str(stored.updated_height),
                "age_blocks": str(ctx.height - stored.updated_height),
                "stale": is_stale(stored, ctx.height + 1, params),
            }
        )
    return QueryResult(value=_json(value), height=ctx.height)


def query_funding(ctx: QueryContext, path: str) -> QueryResult:
    prices = _prices(ctx)
    value = [
        {
            "market": market.ticker,
            "market_id": str(market.market_id),
            **funding_json(ctx.state, market),
            "oracle_price": str(prices(market.market_id)),
        }
        for market in load_markets(ctx.state)
        if market.option is None
    ]
    return QueryResult(value=_json(value), height=ctx.height)


def query_liquidations(ctx: QueryContext, path: str) -> QueryResult:
    prices = _prices(ctx)
    queue = []
    for owner in load_queue(ctx.state)[:MAX_LIQUIDATION_QUEUE]:
        summary = margin_summary(ctx.state, Address(owner), prices)
        queue.append(
            {
                "account": owner.hex(),
                "account_value": str(summary.value),
                "account_value_human": quote_to_human(summary.value),
                "maintenance_requirement": str(summary.maintenance),
                "maintenance_requirement_human": quote_to_human(summary.maintenance),
            }
        )
    markets = {market.market_id: market for market in load_markets(ctx.state)}
    records = []
    for height, record in recent(ctx.state, MAX_RECENT_LIQUIDATIONS):
        market = markets[record.market_id]
        records.append(
            {
                "height": str(height),
                "kind": record.kind,
                "account": record.account.hex(),
                "counterparty": record.counterparty.hex(),
                "market": market.ticker,
                "market_id": str(record.market_id),
                "size": str(record.size),
                "size_human": size_to_human(market, record.size),
                "price": str(record.price),
                "price_human": price_to_human(market, record.price),
                "quote": str(record.quote),
                "quote_human": quote_to_human(record.quote),
                "fee": str(record.fee),
                "fee_human": quote_to_human(record.fee),
            }
        )
    return QueryResult(value=_json({"queue": queue, "recent": records}), height=ctx.height)


# -- bridge --------------------------------------------------------------------------------------------


def _signatures_json(signatures: dict[bytes, bytes]) -> list[dict[str, str]]:
    return [
        {"evm_address": format_evm_address(address), "signature": "0x" + signature.hex()}
        for address, signature in signatures.items()
    ]


def _members_json(ctx: QueryContext, valset: Valset) -> list[dict[str, str]]:
    validator_of = {key: validator for validator, key in bridge_keys(ctx.state)}
    return [
        {
            "evm_address": format_evm_address(address),
            "power": str(power),
            "validator": validator_of[address].hex().upper() if address in validator_of else "",
        }
        for address, power in valset.members
    ]


def _valset_json(ctx: QueryContext, valset: Valset) -> dict[str, object]:
    return {
        "nonce": str(valset.nonce),
        "hash": "0x" + valset.hash.hex(),
        "total_power": str(valset.total_power),
        "members": _members_json(ctx, valset),
    }


def _withdrawal_json(ctx: QueryContext, params: BridgeParams, withdrawal: Withdrawal) -> dict[str, object]:
    pending = is_withdrawal_pending(ctx.state, withdrawal.id)
    return {
        "id": str(withdrawal.id),
        "owner": str(withdrawal.owner),
        "recipient": format_evm_address(withdrawal.recipient),
        "amount": str(withdrawal.amount),
        "height": str(withdrawal.height),
        "signed_height": str(withdrawal.signed_height),
        "status": "pending" if pending else "signed",
        "digest": "0x" + digest_of(params, withdrawal).hex(),
        "signatures": _signatures_json(withdrawal_signatures(ctx.state, withdrawal.id)),
    }


def query_bridge(ctx: QueryContext, path: str) -> QueryResult:
    """`/bridge` and its sub-paths (module docstring)."""
    params = load_bridge_params(ctx.state)
    if params is None:
        return _error(
            ctx, Code.BRIDGE_DISABLED, "this chain has no bridge (its genesis has no bridge section)"
        )
    if path == BRIDGE_PATH:
        return _ok(ctx, _bridge_json(ctx, params))
    rest = path[len(BRIDGE_PREFIX) :]
    kind, _, arg = rest.partition("/")
    if kind == "deposits" and arg:
        return _bridge_deposit(ctx, arg)
    if kind == "withdrawals" and arg:
        if not (arg.isascii() and arg.isdigit()):
            return _error(ctx, Code.INVALID_QUERY, f"a withdrawal id is a decimal integer, got {arg!r}")
        withdrawal = load_withdrawal(ctx.state, int(arg))
        if withdrawal is None:
            return _error(ctx, Code.UNKNOWN_WITHDRAWAL, f"no withdrawal with id {arg}")
        return _ok(ctx, _withdrawal_json(ctx, params, withdrawal))
    if kind == "owners" and arg:
        owner = _parsed_address(ctx, arg, path)
        if isinstance(owner, QueryResult):
            return owner
        items = [_withdrawal_json(ctx, params, w) for w in owner_withdrawals(ctx.state, owner)]
        return _ok(ctx, {"owner": str(owner), "withdrawals": items})
    if kind == "valsets" and arg:
        if not (arg.isascii() and arg.isdigit()):
            return _error(ctx, Code.INVALID_QUERY, f"a valset nonce is a decimal integer, got {arg!r}")
        valset = load_valset(ctx.state, int(arg))
        if valset is None:
            return _error(ctx, Code.UNKNOWN_WITHDRAWAL, f"no bridge valset with nonce {arg}")
        value = _valset_json(ctx, valset)
        value["status"] = "pending" if is_valset_pending(ctx.state, valset.nonce) else "signed"
        value["digest"] = "0x" + valset_digest(bridge_domain(params), valset.hash).hex()
        value["signatures"] = _signatures_json(valset_signatures(ctx.state, valset.nonce))
        return _ok(ctx, value)
    known = ", ".join(f"{BRIDGE_PREFIX}{sub}" for sub in BRIDGE_SUBPATHS)
    return _error(ctx, Code.UNKNOWN_QUERY, f"unknown query path {path!r} (known: {BRIDGE_PATH}, {known})")


def _ok(ctx: QueryContext, value: object) -> QueryResult:
    return QueryResult(value=_json(value), height=ctx.height)


def _bridge_json(ctx: QueryContext, params: BridgeParams) -> dict[str, object]:
    totals = load_totals(ctx.state)
    valset = current_valset(ctx.state)
    return {
        "chain_id": params.chain_id,
        "evm_chain_id": str(params.evm_chain_id),
        "contract": format_evm_address(params.contract),
        "token": format_evm_address(params.token),
        "confirmations": str(params.confirmations),
        "min_deposit": str(params.min_deposit),
        "min_withdrawal": str(params.min_withdrawal),
        "deposited": str(totals.deposited),
        "withdrawn": str(totals.withdrawn),
        "valset": None if valset is None else _valset_json(ctx, valset),
        "pending_withdrawals": str(len(ctx.state.iterate(schema.APP_BRIDGE_WITHDRAWAL_PENDING_PREFIX))),
        "pending_valsets": [str(nonce) for nonce in pending_valset_nonces(ctx.state)],
        "pending_deposits": str(pending_deposit_count(ctx.state)),
    }


def _bridge_deposit(ctx: QueryContext, text: str) -> QueryResult:
    body = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        deposit = bytes.fromhex(body)
    except ValueError:
        deposit = b""
    if len(deposit) != schema.DEPOSIT_ID_SIZE or not body.isascii():
        return _error(ctx, Code.INVALID_QUERY, f"a deposit id is 64 hex digits, got {text!r}")
    credited = load_credited(ctx.state, deposit)
    value: dict[str, object] = {"deposit_id": "0x" + deposit.hex()}
    if credited is not None:
        value.update(status="credited", height=str(credited.height), claim=claim_json(credited.claim))
        return _ok(ctx, value)
    votes = [
        {
            "validator": validator.hex().upper(),
            "claim_hash": "0x" + claim_hash(claim).hex(),
            "claim": claim_json(claim),
        }
        for validator, claim in deposit_votes(ctx.state, deposit)
    ]
    value.update(status="pending" if votes else "unknown", votes=votes)
    return _ok(ctx, value)


EXACT_PATHS: dict[str, Callable[[QueryContext, str], QueryResult]] = {
    "/markets": query_markets,
    "/funding": query_funding,
    "/liquidations": query_liquidations,
    "/oracle": query_oracle,
    "/supply": query_supply,
    "/fees": query_fees,
    "/app": query_app,
    "/validators": query_validators,
    "/evidence": query_evidence,
}


def query_key(ctx: QueryContext, key: bytes, height: int, prove: bool) -> QueryResult:
    """`/key`: a state key's stored bytes at `height` from the state tree, with its proof."""
    if not key:
        return _error(ctx, Code.INVALID_QUERY, "/key needs the state key in data")
    if not schema.in_state_tree(key):
        log = f"{key[:6]!r} keys are derived indexes, outside the state tree: query what they index"
        return _error(ctx, Code.INVALID_QUERY, log)
    version = height or ctx.height
    if version > ctx.height:
        log = f"height {version} is not committed yet (last {ctx.height})"
        return _error(ctx, Code.HEIGHT_NOT_AVAILABLE, log)
    try:
        value = ctx.tree.get(key, version)
        proof = encode_proof(ctx.tree.prove(key, version)) if prove else b""
    except TreeError as exc:
        return _error(ctx, Code.HEIGHT_NOT_AVAILABLE, f"height {version}: {exc}")
    ops = (ProofOp(type=PROOF_OP_TYPE, key=key, data=proof),) if prove else ()
    return QueryResult(key=key, value=value or b"", height=version, proof_ops=ops)


def run_query(ctx: QueryContext, path: str, data: bytes, height: int, prove: bool) -> QueryResult:
    """Answer `path` (with `data`) at `height` (0: latest); proofs with `prove` where the path has them."""
    if path == KEY_PATH:
        return query_key(ctx, data, height, prove)
    if height not in (0, ctx.height):
        log = f"past heights are kept for {KEY_PATH} queries only: this path answers at height {ctx.height}"
        return _error(ctx, Code.HEIGHT_NOT_AVAILABLE, log)
    if path.startswith(ACCOUNTS_PREFIX):
        return query_account(ctx, path)
    if path.startswith(BOOK_PREFIX):
        return query_book(ctx, path)
    if path.startswith(TRIGGERS_PREFIX):
        return query_triggers(ctx, path)
    if path.startswith(TWAPS_PREFIX):
        return query_twaps(ctx, path)
    if path.startswith(SUBACCOUNTS_PREFIX):
        return query_subaccounts(ctx, path)
    if path == BRIDGE_PATH or path.startswith(BRIDGE_PREFIX):
        return query_bridge(ctx, path)
    handler = EXACT_PATHS.get(path)
    if handler is None:
        paths = [KEY_PATH, ACCOUNTS_PREFIX + "<address>", BOOK_PREFIX + "<TICKER>[/l3]"]
        paths.append(TRIGGERS_PREFIX + "<TICKER>")
        paths.append(TWAPS_PREFIX + "<address>")
        paths.append(SUBACCOUNTS_PREFIX + "<owner>")
        paths.append(BRIDGE_PATH)
        paths.extend(BRIDGE_PREFIX + sub for sub in BRIDGE_SUBPATHS)
        known = ", ".join([*paths, *EXACT_PATHS])
        return _error(ctx, Code.UNKNOWN_QUERY, f"unknown query path {path!r} (known: {known})")
    return handler(ctx, path)
