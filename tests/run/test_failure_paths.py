"""Failure paths of the local runner, each through the CLI as a user would see it: a failing task
and FAILED_UPSTREAM, exec and queue timeouts, cancel (nothing left in the process table), RESCHEDULE
up to the limit, data failures (2010, 2012), a killed supervisor, a lead that ends its group."""

from __future__ import annotations

import os
import signal
import time

from .conftest import groups_of, tasks_of, write_spec


def test_failing_task_gives_its_code_and_fails_downstream(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: fails
          tasks:
          - name: broken
            image: ubuntu
            command: [sh, -c, "echo about to fail; exit 3"]
          - name: after
            image: ubuntu
            command: [sh, -c, "echo must not run > {{output}}/ran"]
            inputs: [{task: broken}]
          - name: later
            image: ubuntu
            command: [sh, -c, "echo still here"]
            inputs: [{task: after}]
          - name: independent
            image: ubuntu
            command: [echo, fine]
        """)
    result = osmo("submit", spec, "--wait", check=False)
    assert result.code == 1
    assert result.out.split("\n")[1].startswith("fails-1 FAILED")
    info = osmo.query("fails-1")
    tasks = tasks_of(info)
    assert (tasks["broken"]["status"], tasks["broken"]["exit_code"]) == ("FAILED", 3)
    assert tasks["broken"]["reason"] == "exit code 3"
    for name in ("after", "later"):
        assert (tasks[name]["status"], tasks[name]["exit_code"]) == ("FAILED_UPSTREAM", 3000)
        assert tasks[name]["attempts"] == []  # never started
    assert tasks["independent"]["status"] == "COMPLETED"
    assert groups_of(info)["after-group"]["reason"] == "upstream group 'broken-group' failed"
    assert groups_of(info)["later-group"]["reason"] == "upstream group 'after-group' failed"
    assert (info["status"], info["exit_code"]) == ("FAILED", 3000)  # the highest code wins
    assert "broken-group" in info["reason"] and "exit code 3" in info["reason"]
    assert "about to fail" in osmo.logs("fails-1", "broken")


def test_exec_timeout_stops_the_group(any_osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: slow
          timeout: {exec_timeout: 2s}
          groups:
          - name: work
            tasks:
            - {name: lead, lead: true, image: u, command: [sh, -c, "sleep 60"]}
            - {name: helper, image: u, command: [sh, -c, "sleep 60 & sleep 61"]}
        """)
    started = time.monotonic()
    any_osmo.submit(spec)
    assert time.monotonic() - started < 20
    info = any_osmo.query("slow-1")
    assert info["status"] == "FAILED_EXEC_TIMEOUT"
    assert groups_of(info)["work"]["status"] == "FAILED_EXEC_TIMEOUT"
    assert "exec timeout" in groups_of(info)["work"]["reason"]
    for task in tasks_of(info).values():
        assert task["status"] == "FAILED_EXEC_TIMEOUT"
        assert task["attempts"][0]["command_exit_code"] in (143, 137)
    assert any_osmo.processes_left() == []


def test_queue_timeout_for_a_gang_that_cannot_fit(osmo, tmp_path):
    osmo.pool(grace_period="1s", capacity={"cpu": 2, "memory": "1Gi"})
    spec = write_spec(tmp_path, """
        workflow:
          name: crowded
          resources:
            one: {cpu: 1, memory: 100Mi}
          groups:
          - name: first
            tasks:
            - {name: a, lead: true, image: u, command: [sleep, "4"], resource: one}
            - {name: b, image: u, command: [sleep, "4"], resource: one}
          - name: second
            timeout: {queue_timeout: 1s}
            tasks:
            - {name: c, lead: true, image: u, command: [echo, never], resource: one}
        """)
    osmo.submit(spec)
    info = osmo.query("crowded-1")
    groups, tasks = groups_of(info), tasks_of(info)
    assert groups["first"]["status"] == "COMPLETED"
    assert groups["second"]["status"] == "FAILED_QUEUE_TIMEOUT"
    assert "did not admit the group within 1 s" in groups["second"]["reason"]
    assert tasks["c"]["status"] == "FAILED_QUEUE_TIMEOUT" and tasks["c"]["attempts"] == []
    assert info["status"] == "FAILED_QUEUE_TIMEOUT"
    assert "never" not in osmo.logs("crowded-1")


