"""The compatibility bar: every OSMO tutorial workflow in tests/data/osmo-workflows/ runs unchanged
to COMPLETED on the local runner, with only what a user supplies from outside the file: ``--set``
values, an S3 endpoint and credentials in the environment (a loopback S3 server whose ``my-bucket``
the test creates and seeds), a dataset in the store where a tutorial reads one.

Each runs twice: as host processes (namespaces), and in its image on Podman (``podman_store``: the
test task image under every image name the tutorials use).

All workflows of an engine are submitted at once when the first test needs them and run beside the
rest of the suite; the slowest (``combination_workflow_complex.yaml`` sleeps 120 s in its lead on
purpose) are checked last (``osmo_late``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest

from helpers.parallel import LOCAL_RUNNER
from helpers.tools import require_tool

from .conftest import Osmo, groups_of, tasks_of

DATA = Path(__file__).resolve().parent.parent / "data" / "osmo-workflows"
NAMES = sorted(p.name for p in DATA.glob("*.yaml"))
BUCKET = "my-bucket"
SETS = {
    "data_filter.yaml": ["--set", "storage_url=s3://my-bucket"],
    # the tutorial's own template values: obstacles always clearable, so it converges in epoch 1
    "robot_simulation.yaml": ["--set", "steps_per_epoch=3", "--set", "jump_distance=20",
                              "--set", "safe_reaction_distance=3"],
}
LATE = {"combination_workflow_complex.yaml", "group_tasks_communication.yaml"}
SUBMITTERS = 4
# host programs a tutorial's scripts call (tests/helpers/tools.py): its test fails naming the install command
TOOLS = {"group_tasks_communication.yaml": ["nc"], "robot_simulation.yaml": ["curl"]}
SEED = {
    "data/readme.txt": b"seeded for data_download\n",
    "data/sub/values.csv": b"1,2,3\n",
    "raw-data/s3_data.txt": b"raw data from s3\n",
    "source-data/a.txt": b"a\n",
    "source-data/nested/b.txt": b"b\n",
    "source-data/c.json": b"{}\n",
}


ENGINES = ("host", "podman")
TIERS = {"host": LOCAL_RUNNER, "podman": LOCAL_RUNNER}  # xdist groups (tests/helpers/parallel.py)


class Conformance:
    def __init__(self, root: Path, s3_server, engine: str = "host", engine_env: dict | None = None) -> None:
        self.root, self.s3, self.engine = root, s3_server, engine
        self.engine_env = {"OSMO_ENGINE": "podman", **engine_env} if engine_env else {}
        self.runs: dict[str, tuple[Osmo, str]] = {}
        self.shared = self.osmo("dataset-pair")  # dataset_upload, then dataset_download: one store

    def osmo(self, name: str) -> Osmo:
        runner = Osmo(self.root / name.replace(".yaml", ""), **self.s3.env(), **self.engine_env)
        runner.pool(grace_period="2s")
        return runner

    def start(self) -> None:
        client = self.s3.client()
        try:
            client.create_bucket(Bucket=BUCKET)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        for key, body in SEED.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        names = sorted((n for n in NAMES if n != "dataset_download.yaml"),  # after dataset_upload (its test)
                       key=lambda n: n not in LATE)  # the slowest first
        with ThreadPoolExecutor(SUBMITTERS) as pool:  # submitting takes seconds each: several at once
            for name, run in zip(names, pool.map(self._submit, names)):
                self.runs[name] = run

    def _submit(self, name: str) -> tuple[Osmo, str]:
        runner = self.shared if name == "dataset_upload.yaml" else self.osmo(name)
        if name == "data_and_dataset_combined.yaml":
            folder = runner.root / "my_dataset"
            folder.mkdir()
            (folder / "data.txt").write_text("my_dataset from the store\n")
            runner("dataset", "upload", "my_dataset", str(folder), group="")
        return runner, runner.submit(DATA / name, *SETS.get(name, []), wait=False)

    def finished(self, name: str, timeout: float = 200) -> tuple[Osmo, dict]:
        for tool in TOOLS.get(name, []):
            require_tool(tool)
        runner, workflow_id = self.runs[name]
        info = runner.wait(workflow_id, timeout)
        assert info["status"] == "COMPLETED", runner.logs(workflow_id)
        assert all(t["status"] == "COMPLETED" for t in tasks_of(info).values())
        return runner, info

    def object(self, key: str) -> bytes:
        return self.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()


@pytest.fixture(scope="session")
def conformance_host(tmp_path_factory, s3_server) -> Conformance:
    runs = Conformance(tmp_path_factory.mktemp("conformance"), s3_server)
    runs.start()
    return runs


@pytest.fixture(scope="session")
def conformance_podman(tmp_path_factory, s3_server, podman_store) -> Conformance:
    runs = Conformance(tmp_path_factory.mktemp("conformance-podman"), s3_server, "podman", podman_store.env)
    runs.start()
    yield runs
    podman_store.check_empty()  # at the session's end: every workflow in the storage has ended


@pytest.fixture(params=[pytest.param(engine, marks=pytest.mark.xdist_group(TIERS[engine])) for engine in ENGINES])
def conformance(request) -> Conformance:
    """The tutorials' runs as host processes, then the same in their images on Podman."""
    return request.getfixturevalue(f"conformance_{request.param}")


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.rstrip("Z"))


