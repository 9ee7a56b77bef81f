"""Transport only: TCP on trio, the authenticated encrypted connection, framing, channels with
priorities, the peer set, dialing, the address book and bans. Knows no consensus or execution
message: it moves opaque bytes on numbered channels."""
