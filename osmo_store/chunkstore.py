"""The chunk store: writes chunks into packs with deduplication, and reads them back verified.

Writing: ``PackWriter`` takes chunks from many threads, drops those already stored (in the index or
earlier in this session), compresses the rest where that saves space, and seals a pack when it
reaches the target size. A pack is recorded in the index only after the blob store has it durably,
so the index never points at a pack that is not there, and an interrupted upload's packs are reused
by the next one. Manifest nodes are stored like chunks (their id is the BLAKE3 of their bytes), in
the same packs, so deduplication, compression and garbage collection treat them alike.

Reading: ``decode_chunk`` decompresses a chunk and checks it against its BLAKE3 id; which byte ranges
of packs a download fetches is planned by ``transfer/spans.py``.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import zstandard

from osmo_store import hashing
from osmo_store.blob import BlobStore
from osmo_store.config import StoreConfig
from osmo_store.chunkcodec import decode_chunk  # noqa: F401  (callers read chunks through the store)
from osmo_store.errors import IntegrityError, NotFoundError
from osmo_store.index import ChunkLocation, LocalIndex
from osmo_store.packcheck import PackCheck, check_pack
from osmo_store.packs import (
    COMPRESSION_NONE, COMPRESSION_ZSTD, PACK_PREFIX, FooterTooShort, PackBuilder, PackEntry,
    pack_id_from_key, pack_key, parse_tail,
)

log = logging.getLogger("osmo.store")

TAIL_GUESS = 64 * 1024
MAX_PACK_WRITERS = 4  # packs uploaded at once to an object store (each holds one pack in memory)
LOCAL_PACK_WRITERS = 2  # packs written at once to a local disk
NODE_CACHE_BATCH = 256  # manifest nodes read from a remote store, written to the index at once
WRITTEN_MEMORY = 1_000_000  # chunk ids an upload remembers having written (~100 MB at most)


_local = threading.local()


@dataclass
class WriteStats:
    chunks_new: int = 0
    chunks_dedup: int = 0
    raw_bytes_new: int = 0
    packs_written: int = 0
    bytes_written: int = 0  # packs (chunks and manifest nodes), as stored


class ChunkStore:
    def __init__(self, blob: BlobStore, index: LocalIndex, config: StoreConfig) -> None:
        self.blob = blob
        self.index = index
        self.config = config
        self._refresh_lock = threading.Lock()
        self._node_lock = threading.Lock()
        self._new_nodes: dict[bytes, bytes] = {}  # nodes read from a remote store, not yet in the index

    # reading ----------------------------------------------------------------------------------

    def locate(self, chunk_id: bytes) -> ChunkLocation:
        loc = self.index.chunk_location(chunk_id)
        if loc is None:
            self.refresh_packs()
            loc = self.index.chunk_location(chunk_id)
        if loc is None:
            raise NotFoundError(f"chunk {chunk_id.hex()[:16]} is not in the store (run 'osmo store verify')")
        return loc

    def locate_many(self, chunk_ids: Iterable[bytes], missing_ok: bool = False) -> list[tuple[bytes, ChunkLocation | None]]:
        """Locations of many chunks, looked up in one index transaction (packs other clients wrote are
        indexed once if some are unknown); ``missing_ok``: ``None`` for a chunk no pack holds."""
        with self.index.read() as txn:
            found = [(cid, self.index.chunk_location(cid, txn)) for cid in chunk_ids]
        if any(loc is None for _, loc in found):
            self.refresh_packs()
        out = []
        for cid, loc in found:
            if loc is None:
                loc = self.index.chunk_location(cid)
            if loc is None and not missing_ok:
                loc = self.locate(cid)  # raises, naming it
            out.append((cid, loc))
        return out

    # reading chunks, past damage --------------------------------------------------------------

    def _read_at(self, chunk_id: bytes, loc: ChunkLocation) -> tuple[bytes, bytes]:
        """``(stored, raw)``: a chunk read with one range request, decoded and checked against its id."""
        key = pack_key(loc.pack_id)
        stored = self.blob.get_range(key, loc.offset, loc.stored_length)
        if len(stored) != loc.stored_length:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} in {key}: pack is shorter than its index says")
        return stored, decode_chunk(chunk_id, stored, loc.raw_length, loc.compression, key)

    def read_located(self, chunk_id: bytes, loc: ChunkLocation | None = None) -> tuple[ChunkLocation, bytes, bytes]:
        """``(where, stored, raw)`` of a chunk, read at ``loc`` (default: its best location). A copy
        that fails its check, or a pack gone from the store, is noted in the index (uploads then store
        the chunk again) and the next known copy is read instead; the error is raised when none is left."""
        loc = loc or self.locate(chunk_id)
        tried: set[bytes] = set()
        while True:
            try:
                try:
                    stored, raw = self._read_at(chunk_id, loc)
                except IntegrityError:
                    stored, raw = self._read_at(chunk_id, loc)  # once more: a read cut short is not damage
                if tried:
                    log.warning(f"osmo: warning: chunk {chunk_id.hex()[:16]} was damaged or missing in "
                                f"{len(tried)} {'pack' if len(tried) == 1 else 'packs'} and was read from another "
                                "copy (run 'osmo store repair')")
                return loc, stored, raw
            except IntegrityError as exc:
                self.note_damaged(chunk_id, loc.pack_id, str(exc))
                error: Exception = exc
            except NotFoundError:
                self.note_missing([loc.pack_id])
                error = NotFoundError(f"chunk {chunk_id.hex()[:16]}: pack {pack_key(loc.pack_id)} is missing "
                                      "from the store (run 'osmo store verify')")
            tried.add(loc.pack_id)
            others = [o for o in self.index.locations(chunk_id) if o.pack_id not in tried]
            if not others:
                raise error
            loc = others[0]

    def note_damaged(self, chunk_id: bytes, pack_id: bytes, reason: str) -> None:
        """A copy of a chunk failed its check: reads go elsewhere, uploads store the chunk again."""
        self.index.mark_damaged_chunk(chunk_id, pack_id, reason, time.time())

    def note_missing(self, pack_ids: Iterable[bytes], found: Iterable[bytes] = ()) -> None:
        self.index.set_missing_packs(pack_ids, found, time.time())

    def read_stored(self, chunk_id: bytes, loc: ChunkLocation | None = None) -> tuple[ChunkLocation, bytes]:
        """A chunk's bytes as stored (maybe compressed) and where they were read, checked against its id."""
        where, stored, _ = self.read_located(chunk_id, loc)
        return where, stored

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """One chunk (or manifest node), read with a range request and verified."""
        return self.read_located(chunk_id)[2]

    def unusable(self, chunk_ids: Iterable[bytes]) -> list[bytes]:
        """The chunks an upload may not reference: stored only in condemned packs, or not at all."""
        with self.index.read() as txn:
            return [cid for cid in chunk_ids if self.index.usable_location(cid, txn) is None]

    def rescue(self, chunk_ids: Iterable[bytes]) -> int:
        """Copy chunks whose packs garbage collection condemned into new packs (an upload that
        referenced them while the collector ran, or a repair quarantined); returns the bytes written."""
        copier = PackCopier(self)
        for cid in chunk_ids:
            loc = self.index.chunk_location(cid)
            if loc is None:
                self.refresh_packs()
                loc = self.index.chunk_location(cid)
            try:
                if loc is None:
                    raise NotFoundError(cid.hex())
                loc, stored = self.read_stored(cid, loc)
            except (NotFoundError, IntegrityError):
                raise NotFoundError(f"chunk {cid.hex()[:16]} was removed (garbage-collected, or quarantined by "
                                    "'osmo store repair') while this upload ran; run the upload again") from None
            copier.add(cid, stored, loc.raw_length, loc.compression)
        copier.flush()
        return copier.bytes_written

    def get_tree(self, node_id: bytes) -> bytes:
        """A manifest node. Nodes read from a remote store are kept in the index (batched, see
        ``NODE_CACHE_BATCH``), so listing, diffing and downloading versions does not fetch them again;
        a node's bytes are checked against its id whenever it is decoded. ``verify`` reads the store."""
        if self.blob.local:
            return self.read_chunk(node_id)
        with self._node_lock:
            data = self._new_nodes.get(node_id)
        if data is None:
            data = self.index.cached_node(node_id)
            if data is not None and hashing.digest(data) != node_id:  # a damaged cache: read the store
                self.index.forget_node(node_id)
                data = None
        if data is not None:
            return data
        data = self.read_chunk(node_id)
        batch = None
        with self._node_lock:
            self._new_nodes[node_id] = data
            if len(self._new_nodes) >= NODE_CACHE_BATCH:
                batch, self._new_nodes = self._new_nodes, {}
        if batch:
            self.index.cache_nodes(batch)
        return data

    def flush_node_cache(self) -> None:
        """Write the nodes read since the last batch into the index (called when the store closes)."""
        with self._node_lock:
            batch, self._new_nodes = self._new_nodes, {}
        if batch:
            self.index.cache_nodes(batch)

    # packs ------------------------------------------------------------------------------------

    def read_pack_index(self, key: str) -> tuple[bytes, int, list[PackEntry]]:
        """Read a pack's footer with range reads: ``(pack_id, size, entries)``."""
        pack_id = pack_id_from_key(key)
        size = self.blob.size(key)
        want = min(size, TAIL_GUESS)
        tail = self.blob.get_range(key, size - want, want)
        try:
            entries = parse_tail(tail, size, key)
        except FooterTooShort as short:
            tail = self.blob.get_range(key, size - short.needed, short.needed)
            entries = parse_tail(tail, size, key)
        return pack_id, size, entries

    def check_pack(self, key: str) -> PackCheck:
        """Read a whole pack and check everything in it (``packcheck.py``); what it finds is noted in
        the index: damaged chunks are read elsewhere, intact ones are cleared of earlier notes."""
        try:
            known = self.index.pack_entries(pack_id_from_key(key))
        except IntegrityError:
            known = None
        check = check_pack(self.blob, key, known)
        if check.pack_id is not None and not check.gone:
            for cid in check.bad:
                self.index.mark_damaged_chunk(cid, check.pack_id, f"chunk {cid.hex()[:16]} in {key} fails its check",
                                              time.time())
            self.index.clear_damaged_chunks(check.pack_id, (e.chunk_id for e in check.good))
        return check

    def refresh_packs(self, warn: bool = True) -> int:
        """Index packs written by other clients since this index last looked; returns how many.

        Called when a chunk is missing from the index: another machine may have stored it. A pack
        whose footer cannot be read is skipped with a warning naming it (``warn=False``: the caller,
        verify, reports it itself).
        """
        with self._refresh_lock:
            known = {pack_key(pid) for pid, _, _ in self.index.packs()}
            added = 0
            swept = {pid for pid, (_, gone, _) in self.index.condemned_packs().items() if gone}
            listed = set(self.blob.list(PACK_PREFIX))
            self._note_listing(known, listed)
            for key in sorted(listed):
                if key in known:
                    continue
                try:
                    if pack_id_from_key(key) in swept:
                        continue  # deleted by garbage collection (or being deleted)
                    pack_id, size, entries = self.read_pack_index(key)
                except NotFoundError:
                    continue  # deleted meanwhile
                except IntegrityError as exc:
                    if warn:
                        log.warning("osmo: warning: %s (not indexed; run 'osmo store verify')", exc)
                    continue
                self.index.add_pack(pack_id, size, entries)
                added += 1
            return added

    def _note_listing(self, known: set[str], listed: set[str]) -> None:
        """Packs this index knows that the store no longer lists are noted missing (their chunks are
        stored again by the next upload); packs noted missing that are back are forgotten."""
        marked = self.index.missing_packs()
        gone = [pack_id_from_key(k) for k in known - listed]
        gone = [p for p in gone if p not in marked]
        back = [p for p in marked if pack_key(p) in listed]
        if gone or back:
            self.note_missing(gone, back)

    def writer(self) -> "PackWriter":
        return PackWriter(self)


