"""Typed, frozen models of an OSMO version 2 workflow: ``Workflow`` -> ``Group`` -> ``Task`` with its
inputs, outputs, files, exit actions and resources.

Every model knows the ``line`` it starts on and, in ``lines``, the line of each field as written in
YAML (``task.lines["image"]``), so later checks and the runner can point at the spec. A workflow
written with top-level ``tasks:`` holds one group per task (named ``<task>-group``, as OSMO names
them) with ``Workflow.uses_tasks`` set; a task alone in its group is its lead.
"""

from __future__ import annotations

import base64 as b64
from dataclasses import dataclass, field
from typing import Any, Iterator, Union

from osmo_run.spec.exit_actions import ExitActions
from osmo_run.spec.tokens import Token
from osmo_run.spec.units import Duration

Lines = dict  # field name as written in YAML -> 1-based line


def _meta() -> Any:
    return field(default_factory=dict, compare=False, repr=False)


def _split_ref(name: str) -> tuple[str, str | None]:
    base, sep, ref = name.partition(":")
    return base, (ref if sep else None)


class _DatasetRef:
    """``name`` is ``NAME[:TAG|:VERSION]``: the dataset and the reference after ``:``."""

    name: str

    @property
    def dataset(self) -> str:
        return _split_ref(self.name)[0]

    @property
    def ref(self) -> str | None:
        """The tag or version after ``:``, None for the latest version."""
        return _split_ref(self.name)[1]


@dataclass(frozen=True)
class Resources:
    """A named resource spec. ``memory``/``storage`` in bytes, ``cpu`` in cores; None when not given."""

    cpu: float | None = None
    gpu: int | None = None
    memory: int | None = None
    storage: int | None = None
    platform: str | None = None
    nodes_excluded: tuple[str, ...] = ()
    written: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()


@dataclass(frozen=True)
class Timeout:
    """``exec_timeout`` and ``queue_timeout``; None when not given (the runner's defaults apply)."""

    exec_timeout: Duration | None = None
    queue_timeout: Duration | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()

    @property
    def exec_seconds(self) -> int | None:
        return self.exec_timeout.seconds if self.exec_timeout else None

    @property
    def queue_seconds(self) -> int | None:
        return self.queue_timeout.seconds if self.queue_timeout else None

    def over(self, base: "Timeout") -> "Timeout":
        """These values where given, ``base``'s otherwise."""
        return Timeout(self.exec_timeout or base.exec_timeout, self.queue_timeout or base.queue_timeout,
                       self.line, self.lines)


@dataclass(frozen=True)
class TaskInput:
    """``- task: NAME`` (an upstream task of this workflow) or ``- task: WORKFLOW_ID:NAME``."""

    task: str
    regex: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()

    @property
    def workflow_id(self) -> str | None:
        return self.task.split(":", 1)[0] if ":" in self.task else None

    @property
    def task_name(self) -> str:
        return self.task.split(":", 1)[1] if ":" in self.task else self.task

    @property
    def is_external(self) -> bool:
        return ":" in self.task


@dataclass(frozen=True)
class DatasetInput(_DatasetRef):
    """``- dataset: {name: NAME[:TAG|:VERSION], regex: ...}``."""

    name: str
    regex: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()


@dataclass(frozen=True)
class UrlInput:
    """``- url: URL`` with an optional ``regex`` selecting files."""

    url: str
    regex: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()


@dataclass(frozen=True)
class DatasetOutput(_DatasetRef):
    """``- dataset: {name: NAME[:TAG], path: ..., metadata: [...], labels: [...]}``."""

    name: str
    path: str | None = None
    metadata: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()


@dataclass(frozen=True)
class UrlOutput:
    """``- url: URL`` with an optional ``regex`` selecting the files copied there."""

    url: str
    regex: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()


Input = Union[TaskInput, DatasetInput, UrlInput]
Output = Union[DatasetOutput, UrlOutput]


