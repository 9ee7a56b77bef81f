"""The authenticated, encrypted connection between two nodes, in the manner of CometBFT's secret
connection (same design, our own encoding).

Handshake, over the raw stream:

1. Each side sends a fresh ephemeral X25519 public key (canonical encoding of 32 bytes).
2. Each computes the Diffie-Hellman secret; an all-zero secret (a low-order or invalid key) and
   our own key reflected back are refused.
3. HKDF-SHA256 over the DH secret, salted with the two ephemeral keys in sorted order (the
   transcript), gives 96 bytes: the key of the frames sent by the side with the lower ephemeral
   key, the key of the frames sent by the other side, and a 32-byte challenge.
4. Over the now encrypted connection each side sends its Ed25519 node public key and its
   signature of the challenge (domain-tagged sign bytes); each checks the other's. The remote
   node id is the address of the remote public key.

Frames: 4-byte little-endian data length + 1024 data bytes (zero padded), sealed with
ChaCha20-Poly1305 (16-byte tag) under a per-direction counter nonce (4 zero bytes + 8-byte
little-endian counter), so every sealed frame is 1044 bytes. A frame that fails authentication
(tampered, replayed, reordered) or declares more than 1024 data bytes is a `FrameError`.

`FrameSealer`, `FrameOpener` and `derive_session_keys` are pure; `SecretConnection` and
`handshake` are the thin trio shell around them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import trio
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from p2p.errors import ConnectionClosed, FrameError, HandshakeError, P2PError, ProtocolViolation
from primitives.codec import DecodeError, decode, encode, field_bytes, field_list
from primitives.keys import PUBLIC_KEY_SIZE, SIGNATURE_SIZE, PrivateKey, PublicKey, sign_bytes

FRAME_DATA_SIZE = 1024
FRAME_LENGTH_SIZE = 4
TAG_SIZE = 16
FRAME_SIZE = FRAME_LENGTH_SIZE + FRAME_DATA_SIZE
SEALED_FRAME_SIZE = FRAME_SIZE + TAG_SIZE
EPHEMERAL_KEY_SIZE = 32
EPHEMERAL_MESSAGE_SIZE = 2 + EPHEMERAL_KEY_SIZE  # canonical bytes: 0xc4, length, key
MESSAGE_LENGTH_SIZE = 4
MAX_AUTH_MESSAGE_SIZE = 256
MAX_NONCE_COUNTER = 2**64 - 1

HANDSHAKE_DOMAIN = b"derivd/p2p/secret-connection/v1"
KDF_INFO = b"DERIVD_SECRET_CONNECTION_KEYS_AND_CHALLENGE"
_RECEIVE_CHUNK = 64 * 1024

T = TypeVar("T")


# -- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EphemeralKeyMessage:
    """The first message each side sends: its ephemeral X25519 public key."""

    key: bytes

    def encode(self) -> bytes:
        return encode(self.key)

    @classmethod
    def decode(cls, data: bytes) -> EphemeralKeyMessage:
        return cls(
            field_bytes(decode(data, max_size=EPHEMERAL_MESSAGE_SIZE), "ephemeral key", EPHEMERAL_KEY_SIZE)
        )


@dataclass(frozen=True, slots=True)
class AuthMessage:
    """Sent encrypted once keys are agreed: the node public key and its challenge signature."""

    public_key: bytes
    signature: bytes

    def encode(self) -> bytes:
        return encode([self.public_key, self.signature])

    @classmethod
    def decode(cls, data: bytes) -> AuthMessage:
        fields = field_list(decode(data, max_size=MAX_AUTH_MESSAGE_SIZE), "auth message", 2)
        return cls(
            field_bytes(fields[0], "public key", PUBLIC_KEY_SIZE),
            field_bytes(fields[1], "signature", SIGNATURE_SIZE),
        )


# -- pure key agreement and framing --------------------------------------------------------------


@dataclass(frozen=True, slots=True, repr=False)
class SessionKeys:
    """What the key agreement gives one side."""

    send_key: bytes
    receive_key: bytes
    challenge: bytes


def compute_shared_secret(ephemeral: X25519PrivateKey, remote_ephemeral: bytes) -> bytes:
    """X25519 of our ephemeral key and the remote's; ValueError for a low-order or invalid key
    (whose shared secret would be all zeros)."""
    if len(remote_ephemeral) != EPHEMERAL_KEY_SIZE:
        raise ValueError(f"an X25519 key is {EPHEMERAL_KEY_SIZE} bytes, got {len(remote_ephemeral)}")
    try:
        secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(remote_ephemeral))
    except ValueError:
        raise ValueError("low-order X25519 key (all-zero shared secret)") from None
    if secret == bytes(len(secret)):
        raise ValueError("low-order X25519 key (all-zero shared secret)")
    return secret


def derive_session_keys(local_ephemeral: bytes, remote_ephemeral: bytes, dh_secret: bytes) -> SessionKeys:
    """The two directional keys and the challenge, from the transcript of both ephemeral keys
    (sorted) and the DH secret. The side whose ephemeral key sorts lower sends with the first key."""
    low, high = sorted((local_ephemeral, remote_ephemeral))
    okm = HKDF(algorithm=hashes.SHA256(), length=96, salt=low + high, info=KDF_INFO).derive(dh_secret)
    low_key, high_key, challenge = okm[:32], okm[32:64], okm[64:]
    if local_ephemeral == low:
        return SessionKeys(send_key=low_key, receive_key=high_key, challenge=challenge)
    return SessionKeys(send_key=high_key, receive_key=low_key, challenge=challenge)


def challenge_sign_bytes(challenge: bytes) -> bytes:
    """The bytes a node key signs to authenticate a connection."""
    return sign_bytes(HANDSHAKE_DOMAIN, "", challenge)


def _nonce(counter: int) -> bytes:
    return bytes(4) + counter.to_bytes(8, "little")


class FrameSealer:
    """Seals outgoing data into frames under one direction's key and counter."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def seal_frame(self, chunk: bytes) -> bytes:
        """One sealed frame of at most FRAME_DATA_SIZE bytes of data."""
        if len(chunk) > FRAME_DATA_SIZE:
            raise ValueError(f"a frame holds at most {FRAME_DATA_SIZE} bytes, got {len(chunk)}")
        return self.seal_raw(
            len(chunk).to_bytes(FRAME_LENGTH_SIZE, "little") + chunk.ljust(FRAME_DATA_SIZE, b"\0")
        )

    def seal_raw(self, plaintext: bytes) -> bytes:
        """Seal FRAME_SIZE bytes of frame plaintext as they are (tests forge frames with it)."""
        if self._counter > MAX_NONCE_COUNTER:
            raise FrameError("the send nonce counter is exhausted")
        sealed = self._aead.encrypt(_nonce(self._counter), plaintext, None)
        self._counter += 1
        return sealed

    def seal(self, data: bytes) -> bytes:
        """`data` split into as many sealed frames as it takes."""
        return b"".join(
            self.seal_frame(data[start : start + FRAME_DATA_SIZE])
            for start in range(0, len(data), FRAME_DATA_SIZE)
        )


