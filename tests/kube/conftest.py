"""The Kubernetes test servers' fixtures for tests/kube (see tests/servers/kube_fixtures.py), and the
``kube_cluster`` marker for tests that need the scheduling tier."""

from servers.kube_fixtures import kube_cluster, kube_namespace, kube_server  # noqa: F401


def pytest_configure(config):
    config.addinivalue_line("markers", "kube_cluster: needs the scheduling tier (controller-manager, scheduler, "
                                       "kubemark hollow node; ~12 s to start)")
