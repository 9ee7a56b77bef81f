"""The holder index: who holds a position on each market, the healthy price band the liquidation
pass (`execution.risk.liquidation`) last computed for each holder, and each band's adverse edge
sorted by price, so that a price move finds the holders it may push out with one range read per
market and side, without reading the others.

Keys (`storage.schema`), for a holder o of market m (a non-zero position):
- `holder_key(m, o)`: `HOLDER_UNKNOWN` (`[0, 0]`, no band known) or the key of its band's edge (a
  byte string): the account is healthy while the price P of m stays within lo < P < hi and m's
  funding index stays what it was when the band was computed (funding: below);
- `a:hbu:` m o, while the band is unknown (such holders are checked on every move);
- the edge, a marker (value `0`): a long's low edge under `a:hbl:` ordered by
  `lo * D - clock * N`, a short's high edge under `a:hbh:` ordered by `-(hi * D + clock * N)` (32
  bytes, big-endian, offset by 2**255), N / D being m's funding shift rate (below). Only the adverse
  edge is kept: a long loses value (net of its maintenance requirement) only when the price falls
  or it pays funding (the index rises), a short only when the price rises or it pays (the index
  falls).

Funding. A change d of m's index costs a position at most what an adverse price move of
ceil(|d| * N / D) subticks would (the rate N / D: `execution.risk.liquidation.funding_shift_rate`,
given to `set_band` and `crossed` by the caller; None for a market with a maintenance margin of
100% or more, whose holders are all crossed on every move), and only payers lose: longs when the
index rises, shorts when it falls. m's two funding clocks (kept by the liquidation pass in m's
mark) sum every rise (`up`) and every fall (`down`) of the index the pass has seen; a band keeps
the clock of its side when computed, so what a long has paid since is at most (up now - up then)
and a short's (down now - down then). A long's band therefore still guarantees health at (P, up
now) when lo + ceil((up_now - up) * N / D) < P; it may not when

    lo * D - up * N > (P - 1) * D - up_now * N

and a short's when hi - ceil((down_now - down) * N / D) <= P, that is when

    -(hi * D + down * N) > -((P + 1) * D + down_now * N)

(integers, exact). `crossed` reads each side from that bound: every holder whose band no longer
guarantees health, a few more when the index went back and forth (a clock only grows), never
fewer; plus the holders whose band is unknown.

Writers: `index_holder` (a position's size becomes non-zero or zero: the band becomes unknown, or
the holder's keys go), `set_band` (the liquidation pass, after checking an account).
"""

from __future__ import annotations

from execution.state import StateView
from primitives import codec
from storage import schema

Rate = tuple[int, int] | None
"""(N, D) of a market's funding shift (module docstring), None when it has none."""
HOLDER_UNKNOWN = codec.encode([0, 0])
"""The holder-index value of a holder whose healthy price band is not known (always checked)."""
_MARK = codec.encode(0)
_OFFSET = 1 << 255
_KEY_SIZE = 32


def _order_key(value: int) -> bytes:
    """`value` as 32 sortable bytes (clamped to the range, which every edge lies well within)."""
    return min(max(value + _OFFSET, 0), (1 << (8 * _KEY_SIZE)) - 1).to_bytes(_KEY_SIZE, "big")


def _low_prefix(market_id: int) -> bytes:
    return schema.APP_BAND_LOW_PREFIX + schema.market_id_bytes(market_id)


def _high_prefix(market_id: int) -> bytes:
    return schema.APP_BAND_HIGH_PREFIX + schema.market_id_bytes(market_id)


def _unknown_prefix(market_id: int) -> bytes:
    return schema.APP_BAND_UNKNOWN_PREFIX + schema.market_id_bytes(market_id)


def _derived_key(market_id: int, owner: bytes, raw: bytes) -> bytes:
    """The index entry that holder value `raw` says exists (its edge, or the unknown marker)."""
    if raw == HOLDER_UNKNOWN:
        return _unknown_prefix(market_id) + owner
    return codec.field_bytes(codec.decode(raw), "holder band edge")


def index_holder(view: StateView, market_id: int, owner: bytes, before: int | None, after: int) -> None:
    """Keep the index when `owner`'s position on `market_id` is written: `before` is its size in
    `view` before the write of `after` (None: unknown, the holder key decides). A new holder's
    band is unknown; a holder whose size becomes zero leaves the index."""
    key = schema.holder_key(market_id, owner)
    old = view.get(key) if before is None else None
    had = old is not None if before is None else before != 0
    if had and after == 0:
        old = view.get(key) if old is None else old
        if old is not None:
            view.delete(_derived_key(market_id, owner, old))
            view.delete(key)
    elif not had and after != 0:
        view.put(key, HOLDER_UNKNOWN)
        view.put(_unknown_prefix(market_id) + owner, _MARK)


def set_band(
    view: StateView,
    market_id: int,
    owner: bytes,
    band: tuple[int, int] | None,
    *,
    long: bool,
    clock: int,
    rate: Rate,
) -> None:
    """Record the band `(lo, hi)` (None: unknown) of `owner`, a holder of `market_id` (a long if
    `long`), computed at the funding `clock` of its side, the market's funding shift `rate`.
    Nothing is written if the recorded edge is on the same side and its order key is at least the
    new one's: it is then crossed whenever the new one would be (a narrower band stays true of the
    account as it is now), so it still guarantees what the new one would."""
    key = schema.holder_key(market_id, owner)
    if band is None or rate is None:
        side = _unknown_prefix(market_id)
        raw, entry = HOLDER_UNKNOWN, side + owner
    else:
        lo, hi = band
        n, d = rate
        side = _low_prefix(market_id) if long else _high_prefix(market_id)
        entry = side + _order_key(lo * d - clock * n if long else -(hi * d + clock * n)) + owner
        raw = codec.encode(entry)
    old = view.get(key)
    if old == raw:
        return
    if old is not None and HOLDER_UNKNOWN not in (raw, old):
        kept = _derived_key(market_id, owner, old)
        if kept.startswith(side) and kept >= entry:  # same side, crossed no later
            return
    if old is not None:
        view.delete(_derived_key(market_id, owner, old))
    view.put(key, raw)
    view.put(entry, _MARK)


def crossed(view: StateView, market_id: int, price: int, up: int, down: int, rate: Rate) -> list[bytes]:
    """The holders of `market_id` whose band may no longer guarantee health at `price` and the
    funding clocks `up` and `down` (module docstring; `rate` the market's funding shift): unknown
    bands, then longs, then shorts, each in key order (a holder is listed once: it is on one
    side)."""
    if rate is None:
        prefix = schema.holder_prefix(market_id)
        return [key[len(prefix) :] for key, _ in view.iterate(prefix)]
    n, d = rate
    owner_at = -schema.OWNER_SIZE
    found = [key[owner_at:] for key, _ in view.iterate(_unknown_prefix(market_id))]
    low = _low_prefix(market_id)
    found.extend(
        key[owner_at:] for key, _ in view.iterate(low, start=low + _order_key((price - 1) * d - up * n + 1))
    )
    high = _high_prefix(market_id)
    found.extend(
        key[owner_at:]
        for key, _ in view.iterate(high, start=high + _order_key(-((price + 1) * d + down * n) + 1))
    )
    return found


def unknown_band_holders(view: StateView, market_id: int) -> list[bytes]:
    """The holders of `market_id` whose band is unknown, in key order (one range read)."""
    owner_at = -schema.OWNER_SIZE
    return [key[owner_at:] for key, _ in view.iterate(_unknown_prefix(market_id))]
