"""What every client command of the `derivd` CLI shares: the `--home` and `--node` options,
one-line errors (`fail`), JSON output (`emit`), the JSON-RPC client (the SDK's transport,
`node.sdk.rpc`, failing the command on an error), broadcasting a signed tx and `abci_query` with a
JSON value."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from node.sdk.core import query_value
from node.sdk.errors import RPCError
from node.sdk.rpc import Transport

DEFAULT_NODE = "http://127.0.0.1:26657"


def default_home() -> Path:
    return Path(os.environ.get("DERIVD_HOME", str(Path.home() / ".derivd")))


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def emit(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=default_home,
    show_default="$DERIVD_HOME or ~/.derivd",
    help="Node home directory.",
)
node_option = click.option("--node", default=DEFAULT_NODE, show_default=True, help="RPC address of a node.")


def rpc_caller(url: str, timeout: float = 15.0) -> Callable[..., Any]:
    """`call(method, **params)` -> the result of a JSON-RPC call to `url` (one connection kept);
    `node.sdk.RPCError` if the server is unreachable, does not answer JSON or answers an error."""
    return Transport(url, timeout).call


class RPCClient:
    """A small JSON-RPC client for the CLI: `rpc_caller`, failing the command on an error."""

    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.url = url
        self._call = rpc_caller(url, timeout)

    def call(self, method: str, **params: Any) -> Any:
        try:
            return self._call(method, **params)
        except RPCError as exc:
            fail(str(exc))


def abci_query(client: RPCClient, path: str, height: int = 0) -> Any:
    """The JSON value of an `abci_query` of `path` (`node.sdk.core.query_value`); a non-zero code
    fails with the app's log."""
    response = client.call("abci_query", path=path, data="", height=str(height), prove=False)["response"]
    try:
        return query_value(path, response)
    except RPCError as exc:
        fail(str(exc))
