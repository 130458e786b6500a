"""Is a container engine (Podman, Docker) usable here, and what can it do for tasks?

``decide_engine(settings)`` runs once per supervisor (the answer is kept in its ``RunContext``):
``engine: auto`` (the default) takes the first usable of Podman and Docker, ``podman`` or ``docker``
insists on that one (the workflow fails with the reason when it is not usable), ``none`` never uses
one. Usable means: the CLI is on PATH and ``<cli> info`` answers (for Docker: its daemon runs).

The probe also finds what the engine can give a task on this machine, so that the runner says in the
task log what is and is not enforced instead of failing at ``create``:

- ``controllers``: the cgroup controllers it can set limits with (rootless Podman on cgroup v1: none,
  "Resource limits are not supported and ignored on cgroups V1 rootless systems");
- ``storage_fs``: the file system under its image store (a container size limit needs xfs);
- ``network_problem``: why a group cannot get a network of its own (rootless Podman's networks run
  through slirp4netns, which needs ``/dev/net/tun``; where the user may not open it, every container on
  such a network fails with ``slirp4netns failed: "open(\\"/dev/net/tun\\"): Permission denied"``);
- ``ulimits`` (Podman): the open-file and process limits containers get, at most this process's own
  hard limits (Podman asks for RLIMIT_NOFILE 1048576 by default, which a machine without
  CAP_SYS_RESOURCE refuses: "error setting rlimit type 7: operation not permitted").

Commands run through an injectable ``Run`` (``subprocess.run`` by default), so the logic above the
engine is tested with a stand-in.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from osmo_run.local.engine_cli import EngineCli
from osmo_run.local.errors import RunnerError
from osmo_run.local.settings import Settings

ENGINES = ("podman", "docker")
PROBE_TIMEOUT = 60.0
NOFILE_MAX = 1048576  # what Podman gives containers where the machine allows it
PID_MAX_FILE = "/proc/sys/kernel/pid_max"

Run = Callable[..., subprocess.CompletedProcess]


@dataclass(frozen=True)
class Engine:
    kind: str  # podman | docker
    path: str  # the CLI
    version: str
    rootless: bool = False
    cgroup_version: str = ""
    controllers: tuple[str, ...] = ()  # cgroup controllers usable for limits ("cpu", "memory", ...)
    storage_fs: str = ""  # the file system under the image store ("xfs", "extfs", ...)
    network_problem: str = ""  # why groups cannot get a network of their own ("" if they can)
    ulimits: tuple[str, ...] = ()  # --ulimit values (Podman)

    @property
    def networks(self) -> bool:
        return not self.network_problem

    def cli(self) -> EngineCli:
        return EngineCli(self.kind, self.path, self.ulimits)

    def describe(self) -> str:
        who = f"rootless, uid {os.geteuid()}" if self.rootless else "root"
        text = f"container engine {self.kind} {self.version} ({who}): each task runs in a container of its image"
        if self.networks:
            return text + ", one network per group"
        return text + f"; no group networks ({self.network_problem}): tasks share the host's network"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "Engine":
        raw = dict(raw)
        for key in ("controllers", "ulimits"):
            raw[key] = tuple(raw.get(key) or ())
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class EngineChoice:
    """What ``decide_engine`` found: the engine to use (None: tasks run as host processes) and why not."""

    engine: Engine | None
    reason: str = ""  # why no engine is used
    tried: list[str] = field(default_factory=list)

    def image_note(self, image: str) -> str:
        return (f"image {image} is not pulled: no container engine ({self.reason}); the command runs with "
                "this machine's tools")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _ulimits() -> tuple[str, ...]:
    """Open files and processes for Podman's containers: its defaults, lowered to what this process
    may set (its own hard limits; processes also at most ``pid_max``, as Podman itself does)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    files = NOFILE_MAX if nofile == resource.RLIM_INFINITY else min(nofile, NOFILE_MAX)
    try:
        with open(PID_MAX_FILE, encoding="ascii") as f:
            pid_max = int(f.read().strip())
    except (OSError, ValueError):
        pid_max = 32768
    procs = pid_max if nproc == resource.RLIM_INFINITY else min(nproc, pid_max)
    return (f"nofile={files}:{files}", f"nproc={procs}:{procs}")


def _tun_problem() -> str:
    """Rootless Podman's networks need /dev/net/tun (slirp4netns); '' when this user may open it."""
    try:
        os.close(os.open("/dev/net/tun", os.O_RDWR))
    except OSError as exc:
        return (f"rootless Podman's networks need /dev/net/tun (slirp4netns), which uid {os.geteuid()} "
                f"cannot open here: {exc.strerror}")
    return ""


def parse_podman_info(path: str, info: dict[str, Any]) -> Engine:
    host, store = info.get("host") or {}, info.get("store") or {}
    rootless = bool((host.get("security") or {}).get("rootless"))
    return Engine("podman", path, str((info.get("version") or {}).get("Version", "?")), rootless,
                  str(host.get("cgroupVersion", "")), tuple(host.get("cgroupControllers") or ()),
                  str((store.get("graphStatus") or {}).get("Backing Filesystem", "")),
                  _tun_problem() if rootless else "", _ulimits())


def parse_docker_info(path: str, info: dict[str, Any]) -> Engine:
    rootless = any("rootless" in str(opt) for opt in info.get("SecurityOptions") or ())
    controllers = tuple(name for name, key in (("memory", "MemoryLimit"), ("cpu", "CPUCfsQuota")) if info.get(key))
    backing = dict((k, v) for k, v in (info.get("DriverStatus") or []) if isinstance(k, str))
    return Engine("docker", path, str(info.get("ServerVersion", "?")), rootless, f"v{info.get('CgroupVersion', '')}",
                  controllers, str(backing.get("Backing Filesystem", "")))


_INFO = {"podman": (["info", "--format", "json"], parse_podman_info),
         "docker": (["info", "--format", "{{json .}}"], parse_docker_info)}


def probe(kind: str, run: Run = subprocess.run, which: Callable[[str], str | None] = shutil.which) -> Engine | str:
    """The engine ``kind`` if it is usable here, else why not (one line)."""
    path = which(kind)
    if not path:
        return f"{kind} is not installed"
    args, parse = _INFO[kind]
    try:
        done = run([path, *args], capture_output=True, text=True, timeout=PROBE_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"'{kind} info' did not run: {exc}"
    if done.returncode != 0:
        return f"'{kind} info' failed: {_last_line(done.stderr) or f'exit {done.returncode}'}"
    try:
        return parse(path, json.loads(done.stdout))
    except (ValueError, TypeError, AttributeError) as exc:
        return f"'{kind} info' printed what osmo cannot read: {exc}"


def decide_engine(settings: Settings, run: Run = subprocess.run,
                  which: Callable[[str], str | None] = shutil.which) -> EngineChoice:
    """Which engine runs this workflow's tasks (see the module docstring)."""
    if settings.engine == "none":
        return EngineChoice(None, "engine: none was asked for")
    kinds = ENGINES if settings.engine == "auto" else (settings.engine,)
    why = []
    for kind in kinds:
        found = probe(kind, run, which)
        if isinstance(found, Engine):
            return EngineChoice(found, tried=why)
        why.append(found)
    if settings.engine != "auto":
        raise RunnerError(f"engine: {settings.engine} was asked for, but {why[0]}")
    return EngineChoice(None, "; ".join(why), tried=why)
