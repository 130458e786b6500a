"""The chunk store: writes chunks into packs with deduplication, and reads them back verified.

Writing: ``writer()`` opens an upload session (``packwriter.py``); ``PackCopier`` copies chunks as
they are stored into new packs (garbage collection, rescue). Manifest nodes are stored like chunks
(their id is the BLAKE3 of their bytes), in the same packs, so deduplication, compression and garbage
collection treat them alike.

Reading: ``decode_chunk`` decompresses a chunk and checks it against its BLAKE3 id; which byte ranges
of packs a download fetches is planned by ``transfer/spans.py``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from osmo_store import hashing
from osmo_store.blob import BlobStore
from osmo_store.config import StoreConfig
from osmo_store.chunkcodec import decode_chunk  # noqa: F401  (callers read chunks through the store)
from osmo_store.errors import IntegrityError, NotFoundError
from osmo_store.index import ChunkLocation, LocalIndex
from osmo_store.packcheck import PackCheck, check_pack
from osmo_store.packwriter import PackWriter, RecordPack
from osmo_store.packs import (
    PACK_PREFIX, FooterTooShort, PackBuilder, PackEntry,
    pack_id_from_key, pack_key, parse_tail,
)

log = logging.getLogger("osmo.store")

TAIL_GUESS = 64 * 1024
NODE_CACHE_BATCH = 256  # manifest nodes read from a remote store, written to the index at once


class ChunkStore:
    def __init__(self, blob: BlobStore, index: LocalIndex, config: StoreConfig) -> None:
        self.blob = blob
        self.index = index
        self.config = config
        self._refresh_lock = threading.Lock()
        self._node_lock = threading.Lock()
        self._new_nodes: dict[bytes, bytes] = {}  # nodes read from a remote store, not yet in the index

    # reading ----------------------------------------------------------------------------------

    def locate(self, chunk_id: bytes) -> ChunkLocation:
        loc = self.index.chunk_location(chunk_id)
        if loc is None:
            self.refresh_packs()
            loc = self.index.chunk_location(chunk_id)
        if loc is None:
            raise NotFoundError(f"chunk {chunk_id.hex()[:16]} is not in the store (run 'osmo store verify')")
        return loc

    def locate_many(self, chunk_ids: Iterable[bytes], missing_ok: bool = False) -> list[tuple[bytes, ChunkLocation | None]]:
        """Locations of many chunks, looked up in one index transaction (packs other clients wrote are
        indexed once if some are unknown); ``missing_ok``: ``None`` for a chunk no pack holds."""
        with self.index.read() as txn:
            found = [(cid, self.index.chunk_location(cid, txn)) for cid in chunk_ids]
        if any(loc is None for _, loc in found):
            self.refresh_packs()
        out = []
        for cid, loc in found:
            if loc is None:
                loc = self.index.chunk_location(cid)
            if loc is None and not missing_ok:
                loc = self.locate(cid)  # raises, naming it
            out.append((cid, loc))
        return out

    # reading chunks, past damage --------------------------------------------------------------

    def _read_at(self, chunk_id: bytes, loc: ChunkLocation) -> tuple[bytes, bytes]:
        """``(stored, raw)``: a chunk read with one range request, decoded and checked against its id."""
        key = pack_key(loc.pack_id)
        stored = self.blob.get_range(key, loc.offset, loc.stored_length)
        if len(stored) != loc.stored_length:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} in {key}: pack is shorter than its index says")
        return stored, decode_chunk(chunk_id, stored, loc.raw_length, loc.compression, key)

    def read_located(self, chunk_id: bytes, loc: ChunkLocation | None = None) -> tuple[ChunkLocation, bytes, bytes]:
        """``(where, stored, raw)`` of a chunk, read at ``loc`` (default: its best location). A copy
        that fails its check, or a pack gone from the store, is noted in the index (uploads then store
        the chunk again) and the next known copy is read instead; the error is raised when none is left."""
        loc = loc or self.locate(chunk_id)
        tried: set[bytes] = set()
        while True:
            try:
                try:
                    stored, raw = self._read_at(chunk_id, loc)
                except IntegrityError:
                    stored, raw = self._read_at(chunk_id, loc)  # once more: a read cut short is not damage
                if tried:
                    log.warning(f"osmo: warning: chunk {chunk_id.hex()[:16]} was damaged or missing in "
                                f"{len(tried)} {'pack' if len(tried) == 1 else 'packs'} and was read from another "
                                "copy (run 'osmo store repair')")
                return loc, stored, raw
            except IntegrityError as exc:
                self.note_damaged(chunk_id, loc.pack_id, str(exc))
                error: Exception = exc
            except NotFoundError:
                self.note_missing([loc.pack_id])
                error = NotFoundError(f"chunk {chunk_id.hex()[:16]}: pack {pack_key(loc.pack_id)} is missing "
                                      "from the store (run 'osmo store verify')")
            tried.add(loc.pack_id)
            others = [o for o in self.index.locations(chunk_id) if o.pack_id not in tried]
            if not others:
                raise error
            loc = others[0]

    def note_damaged(self, chunk_id: bytes, pack_id: bytes, reason: str) -> None:
        """A copy of a chunk failed its check: reads go elsewhere, uploads store the chunk again."""
        self.index.mark_damaged_chunk(chunk_id, pack_id, reason, time.time())

    def note_missing(self, pack_ids: Iterable[bytes], found: Iterable[bytes] = ()) -> None:
        self.index.set_missing_packs(pack_ids, found, time.time())

    def read_stored(self, chunk_id: bytes, loc: ChunkLocation | None = None) -> tuple[ChunkLocation, bytes]:
        """A chunk's bytes as stored (maybe compressed) and where they were read, checked against its id."""
        where, stored, _ = self.read_located(chunk_id, loc)
        return where, stored

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """One chunk (or manifest node), read with a range request and verified."""
        return self.read_located(chunk_id)[2]

    def unusable(self, chunk_ids: Iterable[bytes]) -> list[bytes]:
        """The chunks an upload may not reference: stored only in condemned packs, or not at all."""
        with self.index.read() as txn:
            return [cid for cid in chunk_ids if self.index.usable_location(cid, txn) is None]

    def rescue(self, chunk_ids: Iterable[bytes]) -> int:
        """Copy chunks whose packs garbage collection condemned into new packs (an upload that
        referenced them while the collector ran, or a repair quarantined); returns the bytes written."""
        copier = PackCopier(self)
        for cid in chunk_ids:
            loc = self.index.chunk_location(cid)
            if loc is None:
                self.refresh_packs()
                loc = self.index.chunk_location(cid)
            try:
                if loc is None:
                    raise NotFoundError(cid.hex())
                loc, stored = self.read_stored(cid, loc)
            except (NotFoundError, IntegrityError):
                raise NotFoundError(f"chunk {cid.hex()[:16]} was removed (garbage-collected, or quarantined by "
                                    "'osmo store repair') while this upload ran; run the upload again") from None
            copier.add(cid, stored, loc.raw_length, loc.compression)
        copier.flush()
        return copier.bytes_written

    def get_tree(self, node_id: bytes) -> bytes:
        """A manifest node. Nodes read from a remote store are kept in the index (batched, see
        ``NODE_CACHE_BATCH``), so listing, diffing and downloading versions does not fetch them again;
        a node's bytes are checked against its id whenever it is decoded. ``verify`` reads the store."""
        if self.blob.local:
            return self.read_chunk(node_id)
        with self._node_lock:
            data = self._new_nodes.get(node_id)
        if data is None:
            data = self.index.cached_node(node_id)
            if data is not None and hashing.digest(data) != node_id:  # a damaged cache: read the store
                self.index.forget_node(node_id)
                data = None
        if data is not None:
            return data
        data = self.read_chunk(node_id)
        batch = None
        with self._node_lock:
            self._new_nodes[node_id] = data
            if len(self._new_nodes) >= NODE_CACHE_BATCH:
                batch, self._new_nodes = self._new_nodes, {}
        if batch:
            self.index.cache_nodes(batch)
        return data

    def flush_node_cache(self) -> None:
        """Write the nodes read since the last batch into the index (called when the store closes)."""
        with self._node_lock:
            batch, self._new_nodes = self._new_nodes, {}
        if batch:
            self.index.cache_nodes(batch)

    # packs ------------------------------------------------------------------------------------

    def read_pack_index(self, key: str) -> tuple[bytes, int, list[PackEntry]]:
        """Read a pack's footer with range reads: ``(pack_id, size, entries)``."""
        pack_id = pack_id_from_key(key)
        size = self.blob.size(key)
        want = min(size, TAIL_GUESS)
        tail = self.blob.get_range(key, size - want, want)
        try:
            entries = parse_tail(tail, size, key)
        except FooterTooShort as short:
            tail = self.blob.get_range(key, size - short.needed, short.needed)
            entries = parse_tail(tail, size, key)
        return pack_id, size, entries

    def check_pack(self, key: str) -> PackCheck:
        """Read a whole pack and check everything in it (``packcheck.py``); what it finds is noted in
        the index: damaged chunks are read elsewhere, intact ones are cleared of earlier notes."""
        try:
            known = self.index.pack_entries(pack_id_from_key(key))
        except IntegrityError:
            known = None
        check = check_pack(self.blob, key, known)
        if check.pack_id is not None and not check.gone:
            for cid in check.bad:
                self.index.mark_damaged_chunk(cid, check.pack_id, f"chunk {cid.hex()[:16]} in {key} fails its check",
                                              time.time())
            self.index.clear_damaged_chunks(check.pack_id, (e.chunk_id for e in check.good))
        return check

    def refresh_packs(self, warn: bool = True) -> int:
        """Index packs written by other clients since this index last looked; returns how many.

        Called when a chunk is missing from the index: another machine may have stored it. A pack
        whose footer cannot be read is skipped with a warning naming it (``warn=False``: the caller,
        verify, reports it itself).
        """
        with self._refresh_lock:
            known = {pack_key(pid) for pid, _, _ in self.index.packs()}
            added = 0
            swept = {pid for pid, (_, gone, _) in self.index.condemned_packs().items() if gone}
            listed = set(self.blob.list(PACK_PREFIX))
            self._note_listing(known, listed)
            for key in sorted(listed):
                if key in known:
                    continue
                try:
                    if pack_id_from_key(key) in swept:
                        continue  # deleted by garbage collection (or being deleted)
                    pack_id, size, entries = self.read_pack_index(key)
                except NotFoundError:
                    continue  # deleted meanwhile
                except IntegrityError as exc:
                    if warn:
                        log.warning("osmo: warning: %s (not indexed; run 'osmo store verify')", exc)
                    continue
                self.index.add_pack(pack_id, size, entries)
                added += 1
            return added

    def _note_listing(self, known: set[str], listed: set[str]) -> None:
        """Packs this index knows that the store no longer lists are noted missing (their chunks are
        stored again by the next upload); packs noted missing that are back are forgotten."""
        marked = self.index.missing_packs()
        gone = [pack_id_from_key(k) for k in known - listed]
        gone = [p for p in gone if p not in marked]
        back = [p for p in marked if pack_key(p) in listed]
        if gone or back:
            self.note_missing(gone, back)

    def writer(self, record_pack: RecordPack | None = None) -> PackWriter:
        """An upload session writing into this store (``record_pack``: see ``PackWriter``)."""
        return PackWriter(self, record_pack=record_pack)


class PackCopier:
    """Writes chunks, as they are already stored (compressed or not), into new packs, whether or not
    they are stored elsewhere: garbage collection moves live chunks out of packs it will delete, and
    an upload rescues chunks whose packs were condemned while it ran. Packs are written at once."""

    def __init__(self, store: ChunkStore) -> None:
        self.store = store
        self._builder = PackBuilder()
        self.packs: list[tuple[bytes, int]] = []  # (pack id, size) written
        self.bytes_written = 0

    def add(self, chunk_id: bytes, stored: bytes, raw_length: int, compression: int) -> None:
        self._builder.add(chunk_id, stored, raw_length, compression)
        if self._builder.size >= self.store.config.pack_target_size:
            self.flush()

    def flush(self) -> None:
        builder, self._builder = self._builder, PackBuilder()
        if not len(builder):
            return
        entries = list(builder.entries)
        pack_id, parts = builder.seal_parts()
        size = sum(len(p) for p in parts)
        self.store.blob.put_parts(pack_key(pack_id), parts)
        self.store.index.add_pack(pack_id, size, entries)
        self.packs.append((pack_id, size))
        self.bytes_written += size
