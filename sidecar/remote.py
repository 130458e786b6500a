"""URL inputs and outputs: the only module of the sidecar that talks to fsspec.

A URL is anything fsspec opens: ``s3://bucket/prefix`` (s3fs; credentials, region and
``AWS_ENDPOINT_URL`` from the environment exactly as the AWS tools read them), ``gs://``, ``az://``,
``file:///path`` or a plain local path. It names either one file or a folder (an object-store prefix).

Paths are relative POSIX paths below the URL: a folder's files keep their path under it, a single
file is known by its base name. Downloads land in a temporary name next to their target and are
renamed into place, so a file is absent or complete; a resumed copy skips files already present with
the same size. Remote names that would leave the destination (``..``, empty or ``.`` components) are
refused.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import fsspec

from sidecar.errors import DataError

WORKERS = 8
PART_PREFIX = ".osmo-sidecar-part-"


@dataclass(frozen=True)
class RemoteFile:
    rel: str  # POSIX path below the URL
    path: str  # the filesystem's own path
    size: int | None


def check_relative(rel: str, where: str) -> str:
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise DataError(f"{where}: refusing the file name {rel!r} (it would leave the destination folder)")
    return rel


class Remote:
    """One URL, opened with fsspec."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ValueError, ImportError) as exc:
            raise DataError(f"{url}: URL not usable ({' '.join(str(exc).split())})") from None
        self.root = root.rstrip("/") if root not in ("/", "") else root
        protocols = self.fs.protocol if isinstance(self.fs.protocol, (tuple, list)) else (self.fs.protocol,)
        self.local = any(p in ("file", "local") for p in protocols)

    def _join(self, rel: str) -> str:
        return f"{self.root}/{rel}" if self.root and self.root != "/" else f"{self.root}{rel}"

    def list_files(self) -> list[RemoteFile]:
        """The files the URL names: itself if it is a file, else every file below it."""
        if self.fs.isfile(self.root):
            info = self.fs.info(self.root)
            return [RemoteFile(posixpath.basename(self.root.rstrip("/")), self.root, info.get("size"))]
        found = self.fs.find(self.root, withdirs=False, detail=True)
        if not found and not self.fs.isdir(self.root):
            raise FileNotFoundError(f"{self.url}")
        prefix = self.root.rstrip("/") + "/"
        files = []
        for name, info in sorted(found.items()):
            if info.get("type") == "directory" or name.endswith("/"):
                continue  # folder markers some tools leave in object stores
            if not name.startswith(prefix):
                continue
            rel = name[len(prefix):]
            files.append(RemoteFile(check_relative(rel, self.url), name, info.get("size")))
        return files

    def download(self, files: Iterable[RemoteFile], dest: str, resume: bool) -> int:
        """Copy ``files`` into ``dest`` (keeping their relative paths); returns the bytes copied."""
        def one(f: RemoteFile) -> int:
            target = os.path.join(dest, *f.rel.split("/"))
            if resume and f.size is not None and _size(target) == f.size:
                return 0
            os.makedirs(os.path.dirname(target), exist_ok=True)
            tmp = os.path.join(os.path.dirname(target), f"{PART_PREFIX}{uuid.uuid4().hex}")
            try:
                self.fs.get_file(f.path, tmp)
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            return os.path.getsize(target)

        return sum(_parallel(one, list(files)))

    def upload(self, files: Iterable[tuple[str, str]], resume: bool) -> int:
        """Copy local ``(rel, abspath)`` files below the URL; returns the bytes copied."""
        made: set[str] = set()

        def one(item: tuple[str, str]) -> int:
            rel, abspath = item
            target = self._join(check_relative(rel, self.url))
            size = os.path.getsize(abspath)
            if resume and _remote_size(self.fs, target) == size:
                return 0
            if self.local:  # object stores have no folders; never create buckets implicitly
                parent = posixpath.dirname(target)
                if parent not in made:
                    self.fs.makedirs(parent, exist_ok=True)
                    made.add(parent)
            self.fs.put_file(abspath, target)
            return size

        return sum(_parallel(one, list(files)))


def _size(path: str) -> int | None:
    try:
        return os.path.getsize(path)
    except OSError:
        return None


def _remote_size(fs, path: str) -> int | None:
    try:
        return fs.info(path).get("size")
    except (FileNotFoundError, OSError):
        return None


def _parallel(fn: Callable, items: list) -> list:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(WORKERS, len(items)), thread_name_prefix="osmo-sidecar-copy") as ex:
        return list(ex.map(fn, items))
