"""Runtime semantics checked end to end through the local runner: SIGKILL after the grace
period when a lead ends, WAITING downstream groups, the barrier, uploads after a non-zero exit with the
highest code winning, COMPLETE exit actions for non-zero codes, ``- task: WORKFLOW_ID:TASK`` inputs and
the default metadata of a user dataset, ``files:`` over an existing host file, detected capacity and
the fallback to plain processes, item retries that resume, and the README's pipeline in under a minute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from .conftest import Osmo, groups_of, tasks_of, write_spec

ROOT = Path(__file__).resolve().parents[2]


def _at(stamp: str) -> float:
    return datetime.fromisoformat(stamp.rstrip("Z")).timestamp()


def _metadata(osmo: Osmo, ref: str) -> dict:
    return osmo("dataset", "metadata", ref, "--json", group="").json()["metadata"]


# -- 3. execution semantics -------------------------------------------------------------------------

def test_lead_end_sigkills_a_task_that_ignores_sigterm_and_downstream_waits(any_osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: stubborn
          groups:
          - name: team
            tasks:
            - {name: boss, lead: true, image: u, command: [sh, -c, "sleep 4; echo boss done"]}
            - name: worker
              image: u
              command: [sh, -c, "trap '' TERM; echo worker ready; while true; do sleep 0.1; done"]
          - name: next
            tasks:
            - {name: reader, image: u, command: [echo, read], inputs: [{task: boss}]}
        """)
    workflow_id = any_osmo.submit(spec, wait=False)
    any_osmo.wait_log(workflow_id, "worker ready", "worker")
    running = any_osmo.query(workflow_id)
    assert running["status"] == "RUNNING"
    assert groups_of(running)["next"]["status"] == "WAITING"  # upstream not done yet
    assert tasks_of(running)["reader"]["status"] == "WAITING"
    info = any_osmo.wait(workflow_id, 60)
    assert info["status"] == "COMPLETED", any_osmo.logs(workflow_id)
    boss, worker = tasks_of(info)["boss"], tasks_of(info)["worker"]
    assert worker["status"] == "COMPLETED"
    assert worker["reason"] == "stopped when the lead task 'boss' ended"
    attempt = worker["attempts"][0]
    assert attempt["command_exit_code"] == 137  # SIGTERM was ignored: SIGKILL after the grace period
    after_lead = _at(attempt["command"]["ended"]) - _at(boss["attempts"][0]["command"]["ended"])
    # grace_period is 1 s: killed by the task's init after it, well before the supervisor's own
    # backstop (grace + 5 s after the stop, counted from when the lead's upload ended)
    assert 0.8 <= after_lead < 5, after_lead
    assert tasks_of(info)["reader"]["status"] == "COMPLETED"
    assert any_osmo.processes_left() == []


def _slow_download_sidecar(tmp_path: Path, task: str, seconds: float) -> list[str]:
    """A sidecar command (pool config ``sidecar:``) whose download is slow for one task only."""
    script = tmp_path / "slow-sidecar.sh"
    script.write_text(f"""#!/bin/sh
case "$3" in */runs/{task}/*) [ "$1" = download ] && sleep {seconds};; esac
exec {sys.executable} -m sidecar.main "$@"
""")
    return ["sh", str(script)]


@pytest.mark.parametrize("barrier", [True, False])
def test_barrier_starts_the_commands_once_every_input_is_in_place(osmo, tmp_path, barrier):
    osmo.pool(grace_period="1s", lead_head_start=0, sidecar=_slow_download_sidecar(tmp_path, "peer", 4))
    spec = write_spec(tmp_path, f"""
        workflow:
          name: gate
          groups:
          - name: seed
            tasks:
            - {{name: source, image: u, command: [sh, -c, "echo s > {{{{output}}}}/s.txt"]}}
          - name: pair
            barrier: {str(barrier).lower()}
            tasks:
            - {{name: lead, lead: true, image: u, command: [sleep, "6"]}}
            - {{name: peer, image: u, command: [cat, "{{{{input:0}}}}/s.txt"], inputs: [{{task: source}}]}}
        """)
    osmo.submit(spec, timeout=120)
    info = osmo.query("gate-1")
    assert info["status"] == "COMPLETED", osmo.logs("gate-1")
    lead, peer = (tasks_of(info)[n]["attempts"][0] for n in ("lead", "peer"))
    lead_wait = _at(lead["command"]["started"]) - _at(lead["started"])
    if barrier:  # the lead (no inputs) waited for the peer's slow download
        assert lead_wait >= 3.5, lead_wait
        assert abs(_at(lead["command"]["started"]) - _at(peer["command"]["started"])) < 2
    else:
        assert lead_wait < 3, lead_wait
        assert _at(peer["command"]["started"]) - _at(lead["command"]["started"]) >= 3


