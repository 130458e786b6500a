"""Worker processes for transfers: starting them, talking to them, stopping them.

Uploads and downloads spread their per-file work over processes (one interpreter lock each; see
``upload_procs.py``). A worker is a fresh interpreter, ``python -m MODULE FD``, given one end of a
socket pair: unlike multiprocessing's spawn, the caller's main module is never imported again, so a
script that uploads without an ``if __name__ == "__main__"`` guard works. Its first message is the
spec the module's ``serve(link, spec)`` needs; messages are pickled tuples over the socket, private
to the two processes.

A worker ends when its socket closes: a parent killed with SIGKILL leaves no worker behind once each
has finished the read or write it was in.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection

import osmo_store
from osmo_store.errors import BackendError, OsmoError

STOP_WAIT = 0.5  # seconds a worker gets to exit after being told to stop, before SIGTERM
TERM_WAIT = 10.0  # seconds it gets to clean up after SIGTERM (finish or drop a pack write), before SIGKILL


JOB_BYTES = 8 * 1024 * 1024  # a job: consecutive files up to this many bytes ...
JOB_FILES = 256  # ... or this many files
MAX_AHEAD = 8192  # files sent to workers whose results were not yet handed on in order


def takes_another(queued: list[int], job_bytes: int) -> bool:
    """Whether a worker with jobs of these sizes under way gets one more: a second job waits behind a
    small one (so the worker never idles between jobs while the parent is busy), never behind a large
    file, which would hold it back while other workers have nothing to do."""
    return not queued or (len(queued) == 1 and queued[0] <= 2 * job_bytes)


class WorkerLink:
    """A worker's end of its socket: ``send`` from any thread; ``recv`` and ``ask`` on one thread."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._inbox: deque = deque()  # messages that arrived while ``ask`` waited for its answer

    def send(self, msg: object) -> None:
        with self._lock:
            self.conn.send(msg)

    def recv(self) -> object:
        """The next message; ``None`` means stop. ``EOFError`` when the parent is gone."""
        return self._inbox.popleft() if self._inbox else self.conn.recv()

    def ask(self, msg: tuple, answer: str) -> object:
        """Send ``msg`` and wait for the message ``(answer, value)``: its value. Other messages that
        come meanwhile are kept for ``recv``; a stop raises ``EOFError``."""
        self.send(msg)
        while True:
            reply = self.conn.recv()
            if reply is None:
                raise EOFError("the transfer is being stopped")
            if reply[0] == answer:
                return reply[1]
            self._inbox.append(reply)

    def report(self, exc: BaseException) -> None:
        """Hand a failure to the parent (it raises it): osmo's errors as they are, others as one line."""
        if not isinstance(exc, OsmoError):
            exc = OsmoError(f"transfer worker failed: {type(exc).__name__}: {exc}")
        try:
            self.send(("error", exc))
        except (OSError, EOFError):
            pass


class LinkTally:
    """A worker's bytes done inside files (``FileBytes`` adds to it), sent to the parent as
    ``("bytes", n)`` once ``batch`` bytes have gathered; ``take`` hands over the rest."""

    def __init__(self, link: WorkerLink, batch: int) -> None:
        self.link = link
        self.batch = batch
        self.pending = 0

    def add(self, nbytes: int) -> None:
        self.pending += nbytes
        if self.pending >= self.batch:
            self.link.send(("bytes", self.take()))

    def take(self) -> int:
        nbytes, self.pending = self.pending, 0
        return nbytes


def worker_main(serve: Callable[[WorkerLink, object], None]) -> None:
    """A worker module's ``__main__``: connect, read the spec, serve until told to stop or orphaned.
    SIGTERM (the parent abandoning the transfer) ends ``serve`` with an exception, so its ``finally``
    clauses run: no temporary file is left half-written."""
    signal.signal(signal.SIGTERM, _stop)
    link = WorkerLink(Connection(int(sys.argv[1])))
    try:
        spec = link.recv()
        serve(link, spec)
    except (EOFError, BrokenPipeError, ConnectionResetError, KeyboardInterrupt, SystemExit):
        return  # the parent is gone or stopping us: nothing to report to
    except BaseException as exc:
        link.report(exc)


def _stop(signum, frame) -> None:
    raise SystemExit(128 + signum)


class WorkerProcesses:
    """The parent's side: ``count`` workers running ``module``, each sent ``spec`` first."""

    def __init__(self, module: str, spec: object, count: int, what: str, died: str) -> None:
        self.what = what  # "an upload worker": names the processes in errors
        self.died = died  # what a worker's death means for the transfer, for its error
        self.links: list[Connection] = []
        self._procs: list[subprocess.Popen] = []
        try:
            for _ in range(count):
                self._start(module, spec)
        except BaseException:
            self.close()
            raise

    def _start(self, module: str, spec: object) -> None:
        ours, theirs = socket.socketpair()
        package_root = os.path.dirname(os.path.dirname(os.path.abspath(osmo_store.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        try:
            # a process group of its own: a terminal's Ctrl-C reaches the parent only, which stops its
            # workers itself (a worker interrupted while it starts would print a traceback)
            proc = subprocess.Popen([sys.executable, "-m", module, str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, env=env, process_group=0)
        except OSError as exc:
            ours.close()
            raise BackendError(f"cannot start {self.what} process: {exc.strerror or exc}") from None
        finally:
            theirs.close()
        link = Connection(ours.detach())
        self._procs.append(proc)
        self.links.append(link)
        link.send(spec)

    def send(self, link: Connection, msg: object) -> None:
        """Send a worker a message; a worker that died ends the transfer."""
        try:
            link.send(msg)
        except OSError:
            raise BackendError(f"{self.what} process died; {self.died}") from None

    def recv(self, link: Connection) -> tuple:
        """The next message from a worker; a worker that died or failed ends the transfer."""
        try:
            msg = link.recv()
        except (EOFError, OSError):
            raise BackendError(f"{self.what} process died; {self.died}") from None
        if msg[0] == "error":
            raise msg[1]
        return msg

    def pids(self) -> list[int]:
        return [proc.pid for proc in self._procs]

    def close(self) -> None:
        """Tell every worker to stop; one still busy after ``STOP_WAIT`` (an abandoned transfer) gets
        SIGTERM, and SIGKILL if it has not cleaned up within ``TERM_WAIT``."""
        for link in self.links:
            try:
                link.send(None)
            except OSError:
                pass
        for proc in self._procs:
            for action, wait in ((None, STOP_WAIT), (proc.terminate, TERM_WAIT), (proc.kill, None)):
                if action is not None:
                    action()
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for link in self.links:
            link.close()
