"""The validator's price feeder: after every committed block it takes a price per perpetual market
and a vol per listed option expiry from the configured source and submits one signed transaction,
an ORACLE_VOTE and (when it has vols) a VOL_VOTE, to the node's own mempool.

The vote is signed with the validator's consensus key (the priv_validator key), so the tx signer's
address is the validator address the application's oracle checks. It enters the mempool through
the same `check_tx` path as RPC `broadcast_tx_sync`, and the mempool reactor gossips it on. The
nonce is the committed block's time in milliseconds, raised to one more than the previous vote's
nonce if needed (strictly increasing; `execution.accounts`' nonce window is relative to block time).
The allocator (`NonceAllocator`) is one per key, shared with the bridge watcher (`node.bridge_watcher`),
which signs with the same key: two allocators could hand out the same nonce.

Sources (`[oracle] source` in config.toml), each a small class behind `PriceSource`:

- `sim`: a seeded random walk from genesis, the same on every validator: the price of a market at
  height h is a pure function of (chain id, market id, initial price, genesis height, h), computed
  with integers from SHA-256: each block moves the (unrounded) price by at most +-0.2%, the voted
  price is rounded to the market's tick and never below one tick. The walk is cached, so a block
  costs O(1); a long catch-up (after a restart) runs in a worker thread.
- `file`: a JSON object of human USD prices, `{"BTC-USD": "64000.5", "ETH-USD": 3400}`, re-read when
  its mtime or size changes and at least every `reload_interval`. An operator's override and a
  test's lever. Markets missing from the file are not voted on.
- `http`: GET a URL (httpx, with a timeout) and take each market's price from a field path of the
  JSON answer (dot-separated keys, integer indices into arrays: `data.0.price`).

Option series are never voted a price (their price is the chain's own mark, and a vote on one is
refused, which would fail the whole tx): the sources see the perpetual markets only. Vols
(`execution.oracle.volatility`, ppm of 1) come from a `VolSource`, one per source kind:

- `sim`: each listed (underlying, expiry) pair's vol stays where it is: the vote is the vol the
  committed state holds (`ChainVols`; a pair without one is not voted on);
- `file`: an optional `"vols"` member of the same file, underlying ticker -> expiry (RFC 3339) ->
  decimal fraction, `{"BTC-USD": {"2026-12-31T08:00:00Z": "0.55"}}` (exactly, at most 6
  decimals: "0.55" is 550000 ppm); pairs that are not listed on chain, or whose vol is outside the
  chain's [min_vol_ppm, max_vol_ppm], are left out with a warning (`FileVols`);
- `http`: no vols (the endpoint gives prices only).

Human prices are converted to subticks (`execution.markets.human_to_price`) and rounded to the
nearest tick (half up), never below one tick. A source that fails (missing or malformed file,
unknown ticker, HTTP error, bad field path) raises `PriceSourceError`; the feeder logs it and skips
that block, it never crashes the node. Nothing here is consensus code: the median of the votes is
the chain's business (`execution.oracle`).
"""

from __future__ import annotations

import decimal
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

import httpx
import trio

from consensus.app import CheckTxResult
from consensus.mempool import MempoolError
from execution.genesis_state import AppStateError, parse_app_state
from execution.markets import Market, human_to_price, load_markets, price_to_human
from execution.oracle.volatility import listed_expiries, load_vol, load_vol_params
from execution.state import StateReader
from execution.tx import Action, OracleVote, Tx, VolVote
from execution.validators import load_validator
from node.config import OracleConfig
from node.events import EventBus, NewBlock, follow_new_blocks
from primitives import codec
from primitives.hashing import sha256
from primitives.keys import PrivateKey
from primitives.timefmt import format_rfc3339, parse_rfc3339

log = logging.getLogger("derivd.pricefeed")

NS_PER_MS = 1_000_000
SIM_DOMAIN = b"derivd/oracle/sim/v1"
SIM_MAX_STEP_PPM = 2_000
"""the largest move of the simulated price in one block: 0.2%"""
SIM_THREAD_STEPS = 2_000
"""a walk further than this many blocks from its cache is computed in a worker thread"""
_PPM = 1_000_000
_DECIMALS = decimal.Context(prec=60, rounding=decimal.ROUND_HALF_UP)


