"""One truth in every figure: every command that shows a count or a size of the store shows the same
one, under the same name, and garbage collection then frees exactly what they said.

Each test builds a real store in one shape (versions deleted, tags, chunks shared across datasets,
packs left mostly dead so that gc repacks them) through the ``osmo`` CLI in subprocesses (the first
test on a local folder and on S3 (moto), the others on a local folder), and reads it back through
every command: upload's summary, ``dataset list/info``, ``store stats``, ``store verify``, ``store gc
--dry-run``, ``store report`` as JSON, CSV, text and HTML. docs/COSTS.md defines the figures.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import Cli
from osmo_store.blob import open_blob_store
from osmo_store.report.render import human_bytes

STORE_COUNTS = ("versions", "chunks", "manifest_nodes", "packs")
STORE_SIZES = ("stored_bytes", "live_bytes", "dead_bytes")


@pytest.fixture(params=["local", "s3"])
def store_cli(request, tmp_path) -> Cli:
    """A CLI client of a new store with tiny chunks (~1 KiB) and packs (16 KiB): a local folder, or
    a bucket of the moto S3 server (credentials and endpoint from the environment)."""
    cli = Cli(tmp_path)
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        cli.env.update(bucket.env)
        cli.store = f"{bucket.url}/figures"
    cli.init_tiny()
    return cli


def pack_bytes(cli: Cli) -> int:
    """The bytes of every pack in the store, as the store lists them (not as osmo counts them)."""
    blob = open_blob_store(cli.store)
    try:
        return sum(info.size for info in blob.list_info("packs/"))
    finally:
        blob.close()


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def upload(cli: Cli, target: str, folder: Path) -> dict:
    return cli("dataset", "upload", target, str(folder), "--json").json()


def build_busy_store(cli: Cli, root: Path) -> dict[tuple[str, int], dict]:
    """Three datasets: versions that change a few files, a folder shared by two datasets, tags, a
    tagged version deleted, a dataset's first version deleted, and a version whose files alternate
    with files the next version drops (its packs end up mostly dead: gc repacks them). The three
    datasets are uploaded side by side. Returns every upload's JSON by (dataset, version)."""
    rng = random.Random(18)
    common = {f"common/c{i}.bin": rng.randbytes(rng.randint(800, 3000)) for i in range(6)}

    def lidar_versions(rng: random.Random) -> list[dict]:
        lidar = {f"scan{i:02d}.bin": rng.randbytes(rng.randint(500, 4000)) for i in range(12)} | common
        ups = []
        for n in range(4):
            write_files(root / "lidar", lidar)
            ups.append(upload(cli, {1: "lidar:gold", 2: "lidar:prod"}.get(n, "lidar"), root / "lidar"))
            for rel in rng.sample(sorted(lidar), 3):
                lidar[rel] = rng.randbytes(rng.randint(500, 4000))
        return ups

    def camera_versions(rng: random.Random) -> list[dict]:
        camera = {f"frame{i}.bin": rng.randbytes(rng.randint(1000, 5000)) for i in range(5)} | common
        ups = []
        for n in range(2):
            write_files(root / f"camera{n}", camera)
            ups.append(upload(cli, "camera", root / f"camera{n}"))
            camera[f"frame{n}.bin"] = rng.randbytes(3000)
        return ups

    def labels_versions(rng: random.Random) -> list[dict]:
        # labels:1 alternates files 'a' (kept) and 'b' (dropped by labels:2): its packs become mostly dead
        labels = {}
        for i in range(24):
            labels[f"{i:03d}-a.bin"] = rng.randbytes(700)
            labels[f"{i:03d}-b.bin"] = rng.randbytes(1400)
        write_files(root / "labels1", labels)
        ups = [upload(cli, "labels", root / "labels1")]
        write_files(root / "labels2", {k: v for k, v in labels.items() if k.endswith("-a.bin")})
        return ups + [upload(cli, "labels", root / "labels2")]

    chains = (lidar_versions, camera_versions, labels_versions)
    with ThreadPoolExecutor(len(chains)) as pool:
        done = [pool.submit(chain, random.Random(seed)) for seed, chain in enumerate(chains)]
        uploads = {(up["dataset"], up["version"]): up for future in done for up in future.result()}
    assert sorted(uploads) == [("camera", 1), ("camera", 2), ("labels", 1), ("labels", 2)] + \
        [("lidar", n) for n in range(1, 5)]
    deleted = cli("dataset", "delete", "lidar:gold")  # a tagged version: the tag goes with it
    assert deleted.out.strip() == "deleted lidar:2; 1 tag went with it: gold"
    assert cli("dataset", "delete", "labels:1", "--json").json()["tags_removed"] == []
    return uploads


