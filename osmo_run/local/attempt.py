"""One task attempt as a non-blocking state machine the supervisor polls:

    DOWNLOADING  sidecar ``download`` fills data/input/<N>/ (skipped when the task has no inputs)
    DOWNLOADED   inputs in place; waiting for the group's barrier
    LAUNCHED     taskinit started, namespaces and ``files:`` being set up (``launch``/``go``)
    RUNNING      the command runs
    UPLOADING    sidecar ``upload`` stores data/output/ (also after a non-zero exit)
    DONE         ``outcome`` says how it ended

An input failure ends the attempt with 2010 before its command starts; an upload failure gives 2012
even when the command succeeded; the attempt's code is the highest of its codes. ``stop(kind)``
ends it early: "cancel" and "restart" skip the upload, "lead", "failed" and "timeout" still upload
what the command wrote.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from osmo_run.contract import (DOWNLOAD_STATUS, EXIT_CODE_FILE, INPUT_FAILED, OUTPUT_FAILED,
                               UPLOAD_STATUS)
from osmo_run.local import logs, procs
from osmo_run.local.prepare import AttemptPlan
from osmo_run.local.statuses import START_FAILED, highest_code

NO_UPLOAD = ("cancel", "restart")


@dataclass
class Outcome:
    code: int | None = None  # the attempt's exit code (highest of command and data codes)
    command_code: int | None = None
    reason: str = ""
    stopped: str | None = None  # why the runner stopped it, if it did
    start_failed: bool = False
    datasets_read: list[dict[str, Any]] = field(default_factory=list)
    datasets_written: list[dict[str, Any]] = field(default_factory=list)


class Attempt:
    def __init__(self, *, task: str, number: int, index: int, plan: AttemptPlan, log_path: str,
                 sidecar: list[str], grace: float, record) -> None:
        self.task, self.number, self.index, self.plan = task, number, index, plan
        self.log_path, self.sidecar, self.grace = log_path, sidecar, grace
        self.record = record  # record(**attempt columns): persists this attempt's row
        self.phase = "NEW"
        self.outcome = Outcome()
        self.proc: subprocess.Popen | None = None
        self.stop_kind: str | None = None
        self.kill_at: float | None = None
        self._ready = self._go = None

    @property
    def done(self) -> bool:
        return self.phase == "DONE"

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc and self.proc.returncode is None else []

    # -- phases --------------------------------------------------------------------------------
    def begin(self) -> None:
        self.record(status="RUNNING", started_at=time.time(), run_dir=self.plan.run.root)
        if self.plan.has_inputs:
            self._sidecar("download")
            self.phase = "DOWNLOADING"
        else:
            self.phase = "DOWNLOADED"

    def _sidecar(self, step: str) -> None:
        fd = logs.open_for_append(self.log_path)
        try:
            self.proc = subprocess.Popen([*self.sidecar, step, "--run-dir", self.plan.run.root],
                                         stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                         preexec_fn=lambda: procs.set_parent_death_signal(signal.SIGTERM))
        finally:
            os.close(fd)

    def launch(self) -> int:
        """Start taskinit (it sets up the task's view, then waits for ``go``); returns its pid."""
        ready_r, ready_w = os.pipe()
        go_r, go_w = os.pipe()
        config = dict(self.plan.init, ready_fd=ready_w, go_fd=go_r)
        path = os.path.join(self.plan.run.root, "runner", "init.json")
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w", encoding="utf-8") as f:
            json.dump(config, f)  # 0600: it holds the task's environment, credentials included
        fd = logs.open_for_append(self.log_path)
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "osmo_run.local.taskinit", path],
                                         stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True,
                                         pass_fds=(ready_w, go_r))
        finally:
            for x in (fd, ready_w, go_r):
                os.close(x)
        self._ready, self._go = ready_r, go_w
        self.phase = "LAUNCHED"
        return self.proc.pid

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Block until taskinit reports its view ready; '' on success, else the error."""
        deadline = time.monotonic() + timeout
        message = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self._ready], [], [], 0.1)
            if readable:
                chunk = os.read(self._ready, 4096)
                message += chunk
                if not chunk or message[:1] == b"R":
                    break
        os.close(self._ready)
        if message[:1] == b"R":
            return ""
        if message[:1] == b"E":
            return message[1:].decode(errors="replace")
        if self.proc.poll() is not None:
            return f"the task's init exited with {self.proc.returncode} before it was ready (see the task log)"
        return f"the task's view was not ready within {timeout:g} s"

    def go(self) -> None:
        try:
            os.write(self._go, b"G")
        except OSError:
            pass  # taskinit is gone; poll() collects it
        os.close(self._go)
        self._go = None
        self.phase = "RUNNING"
        self.record(command_started_at=time.time())

    def _abort_launch(self) -> None:
        if self._go is not None:
            os.close(self._go)  # taskinit reads EOF and exits without running the command
            self._go = None
        if self.proc:
            procs.signal_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def fail_start(self, reason: str) -> None:
        """The task's view could not be set up (or the group's network): 3003, no command ran."""
        self._abort_launch()
        logs.note(self.log_path, f"the task could not start: {reason}")
        self.outcome.code, self.outcome.start_failed = START_FAILED, True
        self.outcome.reason = f"start error: {reason}"
        self._finish()

    def poll(self, now: float) -> None:
        if self.phase in ("DOWNLOADING", "UPLOADING", "RUNNING") and self.kill_at and now >= self.kill_at:
            self._kill(signal.SIGKILL)
            self.kill_at = None
        if self.proc is None or self.proc.poll() is None:
            return
        rc = self.proc.returncode
        if self.phase == "DOWNLOADING":
            self.proc = None
            if self.stop_kind:
                self._finish()
                return
            status = self._data_status(DOWNLOAD_STATUS, rc, INPUT_FAILED, "download")
            if status is None:
                self.phase = "DOWNLOADED"
        elif self.phase == "RUNNING":
            self.proc = None
            self.outcome.command_code = rc
            self.record(command_exit_code=rc, command_ended_at=time.time())
            with open(self.plan.run.status(EXIT_CODE_FILE), "w", encoding="ascii") as f:
                f.write(f"{rc}\n")
            if self.stop_kind in NO_UPLOAD:
                self._finish()
            else:
                self._sidecar("upload")
                self.phase = "UPLOADING"
        elif self.phase == "UPLOADING":
            self.proc = None
            self._data_status(UPLOAD_STATUS, rc, OUTPUT_FAILED, "upload")
            self._finish()

    def _data_status(self, name: str, rc: int, failed: int, step: str) -> int | None:
        """Read a sidecar status file; record datasets; returns the failing code or None."""
        status = self.plan.run.read_status(name)
        key = "datasets_read" if step == "download" else "datasets_written"
        if status is not None:
            setattr(self.outcome, key, [dict(d) for d in status.datasets])
            self.record(**{key: getattr(self.outcome, key)})
        if status is not None and status.code == 0 and rc == 0:
            return None
        if status is not None and status.code != 0:
            code, why = status.code, status.message or f"{step} failed"
        else:
            code = failed
            why = (f"the sidecar {step} exited {rc}" + ("" if status else f" without writing status/{name}")
                   + " (see the task log)")
        self.outcome.code = highest_code([self.outcome.code, code, failed])
        self.outcome.reason = f"{step} failed ({code}): {why}"
        if step == "download":
            self._finish()
        return code

    def _finish(self) -> None:
        out = self.outcome
        out.code = highest_code([out.code, out.command_code])
        if not out.reason and out.command_code is not None:
            out.reason = f"exit code {out.command_code}"
        self.phase = "DONE"

    # -- stopping ------------------------------------------------------------------------------
    def stop(self, kind: str, now: float) -> None:
        """End the attempt early (see the module docstring); harmless when it already ended."""
        if self.done or self.stop_kind in NO_UPLOAD:
            return
        first = self.stop_kind is None
        self.stop_kind = kind
        self.outcome.stopped = kind
        if self.phase in ("NEW", "DOWNLOADED"):
            self._finish()
        elif self.phase == "LAUNCHED":
            self._abort_launch()
            self._finish()
        elif self.phase == "DOWNLOADING" or (self.phase == "UPLOADING" and kind in NO_UPLOAD):
            self._kill(signal.SIGTERM)
            self.kill_at = now + self.grace
        elif self.phase == "RUNNING" and first:
            self._kill(signal.SIGTERM)  # taskinit ends the task: SIGTERM, SIGKILL after the grace period
            self.kill_at = now + self.grace + 5.0

    def _kill(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.phase == "RUNNING":
            procs.signal_pid(self.proc.pid, sig)
        else:
            procs.signal_group(self.proc.pid, sig)  # a sidecar and whatever it started
