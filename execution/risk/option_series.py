"""Option series (markets with `execution.markets.OptionTerms`) at the end of each block: their mark
price and Greeks, and their expiry and settlement.

Mark (`option_marks`, each open series in id order, block height H, block time T < expiry). With S
the underlying's oracle price and sigma the implied volatility of (underlying, expiry)
(`execution.oracle.volatility`), both not stale at H, the series' Black-Scholes quote
(`execution.options.pricing`) at t = (expiry - T) / YEAR_NS years and the rate of the option
parameters (`OPTION_PARAMS`) is stored as its `OptionMark`, and its price rounded to the nearest
subtick (at least 1) becomes the series' oracle price `[mark, H]`: margin, triggers, liquidation and
the queries read it as they read a perpetual's. Without a fresh S and sigma the mark stays as it is
and goes stale like any oracle price (only reducing orders then). Genesis marks every series with
an initial implied volatility the same way (`init_option_marks`). Validators vote no price on a
series (`execution.oracle.votes`) and it pays no funding (`execution.risk.funding`).

Expiry (`option_expiry`, each open series whose expiry is <= T, with S fresh; a stale S postpones
it to the first block with a fresh one). The settlement price X is the intrinsic value at S,
max(S - K, 0) for a call and max(K - S, 0) for a put, rounded down to the tick. Every resting order
and trigger order on the series is cancelled (reason "expiry"), then every holder's position closes
at X: quote += size * X * 10**qce (exact: sizes are on the step and X on the tick; the holders'
sizes sum to zero, so these changes sum to zero and quote is conserved) and size = 0. A holder
whose balance + quote >= 0 is paid out: its quote moves to its balance and the record goes. A
holder who cannot pay and holds nothing else is bankrupt: its balance pays first, the insurance
fund covers the rest as far as its balance goes (`insurance_covered`), and only what the fund
cannot cover stays as a negative quote on the series. A holder with other positions keeps the
negative quote (a debt its account value counts: the liquidation pass closes the other positions
if it is then under water). The series is
then closed: `SeriesSettlement` `[H, X, S]` at `option_series_key` (its existence is what closes
it: placements are refused with MARKET_CLOSED), its oracle price `[max(X, 1), H]` and its mark
`[max(X, 1), S, 0, 0, H]` (no vol: Greeks at expiry). Events: `option_mark` per series marked
(market, price, underlying_price, vol_ppm, height); at expiry `option_settlement` per holder and
`option_expired` per series.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from consensus.app import Event
from execution.accounts import load_account, store_account
from execution.exchange.context import ExchangeContext
from execution.exchange.events import make_event
from execution.exchange.fills import Positions
from execution.exchange.orders import cancel_owner_orders
from execution.markets import (
    Market,
    OptionTerms,
    format_scaled,
    load_market,
    notional,
    pow10,
    price_exponent,
    price_to_human,
)
from execution.options.fixedpoint import SCALE
from execution.options.marks import OptionMark, load_mark, mark_quote, quote, years_to_expiry
from execution.options.portfolio import PortfolioParams
from execution.options.pricing import Quote
from execution.oracle.prices import OraclePrice, is_stale, load_params, load_price, store_price
from execution.oracle.volatility import load_vol, load_vol_params, vol_is_stale
from execution.positions.funding_index import INSURANCE_FUND
from execution.positions.margin import load_option_params
from execution.positions.position import Position, owner_markets
from execution.state import StateReader, StateView, read_record
from primitives import codec
from primitives.keys import Address
from primitives.timefmt import format_rfc3339
from storage import schema

log = logging.getLogger("derivd.options")

EXPIRY_REASON = "expiry"


@dataclass(frozen=True, slots=True, kw_only=True)
class SeriesSettlement:
    """A settled (closed) series: the height, the settlement price X and the underlying's price S."""

    height: int
    price: int
    underlying_price: int

    def encode(self) -> bytes:
        return codec.encode([self.height, self.price, self.underlying_price])

    @classmethod
    def decode(cls, raw: bytes) -> SeriesSettlement:
        f = codec.field_list(codec.decode(raw), "option settlement", 3)
        return cls(
            height=codec.field_int(f[0], "option settlement.height"),
            price=codec.field_int(f[1], "option settlement.price"),
            underlying_price=codec.field_int(f[2], "option settlement.underlying_price"),
        )


# -- storage --------------------------------------------------------------------------------------


def store_option_params(view: StateView, params: PortfolioParams) -> None:
    view.put(schema.OPTION_PARAMS, params.encode())


def load_settlement(state: StateReader, market_id: int) -> SeriesSettlement | None:
    return read_record(state, schema.option_series_key(market_id), SeriesSettlement.decode)


# -- pricing ----------------------------------------------------------------------------------------


