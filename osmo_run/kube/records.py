"""A workflow's record in the cluster, for workflows whose supervisor runs there (``supervisor: cluster``).

One ConfigMap per workflow, ``osmo-wf-<id>`` in the pool's namespace, is the workflow's state for every
machine with the kubeconfig: ``submit`` creates it (allocating the id, ``<name>-<n>``, unique in the
namespace: a name taken by another submitter makes it try the next number), the supervisor in the
cluster publishes into it what ``osmo workflow query --json`` prints (key ``state``), and each task's
log goes into a ConfigMap of its own (``osmo-wf-<id>-log-<task>``, the last ``LOG_LIMIT`` bytes).
``cancel`` sets the annotation ``osmo.io/cancel-requested``; the supervisor polls it.

Guarantees: ids never collide (creation is the allocation: the API server refuses a second object of the
same name); a record is written by one supervisor only; readers never write it except for the cancel
annotation. Records carry the label ``osmo.record`` (never ``osmo.workflow``), so deleting a workflow's
objects at its end leaves its record; they stay until deleted (``kubectl delete configmap -l
osmo.record``). Nothing here starts anything: ``incluster.py`` does.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.kube.objects import MANAGED_BY, dns_label, label_value

LABEL_RECORD = "osmo.record"  # workflow | log
LABEL_OF = "osmo.record-of"  # the workflow id, as a label value
LABEL_NAME = "osmo.record-name"  # the workflow's name, as a label value
CANCEL = "osmo.io/cancel-requested"
LOG_LIMIT = 900 * 1024  # a ConfigMap holds at most 1 MiB
ID_TRIES = 50
TIMEOUT = 30  # seconds per API request


class RecordError(Exception):
    """The cluster refused or could not be reached; the message says which request."""


@dataclass
class Record:
    id: str
    name: str
    spec: str
    settings: dict[str, Any]
    file: str | None
    store: str | None
    submitted_at: float
    state: dict[str, Any]
    cancel_requested: bool


def record_name(workflow_id: str) -> str:
    return dns_label("osmo-wf", workflow_id, limit=253)


def log_name(workflow_id: str, task: str) -> str:
    return dns_label("osmo-wf", workflow_id, "log", task, limit=253)


def initial_state(workflow_id: str, name: str, groups: list[tuple[str, list[tuple[str, bool]]]],
                  submitted: str, file: str | None, store: str | None) -> dict[str, Any]:
    """The state a record starts with (PENDING, every group WAITING), in ``query --json``'s shape."""
    task = {"status": "WAITING", "exit_code": None, "reason": None, "host": None, "started": None,
            "ended": None, "attempts": [], "datasets_read": [], "datasets_written": [], "log": None}
    return {"id": workflow_id, "name": name, "status": "PENDING", "exit_code": None, "reason": None,
            "submitted": submitted, "started": None, "ended": None, "file": file, "store": store,
            "isolation": None, "supervisor_pid": None, "state_dir": None, "workflow_dir": None,
            "groups": [{"name": g, "status": "WAITING", "exit_code": None, "reason": None, "scheduled": None,
                        "started": None, "ended": None,
                        "tasks": [{"name": t, "lead": lead, **task} for t, lead in tasks]} for g, tasks in groups]}


