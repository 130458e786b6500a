"""The repository on the memory and local backends with tiny sizes: versions, dedup, catalog, reindex."""

from __future__ import annotations

import filecmp
import multiprocessing
import os
import random

import pytest

from osmo_store.blob import LocalBlobStore
from osmo_store.errors import AlreadyExistsError, NotFoundError, UsageError
from osmo_store.repository import Repository
from osmo_store.transfer.upload import UploadRequest

TABLES = ("chunks", "dups", "packs", "entries", "condemned", "datasets", "names", "versions", "tags", "meta")


def make_tree(root, seed=0, files=30, max_size=20_000):
    rng = random.Random(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(files):
        sub = os.path.join(root, f"d{i % 4}")
        os.makedirs(sub, exist_ok=True)
        with open(os.path.join(sub, f"f{i:03d}.bin"), "wb") as f:
            f.write(rng.randbytes(rng.randint(0, max_size)))
    return root


def same_tree(a, b) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(same_tree(os.path.join(a, d), os.path.join(b, d))
                                               for d in cmp.common_dirs)


def test_versions_dedup_and_byte_exact_download(memory_repo, tmp_path):
    src = make_tree(tmp_path / "src")
    r1 = memory_repo.upload(UploadRequest("ds", [str(src)], tags=["first"]))
    assert (r1.version, r1.files) == (1, 30)
    with open(src / "d1" / "f001.bin", "ab") as f:
        f.write(b"appended")
    r2 = memory_repo.upload(UploadRequest("ds", [str(src)]))
    assert r2.version == 2
    assert 0 < r2.stored_bytes < r1.stored_bytes / 5
    r3 = memory_repo.upload(UploadRequest("other", [str(src)]))
    assert r3.chunks_new == 0  # cross-dataset dedup
    memory_repo.download("ds:first", str(tmp_path / "v1"))
    memory_repo.download("ds", str(tmp_path / "v2"))
    assert same_tree(src, tmp_path / "v2")
    assert not same_tree(src, tmp_path / "v1")
    assert memory_repo.verify(read_data=True).ok


def test_reindex_rebuilds_identical_index(local_repo, tmp_path):
    src = make_tree(tmp_path / "src")
    local_repo.upload(UploadRequest("ds", [str(src)], tags=["a"], metadata={"k": "v"}, labels={"team": "x"}))
    local_repo.log.set_tag(__import__("osmo_store.ids", fromlist=["parse_ref"]).parse_ref("ds:1"), "gold")
    local_repo.upload(UploadRequest("ds2", [str(src / "d1")]))
    local_repo.log.rename("ds2", "renamed")
    local_repo.upload(UploadRequest("ds", [str(src / "d2")]))
    from osmo_store.ids import parse_ref
    local_repo.log.delete_version(parse_ref("ds:1"))
    before = local_repo.index.dump(TABLES)
    local_repo.reindex()
    assert local_repo.index.dump(TABLES) == before
    # a second client with an empty cache folds the same state
    other = Repository(local_repo.blob, local_repo.config, cache_dir=str(tmp_path / "other-cache"))
    other.reindex()
    assert other.index.dump(TABLES) == before
    other.close()


def test_catalog_operations(memory_repo, tmp_path):
    from osmo_store.ids import parse_ref
    src = make_tree(tmp_path / "src", files=3)
    memory_repo.upload(UploadRequest("ds", [str(src)]))
    memory_repo.upload(UploadRequest("ds", [str(src / "d0")]))
    log = memory_repo.log
    log.set_tag(parse_ref("ds:1"), "gold")
    assert log.resolve(parse_ref("ds:gold"))[1]["version"] == 1
    assert log.resolve(parse_ref("ds"))[1]["version"] == 2
    assert log.resolve(parse_ref("ds:latest"))[1]["version"] == 2
    with pytest.raises(UsageError):
        log.set_tag(parse_ref("ds:1"), "latest")
    assert log.change_metadata(parse_ref("ds:2"), {"a": "1", "b": "2"}, []) == {"a": "1", "b": "2"}
    assert log.change_metadata(parse_ref("ds:2"), {}, ["a"]) == {"b": "2"}
    assert log.change_labels("ds", {"team": "perception"}, []) == {"team": "perception"}
    log.delete_version(parse_ref("ds:2"))
    assert log.resolve(parse_ref("ds"))[1]["version"] == 1
    with pytest.raises(NotFoundError, match="deleted"):
        log.resolve(parse_ref("ds:2"))
    r = memory_repo.upload(UploadRequest("ds", [str(src)]))
    assert r.version == 3  # numbers are never reused
    log.delete_version(parse_ref("ds:gold"))
    assert "gold" not in memory_repo.catalog.tags(log.dataset_id("ds"))
    memory_repo.upload(UploadRequest("taken", [str(src)]))
    with pytest.raises(AlreadyExistsError):
        log.rename("ds", "taken")
    log.rename("ds", "fresh")
    with pytest.raises(NotFoundError):
        log.dataset_id("ds")
    assert log.resolve(parse_ref("fresh:3"))[1]["version"] == 3
    assert log.delete_dataset("fresh") == 1
    with pytest.raises(NotFoundError):
        log.dataset_id("fresh")
    assert memory_repo.upload(UploadRequest("fresh", [str(src)])).version == 1


def test_stat_cache_skips_unchanged_files(local_repo, tmp_path, monkeypatch):
    from osmo_store.transfer import upload as upload_mod

    monkeypatch.setattr(upload_mod, "RACY_SECONDS", -1)  # cache files whose ctime is fresh (utime just set it)
    src = make_tree(tmp_path / "src", files=10)
    old = 1_600_000_000
    for folder, _, files in os.walk(src):
        for name in files:
            os.utime(os.path.join(folder, name), (old, old))
    local_repo.upload(UploadRequest("ds", [str(src)]))
    again = local_repo.upload(UploadRequest("ds", [str(src)]))
    assert again.files_unchanged == 10
    path = src / "d0" / "f000.bin"
    path.write_bytes(b"different")
    os.utime(path, (old + 5, old + 5))
    third = local_repo.upload(UploadRequest("ds", [str(src)]))
    assert third.files_unchanged == 9
    local_repo.download("ds", str(tmp_path / "out"))
    assert same_tree(src, tmp_path / "out")


def test_failed_upload_leaves_no_version_and_reuses_packs(memory_repo, tmp_path, monkeypatch):
    src = make_tree(tmp_path / "src", files=40)
    from osmo_store.transfer import upload as upload_mod

    real = upload_mod.Uploader._process
    calls = {"n": 0}

    def flaky(self, src_file, writer):
        calls["n"] += 1
        if calls["n"] == 30:
            raise OSError("simulated failure")
        return real(self, src_file, writer)

    monkeypatch.setattr(upload_mod.Uploader, "_process", flaky)
    with pytest.raises(OSError):
        memory_repo.upload(UploadRequest("ds", [str(src)]), workers=1)
    assert memory_repo.catalog.dataset_id("ds") is None
    assert memory_repo.verify().ok
    monkeypatch.setattr(upload_mod.Uploader, "_process", real)
    full = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(src) for f in fs)
    result = memory_repo.upload(UploadRequest("ds", [str(src)]))
    assert result.version == 1 and result.chunks_deduplicated > 0
    assert result.stored_bytes < full


def _upload_many(root: str, cache: str, src: str, count: int, config) -> list[int]:
    repo = Repository(LocalBlobStore(root), config, cache_dir=cache)
    versions = [repo.upload(UploadRequest("shared", [src]), workers=1).version for _ in range(count)]
    repo.close()
    return versions


def test_concurrent_writers_get_distinct_versions(tmp_path, tiny_config):
    from osmo_store.repository import init_store
    root = str(tmp_path / "store")
    init_store(LocalBlobStore(root), tiny_config)
    srcs = [str(make_tree(tmp_path / f"src{i}", seed=i, files=3)) for i in range(4)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        results = pool.starmap(_upload_many, [(root, str(tmp_path / f"cache{i}"), srcs[i], 5, tiny_config)
                                              for i in range(4)])
    flat = sorted(v for vs in results for v in vs)
    assert flat == list(range(1, 21))
    repo = Repository(LocalBlobStore(root), tiny_config, cache_dir=str(tmp_path / "reader"))
    repo.log.sync()
    for i, versions in enumerate(results):
        for v in versions:
            out = tmp_path / f"out-{v}"
            repo.download(f"shared:{v}", str(out))
            assert same_tree(srcs[i], out)
    repo.close()
