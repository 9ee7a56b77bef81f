"""Shared building blocks: canonical encoding, hashing and Merkle trees, Ed25519 keys and
addresses, domain-separated signing and the batch signature verifier. Imports nothing of ours."""
