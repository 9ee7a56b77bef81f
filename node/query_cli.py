"""The chain queries of the `derivd` CLI: `query tx HASH` and `query block [HEIGHT]`, which print
the node's JSON-RPC answer (`tx`, `block`) as it gives it, through the SDK's transport
(`node.client.RPCClient`), like `gaiad query tx` and `cometbft`'s RPC; and the bridge's state,
`query bridge [deposit ID | withdrawal ID | withdrawals OWNER | valset NONCE]` (the `/bridge...`
application queries), as indented `key: value` lines, or with `--json` the query's JSON value as
the other query commands print it."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import click

from node.client import RPCClient, abci_query, emit, fail, node_option
from primitives.keys import Address

_TX_HASH = re.compile(r"(0x)?[0-9A-Fa-f]{64}")


@click.command(name="tx")
@node_option
@click.argument("tx_hash", metavar="HASH")
@click.option("--prove", is_flag=True, help="Include the Merkle proof of the tx in its block's data hash.")
def tx_command(node: str, tx_hash: str, prove: bool) -> None:
    """Show the committed transaction HASH (64 hex digits): its height, index, result and bytes."""
    if not _TX_HASH.fullmatch(tx_hash):
        fail(f"HASH: expected the tx hash as 64 hex digits, got {tx_hash!r}")
    digits = tx_hash[2:] if tx_hash.startswith("0x") else tx_hash
    emit(RPCClient(node).call("tx", hash="0x" + digits, prove=prove))


@click.command(name="block")
@node_option
@click.argument("height", required=False)
def block_command(node: str, height: str | None) -> None:
    """Show the block at HEIGHT (default: the latest) with its block id."""
    if height is None:
        emit(RPCClient(node).call("block"))
        return
    if not re.fullmatch(r"[0-9]{1,19}", height) or int(height) < 1:
        fail(f"HEIGHT: expected a block height (1 or more), got {height!r}")
    emit(RPCClient(node).call("block", height=height))


# -- bridge --------------------------------------------------------------------------------------

_DEPOSIT_ID = re.compile(r"(0x)?[0-9A-Fa-f]{64}")
_UINT = re.compile(r"[0-9]{1,78}|0x[0-9A-Fa-f]{1,64}")


def human(value: Any, indent: int = 0) -> str:
    """A query's JSON value as indented `key: value` lines (lists as `- ` items)."""
    pad = "  " * indent
    if isinstance(value, dict):
        lines = []
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines += [f"{pad}{key}:", human(item, indent + 1)]
            else:
                lines.append(f"{pad}{key}: {_scalar(item)}")
        return "\n".join(lines) if lines else f"{pad}(empty)"
    if isinstance(value, list):
        lines = []
        for item in value:
            text = human(item, indent + 1) if isinstance(item, dict | list) and item else _scalar(item)
            lines.append(f"{pad}- {text.lstrip()}")
        return "\n".join(lines) if lines else f"{pad}(none)"
    return f"{pad}{_scalar(value)}"


def _scalar(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return "(none)"
    return str(value)


def _show(node: str, path: str, as_json: bool, missing: str) -> None:
    """Print the value of `path`; fail with `missing` if the chain has none."""
    value = abci_query(RPCClient(node), path)
    if value is None:
        fail(missing)
    if as_json:
        emit(value)
    else:
        click.echo(human(value))


def _bridge_command(command: Callable[..., None]) -> Callable[..., None]:
    command = click.option("--json", "as_json", is_flag=True, help="Print the query's JSON value.")(command)
    return node_option(command)


def uint_argument(text: str, what: str) -> int:
    """A uint256 given in decimal or as 0x-hex."""
    if not _UINT.fullmatch(text):
        fail(f"{what}: expected a decimal integer or 0x and hex digits, got {text!r}")
    value = int(text, 16) if text.startswith("0x") else int(text)
    if value >= 2**256:
        fail(f"{what}: {text} is beyond a uint256")
    return value


@click.group(name="bridge", invoke_without_command=True)
@_bridge_command
@click.pass_context
def bridge_query_group(context: click.Context, node: str, as_json: bool) -> None:
    """Show the bridge: its EVM chain, contract and token, minimums, the current validator set and
    totals (`query bridge deposit|withdrawal|withdrawals|valset` for one of them)."""
    if context.invoked_subcommand is None:
        _show(node, "/bridge", as_json, "this chain has no bridge (its genesis has no bridge section)")


@bridge_query_group.command(name="deposit")
@_bridge_command
@click.argument("deposit_id", metavar="ID")
def bridge_deposit_query(node: str, as_json: bool, deposit_id: str) -> None:
    """Show deposit ID (its 32-byte id as hex, as `derivd bridge deposit` prints it): its votes and
    whether it was credited."""
    if not _DEPOSIT_ID.fullmatch(deposit_id):
        fail(f"ID: expected a deposit id as 64 hex digits, got {deposit_id!r}")
    digits = deposit_id.removeprefix("0x").lower()
    _show(node, f"/bridge/deposits/{digits}", as_json, f"no deposit {deposit_id} on this chain")


@bridge_query_group.command(name="withdrawal")
@_bridge_command
@click.argument("withdrawal_id", metavar="ID")
def bridge_withdrawal_query(node: str, as_json: bool, withdrawal_id: str) -> None:
    """Show withdrawal ID (decimal, or 0x-hex): recipient, amount, status, the digest validators
    sign and their signatures so far."""
    wid = uint_argument(withdrawal_id, "ID")
    _show(node, f"/bridge/withdrawals/{wid}", as_json, f"no withdrawal {withdrawal_id} on this chain")


@bridge_query_group.command(name="withdrawals")
@_bridge_command
@click.argument("owner")
def bridge_withdrawals_query(node: str, as_json: bool, owner: str) -> None:
    """Show an owner's withdrawals."""
    try:
        address = Address.parse(owner)
    except ValueError as exc:
        fail(f"OWNER: {exc}")
    _show(node, f"/bridge/owners/{address}", as_json, f"no withdrawals of {address}")


@bridge_query_group.command(name="valset")
@_bridge_command
@click.argument("nonce", required=False)
def bridge_valset_query(node: str, as_json: bool, nonce: str | None) -> None:
    """Show validator set NONCE (default: the current one): its members and powers, hash and the
    signatures that hand the contract over to it."""
    if nonce is None:
        summary = abci_query(RPCClient(node), "/bridge")
        if not summary or summary.get("valset") is None:
            fail("this chain has no bridge validator set")
        nonce = str(summary["valset"]["nonce"])
    if not re.fullmatch(r"[0-9]{1,19}", nonce):
        fail(f"NONCE: expected a valset nonce (0 or more), got {nonce!r}")
    _show(node, f"/bridge/valsets/{int(nonce)}", as_json, f"no valset {nonce} on this chain")
