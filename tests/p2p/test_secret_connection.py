"""The secret connection: key agreement, framing, the handshake round trip, and each way it
must fail (bad signature, tampered, replayed or oversized frames, low-order keys, garbage,
reflection, a peer that hangs up, a handshake over the timeout)."""

from __future__ import annotations

import os
import re
from collections.abc import Awaitable, Callable
from functools import partial

import pytest
import trio
import trio.testing
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from p2p.errors import ConnectionClosed, FrameError, HandshakeError
from p2p.nodekey import node_id
from p2p.secret_connection import (
    EPHEMERAL_MESSAGE_SIZE,
    FRAME_DATA_SIZE,
    SEALED_FRAME_SIZE,
    AuthMessage,
    EphemeralKeyMessage,
    FrameOpener,
    FrameSealer,
    SecretConnection,
    compute_shared_secret,
    derive_session_keys,
    handshake,
)
from p2p.secret_connection import challenge_sign_bytes as challenge_bytes
from primitives.keys import PrivateKey
from tests.p2p.helpers import intercepted_pair

TIMEOUT = 5.0


async def both_handshakes(
    a_stream: trio.abc.Stream, b_stream: trio.abc.Stream, a_key: PrivateKey, b_key: PrivateKey
) -> tuple[SecretConnection, SecretConnection]:
    results: dict[str, SecretConnection] = {}

    async def side(name: str, stream: trio.abc.Stream, key: PrivateKey, remote: str) -> None:
        results[name] = await handshake(stream, key, TIMEOUT, remote=remote)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(side, "a", a_stream, a_key, "node b")
        nursery.start_soon(side, "b", b_stream, b_key, "node a")
    return results["a"], results["b"]


async def handshake_against(
    other_end: Callable[[], Awaitable[object]], stream: trio.abc.Stream, remote: str
) -> SecretConnection:
    """Our handshake while `other_end` plays the remote; its error raised bare (not in a group)."""
    outcome: list[SecretConnection | HandshakeError] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(other_end)
        try:
            outcome.append(await handshake(stream, PrivateKey.generate(), TIMEOUT, remote=remote))
        except HandshakeError as exc:
            outcome.append(exc)
        nursery.cancel_scope.cancel()
    if isinstance(outcome[0], HandshakeError):
        raise outcome[0]
    return outcome[0]


