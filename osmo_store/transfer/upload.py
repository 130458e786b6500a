"""Upload: folders -> chunks in packs -> manifest tree -> version event, in that order.

Files are read, chunked, hashed and compressed by worker processes for a large upload to a store
they can open (``upload_procs.py``: every core, one interpreter lock each), else by a pool of threads
(pyfastcdc, blake3 and zstandard release the GIL, the per-chunk bookkeeping does not); their entries
are consumed in path order to build the manifest tree as they come. Memory stays bounded whatever the
file sizes: each worker holds one read block and one pack being filled. The version event is created
last, after every pack and manifest node is durable; any failure before it leaves no version, and the
packs already written are reused next time.

Nothing half-done: an upload that selects no file commits nothing unless the request allows an empty
version, and a file is trusted only when it did not change while it was read (``fileread.py``).

The stat cache is keyed by the file's identity (device and inode), not the spelling of its path, so
the same folder given as a relative or absolute path, through a symbolic link or a bind mount, is
not read again. An entry is used only when the file's size, mtime and ctime are also unchanged: a
different file at the same inode (the old one deleted, or rewritten in place with its mtime put
back) has a new ctime, which nobody can set. Files whose mtime or ctime is within ``RACY_SECONDS``
of the upload are not cached at all, so a later change cannot fall within the timestamps' grain.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from osmo_store import hashing
from osmo_store.catalog import Catalog
from osmo_store.chunking import Chunker
from osmo_store.chunkstore import ChunkStore, PackWriter
from osmo_store.packwriter import WriteStats
from osmo_store.datasets import DatasetLog, current_user
from osmo_store.errors import NotFoundError, UsageError
from osmo_store.index import LocalIndex
from osmo_store.manifest import LEAF, Checksum, FileEntry, TreeBuilder, iter_nodes
from osmo_store.transfer.filters import PathFilter
from osmo_store.transfer.lookahead import in_order
from osmo_store.transfer.fileread import FileReader, segment_chunker
from osmo_store.transfer.progress import REPORT_INTERVAL, ByteTally, FileBytes, Progress, result_reporting
from osmo_store.transfer.overlap import ProtectedFolders
from osmo_store.transfer.scan import ScanResult, SourceFile, scan
from osmo_store.transfer.thresholds import UPLOAD_VARIABLE, process_min_bytes

RACY_SECONDS = 2  # files modified this recently are not put in the stat cache
STAT_BATCH = 1000
SNAPSHOT_CHUNKS = 256  # chunks looked up in one index read snapshot
RESCUE_ATTEMPTS = 5  # rounds of copying chunks out of condemned packs before giving up


@dataclass
class UploadRequest:
    dataset: str
    paths: Sequence[str]
    tags: Sequence[str] = ()
    description: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    allow_empty: bool = True  # the CLI sets False unless --allow-empty; the sidecar stores empty outputs


@dataclass
class UploadResult:
    dataset: str
    version: int
    files: int
    logical_bytes: int
    stored_bytes: int
    seconds: float
    files_unchanged: int
    chunks_new: int  # file-data chunks this upload stored (manifest nodes counted apart)
    chunks_deduplicated: int  # file-data chunks it found stored already
    manifest_nodes_new: int
    checksum: str
    skipped: list[tuple[str, str]]

    @property
    def new_bytes(self) -> int:
        """What this upload added to the store (packs written, rescue copies included): the version's
        ``new_bytes`` (docs/COSTS.md). ``stored_bytes`` is the same figure under its older name."""
        return self.stored_bytes

    def to_json(self) -> dict:
        out = dict(self.__dict__)
        out["new_bytes"] = self.new_bytes
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        return out


class Uploader:
    def __init__(self, chunks: ChunkStore, index: LocalIndex, catalog: Catalog, log: DatasetLog,
                 workers: int | None = None, progress: Progress | None = None,
                 protected: ProtectedFolders | None = None) -> None:
        self.chunks = chunks
        self.index = index
        self.catalog = catalog
        self.log = log
        self.workers = workers or max(2, os.cpu_count() or 2)  # threads
        self.processes = workers or os.cpu_count() or 1  # worker processes, for a large upload
        self.progress = progress or Progress()
        self.chunker = Chunker(chunks.config.chunker)
        self.protected = protected
        self._cancel = threading.Event()
        self.progress_interval = REPORT_INTERVAL
        self._bytes_done = ByteTally()  # bytes the workers have read, reported by the consuming thread
        self.process_min_bytes = process_min_bytes(UPLOAD_VARIABLE)  # uploads this large go to worker processes
        self._worker_stats = WriteStats()  # what worker processes stored

    def run(self, req: UploadRequest) -> UploadResult:
        start = time.monotonic()
        if not req.paths:
            raise UsageError("give at least one folder or file to upload")
        self.log.check_new_version(req.dataset, list(req.tags))
        path_filter = PathFilter(req.include, req.exclude)
        for path in req.paths:
            if self.protected is not None:
                self.protected.check(path, "upload source")
        gc_seen = self.catalog.gc_seq()  # garbage collection folded before any deduplication
        self.chunks.refresh_packs()  # deduplicate against packs other clients wrote
        scanned = scan(req.paths, path_filter, self.protected)
        if not scanned.files and not req.allow_empty:
            raise UsageError(_nothing_selected(req, scanned))
        writer = self.chunks.writer()
        self._worker_stats = WriteStats()
        nodes = NodeCounter(writer)
        tree = TreeBuilder(nodes.put, self.chunks.config.manifest_node_entries)
        checksum = Checksum()
        unchanged = 0
        self.progress.start("upload", len(scanned.files), scanned.total_bytes)
        completed = False
        try:
            for entry, reused in self._entries(scanned.files, writer, scanned.total_bytes):
                tree.add(entry)
                checksum.add(entry.path, entry.size, entry.executable, entry.digest)
                unchanged += reused
                self.progress.advance(1, self._bytes_done.take())
            root = tree.finish()
            writer.flush()  # manifest nodes go into the packs too: flush after the root
            completed = True
        finally:
            writer.close(abandon=not completed)
            self.progress.finish()
        stats = WriteStats()
        stats.merge(writer.stats)
        stats.merge(self._worker_stats)
        fields = {
            "root": root.hex(), "user": current_user(), "description": req.description,
            "metadata": dict(req.metadata), "labels": dict(req.labels),
            "logical_bytes": tree.bytes, "files": tree.files,
            "stored_bytes": stats.bytes_written, "checksum": checksum.hexdigest(),
        }
        record = self._commit(req, root, fields, gc_seen)
        return UploadResult(
            dataset=req.dataset, version=record["version"], files=tree.files,
            logical_bytes=tree.bytes, stored_bytes=fields["stored_bytes"],
            seconds=round(time.monotonic() - start, 3), files_unchanged=unchanged,
            chunks_new=stats.chunks_new - nodes.new, chunks_deduplicated=stats.chunks_dedup - nodes.old,
            manifest_nodes_new=nodes.new, checksum=record["checksum"], skipped=scanned.skipped)

    def _commit(self, req: UploadRequest, root: bytes, fields: dict, gc_seen: int) -> dict:
        """Commit the version event. If a garbage collection was folded since the upload began,
        every chunk and node of the new version is checked first; those left only in condemned
        packs are copied to new packs, then the commit is tried again (docs/GC.md)."""
        checked = gc_seen

        def guard() -> None:
            nonlocal checked
            now = self.catalog.gc_seq()
            if now == checked:
                return
            try:
                needed = self.chunks.unusable(version_chunk_ids(self.chunks.get_tree, root))
            except NotFoundError:  # a manifest node of this upload was swept away
                raise NotFoundError(f"{req.dataset}: data this upload references was garbage-collected while "
                                    "this upload ran (is 'osmo store gc --min-age' too short?); run the upload "
                                    "again") from None
            if needed:
                raise RescueNeeded(needed)
            checked = now

        for _ in range(RESCUE_ATTEMPTS):
            try:
                return self.log.commit_version(req.dataset, fields, list(req.tags), guard)
            except RescueNeeded as rescue:
                fields["stored_bytes"] += self.chunks.rescue(rescue.chunks)
        raise NotFoundError(f"{req.dataset}: garbage collection kept condemning this upload's data; "
                            "run it again with a longer 'osmo store gc --min-age'")

    def _entries(self, files: list[SourceFile], writer: PackWriter, bytes_to_read: int):
        """``(entry, from the stat cache)`` in path order: on worker processes for large uploads to a
        store they can open (``upload_procs.py``), else on a thread pool with a bounded look-ahead."""
        stat_batch: list[tuple[bytes, list]] = []
        if bytes_to_read >= self.process_min_bytes and self.chunks.blob.reopener() is not None:
            from osmo_store.transfer.upload_procs import ProcessPipeline  # the process machinery, when used

            pipeline = ProcessPipeline(self.chunks, self.processes, self._bytes_done)
            try:
                for item in pipeline.entries(files, self._cached_entries, self._report_bytes):
                    yield self._collect(item, stat_batch)
                pipeline.flush()
                self.catalog.stat_store(stat_batch)
            finally:
                pipeline.close()
                self._worker_stats = pipeline.stats
            return
        ex = ThreadPoolExecutor(self.workers, thread_name_prefix="osmo-upload")
        reader = FileReader(self.chunker, lambda: _SharedWriterSink(self.index, writer), self._cancel.is_set,
                            segment_chunker(self.chunker, os.cpu_count() or 1))
        try:
            for item in in_order(ex, files, lambda src: self._process(src, reader), lambda src: src.size):
                _, future = item
                yield self._collect(result_reporting(future, self.progress, self._bytes_done,
                                                     self.progress_interval), stat_batch)
            self.catalog.stat_store(stat_batch)
        finally:
            self._cancel.set()
            ex.shutdown(wait=True, cancel_futures=True)

    def _report_bytes(self) -> None:
        nbytes = self._bytes_done.take()
        if nbytes:
            self.progress.advance(0, nbytes)

    def _collect(self, item: tuple[FileEntry, bool, SourceFile], stat_batch: list) -> tuple[FileEntry, bool]:
        entry, reused, src = item
        if not reused and time.time() - max(src.mtime_ns, src.ctime_ns) / 1e9 > RACY_SECONDS:
            stat_batch.append((_stat_key(src), _stat_value(src, entry)))
            if len(stat_batch) >= STAT_BATCH:
                self.catalog.stat_store(stat_batch)
                stat_batch.clear()
        return entry, reused

    def _process(self, src: SourceFile, reader: FileReader) -> tuple[FileEntry, bool, SourceFile]:
        """The file's entry, whether the stat cache supplied it, and the file's identity as read."""
        cached = self._cached_entry(src)
        if cached is not None:
            self._bytes_done.add(cached.size)
            return cached, True, src
        entry, seen = reader.entry(src, FileBytes(self._bytes_done))
        return entry, False, seen

    def _cached_entries(self, files: list[SourceFile]) -> list[FileEntry | None]:
        """``_cached_entry`` of many files, in one index read transaction."""
        with self.index.read() as txn:
            return [self._cached_entry(src, txn) for src in files]

    def _cached_entry(self, src: SourceFile, txn: object = None) -> FileEntry | None:
        """The file's entry from the stat cache, if the file is unchanged and its chunks all usable."""
        value = self.catalog.stat_lookup(_stat_key(src), txn)
        if value is None:
            return None
        size, mtime_ns, ctime_ns, ino, dev, digest, chunks = value
        if (size, mtime_ns, ctime_ns, ino, dev) != (src.size, src.mtime_ns, src.ctime_ns, src.ino, src.dev):
            return None
        if not all(self.index.usable_location(cid, txn) is not None for cid, _ in chunks):
            return None
        return FileEntry(src.path, size, src.mode, src.mtime_ns, digest, tuple((c, n) for c, n in chunks))


