"""The benchmarks' order flow: signed txs of market makers and takers, from a seeded generator
(`derivd bench exec` builds blocks of it; `derivd bench throughput` submits it to a localnet).

Each trader trades one home market (trader i: market i mod the number of markets; `hot`: every
trader trades the first market, so every tx conflicts with every other). A quarter of the txs
are takers: one IOC order crossing the market's initial price by `TAKER_CROSS_TICKS` ticks. The
others are market makers' batches of `orders_per_tx` actions: placements (a quarter of them
post-only), half within `TAKER_CROSS_TICKS` ticks of the initial price and half 8 to 40 ticks away,
and cancels by client id of the trader's far orders placed before the last `end_block` (40% of a
batch's actions once it has some). With `requote_every` > 0 every such maker tx of a trader starts
with a CancelAll of its market instead (a market maker pulling its quotes and quoting afresh), so a
long run keeps each trader's resting orders bounded (near orders that nobody fills would otherwise
pile up to the market's open-order limit). With `transfer_share` > 0 that share of the txs are
transfers of one quantum to another trader instead. Nonces are one counter for all traders, one
more per tx. `FlowTx.orders` counts the actions (a CancelAll is one).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from execution.markets import Market, default_markets
from execution.tx import Action, CancelAll, CancelOrder, PlaceOrder, Transfer, build_tx
from primitives.keys import PrivateKey

TAKER_SHARE = 0.25  # of txs: one IOC order crossing the mid by TAKER_CROSS_TICKS
TAKER_CROSS_TICKS = 5
CANCEL_SHARE = 0.4  # of a maker's actions, when it has deep orders to cancel
NEAR_SHARE = 0.5  # of placements: within TAKER_CROSS_TICKS of the mid (the others 8-40 ticks away)
POST_ONLY_SHARE = 0.25  # of a maker's placements


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowTx:
    """One signed tx of the flow."""

    raw: bytes
    trader: int
    """index of the signing key"""
    orders: int
    """its placements and cancels (0 for a transfer)"""


def copies_of_btc(count: int) -> list[Market]:
    """`count` markets with BTC-USD's parameters, ids 1..count (tickers M1-USD, M2-USD...)."""
    btc = default_markets()[0]
    return [replace(btc, market_id=i, ticker=f"M{i}-USD") for i in range(1, count + 1)]


class OrderFlow:
    """The generator (module docstring); the same arguments give the same txs."""

    def __init__(
        self,
        *,
        keys: Sequence[PrivateKey],
        markets: Sequence[Market],
        chain_id: str,
        seed: int,
        nonce: int,
        hot: bool = False,
        orders_per_tx: int = 4,
        transfer_share: float = 0.0,
        requote_every: int = 0,
    ) -> None:
        if not keys or not markets:
            raise ValueError("an order flow needs at least one key and one market")
        self._keys = list(keys)
        self._markets = list(markets)
        self._chain_id = chain_id
        self._rng = random.Random(seed)
        self._nonce = nonce
        self._hot = hot
        self._orders_per_tx = orders_per_tx
        self._transfer_share = transfer_share
        self._requote_every = requote_every
        self._maker_txs = [0] * len(self._keys)
        self._deep: list[list[int]] = [[] for _ in self._keys]  # client ids of far orders, cancellable
        self._placed: list[tuple[int, int]] = []  # (trader, client id) of far orders since end_block
        self._next_client = [1] * len(self._keys)

    def end_block(self) -> None:
        """The far orders placed so far may be cancelled from now on (within a block, a maker's
        cancels run before the placements of later txs, so a cancel names an earlier block's order)."""
        for trader, client_id in self._placed:
            self._deep[trader].append(client_id)
        self._placed.clear()

    def next_tx(self) -> FlowTx:
        rng = self._rng
        trader = rng.randrange(len(self._keys))
        self._nonce += 1
        if self._transfer_share and rng.random() < self._transfer_share:
            recipient = self._keys[(trader + 1) % len(self._keys)].address
            raw = build_tx(self._keys[trader], self._chain_id, self._nonce, [Transfer(recipient, 1)])
            return FlowTx(raw=raw, trader=trader, orders=0)
        market = self._markets[0] if self._hot else self._markets[trader % len(self._markets)]
        tick = market.subticks_per_tick
        actions: list[Action] = []
        if rng.random() < TAKER_SHARE:
            side = rng.randrange(2)
            cross = TAKER_CROSS_TICKS * tick
            price = market.initial_price + (cross if side == 0 else -cross)
            size = market.step_base_quantums * rng.randint(1, 20)
            actions.append(PlaceOrder(market.market_id, side, size, price, 1))
        wanted = 1 if actions else self._orders_per_tx
        deep = self._deep[trader]
        if not actions and self._requote_every:
            self._maker_txs[trader] += 1
            if self._maker_txs[trader] % self._requote_every == 0:
                actions.append(CancelAll(market.market_id))
                wanted += 1
                deep.clear()
                self._placed = [(t, c) for t, c in self._placed if t != trader]
        while len(actions) < wanted:
            if deep and rng.random() < CANCEL_SHARE:
                client_id = deep.pop(rng.randrange(len(deep)))
                actions.append(CancelOrder(market.market_id, 1, client_id))
                continue
            side = rng.randrange(2)
            near = rng.random() < NEAR_SHARE
            offset = tick * (rng.randint(1, TAKER_CROSS_TICKS) if near else rng.randint(8, 40))
            price = market.initial_price - offset if side == 0 else market.initial_price + offset
            client_id = self._next_client[trader]
            self._next_client[trader] += 1
            tif = 3 if rng.random() < POST_ONLY_SHARE else 0
            size = market.step_base_quantums * rng.randint(1, 10)
            actions.append(PlaceOrder(market.market_id, side, size, price, tif, 0, client_id))
            if not near:  # near orders may fill, so only deep ones are cancelled later
                self._placed.append((trader, client_id))
        raw = build_tx(self._keys[trader], self._chain_id, self._nonce, actions)
        return FlowTx(raw=raw, trader=trader, orders=len(actions))
