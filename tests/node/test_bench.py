"""`derivd bench ...` commands run and report their figures (speed is reported, never asserted)."""

from __future__ import annotations

import json

from node.bench_options_liquidation import bench_options_liquidation
from tests.node.e2e import run_cli


def test_bench_consensus_reports_its_figures() -> None:
    out = json.loads(run_cli("bench", "consensus", "--validators", "7", "--heights", "2", "--json").stdout)
    assert out["validators"] == 7
    assert out["machine_limit"]["cores"] >= 1
    for key in (
        "votes_per_second_pre_verified",
        "votes_per_second_with_verification",
        "commit_verify_ms_one_by_one",
        "commit_verify_ms_batched",
        "commit_verify_speedup",
    ):
        assert out[key] > 0, key


def test_bench_throughput_reports_its_figures() -> None:
    args = (
        "bench",
        "throughput",
        "--validators",
        "1",
        "--duration",
        "3",
        "--rate",
        "2000",
        "--accounts",
        "50",
        "--book-subscribers",
        "6",
        "--json",
    )
    out = json.loads(run_cli(*args).stdout)
    stream = out["book_stream"]  # on the second /websocket listener, by default
    assert stream["subscribers"] == 6 and stream["messages"] > 0 and stream["messages"] % 6 == 0
    assert stream["gaps"] == 0 and stream["closed"] == 0 and stream["failed"] == []
    assert 0 < stream["latency_p50_ms"] <= stream["latency_p99_ms"] <= stream["latency_max_ms"]
    assert stream["subscriber_cpu_us_per_message"] > 0
    assert out["validators"] == 1 and out["mix"] == "orders" and len(out["nodes"]) == 1
    assert out["committed_txs"] > 0 and out["committed_orders"] > out["committed_txs"], "batches of orders"
    assert out["committed_orders_per_s"] > 0 and out["committed_tx_per_s"] > 0
    assert out["lost_txs"] == 0, "every accepted tx is in a block"
    assert out["accepted_txs"] >= out["committed_txs"] + sum(out["failed_txs_by_code"].values())
    assert 0 < out["latency_p50_s"] <= out["latency_p99_s"]
    assert out["block_interval_s"] > 0 and out["blocks"] >= 2
    assert out["generator_capacity_orders_per_s"] > out["committed_orders_per_s"], "the node is the limit"
    assert out["nodes"][0]["rss_mib"] > 0 and out["nodes"][0]["cpu_seconds"] > 0
    assert out["nodes"][0]["evicted_txs"] == 0, "nothing accepted was dropped by a recheck"
    disk = out["nodes"][0]["disk_mib"]
    assert 2 <= len(disk) <= 11 and min(disk) > 0, "the data directory, sampled during the load"
    assert set(out["nodes"][0]["p2p_sent_mib"]) == {"consensus_data", "consensus_votes", "mempool"}
    assert out["machine_limit"]["verify_per_second_one_core"] > 0


def test_bench_book_reports_its_figures() -> None:
    out = json.loads(run_cli("bench", "book", "--operations", "5000", "--seed", "3", "--json").stdout)
    assert out["operations"] == 5000 and out["ops_per_second"] > 0
    assert out["placements"] + out["cancels"] == 5000
    assert out["fills"] > 0 and out["resting_at_end"] > 0
    again = json.loads(run_cli("bench", "book", "--operations", "5000", "--seed", "3", "--json").stdout)
    assert {k: v for k, v in again.items() if k not in ("seconds", "ops_per_second", "machine_limit")} == {
        k: v for k, v in out.items() if k not in ("seconds", "ops_per_second", "machine_limit")
    }, "the same seed does the same work"


def test_bench_exec_reports_its_figures() -> None:
    args = ("bench", "exec", "--blocks", "2", "--txs-per-block", "300", "--accounts", "64", "--markets", "8")
    out = json.loads(run_cli(*args, "--workers", "2", "--json").stdout)
    assert out["orders"] > 600 and out["orders_per_second"] > 0 and out["serial_orders_per_second"] > 0
    assert out["speedup"] > 0 and 0 <= out["reexecuted_fraction"] < 1
    assert out["parallel_blocks"] == 2, "300 txs on 8 markets: worth running in parallel"
    assert out["txs_failed"] == 0 and out["fills"] > 0
    assert out["app_hash_matches"] is True and len(out["app_hash"]) == 64
    assert out["machine_limit"]["verify_per_second_one_core"] > 0


