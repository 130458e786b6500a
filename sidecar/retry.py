"""Bounded retries of one input or one output, with a growing pause in between.

Single requests are already retried by the store's retrying blob wrapper (and by botocore for
``s3://`` URLs); this layer retries a whole item (one dataset download, one upload, one URL copy)
when it still failed with a transient error, e.g. an object store that was unreachable for longer
than the request retries last. A retried item resumes: a store download skips files already present
with the right digest, a store upload deduplicates against the chunks the failed attempt already
wrote, and a URL copy skips files already there with the same size.

Items, not whole phases, are the unit: an output that was committed is never uploaded twice because a
later output failed.

Transient: the store's ``TransientBackendError``, ``ConnectionError``, ``TimeoutError``, other
``OSError`` except the permanent ones below, and errors raised by the HTTP/cloud client libraries.
Permanent: every other store error (missing dataset, bad reference, permission denied, full disk),
missing files, permission errors, and everything else.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from osmo_store.errors import OsmoError, TransientBackendError

from sidecar.console import say
from sidecar.errors import DataError, one_line

T = TypeVar("T")

PERMANENT_OS_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError,
                       FileExistsError)
CLIENT_LIBRARIES = ("botocore", "aiobotocore", "aiohttp", "urllib3", "requests", "azure", "google",
                    "gcsfs", "s3fs", "adlfs")


@dataclass(frozen=True)
class RetryPolicy:
    """``attempts`` tries per item; pauses of ``delay`` seconds, doubling up to ``max_delay``."""

    attempts: int = 3
    delay: float = 2.0
    max_delay: float = 30.0

    def pause(self, failed_attempt: int) -> float:
        return min(self.max_delay, self.delay * (2 ** (failed_attempt - 1)))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, TransientBackendError):
        return True
    if isinstance(exc, (OsmoError, DataError)):
        return False
    if isinstance(exc, PERMANENT_OS_ERRORS):
        return False
    if isinstance(exc, OSError):
        return exc.errno not in (errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOENT)
    root = type(exc).__module__.split(".", 1)[0]
    return root in CLIENT_LIBRARIES


def with_retry(what: str, step: Callable[[int], T], policy: RetryPolicy,
               sleep: Callable[[float], None] = time.sleep) -> T:
    """Run ``step(attempt)`` (attempt counts from 1) until it succeeds, fails permanently or runs
    out of attempts; every failure leaves as a ``DataError`` with a one-line message."""
    attempts = max(1, policy.attempts)
    for attempt in range(1, attempts + 1):
        try:
            return step(attempt)
        except Exception as exc:  # noqa: BLE001 - classified below, re-raised as one line
            if not is_transient(exc):
                raise DataError(one_line(exc)) from exc
            if attempt == attempts:
                suffix = f" (gave up after {attempts} attempts)" if attempts > 1 else ""
                raise DataError(one_line(exc) + suffix) from exc
            pause = policy.pause(attempt)
            say(f"{what}: {one_line(exc)}; retrying in {pause:g} s (attempt {attempt + 1} of {attempts})")
            sleep(pause)
    raise AssertionError("unreachable")
