"""The metrics' own parts (`node.metrics`): who a commit misses, and the text format written with
CometBFT's counter names."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from consensus.types import NIL_BLOCK_ID, BlockIDFlag, Commit, CommitSig
from consensus.validators import Validator, ValidatorSet
from node.metrics import commit_signing, counter, exposition

ADDRESSES = [bytes([n]) * 20 for n in (1, 2, 3)]
SET = ValidatorSet([Validator(address, bytes([n]) * 32, 10 * (n + 1)) for n, address in enumerate(ADDRESSES)])


def _commit(flags: list[BlockIDFlag]) -> Commit:
    sigs = tuple(
        CommitSig(
            flag,
            v.address if flag != BlockIDFlag.ABSENT else b"",
            0,
            b"" if flag == BlockIDFlag.ABSENT else b"s",
        )
        for v, flag in zip(SET.validators, flags, strict=True)
    )
    return Commit(5, 0, NIL_BLOCK_ID, sigs)


def test_missing_validators_and_our_own_signature() -> None:
    commit = _commit([BlockIDFlag.COMMIT, BlockIDFlag.ABSENT, BlockIDFlag.NIL])
    absent = SET.validators[1]
    assert commit_signing(commit, SET, SET.validators[0].address) == (1, absent.power, True)
    assert commit_signing(commit, SET, absent.address) == (1, absent.power, False)
    assert commit_signing(commit, SET, SET.validators[2].address)[2] is True  # a nil precommit signs
    assert commit_signing(commit, SET, b"\x09" * 20) == (1, absent.power, None)  # not a validator
    assert commit_signing(commit, SET, None)[2] is None
    everyone = _commit([BlockIDFlag.COMMIT] * 3)
    assert commit_signing(everyone, SET, None) == (0, 0, None)


def test_exposition_keeps_counter_names_and_parses() -> None:
    registry = CollectorRegistry()

    class Counters(Collector):
        def collect(self) -> list[Metric]:
            mempool = counter("cometbft_mempool_failed_txs", "Failed.")
            mempool.add_sample(mempool.name, {"chain_id": 'with "quotes"\\n'}, 3)
            bytes_total = counter("cometbft_p2p_peer_send_bytes_total", "Sent.")
            bytes_total.add_sample(bytes_total.name, {"chain_id": "c", "chID": "0x20"}, 1.5)
            return [mempool, bytes_total]

    registry.register(Counters())
    Histogram("interval_seconds", "Interval.", registry=registry, buckets=(1.0,)).observe(0.5)
    text = exposition(registry).decode()
    assert "# TYPE cometbft_mempool_failed_txs counter\n" in text
    assert 'cometbft_mempool_failed_txs{chain_id="with \\"quotes\\"\\\\n"} 3\n' in text
    assert "# TYPE cometbft_p2p_peer_send_bytes_total counter\n" in text
    assert "interval_seconds_created" not in text
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    assert parsed["interval_seconds"].type == "histogram"
    [sample] = [s for s in parsed["cometbft_mempool_failed_txs"].samples]
    assert sample.value == 3 and sample.labels["chain_id"] == 'with "quotes"\\n'
