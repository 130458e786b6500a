"""Pytest fixtures for the Kubernetes test servers (see ``kube.py``).

- ``kube_server`` (session): etcd + kube-apiserver on 127.0.0.1 with the project's PodGroup CRDs
  (``deploy/crds/``) installed and Established. No scheduler, no node: pods stay Pending unless a test plays
  the kubelet (patch ``pods/status``). Shared by every test of the session (~3 s to start).
- ``kube_namespace`` (function): the name of a fresh namespace on ``kube_server``, deleted afterwards
  (without a controller-manager it then stays Terminating, invisible to the next tests' namespaces).
- ``kube_cluster`` (session): a second, separate control plane plus controller-manager, scheduler and a
  kubemark hollow node, so pods get a nodeName and become Running. Started only by the tests that use it
  (~12 s), separate so that ``kube_server``'s pods are never scheduled.
- ``kube_node`` (session): a real one-node Kubernetes (``kubenode.py``: a real kubelet and containerd,
  the project's images, cluster DNS, an S3 store the pods reach), a third control plane of its own.
  Needs root and the images of ``.ci/build-images.sh`` (built first if the cache lacks them; ~25 s to
  start). ``kube_node_namespace`` (function): a fresh namespace on it holding the store's Secret.

If the binaries are missing or a server does not come up, the fixture FAILS (never skips) with a message
naming ``.ci/install-kube.sh``. Several conftest.py files may import them: they still share one server
per kind. Import them with
``from servers.kube_fixtures import kube_server, kube_namespace, kube_cluster  # noqa: F401``.
"""

from __future__ import annotations

import glob
import os
import time
import uuid
import warnings

import pytest
import yaml

from .kube import KubeError, KubeServer

__all__ = ["kube_server", "kube_namespace", "kube_cluster", "kube_node", "kube_node_namespace", "install_crds",
           "create_namespace", "CRD_DIR"]

CRD_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "deploy", "crds")
INSTALL_SCRIPT = ".ci/install-kube.sh"


def install_crds(server: KubeServer, crd_dir: str = CRD_DIR, timeout: float = 30.0) -> list[str]:
    """Create every CRD of ``crd_dir`` on the server and wait until each is Established (served)."""
    from kubernetes import client

    api = client.ApiextensionsV1Api(server.api_client())
    names = []
    for path in sorted(glob.glob(os.path.join(crd_dir, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    api.create_custom_resource_definition(doc)
                    names.append(doc["metadata"]["name"])
    if not names:
        raise KubeError(f"no CRD manifests in {crd_dir}")
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in list(pending):
            crd = api.read_custom_resource_definition(name)
            if any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
                pending.discard(name)
        if pending and time.monotonic() > deadline:
            raise KubeError(f"CRDs not Established after {timeout:.0f} s: {sorted(pending)}")
        time.sleep(0.1)
    return names


def create_namespace(server: KubeServer, prefix: str = "osmo-test") -> str:
    from kubernetes import client

    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    client.CoreV1Api(server.api_client()).create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


# One server per kind for the whole session, even when several conftest.py files import these fixtures (pytest
# then holds one session fixture per importing conftest): started by the first user, stopped by the last.
_shared: dict[str, list] = {}


def _start(what: str, key: str) -> KubeServer | str:
    server = _real_node() if key == "node" else KubeServer()
    if isinstance(server, str):
        return server
    try:
        server.start()
        install_crds(server)
        if key == "cluster":
            server.start_cluster()
    except Exception as exc:  # noqa: BLE001 - any start failure must become a clear test failure
        server.stop()
        return f"{what} could not start: {type(exc).__name__}: {exc}\n(binaries come from: bash {INSTALL_SCRIPT})"
    return server


def _real_node():
    """A ``KubeNode`` with the images of .ci/build-images.sh (built now if the cache lacks them)."""
    from helpers.images import image_archives

    from .kubenode import Image, KubeNode

    archives = image_archives()
    return KubeNode({name: Image(name, str(a.path), a.tags) for name, a in archives.items()})


def _session_server(what: str, key: str):
    if key not in _shared:
        _shared[key] = [_start(what, key), 0]
    entry = _shared[key]
    if isinstance(entry[0], str):  # failed once: fail every user at once, no second start attempt
        pytest.fail(entry[0], pytrace=False)
    entry[1] += 1
    try:
        yield entry[0]
    finally:
        entry[1] -= 1
        if entry[1] == 0:
            del _shared[key]
            entry[0].stop()


@pytest.fixture(scope="session")
def kube_server():
    yield from _session_server("Kubernetes API server (etcd + kube-apiserver)", "server")


@pytest.fixture
def kube_namespace(kube_server):
    from kubernetes import client

    name = create_namespace(kube_server)
    yield name
    try:
        client.CoreV1Api(kube_server.api_client()).delete_namespace(name)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not delete test namespace {name}: {exc!r}")


@pytest.fixture(scope="session")
def kube_cluster():
    yield from _session_server("Kubernetes cluster tier (apiserver, controller-manager, scheduler, hollow node)",
                               "cluster")


@pytest.fixture(scope="session")
def kube_node():
    yield from _session_server("the real Kubernetes node (control plane, containerd, kubelet, DNS, S3)", "node")


@pytest.fixture
def kube_node_namespace(kube_node):
    from kubernetes import client

    name = f"osmo-node-{uuid.uuid4().hex[:8]}"
    kube_node.prepare_namespace(name)
    yield name
    try:
        client.CoreV1Api(kube_node.api_client()).delete_namespace(name)
    except Exception as exc:  # noqa: BLE001
        warnings.warn(f"could not delete test namespace {name}: {exc!r}")
