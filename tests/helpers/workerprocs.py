"""Finding transfer worker processes (osmo_store/transfer/workerprocs.py) from /proc, for the tests
that check none outlives its transfer."""

from __future__ import annotations

import os

UPLOAD = "osmo_store.transfer.upload_worker"
DOWNLOAD = "osmo_store.transfer.download_worker"


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, then the parent's pid)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Running (a zombie no one has reaped yet counts as gone)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def workers(module: str) -> list[tuple[int, int]]:
    """``(pid, parent pid)`` of every live process running ``python -m module``."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if module.encode() not in f.read():
                    continue
        except OSError:
            continue
        fields = _stat(int(name))
        if fields is not None and fields[0] != "Z":
            found.append((int(name), int(fields[1])))
    return found


def workers_of(module: str, parent: int) -> list[int]:
    return [pid for pid, ppid in workers(module) if ppid == parent]


def workers_with_env(module: str, entry: str) -> list[int]:
    """Workers whose environment holds ``entry`` (``NAME=value``): a test's own, orphans included."""
    found = []
    for pid, _ in workers(module):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if entry.encode() in f.read().split(b"\0"):
                    found.append(pid)
        except OSError:
            continue
    return found
