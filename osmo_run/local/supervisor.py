"""The supervisor: ``python -m osmo_run.local.supervisor WORKFLOW_ID`` runs one workflow's DAG.

``submit`` starts it detached (its own session, output in ``supervisor.log``), so it survives the
submitting shell. It is single-threaded: one loop polls the groups every 50 ms. It is a child
subreaper, so daemons a task leaves behind come back to it and are ended. SIGTERM (``osmo workflow
cancel``) stops every task and marks what did not finish FAILED_CANCELED; if the supervisor itself
dies, its tasks die with it (PR_SET_PDEATHSIG) and readers mark the workflow FAILED.

Group order: a group is WAITING until every group it reads from is COMPLETED, then SCHEDULING until
the pool admits it whole (its queue timeout applies there; the group's reason and its tasks' logs
say what it waits for), then it runs (``group_run``). A failed
group makes every group downstream FAILED_UPSTREAM (exit code 3000); independent groups go on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback

from osmo_run.local import cgroups, logs, procs
from osmo_run.local.context import RunContext
from osmo_run.local.credentials import resolve_workflow
from osmo_run.local.errors import RunnerError
from osmo_run.local.group_run import GroupRun
from osmo_run.local.engine import EngineChoice, decide_engine
from osmo_run.local.engine_objects import sweep
from osmo_run.local.isolation import Isolation, decide, holder_pids
from osmo_run.local.paths import StatePaths
from osmo_run.local.pool import Ledger, plan_gang, pool_capacity, pool_gpus
from osmo_run.local.settings import Settings
from osmo_run.local.state import StateStore
from osmo_run.local.statuses import (UPSTREAM_FAILED, GroupStatus, TaskStatus, WorkflowStatus, highest_code,
                                     is_failure, workflow_failure)
from osmo_run.spec import Dag, load_rendered

TICK = 0.05  # seconds between two polls of the running groups
ADMIT_EVERY = 0.2  # seconds between two admission tries of a SCHEDULING group


class Supervisor:
    def __init__(self, workflow_id: str, paths: StatePaths | None = None) -> None:
        self.paths = paths or StatePaths()
        self.state = StateStore(self.paths)
        self.id = workflow_id
        self.row = self.state.workflow(workflow_id)
        self.me = procs.ProcessIdentity.of(os.getpid())
        self.cancel_requested = False
        self.runs: dict[str, GroupRun] = {}
        self.status: dict[str, GroupStatus] = {}
        self.scheduled_at: dict[str, float] = {}
        self.next_admit: dict[str, float] = {}
        self.waiting_for: dict[str, str] = {}  # group -> why the pool does not admit it, as last written
        self.shown: WorkflowStatus | None = None  # the status last written
        self.engine = EngineChoice(None, "not decided yet")

    # -- setup ---------------------------------------------------------------------------------
    def prepare(self) -> RunContext:
        self.state.set_supervisor(self.id, self.me)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        settings = Settings.from_json(json.loads(self.row["settings"] or "{}"))
        workflow = load_rendered(self.row["spec"], file=self.row["file"])
        self.engine = decide_engine(settings)
        cgroups.sweep()  # the host-process task cgroups that supervisors that died left
        if self.engine.engine:
            # no subreaper: the engine's own daemons (conmon, dnsmasq, ...) must not become our orphans
            isolation = Isolation("plain", "each task runs in a container")
            described = self.engine.engine.describe()
            sweep(self.engine.engine.cli())  # what supervisors that died left in the engine
        else:
            procs.set_child_subreaper()
            isolation = decide(settings)
            described = f"{isolation.describe()}; images are not used ({self.engine.reason})"
        print(f"workflow {self.id}: isolation {described}", flush=True)
        self.state.update_workflow(self.id, isolation=described)
        self.dag = Dag.from_workflow(workflow)
        self.ledger = Ledger(self.state.conn, self.me, pool_gpus(settings))
        credentials = resolve_workflow(workflow, settings.credentials, config=settings.source)
        return RunContext(self.id, workflow, self.state, self.paths, settings, isolation,
                          pool_capacity(settings), self.row["store"], credentials=credentials, engine=self.engine)

    def _on_term(self, *_):
        self.cancel_requested = True

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            ctx = self.prepare()
        except RunnerError as exc:
            self._fail_all(str(exc))
            return
        self.ctx = ctx
        self.status = {g.name: GroupStatus.WAITING for g in ctx.workflow.groups}
        last_db_check = 0.0
        while True:
            now = time.monotonic()
            if now - last_db_check > 0.5:
                last_db_check = now
                if self.state.workflow(self.id)["cancel_requested"]:
                    self.cancel_requested = True
            if self.cancel_requested:
                self._cancel(now)
            self._schedule(now)
            for name, run in list(self.runs.items()):
                if run.poll(now):
                    self.status[name] = run.status
                    del self.runs[name]
                    self._release(name)
            self._reap_orphans()
            if all(s not in (GroupStatus.WAITING, GroupStatus.SCHEDULING) for s in self.status.values()) \
                    and not self.runs:
                break
            self._workflow_progress()
            time.sleep(TICK)
        self._finish()

    def _schedule(self, now: float) -> None:
        ctx = self.ctx
        for group in ctx.workflow.groups:
            name = group.name
            state = self.status[name]
            if state == GroupStatus.WAITING:
                upstream = [self.status[u] for u in self.dag.upstream_of(name)]
                if any(is_failure(s) for s in upstream):
                    self._fail_upstream(group)
                elif all(s == GroupStatus.COMPLETED for s in upstream):
                    self.status[name] = GroupStatus.SCHEDULING
                    self.scheduled_at[name] = now
                    self.state.update_group(self.id, name, status=GroupStatus.SCHEDULING, scheduled_at=time.time())
                    for task in group.tasks:
                        self.state.update_task(self.id, task.name, status=TaskStatus.SCHEDULING)
            if self.status[name] == GroupStatus.SCHEDULING and now >= self.next_admit.get(name, 0.0):
                self.next_admit[name] = now + ADMIT_EVERY
                run = self._admit(group)
                if run is not None:
                    if not self.row.get("started_at"):
                        self.row["started_at"] = time.time()
                        self.state.update_workflow(self.id, started_at=self.row["started_at"])
                    self.runs[name] = run
                    self.status[name] = GroupStatus.RUNNING
                    if self.waiting_for.pop(name, None):
                        self.state.update_group(self.id, name, reason=None)
                    for task in group.tasks:
                        self.state.update_task(self.id, task.name, status=TaskStatus.INITIALIZING)
                    run.start(now)
                    continue
                queue = ctx.workflow.timeout_for(group).queue_seconds
                queue = queue if queue is not None else ctx.settings.queue_timeout
                if queue is not None and now - self.scheduled_at[name] > queue:
                    reason = f"queue timeout: the pool did not admit the group within {queue:g} s"
                    self._end_unstarted(group, GroupStatus.FAILED_QUEUE_TIMEOUT, TaskStatus.FAILED_QUEUE_TIMEOUT,
                                        reason, None)

    def _admit(self, group) -> GroupRun | None:
        """The group's run if the pool admits it whole now (the ledger is shared by workflows)."""
        ctx = self.ctx
        plan = plan_gang(ctx.workflow, group, ctx.settings, ctx.capacity)
        admission = self.ledger.try_admit(self.id, group.name, plan, ctx.capacity)
        if admission.admitted:
            plan.gpus = admission.gpus if self.ledger.gpus else None
            return GroupRun(ctx, group, plan)
        self._note_waiting(group, f"waiting for the pool: {admission.why}")
        return None

    def _note_waiting(self, group, why: str) -> None:
        """Record why the group waits (its reason in ``query``, a line in its tasks' logs) when that changes."""
        if self.waiting_for.get(group.name) == why:
            return
        self.waiting_for[group.name] = why
        self.state.update_group(self.id, group.name, reason=why)
        for task in group.tasks:
            logs.note(self.ctx.task_log(task.name), why)

    def _release(self, group: str | None = None) -> None:
        """Give back what the group (or, with None, the workflow) holds in the pool."""
        if group is None:
            self.ledger.release(self.id)
        else:
            self.ledger.release(self.id, group)

    def _fail_upstream(self, group) -> None:
        failed = [u for u in self.dag.upstream_of(group.name) if is_failure(self.status[u])]
        reason = f"upstream group {failed[0]!r} failed"
        self._end_unstarted(group, GroupStatus.FAILED_UPSTREAM, TaskStatus.FAILED_UPSTREAM, reason, UPSTREAM_FAILED)

    def _end_unstarted(self, group, gstatus: GroupStatus, tstatus: TaskStatus, reason: str, code: int | None) -> None:
        self.status[group.name] = gstatus
        now = time.time()
        self.state.update_group(self.id, group.name, status=gstatus, reason=reason, exit_code=code, ended_at=now)
        for task in group.tasks:
            self.state.update_task(self.id, task.name, status=tstatus, reason=reason, exit_code=code, ended_at=now)

    def _cancel(self, now: float) -> None:
        for run in self.runs.values():
            run.cancel(now)
        for group in self.ctx.workflow.groups:
            if self.status[group.name] in (GroupStatus.WAITING, GroupStatus.SCHEDULING):
                self._end_unstarted(group, GroupStatus.FAILED_CANCELED, TaskStatus.FAILED_CANCELED, "canceled", None)

    def _workflow_progress(self) -> None:
        running = bool(self.runs)
        started = any(s != GroupStatus.WAITING and s != GroupStatus.SCHEDULING for s in self.status.values())
        status = WorkflowStatus.RUNNING if running else (WorkflowStatus.WAITING if started else WorkflowStatus.PENDING)
        if status != self.shown:
            self.shown = status
            self.state.update_workflow(self.id, status=status)

    def _reap_orphans(self) -> None:
        """End and collect processes re-parented to us (daemons of tasks that already ended)."""
        known = {pid for run in self.runs.values() for tr in run.tasks if tr.attempt for pid in tr.attempt.pids}
        known |= {run.hub.proc.pid for run in self.runs.values() if run.hub} | holder_pids()
        for pid in procs.children(os.getpid()):
            if pid not in known and procs.is_running(pid):
                procs.signal_pid(pid, signal.SIGKILL)
            if pid not in known:
                procs.reap(pid)

    # -- the end -------------------------------------------------------------------------------
    def _finish(self) -> None:
        tasks = self.state.tasks(self.id)
        groups = self.state.groups(self.id)
        status = WorkflowStatus.FAILED_CANCELED if self.cancel_requested else workflow_failure(
            g["status"] for g in groups)
        code = highest_code(t["exit_code"] for t in tasks) if status != WorkflowStatus.COMPLETED else 0
        reason = None
        if status != WorkflowStatus.COMPLETED:
            first = next((g for g in groups if g["status"] != "COMPLETED" and g["status"] != "FAILED_UPSTREAM"),
                         None) or next((g for g in groups if g["status"] != "COMPLETED"), None)
            reason = "canceled" if self.cancel_requested else (
                f"group {first['name']!r} {first['status']}: {first['reason'] or ''}".rstrip(": ") if first else None)
        ended_at = time.time()
        self._release()
        if self.engine.engine:
            sweep(self.engine.engine.cli(), self.me)  # anything of ours a killed containerinit left
        cgroups.sweep(self.me)
        # last: once the workflow reads as ended, nothing of it is left in the engine or the cgroups
        self.state.update_workflow(self.id, status=status, exit_code=code, reason=reason, ended_at=ended_at)
        print(f"workflow {self.id}: {status.value}" + (f" ({reason})" if reason else ""), flush=True)

    def _fail_all(self, reason: str) -> None:
        print(f"workflow {self.id}: FAILED: {reason}", flush=True)
        now = time.time()
        for group in self.state.groups(self.id):
            self.state.update_group(self.id, group["name"], status=GroupStatus.FAILED, reason=reason, ended_at=now)
        for task in self.state.tasks(self.id):
            self.state.update_task(self.id, task["name"], status=TaskStatus.FAILED, reason=reason, ended_at=now)
        self.state.update_workflow(self.id, status=WorkflowStatus.FAILED, reason=reason, ended_at=now)


def main(argv: list[str], kind: type[Supervisor] = Supervisor) -> int:
    if len(argv) != 1:
        print(f"usage: python -m {kind.__module__} WORKFLOW_ID", file=sys.stderr)
        return 2
    supervisor = None
    try:
        supervisor = kind(argv[0])
        supervisor.run()
    except Exception as exc:  # noqa: BLE001 - the log is the only place a crash can be seen
        traceback.print_exc()
        if supervisor is not None:
            try:  # tasks die with this process (PR_SET_PDEATHSIG); say why in the record
                supervisor._fail_all(f"internal error in the supervisor: {type(exc).__name__}: {exc} "
                                     f"(see {supervisor.paths.supervisor_log(supervisor.id)})")
            except Exception:  # noqa: BLE001
                traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
