"""The trading commands of the `derivd` CLI: `tx order
place|market|stop|cancel|cancel-all|amend|twap|twap-cancel|scale`, `tx isolated margin` and `query
book|markets|oracle|funding|fees|liquidations|twaps|subaccounts`, on the SDK's market units and actions
(`node.sdk.core`).

Traders give human decimals (`--size 0.5 --price 65000` on BTC-USD); the CLI reads the market's
units from the node (`abci_query /markets`) and converts exactly to base quantums and subticks
(a value finer than the market's units is an error, never rounded silently). Whether a price is
on the tick or a size on the step is the chain's to answer, with its own code and reason. A market
order is an IOC limit order at a worst price: `--worst-price`, or the oracle price moved by
`--slippage` (default 1%) against the trader, rounded outward to the tick. A stop order
(`tx order stop`) is a stop-loss, or with `--take-profit` a take-profit, that rests outside the
book until the oracle price reaches `--trigger-price`, then executes as a market order (the
trigger price moved by the chain's slippage bound, `execution.risk.triggers`) or, with
`--limit-price`, as a GTC limit order; cancel it like an order, by its order id or client id.
A TWAP (`tx order twap`) executes `--size` as `--slices` IOC orders, one every `--interval`
blocks from the end of its block, each at the oracle price moved by at most `--max-slippage`
against the trader (`execution.exchange.twap`); `tx order twap-cancel` stops it by its id (the
`twap_placed` event's). A scale order (`tx order scale`) places `--count` limit orders from
`--start-price` to `--end-price` whose sizes sum to `--size` (`execution.exchange.scale`).
The order commands take `node.tx_cli`'s signing options (`--fees`: by default the chain's minimum
for the tx's actions, a cancel costing less than a placement); with `--generate-only` they print
the unsigned transaction (the market's units are still read from the node). They also take
`--subaccount N` or `--isolated` (act as the key's subaccount N, or as its isolated-margin account
of the order's market: `node.tx_cli.acting_options`). `tx isolated margin --market M --amount X`
moves X quote units to the key's isolated account of M (negative: back from it to the key), and
`query subaccounts <owner>` lists an owner's subaccounts and isolated accounts in use.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click

from execution.accounts import isolated_address
from execution.markets import Market
from execution.tx import Action, Transfer, UseIsolated
from node.client import RPCClient, abci_query, emit, node_option
from node.exitcodes import bad_input
from node.sdk import core
from node.sdk.errors import InputError
from node.tx_cli import Signing, TxClient, acting_options, deliver, deliver_for, signing_options
from primitives.keys import Address

A = TypeVar("A")


def fetch_markets(client: RPCClient) -> dict[str, tuple[Market, dict[str, Any]]]:
    """ticker -> (market, its `/markets` item)."""
    items = abci_query(client, "/markets") or []
    return {str(item["ticker"]): (core.market_from_query(item), item) for item in items}


def _market(client: RPCClient, ticker: str) -> tuple[Market, dict[str, Any]]:
    markets = fetch_markets(client)
    try:
        core.market_named({name: m for name, (m, _) in markets.items()}, ticker)
    except InputError as exc:
        bad_input(f"--market: {exc}")
    return markets[ticker]


def _built(build: Callable[[], A]) -> A:
    """`build()` (an SDK action builder); the command fails with its InputError's reason."""
    try:
        return build()
    except InputError as exc:
        bad_input(f"--{exc}")


market_option = click.option("--market", required=True, help="Market ticker, e.g. BTC-USD.")
side_option = click.option("--side", type=click.Choice(list(core.SIDES)), required=True)
size_option = click.option("--size", required=True, help="Size in base units, e.g. 0.5 (BTC).")
client_id_option = click.option("--client-id", type=int, default=0, help="Your own order id (0: none).")
reduce_only_option = click.option("--reduce-only", is_flag=True, help="Only ever reduce the position.")


@click.group(name="order")
def order_group() -> None:
    """Place, cancel and amend orders."""


@order_group.command(name="place")
@signing_options
@acting_options
@market_option
@side_option
@size_option
@click.option("--price", required=True, help="Limit price in USD per base unit, e.g. 65000.")
@click.option("--tif", type=click.Choice(list(core.TIME_IN_FORCE)), default="gtc", show_default=True)
@reduce_only_option
@client_id_option
@click.option("--good-til-block", type=int, default=0, help="Last height the order may rest (0: none).")
def order_place(
    signing: Signing,
    market: str,
    side: str,
    size: str,
    price: str,
    tif: str,
    reduce_only: bool,
    client_id: int,
    good_til_block: int,
) -> None:
    """Place a limit order."""
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    action = _built(
        lambda: core.place_action(
            m,
            side,
            size,
            price,
            tif=tif,
            client_id=client_id,
            reduce_only=reduce_only,
            good_til_block=good_til_block,
        )
    )
    deliver(signing, client, [action])


