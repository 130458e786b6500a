"""The byte pump of one ``exec`` through the API server (``pods/exec`` over a websocket; used by
``interactive.exec_in_pod``).

Channels of the Kubernetes stream protocol: 0 stdin, 1 stdout, 2 stderr, 3 the command's end (a
``Status``: ``Success`` or the ``ExitCode`` cause), 4 the terminal's size. ``ExecSession.run`` reads
the frames in the calling thread and writes them, unbuffered, to this process's stdout and stderr
(``write_all``); a second thread sends this process's stdin and the window size after each SIGWINCH. Both
use the same TLS connection, so its socket is shared through ``sharedsocket.share`` (one SSL call at a time).

End of input: the v5 protocol (API servers 1.30 and later) closes the stdin channel. The v4 protocol
cannot, so there stdin goes through a relay: the command runs as ``exec "$@" < FIFO`` (``RELAY_READER``,
a FIFO in the container's /tmp) and a second exec in the same container copies its own stdin into that
FIFO (``RELAY_WRITER``); closing the second exec's websocket is an end of file the command sees. Both
scripts need only ``/bin/sh``, ``mkfifo`` and ``cat``.
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import threading
from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from websocket import ABNF, WebSocket, WebSocketException

from osmo_run.kube.sharedsocket import share
from osmo_run.kube.terminal import STOP, WINCH, Terminal, window_size
from osmo_run.local.errors import CONFLICT, RunnerError

STDIN, STDOUT, STDERR, STATUS, RESIZE = 0, 1, 2, 3, 4
CLOSE_CHANNEL = 255
V5 = "v5.channel.k8s.io"
READ_SIZE = 65536
JOIN_WAIT = 3.0  # seconds to wait for the stdin thread once the command ended

RELAY_READER = 'f=$1; shift; mkfifo -m 600 "$f" || exit 126; exec <"$f"; rm -f "$f"; exec "$@"'
# Not "exec cat" at the end: cat's stdout is the FIFO, and the exec's stdout closing ends its stdin stream
# early on containerd (bytes lost); the shell keeps that stdout open until cat is done.
RELAY_WRITER = ('i=0; while [ ! -p "$1" ]; do i=$((i + 1)); [ "$i" -le 300 ] || exit 1; sleep 0.1; done; '
                'exec 3>"$1" || exit 1; printf R; cat >&3')


def api_reason(exc: Exception) -> str:
    """One line from an API or websocket error (the Status message of a refused upgrade, if any)."""
    text = str(getattr(exc, "body", None) or getattr(exc, "reason", None) or exc)
    found = re.search(r'"message":\s*"((?:[^"\\]|\\.)*)"', text)
    if found:
        text = found[1].replace('\\"', '"')
    return " ".join(text.split())[:300]


def open_exec(base: client.ApiClient, namespace: str, pod: str, container: str, argv: list[str], stdin: bool,
              tty: bool = False):
    """The websocket client of one exec (``kubernetes.stream.ws_client.WSClient``; its ``sock`` is the
    websocket); ``RunnerError`` when the API server refuses it (no such pod or container, not running)."""
    own = client.ApiClient(configuration=base.configuration)  # stream() swaps its client's request method
    try:
        return stream(client.CoreV1Api(own).connect_get_namespaced_pod_exec, pod, namespace, container=container,
                      command=argv, stdin=stdin, stdout=True, stderr=not tty, tty=tty, _preload_content=False,
                      binary=True)
    except ApiException as exc:
        raise RunnerError(f"cannot exec in pod {pod} (container {container}): {api_reason(exc)}",
                          CONFLICT) from None
    finally:
        own.close()


def write_all(fd: int, data: bytes) -> bool:
    """Write everything (False once ``fd`` is gone, e.g. a closed pipe)."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [])
        except OSError:
            return False
    return True


