"""The logic above the container engine, with a stand-in engine (a fake ``run`` and ``which``): which
engine is chosen, the command lines of Podman and Docker, limits and what the log says about them,
the group network's subnet choice, and the sweep of what dead supervisors left. The real engine is
tested in test_engine_podman.py."""

from __future__ import annotations

import json
import os
import resource
import subprocess

import pytest

from osmo_run.local.engine import Engine, decide_engine, parse_docker_info, parse_podman_info
from osmo_run.local.engine_cli import ContainerSpec, EngineCli, owner_of, parse_listing
from osmo_run.local.engine_objects import GroupNetwork, labels, object_name, owner_label, sweep
from osmo_run.local.errors import RunnerError
from osmo_run.local.limits import TaskLimits, container_args
from osmo_run.local.procs import ProcessIdentity
from osmo_run.local.settings import Capacity, Settings
from osmo_run.spec import Resources

PODMAN_INFO = {"version": {"Version": "4.3.1"}, "host": {"security": {"rootless": False}, "cgroupVersion": "v1",
                                                         "cgroupControllers": ["cpu", "memory", "pids"]},
               "store": {"graphStatus": {"Backing Filesystem": "extfs"}}}


class FakeEngine:
    """Answers engine commands from a table: argv[1:] prefix -> (exit code, stdout, stderr); records calls."""

    def __init__(self, answers: dict[tuple[str, ...], tuple[int, str, str]]) -> None:
        self.answers, self.calls = answers, []

    def __call__(self, argv, **_):
        self.calls.append(list(argv))
        for prefix, (code, out, err) in self.answers.items():
            if tuple(argv[1:1 + len(prefix)]) == prefix:
                return subprocess.CompletedProcess(argv, code, out, err)
        return subprocess.CompletedProcess(argv, 0, "", "")


def _which(*present):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_auto_takes_the_first_usable_engine_and_says_why_not_the_others():
    info = FakeEngine({("info",): (0, json.dumps(PODMAN_INFO), "")})
    choice = decide_engine(Settings(engine="auto"), run=info, which=_which("podman", "docker"))
    assert choice.engine.kind == "podman" and choice.engine.version == "4.3.1"
    assert choice.engine.controllers == ("cpu", "memory", "pids") and choice.engine.networks
    assert info.calls == [["/usr/bin/podman", "info", "--format", "json"]]

    broken = FakeEngine({("info", "--format", "json"): (125, "", "Error: cannot open the store\n"),
                         ("info", "--format", "{{json .}}"): (0, json.dumps({"ServerVersion": "28.2.2",
                                                                             "MemoryLimit": True}), "")})
    choice = decide_engine(Settings(engine="auto"), run=broken, which=_which("podman", "docker"))
    assert choice.engine.kind == "docker" and choice.engine.controllers == ("memory",)
    assert choice.tried == ["'podman info' failed: Error: cannot open the store"]

    none = decide_engine(Settings(engine="auto"), run=FakeEngine({}), which=_which())
    assert none.engine is None and none.reason == "podman is not installed; docker is not installed"
    assert none.image_note("ubuntu:24.04") == ("image ubuntu:24.04 is not pulled: no container engine (podman is not "
                                               "installed; docker is not installed); the command runs with this "
                                               "machine's tools")
    asked_none = decide_engine(Settings(engine="none"), run=FakeEngine({}), which=_which("podman"))
    assert asked_none.engine is None and asked_none.reason == "engine: none was asked for"
    with pytest.raises(RunnerError, match=r"^engine: docker was asked for, but docker is not installed$"):
        decide_engine(Settings(engine="docker"), run=FakeEngine({}), which=_which("podman"))
    garbled = FakeEngine({("info",): (0, "not json", "")})
    with pytest.raises(RunnerError, match="'podman info' printed what osmo cannot read"):
        decide_engine(Settings(engine="podman"), run=garbled, which=_which("podman"))


