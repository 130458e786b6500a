"""One TCP connection to a pod's port through the API server (``pods/portforward`` over a websocket),
handed out as a local stream socket (used by ``interactive.PodConnector``).

The protocol: channel 0 carries the data, channel 1 the errors; each starts with a frame of the port
number. The kubelet connects to the port in the pod's network namespace as the websocket opens and, when
that fails, writes the reason on channel 1 ("... connect: connection refused" when nothing listens) and
ends the stream. Nothing is sent when it succeeds, so ``open_port`` waits ``CONNECT_CHECK`` seconds after
the port frames for such an error (less when the server speaks first) before it hands the socket out.

The socket is one end of a socket pair; two threads copy between the other end and the websocket. The
websocket protocol has no half-close: when the local side ends its output, the connection stays open while
the pod's side goes on sending, and is closed once the local side has closed completely, the pod's side
has closed, or the pod's side was quiet for ``LINGER`` seconds.
"""

from __future__ import annotations

import select
import socket
import threading
import time

from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from websocket import WebSocket

from osmo_run.kube.execstream import api_reason, close_politely, frames, hang_up, send
from osmo_run.kube.sharedsocket import share

DATA, ERROR = 0, 1
CONNECT_CHECK = 0.5
OPEN_TIMEOUT = 30.0  # for the port frames
LINGER = 2.0
CLOSE_WAIT = 3.0
READ_SIZE = 256 * 1024


class PortRefused(Exception):
    """The pod's port could not be reached: ``refused`` when nothing listens on it."""

    def __init__(self, message: str, refused: bool) -> None:
        super().__init__(" ".join(message.split())[:300])
        self.refused = refused


def _websocket(base: client.ApiClient, namespace: str, pod: str, port: int) -> WebSocket:
    own = client.ApiClient(configuration=base.configuration)
    try:
        return stream(client.CoreV1Api(own).connect_get_namespaced_pod_portforward, pod, namespace,
                      ports=str(port), _preload_content=False, binary=True).sock
    except ApiException as exc:
        raise PortRefused(f"the API server refused the port-forward: {api_reason(exc)}", False) from None
    finally:
        own.close()


def open_port(base: client.ApiClient, namespace: str, pod: str, port: int) -> socket.socket:
    """A connected stream socket to ``port`` of ``pod``; ``PortRefused`` when it cannot be reached."""
    ws = _websocket(base, namespace, pod, port)
    early, error = _check(ws)
    if error is not None:
        hang_up(ws)
        raise PortRefused(error, "connection refused" in error)
    mine, theirs = socket.socketpair()
    _Pump(ws, theirs, early).start()
    return mine


def _check(ws: WebSocket) -> tuple[bytes, str | None]:
    """Reads the port frames, then waits up to ``CONNECT_CHECK`` s for an error: (data that came
    meanwhile, the error or None)."""
    seen: set[int] = set()
    early = b""
    deadline = time.monotonic() + OPEN_TIMEOUT
    stream = frames(ws)
    while time.monotonic() < deadline:
        if not _readable(ws, deadline - time.monotonic()):
            break
        item = next(stream, None)
        if item is None:
            return early, "the API server closed the port-forward"
        channel, data = item
        if channel not in seen:
            seen.add(channel)
            if seen >= {DATA, ERROR}:
                deadline = time.monotonic() + CONNECT_CHECK
            continue
        if channel == ERROR and data:
            return early, data.decode(errors="replace")
        if channel == DATA:
            early += data
            break  # the server spoke: it is connected
    if seen < {DATA, ERROR}:
        return early, f"no answer from the port-forward within {OPEN_TIMEOUT:g} s"
    return early, None


def _readable(ws: WebSocket, timeout: float) -> bool:
    sock = ws.sock
    if sock is None:
        return True  # the next read reports the end
    pending = getattr(sock, "pending", None)
    if pending is not None and pending():
        return True
    return bool(select.select([sock], [], [], max(0.0, timeout))[0])


class _Pump:
    def __init__(self, ws: WebSocket, local: socket.socket, early: bytes) -> None:
        self.ws, self.local, self.early = ws, local, early
        self.last_remote = time.monotonic()
        self.remote_done = threading.Event()

    def start(self) -> None:
        share(self.ws)  # one thread reads the websocket while the other writes it (sharedsocket.py)
        threading.Thread(target=self._down, name="osmo-portforward-down", daemon=True).start()
        threading.Thread(target=self._up, name="osmo-portforward-up", daemon=True).start()

    def _down(self) -> None:
        """Pod -> local, until the websocket ends; then an end of file to the local side."""
        try:
            if self.early:
                self.local.sendall(self.early)
            for channel, data in frames(self.ws):
                self.last_remote = time.monotonic()
                if channel == DATA and data:
                    self.local.sendall(data)
                elif channel == ERROR and data:
                    break  # the pod's side failed: the connection is over
        except OSError:  # the local side is gone
            pass
        finally:
            self.remote_done.set()
            hang_up(self.ws)
            try:
                self.local.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _up(self) -> None:
        """Local -> pod, until the local side's end of file; then the linger (module docstring)."""
        try:
            while data := self.local.recv(READ_SIZE):
                if not send(self.ws, DATA, data):
                    break
            else:
                self._linger()
        except OSError:  # the local side is gone
            hang_up(self.ws)
        finally:
            self.remote_done.wait(CLOSE_WAIT)
            self.local.close()

    def _linger(self) -> None:
        poller = select.poll()
        poller.register(self.local, select.POLLHUP)
        while not self.remote_done.is_set():
            hung = any(event & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, event in poller.poll(200))
            if hung or time.monotonic() - self.last_remote > LINGER:
                close_politely(self.ws)
                if not self.remote_done.wait(CLOSE_WAIT):
                    hang_up(self.ws)
                return
