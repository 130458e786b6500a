"""``osmo workflow exec`` and ``port-forward`` on the local runner's host-process modes (namespaces as root,
plain processes), on real workflows: a command's stdin, stdout, stderr and exit code; a shell on a real
terminal (its size, a resize, Ctrl-C, its exit code); ``--group``; the errors a person acts on; TCP and UDP
forwarding of several ports, with large concurrent transfers; two tasks on the same port; a port nobody
listens on; a local port in use; forwarding across a RESCHEDULE, and its end when the task ends.

One workflow per mode runs for the whole module (``served``): two tasks that serve TCP and UDP echo, and
a second group that waits for the first."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from helpers.waiting import wait_for

from .conftest import Osmo, require_namespace_tools, tasks_of

pytestmark = pytest.mark.xdist_group("interactive")

SERVER = """\
import os, socket, sys, threading, time, uuid
token, name = uuid.uuid4().hex[:8], os.environ["ME"]
tcp_port, udp_port = int(sys.argv[1]), int(sys.argv[2])

def echo(conn):
    conn.sendall(f"{name} {token}\\n".encode())
    while data := conn.recv(65536):
        conn.sendall(data)
    conn.close()

def tcp():
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", tcp_port))
    server.listen(16)
    while True:
        threading.Thread(target=echo, args=(server.accept()[0],), daemon=True).start()

def udp():
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", udp_port))
    while True:
        data, peer = server.recvfrom(65536)
        server.sendto(name.encode() + b":" + data, peer)

for target in (tcp, udp):
    threading.Thread(target=target, daemon=True).start()
time.sleep(0.3)
print("serving", token, flush=True)
while not os.path.exists("quit"):  # in the attempt's working folder: `exec ... touch quit` ends it
    time.sleep(0.2)
sys.exit(42)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spec(folder: Path, ports: dict[str, tuple[int, int]]) -> Path:
    def task(name: str, lead: bool) -> str:
        tcp, udp = ports[name]
        return (f"    - name: {name}\n      lead: {str(lead).lower()}\n      image: u\n"
                f"      environment: {{ME: {name}, GREETING: hello-{name}}}\n"
                f"      command: [python3, /tmp/serve.py, '{tcp}', '{udp}']\n"
                f"      exitActions: {{RESCHEDULE: '42'}}\n"
                f"      files: [{{path: /tmp/serve.py, contents: {json.dumps(SERVER)}}}]\n")
    text = ("workflow:\n  name: served\n  groups:\n  - name: pair\n    tasks:\n" + task("srv", True)
            + task("other", False)
            + "  - name: later\n    tasks:\n    - {name: after, image: u, command: ['true'], inputs: [{task: srv}]}\n")
    path = folder / "served.yaml"
    path.write_text(text)
    return path


class Served:
    """The module's running workflow in one mode: its runner, id and each task's (TCP, UDP) port."""

    def __init__(self, osmo: Osmo, workflow_id: str, ports: dict[str, tuple[int, int]], mode: str) -> None:
        self.osmo, self.id, self.ports, self.mode = osmo, workflow_id, ports, mode

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "osmo_store.cli.main", "workflow", *args]

    def run(self, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), env=self.osmo.env, input=stdin, capture_output=True, text=True,
                              timeout=timeout)


@pytest.fixture(scope="module", params=["namespaces", "none"])
def served(request, tmp_path_factory):
    if request.param == "namespaces":
        require_namespace_tools()
    folder = tmp_path_factory.mktemp(f"served-{request.param}")
    osmo = Osmo(folder / "osmo", OSMO_ISOLATION=request.param)
    osmo.pool(grace_period="1s", lead_head_start="0.2s")
    if request.param == "namespaces":  # each task has its network: the same ports in both
        ports = {"srv": (7000, 7001), "other": (7000, 7001)}
    else:  # the host's network: ports of their own
        ports = {name: (_free_port(), _free_port()) for name in ("srv", "other")}
    workflow_id = osmo.submit(_spec(folder, ports), wait=False)
    for name in ports:
        osmo.wait_log(workflow_id, "serving", task=name, timeout=60)
    yield Served(osmo, workflow_id, ports, request.param)
    osmo("cancel", workflow_id, check=False)
    for line in osmo.processes():
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass


