"""The mempool gossip reactor (channel 0x30): every admitted transaction goes to each peer at most
once, and never back to the peer it came from. A newly connected peer gets the pending ones. A
transaction a peer sends that the application refuses is not misbehaviour (the peer may have
checked it against another state); bytes over the size limit are."""

from __future__ import annotations

import logging

from consensus.mempool import Mempool, MempoolError
from p2p.base import MEMPOOL_CHANNEL, ChannelDescriptor, Peer, PeerMisbehaved
from primitives.hashing import sha256

log = logging.getLogger("derivd.mempool")

SENT = "mempool.sent"
MAX_REMEMBERED = 20_000


class MempoolReactor:
    def __init__(self, mempool: Mempool) -> None:
        self.mempool = mempool
        self._peers: dict[str, Peer] = {}
        mempool.listeners.append(self._on_admitted)
        self.received = 0
        self.refused = 0

    def channels(self) -> list[ChannelDescriptor]:
        return [
            ChannelDescriptor(
                MEMPOOL_CHANNEL,
                priority=5,
                send_queue_capacity=5_000,
                max_message_size=self.mempool.config.max_tx_bytes,
            )
        ]

    def add_peer(self, peer: Peer) -> None:
        peer.set(SENT, set())
        self._peers[peer.id] = peer
        for tx_hash, tx in self.mempool.pending():
            self._send(peer, tx_hash, tx)

    def remove_peer(self, peer: Peer, reason: str) -> None:
        self._peers.pop(peer.id, None)

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        if len(message) > self.mempool.config.max_tx_bytes:
            raise PeerMisbehaved(f"a transaction of {len(message)} bytes")
        self.received += 1
        sent = self._sent(peer)
        sent.add(sha256(message))  # it has it: never send it back
        try:
            self.mempool.check_tx(message, source=peer.id)
        except MempoolError:
            self.refused += 1

    def _sent(self, peer: Peer) -> set[bytes]:
        sent = peer.get(SENT)
        if not isinstance(sent, set):
            sent = set()
            peer.set(SENT, sent)
        if len(sent) > MAX_REMEMBERED:
            pending = {tx_hash for tx_hash, _ in self.mempool.pending()}
            sent.intersection_update(pending)
        return sent

    def _send(self, peer: Peer, tx_hash: bytes, tx: bytes) -> None:
        sent = self._sent(peer)
        if tx_hash not in sent and peer.try_send(MEMPOOL_CHANNEL, tx):
            sent.add(tx_hash)

    def _on_admitted(self, tx: bytes, tx_hash: bytes, source: str) -> None:
        for peer in list(self._peers.values()):
            if peer.id != source:
                self._send(peer, tx_hash, tx)
