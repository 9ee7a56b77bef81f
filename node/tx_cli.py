"""How `derivd tx` commands sign and send: the options every signing command takes (`--from`,
`--chain-id`, `--nonce`, `--fees`, `--broadcast-mode`, `--generate-only`, `--keyring-backend`,
`--home`, `--node`), signing with a keyring key or printing the unsigned document (`node.txjson`)
instead, and broadcasting with `node.exitcodes`' codes. Also the commands `tx transfer`,
`tx subaccount transfer`, `tx withdraw` (out through the bridge), `tx sign` (offline) and
`tx broadcast`.

Subaccounts (`execution.accounts`): the commands decorated with `acting_options` (the order
commands) take `--subaccount N` (act as the signer's subaccount N) or `--isolated` (act as its
isolated account of the order's market), which `deliver` puts before the actions as a switch.
`tx subaccount transfer --from-number A --to-number B` moves collateral between two subaccounts of
the `--from` key.

A nonce is a time in milliseconds that the chain accepts within (block time - 2 days, block time +
1 day) (`execution.accounts`). `--generate-only` fixes it when the document is made (default: the
current time), so a generated transaction must be signed and broadcast within two days; `--nonce`
sets it. Without `--chain-id` the chain id is asked from `--node`.

Every tx pays a fee in quote units (`execution.fees`). `--fees` (the Cosmos SDK's flag, here an
integer of quote units) sets it; by default it is the chain's minimum for the tx's actions at the
chain's schedule, read from `--node` (`abci_query /fees`), so `--generate-only` asks the node
unless both `--chain-id` and `--fees` are given (and the order commands always read the market's
units from it). A fee below the chain's minimum, or below a node's own `[mempool] min_fee`, is
refused with code 7 (INSUFFICIENT_FEE): exit code 1.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from execution.accounts import MAX_SUBACCOUNT, subaccount_address
from execution.codes import Code
from execution.fees import FeeParams
from execution.markets import quote_to_human
from execution.tx import MAX_FEE, MAX_NONCE, Action, Transfer, UseIsolated, UseSubaccount
from node.client import RPCClient, emit, home_option, node_option
from node.exitcodes import bad_input, no_answer, rejected
from node.keys_cli import key_info, keyring_backend_option, open_cli_keyring, signing_key
from node.keystore import KeyStoreError
from node.sdk import core
from node.sdk.core import fee_params, query_value
from node.sdk.errors import InputError, RPCError
from node.txjson import TxDocument, TxDocumentError
from primitives.keys import Address, PublicKey
from primitives.timefmt import NS_PER_MS

BROADCAST_MODES = ("sync", "async", "commit")


@dataclass(frozen=True, kw_only=True, slots=True)
class Signing:
    """The signing options of one command."""

    home: Path
    node: str
    from_: str
    chain_id: str | None
    nonce: int | None
    fees: int | None
    broadcast_mode: str
    generate_only: bool
    keyring_backend: str
    subaccount: int | None = None
    """`--subaccount` of the order commands: act as the signer's subaccount"""
    isolated: bool = False
    """`--isolated` of the order commands: act as the signer's isolated account of the order's market"""


_SIGNING_OPTIONS = [
    home_option,
    node_option,
    click.option(
        "--from",
        "from_",
        required=True,
        help="Key name in the keyring (with --generate-only, also an address).",
    ),
    click.option("--chain-id", default=None, help="Chain id (default: asked from the node)."),
    click.option(
        "--nonce",
        type=click.IntRange(0, MAX_NONCE),
        default=None,
        help="Nonce, a time in ms within 2 days of the block time (default: now).",
    ),
    click.option(
        "--fees",
        type=click.IntRange(0, MAX_FEE),
        default=None,
        help="Fee in quote units, micro-USD (default: the chain's minimum for the actions, asked "
        "from the node).",
    ),
    click.option("--broadcast-mode", type=click.Choice(BROADCAST_MODES), default="commit", show_default=True),
    click.option(
        "--generate-only",
        is_flag=True,
        help="Print the unsigned transaction as JSON for `derivd tx sign` instead of signing and "
        "broadcasting it (no private key is read).",
    ),
    keyring_backend_option,
]
_ACTING_FIELDS = ("subaccount", "isolated")
_SIGNING_FIELDS = tuple(
    field.name for field in dataclasses.fields(Signing) if field.name not in _ACTING_FIELDS
)


