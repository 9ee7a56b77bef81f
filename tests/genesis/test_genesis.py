"""Tests of genesis.genesis: JSON and file round trips, the one-line errors naming each bad field,
and the canonical form of the consensus parameters."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genesis.genesis import (
    INT64_MAX,
    MAX_BLOCK_BYTES,
    UINT64_MAX,
    ConsensusParams,
    GenesisDoc,
    GenesisError,
    GenesisValidator,
    load_genesis,
    new_genesis,
    parse_genesis,
    save_genesis,
)
from primitives import codec
from primitives.keys import Address, PrivateKey
from primitives.timefmt import parse_rfc3339

TIME = parse_rfc3339("2026-11-25T09:02:55.123456789Z")


def _key(i: int) -> PrivateKey:
    return PrivateKey.from_seed(bytes([i + 1]) * 32)


def _doc(n: int = 3) -> GenesisDoc:
    return new_genesis(
        "derivd-test-1",
        [(_key(i).public_key.raw, 10 * (i + 1), f"node{i}") for i in range(n)],
        TIME,
        {"accounts": [{"address": "ab" * 20, "balance": "1000000"}], "markets": {}},
    )


def _valid_json() -> dict[str, Any]:
    return _doc().to_json()


# -- round trips ---------------------------------------------------------------------------------


def test_json_round_trip() -> None:
    doc = _doc()
    assert GenesisDoc.from_json(doc.to_json()) == doc
    # and through JSON text, as a file would carry it
    assert GenesisDoc.from_json(json.loads(json.dumps(doc.to_json()))) == doc


def test_json_form_follows_cometbft() -> None:
    obj = _doc(1).to_json()
    key = _key(0)
    assert list(obj) == [
        "genesis_time",
        "chain_id",
        "initial_height",
        "consensus_params",
        "validators",
        "app_hash",
        "app_state",
    ]
    assert obj["genesis_time"] == "2026-11-25T09:02:55.123456789Z"
    assert obj["initial_height"] == "1"
    assert obj["app_hash"] == ""
    assert obj["validators"] == [
        {
            "address": key.address.upper(),
            "pub_key": {
                "type": "tendermint/PubKeyEd25519",
                "value": base64.b64encode(key.public_key.raw).decode(),
            },
            "power": "10",
            "name": "node0",
        }
    ]
    assert obj["consensus_params"] == {
        "block": {"max_bytes": "22020096", "max_gas": "-1"},
        "evidence": {
            "max_age_num_blocks": "100000",
            "max_age_duration": "172800000000000",
            "max_bytes": "1048576",
        },
        "validator": {"pub_key_types": ["ed25519"]},
        "version": {"app": "0"},
        "abci": {"vote_extensions_enable_height": "0"},
    }


def test_save_and_load(tmp_path: Path) -> None:
    doc = _doc()
    path = tmp_path / "config" / "genesis.json"
    save_genesis(doc, path)
    assert load_genesis(path) == doc
    text = path.read_text()
    assert text.startswith('{\n  "genesis_time": ')
    assert text.endswith("}\n")
    assert sorted(p.name for p in path.parent.iterdir()) == ["genesis.json"]  # no temporary left


def test_save_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "genesis.json"
    save_genesis(_doc(1), path)
    save_genesis(_doc(4), path)
    assert len(load_genesis(path).validators) == 4


def test_integers_may_be_json_numbers() -> None:
    obj = _valid_json()
    obj["initial_height"] = 7
    obj["validators"][0]["power"] = 12
    obj["consensus_params"]["block"]["max_bytes"] = 5000
    obj["consensus_params"]["evidence"]["max_bytes"] = 100
    doc = GenesisDoc.from_json(obj)
    assert doc.initial_height == 7
    assert doc.validators[0].power == 12
    assert doc.consensus_params.block_max_bytes == 5000
    assert doc.to_json()["initial_height"] == "7"


def test_optional_parts_take_defaults() -> None:
    obj = _valid_json()
    for key in ("initial_height", "consensus_params", "app_hash", "app_state"):
        del obj[key]
    del obj["validators"][0]["name"]
    doc = GenesisDoc.from_json(obj)
    assert doc.initial_height == 1
    assert doc.consensus_params == ConsensusParams()
    assert doc.app_hash == b""
    assert doc.app_state == {}
    assert doc.validators[0].name == ""


def test_partial_consensus_params_keep_other_defaults() -> None:
    obj = _valid_json()
    obj["consensus_params"] = {"block": {"max_gas": "1000"}}
    params = GenesisDoc.from_json(obj).consensus_params
    assert params == ConsensusParams(block_max_gas=1000)


@pytest.mark.parametrize("address", [None, ""])
def test_missing_or_empty_address_is_derived(address: str | None) -> None:
    obj = _valid_json()
    if address is None:
        del obj["validators"][1]["address"]
    else:
        obj["validators"][1]["address"] = address
    doc = GenesisDoc.from_json(obj)
    assert doc.validators[1].address == _key(1).address.raw


def test_lower_case_hex_is_accepted() -> None:
    obj = _valid_json()
    obj["validators"][0]["address"] = obj["validators"][0]["address"].lower()
    obj["app_hash"] = "abcdef"
    doc = GenesisDoc.from_json(obj)
    assert doc.app_hash == bytes.fromhex("abcdef")
    assert doc.to_json()["app_hash"] == "ABCDEF"


def test_app_state_is_kept_opaque_and_copied() -> None:
    obj = _valid_json()
    obj["app_state"] = {"anything": {"the": ["app", 1, 2.5, None]}, "typo_keyz": True}
    doc = GenesisDoc.from_json(obj)
    obj["app_state"]["anything"]["the"].append("changed")
    assert doc.app_state == {"anything": {"the": ["app", 1, 2.5, None]}, "typo_keyz": True}
    out = doc.to_json()
    out["app_state"]["anything"] = 0
    assert doc.app_state["anything"] == {"the": ["app", 1, 2.5, None]}


# -- errors --------------------------------------------------------------------------------------

Mutation = Callable[[dict[str, Any]], None]


def _set(path: str, value: object) -> Mutation:
    """A mutation setting the value at a dotted path (list indices as numbers)."""

    def mutate(obj: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _delete(key: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        del obj[key]

    return mutate


def _duplicate_validator(obj: dict[str, Any]) -> None:
    obj["validators"].append(copy.deepcopy(obj["validators"][0]))


def _rename(old: str, new: str) -> Mutation:
    def mutate(obj: dict[str, Any]) -> None:
        obj[new] = obj.pop(old)

    return mutate


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BROKEN: list[tuple[str, Mutation, str]] = [
    ("missing chain_id", _delete("chain_id"), "chain_id: missing"),
    ("chain_id too long", _set("chain_id", "c" * 51), "chain_id: must be at most 50 characters, got 51"),
    ("chain_id empty", _set("chain_id", ""), "chain_id: must not be empty"),
    ("chain_id bad character", _set("chain_id", "my chain"), "chain_id: may contain only letters"),
    ("chain_id not a string", _set("chain_id", 7), "chain_id: must be a string, got 7"),
    ("missing genesis_time", _delete("genesis_time"), "genesis_time: missing"),
    ("bad time", _set("genesis_time", "yesterday"), "genesis_time: must be an RFC 3339 time like"),
    ("bad date", _set("genesis_time", "2026-02-30T00:00:00Z"), "genesis_time: must be an RFC 3339 time"),
    (
        "time before 1970",
        _set("genesis_time", "1969-12-31T23:59:59Z"),
        "genesis_time: must be a non-negative",
    ),
    ("power 0", _set("validators.1.power", "0"), 'validators[1].power: must be a positive integer, got "0"'),
    (
        "power negative",
        _set("validators.1.power", "-5"),
        'validators[1].power: must be a positive integer, got "-5"',
    ),
    (
        "power text",
        _set("validators.1.power", "ten"),
        'validators[1].power: must be a positive integer, got "ten"',
    ),
    (
        "power float",
        _set("validators.1.power", 1.5),
        "validators[1].power: must be a positive integer, got 1.5",
    ),
    (
        "power bool",
        _set("validators.1.power", True),
        "validators[1].power: must be a positive integer, got true",
    ),
    (
        "power spaced",
        _set("validators.1.power", " 10"),
        'validators[1].power: must be a positive integer, got " 10"',
    ),
    ("power too large", _set("validators.1.power", str(2**62)), "validators[1].power: must be at most"),
    ("missing power", lambda obj: obj["validators"][1].pop("power"), "validators[1].power: missing"),
    ("missing key type", _set("validators.1.pub_key", {"value": ""}), "validators[1].pub_key.type: missing"),
    ("missing pub_key", lambda obj: obj["validators"][1].pop("pub_key"), "validators[1].pub_key: missing"),
    (
        "address mismatch",
        _set("validators.0.address", "00" * 20),
        f"validators[0].address: does not match pub_key (expected {_key(0).address.upper()})",
    ),
    (
        "address not hex",
        _set("validators.0.address", "zz" * 20),
        "validators[0].address: must be 40 hex digits",
    ),
    ("duplicate validator", _duplicate_validator, "validators[3].pub_key: duplicate of validators[0]"),
    (
        "bad base64 pub key",
        _set("validators.2.pub_key.value", "not base64!"),
        'validators[2].pub_key.value: not valid base64: "not base64!"',
    ),
    (
        "wrong key length",
        _set("validators.2.pub_key.value", _b64(b"k" * 31)),
        "validators[2].pub_key.value: must be 32 bytes, got 31",
    ),
    (
        "wrong key type",
        _set("validators.0.pub_key.type", "tendermint/PubKeySecp256k1"),
        'validators[0].pub_key.type: must be "tendermint/PubKeyEd25519"',
    ),
    ("no validators", _set("validators", []), "validators: must list at least one validator"),
    ("validators not an array", _set("validators", {}), "validators: must be an array, got {}"),
    ("unknown key", _rename("chain_id", "chainid"), "chainid: unknown key (expected one of: genesis_time,"),
    ("unknown validator key", _set("validators.0.pwr", "1"), "validators[0].pwr: unknown key"),
    (
        "unknown params key",
        _set("consensus_params.block.max_byte", "1"),
        "consensus_params.block.max_byte: unknown key",
    ),
    ("unknown params section", _set("consensus_params.feature", {}), "consensus_params.feature: unknown key"),
    ("initial_height 0", _set("initial_height", "0"), 'initial_height: must be a positive integer, got "0"'),
    ("app_state not an object", _set("app_state", []), "app_state: must be a JSON object, got []"),
    ("app_state null", _set("app_state", None), "app_state: must be a JSON object, got null"),
    (
        "app_hash not hex",
        _set("app_hash", "xyz"),
        'app_hash: must be an even number of hex digits, got "xyz"',
    ),
    (
        "block max bytes too large",
        _set("consensus_params.block.max_bytes", str(MAX_BLOCK_BYTES + 1)),
        f"consensus_params.block.max_bytes: must be at most {MAX_BLOCK_BYTES}",
    ),
    (
        "block max gas below -1",
        _set("consensus_params.block.max_gas", "-2"),
        'consensus_params.block.max_gas: must be an integer >= -1, got "-2"',
    ),
    (
        "evidence larger than a block",
        _set("consensus_params.evidence.max_bytes", "22020097"),
        "consensus_params.evidence.max_bytes: must not exceed block.max_bytes (22020096)",
    ),
    (
        "evidence age 0",
        _set("consensus_params.evidence.max_age_duration", "0"),
        'consensus_params.evidence.max_age_duration: must be a positive integer, got "0"',
    ),
    (
        "unsupported key type",
        _set("consensus_params.validator.pub_key_types", ["secp256k1"]),
        'consensus_params.validator.pub_key_types[0]: only "ed25519" is supported, got "secp256k1"',
    ),
    (
        "no key types",
        _set("consensus_params.validator.pub_key_types", []),
        "consensus_params.validator.pub_key_types: must list key types",
    ),
    (
        "vote extensions",
        _set("consensus_params.abci.vote_extensions_enable_height", "5"),
        "consensus_params.abci.vote_extensions_enable_height: vote extensions are not supported",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in BROKEN], ids=[i for i, _, _ in BROKEN]
)
def test_each_error_names_file_and_field(tmp_path: Path, mutate: Mutation, expected: str) -> None:
    obj = _valid_json()
    mutate(obj)
    path = tmp_path / "genesis.json"
    path.write_text(json.dumps(obj, indent=2))
    with pytest.raises(GenesisError) as info:
        load_genesis(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}"), message
    assert "\n" not in message
    assert info.value.source == str(path)
    assert info.value.field == expected.split(": ", maxsplit=1)[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{\n  "chain_id": "a",\n  oops\n}',
            "not valid JSON: Expecting property name enclosed in double quotes: line 3",
        ),
        ('{"chain_id": "a", "chain_id": "b"}', 'not valid JSON: duplicate key "chain_id"'),
        ('{"app_state": {"x": NaN}}', "not valid JSON: NaN is not a JSON number"),
        ("", "not valid JSON: Expecting value: line 1 column 1"),
        ("[]", "genesis: must be a JSON object, got []"),
    ],
)
def test_bad_json_text(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "genesis.json"
    path.write_text(text)
    with pytest.raises(GenesisError, match="^" + str(path).replace(".", r"\.") + ": ") as info:
        load_genesis(path)
    assert str(info.value).startswith(f"{path}: {expected}"), str(info.value)


def test_invalid_utf8_is_an_error() -> None:
    with pytest.raises(GenesisError, match=r"^g\.json: not valid JSON: "):
        parse_genesis(b'{"chain_id": "\xff"}', "g.json")


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (lambda doc: doc["app_state"].update(note="\udcff"), "g.json: app_state.note: not text"),
        (lambda doc: doc["app_state"].update({"k\ud800": 1}), "g.json: app_state.k\\ud800: not text"),
        (lambda doc: doc["validators"][1].update(name="n\udfff"), "g.json: validators[1].name: not text"),
    ],
)
def test_a_lone_surrogate_is_an_error(where: Callable[[dict[str, Any]], None], expected: str) -> None:
    """Found by fuzzing (tests/fuzz, target genesis): a JSON `\\udcff` escape reads as a string
    that UTF-8 cannot encode, which was accepted and then failed (UnicodeEncodeError) when the
    document was written back or shown. It is refused, and the error prints."""
    doc = _valid_json()
    where(doc)
    text = json.dumps(doc)  # ASCII: the surrogate travels as its escape
    with pytest.raises(GenesisError) as info:
        parse_genesis(text, "g.json")
    assert str(info.value).startswith(expected), str(info.value)
    str(info.value).encode("utf-8")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(GenesisError, match="derivd init") as info:
        load_genesis(path)
    assert str(info.value).startswith(f"{path}: missing")


def test_from_json_names_the_source() -> None:
    obj = _valid_json()
    obj["validators"][1]["power"] = "-5"
    with pytest.raises(GenesisError) as info:
        GenesisDoc.from_json(obj, "/h/config/genesis.json")
    assert (
        str(info.value) == '/h/config/genesis.json: validators[1].power: must be a positive integer, got "-5"'
    )


# -- building documents in code ------------------------------------------------------------------


def test_new_genesis_derives_addresses() -> None:
    doc = _doc(4)
    assert [v.address for v in doc.validators] == [_key(i).address.raw for i in range(4)]
    assert [v.power for v in doc.validators] == [10, 20, 30, 40]
    assert doc.total_power == 100
    assert doc.genesis_time == TIME
    assert doc.initial_height == 1
    assert doc.consensus_params == ConsensusParams()


def test_new_genesis_single_validator_with_options() -> None:
    params = ConsensusParams(block_max_bytes=4096, evidence_max_bytes=1024)
    doc = new_genesis("solo", [(_key(0).public_key.raw, 1, "me")], 0, {}, initial_height=100, params=params)
    assert doc.initial_height == 100
    assert doc.consensus_params is params
    assert doc.to_json()["genesis_time"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            lambda: new_genesis("c", [(b"x" * 31, 1, "a")], 0, {}),
            "genesis: validators[0].pub_key: must be 32",
        ),
        (
            lambda: new_genesis(
                "c", [(_key(0).public_key.raw, 1, "a"), (_key(1).public_key.raw, 0, "b")], 0, {}
            ),
            "genesis: validators[1].power: must be a positive integer, got 0",
        ),
        (lambda: new_genesis("c", [], 0, {}), "genesis: validators: must list at least one validator"),
        (lambda: new_genesis("bad id", [(_key(0).public_key.raw, 1, "a")], 0, {}), "genesis: chain_id: may"),
        (
            lambda: new_genesis("c", [(_key(0).public_key.raw, 1, "a")], 0, {"x": {1, 2}}),
            "genesis: app_state: not representable as JSON",
        ),
        (
            lambda: ConsensusParams(block_max_bytes=0),
            "genesis: consensus_params.block.max_bytes: must be a positive",
        ),
        (
            lambda: ConsensusParams(validator_pub_key_types=("ed25519", "ed25519")),
            "genesis: consensus_params.valid",
        ),
        (
            lambda: GenesisValidator(b"\x00" * 20, _key(0).public_key.raw, 1, "a"),
            "genesis: address: does not match pub_key",
        ),
    ],
)
def test_construction_in_code_is_validated(call: Callable[[], object], expected: str) -> None:
    with pytest.raises(GenesisError) as info:
        call()
    assert str(info.value).startswith(expected), str(info.value)


def test_total_power_is_bounded() -> None:
    big = 2**59
    with pytest.raises(GenesisError, match=r"^genesis: validators: total power"):
        new_genesis("c", [(_key(i).public_key.raw, big, "") for i in range(3)], 0, {})


# -- consensus params: canonical form and hash ---------------------------------------------------


@st.composite
def consensus_params(draw: st.DrawFn) -> ConsensusParams:
    block_max_bytes = draw(st.integers(1, MAX_BLOCK_BYTES))
    return ConsensusParams(
        block_max_bytes=block_max_bytes,
        block_max_gas=draw(st.integers(-1, INT64_MAX)),
        evidence_max_age_num_blocks=draw(st.integers(1, INT64_MAX)),
        evidence_max_age_duration=draw(st.integers(1, INT64_MAX)),
        evidence_max_bytes=draw(st.integers(0, block_max_bytes)),
        version_app=draw(st.integers(0, UINT64_MAX)),
    )


@given(consensus_params())
def test_consensus_params_round_trips(params: ConsensusParams) -> None:
    decoded = codec.decode(codec.encode(params.to_fields()))
    assert ConsensusParams.from_fields(decoded) == params
    assert ConsensusParams.from_json(json.loads(json.dumps(params.to_json()))) == params
    assert ConsensusParams.from_fields(decoded).hash() == params.hash()


@given(consensus_params(), consensus_params())
def test_consensus_params_hash_tells_them_apart(a: ConsensusParams, b: ConsensusParams) -> None:
    assert (a.hash() == b.hash()) == (a == b)


def test_consensus_params_hash_is_sha256_of_the_fields() -> None:
    params = ConsensusParams()
    assert params.to_fields() == [22020096, -1, 100000, 172800000000000, 1048576, 0]
    assert params.hash() == hashlib.sha256(codec.encode(params.to_fields())).digest()
    assert params.hash() != ConsensusParams(version_app=1).hash()


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ([1, -1, 1, 1, 0], "consensus_params: expected 6 fields"),
        ([1, -1, 1, 1, 0, [b"ed25519"], 0], "consensus_params: expected 6 fields"),
        ([0, -1, 1, 1, 0, 0], "consensus_params.block.max_bytes: 0 is outside"),
        ([1, -2, 1, 1, 0, 0], "consensus_params.block.max_gas: -2 is outside"),
        ([1, -1, 1, 1, 0, -1], "consensus_params.version.app: -1 is outside"),
        ([1, -1, 1, 1, 2, 0], "consensus_params.evidence.max_bytes: must not exceed"),
        ([1, -1, 1, 1, b"", 0], "consensus_params.evidence.max_bytes: expected an integer"),
    ],
)
def test_consensus_params_from_fields_rejects(fields: codec.Value, expected: str) -> None:
    with pytest.raises(codec.DecodeError) as info:
        ConsensusParams.from_fields(fields)
    assert str(info.value).startswith(expected), str(info.value)


def test_address_helper_agrees_with_primitives() -> None:
    validator = GenesisValidator.from_pub_key(_key(5).public_key.raw, 3, "v")
    assert Address(validator.address) == Address.from_public_key(_key(5).public_key.raw)
