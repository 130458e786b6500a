"""``osmo-sidecar upload --wait``: the upload container of a Kubernetes pod, tested without a cluster.

The installed ``osmo-sidecar`` console script (the image's ENTRYPOINT) runs as subprocesses on real run
directories and real local stores, the way the pod's containers run it: an upload that waits beside
the task, the task wrapped by ``exec``, the init container's ``download`` before both. Plus ``wait.py``
in-process with a fake clock for what takes minutes in real time (progress lines, limits).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from osmo_run.contract import (EXIT_CODE_FILE, OUTPUT_FAILED, InputSpec, OutputSpec, RunDir,
                               task_output_dataset)
from sidecar.errors import DataError
from sidecar.wait import NOTE_EVERY, UNREADABLE_GRACE, WaitOptions, parse_duration, wait_for_task

from helpers.trees import write_file
from sidecar_tests.test_sidecar import (PREFIX, Result, Sidecar, Store, assert_sidecar_lines, make_run,
                                        status, store, tree)

__all__ = ["store"]  # a fixture, used by name

POLL = "0.1"


class EntryPoint(Sidecar):
    """Runs the installed ``osmo-sidecar`` script (this checkout's code first on PYTHONPATH)."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path)
        search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        script = shutil.which("osmo-sidecar", path=search)
        if script is None:
            pytest.fail("the osmo-sidecar console script is not installed (pip install -e '.[test]')")
        self.script = script

    def argv(self, *args: str) -> list[str]:
        return [self.script, *args]


@pytest.fixture
def osmo_sidecar(tmp_path) -> EntryPoint:
    return EntryPoint(tmp_path)


class Waiting:
    """An ``upload --wait`` subprocess whose stderr is read line by line."""

    def __init__(self, sidecar: EntryPoint, run: RunDir, *args: str) -> None:
        self.proc = sidecar.popen("upload", "--run-dir", run.root, "--wait", *args,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.first = self.proc.stderr.readline()

    def finish(self, timeout: float = 120) -> Result:
        try:
            out, rest = self.proc.communicate(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        result = Result(self.proc.returncode, out, self.first + rest)
        assert_sidecar_lines(result)
        return result


def datasets(store: Store) -> set[str]:
    with store.open() as repo:
        return {d["name"] for d in repo.list_datasets()}


def assert_still_waiting(waiting: Waiting, run: RunDir, store: Store, dataset: str) -> None:
    assert waiting.first.startswith(PREFIX + "waiting for the task's exit code"), waiting.first
    time.sleep(1.0)
    assert waiting.proc.poll() is None, "upload --wait did not wait"
    assert run.read_status("upload.json") is None
    assert dataset not in datasets(store)


# --- waiting, then uploading ---------------------------------------------------------------------

@pytest.mark.parametrize("code", [0, 3])
def test_upload_waits_for_exec_then_uploads(tmp_path, osmo_sidecar, store, code):
    """Outputs of a failed command are uploaded too, as on the local runner."""
    out_ds = task_output_dataset("wf-w", "t")
    run = make_run(tmp_path, store, workflow_id="wf-w", task="t", outputs=[OutputSpec("task_output", dataset=out_ds)])
    os.makedirs(run.output_dir)
    waiting = Waiting(osmo_sidecar, run, "--poll", POLL)
    try:
        assert_still_waiting(waiting, run, store, out_ds)
        script = (f"printf 'model %s\\n' {code} > {run.output_dir}/model.txt; "
                  f"mkdir {run.output_dir}/logs; printf 'log\\n' > {run.output_dir}/logs/run.log; exit {code}")
        done = osmo_sidecar("exec", "--run-dir", run.root, "--", "sh", "-c", script)
        assert done.code == code
        result = waiting.finish()
    finally:
        if waiting.proc.poll() is None:
            waiting.proc.kill()
    assert result.code == 0, result.err
    assert any(f"the task finished with exit code {code}" in line for line in result.lines())
    assert any("uploading its outputs anyway" in line for line in result.lines()) == (code != 0)
    st_ = status(run, "upload.json")
    assert st_["code"] == 0 and st_["datasets"][0]["dataset"] == out_ds
    target = tmp_path / "check"
    with store.open() as repo:
        rec, _ = repo.entries(out_ds)
        repo.download(out_ds, str(target))
    assert rec["metadata"]["exit_code"] == str(code)
    assert tree(target) == {"model.txt": f"model {code}\n".encode(), "logs/run.log": b"log\n"}


def test_wait_timeout_writes_a_failing_status(tmp_path, osmo_sidecar, store):
    out_ds = task_output_dataset("wf-1", "train")
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset=out_ds)])
    write_file(Path(run.output_dir) / "half.txt", b"half-written\n")
    started = time.monotonic()
    result = osmo_sidecar("upload", "--run-dir", run.root, "--wait", "--wait-timeout", "1s", "--poll", POLL)
    took = time.monotonic() - started
    assert result.code == 1 and 1.0 <= took < 60, (result.code, took)
    st_ = status(run, "upload.json")
    assert st_["code"] == OUTPUT_FAILED and st_["datasets"] == []
    assert st_["message"] == "the task's exit code did not appear within 1 s; outputs not uploaded"
    assert "\n" not in st_["message"]
    assert any(f"upload failed ({OUTPUT_FAILED}): the task's exit code did not appear" in line
               for line in result.lines())
    assert datasets(store) == set()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_while_waiting_ends_the_wait_with_a_failing_status(tmp_path, osmo_sidecar, store, sig):
    out_ds = task_output_dataset("wf-1", "train")
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset=out_ds)])
    write_file(Path(run.output_dir) / "x.txt", b"x\n")
    waiting = Waiting(osmo_sidecar, run, "--poll", POLL)
    assert_still_waiting(waiting, run, store, out_ds)
    sent = time.monotonic()
    waiting.proc.send_signal(sig)
    result = waiting.finish(timeout=30)
    assert result.code == 1 and time.monotonic() - sent < 10
    assert status(run, "upload.json") == {
        "code": OUTPUT_FAILED, "message": f"the sidecar was stopped by {sig.name} during upload", "datasets": []}
    assert datasets(store) == set()


