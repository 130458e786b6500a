"""The dataset catalog: datasets, versions, tags, labels and metadata folded from the event log.

The store's truth is its event log (``datasets.py``); this module owns the LMDB tables that hold the
log's folded state and the pure ``apply`` function that folds one event into them. Folding is
deterministic, so replaying the log from the start (``osmo store reindex``) gives identical tables.
It also holds the upload stat cache (local file identity -> file entry), which is a cache of a cache.

Tables: ``names`` (name -> dataset id), ``datasets`` (id -> record), ``versions``
(id/version -> record), ``tags`` (id/tag -> version), ``renames`` (a former name -> the id of the
dataset that last gave it up by a rename), ``meta`` (``last_seq``, ``gc_seq``), ``statcache``, and in
``damage`` (see ``index.py``) the log events that were damaged or quarantined (``e`` + sequence
number) and the events that did not apply (``i`` + sequence number: after a damaged event, what
depended on it).

**Damage stays local.** A damaged event (``DamagedEvent``) folds as nothing. A version event applies
when its number is the dataset's next *or higher* (writers always take the next number, so a higher
one means the versions between were in damaged events): losing one version's event never hides the
versions after it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import lmdb

from osmo_store.errors import FormatVersionError
from osmo_store.index import DAMAGED_EVENT, FORMAT, FORMAT_KEY, LocalIndex

LAST_SEQ = b"last_seq"
GC_SEQ = b"gc_seq"
REFOLD = b"refold"  # a repair quarantined an event this catalog had folded: fold the log again
IGNORED_EVENT = b"i"
CATALOG_TABLES = ("meta", "datasets", "names", "versions", "tags", "renames")


@dataclass(frozen=True)
class DamagedEvent:
    """An event that could not be read (its reason); the fold records it and changes nothing else."""

    reason: str


def _seq_key(prefix: bytes, seq: int) -> bytes:
    return prefix + struct.pack(">Q", seq)


def _vkey(dsid: str, version: int) -> bytes:
    return dsid.encode() + b"/" + struct.pack(">Q", version)


def _tkey(dsid: str, tag: str) -> bytes:
    return dsid.encode() + b"/" + tag.encode()


class Catalog:
    def __init__(self, index: LocalIndex) -> None:
        self.index = index
        self.db = index.db

    # reading ----------------------------------------------------------------------------------

    def last_seq(self, txn: lmdb.Transaction | None = None) -> int:
        if txn is None:
            with self.index.read() as txn:
                return self.last_seq(txn)
        value = self.index.get(txn, "meta", LAST_SEQ)
        return 0 if value is None else value

    def dataset_id(self, name: str) -> str | None:
        with self.index.read() as txn:
            return self.index.get(txn, "names", name.encode())

    def dataset(self, dsid: str) -> dict:
        with self.index.read() as txn:
            return self.index.get(txn, "datasets", dsid.encode())

    def datasets(self) -> list[tuple[str, dict]]:
        """Live datasets, by name."""
        with self.index.read() as txn:
            ids = [dsid for _, dsid in self.index.rows(txn, "names")]
            return [(i, self.index.get(txn, "datasets", i.encode())) for i in ids]

    def versions(self, dsid: str, include_deleted: bool = True) -> list[dict]:
        with self.index.read() as txn:
            records = [v for _, v in self.index.rows(txn, "versions", dsid.encode() + b"/")]
        return [r for r in records if include_deleted or not r["deleted"]]

    def version(self, dsid: str, version: int) -> dict | None:
        with self.index.read() as txn:
            return self.index.get(txn, "versions", _vkey(dsid, version))

    def renamed(self, name: str) -> tuple[str, dict] | None:
        """The dataset that was called ``name`` until a rename (its id and record, which says its
        name now and whether it was deleted since), or ``None``."""
        with self.index.read() as txn:
            dsid = self.index.get(txn, "renames", name.encode())
            if dsid is None:
                return None
            return dsid, self.index.get(txn, "datasets", dsid.encode())

    def tags(self, dsid: str) -> dict[str, int]:
        prefix = dsid.encode() + b"/"
        with self.index.read() as txn:
            return {k[len(prefix):].decode(): v for k, v in self.index.rows(txn, "tags", prefix)}

    def damaged_events(self) -> dict[int, list]:
        """Sequence number -> ``[state, reason]`` (state ``damaged`` or ``quarantined``) of every log
        event that could not be folded."""
        with self.index.read() as txn:
            return {struct.unpack(">Q", k[1:])[0]: v for k, v in self.index.rows(txn, "damage", DAMAGED_EVENT)}

    def ignored_events(self) -> dict[int, list]:
        """Sequence number -> ``[op, dataset, why]`` of every event that did not apply when folded."""
        with self.index.read() as txn:
            return {struct.unpack(">Q", k[1:])[0]: v for k, v in self.index.rows(txn, "damage", IGNORED_EVENT)}

    # folding the log --------------------------------------------------------------------------

    def apply_events(self, events: Iterable[tuple[int, dict | DamagedEvent]]) -> int:
        """Fold events in one transaction; events at or below ``last_seq`` are skipped (another
        process got there first). Returns the new ``last_seq``."""
        with self.index.write() as txn:
            last = self.last_seq(txn)
            for seq, event in events:
                if seq != last + 1:
                    continue
                if isinstance(event, DamagedEvent):
                    self.index.put(txn, "damage", _seq_key(DAMAGED_EVENT, seq), ["damaged", event.reason])
                elif event.get("op") in _STORE_HANDLERS:
                    _STORE_HANDLERS[event["op"]](self, txn, seq, event)
                else:
                    why = _apply(self.index, txn, seq, event)
                    if why:
                        self.index.put(txn, "damage", _seq_key(IGNORED_EVENT, seq),
                                       [event.get("op"), event.get("dataset"), why])
                last = seq
            self.index.put(txn, "meta", LAST_SEQ, last)
        return last

    def _apply_gc(self, txn: lmdb.Transaction, seq: int, event: dict) -> None:
        """Fold a garbage-collection event: packs condemned, packs swept (docs/GC.md)."""
        for pack_id in event["condemn"]:
            self.index.condemn_pack(txn, pack_id, seq, event["time"])
        for pack_id in event["sweep"]:
            self.index.sweep_pack(txn, pack_id, seq)
        self.index.put(txn, "meta", GC_SEQ, seq)

    def _apply_repair(self, txn: lmdb.Transaction, seq: int, event: dict) -> None:
        """Fold a repair: its packs are quarantined (gone, as if swept), its events were quarantined.
        It counts as a collection, so an upload running meanwhile checks its chunks again."""
        for pack_id in event["packs"]:
            self.index.sweep_pack(txn, pack_id, seq)
        for quarantined in event["events"]:
            if self.index.get(txn, "damage", _seq_key(DAMAGED_EVENT, quarantined)) is None:
                self.index.put(txn, "meta", REFOLD, True)  # it was read intact here, before the damage
            self._quarantined(txn, quarantined, f"quarantined by the repair in event {seq}")
        self.index.put(txn, "meta", GC_SEQ, seq)

    def needs_refold(self) -> bool:
        with self.index.read() as txn:
            return bool(self.index.get(txn, "meta", REFOLD))

    def reset(self) -> None:
        """Forget the folded catalog (not the chunk index, not the stat cache) to fold the log again:
        after a repair replaced an event this client had folded, every client must agree again."""
        with self.index.write() as txn:
            for table in CATALOG_TABLES:
                txn.drop(self.db[table], delete=False)
            txn.put(FORMAT_KEY, FORMAT, db=self.db["meta"])
            for prefix in (DAMAGED_EVENT, IGNORED_EVENT):
                for key in [k for k, _ in self.index.rows(txn, "damage", prefix)]:
                    txn.delete(key, db=self.db["damage"])

    def _apply_quarantined(self, txn: lmdb.Transaction, seq: int, event: dict) -> None:
        """The placeholder ``osmo store repair`` left where a damaged or missing event was."""
        self._quarantined(txn, seq, f"{event['reason']} (moved to {event['key']})")

    def _quarantined(self, txn: lmdb.Transaction, seq: int, reason: str) -> None:
        self.index.put(txn, "damage", _seq_key(DAMAGED_EVENT, seq), ["quarantined", reason])

    def gc_seq(self) -> int:
        """Sequence number of the last garbage-collection (or repair) event folded (0: none)."""
        with self.index.read() as txn:
            value = self.index.get(txn, "meta", GC_SEQ)
            return 0 if value is None else value

    # stat cache -------------------------------------------------------------------------------

    def stat_lookup(self, key: bytes, txn: lmdb.Transaction | None = None) -> list | None:
        if txn is None:
            with self.index.read() as txn:
                return self.index.get(txn, "statcache", key)
        return self.index.get(txn, "statcache", key)

    def stat_store(self, items: Iterable[tuple[bytes, list]]) -> None:
        with self.index.write() as txn:
            for key, value in items:
                self.index.put(txn, "statcache", key, value)


_STORE_HANDLERS = {"gc": Catalog._apply_gc, "repair": Catalog._apply_repair,
                   "quarantined": Catalog._apply_quarantined}


class _Fold:
    """The tables one event is folded into (inside a write transaction)."""

    def __init__(self, index: LocalIndex, txn: lmdb.Transaction) -> None:
        self.index = index
        self.txn = txn

    def get(self, table: str, key: bytes):
        return self.index.get(self.txn, table, key)

    def put(self, table: str, key: bytes, value) -> None:
        self.index.put(self.txn, table, key, value)

    def delete(self, table: str, key: bytes) -> None:
        self.txn.delete(key, db=self.index.db[table])

    def live_version(self, dsid: str, version: int) -> dict | None:
        rec = self.get("versions", _vkey(dsid, version))
        return None if rec is None or rec["deleted"] else rec

    def tags_of(self, dsid: str) -> list[tuple[str, int]]:
        prefix = dsid.encode() + b"/"
        return [(k[len(prefix):].decode(), v) for k, v in self.index.rows(self.txn, "tags", prefix)]


def _apply(index: LocalIndex, txn: lmdb.Transaction, seq: int, ev: dict) -> str | None:
    """Fold one event. Events that do not apply to the current state are ignored (deterministically);
    returns why, or None when it applied."""
    op = ev.get("op")
    handler = _HANDLERS.get(op)
    if handler is None:
        raise FormatVersionError(f"event {seq} has unknown operation {op!r}; upgrade osmo")
    f = _Fold(index, txn)
    name = ev["dataset"]
    dsid = f.get("names", name.encode())
    if dsid is None:
        if op != "version":
            return f"no dataset {name!r}"
        dsid = f"d{seq}"
        f.put("names", name.encode(), dsid)
        f.put("datasets", dsid.encode(), {"name": name, "created": ev["time"], "labels": {}, "next_version": 1})
    ds = f.get("datasets", dsid.encode())
    why = handler(f, seq, ev, dsid, ds)
    f.put("datasets", dsid.encode(), ds)
    return why


def _on_version(f: _Fold, seq, ev, dsid, ds) -> str | None:
    if ev["version"] < ds["next_version"]:
        return f"version {ev['version']} is taken"
    rec = {k: ev[k] for k in ("version", "root", "parent", "user", "description", "metadata",
                              "logical_bytes", "files", "stored_bytes", "checksum")}
    rec.update(created=ev["time"], deleted=False, seq=seq)
    f.put("versions", _vkey(dsid, ev["version"]), rec)
    ds["next_version"] = ev["version"] + 1
    ds["labels"].update(ev.get("labels", {}))
    for tag in ev.get("tags", []):
        f.put("tags", _tkey(dsid, tag), ev["version"])
    return None


def _on_tag(f: _Fold, seq, ev, dsid, ds) -> str | None:
    if f.live_version(dsid, ev["version"]) is None:
        return f"version {ev['version']} is not live"
    f.put("tags", _tkey(dsid, ev["tag"]), ev["version"])
    return None


def _on_untag(f: _Fold, seq, ev, dsid, ds) -> str | None:
    f.delete("tags", _tkey(dsid, ev["tag"]))
    return None


def _on_label(f: _Fold, seq, ev, dsid, ds) -> str | None:
    ds["labels"].update(ev.get("set", {}))
    for key in ev.get("unset", []):
        ds["labels"].pop(key, None)
    return None


def _on_metadata(f: _Fold, seq, ev, dsid, ds) -> str | None:
    rec = f.live_version(dsid, ev["version"])
    if rec is None:
        return f"version {ev['version']} is not live"
    rec["metadata"].update(ev.get("set", {}))
    for key in ev.get("unset", []):
        rec["metadata"].pop(key, None)
    f.put("versions", _vkey(dsid, ev["version"]), rec)
    return None


def _on_delete(f: _Fold, seq, ev, dsid, ds) -> str | None:
    rec = f.live_version(dsid, ev["version"])
    if rec is None:
        return f"version {ev['version']} is not live"
    rec["deleted"] = True
    rec["deleted_at"] = ev["time"]
    f.put("versions", _vkey(dsid, ev["version"]), rec)
    for tag, version in f.tags_of(dsid):
        if version == ev["version"]:
            f.delete("tags", _tkey(dsid, tag))
    return None


def _on_delete_versions(f: _Fold, seq, ev, dsid, ds) -> str | None:
    missing = [v for v in ev["versions"] if _on_delete(f, seq, {"version": v, "time": ev["time"]}, dsid, ds)]
    return f"versions {missing} are not live" if missing else None


def _on_delete_dataset(f: _Fold, seq, ev, dsid, ds) -> str | None:
    for _, rec in list(f.index.rows(f.txn, "versions", dsid.encode() + b"/")):
        if not rec["deleted"]:
            _on_delete(f, seq, {"version": rec["version"], "time": ev["time"]}, dsid, ds)
    f.delete("names", ds["name"].encode())
    ds["deleted"] = True
    return None


def _on_rename(f: _Fold, seq, ev, dsid, ds) -> str | None:
    new = ev["new"]
    if f.get("names", new.encode()) is not None:
        return f"name {new!r} is taken"
    f.delete("names", ds["name"].encode())
    f.put("names", new.encode(), dsid)
    f.put("renames", ds["name"].encode(), dsid)
    ds["name"] = new
    return None


_HANDLERS = {
    "version": _on_version, "tag": _on_tag, "untag": _on_untag, "label": _on_label,
    "metadata": _on_metadata, "delete": _on_delete, "delete_versions": _on_delete_versions,
    "delete_dataset": _on_delete_dataset,
    "rename": _on_rename,
}
