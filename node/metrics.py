"""Prometheus metrics with CometBFT's names (`<namespace>_<subsystem>_<name>`, label chain_id),
served on `[instrumentation] prometheus_listen_addr` at /metrics.

Subsystems keep plain statistics; the collector here reads them at scrape time, so nothing
outside node/ imports prometheus_client. What a scrape cannot read afterwards goes into
histograms: the interval between blocks (a commit listener), the time of each finalize_block
(`state_block_processing_time`, in milliseconds as CometBFT's; `TimedFinalize` wraps the
application the block executor calls) and each stream message's delivery time (the WebSocket hub).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from consensus.app import FinalizeBlockRequest, FinalizeBlockResult
from consensus.blocksync import BlockSync
from consensus.evidence import decode_evidence_list
from consensus.execution import BlockApplication, BlockResults
from consensus.mempool import Mempool
from consensus.reactor import ConsensusReactor
from consensus.service import ConsensusService
from consensus.state import ChainState
from consensus.types import Block, BlockID, BlockIDFlag, Commit
from consensus.validators import ValidatorSet
from execution.app import ExchangeApp
from execution.bridge.deposits import pending_deposit_count
from execution.bridge.params import load_bridge_params
from execution.bridge.totals import load_totals
from execution.bridge.valsets import current_valset
from execution.bridge.withdrawals import pending_withdrawals
from execution.markets import load_markets
from execution.options.fixedpoint import SCALE
from execution.options.marks import load_mark, mark_quote
from execution.oracle.prices import is_stale, load_params, load_price
from execution.oracle.volatility import listed_expiries, load_vol
from execution.positions.margin import load_option_params
from execution.positions.position import Position
from execution.risk.insurance import FundHealth
from execution.state import StateReader
from node.bridge_watcher import WatcherStats
from node.pricefeed import FeederStats
from p2p.switch import Switch
from primitives.timefmt import format_rfc3339
from storage import schema
from storage.db import WriteBatch

BLOCK_INTERVAL_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)
BLOCK_PROCESSING_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)


@dataclass
class ChainStats:
    """Figures of committed blocks, updated by the commit listener."""

    height: int = 0
    num_txs: int = 0
    total_txs: int = 0
    block_size_bytes: int = 0
    last_block_time: int = 0
    missing_validators: int = 0
    """validators whose precommit the last block's commit lacks (CometBFT's `missing_validators`)"""
    missing_validators_power: int = 0
    byzantine_validators: int = 0
    """validators the last block's evidence names"""
    byzantine_validators_power: int = 0
    validator_last_signed_height: int = 0
    """the last height this node's validator signed (a commit carries its precommit)"""
    validator_missed_blocks: int = 0
    """commits since start that lack this node's validator (while it was in the set)"""
    exchange: dict[tuple[str, str], int] = field(default_factory=dict)
    """(event type, market) -> events seen since start: orders placed and cancelled, fills"""


EXCHANGE_COUNTED = {
    "order_placed": ("orders_placed_total", "Orders placed (resting or not)."),
    "order_cancelled": (
        "orders_cancelled_total",
        "Orders cancelled (by their owner, an amend or the exchange).",
    ),
    "order_filled": ("fills_total", "Fills (one per maker order matched)."),
}


def commit_signing(
    last_commit: Commit, signers: ValidatorSet, me: bytes | None
) -> tuple[int, int, bool | None]:
    """(validators absent from `last_commit`, their power, whether `me` signed it: None if `me`
    is not among `signers`). A commit's signatures are in the validator set's order."""
    missing, power = 0, 0
    for validator, sig in zip(signers.validators, last_commit.signatures, strict=False):
        if sig.flag == BlockIDFlag.ABSENT:
            missing += 1
            power += validator.power
    index = signers.index_of(me) if me is not None else None
    if index is None:
        return missing, power, None
    sigs = last_commit.signatures
    return missing, power, index < len(sigs) and sigs[index].flag != BlockIDFlag.ABSENT


def counter(name: str, doc: str) -> Metric:
    """A counter named exactly `name` (CometBFT's names: `cometbft_mempool_failed_txs`, no suffix
    added; `exposition` writes it so). Its samples are added under the same name."""
    return Metric(name, doc, "counter")


