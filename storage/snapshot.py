"""State snapshots: the state of one height as 256 chunks, each checkable on its own.

A snapshot of height H holds every (key, value) of the state tree at version H (application keys,
`schema.APP_PREFIX`: a chunk with another key is refused), split by the first
two nibbles of sha256(key) (a key's place, `storage.statetree`) into 256 chunks: chunk i holds the
keys whose place starts with i's two nibbles, in place order, as `encode([[key, value], ...])`.
Its `Manifest` gives, for each chunk, the ref of the subtree its keys form on their own at depth 2
(hash and kind: empty, a lone leaf, or an internal node). Combining the 256 refs as the tree does
(`statetree.combine`) gives the root, so a restoring node checks a manifest against an app hash it
trusts before it fetches a chunk (`Manifest.check`), and each chunk against its entry as it comes
(`Restore.add`): a chunk that does not rebuild its entry is refused, and its sender is known.

`Restore` builds the tree's version H and the flat `a:` keys from the chunks into a batch for an
empty database; the application's meta and block time are the restoring node's to write (it has
the verified header of H + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from primitives import codec
from primitives.hashing import sha256
from storage import schema
from storage.db import WriteBatch
from storage.statetree import RADIX, Item, Leaf, Ref, StateTree, build, combine, hash_only, item

DEPTH = 2
CHUNKS = RADIX**DEPTH
FORMAT = 1
"""The snapshot format (CometBFT's `format`): 1 is this one."""

_EMPTY, _LEAF, _INNER = 0, 1, 2
MAX_CHUNK_BYTES = 64 * 1024 * 1024


class SnapshotError(ValueError):
    """A manifest or chunk that does not check; the message says which and why."""


def chunk_path(index: int) -> bytes:
    """The nibble path (two nibbles) of chunk `index`."""
    return bytes((index >> 4, index & 15))


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    height: int
    root: bytes
    """the app hash of `height`: the root the entries combine to"""
    entries: tuple[tuple[int, bytes], ...]
    """per chunk, (kind: 0 empty, 1 a lone leaf, 2 internal; the subtree's hash, empty if none)"""

    def encode(self) -> bytes:
        return codec.encode(
            [FORMAT, self.height, self.root, [[kind, digest] for kind, digest in self.entries]]
        )

    @classmethod
    def decode(cls, raw: bytes) -> Manifest:
        f = codec.field_list(codec.decode(raw), "manifest", 4)
        if codec.field_int(f[0], "manifest.format") != FORMAT:
            raise SnapshotError(f"manifest format {f[0]!r} is not {FORMAT}")
        listed = codec.field_list(f[3], "manifest.entries", CHUNKS)
        entries = []
        for i, raw_entry in enumerate(listed):
            pair = codec.field_list(raw_entry, f"manifest.entries[{i}]", 2)
            kind = codec.field_int(pair[0], f"manifest.entries[{i}].kind", 0, 2)
            digest = codec.field_bytes(pair[1], f"manifest.entries[{i}].hash", 0 if kind == _EMPTY else 32)
            entries.append((kind, digest))
        return cls(
            height=codec.field_int(f[1], "manifest.height", 1),
            root=codec.field_bytes(f[2], "manifest.root", 32),
            entries=tuple(entries),
        )

    @property
    def hash(self) -> bytes:
        """What a snapshot offer names (CometBFT's snapshot `hash`)."""
        return sha256(self.encode())

    def check(self, app_hash: bytes) -> None:
        """Raise SnapshotError unless the entries combine to `app_hash` (and `root` is it)."""
        if self.root != app_hash:
            raise SnapshotError("the manifest is for another app hash")
        subtrees: dict[bytes, Ref | None] = {}
        for index, (kind, digest) in enumerate(self.entries):
            subtrees[chunk_path(index)] = None if kind == _EMPTY else _claimed(kind, digest)
        root = combine(subtrees, hash_only)
        if (b"\0" * 32 if root is None else root[0]) != app_hash:
            raise SnapshotError("the manifest's chunks do not combine to the app hash")


def _claimed(kind: int, digest: bytes) -> Ref:
    """A ref standing for a manifest entry: only its hash and kind matter to `combine`."""
    return (digest, 0, (b"", b"")) if kind == _LEAF else (digest, 0, None)


def _entry(ref: Ref | None) -> tuple[int, bytes]:
    if ref is None:
        return _EMPTY, b""
    return (_LEAF if ref[2] is not None else _INNER), ref[0]


def make_manifest(tree: StateTree, height: int) -> Manifest:
    """The manifest of the tree's version `height`."""
    entries = tuple(_entry(tree.subtree(height, chunk_path(i))[0]) for i in range(CHUNKS))
    return Manifest(height=height, root=tree.root_at(height), entries=entries)


def make_chunk(tree: StateTree, height: int, index: int) -> bytes:
    """Chunk `index` of the snapshot of version `height`."""
    _, leaves = tree.subtree(height, chunk_path(index))
    return codec.encode([[key, value] for key, value in leaves])


def read_chunk(manifest: Manifest, index: int, raw: bytes) -> list[Leaf]:
    """The leaves of chunk `index` if it rebuilds its manifest entry; else SnapshotError."""
    if not 0 <= index < CHUNKS:
        raise SnapshotError(f"there is no chunk {index}")
    try:
        pairs = codec.field_list(codec.decode(raw, max_size=MAX_CHUNK_BYTES), f"chunk {index}")
        leaves = [tuple(codec.field_list(p, f"chunk {index} entry", 2)) for p in pairs]
        typed = [(codec.field_bytes(k, "key"), codec.field_bytes(v, "value")) for k, v in leaves]
    except ValueError as exc:
        raise SnapshotError(f"chunk {index} is malformed: {exc}") from None
    path = chunk_path(index)
    items: list[Item] = []
    for key, value in typed:
        entry = item(key, value)
        if not entry[0].startswith(path) or not key.startswith(schema.APP_PREFIX) or not value:
            raise SnapshotError(f"chunk {index} holds a key that is not its own")
        items.append(entry)
    items.sort(key=lambda item: item[0])
    if len({item[1] for item in items}) != len(items):
        raise SnapshotError(f"chunk {index} holds a key twice")
    if _entry(build(path, items, hash_only)) != manifest.entries[index]:
        raise SnapshotError(f"chunk {index} does not rebuild the subtree its manifest names")
    return [(key, value) for _, key, value, _ in items if value is not None]


class Restore:
    """Restore a snapshot into an empty database: the tree's version and the flat keys."""

    def __init__(self, tree: StateTree, manifest: Manifest) -> None:
        if tree.version != -1:
            raise SnapshotError("a snapshot is restored into an empty state tree")
        self._tree, self.manifest = tree, manifest
        self._subtrees: dict[bytes, Ref | None] = {}
        self.batch = WriteBatch()
        """the flat keys so far, then the tree's nodes (`finish`)"""

    @property
    def missing(self) -> list[int]:
        return [i for i in range(CHUNKS) if chunk_path(i) not in self._subtrees]

    def add(self, index: int, raw: bytes) -> None:
        """Check chunk `index` (SnapshotError: refused, nothing kept) and keep it."""
        leaves = read_chunk(self.manifest, index, raw)
        path = chunk_path(index)
        if path in self._subtrees:
            return
        self._subtrees[path] = self._tree.restore_subtree(self.manifest.height, path, leaves)
        for key, value in leaves:
            self.batch.put(key, value)

    def finish(self) -> WriteBatch:
        """The batch to write: every flat key and the tree's version (SnapshotError if a chunk is
        missing or the result is not the manifest's root)."""
        if self.missing:
            raise SnapshotError(f"{len(self.missing)} chunks are missing (first: {self.missing[0]})")
        root = self._tree.restore_top(self.manifest.height, self._subtrees)
        if root != self.manifest.root:
            raise SnapshotError("the restored state does not have the manifest's root")
        self._tree.flush(self.batch)
        return self.batch
