"""Run a function over many files on a thread pool and hand back the futures in the files' order.

Uploads and downloads both need their results in manifest (path) order while the work runs ahead on
other threads. The look-ahead is bounded by a number of files and by their total size: bounding by
count alone lets one large file at the head leave every other worker idle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

MAX_FILES = 4096
MAX_BYTES = 512 * 1024 * 1024  # of files under way (work in flight, not memory: no data is held here)


def in_order(ex: ThreadPoolExecutor, items: Iterable[T], work: Callable[[T], R], size: Callable[[T], int],
             max_files: int = MAX_FILES, max_bytes: int = MAX_BYTES) -> Iterator[tuple[T, Future]]:
    """Submit ``work(item)`` for each item and yield ``(item, future)`` in the items' order, keeping at
    most ``max_files`` items (and, beyond the first, ``max_bytes`` of ``size``) submitted but not yet
    yielded. The caller takes each future's result."""
    pending: deque[tuple[T, Future]] = deque()
    in_flight = 0
    for item in items:
        pending.append((item, ex.submit(work, item)))
        in_flight += size(item)
        while pending and (len(pending) >= max_files or in_flight > max_bytes):
            head = pending.popleft()
            in_flight -= size(head[0])
            yield head
    yield from pending
