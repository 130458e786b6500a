"""A workflow group on Kubernetes: its objects created at admission, its pods driven by ``GroupRun``.

``GroupRun`` (the local runner's) keeps the rules: exit actions, the lead ending the group,
RESCHEDULE restarting the group or one task, the exec timeout, cancel. This subclass replaces how
attempts start: at admission the PodGroup and the headless Service are created, and each attempt
is a Secret plus a Pod (``objects.py``); ``KubeAttempt`` reads its outcome from the pod watcher.
Stopping an attempt deletes its pod.

Scheduling is the cluster's: the group is INITIALIZING until every current pod is bound to a node,
then RUNNING. If that takes longer than the queue timeout, the group ends FAILED_QUEUE_TIMEOUT. The
exec timeout counts from when the group's first task container runs, its inputs downloaded (not from the
pods' creation: starting them can take a while on a busy node).

The barrier is the local runner's: each task container's wrapper waits until the runner says go, which
it does once every task of the group has its inputs (``barrier: false``: each task as soon as its own
are in). The lead's command starts first; the others once the lead's pod listens on a TCP port or
after ``lead_head_start``, so a lead that serves its group is reachable when its clients start.
"""

from __future__ import annotations

import json
import math
import posixpath
import time
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.contract import CheckpointSpec, TaskContract
from osmo_run.kube.apply import create
from osmo_run.kube.attempt import KubeAttempt
from osmo_run.kube.objects import (DATA_DIR, TaskPod, checkpoint_source, headless_service, host_name, names,
                                   pod_group, pod_name, task_pod, task_secret)
from osmo_run.kube.pool import KubePool
from osmo_run.kube.volumes import host_mounts
from osmo_run.local import logs
from osmo_run.local.context import RunContext
from osmo_run.local.credentials import TaskCredentials
from osmo_run.local.group_run import FailedAttempt, GroupRun
from osmo_run.local.prepare import contract_inputs, contract_outputs
from osmo_run.local.statuses import GroupStatus, TaskStatus
from osmo_run.spec import TASK_WORK, SpecError, substitute_task


HEAD_START_SLACK = 5.0  # seconds past the head start the others wait for the lead's go to be delivered


def _folder(path: str) -> str:
    """A task's folder as an absolute, normalised path (a relative one is below the work folder)."""
    return "/" + posixpath.normpath(posixpath.join(TASK_WORK, path)).lstrip("/")


@dataclass
class KubeContext:
    """What every group of one workflow shares on the cluster."""

    api: client.ApiClient
    pool: KubePool
    watcher: object  # watch.PodWatcher
    grace: float
    exec: object  # podexec.PodExec


def _api_error(exc: ApiException) -> str:
    return f"the API server refused it ({exc.status} {exc.reason})"


