"""The derived indexes: records that are a function of other records (`schema.DERIVED_PREFIXES`).

- `a:cid:` (owner, market, client id) -> order id: one per resting order (`a:ord:`) or trigger
  order (`a:trg:`) with a non-zero client id;
- `a:pmk:` owner -> the ids of the markets of its position records (`a:pos:`), ascending.

The code that writes the records keeps them (`execution.exchange`, `execution.positions`) and
execution reads them like any record, but they are not in the state tree: the app hash commits to
the records they are made from, and they are a third of a block's writes. A snapshot carries the
tree's keys only, so a restored node makes them (`add_to_restore`); the chain tests check after every
block that the kept indexes equal what `rebuild` makes of the state.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from execution.exchange.orderbook import Order
from execution.exchange.trigger_book import TriggerOrder
from execution.positions.position import MarketIds
from primitives import codec
from storage import schema
from storage.db import WriteBatch

_MARKET = slice(6, 6 + schema.MARKET_ID_SIZE)  # after `a:ord:` or `a:trg:`
_OWNER = slice(len(schema.APP_POSITION_PREFIX), len(schema.APP_POSITION_PREFIX) + schema.OWNER_SIZE)


def rebuild(records: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The derived indexes of the state whose records (every `a:` key and value, in any order)
    are `records`, sorted by key; ValueError if an order, trigger or position key is malformed."""
    out: list[tuple[bytes, bytes]] = []
    markets: dict[bytes, list[int]] = {}
    for key, value in records:
        live: Order | TriggerOrder
        if key.startswith(schema.APP_ORDER_PREFIX):
            live = Order.from_fields(codec.decode(value))
        elif key.startswith(schema.APP_TRIGGER_PREFIX):
            live = TriggerOrder.decode(value)
        elif key.startswith(schema.APP_POSITION_PREFIX):
            markets.setdefault(key[_OWNER], []).append(schema.market_id_from_position_key(key))
            continue
        else:
            continue
        if live.client_id:
            market_id = int.from_bytes(key[_MARKET], "big")
            index = schema.client_order_key(live.owner, market_id, live.client_id)
            out.append((index, codec.encode(live.order_id)))
    for owner, ids in markets.items():
        out.append((schema.owner_markets_key(owner), MarketIds(tuple(sorted(ids))).encode()))
    out.sort()
    return out


def add_to_restore(batch: WriteBatch) -> None:
    """Put into `batch`, a snapshot restore's (`storage.snapshot.Restore.finish`), the derived indexes
    of the state it writes (a snapshot carries the state tree's keys only)."""
    restored = (op for op in batch.ops if op[1] is not None and op[0].startswith(schema.APP_PREFIX))
    for key, value in rebuild(cast(Iterable[tuple[bytes, bytes]], restored)):
        batch.put(key, value)
