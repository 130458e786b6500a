"""The "pod init" every task command runs under: ``python -m osmo_run.local.taskinit CONFIG.json``.

It imports nothing but the standard library and ``procs`` (it starts once per task attempt).

Namespaces mode (root, Linux namespaces available)::

    P (this process, a child of the supervisor)
      unshare mount, UTS, IPC, PID (and network unless the group uses the host's network)
      mounts, private to the task, on a fresh tmpfs root: every top-level entry of the host's /
      bound (recursively) into it, read-only but /dev and /proc (the task writes no host file), tmpfs /osmo with RUN_DIR/data bound at /osmo/data and
      RUN_DIR/work at /osmo/work (the working directory), then ``pivot_root``; an overlay over
      each host folder that ``files:`` write into (the host's files are never touched), the
      group's /etc/hosts, a tmpfs /tmp and /dev/shm; hostname = the task name; ``files:``
      written (``taskfiles``: never through a symbolic link)
      -> "ready" on the ready pipe; the supervisor wires the network; waits for "go"
      fork C: pid 1 of the new PID namespace, mounts /proc, runs the command G, reaps, and when
      G exits kills every process left in the namespace (as a pod's container ends)

/osmo is a folder of the private root, so it need not exist on the host, and a ``files:`` path in
a top-level folder the host lacks lands in that root: nothing is created on the host.

Rootless (namespaces mode, not root): P first enters a user namespace in which the invoking user is
root: the supervisor's (``$OSMO_RUN_USERNS_PID``, where the group's network hub lives) when the
group has its own network, else a new one of its own; the rest is as above. The task runs as root
of that user namespace, i.e. as the invoking user on the host (its files are owned by that user).

Plain mode (no namespaces): P is a child subreaper, writes ``files:`` where the runner mapped them
(the attempt's files/, data/output and work folders, ``taskfiles``), runs G in its own session and,
when G exits, kills every process G left behind.

Stopping: SIGTERM to P -> SIGTERM to every process of the task, SIGKILL after the grace period. P
dies with the supervisor (PR_SET_PDEATHSIG), and C dies with P, so nothing outlives the runner.
P exits with G's exit code (128+N if a signal N ended it).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

from osmo_run.local import procs, taskfiles

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "ppc64le": 203, "s390x": 217}
USERNS_ENV = "OSMO_RUN_USERNS_PID"  # set by osmo_run.local.isolation.user_namespace
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
# statvfs flags a read-only remount must keep (a user namespace may not clear them) -> mount flags
KEPT_FLAGS = {os.ST_NOSUID: MS_NOSUID, os.ST_NODEV: MS_NODEV, os.ST_NOEXEC: MS_NOEXEC, os.ST_NOATIME: 1024,
              os.ST_NODIRATIME: 2048, os.ST_RELATIME: 1 << 21}
WRITABLE_HOST = ("dev", "proc")  # device nodes and terminals; /proc is mounted afresh
SETUP_FAILED = 3


class SetupError(Exception):
    pass


def _call(result: int, what: str) -> None:
    if result != 0:
        import ctypes
        err = ctypes.get_errno()
        raise SetupError(f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _call(procs.libc().unshare(flags), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _call(procs.libc().mount(enc(source), enc(target), enc(fstype), flags, enc(data)),
          f"mount {fstype or 'bind'} on {target}")


def enter_user_namespace(holder: str | None) -> None:
    """Rootless: join the user namespace of process ``holder``, or create one (the caller's uid and
    gid mapped to root)."""
    uid, gid = os.geteuid(), os.getegid()
    if holder:
        fd = os.open(f"/proc/{holder}/ns/user", os.O_RDONLY)
        try:
            _call(procs.libc().setns(fd, CLONE_NEWUSER), "join the user namespace of the tasks")
        finally:
            os.close(fd)
        return
    unshare(CLONE_NEWUSER)
    for name, text in (("setgroups", "deny"), ("uid_map", f"0 {uid} 1"), ("gid_map", f"0 {gid} 1")):
        with open(f"/proc/self/{name}", "w", encoding="ascii") as f:
            f.write(text)


def namespace_flags(network: bool) -> int:
    return CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | (CLONE_NEWNET if network else 0)


# -- the task's view -------------------------------------------------------------------------------
def stage_root(host: str = "/") -> str:
    """A tmpfs (staged on /tmp) holding a recursive bind of each top-level entry of the
    host's root ``host`` (outside /tmp) and an empty /tmp and /osmo (whether or not the host has them);
    ``enter_root`` makes it the root, so that / can gain folders without touching the host. Returns where
    it is staged."""
    new = "/tmp"  # the task gets a fresh tmpfs /tmp later
    mount("tmpfs", new, "tmpfs", MS_NODEV, "mode=755")
    own = ("tmp", "osmo")  # the task's own, empty, whether or not the host has them
    for name in own:
        os.mkdir(f"{new}/{name}")
    for name in sorted(set(os.listdir(host)) - set(own)):
        source, target = os.path.join(host, name), f"{new}/{name}"
        if os.path.islink(source):
            os.symlink(os.readlink(source), target)
        elif os.path.isdir(source):
            os.mkdir(target)
            mount(source, target, None, MS_BIND | MS_REC)
        else:
            open(target, "wb").close()
            mount(source, target, None, MS_BIND)
        if name not in WRITABLE_HOST and not os.path.islink(source):
            read_only(target)
    return new


def _mount_points(top: str) -> list[str]:
    """``top`` and every mount below it, parents first (from /proc/self/mountinfo)."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            point = line.split()[4]
            for code in ("\\040", "\\011", "\\012", "\\134"):
                point = point.replace(code, chr(int(code[1:], 8)))
            if point == top or point.startswith(top + "/"):
                found.append(point)
    return sorted(set(found), key=lambda p: p.count("/"))


