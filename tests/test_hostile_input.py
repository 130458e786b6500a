"""Hostile and corrupted input: damaged packs, crafted manifests and events, a booby-trapped destination.

Crafted objects are written straight into the store folder with the library's own encoders, exactly
as a malicious or buggy writer with access to the store could; every command is then run through
the real CLI.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import pytest

from conftest import Cli
from helpers.storefiles import find_chunk, pack_name
from helpers.trees import snapshot, write_file
from osmo_store.blob import LocalBlobStore
from osmo_store.packs import COMPRESSION_NONE, PackBuilder, pack_key
from osmo_store.datasets import encode_event, log_key
from osmo_store.hashing import digest
from osmo_store.manifest import LEAF, FileEntry, encode_node
from osmo_store.repository import Repository


def assert_error(result, code: int, *needles: str) -> None:
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.err
    lines = result.err.strip("\n").split("\n")
    if lines[0].startswith("{"):  # --json: the error as a JSON object
        error = json.loads(lines[0])
        assert error["exit"] == code and error["code"] and len(lines) == 1, result.err
        lines = ["osmo: error: " + error["error"]]
    assert len(lines) == 1 and lines[0].startswith("osmo: error: "), result.err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def listing(root) -> list[tuple[str, str]]:
    """Every entry under ``root`` (folders included, links not followed) with its kind."""
    out = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in dirs + files:
            full = os.path.join(folder, name)
            kind = "link" if os.path.islink(full) else "dir" if os.path.isdir(full) else "file"
            out.append((os.path.relpath(full, root), kind))
    return sorted(out)


def no_part_files(root) -> bool:
    return not [f for _, _, fs in os.walk(root) for f in fs if f.startswith(".osmo-part-")]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A tiny store holding ``ds:1`` (victim.bin = A) and ``ds:2`` (victim.bin = B, the rest equal)."""
    cli = Cli.tiny(tmp_path_factory, "template")
    root = cli.root
    src = root / "src"
    write_file(src / "victim.bin", os.urandom(30_000), mtime_ns=1_600_000_000_000_000_001)
    write_file(src / "other.txt", b"other file\n" * 50, mtime_ns=1_600_000_000_000_000_002)
    write_file(src / "sub" / "deep.bin", os.urandom(5000), mtime_ns=1_600_000_000_000_000_003)
    cli("dataset", "upload", "ds", str(src))
    v1 = snapshot(src)
    write_file(src / "victim.bin", os.urandom(30_000), mtime_ns=1_600_000_000_000_000_004)
    cli("dataset", "upload", "ds", str(src))
    return {"src": src, "v1": v1, "v2": snapshot(src), "store": cli.store, "cache": cli.env["OSMO_CACHE_DIR"]}


@pytest.fixture
def store(cli, template):
    """A private copy of the template store and its cache for one test (which may damage it)."""
    return cli.copy_of(template)


def entries_of(cli, tmp_path, ref: str) -> dict[str, FileEntry]:
    """A version's file entries, read through the library with a private cache."""
    with Repository.open(cli.store, cache_dir=str(tmp_path / "probe-cache")) as repo:
        return {e.path: e for e in repo.entries(ref)[1]}


def victim_chunk(cli, tmp_path, ref: str = "ds:2") -> tuple[str, int, int]:
    return find_chunk(cli.store, entries_of(cli, tmp_path, ref)["victim.bin"].chunks[0][0])


# --- corrupted packs -------------------------------------------------------------------------------