def signing_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add the signing options to a command, which receives them as its first argument, a
    `Signing`."""

    @functools.wraps(command)
    def gathered(**kwargs: Any) -> None:
        acting = {name: kwargs.pop(name) for name in _ACTING_FIELDS if name in kwargs}
        signing = Signing(**{name: kwargs.pop(name) for name in _SIGNING_FIELDS}, **acting)
        command(signing, **kwargs)

    for option in reversed(_SIGNING_OPTIONS):
        gathered = option(gathered)
    return gathered


def acting_options(command: Callable[..., None]) -> Callable[..., None]:
    """Add `--subaccount` and `--isolated` to a command under `signing_options` (they go into its
    `Signing`)."""
    command = click.option(
        "--isolated",
        is_flag=True,
        help="Act as your isolated-margin account of the order's market.",
    )(command)
    return click.option(
        "--subaccount",
        type=click.IntRange(0, MAX_SUBACCOUNT),
        default=None,
        help=f"Act as your subaccount N (0 to {MAX_SUBACCOUNT}; 0: the key's own account).",
    )(command)


def acting(signing: Signing, actions: Sequence[Action]) -> list[Action]:
    """`actions` after the switch `--subaccount`/`--isolated` ask for (none: as they are)."""
    if signing.subaccount is not None and signing.isolated:
        bad_input("--subaccount and --isolated: give one of them")
    if signing.subaccount is not None:
        return [UseSubaccount(signing.subaccount), *actions]
    if signing.isolated:
        markets = [getattr(action, "market_id", 0) for action in actions]
        if not markets or not markets[0]:
            bad_input("--isolated: needs the order's --market")
        return [UseIsolated(markets[0]), *actions]
    return list(actions)


class TxClient(RPCClient):
    """The node's JSON-RPC for the tx commands: a call that fails stops the command with
    EXIT_NO_ANSWER; `broadcast` tells a refusal from no answer."""

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self._call(method, **params)
        except RPCError as exc:
            no_answer(str(exc))

    def chain_id(self) -> str:
        return str(self.call("status")["node_info"]["network"])

    def fee_schedule(self) -> FeeParams:
        """The chain's fee schedule (`abci_query /fees`); a node that cannot tell it stops the
        command with EXIT_NO_ANSWER."""
        response = self.call("abci_query", path="/fees", data="", height="0", prove=False)["response"]
        try:
            return fee_params(query_value("/fees", response))
        except RPCError as exc:
            no_answer(f"cannot read the chain's fee schedule (give --fees): {exc}")

    def minimum_fee(self, actions: Sequence[Action]) -> int:
        """The chain's minimum fee of `actions` for a sender that is not a validator."""
        return self.fee_schedule().fee_of(actions)

    def broadcast(self, raw: bytes, mode: str) -> None:
        """Send `raw` with `broadcast_tx_<mode>` and print the node's answer; stop with
        EXIT_REJECTED if the tx was refused or failed, EXIT_NO_ANSWER if there was no verdict."""
        try:
            result = self._call(f"broadcast_tx_{mode}", tx=base64.b64encode(raw).decode())
        except RPCError as exc:
            if _refusal(exc):
                rejected(f"the node refused the transaction: {exc}")
            no_answer(str(exc))
        emit(result)
        if mode == "commit":
            for stage in ("check_tx", "tx_result"):
                _stop_if_failed(result[stage], stage, result["hash"])
        else:
            _stop_if_failed(result, "check_tx", result["hash"])


def _refusal(exc: RPCError) -> bool:
    """Whether the node answered the broadcast with an error (a refusal), rather than the SDK's
    transport standing in for no answer (code -32603 with its own message) or a commit timeout."""
    transport = exc.code == -32603 and exc.error.get("message") != "Internal error"
    return not transport and "timed out" not in str(exc.error.get("data", ""))


def _stop_if_failed(result: dict[str, Any], stage: str, tx_hash: str) -> None:
    code = int(result.get("code", 0))
    if code:
        codespace, log = result.get("codespace") or "", result.get("log")
        rejected(f"transaction {tx_hash} failed at {stage} with code {code} ({codespace}): {log}")


