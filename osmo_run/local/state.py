"""Workflow records on top of the database: create a workflow (allocating ``<name>-<n>``), update
workflows, groups, tasks and attempts, read everything back for ``list`` and ``query``, and mark the
workflows whose supervisor died as FAILED (``reconcile``).

Every CLI command opens its own ``StateStore``; the supervisor of a workflow is its only writer while
it runs (cancel requests and dead-supervisor reconciliation are the exceptions, both single rows).
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterable

from osmo_run.local import db
from osmo_run.local.errors import NotFound, closest, did_you_mean
from osmo_run.local.paths import StatePaths
from osmo_run.local.procs import ProcessIdentity
from osmo_run.local.statuses import GroupStatus, TaskStatus, WorkflowStatus, is_terminal
from osmo_run.spec import format_workflow_id, parse_workflow_id

STARTUP_GRACE = 60.0  # seconds a workflow may have no recorded supervisor (submit is starting it)

_COLUMNS = {
    "workflows": {"status", "reason", "exit_code", "started_at", "ended_at", "isolation",
                  "supervisor_pid", "supervisor_start", "supervisor_boot", "cancel_requested", "settings"},
    "groups": {"status", "reason", "exit_code", "scheduled_at", "started_at", "ended_at"},
    "tasks": {"status", "reason", "exit_code", "attempts", "host", "started_at", "ended_at"},
    "attempts": {"status", "reason", "exit_code", "command_exit_code", "run_dir", "started_at",
                 "command_started_at", "command_ended_at", "ended_at", "datasets_read", "datasets_written"},
}


def _assignments(table: str, fields: dict[str, Any]) -> tuple[str, list[Any]]:
    unknown = set(fields) - _COLUMNS[table]
    if unknown:
        raise ValueError(f"unknown {table} columns: {sorted(unknown)}")
    values = [json.dumps(v) if isinstance(v, (list, dict, tuple)) else getattr(v, "value", v)
              for v in fields.values()]
    return ", ".join(f"{k} = ?" for k in fields), values


class StateStore:
    def __init__(self, paths: StatePaths | None = None) -> None:
        self.paths = paths or StatePaths()
        self.paths.ensure_root()
        self.conn = db.connect(self.paths.database)

    def close(self) -> None:
        self.conn.close()

    # -- creating --------------------------------------------------------------------------------
    def create_workflow(self, name: str, spec: str, groups: Iterable[tuple[str, Iterable[tuple[str, bool]]]],
                        *, file: str | None, store: str | None, settings: dict[str, Any],
                        workflow_id: str | None = None) -> str:
        """Insert a PENDING workflow with its groups and tasks; returns its new id ``<name>-<n>`` (or
        ``workflow_id``, allocated elsewhere: a workflow record in the cluster)."""
        now = time.time()
        with db.transaction(self.conn) as c:
            if workflow_id is None:
                seq = c.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM workflows WHERE name = ?",
                                (name,)).fetchone()[0]
                workflow_id = format_workflow_id(name, seq)
            else:
                seq = parse_workflow_id(workflow_id)[1]
            c.execute("INSERT INTO workflows (id, name, seq, status, submitted_at, file, store, spec, settings) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                      (workflow_id, name, seq, WorkflowStatus.PENDING.value, now, file, store, spec,
                       json.dumps(settings)))
            task_position = 0
            for g_pos, (group, tasks) in enumerate(groups):
                c.execute("INSERT INTO groups (workflow_id, name, position, status) VALUES (?, ?, ?, ?)",
                          (workflow_id, group, g_pos, GroupStatus.WAITING.value))
                for task, lead in tasks:
                    c.execute("INSERT INTO tasks (workflow_id, name, group_name, position, lead, status) "
                              "VALUES (?, ?, ?, ?, ?, ?)",
                              (workflow_id, task, group, task_position, int(lead), TaskStatus.WAITING.value))
                    task_position += 1
        return workflow_id

    # -- updating --------------------------------------------------------------------------------
    def update_workflow(self, workflow_id: str, **fields: Any) -> None:
        sets, values = _assignments("workflows", fields)
        self.conn.execute(f"UPDATE workflows SET {sets} WHERE id = ?", (*values, workflow_id))

    def update_group(self, workflow_id: str, group: str, **fields: Any) -> None:
        sets, values = _assignments("groups", fields)
        self.conn.execute(f"UPDATE groups SET {sets} WHERE workflow_id = ? AND name = ?",
                          (*values, workflow_id, group))

    def update_task(self, workflow_id: str, task: str, **fields: Any) -> None:
        sets, values = _assignments("tasks", fields)
        self.conn.execute(f"UPDATE tasks SET {sets} WHERE workflow_id = ? AND name = ?",
                          (*values, workflow_id, task))

    def put_attempt(self, workflow_id: str, task: str, attempt: int, **fields: Any) -> None:
        """Create the attempt row if needed, then set ``fields``."""
        self.conn.execute("INSERT OR IGNORE INTO attempts (workflow_id, task, attempt, status) VALUES (?, ?, ?, ?)",
                          (workflow_id, task, attempt, TaskStatus.INITIALIZING.value))
        if fields:
            sets, values = _assignments("attempts", fields)
            self.conn.execute(f"UPDATE attempts SET {sets} WHERE workflow_id = ? AND task = ? AND attempt = ?",
                              (*values, workflow_id, task, attempt))

    def set_supervisor(self, workflow_id: str, who: ProcessIdentity) -> None:
        self.update_workflow(workflow_id, supervisor_pid=who.pid, supervisor_start=who.start,
                             supervisor_boot=who.boot)

    def request_cancel(self, workflow_id: str) -> None:
        self.update_workflow(workflow_id, cancel_requested=1)

    # -- reading ---------------------------------------------------------------------------------
    def workflow(self, workflow_id: str) -> dict[str, Any]:
        row = self.conn.execute("SELECT * FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
        if row is None:
            ids = [r[0] for r in self.conn.execute("SELECT id FROM workflows")]
            near = closest(workflow_id, ids)
            raise NotFound(f"no workflow {workflow_id!r} in {self.paths.root}"
                           + (did_you_mean(near) if near else " (see 'osmo workflow list')"),
                           workflow=workflow_id, suggestions=near or None)
        return dict(row)

    def workflows(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM workflows ORDER BY submitted_at, id").fetchall()
        return [dict(r) for r in rows]

    def groups(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM groups WHERE workflow_id = ? ORDER BY position", (workflow_id,))
        return [dict(r) for r in rows]

    def tasks(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM tasks WHERE workflow_id = ? ORDER BY position", (workflow_id,))
        return [dict(r) for r in rows]

    def attempts(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM attempts WHERE workflow_id = ? ORDER BY task, attempt",
                                 (workflow_id,)).fetchall()
        out = []
        for r in rows:
            item = dict(r)
            item["datasets_read"] = json.loads(item["datasets_read"] or "[]")
            item["datasets_written"] = json.loads(item["datasets_written"] or "[]")
            out.append(item)
        return out

    def supervisor_of(self, row: dict[str, Any]) -> ProcessIdentity | None:
        if row.get("supervisor_pid") is None:
            return None
        return ProcessIdentity(int(row["supervisor_pid"]), int(row["supervisor_start"]),
                               row.get("supervisor_boot") or "")

    # -- dead supervisors -----------------------------------------------------------------------
    def reconcile(self, workflow_id: str | None = None) -> list[str]:
        """Mark every unfinished workflow whose supervisor is gone (killed, crashed, machine
        restarted) as FAILED with the reason; returns their ids."""
        rows = [self.workflow(workflow_id)] if workflow_id else self.workflows()
        failed = []
        for row in rows:
            if is_terminal(row["status"]):
                continue
            who = self.supervisor_of(row)
            if who is None:
                if time.time() - row["submitted_at"] < STARTUP_GRACE:
                    continue
                reason = "the supervisor never started"
            elif who.alive():
                continue
            else:
                reason = (f"the supervisor (pid {who.pid}) died: killed, crashed or the machine restarted; "
                          f"see {self.paths.supervisor_log(row['id'])}")
            if self.fail_unfinished(row["id"], WorkflowStatus.FAILED, reason):
                failed.append(row["id"])
        return failed

    def fail_unfinished(self, workflow_id: str, status: WorkflowStatus, reason: str) -> bool:
        """End a workflow nobody runs any more: it, and its groups, tasks and attempts that had not
        finished, get ``status`` (FAILED_* for groups and tasks too) and ``reason``."""
        now = time.time()
        part_status = status.value if status != WorkflowStatus.FAILED else "FAILED"
        with db.transaction(self.conn) as c:
            row = c.execute("SELECT status FROM workflows WHERE id = ?", (workflow_id,)).fetchone()
            if row is None or is_terminal(row["status"]):
                return False
            c.execute("UPDATE workflows SET status = ?, reason = ?, ended_at = ? WHERE id = ?",
                      (status.value, reason, now, workflow_id))
            for table in ("groups", "tasks"):
                for item in c.execute(f"SELECT name, status FROM {table} WHERE workflow_id = ?", (workflow_id,)):
                    if not is_terminal(item["status"]):
                        c.execute(f"UPDATE {table} SET status = ?, reason = ?, ended_at = ? "
                                  "WHERE workflow_id = ? AND name = ?",
                                  (part_status, reason, now, workflow_id, item["name"]))
            c.execute("UPDATE attempts SET status = ?, reason = ?, ended_at = ? WHERE workflow_id = ? "
                      "AND status IN ('INITIALIZING', 'RUNNING')", (part_status, reason, now, workflow_id))
            c.execute("DELETE FROM allocations WHERE workflow_id = ?", (workflow_id,))
            c.execute("DELETE FROM gpu_assignments WHERE workflow_id = ?", (workflow_id,))
        return True
