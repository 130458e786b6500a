"""Pack objects: many chunks in one blob, with a self-describing footer index.

Layout (docs/FORMAT.md has the byte-level description)::

    "OSMOPK01" salt                 8-byte magic + format, 16 random bytes
    chunk bytes ...                 stored (possibly zstd-compressed) chunk bodies, back to back
    footer                          canonical msgpack array of entries
                                    [chunk id (bin 32), offset, stored length, raw length, compression]
    trailer (44 bytes)              footer length (uint32 LE) | BLAKE3 of footer (32) | "OSMOPEND"

A pack is named by the BLAKE3 of all its bytes, so its index can always be rebuilt from the packs.
The random salt makes every pack's name new, even for the same chunks: garbage collection deletes
packs by name, and a writer must never re-create, under a name being deleted, the pack it needs.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

import msgpack

from osmo_store import hashing
from osmo_store.errors import IntegrityError

HEADER = b"OSMOPK01"
SALT_SIZE = 16
HEADER_SIZE = len(HEADER) + SALT_SIZE
END_MAGIC = b"OSMOPEND"
TRAILER_SIZE = 4 + 32 + len(END_MAGIC)
COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
PACK_PREFIX = "packs/"


def pack_key(pack_id: bytes) -> str:
    h = pack_id.hex()
    return f"{PACK_PREFIX}{h[:2]}/{h}"


def pack_id_from_key(key: str) -> bytes:
    name = key.rsplit("/", 1)[-1]
    try:
        pack_id = bytes.fromhex(name)
    except ValueError:
        raise IntegrityError(f"unexpected object {key} among packs") from None
    if len(pack_id) != 32 or pack_key(pack_id) != key:
        raise IntegrityError(f"unexpected object {key} among packs")
    return pack_id


@dataclass(frozen=True)
class PackEntry:
    """Where one chunk lives inside a pack."""

    chunk_id: bytes
    offset: int
    stored_length: int
    raw_length: int
    compression: int

    def encode(self) -> list:
        return [self.chunk_id, self.offset, self.stored_length, self.raw_length, self.compression]


class PackBuilder:
    """Accumulates chunk bodies and seals them into one pack object (one copy, at seal time).

    With ``out``, every piece of the pack (header, bodies, footer, trailer) is handed to ``out`` as it
    is made, in order, instead of being kept (a pack written straight to a file)."""

    def __init__(self, out: Callable[[bytes | memoryview], None] | None = None) -> None:
        header = HEADER + os.urandom(SALT_SIZE)
        self._out = out
        self._parts: list[bytes] = [header]
        if out is not None:
            out(header)
            self._parts = []
        self._size = HEADER_SIZE
        self._hash = hashing.hasher()  # the pack's name, hashed as bodies come (sealing is then cheap)
        self._hash.update(header)
        self.entries: list[PackEntry] = []

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, chunk_id: bytes, stored: bytes | memoryview, raw_length: int, compression: int) -> PackEntry:
        entry = PackEntry(chunk_id, self._size, len(stored), raw_length, compression)
        if self._out is not None:
            self._out(stored)
        else:
            self._parts.append(stored)
        self._hash.update(stored)
        self._size += len(stored)
        self.entries.append(entry)
        return entry

    def seal_parts(self) -> tuple[bytes, list[bytes]]:
        """Return ``(pack_id, parts)``: the pack as pieces to write back to back, without joining
        them (a 32 MiB copy saved per pack; none with ``out``, which was handed everything). The
        builder must not be used afterwards."""
        footer = msgpack.packb([e.encode() for e in self.entries], use_bin_type=True)
        trailer = struct.pack("<I", len(footer)) + hashing.digest(footer) + END_MAGIC
        self._parts += [footer, trailer]
        if self._out is not None:
            self._out(footer)
            self._out(trailer)
            self._parts = []
        self._hash.update(footer)
        self._hash.update(trailer)
        parts, self._parts = self._parts, []
        return self._hash.digest(), parts

    def seal(self) -> tuple[bytes, bytes]:
        """Return ``(pack_id, pack_bytes)``; the builder must not be used afterwards."""
        pack_id, parts = self.seal_parts()
        return pack_id, b"".join(parts)


def sealed_size(entries: list[PackEntry]) -> int:
    """The size of the pack ``PackBuilder`` seals from these entries (offsets as it assigned them)."""
    footer = msgpack.packb([e.encode() for e in entries], use_bin_type=True)
    end = entries[-1].offset + entries[-1].stored_length if entries else HEADER_SIZE
    return end + len(footer) + TRAILER_SIZE


def parse_tail(tail: bytes, pack_size: int, where: str) -> list[PackEntry]:
    """Parse the footer from the last ``len(tail)`` bytes of a pack of ``pack_size`` bytes.

    Raises IntegrityError if the trailer, footer checksum or any entry is malformed. If ``tail`` is
    too short to hold the footer, raises ``FooterTooShort`` carrying the size needed.
    """
    if len(tail) < TRAILER_SIZE or tail[-len(END_MAGIC):] != END_MAGIC:
        raise IntegrityError(f"{where}: not a pack (bad trailer)")
    trailer = tail[-TRAILER_SIZE:]
    (footer_len,) = struct.unpack("<I", trailer[:4])
    footer_digest = trailer[4:36]
    data_end = pack_size - TRAILER_SIZE - footer_len
    if data_end < HEADER_SIZE:
        raise IntegrityError(f"{where}: footer length {footer_len} exceeds the pack")
    if footer_len + TRAILER_SIZE > len(tail):
        raise FooterTooShort(footer_len + TRAILER_SIZE)
    footer = tail[-TRAILER_SIZE - footer_len : -TRAILER_SIZE]
    if hashing.digest(footer) != footer_digest:
        raise IntegrityError(f"{where}: footer checksum mismatch")
    try:
        raw = msgpack.unpackb(footer, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise IntegrityError(f"{where}: footer is not valid msgpack ({exc})") from None
    return _entries(raw, data_end, where)


def _entries(raw: object, data_end: int, where: str) -> list[PackEntry]:
    if not isinstance(raw, list):
        raise IntegrityError(f"{where}: footer is not a list")
    entries = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 5):
            raise IntegrityError(f"{where}: malformed footer entry")
        cid, off, stored, rawlen, comp = item
        ints_ok = all(type(v) is int and v >= 0 for v in (off, stored, rawlen))
        if not (isinstance(cid, bytes) and len(cid) == 32 and ints_ok):
            raise IntegrityError(f"{where}: malformed footer entry")
        if comp not in (COMPRESSION_NONE, COMPRESSION_ZSTD) or off < HEADER_SIZE or off + stored > data_end:
            raise IntegrityError(f"{where}: footer entry out of range")
        entries.append(PackEntry(cid, off, stored, rawlen, comp))
    return entries


def parse_pack(data: bytes, where: str) -> list[PackEntry]:
    """Parse a whole pack held in memory (header, footer) without checking chunk bodies."""
    if not data.startswith(HEADER):
        raise IntegrityError(f"{where}: not a pack (bad header)")
    return parse_tail(data, len(data), where)


class FooterTooShort(Exception):
    """Internal signal: read more of the pack's end (``needed`` bytes) and parse again."""

    def __init__(self, needed: int) -> None:
        super().__init__(needed)
        self.needed = needed
