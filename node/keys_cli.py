"""The `derivd keys` commands, in the manner of the Cosmos SDK's: `add` (a new BIP-39 mnemonic, or
`--recover` from one), `show`, `list`, `delete`, `export` and `import` (armored, passphrase
encrypted), on the `test` or `file` keyring (`--keyring-backend`, `$DERIVD_KEYRING_BACKEND`). Also
what every signing command shares: that option, the passphrase and mnemonic prompts, and loading a
key to sign with.

Secrets are read with echo off on a terminal; when stdin is not a terminal, each is the next line of
stdin, in the order the prompts would come (`keys add --recover` on the file keyring: the mnemonic,
then the new passphrase twice). `$DERIVD_KEYRING_PASSPHRASE`, when set, is the file keyring's
passphrase for every key (unsafe: other processes of the same user and root can read a process's
environment). Errors exit with `node.exitcodes`' codes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import cast

import click

from node.client import emit, home_option
from node.exitcodes import bad_input
from node.hdkey import (
    HARDENED,
    MnemonicError,
    account_path,
    key_from_mnemonic,
    new_mnemonic,
    normalize_mnemonic,
)
from node.keycrypt import KeyCryptError, WrongPassphrase, armor, check_new_passphrase, unarmor
from node.keyring import BACKENDS, Backend, Keyring, open_keyring
from node.keystore import FILE_MODE, KeyInfo, KeyStoreError
from primitives.keys import PrivateKey

BACKEND_ENV = "DERIVD_KEYRING_BACKEND"
PASSPHRASE_ENV = "DERIVD_KEYRING_PASSPHRASE"
MNEMONIC_WARNING = (
    "**Important** write this mnemonic phrase in a safe place. It is the only way to recover "
    "your account if you ever lose the key."
)

keyring_backend_option = click.option(
    "--keyring-backend",
    type=click.Choice(BACKENDS),
    default="test",
    envvar=BACKEND_ENV,
    show_default=True,
    show_envvar=True,
    help="test: plaintext files in <home>/keys; file: encrypted with a passphrase in <home>/keyring-file.",
)


def _interactive() -> bool:
    """Whether stdin is a terminal (prompts with echo off) or a pipe (one line per secret)."""
    return sys.stdin.isatty()


def read_secret(prompt: str) -> str:
    """A secret: asked with echo off on a terminal, else the next line of stdin."""
    if _interactive():
        return click.prompt(prompt, hide_input=True, err=True)
    line = sys.stdin.readline()
    if not line:
        bad_input(f"{prompt}: stdin is not a terminal and has no more lines")
    return line.rstrip("\r\n")


def read_new_passphrase(prompt: str) -> str:
    """A new passphrase, asked twice; an error if it is too short or the two differ."""
    first = read_secret(prompt)
    try:
        check_new_passphrase(first)
    except KeyCryptError as exc:
        bad_input(str(exc))
    if read_secret("Repeat the passphrase") != first:
        bad_input("the passphrases do not match")
    return first


class PromptedPassphrases:
    """The file keyring's passphrases: `$DERIVD_KEYRING_PASSPHRASE`, else asked."""

    def for_key(self, name: str) -> str:
        return os.environ.get(PASSPHRASE_ENV) or read_secret(f"Enter the passphrase of key {name!r}")

    def new_for_key(self, name: str) -> str:
        given = os.environ.get(PASSPHRASE_ENV)
        if given:
            try:
                return check_new_passphrase(given)
            except KeyCryptError as exc:
                bad_input(f"${PASSPHRASE_ENV}: {exc}")
        return read_new_passphrase(f"Enter a passphrase to encrypt key {name!r}")


def open_cli_keyring(home: Path, backend: str) -> Keyring:
    """`home`'s keyring of `backend` (a `--keyring-backend` value), prompting for passphrases."""
    return open_keyring(home, cast("Backend", backend), PromptedPassphrases())


def signing_key(home: Path, backend: str, name: str) -> PrivateKey:
    """Key `name` to sign with; a missing key or a wrong passphrase is an input error."""
    try:
        return open_cli_keyring(home, backend).private_key(name)
    except KeyStoreError as exc:
        bad_input(str(exc))


def key_info(home: Path, backend: str, name: str) -> KeyInfo:
    """The public part of key `name` (no passphrase asked); an input error if there is none."""
    try:
        return open_cli_keyring(home, backend).get(name)
    except KeyStoreError as exc:
        bad_input(str(exc))


def _check_free(keyring: Keyring, name: str) -> None:
    try:
        taken = keyring.exists(name)
    except KeyStoreError as exc:
        bad_input(str(exc))
    if taken:
        bad_input(f"{keyring.file_of(name)}: a key named {name!r} already exists")


def _add(keyring: Keyring, name: str, key: PrivateKey) -> KeyInfo:
    try:
        return keyring.add_key(name, key)
    except KeyStoreError as exc:
        bad_input(str(exc))


@click.group(name="keys")
def keys_group() -> None:
    """Manage the account keys that sign transactions (keyring under <home>)."""


