"""Crash safety: uploads killed with SIGKILL or SIGINT, failing mid-way, or running out of disk.

After each, the store must verify, hold either no new version or a complete one, and a re-run of the
same upload must succeed, reuse what was already stored and download byte-exact.
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

from conftest import Cli
from helpers.disks import tmpfs
from helpers.trees import snapshot, tree_bytes, write_file

PACK_SIZE = 1024 * 1024
HELPERS = os.path.join(os.path.dirname(__file__), "helpers")


def random_folder(root, seed: int, total: int) -> None:
    """Incompressible files of 256 KiB-3 MiB (plus a few small ones) adding up to about ``total``."""
    rng = random.Random(seed)
    made, i = 0, 0
    while made < total:
        size = min(rng.randint(256 * 1024, 3 * 1024 * 1024), total - made)
        write_file(os.path.join(root, f"d{i % 3}", f"f{i:03d}.bin"), rng.randbytes(size),
                   mtime_ns=1_600_000_000_000_000_000 + i)
        made += size
        i += 1
    for j in range(5):
        write_file(os.path.join(root, "small", f"s{j}.txt"), f"small file {j}\n".encode())


def count_packs(store: str) -> int:
    """Complete pack objects in the store (temporary files excluded)."""
    n = 0
    for _, _, files in os.walk(os.path.join(store, "packs")):
        n += sum(not f.startswith(".tmp-") for f in files)
    return n


def assert_one_error_line(err: str, *needles: str) -> None:
    """One error line: ``osmo: error: ...``, or with ``--json`` one JSON object (its message checked)."""
    assert "Traceback" not in err, err
    lines = err.strip("\n").split("\n")
    if lines[0].startswith("{"):
        lines = ["osmo: error: " + json.loads(lines[0])["error"]] + lines[1:]
    assert len(lines) == 1 and lines[0].startswith("osmo: error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    random_folder(root, seed=2024, total=40 * 1024 * 1024)
    return root, snapshot(root)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, source):
    """A complete upload of ``source`` into a fresh store: its stored bytes and its wall time."""
    src, _ = source
    cli = Cli(tmp_path_factory.mktemp("reference"))
    cli("store", "init", "--pack-size", str(PACK_SIZE))
    start = time.monotonic()
    result = cli("dataset", "upload", "ds", str(src), "--json").json()
    return {"stored_bytes": result["stored_bytes"], "seconds": time.monotonic() - start,
            "packs": count_packs(cli.store)}


def check_after_interruption(cli: Cli, src, expected: dict, full_stored: int, work) -> dict:
    """The invariants after an interrupted upload; returns what was found."""
    verify = cli("store", "verify", "--read-data", "--json", check=False)
    assert verify.code == 0, verify.out + verify.err
    assert verify.json()["ok"] is True
    listed = cli("dataset", "list", "--json").json()
    assert listed == [] or [(d["name"], d["versions"], d["latest"]) for d in listed] == [("ds", 1, 1)], listed
    committed = bool(listed)
    if committed:  # the kill came after the commit: the version must be complete
        out = work / "committed"
        cli("dataset", "download", "ds:1", str(out))
        assert snapshot(out) == expected
    stats = cli("store", "stats", "--json").json()

    rerun = cli("dataset", "upload", "ds", str(src), "--json").json()
    assert rerun["version"] == (2 if committed else 1)
    assert rerun["logical_bytes"] == tree_bytes(src)
    if not committed:
        # everything already stored is reused: only the rest is written
        assert rerun["stored_bytes"] <= full_stored - stats["stored_bytes"] + 64 * 1024, (rerun, stats)
        if stats["packs"]:
            assert rerun["stored_bytes"] < full_stored
    out = work / "rerun"
    down = cli("dataset", "download", "ds", str(out), "--json").json()
    assert down["version"] == rerun["version"]
    assert snapshot(out) == expected
    assert cli("store", "verify", "--read-data").code == 0
    return {"committed": committed, "packs_before": stats["packs"]}


def kill_plan(reference: dict) -> list[tuple[str, float]]:
    """Seeded kill points: by elapsed time over the whole run, and by number of packs written."""
    rng = random.Random(31337)
    total_packs = reference["packs"]
    plan = [("time", reference["seconds"] * rng.uniform(lo, hi)) for lo, hi in ((0.1, 0.4), (0.5, 0.8), (0.9, 1.3))]
    plan += [("packs", rng.randint(lo, hi)) for lo, hi in
             ((1, 3), (total_packs // 4, total_packs // 2), (total_packs // 2, 3 * total_packs // 4),
              (total_packs - 3, total_packs))]
    return plan


@pytest.mark.slow
def test_kill_9_during_upload_at_random_points(tmp_path, source, reference):
    src, expected = source
    outcomes = []
    for i, (kind, when) in enumerate(kill_plan(reference)):
        work = tmp_path / f"run{i}"
        cli = Cli(work)
        cli("store", "init", "--pack-size", str(PACK_SIZE))
        proc = subprocess.Popen(cli.argv("dataset", "upload", "ds", str(src), "--json"), env=cli.env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            if kind == "time":
                time.sleep(when)
            else:
                deadline = time.monotonic() + 60
                while count_packs(cli.store) < when and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.0005)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        # either killed, or it finished on its own before the kill point, successfully
        assert proc.returncode in (-signal.SIGKILL, 0), (kind, when, proc.returncode, err)
        found = check_after_interruption(cli, src, expected, reference["stored_bytes"], work)
        outcomes.append((kind, when, proc.returncode, found))
    # the plan must really have interrupted uploads after some packs were durable
    assert any(rc == -signal.SIGKILL and not f["committed"] and f["packs_before"] for _, _, rc, f in outcomes), outcomes


def test_ctrl_c_during_upload_exits_130_and_commits_nothing(cli, tmp_path, source, reference):
    src, expected = source
    cli("store", "init", "--pack-size", str(PACK_SIZE))
    proc = subprocess.Popen(cli.argv("dataset", "upload", "ds", str(src)), env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while count_packs(cli.store) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.0005)
        if proc.poll() is not None:
            pytest.fail(f"the upload ended (exit {proc.returncode}) before it could be interrupted")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert out == ""
    assert_one_error_line(err, "interrupted")
    assert cli("dataset", "list", "--json").json() == []
    check_after_interruption(cli, src, expected, reference["stored_bytes"], tmp_path)


def test_upload_failing_mid_way_leaves_no_version(cli, tmp_path):
    cli.init_tiny()
    src = tmp_path / "src"
    rng = random.Random(5)
    for i in range(20):
        write_file(src / f"f{i:02d}.bin", rng.randbytes(rng.randint(20_000, 150_000)))
    expected = snapshot(src)
    proc = subprocess.run([sys.executable, os.path.join(HELPERS, "failing_upload.py"), cli.store, "ds", str(src),
                           "800"], env=cli.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 42, proc.stdout + proc.stderr
    assert "injected failure after 800 chunks" in proc.stdout
    assert count_packs(cli.store) > 0  # the failure came after some packs were durable
    full = cli("store", "stats", "--json").json()
    assert full["datasets"] == 0 and full["versions"] == 0
    verify = cli("store", "verify", "--read-data", "--json").json()
    assert verify["ok"] and verify["versions"] == 0
    assert cli("dataset", "list", "--json").json() == []
    assert_one_error_line(cli("dataset", "info", "ds", check=False).err, "ds")

    ref = Cli(tmp_path / "ref")
    ref.init_tiny()
    whole = ref("dataset", "upload", "ds", str(src), "--json").json()["stored_bytes"]
    rerun = cli("dataset", "upload", "ds", str(src), "--json").json()
    assert rerun["version"] == 1
    assert rerun["chunks_deduplicated"] >= 700
    assert rerun["stored_bytes"] <= whole - full["stored_bytes"] + 16 * 1024, (rerun, full, whole)
    cli("dataset", "download", "ds", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == expected
    assert cli("store", "verify", "--read-data").code == 0


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", "24m") as path:
        yield path


def test_full_disk_exits_8_and_recovers_after_space_is_freed(tmp_path, small_disk):
    cli = Cli(tmp_path)
    cli.store = str(small_disk / "store")  # the store on the small disk, the cache elsewhere
    cli("store", "init", "--pack-size", str(PACK_SIZE))
    ballast = small_disk / "ballast"
    with open(ballast, "wb") as f:
        f.write(b"\xaa" * (12 * 1024 * 1024))
    src = tmp_path / "src"
    random_folder(src, seed=8, total=16 * 1024 * 1024)
    expected = snapshot(src)

    failed = cli("dataset", "upload", "ds", str(src), "--json", check=False)
    assert failed.code == 8, failed.err
    assert failed.out == ""
    assert_one_error_line(failed.err, "disk full", cli.store)
    leftovers = [f for _, _, fs in os.walk(cli.store) for f in fs if f.startswith(".tmp-")]
    assert leftovers == []  # no temporary file keeps the disk full
    assert cli("store", "verify", "--read-data").code == 0
    assert cli("dataset", "list", "--json").json() == []
    stored_before = cli("store", "stats", "--json").json()["stored_bytes"]
    assert stored_before > 0

    os.remove(ballast)
    rerun = cli("dataset", "upload", "ds", str(src), "--json").json()
    assert rerun["version"] == 1
    assert rerun["stored_bytes"] <= tree_bytes(src) - stored_before + 64 * 1024
    cli("dataset", "download", "ds", str(tmp_path / "out"))
    assert snapshot(tmp_path / "out") == expected
    assert cli("store", "verify", "--read-data").code == 0


def test_download_to_a_full_disk_exits_8_cleanly(cli, tmp_path):
    cli("store", "init", "--pack-size", str(PACK_SIZE))
    src = tmp_path / "src"
    random_folder(src, seed=9, total=12 * 1024 * 1024)
    cli("dataset", "upload", "ds", str(src))
    with tmpfs(tmp_path / "small", "6m") as small:
        dest = small / "out"
        result = cli("dataset", "download", "ds", str(dest), check=False)
        leftovers = [f for _, _, fs in os.walk(dest) for f in fs if f.startswith(".osmo-part-")]
        assert leftovers == []
        assert result.code == 8, result.err
        assert_one_error_line(result.err, "disk full", str(dest))
