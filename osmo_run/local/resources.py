"""What the local pool has and who holds it, for ``osmo resource list`` and ``osmo pool list``.

One node (this machine): its capacity (``pool.pool_capacity``), what the admitted groups of every
workflow reserved (``holdings``: the live ``allocations`` and ``gpu_assignments`` rows), what is
free, each GPU with the task that holds it, the storage of the state directory's file system, and
the pool's platforms (with the GPU model a platform is bound to, and how many of its GPUs are free).
The shape is the one ``osmo_run.kube.resources`` gives for a Kubernetes pool.
"""

from __future__ import annotations

import shutil
import socket
from typing import Any

from osmo_run.local.gpus import model_matches
from osmo_run.local.holdings import gpu_holders, read_holdings
from osmo_run.local.pool import pool_capacity, pool_gpus
from osmo_run.local.settings import Settings
from osmo_run.local.state import StateStore


def figures(cpu: float, memory: int, gpu: int, storage: int | None) -> dict[str, Any]:
    return {"cpu": round(cpu, 3), "memory": int(memory), "gpu": int(gpu), "storage": storage}


def subtract(capacity: dict[str, Any], used: dict[str, Any]) -> dict[str, Any]:
    return {key: None if capacity[key] is None or used.get(key) is None else capacity[key] - used[key]
            for key in capacity}


def local_pool(settings: Settings, state: StateStore) -> dict[str, Any]:
    """The local pool's report (see the module docstring)."""
    cap = pool_capacity(settings)
    gpus = pool_gpus(settings)
    holdings = read_holdings(state.conn)
    holders = gpu_holders(holdings)
    disk = shutil.disk_usage(state.paths.root)
    capacity = figures(cap.cpu, cap.memory, cap.gpu, disk.total)
    used = figures(sum(h.cpu for h in holdings), sum(h.memory for h in holdings),
                   len(holders) if gpus else sum(h.gpu for h in holdings), disk.total - disk.free)
    names = settings.platforms if settings.platforms is not None else ()
    platforms = []
    for name in names:
        model = settings.platform_models.get(name)
        kind = [g for g in gpus if model_matches(model, g)]
        platforms.append({"name": name, "gpu_model": model, "nodes": [socket.gethostname()], "gpus": len(kind),
                          "gpus_free": sum(1 for g in kind if g.index not in holders)})
    node = {
        "name": socket.gethostname(),
        "platforms": list(names) if names else ["*"],
        "capacity": capacity, "used": used, "free": subtract(capacity, used),
        "gpus": [{**g.to_json(), "held_by": holders.get(g.index)} for g in gpus],
        "holders": [{"holder": h.owner, "workflow": h.workflow_id, "group": h.group, "cpu": h.cpu,
                     "memory": h.memory, "gpu": h.gpu, "gpus": sorted(h.gpus)} for h in holdings],
    }
    return {"pool": settings.name, "kind": "local", "platforms": platforms, "accepts_any_platform": not names,
            "capacity": capacity, "used": used, "free": node["free"], "nodes": [node]}