def test_strict_pool_refuses_a_gang_larger_than_the_pool(osmo, tmp_path):
    osmo.pool(strict=True, capacity={"cpu": 1, "memory": "1Gi", "gpu": 0}, platforms=["local-x86"])
    spec = write_spec(tmp_path, """
        workflow:
          name: big
          resources:
            two: {cpu: 2, platform: local-x86}
          tasks:
          - {name: a, image: u, command: [echo], resource: two}
        """)
    result = osmo("submit", spec, check=False)
    assert result.code == 2 and result.out == ""
    assert result.err.strip() == ("osmo: error: group 'a-group' needs cpu 2, memory 0.0 GiB, gpu 0 at once; "
                                  "strict pool 'local' has 1 CPU, 1.0 GiB memory, no GPU")
    spec.write_text(spec.read_text().replace("cpu: 2, platform: local-x86", "cpu: 1, platform: ovx-a40"))
    result = osmo("submit", spec, check=False)
    assert result.code == 2
    assert "asks for platform 'ovx-a40', which pool 'local' does not offer (platforms: local-x86)" in result.err
    assert osmo("list").out.strip() == "no workflows"


def test_cancel_leaves_no_process_behind(any_osmo, tmp_path):
    """Daemons, a process that ignores SIGTERM, a group waiting for the pool: cancel ends them all."""
    any_osmo.pool(grace_period="1s", capacity={"cpu": 1})
    spec = write_spec(tmp_path, """
        workflow:
          name: busy
          resources:
            whole: {cpu: 1}
          groups:
          - name: servers
            tasks:
            - name: lead
              lead: true
              image: u
              resource: whole
              command: [bash, -c]
              args:
              - |
                python3 -m http.server 0 >/dev/null 2>&1 &
                setsid sleep 300 &
                (trap '' TERM; sleep 301) &
                echo started
                sleep 302
            - {name: peer, image: u, command: [sh, -c, "sleep 303 & sleep 304"]}
          - name: waiting
            tasks:
            - {name: queued, image: u, command: [echo, never], resource: whole}
          - name: downstream
            tasks:
            - {name: reader, image: u, command: [echo, never], inputs: [{task: lead}]}
        """)
    workflow_id = any_osmo.submit(spec, wait=False)
    any_osmo.wait_log(workflow_id, "started", "lead")
    info = any_osmo.query(workflow_id)
    assert info["status"] == "RUNNING"
    assert groups_of(info)["waiting"]["status"] == "SCHEDULING"
    assert any("sleep 30" in p for p in any_osmo.processes())
    result = any_osmo("cancel", workflow_id)
    assert result.out.strip() == f"{workflow_id} FAILED_CANCELED"
    assert any_osmo.processes_left() == []  # not even the process that ignores SIGTERM
    info = any_osmo.query(workflow_id)
    assert info["status"] == "FAILED_CANCELED"
    assert {t["status"] for t in tasks_of(info).values()} == {"FAILED_CANCELED"}
    assert all(t["attempts"] == [] for n, t in tasks_of(info).items() if n in ("queued", "reader"))
    again = any_osmo("cancel", workflow_id, check=False)
    assert again.code == 4 and again.err.strip() == f"osmo: error: workflow {workflow_id} has already ended: FAILED_CANCELED"


def test_reschedule_retries_up_to_the_limit(osmo, tmp_path):
    osmo.pool(grace_period="1s", reschedule_limit=2)
    spec = write_spec(tmp_path, """
        workflow:
          name: flaky
          tasks:
          - name: always
            image: u
            command: [sh, -c, "echo try; exit 3"]
            exitActions: {COMPLETE: 0, RESCHEDULE: 3-5, FAIL: 6-255}
        """)
    osmo.submit(spec)
    info = osmo.query("flaky-1")
    task = tasks_of(info)["always"]
    assert [a["status"] for a in task["attempts"]] == ["RESCHEDULED", "RESCHEDULED", "FAILED"]
    assert [a["exit_code"] for a in task["attempts"]] == [3, 3, 3]
    assert (task["status"], task["exit_code"]) == ("FAILED", 3)
    assert "RESCHEDULE limit (2) reached" in task["reason"]
    assert osmo.logs("flaky-1").count("try") == 3


