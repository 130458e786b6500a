"""A websocket's socket that one thread reads while another writes (``execstream.ExecSession``: frames read in
the main thread, stdin and window sizes sent by a second one; ``portstream`` and ``udprelay``: a thread each way).

OpenSSL does not allow two threads in one SSL object at once, and Python's ``ssl`` takes no lock. With a
blocking socket the reader sits in ``SSL_read`` while the writer's ``SSL_write`` resets the object's
"wants to read" state and the socket BIO's retry flags; when a signal (SIGWINCH, a resize) then interrupts
the read, OpenSSL reports the EINTR as ``SSL_ERROR_SYSCALL`` instead of "read again", Python turns that into
an empty read, and websocket-client into "connection lost": the session ended before the command did.

``share(ws)`` puts ``ws``'s socket in non-blocking mode and puts a ``SharedSocket`` in its place: every
``recv`` and ``send`` runs under one lock and never blocks inside it; the wait for the socket (``select``,
which Python resumes after a signal) happens outside the lock, so a reader waiting for data never holds up
a writer. websocket-client reads and writes only through ``ws.sock.recv`` and ``ws.sock.send``.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from typing import Callable, TypeVar

from websocket import WebSocket

WAIT = 0.5  # seconds of one wait for the socket before the call is tried again (a closed socket ends it)
Result = TypeVar("Result")


class SharedSocket:
    """The part of a socket's interface websocket-client uses, safe for one reader and one writer thread."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._timeout = sock.gettimeout()  # what a call waits at most (None: until the socket is ready)
        sock.setblocking(False)

    def recv(self, size: int) -> bytes:
        return self._call(self._sock.recv, size, reading=True)

    def send(self, data: bytes) -> int:
        """Sends all of ``data`` (an SSL write that could not finish is repeated with the same bytes)."""
        return self._call(self._sock.send, data, reading=False)

    def _call(self, method: Callable[..., Result], argument, reading: bool) -> Result:
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._lock:
                try:
                    return method(argument)
                except ssl.SSLWantReadError:
                    wanted = "read"
                except ssl.SSLWantWriteError:
                    wanted = "write"
                except BlockingIOError:  # a plain socket (ws://)
                    wanted = "read" if reading else "write"
            wait = WAIT
            if deadline is not None:
                wait = min(wait, deadline - time.monotonic())
                if wait <= 0:
                    raise TimeoutError("timed out")
            try:
                if wanted == "read":
                    select.select([self._sock], [], [], wait)
                else:
                    select.select([], [self._sock], [], wait)
            except (OSError, ValueError):  # closed by the other thread: the next call says so
                pass

    def gettimeout(self) -> float | None:
        """As a socket's (None by default: websocket-client then calls ``recv`` and ``send``, which wait)."""
        return self._timeout

    def settimeout(self, timeout: float | None) -> None:
        """Bounds each later call's wait (websocket-client's ``close``); the socket itself stays non-blocking."""
        self._timeout = timeout

    @property
    def _closed(self) -> bool:  # websocket-client's shutdown() looks at it
        return self._sock.fileno() == -1

    def fileno(self) -> int:
        return self._sock.fileno()

    def pending(self) -> int:
        """Bytes already decrypted and waiting (TLS), which ``select`` on the socket cannot see."""
        with self._lock:
            return self._sock.pending() if isinstance(self._sock, ssl.SSLSocket) else 0

    def shutdown(self, how: int) -> None:
        """Wakes the other thread at once (its wait sees the socket readable, its next call the end)."""
        self._sock.shutdown(how)

    def close(self) -> None:
        with self._lock:
            self._sock.close()


def share(ws: WebSocket) -> None:
    """From now on one thread may read ``ws`` while another writes it (see the module docstring)."""
    if ws.sock is not None and not isinstance(ws.sock, SharedSocket):
        ws.sock = SharedSocket(ws.sock)
