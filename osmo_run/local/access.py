"""How a running task of the local runner is reached from outside it: ``osmo workflow exec`` and
``port-forward`` (docs/INTERACTIVE.md).

When an attempt starts its command's launcher, it writes ``RUN_DIR/runner/access.json`` (owner-only):
which launcher runs the task (host processes: ``namespaces`` or ``plain``; ``container``), the launcher's
process (pid, start time, boot id: a pid reused by another process is never entered) and what is needed
to enter the task: the working directory, whether the task has a network of its own, the container's
name, engine and pid file. Nothing secret is in it (the task's variables are read from the command's own
process when they are needed).

``TaskAccess.open(run_dir)`` reads it and checks the task still runs; then

- ``exec_argv(argv, tty)`` is the command line that runs ``argv`` inside the task, with its environment
  and working directory: ``nsenter`` into the namespaces of the task's first process (mount, UTS, IPC,
  PID, network, and the user namespace when rootless) with the task's root; ``podman|docker exec`` into
  its container; in plain mode the command runs on the host in the task's working folder. A host-process
  task's cgroup (its cpu and memory limits) is joined by ``join_cgroup`` before the command runs.
- ``netns_argv()`` is the prefix that runs a host program in the task's network namespace (None when the
  task shares the host's network: its ports are the host's, reached on 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from typing import Any

from osmo_run.local import procs
from osmo_run.local.errors import CONFLICT, RunnerError
from osmo_run.local.procs import ProcessIdentity

ACCESS_FILE = "access.json"
# Without a command: the task's bash if it has one, else its sh (as `kubectl exec -it POD -- sh` users expect).
DEFAULT_SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; fi; exec sh"]
KEPT_VARIABLES = ("TERM", "COLUMNS", "LINES")  # of the caller's environment, for a terminal


def access_path(run_dir: str) -> str:
    return os.path.join(run_dir, "runner", ACCESS_FILE)


def write_record(run_dir: str, launcher_pid: int, init: dict[str, Any], container: bool) -> None:
    """``make_record`` written to the attempt's run folder (owner-only, atomically)."""
    record = make_record(launcher_pid, init, container)
    path = access_path(run_dir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(record, f)
    os.replace(temporary, path)


def make_record(launcher_pid: int, init: dict[str, Any], container: bool) -> dict[str, Any]:
    """What ``TaskAccess`` needs, from the launcher's config (``init``: never its environment or files)."""
    who = ProcessIdentity.of(launcher_pid)
    record: dict[str, Any] = {"pid": launcher_pid, "start": who.start if who else 0, "boot": who.boot if who else ""}
    if container:
        spec, engine = init["container"], init["engine"]
        record.update(mode="container", container=spec["name"], pidfile=spec.get("pidfile"),
                      network="isolated" if spec.get("network", "host") != "host" else "host",
                      workdir=spec.get("workdir"),
                      engine={"kind": engine["kind"], "path": engine["path"], "rootless": bool(engine.get("rootless"))})
    else:
        record.update(mode=init["mode"], network=init.get("network", "host"), workdir=init["cwd"],
                      rootless=os.geteuid() != 0)
    return record


def _host_program(name: str) -> str:
    """This machine's ``name`` found with the caller's PATH (the command line runs with the task's)."""
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if found is None:
        raise RunnerError(f"{name} is not installed on this machine (Debian package util-linux / coreutils)")
    return found


def _first_child(pid: int) -> int | None:
    """The oldest child of ``pid`` (the task's command is started before anything is re-parented)."""
    kids = [(procs.start_ticks(k) or 0, k) for k in procs.children(pid)]
    return min(kids)[1] if kids else None


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        raw = f.read()
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="surrogateescape"): v.decode(errors="surrogateescape") for k, v in pairs}


