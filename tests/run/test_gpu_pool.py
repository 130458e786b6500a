"""The local pool's GPUs with a real runner: a stand-in ``nvidia-smi`` on PATH (tests/run/gpu_standin.py)
lists fake GPUs, tasks print what the runner told them (NVIDIA_VISIBLE_DEVICES, CUDA_VISIBLE_DEVICES),
``osmo resource list`` / ``osmo pool list`` show who holds what, and a group that waits says why in
``osmo workflow query`` and its task log. scripts/gpu-check.sh runs the same checks on a real GPU machine."""

from __future__ import annotations

import os
import signal

import pytest

from .conftest import Osmo, groups_of, require_namespace_tools, write_spec
from .gpu_standin import A40S_AND_L4, install_nvidia_smi

A40_0, A40_1, L4 = (uuid for _, uuid, _, _ in A40S_AND_L4)
SHOW = 'echo "NV=$NVIDIA_VISIBLE_DEVICES CUDA=$CUDA_VISIBLE_DEVICES"'


@pytest.fixture
def gosmo(tmp_path) -> Osmo:
    """``osmo`` with the stand-in nvidia-smi (two A40s and an L4) first on PATH; platforms bound to models."""
    require_namespace_tools()
    folder = install_nvidia_smi(tmp_path / "bin")
    runner = Osmo(tmp_path / "osmo", PATH=f"{folder}:{os.environ['PATH']}")
    runner.pool(grace_period="1s", lead_head_start="0s",
                platforms={"ovx-a40": {"gpu_model": "A40"}, "ovx-l4": {"gpu_model": "L4"}, "cpu-only": None})
    yield runner
    for line in runner.processes():
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except OSError:
            pass


def one_task(folder, name: str, resources: str, command: str) -> str:
    return str(write_spec(folder, f"""
        workflow:
          name: {name}
          resources:
            default: {resources}
          tasks:
          - name: render
            image: ubuntu:22.04
            command: [sh, -c, '{command}']
        """, f"{name}.yaml"))


def seen(osmo: Osmo, workflow_id: str) -> str:
    line = osmo.wait_log(workflow_id, "NV=", "render").split("NV=", 1)[1].splitlines()[0]
    return "NV=" + line


def test_two_one_gpu_tasks_at_once_get_different_gpus_and_the_resource_list_shows_who_holds_them(gosmo, tmp_path):
    ids = [gosmo.submit(one_task(tmp_path, name, "{gpu: 1}", f"{SHOW}; sleep 30"), wait=False)
           for name in ("sim", "bake")]
    lines = [seen(gosmo, i) for i in ids]
    assert sorted(lines) == sorted([f"NV={A40_0} CUDA={A40_0}", f"NV={A40_1} CUDA={A40_1}"])
    report = gosmo("list", "--json", group="resource").json()
    node = report[0]["nodes"][0]
    held = {g["uuid"]: g["held_by"] for g in node["gpus"]}
    assert held == {A40_0: held[A40_0], A40_1: held[A40_1], L4: None}
    assert {held[A40_0], held[A40_1]} == {f"{ids[0]}/render", f"{ids[1]}/render"}
    assert node["used"]["gpu"] == 2 and node["free"]["gpu"] == 1 and report[0]["free"]["gpu"] == 1
    assert {h["holder"] for h in node["holders"]} == {f"{i}/render-group" for i in ids}
    platforms = {p["name"]: (p["gpu_model"], p["gpus"], p["gpus_free"]) for p in report[0]["platforms"]}
    assert platforms == {"ovx-a40": ("A40", 2, 0), "ovx-l4": ("L4", 1, 1), "cpu-only": (None, 3, 1)}
    text = gosmo("list", group="resource").out
    assert f"GPU 2 NVIDIA L4 {L4}: free" in text and "platform ovx-a40 (GPU model A40): 0 of 2 GPUs free" in text
    pools = gosmo("list", "--json", group="pool").json()
    assert [(p["pool"], p["status"], p["free"]["gpu"], p["capacity"]["gpu"]) for p in pools] == [
        ("local", "ONLINE", 1, 3)]
    for i in ids:
        gosmo("cancel", i)
    after = gosmo("list", "--json", group="resource").json()[0]["nodes"][0]
    assert all(g["held_by"] is None for g in after["gpus"]) and after["holders"] == []


