"""Datasets over the event log: the commit protocol for versions, tags, labels and metadata.

Every change to a dataset is an immutable event object ``log/<seq>`` (12 decimal digits) created
with an atomic exclusive create. A writer first reads the log to its end (``sync``), builds its event
against that state (e.g. the next version number), and creates ``log/<last+1>``. If another writer
took that number, the create fails, the writer reads the new event(s) and tries again. Sequence
numbers are therefore dense and totally ordered, two writers never get the same version number, and
nothing is ever overwritten. The local catalog is the fold of the log (``catalog.py``).
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from osmo_store.blob import BlobStore
from osmo_store.catalog import Catalog
from osmo_store.errors import AlreadyExistsError, NotFoundError, UsageError
from osmo_store.events import decode_event, encode_event
from osmo_store.ids import LATEST, Ref, check_name, check_tag

LOG_PREFIX = "log/"
MAX_ATTEMPTS = 1000
SYNC_BATCH = 1000


def log_key(seq: int) -> str:
    return f"{LOG_PREFIX}{seq:012d}"


def current_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


class _NothingToDo(Exception):
    """Internal: an event turned out to have nothing to record."""


class DatasetLog:
    """Reads and appends the event log, keeping the catalog in step."""

    def __init__(self, blob: BlobStore, catalog: Catalog, clock: Callable[[], float] = time.time) -> None:
        self.blob = blob
        self.catalog = catalog
        self.clock = clock
        self._pool: ThreadPoolExecutor | None = None

    def sync(self) -> int:
        """Fold every event after the catalog's last one; returns the last sequence number.

        Only new events are read: one request per event plus one that finds the end. On object
        stores the next events are fetched in parallel windows of ``blob.concurrency``.
        """
        last = self.catalog.last_seq()
        while True:
            batch = self._read_events(last + 1)
            if not batch:
                return last
            last = self.catalog.apply_events(batch)

    def _get_event(self, seq: int) -> bytes | None:
        try:
            return self.blob.get(log_key(seq))
        except NotFoundError:
            return None

    def _read_events(self, first: int) -> list[tuple[int, dict]]:
        """Consecutive events from ``first`` up to the first missing one (at most ``SYNC_BATCH``)."""
        width = max(1, self.blob.concurrency)
        batch: list[tuple[int, dict]] = []
        seq = first
        window = 1  # grows once events are found, so an up-to-date catalog costs one request
        while len(batch) < SYNC_BATCH:
            seqs = list(range(seq, seq + window))
            found = list(self._fetcher(width).map(self._get_event, seqs)) if window > 1 else [self._get_event(seq)]
            for s, data in zip(seqs, found):
                if data is None:
                    return batch
                batch.append((s, decode_event(log_key(s), data)))
            seq += window
            window = min(window * 2, width * 4, SYNC_BATCH) if width > 1 else 1
        return batch

    def _fetcher(self, width: int) -> ThreadPoolExecutor:
        """Threads for parallel event reads, made on first need (never for an up-to-date catalog)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(width, thread_name_prefix="osmo-log")
        return self._pool

    def append(self, build: Callable[[], dict]) -> tuple[int, dict]:
        """Sync, build an event from the fresh state, and create it exclusively; retry on a race."""
        for _ in range(MAX_ATTEMPTS):
            last = self.sync()
            event = build()
            event.setdefault("time", self.clock())
            event.setdefault("user", current_user())
            event["nonce"] = os.urandom(8).hex()  # makes this writer's bytes unique (see blob/retry.py)
            try:
                self.blob.create(log_key(last + 1), encode_event(event))
            except AlreadyExistsError:
                continue
            self.catalog.apply_events([(last + 1, event)])
            return last + 1, event
        raise AlreadyExistsError("could not commit after many attempts: too many concurrent writers")

    # resolution -------------------------------------------------------------------------------

    def dataset_id(self, name: str) -> str:
        dsid = self.catalog.dataset_id(check_name(name))
        if dsid is None:
            raise NotFoundError(f"dataset {name!r} does not exist")
        return dsid

    def resolve(self, ref: Ref) -> tuple[str, dict]:
        """The dataset id and live version record a reference points to."""
        dsid = self.dataset_id(ref.name)
        if ref.version is not None:
            rec = self.catalog.version(dsid, ref.version)
            if rec is None:
                raise NotFoundError(f"{ref}: dataset {ref.name!r} has no version {ref.version}")
            if rec["deleted"]:
                raise NotFoundError(f"{ref}: version {ref.version} of {ref.name!r} was deleted")
            return dsid, rec
        if ref.tag is None or ref.tag == LATEST:
            live = self.catalog.versions(dsid, include_deleted=False)
            if not live:
                raise NotFoundError(f"{ref}: dataset {ref.name!r} has no live version")
            return dsid, live[-1]
        version = self.catalog.tags(dsid).get(ref.tag)
        if version is None:
            raise NotFoundError(f"{ref}: dataset {ref.name!r} has no tag {ref.tag!r}")
        return dsid, self.catalog.version(dsid, version)

    # changes ----------------------------------------------------------------------------------

    @staticmethod
    def check_new_version(name: str, tags: list[str]) -> None:
        """Validate a dataset name and the tags an upload will set (before any data is written)."""
        check_name(name)
        for tag in tags:
            check_tag(tag)
            if tag == LATEST:
                raise UsageError("the tag 'latest' is maintained automatically")

    def commit_version(self, name: str, fields: dict[str, Any], tags: list[str],
                       guard: Callable[[], None] | None = None) -> dict:
        """Append a version event with the next number; returns the committed record.

        ``guard`` runs against the freshly synced state just before each attempt to create the
        event; an upload uses it to check that garbage collection has not condemned what the new
        version references (it raises to stop the commit)."""
        self.check_new_version(name, tags)

        def build() -> dict:
            if guard is not None:
                guard()
            dsid = self.catalog.dataset_id(name)
            if dsid is None:
                number, parent = 1, None
            else:
                ds = self.catalog.dataset(dsid)
                number = ds["next_version"]
                live = self.catalog.versions(dsid, include_deleted=False)
                parent = live[-1]["version"] if live else None
            return {"op": "version", "dataset": name, "version": number, "parent": parent,
                    "tags": list(tags), **fields}

        seq, event = self.append(build)
        return self.catalog.version(self.dataset_id(name), event["version"])

    def set_tag(self, ref: Ref, tag: str) -> int:
        check_tag(tag)
        if tag == LATEST:
            raise UsageError("the tag 'latest' is maintained automatically")

        def build() -> dict:
            _, rec = self.resolve(ref)
            return {"op": "tag", "dataset": ref.name, "tag": tag, "version": rec["version"]}

        return self.append(build)[1]["version"]

    def delete_tag(self, name: str, tag: str) -> None:
        def build() -> dict:
            if tag not in self.catalog.tags(self.dataset_id(name)):
                raise NotFoundError(f"dataset {name!r} has no tag {tag!r}")
            return {"op": "untag", "dataset": name, "tag": tag}

        self.append(build)

    def change_labels(self, name: str, set_: dict[str, str], unset: list[str]) -> dict:
        def build() -> dict:
            self.dataset_id(name)
            return {"op": "label", "dataset": name, "set": set_, "unset": unset}

        self.append(build)
        return self.catalog.dataset(self.dataset_id(name))["labels"]

    def change_metadata(self, ref: Ref, set_: dict[str, str], unset: list[str]) -> dict:
        def build() -> dict:
            _, rec = self.resolve(ref)
            return {"op": "metadata", "dataset": ref.name, "version": rec["version"],
                    "set": set_, "unset": unset}

        event = self.append(build)[1]
        return self.catalog.version(self.dataset_id(ref.name), event["version"])["metadata"]

    def rename(self, old: str, new: str) -> None:
        check_name(new)

        def build() -> dict:
            self.dataset_id(old)
            if self.catalog.dataset_id(new) is not None:
                raise AlreadyExistsError(f"dataset {new!r} already exists")
            return {"op": "rename", "dataset": old, "new": new}

        self.append(build)

    def delete_version(self, ref: Ref) -> int:
        def build() -> dict:
            _, rec = self.resolve(ref)
            return {"op": "delete", "dataset": ref.name, "version": rec["version"]}

        return self.append(build)[1]["version"]

    def delete_versions(self, name: str, choose: Callable[[str], list[int]]) -> list[int]:
        """Delete, in one event, the versions ``choose(dataset_id)`` picks; it is asked again against
        the newest state whenever another writer commits first. Returns the versions deleted."""
        chosen: list[int] = []

        def build() -> dict:
            nonlocal chosen
            chosen = sorted(choose(self.dataset_id(name)))
            if not chosen:
                raise _NothingToDo()
            return {"op": "delete_versions", "dataset": name, "versions": chosen}

        try:
            self.append(build)
        except _NothingToDo:
            return []
        return chosen

    def delete_dataset(self, name: str) -> int:
        count = 0

        def build() -> dict:
            nonlocal count
            count = len(self.catalog.versions(self.dataset_id(name), include_deleted=False))
            return {"op": "delete_dataset", "dataset": name}

        self.append(build)
        return count
