"""Downloads by worker processes (``download_procs.py``): the same files, outcomes, errors and index notes
as the thread pool, progress inside large files, and no process left behind when a worker or the
download itself is killed.

``OSMO_DOWNLOAD_PROCESS_MIN_BYTES=0`` sends every download of these tests to worker processes (the
default sends only downloads of 64 MiB or more); the tests check that workers did run.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time

import pytest

from conftest import Cli
from helpers import workerprocs
from helpers.storefiles import entries_of, find_chunk, flip
from helpers.trees import snapshot, write_file
from helpers.workerprocs import alive
from osmo_store.repository import Repository
from osmo_store.transfer import download as download_module
from osmo_store.transfer.download_procs import JOB_BYTES, JOB_FILES, _next_job
from osmo_store.transfer.progress import Progress

MiB = 1024 * 1024
T0 = 1_600_000_000_000_000_000
PROCESSES = {"OSMO_DOWNLOAD_PROCESS_MIN_BYTES": "0"}
THREADS = {"OSMO_DOWNLOAD_PROCESS_MIN_BYTES": str(2**62)}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A tiny-chunk store holding ``ds:1``: 400 small files (some empty, some executable), three large
    ones (two of 9 MiB: a job each) and duplicates of a large and a small file."""
    cli = Cli.tiny(tmp_path_factory, "download-processes")
    rnd = random.Random(17)
    src = cli.root / "src"
    for i in range(400):
        size = 0 if i % 50 == 0 else rnd.randrange(1, 30_000)
        write_file(src / "small" / f"d{i % 7}" / f"f{i:03d}.bin", rnd.randbytes(size), mtime_ns=T0 + i,
                   mode=0o755 if i % 9 == 0 else 0o644)
    big = {name: rnd.randbytes(size) for name, size in (("a.bin", 9 * MiB), ("b.bin", 9 * MiB), ("c.bin", 2 * MiB))}
    for name, data in big.items():
        write_file(src / "big" / name, data, mtime_ns=T0 + 1000)
    write_file(src / "dup" / "a-copy.bin", big["a.bin"], mtime_ns=T0 + 2000)
    write_file(src / "dup" / "small-copy.bin", (src / "small" / "d1" / "f001.bin").read_bytes(), mtime_ns=T0 + 2001)
    cli("dataset", "upload", "ds", str(src))
    return {"store": cli.store, "cache": cli.env["OSMO_CACHE_DIR"], "src": src, "files": snapshot(src)}


def client(tmp_path, template, name: str = "client", env: dict | None = None) -> Cli:
    """A CLI client of a copy of the template store (so a test may damage it)."""
    new = Cli(tmp_path / name)
    new.copy_of(template)
    new.env.update(env or {})
    return new


def workers_of(pid: int) -> list[int]:
    return workerprocs.workers_of(workerprocs.DOWNLOAD, pid)


def writing_a_part_file(pids: list[int]) -> int | None:
    """The first of ``pids`` that holds a download's temporary file open: a worker mid-file."""
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if "/.osmo-part-" in os.readlink(f"/proc/{pid}/fd/{fd}"):
                    return pid
            except OSError:
                continue
    return None


def part_files(root) -> list[str]:
    return [name for _, _, names in os.walk(root) for name in names if name.startswith(".osmo-part-")]


