"""The progress interface the transfer functions report to (the CLI draws bars; tests count).

Bytes move as chunks are done, not per file: worker threads count what they have read or written
into a ``ByteTally`` (through a ``FileBytes`` per file, one lock per ``BATCH`` bytes), and the one
thread that calls ``Progress`` takes the count when it consumes a file and every ``REPORT_INTERVAL``
seconds while it waits for one (``result_reporting``). Files still count when they are consumed.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, wait
from typing import TypeVar

T = TypeVar("T")

BATCH = 1024 * 1024  # bytes a worker counts before adding them to the shared tally
REPORT_INTERVAL = 0.2  # seconds between reports while the consuming thread waits for a file


class Progress:
    """Receives progress; the default ignores it. Methods are called from one thread only.

    ``advance(0, n)`` reports bytes done inside files not yet complete."""

    def start(self, label: str, files: int, total_bytes: int) -> None:
        pass

    def advance(self, files: int, nbytes: int) -> None:
        pass

    def finish(self) -> None:
        pass


class ByteTally:
    """Bytes done inside files, added by worker threads and taken by the thread that reports them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes = 0

    def add(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes

    def take(self) -> int:
        """The bytes added since the last take."""
        with self._lock:
            nbytes, self._bytes = self._bytes, 0
        return nbytes


class FileBytes:
    """One file's share of a ``ByteTally``, counted by the worker that handles the file.

    A read that starts again (``restart``) counts only the bytes past the furthest earlier attempt;
    ``settle`` makes the file's share exactly its size, so the totals add up whatever happened."""

    def __init__(self, tally: ByteTally, batch: int = BATCH) -> None:
        self._tally = tally
        self._batch = batch
        self._position = self._furthest = self._reported = 0

    def restart(self) -> None:
        self._position = 0

    def add(self, nbytes: int) -> None:
        self._position += nbytes
        if self._position > self._furthest:
            self._furthest = self._position
            if self._furthest - self._reported >= self._batch:
                self._tally.add(self._furthest - self._reported)
                self._reported = self._furthest

    def settle(self, size: int) -> None:
        self._tally.add(size - self._reported)
        self._reported = self._furthest = size


def result_reporting(future: Future[T], progress: Progress, tally: ByteTally,
                     interval: float = REPORT_INTERVAL) -> T:
    """The future's result; while it is not ready, the bytes in ``tally`` are reported every
    ``interval`` seconds (call from the thread that calls ``progress``)."""
    while not future.done():
        if wait([future], timeout=interval).not_done:
            nbytes = tally.take()
            if nbytes:
                progress.advance(0, nbytes)
    return future.result()


class Cancelled(Exception):
    """Internal: a worker stopped because the operation is being abandoned."""
