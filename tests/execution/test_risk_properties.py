"""Issue 6's property test: random trading, price paths, funding ticks, triggered orders and
LIQUIDATE actions on two markets (hypothesis, stateful). After every block `Chain.commit` checks
conservation (accounts, position quote balances and funding pools against the genesis supply), the
funding pools against every unsettled position (`execution.risk.funding.funding_imbalances`), zero net
size per market and that no account ends the block with a negative value; this test adds that the
in-memory books and trigger indexes equal state. At teardown the same blocks are replayed on a
fresh app, which must give the same app hashes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from consensus.app import ValidatorUpdate
from execution.exchange.context import ExchangeContext
from execution.genesis_state import default_exchange_app_state
from execution.markets import Market, default_markets
from execution.oracle.prices import load_price
from execution.positions.funding_index import INSURANCE_FUND
from execution.risk.liquidation import account_health, load_queue
from execution.tx import CancelAll, CancelOrder, Liquidate, OracleVote, PlaceOrder, PlaceTrigger
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from tests.execution.chain import BLOCK_INTERVAL, Chain
from tests.execution.exchange_helpers import assert_books_match_state
from tests.execution.test_holders import assert_holder_index_consistent, assert_holders_match_positions

USD = 10**6
PPM = 1_000_000
MARKETS = {market.market_id: market for market in default_markets()}
MARKET_IDS = sorted(MARKETS)
VALIDATOR = PrivateKey.from_seed(sha256(b"risk property validator"))
TRADERS = [PrivateKey.from_seed(sha256(b"risk property trader %d" % i)) for i in range(5)]
"""Four traders with $10,000 each and a market maker (the last) with $500,000."""
FUNDING_INTERVAL_SECONDS = 30
REPORTED = {
    "order_filled",
    "funding",
    "trigger_triggered",
    "liquidation_started",
    "liquidation_filled",
    "liquidation_taken_over",
    "deleveraged",
    "oracle_price_clamped",
}


def _balances() -> dict[Any, int]:
    balances = {key.address: 10_000 * USD for key in TRADERS[:-1]}
    balances[TRADERS[-1].address] = 500_000 * USD
    balances[INSURANCE_FUND] = 2_000 * USD
    return balances


def _app_state() -> dict[str, Any]:
    state = default_exchange_app_state()
    state["oracle"] = {**state["oracle"], "max_vote_age_blocks": 1, "stale_after_blocks": 1_000_000}
    # short intervals and a wide clamp: funding moves value visibly within a few ticks
    state["funding"] = {
        **state["funding"],
        "interval_seconds": FUNDING_INTERVAL_SECONDS,
        "rate_period_seconds": FUNDING_INTERVAL_SECONDS,  # each tick pays the whole rate
        "clamp_factor_ppm": 1_000_000,  # 100% of IMF - MMF (2%): 20,000 ppm
        "interest_ppm": 1_000,
    }
    state["liquidation"] = {**state["liquidation"], "min_liquidation_notional": 100 * USD}
    state["triggers"] = {"max_triggers_per_block": 3}
    return state


def _new_chain(path: Path) -> Chain:
    return Chain(
        path, _balances(), app_state=_app_state(), validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)]
    )


def _on_tick(market: Market, price: int) -> int:
    tick = market.subticks_per_tick
    return max(tick, price // tick * tick)


accounts = st.integers(0, len(TRADERS) - 1)
markets = st.sampled_from(MARKET_IDS)
sides = st.integers(0, 1)
offsets_ppm = st.integers(-30_000, 30_000)
sizes = st.integers(1, 60).map(lambda n: n * 500)  # in steps: up to ~$195,000 of BTC
orders = st.tuples(accounts, markets, sides, offsets_ppm, sizes, st.integers(0, 3), st.booleans())
moves_ppm = st.one_of(
    st.integers(-60_000, 60_000),
    st.sampled_from([-450_000, -300_000, -150_000, 150_000, 300_000, 450_000, 600_000]),
)


class RiskMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="derivd-risk-"))
        self.chain = _new_chain(self.tmp / "db")
        self.blocks: list[tuple[list[bytes], int]] = []
        # fresh oracle prices at the markets' initial prices (a market without one is stale)
        initial = tuple((market_id, MARKETS[market_id].initial_price) for market_id in MARKET_IDS)
        self.block([self.chain.tx(VALIDATOR, OracleVote(initial))])

    # -- helpers ----------------------------------------------------------------------------------

    def block(self, txs: list[bytes], seconds: int = 1) -> None:
        chain = self.chain
        time = chain.time + seconds * BLOCK_INTERVAL
        result = chain.run_block(txs, time)  # Chain.commit checks the invariants of every block
        self.blocks.append((txs, time))
        kinds = {e.type for r in result.tx_results for e in r.events} | {e.type for e in result.events}
        for kind in sorted(kinds & REPORTED):
            event(kind)  # how often each risk path ran (--hypothesis-show-statistics)

    def oracle(self, market_id: int) -> int:
        stored = load_price(self.chain.app._committed, market_id)
        return MARKETS[market_id].initial_price if stored is None else stored.price

    def price_at(self, market_id: int, offset_ppm: int) -> int:
        price = self.oracle(market_id)
        return _on_tick(MARKETS[market_id], price + price * offset_ppm // PPM)

    # -- rules --------------------------------------------------------------------------------------

    @rule(batch=st.lists(orders, min_size=1, max_size=4))
    def place_orders(self, batch: list[tuple[int, int, int, int, int, int, bool]]) -> None:
        txs = []
        for who, market_id, side, offset, steps, tif, reduce_only in batch:
            market = MARKETS[market_id]
            price = self.price_at(market_id, offset)
            size = steps * market.step_base_quantums
            action = PlaceOrder(market_id, side, size, price, tif, int(reduce_only))
            txs.append(self.chain.tx(TRADERS[who], action))
        self.block(txs)

    @rule(market_id=markets, spread_ppm=st.integers(1_000, 40_000), steps=sizes)
    def maker_quotes(self, market_id: int, spread_ppm: int, steps: int) -> None:
        """The maker rests a bid and an ask around the oracle price (post-only)."""
        size = steps * MARKETS[market_id].step_base_quantums
        bid = PlaceOrder(market_id, 0, size, self.price_at(market_id, -spread_ppm), 3)
        ask = PlaceOrder(market_id, 1, size, self.price_at(market_id, spread_ppm), 3)
        self.block([self.chain.tx(TRADERS[-1], bid, ask)])

    @rule(who=accounts, market_id=st.sampled_from([0, *MARKET_IDS]))
    def cancel_all(self, who: int, market_id: int) -> None:
        self.block([self.chain.tx(TRADERS[who], CancelAll(market_id))])

    @rule(who=accounts, market_id=markets, pick=st.integers(0, 1_000))
    def cancel_one(self, who: int, market_id: int, pick: int) -> None:
        bids, asks = self.chain.app.books.book(market_id).orders()
        resting = sorted(bids + asks, key=lambda o: o.order_id)
        triggers = self.chain.app.books.triggers(market_id).triggers()
        ids = [o.order_id for o in resting] + [t.order_id for t in triggers]
        order_id = ids[pick % len(ids)] if ids else pick
        self.block([self.chain.tx(TRADERS[who], CancelOrder(market_id, 0, order_id))])

    @rule(moves=st.lists(st.tuples(markets, moves_ppm), min_size=1, max_size=2, unique_by=lambda m: m[0]))
    def move_prices(self, moves: list[tuple[int, int]]) -> None:
        prices = tuple(sorted((market_id, self.price_at(market_id, ppm)) for market_id, ppm in moves))
        self.block([self.chain.tx(VALIDATOR, OracleVote(prices))])

    @rule(seconds=st.integers(1, 3 * FUNDING_INTERVAL_SECONDS))
    def advance_time(self, seconds: int) -> None:
        self.block([], seconds)

    @rule(
        who=accounts,
        market_id=markets,
        side=sides,
        kind=st.integers(0, 1),
        offset=st.integers(-100_000, 100_000),
        limit_offset=st.one_of(st.none(), offsets_ppm),
        steps=sizes,
        reduce_only=st.booleans(),
    )
    def place_trigger(
        self,
        who: int,
        market_id: int,
        side: int,
        kind: int,
        offset: int,
        limit_offset: int | None,
        steps: int,
        reduce_only: bool,
    ) -> None:
        market = MARKETS[market_id]
        trigger_price = self.price_at(market_id, offset)
        limit = (
            0
            if limit_offset is None
            else _on_tick(market, trigger_price + trigger_price * limit_offset // PPM)
        )
        size = steps * market.step_base_quantums
        action = PlaceTrigger(market_id, side, size, trigger_price, limit, kind, int(reduce_only), 0)
        self.block([self.chain.tx(TRADERS[who], action)])

    @rule(sender=accounts, who=accounts)
    def liquidate(self, sender: int, who: int) -> None:
        self.block([self.chain.tx(TRADERS[sender], Liquidate(TRADERS[who].address))])

    # -- checks -------------------------------------------------------------------------------------

    @invariant()
    def books_match_state(self) -> None:
        assert_books_match_state(self.chain)

    @invariant()
    def every_liquidatable_account_was_found(self) -> None:
        """Detection misses nobody: an account liquidatable at the committed prices after a block
        is one the pass found and left in the queue (a full check of every trader, against the
        range reads of the sorted band edges)."""
        committed = self.chain.app._committed
        ctx = ExchangeContext(self.chain.height + 1, self.chain.app.books, live=False)
        queue = set(load_queue(committed))
        for owner in (*(key.address.raw for key in TRADERS), INSURANCE_FUND.raw):
            if account_health(committed, ctx, owner).liquidatable:
                assert owner in queue, f"{owner.hex()} is liquidatable and not queued"

    @invariant()
    def holder_index_is_consistent(self) -> None:
        assert_holder_index_consistent(self.chain.app._committed)
        assert_holders_match_positions(self.chain.app._committed)

    def teardown(self) -> None:
        try:
            hashes = list(self.chain.app_hashes)
            self.chain.close()
            replay = _new_chain(self.tmp / "replay")
            try:
                assert replay.genesis_hash == self.chain.genesis_hash
                for txs, time in self.blocks:
                    replay.run_block(txs, time)
                assert replay.app_hashes == hashes
            finally:
                replay.close()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


RiskMachine.TestCase.settings = settings(
    max_examples=80,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRiskProperties = RiskMachine.TestCase
