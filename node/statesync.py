"""The node's state sync (`[statesync] enable = true` on a node with no state yet): before the
node starts, a switch of its own (loopback port chosen by the system, the configured peers dialed)
runs `consensus.statesync.StateSync` to restore a snapshot; the light client (`rpc_servers`,
`trust_height`, `trust_hash`, `trust_period`) verifies the app hash each snapshot must combine to
and the blocks H, H + 1, H + 2 the chain state is built from. One synced batch then writes the
application state (flat keys and state tree), `APP_META` and the block time of H, the chain state,
the validator sets of H + 1 and H + 2 and the commit of H; the node then starts as after a restart
at height H and block-syncs from H + 1.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import trio

from consensus.light import LightError, TrustOptions
from consensus.state import ConsensusParams
from consensus.statesync import StateSync, StateSyncError, state_after_snapshot
from execution.app import AppMeta
from execution.indexes import add_to_restore
from genesis.genesis import GenesisDoc
from node.client import rpc_caller
from node.config import Config
from node.light import RPCProvider, anchor_from_hash, wait_for_block
from node.light_proxy import LightSession
from node.sdk.errors import RPCError
from p2p.base import NodeInfo
from p2p.switch import P2PSettings, Switch
from primitives import codec
from primitives.keys import PrivateKey
from storage import schema
from storage.blockstore import BlockStore
from storage.db import Database
from storage.snapshot import Manifest, Restore
from storage.statestore import StateStore
from storage.statetree import StateTree

log = logging.getLogger("derivd.statesync")


def _http(server: str) -> str:
    """An `rpc_servers` entry ("host:port", "tcp://host:port" or "http(s)://...") as a URL."""
    if server.startswith(("http://", "https://")):
        return server
    return "http://" + server.removeprefix("tcp://")


async def restore_from_peers(
    config: Config,
    doc: GenesisDoc,
    params: ConsensusParams,
    db: Database,
    node_key: PrivateKey,
    info: NodeInfo,
    settings: P2PSettings,
) -> int:
    """Restore the newest snapshot the light client can verify; the height restored.
    StateSyncError (or LightError) says why it could not."""
    s = config.statesync
    servers = [_http(u.strip()) for u in s.rpc_servers.split(",") if u.strip()]
    if not servers or s.trust_height <= 0 or not s.trust_hash:
        raise StateSyncError("[statesync] enable needs rpc_servers, trust_height and trust_hash")
    call = rpc_caller(servers[0])
    try:
        anchor = await trio.to_thread.run_sync(
            lambda: anchor_from_hash(
                RPCProvider(call), doc.chain_id, s.trust_height, bytes.fromhex(s.trust_hash)
            )
        )
    except (RPCError, ValueError) as exc:
        raise StateSyncError(f"the trusted block: {exc}") from None
    session = LightSession(call, anchor, TrustOptions(trusting_period=s.trust_period))

    def app_hash_of(height: int) -> bytes:
        wait_for_block(call, height + 2)  # the chain state needs H + 1 and H + 2
        return session.verified(height + 1).header.app_hash

    tree = StateTree(db)
    switches: list[Switch] = []

    def ban(peer_id: str, reason: str) -> None:
        for sw in switches:
            sw.stop_peer_for_error(peer_id, reason)

    reactor = StateSync(None, ban)
    switch = Switch(
        node_key, info, replace(settings, listen_host="127.0.0.1", listen_port=0, pex=False), [reactor]
    )
    switches.append(switch)
    restore: Restore | None = None
    failure: StateSyncError | None = None
    async with trio.open_nursery() as nursery:
        await nursery.start(switch.run)
        try:
            restore = await reactor.sync(
                app_hash_of,
                lambda manifest: Restore(tree, manifest),
                discovery_time=s.discovery_time / 1e9,
                chunk_timeout=s.chunk_request_timeout / 1e9,
            )
        except StateSyncError as exc:
            failure = exc  # raised below, not out of the nursery (which would wrap it in a group)
        nursery.cancel_scope.cancel()
    if restore is None:
        raise failure or StateSyncError("state sync was cancelled")
    manifest: Manifest = restore.manifest
    height = manifest.height
    try:
        blocks = await trio.to_thread.run_sync(
            lambda: (session.verified(height), session.verified(height + 1), session.verified(height + 2))
        )
    except (LightError, RPCError) as exc:
        raise StateSyncError(f"the blocks around the snapshot: {exc}") from None
    state = state_after_snapshot(blocks, doc.initial_height, params)
    batch = restore.finish()
    add_to_restore(batch)  # a snapshot carries the state tree's keys only
    batch.put(schema.APP_META, AppMeta(height, state.app_hash).encode())
    batch.put(schema.APP_BLOCK_TIME, codec.encode(blocks[0].header.time))
    states = StateStore(db)
    states.save(batch, state.encode())
    states.save_validators(batch, height + 1, codec.encode(state.validators.to_fields()))
    states.save_validators(batch, height + 2, codec.encode(state.next_validators.to_fields()))
    BlockStore(db).save_seen_commit(batch, height, blocks[0].commit.encode())
    db.write(batch, sync=True)
    log.info("state sync restored height %d (app hash %s)", height, state.app_hash.hex().upper())
    return height
