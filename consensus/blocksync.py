"""Block sync (channel 0x40): a node that is behind, new or restarted after a long stop, fetches
committed blocks with their commits from peers, verifies each commit with the batch verifier
and each block against its state, executes them, and hands over to consensus once it has
reached the highest height its peers report.

Messages (canonical arrays): 1 status request, 2 status response [base, height], 3 block
request [height], 4 block response [block, commit], 5 no block [height]. Requests are pipelined
over a window of heights, at most `MAX_PENDING_PER_PEER` outstanding per peer (CometBFT: 20),
re-requested from another peer after `REQUEST_TIMEOUT`. A block or commit that does not verify
gets the peer that sent it banned. The reactor keeps answering other nodes' requests after the
hand-over. On a terminal it shows a progress bar (height / target, blocks per second).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Never

import trio
from tqdm import tqdm

from consensus.execution import BlockExecutor
from consensus.state import BlockError, ChainState, validate_block
from consensus.types import MAX_BLOCK_BYTES, Block, Commit
from consensus.votes import CommitError, SignatureCheck, verify_commit
from p2p.base import BLOCKSYNC_CHANNEL, ChannelDescriptor, Peer, PeerMisbehaved
from primitives.codec import DecodeError, Value, decode, encode, field_int, field_list
from storage.blockstore import BlockStore

log = logging.getLogger("derivd.blocksync")

STATUS_REQUEST, STATUS_RESPONSE, BLOCK_REQUEST, BLOCK_RESPONSE, NO_BLOCK = 1, 2, 3, 4, 5
MAX_PENDING_PER_PEER = 20
WINDOW = 64
REQUEST_TIMEOUT = 10.0
STATUS_INTERVAL = 10.0
MAX_MESSAGE = MAX_BLOCK_BYTES + (4 << 20)


@dataclass
class PeerStatus:
    peer: Peer
    base: int = 0
    height: int = 0
    pending: dict[int, float] = field(default_factory=dict)
    """requested height -> when"""
    timed_out: set[int] = field(default_factory=set)
    """heights this peer was asked for and did not deliver in time (asked of others first)"""


@dataclass(frozen=True, slots=True)
class _Response:
    block: Block
    commit: Commit
    peer_id: str


def _encode(kind: int, *fields: Value) -> bytes:
    return encode([kind, *fields])


class BlockSync:
    """Fetches, verifies and executes blocks until caught up; serves blocks to peers."""

    def __init__(
        self,
        executor: BlockExecutor,
        blocks: BlockStore,
        state: ChainState,
        check: SignatureCheck,
        ban: Callable[[str, str], None],
        status_wait: float = 2.0,
        on_applied: Callable[[ChainState, tuple[bytes, ...]], None] | None = None,
    ) -> None:
        """`on_applied(state, evidence)` is told of each applied block (the evidence pool)."""
        self.on_applied = on_applied
        self.executor = executor
        self.blocks = blocks
        self.state = state
        self.check = check
        self.ban = ban
        self.status_wait = status_wait
        self.syncing = True
        self.synced_blocks = 0
        self._peers: dict[str, PeerStatus] = {}
        self._responses: dict[int, _Response] = {}
        self._wake = trio.Event()

    # -- Reactor --------------------------------------------------------------------------------

    def channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                BLOCKSYNC_CHANNEL, priority=5, send_queue_capacity=1000, max_message_size=MAX_MESSAGE
            )
        ]

    def add_peer(self, peer: Peer) -> None:
        self._peers[peer.id] = PeerStatus(peer)
        peer.try_send(BLOCKSYNC_CHANNEL, _encode(STATUS_REQUEST))
        peer.try_send(BLOCKSYNC_CHANNEL, _encode(STATUS_RESPONSE, self.blocks.base, self.blocks.height))

    def remove_peer(self, peer: Peer, reason: str) -> None:
        self._peers.pop(peer.id, None)
        self._wake.set()

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        try:
            fields = field_list(decode(message, max_size=MAX_MESSAGE), "block sync message")
            kind = field_int(fields[0], "block sync message.kind") if fields else 0
            if kind == STATUS_REQUEST:
                peer.try_send(
                    BLOCKSYNC_CHANNEL, _encode(STATUS_RESPONSE, self.blocks.base, self.blocks.height)
                )
            elif kind == STATUS_RESPONSE and len(fields) == 3:
                status = self._peers.get(peer.id)
                if status is not None:
                    status.base = field_int(fields[1], "status.base")
                    status.height = field_int(fields[2], "status.height")
                    self._wake.set()
            elif kind == BLOCK_REQUEST and len(fields) == 2:
                self._serve(peer, field_int(fields[1], "block request.height"))
            elif kind == BLOCK_RESPONSE and len(fields) == 3:
                self._on_block(peer, Block.from_fields(fields[1]), Commit.from_fields(fields[2]))
            elif kind == NO_BLOCK and len(fields) == 2:
                status = self._peers.get(peer.id)
                if status is not None:
                    status.pending.pop(field_int(fields[1], "no block.height"), None)
            else:
                raise DecodeError(f"unknown block sync message {kind}")
        except DecodeError as exc:
            raise PeerMisbehaved(f"undecodable block sync message: {exc}") from exc

    def _serve(self, peer: Peer, height: int) -> None:
        block, commit = self.blocks.load_block(height), self.blocks.load_seen_commit(height)
        if block is None or commit is None:
            peer.try_send(BLOCKSYNC_CHANNEL, _encode(NO_BLOCK, height))
            return
        peer.try_send(BLOCKSYNC_CHANNEL, _encode(BLOCK_RESPONSE, decode(block), decode(commit)))

    def _on_block(self, peer: Peer, block: Block, commit: Commit) -> None:
        status = self._peers.get(peer.id)
        if status is None or status.pending.pop(block.height, None) is None:
            return  # not asked of this peer (or too late): ignore
        if block.height >= self.state.height and block.height not in self._responses:
            self._responses[block.height] = _Response(block, commit, peer.id)
            self._wake.set()

    # -- syncing --------------------------------------------------------------------------------

    def max_peer_height(self) -> int:
        return max((p.height for p in self._peers.values()), default=0)

    async def sync(self) -> tuple[ChainState, Commit | None]:
        """Run until caught up; return the state to start consensus from and its last commit."""
        started = trio.current_time()
        last_status = started
        bar: tqdm[Never] | None = None
        try:
            while True:
                now = trio.current_time()
                if now - last_status > STATUS_INTERVAL:
                    last_status = now
                    for status in self._peers.values():
                        status.peer.try_send(BLOCKSYNC_CHANNEL, _encode(STATUS_REQUEST))
                self._apply_ready()
                target = self.max_peer_height()
                if target > self.state.last_block_height and bar is None and sys.stderr.isatty():
                    bar = tqdm(
                        total=target,
                        initial=self.state.last_block_height,
                        unit="block",
                        desc="block sync",
                        file=sys.stderr,
                    )
                if bar is not None:
                    bar.total = max(target, self.state.last_block_height)
                    bar.n = self.state.last_block_height
                    bar.refresh()
                if now - started >= self.status_wait and target <= self.state.last_block_height:
                    break
                self._request(now)
                self._wake = trio.Event()
                with trio.move_on_after(0.1):  # also re-checks timeouts and the status wait
                    await self._wake.wait()
        finally:
            if bar is not None:
                bar.close()
        self.syncing = False
        raw = (
            self.blocks.load_seen_commit(self.state.last_block_height)
            if self.state.last_block_height
            else None
        )
        if self.synced_blocks:
            log.info(
                "block sync done at height %d (%d blocks)", self.state.last_block_height, self.synced_blocks
            )
        return self.state, Commit.decode(raw) if raw is not None else None

    def _request(self, now: float) -> None:
        """Ask for every missing height of the window: of the peers that have it and are not
        saturated, the one that has not timed out on it and has the fewest requests outstanding
        first; a peer whose send queue is full is passed over for the next."""
        for status in self._peers.values():
            for height, asked in list(status.pending.items()):
                if now - asked > REQUEST_TIMEOUT:
                    del status.pending[height]
                    status.timed_out.add(height)
            status.timed_out = {h for h in status.timed_out if h >= self.state.height}
        requested = {h for s in self._peers.values() for h in s.pending}
        for height in range(self.state.height, self.state.height + WINDOW):
            if height in self._responses or height in requested:
                continue
            candidates = sorted(
                (
                    s
                    for s in self._peers.values()
                    if s.base <= height <= s.height and len(s.pending) < MAX_PENDING_PER_PEER
                ),
                key=lambda s: (height in s.timed_out, len(s.pending), s.peer.id),
            )
            for chosen in candidates:
                if chosen.peer.try_send(BLOCKSYNC_CHANNEL, _encode(BLOCK_REQUEST, height)):
                    chosen.pending[height] = now
                    break

    def _drop_bad_peer(self, peer_id: str, reason: str) -> None:
        """Ban `peer_id` once and forget it: its outstanding requests and the blocks it sent that
        are not applied yet go with it (they are asked of other peers)."""
        log.warning("peer %s: %s", peer_id, reason)
        self._peers.pop(peer_id, None)
        for height in [h for h, r in self._responses.items() if r.peer_id == peer_id]:
            del self._responses[height]
        self.ban(peer_id, reason)

    def _apply_ready(self) -> None:
        while (response := self._responses.pop(self.state.height, None)) is not None:
            block, commit = response.block, response.commit
            state = self.state
            try:
                if commit.block_id.hash != block.hash:
                    raise CommitError("the commit is for another block")
                verify_commit(
                    state.chain_id, state.validators, commit.block_id, block.height, commit, self.check
                )
                validate_block(state, block, self.check)
            except (CommitError, BlockError) as exc:
                self._drop_bad_peer(response.peer_id, f"bad block {block.height} in block sync: {exc}")
                continue
            self.state = self.executor.apply_block(state, block, commit.block_id, commit)
            self.synced_blocks += 1
            if self.on_applied is not None:
                self.on_applied(self.state, block.evidence)
