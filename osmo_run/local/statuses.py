"""OSMO's statuses for workflows, groups and tasks, and the rules that combine them.

Task lifecycle (as OSMO's): WAITING (upstream groups not done) -> SCHEDULING (waiting for the pool to
admit the whole group) -> INITIALIZING (run directory, contract, namespaces) -> RUNNING (inputs
downloaded by the sidecar, the command, outputs uploaded) -> COMPLETED or a FAILED_* status. An attempt
whose exit action was RESCHEDULE ends RESCHEDULED and a new attempt of the task starts.

Exit codes are OSMO's: user codes 0-255 (a signal N is 128+N), 2010 input download failed, 2012
output upload failed, 3000 upstream failed, 3003 the task could not start; when a task has several,
the highest wins, and a workflow's exit code is the highest of its tasks'.
"""

from __future__ import annotations

import enum
from typing import Iterable

from osmo_run.contract import INPUT_FAILED, OUTPUT_FAILED, UPSTREAM_FAILED

START_FAILED = 3003

__all__ = ["TaskStatus", "GroupStatus", "WorkflowStatus", "INPUT_FAILED", "OUTPUT_FAILED",
           "UPSTREAM_FAILED", "START_FAILED", "highest_code", "is_terminal"]


class TaskStatus(str, enum.Enum):
    WAITING = "WAITING"
    SCHEDULING = "SCHEDULING"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    RESCHEDULED = "RESCHEDULED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    FAILED_UPSTREAM = "FAILED_UPSTREAM"
    FAILED_EXEC_TIMEOUT = "FAILED_EXEC_TIMEOUT"
    FAILED_QUEUE_TIMEOUT = "FAILED_QUEUE_TIMEOUT"
    FAILED_CANCELED = "FAILED_CANCELED"
    FAILED_START_ERROR = "FAILED_START_ERROR"
    FAILED_SERVER_ERROR = "FAILED_SERVER_ERROR"


class GroupStatus(str, enum.Enum):
    WAITING = "WAITING"
    SCHEDULING = "SCHEDULING"
    INITIALIZING = "INITIALIZING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    FAILED_UPSTREAM = "FAILED_UPSTREAM"
    FAILED_EXEC_TIMEOUT = "FAILED_EXEC_TIMEOUT"
    FAILED_QUEUE_TIMEOUT = "FAILED_QUEUE_TIMEOUT"
    FAILED_CANCELED = "FAILED_CANCELED"
    FAILED_SERVER_ERROR = "FAILED_SERVER_ERROR"


class WorkflowStatus(str, enum.Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    FAILED_EXEC_TIMEOUT = "FAILED_EXEC_TIMEOUT"
    FAILED_QUEUE_TIMEOUT = "FAILED_QUEUE_TIMEOUT"
    FAILED_CANCELED = "FAILED_CANCELED"


_ACTIVE = {"PENDING", "WAITING", "SCHEDULING", "INITIALIZING", "RUNNING"}


def is_terminal(status: str) -> bool:
    """COMPLETED, RESCHEDULED and every FAILED_* status are final."""
    return str(getattr(status, "value", status)) not in _ACTIVE


def is_failure(status: str) -> bool:
    return str(getattr(status, "value", status)).startswith("FAILED")


def highest_code(codes: Iterable[int | None]) -> int | None:
    """The highest exit code (OSMO: when a task has several, the highest wins); None if none."""
    present = [c for c in codes if c is not None]
    return max(present) if present else None


def workflow_failure(group_statuses: Iterable[str]) -> WorkflowStatus:
    """The workflow's final status from its groups': a timeout status when a group timed out,
    FAILED otherwise (COMPLETED when every group completed)."""
    found = {str(getattr(s, "value", s)) for s in group_statuses}
    if found <= {"COMPLETED"}:
        return WorkflowStatus.COMPLETED
    if "FAILED_CANCELED" in found:
        return WorkflowStatus.FAILED_CANCELED
    if "FAILED_EXEC_TIMEOUT" in found:
        return WorkflowStatus.FAILED_EXEC_TIMEOUT
    if "FAILED_QUEUE_TIMEOUT" in found:
        return WorkflowStatus.FAILED_QUEUE_TIMEOUT
    return WorkflowStatus.FAILED
