"""Batched Ed25519 verification on worker threads, with a cache of verified signatures.

libsodium has no batch API, so a batch is split into one chunk per worker thread and each
signature is checked with `primitives.keys.verify` (the one validity rule of every path). PyNaCl
calls into libsodium through cffi, which releases the GIL, so the chunks run on all cores.

The cache remembers successes only, keyed by (public key, SHA-256 of the message, signature), and
is bounded (least recently used entries go first): a signature verified at admission to the
mempool is not verified again when its block is executed. A verifier may be called from several
threads at once (the node verifies an RPC batch's signatures on a trio worker thread): the cache
and the creation of the thread pool are locked; `verified` is a statistic, not exact then.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from primitives.hashing import sha256
from primitives.keys import verify

SignedItem = tuple[bytes, bytes, bytes]
"""(public key, message, signature)"""


class SignatureCache:
    """Bounded LRU set of (public key, message hash, signature) known to verify."""

    def __init__(self, capacity: int = 100_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[bytes, None] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(public_key: bytes, message: bytes, signature: bytes) -> bytes:
        return public_key + sha256(message) + signature

    def __len__(self) -> int:
        return len(self._entries)

    def contains(self, key: bytes) -> bool:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return True
            self.misses += 1
            return False

    def add(self, key: bytes) -> None:
        with self._lock:
            self._entries[key] = None
            self._entries.move_to_end(key)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)


def _verify_chunk(items: Sequence[SignedItem]) -> list[bool]:
    return [verify(pk, msg, sig) for pk, msg, sig in items]


class BatchVerifier:
    """Verifies lists of signatures on a pool of threads; results in input order."""

    def __init__(
        self,
        workers: int | None = None,
        cache: SignatureCache | None = None,
        min_parallel: int = 32,
        cached: bool = True,
    ) -> None:
        """`workers` threads in all (the calling thread is one of them); `cached=False` checks
        every signature every time (benchmarks)."""
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.cache = cache if cache is not None else SignatureCache()
        self.cached = cached
        self._min_parallel = min_parallel
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()  # callers may run on several threads (the node's RPC)
        self.verified = 0

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers - 1, thread_name_prefix="sigverify")
            return self._pool

    def verify_one(self, public_key: bytes, message: bytes, signature: bytes) -> bool:
        """One signature, through the cache."""
        return self.verify_batch([(public_key, message, signature)])[0]

    def verify_batch(self, items: Sequence[SignedItem]) -> list[bool]:
        """One boolean per (public key, message, signature), in order."""
        if not self.cached:
            self.verified += len(items)
            return self._verify_all(items)
        results: list[bool] = [False] * len(items)
        keys = [SignatureCache.key(pk, msg, sig) for pk, msg, sig in items]
        pending: list[int] = []
        for i, key in enumerate(keys):
            if self.cache.contains(key):
                results[i] = True
            else:
                pending.append(i)
        if not pending:
            return results
        checked = self._verify_all([items[i] for i in pending])
        self.verified += len(pending)
        for i, ok in zip(pending, checked, strict=True):
            results[i] = ok
            if ok:
                self.cache.add(keys[i])
        return results

    def _verify_all(self, todo: Sequence[SignedItem]) -> list[bool]:
        if len(todo) < self._min_parallel or self.workers == 1:
            return _verify_chunk(todo)
        size = -(-len(todo) // self.workers)
        chunks = [todo[j : j + size] for j in range(0, len(todo), size)]
        futures = [self._executor().submit(_verify_chunk, chunk) for chunk in chunks[1:]]
        first = _verify_chunk(chunks[0])
        return first + [ok for future in futures for ok in future.result()]

    def close(self) -> None:
        with self._pool_lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
