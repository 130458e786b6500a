"""The retrying wrapper: the only place in osmo where a failed storage request is repeated.

Only ``TransientBackendError`` is retried (timeouts, dropped connections, throttling, HTTP 5xx), with
exponential backoff and full jitter, a bounded number of times. Everything else, and the last
transient error, goes to the caller as a ``BackendError`` that names the backend and key.

A retried ``create`` is ambiguous: the first attempt may have succeeded on the server even though
its answer was lost, so the repeat reports "already exists" (some client libraries resend a request
whose connection dropped on their own, so even a first attempt can). On "already exists" the wrapper
reads the object back, whole: if it holds exactly the bytes this call wrote, the create succeeded.
(Log events carry a random nonce, so two writers never write identical bytes to one key.)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from osmo_store.blob.base import BlobStore, ObjectInfo
from osmo_store.blob.wrappers import DelegatingBlobStore
from osmo_store.errors import AlreadyExistsError, NotFoundError, TransientBackendError, UnavailableError

T = TypeVar("T")
log = logging.getLogger("osmo.store.retry")


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``attempts`` tries; the n-th wait is uniform in [0, min(cap, base * 2**n)] seconds."""

    attempts: int = 8
    base_delay: float = 0.2
    max_delay: float = 15.0

    def delay(self, failures: int, rng: random.Random) -> float:
        return rng.uniform(0.0, min(self.max_delay, self.base_delay * (2 ** (failures - 1))))


class RetryingBlobStore(DelegatingBlobStore):
    def __init__(self, inner: BlobStore, policy: RetryPolicy = RetryPolicy(),
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None) -> None:
        super().__init__(inner)
        self.policy = policy
        self.sleep = sleep
        self.rng = rng or random.Random()
        self.retries = 0  # requests repeated so far (reported by benchmarks)

    def _call(self, fn: Callable[[], T]) -> T:
        failures = 0
        while True:
            try:
                return fn()
            except TransientBackendError as exc:
                failures += 1
                if failures >= self.policy.attempts:
                    raise UnavailableError(f"{exc} (gave up after {failures} attempts)") from None
                self.retries += 1
                log.debug("retrying after a transient error (%d/%d): %s", failures, self.policy.attempts, exc)
                self.sleep(self.policy.delay(failures, self.rng))

    def get(self, key: str) -> bytes:
        return self._call(lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._call(lambda: self.inner.get_range(key, offset, length))

    def put(self, key: str, data: bytes) -> None:
        self._call(lambda: self.inner.put(key, data))

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        self._call(lambda: self.inner.put_parts(key, parts))

    def create(self, key: str, data: bytes) -> None:
        def attempt() -> None:
            try:
                self.inner.create(key, data)
            except AlreadyExistsError:
                # an earlier attempt landed and its answer was lost: ours, or the backend's own
                # resend below this layer (adlfs resends a request whose connection dropped)
                if self._holds(key, data):
                    return
                raise

        self._call(attempt)

    def _holds(self, key: str, data: bytes) -> bool:
        def read_whole() -> bytes:
            got = self.inner.get(key)
            if len(got) != len(data) and len(got) != self.inner.size(key):  # a body cut short on the wire
                raise TransientBackendError(f"{self.inner.url}: {key}: read {len(got)} bytes of a longer object")
            return got

        try:
            return self._call(read_whole) == bytes(data)
        except NotFoundError:
            return False

    def list(self, prefix: str = "") -> Iterator[str]:
        # A listing is materialised so that a failure half-way can be retried from the start.
        return iter(self._call(lambda: list(self.inner.list(prefix))))

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._call(lambda: list(self.inner.list_info(prefix))))

    def delete(self, key: str) -> None:
        self._call(lambda: self.inner.delete(key))

    def size(self, key: str) -> int:
        return self._call(lambda: self.inner.size(key))
