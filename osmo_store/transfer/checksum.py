"""The version checksum of a local folder, computed exactly as ``upload`` would (see manifest.Checksum)."""

from __future__ import annotations

from collections.abc import Sequence

from osmo_store import hashing
from osmo_store.errors import UsageError
from osmo_store.manifest import Checksum
from osmo_store.transfer.filters import PathFilter
from osmo_store.transfer.scan import scan


def folder_checksum(paths: Sequence[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> dict:
    scanned = scan(paths, PathFilter(include, exclude))
    checksum = Checksum()
    for src in scanned.files:
        try:
            digest = hashing.file_digest(src.abspath)
        except OSError as exc:
            raise UsageError(f"{src.abspath}: cannot read: {exc.strerror}") from None
        checksum.add(src.path, src.size, bool(src.mode & 0o111), digest)
    return {"checksum": checksum.hexdigest(), "files": len(scanned.files), "logical_bytes": scanned.total_bytes}
