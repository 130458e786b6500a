"""``osmo workflow validate`` and ``submit --dry-run``, driven through click's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from osmo_run.cli import workflow

DATA = Path(__file__).resolve().parent.parent / "data" / "osmo-workflows"
SETS = {"data_filter.yaml": ["--set", "storage_url=s3://my-bucket"]}


def run(*args: str):
    return CliRunner().invoke(workflow, [str(a) for a in args])


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.yaml")))
def test_validate_accepts_every_conformance_workflow(name):
    result = run("validate", DATA / name, *SETS.get(name, []))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("OK: workflow ")


def test_validate_prints_groups_leads_and_order():
    result = run("validate", DATA / "combination_workflow_complex.yaml")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0] == "OK: workflow 'complex-pipeline': 3 groups, 4 tasks"
    assert lines[2].split() == ["process", "tasks:", "transform-a*,", "transform-b", "after:", "fetch"]
    assert lines[3].split() == ["aggregate", "tasks:", "combine*", "after:", "process"]


def test_validate_json_summary():
    result = run("validate", "--json", DATA / "serial_workflow.yaml")
    assert result.exit_code == 0
    info = json.loads(result.output)
    assert info["ok"] is True and info["name"] == "serial-tasks" and info["uses_tasks"] is True
    third = info["groups"][2]
    assert third == {"name": "task3-group", "lead": "task3", "upstream": ["task1-group", "task2-group"],
                     "tasks": [{"name": "task3", "lead": True, "inputs": ["task:task1", "task:task2"]}]}


def test_validate_reports_one_line_error_with_exit_code_2(tmp_path):
    spec = tmp_path / "workflow.yaml"
    spec.write_text("workflow:\n  name: w\n  groups:\n  - name: g\n    tasks:\n"
                    "    - {name: a, image: u, command: [x]}\n    - {name: b, image: u, command: [x]}\n")
    result = run("validate", spec)
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert result.output.strip() == (f"osmo: error: {spec}:6: workflow.groups[0].tasks: group 'g' has 0 lead "
                                     "tasks; a group of several tasks needs exactly one task with 'lead: true'")


def test_validate_json_error(tmp_path):
    spec = tmp_path / "w.yaml"
    spec.write_text("workflow:\n  name: w\n  tasks:\n  - {name: a, image: u, command: [x], inputs: [{task: b}]}\n")
    result = run("validate", "--json", spec)
    assert result.exit_code == 2
    info = json.loads(result.output)
    assert info["ok"] is False
    assert info["error"] == f"{spec}:4: workflow.tasks[0].inputs[0].task: unknown task 'b'"


def test_validate_needs_set_for_a_template_without_default():
    result = run("validate", DATA / "data_filter.yaml")
    assert result.exit_code == 2
    assert "data_filter.yaml:30: undefined template variable 'storage_url'" in result.output
    assert run("validate", DATA / "data_filter.yaml", "--set-string", "storage_url=s3://x").exit_code == 0


def test_validate_missing_file_and_bad_set():
    missing = run("validate", "/nonexistent/w.yaml")
    assert missing.exit_code == 2 and "/nonexistent/w.yaml: cannot read the spec" in missing.output
    bad = run("validate", DATA / "hello_world.yaml", "--set", "no-equals-sign")
    assert bad.exit_code == 2 and "--set 'no-equals-sign'" in bad.output


def test_submit_dry_run_prints_rendered_spec():
    result = run("submit", "--dry-run", DATA / "template_hello_world.yaml", "--set", "message=Hi there",
                 "--set-string", "ubuntu_version=24.10")
    assert result.exit_code == 0, result.output
    assert "  name: hello-osmo\n" in result.output
    assert "    image: ubuntu:24.10\n" in result.output
    assert '    args: ["Hi there"]\n' in result.output
    assert "{{" not in result.output.split("default-values:")[0]


def test_submit_dry_run_keeps_tokens():
    result = run("submit", "--dry-run", DATA / "token_example.yaml", "--set", "experiment_name=exp-7")
    assert result.exit_code == 0
    assert 'echo "Workflow ID: {{workflow_id}}"' in result.output
    assert "  name: exp-7\n" in result.output


def test_submit_without_dry_run_runs_the_workflow(tmp_path):
    env = {"OSMO_STATE_DIR": str(tmp_path / "state"), "OSMO_STORE": str(tmp_path / "store"),
           "OSMO_CACHE_DIR": str(tmp_path / "cache"), "OSMO_POOL_CONFIG": str(tmp_path / "pool.yaml"),
           "OSMO_ENGINE": "none"}  # the machine's own Podman has no images, and nothing can be pulled here
    result = CliRunner().invoke(workflow, ["submit", str(DATA / "hello_world.yaml"), "--wait"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["hello-osmo-1", "hello-osmo-1 COMPLETED"]


def test_submit_dry_run_rejects_an_invalid_spec(tmp_path):
    spec = tmp_path / "w.yaml"
    spec.write_text("workflow:\n  name: w\n  timeout: {exec_timeout: soon}\n  tasks: [{name: a, image: u, command: [x]}]\n")
    result = run("submit", "--dry-run", spec)
    assert result.exit_code == 2
    assert f"{spec}:3: workflow.timeout.exec_timeout: bad duration 'soon'" in result.output


def test_submit_labels_the_workflow_for_list_and_query_and_refuses_malformed_labels(tmp_path):
    env = {"OSMO_STATE_DIR": str(tmp_path / "state"), "OSMO_STORE": str(tmp_path / "store"),
           "OSMO_CACHE_DIR": str(tmp_path / "cache"), "OSMO_POOL_CONFIG": str(tmp_path / "pool.yaml"),
           "OSMO_ENGINE": "none"}
    result = CliRunner().invoke(workflow, ["submit", str(DATA / "hello_world.yaml"), "--wait", "--label", "team=perception",
                                           "--label", "run/kind=night build"], env=env)
    assert result.exit_code == 0, result.output
    listed = json.loads(CliRunner().invoke(workflow, ["list", "--json"], env=env).output)
    assert listed[0]["labels"] == {"team": "perception", "run/kind": "night build"}
    queried = json.loads(CliRunner().invoke(workflow, ["query", "hello-osmo-1", "--json"], env=env).output)
    assert queried["labels"] == {"team": "perception", "run/kind": "night build"}
    for bad, says in ((["--label", "no-equals"], "expected KEY=VALUE"), (["--label", "-x=1"], "expected KEY=VALUE"),
                      (["--label", "a=1", "--label", "a=2"], "--label a is given twice"),
                      (["--label", "a=" + "v" * 257], "at most 256 characters")):
        refused = CliRunner().invoke(workflow, ["submit", str(DATA / "hello_world.yaml"), *bad], env=env)
        assert refused.exit_code == 2 and says in refused.output and "Traceback" not in refused.output
    assert len(json.loads(CliRunner().invoke(workflow, ["list", "--json"], env=env).output)) == 1  # nothing submitted