def test_bench_liquidation_reports_its_figures() -> None:
    out = json.loads(run_cli("bench", "liquidation", "--accounts", "1000", "--json").stdout)
    assert out["accounts"] == 1000 and out["markets"] == 4 and out["under_water"] == 10
    assert out["no_move_end_block_ms"] > 0 and out["move_block_ms"] > 0
    assert out["move_liquidations"] == 10, "the 10% fall liquidates exactly the 9x longs"
    assert out["blocks_to_clear"] == 1 and out["under_water_left"] == 0, "each is closed in the crash block"
    assert out["liquidations"] == [10] and out["work"][0] > 0 and len(out["block_ms"]) == 1


def test_bench_statetree_reports_its_figures() -> None:
    args = ("bench", "statetree", "--keys", "3000", "--changes", "300", "--blocks", "2", "--json")
    out = json.loads(run_cli(*args).stdout)
    assert (out["keys"], out["changes"], out["blocks"]) == (3000, 300, 2)
    assert out["commit_ms"] > 0 and out["apply_ms"] > 0 and out["write_ms"] > 0
    assert out["batch_entries"] > 300, "new nodes on every changed path, and the version's root"
    assert out["prove_us"] > 0 and out["verify_us"] > 0
    assert out["machine_limit"]["verify_per_second_one_core"] > 0


def test_bench_statesync_reports_its_figures() -> None:
    args = ["bench", "statesync", "--accounts", "300", "--heights", "40", "--snapshot-interval", "15"]
    out = json.loads(run_cli(*args, "--load", "300", "--load-seconds", "2", "--json").stdout)
    assert out["accounts"] == 300 and out["snapshot_interval"] == 15
    assert out["load_txs_accepted"] > 0 and out["loaded_heights"] > 0, "blocks of orders first"
    assert out["restored_height"] >= 15 and out["restored_height"] % 15 == 0, "a snapshot was restored"
    assert out["state_sync_target_height"] >= 40 and out["block_sync_target_height"] >= 40
    assert out["state_sync_seconds"] > 0 and out["block_sync_seconds"] > 0 and out["speedup"] > 0


def test_bench_options_reports_its_figures() -> None:
    out = json.loads(run_cli("bench", "options", "--count", "200", "--json").stdout)
    assert out["count"] == 200 and out["options_per_second"] > 0 and len(out["checksum"]) == 16
    assert out["machine_limit"]["verify_per_second_one_core"] > 0


def test_bench_options_liquidation_reports_its_figures() -> None:
    args = ("bench", "options", "--liquidation", "--accounts", "300", "--max-blocks", "2", "--json")
    out = json.loads(run_cli(*args).stdout)
    assert out["accounts"] == 300 and out["series"] == 12
    assert out["liquidatable_before_move"] == 0, "every account starts above its maintenance requirement"
    assert out["liquidated"] > 30, "the 10% rise puts the short calls under water; the book closes them"
    assert 0 < out["liquidation_pass_ms"] <= out["end_block_ms"] <= out["move_block_ms"]
    assert 0 < out["option_marks_ms"] <= out["end_block_ms"] and out["liquidation_pass_cpu_ms"] > 0
    assert out["no_move_liquidation_pass_ms"] > 0 and out["first_pass_ms"] > 0
    assert out["liquidation_work"] == out["work_per_block"][0] > 0
    blocks = len(out["block_ms"])
    assert 1 <= blocks <= 2 and len(out["liquidated_per_block"]) == blocks
    if out["blocks_to_clear"] is None:
        assert out["liquidatable_left"] > 0 and blocks == 2
    else:
        assert out["liquidatable_left"] == 0 and out["blocks_to_clear"] == blocks
    assert len(out["app_hash"]) == 64
    assert out["machine_limit"]["verify_per_second_one_core"] > 0


def test_checking_the_candidates_does_not_spend_the_steps_budget() -> None:
    """Checking 300 portfolio-margined holders costs ~3,600 state operations; with a budget of
    2,000 the steps still get their 2,000 (the checks are not on the budget), so the move block
    liquidates many accounts, not the one the progress rule guarantees."""
    out = bench_options_liquidation(300, seed=1, max_blocks=1, work_budget=2_000)
    assert out["liquidation_work"] > 2_000 + 3_000
    assert out["liquidated_per_block"][0] > 5


def test_bench_options_liquidation_is_deterministic() -> None:
    first = bench_options_liquidation(40, seed=5, max_blocks=2)
    again = bench_options_liquidation(40, seed=5, max_blocks=2)
    assert first["app_hash"] == again["app_hash"], "the same arguments end in the same state"
    assert first["liquidated_per_block"] == again["liquidated_per_block"]
    other = bench_options_liquidation(40, seed=6, max_blocks=2)
    assert other["app_hash"] != first["app_hash"], "the seed draws the portfolios"
