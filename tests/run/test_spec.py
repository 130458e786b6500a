"""The workflow spec: OSMO's tutorial workflows parse into the expected models, bad specs give errors
naming the field and the line, and the value syntaxes (durations, exit codes, quantities) parse."""

from __future__ import annotations

import posixpath
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from osmo_run.spec import (Dag, DatasetInput, DatasetOutput, ExitAction, SpecError, TaskInput, UrlInput,
                           UrlOutput, canonical_name, format_workflow_id, load_file, load_text,
                           next_workflow_id, parse_bytes, parse_codes, parse_cpu, parse_duration,
                           parse_workflow_id)
from osmo_run.spec.exit_actions import ExitActions
from osmo_run.spec.filepaths import normalise_file_path, view_path

DATA = Path(__file__).resolve().parent.parent / "data" / "osmo-workflows"
SHARED = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "osmo-workflows"
SETS = {"data_filter.yaml": ["storage_url=s3://my-bucket"]}
ALL_FILES = sorted(p.name for p in DATA.glob("*.yaml"))


def load(name: str):
    return load_file(DATA / name, set_items=SETS.get(name, [])).workflow


def shape(workflow):
    """(group, lead, [tasks], [upstream groups]) per group."""
    dag = Dag.from_workflow(workflow)
    return [(g.name, g.lead.name, [t.name for t in g.tasks], list(dag.upstream_of(g))) for g in workflow.groups]


# -- conformance: OSMO's own tutorial workflows --------------------------------------------------------

EXPECTED_SHAPES = {
    "combination_workflow_complex.yaml": ("complex-pipeline", [
        ("fetch", "download", ["download"], []),
        ("process", "transform-a", ["transform-a", "transform-b"], ["fetch"]),
        ("aggregate", "combine", ["combine"], ["process"])]),
    "combination_workflow_simple.yaml": ("data-pipeline", [
        ("prepare-data", "generate-data", ["generate-data", "validate-data"], []),
        ("train-models", "train-model-a", ["train-model-a", "train-model-b"], ["prepare-data"])]),
    "data_and_dataset_combined.yaml": ("mixed-storage", [
        ("process-multiple-sources-group", "process-multiple-sources", ["process-multiple-sources"], [])]),
    "data_download.yaml": ("download-from-s3", [("load-from-cloud-group", "load-from-cloud", ["load-from-cloud"], [])]),
    "data_filter.yaml": ("filtered-io", [("selective-download-group", "selective-download", ["selective-download"], [])]),
    "data_upload.yaml": ("upload-to-s3", [("save-to-cloud-group", "save-to-cloud", ["save-to-cloud"], [])]),
    "dataset_download.yaml": ("read-dataset", [("process-data-group", "process-data", ["process-data"], [])]),
    "dataset_upload.yaml": ("create-dataset", [("generate-data-group", "generate-data", ["generate-data"], [])]),
    "group_tasks.yaml": ("grouped-workflow", [
        ("parallel-processing", "processor-1", ["processor-1", "processor-2", "processor-3"], [])]),
    "group_tasks_communication.yaml": ("grouped-workflow-communication", [
        ("parallel-processing", "server", ["server", "client"], [])]),
    "hello_world.yaml": ("hello-osmo", [("hello-group", "hello", ["hello"], [])]),
    "parallel_tasks.yaml": ("parallel-tasks", [
        ("task-a-group", "task-a", ["task-a"], []), ("task-b-group", "task-b", ["task-b"], []),
        ("task-c-group", "task-c", ["task-c"], [])]),
    "robot_simulation.yaml": ("robot-simulation", [
        ("robot-hil", "model-training", ["model-training", "physics-sim", "robot-ctrl"], [])]),
    "serial_workflow.yaml": ("serial-tasks", [
        ("task1-group", "task1", ["task1"], []), ("task2-group", "task2", ["task2"], ["task1-group"]),
        ("task3-group", "task3", ["task3"], ["task1-group", "task2-group"])]),
    "template_hello_world.yaml": ("hello-osmo", [("hello-group", "hello", ["hello"], [])]),
    "token_example.yaml": ("my-experiment", [("experiment-group", "experiment", ["experiment"], [])]),
}


def test_every_conformance_file_is_covered_and_copied_unchanged():
    assert set(ALL_FILES) == set(EXPECTED_SHAPES)
    assert (DATA / "README.md").is_file()
    for name in ALL_FILES:
        text = (DATA / name).read_text()
        assert text.startswith("# SPDX-FileCopyrightText: Copyright (c) 2025 NVIDIA CORPORATION"), name
        if SHARED.is_dir():
            assert (SHARED / name).read_bytes() == (DATA / name).read_bytes(), name


