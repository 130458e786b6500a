"""A blob store in a local folder.

``put`` writes a temporary file in the target's folder, fsyncs it, renames it over the target and
fsyncs the folder. ``create`` writes and fsyncs a temporary file, then ``link``s it to the target:
``link`` fails atomically if the target exists, so exclusive creates are race-free between processes.
Temporary files are named ``.tmp-*`` and never listed.
"""

from __future__ import annotations

import errno
import functools
import os
import uuid
from collections.abc import Callable, Iterator

from osmo_store.blob.base import BlobStore, ObjectInfo, check_key
from osmo_store.errors import AlreadyExistsError, BackendError, NotFoundError

TMP_PREFIX = ".tmp-"
SPOOL_BUFFER = 1024 * 1024  # a spool gathers pieces under a quarter of this into writes of this size


class LocalBlobStore(BlobStore):
    local = True
    spools = True
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    @property
    def url(self) -> str:
        return self.root

    def reopener(self) -> Callable[[], BlobStore]:
        return functools.partial(LocalBlobStore, self.root)

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *check_key(key).split("/"))

    def _fail(self, exc: OSError, key: str, action: str) -> BackendError:
        if exc.errno == errno.ENOSPC:
            reason = "disk full"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            reason = "permission denied"
        else:
            reason = exc.strerror or str(exc)
        return BackendError(f"{self.url}: cannot {action} {key}: {reason}")

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}: no object {key}") from None
        except OSError as exc:
            raise self._fail(exc, key, "read") from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                f.seek(offset)
                return f.read(length)
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}: no object {key}") from None
        except OSError as exc:
            raise self._fail(exc, key, "read") from None

    def _write_temp(self, path: str, data: bytes | list[bytes]) -> str:
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        tmp = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            for part in data if isinstance(data, list) else [data]:
                view = memoryview(part)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            _unlink_quietly(tmp)
            raise
        os.close(fd)
        return tmp

    def put(self, key: str, data: bytes) -> None:
        self.put_parts(key, [data])

    def put_parts(self, key: str, parts: list[bytes]) -> None:
        path = self._path(key)
        try:
            tmp = self._write_temp(path, parts)
            try:
                os.replace(tmp, path)
            except BaseException:
                _unlink_quietly(tmp)
                raise
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            raise self._fail(exc, key, "write") from None

    def spool(self, folder: str) -> LocalSpool:
        """A temporary file in ``folder`` (``.tmp-*``: never listed; removed by ``remove_temporaries``
        if its writer is killed), renamed to its key by ``commit``."""
        return LocalSpool(self, os.path.join(self.root, *check_key(folder.rstrip("/")).split("/")))

    def create(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            tmp = self._write_temp(path, data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AlreadyExistsError(f"{self.url}: object {key} already exists") from None
            finally:
                _unlink_quietly(tmp)
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            raise self._fail(exc, key, "create") from None

    def list(self, prefix: str = "") -> Iterator[str]:
        folder, _, stem = prefix.rpartition("/")
        base = os.path.join(self.root, *folder.split("/")) if folder else self.root
        for key, _ in self._walk(base, folder, stem):
            yield key

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        folder, _, stem = prefix.rpartition("/")
        base = os.path.join(self.root, *folder.split("/")) if folder else self.root
        for key, entry in self._walk(base, folder, stem):
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue  # deleted since the folder was read
            yield ObjectInfo(key, st.st_size, st.st_mtime)

    def remove_temporaries(self, older_than: float) -> int:
        """Delete ``.tmp-*`` files left by writers killed mid-write, last modified before ``older_than``."""
        removed = 0
        for folder, _, files in os.walk(self.root):
            for name in files:
                if not name.startswith(TMP_PREFIX):
                    continue
                path = os.path.join(folder, name)
                try:
                    if os.lstat(path).st_mtime < older_than:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
        return removed

    def _walk(self, path: str, key_prefix: str, stem: str) -> Iterator[tuple[str, os.DirEntry]]:
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            raise self._fail(exc, key_prefix or ".", "list") from None
        for entry in entries:
            if not entry.name.startswith(stem) or entry.name.startswith(TMP_PREFIX):
                continue
            key = f"{key_prefix}/{entry.name}" if key_prefix else entry.name
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(entry.path, key, "")
            else:
                yield key, entry

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return
        except OSError as exc:
            raise self._fail(exc, key, "delete") from None

    def size(self, key: str) -> int:
        try:
            return os.stat(self._path(key)).st_size
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(f"{self.url}: no object {key}") from None
        except OSError as exc:
            raise self._fail(exc, key, "stat") from None


class LocalSpool:
    """A pack (or any object) written straight to a temporary file as it is built: nothing of it held
    in memory but small pieces gathered into one write (``SPOOL_BUFFER``: 100,000 small files would
    otherwise cost 100,000 system calls). ``commit`` fsyncs it, renames it to its key and fsyncs the
    key's folder."""

    def __init__(self, store: LocalBlobStore, folder: str) -> None:
        self.store = store
        self.size = 0
        self._pending = bytearray()
        try:
            os.makedirs(folder, exist_ok=True)
            self.path = os.path.join(folder, f"{TMP_PREFIX}{uuid.uuid4().hex}")
            self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise store._fail(exc, os.path.relpath(folder, store.root), "write") from None

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if len(data) < SPOOL_BUFFER // 4:
            self._pending += data
            if len(self._pending) < SPOOL_BUFFER:
                return
            data, self._pending = self._pending, bytearray()
        elif self._pending:
            self._write(self._pending)
            self._pending = bytearray()
        self._write(data)

    def _write(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as exc:
            self.abort()
            raise self.store._fail(exc, os.path.basename(self.path), "write") from None

    def commit(self, key: str) -> None:
        path = self.store._path(key)
        if self._pending:
            self._write(self._pending)
            self._pending = bytearray()
        try:
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = None
            os.makedirs(os.path.dirname(path), exist_ok=True)
            os.replace(self.path, path)
            _fsync_dir(os.path.dirname(path))
        except OSError as exc:
            self.abort()
            raise self.store._fail(exc, key, "write") from None

    def abort(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        _unlink_quietly(self.path)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
