"""Garbage collection on real local stores: what it frees, what it keeps, its two phases, uploads
that race it, interrupted sweeps, and the CLI."""

from __future__ import annotations

import time

import pytest

from helpers.trees import random_tree, snapshot
from osmo_store.errors import NotFoundError
from osmo_store.gc import Collector, GcOptions
from osmo_store.ids import parse_ref
from osmo_store.repository import Repository
from osmo_store.transfer.upload import UploadRequest

HOUR = 3600.0


def pack_bytes(repo: Repository) -> int:
    return sum(i.size for i in repo.blob.list_info("packs/"))


def collect(repo: Repository, min_age: float = 0.0, later: float = 0.0, **kw):
    """Run a collection whose clock is ``later`` seconds ahead (packs and plans look older)."""
    return Collector(repo.chunks, repo.catalog, repo.log, GcOptions(min_age=min_age, **kw),
                     clock=lambda: time.time() + later).run()


def download_equals(repo: Repository, ref: str, src, dest) -> bool:
    repo.download(ref, str(dest))
    return snapshot(dest, mtimes=False) == snapshot(src, mtimes=False)


@pytest.fixture
def two_versions(local_repo, tmp_path):
    """``ds`` v1 and v2 sharing half their files, and ``other`` sharing a few files with v1."""
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    files = random_tree(a, seed=1, files=40, max_size=6000)
    random_tree(b, seed=2, files=20, max_size=6000)
    for i, (rel, data) in enumerate(sorted(files.items())):
        if i % 2 == 0:
            (b / "kept" / rel).parent.mkdir(parents=True, exist_ok=True)
            (b / "kept" / rel).write_bytes(data)
    random_tree(c, seed=3, files=5, max_size=6000)
    (c / "from-a").mkdir()
    for rel, data in sorted(files.items())[:3]:
        (c / "from-a" / rel.replace("/", "_")).write_bytes(data)
    for name, src in (("ds", a), ("ds", b), ("other", c)):
        local_repo.upload(UploadRequest(name, [str(src)]))
    return local_repo, a, b, c


def test_collection_frees_deleted_versions_and_keeps_every_live_one(two_versions, tmp_path):
    repo, a, b, c = two_versions
    first = repo.gc(GcOptions(min_age=0))
    assert (first.packs_condemned, first.packs_deleted) == (0, 0)  # nothing deleted yet: nothing is garbage
    before = pack_bytes(repo)
    repo.log.delete_version(parse_ref("ds:1"))
    stats = repo.gc(GcOptions(min_age=0))
    assert stats.packs_deleted > 0 and stats.bytes_deleted > 0 and stats.events
    after = pack_bytes(repo)
    assert after == before - stats.bytes_deleted + stats.bytes_written
    assert after < before
    assert repo.verify(read_data=True).ok
    assert download_equals(repo, "ds:2", b, tmp_path / "out-b")
    assert download_equals(repo, "other", c, tmp_path / "out-c")
    again = repo.gc(GcOptions(min_age=0))  # a second run finds nothing left to do
    assert (again.packs_condemned, again.packs_deleted, again.packs_written) == (0, 0, 0)
    # another client with an empty cache agrees
    fresh = Repository(repo.blob, repo.config, cache_dir=str(tmp_path / "fresh"))
    fresh.log.sync()
    assert fresh.verify(read_data=True).ok
    assert download_equals(fresh, "ds:2", b, tmp_path / "fresh-b")
    fresh.close()


