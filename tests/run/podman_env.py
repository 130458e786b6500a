"""A Podman of the tests' own: the machine's Podman with a private storage root, run root and network
config folder, the test task image loaded into it (tests/helpers/images.py), all removed afterwards.

The runner is not told anything: Podman reads ``$CONTAINERS_STORAGE_CONF`` and ``$CONTAINERS_CONF``,
which the tests put in the submitting environment, and the supervisor passes on to the engine. So
tests never depend on (or change) the machine's images, containers or networks.

The storage lives under a short folder in /tmp: Podman refuses a run root path longer than 50
characters. ``PodmanStore.check_empty`` is what every engine test asserts at its end: no container
and no network of the runner's left in it; given the test's ``Osmo`` runners, only objects of their
supervisors count (the conformance workflows run in the same storage meanwhile).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.images import image_archives
from helpers.tools import require_tool
from osmo_run.local.engine_cli import EngineCli, parse_listing

NOBODY = 65534


def _checked(argv: list[str], env: dict[str, str], timeout: float = 300, **kwargs) -> str:
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}", pytrace=False)
    return done.stdout


@dataclass
class PodmanStore:
    root: Path
    env: dict[str, str]  # what the submitting environment needs to use this storage
    podman: str

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.podman, *args], env={**os.environ, **self.env}, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def leftovers(self, *runners) -> list[str]:
        """Containers and networks the runner made (its label) that are still there; with ``runners``
        (``Osmo``), only those of their workflows' supervisors."""
        owners = {str(pid) for runner in runners for pid in supervisor_pids(runner)}
        cli = EngineCli("podman", self.podman)
        found = []
        for argv in (cli.list_containers(), cli.list_networks()):
            for name, owner in parse_listing(self.run(*argv[1:]).stdout):
                if not runners or owner.split(".")[0] in owners:
                    found.append(name)
        return found

    def check_empty(self, *runners) -> None:
        left = self.leftovers(*runners)
        assert left == [], f"the runner left these in Podman: {left}"


def supervisor_pids(runner) -> list[int]:
    """The supervisor of every workflow an ``Osmo`` ran."""
    return [runner.query(w["id"])["supervisor_pid"] for w in runner("list", "--json").json()]


def _write_config(root: Path, rootless: bool) -> dict[str, str]:
    storage, containers = root / "storage.conf", root / "containers.conf"
    if rootless:  # one uid mapped (no subordinate ids for nobody): files of other owners become that uid
        storage.write_text(f'[storage]\ndriver = "overlay"\nrootless_storage_path = "{root}/root"\n'
                           '[storage.options.overlay]\nignore_chown_errors = "true"\n')
    else:
        storage.write_text(f'[storage]\ndriver = "overlay"\ngraphroot = "{root}/root"\nrunroot = "{root}/run"\n')
    containers.write_text(f'[network]\nnetwork_config_dir = "{root}/cni"\n')
    env = {"CONTAINERS_STORAGE_CONF": str(storage), "CONTAINERS_CONF": str(containers)}
    if rootless:
        (root / "xdg-run").mkdir(mode=0o700)
        env["XDG_RUNTIME_DIR"] = str(root / "xdg-run")
    return env


def make_store(rootless: bool = False, wrap=None) -> PodmanStore:
    """A private storage with the test task image loaded (``wrap``: argv -> argv, to run as another user)."""
    podman = require_tool("podman")
    archive = image_archives()["osmo-task"]
    root = Path(tempfile.mkdtemp(prefix="osmo-pm-", dir="/tmp"))
    root.chmod(0o755)
    env = _write_config(root, rootless)
    if rootless:
        for path in [root, *root.iterdir()]:
            os.chown(path, NOBODY, NOBODY)
        env["HOME"] = str(root)
    store = PodmanStore(root, env, podman)
    argv = [podman, "load"]  # the archive on stdin: another user may not reach the cache it is in
    try:
        with open(archive.path, "rb") as image:
            _checked(wrap(argv) if wrap else argv, {**os.environ, **env}, stdin=image)
    except BaseException:
        remove_store(store, wrap)
        raise
    return store


def remove_store(store: PodmanStore, wrap=None) -> None:
    """Remove every container, network and image of the storage, then the storage itself."""
    env = {**os.environ, **store.env}
    steps = [["rm", "--all", "--force", "--time", "0"], ["network", "prune", "--force"], ["rmi", "--all", "--force"]]
    if wrap:
        steps.append(["system", "migrate"])  # rootless: ends the user's pause process
    for args in steps:
        argv = [store.podman, *args]
        subprocess.run(wrap(argv) if wrap else argv, env=env, capture_output=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    mounts = [line.split()[1] for line in open("/proc/mounts") if str(store.root) in line]
    for mount in reversed(mounts):
        subprocess.run(["umount", "-l", mount], capture_output=True)
    shutil.rmtree(store.root, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_store() -> PodmanStore:
    """Root Podman with a private storage holding the test task image (under every workflow image name)."""
    store = make_store()
    yield store
    remove_store(store)
