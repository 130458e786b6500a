"""What every part of one workflow's run shares: its records, spec, settings, isolation and engine."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from osmo_run.local.credentials import TaskCredentials
from osmo_run.local.engine import EngineChoice
from osmo_run.local.isolation import Isolation
from osmo_run.local.paths import StatePaths
from osmo_run.local.settings import Capacity, Settings
from osmo_run.local.state import StateStore
from osmo_run.spec import Workflow


@dataclass
class RunContext:
    workflow_id: str
    workflow: Workflow
    state: StateStore
    paths: StatePaths
    settings: Settings
    isolation: Isolation
    capacity: Capacity
    store: str | None  # the store handed to the sidecar (None: the user's default)
    output_versions: dict[str, int | None] = field(default_factory=dict)  # task -> its output version
    noted_plain: set[str] = field(default_factory=set)  # tasks whose log has the plain-mode notice
    pid: int = field(default_factory=os.getpid)
    credentials: dict[str, TaskCredentials] = field(default_factory=dict)  # by task (resolved at start)
    engine: EngineChoice = field(default_factory=lambda: EngineChoice(None, "no engine was looked for"))

    def task_log(self, task: str) -> str:
        return self.paths.task_log(self.workflow_id, task)

    def record_attempt(self, task: str, number: int):
        def record(**fields: Any) -> None:
            self.state.put_attempt(self.workflow_id, task, number, **fields)
        return record
