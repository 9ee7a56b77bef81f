"""One market's limit order book: resting orders, price-time priority matching, self-trade
prevention, expiry, and the L2/L3 views. A pure, deterministic, in-memory structure: no clock, no
randomness, no floats, no I/O, and no output whose order comes from an unordered container.

Units: `price` is in ticks (int > 0), sizes are in lots / base quantums (int > 0). The market's
tick, step and minimum size are the caller's business (it validates before placing).

Order ids and time priority
    The caller assigns `order_id`; ids placed on one book must strictly increase (the chain's order
    counter), so arrival order and id order are the same thing and priority is exactly
    (best price first, then lowest order_id). `place` raises ValueError otherwise.

`place(order, tif, maker_check=None) -> PlaceResult`
    GTC rests the remainder; IOC cancels the remainder; FOK fills completely or changes nothing
    (the fill is planned without mutating the book first); POST_ONLY (or `order.post_only`) is
    rejected if its price crosses the best opposite price, and then nothing changes. A market
    order is an IOC order whose `price` is the worst price the caller accepts.
    Matching walks the opposite side best price first, each level in time order; every fill is
    at the maker's (resting) price; the last maker touched may be partially filled.

Self-trade prevention (the rule)
    The taker never trades with its own owner's orders: a resting order of the same owner that the
    taker reaches is cancelled (reason "stp"), removed from the book, and matching continues with
    the next order. This is dYdX v4's behaviour (it cancels the maker, "cancel oldest"). A
    post-only order is checked by price only: crossing one's own order rejects it too.

`maker_check(maker: Order, fill_size: int, price: int) -> bool` (optional)
    Called before each fill with the resting order as it stands, the size about to be filled and
    the fill price; False refuses the fill: the maker is cancelled (reason "maker_check"), removed,
    and matching continues (Hyperliquid re-checks the resting side's margin at match time). It
    must not touch this book. It runs during planning, so for an FOK order that turns out not to
    be fillable its answers are discarded with the plan (nothing is cancelled).

Other operations: `cancel(order_id) -> Order | None`, `cancel_owner(owner) -> list[Order]`
(ascending order id), `expire(height) -> list[Order]` (removes every order with
0 < good_til_block < height, in (good_til_block, order_id) order, through an index by
good_til_block: the cost is the number of expired orders, not the book), `get`, `best_bid`,
`best_ask`, `depth(levels)` (L2), `orders(levels)` (L3), `iter_orders(side)` (L3, lazily),
`open_orders(owner)`, `len(book)`, `level_count`, `restore(orders)` (rebuild from persisted
records, no matching), and `put(order)` / `rewind_ids(next_id)` (mirror one persisted record, or
undo a change: a failed tx's, or one made on another replica).

Persisting through a state view: every mutation reports exactly what changed.
    - `place`: `PlaceResult.changes()` gives (orders to write, order ids to delete): the rested taker
      (`OrderRested`), the one partially filled maker (`maker_update`), and the deletes of every
      maker fully filled (`Fill.maker_remaining_after == 0`) or cancelled (`OrderCancelled` of a
      maker, reason "stp" / "maker_check"). A rejected order (FOK / post-only) changes nothing.
    - `cancel`, `cancel_owner`, `expire`: the returned orders are the deletes.
    The records are frozen; `Order.to_fields` / `Order.from_fields` are their canonical arrays.

Internally each price level is a deque of order ids in arrival order (cancelled ids stay in it as
tombstones until they reach the front or the level is compacted; the front is always live; an
entry is live only if its id is a live order at that level's price, since an id given back by a
failed tx can come back at another price, and one that comes back at the same price first drops
its old entry), one
dict order_id -> Order holds the live orders, the level prices of each side are kept in one sorted
list (bids by price, asks by negated price, so the best of both is at the end), and indexes by owner
and by good_til_block are insertion-ordered dicts of ids.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from enum import IntEnum, StrEnum
from typing import TypeVar

from primitives import codec
from primitives.codec import Value

OWNER_SIZE = 20
MAX_INT = 2**63 - 1


class Side(IntEnum):
    BUY = 0
    SELL = 1


class TimeInForce(IntEnum):
    GTC = 0
    IOC = 1
    FOK = 2
    POST_ONLY = 3


class CancelReason(StrEnum):
    """Why an order left the book (or never entered it) without being filled."""

    STP = "stp"
    MAKER_CHECK = "maker_check"
    IOC_REMAINDER = "ioc_remainder"
    FOK = "fok"
    POST_ONLY_CROSS = "post_only_cross"
    USER = "user"
    EXPIRED = "expired"


class PlaceStatus(IntEnum):
    """The taker's final state after `place`."""

    RESTED = 0  # (the remainder) rests on the book; it may have filled partly first
    FILLED = 1  # filled completely
    CANCELLED = 2  # IOC remainder cancelled; it may have filled partly first
    REJECTED = 3  # FOK not fillable or post-only crossing: nothing changed


