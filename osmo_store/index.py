"""The local index: an LMDB environment caching what the blob store holds.

Tables (msgpack values): ``chunks`` (chunk id -> its primary location: pack id, offset, stored
length, raw length, compression), ``dups`` (chunk id -> further locations, when a chunk is in more
than one pack), ``packs`` (pack id -> size, chunk count), ``entries`` (pack id -> its footer entries),
``condemned`` (pack id -> [sequence number of the garbage-collection (or repair) event, swept?, time
condemned]), ``damage`` (what this client found damaged: ``c`` + chunk id + pack id for a chunk that
failed its check in that pack, ``p`` + pack id for a pack missing from the store, ``e`` + sequence
number for a damaged log event), ``nodes`` (node id -> the bytes of a manifest node read from a remote
store: nodes are named by their content, so a copy is never stale) and ``meta``. Manifest nodes are
chunks like any other.

The primary location of a chunk is the best by (known damaged?, condemned?, pack id): a rule that
does not depend on the order packs are learnt in, so a rebuilt index is identical. A chunk whose
only packs are condemned, missing, or hold it damaged is still listed but not *usable*: uploads
store it again instead of referencing it (docs/GC.md), which heals the versions that need it.

The dataset catalog (``catalog.py``) keeps its tables in the same environment. Everything here can
be deleted and rebuilt from the blob store (``osmo store reindex``).

**A cache that cannot hurt.** Every value carries the first 8 bytes of the BLAKE3 of its key and
bytes, so a garbled row is found when it is read (``IndexDamagedError``) instead of sending a reader
to the wrong bytes. The ``indexguard`` module stamps the file after every write and checks it in a
separate process when it changed behind osmo's back (LMDB can abort a process that reads a damaged
page); callers rebuild a damaged index from the store.

LMDB allows one writer and many readers across threads and processes; callers batch writes (one
transaction per pack or per batch), never one per chunk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import lmdb

from osmo_store import hashing
from osmo_store.errors import IndexDamagedError
from osmo_store.indexguard import IndexGuard
from osmo_store.indexrows import reserve, seal, translate, translate_os, unseal
from osmo_store.packs import PackEntry

TABLES = ("meta", "chunks", "dups", "packs", "entries", "condemned", "datasets", "names", "versions", "tags",
          "statcache", "nodes", "damage", "renames")
RAW_TABLES = ("nodes",)  # values named by their own content: checked against the key by their readers
KEPT_BY_REINDEX = ("statcache", "damage")  # what this machine learnt that the store cannot tell again
DEFAULT_MAP_SIZE = 1 << 36  # 64 GiB of address space; pages are only used as written
LOCK_FILE = "lock.mdb"
LOCK_RESERVE = 64 * 1024  # more than LMDB's lock file takes with 256 readers (~16 KiB)
FORMAT_KEY = b"index_format"
FORMAT = b"osmo-index-2"  # values carry checks
DAMAGED_CHUNK, MISSING_PACK, DAMAGED_EVENT = b"c", b"p", b"e"
@dataclass(frozen=True)
class ChunkLocation:
    pack_id: bytes
    offset: int
    stored_length: int
    raw_length: int
    compression: int


class LocalIndex:
    """The LMDB environment and the chunk, pack and tree tables."""

    def __init__(self, path: str, map_size: int = DEFAULT_MAP_SIZE, guard: bool = True) -> None:
        self.path = path
        self.temporary = False  # a stand-in for an index that could not be replaced (repository.py)
        try:
            os.makedirs(path, exist_ok=True)
        except FileExistsError:  # something else took the folder's place
            raise IndexDamagedError(f"the local index at {path} is not a folder") from None
        except OSError as exc:
            raise translate_os(exc, f"cannot create the local index at {path}") from None
        reserve(os.path.join(path, LOCK_FILE), LOCK_RESERVE)
        self.guard = IndexGuard(path) if guard else None
        if self.guard is not None:
            self.guard.check()  # IndexDamagedError if the file changed behind osmo's back and is damaged
        try:
            self.env = lmdb.open(path, map_size=map_size, max_dbs=len(TABLES) + 1,
                                 max_readers=256, subdir=True, readahead=False)
        except lmdb.Error as exc:
            raise translate(exc, path) from None
        except OSError as exc:
            raise translate_os(exc, f"cannot open the local index at {path}") from None
        try:
            self.db = {name: self.env.open_db(name.encode()) for name in TABLES}
            self._check_format()
        except BaseException:
            self.env.close()
            raise

    def _check_format(self) -> None:
        with self.read() as txn:
            found = txn.get(FORMAT_KEY, db=self.db["meta"])
            empty = found is None and not any(txn.stat(self.db[t])["entries"] for t in TABLES)
        if found == FORMAT:
            return
        if found is not None or not empty:
            raise IndexDamagedError(f"the local index at {self.path} was written by another osmo version")
        with self.write() as txn:
            txn.put(FORMAT_KEY, FORMAT, db=self.db["meta"])

    def close(self) -> None:
        self.env.close()

    @contextmanager
    def write(self) -> Iterator[lmdb.Transaction]:
        try:
            with self.guard.writing() if self.guard is not None else _nothing():
                with self.env.begin(write=True) as txn:
                    yield txn
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    @contextmanager
    def read(self) -> Iterator[lmdb.Transaction]:
        try:
            with self.env.begin() as txn:
                yield txn
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    def snapshot(self) -> lmdb.Transaction:
        """A read transaction the caller aborts (long loops renew it; see transfer/upload.py)."""
        try:
            return self.env.begin()
        except lmdb.Error as exc:
            raise translate(exc, self.path) from None

    # checked rows (used by the catalog too) ----------------------------------------------------

    def get(self, txn: lmdb.Transaction, table: str, key: bytes) -> object | None:
        raw = txn.get(key, db=self.db[table])
        return None if raw is None else unseal(key, raw, table)

    def put(self, txn: lmdb.Transaction, table: str, key: bytes, value: object) -> None:
        txn.put(key, seal(key, value), db=self.db[table])

    def rows(self, txn: lmdb.Transaction, table: str, prefix: bytes = b"") -> Iterator[tuple[bytes, object]]:
        """Every ``(key, value)`` of ``table`` whose key starts with ``prefix``, in key order."""
        cur = txn.cursor(db=self.db[table])
        if not cur.set_range(prefix):
            return
        for key, raw in cur:
            key = bytes(key)
            if not key.startswith(prefix):
                return
            yield key, unseal(key, raw, table)

    # chunks and packs -------------------------------------------------------------------------

    def chunk_location(self, chunk_id: bytes, txn: lmdb.Transaction | None = None) -> ChunkLocation | None:
        if txn is None:
            with self.read() as txn:
                return self.chunk_location(chunk_id, txn)
        value = self.get(txn, "chunks", chunk_id)
        return None if value is None else ChunkLocation(*value)

    def has_chunk(self, chunk_id: bytes) -> bool:
        with self.read() as txn:
            return txn.get(chunk_id, db=self.db["chunks"]) is not None

    def usable_location(self, chunk_id: bytes, txn: lmdb.Transaction | None = None) -> ChunkLocation | None:
        """Where a chunk is, if an upload may reference it: in a pack that is not condemned, not
        missing, and does not hold it damaged."""
        if txn is None:
            with self.read() as txn:
                return self.usable_location(chunk_id, txn)
        loc = self.chunk_location(chunk_id, txn)
        if loc is None or self._rank(txn, chunk_id, loc.pack_id)[:2] != (False, False):
            return None
        return loc

    def locations(self, chunk_id: bytes, txn: lmdb.Transaction | None = None) -> list[ChunkLocation]:
        """Every known location of a chunk, best first (the primary, then the others)."""
        if txn is None:
            with self.read() as txn:
                return self.locations(chunk_id, txn)
        primary = self.get(txn, "chunks", chunk_id)
        if primary is None:
            return []
        return [ChunkLocation(*v) for v in [primary, *self._dups(txn, chunk_id)]]

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
        self.put(txn, "packs", pack_id, [size, len(entries)])
        self.put(txn, "entries", pack_id, [e.encode() for e in entries])

    def _bad(self, txn: lmdb.Transaction, chunk_id: bytes, pack_id: bytes) -> bool:
        damage = self.db["damage"]
        return (txn.get(MISSING_PACK + pack_id, db=damage) is not None
                or txn.get(DAMAGED_CHUNK + chunk_id + pack_id, db=damage) is not None)

    def _rank(self, txn: lmdb.Transaction, chunk_id: bytes, pack_id: bytes) -> tuple[bool, bool, bytes]:
        return (self._bad(txn, chunk_id, pack_id), txn.get(pack_id, db=self.db["condemned"]) is not None,
                pack_id)

    def _add_location(self, txn: lmdb.Transaction, chunk_id: bytes, value: list) -> None:
        old = self.get(txn, "chunks", chunk_id)
        if old is None:
            self.put(txn, "chunks", chunk_id, value)
            return
        if old[0] == value[0]:
            return
        if self._rank(txn, chunk_id, value[0]) < self._rank(txn, chunk_id, old[0]):
            value, old = old, value
            self.put(txn, "chunks", chunk_id, old)
        dups = self._dups(txn, chunk_id)
        if all(d[0] != value[0] for d in dups):
            self.put(txn, "dups", chunk_id, dups + [value])

    def _dups(self, txn: lmdb.Transaction, chunk_id: bytes) -> list[list]:
        value = self.get(txn, "dups", chunk_id)
        return [] if value is None else value

    def _relocate(self, txn: lmdb.Transaction, chunk_id: bytes, leaving: bytes | None, gone: bool) -> None:
        """Give the chunk its best location again: the pack ``leaving`` was condemned (or swept,
        ``gone``), or (``leaving`` None) what is known of its packs' damage changed."""
        dups = self._dups(txn, chunk_id)
        primary = self.get(txn, "chunks", chunk_id)
        locations = dups + ([primary] if primary is not None else [])
        if gone:
            locations = [loc for loc in locations if loc[0] != leaving]
        if not locations:
            txn.delete(chunk_id, db=self.db["chunks"])
            txn.delete(chunk_id, db=self.db["dups"])
            return
        locations.sort(key=lambda loc: self._rank(txn, chunk_id, loc[0]))
        if locations[0] == primary and locations[1:] == dups:
            return  # nothing moves: rewriting the row would only dirty index pages
        self.put(txn, "chunks", chunk_id, locations[0])
        if len(locations) > 1:
            self.put(txn, "dups", chunk_id, locations[1:])
        else:
            txn.delete(chunk_id, db=self.db["dups"])

    def pack_entries(self, pack_id: bytes, txn: lmdb.Transaction | None = None) -> list[PackEntry] | None:
        if txn is None:
            with self.read() as txn:
                return self.pack_entries(pack_id, txn)
        value = self.get(txn, "entries", pack_id)
        return None if value is None else [PackEntry(*e) for e in value]

    def pack_state(self, pack_id: bytes, txn: lmdb.Transaction | None = None) -> str:
        """``live``, ``condemned`` (awaiting its sweep) or ``swept`` (deleted, or being deleted)."""
        if txn is None:
            with self.read() as txn:
                return self.pack_state(pack_id, txn)
        value = self.get(txn, "condemned", pack_id)
        if value is None:
            return "live"
        return "swept" if value[1] else "condemned"

    def condemn_pack(self, txn: lmdb.Transaction, pack_id: bytes, seq: int, when: float) -> None:
        """Fold a garbage-collection plan: ``pack_id`` will be deleted by a later sweep."""
        if txn.get(pack_id, db=self.db["condemned"]) is not None:
            return
        self.put(txn, "condemned", pack_id, [seq, False, when])
        for e in self.pack_entries(pack_id, txn) or []:
            self._relocate(txn, e.chunk_id, pack_id, gone=False)

    def sweep_pack(self, txn: lmdb.Transaction, pack_id: bytes, seq: int) -> None:
        """Fold a sweep (or a quarantine by repair): ``pack_id`` is deleted; its chunks keep only their
        other locations."""
        value = self.get(txn, "condemned", pack_id)
        when = value[2] if value is not None else 0.0
        self.put(txn, "condemned", pack_id, [seq, True, when])
        for e in self.pack_entries(pack_id, txn) or []:
            self._relocate(txn, e.chunk_id, pack_id, gone=True)
        txn.delete(pack_id, db=self.db["packs"])
        txn.delete(pack_id, db=self.db["entries"])
        txn.delete(MISSING_PACK + pack_id, db=self.db["damage"])

    def condemned_packs(self) -> dict[bytes, tuple[int, bool, float]]:
        """Every pack a garbage-collection event named: pack id -> (sequence number of the event
        that condemned or swept it, swept?, time it was condemned)."""
        with self.read() as txn:
            return {k: tuple(v) for k, v in self.rows(txn, "condemned")}

    def has_pack(self, pack_id: bytes) -> bool:
        with self.read() as txn:
            return txn.get(pack_id, db=self.db["packs"]) is not None

    def packs(self) -> Iterator[tuple[bytes, int, int]]:
        with self.read() as txn:
            for key, (size, count) in self.rows(txn, "packs"):
                yield key, size, count

    # damage found by this client ----------------------------------------------------------------

    def mark_damaged_chunk(self, chunk_id: bytes, pack_id: bytes, reason: str, when: float) -> None:
        """A chunk failed its check in ``pack_id``: read it elsewhere, and let uploads store it again."""
        with self.write() as txn:
            self.put(txn, "damage", DAMAGED_CHUNK + chunk_id + pack_id, [reason[:200], when])
            self._relocate(txn, chunk_id, None, gone=False)

    def set_missing_packs(self, missing: Iterable[bytes], found: Iterable[bytes], when: float) -> None:
        """Packs the index knows that a listing of the store lacks (``missing``), and packs marked
        missing before that are there again (``found``)."""
        with self.write() as txn:
            for pack_id, present in [(p, False) for p in missing] + [(p, True) for p in found]:
                key = MISSING_PACK + pack_id
                if present:
                    txn.delete(key, db=self.db["damage"])
                else:
                    self.put(txn, "damage", key, ["missing from the store", when])
                for e in self.pack_entries(pack_id, txn) or []:
                    self._relocate(txn, e.chunk_id, None, gone=False)

    def clear_damaged_chunks(self, pack_id: bytes, chunk_ids: Iterable[bytes]) -> None:
        """The chunks were read intact from ``pack_id`` (verify, repair): forget damage noted there."""
        with self.write() as txn:
            for cid in chunk_ids:
                if txn.delete(DAMAGED_CHUNK + cid + pack_id, db=self.db["damage"]):
                    self._relocate(txn, cid, None, gone=False)

    def missing_packs(self) -> set[bytes]:
        with self.read() as txn:
            return {key[1:] for key, _ in self.rows(txn, "damage", MISSING_PACK)}

    def damaged_chunks(self) -> list[tuple[bytes, bytes, str]]:
        """``(chunk id, pack id, reason)`` of every chunk found damaged by this client."""
        with self.read() as txn:
            return [(key[1:33], key[33:], value[0]) for key, value in self.rows(txn, "damage", DAMAGED_CHUNK)]

    def intact_locations(self, chunk_id: bytes, txn: lmdb.Transaction,
                         excluding: set[bytes] = frozenset()) -> list[ChunkLocation]:
        """The chunk's locations not known to be missing or damaged (and not in ``excluding``)."""
        return [loc for loc in self.locations(chunk_id, txn)
                if loc.pack_id not in excluding and not self._bad(txn, chunk_id, loc.pack_id)]

    def lost(self, chunk_id: bytes, txn: lmdb.Transaction) -> bool:
        """No location of the chunk is known to be good (none, or all missing or damaged)."""
        return not self.intact_locations(chunk_id, txn)

    # manifest nodes read from a remote store ---------------------------------------------------

    def cached_node(self, node_id: bytes) -> bytes | None:
        with self.read() as txn:
            raw = txn.get(node_id, db=self.db["nodes"])
            return None if raw is None else bytes(raw)

    def cache_nodes(self, nodes: dict[bytes, bytes]) -> None:
        with self.write() as txn:
            for node_id, data in nodes.items():
                txn.put(node_id, data, db=self.db["nodes"])

    def forget_node(self, node_id: bytes) -> None:
        with self.write() as txn:
            txn.delete(node_id, db=self.db["nodes"])

    # whole-index operations -------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        with self.read() as txn:
            return {name: txn.stat(self.db[name])["entries"] for name in TABLES}

    def clear(self, keep: Iterable[str] = KEPT_BY_REINDEX) -> None:
        """Empty every table but ``keep`` (reindex keeps what only this machine knows)."""
        with self.write() as txn:
            for name in TABLES:
                if name not in keep:
                    txn.drop(self.db[name], delete=False)
            txn.put(FORMAT_KEY, FORMAT, db=self.db["meta"])

    def dump(self, tables: Iterable[str]) -> dict[str, list[tuple[bytes, bytes]]]:
        """Every key and value of ``tables`` (for comparing two indexes in tests and verify)."""
        with self.read() as txn:
            return {name: [(bytes(k), bytes(v)) for k, v in txn.cursor(db=self.db[name])] for name in tables}

    def validate(self) -> int:
        """Read every row and check it (``IndexDamagedError`` at the first bad one); returns the
        number of rows. ``indexguard`` runs this in a separate process."""
        rows = 0
        with self.read() as txn:
            for name in TABLES:
                for key, raw in txn.cursor(db=self.db[name]):
                    key = bytes(key)
                    if name in RAW_TABLES:
                        if hashing.digest(raw) != key:
                            raise IndexDamagedError(f"the local index is damaged: a row of {name} fails its check")
                    elif not (name == "meta" and key == FORMAT_KEY):
                        unseal(key, raw, name)
                    rows += 1
        return rows


@contextmanager
def _nothing() -> Iterator[None]:
    yield