@order_group.command(name="market")
@signing_options
@acting_options
@market_option
@side_option
@size_option
@click.option("--worst-price", default=None, help="Worst price accepted (USD per base unit).")
@click.option(
    "--slippage",
    default="0.01",
    show_default=True,
    help="Without --worst-price: the oracle price moved by this fraction against you.",
)
@reduce_only_option
@client_id_option
def order_market(
    signing: Signing,
    market: str,
    side: str,
    size: str,
    worst_price: str | None,
    slippage: str,
    reduce_only: bool,
    client_id: int,
) -> None:
    """Place a market order: immediate-or-cancel at a worst price."""
    client = TxClient(signing.node)
    m, item = _market(client, market)
    if worst_price is not None:
        price = _built(lambda: core.price_units(m, worst_price))
    else:
        try:
            fraction = Decimal(slippage)
        except InvalidOperation:
            bad_input(f"--slippage: not a decimal number: {slippage!r}")
        price = _built(lambda: core.slipped_price(m, int(item["oracle_price"]), side, fraction))
    action = _built(
        lambda: core.market_order_action(m, side, size, price, client_id=client_id, reduce_only=reduce_only)
    )
    deliver(signing, client, [action])


@order_group.command(name="stop")
@signing_options
@acting_options
@market_option
@side_option
@size_option
@click.option("--trigger-price", required=True, help="Oracle price that fires it (USD per base unit).")
@click.option("--limit-price", default=None, help="Limit price once fired (default: a market order).")
@click.option("--take-profit", is_flag=True, help="A take-profit (default: a stop-loss).")
@reduce_only_option
@client_id_option
def order_stop(
    signing: Signing,
    market: str,
    side: str,
    size: str,
    trigger_price: str,
    limit_price: str | None,
    take_profit: bool,
    reduce_only: bool,
    client_id: int,
) -> None:
    """Place a stop-loss or take-profit order, triggered by the oracle price: a buy stop-loss
    fires when the price is at or above the trigger, a sell stop-loss at or below (a take-profit
    the other way round)."""
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    action = _built(
        lambda: core.stop_action(
            m,
            side,
            size,
            trigger_price,
            limit_price=limit_price,
            take_profit=take_profit,
            client_id=client_id,
            reduce_only=reduce_only,
        )
    )
    deliver(signing, client, [action])


@order_group.command(name="cancel")
@signing_options
@acting_options
@market_option
@click.option("--order-id", type=int, default=None, help="The chain's order id.")
@click.option("--client-id", type=int, default=None, help="Your client id of the order.")
def order_cancel(
    signing: Signing,
    market: str,
    order_id: int | None,
    client_id: int | None,
) -> None:
    """Cancel one of your resting orders or stop orders, by order id or client id."""
    if (order_id is None) == (client_id is None):
        bad_input("give exactly one of --order-id and --client-id")
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    action = core.cancel_action(m, order_id=order_id, client_id=client_id)
    deliver(signing, client, [action])


@order_group.command(name="cancel-all")
@signing_options
@acting_options
@click.option("--market", default=None, help="Only this market (default: every market).")
def order_cancel_all(
    signing: Signing,
    market: str | None,
) -> None:
    """Cancel every resting order of yours, on one market or everywhere."""
    client = TxClient(signing.node)
    action = core.cancel_all_action(_market(client, market)[0] if market is not None else None)
    deliver(signing, client, [action])


@order_group.command(name="amend")
@signing_options
@acting_options
@market_option
@click.option("--order-id", type=int, required=True, help="The chain's order id.")
@click.option("--size", required=True, help="New size in base units.")
@click.option("--price", required=True, help="New limit price in USD per base unit.")
def order_amend(
    signing: Signing,
    market: str,
    order_id: int,
    size: str,
    price: str,
) -> None:
    """Cancel-replace a resting order with a new size and price (it loses its priority)."""
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    action = _built(lambda: core.amend_action(m, order_id, size, price))
    deliver(signing, client, [action])


@order_group.command(name="twap")
@signing_options
@acting_options
@market_option
@side_option
@size_option
@click.option("--slices", type=int, required=True, help="How many IOC orders (2 to 1000).")
@click.option("--interval", type=int, required=True, help="Blocks between two slices (1 to 1000).")
@click.option(
    "--max-slippage",
    default="0.01",
    show_default=True,
    help="Worst price of a slice: the oracle price moved this fraction against you (at most 0.1).",
)
@reduce_only_option
def order_twap(
    signing: Signing,
    market: str,
    side: str,
    size: str,
    slices: int,
    interval: int,
    max_slippage: str,
    reduce_only: bool,
) -> None:
    """Execute a size as a TWAP: equal IOC slices at a fixed block interval, the first at the end of
    the block that takes the order."""
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    action = _built(
        lambda: core.twap_action(
            m,
            side,
            size,
            slices=slices,
            interval_blocks=interval,
            max_slippage=max_slippage,
            reduce_only=reduce_only,
        )
    )
    deliver(signing, client, [action])