def test_nonzero_exit_still_uploads_and_the_highest_code_wins(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: partial
          tasks:
          - name: writer
            image: u
            command: [sh, -c, "echo half > {{output}}/half.txt; exit 1"]
            outputs:
            - dataset: {name: results, path: not-written}
        """)
    osmo.submit(spec)
    info = osmo.query("partial-1")
    task = tasks_of(info)["writer"]
    assert task["attempts"][0]["command_exit_code"] == 1
    assert (task["status"], task["exit_code"]) == ("FAILED", 2012)  # 1 and 2012: the highest wins
    assert (info["status"], info["exit_code"]) == ("FAILED", 2012)
    # the command failed, and its output was still stored, marked with its exit code
    assert [(d["dataset"], d["files"]) for d in task["datasets_written"]] == [("partial-1--writer", 1)]
    assert _metadata(osmo, "partial-1--writer:1")["exit_code"] == "1"
    log = osmo.logs("partial-1", "writer")
    assert "[osmo-sidecar] the task exited with code 1; uploading its outputs anyway" in log
    assert "[osmo-sidecar] output 1 (dataset results): failed" in log  # sidecar lines are marked


def test_complete_and_fail_exit_actions_with_ranges(osmo, tmp_path):
    spec = write_spec(tmp_path, """
        workflow:
          name: actions
          tasks:
          - name: tolerated
            image: u
            command: [sh, -c, "exit 7"]
            exitActions: {COMPLETE: "0-1,7", FAIL: 2-6}
          - name: after
            image: u
            command: [echo, ran]
            inputs: [{task: tolerated}]
          - name: refused
            image: u
            command: [sh, -c, "exit 4"]
            exitActions: {COMPLETE: "0-1,7", FAIL: 2-6}
        """)
    osmo.submit(spec)
    tasks = tasks_of(osmo.query("actions-1"))
    assert (tasks["tolerated"]["status"], tasks["tolerated"]["exit_code"]) == ("COMPLETED", 7)
    assert tasks["after"]["status"] == "COMPLETED"
    assert (tasks["refused"]["status"], tasks["refused"]["exit_code"]) == ("FAILED", 4)


# -- 6. data: another workflow's task, default metadata of a user dataset ------------------------------

def test_another_workflows_task_output_and_default_metadata(osmo, tmp_path):
    maker = write_spec(tmp_path, """
        workflow:
          name: maker
          tasks:
          - {name: make, image: u, command: [sh, -c, "echo from maker > {{output}}/data.txt"]}
        """, "maker.yaml")
    osmo.submit(maker)
    assert osmo.query("maker-1")["status"] == "COMPLETED"
    reader = write_spec(tmp_path, """
        workflow:
          name: reader
          tasks:
          - name: use
            image: u
            command: [sh, -c, "cat {{input:make}}/data.txt > {{output}}/copy.txt; cat {{input:0}}/data.txt"]
            inputs:
            - task: maker-1:make
            outputs:
            - dataset: {name: combined, metadata: ["stage=eval"], labels: ["team=robots"]}
        """, "reader.yaml")
    osmo.submit(reader)
    info = osmo.query("reader-1")
    assert info["status"] == "COMPLETED", osmo.logs("reader-1")
    task = tasks_of(info)["use"]
    assert [(d["dataset"], d["version"]) for d in task["datasets_read"]] == [("maker-1--make", 1)]
    assert "from maker" in osmo.logs("reader-1", "use")
    meta = _metadata(osmo, "combined:1")
    assert meta["workflow_id"] == "reader-1" and meta["task"] == "use"
    assert meta["input.0"] == "maker-1--make:1"  # the exact version read
    assert meta["stage"] == "eval"


# -- 5. files: never clobber the host's files ----------------------------------------------------------

def test_files_never_clobber_an_existing_host_file(any_osmo, tmp_path):
    folder = Path("/var/tmp") / f"osmo-semantics-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    host_file = folder / "app.conf"
    host_file.write_text("the host's contents\n")
    try:
        spec = write_spec(tmp_path, f"""
            workflow:
              name: clobber
              tasks:
              - name: writer
                image: u
                command: [sh, -c, "cat {host_file} > {{{{output}}}}/seen.txt"]
                files:
                - {{path: {host_file}, contents: "the task's contents"}}
            """)
        any_osmo.submit(spec)
        info = any_osmo.query("clobber-1")
        assert info["status"] == "COMPLETED", any_osmo.logs("clobber-1")
        out = Path(tasks_of(info)["writer"]["attempts"][0]["run_dir"]) / "data" / "output" / "seen.txt"
        assert out.read_text().strip() == "the task's contents"
        assert host_file.read_text() == "the host's contents\n"
        assert sorted(os.listdir(folder)) == ["app.conf"]
    finally:
        for name in os.listdir(folder):
            os.unlink(folder / name)
        folder.rmdir()


# -- 4. the local pool: detected capacity ------------------------------------------------------------

def test_capacity_is_detected_from_this_machine():
    from osmo_run.local.pool import pool_capacity
    from osmo_run.local.settings import Settings

    cap = pool_capacity(Settings())
    assert cap.cpu == len(os.sched_getaffinity(0))
    with open("/proc/meminfo", encoding="ascii") as f:
        total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    assert cap.memory == total
    nvidia = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout \
        if any(os.access(os.path.join(p, "nvidia-smi"), os.X_OK) for p in os.environ["PATH"].split(":")) else ""
    assert cap.gpu == sum(1 for line in nvidia.splitlines() if line.startswith("GPU "))


def test_a_gang_larger_than_the_detected_pool_is_mapped_and_logged(osmo, tmp_path):
    cpus = len(os.sched_getaffinity(0))
    spec = write_spec(tmp_path, f"""
        workflow:
          name: wide
          resources:
            big: {{cpu: {cpus + 1}, platform: dgx-h100}}
          tasks:
          - {{name: only, image: u, command: [echo, fine], resource: big}}
        """)
    osmo.submit(spec)
    assert osmo.query("wide-1")["status"] == "COMPLETED"
    log = osmo.logs("wide-1", "only")
    assert f"[osmo] platform dgx-h100 -> pool 'local': this machine (" in log
    assert f"{cpus} CPU" in log  # "1 CPU" or "2 CPUs"
    assert f"the group asks for more than the pool has (cpu {cpus + 1} > {cpus}" in log


# -- 5. isolation: the fallback when namespaces are not available -------------------------------------

def test_auto_isolation_falls_back_to_plain_processes_without_root(monkeypatch):
    """Not root: namespaces when unprivileged user namespaces work (the probe says so), else plain
    processes with the reason. The whole runner as an unprivileged user, both ways, is in
    tests/run/test_rootless_isolation.py."""
    from osmo_run.local import isolation
    from osmo_run.local.errors import RunnerError
    from osmo_run.local.settings import Settings

    monkeypatch.setattr(isolation.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(isolation, "_probe", lambda: "the namespace probe failed: unshare: No space left on device")
    plain = isolation.decide(Settings(isolation="auto"))
    assert not plain.namespaces and "not running as root, and unprivileged user namespaces do not work here" \
        in plain.reason and "No space left on device" in plain.reason
    with pytest.raises(RunnerError, match="isolation: namespaces was asked for, but not running as root, "
                                          "and unprivileged user namespaces do not work here"):
        isolation.decide(Settings(isolation="namespaces"))
    monkeypatch.setattr(isolation, "_probe", lambda: "")
    rootless = isolation.decide(Settings(isolation="auto"))
    assert rootless.namespaces and rootless.rootless and "rootless" in rootless.describe()


# -- 6. transient errors: an item is retried and resumes -----------------------------------------------

def test_url_items_are_retried_and_resume(tmp_path, monkeypatch):
    from fsspec.implementations.local import LocalFileSystem

    from osmo_run.contract import InputSpec, OutputSpec
    from sidecar.download import _url_input
    from sidecar.retry import RetryPolicy
    from sidecar.upload import _url_output

    source = tmp_path / "source"
    source.mkdir()
    for name in ("a.txt", "b.txt", "c.txt"):
        (source / name).write_text(f"{name}\n")
    calls: dict[str, int] = {}
    real_get, real_put = LocalFileSystem.get_file, LocalFileSystem.put_file

    def flaky(real):
        def call(self, src, dst, *args, **kwargs):
            name = os.path.basename(str(src))
            calls[name] = calls.get(name, 0) + 1
            if name == "b.txt" and calls[name] == 1:
                raise ConnectionError("connection reset by peer")
            return real(self, src, dst, *args, **kwargs)
        return call

    policy = RetryPolicy(attempts=3, delay=0)
    monkeypatch.setattr(LocalFileSystem, "get_file", flaky(real_get))
    dest = tmp_path / "input"
    dest.mkdir()
    _url_input("input 0", InputSpec("url", url=f"file://{source}/"), str(dest), policy)
    assert sorted(os.listdir(dest)) == ["a.txt", "b.txt", "c.txt"]
    assert calls == {"a.txt": 1, "b.txt": 2, "c.txt": 1}  # the retry fetched only what was missing

    calls.clear()
    monkeypatch.setattr(LocalFileSystem, "put_file", flaky(real_put))
    target = tmp_path / "copy"
    _url_output("output 1", OutputSpec("url", url=f"file://{target}/"), str(source), policy)
    assert sorted(os.listdir(target)) == ["a.txt", "b.txt", "c.txt"]
    assert calls == {"a.txt": 1, "b.txt": 2, "c.txt": 1}


# -- 10. the README's pipeline, as shown, in under a minute -------------------------------------------

def test_readme_pipeline_commands_in_under_a_minute(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMO_")}
    env.update(OSMO_STATE_DIR=str(tmp_path / "state"), OSMO_STORE=str(tmp_path / "store"),
               OSMO_CACHE_DIR=str(tmp_path / "cache"), OSMO_CONFIG=str(tmp_path / "config.yaml"),
               OSMO_POOL_CONFIG=str(tmp_path / "pool.yaml"),
               OSMO_ENGINE="none")  # the machine's Podman has no images (test_readme_example.py: on Podman too)

    def osmo(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "osmo_store.cli.main", *args], env=env, cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done.stdout

    started = time.monotonic()
    assert "2 groups, 2 tasks" in osmo("workflow", "validate", "examples/pipeline.yaml")
    assert "demo-pipeline-1 COMPLETED" in osmo("workflow", "submit", "examples/pipeline.yaml", "--wait")
    query = osmo("workflow", "query", "demo-pipeline-1")
    assert "demo-pipeline-1--simulate:1" in query and "demo-model:1" in query
    logs = osmo("workflow", "logs", "demo-pipeline-1", "--task", "train")
    assert "mean reward 4.5" in logs and "[osmo-sidecar] " in logs
    listed = osmo("dataset", "list", "--json")
    assert "demo-model" in listed and "demo-pipeline-1--simulate" in listed
    osmo("dataset", "download", "demo-model", str(tmp_path / "model"))
    assert (tmp_path / "model" / "model.txt").read_text() == "mean reward 4.5\n"
    assert time.monotonic() - started < 60
    assert json.loads(osmo("workflow", "query", "demo-pipeline-1", "--json"))["status"] == "COMPLETED"


# -- 7. a supervisor that died with the machine (another boot) or whose pid was reused ---------------

def test_a_supervisor_from_another_boot_or_a_reused_pid_is_dead():
    from osmo_run.local.procs import ProcessIdentity, boot_id

    me = ProcessIdentity.of(os.getpid())
    assert me is not None and me.boot == boot_id() and me.alive()
    assert not ProcessIdentity(me.pid, me.start, "another-boot").alive()  # the machine restarted
    assert not ProcessIdentity(me.pid, me.start + 1, me.boot).alive()  # same pid, another process
