"""Tests of node.keystore: file modes, round trips, listing, and the errors for taken names,
bad names, missing and corrupt files."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from node.keystore import KeyInfo, KeyStore, KeyStoreError
from primitives.keyfile import PRIV_KEY_TYPE, PUB_KEY_TYPE
from primitives.keys import PrivateKey

SEED = bytes(range(32))


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_add_writes_private_files(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.add("alice")
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(tmp_path / "keys" / "alice.json") == 0o600
    assert os.listdir(tmp_path / "keys") == ["alice.json"]  # no temporary file left behind


def test_modes_do_not_depend_on_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        KeyStore(tmp_path).add("bob")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "keys") == 0o700
    assert _mode(tmp_path / "keys" / "bob.json") == 0o600


def test_an_existing_open_directory_is_tightened(tmp_path: Path) -> None:
    (tmp_path / "keys").mkdir(mode=0o755)
    os.chmod(tmp_path / "keys", 0o755)
    KeyStore(tmp_path).add("carol")
    assert _mode(tmp_path / "keys") == 0o700


def test_file_content_is_cometbft_style_json(tmp_path: Path) -> None:
    info = KeyStore(tmp_path).add("alice", SEED)
    key = PrivateKey.from_seed(SEED)
    obj = json.loads((tmp_path / "keys" / "alice.json").read_text())
    assert obj == {
        "name": "alice",
        "address": str(key.address),
        "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(key.public_key.raw).decode()},
        "priv_key": {"type": PRIV_KEY_TYPE, "value": base64.b64encode(key.cometbft_bytes()).decode()},
    }
    assert obj["address"] == obj["address"].lower()
    assert info == KeyInfo("alice", key.address, key.public_key)


def test_round_trip(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    added = store.add("alice", SEED)
    assert KeyStore(tmp_path).get("alice") == added
    private = KeyStore(tmp_path).private_key("alice")
    assert private.seed == SEED
    message = b"order"
    assert added.public_key.verify(message, private.sign(message))


def test_generated_keys_differ(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    assert store.add("a").address != store.add("b").address


def test_list_is_sorted_by_name(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    assert store.list() == []
    for name in ("zed", "Alice", "bob", "a.b-c_d"):
        store.add(name)
    (tmp_path / "keys" / "README.txt").write_text("not a key")
    assert [info.name for info in store.list()] == sorted(["zed", "Alice", "bob", "a.b-c_d"])
    assert store.list()[0] == store.get(sorted(["zed", "Alice", "bob", "a.b-c_d"])[0])


def test_to_json_has_no_private_key(tmp_path: Path) -> None:
    info = KeyStore(tmp_path).add("alice", SEED)
    key = PrivateKey.from_seed(SEED)
    assert info.to_json() == {
        "name": "alice",
        "address": str(key.address),
        "pub_key": {"type": PUB_KEY_TYPE, "value": base64.b64encode(key.public_key.raw).decode()},
    }


def test_adding_a_taken_name_fails_and_keeps_the_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    first = store.add("alice", SEED)
    with pytest.raises(KeyStoreError, match="a key named 'alice' already exists"):
        store.add("alice", bytes(32))
    assert store.get("alice") == first
    assert os.listdir(tmp_path / "keys") == ["alice.json"]


@pytest.mark.parametrize("name", ["", "a" * 65, "a/b", "../x", "a b", "é", "x.json\n"])
def test_bad_names(tmp_path: Path, name: str) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(KeyStoreError, match="invalid key name"):
        store.add(name)
    with pytest.raises(KeyStoreError, match="invalid key name"):
        store.get(name)
    assert not (tmp_path / "keys").exists() or os.listdir(tmp_path / "keys") == []


def test_longest_name_is_allowed(tmp_path: Path) -> None:
    name = "k" * 64
    assert KeyStore(tmp_path).add(name).name == name


def test_bad_seed(tmp_path: Path) -> None:
    with pytest.raises(KeyStoreError, match="key 'alice': an Ed25519 seed is 32 bytes, got 5"):
        KeyStore(tmp_path).add("alice", b"short")
    assert not (tmp_path / "keys" / "alice.json").exists()


def test_missing_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    with pytest.raises(KeyStoreError, match="no key named 'nobody'"):
        store.get("nobody")
    with pytest.raises(KeyStoreError, match="no key named 'nobody'"):
        store.private_key("nobody")


def _corrupt(obj: dict[str, Any], field: str, value: object) -> None:
    if value is None:
        del obj[field]
    else:
        obj[field] = value


OTHER = PrivateKey.from_seed(bytes(32))


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("address", "00" * 20, "address: '0000"),
        ("address", None, "address: missing (expected "),
        ("name", "bob", "name: 'bob' does not match the file name 'alice'"),
        (
            "pub_key",
            {"type": PUB_KEY_TYPE, "value": base64.b64encode(OTHER.public_key.raw).decode()},
            "pub_key: does",
        ),
        ("pub_key", None, "pub_key: must be"),
        ("priv_key", {"type": PRIV_KEY_TYPE, "value": "!!"}, "priv_key.value: "),
        (
            "priv_key",
            {"type": PRIV_KEY_TYPE, "value": base64.b64encode(b"x" * 64).decode()},
            "priv_key.value: ",
        ),
        ("priv_key", {"type": "other", "value": ""}, "priv_key: must be"),
    ],
)
def test_corrupt_files_are_errors(tmp_path: Path, field: str, value: object, expected: str) -> None:
    store = KeyStore(tmp_path)
    store.add("alice", SEED)
    path = tmp_path / "keys" / "alice.json"
    obj = json.loads(path.read_text())
    _corrupt(obj, field, value)
    path.write_text(json.dumps(obj))
    with pytest.raises(KeyStoreError) as info:
        store.get("alice")
    message = str(info.value)
    assert message.startswith(f"{path}: {expected}"), message
    assert "\n" not in message
    with pytest.raises(KeyStoreError):
        store.list()


def test_not_json(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.add("alice", SEED)
    path = tmp_path / "keys" / "alice.json"
    path.write_text("{not json")
    with pytest.raises(KeyStoreError, match="corrupt: not valid JSON"):
        store.private_key("alice")
    path.write_text("[]")
    with pytest.raises(KeyStoreError, match="corrupt: not a JSON object"):
        store.private_key("alice")


def test_a_name_taken_during_the_write_is_not_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process may create the same name after the existence check: the final hard link
    fails rather than replacing that key."""
    store = KeyStore(tmp_path)
    first = store.add("alice", SEED)
    monkeypatch.setattr(Path, "exists", lambda self: False)
    with pytest.raises(KeyStoreError, match="already exists"):
        store.add("alice", bytes(32))
    monkeypatch.undo()
    assert store.get("alice") == first
    assert os.listdir(tmp_path / "keys") == ["alice.json"]
