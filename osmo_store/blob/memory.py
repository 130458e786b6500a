"""An in-memory blob store for unit tests: the reference behaviour of the interface."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from osmo_store.blob.base import BlobStore, ObjectInfo, check_key
from osmo_store.errors import AlreadyExistsError, NotFoundError


class MemoryBlobStore(BlobStore):
    def __init__(self, name: str = "test") -> None:
        self._name = name
        self._objects: dict[str, bytes] = {}
        self._modified: dict[str, float] = {}
        self.clock = time.time  # tests may fake the medium's clock
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"memory://{self._name}"

    def get(self, key: str) -> bytes:
        check_key(key)
        try:
            return self._objects[key]
        except KeyError:
            raise NotFoundError(f"{self.url}: no object {key}") from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.get(key)[offset : offset + length]

    def put(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._lock:
            self._objects[key] = bytes(data)
            self._modified[key] = self.clock()

    def create(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._lock:
            if key in self._objects:
                raise AlreadyExistsError(f"{self.url}: object {key} already exists")
            self._objects[key] = bytes(data)
            self._modified[key] = self.clock()

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
        yield from keys

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            infos = [ObjectInfo(k, len(v), self._modified[k]) for k, v in self._objects.items() if k.startswith(prefix)]
        yield from sorted(infos, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)
            self._modified.pop(key, None)

    def size(self, key: str) -> int:
        return len(self.get(key))
