"""Resting triggered orders (stop-loss / take-profit): the canonical record, its storage and the
in-memory index of one market that finds the triggers an oracle price fires in time proportional
to the number fired. The rules (placement, firing, execution) are in `execution.risk.triggers`; this
module holds only what `execution.exchange` needs too (its `Books` keep one `TriggerBook` per
market, and its cancel paths remove triggers), so it imports nothing of the exchange.

Record (`storage.schema.trigger_key(market_id, order_id)`, canonical array):

    [order_id, owner (20 bytes), side (0 buy, 1 sell), size, trigger_price, limit_price
     (0: market order once triggered), kind (0 stop-loss, 1 take-profit), reduce_only (0/1),
     client_id]

A non-zero client id is registered at `client_order_key(owner, market_id, client_id)` -> order id,
the same key resting orders use, so one client id names one live order or trigger per market.

Direction (`fires_on_rise`): a buy stop-loss and a sell take-profit fire when the oracle price is
>= the trigger price ("rise" triggers); a sell stop-loss and a buy take-profit when it is <= the
trigger price ("fall" triggers).

Index (`TriggerBook`): the live triggers by order id, the ids per owner (insertion ordered), and
two sorted lists, each with its next trigger to fire at the end, so firing pops from the end:

- rise: keys (-trigger_price, -order_id) ascending: the end is the lowest trigger price, then the
  lowest order id;
- fall: keys (trigger_price, -order_id) ascending: the end is the highest trigger price, then the
  lowest order id.

`fire(price)` therefore returns the rise triggers with trigger_price <= price by ascending
trigger price, then the fall triggers with trigger_price >= price by descending trigger price, each
price level by ascending order id: "in the direction of the move".
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections.abc import Iterable
from dataclasses import dataclass

from consensus.app import Event, EventAttribute
from execution.state import StateReader, StateView
from primitives import codec
from primitives.codec import Value
from storage import schema

OWNER_SIZE = 20
MAX_INT = 2**63 - 1
MAX_CLIENT_ID = 2**64 - 1
STOP_LOSS = 0
TAKE_PROFIT = 1
KIND_NAMES = ("stop_loss", "take_profit")
SIDE_NAMES = ("buy", "sell")


@dataclass(frozen=True, slots=True)
class TriggerOrder:
    """A resting stop-loss or take-profit order (see the module docstring)."""

    order_id: int
    owner: bytes
    side: int
    size: int
    trigger_price: int
    limit_price: int
    kind: int
    reduce_only: bool
    client_id: int

    @property
    def fires_on_rise(self) -> bool:
        """Whether it fires when the oracle price is >= the trigger price (else when <=)."""
        return (self.side == 0) == (self.kind == STOP_LOSS)

    def fires_at(self, price: int) -> bool:
        return price >= self.trigger_price if self.fires_on_rise else price <= self.trigger_price

    @property
    def is_market(self) -> bool:
        return self.limit_price == 0

    def to_fields(self) -> list[Value]:
        return [
            self.order_id,
            self.owner,
            self.side,
            self.size,
            self.trigger_price,
            self.limit_price,
            self.kind,
            int(self.reduce_only),
            self.client_id,
        ]

    def encode(self) -> bytes:
        return codec.encode(self.to_fields())

    @classmethod
    def from_fields(cls, value: Value) -> TriggerOrder:
        f = codec.field_list(value, "trigger", 9)
        return cls(
            codec.field_int(f[0], "trigger.order_id", 0, MAX_INT),
            codec.field_bytes(f[1], "trigger.owner", OWNER_SIZE),
            codec.field_int(f[2], "trigger.side", 0, 1),
            codec.field_int(f[3], "trigger.size", 1, MAX_INT),
            codec.field_int(f[4], "trigger.trigger_price", 1, MAX_INT),
            codec.field_int(f[5], "trigger.limit_price", 0, MAX_INT),
            codec.field_int(f[6], "trigger.kind", 0, 1),
            codec.field_bool(f[7], "trigger.reduce_only"),
            codec.field_int(f[8], "trigger.client_id", 0, MAX_CLIENT_ID),
        )

    @classmethod
    def decode(cls, raw: bytes) -> TriggerOrder:
        return cls.from_fields(codec.decode(raw))


# -- storage ----------------------------------------------------------------------------------------


def load_triggers(state: StateReader, market_id: int) -> list[TriggerOrder]:
    """The resting triggers of `market_id` in state, by order id."""
    return [TriggerOrder.decode(raw) for _, raw in state.iterate(schema.trigger_prefix(market_id))]


def load_trigger(state: StateReader, market_id: int, order_id: int) -> TriggerOrder | None:
    if not 0 <= order_id < 2**64:
        return None
    raw = state.get(schema.trigger_key(market_id, order_id))
    return None if raw is None else TriggerOrder.decode(raw)


def write_trigger(view: StateView, market_id: int, trigger: TriggerOrder) -> None:
    """The record and its client id."""
    view.put(schema.trigger_key(market_id, trigger.order_id), trigger.encode())
    if trigger.client_id:
        view.put(
            schema.client_order_key(trigger.owner, market_id, trigger.client_id),
            codec.encode(trigger.order_id),
        )


def delete_trigger(view: StateView, market_id: int, trigger: TriggerOrder) -> None:
    """The record and its client id."""
    view.delete(schema.trigger_key(market_id, trigger.order_id))
    if trigger.client_id:
        view.delete(schema.client_order_key(trigger.owner, market_id, trigger.client_id))


def trigger_cancelled_event(ticker: str, trigger: TriggerOrder, reason: str, log: str = "") -> Event:
    """`trigger_cancelled(order_id, market, owner, reason, log)`."""
    return Event(
        "trigger_cancelled",
        (
            EventAttribute("order_id", str(trigger.order_id)),
            EventAttribute("market", ticker),
            EventAttribute("owner", trigger.owner.hex()),
            EventAttribute("reason", reason),
            EventAttribute("log", log),
        ),
    )


# -- the index of one market ------------------------------------------------------------------------


def _rise_key(trigger: TriggerOrder) -> tuple[int, int]:
    return (-trigger.trigger_price, -trigger.order_id)


def _fall_key(trigger: TriggerOrder) -> tuple[int, int]:
    return (trigger.trigger_price, -trigger.order_id)


class TriggerBook:
    """One market's resting triggers (see the module docstring): a cache of the trigger records,
    changed together with them."""

    __slots__ = ("_by_id", "_by_owner", "_fall", "_rise")

    def __init__(self) -> None:
        self._by_id: dict[int, TriggerOrder] = {}
        self._by_owner: dict[bytes, dict[int, None]] = {}
        self._rise: list[tuple[int, int]] = []
        self._fall: list[tuple[int, int]] = []

    @classmethod
    def load(cls, state: StateReader, market_id: int) -> TriggerBook:
        return cls.of(load_triggers(state, market_id))

    @classmethod
    def of(cls, triggers: Iterable[TriggerOrder]) -> TriggerBook:
        book = cls()
        for trigger in sorted(triggers, key=lambda t: t.order_id):
            book.add(trigger)
        return book

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, order_id: int) -> bool:
        return order_id in self._by_id

    def get(self, order_id: int) -> TriggerOrder | None:
        return self._by_id.get(order_id)

    def triggers(self) -> list[TriggerOrder]:
        """Every trigger, by order id."""
        return [self._by_id[order_id] for order_id in sorted(self._by_id)]

    def owner_triggers(self, owner: bytes) -> list[TriggerOrder]:
        """`owner`'s triggers, by order id."""
        ids = self._by_owner.get(owner)
        return [] if not ids else [self._by_id[order_id] for order_id in sorted(ids)]

    def add(self, trigger: TriggerOrder) -> None:
        if trigger.order_id in self._by_id:
            raise ValueError(f"trigger {trigger.order_id} is already in the index")
        self._by_id[trigger.order_id] = trigger
        self._by_owner.setdefault(trigger.owner, {})[trigger.order_id] = None
        if trigger.fires_on_rise:
            insort(self._rise, _rise_key(trigger))
        else:
            insort(self._fall, _fall_key(trigger))

    def remove(self, order_id: int) -> TriggerOrder | None:
        """Take one trigger out of the index; None if it is not there."""
        trigger = self._by_id.pop(order_id, None)
        if trigger is None:
            return None
        if trigger.fires_on_rise:
            del self._rise[bisect_left(self._rise, _rise_key(trigger))]
        else:
            del self._fall[bisect_left(self._fall, _fall_key(trigger))]
        self._forget_owner(trigger)
        return trigger

    def remove_owner(self, owner: bytes) -> list[TriggerOrder]:
        """Take every trigger of `owner` out of the index; returned by order id."""
        out: list[TriggerOrder] = []
        for trigger in self.owner_triggers(owner):
            self.remove(trigger.order_id)
            out.append(trigger)
        return out

    def fire(self, price: int, limit: int | None = None) -> list[TriggerOrder]:
        """Take out and return every trigger that `price` fires, in firing order (module
        docstring), at most `limit` of them (the first ones in that order; the others stay, still
        next to fire). The cost is the number fired (plus the list deletions)."""
        fired: list[TriggerOrder] = []
        most = len(self._by_id) if limit is None else limit
        by_id = self._by_id
        rise = self._rise
        while rise and len(fired) < most and -rise[-1][0] <= price:
            _, negative_id = rise.pop()
            fired.append(by_id.pop(-negative_id))
        fall = self._fall
        while fall and len(fired) < most and fall[-1][0] >= price:
            _, negative_id = fall.pop()
            fired.append(by_id.pop(-negative_id))
        for trigger in fired:
            self._forget_owner(trigger)
        return fired

    def next_prices(self) -> tuple[int | None, int | None]:
        """(the lowest rise trigger price, the highest fall trigger price): the price band inside
        which nothing fires."""
        return (
            -self._rise[-1][0] if self._rise else None,
            self._fall[-1][0] if self._fall else None,
        )

    def _forget_owner(self, trigger: TriggerOrder) -> None:
        ids = self._by_owner[trigger.owner]
        del ids[trigger.order_id]
        if not ids:
            del self._by_owner[trigger.owner]

    def put(self, trigger: TriggerOrder) -> None:
        """Make the index hold `trigger` as its record in state has it (a new trigger, or one put
        back when a failed tx's cancel is undone)."""
        self.remove(trigger.order_id)
        self.add(trigger)
