"""What every test server shares: the start/stop/cleanup life cycle (``ManagedServer``) and, for the
servers made of daemons in a private directory (Kubernetes, Ceph), ``DaemonServer``.

``ManagedServer.start()`` runs the subclass's ``_start()`` and returns the server; if that raises, it
stops whatever was started before re-raising. ``stop()`` is idempotent and also runs at interpreter
exit for every server still running. ``with Server() as s:`` starts and stops.

``DaemonServer`` adds a temporary directory named ``<dir_prefix>...`` holding ``owner.pid``,
``log/`` and whatever the daemons need (``make_dir()``; a directory left by a SIGKILLed test process
is removed by the next ``make_dir()``), daemons spawned with PR_SET_PDEATHSIG in their own process
group with stdout and stderr in ``log/`` (``spawn()``), a wait that fails as soon as a daemon exits
(``wait_until()``), and a ``_stop()`` that stops the daemons in reverse start order (SIGTERM to the group,
SIGKILL after ``term_grace`` seconds) and removes the directory. ``run_in_foreground()`` is the manual
use (``python -m tests.servers.kube``): until Ctrl-C, SIGTERM or a daemon's exit.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref

_LIVE: "weakref.WeakSet[ManagedServer]" = weakref.WeakSet()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def die_with_parent() -> None:
    """Runs in the child before exec: the kernel kills it if the test process dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def stop_process_group(proc: subprocess.Popen, grace: float, graceful: bool = True) -> None:
    """SIGTERM ``proc``'s process group (it leads one) and wait ``grace`` s, then SIGKILL (at once if not
    ``graceful``); returns once ``proc`` is reaped and no other process of its group runs (a daemon's
    children end with it, not after the caller went on: on a busy machine they took their time)."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 30))[0 if graceful else 1:]:
        deadline = time.monotonic() + wait
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        while _group_runs(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _group_runs(proc.pid):
            break


def _group_runs(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is alive (zombies waiting for their reaper do not count; while
    one is alive the group's id cannot be reused)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


class ManagedServer:
    """``start()`` (returns self) / ``stop()`` (idempotent, also at exit) / context manager."""

    start_seconds = 0.0

    def _start(self) -> None:
        raise NotImplementedError

    def _stop(self) -> None:
        raise NotImplementedError

    def start(self):
        t0 = time.monotonic()
        _LIVE.add(self)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        return self

    def stop(self) -> None:
        _LIVE.discard(self)
        self._stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_LIVE):
        server.stop()


class DaemonServer(ManagedServer):
    """Daemons that are children of this process, in a temporary directory (see the module docstring)."""

    dir_prefix = "osmo-server-"
    error: type[Exception] = RuntimeError  # raised by ``wait_until()``, carrying the daemons' log tails
    daemon_label = "{name}"  # how ``wait_until()`` names a daemon that exited
    log_suffix = ".log"  # each daemon's stdout and stderr go to log/<name><log_suffix>
    term_grace = 5.0  # seconds between SIGTERM and SIGKILL in ``stop_daemon()``
    poll_interval = 0.2
    start_timeout = 90.0

    def __init__(self) -> None:
        self.dir: str | None = None
        self.procs: dict[str, subprocess.Popen] = {}

    # -------------------------------------------------------------------------------- directory
    def make_dir(self) -> str:
        """Remove stale directories of this kind, then make this server's (with owner.pid and log/)."""
        self._remove_stale_dirs()
        self.dir = tempfile.mkdtemp(prefix=self.dir_prefix)
        with open(os.path.join(self.dir, "owner.pid"), "w") as f:
            f.write(str(os.getpid()))
        os.makedirs(os.path.join(self.dir, "log"))
        return self.dir

    @classmethod
    def remove_dir(cls, path: str) -> None:
        shutil.rmtree(path, ignore_errors=True)

    @classmethod
    def _remove_stale_dirs(cls) -> None:
        """Remove directories left by test processes that were SIGKILLed (their daemons died with them)."""
        root = tempfile.gettempdir()
        for name in os.listdir(root):
            if not name.startswith(cls.dir_prefix):
                continue
            path = os.path.join(root, name)
            try:
                with open(os.path.join(path, "owner.pid")) as f:
                    os.kill(int(f.read()), 0)
            except ProcessLookupError:
                cls.remove_dir(path)
            except (OSError, ValueError):
                pass  # being created, or not ours to judge

    # ---------------------------------------------------------------------------------- daemons
    def spawn(self, name: str, argv: list[str]) -> None:
        with open(os.path.join(self.dir, "log", f"{name}{self.log_suffix}"), "ab") as out:
            self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                cwd=self.dir, start_new_session=True, preexec_fn=die_with_parent)

    def stop_daemon(self, name: str, graceful: bool = True) -> None:
        """SIGTERM its process group and wait ``term_grace`` s, then SIGKILL (at once if not ``graceful``)."""
        proc = self.procs.pop(name, None)
        if proc is not None:
            stop_process_group(proc, self.term_grace, graceful)

    def _stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop_daemon(name)
        if self.dir:
            self.remove_dir(self.dir)
            self.dir = None

    def wait_until(self, check, what: str) -> None:
        """Poll ``check()`` until true; ``error`` with the log tails on timeout or if a daemon exits."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise self.error(f"{self.daemon_label.format(name=name)} exited ({proc.returncode}) while "
                                     f"waiting for {what}\n{self.log_tails()}")
            if check():
                return
            time.sleep(self.poll_interval)
        raise self.error(f"timed out after {self.start_timeout:.0f} s waiting for {what}\n{self.log_tails()}")

    def run_in_foreground(self, announce) -> None:
        """Start, ``announce()`` (print how to reach it), run until Ctrl-C, SIGTERM or a daemon's exit, stop."""
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
        try:
            self.start()
            announce()
            print("Ctrl-C to stop", flush=True)
            while all(p.poll() is None for p in self.procs.values()):
                time.sleep(1)
            print("a daemon exited:\n" + self.log_tails(), file=sys.stderr)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # --------------------------------------------------------------------------------- inspection
    def pids(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def rss_by_daemon(self) -> dict[str, int]:
        """Resident memory per running daemon (from /proc)."""
        out = {}
        for name, pid in self.pids().items():
            try:
                with open(f"/proc/{pid}/status") as f:
                    out[name] = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            except (OSError, StopIteration):
                pass
        return out

    def log_tails(self, lines: int = 25) -> str:
        logdir = os.path.join(self.dir or "", "log")
        parts = []
        for fname in sorted(os.listdir(logdir)) if self.dir and os.path.isdir(logdir) else []:
            with open(os.path.join(logdir, fname), errors="replace") as f:
                tail = f.readlines()[-lines:]
            if tail:
                parts.append(f"--- {fname} (last {len(tail)} lines) ---\n{''.join(tail)}")
        return "\n".join(parts)
