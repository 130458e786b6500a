"""``osmo-sidecar exec -- CMD ARGS...``: run the task command and record how it ended.

The command inherits the sidecar's standard input, output and error (its lines are not prefixed) and
its process group. SIGTERM and SIGINT received by the wrapper are forwarded to the command; the
wrapper then keeps waiting for it (a runner that wants it gone sends SIGKILL after its grace period).
On Linux the command also gets SIGKILL if the wrapper itself is killed, so it never runs on unwatched.

When the command ends, its exit code is written to ``status/exit_code`` (decimal text, written to a
temporary name and renamed, so a reader never sees half of it): the code it exited with, or 128+N
when signal N killed it; 127 when the command does not exist and 126 when it cannot be executed.
The wrapper exits with the same code. As PID 1 of a container it also reaps orphaned processes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence

from osmo_run.contract import EXIT_CODE_FILE, RunDir

from sidecar.console import say

FORWARDED = (signal.SIGTERM, signal.SIGINT)
NOT_FOUND = 127
NOT_EXECUTABLE = 126
PR_SET_PDEATHSIG = 1


def write_exit_code(run: RunDir, code: int) -> None:
    path = run.status(EXIT_CODE_FILE)
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-exit-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(f"{code}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def exit_code_of(status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N after signal N."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _die_with_parent(parent: int):
    """A ``preexec_fn``: SIGKILL the child when the wrapper dies (Linux; elsewhere a no-op)."""
    libc_name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    libc = ctypes.CDLL(libc_name, use_errno=True) if libc_name else None

    def preexec() -> None:
        if libc is not None:
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            if os.getppid() != parent:  # the wrapper died before prctl took effect
                os._exit(NOT_EXECUTABLE)
    return preexec


def run_command(run: RunDir, argv: Sequence[str]) -> int:
    """Run ``argv`` to its end, record its exit code, and return it."""
    received: list[int] = []
    pending: list[int] = []  # arrived before the child existed
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame) -> None:
        received.append(signum)
        if child is None:
            pending.append(signum)
            return
        try:
            os.kill(child.pid, signum)
        except ProcessLookupError:
            pass

    previous = {s: signal.signal(s, forward) for s in FORWARDED}
    try:
        try:
            child = subprocess.Popen(list(argv), preexec_fn=_die_with_parent(os.getpid()))
        except FileNotFoundError:
            say(f"exec: {argv[0]}: command not found")
            code = NOT_FOUND
        except PermissionError:
            say(f"exec: {argv[0]}: permission denied")
            code = NOT_EXECUTABLE
        except OSError as exc:
            say(f"exec: {argv[0]}: cannot execute: {exc.strerror or exc}")
            code = NOT_EXECUTABLE
        else:
            while pending:  # arrived while the child was being started
                os.kill(child.pid, pending.pop(0))
            code = _reap_until(child.pid)
            child.returncode = code
        try:
            write_exit_code(run, code)
        except OSError as exc:
            say(f"exec: cannot write {run.status(EXIT_CODE_FILE)}: {exc.strerror or exc}")
        if received:
            names = ", ".join(sorted({signal.Signals(s).name for s in received}))
            say(f"exec: forwarded {names} to the task command")
        if code >= 128 and child is not None:
            try:
                name = signal.Signals(code - 128).name
                say(f"exec: the task command was killed by {name} (exit code {code})")
            except ValueError:
                pass
        return code
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _reap_until(pid: int) -> int:
    """Wait for ``pid``, reaping any other child (orphans re-parented to a PID 1 wrapper) on the way."""
    while True:
        try:
            reaped, status = os.wait()
        except ChildProcessError:  # someone else reaped it; should not happen
            return NOT_EXECUTABLE
        if reaped == pid:
            return exit_code_of(status)
