"""Logic of the Kubernetes side of ``exec`` and ``port-forward`` that needs no cluster: the exit code read
from an exec's Status, the one-line reason of a refused upgrade, ``running_pod``'s sentences for a task
that does not run (decided from the workflow's ``query`` before any API call), and the terminal's raw
mode restored after an exception and after a SIGTERM (on a real pseudo-terminal). The real node's tests
are tests/kube/test_node_interactive.py."""

from __future__ import annotations

import os
import pty
import signal
import termios
import time

import pytest
from kubernetes.client.rest import ApiException

from osmo_run.kube.execstream import api_reason, exit_status
from osmo_run.kube.interactive import running_pod
from osmo_run.kube.pool import KubePool
from osmo_run.kube.terminal import Terminal, Terminated
from osmo_run.local.errors import RunnerError


def test_exit_status_reads_success_an_exit_code_and_a_command_that_cannot_start():
    assert exit_status({"metadata": {}, "status": "Success"}) == (0, None)
    failed = {"status": "Failure", "reason": "NonZeroExitCode", "message": "command terminated with non-zero exit code",
              "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}}
    assert exit_status(failed) == (7, None)
    missing = {"status": "Failure", "message": 'OCI runtime exec failed: exec: "nope": executable file not found '
                                              "in $PATH: unknown"}
    assert exit_status(missing) == (127, missing["message"])
    denied = {"status": "Failure", "message": "OCI runtime exec failed: permission denied"}
    assert exit_status(denied) == (126, denied["message"])


def test_api_reason_is_the_status_message_of_a_refused_upgrade():
    exc = ApiException(status=0, reason='Handshake status 400 Bad Request -+-+- {} -+-+- b\'{"kind":"Status",'
                                         '"message":"container \\"nope\\" not found in pod","code":400}\'')
    assert api_reason(exc) == 'container "nope" not found in pod'
    assert api_reason(ApiException(status=0, reason="Connection refused\n  twice")) == "Connection refused twice"


def _info(status: str, exit_code=None, attempts=({"attempt": 1, "status": "INITIALIZING"},)) -> dict:
    return {"id": "wf-1", "status": "RUNNING", "groups": [
        {"name": "g", "tasks": [{"name": "t", "lead": True, "status": status, "exit_code": exit_code,
                                 "attempts": list(attempts)}]}]}


@pytest.mark.parametrize("status, words", [
    ("WAITING", ["task t is not running yet", "WAITING", "upstream"]),
    ("SCHEDULING", ["task t is not running yet", "SCHEDULING"]),
    ("INITIALIZING", ["task t is not running yet", "INITIALIZING", "starting"]),
    ("COMPLETED", ["task t has ended (COMPLETED, exit code 0)", "--debug"]),
    ("FAILED", ["task t has ended (FAILED, exit code 0)", "--debug"]),
])
def test_running_pod_says_what_a_task_that_does_not_run_waits_for_or_suggests_debug(status, words):
    with pytest.raises(RunnerError) as err:
        running_pod(_info(status, exit_code=0 if status in ("COMPLETED", "FAILED") else None), "t", KubePool())
    for word in words:
        assert word in str(err.value)
    assert err.value.exit_code == 4 and "\n" not in str(err.value)


def test_running_pod_names_the_closest_task_for_a_typo():
    with pytest.raises(RunnerError, match="did you mean 't'"):
        running_pod(_info("RUNNING"), "tt", KubePool())


@pytest.mark.parametrize("how", ["exception", "SIGTERM"])
def test_the_terminal_leaves_raw_mode_on_an_exception_and_on_sigterm(how):
    main, secondary = pty.openpty()
    saved = os.dup(0)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        os.dup2(secondary, 0)
        before = termios.tcgetattr(0)
        with pytest.raises(ZeroDivisionError if how == "exception" else Terminated):
            with Terminal(raw=True) as terminal:
                assert termios.tcgetattr(0)[3] & termios.ICANON == 0  # raw: no line editing
                if how == "exception":
                    1 / 0
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
        terminal.close()
        assert termios.tcgetattr(0) == before
        assert signal.getsignal(signal.SIGTERM) is handler
    finally:
        os.dup2(saved, 0)
        for fd in (saved, main, secondary):
            os.close(fd)
