"""GPUs on the Podman engine: the runner hands each container its GPUs as CDI devices
(``--device nvidia.com/gpu=<index>``), and Podman injects exactly those. A CDI spec of the tests' own
(in /var/run/cdi while the test runs) stands for the one ``nvidia-ctk cdi generate`` writes on a GPU
machine: each fake GPU's device sets a variable naming its UUID, so the task's environment shows which
devices Podman gave it. The stand-in ``nvidia-smi`` (gpu_standin.py) lists the same GPUs."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import pytest

from .conftest import Osmo, write_spec
from .gpu_standin import A40S_AND_L4, install_nvidia_smi


CDI_DIRS = ("/etc/cdi", "/var/run/cdi")  # where Podman 4.3 reads CDI specs (no cdi_spec_dirs setting yet)


@pytest.fixture
def cdi_spec():
    """A stand-in CDI spec in /var/run/cdi (the folder for specs made at run time), removed afterwards.
    A machine that has NVIDIA CDI specs of its own is a real GPU machine: scripts/gpu-check.sh is its test."""
    for folder in CDI_DIRS:
        for name in (os.listdir(folder) if os.path.isdir(folder) else []):
            if "nvidia.com/gpu" in Path(folder, name).read_text(errors="replace"):
                pytest.fail(f"{folder}/{name} holds NVIDIA CDI devices: this is a real GPU machine; run "
                            "bash scripts/gpu-check.sh with OSMO_ENGINE=podman instead", pytrace=False)
    os.makedirs(CDI_DIRS[1], exist_ok=True)
    spec = Path(CDI_DIRS[1], f"osmo-test-gpus-{uuid.uuid4().hex[:8]}.yaml")
    devices = "".join(f'- name: "{index}"\n  containerEdits:\n    env: ["OSMO_TEST_CDI_{index}={gpu}"]\n'
                      for index, gpu, _, _ in A40S_AND_L4)
    spec.write_text(f'cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\ndevices:\n{devices}')
    yield spec
    spec.unlink()


def _cdi_runner(tmp_path, podman_store) -> Osmo:
    folder = install_nvidia_smi(tmp_path / "bin")
    runner = Osmo(tmp_path / "osmo", OSMO_ENGINE="podman", **podman_store.env, PATH=f"{folder}:{os.environ['PATH']}")
    runner.pool(grace_period="1s", lead_head_start="0s", platforms={"ovx-l4": {"gpu_model": "L4"}, "any": None})
    return runner


def test_containers_get_exactly_their_gpus_as_cdi_devices(tmp_path, podman_store, cdi_spec):
    osmo = _cdi_runner(tmp_path, podman_store)
    show = 'env | grep -E "^(OSMO_TEST_CDI|CUDA_VISIBLE|NVIDIA_VISIBLE)" | sort'
    spec = write_spec(tmp_path, f"""
        workflow:
          name: cdi
          resources:
            l4: {{gpu: 1, platform: ovx-l4}}
            two: {{gpu: 2, platform: any}}
          groups:
          - name: on-l4
            tasks:
            - {{name: render, image: ubuntu:24.04, command: [sh, -c, '{show}'], resource: l4}}
          - name: on-two
            tasks:
            - {{name: train, image: ubuntu:24.04, command: [sh, -c, '{show}'], resource: two}}
        """)
    try:
        workflow_id = osmo.submit(str(spec), timeout=180)
        info = osmo.query(workflow_id)
        assert info["status"] == "COMPLETED", info
        (_, a40_0, _, _), (_, a40_1, _, _), (_, l4, _, _) = A40S_AND_L4
        render = osmo.logs(workflow_id, "render")
        assert f"OSMO_TEST_CDI_2={l4}\n" in render and "OSMO_TEST_CDI_0" not in render
        assert f"[osmo] gpu: GPU 2 (NVIDIA L4, 22 GiB, {l4}) (--device nvidia.com/gpu=2)" in render
        train = osmo.logs(workflow_id, "train")
        assert f"OSMO_TEST_CDI_0={a40_0}\nOSMO_TEST_CDI_1={a40_1}\n" in train and "OSMO_TEST_CDI_2" not in train
        assert "VISIBLE_DEVICES=" not in train + render  # in a container the devices are the engine's business
        podman_store.check_empty(osmo)
    finally:
        for line in osmo.processes():
            try:
                os.kill(int(line.split(":")[0]), signal.SIGKILL)
            except OSError:
                pass
