"""Podman as a non-root user (uid 65534, the whole runner as that user, as in
test_rootless_isolation.py): tasks still run in their images, and what rootless Podman cannot do on a
machine is said in the task log instead of failing the task. On this kind of machine (measured):

- its networks run through slirp4netns, which needs /dev/net/tun; the VM's /dev/net/tun is 0600 root,
  so every container on a network fails (``slirp4netns failed: "open(\\"/dev/net/tun\\"): Permission
  denied"``): the runner sees it first and gives the group the host's network, with a log line;
- cgroup v1 gives rootless Podman no controller ("Resource limits are not supported and ignored on
  cgroups V1 rootless systems"): limits are not enforced, with a log line;
- uid 65534 has no subordinate ids, so the test's storage sets ``ignore_chown_errors`` (files of other
  owners in the image become the one mapped uid) to load the image at all.

The test expects whichever of these the machine shows (it reads /dev/net/tun and the cgroup version
itself), so it also holds where rootless Podman can do more.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

from .conftest import tasks_of
from .podman_env import make_store, remove_store
from .test_rootless_isolation import NOBODY, _nobody_argv, _osmo, _run_as_nobody, workspace  # noqa: F401


def _tun_open_for_nobody() -> bool:
    done = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--", "sh", "-c",
                           "exec 3<>/dev/net/tun"], capture_output=True)
    return done.returncode == 0


def _cgroup_v2() -> bool:
    return os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def test_rootless_podman_runs_tasks_in_their_images_and_says_what_it_cannot_do(workspace):
    stash = workspace / "stash"
    store = make_store(rootless=True, wrap=lambda argv: _nobody_argv(argv, str(stash)))
    try:
        osmo = _osmo(workspace, "none", lead_head_start=0)
        osmo.env.update(store.env, OSMO_ENGINE="podman")
        script = "echo I am $(hostname); test ! -e /work && echo in the image; awk '{print $1, $2, $3}' /proc/self/uid_map"
        doc = {"workflow": {"name": "rootless", "resources": {"small": {"memory": "64Mi"}}, "groups": [{
            "name": "pair", "tasks": [
                {"name": "server", "lead": True, "image": "ubuntu:24.04", "resource": "small",
                 "command": ["bash", "-c", script + "; echo peer is {{host:client}}; echo out > {{output}}/x.txt"]},
                {"name": "client", "image": "alpine:3.18", "command": ["sh", "-c", "sleep 300"]}]}]}}
        info, logs = _run_as_nobody(osmo, workspace, doc)
        assert info["status"] == "COMPLETED", logs
        assert info["isolation"].startswith(f"container engine podman 4.3.1 (rootless, uid {NOBODY})"), info["isolation"]
        assert "server | I am server" in logs and "server | in the image" in logs
        assert f"server | 0 {NOBODY} 1" in logs  # root in the container is uid 65534 outside
        out = Path(tasks_of(info)["server"]["attempts"][0]["run_dir"]) / "data" / "output"
        assert (out / "x.txt").stat().st_uid == NOBODY
        if _tun_open_for_nobody():
            assert "server | peer is 10.214." in logs
        else:
            assert "server | peer is 127.0.0.1" in logs
            assert ("[osmo] network: the host's, as rootless Podman's networks need /dev/net/tun (slirp4netns), "
                    f"which uid {NOBODY} cannot open here: Permission denied; {{{{host:TASK}}}} is 127.0.0.1 and "
                    "the group's tasks share the host's ports") in logs
            assert "no group networks (rootless Podman's networks need /dev/net/tun" in info["isolation"]
        if not _cgroup_v2():
            assert ("server | [osmo] limits: not enforced: rootless Podman on cgroup v1 cannot set resource "
                    "limits") in logs
        assert tasks_of(info)["client"]["reason"] == "stopped when the lead task 'server' ended"
        assert store.leftovers() == []
    finally:
        remove_store(store, wrap=lambda argv: _nobody_argv(argv, str(stash)))
    ours = [line for line in osmo.processes() if "podman" not in line.split(":", 1)[1].split()[0]]
    assert ours == []  # (rootless Podman keeps a pause process per user; remove_store ended it)
