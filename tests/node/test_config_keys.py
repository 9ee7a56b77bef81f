"""Every key `derivd init` writes has an effect a test observes: `KEY_TESTS` names, for each key of
the template, the tests that see it at work (a test fails if a key is missing from the table or
the table names a test that does not exist). Below it, the tests of the keys that once were
accepted and ignored: `create_empty_blocks` and `create_empty_blocks_interval` (the sans-io
machine, then a real core under trio's virtual clock), `double_sign_check_height` (with the file
keys and `max_header_bytes`, on a real `derivd` process), `flush_throttle_timeout`,
`allow_duplicate_ip`, `seed_mode`, `[mempool] broadcast`, `[rpc] max_header_bytes` and
`[instrumentation] max_open_connections`, and the mapping of the consensus, mempool and p2p keys
onto the records the components take."""

from __future__ import annotations

import ast
import base64
import json
import random
import time
import tomllib
from collections import deque
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from consensus.app import CheckTxKind, CheckTxResult, InitChainRequest, ValidatorUpdate
from consensus.doublesign import recent_signature
from consensus.machine import (
    BlockPartEvent,
    CommittedEvent,
    ConsensusMachine,
    Decide,
    Effect,
    Event,
    ProposalEvent,
    ScheduleTimeout,
    SignProposal,
    SignVote,
    Step,
    TimeoutConfig,
    TimeoutEvent,
    TxsAvailableEvent,
    VoteEvent,
)
from consensus.mempool import Mempool, MempoolConfig
from consensus.mempool_reactor import MempoolReactor
from consensus.privval import FilePrivValidator, LastSignState
from consensus.state import ChainState, ConsensusParams
from consensus.statesync import StateSync
from consensus.types import Block, BlockIDFlag, Commit
from consensus.wal import WAL
from execution.app import ExchangeApp
from execution.tx import Transfer, build_tx
from genesis.genesis import load_genesis
from node.config import Config, ConfigError, OracleConfig, config_to_toml, load_config, write_config
from node.keystore import KeyStore
from node.node import (
    Core,
    NodeStartError,
    _event_index,
    build_core,
    check_double_sign_risk,
    exchange_app,
    mempool_config,
    metrics_app,
    p2p_settings,
    start_server,
    timeout_config,
)
from node.pricefeed import HttpSource, PriceSourceError
from p2p.addrbook import AddressBook
from p2p.base import MEMPOOL_CHANNEL, PEX_CHANNEL, STATESYNC_CHUNK_CHANNEL
from p2p.pex import PexAddrs, PexReactor, PexRequest, decode_pex_message, encode_pex_message
from primitives import codec
from primitives.batch_verify import BatchVerifier
from primitives.files import OSFile
from primitives.hashing import merkle_root, sha256
from primitives.keys import Address, PrivateKey
from storage.db import Database
from storage.snapshot import Restore
from storage.statetree import StateTree
from tests.consensus.fakes import FakePeer
from tests.consensus.harness import GENESIS_TIME, ToyApp, keys, make_genesis
from tests.consensus.test_statesync import Source, Wire, _connect, _tree
from tests.node.e2e import NodeProcess, RPCFailure, make_chain, run_cli
from tests.node.test_pricefeed import _feeder, _registry
from tests.p2p.helpers import connected, make_node, running, wait_until
from tests.p2p.test_connection import LOW, VOTE, connection
from tests.p2p.test_pex import OWN, FakeHost, addr, fake_peer

REPO = Path(__file__).resolve().parents[2]

# -- the table -------------------------------------------------------------------------------------

C = "tests/node/test_config.py::"
K = "tests/node/test_config_keys.py::"
E1 = "tests/node/test_e2e_single.py::"
EN = "tests/node/test_e2e_network.py::"
RH = "tests/node/test_rpc_http.py::"
WS = "tests/node/test_websocket.py::"
PF = "tests/node/test_pricefeed.py::"
BW = "tests/node/test_bridge_watcher.py::"
SW = "tests/p2p/test_switch.py::"
PX = "tests/p2p/test_pex.py::"
PC = "tests/p2p/test_connection.py::"
MP = "tests/consensus/test_mempool.py::"
RE = "tests/consensus/test_reactors.py::"
MA = "tests/consensus/test_machine.py::"
ST = "tests/consensus/test_machine_steps.py::"
SS = "tests/consensus/test_statesync.py::"
LI = "tests/consensus/test_light.py::"
XQ = "tests/execution/test_query.py::"

REAL_NODE = K + "test_a_real_node_honours_its_file_keys_and_refuses_to_start_after_recent_signing"
TIMEOUTS = K + "test_each_consensus_timing_key_reaches_the_machine"
MEMPOOL = K + "test_each_mempool_key_reaches_the_mempool"
ADMISSION = K + "test_the_admission_keys_reach_the_application"
P2P = K + "test_each_p2p_key_reaches_the_switch"
BAD_VALUE = C + "test_bad_value_gives_one_line_error"

