"""``osmo-sidecar``: the task sidecar's command line (``download``, ``exec``, ``upload``).

Every command takes ``--run-dir DIR``, the task attempt's run directory described in
``osmo_run/contract.py`` and docs/SIDECAR.md. ``download`` and ``upload`` read ``DIR/task.json``,
move data, write ``DIR/status/download.json`` or ``DIR/status/upload.json`` and exit 0 (status code 0),
1 (a failing status was written: 2010 or 2012 with a one-line message) or 2 (the contract is missing
or malformed; a failing status is written too when the run directory allows it). ``exec`` runs the task
command, writes ``DIR/status/exit_code`` and exits with the command's code. ``upload --wait`` first
waits for that file (``wait.py``): the upload container of a Kubernetes pod runs beside the task.
``--status-message PATH`` also writes the status as one compact JSON object to PATH (Kubernetes: the
container's termination message, which the runner reads from the pod's status). ``upload --wait`` copies
the contract's ``checkpoint:`` folders while it waits and once more at the end (``checkpoint.py``).
``check-store [--store SPEC]`` exits 0 when tasks will be able to use the store and 1 with a line
naming it when it is missing or cannot be written (``osmo workflow submit`` runs it first).

Every line the sidecar itself prints starts with ``[osmo-sidecar] ``.
"""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable

import click

from osmo_run.contract import (DOWNLOAD_STATUS, INPUT_FAILED, OUTPUT_FAILED, SIDECAR_DATA_FAILED,
                               UPLOAD_STATUS, DataStatus, RunDir, TaskContract)

from sidecar import console
from sidecar.console import say
from sidecar.errors import ContractError, DataError, Terminated, one_line
from sidecar.retry import RetryPolicy
from sidecar.taskfile import load_contract
from sidecar.wait import DEFAULT_POLL, DURATION, OPTIONAL_DURATION, wait_for_task, wait_options

BAD_CONTRACT = 2


def _raise_terminated(signum: int, _frame) -> None:
    raise Terminated(signal.Signals(signum).name)


def _run_phase(run_dir: str, status_name: str, failure_code: int, policy: RetryPolicy,
               phase: Callable[[RunDir, TaskContract, RetryPolicy], DataStatus],
               before: Callable[[RunDir, TaskContract], None] | None = None,
               status_message: str | None = None) -> int:
    """Load the contract, run one data phase, write its status file; returns the process exit code."""
    run = RunDir(os.path.abspath(run_dir))
    name = status_name.split(".")[0]
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        try:
            contract = load_contract(run)
        except ContractError as exc:
            message = f"bad task contract: {one_line(exc)}"
            say(f"{name}: {message}")
            _write_status(run, status_name, DataStatus(failure_code, message), status_message)
            return BAD_CONTRACT
        try:
            if before is not None:
                before(run, contract)
            status = phase(run, contract, policy)
        except DataError as exc:
            status = DataStatus(failure_code, one_line(exc))
        except (Terminated, KeyboardInterrupt) as exc:
            why = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"
            status = DataStatus(failure_code, f"the sidecar was stopped by {why} during {name}")
        except Exception as exc:  # noqa: BLE001 - a bug: still report it through the status file
            if os.environ.get("OSMO_SIDECAR_DEBUG"):
                traceback.print_exc()
            status = DataStatus(failure_code, f"internal error during {name}: {one_line(exc)}")
        _write_status(run, status_name, status, status_message)
        if status.code:
            say(f"{name} failed ({status.code}): {status.message}")
            return SIDECAR_DATA_FAILED
        say(f"{name}: {status.message}")
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)


def _write_status(run: RunDir, status_name: str, status: DataStatus, status_message: str | None = None) -> None:
    if status_message is not None:
        try:
            with open(status_message, "w", encoding="utf-8") as f:
                f.write(status.to_message())
        except OSError as exc:
            say(f"cannot write {status_message}: {one_line(exc)}")
    if not os.path.isdir(run.root):
        return  # a mistyped --run-dir: create nothing there
    try:
        run.write_status(status_name, status)
    except OSError as exc:
        say(f"cannot write {run.status(status_name)}: {one_line(exc)}")


def _policy(attempts: int, retry_delay: float) -> RetryPolicy:
    return RetryPolicy(attempts=max(1, attempts), delay=max(0.0, retry_delay))


RUN_DIR = click.option("--run-dir", "run_dir", required=True, type=click.Path(file_okay=False),
                       help="The task attempt's run directory (holds task.json, data/ and status/).")
