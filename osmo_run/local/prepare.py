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
``files:``         at their paths, in the task's view    under RUN_DIR/files/<path> (/osmo/data/
                   (taskinit, ``taskfiles``)             output/x and /osmo/work/x: in RUN_DIR's
                                                         data/output and work); the path is
                                                         replaced in the command, args,
                                                         environment and the other files
=================  ====================================  =====================================
"""

from __future__ import annotations

import base64
import os
import socket
import re
from dataclasses import dataclass, field
from typing import Any

from osmo_run.contract import (InputSpec, OutputSpec, RunDir, TaskContract, task_output_dataset)
from osmo_run.local.credentials import TaskCredentials
from osmo_run.local.engine import Engine, EngineChoice
from osmo_run.local.engineplan import plan_container
from osmo_run.local.environment import task_environment
from osmo_run.local.gpus import Gpu, host_environment
from osmo_run.local.isolation import HOST_LOOPBACK, Isolation
from osmo_run.local.limits import TaskLimits
from osmo_run.local.settings import Capacity
from osmo_run.spec import (TASK_DATA, TASK_WORK, DatasetInput, DatasetOutput, SpecError, TaskInput, UrlInput,
                           UrlOutput, Workflow, file_path_conflict, normalise_file_path, substitute_task)


@dataclass
class AttemptPlan:
    run: RunDir
    contract: TaskContract
    init: dict[str, Any]  # taskinit's (or containerinit's) config, without the pipe fds
    has_inputs: bool
    notes: list[str] = field(default_factory=list)
    secrets: tuple[str, ...] = ()  # credential values the task log masks (logmask.py)
    secret_files: tuple[str, ...] = ()  # credential files on the host's disk, removed when the attempt ends
    image: dict[str, Any] | None = None  # with a container engine: the image step's config (containerinit)
    limits: TaskLimits | None = None  # host processes: the cgroup limits the attempt sets (cgroups.py)

    @property
    def launcher(self) -> str:
        """The module the task's command runs under."""
        return "osmo_run.local.containerinit" if self.image is not None else "osmo_run.local.taskinit"


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


def _file_paths(task) -> list[str]:
    """The paths of the task's ``files:`` in its view, normalised and checked again now that every
    token is replaced (the spec checked them with ``{{workflow_id}}`` and ``{{host:...}}`` unreplaced)."""
    paths: list[str] = []
    for i, f in enumerate(task.files):
        where = f"{task.path}.files[{i}].path"
        try:
            path = normalise_file_path(f.path)
        except ValueError as exc:
            raise SpecError(str(exc), path=where) from None
        clash = file_path_conflict(path, paths)
        if clash:
            raise SpecError(clash[1], path=where)
        paths.append(path)
    return paths


def _plain_path(path: str, root: str, data: str, work: str) -> tuple[str, str]:
    """Plain mode: the host folder and the relative path in it for the view path ``path`` (absolute,
    normalised): ``/osmo/data/output/x`` into the run's data folder, ``/osmo/work/x`` into its working
    folder, anything else under ``root`` (the attempt's ``files/``). Nothing lands outside them."""
    for view, host in ((TASK_DATA, data), (TASK_WORK, work)):
        if path.startswith(view + "/"):
            return host, path[len(view) + 1:]
    return root, path.lstrip("/")


def _remap_files(files: list[dict[str, Any]], root: str, data: str, work: str, argv: list[str],
                 env: dict[str, str]) -> list[str]:
    """Plain mode: place each file (its ``view`` path) in the attempt's folders (``_plain_path``) and
    replace its view path by the host path in argv, env and the other files' text; returns log notes."""
    moves = {}
    for f in files:
        f["root"], f["path"] = _plain_path(f["view"], root, data, work)
        moves[f["view"]] = os.path.join(f["root"], f["path"])
        os.makedirs(f["root"], exist_ok=True)  # the attempt's own folder; taskinit writes below it

    def swap(text: str) -> str:
        for old in sorted(moves, key=len, reverse=True):
            text = text.replace(old, moves[old])
        return text

    argv[:] = [swap(a) for a in argv]
    env.update({k: swap(v) for k, v in env.items() if any(old in v for old in moves)})
    for f in files:
        if f.pop("text", False):
            f["data"] = base64.b64encode(swap(base64.b64decode(f["data"]).decode("utf-8")).encode()).decode()
    return [f"files: {old} is written as {new} (plain processes share the host's folders)"
            for old, new in moves.items()]


CREDENTIAL_MODE = 0o600


def _credential_files(creds: TaskCredentials, taken: list[str]) -> list[dict[str, Any]]:
    """``files`` entries (taskinit's) of the task's credential files, mode 0600."""
    found = []
    for item in creds.files:
        clash = file_path_conflict(item.path, taken)
        if clash:
            raise SpecError(f"credentials: {clash[1]}")
        taken.append(item.path)
        found.append({"view": item.path, "data": base64.b64encode(item.value.encode()).decode(),
                      "mode": CREDENTIAL_MODE, "text": False})
    return found


def _on_host_disk(files: list[dict[str, Any]], creds: TaskCredentials, isolated: bool,
                  run_root: str) -> tuple[str, ...]:
    """The credential files that land on the host's disk: every one in plain mode, those in the
    working folder when isolated (elsewhere they are in the task's private tmpfs or overlay)."""
    views = {item.path for item in creds.files}
    found = []
    for f in files:
        if f["view"] not in views:
            continue
        if not isolated:
            found.append(os.path.join(f["root"], f["path"]))
        elif f["view"].startswith(TASK_WORK + "/"):
            found.append(os.path.join(run_root, "work", f["view"][len(TASK_WORK) + 1:]))
    return tuple(found)


