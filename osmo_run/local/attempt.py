"""One task attempt as a non-blocking state machine the supervisor polls:

    PULLING      with a container engine: the image is looked for, and pulled if missing
                 (``containerinit --image``); one that cannot be had ends the attempt with 3003
    DOWNLOADING  sidecar ``download`` fills data/input/<N>/ (skipped when the task has no inputs)
    DOWNLOADED   inputs in place; waiting for the group's barrier
    LAUNCHED     taskinit (or containerinit) started, the view or container and ``files:`` being set
                 up (``launch``/``go``)
    RUNNING      the command runs
    UPLOADING    sidecar ``upload`` stores data/output/ (also after a non-zero exit)
    DONE         ``outcome`` says how it ended

An input failure ends the attempt with 2010 before its command starts; an upload failure gives 2012
even when the command succeeded; the attempt's code is the highest of its codes. ``stop(kind)``
ends it early: "cancel" and "restart" skip the upload, "lead", "failed" and "timeout" still upload
what the command wrote.

taskinit reads its config (the task's environment, credentials included) from an anonymous
in-memory file on its stdin: it is never written to disk. A task with credentials writes its output
through the masking relay (``logmask.py``) into its log; its credential files on the host's disk
(plain mode) are removed when the command ends. taskinit and the command run with umask 022, as in a
container (the runner's own files are owner-only: the supervisor's umask is 077).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from osmo_run.contract import (DOWNLOAD_STATUS, EXIT_CODE_FILE, INPUT_FAILED, OUTPUT_FAILED,
                               UPLOAD_STATUS)
from osmo_run.local import access, cgroups, logs, procs
from osmo_run.local.launcher import Launched, memory_file, start
from osmo_run.local.engine_cli import EngineCli
from osmo_run.local.prepare import AttemptPlan
from osmo_run.local.statuses import START_FAILED, highest_code

NO_UPLOAD = ("cancel", "restart")
RELAY_WAIT = 5.0  # seconds the relay may take to write the last output after the command ended
STOP_MARGIN = 5.0  # seconds beyond the grace period before a task's init is killed
ENGINE_STOP_MARGIN = 30.0  # ... when it first asks a container engine to stop the container
ABORT_WAIT = 30.0  # seconds containerinit may take to remove a container that never started


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
        self.launched: Launched | None = None  # taskinit's pipes (launcher.py)
        self.relay: subprocess.Popen | None = None  # masks the command's output (tasks with credentials)
        self.relay_deadline: float | None = None
        self.cgroup: cgroups.TaskCgroup | None = None  # host processes: the task's cpu and memory limits

    @property
    def done(self) -> bool:
        return self.phase == "DONE"

    @property
    def pids(self) -> list[int]:
        found = [self.proc.pid] if self.proc and self.proc.returncode is None else []
        if self.relay is not None and self.relay.poll() is None:
            found.append(self.relay.pid)
        return found

    # -- phases --------------------------------------------------------------------------------
    def begin(self) -> None:
        self.record(status="RUNNING", started_at=time.time(), run_dir=self.plan.run.root)
        if self.plan.image is not None:
            config_fd = memory_file("osmo-image", json.dumps(self.plan.image).encode("utf-8"))
            try:
                self._helper([sys.executable, "-m", self.plan.launcher, "--image", "/dev/stdin"], stdin=config_fd)
            finally:
                os.close(config_fd)
            self.phase = "PULLING"
        else:
            self._download()

    def _download(self) -> None:
        if self.plan.has_inputs:
            self._sidecar("download")
            self.phase = "DOWNLOADING"
        else:
            self.phase = "DOWNLOADED"

    def _sidecar(self, step: str) -> None:
        self._helper([*self.sidecar, step, "--run-dir", self.plan.run.root], umask=procs.user_umask(),
                     preexec_fn=lambda: procs.set_parent_death_signal(signal.SIGTERM))

    def _helper(self, argv: list[str], stdin: int = subprocess.DEVNULL, **options) -> None:
        """Start a step of the runner's own (the sidecar, the image step), its output in the task log."""
        fd = logs.open_for_append(self.log_path)
        try:
            self.proc = subprocess.Popen(argv, stdin=stdin, stdout=fd, stderr=fd, start_new_session=True, **options)
        finally:
            os.close(fd)

    def launch(self) -> int:
        """Start taskinit (it sets up the task's view, then waits for ``go``); returns its pid."""
        self._make_cgroup()
        fd = self._output()
        try:
            self.launched = start(self.plan, fd)
        finally:
            os.close(fd)
        self.proc = self.launched.proc
        self.phase = "LAUNCHED"
        try:
            access.write_record(self.plan.run.root, self.proc.pid, self.plan.init, container=self.plan.image is not None)
        except OSError as exc:
            logs.note(self.log_path, f"exec and port-forward will not reach this task: {exc}")
        if self.cgroup is not None:
            try:
                self.cgroup.join(self.proc.pid)  # before "go": the command and all it starts are inside
            except OSError as exc:
                logs.note(self.log_path, f"limits: not enforced: the task could not join its cgroup: {exc}")
                self._end_cgroup()
        return self.proc.pid

    def _make_cgroup(self) -> None:
        """Host processes: the cgroup that limits the task's cpu and memory, and the log's lines about it."""
        if self.plan.limits is None or self.plan.image is not None:
            return
        owner = procs.ProcessIdentity.of(os.getpid())
        name = f"{self.plan.contract.workflow_id}.{self.task}.a{self.number}"
        self.cgroup, notes = cgroups.create(self.plan.limits, owner, name)
        if notes:
            logs.note(self.log_path, "\n".join(notes))

    def _end_cgroup(self) -> None:
        if self.cgroup is not None:
            self.cgroup.remove()
            self.cgroup = None

    def _output(self) -> int:
        """Where the command's stdout and stderr go: the task log, or, when the task has values
        to mask, a pipe into the masking relay (started here) that appends to the log."""
        if not self.plan.secrets:
            return logs.open_for_append(self.log_path)
        read_end, write_end = os.pipe()
        secrets_fd = memory_file("osmo-secrets", json.dumps(list(self.plan.secrets)).encode("utf-8"))
        log = logs.open_for_append(self.log_path)
        try:
            self.relay = subprocess.Popen([sys.executable, "-m", "osmo_run.local.logmask", "--secrets-fd",
                                           str(secrets_fd)], stdin=read_end, stdout=log, stderr=log,
                                          pass_fds=(secrets_fd,), start_new_session=True)
        finally:
            for x in (read_end, log, secrets_fd):
                os.close(x)
        return write_end

    def _relay_done(self, now: float) -> bool:
        """True once the relay wrote everything (it ends when the last writer is gone), or it had
        ``RELAY_WAIT`` seconds (a process the command left behind holds the pipe: it is killed)."""
        if self.relay is None or self.relay.poll() is not None:
            return True
        if self.relay_deadline is None:
            self.relay_deadline = now + RELAY_WAIT
        if now < self.relay_deadline:
            return False
        self.relay.kill()
        self.relay.wait()
        return True

    def _remove_secret_files(self) -> None:
        for path in self.plan.secret_files:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Block until taskinit reports its view ready; '' on success, else the error."""
        return self.launched.wait_ready(timeout)

    def go(self) -> None:
        self.launched.go()  # taskinit gone: poll() collects it
        self.phase = "RUNNING"
        self.record(command_started_at=time.time())

    def _abort_launch(self) -> None:
        if self.launched is not None:
            self.launched.abort()  # taskinit reads EOF and exits without running the command
        if self.proc:
            if self.plan.image is not None:  # containerinit removes the container it created first
                try:
                    self.proc.wait(ABORT_WAIT)
                except subprocess.TimeoutExpired:
                    self._remove_container()
            procs.signal_pid(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def _remove_container(self) -> None:
        """containerinit could not end its container: remove it from here (SIGKILL, no grace)."""
        engine, name = self.plan.init["engine"], self.plan.init["container"]["name"]
        argv = EngineCli(engine["kind"], engine["path"]).remove(name)
        try:
            subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            logs.note(self.log_path, f"the container {name} could not be removed: {exc}")

    def _command_pid(self) -> int | None:
        """The pid of the command's first process: taskinit's child on the host; in a container the
        one in the pid file the engine writes once the container runs (None before, or without one)."""
        if self.proc is None:
            return None
        if self.plan.image is None:
            return self.proc.pid
        pidfile = self.plan.init["container"].get("pidfile")
        try:
            with open(pidfile, encoding="ascii") as f:
                return int(f.read().strip())
        except (TypeError, OSError, ValueError):
            return None

    def command_started(self) -> bool:
        """True once the command runs: at ``go`` on the host; in a container once the engine says
        which process it is (an engine that writes no pid file: at ``go`` too). The lead's head start
        counts from here, not from ``go``: a loaded engine takes seconds to start a container."""
        if self.phase != "RUNNING":
            return False
        if self.plan.image is None or not self.plan.init["container"].get("pidfile"):
            return True
        return self._command_pid() is not None

    def listens(self) -> bool:
        """True once the command listens on a TCP port (an engine without a pid file never says so,
        and the lead's head start runs out)."""
        pid = self._command_pid()
        return pid is not None and procs.listens(pid)

    def fail_start(self, reason: str) -> None:
        """The task's view could not be set up (or the group's network): 3003, no command ran."""
        self._abort_launch()
        logs.note(self.log_path, f"the task could not start: {reason}")
        self.outcome.code, self.outcome.start_failed = START_FAILED, True
        self.outcome.reason = f"start error: {reason}"
        self._finish()

    def poll(self, now: float) -> None:
        if self.phase in ("PULLING", "DOWNLOADING", "UPLOADING", "RUNNING") and self.kill_at and now >= self.kill_at:
            self._kill(signal.SIGKILL)
            self.kill_at = None
        if self.proc is None or self.proc.poll() is None:
            return
        rc = self.proc.returncode
        if self.phase == "PULLING":
            self.proc = None
            if self.stop_kind:
                self._finish()
            elif rc == 0:
                self._download()
            else:
                self.fail_start(self._image_error(rc))
        elif self.phase == "DOWNLOADING":
            self.proc = None
            if self.stop_kind:
                self._finish()
                return
            status = self._data_status(DOWNLOAD_STATUS, rc, INPUT_FAILED, "download")
            if status is None:
                self.phase = "DOWNLOADED"
        elif self.phase == "RUNNING":
            if not self._relay_done(now):
                return  # the command's last output is still being masked into the log
            self._remove_secret_files()
            self._end_cgroup()
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

    def _image_error(self, rc: int) -> str:
        try:
            with open(self.plan.image["error_file"], encoding="utf-8") as f:
                return f.read().strip() or f"the image step exited {rc}"
        except OSError:
            return f"the image step exited {rc} (see the task log)"

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
        self._remove_secret_files()
        self._end_cgroup()
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
        if self.phase != "UPLOADING":  # a command that already ended on its own was not stopped
            self.outcome.stopped = kind
        if self.phase in ("NEW", "DOWNLOADED"):
            self._finish()
        elif self.phase == "LAUNCHED":
            self._abort_launch()
            self._finish()
        elif self.phase in ("PULLING", "DOWNLOADING") or (self.phase == "UPLOADING" and kind in NO_UPLOAD):
            self._kill(signal.SIGTERM)
            self.kill_at = now + self.grace
        elif self.phase == "RUNNING" and first:
            self._kill(signal.SIGTERM)  # its init ends the task: SIGTERM, SIGKILL after the grace period
            margin = ENGINE_STOP_MARGIN if self.plan.image is not None else STOP_MARGIN
            self.kill_at = now + self.grace + margin

    def _kill(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.phase == "RUNNING":
            procs.signal_pid(self.proc.pid, sig)
            if sig == signal.SIGKILL and self.plan.image is not None:
                self._remove_container()  # containerinit cannot any more
        else:
            procs.signal_group(self.proc.pid, sig)  # a sidecar (or the image step) and whatever it started