def build_shared_pack_store(cli: Cli, root: Path) -> dict[tuple[str, int], dict]:
    """A version that alone holds a changed file whose bytes sit in one pack with live data: deleting
    it frees nothing until that pack is repacked (its "unique" is below what it added)."""
    rng = random.Random(5)
    files = {"big.bin": rng.randbytes(9000), "notes.txt": rng.randbytes(1500)}
    write_files(root / "v1", files)
    uploads = {("notes", 1): upload(cli, "notes", root / "v1")}
    write_files(root / "v2", {**files, "notes.txt": rng.randbytes(1500)})
    uploads[("notes", 2)] = upload(cli, "notes", root / "v2")
    write_files(root / "solo", {"alone.bin": rng.randbytes(6000)})
    uploads[("solo", 1)] = upload(cli, "solo", root / "solo")
    return uploads


def every_figure(cli: Cli, tmp_path: Path) -> dict:
    """What every command says about the store, read through the CLI (the readers run side by side,
    after one command has brought the local index up to date)."""
    report = cli("store", "report", "--json").json()
    html_file = tmp_path / "report.html"
    names = [d["name"] for d in report["datasets"]]
    commands = {
        "csv": ("store", "report", "--csv"), "text": ("store", "report"),
        "html": ("store", "report", "--html", str(html_file)),
        "stats": ("store", "stats", "--json"), "stats_text": ("store", "stats"),
        "verify": ("store", "verify", "--json"),
        "gc": ("store", "gc", "--dry-run", "--min-age", "0", "--json"),
        "gc_default": ("store", "gc", "--dry-run", "--json"), "list": ("dataset", "list", "--json"),
        **{("info", name): ("dataset", "info", name, "--json") for name in names},
        **{("info_text", name): ("dataset", "info", name) for name in names},
    }
    with ThreadPoolExecutor(4) as pool:
        done = dict(zip(commands, pool.map(lambda args: cli(*args), commands.values())))
    return {
        "report": report,
        "csv": list(csv.DictReader(io.StringIO(done["csv"].out))),
        "text": done["text"].out,
        "html": html_file.read_text(),
        "stats": done["stats"].json(),
        "stats_text": done["stats_text"].out,
        "verify": done["verify"].json(),
        "gc": done["gc"].json(),
        "gc_default": done["gc_default"].json(),
        "list": {r["name"]: r for r in done["list"].json()},
        "info": {name: done[("info", name)].json() for name in names},
        "info_text": {name: done[("info_text", name)].out for name in names},
    }


