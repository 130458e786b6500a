"""Uploads on worker processes (transfer/upload_procs.py, upload_worker.py, workerprocs.py).

The same version as the thread pool makes, every chunk stored once however the files fall on the
workers, progress inside large files, the stat cache, and the failures: a file that cannot be read, a
worker killed, the upload killed with SIGKILL or interrupted, a full disk. Worker processes are forced
for these small trees with ``OSMO_UPLOAD_PROCESS_MIN_BYTES=0``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import Cli
from helpers import workerprocs
from helpers.trees import snapshot, write_file
from osmo_store.repository import Repository
from osmo_store.transfer import fileread, upload_procs
from osmo_store.transfer.upload import UploadRequest
from test_crash_safety import assert_one_error_line, count_packs, random_folder
from test_transfer_progress import RecordingProgress

MiB = 1024 * 1024
VARIABLE = upload_procs.MIN_BYTES_VARIABLE


@pytest.fixture
def processes(monkeypatch):
    """Uploads in this process use worker processes, in jobs of a few files (many jobs per worker)."""
    monkeypatch.setenv(VARIABLE, "0")
    monkeypatch.setattr(upload_procs, "JOB_FILES", 4)


def mixed_tree(root, seed: int = 1) -> None:
    """Small files (text and random), files repeated far apart (different jobs and workers), and
    large files sharing most of their bytes with each other."""
    rng = random.Random(seed)
    shared = rng.randbytes(40_000)
    for i in range(60):
        body = (f"line {i} " * rng.randint(5, 400)).encode() if i % 2 else rng.randbytes(rng.randint(0, 9000))
        write_file(os.path.join(root, f"small/{i:03d}.dat"), body)
        if i % 10 == 0:
            write_file(os.path.join(root, f"copies/{i:03d}.bin"), shared)
    base = rng.randbytes(3 * MiB)
    write_file(os.path.join(root, "large/a.bin"), base)
    write_file(os.path.join(root, "large/b.bin"), base[:MiB] + b"inserted" + base[MiB:])
    os.chmod(os.path.join(root, "large/b.bin"), 0o755)
    time.sleep(0.1)  # older than RACY_NS: no file is read twice (which would count its chunks again)


def upload(tmp_path, name: str, config, src, monkeypatch, processes: bool, **kw):
    from osmo_store.blob import LocalBlobStore
    from osmo_store.repository import init_store

    monkeypatch.setenv(VARIABLE, "0" if processes else str(1 << 50))
    blob = LocalBlobStore(str(tmp_path / name / "store"))
    init_store(blob, config)
    repo = Repository(blob, config, cache_dir=str(tmp_path / name / "cache"))
    return repo, repo.upload(UploadRequest("ds", [str(src)]), **kw)


def pack_entries(repo) -> int:
    return sum(count for _, _, count in repo.index.packs())


def test_processes_make_the_same_version_as_threads(tmp_path, tiny_config, monkeypatch):
    monkeypatch.setattr(upload_procs, "JOB_FILES", 4)
    src = tmp_path / "src"
    mixed_tree(src)
    threads_repo, by_threads = upload(tmp_path, "threads", tiny_config, src, monkeypatch, processes=False)
    procs_repo, by_procs = upload(tmp_path, "procs", tiny_config, src, monkeypatch, processes=True, workers=2)
    try:
        assert by_procs.checksum == by_threads.checksum
        assert (by_procs.files, by_procs.logical_bytes) == (by_threads.files, by_threads.logical_bytes)
        # each distinct chunk stored once, whichever worker met it first
        assert by_procs.chunks_new == by_threads.chunks_new
        assert by_procs.chunks_deduplicated == by_threads.chunks_deduplicated
        assert pack_entries(procs_repo) == by_procs.chunks_new + by_procs.manifest_nodes_new
        assert [e.path for e in procs_repo.entries("ds")[1]] == [e.path for e in threads_repo.entries("ds")[1]]
        assert procs_repo.entries("ds")[0]["root"] == threads_repo.entries("ds")[0]["root"]
        procs_repo.download("ds", str(tmp_path / "out"))
        assert snapshot(tmp_path / "out") == snapshot(src)
    finally:
        threads_repo.close()
        procs_repo.close()


def test_large_files_cut_by_several_threads_make_the_same_version(tmp_path, tiny_config, monkeypatch):
    """Files of ``SEGMENTED_FROM`` bytes or more are cut in segments by threads (segment_chunking.py):
    the same chunks, entries and checksum as one thread cutting them in order."""
    src = tmp_path / "src"
    mixed_tree(src, seed=6)
    write_file(os.path.join(src, "large/c.bin"), b"\0" * 700_000 + random.Random(6).randbytes(900_000))
    time.sleep(0.1)
    whole_repo, whole = upload(tmp_path, "whole", tiny_config, src, monkeypatch, processes=False)
    monkeypatch.setattr(fileread, "SEGMENTED_FROM", 1_000_000)
    monkeypatch.setattr(fileread, "SEGMENT_SIZE", 300_001)
    cut = []
    real = fileread.SegmentChunker.batches

    def batches(self, fd, size):
        cut.append(size)
        yield from real(self, fd, size)

    monkeypatch.setattr(fileread.SegmentChunker, "batches", batches)
    repo, segmented = upload(tmp_path, "segmented", tiny_config, src, monkeypatch, processes=False, workers=2)
    try:
        assert len(cut) == 3  # a.bin, b.bin, c.bin went through the segment chunker
        assert segmented.checksum == whole.checksum
        assert (segmented.chunks_new, segmented.chunks_deduplicated) == (whole.chunks_new, whole.chunks_deduplicated)
        # the same manifest tree: every file's list of chunks is the same
        assert repo.entries("ds")[0]["root"] == whole_repo.entries("ds")[0]["root"]
        repo.download("ds", str(tmp_path / "out"))
        assert snapshot(tmp_path / "out") == snapshot(src)
    finally:
        repo.close()
        whole_repo.close()


def test_identical_files_met_by_two_workers_at_once_are_stored_once(tmp_path, tiny_config, monkeypatch, processes):
    monkeypatch.setattr(upload_procs, "JOB_FILES", 1)  # every file its own job: both workers at once
    src = tmp_path / "src"
    body = random.Random(7).randbytes(300_000)
    for i in range(24):
        write_file(os.path.join(src, f"f{i:02d}.bin"), body)
    one = tmp_path / "one"
    write_file(os.path.join(one, "f.bin"), body)
    time.sleep(0.1)  # older than RACY_NS: no file is read twice
    single_repo, single = upload(tmp_path, "single", tiny_config, one, monkeypatch, processes=False)
    repo, result = upload(tmp_path, "many", tiny_config, src, monkeypatch, processes=True, workers=2)
    try:
        assert result.chunks_new == single.chunks_new
        assert result.chunks_deduplicated == 23 * single.chunks_new
        assert pack_entries(repo) == result.chunks_new + result.manifest_nodes_new
    finally:
        single_repo.close()
        repo.close()


def test_a_second_upload_takes_unchanged_files_from_the_stat_cache(local_repo, tmp_path, processes):
    src = tmp_path / "src"
    mixed_tree(src, seed=3)
    for path in src.rglob("*"):  # old enough for the stat cache
        if path.is_file():
            os.utime(path, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    time.sleep(2.1)  # ctime too (RACY_SECONDS)
    first = local_repo.upload(UploadRequest("ds", [str(src)]), workers=2)
    second = local_repo.upload(UploadRequest("ds", [str(src)]), workers=2)
    assert first.files_unchanged == 0 and first.chunks_new > 0
    assert second.files_unchanged == second.files == first.files
    assert second.chunks_new == 0 and second.checksum == first.checksum


def test_progress_moves_inside_a_large_file_on_worker_processes(local_repo, tmp_path, processes, monkeypatch):
    monkeypatch.setattr(upload_procs, "REPORT_INTERVAL", 0.005)
    size = 24 * MiB
    write_file(os.path.join(tmp_path / "src", "big.bin"), random.Random(2).randbytes(size))
    progress = RecordingProgress()
    result = local_repo.upload(UploadRequest("big", [str(tmp_path / "src")]), progress, workers=2)
    assert (result.files, result.logical_bytes) == (1, size)
    advances = progress.advances()
    inside = [n for files, n in advances if files == 0]
    assert len(inside) >= 2 and all(n > 0 for n in inside), advances  # sent every 8 MiB read
    assert sum(f for f, _ in advances) == 1 and sum(n for _, n in advances) == size
    assert progress.calls[0] == ("start", 1, size) and progress.calls[-1] == ("finish",)


def test_a_script_without_a_main_guard_uploads_on_worker_processes(tmp_path):
    """Workers are fresh interpreters running osmo's module: the caller's script is not imported again."""
    src = tmp_path / "src"
    mixed_tree(src, seed=4)
    script = tmp_path / "plain.py"
    script.write_text(textwrap.dedent(f"""
        from osmo_store.blob import LocalBlobStore
        from osmo_store.repository import Repository, init_store
        from osmo_store.transfer.upload import UploadRequest
        blob = LocalBlobStore({str(tmp_path / "store")!r})
        config = init_store(blob)
        repo = Repository(blob, config, cache_dir={str(tmp_path / "cache")!r})
        print("version", repo.upload(UploadRequest("ds", [{str(src)!r}]), workers=2).version)
        repo.close()
    """))
    proc = subprocess.run([sys.executable, str(script)], env={**os.environ, VARIABLE: "0"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("version 1") == 1  # printed once: the script ran once


def test_a_file_that_keeps_changing_fails_the_upload_naming_it(tmp_path):
    """A worker's SourceChangedError reaches the user as the thread pool's would: one line, exit 9."""
    cli = Cli(tmp_path)
    cli.init_tiny()
    src = tmp_path / "src"
    mixed_tree(src, seed=5)
    growing = src / "small" / "growing.log"
    write_file(str(growing), random.Random(5).randbytes(2 * MiB))
    cli.env[VARIABLE] = "0"
    stop = threading.Event()

    def append() -> None:
        with open(growing, "ab", buffering=0) as f:
            while not stop.is_set():
                f.write(b"x")
                time.sleep(0.0002)

    writer = threading.Thread(target=append)
    writer.start()
    try:
        result = cli("dataset", "upload", "ds", str(src), "--workers", "2", check=False)
    finally:
        stop.set()
        writer.join()
    assert result.code == 9, result.err
    assert_one_error_line(result.err, str(growing), "changed while it was read", "nothing was committed")
    assert cli("dataset", "list", "--json").json() == []
    assert not orphaned_workers(cli.env["OSMO_CACHE_DIR"])


def worker_pids(parent_pid: int) -> list[int]:
    """Upload worker processes started by ``parent_pid``."""
    return workerprocs.workers_of(workerprocs.UPLOAD, parent_pid)


def orphaned_workers(cache_dir: str) -> list[int]:
    """Upload workers still alive whose environment names this test's cache (their parent is gone)."""
    return workerprocs.workers_with_env(workerprocs.UPLOAD, f"OSMO_CACHE_DIR={cache_dir}")