@pytest.mark.parametrize("name", ALL_FILES)
def test_conformance_workflow_shape(name):
    workflow = load(name)
    expected_name, expected_groups = EXPECTED_SHAPES[name]
    assert workflow.name == expected_name
    assert shape(workflow) == expected_groups
    assert workflow.uses_tasks == all(g.name.endswith("-group") for g in workflow.groups)


def test_complex_pipeline_inputs_and_group_defaults():
    wf = load("combination_workflow_complex.yaml")
    process = wf.group("process")
    assert process.barrier is True and process.ignore_nonlead_status is True
    assert [t.lead for t in process.tasks] == [True, False]
    combine = wf.task("combine")
    assert combine.inputs == (TaskInput("transform-a"), TaskInput("transform-b"))
    assert combine.input_index_by_task() == {"transform-a": 0, "transform-b": 1}
    assert combine.command == ("bash", "-c")
    assert "{{input:1}}/transformed/numbered.txt" in combine.args[0]
    assert Dag.from_workflow(wf).downstream_of("fetch") == ("process", "aggregate")


def test_hello_world_resources_in_bytes_and_cores():
    wf = load("hello_world.yaml")
    task = wf.task("hello")
    assert task.lead is True and task.resource == "default"
    res = wf.resources_for(task)
    assert (res.cpu, res.memory, res.storage, res.gpu) == (1.0, 1 << 30, 1 << 30, None)
    assert task.args == ("Hello from OSMO!",)


def test_robot_simulation_resources_timeout_files_and_hosts():
    wf = load("robot_simulation.yaml")
    assert wf.timeout.exec_seconds == 15 * 60 and wf.timeout.queue_seconds is None
    assert wf.timeout_for("robot-hil").exec_seconds == 900
    gpu = wf.resources["gpu-enabled"]
    assert (gpu.cpu, gpu.gpu, gpu.memory, gpu.storage, gpu.platform) == (1.0, 1, 4 << 30, 2 << 30, "ovx-a40")
    assert wf.resources["robot-edge"].platform == "agx-orin-jp6"
    train = wf.task("model-training")
    assert train.resource == "gpu-enabled" and wf.task("robot-ctrl").resource == "robot-edge"
    assert [f.path for f in train.files] == ["/tmp/train.sh"]
    contents = train.files[0].contents
    assert "policy=8 &&" in contents and "seq 1 15" in contents  # default-values rendered
    assert 'sim="http://{{host:physics-sim}}:8080"' in contents  # tokens kept
    assert [(u.token.text, u.line) for u in train.token_uses] == [
        ("{{host:physics-sim}}", 55), ("{{host:robot-ctrl}}", 56)]


def test_data_and_dataset_inputs_outputs():
    task = load("data_and_dataset_combined.yaml").task("process-multiple-sources")
    assert task.inputs == (DatasetInput("my_dataset"), UrlInput("s3://my-bucket/raw-data/"))
    assert task.inputs[0].dataset == "my_dataset" and task.inputs[0].ref is None
    assert task.outputs == (DatasetOutput("processed_data"), UrlOutput("s3://my-bucket/outputs/"))
    assert load("dataset_upload.yaml").task("generate-data").outputs == (DatasetOutput("my_dataset"),)
    assert load("dataset_download.yaml").task("process-data").inputs == (DatasetInput("my_dataset"),)
    assert load("data_upload.yaml").task("save-to-cloud").outputs == (UrlOutput("s3://my-bucket/models/"),)
    assert load("data_download.yaml").task("load-from-cloud").inputs == (UrlInput("s3://my-bucket/data/"),)


def test_data_filter_regexes_and_workflow_id_token_in_url():
    task = load("data_filter.yaml").task("selective-download")
    assert task.inputs == (UrlInput("s3://my-bucket/source-data/", r".*\.txt$"),)
    assert task.outputs == (UrlOutput("s3://my-bucket/filtered-output/{{workflow_id}}/", r".*\.(json|yaml)$"),)


def test_serial_workflow_files_and_declared_default_resource():
    wf = load("serial_workflow.yaml")
    task3 = wf.task("task3")
    assert [i.task for i in task3.inputs] == ["task1", "task2"]
    assert task3.files[0].path == "/tmp/run.sh" and "{{input:1}}/test_read.txt" in task3.files[0].contents
    assert wf.task("task2").resource == "default" and wf.resources == {}
    assert wf.resources_for(wf.task("task2")).cpu is None
    assert Dag.from_workflow(wf).downstream_of("task1-group") == ("task2-group", "task3-group")


