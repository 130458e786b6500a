"""Who holds what in the local pool: the admitted groups (``allocations``) and the GPUs handed to their
tasks (``gpu_assignments``), with the rows of dead supervisors dropped, and why a group must wait.

Both tables live in the state database (``db.py``); a GPU row belongs to the allocation of its
workflow and group, so when a supervisor dies (killed, crashed, machine restarted) and its
allocations are dropped, its GPUs are free again too. ``Ledger`` (pool.py) writes them; the
resource report (resources.py) and a waiting group's reason read them through ``read_holdings``.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field

from osmo_run.local.gpus import Gpu, GpuNeed, model_matches
from osmo_run.local.procs import ProcessIdentity


@dataclass
class Holding:
    """One admitted group: what it reserved and the GPUs of its tasks (index -> task)."""

    workflow_id: str
    group: str
    cpu: float
    memory: int
    gpu: int
    gpus: dict[int, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return f"{self.workflow_id}/{self.group}"


def read_holdings(conn: sqlite3.Connection, prune: bool = False) -> list[Holding]:
    """The live holdings; with ``prune`` (inside a write transaction) dead supervisors' rows are deleted."""
    found = []
    for row in conn.execute("SELECT * FROM allocations ORDER BY granted_at").fetchall():
        owner = ProcessIdentity(row["pid"], row["pid_start"], row["boot"])
        if not owner.alive():
            if prune:
                conn.execute("DELETE FROM allocations WHERE workflow_id = ? AND group_name = ?",
                             (row["workflow_id"], row["group_name"]))
            continue
        found.append(Holding(row["workflow_id"], row["group_name"], row["cpu"], row["memory"], row["gpu"]))
    by_key = {(h.workflow_id, h.group): h for h in found}
    for row in conn.execute("SELECT * FROM gpu_assignments").fetchall():
        holding = by_key.get((row["workflow_id"], row["group_name"]))
        if holding is None:
            if prune:
                conn.execute("DELETE FROM gpu_assignments WHERE gpu_index = ?", (row["gpu_index"],))
            continue
        holding.gpus[row["gpu_index"]] = row["task"]
    return found


def gpu_holders(holdings: list[Holding]) -> dict[int, str]:
    """GPU index -> ``workflow/task`` holding it."""
    return {index: f"{h.workflow_id}/{task}" for h in holdings for index, task in h.gpus.items()}


def _held_by(owners: list[str]) -> str:
    return f", held by {', '.join(owners)}" if owners else ""


def waiting_reason(*, cpu: float, memory: int, needs: list[GpuNeed], counted_gpus: int, capacity,
                   gpus: list[Gpu], holdings: list[Holding]) -> str:
    """Why a group asking for ``cpu``, ``memory`` and ``needs`` is not admitted now, one clause per
    resource that is short: "needs 2 GPUs, 1 free, 1 held by sim-3/render"."""
    used_cpu = sum(h.cpu for h in holdings)
    used_memory = sum(h.memory for h in holdings)
    clauses = []
    if cpu > capacity.cpu - used_cpu + 1e-9:
        owners = [f"{h.owner} ({h.cpu:g})" for h in holdings if h.cpu]
        clauses.append(f"needs cpu {cpu:g}, {max(capacity.cpu - used_cpu, 0):g} free{_held_by(owners)}")
    if memory > capacity.memory - used_memory:
        owners = [f"{h.owner} ({h.memory / 2**30:.1f} GiB)" for h in holdings if h.memory]
        clauses.append(f"needs memory {memory / 2**30:.1f} GiB, {max(capacity.memory - used_memory, 0) / 2**30:.1f} "
                       f"GiB free{_held_by(owners)}")
    if gpus:
        holders = gpu_holders(holdings)
        for model in sorted({n.model for n in needs if n.count}, key=lambda m: m or ""):
            want = sum(n.count for n in needs if n.model == model)
            if model is None:  # model-bound needs take theirs first; any GPU serves the rest
                want = sum(n.count for n in needs if n.count)
            kind = [g for g in gpus if model_matches(model, g)]
            free = [g for g in kind if g.index not in holders]
            if want > len(free):
                held = [holders[g.index] for g in kind if g.index in holders]
                owners = sorted(set(held))
                label = f"{model} GPU" if model else "GPU"
                clauses.append(f"needs {want} {label}{'' if want == 1 else 's'}, {len(free)} free"
                               + (f", {len(held)} held by {', '.join(owners)}" if held else ""))
    else:
        want = sum(n.count for n in needs)
        used = sum(h.gpu for h in holdings)
        if want > counted_gpus - used:
            owners = [f"{h.owner} ({h.gpu})" for h in holdings if h.gpu]
            clauses.append(f"needs {want} GPU{'' if want == 1 else 's'}, {max(counted_gpus - used, 0)} free"
                           f"{_held_by(owners)}")
    return "; ".join(clauses) or "the pool is busy"
