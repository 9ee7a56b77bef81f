"""Tests of the key stores (node.keystore, node.keyring), their key derivation (node.hdkey: BIP-39
and SLIP-0010 test vectors) and encryption (node.keycrypt): file modes, round trips, listing,
deleting, passphrases, no plaintext in the file backend, and the errors for taken names, bad names,
bad mnemonics, missing, corrupt and altered files."""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mnemonic import Mnemonic

from node.hdkey import (
    MnemonicError,
    account_path,
    derive_child,
    derive_path,
    key_from_mnemonic,
    master_key,
    mnemonic_seed,
    new_mnemonic,
    normalize_mnemonic,
    parse_path,
)
from node.keycrypt import (
    DEFAULT_ITERATIONS,
    DEFAULT_MEMORY_KIB,
    KdfParams,
    KeyCryptError,
    SealedSeed,
    WrongPassphrase,
    armor,
    open_seed,
    seal_seed,
    unarmor,
)
from node.keyring import FileKeyStore, open_keyring
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
    assert info == KeyInfo(name="alice", address=key.address, public_key=key.public_key)


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


def test_delete_removes_only_that_key(tmp_path: Path) -> None:
    store = KeyStore(tmp_path)
    store.add("alice", SEED)
    bob = store.add("bob")
    store.delete("alice")
    assert store.list() == [bob]
    assert not store.exists("alice")
    with pytest.raises(KeyStoreError, match="no key named 'alice'"):
        store.delete("alice")


# -- BIP-39 and SLIP-0010 ----------------------------------------------------------------------------

# BIP-39's English test vectors (Trezor's vectors.json; every seed is with the passphrase "TREZOR").
BIP39_VECTORS = [
    (
        "00000000000000000000000000000000",
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141"
        "630c7a3c4ab7c81b2f001698e7463b04",
    ),
    (
        "7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f7f",
        "legal winner thank year wave sausage worth useful legal winner thank yellow",
        "2e8905819b8723fe2c1d161860e5ee1830318dbf49a83bd451cfb8440c28bd6fa457fe1296106559a3c80937a1c1069b"
        "e3a3a5bd381ee6260e8d9739fce1f607",
    ),
    (
        "ffffffffffffffffffffffffffffffff",
        "zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo zoo wrong",
        "ac27495480225222079d7be181583751e86f571027b0497b5b5d11218e0a8a13332572917f0f8e5a589620c6f15b11c6"
        "1dee327651a14c34e18231052e48c069",
    ),
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        " ".join(["abandon"] * 23 + ["art"]),
        "bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3"
        "de6f5d4a10be8ed2a5e608d68f92fcc8",
    ),
    (
        "8080808080808080808080808080808080808080808080808080808080808080",
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage absurd amount doctor "
        "acoustic avoid letter advice cage absurd amount doctor acoustic bless",
        "c0c519bd0e91a2ed54357d9d1ebef6f5af218a153624cf4f2da911a0ed8f7a09e2ef61af0aca007096df430022f7a2b6"
        "fb91661a9589097069720d015e4e982f",
    ),
    (
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        " ".join(["zoo"] * 23 + ["vote"]),
        "dd48c104698c30cfe2b6142103248622fb7bb0ff692eebb00089b32d22484e1613912f0a5b694407be899ffd31ed3992"
        "c456cdf60f5d4564b8ba3f05a69890ad",
    ),
    (
        "9e885d952ad362caeb4efe34a8e91bd2",
        "ozone drill grab fiber curtain grace pudding thank cruise elder eight picnic",
        "274ddc525802f7c828d8ef7ddbcdc5304e87ac3535913611fbbfa986d0c9e5476c91689f9c8a54fd55bd38606aa6a859"
        "5ad213d4c9c9f9aca3fb217069a41028",
    ),
    (
        "68a79eaca2324873eacc50cb9c6eca8cc68ea5d936f98787c60c7ebc74e6ce7c",
        "hamster diagram private dutch cause delay private meat slide toddler razor book happy fancy gospel "
        "tennis maple dilemma loan word shrug inflict delay length",
        "64c87cde7e12ecf6704ab95bb1408bef047c22db4cc7491c4271d170a1b213d20b385bc1588d9c7b38f1b39d415665b8"
        "a9030c9ec653d75e65f847d8fc1fc440",
    ),
]


