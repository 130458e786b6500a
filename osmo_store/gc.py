"""Garbage collection: delete packs no live version needs, while other machines keep writing.

The protocol (docs/GC.md) works in two phases recorded in the event log, so that every writer sees
them in the same order as its own commits:

1. **Condemn.** Mark every chunk and manifest node reachable from a live version. A pack older than
   ``min_age`` with no live chunk is condemned; one whose dead share reaches ``repack_threshold``
   first has its live chunks copied into new packs, then is condemned. A ``gc`` event names them.
   From then on uploads do not reference chunks held only by condemned packs: they store them again,
   and an upload that referenced one before it saw the event copies it at commit time.
2. **Sweep.** Packs condemned at least ``min_age`` ago are named in the ``sweep`` of a later ``gc``
   event, checked once more against the live versions, and deleted. A sweep interrupted half-way is
   finished by the next run (packs already swept are deleted again).

Nothing here deletes a pack that is not named in a committed sweep, so a kill at any point leaves
every committed version intact. ``plan`` computes what a run would do without changing anything
(``--dry-run`` and the storage report use it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from osmo_store.blob import ObjectInfo
from osmo_store.catalog import Catalog
from osmo_store.chunkstore import ChunkStore, PackCopier, decode_chunk
from osmo_store.datasets import DatasetLog
from osmo_store.errors import IntegrityError, NotFoundError, OsmoError
from osmo_store.manifest import LEAF, decode_node
from osmo_store.packlayout import PackLayout, Segment
from osmo_store.packs import PACK_PREFIX, PackEntry, pack_id_from_key, pack_key

DEFAULT_MIN_AGE = 3600.0
LEAVING = ("condemn", "repack", "waiting", "sweep", "resweep")  # verdicts of packs on their way out
DEFAULT_REPACK_THRESHOLD = 0.5
TEMPORARY_MIN_AGE = 600.0  # a temporary file younger than this may still be being written


@dataclass(frozen=True)
class GcOptions:
    min_age: float = DEFAULT_MIN_AGE
    repack_threshold: float = DEFAULT_REPACK_THRESHOLD  # dead share of a pack's bytes that triggers a repack


@dataclass
class GcStats:
    """What a run found and did (sizes in bytes as stored). The store's figures carry the names the
    storage report and ``osmo store stats`` give them (docs/COSTS.md): ``versions``, ``chunks`` and
    ``manifest_nodes`` live versions reference, ``packs`` and ``stored_bytes`` (every pack), and of
    those bytes ``live_bytes`` and ``dead_bytes`` (the rest: unreferenced chunks, pack framing)."""

    versions: int = 0
    chunks: int = 0  # distinct file-data chunks live versions reference
    manifest_nodes: int = 0  # distinct manifest nodes of live versions
    live_bytes: int = 0
    dead_bytes: int = 0
    packs: int = 0
    stored_bytes: int = 0
    packs_kept: int = 0
    bytes_kept: int = 0
    dead_bytes_kept: int = 0  # dead chunks left in kept packs (below the repack threshold, or too young)
    packs_young: int = 0  # spared: newer than min-age
    packs_condemned: int = 0  # condemned by this run (deleted by a later sweep)
    bytes_condemned: int = 0
    packs_repacked: int = 0  # of those condemned, packs whose live chunks were copied first
    bytes_repacked_live: int = 0  # live bytes copied out of them
    packs_written: int = 0  # new packs of repacks (in a dry run: the packs it would write)
    bytes_written: int = 0
    packs_waiting: int = 0  # condemned earlier, waiting for min-age before the sweep
    bytes_waiting: int = 0
    packs_deleted: int = 0  # swept (deleted) by this run
    bytes_deleted: int = 0
    freed_bytes: int = 0  # bytes_deleted - bytes_written: what the run takes off the store (with --min-age 0,
    #                       the store's reclaimable_bytes)
    temporaries_removed: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    events: list[int] = field(default_factory=list)  # log sequence numbers of this run's gc events

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class PackVerdict:
    pack_id: bytes
    size: int
    action: str  # keep | young | condemn | repack | waiting | sweep | resweep
    live: list[PackEntry]  # the live chunks it is home to, kept only for packs whose chunks are copied
    dead_bytes: int
    live_count: int = 0  # how many live chunks it is home to


class Marker:
    """The set of live chunk and node ids, grown version by version (incrementally on new events)."""

    def __init__(self, chunks: ChunkStore, catalog: Catalog) -> None:
        self.chunks = chunks
        self.catalog = catalog
        self.live: set[bytes] = set()
        self._nodes: set[bytes] = set()
        self.versions = 0

    def live_roots(self) -> list[bytes]:
        return [bytes.fromhex(v["root"]) for dsid, _ in self.catalog.datasets()
                for v in self.catalog.versions(dsid, include_deleted=False)]

    def mark_all(self, roots: list[bytes] | None = None) -> set[bytes]:
        """Mark from every live version's root (or from ``roots``); returns the ids that became live."""
        roots = self.live_roots() if roots is None else roots
        self.versions = len(roots)
        added: set[bytes] = set()
        stack = [r for r in roots if r not in self._nodes]
        while stack:
            node_id = stack.pop()
            if node_id in self._nodes:
                continue
            self._nodes.add(node_id)
            self._add(node_id, added)
            level, items = decode_node(node_id, self.chunks.get_tree(node_id))
            if level == LEAF:
                for entry in items:
                    for cid, _ in entry.chunks:
                        self._add(cid, added)
            else:
                stack.extend(r.node_id for r in items if r.node_id not in self._nodes)
        return added

    def _add(self, cid: bytes, added: set[bytes]) -> None:
        if cid not in self.live:
            self.live.add(cid)
            added.add(cid)


