"""Perpetual markets: the `Market` record (units and parameters), its storage, the integer unit
arithmetic every module uses, and the human-decimal conversions of the CLI and queries.

Units (dYdX v4's quantums and subticks):

- size: signed **base quantums**; one base quantum is `10**atomic_resolution` base units (BTC -10:
  1 quantum = 1e-10 BTC). Order sizes are positive multiples of `step_base_quantums`, at least
  `min_order_base_quantums`.
- price: **subticks**; order prices are positive multiples of `subticks_per_tick`. The USD price
  of one base unit is `price * 10**(quantum_conversion_exponent - atomic_resolution - 6)`.
- quote: **quote quantums** (1e-6 USD, the unit of `Account.balance`). The notional of `size` at
  `price` is `size * price * 10**quantum_conversion_exponent`. Genesis validation requires
  `step_base_quantums * subticks_per_tick * 10**quantum_conversion_exponent` to be a positive
  integer, so the notional of an aligned size at an aligned price (every fill) is exact
  (`notional`). Values at an unaligned price (the oracle's) use `value_floor` / `value_ceil`.

A market is a perpetual, or an option series when it carries `OptionTerms` (European, cash-settled,
on the perpetual `underlying_id` whose atomic resolution and quantum conversion exponent it shares,
so strikes and option prices are subticks of the underlying per base unit, one base unit of the
option being one of the underlying; the series' life is `execution.options.series`). A market
lives at `storage.schema.market_key(market_id)` as the canonical array of its fields in declaration
order, the ticker as UTF-8 bytes, an option's terms as a last array `[underlying, expiry_ns,
strike, call]`.

The human conversions (`price_to_human`, `human_to_price`, `size_to_human`, `human_to_size`,
`quote_to_human`, `human_to_quote`) are integer and string arithmetic only, exact both ways: a
human value that is not a whole number of units is a ValueError, never rounded. They serve the CLI
and queries; no state transition depends on them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from execution.state import StateReader, StateView
from primitives import codec
from primitives.codec import DecodeError, Value
from primitives.timefmt import format_rfc3339
from storage import schema

T = TypeVar("T")

MAX_INT = 2**63 - 1
MAX_MARKET_ID = 2**32 - 1
PPM = 1_000_000
QUOTE_DECIMALS = 6
MAX_TICKER_BYTES = 32
MIN_EXPONENT = -30
MAX_EXPONENT = 30
TICKER_PATTERN = re.compile(r"[A-Z0-9]{1,15}-[A-Z0-9]{1,15}")
OPTION_TICKER_PATTERN = re.compile(
    r"[A-Z0-9]{1,15}-[0-9]{1,2}[A-Z]{3}[0-9]{2}(T[0-9]{4}([0-9]{2})?)?-[0-9]{1,15}(D[0-9]{1,9})?-[CP]"
)
"""An option series' ticker, Deribit's form (`option_ticker`): underlying base, expiry date (and
its UTC time, THHMM or THHMMSS, unless it is Deribit's 08:00), strike (a decimal point written D),
C or P ("BTC-31DEC26-70000-C", "BTC-5DEC26T1315-65000-P")."""
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

MARKET_FIELDS = (
    "id",
    "ticker",
    "atomic_resolution",
    "quantum_conversion_exponent",
    "subticks_per_tick",
    "step_base_quantums",
    "min_order_base_quantums",
    "initial_margin_ppm",
    "maintenance_margin_ppm",
    "maker_fee_ppm",
    "taker_fee_ppm",
    "max_open_orders",
    "max_orders_per_block",
    "initial_price",
)
"""The keys of a market in the genesis JSON (`id` is `market_id`), in `Market` field order; an
option series has one more, `option` (`OPTION_FIELDS`)."""
_INT_FIELDS = MARKET_FIELDS[2:]
OPTION_FIELDS = ("underlying", "expiry", "strike", "call")
"""The keys of a market's `option` object in the genesis JSON: the underlying's market id, the
expiry time (RFC 3339), the strike (subticks, on the tick) and whether it is a call (a JSON bool)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OptionTerms:
    """An option series' terms: European, cash-settled on `underlying_id`'s oracle price at the first
    block whose time is at or after `expiry_ns`."""

    underlying_id: int
    expiry_ns: int
    strike: int
    call: bool

    def to_fields(self) -> Value:
        return [self.underlying_id, self.expiry_ns, self.strike, int(self.call)]

    @classmethod
    def from_fields(cls, value: Value, name: str) -> OptionTerms:
        f = codec.field_list(value, name, len(OPTION_FIELDS))
        return cls(
            underlying_id=codec.field_int(f[0], f"{name}.underlying", 0, MAX_MARKET_ID),
            expiry_ns=codec.field_int(f[1], f"{name}.expiry", 0, MAX_INT),
            strike=codec.field_int(f[2], f"{name}.strike", 0, MAX_INT),
            call=codec.field_bool(f[3], f"{name}.call"),
        )


@dataclass(frozen=True, slots=True)
class Market:
    """One perpetual market's units and parameters (see the module docstring for the units)."""

    market_id: int
    ticker: str
    atomic_resolution: int
    quantum_conversion_exponent: int
    subticks_per_tick: int
    step_base_quantums: int
    min_order_base_quantums: int
    initial_margin_ppm: int
    maintenance_margin_ppm: int
    maker_fee_ppm: int
    taker_fee_ppm: int
    max_open_orders: int
    max_orders_per_block: int
    initial_price: int
    option: OptionTerms | None = None
    """None: a perpetual."""

    def to_fields(self) -> Value:
        values: list[Value] = [self.market_id, self.ticker.encode()]
        values.extend(getattr(self, name) for name in _INT_FIELDS)
        if self.option is not None:
            values.append(self.option.to_fields())
        return values

    def encode(self) -> bytes:
        return codec.encode(self.to_fields())

    @classmethod
    def from_fields(cls, value: Value, name: str = "market") -> Market:
        f = codec.field_list(value, name)
        if len(f) not in (len(MARKET_FIELDS), len(MARKET_FIELDS) + 1):
            raise DecodeError(f"{name}: expected {len(MARKET_FIELDS)} or {len(MARKET_FIELDS) + 1} fields")
        names = [field.name for field in fields(cls)]
        ticker = codec.field_text(f[1], f"{name}.ticker", MAX_TICKER_BYTES)
        ints = [
            codec.field_int(f[i], f"{name}.{names[i]}", -MAX_INT, MAX_INT)
            for i in range(len(MARKET_FIELDS))
            if i != 1
        ]
        option = (
            OptionTerms.from_fields(f[len(MARKET_FIELDS)], f"{name}.option")
            if len(f) > len(MARKET_FIELDS)
            else None
        )
        values: dict[str, Any] = dict(zip(_INT_FIELDS, ints[1:], strict=True))
        market = cls(market_id=ints[0], ticker=ticker, option=option, **values)
        problem = market_error(market)
        if problem is not None:
            raise DecodeError(f"{name}.{problem[0]}: {problem[1]}")
        return market

    @classmethod
    def decode(cls, raw: bytes) -> Market:
        return cls.from_fields(codec.decode(raw))

    def to_json(self) -> dict[str, Any]:
        """The genesis JSON object of this market (`MARKET_FIELDS`, integers as JSON ints, and an
        option's `option` object)."""
        obj: dict[str, Any] = {"id": self.market_id, "ticker": self.ticker}
        obj.update((name, getattr(self, name)) for name in _INT_FIELDS)
        if self.option is not None:
            obj["option"] = {
                "underlying": self.option.underlying_id,
                "expiry": format_rfc3339(self.option.expiry_ns),
                "strike": self.option.strike,
                "call": self.option.call,
            }
        return obj


def market_error(m: Market) -> tuple[str, str] | None:
    """The first rule `m` breaks as (genesis JSON field name, reason), or None if it is valid."""
    if not 1 <= m.market_id <= MAX_MARKET_ID:
        return "id", f"must be in [1, {MAX_MARKET_ID}], got {m.market_id}"
    if m.option is None and not TICKER_PATTERN.fullmatch(m.ticker):
        return "ticker", f"must look like BASE-QUOTE in upper-case letters and digits, got {m.ticker!r}"
    if m.option is not None:
        problem = _option_error(m, m.option)
        if problem is not None:
            return problem
    for name, value in (
        ("atomic_resolution", m.atomic_resolution),
        ("quantum_conversion_exponent", m.quantum_conversion_exponent),
    ):
        if not MIN_EXPONENT <= value <= MAX_EXPONENT:
            return name, f"must be in [{MIN_EXPONENT}, {MAX_EXPONENT}], got {value}"
    for name, value in (
        ("subticks_per_tick", m.subticks_per_tick),
        ("step_base_quantums", m.step_base_quantums),
        ("min_order_base_quantums", m.min_order_base_quantums),
        ("max_open_orders", m.max_open_orders),
        ("max_orders_per_block", m.max_orders_per_block),
        ("initial_price", m.initial_price),
    ):
        if not 1 <= value <= MAX_INT:
            return name, f"must be a positive integer up to {MAX_INT}, got {value}"
    if m.min_order_base_quantums % m.step_base_quantums != 0:
        return (
            "min_order_base_quantums",
            f"must be a multiple of step_base_quantums {m.step_base_quantums}, "
            f"got {m.min_order_base_quantums}",
        )
    if not _is_positive_integer_scaled(
        m.step_base_quantums * m.subticks_per_tick, m.quantum_conversion_exponent
    ):
        return (
            "quantum_conversion_exponent",
            f"step_base_quantums * subticks_per_tick * 10**quantum_conversion_exponent = "
            f"{m.step_base_quantums} * {m.subticks_per_tick} * 10**{m.quantum_conversion_exponent} "
            "must be an integer (so that aligned notionals are exact)",
        )
    if not 1 <= m.initial_margin_ppm <= PPM:
        return "initial_margin_ppm", f"must be in [1, {PPM}], got {m.initial_margin_ppm}"
    if not 1 <= m.maintenance_margin_ppm <= m.initial_margin_ppm:
        return (
            "maintenance_margin_ppm",
            f"must be in [1, initial_margin_ppm {m.initial_margin_ppm}], got {m.maintenance_margin_ppm}",
        )
    for name, value in (("maker_fee_ppm", m.maker_fee_ppm), ("taker_fee_ppm", m.taker_fee_ppm)):
        if not 0 <= value <= PPM:
            return name, f"must be in [0, {PPM}], got {value}"
    return None


def option_ticker(underlying: Market, expiry_ns: int, strike: int, call: bool) -> str:
    """The Deribit-style ticker of a series on `underlying` ("BTC-31DEC26-70000-C"; an expiry at
    another time of day than 08:00 UTC adds it: "BTC-31DEC26T1315-70000-C")."""
    date = format_rfc3339(expiry_ns)  # YYYY-MM-DDThh:mm:ss[.fraction]Z
    day, month, year = int(date[8:10]), _MONTHS[int(date[5:7]) - 1], date[2:4]
    clock = date[11:19].replace(":", "")
    if clock != "080000":
        year += "T" + (clock[:4] if clock.endswith("00") else clock)
    base = underlying.ticker.split("-", 1)[0]
    strike_text = price_to_human(underlying, strike).replace(".", "D")
    return f"{base}-{day}{month}{year}-{strike_text}-{'C' if call else 'P'}"


def _option_error(m: Market, terms: OptionTerms) -> tuple[str, str] | None:
    """The first rule an option series' own fields break (the underlying is checked against the
    other markets by genesis)."""
    if not OPTION_TICKER_PATTERN.fullmatch(m.ticker):
        return "ticker", f"an option's ticker looks like BTC-31DEC26-70000-C, got {m.ticker!r}"
    if not 1 <= terms.underlying_id <= MAX_MARKET_ID or terms.underlying_id == m.market_id:
        return "option.underlying", f"must be another market's id, got {terms.underlying_id}"
    if terms.expiry_ns <= 0:
        return "option.expiry", f"must be after 1970, got {terms.expiry_ns} ns"
    if not 1 <= terms.strike <= MAX_INT or terms.strike % m.subticks_per_tick != 0:
        return (
            "option.strike",
            f"must be a positive multiple of subticks_per_tick {m.subticks_per_tick}, got {terms.strike}",
        )
    return None


_POW10: tuple[int, ...] = tuple(int(10**k) for k in range(64))
"""10**k for the exponents that occur (the unit arithmetic asks for a few, again and again)"""


def pow10(k: int) -> int:
    """10**k for k >= 0 (typed as int)."""
    if 0 <= k < 64:
        return _POW10[k]
    if k < 0:
        raise ValueError(f"negative power of ten {k}")
    return int(10**k)


def _is_positive_integer_scaled(n: int, exponent: int) -> bool:
    """Whether n * 10**exponent is a positive integer."""
    if n <= 0:
        return False
    return exponent >= 0 or n % pow10(-exponent) == 0


def default_markets() -> list[Market]:
    """BTC-USD and ETH-USD with dYdX v4's units: the markets of the default and testnet genesis."""
    common: dict[str, Any] = {
        "quantum_conversion_exponent": -9,
        "subticks_per_tick": 100_000,
        "step_base_quantums": 1_000_000,
        "min_order_base_quantums": 1_000_000,
        "initial_margin_ppm": 50_000,
        "maintenance_margin_ppm": 30_000,
        "maker_fee_ppm": 100,
        "taker_fee_ppm": 500,
        "max_open_orders": 100,
        "max_orders_per_block": 50,
    }
    return [
        # 6_500_000_000 subticks * 10**(-9 + 10 - 6) = $65,000 per BTC; tick $1; step 0.0001 BTC
        Market(market_id=1, ticker="BTC-USD", atomic_resolution=-10, initial_price=6_500_000_000, **common),
        # 3_500_000_000 subticks * 10**(-9 + 9 - 6) = $3,500 per ETH; tick $0.1; step 0.001 ETH
        Market(market_id=2, ticker="ETH-USD", atomic_resolution=-9, initial_price=3_500_000_000, **common),
    ]


# -- storage -------------------------------------------------------------------------------------


def load_market(state: StateReader, market_id: int) -> Market | None:
    """The market of `market_id`, None if there is none (or the id is out of range)."""
    if not 0 <= market_id <= MAX_MARKET_ID:
        return None
    raw = state.get(schema.market_key(market_id))
    return None if raw is None else Market.decode(raw)


def load_markets(state: StateReader) -> list[Market]:
    """Every market, by id."""
    return [Market.decode(raw) for _, raw in state.iterate(schema.APP_MARKET_PREFIX)]


def store_market(view: StateView, market: Market) -> None:
    view.put(schema.market_key(market.market_id), market.encode())


def market_by_ticker(state: StateReader, ticker: str) -> Market | None:
    """The market whose ticker is `ticker` (exact match), None if there is none."""
    for market in load_markets(state):
        if market.ticker == ticker:
            return market
    return None


# -- unit arithmetic (state transitions use these) -----------------------------------------------


def scale_floor(n: int, exponent: int) -> int:
    """floor(n * 10**exponent)."""
    if exponent >= 0:
        return n * pow10(exponent)
    return n // pow10(-exponent)


def scale_ceil(n: int, exponent: int) -> int:
    """ceil(n * 10**exponent)."""
    if exponent >= 0:
        return n * pow10(exponent)
    return -(-n // pow10(-exponent))


def notional(m: Market, size: int, price: int) -> int:
    """The exact quote value of `size` base quantums at `price` subticks (signed like `size`);
    ValueError if it is not a whole number of quote quantums (an unaligned size or price)."""
    product = size * price
    exponent = m.quantum_conversion_exponent
    if exponent < 0 and product % pow10(-exponent) != 0:
        raise ValueError(
            f"notional of size {size} at price {price} on {m.ticker} is not a whole quote quantum"
        )
    return scale_floor(product, exponent)


def value_floor(m: Market, size: int, price: int) -> int:
    """floor(size * price * 10**qce): a signed value, rounded down (toward -infinity)."""
    return scale_floor(size * price, m.quantum_conversion_exponent)


def value_ceil(m: Market, size: int, price: int) -> int:
    """ceil(size * price * 10**qce): a signed value, rounded up (toward +infinity)."""
    return scale_ceil(size * price, m.quantum_conversion_exponent)


def ppm_of_value_ceil(m: Market, size: int, price: int, ppm: int) -> int:
    """ceil(size * price * 10**qce * ppm / 1e6) in one rounding (requirements and fees)."""
    return scale_ceil(size * price * ppm, m.quantum_conversion_exponent - QUOTE_DECIMALS)


def slice_size(m: Market, base: int, fraction_ppm: int, min_notional: int, price: int) -> int:
    """The most of a position of |size| `base` one block may close (liquidation and the insurance
    fund's unwind): max(ceil(base * fraction_ppm / 1e6), the size of `min_notional` quote quantums
    at `price`) rounded up to the step, at most `base`."""
    by_fraction = -(-base * fraction_ppm // 1_000_000)
    e = m.quantum_conversion_exponent
    by_notional = -(-min_notional * pow10(-e) // price) if e <= 0 else -(-min_notional // (price * pow10(e)))
    step = m.step_base_quantums
    return min(base, -(-max(by_fraction, by_notional) // step) * step)


def rotated(markets: Sequence[T], height: int) -> list[T]:
    """`markets` (by id) from index `height % len(markets)`, wrapping around: the market order of
    the end-of-block stages that share a per-block budget, each market leading in turn."""
    if not markets:
        return []
    start = height % len(markets)
    return [*markets[start:], *markets[:start]]


def is_on_tick(m: Market, price: int) -> bool:
    return price > 0 and price % m.subticks_per_tick == 0


def is_on_step(m: Market, size: int) -> bool:
    return size % m.step_base_quantums == 0


# -- human decimals (CLI and queries only) -------------------------------------------------------

_DECIMAL = re.compile(r"([+-]?)(\d*)(?:\.(\d*))?")


def _parse_decimal(text: str) -> tuple[int, int]:
    """`text` as (mantissa, exponent) with value mantissa * 10**exponent; ValueError if it is not a
    plain decimal number (digits, an optional sign and point; no exponent, no spaces)."""
    match = _DECIMAL.fullmatch(text) if text.isascii() else None
    if match is None or not (match.group(2) or match.group(3)):
        raise ValueError(f"not a decimal number: {text!r}")
    sign, whole, frac = match.group(1), match.group(2), match.group(3) or ""
    mantissa = int((whole or "0") + frac)
    return (-mantissa if sign == "-" else mantissa), -len(frac)


def _exact_units(text: str, exponent: int, what: str) -> int:
    """The integer n with n * 10**exponent == value of `text`; ValueError if there is none."""
    mantissa, exp = _parse_decimal(text)
    shift = exp - exponent  # n = mantissa * pow10(shift)
    if shift >= 0:
        return mantissa * pow10(shift)
    divisor = pow10(-shift)
    if mantissa % divisor != 0:
        raise ValueError(f"{text!r} is not a whole number of {what} (unit 10**{exponent})")
    return mantissa // divisor


def format_scaled(n: int, exponent: int) -> str:
    """The exact decimal string of n * 10**exponent, without trailing fractional zeros."""
    if exponent >= 0:
        return str(n * 10**exponent)
    digits = str(abs(n)).rjust(-exponent + 1, "0")
    whole, frac = digits[:exponent], digits[exponent:].rstrip("0")
    sign = "-" if n < 0 else ""
    return f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"


def price_exponent(m: Market) -> int:
    """e with one subtick of `m` = 10**e USD per base unit."""
    return m.quantum_conversion_exponent - m.atomic_resolution - QUOTE_DECIMALS


def price_to_human(m: Market, subticks: int) -> str:
    """USD per base unit, e.g. "65000" for 6_500_000_000 subticks on BTC-USD."""
    return format_scaled(subticks, price_exponent(m))


def human_to_price(m: Market, text: str) -> int:
    """Subticks of a USD price per base unit ("65000.5"); ValueError if not a whole subtick."""
    return _exact_units(text, price_exponent(m), f"subticks of {m.ticker}")


def size_to_human(m: Market, size: int) -> str:
    """Base units, e.g. "0.5" for 5_000_000_000 base quantums on BTC-USD."""
    return format_scaled(size, m.atomic_resolution)


def human_to_size(m: Market, text: str) -> int:
    """Base quantums of a size in base units ("0.5"); ValueError if not a whole quantum."""
    return _exact_units(text, m.atomic_resolution, f"base quantums of {m.ticker}")


def quote_to_human(amount: int) -> str:
    """USD of an amount of quote quantums (micro-USD), e.g. "1.5" for 1_500_000."""
    return format_scaled(amount, -QUOTE_DECIMALS)


def human_to_quote(text: str) -> int:
    """Quote quantums of a USD amount ("1.5"); ValueError beyond 6 decimals."""
    return _exact_units(text, -QUOTE_DECIMALS, "quote quantums")
