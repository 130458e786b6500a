"""``osmo workflow``: the click group of the workflow runtime.

``validate``, ``submit`` (``--dry-run``, ``--wait``), ``list``, ``query``, ``logs``, ``cancel`` and
``spec``. Workflows run on this machine under a detached supervisor (``osmo_run.local``); their
state lives in ``$OSMO_STATE_DIR`` (default ``~/.local/state/osmo``), so every command works from any
shell. Errors print one line, ``osmo: error: ...``, and exit non-zero: 2 for a bad spec or usage, 3
for an unknown workflow or task (with the closest names), 4 for a conflict (cancel of a finished
workflow), 5 when the store cannot be used, 1 when ``submit --wait`` saw the workflow fail, 70 for an
internal error. With ``--json`` on the command line the error is one JSON object on stderr instead:
``error``, ``code``, ``exit`` and what it names (``workflow``, ``task``; ``file``, ``line``, ``field``
of a spec). The groups (``workflow``; ``pool list`` and ``resource list``, osmo_run/resources.py) are
registered into the ``osmo`` command by the CLI's entry point; tests may drive them directly.
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from importlib import import_module
from typing import Any, Callable, Iterable

import click

from osmo_run.local import logs as task_logs
from osmo_run.local import report, service
from osmo_run.local.errors import INTERNAL, INTERRUPTED, USAGE, RunnerError
from osmo_run.local.statuses import WorkflowStatus
from osmo_run.spec import Dag, DatasetInput, LoadedSpec, SpecError, TaskInput, UrlInput, Workflow, load_file

SPEC_ERROR_EXIT = 2
JSON_ERRORS = "osmo.json_errors"  # in click's ctx.meta: the command line has --json (the osmo group sets it too)


def _template_options(command: Callable) -> Callable:
    command = click.option("--set-string", "set_string_items", multiple=True, metavar="NAME=VALUE",
                           help="Set a template value, kept as text. Repeatable.")(command)
    return click.option("--set", "set_items", multiple=True, metavar="NAME=VALUE",
                        help="Set a template value (overrides default-values); numbers and true/false "
                             "are converted. Repeatable.")(command)


def _load(file: str, set_items, set_string_items) -> LoadedSpec:
    """The rendered, validated spec; a ``SpecError`` is reported by ``WorkflowGroup``."""
    return load_file(file, set_items=set_items, set_string_items=set_string_items)


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


LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
LABEL_VALUE_MAX = 256


def parse_labels(items: Iterable[str]) -> dict[str, str]:
    """``KEY=VALUE`` items as a dict; a malformed or repeated one is a ``RunnerError`` (exit 2) naming it."""
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not LABEL_KEY.fullmatch(key):
            raise RunnerError(f"--label {item!r}: expected KEY=VALUE, KEY of letters, digits and . _ / - "
                              "(up to 63, starting with a letter or digit)", USAGE, field="label")
        if len(value) > LABEL_VALUE_MAX or any(ch in value for ch in "\r\n\0"):
            raise RunnerError(f"--label {key}: the value must be one line of at most {LABEL_VALUE_MAX} characters",
                              USAGE, field="label")
        if key in labels:
            raise RunnerError(f"--label {key} is given twice", USAGE, field="label")
        labels[key] = value
    return labels


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


class WorkflowGroup(click.Group):
    """Turns every error of a subcommand into one line on stderr (one JSON object with ``--json``)
    and an exit code. Click's usage errors are left to the ``osmo`` group, which reports them alike.

    ``elsewhere`` names commands defined in other modules (``"module:attribute"``), imported when asked
    for or listed by ``--help``: ``osmo workflow query`` starts without the interactive commands' modules."""

    def __init__(self, *args, elsewhere: dict[str, str] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.elsewhere = dict(elsewhere or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(self.elsewhere))

    def get_command(self, ctx: click.Context, name: str):
        if name not in self.commands and name in self.elsewhere:
            module, attribute = self.elsewhere[name].split(":")
            self.add_command(getattr(import_module(module), attribute), name)
        return self.commands.get(name)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        given = args[:args.index("--")] if "--" in args else args
        if "--json" in given:
            ctx.meta[JSON_ERRORS] = True
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except RunnerError as exc:
            _fail(ctx, str(exc), exc.exit_code, exc.code, exc.subject)
        except SpecError as exc:
            _fail(ctx, str(exc), SPEC_ERROR_EXIT, "spec",
                  {"ok": False, "file": exc.file, "line": exc.line, "field": exc.path})
        except KeyboardInterrupt:
            _fail(ctx, "interrupted", INTERRUPTED, "interrupted")
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except (sqlite3.Error, OSError) as exc:
            _fail(ctx, f"state store: {type(exc).__name__}: {exc}", INTERNAL, "internal")
        except Exception as exc:  # noqa: BLE001 - the one place unexpected errors become a message
            _fail(ctx, f"internal error: {type(exc).__name__}: {exc}", INTERNAL, "internal")


def _fail(ctx: click.Context, message: str, exit_code: int, code: str, subject: dict | None = None) -> None:
    if ctx.meta.get(JSON_ERRORS):
        known = {k: v for k, v in (subject or {}).items() if v is not None}
        click.echo(json.dumps({**known, "error": message, "code": code, "exit": exit_code}, sort_keys=True), err=True)
    else:
        click.echo(f"osmo: error: {message}", err=True)
    ctx.exit(exit_code)


@click.group("workflow", cls=WorkflowGroup, elsewhere={
    "exec": "osmo_run.interactive_cli:exec_command", "port-forward": "osmo_run.interactive_cli:port_forward",
    "rsync": "osmo_run.rsync_cli:rsync_command_line", "rsync-shell": "osmo_run.rsync_cli:rsync_shell"})
def workflow() -> None:
    """Validate and submit workflows written in OSMO's version 2 YAML."""


@workflow.command()
@click.argument("file", type=click.Path(dir_okay=False))
@_template_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def validate(file: str, set_items, set_string_items, as_json: bool) -> None:
    """Render FILE's templates and check the spec; print its groups and tasks."""
    loaded = _load(file, set_items, set_string_items)
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
@click.option("--wait", is_flag=True, help="Wait until the workflow ends; exit 1 unless it COMPLETED.")
@click.option("--store", "store", metavar="NAME|URL",
              help="The dataset store task data goes to (default: osmo's --store, $OSMO_STORE, the "
                   "configured default store, else the per-user store).")
@click.option("--runner", type=click.Choice(["local", "kubernetes"]), default=None,
              help="Where the tasks run: this machine, or the cluster of the pool config's kubernetes: "
                   "section (docs/KUBERNETES.md). Default: the pool config's runner:, else local.")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE",
              help="Label the workflow (shown by list, query and osmo ui, which filters by them). Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def submit(ctx: click.Context, file: str, set_items, set_string_items, dry_run: bool, wait: bool,
           store: str | None, runner: str, labels: tuple[str, ...], as_json: bool) -> None:
    """Render and validate FILE, then run it (on this machine, or with --runner kubernetes on a
    cluster) and print its id (with --dry-run: print the rendered spec). Without --wait the
    workflow runs on after the command returns."""
    parsed_labels = parse_labels(labels)
    loaded = _load(file, set_items, set_string_items)
    if dry_run:
        text = loaded.rendered.text
        click.echo(text, nl=not text.endswith("\n"))
        return
    root = ctx.find_root()
    if store is None and root.get_parameter_source("store_url") == click.core.ParameterSource.COMMANDLINE:
        store = root.params.get("store_url")  # osmo --store X workflow submit ...
    workflow_id, proc = service.submit(loaded, file=file, store=service.store_argument(store), runner=runner,
                                       labels=parsed_labels)
    if not wait:
        click.echo(json.dumps({"id": workflow_id, "status": WorkflowStatus.PENDING.value}) if as_json else workflow_id)
        return
    if not as_json:
        click.echo(workflow_id)
        sys.stdout.flush()
    try:
        row = service.wait(workflow_id, proc)
    except KeyboardInterrupt:
        raise RunnerError(f"stopped waiting; workflow {workflow_id} runs on "
                          f"('osmo workflow cancel {workflow_id}' stops it)", INTERRUPTED, workflow=workflow_id) from None
    if as_json:
        click.echo(json.dumps(service.query(workflow_id), indent=2))
    else:
        reason = f": {row['reason']}" if row["reason"] else ""
        click.echo(f"{workflow_id} {row['status']}{reason}")
    ctx.exit(0 if row["status"] == WorkflowStatus.COMPLETED.value else 1)


