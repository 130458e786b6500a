"""Writing chunks into packs: one upload session's ``PackWriter``.

``PackWriter`` takes chunks from many threads, drops those already stored (in the index or earlier in
this session), compresses the rest where that saves space, and seals a pack when it reaches the
target size (on a local disk it is written to a temporary file as it fills, never held in memory).
A sealed pack is written (spooled: fsynced and renamed) by background threads and recorded
(``record_pack``: in the index, or, for an upload's worker process, sent to the process that keeps
the index) only after the blob store has it durably, so the index never points at a pack that is not there, and an interrupted
upload's packs are reused by the next one.

Whether a chunk is worth compressing is decided from a sample first (``worth_compressing``): data
that does not compress (media, archives, random bytes) costs one small compression attempt per chunk
instead of a whole one.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import zstandard

from osmo_store.blob import BlobStore
from osmo_store.config import StoreConfig
from osmo_store.index import LocalIndex
from osmo_store.packs import COMPRESSION_NONE, COMPRESSION_ZSTD, PACK_PREFIX, PackBuilder, PackEntry, pack_key

MAX_PACK_WRITERS = 4  # packs uploaded at once to an object store (each holds one pack in memory)
LOCAL_PACK_WRITERS = 2  # packs written at once to a local disk
WRITTEN_MEMORY = 1_000_000  # chunk ids an upload remembers having written (~100 MB at most)
SAMPLE_BYTES = 4096  # compressed first to decide whether compressing a chunk pays
SAMPLE_RATIO = 0.97  # a sample that does not shrink below this share: the chunk is stored as it is

RecordPack = Callable[[bytes, int, list[PackEntry]], None]

_local = threading.local()


class Store(Protocol):
    """What a pack writer needs of the chunk store (``chunkstore.ChunkStore`` has it)."""

    blob: BlobStore
    index: LocalIndex
    config: StoreConfig


@dataclass
class WriteStats:
    chunks_new: int = 0
    chunks_dedup: int = 0
    raw_bytes_new: int = 0
    packs_written: int = 0
    bytes_written: int = 0  # packs (chunks and manifest nodes), as stored

    def merge(self, other: "WriteStats") -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _compressor(level: int) -> zstandard.ZstdCompressor:
    """This thread's compressor (a compression context is not thread-safe; making one costs)."""
    c = getattr(_local, "zc", None)
    if c is None or getattr(_local, "zc_level", None) != level:
        c = _local.zc = zstandard.ZstdCompressor(level=level)
        _local.zc_level = level
    return c


def worth_compressing(data: bytes | memoryview, level: int) -> bool:
    """Whether compressing ``data`` may pay, judged from its middle ``SAMPLE_BYTES``: for a chunk
    that does not compress, a sample costs a third of a whole attempt."""
    if len(data) <= 4 * SAMPLE_BYTES:
        return True
    middle = len(data) // 2
    sample = data[middle: middle + SAMPLE_BYTES]
    return len(_compressor(level).compress(sample)) < SAMPLE_RATIO * SAMPLE_BYTES


def encode_chunk(data: bytes | memoryview, compress: bool, level: int, keep: bool = True) -> tuple[bytes | memoryview, int]:
    """``(stored bytes, compression)``: zstd where that makes the chunk smaller, else the bytes (a copy
    with ``keep``; else ``data`` itself, for a caller that writes it out at once)."""
    if compress and worth_compressing(data, level):
        packed = _compressor(level).compress(data)
        if len(packed) < len(data):
            return packed, COMPRESSION_ZSTD
    return (bytes(data) if keep else data), COMPRESSION_NONE


class _OpenPack:
    """The pack being filled: its builder and, where the store spools (a local disk), the temporary
    file its pieces go straight to (nothing of the pack held in memory)."""

    def __init__(self, blob: BlobStore) -> None:
        self.spool = blob.spool(PACK_PREFIX) if blob.spools else None
        self.builder = PackBuilder(self.spool.write if self.spool is not None else None)

    def abort(self) -> None:
        if self.spool is not None:
            self.spool.abort()


