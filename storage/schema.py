"""Every key layout of the node's LevelDB, in one place; nothing else builds keys.

Heights are 8-byte big-endian so that keys of one prefix sort by height. Prefixes:

| prefix | key | value |
|---|---|---|
| `b:meta` | | block store range `[base, height]` |
| `b:blk:` | height | encoded block |
| `b:hash:` | block hash | height |
| `b:hh:` | height | block hash |
| `b:seen:` | height | the commit this node saw for the block at height |
| `b:res:` | height | encoded finalize-block results |
| `b:tx:` | tx hash | `[height, index]` |
| `c:state` | | consensus state after the last committed block |
| `c:vals:` | height | validator set that signs the block at height |
| `a:meta` | | application `[height, app hash]` |
| `a:acct:` | address | an account |
| `a:ev:` | height, index | evidence handed to the application |
| `a:supply` | | total quote supply fixed at genesis (canonical int; part of the app hash) |
| `a:time` | | time (ns) of the last committed block (canonical int; not in the app hash) |
"""

from __future__ import annotations

HEIGHT_SIZE = 8

BLOCK_STORE_META = b"b:meta"
_BLOCK = b"b:blk:"
_BLOCK_HASH = b"b:hash:"
_HASH_BY_HEIGHT = b"b:hh:"
_SEEN_COMMIT = b"b:seen:"
_RESULTS = b"b:res:"
_TX = b"b:tx:"

CONSENSUS_STATE = b"c:state"
_VALIDATORS = b"c:vals:"

APP_META = b"a:meta"
APP_ACCOUNT_PREFIX = b"a:acct:"
APP_PREFIX = b"a:"


def height_bytes(height: int) -> bytes:
    if not 0 <= height < 2**63:
        raise ValueError(f"height {height} out of range")
    return height.to_bytes(HEIGHT_SIZE, "big")


def height_from_bytes(raw: bytes) -> int:
    if len(raw) != HEIGHT_SIZE:
        raise ValueError(f"a stored height is {HEIGHT_SIZE} bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def block_key(height: int) -> bytes:
    return _BLOCK + height_bytes(height)


def block_hash_key(block_hash: bytes) -> bytes:
    return _BLOCK_HASH + block_hash


def hash_by_height_key(height: int) -> bytes:
    return _HASH_BY_HEIGHT + height_bytes(height)


def seen_commit_key(height: int) -> bytes:
    return _SEEN_COMMIT + height_bytes(height)


def results_key(height: int) -> bytes:
    return _RESULTS + height_bytes(height)


def tx_key(tx_hash: bytes) -> bytes:
    return _TX + tx_hash


def validators_key(height: int) -> bytes:
    return _VALIDATORS + height_bytes(height)


def account_key(address: bytes) -> bytes:
    return APP_ACCOUNT_PREFIX + address


def address_from_account_key(key: bytes) -> bytes:
    if not key.startswith(APP_ACCOUNT_PREFIX):
        raise ValueError("not an account key")
    return key[len(APP_ACCOUNT_PREFIX) :]


APP_SUPPLY = b"a:supply"
APP_BLOCK_TIME = b"a:time"
