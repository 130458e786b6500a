"""The root a namespaces task sees (``taskinit.stage_root``) on hosts of any shape: it always has an empty /tmp
and /osmo of its own, whether or not the host has them (a host without ``/osmo``, i.e. almost every machine,
once failed every namespaces task with "mount tmpfs on /tmp/osmo: No such file or directory"), and the host's
other top-level entries bound read-only. Each case runs in a private mount namespace that ends with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from helpers.tools import require_tool

PROBE = """
import json, os, sys
from osmo_run.local.taskinit import stage_root
new = stage_root(sys.argv[1])
seen = {}
for name in sorted(os.listdir(new)):
    path = os.path.join(new, name)
    kind = "link" if os.path.islink(path) else "dir" if os.path.isdir(path) else "file"
    seen[name] = {"kind": kind, "entries": sorted(os.listdir(path)) if kind == "dir" else None,
                  "read_only": bool(os.statvfs(path).f_flag & os.ST_RDONLY) if kind != "link" else None}
print(json.dumps(seen))
"""


def _staged(host: Path) -> dict:
    require_tool("unshare")
    proc = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", PROBE, str(host)],
                          capture_output=True, text=True, timeout=60, cwd=os.path.dirname(os.path.dirname(
                              os.path.dirname(os.path.abspath(__file__)))))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def host():
    """A small host root outside /tmp (the staged root covers /tmp)."""
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="osmo-host-") as folder:
        root = Path(folder)
        (root / "etc").mkdir()
        (root / "etc" / "hostname").write_text("host\n")
        (root / "motd").write_text("hello\n")
        os.symlink("etc", root / "config")
        yield root


def test_a_host_without_tmp_and_osmo_still_gives_the_task_both(host):
    seen = _staged(host)
    assert sorted(seen) == ["config", "etc", "motd", "osmo", "tmp"]
    assert seen["osmo"] == {"kind": "dir", "entries": [], "read_only": False}
    assert seen["tmp"] == {"kind": "dir", "entries": [], "read_only": False}
    assert seen["etc"] == {"kind": "dir", "entries": ["hostname"], "read_only": True}  # the host's, read-only
    assert seen["motd"]["read_only"] and seen["config"]["kind"] == "link"


def test_the_hosts_own_tmp_and_osmo_are_never_shown_to_the_task(host):
    for name in ("tmp", "osmo"):
        (host / name).mkdir()
        (host / name / "host-secret.txt").write_text("the host's\n")
    seen = _staged(host)
    assert seen["osmo"]["entries"] == [] and seen["tmp"]["entries"] == []
    assert not seen["osmo"]["read_only"]
