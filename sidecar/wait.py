"""``osmo-sidecar upload --wait``: follow the task from another container until it has ended.

On Kubernetes the upload runs in a container of its own, started together with the task container;
it learns that the task ended only from ``RUN_DIR/status/exit_code`` on the shared volume. ``exec``
(or an equivalent wrapper) writes that file to a temporary name and renames it into place, so the
file's existence means the task ended and its content is complete.

``wait_for_task`` polls for the file every ``poll`` seconds, prints a progress line at the start,
every ``NOTE_EVERY`` seconds and at the end, and returns the exit code. A file that exists but does not
hold a number (a wrapper that writes in place, a file another user cannot read) is looked at again
for ``UNREADABLE_GRACE`` seconds; then the task is taken as ended with an unknown code and the upload
goes ahead. When ``timeout`` passes first, ``DataError`` ends the phase (2012, nothing uploaded).
SIGTERM and SIGINT end the wait through the handlers of ``main._run_phase`` (2012, nothing uploaded).

Durations on the command line: a number of seconds (``90``, ``0.5``) or ``<number><unit>`` parts with
units ``d``, ``h``, ``m``, ``s``, each at most once and largest first (``30s``, ``15m``, ``1h30m``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

import click

from osmo_run.contract import EXIT_CODE_FILE, RunDir

from sidecar.console import say
from sidecar.errors import DataError, one_line

DEFAULT_POLL = 0.5
NOTE_EVERY = 300.0
UNREADABLE_GRACE = 2.0

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_NUMBER = re.compile(r"\d+(?:\.\d+)?|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (see the module docstring); ``ValueError`` with a readable reason."""
    compact = text.strip().lower().replace(" ", "")
    if _NUMBER.fullmatch(compact):
        seconds = float(compact)
    else:
        parts = _PART.findall(compact)
        if not parts or "".join(n + u for n, u in parts) != compact:
            raise ValueError(f"{text!r} is not a duration: use seconds (90) or <number><unit> with "
                             "units d, h, m, s (30s, 15m, 2h, 1h30m)")
        units = [u for _, u in parts]
        if len(set(units)) != len(units) or units != sorted(units, key="dhms".index):
            raise ValueError(f"{text!r}: give each unit once, largest first (e.g. 1h30m)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError(f"{text!r} is too long a duration")
    return seconds


def format_seconds(seconds: float) -> str:
    return f"{seconds:g} s"


class Duration(click.ParamType):
    """A click parameter type for ``parse_duration``. With ``optional``, an empty value (``--wait``
    given alone) stays ``""``."""

    name = "duration"

    def __init__(self, optional: bool = False) -> None:
        self.optional = optional

    def convert(self, value, param, ctx):
        if isinstance(value, (int, float)) or (value == "" and self.optional):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()
OPTIONAL_DURATION = Duration(optional=True)


@dataclass(frozen=True)
class WaitOptions:
    timeout: float  # <= 0: no limit
    poll: float = DEFAULT_POLL


def wait_options(wait: float | str | None, wait_timeout: float | None, poll: float | None) -> WaitOptions | None:
    """The ``--wait [SECONDS]``, ``--wait-timeout`` and ``--poll`` values as options (None: no wait).

    A value right after ``--wait`` is the older spelling of ``--wait-timeout``."""
    if wait is None:
        if wait_timeout is not None or poll is not None:
            given = "--wait-timeout" if wait_timeout is not None else "--poll"
            raise click.UsageError(f"{given} needs --wait")
        return None
    if wait != "" and wait_timeout is not None:
        raise click.UsageError("give the time limit once: --wait-timeout DURATION or --wait SECONDS")
    timeout = float(wait_timeout if wait_timeout is not None else (wait or 0))
    return WaitOptions(timeout=timeout, poll=poll if poll is not None else DEFAULT_POLL)


def read_exit_code(run: RunDir) -> tuple[bool, int | None, str]:
    """``(exists, code, why)``: whether ``status/exit_code`` exists, the code it holds (None when it
    holds no number or cannot be read) and, then, why not."""
    path = run.status(EXIT_CODE_FILE)
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            text = f.read(64)
    except FileNotFoundError:
        return False, None, ""
    except OSError as exc:
        return True, None, f"cannot be read ({(exc.strerror or one_line(exc)).lower()})"
    try:
        return True, int(text.strip()), ""
    except ValueError:
        shown = text.strip()[:20]
        return True, None, f"holds {shown!r}, not an exit code" if shown else "is empty"


def exit_code_or_none(run: RunDir) -> int | None:
    """The task's exit code when ``status/exit_code`` holds one, else None (never raises)."""
    return read_exit_code(run)[1]


def wait_for_task(run: RunDir, options: WaitOptions, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep,
                  on_poll: Callable[[], None] | None = None) -> int | None:
    """Block until the task has ended; returns its exit code (None: ended, code unknown). ``on_poll``
    runs after each look that did not find the end (the periodic checkpoints)."""
    path = run.status(EXIT_CODE_FILE)
    limit = f"at most {format_seconds(options.timeout)}" if options.timeout > 0 else "no time limit"
    say(f"waiting for the task's exit code in {path} (the task to finish; {limit}, "
        f"looking every {format_seconds(options.poll)})")
    start = clock()
    deadline = start + options.timeout if options.timeout > 0 else None
    next_note = start + NOTE_EVERY
    unreadable_since: float | None = None
    while True:
        exists, code, why = read_exit_code(run)
        now = clock()
        if code is not None:
            say(f"the task finished with exit code {code} (waited {_elapsed(now - start)}); "
                "uploading its outputs")
            return code
        if not exists:
            unreadable_since = None
        elif unreadable_since is None:
            unreadable_since = now
        elif now - unreadable_since >= UNREADABLE_GRACE:
            say(f"the task has finished but {path} {why}; uploading its outputs without its exit code")
            return None
        if deadline is not None and now >= deadline:
            raise DataError(f"the task's exit code did not appear within {format_seconds(options.timeout)}; "
                            "outputs not uploaded")
        if on_poll is not None:
            on_poll()
        if now >= next_note:
            say(f"still waiting for the task to finish ({_elapsed(now - start)} so far)")
            next_note += NOTE_EVERY
        pause = options.poll if deadline is None else max(0.0, min(options.poll, deadline - now))
        sleep(pause)


def _elapsed(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
