"""An in-memory DurableFile for simulated nodes: what was synced survives a crash; what was
only appended is lost, or survives torn (a random prefix of it), as on a real disk."""

from __future__ import annotations

import random


class MemFile:
    def __init__(self, name: str) -> None:
        self._name = name
        self.synced = bytearray()
        self.buffer = bytearray()

    @property
    def name(self) -> str:
        return self._name

    def read(self) -> bytes:
        return bytes(self.synced + self.buffer)

    def append(self, data: bytes) -> None:
        self.buffer += data

    def sync(self) -> None:
        self.synced += self.buffer
        self.buffer = bytearray()

    def truncate(self, size: int) -> None:
        data = self.read()[:size]
        self.synced, self.buffer = bytearray(data), bytearray()

    def replace(self, data: bytes) -> None:
        self.synced, self.buffer = bytearray(data), bytearray()

    def close(self) -> None:
        pass

    def crash(self, rng: random.Random) -> None:
        """Lose the unsynced tail, or keep a torn prefix of it."""
        if self.buffer and rng.random() < 0.5:
            self.synced += self.buffer[: rng.randrange(len(self.buffer))]
        self.buffer = bytearray()
