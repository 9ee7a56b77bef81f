"""`derivd keys` through the CLI (click's runner, in process): mnemonics printed once and recovered,
both keyring backends, passphrases from stdin, a terminal or the environment, export and import,
delete, `genesis add-account` by a file-keyring key name, and every operator error as one line with
exit code 2."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from genesis.genesis import load_genesis
from node import keys_cli
from node.cli import init_home, main
from node.hdkey import key_from_mnemonic
from node.keystore import KeyStore

KNOWN = " ".join(["abandon"] * 23 + ["art"])
KNOWN_ADDRESS = "091c832f507cca0db14c021a76059877a3252d5a"  # m/44'/118'/0'/0'/0' (test_keystore pins it)
PASS = "a good passphrase"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """`derivd ARGS` with stdin `input` (not a terminal); the environment's keyring variables are
    cleared unless given."""
    base = {keys_cli.PASSPHRASE_ENV: None, keys_cli.BACKEND_ENV: None}
    return CliRunner().invoke(main, list(args), input=input, env={**base, **(env or {})})


def ok(result: Result) -> Any:
    assert result.exit_code == 0, (result.exit_code, result.stderr)
    return json.loads(result.stdout)


def one_line_error(result: Result, code: int = 2) -> str:
    """The error of a failed command: exit `code`, one `Error:` line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_add_prints_a_24_word_mnemonic_once_and_recover_recreates_the_key(tmp_path: Path) -> None:
    added = ok(run("keys", "add", "alice", "--home", str(tmp_path / "a")))
    words = added["mnemonic"].split()
    assert len(words) == 24 and added["hd_path"] == "m/44'/118'/0'/0'/0'"
    assert str(key_from_mnemonic(added["mnemonic"]).address) == added["address"]
    # shown and listed without it, and the key file does not keep it
    shown = ok(run("keys", "show", "alice", "--home", str(tmp_path / "a")))
    assert shown == {k: added[k] for k in ("name", "address", "pub_key")}
    assert ok(run("keys", "list", "--home", str(tmp_path / "a"))) == [shown]
    assert words[0] not in (tmp_path / "a" / "keys" / "alice.json").read_text().split('"')
    # recovered elsewhere from stdin, with the operator's spacing and case
    typed = "  " + added["mnemonic"].upper().replace(" ", "  ") + "\n"
    recovered = ok(run("keys", "add", "again", "--recover", "--home", str(tmp_path / "b"), input=typed))
    assert recovered["address"] == added["address"] and "mnemonic" not in recovered
    assert (
        KeyStore(tmp_path / "b").private_key("again").seed
        == KeyStore(tmp_path / "a").private_key("alice").seed
    )


def test_recover_a_known_mnemonic_at_other_indexes(tmp_path: Path) -> None:
    home = str(tmp_path)
    assert (
        ok(run("keys", "add", "k0", "--recover", "--home", home, input=KNOWN + "\n"))["address"]
        == KNOWN_ADDRESS
    )
    other = ok(run("keys", "add", "k1", "--recover", "--index", "1", "--home", home, input=KNOWN + "\n"))
    assert other["address"] == "1f53d63bf12190773d84d306382c04604f7aa09c"
    assert other["hd_path"] == "m/44'/118'/0'/0'/1'"
    assert "mnemonic" not in ok(run("keys", "add", "k2", "--no-backup", "--home", home))


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        (
            " ".join(["abandon"] * 24),
            "invalid mnemonic: the mnemonic's checksum does not match (a word is wrong or misplaced)",
        ),
        (
            " ".join(["abandon"] * 23 + ["artt"]),
            "invalid mnemonic: word 24 is not in the BIP-39 English word list",
        ),
        ("abandon art", "invalid mnemonic: a mnemonic has 12, 15, 18, 21 or 24 words, got 2"),
        ("", "Enter your BIP-39 mnemonic: stdin is not a terminal and has no more lines"),
    ],
)
def test_a_bad_mnemonic_is_one_line_and_adds_nothing(tmp_path: Path, typed: str, problem: str) -> None:
    result = run(
        "keys", "add", "alice", "--recover", "--home", str(tmp_path), input=typed + "\n" if typed else ""
    )
    assert one_line_error(result) == f"Error: {problem}"
    assert "artt" not in result.stderr
    assert KeyStore(tmp_path).list() == []


def test_a_taken_name_is_refused_before_any_secret_is_read(tmp_path: Path) -> None:
    ok(run("keys", "add", "alice", "--home", str(tmp_path)))
    result = run("keys", "add", "alice", "--recover", "--home", str(tmp_path), input="")  # nothing to read
    assert "a key named 'alice' already exists" in one_line_error(result)
    assert "invalid key name" in one_line_error(run("keys", "add", "a/b", "--home", str(tmp_path)))