# -- exec ---------------------------------------------------------------------------------------------
def test_exec_passes_stdin_stdout_stderr_and_the_exit_code_in_the_tasks_view(served):
    script = "echo $GREETING; pwd; cat; echo to-stderr >&2; hostname > /tmp/mark-$$; echo $$; exit 5"
    done = served.run("exec", served.id, "srv", "--", "sh", "-c", script, stdin="from the caller\n")
    assert done.returncode == 5, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "hello-srv" and lines[2] == "from the caller" and done.stderr == "to-stderr\n"
    work = Path(tasks_of(served.osmo.query(served.id))["srv"]["attempts"][-1]["run_dir"]) / "work"
    if served.mode == "namespaces":
        assert lines[1] == "/osmo/work"
        assert not Path(f"/tmp/mark-{lines[3]}").exists()  # the task's private /tmp, not the host's
        names = served.run("exec", served.id, "srv", "--", "sh", "-c", "hostname; ls /proc | grep -c '^[0-9]'")
        hostname, processes = names.stdout.split()
        assert hostname == "srv" and int(processes) < 12  # the task's own UTS and PID namespaces
    else:
        assert lines[1] == str(work)


def test_a_missing_command_gives_127(served):
    missing = served.run("exec", served.id, "srv", "--", "no-such-command-here")
    assert missing.returncode == 127 and "no-such-command-here" in missing.stderr


def test_exec_group_prints_every_tasks_lines_under_its_name_and_the_highest_exit_code(served):
    done = served.run("exec", served.id, "--group", "pair", "--", "sh", "-c",
                      'echo "I am $ME"; echo second; [ "$ME" = other ] && exit 9; exit 0')
    assert done.returncode == 9
    lines = sorted(done.stdout.splitlines())
    assert lines == ["other | I am other", "other | second", "srv | I am srv", "srv | second"]
    assert "other | (exit code 9)" in done.stderr


