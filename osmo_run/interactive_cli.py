"""``osmo workflow exec`` and ``osmo workflow port-forward``: into a running task, on either runner
(docs/INTERACTIVE.md).

The local runner's tasks are reached through ``osmo_run.local.reach`` (namespaces, container, or the
host for plain tasks), the Kubernetes runner's through the API (``osmo_run.kube.interactive``, imported
only for such workflows). Exit codes: the command's own for ``exec`` (126/127 when it cannot be run);
otherwise 2 usage, 3 unknown workflow, task or group, 4 the task does not run now (the message says what
it waits for, or suggests ``--debug`` for a task that ended), 130 interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import click

from osmo_run.local import reach, service
from osmo_run.local.access import DEFAULT_SHELL
from osmo_run.local.debug import debug_copy
from osmo_run.local.errors import CONFLICT, USAGE, RunnerError
from osmo_run.portforward import Forwarder, parse_ports


class CommandAfterDashes(click.Command):
    """Keeps what follows ``--`` for the task's command (``ctx.meta['osmo.command']``), so an optional
    TASK before it is never taken from the command."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" in args:
            cut = args.index("--")
            ctx.meta["osmo.command"] = args[cut + 1:]
            args = args[:cut]
        return super().parse_args(ctx, args)


def _exec_local(workflow_id: str, task: str, argv: list[str], tty: bool) -> None:
    """Replace this process with the command inside the task (its exit code becomes ours)."""
    access = reach.running_access(workflow_id, task)
    command, env, cwd = access.exec_argv(argv, tty)
    access.join_cgroup(os.getpid())
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        if cwd:
            os.chdir(cwd)
        os.execvpe(command[0], command, env if env is not None else os.environ)
    except OSError as exc:
        raise RunnerError(f"cannot run {command[0]}: {exc.strerror or exc}", 127 if isinstance(exc, FileNotFoundError) else 126,
                          workflow=workflow_id, task=task) from None


def _exec_debug(workflow_id: str, task: str, retry: int | None, argv: list[str], tty: bool) -> int:
    """The command in a copy of the ended attempt (``local/debug.py``); the copy goes when it exits."""
    with debug_copy(workflow_id, task, retry) as access:
        command, env, cwd = access.exec_argv(argv, tty)
        click.echo(f"osmo: {access.describe}: its view as the attempt left it, without its command "
                   "(removed when this command exits)", err=True)
        previous = signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C is the shell's
        try:
            return subprocess.call(command, env=env, cwd=cwd)
        finally:
            signal.signal(signal.SIGINT, previous)


def _exec_pod_debug(workflow_id: str, task: str, retry: int | None, argv: list[str], tty: bool, info, pool) -> int:
    """Kubernetes: the command in a debug copy pod of the ended attempt (``kube/debug.py``), deleted after."""
    from osmo_run.kube import debug, interactive  # the Kubernetes client only for such workflows

    chosen = debug.choose_attempt(info, task, retry)  # an attempt that has not ended: its error, nothing else
    click.echo(f"osmo: starting a debug copy of attempt {chosen['attempt']} of task {task} in namespace "
               f"{pool.namespace} ...", err=True)
    with debug.debug_pod(workflow_id, task, retry, info, pool, service.in_cluster(workflow_id) is not None) as pod:
        outputs = ("its outputs as it uploaded them" if debug.written_output(chosen.get("datasets_written") or [],
                                                                           workflow_id, task)
                   else "an empty output folder (the attempt uploaded no outputs)")
        click.echo(f"osmo: pod {pod.name}: the attempt's image, files, environment, inputs and {outputs}, "
                   "without its command (deleted when this command exits)", err=True)
        return interactive.exec_in_pod(pool, pod, argv or list(DEFAULT_SHELL), tty)


def _exec_group(ctx: click.Context, workflow_id: str, group: str, argv: list[str]) -> None:
    """``argv`` in every running task of ``group`` at once, each line under its task's name; the exit
    code is the highest of theirs."""
    info = service.query(workflow_id)
    reach.find_task(info, None, group)  # an unknown group: NotFound with the closest names
    members = [t for g, t in reach.tasks(info) if g == group]
    running = [t["name"] for t in members if t["status"] == "RUNNING"]
    for t in members:
        if t["status"] != "RUNNING":
            click.echo(f"{t['name']} | (not run: {reach.not_running(info, t)})", err=True)
    if not running:
        raise RunnerError(f"no task of group {group} is running", CONFLICT, workflow=workflow_id)
    lock = threading.Lock()
    codes: dict[str, int] = {}

    def one(name: str) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "osmo_store.cli.main", "workflow", "exec", "--no-tty",
                                 workflow_id, name, "--", *argv], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for raw in proc.stdout:
            with lock:
                sys.stdout.write(f"{name} | {raw.decode(errors='replace').rstrip(chr(10))}\n")
                sys.stdout.flush()
        codes[name] = proc.wait()

    threads = [threading.Thread(target=one, args=(name,)) for name in running]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in running:
        if codes[name]:
            click.echo(f"{name} | (exit code {codes[name]})", err=True)
    ctx.exit(max(codes.values()))


@click.command("exec", cls=CommandAfterDashes)
@click.argument("workflow_id", metavar="WF")
@click.argument("task", metavar="[TASK]", required=False)
@click.option("--group", metavar="GROUP", help="Run the command in every running task of GROUP; each output "
                                               "line is printed under its task's name.")
@click.option("--tty/--no-tty", default=None, help="Give the command a terminal (default: when stdin and "
                                                   "stdout are terminals).")
@click.option("--debug", is_flag=True, help="The task has ended: start a copy of its view (image, files, "
                                            "environment, its run folder as it was) without its command, run "
                                            "the shell or command there, and remove the copy after.")