def insurance_fund_metrics(chain_id: str, health: FundHealth) -> list[Metric]:
    """The insurance fund's health after the last committed block
    (`execution.risk.insurance.insurance_fund_health`): its account value and maintenance
    requirement at the oracle prices (quote quantums) and the positions it holds."""
    families: list[Metric] = []
    for name, doc, value in (
        (
            "derivd_insurance_fund_value",
            "Insurance fund account value at the oracle prices, positions included (quote quantums).",
            health.value,
        ),
        (
            "derivd_insurance_fund_maintenance",
            "Insurance fund maintenance requirement of its positions (quote quantums).",
            health.maintenance,
        ),
        (
            "derivd_insurance_fund_open_positions",
            "Markets on which the insurance fund holds a position it has not unwound yet.",
            health.open_positions,
        ),
    ):
        family = GaugeMetricFamily(name, doc, labels=["chain_id"])
        family.add_metric([chain_id], value)
        families.append(family)
    return families


def _escape(value: str) -> str:
    """A label value in the text format (backslash, newline and double quote escaped)."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    """A sample value as Prometheus's Go writer prints it: integers without a fraction."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else repr(float(value))


def exposition(registry: CollectorRegistry) -> bytes:
    """The Prometheus text format (0.0.4) of `registry`, as prometheus_client's `generate_latest`
    writes it but for counters: their names are written as declared, where prometheus_client
    would add `_total` (CometBFT's counters have no such suffix); OpenMetrics' `_created` samples
    are left out."""
    lines: list[str] = []
    for metric in registry.collect():
        kind = "untyped" if metric.type == "unknown" else metric.type
        name = metric.name
        if kind == "counter" and any(sample.name == name + "_total" for sample in metric.samples):
            name += "_total"  # prometheus_client's own counters (the process collector's)
        lines.append(f"# HELP {name} {metric.documentation.replace(chr(92), chr(92) * 2)}")
        lines.append(f"# TYPE {name} {kind}")
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f'{key}="{_escape(value)}"' for key, value in sorted(sample.labels.items()))
            shown = f"{sample.name}{{{labels}}}" if labels else sample.name
            lines.append(f"{shown} {_number(sample.value)}")
    return ("\n".join(lines) + "\n").encode()


class OpenInterest:
    """Per market id, the sum of the committed long position sizes (base quantums): one walk of the
    positions at start, then the changed position records of each commit. A commit's changes are
    only merged (`add`, last value per key); they are decoded when a scrape reads `by_market`, or
    once MAX_PENDING keys wait, so a block costs a dict merge, not a decode per changed position."""

    MAX_PENDING = 50_000

    def __init__(self, positions: Iterable[tuple[bytes, bytes]]) -> None:
        self._long: dict[bytes, int] = {}
        self._by_market: dict[int, int] = {}
        self._pending: dict[bytes, bytes | None] = {}
        self._apply(positions)

    def add(self, changes: Mapping[bytes, bytes | None]) -> None:
        """Take in one commit's changed records (key -> new value, None: deleted)."""
        self._pending.update(changes)
        if len(self._pending) > self.MAX_PENDING:
            self._flush()

    @property
    def by_market(self) -> dict[int, int]:
        self._flush()
        return self._by_market

    def _flush(self) -> None:
        pending, self._pending = self._pending, {}
        self._apply(pending.items())

    def _apply(self, changes: Iterable[tuple[bytes, bytes | None]]) -> None:
        prefix = schema.APP_POSITION_PREFIX
        for key, raw in changes:
            if not key.startswith(prefix):
                continue
            size = max(0, Position.decode(raw).size) if raw is not None else 0
            before = self._long.pop(key, 0)
            if size:
                self._long[key] = size
            market = schema.market_id_from_position_key(key)
            self._by_market[market] = self._by_market.get(market, 0) + size - before


class TimedFinalize:
    """The application as the block executor sees it, with each finalize_block's wall time (ms)
    given to `observe` (`cometbft_state_block_processing_time`)."""

    def __init__(self, app: BlockApplication, observe: Callable[[float], None]) -> None:
        self.app = app
        self.observe = observe

    def finalize_block(self, request: FinalizeBlockRequest) -> FinalizeBlockResult:
        start = time.perf_counter()  # a metric of this node's speed, not of the chain's state
        try:
            return self.app.finalize_block(request)
        finally:
            self.observe((time.perf_counter() - start) * 1000)

    def commit(self, batch: WriteBatch) -> int:
        return self.app.commit(batch)