def _nothing_selected(req: UploadRequest, scanned: ScanResult) -> str:
    """Why an upload selected no file, for its one-line error."""
    sources = ", ".join(req.paths)
    reasons = []
    if scanned.excluded:
        reasons.append(f"{scanned.excluded} {'file' if scanned.excluded == 1 else 'files'} excluded by "
                       "--include/--exclude")
    if scanned.skipped:
        reasons.append(f"{len(scanned.skipped)} skipped (symbolic links or special files)")
    why = ", ".join(reasons) if reasons else "no files found"
    return (f"nothing to upload from {sources}: {why}; nothing was committed "
            "(--allow-empty commits an empty version)")


class _SharedWriterSink:
    """The threads' sink: each chunk hashed and added to the upload's shared pack writer, looked up in
    an index read snapshot renewed every ``SNAPSHOT_CHUNKS`` chunks (a long-lived snapshot keeps LMDB
    from reusing pages: the index file, and with it the mapped memory, would grow with the upload)."""

    def __init__(self, index: LocalIndex, writer: PackWriter) -> None:
        self.index = index
        self.writer = writer
        self.txn = index.snapshot()
        self.count = 0

    def store(self, views: list[memoryview], done: Callable[[int], None], ids: list[bytes] | None = None) -> list[bytes]:
        ids = [hashing.digest(v) for v in views] if ids is None else ids
        for view, cid in zip(views, ids):
            self.writer.add(cid, view, self.txn)
            done(len(view))
            self.count += 1
            if self.count % SNAPSHOT_CHUNKS == 0:
                self.txn.abort()
                self.txn = self.index.snapshot()
        return ids

    def end(self) -> None:
        self.txn.abort()


