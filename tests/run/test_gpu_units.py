"""GPUs of the local pool, below the runner: reading nvidia-smi (a stand-in script), matching models,
picking GPUs for a gang, telling a task (variables, engine options), the pool config's platforms, and
the ledger in a real state database (two supervisors never get the same GPU; a dead one's GPUs come
back; a group that does not fit says why)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from osmo_run.local.engine import Engine
from osmo_run.local.engine_cli import ContainerSpec, EngineCli
from osmo_run.local.errors import RunnerError
from osmo_run.local.gpus import (Gpu, GpuNeed, GpuQueryError, detect_gpus, engine_options, host_environment,
                                 model_matches, parse_query, pick)
from osmo_run.local.limits import TaskLimits, container_args
from osmo_run.local.paths import StatePaths
from osmo_run.local.pool import Ledger, check_workflow, plan_gang, pool_capacity, pool_gpus
from osmo_run.local.procs import ProcessIdentity
from osmo_run.local.settings import Capacity, Settings, load_settings
from osmo_run.local.state import StateStore
from osmo_run.spec import load_text

from .gpu_standin import A40S_AND_L4, install_nvidia_smi

A40_0, A40_1, L4 = (Gpu(i, u, n, m * 2**20) for i, u, n, m in A40S_AND_L4)


def test_the_query_is_read_from_the_stand_in_on_path_or_the_configured_command(tmp_path, monkeypatch):
    folder = install_nvidia_smi(tmp_path / "bin")
    monkeypatch.delenv("OSMO_NVIDIA_SMI", raising=False)
    monkeypatch.setenv("PATH", f"{folder}:{os.environ['PATH']}")
    assert detect_gpus() == [A40_0, A40_1, L4]
    other = install_nvidia_smi(tmp_path / "other", A40S_AND_L4[2:])
    assert detect_gpus(str(other / "nvidia-smi")) == [Gpu(2, L4.uuid, "NVIDIA L4", L4.memory)]
    monkeypatch.setenv("OSMO_NVIDIA_SMI", str(other / "nvidia-smi"))  # the variable beats the config
    assert detect_gpus(str(folder / "nvidia-smi")) == [Gpu(2, L4.uuid, "NVIDIA L4", L4.memory)]
    monkeypatch.setenv("OSMO_NVIDIA_SMI", str(tmp_path / "missing"))
    assert detect_gpus() == []


def test_a_failing_or_garbled_nvidia_smi_means_no_gpu(tmp_path, monkeypatch):
    broken = tmp_path / "nvidia-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    broken.chmod(0o755)
    assert detect_gpus(str(broken)) == []
    with pytest.raises(GpuQueryError, match="line 2: expected index, uuid, name, memory.total"):
        parse_query("0, GPU-x, NVIDIA A40, 46068\n1, GPU-y\n")
    with pytest.raises(GpuQueryError, match="line 1: not a GPU's index"):
        parse_query("zero, GPU-x, NVIDIA A40, 46068\n")
    assert parse_query("0, GPU-x, Tesla T4, [N/A]\n") == [Gpu(0, "GPU-x", "Tesla T4", 0)]


def test_models_match_whole_words_only():
    assert model_matches("A40", A40_0) and model_matches("a40", A40_0) and model_matches(None, L4)
    assert not model_matches("A4", A40_0) and not model_matches("A40", Gpu(3, "u", "NVIDIA A400", 1))
    assert model_matches("A100", Gpu(4, "u", "NVIDIA A100-SXM4-80GB", 1))


def test_a_gang_gets_its_gpus_all_at_once_model_bound_needs_first():
    chosen = pick([GpuNeed("any", 1), GpuNeed("l4", 1, "L4"), GpuNeed("none", 0)], [A40_0, L4])
    assert chosen == {"l4": (L4,), "any": (A40_0,)}
    assert pick([GpuNeed("a", 2, "A40")], [A40_0, L4]) is None
    assert pick([GpuNeed("a", 1), GpuNeed("b", 1)], [A40_1]) is None


def test_a_task_is_told_its_gpus_by_uuid_and_a_gpu_less_task_sees_none():
    assert host_environment((A40_0, L4), True) == {"NVIDIA_VISIBLE_DEVICES": f"{A40_0.uuid},{L4.uuid}",
                                                   "CUDA_VISIBLE_DEVICES": f"{A40_0.uuid},{L4.uuid}"}
    assert host_environment((), True) == {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}
    assert host_environment((), False) == {}


def test_engines_get_cdi_devices_or_the_gpus_option_even_without_cgroup_controllers():
    assert engine_options("podman", (A40_0, L4)) == ["--device", "nvidia.com/gpu=0", "--device", "nvidia.com/gpu=2"]
    assert engine_options("docker", (A40_0, L4)) == ["--gpus", f'"device={A40_0.uuid},{L4.uuid}"']
    rootless_v1 = Engine("podman", "podman", "4.3.1", rootless=True, cgroup_version="v1")
    args, notes = container_args(TaskLimits(gpu=1, gpus=(A40_1,)), rootless_v1)
    assert args == ["--device", "nvidia.com/gpu=1"]
    assert notes[-1] == f"gpu: GPU 1 (NVIDIA A40, 45 GiB, {A40_1.uuid}) (--device nvidia.com/gpu=1)"
    docker = Engine("docker", "docker", "24", controllers=("cpu", "memory"))
    args, _ = container_args(TaskLimits(cpu=1.0, gpu=1, gpus=(A40_1,)), docker)
    assert args == ["--cpus", "1", "--gpus", f'"device={A40_1.uuid}"']
    argv = EngineCli("docker", "docker").create(ContainerSpec("c", "img", ("sh",), extra=tuple(args)))
    assert argv[argv.index("--gpus") + 1] == f'"device={A40_1.uuid}"' and argv.index("--gpus") < argv.index("img")
    limits = TaskLimits(gpu=1, gpus=(A40_1,))
    assert TaskLimits.from_json(limits.to_json()) == limits


def test_the_pool_config_maps_platforms_to_gpu_models_and_bad_entries_are_one_line(tmp_path):
    config = tmp_path / "pool.yaml"
    config.write_text("platforms:\n  ovx-a40: {gpu_model: A40}\n  cpu-only:\ngpu_command: /opt/nvidia-smi\n")
    settings = load_settings(str(config))
    assert settings.platforms == ("ovx-a40", "cpu-only") and settings.platform_models == {"ovx-a40": "A40"}
    assert settings.gpu_command == "/opt/nvidia-smi"
    assert Settings.from_json(settings.to_json()) == settings
    config.write_text("platforms: [a, b]\n")
    assert load_settings(str(config)).platforms == ("a", "b")
    config.write_text("platforms:\n  ovx-a40: {model: A40}\n")
    with pytest.raises(RunnerError) as caught:
        load_settings(str(config))
    assert str(caught.value) == f"{config}: platforms.ovx-a40: expected a mapping with gpu_model (or nothing)"


WORKFLOW = textwrap.dedent("""
    workflow:
      name: sim
      resources:
        a40: {gpu: 2, platform: ovx-a40}
        l4: {gpu: 1, platform: ovx-l4}
      groups:
      - name: g
        tasks:
        - {name: render, image: x, command: [true], resource: a40, lead: true}
        - {name: lights, image: x, command: [true], resource: l4}
