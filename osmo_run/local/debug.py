"""``osmo workflow exec --debug``: a shell in a copy of a task attempt that has ended (local runner).

The copy is the attempt's view made again as the runner made it (``prepare.plan_attempt`` with the
workflow's recorded spec and settings, the isolation and engine this machine has now, the credentials of
the calling shell): the same image or host view, ``files:``, environment, and the attempt's own run
folder, so its inputs, its output folder and its work folder are as the attempt left them (what the
shell changes there stays). Only the command differs: the copy runs ``sleep infinity`` instead, with the
host's network (the group's other tasks are not there), and ``exec`` opens the shell in it
(``access.TaskAccess``). When the shell exits, the copy is stopped and removed, with any credential files
it needed; the attempt's recorded contract is left as it was.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import tempfile
import time
from contextlib import contextmanager
from typing import Iterator

from osmo_run.contract import RunDir
from osmo_run.local import launcher, procs, service
from osmo_run.local.access import TaskAccess, make_record
from osmo_run.local.credentials import CredentialError, resolve_workflow
from osmo_run.local.engine import decide_engine
from osmo_run.local.errors import CONFLICT, NotFound, RunnerError, closest, did_you_mean
from osmo_run.local.isolation import Isolation, decide
from osmo_run.local.prepare import plan_attempt
from osmo_run.local.settings import Settings
from osmo_run.local.statuses import is_terminal
from osmo_run.spec import SpecError, load_rendered

KEEPER = ("sleep", "infinity")  # what the copy runs instead of the task's command
START_WAIT = 60.0
STOP_WAIT = 30.0


def ended_attempt(attempts: list[dict], workflow_id: str, task: str, retry: int | None) -> dict:
    """The attempt of ``task`` to copy (``retry``, default the last) from its ``attempts`` (each with
    ``attempt`` and ``status``); ``RunnerError`` unless it has ended (both runners' ``--debug``)."""
    if not attempts:
        raise RunnerError(f"task {task} has not run yet: there is nothing to debug", CONFLICT, task=task)
    numbers = [a["attempt"] for a in attempts]
    chosen = attempts[-1] if retry is None else next((a for a in attempts if a["attempt"] == retry), None)
    if chosen is None:
        raise NotFound(f"task {task} has no attempt {retry} (it has {', '.join(map(str, numbers))})", task=task)
    if not is_terminal(chosen["status"]):
        raise RunnerError(f"attempt {chosen['attempt']} of task {task} is {chosen['status']}: use "
                          f"'osmo workflow exec {workflow_id} {task}' to enter it", CONFLICT, task=task)
    return chosen


def _attempt(workflow_id: str, task: str, retry: int | None) -> tuple[dict, dict]:
    """The workflow's row and the chosen attempt's (default: the last) of ``task``."""
    state = service.open_state()
    try:
        state.reconcile(workflow_id)
        row = state.workflow(workflow_id)
        attempts = [a for a in state.attempts(workflow_id) if a["task"] == task]
        names = [t["name"] for t in state.tasks(workflow_id)]
    finally:
        state.close()
    if task not in names:
        raise NotFound(f"workflow {workflow_id} has no task {task!r}{did_you_mean(closest(task, names))}",
                       workflow=workflow_id, task=task)
    chosen = ended_attempt(attempts, workflow_id, task, retry)
    if not chosen.get("run_dir") or not os.path.isdir(chosen["run_dir"]):
        raise RunnerError(f"attempt {chosen['attempt']} of task {task} left no run folder", CONFLICT, task=task)
    return row, chosen


def _plan(row: dict, attempt: dict, task_name: str):
    settings = Settings.from_json(json.loads(row["settings"] or "{}"))
    if settings.runner != "local":
        raise RunnerError(f"workflow {row['id']} runs on {settings.runner}: its debug copy is a pod "
                          "(osmo_run/kube/debug.py), not a local one", CONFLICT)
    try:
        workflow = load_rendered(row["spec"], file=row["file"])
    except SpecError as exc:
        raise RunnerError(f"the workflow's recorded spec cannot be read: {exc}") from None
    group = next(g for g in workflow.groups if any(t.name == task_name for t in g.tasks))
    task = dataclasses.replace(workflow.task(task_name), command=KEEPER, args=())
    engine = decide_engine(settings)
    isolation = Isolation("plain", "a container") if engine.engine else decide(settings)
    try:
        credentials = resolve_workflow(workflow, settings.credentials, config=settings.source).get(task_name)
    except CredentialError as exc:
        raise RunnerError(f"the task's credentials: {exc}") from None
    contract = RunDir(attempt["run_dir"]).task_file
    kept = open(contract, "rb").read() if os.path.exists(contract) else None
    try:
        return plan_attempt(workflow_id=row["id"], workflow=workflow, group=group, task=task,
                            attempt=attempt["attempt"], run_root=attempt["run_dir"], isolation=isolation,
                            group_network=False, hosts={t.name: "127.0.0.1" for t in group.tasks}, versions={},
                            store=row["store"], grace=1.0, parent=os.getpid(), credentials=credentials,
                            engine=engine, network_name=None)
    except (SpecError, OSError) as exc:
        raise RunnerError(f"the copy of task {task_name} could not be prepared: {exc}") from None
    finally:
        if kept is not None:
            with open(contract, "wb") as f:
                f.write(kept)


def _left_in_run_folder(entry: dict) -> bool:
    """A ``files:`` entry the attempt wrote into its run folder (plain processes: every one; otherwise
    those under /osmo): it is there as the attempt left it, and is not written again."""
    return (bool(entry.get("root")) and entry["root"] != "/") or entry.get("view", "").startswith("/osmo/")


def _access(plan, proc: subprocess.Popen, describe: str) -> TaskAccess:
    """The copy's way in (its plan has no group network: ``network`` is the host's)."""
    return TaskAccess(make_record(proc.pid, plan.init, container=plan.image is not None), describe)


@contextmanager
def debug_copy(workflow_id: str, task: str, retry: int | None) -> Iterator[TaskAccess]:
    """The running copy of the attempt (see the module docstring), stopped and removed on exit."""
    row, attempt = _attempt(workflow_id, task, retry)
    plan = _plan(row, attempt, task)
    plan.init["files"] = [f for f in plan.init["files"] if not _left_in_run_folder(f)]
    spec = plan.init.get("container")
    if spec and spec.get("pidfile"):  # the attempt's own pid file names its ended container
        spec["pidfile"] = os.path.join(os.path.dirname(spec["pidfile"]), f"debug-{os.getpid()}.pid")
    describe = f"the debug copy of attempt {attempt['attempt']} of task {task}"
    with tempfile.TemporaryFile() as output:
        started = launcher.start(plan, output.fileno())
        try:
            error = started.wait_ready(START_WAIT)
            if error:
                raise RunnerError(f"{describe} could not start: {error}", CONFLICT, task=task)
            started.go()
            access = _access(plan, started.proc, describe)
            _wait_started(access, started.proc, output, describe)
            yield access
        finally:
            started.abort()
            _stop(started.proc)
            for path in [*plan.secret_files, *([spec["pidfile"]] if spec and spec.get("pidfile") else [])]:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass


def _wait_started(access: TaskAccess, proc: subprocess.Popen, output, describe: str) -> None:
    deadline = time.monotonic() + START_WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output.seek(0)
            said = output.read().decode(errors="replace").strip().splitlines()
            raise RunnerError(f"{describe} ended at once ({proc.returncode})" + (f": {said[-1]}" if said else ""),
                              CONFLICT)
        try:
            access.container_pid() if access.mode == "container" else access.command_pid()
            return
        except RunnerError:
            time.sleep(0.1)
    raise RunnerError(f"{describe} did not start within {START_WAIT:g} s", CONFLICT)


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the launcher (it stops the copy: SIGKILL after the 1 s grace period; a container is
    removed), SIGKILL if it takes longer than ``STOP_WAIT``."""
    if proc.poll() is None:
        procs.signal_pid(proc.pid, signal.SIGTERM)
        try:
            proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            procs.signal_pid(proc.pid, signal.SIGKILL)
            proc.wait()