class PackWriter:
    """A thread-safe upload session: ``add`` chunks from many threads, then ``flush`` and ``close``.

    Sealed packs go through a queue to background threads that write them and record them, so
    chunking goes on while packs are being written. Where the store spools (a local disk), each
    chunk is written to the pack's temporary file as it is added and the background threads only
    fsync and rename: no pack is held in memory. A local disk gets two writer threads (one writes
    a pack while the other waits for its fsync) and at most two sealed packs in flight; an object
    store gets up to ``MAX_PACK_WRITERS`` (its ``concurrency``) and twice as many packs in flight.
    Memory is bounded by the pack being filled plus the packs in flight (none on a local disk). A write error is raised by
    the next ``add`` or by ``flush``. ``record_pack`` (default: the index's ``add_pack``) is called
    from a writer thread once a pack is durable.
    """

    def __init__(self, store: Store, writers: int | None = None, record_pack: RecordPack | None = None) -> None:
        self.store = store
        self.stats = WriteStats()
        self._record_pack = record_pack or store.index.add_pack
        self._lock = threading.Lock()
        self._pending: set[bytes] = set()  # chunks accepted in this session but not yet indexed
        self._written: set[bytes] = set()  # chunks this session already wrote (bounded, see add)
        self._open: _OpenPack | None = None  # the pack being filled, made by the first chunk added
        self._keep = not store.blob.spools  # chunk bytes are kept until the pack is written
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
        self.add_new(chunk_id, data)
        return True

    def add_new(self, chunk_id: bytes, data: bytes | memoryview) -> None:
        """Store a chunk the caller knows is not stored yet (an upload worker's claimed chunks)."""
        if self._error is not None:
            raise self._error
        stored, compression = encode_chunk(data, self._compress, self._level, self._keep)
        sealed = None
        with self._lock:
            if self._open is None:
                self._open = _OpenPack(self.store.blob)
            try:
                self._open.builder.add(chunk_id, stored, len(data), compression)  # spooled: written now
            except BaseException:
                self._open.abort()
                self._open = None
                raise
            self.stats.chunks_new += 1
            self.stats.raw_bytes_new += len(data)
            if self._open.builder.size >= self._target:
                sealed, self._open = self._open, None
        if sealed is not None:
            self._enqueue(sealed)

    def count_dedup(self, n: int) -> None:
        """Count chunks the caller found stored already (without going through ``add``)."""
        with self._lock:
            self.stats.chunks_dedup += n

    def _enqueue(self, pack: _OpenPack) -> None:
        if not self._threads:
            with self._lock:
                if not self._threads:
                    self._threads = [threading.Thread(target=self._run, name=f"osmo-pack-writer-{i}", daemon=True)
                                     for i in range(self._writers)]
                    for thread in self._threads:
                        thread.start()
        self._slots.acquire()
        self._queue.put(pack)

    def _run(self) -> None:
        while True:
            pack = self._queue.get()
            try:
                if pack is None:
                    return
                if self._error is None and not self._abandoned:
                    self._write(pack)
                else:
                    pack.abort()
            except BaseException as exc:  # handed to the uploading threads
                self._error = exc
                pack.abort()
            finally:
                if pack is not None:
                    self._slots.release()
                self._queue.task_done()

    def _write(self, pack: _OpenPack) -> None:
        """Seal the pack, make it durable under its key, then record it."""
        entries = list(pack.builder.entries)
        pack_id, parts = pack.builder.seal_parts()
        if pack.spool is not None:
            size = pack.spool.size
            pack.spool.commit(pack_key(pack_id))
        else:
            size = sum(len(p) for p in parts)
            self.store.blob.put_parts(pack_key(pack_id), parts)
            del parts
        self._record_pack(pack_id, size, entries)
        with self._lock:
            self.stats.packs_written += 1
            self.stats.bytes_written += size
            ids = [e.chunk_id for e in entries]
            self._pending.difference_update(ids)
            if len(self._written) < WRITTEN_MEMORY:
                self._written.update(ids)

    def flush(self) -> None:
        """Write the partly filled pack and wait: afterwards every added chunk is durable and recorded."""
        with self._lock:
            sealed, self._open = self._open, None
        if sealed is not None:
            self._enqueue(sealed)
        if self._threads:
            self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self, abandon: bool = False) -> None:
        """Stop the writer threads; with ``abandon``, packs still queued are dropped (an aborted upload)."""
        self._abandoned = abandon
        if self._threads:
            for _ in self._threads:
                self._queue.put(None)
            for thread in self._threads:
                thread.join()
            self._threads = []
        with self._lock:
            unsealed, self._open = self._open, None
        if unsealed is not None:
            unsealed.abort()  # its temporary file goes too

    def put_tree(self, node_id: bytes, data: bytes) -> None:
        """Store a manifest node: nodes are chunks of the same packs."""
        self.add(node_id, data)