def wait_for(predicate, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    return predicate()


@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    root = tmp_path_factory.mktemp("big-source")
    random_folder(root, seed=77, total=48 * MiB)
    return root, snapshot(root)


def started_upload(tmp_path, src):
    cli = Cli(tmp_path)
    cli("store", "init", "--pack-size", str(MiB))
    cli.env[VARIABLE] = "0"
    proc = subprocess.Popen(cli.argv("dataset", "upload", "ds", str(src), "--workers", "2"), env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    return cli, proc


def assert_rerun_completes(cli, src, expected, work) -> None:
    assert cli("store", "verify", "--read-data").code == 0
    assert cli("dataset", "list", "--json").json() == []
    stored = cli("store", "stats", "--json").json()["stored_bytes"]
    rerun = cli("dataset", "upload", "ds", str(src), "--json").json()
    assert rerun["version"] == 1
    assert rerun["stored_bytes"] < sum(size for _, size, *_ in expected.values()) - stored + 64 * 1024
    cli("dataset", "download", "ds", str(work / "out"))
    assert snapshot(work / "out") == expected


def test_a_killed_worker_ends_the_upload_with_one_line_and_commits_nothing(tmp_path, big_source):
    src, expected = big_source
    cli, proc = started_upload(tmp_path, src)
    try:
        workers = wait_for(lambda: len(worker_pids(proc.pid)) == 2 and count_packs(cli.store) >= 2
                           and worker_pids(proc.pid))
        assert workers, "the upload did not start two workers"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 8, err
    assert_one_error_line(err, "upload worker process died", "nothing was committed")
    assert wait_for(lambda: not orphaned_workers(cli.env["OSMO_CACHE_DIR"]), 15)
    assert_rerun_completes(cli, src, expected, tmp_path)


@pytest.mark.parametrize("how,packs", [("SIGKILL", 1), ("SIGKILL", 40), ("Ctrl-C", 3)])
def test_an_upload_killed_or_interrupted_mid_way_leaves_no_worker_and_no_version(tmp_path, big_source, how, packs):
    """Killed after ``packs`` packs of about 50 are durable (early, late) or interrupted."""
    src, expected = big_source
    cli, proc = started_upload(tmp_path, src)
    try:
        assert wait_for(lambda: count_packs(cli.store) >= packs or proc.poll() is not None)
        assert proc.poll() is None, "the upload ended before it could be interrupted"
        if how == "SIGKILL":
            os.kill(proc.pid, signal.SIGKILL)
        else:
            os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole group
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    if how == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert proc.returncode == 130, err
        assert_one_error_line(err, "interrupted")
    assert wait_for(lambda: not orphaned_workers(cli.env["OSMO_CACHE_DIR"]), 15), "workers outlived the upload"
    leftovers = [f for _, _, fs in os.walk(cli.store) for f in fs if f.startswith(".tmp-")]
    if how == "Ctrl-C":
        assert leftovers == []  # workers stopped cleanly: no half-written pack
    assert_rerun_completes(cli, src, expected, tmp_path)


def test_a_full_disk_on_worker_processes_exits_8_and_leaves_no_temporary_file(tmp_path):
    from helpers.disks import tmpfs

    with tmpfs(tmp_path / "disk", "24m") as disk:
        cli = Cli(tmp_path)
        cli.store = str(disk / "store")
        cli("store", "init", "--pack-size", str(MiB))
        with open(disk / "ballast", "wb") as f:
            f.write(b"\xaa" * (12 * MiB))
        src = tmp_path / "src"
        random_folder(src, seed=8, total=16 * MiB)
        cli.env[VARIABLE] = "0"
        failed = cli("dataset", "upload", "ds", str(src), "--workers", "2", "--json", check=False)
        assert failed.code == 8, failed.err
        assert_one_error_line(failed.err, "disk full", cli.store)
        assert [f for _, _, fs in os.walk(cli.store) for f in fs if f.startswith(".tmp-")] == []
        assert cli("store", "verify", "--read-data").code == 0
        assert cli("dataset", "list", "--json").json() == []
        os.remove(disk / "ballast")
        assert cli("dataset", "upload", "ds", str(src), "--json").json()["version"] == 1
        cli("dataset", "download", "ds", str(tmp_path / "out"))
        assert snapshot(tmp_path / "out") == snapshot(src)


def test_a_bad_threshold_in_the_environment_is_one_line_exit_2(tmp_path):
    cli = Cli(tmp_path)
    cli.init_tiny()
    write_file(os.path.join(tmp_path / "src", "a.txt"), b"a")
    cli.env[VARIABLE] = "lots"
    result = cli("dataset", "upload", "ds", str(tmp_path / "src"), check=False)
    assert result.code == 2
    assert_one_error_line(result.err, VARIABLE, "lots")
