"""The pieces of ``exec --debug`` on Kubernetes (``osmo_run/kube/debug.py``) that need no cluster: which
attempt is copied, inputs pinned to the versions the attempt read, the attempt's uploaded output brought
back as one more input, the copy's Secret and Pod (renamed, labelled ``osmo.debug``, the keeper instead of
the command, no sidecar container, references to the Secret renamed, no gang), the copy made from a
recorded spec with its environment, files and credentials, and the reasons a copy cannot start. The real
node's tests are in tests/kube/test_node_interactive.py."""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client

from osmo_run.contract import InputSpec
from osmo_run.kube.debug import (KEEPER, LABEL_DEBUG, Recorded, _copy_pod, _why_not_running, choose_attempt,
                                 debug_name, debug_objects, pinned_inputs, written_output)
from osmo_run.kube.objects import INIT_CONTAINER, SIDECAR_CONTAINER, TASK_CONTAINER, TaskPod
from osmo_run.kube.pool import KubePool
from osmo_run.local.errors import CONFLICT, NOT_FOUND, RunnerError
from osmo_run.local.settings import Settings


def _info(*statuses: str, task_status: str = "FAILED") -> dict:
    attempts = [{"attempt": n, "status": s, "datasets_read": [], "datasets_written": []}
                for n, s in enumerate(statuses, 1)]
    return {"id": "wf-1", "groups": [{"name": "g", "tasks": [
        {"name": "t", "lead": True, "status": task_status, "attempts": attempts}]}]}


def test_choose_attempt_takes_the_last_or_the_retry_asked_for_and_refuses_a_running_one():
    assert choose_attempt(_info("RESCHEDULED", "FAILED"), "t", None)["attempt"] == 2
    assert choose_attempt(_info("RESCHEDULED", "FAILED"), "t", 1)["status"] == "RESCHEDULED"
    with pytest.raises(RunnerError) as missing:
        choose_attempt(_info("RESCHEDULED", "FAILED"), "t", 5)
    assert missing.value.exit_code == NOT_FOUND and str(missing.value) == "task t has no attempt 5 (it has 1, 2)"
    with pytest.raises(RunnerError) as running:
        choose_attempt(_info("RESCHEDULED", "RUNNING", task_status="RUNNING"), "t", None)
    assert running.value.exit_code == CONFLICT
    assert str(running.value) == "attempt 2 of task t is RUNNING: use 'osmo workflow exec wf-1 t' to enter it"
    with pytest.raises(RunnerError, match="task t has not run yet"):
        choose_attempt(_info(task_status="WAITING"), "t", None)
    with pytest.raises(RunnerError, match="has no task 'x'"):
        choose_attempt(_info("FAILED"), "x", None)


def test_inputs_are_pinned_to_the_versions_the_attempt_read():
    inputs = (InputSpec("task", ref="wf-1--up", task="up"), InputSpec("dataset", ref="imgs:latest", regex="png$"),
              InputSpec("url", url="s3://b/p"), InputSpec("dataset", ref="never-read"))
    read = [{"input": 0, "dataset": "wf-1--up", "version": 3}, {"input": 1, "dataset": "imgs", "version": 7},
            {"input": 2, "dataset": "ignored", "version": 1}]
    pinned = pinned_inputs(inputs, read)
    assert [p.ref for p in pinned] == ["wf-1--up:3", "imgs:7", None, "never-read"]
    assert pinned[1].regex == "png$" and pinned[2].url == "s3://b/p" and pinned[0].task == "up"


def test_the_uploaded_task_output_version_becomes_an_input():
    written = [{"output": 1, "dataset": "mine", "version": 2}, {"output": 0, "dataset": "wf-1--t", "version": 4}]
    assert written_output(written, "wf-1", "t") == InputSpec("task", ref="wf-1--t:4", task="t")
    assert written_output(written[:1], "wf-1", "t") is None
    assert written_output([], "wf-1", "t") is None


def _task(**extra) -> TaskPod:
    return TaskPod(name="t", image="ubuntu:24.04", argv=["python3", "train.py"], env={"A": "1"},
                   contract_json="{}", attempt=2, files=[("/etc/x.conf", b"x")], cpu=1.0, memory=2**30,
                   credential_env={"TOKEN": "s3cr3t-value"}, credential_files=[("/root/.key", "k")],
                   host_mounts=[("/data", "/mnt/data")], **extra)


