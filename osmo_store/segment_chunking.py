"""Cut one large file with several threads into exactly the chunks a sequential run gives.

The file is split into segments (``DEFAULT_SEGMENT_SIZE``). Worker threads read and cut each segment
on its own, from the segment's first byte, and hash its chunks (pyfastcdc's cut and BLAKE3 release the
GIL, measured in benchmarks/README.md, so threads can use every core). A cut found that way is *genuine* when the bytes that decided it lie
inside the segment: it ends before the segment does, or it is a maximum-size cut, or the segment ends
the file.

FastCDC decides each cut only from the bytes after the previous cut. So the sequential chain of cuts
is rebuilt in order: from the last sequential cut before segment k+1 (at most ``max_size`` before it),
cutting goes on sequentially into segment k+1 until a cut lands on one of segment k+1's genuine cuts.
From that cut on both chains start from the same position over the same bytes, so every later cut
of the segment is the sequential one and its chunk (and digest) is taken as the worker made it. Where
no cut of the chain meets one of the segment's (a segment shorter than ``max_size`` with no cut of its
own, or cut chains that never meet), the chain is simply continued sequentially through it; the
bytes it still needs from the segment's end (under ``max_size``) are carried into the next segment.
Typically the chains meet within a few chunks, so the sequential work per segment is small.

Memory: ``workers + 1`` segment buffers, reused, plus a carry under ``max_size``; never the whole file.
"""

from __future__ import annotations

import mmap
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

from pyfastcdc import FastCDC

from osmo_store.config import ChunkerParams

# 16 MiB: the chains meet within a few 64 KiB chunks, so re-synchronising redoes under 1% of the
# bytes, while the buffers stay small (first touching fresh memory costs about as much as cutting it)
DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024
READ_BLOCK = 4 * 1024 * 1024  # a worker reads its segment in blocks this big and cuts each as it comes

Digest = Callable[[memoryview], bytes]


class SegmentChunk(NamedTuple):
    """One chunk of the file: its offset, its bytes (valid until the next chunk is requested: copy
    what you keep) and its digest (``None`` when the chunker was given no digest function)."""

    offset: int
    data: memoryview
    digest: bytes | None


@dataclass
class _Segment:
    """A segment as a worker read and cut it on its own."""

    start: int
    data: memoryview  # exactly the bytes read (shorter than planned when the file shrank)
    buffer: mmap.mmap  # the reusable buffer ``data`` views
    cuts: list[int]  # absolute: the segment's start, then each genuine cut in order
    digests: list[bytes | None]  # digests[i]: the chunk from cuts[i] to cuts[i + 1]
    eof: bool  # the file ends with this segment

    @property
    def end(self) -> int:
        return self.start + len(self.data)


