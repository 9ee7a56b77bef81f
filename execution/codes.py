"""Result codes of derivd's application, in codespace "derivd": transaction results (check_tx and
finalize_block) and query results. 0 is success (`consensus.app.OK`); every other code is here,
distinct, and never reused for another meaning once released.

Ranges keep room for the modules to come:

| range | meaning |
|---|---|
| 1-19 | envelope, ante checks and actions in general |
| 20-39 | orders and order books (reserved) |
| 40-59 | margin, positions, liquidation (reserved) |
| 60-79 | oracle and funding (reserved) |
| 100-119 | queries |
"""

from __future__ import annotations

from enum import IntEnum

CODESPACE = "derivd"


class Code(IntEnum):
    """A non-zero result code of the application."""

    MALFORMED_TX = 1
    """the bytes are not a canonical transaction"""
    BAD_SIGNATURE = 2
    """the signature does not verify for the signer on this chain"""
    INVALID_NONCE = 3
    """the nonce was used already, is not above the kept ones, or is outside the time window"""
    INSUFFICIENT_FUNDS = 4
    """the sender's balance does not cover the action"""
    UNKNOWN_ACTION = 5
    """an action kind this version does not know"""
    INVALID_ACTION = 6
    """an action or action list that breaks a rule (amount 0, transfer to self, too many actions)"""

    UNKNOWN_QUERY = 100
    """no query path of that name"""
    INVALID_QUERY = 101
    """the query's path or data is malformed (e.g. a bad address)"""
    HEIGHT_NOT_AVAILABLE = 102
    """the query asks for a height whose state is not kept"""
