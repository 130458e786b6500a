"""Sockets opened inside a task's network namespace, handed to a process outside it (port-forward).

A socket belongs to the network namespace it was created in, wherever its file descriptor goes later.
So ``port-forward`` does not copy bytes through a helper: it runs this module as a small server inside
the task's network namespace (``nsenter --net [--user] python -m osmo_run.local.netrelay FD``), asks it
on a Unix socket for "a TCP connection to port N" or "a UDP socket connected to port N" of the task's
127.0.0.1 (::1 when nothing answers on IPv4), and receives the connected socket's descriptor
(``SCM_RIGHTS``); the bytes then flow from the forwarder's own socket to the task with no process in
between. The server ends when its Unix socket is closed (the forwarder ended).

Standard library only (it starts in the task's namespace with the host's Python).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

CONNECT_TIMEOUT = 5.0


def _open(kind: str, port: int) -> socket.socket:
    """A socket connected to ``port`` of this namespace's loopback (TCP ``T`` or UDP ``U``)."""
    last: OSError | None = None
    for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        sock = socket.socket(family, socket.SOCK_STREAM if kind == "T" else socket.SOCK_DGRAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.connect((address, port))
            sock.settimeout(None)
            return sock
        except OSError as exc:
            sock.close()
            last = exc
    raise last or OSError("no address")


def serve(channel: socket.socket) -> None:
    """Answer requests ``T<port>`` / ``U<port>`` with ``K`` and a descriptor, or ``E<reason>``."""
    while True:
        request = channel.recv(64)
        if not request:
            return
        kind, port = request[:1].decode(), int(request[1:])
        try:
            sock = _open(kind, port)
        except ConnectionRefusedError:
            channel.send(b"Rnothing listens on that port")
            continue
        except OSError as exc:
            channel.send(b"E" + str(exc).encode(errors="replace")[:1000])
            continue
        with sock:
            socket.send_fds(channel, [b"K"], [sock.fileno()])


class RelayError(OSError):
    """The relay could not open the socket; ``refused``: nothing listens on the port."""

    def __init__(self, message: str, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


class NetnsRelay:
    """The forwarder's side: ``open(kind, port)`` returns a socket connected inside the namespace that
    ``prefix`` (e.g. ``nsenter --target=PID --net``) enters. Thread-safe; ``close`` ends the server."""

    def __init__(self, prefix: list[str]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "osmo_run.local.netrelay", str(theirs.fileno())],
                                         pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self.channel = ours
        self.lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def open(self, kind: str, port: int) -> socket.socket:
        with self.lock:
            try:
                self.channel.send(f"{kind}{port}".encode())
                message, fds, _, _ = socket.recv_fds(self.channel, 2048, 1)
            except OSError as exc:
                raise RelayError(f"the relay in the task's network failed: {exc}") from None
        if not message:
            error = (self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else b"") or b""
            raise RelayError("the relay in the task's network ended" + (f": {error.decode(errors='replace').strip()}"
                                                                         if error else ""))
        if message[:1] == b"K" and fds:
            return socket.socket(fileno=fds[0])
        for fd in fds:
            os.close(fd)
        raise RelayError(message[1:].decode(errors="replace"), refused=message[:1] == b"R")

    def close(self) -> None:
        self.channel.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


if __name__ == "__main__":
    serve(socket.socket(fileno=int(sys.argv[1])))
