"""Which task ``exec`` and ``port-forward`` reach, from a workflow's ``query`` (both runners), and the
local runner's way into it (docs/INTERACTIVE.md).

``find_task(info, name, group)``: the task named (default: the lead of the only group, or of
``group``); unknown names get the closest ones. ``not_running(info, task)``: the sentence for a task that
cannot be reached now: what a waiting task waits for, and for an ended one, ``--debug``.
``running_access(workflow_id, task)``: the local runner's ``TaskAccess`` of the task's current attempt.
``LocalConnector``: port-forward's connector (``osmo_run.portforward``) for the local runner; it finds
the task's current attempt for every connection, waiting up to ``RESTART_WAIT`` seconds while the task
is between two attempts (a RESCHEDULE), and keeps one relay into the attempt's network namespace.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any, Callable

from osmo_run.kube.pool import KubePool, PoolConfigError, parse_pool
from osmo_run.local import service
from osmo_run.local.access import TaskAccess
from osmo_run.local.errors import CONFLICT, NotFound, RunnerError, closest, did_you_mean
from osmo_run.local.netrelay import NetnsRelay, RelayError
from osmo_run.local.settings import Settings
from osmo_run.local.statuses import is_terminal
from osmo_run.portforward import TargetGone

RESTART_WAIT = 60.0
_WAITING_FOR = {"WAITING": "its group waits for the groups upstream of it",
                "SCHEDULING": "its group waits for the pool to admit it (see 'osmo resource list')",
                "INITIALIZING": "its group is starting"}


def tasks(info: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(group name, task) of every task of a ``query``."""
    return [(g["name"], t) for g in info.get("groups", []) for t in g.get("tasks", [])]


def find_task(info: dict[str, Any], name: str | None, group: str | None = None) -> dict[str, Any]:
    every = tasks(info)
    if group is not None and group not in {g for g, _ in every}:
        groups = sorted({g for g, _ in every})
        raise NotFound(f"workflow {info['id']} has no group {group!r}{did_you_mean(closest(group, groups))}",
                       workflow=info["id"])
    if name is None:
        candidates = [t for g, t in every if t.get("lead") and (group is None or g == group)]
        if group is None and len({g for g, _ in every}) > 1:
            raise RunnerError(f"workflow {info['id']} has several groups: name a task (or --group GROUP)",
                              workflow=info["id"])
        if not candidates:
            candidates = [t for g, t in every if group is None or g == group][:1]
        return candidates[0]
    for _, task in every:
        if task["name"] == name:
            return task
    raise NotFound(f"workflow {info['id']} has no task {name!r}{did_you_mean(closest(name, [t['name'] for _, t in every]))}",
                   workflow=info["id"], task=name)


def not_running(info: dict[str, Any], task: dict[str, Any]) -> str:
    """Why ``task`` cannot be reached now, and what to do."""
    status, name = task["status"], task["name"]
    if status in _WAITING_FOR:
        return f"task {name} is not running yet: it is {status} ({_WAITING_FOR[status]})"
    if is_terminal(status):
        code = f", exit code {task['exit_code']}" if task.get("exit_code") is not None else ""
        return (f"task {name} has ended ({status}{code}): 'osmo workflow exec --debug {info['id']} {name}' "
                "opens a shell in a copy of it")
    return f"task {name} is {status}"


def kube_pool(workflow_id: str) -> KubePool | None:
    """The Kubernetes pool the workflow runs on (its supervisor in the cluster or here); None: the local
    runner. ``NotFound`` for an unknown workflow."""
    if (pool := service.in_cluster(workflow_id)) is not None:
        return pool
    state = service.open_state()
    try:
        state.reconcile(workflow_id)
        row = state.workflow(workflow_id)
    finally:
        state.close()
    settings = Settings.from_json(json.loads(row["settings"] or "{}"))
    if settings.runner != "kubernetes":
        return None
    try:
        return parse_pool(settings.kubernetes)
    except PoolConfigError as exc:
        raise RunnerError(f"workflow {workflow_id}: its pool config: {exc}", workflow=workflow_id) from None


