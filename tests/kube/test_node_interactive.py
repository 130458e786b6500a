"""Interactive access on the real one-node Kubernetes (``kube_node``), through the API server as the CLI's
``exec`` and ``port-forward`` use it (``osmo_run/kube/interactive.py``): a command's stdin, stdout, stderr
and exit code; a shell on a real pseudo-terminal (its size, a resize, Ctrl-C, ``exit 7``; a SIGTERM: 143
and the terminal restored); ``running_pod``'s sentences for a waiting and an ended task; TCP forwarded to
a server in the task (several connections at once, 5 MB each way), a port nobody listens on, UDP through
the relay in the sidecar container, and forwarding that follows a RESCHEDULE onto the new pod.

Two workflows, submitted together when the first test needs them: ``kinteract`` (group ``first``: ``srv``
serves a TCP echo port, a token port and a UDP echo port, ``quick`` ends at once; group ``second`` waits
for it), ``kflip`` (a server that exits 42 when told ``quit``: its exit action is RESCHEDULE) and ``kdebug``
(``broken`` reads ``maker``'s output, writes its own and fails twice: ``exec --debug`` copies its attempts).
They are cancelled at the end. ``exec_in_pod`` runs in a child Python (it works on the process's own stdin, stdout
and terminal)."""

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

import pytest
import yaml
from kubernetes.config import kube_config

from helpers.waiting import wait_for
from kube.node_osmo import NodeOsmo
from osmo_run.kube.interactive import PodConnector, PodRef, running_pod
from osmo_run.kube.pool import KubePool
from osmo_run.local.errors import RunnerError
from run.conftest import TERMINAL, tasks_of

pytestmark = pytest.mark.xdist_group("kube-node")

NAMESPACE = "osmo-interactive"
ECHO_PORT, TOKEN_PORT, IDLE_PORT, UDP_PORT = 7000, 7100, 7001, 7200
SERVER = f"""
import os, socket, socketserver, threading, uuid
token = uuid.uuid4().hex
class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                return
            self.request.sendall(data)
class Token(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.sendall(token.encode() + b"\\n")
        if self.request.recv(16).startswith(b"quit"):
            os._exit(42)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer.daemon_threads = True
for port, handler in (({ECHO_PORT}, Echo), ({TOKEN_PORT}, Token)):
    server = socketserver.ThreadingTCPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
def udp_echo():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", {UDP_PORT}))
    while True:
        data, peer = udp.recvfrom(65535)
        udp.sendto(b"echo:" + data, peer)
threading.Thread(target=udp_echo, daemon=True).start()
print("serving", flush=True)
threading.Event().wait()
"""
IMAGE = "ubuntu:24.04"
WORKFLOWS = {
    "interact": {"workflow": {"name": "kinteract", "groups": [
        {"name": "first", "tasks": [
            {"name": "srv", "lead": True, "image": IMAGE, "command": ["python3", "-c", SERVER]},
            {"name": "quick", "image": IMAGE, "command": ["sh", "-c", "echo quick done"]}]},
        {"name": "second", "tasks": [
            {"name": "waiter", "lead": True, "image": IMAGE, "command": ["sh", "-c", "echo never"],
             "inputs": [{"task": "srv"}]}]}]}},
    "flip": {"workflow": {"name": "kflip", "tasks": [
        {"name": "flip", "image": IMAGE, "command": ["python3", "-c", SERVER], "exitActions": {"RESCHEDULE": "42"}}]}},
    # attempt 1 exits 3 (RESCHEDULE), attempt 2 exits 5 (FAILED); each leaves a random result in its output
    "debug": {"workflow": {"name": "kdebug", "groups": [
        {"name": "make", "tasks": [
            {"name": "maker", "lead": True, "image": IMAGE,
             "command": ["sh", "-c", "echo made-input > {{output}}/made.txt"]}]},
        {"name": "fail", "tasks": [
            {"name": "broken", "lead": True, "image": IMAGE, "inputs": [{"task": "maker"}],
             "environment": {"GREETING": "hello-debug"},
             "files": [{"path": "/etc/osmo-debug/note.txt", "contents": "a files entry\n"}],
             "command": ["sh", "-c", "cat /proc/sys/kernel/random/uuid > {{output}}/result.txt; "
                                     "echo \"$GREETING\" > {{output}}/greeting.txt; "
                                     "grep -q '\"attempt\": 1,' /osmo/run/task.json && exit 3; exit 5"],
             "exitActions": {"RESCHEDULE": "3"}}]}]}},
}
SHELL = ["env", "PS1=osmo-prompt$ ", "TERM=dumb", "bash", "--norc", "--noprofile", "-i"]
# exec_in_pod in a child Python, as the CLI calls it (a RunnerError becomes one line and its exit code)
EXEC = """
import json, sys
from osmo_run.kube.interactive import PodRef, exec_in_pod
from osmo_run.kube.pool import parse_pool
from osmo_run.local.errors import RunnerError
a = json.loads(sys.argv[1])
try:
    sys.exit(exec_in_pod(parse_pool(a["pool"]), PodRef(**a["pod"]), a["argv"], a["tty"]))
except RunnerError as exc:
    print(f"osmo: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)
"""


