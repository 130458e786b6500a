"""``osmo workflow rsync WF TASK SRC DEST``: rsync between this machine and a running task, on either
runner (docs/INTERACTIVE.md).

rsync runs here in its remote-shell mode with ``osmo workflow rsync-shell`` (hidden) as the remote
shell: rsync starts ``<shell> HOST rsync --server ...`` and that command runs ``rsync --server`` in the
task exactly as ``osmo workflow exec --no-tty WF TASK -- ...`` would (the task's namespaces, container
or pod), so the task side sees only the task's view and needs the rsync of that view (the host's for
host-process tasks, the image's otherwise). The shell is this same osmo (``sys.executable -m
osmo_store.cli.main``) with the caller's environment.

Exit codes: rsync's own (0, 23 a file could not be transferred, 24 a source file vanished, 20 or
130 interrupted, ...), except where the task could not be reached: 2 usage, 3 unknown workflow or task, 4
the task does not run now (exec's message), 127 rsync missing here or in the task. The shell records
exec's error and the command's exit code in a private folder (``--status``): when the task was not
reached, or has no rsync, rsync's own "connection closed" lines are replaced by one line saying so.
rsync's stderr is therefore printed when it ends (its stdout, progress included, as it comes).
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from typing import Any

import click

from osmo_run.interactive_cli import exec_command
from osmo_run.local import reach
from osmo_run.local.errors import INTERNAL, USAGE, RunnerError
from osmo_run.spec import TASK_WORK

TASK_PREFIX = "task:"
PARTIAL_DIR = ".rsync-partial"  # relative: in each receiving folder; rsync neither sends nor deletes it
RSYNC_HOST = "task"  # rsync's name for the other side; the shell is told WF and TASK itself
RSYNC_MISSING = 127
EXEC_ERROR, COMMAND_EXIT = "error.json", "exit"  # what the remote shell records in its --status folder
INSTALL_RSYNC = "apt-get install rsync"
TASK_DATA_PARENT = posixpath.dirname(TASK_WORK)  # /osmo: the working folder's siblings (data/) are ../


def task_path(path: str, local_runner: bool) -> str:
    """The path rsync's server is given for ``task:PATH`` (relative: to /osmo/work). On the local runner,
    where exec starts in the task's working folder, ``/osmo/work/...`` and ``/osmo/...`` become relative to
    it, so that they also name the task's folders in plain mode (where /osmo is not a path of the host);
    otherwise (a pod, whatever its image's working folder) the absolute path. A trailing slash (rsync's
    "the folder's content") is kept."""
    slash = "/" if path.endswith("/") else ""
    full = posixpath.normpath(posixpath.join(TASK_WORK, path)) if path else TASK_WORK
    if not local_runner:
        return full + ("" if full == "/" else slash)
    if full == TASK_WORK or full.startswith(TASK_WORK + "/"):
        relative = posixpath.relpath(full, TASK_WORK)
    elif full.startswith(TASK_DATA_PARENT + "/"):
        relative = posixpath.join("..", posixpath.relpath(full, TASK_DATA_PARENT))
    else:
        return full + ("" if full == "/" else slash)
    return ("./" + relative if relative.startswith(":") else relative) + slash  # "x::y" would be a daemon


def local_path(path: str) -> str:
    """A local path rsync never takes for a remote one (``a:b`` would be host ``a``)."""
    if ":" in path.split("/", 1)[0] and not path.startswith("/"):
        return "./" + path
    return path


def rsync_command(rsync: str, workflow_id: str, task: str, src: str, dest: str, status: str,
                  options: list[str], local_runner: bool = True) -> list[str]:
    """The rsync command line: archive mode without owner and group (files belong to whoever receives
    them: the task's user there, a rootless task's ids are not this machine's), resumable, arguments sent
    over the protocol so that file names need no quoting for a shell the task may not have."""
    shell = [sys.executable, "-m", "osmo_store.cli.main", "workflow", "rsync-shell", "--status", status,
             workflow_id, task]
    ends = [RSYNC_HOST + ":" + task_path(p[len(TASK_PREFIX):], local_runner) if p.startswith(TASK_PREFIX)
            else local_path(p) for p in (src, dest)]
    return [rsync, "--archive", "--no-owner", "--no-group", "--protect-args", f"--partial-dir={PARTIAL_DIR}",
            "--rsh=" + " ".join(shlex.quote(word) for word in shell), *options, "--", *ends]


def _read_status(folder: str) -> tuple[dict[str, Any] | None, int | None]:
    """What the remote shell recorded (``rsync_shell``): exec's error, and the command's exit code."""
    found: list[Any] = []
    for name, parse in ((EXEC_ERROR, json.loads), (COMMAND_EXIT, int)):
        try:
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                found.append(parse(f.read()))
        except (OSError, ValueError):
            found.append(None)
    return found[0], found[1]


def _run(argv: list[str]) -> tuple[int, bytes]:
    """Run rsync (stdout passed through, stderr kept), passing on SIGTERM, SIGHUP and SIGINT."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    kept: list[bytes] = []
    reader = threading.Thread(target=lambda: kept.extend(iter(lambda: proc.stderr.read(65536), b"")), daemon=True)
    reader.start()
    forward = {sig: signal.signal(sig, lambda number, _frame: proc.send_signal(number))
               for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, previous in forward.items():
            signal.signal(sig, previous)
    reader.join()
    return code, b"".join(kept)


@click.command("rsync")
@click.argument("workflow_id", metavar="WF")
@click.argument("task", metavar="TASK")
@click.argument("src", metavar="SRC")
@click.argument("dest", metavar="DEST")
@click.option("--delete", is_flag=True, help="Delete files on the receiving side that SRC does not have.")
@click.option("--exclude", "excludes", multiple=True, metavar="PATTERN",
              help="Leave out files matching PATTERN (rsync's --exclude). Repeatable.")
@click.option("--dry-run", is_flag=True, help="Change nothing; list what would change.")
@click.option("--itemize-changes", "-i", "itemize", is_flag=True, help="List each change (rsync's -i).")
@click.option("--progress", is_flag=True, help="Show each file's progress.")
@click.option("--stats", is_flag=True, help="Print rsync's transfer statistics at the end.")
@click.option("--bwlimit", metavar="RATE", help="Limit the bandwidth (rsync's --bwlimit, e.g. 10M).")
@click.pass_context
def rsync_command_line(ctx: click.Context, workflow_id: str, task: str, src: str, dest: str, delete: bool,
                       excludes: tuple[str, ...], dry_run: bool, itemize: bool, progress: bool, stats: bool,
                       bwlimit: str | None) -> None:
    """Copy files to or from a running task with rsync: osmo workflow rsync WF TASK SRC DEST.

    Exactly one of SRC and DEST is the task's, written task:PATH; a relative PATH is relative to the
    task's working folder /osmo/work. Archive mode; an interrupted transfer resumes where it stopped
    when run again (partial files are kept in .rsync-partial). rsync must be installed here and in the
    task (its image). The exit code is rsync's; 3 unknown workflow or task, 4 the task does not run now,
    127 rsync is missing here or in the task.
    """
    if src.startswith(TASK_PREFIX) == dest.startswith(TASK_PREFIX):
        raise RunnerError(f"exactly one of SRC and DEST must be the task's ({TASK_PREFIX}PATH): "
                          f"got {src!r} and {dest!r}", USAGE)
    rsync = shutil.which("rsync")
    if rsync is None:
        raise RunnerError(f"rsync is not installed on this machine: install it with '{INSTALL_RSYNC}'",
                          RSYNC_MISSING)
    options = [*(["--delete"] if delete else []), *(f"--exclude={p}" for p in excludes),
               *(["--dry-run", "--itemize-changes"] if dry_run else []), *(["--itemize-changes"] if itemize else []),
               *(["--progress"] if progress else []), *(["--stats"] if stats else []),
               *([f"--bwlimit={bwlimit}"] if bwlimit else [])]
    local_runner = reach.kube_pool(workflow_id) is None  # NotFound (3) for an unknown workflow
    with tempfile.TemporaryDirectory(prefix="osmo-rsync-") as status:  # mode 0700
        sys.stdout.flush()
        code, errors = _run(rsync_command(rsync, workflow_id, task, src, dest, status, options, local_runner))
        failed, command_exit = _read_status(status)
    # exec's own 127 names the program it could not start: rsync (plain mode) or a tool of its own (nsenter)
    if failed is not None and not (failed["exit"] == RSYNC_MISSING and "rsync" in failed["error"]):
        raise RunnerError(failed["error"], failed["exit"], **failed.get("subject", {}))
    if RSYNC_MISSING in (code, command_exit) or failed is not None:  # rsync was not found in the task
        why = f" ({failed['error']})" if failed else ""
        raise RunnerError(f"task {task} of workflow {workflow_id} has no rsync: rsync must be installed in "
                          f"its image (host-process tasks: on the host, on the task's PATH){why}",
                          RSYNC_MISSING, workflow=workflow_id, task=task)
    sys.stderr.buffer.write(errors)
    sys.stderr.flush()
    ctx.exit(code)


@click.command("rsync-shell", hidden=True,
               context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--status", "status", required=True, metavar="DIR", help="Where the outcome is recorded.")
@click.argument("workflow_id", metavar="WF")
@click.argument("task", metavar="TASK")
@click.argument("remote", metavar="[-l USER] HOST CMD...", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def rsync_shell(ctx: click.Context, status: str, workflow_id: str, task: str, remote: tuple[str, ...]) -> None:
    """rsync's remote shell for ``osmo workflow rsync`` (not for people): runs CMD in the task as
    ``osmo workflow exec --no-tty WF TASK -- CMD`` does; rsync's HOST (and -l USER) are ignored.

    exec replaces its process with the command, so it runs in a child; this process records in
    ``--status`` DIR exec's error (``error.json``, when the task was not reached) or the command's exit
    code (``exit``; rsync's own exit code may not show the remote shell's, e.g. 127), and only then ends:
    rsync sees the end of the stream after that."""
    words = list(remote)
    if words[:1] == ["-l"]:
        words = words[2:]
    command = words[1:]
    if not command:
        raise RunnerError("rsync-shell: no command after the host", USAGE)
    sys.stdout.flush()
    sys.stderr.flush()
    child = os.fork()
    if child == 0:
        os._exit(_exec_in_task(ctx, status, ["--no-tty", workflow_id, task, "--", *command]))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the child (the command) decides
        signal.signal(sig, signal.SIG_IGN)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    code = code if code >= 0 else 128 - code
    _record(os.path.join(status, COMMAND_EXIT), str(code))
    ctx.exit(code)


def _exec_in_task(ctx: click.Context, status: str, exec_args: list[str]) -> int:
    """(The forked child) ``osmo workflow exec`` with ``exec_args``; returns only when the command did not
    replace this process: its exit code, or exec's error, recorded for ``osmo workflow rsync``."""
    try:
        with exec_command.make_context("exec", exec_args, parent=ctx) as sub:
            exec_command.invoke(sub)
        code = 0
    except click.exceptions.Exit as done:  # Kubernetes: exec returns the command's exit code
        code = done.exit_code
    except RunnerError as exc:
        _record(os.path.join(status, EXEC_ERROR),
                json.dumps({"error": str(exc), "exit": exc.exit_code, "subject": exc.subject}))
        code = exc.exit_code
    except Exception as exc:  # noqa: BLE001 - one line for osmo workflow rsync, never a traceback
        _record(os.path.join(status, EXEC_ERROR), json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}",
                                                              "exit": INTERNAL, "subject": {}}))
        code = INTERNAL
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def _record(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
