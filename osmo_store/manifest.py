"""Manifests: file entries and the content-defined tree of manifest nodes that holds them.

A version's manifest is a tree of immutable nodes, each canonical msgpack named by its BLAKE3:

* leaf (level 0): ``[0, [entry, ...]]`` with entries sorted by path (strictly increasing);
* inner (level L >= 1): ``[L, [[first_path, child_id (bin 32), files, bytes], ...]]``.

A node ends after an item whose key hash falls under ``2**32 / target`` (or when it holds
``4 * target`` items), so boundaries depend on the paths around them, not on positions: changing one
file rewrites one leaf and the nodes above it, and diffs skip every subtree whose id is unchanged.
This module is storage-agnostic: callers pass ``load(node_id) -> bytes`` and ``store(node_id, bytes)``.
"""

from __future__ import annotations

import posixpath
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import msgpack

from osmo_store import hashing
from osmo_store.errors import IntegrityError, UnsafePathError

LEAF = 0
MAX_LEVEL = 16


@dataclass(frozen=True)
class FileEntry:
    """One file of a version: where it goes, what it is and which chunks make it up."""

    path: str
    size: int
    mode: int
    mtime_ns: int
    digest: bytes
    chunks: tuple[tuple[bytes, int], ...] = field(default=())

    @property
    def executable(self) -> bool:
        return bool(self.mode & 0o111)

    def encode(self) -> list:
        return [self.path, self.size, self.mode, self.mtime_ns, self.digest,
                [[cid, n] for cid, n in self.chunks]]

    @classmethod
    def decode(cls, raw: object) -> "FileEntry":
        if not (isinstance(raw, list) and len(raw) == 6):
            raise IntegrityError("manifest entry malformed")
        path, size, mode, mtime_ns, digest, chunks = raw
        if not (isinstance(path, str) and type(size) is int and type(mode) is int
                and type(mtime_ns) is int and isinstance(digest, bytes) and isinstance(chunks, list)):
            raise IntegrityError("manifest entry malformed")
        check_path(path)
        if size < 0 or not (0 <= mode <= 0o7777) or len(digest) != 32:
            raise IntegrityError(f"manifest entry {path!r} malformed")
        parsed = []
        total = 0
        for item in chunks:
            if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], bytes)
                    and len(item[0]) == 32 and type(item[1]) is int and item[1] > 0):
                raise IntegrityError(f"manifest entry {path!r}: malformed chunk list")
            parsed.append((item[0], item[1]))
            total += item[1]
        if total != size:
            raise IntegrityError(f"manifest entry {path!r}: chunk sizes add to {total}, not {size}")
        return cls(path, size, mode, mtime_ns, digest, tuple(parsed))


def check_path(path: str) -> str:
    """A manifest path is relative POSIX with no empty, ``.`` or ``..`` parts and no NUL."""
    if (not path or path.startswith("/") or "\x00" in path
            or any(p in ("", ".", "..") for p in path.split("/"))
            or posixpath.normpath(path) != path):
        raise UnsafePathError(f"manifest path {path!r} is not a safe relative path")
    return path


@dataclass(frozen=True)
class ChildRef:
    first_path: str
    node_id: bytes
    files: int
    bytes: int


def _pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def encode_node(level: int, items: list) -> bytes:
    if level == LEAF:
        return _pack([LEAF, [e.encode() for e in items]])
    return _pack([level, [[r.first_path, r.node_id, r.files, r.bytes] for r in items]])


def decode_node(node_id: bytes, data: bytes) -> tuple[int, list]:
    """Decode and validate one node; any corruption or non-canonical form raises IntegrityError."""
    where = f"manifest node {node_id.hex()[:16]}"
    if hashing.digest(data) != node_id:
        raise IntegrityError(f"{where}: content does not match its id")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise IntegrityError(f"{where}: not valid msgpack ({exc})") from None
    if not (isinstance(raw, list) and len(raw) == 2 and type(raw[0]) is int and isinstance(raw[1], list)):
        raise IntegrityError(f"{where}: malformed")
    level, raw_items = raw
    if not 0 <= level <= MAX_LEVEL:
        raise IntegrityError(f"{where}: bad level {level}")
    try:
        if level == LEAF:
            items: list = [FileEntry.decode(r) for r in raw_items]
            keys = [e.path for e in items]
        else:
            items = []
            for r in raw_items:
                if not (isinstance(r, list) and len(r) == 4 and isinstance(r[0], str)
                        and isinstance(r[1], bytes) and len(r[1]) == 32
                        and type(r[2]) is int and type(r[3]) is int):
                    raise IntegrityError(f"{where}: malformed child reference")
                items.append(ChildRef(check_path(r[0]), r[1], r[2], r[3]))
            keys = [r.first_path for r in items]
    except IntegrityError as exc:
        raise IntegrityError(f"{where}: {exc}") from None
    except UnsafePathError as exc:
        raise UnsafePathError(f"{where}: {exc}") from None
    if any(a >= b for a, b in zip(keys, keys[1:])):
        raise IntegrityError(f"{where}: paths are not sorted and unique")
    if level != LEAF and not items:
        raise IntegrityError(f"{where}: empty inner node")
    if encode_node(level, items) != data:
        raise IntegrityError(f"{where}: not in canonical form")
    return level, items


def _is_boundary(key: str, level: int, target: int) -> bool:
    h = hashing.digest(bytes([level]) + key.encode("utf-8"))
    return struct.unpack("<I", h[:4])[0] < (1 << 32) // target


