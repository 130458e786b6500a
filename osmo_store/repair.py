"""``osmo store repair``: damage is found, moved aside, and kept from spreading.

What it does, in an order that a kill at any point leaves safe (a second run finishes the work):

1. **Config.** A damaged or missing ``config`` is written back from ``config-copy`` (the damaged bytes
   are kept under ``quarantine/``); a missing or damaged copy is written from the config.
2. **Events.** Every ``log/`` object is read. A damaged event is copied to ``quarantine/log/<seq>`` and
   replaced, in place, by a ``quarantined`` placeholder event (an atomic put: the sequence stays
   dense, no writer can slip into the gap); a hole in the sequence gets a placeholder created
   exclusively; objects under ``log/`` that are not events are moved to ``quarantine/``.
3. **Packs.** Every pack is read whole (``packcheck.py``). From a damaged pack, each chunk that reads
   back intact and has no intact copy elsewhere is copied into a new pack (salvaged); the pack is
   copied to ``quarantine/packs/...``.
4. **One ``repair`` event** names the quarantined events and packs: every client folds it, drops the
   packs from its index (as a garbage-collection sweep does) and so never reads or deduplicates onto
   them again; a chunk that was lost is stored again by the next upload of the same data.
5. The damaged packs are deleted from ``packs/`` (their copies stay in ``quarantine/``; nothing there
   is ever deleted by osmo).

It reports what it did, the versions that still lack data (with the files), and the events that no
longer apply because they depended on a damaged one. ``dry_run`` only reads and reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from osmo_store.catalog import Catalog
from osmo_store.chunkstore import ChunkStore, PackCopier
from osmo_store.config import CONFIG_COPY_KEY, CONFIG_KEY, StoreConfig
from osmo_store.damage import DamageFinder
from osmo_store.datasets import DatasetLog, current_user, log_key
from osmo_store.errors import AlreadyExistsError, BackendError, FormatVersionError, IntegrityError, NotFoundError
from osmo_store.events import decode_event, encode_event
from osmo_store.maintenance import scan_log
from osmo_store.packcheck import PackCheck, check_pack
from osmo_store.packs import PACK_PREFIX, pack_key

QUARANTINE = "quarantine/"
Progress = Callable[[str, int], Callable[[], None]]


@dataclass
class RepairReport:
    dry_run: bool = False
    config: list[str] = field(default_factory=list)  # what was (or would be) done to the config
    events: list[dict] = field(default_factory=list)  # {key, problem, action}
    packs: list[dict] = field(default_factory=list)  # {key, problem, chunks, salvaged, lost}
    salvaged_chunks: int = 0
    salvaged_bytes: int = 0  # bytes of the new packs the salvaged chunks were copied into
    lost_chunks: int = 0  # chunks of damaged packs with no intact copy left (heal: upload again)
    deleted_packs: int = 0
    damaged_versions: list[dict] = field(default_factory=list)
    depended: list[dict] = field(default_factory=list)  # events that no longer apply: {key, op, dataset, why}
    left: list[str] = field(default_factory=list)  # objects repair could not handle (a person must look)
    event: int | None = None  # sequence number of the repair event
    seconds: float = 0.0

    @property
    def clean(self) -> bool:
        """Nothing is left that repair could not bring back."""
        return not self.damaged_versions and not self.lost_chunks and not self.left

    def to_json(self) -> dict:
        return {**asdict(self), "clean": self.clean}


class Repairer:
    def __init__(self, chunks: ChunkStore, catalog: Catalog, log: DatasetLog,
                 clock: Callable[[], float] = time.time, progress: Progress | None = None) -> None:
        self.chunks = chunks
        self.blob = chunks.blob
        self.index = chunks.index
        self.catalog = catalog
        self.log = log
        self.clock = clock
        self.progress = progress or (lambda label, total: lambda: None)

    def run(self, dry_run: bool = False) -> RepairReport:
        start = time.monotonic()
        report = RepairReport(dry_run=dry_run)
        self._config(report, dry_run)
        quarantined_events = self._events(report, dry_run)
        self.log.sync()
        damaged, leftovers = self._check_packs()
        lost, saved = self._salvage(damaged, report, dry_run)
        if not dry_run:
            if quarantined_events or damaged:
                def build() -> dict:
                    return {"op": "repair", "events": quarantined_events, "packs": [c.pack_id for c in damaged]}
                report.event = self.log.append(build)[0]
            for key in [c.key for c in damaged] + leftovers:
                try:
                    self.blob.delete(key)
                    report.deleted_packs += 1
                except NotFoundError:
                    pass
        report.lost_chunks = len(lost)
        self._damage(report, {c.pack_id for c in damaged}, lost, saved)
        report.seconds = round(time.monotonic() - start, 3)
        return report

    # config ------------------------------------------------------------------------------------

    def _config(self, report: RepairReport, dry_run: bool) -> None:
        found: dict[str, tuple[bytes | None, StoreConfig | None]] = {}
        for key in (CONFIG_KEY, CONFIG_COPY_KEY):
            try:
                data = self.blob.get(key)
            except NotFoundError:
                found[key] = (None, None)
                continue
            try:
                found[key] = (data, StoreConfig.decode(data, key))
            except (IntegrityError, FormatVersionError):
                found[key] = (data, None)
        (config_bytes, config), (copy_bytes, copy) = found[CONFIG_KEY], found[CONFIG_COPY_KEY]
        if config is None and copy is not None:
            report.config.append(f"{CONFIG_KEY}: {'damaged' if config_bytes else 'missing'}; "
                                 f"written back from {CONFIG_COPY_KEY}")
            if not dry_run:
                if config_bytes is not None:
                    self.blob.put(f"{QUARANTINE}{CONFIG_KEY}-{int(self.clock())}", config_bytes)
                self.blob.put(CONFIG_KEY, copy_bytes)
        elif config is not None and (copy is None or copy != config):
            what = "missing" if copy_bytes is None else "damaged" if copy is None else "different"
            report.config.append(f"{CONFIG_COPY_KEY}: {what}; written from {CONFIG_KEY}")
            if not dry_run:
                self.blob.put(CONFIG_COPY_KEY, config_bytes)

    # events ------------------------------------------------------------------------------------

    def _events(self, report: RepairReport, dry_run: bool) -> list[int]:
        """Quarantine damaged events and fill holes; returns their sequence numbers."""
        scan = scan_log(self.blob)
        done = []
        for seq, why in sorted(scan.damaged.items()):
            key = log_key(seq)
            entry = {"key": key, "problem": why,
                     "action": f"moved to {QUARANTINE}{key}; a placeholder takes its place"}
            report.events.append(entry)
            if not dry_run:
                try:
                    self._replace_event(key, why)
                except BackendError as exc:  # e.g. a folder in the event's place: a person must look
                    entry["action"] = f"could not be replaced ({exc}): move it away, then run repair again"
                    report.left.append(key)
                    continue
            done.append(seq)
        for seq in scan.holes:
            key = log_key(seq)
            entry = {"key": key, "problem": "missing (later events exist)", "action": "a placeholder fills the hole"}
            report.events.append(entry)
            if not dry_run:
                try:
                    self.blob.create(key, self._placeholder("missing", key))
                except AlreadyExistsError:  # a writer filled it meanwhile, or something unlisted is there
                    try:
                        decode_event(key, self.blob.get(key))
                    except (BackendError, IntegrityError, NotFoundError) as exc:
                        entry["action"] = f"could not be filled ({exc}): move it away, then run repair again"
                        report.left.append(key)
                        continue
            done.append(seq)
        for key in scan.strays:
            report.events.append({"key": key, "problem": "not an event", "action": f"moved to {QUARANTINE}{key}"})
            if not dry_run:
                self._move_aside(key)
        return done

    def _replace_event(self, key: str, why: str) -> None:
        """Copy a damaged event aside (when it can be read at all), then put the placeholder over it."""
        try:
            self.blob.put(QUARANTINE + key, self.blob.get(key))
        except (BackendError, NotFoundError):
            pass  # nothing readable to keep
        self.blob.put(key, self._placeholder(why, QUARANTINE + key))

    def _placeholder(self, reason: str, where: str) -> bytes:
        return encode_event({"op": "quarantined", "reason": reason[:500], "key": where, "time": self.clock(),
                             "user": current_user(), "nonce": ""})

    def _move_aside(self, key: str) -> None:
        try:
            self.blob.put(QUARANTINE + key, self.blob.get(key))
            self.blob.delete(key)
        except NotFoundError:
            pass

    # packs -------------------------------------------------------------------------------------

    def _check_packs(self) -> tuple[list[PackCheck], list[str]]:
        """Read every pack whole: the damaged ones (data dropped; read again to salvage), and the keys
        of packs an earlier repair quarantined that are still there (deleted now)."""
        self.chunks.refresh_packs(warn=False)
        swept = {pid for pid, (_, gone, _) in self.index.condemned_packs().items() if gone}
        keys = sorted(self.blob.list(PACK_PREFIX))
        damaged, leftovers = [], []
        listed = set(keys)
        for pack_id, _, _ in list(self.index.packs()):  # indexed, but gone from the store
            key = pack_key(pack_id)
            if key not in listed and pack_id not in swept:
                damaged.append(PackCheck(key, pack_id, entries=self.index.pack_entries(pack_id) or [], gone=True,
                                         problems=[f"pack {key} is missing from the store"]))
        tick = self.progress("check packs", len(keys))
        for key in keys:
            check = self.chunks.check_pack(key)
            tick()
            if check.pack_id in swept:
                if self.blob.exists(QUARANTINE + key):
                    leftovers.append(key)
                continue
            if check.pack_id is None:
                damaged.append(check)  # not a pack: moved aside below
            elif not check.ok and not check.gone:
                check.data = None
                damaged.append(check)
        return damaged, leftovers

    def _intact_elsewhere(self, chunk_id: bytes, damaged: set[bytes]) -> bool:
        with self.index.read() as txn:
            return bool(self.index.intact_locations(chunk_id, txn, excluding=damaged))

    def _salvage(self, damaged: list[PackCheck], report: RepairReport,
                 dry_run: bool) -> tuple[set[bytes], set[bytes]]:
        """Copy what can be saved out of the damaged packs and quarantine them; returns the ids of the
        chunks lost (no intact copy anywhere) and of those saved."""
        damaged_ids = {c.pack_id for c in damaged if c.pack_id is not None}
        copier = None if dry_run else PackCopier(self.chunks)
        lost: set[bytes] = set()
        salvaged: set[bytes] = set()
        tick = self.progress("salvage packs", len(damaged))
        for check in damaged:
            tick()
            if check.pack_id is None:
                report.packs.append({"key": check.key, "problem": "; ".join(check.problems), "chunks": 0,
                                     "salvaged": 0, "lost": 0, "missing": False})
                if not dry_run:
                    self._move_aside(check.key)
                continue
            again = check if check.gone else check_pack(self.blob, check.key, check.entries)  # now with the bytes
            saved = 0
            for e in check.entries:
                if self._intact_elsewhere(e.chunk_id, damaged_ids):
                    continue
                if e.chunk_id in check.bad or e.chunk_id in again.bad or again.data is None:
                    lost.add(e.chunk_id)
                    continue
                saved += 1
                salvaged.add(e.chunk_id)
                if copier is not None:
                    copier.add(e.chunk_id, again.stored(e), e.raw_length, e.compression)
            if copier is not None:
                copier.flush()  # durable before the pack leaves
                if again.data is not None:
                    self.blob.put(QUARANTINE + check.key, again.data)
            report.packs.append({"key": check.key, "problem": "; ".join(check.problems), "chunks": len(check.entries),
                                 "salvaged": saved, "lost": sum(1 for e in check.entries if e.chunk_id in lost),
                                 "missing": check.gone})
            report.salvaged_chunks += saved
        if copier is not None:
            report.salvaged_bytes = copier.bytes_written
        damaged[:] = [c for c in damaged if c.pack_id is not None]
        return lost, salvaged

    # what is left ------------------------------------------------------------------------------

    def _damage(self, report: RepairReport, quarantined: set[bytes], lost: set[bytes], saved: set[bytes]) -> None:
        """Versions still lacking data once the repair is (or would be) done, and what depended on
        the damaged events."""
        def is_lost(chunk_id: bytes) -> bool:
            if chunk_id in lost:
                return True
            return chunk_id not in saved and not self._intact_elsewhere(chunk_id, quarantined)

        finder = DamageFinder(self.chunks, lost=is_lost)
        versions = [(ds["name"], rec) for dsid, ds in self.catalog.datasets()
                    for rec in self.catalog.versions(dsid, include_deleted=False)]
        report.damaged_versions = [d.to_json() for d in finder.versions(versions)]
        damaged = self.catalog.damaged_events()
        if damaged:
            first = min(damaged)
            report.depended = [{"key": log_key(seq), "op": op, "dataset": ds, "why": why}
                               for seq, (op, ds, why) in sorted(self.catalog.ignored_events().items()) if seq > first]
