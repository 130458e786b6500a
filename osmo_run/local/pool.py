"""The local pool: this machine's capacity, what a group asks for, and gang admission.

A group is admitted only when the sum of its tasks' requests (cpu, memory, gpu) fits into what the
running groups of every workflow on this machine leave free; otherwise it stays SCHEDULING and its
queue timeout applies. Admissions are rows of the ``allocations`` table, taken in one write
transaction, so supervisors of different workflows share the machine; rows of dead supervisors are
dropped. Requests are for admission only: nothing limits what a running task uses.

Platform names are accepted and mapped to this machine (the task log says so), unless the pool
config lists the accepted ``platforms``. A group that asks for more than the whole pool has (three
CPUs on a two-CPU machine, a GPU where there is none) is mapped down to the pool and runs when the
pool is otherwise idle, again with a log line; a ``strict`` pool refuses it at submit instead.
"""

from __future__ import annotations

import os
import platform as host_platform
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from osmo_run.local import db
from osmo_run.local.procs import ProcessIdentity
from osmo_run.local.settings import Capacity, Settings
from osmo_run.spec import Group, Resources, Workflow


def _memory_total() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gpu_count() -> int:
    tool = shutil.which("nvidia-smi")
    if not tool:
        return 0
    try:
        out = subprocess.run([tool, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def detect_capacity() -> Capacity:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Capacity(float(cpus), _memory_total(), _gpu_count())


def pool_capacity(settings: Settings, detected: Capacity | None = None) -> Capacity:
    base = detected or detect_capacity()
    cap = settings.capacity
    return Capacity(float(cap.get("cpu", base.cpu)), int(cap.get("memory", base.memory)),
                    int(cap.get("gpu", base.gpu)))


def describe(cap: Capacity) -> str:
    gpus = f"{cap.gpu} GPU" + ("s" if cap.gpu != 1 else "") if cap.gpu else "no GPU"
    return f"{cap.cpu:g} CPU{'' if cap.cpu == 1 else 's'}, {cap.memory / 2**30:.1f} GiB memory, {gpus}"


def describe_request(res: Resources, want: Demand) -> str:
    """What a task asked for, as its log says it: only the resources its spec gives."""
    asked = [text for given, text in ((res.cpu, f"cpu {want.cpu:g}"),
                                      (res.memory, f"memory {want.memory / 2**30:.1f}".rstrip("0").rstrip(".")
                                       + " GiB"),
                                      (res.gpu, f"gpu {want.gpu}")) if given]
    return ", ".join(asked) if asked else "none asked for: nothing is reserved for it"


@dataclass(frozen=True)
class Demand:
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0

    def __add__(self, other: "Demand") -> "Demand":
        return Demand(self.cpu + other.cpu, self.memory + other.memory, self.gpu + other.gpu)

    def fits(self, free: "Demand") -> bool:
        return self.cpu <= free.cpu + 1e-9 and self.memory <= free.memory and self.gpu <= free.gpu


@dataclass
class GangPlan:
    """What a group asks for, what is admitted (mapped to the pool) and a log note per task."""

    requested: Demand
    demand: Demand
    notes: dict[str, list[str]] = field(default_factory=dict)


def task_request(workflow: Workflow, task) -> Demand:
    r = workflow.resources_for(task)
    return Demand(float(r.cpu or 0), int(r.memory or 0), int(r.gpu or 0))


def plan_gang(workflow: Workflow, group: Group, settings: Settings, cap: Capacity) -> GangPlan:
    total = Demand()
    notes: dict[str, list[str]] = {}
    machine = f"{host_platform.machine()}, {describe(cap)}"
    for task in group.tasks:
        want = task_request(workflow, task)
        total = total + want
        res = workflow.resources_for(task)
        lines = notes.setdefault(task.name, [])
        lines.append(f"resources: {describe_request(res, want)} (resource {task.resource!r})")
        asked_for = f"platform {res.platform}" if res.platform else "no platform asked for"
        lines.append(f"{asked_for} -> pool {settings.name!r}: this machine ({machine})")
        if want.gpu and not cap.gpu:
            lines.append(f"gpu: {want.gpu} requested, the pool has none: the task runs without a GPU")
        elif want.gpu:
            lines.append(f"gpu: {want.gpu} requested and counted; every GPU of this machine stays visible")
    mapped = Demand(min(total.cpu, cap.cpu), min(total.memory, cap.memory), min(total.gpu, cap.gpu))
    if mapped != total:
        over = [f"{k} {getattr(total, k):g} > {getattr(cap, k):g}" for k in ("cpu", "gpu")
                if getattr(total, k) > getattr(cap, k)]
        if total.memory > cap.memory:
            over.append(f"memory {total.memory / 2**30:.1f} GiB > {cap.memory / 2**30:.1f} GiB")
        note = (f"the group asks for more than the pool has ({', '.join(over)}): mapped to the whole "
                "pool, it runs when nothing else holds it")
        for task in group.tasks:
            notes[task.name].append(note)
    return GangPlan(total, mapped, notes)


def check_workflow(workflow: Workflow, settings: Settings, cap: Capacity) -> list[str]:
    """Problems that make the pool refuse a workflow at submit (platforms, strict capacity)."""
    problems = []
    for group in workflow.groups:
        for task in group.tasks:
            platform = workflow.resources_for(task).platform
            if platform and settings.platforms is not None and platform not in settings.platforms:
                allowed = ", ".join(settings.platforms) or "none"
                problems.append(f"task {task.name!r} asks for platform {platform!r}, which pool "
                                f"{settings.name!r} does not offer (platforms: {allowed})")
        if settings.strict:
            plan = plan_gang(workflow, group, settings, cap)
            if plan.demand != plan.requested:
                r = plan.requested
                problems.append(f"group {group.name!r} needs cpu {r.cpu:g}, memory {r.memory / 2**30:.1f} GiB, "
                                f"gpu {r.gpu} at once; strict pool {settings.name!r} has {describe(cap)}")
    return problems


class Ledger:
    """Gang admissions shared by every supervisor on this machine (the ``allocations`` table)."""

    def __init__(self, conn, me: ProcessIdentity) -> None:
        self.conn = conn
        self.me = me

    def try_admit(self, workflow_id: str, group: str, demand: Demand, cap: Capacity) -> bool:
        with db.transaction(self.conn) as c:
            used = Demand()
            for row in c.execute("SELECT * FROM allocations").fetchall():
                owner = ProcessIdentity(row["pid"], row["pid_start"], row["boot"])
                if row["workflow_id"] == workflow_id and row["group_name"] == group:
                    return True
                if not owner.alive():
                    c.execute("DELETE FROM allocations WHERE workflow_id = ? AND group_name = ?",
                              (row["workflow_id"], row["group_name"]))
                    continue
                used = used + Demand(row["cpu"], row["memory"], row["gpu"])
            free = Demand(cap.cpu - used.cpu, cap.memory - used.memory, cap.gpu - used.gpu)
            if not demand.fits(free):
                return False
            c.execute("INSERT INTO allocations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (workflow_id, group, demand.cpu, demand.memory, demand.gpu, self.me.pid,
                       self.me.start, self.me.boot, time.time()))
        return True

    def release(self, workflow_id: str, group: str | None = None) -> None:
        if group is None:
            self.conn.execute("DELETE FROM allocations WHERE workflow_id = ?", (workflow_id,))
        else:
            self.conn.execute("DELETE FROM allocations WHERE workflow_id = ? AND group_name = ?",
                              (workflow_id, group))