class PackCopier:
    """Writes chunks, as they are already stored (compressed or not), into new packs, whether or not
    they are stored elsewhere: garbage collection moves live chunks out of packs it will delete, and
    an upload rescues chunks whose packs were condemned while it ran. Packs are written at once."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self._builder = PackBuilder()
        self.packs: list[tuple[bytes, int]] = []  # (pack id, size) written
        self.bytes_written = 0

    def add(self, chunk_id: bytes, stored: bytes, raw_length: int, compression: int) -> None:
        self._builder.add(chunk_id, stored, raw_length, compression)
        if self._builder.size >= self.store.config.pack_target_size:
            self.flush()

    def flush(self) -> None:
        builder, self._builder = self._builder, PackBuilder()
        if not len(builder):
            return
        entries = list(builder.entries)
        pack_id, parts = builder.seal_parts()
        size = sum(len(p) for p in parts)
        self.store.blob.put_parts(pack_key(pack_id), parts)
        self.store.index.add_pack(pack_id, size, entries)
        self.packs.append((pack_id, size))
        self.bytes_written += size


class PackWriter:
    """A thread-safe upload session: ``add`` chunks from many threads, then ``flush`` and ``close``.

    Sealed packs go through a queue to background threads that write them and record them in the
    index, so chunking goes on while packs are being written. A local disk gets two writer threads
    (one writes a pack while the other waits for its fsync) and at most two sealed packs in flight;
    an object store gets up to ``MAX_PACK_WRITERS`` (its ``concurrency``) and twice as many packs in
    flight. Memory is bounded by the pack being filled plus the packs in flight. A write error is
    raised by the next ``add`` or by ``flush``.
    """

    def __init__(self, store: ChunkStore, writers: int | None = None) -> None:
        self.store = store
        self.stats = WriteStats()
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()  # chunks accepted in this session but not yet indexed
        self._written: set[bytes] = set()  # chunks this session already wrote (bounded, see add)
        self._builder = PackBuilder()
        self._target = store.config.pack_target_size
        self._compress = store.config.compression == "zstd"
        self._level = store.config.compression_level
        if store.blob.local:
            self._writers = writers or LOCAL_PACK_WRITERS
            in_flight = self._writers
        else:
            self._writers = max(1, min(writers or store.blob.concurrency, MAX_PACK_WRITERS))
            in_flight = 2 * self._writers
        self._slots = threading.BoundedSemaphore(in_flight)  # sealed packs queued or being written
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._error: BaseException | None = None
        self._abandoned = False

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(_local, "zc", None)
        if c is None or getattr(_local, "zc_level", None) != self._level:
            c = _local.zc = zstandard.ZstdCompressor(level=self._level)
            _local.zc_level = self._level
        return c

    def add(self, chunk_id: bytes, data: bytes | memoryview, txn: object = None) -> bool:
        """Store a chunk unless it is already stored; returns True if it was new.

        ``txn`` is an optional index read transaction reused across the chunks of one file.
        """
        if self._error is not None:
            raise self._error
        if self.store.index.usable_location(chunk_id, txn) is not None:
            with self._lock:
                self.stats.chunks_dedup += 1
            return False
        with self._lock:
            seen = chunk_id in self._pending or chunk_id in self._written
            if not seen and txn is not None and len(self._written) >= WRITTEN_MEMORY:
                seen = self.store.index.usable_location(chunk_id) is not None  # snapshot may be stale
            if seen:
                self.stats.chunks_dedup += 1
                return False
            self._pending.add(chunk_id)
        stored, compression = data, COMPRESSION_NONE
        if self._compress:
            packed = self._compressor().compress(data)
            if len(packed) < len(data):
                stored, compression = packed, COMPRESSION_ZSTD
        if compression == COMPRESSION_NONE:
            stored = bytes(data)
        sealed = None
        with self._lock:
            self._builder.add(chunk_id, stored, len(data), compression)
            self.stats.chunks_new += 1
            self.stats.raw_bytes_new += len(data)
            if self._builder.size >= self._target:
                sealed, self._builder = self._builder, PackBuilder()
        if sealed is not None:
            self._enqueue(sealed)
        return True

    def _enqueue(self, builder: PackBuilder) -> None:
        if not self._threads:
            with self._lock:
                if not self._threads:
                    self._threads = [threading.Thread(target=self._run, name=f"osmo-pack-writer-{i}", daemon=True)
                                     for i in range(self._writers)]
                    for thread in self._threads:
                        thread.start()
        self._slots.acquire()
        self._queue.put(builder)

    def _run(self) -> None:
        while True:
            builder = self._queue.get()
            try:
                if builder is None:
                    return
                if self._error is None and not self._abandoned:
                    self._write(builder)
            except BaseException as exc:  # handed to the uploading threads
                self._error = exc
            finally:
                if builder is not None:
                    self._slots.release()
                self._queue.task_done()

    def _write(self, builder: PackBuilder) -> None:
        entries = list(builder.entries)
        pack_id, parts = builder.seal_parts()
        size = sum(len(p) for p in parts)
        self.store.blob.put_parts(pack_key(pack_id), parts)
        del parts
        self.store.index.add_pack(pack_id, size, entries)
        with self._lock:
            self.stats.packs_written += 1
            self.stats.bytes_written += size
            ids = [e.chunk_id for e in entries]
            self._pending.difference_update(ids)
            if len(self._written) < WRITTEN_MEMORY:
                self._written.update(ids)

    def flush(self) -> None:
        """Write the partly filled pack and wait: afterwards every added chunk is durable and indexed."""
        with self._lock:
            sealed, self._builder = self._builder, PackBuilder()
        if len(sealed):
            self._enqueue(sealed)
        if self._threads:
            self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self, abandon: bool = False) -> None:
        """Stop the writer thread; with ``abandon``, packs still queued are dropped (an aborted upload)."""
        self._abandoned = abandon
        if self._threads:
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join()
            self._threads = []

    def put_tree(self, node_id: bytes, data: bytes) -> None:
        """Store a manifest node: nodes are chunks of the same packs."""
        self.add(node_id, data)
