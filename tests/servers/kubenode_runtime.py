"""The real test node's container side: containerd and the kubelet in a mount namespace of their own, the
pods' cgroups under a root of their own, the images imported without a registry, and the sweep that
leaves nothing behind.

- **A private mount namespace** (``launch_in_namespace()``): containerd starts under ``unshare --mount
  --propagation private`` after mounting, in that namespace only, a tmpfs on ``/run`` (shim sockets, runc
  state, ``/run/netns`` of the pod sandboxes), the node folder's ``ns/var-log`` on ``/var/log`` and an
  overlay on ``/var/lib`` whose upper layer is in the node folder: the kubelet (``nsenter`` into the same
  namespace) hard-codes ``/var/log/pods``, ``/var/log/containers`` and ``/var/lib/kubelet/device-plugins``,
  and libcni caches in ``/var/lib/cni``. Two nodes on one machine therefore never share those paths,
  and every mount and network namespace of the node disappears with its last process: nothing of it
  can be left mounted on the host, even after a SIGKILL. containerd's root and state (``containerd/``
  of the node folder: the imported images, ~1 GB, and the containers' writable layers) are a tmpfs of
  that namespace too: they vanish with it instead of being unlinked file by file (on a disk mounted
  with ``discard``, as here, deleting them took up to a minute).
- **cgroups**: the kubelet's ``cgroupRoot`` is ``/osmo-kn-<suffix>``, made in every cgroup v1 hierarchy
  before the kubelet starts; ``sweep_cgroups()`` kills what is left in it and removes it, deepest first.
- **containerd config**: its own root, state and socket in the node folder, the locally built pause
  image, CRI streaming on 127.0.0.1, ``restrict_oom_score_adj`` (this VM drops CAP_SYS_RESOURCE even
  for root, so runc cannot set a sandbox's oom_score_adj of -998), no AppArmor, runc v2 with cgroupfs,
  its own CNI folder (Debian's podman installs a conflist in /etc/cni/net.d), no ``/opt/containerd``.
- ``kill_leftovers()``: every process whose command line names the node folder (containerd's shims
  outlive containerd), whose cgroup is under the node's cgroup root, or (when stopping a node this
  process runs) that is still in the node's mount namespace, by PID.
- ``normalize_image()``: an image name as containerd's CRI stores it (``ubuntu:24.04`` ->
  ``docker.io/library/ubuntu:24.04``).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import time

CGROUP_FS = "/sys/fs/cgroup"
CGROUP_PREFIX = "osmo-kn-"
CNI_BIN = "/usr/lib/cni"
CONTAINERD_TMPFS = "6g"  # the most containerd's root and state may hold in memory (images, writable layers)


def containerd_config(d: str, pause_image: str, cni_dir: str) -> str:
    return f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause_image}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{cni_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
"""


def cni_conflist(name: str, bridge: str, subnet: str, gateway: str, ipam_dir: str) -> str:
    """The bridge plugin on the node's own bridge: no gateway role (the bridge already has the address),
    no masquerade, so no iptables rule and no route out of the pods' subnet."""
    return json.dumps({"cniVersion": "0.4.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": bridge, "isGateway": False, "ipMasq": False, "hairpinMode": True,
         "ipam": {"type": "host-local", "dataDir": ipam_dir,
                  "ranges": [[{"subnet": subnet, "gateway": gateway}]]}}]}, indent=1)


def kubelet_config(d: str, *, port: int, healthz_port: int, cgroup_root: str, dns: str) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": port, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": healthz_port,
        "tlsCertFile": f"{d}/kubelet.crt", "tlsPrivateKeyFile": f"{d}/kubelet.key",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": f"{d}/ca.crt"}},
        "authorization": {"mode": "Webhook"},
        "cgroupDriver": "cgroupfs", "cgroupRoot": cgroup_root, "failSwapOn": False,
        "clusterDNS": [dns], "clusterDomain": "cluster.local", "resolvConf": f"{d}/host-resolv.conf",
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "fileCheckFrequency": "1s", "syncFrequency": "5s", "nodeStatusUpdateFrequency": "2s",
        "volumeStatsAggPeriod": "0s", "makeIPTablesUtilChains": False, "serializeImagePulls": False,
    }, indent=1)


