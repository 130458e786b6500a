"""``osmo pool list`` and ``osmo resource list``: the pools of the pool config and what they hold.

The local pool (named by the pool config's ``name``, default ``local``) is always there; the
Kubernetes pool (``kubernetes``) when the pool config has a ``kubernetes:`` section. The reports
come from ``osmo_run.local.resources`` and ``osmo_run.kube.resources`` (one shape); this module picks
the pools, turns a cluster that cannot be reached into one line, and renders the text tables.
"""

from __future__ import annotations

from typing import Any

from osmo_run.local.errors import STORE_UNUSABLE, NotFound, RunnerError, closest, did_you_mean
from osmo_run.local.paths import StatePaths
from osmo_run.local.report import _table  # the columns of 'osmo workflow list'
from osmo_run.local.resources import local_pool
from osmo_run.local.settings import Settings, load_settings
from osmo_run.local.state import StateStore

KUBE_POOL = "kubernetes"


def pool_names(settings: Settings) -> list[str]:
    return [settings.name] + ([KUBE_POOL] if settings.kubernetes is not None and settings.name != KUBE_POOL else [])


def _kube_report(settings: Settings) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from osmo_run.kube.pool import PoolConfigError, parse_pool
    from osmo_run.kube.resources import cluster_pool
    from osmo_run.kube.supervisor import api_client

    try:
        pool = parse_pool(settings.kubernetes)
    except PoolConfigError as exc:
        raise RunnerError(f"{settings.source}: {exc}") from None
    try:
        return cluster_pool(api_client(pool.context), pool, KUBE_POOL)
    except (ApiException, HTTPError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RunnerError(f"pool {KUBE_POOL!r}: the cluster cannot be reached: {reason}", STORE_UNUSABLE,
                          pool=KUBE_POOL) from None


def reports(pool: str | None = None) -> list[dict[str, Any]]:
    """The reports of every pool, or of ``pool`` (an unknown name: ``NotFound``, with the closest names)."""
    settings = load_settings()
    names = pool_names(settings)
    if pool is not None and pool not in names:
        near = closest(pool, names)
        raise NotFound(f"no pool {pool!r}" + (did_you_mean(near) if near else f" (pools: {', '.join(names)})"),
                       pool=pool, suggestions=near or None)
    found = []
    for name in names if pool is None else [pool]:
        if name == settings.name:
            state = StateStore(StatePaths())
            try:
                found.append(local_pool(settings, state))
            finally:
                state.close()
        else:
            found.append(_kube_report(settings))
    return found


def pool_listing() -> list[dict[str, Any]]:
    """``osmo pool list``: one entry per pool; a cluster that cannot be reached is listed with the reason."""
    settings = load_settings()
    found = []
    for name in pool_names(settings):
        try:
            report = reports(name)[0]
        except RunnerError as exc:
            found.append({"pool": name, "kind": KUBE_POOL, "status": "UNREACHABLE", "reason": str(exc)})
            continue
        found.append({"pool": name, "kind": report["kind"], "status": "ONLINE",
                      "platforms": [p["name"] for p in report["platforms"]] or ["*"],
                      "nodes": len(report["nodes"]), **{k: report[k] for k in ("capacity", "used", "free")}})
    return found


# -- text ----------------------------------------------------------------------------------------

def _gib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**30:.1f}"


def _pair(part: dict[str, Any], whole: dict[str, Any], key: str) -> str:
    if whole.get(key) is None:
        return "-"
    if key in ("memory", "storage"):
        return f"{_gib(part[key])}/{_gib(whole[key])}"
    return f"{part[key]:g}/{whole[key]:g}"


def render_pools(items: list[dict[str, Any]]) -> str:
    rows = [["POOL", "KIND", "STATUS", "PLATFORMS", "CPU FREE", "MEMORY FREE (GiB)", "GPU FREE"]]
    for p in items:
        if p["status"] != "ONLINE":
            rows.append([p["pool"], p["kind"], p["status"], "-", "-", "-", "-"])
            continue
        rows.append([p["pool"], p["kind"], p["status"], ", ".join(p["platforms"]),
                     *(_pair(p["free"], p["capacity"], key) for key in ("cpu", "memory", "gpu"))])
    lines = _table(rows)
    lines += [f"{p['pool']}: {p['reason']}" for p in items if p["status"] != "ONLINE"]
    return "\n".join(lines + ["(free/total; '*': any platform name is accepted)"])


def render_resources(items: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for report in items:
        if lines:
            lines.append("")
        lines.append(f"Pool {report['pool']} ({report['kind']})")
        rows = [["NODE", "PLATFORMS", "CPU USED", "MEMORY USED (GiB)", "GPU USED", "STORAGE USED (GiB)"]]
        for node in report["nodes"]:
            rows.append([node["name"], ", ".join(node["platforms"]), *(_pair(node["used"], node["capacity"], k)
                                                                      for k in ("cpu", "memory", "gpu", "storage"))])
        lines += _table(rows)
        for platform in report["platforms"]:
            model = f" (GPU model {platform['gpu_model']})" if platform.get("gpu_model") else ""
            lines.append(f"platform {platform['name']}{model}: {platform['gpus_free']} of {platform['gpus']} GPUs free")
        for node in report["nodes"]:
            for gpu in node.get("gpus", []):
                lines.append(f"GPU {gpu['index']} {gpu['model']} {gpu['uuid']}: "
                             + (f"held by {gpu['held_by']}" if gpu["held_by"] else "free"))
            for h in node["holders"]:
                lines.append(f"held by {h['holder']}: cpu {h['cpu']:g}, memory {_gib(h['memory'])} GiB, gpu {h['gpu']}")
        if report.get("pending"):
            lines.append(f"pending (not on a node yet): {', '.join(report['pending'])}")
    return "\n".join(lines + ["(used/total)"])
