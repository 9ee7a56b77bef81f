"""The state tree: a versioned 16-ary Merkle trie over LevelDB; its root is the app hash.

Shape. A key's place is the nibbles of sha256(key), most significant first. The subtree at a
nibble path holds the keys whose hash starts with that path: nothing when there are none, the
key's leaf when there is one, else an internal node with 16 child slots. The shape is a function
of the set of keys alone, whatever order they were written in (a test checks it).

Hashes, each an ICS23 step (`PROOF_SPEC`, checked with `primitives.ics23`):

    leaf      = sha256(0x00 || 0x20 || sha256(key) || 0x20 || sha256(value))
    internal  = sha256(0x01 || child_0 || ... || child_15)      an empty slot: 32 zero bytes
    empty tree: 32 zero bytes

A value is never empty (an ICS23 leaf needs one).

Nodes. Only internal nodes are stored, each with its leaf children inline: 0x01, the 16 child
hashes (the bytes it is hashed from: its hash is sha256 of these 513), the 16 children's 8-byte
versions (0 for a leaf), 2-byte masks of the leaf children and of the present ones, then each leaf
child in slot order as key length (2 bytes), value length (4 bytes), key, value. So a changed
value rewrites its parent, which its new hash rewrites anyway, and no leaf is read or written on
its own. A node is written once, by the version that made it, under (version, path)
(`schema.state_node_key`). Applying a version's changes writes new nodes on the changed paths only
(O(changes x depth)), keeps the list of the nodes they replace (`schema.state_stale_key`) and the
version's root (a root that is one leaf is kept in that record). `prune(batch, keep_from)` deletes
what no version >= keep_from uses: the nodes replaced by a version <= keep_from, and the older
roots.

Staging. `apply` computes a version in memory; its root, reads and proofs work at once, and
`flush(batch)` puts the staged versions into the node's batch (the app's commit). Reads of the
latest state do not come here: the flat `a:` keys beside the tree serve them. Snapshots
(`storage.snapshot`) read a version by subtrees (`subtree`) and rebuild one in an empty tree
(`restore_subtree`, then `restore_top`), with the same `build` and `combine` as `apply`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable

from primitives.ics23 import (
    CommitmentProof,
    ExistenceProof,
    HashOp,
    InnerOp,
    InnerSpec,
    LeafOp,
    LengthOp,
    NonExistenceProof,
    ProofSpec,
)
from storage import schema
from storage.db import Database, WriteBatch

HASH_SIZE = 32
EMPTY = bytes(HASH_SIZE)
"""The hash of an empty slot, and the root of the empty tree."""

LEAF_PREFIX = b"\x00"
INNER_PREFIX = b"\x01"
RADIX = 16
MAX_DEPTH = 2 * HASH_SIZE

LEAF_OP = LeafOp(
    hash=HashOp.SHA256,
    prehash_key=HashOp.SHA256,
    prehash_value=HashOp.SHA256,
    length=LengthOp.VAR_PROTO,
    prefix=LEAF_PREFIX,
)
PROOF_SPEC = ProofSpec(
    leaf_spec=LEAF_OP,
    inner_spec=InnerSpec(
        child_order=tuple(range(RADIX)),
        child_size=HASH_SIZE,
        min_prefix_length=len(INNER_PREFIX),
        max_prefix_length=len(INNER_PREFIX),
        empty_child=EMPTY,
        hash=HashOp.SHA256,
    ),
    max_depth=MAX_DEPTH,
    prehash_key_before_comparison=True,
)
"""What a proof of this tree looks like (keys compare by their sha256, the order of the leaves)."""

PROOF_OP_TYPE = "ics23:derivd-state"
"""The type of a query's proof op whose data is a `CommitmentProof` of this tree (`PROOF_SPEC`)."""

MAX_PRUNE_PER_BATCH = 100_000
"""Stale nodes one `prune` deletes at most, in whole versions (the rest go with the next batches)."""

_NIBBLES = bytes.maketrans(b"0123456789abcdef", bytes(range(RADIX)))
_VAR32 = b"\x20"  # the VAR_PROTO length of a 32-byte hash
_HASHED = 1 + RADIX * HASH_SIZE  # an internal node's hashed bytes: the prefix and the child hashes
_LEAVES = _HASHED + RADIX * 8  # where its mask of leaf children starts
_PRESENT = _LEAVES + 2  # where its mask of present children starts
_INNER_SIZE = _PRESENT + 2
_NO_VERSION = bytes(8)
_SLOTS = [bytes((slot,)) for slot in range(RADIX)]
_NODE = schema.STATE_NODE_PREFIX


