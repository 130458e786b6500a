"""OSMO's special tokens: ``{{output}}``, ``{{input:N}}``, ``{{input:TASK}}``, ``{{host:TASK}}`` and
``{{workflow_id}}`` (spaces inside the braces allowed, as OSMO allows them).

They are not Jinja: ``shield`` hides them before a template is rendered and ``unshield`` puts them back
unchanged; the runner later calls ``substitute_tokens`` (one string) or ``substitute_task`` (every
string of a task) with the task's real folders, host names and workflow id.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from osmo_run.spec.errors import SpecError

TOKEN_RE = re.compile(
    r"\{\{[ \t]*(?P<body>output|workflow_id|(?P<kind>input|host):(?P<arg>[A-Za-z0-9_.-]+))[ \t]*\}\}")
_PLACEHOLDER_RE = re.compile("\x00osmo-token-(\\d+)\x00")


@dataclass(frozen=True)
class Token:
    """One token found in a text: ``kind`` is output, workflow_id, input or host; ``arg`` the part
    after the colon (an input index or a task name), ``start``/``end`` its position."""

    text: str
    kind: str
    arg: str | None
    start: int
    end: int

    @property
    def canonical(self) -> str:
        return "{{" + (self.kind if self.arg is None else f"{self.kind}:{self.arg}") + "}}"

    @property
    def index(self) -> int | None:
        """The input index of ``{{input:N}}``, else None."""
        return int(self.arg) if self.kind == "input" and self.arg and self.arg.isdigit() else None


def find_tokens(text: str) -> list[Token]:
    found = []
    for match in TOKEN_RE.finditer(text):
        kind = match.group("kind") or match.group("body")
        found.append(Token(match.group(0), kind, match.group("arg"), match.start(), match.end()))
    return found


def shield(text: str) -> tuple[str, list[str]]:
    """Replace every token by a placeholder Jinja leaves alone; returns the text and the tokens."""
    saved: list[str] = []

    def hide(match: re.Match) -> str:
        saved.append(match.group(0))
        return f"\x00osmo-token-{len(saved) - 1}\x00"

    return TOKEN_RE.sub(hide, text), saved


def unshield(text: str, saved: Sequence[str]) -> str:
    """Put the tokens hidden by ``shield`` back, byte for byte."""
    return _PLACEHOLDER_RE.sub(lambda m: saved[int(m.group(1))], text)


def substitute_tokens(text: str, *, output: str | None = None, inputs: Sequence[str] = (),
                      inputs_by_task: Mapping[str, str] | None = None,
                      hosts: Mapping[str, str] | None = None, workflow_id: str | None = None) -> str:
    """Replace the tokens of ``text``: ``{{output}}`` by ``output``, ``{{input:N}}`` by ``inputs[N]``,
    ``{{input:TASK}}`` by ``inputs_by_task[TASK]``, ``{{host:TASK}}`` by ``hosts[TASK]`` and
    ``{{workflow_id}}`` by ``workflow_id``. A token without a value is a ``SpecError`` naming it."""
    inputs_by_task = inputs_by_task or {}
    hosts = hosts or {}

    def value(token: Token) -> str:
        if token.kind == "output" and output is not None:
            return output
        if token.kind == "workflow_id" and workflow_id is not None:
            return workflow_id
        if token.kind == "input":
            index = token.index
            if index is not None and index < len(inputs):
                return inputs[index]
            if index is None and token.arg in inputs_by_task:
                return inputs_by_task[token.arg]
            if index is not None:
                raise SpecError(f"unknown token {token.text}: the task has {len(inputs)} input{'' if len(inputs) == 1 else 's'}, "
                                f"numbered from 0")
            known = ", ".join(sorted(inputs_by_task)) or "none"
            raise SpecError(f"unknown token {token.text}: no input from task {token.arg!r} "
                            f"(tasks read: {known})")
        if token.kind == "host":
            if token.arg in hosts:
                return hosts[token.arg]
            known = ", ".join(sorted(hosts)) or "none"
            raise SpecError(f"unknown token {token.text}: no task {token.arg!r} in this group "
                            f"(hosts: {known})")
        raise SpecError(f"unknown token {token.text}: no value was given for it")

    pieces, last = [], 0
    for token in find_tokens(text):
        pieces.append(text[last:token.start])
        pieces.append(value(token))
        last = token.end
    pieces.append(text[last:])
    return "".join(pieces)


_SKIP_FIELDS = {"lines", "token_uses", "line"}


def substitute_task(task: Any, *, output: str | None = None, inputs: Sequence[str] = (),
                    inputs_by_task: Mapping[str, str] | None = None,
                    hosts: Mapping[str, str] | None = None, workflow_id: str | None = None) -> Any:
    """A copy of ``task`` (a ``models.Task``) with the tokens of every string replaced.
    ``inputs_by_task`` defaults to the task's own ``{{input:TASK}}`` names mapped onto ``inputs``."""
    if inputs_by_task is None:
        inputs_by_task = {name: inputs[i] for name, i in task.input_index_by_task().items()
                          if i < len(inputs)}
    options = dict(output=output, inputs=inputs, inputs_by_task=inputs_by_task, hosts=hosts,
                   workflow_id=workflow_id)

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return substitute_tokens(value, **options) if "{{" in value else value
        if isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {f.name: walk(getattr(value, f.name)) for f in dataclasses.fields(value)
                       if f.name not in _SKIP_FIELDS}
            return dataclasses.replace(value, **changes)
        return value

    return walk(task)
