"""Walking the folders and files given to ``upload`` into a sorted list of regular files.

Policy (docs/FORMAT.md, README): a directory argument contributes its contents at the dataset root; a
file argument contributes itself under its base name. Symbolic links are never followed or stored:
they are skipped and reported, as are sockets, FIFOs and devices. Empty folders are not recorded.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from osmo_store.errors import UsageError
from osmo_store.manifest import check_path
from osmo_store.transfer.filters import PathFilter


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


def scan(paths: Sequence[str], path_filter: PathFilter) -> ScanResult:
    by_path: dict[str, SourceFile] = {}
    skipped: list[tuple[str, str]] = []

    def add(rel: str, abspath: str, st: os.stat_result) -> None:
        if not path_filter(rel):
            return
        if rel in by_path:
            raise UsageError(f"{abspath!r} and {by_path[rel].abspath!r} would both be stored as {rel!r}")
        by_path[rel] = _source(rel, abspath, st)

    for given in paths:
        abspath = os.path.abspath(given)
        try:
            st = os.lstat(abspath)
        except FileNotFoundError:
            raise UsageError(f"{given}: no such file or directory") from None
        except OSError as exc:
            raise UsageError(f"{given}: {exc.strerror}") from None
        if stat.S_ISDIR(st.st_mode):
            _walk(abspath, add, skipped)
        elif stat.S_ISREG(st.st_mode):
            add(os.path.basename(abspath), abspath, st)
        else:
            raise UsageError(f"{given}: is a {_kind(st.st_mode)}; give a folder or a regular file")
    return ScanResult([by_path[k] for k in sorted(by_path)], skipped)


def _walk(root: str, add, skipped: list[tuple[str, str]]) -> None:
    def on_error(exc: OSError) -> None:
        raise UsageError(f"{exc.filename}: {exc.strerror}")

    for folder, dirs, files in os.walk(root, onerror=on_error, followlinks=False):
        rel_folder = os.path.relpath(folder, root)
        for name in list(dirs):
            full = os.path.join(folder, name)
            if os.path.islink(full):
                skipped.append((full, _kind(stat.S_IFLNK)))
        for name in files:
            full = os.path.join(folder, name)
            try:
                st = os.lstat(full)
            except OSError as exc:
                raise UsageError(f"{full}: {exc.strerror}") from None
            if not stat.S_ISREG(st.st_mode):
                skipped.append((full, _kind(st.st_mode)))
                continue
            rel = name if rel_folder == "." else f"{rel_folder}/{name}".replace(os.sep, "/")
            add(rel, full, st)
