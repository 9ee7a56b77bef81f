"""State sync (channels 0x60 snapshots, 0x61 chunks): a new node restores a recent snapshot of the
application state from its peers instead of replaying every block, then block-syncs the rest.

Messages (canonical arrays): 1 snapshots request; 2 snapshot offer [height, format, chunks, hash,
manifest]; 3 chunk request [height, format, index]; 4 chunk [height, format, index, chunk,
missing]. Every node answers requests from its `SnapshotSource` (the application's kept
snapshots, `storage.snapshot`).

`StateSync.sync` (the new node's side): asks each peer for its snapshots during the discovery
time, then tries them highest first (and asks again, up to `DISCOVERY_ROUNDS` times, when every
offer failed: peers drop old snapshots). A snapshot is taken only if its manifest combines to the app
hash of its height that the light client verified (`verify_app_hash`); its chunks are asked of
the peers that offered it, a few at a time each, again of another after `chunk_timeout`; a chunk
that does not rebuild its manifest entry gets its sender banned. A lying manifest gets every peer
that offered it banned and the next snapshot tried. `state_after_snapshot` builds the chain state
of height H from the verified light blocks H, H + 1 and H + 2.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from consensus.light import LightBlock
from consensus.state import ChainState, ConsensusParams
from p2p.base import (
    STATESYNC_CHUNK_CHANNEL,
    STATESYNC_SNAPSHOT_CHANNEL,
    ChannelDescriptor,
    Peer,
    PeerMisbehaved,
)
from primitives.codec import DecodeError, Value, decode, encode, field_bytes, field_int, field_list
from storage.snapshot import CHUNKS, FORMAT, MAX_CHUNK_BYTES, Manifest, Restore, SnapshotError

log = logging.getLogger("derivd.statesync")

SNAPSHOTS_REQUEST, SNAPSHOT_OFFER, CHUNK_REQUEST, CHUNK = 1, 2, 3, 4
MAX_OFFERS = 10
"""snapshots a node offers at most (its newest)"""
CHUNKS_IN_FLIGHT_PER_PEER = 4
DISCOVERY_ROUNDS = 3
"""times the peers are asked for snapshots, each time the ones offered before are all tried"""
MAX_MESSAGE = MAX_CHUNK_BYTES + (1 << 20)


class StateSyncError(RuntimeError):
    """No snapshot could be restored; the message says why."""


class SnapshotSource(Protocol):
    """What a node serves: its application's kept snapshots."""

    def snapshots(self) -> list[Manifest]: ...

    def snapshot_chunk(self, height: int, index: int) -> bytes | None: ...


def _message(kind: int, *fields: Value) -> bytes:
    return encode([kind, *fields])


@dataclass
class _Offer:
    manifest: Manifest
    peers: set[str] = field(default_factory=set)