def test_two_phases_condemn_then_sweep_after_the_margin(two_versions):
    repo, *_ = two_versions
    repo.log.delete_version(parse_ref("ds:1"))
    young = collect(repo, min_age=HOUR)  # every pack is younger than an hour: nothing is condemned
    assert young.packs_condemned == 0 and young.packs_young == young.packs
    keys = sorted(repo.blob.list("packs/"))
    plan = collect(repo, min_age=HOUR, later=2 * HOUR)  # packs look old: condemned, not deleted
    assert plan.packs_condemned > 0 and plan.packs_deleted == 0
    assert sorted(repo.blob.list("packs/"))[:len(keys)] == keys or set(keys) <= set(repo.blob.list("packs/"))
    waiting = collect(repo, min_age=HOUR, later=0.5 * HOUR)  # condemned less than an hour ago
    assert waiting.packs_deleted == 0 and waiting.packs_waiting == plan.packs_condemned
    sweep = collect(repo, min_age=HOUR, later=2 * HOUR)
    assert sweep.packs_deleted == plan.packs_condemned
    assert not set(repo.blob.list("packs/")) & {k for k in keys if k not in set(repo.blob.list("packs/"))}
    assert repo.verify(read_data=True).ok


def test_an_upload_after_condemnation_stores_the_chunks_again(local_repo, tmp_path):
    src = tmp_path / "src"
    random_tree(src, seed=4, files=12, max_size=8000)
    local_repo.upload(UploadRequest("ds", [str(src)]))
    local_repo.log.delete_version(parse_ref("ds:1"))
    assert collect(local_repo, min_age=HOUR, later=2 * HOUR).packs_condemned > 0
    again = local_repo.upload(UploadRequest("ds", [str(src)]))  # same bytes: condemned copies are not used
    assert again.chunks_new > 0 and again.stored_bytes > 0
    assert collect(local_repo, min_age=HOUR, later=2 * HOUR).packs_deleted > 0
    assert local_repo.verify(read_data=True).ok
    assert download_equals(local_repo, "ds:2", src, tmp_path / "out")


def racing_upload(tmp_path, local_repo, collector_min_age: float):
    """Client A uploads data it deduplicates against a deleted version, while client B runs a
    collection between A's chunking and A's commit."""
    src = tmp_path / "src"
    random_tree(src, seed=5, files=15, max_size=8000)
    local_repo.upload(UploadRequest("old", [str(src)]))
    local_repo.log.delete_version(parse_ref("old:1"))
    other = Repository(local_repo.blob, local_repo.config, cache_dir=str(tmp_path / "cache-b"))
    other.log.sync()
    real_commit = local_repo.log.commit_version
    ran = []

    def commit_after_a_collection(*args, **kwargs):
        if not ran:
            ran.append(collect(other, min_age=collector_min_age, later=2 * HOUR))
        return real_commit(*args, **kwargs)

    local_repo.log.commit_version = commit_after_a_collection
    return src, other, ran


def test_an_upload_racing_a_collection_copies_condemned_chunks_before_committing(local_repo, tmp_path):
    src, other, ran = racing_upload(tmp_path, local_repo, collector_min_age=HOUR)
    result = local_repo.upload(UploadRequest("new", [str(src)]))
    assert ran[0].packs_condemned > 0
    assert result.chunks_new == 0  # every chunk was deduplicated against the deleted version...
    assert result.stored_bytes > 0  # ...and then copied out of the condemned packs at commit
    sweep = collect(other, min_age=HOUR, later=2 * HOUR)
    assert sweep.packs_deleted == ran[0].packs_condemned
    fresh = Repository(local_repo.blob, local_repo.config, cache_dir=str(tmp_path / "fresh"))
    fresh.log.sync()
    assert fresh.verify(read_data=True).ok
    assert download_equals(fresh, "new", src, tmp_path / "out")
    fresh.close()
    other.close()


def test_an_upload_whose_chunks_were_already_swept_fails_without_a_version(local_repo, tmp_path):
    src, other, ran = racing_upload(tmp_path, local_repo, collector_min_age=0)  # no margin: swept at once
    with pytest.raises(NotFoundError, match="garbage-collected while this upload ran"):
        local_repo.upload(UploadRequest("new", [str(src)]))
    assert ran[0].packs_deleted > 0
    assert local_repo.catalog.dataset_id("new") is None
    assert local_repo.verify(read_data=True).ok
    other.close()


