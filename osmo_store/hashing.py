"""BLAKE3-256: chunk ids, object names and plain file digests (what ``b3sum`` prints)."""

from __future__ import annotations

import blake3

DIGEST_SIZE = 32


def digest(data: bytes | memoryview) -> bytes:
    """The 32-byte BLAKE3 digest of ``data``."""
    return blake3.blake3(data).digest()


def hexdigest(data: bytes | memoryview) -> str:
    return blake3.blake3(data).hexdigest()


def hasher() -> "blake3.blake3":
    """An incremental BLAKE3 hasher (``update`` / ``digest``)."""
    return blake3.blake3()


def file_digest(path: str, block_size: int = 1 << 20) -> bytes:
    """The plain BLAKE3 digest of a file, read in blocks (equals ``b3sum PATH``)."""
    h = blake3.blake3()
    with open(path, "rb") as f:
        while True:
            block = f.read(block_size)
            if not block:
                return h.digest()
            h.update(block)
