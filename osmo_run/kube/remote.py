"""What the ``osmo workflow`` commands do for workflows whose supervisor runs in the cluster.

Such a workflow has no row in this machine's state database: its record in the cluster (``records.py``)
is its state, so any machine with the kubeconfig and the same pool config (namespace, context) sees it
the same way. ``submit`` creates the record and the supervisor pod (``incluster.launch``) and returns;
``query``/``listing``/``wait`` read the record; ``cancel`` asks through it and waits for the supervisor
to end the workflow; ``logs`` gives each task's published log (a running command's lines included, as
the supervisor copies them in: ``livelog.py``).

A supervisor pod that ended (or vanished) while its record still says the workflow runs is reported as
FAILED with the pod's reason; the record itself is only ever written by its supervisor.
"""

from __future__ import annotations

import time
from typing import Any

from osmo_run.kube.incluster import launch, supervisor_name
from osmo_run.kube.pool import KubePool
from osmo_run.kube.records import ClusterRecords, Record, RecordError
from osmo_run.kube.supervisor import api_client
from osmo_run.local.errors import CONFLICT, NotFound, RunnerError, closest, did_you_mean
from osmo_run.local.settings import Settings
from osmo_run.local.statuses import is_terminal

START_GRACE = 120.0  # seconds a new record may have no supervisor pod yet (image pull, scheduling)
CANCEL_WAIT = 60.0  # seconds, on top of the grace period, a cancel waits for the supervisor


def _records(pool: KubePool) -> ClusterRecords:
    return ClusterRecords(api_client(pool.context), pool.namespace)


def _translate(exc: RecordError) -> RunnerError:
    return RunnerError(f"the cluster: {exc}")


def submit(workflow, spec_text: str, *, settings: Settings, pool: KubePool, file: str | None, store: str | None,
           credentials) -> str:
    """Record the workflow in the cluster and start its supervisor there; returns its id."""
    from osmo_run.local.service import iso

    groups = [(g.name, [(t.name, t.lead) for t in g.tasks]) for g in workflow.groups]
    try:
        records = _records(pool)
        workflow_id = records.create(workflow.name, spec_text, settings.to_json(), groups, file=file, store=store,
                                     submitted=iso(time.time()))
    except RecordError as exc:
        raise _translate(exc) from None
    launch(records.core.api_client, pool, workflow_id, credentials)
    return workflow_id


def _find(workflow_id: str, pool: KubePool) -> tuple[ClusterRecords, Record]:
    try:
        records = _records(pool)
        record = records.get(workflow_id)
        if record is None:
            ids = [r.id for r in records.all()]
    except RecordError as exc:
        raise _translate(exc) from None
    if record is None:
        near = closest(workflow_id, ids)
        raise NotFound(f"no workflow {workflow_id!r} on this machine or in namespace {pool.namespace!r} of the "
                       "cluster" + (did_you_mean(near) if near else " (see 'osmo workflow list')"),
                       workflow=workflow_id, suggestions=near or None)
    return records, record


def _supervisor_problem(records: ClusterRecords, record: Record) -> str | None:
    """Why the workflow cannot be running although its record says so, or None."""
    from kubernetes.client.rest import ApiException

    try:
        pod = records.core.read_namespaced_pod(supervisor_name(record.id), records.namespace, _request_timeout=30)
    except ApiException as exc:
        if exc.status == 404 and (record.cancel_requested or time.time() - record.submitted_at > START_GRACE):
            return "its supervisor pod is gone"
        return None
    except Exception:  # noqa: BLE001 - cannot tell: say nothing
        return None
    if pod.status.phase in ("Failed", "Succeeded"):
        for status in pod.status.container_statuses or []:
            term = status.state.terminated if status.state else None
            if term is not None:
                return f"its supervisor pod ended ({term.reason or 'exit'} {term.exit_code})"
        return f"its supervisor pod ended ({pod.status.phase})"
    return None


