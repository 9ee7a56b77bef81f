"""`derivd bench statetree`: the state tree's costs on one core (`storage.statetree`).

A tree of `keys` keys (32-byte keys, 40-byte values, like the chain's position and order records)
is built in versions of 100,000 keys and written to a temporary LevelDB (untimed). Then `blocks`
versions each apply `changes` changes drawn like a 1,000-tx block of `derivd bench exec` (4,000
orders: about 5,600 keys of the tree, a third each new, deleted and rewritten: orders placed and
cancelled, accounts and positions updated; the derived indexes, outside the tree, not counted).
Timed per version: `apply` (the new nodes and root, in memory), then `flush` into a batch and the
synced LevelDB write of that batch (`commit_ms` is the three together: what a height adds to the
node's commit). Then proofs of 1,000 present and 1,000 absent keys
(generation, and ICS23 verification against the root). Medians over the versions.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from primitives.ics23 import ExistenceProof, verify_membership, verify_non_membership
from storage.db import Database, WriteBatch
from storage.statetree import PROOF_SPEC, StateTree

BUILD_STEP = 100_000
PROOFS = 1_000


def _key(i: int) -> bytes:
    return b"a:bench:" + i.to_bytes(24, "big")


def bench_statetree(keys: int, changes: int, blocks: int, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory(prefix="derivd-bench-tree-") as tmp:
        db = Database(Path(tmp) / "db")
        tree = StateTree(db)
        started = time.perf_counter()
        version = 0
        for start in range(0, keys, BUILD_STEP):
            version += 1
            tree.apply(
                version, ((_key(i), rng.randbytes(40)) for i in range(start, min(keys, start + BUILD_STEP)))
            )
            batch = WriteBatch()
            tree.flush(batch)
            db.write(batch, sync=False)
        build_s = time.perf_counter() - started
        live = list(range(keys))
        next_key = keys
        apply_ms, flush_ms, write_ms, nodes = [], [], [], []
        for _ in range(blocks):
            version += 1
            third = changes // 3
            block: dict[bytes, bytes | None] = {}
            for _ in range(third):
                block[_key(next_key)] = rng.randbytes(40)
                live.append(next_key)
                next_key += 1
            for _ in range(third):
                index = rng.randrange(len(live))
                live[index], live[-1] = live[-1], live[index]
                block[_key(live.pop())] = None
            while len(block) < changes:
                block[_key(live[rng.randrange(len(live))])] = rng.randbytes(40)
            t0 = time.perf_counter()
            tree.apply(version, block.items())
            t1 = time.perf_counter()
            batch = WriteBatch()
            tree.flush(batch)
            t2 = time.perf_counter()
            db.write(batch, sync=True)
            t3 = time.perf_counter()
            apply_ms.append((t1 - t0) * 1e3)
            flush_ms.append((t2 - t1) * 1e3)
            write_ms.append((t3 - t2) * 1e3)
            nodes.append(len(batch))
        present = [_key(live[rng.randrange(len(live))]) for _ in range(PROOFS)]
        absent = [_key(next_key + i) for i in range(PROOFS)]
        root = tree.root_hash
        t0 = time.perf_counter()
        proofs = [tree.prove(key, version) for key in present + absent]
        prove_us = (time.perf_counter() - t0) / len(proofs) * 1e6
        t0 = time.perf_counter()
        for key, proof in zip(present + absent, proofs, strict=True):
            if isinstance(proof, ExistenceProof):
                verify_membership(PROOF_SPEC, root, proof, key, proof.value)
            else:
                verify_non_membership(PROOF_SPEC, root, proof, key)
        verify_us = (time.perf_counter() - t0) / len(proofs) * 1e6
        db.close()
    apply_median, flush_median, write_median = (statistics.median(v) for v in (apply_ms, flush_ms, write_ms))
    return {
        "keys": keys,
        "changes": changes,
        "blocks": blocks,
        "build_seconds": round(build_s, 1),
        "apply_ms": round(apply_median, 1),
        "flush_ms": round(flush_median, 1),
        "write_ms": round(write_median, 1),
        "commit_ms": round(
            statistics.median(a + f + w for a, f, w in zip(apply_ms, flush_ms, write_ms, strict=True)), 1
        ),
        "batch_entries": int(statistics.median(nodes)),
        "prove_us": round(prove_us, 1),
        "verify_us": round(verify_us, 1),
        "target_commit_ms": 50,
        "target_proof_us": 1000,
    }
