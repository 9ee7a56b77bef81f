"""The bridge's running totals: quote units credited by deposits and debited by withdrawals since
genesis (`schema.BRIDGE_TOTALS`, `[deposited, withdrawn]`; absent: both 0). Conservation: the
quote held (accounts, positions' quote, funding pools) equals the genesis supply plus `deposited`
minus `withdrawn` after every block."""

from __future__ import annotations

from dataclasses import dataclass

from execution.state import StateReader, StateView, read_record
from primitives import codec
from storage import schema

MAX_TOTAL = codec.INT_MAX
"""The largest integer the codec holds (each amount is at most 2**63 - 1)"""


@dataclass(frozen=True, slots=True)
class BridgeTotals:
    """Quote units minted by credited deposits and burnt by withdrawals, since genesis."""

    deposited: int = 0
    withdrawn: int = 0

    def encode(self) -> bytes:
        return codec.encode([self.deposited, self.withdrawn])

    @classmethod
    def decode(cls, raw: bytes) -> BridgeTotals:
        f = codec.field_list(codec.decode(raw), "bridge totals", 2)
        return cls(
            codec.field_int(f[0], "bridge totals.deposited", 0, MAX_TOTAL),
            codec.field_int(f[1], "bridge totals.withdrawn", 0, MAX_TOTAL),
        )


def load_totals(state: StateReader) -> BridgeTotals:
    """The totals (both 0 on a chain without a bridge or before the first move)."""
    totals = read_record(state, schema.BRIDGE_TOTALS, BridgeTotals.decode)
    return BridgeTotals() if totals is None else totals


def add_deposited(view: StateView, amount: int) -> None:
    totals = load_totals(view)
    view.put_record(schema.BRIDGE_TOTALS, BridgeTotals(totals.deposited + amount, totals.withdrawn))


def add_withdrawn(view: StateView, amount: int) -> None:
    totals = load_totals(view)
    view.put_record(schema.BRIDGE_TOTALS, BridgeTotals(totals.deposited, totals.withdrawn + amount))
