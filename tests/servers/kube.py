"""A throwaway Kubernetes control plane on 127.0.0.1 (etcd + kube-apiserver), for the Kubernetes runner's tests.

``KubeServer.start()`` makes a temporary directory, generates a CA, a serving certificate for 127.0.0.1 and a
service-account key pair (``cryptography``), starts etcd (``--unsafe-no-fsync``) and kube-apiserver on free
loopback ports, waits until ``/readyz`` answers, and writes ``kubeconfig`` (server, CA, bearer token of a
``system:masters`` user) for the official ``kubernetes`` Python client or kubectl. ``restart_apiserver()``
stops the API server and starts it again on the same port with the same etcd (data survives).
``start_cluster()`` is the second tier: kube-controller-manager, kube-scheduler and one kubemark hollow node,
so pods get scheduled and become Running (their containers never run and never finish). The hollow kubelet
adds the kubelet's iptables chains (KUBE-FIREWALL...) to the host; they are removed with the last hollow
node, unless they were there before it.

Without a node, pods stay Pending; a test can play the kubelet by patching ``pods/status``. The ServiceAccount
admission plugin is off (no token controller in the first tier), so pods get no token volume.

Binaries: kube-* and kubemark built from Debian's ``kubernetes`` source by ``.ci/install-kube.sh`` into
``~/.cache/osmo-kube/current/bin`` (``OSMO_KUBE_BIN`` overrides that directory); etcd from Debian's
``etcd-server``. Missing binaries raise :class:`KubeError` naming the script: tests fail, never skip.
The life cycle is ``DaemonServer``'s (``base.py``): every daemon runs in its own process group with
PR_SET_PDEATHSIG (it dies with the test process even on SIGKILL); ``stop()`` (also run at exit) kills them
all and removes the directory; a directory left by a SIGKILLed run is removed by the next ``start()``.
Timings and memory: docs/KUBE-TEST-SERVERS.md.

Manual use (foreground, Ctrl-C stops and cleans up)::

    python -m tests.servers.kube [--cluster]
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import secrets
import shutil
import subprocess
import ssl
import sys
import time
import urllib.error
import urllib.request

import yaml

from .base import DaemonServer, free_port

INSTALL_HINT = "build them with: bash .ci/install-kube.sh (once, ~7 min; cached in ~/.cache/osmo-kube)"
KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubemark")
DIR_PREFIX = "osmo-kubetest-"
SERVICE_CIDR = "10.96.0.0/16"
NODE_NAME = "osmo-hollow-node"


class KubeError(RuntimeError):
    """The binaries are missing or a daemon did not come up; the message carries the daemon log tails."""


def bin_dir() -> str:
    if os.environ.get("OSMO_KUBE_BIN"):
        return os.environ["OSMO_KUBE_BIN"]
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "osmo-kube", "current", "bin")


def missing_binaries() -> list[str]:
    missing = [os.path.join(bin_dir(), b) for b in KUBE_BINARIES if not os.access(os.path.join(bin_dir(), b), os.X_OK)]
    return missing + (["etcd"] if shutil.which("etcd") is None else [])


def _write_pki(d: str, extra_ips: tuple[str, ...] = ()) -> None:
    """ca.crt; apiserver.crt/.key for 127.0.0.1 signed by it; sa.key/sa.pub for service-account tokens;
    kubelet.crt/.key (a kubelet's serving certificate for 127.0.0.1) and kubelet-client.crt/.key (the API
    server's client certificate towards kubelets, in group system:masters). Every file is owner-only."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn, group=None):
        return x509.Name([*([x509.NameAttribute(NameOID.ORGANIZATION_NAME, group)] if group else []),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def cert(subject, key, issuer, issuer_key, *, ca: bool, extra=(), group=None):
        b = (x509.CertificateBuilder().subject_name(name(subject, group)).issuer_name(issuer.subject if issuer else name(subject))
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca else None), critical=True)
             .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=not ca,
                                          data_encipherment=False, key_agreement=False, key_cert_sign=ca, crl_sign=ca,
                                          encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
        if issuer:
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        for ext in extra:
            b = b.add_extension(ext, critical=False)
        return b.sign(issuer_key, hashes.SHA256())

    def write(fname, data):
        write_private(os.path.join(d, fname), data)

    def key_pem(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    ca_key, srv_key, sa_key, kubelet_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(5))
    ca = cert("osmo-test-ca", ca_key, None, ca_key, ca=True)
    sans = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            x509.IPAddress(next(ipaddress.ip_network(SERVICE_CIDR).hosts())),
            *(x509.DNSName(n) for n in ("kubernetes", "kubernetes.default", "kubernetes.default.svc")),
            *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips)]  # e.g. a node bridge's gateway
    srv = cert("kube-apiserver", srv_key, ca, ca_key, ca=False,
               extra=[x509.SubjectAlternativeName(sans), x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
    write("ca.crt", ca.public_bytes(serialization.Encoding.PEM))
    write("apiserver.crt", srv.public_bytes(serialization.Encoding.PEM))
    write("apiserver.key", key_pem(srv_key))
    write("sa.key", key_pem(sa_key))
    write("sa.pub", sa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    kubelet = cert("kubelet", kubelet_key, ca, ca_key, ca=False,
                   extra=[x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                       x509.DNSName("localhost")]),
                          x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])])
    client = cert("kube-apiserver-kubelet-client", client_key, ca, ca_key, ca=False,
                  extra=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])], group="system:masters")
    for fname, crt, key in (("kubelet", kubelet, kubelet_key), ("kubelet-client", client, client_key)):
        write(f"{fname}.crt", crt.public_bytes(serialization.Encoding.PEM))
        write(f"{fname}.key", key_pem(key))