@pytest.mark.parametrize("name", [n for n in NAMES if n not in LATE])
def test_tutorial_runs_to_completed(conformance, name):
    if name == "dataset_download.yaml":
        conformance.finished("dataset_upload.yaml")
        runner = conformance.shared
        workflow_id = runner.submit(DATA / name)
        conformance.runs[name] = (runner, workflow_id)
    runner, info = conformance.finished(name)
    logs = runner.logs(info["id"])
    check = CHECKS.get(name)
    if check:
        check(conformance, runner, info, logs)


def _hello(conf, runner, info, logs):
    assert "hello | Hello from OSMO!" in logs
    if conf.engine == "podman":
        assert "hello | [osmo] image ubuntu:24.04: the command runs in container osmo-" in logs
        assert "hello | [osmo] limits: cpu 1 (--cpus), memory 1 GiB (--memory" in logs
    else:
        assert "image ubuntu:24.04 is not pulled" in logs


def _template(conf, runner, info, logs):
    assert info["id"] == "hello-osmo-1" and "hello | Hello from OSMO!" in logs


def _token(conf, runner, info, logs):
    assert "experiment | Running experiment: my-experiment" in logs
    assert "experiment | Workflow ID: my-experiment-1" in logs


def _parallel(conf, runner, info, logs):
    for name in "abc":
        assert f"task-{name} | Hello from task-{name}" in logs


def _serial(conf, runner, info, logs):
    tasks = tasks_of(info)
    assert "task3 | a line: Data from task 2" in logs and "task2 | a line: Data from task 1" in logs
    assert [(d["dataset"], d["version"]) for d in tasks["task3"]["datasets_read"]] == \
        [("serial-tasks-1--task1", 1), ("serial-tasks-1--task2", 1)]
    assert groups_of(info)["task2-group"]["started"] >= groups_of(info)["task1-group"]["ended"]


def _simple(conf, runner, info, logs):
    assert "train-model-a | sample_10,value_10" in logs
    assert "train-model-b | 10 /osmo/data/input/0/data/training_data.csv" in logs


def _group_tasks(conf, runner, info, logs):
    tasks = tasks_of(info)
    assert "processor-1 | Processor 1: Complete" in logs
    assert all(t["status"] == "COMPLETED" for t in tasks.values())
    # processor-2 (5 x 1 s) ends on its own long before the lead (5 x 5 s)
    assert "stopped" not in (tasks["processor-2"]["reason"] or "")


def _robot(conf, runner, info, logs):
    tasks = tasks_of(info)
    assert "model-training | [TRAIN] Converged on policy" in logs
    assert "model-training | [osmo] platform ovx-a40 -> pool 'local'" in logs
    assert "robot-ctrl | [osmo] platform agx-orin-jp6 -> pool 'local'" in logs
    assert "model-training | [osmo] gpu: 1 requested, the pool has none" in logs
    for peer in ("physics-sim", "robot-ctrl"):
        assert tasks[peer]["reason"] == "stopped when the lead task 'model-training' ended"