def test_dry_run_changes_nothing(two_versions):
    repo, *_ = two_versions
    repo.log.delete_version(parse_ref("ds:1"))
    keys = sorted(repo.blob.list(""))
    plan = repo.gc(GcOptions(min_age=0), dry_run=True)
    assert plan.dry_run and plan.packs_condemned > 0 and plan.events == []
    assert sorted(repo.blob.list("")) == keys
    done = repo.gc(GcOptions(min_age=0))
    assert (done.packs_condemned, done.bytes_condemned) == (plan.packs_condemned, plan.bytes_condemned)


def test_repacking_moves_live_chunks_out_of_mostly_dead_packs(local_repo, tmp_path):
    src = tmp_path / "src"
    files = random_tree(src, seed=6, files=30, max_size=3000)
    local_repo.upload(UploadRequest("ds", [str(src)]))
    keep = tmp_path / "keep"
    for rel, data in sorted(files.items())[::5]:  # a fifth of the files stay live
        (keep / rel).parent.mkdir(parents=True, exist_ok=True)
        (keep / rel).write_bytes(data)
    local_repo.upload(UploadRequest("ds", [str(keep)]))
    local_repo.log.delete_version(parse_ref("ds:1"))
    stats = local_repo.gc(GcOptions(min_age=0, repack_threshold=0.3))
    assert stats.packs_repacked > 0 and stats.packs_written > 0 and stats.bytes_repacked_live > 0
    assert local_repo.verify(read_data=True).ok
    assert download_equals(local_repo, "ds:2", keep, tmp_path / "out")


def test_an_interrupted_sweep_is_finished_by_the_next_run(two_versions, monkeypatch):
    repo, *_ = two_versions
    repo.log.delete_version(parse_ref("ds:1"))
    real_delete = type(repo.blob).delete
    calls = []

    def failing_delete(self, key):
        calls.append(key)
        if len(calls) > 1:
            raise KeyboardInterrupt  # as if the process died after one deletion
        real_delete(self, key)

    monkeypatch.setattr(type(repo.blob), "delete", failing_delete)
    with pytest.raises(KeyboardInterrupt):
        repo.gc(GcOptions(min_age=0))
    monkeypatch.setattr(type(repo.blob), "delete", real_delete)
    swept = {pid for pid, (_, gone, _) in repo.index.condemned_packs().items() if gone}
    assert swept
    assert repo.verify(read_data=True).ok  # live versions are intact mid-sweep
    left = {k for k in repo.blob.list("packs/") if bytes.fromhex(k.rsplit("/", 1)[1]) in swept}
    assert left  # the interruption left swept packs behind
    repo.gc(GcOptions(min_age=0))
    assert not {k for k in repo.blob.list("packs/") if bytes.fromhex(k.rsplit("/", 1)[1]) in swept}
    assert repo.verify(read_data=True).ok


def test_gc_command(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=7, files=10, max_size=5000)
    cli("dataset", "upload", "ds", str(src))
    cli("dataset", "delete", "ds:1")
    plan = cli("store", "gc", "--min-age", "0", "--dry-run", "--json").json()
    assert plan["dry_run"] is True and plan["packs_condemned"] > 0 and plan["packs_deleted"] > 0
    done = cli("store", "gc", "--min-age", "0", "--json").json()
    assert done["packs_deleted"] == plan["packs_deleted"] and done["bytes_deleted"] == plan["bytes_deleted"]
    human = cli("store", "gc", "--min-age", "1h")
    assert "condemned: 0 packs" in human.out and "deleted: 0 packs" in human.out
    bad = cli("store", "gc", "--min-age", "soon", check=False)
    assert bad.code == 2 and "--min-age" in bad.err and len(bad.err.strip().splitlines()) == 1
    assert cli("store", "verify", "--read-data", "--json").json()["ok"] is True
