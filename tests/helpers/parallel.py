"""How the suite shares two xdist workers (README's test command: ``pytest -n 2``, ``--dist loadgroup``).

Most tests are independent and go to whichever worker is free. Some share one instance of something heavy
or machine-wide; every test that uses it gets the same ``xdist_group``, so it runs on one worker, once:

- a session fixture in ``SHARED`` (requested directly or through another fixture): the real node (one
  kubelet, containerd and CNI bridge per machine), the private Podman storage with the test image, the
  tutorial runs as host processes, the Ceph cluster, the hollow-node cluster;
- a module fixture (a module's early-submitted workflows, unpacked images, a store built once): the
  module's tests stay together;
- a mark already given (``pytest.param(..., marks=pytest.mark.xdist_group(...))``): a fixture that picks
  its tier by parameter (``conformance``: host or Podman) says so itself.

Inside a group the order is collection order, so ``osmo_late`` tests still come after the others of
their group. Without ``-n`` the marks do nothing.
"""

from __future__ import annotations

import pytest

LOCAL_RUNNER = "local-runner"  # the Podman tests and the host tutorials: see SHARED

SHARED = (  # fixture -> group; the first that a test uses wins
    ("kube_node", "kube-node"),
    # one group for both: the host tutorials' late check waits for combination_workflow_complex (120 s in its
    # lead), which now passes while the Podman tests run, not with a worker idle
    ("podman_store", LOCAL_RUNNER),
    ("conformance_host", LOCAL_RUNNER),
    ("radosgw_server", "radosgw"),
    ("kube_cluster", "kube-cluster"),
)


def group_of(item) -> str | None:
    """The xdist group ``item`` belongs to (see the module docstring), or None: any worker."""
    names = set(getattr(item, "fixturenames", ()))
    for fixture, group in SHARED:
        if fixture in names:
            return group
    info = getattr(item, "_fixtureinfo", None)
    for defs in (info.name2fixturedefs.values() if info else ()):
        if any(d.scope == "module" for d in defs):
            return "module:" + item.nodeid.split("::", 1)[0]
    return None


def mark_groups(items) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        group = group_of(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def check_groups_taken(session) -> None:
    """Under ``--dist loadgroup`` xdist puts ``@group`` at the end of each grouped test's id; a pytest whose
    ids it cannot change (9.2 with xdist 3.8) would spread a group over both workers, starting two real
    nodes. Fail the run instead."""
    if not session.config.getoption("loadgroup", False):
        return
    lost = [item.nodeid for item in session.items if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if lost:
        raise pytest.UsageError(f"pytest-xdist did not group {len(lost)} tests (e.g. {lost[0]}): this pytest and "
                                "pytest-xdist do not work together; install the versions pyproject.toml names")
