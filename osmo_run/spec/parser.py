"""Turn a rendered spec (YAML text, Jinja already applied) into ``models.Workflow``.

This module checks each field on its own: known fields only, types, names, durations, quantities,
exit-code ranges, regexes, leads of a group. Checks across the workflow (duplicate names, references
between tasks, group order and cycles, tokens) live in ``validate``.
"""

from __future__ import annotations

import binascii
import base64
import re
from dataclasses import replace

from osmo_run.spec.errors import SpecError
from osmo_run.spec.exit_actions import ExitActions, parse_action, parse_codes
from osmo_run.spec.filepaths import file_path_conflict, view_path
from osmo_run.spec.models import (Checkpoint, DatasetInput, DatasetOutput, File, Group, Resources,
                                  Task, TaskInput, Timeout, TokenUse, UrlInput, UrlOutput, Workflow)
from osmo_run.spec.nodes import Node, compose
from osmo_run.spec.tokens import find_tokens
from osmo_run.spec.units import parse_bytes, parse_count, parse_cpu, parse_duration

TOP_FIELDS = ("workflow", "default-values", "version")
WORKFLOW_FIELDS = ("name", "pool", "resources", "timeout", "tasks", "groups")
GROUP_FIELDS = ("name", "tasks", "barrier", "ignoreNonleadStatus", "timeout")
TASK_FIELDS = ("name", "image", "command", "args", "lead", "environment", "inputs", "outputs", "files",
               "resource", "exitActions", "checkpoint", "credentials", "volumeMounts", "privileged",
               "hostNetwork")
RESOURCE_FIELDS = ("cpu", "gpu", "memory", "storage", "platform", "nodesExcluded")
TIMEOUT_FIELDS = ("exec_timeout", "queue_timeout")

NAME_RE = re.compile(r"^[a-zA-Z]([a-zA-Z0-9_-]*[a-zA-Z0-9])?$")
_NAME = r"[a-zA-Z](?:[a-zA-Z0-9_-]*[a-zA-Z0-9])?"
TASK_REF_RE = re.compile(rf"^{_NAME}(?::{_NAME})?$")
DATASET_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_.-]+)?$")
URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://\S+$")
RESERVED_TASK_NAMES = {"osmo-ctrl"}
NAME_RULE = "letters, digits, '-' and '_', starting with a letter and ending with a letter or digit"


def parse_workflow(text: str, *, file: str | None = None) -> Workflow:
    """Parse rendered spec text (no Jinja left, tokens kept) into a ``Workflow``; no cross checks."""
    root = compose(text, file)
    if root is None:
        raise SpecError("the spec is empty: it needs a top-level 'workflow:'", file=file)
    return _Parser(file).document(root)


def _check(node: Node, parse, value):
    try:
        return parse(value)
    except ValueError as exc:
        raise node.error(str(exc)) from None


