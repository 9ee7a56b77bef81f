"""Imports web3 through `node.bridge_evm` before any test module does, so the interpreter's
recursion limit that a web3 dependency raises at import is put back for the whole session (the
RPC tests feed deeply nested JSON: `node.bridge_evm.PYTHON_RECURSION_LIMIT`)."""

import node.bridge_evm  # noqa: F401
