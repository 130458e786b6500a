"""Live pod logs for ``osmo workflow logs`` while a Kubernetes task runs.

The supervisor copies an attempt's container logs into the task log when the attempt ends; while
it runs, ``logs`` adds what the API server has now (``pods/log`` of each container), read with
the pool snapshot the workflow was submitted with. The task's credential values are masked: they are
read from the attempt's Secret (``secrets`` get), so this works from any machine with the kubeconfig;
if the Secret cannot be read, the live lines are not shown.
"""

from __future__ import annotations

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.kube.attempt import read_container_log
from osmo_run.kube.objects import INIT_CONTAINER, SIDECAR_CONTAINER, TASK_CONTAINER, credential_values, pod_name
from osmo_run.kube.pool import parse_pool
from osmo_run.kube.supervisor import api_client
from osmo_run.local.credentials import masked_values
from osmo_run.local.logmask import text_masker


def live_logs(pool_section: dict | None, workflow_id: str, task: str, attempt: int) -> str:
    """The current logs of the attempt's containers, each under a header; errors as one line."""
    pool = parse_pool(pool_section)
    name = pod_name(workflow_id, task, attempt)
    api = api_client(pool.context)
    try:
        secret = client.CoreV1Api(api).read_namespaced_secret(name, pool.namespace, _request_timeout=10)
    except ApiException as exc:
        if exc.status != 404:  # no Secret: the attempt has ended (its objects are gone) or not begun
            return f"--- pod {name} (running): not shown: its credentials to mask cannot be read " \
                   f"({exc.status} {exc.reason}) ---\n"
        secret = None
    mask = text_masker(masked_values(credential_values(secret.data if secret is not None else None)))
    parts = []
    for container in (INIT_CONTAINER, TASK_CONTAINER, SIDECAR_CONTAINER):
        try:
            text = mask(read_container_log(api, pool.namespace, name, container))
        except ApiException as exc:
            text = f"(no log yet: {exc.status} {exc.reason})\n"
        parts.append(f"--- pod {name} (running), container {container} ---\n{(text or '').rstrip()}\n")
    return "".join(parts)