def test_rescheduled_task_can_succeed_and_a_lead_restarts_its_group(tmp_path):
    """Plain processes, so a counter file in the test folder is shared across attempts."""
    from .conftest import Osmo

    osmo = Osmo(tmp_path / "osmo", OSMO_ISOLATION="none")
    osmo.pool(grace_period="1s", reschedule_limit=3, lead_head_start=0)
    counter = tmp_path / "lead-starts"
    peer_starts = tmp_path / "peer-starts"
    spec = write_spec(tmp_path, f"""
        workflow:
          name: retry
          groups:
          - name: pair
            tasks:
            - name: lead
              lead: true
              image: u
              command: [sh, -c]
              args: ["echo x >> {counter}; sleep 1; [ $(wc -l < {counter}) -ge 3 ] || exit 7; echo ok > {{{{output}}}}/ok"]
              exitActions: {{COMPLETE: 0, RESCHEDULE: 7}}
            - name: peer
              image: u
              command: [sh, -c, "echo x >> {peer_starts}; sleep 300"]
        """)
    osmo.submit(spec)
    info = osmo.query("retry-1")
    tasks = tasks_of(info)
    assert info["status"] == "COMPLETED"
    assert [a["status"] for a in tasks["lead"]["attempts"]] == ["RESCHEDULED", "RESCHEDULED", "COMPLETED"]
    # the lead's reschedule restarted its group: the peer ran once per lead attempt
    assert [a["status"] for a in tasks["peer"]["attempts"]] == ["RESCHEDULED", "RESCHEDULED", "COMPLETED"]
    assert peer_starts.read_text().count("x") == 3
    assert tasks["lead"]["datasets_written"][0]["dataset"] == "retry-1--lead"
    assert osmo.processes_left() == []


def test_failing_output_upload_gives_2012(osmo, tmp_path, s3_server):
    """The command succeeds; its URL output points at a bucket that does not exist."""
    osmo.env.update(s3_server.env(), OSMO_SIDECAR_ATTEMPTS="1")
    spec = write_spec(tmp_path, """
        workflow:
          name: lost
          tasks:
          - name: writer
            image: u
            command: [sh, -c, "echo data > {{output}}/result.txt; echo wrote it"]
            outputs:
            - url: s3://no-such-bucket-for-osmo/out/
        """)
    osmo.submit(spec)
    info = osmo.query("lost-1")
    task = tasks_of(info)["writer"]
    assert task["attempts"][0]["command_exit_code"] == 0
    assert (task["status"], task["exit_code"]) == ("FAILED", 2012)
    assert task["reason"].startswith("upload failed (2012): ")
    assert (info["status"], info["exit_code"]) == ("FAILED", 2012)
    # the task output itself was kept: only the URL copy failed
    assert task["datasets_written"][0]["dataset"] == "lost-1--writer"
    assert "wrote it" in osmo.logs("lost-1", "writer")


