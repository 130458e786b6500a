"""A gang-scheduled group from admission to its end.

- Every task gets an attempt; its inputs are downloaded; with ``barrier`` (the default) the commands
  of all tasks start together once every task's inputs are in place.
- The group ends when its lead ends: the other tasks are stopped (SIGTERM, SIGKILL after the grace
  period) and still upload their outputs. With ``ignoreNonleadStatus: false`` a failing non-lead
  task ends the group too, as FAILED.
- Exit actions: COMPLETE, FAIL or RESCHEDULE by exit code. RESCHEDULE starts a new attempt, up to
  the pool's ``reschedule_limit`` per task (then it FAILs): a lead's (or, with
  ``ignoreNonleadStatus: false``, any task's) restarts the whole group, a non-lead's only itself.
- The exec timeout (counted from admission) stops every task: FAILED_EXEC_TIMEOUT.
"""

from __future__ import annotations

import time

from osmo_run.contract import task_output_dataset
from osmo_run.local import logs, procs
from osmo_run.local.attempt import Attempt, Outcome
from osmo_run.local.context import RunContext
from osmo_run.local.errors import RunnerError
from osmo_run.local.engine_objects import GroupNetwork, labels, object_name
from osmo_run.local.isolation import Hub, address
from osmo_run.local.pool import GangPlan
from osmo_run.local.prepare import plan_attempt
from osmo_run.local.statuses import START_FAILED, GroupStatus, TaskStatus, highest_code
from osmo_run.spec import ExitAction, SpecError

# how a group ended early -> the status of its unfinished tasks, and of the group
ENDING_STATUS = {"timeout": TaskStatus.FAILED_EXEC_TIMEOUT, "cancel": TaskStatus.FAILED_CANCELED,
                 "queue": TaskStatus.FAILED_QUEUE_TIMEOUT}
ENDING_GROUP = {"timeout": GroupStatus.FAILED_EXEC_TIMEOUT, "cancel": GroupStatus.FAILED_CANCELED,
                "queue": GroupStatus.FAILED_QUEUE_TIMEOUT}
START_WAIT = 60.0  # seconds the others wait for the lead's command to start before its head start counts


class FailedAttempt:
    """An attempt that could not even be prepared (e.g. a token without a value): 3003."""

    phase, done, pids = "DONE", True, []

    def __init__(self, number: int, reason: str) -> None:
        self.number = number
        self.outcome = Outcome(code=START_FAILED, reason=f"start error: {reason}", start_failed=True)

    def poll(self, now: float) -> None: ...

    def stop(self, kind: str, now: float) -> None: ...


class TaskRun:
    def __init__(self, task, index: int) -> None:
        self.task, self.index, self.lead = task, index, task.lead
        self.attempt = None
        self.number = 0
        self.reschedules = 0
        self.status: TaskStatus | None = None  # final status, once decided
        self.reason = ""
        self.code: int | None = None
        self.handled = False  # the current attempt's end was handled