class Interactive:
    def __init__(self, root, node) -> None:
        node.prepare_namespace(NAMESPACE)
        store = node.init_store(f"{node.store_url}/interactive")
        self.env = {**os.environ, "KUBECONFIG": node.kubeconfig}
        self.osmo = NodeOsmo(root, KUBECONFIG=node.kubeconfig, **node.store_env(), OSMO_STORE=store)
        self.osmo.pool(grace_period="2s", reschedule_limit=2,
                       kubernetes={**node.pool_section(NAMESPACE), "store": store, "supervisor": "local"})
        self.pool = KubePool(namespace=NAMESPACE)
        self.ids = {}
        for key, spec in WORKFLOWS.items():
            path = root / f"{key}.yaml"
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            self.ids[key] = self.osmo.submit(path, "--runner", "kubernetes", wait=False)

    def pod(self, key: str, task: str, timeout: float = 180) -> PodRef:
        """The task's running pod, waiting for it."""
        why: list[str] = []

        def found() -> PodRef | None:
            try:
                return running_pod(self.osmo.query(self.ids[key]), task, self.pool)
            except RunnerError as exc:
                why[:] = [str(exc)]
                return None

        try:
            return wait_for(found, timeout, f"task {task} of {self.ids[key]} to run", interval=1.0)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last: {why}; logs:\n{self.osmo.logs(self.ids[key])[-3000:]}") from None

    def exec_argv(self, pod: PodRef, argv: list[str], tty: bool = False) -> list[str]:
        call = {"pool": {"namespace": NAMESPACE}, "argv": argv, "tty": tty,
                "pod": {"namespace": pod.namespace, "name": pod.name, "container": pod.container}}
        return [sys.executable, "-c", EXEC, json.dumps(call)]

    def close(self) -> None:
        for workflow_id in self.ids.values():
            self.osmo("cancel", workflow_id, check=False)
        for workflow_id in self.ids.values():
            self.osmo.wait(workflow_id, 120)


@pytest.fixture(scope="module")
def interactive(tmp_path_factory, kube_node):
    with pytest.MonkeyPatch.context() as patch:  # PodConnector in this process reads the node's kubeconfig
        patch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", kube_node.kubeconfig)
        setup = Interactive(tmp_path_factory.mktemp("node-interactive"), kube_node)
        try:
            yield setup
        finally:
            setup.close()


# ------------------------------------------------------------------------------------------------ exec
def test_exec_passes_stdin_stdout_stderr_bytes_and_the_exit_code(interactive):
    pod = interactive.pod("interact", "srv")
    payload = os.urandom(3 * 2**20) + b"\0\r\n\xff"
    done = subprocess.run(interactive.exec_argv(pod, ["sh", "-c", "cat; printf 'to stderr\\n' >&2; exit 3"]),
                          input=payload, capture_output=True, env=interactive.env, timeout=180)
    assert done.returncode == 3, done.stderr.decode(errors="replace")
    assert len(done.stdout) == len(payload) and done.stdout == payload  # every byte, end of input seen by cat
    assert done.stderr == b"to stderr\n"


