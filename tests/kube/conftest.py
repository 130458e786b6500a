"""The Kubernetes test servers' fixtures for tests/kube (see tests/servers/kube_fixtures.py), the
``kube_cluster`` marker for tests that need the scheduling tier, and ``osmo_late`` (as in tests/run: checks
of workflows submitted early run at the end of the session)."""

from servers.kube_fixtures import kube_cluster, kube_namespace, kube_node, kube_node_namespace, kube_server  # noqa: F401,E501


def pytest_configure(config):
    config.addinivalue_line("markers", "kube_cluster: needs the scheduling tier (controller-manager, scheduler, "
                                       "kubemark hollow node; ~12 s to start)")
    config.addinivalue_line("markers", "osmo_late: runs at the end (checks a workflow submitted early)")


def pytest_collection_modifyitems(config, items):
    late = [item for item in items if item.get_closest_marker("osmo_late")]
    items[:] = [item for item in items if not item.get_closest_marker("osmo_late")] + late
