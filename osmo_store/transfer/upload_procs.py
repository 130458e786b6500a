"""An upload's per-file work spread over worker processes, one interpreter lock each.

``ProcessPipeline.entries`` sends the files to ``upload_worker`` processes in jobs (consecutive files
up to ``JOB_BYTES`` or ``JOB_FILES``; a second job is queued behind a small one, never behind a large
file) and yields every file's entry in path order, as the thread pool does.
Each worker reads, chunks, hashes, compresses and writes its own packs; this process only:

* grants **claims**: a worker asks for the chunks of a read block its index lookup did not find, and
  only the first worker to ask for a chunk id stores it. The granted ids are remembered for the
  whole upload (up to ``WRITTEN_MEMORY``; past it a chunk found by two workers at once may be stored
  twice, which costs space and is harmless: the index keeps one location, garbage collection drops
  the other copy's pack once nothing else in it is live);
* records each pack a worker reports durable in the local index (one writer of the index);
* orders entries, reports progress, and after the last file asks every worker to flush: once all
  have answered, every chunk of every entry is in a durable pack recorded in the index, so the
  caller may store the manifest and commit. A worker that fails ends the upload with its error; one
  that dies ends it naming that; the caller's exception (Ctrl-C) terminates the workers. Packs
  already written are reused by the next upload (found by listing the store), as with threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait

from osmo_store.chunkstore import ChunkStore
from osmo_store.manifest import FileEntry
from osmo_store.packwriter import WRITTEN_MEMORY, WriteStats
from osmo_store.transfer.progress import REPORT_INTERVAL, ByteTally
from osmo_store.transfer.scan import SourceFile
from osmo_store.transfer.upload_worker import WorkerSpec
from osmo_store.transfer import thresholds
from osmo_store.transfer.workerprocs import JOB_BYTES, JOB_FILES, MAX_AHEAD, WorkerProcesses, takes_another

MIN_BYTES_VARIABLE = thresholds.UPLOAD_VARIABLE


class ProcessPipeline:
    def __init__(self, chunks: ChunkStore, workers: int, tally: ByteTally) -> None:
        opener = chunks.blob.reopener()
        if opener is None:
            raise ValueError("this store cannot be opened by worker processes")
        self.chunks = chunks
        self.tally = tally
        self.stats = WriteStats()
        self._claimed: set[bytes] = set()
        self._workers = WorkerProcesses("osmo_store.transfer.upload_worker",
                                        WorkerSpec(opener, chunks.index.path, chunks.config,
                                                   os.cpu_count() or 1), workers,
                                        "an upload worker", "nothing was committed (run the upload again: "
                                        "what it stored is reused)")
        self._links = self._workers.links

    def entries(self, files: list[SourceFile], cached: Callable[[list[SourceFile]], list[FileEntry | None]],
                report: Callable[[], None]) -> Iterator[tuple[FileEntry, bool, SourceFile]]:
        """``(entry, from the stat cache, identity as read)`` per file, in order; ``cached`` gives the
        stat cache's entries of some files (``None``: read it); ``report`` is called at least every
        ``REPORT_INTERVAL`` seconds while waiting."""
        results: dict[int, tuple[FileEntry, bool, SourceFile]] = {}
        self._files = files
        queued: dict[Connection, list[int]] = {link: [] for link in self._links}  # bytes of jobs sent
        jobs = 0
        sent = done = 0
        while done < len(files):
            while done in results:
                yield results.pop(done)
                done += 1
            if done == len(files):
                break
            for link in self._links:
                if sent == len(files) or sent - done >= MAX_AHEAD or not takes_another(queued[link], JOB_BYTES):
                    continue
                job, sent = self._next_job(files, sent, cached, results)
                if job:
                    self._workers.send(link, ("files", jobs, job))
                    queued[link].append(sum(item[3] for item in job))  # the files' sizes
                    jobs += 1
            if done in results:
                continue
            for link in wait([link for link in self._links if queued[link]], timeout=REPORT_INTERVAL):
                if self._handle(link, results):
                    queued[link].pop(0)
            report()

    def _next_job(self, files: list[SourceFile], start: int,
                  cached: Callable[[list[SourceFile]], list[FileEntry | None]],
                  results: dict) -> tuple[list[tuple], int]:
        """The next job from ``start`` (files as plain tuples: quicker to send than objects); files
        the stat cache answers (looked up together) go straight to ``results``."""
        end, nbytes = start, 0
        while end < len(files) and end - start < JOB_FILES and nbytes < JOB_BYTES:
            nbytes += files[end].size
            end += 1
        job = []
        for i, entry in zip(range(start, end), cached(files[start:end])):
            src = files[i]
            if entry is not None:
                results[i] = (entry, True, src)
                self.tally.add(entry.size)
            else:
                job.append((i, src.path, src.abspath, src.size, src.mode, src.mtime_ns, src.ctime_ns, src.ino, src.dev))
        return job, end

    def _handle(self, link: Connection, results: dict) -> bool:
        """Handle one message from a worker; True when it finished its job."""
        msg = self._workers.recv(link)
        kind = msg[0]
        if kind == "claim":
            self._workers.send(link, ("granted", self._grant(msg[1])))
        elif kind == "pack":
            _, pack_id, size, entries = msg
            self.chunks.index.add_pack(pack_id, size, entries)
        elif kind == "bytes":
            self.tally.add(msg[1])
        elif kind == "done":
            _, _, entries, nbytes = msg
            self.tally.add(nbytes)
            for i, size, mode, mtime_ns, digest, chunks, ctime_ns, ino, dev in entries:
                src = self._files[i]
                results[i] = (FileEntry(src.path, size, mode, mtime_ns, digest, chunks), False,
                              SourceFile(src.path, src.abspath, size, mode, mtime_ns, ctime_ns, ino, dev))
            return True
        elif kind == "flushed":
            self.stats.merge(msg[1])
            return True
        return False

    def _grant(self, ids: list[bytes]) -> list[bool]:
        granted = []
        for cid in ids:
            new = cid not in self._claimed
            if new and len(self._claimed) < WRITTEN_MEMORY:
                self._claimed.add(cid)
            granted.append(new)
        return granted

    def flush(self) -> None:
        """Every worker writes its last pack; returns once all are durable and recorded."""
        for link in self._links:
            self._workers.send(link, ("flush",))
        waiting = set(self._links)
        while waiting:
            for link in wait(list(waiting)):
                if self._handle(link, {}):
                    waiting.discard(link)

    def close(self) -> None:
        """Stop the workers (killed if an upload is being abandoned mid-work)."""
        self._workers.close()