def write_private(path: str, data: bytes | str) -> None:
    """Write ``path`` readable by its owner only (keys, tokens, kubeconfigs)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


class KubeServer(DaemonServer):
    """etcd + kube-apiserver (+ optionally controller-manager, scheduler, hollow node), children of this process."""

    dir_prefix = DIR_PREFIX
    error = KubeError

    def __init__(self, *, start_timeout: float = 90.0) -> None:
        super().__init__()
        self.start_timeout = start_timeout
        self.token = secrets.token_hex(24)
        self.etcd_port = 0
        self.port = 0
        self.server = ""
        self.kubeconfig = ""
        self.node_name = ""
        self.cluster_seconds = 0.0

    # ----------------------------------------------------------------------------------------- lifecycle
    def _start(self) -> None:
        missing = missing_binaries()
        if missing:
            raise KubeError(f"Kubernetes test binaries not found: {', '.join(missing)}; {INSTALL_HINT}")
        self.make_dir()
        _write_pki(self.dir)
        write_private(os.path.join(self.dir, "tokens.csv"), f"{self.token},admin,admin-uid,system:masters\n")
        self.etcd_port, self.port = free_port(), free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self._write_kubeconfig()
        self._start_etcd()
        self.start_apiserver()

    @classmethod
    def remove_dir(cls, path: str) -> None:
        """Remove a server directory, and the /tmp/hollow-kubelet.* directory its hollow node logged (kubemark
        makes that one under /tmp whatever TMPDIR says) and the runtime socket."""
        try:
            with open(os.path.join(path, "log", "kubemark.log"), errors="replace") as f:
                m = re.search(r"Using (\S+) as root dir for hollow-kubelet", f.read())
            if m and os.path.basename(m.group(1)).startswith("hollow-kubelet."):
                shutil.rmtree(m.group(1), ignore_errors=True)
                if _remove_runtime_socket() and os.path.exists(os.path.join(path, CHAINS_MARKER)):
                    _remove_kubelet_chains()
        except OSError:
            pass
        shutil.rmtree(path, ignore_errors=True)

    def start_apiserver(self, wait: bool = True) -> float:
        """Start kube-apiserver (again) on ``self.port`` and (unless not ``wait``) wait until it is ready;
        returns the seconds taken."""
        t0 = time.monotonic()
        d = self.dir
        self.spawn("kube-apiserver", [
            os.path.join(bin_dir(), "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={self.port}",
            "--insecure-port=0", "--endpoint-reconciler-type=none",  # "kubernetes" endpoints may not be loopback
            f"--tls-cert-file={d}/apiserver.crt", f"--tls-private-key-file={d}/apiserver.key",
            f"--client-ca-file={d}/ca.crt", f"--token-auth-file={d}/tokens.csv", "--authorization-mode=RBAC",
            f"--service-account-key-file={d}/sa.pub", f"--service-account-signing-key-file={d}/sa.key",
            "--service-account-issuer=https://kubernetes.default.svc", f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--disable-admission-plugins=ServiceAccount", "--allow-privileged=true", "--profiling=false",
            f"--cert-dir={d}/certs", *self.apiserver_extra_args(),
        ])
        if wait:
            self.wait_until(self._ready, f"kube-apiserver ready on {self.server}")
        return time.monotonic() - t0

    def apiserver_extra_args(self) -> list[str]:
        """More kube-apiserver flags (a subclass with a real kubelet adds how to reach it)."""
        return []

    def stop_apiserver(self, graceful: bool = True) -> None:
        """SIGTERM (SIGKILL after 5 s: open watches keep it from finishing), or SIGKILL at once (a crash)."""
        self.stop_daemon("kube-apiserver", graceful)

    def restart_apiserver(self, graceful: bool = True) -> float:
        """Stop the API server and start it on the same port with the same etcd; returns the seconds taken."""
        t0 = time.monotonic()
        self.stop_apiserver(graceful)
        self.start_apiserver()
        return time.monotonic() - t0

    def start_cluster(self, node_name: str = NODE_NAME) -> "KubeServer":
        """Second tier: controller-manager, scheduler and a kubemark hollow node; waits until the node is Ready
        and schedulable (~10 s)."""
        t0 = time.monotonic()
        kc = self.kubeconfig
        self.start_controllers()
        if not kubelet_chains():  # the hollow kubelet adds its iptables chains: remove them when done
            open(os.path.join(self.dir, CHAINS_MARKER), "w").close()
        self.spawn("kubemark", [
            os.path.join(bin_dir(), "kubemark"), "--morph=kubelet", f"--name={node_name}", f"--kubeconfig={kc}",
            f"--kubelet-port={free_port()}", "--kubelet-read-only-port=0", "--kube-api-content-type=application/json",
        ])
        self.node_name = node_name
        self.wait_until(self._node_ready, f"hollow node {node_name} Ready and schedulable")
        self.cluster_seconds = time.monotonic() - t0
        return self

    def start_controllers(self) -> None:
        """kube-controller-manager and kube-scheduler (no leader election, no serving ports)."""
        d, kc = self.dir, self.kubeconfig
        common = [f"--kubeconfig={kc}", "--leader-elect=false", "--port=0", "--secure-port=0", "--profiling=false"]
        self.spawn("kube-controller-manager", [
            os.path.join(bin_dir(), "kube-controller-manager"), *common,
            f"--service-account-private-key-file={d}/sa.key", f"--root-ca-file={d}/ca.crt",
            "--use-service-account-credentials=false", "--node-monitor-period=1s",
        ])
        self.spawn("kube-scheduler", [os.path.join(bin_dir(), "kube-scheduler"), *common])

    # ----------------------------------------------------------------------------------------- internals
    def _write_kubeconfig(self) -> None:
        self.kubeconfig = os.path.join(self.dir, "kubeconfig")
        cfg = {
            "apiVersion": "v1", "kind": "Config", "current-context": "osmo-test", "preferences": {},
            "clusters": [{"name": "osmo-test", "cluster": {
                "server": self.server, "certificate-authority": os.path.join(self.dir, "ca.crt")}}],
            "users": [{"name": "admin", "user": {"token": self.token}}],
            "contexts": [{"name": "osmo-test", "context": {"cluster": "osmo-test", "user": "admin"}}],
        }
        write_private(self.kubeconfig, yaml.safe_dump(cfg))

    def _start_etcd(self) -> None:
        peer = f"http://127.0.0.1:{free_port()}"
        client = f"http://127.0.0.1:{self.etcd_port}"
        self.spawn("etcd", [
            shutil.which("etcd"), "--name=osmo", f"--data-dir={self.dir}/etcd", "--unsafe-no-fsync",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}", f"--initial-cluster=osmo={peer}",
            "--logger=zap", "--log-outputs=stderr", "--log-level=warn",
        ])
        self.wait_until(lambda: self._http_json(f"{client}/health").get("health") == "true",
                        f"etcd healthy on {client}")

    def _http_json(self, url: str) -> dict:
        """GET url (the API server with the token and CA); {} on any error or non-2xx answer."""
        req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "ca.crt")) if url.startswith("https") else None
        try:
            with urllib.request.urlopen(req, timeout=3, context=ctx) as resp:
                body = resp.read()
        except (OSError, urllib.error.URLError):
            return {}
        try:
            return json.loads(body)
        except ValueError:
            return {"text": body.decode(errors="replace")}

    def _ready(self) -> bool:
        return self._http_json(f"{self.server}/readyz").get("text") == "ok"

    def _node_ready(self) -> bool:
        node = self._http_json(f"{self.server}/api/v1/nodes/{self.node_name}")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in node.get("status", {}).get("conditions", []))
        blocked = any(t.get("effect") in ("NoSchedule", "NoExecute") for t in node.get("spec", {}).get("taints", []))
        return ready and not blocked and not node.get("spec", {}).get("unschedulable")

    # ----------------------------------------------------------------------------------------- helpers
    def api_client(self):
        """A ``kubernetes.client.ApiClient`` for this server (from the kubeconfig, nothing read from ~/.kube)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": self.kubeconfig}

    def rss_bytes(self) -> dict[str, int]:
        """Resident memory per daemon (from /proc)."""
        return self.rss_by_daemon()


