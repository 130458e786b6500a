"""Writing one downloaded file into place: the code shared by download threads and download workers.

``FileWriter.outcome`` writes a manifest entry under the destination and says what happened:
``WRITTEN``, ``SKIPPED`` (already in place with the right digest; only its attributes are set) or
``DAMAGED`` with the reason (a chunk of it is damaged or missing in the store: this file is not
written, the others do not depend on it). Anything else (a symbolic link or a non-folder on the way,
a full disk) is raised: it ends the download.

A file is written to a temporary name in its folder and renamed into place once its digest checks,
so it is either absent, old, or complete. Temporary files are named ``.osmo-part-<32 hex digits>``
and each is held under an exclusive ``flock`` from its creation until it is renamed into place.
``remove_stale_parts`` removes every file of exactly that name whose lock can be taken (its writer
was killed): a download still running in the same folder keeps its files, no other file is touched.

Folders are created one component at a time and a symbolic link on the way is refused, so nothing
lands outside the destination, nor in a protected folder reached through a mount.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import uuid

from osmo_store import hashing
from osmo_store.errors import BackendError, IntegrityError, NotFoundError, UnsafePathError, UsageError
from osmo_store.manifest import FileEntry
from osmo_store.transfer.overlap import ProtectedFolders
from osmo_store.transfer.progress import ByteTally, FileBytes
from osmo_store.transfer.spans import SpanReader

PART_PREFIX = ".osmo-part-"
PART_NAME = re.compile(r"\.osmo-part-[0-9a-f]{32}")

WRITTEN = "written"
SKIPPED = "skipped"
DAMAGED = "damaged"


class FileWriter:
    """Writes the files of one download under ``base`` (a real path). Thread-safe: the folders
    checked so far are a set that threads add to atomically, so each folder is looked at once."""

    def __init__(self, base: str, protected: ProtectedFolders | None = None) -> None:
        self.base = base
        self.protected = protected
        self._folders: set[str] = set()

    def outcome(self, entry: FileEntry, reader: SpanReader, tally: ByteTally) -> tuple[str, str | None]:
        """``(WRITTEN | SKIPPED | DAMAGED, why damaged)``. Bytes are added to ``tally`` as they are
        written; the file counts its whole size once it is done, whatever happened to it."""
        file_bytes = FileBytes(tally)
        try:
            return (SKIPPED if self.write(entry, reader, file_bytes) else WRITTEN), None
        except UnsafePathError:
            raise
        except (IntegrityError, NotFoundError) as exc:
            return DAMAGED, str(exc)
        finally:
            file_bytes.settle(entry.size)

    def write(self, entry: FileEntry, reader: SpanReader, file_bytes: FileBytes) -> bool:
        """Write ``entry`` from the chunks ``reader`` holds; True when it was already in place."""
        parts = entry.path.split("/")
        folder = ensure_folders(self.base, parts[:-1], entry.path, self._folders, self.protected)
        target = os.path.join(folder, parts[-1])
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            st = None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise UsageError(f"{target}: is a folder, but the dataset has a file {entry.path!r} there")
        if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == entry.size:
            if hashing.file_digest(target) == entry.digest:
                _set_attributes(target, entry)
                reader.release(cid for cid, _ in entry.chunks)
                return True
        fd, tmp = create_part(folder, target)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                h = hashing.hasher()
                chunks = reader.read_chunks(cid for cid, _ in entry.chunks)
                for (cid, length), chunk in zip(entry.chunks, chunks):
                    if len(chunk) != length:
                        raise IntegrityError(f"{entry.path}: chunk {cid.hex()[:16]} is {len(chunk)} bytes, "
                                             f"the manifest says {length}")
                    view = memoryview(chunk)
                    while view:
                        view = view[f.write(view):]
                    h.update(chunk)
                    file_bytes.add(length)
                if h.digest() != entry.digest:
                    raise IntegrityError(f"{entry.path}: downloaded content does not match its digest")
                _set_attributes(f.fileno(), entry)
                os.rename(tmp, target)  # still locked: no cleaner can take the part file meanwhile
        except BaseException as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if isinstance(exc, OSError):
                raise _write_error(exc, target) from None
            raise
        return False


def create_part(folder: str, target: str) -> tuple[int, str]:
    """A new, locked temporary file in ``folder``: its descriptor and path."""
    while True:
        tmp = os.path.join(folder, f"{PART_PREFIX}{uuid.uuid4().hex}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise _write_error(exc, target) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            return fd, tmp  # no locks on this file system: such part files are never removed by others
        try:
            if _same_inode(os.fstat(fd), os.lstat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)  # a cleaner took it between the create and the lock: make another


def _same_inode(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def remove_stale_parts(base: str) -> int:
    """Remove the temporary files killed downloads left under ``base``: files named exactly like ours
    that no live download holds locked. Symbolic links are not followed. Returns how many."""
    removed = 0
    for _, _, files, dir_fd in os.fwalk(base, follow_symlinks=False):
        for name in files:
            if PART_NAME.fullmatch(name) and _remove_if_unlocked(name, dir_fd):
                removed += 1
    return removed


def _remove_if_unlocked(name: str, dir_fd: int) -> bool:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False  # a live download is writing it (or this file system has no locks)
        if not _same_inode(st, os.stat(name, dir_fd=dir_fd, follow_symlinks=False)):
            return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _write_error(exc: OSError, target: str) -> Exception:
    if exc.errno == errno.ENOSPC:
        return BackendError(f"{target}: cannot write: disk full")
    if isinstance(exc, IsADirectoryError):
        return UsageError(f"{target}: is a folder, but the dataset has a file there")
    return BackendError(f"{target}: cannot write: {exc.strerror or exc}")


def _set_attributes(path: str | int, entry: FileEntry) -> None:
    os.chmod(path, entry.mode & 0o777)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))


def ensure_folders(base: str, parts: list[str], path: str, known: set[str],
                   protected: ProtectedFolders | None = None) -> str:
    """Create ``base/parts...`` refusing symbolic links and non-folders on the way; ``known`` holds
    the folders already checked (by this writer), which are not looked at again."""
    current = base
    for part in parts:
        current = os.path.join(current, part)
        if current in known:
            continue
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            try:
                os.mkdir(current)
            except FileExistsError:
                pass
            st = os.lstat(current)
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(
                f"refusing to write {path!r}: {current} is a symbolic link and could lead outside the destination")
        if not stat.S_ISDIR(st.st_mode):
            raise UsageError(f"cannot write {path!r}: {current} exists and is not a folder")
        if protected is not None:
            protected.check_entered(current, st, "download destination")
        known.add(current)
    return current