def deliver(signing: Signing, client: TxClient, actions: Sequence[Action]) -> None:
    """Sign `actions` (after the switch of `--subaccount`/`--isolated`, `acting`) with the `--from`
    key and broadcast them, or with `--generate-only` print them as an unsigned document."""
    chosen = acting(signing, actions)
    deliver_for(signing, client, lambda _: chosen)


def deliver_for(signing: Signing, client: TxClient, build: Callable[[Address], Sequence[Action]]) -> None:
    """`deliver` of the actions `build` makes for the signer's address."""
    nonce = signing.nonce if signing.nonce is not None else time.time_ns() // NS_PER_MS
    if signing.generate_only:
        address, pub_key = _generating_signer(signing)
        doc = _document(signing, client, nonce, address, pub_key, build(address))
        emit(doc.to_json())
        return
    key = signing_key(signing.home, signing.keyring_backend, signing.from_)
    doc = _document(signing, client, nonce, key.address, key.public_key, build(key.address))
    try:
        raw = doc.sign(key).raw()
    except TxDocumentError as exc:
        bad_input(str(exc))
    client.broadcast(raw, signing.broadcast_mode)


def _generating_signer(signing: Signing) -> tuple[Address, PublicKey | None]:
    """`--from` for --generate-only: a key of the keyring (its public key goes in the document),
    else an address (the signer's key fills the public key in when it signs)."""
    keyring = open_cli_keyring(signing.home, signing.keyring_backend)
    try:
        if keyring.exists(signing.from_):
            info = keyring.get(signing.from_)
            return info.address, info.public_key
    except KeyStoreError:
        pass  # not a valid key name: perhaps an address
    try:
        return Address.parse(signing.from_), None
    except ValueError:
        bad_input(
            f"--from: {signing.from_!r} is neither a key of the {signing.keyring_backend} keyring "
            f"({keyring.directory}) nor an address"
        )


def _document(
    signing: Signing,
    client: TxClient,
    nonce: int,
    signer: Address,
    pub_key: PublicKey | None,
    actions: Sequence[Action],
) -> TxDocument:
    """The unsigned document; what the options leave out (chain id, fee) is asked from the node."""
    chain_id = signing.chain_id or client.chain_id()
    fee = signing.fees if signing.fees is not None else client.minimum_fee(actions)
    try:
        return TxDocument.unsigned(
            chain_id=chain_id, nonce=nonce, fee=fee, signer=signer, pub_key=pub_key, actions=tuple(actions)
        )
    except TxDocumentError as exc:
        bad_input(str(exc))


def read_document(source: str) -> TxDocument:
    """The document in file `source` ("-": stdin); an input error naming the file if it is not one."""
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        bad_input(f"{source}: cannot read: {getattr(exc, 'strerror', None) or exc}")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        bad_input(f"{source}: not JSON: {exc}")
    try:
        return TxDocument.from_json(obj)
    except TxDocumentError as exc:
        bad_input(f"{source}: {exc}")


def _write_output(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text)
        return
    try:
        output.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        bad_input(f"--output-document: cannot write {output}: {exc.strerror}")


@click.command(name="transfer")
@signing_options
@click.option("--to", "to", required=True, help="Recipient address.")
@click.option("--amount", type=int, required=True, help="Amount in quote units (micro-USD).")
def tx_transfer(signing: Signing, to: str, amount: int) -> None:
    """Transfer AMOUNT from key FROM to address TO."""
    try:
        recipient = Address.parse(to)
    except ValueError as exc:
        bad_input(f"--to: {exc}")
    if amount <= 0:
        bad_input("--amount: must be positive")
    deliver(signing, TxClient(signing.node), [Transfer(recipient, amount)])


