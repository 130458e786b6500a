"""The runtime's public face for programs other than the CLI (the web UI, ``osmo_ui``): workflows, their
details, logs as tagged lines, cancel, resubmit, pools and resources.

Everything here reads the same state the ``osmo workflow`` commands read (``osmo_run.local.service``:
this machine's state directory and the cluster pool's records) and returns plain JSON-ready dicts.
Errors are the runtime's typed ``RunnerError`` (``exit_code``, ``code``, ``subject``) and ``SpecError``;
callers translate them once. Credential values are masked in every log line returned.

Guarantees:
- ``workflow(id)`` is ``osmo workflow query --json`` plus its ``pool`` and ``runs_on``, the masked
  rendered ``spec``, per group its ``upstream`` groups and what it waits for (``waiting_for``: its reason
  while SCHEDULING), per task what the spec asked (``image``, ``resources``, ``inputs``, ``outputs``) and
  what the pool grants it now (``granted``, from ``osmo resource list``; None once it ended).
- ``read_logs`` never blocks: it returns the complete lines written since the offsets it was given and
  the new offsets; a line is tagged with its task, attempt and source (``task``, ``sidecar``, ``osmo``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from osmo_run.local import service
from osmo_run.local.errors import NotFound, RunnerError
from osmo_run.local.logmask import text_masker
from osmo_run.local.logs import RUNNER_PREFIX
from osmo_run.local.statuses import is_terminal
from osmo_run.spec import Dag, LoadedSpec, SpecError, load_rendered, load_text

__all__ = ["LogLine", "RunnerError", "SpecError", "NotFound", "workflows", "workflow", "spec_text", "read_logs",
           "cancel", "resubmit", "pools", "resources", "is_terminal", "ATTEMPT_PREFIX"]

SIDECAR_PREFIX = "[osmo-sidecar] "
ATTEMPT_PREFIX = "attempt "  # the runner's notice "[osmo] attempt N starts" (group_run.py) opens a retry's lines


@dataclass(frozen=True)
class LogLine:
    task: str
    attempt: int
    source: str  # "task" (the command's output), "sidecar", "osmo" (the runner's notices)
    text: str


def _source(line: str) -> str:
    if line.startswith(SIDECAR_PREFIX):
        return "sidecar"
    if line.startswith(RUNNER_PREFIX):
        return "osmo"
    return "task"


def _attempt_marker(line: str) -> int | None:
    if not line.startswith(RUNNER_PREFIX + ATTEMPT_PREFIX):
        return None
    word = line[len(RUNNER_PREFIX + ATTEMPT_PREFIX):].split(" ", 1)[0]
    return int(word) if word.isdigit() else None


def workflows() -> dict[str, Any]:
    """``{"workflows": [...], "problem": str | None}``: every workflow (``osmo workflow list --json``), each
    with its ``pool`` and ``runner``; ``problem`` says why the cluster's workflows are missing."""
    items, problem = service.listing()
    for item in items:
        item["pool"], item["runs_on"] = _where(item.get("runner", CLUSTER))
    return {"workflows": items, "problem": problem}


CLUSTER = {"supervisor": "cluster"}  # the runner of a workflow recorded in the cluster (kube/remote.py)


def _where(runner: Any) -> tuple[str, str]:
    """(pool, how it runs) of a workflow from its ``runner`` (a name, or the cluster supervisor's record)."""
    if isinstance(runner, dict):
        return "kubernetes", "kubernetes runner, supervisor in the cluster"
    if runner == "kubernetes":
        return "kubernetes", "kubernetes runner"
    return "local", "local runner"


def _resources_asked(workflow, task) -> dict[str, Any]:
    res = workflow.resources.get(task.resource)
    if res is None:
        return {"name": task.resource}
    return {"name": task.resource, "cpu": res.cpu, "gpu": res.gpu, "memory": res.memory, "storage": res.storage,
            "platform": res.platform}


