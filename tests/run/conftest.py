"""Helpers for the local runner's tests: ``Osmo`` runs ``osmo workflow ...`` as a user does (a
separate process) with its own state dir, store, cache, user config and pool config, so tests never
share state (except where a test shares it on purpose). Tasks run as host processes
(``OSMO_ENGINE=none``) unless a test asks for a container engine (``podman_store``, test_engine_podman.py).

Tests marked ``osmo_late`` run at the end of the session: they check workflows submitted at its
start (the slow OSMO tutorials), which meanwhile run beside the other tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from helpers.tools import require_tool
from helpers.waiting import wait_for

from .podman_env import podman_store  # noqa: F401  (a private Podman storage with the test task image)

TERMINAL = {"COMPLETED", "FAILED", "FAILED_EXEC_TIMEOUT", "FAILED_QUEUE_TIMEOUT", "FAILED_CANCELED"}
NAMESPACE_TOOLS = ("unshare", "nsenter", "ip")  # without them the runner falls back to plain processes


def require_namespace_tools() -> None:
    """Fail the test (naming the install command) if the runner's namespace mode lacks a program."""
    for tool in NAMESPACE_TOOLS:
        require_tool(tool)


def pytest_configure(config):
    config.addinivalue_line("markers", "osmo_late: runs at the end (checks a workflow submitted early)")


def pytest_collection_modifyitems(config, items):
    late = [item for item in items if item.get_closest_marker("osmo_late")]
    items[:] = [item for item in items if not item.get_closest_marker("osmo_late")] + late


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


class Osmo:
    """``osmo workflow`` in a subprocess, with private state under ``root``."""

    def __init__(self, root: Path, **env: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("OSMO_")}
        self.env.update({
            "OSMO_STATE_DIR": str(self.root / "state"), "OSMO_STORE": str(self.root / "store"),
            "OSMO_CACHE_DIR": str(self.root / "cache"), "OSMO_CONFIG": str(self.root / "osmo-config.yaml"),
            "OSMO_POOL_CONFIG": str(self.root / "pool.yaml"), "COLUMNS": "200",
            "OSMO_SIDECAR_RETRY_DELAY": "0.2", "OSMO_ENGINE": "none"})  # host processes unless a test asks
        self.env.update(env)

    def pool(self, **settings) -> None:
        """Write the pool config (``grace_period`` and friends)."""
        Path(self.env["OSMO_POOL_CONFIG"]).write_text(yaml.safe_dump(settings))

    def __call__(self, *args: str, check: bool = True, timeout: float = 300, group: str = "workflow") -> Result:
        argv = [sys.executable, "-m", "osmo_store.cli.main", *([group] if group else []), *map(str, args)]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if check and proc.returncode != 0:
            raise AssertionError(f"osmo {group} {' '.join(map(str, args))} failed ({proc.returncode}):\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return result

    def submit(self, spec, *args: str, wait: bool = True, timeout: float = 300) -> str:
        """Submit; returns the workflow id (with ``wait``, after the workflow ended, whatever its status)."""
        result = self("submit", spec, *args, *(["--wait"] if wait else []), check=False, timeout=timeout)
        if result.code not in (0, 1) or not result.out.strip():
            raise AssertionError(f"submit failed ({result.code}): {result.out}\n{result.err}")
        return result.out.split()[0]

    def query(self, workflow_id: str) -> dict:
        return self("query", workflow_id, "--json").json()

    def status(self, workflow_id: str) -> str:
        """The workflow's status as ``query`` gives it (a dead supervisor's workflow reconciled), read from
        the state database in this process: polling with a Python per look took a core from the tasks."""
        from osmo_run.local.paths import StatePaths
        from osmo_run.local.state import StateStore

        state = StateStore(StatePaths(self.env["OSMO_STATE_DIR"]))
        try:
            state.reconcile(workflow_id)
            return state.workflow(workflow_id)["status"]
        finally:
            state.close()

    def wait(self, workflow_id: str, timeout: float = 240) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status(workflow_id)
            if status in TERMINAL:
                return self.query(workflow_id)
            if time.monotonic() > deadline:
                raise AssertionError(f"{workflow_id} still {status} after {timeout} s")
            time.sleep(0.3)

    def logs(self, workflow_id: str, task: str | None = None) -> str:
        return self("logs", workflow_id, *(["--task", task] if task else [])).out

    def wait_log(self, workflow_id: str, text: str, task: str | None = None, timeout: float = 30) -> str:
        """The logs once ``text`` appears in them (of ``task`` only, if given)."""
        def seen() -> str | None:
            out = self.logs(workflow_id, task)
            return out if text in out else None

        return wait_for(seen, timeout, f"{text!r} in the logs of {workflow_id}", interval=0.2)

    def processes(self) -> list[str]:
        """Command lines of every process whose environment mentions this test's folder (the
        supervisor, sidecars and taskinit inherit it), and of their descendants (task commands
        start with a minimal environment of their own)."""
        marker = str(self.root).encode()
        marked = set()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if marker in f.read():
                        marked.add(pid)
            except OSError:
                continue
        todo = list(marked)
        while todo:
            for child in _children(todo.pop()):
                if child not in marked:
                    marked.add(child)
                    todo.append(child)
        found = []
        for pid in sorted(marked, key=int):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append(f"{pid}: " + f.read().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                continue
        return found


    def processes_left(self, settle: float = 5.0) -> list[str]:
        """``processes()`` once they had ``settle`` seconds to end: the supervisor writes the workflow's
        end last, and its interpreter takes a moment to exit after that."""
        deadline = time.monotonic() + settle
        while (found := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.1)
        return found


def _children(pid: str) -> list[str]:
    found = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                found.extend(f.read().split())
    except OSError:
        pass
    return found


def tasks_of(info: dict) -> dict[str, dict]:
    """``query --json`` output -> {task name: task}."""
    return {t["name"]: t for g in info["groups"] for t in g["tasks"]}


def groups_of(info: dict) -> dict[str, dict]:
    return {g["name"]: g for g in info["groups"]}


def write_spec(folder: Path, text: str, name: str = "workflow.yaml") -> Path:
    path = Path(folder) / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


@pytest.fixture
def osmo(tmp_path) -> Osmo:
    """Private state; namespaces where the machine allows them (the default), 1 s grace period."""
    require_namespace_tools()
    runner = Osmo(tmp_path / "osmo")
    runner.pool(grace_period="1s", lead_head_start="0.2s")
    yield runner
    leftovers = runner.processes()
    if leftovers:  # never leave a test's processes behind, even when it failed
        for line in leftovers:
            try:
                os.kill(int(line.split(":")[0]), 9)
            except OSError:
                pass


@pytest.fixture(params=["namespaces", "none"])
def any_osmo(request, tmp_path) -> Osmo:
    """The same as ``osmo``, once with namespaces and once with plain host processes."""
    if request.param == "namespaces":
        require_namespace_tools()
    runner = Osmo(tmp_path / "osmo", OSMO_ISOLATION=request.param)
    runner.pool(grace_period="1s", lead_head_start="0.2s")
    runner.mode = request.param
    yield runner
    for line in runner.processes():
        try:
            os.kill(int(line.split(":")[0]), 9)
        except OSError:
            pass
