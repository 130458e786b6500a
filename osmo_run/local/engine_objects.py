"""What the runner makes in a container engine besides containers, and how nothing is left behind.

``GroupNetwork``: the network of one group. A bridge network with a subnet of its own,
``10.214.N.0/24`` (N tried from a starting point derived from the supervisor and the group, the next
one when the engine says the subnet is taken), so that each task gets a fixed address, task i
``10.214.N.(i+2)``: ``{{host:TASK}}`` is known before any container starts, and ``/etc/hosts`` of every
container of the group maps the task names to them (``--add-host``), whether or not the engine runs a
DNS server for the network (Podman's dnsname plugin, Docker's resolver also answer for the names).
Containers on it reach each other on any port, two of them may listen on the same port, and they
reach the outside world through the engine's NAT as a pod does.

``sweep``: every container and network osmo made carries the ``osmo.owner`` label, the supervisor
that made it (pid, start time, boot id). At its start and at its end each supervisor removes every
such object whose owner no longer runs, and at its end its own: what a supervisor killed with SIGKILL
left (its containers are removed by their ``containerinit``, which outlives it to do so, but its
networks stay) is gone when the next workflow starts or ends.
"""

from __future__ import annotations

import subprocess
import zlib

from osmo_run.local.engine_cli import OWNER_LABEL, EngineCli, parse_listing
from osmo_run.local.errors import RunnerError
from osmo_run.local.procs import ProcessIdentity

SUBNET_PREFIX = "10.214"
SUBNETS = 250  # 10.214.0.0/24 ... 10.214.249.0/24
TRIES = 24
COMMAND_TIMEOUT = 120.0


def owner_label(me: ProcessIdentity) -> str:
    return f"{me.pid}.{me.start}.{me.boot}"


def labels(owner: ProcessIdentity, workflow_id: str, group: str, task: str | None = None,
           attempt: int | None = None) -> dict[str, str]:
    """The labels of an object the runner makes (``osmo.owner`` first)."""
    found = {OWNER_LABEL: owner_label(owner), "osmo.workflow": workflow_id, "osmo.group": group}
    if task is not None:
        found.update({"osmo.task": task, "osmo.attempt": str(attempt)})
    return found


def object_name(owner: ProcessIdentity, *parts: str) -> str:
    """``osmo-<8 hex of the owner>-<parts>``: unique among supervisors, readable in ``podman ps``."""
    return "-".join(["osmo", f"{zlib.crc32(owner_label(owner).encode()):08x}", *parts])


def parse_owner(text: str) -> ProcessIdentity | None:
    pid, _, rest = text.partition(".")
    start, _, boot = rest.partition(".")
    try:
        return ProcessIdentity(int(pid), int(start), boot)
    except ValueError:
        return None


def _run(run, argv: list[str]) -> subprocess.CompletedProcess:
    return run(argv, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, stdin=subprocess.DEVNULL)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _subnet_taken(error: str) -> bool:
    """Podman: "subnet 10.214.7.0/24 is already used on the host or by another config";
    Docker: "Pool overlaps with other one on this address space"."""
    text = error.lower()
    return ("subnet" in text and "already" in text) or "overlap" in text


class GroupNetwork:
    """The network of one group (see the module docstring); ``close`` removes it."""

    def __init__(self, cli: EngineCli, name: str, labels: dict[str, str], run=subprocess.run) -> None:
        self.cli, self.name, self.run = cli, name, run
        first = zlib.crc32(name.encode()) % SUBNETS
        error = ""
        for n in range(TRIES):
            block = (first + n * 7) % SUBNETS
            try:
                done = _run(run, cli.network_create(name, f"{SUBNET_PREFIX}.{block}.0/24", labels))
            except (OSError, subprocess.SubprocessError) as exc:
                raise RunnerError(f"the group's network could not be created: {exc}") from None
            if done.returncode == 0:
                self.block = block
                return
            error = _last_line(done.stderr) or f"exit {done.returncode}"
            if not _subnet_taken(error):
                break
        raise RunnerError(f"the group's network could not be created ({cli.kind} network create): {error}")

    def address(self, index: int) -> str:
        if index > 252:
            raise RunnerError("a group network holds at most 253 tasks")
        return f"{SUBNET_PREFIX}.{self.block}.{index + 2}"

    def close(self) -> None:
        try:
            _run(self.run, self.cli.network_remove(self.name))
        except (OSError, subprocess.SubprocessError):
            pass  # the next sweep removes it


def sweep(cli: EngineCli, me: ProcessIdentity | None = None, run=subprocess.run) -> list[str]:
    """Remove containers, then networks, whose owner no longer runs (and, with ``me``, that owner's);
    returns the names removed."""
    mine = owner_label(me) if me else None
    removed = []
    for listing, remove in ((cli.list_containers(), cli.remove), (cli.list_networks(), cli.network_remove)):
        try:
            done = _run(run, listing)
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode != 0:
            continue
        for name, owner in parse_listing(done.stdout):
            who = parse_owner(owner)
            if who is None or (owner != mine and who.alive()):
                continue
            try:
                _run(run, remove(name))
                removed.append(name)
            except (OSError, subprocess.SubprocessError):
                continue
    return removed
