"""Create and delete the runner's objects through the official ``kubernetes`` client.

``create`` sends one object built by ``objects.py`` (core kinds through ``CoreV1Api``, PodGroups
through ``CustomObjectsApi``), optionally as a server-side dry run, which runs the API server's full
validation (CRD schemas included) without storing anything. ``delete_workflow`` deletes, by the
``osmo.workflow`` label, everything a workflow created: pods, services, secrets and the PodGroups
of every scheduler kind whose CRD the cluster has.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.kube.objects import LABEL_WORKFLOW, SCHEDULERS, label_value

PLURAL = "podgroups"


def _group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.partition("/")
    return group, version


def create(api: client.ApiClient, obj: dict[str, Any], dry_run: bool = False) -> dict:
    """Create ``obj``; returns the object as the server stored (or would store) it."""
    namespace = obj["metadata"]["namespace"]
    kw = {"dry_run": "All"} if dry_run else {}
    kind = obj["kind"]
    core = client.CoreV1Api(api)
    if kind == "Pod":
        made = core.create_namespaced_pod(namespace, obj, **kw)
    elif kind == "Service":
        made = core.create_namespaced_service(namespace, obj, **kw)
    elif kind == "Secret":
        made = core.create_namespaced_secret(namespace, obj, **kw)
    elif kind == "PodGroup":
        group, version = _group_version(obj["apiVersion"])
        return client.CustomObjectsApi(api).create_namespaced_custom_object(group, version, namespace, PLURAL, obj,
                                                                            **kw)
    else:
        raise ValueError(f"cannot create a {kind}")
    return api.sanitize_for_serialization(made)


def delete_workflow(api: client.ApiClient, namespace: str, workflow_id: str) -> int:
    """Delete every object labelled with the workflow; returns how many deletions were sent."""
    selector = f"{LABEL_WORKFLOW}={label_value(workflow_id)}"
    core = client.CoreV1Api(api)
    count = 0
    for lister, deleter in ((core.list_namespaced_pod, core.delete_namespaced_pod),
                            (core.list_namespaced_service, core.delete_namespaced_service),
                            (core.list_namespaced_secret, core.delete_namespaced_secret)):
        for item in lister(namespace, label_selector=selector).items:
            count += _ignore_missing(lambda: deleter(item.metadata.name, namespace, grace_period_seconds=0))
    custom = client.CustomObjectsApi(api)
    for api_version, _, _ in SCHEDULERS.values():
        if api_version is None:
            continue
        group, version = _group_version(api_version)
        try:
            found = custom.list_namespaced_custom_object(group, version, namespace, PLURAL, label_selector=selector)
        except ApiException as exc:
            if exc.status == 404:  # this scheduler's CRD is not installed
                continue
            raise
        for item in found.get("items", []):
            name = item["metadata"]["name"]
            count += _ignore_missing(
                lambda: custom.delete_namespaced_custom_object(group, version, namespace, PLURAL, name))
    return count


def _ignore_missing(call) -> int:
    try:
        call()
        return 1
    except ApiException as exc:
        if exc.status == 404:
            return 0
        raise
