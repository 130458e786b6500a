"""One file cut by several threads in segments gives exactly the chunks of a sequential run."""

from __future__ import annotations

import os
import random
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from osmo_store import hashing
from osmo_store.chunking import Chunker
from osmo_store.config import ChunkerParams
from osmo_store.segment_chunking import SegmentChunker

SMALL = ChunkerParams(min_size=256, avg_size=1024, max_size=4096)


def sequential(params: ChunkerParams, path) -> list[tuple[int, bytes]]:
    """(offset, bytes) of every chunk ``Chunker.stream`` cuts from the file."""
    out, offset = [], 0
    with open(path, "rb", buffering=0) as f:
        for view in Chunker(params).stream(f):
            out.append((offset, bytes(view)))
            offset += len(view)
    return out


def segmented(params: ChunkerParams, path, segment_size: int, workers: int = 2, size: int | None = None,
              digest=hashing.digest, read_block: int = 4096) -> list[tuple[int, bytes, bytes | None]]:
    chunker = SegmentChunker(params, segment_size=segment_size, workers=workers, digest=digest,
                             read_block=read_block)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size if size is None else size
        return [(c.offset, bytes(c.data), c.digest) for c in chunker.chunks(fd, size)]
    finally:
        os.close(fd)


def assert_same_as_sequential(params, path, segment_size, workers=2, read_block=4096):
    expected = sequential(params, path)
    got = segmented(params, path, segment_size, workers, read_block=read_block)
    assert [(o, len(d)) for o, d, _ in got] == [(o, len(d)) for o, d in expected]
    assert [d for _, d, _ in got] == [d for _, d in expected]
    assert [h for _, _, h in got] == [hashing.digest(d) for _, d in expected]
    return got