def test_failing_input_gives_2010_before_the_command(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: missing
          tasks:
          - name: reader
            image: u
            command: [sh, -c, "echo the command ran"]
            inputs:
            - dataset: {name: no_such_dataset}
        """)
    osmo.submit(spec)
    info = osmo.query("missing-1")
    task = tasks_of(info)["reader"]
    assert (task["status"], task["exit_code"]) == ("FAILED", 2010)
    assert task["attempts"][0]["command_exit_code"] is None
    assert "no_such_dataset" in task["reason"]
    assert "the command ran" not in osmo.logs("missing-1")


def test_killed_supervisor_shows_failed_with_reason(any_osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: orphan
          tasks:
          - {name: long, image: u, command: [sh, -c, "echo up; sleep 300 & sleep 301"]}
        """)
    workflow_id = any_osmo.submit(spec, wait=False)
    any_osmo.wait_log(workflow_id, "up")
    pid = any_osmo.query(workflow_id)["supervisor_pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while any_osmo.processes():  # its tasks die with it
        assert time.monotonic() < deadline, any_osmo.processes()
        time.sleep(0.2)
    info = any_osmo.query(workflow_id)
    assert info["status"] == "FAILED"
    assert info["reason"].startswith(f"the supervisor (pid {pid}) died")
    assert tasks_of(info)["long"]["status"] == "FAILED"
    listed = any_osmo("list", "--json").json()
    assert [(w["id"], w["status"]) for w in listed] == [(workflow_id, "FAILED")]


def test_lead_end_stops_the_other_tasks(any_osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: leader
          groups:
          - name: team
            tasks:
            - {name: boss, lead: true, image: u, command: [sh, -c, "sleep 1; echo boss done"]}
            - name: worker
              image: u
              command: [sh, -c, "trap 'echo got SIGTERM; exit 0' TERM; echo partial > {{output}}/part; while true; do sleep 0.1; done"]
        """)
    started = time.monotonic()
    any_osmo.submit(spec)
    assert time.monotonic() - started < 20
    info = any_osmo.query("leader-1")
    tasks = tasks_of(info)
    assert groups_of(info)["team"]["status"] == "COMPLETED"
    assert tasks["boss"]["status"] == "COMPLETED"
    worker = tasks["worker"]
    assert worker["status"] == "COMPLETED"
    assert worker["reason"] == "stopped when the lead task 'boss' ended"
    assert worker["ended"] >= tasks["boss"]["attempts"][0]["command"]["ended"]
    assert "got SIGTERM" in any_osmo.logs("leader-1", "worker")
    # a stopped task's output is still stored
    assert worker["datasets_written"][0]["files"] == 1
    assert any_osmo.processes_left() == []


def test_nonlead_failure_fails_the_group_when_statuses_count(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: strictgroup
          groups:
          - name: team
            ignoreNonleadStatus: false
            tasks:
            - {name: boss, lead: true, image: u, command: [sleep, "300"]}
            - {name: worker, image: u, command: [sh, -c, "exit 9"]}
          - name: next
            tasks:
            - {name: reader, image: u, command: [echo], inputs: [{task: boss}]}
        """)
    osmo.submit(spec)
    info = osmo.query("strictgroup-1")
    tasks = tasks_of(info)
    assert (tasks["worker"]["status"], tasks["worker"]["exit_code"]) == ("FAILED", 9)
    assert tasks["boss"]["status"] == "FAILED"
    assert tasks["boss"]["reason"] == "stopped because task 'worker' failed"
    assert groups_of(info)["team"]["status"] == "FAILED"
    assert tasks["reader"]["status"] == "FAILED_UPSTREAM"


def test_nonlead_failure_is_ignored_by_default(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: lenient
          groups:
          - name: team
            tasks:
            - {name: boss, lead: true, image: u, command: [sh, -c, "sleep 1"]}
            - {name: worker, image: u, command: [sh, -c, "exit 9"]}
        """)
    osmo.submit(spec)
    info = osmo.query("lenient-1")
    assert info["status"] == "COMPLETED"
    assert tasks_of(info)["worker"]["status"] == "FAILED"
    assert groups_of(info)["team"]["status"] == "COMPLETED"


def test_cli_errors_are_one_line(osmo, tmp_path):
    bad = write_spec(tmp_path, "workflow:\n  name: w\n  tasks:\n  - {name: a, image: u, command: [x], lead: maybe}\n")
    result = osmo("submit", bad, check=False)
    assert result.code == 2 and result.err.count("\n") == 1
    assert result.err.startswith(f"osmo: error: {bad}:4: ")
    for args, code in ((("query", "nope-1"), 3), (("logs", "nope-1"), 3), (("cancel", "nope-1"), 3),
                       (("spec", "nope-1"), 3)):
        result = osmo(*args, check=False)
        assert result.code == code, args
        assert result.err.startswith("osmo: error: no workflow 'nope-1'") and result.err.count("\n") == 1
        assert "Traceback" not in result.err
    osmo.pool(isolation="sideways")
    good = write_spec(tmp_path, "workflow:\n  name: w\n  tasks:\n  - {name: a, image: u, command: [x]}\n", "good.yaml")
    result = osmo("submit", good, check=False)
    assert result.code == 2 and "isolation: expected one of auto, namespaces, none" in result.err