@dataclass(frozen=True, slots=True)
class Order:
    """A limit order. `size` is the original size, `remaining` what is left to fill."""

    order_id: int
    owner: bytes
    side: Side
    price: int
    remaining: int
    size: int
    client_id: int = 0
    post_only: bool = False
    reduce_only: bool = False
    good_til_block: int = 0

    @classmethod
    def limit(
        cls,
        order_id: int,
        owner: bytes,
        side: Side,
        price: int,
        size: int,
        *,
        client_id: int = 0,
        post_only: bool = False,
        reduce_only: bool = False,
        good_til_block: int = 0,
    ) -> Order:
        """A fresh order: nothing filled yet."""
        return cls(
            order_id, owner, side, price, size, size, client_id, post_only, reduce_only, good_til_block
        )

    def with_remaining(self, remaining: int) -> Order:
        return Order(
            self.order_id,
            self.owner,
            self.side,
            self.price,
            remaining,
            self.size,
            self.client_id,
            self.post_only,
            self.reduce_only,
            self.good_til_block,
        )

    def to_fields(self) -> list[Value]:
        """The canonical array: [order_id, owner, side, price, remaining, size, client_id,
        post_only, reduce_only, good_til_block] (booleans as 0/1)."""
        return [
            self.order_id,
            self.owner,
            int(self.side),
            self.price,
            self.remaining,
            self.size,
            self.client_id,
            int(self.post_only),
            int(self.reduce_only),
            self.good_til_block,
        ]

    def encode(self) -> bytes:
        """The canonical bytes of the stored order record (`to_fields`): an order is a state
        `Record` (`execution.state`), so a view encodes it only if its bytes are needed."""
        return codec.encode(self.to_fields())

    @classmethod
    def from_fields(cls, value: Value) -> Order:
        f = codec.field_list(value, "order", length=10)
        size = codec.field_int(f[5], "order.size", 1)
        return cls(
            codec.field_int(f[0], "order.order_id"),
            codec.field_bytes(f[1], "order.owner", size=OWNER_SIZE),
            Side(codec.field_int(f[2], "order.side", 0, 1)),
            codec.field_int(f[3], "order.price", 1),
            codec.field_int(f[4], "order.remaining", 1, size),
            size,
            codec.field_int(f[6], "order.client_id", 0, 2**64 - 1),
            codec.field_bool(f[7], "order.post_only"),
            codec.field_bool(f[8], "order.reduce_only"),
            codec.field_int(f[9], "order.good_til_block"),
        )


@dataclass(frozen=True, slots=True)
class Fill:
    """One match: `size` at the maker's `price`. `maker_remaining_after` 0 means the maker left."""

    maker_order_id: int
    taker_order_id: int
    maker_owner: bytes
    taker_owner: bytes
    price: int
    size: int
    taker_side: Side
    maker_remaining_after: int


@dataclass(frozen=True, slots=True)
class OrderRested:
    """`order` (as it rests, after any fills) was added to the book."""

    order: Order


