"""Walking the folders and files given to ``upload`` into a sorted list of regular files.

Policy (docs/FORMAT.md, README): a directory argument contributes its contents at the dataset root; a
file argument contributes itself under its base name. Symbolic links are never followed or stored:
they are skipped and reported, as are sockets, FIFOs and devices. Empty folders are not recorded.
Files left out by ``--include/--exclude`` are counted, so that an upload selecting nothing can say
why. With ``protected`` (transfer/overlap.py), a folder of the store or its index met on the way is
refused.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from osmo_store.errors import SourceChangedError, UsageError
from osmo_store.manifest import check_path
from osmo_store.transfer.filters import PathFilter
from osmo_store.transfer.overlap import ProtectedFolders


@dataclass(frozen=True)
class SourceFile:
    path: str  # manifest path
    abspath: str
    size: int
    mode: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int


@dataclass
class ScanResult:
    files: list[SourceFile]
    skipped: list[tuple[str, str]]  # (local path, reason)
    excluded: int = 0  # regular files left out by the include/exclude filters

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


def _source(rel: str, abspath: str, st: os.stat_result) -> SourceFile:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"file name {abspath!r} is not valid UTF-8; rename it to upload it") from None
    check_path(rel)
    return SourceFile(rel, abspath, st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns,
                      st.st_ctime_ns, st.st_ino, st.st_dev)


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symbolic link (not followed)"
    return "not a regular file"


def scan(paths: Sequence[str], path_filter: PathFilter, protected: ProtectedFolders | None = None) -> ScanResult:
    by_path: dict[str, SourceFile] = {}
    skipped: list[tuple[str, str]] = []
    excluded = 0

    def add(rel: str, abspath: str, st: os.stat_result) -> None:
        nonlocal excluded
        if not path_filter(rel):
            excluded += 1
            return
        if rel in by_path:
            raise UsageError(f"{abspath!r} and {by_path[rel].abspath!r} would both be stored as {rel!r}")
        by_path[rel] = _source(rel, abspath, st)

    for given in paths:
        abspath, st = _given(given)
        if stat.S_ISDIR(st.st_mode):
            _walk(abspath, add, skipped, protected)
        elif stat.S_ISREG(st.st_mode):
            add(os.path.basename(abspath), abspath, st)
    return ScanResult([by_path[k] for k in sorted(by_path)], skipped, excluded)


def check_sources(paths: Sequence[str]) -> None:
    """Refuse, before anything is opened or created, sources that are missing or not a folder or file."""
    if not paths:
        raise UsageError("give at least one folder or file to upload")
    for given in paths:
        _given(given)


def _given(given: str) -> tuple[str, os.stat_result]:
    """A source as given: its absolute path and lstat, if it is a folder or a regular file."""
    if not given.strip():
        raise UsageError(f"source {given!r}: an empty path; give a folder or a file")
    abspath = os.path.abspath(given)
    try:
        st = os.lstat(abspath)
    except FileNotFoundError:
        raise UsageError(f"{given}: no such file or directory") from None
    except OSError as exc:
        raise UsageError(f"{given}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) and not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{given}: is a {_kind(st.st_mode)}; give a folder or a regular file")
    return abspath, st


def _walk(root: str, add, skipped: list[tuple[str, str]], protected: ProtectedFolders | None) -> None:
    def on_error(exc: OSError) -> None:
        raise _walk_error(exc.filename, exc)

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        for name in list(dirs):
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise _walk_error(full, exc) from None
            if stat.S_ISLNK(st.st_mode):
                skipped.append((full, _kind(stat.S_IFLNK)))
            elif protected is not None:
                protected.check_entered(full, st, "upload source")
        for name in files:
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise _walk_error(full, exc) from None
            if not stat.S_ISREG(st.st_mode):
                skipped.append((full, _kind(st.st_mode)))
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}".replace(os.sep, "/")
            add(rel, full, st)


def _walk_error(path: str, exc: OSError) -> Exception:
    """A file or folder that vanished during the walk changed under us; anything else is bad input."""
    if isinstance(exc, FileNotFoundError):
        return SourceChangedError(f"{path}: disappeared while it was being read; nothing was committed")
    return UsageError(f"{path}: {exc.strerror}")