@dataclass(frozen=True)
class File:
    """A file written into the task's view before it starts (``base64: true`` for binary contents).
    ``path`` is absolute and normalised as the view resolves it (``filepaths``: a relative path is
    under ``/osmo/work``, ``{{output}}`` is ``/osmo/data/output``)."""

    path: str
    contents: str
    base64: bool = False
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()

    def data(self) -> bytes:
        return b64.b64decode(self.contents) if self.base64 else self.contents.encode("utf-8")


@dataclass(frozen=True)
class Checkpoint:
    """Periodic upload of ``path`` to ``url`` every ``frequency``."""

    path: str
    url: str
    frequency: Duration
    regex: str | None = None
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()


@dataclass(frozen=True)
class TokenUse:
    """A special token found in one of a task's strings, with the field and line it was written on."""

    token: Token
    path: str
    line: int


@dataclass(frozen=True)
class Task:
    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    lead: bool = False
    environment: dict[str, str] = field(default_factory=dict)
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    files: tuple[File, ...] = ()
    resource: str = "default"
    exit_actions: ExitActions = field(default_factory=ExitActions)
    checkpoints: tuple[Checkpoint, ...] = ()
    credentials: dict[str, Any] = field(default_factory=dict)
    volume_mounts: tuple[str, ...] = ()
    privileged: bool = False
    host_network: bool = False
    path: str = field(default="", compare=False, repr=False)
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()
    token_uses: tuple[TokenUse, ...] = field(default=(), compare=False, repr=False)

    def upstream_tasks(self) -> list[str]:
        """Names of the tasks of this workflow that this task reads (``- task: NAME`` inputs)."""
        return [i.task for i in self.inputs if isinstance(i, TaskInput) and not i.is_external]

    def input_index_by_task(self) -> dict[str, int]:
        """``{{input:TASK}}`` names -> input index (for ``WORKFLOW_ID:TASK`` the name is TASK)."""
        found: dict[str, int] = {}
        for index, source in enumerate(self.inputs):
            if isinstance(source, TaskInput):
                found.setdefault(source.task_name, index)
        return found


@dataclass(frozen=True)
class Group:
    """Tasks started together (gang scheduled). The group ends when its ``lead`` ends."""

    name: str
    tasks: tuple[Task, ...]
    barrier: bool = True
    ignore_nonlead_status: bool = True
    timeout: Timeout | None = None
    path: str = field(default="", compare=False, repr=False)
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()

    @property
    def lead(self) -> Task:
        return next(t for t in self.tasks if t.lead)

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise KeyError(name)


@dataclass(frozen=True)
class Workflow:
    name: str
    groups: tuple[Group, ...]
    resources: dict[str, Resources] = field(default_factory=dict)
    timeout: Timeout = field(default_factory=Timeout)
    default_values: dict[str, Any] = field(default_factory=dict)
    version: int | None = None
    pool: str | None = None
    uses_tasks: bool = False
    file: str | None = field(default=None, compare=False, repr=False)
    line: int = field(default=0, compare=False, repr=False)
    lines: Lines = _meta()

    def tasks(self) -> Iterator[Task]:
        for group in self.groups:
            yield from group.tasks

    def task(self, name: str) -> Task:
        for t in self.tasks():
            if t.name == name:
                return t
        raise KeyError(name)

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def group_of(self, task_name: str) -> Group:
        for g in self.groups:
            if any(t.name == task_name for t in g.tasks):
                return g
        raise KeyError(task_name)

    def resources_for(self, task: Task) -> Resources:
        """The resource spec a task asked for (an empty one for an undeclared ``default``)."""
        return self.resources.get(task.resource) or Resources()

    def timeout_for(self, group: Group | str) -> Timeout:
        """The group's own timeouts where it gives them, the workflow's otherwise."""
        g = self.group(group) if isinstance(group, str) else group
        return g.timeout.over(self.timeout) if g.timeout else self.timeout