class PriceSourceError(Exception):
    """A price source that cannot give prices for this block; the message says why."""


class PriceSource(Protocol):
    """Where a validator's prices come from."""

    async def prices(self, height: int) -> dict[int, int]:
        """Price (subticks, on tick, > 0) per market id after committed block `height`;
        PriceSourceError if there are none to give."""
        ...


Pair = tuple[int, int]
"""An option expiry: (underlying market id, expiry ns)."""


class VolSource(Protocol):
    """Where a validator's vols come from."""

    async def vols(self, height: int) -> dict[Pair, int]:
        """Vol (ppm) per listed pair after committed block `height`, each within the chain's
        bounds; PriceSourceError if there are none to give."""
        ...


# -- units ---------------------------------------------------------------------------------------


def round_to_tick(market: Market, subticks: int) -> int:
    """`subticks` rounded to the nearest multiple of the market's tick (half up), at least one tick."""
    tick = market.subticks_per_tick
    ticks = (subticks + tick // 2) // tick
    return max(1, ticks) * tick


def _positive_decimal(value: object, what: str) -> Decimal:
    """`value` (a decimal string, a JSON int or a Decimal) as a positive finite Decimal; ValueError
    naming `what` otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise ValueError(f"not a number: {value!r}")
    try:
        number = Decimal(value.strip()) if isinstance(value, str) else Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"not a number: {value!r}") from None
    if not number.is_finite() or number <= 0:
        raise ValueError(f"not a positive {what}: {value!r}")
    return number


def human_price_to_subticks(market: Market, value: object) -> int:
    """A human USD price (a decimal string, a JSON int or a Decimal) as subticks rounded to tick;
    ValueError if it is not a positive finite number."""
    number = _positive_decimal(value, "price")
    text = format(number, "f")
    try:
        subticks = human_to_price(market, text)
    except ValueError:  # finer than a subtick: round to the nearest subtick first
        unit = Decimal(price_to_human(market, 1))
        subticks = int(_DECIMALS.divide(number, unit).to_integral_value(decimal.ROUND_HALF_UP))
    return round_to_tick(market, subticks)


MAX_VOL_EXPONENT = 12
"""the largest power of ten a vol in a file may carry (no vol is near 10**12)"""


def vol_fraction_to_ppm(value: object) -> int:
    """A vol as a decimal fraction (a decimal string, a JSON int or a Decimal: "0.55") in ppm,
    exactly; ValueError if it is not a positive number or has more than 6 decimals."""
    number = _positive_decimal(value, "vol")
    _, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    text = "".join(map(str, digits))
    significant = text.rstrip("0")  # number = int(significant) * 10**(exponent + trailing zeros)
    exponent += len(text) - len(significant)
    if exponent < -6:
        raise ValueError(f"more than 6 decimals (a vol is a whole number of ppm): {value!r}")
    if exponent > MAX_VOL_EXPONENT:
        raise ValueError(f"not a plausible vol: {value!r}")
    scale: int = 10 ** (exponent + 6)
    return int(significant) * scale


def _markets_by_ticker(markets: Sequence[Market]) -> dict[str, Market]:
    return {m.ticker: m for m in markets}


# -- sim: a deterministic random walk ------------------------------------------------------------


def sim_step_ppm(chain_id: str, market_id: int, height: int) -> int:
    """The walk's move into `height`, in ppm of the price, within +-SIM_MAX_STEP_PPM."""
    digest = sha256(SIM_DOMAIN + codec.encode([chain_id.encode(), market_id, height]))
    span = 2 * SIM_MAX_STEP_PPM + 1
    return int.from_bytes(digest[:8], "big") % span - SIM_MAX_STEP_PPM


def _sim_next(raw: int, step_ppm: int, floor: int) -> int:
    """The unrounded price after a move of `step_ppm` (the move's magnitude rounded down)."""
    move = raw * abs(step_ppm) // _PPM
    return max(floor, raw + move if step_ppm >= 0 else raw - move)


class SimWalk:
    """One market's walk; `price(h)` is a pure function of (chain id, market id, initial price,
    genesis height, h). The last point is cached, so successive heights cost one step each."""

    def __init__(self, chain_id: str, market: Market, genesis_height: int = 0) -> None:
        self.chain_id = chain_id
        self.market_id = market.market_id
        self.tick = market.subticks_per_tick
        self.initial_price = market.initial_price
        self.genesis_height = genesis_height
        self._height = genesis_height
        self._raw = max(self.tick, market.initial_price)

    def steps_to(self, height: int) -> int:
        """How many steps `price(height)` would compute from the cache."""
        height = max(height, self.genesis_height)
        return height - self._height if height >= self._height else height - self.genesis_height

    def raw(self, height: int) -> int:
        """The unrounded price (subticks) at `height`; at and before genesis, the initial price."""
        height = max(height, self.genesis_height)
        if height < self._height:  # asked about the past: walk again from genesis
            self._height, self._raw = self.genesis_height, max(self.tick, self.initial_price)
        raw, h = self._raw, self._height
        while h < height:
            h += 1
            raw = _sim_next(raw, sim_step_ppm(self.chain_id, self.market_id, h), self.tick)
        self._height, self._raw = h, raw
        return raw

    def price(self, height: int) -> int:
        """The walk's price at `height`, on tick and at least one tick."""
        raw = self.raw(height)
        tick = self.tick
        return max(1, (raw + tick // 2) // tick) * tick


def sim_price(chain_id: str, market: Market, height: int, genesis_height: int = 0) -> int:
    """The simulated price of `market` at `height`, computed from scratch (no cache)."""
    return SimWalk(chain_id, market, genesis_height).price(height)


class SimSource:
    """`source = "sim"`: every market's seeded random walk."""

    def __init__(self, chain_id: str, markets: Sequence[Market], genesis_height: int = 0) -> None:
        self.walks = [SimWalk(chain_id, m, genesis_height) for m in markets]

    def prices_now(self, height: int) -> dict[int, int]:
        """The prices at `height`, computed in this thread."""
        return {walk.market_id: walk.price(height) for walk in self.walks}

    async def prices(self, height: int) -> dict[int, int]:
        if any(walk.steps_to(height) > SIM_THREAD_STEPS for walk in self.walks):
            return await trio.to_thread.run_sync(self.prices_now, height)
        return self.prices_now(height)


# -- file: an operator's JSON file ---------------------------------------------------------------


def parse_price_object(doc: object, markets: Mapping[str, Market], what: str) -> dict[int, int]:
    """`{"TICKER": price, ...}` (human prices) as subticks by market id; PriceSourceError names
    the unknown ticker or the bad value."""
    if not isinstance(doc, dict):
        raise PriceSourceError(f"{what}: expected a JSON object of ticker -> price, got {type(doc).__name__}")
    prices: dict[int, int] = {}
    for ticker, value in doc.items():
        market = markets.get(ticker)
        if market is None:
            known = ", ".join(sorted(markets))
            raise PriceSourceError(f"{what}: unknown market {ticker!r} (markets: {known})")
        try:
            prices[market.market_id] = human_price_to_subticks(market, value)
        except ValueError as exc:
            raise PriceSourceError(f"{what}: {ticker}: {exc}") from None
    if not prices:
        raise PriceSourceError(f"{what}: no prices")
    return prices


VOLS_MEMBER = "vols"
"""The member of a price file that holds the vols (no ticker is lower-case)."""


def parse_vol_object(doc: object, markets: Mapping[str, Market], what: str) -> dict[Pair, int]:
    """`{"TICKER": {"<RFC 3339 expiry>": vol, ...}, ...}` (decimal fractions) as ppm by (underlying
    market id, expiry ns); PriceSourceError names the unknown ticker, the bad time or the bad value."""
    if not isinstance(doc, dict):
        raise PriceSourceError(f"{what}: vols: expected an object of ticker -> {{expiry: vol}}")
    vols: dict[Pair, int] = {}
    for ticker, expiries in doc.items():
        market = markets.get(ticker)
        if market is None:
            known = ", ".join(sorted(markets))
            raise PriceSourceError(f"{what}: vols: unknown market {ticker!r} (markets: {known})")
        if not isinstance(expiries, dict):
            raise PriceSourceError(f"{what}: vols.{ticker}: expected an object of expiry -> vol")
        for expiry, value in expiries.items():
            try:
                vols[(market.market_id, parse_rfc3339(expiry))] = vol_fraction_to_ppm(value)
            except ValueError as exc:
                raise PriceSourceError(f"{what}: vols.{ticker}.{expiry}: {exc}") from None
    return vols


class FileSource:
    """`source = "file"`: a JSON object of human prices, re-read when its mtime or size changes and
    at least every `reload_interval` seconds (`clock`: trio's clock by default)."""

    def __init__(
        self,
        path: Path,
        markets: Sequence[Market],
        reload_interval: float = 3.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.path = path
        self.markets = _markets_by_ticker(markets)
        self.reload_interval = reload_interval
        self.clock = clock
        self.reads = 0
        self._stamp: tuple[int, int] | None = None
        self._read_at = 0.0
        self._result: tuple[dict[int, int], dict[Pair, int]] | PriceSourceError | None = None

    async def prices(self, height: int) -> dict[int, int]:
        return dict(self._load()[0])

    async def vols(self, height: int) -> dict[Pair, int]:
        """The file's `vols` (every pair it names, listed or not: `FileVols` filters)."""
        return dict(self._load()[1])

    def _load(self) -> tuple[dict[int, int], dict[Pair, int]]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            self._result = None
            raise PriceSourceError(f"price file {self.path}: cannot read: {exc.strerror or exc}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        now = self.clock()
        if self._result is None or stamp != self._stamp or now - self._read_at >= self.reload_interval:
            self._stamp, self._read_at = stamp, now
            self._result = self._read()
        if isinstance(self._result, PriceSourceError):
            raise self._result
        return self._result

    def _read(self) -> tuple[dict[int, int], dict[Pair, int]] | PriceSourceError:
        self.reads += 1
        what = f"price file {self.path}"
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return PriceSourceError(f"{what}: cannot read: {getattr(exc, 'strerror', None) or exc}")
        try:
            doc = json.loads(text, parse_float=Decimal)
        except ValueError as exc:
            return PriceSourceError(f"{what}: not valid JSON: {exc}")
        try:
            vols: dict[Pair, int] = {}
            if isinstance(doc, dict) and VOLS_MEMBER in doc:
                doc = dict(doc)
                vols = parse_vol_object(doc.pop(VOLS_MEMBER), self.markets, what)
            return parse_price_object(doc, self.markets, what), vols
        except PriceSourceError as exc:
            return exc


# -- vols ----------------------------------------------------------------------------------------


class ChainVols:
    """`source = "sim"`'s vols: every listed pair's vol as the committed state holds it (pairs
    without one are left out), so the chain's vols stay where genesis put them."""

    def __init__(self, committed: StateReader) -> None:
        self.committed = committed

    async def vols(self, height: int) -> dict[Pair, int]:
        vols: dict[Pair, int] = {}
        for underlying_id, expiry_ns in listed_expiries(self.committed):
            stored = load_vol(self.committed, underlying_id, expiry_ns)
            if stored is not None:
                vols[(underlying_id, expiry_ns)] = stored.vol_ppm
        return vols


class FileVols:
    """`source = "file"`'s vols: the file's, less the pairs not listed in the committed state and
    the vols outside its bounds (a vote naming one would be refused and fail the whole tx); what is
    left out is logged when it changes."""

    def __init__(self, file: FileSource, committed: StateReader) -> None:
        self.file = file
        self.committed = committed
        self._left_out: list[str] = []

    async def vols(self, height: int) -> dict[Pair, int]:
        wanted = await self.file.vols(height)
        listed = frozenset(listed_expiries(self.committed))  # membership only
        params = load_vol_params(self.committed)
        vols: dict[Pair, int] = {}
        left_out: list[str] = []
        for pair, vol in sorted(wanted.items()):
            where = f"market {pair[0]} expiry {format_rfc3339(pair[1])}"
            if pair not in listed:
                left_out.append(f"{where}: no option series")
            elif not params.min_vol_ppm <= vol <= params.max_vol_ppm:
                left_out.append(f"{where}: {vol} ppm outside [{params.min_vol_ppm}, {params.max_vol_ppm}]")
            else:
                vols[pair] = vol
        if left_out != self._left_out and left_out:
            log.warning("vols of %s not voted: %s", self.file.path, "; ".join(left_out))
        self._left_out = left_out
        return vols


# -- http: a JSON price endpoint -----------------------------------------------------------------


def extract_field(doc: object, path: str) -> object:
    """The value at a dot-separated `path` ("data.0.price": keys of objects, integer indices of
    arrays; "" is the whole document); KeyError names the first segment that is not there."""
    value = doc
    walked: list[str] = []
    for segment in path.split(".") if path else []:
        walked.append(segment)
        if isinstance(value, dict) and segment in value:
            value = value[segment]
        elif (
            isinstance(value, list)
            and segment.lstrip("-").isdigit()
            and -len(value) <= int(segment) < len(value)
        ):
            value = value[int(segment)]
        else:
            raise KeyError(".".join(walked))
    return value


def parse_field_entries(entries: Sequence[str]) -> dict[str, str]:
    """`["BTC-USD=bitcoin.usd", ...]` (config's `[oracle] fields`) as ticker -> field path;
    ValueError names a bad entry."""
    fields: dict[str, str] = {}
    for entry in entries:
        ticker, eq, path = entry.partition("=")
        ticker, path = ticker.strip(), path.strip()
        if not eq or not ticker or not path:
            raise ValueError(f"want TICKER=field.path, got {entry!r}")
        if ticker in fields:
            raise ValueError(f"market {ticker!r} appears twice")
        fields[ticker] = path
    return fields


class HttpSource:
    """`source = "http"`: GET `url` and read each market's price at its field path."""

    def __init__(
        self, url: str, fields: Mapping[str, str], markets: Sequence[Market], timeout: float = 2.0
    ) -> None:
        by_ticker = _markets_by_ticker(markets)
        unknown = sorted(set(fields) - set(by_ticker))
        if unknown:
            raise PriceSourceError(
                f"[oracle] fields: unknown market {unknown[0]!r} (markets: {', '.join(sorted(by_ticker))})"
            )
        if not fields:
            raise PriceSourceError("[oracle] fields: no market has a field path")
        self.url = url
        self.fields = sorted(((by_ticker[t], p) for t, p in fields.items()), key=lambda mp: mp[0].market_id)
        self.timeout = timeout

    async def fetch(self) -> Any:
        """The endpoint's JSON document (floats as Decimal)."""
        try:
            async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=True) as client:
                response = await client.get(self.url, headers={"Accept": "application/json"})
                response.raise_for_status()
        except httpx.HTTPStatusError as exc:
            raise PriceSourceError(f"GET {self.url}: HTTP {exc.response.status_code}") from None
        except httpx.HTTPError as exc:
            raise PriceSourceError(f"GET {self.url}: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(response.content, parse_float=Decimal)
        except ValueError as exc:
            raise PriceSourceError(f"GET {self.url}: not valid JSON: {exc}") from None

    async def prices(self, height: int) -> dict[int, int]:
        doc = await self.fetch()
        prices: dict[int, int] = {}
        for market, path in self.fields:
            try:
                value = extract_field(doc, path)
            except KeyError as exc:
                raise PriceSourceError(
                    f"GET {self.url}: {market.ticker}: no field {exc.args[0]!r} (path {path!r})"
                ) from None
            try:
                prices[market.market_id] = human_price_to_subticks(market, value)
            except ValueError as exc:
                raise PriceSourceError(f"GET {self.url}: {market.ticker}: field {path!r}: {exc}") from None
        return prices


# -- the feeder ----------------------------------------------------------------------------------

Submit = Callable[[bytes], CheckTxResult]
"""How a signed tx enters the mempool: `Mempool.check_tx` (may raise MempoolError)."""


def submit_admitted(submit: Submit, raw: bytes, what: str) -> bool:
    """Submit a validator's own tx (a vote); whether the mempool admitted it, else a warning
    naming `what` and why (the mempool's refusal, or check_tx's code and log)."""
    try:
        result = submit(raw)
    except MempoolError as exc:
        log.warning("%s not admitted: %s", what, exc)
        return False
    if not result.ok:
        log.warning("%s refused: code %d: %s", what, result.code, result.log)
        return False
    return True


class NonceAllocator:
    """The nonces of one key's txs: `max(time_ms, last + 1)`, strictly increasing. One per key,
    shared by every task of the node that signs with it (the feeder, the bridge watcher)."""

    def __init__(self) -> None:
        self.last = 0

    def next(self, time_ms: int) -> int:
        """A nonce not handed out before: `time_ms`, or one more than the last if that is not above it."""
        self.last = max(time_ms, self.last + 1)
        return self.last


@dataclass(slots=True)
class FeederStats:
    blocks: int = 0
    """committed blocks seen"""
    votes: int = 0
    """votes the mempool admitted"""
    vol_votes: int = 0
    """admitted votes that carried vols"""
    refused: int = 0
    """votes the mempool or check_tx turned away"""
    source_errors: int = 0
    """blocks skipped because the source failed"""
    inactive: int = 0
    """blocks skipped because this node was not an active validator (or was catching up)"""


def _always() -> bool:
    return True


class PriceFeeder:
    """Submits one vote tx per committed block, signed with `key` (the validator's key): the
    source's prices, and `vol_source`'s vols in the same tx when it gives any."""

    def __init__(
        self,
        source: PriceSource,
        key: PrivateKey,
        chain_id: str,
        submit: Submit,
        bus: EventBus,
        is_active: Callable[[], bool] = _always,
        vol_source: VolSource | None = None,
        nonces: NonceAllocator | None = None,
    ) -> None:
        self.source = source
        self.vol_source = vol_source
        self.key = key
        self.chain_id = chain_id
        self.submit = submit
        self.bus = bus
        self.is_active = is_active
        self.stats = FeederStats()
        self.nonces = NonceAllocator() if nonces is None else nonces
        self._last_problem = ""

    def build_vote(
        self, prices: Mapping[int, int], time_ns: int, vols: Mapping[Pair, int] | None = None
    ) -> bytes:
        """The signed vote tx for `prices` (by market id) and `vols` (by pair; none: no VOL_VOTE)
        after a block of time `time_ns`."""
        nonce = self.nonces.next(time_ns // NS_PER_MS)
        actions: tuple[Action, ...] = (OracleVote(tuple(sorted(prices.items()))),)
        if vols:
            actions += (VolVote(tuple((u, expiry, vol) for (u, expiry), vol in sorted(vols.items()))),)
        return Tx.create(self.key, self.chain_id, nonce, actions, fee=0).encode()  # free for a validator

    def _problem(self, height: int, problem: str) -> None:
        """Log a skipped block: the first of a run of identical problems as an error, the rest quietly."""
        if problem != self._last_problem:
            log.error("oracle vote skipped at height %d: %s", height, problem)
        else:
            log.debug("oracle vote skipped at height %d: %s", height, problem)
        self._last_problem = problem

    async def on_block(self, height: int, time_ns: int) -> bytes | None:
        """Vote after committed block `height` (of time `time_ns`); the tx submitted, or None if
        this block is skipped."""
        self.stats.blocks += 1
        if not self.is_active():
            self.stats.inactive += 1
            return None
        try:
            prices = await self.source.prices(height)
        except PriceSourceError as exc:
            self.stats.source_errors += 1
            self._problem(height, str(exc))
            return None
        prices = {market_id: price for market_id, price in prices.items() if price > 0}
        if not prices:
            self.stats.source_errors += 1
            self._problem(height, "the source gave no prices")
            return None
        if self._last_problem:
            log.info("oracle prices available again at height %d", height)
            self._last_problem = ""
        vols: dict[Pair, int] = {}
        if self.vol_source is not None:
            try:
                vols = await self.vol_source.vols(height)
            except PriceSourceError as exc:  # the prices are voted all the same
                log.warning("vols not voted at height %d: %s", height, exc)
        raw = self.build_vote(prices, time_ns, vols)
        if not submit_admitted(self.submit, raw, f"oracle vote at height {height}"):
            self.stats.refused += 1
            return None
        self.stats.votes += 1
        self.stats.vol_votes += bool(vols)
        log.debug("oracle vote after height %d: %s, vols %s", height, prices, vols)
        return raw

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Vote after every committed block until cancelled. Blocks that arrive while a vote is in
        progress are coalesced: only the newest is voted on."""

        async def vote(block: NewBlock) -> None:
            await self.on_block(block.block.header.height, block.block.header.time)

        await follow_new_blocks(self.bus, vote, "price feeder", task_status=task_status)


def build_source(
    kind: str,
    markets: Sequence[Market],
    *,
    chain_id: str,
    genesis_height: int = 0,
    file: Path | None = None,
    reload_interval: float = 3.0,
    url: str = "",
    fields: Sequence[str] = (),
    timeout: float = 2.0,
) -> PriceSource:
    """The source of `[oracle] source = kind` over the perpetuals of `markets` (option series are
    never voted a price); PriceSourceError if it cannot be built."""
    markets = [m for m in markets if m.option is None]
    if kind == "sim":
        return SimSource(chain_id, markets, genesis_height)
    if kind == "file":
        if file is None:
            raise PriceSourceError("[oracle] file: not set")
        return FileSource(file, markets, reload_interval)
    if kind == "http":
        try:
            paths = parse_field_entries(fields)
        except ValueError as exc:
            raise PriceSourceError(f"[oracle] fields: {exc}") from None
        return HttpSource(url, paths, markets, timeout)
    raise PriceSourceError(f"[oracle] source: unknown source {kind!r}")


def feeder_from_config(
    oracle: OracleConfig,
    home_path: Callable[[str], Path],
    chain_id: str,
    genesis_height: int,
    committed: StateReader,
    genesis_app_state: object,
    key: PrivateKey,
    submit: Submit,
    bus: EventBus,
    catching_up: Callable[[], bool] = lambda: False,
    nonces: NonceAllocator | None = None,
) -> PriceFeeder | None:
    """The node's feeder from `[oracle]`, or None (disabled, no markets, or a source that cannot be
    built: logged). The markets are the committed ones, or the genesis app state's before the first
    block is written. It votes only while `key` is a validator with power in the application's
    registry (read from `committed` at each block) and the node is not catching up; its vols are
    `vol_source_for`'s, read from `committed` too. `nonces`: the key's allocator, shared with the
    node's other tasks that sign with `key`."""
    if not oracle.enabled:
        log.info("price feeder disabled ([oracle] enabled = false)")
        return None
    markets = load_markets(committed)
    if not markets:
        try:
            markets = list(parse_app_state(genesis_app_state).markets)
        except AppStateError as exc:
            log.warning("price feeder: the genesis markets cannot be read: %s", exc)
    if not markets:
        log.warning("price feeder not started: the chain has no markets")
        return None
    try:
        source = build_source(
            oracle.source,
            markets,
            chain_id=chain_id,
            genesis_height=genesis_height,
            file=home_path(oracle.file),
            reload_interval=oracle.reload_interval / 1e9,
            url=oracle.url,
            fields=oracle.fields,
            timeout=oracle.timeout / 1e9,
        )
    except PriceSourceError as exc:
        log.error("price feeder not started: %s", exc)
        return None
    vol_source = vol_source_for(source, committed)
    address = key.address.raw

    def is_active() -> bool:
        if catching_up():
            return False
        validator = load_validator(committed, address)
        return validator is not None and validator.power > 0

    log.info(
        "price feeder source=%s markets=%s vols=%s (votes while this node is a validator)",
        oracle.source,
        ",".join(m.ticker for m in markets if m.option is None),
        "no" if vol_source is None else "yes",
    )
    return PriceFeeder(source, key, chain_id, submit, bus, is_active, vol_source, nonces)


def vol_source_for(source: PriceSource, committed: StateReader) -> VolSource | None:
    """The vols that go with `source` (module docstring): the chain's own for `sim`, the file's for
    `file`, none for `http` (or any other)."""
    if isinstance(source, SimSource):
        return ChainVols(committed)
    if isinstance(source, FileSource):
        return FileVols(source, committed)
    return None
