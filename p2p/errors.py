"""The transport's errors, sorted by what the switch does about them.

`ProtocolViolation` (bad frames, undecodable packets, oversized messages, unknown channels) is
misbehaviour: the switch drops and bans the peer, as it does for a reactor's `PeerMisbehaved`.
The others end the connection without a ban: a failed handshake, an incompatible or unwanted
peer, a peer that closed the connection or stopped answering pings.
"""

from __future__ import annotations


class P2PError(Exception):
    """Base of the transport's errors; the message names the peer."""


class HandshakeError(P2PError):
    """The authenticated handshake failed (bad key, bad signature, garbage, timeout)."""


class ConnectionClosed(P2PError):
    """The peer closed the connection or the socket broke."""


class PeerTimeout(P2PError):
    """The peer did not answer a ping in time."""


class IncompatiblePeer(P2PError):
    """The node info exchange found the peer unusable (other network, protocol, no common
    channel, another node id than expected)."""


class ProtocolViolation(P2PError):
    """The peer broke the wire protocol; it is dropped and banned."""


class FrameError(ProtocolViolation):
    """A secret connection frame that fails authentication or declares too many bytes."""