def read_only(top: str) -> None:
    """Remount the bind at ``top`` and every mount below it read-only (keeping their other flags): the
    task reads the host's files and writes none of them."""
    for point in _mount_points(top):
        try:
            kept = os.statvfs(point).f_flag
        except OSError:
            continue  # a mount this process cannot reach (e.g. a stale network mount): nothing to write
        flags = MS_BIND | MS_REMOUNT | MS_RDONLY
        for st, ms in KEPT_FLAGS.items():
            if kept & st:
                flags |= ms
        mount(None, point, None, flags)


def enter_root(new: str) -> None:
    import platform
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise SetupError(f"pivot_root: no system call number known for {platform.machine()}")
    os.chdir(new)
    _call(procs.libc().syscall(number, b".", b"."), "pivot_root")
    _call(procs.libc().umount2(b".", MNT_DETACH), "unmount the host's root")
    os.chdir("/")


def build_view(cfg: dict) -> list[str]:
    """Mounts of namespaces mode (in P, after unshare; C and G inherit them); returns the folders
    covered by an overlay for ``files:``."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    hosts, sources = cfg.get("hosts_file"), {"data": cfg["data_dir"], "work": cfg["work_dir"]}
    pinned = []
    for name, path in sources.items():  # the staged root covers /tmp, which may hold these
        pinned.append(os.open(path, os.O_PATH | os.O_DIRECTORY))
        sources[name] = f"/proc/self/fd/{pinned[-1]}"
    if hosts:
        with open(hosts, "rb") as f:
            hosts = f.read()
    top = stage_root()
    mount("tmpfs", f"{top}/osmo", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755")
    for name in ("data", "work"):
        os.makedirs(f"{top}/osmo/{name}", exist_ok=True)
        mount(sources[name], f"{top}/osmo/{name}", None, MS_BIND | MS_REC)
    for fd in pinned:
        os.close(fd)
    if hosts:
        with open(f"{top}/osmo/.hosts", "wb") as f:
            f.write(hosts)
        hosts = "/osmo/.hosts"
    enter_root(top)
    overlays = taskfiles.overlay_roots([f["view"] for f in cfg["files"]])
    for n, root in enumerate(overlays):
        upper, work = f"/osmo/.overlay/{n}/upper", f"/osmo/.overlay/{n}/work"
        os.makedirs(upper)
        os.makedirs(work)
        mount("overlay", root, "overlay", 0, f"lowerdir={root},upperdir={upper},workdir={work}")
    if hosts and os.path.exists("/etc/hosts"):
        mount(hosts, "/etc/hosts", None, MS_BIND)
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if os.path.isdir("/dev/shm"):
        mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777")
    if cfg.get("hostname"):
        socket.sethostname(cfg["hostname"])
    return overlays


# -- running the command -----------------------------------------------------------------------
def spawn(cfg: dict) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            procs.set_parent_death_signal(signal.SIGKILL)
            for sig in (signal.SIGTERM, signal.SIGALRM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
            fd = os.open(os.devnull, os.O_RDONLY)
            os.dup2(fd, 0)
            os.chdir(cfg["cwd"])
            os.execvpe(cfg["argv"][0], cfg["argv"], cfg["env"])
        except BaseException as exc:  # noqa: BLE001 - report and exit like a shell does
            os.write(2, f"[osmo] cannot run {cfg['argv'][0]!r}: {exc}\n".encode())
            os._exit(127)
    return pid


def _kill_tree(sig: int) -> None:
    for pid in procs.descendants(os.getpid()):
        procs.signal_pid(pid, sig)


def _kill_namespace(sig: int) -> None:
    try:
        os.kill(-1, sig)  # every process of this PID namespace but its init
    except ProcessLookupError:
        pass


def supervise(cfg: dict, kill_all, on_term) -> int:
    """Run G; SIGTERM calls ``on_term``; when G exits, end what it left behind (as a pod's container
    ends) and return G's exit code."""
    signal.signal(signal.SIGTERM, lambda *_: on_term())
    main = spawn(cfg)
    code = 1
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        if pid == main:
            code = procs.exit_code(status)
            break
    signal.setitimer(signal.ITIMER_REAL, 0)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        kill_all(signal.SIGKILL)
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.01)
        except ChildProcessError:
            break
    return code