class SegmentChunker:
    """Cuts one file with ``workers`` threads; yields the same chunks as ``Chunker(params).stream``.

    ``digest`` (e.g. ``hashing.digest``) is applied to every chunk, in the workers for all but the few
    chunks cut while re-synchronising.
    """

    def __init__(self, params: ChunkerParams, segment_size: int = DEFAULT_SEGMENT_SIZE, workers: int = 2,
                 digest: Digest | None = None, read_block: int = READ_BLOCK) -> None:
        params.validate()
        if segment_size < 1 or read_block < 1:
            raise ValueError(f"segment size and read block must be positive, got {segment_size}, {read_block}")
        self.params = params
        self.segment_size = segment_size
        self.read_block = read_block
        self.workers = max(1, workers)
        self.digest = digest
        self._cdc = FastCDC(params.avg_size, min_size=params.min_size, max_size=params.max_size,
                            normalized_chunking=1, seed=0)

    def chunks(self, fd: int, size: int) -> Iterator[SegmentChunk]:
        """The chunks of the first ``size`` bytes of the open file ``fd``, in order (see ``batches``)."""
        for batch in self.batches(fd, size):
            yield from batch

    def batches(self, fd: int, size: int) -> Iterator[list[SegmentChunk]]:
        """The chunks of the first ``size`` bytes of the open file ``fd``, in order, a list at a time:
        every chunk's data stays valid until the next list is requested.

        Reads use ``pread`` (the descriptor's offset is not used or moved). If the file turns out
        shorter than ``size``, the chunks stop where it ends (the caller sees the shortfall); bytes past
        ``size`` are not read. Read errors (``OSError``) propagate.
        """
        if size <= 0:
            return
        ahead = self.workers  # segments being read and cut while the current one is yielded
        starts = iter(range(0, size, self.segment_size))
        free: list[mmap.mmap] = []
        pending: deque[Future[_Segment]] = deque()
        ex = ThreadPoolExecutor(self.workers, thread_name_prefix="osmo-segment")

        def submit() -> None:
            start = next(starts, None)
            if start is not None:
                length = min(self.segment_size, size - start)
                # anonymous memory: pages are zeroed by the kernel as a worker first reads into them, not
                # by this thread up front (a bytearray's memset of 16 MiB held the GIL for ~10 ms)
                buf = free.pop() if free else mmap.mmap(-1, min(self.segment_size, size))
                pending.append(ex.submit(self._cut_segment, fd, start, length, start + length == size, buf))

        try:
            for _ in range(ahead + 1):
                submit()
            chain = _Chain(self)
            while pending:
                segment = pending.popleft().result()
                batch = list(chain.follow(segment))
                if batch:
                    yield batch
                free.append(segment.buffer)  # only now: the batch's views point into it
                if segment.eof:
                    break
                submit()
        finally:
            for future in pending:
                future.cancel()
            ex.shutdown(wait=True, cancel_futures=True)

    def _cut_segment(self, fd: int, start: int, length: int, last: bool, buf: mmap.mmap) -> _Segment:
        """Read ``length`` bytes at ``start`` into ``buf`` and cut them from their first byte.

        The segment is read in blocks and each block cut while it is still in the CPU's cache."""
        view = memoryview(buf)[:length]
        cuts = [start]
        digests: list[bytes | None] = []
        max_size = self.params.max_size
        done = got = 0  # relative: the last genuine cut, the bytes read
        eof = False
        while not eof:
            n = os.preadv(fd, [view[got:got + self.read_block]], start + got)
            got += n
            eof = got == length and last or n == 0  # n == 0 before ``length``: the file shrank
            final = eof or got == length  # nothing more of this segment will be read
            for chunk in self._cdc.cut_buf(view[done:got]):
                end = done + chunk.length
                if end == got and not eof and chunk.length < max_size:
                    break  # cut short by the bytes read so far: decided by bytes not yet seen
                cuts.append(start + end)
                digests.append(self.digest(chunk.data) if self.digest is not None else None)
                done = end
            if final:
                break
        return _Segment(start, view[:got], buf, cuts, digests, eof)

    def first_cut(self, window: memoryview) -> int:
        """The length of the first chunk FastCDC cuts from ``window``."""
        return next(iter(self._cdc.cut_buf(window))).length


class _Chain:
    """The sequential chain of cuts, followed across segments in order (one file, one thread)."""

    def __init__(self, chunker: SegmentChunker) -> None:
        self.chunker = chunker
        self.max_size = chunker.params.max_size
        self.pos = 0  # the chain's last cut: everything before it was yielded
        self.carry = b""  # the bytes from ``pos`` to the previous segment's end

    def follow(self, seg: _Segment) -> Iterator[SegmentChunk]:
        """Yield the chunks the chain cuts up to where it needs bytes past ``seg``."""
        index = {cut: i for i, cut in enumerate(seg.cuts)}
        while self.pos not in index:
            chunk = self._step(seg)
            if chunk is None:
                break  # not re-synchronised within this segment: carry on in the next one
            yield chunk
        else:  # the chain stands on one of the segment's own cuts: from there on they are the same
            first = index[self.pos]
            data, digests = seg.data, seg.digests
            for i in range(first, len(seg.cuts) - 1):
                a, b = seg.cuts[i] - seg.start, seg.cuts[i + 1] - seg.start
                yield SegmentChunk(seg.cuts[i], data[a:b], digests[i])
            self.pos = seg.cuts[-1]
        self._carry_from(seg)

    def _step(self, seg: _Segment) -> SegmentChunk | None:
        """Cut the chain's next chunk sequentially; ``None`` when deciding it needs bytes past ``seg``."""
        pos, end = self.pos, seg.end
        if pos >= end:
            return None
        window = self._window(seg, min(pos + self.max_size, end))
        length = self.chunker.first_cut(window)
        if pos + length == end and not seg.eof and length < self.max_size:
            return None
        data = window[:length]
        self.pos = pos + length
        digest = self.chunker.digest(data) if self.chunker.digest is not None else None
        return SegmentChunk(pos, data, digest)

    def _window(self, seg: _Segment, stop: int) -> memoryview:
        """The bytes from the chain's position to ``stop`` (a view, or a small copy joining the carry)."""
        if self.pos >= seg.start:
            return seg.data[self.pos - seg.start:stop - seg.start]
        return memoryview(self.carry[self.pos - (seg.start - len(self.carry)):] + seg.data[:stop - seg.start])

    def _carry_from(self, seg: _Segment) -> None:
        """Keep the bytes from the chain's position to the segment's end (under ``max_size``)."""
        if self.pos >= seg.start:
            self.carry = bytes(seg.data[self.pos - seg.start:])
        else:
            self.carry = self.carry[self.pos - (seg.start - len(self.carry)):] + bytes(seg.data)
