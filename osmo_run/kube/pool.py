"""A Kubernetes pool: where and how the Kubernetes runner creates a workflow's objects.

Read from the ``kubernetes:`` section of the pool config file (``osmo_run/local/settings.py``
names the file)::

    kubernetes:
      context: gpu-cluster          # kubeconfig context (default: the current one, or in-cluster)
      namespace: robotics           # where objects are created (default: default)
      scheduler: kai                # kai | volcano | coscheduling | none (default scheduler: no gang)
      scheduler_name: my-scheduler  # override the schedulerName the scheduler's default install uses
      queue: team-a                 # KAI / Volcano queue
      sidecar_image: registry.example/osmo-sidecar:0.1
      store: s3://bucket/osmo       # the store as the pods reach it
      store_secret: osmo-store      # a Secret whose keys become the sidecar's environment
      service_account: osmo-task
      image_pull_policy: IfNotPresent   # Always | IfNotPresent | Never (default: the cluster's rule)
      request_fraction: {cpu: 0.1}  # pods request this fraction of the cpu/memory a task asks for
      host_paths: [/data, /mnt/shared]  # volumeMounts may mount these host folders (and below); default none
      supervisor: cluster           # where a workflow's supervisor runs: cluster (the default: a pod; the workflow
                                    # runs on without the submitting machine) | local (a process of the submitting
                                    # machine; no RBAC for a supervisor needed)
      supervisor_service_account: osmo-supervisor   # its ServiceAccount (RBAC: docs/KUBERNETES.md)
      supervisor_token_secret: osmo-supervisor-token  # mount this token Secret (clusters without automount)
      api_server_from_pods: 10.0.0.1:6443  # where pods reach the API server, if not the kubernetes Service
      platforms:                    # spec resources.platform -> placement
        ovx-a40:
          node_selector: {nvidia.com/gpu.product: NVIDIA-A40}
          tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]

``request_fraction`` is for small (development) clusters: a two-core node cannot otherwise run three
tasks that each ask for a whole CPU. The limits stay what the task asks for. Every error names the field.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

SCHEDULER_KINDS = ("kai", "volcano", "coscheduling", "none")
KEYS = {"context", "namespace", "scheduler", "scheduler_name", "queue", "sidecar_image", "store", "store_secret",
        "service_account", "image_pull_policy", "request_fraction", "platforms", "host_paths", "supervisor",
        "supervisor_service_account", "supervisor_token_secret", "api_server_from_pods"}
SUPERVISOR_PLACES = ("cluster", "local")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
FRACTION_KEYS = ("cpu", "memory")


class PoolConfigError(ValueError):
    """A bad ``kubernetes:`` pool section; the message names the field."""


@dataclass(frozen=True)
class Placement:
    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class KubePool:
    namespace: str = "default"
    context: str | None = None
    scheduler: str = "none"
    scheduler_name: str | None = None
    queue: str | None = None
    sidecar_image: str = "osmo-sidecar:latest"
    store: str | None = None
    store_secret: str | None = None
    service_account: str | None = None
    image_pull_policy: str | None = None
    request_fraction: dict[str, float] = field(default_factory=dict)
    platforms: dict[str, Placement] = field(default_factory=dict)
    host_paths: tuple[str, ...] = ()  # absolute, normalised prefixes volumeMounts may use
    supervisor: str = "cluster"
    supervisor_service_account: str | None = "osmo-supervisor"
    supervisor_token_secret: str | None = None
    api_server_from_pods: str | None = None  # HOST:PORT


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise PoolConfigError(f"kubernetes.{where}: expected a non-empty string, got {value!r}")
    return value


def parse_pool(raw: Any) -> KubePool:
    """The ``kubernetes:`` section as a ``KubePool`` (``None`` or empty: every default)."""
    if raw is None:
        return KubePool()
    if not isinstance(raw, dict):
        raise PoolConfigError("kubernetes: expected a mapping")
    unknown = sorted(set(raw) - KEYS)
    if unknown:
        raise PoolConfigError(f"kubernetes.{unknown[0]}: unknown field (known: {', '.join(sorted(KEYS))})")
    values: dict[str, Any] = {k: _str(k, v) for k, v in raw.items()
                              if k not in ("platforms", "request_fraction", "host_paths") and v is not None}
    if values.get("scheduler", "none") not in SCHEDULER_KINDS:
        raise PoolConfigError(f"kubernetes.scheduler: expected one of {', '.join(SCHEDULER_KINDS)}, "
                              f"got {values['scheduler']!r}")
    if values.get("image_pull_policy", "Always") not in PULL_POLICIES:
        raise PoolConfigError(f"kubernetes.image_pull_policy: expected one of {', '.join(PULL_POLICIES)}, "
                              f"got {values['image_pull_policy']!r}")
    if values.get("supervisor", "cluster") not in SUPERVISOR_PLACES:
        raise PoolConfigError(f"kubernetes.supervisor: expected one of {', '.join(SUPERVISOR_PLACES)}, "
                              f"got {values['supervisor']!r}")
    host, _, port = values.get("api_server_from_pods", "x:1").rpartition(":")
    if not host or not port.isdigit():
        raise PoolConfigError(f"kubernetes.api_server_from_pods: expected HOST:PORT, got "
                              f"{values['api_server_from_pods']!r}")
    values["request_fraction"] = _fractions(raw.get("request_fraction"))
    values["host_paths"] = _host_paths(raw.get("host_paths"))
    platforms = {}
    for name, entry in (raw.get("platforms") or {}).items():
        where = f"platforms.{name}"
        if not isinstance(entry, dict) or set(entry) - {"node_selector", "tolerations"}:
            raise PoolConfigError(f"kubernetes.{where}: expected a mapping with node_selector and/or tolerations")
        selector = entry.get("node_selector") or {}
        if not isinstance(selector, dict) or not all(isinstance(v, str) for v in selector.values()):
            raise PoolConfigError(f"kubernetes.{where}.node_selector: expected a mapping of strings")
        tolerations = entry.get("tolerations") or []
        if not isinstance(tolerations, list) or not all(isinstance(t, dict) for t in tolerations):
            raise PoolConfigError(f"kubernetes.{where}.tolerations: expected a list of mappings")
        platforms[str(name)] = Placement({str(k): v for k, v in selector.items()}, tuple(tolerations))
    return KubePool(**values, platforms=platforms)


def _fractions(raw: Any) -> dict[str, float]:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or set(raw) - set(FRACTION_KEYS):
        raise PoolConfigError(f"kubernetes.request_fraction: expected a mapping with {' and/or '.join(FRACTION_KEYS)}")
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
            raise PoolConfigError(f"kubernetes.request_fraction.{key}: expected a number above 0 and at most 1, "
                                  f"got {value!r}")
        out[key] = float(value)
    return out


def _host_paths(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise PoolConfigError("kubernetes.host_paths: expected a list of absolute host folders")
    out = []
    for i, value in enumerate(raw):
        if not isinstance(value, str) or not value.startswith("/") or "\0" in value \
                or ".." in value.split("/"):
            raise PoolConfigError(f"kubernetes.host_paths[{i}]: expected an absolute host folder without '..', "
                                  f"got {value!r}")
        out.append(posixpath.normpath(value).replace("//", "/"))
    return tuple(out)


def cluster_pool(section: Any) -> KubePool | None:
    """The pool of a ``kubernetes:`` section whose workflows' supervisors run in the cluster (the default),
    else None (no section, a bad one, or ``supervisor: local``)."""
    if section is None:
        return None
    try:
        pool = parse_pool(section)
    except PoolConfigError:
        return None
    return pool if pool.supervisor == "cluster" else None
