"""Property tests: chunk boundaries, the pack codec and the manifest tree (round trips, corruption)."""

from __future__ import annotations

import io
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from osmo_store import hashing
from osmo_store.chunking import Chunker
from osmo_store.chunkstore import decode_chunk
from osmo_store.config import ChunkerParams
from osmo_store.errors import IntegrityError, UnsafePathError
from osmo_store.manifest import (FileEntry, TreeBuilder, decode_node, diff_trees, encode_node, iter_entries,
                                 iter_nodes)
from osmo_store.packs import COMPRESSION_NONE, PackBuilder, parse_pack

SMALL = ChunkerParams(min_size=64, avg_size=256, max_size=1024)


def _data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10**6), size=st.integers(0, 40_000), block=st.integers(2048, 9000))
def test_streamed_boundaries_equal_whole_buffer(seed, size, block):
    data = _data(seed, size)
    chunker = Chunker(SMALL, block_size=block)
    whole = [bytes(c) for c in chunker.cut(data)] if data else []
    streamed = [bytes(c) for c in chunker.stream(io.BytesIO(data))]
    assert streamed == whole
    assert b"".join(streamed) == data
    assert all(len(c) <= SMALL.max_size for c in streamed)
    assert all(len(c) >= SMALL.min_size for c in streamed[:-1])


def test_boundaries_resynchronise_after_an_insert():
    data = _data(1, 200_000)
    edited = data[:50_000] + b"INSERTED" + data[50_000:]
    chunker = Chunker(SMALL)
    a = {hashing.digest(c) for c in chunker.cut(data)}
    b = {hashing.digest(c) for c in chunker.cut(edited)}
    assert len(a & b) >= len(a) - 4  # only the chunks around the insert change


def _pack(chunks: list[bytes]) -> tuple[bytes, bytes]:
    builder = PackBuilder()
    for c in chunks:
        builder.add(hashing.digest(c), c, len(c), COMPRESSION_NONE)
    return builder.seal()


@settings(max_examples=50, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
def test_pack_round_trip(chunks):
    pack_id, data = _pack(chunks)
    assert pack_id == hashing.digest(data)
    entries = parse_pack(data, "p")
    assert [e.chunk_id for e in entries] == [hashing.digest(c) for c in chunks]
    for e, c in zip(entries, chunks):
        stored = data[e.offset : e.offset + e.stored_length]
        assert decode_chunk(e.chunk_id, stored, e.raw_length, e.compression, "p") == c


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks=st.lists(st.binary(min_size=1, max_size=200), min_size=1, max_size=8), where=st.floats(0, 1),
       flip=st.integers(1, 255))
def test_any_pack_corruption_is_detected(chunks, where, flip):
    pack_id, data = _pack(chunks)
    pos = min(int(where * len(data)), len(data) - 1)
    bad = bytearray(data)
    bad[pos] ^= flip
    with pytest.raises(IntegrityError):
        if hashing.digest(bytes(bad)) != pack_id:  # what verify --read-data checks first (the salt)
            raise IntegrityError("pack content does not match its name")
        entries = parse_pack(bytes(bad), "p")
        for e in entries:
            decode_chunk(e.chunk_id, bytes(bad[e.offset : e.offset + e.stored_length]), e.raw_length,
                         e.compression, "p")
        raise AssertionError("corruption went unnoticed")  # pragma: no cover


def _entry(path: str, body: bytes = b"x", mode: int = 0o644) -> FileEntry:
    chunks = ((hashing.digest(body), len(body)),) if body else ()
    return FileEntry(path, len(body), mode, 1_700_000_000_000_000_000, hashing.digest(body), chunks)


paths = st.lists(st.text(alphabet="ab/é_ 1", min_size=1, max_size=12), max_size=60).map(
    lambda ps: sorted({p for p in ps if all(part not in ("", ".", "..") for part in p.split("/"))}))


def _build(entries: list[FileEntry], target: int = 4) -> tuple[bytes, dict[bytes, bytes]]:
    nodes: dict[bytes, bytes] = {}
    builder = TreeBuilder(nodes.__setitem__, target)
    for e in entries:
        builder.add(e)
    return builder.finish(), nodes


@settings(max_examples=80, deadline=None)
@given(paths)
def test_tree_round_trip(ps):
    entries = [_entry(p, p.encode()) for p in ps]
    root, nodes = _build(entries)
    assert list(iter_entries(nodes.__getitem__, root)) == entries
    for node_id, data in nodes.items():
        decode_node(node_id, data)


@settings(max_examples=60, deadline=None)
@given(paths, st.data())
def test_diff_matches_naive_comparison(ps, data):
    old = {p: _entry(p, p.encode()) for p in ps}
    new = dict(old)
    for p in data.draw(st.lists(st.sampled_from(ps), max_size=5)) if ps else []:
        new.pop(p, None)
    for p in data.draw(st.lists(st.sampled_from(ps), max_size=5)) if ps else []:
        new[p] = _entry(p, b"changed " + p.encode())
    new["zz-added"] = _entry("zz-added")
    ra, na = _build([old[p] for p in sorted(old)])
    rb, nb = _build([new[p] for p in sorted(new)])
    both = {**na, **nb}
    got = {(o.path if o else None, n.path if n else None) for o, n in diff_trees(both.__getitem__, ra, rb)}
    want = set()
    for p in sorted(set(old) | set(new)):
        if p not in new:
            want.add((p, None))
        elif p not in old:
            want.add((None, p))
        elif old[p] != new[p]:
            want.add((p, p))
    assert got == want


def test_one_changed_file_rewrites_few_nodes_of_a_big_tree():
    entries = [_entry(f"dir{i // 1000:03d}/file{i:06d}", str(i).encode()) for i in range(20_000)]
    root, nodes = _build(entries, target=64)
    entries[12_345] = _entry(entries[12_345].path, b"new content")
    root2, nodes2 = _build(entries, target=64)
    new_nodes = set(nodes2) - set(nodes)
    depth = max(level for _, level, _ in iter_nodes(nodes2.__getitem__, root2)) + 1
    assert root2 != root
    assert len(new_nodes) <= depth + 1  # one leaf plus the path to the root
    loaded = []

    def load(node_id):
        loaded.append(node_id)
        return {**nodes, **nodes2}[node_id]

    changes = list(diff_trees(load, root, root2))
    assert [(o.path, n.path) for o, n in changes] == [(entries[12_345].path, entries[12_345].path)]
    assert len(loaded) < len(nodes2) / 10  # the diff reads a small part of the manifest


def test_node_corruption_and_non_canonical_forms_are_rejected():
    root, nodes = _build([_entry("a"), _entry("b")])
    data = nodes[root]
    with pytest.raises(IntegrityError, match="does not match"):
        decode_node(root, data[:-1] + bytes([data[-1] ^ 1]))
    unsorted = encode_node(0, [_entry("b"), _entry("a")])
    with pytest.raises(IntegrityError, match="sorted"):
        decode_node(hashing.digest(unsorted), unsorted)
    import msgpack

    non_canonical = msgpack.packb([0, [[ "a", 1, 0o644, 1, hashing.digest(b"x"), [[hashing.digest(b"x"), 1]]]]],
                                  use_bin_type=False)
    with pytest.raises(IntegrityError):
        decode_node(hashing.digest(non_canonical), non_canonical)


@pytest.mark.parametrize("path", ["../evil", "/etc/passwd", "a/../../b", "a//b", "./a", "a/.", ""])
def test_unsafe_manifest_paths_rejected(path):
    data = encode_node(0, [_entry(path)])
    with pytest.raises(UnsafePathError):
        decode_node(hashing.digest(data), data)
