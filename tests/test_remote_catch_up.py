"""Many clients, one remote store, on moto (S3) and Azurite:

* a client whose index is up to date finds that nothing is new with one request; after another
  client committed, it reads only the new events and the footers of the new packs (no full rescan);
* ``reindex`` still rebuilds everything from the store alone;
* tag moves are compare-and-swap on the log head: a move whose target was deleted by another writer
  meanwhile is re-evaluated on the new state and refused, and concurrent moves from several
  processes are all recorded, none lost.

Requests are counted *before* they reach the backend, so misses (404s) count too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections import Counter

import pytest

from helpers.trees import random_tree, snapshot
from osmo_store.blob import open_blob_store
from osmo_store.blob.wrappers import DelegatingBlobStore
from osmo_store.errors import NotFoundError
from osmo_store.ids import parse_ref
from osmo_store.repository import Repository, init_store
from osmo_store.transfer.upload import UploadRequest


class Counting(DelegatingBlobStore):
    """Counts every request as it is made (successful or not); ``before_create`` runs once."""

    def __init__(self, inner, before_create=None) -> None:
        super().__init__(inner)
        self.requests: Counter[str] = Counter()
        self.before_create = before_create
        self._lock = threading.Lock()

    def _n(self, op: str) -> None:
        with self._lock:
            self.requests[op] += 1

    def get(self, key):
        self._n("get")
        return self.inner.get(key)

    def get_range(self, key, offset, length):
        self._n("get_range")
        return self.inner.get_range(key, offset, length)

    def put(self, key, data):
        self._n("put")
        self.inner.put(key, data)

    def put_parts(self, key, parts):
        self._n("put")
        self.inner.put_parts(key, parts)

    def create(self, key, data):
        hook, self.before_create = self.before_create, None
        if hook is not None:
            hook()
        self._n("create")
        self.inner.create(key, data)

    def list(self, prefix=""):
        self._n("list")
        return self.inner.list(prefix)

    def list_info(self, prefix=""):
        self._n("list")
        return self.inner.list_info(prefix)

    def delete(self, key):
        self._n("delete")
        self.inner.delete(key)

    def size(self, key):
        self._n("size")
        return self.inner.size(key)


@pytest.fixture(params=["s3", "azure"])
def remote_url(request):
    fixture = request.getfixturevalue("s3_bucket" if request.param == "s3" else "azure_container")
    return f"{fixture.url}/store-{uuid.uuid4().hex[:6]}"


def _upload(repo, tmp_path, name: str, seed: int, files: int = 30, max_size: int = 20_000) -> None:
    src = tmp_path / f"src-{name}-{seed}"
    random_tree(src, seed=seed, files=files, max_size=max_size)
    repo.upload(UploadRequest(name, [str(src)]))


def test_catch_up_reads_only_new_events_and_footers_of_new_packs(remote_url, tmp_path, tiny_config):
    init_store(open_blob_store(remote_url), tiny_config)
    first = Repository(open_blob_store(remote_url), tiny_config, cache_dir=str(tmp_path / "first"))
    for seed in range(3):
        _upload(first, tmp_path, "robot", seed)

    counting = Counting(open_blob_store(remote_url))
    second = Repository(counting, tiny_config, cache_dir=str(tmp_path / "second"))
    assert second.log.sync() == 3  # an empty index reads the whole log once
    second.chunks.refresh_packs()

    counting.requests.clear()
    assert second.log.sync() == 3
    assert dict(counting.requests) == {"get": 1}  # up to date: one request (a miss) finds nothing new

    packs_before = set(open_blob_store(remote_url).list("packs/"))
    _upload(first, tmp_path, "robot", 10)
    _upload(first, tmp_path, "robot", 11)
    new_packs = set(open_blob_store(remote_url).list("packs/")) - packs_before
    assert new_packs

    counting.requests.clear()
    assert second.log.sync() == 5
    # the 2 new events plus at most two misses (the end of a parallel window, then the end of the log)
    assert set(counting.requests) == {"get"} and 3 <= counting.requests["get"] <= 4
    assert [v["version"] for v in second.catalog.versions(second.log.dataset_id("robot"))] == [1, 2, 3, 4, 5]

    counting.requests.clear()
    assert second.chunks.refresh_packs() == len(new_packs)
    assert counting.requests["list"] == 1 and counting.requests["get"] == 0  # never a whole pack
    assert counting.requests["size"] == len(new_packs)  # only packs not yet indexed are looked at
    assert counting.requests["get_range"] <= 2 * len(new_packs)  # their footers only
    counting.requests.clear()
    assert second.chunks.refresh_packs() == 0
    assert dict(counting.requests) == {"list": 1}

    counting.requests.clear()
    second.reindex()  # still rebuilds from scratch: every event and every pack footer again
    all_packs = len(packs_before) + len(new_packs)
    assert counting.requests["get"] >= 5 and counting.requests["size"] >= all_packs
    assert second.stats()["versions"] == 5 and second.stats()["packs"] == all_packs
    dest = tmp_path / "out"
    second.download("robot:5", str(dest))
    assert snapshot(dest, mtimes=False) == snapshot(tmp_path / "src-robot-11", mtimes=False)
    first.close()
    second.close()


def test_tag_move_is_compare_and_swap_on_the_log_head(remote_url, tmp_path, tiny_config):
    init_store(open_blob_store(remote_url), tiny_config)
    a = Repository(open_blob_store(remote_url), tiny_config, cache_dir=str(tmp_path / "a"))
    _upload(a, tmp_path, "ds", 1)
    _upload(a, tmp_path, "ds", 2)

    # b has read the log (ds:1 is live) and is about to create its tag event when a deletes ds:1
    hooked = Counting(open_blob_store(remote_url), before_create=lambda: a.log.delete_version(parse_ref("ds:1")))
    b = Repository(hooked, tiny_config, cache_dir=str(tmp_path / "b"))
    b.log.sync()
    with pytest.raises(NotFoundError, match="deleted"):
        b.log.set_tag(parse_ref("ds:1"), "gold")  # lost the race, re-evaluated on the new state
    assert hooked.requests["create"] == 1  # one attempt was made and lost; none after re-evaluation
    dsid = b.log.dataset_id("ds")
    assert "gold" not in b.catalog.tags(dsid)

    # a tag on a live version after a lost race is simply retried on top of the other event
    hooked.before_create = lambda: a.log.set_tag(parse_ref("ds:2"), "silver")
    assert b.log.set_tag(parse_ref("ds:2"), "gold") == 2
    assert b.catalog.tags(dsid) == {"silver": 2, "gold": 2}
    assert hooked.requests["create"] == 3
    a.close()
    b.close()


MOVER = r"""
import json, sys
from osmo_store.ids import parse_ref
from osmo_store.repository import Repository
url, writer, moves = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
with Repository.open(url) as repo:
    for i in range(moves):
        version = 1 + (writer + i) % 3
        repo.log.set_tag(parse_ref(f"ds:{version}"), "best")
        print(json.dumps({"writer": writer, "i": i, "version": version}), flush=True)
"""


def test_concurrent_tag_moves_from_many_processes_are_all_recorded(remote_url, tmp_path, tiny_config):
    init_store(open_blob_store(remote_url), tiny_config)
    with Repository(open_blob_store(remote_url), tiny_config, cache_dir=str(tmp_path / "setup")) as repo:
        for seed in range(3):
            _upload(repo, tmp_path, "ds", seed)
    writers, moves = 4, 5
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    procs = [subprocess.Popen([sys.executable, "-c", MOVER, remote_url, str(w), str(moves)],
                              env={**os.environ, "OSMO_CACHE_DIR": str(tmp_path / f"cache-{w}"), "PYTHONPATH": root},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for w in range(writers)]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
        done += [json.loads(line) for line in out.splitlines()]
    assert len(done) == writers * moves

    from osmo_store.events import decode_event

    blob = open_blob_store(remote_url)
    keys = sorted(blob.list("log/"))
    events = [decode_event(k, blob.get(k)) for k in keys]
    tag_events = [e for e in events if e["op"] == "tag"]
    assert len(keys) == 3 + writers * moves  # dense sequence numbers, no event overwritten
    assert len(tag_events) == writers * moves  # every move recorded
    assert sorted(e["nonce"] for e in tag_events) == sorted({e["nonce"] for e in tag_events})
    with Repository.open(remote_url, cache_dir=str(tmp_path / "reader")) as repo:
        dsid = repo.log.dataset_id("ds")
        assert repo.catalog.tags(dsid) == {"best": tag_events[-1]["version"]}  # the last move wins


def test_listing_versions_again_fetches_no_manifest_node(remote_url, tmp_path, tiny_config):
    """Manifest nodes read from a remote store are kept in the index: ``dataset list``, ``info`` and
    ``diff`` read them once per client, also across processes (the cache is written at close), while
    ``verify`` still reads them from the store."""
    init_store(open_blob_store(remote_url), tiny_config)
    with Repository(open_blob_store(remote_url), tiny_config, cache_dir=str(tmp_path / "first")) as first:
        for seed in range(3):  # a dozen small files: manifests of several nodes (4 entries each), few packs
            _upload(first, tmp_path, "robot", seed, files=12, max_size=6000)

    def reads(repo, counting, work) -> int:
        counting.requests.clear()
        work(repo)
        return counting.requests["get_range"]

    def listing(repo):
        repo.list_datasets()
        repo.diff("robot:1", "robot:3")

    counting = Counting(open_blob_store(remote_url))
    with Repository(counting, tiny_config, cache_dir=str(tmp_path / "second")) as second:
        assert reads(second, counting, listing) > 0  # a fresh client fetches the nodes once
        assert reads(second, counting, listing) == 0  # and then never again
        assert reads(second, counting, lambda r: r.verify()) > 0  # verify checks the store itself
    counting = Counting(open_blob_store(remote_url))
    with Repository(counting, tiny_config, cache_dir=str(tmp_path / "second")) as again:
        assert reads(again, counting, listing) == 0  # a later process of the same client
        dest = tmp_path / "out"
        again.download("robot:3", str(dest))
        assert snapshot(dest, mtimes=False) == snapshot(tmp_path / "src-robot-2", mtimes=False)