def random_bytes(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def long_runs(seed: int, n: int) -> bytes:
    """Runs of one byte value (up to several max sizes long) between stretches of random bytes."""
    rng, out = random.Random(seed), bytearray()
    while len(out) < n:
        if rng.random() < 0.5:
            out += bytes([rng.randrange(256)]) * rng.randrange(1, 20_000)
        else:
            out += rng.randbytes(rng.randrange(1, 5_000))
    return bytes(out[:n])


def repeated(seed: int, n: int) -> bytes:
    rng = random.Random(seed)
    pattern = rng.randbytes(rng.choice([1, 7, 64, 1000, 4096, 5000]))
    return (pattern * (n // len(pattern) + 1))[:n]


def zeros(seed: int, n: int) -> bytes:
    return bytes(n)


@st.composite
def chunker_params(draw) -> ChunkerParams:
    min_size = draw(st.integers(64, 256))
    avg_size = draw(st.sampled_from([a for a in (256, 512, 1024) if a >= min_size]))
    max_size = draw(st.integers(max(1024, avg_size), 4096))
    return ChunkerParams(min_size=min_size, avg_size=avg_size, max_size=max_size)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(make=st.sampled_from([random_bytes, long_runs, repeated, zeros]), seed=st.integers(0, 2**32),
       size=st.integers(0, 60_000), params=chunker_params(), segment_size=st.integers(97, 12_000),
       workers=st.integers(1, 3), read_block=st.integers(1, 20_000))
def test_boundaries_equal_the_sequential_ones(tmp_path, make, seed, size, params, segment_size, workers,
                                              read_block):
    path = tmp_path / "data.bin"
    path.write_bytes(make(seed, size))
    assert_same_as_sequential(params, path, segment_size, workers, read_block)


def digests_by_thread(path, segment_size, params=SMALL):
    """How many chunks the main thread (re-synchronising) and the workers hashed."""
    counts = {"main": 0, "workers": 0}
    lock = threading.Lock()

    def counting_digest(view):
        with lock:
            counts["main" if threading.current_thread() is threading.main_thread() else "workers"] += 1
        return hashing.digest(view)

    chunker = SegmentChunker(params, segment_size=segment_size, workers=2, digest=counting_digest)
    with open(path, "rb") as f:
        n = sum(1 for _ in chunker.chunks(f.fileno(), os.fstat(f.fileno()).st_size))
    return n, counts


def test_random_data_resynchronises_within_a_few_chunks_of_each_segment_start(tmp_path):
    path = tmp_path / "random.bin"
    path.write_bytes(random_bytes(1, 400_000))
    assert_same_as_sequential(SMALL, path, 40_000)
    n, counts = digests_by_thread(path, 40_000)
    assert n > 300
    # 9 segment boundaries; the chains meet after a few chunks, the rest is the workers' hashing
    assert 0 < counts["main"] <= 9 * 6, counts
    assert counts["workers"] >= n - counts["main"]


def test_zeros_with_unaligned_segments_never_resynchronise_and_fall_back_to_sequential(tmp_path):
    # zeros have no content cut: every chunk is max_size long, counted from wherever cutting started,
    # so a segment starting off a multiple of max_size never meets the chain
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(100_000))
    got = assert_same_as_sequential(SMALL, path, 10_000)
    assert [len(d) for _, d, _ in got] == [4096] * 24 + [100_000 - 24 * 4096]
    n, counts = digests_by_thread(path, 10_000)
    assert counts["main"] >= n - 3  # the first segment's two full chunks are the workers'


def test_zeros_with_aligned_segments_resynchronise_at_each_segment_start(tmp_path):
    path = tmp_path / "zeros.bin"
    path.write_bytes(bytes(20 * 4096))
    assert_same_as_sequential(SMALL, path, 4 * 4096)
    n, counts = digests_by_thread(path, 4 * 4096)
    assert (n, counts["main"]) == (20, 0)


@pytest.mark.parametrize("segment_size", [100, 255, 1000, 4095, 4097])
def test_segments_without_a_cut_of_their_own(tmp_path, segment_size):
    # segments shorter than min_size, or shorter than max_size on data with no content cut
    path = tmp_path / "data.bin"
    path.write_bytes(long_runs(3, 30_000))
    assert_same_as_sequential(SMALL, path, segment_size)


@pytest.mark.parametrize("size", [1, 255, 256, 257, 4095, 4096, 4097, 39_999])
def test_files_shorter_than_one_segment(tmp_path, size):
    path = tmp_path / "small.bin"
    path.write_bytes(random_bytes(size, size))
    got = assert_same_as_sequential(SMALL, path, 40_000)
    assert sum(len(d) for _, d, _ in got) == size


@pytest.mark.parametrize("tail", [1, 100, 300, 5000])
def test_the_files_last_chunk_in_a_short_last_segment(tmp_path, tail):
    path = tmp_path / "data.bin"
    path.write_bytes(random_bytes(tail, 3 * 10_000 + tail))
    got = assert_same_as_sequential(SMALL, path, 10_000)
    assert got[-1][0] + len(got[-1][1]) == 30_000 + tail


def test_empty_file_has_no_chunks(tmp_path):
    path = tmp_path / "empty.bin"
    path.write_bytes(b"")
    assert segmented(SMALL, path, 1000) == []


def test_a_file_shorter_than_announced_ends_where_it_ends(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(random_bytes(5, 25_000))
    got = segmented(SMALL, path, 10_000, size=40_000)  # it shrank after the caller's stat
    assert [(o, d) for o, d, _ in got] == sequential(SMALL, path)


def test_no_digest_function_gives_no_digests(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(random_bytes(6, 50_000))
    got = segmented(SMALL, path, 7_000, digest=None)
    assert {h for _, _, h in got} == {None}
    assert [(o, d) for o, d, _ in got] == sequential(SMALL, path)


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_memory_holds_a_few_segments_not_the_file(tmp_path):
    path = tmp_path / "big.bin"
    size, segment = 48 * 1024 * 1024, 512 * 1024
    with open(path, "wb") as f:
        for i in range(48):
            f.write(random_bytes(i, 1024 * 1024))
    chunker = SegmentChunker(SMALL, segment_size=segment, workers=2, digest=hashing.digest)
    baseline = peak = resident_bytes()
    total = 0
    with open(path, "rb") as f:
        for i, chunk in enumerate(chunker.chunks(f.fileno(), size)):
            total += len(chunk.data)
            if i % 500 == 0:
                peak = max(peak, resident_bytes())
    assert total == size
    # workers + 1 segment buffers (1.5 MiB) and small change, never the 48 MiB file
    assert peak - baseline < 8 * 1024 * 1024, (baseline, peak)


def test_stopping_early_stops_the_workers(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(random_bytes(7, 200_000))
    before = {t.name for t in threading.enumerate()}
    with open(path, "rb") as f:
        stream = SegmentChunker(SMALL, segment_size=5_000, workers=2).chunks(f.fileno(), 200_000)
        first = next(stream)
        stream.close()
    assert first.offset == 0
    assert not [t for t in threading.enumerate() if t.name.startswith("osmo-segment") and t.name not in before]


def test_bad_segment_size_is_refused():
    with pytest.raises(ValueError, match="segment size"):
        SegmentChunker(SMALL, segment_size=0)
    with pytest.raises(ValueError, match="read block"):
        SegmentChunker(SMALL, read_block=0)