def test_file_keyring_add_show_and_sign_key(tmp_path: Path) -> None:
    home = str(tmp_path)
    added = ok(run("keys", "add", "alice", "--recover", "--keyring-backend", "file", "--home", home,
                   input=f"{KNOWN}\n{PASS}\n{PASS}\n"))  # fmt: skip
    assert added["address"] == KNOWN_ADDRESS
    path = tmp_path / "keyring-file" / "alice.json"
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700
    seed = key_from_mnemonic(KNOWN).seed
    assert seed.hex() not in path.read_text() and not (tmp_path / "keys").exists()
    # showing and listing need no passphrase (stdin is empty); the backend may come from the environment
    assert (
        ok(run("keys", "show", "alice", "--keyring-backend", "file", "--home", home))["address"]
        == KNOWN_ADDRESS
    )
    listed = ok(run("keys", "list", "--home", home, env={keys_cli.BACKEND_ENV: "file"}))
    assert [k["address"] for k in listed] == [KNOWN_ADDRESS]
    assert ok(run("keys", "list", "--home", home)) == []  # the test keyring is another one
    assert (
        run("keys", "show", "alice", "-a", "--keyring-backend", "file", "--home", home).stdout
        == KNOWN_ADDRESS + "\n"
    )


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        (f"{PASS}\nanother one\n", "the passphrases do not match"),
        ("short\nshort\n", "a passphrase has at least 8 characters"),
        (f"{PASS}\n", "Repeat the passphrase: stdin is not a terminal and has no more lines"),
    ],
)
def test_file_keyring_new_passphrase_errors(tmp_path: Path, typed: str, problem: str) -> None:
    result = run("keys", "add", "alice", "--keyring-backend", "file", "--home", str(tmp_path), input=typed)
    assert one_line_error(result) == f"Error: {problem}"
    assert not (tmp_path / "keyring-file" / "alice.json").exists()


def test_passphrase_from_the_environment(tmp_path: Path) -> None:
    home, env = str(tmp_path), {keys_cli.PASSPHRASE_ENV: PASS}
    ok(
        run(
            "keys",
            "add",
            "alice",
            "--recover",
            "--keyring-backend",
            "file",
            "--home",
            home,
            input=KNOWN + "\n",
            env=env,
        )
    )
    exported = run("keys", "export", "alice", "--keyring-backend", "file", "--home", home,
                   input="export pass\nexport pass\n", env=env)  # fmt: skip
    assert exported.exit_code == 0 and "BEGIN DERIVD PRIVATE KEY" in exported.stdout
    short = run(
        "keys", "add", "bob", "--keyring-backend", "file", "--home", home, env={keys_cli.PASSPHRASE_ENV: "x"}
    )
    assert (
        one_line_error(short) == f"Error: ${keys_cli.PASSPHRASE_ENV}: a passphrase has at least 8 characters"
    )


def test_passphrases_on_a_terminal_are_asked_with_echo_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_cli, "_interactive", lambda: True)
    home = str(tmp_path)
    result = run("keys", "add", "alice", "--recover", "--keyring-backend", "file", "--home", home,
                 input=f"{KNOWN}\n{PASS}\n{PASS}\n")  # fmt: skip
    assert json.loads(result.stdout)["address"] == KNOWN_ADDRESS
    assert "Enter your BIP-39 mnemonic" in result.stderr and "Repeat the passphrase" in result.stderr
    assert "abandon" not in result.stderr and PASS not in result.stderr  # nothing echoed
    mismatch = run(
        "keys", "add", "bob", "--keyring-backend", "file", "--home", home, input=f"{PASS}\nother one\n"
    )
    assert mismatch.exit_code == 2 and "Error: the passphrases do not match" in mismatch.stderr


def test_export_import_round_trip_between_backends(tmp_path: Path) -> None:
    src, dst = str(tmp_path / "src"), str(tmp_path / "dst")
    ok(run("keys", "add", "alice", "--recover", "--keyring-backend", "file", "--home", src,
           input=f"{KNOWN}\n{PASS}\n{PASS}\n"))  # fmt: skip
    out = tmp_path / "alice.armor"
    exported = run(
        "keys", "export", "alice", "--keyring-backend", "file", "--home", src, "--output", str(out),
        input=f"{PASS}\nexport pass\nexport pass\n",
    )  # fmt: skip
    assert exported.exit_code == 0, exported.stderr
    assert _mode(out) == 0o600 and key_from_mnemonic(KNOWN).seed.hex() not in out.read_text()
    # into the test keyring of another home, then back into a file keyring under a new passphrase
    imported = ok(run("keys", "import", "bob", str(out), "--home", dst, input="export pass\n"))
    assert imported["address"] == KNOWN_ADDRESS
    assert KeyStore(Path(dst)).private_key("bob").seed == key_from_mnemonic(KNOWN).seed
    again = ok(run("keys", "import", "carol", str(out), "--keyring-backend", "file", "--home", dst,
                   input="export pass\nnew passphrase\nnew passphrase\n"))  # fmt: skip
    assert again["address"] == KNOWN_ADDRESS
    # an existing file is never overwritten
    refused = run("keys", "export", "alice", "--keyring-backend", "file", "--home", src, "--output", str(out))
    assert one_line_error(refused) == f"Error: --output: {out} exists; it is not overwritten"