def test_the_copy_is_the_attempts_pod_renamed_without_its_command_sidecar_or_gang():
    pool = KubePool(namespace="ns", scheduler="kai", queue="team")
    name = debug_name("wf-1-t-2", "abc123")
    assert name == "wf-1-t-2-debug-abc123"
    secret, pod = debug_objects("wf-1", "g", _task(), pool, name, output_input=None)
    for obj in (secret, pod):
        assert obj["metadata"]["name"] == name and obj["metadata"]["namespace"] == "ns"
        labels = obj["metadata"]["labels"]
        assert labels[LABEL_DEBUG] == "true" and labels["osmo.workflow"] == "wf-1" and labels["osmo.task"] == "t"
    assert "annotations" not in pod["metadata"]  # not a member of the group's PodGroup
    assert pod["metadata"]["labels"]["kai.scheduler/queue"] == "team"
    spec = pod["spec"]
    assert spec["restartPolicy"] == "Never" and "subdomain" not in spec
    assert [c["name"] for c in spec["containers"]] == [TASK_CONTAINER]  # no upload sidecar container
    main = spec["containers"][0]
    assert main["command"] == ["/bin/sh", "-c", KEEPER, "osmo-debug"] and "train.py" not in json.dumps(main)
    assert main["image"] == "ubuntu:24.04" and main["resources"]["limits"]["memory"] == str(2**30)
    assert {"name": "A", "value": "1"} in main["env"]
    token = next(e for e in main["env"] if e["name"] == "TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": name, "key": "cred-env-TOKEN"}
    mounts = {m["mountPath"] for m in main["volumeMounts"]}
    assert {"/etc/x.conf", "/root/.key", "/mnt/data", "/osmo/data"} <= mounts
    secret_volumes = [v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v]
    assert secret_volumes and set(secret_volumes) == {name}
    assert base64.b64decode(secret["data"]["cred-env-TOKEN"]) == b"s3cr3t-value"
    assert base64.b64decode(secret["data"]["file-0"]) == b"x"
    init = spec["initContainers"][0]
    assert init["name"] == INIT_CONTAINER and "exec osmo-sidecar download" in init["command"][2]
    assert SIDECAR_CONTAINER not in [c["name"] for c in spec["containers"] + spec["initContainers"]]
    assert "upload" not in json.dumps(spec)  # the copy writes nothing to the store


def test_the_init_container_moves_the_restored_output_into_the_output_folder():
    _, pod = debug_objects("wf-1", "g", _task(), KubePool(), "copy", output_input=3)
    script = pod["spec"]["initContainers"][0]["command"][2]
    assert "exec osmo-sidecar" not in script  # the download is followed by the move
    download, move = script.split(" && osmo-sidecar download ", 1)[1].split(" && cp -a ", 1)
    assert "--status-message /dev/termination-log" in download
    assert move.startswith("/osmo/run/data/input/3/. /osmo/run/data/output/ && rm -rf /osmo/run/data/input/3")


SPEC = """
workflow:
  name: wf
  groups:
  - name: make
    tasks:
    - name: up
      image: busybox
      command: [sh, -c, "echo > {{output}}/a"]
  - name: g
    tasks:
    - name: t
      lead: true
      image: ubuntu:24.04
      command: [sh, -c, "echo {{input:up}} {{host:t}} > {{output}}/b"]
      args: [x]
      environment: {GREETING: "hi {{workflow_id}}"}
      files:
      - path: /etc/note.txt
        contents: "note of {{workflow_id}}"
      inputs:
      - task: up
      credentials:
        api: {API_TOKEN: token}
"""


def test_the_copy_is_made_from_the_recorded_spec_with_its_environment_files_and_credentials(monkeypatch):
    monkeypatch.setenv("DEBUG_UNIT_TOKEN", "tok-123")
    settings = Settings.from_json({"credentials": {"api": {"env": {"token": "DEBUG_UNIT_TOKEN"}}}})
    recorded = Recorded(SPEC, settings, None, "/stores/main")
    attempt = {"attempt": 2, "datasets_read": [{"input": 0, "dataset": "wf-9--up", "version": 5}],
               "datasets_written": [{"output": 0, "dataset": "wf-9--t", "version": 8}]}
    group, task, restore = _copy_pod("wf-9", recorded, KubePool(namespace="ns"), "t", attempt)
    assert (group, task.image, task.attempt, restore) == ("g", "ubuntu:24.04", 2, 1)
    assert task.argv == [] and task.env == {"GREETING": "hi wf-9"}
    assert task.files == [("/etc/note.txt", b"note of wf-9")]
    assert task.credential_env == {"API_TOKEN": "tok-123"}
    contract = json.loads(task.contract_json)
    assert [i["ref"] for i in contract["inputs"]] == ["wf-9--up:5", "wf-9--t:8"]
    assert contract["outputs"] == [] and contract["attempt"] == 2 and contract["store"] == "/stores/main"
    monkeypatch.delenv("DEBUG_UNIT_TOKEN")
    with pytest.raises(RunnerError, match=r"the task's credentials: .*DEBUG_UNIT_TOKEN is not set"):
        _copy_pod("wf-9", recorded, KubePool(namespace="ns"), "t", attempt)


def _pod(phase="Pending", init=None, main=None) -> client.V1Pod:
    def status(name, state):
        return client.V1ContainerStatus(name=name, image="img", image_id="", ready=False, restart_count=0,
                                        state=state)
    return client.V1Pod(status=client.V1PodStatus(
        phase=phase, init_container_statuses=[status(INIT_CONTAINER, init)] if init else None,
        container_statuses=[status(TASK_CONTAINER, main)] if main else None))


def test_the_reasons_a_copy_cannot_start():
    pulling = client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ContainerCreating"))
    assert _why_not_running(_pod(init=pulling)) is None  # it may still start
    bad = client.V1ContainerState(waiting=client.V1ContainerStateWaiting(reason="ImagePullBackOff",
                                                                         message='Back-off pulling image "nope"'))
    assert _why_not_running(_pod(main=bad)) == 'ImagePullBackOff: Back-off pulling image "nope"'
    failed = client.V1ContainerState(terminated=client.V1ContainerStateTerminated(
        exit_code=2, message='{"code": 2010, "message": "input 0: gone"}'))
    assert _why_not_running(_pod(init=failed)) == (
        f'its init container {INIT_CONTAINER} failed (2): {{"code": 2010, "message": "input 0: gone"}}')
    assert "the pod failed" in _why_not_running(_pod(phase="Failed"))
