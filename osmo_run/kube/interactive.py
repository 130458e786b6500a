"""Interactive access to a task's pod through the API server, for ``osmo workflow exec`` and
``port-forward`` on Kubernetes (docs/KUBERNETES.md, "Interactive access on Kubernetes").

- ``running_pod(info, task, pool)``: the pod of the task's current attempt, from a workflow's ``query``;
  a ``RunnerError`` a person can act on when the task is not running (what it waits for, or ``--debug``
  for one that ended) or its pod or container is not (or no longer) up.
- ``exec_in_pod(pool, pod, argv, tty)``: runs ``argv`` in the task's container (``pods/exec``) with this
  process's stdin, stdout and stderr, and returns its exit code; with ``tty`` a real terminal (raw mode,
  window size, Ctrl-C as a byte). The pump is ``execstream.py``, the terminal ``terminal.py``.
- ``PodConnector``: port-forward's connector (``osmo_run.portforward.Connector``): one ``pods/portforward``
  websocket per connection (``portstream.py``), to the pod ``find_pod()`` names at that moment, so
  forwarding goes on onto the new pod after a RESCHEDULE. UDP goes through a relay in the pod's sidecar
  container (``udprelay.py``): the API server's port-forward carries TCP only.

Every stream has an API client of its own (the official client's ``stream()`` swaps the client's request
method while it opens one). Expected failures are ``RunnerError``; nothing else is raised on purpose.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import stat
from dataclasses import dataclass
from typing import Any, Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.kube.execstream import (RELAY_READER, RELAY_WRITER, ExecSession, api_reason, exit_status, open_exec,
                                      write_all)
from osmo_run.kube.objects import LABEL_TASK, TASK_CONTAINER, pod_name
from osmo_run.kube.pool import KubePool
from osmo_run.kube.portstream import PortRefused, open_port
from osmo_run.kube.supervisor import api_client
from osmo_run.kube.terminal import Terminal, Terminated
from osmo_run.kube.udprelay import open_udp
from osmo_run.local.errors import CONFLICT, RunnerError
from osmo_run.local.reach import find_task, not_running

V5_SINCE = (1, 30)  # API servers from this version speak the v5 stream protocol (stdin can be closed)
TERMINATED = 143


@dataclass(frozen=True)
class PodRef:
    namespace: str
    name: str  # the pod: objects.pod_name(workflow_id, task, attempt)
    container: str  # "task" (the task's container)


def running_pod(info: dict[str, Any], task: str, pool: KubePool) -> PodRef:
    """The pod of ``task``'s current attempt when the task and its container run; else ``RunnerError``."""
    entry = find_task(info, task)
    attempts = entry.get("attempts") or []
    # after a RESCHEDULE the task can read INITIALIZING while its new attempt already runs
    rescheduled = entry["status"] == "INITIALIZING" and attempts and attempts[-1].get("status") == "RUNNING"
    if not attempts or (entry["status"] != "RUNNING" and not rescheduled):
        raise RunnerError(not_running(info, entry), CONFLICT, workflow=info.get("id"), task=task)
    pod = PodRef(pool.namespace, pod_name(info["id"], task, attempts[-1]["attempt"]), TASK_CONTAINER)
    api = api_client(pool.context)
    try:
        found = client.CoreV1Api(api).read_namespaced_pod(pod.name, pod.namespace)
    except ApiException as exc:
        if exc.status == 404:
            raise RunnerError(f"task {task} has no pod {pod.name} in namespace {pod.namespace} (it may have "
                              "just ended or be restarting): try again", CONFLICT, task=task) from None
        raise RunnerError(f"task {task}: cannot read its pod {pod.name}: {api_reason(exc)}", CONFLICT,
                          task=task) from None
    except Exception as exc:  # noqa: BLE001 - connection errors of urllib3
        raise RunnerError(f"task {task}: the cluster cannot be reached: {api_reason(exc)}", CONFLICT, task=task) from None
    finally:
        api.close()
    states = {s.name: s.state for s in (found.status.container_statuses or [])}
    state = states.get(TASK_CONTAINER)
    if found.status.phase != "Running" or state is None or state.running is None:
        where = "is still starting" if state is None or state.waiting is not None else "has ended"
        raise RunnerError(f"task {task}: its container in pod {pod.name} {where} (pod phase "
                          f"{found.status.phase})", CONFLICT, task=task)
    return pod


