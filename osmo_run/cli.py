"""``osmo workflow``: the click group of the workflow runtime (``validate``, ``submit``).

Spec errors print one line, ``osmo: error: FILE:LINE: FIELD.PATH: message``, and exit with code 2.
The group is registered into the ``osmo`` command by the CLI's entry point; tests drive it directly.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import click

from osmo_run.spec import Dag, DatasetInput, LoadedSpec, SpecError, TaskInput, UrlInput, Workflow, load_file

SPEC_ERROR_EXIT = 2


def _template_options(command: Callable) -> Callable:
    command = click.option("--set-string", "set_string_items", multiple=True, metavar="NAME=VALUE",
                           help="Set a template value, kept as text. Repeatable.")(command)
    return click.option("--set", "set_items", multiple=True, metavar="NAME=VALUE",
                        help="Set a template value (overrides default-values); numbers and true/false "
                             "are converted. Repeatable.")(command)


def _load(ctx: click.Context, file: str, set_items, set_string_items, as_json: bool = False) -> LoadedSpec:
    try:
        return load_file(file, set_items=set_items, set_string_items=set_string_items)
    except SpecError as exc:
        if as_json:
            click.echo(json.dumps({"ok": False, "error": str(exc)}))
        else:
            click.echo(f"osmo: error: {exc}", err=True)
        ctx.exit(SPEC_ERROR_EXIT)
        raise  # unreachable: ctx.exit raises


def _describe_input(source: Any) -> str:
    if isinstance(source, TaskInput):
        return f"task:{source.task}"
    if isinstance(source, DatasetInput):
        return f"dataset:{source.name}"
    if isinstance(source, UrlInput):
        return f"url:{source.url}"
    return str(source)


def summary(workflow: Workflow) -> dict[str, Any]:
    """The JSON summary ``validate --json`` prints."""
    dag = Dag.from_workflow(workflow)
    return {
        "ok": True,
        "name": workflow.name,
        "uses_tasks": workflow.uses_tasks,
        "groups": [{
            "name": group.name,
            "lead": group.lead.name,
            "upstream": list(dag.upstream_of(group)),
            "tasks": [{"name": task.name, "lead": task.lead,
                       "inputs": [_describe_input(i) for i in task.inputs]} for task in group.tasks],
        } for group in workflow.groups],
    }


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


@click.group("workflow")
def workflow() -> None:
    """Validate and submit workflows written in OSMO's version 2 YAML."""


@workflow.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_template_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def validate(ctx: click.Context, file: str, set_items, set_string_items, as_json: bool) -> None:
    """Render FILE's templates and check the spec; print its groups and tasks."""
    loaded = _load(ctx, file, set_items, set_string_items, as_json)
    info = summary(loaded.workflow)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    tasks = sum(len(g["tasks"]) for g in info["groups"])
    click.echo(f"OK: workflow {info['name']!r}: {_plural(len(info['groups']), 'group')}, "
               f"{_plural(tasks, 'task')}")
    width = max(len(g["name"]) for g in info["groups"])
    for group in info["groups"]:
        names = ", ".join(t["name"] + ("*" if t["lead"] else "") for t in group["tasks"])
        after = f"  after: {', '.join(group['upstream'])}" if group["upstream"] else ""
        click.echo(f"  {group['name']:<{width}}  tasks: {names}{after}")
    click.echo("  (* lead task)")


@workflow.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_template_options
@click.option("--dry-run", is_flag=True, help="Print the rendered spec instead of running it.")
@click.pass_context
def submit(ctx: click.Context, file: str, set_items, set_string_items, dry_run: bool) -> None:
    """Render and validate FILE, then run it (with --dry-run: print the rendered spec)."""
    loaded = _load(ctx, file, set_items, set_string_items)
    if dry_run:
        text = loaded.rendered.text
        click.echo(text, nl=not text.endswith("\n"))
        return
    click.echo(f"osmo: error: the runner is not built yet: the spec of {file} is valid, but workflows "
               "cannot run yet (use --dry-run to see the rendered spec)", err=True)
    ctx.exit(SPEC_ERROR_EXIT)
