"""The chain queries of the `derivd` CLI: `query tx HASH` and `query block [HEIGHT]`, which print
the node's JSON-RPC answer (`tx`, `block`) as it gives it, through the SDK's transport
(`node.client.RPCClient`), like `gaiad query tx` and `cometbft`'s RPC."""

from __future__ import annotations

import re

import click

from node.client import RPCClient, emit, fail, node_option

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
