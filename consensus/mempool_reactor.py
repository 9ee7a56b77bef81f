"""The mempool gossip reactor (channel 0x30): every admitted transaction goes to each peer at most
once, and never back to the peer it came from. A newly connected peer gets the pending ones. A
transaction a peer sends that the application refuses is not misbehaviour (the peer may have
checked it against another state); bytes over the size limit are.

A message carries several transactions (CometBFT's `Txs`: the canonical encoding of a list of
byte strings, at least one). Admitted transactions wait in a per-peer outbox, sent as one message
when it holds `BATCH_TXS` of them or `BATCH_BYTES`, and by `flush`, which the node calls every few
milliseconds; a received message's transactions are admitted together (`Mempool.check_txs`: one
signature batch, then check_tx each). A message that is not such a list, or that holds more than
`BATCH_TXS` or a transaction over the size limit, is misbehaviour.

With `broadcast` off in the mempool's config (`[mempool] broadcast = false`) nothing is sent:
peers' transactions are still received and admitted (CometBFT's behaviour).
"""

from __future__ import annotations

import logging
from typing import cast

from consensus.mempool import Mempool, MempoolError
from p2p.base import MEMPOOL_CHANNEL, ChannelDescriptor, Peer, PeerMisbehaved, peer_state
from primitives import codec
from primitives.hashing import sha256

log = logging.getLogger("derivd.mempool")

SENT = "mempool.sent"
OUTBOX = "mempool.outbox"
MAX_REMEMBERED = 20_000
BATCH_TXS = 500
"""most transactions in one message"""
BATCH_BYTES = 256 * 1024
"""an outbox holding this many bytes of transactions is sent at once (one larger transaction goes
alone)"""
_LIST_OVERHEAD = 5  # a msgpack array header, at most
_ITEM_OVERHEAD = 5  # a msgpack bin header, at most


class _Outbox:
    __slots__ = ("size", "txs")

    def __init__(self) -> None:
        self.txs: list[bytes] = []
        self.size = 0


class MempoolReactor:
    def __init__(self, mempool: Mempool) -> None:
        self.mempool = mempool
        self._peers: dict[str, Peer] = {}
        mempool.listeners.append(self._on_admitted)
        self.received = 0
        self.refused = 0

    def channels(self) -> list[ChannelDescriptor]:
        limit = self.mempool.config.max_tx_bytes
        return [
            ChannelDescriptor(
                MEMPOOL_CHANNEL,
                priority=5,
                send_queue_capacity=5_000,
                max_message_size=max(limit, BATCH_BYTES) + _LIST_OVERHEAD + BATCH_TXS * _ITEM_OVERHEAD,
            )
        ]

    def add_peer(self, peer: Peer) -> None:
        if not self.mempool.config.broadcast:
            return
        peer.set(SENT, set())
        peer.set(OUTBOX, _Outbox())
        self._peers[peer.id] = peer
        for tx_hash, tx in self.mempool.pending():
            self._send(peer, tx_hash, tx)
        self._flush_peer(peer)

    def remove_peer(self, peer: Peer, reason: str) -> None:
        self._peers.pop(peer.id, None)

    def receive(self, channel_id: int, peer: Peer, message: bytes) -> None:
        txs = self._txs_of(message)
        self.received += len(txs)
        sent = self._sent(peer)
        sent.update(sha256(tx) for tx in txs)  # it has them: never send them back
        results = self.mempool.check_txs(txs, source=peer.id)
        self.refused += sum(1 for result in results if isinstance(result, MempoolError))

    def flush(self) -> None:
        """Send every peer's waiting transactions now."""
        for peer in list(self._peers.values()):
            self._flush_peer(peer)

    def _txs_of(self, message: bytes) -> list[bytes]:
        limit = self.mempool.config.max_tx_bytes
        try:
            value = codec.decode(message, max_size=len(message))
        except codec.DecodeError as exc:
            raise PeerMisbehaved(f"a mempool message that is not a list of txs: {exc}") from None
        if not isinstance(value, list) or not value or len(value) > BATCH_TXS:
            raise PeerMisbehaved(f"a mempool message that is not a list of 1 to {BATCH_TXS} txs")
        for tx in value:
            if not isinstance(tx, bytes):
                raise PeerMisbehaved("a mempool message with a tx that is not a byte string")
            if len(tx) > limit:
                raise PeerMisbehaved(f"a transaction of {len(tx)} bytes")
        return value  # type: ignore[return-value]  # checked: bytes only

    def _sent(self, peer: Peer) -> set[bytes]:
        sent: set[bytes] = peer_state(peer, SENT, set)
        if len(sent) > MAX_REMEMBERED:
            pending = {tx_hash for tx_hash, _ in self.mempool.pending()}
            sent.intersection_update(pending)
        return sent

    def _send(self, peer: Peer, tx_hash: bytes, tx: bytes) -> None:
        sent = self._sent(peer)
        if tx_hash in sent:
            return
        outbox = peer_state(peer, OUTBOX, _Outbox)
        if outbox.txs and outbox.size + len(tx) > BATCH_BYTES:
            self._flush_peer(peer)
        sent.add(tx_hash)
        outbox.txs.append(tx)
        outbox.size += len(tx)
        if len(outbox.txs) >= BATCH_TXS or outbox.size >= BATCH_BYTES:
            self._flush_peer(peer)

    def _flush_peer(self, peer: Peer) -> None:
        outbox = peer_state(peer, OUTBOX, _Outbox)
        if not outbox.txs:
            return
        txs, outbox.txs, outbox.size = outbox.txs, [], 0
        if not peer.try_send(MEMPOOL_CHANNEL, codec.encode(cast("list[codec.Value]", txs))):
            self._sent(peer).difference_update(sha256(tx) for tx in txs)  # not sent after all

    def _on_admitted(self, tx: bytes, tx_hash: bytes, source: str) -> None:
        for peer in list(self._peers.values()):
            if peer.id != source:
                self._send(peer, tx_hash, tx)
