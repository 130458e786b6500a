"""Keeping transfers out of osmo's own folders: the local store and the local index.

An upload must never read the store, or the index it writes while it runs, into a version; a download
must never write into either (a dataset file could replace the store's config or an object). A source
or destination is refused when it *is* one of these folders, lies *inside* one, or *contains* one.
Folders are compared by device and inode along the real path's ancestors, so symbolic links,
relative paths, ``..`` and bind mounts are seen through; a destination that does not exist yet is
judged by its nearest existing ancestor. The walks of upload and download also check each folder
they enter, which catches a bind mount of the store deeper down.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from osmo_store.errors import UsageError


class ProtectedFolders:
    """Folders no transfer may read from or write into, each with a label for messages."""

    def __init__(self, folders: Iterable[tuple[str, str]]) -> None:
        self._folders: dict[tuple[int, int], tuple[str, str]] = {}  # (device, inode) -> (label, path)
        self._above: list[tuple[str, str, set[tuple[int, int]]]] = []  # label, path, its ancestors
        for label, path in folders:
            real = os.path.realpath(path)
            try:
                st = os.stat(real)
            except OSError:
                continue  # a folder that does not exist cannot be overlapped
            self._folders[(st.st_dev, st.st_ino)] = (label, real)
            self._above.append((label, real, set(_existing_ancestors(real)[1:])))

    def check(self, given: str, what: str) -> None:
        """Refuse ``given`` (a path as the user wrote it) if it is, is inside or contains a protected
        folder; ``what`` names its role (``upload source``, ``download destination``)."""
        if not self._folders:
            return
        real = os.path.realpath(given)
        try:
            here = os.stat(real)
        except OSError:
            here = None
        for ancestor in _existing_ancestors(real):
            hit = self._folders.get(ancestor)
            if hit is not None:
                relation = "is" if here is not None and ancestor == (here.st_dev, here.st_ino) else "is inside"
                raise UsageError(f"{what} {given} {relation} {hit[0]} {hit[1]}: choose a folder outside it")
        if here is None:
            return
        for label, path, above in self._above:
            if (here.st_dev, here.st_ino) in above:
                raise UsageError(f"{what} {given} contains {label} {path}: choose a folder that does not")

    def check_entered(self, folder: str, st: os.stat_result, what: str) -> None:
        """Refuse a folder a walk is about to enter (``st`` its stat) if it is a protected folder."""
        hit = self._folders.get((st.st_dev, st.st_ino))
        if hit is not None:
            raise UsageError(f"{what}: {folder} is {hit[0]} {hit[1]} (reached through a mount): "
                             "choose a folder that does not contain it")


def _existing_ancestors(real: str) -> list[tuple[int, int]]:
    """(device, inode) of ``real`` (if it exists) and of each existing folder above it, to ``/``."""
    out = []
    path = real
    while True:
        try:
            st = os.stat(path)
            out.append((st.st_dev, st.st_ino))
        except OSError:
            pass
        parent = os.path.dirname(path)
        if parent == path:
            return out
        path = parent