KEY_TESTS: dict[str, tuple[str, ...]] = {
    # -- base keys
    "moniker": (REAL_NODE,),
    "db_backend": (BAD_VALUE,),  # the only effect: anything but LevelDB is refused
    "db_dir": (REAL_NODE,),
    "log_level": (E1 + "test_start_takes_a_log_level_flag",),
    "log_format": (REAL_NODE,),
    "genesis_file": (REAL_NODE,),
    "priv_validator_key_file": (REAL_NODE,),
    "priv_validator_state_file": (REAL_NODE,),
    "node_key_file": (REAL_NODE,),
    # -- [rpc]
    "rpc.laddr": (E1 + "test_blocks_advance_and_status_has_cometbft_shape", REAL_NODE),
    "rpc.websocket_laddr": ("tests/node/test_e2e_streams.py::test_book_trades_user_and_oracle_streams",),
    "rpc.cors_allowed_origins": (RH + "test_cors_follows_the_config", REAL_NODE),
    "rpc.cors_allowed_methods": (RH + "test_cors_follows_the_config", REAL_NODE),
    "rpc.cors_allowed_headers": (REAL_NODE,),
    "rpc.max_open_connections": (RH + "test_open_connections_are_capped",),
    "rpc.max_subscription_clients": (WS + "test_matching_limits_and_a_slow_client_dropped",),
    "rpc.max_subscriptions_per_client": (
        WS + "test_matching_limits_and_a_slow_client_dropped",
        E1 + "test_websocket_subscriptions",
    ),
    "rpc.experimental_websocket_write_buffer_size": (WS + "test_matching_limits_and_a_slow_client_dropped",),
    "rpc.timeout_broadcast_tx_commit": (REAL_NODE,),
    "rpc.max_request_batch_size": (RH + "test_body_limit_and_batches", REAL_NODE),
    "rpc.max_body_bytes": (RH + "test_body_limit_and_batches", REAL_NODE),
    "rpc.max_header_bytes": (K + "test_request_heads_over_max_header_bytes_get_431", REAL_NODE),
    # -- [p2p]: each reaches the switch's settings (P2P), and does there what the test names
    "p2p.laddr": (P2P, SW + "test_listening_on_a_busy_port_fails_clearly"),
    "p2p.external_address": (P2P, K + "test_external_address_is_what_the_node_advertises"),
    "p2p.seeds": (P2P, K + "test_a_seed_node_hands_out_addresses_and_keeps_no_peers"),
    "p2p.persistent_peers": (P2P, SW + "test_persistent_peer_is_redialed_after_a_restart"),
    "p2p.addr_book_file": (P2P, PX + "test_pex_spreads_an_address_from_a_to_c_through_b"),
    "p2p.max_num_inbound_peers": (P2P, SW + "test_inbound_limit_is_enforced"),
    "p2p.max_num_outbound_peers": (P2P, PX + "test_dials_from_the_book_up_to_the_outbound_target"),
    "p2p.unconditional_peer_ids": (P2P, SW + "test_unconditional_peer_passes_the_inbound_limit"),
    "p2p.persistent_peers_max_dial_period": (
        P2P,
        K + "test_persistent_peers_max_dial_period_caps_the_redial_pause",
    ),
    "p2p.flush_throttle_timeout": (
        P2P,
        K + "test_the_flush_throttle_gathers_queued_messages_into_one_write",
        K + "test_the_switch_gives_each_connection_its_flush_throttle",
    ),
    "p2p.max_packet_msg_payload_size": (P2P, PC + "test_packetization_round_trip"),
    "p2p.send_rate": (P2P, PC + "test_send_rate_limit"),
    "p2p.recv_rate": (P2P, K + "test_recv_rate_limits_what_a_connection_reads"),
    "p2p.pex": (P2P, PX + "test_pex_spreads_an_address_from_a_to_c_through_b"),
    "p2p.seed_mode": (
        P2P,
        K + "test_a_seed_answers_an_inbound_peer_once_and_lets_crawled_peers_go",
        K + "test_a_seed_node_hands_out_addresses_and_keeps_no_peers",
        K + "test_seed_mode_needs_pex",
    ),
    "p2p.private_peer_ids": (P2P, PX + "test_own_private_and_requester_addresses_are_not_shared"),
    "p2p.allow_duplicate_ip": (
        P2P,
        K + "test_a_second_peer_from_one_ip_is_refused_unless_duplicates_are_allowed",
    ),
    "p2p.handshake_timeout": (P2P, K + "test_handshake_timeout_hangs_up_on_a_silent_connection"),
    "p2p.dial_timeout": (P2P, K + "test_dial_timeout_bounds_a_dial"),
    # -- [mempool]: each reaches the mempool's config (MEMPOOL), and does there what the test names
    "mempool.size": (MEMPOOL, MP + "test_full_by_count"),
    "mempool.max_txs_bytes": (MEMPOOL, MP + "test_full_by_bytes"),
    "mempool.cache_size": (MEMPOOL, MP + "test_cache_forgets_the_least_recently_seen_beyond_cache_size"),
    "mempool.keep-invalid-txs-in-cache": (MEMPOOL, MP + "test_failed_tx_stays_in_the_cache_when_configured"),
    "mempool.max_tx_bytes": (MEMPOOL, MP + "test_too_large_tx_never_reaches_the_application"),
    "mempool.recheck": (MEMPOOL, MP + "test_no_recheck_when_disabled_or_nothing_is_left"),
    "mempool.broadcast": (MEMPOOL, K + "test_without_broadcast_the_mempool_sends_no_tx_but_takes_peers_txs"),
    "mempool.min_fee": (
        ADMISSION,
        "tests/execution/test_mempool.py::test_a_node_may_ask_more_than_the_chain_minimum",
    ),
    "mempool.max_txs_per_sender": (
        ADMISSION,
        "tests/execution/test_mempool.py::test_pending_txs_per_sender_are_capped",
    ),
    # -- [statesync]
    "statesync.enable": (EN + "test_a_new_node_joins_by_state_sync",),
    "statesync.rpc_servers": (EN + "test_a_new_node_joins_by_state_sync",),
    "statesync.trust_height": (EN + "test_a_new_node_joins_by_state_sync",),
    "statesync.trust_hash": (EN + "test_a_new_node_joins_by_state_sync",),
    "statesync.trust_period": (LI + "test_time_rules",),
    "statesync.discovery_time": (
        SS + "test_a_snapshot_is_fetched_and_a_liar_banned",
        EN + "test_a_new_node_joins_by_state_sync",
    ),
    "statesync.chunk_request_timeout": (
        K + "test_a_chunk_not_answered_within_chunk_request_timeout_is_asked_again",
    ),
    # -- [blocksync]
    "blocksync.version": (BAD_VALUE,),  # the only effect: anything but v0 is refused
    # -- [consensus]
    "consensus.wal_file": (REAL_NODE,),
    "consensus.timeout_propose": (TIMEOUTS, MA + "test_a_timeout_grows_by_its_delta_each_round"),
    "consensus.timeout_propose_delta": (TIMEOUTS, MA + "test_a_timeout_grows_by_its_delta_each_round"),
    "consensus.timeout_prevote": (TIMEOUTS, MA + "test_a_timeout_grows_by_its_delta_each_round"),
    "consensus.timeout_prevote_delta": (TIMEOUTS, MA + "test_a_timeout_grows_by_its_delta_each_round"),
    "consensus.timeout_precommit": (TIMEOUTS, MA + "test_a_timeout_grows_by_its_delta_each_round"),
    "consensus.timeout_precommit_delta": (TIMEOUTS, MA + "test_a_timeout_grows_by_its_delta_each_round"),
    "consensus.timeout_commit": (TIMEOUTS, MA + "test_the_commit_timeout_counts_from_the_commit_time"),
    "consensus.double_sign_check_height": (
        K + "test_the_double_sign_check_finds_the_validators_signature_in_recent_commits",
        REAL_NODE,
    ),
    "consensus.skip_timeout_commit": (
        TIMEOUTS,
        ST + "test_with_skip_timeout_commit_the_next_height_starts_when_all_precommits_are_in",
    ),
    "consensus.create_empty_blocks": (
        TIMEOUTS,
        K + "test_without_empty_blocks_the_machine_waits_for_txs_but_makes_first_and_proof_blocks",
        K + "test_news_during_timeout_commit_is_kept_for_round_zero",
        K + "test_by_default_rounds_never_wait",
        K + "test_a_core_without_empty_blocks_commits_only_when_a_tx_comes",
        K + "test_the_mempool_reports_txs_once_a_height_for_the_next_block",
    ),
    "consensus.create_empty_blocks_interval": (
        TIMEOUTS,
        K + "test_create_empty_blocks_interval_makes_an_empty_block_after_the_interval",
    ),
    "consensus.peer_gossip_sleep_duration": (
        RE + "test_a_lagging_peer_gets_the_decided_block_of_its_height_at_most_once_per_interval",
    ),
    "consensus.compact_blocks": (
        RE + "test_own_proposal_goes_as_a_compact_block_not_as_parts",
        RE + "test_own_proposal_and_votes_go_to_the_peers_that_can_use_them",
    ),
    # -- [storage]
    "storage.retain_blocks": (
        K + "test_retain_blocks_prunes_all_but_the_last_blocks_and_indexer_null_builds_no_index",
    ),
    "storage.state_versions": (
        XQ + "test_pruning_bounds_the_stored_tree",
        XQ + "test_key_query_errors_and_pruned_heights",
    ),
    "storage.snapshot_interval": (
        XQ + "test_snapshots_are_taken_kept_and_restore_the_state",
        EN + "test_a_new_node_joins_by_state_sync",
    ),
    "storage.snapshot_keep_recent": (XQ + "test_snapshots_are_taken_kept_and_restore_the_state",),
    "storage.compact": (
        "tests/node/test_compaction.py::test_every_interval_compacts_the_pruned_ranges_once_at_a_time",
    ),
    "storage.compaction_interval": (
        "tests/node/test_compaction.py::test_every_interval_compacts_the_pruned_ranges_once_at_a_time",
    ),
    # -- [tx_index]
    "tx_index.indexer": (
        K + "test_retain_blocks_prunes_all_but_the_last_blocks_and_indexer_null_builds_no_index",
        E1 + "test_tx_search_and_block_search",
    ),
    # -- [instrumentation]
    "instrumentation.prometheus": (E1 + "test_metrics_are_exported",),
    "instrumentation.prometheus_listen_addr": (E1 + "test_metrics_are_exported",),
    "instrumentation.max_open_connections": (
        K + "test_the_metrics_endpoint_serves_at_most_max_open_connections_requests_at_once",
    ),
    "instrumentation.namespace": (E1 + "test_metrics_are_exported",),  # the default, cometbft_
    # -- [oracle]
    "oracle.enabled": (PF + "test_feeder_from_config",),
    "oracle.source": (PF + "test_feeder_from_config", PF + "test_build_source_kinds"),
    "oracle.file": (PF + "test_feeder_from_config", PF + "test_file_source_reads_human_prices"),
    "oracle.url": (
        PF + "test_http_source_reads_field_paths",
        K + "test_oracle_timeout_bounds_a_price_request",
    ),
    "oracle.fields": (PF + "test_feeder_from_config", PF + "test_http_source_reads_field_paths"),
    "oracle.reload_interval": (PF + "test_file_source_picks_up_changes",),
    "oracle.timeout": (K + "test_oracle_timeout_bounds_a_price_request",),
    # -- [bridge]
    "bridge.enabled": (BW + "test_watcher_from_config_runs_only_where_it_can",),
    "bridge.evm_rpc": (
        BW + "test_watcher_from_config_runs_only_where_it_can",
        BW + "test_an_evm_node_that_is_not_there_costs_errors_then_votes_once_it_appears",
    ),
    "bridge.key_file": (
        BW + "test_watcher_from_config_runs_only_where_it_can",
        BW + "test_a_key_file_that_is_not_the_registered_key_signs_nothing_and_says_how_to_fix",
    ),
    "bridge.poll_interval": (
        BW + "test_watcher_from_config_runs_only_where_it_can",
        BW + "test_backoff_doubles_up_to_its_cap",
    ),
    "bridge.start_block": (
        BW + "test_watcher_from_config_runs_only_where_it_can",
        BW + "test_the_scan_starts_at_start_block_in_ranges_of_max_block_range",
    ),
    "bridge.max_block_range": (
        BW + "test_watcher_from_config_runs_only_where_it_can",
        BW + "test_the_scan_starts_at_start_block_in_ranges_of_max_block_range",
    ),
    # -- [execution]
    "execution.workers": (C + "test_execution_workers_are_a_count_or_auto",),
}
"""Each key of the template ("section.key", top-level keys bare) -> tests that observe its effect."""


