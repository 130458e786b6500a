"""The Kubernetes objects of one workflow group: pure functions from the spec and the pool to dicts.

Per group: a PodGroup for the pool's gang scheduler (none for the default scheduler), a headless
Service so ``{{host:TASK}}`` (``<task>.<service>``) resolves, and per task a Secret (its sidecar
contract ``task.json`` and its ``files:``) and a Pod:

- init container ``osmo-download`` (the sidecar image): copies the contract into the run directory
  (an emptyDir at ``/osmo/run``) and runs ``osmo-sidecar download``: inputs land in
  ``/osmo/run/data/input/N``;
- container ``task`` (the task's image): the user's command under a small POSIX-shell wrapper
  (``WRAPPER``) that waits for ``/osmo/run/status/go`` (the group's barrier: the runner creates it
  through ``pods/exec``, ``podexec.py``), runs the command, passes SIGTERM on to every process of the
  container, and writes the command's exit code to ``/osmo/run/status/exit_code``; the run
  directory's ``data`` is mounted at ``/osmo/data``;
- container ``osmo-sidecar``: ``osmo-sidecar upload --wait`` waits for that file (copying the task's
  ``checkpoint:`` folders meanwhile), uploads ``/osmo/data/output`` and exits with the data exit code of
  docs/SIDECAR.md.

Both sidecar containers write their status (code, message, the dataset versions read or written) as
their termination message (``--status-message``), which the runner reads from the pod's status. The
task's credentials are keys of its Secret (``cred-env-VAR``, ``cred-file-N``), given to the task
container as ``secretKeyRef`` variables or as files of a Secret volume (mode 0400); a checkpoint folder
outside ``/osmo/data`` is an emptyDir shared with the sidecar container (``/osmo/checkpoint/N``); host
folders (``volumeMounts``, allowed by the pool: ``volumes.py``) are hostPath volumes.

``restartPolicy: Never``; nothing needs Kubernetes newer than 1.20. Every object carries the labels
``osmo.workflow``, ``osmo.group`` and ``osmo.task`` (``LABEL_*``), so a workflow's objects can be
listed and deleted by label. Nothing here talks to a cluster.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from osmo_run.kube.pool import KubePool

LABEL_WORKFLOW = "osmo.workflow"
LABEL_GROUP = "osmo.group"
LABEL_TASK = "osmo.task"
LABEL_ATTEMPT = "osmo.attempt"
MANAGED_BY = {"app.kubernetes.io/managed-by": "osmo"}
RUN_DIR = "/osmo/run"
DATA_DIR = "/osmo/data"
CONTRACT_DIR = "/osmo/contract"
CHECKPOINT_DIR = "/osmo/checkpoint"  # in the sidecar container: /osmo/checkpoint/N
TERMINATION_LOG = "/dev/termination-log"
CREDENTIAL_PREFIX = "cred-"
CREDENTIAL_FILE_MODE = 0o400
EXIT_CODE = f"{RUN_DIR}/status/exit_code"
GO_FILE = f"{RUN_DIR}/status/go"
TASK_CONTAINER = "task"
SIDECAR_CONTAINER = "osmo-sidecar"
INIT_CONTAINER = "osmo-download"

# PID 1 of the task container. Waits for the go file (SIGTERM before it: exit 143), runs the task's argv
# ("$@") in the background so that a SIGTERM (pod deletion) reaches it at once (a shell waiting for a
# foreground command would run its trap only afterwards, and PID 1 ignores untrapped signals), then records
# the exit code atomically for the sidecar container. It records it ignoring SIGTERM and SIGINT, which its
# mkdir and mv inherit: the runner stops a task by signalling every process of the container but PID 1
# (podexec.py), and a command that ended as the signal came must not lose its exit code with a killed mv
# (the sidecar would wait for it forever).
WRAPPER = ('trap \'stopping=1; kill -TERM -1 2>/dev/null\' TERM INT; '
           f'while [ ! -e {GO_FILE} ]; do [ -z "$stopping" ] || exit 143; sleep 0.1; done; '
           '"$@" & pid=$!; '
           'while :; do wait "$pid"; code=$?; kill -0 "$pid" 2>/dev/null || break; done; '
           'trap "" TERM INT; '
           f'mkdir -p {RUN_DIR}/status; printf "%s\\n" "$code" > {RUN_DIR}/status/.exit_code; '
           f'mv -f {RUN_DIR}/status/.exit_code {EXIT_CODE}; exit "$code"')

# scheduler -> (PodGroup apiVersion, default schedulerName, where the pod names its group)
SCHEDULERS = {
    "kai": ("scheduling.run.ai/v2alpha2", "kai-scheduler", ("annotation", "pod-group-name")),
    "volcano": ("scheduling.volcano.sh/v1beta1", "volcano", ("annotation", "scheduling.k8s.io/group-name")),
    "coscheduling": ("scheduling.x-k8s.io/v1alpha1", "scheduler-plugins-scheduler",
                     ("label", "scheduling.x-k8s.io/pod-group")),
    "none": (None, None, None),
}
KAI_QUEUE_LABEL = "kai.scheduler/queue"


def dns_label(*parts: str, limit: int = 63) -> str:
    """``parts`` joined by ``-`` as an RFC 1123 label; too long: cut, plus a hash of the whole."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-") or "x"
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    return f"{text[:limit - 9].rstrip('-')}-{digest}"


