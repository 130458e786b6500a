"""``exec``, ``port-forward`` and ``exec --debug`` for tasks in containers on the real Podman (as root, the
group's own network): the command runs in the task's container (its image, environment, working folder),
a shell gets the terminal's size, TCP and UDP reach the container's own loopback through its network
namespace, and a debug copy of an ended task is a container of the same image that is removed after."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Osmo, tasks_of, write_spec
from .test_interactive import SERVER, Forward, Terminal, _greeting, _set_size

SPEC = """
workflow:
  name: boxed
  tasks:
  - name: srv
    image: ubuntu:24.04
    environment: {ME: srv, GREETING: hello-box}
    command: [python3, /tmp/serve.py, "7000", "7001"]
    files: [{path: /tmp/serve.py, contents: %s}]
"""


class _Served:
    def __init__(self, osmo: Osmo, workflow_id: str) -> None:
        self.osmo, self.id = osmo, workflow_id

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "osmo_store.cli.main", "workflow", *args]

    def run(self, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.osmo.env, input=stdin, capture_output=True, text=True,
                              timeout=120)


@pytest.fixture(scope="module")
def boxed(tmp_path_factory, podman_store):
    import json

    folder = tmp_path_factory.mktemp("boxed")
    osmo = Osmo(folder / "osmo", OSMO_ENGINE="podman", **podman_store.env)
    osmo.pool(grace_period="1s", lead_head_start="0.2s")
    workflow_id = osmo.submit(write_spec(folder, SPEC % json.dumps(SERVER)), wait=False)
    osmo.wait_log(workflow_id, "serving", timeout=120)
    yield _Served(osmo, workflow_id)
    osmo("cancel", workflow_id, check=False)
    podman_store.check_empty(osmo)


def test_exec_runs_in_the_container(boxed):
    done = boxed.run("exec", boxed.id, "srv", "--", "sh", "-c",
                     "echo $GREETING; pwd; hostname; cat; test -e /usr/bin/podman || echo no-podman-here; exit 4",
                     stdin="in\n")
    assert done.returncode == 4, done.stderr
    assert done.stdout.split() == ["hello-box", "/osmo/work", "srv", "in", "no-podman-here"]


def test_a_shell_in_the_container_gets_the_terminal(boxed):
    with Terminal(boxed.argv("exec", boxed.id, "srv"), boxed.osmo.env) as term:
        _set_size(term.fd, 27, 99)
        term.write("stty size; echo MARK-$((3+4))\n")
        assert "27 99" in term.read_until("MARK-7", timeout=60)
        term.write("exit 5\n")
        assert term.exit_code() == 5


def test_port_forward_reaches_the_containers_loopback(boxed):
    forward = Forward(boxed, "srv", "7000:0", "7001:0/udp")
    try:
        _, greeting = _greeting(forward.local[(7000, "tcp")])
        assert greeting.startswith("srv ")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.sendto(b"ping", ("127.0.0.1", forward.local[(7001, "udp")]))
            assert udp.recvfrom(100)[0] == b"srv:ping"
    finally:
        forward.stop()


def test_debug_copy_of_an_ended_container_task(tmp_path, podman_store):
    osmo = Osmo(tmp_path / "osmo", OSMO_ENGINE="podman", **podman_store.env)
    osmo.pool(grace_period="1s")
    spec = write_spec(tmp_path, """
        workflow:
          name: boxdbg
          tasks:
          - name: t
            image: ubuntu:24.04
            environment: {VAR: in-the-box}
            files: [{path: /etc/box.conf, contents: "box conf"}]
            command: [sh, -c, "hostname > {{output}}/name.txt; exit 3"]
        """)
    workflow_id = osmo.submit(spec)
    assert osmo.query(workflow_id)["status"] == "FAILED"
    done = osmo("exec", "--debug", workflow_id, "t", "--", "sh", "-c",
                "cat /osmo/data/output/name.txt /etc/box.conf; echo; echo $VAR; exit 8", check=False)
    assert done.code == 8, done.err
    assert done.out.split() == ["t", "box", "conf", "in-the-box"]
    podman_store.check_empty(osmo)  # the copy's container is gone
    run_dir = Path(tasks_of(osmo.query(workflow_id))["t"]["attempts"][0]["run_dir"])
    assert (run_dir / "data" / "output" / "name.txt").read_text().strip() == "t"
    assert osmo.processes_left() == []
