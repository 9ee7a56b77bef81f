"""The speed-ups of the liquidation pass's account checks for option holders (issue 17's options
liquidation bench) change no figure and no count: `account_health` reads exactly what the plain
`load_account` / `owner_markets` / `load_position` reads would (so the pass's work budget counts the
same) and returns the same figures, the shared scenario grid always matches the params asked for,
and a portfolio-margined holder's bands are recorded unknown whatever they were."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from execution.accounts import load_account
from execution.app import ExchangeApp
from execution.exchange.context import ExchangeContext
from execution.markets import default_markets
from execution.options.portfolio import PortfolioParams
from execution.positions import margin
from execution.positions.funding_index import settled
from execution.positions.holders import HOLDER_UNKNOWN, set_band
from execution.positions.position import Position, load_position, owner_markets, store_position
from execution.risk.liquidation import Health, Marks, _refresh_bands, account_health
from execution.state import CommittedState, CountingView, StateReader, StateView
from node import bench_options_liquidation as bench
from primitives.batch_verify import BatchVerifier
from primitives.hashing import sha256
from primitives.keys import Address, PrivateKey
from storage import schema
from storage.db import Database
from tests.execution.test_state import DictState

ACCOUNTS = 40


def _reference_health(view: StateReader, ctx: ExchangeContext, owner: bytes) -> Health:
    """`account_health` as written before the speed-ups: the plain loaders, every read counted."""
    address = Address(owner)
    value = load_account(view, address).balance
    maintenance = 0
    options = False
    held = []
    for market_id in owner_markets(view, owner):
        market = ctx.market(view, market_id)
        position = load_position(view, address, market_id)
        if position.is_empty:
            continue
        position = settled(position, ctx.funding_index(view, market.market_id))
        price = ctx.price(view, market.market_id)
        value += margin.position_value(market, position, price)
        maintenance += margin.maintenance_requirement(market, position, price)
        held.append((market, position, price))
        options = options or market.option is not None
    if not options:
        return Health(owner, value, maintenance, held)
    maintenance = margin.requirements(held, view, lambda market_id: ctx.price(view, market_id))[1]
    return Health(owner, value, maintenance, held, tuple(margin.portfolio_groups(held)))


@pytest.fixture(scope="module")
def option_chain() -> Iterator[tuple[Database, ExchangeApp]]:
    """The options liquidation bench's state: short calls and puts, a third delta-hedged, the
    maker holding the other side of all of them."""
    with tempfile.TemporaryDirectory() as tmp:
        bench._build(Path(tmp) / "db", ACCOUNTS, 3)
        db = Database(Path(tmp) / "db")
        app = ExchangeApp(db, bench.CHAIN_ID, BatchVerifier(workers=1))
        try:
            yield db, app
        finally:
            db.close()


def test_account_health_reads_and_figures_are_the_plain_loaders(
    option_chain: tuple[Database, ExchangeApp],
) -> None:
    db, app = option_chain
    committed = CommittedState(db)
    maker = PrivateKey.from_seed(sha256(b"bench options liquidation maker")).address.raw
    owners = [bench._address(i).raw for i in range(ACCOUNTS)] + [maker, b"\x00" * 20]
    for _ in range(2):  # the second time every record's bytes are in the decode memo
        for owner in owners:
            fast, slow = CountingView(StateView(committed)), CountingView(StateView(committed))
            got = account_health(fast, ExchangeContext(2, app.books, live=True), owner)
            want = _reference_health(slow, ExchangeContext(2, app.books, live=True), owner)
            assert (got.value, got.maintenance, got.held, got.portfolio) == (
                want.value,
                want.maintenance,
                want.held,
                want.portfolio,
            )
            assert fast.ops == slow.ops, "the pass's work budget counts the same operations"
            assert fast._reads == slow._reads
    assert (
        sum(
            1
            for o in owners[:ACCOUNTS]
            if account_health(committed, ExchangeContext(2, app.books), o).portfolio
        )
        == ACCOUNTS
    )


def test_the_shared_grid_is_always_the_one_of_the_params_asked_for() -> None:
    default, other = PortfolioParams(), PortfolioParams(price_steps=3)
    assert margin._grid(default).params == default
    assert margin._grid(other).params == other, "a grid of other params is never returned"
    equal = PortfolioParams()
    assert margin._grid(equal) is margin._grid(default), "equal params share one grid"
    assert margin._grid(default).params == default


def test_a_portfolio_margined_holder_s_known_band_becomes_unknown() -> None:
    btc = default_markets()[0]
    owner = Address(b"\x07" * 20)
    view = StateView(DictState({}))
    store_position(view, owner, btc.market_id, Position(size=10**8, quote=-(10**9)))
    set_band(view, btc.market_id, owner.raw, (10, 2**40), long=True, clock=0, rate=(1, 1))
    key = schema.holder_key(btc.market_id, owner.raw)
    assert view.get(key) != HOLDER_UNKNOWN
    health = Health(
        owner.raw, 10**9, 10**8, [(btc, Position(size=10**8), btc.initial_price)], (btc.market_id,)
    )
    ctx = ExchangeContext(2)
    _refresh_bands(view, ctx, health, Marks())
    assert view.get(key) == HOLDER_UNKNOWN
    assert (
        view.get(schema.APP_BAND_UNKNOWN_PREFIX + schema.market_id_bytes(btc.market_id) + owner.raw)
        is not None
    )
