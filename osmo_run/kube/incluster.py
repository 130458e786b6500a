"""A workflow's supervisor in the cluster (the pool's ``supervisor: cluster``): started by ``submit``, it
runs on without the submitting machine.

``launch`` (on the submitting machine, after ``records.create``): a Secret with the task credentials
resolved there (the only values the supervisor cannot resolve itself) and a Pod running
``python -m osmo_run.kube.incluster ID`` in the pool's sidecar image (which holds all of osmo) under
the pool's ``supervisor_service_account`` (RBAC in docs/KUBERNETES.md). Both carry the record labels
(``records.LABEL_RECORD=supervisor``), not ``osmo.workflow``: the workflow's end does not delete them.

``main`` (in the pod): seeds a private state database (an emptyDir) from the record, then runs the
Kubernetes supervisor's loop unchanged (``InClusterSupervisor``: the same code a submitting machine
runs with ``supervisor: local``), publishing the workflow's state (``query --json``'s shape) and each
task's log into the record about once a second and at the end, and taking a cancel request from the
record's annotation. At the end it deletes its credentials Secret; its pod stays (Succeeded, its log
is the supervisor's log) until the record is deleted.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
from typing import Any

from osmo_run.kube import supervisor as kube_supervisor
from osmo_run.kube.objects import MANAGED_BY, dns_label, label_value
from osmo_run.kube.pool import KubePool
from osmo_run.kube.records import LABEL_OF, LABEL_RECORD, ClusterRecords, RecordError
from osmo_run.local import supervisor as local
from osmo_run.local.credentials import CredentialFile, TaskCredentials
from osmo_run.local.errors import RunnerError
from osmo_run.local.paths import StatePaths
from osmo_run.local.state import StateStore
from osmo_run.local.settings import Settings
from osmo_run.spec import load_rendered

STATE_DIR = "/osmo/state"
CREDENTIALS_DIR = "/osmo/credentials"
CREDENTIALS_KEY = "credentials.json"
TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
IMAGE_UID = 10001  # the sidecar image's user (sidecar/Dockerfile)
PUBLISH_EVERY = 1.0  # seconds between two publications of a running workflow's state
CANCEL_CHECK_EVERY = 1.0


def supervisor_name(workflow_id: str) -> str:
    return dns_label("osmo-wf", workflow_id, "supervisor")


def credentials_to_json(credentials: dict[str, TaskCredentials]) -> str:
    return json.dumps({task: {"env": c.env, "files": [[f.path, f.value] for f in c.files],
                              "secrets": list(c.secrets), "notes": list(c.notes)}
                       for task, c in credentials.items()})


def credentials_from_json(text: str) -> dict[str, TaskCredentials]:
    raw = json.loads(text or "{}")
    return {task: TaskCredentials(dict(c["env"]), tuple(CredentialFile(p, v) for p, v in c["files"]),
                                  tuple(c["secrets"]), tuple(c["notes"])) for task, c in raw.items()}


def supervisor_objects(pool: KubePool, workflow_id: str, credentials: dict[str, TaskCredentials]) -> list[dict]:
    """The Secret and the Pod of a workflow's supervisor (pure: nothing talks to a cluster)."""
    name = supervisor_name(workflow_id)
    labels = {**MANAGED_BY, LABEL_RECORD: "supervisor", LABEL_OF: label_value(workflow_id)}
    meta = {"name": name, "namespace": pool.namespace, "labels": labels}
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": meta, "type": "Opaque",
              "data": {CREDENTIALS_KEY: base64.b64encode(credentials_to_json(credentials).encode()).decode()}}
    env = [{"name": "OSMO_STATE_DIR", "value": STATE_DIR}, {"name": "OSMO_NAMESPACE", "value": pool.namespace},
           {"name": "OSMO_CREDENTIALS_FILE", "value": f"{CREDENTIALS_DIR}/{CREDENTIALS_KEY}"}]
    if pool.api_server_from_pods:
        host, _, port = pool.api_server_from_pods.rpartition(":")
        env += [{"name": "KUBERNETES_SERVICE_HOST", "value": host}, {"name": "KUBERNETES_SERVICE_PORT", "value": port}]
    mounts = [{"name": "state", "mountPath": STATE_DIR},
              {"name": "credentials", "mountPath": CREDENTIALS_DIR, "readOnly": True}]
    volumes = [{"name": "state", "emptyDir": {}},
               {"name": "credentials", "secret": {"secretName": name, "defaultMode": 0o440}}]
    if pool.supervisor_token_secret:
        mounts.append({"name": "token", "mountPath": TOKEN_DIR, "readOnly": True})
        volumes.append({"name": "token", "secret": {"secretName": pool.supervisor_token_secret, "defaultMode": 0o440}})
    container: dict[str, Any] = {
        "name": "supervisor", "image": pool.sidecar_image,
        "command": ["python", "-m", "osmo_run.kube.incluster", workflow_id], "env": env, "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}}}
    if pool.image_pull_policy:
        container["imagePullPolicy"] = pool.image_pull_policy
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container], "volumes": volumes,
                            "securityContext": {"runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID}}
    if pool.supervisor_service_account:
        spec["serviceAccountName"] = pool.supervisor_service_account
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
    return [secret, pod]


def launch(api, pool: KubePool, workflow_id: str, credentials: dict[str, TaskCredentials]) -> None:
    """Create the supervisor's Secret and Pod; a refusal raises ``RunnerError`` naming it."""
    from osmo_run.kube.apply import create  # the client only where a cluster is used

    for obj in supervisor_objects(pool, workflow_id, credentials):
        try:
            create(api, obj)
        except Exception as exc:  # noqa: BLE001 - ApiException or a connection error: one line
            reason = f"{exc.status} {exc.reason}" if hasattr(exc, "status") else f"{type(exc).__name__}: {exc}"
            raise RunnerError(f"the workflow's supervisor could not be started in namespace {pool.namespace!r} "
                              f"({obj['kind']} {obj['metadata']['name']}): {reason}") from None


# -- in the pod --------------------------------------------------------------------------------------
def seed_state(record, paths: StatePaths) -> None:
    """The private state database, with the workflow as the record has it (the pool's ``context`` dropped:
    in the cluster the supervisor uses its service account)."""
    settings = dict(record.settings)
    if isinstance(settings.get("kubernetes"), dict):
        settings["kubernetes"] = {k: v for k, v in settings["kubernetes"].items() if k != "context"}
    workflow = load_rendered(record.spec, file=record.file)
    groups = [(g.name, [(t.name, t.lead) for t in g.tasks]) for g in workflow.groups]
    state = StateStore(paths)
    try:
        state.create_workflow(record.name, record.spec, groups, file=record.file, store=record.store,
                              settings=settings, workflow_id=record.id)
    finally:
        state.close()


class InClusterSupervisor(kube_supervisor.KubeSupervisor):
    """The Kubernetes supervisor, publishing into the workflow's record (see the module docstring)."""

    def __init__(self, workflow_id: str, paths: StatePaths | None = None) -> None:
        super().__init__(workflow_id, paths)
        self.records = ClusterRecords(kube_supervisor.api_client(None), os.environ["OSMO_NAMESPACE"])
        self.published_at = 0.0
        self.cancel_checked_at = 0.0
        self.log_sizes: dict[str, int] = {}

    def credentials_for(self, workflow, settings: Settings):
        with open(os.environ["OSMO_CREDENTIALS_FILE"], encoding="utf-8") as f:
            return credentials_from_json(f.read())

    def _workflow_progress(self) -> None:
        super()._workflow_progress()
        now = time.monotonic()
        if now - self.cancel_checked_at >= CANCEL_CHECK_EVERY:
            self.cancel_checked_at = now
            try:
                record = self.records.get(self.id)
                if record is not None and record.cancel_requested:
                    self.cancel_requested = True
            except RecordError as exc:
                print(f"workflow {self.id}: {exc}", flush=True)
        if now - self.published_at >= PUBLISH_EVERY:
            self.published_at = now
            self.publish()

    def _fail_all(self, reason: str) -> None:
        super()._fail_all(reason)
        self.publish()

    def _finish(self) -> None:
        super()._finish()
        self.publish()
        try:
            from kubernetes import client
            client.CoreV1Api(self.records.core.api_client).delete_namespaced_secret(
                supervisor_name(self.id), self.records.namespace)
        except Exception as exc:  # noqa: BLE001 - the values are of no use any more; say so and go on
            print(f"workflow {self.id}: its credentials Secret could not be deleted: {exc}", flush=True)

    def publish(self) -> None:
        """The state as ``query --json`` shows it, and every task log that grew."""
        from osmo_run.local import service

        try:
            self.records.publish_state(self.id, service.query(self.id))
            for task in self.state.tasks(self.id):
                path = self.paths.task_log(self.id, task["name"])
                try:
                    size = os.path.getsize(path)
                except OSError:
                    continue
                if self.log_sizes.get(task["name"]) != size:
                    with open(path, encoding="utf-8", errors="replace") as f:
                        self.records.publish_log(self.id, task["name"], f.read())
                    self.log_sizes[task["name"]] = size
        except RecordError as exc:  # the next publication tries again
            print(f"workflow {self.id}: {exc}", flush=True)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m osmo_run.kube.incluster WORKFLOW_ID", file=sys.stderr)
        return 2
    workflow_id = argv[0]
    try:
        records = ClusterRecords(kube_supervisor.api_client(None), os.environ["OSMO_NAMESPACE"])
        record = records.get(workflow_id)
        if record is None:
            print(f"workflow {workflow_id}: no record in namespace {records.namespace}", file=sys.stderr)
            return 1
        seed_state(record, StatePaths())
    except (RecordError, RunnerError, KeyError) as exc:
        print(f"workflow {workflow_id}: cannot start: {exc}", file=sys.stderr)
        return 1
    return local.main([workflow_id], InClusterSupervisor)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