@click.option("--retry", type=click.IntRange(min=1), metavar="N",
              help="With --debug: the attempt to copy (1 is the first; default: the last).")
@click.pass_context
def exec_command(ctx: click.Context, workflow_id: str, task: str | None, group: str | None, tty: bool | None,
                 debug: bool, retry: int | None) -> None:
    """Run a command in a running task: osmo workflow exec WF [TASK] [-- CMD...].

    Without CMD: an interactive shell (bash if the task has it, else sh). stdin, stdout, stderr and the
    exit code are the command's. TASK defaults to the lead of the workflow's (or GROUP's) group. On the
    local runner the command runs in the task's namespaces or its container, with the task's
    environment and working folder; on Kubernetes in the task's container through the API.
    """
    argv: list[str] = ctx.meta.get("osmo.command", [])
    if retry is not None and not debug:
        raise RunnerError("--retry N picks the attempt --debug copies: exec reaches the running attempt", USAGE)
    if group is not None and debug:
        raise RunnerError("--debug copies one task: give TASK, not --group", USAGE)
    if group is not None:
        if task is not None:
            raise RunnerError("give either TASK or --group, not both", USAGE)
        if not argv:
            raise RunnerError("--group needs a command: osmo workflow exec WF --group GROUP -- CMD...", USAGE)
        _exec_group(ctx, workflow_id, group, argv)
        return
    if tty is None:
        tty = sys.stdin.isatty() and sys.stdout.isatty()
    pool = reach.kube_pool(workflow_id)
    info = service.query(workflow_id)
    name = reach.find_task(info, task)["name"]
    if debug:
        if pool is not None:
            ctx.exit(_exec_pod_debug(workflow_id, name, retry, argv, tty, info, pool))
        ctx.exit(_exec_debug(workflow_id, name, retry, argv, tty))
    if pool is None:
        _exec_local(workflow_id, name, argv, tty)
        return
    from osmo_run.kube import interactive  # the Kubernetes client only for such workflows

    pod = interactive.running_pod(info, name, pool)
    ctx.exit(interactive.exec_in_pod(pool, pod, argv or list(DEFAULT_SHELL), tty))


class _PodForward:
    """Kubernetes: the API's port-forward (``kube/interactive.py``), ended with the task."""

    def __init__(self, pool, workflow_id: str, task: str) -> None:
        from osmo_run.kube import interactive  # the Kubernetes client only for such workflows

        self.workflow_id, self.task, self.pool = workflow_id, task, pool
        self.running_pod = interactive.running_pod
        self.inner = interactive.PodConnector(pool, self._pod)

    def _pod(self):
        """The task's pod now; while the task is between two attempts (a RESCHEDULE), wait for the next
        one (up to ``reach.RESTART_WAIT`` seconds); ``TargetGone`` once it has ended for good."""
        deadline = time.monotonic() + reach.RESTART_WAIT
        while True:
            try:
                return self.running_pod(service.query(self.workflow_id), self.task, self.pool)
            except RunnerError:
                reach.check_not_ended(self.workflow_id, self.task)
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def tcp(self, port: int):
        return self.inner.tcp(port)

    def udp(self, port: int):
        return self.inner.udp(port)

    def check(self) -> None:
        reach.check_not_ended(self.workflow_id, self.task)

    def close(self) -> None:
        self.inner.close()


def _connector(workflow_id: str, task: str) -> Any:
    pool = reach.kube_pool(workflow_id)
    return reach.LocalConnector(workflow_id, task) if pool is None else _PodForward(pool, workflow_id, task)


@click.command("port-forward")
@click.argument("workflow_id", metavar="WF")
@click.argument("task", metavar="TASK")
@click.argument("ports", metavar="PORT[:LOCAL]...", nargs=-1, required=True)
@click.option("--udp", is_flag=True, help="Forward UDP instead of TCP (for ports without /tcp, /udp or /both).")
@click.option("--address", default="127.0.0.1", show_default=True,
              help="The local address to listen on (anything but loopback exposes the task to your network).")
@click.pass_context
def port_forward(ctx: click.Context, workflow_id: str, task: str, ports: tuple[str, ...], udp: bool,
                 address: str) -> None:
    """Forward local ports to a running task until interrupted: osmo workflow port-forward WF TASK PORT...

    PORT is the task's port; PORT:LOCAL listens on LOCAL instead (0: any free port); ranges A-B and
    A-B:C-D forward many at once; a /tcp, /udp or /both suffix picks the protocol per port. Forwarding
    goes on across a restart of the task (a RESCHEDULE) and stops when the task has ended. One line per
    port tells where it listens; a connection to a port nobody listens on is closed and reported.
    """
    rules = parse_ports(list(ports), "udp" if udp else "tcp")
    info = service.query(workflow_id)
    name = reach.find_task(info, task)["name"]
    found = next(t for _, t in reach.tasks(info) if t["name"] == name)
    if found["status"] != "RUNNING" and reach.is_terminal(found["status"]):
        raise RunnerError(reach.not_running(info, found), CONFLICT, workflow=workflow_id, task=name)
    connector = _connector(workflow_id, name)
    forwarder = Forwarder(rules, connector, address, log=lambda line: click.echo(f"osmo: {line}", err=True))
    try:
        for rule, local in forwarder.bind():
            click.echo(f"forwarding {rule.describe(address, local)} of task {name}")
        sys.stdout.flush()
        signal.signal(signal.SIGTERM, lambda *_: forwarder.stop())
        forwarder.serve()
    finally:
        forwarder.close()
        if hasattr(connector, "close"):
            connector.close()
