"""The `Application` protocol (ABCI 2.0 in spirit) that consensus calls, and its message types.

Consensus drives the application; the application never calls consensus. All calls are
synchronous and made from the one task that owns consensus (or the mempool on its behalf).
`finalize_block` executes a decided block into pending state and returns the new app hash;
`commit` then adds that pending state to the node's atomic batch for the height, which the node
writes with sync before anything else happens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from primitives.codec import Value, field_bytes, field_int, field_list, field_text
from storage.db import WriteBatch

OK = 0


@dataclass(frozen=True, slots=True)
class EventAttribute:
    key: str
    value: str
    index: bool = True


@dataclass(frozen=True, slots=True)
class Event:
    """A typed record of what happened (ABCI event), e.g. `transfer` with sender, recipient, amount."""

    type: str
    attributes: tuple[EventAttribute, ...] = ()

    def to_fields(self) -> Value:
        return [
            self.type.encode(),
            # `1 if ... else 0`, not int(): the same value without a call (a block's results hold
            # tens of thousands of attributes)
            [[a.key.encode(), a.value.encode(), 1 if a.index else 0] for a in self.attributes],
        ]

    @classmethod
    def from_fields(cls, value: Value) -> Event:
        f = field_list(value, "event", 2)
        attrs = []
        for item in field_list(f[1], "event.attributes", max_len=10_000):
            a = field_list(item, "event attribute", 3)
            attrs.append(
                EventAttribute(
                    field_text(a[0], "attribute key", 1024),
                    field_text(a[1], "attribute value", 1 << 20),
                    field_int(a[2], "attribute index", 0, 1) == 1,
                )
            )
        return cls(field_text(f[0], "event type", 256), tuple(attrs))

    def attribute(self, key: str) -> str | None:
        for attr in self.attributes:
            if attr.key == key:
                return attr.value
        return None


@dataclass(frozen=True, slots=True)
class ExecTxResult:
    """Outcome of one transaction in a block (or of check_tx): code 0 is success."""

    code: int = OK
    log: str = ""
    data: bytes = b""
    codespace: str = ""
    events: tuple[Event, ...] = ()

    def to_fields(self) -> Value:
        return [
            self.code,
            self.log.encode(),
            self.data,
            self.codespace.encode(),
            [e.to_fields() for e in self.events],
        ]

    @classmethod
    def from_fields(cls, value: Value) -> ExecTxResult:
        f = field_list(value, "tx result", 5)
        return cls(
            field_int(f[0], "code", 0, 2**32 - 1),
            field_text(f[1], "log", 1 << 20),
            field_bytes(f[2], "data", max_size=1 << 22),
            field_text(f[3], "codespace", 256),
            tuple(Event.from_fields(e) for e in field_list(f[4], "events", max_len=100_000)),
        )

    def deterministic_fields(self) -> Value:
        """What the last-results hash commits to (CometBFT: code and data)."""
        return [self.code, self.data]


class CheckTxKind(IntEnum):
    NEW = 0
    RECHECK = 1
    DRY_RUN = 2
    """as NEW, but the check state keeps nothing of it (the `check_tx` RPC)"""


@dataclass(frozen=True, slots=True)
class CheckTxResult:
    code: int = OK
    log: str = ""
    codespace: str = ""
    sender: str = ""
    priority: int = 0

    @property
    def ok(self) -> bool:
        return self.code == OK


@dataclass(frozen=True, slots=True)
class ValidatorUpdate:
    """A change of one validator's power (0 removes it)."""

    pub_key: bytes
    power: int


@dataclass(frozen=True, slots=True)
class Misbehavior:
    """Evidence handed to the application: a validator that double-signed."""

    kind: str
    validator_address: bytes
    validator_power: int
    height: int
    time: int
    total_voting_power: int


@dataclass(frozen=True, slots=True)
class InitChainRequest:
    chain_id: str
    time: int
    initial_height: int
    validators: tuple[ValidatorUpdate, ...]
    app_state: bytes
    """the genesis file's `app_state`, as the JSON bytes of that object"""


@dataclass(frozen=True, slots=True)
class InitChainResult:
    app_hash: bytes
    validators: tuple[ValidatorUpdate, ...] = ()
    """empty: keep the genesis validators"""


@dataclass(frozen=True, slots=True)
class InfoResult:
    last_block_height: int
    last_block_app_hash: bytes
    version: str = ""
    app_version: int = 0
    data: str = ""


@dataclass(frozen=True, slots=True)
class ProposalRequest:
    """What prepare_proposal and process_proposal see of a block."""

    height: int
    time: int
    proposer_address: bytes
    txs: tuple[bytes, ...]
    max_tx_bytes: int = 0
    block_hash: bytes = b""


@dataclass(frozen=True, slots=True)
class FinalizeBlockRequest:
    height: int
    time: int
    block_hash: bytes
    proposer_address: bytes
    txs: tuple[bytes, ...]
    misbehavior: tuple[Misbehavior, ...] = ()


@dataclass(frozen=True, slots=True)
class FinalizeBlockResult:
    tx_results: tuple[ExecTxResult, ...]
    app_hash: bytes
    events: tuple[Event, ...] = ()
    validator_updates: tuple[ValidatorUpdate, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProofOp:
    """One proof of a query's answer (CometBFT's `crypto.ProofOp`): `type` says how `data` proves `key`."""

    type: str
    key: bytes
    data: bytes


@dataclass(frozen=True, slots=True)
class QueryResult:
    code: int = OK
    log: str = ""
    key: bytes = b""
    value: bytes = b""
    height: int = 0
    codespace: str = ""
    info: str = ""
    proof_ops: tuple[ProofOp, ...] = field(default=())


class Application(Protocol):
    """The application consensus drives (derivd's is `execution.app.ExchangeApp`)."""

    def info(self) -> InfoResult: ...

    def init_chain(self, request: InitChainRequest) -> InitChainResult: ...

    def check_tx(self, tx: bytes, kind: CheckTxKind) -> CheckTxResult: ...

    def admission_work(self, txs: Sequence[bytes]) -> Callable[[], object]:
        """Work that the check_tx calls of `txs`, made next, share and that may run on another
        thread meanwhile (derivd: their signatures, verified in one batch on all cores). Optional:
        check_tx gives the same answers whether or not it ran."""
        ...

    def prepare_proposal(self, request: ProposalRequest) -> list[bytes]: ...

    def process_proposal(self, request: ProposalRequest) -> bool: ...

    def finalize_block(self, request: FinalizeBlockRequest) -> FinalizeBlockResult: ...

    def commit(self, batch: WriteBatch) -> int:
        """Add the state of the last finalized block to `batch`; return the retain height
        (0: keep every block)."""
        ...

    def query(self, path: str, data: bytes, height: int, prove: bool) -> QueryResult: ...