def bridge_chain_metrics(chain_id: str, state: StateReader) -> list[Metric]:
    """The bridge as the committed state has it (none on a chain without a bridge): deposits voted
    and not credited, withdrawals awaiting signatures, the totals moved (quote units), the current
    valset's nonce."""
    if load_bridge_params(state) is None:
        return []
    totals = load_totals(state)
    valset = current_valset(state)
    families: list[Metric] = []
    for name, doc, value in (
        (
            "derivd_bridge_pending_deposits",
            "EVM deposits with validators' votes, not credited yet.",
            pending_deposit_count(state),
        ),
        (
            "derivd_bridge_pending_withdrawals",
            "Withdrawals awaiting the validators' signatures.",
            len(pending_withdrawals(state)),
        ),
        (
            "derivd_bridge_deposited",
            "Quote units credited by bridge deposits since genesis.",
            totals.deposited,
        ),
        (
            "derivd_bridge_withdrawn",
            "Quote units withdrawn through the bridge since genesis.",
            totals.withdrawn,
        ),
        (
            "derivd_bridge_valset_nonce",
            "Nonce of the bridge's current validator set.",
            valset.nonce if valset is not None else 0,
        ),
    ):
        family = GaugeMetricFamily(name, doc, labels=["chain_id"])
        family.add_metric([chain_id], value)
        families.append(family)
    return families


def watcher_metrics(chain_id: str, stats: WatcherStats) -> list[Metric]:
    """This validator's bridge watcher (`node.bridge_watcher.WatcherStats`)."""
    families: list[Metric] = []
    for name, doc, value in (
        ("derivd_bridge_watcher_up", "1 if the last poll of the EVM node succeeded.", int(stats.up)),
        (
            "derivd_bridge_watcher_lag_blocks",
            "EVM blocks between the EVM head and the last block scanned for deposits.",
            stats.lag,
        ),
        ("derivd_bridge_evm_head", "The EVM node's latest block number.", stats.evm_head),
    ):
        gauge = GaugeMetricFamily(name, doc, labels=["chain_id"])
        gauge.add_metric([chain_id], value)
        families.append(gauge)
    for name, doc, value in (
        (
            "derivd_bridge_votes_total",
            "Deposit claims this validator's votes got into the mempool.",
            stats.votes,
        ),
        (
            "derivd_bridge_signatures_total",
            "Bridge signatures (withdrawals, valsets) this validator got into the mempool.",
            stats.signatures,
        ),
        (
            "derivd_bridge_rpc_errors_total",
            "EVM JSON-RPC calls of the bridge watcher that failed.",
            stats.rpc_errors,
        ),
    ):
        family = counter(name, doc)
        family.add_sample(family.name, {"chain_id": chain_id}, value)
        families.append(family)
    return families


