"""Consensus state store: the chain state after the last committed block, the validator set of
every height and the hashes of committed evidence (bytes; `consensus` owns their meaning)."""

from __future__ import annotations

from collections.abc import Sequence

from storage import schema
from storage.db import Database, WriteBatch


class StateStore:
    """The consensus state record and validator sets by height."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def load(self) -> bytes | None:
        return self._db.get(schema.CONSENSUS_STATE)

    def save(self, batch: WriteBatch, state: bytes) -> None:
        batch.put(schema.CONSENSUS_STATE, state)

    def save_validators(self, batch: WriteBatch, height: int, validators: bytes) -> None:
        batch.put(schema.validators_key(height), validators)

    def load_validators(self, height: int) -> bytes | None:
        return self._db.get(schema.validators_key(height))

    def save_committed_evidence(self, batch: WriteBatch, evidence_hash: bytes, height: int) -> None:
        batch.put(schema.committed_evidence_key(evidence_hash), schema.height_bytes(height))

    def has_committed_evidence(self, evidence_hash: bytes) -> bool:
        return self._db.get(schema.committed_evidence_key(evidence_hash)) is not None

    def save_pending(self, key: bytes, raw: bytes) -> None:
        """Keep pending evidence (its own synced write: it is not part of a height)."""
        batch = WriteBatch()
        batch.put(schema.pending_evidence_key(key), raw)
        self._db.write(batch, sync=True)

    def delete_pending(self, keys: Sequence[bytes]) -> None:
        batch = WriteBatch()
        for key in keys:
            batch.delete(schema.pending_evidence_key(key))
        self._db.write(batch, sync=True)

    def load_pending(self) -> list[bytes]:
        return [value for _, value in self._db.iterate(schema.PENDING_EVIDENCE_PREFIX)]
