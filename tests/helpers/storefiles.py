"""Finding and damaging the objects of a local store folder, as a disk error or a careless hand would.

Objects are found by reading them with the library's own codecs (pack footers, events), then damaged
with plain file operations.
"""

from __future__ import annotations

import os

from osmo_store.blob import LocalBlobStore
from osmo_store.manifest import FileEntry
from osmo_store.packs import parse_pack
from osmo_store.repository import Repository


def object_path(store_path: str, key: str) -> str:
    return os.path.join(store_path, *key.split("/"))


def pack_name(path: str) -> str:
    """``packs/<hh>/<id>`` of a pack file's path."""
    return "packs/" + "/".join(path.split(os.sep)[-2:])


def flip(path: str, offset: int, mask: int = 0x40) -> None:
    """Flip bits of one byte of a file in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ mask]))


def entries_of(store_path: str, cache_dir: str, ref: str) -> dict[str, FileEntry]:
    """A version's file entries, read through the library with the given cache."""
    with Repository.open(store_path, cache_dir=cache_dir) as repo:
        return {e.path: e for e in repo.entries(ref)[1]}


def root_of(store_path: str, cache_dir: str, ref: str) -> bytes:
    with Repository.open(store_path, cache_dir=cache_dir) as repo:
        return bytes.fromhex(repo.entries(ref)[0]["root"])


def find_chunk(store_path: str, chunk_id: bytes) -> tuple[str, int, int]:
    """``(pack file path, offset, stored length)`` of a chunk, by reading every pack's footer."""
    blob = LocalBlobStore(store_path)
    for key in blob.list("packs/"):
        for e in parse_pack(blob.get(key), key):
            if e.chunk_id == chunk_id:
                return object_path(store_path, key), e.offset, e.stored_length
    raise AssertionError("chunk not found in any pack")


def pack_chunks(path: str) -> set[bytes]:
    """The ids of every chunk and node in a pack file."""
    with open(path, "rb") as f:
        return {e.chunk_id for e in parse_pack(f.read(), path)}
