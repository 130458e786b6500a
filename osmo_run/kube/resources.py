"""What a Kubernetes pool has and who holds it, for ``osmo resource list`` and ``osmo pool list``.

From the API: each node's allocatable cpu, memory, ``nvidia.com/gpu`` and ephemeral storage, and the
requests of the pods bound to it that have not ended (a pod's request is the larger of its
containers' sum and its largest init container, as the scheduler counts it). A pod of an osmo
workflow is named by its workflow and task (``osmo.workflow``/``osmo.task`` labels), any other pod
by ``namespace/name``. A node serves the pool's platforms whose ``node_selector`` its labels match
(every node serves a pool without platforms). Pods of the pool's namespace that no node took yet are
listed as ``pending``. The shape is the one ``osmo_run.local.resources`` gives for the local pool.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.utils import parse_quantity

from osmo_run.kube.objects import LABEL_TASK, LABEL_WORKFLOW
from osmo_run.kube.pool import KubePool

GPU_RESOURCE = "nvidia.com/gpu"
KEYS = (("cpu", "cpu"), ("memory", "memory"), ("gpu", GPU_RESOURCE), ("storage", "ephemeral-storage"))
ENDED = ("Succeeded", "Failed")


def _amounts(resources: dict[str, Any] | None) -> dict[str, float]:
    resources = resources or {}
    return {key: float(parse_quantity(resources[name])) if name in resources else 0.0 for key, name in KEYS}


def _figures(amounts: dict[str, float]) -> dict[str, Any]:
    return {"cpu": round(amounts["cpu"], 3), "memory": int(amounts["memory"]), "gpu": int(amounts["gpu"]),
            "storage": int(amounts["storage"])}


def pod_requests(pod: client.V1Pod) -> dict[str, float]:
    """What the scheduler reserves for ``pod``: max(sum of containers, largest init container)."""
    total = {key: 0.0 for key, _ in KEYS}
    for container in pod.spec.containers or []:
        for key, value in _amounts(container.resources.requests if container.resources else None).items():
            total[key] += value
    for container in pod.spec.init_containers or []:
        for key, value in _amounts(container.resources.requests if container.resources else None).items():
            total[key] = max(total[key], value)
    return total


def holder_name(pod: client.V1Pod) -> str:
    labels = pod.metadata.labels or {}
    if LABEL_WORKFLOW in labels and LABEL_TASK in labels:
        return f"{labels[LABEL_WORKFLOW]}/{labels[LABEL_TASK]}"
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


def node_platforms(pool: KubePool, labels: dict[str, str]) -> list[str]:
    if not pool.platforms:
        return ["*"]
    return [name for name, placement in pool.platforms.items()
            if all(labels.get(k) == v for k, v in placement.node_selector.items())]


def cluster_pool(api: client.ApiClient, pool: KubePool, name: str = "kubernetes") -> dict[str, Any]:
    """The Kubernetes pool's report (see the module docstring)."""
    core = client.CoreV1Api(api)
    pods = [p for p in core.list_pod_for_all_namespaces().items if (p.status.phase or "") not in ENDED]
    nodes = []
    for node in core.list_node().items:
        capacity = _figures(_amounts(node.status.allocatable if node.status else None))
        used_amounts = {key: 0.0 for key, _ in KEYS}
        holders = []
        for pod in (p for p in pods if p.spec.node_name == node.metadata.name):
            asked = pod_requests(pod)
            for key, value in asked.items():
                used_amounts[key] += value
            holders.append({"holder": holder_name(pod), **_figures(asked)})
        used = _figures(used_amounts)
        nodes.append({"name": node.metadata.name, "platforms": node_platforms(pool, node.metadata.labels or {}),
                      "capacity": capacity, "used": used,
                      "free": {k: capacity[k] - used[k] for k in capacity},
                      "holders": sorted(holders, key=lambda h: h["holder"])})
    totals = {part: {k: sum(n[part][k] for n in nodes) for k in ("cpu", "memory", "gpu", "storage")}
              for part in ("capacity", "used", "free")}
    platforms = [{"name": p, "nodes": [n["name"] for n in nodes if p in n["platforms"]],
                  "gpus": sum(n["capacity"]["gpu"] for n in nodes if p in n["platforms"]),
                  "gpus_free": sum(n["free"]["gpu"] for n in nodes if p in n["platforms"])} for p in pool.platforms]
    pending = [holder_name(p) for p in pods if not p.spec.node_name and p.metadata.namespace == pool.namespace]
    return {"pool": name, "kind": "kubernetes", "namespace": pool.namespace, "platforms": platforms,
            "accepts_any_platform": not pool.platforms, **totals, "nodes": nodes, "pending": pending}
