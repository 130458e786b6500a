"""Where the local runner keeps its state.

``$OSMO_STATE_DIR`` if set, else ``$XDG_STATE_HOME/osmo`` (by default ``~/.local/state/osmo``)::

    STATE/state.db                              workflows, groups, tasks, attempts, pool ledger (SQLite, WAL)
    STATE/workflows/<id>/spec.yaml              the rendered spec (also in the database)
    STATE/workflows/<id>/supervisor.log         the supervisor's own output (tracebacks if it crashed)
    STATE/workflows/<id>/logs/<task>.log        a task's log: runner notices ([osmo] ...), sidecar lines
                                                ([osmo-sidecar] ...) and the command's stdout and stderr
    STATE/workflows/<id>/runs/<task>/<attempt>/ one attempt's run directory (the sidecar contract's
                                                RUN_DIR: task.json, data/, status/) and runner/ files
"""

from __future__ import annotations

import os
import re

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def state_dir() -> str:
    """The state directory, absolute (child processes must find the same one)."""
    if os.environ.get("OSMO_STATE_DIR"):
        return os.path.abspath(os.environ["OSMO_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.abspath(os.path.join(base, "osmo"))


def safe_name(name: str) -> str:
    """A file name for a task or workflow name (they are already restricted; this is belt and braces)."""
    return _SAFE.sub("_", name) or "_"


class StatePaths:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root) if root else state_dir()

    @property
    def database(self) -> str:
        return os.path.join(self.root, "state.db")

    def workflow_dir(self, workflow_id: str) -> str:
        return os.path.join(self.root, "workflows", safe_name(workflow_id))

    def spec_file(self, workflow_id: str) -> str:
        return os.path.join(self.workflow_dir(workflow_id), "spec.yaml")

    def supervisor_log(self, workflow_id: str) -> str:
        return os.path.join(self.workflow_dir(workflow_id), "supervisor.log")

    def log_dir(self, workflow_id: str) -> str:
        return os.path.join(self.workflow_dir(workflow_id), "logs")

    def task_log(self, workflow_id: str, task: str) -> str:
        return os.path.join(self.log_dir(workflow_id), f"{safe_name(task)}.log")

    def run_dir(self, workflow_id: str, task: str, attempt: int) -> str:
        return os.path.join(self.workflow_dir(workflow_id), "runs", safe_name(task), str(attempt))
