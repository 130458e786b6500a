"""The real test node's network: a host-only bridge for its pods, and the cluster DNS that resolves the
runner's headless Services (``{{host:TASK}}``) as CoreDNS does on a real cluster.

- ``reserve_bridge(owner_dir)`` picks a free ``10.244.N.0/24`` (one no address or route of this machine
  overlaps), creates the bridge ``osmokn-<suffix>`` with a fixed MAC address (``bridge_mac``) and the
  gateway ``10.244.N.1/24`` and brings it up,
  under a lock so two nodes starting at once never take the same subnet. There is no uplink: no
  masquerade, no default route in the pods, no iptables rule. ``delete_bridge(name)`` removes it;
  ``node_bridges()`` lists every node's (the sweep of nodes whose owner died uses it).
- ``ClusterDns``: dnsmasq (Debian's ``dnsmasq-base``) listening on the gateway only (port 53), answering
  ``cluster.local`` from a hosts file and every other name with NXDOMAIN at once (the pods have no way
  out anyway; a refusal would make resolvers retry for seconds).
  A thread fed from the API server (Services and Endpoints of every namespace, listed every
  ``POLL`` s) rewrites that file and sends dnsmasq SIGHUP when it changes. A headless Service ``S`` in
  namespace ``N`` gives ``S.N.svc.cluster.local`` (every address) and ``H.S.N.svc.cluster.local`` for each
  address with a hostname (a pod whose ``hostname``/``subdomain`` name it), ready or not when the Service
  publishes not-ready addresses. The kubelet points the pods' resolv.conf at the gateway
  (``clusterDNS``) with the usual search path, so ``server.<service>`` resolves from the pod's namespace.
  Services with a cluster IP are not served: nothing here routes cluster IPs (no kube-proxy; see
  docs/KUBE-TEST-SERVERS.md).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import signal
import subprocess
import threading
import time

CLUSTER_DOMAIN = "cluster.local"
SUBNET_POOL = ipaddress.ip_network("10.244.0.0/16")
BRIDGE_PREFIX = "osmokn-"
LOCK_FILE = "/run/lock/osmo-kubenode-net.lock"
POLL = 0.25


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network this machine has an address in or a route to."""
    used = []
    for link in json.loads(_ip("-j", "-4", "addr").stdout or "[]"):
        for info in link.get("addr_info", []):
            used.append(ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in json.loads(_ip("-j", "-4", "route", "show", "table", "all").stdout or "[]"):
        dst = route.get("dst", "")
        if dst and dst != "default":
            try:
                used.append(ipaddress.ip_network(dst, strict=False))
            except ValueError:
                pass
    return used


def reserve_bridge(suffix: str) -> tuple[str, ipaddress.IPv4Network]:
    """Create the bridge ``osmokn-<suffix>`` on a free /24 of 10.244.0.0/16; returns (name, subnet)."""
    name = f"{BRIDGE_PREFIX}{suffix}"[:15]
    os.makedirs(os.path.dirname(LOCK_FILE), exist_ok=True)
    with open(LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        used = _used_networks()
        subnet = next((s for s in SUBNET_POOL.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used)), None)
        if subnet is None:
            raise RuntimeError(f"no free /24 left in {SUBNET_POOL} for the node's bridge")
        gateway = next(subnet.hosts())
        _ip("link", "add", "name", name, "address", bridge_mac(subnet), "type", "bridge")
        try:
            _ip("addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", name)
            _ip("link", "set", name, "up")
        except subprocess.CalledProcessError:
            delete_bridge(name)
            raise
    return name, subnet


def bridge_mac(subnet: ipaddress.IPv4Network) -> str:
    """The bridge's own MAC address, locally administered, one per subnet. Set when the bridge is made, so
    it never changes: a bridge given none takes the lowest MAC of its ports, so it changed as pods came and
    went, and a pod that had resolved its gateway (the S3 store, DNS) kept sending to a MAC no longer the
    host's until its neighbour entry went stale: connect timeouts for up to a minute (seen in CI)."""
    third = subnet.network_address.packed[2]
    return f"02:6f:6b:6e:{third:02x}:01"


def delete_bridge(name: str) -> None:
    if name.startswith(BRIDGE_PREFIX):
        _ip("link", "del", name, check=False)


def node_bridges() -> list[str]:
    """The names of every node bridge on this machine (``osmokn-*``), of any node."""
    links = json.loads(_ip("-j", "link", "show", "type", "bridge").stdout or "[]")
    return [link["ifname"] for link in links if link.get("ifname", "").startswith(BRIDGE_PREFIX)]


def bridge_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


def network_report(bridge: str) -> str:
    """What the host knows of a node's pod network, for a failure message: the bridge's ports, its
    neighbours (the pods' addresses and whether their MACs answer) and the routes into its subnet."""
    parts = []
    for title, args in (("ports", ["-br", "link", "show", "master", bridge]),
                        ("neighbours", ["neigh", "show", "dev", bridge]),
                        ("routes", ["route", "show", "dev", bridge])):
        done = _ip(*args, check=False)
        parts.append(f"--- {title} of {bridge} ---\n{(done.stdout or done.stderr).strip()}")
    return "\n".join(parts)


def hosts_lines(services: list[dict], endpoints: list[dict]) -> list[str]:
    """The hosts file for the headless Services among ``services`` (API JSON), from their Endpoints."""
    headless = {(s["metadata"]["namespace"], s["metadata"]["name"]) for s in services
                if (s.get("spec") or {}).get("clusterIP") == "None"}
    lines = set()
    for ep in endpoints:
        key = (ep["metadata"]["namespace"], ep["metadata"]["name"])
        if key not in headless:
            continue
        service = f"{key[1]}.{key[0]}.svc.{CLUSTER_DOMAIN}"
        for subset in ep.get("subsets") or []:
            for address in (subset.get("addresses") or []) + (subset.get("notReadyAddresses") or []):
                lines.add(f"{address['ip']} {service}")
                if address.get("hostname"):
                    lines.add(f"{address['ip']} {address['hostname']}.{service}")
    return sorted(lines)


class ClusterDns:
    """dnsmasq on ``gateway`` plus the thread that feeds it from the API server (see the module docstring)."""

    def __init__(self, folder: str, gateway: str, api_client) -> None:
        self.folder = folder
        self.gateway = gateway
        self.hosts_file = os.path.join(folder, "cluster.hosts")
        self._api = api_client
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._proc: subprocess.Popen | None = None
        self.errors = 0
        self.updates = 0

    def end_strays(self) -> list[int]:
        """SIGKILL every dnsmasq serving this gateway: one that outlived a killed test process (dnsmasq drops
        root for nobody, and the kernel then forgets to kill it with its parent), holding the address.
        The bridge and its gateway are the node's own, so nothing else serves it. Returns their pids."""
        ended = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and os.path.basename(argv[0]) == b"dnsmasq" and \
                    f"--listen-address={self.gateway}".encode() in argv:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    ended.append(int(pid))
                except OSError:
                    continue
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{pid}") for pid in ended) and time.monotonic() < deadline:
            time.sleep(0.05)  # its socket is free once it is gone
        return ended

    def argv(self) -> list[str]:
        """dnsmasq in the foreground, no config file, nothing but the hosts file; it drops root for nobody."""
        self.end_strays()
        os.makedirs(self.folder, mode=0o755, exist_ok=True)
        with open(self.hosts_file, "w") as f:
            f.write("")
        os.chmod(self.hosts_file, 0o644)
        return ["dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--pid-file=", "--no-resolv",
                "--no-hosts", f"--addn-hosts={self.hosts_file}", f"--listen-address={self.gateway}",
                "--bind-interfaces", "--port=53", f"--local=/{CLUSTER_DOMAIN}/", "--address=/#/", "--domain-needed",
                "--no-negcache", "--log-facility=-"]

    def attach(self, proc: subprocess.Popen) -> None:
        """Start feeding the dnsmasq process ``proc`` (started by the caller from ``argv()``)."""
        self._proc = proc
        self._thread = threading.Thread(target=self._feed, daemon=True, name="osmo-kubenode-dns")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def _feed(self) -> None:
        from kubernetes import client

        core = client.CoreV1Api(self._api)
        current: list[str] | None = None
        while not self._stop.wait(POLL):
            try:
                services = self._api.sanitize_for_serialization(
                    core.list_service_for_all_namespaces(_request_timeout=10)).get("items", [])
                endpoints = self._api.sanitize_for_serialization(
                    core.list_endpoints_for_all_namespaces(_request_timeout=10)).get("items", [])
            except Exception:  # noqa: BLE001 - the API server may be restarting: try again
                self.errors += 1
                continue
            lines = hosts_lines(services, endpoints)
            if lines == current:
                continue
            temporary = self.hosts_file + ".tmp"
            with open(temporary, "w") as f:
                f.write("".join(line + "\n" for line in lines))
            os.chmod(temporary, 0o644)
            os.replace(temporary, self.hosts_file)
            if self._proc is not None and self._proc.poll() is None:
                if not _catches_hup(self._proc.pid):
                    continue  # still starting (it reads the file then): a SIGHUP now would end it; next tick
                os.kill(self._proc.pid, signal.SIGHUP)
            current = lines
            self.updates += 1


def _catches_hup(pid: int) -> bool:
    """``pid`` has a SIGHUP handler (bit 0 of SigCgt in /proc/PID/status): dnsmasq installs it while starting,
    and a SIGHUP before that ends it (CI saw "dnsmasq exited (-1)" on a loaded machine)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("SigCgt:"):
                    return bool(int(line.split()[1], 16) & 1)
    except (OSError, ValueError):
        pass
    return False


class TcpRelay:
    """Listens on ``host`` (a bridge's gateway: the only host address pods reach) and relays each connection to
    ``127.0.0.1:target_port``, byte for byte (TLS passes through untouched). The node's API server listens on
    loopback only; pods reach it, as on a cluster, at ``HOST:PORT`` (the pool's ``api_server_from_pods``)."""

    def __init__(self, host: str, target_port: int) -> None:
        import socket

        self.target = ("127.0.0.1", target_port)
        self._sock = socket.create_server((host, 0))
        self.host, self.port = host, self._sock.getsockname()[1]
        self._stop = threading.Event()

    def start(self) -> "TcpRelay":
        threading.Thread(target=self._accept, name="osmo-kubenode-relay", daemon=True).start()
        return self

    def _accept(self) -> None:
        import socket

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                conn.close()
                continue
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source, sink) -> None:
        import socket

        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
                try:
                    s.shutdown(how)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