async def receive_raw(stream: trio.abc.Stream, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = await stream.receive_some(size - len(data))
        assert chunk
        data += chunk
    return bytes(data)


class RawPeer:
    """The other end done by hand, so that it can misbehave."""

    def __init__(self, stream: trio.abc.Stream, key: PrivateKey) -> None:
        self.stream = stream
        self.key = key
        self.sealer: FrameSealer | None = None
        self.opener: FrameOpener | None = None

    async def handshake(self, *, sign_with: PrivateKey | None = None) -> None:
        ephemeral = X25519PrivateKey.generate()
        ours = ephemeral.public_key().public_bytes_raw()
        await self.stream.send_all(EphemeralKeyMessage(ours).encode())
        theirs = EphemeralKeyMessage.decode(await receive_raw(self.stream, EPHEMERAL_MESSAGE_SIZE)).key
        keys = derive_session_keys(ours, theirs, compute_shared_secret(ephemeral, theirs))
        self.sealer, self.opener = FrameSealer(keys.send_key), FrameOpener(keys.receive_key)
        signer = sign_with or self.key
        auth = AuthMessage(self.key.public_key.raw, signer.sign(challenge_bytes(keys.challenge))).encode()
        await self.stream.send_all(self.sealer.seal(len(auth).to_bytes(4, "big") + auth))


# -- pure parts ----------------------------------------------------------------------------------


def test_both_sides_derive_matching_keys_and_challenge() -> None:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a_pub, b_pub = a.public_key().public_bytes_raw(), b.public_key().public_bytes_raw()
    a_keys = derive_session_keys(a_pub, b_pub, compute_shared_secret(a, b_pub))
    b_keys = derive_session_keys(b_pub, a_pub, compute_shared_secret(b, a_pub))
    assert a_keys.send_key == b_keys.receive_key
    assert a_keys.receive_key == b_keys.send_key
    assert a_keys.send_key != a_keys.receive_key
    assert a_keys.challenge == b_keys.challenge


@pytest.mark.parametrize("point", [bytes(32), (1).to_bytes(32, "little")])
def test_low_order_keys_are_refused(point: bytes) -> None:
    with pytest.raises(ValueError, match="low-order"):
        compute_shared_secret(X25519PrivateKey.generate(), point)


def test_frames_round_trip_and_have_a_fixed_size() -> None:
    key = os.urandom(32)
    sealer, opener = FrameSealer(key), FrameOpener(key)
    data = os.urandom(2500)
    sealed = sealer.seal(data)
    assert len(sealed) == 3 * SEALED_FRAME_SIZE
    frames = [sealed[i : i + SEALED_FRAME_SIZE] for i in range(0, len(sealed), SEALED_FRAME_SIZE)]
    assert b"".join(opener.open(frame) for frame in frames) == data


def test_tampered_replayed_and_oversized_frames_are_refused() -> None:
    key = os.urandom(32)
    sealer, opener = FrameSealer(key), FrameOpener(key)
    first = sealer.seal_frame(b"first")
    tampered = bytearray(first)
    tampered[7] ^= 1
    with pytest.raises(FrameError, match="failed authentication"):
        opener.open(bytes(tampered))
    assert opener.open(first) == b"first"
    with pytest.raises(FrameError, match="failed authentication"):
        opener.open(first)  # replayed: the receive counter has moved on
    oversized = sealer.seal_raw((FRAME_DATA_SIZE + 1).to_bytes(4, "little") + bytes(FRAME_DATA_SIZE))
    with pytest.raises(FrameError, match="declares 1025 data bytes"):
        opener.open(oversized)


# -- the handshake -------------------------------------------------------------------------------


async def test_handshake_round_trip() -> None:
    a_key, b_key = PrivateKey.generate(), PrivateKey.generate()
    a_stream, b_stream = trio.testing.memory_stream_pair()
    a, b = await both_handshakes(a_stream, b_stream, a_key, b_key)
    assert a.remote_node_id == node_id(b_key.public_key)
    assert b.remote_node_id == node_id(a_key.public_key)
    assert a.remote_public_key == b_key.public_key
    for size in (1, FRAME_DATA_SIZE - 1, FRAME_DATA_SIZE, FRAME_DATA_SIZE + 1, 100_000):
        payload = os.urandom(size)
        await a.send_all(payload)
        assert await b.receive_exactly(size) == payload
        await b.send_all(payload[::-1])
        assert await a.receive_exactly(size) == payload[::-1]
    await a.send_message(b"hello")
    assert await b.receive_message(100) == b"hello"
    await a.aclose()
    assert await b.receive_some() == b""


async def test_wrong_signature_fails_the_handshake() -> None:
    liar_key = PrivateKey.generate()
    honest_stream, liar_stream = trio.testing.memory_stream_pair()
    liar = RawPeer(liar_stream, liar_key)
    with pytest.raises(
        HandshakeError, match="the liar failed authentication: its signature of the handshake"
    ):
        await handshake_against(
            partial(liar.handshake, sign_with=PrivateKey.generate()), honest_stream, "the liar"
        )


async def test_tampered_frame_is_a_frame_error() -> None:
    a_stream, b_stream, a_to_b, _ = intercepted_pair()
    a, b = await both_handshakes(a_stream, b_stream, PrivateKey.generate(), PrivateKey.generate())
    a_to_b.transform = lambda data: data[:10] + bytes([data[10] ^ 0x80]) + data[11:]
    await a.send_all(b"pay me")
    with pytest.raises(FrameError, match=r"from node a: frame 1 failed authentication"):
        await b.receive_some()


async def test_replayed_frame_is_a_frame_error() -> None:
    a_stream, b_stream, a_to_b, _ = intercepted_pair()
    a, b = await both_handshakes(a_stream, b_stream, PrivateKey.generate(), PrivateKey.generate())
    a_to_b.transform = lambda data: data + data  # every frame arrives twice
    await a.send_all(b"once")
    assert await b.receive_some() == b"once"
    with pytest.raises(FrameError, match="failed authentication"):
        await b.receive_some()


async def test_oversized_frame_is_a_frame_error() -> None:
    honest_stream, raw_stream = trio.testing.memory_stream_pair()
    raw = RawPeer(raw_stream, PrivateKey.generate())
    honest = await handshake_against(raw.handshake, honest_stream, "the raw peer")
    assert raw.sealer is not None
    await raw_stream.send_all(raw.sealer.seal_raw((5000).to_bytes(4, "little") + bytes(FRAME_DATA_SIZE)))
    with pytest.raises(FrameError, match="from the raw peer: frame declares 5000 data bytes, more than 1024"):
        await honest.receive_some()


async def test_connection_closed_mid_frame() -> None:
    a_stream, b_stream, a_to_b, _ = intercepted_pair()
    a, b = await both_handshakes(a_stream, b_stream, PrivateKey.generate(), PrivateKey.generate())
    a_to_b.transform = lambda data: data[:100]
    await a.send_all(b"x")
    await a_stream.send_stream.aclose()
    with pytest.raises(ConnectionClosed, match="middle of a frame"):
        await b.receive_some()


@pytest.mark.parametrize("point", [bytes(32), (1).to_bytes(32, "little")])
async def test_low_order_ephemeral_key_fails_the_handshake(point: bytes) -> None:
    honest_stream, raw_stream = trio.testing.memory_stream_pair()
    await raw_stream.send_all(EphemeralKeyMessage(point).encode())
    with pytest.raises(HandshakeError, match="low-order X25519 key"):
        await handshake(honest_stream, PrivateKey.generate(), TIMEOUT, remote="the raw peer")


async def test_reflected_ephemeral_key_fails_the_handshake() -> None:
    honest_stream, raw_stream = trio.testing.memory_stream_pair()

    async def reflect() -> None:
        await raw_stream.send_all(await receive_raw(raw_stream, EPHEMERAL_MESSAGE_SIZE))

    with pytest.raises(HandshakeError, match="the mirror reflected our own ephemeral key"):
        await handshake_against(reflect, honest_stream, "the mirror")


async def test_garbage_instead_of_a_handshake() -> None:
    honest_stream, raw_stream = trio.testing.memory_stream_pair()
    await raw_stream.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + bytes(10))
    with pytest.raises(HandshakeError, match="did not start a handshake"):
        await handshake(honest_stream, PrivateKey.generate(), TIMEOUT, remote="10.0.0.9:1234")


async def test_peer_hanging_up_fails_the_handshake() -> None:
    honest_stream, raw_stream = trio.testing.memory_stream_pair()
    await raw_stream.aclose()
    with pytest.raises(HandshakeError, match=re.escape("10.0.0.9:1234")):
        await handshake(honest_stream, PrivateKey.generate(), TIMEOUT, remote="10.0.0.9:1234")


async def test_handshake_times_out(autojump_clock: trio.testing.MockClock) -> None:
    honest_stream, _silent = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(HandshakeError, match=re.escape("with 10.0.0.9:1234 did not finish within 20 s")):
        await handshake(honest_stream, PrivateKey.generate(), 20.0, remote="10.0.0.9:1234")
    assert trio.current_time() - start == pytest.approx(20.0)
