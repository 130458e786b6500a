"""The command lines of a container engine, Podman or Docker, each built from one plan.

``ContainerSpec`` is everything about one task's container (image, command, mounts, network, labels,
limits); ``EngineCli`` turns it and the other operations (start, stop, remove, copy files in, image
present?, pull, networks, leftovers) into argv lists. Where the two engines differ it says so:

- Podman gets ``--ulimit`` options (``Engine.ulimits``), ``--pidfile`` (the container's first
  process, for "does the lead listen yet?") and ``--unsetenv TERM`` (its default ``TERM=xterm``);
  Docker's daemon applies its own limits, and the runner then waits the lead's whole head start;
- with the host's network, Docker gets no ``--hostname`` (it shares the host's UTS namespace).

Every object carries labels: ``osmo.owner`` (the supervisor: pid, start time, boot id), and
``osmo.workflow``, ``osmo.group``, ``osmo.task``, ``osmo.attempt`` on containers, so leftovers are
found by label (``engine_objects.sweep``). Containers are created with ``--pull never`` (the runner
pulls first, its progress in the task log), ``--log-driver none`` (the output goes to the task log
through ``start --attach``, nowhere else) and ``--security-opt label=disable`` (SELinux hosts would
otherwise refuse the bind mounts of the run directory).

Standard library only: ``containerinit`` starts once per task attempt.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

OWNER_LABEL = "osmo.owner"
LABEL_FILTER = f"label={OWNER_LABEL}"


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: tuple[str, ...]  # replaces the image's entrypoint (command[0]); the rest comes before args
    args: tuple[str, ...] = ()
    workdir: str = "/"
    hostname: str = ""
    mounts: tuple[tuple[str, str], ...] = ()  # (host folder, container folder), read-write bind mounts
    network: str = "host"  # "host", or the group's network
    address: str | None = None  # the task's fixed address on the group's network
    hosts: dict[str, str] = field(default_factory=dict)  # name -> address, for /etc/hosts
    labels: dict[str, str] = field(default_factory=dict)
    extra: tuple[str, ...] = ()  # limit options (limits.container_args)
    pidfile: str | None = None  # Podman writes the container's first process's pid here

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "ContainerSpec":
        raw = dict(raw)
        for key in ("command", "args", "extra"):
            raw[key] = tuple(raw.get(key) or ())
        raw["mounts"] = tuple(tuple(m) for m in raw.get("mounts") or ())
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


def owner_of(labels_text: str) -> str:
    """The owner label's value from a listing column: the value itself, or ``k=v,k=v`` text."""
    text = labels_text.strip()
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if sep and key.strip() == OWNER_LABEL:
            return value.strip()
    return "" if "=" in text or text in ("<no value>", "") else text


class EngineCli:
    def __init__(self, kind: str, path: str, ulimits: tuple[str, ...] = ()) -> None:
        if kind not in ("podman", "docker"):
            raise ValueError(f"unknown container engine {kind!r}")
        self.kind, self.path, self.ulimits = kind, path, tuple(ulimits)

    @property
    def podman(self) -> bool:
        return self.kind == "podman"

    def _labels(self, labels: dict[str, str]) -> list[str]:
        return [arg for key, value in labels.items() for arg in ("--label", f"{key}={value}")]

    # -- one container -------------------------------------------------------------------------
    def create(self, spec: ContainerSpec, env_file: str | None = None, env_names: tuple[str, ...] = ()) -> list[str]:
        """``create`` for ``spec``; the task's variables come from ``env_file`` (``NAME=VALUE`` lines) and,
        for ``env_names``, from the engine process's own environment (values of several lines)."""
        argv = [self.path, "create", "--name", spec.name, *self._labels(spec.labels), "--pull", "never",
                "--log-driver", "none", "--security-opt", "label=disable", "--workdir", spec.workdir]
        for source, target in spec.mounts:
            argv += ["--volume", f"{source}:{target}"]
        if env_file:
            argv += ["--env-file", env_file]
        for name in env_names:
            argv += ["--env", name]
        if spec.network == "host":
            argv += ["--network", "host"]
            if self.podman and spec.hostname:
                argv += ["--hostname", spec.hostname]
        else:
            argv += ["--network", spec.network, "--hostname", spec.hostname, "--network-alias", spec.hostname]
            if spec.address:
                argv += ["--ip", spec.address]
            for name, address in spec.hosts.items():
                argv += ["--add-host", f"{name}:{address}"]
        if self.podman:
            argv += ["--unsetenv", "TERM"]  # Podman's default TERM=xterm: there is no terminal
            for limit in self.ulimits:
                argv += ["--ulimit", limit]
            if spec.pidfile:
                argv += ["--pidfile", spec.pidfile]
        argv += list(spec.extra)
        if spec.command:
            argv += ["--entrypoint", spec.command[0]]
        return [*argv, spec.image, *spec.command[1:], *spec.args]

    def start(self, name: str) -> list[str]:
        return [self.path, "start", "--attach", name]

    def stop(self, name: str, grace: float) -> list[str]:
        """SIGTERM (the image's stop signal), SIGKILL after ``grace`` seconds (whole seconds, rounded up)."""
        return [self.path, "stop", "--time", str(max(0, math.ceil(grace))), name]

    def remove(self, name: str) -> list[str]:
        """Remove the container at once, with its anonymous volumes; no error when it is gone."""
        extra = ["--time", "0"] if self.podman else []
        return [self.path, "rm", "--force", "--volumes", *extra, name]

    def copy_in(self, name: str) -> list[str]:
        """Copy a tar archive given on stdin into the container's own file system, at /."""
        return [self.path, "cp", "-", f"{name}:/"]

    def exit_code(self, name: str) -> list[str]:
        return [self.path, "inspect", "--format", "{{.State.ExitCode}}", name]

    # -- images --------------------------------------------------------------------------------
    def image_present(self, image: str) -> list[str]:
        if self.podman:
            return [self.path, "image", "exists", image]
        return [self.path, "image", "inspect", "--format", "{{.Id}}", image]

    def pull(self, image: str) -> list[str]:
        return [self.path, "pull", image]

    # -- networks and leftovers ----------------------------------------------------------------
    def network_create(self, name: str, subnet: str, labels: dict[str, str]) -> list[str]:
        return [self.path, "network", "create", "--subnet", subnet, *self._labels(labels), name]

    def network_remove(self, name: str) -> list[str]:
        return [self.path, "network", "rm", *(["--force"] if self.podman else []), name]

    def list_containers(self) -> list[str]:
        """Every container osmo made, one line each: ``NAME OWNER``."""
        column = '{{index .Labels "osmo.owner"}}' if self.podman else '{{.Label "osmo.owner"}}'
        return [self.path, "ps", "--all", "--filter", LABEL_FILTER, "--format", "{{.Names}} " + column]

    def list_networks(self) -> list[str]:
        """Every network osmo made, one line each: ``NAME OWNER`` (Podman prints all its labels)."""
        column = "{{.Labels}}" if self.podman else '{{.Label "osmo.owner"}}'
        return [self.path, "network", "ls", "--filter", LABEL_FILTER, "--format", "{{.Name}} " + column]


def parse_listing(text: str) -> list[tuple[str, str]]:
    """``list_containers``/``list_networks`` output -> ``[(name, owner)]``."""
    found = []
    for line in text.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name:
            found.append((name, owner_of(rest)))
    return found