def test_group_communication_and_templates():
    client = load("group_tasks_communication.yaml").task("client")
    assert "nc -w 30 {{host:server}} 24831" in client.args[0] and client.lead is False
    assert load("template_hello_world.yaml").task("hello").image == "ubuntu:22.04"
    experiment = load("token_example.yaml").task("experiment")
    assert 'echo "Running experiment: my-experiment"' in experiment.args[0]
    assert 'echo "Workflow ID: {{workflow_id}}"' in experiment.args[0]
    assert load("parallel_tasks.yaml").task("task-b").command == ("echo", "Hello from task-b")


# -- bad specs: the error names the field and the line -------------------------------------------------

def spec(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


TASK = "    image: ubuntu\n    command: [echo]\n"
BAD_SPECS = {
    "unknown task field": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: ubuntu
            comand: [echo]
        """), "workflow.tasks[0].comand", 6, "unknown field 'comand'"),
    "unknown top-level key": (spec("""
        workflow:
          name: w
          tasks: [{name: a, image: u, command: [x]}]
        defaults:
          a: 1
        """), "defaults", 4, "unknown field 'defaults'"),
    "command not a list": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: ubuntu
            command: echo hi
        """), "workflow.tasks[0].command", 6, "expected a list"),
    "lead not a boolean": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: ubuntu
            command: [echo]
            lead: maybe
        """), "workflow.tasks[0].lead", 7, "expected true or false"),
    "missing image": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            command: [echo]
        """), "workflow.tasks[0]", 4, "missing required field 'image'"),
    "both tasks and groups": (spec("""
        workflow:
          name: w
          tasks: [{name: a, image: u, command: [x]}]
          groups:
          - name: g
            tasks: [{name: b, image: u, command: [x]}]
        """), "workflow.groups", 5, "either tasks or groups"),
    "duplicate task names ignoring case and _": (spec("""
        workflow:
          name: w
          groups:
          - name: g
            tasks:
            - {name: Train_A, image: u, command: [x], lead: true}
            - {name: train-a, image: u, command: [x]}
        """), "workflow.groups[0].tasks[1].name", 7, "duplicate name 'train-a': task 'Train_A' on line 6"),
    "group and task share a name": (spec("""
        workflow:
          name: w
          groups:
          - name: prep
            tasks:
            - {name: Prep, image: u, command: [x]}
        """), "workflow.groups[0].tasks[0].name", 6, "group 'prep' on line 4 has the same name"),
    "multi-task group without a lead": (spec("""
        workflow:
          name: w
          groups:
          - name: g
            tasks:
            - {name: a, image: u, command: [x]}
            - {name: b, image: u, command: [x]}
        """), "workflow.groups[0].tasks", 6, "group 'g' has 0 lead tasks"),
    "multi-task group with two leads": (spec("""
        workflow:
          name: w
          groups:
          - name: g
            tasks:
            - {name: a, image: u, command: [x], lead: true}
            - {name: b, image: u, command: [x], lead: true}
        """), "workflow.groups[0].tasks", 6, "2 lead tasks (a, b)"),
    "unknown input task": (spec("""
        workflow:
          name: w
          groups:
          - name: prep
            tasks:
            - {name: train, image: u, command: [x]}
          - name: evaluate
            tasks:
            - name: score
              image: u
              command: [x]
              inputs:
              - task: trainr
        """), "workflow.groups[1].tasks[0].inputs[0].task", 13, "unknown task 'trainr' (did you mean 'train'?)"),
    "group listed before the group it reads": (spec("""
        workflow:
          name: w
          groups:
          - name: second
            tasks:
            - name: b
              image: u
              command: [x]
              inputs: [{task: a}]
          - name: first
            tasks:
            - {name: a, image: u, command: [x]}
        """), "workflow.groups[0].tasks[0].inputs[0].task", 9,
        "group 'second' is listed before group 'first' it reads from"),
    "cycle between groups": (spec("""
        workflow:
          name: w
          groups:
          - name: one
            tasks:
            - {name: a, image: u, command: [x], inputs: [{task: b}]}
          - name: two
            tasks:
            - {name: b, image: u, command: [x], inputs: [{task: a}]}
        """), "workflow.groups[0].tasks[0].inputs[0].task", 6, "cycle between groups: 'one' -> 'two' -> 'one'"),
    "task listed after its reader": (spec("""
        workflow:
          name: w
          tasks:
          - {name: a, image: u, command: [x], inputs: [{task: b}]}
          - {name: b, image: u, command: [x]}
        """), "workflow.tasks[0].inputs[0].task", 4, "task 'a' reads task 'b', which is listed after it"),
    "task reads its own group": (spec("""
        workflow:
          name: w
          groups:
          - name: g
            tasks:
            - {name: a, image: u, command: [x], lead: true}
            - {name: b, image: u, command: [x], inputs: [{task: a}]}
        """), "workflow.groups[0].tasks[1].inputs[0].task", 7, "reads task 'a' of its own group"),
    "bad duration": (spec("""
        workflow:
          name: w
          timeout:
            exec_timeout: 10 minutes
          tasks: [{name: a, image: u, command: [x]}]
        """), "workflow.timeout.exec_timeout", 4, "bad duration '10 minutes'"),
    "bad group queue timeout": (spec("""
        workflow:
          name: w
          groups:
          - name: g
            timeout: {queue_timeout: 1m1h}
            tasks: [{name: a, image: u, command: [x]}]
        """), "workflow.groups[0].timeout.queue_timeout", 5, "largest first"),
    "reversed exit code range": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            exitActions:
              COMPLETE: 0
              RESCHEDULE: 5-1
        """), "workflow.tasks[0].exitActions.RESCHEDULE", 9, "start is after end"),
    "exit code above 255": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            exitActions: {FAIL: 1-256}
        """), "workflow.tasks[0].exitActions.FAIL", 7, "exit code 256 is out of range"),
    "unknown exit action": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            exitActions:
              RETRY: 1
        """), "workflow.tasks[0].exitActions.RETRY", 8, "unknown exit action 'RETRY'"),
    "overlapping exit actions": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            exitActions:
              FAIL: 1-255
              RESCHEDULE: 3
        """), "workflow.tasks[0].exitActions", 8, "exit codes 3 are given to both FAIL and RESCHEDULE"),
    "memory with decimal-byte suffix": (spec("""
        workflow:
          name: w
          resources:
            default: {cpu: 1, memory: 10GB}
          tasks: [{name: a, image: u, command: [x]}]
        """), "workflow.resources.default.memory", 4, "bad quantity '10GB'"),
    "cpu that is not a number": (spec("""
        workflow:
          name: w
          resources:
            default:
              cpu: lots
          tasks: [{name: a, image: u, command: [x]}]
        """), "workflow.resources.default.cpu", 5, "bad cpu count 'lots'"),
    "unknown resource": (spec("""
        workflow:
          name: w
          resources:
            gpu: {gpu: 1}
          tasks:
          - name: a
            image: u
            command: [x]
            resource: gpus
        """), "workflow.tasks[0].resource", 9, "unknown resource 'gpus' (workflow.resources: gpu)"),
    "input index token out of range": (spec("""
        workflow:
          name: w
          tasks:
          - {name: a, image: u, command: [x]}
          - name: b
            image: u
            command: [bash, -c]
            args:
            - |
              ls {{input:0}}
              cat {{ input:1 }}/x
            inputs: [{task: a}]
        """), "workflow.tasks[1].args[0]", 11, "token {{ input:1 }}: task 'b' has 1 input"),
    "host token outside the group": (spec("""
        workflow:
          name: w
          groups:
          - name: g
            tasks:
            - name: server
              image: u
              command: [x]
              environment:
                PEER: "{{host:sever}}"
        """), "workflow.groups[0].tasks[0].environment.PEER", 10, "no task 'sever' in the group of 'server'"),
    "input token naming a task not read": (spec("""
        workflow:
          name: w
          tasks:
          - {name: a, image: u, command: [x]}
          - {name: b, image: u, command: ["cat {{input:c}}"], inputs: [{task: a}]}
        """), "workflow.tasks[1].command[0]", 5, "reads no task 'c' (task inputs: a)"),
    "duplicate yaml key": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            image: v
            command: [x]
        """), "workflow.tasks[0].image", 6, "duplicate key 'image' (first given on line 5)"),
    "unsupported version": (spec("""
        version: 3
        workflow:
          name: w
          tasks: [{name: a, image: u, command: [x]}]
        """), "version", 1, "only version 2 is supported"),
    "bad task name": (spec("""
        workflow:
          name: w
          tasks:
          - {name: 1st-task, image: u, command: [x]}
        """), "workflow.tasks[0].name", 4, "bad task name '1st-task'"),
    "input with task and url": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            inputs:
            - {task: b, url: "s3://x/"}
        """), "workflow.tasks[0].inputs[0]", 8, "exactly one of 'task', 'dataset' or 'url'"),
    "dataset input with an output field": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            inputs:
            - dataset:
                name: scans
                path: sub
        """), "workflow.tasks[0].inputs[0].dataset.path", 10, "unknown field 'path'"),
    "bad regex": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            outputs:
            - url: s3://bucket/out/
              regex: "*.json"
        """), "workflow.tasks[0].outputs[0].regex", 9, "bad regex '*.json'"),
    "two files at one path": (spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            files:
            - {path: /tmp/run.sh, contents: echo 1}
            - {path: /tmp/run.sh, contents: echo 2}
        """), "workflow.tasks[0].files[1].path", 9, "two files at path '/tmp/run.sh' (the first on line 8)"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPECS))
def test_bad_spec_names_field_and_line(case, tmp_path):
    text, path, line, words = BAD_SPECS[case]
    file = tmp_path / "workflow.yaml"
    file.write_text(text)
    with pytest.raises(SpecError) as caught:
        load_file(file)
    err = caught.value
    assert (err.path, err.line) == (path, line), str(err)
    assert words in err.message
    assert str(err) == f"{file}:{line}: {path}: {err.message}"
    assert "\n" not in str(err)


def test_yaml_syntax_error_names_line():
    with pytest.raises(SpecError) as caught:
        load_text("workflow:\n  name: w\n  tasks: [a, b\n", file="w.yaml")
    assert caught.value.line is not None and caught.value.line >= 3
    assert str(caught.value).startswith("w.yaml:") and "invalid YAML" in str(caught.value)


def test_error_lines_of_a_loop_rendered_spec_say_rendered():
    text = spec("""
        workflow:
          name: w
          tasks:
          {% for i in range(2) %}
          - name: t{{ i }}
            image: u
            command: [x]
          {% endfor %}
          - name: bad
            image: u
            command: [x]
            lead: nope
        """)
    with pytest.raises(SpecError) as caught:
        load_text(text, file="loop.yaml")
    assert caught.value.file == "loop.yaml (rendered)"
    assert caught.value.path == "workflow.tasks[2].lead"


def test_single_task_group_lead_and_group_options():
    wf = load_text(spec("""
        workflow:
          name: w
          timeout: {exec_timeout: 2h, queue_timeout: 30m}
          groups:
          - name: solo
            barrier: false
            ignoreNonleadStatus: false
            timeout: {exec_timeout: 1h30m}
            tasks:
            - {name: only, image: u, command: [x], lead: false}
        """)).workflow
    group = wf.group("solo")
    assert group.lead.name == "only" and group.barrier is False and group.ignore_nonlead_status is False
    assert wf.timeout_for(group).exec_seconds == 5400 and wf.timeout_for(group).queue_seconds == 1800
    assert wf.timeout.exec_seconds == 7200


def test_external_task_input_is_not_an_upstream_group():
    wf = load_text(spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: ["cat {{input:train}} {{input:0}}"]
            inputs: [{task: "prev-run-3:train"}]
        """)).workflow
    source = wf.task("a").inputs[0]
    assert source.is_external and (source.workflow_id, source.task_name) == ("prev-run-3", "train")
    assert Dag.from_workflow(wf).upstream_of("a-group") == ()
    assert wf.task("a").input_index_by_task() == {"train": 0}