class ClusterRecords:
    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.core = client.CoreV1Api(api)
        self.namespace = namespace

    def _call(self, what: str, call, *args, **kwargs):
        try:
            return call(*args, **kwargs, _request_timeout=TIMEOUT)
        except ApiException as exc:
            raise RecordError(f"{what} in namespace {self.namespace!r}: {exc.status} {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001 - urllib3/ssl/socket errors: the cluster cannot be reached
            raise RecordError(f"{what} in namespace {self.namespace!r}: {type(exc).__name__}: {exc}") from None

    # -- creating ----------------------------------------------------------------------------------
    def create(self, name: str, spec: str, settings: dict[str, Any], groups, *, file: str | None,
               store: str | None, submitted: str) -> str:
        """Create the record of a new workflow; returns its id (the next free ``<name>-<n>``)."""
        taken = self._call("list workflow records", self.core.list_namespaced_config_map, self.namespace,
                           label_selector=f"{LABEL_RECORD}=workflow,{LABEL_NAME}={label_value(name)}")
        seq = 1 + max((_seq(item.data or {}) for item in taken.items), default=0)
        for n in range(seq, seq + ID_TRIES):
            workflow_id = f"{name}-{n}"
            body = client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=record_name(workflow_id), labels={
                    **MANAGED_BY, LABEL_RECORD: "workflow", LABEL_OF: label_value(workflow_id),
                    LABEL_NAME: label_value(name)}),
                data={"id": workflow_id, "name": name, "seq": str(n), "spec": spec, "settings": json.dumps(settings),
                      "file": file or "", "store": store or "", "submitted_at": repr(time.time()),
                      "state": json.dumps(initial_state(workflow_id, name, groups, submitted, file, store))})
            try:
                self.core.create_namespaced_config_map(self.namespace, body, _request_timeout=TIMEOUT)
                return workflow_id
            except ApiException as exc:
                if exc.status != 409:
                    raise RecordError(f"create the workflow record in namespace {self.namespace!r}: "
                                      f"{exc.status} {exc.reason}") from None
        raise RecordError(f"no free workflow number for {name!r} after {ID_TRIES} tries")

    # -- reading -----------------------------------------------------------------------------------
    def get(self, workflow_id: str) -> Record | None:
        try:
            item = self.core.read_namespaced_config_map(record_name(workflow_id), self.namespace,
                                                        _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RecordError(f"read workflow record {workflow_id} in namespace {self.namespace!r}: "
                              f"{exc.status} {exc.reason}") from None
        except Exception as exc:  # noqa: BLE001
            raise RecordError(f"read workflow record {workflow_id}: {type(exc).__name__}: {exc}") from None
        return _record(item)

    def all(self) -> list[Record]:
        found = self._call("list workflow records", self.core.list_namespaced_config_map, self.namespace,
                           label_selector=f"{LABEL_RECORD}=workflow")
        return sorted((_record(item) for item in found.items), key=lambda r: (r.submitted_at, r.id))

    def logs(self, workflow_id: str) -> dict[str, str]:
        """Each task's published log, by task name."""
        found = self._call("list task logs", self.core.list_namespaced_config_map, self.namespace,
                           label_selector=f"{LABEL_RECORD}=log,{LABEL_OF}={label_value(workflow_id)}")
        return {(item.data or {}).get("task", ""): (item.data or {}).get("log", "") for item in found.items}

    # -- writing -----------------------------------------------------------------------------------
    def publish_state(self, workflow_id: str, state: dict[str, Any]) -> None:
        self._call("publish the workflow's state", self.core.patch_namespaced_config_map, record_name(workflow_id),
                   self.namespace, {"data": {"state": json.dumps(state)}})

    def publish_log(self, workflow_id: str, task: str, text: str) -> None:
        """Store (create or replace) a task's log; only its last ``LOG_LIMIT`` bytes are kept."""
        data = text.encode("utf-8")
        if len(data) > LOG_LIMIT:
            cut = data[-LOG_LIMIT:].decode("utf-8", errors="ignore")
            text = f"[osmo] (the first {len(data) - LOG_LIMIT} bytes of this log are not kept in the cluster)\n{cut}"
        body = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=log_name(workflow_id, task), labels={
                **MANAGED_BY, LABEL_RECORD: "log", LABEL_OF: label_value(workflow_id)}),
            data={"task": task, "log": text})
        try:
            self.core.replace_namespaced_config_map(body.metadata.name, self.namespace, body, _request_timeout=TIMEOUT)
        except ApiException as exc:
            if exc.status != 404:
                raise RecordError(f"publish the log of task {task}: {exc.status} {exc.reason}") from None
            self._call(f"publish the log of task {task}", self.core.create_namespaced_config_map, self.namespace, body)

    def request_cancel(self, workflow_id: str) -> None:
        self._call(f"request the cancel of {workflow_id}", self.core.patch_namespaced_config_map,
                   record_name(workflow_id), self.namespace, {"metadata": {"annotations": {CANCEL: "true"}}})


def _seq(data: dict[str, str]) -> int:
    try:
        return int(data.get("seq", "0"))
    except ValueError:
        return 0


def _record(item) -> Record:
    data = item.data or {}
    annotations = item.metadata.annotations or {}
    try:
        state = json.loads(data.get("state") or "{}")
        settings = json.loads(data.get("settings") or "{}")
        submitted_at = float(data.get("submitted_at") or 0)
    except ValueError as exc:
        raise RecordError(f"workflow record {item.metadata.name} is damaged: {exc}") from None
    return Record(id=data.get("id", ""), name=data.get("name", ""), spec=data.get("spec", ""), settings=settings,
                  file=data.get("file") or None, store=data.get("store") or None, submitted_at=submitted_at,
                  state=state, cancel_requested=annotations.get(CANCEL) == "true")
