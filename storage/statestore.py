"""Consensus state store: the chain state after the last committed block and the validator set
of every height (bytes; `consensus` owns their meaning)."""

from __future__ import annotations

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
