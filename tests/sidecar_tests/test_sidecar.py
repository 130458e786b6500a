"""The task sidecar end to end: ``python -m sidecar.main`` as a subprocess on real run directories,
real local stores in tmp folders and the loopback S3 server (moto), exactly as a runner drives it.

Each test writes a ``task.json`` with ``osmo_run.contract``, runs a sidecar command and checks its
exit code, the status file it wrote, the bytes on disk / in the store / in the bucket, and that every
line it printed carries the ``[osmo-sidecar] `` prefix without a traceback.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from osmo_run.contract import (EXIT_CODE_FILE, INPUT_FAILED, OUTPUT_FAILED, InputSpec, OutputSpec, RunDir,
                               TaskContract, task_output_dataset)
from osmo_store.blob import LocalBlobStore
from osmo_store.ids import parse_ref
from osmo_store.repository import Repository, init_store
from osmo_store.transfer.upload import UploadRequest

from helpers.trees import files_only, snapshot, write_file

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "[osmo-sidecar] "


@dataclass
class Result:
    code: int
    out: str
    err: str

    def lines(self) -> list[str]:
        return [line for line in (self.out + self.err).splitlines() if line]


class Sidecar:
    """Runs ``python -m sidecar.main`` with a private cache, a fast retry pause and the current
    environment (which holds the test's OSMO_CONFIG and, with ``s3_bucket``, the AWS_* variables)."""

    def __init__(self, tmp_path: Path) -> None:
        self.cache = str(tmp_path / "sidecar-cache")

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "OSMO_CACHE_DIR": self.cache, "OSMO_SIDECAR_RETRY_DELAY": "0.05",
               "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        env.pop("OSMO_STORE", None)
        env.update(extra)
        return env

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "sidecar.main", *args]

    def __call__(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        proc = subprocess.run(self.argv(*args), env=env or self.env(), cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
        result = Result(proc.returncode, proc.stdout, proc.stderr)
        if args[0] != "exec":  # exec's output is mostly the task's own, unmarked
            assert_sidecar_lines(result)
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.argv(*args), env=env or self.env(), cwd=ROOT, text=True, **kwargs)


def assert_sidecar_lines(result: Result) -> None:
    """Every line the sidecar printed is marked, and none is part of a traceback."""
    for line in result.lines():
        assert line.startswith(PREFIX), (line, result.err)
    assert "Traceback" not in result.err


class Store:
    """A real local store (tiny chunks) in a tmp folder; the test reads it with its own cache."""

    def __init__(self, tmp_path: Path, config) -> None:
        self.path = str(tmp_path / "store")
        self.cache = str(tmp_path / "test-cache")
        init_store(LocalBlobStore(self.path), config)

    def open(self) -> Repository:
        return Repository.open(self.path, cache_dir=self.cache)

    def seed(self, dataset: str, files: dict[str, bytes], folder: Path, tags=(), metadata=None) -> int:
        for rel, data in files.items():
            write_file(folder / rel, data)
        with self.open() as repo:
            return repo.upload(UploadRequest(dataset, [str(folder)], tags=list(tags),
                                             metadata=dict(metadata or {}))).version


@pytest.fixture
def sidecar(tmp_path) -> Sidecar:
    return Sidecar(tmp_path)


@pytest.fixture
def store(tmp_path, tiny_config) -> Store:
    return Store(tmp_path, tiny_config)


def make_run(tmp_path: Path, store: Store | str | None, name: str = "run", workflow_id: str = "wf-1",
             task: str = "train", inputs=(), outputs=(), metadata=None) -> RunDir:
    run = RunDir(str(tmp_path / name))
    spec = store.path if isinstance(store, Store) else store
    run.write_contract(TaskContract(workflow_id=workflow_id, task=task, group=task, attempt=0, store=spec,
                                    data_dir=run.data, inputs=tuple(inputs), outputs=tuple(outputs),
                                    metadata=dict(metadata or {})))
    return run


def status(run: RunDir, name: str) -> dict:
    with open(run.status(name), encoding="utf-8") as f:
        return json.load(f)


def tree(folder) -> dict[str, bytes]:
    """Relative POSIX path -> bytes of every file under ``folder``."""
    folder = Path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def rand(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


# --- inputs ------------------------------------------------------------------------------------

SCENES_V1 = {
    "b.txt": b"top-level b\n",
    "sub/b.txt": b"nested b\n",
    "sub/c.json": b'{"c": 1}\n',
    "notes.md": b"# notes\n",
    "big/data.bin": rand(1, 50_000),
}


def test_dataset_input_with_regex_and_exact_versions(tmp_path, sidecar, store):
    assert store.seed("scenes", SCENES_V1, tmp_path / "v1", tags=["gold"]) == 1
    assert store.seed("scenes", {"extra.txt": b"only in v2\n"}, tmp_path / "v2") == 2
    run = make_run(tmp_path, store, inputs=[
        InputSpec("dataset", ref="scenes:gold", regex=r"\.txt$"),
        InputSpec("dataset", ref="scenes:1", regex=r"^b\.txt$"),  # not sub/b.txt: a base-name trap
        InputSpec("dataset", ref="scenes"),
        InputSpec("dataset", ref="scenes:1", regex=r"^nothing-matches$"),
    ])

    result = sidecar("download", "--run-dir", run.root)

    assert result.code == 0, result.err
    assert tree(run.input_dir(0)) == {"scenes/b.txt": SCENES_V1["b.txt"], "scenes/sub/b.txt": SCENES_V1["sub/b.txt"]}
    assert tree(run.input_dir(1)) == {"scenes/b.txt": SCENES_V1["b.txt"]}
    assert tree(run.input_dir(2)) == {"scenes/extra.txt": b"only in v2\n"}  # the latest version
    assert tree(run.input_dir(3)) == {} and os.path.isdir(os.path.join(run.input_dir(3), "scenes"))
    assert os.path.isdir(run.output_dir) and os.listdir(run.output_dir) == []
    st_ = status(run, "download.json")
    assert st_["code"] == 0
    assert [(d["input"], d["dataset"], d["version"], d["files"]) for d in st_["datasets"]] == [
        (0, "scenes", 1, 2), (1, "scenes", 1, 1), (2, "scenes", 2, 1), (3, "scenes", 1, 0)]
    assert st_["datasets"][0]["ref"] == "scenes:gold"
    assert any("scenes:1, 2 files" in line for line in result.lines())


def test_task_input_reads_the_upstream_output(tmp_path, sidecar, store):
    producer_out = task_output_dataset("wf-1", "produce")
    producer = make_run(tmp_path, store, name="producer", task="produce",
                        outputs=[OutputSpec("task_output", dataset=producer_out)])
    files = {"data/training_data.csv": b"x,y\n1,2\n", "model/weights.bin": rand(2, 30_000)}
    for rel, data in files.items():
        write_file(Path(producer.output_dir) / rel, data)
    assert sidecar("upload", "--run-dir", producer.root).code == 0

    consumer = make_run(tmp_path, store, name="consumer", task="consume", inputs=[
        InputSpec("task", ref=producer_out, task="produce"),
        InputSpec("task", ref=f"{producer_out}:1", task="produce", regex=r"\.csv$")])
    result = sidecar("download", "--run-dir", consumer.root)

    assert result.code == 0, result.err
    assert tree(consumer.input_dir(0)) == files  # directly in {{input:0}}, no dataset folder
    assert tree(consumer.input_dir(1)) == {"data/training_data.csv": files["data/training_data.csv"]}
    entries = status(consumer, "download.json")["datasets"]
    assert [(d["kind"], d["dataset"], d["version"], d["task"]) for d in entries] == [
        ("task", producer_out, 1, "produce"), ("task", producer_out, 1, "produce")]


def put_objects(s3_bucket, objects: dict[str, bytes]) -> None:
    fs = s3_bucket.filesystem()
    fs.pipe({f"{s3_bucket.name}/{key}": data for key, data in objects.items()})


def test_url_inputs_from_s3(tmp_path, sidecar, store, s3_bucket):
    objects = {"data/x.txt": b"x\n", "data/deep/y.txt": b"yy\n", "data/z.bin": rand(3, 20_000),
               "other/q.txt": b"not under data/\n"}
    put_objects(s3_bucket, objects)
    run = make_run(tmp_path, store, inputs=[
        InputSpec("url", url=f"{s3_bucket.url}/data/"),
        InputSpec("url", url=f"{s3_bucket.url}/data", regex=r".*\.txt$"),
        InputSpec("url", url=f"{s3_bucket.url}/data/z.bin"),
    ])

    result = sidecar("download", "--run-dir", run.root)

    assert result.code == 0, result.err
    assert tree(run.input_dir(0)) == {"x.txt": b"x\n", "deep/y.txt": b"yy\n", "z.bin": objects["data/z.bin"]}
    assert tree(run.input_dir(1)) == {"x.txt": b"x\n", "deep/y.txt": b"yy\n"}
    assert tree(run.input_dir(2)) == {"z.bin": objects["data/z.bin"]}
    assert status(run, "download.json") == {"code": 0, "message": "3 inputs downloaded", "datasets": []}


def test_url_inputs_from_a_local_folder(tmp_path, sidecar, store):
    src = tmp_path / "source-data"
    files = {"a.txt": b"a\n", "nested/b.txt": b"b\n", "nested/c.yaml": b"c: 1\n", "img.png": rand(4, 5000)}
    for rel, data in files.items():
        write_file(src / rel, data)
    run = make_run(tmp_path, None, inputs=[  # no store input: the store is never opened
        InputSpec("url", url=str(src)),
        InputSpec("url", url=f"file://{src}/", regex=r"\.txt$"),
        InputSpec("url", url=f"file://{src}/img.png"),
    ])

    result = sidecar("download", "--run-dir", run.root, env=sidecar.env(OSMO_STORE=str(tmp_path / "absent")))

    assert result.code == 0, result.err
    assert tree(run.input_dir(0)) == files
    assert tree(run.input_dir(1)) == {"a.txt": b"a\n", "nested/b.txt": b"b\n"}
    assert tree(run.input_dir(2)) == {"img.png": files["img.png"]}
    assert not os.path.exists(tmp_path / "absent")


def test_missing_dataset_fails_with_2010_naming_it(tmp_path, sidecar, store):
    store.seed("present", {"a.txt": b"a"}, tmp_path / "present")
    run = make_run(tmp_path, store, inputs=[
        InputSpec("dataset", ref="present"),
        InputSpec("dataset", ref="no_such_dataset:3"),
        InputSpec("dataset", ref="present"),
    ])

    result = sidecar("download", "--run-dir", run.root)

    assert result.code == 1
    st_ = status(run, "download.json")
    assert st_["code"] == INPUT_FAILED
    assert "\n" not in st_["message"]
    assert st_["message"].startswith("input 1 (dataset no_such_dataset:3): ")
    assert "'no_such_dataset' does not exist" in st_["message"]
    assert [d["input"] for d in st_["datasets"]] == [0]  # what was read before the failure
    assert not os.path.exists(run.input_dir(2))  # later inputs are not fetched
    assert any("download failed (2010)" in line and "no_such_dataset" in line for line in result.lines())


def test_missing_url_and_missing_store_fail_with_2010(tmp_path, sidecar, s3_bucket):
    run = make_run(tmp_path, None, inputs=[InputSpec("url", url=f"{s3_bucket.url}/no/such/prefix/")])
    result = sidecar("download", "--run-dir", run.root)
    assert result.code == 1
    msg = status(run, "download.json")["message"]
    assert msg.startswith(f"input 0 (url {s3_bucket.url}/no/such/prefix/): ") and "no such file" in msg

    run = make_run(tmp_path, str(tmp_path / "not-a-store"), name="run2",
                   inputs=[InputSpec("dataset", ref="anything")])
    result = sidecar("download", "--run-dir", run.root)
    assert result.code == 1
    st_ = status(run, "download.json")
    assert st_["code"] == INPUT_FAILED and "no osmo store at" in st_["message"], st_


def test_transient_failure_is_retried_until_the_server_is_back(tmp_path, sidecar):
    """The S3 endpoint refuses connections at first; the sidecar retries the input and resumes once a
    server listens there."""
    from moto.server import ThreadedMotoServer

    from servers.moto_s3 import MotoS3Server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    env = sidecar.env(AWS_ACCESS_KEY_ID=MotoS3Server.key, AWS_SECRET_ACCESS_KEY=MotoS3Server.secret,
                      AWS_DEFAULT_REGION=MotoS3Server.region, AWS_ENDPOINT_URL=endpoint, AWS_MAX_ATTEMPTS="1",
                      OSMO_SIDECAR_RETRY_DELAY="1")
    run = make_run(tmp_path, None, inputs=[InputSpec("url", url="s3://late-bucket/data/")])
    proc = sidecar.popen("download", "--run-dir", run.root, "--attempts", "8", env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    server = None
    try:
        first = proc.stderr.readline()
        assert first.startswith(PREFIX) and "retrying in" in first and "attempt 2 of 8" in first, first
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        import boto3

        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=MotoS3Server.key,
                              aws_secret_access_key=MotoS3Server.secret, region_name=MotoS3Server.region)
        client.create_bucket(Bucket="late-bucket")
        client.put_object(Bucket="late-bucket", Key="data/arrived.txt", Body=b"finally\n")
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        if server is not None:
            server.stop()
    assert_sidecar_lines(Result(proc.returncode, out, first + rest))
    assert proc.returncode == 0, rest
    assert tree(run.input_dir(0)) == {"arrived.txt": b"finally\n"}


def test_permanent_failure_is_not_retried(tmp_path, sidecar):
    run = make_run(tmp_path, None, inputs=[InputSpec("url", url=str(tmp_path / "missing-folder"))])
    result = sidecar("download", "--run-dir", run.root, "--attempts", "5")
    assert result.code == 1
    assert not any("retrying" in line for line in result.lines())
    assert "gave up" not in status(run, "download.json")["message"]


# --- outputs -----------------------------------------------------------------------------------

def test_full_cycle_task_output_byte_exact_with_input_versions(tmp_path, sidecar, store):
    store.seed("scenes", SCENES_V1, tmp_path / "v1")
    src = tmp_path / "raw"
    write_file(src / "raw.txt", b"raw\n")
    out_ds = task_output_dataset("wf-7", "train")
    run = make_run(tmp_path, store, workflow_id="wf-7", task="train",
                   inputs=[InputSpec("dataset", ref="scenes", regex=r"^big/"), InputSpec("url", url=str(src))],
                   outputs=[OutputSpec("task_output", dataset=out_ds)], metadata={"owner": "alice"})
    assert sidecar("download", "--run-dir", run.root).code == 0

    script = (
        "import os, random, sys\n"
        "inp, out = sys.argv[1], sys.argv[2]\n"
        "data = open(os.path.join(inp, 'scenes', 'big', 'data.bin'), 'rb').read()\n"
        "os.makedirs(os.path.join(out, 'ckpt'), exist_ok=True)\n"
        "open(os.path.join(out, 'ckpt', 'model.bin'), 'wb').write(data[::-1] + random.Random(5).randbytes(70000))\n"
        "open(os.path.join(out, 'log.txt'), 'w').write('trained\\n')\n"
        "open(os.path.join(out, 'empty'), 'wb').close()\n"
        "print('task says hi')\n")
    result = sidecar("exec", "--run-dir", run.root, "--", sys.executable, "-c", script,
                     run.input_dir(0), run.output_dir)
    assert result.code == 0 and result.out == "task says hi\n"  # the task's own lines: not prefixed
    assert Path(run.status(EXIT_CODE_FILE)).read_text().strip() == "0"

    result = sidecar("upload", "--run-dir", run.root)

    assert result.code == 0, result.err
    st_ = status(run, "upload.json")
    assert st_["code"] == 0
    assert [(d["dataset"], d["version"], d["files"]) for d in st_["datasets"]] == [(out_ds, 1, 3)]
    expected = files_only(snapshot(run.output_dir))
    with store.open() as repo:
        rec, _ = repo.download(f"{out_ds}:1", str(tmp_path / "check"))
    assert files_only(snapshot(tmp_path / "check")) == expected  # bytes, modes and mtimes
    assert rec["metadata"] == {"workflow_id": "wf-7", "task": "train", "attempt": "0", "exit_code": "0",
                               "input.0": "scenes:1", "input.1": str(src), "owner": "alice"}

    # the same output again: a new version that stores (almost) nothing new
    result = sidecar("upload", "--run-dir", run.root)
    again = status(run, "upload.json")["datasets"][0]
    assert result.code == 0 and again["version"] == 2
    assert again["stored_bytes"] < 0.02 * again["logical_bytes"], again


def test_empty_output_still_gives_a_version(tmp_path, sidecar, store):
    out_ds = task_output_dataset("wf-2", "noop")
    run = make_run(tmp_path, store, task="noop", outputs=[OutputSpec("task_output", dataset=out_ds)])
    assert sidecar("download", "--run-dir", run.root).code == 0
    assert os.listdir(run.output_dir) == []

    assert sidecar("upload", "--run-dir", run.root).code == 0

    assert status(run, "upload.json")["datasets"][0]["files"] == 0
    downstream = make_run(tmp_path, store, name="down", inputs=[InputSpec("task", ref=out_ds, task="noop")])
    assert sidecar("download", "--run-dir", downstream.root).code == 0
    assert os.path.isdir(downstream.input_dir(0)) and tree(downstream.input_dir(0)) == {}


def test_dataset_outputs_with_path_tag_labels_and_metadata(tmp_path, sidecar, store):
    run = make_run(tmp_path, store, workflow_id="wf-3", task="gen", outputs=[
        OutputSpec("dataset", dataset="my_dataset"),  # like dataset_upload.yaml: the whole output
        OutputSpec("dataset", dataset="models", tag="best", path="results", metadata={"kind": "eval"},
                   labels={"team": "robots"}),
        OutputSpec("dataset", dataset="single", path="results/model.pth"),
    ])
    out = Path(run.output_dir)
    for i in range(1, 11):
        write_file(out / "data" / f"file_{i}.txt", f"Sample data {i}\n".encode())
    write_file(out / "results" / "model.pth", rand(6, 40_000))
    write_file(out / "results" / "metrics" / "eval.json", b'{"acc": 0.9}')

    result = sidecar("upload", "--run-dir", run.root)

    assert result.code == 0, result.err
    written = status(run, "upload.json")["datasets"]
    assert [(d["output"], d["dataset"], d["version"]) for d in written] == [
        (0, "my_dataset", 1), (1, "models", 1), (2, "single", 1)]
    assert written[1]["tag"] == "best" and written[1]["path"] == "results"
    with store.open() as repo:
        _, rec = repo.log.resolve(parse_ref("models:best"))
        assert rec["version"] == 1
        assert rec["metadata"] == {"workflow_id": "wf-3", "task": "gen", "attempt": "0", "kind": "eval"}
        assert repo.describe("models")["labels"] == {"team": "robots"}
        _, entries = repo.entries("models:best")
        assert sorted(e.path for e in entries) == ["metrics/eval.json", "model.pth"]  # path is the root
        _, entries = repo.entries("single")
        assert [e.path for e in entries] == ["model.pth"]

    # like dataset_download.yaml: {{input:0}}/my_dataset/data/file_1.txt
    reader = make_run(tmp_path, store, name="reader", inputs=[InputSpec("dataset", ref="my_dataset")])
    assert sidecar("download", "--run-dir", reader.root).code == 0
    got = Path(reader.input_dir(0)) / "my_dataset" / "data" / "file_1.txt"
    assert got.read_bytes() == b"Sample data 1\n"
    assert tree(Path(reader.input_dir(0)) / "my_dataset") == tree(run.output_dir)


def test_url_outputs_to_s3(tmp_path, sidecar, store, s3_bucket):
    run = make_run(tmp_path, store, workflow_id="filtered-io-1", task="selective", outputs=[
        OutputSpec("url", url=f"{s3_bucket.url}/filtered-output/filtered-io-1/", regex=r".*\.(json|yaml)$"),
        OutputSpec("url", url=f"{s3_bucket.url}/models"),
    ])
    files = {"results/model.pth": rand(7, 12_345), "a.json": b"{}", "deep/b.yaml": b"b: 2\n", "c.txt": b"c"}
    for rel, data in files.items():
        write_file(Path(run.output_dir) / rel, data)

    result = sidecar("upload", "--run-dir", run.root)

    assert result.code == 0, result.err
    fs = s3_bucket.filesystem()
    got = {key[len(s3_bucket.name) + 1:]: fs.cat_file(key) for key in fs.find(s3_bucket.name)}
    assert got == {"filtered-output/filtered-io-1/a.json": b"{}",
                   "filtered-output/filtered-io-1/deep/b.yaml": b"b: 2\n",
                   **{f"models/{rel}": data for rel, data in files.items()}}
    assert status(run, "upload.json") == {"code": 0, "message": "2 outputs uploaded", "datasets": []}


def test_output_failures_give_2012_and_the_other_outputs_are_kept(tmp_path, sidecar, store, s3_bucket):
    out_ds = task_output_dataset("wf-4", "t")
    run = make_run(tmp_path, store, workflow_id="wf-4", task="t", outputs=[
        OutputSpec("dataset", dataset="results", path="does/not/exist"),
        OutputSpec("task_output", dataset=out_ds),
        OutputSpec("url", url="s3://no-such-bucket-for-osmo-tests/out/"),
    ])
    write_file(Path(run.output_dir) / "kept.txt", b"kept\n")

    result = sidecar("upload", "--run-dir", run.root)

    assert result.code == 1
    st_ = status(run, "upload.json")
    assert st_["code"] == OUTPUT_FAILED
    assert "\n" not in st_["message"]
    assert "output 0 (dataset results): path 'does/not/exist': no such file or folder" in st_["message"]
    assert "output 2 (url s3://no-such-bucket-for-osmo-tests/out/)" in st_["message"]
    assert "output 1" not in st_["message"]
    assert [(d["dataset"], d["version"]) for d in st_["datasets"]] == [(out_ds, 1)]
    with store.open() as repo:
        _, entries = repo.entries(out_ds)
        assert [e.path for e in entries] == ["kept.txt"]
        assert "results" not in {d["name"] for d in repo.list_datasets()}
    assert any("upload failed (2012)" in line for line in result.lines())


def test_a_store_that_refuses_writes_gives_2012(tmp_path, sidecar):
    # a folder without an osmo store: the sidecar must not create one there
    target = tmp_path / "not-a-store"
    target.mkdir()
    run = make_run(tmp_path, str(target), outputs=[OutputSpec("task_output", dataset="wf-1--train")])
    write_file(Path(run.output_dir) / "x.txt", b"x")

    result = sidecar("upload", "--run-dir", run.root)

    assert result.code == 1
    st_ = status(run, "upload.json")
    assert st_["code"] == OUTPUT_FAILED and st_["datasets"] == []
    assert st_["message"].startswith("output 0 (task output wf-1--train): no osmo store at"), st_
    assert os.listdir(target) == []


def test_outputs_are_uploaded_after_a_failing_task(tmp_path, sidecar, store):
    out_ds = task_output_dataset("wf-5", "crash")
    run = make_run(tmp_path, store, workflow_id="wf-5", task="crash",
                   outputs=[OutputSpec("task_output", dataset=out_ds)])
    assert sidecar("download", "--run-dir", run.root).code == 0
    result = sidecar("exec", "--run-dir", run.root, "--", "sh", "-c",
                     f"echo partial > {run.output_dir}/partial.txt; exit 7")
    assert result.code == 7

    result = sidecar("upload", "--run-dir", run.root)

    assert result.code == 0
    assert any("exited with code 7; uploading its outputs anyway" in line for line in result.lines())
    with store.open() as repo:
        rec, entries = repo.entries(out_ds)
    assert [e.path for e in entries] == ["partial.txt"] and rec["metadata"]["exit_code"] == "7"


# --- exec and wait -----------------------------------------------------------------------------

@pytest.mark.parametrize("command, code", [
    (["true"], 0),
    (["sh", "-c", "exit 3"], 3),
    (["sh", "-c", "exit 255"], 255),
    (["sh", "-c", "kill -KILL $$"], 128 + signal.SIGKILL),
    (["sh", "-c", "kill -SEGV $$"], 128 + signal.SIGSEGV),
    (["/no/such/program"], 127),
])
def test_exec_records_the_exit_code(tmp_path, sidecar, command, code):
    run = RunDir(str(tmp_path / "run"))  # exec needs no task.json
    result = sidecar("exec", "--run-dir", run.root, "--", *command)
    assert result.code == code, result.err
    assert Path(run.status(EXIT_CODE_FILE)).read_text() == f"{code}\n"
    assert run.read_exit_code() == code


def test_exec_passes_arguments_and_stdio_through(tmp_path, sidecar):
    run = RunDir(str(tmp_path / "run"))
    proc = subprocess.run(sidecar.argv("exec", "--run-dir", run.root, "--", sys.executable, "-c",
                                       "import sys; print(sys.argv[1:]); print(sys.stdin.read().upper()); "
                                       "print('err', file=sys.stderr)", "--run-dir", "a b", "--"),
                          env=sidecar.env(), cwd=ROOT, input="hello", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert proc.stdout == "['--run-dir', 'a b', '--']\nHELLO\n" and proc.stderr == "err\n"


TRAP = ("import signal, sys, time\n"
        "def bye(signum, frame):\n"
        "    print('got', signum, flush=True); sys.exit(42)\n"
        "if sys.argv[1] == 'trap':\n"
        "    signal.signal(signal.SIGTERM, bye); signal.signal(signal.SIGINT, bye)\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n")


@pytest.mark.parametrize("sig, mode, code", [
    (signal.SIGTERM, "trap", 42),
    (signal.SIGINT, "trap", 42),
    (signal.SIGTERM, "default", 128 + signal.SIGTERM),
])
def test_exec_forwards_signals_to_the_command(tmp_path, sidecar, sig, mode, code):
    run = RunDir(str(tmp_path / "run"))
    proc = sidecar.popen("exec", "--run-dir", run.root, "--", sys.executable, "-c", TRAP, mode,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, sig)  # the wrapper only, not its process group
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == code, err
    assert run.read_exit_code() == code
    if mode == "trap":
        assert out == f"got {int(sig)}\n"
    assert f"{PREFIX}exec: forwarded {sig.name} to the task command" in err


def test_upload_wait_waits_for_the_exit_code(tmp_path, sidecar, store):
    out_ds = task_output_dataset("wf-6", "t")
    run = make_run(tmp_path, store, workflow_id="wf-6", task="t",
                   outputs=[OutputSpec("task_output", dataset=out_ds)])
    write_file(Path(run.output_dir) / "late.txt", b"late\n")
    proc = sidecar.popen("upload", "--run-dir", run.root, "--wait", "60",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stderr.readline()
        assert first.startswith(PREFIX + "waiting for the task's exit code"), first
        time.sleep(1.0)
        assert proc.poll() is None and run.read_status("upload.json") is None
        with store.open() as repo:
            assert out_ds not in {d["name"] for d in repo.list_datasets()}
        write_file(run.status(EXIT_CODE_FILE), b"5\n")
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_sidecar_lines(Result(proc.returncode, out, first + rest))
    assert proc.returncode == 0, rest
    assert status(run, "upload.json")["code"] == 0
    with store.open() as repo:
        rec, entries = repo.entries(out_ds)
    assert rec["metadata"]["exit_code"] == "5" and [e.path for e in entries] == ["late.txt"]


def test_upload_wait_gives_up_after_its_limit(tmp_path, sidecar, store):
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset="wf-1--train")])
    started = time.monotonic()
    result = sidecar("upload", "--run-dir", run.root, "--wait", "0.5")
    assert result.code == 1 and time.monotonic() - started >= 0.5
    st_ = status(run, "upload.json")
    assert st_["code"] == OUTPUT_FAILED and "did not appear within 0.5 s" in st_["message"]
    with store.open() as repo:
        assert repo.list_datasets() == []


# --- the contract ------------------------------------------------------------------------------

def test_missing_task_json_exits_2(tmp_path, sidecar):
    result = sidecar("download", "--run-dir", str(tmp_path / "no-such-run"))
    assert result.code == 2
    assert any("bad task contract" in line and "task.json" in line for line in result.lines())
    assert not os.path.exists(tmp_path / "no-such-run")  # nothing created at a mistyped path

    (tmp_path / "empty-run").mkdir()
    result = sidecar("upload", "--run-dir", str(tmp_path / "empty-run"))
    assert result.code == 2
    assert status(RunDir(str(tmp_path / "empty-run")), "upload.json")["message"].startswith(
        "bad task contract: ")


@pytest.mark.parametrize("command, inputs, outputs, needle, status_name, code", [
    ("download", [InputSpec("ftp")], [], "inputs[0]: unknown input kind 'ftp'", "download.json", INPUT_FAILED),
    ("download", [InputSpec("url", url="s3://b/x", regex="(")], [], "inputs[0]: regex '('", "download.json",
     INPUT_FAILED),
    ("download", [InputSpec("dataset", ref="bad name!")], [], "inputs[0]: invalid dataset name", "download.json",
     INPUT_FAILED),
    ("upload", [], [OutputSpec("dataset", dataset="d", path="../escape")], "outputs[0]: path '../escape'",
     "upload.json", OUTPUT_FAILED),
    ("upload", [], [OutputSpec("task_output")], "outputs[0]: an output of kind 'task_output' needs 'dataset'",
     "upload.json", OUTPUT_FAILED),
])
def test_bad_contracts_exit_2_with_a_status(tmp_path, sidecar, store, command, inputs, outputs, needle,
                                            status_name, code):
    run = make_run(tmp_path, store, inputs=inputs, outputs=outputs)
    result = sidecar(command, "--run-dir", run.root)
    assert result.code == 2
    st_ = status(run, status_name)
    assert st_["code"] == code and st_["message"].startswith("bad task contract: ") and needle in st_["message"]
    assert not os.path.exists(run.data)  # nothing was done


def test_another_contract_version_exits_2(tmp_path, sidecar):
    run = RunDir(str(tmp_path / "run"))
    write_file(run.task_file, json.dumps({"version": 99, "workflow_id": "w"}).encode())
    result = sidecar("upload", "--run-dir", run.root)
    assert result.code == 2 and "version 99" in status(run, "upload.json")["message"]


def test_usage_errors_are_prefixed(tmp_path, sidecar):
    result = sidecar("download")
    assert result.code == 2 and "Missing option '--run-dir'" in result.err
    result = sidecar("--help")
    assert result.code == 0 and "download" in result.out and "upload" in result.out


# --- regex selection ---------------------------------------------------------------------------

TRICKY = ["a.txt", "b.x", "sub/a.txt", "sub/deep/a.txt", "]x", "[a]", "*", "?.x", "!b", "^c", "-d",
          "back\\slash", "sub/[x]/y.x", "sub/*/q", "k/a.txt", "k/b.txt", "k/m/x", "k/m/y", "z/z/z/a.txt"]
REGEXES = ["a", "^b", r"x$", r"\]", r"\[", "/", r".*\.x", "^[^/]*$", r"^a\.txt$", "^k/", "^k/m/", "z$",
           r"\*", "zzz", "."]


def test_regex_selects_exactly_the_matching_paths_even_with_glob_characters(tmp_path, sidecar, store):
    """Names full of glob characters and base-name look-alikes; every regex must select exactly
    what ``re.search`` selects (the sidecar turns regexes into the store's globs)."""
    files = {rel: f"content of {rel}\n".encode() for rel in TRICKY}
    store.seed("tricky", files, tmp_path / "tricky")
    run = make_run(tmp_path, store, inputs=[InputSpec("dataset", ref="tricky", regex=rx) for rx in REGEXES])

    result = sidecar("download", "--run-dir", run.root)

    assert result.code == 0, result.err
    for n, rx in enumerate(REGEXES):
        expected = {f"tricky/{rel}": data for rel, data in files.items() if re.search(rx, rel)}
        assert tree(run.input_dir(n)) == expected, rx


def test_sigterm_while_waiting_reports_2012(tmp_path, sidecar, store):
    run = make_run(tmp_path, store, outputs=[OutputSpec("task_output", dataset="wf-1--train")])
    proc = sidecar.popen("upload", "--run-dir", run.root, "--wait", "0",
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stderr.readline()
        assert "waiting for the task's exit code" in first
        proc.send_signal(signal.SIGTERM)
        out, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert_sidecar_lines(Result(proc.returncode, out, first + rest))
    assert proc.returncode == 1
    st_ = status(run, "upload.json")
    assert st_ == {"code": OUTPUT_FAILED, "message": "the sidecar was stopped by SIGTERM during upload",
                   "datasets": []}