def assert_figures_agree(seen: dict, uploads: dict[tuple[str, int], dict]) -> None:
    store = seen["report"]["store"]
    # the store: one computation, the same names in stats, report, verify and gc
    assert seen["stats"] == store
    assert store["stored_bytes"] == store["live_bytes"] + store["dead_bytes"]
    assert store["dead_bytes"] == store["reclaimable_bytes"] + store["unreclaimed_bytes"]
    assert store["logical_bytes"] == sum(d["logical_bytes"] for d in seen["report"]["datasets"])
    for key in STORE_COUNTS:
        assert seen["verify"][key] == store[key], key
        assert seen["gc"][key] == store[key] == seen["gc_default"][key], key
    for key in STORE_SIZES:
        assert seen["gc"][key] == store[key] == seen["gc_default"][key], key
    assert seen["gc"]["freed_bytes"] == store["reclaimable_bytes"]
    assert seen["gc_default"]["freed_bytes"] == 0  # every pack is younger than the default hour
    assert seen["verify"]["ok"] and store["missing_chunks"] == 0 and store["damaged_versions"] == 0
    # datasets and versions: list, info, report (JSON, CSV) and the uploads
    rows = {(r["dataset"], r["row"], r["version"]): r for r in seen["csv"]}
    for ds in seen["report"]["datasets"]:
        name = ds["name"]
        listed, info = seen["list"][name], seen["info"][name]
        assert (listed["stored_bytes"], listed["logical_bytes_all"], listed["versions"]) == \
            (ds["stored_bytes"], ds["logical_bytes"], len(ds["versions"]))
        assert info["usage"] == {k: v for k, v in ds.items() if k not in ("name", "versions")}
        assert ds["new_bytes"] == sum(v["new_bytes"] for v in ds["versions"])
        total = rows[(name, "total", "")]
        assert int(total["unique_bytes"]) == ds["unique_bytes"] and int(total["new_bytes"]) == ds["new_bytes"]
        by_version = {v["version"]: v for v in info["versions"]}
        for v in ds["versions"]:
            figures = {k: x for k, x in v.items() if k not in ("version", "created", "tags", "files")}
            assert by_version[v["version"]]["usage"] == figures
            assert v["new_bytes"] == by_version[v["version"]]["new_bytes"] == uploads[(name, v["version"])]["new_bytes"]
            assert uploads[(name, v["version"])]["new_bytes"] == uploads[(name, v["version"])]["stored_bytes"]
            row = rows[(name, "version", str(v["version"]))]
            for key in ("logical_bytes", "stored_bytes", "new_bytes", "unique_bytes", "shared_bytes"):
                assert int(row[key]) == v[key], (name, v["version"], key)
            assert row["note"] == (v.get("note") or "")
            assert (v["new_bytes"] == v["unique_bytes"]) == ("note" not in v), v  # a note exactly where they differ
            if "note" in v:
                assert f"version {v['version']}: new {human_bytes(v['new_bytes'])}, unique " \
                       f"{human_bytes(v['unique_bytes'])}: {v['note']}" in seen["info_text"][name]
    # the human renderings show the same numbers under the same words
    shown = {key: human_bytes(store[key]) for key in ("stored_bytes", "live_bytes", "dead_bytes",
                                                        "reclaimable_bytes")}
    assert f"{shown['stored_bytes']} stored in {store['packs']} packs" in seen["text"]
    assert f"live {shown['live_bytes']}, dead {shown['dead_bytes']}, reclaimable now " \
           f"{shown['reclaimable_bytes']}" in seen["text"]
    assert f"{store['chunks']} chunks and {store['manifest_nodes']} manifest nodes" in seen["text"]
    stats_lines = dict(line.split(None, 1) if not line.startswith("  ") else ("  " + line.split()[0],
                       line.split(None, 1)[1]) for line in seen["stats_text"].splitlines() if line.strip())
    assert stats_lines["stored"].startswith(shown["stored_bytes"] + " in ")
    assert stats_lines["  live"] == shown["live_bytes"] and stats_lines["  dead"] == shown["dead_bytes"]
    assert stats_lines["reclaimable"] == shown["reclaimable_bytes"]
    assert stats_lines["chunks"] == str(store["chunks"])
    for label, key in (("stored", "stored_bytes"), ("live", "live_bytes"), ("dead", "dead_bytes"),
                       ("reclaimable now", "reclaimable_bytes")):
        assert f'<div class="card">{label}<span class="v">{shown[key]}</span></div>' in seen["html"], label
    for label, key in (("chunks", "chunks"), ("manifest nodes", "manifest_nodes"), ("packs", "packs")):
        assert f'<div class="card">{label}<span class="v">{store[key]:,}</span></div>' in seen["html"], label


def collect_and_check(cli: Cli, repack_expected: bool | None = None) -> dict:
    """Run gc --min-age 0 for real: it frees exactly the reclaimable bytes every command announced
    (``repack_expected``: whether it must repack a pack, or either)."""
    before = pack_bytes(cli)
    plan = cli("store", "gc", "--dry-run", "--min-age", "0", "--json").json()
    assert repack_expected is None or (plan["packs_repacked"] > 0) == repack_expected, plan
    done = cli("store", "gc", "--min-age", "0", "--json").json()
    assert before - pack_bytes(cli) == plan["freed_bytes"] == done["freed_bytes"]
    assert (done["packs_written"], done["bytes_written"]) == (plan["packs_written"], plan["bytes_written"])
    after = cli("store", "stats", "--json").json()
    assert after["reclaimable_bytes"] == 0 and after["stored_bytes"] == pack_bytes(cli)
    assert after["dead_bytes"] == after["unreclaimed_bytes"]
    return after


def test_every_command_shows_the_same_figures_and_gc_frees_what_they_say(store_cli, tmp_path):
    uploads = build_busy_store(store_cli, tmp_path / "src")
    seen = every_figure(store_cli, tmp_path)
    assert_figures_agree(seen, uploads)
    store = seen["report"]["store"]
    assert store["reclaimable_bytes"] > 0 and store["versions"] == 6 and store["datasets"] == 3
    tags = {ds["name"]: ds["tags"] for ds in seen["info"].values()}
    assert tags["lidar"] == {"prod": 3}  # gold went with lidar:2
    lidar = {r["dataset"]: r for r in seen["csv"] if r["row"] == "total"}["lidar"]
    assert int(lidar["shared_bytes"]) > 0  # the common/ files of lidar and camera
    collect_and_check(store_cli, repack_expected=True)