# -- the table's own checks ------------------------------------------------------------------------


def template_keys() -> set[str]:
    """The keys `derivd init` writes, as "section.key" (top-level keys bare)."""
    doc = tomllib.loads(config_to_toml(Config.default(Path("/home"), "node0")))
    keys_: set[str] = set()
    for name, value in doc.items():
        if isinstance(value, dict):
            keys_.update(f"{name}.{key}" for key in value)
        else:
            keys_.add(name)
    return keys_


def test_init_writes_the_template_this_table_covers(tmp_path: Path) -> None:
    run_cli("init", "--home", str(tmp_path / "home"), "--chain-id", "keys")
    written = tomllib.loads((tmp_path / "home" / "config" / "config.toml").read_text())
    flat = {f"{t}.{k}" for t, v in written.items() if isinstance(v, dict) for k in v}
    flat |= {k for k, v in written.items() if not isinstance(v, dict)}
    assert flat == template_keys()


def test_every_template_key_names_tests_that_exist() -> None:
    keys_ = template_keys()
    assert sorted(keys_ - set(KEY_TESTS)) == [], "template keys with no test observing them"
    assert sorted(set(KEY_TESTS) - keys_) == [], "keys in the table that the template lacks"
    defined: dict[str, set[str]] = {}
    for key, node_ids in sorted(KEY_TESTS.items()):
        assert node_ids, f"{key}: no test"
        for node_id in node_ids:
            path, _, name = node_id.partition("::")
            if path not in defined:
                file = REPO / path
                assert file.is_file(), f"{key}: {path} does not exist"
                tree = ast.parse(file.read_text())
                defined[path] = {
                    n.name
                    for n in tree.body
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name.startswith("test")
                }
            assert name in defined[path], f"{key}: {node_id} is not a test function of {path}"


# -- create_empty_blocks on the sans-io machine ----------------------------------------------------

SECOND = 10**9
MS = 10**6


def changes_only_with_txs(state: ChainState, decide: Decide) -> ChainState:
    """The next state of an application whose app hash moves only when a block has transactions."""
    txs = list(decide.block.txs)
    app_hash = sha256(state.app_hash + merkle_root(txs)) if txs else state.app_hash
    return state.next_state(decide.block_id, decide.block.header, merkle_root([]), app_hash, [])


class Solo:
    """One validator's machine on a virtual clock: effects carried out at once, own messages fed
    back first; `run` goes on while there is input or a pending timeout, and stops when the
    machine waits on nothing but the mempool's news."""

    def __init__(self, tmp_path: Path, timeouts: TimeoutConfig) -> None:
        key = keys(1)[0]
        self.app = ToyApp()
        self.privval = FilePrivValidator(key, OSFile(tmp_path / "pv_state.json"), LastSignState())
        genesis = make_genesis([(key, 10)])
        self.machine = ConsensusMachine(
            genesis, key.address.raw, timeouts, self.app, BatchVerifier(workers=1).verify_batch
        )
        self.now = GENESIS_TIME
        self.queue: deque[Event] = deque()
        self.timeout: ScheduleTimeout | None = None
        self.decided: list[Decide] = []
        self.proposed_at: dict[int, int] = {}
        """height -> the local time its (last) proposal was made"""
        self.feed(CommittedEvent(genesis, None))

    def feed(self, event: Event) -> None:
        self.now += MS
        self.carry_out(self.machine.handle(event, self.now))

    def carry_out(self, effects: list[Effect]) -> None:
        chain_id = self.machine.state.chain_id
        for effect in effects:
            if isinstance(effect, SignVote):
                self.queue.append(VoteEvent(self.privval.sign_vote(chain_id, effect.vote)))
            elif isinstance(effect, SignProposal):
                proposal = self.privval.sign_proposal(chain_id, effect.proposal)
                self.proposed_at[proposal.height] = self.now
                self.queue.append(ProposalEvent(proposal))
                self.queue.extend(
                    BlockPartEvent(proposal.height, proposal.round, p) for p in effect.parts.parts()
                )
            elif isinstance(effect, ScheduleTimeout):
                self.timeout = effect
            elif isinstance(effect, Decide):
                self.decided.append(effect)
                state = changes_only_with_txs(self.machine.state, effect)
                self.queue.append(CommittedEvent(state, effect.commit, effect.block.header.app_hash))

    def step(self) -> bool:
        """Handle the next input, or fire the pending timeout; False if there is neither."""
        if self.queue:
            self.feed(self.queue.popleft())
        elif self.timeout is not None:
            timeout, self.timeout = self.timeout, None
            self.now += timeout.duration
            self.feed(TimeoutEvent(timeout.height, timeout.round, timeout.step))
        else:
            return False
        return True

    def run(self, max_steps: int = 1000) -> None:
        for _ in range(max_steps):
            if not self.step():
                return
        raise AssertionError(f"still busy after {max_steps} steps: it never waits")

    def heights_and_txs(self) -> list[tuple[int, int]]:
        return [(d.block.height, len(d.block.txs)) for d in self.decided]


