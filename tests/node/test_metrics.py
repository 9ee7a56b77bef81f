"""The metrics' own parts (`node.metrics`): who a commit misses, and the text format written with
CometBFT's counter names."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from consensus.types import NIL_BLOCK_ID, BlockIDFlag, Commit, CommitSig
from consensus.validators import Validator, ValidatorSet
from execution.positions.position import Position
from execution.risk.insurance import FundHealth
from node.metrics import OpenInterest, commit_signing, counter, exposition, insurance_fund_metrics
from storage import schema

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


OWNERS = [bytes([n]) * 20 for n in range(1, 5)]
# a commit: (owner, market, new size or None: the record deleted) per changed position, and
# whether a scrape reads the figures after it
COMMITS = st.lists(
    st.tuples(
        st.lists(
            st.tuples(st.sampled_from(OWNERS), st.sampled_from([1, 2]), st.none() | st.integers(-50, 50)),
            max_size=6,
        ),
        st.booleans(),
    ),
    max_size=8,
)


@given(COMMITS)
def test_open_interest_kept_from_changes_equals_a_fresh_walk(
    commits: list[tuple[list[tuple[bytes, int, int | None]], bool]],
) -> None:
    """Open interest kept from the commits' changed records, whatever their order and repeats
    and however many commits wait undecoded before a read, equals the sum of the long sizes of
    the records standing after them."""
    state: dict[bytes, bytes] = {}
    kept = OpenInterest([])
    kept.MAX_PENDING = 3  # some commits are decoded at once, others wait for the read
    for number, (changes, scraped) in enumerate(commits):
        batch: dict[bytes, bytes | None] = {}
        for owner, market, size in changes:
            key = schema.position_key(owner, market)
            batch[key] = None if size is None else Position(size=size, quote=1).encode()
        for key, raw in batch.items():
            if raw is None:
                state.pop(key, None)
            else:
                state[key] = raw
        kept.add({**batch, b"a:acc:" + OWNERS[0]: b"not a position"})
        if not scraped and number < len(commits) - 1:
            continue
        walked = OpenInterest(sorted(state.items()))
        for market in (1, 2):
            expected = sum(
                max(0, Position.decode(raw).size)
                for key, raw in state.items()
                if schema.market_id_from_position_key(key) == market
            )
            assert kept.by_market.get(market, 0) == walked.by_market.get(market, 0) == expected


def test_insurance_fund_health_metrics() -> None:
    health = FundHealth(balance=700, value=450, maintenance=500, open_positions=2)
    families = {family.name: family for family in insurance_fund_metrics("c", health)}
    samples = {name: [(s.labels, s.value) for s in family.samples] for name, family in families.items()}
    assert samples == {
        "derivd_insurance_fund_value": [({"chain_id": "c"}, 450)],
        "derivd_insurance_fund_maintenance": [({"chain_id": "c"}, 500)],
        "derivd_insurance_fund_open_positions": [({"chain_id": "c"}, 2)],
    }
    assert {family.type for family in families.values()} == {"gauge"}
    assert (
        health.underwater and not FundHealth(balance=0, value=5, maintenance=5, open_positions=1).underwater
    )
