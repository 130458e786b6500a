"""Processes: who is alive (pid + start time + boot id, so a reused pid or a reboot is not mistaken
for our supervisor), process trees, signals, and the two prctl settings the runner relies on.

- ``PR_SET_PDEATHSIG``: a task's init and the sidecars die with the supervisor that started them.
- ``PR_SET_CHILD_SUBREAPER``: orphans of a task (daemons it started) are re-parented to the task's
  init or the supervisor, never to the system's init, so they can be found and stopped.

The supervisor runs with umask 077 (its state is owner-only); the user's own umask, which ``submit``
passes on in ``$OSMO_RUN_USER_UMASK``, is the sidecar's (what it writes into the store and a task's
inputs is the user's data, as with ``osmo dataset``).
"""

from __future__ import annotations

import ctypes
import errno
import os
import signal
import time
from dataclasses import dataclass

USER_UMASK_ENV = "OSMO_RUN_USER_UMASK"
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36

_libc = None


def libc():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    libc().prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def set_child_subreaper() -> bool:
    return libc().prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def current_umask() -> int:
    """This process's umask (read from /proc, without changing it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def user_umask() -> int:
    """The submitting user's umask: ``$OSMO_RUN_USER_UMASK`` (octal) if set, else this process's."""
    try:
        return int(os.environ[USER_UMASK_ENV], 8) & 0o777
    except (KeyError, ValueError):
        return current_umask()


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            raw = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return raw[raw.rfind(")") + 2:].split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


@dataclass(frozen=True)
class ProcessIdentity:
    """A process as recorded in the state database: pid, start time and the boot it started in."""

    pid: int
    start: int
    boot: str

    @classmethod
    def of(cls, pid: int) -> "ProcessIdentity | None":
        ticks = start_ticks(pid)
        return None if ticks is None else cls(pid, ticks, boot_id())

    def alive(self) -> bool:
        """True if this very process still runs (not a zombie, not a reused pid, same boot)."""
        if self.boot and self.boot != boot_id():
            return False
        fields = _stat_fields(self.pid)
        if not fields or len(fields) < 20:
            return False
        return fields[0] not in ("Z", "X") and int(fields[19]) == self.start


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", encoding="ascii") as f:
                found.extend(int(p) for p in f.read().split())
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo.extend(children(p))
    return out


def signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return False


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def reap(pid: int) -> int | None:
    """Collect ``pid`` if it exited (no blocking); its wait status, else None."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if done else None


def exit_code(wait_status: int) -> int:
    """A wait status as a shell reports it: the exit code, or 128+N when killed by signal N."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.waitstatus_to_exitcode(wait_status)


def wait_gone(pids: list[int], timeout: float) -> list[int]:
    """Wait until none of ``pids`` runs (zombies count as gone); the ones still running."""
    deadline = time.monotonic() + timeout
    left = list(pids)
    while left:
        left = [p for p in left if _running(p)]
        if not left or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return left


def _running(pid: int) -> bool:
    fields = _stat_fields(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def is_running(pid: int) -> bool:
    return _running(pid)


def listens(pid: int) -> bool:
    """True if ``pid`` or one of its descendants has a listening TCP socket (looked up in the
    network namespace ``pid`` is in)."""
    inodes = set()
    for p in [pid, *descendants(pid)]:
        try:
            fds = os.listdir(f"/proc/{p}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{p}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    if not inodes:
        return False
    for table in ("tcp", "tcp6"):
        try:
            with open(f"/proc/{pid}/net/{table}", encoding="ascii") as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 9 and fields[3] == "0A" and fields[9] in inodes:
                        return True
        except OSError:
            continue
    return False


def errno_name(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, str(exc.errno))
