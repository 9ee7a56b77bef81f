"""State sync's reactor: a new node fetches a snapshot from peers (through reactors wired back to
back), refuses a lying chunk or manifest and bans its sender, and builds the chain state."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from consensus.state import ConsensusParams
from consensus.statesync import MAX_OFFERS, StateSync, StateSyncError, state_after_snapshot
from primitives import codec
from storage.db import Database
from storage.snapshot import Manifest, Restore, make_chunk, make_manifest
from storage.statetree import StateTree
from tests.consensus.fakes import FakePeer
from tests.consensus.light_chain import LinkedChain, vset

HEIGHT = 7


@dataclass
class Source:
    """A node's snapshots: the tree's version HEIGHT; `lie` changes one chunk."""

    tree: StateTree
    lie: bool = False
    served: list[int] = field(default_factory=list)

    def snapshots(self) -> list[Manifest]:
        return [make_manifest(self.tree, HEIGHT)]

    def snapshot_chunk(self, height: int, index: int) -> bytes | None:
        self.served.append(index)
        chunk = make_chunk(self.tree, height, index)
        if self.lie and index == 9:
            pairs = codec.decode(chunk)
            assert isinstance(pairs, list) and pairs
            return codec.encode([[pairs[0][0], b"lie"], *pairs[1:]])  # type: ignore[index]
        return chunk


@dataclass
class Wire(FakePeer):
    """A peer whose sends reach `to` at once, as coming from `back`."""

    to: StateSync | None = None
    back: FakePeer | None = None

    def try_send(self, channel_id: int, message: bytes) -> bool:
        assert self.to is not None and self.back is not None
        self.to.receive(channel_id, self.back, message)
        return True


def _tree(path: Path) -> StateTree:
    tree = StateTree(Database(path))
    tree.apply(HEIGHT, [(b"a:key%d" % i, b"value%d" % i) for i in range(2000)])
    return tree


def _connect(client: StateSync, server: StateSync, name: str) -> None:
    to_server, to_client = Wire(name), Wire("client")
    to_server.to, to_server.back = server, to_client
    to_client.to, to_client.back = client, to_server
    client.add_peer(to_server)
    server.add_peer(to_client)


async def test_a_snapshot_is_fetched_and_a_liar_banned(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "server")
    banned: list[tuple[str, str]] = []
    client = StateSync(None, lambda peer, reason: banned.append((peer, reason)))
    liar, honest = Source(tree, lie=True), Source(tree)
    _connect(client, StateSync(liar, lambda p, r: None), "liar")
    _connect(client, StateSync(honest, lambda p, r: None), "honest")
    fresh = StateTree(Database(tmp_path / "client"))
    restore = await client.sync(
        tree.root_at,
        lambda manifest: Restore(fresh, manifest),
        discovery_time=0.05,
        chunk_timeout=5,
    )
    assert restore.missing == []
    assert [peer for peer, _ in banned] == ["liar"] and "chunk 9 does not rebuild" in banned[0][1]
    assert honest.served and liar.served, "chunks were asked of both peers"
    restore.finish()
    assert fresh.root_hash == tree.root_at(HEIGHT)


async def test_a_manifest_for_another_app_hash_gets_its_offerers_banned(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "server")
    banned: list[str] = []
    client = StateSync(None, lambda peer, reason: banned.append(peer))
    _connect(client, StateSync(Source(tree), lambda p, r: None), "one")
    _connect(client, StateSync(Source(tree), lambda p, r: None), "two")
    with pytest.raises(StateSyncError, match="no snapshot could be restored \\(1 tried\\)"):
        await client.sync(
            lambda height: b"\x05" * 32,  # what the light client says the app hash is
            lambda manifest: Restore(StateTree(Database(tmp_path / "client")), manifest),
            discovery_time=0.05,
            chunk_timeout=5,
        )
    assert sorted(banned) == ["one", "two"]


def test_the_chain_state_after_a_snapshot() -> None:
    chain = LinkedChain(vset(range(4)), 12)
    blocks = (chain.blocks[9], chain.blocks[10], chain.blocks[11])
    params = ConsensusParams()
    with pytest.raises(StateSyncError, match="consensus parameters changed"):
        state_after_snapshot(blocks, 1, params)  # the test chain's headers name another hash
    chain = LinkedChain(vset(range(4)), 12)
    for height in chain.blocks:
        chain.forge(height, consensus_hash=params.hash())
    blocks = (chain.blocks[9], chain.blocks[10], chain.blocks[11])
    state = state_after_snapshot(blocks, 1, params)
    assert (state.last_block_height, state.height) == (9, 10)
    assert state.app_hash == blocks[1].header.app_hash and state.last_block_time == blocks[0].header.time
    assert state.validators.hash() == blocks[1].header.validators_hash
    with pytest.raises(StateSyncError, match="H, H \\+ 1 and H \\+ 2"):
        state_after_snapshot((blocks[0], blocks[2], blocks[1]), 1, params)


def test_a_peer_gets_a_bounded_share_of_offers(tmp_path: Path) -> None:
    tree = _tree(tmp_path / "server")
    client = StateSync(None, lambda peer, reason: None)
    client.syncing = True
    peer = FakePeer("flooder")
    client.add_peer(peer)
    for height in range(1, 16):
        tree.apply(HEIGHT + height, [(b"a:n", b"%d" % height)])
        manifest = make_manifest(tree, HEIGHT + height)
        offer = codec.encode([2, manifest.height, 1, 256, manifest.hash, manifest.encode()])
        client.receive(0x60, peer, offer)
        client.receive(0x60, peer, offer)  # the same offer again counts once
    assert len(client._offers) == MAX_OFFERS
