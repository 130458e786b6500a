"""Host processes (no container engine) get their cpu and memory as cgroup limits (cgroups.py): the
limits hold inside the task, a task over its memory ends with 137 as on Kubernetes, in namespaces
and in plain mode; nothing is left in the cgroup tree afterwards, what a dead supervisor left is
swept, and where no cgroup can be made the log says why.

Real cgroups (cgroup v1, as root): the tests look at this process's own cgroup folders, under which
the supervisors they start make theirs.
"""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

from osmo_run.local import cgroups
from osmo_run.local.limits import TaskLimits
from osmo_run.local.procs import ProcessIdentity

from .conftest import Osmo, tasks_of, write_spec

SPEC = """
    workflow:
      name: lim
      resources:
        small: {cpu: 0.5, memory: 64Mi, storage: 1Gi}
      tasks:
      - name: limited
        image: ubuntu:24.04
        resource: small
        command: [bash, -c]
        args: ['for c in memory cpu; do grep ":$c:" /proc/self/cgroup | cut -d: -f3; done;
                p=$(grep :memory: /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/memory$p/memory.limit_in_bytes;
                p=$(grep :cpu: /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/cpu$p/cpu.cfs_quota_us']
      - name: greedy
        image: ubuntu:24.04
        resource: small
        command: [python3, -c, "x = bytearray(400 * 2**20); print('survived')"]
    """


def _own(controller: str) -> str:
    return os.path.join(cgroups.ROOT, controller) + cgroups._own_paths("/proc/self/cgroup")[controller]


@pytest.fixture
def cgroup_v1():
    if os.path.exists(os.path.join(cgroups.ROOT, "cgroup.controllers")) or os.geteuid() != 0:
        pytest.fail("these tests need cgroup v1 and root (the CI VM); on cgroup v2 the runner says limits are "
                    "not enforced for host processes (test_where_no_cgroup_can_be_made_the_log_says_why)",
                    pytrace=False)


def test_host_processes_get_cpu_and_memory_limits_and_137_over_memory(tmp_path, cgroup_v1):
    spec = write_spec(tmp_path, SPEC)
    runs = {mode: Osmo(tmp_path / mode, OSMO_ISOLATION=mode) for mode in ("namespaces", "none")}
    for osmo in runs.values():  # both at once
        osmo.submit(spec, wait=False)
    for mode, osmo in runs.items():
        info = osmo.wait("lim-1")
        tasks, logs = tasks_of(info), osmo.logs("lim-1")
        assert {name: t["exit_code"] for name, t in tasks.items()} == {"limited": 0, "greedy": 137}, (mode, logs)
        assert "survived" not in logs  # the kernel killed it over its limit
        folder = f"osmo.{info['supervisor_pid']}."
        lines = [line.split(" | ", 1)[1] for line in logs.splitlines() if line.startswith("limited | /")]
        assert len(lines) == 2 and all(folder in line and line.endswith("/lim-1.limited.a1") for line in lines), logs
        assert "limited | 67108864\nlimited | 50000" in logs  # 64 MiB; half of each 100 ms period
        assert ("limited | [osmo] limits: cpu 0.5 (cgroup cpu.cfs_quota_us), memory 64 MiB (cgroup memory, no "
                "swap: more ends the task with 137)") in logs
        assert "limited | [osmo] limits not enforced: storage 1 GiB (host processes get no storage limit)" in logs
        for controller in cgroups.CONTROLLERS:
            assert [e for e in os.listdir(_own(controller)) if e.startswith(folder)] == []  # removed at the end


def test_a_dead_supervisors_cgroups_are_swept(cgroup_v1):
    dead = ProcessIdentity(int(subprocess.check_output(["sh", "-c", "echo $$"]).strip()), 1, "")  # it ended
    alive = ProcessIdentity.of(os.getpid())
    assert not dead.alive() and alive.alive()
    made = []
    for owner in (dead, alive):
        task, notes = cgroups.create(TaskLimits(cpu=0.25, memory=32 * 2**20), owner, "wf-1.t.a1")
        assert task is not None and notes[0].startswith("limits: cpu 0.25"), notes
        made.append(task)
    try:
        removed = cgroups.sweep()
        dead_parents = {os.path.dirname(f) for f in made[0].folders}
        assert dead_parents <= set(removed) and not any(os.path.exists(f) for f in dead_parents)
        assert all(os.path.isdir(f) for f in made[1].folders)  # its supervisor (this process) still runs
        cgroups.sweep(alive)  # a supervisor's own, at its end
        assert not any(os.path.exists(os.path.dirname(f)) for f in made[1].folders)
    finally:
        for task in made:
            task.remove()
            for folder in task.folders:
                if os.path.isdir(os.path.dirname(folder)):
                    os.rmdir(os.path.dirname(folder))


def test_where_no_cgroup_can_be_made_the_log_says_why(tmp_path):
    me = ProcessIdentity(os.getpid(), 1, "")
    limits = TaskLimits(cpu=1, memory=2**30)
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text("4:memory:/a\n1:cpu,cpuacct:/\n0::/\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cgroup.controllers").write_text("cpu memory\n")
    assert cgroups.create(limits, me, "t", root=str(v2), proc_cgroup=str(proc_cgroup)) == (None, [
        "limits: not enforced for host processes: cgroup v2 is not supported for host processes yet (a container "
        "engine enforces them)"])
    empty = tmp_path / "v1"
    empty.mkdir()
    task, notes = cgroups.create(limits, me, "t", root=str(empty), proc_cgroup=str(proc_cgroup))
    assert task is None and notes == [
        f"limits: not enforced for host processes: no cgroup could be made: the memory cgroup controller is not "
        f"mounted at {empty}/memory (a container engine enforces them)"]
    assert cgroups.create(TaskLimits(), me, "t", root=str(v2)) == (None, [])  # nothing asked for: nothing said


def test_a_killed_supervisors_cgroups_go_when_the_next_workflow_starts(osmo, tmp_path, cgroup_v1):
    orphan = write_spec(tmp_path, """
        workflow:
          name: orphan
          resources: {small: {memory: 64Mi}}
          tasks:
          - {name: t, image: ubuntu:24.04, resource: small, command: [bash, -c, "echo started; sleep 300"]}
        """, name="orphan.yaml")
    workflow_id = osmo.submit(orphan, wait=False)
    osmo.wait_log(workflow_id, "t | started")
    pid = osmo.query(workflow_id)["supervisor_pid"]
    left = [os.path.join(_own("memory"), e) for e in os.listdir(_own("memory")) if e.startswith(f"osmo.{pid}.")]
    assert len(left) == 1 and os.path.isdir(os.path.join(left[0], f"{workflow_id}.t.a1"))
    os.kill(pid, signal.SIGKILL)
    assert osmo.wait(workflow_id)["status"] == "FAILED"
    # nobody removed it, unless the supervisor of another test's workflow (running beside this one) started
    # or ended meanwhile: every supervisor sweeps those of dead supervisors
    osmo.submit(write_spec(tmp_path, "workflow: {name: next, tasks: [{name: t, image: x, command: ['true']}]}",
                           name="next.yaml"))
    assert osmo.query("next-1")["status"] == "COMPLETED"
    assert not os.path.exists(left[0])  # the next supervisor swept it
    assert osmo.processes_left() == []
