"""One task attempt as a pod: its outcome read from the container states the pod watcher reports.

The same interface as the local runner's ``Attempt`` (``poll``, ``done``, ``outcome``, ``stop``), so
``GroupRun``'s rules (exit actions, lead, restarts, timeouts) apply unchanged. How a pod maps to an
outcome (OSMO's codes, the highest winning):

- the ``osmo-download`` init container fails: 2010 (inputs could not be downloaded);
- a container cannot start (image pull errors, bad config) or the pod fails before the task ran
  (evicted, deleted by someone else): 3003, FAILED_START_ERROR;
- the ``task`` container's exit code is the command's code (1-255 user codes);
- the ``osmo-sidecar`` container fails: 2012 (outputs could not be uploaded).

Each container's termination message (``FallbackToLogsOnError``: the end of its log) gives the
reason. When the attempt ends, the logs of its containers are appended to the task log, so
``osmo workflow logs`` reads them after the pod is gone.
"""

from __future__ import annotations

import time

from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.contract import INPUT_FAILED, OUTPUT_FAILED
from osmo_run.kube.objects import INIT_CONTAINER, SIDECAR_CONTAINER, TASK_CONTAINER
from osmo_run.local import logs
from osmo_run.local.attempt import Outcome
from osmo_run.local.statuses import START_FAILED, highest_code

START_ERRORS = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                "CreateContainerError", "RunContainerError", "ErrImageNeverPull"}
FORCE_AFTER = 30.0  # seconds past the grace period before a pod whose node stays silent is force-deleted
LOG_LINES = 2000  # per container, appended to the task log when the attempt ends


def _states(pod: dict, key: str) -> dict[str, dict]:
    return {c["name"]: c.get("state") or {} for c in (pod.get("status") or {}).get(key) or []}


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else ""


class KubeAttempt:
    def __init__(self, *, kube, task: str, number: int, index: int, pod: str, log_path: str, record) -> None:
        self.kube = kube  # KubeContext: api, pool, watcher, grace
        self.task, self.number, self.index, self.pod = task, number, index, pod
        self.log_path, self.record = log_path, record
        self.phase = "PENDING"
        self.outcome = Outcome()
        self.pids: list[int] = []
        self.stop_kind: str | None = None
        self.node: str | None = None
        self._command_recorded = False
        self._deleting_since: float | None = None

    @property
    def done(self) -> bool:
        return self.phase == "DONE"

    @property
    def scheduled(self) -> bool:
        return self.node is not None or self.done

    # -- reading the pod -----------------------------------------------------------------------
    def poll(self, now: float) -> None:
        if self.done:
            return
        pod = self.kube.watcher.snapshot().get(self.pod)
        if pod is not None and self.stop_kind and self._deleting_since is not None \
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
        if done_init and done_init.get("exitCode", 0) != 0:
            why = _last_line(done_init.get("message")) or f"exit code {done_init.get('exitCode')}"
            self._data_failed(INPUT_FAILED, "download", why)
            self._finish()
            return
        task, sidecar = main.get(TASK_CONTAINER, {}), main.get(SIDECAR_CONTAINER, {})
        if task.get("running") and self.phase == "PENDING":
            self.phase = "RUNNING"
            self.record(status="RUNNING", started_at=time.time())
        ended = task.get("terminated")
        if ended and not self._command_recorded:
            self._command_recorded = True
            self.outcome.command_code = int(ended.get("exitCode", 0))
            self.record(command_exit_code=self.outcome.command_code, command_ended_at=time.time())
            self.phase = "UPLOADING"
        uploaded = sidecar.get("terminated")
        if ended and uploaded:
            if uploaded.get("exitCode", 0) != 0:
                why = _last_line(uploaded.get("message")) or f"exit code {uploaded.get('exitCode')}"
                self._data_failed(OUTPUT_FAILED, "upload", why)
            self._finish()
            return
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") and not ended:
            status = pod.get("status") or {}
            self._fail_start(f"the pod {phase.lower()} before its task ran: "
                             f"{status.get('reason') or ''} {status.get('message') or ''}".strip())
            self._finish()

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

    def _save_logs(self) -> None:
        core = client.CoreV1Api(self.kube.api)
        parts = []
        for container in (INIT_CONTAINER, TASK_CONTAINER, SIDECAR_CONTAINER):
            try:
                text = core.read_namespaced_pod_log(self.pod, self.kube.pool.namespace, container=container,
                                                    tail_lines=LOG_LINES, _request_timeout=10)
            except ApiException as exc:
                text = f"(no log: {exc.status} {exc.reason})\n"
            except Exception as exc:  # noqa: BLE001 - a log we cannot read must not fail the run
                text = f"(no log: {type(exc).__name__}: {exc})\n"
            if text:
                parts.append(f"--- pod {self.pod}, container {container} ---\n{text.rstrip()}\n")
        if parts:
            logs.note(self.log_path, "".join(parts).rstrip("\n"))

    # -- stopping ------------------------------------------------------------------------------
    def stop(self, kind: str, now: float) -> None:
        """Delete the pod (its containers get SIGTERM, then SIGKILL after the grace period)."""
        if self.done or self.stop_kind:
            return
        self.stop_kind = kind
        self.outcome.stopped = kind
        self._deleting_since = now
        if not self._delete(int(self.kube.grace)):
            self._finish()

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
