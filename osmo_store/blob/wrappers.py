"""Wrappers that observe or disturb a blob store without touching the backends.

* ``MeteredBlobStore`` counts requests and bytes per operation (benchmarks report requests per GB).
* ``FaultyBlobStore`` makes a share of requests fail with ``TransientBackendError``, either before
  the request reaches the store or after it succeeded (the answer is "lost"), to test retries.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator

from osmo_store.blob.base import BlobStore, ObjectInfo
from osmo_store.errors import TransientBackendError


class DelegatingBlobStore(BlobStore):
    """Base of every wrapper: same URL, flags and concurrency as the store it wraps."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.supports_exclusive_create = inner.supports_exclusive_create
        self.concurrency = inner.concurrency
        self.local = inner.local

    @property
    def url(self) -> str:
        return self.inner.url

    def remove_temporaries(self, older_than: float) -> int:
        return self.inner.remove_temporaries(older_than)

    def close(self) -> None:
        self.inner.close()


class MeteredBlobStore(DelegatingBlobStore):
    """Counts ``requests[op]`` as they are made (failed ones too; a listing counts as one request)
    and ``bytes_in`` / ``bytes_out``."""

    def __init__(self, inner: BlobStore) -> None:
        super().__init__(inner)
        self.requests: Counter[str] = Counter()
        self.bytes_in = 0  # read from the store
        self.bytes_out = 0  # written to the store
        self._lock = threading.Lock()

    def _count(self, op: str, written: int = 0) -> None:
        """Count a request as it is made (failed ones too) and the bytes it sends."""
        with self._lock:
            self.requests[op] += 1
            self.bytes_out += written

    def _received(self, data: bytes) -> bytes:
        with self._lock:
            self.bytes_in += len(data)
        return data

    def get(self, key: str) -> bytes:
        self._count("get")
        return self._received(self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._count("get_range")
        return self._received(self.inner.get_range(key, offset, length))

    def put(self, key: str, data: bytes) -> None:
        self._count("put", written=len(data))
        self.inner.put(key, data)

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        self._count("put", written=sum(len(p) for p in parts))
        self.inner.put_parts(key, parts)

    def create(self, key: str, data: bytes) -> None:
        self._count("create", written=len(data))
        self.inner.create(key, data)

    def list(self, prefix: str = "") -> Iterator[str]:
        self._count("list")
        return self.inner.list(prefix)

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self._count("list")
        return self.inner.list_info(prefix)

    def delete(self, key: str) -> None:
        self._count("delete")
        self.inner.delete(key)

    def size(self, key: str) -> int:
        self._count("size")
        return self.inner.size(key)

    def total_requests(self) -> int:
        return sum(self.requests.values())


class FaultyBlobStore(DelegatingBlobStore):
    """Fails ``rate`` of the requests transiently; half of the failed writes fail after landing."""

    def __init__(self, inner: BlobStore, rate: float, seed: int = 0) -> None:
        super().__init__(inner)
        self.rate = rate
        self.rng = random.Random(seed)
        self.injected = 0
        self._lock = threading.Lock()

    def _roll(self) -> str | None:
        with self._lock:
            if self.rng.random() >= self.rate:
                return None
            self.injected += 1
            return "after" if self.rng.random() < 0.5 else "before"

    def _fail(self, op: str, key: str) -> TransientBackendError:
        return TransientBackendError(f"{self.url}: cannot {op} {key}: injected fault")

    def _read(self, op: str, key: str, fn):
        if self._roll():
            raise self._fail(op, key)
        return fn()

    def _write(self, op: str, key: str, fn) -> None:
        when = self._roll()
        if when == "before":
            raise self._fail(op, key)
        fn()
        if when == "after":
            raise self._fail(op, key)

    def get(self, key: str) -> bytes:
        return self._read("read", key, lambda: self.inner.get(key))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self._read("read", key, lambda: self.inner.get_range(key, offset, length))

    def size(self, key: str) -> int:
        return self._read("stat", key, lambda: self.inner.size(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        return iter(self._read("list", prefix or ".", lambda: list(self.inner.list(prefix))))

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return iter(self._read("list", prefix or ".", lambda: list(self.inner.list_info(prefix))))

    def put(self, key: str, data: bytes) -> None:
        self._write("write", key, lambda: self.inner.put(key, data))

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        self._write("write", key, lambda: self.inner.put_parts(key, parts))

    def create(self, key: str, data: bytes) -> None:
        self._write("create", key, lambda: self.inner.create(key, data))

    def delete(self, key: str) -> None:
        self._write("delete", key, lambda: self.inner.delete(key))
