"""The task container's PID 1 (``objects.WRAPPER``), run by ``/bin/sh`` as PID 1 of a private PID namespace
(``unshare --pid --fork --mount-proc``: its ``kill -1`` reaches that namespace's processes only), with the run
directory moved to a temporary folder.

The runner stops a running task by signalling every process of its container but PID 1 (``podexec.py``).
When the command ends on its own just as that signal comes, the wrapper's ``mkdir``/``mv`` that record the
exit code must not be killed with it: the sidecar would wait for the exit code forever (seen on the real
node: a pod whose task container had ended, its sidecar still waiting after 7 minutes). Should the wrapper
still not record it, the runner's ``RECORD_SCRIPT`` does, never over one the wrapper recorded."""

from __future__ import annotations

import os
import subprocess

import pytest

from helpers.tools import require_tool
from osmo_run.kube.objects import RUN_DIR, WRAPPER
from osmo_run.kube.podexec import RECORD_SCRIPT

SLOW_TOOLS = ("mv",)  # sleeps 1 s first: the stop signal comes while it moves the exit code in place


def _run_wrapper(tmp_path, command: str) -> tuple[subprocess.CompletedProcess, str]:
    require_tool("unshare")
    run_dir = tmp_path / "run"
    (run_dir / "status").mkdir(parents=True)
    (run_dir / "status" / "go").write_text("")
    tools = tmp_path / "slow-tools"
    tools.mkdir()
    for name in SLOW_TOOLS:
        real = subprocess.run(["sh", "-c", f"command -v {name}"], capture_output=True, text=True).stdout.strip()
        (tools / name).write_text(f'#!/bin/sh\nsleep 1\nexec {real} "$@"\n')
        (tools / name).chmod(0o755)
    wrapper = WRAPPER.replace(RUN_DIR, str(run_dir))
    env = {"PATH": f"{tools}:/usr/sbin:/usr/bin:/sbin:/bin"}
    proc = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "/bin/sh", "-c", wrapper, "osmo-task",
                           "sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    exit_code = run_dir / "status" / "exit_code"
    return proc, exit_code.read_text() if exit_code.exists() else ""


def test_a_command_ending_as_the_stop_signal_comes_still_leaves_its_exit_code(tmp_path):
    # the command ends at once; 0.3 s later, as the runner's stop does, TERM to every process but PID 1,
    # while the wrapper's (slow) mv is putting the exit code in place
    proc, recorded = _run_wrapper(tmp_path, "(sleep 0.3; kill -TERM -1) </dev/null >/dev/null 2>&1 & exit 7")
    assert proc.returncode == 7, proc.stderr
    assert recorded == "7\n", f"no exit code recorded: {proc.stderr}"


def test_a_stopped_command_gives_its_signal_exit_code(tmp_path):
    proc, recorded = _run_wrapper(tmp_path, "(sleep 0.3; kill -TERM -1) </dev/null >/dev/null 2>&1 & sleep 30")
    assert recorded == "143\n" and proc.returncode == 143, proc.stderr


def _record(tmp_path, code: int) -> str:
    """Run the runner's ``RECORD_SCRIPT`` (``podexec.py``) on the run directory under ``tmp_path``; its output."""
    script = RECORD_SCRIPT.replace(RUN_DIR, str(tmp_path / "run"))
    done = subprocess.run(["/bin/sh", "-c", script, "osmo-record", str(code)], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_runner_records_an_exit_code_only_where_the_wrapper_did_not(tmp_path):
    status = tmp_path / "run" / "status"
    status.mkdir(parents=True)
    assert _record(tmp_path, 137) == "recorded"
    assert (status / "exit_code").read_text() == "137\n" and sorted(os.listdir(status)) == ["exit_code"]
    (status / "exit_code").write_text("3\n")  # what a wrapper recorded is kept
    assert _record(tmp_path, 137) == "present" and (status / "exit_code").read_text() == "3\n"