def test_flipped_byte_in_a_pack(cli, tmp_path, store):
    path, offset, length = victim_chunk(cli, tmp_path)
    dest = tmp_path / "dest"
    cli("dataset", "download", "ds:1", str(dest))
    assert snapshot(dest) == store["v1"]
    with open(path, "r+b") as f:
        f.seek(offset + length // 2)
        byte = f.read(1)
        f.seek(offset + length // 2)
        f.write(bytes([byte[0] ^ 0x40]))

    verify = cli("store", "verify", "--read-data", "--json", check=False)
    assert_error(verify, 5, "2 problem")  # the pack, and the version that needs the chunk
    report = verify.json()
    assert report["ok"] is False and len(report["problems"]) == 2
    assert pack_name(path) in report["problems"][0]
    assert report["problems"][1].startswith("ds:2: 1 file lost data (victim.bin)")
    human = cli("store", "verify", "--read-data", check=False)
    assert human.code == 5 and human.out.startswith("problem: ") and pack_name(path) in human.out.splitlines()[0]

    fresh = tmp_path / "fresh"
    assert_error(cli("dataset", "download", "ds:2", str(fresh), check=False), 5, "victim.bin", pack_name(path))
    assert not (fresh / "victim.bin").exists()
    assert snapshot(fresh) == {k: v for k, v in store["v2"].items() if k != "victim.bin"}  # the rest came back
    assert no_part_files(fresh)
    # a folder holding the old version keeps the old file intact
    assert_error(cli("dataset", "download", "ds:2", str(dest), check=False), 5, pack_name(path))
    assert snapshot(dest)["victim.bin"] == store["v1"]["victim.bin"]
    assert no_part_files(dest)
    # data not touched by the damage still comes back
    cli("dataset", "download", "ds:1", str(tmp_path / "again"))
    assert snapshot(tmp_path / "again") == store["v1"]


def test_truncated_pack(cli, tmp_path, store):
    path, offset, length = victim_chunk(cli, tmp_path)
    os.truncate(path, offset + length // 2)
    for args in (("store", "verify"), ("store", "verify", "--read-data")):
        result = cli(*args, "--json", check=False)
        assert_error(result, 5)
        assert any(pack_name(path) in p for p in result.json()["problems"]), result.out
    fresh = tmp_path / "fresh"
    assert_error(cli("dataset", "download", "ds:2", str(fresh), check=False), 5, pack_name(path))
    assert not (fresh / "victim.bin").exists()
    assert no_part_files(fresh)


def test_a_client_catching_up_names_a_pack_with_a_broken_footer(cli, tmp_path, store):
    """A fresh client indexing the packs says which one it could not read, instead of failing later
    with "chunk not in the store"."""
    path, _, _ = victim_chunk(cli, tmp_path)
    os.truncate(path, os.path.getsize(path) - 10)  # the trailer is gone
    cli.env["OSMO_CACHE_DIR"] = str(tmp_path / "fresh-cache")
    result = cli("dataset", "download", "ds:2", str(tmp_path / "out"), check=False)
    assert result.code != 0
    assert pack_name(path) in result.err and "osmo store verify" in result.err


def test_deleted_pack(cli, tmp_path, store):
    path, _, _ = victim_chunk(cli, tmp_path)
    os.remove(path)
    for args in (("store", "verify"), ("store", "verify", "--read-data")):
        result = cli(*args, "--json", check=False)
        assert_error(result, 5)
        problems = result.json()["problems"]
        assert any(pack_name(path) in p and "missing" in p for p in problems), problems
    fresh = tmp_path / "fresh"
    result = cli("dataset", "download", "ds:2", str(fresh), check=False)
    assert result.code != 0
    assert_error(result, result.code, pack_name(path))
    assert not (fresh / "victim.bin").exists()
    assert no_part_files(fresh)


def test_download_with_a_deleted_pack_exits_5(cli, tmp_path, store):
    path, _, _ = victim_chunk(cli, tmp_path)
    os.remove(path)
    assert_error(cli("dataset", "download", "ds:2", str(tmp_path / "fresh"), check=False), 5, pack_name(path))


# --- crafted manifests -----------------------------------------------------------------------------

def next_seq(blob: LocalBlobStore) -> int:
    return max((int(k.rsplit("/", 1)[1]) for k in blob.list("log/")), default=0) + 1


def inject_version(store_path: str, name: str, node: bytes, node_id: bytes | None = None,
                   files: int = 1) -> str:
    """Store a manifest node and a version event for a new dataset ``name`` pointing at it."""
    blob = LocalBlobStore(store_path)
    node_id = node_id or digest(node)
    builder = PackBuilder()  # manifest nodes live in packs, like chunks
    builder.add(node_id, node, len(node), COMPRESSION_NONE)
    pack_id, data = builder.seal()
    blob.put(pack_key(pack_id), data)
    seq = next_seq(blob)
    blob.create(log_key(seq), encode_event({
        "op": "version", "dataset": name, "version": 1, "parent": None, "tags": [], "root": node_id.hex(),
        "user": "mallory", "description": "", "metadata": {}, "labels": {}, "logical_bytes": 0,
        "files": files, "stored_bytes": 0, "checksum": "0" * 64, "time": time.time()}))
    return log_key(seq)


def leaf(*entries: FileEntry) -> bytes:
    return encode_node(LEAF, list(entries))


@pytest.fixture
def arena(tmp_path):
    """``arena/dest`` (the destination) and ``arena/abs-target`` (where an absolute path points)."""
    root = tmp_path / "arena"
    (root / "dest").mkdir(parents=True)
    (root / "abs-target").mkdir()
    return root


UNSAFE_PATHS = ["../evil", "{abs}/evil", "a/../../evil", "..", "a/..", "a/b/../../../evil", "./evil",
                "a//evil", "a/./evil", "evil/", "", "evil\x00.txt", "/"]


@pytest.mark.parametrize("unsafe", UNSAFE_PATHS)
def test_manifest_with_unsafe_path_is_refused(cli, tmp_path, store, arena, unsafe):
    unsafe = unsafe.format(abs=arena / "abs-target")
    real = entries_of(cli, tmp_path, "ds:1")["other.txt"]  # real content, so a bad check would write it
    items = sorted([dataclasses.replace(real, path=unsafe), dataclasses.replace(real, path="safe.txt")],
                   key=lambda e: e.path)
    inject_version(cli.store, "evil", leaf(*items), files=2)
    before = listing(tmp_path)
    result = cli("dataset", "download", "evil", str(arena / "dest"), check=False)
    assert_error(result, 6, repr(unsafe))
    assert listing(tmp_path) == before
    assert_error(cli("dataset", "inspect", "evil", check=False), 6, repr(unsafe))


def test_verify_reports_unsafe_manifest_as_a_problem(cli, tmp_path, store):
    real = entries_of(cli, tmp_path, "ds:1")["other.txt"]
    inject_version(cli.store, "evil", leaf(dataclasses.replace(real, path="../evil")))
    result = cli("store", "verify", "--json", check=False)
    assert_error(result, 5, "1 problem")
    assert any("evil:1" in p and "../evil" in p for p in result.json()["problems"])


def test_symlinked_folder_in_destination_is_not_followed(cli, tmp_path, store):
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(outside), dest / "sub")  # the dataset has sub/deep.bin
    result = cli("dataset", "download", "ds:1", str(dest), check=False)
    assert_error(result, 6, "sub")
    assert os.listdir(outside) == []
    assert os.readlink(dest / "sub") == str(outside)
    assert no_part_files(dest)


def test_symlink_deeper_in_destination_is_not_followed(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    write_file(src / "a" / "b" / "c.txt", b"deep")
    write_file(src / "z.txt", b"z")
    cli("dataset", "upload", "ds", str(src))
    outside = tmp_path / "outside"
    (outside / "x").mkdir(parents=True)
    dest = tmp_path / "dest"
    (dest / "a").mkdir(parents=True)
    os.symlink(str(outside / "x"), dest / "a" / "b")
    before = listing(outside)
    assert_error(cli("dataset", "download", "ds", str(dest), check=False), 6, "a/b")
    assert listing(outside) == before


def test_symlinked_file_in_destination_is_replaced_not_written_through(cli, tmp_path, store):
    outside = tmp_path / "outside"
    write_file(outside / "target.txt", b"keep me")
    dest = tmp_path / "dest"
    dest.mkdir()
    os.symlink(str(outside / "target.txt"), dest / "other.txt")
    down = cli("dataset", "download", "ds:1", str(dest), "--json").json()
    assert down["files_skipped"] == 0
    assert (outside / "target.txt").read_bytes() == b"keep me"
    assert snapshot(dest) == store["v1"]


def test_manifest_node_not_matching_its_id(cli, tmp_path, store):
    real = entries_of(cli, tmp_path, "ds:1")["other.txt"]
    node = leaf(real)
    key = inject_version(cli.store, "forged", node, node_id=digest(b"some other node"))
    result = cli("dataset", "download", "forged", str(tmp_path / "dest"), check=False)
    assert_error(result, 5, "does not match its id")
    assert not (tmp_path / "dest" / "other.txt").exists()
    verify = cli("store", "verify", "--json", check=False)
    assert_error(verify, 5)
    assert any(p.startswith("forged:1") for p in verify.json()["problems"]), (key, verify.out)


def _non_canonical_int(entry: FileEntry) -> bytes:
    data = leaf(entry)
    assert data[:2] == b"\x92\x00"  # fixarray(2), level 0 as a positive fixint
    return b"\x92\xcc\x00" + data[2:]  # the same level as a uint8: same value, different bytes


@pytest.mark.parametrize("kind, needle", [
    ("non-canonical int", "canonical"),
    ("trailing bytes", "msgpack"),
    ("unsorted", "sorted"),
    ("duplicate", "sorted"),
    ("sizes do not add up", "chunk sizes"),
    ("not a list", "malformed"),
    ("negative size", "malformed"),
])
def test_malformed_manifest_node_exits_5(cli, tmp_path, store, kind, needle):
    entries = entries_of(cli, tmp_path, "ds:1")
    a, b = entries["other.txt"], entries["victim.bin"]
    if kind == "non-canonical int":
        node = _non_canonical_int(a)
    elif kind == "trailing bytes":
        node = leaf(a) + b"\xc0"
    elif kind == "unsorted":
        node = leaf(b, a)
    elif kind == "duplicate":
        node = leaf(a, a)
    elif kind == "sizes do not add up":
        node = leaf(dataclasses.replace(a, size=a.size + 1))
    elif kind == "not a list":
        node = encode_event({"level": 0})
    else:
        node = leaf(dataclasses.replace(a, size=-1, chunks=()))
    inject_version(cli.store, "bad", node, files=2)
    dest = tmp_path / "dest"
    assert_error(cli("dataset", "download", "bad", str(dest), check=False), 5, needle)
    assert not dest.exists() or os.listdir(dest) == []
    assert_error(cli("dataset", "inspect", "bad", check=False), 5, needle)


def test_manifest_with_file_and_folder_of_the_same_name_exits_5(cli, tmp_path, store):
    real = entries_of(cli, tmp_path, "ds:1")["other.txt"]
    inject_version(cli.store, "clash", leaf(dataclasses.replace(real, path="a"),
                                            dataclasses.replace(real, path="a/b")), files=2)
    dest = tmp_path / "dest"
    assert_error(cli("dataset", "download", "clash", str(dest), check=False), 5, "'a'")
    assert no_part_files(dest)


def test_file_not_matching_its_digest_is_not_written(cli, tmp_path, store):
    real = entries_of(cli, tmp_path, "ds:1")["other.txt"]
    inject_version(cli.store, "tampered", leaf(dataclasses.replace(real, digest=digest(b"something else"))))
    dest = tmp_path / "dest"
    assert_error(cli("dataset", "download", "tampered", str(dest), check=False), 5, "other.txt", "digest")
    assert not (dest / "other.txt").exists()
    assert no_part_files(dest)


def test_manifest_lying_about_chunk_lengths_exits_5(cli, tmp_path, store):
    real = entries_of(cli, tmp_path, "ds:1")["other.txt"]
    (cid, n), = real.chunks
    liar = dataclasses.replace(real, size=n + 5000, chunks=((cid, n + 5000),))
    inject_version(cli.store, "liar", leaf(liar))
    dest = tmp_path / "dest"
    assert_error(cli("dataset", "download", "liar", str(dest), check=False), 5, "other.txt")
    assert not (dest / "other.txt").exists()


# --- crafted events and config ---------------------------------------------------------------------

@pytest.mark.parametrize("payload", [b"\x00garbage\xff\xfe", b"", b"\x93\x01\x02", b"\xa5hello",
                                     b"\x81\xa2op\xa7version"],
                         ids=["bytes", "empty", "list", "string", "no-dataset"])
def test_garbage_event_blocks_nothing_and_verify_names_it(cli, tmp_path, store, payload):
    """A damaged event is skipped with a warning naming it (tests/test_repair.py repairs it)."""
    blob = LocalBlobStore(cli.store)
    key = log_key(next_seq(blob))
    blob.create(key, payload)
    first = cli("dataset", "list")
    assert key in first.err and "osmo store repair" in first.err
    for args in (("dataset", "info", "ds"), ("dataset", "download", "ds:1", str(tmp_path / "dest")),
                 ("dataset", "upload", "ds", str(store["src"])), ("store", "reindex")):
        result = cli(*args)
        assert "Traceback" not in result.err
    assert snapshot(tmp_path / "dest") == store["v1"]
    assert_error(cli("store", "verify", check=False), 5, "1 problem")
    assert key in cli("store", "verify", check=False).out


MALFORMED_EVENTS = {
    "version-without-fields": {"op": "version", "dataset": "x"},
    "dataset-not-a-string": {"op": "tag", "dataset": 5, "tag": "t", "version": 1, "time": 1.0},
    "root-not-hex": {"op": "version", "dataset": "x", "version": 1, "root": "zz", "parent": None, "tags": [],
                     "user": "u", "description": "", "metadata": {}, "labels": {}, "logical_bytes": 0, "files": 0,
                     "stored_bytes": 0, "checksum": "", "time": 1.0},
    "version-beyond-63-bits": {"op": "tag", "dataset": "ds", "tag": "t", "version": 2**63, "time": 1.0,
                               "user": "u"},
}


@pytest.mark.parametrize("event", list(MALFORMED_EVENTS.values()), ids=list(MALFORMED_EVENTS))
def test_malformed_event_is_skipped_and_named_by_verify(cli, tmp_path, store, event):
    blob = LocalBlobStore(cli.store)
    key = log_key(next_seq(blob))
    blob.create(key, encode_event(event))
    listed = cli("dataset", "list", "--json")
    assert [d["name"] for d in listed.json()] == ["ds"] and key in listed.err
    verify = cli("store", "verify", "--json", check=False)
    assert_error(verify, 5)
    assert any(key in p for p in verify.json()["problems"])


def test_garbage_config(cli, tmp_path, store):
    """A damaged config is read from its copy (with a warning); when both are damaged, one clean error."""
    config_path = os.path.join(cli.store, "config")
    copy_path = os.path.join(cli.store, "config-copy")
    with open(config_path, "rb") as f:
        good = f.read()
    for damaged in (b"\x00not json", json.dumps({**json.loads(good), "format": "something-else"}).encode(),
                    json.dumps({k: v for k, v in json.loads(good).items() if k != "chunker"}).encode()):
        with open(config_path, "wb") as f:
            f.write(damaged)
        result = cli("dataset", "list")
        assert "config-copy" in result.err and "Traceback" not in result.err
        with open(copy_path, "wb") as f:
            f.write(damaged)
        assert_error(cli("dataset", "list", check=False), 5 if b"something" not in damaged else 5, "config")
        with open(copy_path, "wb") as f:
            f.write(good)
    with open(config_path, "wb") as f:
        f.write(good)
    assert cli("store", "verify").code == 0


def test_a_config_of_a_newer_format_asks_for_a_newer_osmo(cli, tmp_path, store):
    for key in ("config", "config-copy"):
        path = os.path.join(cli.store, key)
        doc = json.loads(open(path, "rb").read())
        doc.pop("check", None)
        with open(path, "w") as f:
            json.dump({**doc, "version": 2}, f)
    assert_error(cli("dataset", "list", check=False), 7, "upgrade osmo")


def test_unknown_pack_names_are_reported_by_verify(cli, tmp_path, store):
    stray = os.path.join(cli.store, "packs", "zz", "not-a-pack")
    write_file(stray, b"junk")
    result = cli("store", "verify", "--json", check=False)
    assert_error(result, 5)
    assert any("packs/zz/not-a-pack" in p for p in result.json()["problems"])
    # downloads are not disturbed by the stray object
    cli("dataset", "download", "ds:2", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == store["v2"]
    os.remove(stray)
    assert cli("store", "verify").code == 0


def test_pack_key_helper_matches_the_store_layout(cli, tmp_path, store):
    """Sanity for the helpers above: every pack file sits at ``pack_key(BLAKE3 of its bytes)``."""
    blob = LocalBlobStore(cli.store)
    keys = list(blob.list("packs/"))
    assert keys
    for key in keys:
        assert pack_key(digest(blob.get(key))) == key
