"""``osmo workflow`` helps on mistakes, as a user runs it (a subprocess per command): errors a script
can read with ``--json``, the closest names for a mistyped workflow id or task, and task logs that say
what a task asked for (or that it asked for nothing) instead of zeros."""

from __future__ import annotations

import pytest

from helpers.json_errors import json_error
from run.conftest import Osmo, write_spec


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A workflow that ran to the end on plain processes: one task asks for nothing, one for a CPU."""
    root = tmp_path_factory.mktemp("messages")
    osmo = Osmo(root / "osmo", OSMO_ISOLATION="none")
    spec = write_spec(root, """
        workflow:
          name: hello
          resources:
            small:
              cpu: 1
              memory: 1536Mi
          groups:
          - name: pair
            tasks:
            - name: world
              lead: true
              image: u
              command: [sh, -c, "echo hello world"]
            - name: counter
              image: u
              resource: small
              command: [sh, -c, "echo counted"]
        """)
    workflow_id = osmo.submit(spec)
    assert osmo.query(workflow_id)["status"] == "COMPLETED"
    return osmo, workflow_id, spec


def test_a_task_that_asked_for_nothing_says_so(finished):
    osmo, workflow_id, _ = finished
    world = osmo.logs(workflow_id, "world")
    assert "[osmo] resources: none asked for: nothing is reserved for it (resource 'default')" in world
    assert "cpu 0" not in world and "memory 0" not in world
    counter = osmo.logs(workflow_id, "counter")
    assert "[osmo] resources: cpu 1, memory 1.5 GiB (resource 'small')" in counter  # only what it asked for


def test_unknown_workflows_and_tasks_get_the_closest_names(finished):
    osmo, workflow_id, _ = finished
    assert workflow_id == "hello-1"
    missing = osmo("query", "helo-1", check=False)
    assert missing.code == 3 and missing.err.startswith("osmo: error: no workflow 'helo-1' in ")
    assert "(did you mean 'hello-1'?)" in missing.err and missing.err.count("\n") == 1
    wrong_task = osmo("logs", "hello-1", "--task", "wrold", check=False)
    assert wrong_task.code == 3 and wrong_task.err == \
        "osmo: error: workflow hello-1 has no task 'wrold' (did you mean 'world'?)\n"
    json_error(osmo("query", "helo-1", "--json", check=False), 3, "not_found", workflow="helo-1",
               suggestions=["hello-1"])
    far = json_error(osmo("query", "zzz-9", "--json", check=False), 3, "not_found", workflow="zzz-9")
    assert "suggestions" not in far and "osmo workflow list" in far["error"]
    json_error(osmo("cancel", "hello-1", "--json", check=False), 4, "conflict", workflow="hello-1")


def test_spec_and_usage_errors_with_json(finished, tmp_path):
    osmo, _, _ = finished
    bad = write_spec(tmp_path, "workflow:\n  name: w\n  tasks:\n  - {name: a, image: u, command: [x], inputs: [{task: b}]}\n")
    for command in ("validate", "submit"):
        error = json_error(osmo(command, bad, "--json", check=False), 2, "spec", file=str(bad), line=4,
                           field="workflow.tasks[0].inputs[0].task")
        assert error["error"] == f"{bad}:4: workflow.tasks[0].inputs[0].task: unknown task 'b'"
    plain = osmo("validate", bad, check=False)
    assert plain.code == 2 and plain.err == f"osmo: error: {bad}:4: workflow.tasks[0].inputs[0].task: unknown task 'b'\n"
    usage = json_error(osmo("submit", bad, "--runner", "nowhere", "--json", check=False), 2, "usage",
                       option="--runner")
    assert "nowhere" in usage["error"]
