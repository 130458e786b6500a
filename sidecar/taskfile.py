"""Reading ``RUN_DIR/task.json`` and checking it before any data moves.

A contract the sidecar cannot serve (missing or unreadable file, another contract version, an unknown
input or output kind, a field missing for its kind, a regex that does not compile, a dataset name or
tag the store would refuse, an output ``path`` leaving the output folder) is a ``ContractError``: the
runner wrote something wrong, nothing is retried, and the sidecar exits 2. All checks run first, so
a bad last output is reported before the first input is downloaded.
"""

from __future__ import annotations

import json
import posixpath
import re

from osmo_store.errors import UsageError
from osmo_store.ids import check_name, check_tag, parse_ref
from osmo_run.contract import InputSpec, OutputSpec, RunDir, TaskContract

from sidecar.errors import ContractError

INPUT_KINDS = ("task", "dataset", "url")
OUTPUT_KINDS = ("task_output", "dataset", "url")


def load_contract(run: RunDir) -> TaskContract:
    """The checked contract of ``run``, or ``ContractError`` with a one-line reason."""
    try:
        contract = run.read_contract()
    except FileNotFoundError:
        raise ContractError(f"{run.task_file}: no such file") from None
    except OSError as exc:
        raise ContractError(f"{run.task_file}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ContractError(f"{run.task_file}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ContractError(f"{run.task_file}: {' '.join(str(exc).split())}") from None
    check_contract(contract)
    return contract


def check_contract(contract: TaskContract) -> None:
    if not isinstance(contract.metadata, dict) or not _str_map(contract.metadata):
        raise ContractError("metadata: expected a mapping of strings to strings")
    for n, spec in enumerate(contract.inputs):
        try:
            _check_input(spec)
        except (ContractError, UsageError) as exc:
            raise ContractError(f"inputs[{n}]: {exc}") from None
    for i, spec in enumerate(contract.outputs):
        try:
            _check_output(spec)
        except (ContractError, UsageError) as exc:
            raise ContractError(f"outputs[{i}]: {exc}") from None
    for i, cp in enumerate(contract.checkpoints):
        if not cp.path or not cp.url or not isinstance(cp.every, (int, float)) or cp.every <= 0:
            raise ContractError(f"checkpoints[{i}]: expected a path, a url and every > 0 seconds")
        try:
            compile_regex(cp.regex)
        except ContractError as exc:
            raise ContractError(f"checkpoints[{i}]: {exc}") from None


def compile_regex(pattern: str | None) -> re.Pattern[str] | None:
    """The compiled ``regex`` of an input or output (None: every file)."""
    if pattern is None or pattern == "":
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ContractError(f"regex {pattern!r} does not compile: {exc}") from None


def _check_input(spec: InputSpec) -> None:
    if spec.kind not in INPUT_KINDS:
        raise ContractError(f"unknown input kind {spec.kind!r} (expected one of {', '.join(INPUT_KINDS)})")
    if spec.kind in ("task", "dataset"):
        if not spec.ref:
            raise ContractError(f"an input of kind {spec.kind!r} needs 'ref' (a dataset reference)")
        parse_ref(spec.ref)
    if spec.kind == "url" and not spec.url:
        raise ContractError("an input of kind 'url' needs 'url'")
    compile_regex(spec.regex)


def _check_output(spec: OutputSpec) -> None:
    if spec.kind not in OUTPUT_KINDS:
        raise ContractError(f"unknown output kind {spec.kind!r} (expected one of {', '.join(OUTPUT_KINDS)})")
    if spec.kind in ("task_output", "dataset"):
        if not spec.dataset:
            raise ContractError(f"an output of kind {spec.kind!r} needs 'dataset'")
        check_name(spec.dataset)
        if spec.tag is not None:
            check_tag(spec.tag)
        if spec.path is not None:
            check_output_path(spec.path)
        if not _str_map(spec.metadata) or not _str_map(spec.labels):
            raise ContractError("metadata and labels must map strings to strings")
    if spec.kind == "url" and not spec.url:
        raise ContractError("an output of kind 'url' needs 'url'")
    compile_regex(spec.regex)


def check_output_path(path: str) -> str:
    """``path`` of a dataset output, normalised: relative to the output folder and inside it."""
    if path.startswith("/") or "\\" in path:
        raise ContractError(f"path {path!r} must be relative to the task's output folder")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise ContractError(f"path {path!r} leaves the task's output folder")
    return norm


def _str_map(value: object) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