def _current(workflow_id: str, name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    info = service.query(workflow_id)
    task = find_task(info, name)
    attempts = task.get("attempts") or []
    return info, task, (attempts[-1] if attempts else None)


def _ended(info: dict[str, Any], task: dict[str, Any]) -> bool:
    """The task will not run again (a RESCHEDULED attempt is followed by another)."""
    return is_terminal(info["status"]) or (is_terminal(task["status"]) and task["status"] != "RESCHEDULED")


def check_not_ended(workflow_id: str, name: str) -> None:
    """``TargetGone`` once the task has ended for good (port-forward's periodic check, both runners)."""
    info, task, _ = _current(workflow_id, name)
    if _ended(info, task):
        raise TargetGone(not_running(info, task), workflow=workflow_id, task=name)


def running_access(workflow_id: str, name: str) -> TaskAccess:
    """The way into the task's current attempt; ``RunnerError`` (conflict) when it does not run now."""
    info, task, attempt = _current(workflow_id, name)
    if task["status"] != "RUNNING" or attempt is None or not attempt.get("run_dir"):
        raise RunnerError(not_running(info, task), CONFLICT, workflow=workflow_id, task=name)
    return TaskAccess.open(attempt["run_dir"], f"task {name} (attempt {attempt['attempt']})")


class LocalConnector:
    """``Connector`` of the local runner (see the module docstring)."""

    def __init__(self, workflow_id: str, task: str, wait: float = RESTART_WAIT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.workflow_id, self.task, self.wait, self.clock = workflow_id, task, wait, clock
        self.lock = threading.Lock()
        self.relay: NetnsRelay | None = None
        self.relay_of: str | None = None  # the run folder the relay was started for

    def _access(self) -> tuple[str, TaskAccess]:
        """The current attempt's way in, waiting while the task restarts; ``TargetGone`` once it ended."""
        deadline = self.clock() + self.wait
        while True:
            info, task, attempt = _current(self.workflow_id, self.task)
            if task["status"] == "RUNNING" and attempt and attempt.get("run_dir"):
                try:
                    return attempt["run_dir"], TaskAccess.open(attempt["run_dir"], f"task {self.task}")
                except RunnerError:
                    pass  # between its start and its command, or just ended: look again
            elif _ended(info, task):
                raise TargetGone(not_running(info, task), workflow=self.workflow_id, task=self.task)
            if self.clock() >= deadline:
                raise RunnerError(not_running(info, task) if task["status"] != "RUNNING"
                                  else f"task {self.task} has not started its command yet", CONFLICT)
            time.sleep(0.25)

    def check(self) -> None:
        check_not_ended(self.workflow_id, self.task)

    def _open(self, kind: str, port: int) -> socket.socket:
        with self.lock:
            run_dir, access = self._access()
            prefix = access.netns_argv()
            if prefix is None:
                self._drop_relay()
                return _loopback(kind, port, self.task)
            if self.relay is None or self.relay_of != run_dir or not self.relay.alive:
                self._drop_relay()
                self.relay, self.relay_of = NetnsRelay(prefix), run_dir
            relay = self.relay
        try:
            return relay.open(kind, port)
        except RelayError as exc:
            if exc.refused:
                raise RunnerError(f"nothing listens on port {port} in task {self.task}", CONFLICT) from None
            raise RunnerError(f"task {self.task}: {exc}", CONFLICT) from None

    def _drop_relay(self) -> None:
        if self.relay is not None:
            self.relay.close()
            self.relay = self.relay_of = None

    def tcp(self, port: int) -> socket.socket:
        return self._open("T", port)

    def udp(self, port: int) -> socket.socket:
        return self._open("U", port)

    def close(self) -> None:
        with self.lock:
            self._drop_relay()


def _loopback(kind: str, port: int, task: str) -> socket.socket:
    """The task shares the host's network: its port is the host's."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM if kind == "T" else socket.SOCK_DGRAM)
    try:
        sock.settimeout(5.0)
        sock.connect(("127.0.0.1", port))
        sock.settimeout(None)
        return sock
    except ConnectionRefusedError:
        sock.close()
        raise RunnerError(f"nothing listens on port {port} in task {task}", CONFLICT) from None
    except OSError as exc:
        sock.close()
        raise RunnerError(f"task {task}: port {port}: {exc.strerror or exc}", CONFLICT) from None
