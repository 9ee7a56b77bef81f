"""The SDK's exceptions: everything it raises is an `SDKError`."""

from __future__ import annotations

from typing import Any


class SDKError(Exception):
    """Base of the SDK's errors."""


class RPCError(SDKError):
    """A JSON-RPC call that failed: `error` is the server's error object (`code`, `message`,
    `data`), or one standing for a transport failure (code -32603: unreachable, no JSON)."""

    def __init__(self, error: dict[str, Any], message: str) -> None:
        super().__init__(message)
        self.error = error

    @property
    def code(self) -> int:
        return int(self.error.get("code", -32603))


class InputError(SDKError, ValueError):
    """What the caller gave cannot be sent: an unknown market, a price finer than the market's
    subtick, a size that is not a whole base quantum, no signing key."""


class TxError(SDKError):
    """The chain refused a transaction (`stage` "check": the mempool's check, "deliver": its
    execution in a block) with the application's `code`, `codespace` and `log`."""

    def __init__(self, *, stage: str, code: int, log: str, codespace: str, tx_hash: str) -> None:
        super().__init__(f"tx {tx_hash} failed at {stage} with code {code} ({codespace}): {log}")
        self.stage = stage
        self.code = code
        self.log = log
        self.codespace = codespace
        self.tx_hash = tx_hash