def repack_layout(repacks: dict[bytes, Segment], target: int) -> PackLayout:
    """The new packs repacking writes (computed, not written): the live chunks of each repacked pack
    copied in pack id order, as ``Collector`` copies them. ``dry_run`` and the storage report use it."""
    layout = PackLayout(target)
    for pack_id in sorted(repacks):
        layout.extend(repacks[pack_id])
    layout.close()
    return layout


class Replan(Exception):
    """Internal: another garbage collection committed first; plan again from the new state."""


class Collector:
    def __init__(self, chunks: ChunkStore, catalog: Catalog, log: DatasetLog, options: GcOptions = GcOptions(),
                 clock: Callable[[], float] = time.time,
                 progress: Callable[[str, int], Callable[[], None]] | None = None) -> None:
        self.chunks = chunks
        self.index = chunks.index
        self.catalog = catalog
        self.log = log
        self.options = options
        self.clock = clock
        self.progress = progress or (lambda label, total: lambda: None)

    # planning ---------------------------------------------------------------------------------

    def _listing(self) -> dict[bytes, ObjectInfo]:
        out = {}
        for info in self.chunks.blob.list_info(PACK_PREFIX):
            try:
                out[pack_id_from_key(info.key)] = info
            except IntegrityError:
                continue  # not a pack: verify reports it, collection leaves it alone
        return out

    def plan(self, live: Container[bytes], stats: GcStats) -> list[PackVerdict]:
        """Classify every pack in the store against the ``live`` chunk and node ids (no change is made)."""
        now = self.clock()
        self.chunks.refresh_packs()
        listing = self._listing()
        states = self.index.condemned_packs()
        verdicts = []
        tick = self.progress("plan packs", len(listing))
        for pack_id, info in sorted(listing.items()):
            tick()
            stats.packs += 1
            stats.stored_bytes += info.size
            state = states.get(pack_id)
            if state is not None and state[1]:
                verdicts.append(PackVerdict(pack_id, info.size, "resweep", [], info.size))
                continue
            entries = self.index.pack_entries(pack_id)
            if entries is None:  # written after our listing of new packs: too new to judge
                verdicts.append(PackVerdict(pack_id, info.size, "young", [], 0))
                continue
            homed = self.homed(pack_id, entries, live)
            dead = info.size - sum(e.stored_length for e in homed)
            action = self.judge(info.size, len(homed), dead, None if state is None else state[2],
                                now - info.modified, now)
            # only packs whose live chunks are copied keep their entries: memory is per live chunk
            verdicts.append(PackVerdict(pack_id, info.size, action, homed if action in ("sweep", "repack") else [],
                                        dead, len(homed)))
        self._skip_copies_kept_elsewhere(verdicts)
        return verdicts

    def _skip_copies_kept_elsewhere(self, verdicts: list[PackVerdict]) -> None:
        """A repack copies only the chunks no staying pack holds too (a collection killed after its
        copies, or two writers, leave such duplicates): copying them again would leave a new pack
        that the next collection finds redundant, so one run would not reach a state the next keeps."""
        leaving = {v.pack_id for v in verdicts if v.action in LEAVING}
        with self.index.read() as txn:
            for v in verdicts:
                if v.action == "repack" and v.live:
                    v.live = [e for e in v.live if not self.kept_elsewhere(e.chunk_id, leaving, txn)]

    def kept_elsewhere(self, chunk_id: bytes, leaving: set[bytes], txn) -> bool:
        """Whether a pack that stays (live, not in ``leaving``) holds an intact copy of the chunk."""
        return any(self.index.pack_state(loc.pack_id, txn) == "live"
                   for loc in self.index.intact_locations(chunk_id, txn, excluding=leaving))

    def judge(self, size: int, live_count: int, dead: int, condemned_at: float | None, age: float,
              now: float) -> str:
        """The action for one pack not yet swept: what ``plan`` decides (the report asks it too)."""
        opts = self.options
        if condemned_at is not None:
            return "sweep" if now - condemned_at >= opts.min_age else "waiting"
        if age < opts.min_age:
            return "young"
        if not live_count:
            return "condemn"
        if dead >= opts.repack_threshold * size:
            return "repack"
        return "keep"

    def homed(self, pack_id: bytes, entries: list[PackEntry], live: Container[bytes]) -> list[PackEntry]:
        """The live entries this pack is the home of (a live chunk in two packs counts in one)."""
        out = []
        seen = set()
        with self.index.read() as txn:
            for e in entries:
                if e.chunk_id not in live or e.chunk_id in seen:
                    continue
                loc = self.index.chunk_location(e.chunk_id, txn)
                if loc is not None and loc.pack_id == pack_id:
                    out.append(e)
                    seen.add(e.chunk_id)
        return out

    @staticmethod
    def tally(verdicts: list[PackVerdict], stats: GcStats, sweep_at_once: bool) -> None:
        """Sum the verdicts up; with no margin (``sweep_at_once``) condemned packs count as deleted too."""
        for v in verdicts:
            live_bytes = v.size - v.dead_bytes
            stats.live_bytes += live_bytes
            stats.dead_bytes += v.dead_bytes
            if v.action in ("keep", "young"):
                stats.packs_kept += 1
                stats.bytes_kept += v.size
                stats.dead_bytes_kept += v.dead_bytes
                stats.packs_young += v.action == "young"
            elif v.action in ("condemn", "repack"):
                stats.packs_condemned += 1
                stats.bytes_condemned += v.size
                if v.action == "repack":
                    stats.packs_repacked += 1
                    stats.bytes_repacked_live += live_bytes
                if sweep_at_once:
                    stats.packs_deleted += 1
                    stats.bytes_deleted += v.size
            elif v.action == "waiting":
                stats.packs_waiting += 1
                stats.bytes_waiting += v.size
            else:  # sweep, resweep
                stats.packs_deleted += 1
                stats.bytes_deleted += v.size

    # running ----------------------------------------------------------------------------------

    def run(self, dry_run: bool = False) -> GcStats:
        start = time.monotonic()
        for _ in range(5):
            stats = GcStats(dry_run=dry_run)
            self.log.sync()
            marker = Marker(self.chunks, self.catalog)
            try:
                marker.mark_all()
            except (NotFoundError, IntegrityError) as exc:
                raise IntegrityError(f"garbage collection needs every live version readable, and one is not ({exc}); "
                                     "see 'osmo store verify', then 'osmo store repair', and upload that data "
                                     "again or delete the damaged version") from None
            verdicts = self.plan(marker.live, stats)
            stats.versions = marker.versions
            stats.manifest_nodes = len(marker._nodes)
            stats.chunks = len(marker.live) - stats.manifest_nodes
            self.tally(verdicts, stats, self.options.min_age <= 0)
            if dry_run:
                sizes = repack_layout({v.pack_id: Segment(v.live) for v in verdicts if v.action == "repack"},
                                      self.chunks.config.pack_target_size).sizes
                stats.packs_written, stats.bytes_written = len(sizes), sum(sizes)
                break
            try:
                self._execute(marker, verdicts, stats)
            except Replan:
                continue
            break
        else:
            raise OsmoError("garbage collection kept racing other collections; run it again")
        stats.freed_bytes = stats.bytes_deleted - stats.bytes_written
        stats.seconds = round(time.monotonic() - start, 3)
        return stats

    def _execute(self, marker: Marker, verdicts: list[PackVerdict], stats: GcStats) -> None:
        condemn = [v for v in verdicts if v.action in ("condemn", "repack")]
        sweep = [v for v in verdicts if v.action == "sweep"]
        copier = PackCopier(self.chunks)
        self._copy_live([v for v in condemn if v.action == "repack"], copier)
        self._copy_needy(sweep, copier)
        copier.flush()
        stats.packs_written, stats.bytes_written = len(copier.packs), copier.bytes_written
        gc_seen = self.catalog.gc_seq()
        ids_condemn = [v.pack_id for v in condemn]
        ids_sweep = [v.pack_id for v in sweep]
        if ids_condemn or ids_sweep:
            seq, event = self._commit(marker, gc_seen, ids_condemn, ids_sweep, copier)
            stats.events.append(seq)
            ids_condemn, ids_sweep = event["condemn"], event["sweep"]
            self._recount(verdicts, set(ids_condemn), set(ids_sweep), stats, self.options.min_age <= 0)
        if self.options.min_age <= 0 and ids_condemn:  # no margin asked for: sweep them right away
            gc_seen = self.catalog.gc_seq()
            seq, event = self._commit(marker, gc_seen, [], ids_condemn, copier)
            stats.events.append(seq)
            ids_sweep = ids_sweep + event["sweep"]
            kept = set(ids_condemn) - set(event["sweep"])  # newly live at the last moment: deleted later
            stats.packs_deleted -= len(kept)
            stats.bytes_deleted -= sum(v.size for v in verdicts if v.pack_id in kept)
            stats.packs_waiting += len(kept)
            stats.bytes_waiting += sum(v.size for v in verdicts if v.pack_id in kept)
        resweep = [v.pack_id for v in verdicts if v.action == "resweep"]
        self._delete(ids_sweep + resweep)
        stats.temporaries_removed = self.chunks.blob.remove_temporaries(
            self.clock() - max(self.options.min_age, TEMPORARY_MIN_AGE))

    def _copy_live(self, repack: list[PackVerdict], copier: PackCopier) -> None:
        tick = self.progress("repack packs", len(repack))
        for v in repack:
            key = pack_key(v.pack_id)
            data = memoryview(self.chunks.blob.get(key))
            for e in v.live:
                stored = bytes(data[e.offset:e.offset + e.stored_length])
                decode_chunk(e.chunk_id, stored, e.raw_length, e.compression, key)
                copier.add(e.chunk_id, stored, e.raw_length, e.compression)
            tick()

    def _copy_needy(self, sweep: Iterable[PackVerdict], copier: PackCopier) -> None:
        """Live chunks a pack about to be swept holds with no usable copy elsewhere (a writer that
        did not follow the protocol, or a condemnation by a collector with a stale view): copy."""
        for v in sweep:
            needy = self.chunks.unusable(e.chunk_id for e in v.live)
            if needy:
                self.chunks.refresh_packs()
                needy = set(self.chunks.unusable(needy))
            for e in v.live:
                if e.chunk_id in needy:
                    where, stored = self.chunks.read_stored(e.chunk_id, self.index.chunk_location(e.chunk_id))
                    copier.add(e.chunk_id, stored, where.raw_length, where.compression)

    def _commit(self, marker: Marker, gc_seen: int, condemn: list[bytes], sweep: list[bytes],
                copier: PackCopier) -> tuple[int, dict]:
        """Append the gc event, re-checking against versions committed since the mark."""
        final: dict[str, list[bytes]] = {"condemn": condemn, "sweep": sweep}

        def build() -> dict:
            if self.catalog.gc_seq() != gc_seen:
                raise Replan()
            added = marker.mark_all()  # versions committed since the mark (usually none)
            if added:
                leaving = set(final["condemn"]) | set(final["sweep"])
                final.update(condemn=[p for p in final["condemn"] if not self._needs(p, added, leaving)],
                             sweep=[p for p in final["sweep"] if not self._needs(p, added, leaving)])
            return {"op": "gc", "condemn": list(final["condemn"]), "sweep": list(final["sweep"]),
                    "live_chunks": len(marker.live)}

        return self.log.append(build)

    def _needs(self, pack_id: bytes, added: set[bytes], leaving: set[bytes]) -> bool:
        """Whether a pack holds a newly live chunk with no usable copy outside the ``leaving`` packs."""
        fresh = [e.chunk_id for e in self.index.pack_entries(pack_id) or [] if e.chunk_id in added]
        if not fresh:
            return False
        self.chunks.refresh_packs()  # a writer's rescue copies may be new to this index
        with self.index.read() as txn:
            for cid in fresh:
                loc = self.index.usable_location(cid, txn)
                if loc is None or loc.pack_id in leaving:
                    return True
        return False

    @staticmethod
    def _recount(verdicts: list[PackVerdict], condemned: set[bytes], swept: set[bytes], stats: GcStats,
                 sweep_at_once: bool) -> None:
        """Packs dropped from the event at the last moment (newly live) are kept after all."""
        for v in verdicts:
            if v.action in ("condemn", "repack") and v.pack_id not in condemned:
                stats.packs_condemned -= 1
                stats.bytes_condemned -= v.size
                stats.packs_kept += 1
                stats.bytes_kept += v.size
                if sweep_at_once:
                    stats.packs_deleted -= 1
                    stats.bytes_deleted -= v.size
            if v.action == "sweep" and v.pack_id not in swept:
                stats.packs_deleted -= 1
                stats.bytes_deleted -= v.size
                stats.packs_waiting += 1
                stats.bytes_waiting += v.size

    def _delete(self, pack_ids: list[bytes]) -> None:
        tick = self.progress("delete packs", len(pack_ids))
        blob = self.chunks.blob

        def delete(pid: bytes) -> None:
            blob.delete(pack_key(pid))

        with ThreadPoolExecutor(max(1, blob.concurrency)) as ex:
            for _ in ex.map(delete, pack_ids):
                tick()