class FrameOpener:
    """Opens incoming frames under the other direction's key and counter."""

    def __init__(self, key: bytes) -> None:
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0

    def open(self, sealed: bytes) -> bytes:
        """The data of one sealed frame; FrameError if it fails authentication or is oversized."""
        if len(sealed) != SEALED_FRAME_SIZE:
            raise FrameError(f"a sealed frame is {SEALED_FRAME_SIZE} bytes, got {len(sealed)}")
        if self._counter > MAX_NONCE_COUNTER:
            raise FrameError("the receive nonce counter is exhausted")
        try:
            plaintext = self._aead.decrypt(_nonce(self._counter), sealed, None)
        except InvalidTag:
            raise FrameError(
                f"frame {self._counter} failed authentication (tampered, replayed or reordered)"
            ) from None
        self._counter += 1
        length = int.from_bytes(plaintext[:FRAME_LENGTH_SIZE], "little")
        if length > FRAME_DATA_SIZE:
            raise FrameError(f"frame declares {length} data bytes, more than {FRAME_DATA_SIZE}")
        return plaintext[FRAME_LENGTH_SIZE : FRAME_LENGTH_SIZE + length]


# -- the connection ------------------------------------------------------------------------------


class SecretConnection:
    """An encrypted byte stream to an authenticated remote node.

    One task may send while another receives. `remote` names the other end in errors.
    """

    def __init__(self, stream: trio.abc.Stream, keys: SessionKeys, *, remote: str) -> None:
        self._stream = stream
        self._sealer = FrameSealer(keys.send_key)
        self._opener = FrameOpener(keys.receive_key)
        self._raw = bytearray()
        self._plain = bytearray()
        self._remote_key: PublicKey | None = None
        self._failure: FrameError | None = None
        self.remote = remote
        self.bytes_sent = 0
        """sealed bytes written to the stream"""
        self.bytes_received = 0
        """sealed bytes read from the stream"""

    @property
    def remote_public_key(self) -> PublicKey:
        if self._remote_key is None:
            raise RuntimeError("the remote is not authenticated yet")
        return self._remote_key

    @property
    def remote_node_id(self) -> str:
        """Lower-case hex address of the authenticated remote node key."""
        return str(self.remote_public_key.address)

    def _authenticated(self, key: PublicKey) -> None:
        self._remote_key = key

    async def send_all(self, data: bytes) -> None:
        """Encrypt and send `data` (split into frames)."""
        if not data:
            return
        sealed = self._sealer.seal(data)
        try:
            await self._stream.send_all(sealed)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"connection to {self.remote} broke while sending: {exc}") from exc
        self.bytes_sent += len(sealed)

    async def receive_some(self) -> bytes:
        """The next decrypted bytes (at least one); b"" when the remote closed cleanly between
        frames. ConnectionClosed if it closed mid-frame, FrameError for a bad frame."""
        if self._plain:
            data = bytes(self._plain)
            self._plain.clear()
            return data
        if self._failure is not None:
            raise self._failure
        while True:
            while len(self._raw) < SEALED_FRAME_SIZE:
                try:
                    chunk = await self._stream.receive_some(_RECEIVE_CHUNK)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise ConnectionClosed(
                        f"connection to {self.remote} broke while receiving: {exc}"
                    ) from exc
                if not chunk:
                    if self._raw:
                        raise ConnectionClosed(
                            f"{self.remote} closed the connection in the middle of a frame"
                        )
                    return b""
                self._raw += chunk
                self.bytes_received += len(chunk)
            whole = len(self._raw) - len(self._raw) % SEALED_FRAME_SIZE
            parts: list[bytes] = []
            for start in range(0, whole, SEALED_FRAME_SIZE):
                try:
                    parts.append(self._opener.open(bytes(self._raw[start : start + SEALED_FRAME_SIZE])))
                except FrameError as exc:
                    # hand over what came before the bad frame; the next call raises
                    self._failure = FrameError(f"from {self.remote}: {exc}")
                    self._raw.clear()
                    if any(parts):
                        return b"".join(parts)
                    raise self._failure from None
            del self._raw[:whole]
            data = b"".join(parts)
            if data:
                return data

    async def receive_exactly(self, size: int) -> bytes:
        """Exactly `size` decrypted bytes; ConnectionClosed if the stream ends first."""
        buffer = bytearray()
        while len(buffer) < size:
            data = await self.receive_some()
            if not data:
                raise ConnectionClosed(f"{self.remote} closed the connection")
            buffer += data
        if len(buffer) > size:
            self._plain[:0] = buffer[size:]
        return bytes(buffer[:size])

    async def send_message(self, message: bytes) -> None:
        """Send one length-prefixed message (used by the handshake and node info exchange)."""
        await self.send_all(len(message).to_bytes(MESSAGE_LENGTH_SIZE, "big") + message)

    async def receive_message(self, max_size: int) -> bytes:
        """One length-prefixed message of at most `max_size` bytes; ProtocolViolation if larger."""
        size = int.from_bytes(await self.receive_exactly(MESSAGE_LENGTH_SIZE), "big")
        if size > max_size:
            raise ProtocolViolation(f"{self.remote} sent a {size}-byte message, more than {max_size}")
        return await self.receive_exactly(size)

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


