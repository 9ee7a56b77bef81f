"""The composition root: opens the stores, builds the application, consensus, mempool, RPC and
metrics from the config and genesis, and runs them as services under one trio nursery.

Start-up order: database, application (and the block a `derivd rollback` kept, executed again),
handshake (InitChain or a consistency check), private validator, WAL, consensus (which replays the
WAL), then the RPC and metrics servers. Shutdown
(cancellation) stops the servers and consensus, flushes the WAL and closes the database; the
last committed height is always whole on disk, so nothing is lost. A durable write of the running
node that fails (`HALT_ERRORS`: the height's batch, the WAL, the sign state) halts it: one
error line, the same shutdown, and the error goes up to `derivd start` (one `Error:` line, exit 1).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from consensus.app import Application, InitChainRequest, ValidatorUpdate
from consensus.blocksync import BlockSync
from consensus.doublesign import recent_signature
from consensus.driver import ConsensusDriver
from consensus.evidence import EvidencePool
from consensus.execution import (
    AppProposalSource,
    BlockExecutor,
    handshake,
    stored_validators,
)
from consensus.light import LightError
from consensus.machine import ConsensusMachine, StepChanged, TimeoutConfig
from consensus.mempool import Mempool, MempoolConfig
from consensus.mempool_reactor import MempoolReactor
from consensus.privval import FilePrivValidator, SignStateWriteError
from consensus.reactor import ConsensusReactor
from consensus.service import ConsensusService, wall_clock
from consensus.state import ConsensusParams
from consensus.statesync import StateSync, StateSyncError
from consensus.types import Block
from consensus.validators import ValidatorSet
from consensus.wal import WAL, WALWriteError
from execution.app import ExchangeApp
from execution.state import CommittedState
from genesis.genesis import GenesisDoc
from node.bridge_watcher import watcher_from_config
from node.compaction import Compactor
from node.config import Config, parse_id_list, parse_laddr, parse_peer_list
from node.database import open_database
from node.events import EventBus, RoundStepChanged, VoteAdded
from node.gcpolicy import apply_gc_policy
from node.indexer import EventIndex
from node.metrics import NodeMetrics, TimedFinalize
from node.pricefeed import NonceAllocator, feeder_from_config
from node.rollback import replay_kept_block
from node.rpc import ConnectionLimit, HeaderLimit, NodeInfo, RPCEnv, make_app, request_handler
from node.statesync import restore_from_peers
from node.streams import MarketStreams
from node.version import COMETBFT_VERSION
from node.websocket import Hub, Limits
from node.ws_server import WebSocketServer
from p2p.base import NodeInfo as P2PNodeInfo
from p2p.nodekey import load_or_generate_node_key, node_id
from p2p.switch import P2PSettings, Switch
from primitives.batch_verify import BatchVerifier
from primitives.keys import PrivateKey
from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database, StorageWriteError, check_format
from storage.statestore import StateStore

log = logging.getLogger("derivd.node")

HALT_ERRORS = (StorageWriteError, WALWriteError, SignStateWriteError)
"""A durable write of the running node failed (a full disk, an I/O error): it halts, and what is
on disk is what a crash at that write would have left, which a restart recovers from."""


def consensus_params(doc: GenesisDoc) -> ConsensusParams:
    return ConsensusParams.from_fields(doc.consensus_params.to_fields())


def init_chain_request(doc: GenesisDoc) -> InitChainRequest:
    return InitChainRequest(
        chain_id=doc.chain_id,
        time=doc.genesis_time,
        initial_height=doc.initial_height,
        validators=tuple(ValidatorUpdate(v.pub_key, v.power) for v in doc.validators),
        app_state=json.dumps(doc.app_state, sort_keys=True, separators=(",", ":")).encode(),
    )


def timeout_config(config: Config) -> TimeoutConfig:
    c = config.consensus
    return TimeoutConfig(
        propose=c.timeout_propose,
        propose_delta=c.timeout_propose_delta,
        prevote=c.timeout_prevote,
        prevote_delta=c.timeout_prevote_delta,
        precommit=c.timeout_precommit,
        precommit_delta=c.timeout_precommit_delta,
        commit=c.timeout_commit,
        skip_timeout_commit=c.skip_timeout_commit,
        create_empty_blocks=c.create_empty_blocks,
        create_empty_blocks_interval=c.create_empty_blocks_interval,
    )


def mempool_config(config: Config) -> MempoolConfig:
    m = config.mempool
    return MempoolConfig(
        size=m.size,
        max_txs_bytes=m.max_txs_bytes,
        max_tx_bytes=m.max_tx_bytes,
        cache_size=m.cache_size,
        keep_invalid_txs_in_cache=m.keep_invalid_txs_in_cache,
        recheck=m.recheck,
        broadcast=m.broadcast,
    )


def exchange_app(config: Config, db: Database, chain_id: str, verifier: BatchVerifier) -> ExchangeApp:
    """The node's application, with its [execution], [storage] and [mempool] settings."""
    return ExchangeApp(
        db,
        chain_id,
        verifier,
        workers=config.execution.worker_count(os.cpu_count()),
        worker_setup=apply_gc_policy,
        state_versions=config.storage.state_versions,
        snapshot_interval=config.storage.snapshot_interval,
        snapshot_keep_recent=config.storage.snapshot_keep_recent,
        min_fee=config.mempool.min_fee,
        max_txs_per_sender=config.mempool.max_txs_per_sender,
    )