@pytest.mark.parametrize(("entropy", "mnemonic", "seed"), BIP39_VECTORS)
def test_bip39_vectors(entropy: str, mnemonic: str, seed: str) -> None:
    assert Mnemonic("english").to_mnemonic(bytes.fromhex(entropy)) == mnemonic
    assert normalize_mnemonic(mnemonic) == mnemonic
    assert mnemonic_seed(mnemonic, "TREZOR").hex() == seed
    # how an operator may type it: upper case, extra spaces, a trailing newline
    assert mnemonic_seed("  " + mnemonic.upper().replace(" ", "   ") + "\n", "TREZOR").hex() == seed


# SLIP-0010's Ed25519 test vectors 1 and 2: (seed, path, chain code, private key, public key with
# SLIP-0010's 0x00 prefix).
SLIP10_SEED_1 = "000102030405060708090a0b0c0d0e0f"
SLIP10_SEED_2 = (
    "fffcf9f6f3f0edeae7e4e1dedbd8d5d2cfccc9c6c3c0bdbab7b4b1aeaba8a5a29f9c999693908d8a8784817e7b7875726f"
    "6c696663605d5a5754514e4b484542"
)
SLIP10_VECTORS = [
    (SLIP10_SEED_1, "m",
     "90046a93de5380a72b5e45010748567d5ea02bbf6522f979e05c0d8d8ca9fffb",
     "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7",
     "00a4b2856bfec510abab89753fac1ac0e1112364e7d250545963f135f2a33188ed"),
    (SLIP10_SEED_1, "m/0'",
     "8b59aa11380b624e81507a27fedda59fea6d0b779a778918a2fd3590e16e9c69",
     "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3",
     "008c8a13df77a28f3445213a0f432fde644acaa215fc72dcdf300d5efaa85d350c"),
    (SLIP10_SEED_1, "m/0'/1'",
     "a320425f77d1b5c2505a6b1b27382b37368ee640e3557c315416801243552f14",
     "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2",
     "001932a5270f335bed617d5b935c80aedb1a35bd9fc1e31acafd5372c30f5c1187"),
    (SLIP10_SEED_1, "m/0'/1'/2'",
     "2e69929e00b5ab250f49c3fb1c12f252de4fed2c1db88387094a0f8c4c9ccd6c",
     "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9",
     "00ae98736566d30ed0e9d2f4486a64bc95740d89c7db33f52121f8ea8f76ff0fc1"),
    (SLIP10_SEED_1, "m/0'/1'/2'/2'",
     "8f6d87f93d750e0efccda017d662a1b31a266e4a6f5993b15f5c1f07f74dd5cc",
     "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662",
     "008abae2d66361c879b900d204ad2cc4984fa2aa344dd7ddc46007329ac76c429c"),
    (SLIP10_SEED_1, "m/0'/1'/2'/2'/1000000000'",
     "68789923a0cac2cd5a29172a475fe9e0fb14cd6adb5ad98a3fa70333e7afa230",
     "8f94d394a8e8fd6b1bc2f3f49f5c47e385281d5c17e65324b0f62483e37e8793",
     "003c24da049451555d51a7014a37337aa4e12d41e485abccfa46b47dfb2af54b7a"),
    (SLIP10_SEED_2, "m",
     "ef70a74db9c3a5af931b5fe73ed8e1a53464133654fd55e7a66f8570b8e33c3b",
     "171cb88b1b3c1db25add599712e36245d75bc65a1a5c9e18d76f9f2b1eab4012",
     "008fe9693f8fa62a4305a140b9764c5ee01e455963744fe18204b4fb948249308a"),
    (SLIP10_SEED_2, "m/0'",
     "0b78a3226f915c082bf118f83618a618ab6dec793752624cbeb622acb562862d",
     "1559eb2bbec5790b0c65d8693e4d0875b1747f4970ae8b650486ed7470845635",
     "0086fab68dcb57aa196c77c5f264f215a112c22a912c10d123b0d03c3c28ef1037"),
    (SLIP10_SEED_2, "m/0'/2147483647'",
     "138f0b2551bcafeca6ff2aa88ba8ed0ed8de070841f0c4ef0165df8181eaad7f",
     "ea4f5bfe8694d8bb74b7b59404632fd5968b774ed545e810de9c32a4fb4192f4",
     "005ba3b9ac6e90e83effcd25ac4e58a1365a9e35a3d3ae5eb07b9e4d90bcf7506d"),
    (SLIP10_SEED_2, "m/0'/2147483647'/1'",
     "73bd9fff1cfbde33a1b846c27085f711c0fe2d66fd32e139d3ebc28e5a4a6b90",
     "3757c7577170179c7868353ada796c839135b3d30554bbb74a4b1e4a5a58505c",
     "002e66aa57069c86cc18249aecf5cb5a9cebbfd6fadeab056254763874a9352b45"),
    (SLIP10_SEED_2, "m/0'/2147483647'/1'/2147483646'",
     "0902fe8a29f9140480a00ef244bd183e8a13288e4412d8389d140aac1794825a",
     "5837736c89570de861ebc173b1086da4f505d4adb387c6a1b1342d5e4ac9ec72",
     "00e33c0f7d81d843c572275f287498e8d408654fdf0d1e065b84e2e6f157aab09b"),
    (SLIP10_SEED_2, "m/0'/2147483647'/1'/2147483646'/2'",
     "5d70af781f3a37b829f0d060924d5e960bdc02e85423494afc0b1a41bbe196d4",
     "551d333177df541ad876a60ea71f00447931c0a9da16f227c11ea080d7391b8d",
     "0047150c75db263559a70d5778bf36abbab30fb061ad69f69ece61a72b0cfa4fc0"),
]  # fmt: skip