@pytest.mark.parametrize("bad", ["text", "folder"])
def test_an_exit_code_file_without_a_code_still_ends_the_wait(tmp_path, osmo_sidecar, store, bad):
    """A file that exists means the task ended: after a short grace the outputs are uploaded, without
    ``exit_code`` in their metadata."""
    out_ds = task_output_dataset("wf-1", "train")
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset=out_ds)])
    write_file(Path(run.output_dir) / "y.txt", b"y\n")
    waiting = Waiting(osmo_sidecar, run, "--poll", POLL)
    assert_still_waiting(waiting, run, store, out_ds)
    path = Path(run.status(EXIT_CODE_FILE))
    path.parent.mkdir(parents=True, exist_ok=True)
    if bad == "text":
        path.write_text("finished\n")
    else:
        path.mkdir()  # cannot be read, whoever we are
    result = waiting.finish()
    assert result.code == 0, result.err
    assert any("the task has finished but" in line and "without its exit code" in line for line in result.lines())
    with store.open() as repo:
        rec, entries = repo.entries(out_ds)
    assert [e.path for e in entries] == ["y.txt"] and "exit_code" not in rec["metadata"]


@pytest.mark.parametrize("args, needle", [
    (["--wait-timeout", "5"], "--wait-timeout needs --wait"),
    (["--poll", "1"], "--poll needs --wait"),
    (["--wait", "--wait-timeout", "5x"], "'5x' is not a duration"),
    (["--wait", "--wait-timeout", "30m1h"], "largest first"),
    (["--wait", "2", "--wait-timeout", "5"], "give the time limit once"),
    (["--wait", "--poll", "0"], "--poll"),
])
def test_wait_usage_errors(tmp_path, osmo_sidecar, store, args, needle):
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset="wf-1--train")])
    result = osmo_sidecar("upload", "--run-dir", run.root, *args)
    assert result.code == 2 and needle in result.err, result.err
    assert run.read_status("upload.json") is None


# --- the pod, as three processes on one run directory --------------------------------------------