class _Parser:
    def __init__(self, file: str | None) -> None:
        self.file = file
        self.uses: list[TokenUse] = []

    # -- helpers -------------------------------------------------------------------------------
    def text(self, node: Node) -> str:
        value = node.text()
        for token in find_tokens(value):
            self.uses.append(TokenUse(token, node.path, node.line_of(token.start)))
        return value

    def texts(self, node: Node) -> tuple[str, ...]:
        return tuple(self.text(item) for item in node.elements())

    def name(self, node: Node, what: str) -> str:
        value = node.text()
        if not NAME_RE.match(value):
            raise node.error(f"bad {what} name {value!r}: use {NAME_RULE}")
        return value

    def regex(self, node: Node | None) -> str | None:
        if node is None or node.is_null:
            return None
        value = self.text(node)
        try:
            re.compile(value)
        except re.error as exc:
            raise node.error(f"bad regex {value!r}: {exc}") from None
        return value

    @staticmethod
    def lines(_node: Node, fields: dict[str, Node]) -> dict[str, int]:
        return {key: value.line for key, value in fields.items()}

    # -- document ------------------------------------------------------------------------------
    def document(self, root: Node) -> Workflow:
        top = root.fields(TOP_FIELDS, required=("workflow",))
        version = None
        if "version" in top:
            version = top["version"].scalar()
            if version != 2 and str(version) != "2":
                raise top["version"].error(f"unsupported spec version {version!r}: only version 2 is supported")
            version = 2
        defaults = {}
        if "default-values" in top:
            node = top["default-values"]
            if not node.is_null and not node.is_mapping:
                raise node.error("expected a mapping of template values")
            defaults = {} if node.is_null else node.value()
        return self.workflow(top["workflow"], defaults, version)

    def workflow(self, node: Node, defaults: dict, version: int | None) -> Workflow:
        f = node.fields(WORKFLOW_FIELDS, required=("name",))
        name = self.name(f["name"], "workflow")
        resources = {key: self.resources(value) for key, _, value in f["resources"].items()} \
            if "resources" in f else {}
        timeout = self.timeout(f["timeout"]) if "timeout" in f else Timeout()
        has_tasks = "tasks" in f and f["tasks"].elements()
        has_groups = "groups" in f and f["groups"].elements()
        if has_tasks and has_groups:
            raise f["groups"].error("use either tasks or groups in a workflow, not both")
        if not has_tasks and not has_groups:
            raise node.error("a workflow needs a non-empty 'tasks' or 'groups' list")
        if has_tasks:
            groups = []
            for item in f["tasks"].elements():
                task = replace(self.task(item), lead=True)
                groups.append(Group(f"{task.name}-group", (task,), path=item.path, line=item.line,
                                    lines={"name": task.lines.get("name", item.line)}))
        else:
            groups = [self.group(item) for item in f["groups"].elements()]
        pool = f["pool"].optional_text() if "pool" in f else None
        return Workflow(name, tuple(groups), resources, timeout, defaults, version, pool,
                        uses_tasks=bool(has_tasks), file=self.file, line=node.line,
                        lines=self.lines(node, f))

    def resources(self, node: Node) -> Resources:
        f = node.fields(RESOURCE_FIELDS)
        values = {}
        for key, parse in (("cpu", parse_cpu), ("gpu", parse_count), ("memory", parse_bytes),
                           ("storage", parse_bytes)):
            if key in f and not f[key].is_null:
                values[key] = _check(f[key], parse, f[key].scalar())
        platform = f["platform"].optional_text() if "platform" in f else None
        excluded = f["nodesExcluded"].text_list() if "nodesExcluded" in f else ()
        written = {key: value.value() for key, value in f.items()}
        return Resources(platform=platform, nodes_excluded=excluded, written=written, line=node.line,
                         lines=self.lines(node, f), **values)

    def timeout(self, node: Node) -> Timeout:
        f = node.fields(TIMEOUT_FIELDS)
        values = {key: _check(value, parse_duration, value.scalar())
                  for key, value in f.items() if not value.is_null}
        return Timeout(line=node.line, lines=self.lines(node, f), **values)

    # -- groups and tasks ----------------------------------------------------------------------
    def group(self, node: Node) -> Group:
        f = node.fields(GROUP_FIELDS, required=("name", "tasks"))
        name = self.name(f["name"], "group")
        items = f["tasks"].elements()
        if not items:
            raise f["tasks"].error(f"group {name!r} needs at least one task")
        tasks = [self.task(item) for item in items]
        if len(tasks) == 1:
            tasks[0] = replace(tasks[0], lead=True)
        leads = [t.name for t in tasks if t.lead]
        if len(leads) != 1:
            listed = f" ({', '.join(leads)})" if leads else ""
            raise f["tasks"].error(f"group {name!r} has {len(leads)} lead tasks{listed}; a group of several "
                                   "tasks needs exactly one task with 'lead: true'")
        barrier = f["barrier"].boolean() if "barrier" in f else True
        ignore = f["ignoreNonleadStatus"].boolean() if "ignoreNonleadStatus" in f else True
        timeout = self.timeout(f["timeout"]) if "timeout" in f else None
        return Group(name, tuple(tasks), barrier, ignore, timeout, path=node.path, line=node.line,
                     lines=self.lines(node, f))

    def task(self, node: Node) -> Task:
        self.uses = []
        f = node.fields(TASK_FIELDS, required=("name", "image", "command"))
        name = self.name(f["name"], "task")
        if name.lower().replace("_", "-") in RESERVED_TASK_NAMES:
            raise f["name"].error(f"the task name {name!r} is reserved")
        command = self.texts(f["command"])
        if not command:
            raise f["command"].error(f"task {name!r} needs a command")
        opt = {}
        if "args" in f:
            opt["args"] = self.texts(f["args"])
        for key, attr in (("lead", "lead"), ("privileged", "privileged"), ("hostNetwork", "host_network")):
            if key in f:
                opt[attr] = f[key].boolean()
        if "environment" in f:
            opt["environment"] = {k: self.text(v) for k, _, v in f["environment"].items()}
        if "inputs" in f:
            opt["inputs"] = tuple(self.input(item) for item in f["inputs"].elements())
        if "outputs" in f:
            opt["outputs"] = tuple(self.output(item) for item in f["outputs"].elements())
        if "files" in f:
            opt["files"] = self.files(f["files"], opt.get("inputs", ()))
        if "resource" in f:
            opt["resource"] = f["resource"].text()
        if "exitActions" in f:
            opt["exit_actions"] = self.exit_actions(f["exitActions"])
        if "checkpoint" in f:
            opt["checkpoints"] = tuple(self.checkpoint(item) for item in f["checkpoint"].elements())
        if "credentials" in f:
            opt["credentials"] = {k: (v.text_map() if v.is_mapping else v.text())
                                  for k, _, v in f["credentials"].items()}
        if "volumeMounts" in f:
            opt["volume_mounts"] = tuple(self.volume_mount(item) for item in f["volumeMounts"].elements())
        return Task(name, self.text(f["image"]), command, path=node.path, line=node.line,
                    lines=self.lines(node, f), token_uses=tuple(self.uses), **opt)

    # -- task parts ----------------------------------------------------------------------------
    def input(self, node: Node):
        f = node.fields(("task", "dataset", "url", "regex"))
        kinds = [k for k in ("task", "dataset", "url") if k in f]
        if len(kinds) != 1:
            raise node.error("an input needs exactly one of 'task', 'dataset' or 'url'")
        kind = kinds[0]
        if kind == "task":
            ref = f["task"].text()
            if not TASK_REF_RE.match(ref):
                raise f["task"].error(f"bad task reference {ref!r}: use TASK or WORKFLOW_ID:TASK")
            return TaskInput(ref, self.regex(f.get("regex")), line=node.line, lines=self.lines(node, f))
        if kind == "dataset":
            if "regex" in f:
                raise f["regex"].error("give a dataset's regex inside 'dataset:'")
            d = f["dataset"].fields(("name", "regex"), required=("name",))
            return DatasetInput(self.dataset_name(d["name"]), self.regex(d.get("regex")), line=node.line,
                                lines=self.lines(node, d))
        return UrlInput(self.url(f["url"]), self.regex(f.get("regex")), line=node.line,
                        lines=self.lines(node, f))

    def output(self, node: Node):
        f = node.fields(("dataset", "url", "regex"))
        kinds = [k for k in ("dataset", "url") if k in f]
        if len(kinds) != 1:
            raise node.error("an output needs exactly one of 'dataset' or 'url'")
        if kinds[0] == "dataset":
            if "regex" in f:
                raise f["regex"].error("a dataset output takes no regex (use 'path' to choose a folder)")
            d = f["dataset"].fields(("name", "path", "metadata", "labels"), required=("name",))
            return DatasetOutput(
                self.dataset_name(d["name"]),
                self.text(d["path"]) if "path" in d and not d["path"].is_null else None,
                self.texts(d["metadata"]) if "metadata" in d else (),
                self.texts(d["labels"]) if "labels" in d else (),
                line=node.line, lines=self.lines(node, d))
        return UrlOutput(self.url(f["url"]), self.regex(f.get("regex")), line=node.line,
                         lines=self.lines(node, f))

    def dataset_name(self, node: Node) -> str:
        value = node.text()
        if not DATASET_RE.match(value):
            raise node.error(f"bad dataset name {value!r}: use NAME or NAME:TAG (letters, digits, '.', "
                             "'-', '_')")
        return value

    def url(self, node: Node) -> str:
        value = self.text(node)
        if not URL_RE.match(value):
            raise node.error(f"bad url {value!r}: expected SCHEME://LOCATION (e.g. s3://bucket/path/)")
        return value

    def files(self, node: Node, inputs: tuple = ()) -> tuple[File, ...]:
        """``files:`` entries, each path normalised and checked as the task's view resolves it
        (``filepaths``): ``File.path`` is absolute and normalised."""
        by_task: dict[str, int] = {}
        for index, source in enumerate(inputs):
            if isinstance(source, TaskInput):
                by_task.setdefault(source.task_name, index)
        files, paths, lines = [], [], []
        for item in node.elements():
            f = item.fields(("path", "contents", "base64"), required=("path", "contents"))
            written = self.text(f["path"])
            path = _check(f["path"], lambda text: view_path(text, by_task), written)
            clash = file_path_conflict(path, paths)
            if clash:
                index, why = clash
                as_written = "" if written == path else f"; {written!r} is {path!r}"
                raise f["path"].error(f"{why} (the first on line {lines[index]}){as_written}")
            paths.append(path)
            lines.append(f["path"].line)
            encoded = f["base64"].boolean() if "base64" in f else False
            contents = self.text(f["contents"])
            if encoded:
                try:
                    base64.b64decode(contents, validate=True)
                except (binascii.Error, ValueError):
                    raise f["contents"].error("contents are not valid base64") from None
            files.append(File(path, contents, encoded, line=item.line, lines=self.lines(item, f)))
        return tuple(files)

    def exit_actions(self, node: Node) -> ExitActions:
        rules = {}
        for key, key_node, value in node.items():
            action = _check(key_node, parse_action, key)
            if action in rules:
                raise key_node.error(f"exit action {action.value} is given twice")
            rules[action] = _check(value, parse_codes, value.text())  # as written: no YAML octal/_ quirks
        actions = ExitActions(rules)
        for a, b, shared in actions.overlaps():
            codes = ",".join(str(c) for c in sorted(shared)[:5]) + ("..." if len(shared) > 5 else "")
            raise node.error(f"exit codes {codes} are given to both {a.value} and {b.value}")
        return actions

    def checkpoint(self, node: Node) -> Checkpoint:
        f = node.fields(("path", "url", "frequency", "regex"), required=("path", "url", "frequency"))
        frequency = _check(f["frequency"], parse_duration, f["frequency"].scalar())
        return Checkpoint(self.text(f["path"]), self.url(f["url"]), frequency, self.regex(f.get("regex")),
                          line=node.line, lines=self.lines(node, f))

    def volume_mount(self, node: Node) -> str:
        value = node.text()
        parts = value.split(":")
        if not parts[0] or len(parts) > 2 or (len(parts) == 2 and not parts[1]):
            raise node.error(f"bad volume mount {value!r}: use HOST_PATH or HOST_PATH:CONTAINER_PATH")
        return value