@workflow.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the workflows as JSON.")
def list_(as_json: bool) -> None:
    """List the workflows of this machine, then those whose supervisor runs in the cluster of the pool
    config (its kubernetes: section with supervisor: cluster), oldest first."""
    items, problem = service.listing()
    if problem:
        click.echo(f"osmo: warning: the cluster's workflows are not listed: {problem}", err=True)
    click.echo(json.dumps(items, indent=2) if as_json else report.listing(items))


@workflow.command()
@click.argument("workflow_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print everything as JSON.")
def query(workflow_id: str, as_json: bool) -> None:
    """Show a workflow: groups, tasks, statuses, exit codes, times, dataset versions read and written."""
    info = service.query(workflow_id)
    click.echo(json.dumps(info, indent=2) if as_json else report.query(info))


@workflow.command()
@click.argument("workflow_id", metavar="ID")
@click.option("--task", "task", metavar="TASK", help="Only this task's log.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until the workflow ends.")
def logs(workflow_id: str, task: str | None, follow: bool) -> None:
    """Print task logs: the command's stdout and stderr, sidecar lines ([osmo-sidecar]) and runner
    notices ([osmo]). Without --task every task's lines are prefixed with its name."""
    pool = service.in_cluster(workflow_id)
    if pool is not None:
        _cluster_logs(workflow_id, pool, task, follow)
        return
    paths = service.log_paths(workflow_id, task)
    secrets = service.log_secrets(workflow_id)  # masked again (they were masked as they were written)
    prefix = task is None
    if follow:
        for name, line in task_logs.follow(paths, lambda: service.is_finished(workflow_id), secrets=secrets):
            click.echo(f"{name} | {line}" if prefix else line)
            sys.stdout.flush()
        return
    for name, path in paths.items():
        text = task_logs.read(path, secrets)
        if not prefix:
            click.echo(text, nl=False)
            continue
        for line in text.splitlines():
            click.echo(f"{name} | {line}")