def _data_download(conf, runner, info, logs):
    assert "readme.txt" in logs and "sub" in logs


def _data_filter(conf, runner, info, logs):
    listing = runner.logs(info["id"], "selective-download")
    assert " a.txt" in listing and " nested" in listing and "c.json" not in listing


def _data_upload(conf, runner, info, logs):
    assert conf.object("models/results/model.pth") == b"Model checkpoint\n"


def _dataset_upload(conf, runner, info, logs):
    written = tasks_of(info)["generate-data"]["datasets_written"]
    assert {(d["dataset"], d["version"]) for d in written} >= {("my_dataset", 1)}


def _dataset_download(conf, runner, info, logs):
    assert "process-data | Sample data 1" in logs
    read = tasks_of(info)["process-data"]["datasets_read"]
    assert [(d["dataset"], d["version"]) for d in read] == [("my_dataset", 1)]


def _combined(conf, runner, info, logs):
    assert "my_dataset from the store" in logs and "raw data from s3" in logs
    written = {d["dataset"] for d in tasks_of(info)["process-multiple-sources"]["datasets_written"]}
    assert "processed_data" in written
    assert conf.object("outputs/results.txt") == b"Processed results\n"


CHECKS = {
    "hello_world.yaml": _hello, "template_hello_world.yaml": _template, "token_example.yaml": _token,
    "parallel_tasks.yaml": _parallel, "serial_workflow.yaml": _serial,
    "combination_workflow_simple.yaml": _simple, "group_tasks.yaml": _group_tasks,
    "robot_simulation.yaml": _robot, "data_download.yaml": _data_download, "data_filter.yaml": _data_filter,
    "data_upload.yaml": _data_upload, "dataset_upload.yaml": _dataset_upload,
    "dataset_download.yaml": _dataset_download, "data_and_dataset_combined.yaml": _combined,
}


def test_every_tutorial_is_covered():
    assert set(CHECKS) | LATE == set(NAMES) and len(NAMES) == 16


@pytest.mark.osmo_late
def test_group_tasks_communication_client_receives_hello(conformance):
    runner, info = conformance.finished("group_tasks_communication.yaml")
    logs = runner.logs(info["id"])
    server = tasks_of(info)["server"]["host"]
    assert f"client | Calling server at {server}..." in logs
    assert "client | Received from server: hello" in logs


@pytest.mark.osmo_late
def test_combination_complex_process_group_ends_with_its_lead(conformance):
    runner, info = conformance.finished("combination_workflow_complex.yaml", timeout=300)
    tasks, groups = tasks_of(info), groups_of(info)
    lead, other = tasks["transform-a"], tasks["transform-b"]
    lead_end = _at(lead["attempts"][0]["command"]["ended"])
    assert (_at(lead_end.isoformat()) - _at(lead["attempts"][0]["command"]["started"])).total_seconds() >= 119
    # transform-b (no sleep) finished on its own, long before its lead: not stopped with it. Its end
    # includes its container's start and its upload, which a loaded machine can stretch to ~20 s.
    assert other["status"] == "COMPLETED" and other["exit_code"] == 0
    assert (lead_end - _at(other["ended"])).total_seconds() > 60
    process_end = _at(groups["process"]["ended"])
    # ... the group ended with its lead: when the lead's attempt ended, outputs uploaded (which takes as long
    # as the machine's load makes it)
    lead_attempt_end = _at(lead["attempts"][0]["ended"])
    assert lead_attempt_end >= lead_end
    assert 0 <= (process_end - lead_attempt_end).total_seconds() < 10
    assert _at(groups["aggregate"]["started"]) >= process_end
    logs = runner.logs(info["id"], "combine")
    assert "=== UPPERCASE VERSION ===" in logs and "APPLE" in logs and "1\tapple" in logs
