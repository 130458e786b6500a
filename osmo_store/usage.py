"""Who owns which stored bytes: the figures of ``osmo store report``, ``store stats``, ``dataset
list/info`` and ``retain`` (docs/COSTS.md defines each one; ``gc --dry-run`` and ``verify`` count the
same things under the same names).

**Ownership.** One pass per dataset walks its live versions in order, diffing each manifest tree
against the previous one (subtrees shared by id are skipped, so the cost follows what changed, not
the dataset's size), and counts references per chunk and manifest node. That gives every version's
distinct stored and raw bytes exactly, and every chunk's *owner*: the one version, and the one
dataset, that references it (or none, when several do). A second pass, run only when some chunk is
referenced by two datasets, sums per version the bytes it shares with other datasets.

**What deleting frees.** Priced as garbage collection with no time margin would free it: a pack
left with no live chunk is deleted; a pack whose dead share reaches the repack threshold is
rewritten (its live chunks copied into new packs, sized by ``PackLayout``). The figure is the
difference between collecting with and without the deletion, so it is exact: delete the version,
run ``osmo store gc --min-age 0``, and the bytes in packs fall by exactly that much.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from osmo_store.catalog import Catalog
from osmo_store.chunkstore import ChunkStore
from osmo_store.datasets import DatasetLog
from osmo_store.errors import IntegrityError, NotFoundError, UnsafePathError
from osmo_store.gc import LEAVING, Collector, GcOptions, GcStats, Marker, PackVerdict, repack_layout
from osmo_store.manifest import diff_trees
from osmo_store.packlayout import Segment
from osmo_store.packs import PackEntry
from osmo_store.transfer.spans import MAX_SPAN

GB = 10**9
MULTI = -1  # owner of a chunk referenced by more than one version (or dataset)
DELETING = ("condemn", "repack", "sweep", "resweep")  # actions after which a pack is gone


def ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


@dataclass
class Usage:
    """Bytes of one version or one dataset. ``stored`` counts chunks and manifest nodes as stored;
    ``data_raw``/``data_stored`` count file chunks only (uncompressed / as stored), for the ratios."""

    logical_bytes: int = 0
    stored_bytes: int = 0
    new_bytes: int = 0  # what its upload added to the store (the version events' stored_bytes)
    data_raw: int = 0
    data_stored: int = 0
    unique_bytes: int = 0  # what deleting it frees (exact, see the module docstring)
    owned_bytes: int = 0  # stored bytes of the chunks and nodes nothing else references
    held_bytes: int = 0  # of owned_bytes: in packs gc keeps (they hold live data too) until a repack
    unique_chunks: int = 0  # how many those are
    shared_bytes: int = 0  # of stored_bytes: chunks other datasets reference too
    lost_chunks: int = 0  # referenced chunks and nodes with no copy known to be intact (damage)
    unreadable: str | None = None  # why (part of) a manifest cannot be read: its figures are unknown
    unique_unknown: bool = False  # a sibling version cannot be read: what deleting this frees is unknown

    def figures(self) -> dict:
        if self.unreadable:  # what cannot be computed is unknown, never a wrong number
            return {"logical_bytes": self.logical_bytes, "stored_bytes": None, "new_bytes": self.new_bytes,
                    "unique_bytes": None, "owned_bytes": None, "shared_bytes": None, "dedup_ratio": None,
                    "compression_ratio": None, "damaged": True, "unreadable": self.unreadable}
        unknown = self.unique_unknown
        note = None if unknown else unique_note(self.new_bytes, self.unique_bytes, self.owned_bytes,
                                                self.held_bytes)
        return {"logical_bytes": self.logical_bytes, "stored_bytes": self.stored_bytes, "new_bytes": self.new_bytes,
                "unique_bytes": None if unknown else self.unique_bytes,
                "owned_bytes": None if unknown else self.owned_bytes,
                "shared_bytes": self.shared_bytes,
                "dedup_ratio": ratio(self.logical_bytes, self.data_raw),
                "compression_ratio": ratio(self.data_raw, self.data_stored),
                **({"note": note} if note else {}),
                **({"damaged": True, "lost_chunks": self.lost_chunks} if self.lost_chunks else {})}


def unique_note(new: int, unique: int, owned: int, held: int) -> str | None:
    """Why what deleting a version (or dataset) frees now (``unique``) differs from what its upload
    added (``new``), in a few words; ``None`` when they are equal. ``held``: the bytes of its own data
    left in packs gc keeps because they hold live data too."""
    if unique == new:
        return None
    reasons = []
    if unique + held < new:
        reasons.append("later versions or other datasets use data it added")
    if held:
        reasons.append("some of its own data shares packs with live data: freed after a repack")
    if unique > new:
        reasons.append("it holds data that earlier, since deleted, versions added" if owned > new
                       else "deleting it also lets gc free dead data in its packs")
    return "; ".join(reasons)


@dataclass
class VersionUsage(Usage):
    record: dict = field(default_factory=dict)


@dataclass
class DatasetUsage(Usage):
    name: str = ""
    dsid: str = ""
    versions: list[VersionUsage] = field(default_factory=list)


class VersionWalk:
    """The chunk and node ids entering and leaving as a dataset's versions are walked in order.

    A version whose manifest cannot be read (a node missing or damaged) is skipped: it yields no
    change, the next version is compared with the one before it, and ``unreadable`` says why."""

    def __init__(self, load: Callable[[bytes], bytes], records: list[dict]) -> None:
        self.load = load
        self.records = records
        self.counts: dict[bytes, int] = {}  # references from the current version
        self.unreadable: dict[int, str] = {}  # version index -> why its manifest cannot be read

    def __iter__(self) -> Iterator[tuple[int, list[tuple[bytes, bool]], list[bytes]]]:
        """Yield ``(i, entered, left)`` per version: ``entered`` as ``(id, is_node)`` pairs."""
        prev = None
        for i, rec in enumerate(self.records):
            root = bytes.fromhex(rec["root"])
            change: dict[bytes, list] = {}

            def note(cid: bytes, delta: int, is_node: bool) -> None:
                c = change.setdefault(cid, [0, is_node])
                c[0] += delta

            try:
                for old, new in diff_trees(self.load, prev, root,
                                           lambda side, nid: note(nid, 1 if side else -1, True)):
                    for entry, delta in ((old, -1), (new, 1)):
                        if entry is not None:
                            for cid, _ in entry.chunks:
                                note(cid, delta, False)
            except (NotFoundError, IntegrityError, UnsafePathError) as exc:
                self.unreadable[i] = str(exc)
                yield i, [], []
                continue
            entered, left = [], []
            for cid, (delta, is_node) in change.items():
                if not delta:
                    continue
                before = self.counts.get(cid, 0)
                after = before + delta
                if after:
                    self.counts[cid] = after
                else:
                    del self.counts[cid]
                if not before:
                    entered.append((cid, is_node))
                elif not after:
                    left.append(cid)
            prev = root
            yield i, entered, left


class UsageScan:
    """Computes the usage of every dataset and version, and what deleting any set of them frees."""

    def __init__(self, chunks: ChunkStore, catalog: Catalog, log: DatasetLog,
                 repack_threshold: float = GcOptions().repack_threshold,
                 clock: Callable[[], float] = time.time) -> None:
        self.chunks = chunks
        self.index = chunks.index
        self.catalog = catalog
        self.log = log
        self.collector = Collector(chunks, catalog, log, GcOptions(min_age=0, repack_threshold=repack_threshold),
                                   clock)
        self.owner: dict[bytes, tuple[int, int]] = {}  # id -> (version number or MULTI, dataset index or MULTI)
        self.datasets: list[DatasetUsage] = []
        self.missing = 0  # referenced ids the index does not know (verify reports them)
        self.nodes: set[bytes] = set()  # the manifest node ids among the live ids of ``owner``
        self.data_raw = self.data_stored = 0  # the store's distinct live file chunks (for its ratios)
        self.unreadable = 0  # live versions whose manifest cannot be read: some figures are unknown
        self._refreshed = False
        self._damage_noted = bool(chunks.index.missing_packs() or chunks.index.damaged_chunks())
        self.verdicts: dict[bytes, PackVerdict] = {}  # gc's plan at min-age 0, pack by pack
        self.repacks: dict[bytes, Segment] = {}  # packs that plan repacks, with their live chunks
        self.written = 0  # bytes of the packs those repacks write
        self.leaving: set[bytes] = set()  # packs that plan deletes or repacks
        self.duplicated: dict[bytes, list[PackEntry]] = {}  # see _plan
        self.baseline_freed = 0  # what gc --min-age 0 frees now
        self.stats = GcStats(dry_run=True)

    # ownership --------------------------------------------------------------------------------

    def scan(self, with_unique: bool = True) -> list[DatasetUsage]:
        self.log.sync()
        for dsid, ds in self.catalog.datasets():
            records = self.catalog.versions(dsid, include_deleted=False)
            self.datasets.append(self._walk(len(self.datasets), ds["name"], records))
            self.datasets[-1].dsid = dsid
        if any(d == MULTI for _, d in self.owner.values()):
            for ds in self.datasets:
                self._shared(ds)
        if with_unique:
            self._unique()
        return self.datasets

    def _sizes(self, cid: bytes, txn: object) -> tuple[int, int, bool]:
        """``(stored, raw, lost)`` of a referenced chunk or node."""
        loc = self.index.chunk_location(cid, txn)
        if loc is None and not self._refreshed:  # written by another client since this one looked
            self._refreshed = True
            self.chunks.refresh_packs()
            self._damage_noted = bool(self.index.missing_packs() or self.index.damaged_chunks())
        if loc is None:
            loc = self.index.chunk_location(cid)
        if loc is None:
            self.missing += 1
            return 0, 0, True
        lost = self._damage_noted and self.index.lost(cid, txn)
        return loc.stored_length, loc.raw_length, lost

    def _walk(self, ds_index: int, name: str, records: list[dict]) -> DatasetUsage:
        ds = DatasetUsage(name=name)
        present: dict[bytes, list] = {}  # id -> [version index its current run began at, stored, raw, is_node]
        runs: dict[bytes, int] = {}  # id -> the one version number referencing it so far, or MULTI
        stored = data_raw = data_stored = lost = 0
        walk = VersionWalk(self.chunks.get_tree, records)
        with self.index.read() as txn:
            for i, entered, left in walk:
                for cid in left:
                    first, s, r, is_node, gone = present.pop(cid)
                    if i - first >= 2:
                        runs[cid] = MULTI
                    stored -= s
                    lost -= gone
                    if not is_node:
                        data_raw, data_stored = data_raw - r, data_stored - s
                for cid, is_node in entered:
                    s, r, gone = self._sizes(cid, txn)
                    present[cid] = [i, s, r, is_node, gone]
                    stored += s
                    lost += gone
                    if not is_node:
                        data_raw, data_stored = data_raw + r, data_stored + s
                    if cid in runs:  # back after an absence: a second version references it
                        runs[cid] = MULTI
                    else:  # first time in this dataset
                        runs[cid] = records[i]["version"]
                        ds.stored_bytes += s
                        if is_node:
                            self.nodes.add(cid)
                        else:
                            ds.data_raw, ds.data_stored = ds.data_raw + r, ds.data_stored + s
                            if cid not in self.owner:  # first time in the store
                                self.data_raw, self.data_stored = self.data_raw + r, self.data_stored + s
                rec = records[i]
                ds.versions.append(VersionUsage(logical_bytes=rec["logical_bytes"], stored_bytes=stored,
                                                new_bytes=rec.get("stored_bytes") or 0,
                                                data_raw=data_raw, data_stored=data_stored, record=rec,
                                                lost_chunks=lost, unreadable=walk.unreadable.get(i)))
                ds.logical_bytes += rec["logical_bytes"]
                ds.new_bytes += rec.get("stored_bytes") or 0
        if walk.unreadable:
            self.unreadable += len(walk.unreadable)
            n = len(walk.unreadable)
            ds.unreadable = f"{n} {'version' if n == 1 else 'versions'} cannot be read"
            for v in ds.versions:
                v.unique_unknown = True
        for cid, (first, *_) in present.items():
            if len(records) - first >= 2:
                runs[cid] = MULTI
        for cid, version in runs.items():
            self.owner[cid] = (version, ds_index) if cid not in self.owner else (MULTI, MULTI)
        return ds

    def _shared(self, ds: DatasetUsage) -> None:
        """Per version and for the dataset: stored bytes of the chunks other datasets reference too."""
        shared = {cid for cid, (_, d) in self.owner.items() if d == MULTI}
        present: dict[bytes, int] = {}
        running = 0
        seen: set[bytes] = set()
        with self.index.read() as txn:
            for i, entered, left in VersionWalk(self.chunks.get_tree, [v.record for v in ds.versions]):
                for cid in left:
                    running -= present.pop(cid, 0)
                for cid, _ in entered:
                    if cid in shared:
                        loc = self.index.chunk_location(cid, txn)  # (a missing one was counted by _walk)
                        s = loc.stored_length if loc is not None else 0
                        present[cid] = s
                        running += s
                        if cid not in seen:
                            seen.add(cid)
                            ds.shared_bytes += s
                ds.versions[i].shared_bytes = running

    # what deleting frees ----------------------------------------------------------------------

    def _unique(self) -> None:
        """Each version's and each dataset's unique bytes: what deleting it alone frees."""
        self._plan()
        by_version: dict[tuple[int, int], list[bytes]] = {}
        by_dataset: dict[int, list[bytes]] = {}
        for cid, (v, d) in self.owner.items():
            if d != MULTI:
                by_dataset.setdefault(d, []).append(cid)
                if v != MULTI:
                    by_version.setdefault((d, v), []).append(cid)
        for d, ds in enumerate(self.datasets):
            ids = by_dataset.get(d, [])
            ds.unique_chunks = len(ids)
            ds.unique_bytes, ds.owned_bytes, ds.held_bytes = self._price(ids)
            for vu in ds.versions:
                ids = by_version.get((d, vu.record["version"]), [])
                vu.unique_chunks = len(ids)
                vu.unique_bytes, vu.owned_bytes, vu.held_bytes = self._price(ids)

    def _plan(self) -> None:
        if self.verdicts:
            return
        self.stats = GcStats(dry_run=True)
        self.verdicts = {v.pack_id: v for v in self.collector.plan(self.owner, self.stats)}
        self.repacks = {p: Segment(v.live) for p, v in self.verdicts.items() if v.action == "repack"}
        self.leaving = {p for p, v in self.verdicts.items() if v.action in LEAVING}
        # repacked packs whose copies of some live chunks are not copied, a staying pack holding them
        # too (duplicates two writers left): all their live chunks, for when that pack leaves as well
        self.duplicated = {
            p: self.collector.homed(p, self.index.pack_entries(p) or [], self.owner)
            for p, v in self.verdicts.items() if v.action == "repack" and len(v.live) != v.live_count}
        self.written = self._written(self.repacks)
        self.baseline_freed = sum(v.size for v in self.verdicts.values() if v.action in DELETING) - self.written

    def _written(self, repacks: dict[bytes, Segment]) -> int:
        """The bytes of the packs the collector writes when it copies the live chunks of ``repacks``."""
        return sum(repack_layout(repacks, self.chunks.config.pack_target_size).sizes)

    def frees(self, dead: Iterable[bytes]) -> int:
        """The bytes ``gc --min-age 0`` would free beyond what it frees now, if ``dead`` (chunk and
        node ids) were no longer referenced by any live version."""
        return self._price(dead)[0]

    def _price(self, dead: Iterable[bytes]) -> tuple[int, int, int]:
        """``(frees, owned, held)``: what losing ``dead`` frees (see ``frees``), their stored bytes, and
        of those the bytes left in packs gc keeps (they hold live data too: freed after a repack)."""
        self._plan()
        gone: dict[bytes, list[bytes]] = {}
        sizes: dict[bytes, int] = {}  # pack id -> stored bytes of ``dead`` in it
        owned = 0
        with self.index.read() as txn:
            for cid in dead:
                loc = self.index.chunk_location(cid, txn)
                if loc is not None:
                    gone.setdefault(loc.pack_id, []).append(cid)
                    sizes[loc.pack_id] = sizes.get(loc.pack_id, 0) + loc.stored_length
                    owned += loc.stored_length
        changed: dict[bytes, tuple[str, list[PackEntry]]] = {}
        for pack_id, ids in gone.items():
            v = self.verdicts.get(pack_id)
            if v is None or v.action not in ("keep", "repack"):
                continue  # young (not judged), or already leaving without this deletion
            dropped = set(ids)
            entries = self.index.pack_entries(pack_id) or []
            live = [e for e in self.collector.homed(pack_id, entries, self.owner) if e.chunk_id not in dropped]
            dead_bytes = v.size - sum(e.stored_length for e in live)
            now = self.collector.clock()
            action = self.collector.judge(v.size, len(live), dead_bytes, None, float("inf"), now)
            changed[pack_id] = (action, live)
        held = sum(sizes[p] for p, (a, _) in changed.items() if a == "keep")
        deleted = sum(v.size * ((a in DELETING) - (v.action in DELETING))
                      for v, (a, _) in ((self.verdicts[p], c) for p, c in changed.items()))
        leaving = self.leaving | {p for p, (a, _) in changed.items() if a in LEAVING}
        recheck = [p for p in self.duplicated if p not in changed] if len(leaving) > len(self.leaving) else []
        if not recheck and not any(a == "repack" or self.verdicts[p].action == "repack"
                                   for p, (a, _) in changed.items()):
            return deleted, owned, held  # no copy changes
        repacks = dict(self.repacks)
        with self.index.read() as txn:
            def copied(live: list[PackEntry]) -> Segment:
                """What the collector copies: the chunks no staying pack holds too."""
                return Segment([e for e in live if not self.collector.kept_elsewhere(e.chunk_id, leaving, txn)])

            for pack_id, (action, live) in changed.items():
                repacks.pop(pack_id, None)
                if action == "repack":
                    repacks[pack_id] = copied(live)
            for pack_id in recheck:  # their duplicates' other copy may be leaving now
                repacks[pack_id] = copied(self.duplicated[pack_id])
        return deleted - (self._written(repacks) - self.written), owned, held

    def frees_without(self, dropped: set[tuple[str, int]]) -> int:
        """What deleting all of ``dropped`` (dataset name, version) together frees: chunks shared only
        among them count too, so this can exceed the sum of their unique bytes."""
        roots = [bytes.fromhex(v.record["root"]) for ds in self.datasets for v in ds.versions
                 if (ds.name, v.record["version"]) not in dropped]
        marker = Marker(self.chunks, self.catalog)
        marker.mark_all(roots)
        return self.frees(cid for cid in self.owner if cid not in marker.live)

    # the report -------------------------------------------------------------------------------

    def store_figures(self, url: str) -> dict:
        """The store's figures: ``osmo store stats`` and the store section of ``osmo store report``
        (docs/COSTS.md defines every one). Counts and sizes that depend on reading every live
        manifest are ``None`` (unknown) when one cannot be read."""
        self._plan()
        stored = sum(v.size for v in self.verdicts.values())
        live = sum(v.size - v.dead_bytes for v in self.verdicts.values())
        objects = object_bytes = 0
        for info in self.chunks.blob.list_info(""):
            objects += 1
            object_bytes += info.size
        target = self.chunks.config.pack_target_size
        unknown = self.unreadable > 0  # chunks only an unreadable manifest references look dead: unknown
        damaged = sum(1 for ds in self.datasets for v in ds.versions if v.unreadable or v.lost_chunks)
        logical = sum(ds.logical_bytes for ds in self.datasets)

        def known(value):
            return None if unknown else value

        return {
            "url": url, "datasets": len(self.datasets), "versions": sum(len(ds.versions) for ds in self.datasets),
            "chunks": known(len(self.owner) - len(self.nodes)), "manifest_nodes": known(len(self.nodes)),
            "missing_chunks": self.missing, "damaged_versions": damaged,
            "packs": len(self.verdicts), "stored_bytes": stored, "logical_bytes": logical,
            "live_bytes": known(live), "dead_bytes": known(stored - live),
            "reclaimable_bytes": known(self.baseline_freed),
            "unreclaimed_bytes": known(stored - live - self.baseline_freed),
            "dedup_ratio": known(ratio(logical, self.data_raw)),
            "compression_ratio": known(ratio(self.data_raw, self.data_stored)),
            "objects": objects, "object_bytes": object_bytes,
            "requests": {"upload_per_gb": math.ceil(GB / target) + 1,
                         "download_per_gb": math.ceil(GB / min(target, MAX_SPAN))},
        }

    def dataset_figures(self, ds: DatasetUsage, tags: dict[str, int]) -> dict:
        versions = []
        for v in ds.versions:
            rec = v.record
            versions.append({"version": rec["version"], "created": rec["created"],
                             "tags": sorted(t for t, n in tags.items() if n == rec["version"]),
                             "files": rec.get("files"), **v.figures()})
        return {"name": ds.name, **ds.figures(), "versions": versions}