@order_group.command(name="twap-cancel")
@signing_options
@acting_options
@market_option
@click.option("--twap-id", type=int, required=True, help="The TWAP's id (its twap_placed event).")
def order_twap_cancel(signing: Signing, market: str, twap_id: int) -> None:
    """Stop one of your TWAPs: the slices not yet run are dropped."""
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    deliver(signing, client, [core.cancel_twap_action(m, twap_id)])


@order_group.command(name="scale")
@signing_options
@acting_options
@market_option
@side_option
@size_option
@click.option("--count", type=int, required=True, help="How many orders (2 to 50).")
@click.option("--start-price", required=True, help="Price of the first order (USD per base unit).")
@click.option("--end-price", required=True, help="Price of the last order (USD per base unit).")
@click.option("--tif", type=click.Choice(["gtc", "post-only"]), default="gtc", show_default=True)
@reduce_only_option
@click.option("--client-id-base", type=int, default=0, help="Order k gets client id base + k (0: none).")
def order_scale(
    signing: Signing,
    market: str,
    side: str,
    size: str,
    count: int,
    start_price: str,
    end_price: str,
    tif: str,
    reduce_only: bool,
    client_id_base: int,
) -> None:
    """Place a scale order: limit orders at prices spread evenly from the start to the end price
    (each rounded to the tick away from the market), the size split equally (the last order takes
    the remainder)."""
    client = TxClient(signing.node)
    m, _ = _market(client, market)
    action = _built(
        lambda: core.scale_action(
            m,
            side,
            size,
            count=count,
            start_price=start_price,
            end_price=end_price,
            tif=tif,
            reduce_only=reduce_only,
            client_id_base=client_id_base,
        )
    )
    deliver(signing, client, [action])


@click.group(name="isolated")
def isolated_group() -> None:
    """Isolated margin: an account per market holding one position (its orders: `tx order ...
    --isolated`)."""


@isolated_group.command(name="margin")
@signing_options
@market_option
@click.option(
    "--amount",
    type=int,
    required=True,
    help="Quote units (micro-USD) to add to the isolated account; negative: to take back.",
)
def isolated_margin(signing: Signing, market: str, amount: int) -> None:
    """Add collateral to your isolated account of MARKET, or take it back to your account."""
    if amount == 0:
        bad_input("--amount: must not be 0")
    client = TxClient(signing.node)
    m, _ = _market(client, market)

    def actions(owner: Address) -> list[Action]:
        if amount > 0:
            return [Transfer(isolated_address(owner, m.market_id), amount)]
        return [UseIsolated(m.market_id), Transfer(owner, -amount)]

    deliver_for(signing, client, actions)


@click.command(name="subaccounts")
@node_option
@click.argument("owner")
def subaccounts_command(node: str, owner: str) -> None:
    """Show an owner's subaccounts and isolated-margin accounts in use: address, balance, value,
    margin requirements and how many positions each holds."""
    emit(abci_query(RPCClient(node), f"/subaccounts/{owner}"))


@click.command(name="book")
@node_option
@click.argument("ticker")
@click.option("--l3", is_flag=True, help="Every order (default: aggregated depth per price level).")
def book_command(node: str, ticker: str, l3: bool) -> None:
    """Show a market's order book."""
    emit(abci_query(RPCClient(node), f"/book/{ticker}" + ("/l3" if l3 else "")))


@click.command(name="markets")
@node_option
def markets_command(node: str) -> None:
    """Show every market's parameters and oracle price."""
    emit(abci_query(RPCClient(node), "/markets"))


@click.command(name="oracle")
@node_option
def oracle_command(node: str) -> None:
    """Show the oracle price of every market and its age."""
    emit(abci_query(RPCClient(node), "/oracle"))


@click.command(name="funding")
@node_option
def funding_command(node: str) -> None:
    """Show each market's funding: the predicted 8-hour rate of the running interval, the last
    8-hour rate, the part of each a tick pays, the cumulative index and the next funding time."""
    emit(abci_query(RPCClient(node), "/funding"))


@click.command(name="liquidations")
@node_option
def liquidations_command(node: str) -> None:
    """Show the liquidation queue (the accounts waiting, with their value and maintenance
    requirement) and the last liquidations, takeovers by the insurance fund and deleveragings."""
    emit(abci_query(RPCClient(node), "/liquidations"))


@click.command(name="fees")
@node_option
def fees_command(node: str) -> None:
    """Show the chain's fee schedule: the price of each action kind, in quote units (micro-USD).
    A tx pays at least the sum of its actions' prices (`--fees` of the tx commands)."""
    emit(abci_query(RPCClient(node), "/fees"))


@click.command(name="twaps")
@node_option
@click.argument("address")
def twaps_command(node: str, address: str) -> None:
    """Show an account's live TWAPs: sizes (also in base units), slices left, the next slice's height."""
    emit(abci_query(RPCClient(node), f"/twaps/{address}"))