@dataclass
class Core:
    """The node's consensus and execution core, assembled (see `build_core`)."""

    blocks: BlockStore
    states: StateStore
    mempool: Mempool
    evidence: EvidencePool
    executor: BlockExecutor
    driver: ConsensusDriver
    service: ConsensusService


def build_core(
    db: Database,
    app: Application,
    verifier: BatchVerifier,
    privval: FilePrivValidator,
    wal: WAL,
    genesis: InitChainRequest,
    params: ConsensusParams,
    timeouts: TimeoutConfig,
    mempool_settings: MempoolConfig,
    retain_blocks: int = 0,
    genesis_app_hash: bytes = b"",
) -> Core:
    """Stores, mempool, evidence pool, block executor and consensus over `db` and `app`, at the
    height the handshake finds."""
    blocks, states = BlockStore(db), StateStore(db)
    mempool = Mempool(mempool_settings, app.check_tx, app.admission_work)
    state, last_commit = handshake(app, states, blocks, genesis, params, genesis_app_hash)

    def block_time_at(height: int) -> int | None:
        """The time of a stored block (evidence of its height carries it); None if pruned."""
        raw = blocks.load_block(height)
        return None if raw is None else Block.decode(raw).header.time

    evidence = EvidencePool(
        state.chain_id,
        verifier.verify_batch,
        stored_validators(states),
        states.has_committed_evidence,
        states,
        block_time_at,
    )
    source = AppProposalSource(app, mempool, evidence)
    machine = ConsensusMachine(state, privval.address, timeouts, source, verifier.verify_batch)
    executor = BlockExecutor(db, blocks, states, app, mempool, retain_blocks)
    driver = ConsensusDriver(machine, wal, privval, executor, wall_clock, lambda _: None, evidence)
    service = ConsensusService(driver, last_commit)
    mempool.height = state.last_block_height
    if timeouts.waits_for_txs:
        mempool.on_txs_available = service.txs_available
    return Core(blocks, states, mempool, evidence, executor, driver, service)


def _event_index(config: Config, db: Database, core: Core) -> EventIndex | None:
    """The event index if `[tx_index] indexer = "kv"`, caught up with the block store and kept
    in each height's batch from now on."""
    if config.tx_index.indexer != "kv":
        return None
    index = EventIndex(db, core.blocks, core.executor.load_results)
    caught_up = index.catch_up()
    if caught_up:
        log.info("event index: indexed %d stored heights (now %d..%d)", caught_up, index.base, index.height)
    core.executor.recorders.append(index)
    return index


@dataclass
class Listening:
    """Where the node's servers listen (filled once they are bound)."""

    rpc: str = ""
    websocket: str = ""
    metrics: str = ""


