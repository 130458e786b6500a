"""The README's workflow example runs as shown: two tasks, a dataset output, data through the store;
as host processes, and with each task in its image (ubuntu:24.04) on Podman."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def osmo(env, *args):
    return subprocess.run([sys.executable, "-m", "osmo_store.cli.main", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("engine", ["none", "podman"])
def test_readme_pipeline_runs_and_saves_the_model(tmp_path, engine, request):
    env = {**os.environ, "OSMO_STATE_DIR": str(tmp_path / "state"), "OSMO_STORE": str(tmp_path / "store"),
           "OSMO_CACHE_DIR": str(tmp_path / "cache"), "OSMO_ENGINE": engine}
    if engine == "podman":
        env.update(request.getfixturevalue("podman_store").env)
    started = time.monotonic()
    run = osmo(env, "workflow", "submit", "examples/pipeline.yaml", "--wait")
    print(f"README pipeline, engine {engine}: {time.monotonic() - started:.1f} s")
    assert run.returncode == 0, run.stderr
    assert "demo-pipeline-1 COMPLETED" in run.stdout
    query = osmo(env, "workflow", "query", "demo-pipeline-1")
    assert ("Isolation: container engine podman" in query.stdout) == (engine == "podman"), query.stdout
    logs = osmo(env, "workflow", "logs", "demo-pipeline-1", "--task", "train")
    assert "mean reward 4.5" in logs.stdout
    down = osmo(env, "dataset", "download", "demo-model", str(tmp_path / "model"))
    assert down.returncode == 0, down.stderr
    assert (tmp_path / "model" / "model.txt").read_text() == "mean reward 4.5\n"
