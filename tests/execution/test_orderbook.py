"""The order book (execution.exchange.orderbook): hand-written cases of each rule, and the book against a
naive reference model under hypothesis-generated streams of place / cancel / cancel-owner / expire,
with the persisted copy (built only from what each mutation reports) checked against the book."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execution.exchange.orderbook import (
    BookEvent,
    CancelReason,
    Fill,
    MakerCheck,
    Order,
    OrderBook,
    OrderCancelled,
    OrderRested,
    PlaceResult,
    PlaceStatus,
    Side,
    TimeInForce,
)
from primitives import codec

BUY, SELL = Side.BUY, Side.SELL
GTC, IOC, FOK, POST_ONLY = TimeInForce.GTC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.POST_ONLY
A, B, C = b"a" * 20, b"b" * 20, b"c" * 20
OWNERS = (A, B, C)


class Ids:
    def __init__(self) -> None:
        self.next = 1

    def order(self, owner: bytes, side: Side, price: int, size: int, **kw: Any) -> Order:
        oid = self.next
        self.next += 1
        return Order.limit(oid, owner, side, price, size, **kw)


def fills(result: PlaceResult) -> list[tuple[int, int, int, int]]:
    return [
        (e.maker_order_id, e.taker_order_id, e.price, e.size) for e in result.events if isinstance(e, Fill)
    ]


def cancels(result: PlaceResult) -> list[tuple[int, str]]:
    return [(e.order.order_id, e.reason.value) for e in result.events if isinstance(e, OrderCancelled)]


def l3(book: OrderBook) -> tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]]:
    bids, asks = book.orders()
    return [(o.order_id, o.price, o.remaining) for o in bids], [
        (o.order_id, o.price, o.remaining) for o in asks
    ]


# -- hand-written cases --------------------------------------------------------------------------


def test_price_time_priority_and_fill_at_maker_price() -> None:
    book, ids = OrderBook(), Ids()
    a1 = book.place(ids.order(A, SELL, 101, 5)).order
    a2 = book.place(ids.order(B, SELL, 100, 5)).order
    a3 = book.place(ids.order(A, SELL, 100, 5)).order
    assert book.best_ask() == 100 and book.best_bid() is None
    result = book.place(ids.order(C, BUY, 105, 12), GTC)
    assert fills(result) == [(a2.order_id, 4, 100, 5), (a3.order_id, 4, 100, 5), (a1.order_id, 4, 101, 2)]
    assert result.status is PlaceStatus.FILLED and result.filled == 12 and result.order.remaining == 0
    assert result.maker_update == Order.limit(a1.order_id, A, SELL, 101, 5).with_remaining(3)
    assert book.get(a1.order_id) == result.maker_update
    assert l3(book) == ([], [(a1.order_id, 101, 3)])
    assert [e.maker_remaining_after for e in result.events if isinstance(e, Fill)] == [0, 0, 3]
    fill = result.events[0]
    expected = Fill(a2.order_id, 4, B, C, 100, 5, BUY, 0)
    # the book builds its records with a fast constructor: they are the same frozen records
    assert fill == expected and hash(fill) == hash(expected) and repr(fill) == repr(expected)
    with pytest.raises(FrozenInstanceError):
        fill.size = 1  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        result.order.remaining = 1  # type: ignore[misc]


def test_partial_fill_rests_remainder_gtc() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, BUY, 99, 3))
    result = book.place(ids.order(B, SELL, 98, 10))
    assert fills(result) == [(1, 2, 99, 3)]
    assert result.status is PlaceStatus.RESTED and result.order.remaining == 7 and result.order.size == 10
    assert result.events[-1] == OrderRested(result.order)
    assert book.best_bid() is None and book.best_ask() == 98
    assert book.depth() == ([], [(98, 7)])


def test_ioc_remainder_cancelled_and_market_order() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, SELL, 100, 2))
    book.place(ids.order(A, SELL, 110, 2))
    market = book.place(ids.order(B, BUY, 105, 5), IOC)  # market order: IOC with a worst price
    assert fills(market) == [(1, 3, 100, 2)]
    assert cancels(market) == [(3, "ioc_remainder")]
    assert market.status is PlaceStatus.CANCELLED and market.order.remaining == 3
    assert l3(book) == ([], [(2, 110, 2)])
    nothing = book.place(ids.order(B, BUY, 90, 5), IOC)
    assert nothing.status is PlaceStatus.CANCELLED and cancels(nothing) == [(4, "ioc_remainder")]
    assert nothing.changes() == ([], [])


def test_fok_all_or_nothing() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, SELL, 100, 2))
    book.place(ids.order(B, SELL, 101, 2))
    book.place(ids.order(C, SELL, 102, 2))
    before = l3(book)
    refused = book.place(ids.order(C, BUY, 101, 5), FOK)  # 4 available at <= 101 (and C's own is at 102)
    assert refused.status is PlaceStatus.REJECTED and cancels(refused) == [(4, "fok")]
    assert refused.events == (OrderCancelled(refused.order, CancelReason.FOK),)
    assert l3(book) == before and refused.changes() == ([], [])
    # own orders do not count: C's ask at 102 would be cancelled by STP, not filled
    own = book.place(ids.order(C, BUY, 102, 5), FOK)
    assert own.status is PlaceStatus.REJECTED and l3(book) == before
    ok = book.place(ids.order(B, BUY, 102, 4), FOK)
    assert ok.status is PlaceStatus.FILLED
    assert fills(ok) == [(1, 6, 100, 2), (3, 6, 102, 2)] and cancels(ok) == [(2, "stp")]
    assert l3(book) == ([], [])


def test_fok_with_maker_check_refusal_changes_nothing() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, SELL, 100, 2))
    book.place(ids.order(B, SELL, 100, 2))
    before = l3(book)
    result = book.place(
        ids.order(C, BUY, 100, 4), FOK, maker_check=lambda maker, size, price: maker.owner != A
    )
    assert result.status is PlaceStatus.REJECTED and l3(book) == before


def test_post_only_rejected_without_side_effects() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, SELL, 100, 2))
    book.place(ids.order(B, BUY, 98, 2))
    before = (l3(book), book.depth(), len(book))
    for order in (ids.order(C, BUY, 100, 1), ids.order(A, BUY, 101, 1)):  # crossing own order too
        result = book.place(order, POST_ONLY)
        assert result.status is PlaceStatus.REJECTED
        assert result.events == (OrderCancelled(order, CancelReason.POST_ONLY_CROSS),)
        assert (l3(book), book.depth(), len(book)) == before
    flagged = book.place(ids.order(C, SELL, 98, 1, post_only=True), GTC)
    assert flagged.status is PlaceStatus.REJECTED and (l3(book), book.depth(), len(book)) == before
    rested = book.place(ids.order(C, BUY, 99, 1), POST_ONLY)
    assert rested.status is PlaceStatus.RESTED and rested.order.post_only and book.best_bid() == 99
    with pytest.raises(ValueError):
        book.place(ids.order(C, BUY, 90, 1, post_only=True), IOC)


def test_stp_cancels_the_maker_and_continues() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(B, SELL, 100, 1))
    book.place(ids.order(A, SELL, 100, 5))
    book.place(ids.order(B, SELL, 100, 1))
    book.place(ids.order(A, SELL, 101, 5))
    book.place(ids.order(C, SELL, 101, 5))
    result = book.place(ids.order(A, BUY, 101, 4), GTC)
    assert [type(e).__name__ for e in result.events] == [
        "Fill",
        "OrderCancelled",
        "Fill",
        "OrderCancelled",
        "Fill",
    ]
    assert fills(result) == [(1, 6, 100, 1), (3, 6, 100, 1), (5, 6, 101, 2)]
    assert cancels(result) == [(2, "stp"), (4, "stp")]
    assert result.status is PlaceStatus.FILLED
    assert l3(book) == ([], [(5, 101, 3)])
    writes, deletes = result.changes()
    assert writes == [book.get(5)] and deletes == [1, 2, 3, 4]


def test_maker_check_refusal_cancels_maker_and_continues() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, BUY, 100, 3))
    book.place(ids.order(B, BUY, 100, 3))
    book.place(ids.order(A, BUY, 99, 3))
    calls: list[tuple[int, int, int]] = []

    def check(maker: Order, size: int, price: int) -> bool:
        calls.append((maker.order_id, size, price))
        return maker.owner != A

    result = book.place(ids.order(C, SELL, 99, 5), IOC, maker_check=check)
    assert calls == [(1, 3, 100), (2, 3, 100), (3, 2, 99)]
    assert fills(result) == [(2, 4, 100, 3)]
    assert cancels(result) == [(1, "maker_check"), (3, "maker_check"), (4, "ioc_remainder")]
    assert result.order.remaining == 2 and l3(book) == ([], [])
    assert result.changes() == ([], [1, 2, 3])


def test_cancel_and_cancel_owner() -> None:
    book, ids = OrderBook(), Ids()
    for owner, side, price in ((A, BUY, 90), (B, BUY, 91), (A, SELL, 95), (A, BUY, 91)):
        book.place(ids.order(owner, side, price, 1))
    assert book.cancel(99) is None
    assert book.cancel(2) == Order.limit(2, B, BUY, 91, 1)
    assert book.cancel(2) is None
    assert book.best_bid() == 91 and len(book) == 3
    assert [o.order_id for o in book.open_orders(A)] == [1, 3, 4]
    assert [o.order_id for o in book.cancel_owner(A)] == [1, 3, 4]
    assert len(book) == 0 and book.best_bid() is None and book.best_ask() is None
    assert book.cancel_owner(A) == [] and book.open_orders(A) == []


def test_an_id_given_back_and_reused_at_another_price_is_no_maker_at_the_old_one() -> None:
    book = OrderBook()
    book.place(Order.limit(1, A, SELL, 100, 1))
    book.place(Order.limit(2, B, SELL, 100, 1))
    book.cancel(2)  # its id stays in the level at 100 as a tombstone
    book.rewind_ids(2)  # a failed tx gave id 2 back
    book.place(Order.limit(2, B, SELL, 105, 1))
    assert l3(book) == ([], [(1, 100, 1), (2, 105, 1)])
    result = book.place(Order.limit(3, C, BUY, 100, 2), IOC)
    assert fills(result) == [(1, 3, 100, 1)]
    assert l3(book) == ([], [(2, 105, 1)]) and book.depth() == ([], [(105, 1)])
    # and an id that comes back at its old price is one entry, not two
    book.cancel(2)
    book.rewind_ids(2)
    book.place(Order.limit(2, B, SELL, 105, 3))
    assert l3(book) == ([], [(2, 105, 3)]) and book.depth() == ([], [(105, 3)])


def test_expiry_order_and_index() -> None:
    book, ids = OrderBook(), Ids()
    book.place(ids.order(A, BUY, 90, 1, good_til_block=7))
    book.place(ids.order(B, BUY, 91, 1, good_til_block=5))
    book.place(ids.order(A, SELL, 95, 1))
    book.place(ids.order(C, SELL, 96, 1, good_til_block=5))
    book.place(ids.order(C, SELL, 97, 1, good_til_block=6))
    book.cancel(5)
    assert book.expire(5) == []  # live through good_til_block
    assert [(o.order_id, o.good_til_block) for o in book.expire(7)] == [(2, 5), (4, 5)]
    assert [o.order_id for o in book.expire(100)] == [1]
    assert l3(book) == ([], [(3, 95, 1)])


def test_depth_aggregates_levels() -> None:
    book, ids = OrderBook(), Ids()
    for side, price, size in (
        (BUY, 90, 1),
        (BUY, 92, 2),
        (BUY, 90, 3),
        (SELL, 95, 4),
        (SELL, 94, 5),
        (SELL, 95, 6),
    ):
        book.place(ids.order(A, side, price, size))
    assert book.depth() == ([(92, 2), (90, 4)], [(94, 5), (95, 10)])
    assert book.depth(1) == ([(92, 2)], [(94, 5)])
    assert [o.order_id for o in book.orders(1)[1]] == [5]
    assert book.level_count(BUY) == 2 and book.level_count(SELL) == 2
    book.place(ids.order(B, BUY, 95, 7))
    assert book.depth() == ([(92, 2), (90, 4)], [(95, 8)])


def test_rejects_bad_orders() -> None:
    book = OrderBook()
    book.place(Order.limit(5, A, BUY, 10, 1))
    for bad in (
        Order.limit(5, A, BUY, 10, 1),  # id not increasing
        Order.limit(6, A, BUY, 0, 1),
        Order.limit(6, A, BUY, 10, 0),
        Order.limit(6, b"x", BUY, 10, 1),
        Order(6, A, BUY, 10, 1, 2),  # already partly filled
        Order.limit(6, A, BUY, 10, 1, good_til_block=-1),
    ):
        with pytest.raises(ValueError):
            book.place(bad)
    with pytest.raises(ValueError):
        book.place(Order.limit(6, A, BUY, 10, 1), 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        book.place(Order.limit(6, A, BUY, 10, 1, post_only=True), FOK)
    assert l3(book) == ([(5, 10, 1)], []) and book.last_order_id == 5
    assert book.place(Order.limit(6, A, BUY, 10, 1)).status is PlaceStatus.RESTED


def test_order_canonical_fields_round_trip() -> None:
    order = Order(7, A, SELL, 12345, 3, 9, 2**64 - 1, True, True, 40)
    raw = codec.encode(order.to_fields())
    assert Order.from_fields(codec.decode(raw)) == order
    with pytest.raises(codec.DecodeError):
        Order.from_fields(codec.decode(codec.encode([7, A, 2, 1, 1, 1, 0, 0, 0, 0])))
    with pytest.raises(codec.DecodeError):
        Order.from_fields(codec.decode(codec.encode([7, A, 0, 1, 2, 1, 0, 0, 0, 0])))  # remaining > size


def test_restore_rebuilds_the_same_book() -> None:
    book, ids = OrderBook(), Ids()
    for owner, side, price, size in ((A, BUY, 90, 1), (B, BUY, 90, 2), (C, SELL, 95, 3), (A, SELL, 94, 4)):
        book.place(ids.order(owner, side, price, size, good_til_block=3))
    book.place(ids.order(B, BUY, 94, 1))
    copy = OrderBook()
    bids, asks = book.orders()
    copy.restore(reversed(bids + asks))
    assert l3(copy) == l3(book) and copy.depth() == book.depth() and copy.last_order_id == 4
    assert [o.order_id for o in copy.expire(4)] == [o.order_id for o in book.expire(4)]
    for bad in (
        [Order.limit(1, A, BUY, 95, 1), Order.limit(2, B, SELL, 95, 1)],  # crossed
        [Order.limit(1, A, BUY, 95, 1), Order.limit(1, B, BUY, 94, 1)],  # duplicate id
    ):
        fresh = OrderBook()
        with pytest.raises(ValueError):
            fresh.restore(bad)
        assert len(fresh) == 0 and fresh.last_order_id == -1
    with pytest.raises(ValueError):
        copy.restore([])  # not a new book


def test_many_orders_at_one_level_stay_linear() -> None:
    """Tombstones from cancels in the middle of a level are compacted; the front is always live."""
    book, ids = OrderBook(), Ids()
    placed = [book.place(ids.order(OWNERS[i % 3], BUY, 100, 1)).order.order_id for i in range(3000)]
    for oid in placed[1:-1]:
        book.cancel(oid)
    assert l3(book) == ([(placed[0], 100, 1), (placed[-1], 100, 1)], [])
    result = book.place(ids.order(B, SELL, 100, 2), IOC)
    assert [f[0] for f in fills(result)] == [placed[0], placed[-1]] and len(book) == 0


# -- the reference model --------------------------------------------------------------------------


@dataclass
class Model:
    """Resting orders in a plain list; every question answered by sorting and scanning."""

    resting: list[Order] = field(default_factory=list)

    def book_side(self, side: Side) -> list[Order]:
        orders = [o for o in self.resting if o.side is side]
        if side is BUY:
            return sorted(orders, key=lambda o: (-o.price, o.order_id))
        return sorted(orders, key=lambda o: (o.price, o.order_id))

    def best(self, side: Side) -> int | None:
        prices = [o.price for o in self.resting if o.side is side]
        if not prices:
            return None
        return max(prices) if side is BUY else min(prices)

    def depth(self) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        out = []
        for side in (BUY, SELL):
            levels: dict[int, int] = {}
            for o in self.book_side(side):
                levels[o.price] = levels.get(o.price, 0) + o.remaining
            out.append(list(levels.items()))  # book_side is best first, so is this
        return out[0], out[1]

    def remove(self, order_id: int) -> Order:
        (order,) = [o for o in self.resting if o.order_id == order_id]
        self.resting.remove(order)
        return order

    def place(
        self, order: Order, tif: TimeInForce, check: MakerCheck | None
    ) -> tuple[PlaceStatus, Order, list[BookEvent]]:
        opposite = SELL if order.side is BUY else BUY
        best = self.best(opposite)
        crosses = best is not None and (best <= order.price if order.side is BUY else best >= order.price)
        if tif is POST_ONLY or order.post_only:
            if crosses:
                return PlaceStatus.REJECTED, order, [OrderCancelled(order, CancelReason.POST_ONLY_CROSS)]
            rested = Order(
                order.order_id, order.owner, order.side, order.price, order.remaining, order.size,
                order.client_id, True, order.reduce_only, order.good_til_block,
            )  # fmt: skip
            self.resting.append(rested)
            return PlaceStatus.RESTED, rested, [OrderRested(rested)]
        plan: list[tuple[Order, int, CancelReason | None]] = []
        need = order.size
        for maker in self.book_side(opposite):
            if need == 0 or (maker.price > order.price if order.side is BUY else maker.price < order.price):
                break
            if maker.owner == order.owner:
                plan.append((maker, 0, CancelReason.STP))
                continue
            size = min(need, maker.remaining)
            if check is not None and not check(maker, size, maker.price):
                plan.append((maker, 0, CancelReason.MAKER_CHECK))
                continue
            plan.append((maker, size, None))
            need -= size
        if tif is FOK and need > 0:
            return PlaceStatus.REJECTED, order, [OrderCancelled(order, CancelReason.FOK)]
        events: list[BookEvent] = []
        for maker, size, reason in plan:
            self.remove(maker.order_id)
            if reason is not None:
                events.append(OrderCancelled(maker, reason))
                continue
            left = maker.remaining - size
            events.append(
                Fill(
                    maker.order_id,
                    order.order_id,
                    maker.owner,
                    order.owner,
                    maker.price,
                    size,
                    order.side,
                    left,
                )
            )
            if left:
                self.resting.append(maker.with_remaining(left))
        taker = order.with_remaining(need)
        if need == 0:
            return PlaceStatus.FILLED, taker, events
        if tif is GTC:
            self.resting.append(taker)
            return PlaceStatus.RESTED, taker, [*events, OrderRested(taker)]
        return PlaceStatus.CANCELLED, taker, [*events, OrderCancelled(taker, CancelReason.IOC_REMAINDER)]

    def cancel_owner(self, owner: bytes) -> list[Order]:
        return [
            self.remove(o.order_id)
            for o in sorted(self.resting, key=lambda o: o.order_id)
            if o.owner == owner
        ]

    def expire(self, height: int) -> list[Order]:
        gone = sorted(
            (o for o in self.resting if 0 < o.good_til_block < height),
            key=lambda o: (o.good_til_block, o.order_id),
        )
        return [self.remove(o.order_id) for o in gone]


# an operation: ("place", side, price, size, owner, tif, post_only, gtb offset), ("cancel", id),
# ("cancel_owner", owner), ("expire", height step)
place_op = st.tuples(
    st.just("place"),
    st.sampled_from([BUY, SELL]),
    st.integers(97, 102),
    st.integers(1, 6),
    st.integers(0, 2),
    st.sampled_from([GTC, GTC, IOC, FOK, POST_ONLY]),
    st.booleans(),
    st.sampled_from([None, 0, 1, 2, 3]),
)


def _pick(kind: int, place: tuple[Any, ...], oid: int, owner: int, step: int) -> tuple[Any, ...]:
    if kind < 8:
        return place
    if kind < 10:
        return ("cancel", oid)
    return ("cancel_owner", owner) if kind == 10 else ("expire", step)


operation = st.builds(
    _pick, st.integers(0, 11), place_op, st.integers(0, 80), st.integers(0, 2), st.integers(0, 3)
)


def make_check(modulus: int) -> MakerCheck | None:
    if modulus == 0:
        return None
    return lambda maker, size, price: (maker.order_id * 7 + size + price) % modulus != 0


def check_state(book: OrderBook, model: Model, persisted: dict[int, Order]) -> None:
    bids, asks = book.orders()
    assert bids == model.book_side(BUY) and asks == model.book_side(SELL)
    assert book.best_bid() == model.best(BUY) and book.best_ask() == model.best(SELL)
    assert book.depth() == model.depth()
    assert len(book) == len(model.resting)
    assert persisted == {o.order_id: o for o in model.resting}
    for owner in OWNERS:
        assert book.open_orders(owner) == sorted(
            (o for o in model.resting if o.owner == owner), key=lambda o: o.order_id
        )


@settings(max_examples=400, deadline=None)
@given(st.lists(operation, min_size=20, max_size=80), st.sampled_from([0, 0, 3, 5]))
def test_book_matches_reference_model(ops: list[tuple[Any, ...]], modulus: int) -> None:
    book, model = OrderBook(), Model()
    persisted: dict[int, Order] = {}  # what a state view would hold, built from reported changes
    mirror = OrderBook()  # follows the persisted changes only (`put`, `cancel`): a replica's book
    check = make_check(modulus)
    next_id, height = 1, 1
    halfway: dict[int, Order] = {}

    def drop(removed: list[Order], expected: list[Order]) -> None:
        assert removed == expected
        for order in removed:
            del persisted[order.order_id]
            mirror.cancel(order.order_id)

    for op in ops:
        kind = op[0]
        if kind == "place":
            _, side, price, size, owner_index, tif, flag, gtb = op
            post_only = bool(flag) and tif in (GTC, POST_ONLY)
            order = Order.limit(
                next_id, OWNERS[owner_index], side, price, size,
                post_only=post_only, good_til_block=0 if gtb is None else height + gtb,
            )  # fmt: skip
            next_id += 1
            result = book.place(order, tif, check)
            status, taker, events = model.place(order, tif, check)
            assert (result.status, result.order, list(result.events)) == (status, taker, events)
            writes, deletes = result.changes()
            for oid in deletes:
                del persisted[oid]
                mirror.cancel(oid)
            for written in writes:
                persisted[written.order_id] = written
                mirror.put(written)
        elif kind == "cancel":
            oid = op[1]
            expected = [model.remove(oid)] if any(o.order_id == oid for o in model.resting) else []
            got = book.cancel(oid)
            drop([] if got is None else [got], expected)
        elif kind == "cancel_owner":
            owner = OWNERS[op[1]]
            drop(book.cancel_owner(owner), model.cancel_owner(owner))
        else:
            height += op[1]
            drop(book.expire(height), model.expire(height))
        check_state(book, model, persisted)
        assert l3(mirror) == l3(book)
        if len(halfway) == 0 and next_id > len(ops) // 2:
            halfway = dict(persisted)
    restored = OrderBook()
    restored.restore(persisted.values())
    assert restored.orders() == book.orders()
    # undo everything since halfway change by change (older ids go back in between), as a failed
    # tx's changes are undone: the same book as one restored from the halfway records
    for oid in sorted(persisted.keys() | halfway.keys()):
        if oid in halfway:
            mirror.put(halfway[oid])
        else:
            mirror.cancel(oid)
    back = OrderBook()
    back.restore(halfway.values())
    assert l3(mirror) == l3(back) and mirror.depth() == back.depth()
    for owner in OWNERS:
        assert mirror.open_orders(owner) == back.open_orders(owner)
        assert [o.order_id for o in mirror.cancel_owner(owner)] == [
            o.order_id for o in back.cancel_owner(owner)
        ]


# -- mirroring records ----------------------------------------------------------------------------

record = st.one_of(
    st.none(),
    st.builds(
        lambda owner, buy, offset, size, gtb: Order.limit(
            0, owner, BUY if buy else SELL, 95 - offset if buy else 100 + offset, size, good_til_block=gtb
        ),
        st.sampled_from(OWNERS),
        st.booleans(),
        st.integers(0, 2),
        st.integers(1, 4),
        st.sampled_from([0, 0, 7, 9]),
    ),
)
"""An order record under some id (its id set later), or its absence. Bids below 95, asks above 100:
any set of them is a valid book."""


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.dictionaries(st.integers(1, 10), record, min_size=1, max_size=4), st.booleans()),
        min_size=1,
        max_size=25,
    )
)
def test_put_and_cancel_mirror_any_history_of_records(
    steps: list[tuple[dict[int, Order | None], bool]],
) -> None:
    """`put`/`cancel` make the book a function of the records, whatever the history: an id whose
    record changes to another order (ids given back are used again), and several changes of a key
    collapsed into its last (`Books` mirrors lazily) give the book `restore` builds from them."""
    book = OrderBook()
    records: dict[int, Order] = {}
    kept: dict[int, Order | None] = {}
    for changes, mirror_now in steps:
        for oid, value in changes.items():
            changed = None if value is None else Order(**{**_fields(value), "order_id": oid})
            kept[oid] = changed
            if changed is None:
                records.pop(oid, None)
            else:
                records[oid] = changed
        if not mirror_now:
            continue
        for oid in sorted(kept):
            value = kept[oid]
            if value is None:
                book.cancel(oid)
            else:
                book.put(value)
        kept.clear()
        fresh = OrderBook()
        fresh.restore(records.values())
        assert l3(book) == l3(fresh) and book.depth() == fresh.depth()
        for owner in OWNERS:
            assert book.open_orders(owner) == fresh.open_orders(owner)
        assert book.expire(8) == fresh.expire(8)  # the expiry index
        for oid in [o for o, r in records.items() if r.good_til_block and r.good_til_block < 8]:
            del records[oid]


def _fields(order: Order) -> dict[str, Any]:
    return {name: getattr(order, name) for name in order.__slots__}
