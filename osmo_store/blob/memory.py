"""An in-memory blob store for unit tests: the reference behaviour of the interface."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from osmo_store.blob.base import BlobStore, check_key
from osmo_store.errors import AlreadyExistsError, NotFoundError


class MemoryBlobStore(BlobStore):
    def __init__(self, name: str = "test") -> None:
        self._name = name
        self._objects: dict[str, bytes] = {}
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

    def create(self, key: str, data: bytes) -> None:
        check_key(key)
        with self._lock:
            if key in self._objects:
                raise AlreadyExistsError(f"{self.url}: object {key} already exists")
            self._objects[key] = bytes(data)

    def list(self, prefix: str = "") -> Iterator[str]:
        with self._lock:
            keys = sorted(k for k in self._objects if k.startswith(prefix))
        yield from keys

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self._objects.pop(key, None)

    def size(self, key: str) -> int:
        return len(self.get(key))