""")


def _settings(**more) -> Settings:
    return Settings(platforms=("ovx-a40", "ovx-l4"), platform_models={"ovx-a40": "A40", "ovx-l4": "L4"}, **more)


def test_a_platform_bound_to_a_model_the_pool_lacks_is_refused_at_submit():
    workflow = load_text(WORKFLOW).workflow
    cap = Capacity(2.0, 2**33, 3)
    assert check_workflow(workflow, _settings(), cap, [A40_0, A40_1, L4]) == []
    problems = check_workflow(workflow, _settings(), Capacity(2.0, 2**33, 2), [A40_0, L4])
    assert problems == ["task 'render' needs 2 A40 GPUs; pool 'local' has 1 (GPUs: NVIDIA A40, NVIDIA L4)"]


def _supervisor(tmp_path) -> subprocess.Popen:
    """A live process that stands for another workflow's supervisor (the ledger checks owners' liveness)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=tmp_path)


def test_the_ledger_never_hands_a_gpu_out_twice_and_frees_a_dead_supervisors_gpus(tmp_path):
    workflow = load_text(WORKFLOW).workflow
    group = workflow.groups[0]
    cap = Capacity(2.0, 2**33, 3)
    plan = plan_gang(workflow, group, _settings(), cap)
    assert [(n.task, n.count, n.model) for n in plan.gpu_needs] == [("render", 2, "A40"), ("lights", 1, "L4")]
    state = StateStore(StatePaths(str(tmp_path / "state")))
    other = _supervisor(tmp_path)
    try:
        theirs = Ledger(state.conn, ProcessIdentity.of(other.pid), [A40_0, A40_1, L4])
        ours = Ledger(state.conn, ProcessIdentity.of(os.getpid()), [A40_0, A40_1, L4])
        first = theirs.try_admit("sim-1", "g", plan, cap)
        assert first.admitted and first.gpus == {"render": (A40_0, A40_1), "lights": (L4,)}
        waiting = ours.try_admit("sim-2", "g", plan, cap)
        assert not waiting.admitted
        assert waiting.why == ("needs 2 A40 GPUs, 0 free, 2 held by sim-1/render; "
                               "needs 1 L4 GPU, 0 free, 1 held by sim-1/lights")
        assert theirs.try_admit("sim-1", "g", plan, cap).gpus == first.gpus  # asking again: the same GPUs
        other.kill()
        other.wait()
        second = ours.try_admit("sim-2", "g", plan, cap)
        assert second.admitted and second.gpus == first.gpus
        rows = state.conn.execute("SELECT workflow_id, task FROM gpu_assignments ORDER BY gpu_index").fetchall()
        assert [tuple(r) for r in rows] == [("sim-2", "render"), ("sim-2", "render"), ("sim-2", "lights")]
        ours.release("sim-2", "g")
        assert state.conn.execute("SELECT COUNT(*) FROM gpu_assignments").fetchone()[0] == 0
    finally:
        other.kill()
        other.wait()
        state.close()