def test_pod_sequence_init_download_then_task_and_upload_side_by_side(tmp_path, osmo_sidecar, store):
    """init container: ``download``; then, started together, the task container (``exec``) and the
    sidecar container (``upload --wait``), sharing the run directory as the pod's emptyDir."""
    scenes = {"a/one.txt": b"first scene\n", "b/two.txt": b"second scene\n", "skip.bin": b"\x00\x01"}
    version = store.seed("scenes", scenes, tmp_path / "seed")
    out_ds = task_output_dataset("wf-pod", "train")
    run = make_run(tmp_path, store, workflow_id="wf-pod", task="train",
                   inputs=[InputSpec("dataset", ref="scenes", regex=r"\.txt$")],
                   outputs=[OutputSpec("task_output", dataset=out_ds),
                            OutputSpec("dataset", dataset="models", tag="best", path="model")])

    init = osmo_sidecar("download", "--run-dir", run.root)
    assert init.code == 0, init.err
    assert status(run, "download.json")["code"] == 0

    # The task reads its input, works a while, writes its output; meanwhile the upload waits.
    task = (f"set -e; sleep 3; mkdir -p {run.output_dir}/model; "
            f"cat {run.input_dir(0)}/scenes/a/one.txt {run.input_dir(0)}/scenes/b/two.txt "
            f"> {run.output_dir}/model/weights.txt; ls -R {run.input_dir(0)} > {run.output_dir}/listing.txt")
    sidecar_container = osmo_sidecar.popen("upload", "--run-dir", run.root, "--wait", "--wait-timeout", "2m",
                                           "--poll", POLL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    task_container = osmo_sidecar.popen("exec", "--run-dir", run.root, "--", "sh", "-c", task,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # the task is still working: the upload must be waiting for it
        assert task_container.poll() is None and sidecar_container.poll() is None
        assert run.read_status("upload.json") is None and out_ds not in datasets(store)
        _task_out, task_err = task_container.communicate(timeout=120)
        task_ended = time.monotonic()
        out, err = sidecar_container.communicate(timeout=120)
        upload_ended = time.monotonic()
    finally:
        for proc in (task_container, sidecar_container):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert task_container.returncode == 0, task_err
    assert run.read_exit_code() == 0
    upload = Result(sidecar_container.returncode, out, err)
    assert_sidecar_lines(upload)
    assert upload.code == 0, upload.err
    lines = upload.lines()
    assert lines[0].startswith(PREFIX + "waiting for the task's exit code")
    assert any("the task finished with exit code 0" in line for line in lines)
    assert upload_ended >= task_ended - 0.5

    st_ = status(run, "upload.json")
    assert st_["code"] == 0 and [d["dataset"] for d in st_["datasets"]] == [out_ds, "models"]
    with store.open() as repo:
        rec, _ = repo.entries(out_ds)
        repo.download(out_ds, str(tmp_path / "got-task-output"))
        model_rec, _ = repo.entries("models:best")
        repo.download("models:best", str(tmp_path / "got-model"))
    assert tree(tmp_path / "got-model") == {"weights.txt": b"first scene\nsecond scene\n"}
    got = tree(tmp_path / "got-task-output")
    assert set(got) == {"model/weights.txt", "listing.txt"} and b"skip.bin" not in got["listing.txt"]
    for meta in (rec["metadata"], model_rec["metadata"]):
        assert meta["input.0"] == f"scenes:{version}" and meta["exit_code"] == "0"
        assert meta["workflow_id"] == "wf-pod" and meta["task"] == "train"


# --- wait.py in-process, on a fake clock ---------------------------------------------------------

class FakeTime:
    def __init__(self, events=None) -> None:
        self.now = 1000.0
        self.events = sorted(events or [])  # (at seconds after the start, action)
        self.start = self.now

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += max(seconds, 1e-3)
        while self.events and self.now - self.start >= self.events[0][0]:
            self.events.pop(0)[1]()


def said(capsys) -> list[str]:
    return [line.removeprefix(PREFIX) for line in capsys.readouterr().err.splitlines()]


def test_wait_prints_progress_and_returns_the_code(tmp_path, capsys):
    run = RunDir(str(tmp_path / "run"))
    finish_at = 2 * NOTE_EVERY + 30
    fake = FakeTime([(finish_at, lambda: write_file(Path(run.status(EXIT_CODE_FILE)), b"17\n"))])
    code = wait_for_task(run, WaitOptions(timeout=0, poll=5.0), fake.clock, fake.sleep)
    assert code == 17
    lines = said(capsys)
    assert lines[0].startswith("waiting for the task's exit code in ") and "no time limit" in lines[0]
    assert [line for line in lines if line.startswith("still waiting")] == [
        "still waiting for the task to finish (5m00s so far)", "still waiting for the task to finish (10m00s so far)"]
    assert lines[-1] == "the task finished with exit code 17 (waited 10m30s); uploading its outputs"


def test_wait_gives_up_at_its_limit_without_oversleeping(tmp_path, capsys):
    run = RunDir(str(tmp_path / "run"))
    fake = FakeTime()
    with pytest.raises(DataError, match=r"did not appear within 5400 s; outputs not uploaded"):
        wait_for_task(run, WaitOptions(timeout=parse_duration("1h30m"), poll=7.0), fake.clock, fake.sleep)
    assert 5400 <= fake.now - fake.start < 5400 + 0.01
    assert "at most 5400 s" in said(capsys)[0]


def test_a_code_written_in_place_is_read_once_complete(tmp_path, capsys):
    """A wrapper that writes the file in place (no rename) may be seen empty first."""
    run = RunDir(str(tmp_path / "run"))
    path = Path(run.status(EXIT_CODE_FILE))
    fake = FakeTime([(1.0, lambda: write_file(path, b"")),
                     (UNREADABLE_GRACE / 2 + 1.0, lambda: write_file(path, b"9\n"))])
    assert wait_for_task(run, WaitOptions(timeout=0, poll=0.25), fake.clock, fake.sleep) == 9


@pytest.mark.parametrize("text, seconds", [
    ("0", 0), ("90", 90), ("0.5", 0.5), ("30s", 30), ("15m", 900), ("2h", 7200), ("1d", 86400),
    ("1h30m", 5400), ("1d2h3m4s", 93784), ("1.5h", 5400), (" 10M ", 600),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "x", "5x", "-5", "1h1h", "30m1h", "h", "1 h 2", "inf", "nan"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)
