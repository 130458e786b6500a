"""Storage usage on real local stores: the report's figures are exact, checked against what garbage
collection actually frees; retention; the sizes ``dataset list`` and ``info`` show."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from helpers.trees import random_tree
from osmo_store import hashing
from osmo_store.errors import NotFoundError, UsageError
from osmo_store.gc import GcOptions
from osmo_store.ids import parse_ref
from osmo_store.packlayout import PackLayout, Segment
from osmo_store.packs import PackEntry
from osmo_store.chunkstore import PackCopier
from osmo_store.repository import Repository
from osmo_store.retention import RetentionPolicy
from osmo_store.transfer.upload import UploadRequest

DAY = 86400.0


def pack_bytes(repo: Repository) -> int:
    return sum(i.size for i in repo.blob.list_info("packs/"))


def figures(report: dict, name: str, version: int | None = None) -> dict:
    ds = next(d for d in report["datasets"] if d["name"] == name)
    return ds if version is None else next(v for v in ds["versions"] if v["version"] == version)


def evolve(folder, rng: random.Random, edits: int) -> None:
    """Change a few files of ``folder`` in place: rewrite some, append to some, add one."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in rng.sample(files, min(edits, len(files))):
        if rng.random() < 0.5:
            p.write_bytes(rng.randbytes(rng.randint(100, 6000)))
        else:
            p.write_bytes(p.read_bytes() + rng.randbytes(rng.randint(100, 3000)))
    (folder / f"new-{rng.randint(0, 10**9)}.bin").write_bytes(rng.randbytes(rng.randint(500, 5000)))


@pytest.fixture
def busy_store(local_repo, tmp_path):
    """Three datasets, 4-5 versions each, sharing files between versions and across datasets."""
    rng = random.Random(7)
    shared = random_tree(tmp_path / "shared", seed=99, files=6, max_size=5000)
    for d, name in enumerate(("lidar", "camera", "labels")):
        src = tmp_path / name
        random_tree(src, seed=d, files=25, max_size=6000)
        if name != "labels":
            for rel, data in shared.items():
                (src / "common" / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / "common" / rel).write_bytes(data)
        for _ in range(4 + (d == 0)):
            local_repo.upload(UploadRequest(name, [str(src)]))
            evolve(src, rng, edits=4)
    return local_repo


def test_unique_bytes_are_exactly_what_deleting_a_version_frees(busy_store):
    repo = busy_store
    rng = random.Random(3)
    checked = 0
    while True:
        report = repo.report()
        live = [(d["name"], v["version"]) for d in report["datasets"] for v in d["versions"]]
        if len(live) <= 3:
            break
        name, version = rng.choice(live)
        expected = figures(report, name, version)["unique_bytes"]
        dead = report["store"]["reclaimable_bytes"]
        assert report["store"]["stored_bytes"] == pack_bytes(repo)
        before = pack_bytes(repo)
        repo.log.delete_version(parse_ref(f"{name}:{version}"))
        stats = repo.gc(GcOptions(min_age=0))
        assert before - pack_bytes(repo) == dead + expected, (name, version, stats)
        checked += expected > 0
        assert repo.report()["store"]["reclaimable_bytes"] == 0  # collected: nothing left awaiting GC
    assert checked >= 5  # most deletions freed something: the check was not trivially 0 == 0
    assert repo.verify(read_data=True).ok


def test_unique_bytes_of_a_dataset_and_the_repack_branch(busy_store):
    repo = busy_store
    # a high repack threshold would leave dead chunks in place; 0.05 rewrites almost every touched pack
    report = repo.report(repack_threshold=0.05)
    expected = figures(report, "camera")["unique_bytes"]
    before = pack_bytes(repo)
    repo.log.delete_dataset("camera")
    stats = repo.gc(GcOptions(min_age=0, repack_threshold=0.05))
    assert stats.packs_repacked > 0  # the exactness covered copying live chunks into new packs
    assert before - pack_bytes(repo) == report["store"]["reclaimable_bytes"] + expected