def label_value(text: str) -> str:
    """A label value: at most 63 of ``[A-Za-z0-9_.-]``, starting and ending alphanumeric."""
    value = re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-_.")
    return value if len(value) <= 63 else dns_label(value)


@dataclass
class TaskPod:
    """What the runner decided for one task attempt; ``argv`` and ``env`` have their tokens substituted."""

    name: str  # the spec's task name
    image: str
    argv: list[str]
    env: dict[str, str]
    contract_json: str
    attempt: int = 0
    files: list[tuple[str, bytes]] = field(default_factory=list)  # (absolute path, contents)
    cpu: float | None = None
    memory: int | None = None  # bytes
    gpu: int | None = None
    storage: int | None = None  # bytes of ephemeral storage
    platform: str | None = None
    privileged: bool = False
    host_network: bool = False
    credential_env: dict[str, str] = field(default_factory=dict)  # variable -> value (a Secret key each)
    credential_files: list[tuple[str, str]] = field(default_factory=list)  # (absolute path, value)
    checkpoint_dirs: list[str] = field(default_factory=list)  # task-side folders shared with the sidecar
    host_mounts: list[tuple[str, str]] = field(default_factory=list)  # (host path, container path)


def checkpoint_source(path: str, shared: list[str]) -> str:
    """Where the sidecar container sees the task's checkpoint folder ``path`` (absolute, normalised): below
    the run directory (relative) when it is in ``/osmo/data``, else in an emptyDir shared by both
    containers (``path`` is appended to ``shared``)."""
    if path == DATA_DIR or path.startswith(DATA_DIR + "/"):
        return "data" + path[len(DATA_DIR):]
    if path not in shared:
        shared.append(path)
    return f"{CHECKPOINT_DIR}/{shared.index(path)}"


def credential_values(secret_data: dict[str, str] | None) -> list[str]:
    """The credential values of a task Secret's ``data`` (base64, as the API returns it)."""
    return [base64.b64decode(v).decode("utf-8", errors="replace") for k, v in (secret_data or {}).items()
            if k.startswith(CREDENTIAL_PREFIX)]


def names(workflow_id: str, group: str) -> dict[str, str]:
    base = dns_label(workflow_id, group)
    return {"service": base, "podgroup": base}


def pod_name(workflow_id: str, task: str, attempt: int) -> str:
    return dns_label(workflow_id, task, str(attempt), limit=63)


def host_name(task: str) -> str:
    """The pod's hostname: ``{{host:TASK}}`` is ``<host_name>.<service>``."""
    return dns_label(task)


def labels(workflow_id: str, group: str, task: str | None = None, attempt: int | None = None) -> dict[str, str]:
    out = {**MANAGED_BY, LABEL_WORKFLOW: label_value(workflow_id), LABEL_GROUP: label_value(group)}
    if task is not None:
        out[LABEL_TASK] = label_value(task)
    if attempt is not None:
        out[LABEL_ATTEMPT] = str(attempt)
    return out


def _meta(name: str, namespace: str, lbls: dict[str, str], annotations: dict[str, str] | None = None) -> dict:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(lbls)}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def pod_group(workflow_id: str, group: str, size: int, pool: KubePool,
              queue_timeout: float | None = None) -> dict | None:
    """The gang: ``minMember`` = the group's size; ``None`` for the default scheduler (no gang)."""
    api_version, _, _ = SCHEDULERS[pool.scheduler]
    if api_version is None:
        return None
    spec: dict[str, Any] = {"minMember": size}
    if pool.queue and pool.scheduler in ("kai", "volcano"):
        spec["queue"] = pool.queue
    if pool.scheduler == "coscheduling" and queue_timeout:
        spec["scheduleTimeoutSeconds"] = max(1, int(queue_timeout))
    return {"apiVersion": api_version, "kind": "PodGroup",
            "metadata": _meta(names(workflow_id, group)["podgroup"], pool.namespace, labels(workflow_id, group)),
            "spec": spec}