def test_a_group_waiting_for_memory_says_who_holds_it(tmp_path):
    text = WORKFLOW.replace("{gpu: 2, platform: ovx-a40}", "{memory: 1Gi}").replace("{gpu: 1, platform: ovx-l4}",
                                                                                   "{cpu: 1}")
    workflow = load_text(text).workflow
    cap = Capacity(2.0, 2**31, 0)
    plan = plan_gang(workflow, workflow.groups[0], Settings(), cap)
    state = StateStore(StatePaths(str(tmp_path / "state")))
    try:
        me = Ledger(state.conn, ProcessIdentity.of(os.getpid()))
        assert me.try_admit("big-1", "g", plan, cap).admitted
        assert me.try_admit("big-2", "g", plan, cap).admitted  # 2 GiB in all: both fit
        why = me.try_admit("big-3", "g", plan, cap).why
        assert why == ("needs cpu 1, 0 free, held by big-1/g (1), big-2/g (1); needs memory 1.0 GiB, 0.0 GiB free, "
                       "held by big-1/g (1.0 GiB), big-2/g (1.0 GiB)")
    finally:
        state.close()


def test_capacity_override_takes_the_first_gpus(tmp_path, monkeypatch):
    folder = install_nvidia_smi(tmp_path / "bin")
    monkeypatch.setenv("OSMO_NVIDIA_SMI", str(folder / "nvidia-smi"))
    assert pool_capacity(Settings()).gpu == 3 and pool_gpus(Settings()) == [A40_0, A40_1, L4]
    assert pool_gpus(Settings(capacity={"gpu": 1})) == [A40_0] and pool_capacity(Settings(capacity={"gpu": 1})).gpu == 1