@pytest.mark.parametrize(("seed", "path", "chain_code", "private", "public"), SLIP10_VECTORS)
def test_slip10_ed25519_vectors(seed: str, path: str, chain_code: str, private: str, public: str) -> None:
    node = derive_path(bytes.fromhex(seed), path)
    assert node.chain_code.hex() == chain_code
    assert node.key.hex() == private
    assert "00" + PrivateKey.from_seed(node.key).public_key.raw.hex() == public


@pytest.mark.parametrize(
    ("path", "problem"),
    [("44'/0'", "starts with 'm'"), ("m/44'/0", "hardened"), ("m/44'/x'", "hardened"),
     ("m/2147483648'", "hardened"), ("m/", "hardened")],
)  # fmt: skip
def test_paths_are_hardened_only(path: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_path(path)
    with pytest.raises(ValueError, match="hardened only"):
        derive_child(master_key(bytes(16)), 5)


def test_account_key_path_is_derivds() -> None:
    """m/44'/118'/account'/0'/index': the documented path, pinned (a change of path or coin type
    would silently give every recovered account another address)."""
    mnemonic = " ".join(["abandon"] * 23 + ["art"])
    assert account_path(0, 0) == "m/44'/118'/0'/0'/0'"
    seed = mnemonic_seed(mnemonic)
    assert key_from_mnemonic(mnemonic).seed == derive_path(seed, "m/44'/118'/0'/0'/0'").key
    assert key_from_mnemonic(mnemonic).seed.hex() == (
        "3bc1e4ddfeaa9e1279e07664c003088ad9576bf39e6386911c8e7017865ce8b4"
    )
    assert str(key_from_mnemonic(mnemonic, 0, 1).address) == "1f53d63bf12190773d84d306382c04604f7aa09c"
    assert str(key_from_mnemonic(mnemonic, 1, 0).address) == "aee5927abd3add0166b14186900a2d395097f410"


def test_new_mnemonics_are_24_checked_words() -> None:
    first, second = new_mnemonic(), new_mnemonic()
    assert len(first.split()) == 24 and first != second
    assert normalize_mnemonic(first) == first


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("abandon " * 11 + "about extra", "12, 15, 18, 21 or 24 words, got 13"),
        ("", "got 0"),
        ("abandon " * 11 + "abbout", "word 12 is not in the BIP-39 English word list"),
        ("abandon " * 11 + "abandon", "checksum does not match"),
        ("zoo " * 23 + "wrong", "checksum does not match"),
    ],
)
def test_bad_mnemonics_are_one_line_without_the_phrase(text: str, problem: str) -> None:
    with pytest.raises(MnemonicError, match=problem) as info:
        normalize_mnemonic(text)
    assert "\n" not in str(info.value) and "abbout" not in str(info.value)


# -- passphrase encryption ---------------------------------------------------------------------------

CHEAP = KdfParams(salt=b"s" * 16, iterations=1, memory_kib=64, lanes=1)


