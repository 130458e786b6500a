"""What the ``osmo workflow`` commands do, apart from printing: submit (record the workflow, start
its detached supervisor), wait, cancel, query, log paths. Every read first marks workflows whose
supervisor died as FAILED (``StateStore.reconcile``).

``submit`` first resolves every task's credentials (and on the local runner checks the store), so
those mistakes fail the submit before anything runs. The supervisor inherits the submitting
environment (the store's and the credentials' sources) and runs with umask 077.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from osmo_run.kube.pool import PoolConfigError, cluster_pool, parse_pool
from osmo_run.kube.volumes import check_workflow as check_volume_mounts
from osmo_run.local import procs
from osmo_run.local.credentials import CredentialError, masked_values, resolve_task, resolve_workflow
from osmo_run.local.errors import CONFLICT, NotFound, RunnerError, closest, did_you_mean
from osmo_run.local.paths import PRIVATE_FILE, PRIVATE_UMASK, StatePaths
from osmo_run.local.pool import check_workflow, pool_capacity, pool_gpus
from osmo_run.local.settings import Settings, load_settings
from osmo_run.local.state import StateStore
from osmo_run.local.statuses import WorkflowStatus, is_terminal  # noqa: F401  (is_terminal: cli)
from osmo_run.local.storecheck import check_store
from osmo_run.spec import LoadedSpec, SpecError, load_rendered

CANCEL_WAIT = 60.0  # seconds, on top of the grace period, before the supervisor is killed


def open_state() -> StateStore:
    return StateStore(StatePaths())


SUPERVISORS = {"local": "osmo_run.local.supervisor", "kubernetes": "osmo_run.kube.supervisor"}


def submit(loaded: LoadedSpec, *, file: str | None, store: str | None,
           runner: str | None = None, labels: dict[str, str] | None = None) -> tuple[str, subprocess.Popen | None]:
    """Record the workflow and start its supervisor (on ``runner``, default: the pool config's
    ``runner``, else local); returns the id and the supervisor process (None: it runs in the cluster,
    ``kube/remote.py``)."""
    workflow = loaded.workflow
    settings = load_settings()
    runner = runner or settings.runner
    settings = replace(settings, runner=runner, labels=dict(labels or {}))
    if runner == "local":
        problems = check_workflow(workflow, settings, pool_capacity(settings), pool_gpus(settings))
    elif settings.kubernetes is None:
        problems = [f"--runner kubernetes: the pool config {settings.source or '(none)'} has no kubernetes: "
                    "section (docs/KUBERNETES.md)"]
    else:
        try:
            problems = check_volume_mounts(workflow, parse_pool(settings.kubernetes))
        except PoolConfigError as exc:
            problems = [f"{settings.source}: {exc}"]
    if problems:
        raise RunnerError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    credentials = resolve_workflow(workflow, settings.credentials, config=settings.source)
    if runner == "kubernetes" and (pool := cluster_pool(settings.kubernetes)) is not None:
        from osmo_run.kube import remote  # the Kubernetes client only where a cluster is used
        return remote.submit(workflow, loaded.rendered.text, settings=settings, pool=pool,
                             file=os.path.abspath(file) if file else None, store=store, credentials=credentials), None
    del credentials  # the local supervisor resolves them again from the environment it inherits
    if runner == "local":
        check_store(settings, store)
    state = open_state()
    try:
        groups = [(g.name, [(t.name, t.lead) for t in g.tasks]) for g in workflow.groups]
        workflow_id = state.create_workflow(workflow.name, loaded.rendered.text, groups,
                                            file=os.path.abspath(file) if file else None, store=store,
                                            settings=settings.to_json())
        paths = state.paths
        paths.private_dir(paths.log_dir(workflow_id))
        with open(_private_file(paths.spec_file(workflow_id)), "w", encoding="utf-8") as f:
            f.write(loaded.rendered.text)
        env = {**os.environ, "OSMO_STATE_DIR": paths.root, procs.USER_UMASK_ENV: f"{procs.user_umask():03o}"}
        with open(_private_file(paths.supervisor_log(workflow_id), append=True), "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", SUPERVISORS[runner], workflow_id],
                                    env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, umask=PRIVATE_UMASK)
        # (if it is gone already, an impossible start time makes readers see at once that it died)
        who = procs.ProcessIdentity.of(proc.pid) or procs.ProcessIdentity(proc.pid, -1, procs.boot_id())
        state.set_supervisor(workflow_id, who)
        return workflow_id, proc
    finally:
        state.close()


def _private_file(path: str, append: bool = False) -> int:
    """A file descriptor of ``path``, created owner-only, for writing (truncating or appending)."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC),
                   PRIVATE_FILE)