def headless_service(workflow_id: str, group: str, pool: KubePool) -> dict:
    """Gives each pod of the group the DNS name ``<hostname>.<service>`` (no ports, no proxy)."""
    lbls = labels(workflow_id, group)
    selector = {LABEL_WORKFLOW: lbls[LABEL_WORKFLOW], LABEL_GROUP: lbls[LABEL_GROUP]}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(names(workflow_id, group)["service"], pool.namespace, lbls),
            "spec": {"clusterIP": "None", "selector": selector, "publishNotReadyAddresses": True}}


def task_secret(workflow_id: str, group: str, task: TaskPod, pool: KubePool) -> dict:
    data = {"task.json": base64.b64encode(task.contract_json.encode()).decode()}
    for i, (_, content) in enumerate(task.files):
        data[f"file-{i}"] = base64.b64encode(content).decode()
    for variable, value in task.credential_env.items():
        data[f"{CREDENTIAL_PREFIX}env-{variable}"] = base64.b64encode(value.encode()).decode()
    for i, (_, value) in enumerate(task.credential_files):
        data[f"{CREDENTIAL_PREFIX}file-{i}"] = base64.b64encode(value.encode()).decode()
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": _meta(pod_name(workflow_id, task.name, task.attempt), pool.namespace,
                              labels(workflow_id, group, task.name, task.attempt)),
            "data": data}