def test_engine_info_is_read_from_both_engines():
    podman = parse_podman_info("/usr/bin/podman", PODMAN_INFO)
    assert (podman.rootless, podman.cgroup_version, podman.storage_fs, podman.network_problem) == \
        (False, "v1", "extfs", "")
    assert [u.split("=")[0] for u in podman.ulimits] == ["nofile", "nproc"]
    files = int(podman.ulimits[0].split(":")[1])
    assert 0 < files <= min(1048576, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    docker = parse_docker_info("/usr/bin/docker", {
        "ServerVersion": "24.0", "SecurityOptions": ["name=seccomp", "name=rootless"], "CgroupVersion": "2",
        "MemoryLimit": True, "CPUCfsQuota": True, "DriverStatus": [["Backing Filesystem", "xfs"]]})
    assert (docker.rootless, docker.cgroup_version, docker.controllers, docker.storage_fs, docker.ulimits) == \
        (True, "v2", ("memory", "cpu"), "xfs", ())
    assert Engine.from_json(json.loads(json.dumps(podman.to_json()))) == podman


SPEC = ContainerSpec(name="osmo-1-wf-t-a1", image="ubuntu:24.04", command=("bash", "-c"), args=("echo hi",),
                     workdir="/osmo/work", hostname="t", mounts=(("/run/x/data", "/osmo/data"),),
                     network="osmo-1-wf-g", address="10.214.3.2", hosts={"t": "10.214.3.2", "u": "10.214.3.3"},
                     labels={"osmo.owner": "1.2.b"}, extra=("--memory", "64"), pidfile="/run/x/runner/container.pid")


def test_podman_and_docker_command_lines():
    podman = EngineCli("podman", "/usr/bin/podman", ("nofile=20000:20000",)).create(SPEC, "/proc/self/fd/5", ("PEM",))
    assert podman[:4] == ["/usr/bin/podman", "create", "--name", "osmo-1-wf-t-a1"]
    joined = " ".join(podman)
    for part in ("--label osmo.owner=1.2.b", "--pull never", "--log-driver none", "--workdir /osmo/work",
                 "--volume /run/x/data:/osmo/data", "--env-file /proc/self/fd/5", "--env PEM",
                 "--network osmo-1-wf-g --hostname t --network-alias t --ip 10.214.3.2",
                 "--add-host t:10.214.3.2 --add-host u:10.214.3.3", "--ulimit nofile=20000:20000",
                 "--pidfile /run/x/runner/container.pid", "--unsetenv TERM", "--memory 64"):
        assert part in joined, part
    assert podman[-5:] == ["--entrypoint", "bash", "ubuntu:24.04", "-c", "echo hi"]  # command[0] replaces the entrypoint

    docker = EngineCli("docker", "/usr/bin/docker").create(ContainerSpec(**{**SPEC.__dict__, "network": "host"}))
    assert "--ulimit" not in docker and "--pidfile" not in docker and "--unsetenv" not in docker
    assert "--hostname" not in docker and docker[docker.index("--network") + 1] == "host"
    cli = EngineCli("docker", "/usr/bin/docker")
    assert cli.remove("c") == ["/usr/bin/docker", "rm", "--force", "--volumes", "c"]
    assert EngineCli("podman", "podman").remove("c") == ["podman", "rm", "--force", "--volumes", "--time", "0", "c"]
    assert EngineCli("podman", "podman").stop("c", 1.2) == ["podman", "stop", "--time", "2", "c"]
    assert cli.image_present("x:1") == ["/usr/bin/docker", "image", "inspect", "--format", "{{.Id}}", "x:1"]
    assert ContainerSpec.from_json(json.loads(json.dumps(SPEC.to_json()))) == SPEC
    with pytest.raises(ValueError):
        EngineCli("lxc", "lxc")


def test_listings_name_each_objects_owner():
    assert owner_of("1.2.b") == "1.2.b" and owner_of("osmo.group=g,osmo.owner=3.4.c") == "3.4.c"
    assert owner_of("<no value>") == "" and owner_of("") == ""
    assert parse_listing("a 1.2.b\nnet osmo.owner=5.6.d,osmo.workflow=w\n\n") == [("a", "1.2.b"), ("net", "5.6.d")]


def test_limits_become_options_capped_at_the_pool_and_the_log_says_what_is_not_enforced():
    cap = Capacity(2.0, 8 * 2**30, 0)
    limits = TaskLimits.of(Resources(cpu=4.0, memory=16 * 2**30, storage=2**30, gpu=1), cap)
    assert limits == TaskLimits(2.0, 8 * 2**30, 2**30, 1)
    podman = parse_podman_info("/usr/bin/podman", PODMAN_INFO)
    args, notes = container_args(limits, podman)
    assert args == ["--cpus", "2", "--memory", str(8 * 2**30), "--memory-swap", str(8 * 2**30)]
    assert notes == ["limits: cpu 2 (--cpus), memory 8 GiB (--memory, no swap: more ends the task with 137)",
                     "limits not enforced: storage 1 GiB (podman's image store is on extfs; a container size "
                     "limit needs xfs)"]
    on_xfs = Engine("podman", "podman", "4.3.1", controllers=("memory",), storage_fs="xfs")
    args, notes = container_args(TaskLimits(cpu=0.5, storage=2**30), on_xfs)
    assert args == ["--storage-opt", f"size={2**30}"]
    assert notes == ["limits: storage 1 GiB (--storage-opt size)", "limits not enforced: cpu (podman has no cpu "
                     "controller here)"]
    rootless_v1 = Engine("podman", "podman", "4.3.1", rootless=True, cgroup_version="v1")
    assert container_args(TaskLimits(memory=2**26), rootless_v1) == \
        ([], ["limits: not enforced: rootless Podman on cgroup v1 cannot set resource limits"])
    assert container_args(TaskLimits(), rootless_v1) == \
        ([], ["limits: none (the task asks for no cpu, memory or storage)"])


def test_a_group_network_takes_the_next_subnet_when_one_is_taken():
    cli = EngineCli("podman", "podman")
    taken = FakeEngine({("network", "create"): (125, "", "Error: subnet 10.214.9.0/24 is already used on the host "
                                                         "or by another config\n")})
    calls = []

    def first_taken(argv, **kwargs):
        calls.append(argv)
        return taken(argv) if len(calls) == 1 else subprocess.CompletedProcess(argv, 0, "net\n", "")

    network = GroupNetwork(cli, "osmo-x-g", {"osmo.owner": "1.2.b"}, run=first_taken)
    first, second = (c[c.index("--subnet") + 1] for c in calls)
    assert first != second and network.address(0) == second.replace(".0/24", ".2")
    assert network.address(3) == second.replace(".0/24", ".5")
    refused = FakeEngine({("network", "create"): (125, "", "Error: permission denied\n")})
    with pytest.raises(RunnerError, match=r"could not be created \(podman network create\): Error: permission denied"):
        GroupNetwork(cli, "osmo-x-g", {}, run=refused)
    assert len(refused.calls) == 1  # not a taken subnet: no other subnet is tried


def test_sweep_removes_what_dead_supervisors_left_and_keeps_the_living_ones():
    me = ProcessIdentity.of(os.getpid())
    dead = ProcessIdentity(me.pid, me.start + 1, me.boot)  # this pid, another start time: not alive
    engine = FakeEngine({
        ("ps",): (0, f"live {owner_label(me)}\nold {owner_label(dead)}\nforeign not-an-owner\n", ""),
        ("network", "ls"): (0, f"oldnet osmo.group=g,osmo.owner={owner_label(dead)}\n", "")})
    removed = sweep(EngineCli("podman", "podman"), run=engine)
    assert removed == ["old", "oldnet"]
    assert ["podman", "rm", "--force", "--volumes", "--time", "0", "old"] in engine.calls
    assert ["podman", "network", "rm", "--force", "oldnet"] in engine.calls
    assert sweep(EngineCli("podman", "podman"), me, run=engine) == ["live", "old", "oldnet"]  # its own too, at its end


def test_names_and_labels_of_the_objects_the_runner_makes():
    me = ProcessIdentity(12, 34, "boot")
    assert labels(me, "wf-1", "g", "t", 2) == {"osmo.owner": "12.34.boot", "osmo.workflow": "wf-1",
                                                "osmo.group": "g", "osmo.task": "t", "osmo.attempt": "2"}
    name = object_name(me, "wf-1", "t", "a2")
    assert name.startswith("osmo-") and name.endswith("-wf-1-t-a2") and len(name.split("-")[1]) == 8
    assert object_name(ProcessIdentity(12, 35, "boot"), "wf-1") != object_name(me, "wf-1")