# -- the handshake -------------------------------------------------------------------------------


async def send_and_receive(send: Callable[[], Awaitable[None]], receive: Callable[[], Awaitable[T]]) -> T:
    """Run `send` and `receive` concurrently (neither side waits for the other to read first) and
    return what `receive` gave; the first error of either is raised as it is, not in a group."""
    errors: list[Exception] = []
    results: list[T] = []
    async with trio.open_nursery() as nursery:

        async def sender() -> None:
            try:
                await send()
            except Exception as exc:
                errors.append(exc)
                nursery.cancel_scope.cancel()

        nursery.start_soon(sender)
        try:
            results.append(await receive())
        except Exception as exc:
            errors.append(exc)
            nursery.cancel_scope.cancel()
    if errors:
        raise errors[0]
    return results[0]


async def _receive_raw_exactly(stream: trio.abc.Stream, size: int, remote: str) -> bytes:
    buffer = bytearray()
    while len(buffer) < size:
        try:
            chunk = await stream.receive_some(size - len(buffer))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionClosed(f"connection to {remote} broke: {exc}") from exc
        if not chunk:
            raise ConnectionClosed(f"{remote} closed the connection")
        buffer += chunk
    return bytes(buffer)


async def _send_raw(stream: trio.abc.Stream, data: bytes, remote: str) -> None:
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
        raise ConnectionClosed(f"connection to {remote} broke: {exc}") from exc