def test_exit_actions_credentials_checkpoint_mounts_parse():
    task = load_text(spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [x]
            privileged: true
            hostNetwork: true
            volumeMounts: [/data:/mnt/data]
            credentials:
              my-s3: {AWS_ACCESS_KEY_ID: access_key}
              token: /etc/token
            checkpoint:
            - {path: /tmp/ckpt, url: "s3://b/ckpt/", frequency: 10m}
            exitActions:
              complete: "0, 1-10, 16"
              RESCHEDULE: 137
        """)).workflow.task("a")
    assert task.privileged and task.host_network and task.volume_mounts == ("/data:/mnt/data",)
    assert task.credentials == {"my-s3": {"AWS_ACCESS_KEY_ID": "access_key"}, "token": "/etc/token"}
    assert task.checkpoints[0].frequency.seconds == 600
    assert task.exit_actions.action_for(16) is ExitAction.COMPLETE
    assert task.exit_actions.action_for(137) is ExitAction.RESCHEDULE
    assert task.exit_actions.action_for(11) is ExitAction.FAIL


def test_numbers_in_text_fields_keep_their_spelling():
    task = load_text(spec("""
        workflow:
          name: w
          tasks:
          - name: a
            image: u
            command: [sleep, 10]
            environment: {VERSION: 22.10, DEBUG: true}
        """)).workflow.task("a")
    assert task.command == ("sleep", "10")
    assert task.environment == {"VERSION": "22.10", "DEBUG": "true"}


# -- value syntaxes ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,seconds", [
    ("30s", 30), ("10m", 600), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("1d2h3m4s", 93784),
    ("90", 90), (45, 45), (" 2h ", 7200)])
def test_duration_forms(text, seconds):
    assert parse_duration(text).seconds == seconds


@pytest.mark.parametrize("bad", ["10 minutes", "1m1h", "1h1h", "0s", "", "1.5h", "h", -5, 0, True, [1]])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_exit_code_ranges_and_action_for():
    codes = parse_codes("1-5,255")
    assert [c in codes for c in (0, 1, 5, 6, 254, 255)] == [False, True, True, False, False, True]
    assert codes.codes() == frozenset({1, 2, 3, 4, 5, 255})
    assert str(parse_codes("7,1-3,2-5")) == "1-5,7"
    assert 0 in parse_codes(0)
    actions = ExitActions({ExitAction.COMPLETE: parse_codes(0), ExitAction.RESCHEDULE: parse_codes("1-5,255")})
    assert actions.action_for(0) is ExitAction.COMPLETE
    assert actions.action_for(3) is ExitAction.RESCHEDULE
    assert actions.action_for(255) is ExitAction.RESCHEDULE
    assert actions.action_for(6) is ExitAction.FAIL
    assert actions.action_for(2012) is ExitAction.FAIL  # OSMO's own codes are not subject to rules
    only_fail = ExitActions({ExitAction.FAIL: parse_codes("1-255")})
    assert only_fail.action_for(0) is ExitAction.COMPLETE  # default for a code no rule names
    assert ExitActions({ExitAction.COMPLETE: parse_codes("0-255")}).action_for(42) is ExitAction.COMPLETE


@pytest.mark.parametrize("bad", ["5-1", "256", "1-", "-3", "1,,2", "a", "1-5;7", None, 1.5, True])
def test_bad_exit_codes(bad):
    with pytest.raises(ValueError):
        parse_codes(bad)


@pytest.mark.parametrize("text,expected", [
    ("10Gi", 10 << 30), ("512Mi", 512 << 20), ("1G", 10**9), ("500M", 500 * 10**6), ("1.5Gi", 3 << 29),
    ("2Ki", 2048), ("1k", 1000), (1024, 1024), ("4096", 4096)])
def test_quantities_in_bytes(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["10GB", "Gi", "-1Gi", "1 Gb", "ten", True, -1])
def test_bad_quantities(bad):
    with pytest.raises(ValueError):
        parse_bytes(bad)


def test_cpu_counts():
    assert (parse_cpu(2), parse_cpu("0.5"), parse_cpu("500m"), parse_cpu(1.5)) == (2.0, 0.5, 0.5, 1.5)
    for bad in ("lots", -1, True, "1x"):
        with pytest.raises(ValueError):
            parse_cpu(bad)


def test_name_dedup_rule():
    assert canonical_name("Train_Model-A") == canonical_name("train-model_a") == "train-model-a"
    assert canonical_name("train1") != canonical_name("train-1")


# -- workflow ids and the DAG ------------------------------------------------------------------------

def test_workflow_ids():
    assert format_workflow_id("hello-osmo", 1) == "hello-osmo-1"
    assert parse_workflow_id("hello-osmo-12") == ("hello-osmo", 12)
    assert parse_workflow_id("job-2-3") == ("job-2", 3)
    assert next_workflow_id("job", ["job-1", "job-7", "job-x", "jobs-9", "other-20"]) == "job-8"
    assert next_workflow_id("new", []) == "new-1"
    for bad in ("hello", "hello-0", "hello-", "-3", "hello-01x"):
        with pytest.raises(ValueError):
            parse_workflow_id(bad)
    with pytest.raises(ValueError):
        format_workflow_id("x", 0)


def test_dag_upstream_downstream_and_ready():
    wf = load_text(spec("""
        workflow:
          name: w
          tasks:
          - {name: a, image: u, command: [x]}
          - {name: b, image: u, command: [x], inputs: [{task: a}]}
          - {name: c, image: u, command: [x]}
          - {name: d, image: u, command: [x], inputs: [{task: b}, {task: c}]}
        """)).workflow
    dag = Dag.from_workflow(wf)
    assert dag.order == ("a-group", "b-group", "c-group", "d-group")
    assert dag.upstream_of("d-group") == ("b-group", "c-group")
    assert dag.children_of("a-group") == ("b-group",)
    assert dag.downstream_of("a-group") == ("b-group", "d-group")
    assert dag.downstream_of(wf.group("c-group")) == ("d-group",)
    assert dag.ready(done=[]) == ("a-group", "c-group")
    assert dag.ready(done=["a-group"], started=["c-group"]) == ("b-group",)
    assert dag.ready(done=["a-group", "b-group", "c-group"]) == ("d-group",)


# -- files: paths, normalised as the task's view resolves them (osmo_run/spec/filepaths.py) ----------

def _quoted(text: str) -> str:
    """``text`` as a YAML double-quoted string: printable characters as they are, any other escaped."""
    return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\U{ord(c):08x}" for c in text) + '"'


def _files_spec(*paths: str, inputs: str = "") -> str:
    """A one-task spec whose ``files:`` are ``paths``; files[i] is on line 8 + i (+ inputs lines)."""
    entries = "".join(f"\n   - {{path: {_quoted(p)}, contents: x}}" for p in paths)
    return f"workflow:\n name: w\n tasks:\n - name: a\n   image: u\n   command: [x]\n{inputs}   files:{entries}\n"


def test_file_paths_are_normalised_as_the_task_view_resolves_them():
    task = load_text(_files_spec(
        "/tmp/../var/tmp/x", "//etc/app.conf", "run.sh", "conf/../conf/./app.yaml", "../../top-level",
        "{{output}}/a/../result.txt", "{{ input:up }}/../../output/from-input.txt", "/tmp/données/模型.yaml",
        "/tmp/{{workflow_id}}/id.txt", "/osmo/work/abs.txt",
        inputs="   inputs:\n   - task: other-1:up\n"), file="w.yaml").workflow.task("a")
    assert [f.path for f in task.files] == [
        "/var/tmp/x", "/etc/app.conf", "/osmo/work/run.sh", "/osmo/work/conf/app.yaml", "/top-level",
        "/osmo/data/output/result.txt", "/osmo/data/output/from-input.txt", "/tmp/données/模型.yaml",
        "/tmp/{{workflow_id}}/id.txt", "/osmo/work/abs.txt"]


LONG_NAME = "n" * 256
REFUSED_PATHS = {
    "empty": ("", "must not be empty"),
    "bare /": ("/", "names a folder"),
    "bare /tmp/": ("/tmp/", "names a folder"),
    "ends in ..": ("/tmp/x/..", "names a folder"),
    "the output folder itself": ("{{output}}", "names a folder"),
    "the working folder itself": (".", "names a folder"),
    "proc through ..": ("/tmp/../proc/self/x", "'/proc/self/x') is under /proc"),
    "sys": ("/sys/kernel/x", "under /sys"),
    "dev from the output": ("/osmo/data/output/../../../dev/x", "under /dev"),
    "dev/shm": ("/dev/shm/x", "under /dev"),
    "relative into /osmo": ("./a/../../b", "(that is '/osmo/b') is under /osmo"),
    "the inputs": ("{{input:0}}/x", "is under /osmo"),
    "the runner's hosts file": ("/osmo/.hosts", "is under /osmo"),
    "osmo data": ("/osmo/data/x", "is under /osmo"),
    "NUL": ("/tmp/a\0b", "a NUL byte (U+0000)"),
    "newline": ("/tmp/a\nb", "a control character (U+000A)"),
    "escape": ("/tmp/\x1b[31mred", "a control character (U+001B)"),
    "C1 control": ("/tmp/a\x85b", "a control character (U+0085)"),
    "bidi override": ("/tmp/invoice\u202egnp.sh", "an invisible formatting character (U+202E)"),
    "bidi isolate": ("/tmp/\u2066x", "an invisible formatting character (U+2066)"),
    "zero-width space": ("/tmp/ad\u200bmin", "an invisible formatting character (U+200B)"),
    "line separator": ("/tmp/a\u2028b", "a line separator (U+2028)"),
    "private use": ("/tmp/\ue000", "a private-use character (U+E000)"),
    "unassigned": ("/tmp/\U000e0fff", "an unassigned code point"),
    "name over NAME_MAX": (f"/tmp/{LONG_NAME}", "a name of 256 bytes: the limit is 255 (NAME_MAX)"),
    "multibyte name over NAME_MAX": ("/tmp/" + "é" * 128, "a name of 256 bytes"),
    "path of PATH_MAX": ("/tmp" + "/d" * 2046, "is 4096 bytes long: the limit is 4095 (PATH_MAX)"),
    "relative path over PATH_MAX once under /osmo/work": ("d/" * 2042 + "f", "bytes long: the limit is 4095"),
}


@pytest.mark.parametrize("case", sorted(REFUSED_PATHS))
def test_refused_file_paths_name_the_field_and_line(case):
    path, words = REFUSED_PATHS[case]
    with pytest.raises(SpecError) as caught:
        load_text(_files_spec("/tmp/fine.sh", path, inputs="   inputs:\n   - task: other-1:up\n"), file="w.yaml")
    err = caught.value
    assert (err.path, err.line) == ("workflow.tasks[0].files[1].path", 11), str(err)
    assert words in err.message, err.message
    assert str(err).startswith("w.yaml:11: workflow.tasks[0].files[1].path: ") and "\n" not in str(err)


@pytest.mark.parametrize("first, second, words", [
    ("/tmp/run.sh", "/tmp/./x/../run.sh", "two files at path '/tmp/run.sh' (the first on line 8); "
                                          "'/tmp/./x/../run.sh' is '/tmp/run.sh'"),
    ("run.sh", "/osmo/work/run.sh", "two files at path '/osmo/work/run.sh' (the first on line 8)"),
    ("{{output}}/r.txt", "/osmo/data/output/r.txt", "two files at path '/osmo/data/output/r.txt'"),
    ("/tmp/a", "/tmp/a/b", "'/tmp/a' would be both a file and a folder ('/tmp/a' and '/tmp/a/b')"),
    ("/etc/app/x", "//etc/app", "'/etc/app' would be both a file and a folder"),
])
def test_two_entries_at_one_file_after_normalisation_are_refused(first, second, words):
    with pytest.raises(SpecError) as caught:
        load_text(_files_spec(first, second), file="w.yaml")
    assert (caught.value.path, caught.value.line) == ("workflow.tasks[0].files[1].path", 9)
    assert words in caught.value.message, caught.value.message


def test_the_longest_paths_and_names_allowed_are_accepted():
    longest = "/tmp" + "/d" * 2045 + "x"  # 4095 bytes: PATH_MAX less the terminating NUL
    name = "/tmp/" + "é" * 127 + "n"  # a name of 255 bytes in UTF-8
    task = load_text(_files_spec(longest, name), file="w.yaml").workflow.task("a")
    assert [len(f.path.encode()) for f in task.files] == [4095, 5 + 255]


def test_ordinary_unicode_names_are_kept_as_written():
    nfc, nfd = "/tmp/caf\u00e9.txt", "/tmp/cafe\u0301.txt"  # two different files on Linux
    names = (nfc, nfd, "/tmp/🤖/ünïcödé ÿ.yaml", "/tmp/日本語/файл")
    task = load_text(_files_spec(*names), file="w.yaml").workflow.task("a")
    assert tuple(f.path for f in task.files) == names


_NAMES = st.sampled_from(["", ".", "..", "a", "b", "osmo", "data", "output", "input", "work", "proc", "sys",
                          "dev", "tmp", "etc", "é", "{{output}}", "{{input:0}}", "{{workflow_id}}"])


@settings(max_examples=400, deadline=None)
@given(names=st.lists(_NAMES, max_size=12), absolute=st.booleans(), slashes=st.integers(1, 3))
def test_a_normalised_accepted_path_never_escapes_the_allowed_roots(names, absolute, slashes):
    written = ("/" * slashes if absolute else "") + "/".join(names)
    try:
        path = view_path(written, {"up": 0})
    except ValueError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert path.startswith("/") and not path.startswith("//") and posixpath.normpath(path) == path
    parts = path.split("/")[1:]
    assert parts and all(p not in ("", ".", "..") for p in parts)
    assert not any(path == r or path.startswith(r + "/") for r in ("/proc", "/sys", "/dev"))
    if path == "/osmo" or path.startswith("/osmo/"):
        assert path.startswith("/osmo/data/output/") or path.startswith("/osmo/work/")
    assert path not in ("/tmp", "/osmo/data/output", "/osmo/work")
    if "{{" not in written:
        base = written if absolute else posixpath.join("/osmo/work", written)
        assert path == "/" + posixpath.normpath(base).lstrip("/")  # what the kernel resolves, less links


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80))
def test_any_text_is_a_normalised_path_or_a_one_line_refusal(text):
    try:
        path = normalise_file_path(text)
    except ValueError as exc:
        assert "\n" not in str(exc)
        return
    assert path.startswith("/") and posixpath.normpath(path) == path and normalise_file_path(path) == path
