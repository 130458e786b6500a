"""The repository facade: one object that opens a store and offers every operation the CLI needs.

It opens a store where ``location.py`` says it lives (creating the per-user default on first use), and
wires the layers together. Callers above it (the CLI, the sidecar) never touch the layers directly.

The engines of single operations (upload, download, usage, retention, verify, repair, gc) are imported
by the methods that run them: a command starts by loading only what it uses.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from osmo_store.blob import BlobStore, LocalBlobStore, open_blob_store
from osmo_store.catalog import Catalog
from osmo_store.chunkstore import ChunkStore
from osmo_store.config import CONFIG_KEY, StoreConfig
from osmo_store.datasets import DatasetLog
from osmo_store.errors import AlreadyExistsError, IndexDamagedError, IntegrityError, NotFoundError, UsageError
from osmo_store.gc import DEFAULT_REPACK_THRESHOLD
from osmo_store.hashing import hasher
from osmo_store.ids import Ref, parse_ref
from osmo_store.location import (config_with, default_cache_dir, default_store_url, init_store,  # noqa: F401
                                 open_index, open_store_blob, read_config, remove_index, resolve_store)
from osmo_store.manifest import FileEntry, diff_trees, iter_entries, iter_nodes
from osmo_store.transfer.overlap import ProtectedFolders

if TYPE_CHECKING:
    from osmo_store.gc import GcOptions, GcStats
    from osmo_store.repair import RepairReport
    from osmo_store.retention import RetentionPolicy
    from osmo_store.transfer.download import DownloadResult
    from osmo_store.transfer.progress import Progress
    from osmo_store.transfer.upload import UploadRequest, UploadResult
    from osmo_store.usage import UsageScan


class Repository:
    def __init__(self, blob: BlobStore, config: StoreConfig, cache_dir: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.blob = blob
        self.config = config
        self.clock = clock
        index_path = os.path.join(cache_dir or default_cache_dir(), "index", config.store_id)
        self.index = open_index(index_path)
        self.catalog = Catalog(self.index)
        self.log = DatasetLog(blob, self.catalog, clock)
        self.chunks = ChunkStore(blob, self.index, config)

    @classmethod
    def open(cls, url: str | None = None, create: bool = False, cache_dir: str | None = None,
             config: StoreConfig | None = None) -> "Repository":
        """Open the store at ``url``: a configured store name, a URL or a path (default: the
        configured default store, else the per-user store, created on first use)."""
        location, create_default = resolve_store(url)
        create = create or create_default
        blob = open_blob_store(location.url, location.options)
        try:
            stored = read_config(blob)
        except NotFoundError:
            if not create:
                raise NotFoundError(f"no osmo store at {blob.url} (create one with 'osmo store init')") from None
            try:
                stored = init_store(blob, config)
            except AlreadyExistsError:
                stored = StoreConfig.decode(blob.get(CONFIG_KEY))
        repo = cls(blob, stored, cache_dir)
        repo.log.sync()
        return repo

    def close(self) -> None:
        try:
            self.chunks.flush_node_cache()
        except IndexDamagedError:
            pass  # a cache: the nodes are read again next time
        self.index.close()
        if getattr(self.index, "temporary", False):
            shutil.rmtree(self.index.path, ignore_errors=True)
        self.blob.close()

    def discard_index(self) -> str:
        """Close and delete the local index (found damaged in the middle of a command); the next
        command rebuilds it. Returns its path."""
        path = self.index.path
        self.index.close()
        try:
            remove_index(path)
        except OSError:
            pass
        return path

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # datasets ---------------------------------------------------------------------------------

    def upload(self, req: UploadRequest, progress: Progress | None = None,
               workers: int | None = None) -> UploadResult:
        from osmo_store.transfer.upload import Uploader

        uploader = Uploader(self.chunks, self.index, self.catalog, self.log, workers, progress, self.protected())
        return uploader.run(req)

    def download(self, ref: str | Ref, dest: str, include: Sequence[str] = (), exclude: Sequence[str] = (),
                 progress: Progress | None = None, workers: int | None = None) -> tuple[dict, DownloadResult]:
        from osmo_store.transfer.download import Downloader

        ref = parse_ref(ref) if isinstance(ref, str) else ref
        if not dest.strip():
            raise UsageError(f"download destination {dest!r} is empty: give a folder")
        protected = self.protected()
        protected.check(dest, "download destination")
        rec = self.resolve(ref)
        result = Downloader(self.chunks, workers, progress, protected).run(
            bytes.fromhex(rec["root"]), dest, include, exclude, label=f"{ref.name}:{rec['version']}")
        return rec, result

    def protected(self) -> ProtectedFolders:
        """osmo's own folders on this machine, which no upload reads and no download writes: a local
        store's folder and this store's local index (transfer/overlap.py)."""
        folders = [("the store", self.blob.root)] if isinstance(self.blob, LocalBlobStore) else []
        return ProtectedFolders(folders + [("osmo's local index", self.index.path)])

    def resolve(self, ref: str | Ref) -> dict:
        """The version record ``ref`` names now (a number, a tag or the latest): its ``version`` and the rest
        of ``dataset info``'s per-version fields. A missing dataset or version: ``NotFoundError``."""
        _, rec = self.log.resolve(parse_ref(ref) if isinstance(ref, str) else ref)
        return rec

    def entries(self, ref: str | Ref) -> tuple[dict, list[FileEntry]]:
        rec = self.resolve(ref)
        return rec, list(iter_entries(self.chunks.get_tree, bytes.fromhex(rec["root"])))

    def read_file(self, ref: str | Ref, path: str) -> tuple[FileEntry, Iterator[bytes]]:
        """One file of a version and its bytes, chunk by chunk, each chunk checked against its id and the
        whole against the file's BLAKE3 digest at the end (``IntegrityError`` then: the caller must not
        keep what it got). An unknown path: ``NotFoundError``."""
        rec, entries = self.entries(ref)
        entry = next((e for e in entries if e.path == path), None)
        if entry is None:
            raise NotFoundError(f"version {rec['version']} has no file {path!r}")

        def chunks() -> Iterator[bytes]:
            digest = hasher()
            for chunk_id, _length in entry.chunks:
                data = self.chunks.read_chunk(chunk_id)
                digest.update(data)
                yield data
            if digest.digest() != entry.digest:
                raise IntegrityError(f"file {path!r} of version {rec['version']} does not match its digest")
        return entry, chunks()

    def tree_shape(self, ref: str | Ref) -> list[dict]:
        rec = self.resolve(ref)
        return [{"id": nid.hex(), "level": level, "items": len(items)}
                for nid, level, items in iter_nodes(self.chunks.get_tree, bytes.fromhex(rec["root"]))]

    def diff(self, a: str, b: str) -> list[tuple[FileEntry | None, FileEntry | None]]:
        ra, rb = self.resolve(a), self.resolve(b)
        return list(diff_trees(self.chunks.get_tree, bytes.fromhex(ra["root"]), bytes.fromhex(rb["root"])))

    def diff_summary(self, a: str, b: str) -> dict:
        """``diff`` as ``osmo dataset diff --json`` prints it: ``added``/``removed`` (path, size), ``changed``
        (path, old_size, new_size) and the byte sums ``bytes_added``, ``bytes_removed``, ``bytes_changed``."""
        out: dict = {"added": [], "removed": [], "changed": []}
        for old, new in self.diff(a, b):
            if old is None:
                out["added"].append({"path": new.path, "size": new.size})
            elif new is None:
                out["removed"].append({"path": old.path, "size": old.size})
            else:
                out["changed"].append({"path": new.path, "old_size": old.size, "new_size": new.size})
        out["bytes_added"] = sum(f["size"] for f in out["added"])
        out["bytes_removed"] = sum(f["size"] for f in out["removed"])
        out["bytes_changed"] = sum(f["new_size"] for f in out["changed"])
        return out

    def describe(self, name: str) -> dict:
        """A dataset with its versions (deleted ones included, marked) and tags. A version's
        ``new_bytes`` is what its upload added to the store (its event's ``stored_bytes``); its
        ``usage`` holds the figures of docs/COSTS.md (live versions only)."""
        from osmo_store.damage import DamageFinder

        dsid = self.log.dataset_id(name)
        ds = self.catalog.dataset(dsid)
        tags = self.catalog.tags(dsid)
        versions = []
        for rec in self.catalog.versions(dsid):
            rec = dict(rec)
            rec["new_bytes"] = rec.pop("stored_bytes", None)
            versions.append({**rec, "status": "deleted" if rec["deleted"] else "ready",
                             "tags": sorted(t for t, v in tags.items() if v == rec["version"])})
        live = [v for v in versions if not v["deleted"]]
        if live:
            live[-1]["tags"] = sorted(live[-1]["tags"] + ["latest"])
        usage = next(d for d in self.usage(with_unique=True).datasets if d.dsid == dsid)
        figures = {v.record["version"]: v.figures() for v in usage.versions}
        finder = DamageFinder(self.chunks)
        for v in live:
            v["usage"] = figures[v["version"]]
            if v["usage"].get("damaged"):
                v["status"] = "damaged"
                v["damage"] = finder.version(ds["name"], v).to_json()
        return {"name": ds["name"], "created": ds["created"], "labels": ds["labels"],
                "versions": versions, "tags": tags, "usage": usage.figures()}

    def list_datasets(self) -> list[dict]:
        """Every dataset with its latest version and its sizes: ``logical_bytes`` of the latest
        version, ``logical_bytes_all`` of all live versions, ``stored_bytes`` the distinct chunks
        they reference as stored, and the dedup and compression ratios (docs/COSTS.md)."""
        scan = self.usage(with_unique=False)
        usage = {ds.dsid: ds for ds in scan.datasets}
        out = []
        for dsid, ds in self.catalog.datasets():
            live = self.catalog.versions(dsid, include_deleted=False)
            latest = live[-1] if live else None
            figures = usage[dsid].figures()
            out.append({
                "name": ds["name"], "versions": len(live),
                "latest": latest["version"] if latest else None,
                "logical_bytes": latest["logical_bytes"] if latest else 0,
                "logical_bytes_all": figures["logical_bytes"],
                "stored_bytes": figures["stored_bytes"],
                "dedup_ratio": figures["dedup_ratio"], "compression_ratio": figures["compression_ratio"],
                "updated": latest["created"] if latest else ds["created"],
                "labels": ds["labels"],
            })
        return out

    def usage(self, with_unique: bool = True, repack_threshold: float = DEFAULT_REPACK_THRESHOLD) -> UsageScan:
        """Who owns which stored bytes (osmo_store/usage.py); ``with_unique`` also prices deletions."""
        from osmo_store.usage import UsageScan

        scan = UsageScan(self.chunks, self.catalog, self.log, repack_threshold, self.clock)
        scan.scan(with_unique)
        return scan

    def report(self, dataset: str | None = None, repack_threshold: float = DEFAULT_REPACK_THRESHOLD) -> dict:
        """The storage report without prices (the CLI adds ``costs``): docs/COSTS.md."""
        if dataset is not None:
            self.log.dataset_id(dataset)  # a one-line error for a dataset that does not exist
        scan = self.usage(True, repack_threshold)
        return {"generated": self.clock(), "store": scan.store_figures(self.blob.url),
                "datasets": [scan.dataset_figures(ds, self.catalog.tags(ds.dsid)) for ds in scan.datasets
                             if dataset is None or ds.name == dataset]}

    def retain(self, name: str, policy: RetentionPolicy, dry_run: bool = False,
               repack_threshold: float = DEFAULT_REPACK_THRESHOLD) -> dict:
        """Delete the versions of ``name`` no rule of ``policy`` keeps (osmo_store/retention.py).

        Reports every live version with the reasons it is kept, or the bytes deleting it alone would
        free, and ``frees_bytes``: what deleting all of them frees once garbage is collected. The
        policy is applied again against the newest state when the delete is committed.
        """
        from osmo_store.retention import decide

        policy.validate()
        dsid = self.log.dataset_id(name)
        scan = self.usage(True, repack_threshold)
        ds = next(d for d in scan.datasets if d.dsid == dsid)
        reasons = decide(policy, [v.record for v in ds.versions], self.catalog.tags(dsid), self.clock())
        rows = [{"version": v.record["version"], "created": v.record["created"],
                 "kept_by": reasons[v.record["version"]], "unique_bytes": v.unique_bytes,
                 "owned_bytes": v.owned_bytes}
                for v in ds.versions]
        drop = {r["version"] for r in rows if not r["kept_by"]}
        frees = scan.frees_without({(name, n) for n in drop}) if drop else 0
        deleted: list[int] = []
        if not dry_run and drop:
            def choose(current: str) -> list[int]:
                live = self.catalog.versions(current, include_deleted=False)
                now = decide(policy, live, self.catalog.tags(current), self.clock())
                return [n for n, why in now.items() if not why and n in drop]

            deleted = self.log.delete_versions(name, choose)
        return {"dataset": name, "policy": policy.describe(), "dry_run": dry_run, "versions": rows,
                "delete": sorted(drop), "deleted": deleted, "frees_bytes": frees}

    # store ------------------------------------------------------------------------------------

    def verify(self, read_data: bool = False, on_pack: Callable[[], None] | None = None):
        from osmo_store import maintenance

        return maintenance.verify(self.chunks, self.catalog, self.log, read_data, on_pack)

    def reindex(self, on_pack: Callable[[], None] | None = None) -> list[str]:
        from osmo_store import maintenance

        return maintenance.reindex(self.chunks, self.index, self.log, on_pack)

    def stats(self) -> dict:
        """The store's figures (``osmo store stats``): the store section of the report, computed the
        same way (osmo_store/usage.py; docs/COSTS.md), without pricing deletions."""
        return self.usage(with_unique=False).store_figures(self.blob.url)

    def repair(self, dry_run: bool = False,
               progress: Callable[[str, int], Callable[[], None]] | None = None) -> RepairReport:
        """Quarantine damaged objects, salvage what is intact, report what is lost (osmo_store/repair.py)."""
        from osmo_store.repair import Repairer

        return Repairer(self.chunks, self.catalog, self.log, self.clock, progress).run(dry_run)

    def gc(self, options: GcOptions | None = None, dry_run: bool = False,
           progress: Callable[[str, int], Callable[[], None]] | None = None) -> GcStats:
        """Collect garbage (docs/GC.md) with ``options`` (default: ``GcOptions()``); with ``dry_run`` only
        plan and report."""
        from osmo_store.gc import Collector, GcOptions

        return Collector(self.chunks, self.catalog, self.log, options or GcOptions(), progress=progress).run(dry_run)

    def pack_count(self) -> int:
        return sum(1 for _ in self.blob.list("packs/"))
