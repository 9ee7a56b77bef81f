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
    INSUFFICIENT_FEE = 7
    """the tx's fee is below the chain's minimum for its actions (or this node's, at admission), or
    more than the sender's balance (`execution.fees`); nothing is written, the nonce stays unused"""
    TOO_MANY_PENDING = 8
    """admission only: the sender has the most txs this node keeps pending for one sender
    (`[mempool] max_txs_per_sender`)"""

    UNKNOWN_MARKET = 20
    """no market of that id"""
    OFF_TICK = 21
    """the price is not a positive multiple of the market's subticks per tick"""
    OFF_STEP = 22
    """the size is not a multiple of the market's step"""
    BELOW_MIN_SIZE = 23
    """the size is below the market's minimum order size"""
    RATE_LIMITED = 24
    """too many placements and amends by this account on this market in this block"""
    TOO_MANY_OPEN_ORDERS = 25
    """the account has the market's maximum of open orders"""
    ORDER_NOT_FOUND = 26
    """no live order of the sender with that order id or client id"""
    DUPLICATE_CLIENT_ID = 27
    """the sender has a live order with that client id on the market"""
    INVALID_ORDER = 28
    """a malformed order: bad side or time in force, size or price 0, expired good-til-block..."""
    REDUCE_ONLY_WOULD_INCREASE = 29
    """a reduce-only order that could increase the position"""
    MARKET_STALE = 30
    """the market's oracle price is stale: only reducing orders are accepted"""
    INVALID_TRIGGER = 31
    """a malformed trigger order: trigger kind not 0/1, trigger price 0, or a market trigger whose
    execution price is out of range"""
    MARKET_CLOSED = 32
    """an option series that has expired and settled: it takes no orders"""

    INSUFFICIENT_MARGIN = 40
    """the account would fall below initial margin"""
    NOT_LIQUIDATABLE = 41
    """a liquidate action naming an account whose value is not below its maintenance requirement"""
    LIQUIDATION_HALTED = 42
    """a liquidate action for an account whose positions are all on markets with a stale oracle price"""

    NOT_A_VALIDATOR = 60
    """an oracle or vol vote signed by an account that is not a validator with power"""
    INVALID_ORACLE_VOTE = 61
    """an oracle vote that breaks a rule (no prices, market ids not strictly increasing, price 0);
    a vote on an unknown market is UNKNOWN_MARKET"""
    INVALID_VOL_VOTE = 62
    """a vol vote that breaks a rule (no vols, (underlying, expiry) pairs not strictly increasing,
    a vol outside the oracle's [min_vol_ppm, max_vol_ppm]); a vote on a pair with no option series
    is UNKNOWN_MARKET"""
    INVALID_BRIDGE_VOTE = 63
    """a bridge deposit vote that breaks a rule (no deposits, another EVM chain, an amount below the
    minimum, the same deposit twice in one vote)"""
    INVALID_BRIDGE_SIGNATURE = 64
    """a bridge signature (or a bridge key's proof) that does not recover to the signer's bridge
    key, or a signer outside the validator set that must sign"""
    BRIDGE_DISABLED = 65
    """a bridge action on a chain whose genesis has no bridge section"""
    UNKNOWN_WITHDRAWAL = 66
    """a bridge signature of a withdrawal id or validator-set nonce that does not exist"""

    UNKNOWN_QUERY = 100
    """no query path of that name"""
    INVALID_QUERY = 101
    """the query's path or data is malformed (e.g. a bad address)"""
    HEIGHT_NOT_AVAILABLE = 102
    """the query asks for a height whose state is not kept"""


class ActionError(Exception):
    """An action that cannot be applied: its result code and a log for the user. Handlers raise it
    and change state only through the view they are given, so the caller drops the view."""

    def __init__(self, code: Code, log: str) -> None:
        super().__init__(log)
        self.code = code
        self.log = log
