"""The bytes of the local index's rows and its errors: every value sealed with a check of its key and
bytes (``seal``/``unseal``), and the failures of LMDB and of the file system translated once into the
errors callers handle (a full disk: ``BackendError``, exit 8; anything else: ``IndexDamagedError``, the
index is rebuilt). ``reserve`` gives LMDB's lock file its disk space before LMDB maps it."""

from __future__ import annotations

import errno
import os

import lmdb
import msgpack

from osmo_store import hashing
from osmo_store.errors import BackendError, IndexDamagedError

TAG = 8  # bytes of check after every value

# a full disk is a storage failure (exit 8); any other failure of the index's files means it cannot be
# used as it is: it is rebuilt, or a temporary one serves (repository.open_index)
_SYSTEM_ERRNOS = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded"}


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def seal(key: bytes, obj: object) -> bytes:
    """A value as stored: msgpack bytes, then the check of key and bytes."""
    body = pack(obj)
    return body + hashing.digest(key + body)[:TAG]


def unseal(key: bytes, raw: bytes, where: str) -> object:
    """The value of a row, or ``IndexDamagedError`` if it fails its check."""
    body = raw[:-TAG]
    if len(raw) <= TAG or hashing.digest(bytes(key) + body)[:TAG] != raw[-TAG:]:
        raise IndexDamagedError(f"the local index is damaged: a row of {where} fails its check")
    try:
        return unpack(body)
    except Exception:  # a check that matches garbage: only if it was written so
        raise IndexDamagedError(f"the local index is damaged: a row of {where} does not decode") from None


def translate(exc: lmdb.Error, path: str) -> BackendError:
    """An LMDB error as the error callers handle: the disk's failures are storage failures (exit 8);
    anything else means the file is damaged (rebuilt from the store)."""
    if isinstance(exc, lmdb.MapFullError):
        return BackendError(f"the local index at {path} is full")
    text = str(exc)
    for code, what in _SYSTEM_ERRNOS.items():
        if os.strerror(code) in text or getattr(exc, "errno", None) == code:
            return BackendError(f"the local index at {path}: {what}")
    return IndexDamagedError(f"the local index at {path} cannot be used ({text})")


def reserve(path: str, size: int) -> None:
    """Give LMDB's lock file its disk space before LMDB maps it: LMDB writes that file through a
    memory map, and a page the disk cannot hold would kill the process (SIGBUS) instead of failing."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise translate_os(exc, f"cannot open the local index at {os.path.dirname(path)}") from None
    try:
        if os.fstat(fd).st_blocks * 512 < size:
            os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate here: LMDB's own way
            return
        raise translate_os(exc, f"cannot open the local index at {os.path.dirname(path)}") from None
    finally:
        os.close(fd)


def translate_os(exc: OSError, what: str) -> BackendError:
    """A file system error on the index's folder: the disk's failures are storage failures, anything
    else (a file of the wrong kind, garbage) means damage."""
    if exc.errno in _SYSTEM_ERRNOS:
        return BackendError(f"{what}: {_SYSTEM_ERRNOS[exc.errno]}")
    return IndexDamagedError(f"{what}: {exc.strerror or exc}")
