"""``osmo workflow exec --debug``: a shell or a command in a copy of an ended attempt (local runner, namespaces
and plain processes): the attempt's output and work folders as it left them, its environment and
``files:``, any attempt by ``--retry``, Ctrl-C on the terminal, the exit code; the copy is gone after, and
the attempt's record is untouched."""

from __future__ import annotations

import sys
import time
from pathlib import Path


from osmo_run.contract import RunDir

from .conftest import tasks_of, write_spec
from .test_interactive import Terminal

SPEC = """
workflow:
  name: dbg
  tasks:
  - name: t
    image: u
    environment: {VAR: value-1}
    files: [{path: /tmp/conf.txt, contents: "conf of t"}]
    exitActions: {RESCHEDULE: "3"}
    command: [sh, -c, "cat /proc/sys/kernel/random/uuid > {{output}}/token.txt; echo scratch > scratch.txt; exit 3"]
"""


def _debug(osmo, *args: str):
    return osmo("exec", "--debug", *args, check=False)


def test_debug_copies_each_attempt_as_it_was_and_leaves_nothing(any_osmo, tmp_path):
    any_osmo.pool(grace_period="1s", reschedule_limit=1)
    workflow_id = any_osmo.submit(write_spec(tmp_path, SPEC))
    info = any_osmo.query(workflow_id)
    attempts = tasks_of(info)["t"]["attempts"]
    assert info["status"] == "FAILED" and [a["status"] for a in attempts] == ["RESCHEDULED", "FAILED"]
    tokens = [(Path(a["run_dir"]) / "data" / "output" / "token.txt").read_text().strip() for a in attempts]
    contracts = [Path(RunDir(a["run_dir"]).task_file).read_bytes() for a in attempts]
    output = "/osmo/data/output" if any_osmo.mode == "namespaces" else "$(dirname $PWD)/data/output"
    script = f"cat {output}/token.txt; cat scratch.txt; echo $VAR; hostname; exit 6"
    for retry, token in ((None, tokens[1]), ("1", tokens[0])):
        done = _debug(any_osmo, *(["--retry", retry] if retry else []), workflow_id, "t", "--", "sh", "-c", script)
        assert done.code == 6, done.err
        lines = done.out.splitlines()
        assert lines[:3] == [token, "scratch", "value-1"], done.out
        assert "the debug copy of attempt" in done.err
        if any_osmo.mode == "namespaces":
            assert lines[3] == "t"
            conf = _debug(any_osmo, workflow_id, "t", "--", "cat", "/tmp/conf.txt")
            assert conf.out == "conf of t" and conf.code == 0
    assert [Path(RunDir(a["run_dir"]).task_file).read_bytes() for a in attempts] == contracts
    assert any_osmo.processes_left() == []
    missing = _debug(any_osmo, "--retry", "3", workflow_id, "t", "--", "true")
    assert missing.code == 3 and "task t has no attempt 3 (it has 1, 2)" in missing.err
    unknown = _debug(any_osmo, workflow_id, "x", "--", "true")
    assert unknown.code == 3 and "has no task 'x'" in unknown.err
    assert any_osmo("exec", "--retry", "1", workflow_id, "t", "--", "true", check=False).code == 2


def test_debug_of_a_running_task_points_at_exec(osmo, tmp_path):
    spec = write_spec(tmp_path, "workflow:\n  name: up\n  tasks:\n  - {name: t, image: u, command: [sh, -c, 'echo up; sleep 300']}\n")
    workflow_id = osmo.submit(spec, wait=False)
    try:
        osmo.wait_log(workflow_id, "t | up")
        done = _debug(osmo, workflow_id, "t", "--", "true")
        assert done.code == 4 and f"attempt 1 of task t is RUNNING: use 'osmo workflow exec {workflow_id} t'" in done.err
    finally:
        osmo("cancel", workflow_id)


def test_a_debug_shell_on_a_terminal_survives_ctrl_c_and_gives_its_exit_code(osmo, tmp_path):
    workflow_id = osmo.submit(write_spec(tmp_path, SPEC))
    argv = [sys.executable, "-m", "osmo_store.cli.main", "workflow", "exec", "--debug", workflow_id, "t"]
    with Terminal(argv, osmo.env) as term:
        term.write("cat scratch.txt; echo MARK-$((1+1))\n")
        assert "scratch" in term.read_until("MARK-2", timeout=60)
        term.write("sleep 100\n")
        time.sleep(1.0)
        term.write("\x03")
        term.write("echo ALIVE-$((2+3))\n")
        term.read_until("ALIVE-5")
        term.write("exit 9\n")
        assert term.exit_code() == 9
    assert osmo.processes_left() == []