def start_download(cli: Cli, dest) -> subprocess.Popen:
    return subprocess.Popen(cli.argv("dataset", "download", "ds", str(dest), "--workers", "2"), env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def worker_mid_file(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, list[int]]:
    """Wait until a worker of the CLI process ``proc`` is writing a file: that worker, and all of them."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the download ended before a worker was seen writing: {proc.communicate()}"
        workers = workers_of(proc.pid)
        busy = writing_a_part_file(workers)
        if busy is not None:
            return busy, workers
        time.sleep(0.002)
    raise AssertionError("no download worker was seen writing a file")


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


class WorkerWatch(Progress):
    """Notes the download worker processes of this process at every progress call."""

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.files = self.bytes = 0

    def advance(self, files: int, nbytes: int) -> None:
        self.seen.update(workers_of(os.getpid()))
        self.files += files
        self.bytes += nbytes


# --- the files ------------------------------------------------------------------------------------

def test_worker_processes_write_every_file_byte_exact_and_a_rerun_skips_what_is_in_place(
        template, tmp_path, monkeypatch):
    monkeypatch.setenv("OSMO_DOWNLOAD_PROCESS_MIN_BYTES", "0")
    dest = tmp_path / "out"
    total = sum(v[1] for v in template["files"].values())
    with Repository.open(template["store"], cache_dir=str(tmp_path / "cache")) as repo:
        watch = WorkerWatch()
        _, result = repo.download("ds", str(dest), progress=watch, workers=2)
        assert len(watch.seen) == 2  # two worker processes did the writing
        assert not any(alive(pid) for pid in watch.seen) and workers_of(os.getpid()) == []
        assert (result.files, result.bytes, result.files_skipped) == (len(template["files"]), total, 0)
        assert (watch.files, watch.bytes) == (result.files, total)
        assert snapshot(dest) == template["files"]

        # an interrupted download, resumed: files removed, one large file changed in place (same size)
        removed = sorted(template["files"])[::9]
        for path in removed:
            os.remove(dest / path)
        with open(dest / "big" / "b.bin", "r+b") as f:
            f.seek(5 * MiB)
            f.write(b"not what was stored")
        watch = WorkerWatch()
        _, result = repo.download("ds", str(dest), progress=watch, workers=2)
        assert len(watch.seen) == 2
        changed = len(removed) + ("big/b.bin" not in removed)
        assert result.files_skipped == len(template["files"]) - changed
        assert (watch.files, watch.bytes) == (result.files, total)
        assert snapshot(dest) == template["files"]
        assert part_files(dest) == []


def test_jobs_are_consecutive_files_up_to_their_limits_and_a_large_file_goes_alone():
    from osmo_store.manifest import FileEntry

    def entries(sizes):
        return [FileEntry(f"f{i:05d}", size, 0o644, 0, b"\0" * 32) for i, size in enumerate(sizes)]

    many = entries([10] * (JOB_FILES + 5))
    job, end = _next_job(many, 0)
    assert [i for i, _ in job] == list(range(JOB_FILES)) and end == JOB_FILES
    mixed = entries([1000, 2000, JOB_BYTES, 5, JOB_BYTES // 2, JOB_BYTES // 2, 7])
    starts = [0]
    while starts[-1] < len(mixed):
        starts.append(_next_job(mixed, starts[-1])[1])
    assert starts == [0, 2, 3, 6, 7]  # the large file alone; a job ends once it holds JOB_BYTES


# --- damage ---------------------------------------------------------------------------------------

def test_a_damaged_chunk_fails_only_its_file_as_with_threads_and_the_index_notes_it(template, tmp_path):
    entry = entries_of(template["store"], str(tmp_path / "probe"), "ds")["big/c.bin"]
    outcomes = {}
    for mode, env in (("threads", THREADS), ("processes", PROCESSES)):
        cli = client(tmp_path, template, mode, env)
        path, offset, length = find_chunk(cli.store, entry.chunks[len(entry.chunks) // 2][0])
        flip(path, offset + length // 2)
        dest = tmp_path / f"out-{mode}"
        failed = cli("dataset", "download", "ds", str(dest), "--workers", "2", check=False)
        outcomes[mode] = (failed.code, failed.err)
        assert failed.code == 5 and failed.err.count("\n") == 1 and "Traceback" not in failed.err, failed.err
        assert "big/c.bin" in failed.err and "1 of 405 files could not be restored" in failed.err
        got = snapshot(dest)
        assert "big/c.bin" not in got and part_files(dest) == []  # never a wrong byte, nothing half-written
        assert got == {p: v for p, v in template["files"].items() if p != "big/c.bin"}  # the others are in place
        info = cli("dataset", "info", "ds", "--json").json()  # the index noted the damage
        assert info["versions"][0]["status"] == "damaged" and info["versions"][0]["damage"]["named"] == ["big/c.bin"]
        with Repository.open(cli.store, cache_dir=cli.env["OSMO_CACHE_DIR"]) as repo:
            assert entry.chunks[len(entry.chunks) // 2][0] in {cid for cid, _, _ in repo.index.damaged_chunks()}
        again = cli("dataset", "download", "ds", str(dest), "--workers", "2", check=False)
        assert (again.code, again.err) == outcomes[mode]  # a second download sees the same
    assert outcomes["threads"] == outcomes["processes"]


# --- progress -------------------------------------------------------------------------------------

def test_progress_bytes_move_inside_a_large_file_written_by_a_worker(local_repo, tmp_path, monkeypatch):
    from test_transfer_progress import RecordingProgress, assert_bytes_move_before_the_file_completes

    monkeypatch.setenv("OSMO_DOWNLOAD_PROCESS_MIN_BYTES", "0")
    monkeypatch.setattr(download_module, "REPORT_INTERVAL", 0.005)
    size = 6 * MiB
    write_file(tmp_path / "src" / "big.bin", random.Random(3).randbytes(size))
    from osmo_store.transfer.upload import UploadRequest
    local_repo.upload(UploadRequest("big", [str(tmp_path / "src")]))

    class Watching(RecordingProgress):
        seen: set[int] = set()

        def advance(self, files, nbytes):
            self.seen.update(workers_of(os.getpid()))
            super().advance(files, nbytes)

    progress = Watching()
    _, result = local_repo.download("big", str(tmp_path / "out"), progress=progress, workers=1)
    assert len(progress.seen) == 1 and (result.files, result.bytes) == (1, size)
    assert (tmp_path / "out" / "big.bin").read_bytes() == (tmp_path / "src" / "big.bin").read_bytes()
    assert_bytes_move_before_the_file_completes(progress, size)
    assert progress.threads == {threading.get_ident()}


# --- processes killed -----------------------------------------------------------------------------

def test_a_worker_killed_mid_file_ends_the_download_with_one_line_and_a_rerun_completes(template, tmp_path):
    cli = client(tmp_path, template, env=PROCESSES)
    dest = tmp_path / "out"
    proc = start_download(cli, dest)
    victim, workers = worker_mid_file(proc)
    os.kill(victim, signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 8, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "a download worker process died; the files written so far are in place" in err
    assert not any(alive(pid) for pid in workers)  # the other worker was stopped
    in_place = {p: v for p, v in snapshot(dest).items() if ".osmo-part-" not in p}
    assert in_place == {p: template["files"][p] for p in in_place}  # what is in place is right
    done = cli("dataset", "download", "ds", str(dest), "--workers", "2")
    assert done.code == 0
    assert snapshot(dest) == template["files"] and part_files(dest) == []  # the killed worker's part file too


def test_no_worker_outlives_a_download_killed_mid_file(template, tmp_path):
    cli = client(tmp_path, template, env=PROCESSES)
    dest = tmp_path / "out"
    proc = start_download(cli, dest)
    _, workers = worker_mid_file(proc)
    assert len(workers) == 2
    proc.kill()
    proc.communicate(timeout=60)
    assert gone_within(workers, 15), [pid for pid in workers if alive(pid)]
    done = cli("dataset", "download", "ds", str(dest))
    assert done.code == 0
    assert snapshot(dest) == template["files"] and part_files(dest) == []


def test_a_bad_threshold_is_one_line_naming_the_variable(template, tmp_path):
    cli = client(tmp_path, template, env={"OSMO_DOWNLOAD_PROCESS_MIN_BYTES": "lots"})
    failed = cli("dataset", "download", "ds", str(tmp_path / "out"), check=False)
    assert failed.code == 2 and failed.err.count("\n") == 1, failed.err
    assert "OSMO_DOWNLOAD_PROCESS_MIN_BYTES='lots'" in failed.err
    assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_the_default_threshold_keeps_small_downloads_on_threads(template, tmp_path, monkeypatch):
    monkeypatch.delenv("OSMO_DOWNLOAD_PROCESS_MIN_BYTES", raising=False)
    with Repository.open(template["store"], cache_dir=str(tmp_path / "cache")) as repo:
        watch = WorkerWatch()
        repo.download("ds", str(tmp_path / "out"), include=["small/*"], progress=watch)
    assert watch.seen == set() and watch.files == 400