def run_namespaced(cfg: dict) -> int:
    """P forks C (pid 1 of the namespace); P forwards SIGTERM to C and SIGKILLs it after the grace
    period, which ends every process of the namespace."""
    child = os.fork()
    if child == 0:
        procs.set_parent_death_signal(signal.SIGKILL)
        try:
            mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except SetupError as exc:
            os.write(2, f"[osmo] {exc}\n".encode())
        os._exit(supervise(cfg, _kill_namespace, lambda: _kill_namespace(signal.SIGTERM)))

    def stop(*_):
        procs.signal_pid(child, signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, max(cfg["grace"], 0.01))

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGALRM, lambda *_: procs.signal_pid(child, signal.SIGKILL))
    _, status = os.waitpid(child, 0)
    return procs.exit_code(status)


def run_plain(cfg: dict) -> int:
    """P itself supervises G; SIGTERM reaches every descendant, SIGKILL after the grace period."""
    def stop():
        _kill_tree(signal.SIGTERM)
        signal.setitimer(signal.ITIMER_REAL, max(cfg["grace"], 0.01))

    signal.signal(signal.SIGALRM, lambda *_: _kill_tree(signal.SIGKILL))
    return supervise(cfg, _kill_tree, stop)


# -- entry points ----------------------------------------------------------------------------------
def main(config_file: str) -> int:
    with open(config_file, encoding="utf-8") as f:
        cfg = json.load(f)
    procs.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != cfg["parent"]:
        return 1  # the supervisor is already gone
    ready, go = cfg["ready_fd"], cfg["go_fd"]
    overlays: list[str] = []
    try:
        if cfg["mode"] == "namespaces":
            rootless, holder = os.geteuid() != 0, os.environ.get(USERNS_ENV)
            cfg["env"].pop(USERNS_ENV, None)  # the runner's, not the task's
            if rootless and cfg["network"] == "isolated" and not holder:
                raise SetupError(f"rootless: ${USERNS_ENV} (the user namespace of the group's network) is not set")
            if rootless:
                enter_user_namespace(holder if cfg["network"] == "isolated" else None)
            unshare(namespace_flags(cfg["network"] == "isolated"))
            overlays = build_view(cfg)
        else:
            procs.set_child_subreaper()
        taskfiles.write_files(cfg["files"], overlays)
    except (SetupError, taskfiles.FilesError, OSError) as exc:
        os.write(ready, f"E{exc}".encode(errors="replace"))
        return SETUP_FAILED
    os.write(ready, b"R")
    os.close(ready)
    if os.read(go, 1) != b"G":
        return 1  # the runner gave up before the start (cancel, or the group failed)
    os.close(go)
    sys.stdout.flush()
    if cfg["mode"] == "namespaces":
        return run_namespaced(cfg)
    return run_plain(cfg)


def probe(network: bool = True) -> str:
    """Empty if namespaces mode works here, else why not (run in a throwaway child process): also
    the new root (``pivot_root``); not root: in a user namespace of its own, an overlay and /proc."""
    rootless = os.geteuid() != 0
    try:
        if rootless:
            enter_user_namespace(None)
        unshare(namespace_flags(network) & ~CLONE_NEWPID)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        enter_root(stage_root())
        mount("tmpfs", "/tmp", "tmpfs", 0, "mode=1777")  # private to this throwaway namespace
        if rootless:
            for name in ("low", "up", "work", "view"):
                os.mkdir(f"/tmp/{name}")
            mount("overlay", "/tmp/view", "overlay", 0, "lowerdir=/tmp/low,upperdir=/tmp/up,workdir=/tmp/work")
        socket.sethostname("osmo-probe")
        if network:
            for args in (["link", "add", "osmo-br", "type", "bridge"],
                         ["link", "add", "osmo-a", "type", "veth", "peer", "name", "osmo-b"]):
                done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
                if done.returncode != 0:
                    return f"'ip {' '.join(args)}' failed: {done.stderr.strip()}"
        unshare(CLONE_NEWPID)
        child = os.fork()
        if child == 0:
            try:
                if rootless:
                    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
            except SetupError as exc:
                os.write(2, f"{exc}\n".encode())
                os._exit(2)
            os._exit(0 if os.getpid() == 1 else 1)
        code = procs.exit_code(os.waitpid(child, 0)[1])
        if code == 2:
            return "a new PID namespace could not mount its /proc"
        if code != 0:
            return "a new PID namespace did not start its first process as pid 1"
    except (SetupError, OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return ""


if __name__ == "__main__":
    if sys.argv[1:2] == ["--probe"]:
        why = probe(network="--no-network" not in sys.argv)
        print(why)
        sys.exit(1 if why else 0)
    sys.exit(main(sys.argv[1]))