def test_figures_add_up(busy_store):
    report = busy_store.report()
    store = report["store"]
    assert store["datasets"] == 3 and store["versions"] == 13
    assert store["stored_bytes"] == store["live_bytes"] + store["dead_bytes"]
    assert store["dead_bytes"] == store["reclaimable_bytes"] + store["unreclaimed_bytes"]
    assert store["logical_bytes"] == sum(d["logical_bytes"] for d in report["datasets"])
    assert store["objects"] > store["packs"] > 0 and store["chunks"] > 0 and store["manifest_nodes"] > 0
    for ds in report["datasets"]:
        assert ds["logical_bytes"] == sum(v["logical_bytes"] for v in ds["versions"])
        # versions share most chunks: the dataset stores far less than the sum of its versions
        assert max(v["stored_bytes"] for v in ds["versions"]) <= ds["stored_bytes"] < \
            sum(v["stored_bytes"] for v in ds["versions"])
        assert ds["dedup_ratio"] > 2
        for v in ds["versions"]:
            assert 0 <= v["unique_bytes"] <= v["stored_bytes"]
            assert 0 <= v["shared_bytes"] <= v["stored_bytes"]
    lidar, camera, labels = (figures(report, n) for n in ("lidar", "camera", "labels"))
    assert lidar["shared_bytes"] > 0 and camera["shared_bytes"] > 0  # the common/ files
    assert labels["shared_bytes"] == 0
    assert lidar["unique_bytes"] < lidar["stored_bytes"]


def test_a_version_sharing_nothing_new_frees_nothing(local_repo, tmp_path):
    src = tmp_path / "src"
    random_tree(src, seed=5, files=10, max_size=4000)
    local_repo.upload(UploadRequest("ds", [str(src)]))
    local_repo.upload(UploadRequest("copy", [str(src)]))  # the same files: no chunk is new
    report = local_repo.report()
    assert figures(report, "copy", 1)["unique_bytes"] == figures(report, "ds", 1)["unique_bytes"]
    # only the manifest nodes are unique (the same tree: even they are shared)
    assert figures(report, "copy", 1)["unique_bytes"] == 0
    assert figures(report, "copy", 1)["shared_bytes"] == figures(report, "copy", 1)["stored_bytes"]


def test_report_of_one_dataset_and_of_a_missing_one(busy_store):
    report = busy_store.report("labels")
    assert [d["name"] for d in report["datasets"]] == ["labels"]
    assert report["store"]["datasets"] == 3
    with pytest.raises(NotFoundError, match="nope"):
        busy_store.report("nope")


@pytest.mark.parametrize("target", [16384, 5000, 200_000])
def test_pack_layout_matches_the_copier(local_repo, target):
    """PackLayout computes, by bisection over segments, exactly the packs the copier writes."""
    rng = random.Random(target)
    local_repo.chunks.config = replace(local_repo.config, pack_target_size=target)
    copier = PackCopier(local_repo.chunks)
    layout = PackLayout(target)
    for s in range(30):  # source packs of 0-60 chunks, lengths spanning every msgpack int width
        entries = []
        for i in range(rng.randint(0, 60)):
            data = rng.randbytes(rng.choice([1, 100, 130, 300, 4000, 70000]) + rng.randint(0, 50))
            raw = len(data) * rng.choice([1, 3, 1000])
            cid = bytes([s, i]) * 16
            copier.add(cid, data, raw, rng.randint(0, 1))
            entries.append(PackEntry(cid, 0, len(data), raw, 0))
        layout.extend(Segment(entries))
    copier.flush()
    layout.close()
    assert layout.sizes == [size for _, size in copier.packs] and len(layout.sizes) > 3


# retention ------------------------------------------------------------------------------------

def aged_store(local_repo, tmp_path, clock: list[float]) -> Repository:
    """``ds`` with versions 1..6, one a day, v2 tagged ``golden``."""
    src = tmp_path / "src"
    random_tree(src, seed=11, files=12, max_size=5000)
    rng = random.Random(4)
    for _ in range(6):
        local_repo.upload(UploadRequest("ds", [str(src)]))
        evolve(src, rng, edits=3)
        clock[0] += DAY
    local_repo.log.set_tag(parse_ref("ds:2"), "golden")
    return local_repo


@pytest.fixture
def clocked_repo(local_repo):
    clock = [1.8e9]
    local_repo.log.clock = lambda: clock[0]
    local_repo.clock = lambda: clock[0]
    return local_repo, clock


