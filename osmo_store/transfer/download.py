"""Download: a version's manifest -> verified files in a destination folder.

Every chunk is checked against its id and every file against its BLAKE3 digest; each file is written
to a temporary name and renamed into place (``filewrite.py``), so a file is either absent, old, or
complete. Files already present with the right digest are skipped, which makes an interrupted
download resumable. Manifest paths are validated (relative, no ``..``); nothing lands outside ``dest``.

The files are written by worker processes for a large download from a store they can open
(``download_procs.py``: every core, one interpreter lock each), else by a pool of threads; either way
outcomes are consumed in path order. A file whose stored data is damaged or missing is not written and
the others go on; the download then fails naming it. When a download completes, the temporary files
that killed downloads left under the destination are removed (``remove_stale_parts``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from osmo_store.chunkstore import ChunkStore
from osmo_store.errors import IntegrityError, NotFoundError, UsageError
from osmo_store.manifest import FileEntry, iter_entries
from osmo_store.transfer.thresholds import DOWNLOAD_VARIABLE, process_min_bytes
from osmo_store.transfer.filewrite import DAMAGED, SKIPPED, FileWriter, remove_stale_parts
from osmo_store.transfer.filters import PathFilter
from osmo_store.transfer.lookahead import in_order
from osmo_store.transfer.overlap import ProtectedFolders
from osmo_store.transfer.progress import REPORT_INTERVAL, ByteTally, Progress, result_reporting
from osmo_store.transfer.spans import SpanReader

__all__ = ["DownloadResult", "Downloader", "remove_stale_parts"]


@dataclass
class DownloadResult:
    files: int
    bytes: int
    files_skipped: int
    seconds: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Downloader:
    def __init__(self, chunks: ChunkStore, workers: int | None = None, progress: Progress | None = None,
                 protected: ProtectedFolders | None = None) -> None:
        self.chunks = chunks
        self.protected = protected
        # threads writing files, each fetching the pack spans its files need: as many as the CPUs, or as
        # the requests a remote store should have in flight
        remote = 0 if chunks.blob.local else chunks.blob.concurrency
        self.workers = workers or max(2, os.cpu_count() or 2, remote)
        self.processes = workers or os.cpu_count() or 1  # worker processes, for a large download
        self.process_min_bytes = process_min_bytes(DOWNLOAD_VARIABLE)  # downloads this large go to worker processes
        self.progress = progress or Progress()
        self.progress_interval = REPORT_INTERVAL
        self._bytes_done = ByteTally()  # bytes the workers have written, reported by the consuming thread

    def run(self, root: bytes, dest: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
            label: str = "download") -> DownloadResult:
        start = time.monotonic()
        keep = PathFilter(include, exclude)
        try:
            entries = [e for e in iter_entries(self.chunks.get_tree, root) if keep(e.path)]
        except NotFoundError as exc:  # a manifest node lost from the store: damage, not a wrong name
            raise IntegrityError(f"{label}: its list of files cannot be read ({exc})") from None
        _check_no_file_folder_clash(entries)
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{dest}: cannot create destination folder: {exc.strerror}") from None
        base = os.path.realpath(dest)
        total = sum(e.size for e in entries)
        skipped = 0
        damaged: list[tuple[str, str]] = []  # (path, why) of files whose data is damaged or missing
        self.progress.start(label, len(entries), total)
        outcomes = self._outcomes(base, entries, total)
        try:
            for entry, outcome, why in outcomes:
                if outcome == DAMAGED:
                    damaged.append((entry.path, why))
                skipped += outcome == SKIPPED
                self.progress.advance(1, self._bytes_done.take())
        finally:
            outcomes.close()  # stops the workers now, even while an exception is on its way out
            self.progress.finish()
        remove_stale_parts(base)
        if damaged:
            raise _damage_error(damaged, len(entries))
        return DownloadResult(len(entries), total, skipped, round(time.monotonic() - start, 3))

    def _outcomes(self, base: str, entries: list[FileEntry],
                  total: int) -> Iterator[tuple[FileEntry, str, str | None]]:
        """``(entry, outcome, why damaged)`` in path order: on worker processes for a large download
        from a store they can open, else on a thread pool with a bounded look-ahead."""
        if entries and total >= self.process_min_bytes and self.chunks.blob.reopener() is not None:
            from osmo_store.transfer.download_procs import ProcessDownload  # the process machinery, when used

            procs = ProcessDownload(self.chunks, min(self.processes, len(entries)), self._bytes_done, base,
                                    self.protected, self.progress_interval)
            try:
                yield from procs.outcomes(entries, self._report_bytes)
            finally:
                procs.close()
            return
        writer = FileWriter(base, self.protected)
        reader = SpanReader(self.chunks, (cid for e in entries for cid, _ in e.chunks))
        ex = ThreadPoolExecutor(self.workers, thread_name_prefix="osmo-download")
        try:
            work = in_order(ex, entries, lambda e: writer.outcome(e, reader, self._bytes_done), lambda e: e.size)
            for entry, future in work:
                outcome, why = result_reporting(future, self.progress, self._bytes_done, self.progress_interval)
                yield entry, outcome, why
        finally:
            ex.shutdown(wait=True, cancel_futures=True)

    def _report_bytes(self) -> None:
        nbytes = self._bytes_done.take()
        if nbytes:
            self.progress.advance(0, nbytes)


def _damage_error(damaged: list[tuple[str, str]], total: int) -> IntegrityError:
    names = ", ".join(path for path, _ in damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
    return IntegrityError(f"{len(damaged)} of {total} files could not be restored, their stored data is damaged "
                          f"or missing: {names} ({damaged[0][1]}); the other files are in place; see "
                          "'osmo store verify' and 'osmo store repair'")


def _check_no_file_folder_clash(entries: list[FileEntry]) -> None:
    """A manifest may not hold both a file ``a`` and a file under ``a/`` (a crafted manifest)."""
    files = {e.path for e in entries}
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in files:
                raise IntegrityError(f"manifest has both a file {folder!r} and a file {e.path!r} under it")
