"""``ExecSession`` (osmo_run/kube/execstream.py) over real TLS, on a real pseudo-terminal, against a local
websocket server that speaks the exec stream protocol (``v4.channel.k8s.io``) as the API server does: text
typed while the terminal is resized again and again reaches the server whole, the last size arrives, and the
session returns the exit code of the server's Status.

Each resize is two SIGWINCHs (the kernel's, for the terminal's new size, and the one ``Pty.resize`` sends) that
interrupt the main thread's read while the stdin thread writes the same TLS connection. Before
``osmo_run/kube/sharedsocket.py`` such a read came back empty and the session ended early ("the connection to
pod ... ended before the command did"), within a few rounds. The real node's test of a terminal is in
tests/kube/test_node_interactive.py."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import select
import socket
import ssl
import sys
import threading
import time

from websocket import ABNF
from websocket._abnf import frame_buffer

from kube.test_node_interactive import Pty
from servers.kube import _write_pki

STDIN, STDOUT, STATUS, RESIZE = 0, 1, 3, 4
PROTOCOL = "v4.channel.k8s.io"
EXIT_7 = {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
          "details": {"causes": [{"reason": "ExitCode", "message": "7"}]}}
ROUNDS = 150
# ExecSession in a child Python on the terminal, as interactive.exec_in_pod runs it after the upgrade
CLIENT = """
import ssl, sys, websocket
from osmo_run.kube.execstream import ExecSession, exit_status
from osmo_run.kube.terminal import Terminal
ws = websocket.create_connection(sys.argv[1], subprotocols=[sys.argv[3]],
                                 sslopt={"cert_reqs": ssl.CERT_REQUIRED, "ca_certs": sys.argv[2]})
terminal = Terminal(raw=True)
with terminal:
    status = ExecSession(ws, ws.subprotocol or "", terminal, True, True).run()
terminal.close()
if status is None:
    print("osmo: error: the connection ended before the command did", file=sys.stderr)
    sys.exit(99)
sys.exit(exit_status(status)[0])
"""


class ExecServer:
    """One exec on 127.0.0.1 over TLS: says ``ready``, echoes stdin to stdout, records stdin and the sizes,
    and ends with a Status of exit code 7 once stdin holds ``exit\\r``. One thread does all its reads and
    writes."""

    def __init__(self, cert: str, key: str) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"wss://127.0.0.1:{self.listener.getsockname()[1]}/exec"
        self.stdin = bytearray()
        self.sizes: list[dict] = []
        self.error: str | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            self.listener.settimeout(60)
            conn, _ = self.listener.accept()
            with self.context.wrap_socket(conn, server_side=True) as tls:
                tls.settimeout(60)
                self._upgrade(tls)
                self._pump(tls)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.listener.close()

    @staticmethod
    def _upgrade(tls: ssl.SSLSocket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = tls.recv(4096)
            if not chunk:
                raise ConnectionError("the client left during the upgrade")
            request += chunk
        headers = dict(line.split(": ", 1) for line in request.decode().split("\r\n")[1:] if ": " in line)
        key = {name.lower(): value for name, value in headers.items()}["sec-websocket-key"]
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
        tls.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: " + accept + b"\r\nSec-WebSocket-Protocol: " + PROTOCOL.encode()
                    + b"\r\n\r\n")

    def _pump(self, tls: ssl.SSLSocket) -> None:
        def send(channel: int, data: bytes, opcode: int = ABNF.OPCODE_BINARY) -> None:
            tls.sendall(ABNF(1, 0, 0, 0, opcode, 0, bytes([channel]) + data).format())

        def recv(size: int) -> bytes:
            data = tls.recv(size)
            if not data:
                raise ConnectionError("the client closed the connection before the Status")
            return data

        frames = frame_buffer(recv, True)
        send(STDOUT, b"ready\r\n")
        while b"exit\r" not in self.stdin:
            frame = frames.recv_frame()
            if frame.opcode == ABNF.OPCODE_CLOSE:
                raise ConnectionError("the client sent a close frame before the Status")
            channel, data = frame.data[0], frame.data[1:]
            if channel == STDIN:
                self.stdin += data
                send(STDOUT, data)
            elif channel == RESIZE:
                self.sizes.append(json.loads(data))
        send(STATUS, json.dumps(EXIT_7).encode())
        tls.sendall(ABNF(1, 0, 0, 0, ABNF.OPCODE_CLOSE, 0, b"\x03\xe8").format())


def _drain(term: Pty) -> bool:
    """Reads what the terminal shows (the echo), so that the session never waits to write it; False once the
    session has ended (the terminal is closed)."""
    while select.select([term.fd], [], [], 0)[0]:
        try:
            term.seen += os.read(term.fd, 65536)
        except OSError:  # EIO: no one has the terminal open any more
            return False
    return True


def test_text_typed_while_the_terminal_is_resized_again_and_again_reaches_the_server_and_the_exit_code_returns(
        tmp_path):
    _write_pki(str(tmp_path))
    server = ExecServer(str(tmp_path / "apiserver.crt"), str(tmp_path / "apiserver.key"))
    argv = [sys.executable, "-c", CLIENT, server.url, str(tmp_path / "ca.crt"), PROTOCOL]
    typed = b""
    with Pty(argv, dict(os.environ), rows=24, cols=80) as term:
        term.expect(r"ready\r\n", timeout=30)
        for n in range(ROUNDS):
            term.resize(20 + n % 30, 60 + n % 50)
            word = f"k{n} "
            term.send(word)
            typed += word.encode()
            time.sleep(0.01)
            if not _drain(term):
                break
        else:
            term.send("exit\r")
        code = term.exit_code(60)
    server.thread.join(30)
    assert code == 7, f"exit code {code}; the terminal showed: {term.seen[-500:]!r}; the server: {server.error}"
    assert server.error is None
    assert bytes(server.stdin) == typed + b"exit\r"
    assert server.sizes[0] == {"Width": 80, "Height": 24}
    last = ROUNDS - 1
    assert server.sizes[-1] == {"Width": 60 + last % 50, "Height": 20 + last % 30}
