"""Namespaces mode for a non-root user (unprivileged user namespaces): the whole runner (submit,
supervisor, taskinit, sidecars) runs as uid 65534 (nobody), with this project's own interpreter
and code.

How the unprivileged user reaches the interpreter: the venv's Python lives under a folder other
users cannot enter (e.g. /root, mode 700). The test (root) starts ``osmo`` in a private mount
namespace where that blocking folder is covered by a tmpfs holding a bind mount of just the
interpreter's prefix, then drops to uid 65534 with ``setpriv`` (no capabilities left). Nothing else
changes: the runner, its tasks and their namespaces are those any unprivileged user gets.

Where user namespaces do not work, tasks must fall back to plain processes. To get that without
touching the machine, the fallback test starts the runner in a user namespace (uids 0 and 65534
mapped to themselves) whose root sets ``user.max_user_namespaces`` to 0 for it before dropping to
65534: any user namespace the runner then tries to create fails, as on a kernel that forbids them.

The tests fail (never skip) when this machine lacks what they need, with the reason.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
import yaml

from helpers.tools import require_tool

from .conftest import Osmo, tasks_of

NOBODY = 65534

# Run ARGV in a new user + mount namespace where uids/gids 0 and 65534 are themselves and no
# further user namespace may be created (user.max_user_namespaces = 0 inside it).
NO_USERNS = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
r, w = os.pipe()
r2, w2 = os.pipe()
pid = os.fork()
if pid == 0:
    if libc.unshare(0x10000000 | 0x00020000) != 0:
        sys.stderr.write("unshare: " + os.strerror(ctypes.get_errno()) + "\\n")
        os._exit(90)
    os.write(w2, b"u")
    os.read(r, 1)
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")
    os.execvp(sys.argv[1], sys.argv[1:])
os.read(r2, 1)
for name in ("uid_map", "gid_map"):
    with open(f"/proc/{pid}/{name}", "w") as f:
        f.write("0 0 1\\n65534 65534 1\\n")
os.write(w, b"g")
sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
"""


def _blocker(path: str) -> str | None:
    """The outermost folder above ``path`` that other users cannot enter, if any."""
    parts = Path(path).parts
    for n in range(1, len(parts)):
        folder = os.path.join(*parts[:n + 1])
        if not os.stat(folder).st_mode & stat.S_IXOTH:
            return folder
    return None


def _nobody_argv(argv: list[str], stash: str, no_userns: bool = False) -> list[str]:
    """``argv`` as uid 65534, in a mount namespace where the interpreter can be reached."""
    for tool in ("unshare", "setpriv"):
        require_tool(tool)
    if os.geteuid() != 0:
        pytest.fail("this test starts the runner as uid 65534, which needs root to begin with")
    prefix = os.path.realpath(sys.base_prefix)
    for path in (os.path.realpath(os.getcwd()), os.path.dirname(os.path.realpath(__file__))):
        if _blocker(path):
            pytest.fail(f"{path} is not reachable for other users ({_blocker(path)}): cannot run as nobody")
    setup = []
    blocker = _blocker(prefix)
    if blocker:
        setup = [f"mount --bind {prefix} {stash}", f"mount -t tmpfs -o mode=755 tmpfs {blocker}",
                 f"mkdir -p {prefix}", f"mount --bind {stash} {prefix}"]
    script = " && ".join([*setup, f'exec setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups -- "$@"'])
    if no_userns:
        return [sys.executable, "-c", NO_USERNS, "sh", "-c", script, "sh", *argv]
    return ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]


