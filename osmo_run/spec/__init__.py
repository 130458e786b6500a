"""The workflow spec: OSMO version 2 YAML -> templates rendered -> typed, validated models.

Public API (what the runner uses)::

    load_file(path, set_items=[...], set_string_items=[...]) -> LoadedSpec(rendered, workflow)
    load_text(text, file=...) / load_rendered(text)          -> the same from text
    Workflow -> Group -> Task (models), Dag.from_workflow(workflow)
    substitute_tokens(text, output=..., inputs=[...], inputs_by_task={...}, hosts={...}, workflow_id=...)
    substitute_task(task, ...)                                -> the task with every token replaced
    format_workflow_id / parse_workflow_id / next_workflow_id
    SpecError (one line: ``FILE:LINE: FIELD.PATH: message``)
    normalise_file_path(path) / file_path_conflict(path, earlier); TASK_DATA, TASK_OUTPUT, TASK_WORK
"""

from osmo_run.spec.dag import Dag
from osmo_run.spec.errors import SpecError
from osmo_run.spec.exit_actions import CodeRange, CodeSet, ExitAction, ExitActions, parse_codes
from osmo_run.spec.filepaths import TASK_DATA, TASK_OUTPUT, TASK_WORK, file_path_conflict, normalise_file_path
from osmo_run.spec.ids import format_workflow_id, is_workflow_id, next_workflow_id, parse_workflow_id
from osmo_run.spec.loader import LoadedSpec, load_file, load_rendered, load_text
from osmo_run.spec.models import (Checkpoint, DatasetInput, DatasetOutput, File, Group, Input, Output,
                                  Resources, Task, TaskInput, Timeout, UrlInput, UrlOutput, Workflow)
from osmo_run.spec.templates import RenderedSpec, coerce_value, parse_set_options, render_spec
from osmo_run.spec.tokens import find_tokens, substitute_task, substitute_tokens
from osmo_run.spec.units import Duration, parse_bytes, parse_cpu, parse_duration
from osmo_run.spec.validate import canonical_name

__all__ = [
    "Checkpoint", "CodeRange", "CodeSet", "Dag", "DatasetInput", "DatasetOutput", "Duration", "ExitAction",
    "ExitActions", "File", "Group", "Input", "LoadedSpec", "Output", "RenderedSpec", "Resources",
    "SpecError", "TASK_DATA", "TASK_OUTPUT", "TASK_WORK", "Task", "TaskInput", "Timeout", "UrlInput",
    "UrlOutput", "Workflow", "canonical_name", "coerce_value", "file_path_conflict", "find_tokens",
    "format_workflow_id", "is_workflow_id", "load_file", "load_rendered", "load_text", "next_workflow_id",
    "normalise_file_path", "parse_bytes", "parse_codes", "parse_cpu", "parse_duration", "parse_set_options",
    "parse_workflow_id", "render_spec", "substitute_task", "substitute_tokens",
]
