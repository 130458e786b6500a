"""One upload worker process: reads, chunks, hashes, compresses and packs the files it is sent.

Started by ``upload_procs.ProcessPipeline`` through ``workerprocs.py`` (its first message is a
``WorkerSpec``); it opens the blob store and the local index itself (LMDB serves many reader
processes; this process never writes the index) and talks to the parent over its socket:

* parent -> worker: ``("files", job, [(i, SourceFile fields...), ...])``, ``("flush",)``, ``None`` (stop);
  ``("granted", [bool, ...])`` answers a claim.
* worker -> parent: ``("claim", [chunk id, ...])`` for the chunks of a read block the index does not
  hold, then waits for the answer: only granted chunks are stored here (another worker claimed the
  others first, see docs/ARCHITECTURE.md); ``("pack", pack id, size, entries)`` once a pack is durable
  (the parent records it in the index); ``("bytes", n)`` progress inside large files;
  ``("done", job, [(i, size, mode, mtime_ns, digest, chunks, ctime_ns, ino, dev), ...], bytes)``; ``("flushed", stats)``; ``("error", exception)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from osmo_store import hashing
from osmo_store.blob import BlobStore
from osmo_store.chunking import Chunker
from osmo_store.chunkstore import ChunkStore
from osmo_store.config import StoreConfig
from osmo_store.index import LocalIndex
from osmo_store.packwriter import PackWriter
from osmo_store.transfer.fileread import FileReader, segment_chunker
from osmo_store.transfer.progress import BATCH, FileBytes
from osmo_store.transfer.scan import SourceFile
from osmo_store.transfer.workerprocs import LinkTally, WorkerLink, worker_main

SEND_BYTES = 8 * BATCH  # progress inside files is sent when this much has been read
CLAIM_BYTES = 4 * 1024 * 1024  # new chunks of small files gathered before one claim for all


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker needs to open the store: picklable, nothing secret beyond what the store needs."""

    open_blob: Callable[[], BlobStore]
    index_path: str
    config: StoreConfig
    segment_threads: int  # threads cutting one large file (fileread.SEGMENTED_FROM)


class ClaimingSink:
    """A file's chunks: hashed, looked up in the index a block at a time, claimed from the parent when
    the index lacks them, and stored in this worker's packs when the claim is granted.

    One claim per chunk or per small file would cost a round trip each (a job of 256 small files: 256
    waits for the parent), so chunks of small blocks are copied aside and claimed together once
    ``CLAIM_BYTES`` have gathered or the job ends (``settle``); a large block is claimed at once,
    without a copy. Either way every chunk is stored before the job's entries are sent."""

    def __init__(self, index: LocalIndex, writer: PackWriter, link: WorkerLink) -> None:
        self.index = index
        self.writer = writer
        self.link = link
        self._waiting: list[tuple[bytes, bytes]] = []  # (id, copied bytes) not yet claimed
        self._waiting_bytes = 0

    def store(self, views: list[memoryview], done: Callable[[int], None], ids: list[bytes] | None = None) -> list[bytes]:
        if ids is None:
            ids = [hashing.digest(v) for v in views]
        with self.index.read() as txn:
            unknown = [k for k, cid in enumerate(ids) if self.index.usable_location(cid, txn) is None]
        self.writer.count_dedup(len(ids) - len(unknown))
        block = sum(map(len, views))
        if unknown and block >= CLAIM_BYTES // 2:
            self._claim([(ids[k], views[k]) for k in unknown])
        elif unknown:
            for k in unknown:
                self._waiting.append((ids[k], bytes(views[k])))
                self._waiting_bytes += len(views[k])
            if self._waiting_bytes >= CLAIM_BYTES:
                self.settle()
        done(block)
        return ids

    def settle(self) -> None:
        """Claim and store the chunks set aside."""
        waiting, self._waiting, self._waiting_bytes = self._waiting, [], 0
        if waiting:
            self._claim(waiting)

    def _claim(self, chunks: list[tuple[bytes, bytes | memoryview]]) -> None:
        new = 0
        for (cid, data), granted in zip(chunks, self.link.ask(("claim", [cid for cid, _ in chunks]), "granted")):
            if granted:
                self.writer.add_new(cid, data)
                new += 1
        self.writer.count_dedup(len(chunks) - new)

    def end(self) -> None:
        pass


def serve(link: WorkerLink, spec: WorkerSpec) -> None:
    """The worker's life: open the store, then answer the parent until it says stop or goes away."""
    blob = spec.open_blob()
    index = LocalIndex(spec.index_path, guard=False)  # the parent checked it; this process only reads
    store = ChunkStore(blob, index, spec.config)
    writer = store.writer(record_pack=lambda pack_id, size, entries: link.send(("pack", pack_id, size, entries)))
    sink = ClaimingSink(index, writer, link)
    chunker = Chunker(spec.config.chunker)
    reader = FileReader(chunker, lambda: sink, lambda: False, segment_chunker(chunker, spec.segment_threads))
    tally = LinkTally(link, SEND_BYTES)
    finished = False
    try:
        while True:
            msg = link.recv()
            if msg is None:
                return
            if msg[0] == "files":
                _, job, files = msg
                done = []
                for i, *fields in files:
                    entry, seen = reader.entry(SourceFile(*fields), FileBytes(tally))
                    done.append((i, entry.size, entry.mode, entry.mtime_ns, entry.digest, entry.chunks,
                                 seen.ctime_ns, seen.ino, seen.dev))
                sink.settle()
                link.send(("done", job, done, tally.take()))
            elif msg[0] == "flush":
                writer.flush()
                finished = True
                link.send(("flushed", writer.stats))
    finally:
        writer.close(abandon=not finished)  # a pack being written is finished or removed, never left half


if __name__ == "__main__":
    worker_main(serve)
