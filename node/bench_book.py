"""`derivd bench book`: order-book operations per second on one core, for one market.

The mix is realistic for a busy perpetual market: about 60% placements that rest near the top of
the book (70% of them within 10 ticks of it, the rest up to 200 ticks behind; 20% post-only),
30% cancels of resting orders, 10% crossing orders (80% IOC, 20% GTC) sized to fill one to a few
makers; 200 owners, so self-trade prevention triggers now and then;
half the placements are short-term (good-til-block a few blocks ahead) and the book is expired
once per simulated block of 1,000 operations (expiry is timed but not counted as an operation).

The operations are generated first with `random.Random(seed)` by driving a scratch book (so the
cancels name resting orders and crossing orders know the book), then replayed on a fresh book under
the timer: generation is not timed. The replay must end with the same L3 book as the generation run,
which is checked (the book is deterministic). No maker_check callback is passed (that cost is the
application's).
"""

from __future__ import annotations

import gc
import random
import time
from itertools import islice
from typing import Any

from execution.exchange.orderbook import Fill, Order, OrderBook, OrderRested, Side, TimeInForce

OPS_PER_BLOCK = 1_000
OWNERS = 200
START_PRICE = 100_000

# an operation: (0, order, tif) place, (1, order_id, None) cancel, (2, height, None) expire
Op = tuple[int, Any, Any]


def _offset(rng: random.Random) -> int:
    """Ticks behind the top for a resting order: mostly within 10, sometimes up to 200."""
    return rng.randint(0, 9) if rng.random() < 0.7 else rng.randint(10, 200)


def _generate(operations: int, seed: int) -> tuple[list[Op], dict[str, int], OrderBook]:
    """The operations, the counts of what they did, and the scratch book they leave."""
    rng = random.Random(seed)
    owners = [rng.randbytes(20) for _ in range(OWNERS)]
    book = OrderBook()
    ops: list[Op] = []
    live: list[int] = []  # ids that may still rest (checked lazily)
    counts = dict.fromkeys(
        ("placements", "cancels", "fills", "rested", "taker_cancels", "maker_cancels", "expired"), 0
    )
    next_id = 1
    counted = 0
    height = 1
    while counted < operations:
        if counted and counted % OPS_PER_BLOCK == 0 and ops[-1][0] != 2:
            height += 1
            ops.append((2, height, None))
            counts["expired"] += len(book.expire(height))
            continue
        roll = rng.random()
        bid, ask = book.best_bid(), book.best_ask()
        if roll < 0.30 and live:
            # cancel a resting order
            while live:
                j = rng.randrange(len(live))
                oid = live[j]
                live[j] = live[-1]
                live.pop()
                if book.cancel(oid) is not None:
                    ops.append((1, oid, None))
                    counts["cancels"] += 1
                    counted += 1
                    break
            continue
        owner = owners[rng.randrange(OWNERS)]
        gtb = height + rng.randint(2, 20) if rng.random() < 0.5 else 0
        side = Side.BUY if rng.random() < 0.5 else Side.SELL
        if roll < 0.40 and bid is not None and ask is not None:
            # crossing: take one to a few makers from the opposite side
            makers = list(islice(book.iter_orders(Side.SELL if side is Side.BUY else Side.BUY), 3))
            k = rng.randint(1, len(makers))
            size = sum(m.remaining for m in makers[:k])
            if rng.random() < 0.5:
                size -= rng.randint(0, makers[k - 1].remaining - 1)
            price = makers[k - 1].price
            tif = TimeInForce.IOC if rng.random() < 0.8 else TimeInForce.GTC
        else:
            # rest near the top
            if side is Side.BUY:
                top = ask - 1 if ask is not None else (bid if bid is not None else START_PRICE)
                price = top - _offset(rng)
            else:
                top = bid + 1 if bid is not None else (ask if ask is not None else START_PRICE + 1)
                price = top + _offset(rng)
            size = rng.choice((1, 1, 2, 3, 5, 8, 10, 20, 50, 100))
            tif = TimeInForce.POST_ONLY if rng.random() < 0.2 else TimeInForce.GTC
        order = Order.limit(next_id, owner, side, price, size, client_id=next_id, good_til_block=gtb)
        next_id += 1
        ops.append((0, order, tif))
        result = book.place(order, tif)
        counts["placements"] += 1
        for event in result.events:
            if isinstance(event, Fill):
                counts["fills"] += 1
            elif isinstance(event, OrderRested):
                counts["rested"] += 1
                live.append(order.order_id)
            elif event.order.order_id == order.order_id:
                counts["taker_cancels"] += 1
            else:
                counts["maker_cancels"] += 1
        counted += 1
    return ops, counts, book


def _time(ops: list[Op]) -> tuple[float, OrderBook]:
    """Seconds spent replaying `ops` on a fresh book (only the book calls), and the book."""
    book = OrderBook()
    place = book.place
    cancel = book.cancel
    expire = book.expire
    gc.collect()
    start = time.perf_counter()
    for kind, arg, tif in ops:
        if kind == 0:
            place(arg, tif)
        elif kind == 1:
            cancel(arg)
        else:
            expire(arg)
    elapsed = time.perf_counter() - start
    return elapsed, book


def bench_book(operations: int = 500_000, seed: int = 1) -> dict[str, Any]:
    """Order-book operations per second (one core, one market) for the mix in the module doc.

    Returns the figure with the counts of what the operations did; the counts depend only on
    `operations` and `seed`."""
    ops, counts, scratch = _generate(operations, seed)
    elapsed, book = _time(ops)
    if book.orders() != scratch.orders():
        raise AssertionError("the timed replay diverged from the generation run")
    return {
        "operations": operations,
        "seed": seed,
        "seconds": round(elapsed, 4),
        "ops_per_second": round(operations / elapsed),
        **counts,
        "resting_at_end": len(book),
        "levels_at_end": book.level_count(Side.BUY) + book.level_count(Side.SELL),
    }


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(bench_book(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000), indent=2))
