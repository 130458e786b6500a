"""Where the local runner keeps its state.

``$OSMO_STATE_DIR`` if set, else ``$XDG_STATE_HOME/osmo`` (by default ``~/.local/state/osmo``)::

    STATE/state.db                              workflows, groups, tasks, attempts, pool ledger (SQLite, WAL)
    STATE/workflows/<id>/spec.yaml              the rendered spec (also in the database)
    STATE/workflows/<id>/supervisor.log         the supervisor's own output (tracebacks if it crashed)
    STATE/workflows/<id>/logs/<task>.log        a task's log: runner notices ([osmo] ...), sidecar lines
                                                ([osmo-sidecar] ...) and the command's stdout and stderr
    STATE/workflows/<id>/runs/<task>/<attempt>/ one attempt's run directory (the sidecar contract's
                                                RUN_DIR: task.json, data/, status/) and runner/ files

Workflow state is its owner's only: the runner creates folders 0700 and files 0600 (``ensure_root``,
``private_dir``; the supervisor runs with umask 077), and tightens a state directory of its own
(holding ``state.db`` or ``workflows/``, or empty) that others could read.
"""

from __future__ import annotations

import os
import re
import stat

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600
PRIVATE_UMASK = 0o077


def state_dir() -> str:
    """The state directory, absolute (child processes must find the same one)."""
    if os.environ.get("OSMO_STATE_DIR"):
        return os.path.abspath(os.environ["OSMO_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.abspath(os.path.join(base, "osmo"))


def safe_name(name: str) -> str:
    """A file name for a task or workflow name (they are already restricted; this is belt and braces)."""
    return _SAFE.sub("_", name) or "_"


def tighten(path: str, mode: int) -> None:
    """Give ``path`` (ours, not a shared sticky folder such as /tmp) ``mode`` if others may access it."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX and not stat.S_ISLNK(info.st_mode) \
            and stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, mode)


class StatePaths:
    def __init__(self, root: str | None = None) -> None:
        self.root = os.path.abspath(root) if root else state_dir()

    def ensure_root(self) -> None:
        """Create the state directory (0700) and ``workflows/``; tighten them when they exist."""
        os.makedirs(os.path.dirname(self.root), exist_ok=True)
        try:
            os.mkdir(self.root, PRIVATE_DIR)
        except FileExistsError:
            entries = set(os.listdir(self.root))
            if not entries or entries & {"state.db", "workflows"}:
                tighten(self.root, PRIVATE_DIR)
        self.private_dir(os.path.join(self.root, "workflows"))

    def private_dir(self, path: str) -> str:
        """Create ``path`` (under the state directory) and the folders between: each 0700."""
        relative = os.path.relpath(path, self.root)
        current = self.root
        for part in [] if relative == "." else relative.split(os.sep):
            current = os.path.join(current, part)
            try:
                os.mkdir(current, PRIVATE_DIR)
            except FileExistsError:
                tighten(current, PRIVATE_DIR)
        return path

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