def _cluster_logs(workflow_id: str, pool, task: str | None, follow: bool) -> None:
    """``logs`` of a workflow whose supervisor runs in the cluster; with ``follow``, new lines as the
    supervisor publishes them (about once a second) until the workflow ends."""
    from osmo_run.kube import remote

    shown: dict[str, int] = {}
    while True:
        done = follow and service.is_terminal(remote.query(workflow_id, pool)["status"])
        texts = remote.logs(workflow_id, pool, task)
        for name, text in texts.items():
            if follow:
                new, shown[name] = text[shown.get(name, 0):], len(text)
            else:
                new = text
            for line in new.splitlines():
                click.echo(f"{name} | {line}" if task is None else line)
        sys.stdout.flush()
        if not follow or done:
            return
        time.sleep(1.0)


@workflow.command()
@click.argument("workflow_id", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print the workflow's final state as JSON.")
def cancel(workflow_id: str, as_json: bool) -> None:
    """Stop a workflow: every task is stopped (SIGTERM, SIGKILL after the grace period) and the
    command returns once no process of the workflow is left."""
    row = service.cancel(workflow_id)
    click.echo(json.dumps({"id": workflow_id, "status": row["status"]}) if as_json
               else f"{workflow_id} {row['status']}")


@workflow.command()
@click.argument("workflow_id", metavar="ID")
def spec(workflow_id: str) -> None:
    """Print the rendered spec a workflow was submitted with."""
    text = service.spec(workflow_id)
    click.echo(text, nl=not text.endswith("\n"))


@click.group("pool", cls=WorkflowGroup)
def pool() -> None:
    """The pools workflows run in: this machine, and the cluster of the pool config's kubernetes: section."""


@pool.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the pools as JSON.")
def pool_list(as_json: bool) -> None:
    """List the pools: platforms, and free/total CPU, memory and GPUs."""
    from osmo_run import resources

    items = resources.pool_listing()
    click.echo(json.dumps(items, indent=2) if as_json else resources.render_pools(items))


@click.group("resource", cls=WorkflowGroup)
def resource() -> None:
    """What the pools have, what is used and free, and which workflows hold it."""


@resource.command("list")
@click.option("--pool", "pool_name", metavar="POOL", help="Only this pool (see 'osmo pool list').")
@click.option("--json", "as_json", is_flag=True, help="Print the resources as JSON.")
def resource_list(pool_name: str | None, as_json: bool) -> None:
    """Per node and platform: capacity, used and free CPU, memory, GPU and storage, each GPU and who holds
    it (workflow/task), and every workflow group that holds a share."""
    from osmo_run import resources

    items = resources.reports(pool_name)
    click.echo(json.dumps(items, indent=2) if as_json else resources.render_resources(items))
