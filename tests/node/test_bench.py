"""`derivd bench consensus` runs and reports its figures (speed is reported, never asserted)."""

from __future__ import annotations

import json

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
    out = json.loads(run_cli("bench", "throughput", "--validators", "1", "--duration", "3", "--json").stdout)
    assert out["validators"] == 1 and len(out["nodes"]) == 1
    assert out["submitted"] > 0 and out["committed"] > 0
    assert out["committed"] <= out["submitted"]
    assert 0 < out["latency_p50_s"] <= out["latency_p99_s"]
    assert out["nodes"][0]["rss_mib"] > 0