def test_retain_dry_run_lists_what_would_go_and_what_it_frees(clocked_repo, tmp_path):
    repo, clock = clocked_repo
    aged_store(repo, tmp_path, clock)
    policy = RetentionPolicy(keep_last=2, keep_within=2.5 * DAY, keep_tagged=True)
    plan = repo.retain("ds", policy, dry_run=True)
    kept = {r["version"]: r["kept_by"] for r in plan["versions"]}
    assert plan["delete"] == [1, 3, 4]  # 6, 5 last two; 5, 4?.. within 2.5 days: 4 is 3 days old
    assert kept[6][0] == "latest" and "tagged golden" in kept[2] and kept[5]
    assert plan["deleted"] == [] and len(repo.describe("ds")["versions"]) == 6
    assert all(r["owned_bytes"] > 0 for r in plan["versions"] if r["version"] in (1, 3, 4))
    # together they free at least the sum of what each frees alone
    assert plan["frees_bytes"] >= sum(r["unique_bytes"] for r in plan["versions"] if r["version"] in (1, 3, 4))
    dead = repo.report()["store"]["reclaimable_bytes"]
    before = pack_bytes(repo)
    done = repo.retain("ds", policy)
    assert done["deleted"] == [1, 3, 4]
    assert [v["version"] for v in repo.describe("ds")["versions"] if not v["deleted"]] == [2, 5, 6]
    repo.gc(GcOptions(min_age=0))
    assert before - pack_bytes(repo) == dead + plan["frees_bytes"]


def test_retain_never_deletes_the_latest_and_needs_a_rule(clocked_repo, tmp_path):
    repo, clock = clocked_repo
    aged_store(repo, tmp_path, clock)
    clock[0] += 100 * DAY
    done = repo.retain("ds", RetentionPolicy(keep_within=DAY))
    assert done["deleted"] == [1, 2, 3, 4, 5]
    assert [v["version"] for v in repo.describe("ds")["versions"] if not v["deleted"]] == [6]
    with pytest.raises(UsageError, match="at least one rule"):
        repo.retain("ds", RetentionPolicy())
    with pytest.raises(UsageError, match="keep-last"):
        repo.retain("ds", RetentionPolicy(keep_last=0))
    with pytest.raises(NotFoundError, match="nope"):
        repo.retain("nope", RetentionPolicy(keep_last=1))


def test_retain_honours_a_tag_set_while_it_was_deciding(clocked_repo, tmp_path):
    repo, clock = clocked_repo
    aged_store(repo, tmp_path, clock)
    policy = RetentionPolicy(keep_last=1, keep_tagged=True)
    real = repo.log.delete_versions

    def tag_first(name, choose):  # another machine tags v3 just before the delete is committed
        other = Repository(repo.blob, repo.config, cache_dir=str(tmp_path / "other"))
        other.log.set_tag(parse_ref("ds:3"), "keep-me")
        other.close()
        return real(name, choose)

    repo.log.delete_versions = tag_first
    done = repo.retain("ds", policy)
    assert 3 in done["delete"] and 3 not in done["deleted"]
    assert {v["version"] for v in repo.describe("ds")["versions"] if not v["deleted"]} == {2, 3, 6}


# dataset list / info ----------------------------------------------------------------------------

def test_list_and_info_show_stored_against_logical(busy_store):
    rows = {r["name"]: r for r in busy_store.list_datasets()}
    report = busy_store.report()
    for name, row in rows.items():
        ds = figures(report, name)
        assert row["stored_bytes"] == ds["stored_bytes"] < row["logical_bytes_all"] == ds["logical_bytes"]
        assert row["dedup_ratio"] == pytest.approx(ds["dedup_ratio"]) and row["dedup_ratio"] > 1
    info = busy_store.describe("lidar")
    assert info["usage"]["stored_bytes"] == rows["lidar"]["stored_bytes"]
    for v in info["versions"]:
        assert v["usage"] == {k: figures(report, "lidar", v["version"])[k] for k in v["usage"]}