@dataclass(frozen=True, slots=True)
class OrderCancelled:
    """`order` (as it stood) left the book, or never entered it, for `reason`."""

    order: Order
    reason: CancelReason


BookEvent = Fill | OrderRested | OrderCancelled
"""What matching reports, in order (not a chain event: `execution.exchange.events` builds those)."""
MakerCheck = Callable[[Order, int, int], bool]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PlaceResult:
    """The outcome of `place`: the taker as it ended, the events in the order they happened, and
    the partially filled maker's new record (at most one per placement)."""

    order: Order
    status: PlaceStatus
    events: tuple[BookEvent, ...]
    maker_update: Order | None = None

    @property
    def filled(self) -> int:
        """Size the taker filled."""
        return self.order.size - self.order.remaining

    def changes(self) -> tuple[list[Order], list[int]]:
        """What to persist: (orders to write, in event order; order ids to delete, in event
        order). Empty for a rejected order."""
        writes: list[Order] = []
        deletes: list[int] = []
        taker_id = self.order.order_id
        for event in self.events:
            if type(event) is Fill:
                if event.maker_remaining_after == 0:
                    deletes.append(event.maker_order_id)
            elif type(event) is OrderCancelled:
                if event.order.order_id != taker_id:
                    deletes.append(event.order.order_id)
            elif type(event) is OrderRested:
                writes.append(event.order)
        if self.maker_update is not None:
            writes.insert(0, self.maker_update)
        return writes, deletes


def fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A positional constructor for the frozen slotted dataclass `cls`, every field given, for the
    hot path: `object.__new__` and the slots' own descriptors, skipping the generated `__init__`'s
    frozen-attribute detour (about 2x faster). It builds the very same instances; the tests compare
    them with the ordinary constructor."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    env: dict[str, object] = {"_new": object.__new__, "_cls": cls}
    lines = [f"def make({', '.join(names)}):", "    o = _new(_cls)"]
    for i, name in enumerate(names):
        env[f"_set{i}"] = cls.__dict__[name].__set__
        lines.append(f"    _set{i}(o, {name})")
    lines.append("    return o")
    exec("\n".join(lines), env)
    return env["make"]  # type: ignore[return-value]


_new_order = fast_constructor(Order)
_new_fill = fast_constructor(Fill)
_new_rested = fast_constructor(OrderRested)
_new_cancelled = fast_constructor(OrderCancelled)
_new_result = fast_constructor(PlaceResult)


class _Level:
    """One price level: order ids in arrival order (with tombstones), live size and count."""

    __slots__ = ("count", "queue", "size")

    def __init__(self) -> None:
        self.queue: deque[int] = deque()
        self.size = 0
        self.count = 0


_BUY = Side.BUY
_SELL = Side.SELL
_GTC = TimeInForce.GTC
_IOC = TimeInForce.IOC
_FOK = TimeInForce.FOK
_POST_ONLY = TimeInForce.POST_ONLY
_RESTED = PlaceStatus.RESTED
_FILLED = PlaceStatus.FILLED
_CANCELLED = PlaceStatus.CANCELLED
_REJECTED = PlaceStatus.REJECTED
_STP = CancelReason.STP
_MAKER_CHECK = CancelReason.MAKER_CHECK
_IOC_REMAINDER = CancelReason.IOC_REMAINDER
_FOK_REASON = CancelReason.FOK
_POST_ONLY_CROSS = CancelReason.POST_ONLY_CROSS


