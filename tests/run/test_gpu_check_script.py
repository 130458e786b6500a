"""scripts/gpu-check.sh, which a person runs on a real GPU machine, runs here against the stand-in
nvidia-smi (two A40s, tests/run/gpu_standin.py) and passes its checks; without a second GPU it refuses
in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .conftest import require_namespace_tools
from .gpu_standin import A40S_AND_L4, install_nvidia_smi

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"


def _run(tmp_path: Path, gpus) -> subprocess.CompletedProcess:
    folder = install_nvidia_smi(tmp_path / "bin", gpus)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OSMO_")}
    env.update(PATH=f"{folder}:{os.environ['PATH']}", OSMO=f"{sys.executable} -m osmo_store.cli.main",
               TMPDIR=str(tmp_path))
    return subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=240)


def test_the_gpu_check_passes_on_the_stand_in_gpus(tmp_path):
    require_namespace_tools()
    done = _run(tmp_path, A40S_AND_L4[:2])
    assert done.returncode == 0, done.stdout + done.stderr
    passed = [line for line in done.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert [line.split(":")[0] for line in passed] == ["PASS", "PASS", "PASS"]
    assert "waiting for the pool: needs 2 GPUs, 1 free, 1 held by hold-1/show" in done.stdout


def test_the_gpu_check_needs_two_gpus(tmp_path):
    done = _run(tmp_path, A40S_AND_L4[:1])
    assert (done.returncode, done.stderr) == (2, "gpu-check: this machine has 1 GPU(s); the checks need at least 2\n")