@pytest.fixture
def workspace():
    """A folder uid 65534 owns (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="osmo-rootless-", dir="/tmp"))
    (root / "stash").mkdir()
    for folder in (root, root / "stash"):
        os.chown(folder, NOBODY, NOBODY)
        folder.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _submit_as_nobody(osmo: Osmo, spec: Path, stash: Path, timeout: float = 180,
                      no_userns: bool = False) -> subprocess.CompletedProcess:
    argv = _nobody_argv([sys.executable, "-m", "osmo_store.cli.main", "workflow", "submit", str(spec), "--wait"],
                        str(stash), no_userns)
    env = dict(osmo.env, HOME=str(osmo.root))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=os.getcwd())


def _run_as_nobody(osmo: Osmo, workspace: Path, doc: dict, no_userns: bool = False) -> tuple[dict, str]:
    """Submit the workflow ``doc`` as nobody and wait; its ``query`` and its logs."""
    name = doc["workflow"]["name"]
    spec = workspace / f"{name}.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    spec.chmod(0o644)
    done = _submit_as_nobody(osmo, spec, workspace / "stash", no_userns=no_userns)
    assert done.returncode == 0, f"submit as nobody failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return osmo.query(f"{name}-1"), osmo.logs(f"{name}-1")


def _osmo(workspace: Path, isolation: str, **pool) -> Osmo:
    osmo = Osmo(workspace / "osmo", OSMO_ISOLATION=isolation)
    osmo.pool(grace_period="1s", **pool)
    os.chown(osmo.root, NOBODY, NOBODY)
    os.chown(osmo.env["OSMO_POOL_CONFIG"], NOBODY, NOBODY)
    return osmo


def test_unprivileged_user_tasks_get_their_own_view_and_address(workspace):
    osmo = _osmo(workspace, "namespaces")
    tag = uuid.uuid4().hex[:8]
    script = f"""set -e
