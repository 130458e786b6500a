"""The local index: an LMDB environment caching what the blob store holds.

Tables (msgpack values): ``chunks`` (chunk id -> its primary location: pack id, offset, stored
length, raw length, compression), ``dups`` (chunk id -> further locations, when a chunk is in more
than one pack), ``packs`` (pack id -> size, chunk count), ``entries`` (pack id -> its footer entries),
``condemned`` (pack id -> [sequence number of the garbage-collection event, swept?, time
condemned]), ``nodes`` (node id -> the bytes of a manifest node read from a remote store: nodes are
named by their content, so a copy is never stale) and ``meta``. Manifest nodes are chunks like any
other.

The primary location of a chunk is in a pack that is not condemned if there is one, else in the
pack with the smallest id: a rule that does not depend on the order packs are learnt in, so a
rebuilt index is identical. A chunk whose only packs are condemned is still readable (until the
sweep) but not *usable*: uploads store it again instead of referencing it (docs/GC.md).

The dataset catalog (``catalog.py``) keeps its tables in the same environment. Everything
here can be deleted and rebuilt from the blob store (``osmo store reindex``).

LMDB allows one writer and many readers across threads and processes; callers batch writes (one
transaction per pack or per batch), never one per chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lmdb
import msgpack

from osmo_store.errors import BackendError
from osmo_store.packs import PackEntry

TABLES = ("meta", "chunks", "dups", "packs", "entries", "condemned", "datasets", "names", "versions", "tags",
          "statcache", "nodes")
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; pages are only used as written


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


@dataclass(frozen=True)
class ChunkLocation:
    pack_id: bytes
    offset: int
    stored_length: int
    raw_length: int
    compression: int


class LocalIndex:
    """The LMDB environment and the chunk, pack and tree tables."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE) -> None:
        self.path = path
        try:
            os.makedirs(path, exist_ok=True)
            self.env = lmdb.open(path, map_size=map_size, max_dbs=len(TABLES) + 1,
                                 max_readers=256, subdir=True, readahead=False)
        except (OSError, lmdb.Error) as exc:
            raise BackendError(f"cannot open the local index at {path}: {exc}") from None
        self.db = {name: self.env.open_db(name.encode()) for name in TABLES}

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        try:
            with self.env.begin(write=True) as txn:
                yield txn
        except lmdb.MapFullError:
            raise BackendError(f"the local index at {self.path} is full") from None

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        with self.env.begin() as txn:
            yield txn

    # chunks and packs -------------------------------------------------------------------------

    def chunk_location(self, chunk_id: bytes, txn: lmdb.Transaction | None = None) -> ChunkLocation | None:
        if txn is None:
            with self.read() as txn:
                return self.chunk_location(chunk_id, txn)
        raw = txn.get(chunk_id, db=self.db["chunks"])
        return None if raw is None else ChunkLocation(*unpack(raw))

    def has_chunk(self, chunk_id: bytes) -> bool:
        with self.read() as txn:
            return txn.get(chunk_id, db=self.db["chunks"]) is not None

    def usable_location(self, chunk_id: bytes, txn: lmdb.Transaction | None = None) -> ChunkLocation | None:
        """Where a chunk is, if an upload may reference it: not only in condemned packs."""
        if txn is None:
            with self.read() as txn:
                return self.usable_location(chunk_id, txn)
        loc = self.chunk_location(chunk_id, txn)
        if loc is None or txn.get(loc.pack_id, db=self.db["condemned"]) is not None:
            return None
        return loc

    def add_pack(self, pack_id: bytes, size: int, entries: Iterable[PackEntry],
                 txn: lmdb.Transaction | None = None) -> None:
        """Record a durable pack and its chunks (a pack already swept away is ignored)."""
        if txn is None:
            with self.write() as txn:
                return self.add_pack(pack_id, size, entries, txn)
        state = self.pack_state(pack_id, txn)
        if state == "swept":
            return
        entries = list(entries)
        for e in entries:
            self._add_location(txn, e.chunk_id, [pack_id, e.offset, e.stored_length, e.raw_length, e.compression])
        txn.put(pack_id, pack([size, len(entries)]), db=self.db["packs"])
        txn.put(pack_id, pack([e.encode() for e in entries]), db=self.db["entries"])

    def _rank(self, txn: lmdb.Transaction, pack_id: bytes) -> tuple[bool, bytes]:
        return txn.get(pack_id, db=self.db["condemned"]) is not None, pack_id

    def _add_location(self, txn: lmdb.Transaction, chunk_id: bytes, value: list) -> None:
        old = txn.get(chunk_id, db=self.db["chunks"])
        if old is None:
            txn.put(chunk_id, pack(value), db=self.db["chunks"])
            return
        old = unpack(old)
        if old[0] == value[0]:
            return
        if self._rank(txn, value[0]) < self._rank(txn, old[0]):
            value, old = old, value
            txn.put(chunk_id, pack(old), db=self.db["chunks"])
        dups = self._dups(txn, chunk_id)
        if all(d[0] != value[0] for d in dups):
            txn.put(chunk_id, pack(dups + [value]), db=self.db["dups"])

    def _dups(self, txn: lmdb.Transaction, chunk_id: bytes) -> list[list]:
        raw = txn.get(chunk_id, db=self.db["dups"])
        return [] if raw is None else unpack(raw)

    def _relocate(self, txn: lmdb.Transaction, chunk_id: bytes, leaving: bytes, gone: bool) -> None:
        """The pack ``leaving`` was condemned (or swept, ``gone``): give the chunk its best location."""
        dups = self._dups(txn, chunk_id)
        raw = txn.get(chunk_id, db=self.db["chunks"])
        primary = None if raw is None else unpack(raw)
        locations = dups + ([primary] if primary is not None else [])
        if gone:
            locations = [loc for loc in locations if loc[0] != leaving]
        if not locations:
            txn.delete(chunk_id, db=self.db["chunks"])
            txn.delete(chunk_id, db=self.db["dups"])
            return
        locations.sort(key=lambda loc: self._rank(txn, loc[0]))
        if locations[0] == primary and locations[1:] == dups:
            return  # nothing moves: rewriting the row would only dirty index pages
        txn.put(chunk_id, pack(locations[0]), db=self.db["chunks"])
        if len(locations) > 1:
            txn.put(chunk_id, pack(locations[1:]), db=self.db["dups"])
        else:
            txn.delete(chunk_id, db=self.db["dups"])

    def pack_entries(self, pack_id: bytes, txn: lmdb.Transaction | None = None) -> list[PackEntry] | None:
        if txn is None:
            with self.read() as txn:
                return self.pack_entries(pack_id, txn)
        raw = txn.get(pack_id, db=self.db["entries"])
        return None if raw is None else [PackEntry(*e) for e in unpack(raw)]

    def pack_state(self, pack_id: bytes, txn: lmdb.Transaction | None = None) -> str:
        """``live``, ``condemned`` (awaiting its sweep) or ``swept`` (deleted, or being deleted)."""
        if txn is None:
            with self.read() as txn:
                return self.pack_state(pack_id, txn)
        raw = txn.get(pack_id, db=self.db["condemned"])
        if raw is None:
            return "live"
        return "swept" if unpack(raw)[1] else "condemned"

    def condemn_pack(self, txn: lmdb.Transaction, pack_id: bytes, seq: int, when: float) -> None:
        """Fold a garbage-collection plan: ``pack_id`` will be deleted by a later sweep."""
        if txn.get(pack_id, db=self.db["condemned"]) is not None:
            return
        txn.put(pack_id, pack([seq, False, when]), db=self.db["condemned"])
        for e in self.pack_entries(pack_id, txn) or []:
            self._relocate(txn, e.chunk_id, pack_id, gone=False)

    def sweep_pack(self, txn: lmdb.Transaction, pack_id: bytes, seq: int) -> None:
        """Fold a sweep: ``pack_id`` is deleted; its chunks keep only their other locations."""
        raw = txn.get(pack_id, db=self.db["condemned"])
        when = unpack(raw)[2] if raw is not None else 0.0
        txn.put(pack_id, pack([seq, True, when]), db=self.db["condemned"])
        for e in self.pack_entries(pack_id, txn) or []:
            self._relocate(txn, e.chunk_id, pack_id, gone=True)
        txn.delete(pack_id, db=self.db["packs"])
        txn.delete(pack_id, db=self.db["entries"])

    def condemned_packs(self) -> dict[bytes, tuple[int, bool, float]]:
        """Every pack a garbage-collection event named: pack id -> (sequence number of the event
        that condemned or swept it, swept?, time it was condemned)."""
        with self.read() as txn:
            return {bytes(k): tuple(unpack(v)) for k, v in txn.cursor(db=self.db["condemned"])}

    def has_pack(self, pack_id: bytes) -> bool:
        with self.read() as txn:
            return txn.get(pack_id, db=self.db["packs"]) is not None

    def packs(self) -> Iterator[tuple[bytes, int, int]]:
        with self.read() as txn:
            for key, value in txn.cursor(db=self.db["packs"]):
                size, count = unpack(value)
                yield bytes(key), size, count

    # manifest nodes read from a remote store ---------------------------------------------------

    def cached_node(self, node_id: bytes) -> bytes | None:
        with self.read() as txn:
            raw = txn.get(node_id, db=self.db["nodes"])
            return None if raw is None else bytes(raw)

    def cache_nodes(self, nodes: dict[bytes, bytes]) -> None:
        with self.write() as txn:
            for node_id, data in nodes.items():
                txn.put(node_id, data, db=self.db["nodes"])

    # whole-index operations -------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.read() as txn:
            return {name: txn.stat(self.db[name])["entries"] for name in TABLES}

    def clear(self) -> None:
        """Empty every table (used by reindex)."""
        with self.write() as txn:
            for name in TABLES:
                txn.drop(self.db[name], delete=False)

    def dump(self, tables: Iterable[str]) -> dict[str, list[tuple[bytes, bytes]]]:
        """Every key and value of ``tables`` (for comparing two indexes in tests and verify)."""
        with self.read() as txn:
            return {name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=self.db[name])] for name in tables}
