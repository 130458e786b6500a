"""A download's per-file work spread over worker processes, one interpreter lock each.

``ProcessDownload.outcomes`` sends the entries to ``download_worker`` processes in jobs (consecutive
entries up to ``JOB_BYTES`` or ``JOB_FILES``; a file of ``JOB_BYTES`` or more goes alone; a second job
is queued behind a small one, never behind a large file) and yields every file's outcome in path
order, as the thread pool does. Each worker reads the pack ranges of its job, verifies and writes the
files (``filewrite.py``); this process only:

* makes the index writes reading calls for (the one writer of the index): a copy of a chunk found
  damaged, packs found missing, packs other clients wrote indexed when a chunk is not found. A worker
  waits for each answer, so its next read sees the change;
* orders outcomes and reports progress, bytes inside large files included.

A worker that fails (a symbolic link on the way, a full disk) ends the download with its error; one
that dies ends it naming that; the caller's exception (Ctrl-C) stops the workers, whose part files
are removed (or, if they were killed, by the next download into that folder).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection, wait

from osmo_store.chunkstore import ChunkStore
from osmo_store.manifest import FileEntry
from osmo_store.transfer import thresholds
from osmo_store.transfer.download_worker import DownloadSpec
from osmo_store.transfer.overlap import ProtectedFolders
from osmo_store.transfer.progress import REPORT_INTERVAL, ByteTally
from osmo_store.transfer.workerprocs import JOB_BYTES, JOB_FILES, MAX_AHEAD, WorkerProcesses, takes_another

MIN_BYTES_VARIABLE = thresholds.DOWNLOAD_VARIABLE


class ProcessDownload:
    def __init__(self, chunks: ChunkStore, workers: int, tally: ByteTally, base: str,
                 protected: ProtectedFolders | None, interval: float = REPORT_INTERVAL) -> None:
        opener = chunks.blob.reopener()
        if opener is None:
            raise ValueError("this store cannot be opened by worker processes")
        self.chunks = chunks
        self.tally = tally
        self.interval = interval
        self._workers = WorkerProcesses("osmo_store.transfer.download_worker",
                                        DownloadSpec(opener, chunks.index.path, chunks.config, base, protected),
                                        workers, "a download worker", "the files written so far are in place "
                                        "(run the download again to finish: they are skipped)")
        self._links = self._workers.links

    def pids(self) -> list[int]:
        return self._workers.pids()

    def outcomes(self, entries: list[FileEntry],
                 report: Callable[[], None]) -> Iterator[tuple[FileEntry, str, str | None]]:
        """``(entry, outcome, why damaged)`` per file, in order (outcomes: ``filewrite.py``);
        ``report`` is called at least every ``interval`` seconds while waiting."""
        results: dict[int, tuple[str, str | None]] = {}
        queued: dict[Connection, list[int]] = {link: [] for link in self._links}  # bytes of jobs sent
        jobs = sent = done = 0
        while done < len(entries):
            while done in results:
                outcome, why = results.pop(done)
                yield entries[done], outcome, why
                done += 1
            if done == len(entries):
                break
            for link in self._links:
                if sent < len(entries) and sent - done < MAX_AHEAD and takes_another(queued[link], JOB_BYTES):
                    job, sent = _next_job(entries, sent)
                    self._workers.send(link, ("files", jobs, job))
                    queued[link].append(sum(entry.size for _, entry in job))
                    jobs += 1
            for link in wait([link for link in self._links if queued[link]], timeout=self.interval):
                if self._handle(link, results):
                    queued[link].pop(0)
            report()

    def _handle(self, link: Connection, results: dict) -> bool:
        """Handle one message from a worker; True when it finished a job."""
        msg = self._workers.recv(link)
        kind = msg[0]
        if kind == "bytes":
            self.tally.add(msg[1])
        elif kind == "note_damaged":
            self.chunks.note_damaged(*msg[1:])
            self._workers.send(link, ("noted", None))
        elif kind == "note_missing":
            self.chunks.note_missing(msg[1], msg[2])
            self._workers.send(link, ("noted", None))
        elif kind == "refresh_packs":
            self._workers.send(link, ("refreshed", self.chunks.refresh_packs(warn=msg[1])))
        elif kind == "done":
            _, _, outcomes, nbytes = msg
            self.tally.add(nbytes)
            for i, outcome, why in outcomes:
                results[i] = (outcome, why)
            return True
        return False

    def close(self) -> None:
        """Stop the workers (stopped mid-work if the download is being abandoned)."""
        self._workers.close()


def _next_job(entries: list[FileEntry], start: int) -> tuple[list[tuple[int, FileEntry]], int]:
    """The job from ``start``: consecutive entries up to ``JOB_FILES`` or ``JOB_BYTES``; a file of
    ``JOB_BYTES`` or more goes alone. Returns the job and where the next one starts."""
    job: list[tuple[int, FileEntry]] = []
    nbytes = 0
    i = start
    while i < len(entries) and len(job) < JOB_FILES and nbytes < JOB_BYTES:
        if job and entries[i].size >= JOB_BYTES:
            break
        job.append((i, entries[i]))
        nbytes += entries[i].size
        i += 1
    return job, i