class TreeError(RuntimeError):
    """A version that is not kept, or a node that is missing or malformed (the message says which)."""


Leaf = tuple[bytes, bytes]
Ref = tuple[bytes, int, Leaf | None]
"""A child: its hash, the version that wrote it (0: a leaf), the key and value of a leaf."""
Item = tuple[bytes, bytes, bytes | None, bytes]
"""(the key's nibbles, the key, its new value or None: deleted, sha256 of the key), as `apply`
works on them"""


def nibbles(key: bytes) -> bytes:
    """The nibbles of sha256(key), one byte (0-15) each: the key's place in the tree."""
    return hashlib.sha256(key).hexdigest().encode().translate(_NIBBLES)


def leaf_hash(key: bytes, value: bytes) -> bytes:
    return _leaf_hash(hashlib.sha256(key).digest(), value)


def _leaf_hash(key_digest: bytes, value: bytes) -> bytes:
    data = LEAF_PREFIX + _VAR32 + key_digest + _VAR32 + hashlib.sha256(value).digest()
    return hashlib.sha256(data).digest()


def item(key: bytes, value: bytes | None) -> Item:
    """`key` and its new value as `apply` sorts and places them."""
    digest = hashlib.sha256(key).digest()
    return digest.hex().encode().translate(_NIBBLES), key, value, digest


def _mask(node: bytes | bytearray, at: int) -> int:
    return int.from_bytes(node[at : at + 2], "big")


def _entries(node: bytes) -> dict[int, bytes]:
    """The inline entries of an internal node's leaf children, by slot (`_leaf_entry`)."""
    entries: dict[int, bytes] = {}
    mask, at = _mask(node, _LEAVES), _INNER_SIZE
    while mask:  # the leaf slots, lowest first
        low = mask & -mask
        mask ^= low
        if at + 6 > len(node):
            break
        end = at + 6 + (node[at] << 8 | node[at + 1]) + int.from_bytes(node[at + 2 : at + 6], "big")
        entries[low.bit_length() - 1] = node[at:end]
        at = end
    if at != len(node):
        raise TreeError("a state tree node's inline leaves do not fill it")
    return entries


def _leaf_entry(leaf: Leaf) -> bytes:
    key, value = leaf
    return len(key).to_bytes(2, "big") + len(value).to_bytes(4, "big") + key + value


def _leaf_of(entry: bytes) -> Leaf:
    key_end = 6 + int.from_bytes(entry[:2], "big")
    return entry[6:key_end], entry[key_end:]


def _tail(entries: dict[int, bytes]) -> bytes:
    """An internal node's inline entries, in slot order."""
    return b"".join(entries[slot] for slot in sorted(entries)) if entries else b""


def _child(node: bytes, slot: int) -> Ref | None:
    """The child in `slot` of the internal node `node` (None: empty)."""
    if not _mask(node, _PRESENT) >> slot & 1:
        return None
    digest = node[1 + HASH_SIZE * slot : 1 + HASH_SIZE * (slot + 1)]
    if _mask(node, _LEAVES) >> slot & 1:
        return digest, 0, _leaf_of(_entries(node)[slot])
    return digest, int.from_bytes(node[_HASHED + 8 * slot : _HASHED + 8 * slot + 8], "big"), None


def _set_child(node: bytearray, slot: int, child: Ref | None) -> None:
    """Put `child`'s hash, version and kind into `slot` of `node`'s fixed part (None: empty it)."""
    at, byte, bit = 1 + HASH_SIZE * slot, _LEAVES + (slot < 8), 1 << (slot & 7)
    if child is None:
        node[at : at + HASH_SIZE] = EMPTY
        node[_HASHED + 8 * slot : _HASHED + 8 * slot + 8] = _NO_VERSION
        node[byte] &= ~bit
        node[byte + 2] &= ~bit
        return
    node[at : at + HASH_SIZE] = child[0]
    node[_HASHED + 8 * slot : _HASHED + 8 * slot + 8] = child[1].to_bytes(8, "big")
    node[byte] = node[byte] & ~bit if child[2] is None else node[byte] | bit
    node[byte + 2] |= bit


