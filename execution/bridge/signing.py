"""The `BridgeSign` action: a validator's bridge-key signatures of withdrawals
(`execution.bridge.withdrawals.sign_withdrawal`) and of valset updates
(`execution.bridge.valsets.sign_valset`), entry by entry, all or nothing.

BRIDGE_DISABLED without a bridge; NOT_A_VALIDATOR unless the signer is in the registry with power
> 0 and has a bridge key; INVALID_ACTION for no entries; then each entry's own rules.
"""

from __future__ import annotations

from typing import assert_never

from consensus.app import Event
from execution.bridge.params import require_params
from execution.bridge.valsets import sign_valset, signer_key
from execution.bridge.withdrawals import sign_withdrawal
from execution.codes import ActionError, Code
from execution.state import StateView
from execution.tx import BridgeSign, SignTarget
from primitives.keys import Address


def apply_bridge_sign(view: StateView, sender: Address, action: BridgeSign, height: int) -> list[Event]:
    """Record `sender`'s bridge signatures in the block at `height` (module docstring)."""
    params = require_params(view)
    key = signer_key(view, sender)
    if not action.signatures:
        raise ActionError(Code.INVALID_ACTION, "a bridge signature action needs at least one signature")
    events: list[Event] = []
    for i, entry in enumerate(action.signatures):
        try:
            if entry.target is SignTarget.WITHDRAWAL:
                events.extend(sign_withdrawal(view, params, key, entry.id, entry.signature, height))
            elif entry.target is SignTarget.VALSET:
                events.extend(sign_valset(view, params, key, entry.id, entry.signature))
            else:
                assert_never(entry.target)
        except ActionError as exc:
            raise ActionError(exc.code, f"signatures[{i}]: {exc.log}") from exc
    return events
