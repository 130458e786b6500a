"""Progress moves inside large files (bytes as chunks are done) and its totals still add up."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from osmo_store.transfer import download as download_module
from osmo_store.transfer import upload as upload_module
from osmo_store.transfer.progress import ByteTally, FileBytes, Progress, result_reporting
from osmo_store.transfer.upload import UploadRequest

MiB = 1024 * 1024


class RecordingProgress(Progress):
    """Every call, in order, and the thread that made it."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.threads: set[int] = set()

    def start(self, label, files, total_bytes):
        self.threads.add(threading.get_ident())
        self.calls.append(("start", files, total_bytes))

    def advance(self, files, nbytes):
        self.threads.add(threading.get_ident())
        self.calls.append(("advance", files, nbytes))

    def finish(self):
        self.threads.add(threading.get_ident())
        self.calls.append(("finish",))

    def advances(self):
        return [c[1:] for c in self.calls if c[0] == "advance"]


@pytest.fixture
def fast_reports(monkeypatch):
    monkeypatch.setattr(upload_module, "REPORT_INTERVAL", 0.005)
    monkeypatch.setattr(download_module, "REPORT_INTERVAL", 0.005)


def write_random(path, size, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))


def assert_bytes_move_before_the_file_completes(progress: RecordingProgress, size: int) -> None:
    advances = progress.advances()
    before_done = [n for files, n in advances[:-1] if files == 0]
    assert len(before_done) >= 3, advances  # one 6 MiB file: ~1 MiB steps while it is read or written
    assert all(n > 0 for n in before_done)
    assert advances[-1][0] == 1 and advances[-1][1] < size  # the file's completion brings the rest
    assert sum(f for f, _ in advances) == 1
    assert sum(n for _, n in advances) == size
    assert progress.threads == {threading.get_ident()}  # Progress is still called from one thread only


def test_upload_of_one_large_file_moves_bytes_before_the_file_is_done(local_repo, tmp_path, fast_reports):
    size = 6 * MiB
    write_random(tmp_path / "src" / "big.bin", size)
    progress = RecordingProgress()
    result = local_repo.upload(UploadRequest("big", [str(tmp_path / "src")]), progress, workers=2)
    assert (result.files, result.logical_bytes) == (1, size)
    assert progress.calls[0] == ("start", 1, size)
    assert progress.calls[-1] == ("finish",)
    assert_bytes_move_before_the_file_completes(progress, size)


def test_download_of_one_large_file_moves_bytes_before_the_file_is_done(local_repo, tmp_path, fast_reports):
    size = 6 * MiB
    write_random(tmp_path / "src" / "big.bin", size, seed=1)
    local_repo.upload(UploadRequest("big", [str(tmp_path / "src")]))
    progress = RecordingProgress()
    _, result = local_repo.download("big", str(tmp_path / "out"), progress=progress, workers=2)
    assert (result.files, result.bytes) == (1, size)
    assert (tmp_path / "out" / "big.bin").read_bytes() == (tmp_path / "src" / "big.bin").read_bytes()
    assert_bytes_move_before_the_file_completes(progress, size)


def test_totals_add_up_over_many_files_cached_and_skipped_ones_included(local_repo, tmp_path, fast_reports,
                                                                        monkeypatch):
    rng = random.Random(2)
    sizes = [rng.randrange(0, 300_000) for _ in range(40)] + [3 * MiB]
    for i, size in enumerate(sizes):
        write_random(tmp_path / "src" / f"d{i % 3}" / f"f{i:02d}.bin", size, seed=i)
    monkeypatch.setattr(upload_module, "RACY_SECONDS", -1)  # the stat cache keeps even files just written
    expected = [("start", len(sizes), sum(sizes))]
    for attempt in range(2):  # the second upload reuses every file's entry
        progress = RecordingProgress()
        result = local_repo.upload(UploadRequest("many", [str(tmp_path / "src")]), progress)
        assert result.files_unchanged == (0 if attempt == 0 else len(sizes))
        advances = progress.advances()
        assert progress.calls[:1] == expected
        assert (sum(f for f, _ in advances), sum(n for _, n in advances)) == (len(sizes), sum(sizes))
    for attempt in range(2):  # the second download skips every file already in place
        progress = RecordingProgress()
        _, result = local_repo.download("many", str(tmp_path / "out"), progress=progress)
        assert result.files_skipped == (0 if attempt == 0 else len(sizes))
        advances = progress.advances()
        assert (sum(f for f, _ in advances), sum(n for _, n in advances)) == (len(sizes), sum(sizes))


def test_file_bytes_count_a_repeated_read_once_and_settle_to_the_size():
    tally = ByteTally()
    file_bytes = FileBytes(tally, batch=100)
    for _ in range(5):
        file_bytes.add(40)
    assert tally.take() == 120  # added in batches of >= 100 bytes: the last 80 wait
    file_bytes.restart()  # the file changed while read: read again from its start
    for _ in range(6):
        file_bytes.add(40)
    assert tally.take() == 120  # 240 reached: only the bytes past the 200 seen before, and the 80
    file_bytes.settle(150)  # it shrank to 150 bytes meanwhile: its share is exactly that
    assert tally.take() == -90
    assert tally.take() == 0


def test_small_files_take_one_lock_each():
    tally = ByteTally()
    adds = []
    real_add = tally.add
    tally.add = lambda n: (adds.append(n), real_add(n))
    for size in (10, 4000, 70_000):
        file_bytes = FileBytes(tally)
        file_bytes.add(size)
        file_bytes.settle(size)
    assert adds == [10, 4000, 70_000]


def test_result_reporting_reports_while_waiting_and_returns_the_result():
    tally = ByteTally()
    progress = RecordingProgress()
    release = threading.Event()

    def work():
        for _ in range(3):
            tally.add(7)
            time.sleep(0.05)
        release.wait(5)
        return "done"

    with ThreadPoolExecutor(1) as ex:
        future = ex.submit(work)
        threading.Timer(0.3, release.set).start()
        assert result_reporting(future, progress, tally, interval=0.01) == "done"
    assert sum(n for _, n in progress.advances()) == 21
    assert len(progress.advances()) >= 2 and all(f == 0 for f, _ in progress.advances())


def test_result_reporting_passes_a_workers_timeout_error_through():
    with ThreadPoolExecutor(1) as ex:
        future = ex.submit(lambda: (_ for _ in ()).throw(TimeoutError("backend timed out")))
        with pytest.raises(TimeoutError, match="backend timed out"):
            result_reporting(future, Progress(), ByteTally(), interval=0.01)
