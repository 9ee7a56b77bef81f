"""Fair trigger order across markets (`execution.markets.rotated`): the markets are visited
from index height % (number of markets), so a market whose fired triggers exceed the per-block cap
in every block does not starve the markets after it; within a market the firing order is the
documented one, unchanged."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from execution.markets import rotated
from tests.execution.chain import Chain
from tests.execution.exchange_helpers import BUY, ETH, assert_books_match_state, usd
from tests.execution.test_triggers import (
    A,
    B,
    C,
    block,
    kinds,
    resting_trigger_ids,
    trigger,
    trigger_chain,
    vote,
)

ONE_ETH = 10**9
ETH_USD = 10**6  # subticks of $1 on ETH-USD


def fired(chain: Chain, *txs: bytes) -> list[tuple[str, int]]:
    """Run a block; the (market, trigger order id) of each trigger it fired, in firing order."""
    result = block(chain, *txs)
    assert_books_match_state(chain)
    return [(e["market"], int(e["order_id"])) for e in kinds(result, "trigger_triggered")]


def test_a_busy_market_does_not_starve_the_next_one(tmp_path: Path) -> None:
    chain = trigger_chain(tmp_path / "db", triggers={"max_triggers_per_block": 2})
    # limit triggers far from any liquidity, so each just rests when it fires (height 1).
    # BTC: six rise triggers whose prices are not in id order; ETH: four.
    btc_prices = [66_000, 65_500, 65_800, 65_600, 65_900, 65_700]  # ids 1..6
    btc_triggers = [trigger(BUY, 10**6, usd(p), usd(50_000)) for p in btc_prices]
    eth_triggers = [
        trigger(BUY, ONE_ETH, (3_540 - 10 * i) * ETH_USD, 2_000 * ETH_USD, market=ETH) for i in range(4)
    ]  # ids 1..4 at $3,540, $3,530, $3,520, $3,510
    block(
        chain,
        chain.tx(A, *btc_triggers[:3]),
        chain.tx(B, *btc_triggers[3:]),
        chain.tx(C, *eth_triggers),
    )
    # the move at height 2 reaches all ten; two fire a block
    assert chain.height + 1 == 2
    blocks = [fired(chain, vote(chain, 67_000, 3_600))] + [fired(chain) for _ in range(4)]
    # even heights start from BTC-USD (index 0), odd heights from ETH-USD (index 1)
    assert blocks == [
        [("BTC-USD", 2), ("BTC-USD", 4)],  # height 2
        [("ETH-USD", 4), ("ETH-USD", 3)],  # height 3: ETH-USD is not kept waiting behind BTC-USD
        [("BTC-USD", 6), ("BTC-USD", 3)],  # height 4
        [("ETH-USD", 2), ("ETH-USD", 1)],  # height 5
        [("BTC-USD", 5), ("BTC-USD", 1)],  # height 6
    ]
    # within each market, the documented order: rises by ascending trigger price
    btc_order = [i for b in blocks for m, i in b if m == "BTC-USD"]
    assert btc_order == sorted(range(1, 7), key=lambda i: btc_prices[i - 1])
    assert resting_trigger_ids(chain) == [] and resting_trigger_ids(chain, ETH) == []
    assert fired(chain) == []
    chain.close()


def test_the_start_market_rotates_with_the_height(tmp_path: Path) -> None:
    """Below the cap every fired trigger fires; only the order of the markets changes."""
    chain = trigger_chain(tmp_path / "db")
    block(
        chain,
        chain.tx(A, trigger(BUY, 10**6, usd(65_500), usd(50_000))),
        chain.tx(C, trigger(BUY, ONE_ETH, 3_550 * ETH_USD, 2_000 * ETH_USD, market=ETH)),
    )
    second = fired(
        chain,
        vote(chain, 66_000, 3_600),  # reaches the two above, not the two below
        chain.tx(A, trigger(BUY, 10**6, usd(67_000), usd(50_000))),
        chain.tx(C, trigger(BUY, ONE_ETH, 3_650 * ETH_USD, 2_000 * ETH_USD, market=ETH)),
    )
    assert chain.height == 2
    assert second == [("BTC-USD", 1), ("ETH-USD", 1)]
    third = fired(chain, vote(chain, 68_000, 3_700))
    assert chain.height == 3
    assert third == [("ETH-USD", 2), ("BTC-USD", 2)]
    chain.close()


@given(count=st.integers(1, 20), height=st.integers(0, 2**63 - 1))
def test_round_robin_is_a_rotation_starting_at_height_mod_count(count: int, height: int) -> None:
    markets = list(range(1, count + 1))
    order = rotated(markets, height)
    start = height % count
    assert order[0] == markets[start]
    assert sorted(order) == markets  # every market once
    assert all(order[(i + 1) % count] == order[i] % count + 1 for i in range(count))  # id order, wrapping
    # over `count` consecutive heights each market is visited first exactly once
    assert sorted(rotated(markets, height + k)[0] for k in range(count)) == markets


def test_round_robin_of_no_markets_is_empty() -> None:
    assert rotated([], 7) == []
