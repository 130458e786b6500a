"""Blob stores: the narrow interface every storage backend implements, and the backends.

``open_blob_store(url)`` turns a URL or path into a backend. Only local folders and ``memory://``
exist so far; S3 and Azure plug in behind the same interface.
"""

from osmo_store.blob.base import BlobStore, ObjectInfo, check_key
from osmo_store.blob.local import LocalBlobStore
from osmo_store.blob.memory import MemoryBlobStore
from osmo_store.blob.urls import open_blob_store

__all__ = ["BlobStore", "ObjectInfo", "LocalBlobStore", "MemoryBlobStore", "check_key", "open_blob_store"]
