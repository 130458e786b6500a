"""Turn a store URL (and its options) into a blob store backend.

* ``/path``, ``./path``, ``file:///path``: a local folder;
* ``memory://NAME``: in-process memory (tests);
* ``s3://bucket/prefix``: S3 or an S3-compatible server (``s3.py``);
* ``az://container/prefix``, ``abfs://...``: Azure Blob Storage (``azure.py``);
* any other fsspec URL (``gs://``, ``sftp://`` ...): through the generic fsspec adapter, read-write
  only if the user opts in to non-atomic creates (``allow_unsafe_create=true``).

Remote backends are wrapped in the retrying wrapper; local folders and memory never fail
transiently and are not.
"""

from __future__ import annotations

from typing import Any

from osmo_store.blob.base import BlobStore
from osmo_store.blob.local import LocalBlobStore
from osmo_store.blob.memory import MemoryBlobStore
from osmo_store.blob.retry import RetryingBlobStore
from osmo_store.errors import BackendError, UsageError

_MEMORY: dict[str, MemoryBlobStore] = {}
REMOTE_SCHEMES = ("s3", "az", "abfs", "abfss")


def open_blob_store(url: str, options: dict[str, Any] | None = None) -> BlobStore:
    options = dict(options or {})
    if url.startswith("file://"):
        return LocalBlobStore(url[len("file://"):])
    if url.startswith("memory://"):
        name = url[len("memory://"):] or "default"
        return _MEMORY.setdefault(name, MemoryBlobStore(name))
    scheme, sep, _ = url.partition("://")
    if not sep:
        return LocalBlobStore(url)
    scheme = scheme.lower()
    if scheme == "s3":
        from osmo_store.blob.s3 import open_s3

        return RetryingBlobStore(open_s3(url, options))
    if scheme in ("az", "abfs", "abfss"):
        from osmo_store.blob.azure import open_azure

        return RetryingBlobStore(open_azure(url, options))
    return RetryingBlobStore(_open_generic(url, scheme, options))


def _open_generic(url: str, scheme: str, options: dict[str, Any]) -> BlobStore:
    import fsspec

    from osmo_store.blob.fsspec_store import FsspecBlobStore, truthy

    allow = truthy(options.pop("allow_unsafe_create", False))
    concurrency = int(options.pop("concurrency", 4))
    try:
        fs, root = fsspec.core.url_to_fs(url, **options)
    except (ValueError, ImportError) as exc:
        raise UsageError(f"store URL {without_password(url)!r}: scheme {scheme!r} is not usable "
                         f"({' '.join(str(exc).split())})") from None
    except OSError as exc:  # the filesystem connects when it is made (ftp, sftp ...)
        raise BackendError(f"store {without_password(url)}: cannot connect: "
                           f"{exc.strerror or ' '.join(str(exc).split())}") from None
    return FsspecBlobStore(fs, root, without_password(url.rstrip("/")), exclusive=False,
                           allow_unsafe_create=allow, concurrency=concurrency)


def without_password(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``: the store's URL
    appears in messages and must not carry a secret."""
    scheme, sep, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    userinfo, at, hostport = host.rpartition("@")
    if not (sep and at and ":" in userinfo):
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{hostport}{slash}{path}"
