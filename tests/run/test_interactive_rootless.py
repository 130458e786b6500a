"""``exec`` and ``port-forward`` when the whole runner runs as an unprivileged user (uid 65534, namespaces
mode inside a user namespace; see test_rootless_isolation.py for how the test gets there): the command
runs in the task's user, mount, UTS, PID and network namespaces as the task's root (the invoking user on
the host), a forwarded port reaches the task's own network, and ``exec --debug`` of the ended task opens
its copy as that user too."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from .test_rootless_isolation import NOBODY, _nobody_argv, _osmo, workspace  # noqa: F401  (the fixture)

pytestmark = pytest.mark.xdist_group("interactive")

SERVE = ("import socket\ns = socket.socket()\ns.bind(('127.0.0.1', 7000))\ns.listen(4)\nprint('serving', flush=True)\n"
         "while True:\n    c = s.accept()[0]\n    c.sendall(b'hi from ' + socket.gethostname().encode())\n    c.close()\n")


def test_exec_and_port_forward_as_an_unprivileged_user(workspace):  # noqa: F811
    osmo = _osmo(workspace, "namespaces")
    spec = workspace / "rootless.yaml"
    spec.write_text("workflow:\n  name: rl\n  tasks:\n  - name: solo\n    image: u\n    command: [python3, /tmp/s.py]\n"
                    "    files: [{path: /tmp/s.py, contents: " + json.dumps(SERVE) + "}]\n")
    spec.chmod(0o644)
    env = dict(osmo.env, HOME=str(osmo.root))
    stash = str(workspace / "stash")

    def as_nobody(*args: str) -> list[str]:
        return _nobody_argv([sys.executable, "-m", "osmo_store.cli.main", "workflow", *args], stash)

    submitted = subprocess.run(as_nobody("submit", str(spec)), env=env, capture_output=True, text=True, timeout=120)
    assert submitted.returncode == 0, submitted.stderr
    try:
        osmo.wait_log("rl-1", "serving", timeout=60)
        done = subprocess.run(as_nobody("exec", "rl-1", "solo", "--", "sh", "-c",
                                        "id -u; hostname; cat /proc/self/uid_map; exit 3"),
                              env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 3, done.stderr
        assert done.stdout.split() == ["0", "solo", "0", str(NOBODY), "1"]  # the task's root = nobody
        forward = subprocess.Popen(as_nobody("port-forward", "rl-1", "solo", "7000:0"), env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = forward.stdout.readline()
            assert line.startswith("forwarding 127.0.0.1:"), forward.stderr.read() if not line else line
            port = int(line.split()[1].rsplit(":", 1)[1])
            with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
                assert conn.recv(100) == b"hi from solo"
        finally:
            forward.terminate()
            forward.wait(timeout=30)
    finally:
        osmo("cancel", "rl-1", check=False)
    assert osmo.processes_left() == []
    # the ended task: a debug copy of its view, as that user too
    debug = subprocess.run(as_nobody("exec", "--debug", "rl-1", "solo", "--", "sh", "-c",
                                     "id -u; hostname; test -f /tmp/s.py && echo has-files; exit 6"),
                           env=env, capture_output=True, text=True, timeout=120)
    assert debug.returncode == 6, debug.stderr
    assert debug.stdout.split() == ["0", "solo", "has-files"]
    assert osmo.processes_left() == []