class Node:
    """A full node (a validator if its key is in the validator set)."""

    def __init__(self, config: Config, genesis: GenesisDoc) -> None:
        self.config = config
        self.genesis = genesis
        self.listening = Listening()

    async def run(self, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
        config, doc = self.config, self.genesis
        db = open_database(config.path(config.base.db_dir) / "derivd.db")
        verifier = BatchVerifier()
        try:
            check_format(db, stamp=True)
            if config.statesync.enable and db.get(schema.CONSENSUS_STATE) is None:
                key = load_or_generate_node_key(config.path(config.base.node_key_file))
                info = _p2p_node_info(config, doc, key)
                try:
                    await restore_from_peers(
                        config, doc, consensus_params(doc), db, key, info, p2p_settings(config)
                    )
                except (StateSyncError, LightError) as exc:
                    raise NodeStartError(f"state sync failed: {exc}") from exc
            app = exchange_app(config, db, doc.chain_id, verifier)
            replay_kept_block(db, app, mempool_config(config))  # a block `derivd rollback` kept
            privval = FilePrivValidator.load(
                config.path(config.base.priv_validator_key_file),
                config.path(config.base.priv_validator_state_file),
            )
            node_key = load_or_generate_node_key(config.path(config.base.node_key_file))
            core = build_core(
                db,
                app,
                verifier,
                privval,
                WAL.open(config.path(config.consensus.wal_file)),
                init_chain_request(doc),
                consensus_params(doc),
                timeout_config(config),
                mempool_config(config),
                config.storage.retain_blocks,
                doc.app_hash,
            )
            service, mempool, executor = core.service, core.mempool, core.executor
            state = service.machine.state
            address = privval.address if state.validators.get(privval.address) is not None else None
            bus = EventBus()
            executor.listeners.append(lambda b, bid, res, st: bus.on_commit(b, bid, res))
            index = _event_index(config, db, core)
            hub = Hub(
                Limits(
                    max_clients=config.rpc.max_subscription_clients,
                    max_per_client=config.rpc.max_subscriptions_per_client,
                    outbox=config.rpc.experimental_websocket_write_buffer_size,
                ),
                MarketStreams(app.committed, lambda: core.blocks.height),
            )
            bus.sinks.append(hub.publish)

            def publish_step(step: StepChanged) -> None:
                validators = service.machine.round_validators
                proposer = validators.proposer.address
                bus.publish(
                    RoundStepChanged(
                        height=step.height,
                        round=step.round,
                        step=step.step,
                        proposer=proposer,
                        proposer_index=validators.index_of(proposer) or 0,
                    )
                )

            core.driver.step_listeners.append(publish_step)
            core.driver.vote_listeners.append(lambda vote: bus.publish(VoteAdded(vote)))
            storage = config.storage
            compactor = Compactor(db, storage.compaction_interval) if storage.compact else None
            if compactor is not None:
                executor.listeners.append(compactor.on_commit)
            self.core, self.bus = core, bus
            switches: list[Switch] = []

            def ban(peer_id: str, reason: str) -> None:
                for switch in switches:
                    switch.stop_peer_for_error(peer_id, reason)

            alone = only_validator_is_us(state.validators, privval.address)
            if alone:  # as CometBFT (`onlyValidatorIsUs`): the sole validator has nobody to sync from
                log.info("block sync skipped: this node is the only validator")
            blocksync = BlockSync(
                executor,
                core.blocks,
                state,
                verifier.verify_batch,
                ban,
                status_wait=0.0 if alone else 2.0,
                on_applied=core.evidence.mark_committed,
            )
            reactor = ConsensusReactor(
                service,
                core.blocks,
                ban,
                config.consensus.peer_gossip_sleep_duration / 1e9,
                compact_blocks=config.consensus.compact_blocks,
                lookup_tx=mempool.get,
            )
            gossip = MempoolReactor(mempool)
            switch = Switch(
                node_key,
                _p2p_node_info(config, doc, node_key),
                p2p_settings(config),
                [reactor, gossip, blocksync, StateSync(app, ban)],
            )
            switches.append(switch)
            nonces = NonceAllocator()  # the validator key's: the feeder and the watcher both sign with it
            feeder = feeder_from_config(
                config.oracle,
                config.path,
                doc.chain_id,
                doc.initial_height - 1,
                CommittedState(db),
                doc.app_state,
                privval.key,
                mempool.check_tx,
                bus,
                lambda: blocksync.syncing,
                nonces,
            )
            watcher = watcher_from_config(
                config.bridge,
                config.path,
                doc.chain_id,
                app.committed,  # not a CommittedState of its own: its decoded records would go stale
                doc.app_state,
                privval.key,
                address is not None,
                mempool.check_tx,
                bus,
                nonces,
                lambda: blocksync.syncing,
                config.path(config.base.db_dir) / "bridge_watcher.json",
            )
            metrics = NodeMetrics(
                config.instrumentation.namespace,
                doc.chain_id,
                service,
                mempool,
                switch,
                blocksync,
                app,
                reactor=reactor,
                validator_address=privval.address,
                feeder=feeder.stats if feeder is not None else None,
                watcher=watcher.stats if watcher is not None else None,
            )
            executor.listeners.append(metrics.on_commit)
            executor.app = TimedFinalize(executor.app, metrics.block_processing.observe)
            hub.observe_delivery = metrics.stream_delivery.observe
            self.switch, self.blocksync = switch, blocksync
            log.info(
                "starting node chain_id=%s height=%d validator=%s node_id=%s",
                doc.chain_id,
                state.height,
                "yes" if address else "no",
                node_id(node_key.public_key),
            )
            apply_gc_policy()  # start-up is done: what it built is frozen (node.gcpolicy)
            rpc_env = rpc_env_of(
                config,
                doc,
                node_id(node_key.public_key),
                blocks=core.blocks,
                states=core.states,
                executor=executor,
                consensus=service,
                mempool=mempool,
                app=app,
                bus=bus,
                validator_pub_key=privval.public_key.raw,
                index=index,
                catching_up=lambda: blocksync.syncing,
                switch=switch,
                reactor=reactor,
                hub=hub,
            )
            try:
                async with trio.open_nursery() as nursery:
                    try:
                        await nursery.start(switch.run)
                    except OSError as exc:
                        raise NodeStartError(listen_error(config.p2p.laddr, "p2p.laddr", exc)) from exc
                    nursery.start_soon(_flush_gossip, gossip)
                    if compactor is not None:
                        nursery.start_soon(compactor.run)
                    self.listening.rpc = await start_rpc(nursery, rpc_env, config)
                    if config.instrumentation.prometheus:
                        self.listening.metrics = await start_server(
                            nursery,
                            metrics_app(metrics.asgi_app(), config),
                            config.instrumentation.prometheus_listen_addr,
                            config.instrumentation.max_open_connections,
                            setting="instrumentation.prometheus_listen_addr",
                        )
                    log.info("rpc listening on %s", self.listening.rpc)
                    if config.rpc.websocket_laddr:
                        self.listening.websocket = await start_websocket(nursery, rpc_env, config)
                        log.info("websocket listening on %s", self.listening.websocket)
                    if self.listening.metrics:
                        log.info("metrics listening on %s", self.listening.metrics)
                    if feeder is not None:
                        await nursery.start(feeder.run)
                    if watcher is not None:
                        await nursery.start(watcher.run)
                    task_status.started(self)
                    synced_state, synced_commit = await blocksync.sync()
                    height = synced_state.last_block_height
                    check_double_sign_risk(config, core.blocks, privval.address, height)
                    service.start_from(synced_state, synced_commit, last_app_hash(core.blocks, height))
                    await nursery.start(service.run)
                    await nursery.start(reactor.run)
            except* HALT_ERRORS as group:
                log.error("halting: %s", first_leaf(group))  # one line; the traceback helps no one
                raise
            finally:
                core.driver.wal.close()
                app.close()
        finally:
            verifier.close()
            db.close()
            log.info("node stopped")


def only_validator_is_us(validators: ValidatorSet, address: bytes) -> bool:
    """Whether the set is this node's validator alone (block sync then has no one to wait for)."""
    return len(validators) == 1 and validators.get(address) is not None


def first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in `group` that is not a group (nested nurseries nest groups)."""
    first = group.exceptions[0]
    return first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


GOSSIP_FLUSH_SECONDS = 0.005
"""how long an admitted tx waits at most for others to share its gossip message"""


async def _flush_gossip(gossip: MempoolReactor) -> None:
    while True:
        gossip.flush()
        await trio.sleep(GOSSIP_FLUSH_SECONDS)  # the gossip's pace, not a synchronisation


async def _serve(
    app: object,
    laddr: str,
    max_connections: int,
    setting: str,
    max_header_bytes: int = 0,
    max_message_bytes: int = 0,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an ASGI app on `laddr` (the value of `setting`) until cancelled; report the bound
    address."""
    host, port = parse_laddr(laddr)
    hconfig = HypercornConfig()
    hconfig.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.graceful_timeout = 1.0
    if max_header_bytes:  # [rpc] max_header_bytes: the request line and headers, h11's buffer
        hconfig.h11_max_incomplete_size = max_header_bytes
    if max_message_bytes:  # [rpc] max_body_bytes: CometBFT's read limit of a WebSocket message too
        hconfig.websocket_max_message_size = max_message_bytes
    del max_connections  # hypercorn has no socket cap: the RPC app counts what it serves (`node.rpc`)
    try:
        await serve(app, hconfig, task_status=task_status)  # type: ignore[arg-type]
    except* OSError as group:  # hypercorn binds inside nurseries of its own: a group
        error = group.exceptions[0]
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        assert isinstance(error, OSError)
        raise NodeStartError(listen_error(laddr, setting, error)) from error


def listen_error(laddr: str, setting: str, exc: OSError) -> str:
    """One line for a listener that could not bind: "cannot listen on 127.0.0.1:26657 (rpc.laddr):
    address already in use"."""
    host, port = parse_laddr(laddr)
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"cannot listen on {where}{f' ({setting})' if setting else ''}: {reason[:1].lower()}{reason[1:]}"


def _p2p_node_info(config: Config, doc: GenesisDoc, node_key: PrivateKey) -> P2PNodeInfo:
    return P2PNodeInfo(
        node_id=node_id(node_key.public_key),
        listen_addr=config.p2p.laddr,
        network=doc.chain_id,
        version=COMETBFT_VERSION,
        channels=b"",
        moniker=config.base.moniker,
        other={"rpc_address": config.rpc.laddr},
    )


class NodeStartError(RuntimeError):
    """The node cannot start; the message says why."""


def p2p_settings(config: Config) -> P2PSettings:
    """The transport's settings from `[p2p]`."""
    p = config.p2p
    host, port = parse_laddr(p.laddr)
    return P2PSettings(
        listen_host=host,
        listen_port=port,
        external_address=parse_laddr(p.external_address) if p.external_address else None,
        persistent_peers=parse_peer_list(p.persistent_peers),
        seeds=parse_peer_list(p.seeds),
        max_inbound=p.max_num_inbound_peers,
        max_outbound=p.max_num_outbound_peers,
        unconditional_peer_ids=parse_id_list(p.unconditional_peer_ids),
        private_peer_ids=parse_id_list(p.private_peer_ids),
        handshake_timeout=p.handshake_timeout / 1e9,
        dial_timeout=p.dial_timeout / 1e9,
        pex=p.pex,
        address_book_path=config.path(p.addr_book_file),
        send_rate=p.send_rate,
        recv_rate=p.recv_rate,
        max_packet_payload=p.max_packet_msg_payload_size,
        redial_max_delay=p.persistent_peers_max_dial_period / 1e9 or 60.0,
        seed_mode=p.seed_mode,
        allow_duplicate_ip=p.allow_duplicate_ip,
        flush_throttle=p.flush_throttle_timeout / 1e9,
    )


def genesis_path(config: Config) -> Path:
    return config.path(config.base.genesis_file)


def rpc_env_of(config: Config, doc: GenesisDoc, node: str, **parts: Any) -> RPCEnv:
    """The RPC's environment: its node info, genesis and `[rpc]` settings from `config` and `doc`,
    and the stores and services in `parts` (RPCEnv's own keyword arguments)."""
    rpc = config.rpc
    return RPCEnv(
        info=NodeInfo(
            node_id=node,
            listen_addr=config.p2p.laddr,
            network=doc.chain_id,
            version=COMETBFT_VERSION,
            moniker=config.base.moniker,
            rpc_address=rpc.laddr,
        ),
        genesis=doc.to_json(),
        timeout_broadcast_tx_commit=rpc.timeout_broadcast_tx_commit / 1e9,
        max_batch=rpc.max_request_batch_size,
        max_body_bytes=rpc.max_body_bytes,
        max_open_connections=rpc.max_open_connections,
        cors_origins=rpc.cors_allowed_origins,
        cors_methods=rpc.cors_allowed_methods,
        cors_headers=rpc.cors_allowed_headers,
        **parts,
    )


async def start_rpc(nursery: trio.Nursery, env: RPCEnv, config: Config) -> str:
    """Serve the RPC of `env` on `[rpc] laddr` with its limits; the address it bound."""
    return await start_server(
        nursery,
        make_app(env),
        config.rpc.laddr,
        config.rpc.max_open_connections,
        setting="rpc.laddr",
        max_header_bytes=config.rpc.max_header_bytes,
        max_message_bytes=config.rpc.max_body_bytes,
    )


async def start_websocket(nursery: trio.Nursery, env: RPCEnv, config: Config) -> str:
    """Serve `/websocket` on `[rpc] websocket_laddr` (`node.ws_server`); the address it bound."""
    host, port = parse_laddr(config.rpc.websocket_laddr)
    server = WebSocketServer(
        env.hub,
        request_handler(env),
        max_connections=config.rpc.max_open_connections,
        max_message_bytes=config.rpc.max_body_bytes,
    )
    try:
        bound: str = await nursery.start(server.serve, host, port)
    except OSError as exc:
        raise NodeStartError(listen_error(config.rpc.websocket_laddr, "rpc.websocket_laddr", exc)) from exc
    return bound


async def start_server(
    nursery: trio.Nursery,
    app: object,
    laddr: str,
    max_connections: int,
    *,
    setting: str = "",
    max_header_bytes: int = 0,
    max_message_bytes: int = 0,
) -> str:
    """Serve the ASGI `app` on `laddr` in `nursery`; the address it bound (port 0: the real port).
    `setting` names where `laddr` came from in the error if it cannot be bound; a request whose
    line and headers pass `max_header_bytes` is refused (`HeaderLimit`; 0: hypercorn's 16 KiB
    buffer alone); a WebSocket message over `max_message_bytes` closes its connection (1009; 0:
    hypercorn's 16 MiB)."""
    if max_header_bytes:
        app = HeaderLimit(app, max_header_bytes)
    binds: list[str] = await nursery.start(
        _serve, app, laddr, max_connections, setting, max_header_bytes, max_message_bytes
    )
    return binds[0] if binds else laddr


def check_double_sign_risk(config: Config, blocks: BlockStore, address: bytes, last_height: int) -> None:
    """`[consensus] double_sign_check_height`: NodeStartError if this validator's key signed one of
    the last that many commits (CometBFT's checkDoubleSigningRisk, before consensus starts)."""
    lookback = config.consensus.double_sign_check_height
    found = recent_signature(blocks, address, last_height, lookback)
    if found is not None:
        raise NodeStartError(
            f"this validator's key signed the commit of height {found.height} (round {found.round}), "
            f"one of the last {lookback} blocks: another node may be signing with it; not starting "
            f"([consensus] double_sign_check_height = {lookback}; after a restart wait that many blocks)"
        )


def last_app_hash(blocks: BlockStore, height: int) -> bytes | None:
    """The app hash in the header of the stored block at `height` (None if it is not stored): with
    the chain state's, whether that block changed the app hash (`CommittedEvent`)."""
    raw = blocks.load_block(height) if height else None
    return None if raw is None else Block.decode(raw).header.app_hash


def metrics_app(app: Any, config: Config) -> Any:
    """The metrics endpoint's ASGI app, capped at `[instrumentation] max_open_connections` (0: no
    cap) by the RPC's own connection limit."""
    limit = config.instrumentation.max_open_connections
    return ConnectionLimit(app, limit) if limit > 0 else app