class NodeCounter:
    """Stores manifest nodes through the pack writer, counting the new ones and those already stored
    (the writer's counts mix them with file chunks)."""

    def __init__(self, writer: PackWriter) -> None:
        self.writer = writer
        self.new = self.old = 0

    def put(self, node_id: bytes, data: bytes) -> None:
        if self.writer.add(node_id, data):
            self.new += 1
        else:
            self.old += 1


class RescueNeeded(Exception):
    """Internal: the version about to be committed references chunks only condemned packs hold."""

    def __init__(self, chunks: list[bytes]) -> None:
        super().__init__(f"{len(chunks)} chunks to rescue")
        self.chunks = chunks


def version_chunk_ids(load, root: bytes):
    """Every manifest node and chunk id a version references (repeats possible)."""
    for node_id, level, items in iter_nodes(load, root):
        yield node_id
        if level == LEAF:
            for entry in items:
                for cid, _ in entry.chunks:
                    yield cid


STAT_KEY = struct.Struct(">4sQQ")  # b"file", device, inode (keys by path, of older versions, start with "/")


def _stat_key(src: SourceFile) -> bytes:
    """The stat cache's key: the file's identity, whatever path it was reached by."""
    return STAT_KEY.pack(b"file", src.dev, src.ino)


def _stat_value(src: SourceFile, entry: FileEntry) -> list:
    return [src.size, src.mtime_ns, src.ctime_ns, src.ino, src.dev, entry.digest,
            [[c, n] for c, n in entry.chunks]]
