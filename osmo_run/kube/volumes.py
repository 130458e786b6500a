"""A task's ``volumeMounts:`` on Kubernetes: host folders, mounted only where the pool config allows.

A mount is ``HOST_PATH`` or ``HOST_PATH:CONTAINER_PATH`` (the spec's form; the container path defaults to
the host path). The pool config's ``kubernetes.host_paths`` lists the host folders tasks may mount (a
folder and everything below it); without it no host path is allowed. ``check_workflow`` runs at submit
(every refusal is one line naming the task and the path) and again when a pod is made.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from osmo_run.kube.objects import DATA_DIR, RUN_DIR
from osmo_run.kube.pool import KubePool


class VolumeMountError(ValueError):
    """A volume mount the pool does not allow; the message names the task and the path."""


@dataclass(frozen=True)
class HostMount:
    host: str
    container: str


def _absolute(path: str) -> str | None:
    if not path.startswith("/") or ".." in path.split("/"):
        return None
    return "/" + posixpath.normpath(path).lstrip("/")


def _allowed(host: str, prefixes: tuple[str, ...]) -> bool:
    return any(p == "/" or host == p or host.startswith(p + "/") for p in prefixes)


def host_mounts(task, pool: KubePool) -> list[HostMount]:
    """The task's mounts, checked against the pool (``VolumeMountError``)."""
    out = []
    for mount in task.volume_mounts:
        host_text, _, container_text = mount.partition(":")
        where = f"task {task.name!r}: volumeMounts: {mount!r}"
        host, container = _absolute(host_text), _absolute(container_text or host_text)
        if host is None or container is None:
            raise VolumeMountError(f"{where}: expected absolute paths without '..'")
        if not _allowed(host, pool.host_paths):
            allowed = ", ".join(pool.host_paths) if pool.host_paths else "none"
            raise VolumeMountError(f"{where}: the host path {host} is not allowed by the pool config "
                                   f"(kubernetes.host_paths: {allowed})")
        for reserved in (RUN_DIR, DATA_DIR):
            if container in ("/", reserved) or container.startswith(reserved + "/") \
                    or reserved.startswith(container + "/"):
                raise VolumeMountError(f"{where}: the container path {container} is the runner's ({reserved})")
        out.append(HostMount(host, container))
    return out


def check_workflow(workflow, pool: KubePool) -> list[str]:
    """One line per task whose volume mounts the pool does not allow."""
    problems = []
    for task in workflow.tasks():
        try:
            host_mounts(task, pool)
        except VolumeMountError as exc:
            problems.append(str(exc))
    return problems