def _stdin_usable() -> bool:
    """False when stdin is closed or /dev/null: the command then gets no stdin stream at all."""
    try:
        mine = os.fstat(0)
    except OSError:
        return False
    if stat.S_ISCHR(mine.st_mode):
        null = os.stat(os.devnull)
        return (mine.st_rdev, mine.st_ino) != (null.st_rdev, null.st_ino)
    return True


def _speaks_v5(api: client.ApiClient) -> bool:
    try:
        version = client.VersionApi(api).get_code()
        numbers = (int(re.sub(r"\D.*", "", version.major)), int(re.sub(r"\D.*", "", version.minor)))
    except Exception:  # noqa: BLE001 - an unknown version: assume the older protocol (the relay works on both)
        return False
    return numbers >= V5_SINCE


def exec_in_pod(pool: KubePool, pod: PodRef, argv: list[str], tty: bool) -> int:
    """Run ``argv`` in ``pod``'s container with this process's stdio; returns the command's exit code."""
    if not argv:
        raise RunnerError("exec: no command to run")
    base = api_client(pool.context)
    stdin = tty or _stdin_usable()
    relay = None
    where = (base, pod.namespace, pod.name, pod.container)
    try:
        if stdin and not tty and not _speaks_v5(base):
            fifo = f"/tmp/.osmo-stdin-{secrets.token_hex(8)}"
            main = open_exec(*where, ["/bin/sh", "-c", RELAY_READER, "osmo-exec", fifo, *argv], False)
            try:
                relay = open_exec(*where, ["/bin/sh", "-c", RELAY_WRITER, "osmo-stdin", fifo], True)
            except RunnerError:
                main.close()
                raise
        else:
            main = open_exec(*where, list(argv), stdin, tty)
    finally:
        base.close()
    terminal = Terminal(raw=tty)
    session = ExecSession(main.sock, main.subprotocol or "", terminal, stdin, tty,
                          relay.sock if relay is not None else None)
    try:
        with terminal:
            status = session.run()
    except Terminated:
        return TERMINATED
    finally:
        terminal.close()
    if status is None:
        raise RunnerError(f"the connection to pod {pod.name} ended before the command did", CONFLICT)
    code, message = exit_status(status)
    if message:
        write_all(2, f"osmo: cannot run {argv[0]!r} in pod {pod.name}: {message}\n".encode())
    return code


class PodConnector:
    """Connections to ports of the pod ``find_pod()`` names (see the module docstring)."""

    def __init__(self, pool: KubePool, find_pod: Callable[[], PodRef]) -> None:
        self.pool, self.find_pod = pool, find_pod
        self.api = api_client(pool.context)

    def tcp(self, port: int) -> socket.socket:
        pod = self.find_pod()
        try:
            return open_port(self.api, pod.namespace, pod.name, port)
        except PortRefused as exc:
            task = self._task_of(pod)
            if exc.refused:
                raise RunnerError(f"nothing listens on port {port} in task {task}", CONFLICT, task=task) from None
            raise RunnerError(f"port {port} of task {task} (pod {pod.name}): {exc}", CONFLICT, task=task) from None

    def check(self) -> None:
        """The forwarder's periodic look: whatever ``find_pod()`` raises (``TargetGone`` once the task has
        ended for good, if ``find_pod`` says so)."""
        self.find_pod()

    def udp(self, port: int) -> socket.socket:
        """Through a relay in the pod's sidecar container (``udprelay.py``): the API forwards TCP only."""
        pod = self.find_pod()
        return open_udp(self.api, pod.namespace, pod.name, port)

    def _task_of(self, pod: PodRef) -> str:
        try:
            found = client.CoreV1Api(self.api).read_namespaced_pod(pod.name, pod.namespace)
            return (found.metadata.labels or {}).get(LABEL_TASK) or pod.name
        except Exception:  # noqa: BLE001 - only for the message
            return pod.name

    def close(self) -> None:
        self.api.close()
