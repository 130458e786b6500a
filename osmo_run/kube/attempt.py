"""One task attempt as a pod: its outcome read from the container states the pod watcher reports.

The same interface as the local runner's ``Attempt`` (``poll``, ``done``, ``outcome``, ``stop``, and
``go`` for the group's barrier), so ``GroupRun``'s rules (exit actions, lead, restarts, timeouts)
apply unchanged. Phases:

    PENDING      the pod is created; not scheduled yet, or its init container downloads the inputs
    DOWNLOADED   the task container runs its wrapper, which waits for the barrier (``go``)
    STARTING     ``go`` is being delivered (``pods/exec`` in the sidecar container, ``podexec.py``)
    RUNNING      the command runs
    UPLOADING    the command ended; the sidecar container uploads the outputs
    DONE         ``outcome`` says how it ended

How a pod maps to an outcome (OSMO's codes, the highest winning):

- the ``osmo-download`` init container fails: 2010 (inputs could not be downloaded);
- a container cannot start (image pull errors, bad config) or the pod fails before the task ran
  (evicted, deleted by someone else), or ``go`` cannot be delivered for ``GO_GIVE_UP`` s: 3003,
  FAILED_START_ERROR;
- the ``task`` container's exit code is the command's code (1-255 user codes; 137 when the memory
  limit killed it);
- the ``osmo-sidecar`` container fails: 2012 (outputs could not be uploaded).

The task's wrapper records the command's exit code for the sidecar container before the task container
ends. A wrapper that could not (killed with SIGKILL by the node, a status folder the command removed) would
leave the sidecar waiting forever: ``RECORD_AFTER`` s after the runner saw the task container end with the
sidecar still running, it records the container's exit code there itself (``pods/exec``; nothing when one
is recorded) and says so in the task log; the sidecar then uploads as usual.

``stop(kind)`` ends it early as the local runner does: "cancel" and "restart" delete the pod (SIGTERM,
SIGKILL after the grace period; nothing uploaded), and so does any stop before the command started;
"lead", "failed" and "timeout" send SIGTERM to the command's processes only (``pods/exec`` in the task
container; SIGKILL after the grace period), so the sidecar container still uploads what the command
wrote. If the task container still runs ``KILL_SLACK`` s after the SIGKILL (or after a signal that
could not be delivered), the pod is deleted instead.

The sidecar containers' termination messages are their ``DataStatus`` (``--status-message``): the
dataset versions read and written (recorded per attempt, for ``osmo workflow query``) and the reason of a
failure; any other container's (``FallbackToLogsOnError``: the end of its log) gives the reason. While the
command runs, its lines are copied into the task log as they come (``livelog.py``); when the attempt ends,
the rest of the containers' logs are appended, the task's credential values masked, so ``osmo workflow
logs`` (and ``--follow``) read them while the pod runs and after it is gone.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.contract import INPUT_FAILED, OUTPUT_FAILED, DataStatus
from osmo_run.kube.livelog import LiveLog
from osmo_run.kube.objects import INIT_CONTAINER, SIDECAR_CONTAINER, TASK_CONTAINER
from osmo_run.local import logs
from osmo_run.local.attempt import NO_UPLOAD, Outcome
from osmo_run.local.logmask import text_masker
from osmo_run.local.statuses import START_FAILED, highest_code

START_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                "CreateContainerError", "RunContainerError", "ErrImageNeverPull"}
FORCE_AFTER = 30.0  # seconds past the grace period before a pod whose node stays silent is force-deleted
# seconds past the SIGKILL (or a signal that could not be delivered) before a task container the pod's status
# still shows running has its pod deleted; long, as a busy node reports a container's end late (and deleting
# the pod then would stop the upload under way)
KILL_SLACK = 60.0
GO_RETRY = 1.0  # seconds between two tries to deliver go
GO_GIVE_UP = 60.0  # seconds of failed tries before the attempt fails to start
# seconds after the task container's end (the sidecar still running) before the runner records its exit code
RECORD_AFTER = 10.0
LOG_LINES = 2000  # per container, appended to the task log when the attempt ends


def _states(pod: dict, key: str) -> dict[str, dict]:
    return {c["name"]: c.get("state") or {} for c in (pod.get("status") or {}).get(key) or []}


def read_container_log(api: client.ApiClient, namespace: str, pod: str, container: str,
                       tail_lines: int | None = None) -> str:
    """A container's log as text (``ApiException`` when the API server refuses). Read raw: the client's
    own decoding of this plain-text answer gives the repr of the bytes."""
    answer = client.CoreV1Api(api).read_namespaced_pod_log(pod, namespace, container=container, tail_lines=tail_lines,
                                                           _request_timeout=10, _preload_content=False)
    return answer.data.decode("utf-8", errors="replace")


def _epoch(stamp: str | None) -> float | None:
    """An API timestamp (RFC 3339, UTC) as seconds since the epoch."""
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() if stamp else None
    except ValueError:
        return None


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class KubeAttempt:
    def __init__(self, *, kube, task: str, number: int, index: int, pod: str, log_path: str, record,
                 secrets: tuple[str, ...] = ()) -> None:
        self.kube = kube  # KubeContext: api, pool, watcher, grace, exec
        self.task, self.number, self.index, self.pod = task, number, index, pod
        self.log_path, self.record = log_path, record
        self.mask = text_masker(secrets)
        self._reported: set[str] = set()  # the sidecar containers whose status was read
        self.phase = "PENDING"
        self.outcome = Outcome()
        self.pids: list[int] = []
        self.stop_kind: str | None = None
        self.node: str | None = None
        self._command_recorded = False
        self._deleting_since: float | None = None
        self._go = None  # the future of the go being delivered
        self._go_wait = self._go_sent = 0.0
        self._go_failing_since: float | None = None
        self._go_retry_at = 0.0
        self._signal = None  # the future of the SIGTERM/SIGKILL being delivered
        self._kill_at: float | None = None
        self._delete_at: float | None = None
        self._resignal_at: float | None = None  # when to try a signal that could not be delivered again
        self._record_at: float | None = None  # when to record the exit code if the wrapper did not
        self._record = None  # the future of that recording
        self.live: LiveLog | None = None  # copies the command's lines into the task log while it runs

    @property
    def done(self) -> bool:
        return self.phase == "DONE"

    @property
    def scheduled(self) -> bool:
        return self.node is not None or self.done

    def unscheduled_reason(self) -> str | None:
        """Why the cluster has not placed this attempt's pod yet (its ``PodScheduled`` condition, e.g.
        ``Unschedulable: 0/1 nodes are available: 1 Insufficient cpu.``); None once placed or not said."""
        if self.scheduled:
            return None
        pod = self.kube.watcher.snapshot().get(self.pod) or {}
        for condition in (pod.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
                text = ": ".join(x for x in (condition.get("reason"), condition.get("message")) if x)
                return " ".join(text.split()) or None
        return None

    # -- the barrier ---------------------------------------------------------------------------
    def go(self, listen_wait: float = 0.0) -> None:
        """Start the command (it waits in the task container); with ``listen_wait``, the delivery ends
        once the pod listens on a TCP port or after that many seconds (a lead's head start)."""
        if self.phase != "DOWNLOADED":
            return
        self.phase = "STARTING"
        self._go_wait, self._go_sent = listen_wait, time.time()
        self._go = self.kube.exec.go(self.pod, SIDECAR_CONTAINER, listen_wait)

    def _poll_go(self, now: float) -> None:
        if self.phase == "DOWNLOADED" and self._go_failing_since is not None and now >= self._go_retry_at:
            self.go(self._go_wait)  # a try that failed: again
        if self.phase != "STARTING" or not self._go.done():
            return
        result, self._go = self._go.result(), None
        if result.ok:
            self.phase = "RUNNING"  # as the local runner, the command's start is when it was told to go
            self.record(status="RUNNING", started_at=self._go_sent, command_started_at=self._go_sent)
            self.live = LiveLog(self.kube.api, self.kube.pool.namespace, self.pod, self.log_path, self.mask,
                                self._read_log).start()
            return
        if self._go_failing_since is None:
            self._go_failing_since = now
            logs.note(self.log_path, f"cannot start the command yet ({result.error}); trying again")
        if now - self._go_failing_since > GO_GIVE_UP:
            self._fail_start(f"the command could not be started in pod {self.pod}: {result.error}")
            self._delete(0)
            self._finish()
            return
        self.phase, self._go_retry_at = "DOWNLOADED", now + GO_RETRY

    # -- reading the pod -----------------------------------------------------------------------
    def poll(self, now: float) -> None:
        if self.done:
            return
        self._poll_go(now)
        if self.done:
            return
        self._poll_stop(now)
        pod = self.kube.watcher.snapshot().get(self.pod)
        if pod is not None and self._deleting_since is not None \
                and now - self._deleting_since > self.kube.grace + FORCE_AFTER:
            self._deleting_since = None  # its node does not confirm (gone, or unreachable): force it
            self._delete(0)
        if pod is None:
            if self.pod in self.kube.watcher.deleted():
                if not self.stop_kind:
                    self._fail_start("the pod was deleted before its task ended")
                self._finish()
            return
        self.node = (pod.get("spec") or {}).get("nodeName") or self.node
        init = _states(pod, "initContainerStatuses").get(INIT_CONTAINER, {})
        main = _states(pod, "containerStatuses")
        for state in [init, *main.values()]:
            waiting = state.get("waiting") or {}
            if waiting.get("reason") in START_ERRORS:
                self._fail_start(f"{waiting['reason']}: {waiting.get('message', '')}".rstrip(": "))
                self._delete(0)
                self._finish()
                return
        done_init = init.get("terminated")
        read = self._data_status(INIT_CONTAINER, done_init)
        if done_init and done_init.get("exitCode", 0) != 0:
            why = (read.message if read else _last_line(done_init.get("message"))) \
                or f"exit code {done_init.get('exitCode')}"
            self._data_failed(INPUT_FAILED, "download", why)
            self._finish()
            return
        task, sidecar = main.get(TASK_CONTAINER, {}), main.get(SIDECAR_CONTAINER, {})
        if task.get("running") and self.phase == "PENDING":
            self.phase = "DOWNLOADED"
        ended = task.get("terminated")
        if ended and not self._command_recorded:
            self._command_recorded = True
            self.outcome.command_code = int(ended.get("exitCode", 0))
            # finishedAt has whole seconds: never before the command was told to go
            self.record(command_exit_code=self.outcome.command_code,
                        command_ended_at=max(_epoch(ended.get("finishedAt")) or time.time(), self._go_sent))
            self.phase = "UPLOADING"
            self._record_at = now + RECORD_AFTER
        uploaded = sidecar.get("terminated")
        written = self._data_status(SIDECAR_CONTAINER, uploaded)
        if ended and uploaded:
            if uploaded.get("exitCode", 0) != 0:
                why = (written.message if written else _last_line(uploaded.get("message"))) \
                    or f"exit code {uploaded.get('exitCode')}"
                self._data_failed(OUTPUT_FAILED, "upload", why)
            self._finish()
            return
        if ended:
            self._poll_record(now)
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and not ended:
            status = pod.get("status") or {}
            self._fail_start(f"the pod {phase.lower()} before its task ran: "
                             f"{status.get('reason') or ''} {status.get('message') or ''}".strip())
            self._finish()

    def _poll_record(self, now: float) -> None:
        """Record the task container's exit code for the upload if its wrapper did not (module docstring);
        tried again every ``RECORD_AFTER`` s while it cannot be delivered."""
        if self._record is not None and self._record.done():
            result, self._record = self._record.result(), None
            if not result.ok:
                self._record_at = now + RECORD_AFTER
            elif result.output.strip() == "recorded":
                logs.note(self.log_path, f"the task container ended (exit code {self.outcome.command_code}) without "
                                         "recording its exit code for the upload; the runner recorded it")
        if self._record is None and self._record_at is not None and now >= self._record_at:
            self._record_at = None
            self._record = self.kube.exec.record_exit_code(self.pod, SIDECAR_CONTAINER, self.outcome.command_code)

    def _data_status(self, container: str, terminated: dict | None) -> DataStatus | None:
        """The ``DataStatus`` a sidecar container ended with (its termination message); the datasets it
        read or wrote are recorded the first time it is seen."""
        status = DataStatus.from_message((terminated or {}).get("message"))
        if status is None or container in self._reported:
            return status
        self._reported.add(container)
        key = "datasets_read" if container == INIT_CONTAINER else "datasets_written"
        setattr(self.outcome, key, [dict(d) for d in status.datasets])
        self.record(**{key: getattr(self.outcome, key)})
        return status

    def _fail_start(self, reason: str) -> None:
        self.outcome.code, self.outcome.start_failed = START_FAILED, True
        self.outcome.reason = f"start error: {reason}"

    def _data_failed(self, code: int, step: str, why: str) -> None:
        self.outcome.code = highest_code([self.outcome.code, code])
        self.outcome.reason = f"{step} failed ({code}): {why}"

    def _finish(self) -> None:
        out = self.outcome
        out.code = highest_code([out.code, out.command_code])
        if not out.reason and out.command_code is not None:
            out.reason = f"exit code {out.command_code}"
        if not out.reason and self.stop_kind:
            out.reason = f"stopped ({self.stop_kind})"
        self.phase = "DONE"
        self._save_logs()

    def _read_log(self, container: str) -> str:
        return read_container_log(self.kube.api, self.kube.pool.namespace, self.pod, container, LOG_LINES)

    def _save_logs(self) -> None:
        """Append each container's log to the task log as its own lines (the command's output as the
        local runner writes it), under a runner notice naming the container; the init and task containers'
        are there already when the command's lines were copied as they came (``livelog.py``)."""
        live = self.live.finish() if self.live is not None else False
        for container in (INIT_CONTAINER, TASK_CONTAINER, SIDECAR_CONTAINER):
            if live and container != SIDECAR_CONTAINER:
                continue
            try:
                text = self._read_log(container)
            except ApiException as exc:
                logs.note(self.log_path, f"--- pod {self.pod}, container {container}: no log ({exc.status} "
                                         f"{exc.reason}) ---")
                continue
            except Exception as exc:  # noqa: BLE001 - a log we cannot read must not fail the run
                logs.note(self.log_path, f"--- pod {self.pod}, container {container}: no log ({type(exc).__name__}: "
                                         f"{exc}) ---")
                continue
            if not text:
                continue
            logs.note(self.log_path, f"--- pod {self.pod}, container {container} ---")
            text = self.mask(text)
            fd = logs.open_for_append(self.log_path)
            try:
                os.write(fd, (text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace"))
            finally:
                os.close(fd)

    # -- stopping ------------------------------------------------------------------------------
    def stop(self, kind: str, now: float) -> None:
        """End the attempt early (see the module docstring); harmless when it already ended."""
        if self.done or self.stop_kind in NO_UPLOAD:
            return
        first = self.stop_kind is None
        self.stop_kind = kind
        if self.phase != "UPLOADING":  # a command that already ended on its own was not stopped
            self.outcome.stopped = kind
        if kind in NO_UPLOAD or self.phase in ("PENDING", "DOWNLOADED", "STARTING"):
            self._stop_pod(now)
        elif self.phase == "RUNNING" and first:
            self._signal = self.kube.exec.signal_task(self.pod, TASK_CONTAINER, "TERM")
            self._kill_at = now + self.kube.grace

    def _stop_pod(self, now: float) -> None:
        """Delete the pod (its containers get SIGTERM, then SIGKILL after the grace period)."""
        self._kill_at = self._delete_at = self._resignal_at = None
        self._deleting_since = now
        if not self._delete(int(self.kube.grace)):
            self._finish()

    def _poll_stop(self, now: float) -> None:
        """The graceful stop of a running command: fall back to deleting the pod if the signal cannot be
        delivered or the task container does not end after SIGKILL."""
        if self._signal is not None and self._signal.done():
            result, self._signal = self._signal.result(), None
            if not result.ok and self.phase == "RUNNING":
                if self._delete_at is None:
                    logs.note(self.log_path, f"cannot signal the task ({result.error}): trying again; its pod is "
                                             f"deleted unless the task ends within {KILL_SLACK:g} s")
                    self._delete_at = now + KILL_SLACK
                self._resignal_at = now + GO_RETRY
        if self.phase != "RUNNING":
            return
        if self._resignal_at is not None and now >= self._resignal_at and self._signal is None:
            self._resignal_at = None
            self._signal = self.kube.exec.signal_task(self.pod, TASK_CONTAINER, "TERM" if self._kill_at else "KILL")
        elif self._kill_at is not None and now >= self._kill_at and self._signal is None:
            self._kill_at, self._delete_at = None, now + KILL_SLACK
            self._signal = self.kube.exec.signal_task(self.pod, TASK_CONTAINER, "KILL")
        elif self._delete_at is not None and now >= self._delete_at:
            self._stop_pod(now)

    def _delete(self, grace: int) -> bool:
        """Delete the pod; False if it was already gone."""
        try:
            client.CoreV1Api(self.kube.api).delete_namespaced_pod(self.pod, self.kube.pool.namespace,
                                                                  grace_period_seconds=grace)
            return True
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