def test_exec_without_stdin_and_of_a_missing_command(interactive):
    pod = interactive.pod("interact", "srv")
    done = subprocess.run(interactive.exec_argv(pod, ["cat"]), stdin=subprocess.DEVNULL, capture_output=True,
                          env=interactive.env, timeout=120)
    assert (done.returncode, done.stdout) == (0, b""), done.stderr
    done = subprocess.run(interactive.exec_argv(pod, ["no-such-command", "x"]), stdin=subprocess.DEVNULL,
                          capture_output=True, env=interactive.env, timeout=120)
    assert done.returncode == 127 and b"no-such-command" in done.stderr, done.stderr
    assert len(done.stderr.decode().strip().splitlines()) == 1  # one line, no traceback


class Pty:
    """A child on a real pseudo-terminal of ``rows`` x ``cols``; ``expect`` reads its output."""

    def __init__(self, argv: list[str], env: dict, rows: int, cols: int) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: its size is set before exec_in_pod reads it
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        self.seen = b""
        self.status: int | None = None

    def send(self, text: str) -> None:
        os.write(self.fd, text.encode())

    def expect(self, pattern: str, timeout: float = 30) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern.encode(), self.seen)
            if found:
                self.seen = self.seen[found.end():]
                return found
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise AssertionError(f"no {pattern!r} within {timeout} s; the terminal showed: {self.seen[-2000:]!r}")
            try:
                self.seen += os.read(self.fd, 65536)
            except OSError as exc:  # EIO: the child has closed the terminal
                raise AssertionError(f"the terminal closed before {pattern!r}: {self.seen[-2000:]!r}") from exc

    def __enter__(self) -> "Pty":
        return self

    def __exit__(self, *exc) -> None:
        if self.status is None:  # still running: the test failed
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self.fd)

    def resize(self, rows: int, cols: int) -> None:
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.kill(self.pid, signal.SIGWINCH)

    def exit_code(self, timeout: float = 30) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(status)
                return self.status
            try:  # keep the terminal drained
                if select.select([self.fd], [], [], 0.2)[0]:
                    self.seen += os.read(self.fd, 65536)
            except OSError:
                time.sleep(0.1)
        os.kill(self.pid, signal.SIGKILL)
        raise AssertionError(f"exec_in_pod still running after {timeout} s: {self.seen[-2000:]!r}")


def test_a_shell_on_a_real_terminal_sees_its_size_a_resize_ctrl_c_and_returns_exit_7(interactive):
    pod = interactive.pod("interact", "srv")
    with Pty(interactive.exec_argv(pod, SHELL, tty=True), interactive.env, rows=40, cols=100) as term:
        term.expect(r"osmo-prompt\$ ", timeout=60)
        term.send("stty size\r")
        term.expect(r"\r\n40 100\r\n")
        term.resize(50, 120)
        time.sleep(0.5)
        term.send("stty size\r")
        term.expect(r"\r\n50 120\r\n")
        term.send("sleep 100; echo slept-$((6 * 7))\r")
        time.sleep(1.5)
        started = time.monotonic()
        term.send("\x03")  # Ctrl-C goes to the remote terminal as a byte: it interrupts sleep, not us
        term.expect(r"osmo-prompt\$ ", timeout=20)
        assert time.monotonic() - started < 20 and b"slept-42" not in term.seen
        term.send("echo alive-$((6 * 7))\r")
        term.expect(r"\r\nalive-42\r\n")
        term.send("exit 7\r")
        assert term.exit_code() == 7
        assert termios.tcgetattr(term.fd)[3] & termios.ICANON  # our terminal is out of raw mode again


def test_a_sigterm_during_a_shell_returns_143_with_the_terminal_restored(interactive):
    pod = interactive.pod("interact", "srv")
    with Pty(interactive.exec_argv(pod, SHELL, tty=True), interactive.env, rows=24, cols=80) as term:
        term.expect(r"osmo-prompt\$ ", timeout=60)
        assert not termios.tcgetattr(term.fd)[3] & termios.ICANON  # raw while the shell runs
        os.kill(term.pid, signal.SIGTERM)
        assert term.exit_code() == 143
        assert termios.tcgetattr(term.fd)[3] & termios.ICANON