def _encode_root(ref: Ref | None) -> bytes:
    if ref is None:
        return b""
    if ref[2] is None:
        return ref[0] + b"\x00" + ref[1].to_bytes(8, "big")
    return ref[0] + b"\x01" + _leaf_entry(ref[2])


def _decode_root(raw: bytes) -> Ref | None:
    """A root record: empty; the hash, 0x00 and the version of an internal node; or the hash, 0x01
    and the entry of a leaf (as inline in a node)."""
    if not raw:
        return None
    kind, entry = raw[HASH_SIZE : HASH_SIZE + 1], raw[HASH_SIZE + 1 :]
    if kind == b"\x00" and len(entry) == 8:
        return raw[:HASH_SIZE], int.from_bytes(entry, "big"), None
    if kind == b"\x01" and len(entry) > 6:
        key_end = 6 + int.from_bytes(entry[:2], "big")
        if len(entry) == key_end + int.from_bytes(entry[2:6], "big"):
            return raw[:HASH_SIZE], 0, (entry[6:key_end], entry[key_end:])
    raise TreeError("a state tree root record is malformed")


def _place(item: Item) -> bytes:
    return item[0]


def _groups(items: list[Item], depth: int) -> list[tuple[int, list[Item]]]:
    """`items` (sorted by nibbles) split by their nibble at `depth`, in slot order."""
    if len(items) == 1:
        return [(items[0][0][depth], items)]
    out: list[tuple[int, list[Item]]] = []
    start, current = 0, items[0][0][depth]
    for i in range(1, len(items)):
        nibble = items[i][0][depth]
        if nibble != current:
            out.append((current, items[start:i]))
            start, current = i, nibble
    out.append((current, items[start:]))
    return out


Write = Callable[[bytes, bytes, bytes], Ref]
"""Makes an internal node at a path from its fixed part and tail; returns its ref."""


def hash_only(path: bytes, fixed: bytes, tail: bytes) -> Ref:
    """A `Write` that keeps nothing: for a subtree's hash alone."""
    return hashlib.sha256(fixed[:_HASHED]).digest(), 0, None


def _node(path: bytes, children: dict[int, Ref], write: Write) -> Ref:
    """The internal node at `path` over `children` (slot -> ref, at least one), made by `write`."""
    hashes = [EMPTY] * RADIX
    versions = [_NO_VERSION] * RADIX
    entries: dict[int, bytes] = {}
    present = leaf_mask = 0
    for slot, child in children.items():
        hashes[slot] = child[0]
        present |= 1 << slot
        if child[2] is None:
            versions[slot] = child[1].to_bytes(8, "big")
        else:
            entries[slot] = _leaf_entry(child[2])
            leaf_mask |= 1 << slot
    fixed = (
        INNER_PREFIX
        + b"".join(hashes)
        + b"".join(versions)
        + leaf_mask.to_bytes(2, "big")
        + present.to_bytes(2, "big")
    )
    return write(path, fixed, _tail(entries))


def build(path: bytes, items: list[Item], write: Write) -> Ref | None:
    """The subtree at `path` holding `items` (puts, sorted by place, all under `path`)."""
    if not items:
        return None
    if len(items) == 1:
        _, key, value, digest = items[0]
        assert value is not None
        return _leaf_hash(digest, value), 0, (key, value)
    if len(path) >= MAX_DEPTH:
        raise TreeError("two keys with one sha256")
    children = {}
    for slot, group in _groups(items, len(path)):
        child = build(path + _SLOTS[slot], group, write)
        assert child is not None
        children[slot] = child
    return _node(path, children, write)


def combine(subtrees: dict[bytes, Ref | None], write: Write) -> Ref | None:
    """The tree over `subtrees` (the ref, or None, of every path of one depth), as `build` would
    shape it: a node with no child is nothing, one with a lone leaf is that leaf."""
    depth = len(next(iter(subtrees), b""))
    if len(subtrees) != RADIX**depth or any(len(path) != depth for path in subtrees):
        raise ValueError(f"subtrees must name each of the {RADIX**depth} paths of depth {depth}")
    level = subtrees
    for d in range(depth - 1, -1, -1):
        above: dict[bytes, Ref | None] = {}
        for path in sorted({path[:d] for path in level}):
            children = {slot: ref for slot in range(RADIX) if (ref := level[path + _SLOTS[slot]]) is not None}
            if not children:
                above[path] = None
            elif len(children) == 1 and next(iter(children.values()))[2] is not None:
                above[path] = next(iter(children.values()))
            else:
                above[path] = _node(path, children, write)
        level = above
    return level[b""]