def test_sealed_seed_opens_with_its_passphrase_and_associated_data_only() -> None:
    key = PrivateKey.from_seed(SEED)
    sealed = seal_seed(key, "correct horse", b"alice")
    assert sealed.kdf.iterations == DEFAULT_ITERATIONS and sealed.kdf.memory_kib == DEFAULT_MEMORY_KIB
    assert SEED not in sealed.ciphertext
    assert open_seed(sealed, "correct horse", b"alice").seed == SEED
    with pytest.raises(WrongPassphrase):
        open_seed(sealed, "correct horsE", b"alice")
    with pytest.raises(WrongPassphrase):
        open_seed(sealed, "correct horse", b"mallory")
    again = seal_seed(key, "correct horse", b"alice")
    assert (again.kdf.salt, again.nonce) != (sealed.kdf.salt, sealed.nonce)  # fresh each time


def test_the_kdf_parameters_travel_with_the_ciphertext() -> None:
    """A key sealed with other costs (an older or newer default) opens with the costs it records."""
    key = PrivateKey.from_seed(SEED)
    stored = json.loads(json.dumps(seal_seed(key, "passphrase", b"ad", CHEAP).to_json()))
    assert stored["kdf"] == {
        "name": "argon2id", "salt": base64.b64encode(b"s" * 16).decode(), "iterations": 1,
        "memory_kib": 64, "lanes": 1,
    }  # fmt: skip
    assert open_seed(SealedSeed.from_json(stored, "x"), "passphrase", b"ad").seed == SEED
    stored["kdf"]["iterations"] = 2  # a different cost is a different key
    with pytest.raises(WrongPassphrase):
        open_seed(SealedSeed.from_json(stored, "x"), "passphrase", b"ad")


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"memory_kib": 8 * 1024 * 1024}, "x.kdf.memory_kib: 8388608 is outside"),
        ({"iterations": 0}, "x.kdf.iterations: 0 is outside"),
        ({"name": "scrypt"}, "x.kdf.name: unsupported KDF 'scrypt'"),
        ({"salt": "!"}, "x.kdf.salt: not valid base64"),
        ({"extra": 1}, "unexpected fields"),
    ],
)
def test_stored_kdf_parameters_are_checked(change: dict[str, Any], problem: str) -> None:
    stored = seal_seed(PrivateKey.from_seed(SEED), "passphrase", b"ad", CHEAP).to_json()
    stored["kdf"].update(change)
    with pytest.raises(KeyCryptError, match=re.escape(problem)):
        SealedSeed.from_json(stored, "x").kdf.derive("passphrase")


def test_armor_round_trip_and_tampering() -> None:
    key = PrivateKey.from_seed(SEED)
    text = armor(key, "export pass", CHEAP)
    lines = text.splitlines()
    assert (
        lines[0] == "-----BEGIN DERIVD PRIVATE KEY-----" and lines[-1] == "-----END DERIVD PRIVATE KEY-----"
    )
    assert f"address: {key.address}" in lines
    assert base64.b64encode(SEED).decode() not in text and SEED.hex() not in text
    assert unarmor(text, "export pass").seed == SEED
    assert unarmor(text.replace("\n", "\r\n"), "export pass").seed == SEED
    with pytest.raises(WrongPassphrase):
        unarmor(text, "export pasS")
    other = str(PrivateKey.from_seed(bytes(32)).address)
    with pytest.raises(WrongPassphrase):  # the headers are the associated data
        unarmor(text.replace(f"address: {key.address}", f"address: {other}"), "export pass")
    with pytest.raises(KeyCryptError, match="not an armored derivd key"):
        unarmor("hello", "export pass")
    with pytest.raises(KeyCryptError, match="missing header"):
        unarmor("\n".join(line for line in lines if not line.startswith("nonce:")), "export pass")
    with pytest.raises(KeyCryptError, match="unknown or malformed header"):
        unarmor(text.replace("lanes: 1", "lanes 1"), "export pass")


# -- the file backend --------------------------------------------------------------------------------


@dataclass
class GivenPassphrases:
    """Passphrases from the test; records what was asked."""

    passphrase: str
    asked: list[str] = field(default_factory=list)

    def for_key(self, name: str) -> str:
        self.asked.append(f"open {name}")
        return self.passphrase

    def new_for_key(self, name: str) -> str:
        self.asked.append(f"new {name}")
        return self.passphrase