@keys_group.command(name="add")
@home_option
@keyring_backend_option
@click.argument("name")
@click.option(
    "--recover",
    is_flag=True,
    help="Recreate the key from its BIP-39 mnemonic (asked with echo off; read from stdin when it is "
    "not a terminal).",
)
@click.option(
    "--account",
    type=click.IntRange(0, HARDENED - 1),
    default=0,
    show_default=True,
    help="Account number of the path m/44'/118'/ACCOUNT'/0'/INDEX'.",
)
@click.option(
    "--index",
    type=click.IntRange(0, HARDENED - 1),
    default=0,
    show_default=True,
    help="Address index of the path m/44'/118'/ACCOUNT'/0'/INDEX'.",
)
@click.option("--no-backup", is_flag=True, help="Do not print the new key's mnemonic.")
def keys_add(
    home: Path, keyring_backend: str, name: str, recover: bool, account: int, index: int, no_backup: bool
) -> None:
    """Create key NAME from a new 24-word mnemonic (printed once: write it down), or with
    --recover from an existing one. The key is SLIP-0010 Ed25519 at m/44'/118'/ACCOUNT'/0'/INDEX'."""
    keyring = open_cli_keyring(home, keyring_backend)
    _check_free(keyring, name)  # before any secret is typed
    if recover:
        try:
            mnemonic = normalize_mnemonic(read_secret("Enter your BIP-39 mnemonic"))
        except MnemonicError as exc:
            bad_input(f"invalid mnemonic: {exc}")
    else:
        mnemonic = new_mnemonic()
    info = _add(keyring, name, key_from_mnemonic(mnemonic, account, index))
    out = {**info.to_json(), "hd_path": account_path(account, index)}
    if not recover and not no_backup:
        click.echo(MNEMONIC_WARNING, err=True)
        out["mnemonic"] = mnemonic
    emit(out)


@keys_group.command(name="show")
@home_option
@keyring_backend_option
@click.argument("name")
@click.option("-a", "--address", "address_only", is_flag=True, help="Print only the address.")
def keys_show(home: Path, keyring_backend: str, name: str, address_only: bool) -> None:
    """Show key NAME's address and public key."""
    info = key_info(home, keyring_backend, name)
    if address_only:
        click.echo(str(info.address))
    else:
        emit(info.to_json())


@keys_group.command(name="list")
@home_option
@keyring_backend_option
def keys_list(home: Path, keyring_backend: str) -> None:
    """List the keys."""
    try:
        emit([k.to_json() for k in open_cli_keyring(home, keyring_backend).list()])
    except KeyStoreError as exc:
        bad_input(str(exc))


@keys_group.command(name="delete")
@home_option
@keyring_backend_option
@click.argument("name")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
def keys_delete(home: Path, keyring_backend: str, name: str, yes: bool) -> None:
    """Delete key NAME. Without its mnemonic or an export, it is gone for good."""
    keyring = open_cli_keyring(home, keyring_backend)
    try:
        info = keyring.get(name)
    except KeyStoreError as exc:
        bad_input(str(exc))
    if not yes:
        if not _interactive():
            bad_input(f"refusing to delete key {name!r} without --yes (stdin is not a terminal)")
        click.confirm(f"Delete key {name!r} ({info.address})?", abort=True, err=True)
    try:
        keyring.delete(name)
    except KeyStoreError as exc:
        bad_input(str(exc))
    click.echo(f"Deleted key {name!r} ({info.address})", err=True)


@keys_group.command(name="export")
@home_option
@keyring_backend_option
@click.argument("name")
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write (mode 0600; must not exist). Default: stdout.",
)
def keys_export(home: Path, keyring_backend: str, name: str, output: Path | None) -> None:
    """Export key NAME as armored text encrypted with a new passphrase (asked twice)."""
    if output is not None and output.exists():
        bad_input(f"--output: {output} exists; it is not overwritten")
    key = signing_key(home, keyring_backend, name)
    text = armor(key, read_new_passphrase("Enter a passphrase to encrypt the exported key"))
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        bad_input(f"--output: cannot create {output}: {exc.strerror}")
    with os.fdopen(fd, "w", encoding="ascii") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    click.echo(f"Exported key {name!r} ({key.address}) to {output}", err=True)


@keys_group.command(name="import")
@home_option
@keyring_backend_option
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def keys_import(home: Path, keyring_backend: str, name: str, file: Path) -> None:
    """Import an armored key from FILE (written by `keys export`) as NAME; asks its passphrase."""
    keyring = open_cli_keyring(home, keyring_backend)
    _check_free(keyring, name)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        bad_input(f"{file}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    try:
        key = unarmor(text, read_secret("Enter the passphrase of the exported key"))
    except WrongPassphrase:
        bad_input(f"{file}: wrong passphrase (or the file was altered)")
    except KeyCryptError as exc:
        bad_input(f"{file}: {exc}")
    emit(_add(keyring, name, key).to_json())
