"""The local index: an LMDB environment caching what the blob store holds.

Tables (msgpack values): ``chunks`` (chunk id -> pack id, offset, stored length, raw length,
compression), ``packs`` (pack id -> size, chunk count), ``trees`` (manifest node id -> size) and
``meta``. The dataset catalog (``catalog.py``) keeps its tables in the same environment. Everything
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

TABLES = ("meta", "chunks", "packs", "trees", "datasets", "names", "versions", "tags", "statcache")
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

    def add_pack(self, pack_id: bytes, size: int, entries: Iterable[PackEntry],
                 txn: lmdb.Transaction | None = None) -> None:
        """Record a durable pack and its chunks.

        A chunk stored in two packs (a rare race, or a pack re-written after a crash) is located in
        the pack with the smaller id, whatever the order packs are recorded in, so a rebuilt index
        is identical to the original."""
        if txn is None:
            with self.write() as txn:
                return self.add_pack(pack_id, size, entries, txn)
        count = 0
        for e in entries:
            value = pack([pack_id, e.offset, e.stored_length, e.raw_length, e.compression])
            old = txn.get(e.chunk_id, db=self.db["chunks"])
            if old is None or unpack(old)[0] > pack_id:
                txn.put(e.chunk_id, value, db=self.db["chunks"])
            count += 1
        txn.put(pack_id, pack([size, count]), db=self.db["packs"])

    def has_pack(self, pack_id: bytes) -> bool:
        with self.read() as txn:
            return txn.get(pack_id, db=self.db["packs"]) is not None

    def packs(self) -> Iterator[tuple[bytes, int, int]]:
        with self.read() as txn:
            for key, value in txn.cursor(db=self.db["packs"]):
                size, count = unpack(value)
                yield bytes(key), size, count

    # manifest nodes ---------------------------------------------------------------------------

    def has_tree(self, node_id: bytes) -> bool:
        with self.read() as txn:
            return txn.get(node_id, db=self.db["trees"]) is not None

    def add_tree(self, node_id: bytes, size: int, txn: lmdb.Transaction | None = None) -> None:
        if txn is None:
            with self.write() as txn:
                return self.add_tree(node_id, size, txn)
        txn.put(node_id, pack(size), db=self.db["trees"])

    def tree_bytes(self) -> int:
        with self.read() as txn:
            return sum(unpack(v) for _, v in txn.cursor(db=self.db["trees"]))

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