def _resources(task: TaskPod, pool: KubePool) -> dict:
    """Requests and limits; the pool's ``request_fraction`` scales the cpu and memory requests only."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    fraction = pool.request_fraction
    if task.cpu:
        requests["cpu"] = f"{max(1, int(round(task.cpu * fraction.get('cpu', 1.0) * 1000)))}m"
    if task.memory:
        limits["memory"] = str(task.memory)
        requests["memory"] = str(max(1, int(task.memory * fraction.get("memory", 1.0))))
    if task.storage:
        requests["ephemeral-storage"] = limits["ephemeral-storage"] = str(task.storage)
    if task.gpu:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(task.gpu)
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def task_pod(workflow_id: str, group: str, task: TaskPod, pool: KubePool) -> dict:
    name = secret = pod_name(workflow_id, task.name, task.attempt)
    lbls = labels(workflow_id, group, task.name, task.attempt)
    annotations: dict[str, str] = {}
    _, scheduler_name, link = SCHEDULERS[pool.scheduler]
    pg = names(workflow_id, group)["podgroup"]
    if link is not None:
        (annotations if link[0] == "annotation" else lbls)[link[1]] = pg
    if pool.scheduler == "kai":
        lbls[KAI_QUEUE_LABEL] = pool.queue or "default"
    store_env = [{"secretRef": {"name": pool.store_secret}}] if pool.store_secret else []
    run_mount = {"name": "osmo-run", "mountPath": RUN_DIR}
    init = {"name": INIT_CONTAINER, "image": pool.sidecar_image,
            # the folders the task writes (its outputs, its exit code) are open to any user it runs as
            "command": ["/bin/sh", "-c", f"mkdir -p {RUN_DIR}/status {RUN_DIR}/data/output"
                        f" && chmod 0777 {RUN_DIR}/status {RUN_DIR}/data {RUN_DIR}/data/output"
                        f" && cp {CONTRACT_DIR}/task.json {RUN_DIR}/task.json"
                        f" && exec osmo-sidecar download --run-dir {RUN_DIR} --status-message {TERMINATION_LOG}"],
            "volumeMounts": [run_mount, {"name": "osmo-contract", "mountPath": CONTRACT_DIR, "readOnly": True}]}
    sidecar = {"name": SIDECAR_CONTAINER, "image": pool.sidecar_image,
               "command": ["osmo-sidecar", "upload", "--run-dir", RUN_DIR, "--wait",
                           "--status-message", TERMINATION_LOG],
               "volumeMounts": [run_mount] + [{"name": f"osmo-checkpoint-{i}", "mountPath": f"{CHECKPOINT_DIR}/{i}",
                                               "readOnly": True} for i in range(len(task.checkpoint_dirs))]}
    for c in (init, sidecar):
        if store_env:
            c["envFrom"] = store_env
    main: dict[str, Any] = {
        "name": TASK_CONTAINER, "image": task.image,
        "command": ["/bin/sh", "-c", WRAPPER, "osmo-task", *task.argv],
        "env": [{"name": k, "value": v} for k, v in sorted(task.env.items())]
        + [{"name": k, "valueFrom": {"secretKeyRef": {"name": secret, "key": f"{CREDENTIAL_PREFIX}env-{k}"}}}
           for k in sorted(task.credential_env)],
        "volumeMounts": [run_mount, {"name": "osmo-run", "mountPath": DATA_DIR, "subPath": "data"}]
        + [{"name": "osmo-files", "mountPath": path, "subPath": f"file-{i}", "readOnly": True}
           for i, (path, _) in enumerate(task.files)]
        + [{"name": "osmo-credentials", "mountPath": path, "subPath": f"{CREDENTIAL_PREFIX}file-{i}", "readOnly": True}
           for i, (path, _) in enumerate(task.credential_files)]
        + [{"name": f"osmo-checkpoint-{i}", "mountPath": path} for i, path in enumerate(task.checkpoint_dirs)]
        + [{"name": f"osmo-host-{i}", "mountPath": container} for i, (_, container) in enumerate(task.host_mounts)],
    }
    for c in (init, main, sidecar):  # a failing container's last log lines become its termination message
        c["terminationMessagePolicy"] = "FallbackToLogsOnError"
        if pool.image_pull_policy:
            c["imagePullPolicy"] = pool.image_pull_policy
    resources = _resources(task, pool)
    if resources:
        main["resources"] = resources
    if task.privileged:
        main["securityContext"] = {"privileged": True}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "hostname": host_name(task.name), "subdomain": names(workflow_id, group)["service"],
        "initContainers": [init], "containers": [main, sidecar],
        "volumes": [{"name": "osmo-run", "emptyDir": {}},
                    {"name": "osmo-contract",
                     "secret": {"secretName": secret, "items": [{"key": "task.json", "path": "task.json"}]}},
                    {"name": "osmo-files", "secret": {
                        "secretName": secret, "defaultMode": 0o755,  # only the files: (never the credentials)
                        "items": [{"key": f"file-{i}", "path": f"file-{i}"} for i in range(len(task.files))]
                        or [{"key": "task.json", "path": "task.json"}]}}],
    }
    if task.credential_files:
        spec["volumes"].append({"name": "osmo-credentials", "secret": {
            "secretName": secret, "defaultMode": CREDENTIAL_FILE_MODE,
            "items": [{"key": f"{CREDENTIAL_PREFIX}file-{i}", "path": f"{CREDENTIAL_PREFIX}file-{i}"}
                      for i in range(len(task.credential_files))]}})
    spec["volumes"] += [{"name": f"osmo-checkpoint-{i}", "emptyDir": {}} for i in range(len(task.checkpoint_dirs))]
    spec["volumes"] += [{"name": f"osmo-host-{i}", "hostPath": {"path": host}}
                        for i, (host, _) in enumerate(task.host_mounts)]
    if scheduler_name:
        spec["schedulerName"] = pool.scheduler_name or scheduler_name
    if pool.service_account:
        spec["serviceAccountName"] = pool.service_account
    if task.host_network:
        spec["hostNetwork"] = True
        spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    placement = pool.platforms.get(task.platform) if task.platform else None
    if placement is not None:
        if placement.node_selector:
            spec["nodeSelector"] = dict(placement.node_selector)
        if placement.tolerations:
            spec["tolerations"] = [dict(t) for t in placement.tolerations]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": _meta(name, pool.namespace, lbls, annotations),
            "spec": spec}


def group_objects(workflow_id: str, group: str, tasks: list[TaskPod], pool: KubePool,
                  queue_timeout: float | None = None) -> list[dict]:
    """Everything to create for one group, in creation order (the gang and the Service first)."""
    out = [o for o in (pod_group(workflow_id, group, len(tasks), pool, queue_timeout),
                       headless_service(workflow_id, group, pool)) if o is not None]
    for t in tasks:
        out += [task_secret(workflow_id, group, t, pool), task_pod(workflow_id, group, t, pool)]
    return out
