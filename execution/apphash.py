"""The app hash: a chained hash of each height's sorted change set.

    leaf(put)        = encode([key, 1, value])
    leaf(delete)     = encode([key, 0, b""])
    app_hash(H)      = sha256(encode([prev_app_hash, H, merkle_root(leaves sorted by key)]))

`leaves` are the keys written while executing height H (every put and delete of the block's view,
whether or not the value differs from before); `merkle_root` is RFC 6962 (`primitives.hashing`),
so the root of no changes is SHA-256 of the empty string. `prev_app_hash` is the previous height's
app hash; for init_chain it is b"" and H is `initial_height - 1`. The hash therefore commits to the
whole history of changes, not to a snapshot of the state: two nodes agree on it exactly when they
applied the same changes at the same heights from the same genesis.
"""

from __future__ import annotations

from collections.abc import Iterable

from execution.state import Change
from primitives import codec
from primitives.hashing import merkle_root, sha256

PUT = 1
DELETE = 0


def change_leaf(key: bytes, value: bytes | None) -> bytes:
    """The Merkle leaf of one write."""
    if value is None:
        return codec.encode([key, DELETE, b""])
    return codec.encode([key, PUT, value])


def _leaves(ordered: list[Change]) -> list[bytes]:
    """`change_leaf` of each change, packed directly: a key and a value are bytes (a `Change`),
    so `codec.encode`'s check of the value's types has nothing to refuse and is skipped."""
    pack = codec.pack_unchecked
    for key, value in ordered:
        if type(key) is not bytes or (value is not None and type(value) is not bytes):
            raise TypeError(f"a change is (bytes, bytes | None), got ({key!r}, {value!r})")
    return [pack([key, DELETE, b""] if value is None else [key, PUT, value]) for key, value in ordered]


def app_hash(prev_app_hash: bytes, height: int, changes: Iterable[Change]) -> bytes:
    """The app hash after applying `changes` at `height` on top of `prev_app_hash`."""
    ordered = sorted(changes, key=lambda change: change[0])
    root = merkle_root(_leaves(ordered))
    return sha256(codec.encode([prev_app_hash, height, root]))