class KubeGroupRun(GroupRun):
    def __init__(self, ctx: RunContext, group, kube: KubeContext) -> None:
        super().__init__(ctx, group, plan=None)
        self.kube = kube
        self.network = False
        self.service = names(ctx.workflow_id, group.name)["service"]
        queue = ctx.workflow.timeout_for(group).queue_seconds
        self.queue_timeout = queue if queue is not None else ctx.settings.queue_timeout
        self.bound = False
        self.marked_running: dict[str, int] = {}  # task -> the attempt whose RUNNING was recorded
        self._unscheduled_noted: str | None = None  # the group's reason while the cluster has not placed it
        self.hosts = {t.name: f"{host_name(t.name)}.{self.service}" for t in group.tasks}

    def start(self, now: float) -> None:
        ctx, pool = self.ctx, self.kube.pool
        self.started = now
        self._set_group(GroupStatus.INITIALIZING, started_at=time.time())
        try:
            gang = pod_group(ctx.workflow_id, self.group.name, len(self.tasks), pool, self.queue_timeout)
            for obj in (gang, headless_service(ctx.workflow_id, self.group.name, pool)):
                if obj is not None:
                    create(self.kube.api, obj)
        except ApiException as exc:
            for tr in self.tasks:
                tr.number += 1
                tr.attempt = FailedAttempt(tr.number, f"the group's {obj['kind']}: {_api_error(exc)}")
            return
        for tr in self.tasks:
            self._new_attempt(tr)

    def _new_attempt(self, tr) -> None:
        ctx, task, pool = self.ctx, tr.task, self.kube.pool
        tr.number += 1
        tr.handled = False
        log = ctx.task_log(task.name)
        name = pod_name(ctx.workflow_id, task.name, tr.number)
        notes = [f"attempt {tr.number} of task {task.name} (group {self.group.name}, workflow {ctx.workflow_id}): "
                 f"pod {name} in namespace {pool.namespace}, scheduler {pool.scheduler}"]
        try:
            done = substitute_task(task, output=f"{DATA_DIR}/output",
                                   inputs=[f"{DATA_DIR}/input/{n}" for n in range(len(task.inputs))],
                                   hosts=self.hosts, workflow_id=ctx.workflow_id)
            pod = self._task_pod(tr, done)
            create(self.kube.api, task_secret(ctx.workflow_id, self.group.name, pod, pool))
            create(self.kube.api, task_pod(ctx.workflow_id, self.group.name, pod, pool))
        except (SpecError, ValueError) as exc:  # VolumeMountError too
            reason = str(exc)
        except ApiException as exc:
            reason = f"pod {name}: {_api_error(exc)}"
        else:
            reason = None
        ctx.state.put_attempt(ctx.workflow_id, task.name, tr.number, status="INITIALIZING")
        if reason is not None:
            logs.note(log, "\n".join(notes + [f"the task could not be started: {reason}"]))
            tr.attempt = FailedAttempt(tr.number, reason)
            return
        notes += self._credentials(task.name).notes
        notes += [f"volumeMounts: host {m} mounted" for m in task.volume_mounts]
        notes += [f"checkpoint: {c.path} copied to {c.url} every {c.frequency}" for c in done.checkpoints]
        logs.note(log, "\n".join(notes))
        tr.attempt = KubeAttempt(kube=self.kube, task=task.name, number=tr.number, index=tr.index, pod=name,
                                 log_path=log, record=ctx.record_attempt(task.name, tr.number),
                                 secrets=self._credentials(task.name).secrets)
        self.batch.append(tr.attempt)
        ctx.state.update_task(ctx.workflow_id, task.name, status=TaskStatus.INITIALIZING, attempts=tr.number,
                              host=self.hosts[task.name], **({"started_at": time.time()} if tr.number == 1 else {}))

    def _credentials(self, task: str) -> TaskCredentials:
        return self.ctx.credentials.get(task) or TaskCredentials({}, (), (), ())

    def _task_pod(self, tr, done) -> TaskPod:
        ctx = self.ctx
        shared: list[str] = []  # checkpoint folders outside /osmo/data, shared with the sidecar container
        checkpoints = tuple(CheckpointSpec(checkpoint_source(_folder(c.path), shared), c.url,
                                           float(c.frequency.seconds), c.regex) for c in done.checkpoints)
        creds = self._credentials(done.name)
        contract = TaskContract(
            workflow_id=ctx.workflow_id, task=done.name, group=self.group.name, attempt=tr.number,
            store=self.kube.pool.store or ctx.store, data_dir=DATA_DIR,
            inputs=contract_inputs(ctx.workflow_id, done, ctx.output_versions),
            outputs=contract_outputs(ctx.workflow_id, done),
            metadata={"workflow_id": ctx.workflow_id, "task": done.name, "group": self.group.name,
                      "attempt": str(tr.number)},
            checkpoints=checkpoints)
        res = ctx.workflow.resources_for(done)
        return TaskPod(name=done.name, image=done.image, argv=[*done.command, *done.args],
                       env=dict(done.environment), contract_json=json.dumps(contract.to_json()), attempt=tr.number,
                       files=[(f.path, f.data()) for f in done.files], cpu=res.cpu, memory=res.memory, gpu=res.gpu,
                       storage=res.storage, platform=res.platform, privileged=bool(done.privileged),
                       host_network=bool(done.host_network), credential_env=dict(creds.env),
                       credential_files=[(f.path, f.value) for f in creds.files], checkpoint_dirs=shared,
                       host_mounts=[(m.host, m.container) for m in host_mounts(done, self.kube.pool)])

    def _note_unscheduled(self, current: list) -> None:
        """While the group waits for the cluster, its reason says why (the scheduler's word on a pod), as the
        local pool's reason says what a SCHEDULING group waits for; ``query`` and ``osmo ui`` show it."""
        why = next((f"waiting for the cluster to schedule pod {a.pod}: {reason}"
                    for a in current if (reason := a.unscheduled_reason())), None)
        if why != self._unscheduled_noted:
            self._unscheduled_noted = why
            self.ctx.state.update_group(self.ctx.workflow_id, self.group.name, reason=why)

    def _launch(self, batch: list, now: float) -> None:
        """Say go to the tasks of ``batch`` whose inputs are in: the lead first (see the module docstring)."""
        starting = [a for a in batch if a.phase == "DOWNLOADED"]
        lead = next((a for a in starting if self.tasks[a.index].lead), None)
        delay = self.ctx.settings.lead_head_start
        if lead is None or delay <= 0 or len(starting) == 1:
            for a in starting:
                a.go()
            return
        lead.go(listen_wait=delay)
        self.pending_go = ([a for a in starting if a is not lead], lead, now + delay + HEAD_START_SLACK)

    def _release_pending(self, now: float) -> None:
        others, lead, deadline = self.pending_go
        if lead.phase == "STARTING" and now < deadline:
            return  # the lead's go returns once its pod listens, or after the head start
        self.pending_go = None
        for a in others:
            a.go()

    def poll(self, now: float) -> bool:
        if not self.bound and not self.ending:
            current = [tr.attempt for tr in self.tasks if isinstance(tr.attempt, KubeAttempt)]
            for a in current:
                a.poll(now)
            if current and all(a.scheduled for a in current):
                self.bound = True
                self.started = math.inf  # the exec timeout counts from the first task container's start (below)
                self._set_group(GroupStatus.RUNNING, reason=None)
                for tr in self.tasks:
                    if tr.status is None:
                        self.ctx.state.update_task(self.ctx.workflow_id, tr.task.name, status=TaskStatus.RUNNING)
            elif self.queue_timeout is not None and now - self.started > self.queue_timeout:
                self._end("queue", f"queue timeout: the cluster did not schedule the group within "
                                   f"{self.queue_timeout:g} s", now)
            else:
                self._note_unscheduled(current)
        if self.bound:  # a later attempt (a RESCHEDULE) is RUNNING again once its pod is scheduled
            for tr in self.tasks:
                a = tr.attempt
                if (tr.status is None and isinstance(a, KubeAttempt) and tr.number > 1 and a.scheduled
                        and self.marked_running.get(tr.task.name) != tr.number):
                    self.marked_running[tr.task.name] = tr.number
                    self.ctx.state.update_task(self.ctx.workflow_id, tr.task.name, status=TaskStatus.RUNNING)
        if self.bound and math.isinf(self.started) and any(
                isinstance(tr.attempt, KubeAttempt) and tr.attempt.phase != "PENDING" for tr in self.tasks):
            self.started = now
        return super().poll(now)
