"""Can tasks be isolated here, and the per-group network that gives each task its own address.

``decide(settings)`` probes once per supervisor: namespaces mode needs util-linux ``unshare`` and
``nsenter``, iproute2 ``ip``, and a kernel that lets a throwaway child create mount, UTS, IPC, PID and
network namespaces, a bridge and a veth pair: as root (CAP_SYS_ADMIN and CAP_NET_ADMIN), or, for any
other user, inside an unprivileged user namespace ("rootless"; the probe then also checks an overlay
and /proc), and make a private root with ``pivot_root`` (see ``taskinit``). Nothing is created on
the host: each task's /osmo is a folder of its private root.
Otherwise tasks are plain host processes (``isolation: auto``), or the workflow fails with the
reason (``isolation: namespaces``).

Rootless: one holder process per supervisor, ``unshare --user --map-root-user sleep infinity``, owns
a user namespace in which the invoking user is root (and only that user is mapped); its pid is in
``$OSMO_RUN_USERNS_PID`` (inherited by every taskinit; taskinit removes it from the task's
environment). The group's hub and every task of an isolated-network group live in that user
namespace, so the hub can wire veth pairs into the tasks' network namespaces. Seen from the host,
every task process and every file it writes belongs to the invoking user.

The network of a group (``Hub``): a holder process ``unshare --net sleep infinity`` owns a private
network namespace with a bridge ``br0``; each task's own network namespace gets a veth pair, ``eth0``
inside the task with address 10.213.X.Y/16, the other end on the bridge. Tasks of the group reach
each other by those addresses (``{{host:TASK}}``), each may listen on any port, nothing is added to
the host's network, and everything disappears with the holder and the tasks. Tasks have no route
outside their group: use ``hostNetwork: true`` on a task (its whole group then shares the host's
network) or ``network: host`` in the pool config when tasks need the internet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from osmo_run.local import procs
from osmo_run.local.errors import RunnerError
from osmo_run.local.settings import Settings
from osmo_run.local.taskinit import USERNS_ENV

SUBNET_PREFIX = "10.213"
PREFIX_LEN = 16
HOST_LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Isolation:
    mode: str  # "namespaces" or "plain"
    reason: str = ""  # why plain
    rootless: bool = False  # namespaces inside a user namespace of a non-root user

    @property
    def namespaces(self) -> bool:
        return self.mode == "namespaces"

    def describe(self) -> str:
        if self.namespaces and self.rootless:
            return ("namespaces (private /tmp and /osmo/data, own hostname and network address per task; "
                    f"rootless: in a user namespace of uid {os.geteuid()}, tasks are root inside it and "
                    "this user outside)")
        if self.namespaces:
            return "namespaces (private /tmp and /osmo/data, own hostname and network address per task)"
        return f"plain host processes ({self.reason})"


def _why_not() -> str:
    if sys.platform != "linux":
        return "Linux namespaces exist only on Linux"
    missing = [tool for tool in ("unshare", "nsenter", "ip") if not shutil.which(tool)]
    if missing:
        return f"missing {', '.join(missing)} (util-linux, iproute2)"
    why = _probe()
    if why and os.geteuid() != 0:
        return f"not running as root, and unprivileged user namespaces do not work here ({why})"
    return why


def _probe() -> str:
    """Run ``taskinit --probe`` in a throwaway child; '' when it succeeded, else why not."""
    try:
        done = subprocess.run([sys.executable, "-m", "osmo_run.local.taskinit", "--probe"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"the namespace probe did not run: {exc}"
    if done.returncode != 0:
        text = "; ".join(line.strip() for line in (done.stdout + done.stderr).splitlines() if line.strip())
        return f"the namespace probe failed: {text or done.returncode}"
    return ""


def decide(settings: Settings) -> Isolation:
    if settings.isolation == "none":
        return Isolation("plain", "isolation: none was asked for")
    why = _why_not()
    if not why:
        return Isolation("namespaces", rootless=os.geteuid() != 0)
    if settings.isolation == "namespaces":
        raise RunnerError(f"isolation: namespaces was asked for, but {why}")
    return Isolation("plain", why)


def address(index: int) -> str:
    """The address of the task at ``index`` in its group (10.213.0.2, 10.213.0.3, ...)."""
    n = index + 2
    return f"{SUBNET_PREFIX}.{n // 250}.{n % 250 + (0 if n // 250 == 0 else 1)}"


def _nsenter(pid: int) -> list[str]:
    """Enter ``pid``'s network namespace (and, rootless, its user namespace, as root inside it)."""
    return ["nsenter", "-t", str(pid), *([] if os.geteuid() == 0 else ["--user", "--preserve-credentials"]), "-n"]


def _ip_batch(pid: int, lines: list[str]) -> None:
    done = subprocess.run([*_nsenter(pid), "ip", "-batch", "-"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RunnerError(f"network setup failed: {done.stderr.strip() or done.returncode}")


def _holder(argv: list[str], kind: str, what: str) -> subprocess.Popen:
    """Start ``argv`` (it ends in ``sleep infinity``) and wait until it is in a namespace of
    ``kind`` ("net", "user") other than ours; it dies with this process."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=lambda: procs.set_parent_death_signal(signal.SIGKILL))
    mine = os.readlink(f"/proc/self/ns/{kind}")
    deadline = time.monotonic() + 10
    while True:
        try:
            if os.readlink(f"/proc/{proc.pid}/ns/{kind}") != mine:
                return proc
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            raise RunnerError(f"network setup failed: {what} did not start")
        time.sleep(0.005)


_userns: subprocess.Popen | None = None


def user_namespace() -> int:
    """Rootless: the pid of this supervisor's user namespace holder (started on first use)."""
    global _userns
    if _userns is None or _userns.poll() is not None:
        _userns = _holder(["unshare", "--user", "--map-root-user", "--", "sleep", "infinity"], "user",
                          "the user namespace of the tasks")
        os.environ[USERNS_ENV] = str(_userns.pid)  # taskinit joins it (osmo_run/local/taskinit.py)
    return _userns.pid


def holder_pids() -> set[int]:
    """This supervisor's user namespace holder while it runs: a child the supervisor keeps (it must not
    be reaped as an orphan, or a rescheduled rootless task finds no user namespace to join)."""
    return {_userns.pid} if _userns is not None and _userns.poll() is None else set()


class Hub:
    """The private network of one group (see the module docstring)."""

    def __init__(self) -> None:
        argv = ["unshare", "--net", "--", "sleep", "infinity"]
        if os.geteuid() != 0:
            argv = ["nsenter", "-t", str(user_namespace()), "--user", "--preserve-credentials", "--", *argv]
        self.proc = _holder(argv, "net", "the group's network namespace")
        try:
            _ip_batch(self.proc.pid, ["link set lo up", "link add br0 type bridge", "link set br0 up"])
        except RunnerError:
            self.close()
            raise

    def attach(self, task_pid: int, index: int, attempt: int) -> str:
        """Give the task (whose network namespace ``task_pid`` holds) its address; returns it."""
        veth = f"o{index}a{attempt}"[:15]
        ip = address(index)
        _ip_batch(self.proc.pid, [f"link add {veth} type veth peer name eth0 netns {task_pid}",
                                  f"link set {veth} master br0", f"link set {veth} up"])
        _ip_batch(task_pid, ["link set lo up", f"addr add {ip}/{PREFIX_LEN} dev eth0", "link set eth0 up"])
        return ip

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