class GroupRun:
    def __init__(self, ctx: RunContext, group, plan: GangPlan) -> None:
        self.ctx, self.group, self.plan = ctx, group, plan
        self.tasks = [TaskRun(t, i) for i, t in enumerate(group.tasks)]
        timeout = ctx.workflow.timeout_for(group).exec_seconds
        self.exec_timeout = timeout if timeout is not None else ctx.settings.exec_timeout
        self.engine = ctx.engine.engine
        can_network = self.engine.networks if self.engine else ctx.isolation.namespaces
        self.network = can_network and ctx.settings.network == "isolated" and \
            not any(t.host_network for t in group.tasks)
        self.hosts = {t.name: address(i) for i, t in enumerate(group.tasks)}
        self.hub: Hub | None = None
        self.engine_network: GroupNetwork | None = None
        self.batch: list = []
        self.pending_go = None  # (attempts, lead, head start's end or None, give-up time) while the lead has its head start
        self.ending: tuple[str, str] | None = None  # (kind, reason) once the group is ending
        self.restarting = False
        self.status: GroupStatus | None = None
        self.exit_code: int | None = None
        self.started = 0.0

    # -- starting ------------------------------------------------------------------------------
    def start(self, now: float) -> None:
        self.started = now
        self._set_group(GroupStatus.INITIALIZING, started_at=time.time())
        if self.network:
            try:
                self._open_network()
            except RunnerError as exc:
                for tr in self.tasks:
                    tr.number += 1
                    tr.attempt = FailedAttempt(tr.number, str(exc))
                return
        for tr in self.tasks:
            self._new_attempt(tr)
        self._set_group(GroupStatus.RUNNING)

    def _open_network(self) -> None:
        """The group's own network: the engine's (a fixed address per task), else the namespaces hub."""
        if not self.engine:
            self.hub = Hub()
            return
        owner, workflow_id = procs.ProcessIdentity.of(self.ctx.pid), self.ctx.workflow_id
        self.engine_network = GroupNetwork(self.engine.cli(), object_name(owner, workflow_id, self.group.name),
                                           labels(owner, workflow_id, self.group.name))
        self.hosts = {t.name: self.engine_network.address(i) for i, t in enumerate(self.group.tasks)}

    def _new_attempt(self, tr: TaskRun) -> None:
        ctx, task = self.ctx, tr.task
        tr.number += 1
        tr.handled = False
        log = ctx.task_log(task.name)
        header = f"attempt {tr.number} of task {task.name} (group {self.group.name}, workflow {ctx.workflow_id})"
        notes = [header]
        if tr.number == 1:
            notes += self.plan.notes.get(task.name, [])
        if not self.engine and not ctx.isolation.namespaces and task.name not in ctx.noted_plain:
            ctx.noted_plain.add(task.name)
            notes.append(f"isolation: tasks run as plain host processes ({ctx.isolation.reason}); "
                         "{{host:TASK}} is 127.0.0.1 and tasks share /tmp, ports and the hostname")
        try:
            plan = plan_attempt(workflow_id=ctx.workflow_id, workflow=ctx.workflow, group=self.group, task=task,
                                attempt=tr.number, run_root=ctx.paths.run_dir(ctx.workflow_id, task.name, tr.number),
                                isolation=ctx.isolation, group_network=self.network, hosts=self.hosts,
                                versions=ctx.output_versions, store=ctx.store, grace=ctx.settings.grace_period,
                                parent=ctx.pid, credentials=ctx.credentials.get(task.name),
                                engine=ctx.engine, network_name=self.engine_network.name if self.engine_network else None,
                                capacity=ctx.capacity,
                                gpus=None if self.plan.gpus is None else self.plan.gpus.get(task.name, ()))
        except (SpecError, OSError) as exc:
            logs.note(log, "\n".join(notes + [f"the task could not be prepared: {exc}"]))
            tr.attempt = FailedAttempt(tr.number, str(exc))
            ctx.state.put_attempt(ctx.workflow_id, task.name, tr.number, status="INITIALIZING")
            return
        logs.note(log, "\n".join(notes + plan.notes))
        tr.attempt = Attempt(task=task.name, number=tr.number, index=tr.index, plan=plan, log_path=log,
                             sidecar=ctx.settings.sidecar_argv, grace=ctx.settings.grace_period,
                             record=ctx.record_attempt(task.name, tr.number))
        host = self.hosts[task.name] if self.network else "127.0.0.1"
        ctx.state.update_task(ctx.workflow_id, task.name, status=TaskStatus.RUNNING, attempts=tr.number,
                              host=host, **({"started_at": time.time()} if tr.number == 1 else {}))
        tr.attempt.begin()
        self.batch.append(tr.attempt)

    def _launch(self, batch: list, now: float) -> None:
        """Start the commands of ``batch`` together (the barrier): every task's view is set up
        first; then the lead's command starts, and the others' as soon as the lead listens on a TCP
        port or ``lead_head_start`` has passed (a lead that serves its group is reachable when the
        others start, as in OSMO's examples)."""
        starting = [a for a in batch if a.phase == "DOWNLOADED"]
        for a in starting:
            a.launch()
        for a in starting:
            error = a.wait_ready()
            if error:
                a.fail_start(error)
        for a in starting:
            if a.phase == "LAUNCHED" and self.hub:
                try:
                    self.hub.attach(a.proc.pid, a.index, a.number)
                except RunnerError as exc:
                    a.fail_start(str(exc))
        launched = [a for a in starting if a.phase == "LAUNCHED"]
        lead = next((a for a in launched if self.tasks[a.index].lead), None)
        delay = self.ctx.settings.lead_head_start
        if lead is None or delay <= 0 or len(launched) == 1:
            for a in launched:
                a.go()
            return
        lead.go()
        self.pending_go = ([a for a in launched if a is not lead], lead, None, now + delay + START_WAIT)

    def _release_pending(self, now: float) -> None:
        """The head start counts from the lead command's start (``command_started``), or, should it
        never say so, ends ``START_WAIT`` seconds later: the others then go whatever the lead does."""
        others, lead, deadline, give_up = self.pending_go
        if deadline is None and lead.command_started():
            deadline = now + self.ctx.settings.lead_head_start
            self.pending_go = (others, lead, deadline, give_up)
        if lead.phase == "RUNNING" and now < give_up and (deadline is None or now < deadline) \
                and not lead.listens():
            return
        self.pending_go = None
        for a in others:
            if a.phase == "LAUNCHED":
                a.go()

    # -- running -------------------------------------------------------------------------------
    def poll(self, now: float) -> bool:
        """Advance the group; True once it has ended (``status`` is then final)."""
        if self.pending_go:
            self._release_pending(now)
        for tr in self.tasks:
            if tr.attempt is not None:
                tr.attempt.poll(now)
        for tr in self.tasks:
            if tr.attempt is not None and tr.attempt.done and not tr.handled:
                tr.handled = True
                self._attempt_ended(tr, now)
        if self.restarting and all(tr.attempt.done for tr in self.tasks):
            self.restarting = False
            for tr in self.tasks:
                tr.status = None
                self._new_attempt(tr)
        if self.batch and not self.ending and not self.restarting:
            if not self.group.barrier:
                ready = [a for a in self.batch if a.phase in ("DOWNLOADED", "DONE")]
                self.batch = [a for a in self.batch if a not in ready]
                self._launch(ready, now)
            elif all(a.phase in ("DOWNLOADED", "DONE") for a in self.batch):
                batch, self.batch = self.batch, []
                self._launch(batch, now)
        if not self.ending and self.exec_timeout is not None and now - self.started > self.exec_timeout:
            self._end("timeout", f"exec timeout: the group ran longer than {self.exec_timeout:g} s", now)
        if all(tr.attempt is None or tr.attempt.done for tr in self.tasks) and (
                self.ending or all(tr.status is not None for tr in self.tasks)):
            self._finalize()
            return True
        return False

    def cancel(self, now: float) -> None:
        self._end("cancel", "canceled", now)

    def _attempt_ended(self, tr: TaskRun, now: float) -> None:
        out = tr.attempt.outcome
        self._remember_output(tr, out)
        if self.ending or self.restarting:
            return  # superseded by the group's end (settled in _finalize) or its restart
        if out.start_failed:
            action = ExitAction.FAIL
        else:
            action = tr.task.exit_actions.action_for(out.code if out.code is not None else 0)
        if action == ExitAction.RESCHEDULE:
            limit = self.ctx.settings.reschedule_limit
            if tr.reschedules < limit:
                tr.reschedules += 1
                self._record_attempt(tr, TaskStatus.RESCHEDULED, f"{out.reason}: rescheduled "
                                     f"({tr.reschedules} of {limit})")
                logs.note(self.ctx.task_log(tr.task.name), f"{out.reason}: RESCHEDULE ({tr.reschedules} of {limit})")
                if tr.lead or not self.group.ignore_nonlead_status:
                    self._restart(tr, now)
                else:
                    self._new_attempt(tr)
                return
            out.reason += f"; RESCHEDULE limit ({limit}) reached"
            action = ExitAction.FAIL
        if action == ExitAction.COMPLETE:
            self._settle(tr, TaskStatus.COMPLETED, out.reason if out.code else "")
            if tr.lead:
                self._end("lead", f"stopped when the lead task {tr.task.name!r} ended", now)
        else:
            failed = TaskStatus.FAILED_START_ERROR if out.start_failed else TaskStatus.FAILED
            self._settle(tr, failed, out.reason)
            if tr.lead or not self.group.ignore_nonlead_status:
                self._end("failed", f"stopped because task {tr.task.name!r} failed", now)

    def _restart(self, trigger: TaskRun, now: float) -> None:
        self.restarting = True
        self.batch = []
        self.pending_go = None
        for tr in self.tasks:
            if tr is not trigger and tr.attempt is not None:
                tr.attempt.stop("restart", now)
                if tr.status is None:
                    self._record_attempt(tr, TaskStatus.RESCHEDULED, f"restarted with task {trigger.task.name!r}")

    def _end(self, kind: str, reason: str, now: float) -> None:
        if self.ending:
            return
        self.ending = (kind, reason)
        self.batch = []
        self.pending_go = None
        for tr in self.tasks:
            if tr.attempt is not None and not tr.attempt.done:
                tr.attempt.stop(kind, now)

    # -- ending --------------------------------------------------------------------------------
    def _finalize(self) -> None:
        kind, reason = self.ending or ("", "")
        for tr in self.tasks:
            if tr.status is not None:
                continue
            out = tr.attempt.outcome if tr.attempt else Outcome()
            if kind in ENDING_STATUS:
                self._settle(tr, ENDING_STATUS[kind], reason if not out.code or out.code < 256 else out.reason)
            elif out.code is not None and out.code > 255:
                self._settle(tr, TaskStatus.FAILED, out.reason)  # e.g. its upload failed
            elif kind == "lead" and out.code == 0 and not out.stopped:
                self._settle(tr, TaskStatus.COMPLETED, "")  # its command had ended on its own: not stopped
            else:
                failed = kind == "failed"
                self._settle(tr, TaskStatus.FAILED if failed else TaskStatus.COMPLETED, reason, exit_code=None)
        lead = next(tr for tr in self.tasks if tr.lead)
        if kind in ENDING_GROUP:
            status = ENDING_GROUP[kind]
        elif lead.status != TaskStatus.COMPLETED:
            status = GroupStatus.FAILED
        elif not self.group.ignore_nonlead_status and any(tr.status != TaskStatus.COMPLETED for tr in self.tasks):
            status = GroupStatus.FAILED
        else:
            status = GroupStatus.COMPLETED
        if kind in ENDING_STATUS:
            why = reason
        elif status == GroupStatus.FAILED:  # the lead's reason first, else the first failed task's
            failed = sorted((tr for tr in self.tasks if tr.status != TaskStatus.COMPLETED), key=lambda t: not t.lead)
            why = failed[0].reason if failed else ""
        else:
            why = ""
        self.exit_code = highest_code(tr.code for tr in self.tasks)
        self._set_group(status, reason=why or None, exit_code=self.exit_code, ended_at=time.time())
        if self.hub:
            self.hub.close()
        if self.engine_network:
            self.engine_network.close()

    def _settle(self, tr: TaskRun, status: TaskStatus, reason: str, exit_code: int | None | str = "auto") -> None:
        out = tr.attempt.outcome if tr.attempt else Outcome()
        code = out.code if exit_code == "auto" else exit_code
        tr.status, tr.reason, tr.code = status, reason, code
        self._record_attempt(tr, status, reason, code)
        self.ctx.state.update_task(self.ctx.workflow_id, tr.task.name, status=status, reason=reason or None,
                                   exit_code=code, ended_at=time.time())

    def _record_attempt(self, tr: TaskRun, status: TaskStatus, reason: str, code: int | None | str = "auto") -> None:
        if tr.attempt is None:
            return
        out = tr.attempt.outcome
        self.ctx.state.put_attempt(self.ctx.workflow_id, tr.task.name, tr.attempt.number, status=status,
                                   reason=reason or None, exit_code=out.code if code == "auto" else code,
                                   ended_at=time.time())

    def _remember_output(self, tr: TaskRun, out: Outcome) -> None:
        name = task_output_dataset(self.ctx.workflow_id, tr.task.name)
        for item in out.datasets_written:
            if item.get("dataset") == name:
                self.ctx.output_versions[tr.task.name] = item.get("version")

    def _set_group(self, status: GroupStatus, **fields) -> None:
        self.status = status
        self.ctx.state.update_group(self.ctx.workflow_id, self.group.name, status=status, **fields)