NO_EMPTY = TimeoutConfig(commit=SECOND, create_empty_blocks=False)


def test_without_empty_blocks_the_machine_waits_for_txs_but_makes_first_and_proof_blocks(
    tmp_path: Path,
) -> None:
    solo = Solo(tmp_path, NO_EMPTY)
    solo.run()
    # the first block is made without transactions; it left the app hash as it was: height 2 waits
    assert solo.heights_and_txs() == [(1, 0)]
    machine = solo.machine
    assert (machine.height, machine.round, machine.step) == (2, 0, Step.NEW_ROUND)
    assert solo.timeout is None, "nothing scheduled: only transactions move it on"
    solo.feed(TxsAvailableEvent(1))  # stale news (an earlier height) is ignored
    solo.run()
    assert solo.heights_and_txs() == [(1, 0)]
    solo.app.pending = [b"tx-1"]
    solo.feed(TxsAvailableEvent(2))
    solo.run()
    # block 2 holds the tx and changes the app hash: block 3 carries the new hash (CometBFT's proof
    # block, empty); block 3 changed nothing, so height 4 waits
    assert solo.heights_and_txs() == [(1, 0), (2, 1), (3, 0)]
    assert (machine.height, machine.step) == (4, Step.NEW_ROUND)


def test_news_during_timeout_commit_is_kept_for_round_zero(tmp_path: Path) -> None:
    solo = Solo(tmp_path, NO_EMPTY)
    while not solo.decided:
        solo.step()
    solo.step()  # block 1's CommittedEvent: height 2 starts with its timeout_commit (NEW_HEIGHT)
    assert (solo.machine.height, solo.machine.step) == (2, Step.NEW_HEIGHT)
    assert solo.timeout is not None and solo.timeout.step == Step.NEW_HEIGHT
    solo.app.pending = [b"tx-1"]
    solo.feed(TxsAvailableEvent(2))
    assert solo.machine.step == Step.NEW_HEIGHT, "timeout_commit still runs its course"
    solo.run()  # the timer fires: round 0 proposes at once, without waiting in NEW_ROUND
    assert solo.heights_and_txs()[:2] == [(1, 0), (2, 1)]


def test_create_empty_blocks_interval_makes_an_empty_block_after_the_interval(tmp_path: Path) -> None:
    for create_empty_blocks in (True, False):  # CometBFT waits for txs in both cases
        home = tmp_path / str(create_empty_blocks)
        home.mkdir()
        timeouts = TimeoutConfig(
            commit=SECOND, create_empty_blocks=create_empty_blocks, create_empty_blocks_interval=7 * SECOND
        )
        solo = Solo(home, timeouts)
        while (solo.machine.height, solo.machine.step) != (2, Step.NEW_ROUND):
            assert solo.step()
        round_started = solo.now
        assert solo.timeout == ScheduleTimeout(2, 0, Step.NEW_ROUND, 7 * SECOND)
        while len(solo.decided) < 2:
            assert solo.step()
        assert solo.heights_and_txs() == [(1, 0), (2, 0)]
        assert solo.proposed_at[2] == round_started + 7 * SECOND + MS  # the timer, then one step


def test_by_default_rounds_never_wait(tmp_path: Path) -> None:
    solo = Solo(tmp_path, TimeoutConfig(commit=SECOND))
    with pytest.raises(AssertionError, match="never waits"):
        solo.run(max_steps=300)
    assert len(solo.decided) >= 5 and all(txs == 0 for _, txs in solo.heights_and_txs())


# -- create_empty_blocks in a real core (build_core: mempool, service, ExchangeApp) ---------------

ALICE = PrivateKey.from_seed(b"k" * 32)
CHAIN = "keys-chain"


def open_core(home: Path, timeouts: TimeoutConfig, retain_blocks: int = 0) -> tuple[Core, Database]:
    """A one-validator core over a fresh LevelDB: an exchange with a funded account and no
    markets (so an empty block leaves the app hash as it was)."""
    db = Database(home / "db")
    verifier = BatchVerifier(workers=1)
    privval = FilePrivValidator.generate(home / "pv_key.json", home / "pv_state.json")
    genesis = InitChainRequest(
        CHAIN,
        GENESIS_TIME,
        1,
        (ValidatorUpdate(privval.public_key.raw, 10),),
        json.dumps({"accounts": [{"address": str(ALICE.address), "balance": "1000000"}]}).encode(),
    )
    app = ExchangeApp(db, CHAIN, verifier)
    core = build_core(
        db,
        app,
        verifier,
        privval,
        WAL.open(home / "wal"),
        genesis,
        ConsensusParams(),
        timeouts,
        MempoolConfig(),
        retain_blocks,
    )
    return core, db


async def run_core_to(core: Core, height: int) -> None:
    """Run `core`'s consensus service until block `height` is committed, then stop it."""
    reached = trio.Event()
    core.executor.listeners.append(lambda block, *_: reached.set() if block.header.height == height else None)
    async with trio.open_nursery() as nursery:
        await nursery.start(core.service.run)
        with trio.fail_after(60):  # virtual seconds: the commit listener wakes us
            await reached.wait()
        nursery.cancel_scope.cancel()