ATTEMPTS = click.option("--attempts", type=click.IntRange(min=1), default=3, show_default=True,
                        envvar="OSMO_SIDECAR_ATTEMPTS",
                        help="Tries per input or output when it fails with a transient error "
                             "[env: OSMO_SIDECAR_ATTEMPTS].")
STATUS_MESSAGE = click.option("--status-message", "status_message", default=None, metavar="PATH",
                              help="Also write the status as one compact JSON object (at most 4 KiB) to PATH, "
                                   "e.g. /dev/termination-log on Kubernetes.")
RETRY_DELAY = click.option("--retry-delay", type=click.FloatRange(min=0), default=2.0, show_default=True,
                           envvar="OSMO_SIDECAR_RETRY_DELAY",
                           help="Seconds before the first retry; doubles each time, at most 30 "
                                "[env: OSMO_SIDECAR_RETRY_DELAY].")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The osmo task sidecar: moves a task's data between the store (or URLs) and its run directory."""


@cli.command()
@RUN_DIR
@ATTEMPTS
@RETRY_DELAY
@STATUS_MESSAGE
def download(run_dir: str, attempts: int, retry_delay: float, status_message: str | None) -> None:
    """Download every input into DIR/data/input/<N>/ and write status/download.json."""
    from sidecar.download import run_download

    sys.exit(_run_phase(run_dir, DOWNLOAD_STATUS, INPUT_FAILED, _policy(attempts, retry_delay), run_download,
                        status_message=status_message))


@cli.command()
@RUN_DIR
@ATTEMPTS
@RETRY_DELAY
@click.option("--wait", "wait", type=OPTIONAL_DURATION, is_flag=False, flag_value="", default=None,
              metavar="[SECONDS]",
              help="First wait until the task has ended (DIR/status/exit_code exists), then upload; for a "
                   "container that runs beside the task. A value is the older spelling of --wait-timeout.")
@click.option("--wait-timeout", "wait_timeout", type=DURATION, default=None, metavar="DURATION",
              help="With --wait: give up after DURATION (90, 90s, 15m, 2h, 1h30m; 0: never, the default); "
                   "a failing status is written and nothing is uploaded.")
@click.option("--poll", "poll", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help=f"With --wait: seconds between two looks for the exit code [default: {DEFAULT_POLL:g}].")
@STATUS_MESSAGE
def upload(run_dir: str, attempts: int, retry_delay: float, wait: float | str | None,
           wait_timeout: float | None, poll: float | None, status_message: str | None) -> None:
    """Upload every output from DIR/data/output/ and write status/upload.json (with --wait: copying
    the task's checkpoints while it runs)."""
    from sidecar.upload import run_upload

    options, policy = wait_options(wait, wait_timeout, poll), _policy(attempts, retry_delay)
    sys.exit(_run_phase(run_dir, UPLOAD_STATUS, OUTPUT_FAILED, policy, run_upload,
                        (lambda run, contract: _wait(run, contract, options, policy)) if options is not None else None,
                        status_message))


def _wait(run: RunDir, contract: TaskContract, options, policy: RetryPolicy) -> None:
    """Wait for the task's end, copying its checkpoints meanwhile and once more at the end (retried as the
    outputs are: ``policy``)."""
    from sidecar.checkpoint import Checkpoints

    checkpoints = Checkpoints(run, contract.checkpoints, policy=policy)
    wait_for_task(run, options, on_poll=checkpoints.tick if contract.checkpoints else None)
    checkpoints.final()


@cli.command(name="exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@RUN_DIR
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def exec_(run_dir: str, command: tuple[str, ...]) -> None:
    """Run COMMAND, write its exit code to DIR/status/exit_code and exit with it.

    Use: osmo-sidecar exec --run-dir DIR -- CMD ARGS...
    """
    from sidecar.execute import run_command

    sys.exit(run_command(RunDir(os.path.abspath(run_dir)), command))


@cli.command(name="check-store")
@click.option("--store", "store", default=None, metavar="NAME|URL|PATH",
              help="The store to check (default: $OSMO_STORE, the configured default store, else the "
                   "per-user store, which is created).")
def check_store_(store: str | None) -> None:
    """Check that the store exists and can be written: exit 0, or 1 with one line naming it."""
    from sidecar.store import check_store

    try:
        say(check_store(store))
    except DataError as exc:
        say(str(exc))
        sys.exit(SIDECAR_DATA_FAILED)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``osmo-sidecar``)."""
    console.install()
    cli.main(args=argv, prog_name="osmo-sidecar")


if __name__ == "__main__":
    main()
