"""The Kubernetes runner's objects, checked by a real kube-apiserver's validation: every scheduler's
PodGroup, the headless Service, the Secret, the Pod anatomy, placement, and deletion by label."""

from __future__ import annotations

import base64
import json
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from osmo_run.kube.apply import create, delete_workflow
from osmo_run.kube.objects import (EXIT_CODE, INIT_CONTAINER, SIDECAR_CONTAINER, TASK_CONTAINER, TaskPod,
                                   dns_label, group_objects, host_name, names)
from osmo_run.kube.pool import KubePool, PoolConfigError, parse_pool


def tasks(n: int = 2) -> list[TaskPod]:
    out = []
    for i in range(n):
        out.append(TaskPod(name=f"Worker_{i}", image="python:3.11-slim", argv=["python3", "-c", "print('hi')"],
                           env={"RANK": str(i)}, contract_json=json.dumps({"task": f"worker_{i}"}),
                           files=[("/osmo/data/input/cfg.yaml", b"a: 1\n"), ("/opt/run.sh", b"#!/bin/sh\n")],
                           cpu=0.5, memory=2 << 30, gpu=1 if i == 0 else None, storage=10 << 30,
                           platform="ovx-a40"))
    return out


POOL = dict(scheduler_name=None, queue="team-a", sidecar_image="osmo-sidecar:0.1", store_secret="osmo-store",
            platforms={"ovx-a40": {"node_selector": {"nvidia.com/gpu.product": "NVIDIA-A40"},
                                   "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                    "effect": "NoSchedule"}]}})


@pytest.mark.parametrize("scheduler", ["kai", "volcano", "coscheduling", "none"])
def test_every_object_passes_the_api_servers_validation(kube_server, kube_namespace, scheduler):
    pool = parse_pool({**POOL, "namespace": kube_namespace, "scheduler": scheduler})
    api = kube_server.api_client()
    objs = group_objects("train-run-12", "Training_Group", tasks(), pool, queue_timeout=600)
    kinds = [o["kind"] for o in objs]
    assert kinds == (["PodGroup"] if scheduler != "none" else []) + ["Service", "Secret", "Pod", "Secret", "Pod"]
    for obj in objs:
        create(api, obj, dry_run=True)  # full server-side validation, nothing stored
    made = [create(api, obj) for obj in objs]
    pods = [m for m in made if m["kind"] == "Pod"]
    for pod in pods:
        spec = pod["spec"]
        assert spec["restartPolicy"] == "Never" and spec["subdomain"] == names("train-run-12", "Training_Group")["service"]
        assert [c["name"] for c in spec["initContainers"]] == [INIT_CONTAINER]
        assert [c["name"] for c in spec["containers"]] == [TASK_CONTAINER, SIDECAR_CONTAINER]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-A40"}
        assert spec.get("schedulerName", "default-scheduler") == \
            {"kai": "kai-scheduler", "volcano": "volcano", "coscheduling": "scheduler-plugins-scheduler",
             "none": "default-scheduler"}[scheduler]
        main = spec["containers"][0]
        assert main["resources"]["requests"]["cpu"] == "500m"
        assert main["resources"]["limits"]["memory"] == str(2 << 30)
        assert EXIT_CODE in main["command"][2]
    gpu = pods[0]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1" and "nvidia.com/gpu" not in pods[1]["spec"]["containers"][0]["resources"]["limits"]
    meta = pods[0]["metadata"]
    if scheduler == "kai":
        assert meta["annotations"]["pod-group-name"] == names("train-run-12", "Training_Group")["podgroup"]
        assert meta["labels"]["kai.scheduler/queue"] == "team-a"
    elif scheduler == "volcano":
        assert meta["annotations"]["scheduling.k8s.io/group-name"] == names("train-run-12", "Training_Group")["podgroup"]
    elif scheduler == "coscheduling":
        assert meta["labels"]["scheduling.x-k8s.io/pod-group"] == names("train-run-12", "Training_Group")["podgroup"]
        assert made[0]["spec"]["scheduleTimeoutSeconds"] == 600
    if scheduler != "none":
        assert made[0]["spec"]["minMember"] == 2
    secret = client.CoreV1Api(api).read_namespaced_secret(pods[0]["metadata"]["name"], kube_namespace)
    assert json.loads(base64.b64decode(secret.data["task.json"])) == {"task": "worker_0"}
    assert base64.b64decode(secret.data["file-1"]) == b"#!/bin/sh\n"
    # everything is labelled: deleting the workflow leaves nothing behind
    assert delete_workflow(api, kube_namespace, "train-run-12") == len(objs)
    core = client.CoreV1Api(api)
    assert not core.list_namespaced_secret(kube_namespace, label_selector="osmo.workflow").items
    assert not core.list_namespaced_service(kube_namespace, label_selector="osmo.workflow").items


def test_the_api_server_refuses_what_the_builder_must_never_make(kube_server, kube_namespace):
    pool = KubePool(namespace=kube_namespace, scheduler="volcano")
    objs = group_objects("wf-1", "g", tasks(1), pool)
    bad = json.loads(json.dumps(objs[0]))
    bad["spec"]["minMember"] = 0  # a gang of nobody
    with pytest.raises(ApiException) as err:
        create(kube_server.api_client(), bad, dry_run=True)
    assert err.value.status == 422


def test_names_fit_kubernetes_limits():
    long = "a-very-long-workflow-name-that-keeps-going-and-going-1234"
    name = dns_label(long, "Group_With_Caps", "and-more-and-more")
    assert len(name) <= 63 and name == name.lower() and not name.endswith("-")
    assert name != dns_label(long, "Group_With_Caps", "and-more-and-morf")  # the hash keeps them apart
    assert host_name("Train_Lead") == "train-lead"


def test_pool_config_errors_name_the_field():
    for raw, field in (({"scheduler": "slurm"}, "kubernetes.scheduler"), ({"colour": 1}, "kubernetes.colour"),
                       ({"namespace": ""}, "kubernetes.namespace"),
                       ({"platforms": {"a40": {"node_selector": {"x": 1}}}}, "platforms.a40.node_selector")):
        with pytest.raises(PoolConfigError, match=field.replace(".", r"\.")):
            parse_pool(raw)


@pytest.mark.kube_cluster
def test_a_pod_of_the_default_scheduler_runs_on_a_node(kube_cluster):
    from servers.kube_fixtures import create_namespace

    api = kube_cluster.api_client()
    namespace = create_namespace(kube_cluster)
    pool = KubePool(namespace=namespace)
    one = tasks(1)
    one[0] = TaskPod(name="solo", image="busybox", argv=["true"], env={}, contract_json="{}", cpu=0.1)
    for obj in group_objects("wf-2", "g", one, pool):
        create(api, obj)
    core = client.CoreV1Api(api)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pod = core.read_namespaced_pod(dns_label("wf-2", "solo", "0"), namespace)
        init = (pod.status.init_container_statuses or [None])[0]
        if pod.spec.node_name and init is not None and init.state.running:
            break
        time.sleep(0.2)
    # scheduled, and the kubelet started the download init container (a hollow node's containers
    # never finish, so the pod stays in its init phase)
    assert pod.spec.node_name and init is not None and init.state.running, pod.status
    assert init.name == INIT_CONTAINER
