"""The dataset catalog: datasets, versions, tags, labels and metadata folded from the event log.

The store's truth is its event log (``datasets.py``); this module owns the LMDB tables that hold the
log's folded state and the pure ``apply`` function that folds one event into them. Folding is
deterministic, so replaying the log from the start (``osmo store reindex``) gives identical tables.
It also holds the upload stat cache (local file identity -> file entry), which is a cache of a cache.

Tables: ``names`` (name -> dataset id), ``datasets`` (id -> record), ``versions``
(id/version -> record), ``tags`` (id/tag -> version), ``meta`` (``last_seq``), ``statcache``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import lmdb

from osmo_store.errors import FormatVersionError
from osmo_store.index import LocalIndex, pack, unpack

LAST_SEQ = b"last_seq"
GC_SEQ = b"gc_seq"
CATALOG_TABLES = ("meta", "datasets", "names", "versions", "tags")


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
        raw = txn.get(LAST_SEQ, db=self.db["meta"])
        return 0 if raw is None else unpack(raw)

    def dataset_id(self, name: str) -> str | None:
        with self.index.read() as txn:
            raw = txn.get(name.encode(), db=self.db["names"])
            return None if raw is None else raw.decode()

    def dataset(self, dsid: str) -> dict:
        with self.index.read() as txn:
            return unpack(txn.get(dsid.encode(), db=self.db["datasets"]))

    def datasets(self) -> list[tuple[str, dict]]:
        """Live datasets, by name."""
        with self.index.read() as txn:
            ids = [bytes(v).decode() for _, v in txn.cursor(db=self.db["names"])]
            return [(i, unpack(txn.get(i.encode(), db=self.db["datasets"]))) for i in ids]

    def versions(self, dsid: str, include_deleted: bool = True) -> list[dict]:
        with self.index.read() as txn:
            records = [unpack(v) for _, v in _prefixed(txn, self.db["versions"], dsid)]
        return [r for r in records if include_deleted or not r["deleted"]]

    def version(self, dsid: str, version: int) -> dict | None:
        with self.index.read() as txn:
            raw = txn.get(_vkey(dsid, version), db=self.db["versions"])
            return None if raw is None else unpack(raw)

    def tags(self, dsid: str) -> dict[str, int]:
        with self.index.read() as txn:
            return {k.decode(): unpack(v) for k, v in _prefixed(txn, self.db["tags"], dsid)}

    # folding the log --------------------------------------------------------------------------

    def apply_events(self, events: Iterable[tuple[int, dict]]) -> int:
        """Fold events in one transaction; events at or below ``last_seq`` are skipped (another
        process got there first). Returns the new ``last_seq``."""
        with self.index.write() as txn:
            last = self.last_seq(txn)
            for seq, event in events:
                if seq != last + 1:
                    continue
                if event.get("op") == "gc":
                    self._apply_gc(txn, seq, event)
                else:
                    _apply(txn, self.db, seq, event)
                last = seq
            txn.put(LAST_SEQ, pack(last), db=self.db["meta"])
        return last

    def _apply_gc(self, txn: lmdb.Transaction, seq: int, event: dict) -> None:
        """Fold a garbage-collection event: packs condemned, packs swept (docs/GC.md)."""
        for pack_id in event["condemn"]:
            self.index.condemn_pack(txn, pack_id, seq, event["time"])
        for pack_id in event["sweep"]:
            self.index.sweep_pack(txn, pack_id, seq)
        txn.put(GC_SEQ, pack(seq), db=self.db["meta"])

    def gc_seq(self) -> int:
        """Sequence number of the last garbage-collection event folded (0: none)."""
        with self.index.read() as txn:
            raw = txn.get(GC_SEQ, db=self.db["meta"])
            return 0 if raw is None else unpack(raw)

    # stat cache -------------------------------------------------------------------------------

    def stat_lookup(self, key: bytes) -> list | None:
        with self.index.read() as txn:
            raw = txn.get(key, db=self.db["statcache"])
            return None if raw is None else unpack(raw)

    def stat_store(self, items: Iterable[tuple[bytes, list]]) -> None:
        with self.index.write() as txn:
            for key, value in items:
                txn.put(key, pack(value), db=self.db["statcache"])


def _prefixed(txn: lmdb.Transaction, db: object, dsid: str) -> list[tuple[bytes, bytes]]:
    """Every ``(key suffix, value)`` of one dataset's rows in ``db`` (keys are ``<dsid>/<suffix>``)."""
    prefix = dsid.encode() + b"/"
    rows = []
    cur = txn.cursor(db=db)
    if cur.set_range(prefix):
        for key, value in cur:
            key = bytes(key)
            if not key.startswith(prefix):
                break
            rows.append((key[len(prefix):], bytes(value)))
    return rows


def _get(txn: lmdb.Transaction, db: object, key: bytes) -> dict | None:
    raw = txn.get(key, db=db)
    return None if raw is None else unpack(raw)


