"""One task attempt as a container: what ``containerinit`` is told to do (the engine side of ``prepare``).

The container sees what an isolated task sees: ``/osmo/data`` is the attempt's ``data/`` folder (the
sidecar's inputs and the output folder, bound read-write: the task writes its output there, as on
Kubernetes where the sidecar and the task share the volume), ``/osmo/work`` its working folder (and
``HOME``), the hostname is the task's name. ``files:`` under those two folders are written into them
on the host; every other one goes into the container's own file system. The group's network gives
the task a fixed address; without one (``hostNetwork``, ``network: host``, or an engine that cannot
make networks here) the container shares the host's network and ``{{host:TASK}}`` is 127.0.0.1.

``plan_container`` returns containerinit's config (the ``ContainerSpec``, the engine, the task's
environment and files), the image step's config, and the task log's lines about both.
"""

from __future__ import annotations

import os
from typing import Any

from osmo_run.contract import RunDir
from osmo_run.local.engine import Engine
from osmo_run.local.engine_cli import ContainerSpec
from osmo_run.local.engine_objects import labels, object_name
from osmo_run.local.limits import TaskLimits, container_args
from osmo_run.local.procs import ProcessIdentity
from osmo_run.spec import TASK_DATA, TASK_WORK, SpecError

PIDFILE = "container.pid"
IMAGE_ERROR = "image-error"


def _mountable(path: str) -> str:
    if ":" in path or "," in path:
        raise SpecError(f"the run directory {path} holds ':' or ',', which a bind mount of {path} cannot name; "
                        "use a state directory ($OSMO_STATE_DIR) without them")
    return path


def plan_container(*, engine: Engine, run: RunDir, work_dir: str, workflow_id: str, group: str, task, attempt: int,
                   hostname: str, network: str | None, address: str | None, peers: dict[str, str], env: dict[str, str],
                   files: list[dict[str, Any]], limits: TaskLimits, grace: float,
                   parent: int) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """containerinit's config, the image step's config and the log lines (``task``: tokens substituted;
    ``network``: the group's network, with the task's ``address`` and its ``peers``, hostname -> address)."""
    owner = ProcessIdentity.of(parent) or ProcessIdentity(parent, 0, "")
    runner_dir = os.path.join(run.root, "runner")
    limit_args, notes = container_args(limits, engine)
    spec = ContainerSpec(
        name=object_name(owner, workflow_id, task.name, f"a{attempt}"), image=task.image, command=tuple(task.command),
        args=tuple(task.args), workdir=TASK_WORK, hostname=hostname,
        mounts=((_mountable(run.data), TASK_DATA), (_mountable(work_dir), TASK_WORK)),
        network=network or "host", address=address if network else None, hosts=dict(peers) if network else {},
        labels=labels(owner, workflow_id, group, task.name, attempt), extra=tuple(limit_args),
        pidfile=os.path.join(runner_dir, PIDFILE) if engine.kind == "podman" else None)
    who = "rootless" if engine.rootless else "root"
    notes.insert(0, f"image {task.image}: the command runs in container {spec.name} ({engine.kind} {engine.version}, "
                    f"{who}); hostname {hostname}, {TASK_DATA} = {run.data}, {TASK_WORK} = {work_dir}")
    if network:
        notes.insert(1, f"network: {spec.address} on the group's network {network}; the group's task names "
                        "resolve to their addresses")
    elif engine.networks:
        notes.insert(1, "network: the host's (hostNetwork or network: host); {{host:TASK}} is 127.0.0.1")
    else:
        notes.insert(1, f"network: the host's, as {engine.network_problem}; {{{{host:TASK}}}} is 127.0.0.1 and "
                        "the group's tasks share the host's ports")
    init = {"engine": engine.to_json(), "container": spec.to_json(), "env": env, "files": files, "grace": grace,
            "parent": parent, "workdir": runner_dir}
    image = {"engine": engine.to_json(), "image": task.image, "error_file": os.path.join(runner_dir, IMAGE_ERROR),
             "parent": parent}
    return init, image, notes
