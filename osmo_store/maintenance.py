"""Store maintenance: verify, reindex and stats.

``verify`` checks that every live version can be restored: the log folds, every manifest node is
present and intact, every chunk a live version needs is indexed in a pack that exists, and (with
``read_data``) every pack's bytes match its name and every chunk its id. ``reindex`` rebuilds the
local index from the blob store alone. ``stats`` sums up sizes and counts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from osmo_store.catalog import Catalog
from osmo_store.chunkstore import ChunkStore
from osmo_store.datasets import DatasetLog
from osmo_store.errors import OsmoError
from osmo_store.index import LocalIndex
from osmo_store.manifest import LEAF, iter_nodes
from osmo_store.packs import PACK_PREFIX, pack_key


@dataclass
class VerifyReport:
    versions: int = 0
    manifest_nodes: int = 0
    chunks: int = 0
    packs: int = 0
    packs_read: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


def verify(chunks: ChunkStore, catalog: Catalog, log: DatasetLog, read_data: bool = False,
           on_pack: Callable[[], None] | None = None) -> VerifyReport:
    report = VerifyReport()
    problem = report.problems.append
    try:
        log.sync()
    except OsmoError as exc:
        problem(f"event log: {exc}")
    chunks.refresh_packs(warn=False)  # verify reports unreadable packs as problems
    stored = set(chunks.blob.list(PACK_PREFIX))
    indexed = {pack_key(pid): size for pid, size, _ in chunks.index.packs()}
    report.packs = len(stored)
    for key in sorted(set(indexed) - stored):
        problem(f"{key}: in the index but missing from the store")
    seen: set[bytes] = set()
    for dsid, ds in catalog.datasets():
        for rec in catalog.versions(dsid, include_deleted=False):
            report.versions += 1
            where = f"{ds['name']}:{rec['version']}"
            try:
                for node_id, level, items in iter_nodes(chunks.read_chunk, bytes.fromhex(rec["root"])):
                    report.manifest_nodes += 1
                    if level != LEAF:
                        continue
                    for entry in items:
                        for cid, _ in entry.chunks:
                            if cid in seen:
                                continue
                            seen.add(cid)
                            loc = chunks.index.chunk_location(cid)
                            if loc is None:
                                problem(f"{where} {entry.path}: chunk {cid.hex()[:16]} is not in any pack")
                            elif pack_key(loc.pack_id) not in stored:
                                problem(f"{where} {entry.path}: pack {pack_key(loc.pack_id)} is missing")
            except OsmoError as exc:
                problem(f"{where}: {exc}")
    report.chunks = len(seen)
    for key in sorted(stored):
        try:
            if read_data:
                chunks.verify_pack(key)
                report.packs_read += 1
            else:
                _, size, _ = chunks.read_pack_index(key)
                if key in indexed and indexed[key] != size:
                    problem(f"{key}: size {size} differs from the index ({indexed[key]})")
        except OsmoError as exc:
            problem(str(exc))
        if on_pack:
            on_pack()
    return report


def reindex(chunks: ChunkStore, index: LocalIndex, log: DatasetLog,
            on_pack: Callable[[], None] | None = None) -> list[str]:
    """Rebuild the index and catalog from the blob store; returns warnings (unreadable packs)."""
    index.clear()
    warnings = []
    for key in chunks.blob.list(PACK_PREFIX):
        try:
            pack_id, size, entries = chunks.read_pack_index(key)
            index.add_pack(pack_id, size, entries)
        except OsmoError as exc:
            warnings.append(f"skipped {key}: {exc}")
        if on_pack:
            on_pack()
    log.sync()
    return warnings


def stats(chunks: ChunkStore, catalog: Catalog) -> dict:
    packs = list(chunks.index.packs())
    counts = chunks.index.counts()
    datasets = catalog.datasets()
    live = [v for dsid, _ in datasets for v in catalog.versions(dsid, include_deleted=False)]
    stored = sum(size for _, size, _ in packs)
    logical = sum(v["logical_bytes"] for v in live)
    return {
        "store": chunks.blob.url,
        "datasets": len(datasets),
        "versions": len(live),
        "packs": len(packs),
        "chunks": counts["chunks"],
        "stored_bytes": stored,
        "logical_bytes": logical,
        "dedup_ratio": round(logical / stored, 3) if stored else None,
    }