def transfer(core: Core) -> bytes:
    """A transfer whose nonce (a time in ms) is inside the window around the last block's time."""
    last = Block.decode(core.blocks.load_block(core.blocks.height) or b"")
    return build_tx(ALICE, CHAIN, last.header.time // MS + 1, [Transfer(Address(b"\x01" * 20), 5)])


async def test_a_core_without_empty_blocks_commits_only_when_a_tx_comes(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    timeouts = TimeoutConfig(propose=500 * MS, prevote=200 * MS, precommit=200 * MS, commit=100 * MS)
    core, db = open_core(tmp_path, replace(timeouts, create_empty_blocks=False))
    committed: list[tuple[int, int]] = []
    grew = trio.Event()

    def on_commit(block: Any, block_id: Any, results: Any, state: Any) -> None:
        nonlocal grew
        committed.append((block.header.height, len(block.txs)))
        grew.set()
        grew = trio.Event()

    core.executor.listeners.append(on_commit)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(core.service.run)
            # a virtual minute: a node making empty blocks would commit hundreds in it
            await trio.sleep(60)
            idle = list(committed)
            assert idle and all(txs == 0 for _, txs in idle) and len(idle) <= 2, idle
            assert core.mempool.check_tx(transfer(core)).ok
            with trio.fail_after(5):  # virtual seconds: the commit listener wakes us
                while not any(txs for _, txs in committed):
                    await grew.wait()
            await trio.sleep(60)  # another virtual minute: only a proof block may follow the tx's
            # the tx's block, then one proof block for the app hash it changed: nothing after
            assert committed[len(idle) :] == [(len(idle) + 1, 1), (len(idle) + 2, 0)]
            nursery.cancel_scope.cancel()
    finally:
        core.driver.wal.close()
        db.close()


# -- double_sign_check_height -------------------------------------------------------------------

FAST_CORE = TimeoutConfig(propose=500 * MS, prevote=200 * MS, precommit=200 * MS, commit=100 * MS)


async def test_the_double_sign_check_finds_the_validators_signature_in_recent_commits(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    core, db = open_core(tmp_path, FAST_CORE)
    try:
        await run_core_to(core, 3)
        assert core.driver.privval is not None
        own, other = core.driver.privval.address, keys(2)[1].address.raw
        found = recent_signature(core.blocks, own, 3, 2)
        assert found is not None and (found.height, found.round, found.flag) == (3, 0, BlockIDFlag.COMMIT)
        assert Commit.decode(core.blocks.load_seen_commit(3) or b"").signatures[0].validator_address == own
        assert recent_signature(core.blocks, other, 3, 10) is None
        assert recent_signature(core.blocks, own, 3, 0) is None, "0 skips the check"
        assert recent_signature(core.blocks, own, 6, 3) is None, "heights 4-6 are not stored: none found"
        assert recent_signature(core.blocks, own, 6, 4) is not None  # height 3 is the 4th back
        config = Config.default(tmp_path, "n")
        check_double_sign_risk(config, core.blocks, own, 3)  # the default, 0: no check
        strict = config.with_overrides(**{"consensus.double_sign_check_height": 2})
        check_double_sign_risk(strict, core.blocks, other, 3)
        with pytest.raises(
            NodeStartError, match=r"signed the commit of height 3 \(round 0\), one of the last 2"
        ):
            check_double_sign_risk(strict, core.blocks, own, 3)
    finally:
        core.driver.wal.close()
        db.close()


def rpc_checks(node: NodeProcess, url: str) -> None:
    """The [rpc] keys the test sets, observed over HTTP."""
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    allowed = httpx.options(url, headers=preflight | {"Access-Control-Request-Headers": "X-Trace"})
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    for refused in (
        preflight | {"Origin": "https://evil.example"},
        preflight | {"Access-Control-Request-Method": "PUT"},
        preflight | {"Access-Control-Request-Headers": "X-Other"},
    ):
        assert httpx.options(url, headers=refused).status_code == 400, refused
    call = {"jsonrpc": "2.0", "id": 1, "method": "health"}
    assert httpx.post(url, content=json.dumps([call] * 60)).status_code == 413  # 3000 bytes: over 2000
    over = httpx.post(url, json=[call] * 3).json()
    assert over["error"]["data"] == "batch of 3 exceeds 2"
    alice = KeyStore(node.chain.home).private_key("alice")
    tx = build_tx(alice, "e2e-chain", time.time_ns() // MS, [Transfer(Address(b"\x02" * 20), 5)])
    with pytest.raises(RPCFailure, match="timed out waiting for tx to be included in a block") as failure:
        node.rpc("broadcast_tx_commit", tx=base64.b64encode(tx).decode())
    assert f"ask `tx` with hash=0x{sha256(tx).hex().upper()}" in str(failure.value)  # it may be in


def test_a_real_node_honours_its_file_keys_and_refuses_to_start_after_recent_signing(tmp_path: Path) -> None:
    """One `derivd` process whose files all live elsewhere than the defaults (genesis, keys, sign
    state, database, WAL), with JSON logs, a moniker and a small header limit; stopped, then
    started again with `double_sign_check_height`: it refuses, in one line."""
    chain = make_chain(tmp_path, {"alice": 10**9})
    home = chain.home
    moves = {
        "genesis_file": ("config/genesis.json", "config/chain-genesis.json"),
        "priv_validator_key_file": ("config/priv_validator_key.json", "secrets/validator.json"),
        "priv_validator_state_file": ("data/priv_validator_state.json", "signstate/state.json"),
        "node_key_file": ("config/node_key.json", "secrets/node.json"),
    }
    for old, new in moves.values():
        (home / new).parent.mkdir(exist_ok=True)
        (home / old).rename(home / new)
    overrides: dict[str, object] = {key: new for key, (_, new) in moves.items()}
    overrides |= {
        "db_dir": "chaindata",
        "consensus.wal_file": "chaindata/consensus/log",
        "moniker": "relocated",
        "log_format": "json",
        "rpc.max_header_bytes": 4096,
        "rpc.cors_allowed_origins": ("https://app.example",),
        "rpc.cors_allowed_methods": ("POST",),
        "rpc.cors_allowed_headers": ("Content-Type", "X-Trace"),
        "rpc.max_body_bytes": 2000,
        "rpc.max_request_batch_size": 2,
        "rpc.timeout_broadcast_tx_commit": "1ms",
    }
    write_config(load_config(home).with_overrides(**overrides))
    node = NodeProcess(chain).start()
    try:
        node.wait_height(3)
        status = node.status()
        node_key = json.loads((home / "secrets" / "node.json").read_text())
        assert status["node_info"]["moniker"] == "relocated"
        assert status["node_info"]["network"] == load_genesis(home / "config" / "chain-genesis.json").chain_id
        validator = json.loads((home / "secrets" / "validator.json").read_text())
        assert status["validator_info"]["address"] == validator["address"]
        assert node_key["priv_key"]["type"] == "tendermint/PrivKeyEd25519"
        ok = httpx.get(f"{chain.rpc_url}/status", headers={"X-Pad": "a" * 2000}, timeout=10)
        assert ok.status_code == 200
        big = httpx.get(f"{chain.rpc_url}/status", headers={"X-Pad": "a" * 8000}, timeout=10)
        assert big.status_code == 431
        rpc_checks(node, chain.rpc_url)
        json_lines = [line for line in node.log().splitlines() if line.startswith("{")]
        assert any(json.loads(line).get("event", "").startswith("committed block") for line in json_lines)
    finally:
        assert node.stop() == 0
    assert (home / "chaindata" / "derivd.db").is_dir() and (
        home / "chaindata" / "consensus" / "log"
    ).is_file()
    signed = json.loads((home / "signstate" / "state.json").read_text())
    assert int(signed["height"]) >= 3
    for default in (
        "data/derivd.db",
        "data/cs.wal",
        "data/priv_validator_state.json",
        "config/node_key.json",
    ):
        assert not (home / default).exists(), f"{default} was used"

    write_config(load_config(home).with_overrides(**{"consensus.double_sign_check_height": 5}))
    refused = run_cli("start", "--home", str(home), check=False)
    assert refused.returncode == 1
    assert "Traceback" not in refused.stderr
    last = refused.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: this validator's key signed the commit of height "), last
    assert "double_sign_check_height = 5" in last


# -- [p2p] flush_throttle_timeout ----------------------------------------------------------------


async def test_the_flush_throttle_gathers_queued_messages_into_one_write(
    autojump_clock: trio.testing.MockClock,
) -> None:
    for throttle, writes in ((0.0, 3), (0.05, 1)):
        a_stream, b_stream = trio.testing.memory_stream_pair()
        a, _ = connection(a_stream, flush_throttle=throttle, ping_interval=0)
        b, received = connection(b_stream, ping_interval=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            start = trio.current_time()
            for message in (b"vote-1", b"vote-2", b"vote-3"):
                assert a.try_send(VOTE, message)
                await trio.sleep(0.01)  # virtual: the messages come 10 ms apart
            with trio.fail_after(1):  # virtual seconds
                while len(received) < 3:
                    await trio.sleep(0.001)  # virtual: poll the receiver
            arrived = trio.current_time() - start
            nursery.cancel_scope.cancel()
        assert a.writes == writes, throttle
        assert [m for _, m in received] == [b"vote-1", b"vote-2", b"vote-3"]
        if throttle:
            assert 0.05 <= arrived < 0.06  # the first message waited out the throttle
    # a full batch does not wait
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream, flush_throttle=10.0, ping_interval=0)
    b, received = connection(b_stream, ping_interval=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        start = trio.current_time()
        assert a.try_send(LOW, bytes(20_000))
        with trio.fail_after(1):  # virtual seconds, well below the 10 s throttle
            while not received:
                await trio.sleep(0.001)  # virtual: poll the receiver
        assert trio.current_time() - start < 1
        nursery.cancel_scope.cancel()


# -- [p2p] allow_duplicate_ip --------------------------------------------------------------------


@pytest.mark.parametrize("allow", [False, True])
async def test_a_second_peer_from_one_ip_is_refused_unless_duplicates_are_allowed(allow: bool) -> None:
    hub = make_node(allow_duplicate_ip=allow)
    async with running(hub):
        b = make_node(persistent_peers=(hub.address(),))
        c = make_node(persistent_peers=(hub.address(),))
        async with running(b):
            await wait_until(lambda: connected(hub, b))
            async with running(c):
                if allow:
                    await wait_until(lambda: connected(hub, c))
                else:
                    await wait_until(lambda: hub.switch.stats.refused >= 1)
                    assert hub.switch.peer(c.id) is None and hub.switch.num_peers == 1
    if allow:
        assert hub.switch.stats.refused == 0


# -- [p2p] seed_mode -----------------------------------------------------------------------------


def seed_reactor(host: FakeHost, seed_mode: bool) -> PexReactor:
    return PexReactor(
        AddressBook(None, OWN), host, rng=random.Random(7), request_interval=30, seed_mode=seed_mode
    )


async def test_a_seed_answers_an_inbound_peer_once_and_lets_crawled_peers_go(
    mock_clock: trio.testing.MockClock,
) -> None:
    for seed_mode in (True, False):
        host = FakeHost()
        pex = seed_reactor(host, seed_mode)
        pex.book.add(addr(9), "test")
        inbound, outbound, persistent = fake_peer(2), fake_peer(3, outbound=True), fake_peer(4)
        persistent.is_persistent = True
        for peer in (inbound, outbound, persistent):
            pex.add_peer(peer)
        pex.receive(PEX_CHANNEL, inbound, encode_pex_message(PexRequest()))
        pex.receive(PEX_CHANNEL, persistent, encode_pex_message(PexRequest()))
        pex.receive(PEX_CHANNEL, outbound, encode_pex_message(PexAddrs((addr(8),))))
        answered = [decode_pex_message(m) for c, m in inbound.sent if c == PEX_CHANNEL]
        assert any(isinstance(m, PexAddrs) and addr(9) in m.addresses for m in answered)
        assert pex.book.get(addr(8).node_id) is not None
        if seed_mode:
            assert host.let_go == [
                (inbound.id, "seed mode: addresses sent"),
                (outbound.id, "seed mode: crawled"),
            ]
        else:
            assert host.let_go == []


async def test_a_seed_node_hands_out_addresses_and_keeps_no_peers(tmp_path: Path) -> None:
    fast: dict[str, Any] = {"pex": True, "pex_request_interval": 0.15}
    seed = make_node(**fast, seed_mode=True)
    async with running(seed):
        a = make_node(**fast, seeds=(seed.address(),))
        async with running(a):
            # a dials the seed from its book, gets an answer and is let go; the seed keeps a's address
            await wait_until(lambda: seed.switch.book is not None and a.id in seed.switch.book)
            await wait_until(lambda: seed.switch.num_peers == 0)
            c = make_node(**fast, seeds=(seed.address(),))
            async with running(c):
                await wait_until(lambda: connected(c, a))  # learnt from the seed
                await wait_until(lambda: seed.switch.num_peers == 0)
                assert any("seed mode" in reason for _, reason in seed.reactor.removed)


def test_seed_mode_needs_pex(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\[p2p\] seed_mode: needs pex = true"):
        Config.default(tmp_path, "n").with_overrides(**{"p2p.seed_mode": True, "p2p.pex": False})


# -- [mempool] broadcast -------------------------------------------------------------------------


def test_without_broadcast_the_mempool_sends_no_tx_but_takes_peers_txs() -> None:
    def accept(tx: bytes, kind: CheckTxKind) -> CheckTxResult:
        return CheckTxResult()

    for broadcast in (True, False):
        mempool = Mempool(MempoolConfig(broadcast=broadcast), accept)
        reactor = MempoolReactor(mempool)
        early, late = FakePeer("aa" * 20), FakePeer("bb" * 20)
        reactor.add_peer(early)
        assert mempool.check_tx(b"tx-1").ok
        reactor.add_peer(late)
        reactor.flush()
        sent = early.on(MEMPOOL_CHANNEL) + late.on(MEMPOOL_CHANNEL)
        assert (len(sent) > 0) == broadcast, broadcast
        reactor.receive(MEMPOOL_CHANNEL, early, codec.encode([b"tx-2"]))
        assert mempool.get(sha256(b"tx-2")) == b"tx-2"


# -- [rpc] max_header_bytes and [instrumentation] max_open_connections, in process ---------------


class Slow:
    """An ASGI app that answers 200 once `release` is set (and counts requests begun)."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.begun = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        self.begun += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def test_request_heads_over_max_header_bytes_get_431() -> None:
    app = Slow()
    app.release.set()
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, app, "tcp://127.0.0.1:0", 0, max_header_bytes=1024)
        async with httpx.AsyncClient(base_url=f"http://{bound.removeprefix('http://')}") as client:
            assert (await client.get("/", headers={"X-Pad": "a" * 700})).status_code == 200
            assert (await client.get("/", headers={"X-Pad": "a" * 1100})).status_code == 431
            assert (await client.get("/?" + "q" * 1100)).status_code == 431  # the request line counts
        nursery.cancel_scope.cancel()
    assert app.begun == 1


@pytest.mark.parametrize(("limit", "statuses"), [(1, [200, 503]), (0, [200, 200])])
async def test_the_metrics_endpoint_serves_at_most_max_open_connections_requests_at_once(
    tmp_path: Path, limit: int, statuses: list[int]
) -> None:
    app = Slow()
    config = Config.default(tmp_path, "n").with_overrides(**{"instrumentation.max_open_connections": limit})
    got: list[int] = []
    async with trio.open_nursery() as nursery:
        bound = await start_server(nursery, metrics_app(app, config), "tcp://127.0.0.1:0", limit)
        url = f"http://{bound.removeprefix('http://')}/metrics"
        async with httpx.AsyncClient() as client:

            async def get() -> None:
                got.append((await client.get(url)).status_code)

            async with trio.open_nursery() as requests:
                requests.start_soon(get)
                with trio.fail_after(5):
                    while app.begun < 1:
                        await trio.sleep(0.005)  # poll: the first request is being served
                requests.start_soon(get)
                with trio.fail_after(5):
                    while len(got) + app.begun < 2:
                        await trio.sleep(0.005)  # poll: the second is refused or being served
                app.release.set()
        nursery.cancel_scope.cancel()
    assert sorted(got) == statuses


# -- the keys reach the records the components take ------------------------------------------------

PEER_ID = "0123456789abcdef0123456789abcdef01234567"

TIMEOUT_KEYS: dict[str, tuple[object, str, object]] = {
    # key: (value in the file, TimeoutConfig attribute, what it holds)
    "timeout_propose": ("4s", "propose", 4 * SECOND),
    "timeout_propose_delta": ("300ms", "propose_delta", 300 * MS),
    "timeout_prevote": ("2s", "prevote", 2 * SECOND),
    "timeout_prevote_delta": ("250ms", "prevote_delta", 250 * MS),
    "timeout_precommit": ("3s", "precommit", 3 * SECOND),
    "timeout_precommit_delta": ("350ms", "precommit_delta", 350 * MS),
    "timeout_commit": ("1s", "commit", SECOND),
    "skip_timeout_commit": (True, "skip_timeout_commit", True),
    "create_empty_blocks": (False, "create_empty_blocks", False),
    "create_empty_blocks_interval": ("30s", "create_empty_blocks_interval", 30 * SECOND),
}

MEMPOOL_KEYS: dict[str, tuple[object, str, object]] = {
    "size": (17, "size", 17),
    "max_txs_bytes": (5000, "max_txs_bytes", 5000),
    "cache_size": (9, "cache_size", 9),
    "keep-invalid-txs-in-cache": (True, "keep_invalid_txs_in_cache", True),
    "max_tx_bytes": (300, "max_tx_bytes", 300),
    "recheck": (False, "recheck", False),
    "broadcast": (False, "broadcast", False),
}

P2P_KEYS: dict[str, tuple[object, str, object]] = {
    "laddr": ("tcp://127.0.0.2:36656", "listen_port", 36656),
    "external_address": ("tcp://203.0.113.7:26656", "external_address", ("203.0.113.7", 26656)),
    "seeds": (f"{PEER_ID}@10.0.0.9:26656", "seeds", (PEER_ID, "10.0.0.9", 26656)),
    "persistent_peers": (f"{PEER_ID}@10.0.0.8:26656", "persistent_peers", (PEER_ID, "10.0.0.8", 26656)),
    "addr_book_file": ("book/addresses.json", "address_book_path", "book/addresses.json"),
    "max_num_inbound_peers": (3, "max_inbound", 3),
    "max_num_outbound_peers": (4, "max_outbound", 4),
    "unconditional_peer_ids": (PEER_ID, "unconditional_peer_ids", (PEER_ID,)),
    "persistent_peers_max_dial_period": ("15s", "redial_max_delay", 15.0),
    "flush_throttle_timeout": ("25ms", "flush_throttle", 0.025),
    "max_packet_msg_payload_size": (4096, "max_packet_payload", 4096),
    "send_rate": (1000, "send_rate", 1000),
    "recv_rate": (2000, "recv_rate", 2000),
    "pex": (False, "pex", False),
    "seed_mode": (True, "seed_mode", True),
    "private_peer_ids": (PEER_ID, "private_peer_ids", (PEER_ID,)),
    "allow_duplicate_ip": (True, "allow_duplicate_ip", True),
    "handshake_timeout": ("7s", "handshake_timeout", 7.0),
    "dial_timeout": ("2s", "dial_timeout", 2.0),
}


def _held(value: object) -> object:
    """A settings value in the form the table above writes it (a peer as a tuple)."""
    if isinstance(value, tuple) and value and hasattr(value[0], "node_id"):
        (peer,) = value
        return (peer.node_id, peer.host, peer.port)
    return value


def test_each_consensus_timing_key_reaches_the_machine(tmp_path: Path) -> None:
    default = Config.default(tmp_path, "n")
    for key, (value, attr, held) in TIMEOUT_KEYS.items():
        changed = timeout_config(default.with_overrides(**{f"consensus.{key}": value}))
        assert getattr(changed, attr) == held, key
        assert replace(changed, **{attr: getattr(timeout_config(default), attr)}) == timeout_config(
            default
        ), key
    assert timeout_config(default.with_overrides(**{"consensus.create_empty_blocks": False})).waits_for_txs


APP_ADMISSION_KEYS = {"min_fee": 250, "max_txs_per_sender": 7}
"""[mempool] keys that the application's check_tx applies (`ExchangeApp`): value -> its attribute"""


def test_the_admission_keys_reach_the_application(tmp_path: Path) -> None:
    default = Config.default(tmp_path, "n")
    db = Database(tmp_path / "db")
    verifier = BatchVerifier(workers=1)
    try:
        app = exchange_app(default, db, CHAIN, verifier)
        assert (app.min_fee, app.max_txs_per_sender) == (0, 200)
        changed = default.with_overrides(
            **{f"mempool.{key}": value for key, value in APP_ADMISSION_KEYS.items()}
        )
        app = exchange_app(changed, db, CHAIN, verifier)
        assert {key: getattr(app, key) for key in APP_ADMISSION_KEYS} == APP_ADMISSION_KEYS
    finally:
        verifier.close()
        db.close()


def test_each_mempool_key_reaches_the_mempool(tmp_path: Path) -> None:
    default = Config.default(tmp_path, "n")
    assert set(MEMPOOL_KEYS) | set(APP_ADMISSION_KEYS) == set(
        tomllib.loads(config_to_toml(default))["mempool"]
    )
    for key, (value, attr, held) in MEMPOOL_KEYS.items():
        changed = mempool_config(default.with_overrides(**{f"mempool.{key}": value}))
        assert getattr(changed, attr) == held, key
        assert replace(changed, **{attr: getattr(mempool_config(default), attr)}) == mempool_config(
            default
        ), key


def test_each_p2p_key_reaches_the_switch(tmp_path: Path) -> None:
    default = Config.default(tmp_path, "n")
    assert set(P2P_KEYS) == set(tomllib.loads(config_to_toml(default))["p2p"])
    base = p2p_settings(default)
    assert (base.allow_duplicate_ip, base.seed_mode, base.flush_throttle) == (False, False, 0.0)
    for key, (value, attr, held) in P2P_KEYS.items():
        changed = p2p_settings(default.with_overrides(**{f"p2p.{key}": value}))
        got = getattr(changed, attr)
        if key == "addr_book_file":
            assert got == tmp_path / str(held), key
        else:
            assert _held(got) == held, key
        if key != "laddr":  # the listen address is two settings
            assert replace(changed, **{attr: getattr(base, attr)}) == base, key
    assert (
        p2p_settings(default.with_overrides(**{"p2p.laddr": "tcp://127.0.0.2:1"})).listen_host == "127.0.0.2"
    )


# -- keys whose component tests were missing -------------------------------------------------------


@dataclass
class Deaf(Wire):
    """A peer that offers its snapshot but never answers a chunk request."""

    def try_send(self, channel_id: int, message: bytes) -> bool:
        return True if channel_id == STATESYNC_CHUNK_CHANNEL else super().try_send(channel_id, message)


async def test_retain_blocks_prunes_all_but_the_last_blocks_and_indexer_null_builds_no_index(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    core, db = open_core(tmp_path, FAST_CORE, retain_blocks=2)
    try:
        await run_core_to(core, 6)
        assert (core.blocks.base, core.blocks.height) == (5, 6)
        assert core.blocks.load_block(4) is None and core.blocks.load_block(5) is not None
        config = Config.default(tmp_path, "n")
        assert _event_index(config.with_overrides(**{"tx_index.indexer": "null"}), db, core) is None
        index = _event_index(config, db, core)
        assert index is not None and index.height == 6
    finally:
        core.driver.wal.close()
        db.close()


async def test_a_chunk_not_answered_within_chunk_request_timeout_is_asked_again(tmp_path: Path) -> None:
    # real time: the light client's check runs on a thread, which a virtual clock would jump over
    tree = _tree(tmp_path / "server")
    client = StateSync(None, lambda peer, reason: None)
    deaf, honest = Source(tree), Source(tree)
    _connect(client, StateSync(deaf, lambda p, r: None), "a-deaf")
    _connect(client, StateSync(honest, lambda p, r: None), "b-honest")
    client._peers["a-deaf"] = Deaf(**vars(client._peers["a-deaf"]))
    fresh = StateTree(Database(tmp_path / "client"))
    start = trio.current_time()
    with trio.fail_after(10):  # without the re-asking the deaf peer would stall it
        restore = await client.sync(
            tree.root_at, lambda manifest: Restore(fresh, manifest), discovery_time=0.05, chunk_timeout=0.3
        )
    assert restore.missing == [] and honest.served and not deaf.served
    assert 0.3 <= trio.current_time() - start < 5  # what went to the deaf peer waited out the timeout


async def test_recv_rate_limits_what_a_connection_reads(autojump_clock: trio.testing.MockClock) -> None:
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, _ = connection(a_stream)
    b, received = connection(b_stream, recv_rate=100_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        for _ in range(10):
            assert a.try_send(LOW, bytes(100_000))
        start = trio.current_time()
        with trio.fail_after(60):  # virtual seconds
            while len(received) < 10:
                await trio.sleep(0.01)  # virtual: poll the receiver
        elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert 9.0 <= elapsed <= 11.0  # 1 MB at 100 kB/s with a 64 KiB burst: about 9.4 s


async def test_dial_timeout_bounds_a_dial(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock
) -> None:
    async def never_connects(host: str, port: int) -> trio.SocketStream:
        await trio.sleep_forever()
        raise AssertionError

    node = make_node(dial_timeout=7.0)
    async with running(node):
        monkeypatch.setattr(trio, "open_tcp_stream", never_connects)
        start = trio.current_time()
        assert node.switch.request_dial(addr(5, "10.1.2.3"))
        with trio.fail_after(60):  # virtual seconds
            while node.switch.stats.dial_failures == 0:
                await trio.sleep(0.1)  # virtual: poll the switch's counter
        assert 7.0 <= trio.current_time() - start < 7.2


async def test_handshake_timeout_hangs_up_on_a_silent_connection() -> None:
    node = make_node(handshake_timeout=0.3)
    async with running(node):
        stream = await trio.open_tcp_stream("127.0.0.1", node.address().port)
        start = trio.current_time()
        await wait_until(lambda: node.switch.stats.handshake_failures == 1)
        assert 0.25 <= trio.current_time() - start < 3  # counted from the accept, just before
        await stream.aclose()


async def test_external_address_is_what_the_node_advertises() -> None:
    node = make_node(external_address=("203.0.113.9", 26656))
    plain = make_node()
    async with running(node, plain):
        assert node.switch.node_info.listen_addr == "203.0.113.9:26656"
        assert plain.switch.node_info.listen_addr == f"127.0.0.1:{plain.address().port}"


async def test_oracle_timeout_bounds_a_price_request(tmp_path: Path) -> None:
    held: list[trio.SocketStream] = []

    async def hold(stream: trio.SocketStream) -> None:
        held.append(stream)  # read nothing, answer nothing
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, hold, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        oracle = OracleConfig(
            source="http", url=f"http://127.0.0.1:{port}/p", fields=("BTC-USD=p",), timeout=300 * MS
        )
        feeder = _feeder(oracle, _registry(10), tmp_path)
        assert feeder is not None and isinstance(feeder.source, HttpSource)
        start = trio.current_time()
        with pytest.raises(PriceSourceError, match="Timeout"):
            await feeder.source.prices(1)
        assert 0.3 <= trio.current_time() - start < 3
        nursery.cancel_scope.cancel()
    assert held


@pytest.mark.parametrize(("cap", "least", "most"), [(2.0, 50, 110), (60.0, 3, 12)])
async def test_persistent_peers_max_dial_period_caps_the_redial_pause(
    monkeypatch: pytest.MonkeyPatch, autojump_clock: trio.testing.MockClock, cap: float, least: int, most: int
) -> None:
    async def refused(host: str, port: int) -> trio.SocketStream:
        raise OSError("connection refused")

    node = make_node(persistent_peers=(addr(6, "10.1.2.6"),), redial_initial_delay=1.0, redial_max_delay=cap)
    monkeypatch.setattr(trio, "open_tcp_stream", refused)
    async with running(node):
        await trio.sleep(100)  # virtual: count the redials of a peer that is never there
    assert least <= node.switch.stats.dials <= most


def test_the_mempool_reports_txs_once_a_height_for_the_next_block() -> None:
    def accept(tx: bytes, kind: CheckTxKind) -> CheckTxResult:
        return CheckTxResult() if tx != b"bad" else CheckTxResult(code=1)

    mempool = Mempool(MempoolConfig(), accept)
    reported: list[int] = []
    mempool.height = 4
    mempool.on_txs_available = reported.append
    assert not mempool.check_tx(b"bad").ok
    assert reported == []
    assert mempool.check_tx(b"tx-1").ok and mempool.check_tx(b"tx-2").ok
    assert reported == [5], "once for block 5, at the first admission"
    mempool.update(5, [b"tx-1"])  # tx-2 is left for block 6: reported at once
    assert reported == [5, 6]
    assert mempool.check_tx(b"tx-3").ok
    mempool.update(6, [b"tx-2", b"tx-3"])  # nothing left: nothing to report until a tx comes
    assert reported == [5, 6]
    assert mempool.check_tx(b"tx-4").ok
    assert reported == [5, 6, 7]


async def test_the_switch_gives_each_connection_its_flush_throttle() -> None:
    a = make_node(flush_throttle=0.02)
    async with running(a):
        b = make_node(persistent_peers=(a.address(),))
        async with running(b):
            await wait_until(lambda: connected(a, b))
            peer = a.switch.peer(b.id)
            assert peer is not None and peer.connection.flush_throttle == 0.02
            other = b.switch.peer(a.id)
            assert other is not None and other.connection.flush_throttle == 0.0
