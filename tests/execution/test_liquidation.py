"""Liquidation, the insurance fund and deleveraging (`execution.risk.liquidation`): a 30% crash with
hundreds of leveraged accounts on both sides, with a deep book and with a book too thin to absorb
(insurance takeover, then deleveraging with its ranking), the LIQUIDATE action, the per-block caps
and the queue, and detection that reads no account outside its candidates. Every block is checked
for conservation, zero net size and no negative account (`tests.execution.chain.Chain.commit`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from consensus.app import CheckTxKind, Event, FinalizeBlockResult, ValidatorUpdate
from execution.accounts import load_account, store_account
from execution.codes import Code
from execution.exchange.context import ExchangeContext
from execution.exchange.trigger_book import load_triggers
from execution.genesis_state import AppStateError, default_exchange_app_state, parse_app_state
from execution.markets import default_markets, value_floor
from execution.oracle.prices import OraclePrice, load_price, store_price
from execution.positions.funding_index import INSURANCE_FUND
from execution.positions.margin import maintenance_requirement
from execution.positions.position import Position, load_position, store_position
from execution.risk.funding import funding_end_block
from execution.risk.history import recent
from execution.risk.liquidation import (
    Counterparties,
    LiquidationParams,
    Ranked,
    _holders,
    account_health,
    apply_liquidate,
    candidates,
    liquidation_pass,
    load_queue,
)
from execution.state import CountingView, StateView
from execution.tx import Action, Liquidate, OracleVote, PlaceOrder, PlaceTrigger, Transfer, standard_fee
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from storage import schema
from tests.execution.chain import Chain
from tests.execution.exchange_helpers import (
    BTC,
    BUY,
    ETH,
    IOC,
    POST_ONLY,
    SELL,
    assert_books_match_state,
    assert_ok,
    attrs,
    usd,
)

USD = 10**6
STEP = 1_000_000
BTC_MARKET = default_markets()[0]
VALIDATOR = PrivateKey.from_seed(sha256(b"liquidation test validator"))


def trader(i: int) -> PrivateKey:
    return PrivateKey.from_seed(sha256(b"liquidation trader %d" % i))


MAKER = trader(10_000)
LIQUIDATOR = trader(10_001)


def btc_size_for(notional_usd: int, price_usd: int = 65_000) -> int:
    """Base quantums (a whole number of steps) of about `notional_usd` at `price_usd`."""
    steps = notional_usd * 10_000 // price_usd  # one step is 0.0001 BTC
    return max(1, steps) * STEP


def make_chain(
    path: Path,
    traders: int,
    funds: int,
    fund: int,
    liquidation: dict[str, int] | None = None,
    stale_after_blocks: int = 1_000_000,
    funding: dict[str, int] | None = None,
) -> Chain:
    state = default_exchange_app_state()
    state["oracle"] = {"max_vote_age_blocks": 3, "stale_after_blocks": stale_after_blocks}
    if liquidation is not None:
        state["liquidation"] = {**LiquidationParams().to_json(), **liquidation}
    if funding is not None:
        state["funding"] = {**state["funding"], **funding}
    balances = {trader(i).address: funds for i in range(traders)}
    balances[MAKER.address] = 100_000_000 * USD
    balances[LIQUIDATOR.address] = 1_000 * USD
    if fund:
        balances[INSURANCE_FUND] = fund
    return Chain(path, balances, app_state=state, validators=[ValidatorUpdate(VALIDATOR.public_key.raw, 10)])


def run(chain: Chain, txs: Sequence[bytes] = ()) -> FinalizeBlockResult:
    result = chain.run_block(list(txs))
    assert_ok(result.tx_results)
    return result


def tx(chain: Chain, signer: PrivateKey, *actions: Action) -> bytes:
    return chain.tx(signer, *actions)


def open_pairs(chain: Chain, longs: dict[int, int], shorts: dict[int, int], price: int = usd(65_000)) -> None:
    """Open the given long and short sizes (trader index -> base quantums) against each other: the
    shorts rest post-only sells, the longs take them (sizes must sum to the same total)."""
    assert sum(longs.values()) == sum(shorts.values())
    sells = [tx(chain, trader(i), _order(SELL, size, price, POST_ONLY)) for i, size in shorts.items()]
    buys = [tx(chain, trader(i), _order(BUY, size, price, IOC)) for i, size in longs.items()]
    run(chain, sells + buys)
    for i, size in longs.items():
        assert position(chain, trader(i)).size == size
    for i, size in shorts.items():
        assert position(chain, trader(i)).size == -size


def _order(side: int, size: int, price: int, tif: int, market: int = BTC) -> Action:
    return PlaceOrder(market, side, size, price, tif)


def position(chain: Chain, who: PrivateKey | Address, market: int = BTC) -> Position:
    address = who if isinstance(who, Address) else who.address
    return load_position(chain.app._committed, address, market)


def crash(chain: Chain, price: int, market: int = BTC) -> FinalizeBlockResult:
    return run(chain, [tx(chain, VALIDATOR, OracleVote(((market, price),)))])


def events(result: FinalizeBlockResult, kind: str) -> list[dict[str, str]]:
    return [attrs(e) for e in result.events if e.type == kind]


def tx_events(result: FinalizeBlockResult, kind: str) -> list[dict[str, str]]:
    out: list[Event] = [e for r in result.tx_results for e in r.events if e.type == kind]
    return [attrs(e) for e in out]


def value_of(chain: Chain, who: Address) -> int:
    committed = chain.app._committed
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=False)
    return account_health(committed, ctx, who.raw).value


def liquidatable(chain: Chain, who: Address) -> bool:
    committed = chain.app._committed
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=False)
    return account_health(committed, ctx, who.raw).liquidatable


def settle_all(chain: Chain, max_blocks: int = 80) -> list[FinalizeBlockResult]:
    """Empty blocks until the queue is empty and no liquidation event happens."""
    results = []
    for _ in range(max_blocks):
        result = run(chain)
        results.append(result)
        busy = any(e.type.startswith(("liquidation", "deleveraged")) for e in result.events)
        if not busy and not load_queue(chain.app._committed):
            return results
    raise AssertionError("liquidations did not resolve")


def leverages(count: int, lo_tenths: int, hi_tenths: int) -> list[int]:
    """`count` leverages in tenths spread over [lo, hi]."""
    return [lo_tenths + (hi_tenths - lo_tenths) * i // max(1, count - 1) for i in range(count)]


FUNDS = 10_000 * USD


def leveraged_book(chain: Chain, longs: int, shorts: int) -> tuple[dict[int, int], dict[int, int]]:
    """Longs 0..longs-1 and shorts longs.. (as many), each at 2x to 5x of its $10,000."""
    assert longs == shorts
    long_sizes = {i: btc_size_for(10_000 * lev // 10) for i, lev in enumerate(leverages(longs, 20, 50))}
    short_sizes = {longs + i: size for i, size in long_sizes.items()}
    open_pairs(chain, long_sizes, short_sizes)
    return long_sizes, short_sizes


# -- the crash with a deep book --------------------------------------------------------------------


def test_a_30_percent_crash_with_a_deep_book(tmp_path: Path) -> None:
    longs, shorts = 150, 150
    chain = make_chain(tmp_path / "db", longs + shorts, FUNDS, fund=2_000_000 * USD)
    long_sizes, _ = leveraged_book(chain, longs, shorts)
    # the maker bids for every long at $45,400, below the crash price
    run(chain, [tx(chain, MAKER, _order(BUY, sum(long_sizes.values()), usd(45_400), POST_ONLY))])
    fund_before = chain.balance(INSURANCE_FUND)
    result = crash(chain, usd(45_500))
    started = events(result, "liquidation_started")
    assert started, "the crash liquidates in its own block"
    results = [result, *settle_all(chain)]
    liquidated = {e["account"] for r in results for e in events(r, "liquidation_started")}
    fills = [e for r in results for e in events(r, "liquidation_filled")]
    takeovers = [e for r in results for e in events(r, "liquidation_taken_over")]
    assert fills and takeovers  # solvent accounts sold on the book, bankrupt ones were taken over
    assert not [e for r in results for e in events(r, "deleveraged")]
    # every account is healthy now, and exactly the over-levered longs were liquidated
    for i in range(longs + shorts):
        assert not liquidatable(chain, trader(i).address)
        assert value_of(chain, trader(i).address) >= 0
    expected = {trader(i).address.raw.hex() for i, size in long_sizes.items() if _under_at(size, 45_500)}
    assert liquidated == expected
    # the fund received exactly the fees, and holds what it took over less what it has unwound so far
    assert chain.balance(INSURANCE_FUND) == fund_before + sum(int(e["fee"]) for e in fills)
    taken = sum(int(e["size"]) for e in takeovers)
    unwound = sum(int(e["size"]) for r in results for e in events(r, "insurance_unwound"))
    assert 0 < unwound < taken
    assert position(chain, INSURANCE_FUND).size == taken - unwound
    assert chain.app.risk_stats.liquidations >= len(liquidated)
    assert chain.app.risk_stats.takeovers == len(takeovers)
    chain.close()


def _under_at(size: int, price_usd: int) -> bool:
    """Whether a long of `size` bought at $65,000 (paying the 0.05% taker fee) with $10,000 is under
    its maintenance requirement at `price_usd`."""
    notional_open = size * 65_000 * 100_000 // 10**9  # quote quantums at the fill
    fee = -(-notional_open * 500 // 10**6)
    mark = size * price_usd * 100_000 // 10**9
    value = FUNDS - notional_open - fee + mark
    maintenance = -(-mark * 30_000 // 10**6)
    return value < maintenance


# -- the crash with a thin book: takeover, then deleveraging ------------------------------------------


def test_a_30_percent_crash_with_a_thin_book_takes_over_then_deleverages(tmp_path: Path) -> None:
    longs, shorts = 120, 120
    chain = make_chain(tmp_path / "db", longs + shorts, FUNDS, fund=20_000 * USD)
    leveraged_book(chain, longs, shorts)
    result = crash(chain, usd(45_500))
    results = [result, *settle_all(chain)]
    takeovers = [e for r in results for e in events(r, "liquidation_taken_over")]
    deleveraged = [e for r in results for e in events(r, "deleveraged")]
    assert takeovers, "the fund takes over while it can"
    assert deleveraged, "and deleveraging follows once it cannot"
    assert not [e for r in results for e in events(r, "liquidation_filled")]  # no bids at all
    # bankrupt accounts come first (lowest value first), so the fund's first takeovers are the
    # worst; once it could not pay, it only took over what it could
    for i in range(longs + shorts):
        assert not liquidatable(chain, trader(i).address)
    # counterparties are shorts only; nobody without an open position paid
    shorts_hex = {trader(i).address.raw.hex() for i in range(longs, longs + shorts)}
    assert {e["counterparty"] for e in deleveraged} <= shorts_hex
    assert chain.app.risk_stats.deleveragings > 0
    chain.close()


def test_deleveraging_ranks_by_profit_then_leverage_then_address(tmp_path: Path) -> None:
    # four shorts opened at different prices (different profits after the crash) and one long
    chain = make_chain(tmp_path / "db", 6, FUNDS, fund=0)
    size = btc_size_for(40_000)
    quarter = size // 4 // STEP * STEP
    shorts = {1: quarter, 2: quarter, 3: quarter, 4: size - 3 * quarter}
    # shorts 1 and 2 sell at $65,000; 3 at $66,000 (more profit); 4 at $64,000 (less)
    run(chain, [tx(chain, trader(1), _order(SELL, quarter, usd(65_000), POST_ONLY))])
    run(chain, [tx(chain, trader(2), _order(SELL, quarter, usd(65_000), POST_ONLY))])
    run(chain, [tx(chain, trader(3), _order(SELL, quarter, usd(66_000), POST_ONLY))])
    run(chain, [tx(chain, trader(4), _order(SELL, shorts[4], usd(64_000), POST_ONLY))])
    # trader 2 then moves most of its collateral away: same profit as 1, higher leverage
    run(chain, [tx(chain, trader(2), Transfer(trader(5).address, 5_000 * USD))])
    run(chain, [tx(chain, trader(0), _order(BUY, size, usd(66_000), IOC))])
    before = {i: (position(chain, trader(i)), value_of(chain, trader(i).address)) for i in shorts}
    result = crash(chain, usd(45_500))
    deleveraged = events(result, "deleveraged")
    assert deleveraged and {e["account"] for e in deleveraged} == {trader(0).address.raw.hex()}
    order = [e["counterparty"] for e in deleveraged]

    def key(i: int) -> tuple[int, int, bytes]:
        p, _ = before[i]
        mark = value_floor(BTC_MARKET, p.size, usd(45_500))
        profit = mark + p.quote
        value = value_of_after_move(before[i][1], p, usd(45_500))
        leverage = abs(mark) * 10**6 // value if value > 0 else 2**63 - 1
        return (-profit, -leverage, trader(i).address.raw)

    expected = sorted(shorts, key=key)
    assert order == [trader(i).address.raw.hex() for i in expected]
    assert expected[0] == 3 and expected[-1] == 4
    assert expected.index(2) < expected.index(1)  # same profit, higher leverage first
    assert sum(int(e["size"]) for e in deleveraged) == size  # the whole long, at once
    assert position(chain, trader(0)).size == 0
    assert value_of(chain, trader(0).address) == 0  # exactly the bankruptcy price
    chain.close()


def value_of_after_move(value_at_old: int, p: Position, new_price: int) -> int:
    old = value_floor(BTC_MARKET, p.size, usd(65_000))
    return value_at_old - old + value_floor(BTC_MARKET, p.size, new_price)


# -- the action ----------------------------------------------------------------------------------------


@pytest.fixture
def two_underwater(tmp_path: Path) -> Iterator[Chain]:
    """Traders 0 and 1 long at 3.2x (liquidatable, solvent after the crash), 2 and 3 short; a work
    budget of one operation (one liquidation per block: the pass always makes one), a deep bid."""
    chain = make_chain(tmp_path / "db", 4, FUNDS, fund=0, liquidation={"work_budget": 1})
    size = btc_size_for(32_000)
    open_pairs(chain, {0: size, 1: size}, {2: size, 3: size})
    run(chain, [tx(chain, MAKER, _order(BUY, 2 * size, usd(45_400), POST_ONLY))])
    yield chain
    chain.close()


def test_the_liquidate_action_pays_its_sender(two_underwater: Chain) -> None:
    chain = two_underwater
    not_yet = chain.run_block([tx(chain, LIQUIDATOR, Liquidate(trader(0).address))]).tx_results[0]
    assert not_yet.code == Code.NOT_LIQUIDATABLE
    result = crash(chain, usd(46_000))  # just under water: a part restores health
    (first,) = {e["account"] for e in events(result, "liquidation_started")}  # the budget: one a block
    (queued,) = [a.raw for a in (trader(0).address, trader(1).address) if a.raw.hex() != first]
    assert queued in load_queue(chain.app._committed)
    before = chain.balance(LIQUIDATOR.address)
    result = run(chain, [tx(chain, LIQUIDATOR, Liquidate(Address(queued)))])
    (filled,) = tx_events(result, "liquidation_filled")
    assert filled["account"] == queued.hex() and filled["liquidator"] == LIQUIDATOR.address.raw.hex()
    reward = int(filled["reward"])
    (last_height, record), *_ = recent(chain.app._committed, 10)  # the action's step is kept too
    assert (last_height, record.kind, record.account) == (chain.height, "liquidated", queued)
    assert (record.size, record.fee) == (-int(filled["size"]), int(filled["fee"]))
    assert reward == int(filled["notional"]) * 5_000 // 10**6 > 0
    assert chain.balance(LIQUIDATOR.address) == before + reward - standard_fee([Liquidate(Address(queued))])
    # the pass does not liquidate the same account again in that block beyond its per-block part
    assert int(filled["size"]) <= btc_size_for(32_000)


def test_the_liquidate_action_refuses_healthy_accounts_and_stale_markets(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db", 4, FUNDS, fund=0, stale_after_blocks=5)
    size = btc_size_for(40_000)
    open_pairs(chain, {0: size}, {1: size})
    committed = chain.app._committed
    healthy = StateView(committed)
    ctx = ExchangeContext(chain.height + 1)
    with pytest.raises(Exception) as refused:
        apply_liquidate(healthy, LIQUIDATOR.address, Liquidate(trader(0).address), ctx)
    assert getattr(refused.value, "code", None) == Code.NOT_LIQUIDATABLE
    # the price crashes (written directly: a fresh price, then one that has gone stale)
    fresh = StateView(committed)
    store_price(fresh, BTC, OraclePrice(usd(45_500), chain.height))
    validation = ExchangeContext(chain.height + 1)
    assert apply_liquidate(fresh, LIQUIDATOR.address, Liquidate(trader(0).address), validation) == []
    stale = StateView(committed)
    store_price(stale, BTC, OraclePrice(usd(45_500), chain.height))
    later = ExchangeContext(chain.height + 10)  # more than stale_after_blocks later
    with pytest.raises(Exception) as halted:
        apply_liquidate(stale, LIQUIDATOR.address, Liquidate(trader(0).address), later)
    assert getattr(halted.value, "code", None) == Code.LIQUIDATION_HALTED
    # through check_tx: a healthy account is refused
    raw = chain.tx(LIQUIDATOR, Liquidate(trader(0).address))
    assert chain.app.check_tx(raw, CheckTxKind.NEW).code == Code.NOT_LIQUIDATABLE
    chain.close()


def test_a_stale_market_waits_unless_the_account_is_bankrupt(tmp_path: Path) -> None:
    fund = 1_000_000 * USD
    chain = make_chain(tmp_path / "db", 4, FUNDS, fund=fund, stale_after_blocks=2)
    bankrupt_size, solvent_size = btc_size_for(40_000), btc_size_for(32_000)
    open_pairs(chain, {0: bankrupt_size, 2: solvent_size}, {1: bankrupt_size, 3: solvent_size})
    run(chain, [tx(chain, MAKER, _order(BUY, 10 * bankrupt_size, usd(45_400), POST_ONLY))])
    for _ in range(3):
        run(chain)
    # the market is stale (its last fresh price: 45,500); the pass finds both longs under water
    view = StateView(chain.app._committed)
    store_price(view, BTC, OraclePrice(usd(45_500), 0))
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=True)
    assert ctx.is_stale(view, BTC)
    solvent = account_health(view, ctx, trader(2).address.raw)
    assert solvent.liquidatable and solvent.value >= 0
    broke = account_health(view, ctx, trader(0).address.raw)
    assert broke.value < 0
    found = liquidation_pass(view, ctx, chain.height + 1)
    # no book order on a stale market: the maker's bid is untouched
    assert not [e for e in found if e.type in ("order_filled", "liquidation_filled")]
    # the solvent one waits for a fresh price, queued
    assert load_position(view, trader(2).address, BTC).size == solvent_size
    assert trader(2).address.raw in load_queue(view)
    # the bankrupt one goes to the backstop at once: the fund takes the whole position over at
    # the bankruptcy price, and the account ends at exactly 0
    (taken,) = [attrs(e) for e in found if e.type == "liquidation_taken_over"]
    assert taken["account"] == trader(0).address.raw.hex() and int(taken["size"]) == bankrupt_size
    assert load_position(view, trader(0).address, BTC).size == 0
    assert account_health(view, ctx, trader(0).address.raw).value == 0
    assert load_position(view, INSURANCE_FUND, BTC).size == bankrupt_size
    assert int(taken["quote"]) == -(broke.value - value_floor(BTC_MARKET, bankrupt_size, usd(45_500)))
    chain.close()


def test_on_a_stale_market_the_fund_judges_at_the_haircut_price(tmp_path: Path) -> None:
    # a fund that can bear the position at the last fresh price but not 5% below it: deleveraging
    size = btc_size_for(40_000)
    chain = make_chain(tmp_path / "db", 4, FUNDS, fund=1, stale_after_blocks=2)
    open_pairs(chain, {0: size}, {1: size})
    for _ in range(3):
        run(chain)
    view = StateView(chain.app._committed)
    store_price(view, BTC, OraclePrice(usd(45_500), 0))
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=True)
    broke = account_health(view, ctx, trader(0).address.raw)
    fresh_value = broke.value  # what the fund's value would change by at the last fresh price
    haircut_price = usd(45_500) * (10**6 - LiquidationParams().stale_haircut_ppm) // 10**6
    haircut_value = (
        fresh_value
        + value_floor(BTC_MARKET, size, haircut_price)
        - value_floor(BTC_MARKET, size, usd(45_500))
    )
    assert haircut_value < fresh_value < 0
    # give the fund exactly enough to take it over at the fresh price, not at the haircut price
    maintenance = maintenance_requirement(BTC_MARKET, Position(size=size), haircut_price)
    fund_balance = maintenance - haircut_value - 1
    store_account(view, INSURANCE_FUND, load_account(view, INSURANCE_FUND).with_balance(fund_balance))
    found = liquidation_pass(view, ctx, chain.height + 1)
    assert not [e for e in found if e.type == "liquidation_taken_over"]
    (deleveraged,) = [attrs(e) for e in found if e.type == "deleveraged"]
    assert deleveraged["counterparty"] == trader(1).address.raw.hex()
    assert load_position(view, trader(0).address, BTC).size == 0
    chain.close()


# -- caps and the queue ---------------------------------------------------------------------------------


def test_the_budget_carries_the_rest_furthest_under_water_first(tmp_path: Path) -> None:
    chain = make_chain(
        tmp_path / "db", 20, FUNDS, fund=0,
        liquidation={"work_budget": 1, "max_position_fraction_ppm": 1_000_000},
    )  # fmt: skip
    # longs 0..9 from 3.36x to 3.585x (each liquidatable after the crash, none bankrupt), shorts 10..19
    long_sizes = {i: btc_size_for(33_600 + 250 * i) for i in range(10)}
    open_pairs(chain, long_sizes, {10 + i: size for i, size in long_sizes.items()})
    run(chain, [tx(chain, MAKER, _order(BUY, 10 * long_sizes[9], usd(45_000), POST_ONLY))])
    result = crash(chain, usd(47_000))
    order = [e["account"] for e in events(result, "liquidation_started")]
    queue = load_queue(chain.app._committed)
    for _ in range(12):
        result = run(chain)
        order.extend(e["account"] for e in events(result, "liquidation_started"))
    # one account a block (a budget smaller than detection still makes progress), the most
    # levered (lowest value per maintenance requirement) first
    assert order == [trader(i).address.raw.hex() for i in reversed(range(10))]
    # the nine left over lead the queue in that order (the owners the pass changed follow)
    assert queue[:9] == [trader(i).address.raw for i in reversed(range(9))]
    for i in range(10):
        assert position(chain, trader(i)).size == 0
    chain.close()


def test_a_step_closes_what_restores_health_at_least(tmp_path: Path) -> None:
    # default parameters (10% of a position per block): a 3.55x long after a 27.7% fall (value under
    # 1.5% of its notional) closes all of it in the crash block (no part restores its health); a
    # 3.36x long just under water closes the least part whose close at the oracle price, less its
    # 1.5% fee, would restore it (more than the 10% slice here), found by trying every step
    chain = make_chain(tmp_path / "db", 4, FUNDS * 4, fund=0)
    deep, slight = btc_size_for(142_000), btc_size_for(134_400)
    open_pairs(chain, {0: deep, 1: slight}, {2: deep, 3: slight})
    run(chain, [tx(chain, MAKER, _order(BUY, 10 * deep, usd(46_900), POST_ONLY))])
    price = usd(47_000)
    view = StateView(chain.app._committed)
    store_price(view, BTC, OraclePrice(price, chain.height + 1))
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=False)
    before = account_health(view, ctx, trader(1).address.raw)
    assert before.liquidatable and before.value > 0

    def restores(part: int) -> bool:
        fee = -(-value_floor(BTC_MARKET, part, price) * 15_000 // 10**6)
        rest = maintenance_requirement(BTC_MARKET, Position(size=slight - part), price)
        return before.value - fee >= rest

    least = next(k * STEP for k in range(1, slight // STEP + 1) if restores(k * STEP))
    slice_size = -(-slight // 10 // STEP) * STEP
    assert least > slice_size
    result = crash(chain, price)
    closed = {e["account"]: int(e["size"]) for e in events(result, "liquidation_filled")}
    assert closed == {trader(0).address.raw.hex(): deep, trader(1).address.raw.hex(): least}
    assert position(chain, trader(0)).size == 0
    assert position(chain, trader(1)).size == slight - least
    chain.close()


def test_carried_accounts_go_before_new_ones(tmp_path: Path) -> None:
    # a budget of one step a block: the BTC long left over from the BTC crash goes before an ETH
    # long that the next block's ETH crash puts further under water
    chain = make_chain(
        tmp_path / "db",
        6,
        FUNDS,
        fund=0,
        liquidation={"work_budget": 1, "max_position_fraction_ppm": 1_000_000},
    )
    a, b = btc_size_for(35_850), btc_size_for(33_600)
    open_pairs(chain, {0: a, 1: b}, {2: a, 3: b})
    eth_size, eth_price = 14_285 * 10**6, 3_500_000_000
    run(chain, [tx(chain, trader(5), _order(SELL, eth_size, eth_price, POST_ONLY, ETH))])
    run(chain, [tx(chain, trader(4), _order(BUY, eth_size, eth_price, IOC, ETH))])
    run(chain, [tx(chain, MAKER, _order(BUY, 10 * a, usd(46_900), POST_ONLY))])
    first = crash(chain, usd(47_000))
    assert [e["account"] for e in events(first, "liquidation_started")] == [trader(0).address.raw.hex()]
    assert load_queue(chain.app._committed)[0] == trader(1).address.raw  # carried over
    fallen = 2_870_000_000
    view = StateView(chain.app._committed)
    store_price(view, ETH, OraclePrice(fallen, chain.height + 1))
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=False)
    carried, new = (account_health(view, ctx, trader(i).address.raw) for i in (1, 4))
    assert carried.liquidatable and new.liquidatable and new.value >= 0
    assert new.value * carried.maintenance < carried.value * new.maintenance  # the new one is further under
    second = crash(chain, fallen, ETH)
    assert [e["account"] for e in events(second, "liquidation_started")] == [trader(1).address.raw.hex()]
    assert load_queue(chain.app._committed)[0] == trader(4).address.raw
    chain.close()


def test_the_default_budget_clears_every_account_in_the_crash_block(tmp_path: Path) -> None:
    chain = make_chain(
        tmp_path / "db", 20, FUNDS, fund=0, liquidation={"max_position_fraction_ppm": 1_000_000}
    )
    long_sizes = {i: btc_size_for(33_600 + 250 * i) for i in range(10)}
    open_pairs(chain, long_sizes, {10 + i: size for i, size in long_sizes.items()})
    run(chain, [tx(chain, MAKER, _order(BUY, 10 * long_sizes[9], usd(45_000), POST_ONLY))])
    result = crash(chain, usd(47_000))
    assert len(events(result, "liquidation_started")) == 10
    for i in range(10):
        assert position(chain, trader(i)).size == 0
    # what each step moved is kept for /liquidations: each account's records add up to its whole
    # position; those closed through the book carry the fill's quote and fee, the rest went to the
    # shorts by deleveraging (the fund is empty, the bid too low for the least levered)
    kept = recent(chain.app._committed, 100)
    assert {height for height, _ in kept} == {chain.height}
    moved: dict[bytes, int] = {}
    for _, r in kept:
        moved[r.account] = moved.get(r.account, 0) + r.size
    assert moved == {trader(i).address.raw: -size for i, size in long_sizes.items()}
    fills = {e["account"]: e for e in events(result, "liquidation_filled")}
    shorts = {trader(10 + i).address.raw for i in range(10)}
    for _, r in kept:
        assert r.market_id == BTC and r.kind in ("liquidated", "deleveraged")
        if r.kind == "liquidated":
            fill = fills[r.account.hex()]
            assert r.counterparty == b"" and (r.quote, r.fee) == (int(fill["notional"]), int(fill["fee"]))
        else:
            assert r.counterparty in shorts and r.fee == 0
    chain.close()


def test_the_passes_counterparty_cache_equals_a_fresh_scan_after_any_write(tmp_path: Path) -> None:
    # shorts 10..19 against longs 0..9; the cache of the short side is built, then balances and
    # positions change the ways the pass changes them (an account record put, a position record put
    # as fills do, a position stored as transfers do, a position closed): each later read of the
    # cache equals a fresh scan
    chain = make_chain(tmp_path / "db", 20, FUNDS, fund=0)
    sizes = {i: btc_size_for(20_000 + 1_000 * i) for i in range(10)}
    open_pairs(chain, sizes, {10 + i: size for i, size in sizes.items()})
    view = CountingView(chain.app._committed)
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=True)
    price = usd(60_000)
    cache = Counterparties(view, ctx)

    def fresh() -> list[Ranked]:
        return sorted(_holders(view, ctx, BTC_MARKET, price, False).values())

    assert list(cache.of(BTC_MARKET, price, False)) == fresh()
    rich = trader(17).address
    store_account(view, rich, load_account(view, rich).with_balance(50_000 * USD))
    assert list(cache.of(BTC_MARKET, price, False)) == fresh()
    key = schema.position_key(trader(12).address.raw, BTC)
    view.put_record(key, load_position(view, trader(12).address, BTC).with_fill(0, 9_000 * USD))
    assert list(cache.of(BTC_MARKET, price, False)) == fresh()
    closed = trader(15).address
    store_position(view, closed, BTC, load_position(view, closed, BTC).with_fill(sizes[5], 0))
    ranked = list(cache.of(BTC_MARKET, price, False))
    assert ranked == fresh() and closed.raw not in {entry[0][2] for entry in ranked}
    assert ranked[0][0][2] == trader(12).address.raw  # the most profitable now
    chain.close()


# -- detection reads only the candidates -----------------------------------------------------------------


def test_detection_reads_no_account_outside_its_candidates(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db", 40, FUNDS, fund=0)
    # BTC: 0..9 long at 2x, 3.2x for 0 and 1; 10..19 short. ETH: 20..29 long, 30..39 short.
    btc_longs = {i: btc_size_for(20_000 if i > 1 else 32_000) for i in range(10)}
    btc_shorts = {10 + i: size for i, size in enumerate(btc_longs.values())}
    open_pairs(chain, btc_longs, btc_shorts)
    eth = 10**9  # base quantums of 1 ETH
    sells = [
        tx(chain, trader(i), _order(SELL, eth * 5, 3_500_000_000, POST_ONLY, ETH)) for i in range(30, 40)
    ]
    buys = [tx(chain, trader(i), _order(BUY, eth * 5, 3_500_000_000, IOC, ETH)) for i in range(20, 30)]
    run(chain, sells + buys)
    run(chain)  # a block without trades: the bands of every holder are known now
    committed = chain.app._committed

    def pass_reads(price: int) -> tuple[set[bytes], set[bytes]]:
        view = StateView(committed)
        store_price(view, BTC, OraclePrice(price, chain.height + 1))
        ctx = ExchangeContext(chain.height + 1, chain.app.books, live=False)
        found = set(candidates(view, ctx))
        for owner in found:
            account_health(view, ctx, owner)
        reads = view.read_set
        owners = {
            k[len(schema.APP_ACCOUNT_PREFIX) :] for k in reads if k.startswith(schema.APP_ACCOUNT_PREFIX)
        }
        owners |= {k[6:26] for k in reads if k.startswith(schema.APP_POSITION_PREFIX)}
        return found, owners

    # a 1% move crosses no band: no account or position is read at all
    found, read = pass_reads(usd(64_350))
    assert found == set() and read == set()
    # a 30% crash crosses the bands of the two 3.2x longs only (the 2x longs and the shorts stay
    # inside theirs); ETH holders are never looked at
    found, read = pass_reads(usd(45_500))
    assert found == {trader(0).address.raw, trader(1).address.raw}
    assert read <= found
    assert load_price(committed, BTC) is not None
    chain.close()


# -- funding ------------------------------------------------------------------------------------------

# one funding tick a minute of block time, longs paying shorts 2.5% of the notional per tick
HEAVY_FUNDING = {
    "interval_seconds": 60,
    "rate_period_seconds": 60,  # each tick pays the whole rate
    "interest_ppm": 25_000,
    "clamp_factor_ppm": 1_250_000,  # 125% of IMF - MMF (2%): 25,000 ppm
}


def tick(chain: Chain) -> FinalizeBlockResult:
    """An empty block 61 s after the last: the funding tick happens at its end, before the
    liquidation pass."""
    result = run_at(chain, chain.time + 61 * 10**9)
    assert events(result, "funding"), "the block ticks"
    return result


def run_at(chain: Chain, time: int, txs: Sequence[bytes] = ()) -> FinalizeBlockResult:
    result = chain.run_block(list(txs), time)
    assert_ok(result.tx_results)
    return result


def _heavy_funding_chain(path: Path, fund: int) -> tuple[Chain, dict[int, int]]:
    """A 19x long (trader 0: value ~5.2% of the notional, maintenance 3%) and a 2x long (1)
    against two shorts (2 and 3), the book empty, the bands of all four known."""
    chain = make_chain(path, 4, FUNDS, fund=fund, funding=HEAVY_FUNDING)
    crash(chain, usd(65_000))  # a fresh oracle price at the opening price
    longs = {0: btc_size_for(190_000), 1: btc_size_for(20_000)}
    open_pairs(chain, longs, {2: longs[0], 3: longs[1]})
    run(chain)  # a block without a move or trade: every holder's band is known
    return chain, longs


def test_pending_funding_counts_and_a_funding_tick_alone_liquidates(tmp_path: Path) -> None:
    chain, _ = _heavy_funding_chain(tmp_path / "db", fund=1_000_000 * USD)
    assert not liquidatable(chain, trader(0).address)
    # the tick's figures: the funding index moves, no position is settled, no price moves
    view = StateView(chain.app._committed)
    ctx = ExchangeContext(chain.height + 1, chain.app.books, live=True)
    funding_end_block(view, ctx, chain.height + 1, chain.time + 61 * 10**9)
    assert load_position(view, trader(0).address, BTC) == position(chain, trader(0))
    health = account_health(view, ctx, trader(0).address.raw)
    assert health.liquidatable, "the pending funding (2.5% of the notional) counts"
    # the funding change alone brings the 19x long out of its band: the only candidate (the 2x
    # long keeps its band, the shorts receive)
    assert candidates(view, ctx) == [trader(0).address.raw]
    # the same in a block: the tick, then the pass liquidates the long in that block
    result = tick(chain)
    (started,) = events(result, "liquidation_started")
    assert started["account"] == trader(0).address.raw.hex()
    assert [e["account"] for e in events(result, "liquidation_taken_over")] == [started["account"]]
    assert position(chain, trader(0)).size == 0
    assert value_of(chain, trader(0).address) == 0  # settled funding, then the bankruptcy price
    chain.close()


def test_takeover_and_deleveraging_after_a_funding_tick_keep_the_funding_pool_exact(tmp_path: Path) -> None:
    # a thin book: the fund can take over one bankrupt long, the other is deleveraged against the
    # shorts; every position has funding pending from the tick when the crash comes
    chain = make_chain(tmp_path / "db", 4, FUNDS, fund=3_000 * USD, funding={"interval_seconds": 60})
    crash(chain, usd(65_000))
    size = btc_size_for(40_000)
    open_pairs(chain, {0: size, 1: size}, {2: size, 3: size})
    tick(chain)
    assert all(position(chain, trader(i)).funding_index == 0 for i in range(4))
    result = crash(chain, usd(45_500))
    assert events(result, "liquidation_taken_over") and events(result, "deleveraged")
    # Chain.commit checked the funding pool against every unsettled position after the block;
    # the liquidated longs were settled before their positions moved
    assert position(chain, trader(0)).size == position(chain, trader(1)).size == 0
    assert value_of(chain, trader(0).address) == value_of(chain, trader(1).address) == 0
    chain.close()


def test_a_liquidation_cancels_the_accounts_resting_triggers(tmp_path: Path) -> None:
    chain = make_chain(tmp_path / "db", 2, FUNDS, fund=1_000_000 * USD)
    size = btc_size_for(32_000)
    open_pairs(chain, {0: size}, {1: size})
    # a stop-loss below the crash price and a take-profit above: neither fires in the crash
    stop = PlaceTrigger(BTC, SELL, size, usd(40_000), 0, 0, 1, 0)
    take = PlaceTrigger(BTC, SELL, size, usd(90_000), 0, 1, 1, 7)
    run(chain, [tx(chain, trader(0), stop, take)])
    assert position(chain, trader(0)).open_orders == 2
    result = crash(chain, usd(45_500))
    assert events(result, "liquidation_started")
    cancelled = events(result, "trigger_cancelled")
    assert [(e["owner"], e["reason"]) for e in cancelled] == [
        (trader(0).address.raw.hex(), "liquidation")
    ] * 2
    assert load_triggers(chain.app._committed, BTC) == []
    assert chain.app.books.triggers(BTC).owner_triggers(trader(0).address.raw) == []
    assert position(chain, trader(0)).open_orders == 0
    assert_books_match_state(chain)
    chain.close()


def test_a_genesis_with_the_former_count_cap_is_refused_naming_the_budget() -> None:
    state = default_exchange_app_state()
    state["liquidation"] = {"max_liquidations_per_block": 50}
    with pytest.raises(
        AppStateError, match=r"app_state\.liquidation\.max_liquidations_per_block: replaced by work_budget"
    ):
        parse_app_state(state)
    state["liquidation"] = {"work_budget": 0}
    with pytest.raises(AppStateError, match=r"app_state\.liquidation\.work_budget: must be within \[1, "):
        parse_app_state(state)
    state["liquidation"] = {"stale_haircut_ppm": 1_000_001}
    with pytest.raises(AppStateError, match=r"app_state\.liquidation\.stale_haircut_ppm: must be within"):
        parse_app_state(state)
    assert parse_app_state({"liquidation": {"work_budget": 7}}).liquidation.work_budget == 7
