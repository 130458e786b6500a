"""The real one-node Kubernetes itself (tests/servers/kubenode.py, .ci/kube-node.sh): a real kubelet runs
pods of the project's images, a pod resolves another through a headless Service (the cluster DNS), reaches
the S3 store on the bridge's gateway and nothing outside its subnet; ``pods/exec`` and logs work; and
``kube-node.sh up``/``down`` start a node in the background and leave nothing of it behind."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from kubernetes import client

from helpers.tools import require_tool
from osmo_run.kube.podexec import run as pod_exec
from servers.kube import bin_dir

# every test here starts, sweeps or uses a real node: one worker for all of them and the node's other tests
pytestmark = pytest.mark.xdist_group("kube-node")
from servers.kubenode import NODE_NAME, leftovers, read_info
from servers.kubenode_runtime import mount_namespace, processes_in_mount_namespace, processes_naming

ROOT = Path(__file__).resolve().parents[2]
TASK_IMAGE = "ubuntu:24.04"  # the test task image under one of its names


def _pod(name: str, command: str, env: dict | None = None) -> dict:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "harness"}},
            "spec": {"hostname": name, "subdomain": "harness", "restartPolicy": "Never",
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": TASK_IMAGE, "imagePullPolicy": "Never",
                                     "command": ["sh", "-c", command],
                                     "env": [{"name": k, "value": v} for k, v in (env or {}).items()]}]}}


def _wait_phase(core, namespace: str, name: str, phases: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        phase = core.read_namespaced_pod(name, namespace).status.phase
        if phase in phases:
            return phase
        time.sleep(0.2)
    raise AssertionError(f"pod {name} still {phase} after {timeout} s")


def test_pods_resolve_a_headless_service_reach_the_store_and_nothing_else(kube_node, kube_node_namespace):
    ns, api = kube_node_namespace, kube_node.api_client()
    core = client.CoreV1Api(api)
    node = core.read_node(NODE_NAME)
    assert node.status.allocatable["nvidia.com/gpu"] == "8" and node.status.node_info.kubelet_version == "v1.20.2"
    core.create_namespaced_service(ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "harness"},
                                        "spec": {"clusterIP": "None", "selector": {"app": "harness"},
                                                 "publishNotReadyAddresses": True}})
    core.create_namespaced_pod(ns, _pod("server", "echo hello > /tmp/h; nc -N -l -p 24831 < /tmp/h"))
    _wait_phase(core, ns, "server", {"Running"})
    core.create_namespaced_pod(ns, _pod("client", (
        'grep nameserver /etc/resolv.conf; getent hosts server.harness; nc -w 10 server.harness 24831; '
        'curl -s -o /dev/null -w "store %{http_code}\\n" "$STORE"; '
        'curl -s -m 3 http://192.0.2.1/ || echo "outside: unreachable"; '
        'getent hosts deb.debian.org || echo "deb.debian.org: no such name"'),
        {"STORE": kube_node.store_env()["AWS_ENDPOINT_URL"]}))
    assert _wait_phase(core, ns, "client", {"Succeeded", "Failed"}) == "Succeeded"
    out = core.read_namespaced_pod_log("client", ns, _preload_content=False).data.decode()
    server_ip = core.read_namespaced_pod("server", ns).status.pod_ip
    assert f"nameserver {kube_node.gateway}" in out
    assert [server_ip, f"server.harness.{ns}.svc.cluster.local"] in [line.split() for line in out.splitlines()]
    assert "hello" in out and "store 200" in out
    assert "outside: unreachable" in out and "deb.debian.org: no such name" in out
    assert pod_exec(api, ns, "server", "c", ["sh", "-c", "true"]).ok is False  # it has ended: no exec
    core.create_namespaced_pod(ns, _pod("idle", "sleep 300"))
    _wait_phase(core, ns, "idle", {"Running"})
    assert pod_exec(api, ns, "idle", "c", ["sh", "-c", "test $(hostname) = idle"]).ok
    failed = pod_exec(api, ns, "idle", "c", ["sh", "-c", "echo why >&2; exit 4"])
    assert not failed.ok and "exit code 4" in failed.error and "why" in failed.error


def _iptables() -> list[str]:
    return subprocess.run([require_tool("iptables-save")], capture_output=True, text=True).stdout.splitlines()


def _host_state() -> dict:
    """What a node could leave behind on this machine and nothing else running beside it changes."""
    return {"kube_chains": sorted(line for line in _iptables() if line.startswith(":KUBE-")),
            "paths": [p for p in ("/var/log/pods", "/var/log/containers", "/var/lib/kubelet", "/opt/containerd",
                                  "/run/containerd") if os.path.exists(p)]}


def _traces(info: dict, namespace_inode: int) -> list[str]:
    """What is left of one node: ``leftovers`` plus iptables rules naming its bridge or subnet and processes
    in its mount namespace."""
    prefix = info["subnet"].rsplit(".", 1)[0] + "."
    rules = [line for line in _iptables() if info["bridge"] in line or prefix in line]
    return leftovers(info) + rules + [f"process {p}" for p in processes_in_mount_namespace(namespace_inode)]


def test_kube_node_sh_starts_a_node_for_people_and_down_leaves_nothing(tmp_path):
    env = {**os.environ, "OSMO_KUBE_NODE_STATE": str(tmp_path / "node.json")}
    before = _host_state()

    def script(*args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(ROOT / ".ci" / "kube-node.sh"), *args], env=env, capture_output=True,
                              text=True, timeout=timeout)

    t0 = time.monotonic()
    up = script("up", "--alias", "myorg/tool:1.0", "--alias", "registry.example:5000/team/img:2")
    seconds = time.monotonic() - t0
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        assert set(exports) >= {"KUBECONFIG", "OSMO_POOL_CONFIG", "OSMO_STORE", "AWS_ENDPOINT_URL",
                                "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        print(f"kube-node.sh up: {seconds:.1f} s; {up.stderr.strip().splitlines()[-1]}")
        state = json.loads((tmp_path / "node.json").read_text())
        info = read_info(state["dir"])
        (containerd,) = processes_naming(os.path.join(state["dir"], "containerd.toml"))
        namespace = mount_namespace(containerd)
        assert namespace != mount_namespace(os.getpid())  # the node's own mount namespace
        assert (tmp_path / "node.json").stat().st_mode & 0o077 == 0
        nodes = subprocess.run([os.path.join(bin_dir(), "kubectl"), "get", "nodes", "--no-headers"],
                               env={**env, "KUBECONFIG": exports["KUBECONFIG"]}, capture_output=True, text=True)
        assert nodes.stdout.split()[:2] == [NODE_NAME, "Ready"], nodes
        images = subprocess.run(["ctr", "--address", os.path.join(state["dir"], "containerd.sock"), "-n", "k8s.io",
                                 "images", "ls", "-q"], capture_output=True, text=True).stdout.split()
        assert {"docker.io/myorg/tool:1.0", "registry.example:5000/team/img:2", "docker.io/library/ubuntu:24.04"} \
            <= set(images)
        pool = Path(exports["OSMO_POOL_CONFIG"]).read_text()
        assert "runner: kubernetes" in pool and "store_secret: osmo-store" in pool
        assert script("status").stdout == up.stdout
        again = script("up")
        assert again.returncode == 0 and again.stdout == up.stdout and "already up" in again.stderr
    finally:
        down = script("down", timeout=120)
    assert down.returncode == 0, down.stderr
    assert "nothing left" in down.stderr
    assert _traces(info, namespace) == []
    assert _host_state() == before
    assert script("status").returncode == 1


def test_a_bridge_and_cgroups_left_without_their_node_folder_are_swept():
    from servers import kubenode_runtime as runtime
    from servers.kubenode import KubeNode
    from servers.kubenode_net import bridge_exists

    name = "zzstale1"
    subprocess.run(["ip", "link", "add", "name", f"osmokn-{name}", "type", "bridge"], check=True)
    cgroups = [os.path.join(h, f"osmo-kn-{name}", "pod") for h in runtime.hierarchies()[:2]]
    for path in cgroups:
        os.makedirs(path)
    try:
        KubeNode._remove_stale_dirs()
        assert not bridge_exists(f"osmokn-{name}")
        assert runtime.cgroup_dirs(f"osmo-kn-{name}") == []
    finally:
        subprocess.run(["ip", "link", "del", f"osmokn-{name}"], capture_output=True)
        for path in cgroups:
            for p in (path, os.path.dirname(path)):
                if os.path.isdir(p):
                    os.rmdir(p)



def test_a_pod_keeps_reaching_the_host_when_another_pod_goes():
    """Two "pods" (network namespaces on the node's bridge, the first with the lower MAC) reach a server on
    the gateway; the first goes. A Linux bridge given no MAC takes the lowest of its ports' (so here the
    first pod's), and the second pod, which resolved its gateway to that MAC, lost the host until its
    neighbour entry went stale, up to a minute: CI's pod-to-S3 connect timeouts. ``reserve_bridge`` gives
    the bridge a fixed MAC (``bridge_mac``)."""
    import http.server
    import threading

    from servers.kubenode_net import bridge_mac, delete_bridge, reserve_bridge

    require_tool("curl")
    name, subnet = reserve_bridge("zzmac1")
    hosts = list(subnet.hosts())
    gateway, pods = hosts[0], {"osmokn-zza": ("02:00:00:00:00:01", hosts[9]), "osmokn-zzb": ("02:00:00:00:00:02", hosts[10])}
    server = http.server.ThreadingHTTPServer((str(gateway), 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{gateway}:{server.server_address[1]}/"

    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True)

    def reaches(pod: str) -> bool:
        return subprocess.run(["ip", "netns", "exec", pod, "curl", "-s", "-m", "3", "-o", "/dev/null", url]).returncode == 0

    try:
        for pod, (mac, address) in pods.items():
            ip("netns", "add", pod)
            ip("link", "add", f"{pod}h", "address", mac, "type", "veth", "peer", "name", "eth0", "netns", pod)
            ip("link", "set", f"{pod}h", "master", name, "up")
            ip("-n", pod, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
            ip("-n", pod, "link", "set", "eth0", "up")
        assert all(reaches(pod) for pod in pods)
        ip("link", "del", "osmokn-zzah")  # the first pod goes
        assert reaches("osmokn-zzb")
        assert json.loads(subprocess.run(["ip", "-j", "link", "show", name], capture_output=True, text=True,
                                         check=True).stdout)[0]["address"] == bridge_mac(subnet)
    finally:
        server.shutdown()
        for pod in pods:
            subprocess.run(["ip", "link", "del", f"{pod}h"], capture_output=True)
            subprocess.run(["ip", "netns", "del", pod], capture_output=True)
        delete_bridge(name)
