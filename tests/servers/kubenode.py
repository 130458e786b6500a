"""A real one-node Kubernetes on this machine: the control plane of ``KubeServer`` plus containerd, a real
kubelet, a host-only bridge with the cluster DNS for the pods, and an S3 store the pods reach.

``KubeNode(archives=..., aliases=...).start()``:

1. the node folder ``/tmp/osmo-kubenode-*`` (``0711``: dnsmasq, running as nobody, reads its hosts file
   there; keys, tokens and kubeconfig are owner-only), the certificates (the kubelet's serving certificate
   and the API server's client certificate towards it included), the bridge and its /24
   (``kubenode_net``), the pods' cgroup root (``kubenode_runtime``);
2. etcd, kube-apiserver (told how to reach the kubelet: ``--kubelet-client-certificate``, its CA,
   ``InternalIP`` first), and meanwhile containerd in the node's own mount namespace, into which the
   images are imported (``ctr -n k8s.io images import``) while the control plane comes up;
3. kube-controller-manager, kube-scheduler, the kubelet (``--hostname-override=127.0.0.1``: kubelet 1.20
   refuses a loopback ``--node-ip``, but takes a node *named* 127.0.0.1 as its InternalIP, which is how
   the API server reaches the loopback-only kubelet for logs, exec and port-forward), dnsmasq on the
   bridge's gateway fed from the API (``ClusterDns``);
4. the S3 store (moto) bound to the bridge's gateway address, the only address the pods can reach on the
   host and never any other, with its bucket ``osmo-store`` made into an osmo store;
5. waits for the node to be Ready and advertises ``GPUS`` ``nvidia.com/gpu`` on it (an extended resource
   through the node's status, as Kubernetes documents it; no device is behind it): tasks that ask for
   GPUs are scheduled here as on a GPU node.

``stop()`` stops the kubelet, kills what runs in the pods' cgroups, stops containerd, kills the shims
left, stops the rest, removes the cgroups, the bridge and the folder; mounts and network namespaces went
with the node's mount namespace. A folder left by a SIGKILLed owner is swept the same way by the next
start (``remove_dir``), and so are a bridge or cgroups left without their folder. ``leftovers(info)`` says what is still on the host of a node (tests use it).

Nothing here is needed by the project itself; ``kubenode_cli.py`` is ``.ci/kube-node.sh``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

from . import kubenode_net as net
from . import kubenode_runtime as runtime
from .base import free_port
from .kube import INSTALL_HINT, KubeError, KubeServer, bin_dir, missing_binaries, write_private

NODE_NAME = "127.0.0.1"
DIR_PREFIX = "osmo-kubenode-"
STORE_BUCKET = "osmo-store"
STORE_SECRET = "osmo-store"
GPUS = 8
NODE_TOOLS = ("containerd", "ctr", "runc", "dnsmasq", "unshare", "nsenter", "ip", f"{runtime.CNI_BIN}/bridge",
              f"{runtime.CNI_BIN}/host-local")
# Pods request this fraction of the cpu a task asks for (its limits are unchanged): a two-core node runs
# robot_simulation's three 1-cpu tasks at once.
CPU_REQUEST_FRACTION = 0.1
SUPERVISOR_RBAC = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "rbac", "osmo-supervisor.yaml")
SUPERVISOR_TOKEN = "osmo-supervisor-token"  # the token Secret that file makes (this API server mounts none itself)


@dataclass(frozen=True)
class Image:
    """An image archive to import and the names it answers to (``tests/helpers/images.ImageArchive``)."""

    name: str
    path: str
    tags: tuple[str, ...]


class KubeNode(KubeServer):
    dir_prefix = DIR_PREFIX
    term_grace = 3.0

    def __init__(self, images: dict[str, Image], aliases: tuple[str, ...] = (), *, store: bool = True,
                 start_timeout: float = 120.0) -> None:
        super().__init__(start_timeout=start_timeout)
        self.images = images
        self.aliases = tuple(aliases)
        self.with_store = store
        self.bridge = ""
        self.subnet = None
        self.gateway = ""
        self.cgroup_root = ""
        self.dns: net.ClusterDns | None = None
        self.api_relay: net.TcpRelay | None = None
        self.s3 = None
        self.timings: dict[str, float] = {}

    # -------------------------------------------------------------------------------------------- start
    def _start(self) -> None:
        t0 = time.monotonic()
        self._check_requirements()
        self.make_dir()
        d = self.dir
        os.chmod(d, 0o711)
        os.chmod(os.path.join(d, "log"), 0o700)
        suffix = os.path.basename(d)[len(DIR_PREFIX):].lower()
        self.cgroup_root = f"{runtime.CGROUP_PREFIX}{suffix}"
        self._record()
        self.bridge, self.subnet = net.reserve_bridge(suffix)
        self.gateway = str(next(self.subnet.hosts()))
        self._record()
        runtime.make_cgroup_root(self.cgroup_root)
        self._write_configs()
        self._start_control_plane_and_runtime()
        self.timings["control plane + containerd"] = time.monotonic() - t0
        self.start_controllers()
        self.api_relay = net.TcpRelay(self.gateway, self.port).start()
        kubelet_port, healthz_port = free_port(), free_port()
        with open(os.path.join(d, "kubelet.json"), "w") as f:
            f.write(runtime.kubelet_config(d, port=kubelet_port, healthz_port=healthz_port,
                                           cgroup_root=f"/{self.cgroup_root}", dns=self.gateway))
        self.spawn("kubelet", runtime.in_namespace_of(self.procs["containerd"].pid, [
            os.path.join(bin_dir(), "kubelet"), f"--config={d}/kubelet.json", f"--kubeconfig={self.kubeconfig}",
            f"--root-dir={d}/kubelet", "--container-runtime=remote",
            f"--container-runtime-endpoint=unix://{d}/containerd.sock",
            f"--image-service-endpoint=unix://{d}/containerd.sock", "--runtime-request-timeout=2m",
            f"--hostname-override={NODE_NAME}", f"--pod-infra-container-image={self.pause_image}", "--v=1"]))
        self.node_name = NODE_NAME
        self.dns = net.ClusterDns(os.path.join(d, "dns"), self.gateway, self.api_client())
        self.spawn("dnsmasq", self.dns.argv())
        self.dns.attach(self.procs["dnsmasq"])
        if self.with_store:
            self._start_store()
        self._finish_imports()
        self.timings["images imported"] = time.monotonic() - t0
        self.wait_until(self._node_ready, f"node {NODE_NAME} Ready (kubelet)")
        from kubernetes import client

        client.CoreV1Api(self.api_client()).patch_node_status(
            NODE_NAME, {"status": {"capacity": {"nvidia.com/gpu": str(GPUS)}}})
        self.wait_until(self._gpus_allocatable, f"{GPUS} nvidia.com/gpu allocatable on node {NODE_NAME}")
        self.timings["node Ready"] = time.monotonic() - t0

    def _gpus_allocatable(self) -> bool:
        node = self._http_json(f"{self.server}/api/v1/nodes/{NODE_NAME}")
        return node.get("status", {}).get("allocatable", {}).get("nvidia.com/gpu") == str(GPUS)

    def _check_requirements(self) -> None:
        if os.geteuid() != 0:
            raise KubeError("the real Kubernetes node needs root (containerd, the kubelet, a bridge, cgroups): "
                            "run the tests or .ci/kube-node.sh as root")
        missing = missing_binaries() + [os.path.join(bin_dir(), b) for b in ("kubelet", "kubectl")
                                        if not os.access(os.path.join(bin_dir(), b), os.X_OK)]
        missing += [t for t in NODE_TOOLS if not (os.access(t, os.X_OK) if "/" in t else shutil.which(t))]
        if missing:
            raise KubeError(f"the real Kubernetes node lacks: {', '.join(missing)}; {INSTALL_HINT}")
        for name in ("pause", "osmo-task", "osmo-sidecar"):
            if name not in self.images or not os.path.isfile(self.images[name].path):
                raise KubeError(f"no {name} image archive; build the images with: bash .ci/build-images.sh")

    @property
    def pause_image(self) -> str:
        return self.images["pause"].tags[0]

    @property
    def sidecar_image(self) -> str:
        return self.images["osmo-sidecar"].tags[-1]  # VERSION-KEY: exactly this build of the checkout

    def apiserver_extra_args(self) -> list[str]:
        d = self.dir
        return [f"--kubelet-client-certificate={d}/kubelet-client.crt", f"--kubelet-client-key={d}/kubelet-client.key",
                f"--kubelet-certificate-authority={d}/ca.crt", "--kubelet-preferred-address-types=InternalIP,Hostname"]

    def _record(self) -> None:
        """node.json: what ``remove_dir`` must sweep if this process dies before ``stop()``."""
        with open(os.path.join(self.dir, "node.json"), "w") as f:
            json.dump({"dir": self.dir, "bridge": self.bridge, "cgroup_root": self.cgroup_root,
                       "subnet": str(self.subnet or "")}, f)

    def _write_configs(self) -> None:
        d = self.dir
        os.makedirs(os.path.join(d, "cni"))
        with open(os.path.join(d, "cni", "10-osmo-kubenode.conflist"), "w") as f:
            f.write(runtime.cni_conflist(f"osmo-kubenode-{self.bridge}", self.bridge, str(self.subnet),
                                         self.gateway, os.path.join(d, "cni-ipam")))
        with open(os.path.join(d, "containerd.toml"), "w") as f:
            f.write(runtime.containerd_config(d, self.pause_image, os.path.join(d, "cni")))
        open(os.path.join(d, "host-resolv.conf"), "w").close()
        os.makedirs(os.path.join(d, "kubelet"), mode=0o700)

    def _start_control_plane_and_runtime(self) -> None:
        """etcd, then kube-apiserver and containerd side by side; the image imports start as soon as
        containerd answers and run while the API server gets ready."""
        self.etcd_port, self.port = free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self._write_pki_and_kubeconfig()
        self.spawn("containerd", runtime.launch_in_namespace(self.dir))
        self._start_etcd()
        self.start_apiserver(wait=False)
        self.wait_until(lambda: self._ctr("version").returncode == 0, "containerd answering on its socket")
        self._imports = [subprocess.Popen([*self._ctr_argv(), "images", "import", image.path],
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                         for image in self.images.values()]
        self.wait_until(self._ready, f"kube-apiserver ready on {self.server}")

    def _write_pki_and_kubeconfig(self) -> None:
        from .kube import _write_pki

        _write_pki(self.dir, extra_ips=(self.gateway,))  # pods reach the API server through the gateway
        write_private(os.path.join(self.dir, "tokens.csv"), f"{self.token},admin,admin-uid,system:masters\n")
        self._write_kubeconfig()

    def _finish_imports(self) -> None:
        for proc in self._imports:
            out, _ = proc.communicate(timeout=self.start_timeout)
            if proc.returncode != 0:
                raise KubeError(f"ctr images import failed ({proc.returncode}): {out.decode(errors='replace')[-500:]}")
        task = self.images["osmo-task"].tags[0]
        for alias in self.aliases:
            done = self._ctr("images", "tag", "--force", runtime.normalize_image(task), runtime.normalize_image(alias))
            if done.returncode != 0:
                raise KubeError(f"cannot tag the task image as {alias}: {done.stdout.strip()}")

    def _ctr_argv(self) -> list[str]:
        return ["ctr", "--address", os.path.join(self.dir, "containerd.sock"), "--namespace", "k8s.io"]

    def _ctr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self._ctr_argv(), *args], capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)

    def image_names(self) -> set[str]:
        """The image names containerd holds (as the CRI sees them)."""
        return set(self._ctr("images", "list", "--quiet").stdout.split())

    # -------------------------------------------------------------------------------------------- store
    def _start_store(self) -> None:
        from .moto_s3 import MotoS3Server

        self.s3 = MotoS3Server(host=self.gateway).start()
        self.s3.make_bucket(STORE_BUCKET)
        self.init_store(self.store_url)

    def init_store(self, url: str) -> str:
        """``osmo store init URL`` on this node's S3 server (e.g. a prefix of its bucket); returns ``url``."""
        done = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", "store", "init", url],
                              env={**os.environ, **self.store_env(), "OSMO_CACHE_DIR": os.path.join(self.dir, "cache")},
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise KubeError(f"osmo store init {url} failed: {(done.stderr or done.stdout).strip()}")
        return url

    @property
    def store_url(self) -> str:
        return f"s3://{STORE_BUCKET}"

    def store_env(self) -> dict[str, str]:
        """The AWS variables of the pods' store (for the pods' Secret and for the submitting shell)."""
        return self.s3.env() if self.s3 else {}

    def prepare_namespace(self, namespace: str) -> None:
        """Create ``namespace`` (if needed) with the store Secret the pool config names."""
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        core = client.CoreV1Api(self.api_client())
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        except ApiException as exc:
            if exc.status != 409:
                raise
        if self.s3:
            core.create_namespaced_secret(namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(name=STORE_SECRET), string_data=self.store_env()))
        self._supervisor_account(namespace)

    def _supervisor_account(self, namespace: str) -> None:
        """The in-cluster supervisor's ServiceAccount, Role, RoleBinding and token Secret, from the project's
        own deploy/rbac/osmo-supervisor.yaml (this API server authorizes with RBAC); waits for the token."""
        import yaml
        from kubernetes import client, utils

        with open(SUPERVISOR_RBAC, encoding="utf-8") as f:
            objects = [o for o in yaml.safe_load_all(f.read().replace("NAMESPACE", namespace)) if o]
        try:
            utils.create_from_yaml(self.api_client(), yaml_objects=objects)
        except utils.FailToCreateError as exc:
            if any(getattr(e, "status", None) != 409 for e in exc.api_exceptions):
                raise
        core = client.CoreV1Api(self.api_client())
        self.wait_until(lambda: (core.read_namespaced_secret(SUPERVISOR_TOKEN, namespace).data or {}).get("token"),
                        f"the token of ServiceAccount osmo-supervisor in namespace {namespace}")

    def network_report(self) -> str:
        """The pods (namespace, name, phase, address) and the host's view of their bridge: for the message
        of a test whose pods could not reach the store or each other."""
        pods = subprocess.run([os.path.join(bin_dir(), "kubectl"), f"--kubeconfig={self.kubeconfig}", "get",
                               "pods", "--all-namespaces", "-o", "wide", "--no-headers"],
                              capture_output=True, text=True, timeout=30)
        return f"--- pods ---\n{(pods.stdout or pods.stderr).strip()}\n{net.network_report(self.bridge)}"

    def pool_section(self, namespace: str) -> dict:
        """The ``kubernetes:`` section of a pool config that runs workflows on this node (add ``supervisor:
        cluster`` to run their supervisors on it too)."""
        section = {"namespace": namespace, "scheduler": "none", "sidecar_image": self.sidecar_image,
                   "image_pull_policy": "IfNotPresent", "request_fraction": {"cpu": CPU_REQUEST_FRACTION},
                   "supervisor_token_secret": SUPERVISOR_TOKEN,
                   "api_server_from_pods": f"{self.api_relay.host}:{self.api_relay.port}"}
        if self.s3:
            section.update(store=self.store_url, store_secret=STORE_SECRET)
        return section

    # --------------------------------------------------------------------------------------------- stop
    def _stop(self) -> None:
        if self.api_relay is not None:
            self.api_relay.stop()
            self.api_relay = None
        if self.dns is not None:
            self.dns.stop()
        containerd = self.procs.get("containerd")
        namespace = runtime.mount_namespace(containerd.pid) if containerd is not None else None  # while it runs
        if namespace == runtime.mount_namespace(os.getpid()):
            namespace = None  # never sweep the host's own
        self.stop_daemon("kubelet")
        if self.cgroup_root:
            runtime.sweep_cgroups(self.cgroup_root)
        self.stop_daemon("containerd")
        if self.dir:
            runtime.kill_leftovers(self.dir, self.cgroup_root, namespace)
        if self.s3 is not None:
            self.s3.stop()
            self.s3 = None
        super()._stop()  # the other daemons, then remove_dir

    @classmethod
    def remove_dir(cls, path: str) -> None:
        """Sweep a node's folder (``stop()``'s last step, or a node whose owner died): its processes, cgroups,
        bridge, then the folder."""
        info = read_info(path)
        runtime.kill_leftovers(path, info.get("cgroup_root") or None)
        if info.get("cgroup_root"):
            runtime.sweep_cgroups(info["cgroup_root"])
        if info.get("bridge"):
            net.delete_bridge(info["bridge"])
        shutil.rmtree(path, ignore_errors=True)


    @classmethod
    def _remove_stale_dirs(cls) -> None:
        """Sweep the folders of nodes whose owner died, then the bridges and pod cgroup roots of nodes
        whose folder is gone (a sweep cut short): each is named after its node's folder."""
        super()._remove_stale_dirs()
        root = tempfile.gettempdir()
        alive = {name[len(DIR_PREFIX):].lower() for name in os.listdir(root) if name.startswith(DIR_PREFIX)}
        for bridge in net.node_bridges():
            if bridge[len(net.BRIDGE_PREFIX):] not in alive:
                net.delete_bridge(bridge)
        for name in runtime.cgroup_roots():
            if name[len(runtime.CGROUP_PREFIX):] not in alive:
                runtime.sweep_cgroups(name)


def read_info(path: str) -> dict:
    try:
        with open(os.path.join(path, "node.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def leftovers(info: dict) -> list[str]:
    """What is left on this machine of the node described by ``info`` (``read_info`` of its folder)."""
    found = []
    d = info.get("dir", "")
    if d and os.path.exists(d):
        found.append(f"folder {d}")
    if d:
        found += [f"process {pid}" for pid in runtime.processes_naming(d.rstrip("/") + "/")]
        with open("/proc/self/mountinfo") as f:
            found += [f"mount {line.split()[4]}" for line in f if d in line]
    if info.get("bridge") and net.bridge_exists(info["bridge"]):
        found.append(f"bridge {info['bridge']}")
    if info.get("cgroup_root"):
        found += [f"cgroup {p}" for p in runtime.cgroup_dirs(info["cgroup_root"])]
    return found
