"""The task contract between a runner and the sidecar: files in a task's run directory.

A runner (local or Kubernetes) prepares one run directory per task attempt and writes ``task.json``
(a ``TaskContract``). The sidecar reads it and talks back only through files in that directory, never
through logs:

    RUN_DIR/task.json              the contract (written by the runner before anything starts)
    RUN_DIR/data/input/<N>/        input N ({{input:N}}), filled by ``osmo-sidecar download``
    RUN_DIR/data/output/           the task's {{output}}, uploaded by ``osmo-sidecar upload``
    RUN_DIR/status/download.json   a ``DataStatus`` written by ``download``
    RUN_DIR/status/exit_code       the task command's exit code (decimal text), written by
                                   ``osmo-sidecar exec`` (or by the runner that ran the command)
    RUN_DIR/status/upload.json     a ``DataStatus`` written by ``upload``

Where the runner cannot read the run directory (a Kubernetes pod), the sidecar also writes each
``DataStatus`` as one compact JSON object of at most ``MESSAGE_LIMIT`` bytes to a file the runner can
read (``--status-message``: the container's termination message, ``DataStatus.to_message``).

Inside a task's view ``RUN_DIR/data`` is mounted at ``/osmo/data`` when the runner isolates tasks;
``data_dir`` in the contract is the path the task itself sees.

Exit codes follow OSMO: user codes 1-255, ``INPUT_FAILED`` (2010) when an input could not be
downloaded, ``OUTPUT_FAILED`` (2012) when an output could not be uploaded, ``UPSTREAM_FAILED`` (3000).
The sidecar process itself exits 0 when its ``DataStatus.code`` is 0, ``SIDECAR_DATA_FAILED`` (1)
when it wrote a failing status, and 2 for a malformed contract; the OSMO code is in the status file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from typing import Any

CONTRACT_VERSION = 1
INPUT_FAILED = 2010
OUTPUT_FAILED = 2012
UPSTREAM_FAILED = 3000
SIDECAR_DATA_FAILED = 1

TASK_FILE = "task.json"
DATA_DIR = "data"
STATUS_DIR = "status"
DOWNLOAD_STATUS = "download.json"
UPLOAD_STATUS = "upload.json"
EXIT_CODE_FILE = "exit_code"
MESSAGE_LIMIT = 4096  # bytes: a Kubernetes container's termination message


def task_output_dataset(workflow_id: str, task: str) -> str:
    """The store dataset that keeps a task's ``{{output}}``: ``<workflow_id>--<task>``."""
    return f"{workflow_id}--{task}"


@dataclass(frozen=True)
class InputSpec:
    """One input. ``kind`` is ``task`` (``ref`` names the upstream task's output dataset),
    ``dataset`` (``ref`` is ``NAME``, ``NAME:TAG`` or ``NAME:VERSION``) or ``url``."""

    kind: str
    ref: str | None = None  # dataset reference, for kind task and dataset
    url: str | None = None  # for kind url
    regex: str | None = None  # only paths (relative, POSIX) matching it are downloaded
    task: str | None = None  # upstream task name, for kind task (informational)


@dataclass(frozen=True)
class OutputSpec:
    """One output. ``kind`` is ``task_output`` (the whole output folder as a version of
    ``dataset``), ``dataset`` (a user dataset; ``path`` is a sub-folder of the output, ``tag``
    optional) or ``url`` (files matching ``regex`` copied under ``url``)."""

    kind: str
    dataset: str | None = None
    tag: str | None = None
    path: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    url: str | None = None
    regex: str | None = None


@dataclass(frozen=True)
class CheckpointSpec:
    """A ``checkpoint:``: every ``every`` seconds while the task runs, and once when it has ended,
    the files below ``path`` (as the sidecar sees it; relative: to the run directory) whose relative
    path matches ``regex`` are copied below ``url``."""

    path: str
    url: str
    every: float
    regex: str | None = None