class OrderBook:
    """One market's book. See the module docstring for the rules."""

    __slots__ = (
        "_ask_keys",
        "_asks",
        "_bid_keys",
        "_bids",
        "_by_gtb",
        "_by_owner",
        "_gtb_heap",
        "_highest",
        "_last_id",
        "_orders",
    )

    def __init__(self) -> None:
        self._orders: dict[int, Order] = {}
        self._bids: dict[int, _Level] = {}
        self._asks: dict[int, _Level] = {}
        self._bid_keys: list[int] = []  # bid prices, ascending: best at the end
        self._ask_keys: list[int] = []  # negated ask prices, ascending: best at the end
        self._by_owner: dict[bytes, dict[int, None]] = {}
        self._by_gtb: dict[int, dict[int, None]] = {}
        self._gtb_heap: list[int] = []
        self._last_id = -1
        self._highest = -1  # the highest id ever rested (never goes back, unlike `_last_id`)

    # -- queries -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._orders)

    def __contains__(self, order_id: int) -> bool:
        return order_id in self._orders

    def get(self, order_id: int) -> Order | None:
        return self._orders.get(order_id)

    @property
    def last_order_id(self) -> int:
        """The highest order id placed or restored (-1 for a new book)."""
        return self._last_id

    def best_bid(self) -> int | None:
        keys = self._bid_keys
        return keys[-1] if keys else None

    def best_ask(self) -> int | None:
        keys = self._ask_keys
        return -keys[-1] if keys else None

    def level_count(self, side: Side) -> int:
        return len(self._bid_keys) if side is _BUY else len(self._ask_keys)

    def _side_prices(self, side: Side, levels: int | None) -> list[int]:
        """Prices of `side`, best first, at most `levels` of them."""
        keys = self._bid_keys if side is _BUY else self._ask_keys
        n = len(keys) if levels is None else min(levels, len(keys))
        if side is _BUY:
            return [keys[-1 - i] for i in range(n)]
        return [-keys[-1 - i] for i in range(n)]

    def depth(self, levels: int | None = None) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """L2: (bids, asks), each [(price, total remaining size)] best first."""
        bids, asks = self._bids, self._asks
        return (
            [(p, bids[p].size) for p in self._side_prices(_BUY, levels)],
            [(p, asks[p].size) for p in self._side_prices(_SELL, levels)],
        )

    def orders(self, levels: int | None = None) -> tuple[list[Order], list[Order]]:
        """L3: (bids, asks), each the resting orders of the best `levels` levels in priority order."""
        return self._side_orders(_BUY, levels), self._side_orders(_SELL, levels)

    def _side_orders(self, side: Side, levels: int | None) -> list[Order]:
        book = self._bids if side is _BUY else self._asks
        orders = self._orders
        out: list[Order] = []
        for price in self._side_prices(side, levels):
            for oid in book[price].queue:
                order = orders.get(oid)
                if order is not None and order.price == price:  # not a tombstone (class docstring)
                    out.append(order)
        return out

    def iter_orders(self, side: Side) -> Iterator[Order]:
        """The resting orders of `side` in priority order, lazily (for walks that stop early, like
        an impact price). The book must not change while the iterator is in use."""
        book = self._bids if side is _BUY else self._asks
        orders = self._orders
        for price in self._side_prices(side, None):
            for oid in book[price].queue:
                order = orders.get(oid)
                if order is not None and order.price == price:
                    yield order

    def open_orders(self, owner: bytes) -> list[Order]:
        """`owner`'s resting orders, ascending order id."""
        ids = self._by_owner.get(owner)
        if not ids:
            return []
        orders = self._orders
        return [orders[oid] for oid in ids]

    # -- mutations -----------------------------------------------------------------------------

    def restore(self, orders: Iterable[Order]) -> None:
        """Fill a new book with persisted resting orders, without matching; priority comes from
        the order ids. Raises ValueError (and leaves the book empty) on an invalid order, a
        duplicate id, a crossed set of orders, or a book that has been used."""
        if self._last_id != -1:
            raise ValueError("restore needs a new book")
        ordered = sorted(orders, key=lambda o: o.order_id)
        try:
            for order in ordered:
                self._validate(order, fresh=False)
                self._last_id = order.order_id
        except ValueError:
            self._last_id = -1
            raise
        bids = [o.price for o in ordered if o.side is _BUY]
        asks = [o.price for o in ordered if o.side is _SELL]
        if bids and asks and max(bids) >= min(asks):
            self._last_id = -1
            raise ValueError(f"restored orders cross: bid {max(bids)} >= ask {min(asks)}")
        for order in ordered:
            self._rest(order)

    def _validate(self, order: Order, fresh: bool, tif: TimeInForce = _GTC) -> None:
        """Raise ValueError naming what is wrong with `order` (or its time in force)."""
        if order.order_id <= self._last_id:
            raise ValueError(f"order id {order.order_id} is not above the last id {self._last_id}")
        if not 0 < order.price <= MAX_INT:
            raise ValueError(f"price {order.price} is not a positive tick count")
        if not 0 < order.remaining <= order.size <= MAX_INT:
            raise ValueError(f"sizes remaining={order.remaining}, size={order.size} are invalid")
        if fresh and order.remaining != order.size:
            raise ValueError("a placed order must be unfilled (remaining == size)")
        if type(order.owner) is not bytes or len(order.owner) != OWNER_SIZE:
            raise ValueError(f"owner must be {OWNER_SIZE} bytes")
        if order.side is not _BUY and order.side is not _SELL:
            raise ValueError(f"side {order.side!r} is not a Side")
        if order.good_til_block < 0:
            raise ValueError("good_til_block is negative")
        if tif not in (_GTC, _IOC, _FOK, _POST_ONLY) or type(tif) is not TimeInForce:
            raise ValueError(f"time in force {tif!r} is not a TimeInForce")
        if order.post_only and (tif is _IOC or tif is _FOK):
            raise ValueError("a post-only order cannot be IOC or FOK")

    def place(
        self, order: Order, tif: TimeInForce = _GTC, maker_check: MakerCheck | None = None
    ) -> PlaceResult:
        """Match `order` against the book and deal with the remainder as `tif` says."""
        side = order.side
        price = order.price
        owner = order.owner
        if not (
            self._last_id < order.order_id
            and 0 < price <= MAX_INT
            and 0 < order.remaining == order.size <= MAX_INT
            and type(owner) is bytes
            and len(owner) == OWNER_SIZE
            and (side is _BUY or side is _SELL)
            and order.good_til_block >= 0
            and (tif is _GTC or tif is _POST_ONLY or ((tif is _IOC or tif is _FOK) and not order.post_only))
        ):
            self._validate(order, True, tif)  # raises the precise error
        self._last_id = order.order_id
        if side is _BUY:
            keys = self._ask_keys
            crosses = bool(keys) and -keys[-1] <= price
        else:
            keys = self._bid_keys
            crosses = bool(keys) and keys[-1] >= price
        if order.post_only or tif is _POST_ONLY:
            if crosses:
                return _new_result(order, _REJECTED, (_new_cancelled(order, _POST_ONLY_CROSS),), None)
            if not order.post_only:
                order = _new_order(
                    order.order_id, owner, side, price, order.remaining, order.size,
                    order.client_id, True, order.reduce_only, order.good_til_block,
                )  # fmt: skip
            self._rest(order)
            return _new_result(order, _RESTED, (_new_rested(order),), None)
        if not crosses:
            if tif is _GTC:
                self._rest(order)
                return _new_result(order, _RESTED, (_new_rested(order),), None)
            if tif is _FOK:
                return _new_result(order, _REJECTED, (_new_cancelled(order, _FOK_REASON),), None)
            return _new_result(order, _CANCELLED, (_new_cancelled(order, _IOC_REMAINDER),), None)

        want = order.remaining
        steps, filled = self._plan(order, maker_check)
        if tif is _FOK and filled < want:
            return _new_result(order, _REJECTED, (_new_cancelled(order, _FOK_REASON),), None)

        # apply the plan
        events: list[BookEvent] = []
        orders = self._orders
        levels = self._asks if side is _BUY else self._bids
        taker_id = order.order_id
        maker_update: Order | None = None
        for maker, fill, reason in steps:
            if reason is not None:
                del orders[maker.order_id]
                self._unlink(maker)
                events.append(_new_cancelled(maker, reason))
                continue
            after = maker.remaining - fill
            events.append(
                _new_fill(maker.order_id, taker_id, maker.owner, owner, maker.price, fill, side, after)
            )
            if after == 0:
                del orders[maker.order_id]
                self._unlink(maker)
            else:
                maker_update = _new_order(
                    maker.order_id, maker.owner, maker.side, maker.price, after, maker.size,
                    maker.client_id, maker.post_only, maker.reduce_only, maker.good_til_block,
                )  # fmt: skip
                orders[maker.order_id] = maker_update
                levels[maker.price].size -= fill

        remaining = want - filled
        taker = order if filled == 0 else _new_order(
            order.order_id, order.owner, side, order.price, remaining, order.size,
            order.client_id, order.post_only, order.reduce_only, order.good_til_block,
        )  # fmt: skip
        if remaining == 0:
            status = _FILLED
        elif tif is _GTC:
            self._rest(taker)
            events.append(_new_rested(taker))
            status = _RESTED
        else:
            events.append(_new_cancelled(taker, _IOC_REMAINDER))
            status = _CANCELLED
        return _new_result(taker, status, tuple(events), maker_update)

    def _plan(
        self, order: Order, maker_check: MakerCheck | None
    ) -> tuple[list[tuple[Order, int, CancelReason | None]], int]:
        """Walk the opposite side without mutating: the steps (maker, fill size, cancel reason or
        None for a fill) in order, and the total size filled."""
        orders = self._orders
        owner = order.owner
        limit = order.price
        need = order.remaining
        steps: list[tuple[Order, int, CancelReason | None]] = []
        buy = order.side is _BUY
        if buy:
            keys = self._ask_keys
            book = self._asks
        else:
            keys = self._bid_keys
            book = self._bids
        i = len(keys) - 1
        while i >= 0:
            price = -keys[i] if buy else keys[i]
            if (price > limit) if buy else (price < limit):
                break
            for oid in book[price].queue:
                maker = orders.get(oid)
                if maker is None or maker.price != price:
                    continue
                if maker.owner == owner:
                    steps.append((maker, 0, _STP))
                    continue
                fill = maker.remaining if maker.remaining < need else need
                if maker_check is not None and not maker_check(maker, fill, price):
                    steps.append((maker, 0, _MAKER_CHECK))
                    continue
                steps.append((maker, fill, None))
                need -= fill
                if need == 0:
                    return steps, order.remaining
            i -= 1
        return steps, order.remaining - need

    def _rest(self, order: Order) -> None:
        """Add `order` at the back of its level and to the indexes."""
        oid = order.order_id
        price = order.price
        if order.side is _BUY:
            level = self._bids.get(price)
            if level is None:
                level = self._bids[price] = _Level()
                insort(self._bid_keys, price)
        else:
            level = self._asks.get(price)
            if level is None:
                level = self._asks[price] = _Level()
                insort(self._ask_keys, -price)
        if oid <= self._highest:  # an id seen before (given back, or put back): drop its tombstone
            level.queue = deque(i for i in level.queue if i != oid)
        else:
            self._highest = oid
        level.queue.append(oid)
        level.size += order.remaining
        level.count += 1
        self._orders[oid] = order
        ids = self._by_owner.get(order.owner)
        if ids is None:
            self._by_owner[order.owner] = {oid: None}
        else:
            ids[oid] = None
        gtb = order.good_til_block
        if gtb:
            ids = self._by_gtb.get(gtb)
            if ids is None:
                self._by_gtb[gtb] = {oid: None}
                heapq.heappush(self._gtb_heap, gtb)
            else:
                ids[oid] = None

    def _unlink(self, order: Order) -> None:
        """Remove `order` (already popped from `_orders`) from its level and the indexes."""
        oid = order.order_id
        price = order.price
        if order.side is _BUY:
            book = self._bids
            keys = self._bid_keys
            key = price
        else:
            book = self._asks
            keys = self._ask_keys
            key = -price
        level = book[price]
        level.count -= 1
        if level.count == 0:
            del book[price]
            del keys[bisect_left(keys, key)]
        else:
            level.size -= order.remaining
            queue = level.queue
            orders = self._orders
            while (head := orders.get(queue[0])) is None or head.price != price:
                queue.popleft()
            if len(queue) > 2 * level.count + 16:
                level.queue = deque(
                    [i for i in queue if (o := orders.get(i)) is not None and o.price == price]
                )
        ids = self._by_owner[order.owner]
        del ids[oid]
        if not ids:
            del self._by_owner[order.owner]
        gtb = order.good_til_block
        if gtb:
            ids_by_gtb = self._by_gtb.get(gtb)
            if ids_by_gtb is not None:
                del ids_by_gtb[oid]
                if not ids_by_gtb:
                    del self._by_gtb[gtb]
                    if len(self._gtb_heap) > 2 * len(self._by_gtb) + 64:
                        self._gtb_heap = sorted(self._by_gtb)

    def rewind_ids(self, next_order_id: int) -> None:
        """The market's order-id counter went back to `next_order_id` (a failed tx's ids are
        given back): the next placement may use it (every resting order's id is below it)."""
        self._last_id = next_order_id - 1

    def put(self, order: Order) -> None:
        """Make the book hold `order` as its record in state has it (mirroring a change made
        elsewhere, or undoing one): a resting order of that id at the same price, side, owner and
        expiry takes the new remaining size in place; any other (a new order, or another order
        under an id given back) rests at the place its id gives it in its level (an id below the
        newest, when a failed tx's cancel is undone, goes in between)."""
        oid = order.order_id
        old = self._orders.get(oid)
        if old is not None:
            if (
                old.price == order.price
                and old.side is order.side
                and old.owner == order.owner
                and old.good_til_block == order.good_til_block
            ):
                level = (self._bids if old.side is _BUY else self._asks)[old.price]
                level.size += order.remaining - old.remaining
                self._orders[oid] = order
                return
            self.cancel(oid)  # another order under that id (ids given back are used again)
        older = oid < self._highest
        self._rest(order)
        self._last_id = max(self._last_id, oid)
        if older:  # back in id order in its level and in the indexes whose order is observable
            level = (self._bids if order.side is _BUY else self._asks)[order.price]
            orders = self._orders
            price = order.price
            level.queue = deque(
                sorted(i for i in level.queue if (o := orders.get(i)) is not None and o.price == price)
            )
            self._by_owner[order.owner] = dict.fromkeys(sorted(self._by_owner[order.owner]))
            gtb = order.good_til_block
            if gtb:
                self._by_gtb[gtb] = dict.fromkeys(sorted(self._by_gtb[gtb]))

    def cancel(self, order_id: int) -> Order | None:
        """Remove a resting order; None if it is not on the book."""
        order = self._orders.pop(order_id, None)
        if order is not None:
            self._unlink(order)
        return order

    def cancel_owner(self, owner: bytes) -> list[Order]:
        """Remove all of `owner`'s resting orders; they are returned in ascending order id."""
        ids = self._by_owner.get(owner)
        if not ids:
            return []
        out = []
        orders = self._orders
        for oid in list(ids):
            order = orders.pop(oid)
            self._unlink(order)
            out.append(order)
        return out

    def expire(self, height: int) -> list[Order]:
        """Remove every order with 0 < good_til_block < height (an order is live through its
        good_til_block), returned in (good_til_block, order_id) order."""
        out: list[Order] = []
        heap = self._gtb_heap
        orders = self._orders
        by_gtb = self._by_gtb
        while heap and heap[0] < height:
            gtb = heapq.heappop(heap)
            ids = by_gtb.pop(gtb, None)
            if ids is None:
                continue
            for oid in ids:
                order = orders.pop(oid)
                self._unlink(order)
                out.append(order)
        return out
