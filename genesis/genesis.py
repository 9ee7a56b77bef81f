"""genesis.json in CometBFT's layout: the records (ConsensusParams, GenesisValidator, GenesisDoc),
their validation, JSON reading and writing, and `new_genesis`, the one generator behind both the
single-validator genesis of `derivd init` and the N-validator testnet.

Every problem is a GenesisError of one line, "<file>: <field path>: <problem>". Reading is
strict: unknown keys, duplicate keys and values of the wrong type are errors, so a typo never
passes silently. Integers are read from JSON strings or numbers and always written as strings.
`app_state` is opaque here: it must be a JSON object, and the application validates its contents.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from primitives import codec
from primitives.files import atomic_write
from primitives.hashing import sha256
from primitives.keyfile import PUB_KEY_TYPE
from primitives.keys import ADDRESS_SIZE, PUBLIC_KEY_SIZE, Address
from primitives.timefmt import format_rfc3339, parse_rfc3339

JsonObject = dict[str, Any]

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
MAX_BLOCK_BYTES = 104_857_600
"""CometBFT's hard limit on block.max_bytes (100 MiB)."""
MAX_TOTAL_VOTING_POWER = INT64_MAX // 8
"""CometBFT's limit on the total voting power, which keeps proposer priorities within int64."""
MAX_CHAIN_ID_LENGTH = 50
SUPPORTED_PUB_KEY_TYPES = ("ed25519",)

_DEFAULT_SOURCE = "genesis"
_CHAIN_ID = re.compile(r"[A-Za-z0-9._-]+")
_INT_TEXT = re.compile(r"-?[0-9]{1,20}")
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})*")


