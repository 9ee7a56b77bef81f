"""Hypothesis strategies shared by the execution tests: random trading actions on the default
markets (BTC-USD and ETH-USD around $65,000 and $3,000)."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

from execution.tx import Action, CancelAll, PlaceOrder, PlaceTrigger, Transfer
from primitives.keys import Address
from tests.execution.exchange_helpers import BTC, BUY, IOC, POST_ONLY, SELL, amend, btc, cancel, usd

KINDS = ("place", "place", "ioc", "post", "cancel", "cancel_all", "amend", "trigger", "transfer")


def trading_actions(
    *, markets: Sequence[int], max_order_id: int, transfer_to: st.SearchStrategy[Address]
) -> st.SearchStrategy[Action]:
    """One action: a GTC, IOC or post-only order within 8 ticks of the mid, a cancel or amend of an
    order id up to `max_order_id`, a cancel-all, a stop-loss 10 ticks away, or a $1 transfer."""

    @st.composite
    def action(draw: st.DrawFn) -> Action:
        market = draw(st.sampled_from(markets))
        kind = draw(st.sampled_from(KINDS))
        side = draw(st.sampled_from([BUY, SELL]))
        if market == BTC:
            size, price = (
                btc(draw(st.sampled_from([1, 10, 40]))),
                usd(65_000 + 100 * draw(st.integers(-8, 8))),
            )
        else:
            size, price = 10**9 * draw(st.integers(1, 4)), 3_000 * 10**5 + 10**5 * draw(st.integers(-8, 8))
        if kind == "cancel":
            return cancel(draw(st.integers(1, max_order_id)), market)
        if kind == "cancel_all":
            return CancelAll(market)
        if kind == "amend":
            return amend(draw(st.integers(1, max_order_id)), size, price, market)
        if kind == "trigger":
            trigger_price = price + (10 if side == BUY else -10) * 100_000  # 10 ticks away (stop loss)
            return PlaceTrigger(market, side, size, trigger_price, 0, 0, 0, 0)
        if kind == "transfer":
            return Transfer(draw(transfer_to), 10**6)
        tif = {"place": 0, "ioc": IOC, "post": POST_ONLY}[kind]
        return PlaceOrder(market, side, size, price, tif, 0, 0, 0)

    return action()
