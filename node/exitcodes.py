"""The exit codes of `derivd keys` and `derivd tx`, and how those commands stop with them:

    0  success (for a broadcast: code 0 at check, and in the block with `--broadcast-mode commit`)
    1  the transaction was rejected: a non-zero code at check_tx or in its block, or the node
       refused it before the application (already in the mempool cache, too large, pool full)
    2  a usage or input error: click's own (unknown option, missing argument), and every bad value,
       file, key name, passphrase or mnemonic the command finds; nothing was sent
    3  no answer: the node could not be reached, did not answer JSON-RPC, or timed out waiting for
       the block (the transaction may still be committed)

Each failure is one line on stderr, `Error: ...`.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_INPUT = 2
EXIT_NO_ANSWER = 3


class InputFailure(click.ClickException):
    """A usage or input error: click prints `Error: <message>` and exits with EXIT_INPUT."""

    exit_code = EXIT_INPUT


def bad_input(message: str) -> NoReturn:
    """Stop the command with a usage or input error."""
    raise InputFailure(message)


def rejected(message: str) -> NoReturn:
    """Stop the command: the node or the chain rejected the transaction."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_REJECTED)


def no_answer(message: str) -> NoReturn:
    """Stop the command: the node did not answer."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(EXIT_NO_ANSWER)