class GenesisError(ValueError):
    """A genesis document that cannot be used: "<source>: <field>: <problem>" on one line."""

    def __init__(self, source: str, field: str | None, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        super().__init__(f"{source}: {problem}" if field is None else f"{source}: {field}: {problem}")

    def relocated(self, source: str, prefix: str = "") -> GenesisError:
        """The same problem reported against `source`, its field path prefixed with `prefix`."""
        where = self.field if self.field is None else prefix + self.field
        return GenesisError(source, where, self.problem)


def _show(value: object) -> str:
    """A value as JSON text for an error message, cut short if long."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


@dataclass(frozen=True, slots=True)
class _Range:
    """An inclusive integer range and how to describe it in an error."""

    lo: int
    hi: int

    def check(self, name: str, value: object, shown: str | None = None) -> int:
        """`value` if it is an int in range; otherwise a GenesisError naming `name`."""
        got = _show(value) if shown is None else shown
        if isinstance(value, bool) or not isinstance(value, int) or value < self.lo:
            if self.lo == 1:
                wanted = "must be a positive integer"
            elif self.lo == 0:
                wanted = "must be a non-negative integer"
            else:
                wanted = f"must be an integer >= {self.lo}"
            raise GenesisError(_DEFAULT_SOURCE, name, f"{wanted}, got {got}")
        if value > self.hi:
            raise GenesisError(_DEFAULT_SOURCE, name, f"must be at most {self.hi}, got {got}")
        return value

    def read(self, name: str, raw: object) -> int:
        """An integer given as a JSON number or a decimal string."""
        value: object = raw
        if isinstance(raw, str):
            value = int(raw) if _INT_TEXT.fullmatch(raw) else None
        return self.check(name, value, _show(raw))


_POSITIVE = _Range(1, INT64_MAX)
_NON_NEGATIVE = _Range(0, INT64_MAX)
_POWER = _Range(1, MAX_TOTAL_VOTING_POWER)

# -- JSON reading helpers: each raises GenesisError with the full field path ---------------------


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _object(raw: object, name: str) -> Mapping[str, object]:
    if not isinstance(raw, dict):
        raise GenesisError(_DEFAULT_SOURCE, name, f"must be a JSON object, got {_show(raw)}")
    return raw


def _only_keys(obj: Mapping[str, object], prefix: str, allowed: Sequence[str]) -> None:
    for key in obj:
        if key not in allowed:
            raise GenesisError(
                _DEFAULT_SOURCE, _join(prefix, key), f"unknown key (expected one of: {', '.join(allowed)})"
            )


def _required(obj: Mapping[str, object], prefix: str, key: str) -> object:
    if key not in obj:
        raise GenesisError(_DEFAULT_SOURCE, _join(prefix, key), "missing")
    return obj[key]


def _string(raw: object, name: str) -> str:
    if not isinstance(raw, str):
        raise GenesisError(_DEFAULT_SOURCE, name, f"must be a string, got {_show(raw)}")
    return raw


def _base64(raw: object, name: str, size: int) -> bytes:
    text = _string(raw, name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise GenesisError(_DEFAULT_SOURCE, name, f"not valid base64: {_show(raw)}") from None
    if len(data) != size:
        raise GenesisError(_DEFAULT_SOURCE, name, f"must be {size} bytes, got {len(data)}")
    return data


def _hex(raw: object, name: str) -> bytes:
    text = _string(raw, name)
    if not _HEX.fullmatch(text):
        raise GenesisError(_DEFAULT_SOURCE, name, f"must be an even number of hex digits, got {_show(raw)}")
    return bytes.fromhex(text)


# -- consensus parameters ------------------------------------------------------------------------

_PARAMS = "consensus_params"
_PARAM_SECTIONS: dict[str, tuple[str, ...]] = {
    "block": ("max_bytes", "max_gas"),
    "evidence": ("max_age_num_blocks", "max_age_duration", "max_bytes"),
    "validator": ("pub_key_types",),
    "version": ("app",),
    "abci": ("vote_extensions_enable_height",),
}
# attribute, JSON section, JSON key, allowed range
_INT_PARAMS: tuple[tuple[str, str, str, _Range], ...] = (
    ("block_max_bytes", "block", "max_bytes", _Range(1, MAX_BLOCK_BYTES)),
    ("block_max_gas", "block", "max_gas", _Range(-1, INT64_MAX)),
    ("evidence_max_age_num_blocks", "evidence", "max_age_num_blocks", _POSITIVE),
    ("evidence_max_age_duration", "evidence", "max_age_duration", _POSITIVE),
    ("evidence_max_bytes", "evidence", "max_bytes", _NON_NEGATIVE),
    ("version_app", "version", "app", _Range(0, UINT64_MAX)),
)
_PUB_KEY_TYPES_FIELD = f"{_PARAMS}.validator.pub_key_types"
_VOTE_EXTENSIONS_FIELD = f"{_PARAMS}.abci.vote_extensions_enable_height"


@dataclass(frozen=True, slots=True)
class ConsensusParams:
    """The consensus parameters of genesis.json (CometBFT's names; durations in nanoseconds)."""

    block_max_bytes: int = 22_020_096
    block_max_gas: int = -1
    evidence_max_age_num_blocks: int = 100_000
    evidence_max_age_duration: int = 172_800_000_000_000
    evidence_max_bytes: int = 1_048_576
    validator_pub_key_types: tuple[str, ...] = ("ed25519",)
    version_app: int = 0

    def __post_init__(self) -> None:
        for attr, section, key, allowed in _INT_PARAMS:
            allowed.check(f"{_PARAMS}.{section}.{key}", getattr(self, attr))
        if self.evidence_max_bytes > self.block_max_bytes:
            raise GenesisError(
                _DEFAULT_SOURCE,
                f"{_PARAMS}.evidence.max_bytes",
                f"must not exceed block.max_bytes ({self.block_max_bytes}), got {self.evidence_max_bytes}",
            )
        types = self.validator_pub_key_types
        if not isinstance(types, tuple) or not types:
            raise GenesisError(_DEFAULT_SOURCE, _PUB_KEY_TYPES_FIELD, f"must list key types, got {types!r}")
        for i, key_type in enumerate(types):
            if key_type not in SUPPORTED_PUB_KEY_TYPES:
                raise GenesisError(
                    _DEFAULT_SOURCE,
                    f"{_PUB_KEY_TYPES_FIELD}[{i}]",
                    f'only "ed25519" is supported, got {_show(key_type)}',
                )
        if len(set(types)) != len(types):
            raise GenesisError(
                _DEFAULT_SOURCE, _PUB_KEY_TYPES_FIELD, f"lists a key type twice: {_show(list(types))}"
            )

    # -- canonical form --

    def to_fields(self) -> codec.Value:
        """[block max bytes, block max gas, evidence max age blocks, evidence max age ns,
        evidence max bytes, app version]: the layout of consensus.state.ConsensusParams, which the
        node builds from this. The key types are left out while "ed25519" is the only one allowed
        (the form is then the same for every valid value); a second key type would join the form."""
        return [
            self.block_max_bytes,
            self.block_max_gas,
            self.evidence_max_age_num_blocks,
            self.evidence_max_age_duration,
            self.evidence_max_bytes,
            self.version_app,
        ]

    @classmethod
    def from_fields(cls, value: codec.Value) -> ConsensusParams:
        """The inverse of `to_fields`; codec.DecodeError names what is wrong."""
        items = codec.field_list(value, _PARAMS, len(_INT_PARAMS))
        ints = [
            codec.field_int(item, f"{_PARAMS}.{section}.{key}", allowed.lo, allowed.hi)
            for item, (_, section, key, allowed) in zip(items, _INT_PARAMS, strict=True)
        ]
        try:
            return cls(
                block_max_bytes=ints[0],
                block_max_gas=ints[1],
                evidence_max_age_num_blocks=ints[2],
                evidence_max_age_duration=ints[3],
                evidence_max_bytes=ints[4],
                version_app=ints[5],
            )
        except GenesisError as exc:
            raise codec.DecodeError(f"{exc.field}: {exc.problem}") from None

    def hash(self) -> bytes:
        """SHA-256 of the canonical encoding."""
        return sha256(codec.encode(self.to_fields()))

    # -- JSON --

    def to_json(self) -> JsonObject:
        """CometBFT's `consensus_params` object (integers as strings)."""
        return {
            "block": {"max_bytes": str(self.block_max_bytes), "max_gas": str(self.block_max_gas)},
            "evidence": {
                "max_age_num_blocks": str(self.evidence_max_age_num_blocks),
                "max_age_duration": str(self.evidence_max_age_duration),
                "max_bytes": str(self.evidence_max_bytes),
            },
            "validator": {"pub_key_types": list(self.validator_pub_key_types)},
            "version": {"app": str(self.version_app)},
            "abci": {"vote_extensions_enable_height": "0"},
        }

    @classmethod
    def from_json(cls, obj: object, source: str = _DEFAULT_SOURCE) -> ConsensusParams:
        """Read a `consensus_params` object; missing sections and keys take their defaults.
        GenesisError names `source` and the field ("consensus_params.block.max_bytes")."""
        try:
            return _params_from_json(obj)
        except GenesisError as exc:
            raise exc.relocated(source) from None


def _params_from_json(raw: object) -> ConsensusParams:
    obj = _object(raw, _PARAMS)
    _only_keys(obj, _PARAMS, tuple(_PARAM_SECTIONS))
    sections: dict[str, Mapping[str, object]] = {}
    for section, keys in _PARAM_SECTIONS.items():
        name = f"{_PARAMS}.{section}"
        sections[section] = _object(obj.get(section, {}), name)
        _only_keys(sections[section], name, keys)
    values: dict[str, Any] = {}
    for attr, section, key, allowed in _INT_PARAMS:
        if key in sections[section]:
            values[attr] = allowed.read(f"{_PARAMS}.{section}.{key}", sections[section][key])
    if "pub_key_types" in sections["validator"]:
        raw_types = sections["validator"]["pub_key_types"]
        if not isinstance(raw_types, list):
            raise GenesisError(
                _DEFAULT_SOURCE, _PUB_KEY_TYPES_FIELD, f"must be an array of strings, got {_show(raw_types)}"
            )
        values["validator_pub_key_types"] = tuple(
            _string(item, f"{_PUB_KEY_TYPES_FIELD}[{i}]") for i, item in enumerate(raw_types)
        )
    if "vote_extensions_enable_height" in sections["abci"]:
        raw_height = sections["abci"]["vote_extensions_enable_height"]
        if _NON_NEGATIVE.read(_VOTE_EXTENSIONS_FIELD, raw_height) != 0:
            raise GenesisError(
                _DEFAULT_SOURCE,
                _VOTE_EXTENSIONS_FIELD,
                f"vote extensions are not supported, must be 0, got {_show(raw_height)}",
            )
    return ConsensusParams(**values)


def _size(value: object) -> str:
    return f"{len(value)}" if isinstance(value, bytes) else type(value).__name__


# -- validators ----------------------------------------------------------------------------------

_VALIDATOR_KEYS = ("address", "pub_key", "power", "name")
_PUB_KEY_KEYS = ("type", "value")


@dataclass(frozen=True, slots=True)
class GenesisValidator:
    """A validator of the genesis set; its address is derived from its Ed25519 public key."""

    address: bytes
    pub_key: bytes
    power: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.pub_key, bytes) or len(self.pub_key) != PUBLIC_KEY_SIZE:
            raise GenesisError(
                _DEFAULT_SOURCE, "pub_key", f"must be {PUBLIC_KEY_SIZE} bytes, got {_size(self.pub_key)}"
            )
        if not isinstance(self.address, bytes) or len(self.address) != ADDRESS_SIZE:
            raise GenesisError(
                _DEFAULT_SOURCE, "address", f"must be {ADDRESS_SIZE} bytes, got {_size(self.address)}"
            )
        expected = Address.from_public_key(self.pub_key)
        if self.address != expected.raw:
            raise GenesisError(
                _DEFAULT_SOURCE, "address", f"does not match pub_key (expected {expected.upper()})"
            )
        _POWER.check("power", self.power)
        if not isinstance(self.name, str):
            raise GenesisError(_DEFAULT_SOURCE, "name", f"must be a string, got {self.name!r}")

    @classmethod
    def from_pub_key(cls, pub_key: bytes, power: int, name: str) -> GenesisValidator:
        """A validator whose address is derived from `pub_key`."""
        if not isinstance(pub_key, bytes) or len(pub_key) != PUBLIC_KEY_SIZE:
            raise GenesisError(
                _DEFAULT_SOURCE, "pub_key", f"must be {PUBLIC_KEY_SIZE} bytes, got {_size(pub_key)}"
            )
        return cls(Address.from_public_key(pub_key).raw, pub_key, power, name)

    def to_json(self) -> JsonObject:
        """{"address": upper-case hex, "pub_key": {type, value}, "power": "10", "name"}."""
        return {
            "address": self.address.hex().upper(),
            "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(self.pub_key).decode("ascii")},
            "power": str(self.power),
            "name": self.name,
        }


def _validator_from_json(raw: object, where: str) -> GenesisValidator:
    obj = _object(raw, where)
    _only_keys(obj, where, _VALIDATOR_KEYS)
    key_field = f"{where}.pub_key"
    pub_obj = _object(_required(obj, where, "pub_key"), key_field)
    _only_keys(pub_obj, key_field, _PUB_KEY_KEYS)
    key_type = _string(_required(pub_obj, key_field, "type"), f"{key_field}.type")
    if key_type != PUB_KEY_TYPE:
        raise GenesisError(
            _DEFAULT_SOURCE, f"{key_field}.type", f'must be "{PUB_KEY_TYPE}", got {_show(key_type)}'
        )
    pub_key = _base64(_required(pub_obj, key_field, "value"), f"{key_field}.value", PUBLIC_KEY_SIZE)
    power = _POWER.read(f"{where}.power", _required(obj, where, "power"))
    name = _string(obj.get("name", ""), f"{where}.name")
    raw_address = obj.get("address", "")
    address = Address.from_public_key(pub_key).raw  # derived when the file leaves it out
    if raw_address != "":
        text = _string(raw_address, f"{where}.address")
        if not re.fullmatch(r"[0-9A-Fa-f]{40}", text):
            raise GenesisError(
                _DEFAULT_SOURCE,
                f"{where}.address",
                f"must be {2 * ADDRESS_SIZE} hex digits, got {_show(text)}",
            )
        address = bytes.fromhex(text)
    try:
        return GenesisValidator(address, pub_key, power, name)
    except GenesisError as exc:
        raise exc.relocated(_DEFAULT_SOURCE, f"{where}.") from None


# -- the document --------------------------------------------------------------------------------

_DOC_KEYS = (
    "genesis_time",
    "chain_id",
    "initial_height",
    "consensus_params",
    "validators",
    "app_hash",
    "app_state",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class GenesisDoc:
    """The genesis document. `app_state` is the application's JSON object, kept as it was read."""

    genesis_time: int
    """nanoseconds since the Unix epoch"""
    chain_id: str
    initial_height: int = 1
    consensus_params: ConsensusParams = field(default_factory=ConsensusParams)
    validators: tuple[GenesisValidator, ...]
    app_hash: bytes = b""
    app_state: JsonObject = field(default_factory=dict)

    def __post_init__(self) -> None:
        _NON_NEGATIVE.check("genesis_time", self.genesis_time)
        _check_chain_id(self.chain_id)
        _POSITIVE.check("initial_height", self.initial_height)
        if not isinstance(self.consensus_params, ConsensusParams):
            raise GenesisError(
                _DEFAULT_SOURCE, _PARAMS, f"must be ConsensusParams, got {self.consensus_params!r}"
            )
        _check_validators(self.validators)
        if not isinstance(self.app_hash, bytes):
            raise GenesisError(_DEFAULT_SOURCE, "app_hash", f"must be bytes, got {self.app_hash!r}")
        if not isinstance(self.app_state, dict):
            raise GenesisError(
                _DEFAULT_SOURCE, "app_state", f"must be a JSON object, got {_show(self.app_state)}"
            )

    @property
    def total_power(self) -> int:
        """The summed voting power of the genesis validators."""
        return sum(v.power for v in self.validators)

    def to_json(self) -> JsonObject:
        """The genesis.json object, in CometBFT's key order (a copy: changing it changes nothing here)."""
        return {
            "genesis_time": format_rfc3339(self.genesis_time),
            "chain_id": self.chain_id,
            "initial_height": str(self.initial_height),
            "consensus_params": self.consensus_params.to_json(),
            "validators": [v.to_json() for v in self.validators],
            "app_hash": self.app_hash.hex().upper(),
            "app_state": copy.deepcopy(self.app_state),
        }

    @classmethod
    def from_json(cls, obj: object, source: str = _DEFAULT_SOURCE) -> GenesisDoc:
        """Read and validate a genesis.json object; GenesisError names `source` and the field."""
        try:
            return _doc_from_json(obj, copy_state=True)
        except GenesisError as exc:
            raise exc.relocated(source) from None


def _check_chain_id(chain_id: object) -> None:
    if not isinstance(chain_id, str):
        raise GenesisError(_DEFAULT_SOURCE, "chain_id", f"must be a string, got {_show(chain_id)}")
    if not chain_id:
        raise GenesisError(_DEFAULT_SOURCE, "chain_id", "must not be empty")
    if len(chain_id) > MAX_CHAIN_ID_LENGTH:
        raise GenesisError(
            _DEFAULT_SOURCE,
            "chain_id",
            f"must be at most {MAX_CHAIN_ID_LENGTH} characters, got {len(chain_id)}: {_show(chain_id)}",
        )
    if not _CHAIN_ID.fullmatch(chain_id):
        raise GenesisError(
            _DEFAULT_SOURCE,
            "chain_id",
            f"may contain only letters, digits, '.', '_' and '-', got {_show(chain_id)}",
        )


def _check_validators(validators: object) -> None:
    if not isinstance(validators, tuple):
        raise GenesisError(_DEFAULT_SOURCE, "validators", f"must be a tuple, got {type(validators).__name__}")
    if not validators:
        raise GenesisError(_DEFAULT_SOURCE, "validators", "must list at least one validator")
    by_key: dict[bytes, int] = {}
    by_address: dict[bytes, int] = {}
    total = 0
    for i, validator in enumerate(validators):
        if not isinstance(validator, GenesisValidator):
            raise GenesisError(
                _DEFAULT_SOURCE, f"validators[{i}]", f"must be a GenesisValidator, got {validator!r}"
            )
        if validator.pub_key in by_key:
            raise GenesisError(
                _DEFAULT_SOURCE,
                f"validators[{i}].pub_key",
                f"duplicate of validators[{by_key[validator.pub_key]}]",
            )
        if validator.address in by_address:
            raise GenesisError(
                _DEFAULT_SOURCE,
                f"validators[{i}].address",
                f"duplicate of validators[{by_address[validator.address]}]",
            )
        by_key[validator.pub_key] = i
        by_address[validator.address] = i
        total += validator.power
    if total > MAX_TOTAL_VOTING_POWER:
        raise GenesisError(
            _DEFAULT_SOURCE, "validators", f"total power {total} exceeds the maximum {MAX_TOTAL_VOTING_POWER}"
        )


def _doc_from_json(raw: object, *, copy_state: bool) -> GenesisDoc:
    obj = _object(raw, "genesis")
    _only_keys(obj, "", _DOC_KEYS)
    raw_time = _string(_required(obj, "", "genesis_time"), "genesis_time")
    try:
        genesis_time = parse_rfc3339(raw_time)
    except ValueError:
        raise GenesisError(
            _DEFAULT_SOURCE,
            "genesis_time",
            f"must be an RFC 3339 time like 2026-01-02T03:04:05.123Z, got {_show(raw_time)}",
        ) from None
    _NON_NEGATIVE.check("genesis_time", genesis_time, f"{_show(raw_time)} (before 1970)")
    chain_id = _string(_required(obj, "", "chain_id"), "chain_id")
    _check_chain_id(chain_id)
    initial_height = _POSITIVE.read("initial_height", obj.get("initial_height", 1))
    params = _params_from_json(obj["consensus_params"]) if "consensus_params" in obj else ConsensusParams()
    raw_validators = _required(obj, "", "validators")
    if not isinstance(raw_validators, list):
        raise GenesisError(_DEFAULT_SOURCE, "validators", f"must be an array, got {_show(raw_validators)}")
    validators = tuple(
        _validator_from_json(item, f"validators[{i}]") for i, item in enumerate(raw_validators)
    )
    app_hash = _hex(obj.get("app_hash", ""), "app_hash")
    app_state = obj.get("app_state", {})
    if not isinstance(app_state, dict):
        raise GenesisError(_DEFAULT_SOURCE, "app_state", f"must be a JSON object, got {_show(app_state)}")
    return GenesisDoc(
        genesis_time=genesis_time,
        chain_id=chain_id,
        initial_height=initial_height,
        consensus_params=params,
        validators=validators,
        app_hash=app_hash,
        app_state=copy.deepcopy(app_state) if copy_state else app_state,
    )


# -- files ---------------------------------------------------------------------------------------


class _RejectedJson(ValueError):
    pass


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RejectedJson(f"duplicate key {_show(key)}")
        obj[key] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise _RejectedJson(f"{name} is not a JSON number")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _lone_surrogate(value: object) -> str | None:
    """The field path of the first key or string under `value` that is not text: one holding a
    lone UTF-16 surrogate, which a JSON `\\u` escape can spell but UTF-8 cannot encode (so the
    document could not be written back or shown); "" for `value` itself. None if there is none."""
    stack: list[tuple[object, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return path
        elif isinstance(item, dict):
            for key, child in item.items():
                where = _join(path, key.encode("utf-8", "backslashreplace").decode("utf-8"))
                if _SURROGATE.search(key):
                    return where
                stack.append((child, where))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
    return None


def parse_genesis(data: bytes | str, source: str = _DEFAULT_SOURCE) -> GenesisDoc:
    """Parse genesis.json text; GenesisError names `source` (invalid JSON, or the bad field)."""
    try:
        obj = json.loads(data, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        # JSONDecodeError (with line and column), duplicate keys, NaN, and undecodable bytes
        raise GenesisError(source, None, f"not valid JSON: {exc}") from None
    surrogate = _lone_surrogate(obj)
    if surrogate is not None:
        raise GenesisError(
            source, surrogate or None, "not text: a \\u escape of a lone UTF-16 surrogate (D800-DFFF)"
        )
    try:
        return _doc_from_json(obj, copy_state=False)
    except GenesisError as exc:
        raise exc.relocated(source) from None


def load_genesis(path: Path) -> GenesisDoc:
    """Read and validate the genesis file at `path`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GenesisError(str(path), None, "missing (run `derivd init` to create it)") from None
    except OSError as exc:
        raise GenesisError(str(path), None, f"cannot read: {exc.strerror}") from None
    return parse_genesis(data, str(path))


def genesis_json_bytes(doc: GenesisDoc) -> bytes:
    """The file form of `doc`: JSON indented by two spaces, UTF-8, ending in a newline."""
    return (json.dumps(doc.to_json(), indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def save_genesis(doc: GenesisDoc, path: Path) -> None:
    """Write `doc` to `path` atomically (synced temporary file in the same directory, renamed)."""
    atomic_write(path, genesis_json_bytes(doc))


# -- the generator -------------------------------------------------------------------------------


def new_genesis(
    chain_id: str,
    validators: Sequence[tuple[bytes, int, str]],
    genesis_time_ns: int,
    app_state: Mapping[str, Any],
    initial_height: int = 1,
    params: ConsensusParams | None = None,
) -> GenesisDoc:
    """A new genesis document with validators given as (Ed25519 public key, power, name), their
    addresses derived. One validator for `derivd init`, N for a testnet."""
    members = []
    for i, (pub_key, power, name) in enumerate(validators):
        try:
            members.append(GenesisValidator.from_pub_key(pub_key, power, name))
        except GenesisError as exc:
            raise exc.relocated(_DEFAULT_SOURCE, f"validators[{i}].") from None
    if not isinstance(app_state, Mapping):
        raise GenesisError(_DEFAULT_SOURCE, "app_state", f"must be a JSON object, got {_show(app_state)}")
    try:
        json.dumps(app_state, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GenesisError(_DEFAULT_SOURCE, "app_state", f"not representable as JSON: {exc}") from None
    return GenesisDoc(
        genesis_time=genesis_time_ns,
        chain_id=chain_id,
        initial_height=initial_height,
        consensus_params=ConsensusParams() if params is None else params,
        validators=tuple(members),
        app_state=copy.deepcopy(dict(app_state)),
    )
