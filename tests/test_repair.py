"""Damage stays local: one damaged object never blocks the rest, verify names it, ``osmo store repair``
quarantines it and salvages what is intact, and uploading the same data again heals what was lost.

Every case damages a real store folder the way a disk or a careless hand would, then runs the real CLI
in subprocesses, with a fresh cache where a new client is meant and the original one where a client
that read the objects before the damage is meant.
"""

from __future__ import annotations

import json
import os
import shutil

import msgpack
import pytest

from conftest import Cli
from helpers.storefiles import entries_of, find_chunk, flip, object_path, pack_chunks, pack_name, root_of
from helpers.trees import snapshot, write_file
from osmo_store.blob import LocalBlobStore
from osmo_store.datasets import log_key
from osmo_store.events import decode_event

T0 = 1_600_000_000_000_000_000


def one_error(result, code: int, *needles: str) -> str:
    """The single ``osmo: error:`` line of a failed command (warnings may precede it); with ``--json``
    the error is a JSON object, given back as that line."""
    assert result.code == code, (result.code, result.out, result.err)
    assert "Traceback" not in result.err
    errors = [line for line in result.err.splitlines() if line.startswith("osmo: error: ")]
    errors += ["osmo: error: " + e["error"] for e in map(json.loads, (line for line in result.err.splitlines()
                                                                     if line.startswith("{"))) if e["exit"] == code]
    assert len(errors) == 1, result.err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """``ds:1``, ``ds:2`` (b.bin changed, tagged ``good``), ``other:1`` and ``ds:3`` (c.txt changed), with
    copies of the source folders of each version for uploading them again."""
    cli = Cli.tiny(tmp_path_factory, "repair-template")
    root = cli.root
    src = root / "src"
    write_file(src / "a.bin", os.urandom(20_000), mtime_ns=T0 + 1)
    write_file(src / "b.bin", os.urandom(20_000), mtime_ns=T0 + 2)
    write_file(src / "c.txt", b"text\n" * 300, mtime_ns=T0 + 3)
    sources = {}
    cli("dataset", "upload", "ds", str(src))  # log/1
    sources["ds:1"] = shutil.copytree(src, root / "src-v1")
    write_file(src / "b.bin", os.urandom(20_000), mtime_ns=T0 + 4)
    cli("dataset", "upload", "ds", str(src))  # log/2
    sources["ds:2"] = shutil.copytree(src, root / "src-v2")
    cli("dataset", "tag", "ds:2", "--set", "good")  # log/3
    cli("dataset", "upload", "other", str(src / "a.bin"))  # log/4
    sources["other:1"] = root / "src-other"
    write_file(sources["other:1"] / "a.bin", (src / "a.bin").read_bytes(), mtime_ns=T0 + 1)
    write_file(src / "c.txt", b"more text\n" * 300, mtime_ns=T0 + 5)
    cli("dataset", "upload", "ds", str(src))  # log/5
    sources["ds:3"] = shutil.copytree(src, root / "src-v3")
    return {"store": cli.store, "cache": cli.env["OSMO_CACHE_DIR"], "sources": sources,
            "files": {ref: snapshot(path) for ref, path in sources.items()}}


@pytest.fixture
def store(cli, template):
    """A private copy of the template store and of the cache that wrote it."""
    return cli.copy_of(template)


def fresh(cli, tmp_path, name: str = "fresh") -> Cli:
    """The same store seen by a new client (an empty cache)."""
    other = Cli(tmp_path)
    other.env["OSMO_CACHE_DIR"] = str(tmp_path / f"{name}-cache")
    return other


def download_ok(cli, tmp_path, ref: str, expected: dict, name: str) -> None:
    dest = tmp_path / name
    cli("dataset", "download", ref, str(dest))
    assert snapshot(dest) == expected


def versions(cli, name: str) -> list[int]:
    return [v["version"] for v in cli("dataset", "info", name, "--json").json()["versions"] if v["status"] != "deleted"]


# --- events ---------------------------------------------------------------------------------------