# ----------------------------------------------------------------------------------------- running_pod
def test_running_pod_says_what_a_waiting_task_waits_for_and_suggests_debug_for_an_ended_one(interactive):
    workflow_id = interactive.ids["interact"]
    interactive.pod("interact", "srv")

    def quick_ended() -> dict | None:
        info = interactive.osmo.query(workflow_id)
        return info if tasks_of(info)["quick"]["status"] in TERMINAL else None

    info = wait_for(quick_ended, 120, "task quick to end", interval=1.0)
    with pytest.raises(RunnerError) as waiting:
        running_pod(info, "waiter", interactive.pool)
    assert "task waiter is not running yet: it is WAITING" in str(waiting.value)
    with pytest.raises(RunnerError) as ended:
        running_pod(info, "quick", interactive.pool)
    assert "task quick has ended (COMPLETED, exit code 0)" in str(ended.value)
    assert f"osmo workflow exec --debug {workflow_id} quick" in str(ended.value)


# --------------------------------------------------------------------------------------------- port-forward
def _connected(connector: PodConnector, port: int, timeout: float = 60) -> socket.socket:
    """A connection once the task's server listens (it starts after the pod runs)."""
    def attempt() -> socket.socket | None:
        try:
            return connector.tcp(port)
        except RunnerError:
            return None

    return wait_for(attempt, timeout, f"a connection to port {port}", interval=1.0)


def _echo_round(sock: socket.socket, size: int) -> tuple[str, str]:
    """Sends ``size`` random bytes while reading the echo; (sha256 sent, sha256 received)."""
    payload = os.urandom(size)
    received = bytearray()

    def sender() -> None:
        sock.sendall(payload)

    thread = threading.Thread(target=sender)
    thread.start()
    sock.settimeout(60)
    while len(received) < size:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        received += chunk
    thread.join()
    return hashlib.sha256(payload).hexdigest(), hashlib.sha256(received).hexdigest()


def test_tcp_port_forward_carries_several_concurrent_connections_5_mb_each_way(interactive):
    workflow_id = interactive.ids["interact"]
    connector = PodConnector(interactive.pool,
                             lambda: running_pod(interactive.osmo.query(workflow_id), "srv", interactive.pool))
    try:
        first = _connected(connector, ECHO_PORT)
        first.sendall(b"hello")
        first.settimeout(30)
        assert first.recv(100) == b"hello"
        first.close()
        socks = [connector.tcp(ECHO_PORT) for _ in range(3)]
        results: list = [None] * len(socks)

        def run(i: int) -> None:
            results[i] = _echo_round(socks[i], 5 * 2**20)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(socks))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        for sent, received in results:
            assert sent == received
        for sock in socks:
            sock.close()
    finally:
        connector.close()


def test_a_port_nobody_listens_on_is_reported_quickly(interactive):
    workflow_id = interactive.ids["interact"]
    pod = interactive.pod("interact", "srv")
    connector = PodConnector(interactive.pool, lambda: pod)
    try:
        _connected(connector, ECHO_PORT).close()  # the task's servers are up
        started = time.monotonic()
        with pytest.raises(RunnerError) as err:
            connector.tcp(IDLE_PORT)
        assert time.monotonic() - started < 5
        assert str(err.value) == f"nothing listens on port {IDLE_PORT} in task srv"
        assert workflow_id in pod.name
    finally:
        connector.close()


def test_udp_goes_through_the_relay_in_the_sidecar_container(interactive):
    pod = interactive.pod("interact", "srv")
    connector = PodConnector(interactive.pool, lambda: pod)
    try:
        _connected(connector, ECHO_PORT).close()  # the task's servers are up
        first, second = connector.udp(UDP_PORT), connector.udp(UDP_PORT)
        for sock in (first, second):
            sock.settimeout(30)
        big = os.urandom(60000)
        for i in range(3):  # datagrams keep their bounds; each socket gets its own replies
            first.send(b"one-%d" % i)
            second.send(big)
            assert first.recv(65535) == b"echo:one-%d" % i
            assert second.recv(65535) == b"echo:" + big
        first.close()
        second.close()
    finally:
        connector.close()


