"""Turn a store URL or path into a blob store backend."""

from __future__ import annotations

from osmo_store.blob.base import BlobStore
from osmo_store.blob.local import LocalBlobStore
from osmo_store.blob.memory import MemoryBlobStore
from osmo_store.errors import UsageError

_MEMORY: dict[str, MemoryBlobStore] = {}


def open_blob_store(url: str) -> BlobStore:
    """``/path``, ``./path`` or ``file:///path``: a local folder; ``memory://NAME``: in-process memory."""
    if url.startswith("file://"):
        return LocalBlobStore(url[len("file://"):])
    if url.startswith("memory://"):
        name = url[len("memory://"):] or "default"
        return _MEMORY.setdefault(name, MemoryBlobStore(name))
    scheme, sep, _ = url.partition("://")
    if sep:
        raise UsageError(
            f"store URL {url!r}: scheme {scheme!r} is not supported yet (use a local folder)"
        )
    return LocalBlobStore(url)
