"""Planned pack reads for a download: few large range reads shared by many files.

A download knows every chunk it needs before it writes anything. ``SpanReader`` looks all of them up
once, groups them by pack, and merges neighbouring ranges (gaps up to ``gap`` bytes, spans up to
``max_span`` bytes) into spans. Each span is fetched once, by the first file that needs it, and
shared by the other files whose chunks it holds; it is dropped when its last chunk was read. So a
folder of 10,000 small files packed together costs a few dozen requests, not 10,000.

Memory: spans are held only while some file still needs them. When the held bytes pass ``budget``
the least recently fetched spans are dropped and fetched again if needed (correct, just slower).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from osmo_store.chunkstore import ChunkStore, decode_chunk
from osmo_store.errors import IntegrityError, NotFoundError
from osmo_store.index import ChunkLocation
from osmo_store.packs import pack_key

GAP = 256 * 1024
MAX_SPAN = 8 * 1024 * 1024
BUDGET = 256 * 1024 * 1024


@dataclass(eq=False)
class Span:
    pack_id: bytes
    start: int
    end: int
    uses: int = 0  # chunk reads still to come
    data: bytes | None = None
    error: Exception | None = None  # the fetch failed (a missing pack): not asked again
    lock: threading.Lock = field(default_factory=threading.Lock)


class SpanReader:
    def __init__(self, store: ChunkStore, uses: Iterable[bytes], gap: int = GAP, max_span: int = MAX_SPAN,
                 budget: int = BUDGET) -> None:
        """``uses``: every chunk id the download will read, once per read (repeats included)."""
        self.store = store
        self.budget = budget
        counts: dict[bytes, int] = {}
        for cid in uses:
            counts[cid] = counts.get(cid, 0) + 1
        self._where: dict[bytes, tuple[Span, ChunkLocation]] = {}
        by_pack: dict[bytes, list[tuple[bytes, ChunkLocation]]] = {}
        self._missing: set[bytes] = set()  # chunks no pack is known to hold: their files fail, not the rest
        for cid, loc in store.locate_many(list(counts), missing_ok=True):
            if loc is None:
                self._missing.add(cid)
            else:
                by_pack.setdefault(loc.pack_id, []).append((cid, loc))
        for pack_id, located in by_pack.items():
            located.sort(key=lambda item: item[1].offset)
            span: Span | None = None
            for cid, loc in located:
                end = loc.offset + loc.stored_length
                if span is None or loc.offset - span.end > gap or end - span.start > max_span:
                    span = Span(pack_id, loc.offset, end)
                span.end = max(span.end, end)
                span.uses += counts[cid]
                self._where[cid] = (span, loc)
        self._held: OrderedDict[int, Span] = OrderedDict()  # spans with data, oldest first
        self._held_bytes = 0
        self._lock = threading.Lock()
        self.requests = 0

    def read_chunks(self, chunk_ids: Iterable[bytes]) -> Iterator[bytes]:
        for cid in chunk_ids:
            yield self.read(cid)

    def read(self, chunk_id: bytes) -> bytes:
        try:
            span, loc = self._where[chunk_id]
        except KeyError:
            if chunk_id in self._missing:
                raise NotFoundError(f"chunk {chunk_id.hex()[:16]} is not in the store") from None
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} was not planned for this download") from None
        try:
            data = self._data(span)
            start = loc.offset - span.start
            chunk = decode_chunk(chunk_id, memoryview(data)[start : start + loc.stored_length], loc.raw_length,
                                 loc.compression, pack_key(span.pack_id))
        except (IntegrityError, NotFoundError) as exc:
            chunk = self._elsewhere(chunk_id, loc, exc)
        finally:
            with self._lock:
                span.uses -= 1
                if span.uses <= 0:
                    self._drop(span)
        return chunk

    def _elsewhere(self, chunk_id: bytes, loc: ChunkLocation, exc: Exception) -> bytes:
        """The planned read of a chunk failed: read it alone, from the same copy first (a span cut short
        on the wire is not damage), then from the others; what fails again is noted (chunkstore)."""
        if isinstance(exc, NotFoundError):
            self.store.note_missing([loc.pack_id])
            others = [o for o in self.store.index.locations(chunk_id) if o.pack_id != loc.pack_id]
            if not others:
                raise exc
            loc = others[0]
        return self.store.read_located(chunk_id, loc)[2]

    def release(self, chunk_ids: Iterable[bytes]) -> None:
        """Chunks that will not be read after all (a file that was already in place)."""
        with self._lock:
            for cid in chunk_ids:
                if cid in self._missing:
                    continue
                span, _ = self._where[cid]
                span.uses -= 1
                if span.uses <= 0:
                    self._drop(span)

    def _data(self, span: Span) -> bytes:
        with span.lock:  # one fetch per span; other readers of it wait for that fetch
            if span.error is not None:
                raise span.error
            data = span.data
            if data is None:
                try:
                    data = self._fetch(span)
                except NotFoundError as exc:
                    span.error = exc
                    raise
                with self._lock:
                    span.data = data
                    self._held[id(span)] = span
                    self._held_bytes += len(data)
                    self._evict(keep=span)
        return data

    def _fetch(self, span: Span) -> bytes:
        key = pack_key(span.pack_id)
        length = span.end - span.start
        try:
            data = self.store.blob.get_range(key, span.start, length)
        except NotFoundError:
            raise NotFoundError(f"pack {key} is missing from the store (run 'osmo store verify')") from None
        if len(data) != length:
            raise IntegrityError(f"pack {key} is shorter than the index says")
        with self._lock:
            self.requests += 1
        return data

    def _drop(self, span: Span) -> None:
        if span.data is not None:
            self._held_bytes -= len(span.data)
            span.data = None
            self._held.pop(id(span), None)

    def _evict(self, keep: Span) -> None:
        while self._held_bytes > self.budget and len(self._held) > 1:
            oldest = next(iter(self._held.values()))
            if oldest is keep:
                self._held.move_to_end(id(keep))
                continue
            self._drop(oldest)
