"""The local pool: this machine's capacity, what a group asks for, and gang admission.

A group is admitted only when the sum of its tasks' requests (cpu, memory, gpu) fits into what the
running groups of every workflow on this machine leave free; otherwise it stays SCHEDULING and its
queue timeout applies. Admissions are rows of the ``allocations`` table, taken in one write
transaction, so supervisors of different workflows share the machine; rows of dead supervisors are
dropped. GPUs are handed out one by one at admission (``gpu_assignments``, gpus.py): two groups never
get the same GPU, and a platform the pool config maps to a GPU model gets GPUs of that model. A group
that does not fit gets the reason (``Admission.why``: what it needs, what is free, who holds the rest).

Platform names are accepted and mapped to this machine (the task log says so), unless the pool
config lists the accepted ``platforms``. A group that asks for more than the whole pool has (three
CPUs on a two-CPU machine, a GPU where there is none) is mapped down to the pool and runs when the
pool is otherwise idle, again with a log line; a ``strict`` pool refuses it at submit instead.
"""

from __future__ import annotations

import os
import platform as host_platform
import time
from dataclasses import dataclass, field

from osmo_run.local import db
from osmo_run.local.gpus import Gpu, GpuNeed, detect_gpus, model_matches, pick
from osmo_run.local.holdings import read_holdings, waiting_reason
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


def detect_capacity(gpu_command: str | None = None) -> Capacity:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Capacity(float(cpus), _memory_total(), len(detect_gpus(gpu_command)))


def pool_gpus(settings: Settings) -> list[Gpu]:
    """The GPUs the pool hands out: this machine's, the first ``capacity.gpu`` of them if that is set."""
    found = detect_gpus(settings.gpu_command)
    return found[:int(settings.capacity["gpu"])] if "gpu" in settings.capacity else found


def pool_capacity(settings: Settings, detected: Capacity | None = None) -> Capacity:
    base = detected or detect_capacity(settings.gpu_command)
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
    gpu_needs: list[GpuNeed] = field(default_factory=list)  # per task, mapped to the pool
    gpus: dict[str, tuple[Gpu, ...]] | None = None  # task -> its GPUs, once admitted (None: not assigned)


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
            model = settings.platform_models.get(res.platform or "")
            lines.append(f"gpu: {want.gpu} requested" + (f", of model {model} (platform {res.platform})" if model
                                                        else "") + ": GPUs of its own, given at admission")
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
    return GangPlan(total, mapped, notes, _gpu_needs(workflow, group, settings, mapped.gpu))


def _gpu_needs(workflow: Workflow, group: Group, settings: Settings, allowed: int) -> list[GpuNeed]:
    """Each task's GPU request (with its platform's model), cut down in task order to ``allowed`` in all."""
    needs = []
    for task in group.tasks:
        res = workflow.resources_for(task)
        count = min(int(res.gpu or 0), allowed)
        allowed -= count
        needs.append(GpuNeed(task.name, count, settings.platform_models.get(res.platform or "")))
    return needs


def check_workflow(workflow: Workflow, settings: Settings, cap: Capacity, gpus: list[Gpu] | None = None) -> list[str]:
    """Problems that make the pool refuse a workflow at submit (platforms, strict capacity, a GPU
    model the pool's ``gpus`` do not have enough of)."""
    problems = []
    for group in workflow.groups:
        if gpus:
            for need in plan_gang(workflow, group, settings, cap).gpu_needs:
                have = [g for g in gpus if model_matches(need.model, g)]
                if need.model and need.count > len(have):
                    problems.append(f"task {need.task!r} needs {need.describe()}; pool {settings.name!r} has "
                                    f"{len(have)} (GPUs: {', '.join(g.model for g in gpus)})")
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


@dataclass(frozen=True)
class Admission:
    """A ledger's answer: admitted (with each task's GPUs), or not, and why."""

    admitted: bool
    gpus: dict[str, tuple[Gpu, ...]] = field(default_factory=dict)
    why: str = ""


class Ledger:
    """Gang admissions shared by every supervisor on this machine (the ``allocations`` and
    ``gpu_assignments`` tables, ``holdings``); ``gpus``: the pool's GPUs (none: GPUs are only counted)."""

    def __init__(self, conn, me: ProcessIdentity, gpus: list[Gpu] | None = None) -> None:
        self.conn = conn
        self.me = me
        self.gpus = list(gpus or [])

    def try_admit(self, workflow_id: str, group: str, plan: GangPlan, cap: Capacity) -> Admission:
        demand = plan.demand
        with db.transaction(self.conn) as c:
            holdings = read_holdings(c, prune=True)
            if any(h.workflow_id == workflow_id and h.group == group for h in holdings):
                return Admission(True, self._held(c, workflow_id, group))
            used = Demand()
            for h in holdings:
                used = used + Demand(h.cpu, h.memory, h.gpu)
            free = Demand(cap.cpu - used.cpu, cap.memory - used.memory, cap.gpu - used.gpu)
            taken = {index for h in holdings for index in h.gpus}
            chosen = pick(plan.gpu_needs, [g for g in self.gpus if g.index not in taken]) if self.gpus else {}
            if not demand.fits(free) or chosen is None:
                why = waiting_reason(cpu=demand.cpu, memory=demand.memory, needs=plan.gpu_needs,
                                     counted_gpus=cap.gpu, capacity=cap, gpus=self.gpus, holdings=holdings)
                return Admission(False, why=why)
            now = time.time()
            c.execute("INSERT INTO allocations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (workflow_id, group, demand.cpu, demand.memory, demand.gpu, self.me.pid,
                       self.me.start, self.me.boot, now))
            for task, gpus in chosen.items():
                for gpu in gpus:
                    c.execute("INSERT INTO gpu_assignments VALUES (?, ?, ?, ?, ?, ?)",
                              (gpu.index, gpu.uuid, workflow_id, group, task, now))
        return Admission(True, chosen)

    def _held(self, c, workflow_id: str, group: str) -> dict[str, tuple[Gpu, ...]]:
        by_index = {g.index: g for g in self.gpus}
        held: dict[str, tuple[Gpu, ...]] = {}
        for row in c.execute("SELECT gpu_index, task FROM gpu_assignments WHERE workflow_id = ? AND group_name = ? "
                             "ORDER BY gpu_index", (workflow_id, group)):
            if row["gpu_index"] in by_index:
                held[row["task"]] = held.get(row["task"], ()) + (by_index[row["gpu_index"]],)
        return held

    def release(self, workflow_id: str, group: str | None = None) -> None:
        where, args = ("workflow_id = ?", (workflow_id,)) if group is None else \
            ("workflow_id = ? AND group_name = ?", (workflow_id, group))
        with db.transaction(self.conn) as c:
            c.execute(f"DELETE FROM gpu_assignments WHERE {where}", args)
            c.execute(f"DELETE FROM allocations WHERE {where}", args)
