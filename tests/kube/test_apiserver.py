"""The Kubernetes test servers work as the runner will use them: the official Python client against a real
kube-apiserver (namespaces, pods, headless Services, the three schedulers' PodGroup CRDs with validation,
watches, pod status patches, an API server restart), and the scheduling tier binds pods to a hollow node."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from helpers.waiting import wait_for
from servers.kube import KUBELET_CHAINS, KubeError, KubeServer, _remove_kubelet_chains, kubelet_chains
from servers.kube_fixtures import create_namespace

# (group, version, spec of a valid PodGroup of that scheduler)
PODGROUPS = {
    "kai": ("scheduling.run.ai", "v2alpha2",
            {"minMember": 3, "queue": "team-a", "priorityClassName": "train", "preemptibility": "preemptible",
             "subGroups": [{"name": "workers", "minMember": 2}]}),
    "volcano": ("scheduling.volcano.sh", "v1beta1",
                {"minMember": 3, "minTaskMember": {"worker": 2}, "priorityClassName": "high",
                 "minResources": {"cpu": "3", "memory": "6Gi", "nvidia.com/gpu": 3}}),
    "coscheduling": ("scheduling.x-k8s.io", "v1alpha1",
                     {"minMember": 3, "minResources": {"cpu": "1500m"}, "scheduleTimeoutSeconds": 60}),
}


def pod_body(name: str, **labels: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "osmo-test", **labels}),
        spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(
            name="main", image="busybox", command=["sleep", "3600"],
            resources=client.V1ResourceRequirements(requests={"cpu": "10m", "memory": "16Mi"}))]))


def podgroup(kind: str, name: str, spec: dict) -> tuple[str, str, dict]:
    group, version, _ = PODGROUPS[kind]
    return group, version, {"apiVersion": f"{group}/{version}", "kind": "PodGroup",
                            "metadata": {"name": name}, "spec": spec}




def test_namespace_pod_and_headless_service(kube_server, kube_namespace):
    core = client.CoreV1Api(kube_server.api_client())
    assert core.read_namespace(kube_namespace).status.phase == "Active"
    core.create_namespaced_pod(kube_namespace, pod_body("worker-0", group="g1"))
    svc = core.create_namespaced_service(kube_namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="g1"),
        spec=client.V1ServiceSpec(cluster_ip="None", selector={"group": "g1"},
                                  ports=[client.V1ServicePort(name="rdzv", port=29500)])))
    assert svc.spec.cluster_ip == "None"
    time.sleep(1)  # no scheduler, no node: nothing may happen to the pod
    pod = core.read_namespaced_pod("worker-0", kube_namespace)
    assert pod.status.phase == "Pending" and pod.spec.node_name is None
    assert [p.metadata.name for p in core.list_namespaced_pod(kube_namespace, label_selector="group=g1").items] == \
        ["worker-0"]


@pytest.mark.parametrize("kind", sorted(PODGROUPS))
def test_podgroup_of_each_scheduler_is_accepted(kube_server, kube_namespace, kind):
    custom = client.CustomObjectsApi(kube_server.api_client())
    group, version, body = podgroup(kind, "gang", PODGROUPS[kind][2])
    custom.create_namespaced_custom_object(group, version, kube_namespace, "podgroups", body)
    got = custom.get_namespaced_custom_object(group, version, kube_namespace, "podgroups", "gang")
    assert got["spec"]["minMember"] == 3
    if kind == "volcano":
        assert got["spec"]["queue"] == "default"  # the CRD's default
    # status is a subresource: the scheduler's (here: the test's) status write goes through /status
    custom.patch_namespaced_custom_object_status(group, version, kube_namespace, "podgroups", "gang",
                                                 {"status": {"phase": "Running", "running": 3}})
    got = custom.get_namespaced_custom_object(group, version, kube_namespace, "podgroups", "gang")
    assert got["status"] == {"phase": "Running", "running": 3}


@pytest.mark.parametrize("kind", sorted(PODGROUPS))
@pytest.mark.parametrize("bad", [0, -1, "3", None], ids=["zero", "negative", "string", "missing"])
def test_podgroup_with_bad_min_member_is_rejected(kube_server, kube_namespace, kind, bad):
    custom = client.CustomObjectsApi(kube_server.api_client())
    spec = {k: v for k, v in PODGROUPS[kind][2].items() if k != "minMember"}
    if bad is not None:
        spec["minMember"] = bad
    group, version, body = podgroup(kind, "bad", spec)
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(group, version, kube_namespace, "podgroups", body)
    assert err.value.status == 422, err.value.body
    assert "minMember" in err.value.body


def test_watch_sees_pod_status_patch(kube_server, kube_namespace):
    """Play the kubelet: patch pods/status to Running; a watch opened before sees the change."""
    api = kube_server.api_client()
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod(kube_namespace, pod_body("worker-0"))
    events: queue.Queue = queue.Queue()
    w = watch.Watch()

    def run():
        try:
            for ev in w.stream(client.CoreV1Api(api).list_namespaced_pod, kube_namespace,
                               resource_version=created.metadata.resource_version, timeout_seconds=20):
                events.put((ev["type"], ev["object"].status.phase))
        except Exception as exc:  # noqa: BLE001 - reported through the queue
            events.put(("ERROR", repr(exc)))

    t = threading.Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.3)
    core.patch_namespaced_pod_status("worker-0", kube_namespace, {"status": {
        "phase": "Running", "podIP": "10.0.0.7",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [{"name": "main", "image": "busybox", "imageID": "", "ready": True, "restartCount": 0,
                               "state": {"running": {"startedAt": "2025-01-01T00:00:00Z"}}}]}})
    assert events.get(timeout=10) == ("MODIFIED", "Running")
    pod = core.read_namespaced_pod("worker-0", kube_namespace)
    assert pod.status.pod_ip == "10.0.0.7" and pod.status.container_statuses[0].ready
    w.stop()  # this client version shuts the socket down: the thread may end with a ProtocolError, not a bug
    t.join(timeout=10)
    assert not t.is_alive()


def test_client_works_after_apiserver_restart(kube_server, kube_namespace):
    api = kube_server.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(kube_namespace, client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="before"), data={"k": "v"}))
    old_pid, port = kube_server.pids()["kube-apiserver"], kube_server.port
    seconds = kube_server.restart_apiserver()
    assert kube_server.pids()["kube-apiserver"] != old_pid and kube_server.port == port
    print(f"apiserver restart: {seconds:.1f} s")
    # the same client (and its pooled, now dead, connections) works again; etcd kept the data
    assert core.read_namespaced_config_map("before", kube_namespace).data == {"k": "v"}
    core.create_namespaced_config_map(kube_namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="after")))
    custom = client.CustomObjectsApi(api)
    group, version, body = podgroup("volcano", "after-restart", {"minMember": 1})
    custom.create_namespaced_custom_object(group, version, kube_namespace, "podgroups", body)


def test_missing_binaries_fail_loudly(monkeypatch, tmp_path):
    monkeypatch.setenv("OSMO_KUBE_BIN", str(tmp_path))
    with pytest.raises(KubeError, match=r"bash \.ci/install-kube\.sh"):
        KubeServer().start()


def test_stop_leaves_no_process_or_directory():
    server = KubeServer().start()
    pids, d = list(server.pids().values()), server.dir
    rss = server.rss_bytes()
    print(f"startup {server.start_seconds:.1f} s, RSS " + ", ".join(f"{k} {v >> 20} MiB" for k, v in rss.items()))
    assert set(rss) == {"etcd", "kube-apiserver"}
    server.stop()
    assert not os.path.exists(d)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), f"process {pid} survived stop()"


@pytest.mark.kube_cluster
def test_scheduler_binds_pod_to_hollow_node(kube_cluster):
    core = client.CoreV1Api(kube_cluster.api_client())
    ns = create_namespace(kube_cluster)
    t0 = time.monotonic()
    core.create_namespaced_pod(ns, pod_body("worker-0"))
    pod = wait_for(lambda: (p := core.read_namespaced_pod("worker-0", ns)).status.phase == "Running" and p, 30,
                   "pod Running on the hollow node")
    assert pod.spec.node_name == kube_cluster.node_name
    print(f"pod Running after {time.monotonic() - t0:.1f} s (node Ready took {kube_cluster.cluster_seconds:.1f} s)")
    core.delete_namespaced_pod("worker-0", ns, grace_period_seconds=0)
    wait_for(lambda: not core.list_namespaced_pod(ns).items, 30, "pod deleted")


def test_the_kubelet_iptables_chains_a_hollow_node_adds_are_removed():
    """What ``remove_dir`` runs once the last hollow node is gone (the chains made here stand in for them)."""
    for table, chain in KUBELET_CHAINS:
        subprocess.run(["iptables", "-t", table, "-N", chain], capture_output=True)
    subprocess.run(["iptables", "-t", "filter", "-A", "INPUT", "-j", "KUBE-FIREWALL"], check=True)
    assert len(kubelet_chains()) == len(KUBELET_CHAINS)
    _remove_kubelet_chains()
    assert kubelet_chains() == []
    assert "KUBE-FIREWALL" not in subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
