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
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from osmo_store.blob import BlobStore
from osmo_store.catalog import Catalog, DamagedEvent
from osmo_store.errors import (AlreadyExistsError, BackendError, IntegrityError, NotFoundError,
                               UnavailableError, UsageError)
from osmo_store.events import decode_event, encode_event
from osmo_store.ids import LATEST, Ref, check_name, check_tag
from osmo_store.suggest import closest, did_you_mean

log = logging.getLogger("osmo.store")

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


def _decoded(seq: int, data: bytes | DamagedEvent) -> dict | DamagedEvent:
    """The event, or a ``DamagedEvent`` the fold records and skips (one bad object must not stop
    every reader; ``osmo store repair`` quarantines it)."""
    if isinstance(data, DamagedEvent):
        return data
    try:
        return decode_event(log_key(seq), data)
    except IntegrityError as exc:
        return DamagedEvent(str(exc))


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
            if self.catalog.needs_refold():
                log.warning("osmo: note: a repair replaced an event this machine had read; "
                            "folding the store's log again")
                self.catalog.reset()
                last = 0

    def damage_note(self) -> str | None:
        """A warning naming the log events that are damaged (skipped) until a repair quarantines them,
        or None; the CLI prints it after a command that went through."""
        damaged = sorted(seq for seq, (state, _) in self.catalog.damaged_events().items() if state == "damaged")
        if not damaged:
            return None
        keys = ", ".join(log_key(seq) for seq in damaged[:3]) + (" ..." if len(damaged) > 3 else "")
        events = "damaged event in the store's log ({keys}) is" if len(damaged) == 1 else \
            "damaged events in the store's log ({keys}) are"
        return (f"osmo: warning: {len(damaged)} {events.format(keys=keys)} skipped; "
                "run 'osmo store verify' and 'osmo store repair'")

    def _get_event(self, seq: int) -> bytes | DamagedEvent | None:
        """An event's bytes; None past the end; ``DamagedEvent`` for a file of a local store that is
        there but cannot be read (a folder in its place, a bad sector). On an object store the same
        error may be passing (an expired credential): it is raised, never taken for damage."""
        try:
            return self.blob.get(log_key(seq))
        except NotFoundError:
            return None
        except UnavailableError:
            raise
        except BackendError as exc:
            if not self.blob.local:
                raise
            return DamagedEvent(f"event {log_key(seq)} cannot be read ({exc})")

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
                batch.append((s, _decoded(s, data)))
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

    def dataset_id(self, name: str, ref: Ref | None = None) -> str:
        """The id of the dataset called ``name`` now. A name given up by a rename is not found, and
        the error names the reference that resolves now (``ref``, or the bare name, under the new
        name); a name taken again by another dataset means that one."""
        dsid = self.catalog.dataset_id(check_name(name))
        if dsid is None:
            former = self.catalog.renamed(name)
            if former is None:
                near = closest(name, (ds["name"] for _, ds in self.catalog.datasets()))
                raise NotFoundError(f"dataset {name!r} does not exist{did_you_mean(near)}", dataset=name,
                                    suggestions=near or None)
            now = former[1]["name"]
            if former[1].get("deleted"):
                raise NotFoundError(f"dataset {name!r} does not exist (it was renamed to {now!r}, since deleted)",
                                    dataset=name)
            use = Ref(now, ref.tag, ref.version) if ref is not None else Ref(now)
            raise NotFoundError(f"dataset {name!r} was renamed to {now!r}: use {use}", dataset=name,
                                suggestions=[now])
        return dsid

    def renamed_to(self, name: str) -> str | None:
        """The name now of a live dataset that was called ``name`` before a rename, when no dataset
        holds ``name`` now (an upload under it would start a new dataset)."""
        former = self.catalog.renamed(name) if self.catalog.dataset_id(name) is None else None
        return None if former is None or former[1].get("deleted") else former[1]["name"]

    def _former_hint(self, ref: Ref, dsid: str) -> str:
        """For a reference that misses in the dataset holding its name now: where a former dataset of
        that name (renamed away before the name was taken again) went."""
        former = self.catalog.renamed(ref.name)
        if former is None or former[0] == dsid or former[1].get("deleted"):
            return ""
        if ref.version is not None:
            rec = self.catalog.version(former[0], ref.version)
            if rec is None or rec["deleted"]:
                return ""
        elif ref.tag not in self.catalog.tags(former[0]):
            return ""
        now = former[1]["name"]
        return f" (the former dataset {ref.name!r} was renamed to {now!r}: use {Ref(now, ref.tag, ref.version)})"

    def resolve(self, ref: Ref) -> tuple[str, dict]:
        """The dataset id and live version record a reference points to."""
        dsid = self.dataset_id(ref.name, ref)
        if ref.version is not None:
            rec = self.catalog.version(dsid, ref.version)
            if rec is None:
                raise NotFoundError(f"{ref}: dataset {ref.name!r} has no version {ref.version}"
                                    f"{self._former_hint(ref, dsid)}", dataset=ref.name, version=ref.version)
            if rec["deleted"]:
                raise NotFoundError(f"{ref}: version {ref.version} of {ref.name!r} was deleted", dataset=ref.name,
                                    version=ref.version)
            return dsid, rec
        if ref.tag is None or ref.tag == LATEST:
            live = self.catalog.versions(dsid, include_deleted=False)
            if not live:
                raise NotFoundError(f"{ref}: dataset {ref.name!r} has no live version", dataset=ref.name)
            return dsid, live[-1]
        tags = self.catalog.tags(dsid)
        version = tags.get(ref.tag)
        if version is None:
            hint = self._former_hint(ref, dsid)
            near = [] if hint else closest(ref.tag, list(tags) + [LATEST])
            raise NotFoundError(f"{ref}: dataset {ref.name!r} has no tag {ref.tag!r}{hint or did_you_mean(near)}",
                                dataset=ref.name, tag=ref.tag, suggestions=near or None)
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
            tags = self.catalog.tags(self.dataset_id(name))
            if tag not in tags:
                near = closest(tag, tags)
                raise NotFoundError(f"dataset {name!r} has no tag {tag!r}{did_you_mean(near)}", dataset=name, tag=tag,
                                    suggestions=near or None)
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

    def delete_version(self, ref: Ref, dropped_tags: list[str] | None = None) -> int:
        """Delete the version ``ref`` points to; the tags that pointed at it go with it (the fold
        removes them): ``dropped_tags``, when given, receives their names as of the delete."""
        def build() -> dict:
            dsid, rec = self.resolve(ref)
            if dropped_tags is not None:
                dropped_tags[:] = sorted(t for t, v in self.catalog.tags(dsid).items() if v == rec["version"])
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