class TreeBuilder:
    """Builds a manifest tree from entries given in strictly increasing path order, streaming."""

    def __init__(self, store: Callable[[bytes, bytes], None], target: int = 512) -> None:
        self._store = store
        self._target = target
        self._max = 4 * target
        self._levels: list[list] = [[]]
        self._flushed: list[int] = [0]
        self._last_path: str | None = None
        self.files = 0
        self.bytes = 0

    def add(self, entry: FileEntry) -> None:
        if self._last_path is not None and entry.path <= self._last_path:
            raise ValueError(f"entries out of order: {entry.path!r} after {self._last_path!r}")
        self._last_path = entry.path
        self.files += 1
        self.bytes += entry.size
        self._add(LEAF, entry, entry.path)

    def _add(self, level: int, item: object, key: str) -> None:
        items = self._levels[level]
        items.append(item)
        if _is_boundary(key, level, self._target) or len(items) >= self._max:
            self._flush(level)

    def _write(self, level: int, items: list) -> ChildRef:
        data = encode_node(level, items)
        node_id = hashing.digest(data)
        self._store(node_id, data)
        if level == LEAF:
            first = items[0].path if items else ""
            files, size = len(items), sum(e.size for e in items)
        else:
            first = items[0].first_path
            files, size = sum(r.files for r in items), sum(r.bytes for r in items)
        return ChildRef(first, node_id, files, size)

    def _flush(self, level: int) -> None:
        items = self._levels[level]
        self._levels[level] = []
        self._flushed[level] += 1
        ref = self._write(level, items)
        if level + 1 == len(self._levels):
            self._levels.append([])
            self._flushed.append(0)
        self._add(level + 1, ref, ref.first_path)

    def finish(self) -> bytes:
        """Write the remaining nodes; return the root node id."""
        level = 0
        while True:
            items = self._levels[level]
            if self._flushed[level] == 0:
                if level > LEAF and len(items) == 1:
                    return items[0].node_id
                return self._write(level, items).node_id
            if items:
                self._flush(level)
            level += 1


Loader = Callable[[bytes], bytes]


def iter_entries(load: Loader, root: bytes) -> Iterator[FileEntry]:
    """Every entry of the tree in path order, loading one node per level at a time."""
    yield from _iter(load, root, 0)


def _iter(load: Loader, node_id: bytes, depth: int) -> Iterator[FileEntry]:
    if depth > MAX_LEVEL:
        raise IntegrityError("manifest tree too deep")
    level, items = decode_node(node_id, load(node_id))
    if level == LEAF:
        yield from items
    else:
        for ref in items:
            yield from _iter(load, ref.node_id, depth + 1)


def iter_nodes(load: Loader, root: bytes) -> Iterator[tuple[bytes, int, list]]:
    """Every node (id, level, items) of the tree, parents before children."""
    stack = [root]
    while stack:
        node_id = stack.pop()
        level, items = decode_node(node_id, load(node_id))
        yield node_id, level, items
        if level != LEAF:
            stack.extend(r.node_id for r in reversed(items))


def diff_trees(load: Loader, a: bytes | None, b: bytes | None,
               visit: Callable[[int, bytes], None] | None = None
               ) -> Iterator[tuple[FileEntry | None, FileEntry | None]]:
    """Yield ``(old, new)`` pairs for every path that differs; skips subtrees shared by id.

    ``None`` stands for an empty tree. ``visit(side, node_id)`` (side 0 = ``a``, 1 = ``b``), when
    given, is called for every node the walk opens: the nodes of one tree not shared with the other.
    """
    left: list = [("node", a)] if a is not None else []
    right: list = [("node", b)] if b is not None else []

    def expand(stack: list) -> None:
        _, node_id = stack.pop()
        if visit is not None:
            visit(0 if stack is left else 1, node_id)
        level, items = decode_node(node_id, load(node_id))
        if level == LEAF:
            stack.extend(("entry", e) for e in reversed(items))
        else:
            stack.extend(("node", r.node_id) for r in reversed(items))

    while left or right:
        hl = left[-1] if left else None
        hr = right[-1] if right else None
        if hl and hr and hl[0] == "node" and hr[0] == "node" and hl[1] == hr[1]:
            left.pop()
            right.pop()
        elif hl and hl[0] == "node":
            expand(left)
        elif hr and hr[0] == "node":
            expand(right)
        elif hl is None:
            yield None, right.pop()[1]
        elif hr is None:
            yield left.pop()[1], None
        else:
            el, er = hl[1], hr[1]
            if el.path == er.path:
                left.pop()
                right.pop()
                if el.digest != er.digest or el.size != er.size or el.mode != er.mode:
                    yield el, er
            elif el.path < er.path:
                yield left.pop()[1], None
            else:
                yield None, right.pop()[1]


class Checksum:
    """The version checksum: BLAKE3 over ``[path, size, executable, digest]`` of every file in order.

    It ignores chunking, mtimes and permission bits other than exec, so a folder on disk and a stored
    version compare equal exactly when they hold the same files with the same bytes.
    """

    def __init__(self) -> None:
        self._h = hashing.hasher()

    def add(self, path: str, size: int, executable: bool, digest: bytes) -> None:
        self._h.update(_pack([path, size, executable, digest]))

    def hexdigest(self) -> str:
        return self._h.hexdigest()