def test_a_damaged_event_is_skipped_named_and_quarantined(cli, tmp_path, store):
    key = log_key(2)  # ds:2's version event
    path = object_path(cli.store, key)
    flip(path, 30)
    damaged = open(path, "rb").read()
    new = fresh(cli, tmp_path)

    listed = new("dataset", "list", "--json")
    assert key in listed.err and "osmo store repair" in listed.err
    assert versions(new, "ds") == [1, 3]  # the version after the damaged one is not hidden
    download_ok(new, tmp_path, "ds:3", store["files"]["ds:3"], "v3")
    download_ok(new, tmp_path, "other", store["files"]["other:1"], "other")

    verify = new("store", "verify", "--json", check=False)
    one_error(verify, 5, "problem")
    assert any(key in p and "check" in p for p in verify.json()["problems"])

    before = snapshot(cli.store)
    dry = new("store", "repair", "--dry-run", "--json").json()
    assert snapshot(cli.store) == before  # a dry run changes nothing
    assert [e["key"] for e in dry["events"]] == [key]

    done = new("store", "repair", "--json").json()
    assert [e["key"] for e in done["events"]] == [key] and done["clean"]
    assert [d["key"] for d in done["depended"]] == [log_key(3)]  # the tag on ds:2 no longer applies
    assert open(object_path(cli.store, "quarantine/" + key), "rb").read() == damaged  # kept, not deleted
    assert decode_event(key, open(path, "rb").read())["op"] == "quarantined"
    assert new("store", "verify").code == 0
    third = fresh(cli, tmp_path, "third")
    assert versions(third, "ds") == [1, 3] and third("store", "verify").err == ""


def test_a_client_that_read_an_event_before_its_damage_agrees_after_the_repair(cli, tmp_path, store):
    """The writer's own cache folded the good event; after a repair replaced it, it folds the log
    again, so every client numbers the next version alike."""
    flip(object_path(cli.store, log_key(2)), 30)
    new = fresh(cli, tmp_path)
    assert versions(cli, "ds") == [1, 2, 3]  # read before the damage
    new("store", "repair")
    result = cli("dataset", "info", "ds", "--json")
    assert "folding the store's log again" in result.err
    assert versions(cli, "ds") == versions(new, "ds") == [1, 3]
    cli("dataset", "upload", "ds", str(store["sources"]["ds:1"]))
    assert versions(cli, "ds") == versions(new, "ds") == [1, 3, 4]


@pytest.mark.parametrize("payload", [b"", b"\x00garbage", b"\x93\x01\x02", msgpack.packb({"op": "versoin"}),
                                     msgpack.packb({"op": "version", "dataset": "ds"})],
                         ids=["empty", "bytes", "list", "unknown-op-unchecked", "fields-missing"])
def test_any_malformed_event_is_damage_that_blocks_nothing(cli, tmp_path, store, payload):
    key = log_key(2)
    with open(object_path(cli.store, key), "wb") as f:
        f.write(payload)
    new = fresh(cli, tmp_path)
    for args in (("dataset", "list"), ("dataset", "info", "ds"), ("store", "report"),
                 ("dataset", "upload", "ds", str(store["sources"]["ds:1"])), ("store", "reindex")):
        result = new(*args)
        assert "Traceback" not in result.err
    one_error(new("store", "verify", check=False), 5)
    new("store", "repair")
    assert new("store", "verify").code == 0


def test_an_unknown_operation_in_a_checked_event_asks_for_a_newer_osmo(cli, tmp_path, store):
    from osmo_store.events import encode_event
    blob = LocalBlobStore(cli.store)
    blob.create(log_key(6), encode_event({"op": "teleport", "time": 1.0, "user": "future", "dataset": "ds"}))
    one_error(fresh(cli, tmp_path)("dataset", "list", check=False), 7, log_key(6), "upgrade osmo")


def test_a_hole_in_the_log_is_filled(cli, tmp_path, store):
    os.remove(object_path(cli.store, log_key(3)))
    new = fresh(cli, tmp_path)
    verify = new("store", "verify", "--json", check=False)
    one_error(verify, 5)
    assert any(log_key(3) in p and "missing" in p for p in verify.json()["problems"])
    done = new("store", "repair", "--json").json()
    assert [e["key"] for e in done["events"]] == [log_key(3)]
    third = fresh(cli, tmp_path, "third")
    assert versions(third, "ds") == [1, 2, 3] and versions(third, "other") == [1]
    assert third("store", "verify").code == 0