def test_file_backend_round_trip_and_no_plaintext(tmp_path: Path) -> None:
    given = GivenPassphrases("a good passphrase")
    store = open_keyring(tmp_path, "file", given)
    assert isinstance(store, FileKeyStore)
    info = store.add_key("alice", PrivateKey.from_seed(SEED))
    assert given.asked == ["new alice"]
    path = tmp_path / "keyring-file" / "alice.json"
    assert _mode(tmp_path / "keyring-file") == 0o700 and _mode(path) == 0o600
    content = path.read_bytes()
    key = PrivateKey.from_seed(SEED)
    for secret in (SEED, key.cometbft_bytes()):
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form not in content
    obj = json.loads(content)
    assert obj["address"] == str(key.address) and obj["priv_key"]["type"] == PRIV_KEY_TYPE
    assert set(obj["priv_key"]) == {"type", "sealed"}
    # the public part needs no passphrase
    reopened = open_keyring(tmp_path, "file", GivenPassphrases("unused"))
    assert reopened.get("alice") == info and reopened.list() == [info]
    assert open_keyring(tmp_path, "file", given).private_key("alice").seed == SEED
    assert not KeyStore(tmp_path).exists("alice")  # the test keyring is another directory


def test_file_backend_wrong_passphrase_is_one_line(tmp_path: Path) -> None:
    open_keyring(tmp_path, "file", GivenPassphrases("a good passphrase")).add_key(
        "alice", PrivateKey.from_seed(SEED)
    )
    with pytest.raises(KeyStoreError) as info:
        open_keyring(tmp_path, "file", GivenPassphrases("a bad passphrase")).private_key("alice")
    path = tmp_path / "keyring-file" / "alice.json"
    assert str(info.value) == f"{path}: wrong passphrase for key 'alice' (or the file was altered)"


def test_file_backend_public_part_is_bound_to_the_sealed_key(tmp_path: Path) -> None:
    """Swapping in another key's public part (the address that receives funds) makes the file
    unusable rather than signing for, or showing, an address the seed does not own."""
    given = GivenPassphrases("a good passphrase")
    open_keyring(tmp_path, "file", given).add_key("alice", PrivateKey.from_seed(SEED))
    path = tmp_path / "keyring-file" / "alice.json"
    obj = json.loads(path.read_text())
    obj["pub_key"]["value"] = base64.b64encode(OTHER.public_key.raw).decode()
    obj["address"] = str(OTHER.address)
    path.write_text(json.dumps(obj))
    store = open_keyring(tmp_path, "file", given)
    assert store.get("alice").address == OTHER.address  # consistent on its own...
    with pytest.raises(KeyStoreError, match="wrong passphrase"):  # ...but not with the sealed seed
        store.private_key("alice")


def test_file_backend_adds_without_replacing_and_deletes(tmp_path: Path) -> None:
    given = GivenPassphrases("a good passphrase")
    store = open_keyring(tmp_path, "file", given)
    first = store.add_key("alice", PrivateKey.from_seed(SEED))
    with pytest.raises(KeyStoreError, match="already exists"):
        store.add_key("alice", OTHER)
    assert given.asked == ["new alice"]  # refused before a passphrase was asked
    assert store.get("alice") == first
    store.delete("alice")
    assert store.list() == [] and not store.exists("alice")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda obj: obj["priv_key"].pop("sealed"),
            "priv_key: must be {type: tendermint/PrivKeyEd25519, sealed}",
        ),
        (lambda obj: obj["priv_key"]["sealed"].update(cipher="aes"), "unsupported cipher 'aes'"),
        (lambda obj: obj.update(address="00" * 20), "address: '0000"),
    ],
)
def test_file_backend_corrupt_files(tmp_path: Path, change: Any, expected: str) -> None:
    open_keyring(tmp_path, "file", GivenPassphrases("a good passphrase")).add_key(
        "alice", PrivateKey.from_seed(SEED)
    )
    path = tmp_path / "keyring-file" / "alice.json"
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))
    with pytest.raises(KeyStoreError) as info:
        open_keyring(tmp_path, "file", GivenPassphrases("a good passphrase")).get("alice")
    assert str(info.value).startswith(f"{path}: ") and expected in str(info.value)