def mark_subticks(q: Quote) -> int:
    """The quote's price to the nearest subtick (ties up), at least 1."""
    return max((2 * q.price + SCALE) // (2 * SCALE), 1)


def settlement_price(market: Market, terms: OptionTerms, spot: int) -> int:
    """The intrinsic value at `spot`, rounded down to the market's tick."""
    intrinsic = max(spot - terms.strike, 0) if terms.call else max(terms.strike - spot, 0)
    return intrinsic - intrinsic % market.subticks_per_tick


# -- the end-of-block stage ------------------------------------------------------------------------


def _fresh_price(view: StateView, market_id: int, height: int) -> int | None:
    stored = load_price(view, market_id)
    if stored is None or is_stale(stored, height, load_params(view)):
        return None
    return stored.price


def _mark(
    view: StateView, market: Market, terms: OptionTerms, height: int, block_time: int
) -> OptionMark | None:
    """Mark an open series that has not expired: store its `OptionMark` and oracle price and
    return the mark; None (nothing written) without a fresh underlying price and vol."""
    spot = _fresh_price(view, terms.underlying_id, height)
    if spot is None:
        return None
    vol = load_vol(view, terms.underlying_id, terms.expiry_ns)
    if vol is None or vol_is_stale(vol, height, load_vol_params(view)):
        return None
    t = years_to_expiry(terms, block_time)
    rate = load_option_params(view).rate_ppm
    price = mark_subticks(quote(terms, spot=spot, vol_ppm=vol.vol_ppm, t=t, rate_ppm=rate))
    mark = OptionMark(price=price, spot=spot, vol_ppm=vol.vol_ppm, t=t, height=height)
    view.put_record(schema.option_mark_key(market.market_id), mark)
    store_price(view, market.market_id, OraclePrice(price, height))
    return mark


def init_option_marks(view: StateView, markets: Iterable[Market], height: int, genesis_time: int) -> None:
    """Genesis: the first mark of every series with an initial implied volatility (at the genesis
    height and time), so that option positions are margined from the first block."""
    for market in markets:
        if market.option is not None and genesis_time < market.option.expiry_ns:
            _mark(view, market, market.option, height, genesis_time)


def option_series_end_block(
    view: StateView, ctx: ExchangeContext, height: int, block_time: int
) -> list[Event]:
    """Every open series in id order: settled when expired (with a fresh underlying price), else
    marked (module docstring)."""
    events: list[Event] = []
    for market in ctx.markets(view):
        terms = market.option
        if terms is None or load_settlement(view, market.market_id) is not None:
            continue
        if block_time >= terms.expiry_ns:
            spot = _fresh_price(view, terms.underlying_id, height)
            if spot is None:
                log.warning("%s expired but its underlying's price is stale: settlement waits", market.ticker)
                continue
            events.extend(settle_series(view, ctx, market, terms, spot, height))
            continue
        mark = _mark(view, market, terms, height, block_time)
        if mark is not None:  # the context's view of the price, current
            ctx.prices[market.market_id] = mark.price
            ctx.stale.pop(market.market_id, None)
            events.append(
                make_event(
                    "option_mark",
                    ("market", market.ticker),
                    ("price", mark.price),
                    ("underlying_price", mark.spot),
                    ("vol_ppm", mark.vol_ppm),
                    ("height", height),
                )
            )
    return events


def _order_owners(view: StateView, ctx: ExchangeContext, market_id: int) -> list[bytes]:
    """The owners of the series' resting orders and trigger orders, sorted."""
    bids, asks = ctx.book(view, market_id).orders()
    owners = {order.owner for order in bids} | {order.owner for order in asks}
    owners.update(trigger.owner for trigger in ctx.trigger_book(view, market_id).triggers())
    return sorted(owners)


def _pay_out(
    view: StateView, positions: Positions, market: Market, owner: bytes, size: int, paid: int, price: int
) -> Event:
    """Realize a closed series position's quote into its holder's balance (module docstring);
    its `option_settlement` event."""
    position = positions.get(owner)
    address = Address(owner)
    account = load_account(view, address)
    balance = account.balance + position.quote
    covered = 0
    if balance >= 0:
        store_account(view, address, account.with_balance(balance))
        positions.set(owner, Position())
    elif owner != INSURANCE_FUND.raw and owner_markets(view, owner) == (market.market_id,):
        fund = load_account(view, INSURANCE_FUND)
        covered = min(fund.balance, -balance)
        store_account(view, INSURANCE_FUND, fund.with_balance(fund.balance - covered))
        store_account(view, address, account.with_balance(0))
        left = balance + covered  # <= 0: what the fund could not cover stays as a debt
        positions.set(owner, Position(0, left, 0, 0, 0, position.funding_index) if left else Position())
    return make_event(
        "option_settlement",
        ("market", market.ticker),
        ("owner", owner.hex()),
        ("size", size),
        ("settlement_price", price),
        ("paid", paid),
        ("quote", position.quote),
        ("paid_out", "true" if balance >= 0 else "false"),
        ("insurance_covered", covered),
    )


def settle_series(
    view: StateView, ctx: ExchangeContext, market: Market, terms: OptionTerms, spot: int, height: int
) -> list[Event]:
    """Close the series at the intrinsic value at `spot` (module docstring)."""
    market_id = market.market_id
    price = settlement_price(market, terms, spot)
    events: list[Event] = []
    for owner in _order_owners(view, ctx, market_id):
        events.extend(cancel_owner_orders(view, ctx, market, owner, EXPIRY_REASON))
    holders = [schema.owner_from_holder_key(key) for key, _ in view.iterate(schema.holder_prefix(market_id))]
    positions = Positions(view, market_id)
    closed: list[tuple[bytes, int, int]] = []
    for owner in holders:
        position = positions.get(owner)
        paid = notional(market, position.size, price)
        closed.append((owner, position.size, paid))
        positions.set(owner, Position(0, position.quote + paid, 0, 0, 0, position.funding_index))
    positions.store()
    for owner, size, paid in closed:
        events.append(_pay_out(view, positions, market, owner, size, paid, price))
    positions.store()
    view.put_record(
        schema.option_series_key(market_id),
        SeriesSettlement(height=height, price=price, underlying_price=spot),
    )
    view.put_record(
        schema.option_mark_key(market_id),
        OptionMark(price=max(price, 1), spot=spot, vol_ppm=0, t=0, height=height),
    )
    store_price(view, market_id, OraclePrice(max(price, 1), height))
    ctx.prices[market_id] = max(price, 1)
    ctx.stale.pop(market_id, None)
    events.append(
        make_event(
            "option_expired",
            ("market", market.ticker),
            ("expiry", format_rfc3339(terms.expiry_ns)),
            ("underlying_price", spot),
            ("settlement_price", price),
            ("holders", len(closed)),
            ("height", height),
        )
    )
    log.info(
        "%s expired at height %d: settled at %d (underlying %d), %d holders",
        market.ticker,
        height,
        price,
        spot,
        len(closed),
    )
    return events


# -- queries ----------------------------------------------------------------------------------------


def _human(value: int, exponent: int, divisor: int = 1, decimals: int = 6) -> str:
    """value / SCALE * 10**exponent / divisor to `decimals` places (nearest, ties up), as text."""
    e = exponent + decimals
    num = value * pow10(max(e, 0))
    den = SCALE * divisor * pow10(max(-e, 0))
    return format_scaled((2 * num + den) // (2 * den), -decimals)


def option_json(state: StateReader, market: Market, terms: OptionTerms) -> dict[str, object]:
    """The `option` object of a series in `/markets`: its terms, status and last mark with its
    Greeks per base unit (human: delta, gamma per USD, vega in USD per vol point, theta in USD per
    day; raw: SCALE fixed point of subticks per base unit)."""
    underlying = load_market(state, terms.underlying_id)
    settled = load_settlement(state, market.market_id)
    mark = load_mark(state, market.market_id)
    pe = price_exponent(market)
    value: dict[str, object] = {
        "underlying": str(terms.underlying_id),
        "underlying_ticker": underlying.ticker if underlying is not None else "",
        "expiry": format_rfc3339(terms.expiry_ns),
        "expiry_ns": str(terms.expiry_ns),
        "strike": str(terms.strike),
        "strike_human": price_to_human(market, terms.strike),
        "type": "call" if terms.call else "put",
        "status": "open" if settled is None else "settled",
    }
    if settled is not None:
        value["settlement_height"] = str(settled.height)
        value["settlement_price"] = str(settled.price)
        value["settlement_price_human"] = price_to_human(market, settled.price)
        value["settlement_underlying_price"] = str(settled.underlying_price)
    if mark is not None:
        q = mark_quote(terms, mark, load_option_params(state).rate_ppm)
        value["mark"] = {
            "price": str(mark.price),
            "price_human": price_to_human(market, mark.price),
            "theoretical_price_human": _human(q.price, pe),
            "delta": _human(q.delta, 0),
            "gamma_per_usd": _human(q.gamma, -pe),
            "vega_usd_per_vol_point": _human(q.vega, pe, 100),
            "theta_usd_per_day": _human(q.theta, pe, 365),
            "underlying_price": str(mark.spot),
            "underlying_price_human": price_to_human(market, mark.spot),
            "vol_ppm": str(mark.vol_ppm),
            "years_to_expiry": _human(mark.t, 0),
            "height": str(mark.height),
        }
    return value


def position_greeks_json(state: StateReader, market: Market, size: int) -> dict[str, str]:
    """The Greeks of a position of `size` base quantums on a series at its last mark (human, as in
    `option_json`; delta in base units of the underlying); empty without a mark."""
    mark = load_mark(state, market.market_id)
    if mark is None or market.option is None:
        return {}
    q = mark_quote(market.option, mark, load_option_params(state).rate_ppm)
    pe, ar = price_exponent(market), market.atomic_resolution
    return {
        "delta": _human(size * q.delta, ar),
        "gamma_per_usd": _human(size * q.gamma, ar - pe),
        "vega_usd_per_vol_point": _human(size * q.vega, ar + pe, 100),
        "theta_usd_per_day": _human(size * q.theta, ar + pe, 365),
    }
