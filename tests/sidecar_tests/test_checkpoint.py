"""``checkpoint:`` in ``osmo-sidecar upload --wait``, and ``--status-message``: the upload container of a
Kubernetes pod, as real subprocesses on real run directories, a real local store and ``file://`` URLs.

- while the task runs, the checkpoint folder is copied every ``every`` seconds (only new or changed files),
  and once more when the task has ended, before the outputs are uploaded;
- a checkpoint URL that cannot be written is a line in the log, never a failed upload;
- ``--status-message PATH`` writes the phase's status as compact JSON (what the runner reads from a pod's
  termination message), within 4 KiB however many datasets there are.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

from osmo_run.contract import (EXIT_CODE_FILE, MESSAGE_LIMIT, UPLOAD_STATUS, CheckpointSpec, DataStatus, OutputSpec,
                               RunDir, task_output_dataset)

from helpers.waiting import wait_for
from sidecar_tests.test_sidecar import make_run, status, store, tree
from sidecar_tests.test_upload_wait import Waiting, osmo_sidecar

__all__ = ["store", "osmo_sidecar"]  # fixtures, used by name


def _with_checkpoints(run: RunDir, *checkpoints: CheckpointSpec) -> None:
    run.write_contract(replace(run.read_contract(), checkpoints=checkpoints))


def _end_task(run: RunDir, code: int = 0) -> None:
    os.makedirs(os.path.dirname(run.status(EXIT_CODE_FILE)), exist_ok=True)
    Path(run.status(EXIT_CODE_FILE)).write_text(f"{code}\n")


def test_checkpoints_are_copied_while_the_task_runs_and_once_at_the_end(tmp_path, store, osmo_sidecar):
    dataset = task_output_dataset("wf-1", "train")
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset=dataset)])
    outside = tmp_path / "ckpt-folder"  # a folder outside the run directory (an emptyDir on Kubernetes)
    copies, models = tmp_path / "copies", tmp_path / "models"
    _with_checkpoints(run, CheckpointSpec(str(outside), f"file://{copies}", 0.5),
                      CheckpointSpec("data/output/models", f"file://{models}", 0.5, regex=r"\.pt$"))
    outside.mkdir()
    (outside / "step-1.ckpt").write_text("one")
    waiting = Waiting(osmo_sidecar, run, "--poll", "0.1", "--status-message", str(tmp_path / "message"))
    wait_for(lambda: (copies / "step-1.ckpt").exists() or None, 20, "the first periodic copy")
    assert not os.path.exists(run.status(UPLOAD_STATUS))  # the task still runs: nothing uploaded yet
    (outside / "step-1.ckpt").write_text("one, rewritten")
    (outside / "sub").mkdir()
    (outside / "sub" / "step-2.ckpt").write_text("two")
    wait_for(lambda: (copies / "sub" / "step-2.ckpt").exists() or None, 20, "the second periodic copy")
    assert (copies / "step-1.ckpt").read_text() == "one, rewritten"  # changed files are copied again
    os.makedirs(run.output_dir + "/models")
    Path(run.output_dir, "models", "final.pt").write_text("weights")
    Path(run.output_dir, "models", "notes.txt").write_text("not matched by the regex")
    (outside / "last.ckpt").write_text("written just before the end")
    _end_task(run)
    result = waiting.finish()
    assert result.code == 0, result.err
    assert tree(copies) == {"step-1.ckpt": b"one, rewritten", "sub/step-2.ckpt": b"two",
                            "last.ckpt": b"written just before the end"}  # the final copy took the last file
    assert tree(models) == {"final.pt": b"weights"}
    assert f"checkpoint 0 (file://{copies}), final: 1 file copied" in result.err
    assert "checkpoint 1" in result.err and "1 output uploaded" in result.err
    message = json.loads((tmp_path / "message").read_text())
    assert message["code"] == 0 and message["datasets"][0]["dataset"] == dataset
    assert message == json.loads(json.dumps(status(run, UPLOAD_STATUS)))  # the same status, compact


def test_a_checkpoint_that_cannot_be_copied_never_fails_the_upload(tmp_path, store, osmo_sidecar):
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset=task_output_dataset("wf-1", "t"))])
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    _with_checkpoints(run, CheckpointSpec("data/output", f"file://{blocker}/below", 0.2))
    Path(run.output_dir).mkdir(parents=True, exist_ok=True)
    Path(run.output_dir, "x.txt").write_text("x")
    waiting = Waiting(osmo_sidecar, run, "--poll", "0.1")
    time.sleep(2.5)  # periodic copies: at least 1 s apart
    _end_task(run, 3)
    result = waiting.finish()
    assert result.code == 0, result.err
    assert "checkpoint 0" in result.err and "failed, tried again at the next one" in result.err
    assert "failed, tried again never (the task has ended)" in result.err
    assert status(run, UPLOAD_STATUS)["code"] == 0


def test_a_bad_checkpoint_in_the_contract_is_refused_before_anything_moves(tmp_path, store, osmo_sidecar):
    run = make_run(tmp_path, store)
    _with_checkpoints(run, CheckpointSpec("data/output", "file:///tmp/x", 10, regex="("))
    _end_task(run)
    result = osmo_sidecar("upload", "--run-dir", run.root, "--wait", "--status-message", str(tmp_path / "m"))
    assert result.code == 2 and "checkpoints[0]: regex '(' does not compile" in result.err
    assert DataStatus.from_message((tmp_path / "m").read_text()).code == 2012


def test_a_status_message_fits_a_termination_message_however_many_datasets():
    many = tuple({"input": n, "kind": "dataset", "dataset": f"dataset-with-a-long-name-{n:04d}", "version": n,
                  "ref": f"dataset-with-a-long-name-{n:04d}", "files": 10, "bytes": 1000} for n in range(400))
    for status_ in (DataStatus(0, "400 inputs downloaded", many[:20]), DataStatus(2010, "x" * 10000, many)):
        text = status_.to_message()
        assert len(text.encode()) <= MESSAGE_LIMIT
        back = DataStatus.from_message(text)
        assert back.code == status_.code and back.datasets[0]["dataset"] == "dataset-with-a-long-name-0000"
    assert DataStatus.from_message(DataStatus(0, "ok", many[:20]).to_message()).datasets == many[:20]  # all fit
    brief = json.loads(DataStatus(2010, "x" * 10000, many).to_message())
    assert brief["more"] == 400 - len(brief["datasets"]) and set(brief["datasets"][0]) == {
        "input", "kind", "dataset", "version"}
    assert DataStatus.from_message("Traceback (most recent call last):") is None  # a log's end, not a status


class _Flaky:
    """A checkpoint URL whose first ``failures`` uploads fail with ``error`` (a remote above the interface)."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures, self.error, self.sent = failures, error, []

    def __call__(self, url: str) -> "_Flaky":
        return self

    def upload(self, items, resume: bool) -> int:
        if self.failures:
            self.failures -= 1
            raise self.error
        self.sent.append(sorted(rel for rel, _ in items))
        return sum(os.path.getsize(path) for _, path in items)