@click.command(name="withdraw")
@signing_options
@click.option("--to", "to", required=True, help="Recipient on the EVM chain: 0x and 40 hex digits.")
@click.option(
    "--amount",
    required=True,
    help="USD to withdraw, e.g. 250 or 12.5 (at most 6 decimals: token units are micro-USD).",
)
@click.option(
    "--subaccount",
    type=click.IntRange(0, MAX_SUBACCOUNT),
    default=None,
    help=f"Withdraw from your subaccount N (0 to {MAX_SUBACCOUNT}; 0: the key's own account).",
)
def tx_withdraw(signing: Signing, to: str, amount: str) -> None:
    """Withdraw AMOUNT USD of collateral through the bridge to the EVM address TO. The chain
    debits it now and makes a withdrawal (its id in the `withdrawal` event); once the validators
    have signed it, `derivd bridge claim <id>` requests it on the EVM chain."""
    try:
        action = core.withdraw_action(to, amount)
    except InputError as exc:
        bad_input(f"--{exc}".replace("--recipient", "--to", 1))
    client = TxClient(signing.node)
    if not (signing.generate_only and signing.chain_id is not None and signing.fees is not None):
        minimum = _min_withdrawal(client)
        if action.amount < minimum:
            bad_input(
                f"--amount: {quote_to_human(action.amount)} USD is below the bridge's minimum "
                f"withdrawal of {quote_to_human(minimum)} USD"
            )
    deliver(signing, client, [action])


def _min_withdrawal(client: TxClient) -> int:
    """The chain's minimum withdrawal (`/bridge`); EXIT_INPUT if the chain has no bridge."""
    response = client.call("abci_query", path="/bridge", data="", height="0", prove=False)["response"]
    try:
        summary = query_value("/bridge", response)
    except RPCError as exc:
        if exc.code == Code.BRIDGE_DISABLED:
            bad_input("this chain has no bridge (its genesis has no bridge section)")
        no_answer(f"cannot read the chain's bridge: {exc}")
    return int(summary["min_withdrawal"])


@click.group(name="subaccount")
def subaccount_group() -> None:
    """Move collateral between your subaccounts (their orders: `tx order ... --subaccount N`)."""


@subaccount_group.command(name="transfer")
@signing_options
@click.option(
    "--from-number",
    type=click.IntRange(0, MAX_SUBACCOUNT),
    default=0,
    show_default=True,
    help="Source subaccount.",
)
@click.option("--to-number", type=click.IntRange(0, MAX_SUBACCOUNT), required=True, help="Target subaccount.")
@click.option(
    "--amount", type=click.IntRange(1, None), required=True, help="Amount in quote units (micro-USD)."
)
def tx_subaccount_transfer(signing: Signing, from_number: int, to_number: int, amount: int) -> None:
    """Move AMOUNT from subaccount FROM-NUMBER of the key FROM to its subaccount TO-NUMBER (0: the
    key's own account); margin is checked as for any transfer."""
    if from_number == to_number:
        bad_input("--to-number: must differ from --from-number")

    def actions(owner: Address) -> list[Action]:
        move: list[Action] = [Transfer(subaccount_address(owner, to_number), amount)]
        return [UseSubaccount(from_number), *move] if from_number else move

    deliver_for(signing, TxClient(signing.node), actions)


@click.command(name="sign")
@home_option
@keyring_backend_option
@click.argument("file")
@click.option("--from", "from_", required=True, help="Key to sign with: the document's signer.")
@click.option(
    "--output-document",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the signed document to this file (default: stdout).",
)
def tx_sign(home: Path, keyring_backend: str, file: str, from_: str, output_document: Path | None) -> None:
    """Sign the transaction document in FILE ("-": stdin), made by `--generate-only`, offline:
    print it with its signature, for `derivd tx broadcast`."""
    doc = read_document(file)
    signer = key_info(home, keyring_backend, from_).address
    if signer != doc.signer:
        bad_input(f"--from: key {from_!r} is {signer}, but the transaction's signer is {doc.signer}")
    try:
        signed = doc.sign(signing_key(home, keyring_backend, from_))
    except TxDocumentError as exc:
        bad_input(str(exc))
    _write_output(json.dumps(signed.to_json(), indent=2), output_document)


@click.command(name="broadcast")
@node_option
@click.argument("file")
@click.option("--broadcast-mode", type=click.Choice(BROADCAST_MODES), default="sync", show_default=True)
def tx_broadcast(node: str, file: str, broadcast_mode: str) -> None:
    """Broadcast the signed transaction document in FILE ("-": stdin), made by `derivd tx sign`;
    prints the node's answer (hash and code). Exit 1 if it was rejected."""
    doc = read_document(file)
    try:
        raw = doc.raw()
    except TxDocumentError as exc:
        bad_input(f"{file}: {exc}")
    TxClient(node).broadcast(raw, broadcast_mode)
