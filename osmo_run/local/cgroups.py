"""cgroup limits for tasks that run as host processes (no container engine): cpu and memory.

``create`` makes one cgroup per attempt and controller (cgroup v1: the ``memory`` and ``cpu``
hierarchies), nested under the supervisor's own cgroup, so a task's limit is never looser than the
runner's::

    /sys/fs/cgroup/memory/<the supervisor's cgroup>/osmo.<pid>.<start>/<workflow>.<task>.a<N>/

- memory -> ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes`` (no swap on top, where the
  kernel accounts swap): a task that uses more is killed by the kernel's OOM killer and ends with
  137, as a pod over its memory limit is OOMKilled;
- cpu -> ``cpu.cfs_quota_us`` of a 100 ms ``cpu.cfs_period_us``: at most N cores' time.

The attempt moves the task's init (taskinit) into it before the command starts (``join``): the
command and everything it starts are inside; pages the init had before are charged where they were.
Where it cannot (not root, cgroup v2, a controller that is not mounted) the task runs without limits
and ``create`` says why, for the task log. ``remove`` kills what is left inside and removes the
folders; ``sweep`` removes what supervisors that died left (their ``osmo.<pid>.<start>`` folders).
"""

from __future__ import annotations

import os
import signal
import time

from osmo_run.local.limits import TaskLimits, size
from osmo_run.local.procs import ProcessIdentity

ROOT = "/sys/fs/cgroup"
PERIOD_US = 100_000
CONTROLLERS = ("memory", "cpu")
PREFIX = "osmo."


def _own_paths(proc_cgroup: str) -> dict[str, str]:
    """controller -> this process's cgroup path in that hierarchy (``/proc/self/cgroup``)."""
    found: dict[str, str] = {}
    with open(proc_cgroup, encoding="utf-8") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(","):
                if name:
                    found[name] = path
    return found


def _write(folder: str, name: str, value: str) -> None:
    with open(os.path.join(folder, name), "w", encoding="ascii") as f:
        f.write(value)


class TaskCgroup:
    """The cgroup folders of one attempt (one per controller)."""

    def __init__(self, folders: list[str]) -> None:
        self.folders = folders

    def join(self, pid: int) -> None:
        for folder in self.folders:
            _write(folder, "cgroup.procs", str(pid))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for folder in self.folders:
            try:
                with open(os.path.join(folder, "cgroup.procs"), encoding="ascii") as f:
                    found.update(int(line) for line in f if line.strip())
            except OSError:
                continue
        return found

    def remove(self, wait: float = 5.0) -> None:
        """Kill whatever is still inside (SIGKILL), then remove the folders (harmless when gone)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        deadline = time.monotonic() + wait
        for folder in self.folders:
            while True:
                try:
                    os.rmdir(folder)
                    break
                except FileNotFoundError:
                    break
                except OSError:  # EBUSY: a killed process is not gone yet
                    if time.monotonic() >= deadline:
                        break
                    time.sleep(0.05)


def owner_folder(owner: ProcessIdentity) -> str:
    return f"{PREFIX}{owner.pid}.{owner.start}"


def _not_enforced(why: str) -> list[str]:
    return [f"limits: not enforced for host processes: {why} (a container engine enforces them)"]


def create(limits: TaskLimits, owner: ProcessIdentity, name: str, root: str = ROOT,
           proc_cgroup: str = "/proc/self/cgroup") -> tuple[TaskCgroup | None, list[str]]:
    """The attempt's cgroup with ``limits`` set, and the task log's lines (None: nothing enforced)."""
    notes = []
    if limits.storage:
        notes.append(f"limits not enforced: storage {size(limits.storage)} (host processes get no storage limit)")
    wanted = [c for c, asked in (("memory", limits.memory), ("cpu", limits.cpu)) if asked]
    if not wanted:
        return None, notes
    if os.path.exists(os.path.join(root, "cgroup.controllers")):
        return None, _not_enforced("cgroup v2 is not supported for host processes yet") + notes
    try:
        own = _own_paths(proc_cgroup)
    except (OSError, ValueError) as exc:
        return None, _not_enforced(f"cannot read {proc_cgroup}: {exc}") + notes
    folders: list[str] = []
    try:
        for controller in wanted:
            base = os.path.join(root, controller)
            if controller not in own or not os.path.isdir(base):
                raise LookupError(f"the {controller} cgroup controller is not mounted at {base}")
            parent = os.path.join(base + own[controller], owner_folder(owner))
            os.makedirs(parent, exist_ok=True)
            folder = os.path.join(parent, name)
            os.mkdir(folder)
            folders.append(folder)
            if controller == "memory":
                _write(folder, "memory.limit_in_bytes", str(limits.memory))
                if os.path.exists(os.path.join(folder, "memory.memsw.limit_in_bytes")):
                    _write(folder, "memory.memsw.limit_in_bytes", str(limits.memory))
            else:
                _write(folder, "cpu.cfs_period_us", str(PERIOD_US))
                _write(folder, "cpu.cfs_quota_us", str(max(1000, round(limits.cpu * PERIOD_US))))
    except (OSError, LookupError) as exc:
        TaskCgroup(folders).remove()
        why = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else str(exc)
        return None, _not_enforced(f"no cgroup could be made: {why}") + notes
    enforced = []
    if limits.cpu:
        enforced.append(f"cpu {limits.cpu:g} (cgroup cpu.cfs_quota_us)")
    if limits.memory:
        enforced.append(f"memory {size(limits.memory)} (cgroup memory, no swap: more ends the task with 137)")
    return TaskCgroup(folders), [f"limits: {', '.join(enforced)}"] + notes


def sweep(me: ProcessIdentity | None = None, root: str = ROOT, proc_cgroup: str = "/proc/self/cgroup") -> list[str]:
    """Remove the attempt cgroups of supervisors that no longer run (and, with ``me``, this one's)."""
    try:
        own = _own_paths(proc_cgroup)
    except (OSError, ValueError):
        return []
    removed = []
    for controller in CONTROLLERS:
        if controller not in own:
            continue
        base = os.path.join(root, controller) + own[controller]
        try:
            entries = [e for e in os.listdir(base) if e.startswith(PREFIX)]
        except OSError:
            continue
        for entry in entries:
            pid, _, start = entry[len(PREFIX):].partition(".")
            try:
                who = ProcessIdentity(int(pid), int(start), "")
            except ValueError:
                continue
            if entry != (owner_folder(me) if me else None) and who.alive():
                continue  # its supervisor still runs
            parent = os.path.join(base, entry)
            try:
                children = [os.path.join(parent, c) for c in os.listdir(parent)
                            if os.path.isdir(os.path.join(parent, c))]
            except OSError:
                continue
            TaskCgroup(children).remove()
            TaskCgroup([parent]).remove()
            if not os.path.exists(parent):
                removed.append(parent)
    return removed
