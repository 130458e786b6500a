"""Starting a task's launcher (``taskinit`` or ``containerinit``) and its two-step start: the view is set
up, the launcher says "ready" on one pipe, and the command starts when "go" is written on the other.

``memory_file`` holds a config (the task's environment, credentials included) in an anonymous in-memory
file, never on disk. ``start`` starts the launcher of an ``AttemptPlan``; ``Launched.wait_ready`` and
``Launched.go`` are the two steps. Used by the attempt (``attempt.py``) and by ``exec --debug``'s copy of
an ended task (``debug.py``).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass

from osmo_run.local.prepare import AttemptPlan

TASK_UMASK = 0o022


def memory_file(name: str, data: bytes) -> int:
    """An anonymous in-memory file holding ``data``, at offset 0 (close-on-exec)."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


@dataclass
class Launched:
    proc: subprocess.Popen
    ready_fd: int | None
    go_fd: int | None

    def wait_ready(self, timeout: float = 60.0) -> str:
        """Block until the launcher reports the task's view ready; '' on success, else the error."""
        deadline = time.monotonic() + timeout
        message = b""
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.ready_fd], [], [], 0.1)
            if readable:
                chunk = os.read(self.ready_fd, 4096)
                message += chunk
                if not chunk or message[:1] == b"R":
                    break
        os.close(self.ready_fd)
        self.ready_fd = None
        if message[:1] == b"R":
            return ""
        if message[:1] == b"E":
            return message[1:].decode(errors="replace")
        if self.proc.poll() is not None:
            return f"the task's init exited with {self.proc.returncode} before it was ready (see the task log)"
        return f"the task's view was not ready within {timeout:g} s"

    def go(self) -> None:
        """Start the command (a launcher already gone is collected by its caller)."""
        try:
            os.write(self.go_fd, b"G")
        except OSError:
            pass
        self.abort()

    def abort(self) -> None:
        """Close the go pipe: a launcher that did not get "go" exits without running the command."""
        if self.go_fd is not None:
            os.close(self.go_fd)
            self.go_fd = None


def start(plan: AttemptPlan, output_fd: int, init: dict | None = None) -> Launched:
    """Start the launcher of ``plan`` (its config ``init``, default the plan's), its output on
    ``output_fd``, in a session of its own."""
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    config = dict(plan.init if init is None else init, ready_fd=ready_w, go_fd=go_r)
    config_fd = memory_file("osmo-taskinit", json.dumps(config).encode("utf-8"))
    try:
        proc = subprocess.Popen([sys.executable, "-m", plan.launcher, "/dev/stdin"], stdin=config_fd,
                                stdout=output_fd, stderr=output_fd, start_new_session=True,
                                pass_fds=(ready_w, go_r), umask=TASK_UMASK)
    except OSError:
        for fd in (ready_r, go_w):
            os.close(fd)
        raise
    finally:
        for fd in (ready_w, go_r, config_fd):
            os.close(fd)
    return Launched(proc, ready_r, go_w)
