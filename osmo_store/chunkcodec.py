"""One stored chunk back to its bytes: decompress (zstd where it was compressed) and check the result
against the chunk's BLAKE3 id and length. Every read of stored data goes through ``decode_chunk``."""

from __future__ import annotations

import threading

import zstandard

from osmo_store import hashing
from osmo_store.errors import IntegrityError
from osmo_store.packs import COMPRESSION_ZSTD

_local = threading.local()


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "zd", None)
    if d is None:
        d = _local.zd = zstandard.ZstdDecompressor()
    return d


def decode_chunk(chunk_id: bytes, stored: bytes, raw_length: int, compression: int, where: str) -> bytes:
    """Turn stored bytes back into the chunk, verifying length and hash."""
    if compression == COMPRESSION_ZSTD:
        try:
            raw = _decompressor().decompress(stored, max_output_size=raw_length)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]} in {where}: cannot decompress ({exc})") from None
    elif compression != 0:
        raise IntegrityError(f"chunk {chunk_id.hex()[:16]} in {where}: unknown compression {compression}")
    else:
        raw = bytes(stored)
    if len(raw) != raw_length or hashing.digest(raw) != chunk_id:
        raise IntegrityError(f"chunk {chunk_id.hex()[:16]} in {where}: content does not match its id")
    return raw