def _remove_runtime_socket() -> bool:
    """kubemark's fake container runtime listens on a fixed /tmp/kubelet_remote.sock (shared by every hollow
    node on the machine): remove it once no kubemark process is left (then True)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() == "kubemark":
                    return False
        except OSError:
            pass
    try:
        os.unlink("/tmp/kubelet_remote.sock")
    except OSError:
        pass
    return True


# What a hollow kubelet (makeIPTablesUtilChains) adds to the host's iptables: (table, rule to delete) and
# (table, chain to flush and delete). The real node's kubelet adds none (tests/servers/kubenode_runtime.py).
KUBELET_RULES = (("filter", ["INPUT", "-j", "KUBE-FIREWALL"]), ("filter", ["OUTPUT", "-j", "KUBE-FIREWALL"]),
                 ("nat", ["POSTROUTING", "-m", "comment", "--comment", "kubernetes postrouting rules",
                          "-j", "KUBE-POSTROUTING"]))
KUBELET_CHAINS = (("filter", "KUBE-FIREWALL"), ("filter", "KUBE-KUBELET-CANARY"), ("nat", "KUBE-POSTROUTING"),
                  ("nat", "KUBE-MARK-DROP"), ("nat", "KUBE-MARK-MASQ"), ("nat", "KUBE-KUBELET-CANARY"),
                  ("mangle", "KUBE-KUBELET-CANARY"))
CHAINS_MARKER = "remove-kubelet-iptables"  # in the server's folder: the chains were not there before it


def kubelet_chains() -> list[str]:
    """The kubelet's iptables chains present on this machine (``table/chain``)."""
    found = []
    for table in sorted({t for t, _ in KUBELET_CHAINS}):
        try:
            out = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        except OSError:
            return []  # no iptables: nothing can have been added
        found += [f"{table}/{c}" for t, c in KUBELET_CHAINS if t == table and f":{c} " in out]
    return found


def _remove_kubelet_chains() -> None:
    for table, rule in KUBELET_RULES:
        while subprocess.run(["iptables", "-t", table, "-D", *rule], capture_output=True).returncode == 0:
            pass
    for verb in ("-F", "-X"):
        for table, chain in KUBELET_CHAINS:
            subprocess.run(["iptables", "-t", table, verb, chain], capture_output=True)


def main() -> None:
    server = KubeServer()

    def announce() -> None:
        print(f"kube-apiserver ready in {server.start_seconds:.1f} s at {server.server}")
        if "--cluster" in sys.argv:
            server.start_cluster()
            print(f"hollow node {server.node_name} Ready in {server.cluster_seconds:.1f} s")
        rss = server.rss_bytes()
        print("RSS: " + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in rss.items()) +
              f"; total {sum(rss.values()) / 2**20:.0f} MiB")
        print(f"export KUBECONFIG={server.kubeconfig}")

    server.run_in_foreground(announce)


if __name__ == "__main__":
    main()