def launch_in_namespace(d: str) -> list[str]:
    """argv that makes the node's mount namespace (see the module docstring) and execs containerd in it."""
    for sub in ("ns/var-log/pods", "ns/var-log/containers", "ns/var-lib", "ns/var-lib.work"):
        os.makedirs(os.path.join(d, sub), exist_ok=True)
    q = shlex.quote
    script = " && ".join([
        "set -e",
        "mount -t tmpfs -o mode=0755,size=256m osmo-kubenode-run /run",
        f"mkdir -p {q(d + '/containerd')}",
        f"mount -t tmpfs -o mode=0700,size={CONTAINERD_TMPFS} osmo-kubenode-containerd {q(d + '/containerd')}",
        f"mount -t overlay osmo-kubenode-varlib -o lowerdir=/var/lib,upperdir={q(d + '/ns/var-lib')},"
        f"workdir={q(d + '/ns/var-lib.work')} /var/lib",
        f"mount --bind {q(d + '/ns/var-log')} /var/log",
        f"exec containerd --config {q(d + '/containerd.toml')}",
    ])
    return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script]


def in_namespace_of(pid: int, argv: list[str]) -> list[str]:
    return ["nsenter", f"--mount=/proc/{pid}/ns/mnt", "--", *argv]


def mount_namespace(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def processes_in_mount_namespace(inode: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and mount_namespace(int(p)) == inode]


# ------------------------------------------------------------------------------------------------- cgroups
def hierarchies() -> list[str]:
    """The mounted cgroup v1 hierarchies (and the unified one of a hybrid system)."""
    out = []
    for name in sorted(os.listdir(CGROUP_FS)):
        path = os.path.join(CGROUP_FS, name)
        if not os.path.islink(path) and os.path.exists(os.path.join(path, "cgroup.procs")):
            out.append(path)
    return out


def make_cgroup_root(name: str) -> None:
    """``/<name>`` in every hierarchy; cpuset gets its parent's cpus and mems (or nothing could join it)."""
    for h in hierarchies():
        path = os.path.join(h, name)
        os.makedirs(path, exist_ok=True)
        if os.path.basename(h) == "cpuset":
            for knob in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(h, knob)) as src, open(os.path.join(path, knob), "w") as dst:
                    dst.write(src.read())


def cgroup_pids(name: str) -> set[int]:
    pids = set()
    for h in hierarchies():
        for root, _, files in os.walk(os.path.join(h, name)):
            if "cgroup.procs" in files:
                try:
                    with open(os.path.join(root, "cgroup.procs")) as f:
                        pids.update(int(x) for x in f.read().split())
                except OSError:
                    pass
    return pids


def cgroup_roots() -> set[str]:
    """The names of every node's pods' cgroup root (``osmo-kn-*``) in any hierarchy."""
    return {name for h in hierarchies() for name in os.listdir(h)
            if name.startswith(CGROUP_PREFIX) and os.path.isdir(os.path.join(h, name))}


def cgroup_dirs(name: str) -> list[str]:
    return [os.path.join(h, name) for h in hierarchies() if os.path.isdir(os.path.join(h, name))]


def sweep_cgroups(name: str, timeout: float = 10.0) -> None:
    """Kill every process left under ``/<name>`` and remove its cgroups, deepest first."""
    if not name.startswith(CGROUP_PREFIX):
        return
    deadline = time.monotonic() + timeout
    while True:
        pids = cgroup_pids(name)
        for pid in pids:
            _kill(pid)
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for top in cgroup_dirs(name):
        for root, dirs, _ in sorted(os.walk(top), key=lambda entry: -entry[0].count("/")):
            try:
                os.rmdir(root)
            except OSError:
                pass


# ----------------------------------------------------------------------------------------------- processes
def _kill(pid: int) -> None:
    if pid in (os.getpid(), os.getppid(), 1):
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def processes_naming(text: str) -> list[int]:
    """PIDs whose command line contains ``text`` (a path of the node's own folder: nothing else matches)."""
    marker = text.encode()
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ") + b" "
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(p))
    return found


def kill_leftovers(folder: str, cgroup_root: str | None, namespace: int | None = None,
                   timeout: float = 10.0) -> None:
    """SIGKILL what outlives the node's daemons, until none is left: containerd's shims (their command line
    names the node's containerd socket), whatever runs in the pods' cgroups and, given the node's mount
    namespace (its inode, taken while containerd ran), every process still in it (a runc or CNI plugin
    that a shim or containerd had started names neither)."""
    deadline = time.monotonic() + timeout
    while True:
        pids = set(processes_naming(os.path.join(folder, "containerd.sock")))
        pids |= cgroup_pids(cgroup_root) if cgroup_root else set()
        pids |= set(processes_in_mount_namespace(namespace)) if namespace is not None else set()
        for pid in pids:
            _kill(pid)
        if not pids or time.monotonic() > deadline:
            return
        time.sleep(0.1)


# ------------------------------------------------------------------------------------------------- images
def normalize_image(name: str) -> str:
    """``name`` as a full reference (Docker's rules, which containerd's CRI applies)."""
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name
