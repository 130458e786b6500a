"""End to end through the real ``osmo`` CLI (a subprocess per command) on real folders and a real store.

Every test builds folders on disk, runs ``osmo`` as a user would and checks exit codes, the exact JSON
it prints and the bytes, exec bits and mtimes of what comes back.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest

from conftest import Cli
from helpers.trees import files_only, random_tree, snapshot, write_file

MTIME0 = 1_650_000_000_123_456_789  # odd nanoseconds on purpose


def assert_error(result, code: int, *needles: str) -> None:
    """Exit ``code``, nothing on stdout, exactly one stderr line ``osmo: error: ...`` naming ``needles``."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.err
    lines = result.err.strip("\n").split("\n")
    assert len(lines) == 1, result.err
    assert lines[0].startswith("osmo: error: "), result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert result.out == ""


def inspect_files(cli, ref: str) -> dict[str, dict]:
    return {f["path"]: f for f in cli("dataset", "inspect", ref, "--json").json()["files"]}


def info(cli, name: str) -> dict:
    return cli("dataset", "info", name, "--json").json()


# --- round trip ------------------------------------------------------------------------------------

ODD_FILES = {
    "empty": b"",
    "nested/empty-too": b"",
    "héllo wörld.txt": "unicode content: ünïcödé\n".encode(),
    "emoji 🚀 rocket.bin": b"\x00\x01\x02 rocket",
    "has#hash and %percent": b"hash",
    "new\nline": b"a name with a newline",
    "back\\slash": b"a name with a backslash",
    "tab\tand 'quotes\"": b"tabs and quotes",
    "-leading-dash": b"dash",
    "trailing space ": b"space",
    "日本語/ファイル.txt": "こんにちは".encode(),
    "sp ace/nested deeper/with space.txt": b"deep with spaces\n" * 100,
    "a/b/c/d/e/f/g/deep.txt": b"very deep",
}


def build_odd_tree(src) -> dict[str, int]:
    """The odd tree; returns path -> size of every file."""
    sizes = {}
    for i, (rel, data) in enumerate(sorted(ODD_FILES.items())):
        write_file(src / rel, data, mtime_ns=MTIME0 + i * 1_000_003)
        sizes[rel] = len(data)
    script = b"#!/bin/sh\necho hi\n"
    write_file(src / "bin" / "run.sh", script, mode=0o755, mtime_ns=MTIME0 - 7)
    sizes["bin/run.sh"] = len(script)
    write_file(src / "private", b"only for me", mode=0o600, mtime_ns=MTIME0 - 8)
    sizes["private"] = len(b"only for me")
    rnd = random_tree(src / "random", seed=7, files=9, max_size=30_000)
    sizes.update({f"random/{k}": len(v) for k, v in rnd.items()})
    sparse = src / "big.sparse"
    with open(sparse, "wb") as f:
        f.truncate(64 * 1024 * 1024)
        for offset in (0, 10 * 1024 * 1024 + 3, 64 * 1024 * 1024 - 5):
            f.seek(offset)
            f.write(b"osmo!")
    os.utime(sparse, ns=(MTIME0 + 42, MTIME0 + 42))
    sizes["big.sparse"] = 64 * 1024 * 1024
    return sizes


