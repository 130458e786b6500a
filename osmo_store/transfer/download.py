"""Download: a version's manifest -> verified files in a destination folder.

Every chunk is checked against its id and every file against its BLAKE3 digest. Each file is written
to a temporary name in its folder and renamed into place, so a file is either absent, old, or
complete. Files already present with the right digest are skipped, which makes an interrupted
download resumable. Manifest paths are validated (relative, no ``..``); folders are created one
component at a time and a symbolic link on the way is refused, so nothing lands outside ``dest``.

Temporary files are named ``.osmo-part-<32 hex digits>`` and each is held under an exclusive
``flock`` from its creation until it is renamed into place. When a download completes, every file of
exactly that name under the destination whose lock can be taken (its writer was killed) is removed:
a killed download leaves nothing behind once a later one completes, a download still running in the
same folder keeps its files, and no other file is ever touched.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from osmo_store import hashing
from osmo_store.chunkstore import ChunkStore
from osmo_store.errors import BackendError, IntegrityError, NotFoundError, UnsafePathError, UsageError
from osmo_store.manifest import FileEntry, iter_entries
from osmo_store.transfer.filters import PathFilter
from osmo_store.transfer.lookahead import in_order
from osmo_store.transfer.overlap import ProtectedFolders
from osmo_store.transfer.progress import REPORT_INTERVAL, ByteTally, FileBytes, Progress, result_reporting
from osmo_store.transfer.spans import SpanReader

PART_PREFIX = ".osmo-part-"
PART_NAME = re.compile(r"\.osmo-part-[0-9a-f]{32}")


@dataclass
class DownloadResult:
    files: int
    bytes: int
    files_skipped: int
    seconds: float

    def to_json(self) -> dict:
        return dict(self.__dict__)


class Downloader:
    def __init__(self, chunks: ChunkStore, workers: int | None = None, progress: Progress | None = None,
                 protected: ProtectedFolders | None = None) -> None:
        self.chunks = chunks
        self.protected = protected
        # threads writing files, each fetching the pack spans its files need: as many as the CPUs, or as
        # the requests a remote store should have in flight
        remote = 0 if chunks.blob.local else chunks.blob.concurrency
        self.workers = workers or max(2, os.cpu_count() or 2, remote)
        self.progress = progress or Progress()
        self.progress_interval = REPORT_INTERVAL
        self._bytes_done = ByteTally()  # bytes the workers have written, reported by the consuming thread

    def run(self, root: bytes, dest: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
            label: str = "download") -> DownloadResult:
        start = time.monotonic()
        keep = PathFilter(include, exclude)
        try:
            entries = [e for e in iter_entries(self.chunks.get_tree, root) if keep(e.path)]
        except NotFoundError as exc:  # a manifest node lost from the store: damage, not a wrong name
            raise IntegrityError(f"{label}: its list of files cannot be read ({exc})") from None
        _check_no_file_folder_clash(entries)
        try:
            os.makedirs(dest, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{dest}: cannot create destination folder: {exc.strerror}") from None
        base = os.path.realpath(dest)
        self._folders: set[str] = set()  # folders this download created or checked
        self._reader = SpanReader(self.chunks, (cid for e in entries for cid, _ in e.chunks))
        skipped = 0
        self._damaged: list[tuple[str, str]] = []  # (path, why) of files whose data is damaged
        self.progress.start(label, len(entries), sum(e.size for e in entries))
        try:
            ex = ThreadPoolExecutor(self.workers, thread_name_prefix="osmo-download")
            try:
                for item in in_order(ex, entries, lambda e: self._write_counted(base, e), lambda e: e.size):
                    skipped += self._collect(item)
            finally:
                ex.shutdown(wait=True, cancel_futures=True)
        finally:
            self.progress.finish()
        remove_stale_parts(base)
        if self._damaged:
            raise _damage_error(self._damaged, len(entries))
        return DownloadResult(len(entries), sum(e.size for e in entries), skipped,
                              round(time.monotonic() - start, 3))

    def _collect(self, item) -> int:
        """A file's outcome. A file whose stored data is damaged or missing is not written and the
        download goes on with the others (they do not depend on it); the failure is raised at the end."""
        entry, future = item
        try:
            skipped = result_reporting(future, self.progress, self._bytes_done, self.progress_interval)
        except (IntegrityError, NotFoundError) as exc:
            if isinstance(exc, UnsafePathError):
                raise
            self._damaged.append((entry.path, str(exc)))
            skipped = 0
        self.progress.advance(1, self._bytes_done.take())
        return skipped

    def _write_counted(self, base: str, entry: FileEntry) -> int:
        """``_write``, counting the bytes written as they go; the file counts its whole size once it is
        done (skipped, written or failed)."""
        file_bytes = FileBytes(self._bytes_done)
        try:
            return self._write(base, entry, file_bytes)
        finally:
            file_bytes.settle(entry.size)

    def _write(self, base: str, entry: FileEntry, file_bytes: FileBytes) -> int:
        parts = entry.path.split("/")
        folder = _ensure_folders(base, parts[:-1], entry.path, self._folders, self.protected)
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
                self._reader.release(cid for cid, _ in entry.chunks)
                return 1
        fd, tmp = _create_part(folder, target)
        try:
            with os.fdopen(fd, "wb", buffering=0) as f:
                h = hashing.hasher()
                chunks = self._reader.read_chunks(cid for cid, _ in entry.chunks)
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
        return 0


def _create_part(folder: str, target: str) -> tuple[int, str]:
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


def _damage_error(damaged: list[tuple[str, str]], total: int) -> IntegrityError:
    names = ", ".join(path for path, _ in damaged[:5]) + (f" and {len(damaged) - 5} more" if len(damaged) > 5 else "")
    return IntegrityError(f"{len(damaged)} of {total} files could not be restored, their stored data is damaged "
                          f"or missing: {names} ({damaged[0][1]}); the other files are in place; see "
                          "'osmo store verify' and 'osmo store repair'")


def _write_error(exc: OSError, target: str) -> Exception:
    if exc.errno == errno.ENOSPC:
        return BackendError(f"{target}: cannot write: disk full")
    if isinstance(exc, IsADirectoryError):
        return UsageError(f"{target}: is a folder, but the dataset has a file there")
    return BackendError(f"{target}: cannot write: {exc.strerror or exc}")


def _check_no_file_folder_clash(entries: list[FileEntry]) -> None:
    """A manifest may not hold both a file ``a`` and a file under ``a/`` (a crafted manifest)."""
    files = {e.path for e in entries}
    for e in entries:
        parts = e.path.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in files:
                raise IntegrityError(f"manifest has both a file {folder!r} and a file {e.path!r} under it")


def _set_attributes(path: str | int, entry: FileEntry) -> None:
    os.chmod(path, entry.mode & 0o777)
    os.utime(path, ns=(entry.mtime_ns, entry.mtime_ns))


def _ensure_folders(base: str, parts: list[str], path: str, known: set[str],
                    protected: ProtectedFolders | None = None) -> str:
    """Create ``base/parts...`` refusing symbolic links and non-folders on the way.

    ``known`` holds folders already checked by this download (a set shared by the writer threads;
    adding to it is atomic), so each folder is looked at once.
    """
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