@pytest.mark.parametrize("backend", ["s3", "azure"])
def test_unique_bytes_are_exact_on_object_stores(request, backend, tmp_path, tiny_config):
    from osmo_store.blob import open_blob_store
    from osmo_store.repository import init_store

    fixture = "s3_bucket" if backend == "s3" else "azure_container"
    blob = open_blob_store(f"{request.getfixturevalue(fixture).url}/usage")
    init_store(blob, tiny_config)
    repo = Repository(blob, tiny_config, cache_dir=str(tmp_path / "cache"))
    rng = random.Random(5)
    src = tmp_path / "src"
    random_tree(src, seed=8, files=15, max_size=6000)
    for _ in range(3):
        repo.upload(UploadRequest("ds", [str(src)]))
        evolve(src, rng, edits=5)
    report = repo.report()
    before = pack_bytes(repo)
    repo.log.delete_version(parse_ref("ds:2"))
    repo.gc(GcOptions(min_age=0))
    assert before - pack_bytes(repo) == report["store"]["reclaimable_bytes"] + figures(report, "ds", 2)["unique_bytes"]
    assert figures(report, "ds", 2)["owned_bytes"] > 0
    repo.close()


def two_writers_store(repo: Repository, tmp_path, seed: str) -> bytes:
    """Datasets ``a`` and ``b``, each six chunks of its own and one ``shared.bin`` they share, and
    ``c`` holding just ``shared.bin``, written as two uploads running at once write them: both stored
    the shared chunk, each in its own pack (the index knows both copies). Returns the shared bytes."""
    rng = random.Random(seed)
    shared = rng.randbytes(200)  # below the smallest chunk: one chunk per file
    own = {name: [rng.randbytes(200) for _ in range(6)] for name in ("a", "b")}
    writers = [repo.chunks.writer() for _ in own]
    for writer, name in zip(writers, own):  # both writers take the shared chunk before either is indexed
        for data in [shared, *own[name]]:
            assert writer.add(hashing.digest(data), data)
    for writer in writers:
        writer.flush()
        writer.close()
    for name, datas in [*own.items(), ("c", [])]:  # the uploads find every chunk stored
        src = tmp_path / name
        src.mkdir()
        (src / "shared.bin").write_bytes(shared)
        for i, data in enumerate(datas):
            (src / f"{name}{i}.bin").write_bytes(data)
        assert repo.upload(UploadRequest(name, [str(src)])).chunks_new == 0
    with repo.index.read() as txn:
        assert len(repo.index.locations(hashing.digest(shared), txn)) == 2
    return shared


@pytest.mark.parametrize("first", ["a", "b"])
def test_unique_bytes_are_exact_where_two_writers_stored_a_chunk_twice(local_repo, tmp_path, first):
    """When one of the two packs holding the shared chunk is repacked, gc does not copy it (the other
    pack keeps it); once that pack leaves too, it does. What deleting a dataset frees is priced the
    same way, to the byte, in either order."""
    repo = local_repo
    shared = two_writers_store(repo, tmp_path, first)
    for name in (first, {"a": "b", "b": "a"}[first]):
        report = repo.report()
        expected = figures(report, name)["unique_bytes"]
        reclaimable = report["store"]["reclaimable_bytes"]
        before = pack_bytes(repo)
        repo.log.delete_dataset(name)
        stats = repo.gc(GcOptions(min_age=0))
        assert before - pack_bytes(repo) == reclaimable + expected, (name, stats)
    assert repo.verify(read_data=True).ok
    repo.download("c", str(tmp_path / "back"))
    assert (tmp_path / "back" / "shared.bin").read_bytes() == shared


def test_unique_bytes_count_the_copy_a_repack_must_make_once_the_other_pack_leaves(local_repo, tmp_path):
    """A repack that needs not copy the shared chunk (the other pack keeps it) must copy it after
    all when deleting a dataset sends that other pack away: what that deletion frees counts the copy."""
    repo = local_repo
    two_writers_store(repo, tmp_path, "order")
    def pack_of(path) -> bytes:
        return repo.index.chunk_location(hashing.digest(path.read_bytes())).pack_id

    home = pack_of(tmp_path / "c" / "shared.bin")  # the copy gc counts live; the other one is dead
    first = next(name for name in ("a", "b") if pack_of(tmp_path / name / f"{name}0.bin") == home)
    repo.log.delete_dataset(first)  # its pack, home of the shared chunk, is repacked without copying it
    report = repo.report()
    second = {"a": "b", "b": "a"}[first]
    expected = figures(report, second)["unique_bytes"]
    before = pack_bytes(repo)
    repo.log.delete_dataset(second)
    stats = repo.gc(GcOptions(min_age=0))
    assert stats.packs_written == 1  # the shared chunk was copied after all
    assert before - pack_bytes(repo) == report["store"]["reclaimable_bytes"] + expected, stats