def exit_status(status: dict) -> tuple[int, str | None]:
    """The command's exit code from its ``Status``, and the API's message when it could not start."""
    if status.get("status") == "Success":
        return 0, None
    for cause in (status.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message")), None
            except (TypeError, ValueError):
                break
    message = " ".join(str(status.get("message") or "the command failed").split())
    missing = "not found" in message or "no such file" in message.lower()
    return (127 if missing else 126), message


def frames(ws: WebSocket):
    """(channel, payload) of each data frame until the connection ends."""
    while True:
        try:
            opcode, frame = ws.recv_data_frame(True)
        except (WebSocketException, OSError, AttributeError):  # AttributeError: hung up by another thread
            return
        if opcode == ABNF.OPCODE_CLOSE:
            return
        if opcode in (ABNF.OPCODE_BINARY, ABNF.OPCODE_TEXT) and frame.data:
            data = frame.data if isinstance(frame.data, bytes) else frame.data.encode()
            yield data[0], data[1:]


def send(ws: WebSocket, channel: int, data: bytes) -> bool:
    try:
        ws.send(bytes([channel]) + data, opcode=ABNF.OPCODE_BINARY)
        return True
    except (WebSocketException, OSError, AttributeError):
        return False


def hang_up(ws: WebSocket) -> None:
    """Close at once, waking a thread blocked reading ``ws`` (a plain close would not)."""
    sock = ws.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    ws.shutdown()


def close_politely(ws: WebSocket) -> None:
    """Send a close frame; whoever reads ``ws`` sees the server's answer and the end."""
    try:
        ws.send_close()
    except (WebSocketException, OSError, AttributeError):
        hang_up(ws)


@dataclass
class ExecSession:
    """One exec: ``main`` runs the command; ``relay`` (v4 only) feeds its stdin, see the module docstring."""

    main: WebSocket
    protocol: str  # the subprotocol the server chose
    terminal: Terminal
    stdin: bool
    tty: bool
    relay: WebSocket | None = None
    status: dict | None = None
    _relay_ready: threading.Event = field(default_factory=threading.Event)
    
    def run(self) -> dict | None:
        """Pump until the command ends; returns its ``Status`` (None: the connection ended without one)."""
        for ws in (self.main, self.relay):  # each read by one thread while another writes it
            if ws is not None:
                share(ws)
        threads = []
        if self.relay is not None:
            threads.append(threading.Thread(target=self._read_relay, name="osmo-exec-relay", daemon=True))
        if self.stdin:
            threads.append(threading.Thread(target=self._feed, name="osmo-exec-stdin", daemon=True))
        for thread in threads:
            thread.start()
        if self.tty:
            self._send_size()
        try:
            for channel, data in frames(self.main):
                if channel in (STDOUT, STDERR):
                    write_all(channel, data)
                elif channel == STATUS and data:
                    try:
                        self.status = json.loads(data)
                    except ValueError:
                        self.status = {"status": "Failure", "message": data.decode(errors="replace")}
        finally:
            self.terminal.stop()
            hang_up(self.main)
            if self.relay is not None:
                hang_up(self.relay)
            for thread in threads:
                thread.join(JOIN_WAIT)
        return self.status

    def _send_size(self) -> None:
        size = window_size()
        if size is not None:
            send(self.main, RESIZE, json.dumps({"Width": size[0], "Height": size[1]}).encode())

    def _read_relay(self) -> None:
        """Waits for the relay's ``R`` (its end of the FIFO is open), then for its end."""
        try:
            for channel, data in frames(self.relay):
                if channel == STDOUT and b"R" in data:
                    self._relay_ready.set()
        finally:
            self._relay_ready.set()
            hang_up(self.relay)

    def _end_of_input(self) -> None:
        if self.relay is not None:  # the close frame comes after every byte sent: no hang-up here, it would cut them
            self._relay_ready.wait()
            close_politely(self.relay)
        elif self.protocol == V5:
            send(self.main, CLOSE_CHANNEL, bytes([STDIN]))
        # v4 without a relay (a terminal): nothing can tell the command; a shell ends on its own "exit"

    def _feed(self) -> None:
        """Sends stdin, and the window size after each SIGWINCH, until the terminal's stop."""
        poller = select.poll()
        poller.register(self.terminal.wakeup_fd, select.POLLIN)
        poller.register(0, select.POLLIN)
        target = self.relay if self.relay is not None else self.main
        while True:
            for fd, _ in poller.poll():
                if fd == self.terminal.wakeup_fd:
                    wakeups = self.terminal.drain_wakeups()
                    if STOP in wakeups:
                        return
                    if WINCH in wakeups and self.tty:
                        self._send_size()
                    continue
                try:
                    data = os.read(0, READ_SIZE)
                except OSError:
                    data = b""
                if data and send(target, STDIN, data):
                    continue
                poller.unregister(0)
                if not data:
                    self._end_of_input()
