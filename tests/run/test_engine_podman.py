"""Tasks in their images on a real Podman (Debian's 4.3, as root): the engine line, files inside the
container, the environment and masked credentials, ``{{host:TASK}}`` between two tasks listening on
one port, exit codes, memory and cpu limits (137 over the memory limit), exec timeout, cancel and a
killed supervisor leaving nothing behind, an image that cannot be had (3003 with the engine's
reason), and the engine setting itself (auto, none, an engine that is not installed).

Podman uses a private storage with the test task image (``podman_store``, tests/run/podman_env.py):
the test image answers to every name the workflows use (ubuntu:24.04, alpine:3.18, ...). The
workflows that need nothing of each other (``@early``) are all submitted when the module starts and
run at once; each test then checks its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import pytest

from helpers.waiting import wait_for

from .conftest import Osmo, groups_of, tasks_of, write_spec

IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"  # the test image's PATH
TAG = uuid.uuid4().hex[:8]  # names of files: paths, which must never appear on the host
SECRET, KEY_LINE2 = f"s3cr3t-{uuid.uuid4().hex[:10]}", f"line-two-{uuid.uuid4().hex[:8]}"


STARTERS: dict[str, Callable[[Osmo, Path], None]] = {}


def early(start: Callable[[Osmo, Path], None]) -> Callable[[Osmo, Path], None]:
    """A workflow submitted with the others at the module's start (``early_runs``): they run at once."""
    STARTERS[start.__name__.removeprefix("_start_")] = start
    return start


def _runner(folder: Path, podman_store) -> Osmo:
    """``Osmo`` whose tasks run in Podman (the private storage), 1 s grace period."""
    runner = Osmo(folder / "osmo", OSMO_ENGINE="podman", **podman_store.env)
    runner.pool(grace_period="1s", lead_head_start="0.2s")
    return runner


def _kill_leftovers(runner: Osmo) -> None:
    for line in runner.processes():
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def early_runs(tmp_path_factory, podman_store) -> dict[str, Osmo]:
    """Every independent workflow of this module, each in an ``Osmo`` of its own, submitted at once."""
    folders = {name: tmp_path_factory.mktemp(name) for name in STARTERS}
    runs = {name: _runner(folder, podman_store) for name, folder in folders.items()}
    with ThreadPoolExecutor(4) as pool:  # a submit takes seconds: several at once
        list(pool.map(lambda name: STARTERS[name](runs[name], folders[name]), STARTERS))
    yield runs
    for runner in runs.values():
        _kill_leftovers(runner)


@pytest.fixture
def engine_osmo(tmp_path, podman_store):
    runner = _runner(tmp_path, podman_store)
    yield runner
    _kill_leftovers(runner)


def _ended(early_runs, key: str, workflow_id: str) -> tuple[Osmo, dict, str]:
    """An early workflow once it ended: its runner, ``query`` and logs."""
    engine_osmo = early_runs[key]
    engine_osmo.wait(workflow_id, 120)
    return engine_osmo, engine_osmo.query(workflow_id), engine_osmo.logs(workflow_id)


def _out(info: dict, task: str) -> Path:
    return Path(tasks_of(info)[task]["attempts"][-1]["run_dir"]) / "data" / "output"


