"""``osmo resource list --pool kubernetes`` and ``osmo pool list`` against the real API server
(tests/servers/kube_fixtures.py): Nodes with allocatable cpu, memory, GPUs and storage, and Pods bound
to them (an osmo task's pod, another pod with an init container, an ended pod, one not yet on a node)."""

from __future__ import annotations

import uuid

import pytest
from kubernetes import client

from run.conftest import Osmo

from osmo_run.kube.pool import parse_pool
from osmo_run.kube.resources import cluster_pool


def _node(core: client.CoreV1Api, name: str, labels: dict[str, str], gpus: int) -> None:
    allocatable = {"cpu": "8", "memory": "32Gi", "ephemeral-storage": "100Gi", "pods": "110",
                   **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    core.create_node(client.V1Node(metadata=client.V1ObjectMeta(name=name, labels=labels)))
    core.patch_node_status(name, {"status": {"capacity": allocatable, "allocatable": allocatable}})


def _pod(core: client.CoreV1Api, namespace: str, name: str, node: str | None, requests: dict[str, str],
         labels: dict[str, str] | None = None, init: dict[str, str] | None = None) -> None:
    def container(cname: str, asked: dict[str, str]) -> client.V1Container:
        limits = {"nvidia.com/gpu": asked["nvidia.com/gpu"]} if "nvidia.com/gpu" in asked else None
        return client.V1Container(name=cname, image="x", resources=client.V1ResourceRequirements(
            requests=asked, limits=limits))
    spec = client.V1PodSpec(node_name=node, containers=[container("task", requests)],
                            init_containers=[container("init", init)] if init else None)
    core.create_namespaced_pod(namespace, client.V1Pod(metadata=client.V1ObjectMeta(name=name, labels=labels),
                                                       spec=spec))


@pytest.fixture
def cluster(kube_server, kube_namespace):
    """Two nodes (an A40 node with 4 GPUs, a CPU node) and pods on them; removed afterwards."""
    core = client.CoreV1Api(kube_server.api_client())
    tag = uuid.uuid4().hex[:6]
    gpu_node, cpu_node = f"gpu-{tag}", f"cpu-{tag}"
    _node(core, gpu_node, {"nvidia.com/gpu.product": "NVIDIA-A40"}, 4)
    _node(core, cpu_node, {}, 0)
    ns = kube_namespace
    _pod(core, ns, "sim-3-render", gpu_node, {"cpu": "2", "memory": "4Gi", "nvidia.com/gpu": "1"},
         labels={"osmo.workflow": "sim-3", "osmo.task": "render"})
    _pod(core, ns, "other", gpu_node, {"cpu": "500m", "memory": "1Gi"}, init={"cpu": "3", "memory": "512Mi"})
    _pod(core, ns, "done", cpu_node, {"cpu": "4"})
    core.patch_namespaced_pod_status("done", ns, {"status": {"phase": "Succeeded"}})
    _pod(core, ns, "waiting", None, {"cpu": "1"}, labels={"osmo.workflow": "train-1", "osmo.task": "fit"})
    yield core, ns, gpu_node, cpu_node
    for name in (gpu_node, cpu_node):
        core.delete_node(name)


def test_nodes_allocatable_minus_pod_requests_per_node_and_platform(cluster, kube_server):
    core, ns, gpu_node, cpu_node = cluster
    pool = parse_pool({"namespace": ns, "platforms": {"ovx-a40": {"node_selector": {"nvidia.com/gpu.product":
                                                                                    "NVIDIA-A40"}}}})
    report = cluster_pool(kube_server.api_client(), pool)
    nodes = {n["name"]: n for n in report["nodes"]}
    gpu = nodes[gpu_node]
    assert gpu["platforms"] == ["ovx-a40"] and nodes[cpu_node]["platforms"] == []
    assert gpu["capacity"] == {"cpu": 8, "memory": 32 * 2**30, "gpu": 4, "storage": 100 * 2**30}
    # the other pod's init container asks for more cpu (3) than its task (0.5): the scheduler counts 3
    assert gpu["used"] == {"cpu": 5, "memory": 5 * 2**30, "gpu": 1, "storage": 0}
    assert gpu["free"] == {"cpu": 3, "memory": 27 * 2**30, "gpu": 3, "storage": 100 * 2**30}
    assert [h["holder"] for h in gpu["holders"]] == sorted(["sim-3/render", f"{ns}/other"])
    assert nodes[cpu_node]["used"]["cpu"] == 0  # the ended pod holds nothing
    assert report["platforms"] == [{"name": "ovx-a40", "nodes": [gpu_node], "gpus": 4, "gpus_free": 3}]
    assert report["pending"] == ["train-1/fit"]


def test_the_commands_show_the_kubernetes_pool_beside_the_local_one(cluster, kube_server, tmp_path):
    core, ns, gpu_node, _ = cluster
    osmo = Osmo(tmp_path, KUBECONFIG=kube_server.kubeconfig)
    osmo.pool(kubernetes={"namespace": ns, "platforms": {"ovx-a40": {"node_selector": {
        "nvidia.com/gpu.product": "NVIDIA-A40"}}}})
    pools = {p["pool"]: p for p in osmo("list", "--json", group="pool").json()}
    assert set(pools) == {"local", "kubernetes"}
    assert pools["kubernetes"]["status"] == "ONLINE" and pools["kubernetes"]["platforms"] == ["ovx-a40"]
    report = osmo("list", "--pool", "kubernetes", "--json", group="resource").json()
    assert [r["pool"] for r in report] == ["kubernetes"]
    text = osmo("list", "--pool", "kubernetes", group="resource").out
    assert f"{gpu_node}  ovx-a40" in text and "held by sim-3/render: cpu 2, memory 4.0 GiB, gpu 1" in text
    assert "platform ovx-a40: 3 of 4 GPUs free" in text and "pending (not on a node yet): train-1/fit" in text


def test_a_cluster_that_cannot_be_reached_is_one_line(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster: "
                          "{server: 'https://127.0.0.1:9'}\ncontexts:\n- name: c\n  context: {cluster: c, user: u}\n"
                          "users:\n- name: u\n  user: {token: t}\n")
    osmo = Osmo(tmp_path / "osmo", KUBECONFIG=str(kubeconfig))
    osmo.pool(kubernetes={"namespace": "default"})
    result = osmo("list", "--pool", "kubernetes", check=False, group="resource")
    assert result.code == 5 and result.err.startswith("osmo: error: pool 'kubernetes': the cluster cannot be reached")
    assert len(result.err.strip().splitlines()) == 1
    pools = {p["pool"]: p for p in osmo("list", "--json", group="pool").json()}
    assert pools["kubernetes"]["status"] == "UNREACHABLE" and pools["local"]["status"] == "ONLINE"
