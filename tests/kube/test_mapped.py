"""What the Kubernetes runner maps besides the basics, against a real kube-apiserver (the test playing the
kubelet where pods must run): ``credentials:`` as keys of the attempt's Secret (variables through
``secretKeyRef``, files of a 0400 Secret volume; no value in the pod), ``checkpoint:`` folders shared with
the upload container, ``volumeMounts`` only below the pool's ``host_paths`` (else one line at submit), and
the dataset versions each attempt read and wrote, read from the sidecar containers' termination messages
into ``osmo workflow query``."""

from __future__ import annotations

import base64
import json

import pytest
from kubernetes import client

from osmo_run.contract import DataStatus
from osmo_run.kube.apply import create
from osmo_run.kube.objects import (CHECKPOINT_DIR, INIT_CONTAINER, SIDECAR_CONTAINER, TERMINATION_LOG, TaskPod,
                                   checkpoint_source, credential_values, task_pod, task_secret)
from osmo_run.kube.pool import PoolConfigError, parse_pool
from run.conftest import Osmo

from kube.test_runner import _state, kosmo, spec_file, task_map, wait_pod, wait_status

__all__ = ["kosmo"]  # a fixture, used by name

SECRET_VALUE = "s3cr3t-value-never-in-a-pod"


def test_credentials_checkpoints_and_host_folders_in_a_pod_the_api_server_accepts(kube_server, kube_namespace):
    pool = parse_pool({"namespace": kube_namespace, "sidecar_image": "osmo-sidecar:0.1", "host_paths": ["/data"]})
    shared: list[str] = []
    assert checkpoint_source("/osmo/data/output/ckpt", shared) == "data/output/ckpt" and shared == []
    assert checkpoint_source("/workspace/ckpt", shared) == f"{CHECKPOINT_DIR}/0" and shared == ["/workspace/ckpt"]
    task = TaskPod(name="train", image="python:3.11-slim", argv=["python3", "train.py"], env={"MODE": "fast"},
                   contract_json="{}", attempt=1, files=[("/opt/run.sh", b"#!/bin/sh\n")],
                   credential_env={"AWS_SECRET_ACCESS_KEY": SECRET_VALUE},
                   credential_files=[("/root/.creds/token", "token-value-1234")], checkpoint_dirs=shared,
                   host_mounts=[("/data/maps", "/maps")])
    api = kube_server.api_client()
    secret = create(api, task_secret("wf-1", "g", task, pool))
    pod = create(api, task_pod("wf-1", "g", task, pool))
    assert sorted(credential_values(secret["data"])) == sorted([SECRET_VALUE, "token-value-1234"])
    assert SECRET_VALUE not in json.dumps(pod) and "token-value-1234" not in json.dumps(pod)
    main, sidecar = pod["spec"]["containers"]
    env = {e["name"]: e for e in main["env"]}
    assert env["MODE"]["value"] == "fast"
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": pod["metadata"]["name"], "key": "cred-env-AWS_SECRET_ACCESS_KEY"}
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    cred = mounts["/root/.creds/token"]
    assert cred["readOnly"] and volumes[cred["name"]]["secret"]["defaultMode"] == 0o400
    assert [i["key"] for i in volumes[cred["name"]]["secret"]["items"]] == ["cred-file-0"]
    assert [i["key"] for i in volumes["osmo-files"]["secret"]["items"]] == ["file-0"]  # never the credentials
    assert volumes[mounts["/workspace/ckpt"]["name"]] == {"name": "osmo-checkpoint-0", "emptyDir": {}}
    assert {m["mountPath"] for m in sidecar["volumeMounts"]} >= {f"{CHECKPOINT_DIR}/0"}
    assert volumes[mounts["/maps"]["name"]]["hostPath"]["path"] == "/data/maps"
    assert sidecar["command"][-2:] == ["--status-message", TERMINATION_LOG]
    assert TERMINATION_LOG in pod["spec"]["initContainers"][0]["command"][-1]


def test_host_paths_in_the_pool_config_are_checked():
    assert parse_pool({"host_paths": ["/data/", "/mnt//shared"]}).host_paths == ("/data", "/mnt/shared")
    for bad in ("data", "/data/../etc", 7):
        with pytest.raises(PoolConfigError, match=r"kubernetes\.host_paths\[0\]"):
            parse_pool({"host_paths": [bad]})


MOUNTS = """\
    workflow:
      name: kmounts
      tasks:
      - name: mapper
        image: ubuntu:24.04
        command: [ls, /maps]
        volumeMounts: [/data/maps:/maps, "{host}"]
    """


