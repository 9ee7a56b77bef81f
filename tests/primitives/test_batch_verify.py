"""Tests of primitives.batch_verify: threaded batch verification and the cache of successes."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import primitives.batch_verify as batch_verify_module
from primitives.batch_verify import BatchVerifier, SignatureCache, SignedItem
from primitives.keys import PrivateKey, verify

KEYS = [PrivateKey.from_seed(bytes([i]) * 32) for i in range(1, 6)]

# How an item is spoiled; "ok" leaves a valid signature.
KINDS = ["ok", "bad_sig", "bad_msg", "wrong_key", "short_sig", "short_key", "zero_key", "empty_sig"]


def make_item(key_index: int, message: bytes, kind: str) -> SignedItem:
    key = KEYS[key_index]
    public = key.public_key.raw
    signature = key.sign(message)
    if kind == "bad_sig":
        signature = bytes([signature[0] ^ 1]) + signature[1:]
    elif kind == "bad_msg":
        message = message + b"!"
    elif kind == "wrong_key":
        public = KEYS[(key_index + 1) % len(KEYS)].public_key.raw
    elif kind == "short_sig":
        signature = signature[:63]
    elif kind == "short_key":
        public = public[:31]
    elif kind == "zero_key":
        public = bytes(32)
    elif kind == "empty_sig":
        signature = b""
    return public, message, signature


items_strategy = st.lists(
    st.builds(make_item, st.integers(0, len(KEYS) - 1), st.binary(max_size=24), st.sampled_from(KINDS)),
    max_size=80,
)


@pytest.fixture
def chunk_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, int]]]:
    """Record (thread name, chunk size) of every chunk the verifier checks."""
    calls: list[tuple[str, int]] = []
    lock = threading.Lock()
    real = batch_verify_module._verify_chunk

    def recording(items: Sequence[SignedItem]) -> list[bool]:
        with lock:
            calls.append((threading.current_thread().name, len(items)))
        return real(items)

    monkeypatch.setattr(batch_verify_module, "_verify_chunk", recording)
    yield calls


def expected(items: Sequence[SignedItem]) -> list[bool]:
    return [verify(pk, msg, sig) for pk, msg, sig in items]


# -- results equal one-by-one verification ------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(items_strategy, st.sampled_from([1, 2, 4]), st.sampled_from([1, 8, 32]))
def test_batch_equals_one_by_one(items: list[SignedItem], workers: int, min_parallel: int) -> None:
    verifier = BatchVerifier(workers=workers, min_parallel=min_parallel)
    try:
        want = expected(items)
        assert verifier.verify_batch(items) == want
        # a second pass goes through the cache for the valid ones and must agree
        assert verifier.verify_batch(items) == want
        assert [verifier.verify_one(*item) for item in items] == want
    finally:
        verifier.close()


def test_large_batch_uses_worker_threads(chunk_threads: list[tuple[str, int]]) -> None:
    items = [make_item(i % len(KEYS), i.to_bytes(4, "big"), KINDS[i % len(KINDS)]) for i in range(100)]
    verifier = BatchVerifier(workers=4, min_parallel=32)
    try:
        assert verifier.verify_batch(items) == expected(items)
    finally:
        verifier.close()
    assert len(chunk_threads) == 4
    assert sorted(size for _, size in chunk_threads) == [25, 25, 25, 25]
    # the calling thread checks one chunk itself; three pool threads check the rest
    names = sorted(name for name, _ in chunk_threads)
    assert names.count(threading.current_thread().name) == 1
    assert sum(name.startswith("sigverify") for name in names) == 3


def test_small_batch_is_checked_inline(chunk_threads: list[tuple[str, int]]) -> None:
    items = [make_item(0, bytes([i]), "ok") for i in range(31)]
    verifier = BatchVerifier(workers=4, min_parallel=32)
    try:
        assert verifier.verify_batch(items) == [True] * 31
    finally:
        verifier.close()
    assert chunk_threads == [(threading.current_thread().name, 31)]


def test_one_worker_never_uses_the_pool(chunk_threads: list[tuple[str, int]]) -> None:
    items = [make_item(i % len(KEYS), bytes([i]), KINDS[i % len(KINDS)]) for i in range(200)]
    verifier = BatchVerifier(workers=1, min_parallel=2)
    try:
        assert verifier.workers == 1
        assert verifier.verify_batch(items) == expected(items)
    finally:
        verifier.close()
    assert chunk_threads == [(threading.current_thread().name, 200)]


def test_uneven_split_keeps_order(chunk_threads: list[tuple[str, int]]) -> None:
    items = [make_item(i % len(KEYS), bytes([i]), "ok" if i % 3 else "bad_sig") for i in range(37)]
    verifier = BatchVerifier(workers=3, min_parallel=4)
    try:
        assert verifier.verify_batch(items) == [i % 3 != 0 for i in range(37)]
    finally:
        verifier.close()
    assert sorted(size for _, size in chunk_threads) == [11, 13, 13]


def test_workers_defaults_and_floor() -> None:
    assert BatchVerifier(workers=0).workers == 1
    assert BatchVerifier(workers=-3).workers == 1
    assert BatchVerifier().workers >= 1


# -- cache ----------------------------------------------------------------------------------------


def test_cache_stores_successes_only() -> None:
    verifier = BatchVerifier(workers=1)
    good = make_item(0, b"good", "ok")
    bad = make_item(0, b"bad", "bad_sig")
    try:
        assert verifier.verify_batch([good, bad]) == [True, False]
        assert verifier.verified == 2
        assert len(verifier.cache) == 1

        # the valid one is a hit, the invalid one is checked again
        assert verifier.verify_batch([good, bad]) == [True, False]
        assert verifier.verified == 3
        assert verifier.cache.hits == 1
        assert len(verifier.cache) == 1

        for round_ in range(3):
            assert verifier.verify_one(*bad) is False
            assert verifier.verified == 4 + round_
        assert verifier.verify_one(*good) is True
        assert verifier.verified == 6
        assert verifier.cache.hits == 2
    finally:
        verifier.close()


def test_cache_hit_counts() -> None:
    verifier = BatchVerifier(workers=1)
    item = make_item(1, b"vote", "ok")
    assert verifier.verify_one(*item)
    assert (verifier.cache.hits, verifier.cache.misses, verifier.verified) == (0, 1, 1)
    assert verifier.verify_one(*item)
    assert (verifier.cache.hits, verifier.cache.misses, verifier.verified) == (1, 1, 1)
    assert verifier.verify_one(*item)
    assert (verifier.cache.hits, verifier.cache.misses, verifier.verified) == (2, 1, 1)


def test_cache_key_binds_key_message_and_signature() -> None:
    verifier = BatchVerifier(workers=1)
    public, message, signature = make_item(0, b"message", "ok")
    assert verifier.verify_one(public, message, signature)
    assert not verifier.verify_one(public, b"other message", signature)
    assert not verifier.verify_one(KEYS[1].public_key.raw, message, signature)
    tampered = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verifier.verify_one(public, message, tampered)
    assert len(verifier.cache) == 1
    assert SignatureCache.key(public, message, signature) != SignatureCache.key(public, b"x", signature)


def test_shared_cache_between_verifiers() -> None:
    cache = SignatureCache()
    admission = BatchVerifier(workers=1, cache=cache)
    execution = BatchVerifier(workers=1, cache=cache)
    item = make_item(2, b"tx", "ok")
    assert admission.verify_one(*item)
    assert execution.verify_one(*item)
    assert execution.verified == 0
    assert cache.hits == 1


def test_duplicates_in_one_batch() -> None:
    verifier = BatchVerifier(workers=1)
    good = make_item(0, b"same", "ok")
    bad = make_item(0, b"same", "bad_sig")
    assert verifier.verify_batch([good, bad, good, bad]) == [True, False, True, False]
    assert len(verifier.cache) == 1


def test_cache_capacity_evicts_least_recently_used() -> None:
    cache = SignatureCache(capacity=2)
    cache.add(b"k1")
    cache.add(b"k2")
    assert cache.contains(b"k1")  # k1 is now the most recently used
    cache.add(b"k3")
    assert len(cache) == 2
    assert not cache.contains(b"k2")
    assert cache.contains(b"k1")
    assert cache.contains(b"k3")
    cache.add(b"k1")  # re-adding refreshes, does not grow
    assert len(cache) == 2
    cache.add(b"k4")
    assert cache.contains(b"k1")
    assert not cache.contains(b"k3")
    assert (cache.hits, cache.misses) == (4, 2)


def test_cache_capacity_through_the_verifier() -> None:
    verifier = BatchVerifier(workers=1, cache=SignatureCache(capacity=2))
    a, b, c = (make_item(0, m, "ok") for m in (b"a", b"b", b"c"))
    assert verifier.verify_batch([a, b]) == [True, True]
    assert verifier.verify_one(*a)  # hit: a becomes most recent
    assert verifier.verified == 2
    assert verifier.verify_one(*c)  # evicts b
    assert verifier.verified == 3
    assert len(verifier.cache) == 2
    assert verifier.verify_one(*a)
    assert verifier.verified == 3
    assert verifier.verify_one(*b)  # evicted: verified again
    assert verifier.verified == 4


@settings(max_examples=50)
@given(st.integers(1, 8), st.lists(st.integers(0, 15), max_size=60))
def test_cache_matches_lru_model(capacity: int, ops: list[int]) -> None:
    cache = SignatureCache(capacity=capacity)
    model: list[int] = []  # least recently used first
    for op in ops:
        key = bytes([op % 8])
        if op >= 8:
            present = op % 8 in model
            assert cache.contains(key) is present
            if present:
                model.remove(op % 8)
                model.append(op % 8)
        else:
            if op in model:
                model.remove(op)
            model.append(op)
            del model[:-capacity]
            cache.add(key)
        assert len(cache) == len(model)
    for k in range(8):
        assert cache.contains(bytes([k])) is (k in model)


# -- edges ----------------------------------------------------------------------------------------


def test_empty_batch(chunk_threads: list[tuple[str, int]]) -> None:
    verifier = BatchVerifier(workers=4, min_parallel=0)
    assert verifier.verify_batch([]) == []
    assert verifier.verified == 0
    assert chunk_threads == []
    assert not any(t.name.startswith("sigverify") for t in threading.enumerate() if t.is_alive())
    verifier.close()


def test_all_cached_batch_checks_nothing(chunk_threads: list[tuple[str, int]]) -> None:
    items = [make_item(0, bytes([i]), "ok") for i in range(40)]
    verifier = BatchVerifier(workers=4, min_parallel=8)
    try:
        assert verifier.verify_batch(items) == [True] * 40
        chunk_threads.clear()
        assert verifier.verify_batch(items) == [True] * 40
        assert chunk_threads == []
        assert verifier.verified == 40
    finally:
        verifier.close()


def test_close_then_reuse() -> None:
    items = [make_item(i % len(KEYS), bytes([i]), KINDS[i % len(KINDS)]) for i in range(64)]
    verifier = BatchVerifier(workers=4, min_parallel=8, cache=SignatureCache(capacity=0))
    want = expected(items)
    assert verifier.verify_batch(items) == want
    verifier.close()
    assert not any(t.name.startswith("sigverify") for t in threading.enumerate() if t.is_alive())
    assert verifier.verify_batch(items) == want
    assert verifier.verified == 128
    verifier.close()
    verifier.close()  # idempotent
    assert verifier.verify_batch(items[:3]) == want[:3]


def test_close_without_use() -> None:
    BatchVerifier(workers=2).close()
