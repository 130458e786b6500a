"""Checks across a parsed workflow; the first problem found is raised as a ``SpecError`` with its line.

- names: tasks and groups share one namespace, compared case-insensitively with ``_`` equal to ``-``
  (as OSMO compares them: ``Group_1`` and ``group-1`` clash);
- resources: a task's ``resource`` names a spec of ``workflow.resources`` (``default`` may be absent);
- inputs: ``- task: NAME`` names a task of this workflow in an earlier group (never its own group);
  a reference to a later group is reported as a cycle when there is one, else as an order problem;
- tokens: ``{{input:N}}`` / ``{{input:TASK}}`` name one of the task's inputs, ``{{host:TASK}}`` a task
  of the same group.
"""

from __future__ import annotations

import difflib

from osmo_run.spec.errors import SpecError
from osmo_run.spec.models import Group, Task, TaskInput, Workflow


def canonical_name(name: str) -> str:
    """The form names are compared in: lower case, ``_`` as ``-``."""
    return name.lower().replace("_", "-")


def validate(workflow: Workflow) -> Workflow:
    """Raise ``SpecError`` for the first cross-reference problem; return the workflow otherwise."""
    _check_names(workflow)
    _check_resources(workflow)
    _check_inputs(workflow)
    _check_tokens(workflow)
    return workflow


def _error(workflow: Workflow, message: str, path: str, line: int) -> SpecError:
    return SpecError(message, file=workflow.file, line=line or None, path=path)


def _check_names(workflow: Workflow) -> None:
    seen: dict[str, tuple[str, str, int]] = {}

    def add(kind: str, name: str, path: str, line: int) -> None:
        key = canonical_name(name)
        if key in seen:
            other_kind, other, other_line = seen[key]
            same = "" if other == name else " (names ignore case, and '_' equals '-')"
            raise _error(workflow, f"duplicate name {name!r}: {other_kind} {other!r} on line {other_line} "
                         f"has the same name{same}", f"{path}.name", line)
        seen[key] = (kind, name, line)

    for group in workflow.groups:
        if not workflow.uses_tasks:
            add("group", group.name, group.path, group.lines.get("name", group.line))
        for task in group.tasks:
            add("task", task.name, task.path, task.lines.get("name", task.line))


def _check_resources(workflow: Workflow) -> None:
    for task in workflow.tasks():
        if task.resource not in workflow.resources and task.resource != "default":
            known = ", ".join(workflow.resources) or "none declared"
            raise _error(workflow, f"unknown resource {task.resource!r} (workflow.resources: {known})",
                         f"{task.path}.resource", task.lines.get("resource", task.line))


def _suggest(name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _upstream_groups(workflow: Workflow, group_of: dict[str, Group]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {g.name: set() for g in workflow.groups}
    for group in workflow.groups:
        for task in group.tasks:
            for ref in task.upstream_tasks():
                if ref in group_of:
                    edges[group.name].add(group_of[ref].name)
    return edges


def _path_between(edges: dict[str, set[str]], start: str, goal: str) -> list[str] | None:
    """A path start -> ... -> goal following 'reads from' edges, or None."""
    stack, seen = [[start]], {start}
    while stack:
        path = stack.pop()
        if path[-1] == goal:
            return path
        for nxt in sorted(edges[path[-1]]):
            if nxt not in seen:
                seen.add(nxt)
                stack.append(path + [nxt])
    return None


def _check_inputs(workflow: Workflow) -> None:
    group_of = {t.name: g for g in workflow.groups for t in g.tasks}
    position = {g.name: i for i, g in enumerate(workflow.groups)}
    names = list(group_of)
    edges = _upstream_groups(workflow, group_of)
    for group in workflow.groups:
        for task in group.tasks:
            for i, source in enumerate(task.inputs):
                if not isinstance(source, TaskInput) or source.is_external:
                    continue
                path, line = f"{task.path}.inputs[{i}].task", source.lines.get("task", source.line)
                upstream = group_of.get(source.task)
                if upstream is None:
                    raise _error(workflow, f"unknown task {source.task!r}{_suggest(source.task, names)}",
                                 path, line)
                if upstream is group:
                    what = "itself" if source.task == task.name else f"task {source.task!r} of its own group"
                    raise _error(workflow, f"task {task.name!r} reads {what}: tasks of a group start "
                                 "together, so a task can only read tasks of earlier groups", path, line)
                if position[upstream.name] > position[group.name]:
                    raise _error(workflow, _order_message(workflow, group, task, source.task, upstream,
                                                          edges), path, line)


def _order_message(workflow: Workflow, group: Group, task: Task, ref: str, upstream: Group,
                   edges: dict[str, set[str]]) -> str:
    cycle = _path_between(edges, upstream.name, group.name)
    if cycle:
        chain = [group.name] + cycle
        if workflow.uses_tasks:
            chain = [workflow.group(name).tasks[0].name for name in chain]
            return f"cycle: {' -> '.join(repr(n) for n in chain)} (each task reads the next)"
        return f"cycle between groups: {' -> '.join(repr(n) for n in chain)} (each group reads the next)"
    if workflow.uses_tasks:
        return f"task {task.name!r} reads task {ref!r}, which is listed after it; list {ref!r} first"
    return (f"group {group.name!r} is listed before group {upstream.name!r} it reads from (task "
            f"{task.name!r} reads {ref!r}); list {upstream.name!r} first")


def _check_tokens(workflow: Workflow) -> None:
    for group in workflow.groups:
        members = [t.name for t in group.tasks]
        for task in group.tasks:
            by_task = task.input_index_by_task()
            for use in task.token_uses:
                token = use.token
                if token.kind == "input" and token.index is not None and token.index >= len(task.inputs):
                    raise _error(workflow, f"token {token.text}: task {task.name!r} has "
                                 f"{len(task.inputs)} input{'' if len(task.inputs) == 1 else 's'}, numbered from 0", use.path, use.line)
                if token.kind == "input" and token.index is None and token.arg not in by_task:
                    known = ", ".join(by_task) or "none"
                    raise _error(workflow, f"token {token.text}: task {task.name!r} reads no task "
                                 f"{token.arg!r} (task inputs: {known})", use.path, use.line)
                if token.kind == "host" and token.arg not in members:
                    where = "" if not workflow.uses_tasks else \
                        " (each task of a 'tasks:' workflow is a group of its own; use groups)"
                    raise _error(workflow, f"token {token.text}: no task {token.arg!r} in the group of "
                                 f"{task.name!r}{where}{_suggest(token.arg or '', members)}",
                                 use.path, use.line)
