"""The conformance suite on every backend available here, plus local-folder specifics."""

from __future__ import annotations

import multiprocessing
import os

import pytest

from osmo_store.blob import LocalBlobStore, MemoryBlobStore, open_blob_store
from osmo_store.blob.conformance import BlobStoreConformance
from osmo_store.errors import AlreadyExistsError, BackendError, UsageError


class TestMemoryBlobStore(BlobStoreConformance):
    @pytest.fixture
    def store(self):
        return MemoryBlobStore()


class TestLocalBlobStore(BlobStoreConformance):
    @pytest.fixture
    def store(self, tmp_path):
        return LocalBlobStore(str(tmp_path / "blobs"))

    def test_no_temporary_files_left_or_listed(self, store, tmp_path):
        store.put("a/b", b"1")
        store.create("a/c", b"2")
        with pytest.raises(AlreadyExistsError):
            store.create("a/c", b"3")
        names = os.listdir(tmp_path / "blobs" / "a")
        assert sorted(names) == ["b", "c"]
        (tmp_path / "blobs" / "a" / ".tmp-leftover").write_bytes(b"partial")
        assert list(store.list("a/")) == ["a/b", "a/c"]

    def test_write_failure_is_backend_error(self, store, tmp_path):
        store.put("ro/x", b"1")
        (tmp_path / "blobs" / "ro" / "x").unlink()
        (tmp_path / "blobs" / "ro").rmdir()
        (tmp_path / "blobs" / "ro").write_bytes(b"a file where a folder should be")
        with pytest.raises(BackendError, match="ro/y"):
            store.put("ro/y", b"1")


def _create(root: str, i: int, queue) -> None:
    try:
        LocalBlobStore(root).create("log/000000000001", f"p{i}".encode())
        queue.put(i)
    except AlreadyExistsError:
        queue.put(None)


def test_local_exclusive_create_across_processes(tmp_path):
    root = str(tmp_path / "blobs")
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_create, args=(root, i, queue)) for i in range(8)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    results = [queue.get() for _ in procs]
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    assert LocalBlobStore(root).get("log/000000000001") == f"p{winners[0]}".encode()


def test_open_blob_store_urls(tmp_path):
    assert isinstance(open_blob_store(str(tmp_path)), LocalBlobStore)
    assert isinstance(open_blob_store(f"file://{tmp_path}"), LocalBlobStore)
    assert open_blob_store("memory://x") is open_blob_store("memory://x")
    with pytest.raises(UsageError, match="gopher"):
        open_blob_store("gopher://host/x")


def test_metered_store_counts_failed_requests_too():
    """Requests per GB must include the ones that failed (a 404 is a request too)."""
    from osmo_store.blob.wrappers import MeteredBlobStore
    from osmo_store.errors import NotFoundError

    metered = MeteredBlobStore(MemoryBlobStore())
    for call in (lambda: metered.get("nope"), lambda: metered.get_range("nope", 0, 1), lambda: metered.size("nope")):
        with pytest.raises(NotFoundError):
            call()
    metered.put("k", b"abc")
    assert metered.get_range("k", 1, 2) == b"bc"
    assert dict(metered.requests) == {"get": 1, "get_range": 2, "size": 1, "put": 1}
    assert (metered.bytes_in, metered.bytes_out) == (2, 3)
    assert metered.local is False and MeteredBlobStore(LocalBlobStore("/nonexistent")).local is True


def test_a_local_spool_becomes_its_object_only_when_committed(tmp_path):
    """Small pieces are gathered into large writes, large ones written through; nothing is listed
    before ``commit``; ``abort`` leaves no file."""
    store = LocalBlobStore(str(tmp_path / "store"))
    pieces = [os.urandom(n) for n in (10, 300_000, 5, 2_000_000, 70_000, 1)] + [b"x" * 100] * 20_000
    spool = store.spool("packs/")
    for piece in pieces:
        spool.write(memoryview(piece))
    assert spool.size == sum(map(len, pieces))
    assert list(store.list("packs/")) == []
    spool.commit("packs/ab/abcdef")
    assert store.get("packs/ab/abcdef") == b"".join(pieces)
    assert list(store.list("packs/")) == ["packs/ab/abcdef"]

    dropped = store.spool("packs/")
    dropped.write(b"never")
    dropped.abort()
    leftovers = [name for _, _, names in os.walk(tmp_path / "store") for name in names]
    assert leftovers == ["abcdef"]
    assert MemoryBlobStore("spool").spool("packs/") is None  # stores that cannot spool say so