def test_round_trip_odd_tree_is_byte_exact(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    sizes = build_odd_tree(src)
    before = snapshot(src)

    up = cli("dataset", "upload", "odd", str(src), "--json").json()
    assert {"dataset", "version", "files", "logical_bytes", "stored_bytes", "seconds"} <= set(up)
    assert (up["dataset"], up["version"], up["files"]) == ("odd", 1, len(sizes))
    assert up["logical_bytes"] == sum(sizes.values())
    # the sparse 64 MiB file is almost all one repeated zero chunk
    assert 0 < up["stored_bytes"] < 2 * 1024 * 1024
    assert isinstance(up["seconds"], (int, float)) and up["seconds"] >= 0
    assert up["skipped"] == []
    assert snapshot(src) == before  # upload never touches the source

    stored = inspect_files(cli, "odd:1")
    assert list(stored) == sorted(sizes)
    for rel, f in stored.items():
        st = os.lstat(src / rel)
        assert f["size"] == sizes[rel]
        assert f["mtime_ns"] == st.st_mtime_ns
        assert int(f["mode"], 8) & 0o777 == st.st_mode & 0o777, rel

    dest = tmp_path / "out"
    down = cli("dataset", "download", "odd", str(dest), "--json").json()
    assert {"files", "bytes", "seconds"} <= set(down)
    assert (down["files"], down["bytes"], down["files_skipped"]) == (len(sizes), sum(sizes.values()), 0)
    assert (down["dataset"], down["version"]) == ("odd", 1)
    after = snapshot(dest)
    assert after == before
    assert (after["bin/run.sh"][2], after["private"][2]) == (0o755, 0o600)
    assert after["big.sparse"][3] == MTIME0 + 42

    checksum = cli("dataset", "checksum", str(src), "--json").json()
    assert checksum == {"checksum": info(cli, "odd")["versions"][0]["checksum"], "files": len(sizes),
                        "logical_bytes": sum(sizes.values())}


def test_symlinks_are_skipped_not_followed_and_reported(cli, tmp_path):
    cli.init_tiny()
    src, outside = tmp_path / "src", tmp_path / "outside"
    write_file(src / "real" / "file.txt", b"real file", mtime_ns=MTIME0)
    write_file(src / "top.txt", b"top", mtime_ns=MTIME0)
    write_file(outside / "secret.txt", b"must not be uploaded", mtime_ns=MTIME0)
    os.symlink("top.txt", src / "link-to-file")
    os.symlink("real", src / "link-to-folder")
    os.symlink(str(outside), src / "real" / "link-outside")
    os.symlink(str(outside / "secret.txt"), src / "real" / "link-outside-file")
    os.symlink("does-not-exist", src / "dangling")

    up = cli("dataset", "upload", "links", str(src), "--json").json()
    assert up["files"] == 2
    assert up["logical_bytes"] == len(b"real file") + len(b"top")
    skipped = {os.path.relpath(s["path"], src): s["reason"] for s in up["skipped"]}
    assert set(skipped) == {"link-to-file", "link-to-folder", "real/link-outside", "real/link-outside-file",
                            "dangling"}
    assert all("symbolic link" in reason for reason in skipped.values()), skipped
    assert list(inspect_files(cli, "links")) == ["real/file.txt", "top.txt"]

    dest = tmp_path / "out"
    cli("dataset", "download", "links", str(dest))
    got = snapshot(dest)
    assert all(kind[0] == "file" for kind in got.values()), got
    assert got == files_only(snapshot(src))

    # the human output reports the skipped links on stderr, one line each
    human = cli("dataset", "upload", "links", str(src))
    assert sum("symbolic link" in line for line in human.err.splitlines()) == 5
    assert "links:2" in human.out


# --- deduplication and diff ------------------------------------------------------------------------

def test_dedup_across_versions_and_datasets_and_diff(cli, tmp_path):
    cli("store", "init")  # default (64 KiB) chunks: manifest overhead stays negligible
    src = tmp_path / "src"
    files = random_tree(src, seed=11, files=40, max_size=300_000)
    small, removed = "small/one.txt", "small/two.txt"
    for rel, size in ((small, 2000), (removed, 3000)):
        files[rel] = os.urandom(size)
        write_file(src / rel, files[rel], mtime_ns=MTIME0)
    v1 = cli("dataset", "upload", "ds", str(src), "--json").json()
    logical = sum(len(v) for v in files.values())
    assert v1["logical_bytes"] == logical
    assert v1["stored_bytes"] >= logical  # random data: nothing to save

    big = max(files, key=lambda p: len(files[p]))
    exec_path = sorted(p for p in files if p not in (small, big, removed))[-1]
    (src / small).write_bytes(b"changed!" + files[small][8:] + b"+")
    os.remove(src / removed)
    write_file(src / "new" / "added.txt", b"a new small file\n")
    os.chmod(src / exec_path, 0o755)
    os.utime(src / big, ns=(MTIME0, MTIME0))  # mtime only: not a change

    v2 = cli("dataset", "upload", "ds", str(src), "--json").json()
    assert v2["version"] == 2
    assert 0 < v2["stored_bytes"] < 0.05 * v1["stored_bytes"], (v1["stored_bytes"], v2["stored_bytes"])

    copy = cli("dataset", "upload", "copy", str(src), "--json").json()
    assert (copy["dataset"], copy["version"]) == ("copy", 1)
    assert copy["stored_bytes"] < 0.01 * v1["stored_bytes"]

    diff = cli("dataset", "diff", "ds:1", "ds:2", "--json").json()
    assert diff["added"] == [{"path": "new/added.txt", "size": 17}]
    assert diff["removed"] == [{"path": removed, "size": len(files[removed])}]
    assert sorted(diff["changed"], key=lambda c: c["path"]) == sorted([
        {"path": small, "old_size": len(files[small]), "new_size": len(files[small]) + 1},
        {"path": exec_path, "old_size": len(files[exec_path]), "new_size": len(files[exec_path])},
    ], key=lambda c: c["path"])
    assert diff["bytes_added"] == 17 and diff["bytes_removed"] == len(files[removed])
    assert cli("dataset", "diff", "ds:2", "copy:1", "--json").json() == {
        "added": [], "removed": [], "changed": [], "bytes_added": 0, "bytes_removed": 0, "bytes_changed": 0}
    reverse = cli("dataset", "diff", "ds:2", "ds:1", "--json").json()
    assert reverse["added"] == [{"path": removed, "size": len(files[removed])}]
    assert reverse["removed"] == [{"path": "new/added.txt", "size": 17}]

    for ref in ("ds:1", "ds:2", "copy"):
        cli("dataset", "download", ref, str(tmp_path / ref.replace(":", "-")))
    assert snapshot(tmp_path / "ds-2") == snapshot(src)
    assert snapshot(tmp_path / "copy") == snapshot(src)
    v1_tree = snapshot(tmp_path / "ds-1")
    assert set(v1_tree) == set(files)
    assert all(v1_tree[p][1] == len(files[p]) for p in files)


def test_a_chunk_repeated_within_one_upload_is_stored_once(cli, tmp_path):
    cli.init_tiny()
    rng = random.Random(3)
    parts = []
    for _ in range(40):  # the same zero chunks recur after enough new data to seal several packs
        parts += [b"\0" * 40_000, rng.randbytes(40_000)]
    write_file(tmp_path / "src" / "f.bin", b"".join(parts))
    up = cli("dataset", "upload", "ds", str(tmp_path / "src"), "--json").json()
    distinct = cli("store", "stats", "--json").json()["chunks"]
    assert up["chunks_new"] == distinct, (up["chunks_new"], distinct)


# --- references, tags, labels, metadata, rename, delete ---------------------------------------------

def three_versions(cli, tmp_path) -> list:
    trees = []
    for i in range(3):
        src = tmp_path / f"src{i}"
        random_tree(src, seed=100 + i, files=4, max_size=5000)
        trees.append(snapshot(src))
        target = "ds:mytag" if i == 0 else "ds"
        assert cli("dataset", "upload", target, str(src), "--json").json()["version"] == i + 1
    return trees


def downloaded(cli, ref: str, dest) -> tuple[int, dict]:
    result = cli("dataset", "download", ref, str(dest), "--json").json()
    return result["version"], snapshot(dest)


def test_references_tags_labels_and_metadata(cli, tmp_path):
    cli.init_tiny()
    trees = three_versions(cli, tmp_path)
    assert downloaded(cli, "ds", tmp_path / "o-name") == (3, trees[2])
    assert downloaded(cli, "ds:latest", tmp_path / "o-latest") == (3, trees[2])
    assert downloaded(cli, "ds:mytag", tmp_path / "o-tag") == (1, trees[0])
    assert downloaded(cli, "ds:2", tmp_path / "o-2") == (2, trees[1])

    desc = info(cli, "ds")
    assert [(v["version"], v["status"], v["tags"]) for v in desc["versions"]] == [
        (1, "ready", ["mytag"]), (2, "ready", []), (3, "ready", ["latest"])]
    assert desc["tags"] == {"mytag": 1}

    assert cli("dataset", "tag", "ds:2", "--set", "gold", "--set", "silver", "--json").json() == {
        "dataset": "ds", "tags": {"gold": 2, "mytag": 1, "silver": 2}}
    assert downloaded(cli, "ds:gold", tmp_path / "o-gold") == (2, trees[1])
    assert cli("dataset", "tag", "ds:1", "--set", "gold", "--json").json()["tags"]["gold"] == 1  # moves
    assert cli("dataset", "tag", "ds:1", "--delete", "gold", "--json").json() == {
        "dataset": "ds", "tags": {"mytag": 1, "silver": 2}}
    assert_error(cli("dataset", "download", "ds:gold", str(tmp_path / "x"), check=False), 3, "gold")
    assert_error(cli("dataset", "tag", "ds:1", "--set", "latest", check=False), 2, "latest")
    assert_error(cli("dataset", "tag", "ds:1", "--delete", "gold", check=False), 3, "gold")

    assert cli("dataset", "label", "ds", "--set", "team=perception", "--set", "site=lab", "--json").json() == {
        "dataset": "ds", "labels": {"site": "lab", "team": "perception"}}
    assert cli("dataset", "label", "ds", "--delete", "site", "--json").json() == {
        "dataset": "ds", "labels": {"team": "perception"}}
    assert cli("dataset", "label", "ds", "--json").json()["labels"] == {"team": "perception"}
    assert info(cli, "ds")["labels"] == {"team": "perception"}

    assert cli("dataset", "metadata", "ds:2", "--set", "k=v", "--set", "eq=a=b", "--json").json() == {
        "reference": "ds:2", "metadata": {"eq": "a=b", "k": "v"}}
    assert cli("dataset", "metadata", "ds:2", "--delete", "k", "--json").json() == {
        "reference": "ds:2", "metadata": {"eq": "a=b"}}
    assert cli("dataset", "metadata", "ds:silver", "--json").json()["metadata"] == {"eq": "a=b"}
    versions = info(cli, "ds")["versions"]
    assert [v["metadata"] for v in versions] == [{}, {"eq": "a=b"}, {}]

    src = tmp_path / "src0"
    v4 = cli("dataset", "upload", "ds:fresh", str(src), "--desc", "fourth", "--metadata", "run=42",
             "--label", "owner=me", "--json").json()
    assert v4["version"] == 4
    rec = info(cli, "ds")["versions"][3]
    assert (rec["description"], rec["metadata"], rec["tags"]) == ("fourth", {"run": "42"}, ["fresh", "latest"])
    assert info(cli, "ds")["labels"] == {"owner": "me", "team": "perception"}


def test_rename_and_delete(cli, tmp_path):
    cli.init_tiny()
    trees = three_versions(cli, tmp_path)
    assert cli("dataset", "rename", "ds", "renamed", "--json").json() == {"old": "ds", "new": "renamed"}
    assert_error(cli("dataset", "info", "ds", check=False), 3, "ds")
    assert_error(cli("dataset", "download", "ds:1", str(tmp_path / "x"), check=False), 3, "ds")
    assert [d["name"] for d in cli("dataset", "list", "--json").json()] == ["renamed"]
    assert [v["version"] for v in info(cli, "renamed")["versions"]] == [1, 2, 3]
    assert downloaded(cli, "renamed:mytag", tmp_path / "o-tag") == (1, trees[0])

    assert cli("dataset", "delete", "renamed:3", "--json").json() == {
        "dataset": "renamed", "deleted_versions": 1, "version": 3, "all": False, "tags_removed": []}
    assert_error(cli("dataset", "download", "renamed:3", str(tmp_path / "x"), check=False), 3, "renamed:3")
    assert not (tmp_path / "x").exists()
    assert downloaded(cli, "renamed", tmp_path / "o-latest") == (2, trees[1])
    desc = info(cli, "renamed")
    assert [(v["version"], v["status"], v["tags"]) for v in desc["versions"]] == [
        (1, "ready", ["mytag"]), (2, "ready", ["latest"]), (3, "deleted", [])]
    listed = cli("dataset", "list", "--json").json()
    assert [(d["name"], d["versions"], d["latest"]) for d in listed] == [("renamed", 2, 2)]
    assert_error(cli("dataset", "delete", "renamed", check=False), 2, "renamed")

    # version numbers are never reused
    assert cli("dataset", "upload", "renamed", str(tmp_path / "src2"), "--json").json()["version"] == 4
    assert cli("dataset", "delete", "renamed", "--all", "--json").json() == {
        "dataset": "renamed", "deleted_versions": 3, "all": True, "tags_removed": ["mytag"]}
    assert cli("dataset", "list", "--json").json() == []
    assert_error(cli("dataset", "download", "renamed", str(tmp_path / "y"), check=False), 3, "renamed")
    assert_error(cli("dataset", "info", "renamed", check=False), 3, "renamed")
    # the name is free again and starts over
    assert cli("dataset", "upload", "renamed", str(tmp_path / "src1"), "--json").json()["version"] == 1
    assert downloaded(cli, "renamed", tmp_path / "o-new") == (1, trees[1])
    assert cli("store", "verify", "--read-data").code == 0


# --- filters, resume, checksum ---------------------------------------------------------------------

FILTER_TREE = ["a.txt", "b.log", "sub/c.txt", "sub/d.log", "sub/deep/e.txt", "other/f.bin"]


def test_include_and_exclude_on_upload_and_download(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    for i, rel in enumerate(FILTER_TREE):
        write_file(src / rel, f"content of {rel}\n".encode() * (i + 1), mtime_ns=MTIME0 + i)

    up = cli("dataset", "upload", "f", str(src), "--exclude", "*.log", "--json").json()
    assert up["files"] == 4
    assert list(inspect_files(cli, "f:1")) == ["a.txt", "other/f.bin", "sub/c.txt", "sub/deep/e.txt"]
    cli("dataset", "upload", "f", str(src), "--include", "sub/*", "--json")
    assert list(inspect_files(cli, "f:2")) == ["sub/c.txt", "sub/d.log", "sub/deep/e.txt"]
    cli("dataset", "upload", "f", str(src), "--include", "*.txt", "--exclude", "sub/deep/*", "--json")
    assert list(inspect_files(cli, "f:3")) == ["a.txt", "sub/c.txt"]
    # the checksum of a filtered folder equals the version uploaded with the same filters
    assert cli("dataset", "checksum", str(src), "--exclude", "*.log", "--json").json()["checksum"] == \
        info(cli, "f")["versions"][0]["checksum"]

    cli("dataset", "upload", "f", str(src))
    full = snapshot(src)
    dest = tmp_path / "out"
    down = cli("dataset", "download", "f:4", str(dest), "--include", "*.txt", "--exclude", "sub/deep/*",
               "--json").json()
    assert (down["files"], down["version"]) == (2, 4)
    assert snapshot(dest) == {k: full[k] for k in ("a.txt", "sub/c.txt")}
    down = cli("dataset", "download", "f:4", str(dest), "--include", "sub/*", "--json").json()
    assert (down["files"], down["files_skipped"]) == (3, 1)
    assert set(snapshot(dest)) == {"a.txt", "sub/c.txt", "sub/d.log", "sub/deep/e.txt"}


def test_resume_download_rewrites_only_damaged_files(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    files = random_tree(src, seed=5, files=12, max_size=20_000)
    n = len(files)
    cli("dataset", "upload", "ds", str(src))
    dest = tmp_path / "out"
    first = cli("dataset", "download", "ds", str(dest), "--json").json()
    assert (first["files"], first["files_skipped"]) == (n, 0)
    expected = snapshot(src)
    assert snapshot(dest) == expected

    nonempty = sorted(p for p in files if len(files[p]) > 10)
    corrupt, grown, gone, touched = nonempty[:4]
    data = bytearray(files[corrupt])
    data[len(data) // 2] ^= 0xFF
    (dest / corrupt).write_bytes(bytes(data))  # same size, different bytes
    with open(dest / grown, "ab") as f:
        f.write(b"extra")
    os.remove(dest / gone)
    os.chmod(dest / touched, 0o700)  # right bytes, wrong attributes: kept, attributes restored
    os.utime(dest / touched, ns=(5, 5))

    again = cli("dataset", "download", "ds", str(dest), "--json").json()
    assert (again["files"], again["files_skipped"]) == (n, n - 3)
    assert snapshot(dest) == expected
    third = cli("dataset", "download", "ds", str(dest), "--json").json()
    assert third["files_skipped"] == n
    assert not [p for p in os.listdir(dest) if p.startswith(".osmo-part-")]


def test_checksum_of_folder_equals_info_checksum(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=3, files=10, max_size=10_000)
    write_file(src / "x" / "tool", b"#!/bin/sh\n", mode=0o755)
    write_file(src / "odd name\n#", b"")
    cli("dataset", "upload", "ds", str(src))
    want = info(cli, "ds")["versions"][0]["checksum"]
    got = cli("dataset", "checksum", str(src), "--json").json()
    assert (got["checksum"], got["files"]) == (want, 12)
    assert cli("dataset", "checksum", str(src)).out.split()[0] == want
    # content, exec bit and names matter; mtimes do not
    os.utime(src / "x" / "tool", ns=(MTIME0, MTIME0))
    assert cli("dataset", "checksum", str(src), "--json").json()["checksum"] == want
    os.chmod(src / "x" / "tool", 0o644)
    assert cli("dataset", "checksum", str(src), "--json").json()["checksum"] != want
    os.chmod(src / "x" / "tool", 0o755)
    os.rename(src / "odd name\n#", src / "odd name #")
    assert cli("dataset", "checksum", str(src), "--json").json()["checksum"] != want


# --- store maintenance -----------------------------------------------------------------------------

def test_verify_and_reindex_after_losing_the_cache(cli, tmp_path):
    cli.init_tiny()
    trees = three_versions(cli, tmp_path)
    cli("dataset", "upload", "other:v", str(tmp_path / "src1"), "--label", "k=v")
    cli("dataset", "tag", "ds:2", "--set", "gold")
    cli("dataset", "metadata", "ds:1", "--set", "a=b")
    cli("dataset", "delete", "ds:3")
    cli("dataset", "rename", "other", "second")

    verify = cli("store", "verify", "--read-data", "--json")
    report = verify.json()
    assert report["ok"] is True and report["problems"] == []
    assert report["versions"] == 3 and report["packs"] == report["packs_read"] > 0
    listing = cli("dataset", "list", "--json").out
    infos = {name: cli("dataset", "info", name, "--json").out for name in ("ds", "second")}
    stats = cli("store", "stats", "--json").json()

    cache = cli.env["OSMO_CACHE_DIR"]
    assert os.path.isdir(cache)
    shutil.rmtree(cache)
    reindexed = cli("store", "reindex", "--json").json()
    assert reindexed["warnings"] == []
    assert {k: reindexed[k] for k in stats} == stats
    assert cli("dataset", "list", "--json").out == listing
    assert {name: cli("dataset", "info", name, "--json").out for name in infos} == infos
    assert downloaded(cli, "ds:gold", tmp_path / "o") == (2, trees[1])
    assert cli("store", "verify", "--read-data").code == 0


# --- errors ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One store with ``ds:1`` for the error tests, which must not change it."""
    root = tmp_path_factory.mktemp("errors")
    cli = Cli(root)
    cli.init_tiny()
    src = root / "src"
    random_tree(src, seed=1, files=3, max_size=2000)
    cli("dataset", "upload", "ds", str(src))
    return cli, src


@pytest.fixture
def populated(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=1, files=3, max_size=2000)
    cli("dataset", "upload", "ds", str(src))
    return src


@pytest.mark.parametrize("args, needle", [
    (("dataset", "upload", "bad name", "{src}"), "bad name"),
    (("dataset", "upload", "x" * 129, "{src}"), "x" * 129),
    (("dataset", "upload", "ds:3", "{src}"), "ds:3"),
    (("dataset", "upload", "ds:bad/tag", "{src}"), "bad/tag"),
    (("dataset", "upload", "ds:latest", "{src}"), "latest"),
    (("dataset", "download", "ds:", "{out}"), "ds:"),
    (("dataset", "download", "ds:0", "{out}"), "ds:0"),
    (("dataset", "download", "d s:1", "{out}"), "d s"),
    (("dataset", "download", "ds:a:b", "{out}"), "a:b"),
    (("dataset", "info", "../ds"), "../ds"),
    (("dataset", "tag", "ds:1", "--set", "123"), "123"),
    (("dataset", "tag", "ds:1", "--set", "sp ace"), "sp ace"),
    (("dataset", "rename", "ds", "new name"), "new name"),
    (("dataset", "metadata", "ds:1", "--set", "novalue"), "novalue"),
    (("dataset", "label", "ds", "--set", "=v"), "=v"),
    (("dataset", "delete", "ds"), "ds"),
    (("dataset", "delete", "ds:1", "--all"), "ds:1"),
    (("dataset", "diff", "ds:1", "bad name:1"), "bad name"),
])
def test_bad_names_and_references_exit_2(shared, tmp_path, args, needle):
    cli, src = shared
    args = [a.format(src=src, out=tmp_path / "out") for a in args]
    assert_error(cli(*args, check=False), 2, needle)
    assert [v["version"] for v in info(cli, "ds")["versions"]] == [1]
    assert not (tmp_path / "out").exists()


def test_upload_with_a_reserved_tag_is_refused_before_storing_anything(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    random_tree(src, seed=4, files=5, max_size=50_000)
    assert_error(cli("dataset", "upload", "ds:latest", str(src), check=False), 2, "latest")
    stats = cli("store", "stats", "--json").json()
    assert (stats["versions"], stats["packs"], stats["chunks"]) == (0, 0, 0)


@pytest.mark.parametrize("args, needle", [
    (("dataset", "download", "nope", "{out}"), "nope"),
    (("dataset", "download", "ds:9", "{out}"), "9"),
    (("dataset", "download", "ds:nosuchtag", "{out}"), "nosuchtag"),
    (("dataset", "info", "nope"), "nope"),
    (("dataset", "inspect", "ds:2"), "2"),
    (("dataset", "diff", "ds:1", "ds:2"), "2"),
    (("dataset", "tag", "ds:7", "--set", "t"), "7"),
    (("dataset", "delete", "ds:7"), "7"),
    (("dataset", "rename", "nope", "other"), "nope"),
    (("dataset", "label", "nope", "--set", "a=b"), "nope"),
    (("dataset", "metadata", "nope:1"), "nope"),
])
def test_missing_datasets_and_versions_exit_3(shared, tmp_path, args, needle):
    cli, _ = shared
    args = [a.format(out=tmp_path / "out") for a in args]
    assert_error(cli(*args, check=False), 3, needle)
    assert not (tmp_path / "out").exists()


def test_missing_store_exits_3(cli, tmp_path):
    assert_error(cli("dataset", "list", check=False), 3, cli.store)
    assert_error(cli("store", "verify", check=False), 3, cli.store)
    assert not os.path.exists(cli.store)


def test_upload_of_a_missing_path_exits_2_naming_it(shared, tmp_path):
    cli, src = shared
    missing = tmp_path / "no" / "such path"
    assert_error(cli("dataset", "upload", "ds", str(src), str(missing), check=False), 2, str(missing))
    os.mkfifo(tmp_path / "fifo")
    assert_error(cli("dataset", "upload", "ds", str(tmp_path / "fifo"), check=False), 2, "fifo")
    write_file(tmp_path / "folder" / "ok.txt", b"ok")
    with open(os.fsencode(str(tmp_path / "folder")) + b"/bad-\xff-name", "wb") as f:
        f.write(b"x")
    assert_error(cli("dataset", "upload", "ds", str(tmp_path / "folder"), check=False), 2, "UTF-8")
    assert [v["version"] for v in info(cli, "ds")["versions"]] == [1]


def test_future_store_format_exits_7(cli, tmp_path, populated):
    for key in ("config", "config-copy"):  # a newer osmo writes both
        config_path = os.path.join(cli.store, key)
        with open(config_path) as f:
            config = json.load(f)
        config["version"] = 99
        config.pop("check")
        with open(config_path, "w") as f:
            json.dump(config, f)
    for args in (("dataset", "list"), ("store", "verify"), ("dataset", "upload", "ds", str(populated)),
                 ("dataset", "download", "ds", str(tmp_path / "out"))):
        assert_error(cli(*args, check=False), 7, "format version", "99")
    assert not (tmp_path / "out").exists()


def test_store_init_twice_exits_4(cli, tmp_path):
    first = cli("store", "init", "--json").json()
    assert first["format_version"] == 1 and first["store"] == cli.store
    with open(os.path.join(cli.store, "config"), "rb") as f:
        config = f.read()
    assert_error(cli("store", "init", check=False), 4, cli.store)
    assert_error(cli("store", "init", "--no-compression", check=False), 4, cli.store)
    with open(os.path.join(cli.store, "config"), "rb") as f:
        assert f.read() == config