def test_wrong_passphrases_are_one_line(tmp_path: Path) -> None:
    home = str(tmp_path)
    ok(run("keys", "add", "alice", "--recover", "--keyring-backend", "file", "--home", home,
           input=f"{KNOWN}\n{PASS}\n{PASS}\n"))  # fmt: skip
    path = tmp_path / "keyring-file" / "alice.json"
    wrong = run("keys", "export", "alice", "--keyring-backend", "file", "--home", home, input="not the one\n")
    assert (
        one_line_error(wrong) == f"Error: {path}: wrong passphrase for key 'alice' (or the file was altered)"
    )
    armored = run("keys", "export", "alice", "--keyring-backend", "file", "--home", home,
                  input=f"{PASS}\nexport pass\nexport pass\n").stdout  # fmt: skip
    (tmp_path / "k.armor").write_text(armored)
    bad = run("keys", "import", "bob", str(tmp_path / "k.armor"), "--home", home, input="export pasS\n")
    assert one_line_error(bad) == f"Error: {tmp_path / 'k.armor'}: wrong passphrase (or the file was altered)"
    (tmp_path / "x.armor").write_text("not a key\n")
    junk = run("keys", "import", "bob", str(tmp_path / "x.armor"), "--home", home, input="export pass\n")
    assert "not an armored derivd key" in one_line_error(junk)
    missing = run("keys", "import", "bob", str(tmp_path / "nope"), "--home", home)
    assert "cannot read" in one_line_error(missing)
    assert KeyStore(tmp_path).list() == []


def test_delete_asks_unless_yes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = str(tmp_path)
    ok(run("keys", "add", "alice", "--home", home))
    ok(run("keys", "add", "bob", "--home", home))
    refused = run("keys", "delete", "alice", "--home", home)
    assert (
        one_line_error(refused)
        == "Error: refusing to delete key 'alice' without --yes (stdin is not a terminal)"
    )
    assert run("keys", "delete", "alice", "--yes", "--home", home).exit_code == 0
    assert [k["name"] for k in ok(run("keys", "list", "--home", home))] == ["bob"]
    monkeypatch.setattr(keys_cli, "_interactive", lambda: True)
    kept = run("keys", "delete", "bob", "--home", home, input="n\n")
    assert kept.exit_code == 1 and (tmp_path / "keys" / "bob.json").exists()
    assert run("keys", "delete", "bob", "--home", home, input="y\n").exit_code == 0
    assert ok(run("keys", "list", "--home", home)) == []
    assert "no key named 'bob'" in one_line_error(run("keys", "delete", "bob", "--yes", "--home", home))


def test_genesis_add_account_by_a_file_keyring_name_needs_no_passphrase(tmp_path: Path) -> None:
    init_home(tmp_path, "test", "keys-chain")
    home = str(tmp_path)
    ok(run("keys", "add", "alice", "--recover", "--keyring-backend", "file", "--home", home,
           input=f"{KNOWN}\n{PASS}\n{PASS}\n"))  # fmt: skip
    added = ok(run("genesis", "add-account", "alice", "1000000", "--keyring-backend", "file", "--home", home))
    assert added == {"address": KNOWN_ADDRESS, "added": "1000000"}
    accounts = load_genesis(tmp_path / "config" / "genesis.json").app_state["accounts"]
    assert [a["address"] for a in accounts] == [KNOWN_ADDRESS]
    unknown = run("genesis", "add-account", "alice", "5", "--home", home)  # not in the test keyring
    assert unknown.exit_code == 1 and "is neither an address nor a key name" in unknown.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run("keys", "add", "--home", str(tmp_path)).exit_code == 2  # missing NAME
    assert run("keys", "list", "--keyring-backend", "os", "--home", str(tmp_path)).exit_code == 2
    assert "no key named 'nobody'" in one_line_error(run("keys", "show", "nobody", "--home", str(tmp_path)))
