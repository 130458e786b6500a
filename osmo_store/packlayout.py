"""The packs a copy of chunks would fill, computed without writing them (to price repacks).

Garbage collection copies the live chunks of the packs it repacks into new packs: in pack id
order, each pack's chunks in footer order, a pack sealed as soon as its data reaches the store's
target size (``PackCopier``). The storage report must know the exact size of those new packs for
every "what if this version were deleted" it asks, so this module computes them from lengths alone:

- a ``Segment`` is one source pack's live chunks, with prefix sums of their stored lengths and of
  the fixed part of their footer entries, built once;
- ``PackLayout.extend`` walks segments, finding each seal point by bisection and the footer's size
  by counting, per msgpack integer width, the entries whose offset falls in that width's range.

So a layout costs O(segments + packs written) bisections, not one step per chunk. The footer is
the msgpack array of ``[chunk_id, offset, stored_length, raw_length, compression]`` that
``PackBuilder.seal_parts`` writes; ``tests/test_usage.py`` checks the sizes against real packs.
"""

from __future__ import annotations

from bisect import bisect_left
from itertools import accumulate

from osmo_store.packs import HEADER_SIZE, TRAILER_SIZE, PackEntry

# msgpack's encoding of a non-negative integer: (exclusive upper bound, bytes)
INT_WIDTHS = ((128, 1), (256, 2), (65536, 3), (1 << 32, 5), (1 << 64, 9))
ID_BYTES = 2 + 32  # bin 8 header + a 32-byte id


def int_size(n: int) -> int:
    for bound, size in INT_WIDTHS:
        if n < bound:
            return size
    raise ValueError(f"integer too large for msgpack: {n}")


def array_header_size(count: int) -> int:
    return 1 if count < 16 else 3 if count < 65536 else 5


class Segment:
    """The chunks one source pack contributes, in copy order."""

    def __init__(self, entries: list[PackEntry]) -> None:
        self.count = len(entries)
        self.data = [0, *accumulate(e.stored_length for e in entries)]  # data[k]: bytes before entry k
        self.fixed = [0, *accumulate(1 + ID_BYTES + int_size(e.stored_length) + int_size(e.raw_length)
                                     + int_size(e.compression) for e in entries)]


class PackLayout:
    """Sizes of the packs a copy of the segments' chunks, added in order, writes."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.sizes: list[int] = []
        self._size = HEADER_SIZE  # header + data of the pack being filled
        self._count = 0
        self._footer = 0  # its footer entries' bytes so far

    def extend(self, seg: Segment) -> None:
        k = 0
        while k < seg.count:
            # the entry whose addition brings the data to the target seals the pack
            need = self.target - self._size + seg.data[k]
            end = min(bisect_left(seg.data, need, lo=k + 1), seg.count)  # entries k..end-1 go in
            self._add(seg, k, end)
            k = end
            if self._size >= self.target:
                self.close()

    def _add(self, seg: Segment, k: int, end: int) -> None:
        """Entries k..end-1 of ``seg`` join the current pack."""
        base = self._size - seg.data[k]  # entry t lands at offset base + seg.data[t]
        footer = seg.fixed[end] - seg.fixed[k]
        lo = k
        for bound, width in INT_WIDTHS:
            hi = max(lo, min(end, bisect_left(seg.data, bound - base, lo=lo, hi=end)))
            footer += (hi - lo) * width
            lo = hi
        self._footer += footer
        self._count += end - k
        self._size = base + seg.data[end]

    def close(self) -> None:
        if self._count:
            self.sizes.append(self._size + array_header_size(self._count) + self._footer + TRAILER_SIZE)
        self._size, self._count, self._footer = HEADER_SIZE, 0, 0