def test_stray_objects_in_the_log_are_moved_aside(cli, tmp_path, store):
    LocalBlobStore(cli.store).put("log/notes.txt", b"hello")
    new = fresh(cli, tmp_path)
    assert any("log/notes.txt" in p for p in new("store", "verify", "--json", check=False).json()["problems"])
    new("store", "repair")
    assert open(object_path(cli.store, "quarantine/log/notes.txt"), "rb").read() == b"hello"
    assert new("store", "verify").code == 0


# --- packs ----------------------------------------------------------------------------------------

def b_chunk(cli, tmp_path, ref="ds:2"):
    entry = entries_of(cli.store, str(tmp_path / "probe"), ref)["b.bin"]
    return entry.chunks[0][0]


def test_a_corrupt_pack_is_salvaged_and_the_lost_data_heals_on_upload(cli, tmp_path, store):
    path, offset, length = find_chunk(cli.store, b_chunk(cli, tmp_path))
    flip(path, offset + length // 2)
    name = pack_name(path)
    new = fresh(cli, tmp_path)

    failed = new("dataset", "download", "ds:2", str(tmp_path / "v2"), check=False)
    one_error(failed, 5, "b.bin")
    got = snapshot(tmp_path / "v2")
    assert "b.bin" not in got  # never a wrong byte
    assert all(got[p] == store["files"]["ds:2"][p] for p in got)  # the intact files did come back

    verify = new("store", "verify", "--read-data", "--json", check=False)
    one_error(verify, 5)
    problems = verify.json()["problems"]
    assert any(name in p for p in problems) and any("ds:2" in p and "b.bin" in p for p in problems)

    info = new("dataset", "info", "ds", "--json").json()
    v2 = next(v for v in info["versions"] if v["version"] == 2)
    assert v2["status"] == "damaged" and v2["damage"]["named"] == ["b.bin"]

    repaired = new("store", "repair", "--json", check=False)
    one_error(repaired, 5, "still lack data")
    report = repaired.json()
    assert [p["key"] for p in report["packs"]] == [name]
    assert report["packs"][0]["salvaged"] > 0 and report["lost_chunks"] >= 1
    # ds:3 has the same b.bin: it lost the same chunk
    assert [(v["dataset"], v["version"]) for v in report["damaged_versions"]] == [("ds", 2), ("ds", 3)]
    assert not os.path.exists(path) and os.path.exists(object_path(cli.store, "quarantine/" + name))
    for ref in ("ds:1", "other:1"):  # nothing else lost anything
        download_ok(new, tmp_path, ref, store["files"][ref], ref.replace(":", "-"))

    new("dataset", "upload", "ds", str(store["sources"]["ds:2"]))  # the same data again heals ds:2 and ds:3
    download_ok(new, tmp_path, "ds:2", store["files"]["ds:2"], "healed")
    download_ok(new, tmp_path, "ds:3", store["files"]["ds:3"], "healed-3")
    assert new("store", "verify", "--read-data").code == 0
    old_client = cli("store", "verify", "--read-data")  # the writer's cache agrees
    assert old_client.code == 0


def test_an_upload_never_deduplicates_onto_a_chunk_found_damaged(cli, tmp_path, store):
    path, offset, length = find_chunk(cli.store, b_chunk(cli, tmp_path))
    flip(path, offset + length // 2)
    one_error(cli("dataset", "download", "ds:2", str(tmp_path / "v2"), check=False), 5, "b.bin")  # found here
    result = cli("dataset", "upload", "ds", str(store["sources"]["ds:2"]), "--json").json()
    assert result["chunks_new"] >= 1  # stored again, not deduplicated onto the damaged copy
    download_ok(cli, tmp_path, f"ds:{result['version']}", store["files"]["ds:2"], "again")
    download_ok(cli, tmp_path, "ds:2", store["files"]["ds:2"], "old-ref")  # heals the old version too


def test_a_pack_with_a_broken_footer_is_salvaged_from_what_the_index_knew(cli, tmp_path, store):
    path, _, _ = find_chunk(cli.store, b_chunk(cli, tmp_path))
    chunks = pack_chunks(path)
    os.truncate(path, os.path.getsize(path) - 5)  # the trailer is gone, the chunk bodies are intact
    report = cli("store", "repair", "--json").json()  # the writer's cache knows the pack's entries
    assert report["packs"][0]["salvaged"] == len(chunks) and report["lost_chunks"] == 0 and report["clean"]
    for ref in ("ds:1", "ds:2", "ds:3", "other:1"):
        download_ok(fresh(cli, tmp_path, ref.replace(":", "")), tmp_path, ref, store["files"][ref],
                    "out-" + ref.replace(":", "-"))


def test_a_missing_pack_blocks_nothing_else_and_is_healed_by_upload(cli, tmp_path, store):
    path, _, _ = find_chunk(cli.store, b_chunk(cli, tmp_path))
    os.remove(path)
    for client in (cli, fresh(cli, tmp_path)):
        for args in (("dataset", "list"), ("dataset", "info", "other"), ("store", "report", "--json"),
                     ("store", "stats")):
            assert client(*args).code == 0
        info = client("dataset", "info", "ds", "--json").json()
        assert next(v for v in info["versions"] if v["version"] == 2)["status"] == "damaged"
    report = cli("store", "repair", "--json", check=False).json()
    assert ("ds", 2) in [(v["dataset"], v["version"]) for v in report["damaged_versions"]]
    cli("dataset", "upload", "ds", str(store["sources"]["ds:2"]))
    cli("dataset", "upload", "ds", str(store["sources"]["ds:1"]))
    cli("dataset", "upload", "ds", str(store["sources"]["ds:3"]))
    cli("dataset", "upload", "other", str(store["sources"]["other:1"] / "a.bin"))
    assert cli("store", "verify").code == 0
    assert fresh(cli, tmp_path, "third")("store", "verify", "--read-data").code == 0
    for ref in ("ds:1", "ds:2", "ds:3", "other:1"):
        download_ok(cli, tmp_path, ref, store["files"][ref], "out-" + ref.replace(":", "-"))


def test_a_missing_manifest_node_shows_as_unknown_not_as_an_error(cli, tmp_path, store):
    root = root_of(cli.store, str(tmp_path / "probe"), "ds:2")
    path, _, _ = find_chunk(cli.store, root)
    os.remove(path)
    new = fresh(cli, tmp_path)
    listed = {r["name"]: r for r in new("dataset", "list", "--json").json()}
    assert set(listed) == {"ds", "other"}
    info = new("dataset", "info", "ds", "--json").json()
    v2 = next(v for v in info["versions"] if v["version"] == 2)
    assert v2["status"] == "damaged" and v2["usage"]["stored_bytes"] is None
    assert "cannot be read" in v2["damage"]["unreadable"][0]
    report = new("store", "report", "--json").json()
    assert report["store"]["damaged_versions"] >= 1
    one_error(new("store", "gc", "--dry-run", check=False), 5, "live version")
    new("store", "repair", check=False)
    for ref in ("ds:1", "ds:2", "ds:3", "other:1"):
        new("dataset", "upload", ref.split(":")[0], str(store["sources"][ref] if ref != "other:1"
                                                        else store["sources"][ref] / "a.bin"))
    assert new("store", "verify", "--read-data").code == 0
    download_ok(new, tmp_path, "ds:2", store["files"]["ds:2"], "healed")


# --- config ---------------------------------------------------------------------------------------

def test_a_damaged_config_is_read_from_its_copy_and_written_back(cli, tmp_path, store):
    config = object_path(cli.store, "config")
    good = open(config, "rb").read()
    with open(config, "wb") as f:
        f.write(good.replace(b'"pack_target_size": 16384', b'"pack_target_size": 16385'))
    listed = cli("dataset", "list")
    assert "config-copy" in listed.err and "osmo store repair" in listed.err
    one_error(cli("store", "verify", check=False), 5)
    cli("store", "repair")
    assert open(config, "rb").read() == good
    assert cli("store", "verify").err == ""


def test_config_and_copy_both_damaged_is_one_clean_error(cli, tmp_path, store):
    for key in ("config", "config-copy"):
        with open(object_path(cli.store, key), "wb") as f:
            f.write(b"{broken")
    one_error(cli("dataset", "list", check=False), 5, "config")


def test_a_store_without_a_config_copy_gets_one(cli, tmp_path, store):
    os.remove(object_path(cli.store, "config-copy"))
    assert cli("store", "verify").code == 0  # an older store: a note, not a problem
    cli("store", "repair")
    assert open(object_path(cli.store, "config-copy"), "rb").read() == \
        open(object_path(cli.store, "config"), "rb").read()


# --- the repair itself --------------------------------------------------------------------------------

def test_repair_of_a_healthy_store_changes_nothing(cli, tmp_path, store):
    before = snapshot(cli.store)
    result = cli("store", "repair")
    assert "nothing to repair" in result.out
    assert snapshot(cli.store) == before


def test_repair_human_output_names_what_it_did(cli, tmp_path, store):
    flip(object_path(cli.store, log_key(4)), 20)
    out = fresh(cli, tmp_path)("store", "repair").out
    assert log_key(4) in out and "quarantine" in out and "placeholder" in out


# --- on object stores -------------------------------------------------------------------------------

@pytest.fixture(params=["s3", "azure"])
def remote_url(request):
    import uuid
    fixture = request.getfixturevalue("s3_bucket" if request.param == "s3" else "azure_container")
    return f"{fixture.url}/repair-{uuid.uuid4().hex[:6]}"


def test_repair_on_object_stores(remote_url, tmp_path, tiny_config):
    """The same protocol on S3 (moto) and Azure (Azurite): quarantine by copy, placeholder by put."""
    from osmo_store.blob import open_blob_store
    from osmo_store.repository import Repository, init_store
    from osmo_store.transfer.upload import UploadRequest
    from helpers.trees import random_tree

    blob = open_blob_store(remote_url)
    init_store(blob, tiny_config)
    srcs = []
    with Repository(blob, tiny_config, cache_dir=str(tmp_path / "writer")) as repo:
        for i in range(2):
            src = tmp_path / f"src{i}"
            random_tree(src, seed=40 + i, files=12, max_size=6000)
            repo.upload(UploadRequest("ds", [str(src)]))
            srcs.append(src)
        repo.log.change_labels("ds", {"k": "v"}, [])  # log/3
    blob = open_blob_store(remote_url)
    blob.put(log_key(3), b"\x00damaged")
    pack = sorted(blob.list("packs/"))[0]
    data = bytearray(blob.get(pack))
    data[40] ^= 0x10  # in the first chunk body
    blob.put(pack, bytes(data))

    with Repository(blob, tiny_config, cache_dir=str(tmp_path / "fresh")) as repo:
        repo.log.sync()
        report = repo.repair()
        assert [e["key"] for e in report.events] == [log_key(3)]
        assert [p["key"] for p in report.packs] == [pack]
        assert blob.get("quarantine/" + log_key(3)) == b"\x00damaged"
        assert blob.get("quarantine/" + pack) == bytes(data)
        assert not blob.exists(pack)
        for i, src in enumerate(srcs):
            repo.upload(UploadRequest("ds", [str(src)]))  # heals whatever the pack took
        for i, src in enumerate(srcs):
            repo.download(f"ds:{i + 1}", str(tmp_path / f"out{i}"))
            assert snapshot(tmp_path / f"out{i}", mtimes=False) == snapshot(src, mtimes=False)
        assert repo.verify(read_data=True).ok


def test_an_event_that_cannot_be_read_at_all_blocks_nothing_and_repair_says_what_it_cannot_fix(cli, tmp_path, store):
    path = object_path(cli.store, log_key(3))
    os.remove(path)
    os.mkdir(path)  # a folder where the event's file was: no read can succeed
    new = fresh(cli, tmp_path)
    listed = new("dataset", "list", "--json")
    assert {d["name"] for d in listed.json()} == {"ds", "other"} and log_key(3) in listed.err
    result = new("store", "repair", "--json", check=False)
    one_error(result, 5, log_key(3), "could not be repaired")
    assert result.json()["left"] == [log_key(3)]
    os.rmdir(path)
    new("store", "repair")
    assert fresh(cli, tmp_path, "third")("store", "verify").code == 0