@early
def _start_hello(engine_osmo: Osmo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        workflow:
          name: hello
          tasks:
          - name: hello
            image: ubuntu:24.04
            command: [bash, -c]
            args: ['echo "Hello from $(hostname)"; test ! -e /work && echo "not the host"; echo "PATH=$PATH";
                    echo "TERM=${TERM-unset} HOME=$HOME OSMO_TASK_NAME=$OSMO_TASK_NAME"; pwd; ls /osmo/data']
        """)
    engine_osmo.submit(spec, wait=False)


def test_a_task_runs_in_its_image_and_the_log_says_which_engine(early_runs, podman_store):
    engine_osmo = early_runs["hello"]
    engine_osmo.wait("hello-1", 120)
    info = engine_osmo.query("hello-1")
    assert info["status"] == "COMPLETED", engine_osmo.logs("hello-1")
    assert info["isolation"].startswith("container engine podman 4.") and "one network per group" in info["isolation"]
    logs = engine_osmo.logs("hello-1")
    assert "hello | Hello from hello" in logs and "hello | not the host" in logs
    assert f"hello | PATH={IMAGE_PATH}" in logs  # the image's PATH, not the submitting shell's
    assert "hello | TERM=dumb HOME=/osmo/work OSMO_TASK_NAME=hello" in logs  # TERM: bash's own default
    assert "hello | /osmo/work" in logs and "hello | output" in logs
    assert logs.count("[osmo] image ubuntu:24.04: the command runs in container osmo-") == 1
    assert "(podman 4." in logs and "is not pulled" not in logs
    assert "[osmo] limits: none (the task asks for no cpu, memory or storage)" in logs
    assert engine_osmo.processes_left() == []
    podman_store.check_empty(engine_osmo)


@early
def _start_files(engine_osmo: Osmo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, f"""
        workflow:
          name: files
          tasks:
          - name: writer
            image: ubuntu:24.04
            command: [bash, /tmp/run.sh]
            files:
            - path: /tmp/run.sh
              contents: |
                set -e
                cat /etc/osmo-{TAG}.conf /opt/osmo-{TAG}/deep/x.txt /osmo/work/w.txt > {{{{output}}}}/seen.txt
                stat -c '%a %U' /etc/osmo-{TAG}.conf >> {{{{output}}}}/seen.txt
                readlink -f /bin/osmo-tool-{TAG} >> {{{{output}}}}/seen.txt
                osmo-tool-{TAG} >> {{{{output}}}}/seen.txt
                ls {{{{output}}}} >> {{{{output}}}}/seen.txt
            - path: /etc/osmo-{TAG}.conf
              contents: "etc of the container\\n"
            - path: /opt/osmo-{TAG}/deep/x.txt
              contents: "a new folder\\n"
            - path: /osmo/work/w.txt
              contents: "working folder\\n"
            - path: /bin/osmo-tool-{TAG}
              contents: "#!/bin/sh\\necho tool ran\\n"
            - path: "{{{{output}}}}/given.txt"
              contents: "given\\n"
        """)
    engine_osmo.submit(spec, wait=False)


def test_files_are_written_inside_the_container_only(early_runs, podman_store):
    engine_osmo = early_runs["files"]
    engine_osmo.wait("files-1", 120)
    info = engine_osmo.query("files-1")
    assert info["status"] == "COMPLETED", engine_osmo.logs("files-1")
    out = _out(info, "writer")
    # /bin is a link to usr/bin in the image: the file lands there, inside the container
    assert (out / "seen.txt").read_text() == (f"etc of the container\na new folder\nworking folder\n755 root\n"
                                              f"/usr/bin/osmo-tool-{TAG}\ntool ran\ngiven.txt\nseen.txt\n")
    assert (Path(tasks_of(info)["writer"]["attempts"][0]["run_dir"]) / "work" / "w.txt").read_text() == \
        "working folder\n"
    for host_path in (f"/etc/osmo-{TAG}.conf", f"/opt/osmo-{TAG}", f"/usr/bin/osmo-tool-{TAG}",
                      f"/bin/osmo-tool-{TAG}", "/tmp/run.sh"):
        assert not os.path.lexists(host_path), host_path  # nothing reached the host
    podman_store.check_empty(engine_osmo)


@early
def _start_env(engine_osmo: Osmo, tmp_path: Path) -> None:
    creds = tmp_path / "creds.yaml"
    creds.write_text(f"access_key: {SECRET}\npem: \"BEGIN\\n{KEY_LINE2}\\nEND\"\n")
    creds.chmod(0o600)
    engine_osmo.pool(grace_period="1s", credentials={"store": {"file": str(creds)}, "keys": {"file": str(creds)}})
    spec = write_spec(tmp_path, """
        workflow:
          name: env
          tasks:
          - name: show
            image: ubuntu:24.04
            command: [bash, -c]
            args: ['echo "MODE=$MODE key=$MY_KEY"; printf "%s\\n" "$MY_PEM" | sed -n 2p;
                    cat /root/creds/access_key; echo; stat -c %a /root/creds/access_key;
                    env | grep -c "^AWS_\\|^SSH_" || true']
            environment: {MODE: "fast"}
            credentials:
              store:
                MY_KEY: access_key
                MY_PEM: pem
              keys: /root/creds
        """)
    engine_osmo.submit(spec, wait=False)


def test_environment_and_credentials_reach_the_task_masked(early_runs, podman_store):
    engine_osmo, info, logs = _ended(early_runs, "env", "env-1")
    assert info["status"] == "COMPLETED", logs
    assert "show | MODE=fast key=***" in logs
    assert "show | ***" in logs and KEY_LINE2 not in logs  # each line of a value of several lines is masked
    assert "show | 600" in logs and "show | 0" in logs  # the file's mode; nothing of the submitting shell
    assert SECRET not in logs and SECRET not in (Path(engine_osmo.root) / "state" / "workflows" / "env-1" /
                                                 "logs" / "show.log").read_text()
    run_dir = Path(tasks_of(info)["show"]["attempts"][0]["run_dir"])
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path  # no env file, no credential on the host
    podman_store.check_empty(engine_osmo)


@early
def _start_pair(engine_osmo: Osmo, tmp_path: Path) -> None:
    script = """set -e
hostname > /tmp/name.txt
cd /tmp && python3 -m http.server 8000 >/dev/null 2>&1 &
until curl -sf http://$PEER:8000/name.txt > {{output}}/by-address.txt; do sleep 0.2; done
curl -sf http://$PEER_NAME:8000/name.txt > {{output}}/by-name.txt
echo "peer says $(cat {{output}}/by-address.txt)"
"""
    spec = write_spec(tmp_path, f"""
        workflow:
          name: pair
          groups:
          - name: pair
            tasks:
            - name: alpha
              lead: true
              image: ubuntu:24.04
              command: [bash, -c, "bash /tmp/run.sh; sleep 2"]
              environment: {{PEER: "{{{{host:beta}}}}", PEER_NAME: beta}}
              files: [{{path: /tmp/run.sh, contents: {json.dumps(script)}}}]
            - name: beta
              image: ubuntu:24.04
              command: [bash, -c, "bash /tmp/run.sh; sleep 300"]
              environment: {{PEER: "{{{{host:alpha}}}}", PEER_NAME: alpha}}
              files: [{{path: /tmp/run.sh, contents: {json.dumps(script)}}}]
        """)
    engine_osmo.submit(spec, wait=False)


def test_host_tokens_reach_a_peer_listening_on_the_same_port(early_runs, podman_store):
    engine_osmo, info, logs = _ended(early_runs, "pair", "pair-1")
    assert info["status"] == "COMPLETED", logs
    hosts = {name: task["host"] for name, task in tasks_of(info).items()}
    assert hosts["alpha"] != hosts["beta"] and all(h.startswith("10.214.") for h in hosts.values()), hosts
    assert "alpha | peer says beta" in logs and "beta | peer says alpha" in logs  # both listened on :8000
    assert (_out(info, "alpha") / "by-name.txt").read_text() == "beta\n"
    assert f"[osmo] network: {hosts['alpha']} on the group's network osmo-" in logs
    assert tasks_of(info)["beta"]["reason"] == "stopped when the lead task 'alpha' ended"
    assert engine_osmo.processes_left() == []
    podman_store.check_empty(engine_osmo)


@early
def _start_late_lead(engine_osmo: Osmo, tmp_path: Path) -> None:
    """A loaded machine: the engine starts the lead's container 4 s after it is told to (a ``podman``
    first on PATH that waits before ``start`` of the lead's container), its head start is 0.2 s."""
    wrapper = tmp_path / "bin" / "podman"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\ncase "$1 $*" in "start "*-server-a1*) sleep 4;; esac\n'
                       f'exec {shutil.which("podman")} "$@"\n')
    wrapper.chmod(0o755)
    engine_osmo.env["PATH"] = f"{wrapper.parent}:{os.environ['PATH']}"
    spec = write_spec(tmp_path, """
        workflow:
          name: late-lead
          groups:
          - name: g
            tasks:
            - name: server
              lead: true
              image: alpine:3.18
              command: [sh, -c, "echo hello > /tmp/h; nc -w 20 -l -p 24831 < /tmp/h; echo served"]
            - name: client
              image: alpine:3.18
              command: [sh, -c]
              args: ['nc -w 10 {{host:server}} 24831 > /tmp/got; echo "got $(cat /tmp/got)"']
        """)
    engine_osmo.submit(spec, wait=False)


def test_the_lead_head_start_counts_from_its_container_start(early_runs, podman_store):
    engine_osmo, info, logs = _ended(early_runs, "late_lead", "late-lead-1")
    assert info["status"] == "COMPLETED", logs
    assert "client | got hello" in logs and "server | served" in logs  # the client waited for the late lead
    podman_store.check_empty(engine_osmo)


@early
def _start_codes(engine_osmo: Osmo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        workflow:
          name: codes
          resources:
            small: {cpu: 0.5, memory: 64Mi, storage: 1Gi}
          tasks:
          - {name: fails, image: ubuntu:24.04, command: [bash, -c, "echo bye; exit 42"]}
          - {name: missing-command, image: ubuntu:24.04, command: [no-such-command-here]}
          - name: limited
            image: ubuntu:24.04
            resource: small
            command: [bash, -c]
            args: ['cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us
                    /sys/fs/cgroup/cpu/cpu.cfs_period_us']
          - name: greedy
            image: ubuntu:24.04
            resource: small
            command: [python3, -c, "x = bytearray(400 * 2**20); print('survived')"]
        """)
    engine_osmo.submit(spec, wait=False)


def test_exit_codes_and_limits(early_runs, podman_store):
    engine_osmo = early_runs["codes"]
    engine_osmo.wait("codes-1", 120)
    info = engine_osmo.query("codes-1")
    tasks = tasks_of(info)
    logs = engine_osmo.logs("codes-1")
    assert {name: t["exit_code"] for name, t in tasks.items()} == \
        {"fails": 42, "missing-command": 127, "limited": 0, "greedy": 137}, logs
    assert tasks["greedy"]["status"] == "FAILED" and "survived" not in logs  # over its memory: killed, as OOMKilled
    assert "limited | 67108864\nlimited | 50000\nlimited | 100000" in logs  # 64 MiB, half of each period
    assert ("limited | [osmo] limits: cpu 0.5 (--cpus), memory 64 MiB (--memory, no swap: more ends the task "
            "with 137)") in logs
    assert ("limited | [osmo] limits not enforced: storage 1 GiB (podman's image store is on extfs; a container "
            "size limit needs xfs)") in logs
    assert "executable file not found" in engine_osmo.logs("codes-1", "missing-command")
    # conmon marks an OOM kill with an empty file "oom" in its working folder: the attempt's, never the
    # folder the workflow was submitted from
    assert (Path(tasks["greedy"]["attempts"][0]["run_dir"]) / "runner" / "oom").exists()
    assert not Path("oom").exists(), f"an 'oom' file was left in {os.getcwd()}"
    podman_store.check_empty(engine_osmo)


@early
def _start_slow(engine_osmo: Osmo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        workflow:
          name: slow
          timeout: {exec_timeout: 10s}  # a loaded machine may take seconds to start both containers
          groups:
          - name: g
            tasks:
            - name: polite
              lead: true
              image: ubuntu:24.04
              command: [bash, -c, "trap 'echo got TERM; exit 0' TERM; echo started; sleep 300 & wait"]
            - name: stubborn
              image: ubuntu:24.04
              command: [bash, -c, "echo started; sleep 300"]
        """)
    engine_osmo.submit(spec, wait=False)


def test_exec_timeout_stops_containers_with_sigterm_then_sigkill(early_runs, podman_store):
    engine_osmo = early_runs["slow"]
    engine_osmo.wait("slow-1", 120)
    info = engine_osmo.query("slow-1")
    tasks = tasks_of(info)
    assert info["status"] == "FAILED_EXEC_TIMEOUT", engine_osmo.logs("slow-1")
    assert {t["status"] for t in tasks.values()} == {"FAILED_EXEC_TIMEOUT"}
    assert "polite | got TERM" in engine_osmo.logs("slow-1")
    # the stubborn one is PID 1 of its container, which ignores SIGTERM: SIGKILL after the 1 s grace
    assert tasks["stubborn"]["attempts"][0]["command_exit_code"] == 137
    assert tasks["polite"]["attempts"][0]["command_exit_code"] == 0
    assert info["seconds"] < 10 + 20, info["seconds"]
    assert engine_osmo.processes_left() == []
    podman_store.check_empty(engine_osmo)


def _start_sleepers(osmo: Osmo, tmp_path: Path, name: str, tasks: str) -> str:
    """Submit workflow ``name``: one group of tasks ``tasks`` (the first the lead) that say "started" and
    sleep; returns its id once every one has started."""
    lines = [f'{{name: {t}, lead: {str(i == 0).lower()}, image: ubuntu:24.04, command: [bash, -c, "echo started; '
             f'sleep 300"]}}' for i, t in enumerate(tasks)]
    spec = tmp_path / f"{name}.yaml"
    spec.write_text(f"workflow:\n  name: {name}\n  groups:\n  - name: g\n    tasks:\n"
                    + "".join(f"    - {line}\n" for line in lines))
    workflow_id = osmo.submit(spec, wait=False)
    for task in tasks:
        osmo.wait_log(workflow_id, f"{task} | started")
    return workflow_id


def test_cancel_stops_the_containers_and_leaves_nothing(engine_osmo, podman_store, tmp_path):
    workflow_id = _start_sleepers(engine_osmo, tmp_path, "long", "ab")
    assert len(podman_store.leftovers(engine_osmo)) == 3  # two containers, one network
    started = time.monotonic()
    engine_osmo("cancel", workflow_id)
    assert time.monotonic() - started < 30
    info = engine_osmo.query(workflow_id)
    assert info["status"] == "FAILED_CANCELED"
    assert {t["status"] for t in tasks_of(info).values()} == {"FAILED_CANCELED"}
    assert engine_osmo.processes_left() == []
    podman_store.check_empty(engine_osmo)


def test_a_killed_supervisor_leaves_nothing_once_the_next_workflow_ran(engine_osmo, podman_store, tmp_path):
    workflow_id = _start_sleepers(engine_osmo, tmp_path, "orphaned", "a")
    os.kill(engine_osmo.query(workflow_id)["supervisor_pid"], signal.SIGKILL)
    # the container's init outlives the supervisor long enough to stop and remove the container
    wait_for(lambda: [n for n in podman_store.leftovers(engine_osmo) if "-a-a1" in n] == [], 30,
             "the container removed")
    assert engine_osmo.query(workflow_id)["status"] == "FAILED"
    # the group's network stays (its owner is dead) until a supervisor's sweep: the next workflow's here,
    # unless an earlier test's workflow still running on this runner swept it first
    assert len(podman_store.leftovers(engine_osmo)) <= 1
    short = write_spec(tmp_path, """
        workflow:
          name: next
          tasks:
          - {name: t, image: ubuntu:24.04, command: ["true"]}
        """, name="short.yaml")
    engine_osmo.submit(short)
    assert engine_osmo.query("next-1")["status"] == "COMPLETED"
    podman_store.check_empty(engine_osmo)
    assert engine_osmo.processes_left() == []


@early
def _start_noimage(engine_osmo: Osmo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        workflow:
          name: noimage
          tasks:
          - {name: t, image: "localhost:1/osmo-no-such-image:1", command: ["true"]}
        """)
    engine_osmo.submit(spec, wait=False)


def test_an_image_that_cannot_be_had_fails_with_3003_and_the_engines_reason(early_runs, podman_store):
    engine_osmo = early_runs["noimage"]
    engine_osmo.wait("noimage-1", 120)
    info = engine_osmo.query("noimage-1")
    task = tasks_of(info)["t"]
    logs = engine_osmo.logs("noimage-1")
    assert info["status"] == "FAILED" and info["exit_code"] == 3003, logs
    assert task["status"] == "FAILED_START_ERROR" and task["exit_code"] == 3003
    assert task["reason"].startswith("start error: image localhost:1/osmo-no-such-image:1 cannot be had: ")
    assert "localhost:1" in task["reason"] and "connect" in task["reason"]  # the engine's own words
    assert "[osmo] image localhost:1/osmo-no-such-image:1 is not here: pulling it (podman pull " in logs
    assert "t | Trying to pull localhost:1/osmo-no-such-image:1..." in logs  # the engine's progress
    podman_store.check_empty(engine_osmo)


def test_engine_settings_auto_none_and_one_that_is_not_installed(tmp_path, podman_store):
    spec = write_spec(tmp_path, """
        workflow:
          name: which
          tasks:
          - {name: t, image: alpine:3.18, command: [sh, -c, "test ! -e /work && echo in the image || echo on the host"]}
        """)
    runners = {engine: Osmo(tmp_path / engine, OSMO_ENGINE=engine, OSMO_ISOLATION="none", **podman_store.env)
               for engine in ("auto", "none", "docker")}
    for osmo in runners.values():  # all three at once
        osmo.submit(spec, wait=False)
    results = {engine: (osmo.wait("which-1"), osmo.logs("which-1")) for engine, osmo in runners.items()}
    info, logs = results["auto"]
    assert info["status"] == "COMPLETED" and info["isolation"].startswith("container engine podman")
    assert "t | in the image" in logs
    info, logs = results["none"]
    assert info["status"] == "COMPLETED" and "t | on the host" in logs
    assert info["isolation"].endswith("; images are not used (engine: none was asked for)")
    assert logs.count("image alpine:3.18 is not pulled: no container engine (engine: none was asked for)") == 1
    info, logs = results["docker"]
    assert info["status"] == "FAILED"
    assert info["reason"] in ("engine: docker was asked for, but docker is not installed",  # or a CLI without daemon:
                              "engine: docker was asked for, but 'docker info' failed: Cannot connect to the Docker "
                              "daemon at unix:///var/run/docker.sock. Is the docker daemon running?"), info["reason"]
    assert {t["status"] for t in tasks_of(info).values()} == {"FAILED"}
    bad = Osmo(tmp_path / "bad", OSMO_ENGINE="kubernetes")
    result = bad("submit", str(spec), check=False)
    assert result.code == 2 and result.err.strip() == \
        "osmo: error: $OSMO_ENGINE: expected one of auto, podman, docker, none, got 'kubernetes'"
    podman_store.check_empty(*runners.values())


@early
def _start_hostnet(engine_osmo: Osmo, tmp_path: Path) -> None:
    spec = write_spec(tmp_path, """
        workflow:
          name: hostnet
          tasks:
          - name: t
            image: ubuntu:24.04
            hostNetwork: true
            command: [bash, -c, "echo host is {{host:t}}; hostname; test -e /sys/class/net/lo && echo ok"]
        """)
    engine_osmo.submit(spec, wait=False)


def test_host_network_group_shares_the_hosts_network(early_runs, podman_store):
    engine_osmo = early_runs["hostnet"]
    engine_osmo.wait("hostnet-1", 120)
    info = engine_osmo.query("hostnet-1")
    logs = engine_osmo.logs("hostnet-1")
    assert info["status"] == "COMPLETED", logs
    assert "t | host is 127.0.0.1" in logs and "t | t\n" in logs
    assert "[osmo] network: the host's (hostNetwork or network: host); {{host:TASK}} is 127.0.0.1" in logs
    assert groups_of(info)["t-group"]["status"] == "COMPLETED"
    podman_store.check_empty(engine_osmo)
