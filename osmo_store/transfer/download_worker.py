"""One download worker process: reads the pack ranges of the files it is sent, verifies and writes them.

Started by ``download_procs.ProcessDownload`` through ``workerprocs.py`` (its first message is a
``DownloadSpec``). It opens the blob store and the local index itself, plans one ``SpanReader`` per job
over that job's chunks, and writes each file with the same ``FileWriter`` as the download threads.
This process never writes the index: where reading would note damage in it or index packs other
clients wrote, ``ParentIndexWrites`` asks the parent (the index's one writer) and waits for its answer.

* parent -> worker: ``("files", job, [(i, FileEntry), ...])``, ``None`` (stop); ``("noted", None)`` and
  ``("refreshed", count)`` answer the worker's requests below.
* worker -> parent: ``("note_damaged", chunk id, pack id, reason)``, ``("note_missing", pack ids,
  found ids)``, ``("refresh_packs", warn)``; ``("bytes", n)`` progress inside files;
  ``("done", job, [(i, outcome, why damaged), ...], bytes)``; ``("error", exception)`` ends the download.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from osmo_store.blob import BlobStore
from osmo_store.chunkstore import ChunkStore
from osmo_store.config import StoreConfig
from osmo_store.index import LocalIndex
from osmo_store.transfer.filewrite import FileWriter
from osmo_store.transfer.overlap import ProtectedFolders
from osmo_store.transfer.progress import BATCH
from osmo_store.transfer.spans import SpanReader
from osmo_store.transfer.workerprocs import LinkTally, WorkerLink, worker_main


@dataclass(frozen=True)
class DownloadSpec:
    """What a worker needs: how to open the store, and where to write (``base``: a real path)."""

    open_blob: Callable[[], BlobStore]
    index_path: str
    config: StoreConfig
    base: str
    protected: ProtectedFolders | None


class ParentIndexWrites(ChunkStore):
    """A chunk store whose index writes are made by the parent process: each is a request that is
    answered once the parent has written it, so this worker's next read sees it."""

    def __init__(self, blob: BlobStore, index: LocalIndex, config: StoreConfig, link: WorkerLink) -> None:
        super().__init__(blob, index, config)
        self.link = link

    def note_damaged(self, chunk_id: bytes, pack_id: bytes, reason: str) -> None:
        self.link.ask(("note_damaged", chunk_id, pack_id, reason), "noted")

    def note_missing(self, pack_ids: Iterable[bytes], found: Iterable[bytes] = ()) -> None:
        self.link.ask(("note_missing", list(pack_ids), list(found)), "noted")

    def refresh_packs(self, warn: bool = True) -> int:
        return self.link.ask(("refresh_packs", warn), "refreshed")


def serve(link: WorkerLink, spec: DownloadSpec) -> None:
    """The worker's life: open the store, then write the jobs it is sent until told to stop."""
    index = LocalIndex(spec.index_path, guard=False)  # the parent checked it; this process only reads
    store = ParentIndexWrites(spec.open_blob(), index, spec.config, link)
    writer = FileWriter(spec.base, spec.protected)
    tally = LinkTally(link, BATCH)
    while True:
        msg = link.recv()
        if msg is None:
            return
        _, job, entries = msg
        reader = SpanReader(store, (cid for _, entry in entries for cid, _ in entry.chunks))
        done = []
        for i, entry in entries:
            outcome, why = writer.outcome(entry, reader, tally)
            done.append((i, outcome, why))
        link.send(("done", job, done, tally.take()))


if __name__ == "__main__":
    worker_main(serve)