def _apply(txn: lmdb.Transaction, db: dict, seq: int, ev: dict) -> None:
    """Fold one event. Events that do not apply to the current state are ignored (deterministically)."""
    op = ev.get("op")
    handler = _HANDLERS.get(op)
    if handler is None:
        raise FormatVersionError(f"event {seq} has unknown operation {op!r}; upgrade osmo")
    name = ev["dataset"]
    raw_id = txn.get(name.encode(), db=db["names"])
    dsid = None if raw_id is None else bytes(raw_id).decode()
    if dsid is None:
        if op != "version":
            return
        dsid = f"d{seq}"
        txn.put(name.encode(), dsid.encode(), db=db["names"])
        txn.put(dsid.encode(), pack({"name": name, "created": ev["time"], "labels": {},
                                     "next_version": 1}), db=db["datasets"])
    ds = _get(txn, db["datasets"], dsid.encode())
    handler(txn, db, seq, ev, dsid, ds)
    if ds is not None:
        txn.put(dsid.encode(), pack(ds), db=db["datasets"])


def _on_version(txn, db, seq, ev, dsid, ds) -> None:
    if ev["version"] != ds["next_version"]:
        return
    rec = {k: ev[k] for k in ("version", "root", "parent", "user", "description", "metadata",
                              "logical_bytes", "files", "stored_bytes", "checksum")}
    rec.update(created=ev["time"], deleted=False, seq=seq)
    txn.put(_vkey(dsid, ev["version"]), pack(rec), db=db["versions"])
    ds["next_version"] += 1
    ds["labels"].update(ev.get("labels", {}))
    for tag in ev.get("tags", []):
        txn.put(_tkey(dsid, tag), pack(ev["version"]), db=db["tags"])


def _live_version(txn, db, dsid, version) -> dict | None:
    rec = _get(txn, db["versions"], _vkey(dsid, version))
    return None if rec is None or rec["deleted"] else rec


def _on_tag(txn, db, seq, ev, dsid, ds) -> None:
    if _live_version(txn, db, dsid, ev["version"]) is not None:
        txn.put(_tkey(dsid, ev["tag"]), pack(ev["version"]), db=db["tags"])


def _on_untag(txn, db, seq, ev, dsid, ds) -> None:
    txn.delete(_tkey(dsid, ev["tag"]), db=db["tags"])


def _on_label(txn, db, seq, ev, dsid, ds) -> None:
    ds["labels"].update(ev.get("set", {}))
    for key in ev.get("unset", []):
        ds["labels"].pop(key, None)


def _on_metadata(txn, db, seq, ev, dsid, ds) -> None:
    rec = _live_version(txn, db, dsid, ev["version"])
    if rec is None:
        return
    rec["metadata"].update(ev.get("set", {}))
    for key in ev.get("unset", []):
        rec["metadata"].pop(key, None)
    txn.put(_vkey(dsid, ev["version"]), pack(rec), db=db["versions"])


def _drop_tags_of(txn, db, dsid, versions: set[int]) -> None:
    for tag, value in _prefixed(txn, db["tags"], dsid):
        if unpack(value) in versions:
            txn.delete(_tkey(dsid, tag.decode()), db=db["tags"])


def _on_delete(txn, db, seq, ev, dsid, ds) -> None:
    rec = _live_version(txn, db, dsid, ev["version"])
    if rec is None:
        return
    rec["deleted"] = True
    rec["deleted_at"] = ev["time"]
    txn.put(_vkey(dsid, ev["version"]), pack(rec), db=db["versions"])
    _drop_tags_of(txn, db, dsid, {ev["version"]})


def _on_delete_versions(txn, db, seq, ev, dsid, ds) -> None:
    for version in ev["versions"]:
        _on_delete(txn, db, seq, {"version": version, "time": ev["time"]}, dsid, ds)


def _on_delete_dataset(txn, db, seq, ev, dsid, ds) -> None:
    for version in range(1, ds["next_version"]):
        _on_delete(txn, db, seq, {"version": version, "time": ev["time"]}, dsid, ds)
    txn.delete(ds["name"].encode(), db=db["names"])
    ds["deleted"] = True


def _on_rename(txn, db, seq, ev, dsid, ds) -> None:
    new = ev["new"]
    if txn.get(new.encode(), db=db["names"]) is not None:
        return
    txn.delete(ds["name"].encode(), db=db["names"])
    txn.put(new.encode(), dsid.encode(), db=db["names"])
    ds["name"] = new


_HANDLERS = {
    "version": _on_version, "tag": _on_tag, "untag": _on_untag, "label": _on_label,
    "metadata": _on_metadata, "delete": _on_delete, "delete_versions": _on_delete_versions,
    "delete_dataset": _on_delete_dataset,
    "rename": _on_rename,
}