def test_exec_errors_say_what_to_do(served):
    unknown = served.run("exec", served.id, "svr", "--", "true")
    assert unknown.returncode == 3 and "did you mean 'srv'" in unknown.stderr
    waiting = served.run("exec", served.id, "after", "--", "true")
    assert waiting.returncode == 4
    assert "task after is not running yet: it is WAITING (its group waits for the groups upstream" in waiting.stderr
    several = served.run("exec", served.id, "--", "true")
    assert several.returncode == 2 and "several groups" in several.stderr
    no_command = served.run("exec", served.id, "--group", "pair")
    assert no_command.returncode == 2 and "--group needs a command" in no_command.stderr
    assert served.run("exec", "served-99", "srv", "--", "true").returncode == 3


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, text: str, timeout: float = 20) -> str:
    seen = b""
    deadline = time.monotonic() + timeout
    while text.encode() not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{text!r} not seen on the terminal; got {seen[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            seen += chunk
    return seen.decode(errors="replace")


class Terminal:
    """``argv`` on a new pseudo-terminal (``fd`` its master side); ``exit_code`` waits for it. As a context
    manager it kills what is still running at the end."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.execve(argv[0], argv, env)

    def write(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def read_until(self, text: str, timeout: float = 20) -> str:
        return _read_until(self.fd, text, timeout)

    def exit_code(self) -> int:
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        return os.waitstatus_to_exitcode(status)

    def __enter__(self) -> "Terminal":
        return self

    def __exit__(self, *_) -> None:
        if self.pid:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_a_shell_on_a_real_terminal_sees_its_size_resizes_ctrl_c_and_exit_code(served):
    with Terminal(served.argv("exec", served.id, "srv"), served.osmo.env) as term:
        _set_size(term.fd, 33, 101)
        term.write("stty size; echo MARK-$((40+2))\n")
        assert "33 101" in term.read_until("MARK-42")
        _set_size(term.fd, 40, 120)  # the kernel signals SIGWINCH to the terminal's foreground process group
        term.write("stty size; echo MARK-$((50+2))\n")
        assert "40 120" in term.read_until("MARK-52")
        term.write("sleep 100; echo slept\n")
        time.sleep(1.0)
        started = time.monotonic()
        term.write("\x03")  # Ctrl-C ends the sleep, not the shell
        term.write("echo ALIVE-$((60+3))\n")
        out = term.read_until("ALIVE-63")
        assert time.monotonic() - started < 20
        assert re.search(r"(^|\n)slept\r?\n", out) is None, out  # typed (echoed), never printed
        term.write("exit 7\n")
        assert term.exit_code() == 7


# -- port-forward -------------------------------------------------------------------------------------
class Forward:
    """``osmo workflow port-forward`` running; ``local[(port, protocol)]`` is where it listens."""

    def __init__(self, served: Served, task: str, *ports: str) -> None:
        self.proc = subprocess.Popen(served.argv("port-forward", served.id, task, *ports), env=served.osmo.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.local: dict[tuple[int, str], int] = {}
        self.errors: list[str] = []
        threading.Thread(target=lambda: self.errors.extend(self.proc.stderr), daemon=True).start()
        for _ in ports:
            line = self.proc.stdout.readline()
            if not line:
                break
            # forwarding 127.0.0.1:LOCAL -> port N/tcp of task T
            local = int(line.split()[1].rsplit(":", 1)[1])
            remote, protocol = line.split()[4].split("/")
            self.local[(int(remote), protocol)] = local

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)


def _greeting(port: int) -> tuple[socket.socket, str]:
    conn = socket.create_connection(("127.0.0.1", port), timeout=20)
    line = b""
    while not line.endswith(b"\n"):
        chunk = conn.recv(1)
        if not chunk:
            raise AssertionError(f"the connection to {port} closed before the greeting")
        line += chunk
    return conn, line.decode().strip()


def _echo_big(port: int, size: int, results: list) -> None:
    payload = os.urandom(size)
    conn, _ = _greeting(port)
    sender = threading.Thread(target=lambda: (conn.sendall(payload), conn.shutdown(socket.SHUT_WR)))
    sender.start()
    got = hashlib.sha256()
    n = 0
    while chunk := conn.recv(1 << 16):
        got.update(chunk)
        n += len(chunk)
    sender.join()
    conn.close()
    results.append((n, got.hexdigest() == hashlib.sha256(payload).hexdigest()))


def test_tcp_and_udp_ports_of_two_tasks_large_concurrent_transfers(served):
    tcp_srv, udp_srv = served.ports["srv"]
    tcp_other, _ = served.ports["other"]
    srv = Forward(served, "srv", f"{tcp_srv}:0", f"{udp_srv}:0/udp")
    other = Forward(served, "other", f"{tcp_other}:0")
    try:
        assert set(srv.local) == {(tcp_srv, "tcp"), (udp_srv, "udp")}, srv.errors
        _, greeting_srv = _greeting(srv.local[(tcp_srv, "tcp")])
        _, greeting_other = _greeting(other.local[(tcp_other, "tcp")])
        assert greeting_srv.startswith("srv ") and greeting_other.startswith("other ")
        results: list = []
        workers = [threading.Thread(target=_echo_big, args=(srv.local[(tcp_srv, "tcp")], 5 << 20, results))
                   for _ in range(4)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
        assert results == [(5 << 20, True)] * 4
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(10)
            udp.sendto(b"ping", ("127.0.0.1", srv.local[(udp_srv, "udp")]))
            assert udp.recvfrom(100)[0] == b"srv:ping"
    finally:
        assert srv.stop() in (0, 130) and other.stop() in (0, 130)


def test_a_port_nobody_listens_on_is_reported_and_forwarding_goes_on(served):
    tcp_srv, _ = served.ports["srv"]
    idle = 7999 if served.mode == "namespaces" else _free_port()
    forward = Forward(served, "srv", f"{idle}:0", f"{tcp_srv}:0")
    try:
        with socket.create_connection(("127.0.0.1", forward.local[(idle, "tcp")]), timeout=20) as conn:
            assert conn.recv(10) == b""  # closed at once
        wait_for(lambda: any(f"nothing listens on port {idle} in task srv" in e for e in forward.errors), 20,
                 "the port-forward to report the refused connection")
        _, greeting = _greeting(forward.local[(tcp_srv, "tcp")])
        assert greeting.startswith("srv ")
    finally:
        forward.stop()


def test_a_local_port_in_use_fails_the_call_naming_it(served):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = served.run("port-forward", served.id, "srv", f"{served.ports['srv'][0]}:{port}")
    assert done.returncode == 4 and f"cannot listen on 127.0.0.1:{port}/tcp" in done.stderr
    bad = served.run("port-forward", served.id, "srv", "80-70")
    assert bad.returncode == 2 and "bad port range '80-70'" in bad.stderr


@pytest.mark.osmo_late  # it ends the workflow: the module's last test
def test_forwarding_follows_a_reschedule_and_ends_with_the_task(served):
    tcp_srv, _ = served.ports["srv"]
    forward = Forward(served, "srv", f"{tcp_srv}:0")
    port = forward.local[(tcp_srv, "tcp")]
    _, first = _greeting(port)
    served.run("exec", served.id, "srv", "--", "touch", "quit")  # exit 42: RESCHEDULE, a new attempt

    def new_server() -> str | None:
        try:
            _, greeting = _greeting(port)
        except (OSError, AssertionError):
            return None
        return greeting if greeting != first else None

    second = wait_for(new_server, 90, "the rescheduled attempt's server through the same forward")
    assert second.startswith("srv ") and second != first
    attempts = tasks_of(served.osmo.query(served.id))["srv"]["attempts"]
    assert [a["status"] for a in attempts][:1] == ["RESCHEDULED"] and len(attempts) == 2
    served.osmo("cancel", served.id)
    assert forward.proc.wait(timeout=60) == 4
    assert any("task srv has ended (FAILED_CANCELED" in e for e in forward.errors), forward.errors
    ended = served.run("exec", served.id, "srv", "--", "true")
    assert ended.returncode == 4 and f"osmo workflow exec --debug {served.id} srv" in ended.stderr


def test_exec_works_whatever_path_the_task_has(osmo, tmp_path):
    spec = (tmp_path / "nopath.yaml")
    spec.write_text("workflow:\n  name: nopath\n  tasks:\n  - name: t\n    image: u\n"
                    "    environment: {PATH: /nonexistent}\n"
                    "    command: [/bin/sh, -c, 'echo up; exec /bin/sleep 300']\n")
    workflow_id = osmo.submit(spec, wait=False)
    try:
        osmo.wait_log(workflow_id, "t | up")
        done = osmo("exec", workflow_id, "t", "--", "/bin/sh", "-c", "echo $PATH; pwd", check=False)
        assert done.code == 0, done.err
        assert done.out.split() == ["/nonexistent", "/osmo/work"]  # nsenter and env found with ours
    finally:
        osmo("cancel", workflow_id)


def test_address_picks_where_port_forward_listens(served):
    tcp_srv, _ = served.ports["srv"]
    proc = subprocess.Popen(served.argv("port-forward", served.id, "srv", f"{tcp_srv}:0", "--address", "127.0.0.2"),
                            env=served.osmo.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("forwarding 127.0.0.2:"), line or proc.stderr.read()
        port = int(line.split()[1].rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.2", port), timeout=20) as conn:
            assert conn.recv(4) == b"srv "
        with pytest.raises(OSError):  # not on 127.0.0.1
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    bad = served.run("port-forward", served.id, "srv", f"{tcp_srv}:0", "--address", "no-such-host.invalid")
    assert bad.returncode == 2 and "--address no-such-host.invalid" in bad.stderr, bad.stderr
