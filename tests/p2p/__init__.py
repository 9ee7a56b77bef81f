"""Tests of the p2p package: addresses, the secret connection, the multiplexed connection, node
info, the address book, PEX and the switch (on loopback)."""
