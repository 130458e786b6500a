"""Reading one source file of an upload into chunks, trusting it only if it did not change meanwhile.

``FileReader.entry`` opens the file without following a symbolic link, cuts it into chunks block by
block and hands every block's chunks to a ``ChunkSink`` (which hashes and stores them: the upload's
threads write into one shared pack writer, its worker processes claim new chunks first). The file is
trusted only when its identity (size, mtime, ctime, inode, device) is the same before and after the
read and the bytes read match its size; otherwise it is read again, and after ``READ_ATTEMPTS`` the
upload fails naming it (``SourceChangedError``). A file changed within ``RACY_NS`` of its read, where
timestamps are too coarse to tell, must read the same twice.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Protocol

from osmo_store import hashing
from osmo_store.chunking import Chunker
from osmo_store.errors import SourceChangedError, UsageError
from osmo_store.manifest import FileEntry
from osmo_store.segment_chunking import DEFAULT_SEGMENT_SIZE, SegmentChunker
from osmo_store.transfer.progress import Cancelled, FileBytes
from osmo_store.transfer.scan import SourceFile

SEGMENTED_FROM = 64 * 1024 * 1024  # files this large are cut by several threads (segment_chunking.py)
SEGMENT_SIZE = DEFAULT_SEGMENT_SIZE
READ_ATTEMPTS = 3  # reads of a file that changes while it is read before the upload fails
RACY_NS = 50_000_000  # a file changed this close to its read needs a second, equal read


class ChunkSink(Protocol):
    """Where a file's chunks go, one read block at a time."""

    def store(self, views: list[memoryview], done: Callable[[int], None], ids: list[bytes] | None = None) -> list[bytes]:
        """Store the chunks (views valid during the call only) unless stored already, calling
        ``done(bytes)`` as chunks are dealt with (progress); their ids (``ids``: computed already)."""

    def end(self) -> None:
        """The file is read (or its read failed): release what the sink holds for it."""


class FileReader:
    """Reads files into chunks. Files of ``SEGMENTED_FROM`` bytes or more are cut by a
    ``SegmentChunker`` when one is given: several threads cut and hash one file (same chunks)."""

    def __init__(self, chunker: Chunker, sink: Callable[[], ChunkSink], cancelled: Callable[[], bool],
                 segments: SegmentChunker | None = None) -> None:
        self.chunker = chunker
        self.sink = sink
        self.cancelled = cancelled
        self.segments = segments

    def entry(self, src: SourceFile, file_bytes: FileBytes) -> tuple[FileEntry, SourceFile]:
        """The file's manifest entry and its identity as read; every chunk is stored."""
        previous = None
        for _ in range(READ_ATTEMPTS):
            read = self._read(src, file_bytes)
            if read is None:
                continue  # changed while read: read it again
            entry, seen, racy = read
            if not racy or (previous is not None and (previous.digest, previous.size) == (entry.digest, entry.size)):
                file_bytes.settle(entry.size)
                return entry, seen
            previous = entry
        raise SourceChangedError(f"{src.abspath}: changed while it was read ({READ_ATTEMPTS} attempts); nothing "
                                 "was committed: upload again once it is no longer being written", path=src.abspath)

    def _read(self, src: SourceFile, file_bytes: FileBytes) -> tuple[FileEntry, SourceFile, bool] | None:
        """Read, chunk and store the file once: its entry, its identity and whether the read was racy;
        ``None`` when it changed during the read. Bytes read are counted in ``file_bytes``."""
        file_bytes.restart()
        fd = _open(src)
        started_ns = time.time_ns()
        h = hashing.hasher()
        chunks: list[tuple[bytes, int]] = []
        sink = self.sink()
        try:
            with os.fdopen(fd, "rb", buffering=0) as f:
                before = os.fstat(fd)
                if not stat.S_ISREG(before.st_mode):
                    raise SourceChangedError(f"{src.abspath}: is no longer a regular file; nothing was committed",
                                             path=src.abspath)
                for views, ids in self._batches(f, before.st_size, h):
                    if self.cancelled():
                        raise Cancelled()
                    chunks.extend(zip(sink.store(views, file_bytes.add, ids), map(len, views)))
                after = os.fstat(fd)
        except OSError as exc:
            raise UsageError(f"{src.abspath}: read failed: {exc.strerror}", path=src.abspath) from None
        finally:
            sink.end()
        size = sum(n for _, n in chunks)
        if _identity(before) != _identity(after) or size != before.st_size:
            return None
        seen = replace(src, size=size, mode=stat.S_IMODE(before.st_mode), mtime_ns=before.st_mtime_ns,
                       ctime_ns=before.st_ctime_ns, ino=before.st_ino, dev=before.st_dev)
        racy = before.st_ctime_ns >= started_ns - RACY_NS  # ctime: users cannot set it
        return FileEntry(src.path, size, seen.mode, seen.mtime_ns, h.digest(), tuple(chunks)), seen, racy


    def _batches(self, f, size: int, h) -> Iterator[tuple[list[memoryview], list[bytes] | None]]:
        """The file's chunks a batch at a time (views valid until the next batch), the file digest
        ``h`` updated as they come; the chunk ids when they were computed on the way. At most
        ``size + 1`` bytes are read: one byte past the size already says the file grew."""
        if self.segments is not None and size >= SEGMENTED_FROM:
            for batch in self.segments.batches(f.fileno(), size + 1):
                views = [c.data for c in batch]
                for view in views:
                    h.update(view)
                yield views, [c.digest for c in batch]
            return
        for block, views in self.chunker.blocks(_Capped(f, size + 1)):
            h.update(block)  # the block's chunks back to back: one call for the file's digest
            yield views, None


def segment_chunker(chunker: Chunker, threads: int) -> SegmentChunker | None:
    """A segment chunker for large files on ``threads`` threads, or ``None`` for one thread."""
    if threads < 2:
        return None
    return SegmentChunker(chunker.params, segment_size=SEGMENT_SIZE, workers=threads, digest=hashing.digest)


def _open(src: SourceFile) -> int:
    try:
        return os.open(src.abspath, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceChangedError(f"{src.abspath}: disappeared while it was being read; nothing was committed",
                                 path=src.abspath) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SourceChangedError(f"{src.abspath}: was replaced by a symbolic link while it was being read; "
                                     "nothing was committed", path=src.abspath) from None
        raise UsageError(f"{src.abspath}: cannot read: {exc.strerror}", path=src.abspath) from None


class _Capped:
    """A raw file that reads at most ``limit`` bytes: a file growing while it is read is not followed
    for ever (one byte past its size already says it changed)."""

    def __init__(self, f, limit: int) -> None:
        self._f = f
        self._left = limit

    def readinto(self, view) -> int:
        if self._left <= 0:
            return 0
        got = self._f.readinto(memoryview(view)[: self._left]) or 0
        self._left -= got
        return got


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev
