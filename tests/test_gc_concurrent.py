"""Garbage collection while others write, and kill -9 in the middle of it.

Writers upload versions whose data keeps coming back after deletion while a collector runs in a
loop with a one-second margin, on a local folder and on S3 (moto server); afterwards every committed
live version downloads byte-exact. Then collections killed with SIGKILL at fixed and at random
points leave a store that ``verify --read-data`` accepts and that the next collection finishes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from helpers.churn_versions import variant_content
from helpers.trees import random_tree, snapshot
from osmo_store.blob import open_blob_store
from osmo_store.gc import GcOptions
from osmo_store.repository import Repository, init_store

HELPERS = os.path.join(os.path.dirname(__file__), "helpers")
WRITERS = 3
VERSIONS = 9


@pytest.fixture(params=["local", "s3"])
def store_url(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "store")
    return f"{request.getfixturevalue('s3_bucket').url}/gc"


def helper_env(tmp_path, name: str) -> dict:
    return {**os.environ, "OSMO_CACHE_DIR": str(tmp_path / f"cache-{name}"),
            "PYTHONPATH": os.pathsep.join([os.path.dirname(HELPERS), os.getcwd()])}


def test_collection_racing_writers_loses_nothing(store_url, tmp_path, tiny_config):
    init_store(open_blob_store(store_url), tiny_config)
    stop = tmp_path / "stop"
    log = open(tmp_path / "gc.log", "w")  # a file, not a pipe: a full pipe would stall the collector
    collector = subprocess.Popen([sys.executable, os.path.join(HELPERS, "gc_loop.py"), store_url, "1", str(stop)],
                                 env=helper_env(tmp_path, "gc"), stdout=log, stderr=subprocess.STDOUT, text=True)
    writers = [subprocess.Popen([sys.executable, os.path.join(HELPERS, "churn_versions.py"), store_url, "fleet",
                                 str(w), str(VERSIONS), str(tmp_path / f"work-{w}"), "0.4"],
                                env=helper_env(tmp_path, f"w{w}"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for w in range(WRITERS)]
    lines = []
    for p in writers:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
        lines += [json.loads(line) for line in out.splitlines()]
    time.sleep(2.5)  # let the collector condemn and sweep what the last deletions freed
    stop.touch()
    collector.wait(timeout=600)
    log.close()
    out = (tmp_path / "gc.log").read_text()
    assert collector.returncode == 0, out[-3000:]
    runs = [json.loads(line) for line in out.splitlines()]
    assert len(runs) >= 2 and sum(r["packs_deleted"] for r in runs) > 0, json.dumps(runs[-1])

    commits = [c for c in lines if "version" in c]
    deleted = {c["deleted"] for c in lines if "deleted" in c}
    assert len(commits) == WRITERS * VERSIONS and len(deleted) == WRITERS * (VERSIONS - 2)
    with Repository.open(store_url, cache_dir=str(tmp_path / "reader")) as repo:
        assert repo.verify(read_data=True).ok
        live = [c for c in commits if c["version"] not in deleted]
        assert {v["version"] for v in repo.describe("fleet")["versions"] if not v["deleted"]} == \
            {c["version"] for c in live}
        for c in live:
            dest = tmp_path / "check" / str(c["version"])
            repo.download(f"fleet:{c['version']}", str(dest))
            got = {str(p.relative_to(dest)): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
            assert got == variant_content(c["writer"], c["variant"], c["i"])
        final = repo.gc(GcOptions(min_age=0))  # nobody writes now: everything unreferenced goes
        assert repo.verify(read_data=True).ok
        assert final.packs_kept == len(list(repo.blob.list("packs/")))


# --- kill -9 ----------------------------------------------------------------------------------------

STALL_POINTS = ["planned", "copied", "committed", "deleting"]


@pytest.fixture
def garbage_store(tmp_path, tiny_config):
    """A local store with live and deleted versions of two datasets, and their sources."""
    store = str(tmp_path / "store")
    init_store(open_blob_store(store), tiny_config)
    sources = {}
    with Repository.open(store, cache_dir=str(tmp_path / "setup-cache")) as repo:
        from osmo_store.transfer.upload import UploadRequest
        from osmo_store.ids import parse_ref
        for i in range(4):
            src = tmp_path / f"src{i}"
            random_tree(src, seed=10 + i, files=25, max_size=6000)
            repo.upload(UploadRequest("a", [str(src)]))
            repo.upload(UploadRequest("b", [str(src / "d0") if (src / "d0").exists() else str(src)]))
            sources[i] = src
        for ref in ("a:1", "a:3", "b:2"):
            repo.log.delete_version(parse_ref(ref))
        live = {ref: sources[int(ref[-1]) - 1] for ref in ("a:2", "a:4", "b:1", "b:3", "b:4")}
    return store, live


def check_store(store: str, tmp_path, live: dict, cache: str) -> None:
    cli = [sys.executable, "-m", "osmo_store.cli.main", "--store", store]
    env = {**os.environ, "OSMO_CACHE_DIR": str(tmp_path / cache)}
    verified = subprocess.run(cli + ["store", "verify", "--read-data", "--json"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    with Repository.open(store, cache_dir=str(tmp_path / cache)) as repo:
        for ref in live:
            assert repo.entries(ref)[1]  # every live version still lists and (below) downloads
        repo.download("a:4", str(tmp_path / f"{cache}-a4"))
    assert snapshot(tmp_path / f"{cache}-a4", mtimes=False) == snapshot(live["a:4"], mtimes=False)


@pytest.mark.parametrize("point", STALL_POINTS)
def test_kill_9_at_each_stage_of_a_collection(garbage_store, tmp_path, point):
    store, live = garbage_store
    env = helper_env(tmp_path, "gc")
    proc = subprocess.Popen([sys.executable, os.path.join(HELPERS, "stalling_gc.py"), point, store],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "stalled", proc.stderr.read()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    check_store(store, tmp_path, live, "after-kill")
    with Repository.open(store, cache_dir=env["OSMO_CACHE_DIR"]) as repo:  # the killed process's own cache
        stats = repo.gc(GcOptions(min_age=0))
        assert repo.verify(read_data=True).ok
        again = repo.gc(GcOptions(min_age=0))
        assert (again.packs_condemned, again.packs_deleted) == (0, 0), (stats, again)
    check_store(store, tmp_path, live, "after-second-gc")


def test_kill_9_at_random_moments_of_collections(garbage_store, tmp_path):
    store, live = garbage_store
    rng = random.Random(1234)
    cli = [sys.executable, "-m", "osmo_store.cli.main", "--store", store]
    env = helper_env(tmp_path, "gc")
    finished = 0
    for _ in range(6):
        proc = subprocess.Popen(cli + ["store", "gc", "--min-age", "0", "--repack-threshold", "0.2", "--json"],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(rng.uniform(0.2, 1.5))
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
        if proc.returncode == 0:
            finished += 1
        else:
            assert proc.returncode == -signal.SIGKILL, err[-3000:]
        check_store(store, tmp_path, live, f"random-{_}")
    done = subprocess.run(cli + ["store", "gc", "--min-age", "0", "--json"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    check_store(store, tmp_path, live, "final")
