"""This machine's GPUs: what ``nvidia-smi`` reports, which GPUs a task may have, and how it is told.

The pool knows each GPU by index, UUID, model and memory, from::

    nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits

The command is the pool config's ``gpu_command`` (``$OSMO_NVIDIA_SMI`` overrides it), else
``nvidia-smi`` on PATH; none found: the pool has no GPU. A GPU is handed to one task at a time
(``pool.Ledger`` records the assignment); a platform the pool config maps to a ``gpu_model`` gets
GPUs of that model only. A model matches a GPU's name as a whole word, case-insensitively
(``A40`` matches ``NVIDIA A40``, not ``NVIDIA A400``).

How a task is told which GPUs it has:

- host processes: ``NVIDIA_VISIBLE_DEVICES`` and ``CUDA_VISIBLE_DEVICES`` hold the GPUs' UUIDs (a UUID
  names the same GPU whatever order CUDA counts them in); on a pool with GPUs a task that asked for
  none gets ``CUDA_VISIBLE_DEVICES=`` (empty) and ``NVIDIA_VISIBLE_DEVICES=void``: it sees none;
- Podman: ``--device nvidia.com/gpu=<index>`` per GPU (CDI names, from ``nvidia-ctk cdi generate``);
- Docker: ``--gpus "device=<uuid>,<uuid>"`` (the NVIDIA container toolkit).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from typing import Any, Iterable

QUERY = "index,uuid,name,memory.total"
COMMAND_ENV = "OSMO_NVIDIA_SMI"
QUERY_TIMEOUT = 20.0


class GpuQueryError(Exception):
    """``nvidia-smi`` ran but its output could not be read (the message names the line)."""


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    model: str
    memory: int  # bytes

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Gpu":
        return cls(int(raw["index"]), str(raw["uuid"]), str(raw["model"]), int(raw["memory"]))

    def describe(self) -> str:
        return f"GPU {self.index} ({self.model}, {self.memory / 2**30:.0f} GiB, {self.uuid})"


def parse_query(text: str) -> list[Gpu]:
    """``nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`` -> GPUs."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split(",")]
        if len(cells) != 4:
            raise GpuQueryError(f"line {number}: expected index, uuid, name, memory.total: {line.strip()!r}")
        try:
            memory = int(float(cells[3]) * 2**20) if cells[3] not in ("[N/A]", "N/A") else 0
            found.append(Gpu(int(cells[0]), cells[1], cells[2], memory))
        except ValueError:
            raise GpuQueryError(f"line {number}: not a GPU's index and memory in MiB: {line.strip()!r}") from None
    return sorted(found, key=lambda g: g.index)


def gpu_command(configured: str | None = None) -> str | None:
    """The ``nvidia-smi`` to run: ``$OSMO_NVIDIA_SMI``, the pool config's ``gpu_command``, else PATH's."""
    chosen = os.environ.get(COMMAND_ENV) or configured
    if chosen:
        return shutil.which(chosen) or (chosen if os.access(chosen, os.X_OK) else None)
    return shutil.which("nvidia-smi")


def detect_gpus(configured: str | None = None) -> list[Gpu]:
    """This machine's GPUs (none when there is no ``nvidia-smi`` or it fails: no driver, no GPU)."""
    tool = gpu_command(configured)
    if not tool:
        return []
    try:
        done = subprocess.run([tool, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=QUERY_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode != 0:
        return []
    try:
        return parse_query(done.stdout)
    except GpuQueryError:
        return []


def model_matches(model: str | None, gpu: Gpu) -> bool:
    """Whether ``gpu`` is of ``model`` (None: any GPU)."""
    if not model:
        return True
    return re.search(rf"(?<![A-Za-z0-9]){re.escape(model)}(?![A-Za-z0-9])", gpu.model, re.IGNORECASE) is not None


@dataclass(frozen=True)
class GpuNeed:
    """One task's GPU request: how many, of which model (None: any)."""

    task: str
    count: int
    model: str | None = None

    def describe(self) -> str:
        return f"{self.count} {self.model + ' ' if self.model else ''}GPU{'' if self.count == 1 else 's'}"


def pick(needs: Iterable[GpuNeed], free: list[Gpu]) -> dict[str, tuple[Gpu, ...]] | None:
    """GPUs for every need at once from ``free`` (model-bound needs first), or None if they do not fit."""
    left = list(free)
    chosen: dict[str, tuple[Gpu, ...]] = {}
    for need in sorted(needs, key=lambda n: n.model is None):
        if need.count <= 0:
            continue
        fitting = [g for g in left if model_matches(need.model, g)][:need.count]
        if len(fitting) < need.count:
            return None
        chosen[need.task] = tuple(fitting)
        left = [g for g in left if g not in fitting]
    return chosen


def host_environment(gpus: tuple[Gpu, ...], pool_has_gpus: bool) -> dict[str, str]:
    """The variables a host-process task gets: its GPUs' UUIDs, or none visible on a GPU pool."""
    if gpus:
        uuids = ",".join(g.uuid for g in gpus)
        return {"NVIDIA_VISIBLE_DEVICES": uuids, "CUDA_VISIBLE_DEVICES": uuids}
    if pool_has_gpus:
        return {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    return {}


def engine_options(kind: str, gpus: tuple[Gpu, ...]) -> list[str]:
    """The container engine's options for ``gpus``: CDI device names (Podman), ``--gpus`` (Docker)."""
    if not gpus:
        return []
    if kind == "podman":
        return [arg for g in gpus for arg in ("--device", f"nvidia.com/gpu={g.index}")]
    return ["--gpus", '"device=' + ",".join(g.uuid for g in gpus) + '"']