def store_argument(value: str | None) -> str | None:
    """A store given as a relative folder is made absolute (the supervisor may run elsewhere)."""
    if not value or "://" in value:
        return value
    if os.sep in value or value.startswith(".") or os.path.exists(value):
        return os.path.abspath(value)
    return value  # a configured store name


def _cluster_pool():
    """The pool whose workflows' supervisors run in the cluster, or None (also when the pool config cannot
    be read: reading this machine's workflows never depends on it)."""
    try:
        return cluster_pool(load_settings().kubernetes)
    except RunnerError:
        return None


def in_cluster(workflow_id: str):
    """The pool (``kube/remote.py``) when ``workflow_id`` is not on this machine and the pool config's
    workflows run their supervisor in the cluster; else None."""
    pool = _cluster_pool()
    if pool is None:
        return None
    state = open_state()
    try:
        known = state.conn.execute("SELECT 1 FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
    finally:
        state.close()
    return None if known else pool


def wait(workflow_id: str, proc: subprocess.Popen | None = None, timeout: float | None = None) -> dict[str, Any]:
    """Block until the workflow ends; its row."""
    if proc is None and (pool := in_cluster(workflow_id)) is not None:
        from osmo_run.kube import remote
        return remote.wait(workflow_id, pool, timeout)
    state = open_state()
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        while True:
            if proc is not None:
                proc.poll()  # collect our own supervisor, so a dead one is not a zombie
            state.reconcile(workflow_id)
            row = state.workflow(workflow_id)
            if is_terminal(row["status"]):
                return row
            if deadline is not None and time.monotonic() > deadline:
                raise RunnerError(f"workflow {workflow_id} did not finish in {timeout:g} s")
            time.sleep(0.2)
    finally:
        state.close()


def cancel(workflow_id: str) -> dict[str, Any]:
    """Stop the workflow and wait until its supervisor (and so every task) is gone."""
    if (pool := in_cluster(workflow_id)) is not None:
        from osmo_run.kube import remote
        return remote.cancel(workflow_id, pool, load_settings().grace_period)
    state = open_state()
    try:
        state.reconcile(workflow_id)
        row = state.workflow(workflow_id)
        if is_terminal(row["status"]):
            raise RunnerError(f"workflow {workflow_id} has already ended: {row['status']}", CONFLICT,
                              workflow=workflow_id)
        state.request_cancel(workflow_id)
        who = state.supervisor_of(row)
        if who is not None and who.alive():
            procs.signal_pid(who.pid, signal.SIGTERM)
            grace = Settings.from_json(json.loads(row["settings"] or "{}")).grace_period
            deadline = time.monotonic() + CANCEL_WAIT + grace
            while who.alive() and time.monotonic() < deadline:
                time.sleep(0.1)
            if who.alive():
                procs.signal_pid(who.pid, signal.SIGKILL)  # its tasks die with it (PR_SET_PDEATHSIG)
                procs.wait_gone([who.pid], 10)
        row = state.workflow(workflow_id)
        if not is_terminal(row["status"]):  # the supervisor had to be killed, or was gone already
            state.fail_unfinished(workflow_id, WorkflowStatus.FAILED_CANCELED, "canceled")
            row = state.workflow(workflow_id)
        return row
    finally:
        state.close()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _span(row: dict[str, Any], start: str = "started_at", end: str = "ended_at") -> dict[str, Any]:
    out = {"started": iso(row.get(start)), "ended": iso(row.get(end))}
    if row.get(start) is not None:
        out["seconds"] = round((row.get(end) or time.time()) - row[start], 3)
    return out


def _submitted_with(row, key: str, default: Any) -> Any:
    """What ``submit`` kept in a workflow's settings snapshot (its runner, its labels)."""
    try:
        return json.loads(row["settings"] or "{}").get(key, default)
    except (ValueError, AttributeError):
        return default


def _runner(row) -> str:
    return _submitted_with(row, "runner", "local")


def _labels(row) -> dict[str, str]:
    return _submitted_with(row, "labels", {}) or {}


def query(workflow_id: str) -> dict[str, Any]:
    """Everything known about one workflow, as ``query --json`` prints it."""
    if (pool := in_cluster(workflow_id)) is not None:
        from osmo_run.kube import remote
        return remote.query(workflow_id, pool)
    return _query_here(workflow_id)


def query_with_spec(workflow_id: str) -> tuple[dict[str, Any], str]:
    """``query`` and ``spec`` of one workflow, asking once where it is recorded (a page polls this)."""
    if (pool := in_cluster(workflow_id)) is not None:
        from osmo_run.kube import remote
        return remote.query(workflow_id, pool), remote.spec(workflow_id, pool)
    return _query_here(workflow_id), _spec_here(workflow_id)


def _query_here(workflow_id: str) -> dict[str, Any]:
    state = open_state()
    try:
        state.reconcile(workflow_id)
        row = state.workflow(workflow_id)
        attempts: dict[str, list] = {}
        for a in state.attempts(workflow_id):
            attempts.setdefault(a["task"], []).append({
                "attempt": a["attempt"], "status": a["status"], "exit_code": a["exit_code"],
                "command_exit_code": a["command_exit_code"], "reason": a["reason"], "run_dir": a["run_dir"],
                **_span(a), "command": _span(a, "command_started_at", "command_ended_at"),
                "datasets_read": a["datasets_read"], "datasets_written": a["datasets_written"]})
        tasks: dict[str, list] = {}
        for t in state.tasks(workflow_id):
            tries = attempts.get(t["name"], [])
            last = tries[-1] if tries else {}
            tasks.setdefault(t["group_name"], []).append({
                "name": t["name"], "lead": bool(t["lead"]), "status": t["status"], "exit_code": t["exit_code"],
                "reason": t["reason"], "host": t["host"], **_span(t), "attempts": tries,
                "datasets_read": last.get("datasets_read", []), "datasets_written": last.get("datasets_written", []),
                "log": state.paths.task_log(workflow_id, t["name"])})
        groups = [{"name": g["name"], "status": g["status"], "exit_code": g["exit_code"], "reason": g["reason"],
                   "scheduled": iso(g["scheduled_at"]), **_span(g), "tasks": tasks.get(g["name"], [])}
                  for g in state.groups(workflow_id)]
        return {"id": row["id"], "name": row["name"], "status": row["status"], "exit_code": row["exit_code"],
                "reason": row["reason"], "submitted": iso(row["submitted_at"]), **_span(row),
                "file": row["file"], "store": row["store"], "isolation": row["isolation"],
                "runner": _runner(row), "labels": _labels(row),
                "supervisor_pid": row["supervisor_pid"], "state_dir": state.paths.root,
                "workflow_dir": state.paths.workflow_dir(workflow_id), "groups": groups}
    finally:
        state.close()


def listing() -> tuple[list[dict[str, Any]], str | None]:
    """This machine's workflows, then those recorded in the cluster (supervisor: cluster); and why the
    cluster's could not be listed (None when they were, or there is no such pool)."""
    state = open_state()
    try:
        state.reconcile()
        items = [{"id": r["id"], "name": r["name"], "status": r["status"], "exit_code": r["exit_code"],
                  "submitted": iso(r["submitted_at"]), **_span(r), "reason": r["reason"], "runner": _runner(r),
                  "labels": _labels(r)}
                 for r in state.workflows()]
    finally:
        state.close()
    pool = _cluster_pool()
    if pool is None:
        return items, None
    from osmo_run.kube import remote
    try:
        here = {item["id"] for item in items}
        return items + [item for item in remote.listing(pool) if item["id"] not in here], None
    except RunnerError as exc:
        return items, str(exc)


def spec(workflow_id: str) -> str:
    if (pool := in_cluster(workflow_id)) is not None:
        from osmo_run.kube import remote
        return remote.spec(workflow_id, pool)
    return _spec_here(workflow_id)


def _spec_here(workflow_id: str) -> str:
    state = open_state()
    try:
        return state.workflow(workflow_id)["spec"]
    finally:
        state.close()


def log_paths(workflow_id: str, task: str | None) -> dict[str, str]:
    state = open_state()
    try:
        state.workflow(workflow_id)
        names = [t["name"] for t in state.tasks(workflow_id)]
        if task is not None:
            if task not in names:
                near = closest(task, names)
                raise NotFound(f"workflow {workflow_id} has no task {task!r}"
                               + (did_you_mean(near) if near else f" (tasks: {', '.join(names)})"),
                               workflow=workflow_id, task=task, suggestions=near or None)
            names = [task]
        return {name: state.paths.task_log(workflow_id, name) for name in names}
    finally:
        state.close()


def log_secrets(workflow_id: str) -> tuple[str, ...]:
    """The credential values of the workflow's tasks that can be resolved now (the pool config's
    sources, this environment), for ``osmo workflow logs`` to mask. Logs were masked as they were
    written; this masks again whatever it can, and skips what it cannot resolve."""
    state = open_state()
    try:
        row = state.workflow(workflow_id)
    finally:
        state.close()
    settings = Settings.from_json(json.loads(row["settings"] or "{}"))
    if not settings.credentials:
        return ()
    try:
        workflow = load_rendered(row["spec"], file=row["file"])
    except SpecError:
        return ()
    values: list[str] = []
    for task in (t for g in workflow.groups for t in g.tasks if t.credentials):
        try:
            values.extend(resolve_task(task, settings.credentials, config=settings.source, environ=os.environ).secrets)
        except CredentialError:
            continue
    return masked_values(values)


def is_finished(workflow_id: str) -> bool:
    state = open_state()
    try:
        state.reconcile(workflow_id)
        return is_terminal(state.workflow(workflow_id)["status"])
    finally:
        state.close()
