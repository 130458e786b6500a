"""One task attempt before anything runs: its run directory, the sidecar contract (``task.json``),
the task with every special token substituted, and the config of its ``taskinit``.

What the task sees:

=================  ====================================  =====================================
                   namespaces mode                       plain mode
=================  ====================================  =====================================
``{{output}}``     /osmo/data/output                     RUN_DIR/data/output
``{{input:N}}``    /osmo/data/input/N                    RUN_DIR/data/input/N
``{{host:T}}``     T's address in the group network      127.0.0.1
working folder     /osmo/work (RUN_DIR/work)             RUN_DIR/work
``files:``         at their paths, in the task's view    under RUN_DIR/files/<path>; the path
                                                         is replaced in the command, args,
                                                         environment and the other files
=================  ====================================  =====================================
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass, field
from typing import Any

from osmo_run.contract import (InputSpec, OutputSpec, RunDir, TaskContract, task_output_dataset)
from osmo_run.local.isolation import HOST_LOOPBACK, Isolation
from osmo_run.spec import (DatasetInput, DatasetOutput, TaskInput, UrlInput, UrlOutput, Workflow,
                           substitute_task)

TASK_DATA = "/osmo/data"
TASK_WORK = "/osmo/work"


@dataclass
class AttemptPlan:
    run: RunDir
    contract: TaskContract
    init: dict[str, Any]  # taskinit's config, without the pipe fds
    has_inputs: bool
    notes: list[str] = field(default_factory=list)


def hostname(name: str) -> str:
    label = re.sub(r"[^a-z0-9-]", "-", name.lower()).strip("-")[:63]
    return label or "task"


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    """Spec ``metadata``/``labels`` entries: ``key=value`` or ``key: value`` pairs; anything else
    (OSMO's file names) is passed on as a key with an empty value."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=") if "=" in item else item.partition(":")
        out[key.strip()] = value.strip() if sep else ""
    return out


def contract_inputs(workflow_id: str, task, versions: dict[str, int | None]) -> tuple[InputSpec, ...]:
    found = []
    for source in task.inputs:
        if isinstance(source, TaskInput):
            owner = source.workflow_id or workflow_id
            ref = task_output_dataset(owner, source.task_name)
            version = None if source.is_external else versions.get(source.task_name)
            found.append(InputSpec("task", ref=f"{ref}:{version}" if version else ref, regex=source.regex,
                                   task=source.task_name))
        elif isinstance(source, DatasetInput):
            found.append(InputSpec("dataset", ref=source.name, regex=source.regex))
        elif isinstance(source, UrlInput):
            found.append(InputSpec("url", url=source.url, regex=source.regex))
    return tuple(found)


def contract_outputs(workflow_id: str, task) -> tuple[OutputSpec, ...]:
    found = [OutputSpec("task_output", dataset=task_output_dataset(workflow_id, task.name))]
    for out in task.outputs:
        if isinstance(out, DatasetOutput):
            found.append(OutputSpec("dataset", dataset=out.dataset, tag=out.ref, path=out.path,
                                    metadata=_pairs(out.metadata), labels=_pairs(out.labels)))
        elif isinstance(out, UrlOutput):
            found.append(OutputSpec("url", url=out.url, regex=out.regex))
    return tuple(found)


def _plain_path(path: str, root: str, data: str) -> str:
    if path.startswith(TASK_DATA + "/"):
        return os.path.join(data, path[len(TASK_DATA) + 1:])  # /osmo/data/output/x: into the output
    return os.path.join(root, path.lstrip("/"))


def _remap_files(files: list[dict[str, Any]], root: str, data: str, argv: list[str],
                 env: dict[str, str]) -> list[str]:
    """Plain mode: move absolute ``files:`` paths under ``root`` (``/osmo/data/...`` to the run
    directory's data) and replace them in argv, env and the other files' text; returns log notes."""
    moves = {f["path"]: _plain_path(f["path"], root, data) for f in files if os.path.isabs(f["path"])}
    if not moves:
        for f in files:
            f.pop("text", None)
        return []

    def swap(text: str) -> str:
        for old in sorted(moves, key=len, reverse=True):
            text = text.replace(old, moves[old])
        return text

    argv[:] = [swap(a) for a in argv]
    env.update({k: swap(v) for k, v in env.items() if any(old in v for old in moves)})
    for f in files:
        if f.pop("text", False):
            f["data"] = base64.b64encode(swap(base64.b64decode(f["data"]).decode("utf-8")).encode()).decode()
        f["path"] = moves.get(f["path"], f["path"])
    return [f"files: {old} is written as {new} (plain processes share the host's folders)"
            for old, new in moves.items()]


def plan_attempt(*, workflow_id: str, workflow: Workflow, group, task, attempt: int, run_root: str,
                 isolation: Isolation, group_network: bool, hosts: dict[str, str],
                 versions: dict[str, int | None], store: str | None, grace: float,
                 parent: int) -> AttemptPlan:
    """Create the run directory and everything the attempt needs (raises ``SpecError`` when a
    token cannot be substituted)."""
    run = RunDir(run_root)
    for folder in (run.output_dir, os.path.dirname(run.status("x")), os.path.join(run_root, "work"),
                   os.path.join(run_root, "runner")):
        os.makedirs(folder, exist_ok=True)
    for n in range(len(task.inputs)):
        os.makedirs(run.input_dir(n), exist_ok=True)
    isolated = isolation.namespaces
    data = TASK_DATA if isolated else run.data
    inputs = [f"{data}/input/{n}" for n in range(len(task.inputs))]
    task_hosts = hosts if (isolated and group_network) else {name: HOST_LOOPBACK for name in hosts}
    done = substitute_task(task, output=f"{data}/output", inputs=inputs, hosts=task_hosts,
                           workflow_id=workflow_id)
    contract = TaskContract(
        workflow_id=workflow_id, task=task.name, group=group.name, attempt=attempt, store=store, data_dir=data,
        inputs=contract_inputs(workflow_id, done, versions), outputs=contract_outputs(workflow_id, done),
        metadata={"workflow_id": workflow_id, "task": task.name, "group": group.name, "attempt": str(attempt)})
    run.write_contract(contract)

    argv = [*done.command, *done.args]
    env = {**os.environ, **done.environment}
    files = [{"path": f.path, "data": base64.b64encode(f.data()).decode(), "mode": 0o755, "text": not f.base64}
             for f in done.files]
    notes = [f"image {task.image} is not pulled: the local runner runs the command with this machine's tools"]
    if isolated:
        for f in files:
            f.pop("text", None)
        cwd = TASK_WORK
        where = task_hosts.get(task.name, HOST_LOOPBACK) if group_network else "the host's network"
        notes.append(f"isolated: hostname {hostname(task.name)}, network {where}, private /tmp, "
                     f"{TASK_DATA} = {run.data}")
    else:
        cwd = os.path.join(run_root, "work")
        notes.extend(_remap_files(files, os.path.join(run_root, "files"), run.data, argv, env))
    for flag, text in ((task.privileged, "privileged"), (task.credentials, "credentials"),
                       (task.volume_mounts, "volumeMounts"), (task.checkpoints, "checkpoint")):
        if flag:
            notes.append(f"{text}: not supported by the local runner; ignored")
    hosts_file = None
    if isolated and group_network:
        hosts_file = os.path.join(run_root, "runner", "hosts")
        with open(hosts_file, "w", encoding="utf-8") as f:
            f.write("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
            f.writelines(f"{ip}\t{hostname(name)}\n" for name, ip in task_hosts.items())
    init = {"mode": isolation.mode, "network": "isolated" if group_network else "host",
            "hostname": hostname(task.name), "argv": argv, "env": env, "cwd": cwd, "files": files,
            "data_dir": run.data, "work_dir": os.path.join(run_root, "work"), "hosts_file": hosts_file,
            "grace": grace, "parent": parent}
    return AttemptPlan(run, contract, init, bool(task.inputs), notes)