def _state(records: ClusterRecords, record: Record) -> dict[str, Any]:
    state = dict(record.state)
    if not is_terminal(state.get("status", "PENDING")):
        problem = _supervisor_problem(records, record)
        if problem and record.cancel_requested:
            state.update(status="FAILED_CANCELED", reason="canceled")
        elif problem:
            state.update(status="FAILED", reason=f"{problem}; see kubectl logs {supervisor_name(record.id)} "
                                                 f"-n {records.namespace}")
    state["runner"] = {"supervisor": "cluster", "namespace": records.namespace, "pod": supervisor_name(record.id)}
    state["labels"] = (record.settings or {}).get("labels") or {}
    return state


def query(workflow_id: str, pool: KubePool) -> dict[str, Any]:
    records, record = _find(workflow_id, pool)
    return _state(records, record)


def spec(workflow_id: str, pool: KubePool) -> str:
    return _find(workflow_id, pool)[1].spec


def record(workflow_id: str, pool: KubePool) -> Record:
    """The workflow's record (its spec, settings, file and store: ``exec --debug`` remakes a task from them)."""
    return _find(workflow_id, pool)[1]


def listing(pool: KubePool) -> list[dict[str, Any]]:
    try:
        records = _records(pool)
        found = records.all()
    except RecordError as exc:
        raise _translate(exc) from None
    keys = ("id", "name", "status", "exit_code", "submitted", "started", "ended", "seconds", "reason", "labels")
    return [{k: state.get(k) for k in keys} for state in (_state(records, r) for r in found)]


def wait(workflow_id: str, pool: KubePool, timeout: float | None = None) -> dict[str, Any]:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        state = query(workflow_id, pool)
        if is_terminal(state["status"]):
            return state
        if deadline is not None and time.monotonic() > deadline:
            raise RunnerError(f"workflow {workflow_id} did not finish in {timeout:g} s")
        time.sleep(1.0)


def cancel(workflow_id: str, pool: KubePool, grace: float) -> dict[str, Any]:
    records, record = _find(workflow_id, pool)
    state = _state(records, record)
    if is_terminal(state["status"]):
        raise RunnerError(f"workflow {workflow_id} has already ended: {state['status']}", CONFLICT,
                          workflow=workflow_id)
    try:
        records.request_cancel(workflow_id)
    except RecordError as exc:
        raise _translate(exc) from None
    _end_unstarted_supervisor(records, workflow_id)
    return wait(workflow_id, pool, CANCEL_WAIT + grace)


def _end_unstarted_supervisor(records: ClusterRecords, workflow_id: str) -> None:
    """A supervisor pod that has not started yet (Pending: not scheduled, image pulling) never will read the
    cancel request: delete it and its credentials; the workflow then reads FAILED_CANCELED (nothing ran)."""
    from kubernetes.client.rest import ApiException

    name = supervisor_name(workflow_id)
    try:
        pod = records.core.read_namespaced_pod(name, records.namespace, _request_timeout=30)
        if pod.status.phase != "Pending" or any(
                s.state and s.state.running for s in (pod.status.container_statuses or [])):
            return
        records.core.delete_namespaced_pod(name, records.namespace, grace_period_seconds=0, _request_timeout=30)
        records.core.delete_namespaced_secret(name, records.namespace, _request_timeout=30)
    except ApiException:
        return


def logs(workflow_id: str, pool: KubePool, task: str | None) -> dict[str, str]:
    """Each task's published log (or only ``task``'s)."""
    records, record = _find(workflow_id, pool)
    tasks = [t["name"] for g in record.state.get("groups", []) for t in g.get("tasks", [])]
    if task is not None and task not in tasks:
        near = closest(task, tasks)
        raise NotFound(f"workflow {workflow_id} has no task {task!r}"
                       + (did_you_mean(near) if near else f" (tasks: {', '.join(tasks)})"),
                       workflow=workflow_id, task=task, suggestions=near or None)
    try:
        published = records.logs(workflow_id)
    except RecordError as exc:
        raise _translate(exc) from None
    return {name: published.get(name, "") for name in tasks if task is None or name == task}
