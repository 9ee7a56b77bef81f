"""The holder index (`execution.positions.holders`): the sorted band edges give exactly the holders
a model of the bands says may be unhealthy, and the index keys always match the holder records."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from execution.positions.holders import HOLDER_UNKNOWN, crossed, index_holder, set_band
from execution.positions.position import Position
from execution.state import StateReader, StateView
from primitives import codec
from storage import schema
from tests.execution.test_state import DictState

MARKET = 7
MAX_PRICE = 2**63 - 1


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def assert_holder_index_consistent(state: StateReader) -> None:
    """Every holder record has exactly its index entry (the unknown marker, or the edge its band
    names, under the holder's market and ending with its owner), and every index entry belongs to
    a holder record that names it."""
    expected: set[bytes] = set()
    for key, raw in state.iterate(schema.APP_HOLDER_PREFIX):
        market_and_owner = key[len(schema.APP_HOLDER_PREFIX) :]
        if raw == HOLDER_UNKNOWN:
            expected.add(schema.APP_BAND_UNKNOWN_PREFIX + market_and_owner)
            continue
        edge = codec.field_bytes(codec.decode(raw), "holder band edge")
        market, owner = market_and_owner[: schema.MARKET_ID_SIZE], market_and_owner[schema.MARKET_ID_SIZE :]
        assert edge.startswith((schema.APP_BAND_LOW_PREFIX + market, schema.APP_BAND_HIGH_PREFIX + market))
        assert edge.endswith(owner)
        expected.add(edge)
    found = {
        key
        for prefix in (
            schema.APP_BAND_UNKNOWN_PREFIX,
            schema.APP_BAND_LOW_PREFIX,
            schema.APP_BAND_HIGH_PREFIX,
        )
        for key, _ in state.iterate(prefix)
    }
    assert found == expected


def assert_holders_match_positions(state: StateReader) -> None:
    """The holder records are exactly the (market, owner) pairs with a non-zero position."""
    holders = {key[len(schema.APP_HOLDER_PREFIX) :] for key, _ in state.iterate(schema.APP_HOLDER_PREFIX)}
    positions = set()
    for key, raw in state.iterate(schema.APP_POSITION_PREFIX):
        if Position.decode(raw).size:
            owner = key[len(schema.APP_POSITION_PREFIX) : len(schema.APP_POSITION_PREFIX) + schema.OWNER_SIZE]
            positions.add(schema.market_id_bytes(schema.market_id_from_position_key(key)) + owner)
    assert holders == positions


@dataclass(frozen=True, slots=True)
class Band:
    owner: bytes
    long: bool
    band: tuple[int, int] | None
    clock: int


def _model_crossed(bands: list[Band], price: int, up: int, down: int, n: int, d: int) -> set[bytes]:
    """The holders whose band no longer guarantees health, straight from the rule: a long's lo
    raised by ceil((up - its clock) * n / d), a short's hi lowered by ceil((down - its clock) *
    n / d); unknown bands always."""
    out = set()
    for b in bands:
        if b.band is None:
            out.add(b.owner)
            continue
        lo, hi = b.band
        if b.long:
            unhealthy = lo + _ceil_div((up - b.clock) * n, d) >= price
        else:
            unhealthy = hi - _ceil_div((down - b.clock) * n, d) <= price
        if unhealthy:
            out.add(b.owner)
    return out


prices = st.integers(1, 10**12)
holders = st.lists(
    st.tuples(
        st.booleans(),  # long
        st.one_of(st.none(), st.tuples(st.integers(0, 10**12), st.integers(0, 10**12))),
        st.integers(0, 10**9),  # how far behind the current clock the band was computed
    ),
    min_size=0,
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(
    holders=holders,
    price=prices,
    up=st.integers(0, 10**10),
    down=st.integers(0, 10**10),
    n=st.integers(1, 10**8),
    d=st.integers(1, 10**20),
)
def test_crossed_is_exactly_the_bands_that_no_longer_hold(
    holders: list[tuple[bool, tuple[int, int] | None, int]], price: int, up: int, down: int, n: int, d: int
) -> None:
    view = StateView(DictState({}))
    bands = []
    for i, (long, edges, behind) in enumerate(holders):
        owner = i.to_bytes(20, "big")
        clock = max(0, (up if long else down) - behind)
        band = None if edges is None else (min(edges), max(edges))
        index_holder(view, MARKET, owner, 0, 1 if long else -1)
        set_band(view, MARKET, owner, band, long=long, clock=clock, rate=(n, d))
        bands.append(Band(owner, long, band, clock))
    found = crossed(view, MARKET, price, up, down, (n, d))
    assert len(found) == len(set(found))
    assert set(found) == _model_crossed(bands, price, up, down, n, d)
    assert_holder_index_consistent(view)


def test_a_market_without_a_rate_crosses_every_holder() -> None:
    view = StateView(DictState({}))
    owners = [bytes([i]) * 20 for i in range(3)]
    for owner in owners:
        index_holder(view, MARKET, owner, 0, 5)
        set_band(view, MARKET, owner, (10, 20), long=True, clock=0, rate=None)
    assert crossed(view, MARKET, 15, 0, 0, None) == owners


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 4),  # owner
            st.sampled_from(["size", "band", "unknown"]),
            st.integers(-3, 3),  # a size, or a band's edge
            st.integers(0, 5),  # a clock
        ),
        max_size=40,
    )
)
def test_the_index_keys_follow_every_write(steps: list[tuple[int, str, int, int]]) -> None:
    """Positions opening, changing and closing (`index_holder`, as `store_position` calls it, with
    the size before known or not) and bands recorded (`set_band`) in any order leave no stale
    index entry and miss none."""
    view = StateView(DictState({}))
    sizes: dict[int, int] = {}
    for who, kind, value, clock in steps:
        owner = bytes([who + 1]) * 20
        before = sizes.get(who, 0)
        if kind == "size":
            index_holder(view, MARKET, owner, before if clock % 2 else None, value)
            sizes[who] = value
        elif before != 0:  # the pass records bands of holders only
            band = None if kind == "unknown" else (abs(value) * 10, abs(value) * 10 + 5 + clock)
            set_band(view, MARKET, owner, band, long=before > 0, clock=clock, rate=(3, 7))
        assert_holder_index_consistent(view)
    holders = {key[-20:] for key, _ in view.iterate(schema.holder_prefix(MARKET))}
    assert holders == {bytes([who + 1]) * 20 for who, size in sizes.items() if size}


def test_an_unchanged_band_writes_nothing() -> None:
    view = StateView(DictState({}))
    owner = b"\x01" * 20
    index_holder(view, MARKET, owner, 0, 4)
    set_band(view, MARKET, owner, (100, MAX_PRICE), long=True, clock=2, rate=(1, 1))
    inner = StateView(view)
    set_band(inner, MARKET, owner, (100, MAX_PRICE), long=True, clock=2, rate=(1, 1))
    assert inner.write_set == frozenset()


def test_the_edges_cross_exactly_at_the_boundary() -> None:
    """Every shift a funding clock can give, at small rates (where a bound off by one shows): a long
    whose shifted lo is P - 1 stays out, P and P + 1 are in; a short whose shifted hi is P + 1
    stays out, P and P - 1 are in."""
    price = 1_000
    for n, d in ((1, 1), (1, 2), (3, 7), (5, 3)):
        for behind in range(12):
            shift = _ceil_div(behind * n, d)
            view = StateView(DictState({}))
            expected = set()
            for offset in (-1, 0, 1):
                long_owner, short_owner = bytes([1, offset + 2]) * 10, bytes([2, offset + 2]) * 10
                index_holder(view, MARKET, long_owner, 0, 1)
                set_band(view, MARKET, long_owner, (price + offset - shift, MAX_PRICE), long=True,
                         clock=100 - behind, rate=(n, d))  # fmt: skip
                index_holder(view, MARKET, short_owner, 0, -1)
                set_band(view, MARKET, short_owner, (0, price + offset + shift), long=False,
                         clock=50 - behind, rate=(n, d))  # fmt: skip
                if offset >= 0:
                    expected.add(long_owner)
                if offset <= 0:
                    expected.add(short_owner)
            assert set(crossed(view, MARKET, price, 100, 50, (n, d))) == expected, (n, d, behind)


def test_a_band_is_rewritten_only_when_the_recorded_one_would_miss_something() -> None:
    view = StateView(DictState({}))
    owner = b"\x03" * 20
    index_holder(view, MARKET, owner, 0, 4)
    set_band(view, MARKET, owner, (100, MAX_PRICE), long=True, clock=5, rate=(1, 1))
    recorded = view.get(schema.holder_key(MARKET, owner))
    wider = StateView(view)  # a lower low edge: the recorded one is crossed first, it is kept
    set_band(wider, MARKET, owner, (90, MAX_PRICE), long=True, clock=5, rate=(1, 1))
    assert wider.write_set == frozenset()
    later = StateView(view)  # the same edge at a later clock: crossed later, so kept
    set_band(later, MARKET, owner, (100, MAX_PRICE), long=True, clock=9, rate=(1, 1))
    assert later.write_set == frozenset()
    narrower = StateView(view)
    set_band(narrower, MARKET, owner, (110, MAX_PRICE), long=True, clock=5, rate=(1, 1))
    assert narrower.get(schema.holder_key(MARKET, owner)) != recorded
    assert_holder_index_consistent(narrower)
    flipped = StateView(view)  # now a short: the other side's edge replaces it
    set_band(flipped, MARKET, owner, (0, 200), long=False, clock=5, rate=(1, 1))
    assert crossed(flipped, MARKET, 200, 5, 5, (1, 1)) == [owner]
    assert crossed(flipped, MARKET, 199, 5, 5, (1, 1)) == []
    assert_holder_index_consistent(flipped)
    unknown = StateView(view)
    set_band(unknown, MARKET, owner, None, long=True, clock=5, rate=(1, 1))
    assert crossed(unknown, MARKET, 1, 5, 5, (1, 1)) == [owner]
