"""A node that restarts between blocks computes what a running one does: the running app reads
through the caches it built (decoded records, books, check state), the restarted one starts from
the stored bytes. Driven by the benchmark's order flow (accounts with growing nonce lists,
resting orders, positions from fills, per-owner market lists)."""

from __future__ import annotations

from pathlib import Path

from consensus.app import InitChainRequest
from execution.app import ExchangeApp
from node import bench_exec
from primitives.batch_verify import BatchVerifier
from storage.db import Database, WriteBatch


def app_hashes(workload: bench_exec.Workload, path: Path, restart_every_block: bool) -> list[bytes]:
    verifier = BatchVerifier(workers=1)
    db = Database(path)
    app = ExchangeApp(db, bench_exec.CHAIN_ID, verifier)
    hashes: list[bytes] = []
    try:
        app.init_chain(
            InitChainRequest(bench_exec.CHAIN_ID, bench_exec.GENESIS_TIME, 1, (), workload.app_state)
        )
        batch = WriteBatch()
        app.commit(batch)
        db.write(batch)
        for height, block in enumerate([workload.warm_up, *workload.blocks], start=1):
            hashes.append(bench_exec._block(app, db, height, block)[0])
            if restart_every_block:
                app.close()
                db.close()
                db = Database(path)
                app = ExchangeApp(db, bench_exec.CHAIN_ID, verifier)
    finally:
        app.close()
        db.close()
        verifier.close()
    return hashes


def test_an_app_restarted_after_every_block_computes_the_same_app_hashes(tmp_path: Path) -> None:
    workload = bench_exec._generate(
        blocks=6, txs_per_block=150, accounts=24, markets=3, hot=False, seed=11, orders_per_tx=4
    )
    running = app_hashes(workload, tmp_path / "running", restart_every_block=False)
    restarted = app_hashes(workload, tmp_path / "restarted", restart_every_block=True)
    assert len(running) == 7 and len(set(running)) == 7
    assert restarted == running