def _describe_io(item: Any) -> dict[str, Any]:
    fields = {k: v for k, v in (asdict(item).items() if hasattr(item, "__dataclass_fields__") else {})
              if isinstance(v, (str, int, float, bool)) and k not in {"line", "path"}}
    return {"kind": type(item).__name__.replace("Input", "").replace("Output", "").lower() or "item", **fields}


def _holdings(workflow_id: str, pool: str) -> tuple[dict[str, dict], dict[str, dict]]:
    """What the workflow's pool (``local`` or ``kubernetes``) grants it now: by group (the local pool holds
    a share per group) and by task (the cluster, per pod); empty when the pool cannot be read. Only that
    pool is asked: a page polls this every second."""
    from osmo_run import resources as pool_resources
    from osmo_run.local.settings import load_settings

    try:
        names = pool_resources.pool_names(load_settings())
        reports = pool_resources.reports(pool_resources.KUBE_POOL if pool == "kubernetes" else names[0])
    except RunnerError:
        return {}, {}
    by_group: dict[str, dict] = {}
    by_task: dict[str, dict] = {}
    for report in reports:
        for node in report.get("nodes", []):
            for holder in node.get("holders", []):
                where = {**holder, "pool": report["pool"], "node": node["name"]}
                if holder.get("workflow") == workflow_id:
                    by_group[holder.get("group", "")] = where
                elif str(holder.get("holder", "")).startswith(f"{workflow_id}/"):
                    by_task[holder["holder"].split("/", 1)[1]] = where
    return by_group, by_task


def workflow(workflow_id: str) -> dict[str, Any]:
    """Everything about one workflow: ``query --json``, the rendered spec, and per task the spec's image,
    resources asked, inputs and outputs; per group ``granted`` (or ``waiting_for`` while it waits)."""
    info, text = service.query_with_spec(workflow_id)
    info["spec"] = _masked(workflow_id, text, in_cluster=isinstance(info.get("runner", CLUSTER), dict))
    try:
        spec = load_rendered(text, file=info.get("file"))
    except SpecError:
        spec = None
    info["pool"], info["runs_on"] = _where(info.get("runner", CLUSTER))
    by_group, by_task = _holdings(workflow_id, info["pool"]) if not is_terminal(info["status"]) else ({}, {})
    dag = Dag.from_workflow(spec) if spec is not None else None
    for group in info["groups"]:
        group["granted"] = by_group.get(group["name"])
        group["upstream"] = []
        if dag is not None:
            group["upstream"] = list(dag.upstream.get(group["name"], ()))
        waiting = group["status"] in ("SCHEDULING", "WAITING") or (group["status"] == "INITIALIZING" and group["reason"])
        group["waiting_for"] = group["reason"] if waiting else None  # the pool's or the cluster's word
        for task in group["tasks"]:
            task["granted"] = by_task.get(task["name"]) or group["granted"]
            task["granted_to"] = "task" if task["name"] in by_task else "group" if group["granted"] else None
            if spec is None:
                continue
            try:
                model = spec.task(task["name"])
            except (KeyError, LookupError):
                continue
            task["image"] = model.image
            task["resources"] = _resources_asked(spec, model)
            task["inputs"] = [_describe_io(i) for i in model.inputs]
            task["outputs"] = [_describe_io(o) for o in model.outputs]
    info.setdefault("isolation", None)
    return info


def spec_text(workflow_id: str) -> str:
    """The rendered spec, with the credential values that can be resolved now masked."""
    return _masked(workflow_id, service.spec(workflow_id), in_cluster=service.in_cluster(workflow_id) is not None)


def _masked(workflow_id: str, text: str, in_cluster: bool) -> str:
    """``text`` with the workflow's credential values masked (a workflow of this machine; the cluster's
    records never hold values). ``in_cluster``: whether the workflow is recorded in a cluster."""
    if in_cluster:
        return text
    return text_masker(service.log_secrets(workflow_id))(text)