class StateSync:
    """The reactor: serves snapshots and chunks; `sync` restores one (module docstring)."""

    def __init__(self, source: SnapshotSource | None, ban: Callable[[str, str], None]) -> None:
        self.source = source
        self.ban = ban
        self.syncing = False
        self._peers: dict[str, Peer] = {}
        self._offers: dict[bytes, _Offer] = {}  # manifest hash -> offer
        self._offered: dict[str, int] = {}  # peer -> new offers kept from it this round (MAX_OFFERS)
        self._chunks: dict[
            int, tuple[str, bytes]
        ] = {}  # index -> (peer, chunk) of the snapshot being fetched
        self._asked: dict[int, tuple[str, float]] = {}  # index -> (peer, when)
        self._fetching: Manifest | None = None
        self._wake = trio.Event()

    # -- Reactor --------------------------------------------------------------------------------

    def channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                STATESYNC_SNAPSHOT_CHANNEL, priority=6, send_queue_capacity=10, max_message_size=1 << 20
            ),
            ChannelDescriptor(
                STATESYNC_CHUNK_CHANNEL, priority=3, send_queue_capacity=16, max_message_size=MAX_MESSAGE
            ),
        ]

    def add_peer(self, peer: Peer) -> None:
        self._peers[peer.id] = peer
        if self.syncing:
            peer.try_send(STATESYNC_SNAPSHOT_CHANNEL, _message(SNAPSHOTS_REQUEST))

    def remove_peer(self, peer: Peer, reason: str) -> None:
        self._peers.pop(peer.id, None)
        self._wake.set()

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        try:
            fields = field_list(decode(message, max_size=MAX_MESSAGE), "state sync message")
            kind = field_int(fields[0], "state sync message.kind") if fields else 0
            if kind == SNAPSHOTS_REQUEST and len(fields) == 1:
                self._offer(peer)
            elif kind == SNAPSHOT_OFFER and len(fields) == 6:
                self._on_offer(peer, fields)
            elif kind == CHUNK_REQUEST and len(fields) == 4:
                self._serve_chunk(peer, field_int(fields[1], "height"), field_int(fields[3], "index"))
            elif kind == CHUNK and len(fields) == 6:
                self._on_chunk(peer, fields)
            else:
                raise DecodeError(f"unknown state sync message {kind}")
        except (DecodeError, SnapshotError) as exc:
            raise PeerMisbehaved(f"undecodable state sync message: {exc}") from exc

    def _offer(self, peer: Peer) -> None:
        for manifest in (self.source.snapshots() if self.source is not None else [])[-MAX_OFFERS:]:
            offer = _message(
                SNAPSHOT_OFFER, manifest.height, FORMAT, CHUNKS, manifest.hash, manifest.encode()
            )
            peer.try_send(STATESYNC_SNAPSHOT_CHANNEL, offer)

    def _on_offer(self, peer: Peer, fields: list[Value]) -> None:
        if not self.syncing:
            return
        if field_int(fields[2], "format") != FORMAT or field_int(fields[3], "chunks") != CHUNKS:
            return  # a format this node does not restore
        manifest = Manifest.decode(field_bytes(fields[5], "manifest"))
        if manifest.height != field_int(fields[1], "height") or manifest.hash != field_bytes(
            fields[4], "hash"
        ):
            raise SnapshotError("the offer's height or hash is not its manifest's")
        offer = self._offers.get(manifest.hash)
        if offer is not None and peer.id in offer.peers:
            return
        if self._offered.get(peer.id, 0) >= MAX_OFFERS:
            return  # a peer's offers beyond its share of this round are not kept
        self._offered[peer.id] = self._offered.get(peer.id, 0) + 1
        self._offers.setdefault(manifest.hash, _Offer(manifest)).peers.add(peer.id)
        self._wake.set()

    def _serve_chunk(self, peer: Peer, height: int, index: int) -> None:
        chunk = self.source.snapshot_chunk(height, index) if self.source is not None else None
        reply = _message(CHUNK, height, FORMAT, index, chunk or b"", 1 if chunk is None else 0)
        peer.try_send(STATESYNC_CHUNK_CHANNEL, reply)

    def _on_chunk(self, peer: Peer, fields: list[Value]) -> None:
        index = field_int(fields[3], "index")
        asked = self._asked.get(index)
        fetching = self._fetching
        if (
            fetching is None
            or asked is None
            or asked[0] != peer.id
            or field_int(fields[1], "height") != fetching.height
        ):
            return  # not asked of this peer (or too late)
        del self._asked[index]
        if field_int(fields[5], "missing"):
            log.info("peer %s no longer has chunk %d of the snapshot at %d", peer.id, index, fetching.height)
            offer = self._offers.get(fetching.hash)
            if offer is not None:
                offer.peers.discard(peer.id)
        else:
            self._chunks[index] = (peer.id, field_bytes(fields[4], "chunk", max_size=MAX_CHUNK_BYTES))
        self._wake.set()

    # -- syncing --------------------------------------------------------------------------------

    async def sync(
        self,
        verify_app_hash: Callable[[int], bytes],
        start: Callable[[Manifest], Restore],
        *,
        discovery_time: float,
        chunk_timeout: float,
    ) -> Restore:
        """Discover, choose, fetch and check a snapshot; the Restore holding all of it (not yet
        finished). `verify_app_hash(H)` is the light-verified app hash of height H (it may block:
        it runs on a thread, and raises to skip H); `start(manifest)` a Restore for it."""
        self.syncing = True
        tried: set[bytes] = set()
        rounds = 0
        try:
            while True:
                offers = sorted(
                    (o for h, o in self._offers.items() if h not in tried and o.peers),
                    key=lambda o: (-o.manifest.height, -len(o.peers)),
                )
                if not offers:
                    if rounds == DISCOVERY_ROUNDS:
                        raise StateSyncError(f"no snapshot could be restored ({len(tried)} tried)")
                    rounds += 1
                    self._offered = {}
                    for peer in self._peers.values():
                        peer.try_send(STATESYNC_SNAPSHOT_CHANNEL, _message(SNAPSHOTS_REQUEST))
                    await trio.sleep(
                        discovery_time
                    )  # the reactor's timer, not state: offers arrive meanwhile
                    continue
                offer = offers[0]
                tried.add(offer.manifest.hash)
                try:
                    app_hash = await trio.to_thread.run_sync(verify_app_hash, offer.manifest.height)
                except Exception as exc:  # the light client's refusal: this height cannot be trusted
                    log.warning("snapshot at %d skipped: %s", offer.manifest.height, exc)
                    continue
                try:
                    offer.manifest.check(app_hash)
                except SnapshotError as exc:
                    log.warning("snapshot at %d refused: %s", offer.manifest.height, exc)
                    for peer_id in offer.peers:
                        self.ban(peer_id, f"lying snapshot at {offer.manifest.height}: {exc}")
                    continue
                restore = await self._fetch(offer, start(offer.manifest), chunk_timeout)
                if restore is not None:
                    return restore
        finally:
            self.syncing = False
            self._fetching = None

    async def _fetch(self, offer: _Offer, restore: Restore, chunk_timeout: float) -> Restore | None:
        """Every chunk of `offer`'s snapshot into `restore`; None if no peer can give them."""
        self._fetching, self._chunks, self._asked = offer.manifest, {}, {}
        timed_out: dict[int, set[str]] = {}  # chunk index -> peers that let a request for it time out
        while restore.missing:
            self._wake = trio.Event()  # before any request: an answer that comes at once sets it
            for index, (peer_id, chunk) in list(self._chunks.items()):
                del self._chunks[index]
                try:
                    restore.add(index, chunk)
                except SnapshotError as exc:
                    offer.peers.discard(peer_id)
                    self.ban(peer_id, f"bad snapshot chunk: {exc}")
            peers = [p for p in sorted(offer.peers) if p in self._peers]
            if not peers:
                log.warning("snapshot at %d: no peer left to give its chunks", offer.manifest.height)
                return None
            now = trio.current_time()
            for index, (peer_id, when) in list(self._asked.items()):
                if now - when > chunk_timeout or peer_id not in peers:
                    del self._asked[index]
                    timed_out.setdefault(index, set()).add(peer_id)
            load = {p: sum(1 for asked, _ in self._asked.values() if asked == p) for p in peers}
            for index in restore.missing:
                if index in self._asked or index in self._chunks:
                    continue
                failed = timed_out.get(index, set())
                peer_id = min(peers, key=lambda p: (p in failed, load[p], p))  # another, if there is one
                if load[peer_id] >= CHUNKS_IN_FLIGHT_PER_PEER:
                    break
                request = _message(CHUNK_REQUEST, offer.manifest.height, FORMAT, index)
                self._asked[index] = (peer_id, now)  # before the send: the answer may come at once
                if self._peers[peer_id].try_send(STATESYNC_CHUNK_CHANNEL, request):
                    load[peer_id] += 1
                else:
                    del self._asked[index]
            with trio.move_on_after(0.1):  # the reactor's timer, not state: also re-checks timeouts
                await self._wake.wait()
        return restore


def state_after_snapshot(
    blocks: tuple[LightBlock, LightBlock, LightBlock], initial_height: int, params: ConsensusParams
) -> ChainState:
    """The chain state after height H from the verified light blocks H, H + 1, H + 2 (CometBFT's
    state provider); `params` must be those block H + 1 names."""
    at, after, next_ = blocks
    if (after.height, next_.height) != (at.height + 1, at.height + 2):
        raise StateSyncError("state sync needs the light blocks of H, H + 1 and H + 2")
    if params.hash() != after.header.consensus_hash:  # sha256 of the canonical params, not hash()
        raise StateSyncError(f"the consensus parameters changed before height {after.height}: not supported")
    return ChainState(
        chain_id=at.header.chain_id,
        initial_height=initial_height,
        last_block_height=at.height,
        last_block_id=after.header.last_block_id,
        last_block_time=at.header.time,
        validators=after.validators,
        next_validators=next_.validators,
        last_validators=at.validators,
        last_height_validators_changed=after.height,
        params=params,
        last_results_hash=after.header.last_results_hash,
        app_hash=after.header.app_hash,
    )
