"""Run ``osmo store gc --min-age 0`` that stalls at a chosen point, so a test can kill -9 it there.

Usage: python stalling_gc.py POINT STORE

POINT: ``planned`` (after planning, before copying live chunks), ``copied`` (repacked chunks written,
no event yet), ``committed`` (the gc events are in the log, nothing deleted) or ``deleting`` (after
the first pack deletion). Prints ``stalled`` and blocks forever at that point.
"""

from __future__ import annotations

import os
import sys
import time

from osmo_store.blob.local import LocalBlobStore
from osmo_store.gc import Collector
from osmo_store.repository import Repository
from osmo_store.gc import GcOptions


def stall() -> None:
    os.write(1, b"stalled\n")
    while True:
        time.sleep(60)


def main() -> None:
    point, store = sys.argv[1], sys.argv[2]
    real_copy, real_commit, real_delete = Collector._copy_live, Collector._commit, LocalBlobStore.delete
    commits = []

    def copy_live(self, repack, copier):
        if point == "planned":
            stall()
        return real_copy(self, repack, copier)

    def commit(self, *args):
        if point == "copied":
            stall()
        result = real_commit(self, *args)
        commits.append(result)
        return result

    def delete(self, key):
        if point == "committed" and key.startswith("packs/"):
            stall()
        real_delete(self, key)
        if point == "deleting" and key.startswith("packs/"):
            stall()

    Collector._copy_live, Collector._commit, LocalBlobStore.delete = copy_live, commit, delete
    with Repository.open(store) as repo:
        repo.gc(GcOptions(min_age=0, repack_threshold=0.2))
    os.write(1, b"finished without reaching the point\n")


if __name__ == "__main__":
    main()