def _split_lines(task: str, text: str, attempt: int) -> tuple[list[LogLine], int]:
    out = []
    for line in text.split("\n"):
        marker = _attempt_marker(line)
        if marker is not None:
            attempt = marker
        out.append(LogLine(task, attempt, _source(line), line))
    return out, attempt


def read_logs(workflow_id: str, offsets: dict[str, tuple[int, int]] | None = None,
              task: str | None = None) -> tuple[list[LogLine], dict[str, tuple[int, int]], bool]:
    """The complete log lines written since ``offsets`` (``{task: (offset, attempt)}``, empty: from the
    start), the offsets to pass next time, and whether the workflow had ended before they were read
    (so nothing more will come). Lines are masked with the credentials that can be resolved now."""
    offsets = dict(offsets or {})
    lines: list[LogLine] = []
    pool = service.in_cluster(workflow_id)  # once: it reads the pool config and the state database
    if pool is not None:
        from osmo_run.kube import remote
        finished = is_terminal(remote.query(workflow_id, pool)["status"])
        texts = remote.logs(workflow_id, pool, task)
        for name, text in texts.items():
            offset, attempt = offsets.get(name, (0, 1))
            new = text[offset:]
            complete = new if finished else new[:new.rfind("\n") + 1]
            if complete:
                found, attempt = _split_lines(name, complete.rstrip("\n"), attempt)
                lines.extend(found)
            offsets[name] = (offset + len(complete), attempt)
        return lines, offsets, finished
    finished = service.is_finished(workflow_id)
    mask = text_masker(service.log_secrets(workflow_id))
    for name, path in service.log_paths(workflow_id, task).items():
        offset, attempt = offsets.get(name, (0, 1))
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
        except FileNotFoundError:
            data = b""
        complete = data if finished else data[:data.rfind(b"\n") + 1]
        if complete:
            text = complete.decode("utf-8", errors="replace").rstrip("\n")
            found, attempt = _split_lines(name, text, attempt)
            lines.extend(LogLine(x.task, x.attempt, x.source, mask(x.text)) for x in found)
        offsets[name] = (offset + len(complete), attempt)
    return lines, offsets, finished


def cancel(workflow_id: str) -> dict[str, Any]:
    """Stop the workflow (``osmo workflow cancel``); its id and final status."""
    row = service.cancel(workflow_id)
    return {"id": workflow_id, "status": row["status"]}


def resubmit(workflow_id: str, set_items: Iterable[str] = (), set_string_items: Iterable[str] = ()) -> str:
    """Submit the workflow again with template values set (``--set``), on the same store and runner and with
    the same labels; the new id. The spec is rendered again from its file when that file is still there, else from the stored,
    rendered spec (where values set are used by whatever templates are left)."""
    info = service.query(workflow_id)
    file = info.get("file")
    text = None
    if file and os.path.isfile(file):
        try:
            with open(file, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            text = None
    if text is None:
        text = service.spec(workflow_id)
    loaded: LoadedSpec = load_text(text, file=file, set_items=list(set_items), set_string_items=list(set_string_items))
    runner = "kubernetes" if _where(info.get("runner", CLUSTER))[0] == "kubernetes" else "local"
    new_id, _ = service.submit(loaded, file=file, store=info.get("store"), runner=runner,
                               labels=info.get("labels") or {})
    return new_id


def pools() -> list[dict[str, Any]]:
    """``osmo pool list --json``."""
    from osmo_run import resources as pool_resources

    return pool_resources.pool_listing()


def resources() -> dict[str, Any]:
    """``{"pools": osmo resource list --json, "problem": str | None}`` (a cluster that cannot be read is a
    problem, not an error: the local pool is still shown)."""
    from osmo_run import resources as pool_resources

    try:
        return {"pools": pool_resources.reports(), "problem": None}
    except RunnerError as exc:
        return {"pools": [], "problem": str(exc)}