class NodeCollector(Collector):
    def __init__(
        self,
        namespace: str,
        chain_id: str,
        consensus: ConsensusService,
        mempool: Mempool,
        stats: ChainStats,
        switch: Switch | None = None,
        blocksync: BlockSync | None = None,
        app: ExchangeApp | None = None,
        *,
        reactor: ConsensusReactor | None = None,
        validator_address: bytes | None = None,
        feeder: FeederStats | None = None,
        watcher: WatcherStats | None = None,
    ):
        self.reactor = reactor
        self.validator_address = validator_address
        self.feeder = feeder
        self.watcher = watcher
        self.switch = switch
        self.blocksync = blocksync
        self.app = app
        self.ns = namespace
        self.chain_id = chain_id
        self.consensus = consensus
        self.mempool = mempool
        self.stats = stats
        self.open_interest = OpenInterest(app.committed.iterate(schema.APP_POSITION_PREFIX)) if app else None

    def _gauge(self, subsystem: str, name: str, doc: str, value: float) -> GaugeMetricFamily:
        family = GaugeMetricFamily(f"{self.ns}_{subsystem}_{name}", doc, labels=["chain_id"])
        family.add_metric([self.chain_id], value)
        return family

    def _counter(self, subsystem: str, name: str, doc: str, value: float) -> Metric:
        family = counter(f"{self.ns}_{subsystem}_{name}", doc)
        family.add_sample(family.name, {"chain_id": self.chain_id}, value)
        return family

    def collect(self) -> Iterator[Metric]:
        machine = self.consensus.machine
        state = machine.state
        s = self.stats
        yield self._gauge("consensus", "height", "Height of the chain.", machine.height)
        yield self._gauge("consensus", "latest_block_height", "Latest block height.", s.height)
        yield self._gauge("consensus", "rounds", "Number of rounds.", machine.round)
        yield self._gauge("consensus", "validators", "Number of validators.", len(state.validators))
        yield self._gauge(
            "consensus", "validators_power", "Total power of all validators.", state.validators.total_power
        )
        yield self._gauge("consensus", "num_txs", "Number of transactions in the latest block.", s.num_txs)
        yield self._gauge("consensus", "total_txs", "Total number of transactions.", s.total_txs)
        yield self._gauge("consensus", "block_size_bytes", "Size of the latest block.", s.block_size_bytes)
        yield self._gauge("mempool", "size", "Number of uncommitted transactions.", len(self.mempool))
        yield self._gauge(
            "mempool", "size_bytes", "Total size of the mempool in bytes.", self.mempool.size_bytes
        )
        yield from self._validators(state.validators)
        ms = self.mempool.stats
        yield self._counter("mempool", "failed_txs", "Transactions that failed check_tx.", ms.failed_txs)
        yield self._counter(
            "mempool", "rejected_txs", "Transactions rejected by the mempool.", ms.rejected_txs
        )
        yield self._counter("mempool", "evicted_txs", "Transactions evicted on recheck.", ms.evicted_txs)
        yield self._counter("mempool", "recheck_times", "Times the mempool rechecked.", ms.recheck_times)
        if self.switch is not None:
            yield from self._p2p(self.switch)
        if self.reactor is not None:
            yield self._counter(
                "consensus",
                "compact_blocks_rebuilt_total",
                "Proposal blocks rebuilt from their compact form.",
                self.reactor.compact_rebuilt,
            )
            yield self._counter(
                "consensus",
                "compact_block_txs_fetched_total",
                "Transactions of compact blocks fetched from peers (not in the mempool).",
                self.reactor.compact_fetched_txs,
            )
        if self.app is not None:
            yield from self._risk(self.app)
            yield self._funding_rates(self.app)
            yield from self._oracle(self.app)
            yield from self._options(self.app)
        yield from self._exchange_counts()
        if self.feeder is not None:
            yield from self._feeder(self.feeder)
        if self.app is not None:
            yield from bridge_chain_metrics(self.chain_id, self.app.committed)
        if self.watcher is not None:
            yield from watcher_metrics(self.chain_id, self.watcher)
        if self.blocksync is not None:
            yield self._gauge(
                "blocksync", "syncing", "Whether the node is block syncing.", int(self.blocksync.syncing)
            )
            yield self._gauge(
                "blocksync",
                "latest_block_height",
                "Height reached by block sync.",
                self.blocksync.state.last_block_height,
            )

    def _validators(self, validators: ValidatorSet) -> Iterator[Metric]:
        """CometBFT's validator metrics: who is missing from the last commit or named by the last
        block's evidence, and this node's validator (when it has one)."""
        s = self.stats
        for name, doc, value in (
            ("missing_validators", "Validators missing from the last block's commit.", s.missing_validators),
            ("missing_validators_power", "Power of the missing validators.", s.missing_validators_power),
            ("byzantine_validators", "Validators the last block's evidence names.", s.byzantine_validators),
            (
                "byzantine_validators_power",
                "Power of the byzantine validators.",
                s.byzantine_validators_power,
            ),
        ):
            yield self._gauge("consensus", name, doc, value)
        if self.validator_address is None:
            return
        labels = {"chain_id": self.chain_id, "validator_address": self.validator_address.hex().upper()}
        member = validators.get(self.validator_address)
        for name, doc, value in (
            (
                "validator_last_signed_height",
                "Last height this validator signed.",
                s.validator_last_signed_height,
            ),
            (
                "validator_missed_blocks",
                "Commits since start without this validator.",
                s.validator_missed_blocks,
            ),
            ("validator_power", "This validator's voting power.", member.power if member is not None else 0),
        ):
            family = Metric(f"{self.ns}_consensus_{name}", doc, "gauge")
            family.add_sample(family.name, labels, value)
            yield family

    def _oracle(self, app: ExchangeApp) -> Iterator[Metric]:
        """Per market: blocks since the oracle price was set, and whether it is stale."""
        state, height = app.committed, app.info().last_block_height
        params = load_params(state)
        age = GaugeMetricFamily(
            "derivd_oracle_price_age_blocks",
            "Blocks since the market's oracle price was set.",
            labels=["chain_id", "market"],
        )
        stale = GaugeMetricFamily(
            "derivd_oracle_stale",
            "1 if the market's oracle price is stale at the next height.",
            labels=["chain_id", "market"],
        )
        for market in load_markets(state):
            stored = load_price(state, market.market_id)
            if stored is not None:
                age.add_metric([self.chain_id, market.ticker], height - stored.updated_height)
                stale.add_metric([self.chain_id, market.ticker], int(is_stale(stored, height + 1, params)))
        yield age
        yield stale

    def _options(self, app: ExchangeApp) -> Iterator[Metric]:
        """Per option series: its mark (subticks) and delta; per listed (underlying, expiry): the
        chain's implied volatility and the blocks since it was set."""
        state, height = app.committed, app.info().last_block_height
        markets = load_markets(state)
        by_id = {market.market_id: market for market in markets}
        mark_price = GaugeMetricFamily(
            "derivd_option_mark_price", "An option series' mark, in subticks.", labels=["chain_id", "market"]
        )
        delta = GaugeMetricFamily(
            "derivd_option_delta",
            "An option series' delta at its mark (at expiry: 0, 1 or -1).",
            labels=["chain_id", "market"],
        )
        for market in markets:
            terms = market.option
            mark = None if terms is None else load_mark(state, market.market_id)
            if terms is None or mark is None:
                continue
            mark_price.add_metric([self.chain_id, market.ticker], mark.price)
            quote = mark_quote(terms, mark, load_option_params(state).rate_ppm)
            delta.add_metric([self.chain_id, market.ticker], quote.delta / SCALE)
        vol = GaugeMetricFamily(
            "derivd_implied_vol_ppm",
            "The chain's implied volatility of an underlying and expiry, in ppm.",
            labels=["chain_id", "underlying", "expiry"],
        )
        vol_age = GaugeMetricFamily(
            "derivd_implied_vol_age_blocks",
            "Blocks since the implied volatility was set.",
            labels=["chain_id", "underlying", "expiry"],
        )
        for underlying, expiry in listed_expiries(state):
            stored = load_vol(state, underlying, expiry)
            if stored is None or underlying not in by_id:
                continue
            labels = [self.chain_id, by_id[underlying].ticker, format_rfc3339(expiry)]
            vol.add_metric(labels, stored.vol_ppm)
            vol_age.add_metric(labels, height - stored.updated_height)
        yield mark_price
        yield delta
        yield vol
        yield vol_age

    def _exchange_counts(self) -> Iterator[Metric]:
        for kind, (name, doc) in EXCHANGE_COUNTED.items():
            family = counter(f"derivd_{name}", doc)
            for (event_type, market), value in sorted(self.stats.exchange.items()):
                if event_type == kind:
                    family.add_sample(family.name, {"chain_id": self.chain_id, "market": market}, value)
            yield family

    def _feeder(self, feeder: FeederStats) -> Iterator[Metric]:
        for name, doc, value in (
            ("price_feeder_votes_total", "Oracle votes the price feeder got into the mempool.", feeder.votes),
            ("price_feeder_refused_total", "Oracle votes the mempool turned away.", feeder.refused),
            ("price_feeder_source_errors_total", "Blocks the price source failed for.", feeder.source_errors),
        ):
            family = counter(f"derivd_{name}", doc)
            family.add_sample(family.name, {"chain_id": self.chain_id}, value)
            yield family

    def _risk(self, app: ExchangeApp) -> Iterator[Metric]:
        """The exchange's risk counters (`execution.risk.liquidation.RiskStats` and the app's count of
        fired triggers), named as the exchange's own metrics: `derivd_*`."""
        risk = app.risk_stats
        for name, doc, value in (
            ("liquidations_total", "Accounts liquidated (liquidation steps).", risk.liquidations),
            ("deleveragings_total", "Accounts deleveraged against opposite positions.", risk.deleveragings),
            ("insurance_takeovers_total", "Positions taken over by the insurance fund.", risk.takeovers),
            ("liquidation_fills_total", "Book fills of liquidation orders.", risk.liquidation_fills),
            ("triggered_orders_total", "Stop-loss and take-profit orders fired.", app.triggered_orders_total),
        ):
            family = counter(f"derivd_{name}", doc)
            family.add_sample(family.name, {"chain_id": self.chain_id}, value)
            yield family
        fund = GaugeMetricFamily(
            "derivd_insurance_fund_balance", "Insurance fund balance (quote quantums).", labels=["chain_id"]
        )
        fund.add_metric([self.chain_id], risk.insurance_fund_balance)
        yield fund
        yield from insurance_fund_metrics(self.chain_id, app.insurance_fund_health())
        queue = GaugeMetricFamily(
            "derivd_liquidation_queue_size",
            "Accounts the last liquidation pass left to check first in the next block (over the "
            "per-block cap, or changed by the pass).",
            labels=["chain_id"],
        )
        queue.add_metric([self.chain_id], app.liquidation_queue_size())
        yield queue
        interest = GaugeMetricFamily(
            "derivd_open_interest",
            "Open interest: the sum of long position sizes (base quantums).",
            labels=["chain_id", "market"],
        )
        by_market = self.open_interest.by_market if self.open_interest is not None else {}
        for market in app.books.markets():
            interest.add_metric([self.chain_id, market.ticker], by_market.get(market.market_id, 0))
        yield interest

    def _funding_rates(self, app: ExchangeApp) -> Metric:
        """`derivd_funding_rate_ppm{market}`: the 8-hour rate of each market's last funding tick."""
        family = GaugeMetricFamily(
            "derivd_funding_rate_ppm",
            "Funding rate of the last funding tick (ppm per funding rate period, 8 h by default; a tick pays "
            "interval/period of it; > 0: longs pay shorts).",
            labels=["chain_id", "market"],
        )
        for ticker, rate in app.funding_rates().items():
            family.add_metric([self.chain_id, ticker], rate)
        return family

    def _p2p(self, switch: Switch) -> Iterator[Metric]:
        yield self._gauge("p2p", "peers", "Number of connected peers.", switch.num_peers)
        received = counter(f"{self.ns}_p2p_peer_receive_bytes_total", "Bytes received from a peer.")
        sent = counter(f"{self.ns}_p2p_peer_send_bytes_total", "Bytes sent to a peer.")
        pending = GaugeMetricFamily(
            f"{self.ns}_p2p_peer_pending_send_bytes",
            "Bytes queued for a peer.",
            labels=["chain_id", "peer_id"],
        )
        for peer in switch.peers():
            for channel, count in sorted(peer.traffic.received_by_channel.items()):
                received.add_sample(
                    received.name,
                    {"chain_id": self.chain_id, "peer_id": peer.id, "chID": f"{channel:#x}"},
                    count,
                )
            for channel, count in sorted(peer.traffic.sent_by_channel.items()):
                sent.add_sample(
                    sent.name, {"chain_id": self.chain_id, "peer_id": peer.id, "chID": f"{channel:#x}"}, count
                )
            pending.add_metric([self.chain_id, peer.id], peer.pending_send_bytes)
        yield received
        yield sent
        yield pending
        stats = switch.stats
        for name, doc, value in (
            (
                "p2p_inbound_connections_total",
                "TCP connections accepted, before any check.",
                stats.inbound_connections,
            ),
            (
                "p2p_handshakes_evicted_total",
                "Inbound handshakes cut short to give their slot to a newer connection.",
                stats.handshakes_evicted,
            ),
            (
                "p2p_handshake_failures_total",
                "Handshakes that failed or timed out.",
                stats.handshake_failures,
            ),
            ("p2p_dial_failures_total", "Outbound dials that failed.", stats.dial_failures),
            (
                "p2p_refused_connections_total",
                "Connections hung up on after the handshake (incompatible, limits, duplicates, banned).",
                stats.refused + stats.refused_banned,
            ),
        ):
            family = counter(f"derivd_{name}", doc)
            family.add_sample(family.name, {"chain_id": self.chain_id}, value)
            yield family
        handshakes = GaugeMetricFamily(
            "derivd_p2p_inbound_handshakes", "Inbound handshakes in progress.", labels=["chain_id"]
        )
        handshakes.add_metric([self.chain_id], sum(switch.inbound_handshakes().values()))
        yield handshakes