def test_forwarding_follows_a_reschedule_onto_the_new_pod(interactive):
    workflow_id = interactive.ids["flip"]
    pods: list[str] = []

    def find_pod() -> PodRef:
        pod = interactive.pod("flip", "flip")
        pods.append(pod.name)
        return pod

    connector = PodConnector(interactive.pool, find_pod)
    try:
        sock = _connected(connector, TOKEN_PORT, timeout=180)
        sock.settimeout(30)
        token = sock.makefile("rb").readline().strip()
        sock.sendall(b"quit")  # the server exits 42: RESCHEDULE
        sock.close()
        first_pod = pods[-1]

        def other_token() -> bytes | None:
            try:
                again = connector.tcp(TOKEN_PORT)
            except RunnerError:
                return None
            with again:
                again.settimeout(30)
                line = again.makefile("rb").readline().strip()
            return line if line and line != token else None

        second = wait_for(other_token, 180, "the rescheduled task's server", interval=1.0)
        assert len(second) == 32 and second != token
        assert first_pod.endswith("-1") and pods[-1].endswith("-2")
        attempts = tasks_of(interactive.osmo.query(workflow_id))["flip"]["attempts"]
        assert [a["status"] for a in attempts][:1] == ["RESCHEDULED"] and len(attempts) == 2
    finally:
        connector.close()


# ---------------------------------------------------------------------------------- the CLI on the node
class _CliServed:
    """What tests/run/test_interactive.py's ``Forward`` needs: the node runner's CLI and the workflow."""

    def __init__(self, interactive, key: str) -> None:
        self.osmo, self.id = interactive.osmo, interactive.ids[key]

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "osmo_store.cli.main", "workflow", *args]


def test_the_cli_execs_forwards_and_rsyncs_on_the_node(interactive, tmp_path):
    from run.test_interactive import Forward

    interactive.pod("interact", "srv")
    workflow_id = interactive.ids["interact"]
    osmo = interactive.osmo
    done = osmo("exec", workflow_id, "srv", "--", "sh", "-c", "hostname; echo $0; exit 4", check=False)
    assert done.code == 4 and done.out.split()[0].startswith("srv"), done.err
    group = osmo("exec", workflow_id, "--group", "first", "--", "echo", "hi", check=False)
    assert group.code == 0 and group.out.splitlines() == ["srv | hi"], group.err
    assert "quick | (not run: task quick has ended (COMPLETED" in group.err
    forward = Forward(_CliServed(interactive, "interact"), "srv", f"{ECHO_PORT}:0", f"{UDP_PORT}:0/udp")
    try:
        with socket.create_connection(("127.0.0.1", forward.local[(ECHO_PORT, "tcp")]), timeout=30) as conn:
            conn.sendall(b"through the cli\n")
            assert conn.recv(100) == b"through the cli\n"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.settimeout(30)
            udp.sendto(b"ping", ("127.0.0.1", forward.local[(UDP_PORT, "udp")]))
            assert udp.recvfrom(100)[0] == b"echo:ping"
    finally:
        forward.stop()
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    payload = os.urandom(2 << 20)
    (source / "sub" / "big.bin").write_bytes(payload)
    (source / "a.txt").write_text("to the pod\n")
    pushed = osmo("rsync", workflow_id, "srv", f"{source}/", "task:/tmp/synced/", check=False)
    assert pushed.code == 0, pushed.err
    back = tmp_path / "back"
    pulled = osmo("rsync", workflow_id, "srv", "task:/tmp/synced/", f"{back}/", check=False)
    assert pulled.code == 0, pulled.err
    assert (back / "a.txt").read_text() == "to the pod\n" and (back / "sub" / "big.bin").read_bytes() == payload
    missing = osmo("rsync", workflow_id, "srv", "task:/tmp/no-such-folder/", f"{back}/", check=False)
    assert missing.code == 23


# ------------------------------------------------------------------------------------- exec --debug
DEBUG_SHELL_CHECK = ('echo "env=$GREETING"; echo "file=$(cat /etc/osmo-debug/note.txt)"; '
                     'echo "input=$(cat /osmo/data/input/0/made.txt)"; '
                     'echo "output=$(cat /osmo/data/output/result.txt)"; '
                     'echo "greeting=$(cat /osmo/data/output/greeting.txt)"; '
                     'grep -o \'"attempt": [0-9]*\' /osmo/run/task.json; exit 6')


def _debug_ended(interactive) -> str:
    workflow_id = interactive.ids["debug"]
    info = interactive.osmo.wait(workflow_id, 240)
    broken = tasks_of(info)["broken"]
    assert [a["status"] for a in broken["attempts"]][:1] == ["RESCHEDULED"] and len(broken["attempts"]) == 2, broken
    return workflow_id