def _ended_checkpoint(tmp_path, remote: _Flaky, attempts: int, pauses: list[float]):
    from sidecar.checkpoint import Checkpoints
    from sidecar.retry import RetryPolicy

    folder = tmp_path / "ckpt"
    folder.mkdir(parents=True)
    (folder / "final.pt").write_text("weights")
    run = RunDir(str(tmp_path / "run"))
    return Checkpoints(run, (CheckpointSpec(str(folder), "s3://bucket/ckpt", 1.0),),
                       policy=RetryPolicy(attempts=attempts, delay=2.0), remote=remote, sleep=pauses.append)


def test_the_final_copy_is_retried_on_a_transient_error_and_a_periodic_one_waits_for_the_next(tmp_path, capsys):
    remote, pauses = _Flaky(2, ConnectionError("connect timeout")), []
    checkpoints = _ended_checkpoint(tmp_path, remote, 3, pauses)
    checkpoints.items[0].copy(final=False)  # a periodic copy: not retried, the next one will do
    assert remote.sent == [] and pauses == []
    checkpoints.final()  # one more failure, then the copy
    assert remote.sent == [["final.pt"]] and pauses == [2.0]
    err = capsys.readouterr().err
    assert "failed, tried again at the next one: ConnectionError: connect timeout" in err
    assert "final: ConnectionError: connect timeout; retrying in 2 s (attempt 2 of 3)" in err
    assert "checkpoint 0 (s3://bucket/ckpt), final: 1 file copied, 7 bytes" in err


def test_the_final_copy_gives_up_after_its_attempts_and_never_retries_a_permanent_error(tmp_path, capsys):
    remote, pauses = _Flaky(5, ConnectionError("connect timeout")), []
    _ended_checkpoint(tmp_path, remote, 3, pauses).final()
    assert remote.sent == [] and pauses == [2.0, 4.0]
    assert "failed, tried again never (the task has ended): ConnectionError: connect timeout (gave up after 3 attempts)" in \
        capsys.readouterr().err
    denied, pauses = _Flaky(1, PermissionError("access denied")), []
    _ended_checkpoint(tmp_path / "b", denied, 3, pauses).final()
    assert denied.sent == [] and pauses == []  # permanent: one try