STREAM_DELIVERY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class NodeMetrics:
    """The registry and the commit listener that keeps ChainStats and the interval histogram."""

    def __init__(
        self,
        namespace: str,
        chain_id: str,
        consensus: ConsensusService,
        mempool: Mempool,
        switch: Switch | None = None,
        blocksync: BlockSync | None = None,
        app: ExchangeApp | None = None,
        *,
        reactor: ConsensusReactor | None = None,
        validator_address: bytes | None = None,
        feeder: FeederStats | None = None,
        watcher: WatcherStats | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.stats = ChainStats()
        self.validator_address = validator_address
        self._signers: ValidatorSet | None = None
        self.app = app
        self.collector = NodeCollector(
            namespace,
            chain_id,
            consensus,
            mempool,
            self.stats,
            switch,
            blocksync,
            app,
            reactor=reactor,
            validator_address=validator_address,
            feeder=feeder,
            watcher=watcher,
        )
        self.registry.register(self.collector)
        ProcessCollector(
            registry=self.registry
        )  # process_cpu_seconds_total, process_resident_memory_bytes...

        def histogram(subsystem: str, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            family = Histogram(
                name,
                doc,
                ["chain_id"],
                namespace=namespace,
                subsystem=subsystem,
                buckets=buckets,
                registry=self.registry,
            )
            return family.labels(chain_id=chain_id)

        self.block_interval = histogram(
            "consensus",
            "block_interval_seconds",
            "Time between this and the last block.",
            BLOCK_INTERVAL_BUCKETS,
        )
        self.block_processing = histogram(
            "state",
            "block_processing_time",
            "Time spent processing FinalizeBlock (milliseconds).",
            BLOCK_PROCESSING_BUCKETS_MS,
        )
        self.stream_delivery = histogram(
            "rpc",
            "stream_delivery_seconds",
            "From a block's market-data stream messages being queued to each one's send to its "
            "WebSocket client completing.",
            STREAM_DELIVERY_BUCKETS,
        )

    def on_commit(self, block: Block, block_id: BlockID, results: BlockResults, state: ChainState) -> None:
        s = self.stats
        if self.app is not None and self.collector.open_interest is not None:
            self.collector.open_interest.add(
                self.app.committed.last_changes_under(schema.APP_POSITION_PREFIX)
            )
        if self._signers is not None:  # the validators of the height the block's last commit signs
            s.missing_validators, s.missing_validators_power, mine = commit_signing(
                block.last_commit, self._signers, self.validator_address
            )
            if mine:
                s.validator_last_signed_height = block.height - 1
            elif mine is False:
                s.validator_missed_blocks += 1
        self._signers = state.last_validators
        evidence = decode_evidence_list(block.evidence)
        s.byzantine_validators = len(evidence)
        s.byzantine_validators_power = sum(e.validator_power for e in evidence)
        counts = s.exchange
        for event in chain.from_iterable((*(r.events for r in results.tx_results), results.finalize.events)):
            if event.type in EXCHANGE_COUNTED:
                key = (event.type, event.attribute("market") or "")
                counts[key] = counts.get(key, 0) + 1
        if s.last_block_time:
            self.block_interval.observe(max(0, block.header.time - s.last_block_time) / 1e9)
        s.last_block_time = block.header.time
        s.height = block.height
        s.num_txs = len(block.txs)
        s.total_txs += len(block.txs)
        s.block_size_bytes = len(block.encode())

    def asgi_app(self) -> Starlette:
        """The /metrics endpoint."""

        async def scrape(request: Request) -> Response:
            return Response(exposition(self.registry), media_type=CONTENT_TYPE_LATEST)

        return Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
