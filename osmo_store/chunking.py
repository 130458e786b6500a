"""Content-defined chunking of byte streams with FastCDC 2020 (pyfastcdc's compiled chunker).

The stream is read in large blocks; each block is cut, every chunk but the last is emitted, and the
last (possibly cut short by the block end) is carried into the next block. FastCDC decides a cut
only from the bytes after the previous cut, so the boundaries equal those of cutting the whole
stream at once, while memory stays at about one block whatever the file size.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import BinaryIO

from pyfastcdc import FastCDC

from osmo_store.config import ChunkerParams

DEFAULT_BLOCK_SIZE = 8 * 1024 * 1024


class Chunker:
    """Cuts streams into chunks with fixed FastCDC parameters (normalisation 1, gear seed 0)."""

    def __init__(self, params: ChunkerParams, block_size: int = DEFAULT_BLOCK_SIZE) -> None:
        params.validate()
        self.params = params
        self.block_size = max(block_size, 2 * params.max_size)
        self._cdc = FastCDC(
            params.avg_size,
            min_size=params.min_size,
            max_size=params.max_size,
            normalized_chunking=1,
            seed=0,
        )
        self._local = threading.local()

    def _buffer(self) -> bytearray:
        """This thread's read buffer, allocated once (zeroing 8 MiB per small file would dominate)."""
        buf = getattr(self._local, "buf", None)
        if buf is None:
            buf = self._local.buf = bytearray(self.block_size + self.params.max_size)
        return buf

    def cut(self, data: bytes) -> Iterator[memoryview]:
        """Cut an in-memory buffer; yields views into ``data``."""
        for chunk in self._cdc.cut_buf(data):
            yield chunk.data

    def stream(self, f: BinaryIO) -> Iterator[memoryview]:
        """Cut a binary stream read in blocks into one reused buffer.

        Each yielded view is valid only until the next one is requested: consumers copy what they keep.
        The buffer is reused by the next stream of the same thread.
        """
        for _, views in self.blocks(f):
            yield from views

    def blocks(self, f: BinaryIO) -> Iterator[tuple[memoryview, list[memoryview]]]:
        """The chunks of a binary stream one read block at a time, in order: ``(block, chunks)``,
        ``block`` the bytes the block's chunks cover back to back. The views are valid until the next
        block is requested; the buffer is this thread's, reused."""
        buf = self._buffer()
        view = memoryview(buf)
        filled = 0
        while True:
            got = f.readinto(view[filled:])
            eof = not got
            filled += got or 0
            if not eof and filled < len(buf):
                continue  # short read (pipes): fill the block before cutting
            start = 0
            views = []
            for chunk in self._cdc.cut_buf(view[:filled]):
                if not eof and start + chunk.length == filled:
                    break  # the last chunk may continue in the next block: carry it
                views.append(chunk.data)
                start += chunk.length
            if views:
                yield view[:start], views
            if eof:
                return
            carry = bytes(view[start:filled])
            view[: len(carry)] = carry
            filled = len(carry)