async def _handshake(
    stream: trio.abc.Stream,
    node_key: PrivateKey,
    remote: str,
    on_key_received: Callable[[], None] | None,
) -> SecretConnection:
    ephemeral = X25519PrivateKey.generate()
    local_ephemeral = ephemeral.public_key().public_bytes_raw()
    raw = await send_and_receive(
        lambda: _send_raw(stream, EphemeralKeyMessage(local_ephemeral).encode(), remote),
        lambda: _receive_raw_exactly(stream, EPHEMERAL_MESSAGE_SIZE, remote),
    )
    try:
        remote_ephemeral = EphemeralKeyMessage.decode(raw).key
    except DecodeError as exc:
        raise HandshakeError(
            f"{remote} did not start a handshake (bad ephemeral key message: {exc})"
        ) from None
    if remote_ephemeral == local_ephemeral:
        raise HandshakeError(f"{remote} reflected our own ephemeral key")
    try:
        dh_secret = compute_shared_secret(ephemeral, remote_ephemeral)
    except ValueError as exc:
        raise HandshakeError(f"{remote} sent a bad ephemeral key: {exc}") from None
    if on_key_received is not None:
        on_key_received()
    keys = derive_session_keys(local_ephemeral, remote_ephemeral, dh_secret)
    connection = SecretConnection(stream, keys, remote=remote)
    to_sign = challenge_sign_bytes(keys.challenge)
    ours = AuthMessage(node_key.public_key.raw, node_key.sign(to_sign))
    received = await send_and_receive(
        lambda: connection.send_message(ours.encode()),
        lambda: connection.receive_message(MAX_AUTH_MESSAGE_SIZE),
    )
    try:
        theirs = AuthMessage.decode(received)
    except DecodeError as exc:
        raise HandshakeError(f"{remote} sent a bad authentication message: {exc}") from None
    remote_key = PublicKey(theirs.public_key)
    if not remote_key.verify(to_sign, theirs.signature):
        raise HandshakeError(
            f"{remote} failed authentication: its signature of the handshake challenge does not verify "
            f"with the node key it presented (node id {remote_key.address})"
        )
    connection._authenticated(remote_key)
    return connection


async def handshake(
    stream: trio.abc.Stream,
    node_key: PrivateKey,
    timeout: float,
    *,
    remote: str = "the remote node",
    on_key_received: Callable[[], None] | None = None,
) -> SecretConnection:
    """Authenticate and encrypt `stream`: the secret connection to the node at the other end,
    whose id is `remote_node_id`. HandshakeError (naming `remote`) for anything that goes wrong,
    including taking longer than `timeout` seconds in all (one deadline over every read).
    `on_key_received` is called once the remote's ephemeral key has arrived and is valid (the
    switch ranks its inbound handshakes by progress). The caller owns and closes `stream`."""
    try:
        with trio.fail_after(timeout):
            return await _handshake(stream, node_key, remote, on_key_received)
    except trio.TooSlowError:
        raise HandshakeError(f"handshake with {remote} did not finish within {timeout:g} s") from None
    except HandshakeError:
        raise
    except P2PError as exc:
        raise HandshakeError(f"handshake with {remote} failed: {exc}") from exc