@dataclass
class TaskAccess:
    """A running task's way in (see the module docstring); ``describe`` names it for messages."""
    record: dict[str, Any]
    describe: str

    @classmethod
    def open(cls, run_dir: str, describe: str) -> "TaskAccess":
        """Raises ``RunnerError`` (conflict) when the attempt's launcher no longer runs."""
        try:
            with open(access_path(run_dir), encoding="utf-8") as f:
                record = json.load(f)
        except FileNotFoundError:
            raise RunnerError(f"{describe} has not started its command yet", CONFLICT) from None
        except (OSError, ValueError) as exc:
            raise RunnerError(f"{describe}: its access record cannot be read: {exc}", CONFLICT) from None
        access = cls(record, describe)
        if not ProcessIdentity(record["pid"], record["start"], record["boot"]).alive():
            raise RunnerError(f"{describe} is no longer running", CONFLICT)
        return access

    @property
    def mode(self) -> str:
        return self.record["mode"]

    @property
    def own_network(self) -> bool:
        return self.record.get("network") == "isolated"

    # -- the task's processes ------------------------------------------------------------------
    def _namespace_init(self) -> int:
        """namespaces mode: pid 1 of the task's PID namespace (the launcher's one child)."""
        child = _first_child(self.record["pid"])
        if child is None:
            raise RunnerError(f"{self.describe} has not started its command yet", CONFLICT)
        return child

    def command_pid(self) -> int:
        """The task's command (host processes): the first process the launcher (or the namespace's init)
        started."""
        parent = self._namespace_init() if self.mode == "namespaces" else self.record["pid"]
        pid = _first_child(parent)
        if pid is None:
            raise RunnerError(f"{self.describe}: its command is not running", CONFLICT)
        if _cmdline(pid) == _cmdline(parent):  # forked, not yet the command: its environment is the launcher's
            raise RunnerError(f"{self.describe} has not started its command yet", CONFLICT)
        return pid

    def container_pid(self) -> int:
        try:
            with open(self.record.get("pidfile") or "", encoding="ascii") as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            raise RunnerError(f"{self.describe}: its container is not running yet", CONFLICT) from None

    def environment(self, tty: bool) -> dict[str, str]:
        """The task's variables (those of its command's process), plus the caller's TERM for a terminal."""
        try:
            env = _environ(self.command_pid())
        except OSError as exc:
            raise RunnerError(f"{self.describe}: its environment cannot be read: {exc}", CONFLICT) from None
        if tty:
            env.update({k: os.environ[k] for k in KEPT_VARIABLES if k in os.environ})
        return env

    # -- command lines -------------------------------------------------------------------------
    def _nsenter(self, target: int, *flags: str) -> list[str]:
        user = ["--user", "--preserve-credentials"] if self.record.get("rootless") or self.record.get("engine", {}).get("rootless") else []
        return [_host_program("nsenter"), f"--target={target}", *user, *flags]

    def exec_argv(self, argv: list[str], tty: bool) -> tuple[list[str], dict[str, str] | None, str | None]:
        """(command line, environment or None for the caller's, working directory or None) running
        ``argv`` (empty: a shell) in the task."""
        argv = list(argv) or list(DEFAULT_SHELL)
        if self.mode == "container":
            engine = self.record["engine"]
            terminal = ["--tty"] if tty else []
            term = [f"--env=TERM={os.environ['TERM']}"] if tty and "TERM" in os.environ else []
            return [engine["path"], "exec", "--interactive", *terminal, *term, self.record["container"], *argv], None, None
        env = self.environment(tty)
        if self.mode == "plain":
            return argv, env, self.record["workdir"]
        namespaces = ["--mount", "--uts", "--ipc", "--pid"] + (["--net"] if self.own_network else [])
        workdir = self.record.get("workdir") or "/"
        # nsenter's --wd=DIR would open DIR before entering: env changes to it inside the task's root
        # the task's root has the host's /usr: the host's env is there (the task's PATH need not find it)
        return [*self._nsenter(self._namespace_init(), *namespaces, "--root"), _host_program("env"), f"--chdir={workdir}",
                "--", *argv], env, None

    def netns_argv(self) -> list[str] | None:
        """The prefix running a host program in the task's network namespace; None: the host's network."""
        if not self.own_network:
            return None
        target = self.container_pid() if self.mode == "container" else self._namespace_init()
        return self._nsenter(target, "--net")

    def join_cgroup(self, pid: int) -> None:
        """Put ``pid`` into the cgroup of the task's command (host processes, cgroup v2): the task's
        limits apply to what runs there. Best effort: a cgroup this user cannot write is left alone."""
        if self.mode == "container":
            return
        try:
            with open(f"/proc/{self.command_pid()}/cgroup", encoding="ascii") as f:
                line = next((x for x in f.read().splitlines() if x.startswith("0::")), None)
            if line and line[3:] not in ("", "/"):
                with open(f"/sys/fs/cgroup{line[3:]}/cgroup.procs", "w", encoding="ascii") as f:
                    f.write(str(pid))
        except (OSError, RunnerError):
            pass
