"""What a task may use while it runs: its resource spec, mapped to the pool, in one place.

``TaskLimits.of`` takes the task's ``resources`` (cpu, memory, storage, gpu) and caps each at the pool's
capacity (a request larger than the pool is admitted mapped down to it, ``pool.plan_gang``).
``container_args`` turns them into an engine's options, and says in the task log what is enforced
and what is not:

- cpu -> ``--cpus N`` (CFS quota: the task gets at most N cores' time);
- memory -> ``--memory N --memory-swap N`` (no swap on top): a task that uses more is killed by the
  kernel and ends with 137, as a pod over its memory limit is OOMKilled;
- storage -> ``--storage-opt size=N``, only where the engine's image store is on xfs (the overlay
  driver limits a container's size with xfs project quotas, nowhere else);
- gpu: the GPUs the pool assigned to the task (``gpus``, ``pool.Ledger``) -> Podman's CDI devices
  ``--device nvidia.com/gpu=<index>`` or Docker's ``--gpus "device=<uuid>"`` (``gpus.engine_options``);
  needs no cgroup controller.

A limit needs the engine's cgroup controller (``Engine.controllers``): rootless Podman on cgroup v1
has none, so nothing is enforced there, and the log says so. Host processes (no engine) get cgroup
limits from ``cgroups``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from osmo_run.local.engine import Engine
from osmo_run.local.gpus import Gpu, engine_options
from osmo_run.local.settings import Capacity

GiB, MiB = 2**30, 2**20


def size(value: int) -> str:
    """Bytes as the log shows them: ``1 GiB``, ``64 MiB``, ``1.5 GiB``, ``4096 bytes``."""
    for unit, name in ((GiB, "GiB"), (MiB, "MiB")):
        if value >= unit:
            return f"{value / unit:.2f}".rstrip("0").rstrip(".") + f" {name}"
    return f"{value} bytes"


@dataclass(frozen=True)
class TaskLimits:
    cpu: float | None = None  # cores
    memory: int | None = None  # bytes
    storage: int | None = None  # bytes
    gpu: int | None = None  # count
    gpus: tuple[Gpu, ...] = ()  # the GPUs assigned to the task (by the pool, at admission)

    def with_gpus(self, gpus: tuple[Gpu, ...]) -> "TaskLimits":
        return replace(self, gpus=tuple(gpus))

    @classmethod
    def of(cls, resources, capacity: Capacity | None) -> "TaskLimits":
        """The task's ``Resources``, each capped at the pool's capacity (storage is not counted)."""
        cpu, memory = resources.cpu or None, resources.memory or None
        if capacity is not None:
            cpu = min(cpu, capacity.cpu) if cpu and capacity.cpu else cpu
            memory = min(memory, capacity.memory) if memory and capacity.memory else memory
        return cls(cpu, memory, resources.storage or None, resources.gpu or None)

    @property
    def asked(self) -> bool:
        return bool(self.cpu or self.memory or self.storage)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any] | None) -> "TaskLimits":
        raw = {k: v for k, v in (raw or {}).items() if k in cls.__dataclass_fields__}
        raw["gpus"] = tuple(Gpu.from_json(g) for g in raw.get("gpus") or ())
        return cls(**raw)


def container_args(limits: TaskLimits, engine: Engine) -> tuple[list[str], list[str]]:
    """The engine's options for ``limits`` (and the task's GPUs) and the task log's lines about them."""
    args, notes = _limit_args(limits, engine)
    if limits.gpus:
        options = engine_options(engine.kind, limits.gpus)
        args += options
        notes.append(f"gpu: {', '.join(g.describe() for g in limits.gpus)} ({' '.join(options)})")
    return args, notes


def _limit_args(limits: TaskLimits, engine: Engine) -> tuple[list[str], list[str]]:
    kind, controllers = engine.kind, engine.controllers
    if not limits.asked:
        return [], ["limits: none (the task asks for no cpu, memory or storage)"]
    args: list[str] = []
    enforced: list[str] = []
    skipped: list[str] = []
    if not controllers:
        why = ("rootless Podman on cgroup v1 cannot set resource limits"
               if engine.rootless and engine.cgroup_version == "v1"
               else f"{kind} reports no cgroup controller it can limit with")
        return [], [f"limits: not enforced: {why}"]
    if limits.cpu:
        if "cpu" in controllers:
            args += ["--cpus", f"{limits.cpu:g}"]
            enforced.append(f"cpu {limits.cpu:g} (--cpus)")
        else:
            skipped.append(f"cpu ({kind} has no cpu controller here)")
    if limits.memory:
        if "memory" in controllers:
            args += ["--memory", str(limits.memory), "--memory-swap", str(limits.memory)]
            enforced.append(f"memory {size(limits.memory)} (--memory, no swap: more ends the task with 137)")
        else:
            skipped.append(f"memory ({kind} has no memory controller here)")
    if limits.storage:
        if engine.storage_fs == "xfs":
            args += ["--storage-opt", f"size={limits.storage}"]
            enforced.append(f"storage {size(limits.storage)} (--storage-opt size)")
        else:
            skipped.append(f"storage {size(limits.storage)} ({kind}'s image store is on "
                           f"{engine.storage_fs or 'a file system'}; a container size limit needs xfs)")
    notes = [f"limits: {', '.join(enforced)}"] if enforced else []
    if skipped:
        notes.append(f"limits not enforced: {', '.join(skipped)}")
    return args, notes

