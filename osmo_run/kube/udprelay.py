"""UDP to a pod's port through the API server, which forwards TCP only (kubernetes#47862): a small relay
runs in the pod's ``osmo-sidecar`` container (it shares the pod's network namespace and has python3),
started through ``pods/exec``; the datagrams travel on its stdin and stdout, each as a 4-byte big-endian
length and the payload. Used by ``interactive.PodConnector.udp``.

``open_udp`` returns one end of a ``SOCK_SEQPACKET`` socket pair: each ``send`` is one datagram to the
task's port (from one UDP socket of the relay, so the task's replies come back to it), each ``recv`` one
reply. Closing it ends the exec; the relay then sees the end of its stdin and exits.
"""

from __future__ import annotations

import socket
import struct
import threading

from kubernetes import client
from websocket import WebSocket

from osmo_run.kube.execstream import STDIN, STDOUT, frames, hang_up, open_exec, send
from osmo_run.kube.objects import SIDECAR_CONTAINER
from osmo_run.kube.sharedsocket import share

HEADER = struct.Struct(">I")
MAX_DATAGRAM = 65535
RELAY = """
import socket, struct, sys, threading
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.connect(("127.0.0.1", int(sys.argv[1])))
out, inp = sys.stdout.buffer, sys.stdin.buffer
def replies():
    while True:
        try:
            data = udp.recv(65535)
        except OSError:
            continue
        out.write(struct.pack(">I", len(data)) + data)
        out.flush()
threading.Thread(target=replies, daemon=True).start()
while True:
    head = inp.read(4)
    if len(head) < 4:
        break
    data = inp.read(struct.unpack(">I", head)[0])
    try:
        udp.send(data)
    except OSError:
        pass
"""


def open_udp(base: client.ApiClient, namespace: str, pod: str, port: int) -> socket.socket:
    """A datagram socket (``SOCK_SEQPACKET``) to UDP ``port`` of ``pod``; ``RunnerError`` when the relay
    cannot be started."""
    ws = open_exec(base, namespace, pod, SIDECAR_CONTAINER, ["python3", "-c", RELAY, str(port)], True).sock
    share(ws)  # one thread reads the websocket while the other writes it (sharedsocket.py)
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    threading.Thread(target=_replies, args=(ws, theirs), name="osmo-udp-down", daemon=True).start()
    threading.Thread(target=_datagrams, args=(ws, theirs), name="osmo-udp-up", daemon=True).start()
    return mine


def _datagrams(ws: WebSocket, local: socket.socket) -> None:
    """Local datagrams -> the relay's stdin, until the local end closes."""
    try:
        while data := local.recv(MAX_DATAGRAM):
            if not send(ws, STDIN, HEADER.pack(len(data)) + data):
                break
    except OSError:
        pass
    hang_up(ws)  # the relay's stdin ends: it exits
    local.close()


def _replies(ws: WebSocket, local: socket.socket) -> None:
    """The relay's stdout -> local datagrams, until the exec ends."""
    buffer = b""
    try:
        for channel, data in frames(ws):
            if channel != STDOUT:
                continue
            buffer += data
            while len(buffer) >= HEADER.size and len(buffer) >= HEADER.size + HEADER.unpack_from(buffer)[0]:
                size = HEADER.unpack_from(buffer)[0]
                local.send(buffer[HEADER.size:HEADER.size + size])
                buffer = buffer[HEADER.size + size:]
    except OSError:
        pass
    finally:
        hang_up(ws)
        try:
            local.shutdown(socket.SHUT_RDWR)  # wakes _datagrams, and the caller reads an end
        except OSError:
            pass