[ "$(hostname)" = "$ME" ] && echo "hostname ok: $ME"
test -z "$OSMO_RUN_USERNS_PID"
test "$(ls /proc | grep -c '^[0-9]')" -lt 10  # its own PID namespace
mkdir -p /tmp/www && hostname > /tmp/www/name.txt && touch /tmp/private-{tag}
cd /tmp/www && python3 -m http.server 8000 >/dev/null 2>&1 &
until curl -sf http://$PEER:8000/name.txt > {{{{output}}}}/peer.txt; do sleep 0.2; done
cat /etc/osmo-test-{tag}.conf /tmp/conf-{tag}.txt /osmo-new-{tag}/x.txt > {{{{output}}}}/files.txt
ls /osmo/data > {{{{output}}}}/data-view.txt
ls /tmp > {{{{output}}}}/tmp-view.txt
cat /proc/self/uid_map > {{{{output}}}}/uid-map.txt
echo "peer says $(cat {{{{output}}}}/peer.txt)"
"""

    def task(name: str, peer: str, tail: str) -> dict:
        return {"name": name, "image": "u", "command": ["bash", "/tmp/run.sh"],
                "environment": {"ME": name, "PEER": "{{host:%s}}" % peer},
                "files": [{"path": "/tmp/run.sh", "contents": script + tail},
                          {"path": f"/etc/osmo-test-{tag}.conf", "contents": f"etc file of {name}\n"},
                          {"path": f"/tmp/conf-{tag}.txt", "contents": f"tmp file of {name}\n"},
                          {"path": f"/osmo-new-{tag}/x.txt", "contents": f"new folder of {name}\n"}]}

    lead = dict(task("alpha", "beta", "sleep 1\n"), lead=True)
    beta = task("beta", "alpha", "sleep 300\n")
    doc = {"workflow": {"name": "pods", "groups": [{"name": "pair", "tasks": [lead, beta]}]}}
    info, logs = _run_as_nobody(osmo, workspace, doc)
    assert info["status"] == "COMPLETED", logs
    assert info["isolation"].startswith("namespaces") and f"uid {NOBODY}" in info["isolation"], info["isolation"]
    tasks = tasks_of(info)
    hosts = {name: task["host"] for name, task in tasks.items()}
    assert hosts["alpha"] != hosts["beta"] and all(h.startswith("10.213.") for h in hosts.values())
    assert "alpha | hostname ok: alpha" in logs and "beta | hostname ok: beta" in logs
    assert "alpha | peer says beta" in logs and "beta | peer says alpha" in logs  # both listened on :8000
    for name in ("alpha", "beta"):
        out = Path(tasks[name]["attempts"][0]["run_dir"]) / "data" / "output"
        assert (out / "files.txt").read_text() == f"etc file of {name}\ntmp file of {name}\nnew folder of {name}\n"
        assert (out / "data-view.txt").read_text().split() == ["output"]
        assert sorted((out / "tmp-view.txt").read_text().split()) == [f"conf-{tag}.txt", f"private-{tag}",
                                                                     "run.sh", "www"]  # its own /tmp
        assert (out / "uid-map.txt").read_text().split() == ["0", str(NOBODY), "1"]  # root inside = nobody
        owners = {p.name: (p.stat().st_uid, p.stat().st_gid) for p in out.iterdir()}
        assert owners and set(owners.values()) == {(NOBODY, NOBODY)}, owners
        assert not any(p.stat().st_uid == 0 for p in Path(tasks[name]["attempts"][0]["run_dir"]).rglob("*"))
    # the workflow's outputs reached the store (the sidecar, also uid 65534, read and uploaded them)
    assert any(p.stat().st_uid == NOBODY for p in (osmo.root / "store").rglob("*"))
    # nothing reached the host's /etc, /tmp or /
    assert not Path(f"/etc/osmo-test-{tag}.conf").exists() and not Path(f"/osmo-new-{tag}").exists()
    assert not Path(f"/tmp/private-{tag}").exists() and not Path(f"/tmp/conf-{tag}.txt").exists()
    assert tasks["beta"]["reason"] == "stopped when the lead task 'alpha' ended"
    assert "plain host processes" not in logs and "mount proc" not in logs
    assert osmo.processes_left() == []


def test_unprivileged_user_host_network_tasks_are_still_isolated(workspace):
    osmo = _osmo(workspace, "namespaces", network="host")
    tag = uuid.uuid4().hex[:8]
    script = (f"[ \"$(hostname)\" = solo ] && touch /tmp/private-{tag} && ls /tmp > {{{{output}}}}/tmp-view.txt && "
              f"cat /proc/self/uid_map > {{{{output}}}}/uid-map.txt && echo host is {{{{host:solo}}}}")
    doc = {"workflow": {"name": "hostnet", "groups": [{"name": "one", "tasks": [
        {"name": "solo", "image": "u", "command": ["sh", "-c", script]}]}]}}
    info, logs = _run_as_nobody(osmo, workspace, doc)
    assert info["status"] == "COMPLETED", logs
    assert "solo | host is 127.0.0.1" in logs  # the host's network
    out = Path(tasks_of(info)["solo"]["attempts"][0]["run_dir"]) / "data" / "output"
    assert (out / "tmp-view.txt").read_text().split() == [f"private-{tag}"]
    assert (out / "uid-map.txt").read_text().split() == ["0", str(NOBODY), "1"]
    assert {p.stat().st_uid for p in out.iterdir()} == {NOBODY}
    assert not Path(f"/tmp/private-{tag}").exists()
    assert osmo.processes_left() == []


def test_unprivileged_user_without_user_namespaces_gets_plain_processes(workspace):
    osmo = _osmo(workspace, "auto", lead_head_start=0)
    tag = uuid.uuid4().hex[:8]
    doc = {"workflow": {"name": "plain", "groups": [{"name": "pair", "tasks": [
        {"name": "server", "lead": True, "image": "u",
         "command": ["sh", "-c", f"echo peer is {{{{host:client}}}}; id -u > {{{{output}}}}/uid.txt; "
                                 f"touch /tmp/shared-{tag}"]},
        {"name": "client", "image": "u", "command": ["sh", "-c", "echo server is {{host:server}}; sleep 300"]}]}]}}
    try:
        info, logs = _run_as_nobody(osmo, workspace, doc, no_userns=True)
        assert info["status"] == "COMPLETED", logs
        assert info["isolation"].startswith("plain host processes (not running as root, and unprivileged user "
                                            "namespaces do not work here"), info["isolation"]
        assert "server | peer is 127.0.0.1" in logs and "client | server is 127.0.0.1" in logs
        assert osmo.logs("plain-1", "server").count("tasks run as plain host processes") == 1
        out = Path(tasks_of(info)["server"]["attempts"][0]["run_dir"]) / "data" / "output"
        assert (out / "uid.txt").read_text().strip() == str(NOBODY)
        assert Path(f"/tmp/shared-{tag}").exists()  # a plain process shares the host's /tmp
        assert osmo.processes_left() == []
    finally:
        Path(f"/tmp/shared-{tag}").unlink(missing_ok=True)