def _check_items(path: bytes, items: list[Item]) -> None:
    for before, after in itertools.pairwise(items):
        if before[1] == after[1]:
            raise ValueError(f"key {before[1]!r} appears twice")
    for item in items:
        if not item[0].startswith(path) or item[2] in (None, b""):
            raise ValueError(f"key {item[1]!r} does not belong under {path.hex()} or has no value")


class StateTree:
    """The tree over one LevelDB (see the module docstring)."""

    _CACHED_DEPTH = 4
    """Internal nodes this shallow are kept in memory, the latest of each path (69,905 paths at
    most: with a million keys, about 130 MiB; every block reads most of them)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._staged: dict[bytes, bytes] = {}  # node key -> node bytes, of the staged versions
        self._staged_stale: dict[int, list[bytes]] = {}  # version -> (version, path) of what it replaced
        self._staged_roots: dict[int, Ref | None] = {}
        self._cache: dict[bytes, tuple[int, bytes]] = {}  # path -> (version, node), shallow paths
        self._building = -1
        self.version = -1
        """the latest version (staged or written); -1: none yet"""
        self._root: Ref | None = None
        self._load_latest()

    def _load_latest(self) -> None:
        latest = next(self._db.iterate(schema.STATE_ROOT_PREFIX, reverse=True), None)
        if latest is None:
            self.version, self._root = -1, None
        else:
            self.version = schema.height_from_bytes(latest[0][len(schema.STATE_ROOT_PREFIX) :])
            self._root = _decode_root(latest[1])

    # -- reading ----------------------------------------------------------------------------------

    @property
    def root_hash(self) -> bytes:
        """The root of the latest version (staged or written)."""
        return EMPTY if self._root is None else self._root[0]

    def _root_of(self, version: int) -> Ref | None:
        if version in self._staged_roots:
            return self._staged_roots[version]
        raw = self._db.get(schema.state_root_key(version))
        if raw is None:
            raise TreeError(f"the state tree does not keep version {version}")
        return _decode_root(raw)

    def root_at(self, version: int) -> bytes:
        """The root hash of `version` (TreeError: not kept)."""
        root = self._root_of(version)
        return EMPTY if root is None else root[0]

    def _inner(self, ref: Ref, path: bytes) -> bytes:
        """The internal node `ref` names at `path`."""
        shallow = len(path) <= self._CACHED_DEPTH
        if shallow:
            cached = self._cache.get(path)
            if cached is not None and cached[0] == ref[1]:
                return cached[1]
        key = _NODE + ref[1].to_bytes(8, "big") + path
        raw = self._staged.get(key)
        if raw is None:
            raw = self._db.get(key)
            if raw is None:
                raise TreeError(f"the state tree node at version {ref[1]}, path {path.hex()} is missing")
        if len(raw) < _INNER_SIZE or raw[:1] != INNER_PREFIX:
            raise TreeError(f"the state tree node at version {ref[1]}, path {path.hex()} is malformed")
        if shallow:
            self._cache[path] = (ref[1], raw)
        return raw

    def _walk(self, key: bytes, version: int) -> tuple[list[tuple[bytes, int]], Leaf | None]:
        """The internal nodes from the root towards `key`'s place at `version`, each with the slot
        taken, and the leaf found there (None: the walk ended on an empty slot or an empty tree)."""
        place = nibbles(key)
        ref, path = self._root_of(version), b""
        trail: list[tuple[bytes, int]] = []
        while ref is not None and ref[2] is None:
            node = self._inner(ref, path)
            slot = place[len(path)]
            trail.append((node, slot))
            ref, path = _child(node, slot), path + _SLOTS[slot]
        return trail, None if ref is None else ref[2]

    def get(self, key: bytes, version: int) -> bytes | None:
        """The value of `key` at `version` (None: absent)."""
        _, leaf = self._walk(key, version)
        return leaf[1] if leaf is not None and leaf[0] == key else None

    # -- proofs -----------------------------------------------------------------------------------

    def prove(self, key: bytes, version: int) -> CommitmentProof:
        """An ICS23 proof that `key` holds its value at `version`, or that it is absent."""
        trail, leaf = self._walk(key, version)
        if leaf is not None and leaf[0] == key:
            return _existence(leaf, trail)
        place = nibbles(key)
        return NonExistenceProof(
            key=key,
            left=self._neighbour(trail, leaf, place, -1),
            right=self._neighbour(trail, leaf, place, 1),
        )

    def _neighbour(
        self, trail: list[tuple[bytes, int]], leaf: Leaf | None, place: bytes, step: int
    ) -> ExistenceProof | None:
        """The proof of the key just before (`step` -1) or after (+1) `place` in nibble order;
        `trail` and `leaf` are the walk towards `place` (`_walk`)."""
        if not trail:  # an empty tree, or a root that is one leaf
            return None if leaf is None or (nibbles(leaf[0]) < place) != (step < 0) else _existence(leaf, [])
        for depth in range(len(trail) - 1, -1, -1):
            node, slot = trail[depth]
            if depth == len(trail) - 1 and leaf is not None and (nibbles(leaf[0]) < place) == (step < 0):
                return _existence(leaf, trail)  # the leaf the walk ended on is on the wanted side
            present = _mask(node, _PRESENT)
            for other in range(slot - 1, -1, -1) if step < 0 else range(slot + 1, RADIX):
                if present >> other & 1:
                    return self._edge([*trail[:depth], (node, other)], place[:depth] + _SLOTS[other], step)
        return None

    def _edge(self, trail: list[tuple[bytes, int]], path: bytes, step: int) -> ExistenceProof:
        """The proof of the last (`step` -1) or first (+1) leaf under the end of `trail` (at `path`)."""
        node, slot = trail[-1]
        child = _child(node, slot)
        assert child is not None
        while child[2] is None:
            inner = self._inner(child, path)
            present = _mask(inner, _PRESENT)
            slot = present.bit_length() - 1 if step < 0 else (present & -present).bit_length() - 1
            trail.append((inner, slot))
            child, path = _child(inner, slot), path + _SLOTS[slot]
            assert child is not None
        return _existence(child[2], trail)

    # -- writing ----------------------------------------------------------------------------------

    def apply(self, version: int, changes: Iterable[tuple[bytes, bytes | None]]) -> bytes:
        """Stage `version`: the latest one with `changes` (key, new value or None: delete) applied;
        returns its root hash. Versions increase; writes of unchanged values change nothing."""
        if version <= self.version:
            raise ValueError(f"state tree version {version} after version {self.version}")
        items: list[Item] = []
        for key, value in changes:
            if not key or value == b"":
                raise ValueError(f"the state tree keeps non-empty keys and values (key {key!r})")
            items.append(item(key, value))
        items.sort(key=_place)
        for before, after in itertools.pairwise(items):
            if before[1] == after[1]:
                raise ValueError(f"key {before[1]!r} changes twice in one version")
        self._building = version
        self._staged_stale[version] = []
        root = self._update(self._root, b"", items) if items else self._root
        self._building = -1
        self.version, self._root = version, root
        self._staged_roots[version] = root
        return self.root_hash

    def _write(self, path: bytes, fixed: bytes, tail: bytes) -> Ref:
        """Stage the internal node at `path` of the version being built: its fixed part, then its
        leaf children's entries (`_tail`)."""
        raw = fixed + tail
        self._staged[_NODE + self._building.to_bytes(8, "big") + path] = raw
        if len(path) <= self._CACHED_DEPTH:
            self._cache[path] = (self._building, raw)
        return hashlib.sha256(fixed[:_HASHED]).digest(), self._building, None

    def _replace(self, ref: Ref, path: bytes) -> None:
        """`ref`'s internal node (at `path`) is not used from the version being built on (it is
        older: `apply` reaches each path once)."""
        self._staged_stale[self._building].append(ref[1].to_bytes(8, "big") + bytes((len(path),)) + path)

    def _update(self, ref: Ref | None, path: bytes, items: list[Item]) -> Ref | None:
        """The subtree at `path` (now `ref`) with `items` applied; `ref` itself when unchanged."""
        if ref is None:
            return self._build(path, [item for item in items if item[2] is not None])
        if ref[2] is not None:
            return self._update_leaf(ref, path, items)
        return self._update_inner(ref, path, items)

    def _update_leaf(self, ref: Ref, path: bytes, items: list[Item]) -> Ref | None:
        """`_update` of a subtree that is one leaf."""
        assert ref[2] is not None
        key, value = ref[2]
        by_key = {item[1]: item for item in items}
        own = by_key.get(key)
        if own is None:
            by_key[key] = item(key, value)
        elif own[2] == value:
            own = None
        if own is None and all(item[2] is None for item in items if item[1] != key):
            return ref  # its own value unchanged, and only deletes of absent keys besides
        puts = [item for item in by_key.values() if item[2] is not None]
        return self._build(path, sorted(puts, key=_place))

    def _update_inner(self, ref: Ref, path: bytes, items: list[Item]) -> Ref | None:
        """`_update` of a subtree whose top is an internal node. A change of one key that reaches a
        leaf of that key or an empty slot is made here, without a call a level down."""
        node = self._inner(ref, path)
        present, leaf_mask = _mask(node, _PRESENT), _mask(node, _LEAVES)
        entries: dict[int, bytes] | None = None  # read from the node when first needed
        fixed: bytearray | None = None
        entries_changed = shrunk = False
        updated: Ref | None
        for slot, group in _groups(items, len(path)):
            at = 1 + HASH_SIZE * slot
            if leaf_mask >> slot & 1:
                if entries is None:
                    entries = _entries(node)
                leaf = _leaf_of(entries[slot])
                if len(group) == 1 and group[0][1] == leaf[0]:  # the leaf's own key changes
                    new_value, digest = group[0][2], group[0][3]
                    if new_value == leaf[1]:
                        continue
                    if new_value is None:
                        updated = None
                    else:
                        updated = _leaf_hash(digest, new_value), 0, (leaf[0], new_value)
                else:
                    child: Ref = node[at : at + HASH_SIZE], 0, leaf
                    updated = self._update_leaf(child, path + _SLOTS[slot], group)
                    if updated is child:
                        continue
            elif present >> slot & 1:
                version = int.from_bytes(node[_HASHED + 8 * slot : _HASHED + 8 * slot + 8], "big")
                child = node[at : at + HASH_SIZE], version, None
                updated = self._update_inner(child, path + _SLOTS[slot], group)
                if updated is child:
                    continue
                # an internal child that became a leaf (or nothing) may leave this node one leaf
                shrunk = shrunk or updated is None or updated[2] is not None
            else:
                puts = [item for item in group if item[2] is not None]
                if not puts:
                    continue
                if len(puts) == 1:
                    _, key, value, digest = puts[0]
                    assert value is not None
                    updated = _leaf_hash(digest, value), 0, (key, value)
                else:
                    updated = self._build(path + _SLOTS[slot], puts)
            if fixed is None:
                fixed = bytearray(node[:_INNER_SIZE])
            _set_child(fixed, slot, updated)
            if updated is None:
                shrunk = True
                if entries is not None and slot in entries:
                    del entries[slot]
                    entries_changed = True
            elif updated[2] is not None:
                if entries is None:
                    entries = _entries(node)
                entries[slot] = _leaf_entry(updated[2])
                entries_changed = True
            elif entries is not None and slot in entries:
                del entries[slot]
                entries_changed = True
        if fixed is None:
            return ref
        self._replace(ref, path)
        if shrunk:
            present = _mask(fixed, _PRESENT)
            if not present:
                return None
            only = present.bit_length() - 1
            if present.bit_count() == 1 and _mask(fixed, _LEAVES):  # one key left: its leaf moves up
                if entries is None:
                    entries = _entries(node)
                return (
                    bytes(fixed[1 + HASH_SIZE * only : 1 + HASH_SIZE * (only + 1)]),
                    0,
                    _leaf_of(entries[only]),
                )
        tail = _tail(entries) if entries_changed and entries is not None else node[_INNER_SIZE:]
        return self._write(path, bytes(fixed), tail)

    def _build(self, path: bytes, items: list[Item]) -> Ref | None:
        """A new subtree at `path` holding `items` (puts only, sorted), its nodes staged."""
        return build(path, items, self._write)

    # -- restoring from a snapshot (`storage.snapshot`) -----------------------------------------

    def restore_subtree(self, version: int, path: bytes, leaves: Iterable[Leaf]) -> Ref | None:
        """Stage, for `version` of an empty tree, the subtree at `path` holding `leaves` (each
        key's place must start with `path`); its ref."""
        items = sorted((item(key, value) for key, value in leaves), key=_place)
        _check_items(path, items)
        self._building = version
        try:
            return self._build(path, items)
        finally:
            self._building = -1

    def restore_top(self, version: int, subtrees: dict[bytes, Ref | None]) -> bytes:
        """Stage the nodes above `subtrees` (every path of one depth, refs from
        `restore_subtree`) and make `version` the latest; its root hash."""
        if self.version != -1 or self._staged_roots:
            raise TreeError("a snapshot is restored into an empty state tree")
        self._building = version
        try:
            root = combine(subtrees, self._write)
        finally:
            self._building = -1
        self.version, self._root = version, root
        self._staged_roots[version] = root
        self._staged_stale[version] = []
        return self.root_hash

    def subtree(self, version: int, path: bytes) -> tuple[Ref | None, list[Leaf]]:
        """The keys of `version` whose place starts with `path`: the ref of the subtree they form
        on their own at that depth (a lone key: its leaf, lifted or not), and their leaves in
        place order."""
        ref, depth = self._root_of(version), 0
        while ref is not None and ref[2] is None and depth < len(path):
            ref = _child(self._inner(ref, path[:depth]), path[depth])
            depth += 1
        if ref is None:
            return None, []
        if ref[2] is not None:
            return (ref, [ref[2]]) if item(*ref[2])[0].startswith(path) else (None, [])
        leaves: list[Leaf] = []
        self._collect(ref, path, leaves)
        return ref, leaves

    def _collect(self, ref: Ref, path: bytes, out: list[Leaf]) -> None:
        node = self._inner(ref, path)
        for slot in range(RADIX):
            child = _child(node, slot)
            if child is None:
                continue
            if child[2] is not None:
                out.append(child[2])
            else:
                self._collect(child, path + _SLOTS[slot], out)

    def flush(self, batch: WriteBatch) -> None:
        """Put every staged version into `batch`; the tree reads them from the database after."""
        for key, raw in self._staged.items():
            batch.put(key, raw)
        for since, replaced in self._staged_stale.items():
            if replaced:
                batch.put(schema.state_stale_key(since), b"".join(replaced))
        for version, root in self._staged_roots.items():
            batch.put(schema.state_root_key(version), _encode_root(root))
        self._staged, self._staged_stale, self._staged_roots = {}, {}, {}

    def prune(self, batch: WriteBatch, keep_from: int) -> int:
        """Put into `batch` the deletes of what no written version >= `keep_from` uses (the nodes
        of whole versions, until MAX_PRUNE_PER_BATCH are reached); returns how many nodes go."""
        deleted = 0
        for key, replaced in self._db.iterate(schema.STATE_STALE_PREFIX):
            since = schema.height_from_bytes(key[len(schema.STATE_STALE_PREFIX) :])
            if since > keep_from or deleted >= MAX_PRUNE_PER_BATCH:
                break
            at = 0
            while at < len(replaced):
                end = at + 9 + replaced[at + 8]
                batch.delete(_NODE + replaced[at : at + 8] + replaced[at + 9 : end])
                at, deleted = end, deleted + 1
            batch.delete(key)
        for key, _ in self._db.iterate(schema.STATE_ROOT_PREFIX):
            if schema.height_from_bytes(key[len(schema.STATE_ROOT_PREFIX) :]) >= keep_from:
                break
            batch.delete(key)
        return deleted


def _existence(leaf: Leaf, trail: list[tuple[bytes, int]]) -> ExistenceProof:
    """The proof of `leaf`, whose parents from the root down are `trail` (node, slot taken)."""
    steps = [
        InnerOp(
            hash=HashOp.SHA256,
            prefix=node[: 1 + HASH_SIZE * slot],
            suffix=node[1 + HASH_SIZE * (slot + 1) : _HASHED],
        )
        for node, slot in reversed(trail)
    ]
    return ExistenceProof(key=leaf[0], value=leaf[1], leaf=LEAF_OP, path=tuple(steps))
