"""Store maintenance: verify and reindex.

``verify`` checks what the store holds, not what the local index remembers: the config and its copy,
every event of the log (damaged ones and holes are named), every pack (its footer; with
``read_data`` its bytes against its name and every chunk against its id), and that every live
version can be restored (every manifest node readable, every chunk in a pack the store lists, not
known to be damaged). Damaged versions are reported with the files that lost data. Its counts carry
the names and definitions of the store's figures (docs/COSTS.md): ``versions`` live, the distinct
``chunks`` and ``manifest_nodes`` they reference, ``packs`` in the store. ``reindex`` rebuilds the
local index from the blob store alone. (``osmo store stats`` is ``usage.UsageScan.store_figures``.)
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from osmo_store.blob import BlobStore
from osmo_store.catalog import Catalog
from osmo_store.chunkstore import ChunkStore
from osmo_store.config import CONFIG_COPY_KEY, CONFIG_KEY, StoreConfig
from osmo_store.damage import DamageFinder
from osmo_store.datasets import LOG_PREFIX, DatasetLog, log_key
from osmo_store.errors import (BackendError, FormatVersionError, IntegrityError, NotFoundError, OsmoError,
                               UnavailableError)
from osmo_store.events import decode_event
from osmo_store.index import LocalIndex
from osmo_store.manifest import LEAF, decode_node
from osmo_store.packs import PACK_PREFIX, pack_id_from_key, pack_key


@dataclass
class VerifyReport:
    versions: int = 0  # live versions
    manifest_nodes: int = 0  # distinct manifest nodes of live versions (read from the store)
    chunks: int = 0  # distinct file-data chunks live versions reference
    packs: int = 0  # pack objects in the store (those waiting to be deleted included)
    packs_read: int = 0  # of those, read in full (--read-data)
    events: int = 0  # log events
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    damaged_versions: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {**self.__dict__, "ok": self.ok}


@dataclass
class LogScan:
    """What a listing and a read of every ``log/`` object found."""

    last: int = 0
    damaged: dict[int, str] = field(default_factory=dict)  # seq -> why
    holes: list[int] = field(default_factory=list)  # missing sequence numbers below the last
    strays: list[str] = field(default_factory=list)  # keys under log/ that are not events
    events: int = 0


def scan_log(blob: BlobStore) -> LogScan:
    """Read the whole log from the store (every event, not what the catalog folded)."""
    scan = LogScan()
    seqs = set()
    for key in blob.list(LOG_PREFIX):
        name = key[len(LOG_PREFIX):]
        if len(name) == 12 and name.isascii() and name.isdigit() and int(name) >= 1:
            seqs.add(int(name))
        else:
            scan.strays.append(key)
    scan.last = max(seqs, default=0)
    scan.holes = [s for s in range(1, scan.last + 1) if s not in seqs]
    def check(seq: int) -> str | None:
        """Why the event is damaged, or None (or ``""`` when it vanished meanwhile)."""
        try:
            decode_event(log_key(seq), blob.get(log_key(seq)))
        except IntegrityError as exc:
            return str(exc)
        except NotFoundError:
            return ""  # cannot happen to an event, except by damage: the next scan says so
        except FormatVersionError:
            pass  # the fold refuses the store with that message
        except BackendError as exc:  # a local file that cannot be read (see DatasetLog._get_event)
            if not blob.local or isinstance(exc, UnavailableError):
                raise
            return f"event {log_key(seq)} cannot be read ({exc})"
        return None

    with ThreadPoolExecutor(max(1, blob.concurrency)) as pool:  # object stores: many reads in flight
        for seq, why in zip(sorted(seqs), pool.map(check, sorted(seqs))):
            if why == "":
                continue
            if why is not None:
                scan.damaged[seq] = why
            scan.events += 1
    return scan


def check_config(blob: BlobStore) -> tuple[list[str], list[str]]:
    """``(problems, notes)`` of the config and its copy."""
    problems, notes = [], []
    found = {}
    for key in (CONFIG_KEY, CONFIG_COPY_KEY):
        try:
            found[key] = StoreConfig.decode(blob.get(key), key)
        except NotFoundError:
            (notes if key == CONFIG_COPY_KEY else problems).append(f"{key}: missing")
        except (IntegrityError, FormatVersionError) as exc:
            problems.append(f"{key}: {exc}")
    if len(found) == 2 and found[CONFIG_KEY] != found[CONFIG_COPY_KEY]:
        problems.append(f"{CONFIG_COPY_KEY}: differs from {CONFIG_KEY}")
    return problems, notes


def verify(chunks: ChunkStore, catalog: Catalog, log: DatasetLog, read_data: bool = False,
           on_pack: Callable[[], None] | None = None) -> VerifyReport:
    report = VerifyReport()
    report.problems, report.notes = check_config(chunks.blob)
    problem = report.problems.append
    try:
        log.sync()
    except OsmoError as exc:
        problem(f"event log: {exc}")
    scan = scan_log(chunks.blob)
    report.events = scan.events
    for seq, why in sorted(scan.damaged.items()):
        problem(f"{log_key(seq)}: {why}")
    for seq in scan.holes:
        problem(f"{log_key(seq)}: missing (later events exist)")
    for key in scan.strays:
        problem(f"{key}: not an event")
    _check_packs(chunks, report, read_data, on_pack)
    _check_versions(chunks, catalog, report)
    return report


def _check_packs(chunks: ChunkStore, report: VerifyReport, read_data: bool,
                 on_pack: Callable[[], None] | None) -> None:
    problem = report.problems.append
    chunks.refresh_packs(warn=False)  # verify reports unreadable packs as problems; notes missing ones
    stored = set(chunks.blob.list(PACK_PREFIX))
    indexed = {pack_key(pid): size for pid, size, _ in chunks.index.packs()}
    swept = {pack_key(pid) for pid, (_, gone, _) in chunks.index.condemned_packs().items() if gone}
    report.packs = sum(1 for key in stored if _is_pack(key))
    for key in sorted(set(indexed) - stored):
        problem(f"{key}: in the index but missing from the store")
    waiting = stored & swept
    if waiting:
        one = len(waiting) == 1
        report.notes.append(f"{len(waiting)} {'pack' if one else 'packs'} removed by garbage collection or repair "
                            f"{'waits' if one else 'wait'} to be deleted (the next 'osmo store gc' or "
                            "'osmo store repair' does it)")
    for key in sorted(stored - swept):
        try:
            if read_data:
                check = chunks.check_pack(key)
                report.problems.extend(check.problems)
                report.packs_read += not check.gone
            else:
                pack_id_from_key(key)
                _, size, _ = chunks.read_pack_index(key)
                if key in indexed and indexed[key] != size:
                    problem(f"{key}: size {size} differs from the index ({indexed[key]})")
        except NotFoundError:
            pass  # deleted meanwhile (garbage collection)
        except OsmoError as exc:
            problem(str(exc))
        if on_pack:
            on_pack()


def _is_pack(key: str) -> bool:
    try:
        pack_id_from_key(key)
    except IntegrityError:
        return False
    return True


def _check_versions(chunks: ChunkStore, catalog: Catalog, report: VerifyReport) -> None:
    """Every live version: manifest nodes read from the store, every chunk with an intact copy."""
    seen_nodes: set[bytes] = set()
    seen_chunks: set[bytes] = set()

    def load(node_id: bytes) -> bytes:  # the store, not the node cache
        data = chunks.read_chunk(node_id)
        if node_id not in seen_nodes:
            seen_nodes.add(node_id)
            level, items = decode_node(node_id, data)
            if level == LEAF:
                seen_chunks.update(cid for e in items for cid, _ in e.chunks)
        return data

    finder = DamageFinder(chunks, load)
    versions = [(ds["name"], rec) for dsid, ds in catalog.datasets()
                for rec in catalog.versions(dsid, include_deleted=False)]
    report.versions = len(versions)
    for damage in finder.versions(versions):
        report.problems.append(damage.summary())
        report.damaged_versions.append(damage.to_json())
    report.manifest_nodes = len(seen_nodes)
    report.chunks = len(seen_chunks)


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
    warnings.extend(f"{log_key(seq)}: {why}" for seq, (state, why) in sorted(log.catalog.damaged_events().items())
                    if state == "damaged")
    return warnings