@dataclass(frozen=True)
class TaskContract:
    workflow_id: str
    task: str
    group: str
    attempt: int
    store: str | None  # a configured store name, URL or path; None: the user's default store
    data_dir: str  # where the task sees RUN_DIR/data (e.g. /osmo/data, or RUN_DIR/data)
    inputs: tuple[InputSpec, ...] = ()
    outputs: tuple[OutputSpec, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)  # added to every dataset version written
    checkpoints: tuple[CheckpointSpec, ...] = ()
    version: int = CONTRACT_VERSION

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "TaskContract":
        if raw.get("version") != CONTRACT_VERSION:
            raise ValueError(f"task contract version {raw.get('version')!r} is not {CONTRACT_VERSION}")
        raw = dict(raw)
        raw["inputs"] = tuple(InputSpec(**i) for i in raw.get("inputs", ()))
        raw["outputs"] = tuple(OutputSpec(**o) for o in raw.get("outputs", ()))
        raw["checkpoints"] = tuple(CheckpointSpec(**c) for c in raw.get("checkpoints", ()))
        return cls(**raw)


@dataclass(frozen=True)
class DataStatus:
    """What a sidecar phase did: ``code`` 0 or an OSMO data code, a one-line ``message``, and the
    dataset versions read or written (``[{"dataset": NAME, "version": N, ...}]``)."""

    code: int
    message: str = ""
    datasets: tuple[dict[str, Any], ...] = ()

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "DataStatus":
        return cls(int(raw["code"]), str(raw.get("message", "")), tuple(raw.get("datasets", ())))

    def to_message(self, limit: int = MESSAGE_LIMIT) -> str:
        """One compact JSON object of at most ``limit`` bytes: the datasets with their names and
        versions only when the whole does not fit, then as many as fit (``"more"``: how many were left
        out), then the message cut short."""
        brief = tuple({k: d[k] for k in _BRIEF if k in d} for d in self.datasets)
        for datasets in (self.datasets, brief):
            text = _compact({"code": self.code, "message": self.message, "datasets": list(datasets)})
            if len(text.encode()) <= limit:
                return text
        message = self.message[:limit // 8]
        kept: list[dict[str, Any]] = []
        for entry in brief:
            more = len(brief) - len(kept) - 1
            if len(_compact({"code": self.code, "message": message, "datasets": kept + [entry],
                             "more": more}).encode()) > limit:
                break
            kept.append(entry)
        return _compact({"code": self.code, "message": message, "datasets": kept, "more": len(brief) - len(kept)})

    @classmethod
    def from_message(cls, text: str | None) -> "DataStatus | None":
        """The status in a ``to_message`` text; None when ``text`` is something else (a log's end)."""
        try:
            raw = json.loads(text or "")
            return cls.from_json(raw) if isinstance(raw, dict) and "code" in raw else None
        except (ValueError, TypeError, KeyError):
            return None


_BRIEF = ("input", "output", "kind", "dataset", "version", "tag")


def _compact(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def write_json_atomic(path: str, data: Any) -> None:
    """Write JSON next to ``path`` and rename it into place: readers never see half a file."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class RunDir:
    """Paths inside one task attempt's run directory."""

    def __init__(self, root: str) -> None:
        self.root = root

    @property
    def task_file(self) -> str:
        return os.path.join(self.root, TASK_FILE)

    @property
    def data(self) -> str:
        return os.path.join(self.root, DATA_DIR)

    def input_dir(self, n: int) -> str:
        return os.path.join(self.data, "input", str(n))

    @property
    def output_dir(self) -> str:
        return os.path.join(self.data, "output")

    def status(self, name: str) -> str:
        return os.path.join(self.root, STATUS_DIR, name)

    def write_contract(self, contract: TaskContract) -> None:
        write_json_atomic(self.task_file, contract.to_json())

    def read_contract(self) -> TaskContract:
        with open(self.task_file, encoding="utf-8") as f:
            return TaskContract.from_json(json.load(f))

    def write_status(self, name: str, status: DataStatus) -> None:
        write_json_atomic(self.status(name), asdict(status))

    def read_status(self, name: str) -> DataStatus | None:
        try:
            with open(self.status(name), encoding="utf-8") as f:
                return DataStatus.from_json(json.load(f))
        except FileNotFoundError:
            return None

    def read_exit_code(self) -> int | None:
        try:
            with open(self.status(EXIT_CODE_FILE), encoding="utf-8") as f:
                return int(f.read().strip())
        except (FileNotFoundError, ValueError):
            return None