@pytest.mark.parametrize("host, allowed", [("/etc:/host-etc", False), ("/data2/x", False), ("/data/other", True)])
def test_volume_mounts_outside_the_pools_host_paths_are_refused_at_submit(tmp_path, host, allowed):
    osmo = Osmo(tmp_path, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    osmo.pool(kubernetes={"namespace": "x", "host_paths": ["/data"]})
    path = spec_file(tmp_path, MOUNTS.replace("{host}", host))
    result = osmo("submit", path, "--runner", "kubernetes", check=False)
    if allowed:  # accepted: the submit went on to start the workflow's supervisor in the cluster, and there
        # is none here (no kubeconfig): one line, nothing recorded
        assert result.code != 0 and "not allowed" not in result.err, result.err
        assert result.err == "osmo: error: no Kubernetes cluster configured: Invalid kube-config file. No " \
                             "configuration found.\n"
        return
    host_path = host.split(":")[0]
    assert result.code != 0 and result.out == ""
    assert result.err.strip().count("\n") == 0 and "Traceback" not in result.err
    assert f"task 'mapper': volumeMounts: '{host}': the host path {host_path} is not allowed" in result.err
    assert "kubernetes.host_paths: /data" in result.err


def test_a_credential_mistake_fails_a_kubernetes_submit_with_one_line(tmp_path):
    osmo = Osmo(tmp_path, KUBECONFIG=str(tmp_path / "no-kubeconfig"))
    osmo.pool(kubernetes={"namespace": "x"}, credentials={"robot": {"env": {"token": "ROBOT_TOKEN_UNSET"}}})
    path = spec_file(tmp_path, """\
        workflow:
          name: kcreds
          tasks:
          - {name: t, image: ubuntu:24.04, command: [env], credentials: {robot: {TOKEN: token}}}
        """)
    result = osmo("submit", path, "--runner", "kubernetes", check=False)
    assert result.code != 0 and result.err.strip().count("\n") == 0
    assert "credential 'robot'" in result.err and "$ROBOT_TOKEN_UNSET is not set" in result.err


READ_WRITE = """\
    workflow:
      name: kdata
      tasks:
      - name: reader
        image: ubuntu:24.04
        command: [sh, -c, "cp -r {{input:0}} {{output}}"]
        inputs: [{dataset: {name: maps}}]
        outputs: [{dataset: {name: trained}}]
    """


def _ended(code: int, status: DataStatus) -> dict:
    state = _state(code)
    state["terminated"]["message"] = status.to_message()
    return state


def _submit_and_bind(kosmo, tmp_path) -> tuple[str, str]:
    """Submit READ_WRITE and bind its pod to a node; the workflow id and the pod's name."""
    wf = kosmo.submit(spec_file(tmp_path, READ_WRITE), "--runner", "kubernetes", wait=False)
    name = wait_pod(kosmo, wf, "reader#1").metadata.name
    kosmo.core.create_namespaced_pod_binding(name, kosmo.namespace, client.V1Binding(
        metadata=client.V1ObjectMeta(name=name), target=client.V1ObjectReference(kind="Node", name="node-1")),
        _preload_content=False)
    return wf, name


def test_the_datasets_each_attempt_read_and_wrote_are_in_query(kosmo, tmp_path):
    wf, name = _submit_and_bind(kosmo, tmp_path)
    read = DataStatus(0, "1 input downloaded", ({"input": 0, "kind": "dataset", "ref": "maps", "dataset": "maps",
                                                 "version": 4, "files": 2, "bytes": 10},))
    wrote = DataStatus(0, "2 outputs uploaded", (
        {"output": 0, "kind": "task_output", "dataset": f"{wf}--reader", "version": 1, "files": 2},
        {"output": 1, "kind": "dataset", "dataset": "trained", "version": 7, "files": 2}))
    container = {"image": "x", "imageID": "", "ready": False, "restartCount": 0}
    kosmo.core.patch_namespaced_pod_status(name, kosmo.namespace, {"status": {
        "phase": "Succeeded",
        "initContainerStatuses": [{**container, "name": INIT_CONTAINER, "state": _ended(0, read)}],
        "containerStatuses": [{**container, "name": "task", "state": _state(0)},
                              {**container, "name": SIDECAR_CONTAINER, "state": _ended(0, wrote)}]}})
    row = wait_status(kosmo, wf)
    assert row["status"] == "COMPLETED", row
    reader = task_map(row)["reader"]
    assert [(d["dataset"], d["version"]) for d in reader["attempts"][0]["datasets_read"]] == [("maps", 4)]
    assert [(d["dataset"], d["version"]) for d in reader["datasets_written"]] == [(f"{wf}--reader", 1),
                                                                                  ("trained", 7)]
    shown = kosmo("query", wf).out
    assert "maps:4" in shown and "trained:7" in shown


def test_a_failing_sidecars_status_message_is_the_reason(kosmo, tmp_path):
    wf, name = _submit_and_bind(kosmo, tmp_path)
    failed = DataStatus(2010, "input 0 (dataset maps): no dataset 'maps' in the store")
    kosmo.core.patch_namespaced_pod_status(name, kosmo.namespace, {"status": {
        "phase": "Failed", "initContainerStatuses": [{"image": "x", "imageID": "", "ready": False, "restartCount": 0,
                                                      "name": INIT_CONTAINER, "state": _ended(1, failed)}]}})
    reader = task_map(wait_status(kosmo, wf))["reader"]
    assert reader["exit_code"] == 2010
    assert reader["reason"] == "download failed (2010): input 0 (dataset maps): no dataset 'maps' in the store"


def test_credential_values_of_a_secret_are_found_whatever_their_encoding():
    data = {"task.json": base64.b64encode(b"{}").decode(), "cred-env-X": base64.b64encode("wert-ü".encode()).decode()}
    assert credential_values(data) == ["wert-ü"] and credential_values(None) == []