def plan_attempt(*, workflow_id: str, workflow: Workflow, group, task, attempt: int, run_root: str,
                 isolation: Isolation, group_network: bool, hosts: dict[str, str],
                 versions: dict[str, int | None], store: str | None, grace: float,
                 parent: int, credentials: TaskCredentials | None = None, engine: EngineChoice | None = None,
                 network_name: str | None = None, capacity: Capacity | None = None,
                 gpus: tuple[Gpu, ...] | None = None) -> AttemptPlan:
    """Create the run directory and everything the attempt needs (raises ``SpecError`` when a
    token cannot be substituted or a ``files:`` path, tokens replaced, may not be written). With a
    container ``engine`` the command runs in the task's image (``engineplan``) on the group's
    ``network_name`` (None: the host's network). ``gpus``: the GPUs the pool assigned to the task
    (None: the pool does not assign GPUs)."""
    run = RunDir(run_root)
    for folder in (run.output_dir, os.path.dirname(run.status("x")), os.path.join(run_root, "work"),
                   os.path.join(run_root, "runner")):
        os.makedirs(folder, exist_ok=True)
    for n in range(len(task.inputs)):
        os.makedirs(run.input_dir(n), exist_ok=True)
    container = engine.engine if engine else None
    isolated = isolation.namespaces or container is not None
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
    creds = credentials or TaskCredentials({}, (), (), ())
    env = task_environment(workflow_id=workflow_id, group=group.name, task=task.name, attempt=attempt,
                           home=TASK_WORK if isolated else os.path.join(run_root, "work"),
                           hostname=hostname(task.name) if isolated else socket.gethostname(),
                           spec=done.environment, credentials=creds.env,
                           gpus=host_environment(gpus, True) if gpus is not None and container is None else None)
    files = [{"view": path, "data": base64.b64encode(f.data()).decode(), "mode": 0o755, "text": not f.base64}
             for path, f in zip(_file_paths(done), done.files)]
    files += _credential_files(creds, [f["view"] for f in files])
    limits = TaskLimits.of(workflow.resources_for(task), capacity).with_gpus(gpus or ())
    if container is not None:
        return _container_plan(container, run, contract, done, group=group.name, attempt=attempt, env=env,
                               files=files, creds=creds, limits=limits, hosts=task_hosts if group_network else {},
                               network=network_name if group_network else None, grace=grace, parent=parent)
    notes = [engine.image_note(task.image) if engine else
             f"image {task.image} is not pulled: the local runner runs the command with this machine's tools"]
    if isolated:
        for f in files:
            f.pop("text", None)
            f["root"], f["path"] = "/", f["view"].lstrip("/")
        cwd = TASK_WORK
        where = task_hosts.get(task.name, HOST_LOOPBACK) if group_network else "the host's network"
        notes.append(f"isolated: hostname {hostname(task.name)}, network {where}, private /tmp, "
                     f"{TASK_DATA} = {run.data}")
    else:
        cwd = os.path.join(run_root, "work")
        notes.extend(_remap_files(files, os.path.join(run_root, "files"), run.data, cwd, argv, env))
    if gpus is not None:
        notes.append(f"gpu: {', '.join(g.describe() for g in gpus)}: NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES "
                     f"name them" if gpus else "gpu: none assigned: NVIDIA_VISIBLE_DEVICES=void, CUDA_VISIBLE_DEVICES=")
    notes.extend(creds.notes)
    notes.extend(_ignored(task))
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
    return AttemptPlan(run, contract, init, bool(task.inputs), notes, creds.secrets,
                       _on_host_disk(files, creds, isolated, run_root), limits=limits)


def _container_plan(engine: Engine, run: RunDir, contract: TaskContract, task, *, group: str, attempt: int,
                    env: dict[str, str], files: list[dict[str, Any]], creds: TaskCredentials, limits: TaskLimits,
                    hosts: dict[str, str], network: str | None, grace: float, parent: int) -> AttemptPlan:
    """The attempt with a container engine: the image's PATH (unless the spec sets one), ``files:``
    under /osmo/work and /osmo/data/output written on the host, the others inside the container."""
    if "PATH" not in task.environment and "PATH" not in creds.env:
        env.pop("PATH", None)
    work = os.path.join(run.root, "work")
    for f in files:
        f.pop("text", None)
        root, path = _plain_path(f["view"], "", run.data, work)
        if root:
            f["root"], f["path"] = root, path
    init, image, notes = plan_container(
        engine=engine, run=run, work_dir=work, workflow_id=contract.workflow_id, group=group, task=task,
        attempt=attempt, hostname=hostname(task.name), network=network, address=hosts.get(task.name),
        peers={hostname(name): address for name, address in hosts.items()}, env=env, files=files, limits=limits,
        grace=grace, parent=parent)
    notes.extend(creds.notes)
    notes.extend(_ignored(task))
    return AttemptPlan(run, contract, init, bool(task.inputs), notes, creds.secrets,
                       _on_host_disk(files, creds, True, run.root), image)


def _ignored(task) -> list[str]:
    return [f"{text}: not supported by the local runner; ignored"
            for flag, text in ((task.privileged, "privileged"), (task.volume_mounts, "volumeMounts"),
                               (task.checkpoints, "checkpoint")) if flag]
