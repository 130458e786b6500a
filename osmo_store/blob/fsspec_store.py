"""The one adapter between fsspec filesystems and the blob store interface.

fsspec's surface is wide; only this module (and the small backend modules that configure a
filesystem for it: ``s3.py``, ``azure.py``) touch it. Every foreign exception is translated here,
once, into the typed errors of ``osmo_store.errors``:

* missing object -> ``NotFoundError``; existing object on exclusive create -> ``AlreadyExistsError``;
* timeouts, dropped connections, HTTP 408/429/5xx and throttling -> ``TransientBackendError``
  (the retrying wrapper repeats those, nothing else does);
* anything else -> ``BackendError`` naming the store URL, the key and the reason.

Listing caches are disabled (another machine may have written a key a moment ago), and the
filesystem's own retry loops are turned off by the backend modules so that retries happen in one
layer only.
"""

from __future__ import annotations

import datetime
import errno
from collections.abc import Iterator
from typing import Any

from osmo_store.blob.base import BlobStore, ObjectInfo, check_key
from osmo_store.errors import (AlreadyExistsError, BackendError, NotFoundError, OsmoError,
                               TransientBackendError, UsageError)

# Exception class names (from botocore, aiohttp, urllib3, azure-core) that mean "the request may
# succeed if repeated". Matched by name along the class hierarchy so that this module needs none
# of those packages to be importable.
TRANSIENT_TYPE_NAMES = frozenset({
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ResponseStreamingError", "IncompleteReadError", "ProxyConnectionError",
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectorError", "ClientOSError",
    "ServerTimeoutError", "ClientConnectionError", "ServiceRequestError", "ServiceResponseError",
    "IncompleteRead", "ProtocolError", "FSTimeoutError", "HTTPClientError",
})
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET,
                              errno.ECONNREFUSED, errno.ECONNABORTED, errno.EPIPE, errno.EREMOTEIO})
TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def _status_code(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)  # azure-core HttpResponseError
    if isinstance(status, int):
        return status
    response = getattr(exc, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether a foreign exception is worth repeating the same request for."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (TimeoutError, ConnectionError)):
            return True
        if any(cls.__name__ in TRANSIENT_TYPE_NAMES for cls in type(exc).__mro__):
            return True
        if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
            return True
        if _status_code(exc) in TRANSIENT_STATUS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def truthy(value: Any) -> bool:
    """A store option given as text (``true``, ``1``, ``yes``, ``on``) or a bool."""
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def _modified(info: dict) -> float:
    """An fsspec listing entry's last-modified time as epoch seconds (s3fs: ``LastModified``,
    adlfs: ``last_modified``, local: ``mtime``); 0.0 when the filesystem does not say."""
    for field in ("LastModified", "last_modified", "mtime", "modified", "created"):
        value = info.get(field)
        if isinstance(value, datetime.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=datetime.timezone.utc)
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class FsspecBlobStore(BlobStore):
    """A blob store rooted at ``root`` (``bucket/prefix``) on an fsspec filesystem.

    ``exclusive`` says whether the filesystem offers an atomic exclusive create (``pipe_file`` with
    ``mode="create"``). Without it, ``create`` is refused unless ``allow_unsafe_create`` is set, in
    which case it checks and then writes (safe only while a single writer uses the store).
    """

    def __init__(self, fs: Any, root: str, url: str, *, exclusive: bool,
                 allow_unsafe_create: bool = False, concurrency: int = 8,
                 put_options: dict[str, Any] | None = None) -> None:
        self.fs = fs
        self.put_options = put_options or {}  # extra pipe_file arguments for plain puts
        self.root = root.strip("/")
        self._url = url
        self.supports_exclusive_create = exclusive
        self.allow_unsafe_create = allow_unsafe_create
        self.concurrency = concurrency

    @property
    def url(self) -> str:
        return self._url

    def _path(self, key: str) -> str:
        check_key(key)
        return f"{self.root}/{key}" if self.root else key

    def _key(self, path: str) -> str:
        path = path.strip("/")
        return path[len(self.root) + 1:] if self.root else path

    def translate(self, exc: BaseException, key: str, action: str) -> OsmoError:
        """The typed error for a foreign exception raised while doing ``action`` on ``key``."""
        if isinstance(exc, OsmoError):
            return exc
        if isinstance(exc, FileNotFoundError):
            return NotFoundError(f"{self.url}: no object {key}")
        if isinstance(exc, FileExistsError):
            return AlreadyExistsError(f"{self.url}: object {key} already exists")
        if isinstance(exc, PermissionError):
            return BackendError(f"{self.url}: cannot {action} {key}: access denied ({_reason(exc)})")
        message = f"{self.url}: cannot {action} {key}: {_reason(exc)}"
        if is_transient(exc):
            return TransientBackendError(message)
        return BackendError(message)

    # reads --------------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return self.fs.cat_file(path)
        except Exception as exc:
            raise self.translate(exc, key, "read") from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        if length <= 0:
            self.size(key)  # a missing key still raises NotFoundError
            return b""
        try:
            return self.fs.cat_file(path, start=offset, end=offset + length)
        except Exception as exc:
            error = self.translate(exc, key, "read")
            if isinstance(error, NotFoundError) or offset < self.size(key):
                raise error from None
            return b""  # a range that starts at or past the end: the bytes that exist

    def size(self, key: str) -> int:
        path = self._path(key)
        try:
            info = self.fs.info(path)
        except Exception as exc:
            raise self.translate(exc, key, "stat") from None
        if info.get("type") == "directory":
            raise NotFoundError(f"{self.url}: no object {key}")
        return int(info["size"])

    def list(self, prefix: str = "") -> Iterator[str]:
        for info in self.list_info(prefix):
            yield info.key

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        folder = prefix.rpartition("/")[0]
        base = self._path(folder) if folder else self.root
        if not base:
            raise UsageError(f"{self.url}: a store needs a bucket or container in its URL")
        try:
            found = self.fs.find(base, detail=True)
        except FileNotFoundError:
            return
        except Exception as exc:
            raise self.translate(exc, prefix or ".", "list") from None
        infos = [ObjectInfo(key, int(info.get("size") or 0), _modified(info))
                 for key, info in ((self._key(p), i) for p, i in found.items()) if key.startswith(prefix)]
        yield from sorted(infos, key=lambda i: i.key)

    # writes -------------------------------------------------------------------------------------

    def write_error(self, exc: BaseException, key: str, action: str) -> OsmoError:
        """Like ``translate``; a write that finds nothing there means the bucket/container is missing."""
        error = self.translate(exc, key, action)
        if isinstance(error, NotFoundError):
            return BackendError(f"{self.url}: cannot {action} {key}: the bucket or container does not exist")
        return error

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            try:
                self.fs.pipe_file(path, bytes(data), **self.put_options)
            except FileNotFoundError:
                if self.supports_exclusive_create:  # object stores have no folders to make
                    raise
                self.fs.makedirs(path.rpartition("/")[0], exist_ok=True)  # folder-based filesystems
                self.fs.pipe_file(path, bytes(data), **self.put_options)
        except Exception as exc:
            raise self.write_error(exc, key, "write") from None

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        self.put(key, b"".join(parts))

    def create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self.supports_exclusive_create:
            self._unsafe_create(key, path, data)
            return
        try:
            self.fs.pipe_file(path, bytes(data), mode="create")
        except Exception as exc:
            error = self.write_error(exc, key, "create")
            if not isinstance(error, (AlreadyExistsError, TransientBackendError)):
                error = self.refine_create_error(key, error)
            raise error from None

    def refine_create_error(self, key: str, error: OsmoError) -> OsmoError:
        """Backends whose servers report a lost exclusive create oddly map it here (see ``s3.py``)."""
        return error

    def _unsafe_create(self, key: str, path: str, data: bytes) -> None:
        if not self.allow_unsafe_create:
            raise UsageError(
                f"{self.url}: this storage has no atomic exclusive create, so concurrent commits could "
                "overwrite each other; if only one machine writes to this store, add the store with "
                "'--option allow_unsafe_create=true'")
        if self.exists(key):
            raise AlreadyExistsError(f"{self.url}: object {key} already exists")
        self.put(key, data)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            self.fs.rm_file(path)
        except FileNotFoundError:
            return
        except Exception as exc:
            error = self.translate(exc, key, "delete")
            if not isinstance(error, NotFoundError):
                raise error from None