def test_a_two_gpu_group_waits_while_one_is_taken_and_says_why(gosmo, tmp_path):
    sim = gosmo.submit(one_task(tmp_path, "sim", "{gpu: 1, platform: ovx-a40}", f"{SHOW}; sleep 60"), wait=False)
    assert seen(gosmo, sim).startswith(f"NV={A40_0} ")
    train = gosmo.submit(one_task(tmp_path, "train", "{gpu: 2, platform: ovx-a40}", SHOW), wait=False)
    why = f"waiting for the pool: needs 2 A40 GPUs, 1 free, 1 held by {sim}/render"
    log = gosmo.wait_log(train, why, "render")
    assert log.count(why) == 1  # said once, not at every admission try
    info = gosmo.query(train)
    group = groups_of(info)["render-group"]
    assert (group["status"], group["reason"]) == ("SCHEDULING", why)
    assert f"reason: {why}" in gosmo("query", train).out
    gosmo("cancel", sim)
    done = gosmo.wait(train, timeout=60)
    assert done["status"] == "COMPLETED" and groups_of(done)["render-group"]["reason"] is None
    assert f"NV={A40_0},{A40_1} CUDA={A40_0},{A40_1}" in gosmo.logs(train, "render")


def test_a_platform_lands_on_its_model_and_a_task_without_gpus_sees_none(gosmo, tmp_path):
    spec = write_spec(tmp_path, f"""
        workflow:
          name: mixed
          resources:
            l4: {{gpu: 1, platform: ovx-l4}}
            plain: {{cpu: 0.1, platform: cpu-only}}
          groups:
          - name: on-l4
            tasks:
            - {{name: render, image: x, command: [sh, -c, '{SHOW}'], resource: l4}}
          - name: on-cpu
            tasks:
            - {{name: count, image: x, command: [sh, -c, '{SHOW}'], resource: plain}}
        """)
    workflow_id = gosmo.submit(str(spec))
    assert gosmo.query(workflow_id)["status"] == "COMPLETED"
    render = gosmo.logs(workflow_id, "render")
    assert f"NV={L4} CUDA={L4}" in render
    assert f"[osmo] gpu: GPU 2 (NVIDIA L4, 22 GiB, {L4}): NVIDIA_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES" in render
    assert "NV=void CUDA=\n" in gosmo.logs(workflow_id, "count")


def test_a_platform_whose_model_the_pool_lacks_is_refused_at_submit(gosmo, tmp_path):
    spec = one_task(tmp_path, "big", "{gpu: 2, platform: ovx-l4}", SHOW)
    result = gosmo("submit", spec, check=False)
    assert result.code == 2
    assert result.err.strip() == ("osmo: error: task 'render' needs 2 L4 GPUs; pool 'local' has 1 "
                                  "(GPUs: NVIDIA A40, NVIDIA A40, NVIDIA L4)")


def test_a_killed_supervisors_gpus_are_free_again(gosmo, tmp_path):
    sim = gosmo.submit(one_task(tmp_path, "sim", "{gpu: 2}", f"{SHOW}; sleep 60"), wait=False)
    seen(gosmo, sim)
    held = gosmo("list", "--json", group="resource").json()[0]["nodes"][0]["gpus"]
    assert [g["held_by"] for g in held] == [f"{sim}/render", f"{sim}/render", None]
    os.kill(gosmo.query(sim)["supervisor_pid"], signal.SIGKILL)
    assert gosmo.wait(sim, timeout=30)["status"] == "FAILED"
    free = gosmo("list", "--json", group="resource").json()[0]["nodes"][0]["gpus"]
    assert [g["held_by"] for g in free] == [None, None, None]
    train = gosmo.submit(one_task(tmp_path, "train", "{gpu: 2}", SHOW), timeout=60)
    assert gosmo.query(train)["status"] == "COMPLETED"


def test_a_group_waiting_for_memory_says_who_holds_it(gosmo, tmp_path):
    gosmo.pool(grace_period="1s", lead_head_start="0s", capacity={"memory": "1Gi"})
    big = gosmo.submit(one_task(tmp_path, "big", "{memory: 768Mi}", f"{SHOW}; sleep 60"), wait=False)
    seen(gosmo, big)
    small = gosmo.submit(one_task(tmp_path, "small", "{memory: 512Mi}", SHOW), wait=False)
    why = f"waiting for the pool: needs memory 0.5 GiB, 0.2 GiB free, held by {big}/render-group (0.8 GiB)"
    gosmo.wait_log(small, why, "render")
    assert groups_of(gosmo.query(small))["render-group"]["reason"] == why
    gosmo("cancel", big)
    assert gosmo.wait(small, timeout=60)["status"] == "COMPLETED"


def test_unknown_pools_are_one_line_with_the_closest_name(gosmo):
    result = gosmo("list", "--pool", "locl", check=False, group="resource")
    assert (result.code, result.err.strip()) == (3, "osmo: error: no pool 'locl' (did you mean 'local'?)")
    result = gosmo("list", "--pool", "gpu-farm", "--json", check=False, group="resource")
    assert result.code == 3 and '"error": "no pool \'gpu-farm\' (pools: local)"' in result.err
