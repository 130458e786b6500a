"""Commands run in a pod's containers through the API server (``pods/exec``), off the supervisor's loop.

The runner uses them for what only a command inside the pod can do: start the task's command when the
group's barrier opens (``go``), stop it while its outputs are still uploaded (``signal_task``), and record
the exit code of a task container that ended without recording it (``record_exit_code``).
``PodExec.submit`` runs one command in a worker thread and returns a ``Future`` of an ``ExecResult``;
the supervisor polls it and never blocks. Each command gets an API client of its own: the official
client's ``stream()`` swaps the client's request method while it runs, which would break the pod
watcher's requests on a shared client.

The scripts need ``/bin/sh`` in the container they run in: the sidecar image for ``go`` (with ``awk``,
``cat`` and ``sleep``), the task's image for ``signal_task`` (which needs only the shell's ``kill``;
the task's wrapper is a shell script too).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from osmo_run.kube.objects import EXIT_CODE, GO_FILE

EXEC_TIMEOUT = 30.0
WORKERS = 4

# Opens the barrier of one task ($1 tenths of a second: how long to wait for the pod to listen on a TCP
# port, for a lead whose group starts after it): the task's wrapper starts its command once GO_FILE exists.
# The sidecar container shares the pod's network namespace, so /proc/net/tcp* show the task's sockets.
GO_SCRIPT = (f'touch {GO_FILE} || exit 3; i=0; while [ "$i" -lt "$1" ]; do '
             'cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk \'$4 == "0A" {f = 1} END {exit !f}\' && exit 0; '
             'sleep 0.1; i=$((i + 1)); done; exit 0')


# Signals every process of the container but PID 1 ($1: TERM or KILL) from the background, after 0.1 s.
SIGNAL_SCRIPT = '(sleep 0.1; kill -"$1" -1) </dev/null >/dev/null 2>&1 & exit 0'


# Records exit code $1 for the sidecar container as the task's wrapper does (a temporary name, then a rename),
# unless the wrapper recorded one; prints which.
RECORD_SCRIPT = (f'if [ -e {EXIT_CODE} ]; then echo present; exit 0; fi; '
                 f'printf "%s\\n" "$1" > {EXIT_CODE}.runner && mv -f {EXIT_CODE}.runner {EXIT_CODE} && echo recorded')


@dataclass(frozen=True)
class ExecResult:
    ok: bool  # the command ran and exited 0
    error: str = ""  # one line when not
    output: str = ""  # what it printed, when it exited 0


def run(api: client.ApiClient, namespace: str, pod: str, container: str, argv: list[str],
        timeout: float = EXEC_TIMEOUT) -> ExecResult:
    """Run ``argv`` in ``container`` of ``pod`` and wait for it (at most ``timeout`` s)."""
    own = client.ApiClient(configuration=api.configuration)
    try:
        resp = stream(client.CoreV1Api(own).connect_get_namespaced_pod_exec, pod, namespace, container=container,
                      command=argv, stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False,
                      _request_timeout=timeout)
        try:
            resp.run_forever(timeout=timeout)
            code = resp.returncode  # first: read_all() drops the error channel it is read from
            output = resp.read_all()
        finally:
            resp.close()
    except ApiException as exc:
        return ExecResult(False, f"pods/exec refused: {exc.status} {exc.reason}")
    except Exception as exc:  # noqa: BLE001 - the websocket library raises its own kinds
        return ExecResult(False, f"pods/exec failed: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    finally:
        own.close()
    if code == 0:
        return ExecResult(True, output=output or "")
    last = (output or "").strip().splitlines()[-1:] or [""]
    return ExecResult(False, f"exit code {code} in container {container}" + (f": {last[0][:200]}" if last[0] else ""))


class PodExec:
    """Commands in the pods of one namespace, run by a few worker threads."""

    def __init__(self, api: client.ApiClient, namespace: str, workers: int = WORKERS) -> None:
        self.api, self.namespace = api, namespace
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="osmo-pod-exec")

    def submit(self, pod: str, container: str, argv: list[str]) -> Future:
        return self._pool.submit(run, self.api, self.namespace, pod, container, argv)

    def go(self, pod: str, container: str, listen_wait: float = 0.0) -> Future:
        """Start the task's command; with ``listen_wait``, return once the pod listens on a TCP port or
        after that many seconds, whichever comes first."""
        return self.submit(pod, container, ["/bin/sh", "-c", GO_SCRIPT, "osmo-go", str(int(listen_wait * 10))])

    def signal_task(self, pod: str, container: str, signal_name: str) -> Future:
        """Send ``signal_name`` (TERM or KILL) to every process of the task's container except its
        wrapper (PID 1), which then records the command's exit code for the upload. The signal is sent
        by a background process a moment after the exec has returned: sent at once, the container could
        end (its wrapper exits with the command) before the exec reports, breaking the exec's stream."""
        return self.submit(pod, container, ["/bin/sh", "-c", SIGNAL_SCRIPT, "osmo-signal", signal_name])

    def record_exit_code(self, pod: str, container: str, code: int) -> Future:
        """Record ``code`` as the task's exit code for the upload unless one is recorded; the result's
        output says which (``recorded`` or ``present``). Run in the sidecar container (the status folder
        is shared and writable by both)."""
        return self.submit(pod, container, ["/bin/sh", "-c", RECORD_SCRIPT, "osmo-record", str(int(code))])

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