@pytest.mark.parametrize("store_cli", ["local"], indirect=True)  # the first test covers both backends
def test_after_a_repack_deleting_a_version_frees_what_every_command_said(store_cli, tmp_path):
    uploads = build_busy_store(store_cli, tmp_path / "src")
    after = collect_and_check(store_cli, repack_expected=True)
    again = every_figure(store_cli, tmp_path)
    assert_figures_agree(again, uploads)
    assert again["stats"] == after
    lidar_versions = {v["version"]: v for d in again["report"]["datasets"] if d["name"] == "lidar"
                      for v in d["versions"]}
    first = lidar_versions[1]
    unique = first["unique_bytes"]
    # it alone holds the three files version 2 changed; whether deleting it frees them now depends on how
    # the repack laid out the packs (uploads ran side by side): if not, the note must say why
    assert first["owned_bytes"] > 0
    assert unique > 0 or "shares packs with live data" in first.get("note", ""), first
    before = pack_bytes(store_cli)
    store_cli("dataset", "delete", "lidar:1")
    assert store_cli("store", "stats", "--json").json()["reclaimable_bytes"] == unique
    collect_and_check(store_cli)
    assert before - pack_bytes(store_cli) == unique


@pytest.mark.parametrize("store_cli", ["local"], indirect=True)  # the backend is the first test's concern
def test_new_and_unique_differ_only_with_a_reason(store_cli, tmp_path):
    uploads = build_shared_pack_store(store_cli, tmp_path / "src")
    seen = every_figure(store_cli, tmp_path)
    assert_figures_agree(seen, uploads)
    notes = {(d["name"], v["version"]): v for d in seen["report"]["datasets"] for v in d["versions"]}
    first, solo = notes[("notes", 1)], notes[("solo", 1)]
    # notes:1 alone holds the first notes.txt, but its bytes share a pack with big.bin (live in notes:2)
    assert first["owned_bytes"] > 0 and first["unique_bytes"] == 0 < first["new_bytes"]
    assert "shares packs with live data: freed after a repack" in first["note"]
    assert "later versions or other datasets use data it added" in first["note"]
    assert "notes:1: new and unique differ" not in seen["text"]  # the text report notes latest versions only
    assert "shares packs with live data" in seen["html"]
    # a version alone in its packs: deleting it frees exactly what its upload added
    assert solo["unique_bytes"] == solo["new_bytes"] == uploads[("solo", 1)]["new_bytes"] and "note" not in solo
    assert solo["unique_bytes"] > solo["stored_bytes"]  # whole packs: their headers and footers too
    before = pack_bytes(store_cli)
    store_cli("dataset", "delete", "notes:1")
    store_cli("dataset", "delete", "solo:1")
    collect_and_check(store_cli, repack_expected=False)
    assert before - pack_bytes(store_cli) == solo["unique_bytes"] + first["unique_bytes"]
    # the held bytes are freed once the pack is repacked (a threshold its dead share reaches)
    report = store_cli("store", "report", "--json", "--repack-threshold", "0.05").json()
    assert report["store"]["reclaimable_bytes"] > 0
    freed = store_cli("store", "gc", "--min-age", "0", "--repack-threshold", "0.05", "--json").json()
    assert freed["packs_repacked"] >= 1 and freed["freed_bytes"] == report["store"]["reclaimable_bytes"]
    assert store_cli("store", "verify", "--read-data", "--json").json()["ok"]


def test_an_empty_store_has_zero_figures_everywhere(cli, tmp_path):
    cli.init_tiny()
    seen = {"stats": cli("store", "stats", "--json").json(), "verify": cli("store", "verify", "--json").json(),
            "gc": cli("store", "gc", "--dry-run", "--min-age", "0", "--json").json()}
    for key in STORE_COUNTS:
        assert seen["stats"][key] == seen["verify"][key] == seen["gc"][key] == 0, key
    assert seen["stats"]["stored_bytes"] == seen["stats"]["reclaimable_bytes"] == 0
    assert "0 packs" in cli("store", "report").out and os.path.isdir(cli.store)
