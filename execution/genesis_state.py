"""The genesis `app_state`: parsing and validating the JSON object, `add_account` for
`derivd genesis add-account`, and the exchange's genesis writes (`init_exchange_state`: markets,
oracle parameters and initial prices).

    {"accounts": [{"address": "<40 hex>", "balance": "<int string, or JSON int>"}],
     "markets": [{"id": 1, "ticker": "BTC-USD", "atomic_resolution": -10, ...}],
     "oracle": {"max_vote_age_blocks": 3, "stale_after_blocks": 10, "max_price_move_ppm": 500000},
     "funding": {"interval_seconds": 3600, "rate_period_seconds": 28800, "interest_ppm": 100,
                 "clamp_factor_ppm": 6000000, "impact_notional": 10000000000}}

`markets` entries carry every field of `execution.markets.MARKET_FIELDS` as JSON integers (the
ticker a string); ids and tickers are unique and the entries are sorted by id in state. `oracle`
defaults to `execution.oracle.prices.OracleParams()`; its first two fields are required when it is
given (`max_price_move_ppm` defaults to 500000). `funding` defaults to
`execution.risk.funding.FundingParams()`, each of its fields optional (the former
`interest_ppm_per_interval` and `clamp_ppm` are refused with their replacements named). `liquidation`
(`execution.risk.liquidation.LiquidationParams`: `fee_ppm`, `liquidator_reward_ppm`,
`work_budget`, `max_deleverages_per_block`, `max_position_fraction_ppm`,
`min_liquidation_notional`, `stale_haircut_ppm`; the former `max_liquidations_per_block` is refused
with its replacement named) likewise defaults field by field, and so do `insurance`
(`execution.risk.insurance.InsuranceParams`: `unwind_fraction_ppm`, `max_slippage_ppm`,
`min_unwind_notional`), `triggers`
(`execution.risk.triggers.TriggerParams`: `max_triggers_per_block`), and `fees`
(`execution.fees.FeeParams`: the price of each action kind, in quote units) and `rate_limits`
(`execution.fees.RateLimitParams`: `window_blocks`, `orders_per_window`).

An exported state (`derivd export`) is the one section `state` instead:

    {"state": {"height": "<the exported height>", "records": [["<hex key>", "<hex value>"], ...]}}

`records` are the application's state at that height (every key of the state tree, ascending),
loaded as they are by `init_chain` at initial height `height + 1`; the derived indexes
(`execution.indexes`) are rebuilt from them. No other section may be beside it.

`bridge` (absent: the chain has no bridge, `execution.bridge`) is

    {"evm_chain_id": 1, "contract": "0x<40 hex>", "token": "0x<40 hex>", "confirmations": 12,
     "min_deposit": 1000000, "min_withdrawal": 1000000,
     "keys": [{"validator": "<40 hex: a genesis validator's address>", "evm_address": "0x<40 hex>"}]}

every field required, `keys` not empty (valset 0 is the contract's first set); the numbers JSON
integers >= 1; no address zero, no validator or EVM address twice in `keys`. init_chain also
refuses a key of an address that is not a genesis validator (`init_bridge`), then writes the
parameters (with its chain id), the keys and valset 0: the keyed genesis validators with their
powers (`execution.bridge.valsets`). A genesis validator without a key is not in the bridge's set.

Every section is optional and defaults to empty; unknown keys are errors. Each error is an
`AppStateError` that names the field path, e.g.
`app_state.accounts[2].balance: must be a non-negative integer, got "x"`. To add a section: a
field on `AppState`, its name in `SECTIONS`, a `_parse_<section>` function called from
`parse_app_state`.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from execution.bridge.evm import parse_evm_address
from execution.bridge.params import ZERO_EVM_ADDRESS, BridgeParams
from execution.bridge.valsets import init_bridge_state
from execution.fees import FEE_FIELDS, RATE_LIMIT_FIELDS, FeeParams, RateLimitParams
from execution.markets import (
    MARKET_FIELDS,
    OPTION_FIELDS,
    Market,
    OptionTerms,
    default_markets,
    market_error,
    option_ticker,
    store_market,
)
from execution.options.portfolio import PORTFOLIO_FIELDS, PortfolioParams
from execution.oracle.prices import OracleParams, OraclePrice, store_params, store_price
from execution.oracle.volatility import VOL_FIELDS, VolParams, init_vol, store_vol_params
from execution.risk.funding import FUNDING_FIELDS, RENAMED_FIELDS, FundingParams
from execution.risk.insurance import INSURANCE_FIELDS, InsuranceParams, init_insurance_state
from execution.risk.liquidation import LIQUIDATION_FIELDS, LIQUIDATION_RENAMED, LiquidationParams
from execution.risk.option_series import store_option_params
from execution.risk.triggers import TRIGGER_FIELDS, TriggerParams
from execution.state import StateView
from execution.validators import load_validator
from primitives.keys import Address
from primitives.timefmt import format_rfc3339, parse_rfc3339
from storage import schema

MAX_SUPPLY = 2**63 - 1
SECTIONS = (
    "accounts",
    "markets",
    "oracle",
    "funding",
    "liquidation",
    "insurance",
    "triggers",
    "fees",
    "rate_limits",
    "options",
    "volatility",
    "bridge",
    "state",
)
BRIDGE_FIELDS = ("evm_chain_id", "contract", "token", "confirmations", "min_deposit", "min_withdrawal")
BRIDGE_KEY_FIELDS = ("validator", "evm_address")
STATE_FIELDS = ("height", "records")
ORACLE_FIELDS = ("max_vote_age_blocks", "stale_after_blocks", "max_price_move_ppm")
ORACLE_REQUIRED = ("max_vote_age_blocks", "stale_after_blocks")
ACCOUNT_FIELDS = ("address", "balance")
_NOT_RECORDS = (schema.APP_META, schema.APP_BLOCK_TIME)  # the app's, written at commit


class AppStateError(ValueError):
    """An invalid genesis app_state; the message starts with the path of the bad field."""


@dataclass(frozen=True, slots=True)
class GenesisAccount:
    address: Address
    balance: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ExportedState:
    """The `state` section: the records of the state at `height` (`derivd export`)."""

    height: int
    records: tuple[tuple[bytes, bytes], ...]
    """(key, value), keys ascending, each in the state tree (`schema.in_state_tree`)"""


@dataclass(frozen=True, slots=True, kw_only=True)
class InitialVol:
    """The genesis implied volatility of one (underlying, expiry) of the option series."""

    underlying_id: int
    expiry_ns: int
    vol_ppm: int


@dataclass(frozen=True, slots=True, kw_only=True)
class GenesisBridge:
    """The `bridge` section: the parameters but the chain id (init_chain's) and the validators' keys."""

    evm_chain_id: int
    contract: bytes
    token: bytes
    confirmations: int
    min_deposit: int
    min_withdrawal: int
    keys: tuple[tuple[Address, bytes], ...]
    """(validator address, EVM address), in the section's order"""

    def params(self, chain_id: str) -> BridgeParams:
        return BridgeParams(
            chain_id=chain_id,
            evm_chain_id=self.evm_chain_id,
            contract=self.contract,
            token=self.token,
            confirmations=self.confirmations,
            min_deposit=self.min_deposit,
            min_withdrawal=self.min_withdrawal,
        )


@dataclass(frozen=True, slots=True)
class AppState:
    """The validated genesis app state."""

    accounts: tuple[GenesisAccount, ...] = ()
    markets: tuple[Market, ...] = ()
    oracle: OracleParams = OracleParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    funding: FundingParams = FundingParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    liquidation: LiquidationParams = LiquidationParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    insurance: InsuranceParams = InsuranceParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    triggers: TriggerParams = TriggerParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    fees: FeeParams = FeeParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    rate_limits: RateLimitParams = RateLimitParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    options: PortfolioParams = PortfolioParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    volatility: VolParams = VolParams()  # noqa: RUF009 (frozen, so one shared default is safe)
    initial_vols: tuple[InitialVol, ...] = ()
    """the option series' `initial_vol_ppm`s, by (underlying, expiry)"""
    bridge: GenesisBridge | None = None
    """the `bridge` section (None: no bridge)"""
    exported: ExportedState | None = None
    """the `state` section: a whole state to load (then every other field is its default)"""

    @property
    def total_supply(self) -> int:
        return sum(account.balance for account in self.accounts)


def _show(value: object) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise AppStateError(f"{path}: must be a JSON object, got {_show(value)}")
    return value


def _check_keys(
    obj: dict[str, Any], path: str, known: tuple[str, ...], required: bool, optional: tuple[str, ...] = ()
) -> None:
    """Every key of `obj` is one of `known` or `optional`; with `required`, every one of `known` is there."""
    for key in obj:
        if key not in known and key not in optional:
            raise AppStateError(f"{path}.{key}: unknown field (known: {', '.join((*known, *optional))})")
    if required:
        for key in known:
            if key not in obj:
                raise AppStateError(f"{path}.{key}: missing")


def _amount(value: object, path: str) -> int:
    """A non-negative integer given as a JSON int or a string of decimal digits."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.isascii() and value.isdigit():
        number = int(value)
    else:
        raise AppStateError(f"{path}: must be a non-negative integer, got {_show(value)}")
    if not 0 <= number <= MAX_SUPPLY:
        raise AppStateError(f"{path}: must be a non-negative integer up to {MAX_SUPPLY}, got {_show(value)}")
    return number


def _address(value: object, path: str) -> Address:
    if not isinstance(value, str):
        raise AppStateError(f"{path}: must be 40 hex digits, got {_show(value)}")
    try:
        return Address.parse(value)
    except ValueError as exc:
        raise AppStateError(f"{path}: must be 40 hex digits, got {_show(value)}") from exc


def _parse_account(value: object, path: str) -> GenesisAccount:
    obj = _object(value, path)
    _check_keys(obj, path, ACCOUNT_FIELDS, required=True)
    address = _address(obj["address"], f"{path}.address")
    return GenesisAccount(address, _amount(obj["balance"], f"{path}.balance"))


def _parse_accounts(value: object, path: str) -> tuple[GenesisAccount, ...]:
    if not isinstance(value, list):
        raise AppStateError(f"{path}: must be a JSON array, got {_show(value)}")
    accounts: list[GenesisAccount] = []
    first_seen: dict[Address, int] = {}
    for i, item in enumerate(value):
        account = _parse_account(item, f"{path}[{i}]")
        if account.address in first_seen:
            raise AppStateError(f"{path}[{i}].address: duplicate of {path}[{first_seen[account.address]}]")
        first_seen[account.address] = i
        accounts.append(account)
    total = sum(account.balance for account in accounts)
    if total > MAX_SUPPLY:
        raise AppStateError(f"{path}: total supply {total} exceeds the maximum {MAX_SUPPLY}")
    return tuple(accounts)


def _integer(value: object, path: str) -> int:
    """A JSON integer (not a bool, not a string) within int64."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise AppStateError(f"{path}: must be a JSON integer, got {_show(value)}")
    if not -MAX_SUPPLY <= value <= MAX_SUPPLY:
        raise AppStateError(f"{path}: must be within [{-MAX_SUPPLY}, {MAX_SUPPLY}], got {_show(value)}")
    return value


def _parse_option(value: object, path: str) -> tuple[OptionTerms, int | None]:
    """A market's `option` object: its terms and its initial implied volatility (ppm), if given."""
    obj = _object(value, path)
    _check_keys(obj, path, OPTION_FIELDS, required=True, optional=("initial_vol_ppm",))
    expiry = obj["expiry"]
    if not isinstance(expiry, str):
        raise AppStateError(f"{path}.expiry: must be an RFC 3339 time string, got {_show(expiry)}")
    try:
        expiry_ns = parse_rfc3339(expiry)
    except ValueError as exc:
        raise AppStateError(f"{path}.expiry: {exc}") from exc
    call = obj["call"]
    if not isinstance(call, bool):
        raise AppStateError(f"{path}.call: must be true (a call) or false (a put), got {_show(call)}")
    vol = _integer(obj["initial_vol_ppm"], f"{path}.initial_vol_ppm") if "initial_vol_ppm" in obj else None
    terms = OptionTerms(
        underlying_id=_integer(obj["underlying"], f"{path}.underlying"),
        expiry_ns=expiry_ns,
        strike=_integer(obj["strike"], f"{path}.strike"),
        call=call,
    )
    return terms, vol


def _parse_market(value: object, path: str) -> tuple[Market, int | None]:
    """A market and, for an option series, its initial implied volatility (ppm) if given."""
    obj = _object(value, path)
    _check_keys(obj, path, MARKET_FIELDS, required=True, optional=("option",))
    ticker = obj["ticker"]
    if not isinstance(ticker, str):
        raise AppStateError(f"{path}.ticker: must be a string, got {_show(ticker)}")
    ints = {name: _integer(obj[name], f"{path}.{name}") for name in MARKET_FIELDS if name != "ticker"}
    market_id = ints.pop("id")
    terms, vol = _parse_option(obj["option"], f"{path}.option") if "option" in obj else (None, None)
    market = Market(market_id=market_id, ticker=ticker, **ints, option=terms)
    problem = market_error(market)
    if problem is not None:
        raise AppStateError(f"{path}.{problem[0]}: {problem[1]}")
    return market, vol


def _underlying_error(market: Market, terms: OptionTerms, by_id: dict[int, Market]) -> str | None:
    """Why an option series' underlying does not fit it (None: it does)."""
    underlying = by_id.get(terms.underlying_id)
    if underlying is None:
        return f"no market has id {terms.underlying_id}"
    if underlying.option is not None:
        return f"{underlying.ticker} is an option series, not a perpetual"
    if (underlying.atomic_resolution, underlying.quantum_conversion_exponent) != (
        market.atomic_resolution,
        market.quantum_conversion_exponent,
    ):
        return (
            f"the series must share {underlying.ticker}'s atomic_resolution and quantum_conversion_exponent "
            f"({underlying.atomic_resolution}, {underlying.quantum_conversion_exponent})"
        )
    return None


def _parse_markets(value: object, path: str) -> tuple[tuple[Market, ...], tuple[InitialVol, ...]]:
    """The markets, by id, and the initial implied volatilities of their option series."""
    if not isinstance(value, list):
        raise AppStateError(f"{path}: must be a JSON array, got {_show(value)}")
    markets: list[Market] = []
    ids: dict[int, int] = {}
    tickers: dict[str, int] = {}
    vols: dict[tuple[int, int], tuple[int, int]] = {}  # (underlying, expiry) -> (vol, entry index)
    for i, item in enumerate(value):
        market, vol = _parse_market(item, f"{path}[{i}]")
        if market.market_id in ids:
            raise AppStateError(f"{path}[{i}].id: duplicate of {path}[{ids[market.market_id]}]")
        if market.ticker in tickers:
            raise AppStateError(f"{path}[{i}].ticker: duplicate of {path}[{tickers[market.ticker]}]")
        ids[market.market_id] = i
        tickers[market.ticker] = i
        markets.append(market)
        if market.option is not None and vol is not None:
            pair = (market.option.underlying_id, market.option.expiry_ns)
            if pair in vols and vols[pair][0] != vol:
                raise AppStateError(
                    f"{path}[{i}].option.initial_vol_ppm: {vol} differs from {path}[{vols[pair][1]}]'s "
                    f"{vols[pair][0]} (one implied volatility per underlying and expiry)"
                )
            vols[pair] = (vol, i)
    by_id = {market.market_id: market for market in markets}
    for i, market in enumerate(markets):
        if market.option is not None:
            problem = _underlying_error(market, market.option, by_id)
            if problem is not None:
                raise AppStateError(f"{path}[{i}].option.underlying: {problem}")
    initial = tuple(
        InitialVol(underlying_id=pair[0], expiry_ns=pair[1], vol_ppm=vol)
        for pair, (vol, _) in sorted(vols.items())
    )
    return tuple(sorted(markets, key=lambda market: market.market_id)), initial


def _parse_oracle(value: object, path: str) -> OracleParams:
    obj = _object(value, path)
    _check_keys(obj, path, ORACLE_FIELDS, required=False)
    for name in ORACLE_REQUIRED:
        if name not in obj:
            raise AppStateError(f"{path}.{name}: missing")
    numbers = {name: _integer(obj[name], f"{path}.{name}") for name in ORACLE_FIELDS if name in obj}
    for name, number in numbers.items():
        if number < 1:
            raise AppStateError(f"{path}.{name}: must be a positive integer, got {number}")
    return OracleParams(**numbers)


_Params = TypeVar(
    "_Params",
    FundingParams,
    LiquidationParams,
    InsuranceParams,
    TriggerParams,
    FeeParams,
    RateLimitParams,
    PortfolioParams,
    VolParams,
)


def _parse_section(
    obj: dict[str, Any],
    path: str,
    names: tuple[str, ...],
    params: type[_Params],
    renamed: dict[str, str] | None = None,
) -> _Params:
    """The section `path` (its last part names it in `obj`) of integer parameters, each optional
    (the dataclass has the defaults and raises ValueError("<field>: <reason>") for a bad value); the
    defaults when the section is absent; a key of a former rule refused with its replacement named
    (`renamed`)."""
    name = path.rsplit(".", 1)[-1]
    if name not in obj:
        return params()
    section = _object(obj[name], path)
    for old, replacement in (renamed or {}).items():
        if old in section:
            raise AppStateError(f"{path}.{old}: {replacement}")
    _check_keys(section, path, names, required=False)
    numbers = {key: _integer(section[key], f"{path}.{key}") for key in names if key in section}
    try:
        return params(**numbers)
    except ValueError as exc:
        raise AppStateError(f"{path}.{exc}") from exc


def _hex(value: object, path: str) -> bytes:
    if isinstance(value, str) and value.isascii():
        try:
            return bytes.fromhex(value)
        except ValueError:
            pass
    raise AppStateError(f"{path}: must be a string of hex digits, got {_show(value)}")


def _evm_address(value: object, path: str) -> bytes:
    """A 0x-prefixed 40-hex-digit EVM address, not zero."""
    if not isinstance(value, str):
        raise AppStateError(f"{path}: must be 0x and 40 hex digits, got {_show(value)}")
    try:
        address = parse_evm_address(value)
    except ValueError as exc:
        raise AppStateError(f"{path}: {exc}") from exc
    if address == ZERO_EVM_ADDRESS:
        raise AppStateError(f"{path}: must not be the zero address")
    return address


def _parse_bridge(value: object, path: str) -> GenesisBridge:
    obj = _object(value, path)
    _check_keys(obj, path, (*BRIDGE_FIELDS, "keys"), required=True)
    numbers = {
        name: _integer(obj[name], f"{path}.{name}")
        for name in ("evm_chain_id", "confirmations", "min_deposit", "min_withdrawal")
    }
    for name, number in numbers.items():
        if number < 1:
            raise AppStateError(f"{path}.{name}: must be a positive integer, got {number}")
    contract = _evm_address(obj["contract"], f"{path}.contract")
    token = _evm_address(obj["token"], f"{path}.token")
    entries = obj["keys"]
    if not isinstance(entries, list) or not entries:
        raise AppStateError(
            f"{path}.keys: must be a non-empty JSON array (valset 0, the contract's first set, is the keyed "
            f"genesis validators), got {_show(entries)}"
        )
    keys: list[tuple[Address, bytes]] = []
    validators: dict[Address, int] = {}
    evm_addresses: dict[bytes, int] = {}
    for i, item in enumerate(entries):
        at = f"{path}.keys[{i}]"
        entry = _object(item, at)
        _check_keys(entry, at, BRIDGE_KEY_FIELDS, required=True)
        validator = _address(entry["validator"], f"{at}.validator")
        evm_address = _evm_address(entry["evm_address"], f"{at}.evm_address")
        if validator in validators:
            raise AppStateError(f"{at}.validator: duplicate of {path}.keys[{validators[validator]}]")
        if evm_address in evm_addresses:
            raise AppStateError(
                f"{at}.evm_address: already the key of {path}.keys[{evm_addresses[evm_address]}] "
                "(one EVM address per validator)"
            )
        validators[validator] = evm_addresses[evm_address] = i
        keys.append((validator, evm_address))
    return GenesisBridge(contract=contract, token=token, keys=tuple(keys), **numbers)


def _parse_state(value: object, path: str) -> ExportedState:
    obj = _object(value, path)
    _check_keys(obj, path, STATE_FIELDS, required=True)
    height = _amount(obj["height"], f"{path}.height")
    entries = obj["records"]
    if not isinstance(entries, list):
        raise AppStateError(f"{path}.records: must be a JSON array, got {_show(entries)}")
    records: list[tuple[bytes, bytes]] = []
    for i, entry in enumerate(entries):
        at = f"{path}.records[{i}]"
        if not isinstance(entry, list) or len(entry) != 2:
            raise AppStateError(f"{at}: must be [key, value] in hex, got {_show(entry)}")
        key, record = _hex(entry[0], f"{at}[0]"), _hex(entry[1], f"{at}[1]")
        if not key.startswith(schema.APP_PREFIX) or key in _NOT_RECORDS or not schema.in_state_tree(key):
            raise AppStateError(f"{at}[0]: {key!r} is not a key of the application's state tree")
        if not record:
            raise AppStateError(f"{at}[1]: must not be empty")
        if records and key <= records[-1][0]:
            raise AppStateError(f"{at}[0]: keys must be strictly ascending")
        records.append((key, record))
    return ExportedState(height=height, records=tuple(records))


def parse_app_state(value: object, path: str = "app_state") -> AppState:
    """Validate a JSON-decoded app_state (None counts as empty)."""
    obj = _object({} if value is None else value, path)
    _check_keys(obj, path, SECTIONS, required=False)
    if "state" in obj:
        if len(obj) > 1:
            others = ", ".join(sorted(key for key in obj if key != "state"))
            raise AppStateError(f"{path}: an exported state carries every record; remove {others}")
        return AppState(exported=_parse_state(obj["state"], f"{path}.state"))
    markets, initial_vols = _parse_markets(obj.get("markets", []), f"{path}.markets")
    volatility = _parse_section(obj, f"{path}.volatility", VOL_FIELDS, VolParams)
    for vol in initial_vols:
        if not volatility.min_vol_ppm <= vol.vol_ppm <= volatility.max_vol_ppm:
            raise AppStateError(
                f"{path}.markets: initial_vol_ppm {vol.vol_ppm} of underlying {vol.underlying_id} is outside "
                f"the volatility section's [{volatility.min_vol_ppm}, {volatility.max_vol_ppm}]"
            )
    return AppState(
        accounts=_parse_accounts(obj.get("accounts", []), f"{path}.accounts"),
        markets=markets,
        initial_vols=initial_vols,
        oracle=_parse_oracle(obj["oracle"], f"{path}.oracle") if "oracle" in obj else OracleParams(),
        funding=_parse_section(obj, f"{path}.funding", FUNDING_FIELDS, FundingParams, RENAMED_FIELDS),
        liquidation=_parse_section(
            obj, f"{path}.liquidation", LIQUIDATION_FIELDS, LiquidationParams, LIQUIDATION_RENAMED
        ),
        insurance=_parse_section(obj, f"{path}.insurance", INSURANCE_FIELDS, InsuranceParams),
        triggers=_parse_section(obj, f"{path}.triggers", TRIGGER_FIELDS, TriggerParams),
        fees=_parse_section(obj, f"{path}.fees", FEE_FIELDS, FeeParams),
        rate_limits=_parse_section(obj, f"{path}.rate_limits", RATE_LIMIT_FIELDS, RateLimitParams),
        options=_parse_section(obj, f"{path}.options", PORTFOLIO_FIELDS, PortfolioParams),
        volatility=volatility,
        bridge=_parse_bridge(obj["bridge"], f"{path}.bridge") if "bridge" in obj else None,
    )


def exported_app_state(height: int, records: Sequence[tuple[bytes, bytes]]) -> dict[str, Any]:
    """The app_state of an exported state: `records` (the state tree's keys and values at `height`)."""
    pairs = [[key.hex(), value.hex()] for key, value in sorted(records)]
    return {"state": {"height": str(height), "records": pairs}}


def default_exchange_app_state(
    options_from: int | None = None, option_lifetimes: Sequence[int] = ()
) -> dict[str, Any]:
    """The exchange's sections of the default and testnet genesis: the markets (BTC-USD, ETH-USD;
    with `options_from`, a genesis time in ns, also `default_option_series` of that time and
    `option_lifetimes`) and the oracle, funding, liquidation and trigger parameters at their defaults."""
    markets: list[dict[str, Any]] = [market.to_json() for market in default_markets()]
    if options_from is not None:
        markets.extend(default_option_series(options_from, option_lifetimes))
    return {
        "markets": markets,
        "oracle": OracleParams().to_json(),
        "funding": FundingParams().to_json(),
        "liquidation": LiquidationParams().to_json(),
        "insurance": InsuranceParams().to_json(),
        "triggers": TriggerParams().to_json(),
        "fees": FeeParams().to_json(),
        "rate_limits": RateLimitParams().to_json(),
        "options": PortfolioParams().to_json(),
        "volatility": VolParams().to_json(),
    }


DAY_NS = 24 * 3600 * 10**9
DEFAULT_VOL_PPM = {1: 600_000, 2: 700_000}
"""The default series' initial implied volatility per underlying (BTC 60%, ETH 70%)."""


def default_option_series(genesis_time: int, lifetimes: Sequence[int] = ()) -> list[dict[str, Any]]:
    """The genesis JSON of the default option series (ids from 101): on BTC-USD and ETH-USD, a
    call and a put struck at the initial price for each expiry: `genesis_time` + each of
    `lifetimes` (ns), or without them the first 08:00 UTC at least a day after `genesis_time` and
    the same a week later."""
    first = (genesis_time + DAY_NS - 8 * 3600 * 10**9 + DAY_NS - 1) // DAY_NS * DAY_NS + 8 * 3600 * 10**9
    expiries = (
        [genesis_time + lifetime for lifetime in lifetimes] if lifetimes else [first, first + 7 * DAY_NS]
    )
    series: list[dict[str, Any]] = []
    next_id = 101
    for expiry in expiries:
        for underlying in default_markets():
            tick = underlying.subticks_per_tick
            for ppm in (1_000_000,):
                strike = underlying.initial_price * ppm // 1_000_000 // tick * tick
                for call in (True, False):
                    ticker = option_ticker(underlying, expiry, strike, call)
                    entry = underlying.to_json() | {"id": next_id, "ticker": ticker}
                    entry["option"] = {
                        "underlying": underlying.market_id,
                        "expiry": format_rfc3339(expiry),
                        "strike": strike,
                        "call": call,
                        "initial_vol_ppm": DEFAULT_VOL_PPM[underlying.market_id],
                    }
                    series.append(entry)
                    next_id += 1
    return series


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise AppStateError(f"app_state: duplicate JSON key {_show(key)}")
        obj[key] = value
    return obj


def load_app_state(data: bytes) -> AppState:
    """Parse the app_state JSON bytes handed to init_chain (empty bytes count as `{}`)."""
    if not data.strip():
        return AppState()
    hook: Callable[[list[tuple[str, Any]]], dict[str, Any]] = _no_duplicate_keys
    try:
        value = json.loads(data, object_pairs_hook=hook)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AppStateError(f"app_state: not valid JSON: {exc}") from exc
    return parse_app_state(value)


def add_account(app_state: dict[str, Any], address: str, amount: int) -> dict[str, Any]:
    """A new app_state with `amount` added to `address` (a new account if it has none).

    The input is validated first and the result after; the input is not modified. Balances are
    written as decimal strings, new addresses as lower-case hex.
    """
    parse_app_state(app_state)
    target = _address(address, "address")
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise AppStateError(f"amount: must be a non-negative integer, got {_show(amount)}")
    result = copy.deepcopy(app_state)
    accounts: list[dict[str, Any]] = result.setdefault("accounts", [])
    for i, entry in enumerate(accounts):
        if _address(entry["address"], f"app_state.accounts[{i}].address") == target:
            entry["balance"] = str(_amount(entry["balance"], f"app_state.accounts[{i}].balance") + amount)
            break
    else:
        accounts.append({"address": str(target), "balance": str(amount)})
    parse_app_state(result)
    return result


# -- genesis -----------------------------------------------------------------------------------------


def init_exchange_state(view: StateView, app_state: AppState, initial_height: int) -> None:
    """Write the genesis markets, the oracle and volatility parameters, each market's initial price
    and each option expiry's initial implied volatility (updated at the genesis height,
    `initial_height - 1`), and the option parameters."""
    store_params(view, app_state.oracle)
    init_insurance_state(view, app_state.insurance)
    for market in app_state.markets:
        store_market(view, market)
        store_price(view, market.market_id, OraclePrice(market.initial_price, initial_height - 1))
    if any(market.option is not None for market in app_state.markets):
        store_vol_params(view, app_state.volatility)
        store_option_params(view, app_state.options)
        for vol in app_state.initial_vols:
            init_vol(view, vol.underlying_id, vol.expiry_ns, vol.vol_ppm, initial_height - 1)


def genesis_markets_json(markets: Sequence[Market]) -> list[dict[str, object]]:
    """The genesis `markets` section of `markets`."""
    return [market.to_json() for market in markets]


def init_bridge(
    view: StateView, bridge: GenesisBridge | None, chain_id: str, path: str = "app_state.bridge"
) -> None:
    """The genesis writes of the bridge (nothing without one): AppStateError for a key of an address
    that is not a genesis validator (write the registry first)."""
    if bridge is None:
        return
    for i, (validator, _) in enumerate(bridge.keys):
        if load_validator(view, validator.raw) is None:
            raise AppStateError(f"{path}.keys[{i}].validator: {validator.upper()} is not a genesis validator")
    try:
        params = bridge.params(chain_id)
    except ValueError as exc:
        raise AppStateError(f"{path}.{exc}") from exc
    init_bridge_state(view, params, [(validator.raw, evm_address) for validator, evm_address in bridge.keys])
