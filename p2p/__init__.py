"""Transport only: TCP on trio, the authenticated encrypted connection, framing, channels with
priorities, the peer set, dialing, the address book and bans. Knows no consensus or execution
message: it moves opaque bytes on numbered channels.

Modules: `base` (the reactor interface), `address` (node ids, `id@host:port`),
`secret_connection` (X25519 + HKDF + ChaCha20-Poly1305, Ed25519-authenticated), `connection`
(channels multiplexed over it), `nodeinfo` (the exchange after the handshake), `switch` (the
peer set and its service), `pex` and `addrbook` (peer exchange), `errors`, `nodekey`.
"""
