"""The blob-store conformance suite: every backend's test module subclasses ``BlobStoreConformance``.

Subclasses provide a ``store`` fixture returning an empty store (and, for backends where other
processes matter, may add their own tests). The tests check the guarantees written in ``base.py``.
Importing this module needs pytest (a test dependency), so the package never imports it itself.
"""

from __future__ import annotations

import threading
import time

import pytest

from osmo_store.blob.base import BlobStore
from osmo_store.errors import AlreadyExistsError, NotFoundError, UsageError


class BlobStoreConformance:
    @pytest.fixture
    def store(self) -> BlobStore:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_put_get_round_trip(self, store: BlobStore) -> None:
        store.put("a/b/c", b"hello")
        assert store.get("a/b/c") == b"hello"
        assert store.size("a/b/c") == 5
        assert store.exists("a/b/c")

    def test_empty_object(self, store: BlobStore) -> None:
        store.put("empty", b"")
        assert store.get("empty") == b""
        assert store.size("empty") == 0

    def test_put_parts(self, store: BlobStore) -> None:
        store.put_parts("parts/x", [b"ab", b"", b"cde"])
        assert store.get("parts/x") == b"abcde"

    def test_put_replaces(self, store: BlobStore) -> None:
        store.put("k", b"one")
        store.put("k", b"two-two")
        assert store.get("k") == b"two-two"

    def test_missing_raises_not_found(self, store: BlobStore) -> None:
        for call in (lambda: store.get("nope"), lambda: store.get_range("nope", 0, 1), lambda: store.size("nope")):
            with pytest.raises(NotFoundError):
                call()
        assert not store.exists("nope")

    def test_get_range(self, store: BlobStore) -> None:
        data = bytes(range(256)) * 4
        store.put("r", data)
        assert store.get_range("r", 0, 10) == data[:10]
        assert store.get_range("r", 100, 50) == data[100:150]
        assert store.get_range("r", 1000, 100) == data[1000:]
        assert store.get_range("r", 2000, 10) == b""

    def test_create_is_exclusive(self, store: BlobStore) -> None:
        store.create("x", b"first")
        with pytest.raises(AlreadyExistsError):
            store.create("x", b"second")
        assert store.get("x") == b"first"

    def test_concurrent_creates_have_one_winner(self, store: BlobStore) -> None:
        winners, barrier = [], threading.Barrier(8)

        def race(i: int) -> None:
            barrier.wait()
            try:
                store.create("race", f"writer-{i}".encode())
                winners.append(i)
            except AlreadyExistsError:
                pass

        threads = [threading.Thread(target=race, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(winners) == 1
        assert store.get("race") == f"writer-{winners[0]}".encode()

    def test_list_by_prefix_sorted(self, store: BlobStore) -> None:
        keys = ["log/000002", "log/000001", "packs/ab/abcd", "packs/cd/cdef", "logbook", "trees/00/00ff"]
        for k in keys:
            store.put(k, b"x")
        assert list(store.list("log/")) == ["log/000001", "log/000002"]
        assert list(store.list("log")) == ["log/000001", "log/000002", "logbook"]
        assert list(store.list("packs/")) == ["packs/ab/abcd", "packs/cd/cdef"]
        assert list(store.list("")) == sorted(keys)
        assert list(store.list("nothing/")) == []

    def test_list_info_gives_sizes_and_times(self, store: BlobStore) -> None:
        before = time.time()
        store.put("info/a", b"12345")
        store.put("info/b/c", b"")
        store.put("other", b"x")
        infos = list(store.list_info("info/"))
        assert [(i.key, i.size) for i in infos] == [("info/a", 5), ("info/b/c", 0)]
        for info in infos:  # by the medium's clock: allow some skew, but it is a real time
            assert before - 300 < info.modified < time.time() + 300

    def test_delete(self, store: BlobStore) -> None:
        store.put("d/1", b"x")
        store.delete("d/1")
        assert not store.exists("d/1")
        store.delete("d/1")  # deleting a missing key is fine
        assert list(store.list("d/")) == []

    @pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "./a", "a/", "a/\x00"])
    def test_bad_keys_rejected(self, store: BlobStore, key: str) -> None:
        with pytest.raises(UsageError):
            store.put(key, b"x")

    def test_large_object(self, store: BlobStore) -> None:
        data = bytes(i % 251 for i in range(3 * 1024 * 1024 + 7))
        store.put("big", data)
        assert store.get("big") == data
        assert store.get_range("big", 1024 * 1024, 5) == data[1024 * 1024 : 1024 * 1024 + 5]