def _debug_leftovers() -> list[str]:
    from kubernetes import client

    from osmo_run.kube.supervisor import api_client

    api = api_client(None)
    try:
        core = client.CoreV1Api(api)
        pods = core.list_namespaced_pod(NAMESPACE, label_selector="osmo.debug").items
        return ([f"pod {p.metadata.name}" for p in pods]
                + [f"secret {s.metadata.name}"
                   for s in core.list_namespaced_secret(NAMESPACE, label_selector="osmo.debug").items])
    finally:
        api.close()


def _no_debug_copies_left() -> None:
    wait_for(lambda: not _debug_leftovers() or None, 60, "the debug copies to be gone", interval=1.0)


def _debug_shell(workflow_id: str) -> list[str]:
    """The CLI opening SHELL in a debug copy of task broken."""
    return [sys.executable, "-m", "osmo_store.cli.main", "workflow", "exec", "--debug", workflow_id, "broken",
            "--", *SHELL]


def _values(out: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def test_exec_debug_copies_an_ended_attempt_with_its_env_files_inputs_and_outputs(interactive):
    workflow_id = _debug_ended(interactive)
    osmo = interactive.osmo
    last = osmo("exec", "--debug", workflow_id, "broken", "--", "sh", "-c", DEBUG_SHELL_CHECK, check=False)
    assert last.code == 6, last.err
    seen = _values(last.out)
    assert (seen["env"], seen["file"], seen["input"], seen["greeting"]) == (
        "hello-debug", "a files entry", "made-input", "hello-debug"), last.out
    assert re.fullmatch(r"[0-9a-f-]{36}", seen["output"]) and '"attempt": 2' in last.out, last.out
    assert "deleted when this command exits" in last.err
    first = osmo("exec", "--debug", "--retry", "1", workflow_id, "broken", "--", "sh", "-c", DEBUG_SHELL_CHECK,
                 check=False)
    assert first.code == 6 and '"attempt": 1' in first.out, first.err
    assert re.fullmatch(r"[0-9a-f-]{36}", _values(first.out)["output"])
    assert _values(first.out)["output"] != seen["output"]  # each attempt's own uploaded output
    missing = osmo("exec", "--debug", "--retry", "9", workflow_id, "broken", check=False)
    assert missing.code == 3 and "task broken has no attempt 9 (it has 1, 2)" in missing.err, missing.err
    _no_debug_copies_left()


def test_exec_debug_shell_on_a_terminal_survives_ctrl_c_and_its_copy_is_deleted(interactive):
    workflow_id = _debug_ended(interactive)
    with Pty(_debug_shell(workflow_id), interactive.osmo.env, rows=30, cols=90) as term:
        term.expect(r"osmo-prompt\$ ", timeout=120)
        assert [x for x in _debug_leftovers() if x.startswith("pod ")], "no debug pod while the shell runs"
        term.send("sleep 100; echo slept-$((6 * 7))\r")
        time.sleep(1.5)
        term.send("\x03")
        term.expect(r"osmo-prompt\$ ", timeout=20)
        assert b"slept-42" not in term.seen
        term.send("echo $GREETING-$((6 * 7)); cat /osmo/data/input/0/made.txt\r")
        term.expect(r"\r\nhello-debug-42\r\nmade-input\r\n")
        term.send("exit 9\r")
        assert term.exit_code(60) == 9
    _no_debug_copies_left()


def test_a_sigterm_during_a_debug_shell_returns_143_and_deletes_the_copy(interactive):
    workflow_id = _debug_ended(interactive)
    with Pty(_debug_shell(workflow_id), interactive.osmo.env, rows=24, cols=80) as term:
        term.expect(r"osmo-prompt\$ ", timeout=120)
        os.kill(term.pid, signal.SIGTERM)
        assert term.exit_code(60) == 143
    _no_debug_copies_left()


def test_exec_debug_of_a_running_task_points_at_exec(interactive):
    interactive.pod("interact", "srv")
    workflow_id = interactive.ids["interact"]
    done = interactive.osmo("exec", "--debug", workflow_id, "srv", check=False)
    assert done.code == 4, done.err
    assert f"use 'osmo workflow exec {workflow_id} srv' to enter it" in done.err
    assert len(done.err.strip().splitlines()) == 1
